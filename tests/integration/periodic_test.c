/*
 * periodic_test.c - periodic tasks (src/tasks/schedule.c) on a real app:
 * coda_app_every() with a short interval on each store, a restart on the
 * same SQLite file after missed due times, cron's catch-up at start, and
 * the calls' refusals.
 *
 * The stores: "memory", a SQLite file in a temp directory, and Redis on
 * a redis-server main() starts (tests/redis_server.h) on an ephemeral
 * port, with a fresh key prefix for each use so that each starts empty.
 * Only a shared store can hold several running apps at once (SQLite's
 * file lock admits one, the memory store is each app's own), so the fleet
 * case runs on Redis: three apps scheduling the same task, for ten due
 * times at least, each due time run exactly once (issue 11).
 *
 * Checks: every due time is a multiple of the interval, runs at or after
 * it, and runs once (by the tasks' own record, and by coda_task_find() by
 * name: one succeeded task per due time, keyed "periodic:tick:DUE"); after
 * a restart that missed several due times, only the latest runs (one
 * catch-up, no burst) and none that ran before runs again.
 */
#include "harness.h"
#include "redis_server.h"
#include "tasks/durable.h"
#include "test.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define INTERVAL 200
#define MAX_RUNS 4096

static int64_t unix_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static char store_dir[] = "/tmp/coda-periodic-test-XXXXXX";
static tc_redis redis;
static int redis_up;

#define NAPPS 3

/* ---- what the tick tasks record --------------------------------------------- */

typedef struct run {
  int64_t due, ran_at;
  int app; /* which of the test's apps ran it */
} run;

static uv_mutex_t runs_mu; /* tasks record from the THREAD executor's threads */
static run runs[MAX_RUNS];
static int nruns;
static coda_app *apps[NAPPS];

static int app_index(const coda_app *app) {
  for (int i = 0; i < NAPPS; i++)
    if (apps[i] == app)
      return i;
  return -1;
}

static int tick(coda_task *t) {
  int64_t now = unix_ms();
  uv_mutex_lock(&runs_mu);
  if (nruns < MAX_RUNS)
    runs[nruns++] = (run){coda_task_int(t, 0), now, app_index(coda_task_app(t))};
  uv_mutex_unlock(&runs_mu);
  return 0;
}

static void forget_runs(void) {
  uv_mutex_lock(&runs_mu);
  nruns = 0;
  uv_mutex_unlock(&runs_mu);
}

/* Distinct due times recorded after `after` (by app `app`, -1: any). */
static int dues_after(int64_t after, int app) {
  int n = 0;
  uv_mutex_lock(&runs_mu);
  for (int i = 0; i < nruns; i++) {
    int first = 1;
    for (int j = 0; j < i; j++)
      first &= runs[j].due != runs[i].due;
    n += first && runs[i].due > after && (app < 0 || runs[i].app == app);
  }
  uv_mutex_unlock(&runs_mu);
  return n;
}

/* Waits up to ms for `want` distinct due times after `after`. */
static int wait_dues(int want, int64_t after, int app, int ms) {
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  while (dues_after(after, app) < want && tc_now_ms() < end)
    tc_sleep_ms(10);
  return dues_after(after, app) >= want;
}

/* Every due time aligned to `interval`, run at or after it, and run once. */
static int each_once_and_aligned(int64_t interval) {
  int bad = 0;
  uv_mutex_lock(&runs_mu);
  for (int i = 0; i < nruns; i++) {
    if (runs[i].due % interval != 0 && bad++ < 5)
      fprintf(stderr, "  due time %lld is not a multiple of %lld\n",
              (long long)runs[i].due, (long long)interval);
    if (runs[i].ran_at < runs[i].due && bad++ < 5)
      fprintf(stderr, "  due time %lld ran early, at %lld\n", (long long)runs[i].due,
              (long long)runs[i].ran_at);
    for (int j = 0; j < i; j++)
      if (runs[j].due == runs[i].due && bad++ < 5)
        fprintf(stderr, "  due time %lld ran twice (apps %d and %d)\n",
                (long long)runs[i].due, runs[j].app, runs[i].app);
  }
  uv_mutex_unlock(&runs_mu);
  return bad == 0;
}

/* ---- the stores and the apps ---------------------------------------------------- */

static const char *store_uri(int which, char *buf, size_t cap) {
  static int fresh;
  fresh++;
  if (which == 0)
    return "memory";
  if (which == 1) {
    snprintf(buf, cap, "sqlite:%s/periodic-%d.db", store_dir, fresh);
    return buf;
  }
  char suffix[64];
  snprintf(suffix, sizeof suffix, "/0?prefix=periodic%d", fresh);
  tc_redis_uri(&redis, buf, cap, suffix);
  return buf;
}

enum { MEMORY, SQLITE, REDIS, NSTORES };

static coda_app *new_app(const char *uri, coda_task_def **def) {
  coda_app *app = coda_app_new();
  if (!app)
    return NULL;
  coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_WARN);
  coda_app_set(app, CODA_OPT_STORE_POLL, 20);
  *def = coda_app_task(app, "tick", tick, CODA_EXEC_THREAD);
  if (!*def || coda_app_store(app, uri) != 0) {
    fprintf(stderr, "  cannot open %s: %s\n", uri, coda_app_store_error(app));
    coda_app_free(app);
    return NULL;
  }
  return app;
}

/* What coda_task_find() lists for the name "tick": "periodic:tick:DUE"
 * keys, each succeeded, checked against the recorded runs. */
typedef struct listed {
  int n, bad;
  int left;            /* written, not run: left by a stop, for the next start */
  int64_t left_due[8]; /* the first of those */
} listed;

static int check_listed(const coda_task_info *info, void *user) {
  listed *l = user;
  l->n++;
  long long due = 0;
  if (!info->key || sscanf(info->key, "periodic:tick:%lld", &due) != 1 ||
      strcmp(info->name, "tick") != 0) {
    if (l->bad++ < 3)
      fprintf(stderr, "  listed: %s, key %s\n", info->name,
              info->key ? info->key : "none");
    return 0;
  }
  int seen = 0;
  uv_mutex_lock(&runs_mu);
  for (int i = 0; i < nruns; i++)
    seen += runs[i].due == due;
  uv_mutex_unlock(&runs_mu);
  /* Left by a stop: queued, or still claimed by the app that added it
   * (an owned add is a claim: running in the store until recover() at the
   * next start, or expire() on a shared store, gives it back). */
  if (seen == 0 &&
      (info->state == CODA_STATE_QUEUED || info->state == CODA_STATE_RUNNING)) {
    if (l->left < 8)
      l->left_due[l->left] = due;
    l->left++;
    return 0;
  }
  if ((seen != 1 || info->state != CODA_STATE_SUCCEEDED) && l->bad++ < 3)
    fprintf(stderr, "  listed due time %lld: %s, ran %d times\n", due,
            coda_task_state_name(info->state), seen);
  return 0;
}

/* ---- the cases ----------------------------------------------------------------------
 */

static void every_interval_on(int which) {
  char buf[600];
  const char *uri = store_uri(which, buf, sizeof buf);
  forget_runs();
  coda_task_def *def;
  coda_app *app = apps[0] = new_app(uri, &def);
  REQUIRE(app);
  REQUIRE(coda_app_every(app, def, INTERVAL) == 0);
  test_server ts;
  int64_t began = unix_ms();
  REQUIRE(ts_start(&ts, app) == 0);
  CHECK(wait_dues(8, 0, -1, 20000));
  CHECK_EQ_INT(ts_stop(&ts), 0);
  CHECK(each_once_and_aligned(INTERVAL));
  /* The first is the catch-up: the latest due time before the start. */
  uv_mutex_lock(&runs_mu);
  int64_t first = nruns ? runs[0].due : 0;
  for (int i = 1; i < nruns; i++)
    first = runs[i].due < first ? runs[i].due : first;
  int total = nruns;
  uv_mutex_unlock(&runs_mu);
  CHECK(first > began - INTERVAL);
  /* The listing by name has each of them once, succeeded (a run's outcome
   * is written by the drain). */
  listed l = {0};
  CHECK_EQ_INT(coda_task_find(app, CODA_TASK_FILTER(.name = "tick"), check_listed, &l),
               total + l.left);
  CHECK_EQ_INT(l.n - l.left, total);
  CHECK_EQ_INT(l.bad, 0);
  listed none = {0};
  CHECK_EQ_INT(coda_task_find(app, CODA_TASK_FILTER(.name = "tock"), check_listed, &none),
               0);
  CHECK_EQ_INT(tc_app_free(app, 5000), 0);
  apps[0] = NULL; /* a new app may get its address: runs would be its */
  if (test__failures_in_case)
    fprintf(stderr, "  ^ on %s\n", uri);
}

TEST(every_due_time_runs_once_and_aligned) {
  REQUIRE(redis_up);
  for (int which = 0; which < NSTORES; which++)
    every_interval_on(which);
}

/* The app is answering requests: its services (the schedules) started. */
static int wait_serving(int port) {
  char buf[1024];
  return tc_get(port, "/", buf, sizeof buf, 5000) == 404;
}

/* The same store (file, or Redis prefix) for both runs. */
static void restart_after_missed_due_times(int which) {
  enum { RESTART_INTERVAL = 400, MISSED = 4 };
  char buf[600];
  const char *uri = store_uri(which, buf, sizeof buf);
  forget_runs();
  coda_task_def *def;
  coda_app *app = apps[0] = new_app(uri, &def);
  REQUIRE(app);
  REQUIRE(coda_app_every(app, def, RESTART_INTERVAL) == 0);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  CHECK(wait_dues(3, 0, 0, 20000));
  CHECK_EQ_INT(ts_stop(&ts), 0);
  /* A due time added just before the stop and not run is not missed: it
   * was accepted, and runs at the next start as any durable task. */
  listed l1 = {0};
  CHECK(coda_task_find(app, CODA_TASK_FILTER(.name = "tick"), check_listed, &l1) >= 0);
  CHECK_EQ_INT(l1.bad, 0);
  CHECK(l1.left <= 1);
  CHECK_EQ_INT(tc_app_free(app, 5000), 0);
  apps[0] = NULL; /* a new app may get its address: runs would be its */
  uv_mutex_lock(&runs_mu);
  int64_t last1 = 0;
  for (int i = 0; i < nruns; i++)
    last1 = runs[i].due > last1 ? runs[i].due : last1;
  uv_mutex_unlock(&runs_mu);
  /* Down while MISSED due times pass; restart just after one, so that the
   * catch-up is known: the one just passed (unless the start is slow). */
  int64_t restart_at = last1 + (MISSED + 1) * RESTART_INTERVAL + 20;
  while (unix_ms() < restart_at)
    tc_sleep_ms(5);
  coda_task_def *def2;
  coda_app *app2 = apps[1] = new_app(uri, &def2);
  REQUIRE(app2);
  REQUIRE(coda_app_every(app2, def2, RESTART_INTERVAL) == 0);
  int64_t before = unix_ms();
  int64_t latest = before / RESTART_INTERVAL * RESTART_INTERVAL;
  CHECK(latest - last1 > (MISSED - 1) * RESTART_INTERVAL);
  REQUIRE(ts_start(&ts, app2) == 0);
  CHECK(wait_serving(ts.port));
  int64_t serving = unix_ms();
  CHECK(wait_dues(3, last1, 1, 20000));
  CHECK_EQ_INT(ts_stop(&ts), 0);
  CHECK(each_once_and_aligned(RESTART_INTERVAL));
  /* The first due time app 2 ran: none of the missed ones before the
   * latest (no burst), and, when it started within the interval, that
   * latest one itself (the catch-up). */
  uv_mutex_lock(&runs_mu);
  int64_t first2 = INT64_MAX;
  int redone = 0;
  for (int i = 0; i < nruns; i++) {
    if (runs[i].app == 1 && runs[i].due < first2 &&
        !(l1.left && runs[i].due == l1.left_due[0]))
      first2 = runs[i].due;
    redone += runs[i].app == 1 && runs[i].due <= last1;
  }
  uv_mutex_unlock(&runs_mu);
  CHECK_EQ_INT(redone, 0);
  CHECK(first2 >= latest);
  if (serving < latest + RESTART_INTERVAL)
    CHECK_EQ_INT(first2, latest);
  else
    fprintf(stderr, "  (app 2 took %lld ms to start: the catch-up is not checked)\n",
            (long long)(serving - before));
  CHECK_EQ_INT(tc_app_free(app2, 5000), 0);
  apps[1] = NULL;
  if (test__failures_in_case)
    fprintf(stderr, "  ^ on %s\n", uri);
}

TEST(a_restart_after_missed_due_times_runs_only_the_latest_sqlite) {
  restart_after_missed_due_times(SQLITE);
}

TEST(a_restart_after_missed_due_times_runs_only_the_latest_redis) {
  REQUIRE(redis_up);
  restart_after_missed_due_times(REDIS);
}

/* A cron schedule's catch-up at start is this minute's due time (if the
 * minute did not turn meanwhile): it runs at once. */
TEST(cron_catches_up_the_current_minute_at_start) {
  char buf[600];
  const char *uri = store_uri(1, buf, sizeof buf);
  forget_runs();
  coda_task_def *def;
  coda_app *app = apps[0] = new_app(uri, &def);
  REQUIRE(app);
  REQUIRE(coda_app_cron(app, def, "* * * * *") == 0);
  int64_t before = unix_ms();
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  CHECK(wait_dues(1, 0, 0, 20000));
  CHECK_EQ_INT(ts_stop(&ts), 0);
  CHECK(each_once_and_aligned(60000));
  uv_mutex_lock(&runs_mu);
  int64_t due = nruns ? runs[0].due : -1;
  uv_mutex_unlock(&runs_mu);
  CHECK(due >= before / 60000 * 60000 && due <= unix_ms());
  CHECK_EQ_INT(tc_app_free(app, 5000), 0);
  apps[0] = NULL; /* a new app may get its address: runs would be its */
}

TEST(calls_are_refused_when_they_cannot_hold) {
  coda_task_def *def, *other_def;
  coda_app *app = new_app("memory", &def);
  coda_app *other = new_app("memory", &other_def);
  REQUIRE(app && other);
  CHECK_EQ_INT(coda_app_every(app, def, 9), CODA_EINVAL);
  CHECK_EQ_INT(coda_app_every(app, NULL, 1000), CODA_EINVAL);
  CHECK_EQ_INT(coda_app_every(NULL, def, 1000), CODA_EINVAL);
  CHECK_EQ_INT(coda_app_every(app, other_def, 1000), CODA_EINVAL);
  CHECK_EQ_INT(coda_app_cron(app, def, "* * * *"), CODA_EINVAL);
  CHECK_EQ_INT(coda_app_cron(app, def, "0 0 30 2 *"), CODA_EINVAL);
  CHECK_EQ_INT(coda_app_cron(app, def, NULL), CODA_EINVAL);
  CHECK_EQ_INT(coda_app_every(app, def, 1000), 0);
  CHECK_EQ_INT(coda_app_every(app, def, 2000), CODA_EEXIST);
  CHECK_EQ_INT(coda_app_cron(app, def, "*/5 * * * *"), CODA_EEXIST);
  coda_task_def *second = coda_app_task(app, "second", tick, CODA_EXEC_THREAD);
  CHECK_EQ_INT(coda_app_cron(app, second, "@hourly"), 0);
  coda_task_def *third = coda_app_task(app, "third", tick, CODA_EXEC_THREAD);
  apps[0] = app;
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  CHECK(wait_serving(ts.port));
  CHECK_EQ_INT(coda_app_every(app, third, 1000), CODA_ESTATE);
  char stats[4096];
  coda_stats_json(app, stats, sizeof stats);
  CHECK(strstr(stats, "\"periodic\":{\"schedules\":2") != NULL);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  CHECK_EQ_INT(tc_app_free(app, 5000), 0);
  apps[0] = NULL; /* a new app may get its address: runs would be its */
  CHECK_EQ_INT(tc_app_free(other, 5000), 0);
  /* Bound is too late too: the server took its services when it was made,
   * so the schedule would never start. */
  coda_task_def *late;
  coda_app *bound = new_app("memory", &late);
  REQUIRE(bound);
  CHECK_EQ_INT(coda_app_listen(bound, "127.0.0.1:0"), 0);
  CHECK_EQ_INT(coda_app_bind(bound), 0);
  CHECK_EQ_INT(coda_app_every(bound, late, 1000), CODA_ESTATE);
  CHECK_EQ_INT(coda_app_cron(bound, late, "@hourly"), CODA_ESTATE);
  CHECK_EQ_INT(coda_app_free(bound), 0); /* bound, never run: freed with its sockets */
}

/* Whether every due time from the first to the last recorded ran: none
 * was lost between the apps. */
static int no_due_time_missing(int64_t interval) {
  uv_mutex_lock(&runs_mu);
  int64_t lo = INT64_MAX, hi = 0;
  for (int i = 0; i < nruns; i++) {
    lo = runs[i].due < lo ? runs[i].due : lo;
    hi = runs[i].due > hi ? runs[i].due : hi;
  }
  uv_mutex_unlock(&runs_mu);
  int want = hi >= lo ? (int)((hi - lo) / interval) + 1 : 0;
  int got = dues_after(lo - 1, -1);
  if (got != want)
    fprintf(stderr, "  %d due times ran from %lld to %lld, not %d\n", got, (long long)lo,
            (long long)hi, want);
  return got == want;
}

/* Three apps on one Redis, each scheduling the same task (a fleet of
 * three processes, but for the address space): each due time runs
 * exactly once, by one of them, and the listing by name agrees. */
TEST(three_apps_on_one_redis_run_each_of_ten_due_times_once) {
  REQUIRE(redis_up);
  char buf[600];
  const char *uri = store_uri(REDIS, buf, sizeof buf);
  forget_runs();
  test_server ts[NAPPS];
  for (int i = 0; i < NAPPS; i++) {
    coda_task_def *def;
    REQUIRE((apps[i] = new_app(uri, &def)) != NULL);
    REQUIRE(coda_app_every(apps[i], def, INTERVAL) == 0);
  }
  for (int i = 0; i < NAPPS; i++)
    REQUIRE(ts_start(&ts[i], apps[i]) == 0);
  /* Ten due times after every app is up (the first one's may be earlier). */
  int64_t all_up = unix_ms();
  CHECK(wait_dues(10, all_up, -1, 30000));
  for (int i = 0; i < NAPPS; i++)
    CHECK_EQ_INT(ts_stop(&ts[i]), 0);
  CHECK(each_once_and_aligned(INTERVAL));
  CHECK(no_due_time_missing(INTERVAL));
  uv_mutex_lock(&runs_mu);
  int total = nruns;
  uv_mutex_unlock(&runs_mu);
  CHECK(total >= 10);
  /* The store agrees: one task per due time, succeeded, besides those
   * added just before the stops and left queued for a next start. */
  listed l = {0};
  CHECK(coda_task_find(apps[0], CODA_TASK_FILTER(.name = "tick"), check_listed, &l) >= 0);
  CHECK_EQ_INT(l.bad, 0);
  CHECK_EQ_INT(l.n - l.left, total);
  long dups = 0;
  for (int i = 0; i < NAPPS; i++)
    dups += coda_task_stat(apps[i], CODA_EXEC_THREAD, CODA_STAT_DUPLICATE);
  CHECK(dups >= total); /* the other apps' adds of each due time were duplicates */
  for (int i = 0; i < NAPPS; i++) {
    CHECK_EQ_INT(tc_app_free(apps[i], 5000), 0);
    apps[i] = NULL;
  }
}

/* A due time whose add fails (the store refuses the write, three times:
 * the first write fails on the store thread, the tries after it may be
 * refused at once while adds fail fast) is tried again with the task
 * backoff until it is added, and runs once. Before, it was skipped: with
 * an interval of an hour, the catch-up due time at start never ran. The
 * fault is injected by wrapping the store's table of functions. */
static const coda__store_methods *fault_orig;
static coda__store_methods fault_methods;
static atomic_int tick_faults;

static int faulty_enqueue(coda__store *s, const coda__task_record *r, int owned,
                          int64_t lease_until) {
  if (strcmp(r->name, "tick") == 0 && atomic_load(&tick_faults) > 0) {
    atomic_fetch_sub(&tick_faults, 1);
    return CODA_ESTORE;
  }
  return fault_orig->enqueue(s, r, owned, lease_until);
}

TEST(a_due_time_whose_add_failed_is_tried_again_until_added) {
  forget_runs();
  coda_task_def *def;
  coda_app *app = apps[0] = new_app("memory", &def);
  REQUIRE(app);
  coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF); /* the faults are expected */
  coda_app_set(app, CODA_OPT_BACKOFF, 50);
  coda_app_set(app, CODA_OPT_BACKOFF_MAX, 200);
  REQUIRE(coda_app_every(app, def, 3600000) == 0); /* only the catch-up is due */
  coda__store *store = coda__engine_peek(app)->durable->store;
  fault_orig = store->m;
  fault_methods = *fault_orig;
  fault_methods.enqueue = faulty_enqueue;
  store->m = &fault_methods;
  atomic_store(&tick_faults, 3);
  int64_t latest = unix_ms() / 3600000 * 3600000;
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  CHECK(wait_dues(1, 0, 0, 10000));
  CHECK_EQ_INT(atomic_load(&tick_faults), 0);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  uv_mutex_lock(&runs_mu);
  int n = nruns;
  int64_t due = nruns ? runs[0].due : -1;
  uv_mutex_unlock(&runs_mu);
  CHECK_EQ_INT(n, 1);
  CHECK(due == latest || due == latest + 3600000); /* an hour may turn meanwhile */
  char stats[4096];
  coda_stats_json(app, stats, sizeof stats);
  CHECK(strstr(stats, "\"failed\":0}") == NULL); /* the failures were counted */
  CHECK_EQ_INT(tc_app_free(app, 5000), 0);
  apps[0] = NULL;
}

int main(void) {
  if (!mkdtemp(store_dir)) {
    perror("mkdtemp");
    return 1;
  }
  uv_mutex_init(&runs_mu);
  alarm(300);
  redis_up = tc_redis_start(&redis, NULL) == 0;
  static const test__case cases[] = {
      TEST_CASE(every_due_time_runs_once_and_aligned),
      TEST_CASE(a_restart_after_missed_due_times_runs_only_the_latest_sqlite),
      TEST_CASE(a_restart_after_missed_due_times_runs_only_the_latest_redis),
      TEST_CASE(cron_catches_up_the_current_minute_at_start),
      TEST_CASE(calls_are_refused_when_they_cannot_hold),
      TEST_CASE(three_apps_on_one_redis_run_each_of_ten_due_times_once),
      TEST_CASE(a_due_time_whose_add_failed_is_tried_again_until_added),
  };
  int rc = test__run("periodic", cases, sizeof cases / sizeof cases[0]);
  tc_remove_tree(store_dir);
  tc_redis_remove(&redis);
  return rc;
}
