/*
 * cli_test.c - the real coda-admin against a real coda-demo (memory store,
 * port 0): every command's output and exit status, --json on each read,
 * refusals that change nothing (wrong token, no token), the errors a
 * script must tell apart (404, 409, 400, unreachable, usage), and `top`
 * both as one frame and live until Ctrl-C.
 */
#include "harness.h"
#include "proc.h"
#include "test.h"

#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TOKEN "cli-test-token-0123456789abcdef"
#define TRACE "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

static tproc demo;
static int port;
static char url[64];

typedef struct run {
  int status;
  char *out, *err;
} run;

/* Runs coda-admin with CODA_URL and CODA_ADMIN_TOKEN (token NULL: unset)
 * and the arguments after them, to its exit. */
static run cli_env(const char *token, const char *const *args) {
  char *argv[16] = {CODA_ADMIN_PATH};
  int n = 1;
  for (; args[n - 1] && n < 15; n++)
    argv[n] = (char *)args[n - 1];
  argv[n] = NULL;
  char env_url[96], env_token[128];
  snprintf(env_url, sizeof env_url, "CODA_URL=%s", url);
  snprintf(env_token, sizeof env_token, "CODA_ADMIN_TOKEN=%s", token ? token : "");
  char *env[] = {env_url, token ? env_token : NULL, NULL};
  tproc p;
  run r = {-1, NULL, NULL};
  if (tp_spawn(&p, argv, env) != 0)
    return r;
  r.status = tp_wait(&p, 20000);
  r.out = tp_read(p.out);
  r.err = tp_read(p.err);
  tp_cleanup(&p);
  return r;
}

#define CLI(...) cli_env(TOKEN, (const char *const[]){__VA_ARGS__, NULL})

static void run_free(run *r) {
  free(r->out);
  free(r->err);
}

/* The JSON a --json read printed, or NULL. */
static json_t *out_json(const run *r) {
  json_error_t e;
  json_t *j = json_loads(r->out, 0, &e);
  if (!j)
    fprintf(stderr, "  not JSON (%s): %s\n", e.text, r->out);
  return j;
}

static int demo_start(void) {
  char *argv[] = {CODA_DEMO_PATH, "--listen", "127.0.0.1:0", "--threads", "2",
                  "--store",      "memory",   "--tick",      "3600000",   "--admin-token",
                  TOKEN,          "--quiet",  NULL};
  if (tp_spawn(&demo, argv, NULL) != 0)
    return -1;
  static const char said[] = "listening on http://127.0.0.1:";
  char *log = tp_wait_for(demo.err, said, 10000);
  if (!log)
    return -1;
  port = atoi(strstr(log, said) + strlen(said));
  free(log);
  snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
  return port > 0 ? 0 : -1;
}

/* POST /reports (a durable task) with a traceparent; returns its id. */
static long add_report(void) {
  char buf[4096];
  int fd = tc_connect(port, 5000);
  tc_send_str(fd, "POST /reports HTTP/1.1\r\nHost: x\r\ntraceparent: " TRACE
                  "\r\nContent-Length: 0\r\n\r\n");
  size_t n = tc_read_response(fd, buf, sizeof buf);
  close(fd);
  const char *id = n ? strstr(tc_body(buf), "\"id\":") : NULL;
  return id ? atol(id + 5) : -1;
}

/* The queue's "paused" as the API says it (through the CLI's --json). */
static int paused(const char *queue) {
  run r = CLI("queues", "--json");
  json_t *j = out_json(&r), *q;
  size_t i;
  int p = -1;
  json_array_foreach(json_object_get(j, "queues"), i, q) {
    if (strcmp(json_string_value(json_object_get(q, "name")), queue) == 0)
      p = json_is_true(json_object_get(q, "paused"));
  }
  json_decref(j);
  run_free(&r);
  return p;
}

static const char *state_of(long id, char *buf, size_t cap) {
  char ids[32];
  snprintf(ids, sizeof ids, "%ld", id);
  run r = CLI("task", ids, "--json");
  json_t *j = r.status == 0 ? out_json(&r) : NULL;
  snprintf(buf, cap, "%s", j ? json_string_value(json_object_get(j, "state")) : "(none)");
  json_decref(j);
  run_free(&r);
  return buf;
}

TEST(stats_and_every_read_in_both_forms) {
  run r = CLI("stats");
  CHECK_EQ_INT(r.status, 0);
  CHECK(strstr(r.out, "store             memory\n") != NULL);
  CHECK(strstr(r.out, "dead              0\n") != NULL);
  CHECK(strstr(r.out, "processed") != NULL);
  CHECK_EQ_STR(r.err, "");
  run_free(&r);
  /* --json prints the API's object, for every read. */
  static const char *const reads[][2] = {{"stats", "counts"},
                                         {"tasks", "tasks"},
                                         {"queues", "queues"},
                                         {"nodes", "nodes"},
                                         {"schedules", "schedules"}};
  for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
    r = CLI(reads[i][0], "--json");
    CHECK_EQ_INT(r.status, 0);
    json_t *j = out_json(&r);
    CHECK(j && json_object_get(j, reads[i][1]) != NULL);
    json_decref(j);
    run_free(&r);
  }
  r = CLI("nodes");
  CHECK_EQ_INT(r.status, 0);
  CHECK(strncmp(r.out, "ID ", 3) == 0 && strstr(r.out, "  server  ") != NULL);
  run_free(&r);
  r = CLI("schedules");
  CHECK_EQ_INT(r.status, 0);
  CHECK(strstr(r.out, "TASK  EVERY") == r.out && strstr(r.out, "\ntick  1h0m  ") != NULL);
  run_free(&r);
}

/* A wrong token or none: exit 4, one line on stderr, and nothing changed. */
TEST(a_wrong_token_or_none_is_refused_and_changes_nothing) {
  CHECK_EQ_INT(paused("default"), 0);
  run r =
      cli_env("wrong-token-wrong-token", (const char *const[]){"pause", "default", NULL});
  CHECK_EQ_INT(r.status, 4);
  CHECK_EQ_STR(r.out, "");
  CHECK(strstr(r.err, "401") != NULL && strchr(r.err, '\n') == r.err + strlen(r.err) - 1);
  CHECK(strstr(r.err, "wrong-token") == NULL); /* a token is never printed */
  run_free(&r);
  r = cli_env(NULL, (const char *const[]){"pause", "default", NULL});
  CHECK_EQ_INT(r.status, 4);
  run_free(&r);
  r = cli_env(NULL, (const char *const[]){"stats", NULL});
  CHECK_EQ_INT(r.status, 4);
  run_free(&r);
  CHECK_EQ_INT(paused("default"), 0);
  /* --token wins over the environment. */
  r = cli_env("wrong-token-wrong-token",
              (const char *const[]){"--token", TOKEN, "stats", NULL});
  CHECK_EQ_INT(r.status, 0);
  run_free(&r);
}

/* With the queue paused a task stays queued: each action, its line, its
 * exit status, and the state it leaves. */
TEST(task_actions_and_their_errors) {
  run r = CLI("pause", "default");
  CHECK_EQ_INT(r.status, 0);
  CHECK_EQ_STR(r.out, "queue default paused\n");
  run_free(&r);
  CHECK_EQ_INT(paused("default"), 1);
  r = CLI("queues");
  CHECK(strstr(r.out, "QUEUE    STATE") == r.out &&
        strstr(r.out, "\ndefault  paused") != NULL);
  run_free(&r);
  long id = add_report();
  REQUIRE(id > 0);
  char ids[32], st[32];
  snprintf(ids, sizeof ids, "%ld", id);
  r = CLI("tasks", "--state", "queued", "--name", "build_report");
  CHECK_EQ_INT(r.status, 0);
  CHECK(strstr(r.out, "build_report  default  queued") != NULL);
  run_free(&r);
  /* One task in full: where it came from and its trace. */
  r = CLI("task", ids);
  CHECK_EQ_INT(r.status, 0);
  CHECK(strstr(r.out, "state             queued\n") != NULL);
  CHECK(strstr(r.out, "traceparent       " TRACE "\n") != NULL);
  CHECK(strstr(r.out, "request           POST /reports (request ") != NULL);
  CHECK(strstr(r.out, "args              [\"monthly\"]\n") != NULL);
  run_free(&r);
  r = CLI("cancel", ids);
  CHECK_EQ_INT(r.status, 0);
  CHECK(strstr(r.out, "cancelled") != NULL);
  run_free(&r);
  CHECK_EQ_STR(state_of(id, st, sizeof st), "cancelled");
  r = CLI("cancel", ids); /* 409: already ended */
  CHECK_EQ_INT(r.status, 6);
  CHECK(strstr(r.err, "409") != NULL);
  run_free(&r);
  r = CLI("retry", ids, "--json");
  CHECK_EQ_INT(r.status, 0);
  json_t *j = out_json(&r);
  CHECK(j && json_is_true(json_object_get(j, "ok")));
  json_decref(j);
  run_free(&r);
  CHECK_EQ_STR(state_of(id, st, sizeof st), "queued");
  r = CLI("delete", ids);
  CHECK_EQ_INT(r.status, 0);
  char said[64];
  snprintf(said, sizeof said, "task %ld deleted\n", id);
  CHECK_EQ_STR(r.out, said);
  run_free(&r);
  r = CLI("task", ids); /* 404 */
  CHECK_EQ_INT(r.status, 5);
  CHECK(strstr(r.err, "404") != NULL);
  run_free(&r);
  r = CLI("retry", "99999999");
  CHECK_EQ_INT(r.status, 5);
  run_free(&r);
  r = CLI("resume", "default");
  CHECK_EQ_INT(r.status, 0);
  CHECK_EQ_STR(r.out, "queue default resumed\n");
  run_free(&r);
  CHECK_EQ_INT(paused("default"), 0);
}

TEST(bulk_actions_say_how_many) {
  run r = CLI("retry-dead");
  CHECK_EQ_INT(r.status, 0);
  CHECK_EQ_STR(r.out, "0 dead task(s) queued again\n");
  run_free(&r);
  r = CLI("delete-dead", "--queue", "default", "--json");
  CHECK_EQ_INT(r.status, 0);
  json_t *j = out_json(&r);
  CHECK(j && json_integer_value(json_object_get(j, "count")) == 0);
  json_decref(j);
  run_free(&r);
}

/* What a script must tell apart: usage 2, server error 1, unreachable 3. */
TEST(errors_have_their_own_exit_status) {
  run r = CLI("task", "12x");
  CHECK_EQ_INT(r.status, 2);
  run_free(&r);
  r = CLI("frobnicate");
  CHECK_EQ_INT(r.status, 2);
  CHECK(strstr(r.err, "unknown command") != NULL);
  run_free(&r);
  r = CLI("pause");
  CHECK_EQ_INT(r.status, 2);
  run_free(&r);
  r = CLI("pause", "no spaces/here"); /* 400 from the API */
  CHECK_EQ_INT(r.status, 1);
  CHECK(strstr(r.err, "400") != NULL);
  run_free(&r);
  /* A port nothing listens on: bound, then closed. */
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  REQUIRE(bind(s, (struct sockaddr *)&a, sizeof a) == 0);
  REQUIRE(getsockname(s, (struct sockaddr *)&a, &alen) == 0);
  close(s);
  char dead[64];
  snprintf(dead, sizeof dead, "http://127.0.0.1:%d", ntohs(a.sin_port));
  r = CLI("--url", dead, "stats");
  CHECK_EQ_INT(r.status, 3);
  CHECK(strstr(r.err, "cannot reach") != NULL);
  run_free(&r);
}

TEST(top_once_prints_one_plain_frame) {
  run r = CLI("top", "--once");
  CHECK_EQ_INT(r.status, 0);
  CHECK_EQ_INT(tc_count(r.out, "coda-admin top"), 1);
  CHECK(strstr(r.out, "processed ") && strstr(r.out, "/s") &&
        strstr(r.out, "\ndefault  "));
  CHECK(strchr(r.out, '\033') == NULL); /* not a terminal: no escapes */
  run_free(&r);
  r = CLI("top", "--once", "--json");
  CHECK_EQ_INT(r.status, 0);
  json_t *j = out_json(&r);
  CHECK(j && json_object_get(json_object_get(j, "overview"), "counts") &&
        json_is_array(json_object_get(j, "queues")));
  json_decref(j);
  run_free(&r);
}

/* Live, into a file: a frame a second until Ctrl-C, then exit 0. */
TEST(top_refreshes_until_interrupted) {
  char env_url[96], env_token[128];
  snprintf(env_url, sizeof env_url, "CODA_URL=%s", url);
  snprintf(env_token, sizeof env_token, "CODA_ADMIN_TOKEN=%s", TOKEN);
  char *env[] = {env_url, env_token, NULL};
  char *argv[] = {CODA_ADMIN_PATH, "top", NULL};
  tproc p;
  REQUIRE(tp_spawn(&p, argv, env) == 0);
  uint64_t t0 = tc_now_ms();
  char *out = NULL;
  while (tc_now_ms() - t0 < 10000) {
    free(out);
    out = tp_read(p.out);
    if (tc_count(out, "coda-admin top") >= 2)
      break;
    tc_sleep_ms(20); /* polling a file for the second frame */
  }
  CHECK(tc_count(out, "coda-admin top") >= 2);
  CHECK(tc_now_ms() - t0 >= 900); /* a second apart */
  free(out);
  CHECK_EQ_INT(tp_stop(&p, SIGINT, 5000), 0);
  tp_cleanup(&p);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  if (demo_start() != 0) {
    fprintf(stderr, "coda-demo did not start\n");
    return 1;
  }
  static const test__case cases[] = {
      TEST_CASE(stats_and_every_read_in_both_forms),
      TEST_CASE(a_wrong_token_or_none_is_refused_and_changes_nothing),
      TEST_CASE(task_actions_and_their_errors),
      TEST_CASE(bulk_actions_say_how_many),
      TEST_CASE(errors_have_their_own_exit_status),
      TEST_CASE(top_once_prints_one_plain_frame),
      TEST_CASE(top_refreshes_until_interrupted),
  };
  int rc = test__run("cli", cases, sizeof cases / sizeof cases[0]);
  CHECK_EQ_INT(tp_stop(&demo, SIGTERM, 10000), 0);
  tp_cleanup(&demo);
  return rc;
}
