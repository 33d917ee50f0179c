/*
 * run_test.c - how coda_app_bind() and coda_app_run() start and stop an
 * app: with no listen address an app runs its tasks only (what a worker
 * process is), and a bound app already queues connections before it runs.
 */
#include "harness.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
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

/* A THREAD task that ignores cancellation: it sleeps, then still touches
 * the app (which must not have been freed under it). */
static atomic_int stubborn_started, stubborn_done;

static int stubborn(coda_task *t) {
  atomic_store(&stubborn_started, 1);
  tc_sleep_ms(1500);
  coda_log(coda_task_app(t), CODA_LOG_DEBUG, "stubborn task still here");
  atomic_store(&stubborn_done, 1);
  return 0;
}

static int h_stubborn(coda_req *req, coda_res *res, void *user) {
  (void)req;
  int rc = coda_res_add_task(res, user, "");
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

/* After the stubborn task in its list: a LOOP task, submitted by the left
 * thread once the loops, the server and the engine's loop state are gone. */
static atomic_int after_stubborn_runs;

static int after_stubborn(coda_task *t) {
  (void)t;
  atomic_fetch_add(&after_stubborn_runs, 1);
  return 0;
}

static coda_task_def *after_stubborn_def;

static int h_stubborn_durable(coda_req *req, coda_res *res, void *user) {
  (void)req;
  int rc =
      coda_res_add_task_opts(res, user, CODA_TASK_OPTS(.flags = CODA_TASK_DURABLE), "");
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

static int h_stubborn_then_loop(coda_req *req, coda_res *res, void *user) {
  (void)req;
  int rc = coda_res_add_task(res, user, "");
  rc = rc ? rc : coda_res_add_task(res, after_stubborn_def, "");
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

enum { STUBBORN_ALONE, STUBBORN_THEN_LOOP, STUBBORN_DURABLE };

/* Stops an app whose thread task never returns, with one stop or two, and
 * returns how long coda_app_run() took to return. The stubborn task is
 * alone in its list, followed by a LOOP task, or durable. */
static long stop_with_stubborn_list(long drain_ms, int stops, int mode) {
  atomic_store(&stubborn_started, 0);
  atomic_store(&stubborn_done, 0);
  coda_app *app = coda_app_new();
  if (!app)
    return -1;
  coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_ERROR);
  coda_app_set(app, CODA_OPT_TASK_DRAIN_TIMEOUT, drain_ms);
  coda_task_def *def = coda_app_task(app, "stubborn", stubborn, CODA_EXEC_THREAD);
  after_stubborn_def =
      coda_app_task(app, "after_stubborn", after_stubborn, CODA_EXEC_LOOP);
  coda_app_route(app, "GET", "/stubborn",
                 mode == STUBBORN_THEN_LOOP ? h_stubborn_then_loop
                 : mode == STUBBORN_DURABLE ? h_stubborn_durable
                                            : h_stubborn,
                 def);
  test_server ts;
  if (ts_start(&ts, app) != 0)
    return -1;
  char buf[1024];
  CHECK_EQ_INT(tc_get(ts.port, "/stubborn", buf, sizeof buf, 5000), 200);
  for (int i = 0; i < 1000 && !atomic_load(&stubborn_started); i++)
    tc_sleep_ms(5);
  CHECK(atomic_load(&stubborn_started));
  uint64_t t0 = tc_now_ms();
  for (int i = 1; i < stops; i++)
    coda_app_stop(app);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  long took = (long)(tc_now_ms() - t0);
  /* The task still runs and may touch the app: it is not freed yet. */
  if (!atomic_load(&stubborn_done))
    CHECK_EQ_INT(coda_app_free(app), CODA_ESTATE);
  int rc = CODA_ESTATE;
  for (int i = 0; i < 1000 && rc != 0; i++) {
    rc = coda_app_free(app);
    if (rc)
      tc_sleep_ms(5);
  }
  CHECK_EQ_INT(rc, 0); /* freed once the task has returned */
  CHECK(atomic_load(&stubborn_done));
  return took;
}

static long stop_with_stubborn_task(long drain_ms, int stops) {
  return stop_with_stubborn_list(drain_ms, stops, STUBBORN_ALONE);
}

/* The drain deadline bounds the stop: cancelled THREAD tasks get 100 ms
 * more, not a second (coda_app_run() took 1.3 s with a 300 ms drain). */
TEST(a_stop_waits_the_drain_deadline_and_a_short_grace) {
  long took = stop_with_stubborn_task(200, 1);
  fprintf(stderr, "  one stop, drain 200 ms: coda_app_run returned after %ld ms\n", took);
  CHECK(took >= 200);
  CHECK(took < 900);
}

/* A second stop skips the drain: only the grace is left (it took 1.05 s). */
TEST(a_second_stop_skips_the_drain) {
  long took = stop_with_stubborn_task(5000, 2);
  fprintf(stderr, "  two stops, drain 5000 ms: coda_app_run returned after %ld ms\n", took);
  CHECK(took >= 0);
  CHECK(took < 700);
}

/* The task after a left THREAD task in its list is submitted when that
 * task returns, long after coda_app_run(): its loop has ended, and the
 * engine's state for that loop and the loop's inbox must not be touched
 * (they were freed: ASan reported a heap-use-after-free in the LOOP
 * submit). It is dropped, and the app is freed once the thread returns. */
TEST(a_task_after_a_left_thread_task_is_dropped_safely) {
  atomic_store(&after_stubborn_runs, 0);
  long took = stop_with_stubborn_list(100, 1, STUBBORN_THEN_LOOP);
  CHECK(took >= 0);
  CHECK_EQ_INT(atomic_load(&after_stubborn_runs), 0);
}

/* A durable THREAD task left running records its outcome when it returns,
 * after the store thread has stopped: the outcome was queued for a thread
 * that would never take it (LeakSanitizer found it, and its slot was never
 * given back). It is not recorded: the task stays in the store and runs
 * again at the next start. */
TEST(a_durable_task_left_running_finishes_after_the_store_stopped) {
  long took = stop_with_stubborn_list(100, 1, STUBBORN_DURABLE);
  CHECK(took >= 0);
}

/* A LOOP task that returned CODA_PENDING and never calls coda_task_done():
 * its timeout timer kept its loop running after the drain deadline, so
 * coda_app_run() returned only when that timeout fired, not within the
 * documented drain deadline plus the grace. */
static atomic_int pending_started;

static int never_done(coda_task *t) {
  (void)t;
  atomic_store(&pending_started, 1);
  return CODA_PENDING;
}

TEST(a_pending_loop_task_does_not_hold_the_stop_past_the_drain) {
  atomic_store(&pending_started, 0);
  coda_app *app = coda_app_new();
  REQUIRE(app != NULL);
  coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
  coda_app_set(app, CODA_OPT_TASK_DRAIN_TIMEOUT, 100);
  coda_task_def *def = coda_app_task(app, "never_done", never_done, CODA_EXEC_LOOP);
  REQUIRE(def != NULL);
  coda_task_def_timeout(def, 4000);
  coda_app_route(app, "GET", "/pending", h_stubborn, def);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  char buf[1024];
  CHECK_EQ_INT(tc_get(ts.port, "/pending", buf, sizeof buf, 5000), 200);
  for (int i = 0; i < 1000 && !atomic_load(&pending_started); i++)
    tc_sleep_ms(5);
  CHECK(atomic_load(&pending_started));
  uint64_t t0 = tc_now_ms();
  CHECK_EQ_INT(ts_stop(&ts), 0);
  long took = (long)(tc_now_ms() - t0);
  fprintf(stderr,
          "  drain 100 ms, a LOOP task pending with a 4 s timeout: stopped in %ld ms\n",
          took);
  CHECK(took < 1500);
  CHECK_EQ_INT(coda_task_stat(app, CODA_EXEC_LOOP, CODA_STAT_DROPPED), 1);
  CHECK_EQ_INT(coda_app_free(app), 0);
}

/* A start that fails half-way (here: descriptors run out while the loops
 * are made, as under a low ulimit -n) returns a CODA_E* code and undoes
 * what it made; it crashed while closing a loop it had not finished making
 * (uv_close() on handles never initialised, the inbox's destroyed mutex),
 * and did not check that its async handles were made at all. Every limit
 * from "nothing fits" to "everything fits" is tried. */
static int open_descriptors(void) {
  int n = 0;
  for (int fd = 0; fd < 4096; fd++)
    if (fcntl(fd, F_GETFD) != -1)
      n++;
  return n;
}

TEST(a_start_that_runs_out_of_descriptors_fails_cleanly) {
  struct rlimit saved;
  REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  /* libuv makes its process-wide signal pipe at the first loop, and aborts
   * if it cannot: a program has made a loop long before it runs out. */
  uv_loop_t first;
  REQUIRE(uv_loop_init(&first) == 0);
  uv_loop_close(&first);
  int started = 0, failed = 0;
  for (int extra = 0; extra <= 24; extra++) {
    coda_app *app = coda_app_new();
    REQUIRE(app != NULL);
    coda_app_set(app, CODA_OPT_HANDLE_SIGNALS, 0);
    coda_app_set(app, CODA_OPT_THREADS, 3);
    coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
    REQUIRE(coda_app_listen(app, "127.0.0.1:0") == 0);
    REQUIRE(coda_app_bind(app) == 0);
    /* A limit below which exactly `extra` descriptors are free. */
    struct rlimit low = saved;
    int limit = 0;
    for (int free_below = 0; limit < 4096; limit++) {
      if (fcntl(limit, F_GETFD) == -1 && free_below++ == extra)
        break;
    }
    low.rlim_cur = (rlim_t)limit;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
    runner r = {.app = app, .rc = -1};
    REQUIRE(uv_thread_create(&r.thread, run_app, &r) == 0);
    tc_sleep_ms(50);
    coda_app_stop(app);
    uv_thread_join(&r.thread);
    REQUIRE(setrlimit(RLIMIT_NOFILE, &saved) == 0);
    if (r.rc == 0)
      started++;
    else
      failed++;
    CHECK(r.rc <= 0);
    CHECK_EQ_INT(coda_app_free(app), 0);
  }
  /* (libuv 1.44 leaks the epoll descriptor of a uv_loop_init() that fails
   * after making it: not counted here.) */
  fprintf(stderr, "  %d starts failed, %d started (%d descriptors open now)\n", failed,
          started, open_descriptors());
  CHECK(failed > 0);
  CHECK(started > 0);
}

/* coda_app_stop() may come from any thread at any time, also while
 * coda_app_run() is ending on another: it read app->server without
 * synchronisation (a data race TSan reports), could use the server after
 * coda_app_run() freed it, and sent to the control loop's async after that
 * loop was closed. */
typedef struct stopper {
  coda_app *app;
  atomic_int done;
  long stops;
} stopper;

static void keep_stopping(void *arg) {
  stopper *st = arg;
  while (!atomic_load(&st->done)) {
    coda_app_stop(st->app);
    st->stops++;
  }
}

TEST(stops_from_another_thread_while_the_run_ends_are_safe) {
  for (int round = 0; round < 20; round++) {
    coda_app *app = coda_app_new();
    REQUIRE(app != NULL);
    coda_app_set(app, CODA_OPT_HANDLE_SIGNALS, 0);
    coda_app_set(app, CODA_OPT_THREADS, 1);
    coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_ERROR);
    REQUIRE(coda_app_listen(app, "127.0.0.1:0") == 0);
    REQUIRE(coda_app_bind(app) == 0);
    runner r = {.app = app, .rc = -1};
    stopper st = {.app = app};
    REQUIRE(uv_thread_create(&r.thread, run_app, &r) == 0);
    tc_sleep_ms(round % 4 * 5);
    uv_thread_t t;
    REQUIRE(uv_thread_create(&t, keep_stopping, &st) == 0);
    uv_thread_join(&r.thread);
    tc_sleep_ms(2); /* stops after the run returned do nothing */
    atomic_store(&st.done, 1);
    uv_thread_join(&t);
    CHECK_EQ_INT(r.rc, 0);
    CHECK(st.stops > 0);
    CHECK_EQ_INT(coda_app_free(app), 0);
  }
}

/* CODA_OPT_SEND_BUFFER bounds what of a response may still be unread when
 * its tasks start: with an 8 KiB send buffer and a client that reads
 * nothing (4 KiB receive buffer), a 1 MiB response is far from written, so
 * its task waits; without the option Linux grows the send buffer to take
 * much more. */
#define SENDBUF_BODY (1u << 20)
static char sendbuf_body[SENDBUF_BODY];
static atomic_int sendbuf_task_ran;

static int sendbuf_task(coda_task *t) {
  (void)t;
  atomic_store(&sendbuf_task_ran, 1);
  return 0;
}

static int h_big(coda_req *req, coda_res *res, void *user) {
  (void)req;
  int rc = coda_res_add_task(res, user, "");
  return rc ? rc : coda_res_body_static(res, sendbuf_body, SENDBUF_BODY);
}

TEST(a_bounded_send_buffer_holds_tasks_until_the_client_reads) {
  memset(sendbuf_body, 'x', sizeof sendbuf_body);
  atomic_store(&sendbuf_task_ran, 0);
  coda_app *app = coda_app_new();
  REQUIRE(app != NULL);
  coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_ERROR);
  REQUIRE(coda_app_set(app, CODA_OPT_SEND_BUFFER, 8192) == 0);
  coda_task_def *def = coda_app_task(app, "after_big", sendbuf_task, CODA_EXEC_THREAD);
  coda_app_route(app, "GET", "/big", h_big, def);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect_rcvbuf(ts.port, 5000, 4096);
  REQUIRE(fd >= 0);
  CHECK_EQ_INT(tc_send_str(fd, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
  tc_sleep_ms(300); /* time for the task to start if it were allowed to */
  CHECK(!atomic_load(&sendbuf_task_ran));
  static char buf[SENDBUF_BODY + 4096];
  CHECK(tc_read_response(fd, buf, sizeof buf) > SENDBUF_BODY);
  for (int i = 0; i < 1000 && !atomic_load(&sendbuf_task_ran); i++)
    tc_sleep_ms(5);
  CHECK(atomic_load(&sendbuf_task_ran));
  close(fd);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  CHECK_EQ_INT(coda_app_free(app), 0);
}

RUN_TESTS(run, TEST_CASE(an_app_with_no_listen_address_runs_its_tasks_only),
          TEST_CASE(a_bound_app_queues_connections_before_it_runs),
          TEST_CASE(a_stop_waits_the_drain_deadline_and_a_short_grace),
          TEST_CASE(a_second_stop_skips_the_drain),
          TEST_CASE(a_task_after_a_left_thread_task_is_dropped_safely),
          TEST_CASE(a_durable_task_left_running_finishes_after_the_store_stopped),
          TEST_CASE(stops_from_another_thread_while_the_run_ends_are_safe),
          TEST_CASE(a_pending_loop_task_does_not_hold_the_stop_past_the_drain),
          TEST_CASE(a_start_that_runs_out_of_descriptors_fails_cleanly),
          TEST_CASE(a_bounded_send_buffer_holds_tasks_until_the_client_reads))
