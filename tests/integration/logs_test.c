/*
 * logs_test.c - JSON log lines and W3C traceparent through real coda-demo
 * processes: every line of a --log-format json run parses; access lines
 * carry method, path (token redacted), status, peer, request id and
 * duration; a task's lines carry its id, name, attempt, request id and the
 * trace id of the request that added it, on every executor (a PROCESS
 * task's lines come from a worker process) and, for a durable task, in
 * another process that claims it from a shared SQLite store. A traceparent
 * that is not valid is not kept, and none is made up.
 */
#include "harness.h"
#include "proc.h"
#include "redis_server.h"
#include "test.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOKEN "logs-test-token-0123456789abcdef"
#define TRACE_ID "4bf92f3577b34da6a3ce929d0e0e4736"
#define TRACE "00-" TRACE_ID "-00f067aa0ba902b7-01"

static int start(tproc *p, char **argv) {
  if (tp_spawn(p, argv, NULL) != 0)
    return -1;
  static const char said[] = "listening on http://127.0.0.1:";
  char *log = tp_wait_for(p->err, said, 10000);
  int port = log ? atoi(strstr(log, said) + strlen(said)) : -1;
  free(log);
  return port;
}

static void get(int port, const char *target, const char *trace) {
  char req[512], buf[4096];
  snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n%s%s%s\r\n", target,
           trace ? "traceparent: " : "", trace ? trace : "", trace ? "\r\n" : "");
  int fd = tc_connect(port, 5000);
  tc_send_str(fd, req);
  tc_read_response(fd, buf, sizeof buf);
  close(fd);
}

/* Every line of the log as a JSON object (the demo's own "coda-demo:"
 * lines, printed by the program and not by coda's logger, aside); a line
 * that does not parse fails the test. Returns an array (caller decrefs). */
static json_t *lines(const char *log) {
  json_t *all = json_array();
  for (const char *p = log; *p;) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    if (n && strncmp(p, "coda-demo:", 10) != 0) {
      json_error_t e;
      json_t *j = json_loadb(p, n, 0, &e);
      if (!j || !json_is_object(j))
        fprintf(stderr, "  not a JSON object: %.*s\n", (int)n, p);
      CHECK(j && json_is_object(j));
      if (j)
        json_array_append_new(all, j);
    }
    p += n + (nl != NULL);
  }
  return all;
}

/* The first line whose message contains `what`, or NULL. */
static json_t *find(json_t *all, const char *what) {
  size_t i;
  json_t *j;
  json_array_foreach(all, i, j) {
    const char *m = json_string_value(json_object_get(j, "message"));
    if (m && strstr(m, what))
      return j;
  }
  return NULL;
}

static const char *str(json_t *j, const char *key) {
  return json_string_value(json_object_get(j, key));
}

TEST(json_lines_carry_request_task_and_trace) {
  tproc demo;
  char *argv[] = {CODA_DEMO_PATH, "--listen",     "127.0.0.1:0", "--store",
                  "memory",       "--tick",       "0",           "--admin-token",
                  TOKEN,          "--log-format", "json",        NULL};
  int port = start(&demo, argv);
  REQUIRE(port > 0);
  get(port, "/thread/?email=traced@example.com", TRACE);
  /* Not valid: upper-case hex, an all-zero trace id, version ff. */
  get(port, "/thread/?email=upper@example.com",
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01");
  get(port, "/thread/?email=zero@example.com",
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01");
  get(port, "/thread/?email=ff@example.com", "ff-" TRACE_ID "-00f067aa0ba902b7-01");
  get(port, "/thread/?email=none@example.com", NULL);
  get(port, "/process/", TRACE);
  get(port, "/coda/?token=" TOKEN, NULL);
  char *log = tp_wait_for(demo.err, "Email sent to none@example.com", 10000);
  free(log);
  log = tp_wait_for(demo.err, "processed!", 10000);
  REQUIRE(log != NULL);
  CHECK(strstr(log, TOKEN) == NULL); /* the dashboard link's token is not logged */
  json_t *all = lines(log);
  /* An access line. */
  json_t *a = find(all, "GET /thread/?email=traced@example.com 200");
  REQUIRE(a != NULL);
  CHECK_EQ_STR(str(a, "level"), "info");
  CHECK_EQ_STR(str(a, "method"), "GET");
  CHECK_EQ_STR(str(a, "path"), "/thread/?email=traced@example.com");
  CHECK_EQ_INT((int)json_integer_value(json_object_get(a, "status")), 200);
  CHECK(str(a, "peer") && strncmp(str(a, "peer"), "127.0.0.1:", 10) == 0);
  CHECK(json_is_number(json_object_get(a, "duration_ms")));
  const char *time = str(a, "time");
  CHECK(time && strlen(time) == 24 && time[10] == 'T' && time[23] == 'Z');
  const char *rid = str(a, "request_id");
  REQUIRE(rid != NULL);
  /* The task that request added: its fields and the request's trace. */
  json_t *t = find(all, "Starting email to traced@example.com");
  REQUIRE(t != NULL);
  CHECK_EQ_STR(str(t, "request_id"), rid);
  CHECK_EQ_STR(str(t, "task"), "blocking_io_task");
  CHECK(str(t, "task_id") != NULL);
  CHECK_EQ_INT((int)json_integer_value(json_object_get(t, "attempt")), 1);
  CHECK_EQ_STR(str(t, "trace_id"), TRACE_ID);
  CHECK_EQ_STR(str(t, "span_id"), "00f067aa0ba902b7");
  /* Headers that are not valid traceparents, and none: no trace. */
  static const char *const untraced[] = {"upper@", "zero@", "ff@", "none@"};
  for (size_t i = 0; i < 4; i++) {
    char what[64];
    snprintf(what, sizeof what, "Starting email to %s", untraced[i]);
    json_t *u = find(all, what);
    CHECK(u != NULL && str(u, "task") != NULL && json_object_get(u, "trace_id") == NULL);
  }
  /* A PROCESS task logs from a worker process, in JSON, with the trace. */
  json_t *p = find(all, "[Process]");
  REQUIRE(p != NULL);
  CHECK_EQ_STR(str(p, "task"), "cpu_heavy_task");
  CHECK_EQ_STR(str(p, "trace_id"), TRACE_ID);
  /* The dashboard link's token is redacted in the path. */
  json_t *d = find(all, "GET /coda/?token=");
  CHECK(d && strstr(str(d, "path"), "token=REDACTED") != NULL);
  json_decref(all);
  free(log);
  CHECK_EQ_INT(tp_stop(&demo, SIGTERM, 10000), 0);
  tp_cleanup(&demo);
}

/* A durable task added in one process and run in another (a worker of
 * the same Redis fleet) logs the trace of the request that added it: the
 * store carried it. */
TEST(a_durable_task_carries_its_trace_to_another_process) {
  tc_redis redis;
  REQUIRE(tc_redis_start(&redis, NULL) == 0);
  char store[128];
  tc_redis_uri(&redis, store, sizeof store, "/0?prefix=logs");
  tproc server, worker;
  char *sargv[] = {
      CODA_DEMO_PATH, "--listen",     "127.0.0.1:0", "--store", store,
      "--queues",     "nobody",       "--tick",      "0",       "--admin-token",
      TOKEN,          "--log-format", "json",        NULL};
  int port = start(&server, sargv);
  REQUIRE(port > 0);
  char *wargv[] = {CODA_DEMO_PATH, "--worker", "--store", store,
                   "--log-format", "json",     NULL};
  REQUIRE(tp_spawn(&worker, wargv, NULL) == 0);
  char req[256], buf[4096];
  snprintf(
      req, sizeof req,
      "POST /reports HTTP/1.1\r\nHost: x\r\ntraceparent: %s\r\nContent-Length: 0\r\n\r\n",
      TRACE);
  int fd = tc_connect(port, 5000);
  tc_send_str(fd, req);
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  close(fd);
  CHECK_EQ_INT(tc_status(buf), 202);
  char *log = tp_wait_for(worker.err, "attempt 1 of 5 failed", 15000);
  REQUIRE(log != NULL);
  json_t *all = lines(log);
  json_t *ran = find(all, "[Report] monthly: attempt 1");
  json_t *failed = find(all, "failed after");
  REQUIRE(ran != NULL && failed != NULL);
  CHECK_EQ_STR(str(ran, "trace_id"), TRACE_ID);
  CHECK_EQ_STR(str(ran, "task"), "build_report");
  CHECK_EQ_STR(str(failed, "level"), "error");
  CHECK_EQ_STR(str(failed, "trace_id"), TRACE_ID);
  CHECK(strstr(str(failed, "message"), "trace " TRACE_ID) != NULL);
  json_decref(all);
  free(log);
  /* Nothing of it ran in the server. */
  log = tp_read(server.err);
  CHECK(strstr(log, "[Report]") == NULL);
  free(log);
  CHECK_EQ_INT(tp_stop(&worker, SIGTERM, 10000), 0);
  CHECK_EQ_INT(tp_stop(&server, SIGTERM, 10000), 0);
  tp_cleanup(&worker);
  tp_cleanup(&server);
  tc_redis_remove(&redis);
}

RUN_TESTS(logs, TEST_CASE(json_lines_carry_request_task_and_trace),
          TEST_CASE(a_durable_task_carries_its_trace_to_another_process))
