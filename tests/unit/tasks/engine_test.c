/*
 * engine_test.c - the task engine on bare libuv loops, with no HTTP server
 * at all: what a worker process stands on. The test thread runs one event
 * loop with an inbox (as a server loop has) and the control loop, and
 * hands the engine to both through coda__engine_start() and
 * coda__engine_add_loop().
 *
 * Checks: LOOP and THREAD tasks with no response run there; a durable task
 * added with coda_app_enqueue() is written to the store, claimed and run;
 * a task that returns -1 is reported as "returned -1", not as a coda error;
 * a LOOP task that returns CODA_PENDING, times out and never calls
 * coda_task_done() leaves no handle open (uv_loop_close succeeds) and no
 * leak (LeakSanitizer, in the ASan stage).
 */
#include "common/inbox.h"
#include "tasks/task.h"
#include "test.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static uv_loop_t loop, control;
/* The loop's owner keeps it alive (a server has its listener and timers):
 * the engine's own handles never do, so that a loop can end. */
static uv_async_t keep_alive;
static coda__inbox inbox;
static uv_thread_t self;
static coda_app *app;
static coda__engine *engine;
static coda_task_def *loop_def, *thread_def, *minus_one_def, *hang_def, *durable_def;
static atomic_int loop_ran, thread_ran, durable_ran;
static atomic_int loop_ran_on_loop_thread;
static char hook_message[256];
static uv_mutex_t hook_mu;

static int on_loop(coda_task *t) {
  uv_thread_t me = uv_thread_self();
  atomic_store(&loop_ran_on_loop_thread, uv_thread_equal(&me, &self));
  CHECK(coda_task_loop(t) == &loop);
  atomic_fetch_add(&loop_ran, 1);
  return 0;
}

static int on_thread(coda_task *t) {
  CHECK_EQ_STR(coda_task_str(t, 0), "hello");
  atomic_fetch_add(&thread_ran, 1);
  return 0;
}

static int on_minus_one(coda_task *t) {
  (void)t;
  return -1;
}

static int on_hang(coda_task *t) {
  (void)t;
  return CODA_PENDING; /* and never coda_task_done() */
}

static int on_durable(coda_task *t) {
  CHECK(coda_task_durable(t));
  atomic_fetch_add(&durable_ran, 1);
  return 0;
}

static void on_error(const coda_task *t, const char *message, void *user) {
  (void)user;
  uv_mutex_lock(&hook_mu);
  snprintf(hook_message, sizeof hook_message, "%s: %s", coda_task_name(t), message);
  uv_mutex_unlock(&hook_mu);
}

static int hook_says(const char *needle) {
  uv_mutex_lock(&hook_mu);
  int yes = strstr(hook_message, needle) != NULL;
  uv_mutex_unlock(&hook_mu);
  return yes;
}

/* A task with no response, as the store thread submits a claimed one. */
static int submit(coda_task_def *def, const char *fmt, ...) {
  coda_task *t;
  va_list ap;
  va_start(ap, fmt);
  int rc = coda__task_new(engine, def, 0, fmt, ap, &t);
  va_end(ap);
  if (rc == 0)
    coda__task_submit(t);
  return rc;
}

/* Turns both loops until cond() holds or ms pass. */
static int spin_until(int (*cond)(void), int ms) {
  uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000u;
  while (!cond() && uv_hrtime() < end) {
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_run(&control, UV_RUN_NOWAIT);
    uv_sleep(1);
  }
  return cond();
}

static int loop_and_thread_ran(void) {
  return atomic_load(&loop_ran) == 1 && atomic_load(&thread_ran) == 1;
}
/* The engine counts a failure, then logs it and calls the error hook (on
 * the task's thread): wait for both, or the check of the hook's message
 * races the hook (it failed once so under ASan). */
static int minus_one_reported(void) {
  return coda_task_stat(app, CODA_EXEC_THREAD, CODA_STAT_FAILED) == 1 &&
         hook_says("minus_one: ");
}
static int hang_timed_out(void) {
  return coda_task_stat(app, CODA_EXEC_LOOP, CODA_STAT_TIMED_OUT) == 1 &&
         hook_says("hang: ");
}
static int durable_succeeded(void) {
  return atomic_load(&durable_ran) == 1 &&
         coda_task_stat(app, CODA_EXEC_THREAD, CODA_STAT_SUCCEEDED) == 2;
}

TEST(tasks_run_on_bare_loops_with_no_server) {
  REQUIRE(submit(loop_def, "") == 0);
  REQUIRE(submit(thread_def, "s", "hello") == 0);
  CHECK(spin_until(loop_and_thread_ran, 5000));
  CHECK(atomic_load(&loop_ran_on_loop_thread));
}

TEST(a_task_returning_minus_one_is_not_reported_as_a_coda_error) {
  REQUIRE(submit(minus_one_def, "") == 0);
  CHECK(spin_until(minus_one_reported, 5000));
  CHECK(hook_says("minus_one: returned -1 (not a CODA_E* code)"));
  CHECK(!hook_says("out of memory"));
}

TEST(a_pending_loop_task_past_its_timeout_is_reported) {
  REQUIRE(submit(hang_def, "") == 0);
  CHECK(spin_until(hang_timed_out, 5000));
  CHECK(hook_says("hang: no coda_task_done() before its timeout"));
}

static uint64_t durable_id;

static int durable_recorded(void) {
  coda_task_info *info = NULL;
  int yes = coda_task_get(app, durable_id, &info) == 0 && info->state == CODA_STATE_SUCCEEDED;
  coda_task_info_free(info);
  return yes;
}

TEST(a_durable_task_is_stored_claimed_and_run_without_a_server) {
  coda_task_opts o = CODA_TASK_OPTS_INIT();
  REQUIRE(coda_app_enqueue(app, durable_def, &o, "i", (int64_t)7) == 0);
  CHECK(o.id != 0);
  CHECK(spin_until(durable_succeeded, 10000));
  durable_id = o.id;
  CHECK(spin_until(durable_recorded, 10000)); /* the outcome is written after */
}

/* Options and flags of the wrong family are refused, not reinterpreted. */
TEST(flags_of_the_wrong_family_are_refused) {
  coda_tasks *list = coda_tasks_new(app);
  REQUIRE(list != NULL);
  CHECK_EQ_INT(coda_tasks_set_flags(list, CODA_TASK_ALWAYS), CODA_EINVAL);
  CHECK_EQ_INT(coda_tasks_set_flags(list, CODA_LIST_PARALLEL), 0);
  CHECK_EQ_INT(
      coda_tasks_add_opts(list, thread_def, CODA_TASK_OPTS(.flags = CODA_LIST_PARALLEL), "s",
                          "x"),
      CODA_EINVAL);
  coda_task_opts sizeless;
  memset(&sizeless, 0, sizeof sizeless);
  CHECK_EQ_INT(coda_tasks_add_opts(list, thread_def, &sizeless, "s", "x"), CODA_EINVAL);
  /* An older caller's shorter struct (no id member) is read as far as it
   * goes. */
  coda_task_opts older = CODA_TASK_OPTS_INIT(.flags = CODA_TASK_ALWAYS);
  older.size = offsetof(coda_task_opts, id);
  older.id = 12345;
  CHECK_EQ_INT(coda_tasks_add_opts(list, thread_def, &older, "s", "x"), 0);
  CHECK(older.id == 12345); /* not written past what the caller has */
  coda_tasks_free(list);
}

static int closed_all(void) { return !uv_loop_alive(&loop) && !uv_loop_alive(&control); }

static coda__task_loop *tl;
static int setup_ok;

static void setup(void) {
  uv_mutex_init(&hook_mu);
  self = uv_thread_self();
  app = coda_app_new();
  REQUIRE(app != NULL);
  coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
  coda_app_set(app, CODA_OPT_STORE_POLL, 10);
  loop_def = coda_app_task(app, "loop", on_loop, CODA_EXEC_LOOP);
  thread_def = coda_app_task(app, "thread", on_thread, CODA_EXEC_THREAD);
  minus_one_def = coda_app_task(app, "minus_one", on_minus_one, CODA_EXEC_THREAD);
  hang_def = coda_app_task(app, "hang", on_hang, CODA_EXEC_LOOP);
  durable_def = coda_app_task(app, "durable", on_durable, CODA_EXEC_THREAD);
  REQUIRE(loop_def && thread_def && minus_one_def && hang_def && durable_def);
  coda_task_def_timeout(hang_def, 50);
  coda_app_on_task_error(app, on_error, NULL);
  REQUIRE(coda_app_store(app, "memory") == 0);
  engine = coda__engine_peek(app);
  REQUIRE(engine != NULL);
  REQUIRE(uv_loop_init(&loop) == 0 && uv_loop_init(&control) == 0);
  REQUIRE(uv_async_init(&loop, &keep_alive, NULL) == 0);
  REQUIRE(coda__inbox_init(&inbox, &loop) == 0);
  REQUIRE(coda__engine_start(engine, &control) == 0);
  tl = coda__engine_add_loop(engine, &loop, &inbox);
  REQUIRE(tl != NULL);
  coda__engine_ready(engine);
  setup_ok = 1;
}

/* Stops as the server would: the loop's state, its inbox, then the engine;
 * every handle coda opened must close. A list whose LOOP task is still in
 * the inbox when it closes is cancelled there, on the loop's thread, and
 * its THREAD task must still be accounted for: it was put in the closed
 * loop's batch, which nothing flushes any more, and restarted that loop's
 * idle handle while it closed, so the loop never ended. */
TEST(stopping_leaves_no_handle_open) {
  coda_tasks *list = coda_tasks_new(app);
  REQUIRE(list != NULL);
  REQUIRE(coda_tasks_add(list, loop_def, "") == 0);
  REQUIRE(coda_tasks_add(list, thread_def, "s", "hello") == 0);
  list->loop = tl;
  long dropped_before = coda_task_stat(app, CODA_EXEC_THREAD, CODA_STAT_DROPPED);
  int ran_before = atomic_load(&thread_ran);
  coda__run_start(list, 1); /* the LOOP task waits in the inbox */
  coda__engine_drain(engine);
  coda__engine_loop_close(tl);
  coda__inbox_close(&inbox);
  coda__engine_stop(engine);
  uv_close((uv_handle_t *)&keep_alive, NULL);
  spin_until(closed_all, 2000);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_EQ_INT(uv_loop_close(&control), 0);
  coda__inbox_destroy(&inbox);
  CHECK_EQ_INT(coda_task_stat(app, CODA_EXEC_LOOP, CODA_STAT_DROPPED), 1);
  /* The THREAD task ran (the pool was still up) or was dropped by its stop. */
  CHECK_EQ_INT(atomic_load(&thread_ran) - ran_before +
                   coda_task_stat(app, CODA_EXEC_THREAD, CODA_STAT_DROPPED) -
                   dropped_before,
               1);
  CHECK_EQ_INT(coda_task_stat(app, CODA_EXEC_THREAD, CODA_STAT_QUEUED), 0);
  CHECK_EQ_INT(atomic_load(&engine->outstanding), 0);
}

int main(void) {
  setup();
  if (!setup_ok)
    return 1;
  static const test__case cases[] = {
      TEST_CASE(tasks_run_on_bare_loops_with_no_server),
      TEST_CASE(a_task_returning_minus_one_is_not_reported_as_a_coda_error),
      TEST_CASE(a_pending_loop_task_past_its_timeout_is_reported),
      TEST_CASE(a_durable_task_is_stored_claimed_and_run_without_a_server),
      TEST_CASE(flags_of_the_wrong_family_are_refused),
      TEST_CASE(stopping_leaves_no_handle_open),
  };
  int rc = test__run("engine", cases, sizeof cases / sizeof cases[0]);
  coda_app_free(app);
  return rc;
}
