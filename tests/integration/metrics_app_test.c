/*
 * metrics_app_test.c - what the layers count, read back through
 * coda_app_metrics_text() from a real server on an ephemeral port: HTTP
 * requests by method, route pattern (never the path) and status class;
 * task outcomes (succeeded, failed, timed_out, dropped, rejected); and
 * CODA_OPT_METRICS 0, which counts nothing.
 */
#include "harness.h"
#include "test.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static coda_task_def *ok_def, *fail_def, *slow_def, *later_def;
static atomic_int slow_release, slow_timed_out;

/* The error hook hears the timeout while the task still runs. */
static void on_error(const coda_task *t, const char *message, void *user) {
  (void)message, (void)user;
  if (strcmp(coda_task_name(t), "slow") == 0)
    atomic_store(&slow_timed_out, 1);
}

static int ok_task(coda_task *t) {
  (void)t;
  return 0;
}
static int fail_task(coda_task *t) { return coda_task_fail(t, "on purpose"); }
static int slow_task(coda_task *t) {
  /* Past its timeout, holding the one THREAD slot until the test lets it
   * go (or 10 s): it ignores the cancellation the timeout brings. */
  (void)t;
  uint64_t end = tc_now_ms() + 10000;
  while (!atomic_load(&slow_release) && tc_now_ms() < end)
    tc_sleep_ms(1);
  return 0;
}

static int h_item(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  return coda_res_add_task(res, ok_def, "");
}
/* A failing task first in a stop-on-failure list: the one after it is
 * dropped. */
static int h_fail(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  coda_res_tasks_flags(res, CODA_LIST_STOP_ON_FAILURE);
  int rc = coda_res_add_task(res, fail_def, "");
  return rc ? rc : coda_res_add_task(res, later_def, "");
}
static int h_slow(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  return coda_res_add_task(res, slow_def, "");
}
static int h_teapot(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  coda_res_status(res, 418);
  return coda_res_body_static(res, "tea", 3);
}

static coda_app *make_app(int metrics) {
  coda_app *app = coda_app_new();
  if (!app)
    return NULL;
  coda_app_set(app, CODA_OPT_THREADS, 2);
  coda_app_set(app, CODA_OPT_METRICS, metrics);
  coda_app_set(app, CODA_OPT_THREAD_QUEUE, 1); /* a second slow task is rejected */
  ok_def = coda_app_task(app, "ok", ok_task, CODA_EXEC_LOOP);
  fail_def = coda_app_task(app, "fail \"quoted\"", fail_task, CODA_EXEC_LOOP);
  later_def = coda_app_task(app, "later", ok_task, CODA_EXEC_LOOP);
  slow_def = coda_app_task(app, "slow", slow_task, CODA_EXEC_THREAD);
  coda_task_def_timeout(slow_def, 50);
  coda_app_on_task_error(app, on_error, NULL);
  coda_app_route(app, "GET", "/items/{id}", h_item, NULL);
  coda_app_route(app, "GET", "/fail", h_fail, NULL);
  coda_app_route(app, "GET", "/slow", h_slow, NULL);
  coda_app_route(app, "GET", "/teapot", h_teapot, NULL);
  return app;
}

static char *metrics(coda_app *app) {
  char *text = NULL;
  size_t len = 0;
  if (coda_app_metrics_text(app, &text, &len) != 0)
    return NULL;
  if (strlen(text) != len) {
    free(text);
    return NULL;
  }
  return text;
}

/* The value of the sample line that starts with `series` (name and
 * labels), or -1 when there is none. */
static double sample(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (strncmp(p, series, n) == 0 && p[n] == ' ')
      return strtod(p + n + 1, NULL);
  return -1;
}

/* Polls the metrics until `series` has `want`, up to ms. */
static double wait_sample(coda_app *app, const char *series, double want, int ms) {
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  double v;
  for (;;) {
    char *text = metrics(app);
    v = text ? sample(text, series) : -2;
    free(text);
    if (v == want || tc_now_ms() >= end)
      return v;
    tc_sleep_ms(5);
  }
}

static int raw_status(int port, const char *request) {
  int fd = tc_connect(port, 5000);
  char buf[2048];
  int status = -1;
  if (fd >= 0 && tc_send_str(fd, request) == 0 &&
      tc_read_response(fd, buf, sizeof buf) > 0)
    status = tc_status(buf);
  if (fd >= 0)
    close(fd);
  return status;
}

TEST(layers_count_requests_and_task_outcomes) {
  coda_app *app = make_app(1);
  REQUIRE(app && ok_def && fail_def && slow_def && later_def);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  char buf[4096];
  for (int i = 0; i < 5; i++) {
    char path[32];
    snprintf(path, sizeof path, "/items/%d", i); /* five paths, one pattern */
    CHECK_EQ_INT(tc_get(ts.port, path, buf, sizeof buf, 5000), 200);
  }
  CHECK_EQ_INT(tc_get(ts.port, "/nowhere", buf, sizeof buf, 5000), 404);
  CHECK_EQ_INT(tc_get(ts.port, "/teapot", buf, sizeof buf, 5000), 418);
  CHECK_EQ_INT(raw_status(ts.port, "BREW /teapot HTTP/1.1\r\nHost: x\r\n\r\n"), 501);
  CHECK_EQ_INT(tc_get(ts.port, "/fail", buf, sizeof buf, 5000), 200);
  CHECK_EQ_INT(tc_get(ts.port, "/slow", buf, sizeof buf, 5000), 200);
  /* The slow task holds the one THREAD slot until it is released. */
  CHECK_EQ_INT(tc_get(ts.port, "/slow", buf, sizeof buf, 5000), 503);

  CHECK(wait_sample(app,
                    "coda_tasks_total{task=\"ok\",queue=\"default\",executor=\"loop\","
                    "outcome=\"succeeded\"}",
                    5, 10000) == 5);
  CHECK(wait_sample(app,
                    "coda_tasks_total{task=\"fail \\\"quoted\\\"\",queue=\"default\","
                    "executor=\"loop\",outcome=\"failed\"}",
                    1, 10000) == 1);
  CHECK(wait_sample(app,
                    "coda_tasks_total{task=\"later\",queue=\"default\",executor=\"loop\","
                    "outcome=\"dropped\"}",
                    1, 10000) == 1);
  CHECK(
      wait_sample(app,
                  "coda_tasks_total{task=\"slow\",queue=\"default\",executor=\"thread\","
                  "outcome=\"rejected\"}",
                  1, 10000) == 1);
  uint64_t end = tc_now_ms() + 10000;
  while (!atomic_load(&slow_timed_out) && tc_now_ms() < end)
    tc_sleep_ms(5);
  CHECK(atomic_load(&slow_timed_out));
  atomic_store(&slow_release, 1);
  CHECK(
      wait_sample(app,
                  "coda_tasks_total{task=\"slow\",queue=\"default\",executor=\"thread\","
                  "outcome=\"timed_out\"}",
                  1, 10000) == 1);
  CHECK(wait_sample(app,
                    "coda_task_duration_seconds_count{task=\"ok\",executor=\"loop\"}", 5,
                    10000) == 5);
  CHECK(wait_sample(app, "coda_task_queue_wait_seconds_count{queue=\"default\"}", 7,
                    10000) ==
        7); /* 5 ok, fail, slow: never the dropped or rejected ones */

  char *text = metrics(app);
  REQUIRE(text);
  CHECK(sample(text, "coda_http_requests_total{method=\"GET\",route=\"/items/{id}\","
                     "status=\"2xx\"}") == 5);
  CHECK(strstr(text, "/items/0") == NULL); /* never the raw path */
  CHECK(
      sample(text,
             "coda_http_requests_total{method=\"GET\",route=\"none\",status=\"4xx\"}") ==
      1);
  CHECK(sample(text, "coda_http_requests_total{method=\"GET\",route=\"/teapot\","
                     "status=\"4xx\"}") == 1);
  CHECK(sample(text, "coda_http_requests_total{method=\"OTHER\",route=\"none\","
                     "status=\"5xx\"}") == 1);
  CHECK(sample(text, "coda_http_requests_total{method=\"GET\",route=\"/slow\","
                     "status=\"5xx\"}") == 1);
  CHECK(sample(text, "coda_http_request_duration_seconds_count{route=\"/items/{id}\"}") ==
        5);
  CHECK(sample(text, "coda_http_request_duration_seconds_bucket{route=\"/items/{id}\","
                     "le=\"+Inf\"}") == 5);
  CHECK(strstr(text, "# TYPE coda_http_request_duration_seconds histogram\n") != NULL);
  CHECK(sample(text, "coda_build_info{version=\"0.1.0\"}") == 1);
  free(text);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  CHECK_EQ_INT(tc_app_free(app, 10000), 0);
}

TEST(metrics_off_counts_nothing) {
  atomic_store(&slow_release, 0);
  coda_app *app = make_app(0);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  char buf[4096];
  CHECK_EQ_INT(tc_get(ts.port, "/items/1", buf, sizeof buf, 5000), 200);
  CHECK_EQ_INT(tc_get(ts.port, "/fail", buf, sizeof buf, 5000), 200);
  CHECK_EQ_INT(ts_stop(&ts), 0); /* the tasks have run: the drain waits for them */
  char *text = metrics(app);
  REQUIRE(text);
  CHECK(strstr(text, "coda_http_requests_total{") == NULL);
  CHECK(strstr(text, "coda_tasks_total{") == NULL);
  CHECK(strstr(text, "# TYPE coda_tasks_total counter\n") != NULL);
  CHECK(sample(text, "coda_build_info{version=\"0.1.0\"}") == 1);
  free(text);
  CHECK_EQ_INT(tc_app_free(app, 10000), 0);
}

/* Requests the server answers itself, never routed (a malformed head, a
 * head too large), are counted too: a flood of them is seen. */
TEST(server_answers_are_counted) {
  coda_app *app = make_app(1);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  CHECK_EQ_INT(raw_status(ts.port, "GET /items/1 HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"),
               400);
  CHECK_EQ_INT(raw_status(ts.port, "\x01\x02 garbage\r\n\r\n"), 400);
  char big[12000];
  snprintf(big, sizeof big, "GET /items/1 HTTP/1.1\r\nHost: x\r\nX-Big: %09000d\r\n\r\n", 0);
  CHECK_EQ_INT(raw_status(ts.port, big), 431);
  /* A head that did not parse has no method to trust: OTHER. */
  CHECK(wait_sample(app, "coda_http_requests_total{method=\"OTHER\",route=\"none\",status=\"4xx\"}",
                    3, 5000) == 3);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  CHECK_EQ_INT(tc_app_free(app, 10000), 0);
}

/* The queues' gauges come from the store's own counts: tasks added to a
 * queue this app does not serve stay queued, and the oldest one ages. */
TEST(queue_gauges_follow_the_store) {
  coda_app *app = coda_app_new();
  REQUIRE(app);
  coda_task_def *def = coda_app_task(app, "parked", ok_task, CODA_EXEC_THREAD);
  REQUIRE(def);
  CHECK_EQ_INT(coda_task_def_durable(def, 1), 0);
  CHECK_EQ_INT(coda_task_def_queue(def, "parked-queue"), 0);
  CHECK_EQ_INT(coda_app_store(app, "memory"), 0);
  CHECK_EQ_INT(coda_app_queues(app, "default"), 0);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  char buf[1024]; /* answered: the services (the store) have started */
  CHECK_EQ_INT(tc_get(ts.port, "/", buf, sizeof buf, 5000), 404);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(coda_app_enqueue(app, def, NULL, "i", (int64_t)i), 0);
  CHECK_EQ_INT(coda_app_store_sync(app), 0);
  CHECK(wait_sample(app, "coda_queue_tasks{queue=\"parked-queue\",state=\"queued\"}", 3,
                    5000) == 3);
  /* Aging: the gauge is read from the oldest due time, now. */
  uint64_t end = tc_now_ms() + 5000;
  double age = 0;
  while (age < 0.05 && tc_now_ms() < end) {
    char *text = metrics(app);
    age = text ? sample(text, "coda_queue_oldest_age_seconds{queue=\"parked-queue\"}") : -1;
    free(text);
    tc_sleep_ms(10);
  }
  CHECK(age >= 0.05 && age < 60);
  char *text = metrics(app);
  REQUIRE(text);
  CHECK(sample(text, "coda_queue_tasks{queue=\"parked-queue\",state=\"running\"}") == 0);
  CHECK(sample(text, "coda_queue_tasks{queue=\"parked-queue\",state=\"scheduled\"}") == 0);
  /* One family's samples stay together (the text format's rule). */
  const char *first = strstr(text, "coda_queue_tasks{");
  const char *age_head = strstr(text, "# TYPE coda_queue_oldest_age_seconds");
  CHECK(first && age_head && first < age_head &&
        strstr(age_head, "coda_queue_tasks{") == NULL);
  free(text);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  CHECK_EQ_INT(tc_app_free(app, 10000), 0);
}

RUN_TESTS(metrics_app, TEST_CASE(layers_count_requests_and_task_outcomes),
          TEST_CASE(metrics_off_counts_nothing), TEST_CASE(server_answers_are_counted),
          TEST_CASE(queue_gauges_follow_the_store))
