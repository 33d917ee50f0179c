/*
 * thread_pool_test.c - the THREAD executor's wake-up policy
 * (src/tasks/thread_pool.c), on a pool of its own with no server: tasks are
 * built with coda__task_new and handed to coda__thread_pool_submit.
 *
 * Checks: a steady stream of small tasks wakes the pool a few times per
 * scout period, not once per task; a task queued while every awake worker
 * is blocked still starts at once; a burst of blocking tasks runs side by
 * side.
 */
#include "app/app.h"
#include "tasks/task.h"
#include "test.h"

#include <stdatomic.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>

static coda_app *app;
static coda__thread_pool *pool;

static atomic_long ran;      /* tasks of `count_task` that ran */
static atomic_int started;   /* tasks of `block_task` that started */
static atomic_int release;   /* block_task returns once set */
static atomic_long finished; /* tasks of `block_task` that returned */
static atomic_ullong first_start_ns, last_start_ns;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int count_task(coda_task *t) {
  (void)t;
  atomic_fetch_add(&ran, 1);
  return 0;
}

/* Blocks (up to 5 s) until released, as a task stuck in blocking I/O. */
static int block_task(coda_task *t) {
  (void)t;
  uint64_t now = now_ns(), zero = 0;
  atomic_compare_exchange_strong(&first_start_ns, &zero, now);
  atomic_store(&last_start_ns, now);
  atomic_fetch_add(&started, 1);
  for (int i = 0; i < 5000 && !atomic_load(&release); i++) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  atomic_fetch_add(&finished, 1);
  return 0;
}

static coda_task *new_task(coda_task_def *def, ...) {
  va_list ap;
  va_start(ap, def);
  coda_task *t = NULL;
  int rc = coda__task_new(coda__engine_peek(app), def, 0, "", ap, &t);
  va_end(ap);
  return rc == 0 ? t : NULL;
}

/* Voluntary context switches of every thread but the calling one. */
static long others_voluntary_switches(void) {
  struct rusage all, me;
  getrusage(RUSAGE_SELF, &all);
  getrusage(RUSAGE_THREAD, &me);
  return all.ru_nvcsw - me.ru_nvcsw;
}

static int wait_for(atomic_long *counter, long want, int ms) {
  for (int i = 0; i < ms && atomic_load(counter) < want; i++) {
    struct timespec one = {0, 1000000};
    nanosleep(&one, NULL);
  }
  return atomic_load(counter) >= want;
}

/* 1000 tasks, one every 100 us, each finished long before the next comes.
 * A pool that wakes a worker per submitted task (as it once did) makes
 * about one voluntary context switch per task in its threads; the scout
 * makes two or so per 2 ms period (under 250 here, TSan included). */
TEST(a_steady_stream_of_small_tasks_wakes_the_pool_rarely) {
  coda_task_def *def = coda__engine_find(coda__engine_peek(app), "count");
  REQUIRE(def);
  atomic_store(&ran, 0);
  long before = others_voluntary_switches();
  for (int i = 0; i < 1000; i++) {
    coda_task *t = new_task(def);
    REQUIRE(t);
    REQUIRE(coda__thread_pool_submit(pool, t) == 0);
    struct timespec gap = {0, 100000};
    nanosleep(&gap, NULL);
  }
  CHECK(wait_for(&ran, 1000, 5000));
  long switches = others_voluntary_switches() - before;
  if (switches >= 600)
    fprintf(stderr, "  %ld voluntary context switches for 1000 tasks\n", switches);
  CHECK(switches < 600);
}

/* One worker is stuck in a task; a task submitted then starts at once, on
 * another worker, without waiting for the first. */
TEST(a_task_behind_a_blocked_worker_starts_at_once) {
  coda_task_def *block = coda__engine_find(coda__engine_peek(app), "block");
  coda_task_def *count = coda__engine_find(coda__engine_peek(app), "count");
  REQUIRE(block && count);
  atomic_store(&release, 0);
  atomic_store(&started, 0);
  atomic_store(&finished, 0);
  atomic_store(&ran, 0);
  coda_task *t = new_task(block);
  REQUIRE(t && coda__thread_pool_submit(pool, t) == 0);
  for (int i = 0; i < 2000 && atomic_load(&started) == 0; i++) {
    struct timespec one = {0, 1000000};
    nanosleep(&one, NULL);
  }
  REQUIRE(atomic_load(&started) == 1);
  uint64_t t0 = now_ns();
  t = new_task(count);
  REQUIRE(t && coda__thread_pool_submit(pool, t) == 0);
  CHECK(wait_for(&ran, 1, 2000));
  uint64_t took_ms = (now_ns() - t0) / 1000000u;
  CHECK(took_ms < 500); /* the blocked task holds on for 5 s */
  atomic_store(&release, 1);
  CHECK(wait_for(&finished, 1, 2000));
}

/* Four tasks that each block until released, submitted in one batch as a
 * loop does, all start within a few scout periods, not one after the
 * other. */
TEST(a_burst_of_blocking_tasks_runs_side_by_side) {
  coda_task_def *block = coda__engine_find(coda__engine_peek(app), "block");
  REQUIRE(block);
  atomic_store(&release, 0);
  atomic_store(&started, 0);
  atomic_store(&finished, 0);
  atomic_store(&first_start_ns, 0);
  coda__queue batch;
  coda__queue_init(&batch);
  for (int i = 0; i < 4; i++) {
    coda_task *t = new_task(block);
    REQUIRE(t);
    coda__queue_insert_tail(&batch, &t->link);
  }
  REQUIRE(coda__thread_pool_submit_batch(pool, &batch) == 0);
  for (int i = 0; i < 2000 && atomic_load(&started) < 4; i++) {
    struct timespec one = {0, 1000000};
    nanosleep(&one, NULL);
  }
  CHECK_EQ_INT(atomic_load(&started), 4);
  uint64_t spread_ms =
      (atomic_load(&last_start_ns) - atomic_load(&first_start_ns)) / 1000000u;
  if (spread_ms >= 500)
    fprintf(stderr, "  the 4 tasks started over %llu ms\n",
            (unsigned long long)spread_ms);
  CHECK(spread_ms < 500);
  atomic_store(&release, 1);
  CHECK(wait_for(&finished, 4, 2000));
}

int main(void) {
  app = coda_app_new();
  if (!app || !coda_app_task(app, "count", count_task, CODA_EXEC_THREAD) ||
      !coda_app_task(app, "block", block_task, CODA_EXEC_THREAD))
    return 1;
  pool = coda__thread_pool_new(coda__engine_peek(app), 4);
  if (!pool)
    return 1;
  static const test__case cases[] = {
      TEST_CASE(a_steady_stream_of_small_tasks_wakes_the_pool_rarely),
      TEST_CASE(a_task_behind_a_blocked_worker_starts_at_once),
      TEST_CASE(a_burst_of_blocking_tasks_runs_side_by_side),
  };
  int rc = test__run("thread_pool", cases, sizeof cases / sizeof cases[0]);
  coda__thread_pool_stop(pool);
  coda_app_free(app);
  return rc;
}
