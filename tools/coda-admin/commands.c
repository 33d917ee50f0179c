/*
 * commands.c - one function per coda-admin command: the call it makes and
 * how it shows the answer. With --json every read prints the API's body as
 * it came; otherwise an aligned table or a list of "name  value" lines.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The states in the order an operator reads them (a task's life). */
static const char *const states[] = {"queued", "scheduled", "running",  "succeeded",
                                     "failed", "dead",      "cancelled"};
#define NSTATES (sizeof states / sizeof states[0])

/* GET path: the JSON object, or with --json the body printed as it came. */
static int get(cli *c, const char *path, json_t **out) {
  char *raw = NULL;
  int rc = cli_call(c, "GET", path, out, c->json ? &raw : NULL);
  if (rc == 0 && c->json) {
    fputs(raw, stdout);
    if (!*raw || raw[strlen(raw) - 1] != '\n')
      putchar('\n');
  }
  free(raw);
  return rc;
}

static void kv(const char *key, const char *value) {
  char clean[2048];
  printf("%-17s %s\n", key,
         value && *value ? cli_clean(value, clean, sizeof clean) : "-");
}

int cli_cmd_stats(cli *c) {
  json_t *o = NULL;
  int rc = get(c, "overview", &o);
  if (rc || c->json) {
    json_decref(o);
    return rc;
  }
  char b[64], r[64], line[160];
  json_t *counts = json_object_get(o, "counts"), *rates = json_object_get(o, "rates");
  kv("version", cli_str(o, "version"));
  kv("store", cli_str(o, "store"));
  for (size_t i = 0; i < NSTATES; i++)
    kv(states[i], cli_num(counts, states[i], b, sizeof b));
  snprintf(line, sizeof line, "%s (%s/s)", cli_num(o, "processed", b, sizeof b),
           cli_num(rates, "processed_per_s", r, sizeof r));
  kv("processed", line);
  snprintf(line, sizeof line, "%s (%s/s)", cli_num(o, "failed_total", b, sizeof b),
           cli_num(rates, "failed_per_s", r, sizeof r));
  kv("failed attempts", line);
  kv("queues", cli_num(o, "queues", b, sizeof b));
  kv("nodes", cli_num(o, "nodes", b, sizeof b));
  kv("http requests", cli_num(json_object_get(o, "http"), "requests", b, sizeof b));
  json_decref(o);
  return 0;
}

/* Adds "&key=value" (escaped) to a query being built. */
static int add_param(char *q, size_t cap, const char *key, const char *value) {
  char esc[512];
  if (!value)
    return 0;
  if (!cli_escape(value, esc, sizeof esc))
    return -1;
  size_t n = strlen(q);
  int m = snprintf(q + n, cap - n, "%s%s=%s", n ? "&" : "", key, esc);
  return m < 0 || (size_t)m >= cap - n ? -1 : 0;
}

/* When a task last moved: its end, its start, or when it is due. */
static const char *task_when(json_t *t, int64_t now, char *buf, size_t cap) {
  const char *st = cli_str(t, "state");
  const char *key = strcmp(st, "running") == 0 ? "started_at"
                    : strcmp(st, "queued") == 0 || strcmp(st, "scheduled") == 0
                        ? "run_at"
                        : "finished_at";
  if (!json_is_integer(json_object_get(t, key)) ||
      json_integer_value(json_object_get(t, key)) <= 0)
    key = "created_at";
  return cli_when(t, key, now, 0, buf, cap);
}

static const char *error_cell(json_t *t, char *buf, size_t cap) {
  const char *e = cli_str(t, "error");
  char clean[128];
  snprintf(buf, cap, "%s", cli_clean(e, clean, 64)); /* the first 60 columns or so */
  return buf;
}

int cli_cmd_tasks(cli *c) {
  char q[2048] = "";
  if (add_param(q, sizeof q, "state", c->state) ||
      add_param(q, sizeof q, "queue", c->queue) ||
      add_param(q, sizeof q, "name", c->name) ||
      add_param(q, sizeof q, "after", c->after) ||
      add_param(q, sizeof q, "limit", c->limit)) {
    fprintf(stderr, "coda-admin: tasks: a filter is too long\n");
    return CLI_EXIT_USAGE;
  }
  char path[2100];
  snprintf(path, sizeof path, "tasks%s%s", *q ? "?" : "", q);
  json_t *o = NULL;
  int rc = get(c, path, &o);
  if (rc || c->json) {
    json_decref(o);
    return rc;
  }
  static const char *heads[] = {"ID",       "NAME", "QUEUE", "STATE",
                                "ATTEMPTS", "WHEN", "ERROR"};
  cli_table t;
  cli_table_init(&t, 7, heads, 1u << 0);
  int64_t now = cli_now_ms();
  size_t i;
  json_t *task;
  json_array_foreach(json_object_get(o, "tasks"), i, task) {
    char id[32], att[64], a[24], m[24], when[64], err[128];
    snprintf(att, sizeof att, "%s/%s", cli_num(task, "attempts", a, sizeof a),
             cli_num(task, "max_attempts", m, sizeof m));
    const char *cells[] = {cli_num(task, "id", id, sizeof id),
                           cli_str(task, "name"),
                           cli_str(task, "queue"),
                           cli_str(task, "state"),
                           att,
                           task_when(task, now, when, sizeof when),
                           error_cell(task, err, sizeof err)};
    cli_table_row(&t, cells);
  }
  if (t.nrows)
    cli_table_print(&t);
  else
    printf("no tasks\n");
  cli_table_free(&t);
  const char *next = json_string_value(json_object_get(o, "next_after"));
  if (next)
    printf("more: --after %s\n", next);
  json_decref(o);
  return 0;
}

/* Ids are decimal digits (JSON strings in the API: Redis ids pass 2^53). */
static int check_id(const char *cmd, const char *id) {
  size_t n = strspn(id, "0123456789");
  if (n == 0 || n > 20 || id[n]) {
    fprintf(stderr, "coda-admin: %s: task ids are decimal digits, not \"%s\"\n", cmd, id);
    return CLI_EXIT_USAGE;
  }
  return 0;
}

static void print_errors(json_t *errors, int64_t now) {
  size_t i;
  json_t *e;
  json_array_foreach(errors, i, e) {
    char a[24], when[80], clean[1024];
    printf("  attempt %s, %s: %s\n", cli_num(e, "attempt", a, sizeof a),
           cli_when(e, "at", now, 1, when, sizeof when),
           cli_clean(cli_str(e, "error"), clean, sizeof clean));
  }
}

int cli_cmd_task(cli *c, const char *id) {
  int rc = check_id("task", id);
  if (rc)
    return rc;
  char path[64];
  snprintf(path, sizeof path, "tasks/%s", id);
  json_t *t = NULL;
  if ((rc = get(c, path, &t)) != 0 || c->json) {
    json_decref(t);
    return rc;
  }
  int64_t now = cli_now_ms();
  char b[96], a[24], m[24];
  kv("id", cli_num(t, "id", b, sizeof b));
  kv("name", cli_str(t, "name"));
  kv("queue", cli_str(t, "queue"));
  kv("state", cli_str(t, "state"));
  if (json_is_true(json_object_get(t, "cancel_requested")))
    kv("cancel", "requested");
  snprintf(b, sizeof b, "%s of %s", cli_num(t, "attempts", a, sizeof a),
           cli_num(t, "max_attempts", m, sizeof m));
  kv("attempts", b);
  json_t *p = json_object_get(t, "progress");
  if (json_is_number(p)) {
    snprintf(b, sizeof b, "%.0f%%", json_number_value(p) * 100.0);
    kv("progress", b);
  }
  static const char *const times[][2] = {{"created", "created_at"},
                                         {"run at", "run_at"},
                                         {"started", "started_at"},
                                         {"finished", "finished_at"}};
  for (size_t i = 0; i < sizeof times / sizeof times[0]; i++)
    kv(times[i][0], cli_when(t, times[i][1], now, 1, b, sizeof b));
  kv("key", cli_str(t, "key"));
  char *args = json_dumps(json_object_get(t, "args"), JSON_COMPACT | JSON_ENCODE_ANY);
  kv("args", args);
  free(args);
  kv("result", cli_str(t, "result"));
  kv("error", cli_str(t, "error"));
  json_t *req = json_object_get(t, "request");
  char rq[600] = "";
  if (json_is_object(req))
    snprintf(rq, sizeof rq, "%s (request %s)", cli_str(req, "origin"),
             cli_num(req, "id", b, sizeof b));
  kv("request", rq);
  kv("traceparent", cli_str(t, "traceparent"));
  json_t *errors = json_object_get(t, "errors");
  if (json_array_size(errors)) {
    printf("errors\n");
    print_errors(errors, now);
  }
  json_decref(t);
  return 0;
}

/* POST and, for people, one line saying it was done. */
static int post(cli *c, const char *path, json_t **out) {
  char *raw = NULL;
  int rc = cli_call(c, "POST", path, out, c->json ? &raw : NULL);
  if (rc == 0 && c->json)
    printf("%s%s", raw, *raw && raw[strlen(raw) - 1] == '\n' ? "" : "\n");
  free(raw);
  return rc;
}

int cli_cmd_task_action(cli *c, const char *action, const char *id) {
  int rc = check_id(action, id);
  if (rc)
    return rc;
  char path[80];
  snprintf(path, sizeof path, "tasks/%s/%s", id, action);
  json_t *o = NULL;
  if ((rc = post(c, path, &o)) == 0 && !c->json) {
    const char *done = strcmp(action, "retry") == 0    ? "queued again (due now)"
                       : strcmp(action, "cancel") == 0 ? "cancelled"
                                                       : "deleted";
    printf("task %s %s\n", id, done);
  }
  json_decref(o);
  return rc;
}

int cli_cmd_bulk(cli *c, const char *action) {
  char q[600] = "", path[700];
  if (add_param(q, sizeof q, "state", "dead") ||
      add_param(q, sizeof q, "queue", c->queue)) {
    fprintf(stderr, "coda-admin: %s-dead: the queue name is too long\n", action);
    return CLI_EXIT_USAGE;
  }
  snprintf(path, sizeof path, "tasks/%s?%s", action, q);
  json_t *o = NULL;
  int rc = post(c, path, &o);
  if (rc == 0 && !c->json) {
    char n[32], clean[300];
    printf("%s dead task(s) %s%s%s\n", cli_num(o, "count", n, sizeof n),
           strcmp(action, "retry") == 0 ? "queued again" : "deleted",
           c->queue ? " in queue " : "",
           c->queue ? cli_clean(c->queue, clean, sizeof clean) : "");
  }
  json_decref(o);
  return rc;
}

void cli_print_queues(json_t *queues) {
  static const char *heads[] = {"QUEUE",     "STATE",     "QUEUED",    "SCHEDULED",
                                "RUNNING",   "SUCCEEDED", "FAILED",    "DEAD",
                                "CANCELLED", "LATENCY",   "PROCESSED", "FAILURES"};
  cli_table t;
  cli_table_init(&t, 12, heads, 0xffcu); /* the numbers, right-aligned */
  size_t i;
  json_t *q;
  json_array_foreach(queues, i, q) {
    char n[7][24], lat[32], proc[24], fail[24];
    json_t *counts = json_object_get(q, "counts");
    const char *cells[12] = {cli_str(q, "name"),
                             json_is_true(json_object_get(q, "paused")) ? "paused"
                                                                        : "active"};
    for (int k = 0; k < 7; k++)
      cells[2 + k] = cli_num(counts, states[k], n[k], sizeof n[k]);
    json_t *l = json_object_get(q, "latency_ms");
    cells[9] =
        json_is_integer(l) ? cli_span(json_integer_value(l), lat, sizeof lat) : "-";
    cells[10] = cli_num(q, "processed", proc, sizeof proc);
    cells[11] = cli_num(q, "failed", fail, sizeof fail);
    cli_table_row(&t, cells);
  }
  if (t.nrows)
    cli_table_print(&t);
  else
    printf("no queues\n");
  cli_table_free(&t);
}

int cli_cmd_queues(cli *c) {
  json_t *o = NULL;
  int rc = get(c, "queues", &o);
  if (rc == 0 && !c->json)
    cli_print_queues(json_object_get(o, "queues"));
  json_decref(o);
  return rc;
}

int cli_cmd_queue_action(cli *c, const char *action, const char *queue) {
  char esc[400], path[450], clean[300];
  if (!*queue || !cli_escape(queue, esc, sizeof esc)) {
    fprintf(stderr, "coda-admin: %s: a queue name, please\n", action);
    return CLI_EXIT_USAGE;
  }
  snprintf(path, sizeof path, "queues/%s/%s", esc, action);
  json_t *o = NULL;
  int rc = post(c, path, &o);
  if (rc == 0 && !c->json)
    printf("queue %s %s\n", cli_clean(queue, clean, sizeof clean),
           strcmp(action, "pause") == 0 ? "paused" : "resumed");
  json_decref(o);
  return rc;
}

/* ["a","b"] as "a,b"; [] (every queue) as "(all)". */
static const char *join(json_t *arr, char *buf, size_t cap) {
  size_t i, n = 0;
  json_t *v;
  buf[0] = '\0';
  json_array_foreach(arr, i, v) {
    int m = snprintf(buf + n, cap - n, "%s%s", i ? "," : "",
                     json_string_value(v) ? json_string_value(v) : "");
    if (m < 0 || (size_t)m >= cap - n)
      break;
    n += (size_t)m;
  }
  return json_is_array(arr) && json_array_size(arr) == 0 ? "(all)" : buf;
}

int cli_cmd_nodes(cli *c) {
  json_t *o = NULL;
  int rc = get(c, "nodes", &o);
  if (rc || c->json) {
    json_decref(o);
    return rc;
  }
  static const char *heads[] = {"ID",        "ROLE",    "QUEUES",    "LISTEN", "RUNNING",
                                "PROCESSED", "STARTED", "LAST SEEN", "VERSION"};
  cli_table t;
  cli_table_init(&t, 9, heads, (1u << 4) | (1u << 5));
  int64_t now = cli_now_ms();
  size_t i;
  json_t *n;
  json_array_foreach(json_object_get(o, "nodes"), i, n) {
    char qs[512], run[24], proc[24], started[48], seen[48];
    const char *cells[] = {cli_str(n, "id"),
                           cli_str(n, "role"),
                           join(json_object_get(n, "queues"), qs, sizeof qs),
                           cli_str(n, "listen"),
                           cli_num(n, "running", run, sizeof run),
                           cli_num(n, "processed", proc, sizeof proc),
                           cli_when(n, "started_at", now, 0, started, sizeof started),
                           cli_when(n, "last_seen", now, 0, seen, sizeof seen),
                           cli_str(n, "version")};
    cli_table_row(&t, cells);
  }
  if (t.nrows)
    cli_table_print(&t);
  else
    printf("no nodes\n");
  cli_table_free(&t);
  json_decref(o);
  return 0;
}

int cli_cmd_schedules(cli *c) {
  json_t *o = NULL;
  int rc = get(c, "schedules", &o);
  if (rc || c->json) {
    json_decref(o);
    return rc;
  }
  static const char *heads[] = {"TASK", "EVERY", "CRON", "NEXT RUN", "LAST RUN"};
  cli_table t;
  cli_table_init(&t, 5, heads, 0);
  int64_t now = cli_now_ms();
  size_t i;
  json_t *s;
  json_array_foreach(json_object_get(o, "schedules"), i, s) {
    char every[32] = "", next[64], last[64];
    json_t *e = json_object_get(s, "every_ms");
    if (json_is_integer(e) && json_integer_value(e) > 0)
      cli_span(json_integer_value(e), every, sizeof every);
    const char *cells[] = {cli_str(s, "task"), every, cli_str(s, "cron"),
                           cli_when(s, "next_run", now, 0, next, sizeof next),
                           cli_when(s, "last_run", now, 0, last, sizeof last)};
    cli_table_row(&t, cells);
  }
  if (t.nrows)
    cli_table_print(&t);
  else
    printf("no schedules\n");
  cli_table_free(&t);
  json_decref(o);
  return 0;
}
