/*
 * lease_test.c - leases, fencing, expiry and named queues (issue 11), on
 * the memory, SQLite and Redis stores, with a real app running on its
 * thread. main() starts a redis-server of its own (tests/redis_server.h)
 * on an ephemeral port and removes it at the end; each case gets a fresh
 * key prefix on it.
 *
 * Checks:
 *  - the store fences by token: an outcome, a progress or a renewal that
 *    carries a token other than the claim's current one is refused (and
 *    reported by refused()), and expire() hands out a fresh token;
 *  - a THREAD task and a CPU-bound PROCESS task that run three times
 *    longer than the lease keep it (the heartbeat renews it) and run once;
 *  - with the heartbeat stopped (a test hook), a running task's lease
 *    expires: the store thread takes the task over as a failed attempt, the
 *    task sees coda_task_lease_lost() and coda_task_cancelled(), its late
 *    outcome is refused and counted ("lease_lost" in the stats), and the
 *    retry's outcome is the one stored;
 *  - a CPU-bound PROCESS task hears of its lost lease in its worker;
 *  - a task of a queue this process does not serve is written unclaimed
 *    and not run here, and runs once the process serves the queue;
 *  - a paused queue is not claimed from (and a task added in it is not run
 *    at once), and runs once resumed.
 *
 * The lease is 1000 ms (CODA_OPT_TASK_LEASE's minimum): a renewal every
 * 333 ms, expiry looked for every 500 ms.
 *
 */
#include "harness.h"
#include "redis_server.h"
#include "store/store.h"
#include "tasks/durable.h"
#include "test.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LEASE_MS 1000
#define LONG_TASK_MS 3300 /* over three leases */

static char store_dir[] = "/tmp/coda-lease-XXXXXX";
static char journal_path[512];
static tc_redis redis;
static int redis_up;

enum { MEMORY, SQLITE, REDIS };

/* ---- tasks ------------------------------------------------------------------ */

static atomic_int long_runs, lost_runs, lost_seen, cancelled_seen, queued_runs,
    plain_runs;

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Runs LONG_TASK_MS, looking at its lease as it goes. */
static int long_thread_task(coda_task *t) {
  atomic_fetch_add(&long_runs, 1);
  uint64_t end = tc_now_ms() + LONG_TASK_MS;
  while (tc_now_ms() < end) {
    if (coda_task_lease_lost(t))
      atomic_fetch_add(&lost_seen, 1);
    sleep_ms(20);
  }
  return 0;
}

/* CPU-bound for LONG_TASK_MS in a worker process (no sleep, no system
 * call but the clock), then journals its run and whether it lost its
 * lease. */
static int long_process_task(coda_task *t) {
  volatile uint64_t sum = 0;
  uint64_t end = tc_now_ms() + LONG_TASK_MS;
  while (tc_now_ms() < end)
    for (int i = 0; i < 100000; i++)
      sum += (uint64_t)i * (uint64_t)i;
  FILE *f = fopen(journal_path, "a");
  if (f) {
    fprintf(f, "run %llu lost=%d\n", (unsigned long long)coda_task_id(t),
            coda_task_lease_lost(t));
    fclose(f);
  }
  return 0;
}

/* First attempt: waits (up to 10 s) until its lease is lost, then
 * "succeeds" late with a result that must not be stored. Later attempts
 * succeed at once with theirs. */
static int lease_loser_task(coda_task *t) {
  atomic_fetch_add(&lost_runs, 1);
  if (coda_task_attempt(t) > 1) {
    coda_task_set_result(t, "second", 6);
    return 0;
  }
  uint64_t end = tc_now_ms() + 10000;
  while (tc_now_ms() < end && !coda_task_lease_lost(t))
    sleep_ms(10);
  if (coda_task_lease_lost(t))
    atomic_fetch_add(&lost_seen, 1);
  if (coda_task_cancelled(t))
    atomic_fetch_add(&cancelled_seen, 1);
  coda_task_set_result(t, "late", 4);
  return 0;
}

static int queued_task(coda_task *t) {
  (void)t;
  atomic_fetch_add(&queued_runs, 1);
  return 0;
}

static int plain_task(coda_task *t) {
  (void)t;
  atomic_fetch_add(&plain_runs, 1);
  return 0;
}

typedef struct defs {
  coda_task_def *long_thread, *long_process, *loser, *cpu_job, *plain;
} defs;

static int register_defs(coda_app *app, defs *d, int with_process) {
  memset(d, 0, sizeof *d);
  d->long_thread = coda_app_task(app, "long_thread", long_thread_task, CODA_EXEC_THREAD);
  d->loser = coda_app_task(app, "lease_loser", lease_loser_task, CODA_EXEC_THREAD);
  d->cpu_job = coda_app_task(app, "cpu_job", queued_task, CODA_EXEC_THREAD);
  d->plain = coda_app_task(app, "plain", plain_task, CODA_EXEC_THREAD);
  if (with_process)
    d->long_process =
        coda_app_task(app, "long_process", long_process_task, CODA_EXEC_PROCESS);
  if (!d->long_thread || !d->loser || !d->cpu_job || !d->plain ||
      (with_process && !d->long_process))
    return -1;
  coda_task_def_retry(d->loser, 2, 100, 100);
  coda_task_def_retry(d->long_thread, 1, 0, 0); /* a lost lease would make it dead */
  if (with_process)
    coda_task_def_retry(d->long_process, 1, 0, 0);
  return coda_task_def_queue(d->cpu_job, "cpu");
}

/* ---- apps -------------------------------------------------------------------- */

static const char *store_uri(int kind, const char *name, char *buf, size_t cap) {
  if (kind == MEMORY)
    return "memory";
  if (kind == SQLITE) {
    snprintf(buf, cap, "sqlite:%s/%s.db", store_dir, name);
    return buf;
  }
  static int prefixes; /* a fresh prefix per use: nothing shared between cases */
  char suffix[128];
  snprintf(suffix, sizeof suffix, "/0?prefix=lease-%s-%d", name, ++prefixes);
  tc_redis_uri(&redis, buf, cap, suffix);
  return buf;
}

static coda_app *new_app(const char *uri, defs *d, int with_process, const char *queues) {
  coda_app *app = coda_app_new();
  if (!app)
    return NULL;
  int ok = coda_app_set(app, CODA_OPT_TASK_LEASE, LEASE_MS) == 0 &&
           coda_app_set(app, CODA_OPT_STORE_POLL, 20) == 0 &&
           coda_app_set(app, CODA_OPT_THREADS, 1) == 0 &&
           coda_app_set(app, CODA_OPT_PROCESS_WORKERS, 1) == 0 &&
           register_defs(app, d, with_process) == 0 &&
           coda_app_queues(app, queues) == 0 && coda_app_store(app, uri) == 0;
  if (!ok) {
    fprintf(stderr, "  new_app(%s): %s\n", uri, coda_app_store_error(app));
    coda_app_free(app);
    return NULL;
  }
  return app;
}

/* Starts the app on its thread, and waits for its store thread (which
 * starts with the task engine, after the listener answers). */
static int start_app(test_server *ts, coda_app *app) {
  int rc = ts_start(ts, app);
  if (rc)
    return rc;
  coda__durable *d = coda__engine_peek(app)->durable;
  uint64_t end = tc_now_ms() + 10000;
  while (!atomic_load(&d->running) && tc_now_ms() < end)
    sleep_ms(5);
  return atomic_load(&d->running) ? 0 : CODA_ETIMEDOUT;
}

static uint64_t enqueue(coda_app *app, coda_task_def *def) {
  coda_task_opts o = CODA_TASK_OPTS_INIT(.flags = 0);
  int rc = coda_app_enqueue(app, def, &o, "");
  if (rc) {
    fprintf(stderr, "  enqueue %s: %s\n", def->name, coda_strerror(rc));
    return 0;
  }
  return o.id;
}

/* The task's state once it is `want` (waiting up to ms), or -1 with what it
 * was last. */
static int wait_state(coda_app *app, uint64_t id, coda_task_state want, int ms,
                      coda_task_info **out) {
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  int last = -1;
  for (;;) {
    coda_task_info *info = NULL;
    if (coda_task_get(app, id, &info) == 0) {
      last = info->state;
      if (info->state == want) {
        if (out)
          *out = info;
        else
          coda_task_info_free(info);
        return 0;
      }
      coda_task_info_free(info);
    }
    if (tc_now_ms() >= end) {
      fprintf(stderr, "  task %llu: state %d, not %d after %d ms\n",
              (unsigned long long)id, last, (int)want, ms);
      return -1;
    }
    sleep_ms(10);
  }
}

static int wait_stat(coda_app *app, coda_executor ex, coda_task_stat_kind k, long want,
                     int ms) {
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  while (coda_task_stat(app, ex, k) < want && tc_now_ms() < end)
    sleep_ms(10);
  return coda_task_stat(app, ex, k) >= want ? 0 : -1;
}

static int stop_app(test_server *ts, coda_app *app) {
  int rc = ts_stop(ts);
  tc_app_free(app, 5000);
  return rc;
}

/* ---- 1. the store fences by token --------------------------------------- */

typedef struct claimed {
  uint64_t id, lease;
  int n;
} claimed;

static void on_claim(void *user, const coda__task_record *r) {
  claimed *c = user;
  c->id = r->id;
  c->lease = r->lease;
  c->n++;
}

static void store_fences(int kind) {
  char uri[600];
  coda__store *s = NULL;
  char err[256] = "";
  REQUIRE(coda__store_open(store_uri(kind, "fence", uri, sizeof uri), 0, &s, err,
                           sizeof err) == 0);
  const int64_t now = coda__unix_ms();
  coda__task_record r = {.id = 42,
                         .name = "plain",
                         .args = "",
                         .state = CODA_STATE_QUEUED,
                         .attempts = 1,
                         .max_attempts = 3,
                         .created_at = now,
                         .run_at = now,
                         .queue = "default"};
  REQUIRE(s->m->begin(s) == 0);
  REQUIRE(s->m->enqueue(s, &r, 1, now + 100) == 0); /* owned: token 1 */
  REQUIRE(s->m->commit(s) == 0);
  /* Token 2 never held the task: its progress and outcome are refused. */
  coda__lease wrong = {42, 2}, right = {42, 1};
  coda__task_record done = {.id = 42,
                            .state = CODA_STATE_SUCCEEDED,
                            .attempts = 1,
                            .finished_at = now,
                            .progress = 1,
                            .lease = 2};
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(s->m->progress_leased(s, &wrong, 0.5), 0);
  CHECK_EQ_INT(s->m->finish(s, &done), 0);
  REQUIRE(s->m->commit(s) == 0);
  coda__lease out[4];
  CHECK_EQ_INT(s->m->refused(s, out, 4), 2);
  CHECK(out[0].id == 42 && out[0].lease == 2 && out[1].id == 42 && out[1].lease == 2);
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 42, &info) == 0);
  /* An owned enqueue is a claim: running, as the claim left it. */
  CHECK(info->state == CODA_STATE_RUNNING && info->progress == 0);
  coda_task_info_free(info);
  /* The claim holds: renewed. The wrong token: lost. */
  unsigned char lost[2] = {9, 9};
  coda__lease both[2] = {right, wrong};
  CHECK_EQ_INT(s->m->renew(s, both, 2, now + 100, lost), 0);
  CHECK(lost[0] == 0 && lost[1] == 1);
  /* Its lease ends: expire() takes it over with token 2 (attempts kept);
   * token 1's outcome is refused from then on, token 2's is written. */
  claimed c = {0};
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(s->m->expire(s, now + 50, now + 1000, 10, on_claim, &c), 0); /* not yet */
  CHECK_EQ_INT(s->m->expire(s, now + 200, now + 1000, 10, on_claim, &c), 1);
  CHECK(c.id == 42 && c.lease == 2);
  done.lease = 1;
  CHECK_EQ_INT(s->m->finish(s, &done), 0);
  REQUIRE(s->m->commit(s) == 0);
  CHECK_EQ_INT(s->m->refused(s, out, 4), 1);
  CHECK(out[0].lease == 1);
  CHECK_EQ_INT(s->m->renew(s, &right, 1, now + 2000, lost), 0);
  CHECK(lost[0] == 1);
  done.lease = 2;
  done.state = CODA_STATE_FAILED;
  done.run_at = now + 10;
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(s->m->finish(s, &done), 0);
  REQUIRE(s->m->commit(s) == 0);
  CHECK_EQ_INT(s->m->refused(s, out, 4), 0);
  REQUIRE(s->m->get(s, 42, &info) == 0);
  CHECK(info->state == CODA_STATE_FAILED);
  coda_task_info_free(info);
  /* The retry's claim: token 3. */
  c = (claimed){0};
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(s->m->claim(s, now + 20, now + 1000, 10, on_claim, &c), 1);
  REQUIRE(s->m->commit(s) == 0);
  CHECK(c.id == 42 && c.lease == 3);
  s->m->close(s);
}

/* Each check on each store: NAME_memory, NAME_sqlite, NAME_redis. */
#define ON_EVERY_STORE(name, fn)                                                         \
  TEST(name##_memory) { fn(MEMORY); }                                                    \
  TEST(name##_sqlite) { fn(SQLITE); }                                                    \
  TEST(name##_redis) {                                                                   \
    REQUIRE(redis_up);                                                                   \
    fn(REDIS);                                                                           \
  }
#define EVERY_STORE_CASES(name)                                                          \
  TEST_CASE(name##_memory), TEST_CASE(name##_sqlite), TEST_CASE(name##_redis)

ON_EVERY_STORE(the_store_fences_by_token, store_fences)

/* ---- 2. a long task keeps its lease ------------------------------------- */

static void long_thread_task_keeps_its_lease(int kind) {
  char uri[600];
  defs d;
  coda_app *app = new_app(store_uri(kind, "long-thread", uri, sizeof uri), &d, 0, NULL);
  REQUIRE(app);
  test_server ts;
  REQUIRE(start_app(&ts, app) == 0);
  atomic_store(&long_runs, 0);
  atomic_store(&lost_seen, 0);
  uint64_t id = enqueue(app, d.long_thread);
  CHECK(id != 0);
  coda_task_info *info = NULL;
  CHECK(id &&
        wait_state(app, id, CODA_STATE_SUCCEEDED, LONG_TASK_MS + 10000, &info) == 0);
  if (info)
    CHECK_EQ_INT(info->attempts, 1);
  coda_task_info_free(info);
  CHECK_EQ_INT(atomic_load(&long_runs), 1);
  CHECK_EQ_INT(atomic_load(&lost_seen), 0);
  CHECK_EQ_INT(coda_task_stat(app, CODA_EXEC_THREAD, CODA_STAT_LEASE_LOST), 0);
  CHECK_EQ_INT(coda_task_stat(app, CODA_EXEC_THREAD, CODA_STAT_DEAD), 0);
  stop_app(&ts, app);
}

ON_EVERY_STORE(a_thread_task_three_leases_long_keeps_its_lease,
               long_thread_task_keeps_its_lease)

static void long_process_task_keeps_its_lease(int kind) {
  char uri[600], journal[4096];
  defs d;
  unlink(journal_path);
  coda_app *app = new_app(store_uri(kind, "long-process", uri, sizeof uri), &d, 1, NULL);
  REQUIRE(app);
  test_server ts;
  REQUIRE(start_app(&ts, app) == 0);
  uint64_t id = enqueue(app, d.long_process);
  CHECK(id != 0);
  coda_task_info *info = NULL;
  CHECK(id &&
        wait_state(app, id, CODA_STATE_SUCCEEDED, LONG_TASK_MS + 15000, &info) == 0);
  if (info)
    CHECK_EQ_INT(info->attempts, 1);
  coda_task_info_free(info);
  tc_read_file(journal_path, journal, sizeof journal);
  CHECK_EQ_INT(tc_count(journal, "run "), 1);
  CHECK_EQ_INT(tc_count(journal, "lost=0"), 1);
  CHECK_EQ_INT(coda_task_stat(app, CODA_EXEC_PROCESS, CODA_STAT_LEASE_LOST), 0);
  stop_app(&ts, app);
}

ON_EVERY_STORE(a_cpu_bound_process_task_three_leases_long_keeps_its_lease,
               long_process_task_keeps_its_lease)

/* ---- 3. a lost lease ------------------------------------------------------ */

static void lost_lease(int kind) {
  char uri[600];
  defs d;
  coda_app *app = new_app(store_uri(kind, "lost", uri, sizeof uri), &d, 0, NULL);
  REQUIRE(app);
  test_server ts;
  REQUIRE(start_app(&ts, app) == 0);
  atomic_store(&lost_runs, 0);
  atomic_store(&lost_seen, 0);
  atomic_store(&cancelled_seen, 0);
  /* No renewal: the claim of the first attempt ends after LEASE_MS, and
   * the store thread takes the task over as a failed attempt. */
  coda__durable_test_pause_heartbeat(app, 1);
  uint64_t id = enqueue(app, d.loser);
  CHECK(id != 0);
  coda_task_info *info = NULL;
  CHECK(id && wait_state(app, id, CODA_STATE_SUCCEEDED, 15000, &info) == 0);
  /* The late outcome of attempt 1 was refused, whenever it came. */
  CHECK(wait_stat(app, CODA_EXEC_THREAD, CODA_STAT_LEASE_LOST, 1, 10000) == 0);
  coda__durable_test_pause_heartbeat(app, 0);
  CHECK_EQ_INT(atomic_load(&lost_seen), 1);
  CHECK_EQ_INT(atomic_load(&cancelled_seen), 1);
  CHECK_EQ_INT(atomic_load(&lost_runs), 2);
  CHECK(coda_task_stat(app, CODA_EXEC_THREAD, CODA_STAT_RETRIED) >= 1);
  CHECK_EQ_INT(coda_task_stat(app, CODA_EXEC_THREAD, CODA_STAT_LEASE_LOST), 1);
  if (info) {
    CHECK_EQ_INT(info->attempts, 2);
    CHECK(info->result_len == 6 && memcmp(info->result, "second", 6) == 0);
  }
  coda_task_info_free(info);
  /* Still the retry's result once everything has been written. */
  CHECK_EQ_INT(coda_app_store_sync(app), 0);
  REQUIRE(coda_task_get(app, id, &info) == 0);
  CHECK(info->state == CODA_STATE_SUCCEEDED && info->result_len == 6);
  coda_task_info_free(info);
  char stats[8192];
  coda_stats_json(app, stats, sizeof stats);
  CHECK(strstr(stats, "\"lease_lost\":1") != NULL);
  stop_app(&ts, app);
}

ON_EVERY_STORE(a_lost_lease_is_seen_and_its_late_outcome_refused, lost_lease)

/* A PROCESS task's worker hears of its lost lease (a signal from the
 * server): the CPU-bound task journals lost=1; its outcome is refused. */
static void process_task_sees_its_lost_lease(int kind) {
  char uri[600], journal[4096];
  defs d;
  unlink(journal_path);
  coda_app *app = new_app(store_uri(kind, "process-lost", uri, sizeof uri), &d, 1, NULL);
  REQUIRE(app);
  test_server ts;
  REQUIRE(start_app(&ts, app) == 0);
  coda__durable_test_pause_heartbeat(app, 1);
  uint64_t id = enqueue(app, d.long_process);
  CHECK(id != 0);
  coda_task_info *info = NULL;
  /* One attempt in all: the expired one is dead. */
  CHECK(id && wait_state(app, id, CODA_STATE_DEAD, 15000, &info) == 0);
  if (info)
    CHECK(info->error && strstr(info->error, "lease expired"));
  coda_task_info_free(info);
  CHECK(wait_stat(app, CODA_EXEC_PROCESS, CODA_STAT_LEASE_LOST, 1,
                  LONG_TASK_MS + 10000) == 0);
  tc_read_file(journal_path, journal, sizeof journal);
  CHECK_EQ_INT(tc_count(journal, "lost=1"), 1);
  REQUIRE(coda_task_get(app, id, &info) == 0);
  CHECK(info->state == CODA_STATE_DEAD); /* the late success changed nothing */
  coda_task_info_free(info);
  coda__durable_test_pause_heartbeat(app, 0);
  stop_app(&ts, app);
}

ON_EVERY_STORE(a_process_task_sees_its_lost_lease, process_task_sees_its_lost_lease)

/* ---- 4. queues ------------------------------------------------------------- */

/* After a task of the default queue added later has run, and a few polls
 * more, the cpu task still waits: this process does not serve "cpu". */
static void unserved_queue_waits(int kind) {
  char uri[600];
  defs d;
  const char *u = store_uri(kind, "queues", uri, sizeof uri);
  coda_app *app = new_app(u, &d, 0, "default");
  REQUIRE(app);
  test_server ts;
  REQUIRE(start_app(&ts, app) == 0);
  atomic_store(&queued_runs, 0);
  uint64_t cpu = enqueue(app, d.cpu_job);
  uint64_t plain = enqueue(app, d.plain);
  CHECK(cpu && plain);
  CHECK(wait_state(app, plain, CODA_STATE_SUCCEEDED, 5000, NULL) == 0);
  uint64_t later = tc_now_ms() + 300; /* fifteen polls */
  while (tc_now_ms() < later)
    sleep_ms(20);
  coda_task_info *info = NULL;
  REQUIRE(coda_task_get(app, cpu, &info) == 0);
  CHECK(info->state == CODA_STATE_QUEUED && info->attempts == 0);
  coda_task_info_free(info);
  CHECK_EQ_INT(atomic_load(&queued_runs), 0);
  /* The same app, now serving cpu (the same store: the memory one lives
   * with the app, the file with its path). */
  CHECK_EQ_INT(ts_stop(&ts), 0);
  REQUIRE(coda_app_queues(app, "cpu,default") == 0);
  REQUIRE(start_app(&ts, app) == 0);
  CHECK(wait_state(app, cpu, CODA_STATE_SUCCEEDED, 5000, NULL) == 0);
  CHECK_EQ_INT(atomic_load(&queued_runs), 1);
  stop_app(&ts, app);
}

ON_EVERY_STORE(a_queue_not_served_waits_for_a_process_that_serves_it,
               unserved_queue_waits)

static void pause_and_resume(int kind) {
  char uri[600];
  defs d;
  coda_app *app = new_app(store_uri(kind, "pause", uri, sizeof uri), &d, 0, NULL);
  REQUIRE(app);
  test_server ts;
  REQUIRE(start_app(&ts, app) == 0);
  atomic_store(&queued_runs, 0);
  CHECK_EQ_INT(coda_app_queue_pause(app, "cpu", 1), 0);
  uint64_t cpu = enqueue(app, d.cpu_job);
  uint64_t plain = enqueue(app, d.plain);
  CHECK(cpu && plain);
  CHECK(wait_state(app, plain, CODA_STATE_SUCCEEDED, 5000, NULL) == 0);
  uint64_t later = tc_now_ms() + 300;
  while (tc_now_ms() < later)
    sleep_ms(20);
  coda_task_info *info = NULL;
  REQUIRE(coda_task_get(app, cpu, &info) == 0);
  CHECK(info->state == CODA_STATE_QUEUED);
  coda_task_info_free(info);
  CHECK_EQ_INT(atomic_load(&queued_runs), 0);
  CHECK_EQ_INT(coda_app_queue_pause(app, "cpu", 0), 0);
  CHECK(wait_state(app, cpu, CODA_STATE_SUCCEEDED, 5000, NULL) == 0);
  CHECK_EQ_INT(atomic_load(&queued_runs), 1);
  CHECK_EQ_INT(coda_app_queue_pause(app, "no such,queue", 1), CODA_EINVAL);
  stop_app(&ts, app);
}

ON_EVERY_STORE(a_paused_queue_is_not_claimed_until_resumed, pause_and_resume)

int main(void) {
  /* PROCESS workers re-run this program: the same tasks, then they stop in
   * coda_app_worker(). The journal path is the parent's. */
  tc_journal_path(journal_path, sizeof journal_path, "/tmp/coda-lease-journal");
  coda_app *registry = coda_app_new();
  defs d;
  register_defs(registry, &d, 1);
  coda_app_worker(registry);
  coda_app_free(registry);
  if (!mkdtemp(store_dir)) {
    perror("mkdtemp");
    return 1;
  }
  /* After coda_app_worker(): a worker process never starts a server. */
  redis_up = tc_redis_start(&redis, NULL) == 0;
  static const test__case cases[] = {
      EVERY_STORE_CASES(the_store_fences_by_token),
      EVERY_STORE_CASES(a_thread_task_three_leases_long_keeps_its_lease),
      EVERY_STORE_CASES(a_cpu_bound_process_task_three_leases_long_keeps_its_lease),
      EVERY_STORE_CASES(a_lost_lease_is_seen_and_its_late_outcome_refused),
      EVERY_STORE_CASES(a_process_task_sees_its_lost_lease),
      EVERY_STORE_CASES(a_queue_not_served_waits_for_a_process_that_serves_it),
      EVERY_STORE_CASES(a_paused_queue_is_not_claimed_until_resumed),
  };
  int rc = test__run("lease", cases, sizeof cases / sizeof cases[0]);
  unlink(journal_path);
  tc_remove_tree(store_dir);
  tc_redis_remove(&redis);
  return rc;
}
