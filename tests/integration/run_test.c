/*
 * run_test.c - how coda_app_bind() and coda_app_run() start and stop an
 * app: with no listen address an app runs its tasks only (what a worker
 * process is), and a bound app already queues connections before it runs.
 */
#include "harness.h"
#include "test.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static atomic_int thread_runs, loop_runs;

static int count_thread(coda_task *t) {
  (void)t;
  atomic_fetch_add(&thread_runs, 1);
  return 0;
}

static int count_loop(coda_task *t) {
  CHECK(coda_task_loop(t) != NULL);
  atomic_fetch_add(&loop_runs, 1);
  return 0;
}

typedef struct runner {
  coda_app *app;
  uv_thread_t thread;
  int rc;
} runner;

static void run_app(void *arg) {
  runner *r = arg;
  r->rc = coda_app_run(r->app);
}

static int wait_count(atomic_int *n, int want, int ms) {
  for (int i = 0; i < ms / 5 && atomic_load(n) < want; i++)
    tc_sleep_ms(5);
  return atomic_load(n);
}

TEST(an_app_with_no_listen_address_runs_its_tasks_only) {
  coda_app *app = coda_app_new();
  REQUIRE(app != NULL);
  coda_app_set(app, CODA_OPT_HANDLE_SIGNALS, 0);
  coda_app_set(app, CODA_OPT_THREADS, 2);
  coda_app_set(app, CODA_OPT_STORE_POLL, 10);
  coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_WARN);
  coda_task_def *th = coda_app_task(app, "count_thread", count_thread, CODA_EXEC_THREAD);
  coda_task_def *lp = coda_app_task(app, "count_loop", count_loop, CODA_EXEC_LOOP);
  REQUIRE(th && lp);
  REQUIRE(coda_app_store(app, "memory") == 0);
  REQUIRE(coda_app_listen(app, NULL) == 0);
  runner r = {.app = app, .rc = -1};
  REQUIRE(uv_thread_create(&r.thread, run_app, &r) == 0);
  /* Adds from outside any request, as a producer feeding a worker would;
   * refused (CODA_ESTATE) only until the app runs. */
  int added = 0;
  for (int i = 0; i < 400 && added < 10; i++) {
    int rc = coda_app_enqueue(app, i % 2 ? lp : th, NULL, "");
    if (rc == 0)
      added++;
    else
      tc_sleep_ms(5);
  }
  CHECK_EQ_INT(added, 10);
  CHECK_EQ_INT(wait_count(&thread_runs, 5, 10000), 5);
  CHECK_EQ_INT(wait_count(&loop_runs, 5, 10000), 5);
  CHECK_EQ_INT(coda_app_port(app), 0); /* no socket */
  coda_app_stop(app);
  uv_thread_join(&r.thread);
  CHECK_EQ_INT(r.rc, 0);
  coda_app_free(app);
}

static int h_ok(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  return coda_res_body_static(res, "ok", 2);
}

/* A program that binds and then tells a supervisor it is ready must not
 * see a connection refused: the socket listens from coda_app_bind() on,
 * and what arrives waits in the backlog until the loops run. */
TEST(a_bound_app_queues_connections_before_it_runs) {
  coda_app *app = coda_app_new();
  REQUIRE(app != NULL);
  coda_app_set(app, CODA_OPT_HANDLE_SIGNALS, 0);
  coda_app_set(app, CODA_OPT_THREADS, 1);
  coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_WARN);
  REQUIRE(coda_app_route(app, "GET", "/ok", h_ok, NULL) == 0);
  REQUIRE(coda_app_listen(app, "127.0.0.1:0") == 0);
  REQUIRE(coda_app_bind(app) == 0);
  int port = coda_app_port(app);
  REQUIRE(port > 0);
  int fd = tc_connect(port, 5000); /* before coda_app_run() */
  CHECK(fd >= 0);
  if (fd >= 0)
    CHECK_EQ_INT(tc_send_str(fd, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
  runner r = {.app = app, .rc = -1};
  REQUIRE(uv_thread_create(&r.thread, run_app, &r) == 0);
  if (fd >= 0) {
    char buf[1024];
    CHECK(tc_read_response(fd, buf, sizeof buf) > 0);
    CHECK_EQ_INT(tc_status(buf), 200);
    close(fd);
  }
  coda_app_stop(app);
  uv_thread_join(&r.thread);
  CHECK_EQ_INT(r.rc, 0);
  coda_app_free(app);
}

RUN_TESTS(run, TEST_CASE(an_app_with_no_listen_address_runs_its_tasks_only),
          TEST_CASE(a_bound_app_queues_connections_before_it_runs))
