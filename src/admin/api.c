/*
 * api.c - the JSON admin API's views of the whole (GET /coda/api/overview,
 * queues, nodes, schedules), the queue actions (pause, resume) and the
 * helpers api_tasks.c shares (api.h). docs/admin-api.md is the reference.
 *
 * Loop threads run every handler, each behind coda__admin_guard(). What
 * the store counts (queue_stats, nodes) is read at each call; only the
 * overview's rates keep state here, under the admin's mutex.
 */
#include "admin/api.h"

#include "app/app.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RATE_MIN_INTERVAL_MS 1000

/* ---- helpers shared with api_tasks.c ------------------------------------------ */

coda__durable *coda__admin_durable(coda_app *app) {
  coda__engine *e = coda__engine_peek(app);
  return e ? e->durable : NULL;
}

const char *coda__admin_store_name(coda_app *app) {
  coda__durable *d = coda__admin_durable(app);
  return d && d->store ? d->store->m->name : "none";
}

int64_t coda__admin_now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int coda__admin_reply(coda_res *res, int status, json_t *value) {
  if (!value)
    return CODA_ENOMEM;
  int rc = coda_res_json(res, status, value);
  json_decref(value);
  return rc;
}

int coda__admin_fail(coda_res *res, int rc, const char *state_msg) {
  switch (rc) {
  case CODA_EINVAL:
    return coda__admin_error(res, 400, "bad request");
  case CODA_ENOTFOUND:
    return coda__admin_error(res, 404, "unknown task");
  case CODA_ESTATE:
    return coda__admin_error(res, 409, state_msg);
  case CODA_ESTORE:
    coda_res_header(res, "Retry-After", "1");
    return coda__admin_error(res, 503, "the task store failed (see the server's log)");
  case CODA_ETIMEDOUT: /* its file locked by another writer past the busy timeout */
    coda_res_header(res, "Retry-After", "1");
    return coda__admin_error(res, 503, "the task store is busy: try again");
  default:
    return coda__admin_error(res, 500, coda_strerror(rc));
  }
}

int coda__admin_not_ready(coda_res *res) {
  return coda__admin_error(res, 501, "not implemented yet");
}

json_t *coda__admin_id(uint64_t id) {
  char s[24];
  snprintf(s, sizeof s, "%" PRIu64, id);
  return json_string(s);
}

int coda__admin_parse_id(const char *s, uint64_t *id) {
  if (!s || !*s || strlen(s) > 20)
    return -1;
  uint64_t v = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9')
      return -1;
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  if (v == 0)
    return -1;
  *id = v;
  return 0;
}

/* Length of the UTF-8 sequence at p (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n) {
  size_t len = p[0] < 0x80             ? 1
               : (p[0] & 0xe0) == 0xc0 ? 2
               : (p[0] & 0xf0) == 0xe0 ? 3
               : (p[0] & 0xf8) == 0xf0 ? 4
                                       : 0;
  if (len == 0 || len > n)
    return 0;
  for (size_t i = 1; i < len; i++)
    if ((p[i] & 0xc0) != 0x80)
      return 0;
  return len;
}

/* The string with each byte that is not UTF-8 replaced by U+FFFD, for
 * jansson, which takes only valid UTF-8. (Overlong forms left here are
 * refused by jansson: the caller then shows a fixed text.) */
static json_t *lossy_string(const char *s) {
  size_t n = strlen(s);
  char *out = malloc(n * 3 + 1);
  if (!out)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    size_t len = utf8_len((const unsigned char *)s + i, n - i);
    if (len) {
      memcpy(out + o, s + i, len);
      o += len, i += len;
    } else {
      memcpy(out + o, "\xef\xbf\xbd", 3);
      o += 3, i++;
    }
  }
  json_t *v = json_stringn(out, o);
  free(out);
  return v ? v : json_string("(not UTF-8)");
}

json_t *coda__admin_text(const char *s) {
  if (!s)
    return json_null();
  json_t *v = json_string(s);
  return v ? v : lossy_string(s);
}

json_t *coda__admin_counts(const long counts[6], long scheduled) {
  json_t *o = json_object();
  if (!o)
    return NULL;
  for (int st = CODA_STATE_QUEUED; st <= CODA_STATE_CANCELLED; st++)
    json_object_set_new(o, coda_task_state_name((coda_task_state)st),
                        json_integer(counts[st]));
  json_object_set_new(o, "scheduled", json_integer(scheduled));
  return o;
}

const char *coda__admin_log_name(const char *name, char *buf, size_t cap) {
  size_t n = 0;
  for (; name && name[n] && n + 1 < cap; n++) {
    char c = name[n];
    int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '.' || c == '-';
    buf[n] = ok ? c : '?';
  }
  buf[n] = '\0';
  return buf;
}

void coda__admin_action_log(coda__admin *a, coda_req *req, coda__admin_action action,
                            const char *what, long rc) {
  char who[128];
  coda__admin_who(req, who, sizeof who);
  if (rc < 0) {
    coda_log(a->app, CODA_LOG_WARN, "admin: %s by %s refused: %s", what, who,
             coda_strerror((int)rc));
    return;
  }
  coda_log(a->app, CODA_LOG_INFO, "admin: %s by %s", what, who);
  coda__admin_count(a, action);
}

/* ---- overview ------------------------------------------------------------------ */

typedef struct totals {
  long counts[6];
  long scheduled, processed, failed;
  int queues;
} totals;

static int add_queue(const coda_queue_info *q, void *user) {
  totals *t = user;
  for (int i = 0; i < 6; i++)
    t->counts[i] += q->counts[i];
  t->scheduled += q->scheduled;
  t->processed += q->processed;
  t->failed += q->failed;
  t->queues++;
  return 0;
}

static int count_node(const coda_node_info *n, void *user) {
  (void)n;
  ++*(int *)user;
  return 0;
}

/* The rates between the last two samples at least a second apart: every
 * poller (dashboards, coda-admin top) shares them, so one that polls fast
 * does not turn another's rate into noise. */
static void rates(coda__admin *a, const totals *t, int64_t now, double *processed,
                  double *failed) {
  uv_mutex_lock(&a->mu);
  if (a->sample_at == 0 || now - a->sample_at >= RATE_MIN_INTERVAL_MS) {
    if (a->sample_at != 0) {
      double dt = (double)(now - a->sample_at) / 1000.0;
      /* A store emptied meanwhile (a Redis flushed) counts from 0 again. */
      long dp = t->processed - a->sample_processed, df = t->failed - a->sample_failed;
      a->rate_processed = dp > 0 ? (double)dp / dt : 0;
      a->rate_failed = df > 0 ? (double)df / dt : 0;
    }
    a->sample_at = now;
    a->sample_processed = t->processed;
    a->sample_failed = t->failed;
  }
  *processed = a->rate_processed;
  *failed = a->rate_failed;
  uv_mutex_unlock(&a->mu);
}

static int get_overview(coda_req *req, coda_res *res, void *user) {
  coda__admin *a = user;
  if (coda__admin_guard(a, req, res, CODA__ADMIN_READ))
    return 0;
  coda__durable *d = coda__admin_durable(a->app);
  totals t;
  memset(&t, 0, sizeof t);
  int nodes = 0, rc = 0;
  if (d) { /* no store: nothing durable, all counts are 0 */
    if (!CODA__ADMIN_STORE_HAS(d, queue_stats) || !CODA__ADMIN_STORE_HAS(d, nodes))
      return coda__admin_not_ready(res);
    rc = coda_app_queue_stats(a->app, add_queue, &t);
    if (rc >= 0)
      rc = coda_app_nodes(a->app, count_node, &nodes);
    if (rc < 0)
      return coda__admin_fail(res, rc, "no task store");
  }
  int64_t now = coda__admin_now_ms();
  double rp, rf;
  rates(a, &t, now, &rp, &rf);
  json_t *o = json_pack(
      "{s:I,s:s,s:s,s:o,s:I,s:I,s:{s:f,s:f},s:i,s:i,s:{s:I}}", "now", (json_int_t)now,
      "version", coda_version(), "store", coda__admin_store_name(a->app), "counts",
      coda__admin_counts(t.counts, t.scheduled), "processed", (json_int_t)t.processed,
      "failed_total", (json_int_t)t.failed, "rates", "processed_per_s", rp,
      "failed_per_s", rf, "queues", t.queues, "nodes", nodes, "http", "requests",
      (json_int_t)coda__app_requests(a->app));
  return coda__admin_reply(res, 200, o);
}

/* ---- queues -------------------------------------------------------------------- */

typedef struct queue_list {
  json_t *arr;
  int64_t now;
} queue_list;

static int add_queue_json(const coda_queue_info *q, void *user) {
  queue_list *l = user;
  int64_t latency =
      q->oldest_due_at && l->now > q->oldest_due_at ? l->now - q->oldest_due_at : 0;
  json_t *o =
      json_pack("{s:o,s:b,s:o,s:I,s:I,s:I}", "name", coda__admin_text(q->name), "paused",
                q->paused, "counts", coda__admin_counts(q->counts, q->scheduled),
                "latency_ms", (json_int_t)latency, "processed", (json_int_t)q->processed,
                "failed", (json_int_t)q->failed);
  return o ? json_array_append_new(l->arr, o) : -1;
}

static int get_queues(coda_req *req, coda_res *res, void *user) {
  coda__admin *a = user;
  if (coda__admin_guard(a, req, res, CODA__ADMIN_READ))
    return 0;
  coda__durable *d = coda__admin_durable(a->app);
  if (d && !CODA__ADMIN_STORE_HAS(d, queue_stats))
    return coda__admin_not_ready(res);
  queue_list l = {json_array(), coda__admin_now_ms()};
  if (!l.arr)
    return CODA_ENOMEM;
  int rc = d ? coda_app_queue_stats(a->app, add_queue_json, &l) : 0;
  if (rc < 0) {
    json_decref(l.arr);
    return coda__admin_fail(res, rc, "no task store");
  }
  return coda__admin_reply(res, 200, json_pack("{s:o}", "queues", l.arr));
}

static int pause_or_resume(coda_req *req, coda_res *res, coda__admin *a, int paused) {
  if (coda__admin_guard(a, req, res, CODA__ADMIN_ACTION))
    return 0;
  const char *name = coda_req_param(req, "name");
  char what[128], safe[72];
  snprintf(what, sizeof what, "%s queue %s", paused ? "pause" : "resume",
           coda__admin_log_name(name, safe, sizeof safe));
  int rc = coda_app_queue_pause(a->app, name, paused);
  coda__admin_action_log(a, req, paused ? CODA__ADMIN_ACT_PAUSE : CODA__ADMIN_ACT_RESUME,
                         what, rc);
  if (rc == CODA_EINVAL)
    return coda__admin_error(
        res, 400, "bad queue name (1 to 64 characters among A-Z a-z 0-9 _ . -)");
  if (rc < 0)
    return coda__admin_fail(res, rc, "no task store");
  return coda__admin_reply(res, 200,
                           json_pack("{s:s,s:b}", "queue", name, "paused", paused));
}

static int post_pause(coda_req *req, coda_res *res, void *user) {
  return pause_or_resume(req, res, user, 1);
}

static int post_resume(coda_req *req, coda_res *res, void *user) {
  return pause_or_resume(req, res, user, 0);
}

/* ---- nodes --------------------------------------------------------------------- */

/* "a,b" as ["a","b"]; "" (every queue) as []. */
static json_t *queue_names(const char *list) {
  json_t *arr = json_array();
  for (const char *p = list; arr && p && *p;) {
    size_t n = strcspn(p, ",");
    if (n)
      json_array_append_new(arr, json_stringn(p, n));
    p += n + (p[n] == ',');
  }
  return arr;
}

static int add_node(const coda_node_info *n, void *user) {
  json_t *o = json_pack(
      "{s:o,s:o,s:i,s:o,s:o,s:o,s:i,s:I,s:I,s:I,s:o}", "id", coda__admin_text(n->id),
      "host", coda__admin_text(n->host), "pid", n->pid, "role", coda__admin_text(n->role),
      "queues", queue_names(n->queues), "listen", coda__admin_text(n->listen), "running",
      n->running, "processed", (json_int_t)n->processed, "started_at",
      (json_int_t)n->started_at, "last_seen", (json_int_t)n->last_seen, "version",
      coda__admin_text(n->version));
  return o ? json_array_append_new(user, o) : -1;
}

static int get_nodes(coda_req *req, coda_res *res, void *user) {
  coda__admin *a = user;
  if (coda__admin_guard(a, req, res, CODA__ADMIN_READ))
    return 0;
  coda__durable *d = coda__admin_durable(a->app);
  if (d && !CODA__ADMIN_STORE_HAS(d, nodes))
    return coda__admin_not_ready(res);
  json_t *arr = json_array();
  if (!arr)
    return CODA_ENOMEM;
  int rc = d ? coda_app_nodes(a->app, add_node, arr) : 0;
  if (rc < 0) {
    json_decref(arr);
    return coda__admin_fail(res, rc, "no task store");
  }
  return coda__admin_reply(res, 200, json_pack("{s:o}", "nodes", arr));
}

/* ---- schedules ----------------------------------------------------------------- */

static int add_schedule(const coda_schedule_info *s, void *user) {
  json_t *last = s->last_run ? json_integer(s->last_run) : json_null();
  json_t *o =
      json_pack("{s:o,s:I,s:o,s:I,s:o}", "task", coda__admin_text(s->task), "every_ms",
                (json_int_t)s->every_ms, "cron", coda__admin_text(s->cron), "next_run",
                (json_int_t)s->next_run, "last_run", last);
  return o ? json_array_append_new(user, o) : -1;
}

static int get_schedules(coda_req *req, coda_res *res, void *user) {
  coda__admin *a = user;
  if (coda__admin_guard(a, req, res, CODA__ADMIN_READ))
    return 0;
  json_t *arr = json_array();
  if (!arr)
    return CODA_ENOMEM;
  int rc = coda_app_schedules(a->app, add_schedule, arr);
  if (rc < 0) {
    json_decref(arr);
    return coda__admin_fail(res, rc, "no schedules");
  }
  return coda__admin_reply(res, 200, json_pack("{s:o}", "schedules", arr));
}

int coda__admin_api_mount(coda_app *app, coda__admin *a) {
  static const struct {
    const char *method, *pattern;
    coda_handler fn;
  } routes[] = {
      {"GET", "/coda/api/overview", get_overview},
      {"GET", "/coda/api/queues", get_queues},
      {"POST", "/coda/api/queues/{name}/pause", post_pause},
      {"POST", "/coda/api/queues/{name}/resume", post_resume},
      {"GET", "/coda/api/nodes", get_nodes},
      {"GET", "/coda/api/schedules", get_schedules},
  };
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < sizeof routes / sizeof routes[0]; i++)
    rc = coda_app_route(app, routes[i].method, routes[i].pattern, routes[i].fn, a);
  return rc;
}
