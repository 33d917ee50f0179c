/*
 * store_test.c - the contract of store.h, checked the same way on every
 * store through its vtable: the memory store, and the SQLite store on a
 * file in a mkdtemp() directory that main() removes at the end.
 *
 * The Redis store runs on a redis-server that main() starts on an
 * ephemeral port in a temp dir (tests/redis_server.h); each check gets a
 * fresh key prefix on it, so checks never see each other's tasks.
 *
 * Each TEST hands one check function to on_each_store(), which opens a
 * fresh store per URI, runs the check, closes the store, and names the
 * store under any failure the check printed. Every store implements
 * version 2: a store that lacks a version-2 member fails the check that
 * needs it (the engine has one code path). Outcomes are written as the
 * engine writes them, under the token of the claim that holds the task
 * (an owned enqueue has token 1; a claim returns record.lease): the
 * fencing rule of store.h, the same on every store. A check only sees the vtable,
 * drives it as the engine does (every write in a begin .. commit batch),
 * and uses fixed times, never the clock. A SIGALRM ends the program if a
 * check hangs (a list callback that deadlocks on get(), say).
 */
#include "harness.h"
#include "redis_server.h"
#include "store/store.h"
#include "test.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define T0 INT64_C(1700000000000) /* "now", in unix ms */
#define LEASE_MS 60000
#define MAX_SEEN 16

static char store_dir[] = "/tmp/coda-store-test-XXXXXX";
static tc_redis redis;
static int redis_up;

#define NSTORES 3

/* ---- the stores ------------------------------------------------------------ */

typedef void (*store_check)(coda__store *s);

/* A fresh store: memory, SQLite on a new file, or Redis under a new key
 * prefix. */
static int open_store(int which, coda__store **s) {
  static int files, prefixes;
  char uri[256], err[512] = "";
  if (which == 0) {
    snprintf(uri, sizeof uri, "memory");
  } else if (which == 1) {
    snprintf(uri, sizeof uri, "sqlite:%s/store-%d.db", store_dir, ++files);
  } else {
    char suffix[64];
    snprintf(suffix, sizeof suffix, "/0?prefix=t%d", ++prefixes);
    tc_redis_uri(&redis, uri, sizeof uri, suffix);
  }
  int rc = coda__store_open(uri, 0, s, err, sizeof err);
  if (rc != 0)
    fprintf(stderr, "  cannot open %s: %s (%s)\n", uri, err, coda_strerror(rc));
  return rc;
}

static void on_each_store(store_check check) {
  for (int which = 0; which < NSTORES; which++) {
    coda__store *s;
    int before = test__failures_in_case;
    if (which == 2 && !redis_up) {
      fprintf(stderr, "  FAIL: no redis-server for the redis store\n");
      test__failures_in_case++;
      continue;
    }
    CHECK_EQ_INT(open_store(which, &s), 0);
    if (test__failures_in_case != before)
      continue;
    alarm(60);
    check(s);
    alarm(0);
    const char *name = s->m->name;
    s->m->close(s);
    if (test__failures_in_case != before)
      fprintf(stderr, "  ^ on the %s store\n", name);
  }
}

/* Version 2 members, or NULL: a store without one of them fails. */
#define V2_MEMBER(m, field) ((m)->version >= 2 ? (void *)(m)->field : NULL)

static int lacks_v2(coda__store *s) {
  const coda__store_methods *m = s->m;
  const char *missing = !V2_MEMBER(m, serve)             ? "serve"
                        : !V2_MEMBER(m, pause)           ? "pause"
                        : !V2_MEMBER(m, renew)           ? "renew"
                        : !V2_MEMBER(m, refused)         ? "refused"
                        : !V2_MEMBER(m, expire)          ? "expire"
                        : !V2_MEMBER(m, progress_leased) ? "progress_leased"
                        : !V2_MEMBER(m, find)            ? "find"
                        : !V2_MEMBER(m, paused)          ? "paused"
                                                         : NULL;
  if (missing) {
    fprintf(stderr, "  FAIL: the %s store has no %s()\n", m->name, missing);
    test__failures_in_case++;
  }
  return missing != NULL;
}

static void on_each_v2_store(store_check check) {
  for (int which = 0; which < NSTORES; which++) {
    coda__store *s;
    int before = test__failures_in_case;
    if (which == 2 && !redis_up) {
      fprintf(stderr, "  FAIL: no redis-server for the redis store\n");
      test__failures_in_case++;
      continue;
    }
    CHECK_EQ_INT(open_store(which, &s), 0);
    if (test__failures_in_case != before)
      continue;
    if (!lacks_v2(s)) {
      alarm(60);
      check(s);
      alarm(0);
    }
    const char *name = s->m->name;
    s->m->close(s);
    if (test__failures_in_case != before)
      fprintf(stderr, "  ^ on the %s store\n", name);
  }
}

/* ---- writing and reading, one batch per call as the engine does ------------ */

static const char args_bytes[] = {'t', 'o', '\0', 'x', '\0'}; /* an embedded NUL */

static coda__task_record task(uint64_t id, const char *key, int64_t run_at) {
  return (coda__task_record){.id = id,
                             .name = "send_mail",
                             .key = key,
                             .args = args_bytes,
                             .args_len = sizeof args_bytes,
                             .state = CODA_STATE_QUEUED,
                             .max_attempts = 5,
                             .created_at = T0 - 1000,
                             .run_at = run_at};
}

/* Whether the last commit reported id as a duplicate (a store that knows
 * duplicates only at commit: store.h, duplicates()). */
static int reported_duplicate(coda__store *s, uint64_t id) {
  if (s->m->version < 2 || !s->m->duplicates)
    return 0;
  uint64_t ids[MAX_SEEN];
  int n = s->m->duplicates(s, ids, MAX_SEEN);
  for (int i = 0; i < n; i++)
    if (ids[i] == id)
      return 1;
  return 0;
}

static int enqueue_record(coda__store *s, const coda__task_record *r, int owned) {
  int rc = s->m->begin(s);
  if (rc != 0)
    return rc;
  rc = s->m->enqueue(s, r, owned, owned ? T0 + LEASE_MS : 0);
  if (rc == 0) {
    rc = s->m->commit(s);
    return rc == 0 && reported_duplicate(s, r->id) ? CODA_EEXIST : rc;
  }
  s->m->rollback(s);
  return rc;
}

/* A task that is not claimed (owned 0) or is claimed by this process. */
static int add(coda__store *s, uint64_t id, const char *key, int64_t run_at, int owned) {
  coda__task_record r = task(id, key, run_at);
  return enqueue_record(s, &r, owned);
}

/* The outcome of attempt 1 under the claim token `lease`. */
static coda__task_record outcome(uint64_t id, uint64_t lease, coda_task_state state,
                                 int64_t finished_at) {
  return (coda__task_record){.id = id,
                             .state = state,
                             .attempts = 1,
                             .run_at = T0,
                             .started_at = finished_at - 5,
                             .finished_at = finished_at,
                             .lease = lease};
}

static int finish(coda__store *s, const coda__task_record *r) {
  int rc = s->m->begin(s);
  if (rc == 0)
    rc = s->m->finish(s, r);
  if (rc == 0)
    return s->m->commit(s);
  s->m->rollback(s);
  return rc;
}

static int finish_as(coda__store *s, uint64_t id, uint64_t lease, coda_task_state state,
                     int64_t at) {
  coda__task_record r = outcome(id, lease, state, at);
  return finish(s, &r);
}

/* The state of a task, or the error get() returned (< 0). */
static int state_of(coda__store *s, uint64_t id) {
  coda_task_info *info = NULL;
  int rc = s->m->get(s, id, &info);
  if (rc != 0)
    return rc;
  int state = (int)info->state;
  coda_task_info_free(info);
  return state;
}

/* ---- claiming -------------------------------------------------------------- */

/* A copy of what claim() handed to its callback. */
typedef struct seen_task {
  uint64_t id;
  coda_task_state state;
  int attempts, max_attempts;
  int64_t created_at, run_at;
  char name[32], key[32];
  int has_key;
  char args[32];
  size_t args_len;
  uint64_t lease;
  char queue[32];
} seen_task;

typedef struct claimed {
  int n; /* calls of the callback */
  seen_task t[MAX_SEEN];
} claimed;

static void copy_text(char *dst, size_t cap, const char *src) {
  size_t n = src ? strlen(src) : 0;
  n = n < cap - 1 ? n : cap - 1;
  memcpy(dst, src ? src : "", n);
  dst[n] = '\0';
}

static void on_claimed(void *user, const coda__task_record *r) {
  claimed *c = user;
  if (c->n < MAX_SEEN) {
    seen_task *t = &c->t[c->n];
    *t = (seen_task){.id = r->id,
                     .state = r->state,
                     .attempts = r->attempts,
                     .max_attempts = r->max_attempts,
                     .created_at = r->created_at,
                     .run_at = r->run_at,
                     .has_key = r->key != NULL,
                     .lease = r->lease};
    copy_text(t->name, sizeof t->name, r->name);
    copy_text(t->queue, sizeof t->queue, r->queue ? r->queue : "default");
    copy_text(t->key, sizeof t->key, r->key);
    t->args_len = r->args_len;
    if (r->args_len <= sizeof t->args)
      memcpy(t->args, r->args, r->args_len);
  }
  c->n++;
}

/* Claims at `now` with a lease of LEASE_MS, in a batch; returns how many. */
static int claim(coda__store *s, int64_t now, int max, claimed *c) {
  int rc = s->m->begin(s);
  int n = rc ? rc : s->m->claim(s, now, now + LEASE_MS, max, on_claimed, c);
  if (n >= 0 && (rc = s->m->commit(s)) != 0)
    n = rc;
  if (n < 0)
    s->m->rollback(s);
  return n;
}

static int claim_count(coda__store *s, int64_t now, int max) {
  claimed c = {0};
  return claim(s, now, max, &c);
}

static const seen_task *seen(const claimed *c, uint64_t id) {
  for (int i = 0; i < c->n && i < MAX_SEEN; i++)
    if (c->t[i].id == id)
      return &c->t[i];
  return NULL;
}

/* The token of id's claim in c, or 0 (which no claim has: refused). */
static uint64_t lease_of(const claimed *c, uint64_t id) {
  const seen_task *t = seen(c, id);
  return t ? t->lease : 0;
}

/* ---- 1. enqueue, get -------------------------------------------------------- */

static void check_enqueue_then_get(coda__store *s) {
  REQUIRE(add(s, 7, "order-7", T0 + 500, 0) == 0);
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 7, &info) == 0 && info);
  CHECK_EQ_INT(info->id, 7);
  CHECK_EQ_STR(info->name, "send_mail");
  CHECK_EQ_STR(info->key, "order-7");
  CHECK_EQ_INT(info->state, CODA_STATE_QUEUED);
  CHECK_EQ_INT(info->attempts, 0);
  CHECK_EQ_INT(info->max_attempts, 5);
  CHECK_EQ_INT(info->created_at, T0 - 1000);
  CHECK_EQ_INT(info->run_at, T0 + 500);
  CHECK(info->started_at == 0 && info->finished_at == 0 && info->progress == 0);
  CHECK(info->error == NULL && info->result == NULL && info->result_len == 0);
  coda_task_info_free(info);
  info = NULL;
  CHECK_EQ_INT(s->m->get(s, 8, &info), CODA_ENOTFOUND);
  CHECK(info == NULL);
}

/* get() has no arguments: they come back through claim(). */
static void check_args_come_back_through_claim(coda__store *s) {
  REQUIRE(add(s, 7, NULL, T0 + 500, 0) == 0);
  claimed c = {0};
  REQUIRE(claim(s, T0 + 500, 10, &c) == 1);
  const seen_task *t = seen(&c, 7);
  REQUIRE(t != NULL);
  CHECK_EQ_STR(t->name, "send_mail");
  CHECK(!t->has_key);
  CHECK_EQ_INT(t->args_len, sizeof args_bytes);
  CHECK(memcmp(t->args, args_bytes, sizeof args_bytes) == 0);
  CHECK_EQ_INT(t->max_attempts, 5);
  CHECK_EQ_INT(t->created_at, T0 - 1000);
  CHECK_EQ_INT(t->run_at, T0 + 500);
}

TEST(enqueue_then_get_round_trips_every_field) {
  on_each_store(check_enqueue_then_get);
  on_each_store(check_args_come_back_through_claim);
}

/* ---- 2. an id taken --------------------------------------------------------- */

static void check_id_taken(coda__store *s) {
  REQUIRE(add(s, 10, "k", T0, 0) == 0);
  CHECK_EQ_INT(add(s, 10, "k", T0, 0), CODA_EEXIST);
  CHECK_EQ_INT(add(s, 10, "other", T0, 0), CODA_ESTORE);
  CHECK(strstr(s->m->errmsg(s), "another key") != NULL);
  CHECK_EQ_INT(add(s, 10, NULL, T0, 0), CODA_ESTORE);
  REQUIRE(add(s, 11, NULL, T0, 0) == 0);
  CHECK_EQ_INT(add(s, 11, "k", T0, 0), CODA_ESTORE);
  /* Without a key a second write is no duplicate: the ids collide. */
  CHECK_EQ_INT(add(s, 11, NULL, T0, 0), CODA_ESTORE);
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 10, &info) == 0);
  CHECK_EQ_STR(info->key, "k"); /* the first write stands */
  coda_task_info_free(info);
}

TEST(enqueue_of_a_taken_id_is_a_duplicate_only_with_the_same_key) {
  on_each_store(check_id_taken);
}

/* ---- 3. rollback ------------------------------------------------------------ */

static void check_rollback(coda__store *s) {
  coda__task_record a = task(1, "ka", T0), b = task(2, NULL, T0),
                    clash = task(1, "kz", T0);
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(s->m->enqueue(s, &a, 0, 0), 0);
  CHECK_EQ_INT(s->m->enqueue(s, &b, 0, 0), 0);
  CHECK_EQ_INT(s->m->enqueue(s, &clash, 0, 0), CODA_ESTORE);
  s->m->rollback(s);
  CHECK_EQ_INT(state_of(s, 1), CODA_ENOTFOUND);
  CHECK_EQ_INT(state_of(s, 2), CODA_ENOTFOUND);
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(s->m->enqueue(s, &a, 0, 0), 0); /* not CODA_EEXIST: A was forgotten */
  CHECK_EQ_INT(s->m->commit(s), 0);
  claimed c = {0};
  CHECK_EQ_INT(claim(s, T0, 10, &c), 1);
  CHECK(seen(&c, 1) != NULL);
  CHECK(seen(&c, 2) == NULL);
}

TEST(rollback_forgets_the_whole_batch) { on_each_store(check_rollback); }

/* ---- 4. claim --------------------------------------------------------------- */

static void check_claim_takes_due_unowned_tasks(coda__store *s) {
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  REQUIRE(add(s, 2, NULL, T0 - 10, 0) == 0);
  REQUIRE(add(s, 3, NULL, T0 + 1, 0) == 0);  /* not due */
  REQUIRE(add(s, 4, NULL, T0 - 10, 1) == 0); /* owned */
  claimed c = {0};
  CHECK_EQ_INT(claim(s, T0, 10, &c), 2);
  CHECK_EQ_INT(c.n, 2);
  for (uint64_t id = 1; id <= 2; id++) {
    const seen_task *t = seen(&c, id);
    CHECK(t && t->state == CODA_STATE_RUNNING && t->attempts == 1);
    CHECK_EQ_INT(state_of(s, id), CODA_STATE_RUNNING);
  }
  CHECK(!seen(&c, 3) && !seen(&c, 4));
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 1, &info) == 0);
  CHECK_EQ_INT(info->attempts, 1);
  coda_task_info_free(info);
  CHECK_EQ_INT(state_of(s, 3), CODA_STATE_QUEUED);
}

static void check_claim_respects_max_and_leases(coda__store *s) {
  for (uint64_t id = 1; id <= 3; id++)
    REQUIRE(add(s, id, NULL, T0, 0) == 0);
  REQUIRE(add(s, 4, NULL, T0 + 1000, 0) == 0);
  CHECK_EQ_INT(claim_count(s, T0, 2), 2);
  CHECK_EQ_INT(claim_count(s, T0, 10), 1);
  /* Before their leases end, claimed tasks stay with their owner. */
  CHECK_EQ_INT(claim_count(s, T0 + 1, 10), 0);
  claimed c = {0};
  CHECK_EQ_INT(claim(s, T0 + 1000, 10, &c), 1);
  CHECK(seen(&c, 4) != NULL);
  CHECK_EQ_INT(claim_count(s, T0 + LEASE_MS - 1, 10), 0);
}

/* The SQLite store's per-task statements build no temporary b-tree at
 * each run (schema 4's `state IN (2,4,5)` index predicate did: 4 us more
 * per task), on a new file. */
TEST(sqlite_per_task_statements_build_no_temporary_tables) {
  coda__store *s;
  REQUIRE(open_store(1, &s) == 0);
  char why[512] = "";
  int rc = coda__sqlite_store_check_plans(s, why, sizeof why);
  if (rc)
    fprintf(stderr, "  %s\n", why);
  CHECK_EQ_INT(rc, 0);
  s->m->close(s);
}

/* A writer that commits batches back to back, as a busy store thread
 * does. */
typedef struct busy_writer {
  coda__store *s;
  atomic_int stop;
  atomic_long batches;
  int failed;
} busy_writer;

static void busy_writer_main(void *arg) {
  busy_writer *w = arg;
  uint64_t id = 1000;
  while (!atomic_load(&w->stop)) {
    int rc = w->s->m->begin(w->s);
    for (int i = 0; rc == 0 && i < 200; i++) {
      coda__task_record r = task(id++, NULL, T0);
      rc = w->s->m->enqueue(w->s, &r, 0, 0);
    }
    rc = rc ? rc : w->s->m->commit(w->s);
    if (rc) {
      w->s->m->rollback(w->s);
      w->failed++;
    }
    atomic_fetch_add(&w->batches, 1);
  }
}

/* Renewals take turns with such a writer: each goes through, and soon.
 * (SQLite's busy handler alone polls with sleeps and lost the lock to it
 * for its whole 1 s timeout: "database is locked", leases not renewed.) */
TEST(sqlite_renewals_are_not_starved_by_back_to_back_batches) {
  coda__store *s;
  REQUIRE(open_store(1, &s) == 0);
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  claimed c = {0};
  REQUIRE(claim(s, T0, 10, &c) == 1);
  const seen_task *t1 = seen(&c, 1);
  REQUIRE(t1);
  busy_writer w = {.s = s};
  uv_thread_t th;
  REQUIRE(uv_thread_create(&th, busy_writer_main, &w) == 0);
  uint64_t end = tc_now_ms() + 5000;
  while (atomic_load(&w.batches) < 3 && tc_now_ms() < end) /* the writer is at it */
    tc_sleep_ms(1);
  long at_start = atomic_load(&w.batches);
  uint64_t worst = 0;
  for (int i = 0; i < 20; i++) {
    coda__lease l = {1, t1->lease};
    unsigned char lost = 9;
    uint64_t t0 = tc_now_ms();
    CHECK_EQ_INT(s->m->renew(s, &l, 1, T0 + (i + 2) * LEASE_MS, &lost), 0);
    CHECK_EQ_INT(lost, 0);
    uint64_t took = tc_now_ms() - t0;
    worst = took > worst ? took : worst;
    tc_sleep_ms(5);
  }
  long during = atomic_load(&w.batches) - at_start;
  atomic_store(&w.stop, 1);
  uv_thread_join(&th);
  CHECK_EQ_INT(w.failed, 0);
  CHECK(during > 0); /* the writer was not starved either */
  /* A renewal waits for at most the batch being written (a few ms here),
   * not for a busy timeout: 500 ms leaves room for a loaded machine. */
  if (worst >= 500)
    fprintf(stderr, "  the slowest renewal took %llu ms\n", (unsigned long long)worst);
  CHECK(worst < 500);
  s->m->close(s);
}

/* A lazy batch runs at synchronous=NORMAL (it did not: the cached PRAGMA
 * statement, stepped again, changed nothing, as SQLite applies it when it
 * compiles it), and when its COMMIT fails for real (RLIMIT_FSIZE stops the
 * WAL file from growing: write() fails with EFBIG, "disk I/O error") the
 * connection is back at FULL once rolled back, so the durable batches
 * after it are fsync'd again. The failed batch's tasks are gone, the next
 * batch's are written. (SQLite rolls an I/O error back itself; a failure
 * that leaves the transaction open, which 3521e32 handles, is not made
 * here.) */
TEST(sqlite_a_failed_lazy_commit_leaves_later_commits_fsynced) {
  char uri[512], wal[512], err[512] = "";
  snprintf(uri, sizeof uri, "sqlite:%s/fsize.db", store_dir);
  snprintf(wal, sizeof wal, "%s/fsize.db-wal", store_dir);
  coda__store *s;
  REQUIRE(coda__store_open(uri, 0, &s, err, sizeof err) == 0);
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  CHECK_EQ_INT(coda__sqlite_store_synchronous(s), 2);

  /* 100 tasks of 8 KiB: about 800 KiB, under SQLite's 2 MiB page cache,
   * so nothing reaches the WAL before the COMMIT. */
  static unsigned char big[8192];
  memset(big, 'x', sizeof big);
  REQUIRE(s->m->begin_lazy(s) == 0);
  CHECK_EQ_INT(coda__sqlite_store_synchronous(s), 1);
  for (uint64_t id = 100; id < 200; id++) {
    coda__task_record r = task(id, NULL, T0);
    r.args = big;
    r.args_len = sizeof big;
    REQUIRE(s->m->enqueue(s, &r, 0, 0) == 0);
  }
  struct stat st;
  REQUIRE(stat(wal, &st) == 0);
  struct rlimit was, lim;
  REQUIRE(getrlimit(RLIMIT_FSIZE, &was) == 0);
  lim = was;
  lim.rlim_cur = (rlim_t)st.st_size + 4096;
  void (*xfsz)(int) = signal(SIGXFSZ, SIG_IGN); /* EFBIG, not a signal */
  REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
  int rc = s->m->commit(s);
  REQUIRE(setrlimit(RLIMIT_FSIZE, &was) == 0);
  signal(SIGXFSZ, xfsz);
  CHECK(rc != 0);
  if (rc)
    fprintf(stderr, "  the commit failed as it should: %s\n", s->m->errmsg(s));
  s->m->rollback(s);
  CHECK_EQ_INT(coda__sqlite_store_synchronous(s), 2);

  CHECK_EQ_INT(add(s, 2, NULL, T0, 0), 0);
  CHECK_EQ_INT(coda__sqlite_store_synchronous(s), 2);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_QUEUED);
  CHECK_EQ_INT(state_of(s, 2), CODA_STATE_QUEUED);
  CHECK_EQ_INT(state_of(s, 100), CODA_ENOTFOUND);
  CHECK_EQ_INT(state_of(s, 199), CODA_ENOTFOUND);
  s->m->close(s);
}

TEST(claim_takes_only_due_unowned_tasks) {
  on_each_store(check_claim_takes_due_unowned_tasks);
}

TEST(claim_respects_max_and_leases) {
  on_each_store(check_claim_respects_max_and_leases);
}

/* ---- 5. finish -------------------------------------------------------------- */

static const char result_bytes[] = {'o', 'k', '\0', 'y', 'e', 's'};

static void check_succeeded_keeps_its_outcome(coda__store *s) {
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  claimed c = {0};
  REQUIRE(claim(s, T0, 10, &c) == 1);
  coda__task_record r = outcome(1, lease_of(&c, 1), CODA_STATE_SUCCEEDED, T0 + 20);
  r.progress = 0.5;
  r.error = "took two tries";
  r.result = result_bytes;
  r.result_len = sizeof result_bytes;
  REQUIRE(finish(s, &r) == 0);
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 1, &info) == 0);
  CHECK_EQ_INT(info->state, CODA_STATE_SUCCEEDED);
  CHECK_EQ_INT(info->attempts, 1);
  CHECK_EQ_INT(info->started_at, T0 + 15);
  CHECK_EQ_INT(info->finished_at, T0 + 20);
  CHECK(info->progress == 0.5);
  CHECK_EQ_STR(info->error, "took two tries");
  CHECK_EQ_INT(info->result_len, sizeof result_bytes);
  CHECK(info->result && memcmp(info->result, result_bytes, sizeof result_bytes) == 0);
  coda_task_info_free(info);
  CHECK_EQ_INT(claim_count(s, T0 + 1000000, 10), 0);
}

static void check_failed_waits_for_its_run_at(coda__store *s) {
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  claimed first = {0};
  REQUIRE(claim(s, T0, 10, &first) == 1);
  coda__task_record r = outcome(1, lease_of(&first, 1), CODA_STATE_FAILED, T0 + 20);
  r.run_at = T0 + 500;
  r.error = "timeout";
  r.result = "half";
  r.result_len = 4;
  REQUIRE(finish(s, &r) == 0);
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 1, &info) == 0);
  CHECK_EQ_INT(info->state, CODA_STATE_FAILED);
  CHECK_EQ_INT(info->run_at, T0 + 500);
  CHECK_EQ_STR(info->error, "timeout");
  coda_task_info_free(info);
  CHECK_EQ_INT(claim_count(s, T0 + 499, 10), 0);
  claimed c = {0};
  CHECK_EQ_INT(claim(s, T0 + 500, 10, &c), 1);
  CHECK(c.t[0].id == 1 && c.t[0].attempts == 2 && c.t[0].state == CODA_STATE_RUNNING);
  /* The second attempt sets no result: the first one's does not stay. */
  r = outcome(1, lease_of(&c, 1), CODA_STATE_SUCCEEDED, T0 + 600);
  r.attempts = 2;
  REQUIRE(finish(s, &r) == 0);
  info = NULL;
  REQUIRE(s->m->get(s, 1, &info) == 0);
  CHECK(info->result == NULL && info->result_len == 0);
  CHECK(info->error == NULL);
  coda_task_info_free(info);
}

static void check_dead_is_final(coda__store *s) {
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  claimed c = {0};
  REQUIRE(claim(s, T0, 10, &c) == 1);
  coda__task_record r = outcome(1, lease_of(&c, 1), CODA_STATE_DEAD, T0 + 20);
  r.error = "gave up";
  REQUIRE(finish(s, &r) == 0);
  CHECK_EQ_INT(claim_count(s, T0 + 1000000000, 10), 0);
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 1, &info) == 0);
  CHECK_EQ_INT(info->state, CODA_STATE_DEAD);
  CHECK_EQ_STR(info->error, "gave up");
  CHECK_EQ_INT(info->finished_at, T0 + 20);
  coda_task_info_free(info);
}

TEST(finish_records_the_outcome) {
  on_each_store(check_succeeded_keeps_its_outcome);
  on_each_store(check_failed_waits_for_its_run_at);
  on_each_store(check_dead_is_final);
}

/* ---- 6. next_due ------------------------------------------------------------ */

static void check_next_due(coda__store *s) {
  CHECK_EQ_INT(s->m->next_due(s), 0);
  REQUIRE(add(s, 1, NULL, T0 + 500, 0) == 0);
  REQUIRE(add(s, 2, NULL, T0 + 200, 0) == 0);
  REQUIRE(add(s, 3, NULL, T0 + 100, 1) == 0); /* owned: not waiting */
  CHECK_EQ_INT(s->m->next_due(s), T0 + 200);
  claimed c2 = {0}, c1 = {0};
  REQUIRE(claim(s, T0 + 300, 10, &c2) == 1); /* task 2 */
  CHECK_EQ_INT(s->m->next_due(s), T0 + 500);
  REQUIRE(claim(s, T0 + 500, 10, &c1) == 1); /* task 1 */
  CHECK_EQ_INT(s->m->next_due(s), 0);
  coda__task_record r = outcome(1, lease_of(&c1, 1), CODA_STATE_FAILED, T0 + 600);
  r.run_at = T0 + 900;
  REQUIRE(finish(s, &r) == 0);
  REQUIRE(finish_as(s, 2, lease_of(&c2, 2), CODA_STATE_SUCCEEDED, T0 + 600) == 0);
  CHECK_EQ_INT(s->m->next_due(s), T0 + 900);
}

TEST(next_due_is_the_earliest_waiting_run_at) { on_each_store(check_next_due); }

/* ---- 7. reserve_ids --------------------------------------------------------- */

static int overlap(uint64_t a, uint64_t na, uint64_t b, uint64_t nb) {
  return a < b + nb && b < a + na;
}

static void check_reserve_ids(coda__store *s) {
  uint64_t a = 0, b = 0, c = 0;
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(s->m->reserve_ids(s, 100, &a), 0);
  CHECK_EQ_INT(s->m->reserve_ids(s, 50, &b), 0);
  CHECK_EQ_INT(s->m->commit(s), 0);
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(s->m->reserve_ids(s, 1, &c), 0);
  CHECK_EQ_INT(s->m->commit(s), 0);
  CHECK(a >= 1 && b >= 1 && c >= 1); /* 0 means "from the first" to list() */
  CHECK(!overlap(a, 100, b, 50));
  CHECK(!overlap(a, 100, c, 1));
  CHECK(!overlap(b, 50, c, 1));
}

TEST(reserved_id_blocks_never_overlap) { on_each_store(check_reserve_ids); }

/* ---- 8. list ---------------------------------------------------------------- */

typedef struct listed {
  coda__store *s;
  int n, stop_after;
  uint64_t ids[MAX_SEEN];
  int reread_failures; /* get() from the callback disagreed */
} listed;

static int on_listed(const coda_task_info *info, void *user) {
  listed *l = user;
  if (l->n < MAX_SEEN)
    l->ids[l->n] = info->id;
  l->n++;
  coda_task_info *again = NULL;
  if (l->s->m->get(l->s, info->id, &again) != 0 || again->state != info->state)
    l->reread_failures++;
  coda_task_info_free(again);
  return l->stop_after && l->n == l->stop_after;
}

static int list(coda__store *s, coda_task_state state, uint64_t after, int limit,
                listed *l) {
  l->s = s;
  return s->m->list(s, state, after, limit, on_listed, l);
}

static void check_list(coda__store *s) {
  static const uint64_t queued[] = {9, 3, 7, 5};
  for (size_t i = 0; i < 4; i++)
    REQUIRE(add(s, queued[i], NULL, T0 + 1000, 0) == 0);
  REQUIRE(add(s, 4, NULL, T0, 1) == 0); /* token 1 */
  REQUIRE(finish_as(s, 4, 1, CODA_STATE_SUCCEEDED, T0 + 10) == 0);
  listed all = {0}, page = {0}, done = {0}, dead = {0}, stopped = {.stop_after = 2};
  CHECK_EQ_INT(list(s, CODA_STATE_QUEUED, 0, 100, &all), 4);
  CHECK(all.n == 4 && all.ids[0] == 3 && all.ids[1] == 5 && all.ids[2] == 7 &&
        all.ids[3] == 9);
  CHECK_EQ_INT(list(s, CODA_STATE_QUEUED, 3, 2, &page), 2);
  CHECK(page.n == 2 && page.ids[0] == 5 && page.ids[1] == 7);
  CHECK_EQ_INT(list(s, CODA_STATE_SUCCEEDED, 0, 100, &done), 1);
  CHECK(done.n == 1 && done.ids[0] == 4);
  CHECK_EQ_INT(list(s, CODA_STATE_DEAD, 0, 100, &dead), 0);
  CHECK_EQ_INT(list(s, CODA_STATE_QUEUED, 0, 100, &stopped), 2);
  CHECK_EQ_INT(stopped.n, 2);
  CHECK_EQ_INT(all.reread_failures + page.reread_failures + done.reread_failures, 0);
}

TEST(list_pages_by_id_and_lets_its_callback_read) { on_each_store(check_list); }

/* ---- 9. purge --------------------------------------------------------------- */

static int purge(coda__store *s, int64_t before, int limit) {
  int rc = s->m->begin(s);
  int n = rc ? rc : s->m->purge(s, before, limit);
  if (n >= 0 && (rc = s->m->commit(s)) != 0)
    n = rc;
  if (n < 0)
    s->m->rollback(s);
  return n;
}

/* Tasks 1..7 with keys "k1".."k7": 1, 2, 3 finished before T0 + 1000. */
static int make_purge_fixture(coda__store *s) {
  static const char *const keys[] = {"k1", "k2", "k3", "k4", "k5", "k6", "k7"};
  int rc = 0;
  for (uint64_t id = 1; id <= 7 && rc == 0; id++)
    rc = add(s, id, keys[id - 1], id == 5 ? T0 + 5000 : T0, 0);
  claimed c = {0};
  if (rc == 0 && (rc = claim(s, T0, 10, &c)) != 6)
    return rc < 0 ? rc : CODA_ESTORE;
  coda__task_record failed = outcome(6, lease_of(&c, 6), CODA_STATE_FAILED, T0 + 10);
  failed.run_at = T0 + 100000;
  if ((rc = finish_as(s, 1, lease_of(&c, 1), CODA_STATE_SUCCEEDED, T0 + 100)) ||
      (rc = finish_as(s, 2, lease_of(&c, 2), CODA_STATE_DEAD, T0 + 50)) ||
      (rc = finish_as(s, 3, lease_of(&c, 3), CODA_STATE_SUCCEEDED, T0 + 300)) ||
      (rc = finish_as(s, 4, lease_of(&c, 4), CODA_STATE_SUCCEEDED, T0 + 2000)) ||
      (rc = finish(s, &failed)))
    return rc;
  return 0; /* 5 queued, 6 failed, 7 running */
}

static void check_purge(coda__store *s) {
  REQUIRE(make_purge_fixture(s) == 0);
  CHECK_EQ_INT(purge(s, T0 + 1000, 2), 2);
  CHECK_EQ_INT(purge(s, T0 + 1000, 10), 1);
  CHECK_EQ_INT(purge(s, T0 + 1000, 10), 0);
  for (uint64_t id = 1; id <= 3; id++)
    CHECK_EQ_INT(state_of(s, id), CODA_ENOTFOUND);
  CHECK_EQ_INT(state_of(s, 4), CODA_STATE_SUCCEEDED);
  CHECK_EQ_INT(state_of(s, 5), CODA_STATE_QUEUED);
  CHECK_EQ_INT(state_of(s, 6), CODA_STATE_FAILED);
  CHECK_EQ_INT(state_of(s, 7), CODA_STATE_RUNNING);
  CHECK_EQ_INT(add(s, 1, "k1", T0, 0), 0); /* not CODA_EEXIST: forgotten */
  CHECK_EQ_INT(add(s, 2, "k2", T0, 0), 0);
}

/* Written in the order 4 (young), 2 (old), 1: a store that kept them in
 * that order must skip task 4, not stop at it. */
static void check_purge_skips_a_younger_task(coda__store *s) {
  static const char *const keys[] = {"k1", "k2", "k3", "k4"};
  for (uint64_t id = 1; id <= 4; id++)
    REQUIRE(add(s, id, keys[id - 1], T0, 0) == 0);
  claimed c = {0};
  REQUIRE(claim(s, T0, 10, &c) == 4);
  REQUIRE(finish_as(s, 4, lease_of(&c, 4), CODA_STATE_SUCCEEDED, T0 + 2000) == 0);
  REQUIRE(finish_as(s, 2, lease_of(&c, 2), CODA_STATE_DEAD, T0 + 50) == 0);
  REQUIRE(finish_as(s, 1, lease_of(&c, 1), CODA_STATE_SUCCEEDED, T0 + 100) == 0);
  CHECK_EQ_INT(purge(s, T0 + 1000, 1), 1);
  CHECK_EQ_INT(state_of(s, 4), CODA_STATE_SUCCEEDED);
  CHECK_EQ_INT(purge(s, T0 + 1000, 10), 1);
  CHECK_EQ_INT(state_of(s, 1), CODA_ENOTFOUND);
  CHECK_EQ_INT(state_of(s, 2), CODA_ENOTFOUND);
  CHECK_EQ_INT(state_of(s, 4), CODA_STATE_SUCCEEDED);
  CHECK_EQ_INT(state_of(s, 3), CODA_STATE_RUNNING);
}

TEST(purge_forgets_old_finished_tasks_only) { on_each_store(check_purge); }

TEST(purge_is_not_held_back_by_a_younger_task) {
  on_each_store(check_purge_skips_a_younger_task);
}

/* ---- 10. progress ----------------------------------------------------------- */

static int set_progress(coda__store *s, uint64_t id, double progress) {
  int rc = s->m->begin(s);
  if (rc == 0)
    rc = s->m->progress(s, id, progress);
  if (rc == 0)
    return s->m->commit(s);
  s->m->rollback(s);
  return rc;
}

static double progress_of(coda__store *s, uint64_t id) {
  coda_task_info *info = NULL;
  if (s->m->get(s, id, &info) != 0)
    return -1;
  double p = info->progress;
  coda_task_info_free(info);
  return p;
}

static void check_progress(coda__store *s) {
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  REQUIRE(add(s, 2, NULL, T0, 0) == 0);
  REQUIRE(claim_count(s, T0, 10) == 2);
  CHECK_EQ_INT(set_progress(s, 1, 0.25), 0);
  CHECK(progress_of(s, 1) == 0.25);
  CHECK_EQ_INT(set_progress(s, 1, 0.75), 0);
  CHECK(progress_of(s, 1) == 0.75);
  CHECK(progress_of(s, 2) == 0);
}

TEST(progress_is_stored_and_read_back) { on_each_store(check_progress); }

/* ---- 11. version 2: fencing tokens, renew, expire, queues, find ------------- */

/* A task of queue `queue` named `name`, not claimed. */
static int add_in(coda__store *s, uint64_t id, const char *name, const char *queue,
                  int64_t run_at) {
  coda__task_record r = task(id, NULL, run_at);
  r.name = name;
  r.queue = queue;
  return enqueue_record(s, &r, 0);
}

/* An outcome under the token of a claim. */
static int finish_leased(coda__store *s, uint64_t id, uint64_t lease, coda_task_state state,
                         int64_t at) {
  coda__task_record r = outcome(id, lease, state, at);
  if (state == CODA_STATE_FAILED)
    r.run_at = at + 100;
  return finish(s, &r);
}

static int progress_leased(coda__store *s, uint64_t id, uint64_t lease, double p) {
  coda__lease l = {id, lease};
  int rc = s->m->begin(s);
  if (rc == 0)
    rc = s->m->progress_leased(s, &l, p);
  if (rc == 0)
    return s->m->commit(s);
  s->m->rollback(s);
  return rc;
}

/* Expires at `now`, leases until now + LEASE_MS, in a batch. */
static int expire(coda__store *s, int64_t now, int max, claimed *c) {
  int rc = s->m->begin(s);
  int n = rc ? rc : s->m->expire(s, now, now + LEASE_MS, max, on_claimed, c);
  if (n >= 0 && (rc = s->m->commit(s)) != 0)
    n = rc;
  if (n < 0)
    s->m->rollback(s);
  return n;
}

static int refused_count(coda__store *s, coda__lease *out, int max) {
  return s->m->refused(s, out, max);
}

static void check_tokens_increase_per_claim(coda__store *s) {
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  claimed c1 = {0}, c2 = {0}, c3 = {0};
  REQUIRE(claim(s, T0, 10, &c1) == 1);
  CHECK(c1.t[0].lease >= 1);
  REQUIRE(finish_leased(s, 1, c1.t[0].lease, CODA_STATE_FAILED, T0 + 10) == 0);
  REQUIRE(claim(s, T0 + 110, 10, &c2) == 1);
  CHECK(c2.t[0].lease > c1.t[0].lease);
  /* Expire gives a fresh token too, attempts unchanged. */
  REQUIRE(expire(s, T0 + 110 + LEASE_MS + 1, 10, &c3) == 1);
  CHECK(c3.t[0].lease > c2.t[0].lease);
  CHECK_EQ_INT(c3.t[0].attempts, c2.t[0].attempts);
  CHECK_EQ_INT(c3.t[0].state, CODA_STATE_RUNNING);
}

static void check_stale_token_is_refused(coda__store *s) {
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  claimed c1 = {0}, c2 = {0};
  REQUIRE(claim(s, T0, 10, &c1) == 1);
  uint64_t old = c1.t[0].lease;
  REQUIRE(expire(s, T0 + LEASE_MS + 1, 10, &c2) == 1); /* taken over */
  uint64_t now = c2.t[0].lease;
  coda__lease out[4];
  CHECK_EQ_INT(progress_leased(s, 1, old, 0.5), 0);
  CHECK_EQ_INT(refused_count(s, out, 4), 1);
  CHECK(out[0].id == 1 && out[0].lease == old);
  CHECK(progress_of(s, 1) == 0);
  CHECK_EQ_INT(finish_leased(s, 1, old, CODA_STATE_SUCCEEDED, T0 + 20), 0);
  CHECK_EQ_INT(refused_count(s, out, 4), 1);
  CHECK(out[0].id == 1 && out[0].lease == old);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_RUNNING); /* nothing changed */
  /* The current token is heard, and then nothing is refused. */
  CHECK_EQ_INT(progress_leased(s, 1, now, 0.25), 0);
  CHECK_EQ_INT(refused_count(s, out, 4), 0);
  CHECK(progress_of(s, 1) == 0.25);
  CHECK_EQ_INT(finish_leased(s, 1, now, CODA_STATE_SUCCEEDED, T0 + LEASE_MS + 50), 0);
  CHECK_EQ_INT(refused_count(s, out, 4), 0);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_SUCCEEDED);
  /* Once finished, even the token that finished it is refused. */
  CHECK_EQ_INT(finish_leased(s, 1, now, CODA_STATE_DEAD, T0 + LEASE_MS + 60), 0);
  CHECK_EQ_INT(refused_count(s, out, 4), 1);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_SUCCEEDED);
}

static void check_renew(coda__store *s) {
  for (uint64_t id = 1; id <= 3; id++)
    REQUIRE(add(s, id, NULL, T0, 0) == 0);
  claimed c = {0};
  REQUIRE(claim(s, T0, 10, &c) == 3);
  const seen_task *t1 = seen(&c, 1), *t2 = seen(&c, 2), *t3 = seen(&c, 3);
  REQUIRE(t1 && t2 && t3);
  REQUIRE(finish_leased(s, 3, t3->lease, CODA_STATE_SUCCEEDED, T0 + 10) == 0);
  coda__lease l[4] = {{1, t1->lease}, {2, t2->lease + 1}, {3, t3->lease}, {99, 1}};
  unsigned char lost[4] = {9, 9, 9, 9};
  CHECK_EQ_INT(s->m->renew(s, l, 4, T0 + 3 * LEASE_MS, lost), 0);
  CHECK(lost[0] == 0 && lost[1] == 1 && lost[2] == 1 && lost[3] == 1);
  /* Task 1's lease now ends at T0 + 3 * LEASE_MS; task 2's did not move. */
  claimed e1 = {0}, e2 = {0};
  CHECK_EQ_INT(expire(s, T0 + 2 * LEASE_MS, 10, &e1), 1);
  CHECK(seen(&e1, 2) != NULL);
  CHECK_EQ_INT(expire(s, T0 + 3 * LEASE_MS + 1, 10, &e2), 2); /* and 2 again */
  CHECK(seen(&e2, 1) != NULL);
  /* The old token of task 1 is lost now. */
  lost[0] = 0;
  CHECK_EQ_INT(s->m->renew(s, l, 1, T0 + 5 * LEASE_MS, lost), 0);
  CHECK_EQ_INT(lost[0], 1);
}

static void check_expire_takes_expired_once(coda__store *s) {
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  REQUIRE(add(s, 2, NULL, T0, 1) == 0); /* owned: leased until T0 + LEASE_MS too */
  REQUIRE(claim_count(s, T0, 10) == 1);
  claimed c = {0}, again = {0};
  CHECK_EQ_INT(expire(s, T0 + LEASE_MS - 1, 10, &c), 0);
  CHECK_EQ_INT(expire(s, T0 + LEASE_MS + 1, 10, &c), 2);
  CHECK(seen(&c, 1) && seen(&c, 2));
  CHECK(seen(&c, 1) && seen(&c, 1)->attempts == 1);
  CHECK_EQ_INT(expire(s, T0 + LEASE_MS + 1, 10, &again), 0);
  /* A finished or waiting task is never expired. */
  REQUIRE(add(s, 3, NULL, T0 + 10 * LEASE_MS, 0) == 0);
  CHECK_EQ_INT(finish_leased(s, 1, seen(&c, 1)->lease, CODA_STATE_SUCCEEDED, T0 + LEASE_MS + 2),
               0);
  CHECK_EQ_INT(expire(s, T0 + 100 * LEASE_MS, 10, &again), 1);
  CHECK(again.n == 1 && again.t[0].id == 2);
}

TEST(v2_tokens_increase_per_claim) { on_each_v2_store(check_tokens_increase_per_claim); }
TEST(v2_a_stale_token_is_refused_and_changes_nothing) {
  on_each_v2_store(check_stale_token_is_refused);
}
TEST(v2_renew_extends_live_claims_only) { on_each_v2_store(check_renew); }
TEST(v2_expire_takes_each_expired_lease_once) {
  on_each_v2_store(check_expire_takes_expired_once);
}

static int serve(coda__store *s, const char *q0, const char *q1) {
  const char *q[2] = {q0, q1};
  return s->m->serve(s, q, q0 ? (q1 ? 2 : 1) : 0);
}

static void check_queues(coda__store *s) {
  REQUIRE(add_in(s, 1, "a", "cpu", T0) == 0);
  REQUIRE(add_in(s, 2, "b", "io", T0) == 0);
  REQUIRE(add_in(s, 3, "c", NULL, T0) == 0); /* the default queue */
  REQUIRE(add_in(s, 4, "d", "cpu", T0) == 0);
  REQUIRE(serve(s, "cpu", NULL) == 0);
  REQUIRE(s->m->pause(s, "cpu", 1) == 0);
  CHECK_EQ_INT(claim_count(s, T0, 10), 0);
  CHECK_EQ_INT(s->m->next_due(s), 0); /* nothing it may take */
  REQUIRE(s->m->pause(s, "cpu", 0) == 0);
  claimed c = {0};
  CHECK_EQ_INT(claim(s, T0, 1, &c), 1);
  CHECK(c.n == 1 && strcmp(c.t[0].queue, "cpu") == 0);
  CHECK_EQ_INT(claim(s, T0, 10, &c), 1);
  CHECK(c.n == 2 && seen(&c, 1) && seen(&c, 4));
  CHECK_EQ_INT(claim_count(s, T0, 10), 0);
  REQUIRE(serve(s, "io", "default") == 0);
  REQUIRE(s->m->pause(s, "default", 1) == 0);
  claimed d = {0};
  CHECK_EQ_INT(claim(s, T0, 10, &d), 1);
  CHECK(d.n == 1 && d.t[0].id == 2);
  REQUIRE(s->m->pause(s, "default", 0) == 0);
  REQUIRE(serve(s, NULL, NULL) == 0); /* every queue */
  REQUIRE(add_in(s, 5, "e", "new", T0) == 0);
  claimed e = {0};
  CHECK_EQ_INT(claim(s, T0, 10, &e), 2);
  CHECK(seen(&e, 3) && seen(&e, 5));
}

TEST(v2_serve_and_pause_limit_claims) { on_each_v2_store(check_queues); }

static int find(coda__store *s, int state, const char *queue, const char *name, uint64_t after,
                int limit, listed *l) {
  coda__task_filter f = {
      .state = state, .queue = queue, .name = name, .after_id = after, .limit = limit};
  l->s = s;
  return s->m->find(s, &f, on_listed, l);
}

static void check_find(coda__store *s) {
  /* Ids 1..8: names x (odd) and y (even); queues q1 (1..4) and q2 (5..8). */
  for (uint64_t id = 1; id <= 8; id++)
    REQUIRE(add_in(s, id, id % 2 ? "x" : "y", id <= 4 ? "q1" : "q2", T0 + (id > 2 ? 1000 : 0)) ==
            0);
  REQUIRE(claim_count(s, T0, 10) == 2); /* 1 and 2, the only ones due */
  listed all = {0}, byname = {0}, byqueue = {0}, page = {0}, both = {0}, running = {0};
  CHECK_EQ_INT(find(s, -1, NULL, NULL, 0, 100, &all), 8);
  listed unlimited = {0};
  CHECK_EQ_INT(find(s, -1, NULL, NULL, 0, 0, &unlimited), 8); /* limit 0: none */
  for (int i = 0; i < 8 && i < all.n; i++)
    CHECK_EQ_INT(all.ids[i], i + 1);
  CHECK_EQ_INT(find(s, -1, NULL, "y", 0, 100, &byname), 4);
  CHECK(byname.ids[0] == 2 && byname.ids[1] == 4 && byname.ids[2] == 6 && byname.ids[3] == 8);
  CHECK_EQ_INT(find(s, -1, "q2", NULL, 0, 100, &byqueue), 4);
  CHECK(byqueue.ids[0] == 5 && byqueue.ids[3] == 8);
  CHECK_EQ_INT(find(s, -1, "q2", "x", 5, 1, &page), 1);
  CHECK(page.ids[0] == 7);
  CHECK_EQ_INT(find(s, CODA_STATE_QUEUED, "q1", "x", 0, 100, &both), 1);
  CHECK(both.ids[0] == 3);
  CHECK_EQ_INT(find(s, CODA_STATE_RUNNING, NULL, NULL, 0, 100, &running), 2);
  CHECK_EQ_INT(all.reread_failures + byname.reread_failures, 0);
  listed none = {0};
  CHECK_EQ_INT(find(s, CODA_STATE_DEAD, NULL, "x", 0, 100, &none), 0);
}

TEST(v2_find_filters_by_state_queue_and_name_with_paging) { on_each_v2_store(check_find); }

/* An owned enqueue is the task's first claim (store.h): every store
 * reports it running, with the attempts written, token 1, leased; claim()
 * never takes it and next_due() does not wait for it. */
static void check_owned_enqueue_is_a_claim(coda__store *s) {
  coda__task_record r = task(1, NULL, T0);
  r.attempts = 1; /* as the engine writes an owned task */
  REQUIRE(enqueue_record(s, &r, 1) == 0);
  REQUIRE(add(s, 2, NULL, T0 + 500, 0) == 0);
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 1, &info) == 0);
  CHECK_EQ_INT(info->state, CODA_STATE_RUNNING);
  CHECK_EQ_INT(info->attempts, 1);
  CHECK_EQ_INT(info->started_at, 0);
  coda_task_info_free(info);
  CHECK_EQ_INT(state_of(s, 2), CODA_STATE_QUEUED);
  CHECK_EQ_INT(claim_count(s, T0 + 100, 10), 0);
  CHECK_EQ_INT(s->m->next_due(s), T0 + 500);
  listed running = {0}, queued = {0};
  CHECK_EQ_INT(find(s, CODA_STATE_RUNNING, NULL, NULL, 0, 100, &running), 1);
  CHECK(running.ids[0] == 1);
  CHECK_EQ_INT(find(s, CODA_STATE_QUEUED, NULL, NULL, 0, 100, &queued), 1);
  CHECK(queued.ids[0] == 2);
  coda__lease l[2] = {{1, 1}, {1, 0}};
  unsigned char lost[2] = {9, 9};
  CHECK_EQ_INT(s->m->renew(s, l, 2, T0 + 2 * LEASE_MS, lost), 0);
  CHECK(lost[0] == 0 && lost[1] == 1);
  /* Its lease (renewed to T0 + 2 * LEASE_MS) is taken back by expire(). */
  claimed e = {0};
  CHECK_EQ_INT(expire(s, T0 + 2 * LEASE_MS - 1, 10, &e), 0);
  CHECK_EQ_INT(expire(s, T0 + 2 * LEASE_MS + 1, 10, &e), 1);
  CHECK(e.n == 1 && e.t[0].id == 1 && e.t[0].lease == 2 && e.t[0].attempts == 1);
}

/* Token 0 is no exception to fencing: no claim has it. */
static void check_token_zero_is_refused(coda__store *s) {
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);        /* queued, token 0, never claimed */
  REQUIRE(add(s, 2, NULL, T0 + 1000, 1) == 0); /* owned: token 1 */
  coda__lease out[4];
  CHECK_EQ_INT(finish_leased(s, 1, 0, CODA_STATE_SUCCEEDED, T0 + 10), 0);
  CHECK_EQ_INT(refused_count(s, out, 4), 1);
  CHECK(out[0].id == 1 && out[0].lease == 0);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_QUEUED);
  CHECK_EQ_INT(finish_leased(s, 2, 0, CODA_STATE_DEAD, T0 + 10), 0);
  CHECK_EQ_INT(refused_count(s, out, 4), 1);
  CHECK_EQ_INT(progress_leased(s, 2, 0, 0.5), 0);
  CHECK_EQ_INT(refused_count(s, out, 4), 1);
  CHECK(progress_of(s, 2) == 0);
  CHECK_EQ_INT(state_of(s, 2), CODA_STATE_RUNNING);
  CHECK_EQ_INT(progress_leased(s, 2, 1, 0.5), 0);
  CHECK_EQ_INT(refused_count(s, out, 4), 0);
  CHECK(progress_of(s, 2) == 0.5);
  CHECK_EQ_INT(finish_leased(s, 2, 1, CODA_STATE_SUCCEEDED, T0 + 20), 0);
  CHECK_EQ_INT(refused_count(s, out, 4), 0);
  CHECK_EQ_INT(state_of(s, 2), CODA_STATE_SUCCEEDED);
  /* The version-1 progress() is not fenced. */
  CHECK_EQ_INT(set_progress(s, 1, 0.25), 0);
  CHECK(progress_of(s, 1) == 0.25);
}

/* A batch rolled back (another write in it failed) is written again by
 * the engine: its outcome, under the same token, still holds; once
 * committed, that token is spent. */
static void check_outcome_written_again_after_rollback(coda__store *s) {
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  claimed c = {0};
  REQUIRE(claim(s, T0, 10, &c) == 1);
  coda__task_record r = outcome(1, lease_of(&c, 1), CODA_STATE_SUCCEEDED, T0 + 20);
  coda__task_record clash = task(1, "other", T0);
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(s->m->finish(s, &r), 0);
  CHECK(s->m->enqueue(s, &clash, 0, 0) != 0 || s->m->commit(s) != 0);
  s->m->rollback(s);
  CHECK_EQ_INT(finish(s, &r), 0);
  coda__lease out[4];
  CHECK_EQ_INT(refused_count(s, out, 4), 0);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_SUCCEEDED);
  CHECK_EQ_INT(finish(s, &r), 0);
  CHECK_EQ_INT(refused_count(s, out, 4), 1);
}

/* One batch that adds tasks and writes outcomes and progress of the same
 * tasks applies its operations in order (the Redis scripts buffer writes
 * per key and read ahead, which must not change what any of them sees):
 * an owned task added then finished in the same batch ends succeeded; a
 * failed attempt (a retry due later) applies, and the same outcome sent
 * again in the batch is refused, since the claim it names has ended (the
 * memory store, which has no undo, takes the very same outcome again as
 * written: store.h); a progress between outcomes applies; the retry is
 * claimed again when due. */
static void check_mixed_batch_applies_in_order(coda__store *s) {
  REQUIRE(add(s, 2, NULL, T0, 0) == 0);
  REQUIRE(add(s, 3, NULL, T0, 0) == 0);
  REQUIRE(add(s, 4, NULL, T0, 0) == 0);
  claimed c = {0};
  REQUIRE(claim(s, T0, 10, &c) == 3);
  uint64_t l2 = lease_of(&c, 2), l3 = lease_of(&c, 3);
  coda__task_record owned = task(1, NULL, T0);
  owned.attempts = 1;
  coda__task_record done1 = outcome(1, 1, CODA_STATE_SUCCEEDED, T0 + 10);
  coda__task_record fail2 = outcome(2, l2, CODA_STATE_FAILED, T0 + 10);
  fail2.run_at = T0 + 100;
  fail2.error = "first";
  coda__task_record done3 = outcome(3, l3, CODA_STATE_SUCCEEDED, T0 + 10);
  coda__lease p4 = {4, lease_of(&c, 4)};
  REQUIRE(s->m->begin(s) == 0);
  REQUIRE(s->m->enqueue(s, &owned, 1, T0 + LEASE_MS) == 0);
  REQUIRE(s->m->finish(s, &done1) == 0);
  REQUIRE(s->m->finish(s, &fail2) == 0);
  REQUIRE(s->m->progress_leased(s, &p4, 0.5) == 0);
  REQUIRE(s->m->finish(s, &done3) == 0);
  REQUIRE(s->m->finish(s, &fail2) == 0); /* again: the claim has ended */
  REQUIRE(s->m->commit(s) == 0);
  coda__lease out[4];
  int refused = refused_count(s, out, 4);
  if (strcmp(s->m->name, "memory") != 0) {
    CHECK_EQ_INT(refused, 1);
    CHECK(out[0].id == 2 && out[0].lease == l2);
  }
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_SUCCEEDED);
  CHECK_EQ_INT(state_of(s, 2), CODA_STATE_FAILED);
  CHECK(progress_of(s, 4) == 0.5);
  CHECK_EQ_INT(state_of(s, 3), CODA_STATE_SUCCEEDED);
  CHECK_EQ_INT(claim_count(s, T0 + 50, 10), 0);
  claimed again = {0};
  CHECK_EQ_INT(claim(s, T0 + 100, 10, &again), 1);
  CHECK(again.n == 1 && again.t[0].id == 2 && again.t[0].attempts == 2);
}

/* paused(): every queue paused, by name, separated by commas. */
static void check_paused_lists_the_paused_queues(coda__store *s) {
  char buf[64];
  CHECK_EQ_INT(s->m->paused(s, buf, sizeof buf), 0);
  CHECK_EQ_STR(buf, "");
  REQUIRE(s->m->pause(s, "cpu", 1) == 0);
  REQUIRE(s->m->pause(s, "io", 1) == 0);
  REQUIRE(s->m->pause(s, "io", 1) == 0); /* twice: once in the list */
  CHECK_EQ_INT(s->m->paused(s, buf, sizeof buf), 2);
  CHECK(strcmp(buf, "cpu,io") == 0 || strcmp(buf, "io,cpu") == 0);
  CHECK_EQ_INT(s->m->paused(s, buf, 4), CODA_ELIMIT);
  REQUIRE(s->m->pause(s, "cpu", 0) == 0);
  CHECK_EQ_INT(s->m->paused(s, buf, sizeof buf), 1);
  CHECK_EQ_STR(buf, "io");
}

TEST(v2_a_mixed_batch_applies_in_order) { on_each_v2_store(check_mixed_batch_applies_in_order); }

TEST(v2_an_owned_enqueue_is_a_running_claim) {
  on_each_v2_store(check_owned_enqueue_is_a_claim);
}
TEST(v2_token_zero_is_refused_like_any_stale_token) {
  on_each_v2_store(check_token_zero_is_refused);
}
TEST(v2_an_outcome_rolled_back_is_written_again) {
  on_each_v2_store(check_outcome_written_again_after_rollback);
}
TEST(v2_paused_lists_the_paused_queues) {
  on_each_v2_store(check_paused_lists_the_paused_queues);
}

/* The attempts and state get() reports, or the error (< 0) in *state. */
static int attempts_of(coda__store *s, uint64_t id, int *state) {
  coda_task_info *info = NULL;
  int rc = s->m->get(s, id, &info);
  if (rc != 0) {
    *state = rc;
    return rc;
  }
  *state = (int)info->state;
  int attempts = info->attempts;
  coda_task_info_free(info);
  return attempts;
}

/* release(): claims whose attempt never began go back to waiting, their
 * claim not counted; a stale token or a task no longer running is left
 * alone; the old token is refused afterwards and the next claim's is new. */
static void check_release(coda__store *s) {
  REQUIRE(s->m->release != NULL);
  REQUIRE(add(s, 1, NULL, T0, 0) == 0);
  REQUIRE(add(s, 2, NULL, T0, 1) == 0); /* owned: token 1 */
  REQUIRE(add(s, 3, NULL, T0, 0) == 0);
  REQUIRE(add(s, 4, NULL, T0, 0) == 0);
  claimed c = {0};
  REQUIRE(claim(s, T0, 10, &c) == 3);
  /* Task 4 failed once and is claimed again: attempts 2. */
  REQUIRE(finish_leased(s, 4, lease_of(&c, 4), CODA_STATE_FAILED, T0 + 10) == 0);
  claimed c4 = {0};
  REQUIRE(claim(s, T0 + 110, 10, &c4) == 1);
  REQUIRE(c4.t[0].id == 4 && c4.t[0].attempts == 2);
  coda__lease l[4] = {
      {1, lease_of(&c, 1)}, {2, 1}, {3, lease_of(&c, 3) + 1}, {4, lease_of(&c4, 4)}};
  CHECK_EQ_INT(s->m->release(s, l, 4), 0);
  int st;
  CHECK_EQ_INT(attempts_of(s, 1, &st), 0);
  CHECK_EQ_INT(st, CODA_STATE_QUEUED);
  CHECK_EQ_INT(attempts_of(s, 2, &st), 0);
  CHECK_EQ_INT(st, CODA_STATE_QUEUED);
  CHECK_EQ_INT(attempts_of(s, 3, &st), 1); /* stale token: still claimed */
  CHECK_EQ_INT(st, CODA_STATE_RUNNING);
  CHECK_EQ_INT(attempts_of(s, 4, &st), 1);
  CHECK_EQ_INT(st, CODA_STATE_FAILED);
  /* The released claims' writes are refused. */
  CHECK_EQ_INT(finish_leased(s, 1, lease_of(&c, 1), CODA_STATE_SUCCEEDED, T0 + 20), 0);
  coda__lease ref[4];
  CHECK_EQ_INT(refused_count(s, ref, 4), 1);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_QUEUED);
  /* Due at once: claimed again with a new token, attempts counted once. */
  claimed d = {0};
  CHECK_EQ_INT(claim(s, T0 + 200, 10, &d), 3);
  const seen_task *t1 = seen(&d, 1), *t2 = seen(&d, 2), *t4 = seen(&d, 4);
  REQUIRE(t1 && t2 && t4);
  CHECK(t1->lease > lease_of(&c, 1) && t2->lease > 1 && t4->lease > lease_of(&c4, 4));
  CHECK(t1->attempts == 1 && t2->attempts == 1 && t4->attempts == 2);
  /* A finished task is not touched by a release. */
  REQUIRE(finish_leased(s, 1, t1->lease, CODA_STATE_SUCCEEDED, T0 + 300) == 0);
  coda__lease done = {1, t1->lease};
  CHECK_EQ_INT(s->m->release(s, &done, 1), 0);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_SUCCEEDED);
  CHECK_EQ_INT(s->m->release(s, NULL, 0), 0);
}

TEST(v2_release_gives_back_claims_whose_attempt_never_began) {
  on_each_v2_store(check_release);
}

/* ---- 12. the Redis store alone ---------------------------------------------- */

/* Opens the Redis store of server r with URI suffix `params` (after the
 * port), a fresh prefix unless params names one. */
static int open_redis(const tc_redis *r, const char *params, coda__store **s, char *err,
                      size_t errlen) {
  static int n;
  char suffix[128], uri[256];
  if (params)
    snprintf(suffix, sizeof suffix, "%s", params);
  else
    snprintf(suffix, sizeof suffix, "/0?prefix=r%d", ++n);
  tc_redis_uri(r, uri, sizeof uri, suffix);
  err[0] = '\0';
  return coda__store_open(uri, 0, s, err, errlen);
}

/* The calls= count of a command in INFO commandstats. */
static long long command_calls(const char *command) {
  redisReply *r = tc_redis_cmd(&redis, "INFO commandstats");
  long long calls = -1;
  char needle[64];
  snprintf(needle, sizeof needle, "cmdstat_%s:calls=", command);
  if (r && r->type == REDIS_REPLY_STRING) {
    const char *p = strstr(r->str, needle);
    calls = p ? atoll(p + strlen(needle)) : 0;
  }
  if (r)
    freeReplyObject(r);
  return calls;
}

TEST(redis_uri_errors_are_clear) {
  static const char *const bad[] = {"redis://", "redis://host:0", "redis://host:99999",
                                    "redis://127.0.0.1:6379/x", "redis://h:1?prefix={x}",
                                    "redis://h:1?prefix=", "redis://h:1?replicas=-1",
                                    "redis://h:1?what=1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    coda__store *s = NULL;
    char err[512] = "";
    CHECK_EQ_INT(coda__store_open(bad[i], 0, &s, err, sizeof err), CODA_ESTORE);
    CHECK(s == NULL && strstr(err, "redis://HOST:PORT") != NULL);
  }
  /* Nothing listens: a port just freed by a stopped server. */
  tc_redis gone;
  REQUIRE(tc_redis_start(&gone, NULL) == 0);
  tc_redis_stop(&gone);
  coda__store *s = NULL;
  char err[512];
  uint64_t t = tc_now_ms();
  CHECK_EQ_INT(open_redis(&gone, NULL, &s, err, sizeof err), CODA_ESTORE);
  CHECK(tc_now_ms() - t < 3000);
  CHECK(strstr(err, "cannot connect") != NULL);
  tc_redis_remove(&gone);
}

TEST(redis_scripts_come_back_after_noscript) {
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&redis, NULL, &s, err, sizeof err) == 0);
  CHECK_EQ_INT(add(s, 1, NULL, T0, 0), 0);
  redisReply *r = tc_redis_cmd(&redis, "SCRIPT FLUSH");
  CHECK(r && r->type == REDIS_REPLY_STATUS);
  if (r)
    freeReplyObject(r);
  CHECK_EQ_INT(add(s, 2, NULL, T0, 0), 0);
  r = tc_redis_cmd(&redis, "SCRIPT FLUSH");
  if (r)
    freeReplyObject(r);
  CHECK_EQ_INT(claim_count(s, T0, 10), 2);
  CHECK_EQ_INT(state_of(s, 2), CODA_STATE_RUNNING); /* the side connection too */
  s->m->close(s);
}

TEST(redis_refuses_a_policy_that_evicts) {
  tc_redis lru;
  REQUIRE(tc_redis_start(&lru, "maxmemory 64mb\nmaxmemory-policy allkeys-lru") == 0);
  coda__store *s = NULL;
  char err[512];
  CHECK_EQ_INT(open_redis(&lru, NULL, &s, err, sizeof err), CODA_ESTORE);
  CHECK(s == NULL);
  CHECK(strstr(err, "maxmemory-policy allkeys-lru") && strstr(err, "noeviction"));
  redisReply *r = tc_redis_cmd(&lru, "CONFIG SET maxmemory-policy volatile-lru");
  if (r)
    freeReplyObject(r);
  REQUIRE(open_redis(&lru, NULL, &s, err, sizeof err) == 0);
  CHECK(strstr(s->m->errmsg(s), "volatile-lru") != NULL); /* the warning */
  s->m->close(s);
  tc_redis_remove(&lru);
}

TEST(redis_a_batch_is_one_script_call) {
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&redis, NULL, &s, err, sizeof err) == 0);
  long long before = command_calls("evalsha");
  REQUIRE(s->m->begin(s) == 0);
  for (uint64_t id = 1; id <= 300; id++) {
    coda__task_record r = task(id, NULL, T0);
    CHECK_EQ_INT(s->m->enqueue(s, &r, 0, 0), 0);
  }
  CHECK_EQ_INT(s->m->commit(s), 0);
  CHECK_EQ_INT(command_calls("evalsha") - before, 1);
  before = command_calls("evalsha");
  CHECK_EQ_INT(claim_count(s, T0, 300), 300);
  CHECK_EQ_INT(command_calls("evalsha") - before, 1);
  before = command_calls("evalsha");
  REQUIRE(s->m->begin(s) == 0);
  for (uint64_t id = 1; id <= 300; id++) {
    /* Each task's first claim: token 1 (an unowned enqueue is 0). */
    coda__task_record r = outcome(id, 1, CODA_STATE_SUCCEEDED, T0 + 10);
    CHECK_EQ_INT(s->m->finish(s, &r), 0);
  }
  CHECK_EQ_INT(s->m->commit(s), 0);
  CHECK_EQ_INT(command_calls("evalsha") - before, 1);
  CHECK_EQ_INT(state_of(s, 300), CODA_STATE_SUCCEEDED);
  s->m->close(s);
}

/* Adds task id until it works or ms pass; the last rc. */
static int add_until(coda__store *s, uint64_t id, int ms) {
  uint64_t deadline = tc_now_ms() + (uint64_t)ms;
  int rc;
  while ((rc = add(s, id, NULL, T0, 0)) != 0 && tc_now_ms() < deadline)
    tc_sleep_ms(20);
  if (rc)
    fprintf(stderr, "  still failing: %s\n", s->m->errmsg(s));
  return rc;
}

/* state_of(), again while the store answers CODA_ESTORE (its connection
 * for reads waits for its own backoff), for up to 10 s. */
static int state_once_up(coda__store *s, uint64_t id) {
  uint64_t deadline = tc_now_ms() + 10000;
  int st;
  while ((st = state_of(s, id)) == CODA_ESTORE && tc_now_ms() < deadline)
    tc_sleep_ms(20);
  return st;
}

TEST(redis_down_is_an_error_in_bounded_time_and_back_works_again) {
  tc_redis own;
  REQUIRE(tc_redis_start(&own, "appendonly yes\nappendfsync always") == 0);
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&own, NULL, &s, err, sizeof err) == 0);
  CHECK_EQ_INT(add(s, 1, NULL, T0, 0), 0);
  tc_redis_stop(&own);
  uint64_t t = tc_now_ms();
  /* The command may leave before the closed connection is seen: then the
   * store cannot tell whether it ran (store.h, CODA__STORE_UNKNOWN). */
  int rc = add(s, 2, NULL, T0, 0);
  CHECK(rc == CODA_ESTORE || rc == CODA__STORE_UNKNOWN);
  CHECK(s->m->errmsg(s)[0] != '\0');
  coda_task_info *info = NULL;
  CHECK_EQ_INT(s->m->get(s, 1, &info), CODA_ESTORE);
  CHECK_EQ_INT(claim_count(s, T0, 10), CODA_ESTORE);
  /* The next tries wait for the backoff: they fail at once. */
  for (int i = 0; i < 100; i++)
    CHECK_EQ_INT(add(s, 2, NULL, T0, 0), CODA_ESTORE);
  CHECK(tc_now_ms() - t < 3000);
  CHECK(strstr(s->m->errmsg(s), "next try in") != NULL);
  REQUIRE(tc_redis_restart(&own) == 0);
  CHECK_EQ_INT(add_until(s, 2, 10000), 0);
  CHECK_EQ_INT(state_once_up(s, 1), CODA_STATE_QUEUED); /* kept by the AOF */
  CHECK_EQ_INT(claim_count(s, T0, 10), 2);
  /* A server that stops answering (SIGSTOP) costs the command timeout,
   * and the batch that was sent has an unknown outcome. */
  kill(own.pid, SIGSTOP);
  t = tc_now_ms();
  CHECK_EQ_INT(add(s, 3, NULL, T0, 0), CODA__STORE_UNKNOWN);
  CHECK(strstr(s->m->errmsg(s), "unknown") != NULL);
  CHECK(tc_now_ms() - t < 5000);
  CHECK_EQ_INT(state_of(s, 1), CODA_ESTORE);
  kill(own.pid, SIGCONT);
  /* The timed-out commit may still run once the server wakes up: task 3
   * exists or not, the store cannot know (its add answered an error). */
  CHECK_EQ_INT(add_until(s, 4, 10000), 0);
  int st3 = state_once_up(s, 3);
  CHECK(st3 == CODA_STATE_QUEUED || st3 == CODA_ENOTFOUND);
  s->m->close(s);
  tc_redis_remove(&own);
}

TEST(redis_out_of_memory_refuses_the_whole_batch) {
  tc_redis small;
  REQUIRE(tc_redis_start(&small, "maxmemory 4mb\nmaxmemory-policy noeviction") == 0);
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&small, NULL, &s, err, sizeof err) == 0);
  static char big[16384];
  memset(big, 'x', sizeof big);
  int rc = 0;
  uint64_t id = 0, batch_first = 0;
  for (int b = 0; b < 200 && rc == 0; b++) {
    batch_first = id + 1;
    REQUIRE(s->m->begin(s) == 0);
    for (int i = 0; i < 20; i++) {
      coda__task_record r = task(++id, NULL, T0);
      r.args = big;
      r.args_len = sizeof big;
      REQUIRE(s->m->enqueue(s, &r, 0, 0) == 0);
    }
    rc = s->m->commit(s);
  }
  CHECK_EQ_INT(rc, CODA_ELIMIT);
  CHECK(strstr(s->m->errmsg(s), "out of memory") != NULL);
  CHECK_EQ_INT(state_of(s, batch_first), CODA_ENOTFOUND);
  CHECK_EQ_INT(state_of(s, id), CODA_ENOTFOUND);
  CHECK_EQ_INT(state_of(s, batch_first - 1), CODA_STATE_QUEUED);
  s->m->close(s);
  tc_redis_remove(&small);
}

static int replica_ready(tc_redis *primary) {
  redisReply *r = tc_redis_cmd(primary, "INFO replication");
  int ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "connected_slaves:1") &&
           strstr(r->str, "state=online");
  if (r)
    freeReplyObject(r);
  return ok;
}

TEST(redis_replicas_must_acknowledge_new_tasks) {
  tc_redis primary, replica;
  REQUIRE(tc_redis_start(&primary, NULL) == 0);
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&primary, "/0?prefix=rep&replicas=1", &s, err, sizeof err) == 0);
  uint64_t t = tc_now_ms();
  CHECK_EQ_INT(add(s, 1, "k1", T0, 0), CODA__STORE_UNKNOWN); /* on the primary alone */
  CHECK(tc_now_ms() - t < 3000);
  CHECK(strstr(s->m->errmsg(s), "not acknowledged by 1 replica") != NULL);
  /* The same key added again (here by another process) finds a duplicate
   * and writes nothing, but the task it names is still on the primary
   * alone: no acknowledgement, no success (review #2). */
  coda__store *b;
  REQUIRE(open_redis(&primary, "/0?prefix=rep&replicas=1", &b, err, sizeof err) == 0);
  CHECK_EQ_INT(add(b, 1, "k1", T0, 0), CODA__STORE_UNKNOWN);
  b->m->close(b);
  char conf[64];
  snprintf(conf, sizeof conf, "replicaof 127.0.0.1 %d", primary.port);
  REQUIRE(tc_redis_start(&replica, conf) == 0);
  uint64_t deadline = tc_now_ms() + 15000;
  while (!replica_ready(&primary) && tc_now_ms() < deadline)
    tc_sleep_ms(20);
  CHECK(replica_ready(&primary));
  CHECK_EQ_INT(add(s, 2, NULL, T0, 0), 0);
  /* Outcomes alone need no acknowledgement. */
  claimed c = {0};
  CHECK_EQ_INT(claim(s, T0, 10, &c), 2);
  tc_redis_stop(&replica);
  CHECK_EQ_INT(finish_as(s, 2, lease_of(&c, 2), CODA_STATE_SUCCEEDED, T0 + 5), 0);
  CHECK_EQ_INT(state_of(s, 2), CODA_STATE_SUCCEEDED);
  s->m->close(s);
  tc_redis_remove(&replica);
  tc_redis_remove(&primary);
}

/* Review #3: a batch of any size is built on the heap (it had its
 * argument vector on the stack: 13 per add, a crash near 80,000 adds).
 * The commit applies, or fails cleanly: a server that is still running the
 * script when the command timeout ends leaves its outcome unknown. */
TEST(redis_a_huge_batch_commits_or_fails_cleanly) {
  tc_redis own;
  REQUIRE(tc_redis_start(&own, NULL) == 0);
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&own, NULL, &s, err, sizeof err) == 0);
  enum { HUGE = 200000 };
  REQUIRE(s->m->begin(s) == 0);
  int rc = 0;
  for (uint64_t id = 1; id <= HUGE && rc == 0; id++) {
    coda__task_record r = task(id, NULL, T0);
    rc = s->m->enqueue(s, &r, 1, T0 + LEASE_MS);
  }
  CHECK_EQ_INT(rc, 0);
  rc = s->m->commit(s);
  fprintf(stderr, "  commit of %d owned adds: %s (%s)\n", HUGE,
          rc == CODA__STORE_UNKNOWN ? "unknown" : coda_strerror(rc), s->m->errmsg(s));
  CHECK(rc == 0 || rc == CODA__STORE_UNKNOWN || rc == CODA_ESTORE || rc == CODA_ELIMIT);
  if (rc == 0) {
    CHECK_EQ_INT(state_of(s, 1), CODA_STATE_RUNNING);
    CHECK_EQ_INT(state_of(s, HUGE), CODA_STATE_RUNNING);
  }
  s->m->close(s);
  tc_redis_remove(&own);
}

/* Review #8: over maxmemory (noeviction), renewals go on (or every long
 * task of the fleet loses its lease), outcomes are written, and a batch
 * with adds is refused whole even when an outcome comes first in it (a
 * script's first write is the only one Redis checks for memory). */
TEST(redis_over_maxmemory_renews_and_refuses_adds_behind_an_outcome) {
  tc_redis small;
  REQUIRE(tc_redis_start(&small, "maxmemory-policy noeviction") == 0);
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&small, NULL, &s, err, sizeof err) == 0);
  REQUIRE(add(s, 1, NULL, T0, 1) == 0); /* owned: token 1 */
  REQUIRE(add(s, 2, NULL, T0, 1) == 0);
  /* Far below what the server already uses (about 1 MB at start): over
   * maxmemory for good, whatever the buffers of the last command held. */
  redisReply *cfg = tc_redis_cmd(&small, "CONFIG SET maxmemory 100000");
  CHECK(cfg && cfg->type == REDIS_REPLY_STATUS);
  if (cfg)
    freeReplyObject(cfg);
  uint64_t id = 100;
  REQUIRE(add(s, ++id, NULL, T0, 0) == CODA_ELIMIT);
  coda__lease l = {1, 1};
  unsigned char lost = 9;
  CHECK_EQ_INT(s->m->renew(s, &l, 1, T0 + 5 * LEASE_MS, &lost), 0);
  CHECK_EQ_INT(lost, 0);
  /* An outcome, then an add: refused whole. */
  REQUIRE(s->m->begin(s) == 0);
  coda__task_record done = outcome(2, 1, CODA_STATE_SUCCEEDED, T0 + 10);
  CHECK_EQ_INT(s->m->finish(s, &done), 0);
  coda__task_record more = task(++id, NULL, T0);
  CHECK_EQ_INT(s->m->enqueue(s, &more, 0, 0), 0);
  CHECK_EQ_INT(s->m->commit(s), CODA_ELIMIT);
  CHECK_EQ_INT(state_of(s, id), CODA_ENOTFOUND);
  CHECK_EQ_INT(state_of(s, 2), CODA_STATE_RUNNING);
  /* The outcome alone is written. */
  CHECK_EQ_INT(finish(s, &done), 0);
  CHECK_EQ_INT(state_of(s, 2), CODA_STATE_SUCCEEDED);
  s->m->close(s);
  tc_redis_remove(&small);
}

/* Review #2: a commit whose reply is lost (the server stopped answering
 * after the batch was sent) is CODA__STORE_UNKNOWN; once the server ran it,
 * the same batch sent again finds its own tasks (no key: the id alone
 * would look taken) and counts them as written, not as duplicates. */
TEST(redis_a_batch_sent_again_after_an_unknown_outcome_knows_its_own_tasks) {
  tc_redis own;
  REQUIRE(tc_redis_start(&own, NULL) == 0);
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&own, "/0?prefix=again", &s, err, sizeof err) == 0);
  REQUIRE(add(s, 1, NULL, T0, 0) == 0); /* the links are up */
  kill(own.pid, SIGSTOP);
  coda__task_record r[3] = {task(10, NULL, T0), task(11, NULL, T0), task(12, "k12", T0)};
  REQUIRE(s->m->begin(s) == 0);
  for (int i = 0; i < 3; i++)
    REQUIRE(s->m->enqueue(s, &r[i], 1, T0 + LEASE_MS) == 0);
  CHECK_EQ_INT(s->m->commit(s), CODA__STORE_UNKNOWN);
  kill(own.pid, SIGCONT);
  CHECK_EQ_INT(state_once_up(s, 11), CODA_STATE_RUNNING); /* it did run */
  int rc = CODA_ESTORE;
  uint64_t deadline = tc_now_ms() + 10000;
  do { /* the store thread's link waits for its backoff */
    REQUIRE(s->m->begin(s) == 0);
    for (int i = 0; i < 3; i++)
      REQUIRE(s->m->enqueue(s, &r[i], 1, T0 + LEASE_MS) == 0);
    if ((rc = s->m->commit(s)) != 0)
      tc_sleep_ms(20);
  } while (rc == CODA_ESTORE && strstr(s->m->errmsg(s), "next try") &&
           tc_now_ms() < deadline);
  CHECK_EQ_INT(rc, 0);
  if (rc)
    fprintf(stderr, "  %s\n", s->m->errmsg(s));
  uint64_t dups[4] = {0};
  CHECK_EQ_INT(s->m->duplicates(s, dups, 4), 1); /* a key makes it a duplicate */
  CHECK_EQ_INT(dups[0], 12);
  /* Another process's batch with the same key is a duplicate, as ever. */
  coda__store *b;
  REQUIRE(open_redis(&own, "/0?prefix=again", &b, err, sizeof err) == 0);
  CHECK_EQ_INT(add(b, 12, "k12", T0, 0), CODA_EEXIST);
  CHECK_EQ_INT(add(b, 11, NULL, T0, 0), CODA_ESTORE); /* not its batch: taken */
  b->m->close(b);
  s->m->close(s);
  tc_redis_remove(&own);
}

/* Review #12: a batch that failed with a queue new to Redis must not leave
 * it in the cache of known queues, or the cache stays above SCARD and every
 * claim reads the queues again (SMEMBERS) before claiming once more. */
TEST(redis_a_failed_batch_leaves_the_known_queues_as_they_were) {
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&redis, "/0?prefix=knownq", &s, err, sizeof err) == 0);
  REQUIRE(add(s, 1, "k1", T0, 0) == 0);
  REQUIRE(s->m->begin(s) == 0);
  coda__task_record a = task(2, NULL, T0), taken = task(1, "other", T0);
  a.queue = "fresh";
  REQUIRE(s->m->enqueue(s, &a, 0, 0) == 0);
  REQUIRE(s->m->enqueue(s, &taken, 0, 0) == 0);
  CHECK_EQ_INT(s->m->commit(s), CODA_ESTORE); /* id 1 taken by another key */
  CHECK(strstr(s->m->errmsg(s), "taken by another key") != NULL);
  long long before = command_calls("smembers");
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(claim_count(s, T0, 10), i == 0 ? 1 : 0);
  CHECK_EQ_INT(command_calls("smembers") - before, 0);
  /* The queue written by a batch that worked is known at once. */
  REQUIRE(add_in(s, 3, "send_mail", "fresh", T0) == 0);
  before = command_calls("smembers");
  CHECK_EQ_INT(claim_count(s, T0, 10), 1);
  CHECK_EQ_INT(command_calls("smembers") - before, 0);
  s->m->close(s);
}

/* The clients named `name` in CLIENT LIST, and the last command of the
 * last one in cmd. */
static int clients_named(const char *name, char *cmd, size_t cap) {
  redisReply *r = tc_redis_cmd(&redis, "CLIENT LIST");
  int n = 0;
  char needle[64];
  snprintf(needle, sizeof needle, " name=%s ", name);
  cmd[0] = '\0';
  for (const char *p = r && r->type == REDIS_REPLY_STRING ? r->str : "";
       (p = strstr(p, needle)); p++) {
    n++;
    const char *c = strstr(p, " cmd=");
    if (c)
      snprintf(cmd, cap, "%.*s", (int)strcspn(c + 5, " \n"), c + 5);
  }
  if (r)
    freeReplyObject(r);
  return n;
}

/* Review #7: renew() has a connection of its own, so that a find() paging
 * through many tasks or a slow get() never holds up the heartbeat. */
TEST(redis_renew_has_its_own_connection) {
  coda__store *s;
  char err[512], cmd[64];
  REQUIRE(open_redis(&redis, "/0?prefix=renewlink", &s, err, sizeof err) == 0);
  REQUIRE(add(s, 1, NULL, T0, 1) == 0);
  CHECK_EQ_INT(clients_named("coda-renew", cmd, sizeof cmd), 1);
  coda__lease l = {1, 1};
  unsigned char lost = 9;
  CHECK_EQ_INT(s->m->renew(s, &l, 1, T0 + 2 * LEASE_MS, &lost), 0);
  CHECK_EQ_INT(lost, 0);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_RUNNING); /* on coda-side */
  CHECK_EQ_INT(clients_named("coda-renew", cmd, sizeof cmd), 1);
  CHECK_EQ_STR(cmd, "evalsha");
  s->m->close(s);
}

typedef struct side_call {
  coda__store *s;
  int rc;
  char msg[512];
} side_call;

static void get_on_another_thread(void *arg) {
  side_call *c = arg;
  coda_task_info *info = NULL;
  c->rc = c->s->m->get(c->s, 1, &info);
  coda_task_info_free(info);
  snprintf(c->msg, sizeof c->msg, "%s", c->s->m->errmsg(c->s));
}

/* Review #13: each thread reads the message of its own failure: a get()
 * failing on another thread does not replace the store thread's. */
TEST(redis_errmsg_is_the_callers_own_failure) {
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&redis, "/0?prefix=errs", &s, err, sizeof err) == 0);
  REQUIRE(add(s, 1, "k1", T0, 0) == 0);
  CHECK_EQ_INT(add(s, 1, "k2", T0, 0), CODA_ESTORE);
  CHECK(strstr(s->m->errmsg(s), "taken by another key") != NULL);
  redisReply *r = tc_redis_cmd(&redis, "CLIENT KILL TYPE normal SKIPME yes");
  if (r)
    freeReplyObject(r); /* every link of the store is closed */
  side_call c = {.s = s};
  uv_thread_t t;
  uv_thread_create(&t, get_on_another_thread, &c);
  uv_thread_join(&t);
  CHECK(c.rc == CODA_ESTORE && strstr(c.msg, "taken by another key") == NULL);
  CHECK(strstr(s->m->errmsg(s), "taken by another key") != NULL);
  s->m->close(s);
}

/* Review #13: an outcome is succeeded, failed or dead; queued would leave
 * the task in no waiting set. And purge removes a finished task whose
 * fields are broken rather than keep it the oldest candidate forever. */
TEST(redis_refuses_a_queued_outcome_and_purges_a_broken_task) {
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&redis, "/0?prefix=broken", &s, err, sizeof err) == 0);
  REQUIRE(add(s, 1, NULL, T0, 1) == 0);
  REQUIRE(add(s, 2, NULL, T0, 1) == 0);
  REQUIRE(s->m->begin(s) == 0);
  coda__task_record q = outcome(1, 1, CODA_STATE_QUEUED, T0 + 10);
  CHECK_EQ_INT(s->m->finish(s, &q), CODA_EINVAL);
  s->m->rollback(s);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_RUNNING);
  REQUIRE(finish_as(s, 1, 1, CODA_STATE_SUCCEEDED, T0 + 10) == 0);
  REQUIRE(finish_as(s, 2, 1, CODA_STATE_SUCCEEDED, T0 + 20) == 0);
  redisReply *r = tc_redis_cmd(&redis, "HDEL {broken}:name 0000000000000001");
  CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
  if (r)
    freeReplyObject(r);
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(s->m->purge(s, T0 + 1000, 10), 2);
  CHECK_EQ_INT(s->m->commit(s), 0);
  CHECK_EQ_INT(state_of(s, 1), CODA_ENOTFOUND);
  CHECK_EQ_INT(state_of(s, 2), CODA_ENOTFOUND);
  r = tc_redis_cmd(&redis, "ZCARD {broken}:done");
  CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
  if (r)
    freeReplyObject(r);
  s->m->close(s);
}

/* The server's clock in seconds (TIME), or -1. */
static long long server_seconds(const tc_redis *r) {
  redisReply *t = tc_redis_cmd(r, "TIME");
  long long v = t && t->type == REDIS_REPLY_ARRAY && t->elements == 2
                    ? atoll(t->element[0]->str)
                    : -1;
  if (t)
    freeReplyObject(t);
  return v;
}

/* Review #5 (b): a Redis that comes back empty does not hand out the ids
 * of before again: the counter is floored by the server's clock. */
TEST(redis_ids_are_not_handed_out_again_by_a_redis_that_lost_them) {
  tc_redis own;
  REQUIRE(tc_redis_start(&own, NULL) == 0); /* no persistence */
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&own, NULL, &s, err, sizeof err) == 0);
  uint64_t a = 0, b = 0;
  long long at = server_seconds(&own);
  REQUIRE(s->m->reserve_ids(s, 1000, &a) == 0);
  tc_redis_kill(&own);
  REQUIRE(tc_redis_restart(&own) == 0);
  uint64_t deadline = tc_now_ms() + 5000; /* the next second of its clock */
  while (server_seconds(&own) <= at && tc_now_ms() < deadline)
    tc_sleep_ms(20);
  int rc;
  deadline = tc_now_ms() + 10000;
  while ((rc = s->m->reserve_ids(s, 1000, &b)) != 0 && tc_now_ms() < deadline)
    tc_sleep_ms(20); /* the link comes back after its backoff */
  CHECK_EQ_INT(rc, 0);
  CHECK(a >= 1 && b >= a + 1000);
  CHECK(a < (UINT64_C(1) << 53) && b < (UINT64_C(1) << 53));
  s->m->close(s);
  tc_redis_remove(&own);
}

/* Two processes' stores on one Redis expire the same leases at once:
 * each task goes to exactly one. */
typedef struct expirer {
  coda__store *s;
  claimed got;
  uint64_t ids[64];
  int n, rc;
} expirer;

static void on_expired(void *user, const coda__task_record *r) {
  expirer *e = user;
  if (e->n < 64)
    e->ids[e->n] = r->id;
  e->n++;
}

static void expire_all(void *arg) {
  expirer *e = arg;
  for (;;) {
    int rc = e->s->m->begin(e->s);
    int n = rc ? rc : e->s->m->expire(e->s, T0 + LEASE_MS + 1, T0 + 10 * LEASE_MS, 2, on_expired, e);
    rc = n < 0 ? n : e->s->m->commit(e->s);
    if (rc || n <= 0) {
      e->rc = rc ? rc : n;
      return;
    }
  }
}

TEST(redis_two_stores_never_expire_the_same_task) {
  coda__store *a, *b;
  char err[512];
  REQUIRE(open_redis(&redis, "/0?prefix=shared", &a, err, sizeof err) == 0);
  REQUIRE(open_redis(&redis, "/0?prefix=shared", &b, err, sizeof err) == 0);
  for (uint64_t id = 1; id <= 40; id++)
    REQUIRE(add(a, id, NULL, T0, 0) == 0);
  CHECK_EQ_INT(claim_count(b, T0, 100), 40);
  expirer ea = {.s = a}, eb = {.s = b};
  uv_thread_t ta, tb;
  uv_thread_create(&ta, expire_all, &ea);
  uv_thread_create(&tb, expire_all, &eb);
  uv_thread_join(&ta);
  uv_thread_join(&tb);
  CHECK(ea.rc == 0 && eb.rc == 0);
  CHECK_EQ_INT(ea.n + eb.n, 40);
  for (int i = 0; i < ea.n && i < 64; i++)
    for (int j = 0; j < eb.n && j < 64; j++)
      CHECK(ea.ids[i] != eb.ids[j]);
  a->m->close(a);
  b->m->close(b);
}

TEST(redis_duplicates_are_reported_after_commit) {
  coda__store *s;
  char err[512];
  REQUIRE(open_redis(&redis, NULL, &s, err, sizeof err) == 0);
  REQUIRE(add(s, 5, "k5", T0, 0) == 0);
  REQUIRE(s->m->begin(s) == 0);
  coda__task_record a = task(5, "k5", T0), b = task(6, "k6", T0), c = task(6, "k6", T0);
  CHECK_EQ_INT(s->m->enqueue(s, &a, 1, T0 + LEASE_MS), 0); /* known only at commit */
  CHECK_EQ_INT(s->m->enqueue(s, &b, 0, 0), 0);
  CHECK_EQ_INT(s->m->enqueue(s, &c, 0, 0), CODA_EEXIST); /* within the batch */
  CHECK_EQ_INT(s->m->commit(s), 0);
  uint64_t dups[4];
  CHECK_EQ_INT(s->m->duplicates(s, dups, 4), 1);
  CHECK_EQ_INT(dups[0], 5);
  CHECK_EQ_INT(state_of(s, 5), CODA_STATE_QUEUED); /* the first write stands */
  CHECK_EQ_INT(state_of(s, 6), CODA_STATE_QUEUED);
  s->m->close(s);
}

/* A queue created by another process after this one opened: claims and
 * retries in it still reach the right keys (the commit script refuses a
 * queue it was not given, before writing, and the store reads the queues
 * again). */
TEST(redis_a_queue_made_elsewhere_is_learnt) {
  coda__store *a, *b;
  char err[512];
  REQUIRE(open_redis(&redis, "/0?prefix=learn", &b, err, sizeof err) == 0);
  REQUIRE(open_redis(&redis, "/0?prefix=learn", &a, err, sizeof err) == 0);
  REQUIRE(add_in(a, 1, "x", "later", T0) == 0);
  REQUIRE(add_in(a, 2, "x", "other", T0) == 0);
  const char *q[] = {"later"};
  REQUIRE(b->m->serve(b, q, 1) == 0);
  claimed c = {0};
  REQUIRE(claim(b, T0, 10, &c) == 1);
  CHECK_EQ_INT(finish_leased(b, 1, c.t[0].lease, CODA_STATE_FAILED, T0 + 10), 0);
  CHECK_EQ_INT(state_of(b, 1), CODA_STATE_FAILED);
  claimed d = {0};
  CHECK_EQ_INT(claim(b, T0 + 110, 10, &d), 1); /* back in its queue */
  CHECK_EQ_INT(d.t[0].id, 1);
  CHECK_EQ_INT(d.t[0].attempts, 2);
  a->m->close(a);
  b->m->close(b);
}

/* ---- version 3: operators' actions and views -------------------------------- */

static int lacks_v3(coda__store *s) {
  const coda__store_methods *m = s->m;
  int ok = m->version >= 3 && m->retry && m->cancel && m->remove && m->retry_all &&
           m->remove_all && m->queue_stats && m->node_beat && m->nodes;
  if (!ok) {
    fprintf(stderr, "  FAIL: the %s store lacks a version 3 member\n", m->name);
    test__failures_in_case++;
  }
  return !ok;
}

static void on_each_v3_store(store_check check) {
  for (int which = 0; which < NSTORES; which++) {
    coda__store *s;
    int before = test__failures_in_case;
    if (which == 2 && !redis_up) {
      fprintf(stderr, "  FAIL: no redis-server for the redis store\n");
      test__failures_in_case++;
      continue;
    }
    CHECK_EQ_INT(open_store(which, &s), 0);
    if (test__failures_in_case != before)
      continue;
    if (!lacks_v3(s)) {
      alarm(60);
      check(s);
      alarm(0);
    }
    const char *name = s->m->name;
    s->m->close(s);
    if (test__failures_in_case != before)
      fprintf(stderr, "  ^ on the %s store\n", name);
  }
}

/* A task in `queue`, claimed at once (owned) or not. */
static int add_q(coda__store *s, uint64_t id, const char *queue, int64_t run_at,
                 int owned) {
  coda__task_record r = task(id, NULL, run_at);
  r.queue = queue;
  r.max_attempts = 1;
  return enqueue_record(s, &r, owned);
}

/* Claims task id (due at T0) and writes its attempt's outcome. */
static int run_once(coda__store *s, uint64_t id, coda_task_state state, int attempt,
                    const char *error) {
  claimed c = {0};
  if (claim(s, T0 + 1000 * attempt, 10, &c) < 1 || !lease_of(&c, id))
    return -1;
  coda__task_record r = outcome(id, lease_of(&c, id), state, T0 + 1000 * attempt + 10);
  r.attempts = attempt;
  r.error = error;
  r.run_at = state == CODA_STATE_FAILED ? T0 : 0;
  return finish(s, &r);
}

static void check_v3_request_round_trips(coda__store *s) {
  coda__task_record r = task(1, NULL, T0);
  r.trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  r.origin = "POST /reports/{id}";
  r.request_id = 77;
  REQUIRE(enqueue_record(s, &r, 0) == 0);
  REQUIRE(add(s, 2, NULL, T0, 0) == 0);
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 1, &info) == 0);
  CHECK_EQ_STR(info->trace, r.trace);
  CHECK_EQ_STR(info->origin, "POST /reports/{id}");
  CHECK_EQ_INT(info->request_id, 77);
  CHECK_EQ_STR(info->queue, "default");
  CHECK_EQ_INT(info->cancel_requested, 0);
  CHECK_EQ_INT(info->n_errors, 0);
  CHECK(info->args_len == sizeof args_bytes &&
        memcmp(info->args, args_bytes, sizeof args_bytes) == 0);
  coda_task_info_free(info);
  REQUIRE(s->m->get(s, 2, &info) == 0);
  CHECK(info->trace == NULL && info->origin == NULL && info->request_id == 0);
  coda_task_info_free(info);
}

static void check_v3_retry(coda__store *s) {
  REQUIRE(add_q(s, 1, "a", T0, 0) == 0);
  REQUIRE(run_once(s, 1, CODA_STATE_DEAD, 1, "boom") == 0);
  CHECK_EQ_INT(s->m->retry(s, 99, T0 + 5000), CODA_ENOTFOUND);
  CHECK_EQ_INT(s->m->retry(s, 1, T0 + 5000), 0);
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 1, &info) == 0);
  CHECK_EQ_INT(info->state, CODA_STATE_QUEUED);
  CHECK_EQ_INT(info->run_at, T0 + 5000);
  CHECK_EQ_INT(info->max_attempts, 2); /* it had used its one attempt */
  CHECK_EQ_INT(info->n_errors, 1);
  coda_task_info_free(info);
  CHECK_EQ_INT(s->m->retry(s, 1, T0 + 5000), CODA_ESTATE); /* queued and due */
  CHECK_EQ_INT(claim_count(s, T0 + 4999, 10), 0);
  REQUIRE(run_once(s, 1, CODA_STATE_SUCCEEDED, 5, NULL) == 0);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_SUCCEEDED);
  CHECK_EQ_INT(s->m->retry(s, 1, T0 + 9000), CODA_ESTATE);
  /* Scheduled for later: due now. */
  REQUIRE(add_q(s, 2, "a", T0 + 100000, 0) == 0);
  CHECK_EQ_INT(s->m->retry(s, 2, T0 + 6000), 0);
  CHECK_EQ_INT(claim_count(s, T0 + 6000, 10), 1);
  CHECK_EQ_INT(s->m->retry(s, 2, T0 + 6000), CODA_ESTATE); /* running */
}

static void check_v3_cancel(coda__store *s) {
  REQUIRE(add_q(s, 1, "a", T0 + 100000, 0) == 0); /* scheduled */
  CHECK_EQ_INT(s->m->cancel(s, 1, T0 + 50), 0);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_CANCELLED);
  CHECK_EQ_INT(claim_count(s, T0 + 1000000, 10), 0); /* never runs */
  CHECK_EQ_INT(s->m->cancel(s, 1, T0 + 60), CODA_ESTATE);
  CHECK_EQ_INT(s->m->cancel(s, 98, T0 + 60), CODA_ENOTFOUND);
  /* Running: requested, seen by renew, and its failure is its end. */
  REQUIRE(add(s, 2, NULL, T0, 1) == 0); /* owned: running, token 1 */
  CHECK_EQ_INT(s->m->cancel(s, 2, T0 + 70), 1);
  CHECK_EQ_INT(state_of(s, 2), CODA_STATE_RUNNING);
  coda__lease l[2] = {{2, 1}, {2, 7}};
  unsigned char lost[2] = {9, 9};
  REQUIRE(s->m->renew(s, l, 2, T0 + LEASE_MS * 2, lost) == 0);
  CHECK_EQ_INT(lost[0], 2);
  CHECK_EQ_INT(lost[1], 1);
  coda__task_record r = outcome(2, 1, CODA_STATE_FAILED, T0 + 80);
  r.run_at = T0 + 500;
  r.error = "stopped";
  REQUIRE(finish(s, &r) == 0);
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 2, &info) == 0);
  CHECK_EQ_INT(info->state, CODA_STATE_CANCELLED);
  CHECK_EQ_INT(info->cancel_requested, 1);
  coda_task_info_free(info);
  CHECK_EQ_INT(claim_count(s, T0 + 1000000, 10), 0);
  /* Cancelled tasks are finished ones: purged past their retention. */
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(s->m->purge(s, T0 + 1000, 100), 2);
  REQUIRE(s->m->commit(s) == 0);
  /* Given back before it began (release), a task asked to stop ends. */
  REQUIRE(add(s, 4, NULL, T0, 1) == 0);
  CHECK_EQ_INT(s->m->cancel(s, 4, T0 + 70), 1);
  coda__lease given = {4, 1};
  REQUIRE(s->m->release(s, &given, 1) == 0);
  CHECK_EQ_INT(state_of(s, 4), CODA_STATE_CANCELLED);
  CHECK_EQ_INT(claim_count(s, T0 + 1000000, 10), 0);
  /* Retried, a cancelled task runs, its request forgotten. */
  REQUIRE(add_q(s, 3, "a", T0 + 100000, 0) == 0);
  CHECK_EQ_INT(s->m->cancel(s, 3, T0 + 50), 0);
  CHECK_EQ_INT(s->m->retry(s, 3, T0 + 90), 0);
  CHECK_EQ_INT(claim_count(s, T0 + 90, 10), 1);
}

static void check_v3_remove(coda__store *s) {
  REQUIRE(add_q(s, 1, "a", T0, 0) == 0);
  REQUIRE(add(s, 2, NULL, T0, 1) == 0); /* running */
  CHECK_EQ_INT(s->m->remove(s, 2), CODA_ESTATE);
  CHECK_EQ_INT(s->m->remove(s, 1), 0);
  CHECK_EQ_INT(state_of(s, 1), CODA_ENOTFOUND);
  CHECK_EQ_INT(s->m->remove(s, 1), CODA_ENOTFOUND);
  CHECK_EQ_INT(claim_count(s, T0 + 1000, 10), 0);
  /* Its id is free again. */
  CHECK_EQ_INT(add_q(s, 1, "a", T0, 0), 0);
}

static void check_v3_bulk(coda__store *s) {
  for (uint64_t id = 1; id <= 3; id++) {
    REQUIRE(add_q(s, id, id < 3 ? "a" : "b", T0, 0) == 0);
    REQUIRE(run_once(s, id, CODA_STATE_DEAD, 1, "x") == 0);
  }
  REQUIRE(add_q(s, 4, "a", T0 + 100000, 0) == 0); /* queued: left alone */
  CHECK_EQ_INT(s->m->retry_all(s, CODA_STATE_DEAD, "a", T0 + 2000), 2);
  CHECK_EQ_INT(state_of(s, 1), CODA_STATE_QUEUED);
  CHECK_EQ_INT(state_of(s, 2), CODA_STATE_QUEUED);
  CHECK_EQ_INT(state_of(s, 3), CODA_STATE_DEAD);
  CHECK_EQ_INT(s->m->remove_all(s, CODA_STATE_DEAD, NULL), 1);
  CHECK_EQ_INT(state_of(s, 3), CODA_ENOTFOUND);
  CHECK_EQ_INT(s->m->remove_all(s, CODA_STATE_QUEUED, "a"), 3);
  CHECK_EQ_INT(state_of(s, 4), CODA_ENOTFOUND);
}

/* Leases of many claimed tasks, by id - BULK_FIRST. */
#define BULK_N 1300 /* over two of SQLite's transactions of 500 and five of Redis's chunks */
#define BULK_FIRST 10000
typedef struct many_claims {
  uint64_t lease[BULK_N];
  int n;
} many_claims;

static void on_many(void *user, const coda__task_record *r) {
  many_claims *m = user;
  if (r->id >= BULK_FIRST && r->id < BULK_FIRST + BULK_N)
    m->lease[r->id - BULK_FIRST] = r->lease;
  m->n++;
}

/* The bulk forms over more tasks than one of their steps takes (SQLite
 * writes them 500 per transaction, Redis 256 per pipeline): every one is
 * done, once, and only those of the state and queue asked. */
static void check_v3_bulk_many(coda__store *s) {
  REQUIRE(s->m->begin(s) == 0);
  for (uint64_t i = 0; i < BULK_N; i++) {
    coda__task_record r = task(BULK_FIRST + i, NULL, T0);
    r.queue = i % 3 == 2 ? "other" : "main"; /* 433 of them elsewhere */
    r.max_attempts = 1;
    REQUIRE(s->m->enqueue(s, &r, 0, 0) == 0);
  }
  REQUIRE(s->m->commit(s) == 0);
  static many_claims m;
  memset(&m, 0, sizeof m);
  REQUIRE(s->m->begin(s) == 0);
  REQUIRE(s->m->claim(s, T0, T0 + LEASE_MS, BULK_N, on_many, &m) == BULK_N);
  REQUIRE(s->m->commit(s) == 0);
  REQUIRE(s->m->begin(s) == 0);
  for (uint64_t i = 0; i < BULK_N; i++) {
    coda__task_record r = outcome(BULK_FIRST + i, m.lease[i], CODA_STATE_DEAD, T0 + 10);
    r.error = "x";
    REQUIRE(s->m->finish(s, &r) == 0);
  }
  REQUIRE(s->m->commit(s) == 0);
  long in_main = BULK_N - BULK_N / 3;
  CHECK_EQ_INT(s->m->retry_all(s, CODA_STATE_DEAD, "main", T0 + 2000), in_main);
  CHECK_EQ_INT(s->m->retry_all(s, CODA_STATE_DEAD, "main", T0 + 2000), 0);
  int wrong = 0;
  for (uint64_t i = 0; i < BULK_N; i++)
    wrong += state_of(s, BULK_FIRST + i) !=
             (i % 3 == 2 ? CODA_STATE_DEAD : CODA_STATE_QUEUED);
  CHECK_EQ_INT(wrong, 0);
  CHECK_EQ_INT(s->m->remove_all(s, CODA_STATE_QUEUED, NULL), in_main);
  CHECK_EQ_INT(s->m->remove_all(s, CODA_STATE_DEAD, NULL), BULK_N / 3);
  wrong = 0;
  for (uint64_t i = 0; i < BULK_N; i++)
    wrong += state_of(s, BULK_FIRST + i) != CODA_ENOTFOUND;
  CHECK_EQ_INT(wrong, 0);
}

typedef struct stats_seen {
  coda_queue_info q[4];
  char names[4][65];
  int n;
} stats_seen;

static int on_stats(const coda_queue_info *q, void *user) {
  stats_seen *st = user;
  if (st->n < 4) {
    st->q[st->n] = *q;
    snprintf(st->names[st->n], sizeof st->names[0], "%s", q->name);
    st->q[st->n].name = st->names[st->n];
  }
  st->n++;
  return 0;
}

static void check_v3_history_and_stats(coda__store *s) {
  /* Task 1: fails, then dies: two errors in its history. */
  coda__task_record r = task(1, NULL, T0);
  r.queue = "a";
  r.max_attempts = 2;
  REQUIRE(enqueue_record(s, &r, 0) == 0);
  REQUIRE(run_once(s, 1, CODA_STATE_FAILED, 1, "first <b>") == 0);
  REQUIRE(run_once(s, 1, CODA_STATE_DEAD, 2, "second") == 0);
  coda_task_info *info = NULL;
  REQUIRE(s->m->get(s, 1, &info) == 0);
  CHECK_EQ_INT(info->n_errors, 2);
  if (info->n_errors == 2) {
    CHECK_EQ_INT(info->errors[0].attempt, 1);
    CHECK_EQ_INT(info->errors[0].at, T0 + 1010);
    CHECK_EQ_STR(info->errors[0].error, "first <b>");
    CHECK_EQ_INT(info->errors[1].attempt, 2);
    CHECK_EQ_STR(info->errors[1].error, "second");
  }
  coda_task_info_free(info);
  /* Task 2 succeeds, 3 is due, 4 scheduled, 5 running; all in "a". */
  REQUIRE(add_q(s, 2, "a", T0, 0) == 0);
  REQUIRE(run_once(s, 2, CODA_STATE_SUCCEEDED, 3, NULL) == 0);
  REQUIRE(add_q(s, 3, "a", T0 + 100, 0) == 0);
  REQUIRE(add_q(s, 4, "a", T0 + 100000, 0) == 0);
  REQUIRE(add_q(s, 5, "a", T0, 1) == 0);
  REQUIRE(s->m->pause(s, "b", 1) == 0); /* known though empty */
  stats_seen st = {0};
  CHECK_EQ_INT(s->m->queue_stats(s, T0 + 5000, on_stats, &st), 2);
  REQUIRE(st.n == 2);
  CHECK_EQ_STR(st.names[0], "a");
  CHECK_EQ_STR(st.names[1], "b");
  const coda_queue_info *a = &st.q[0], *b = &st.q[1];
  CHECK_EQ_INT(a->counts[CODA_STATE_DEAD], 1);
  CHECK_EQ_INT(a->counts[CODA_STATE_SUCCEEDED], 1);
  CHECK_EQ_INT(a->counts[CODA_STATE_QUEUED], 2);
  CHECK_EQ_INT(a->counts[CODA_STATE_RUNNING], 1);
  CHECK_EQ_INT(a->scheduled, 1);
  CHECK_EQ_INT(a->oldest_due_at, T0 + 100);
  CHECK_EQ_INT(a->processed, 1);
  CHECK_EQ_INT(a->failed, 2);
  CHECK_EQ_INT(a->paused, 0);
  CHECK_EQ_INT(b->paused, 1);
  CHECK_EQ_INT(b->counts[CODA_STATE_QUEUED], 0);
  /* fn stops the walk. */
  CHECK_EQ_INT(s->m->remove(s, 3), 0);
  memset(&st, 0, sizeof st);
  CHECK_EQ_INT(s->m->queue_stats(s, T0 + 5000, on_stats, &st), 2);
  CHECK_EQ_INT(st.q[0].counts[CODA_STATE_QUEUED], 1);
  CHECK_EQ_INT(st.q[0].oldest_due_at, 0);
}

typedef struct nodes_seen {
  int n, pids;
  int64_t last_seen;
} nodes_seen;

static int on_node(const coda_node_info *n, void *user) {
  nodes_seen *ns = user;
  ns->n++;
  ns->pids += n->pid;
  if (strcmp(n->id, "h:1:5") == 0)
    ns->last_seen = n->last_seen;
  return 0;
}

static void check_v3_nodes(coda__store *s) {
  coda_node_info a = {.id = "h:1:5",
                      .host = "h",
                      .pid = 1,
                      .role = "server",
                      .queues = "",
                      .listen = "127.0.0.1:80",
                      .version = "0.1.0"};
  coda_node_info b = a;
  b.id = "h:2:6";
  b.pid = 2;
  b.role = "worker";
  /* The real clock: Redis expires the records by its own. */
  int64_t now = coda__unix_ms();
  REQUIRE(s->m->node_beat(s, &a, now, 60000) == 0);
  REQUIRE(s->m->node_beat(s, &b, now, 60000) == 0);
  REQUIRE(s->m->node_beat(s, &a, now + 5, 60000) == 0); /* replaced, not added */
  nodes_seen ns = {0};
  CHECK_EQ_INT(s->m->nodes(s, now + 10, on_node, &ns), 2);
  CHECK_EQ_INT(ns.pids, 3);
  CHECK_EQ_INT(ns.last_seen, now + 5);
  memset(&ns, 0, sizeof ns);
  CHECK_EQ_INT(s->m->nodes(s, now + 60006, on_node, &ns), 0); /* lapsed */
  REQUIRE(s->m->node_beat(s, &b, now + 10, 0) == 0);          /* withdrawn */
  memset(&ns, 0, sizeof ns);
  CHECK_EQ_INT(s->m->nodes(s, now + 20, on_node, &ns), 1);
  CHECK_EQ_INT(ns.pids, 1);
}

TEST(v3_the_request_that_added_a_task_comes_back) {
  on_each_v3_store(check_v3_request_round_trips);
}
TEST(v3_retry_runs_a_task_again_with_one_more_attempt) {
  on_each_v3_store(check_v3_retry);
}
TEST(v3_cancel_stops_waiting_tasks_and_asks_running_ones) {
  on_each_v3_store(check_v3_cancel);
}
TEST(v3_remove_deletes_any_task_but_a_running_one) { on_each_v3_store(check_v3_remove); }
TEST(v3_bulk_actions_keep_to_their_state_and_queue) { on_each_v3_store(check_v3_bulk); }
TEST(v3_bulk_actions_over_many_tasks_do_each_once) { on_each_v3_store(check_v3_bulk_many); }
TEST(v3_error_history_and_queue_stats) { on_each_v3_store(check_v3_history_and_stats); }
TEST(v3_nodes_beat_lapse_and_withdraw) { on_each_v3_store(check_v3_nodes); }

/* ---- main ------------------------------------------------------------------- */

int main(void) {
  if (!mkdtemp(store_dir)) {
    perror("mkdtemp");
    return 1;
  }
  redis_up = tc_redis_start(&redis, NULL) == 0;
  static const test__case cases[] = {
      TEST_CASE(enqueue_then_get_round_trips_every_field),
      TEST_CASE(enqueue_of_a_taken_id_is_a_duplicate_only_with_the_same_key),
      TEST_CASE(rollback_forgets_the_whole_batch),
      TEST_CASE(sqlite_per_task_statements_build_no_temporary_tables),
      TEST_CASE(sqlite_renewals_are_not_starved_by_back_to_back_batches),
      TEST_CASE(sqlite_a_failed_lazy_commit_leaves_later_commits_fsynced),
      TEST_CASE(claim_takes_only_due_unowned_tasks),
      TEST_CASE(claim_respects_max_and_leases),
      TEST_CASE(finish_records_the_outcome),
      TEST_CASE(next_due_is_the_earliest_waiting_run_at),
      TEST_CASE(reserved_id_blocks_never_overlap),
      TEST_CASE(list_pages_by_id_and_lets_its_callback_read),
      TEST_CASE(purge_forgets_old_finished_tasks_only),
      TEST_CASE(purge_is_not_held_back_by_a_younger_task),
      TEST_CASE(progress_is_stored_and_read_back),
      TEST_CASE(v2_tokens_increase_per_claim),
      TEST_CASE(v2_a_stale_token_is_refused_and_changes_nothing),
      TEST_CASE(v2_renew_extends_live_claims_only),
      TEST_CASE(v2_expire_takes_each_expired_lease_once),
      TEST_CASE(v2_serve_and_pause_limit_claims),
      TEST_CASE(v2_find_filters_by_state_queue_and_name_with_paging),
      TEST_CASE(v2_an_owned_enqueue_is_a_running_claim),
      TEST_CASE(v2_a_mixed_batch_applies_in_order),
      TEST_CASE(v2_token_zero_is_refused_like_any_stale_token),
      TEST_CASE(v2_an_outcome_rolled_back_is_written_again),
      TEST_CASE(v2_paused_lists_the_paused_queues),
      TEST_CASE(v2_release_gives_back_claims_whose_attempt_never_began),
      TEST_CASE(redis_uri_errors_are_clear),
      TEST_CASE(redis_scripts_come_back_after_noscript),
      TEST_CASE(redis_refuses_a_policy_that_evicts),
      TEST_CASE(redis_a_batch_is_one_script_call),
      TEST_CASE(redis_down_is_an_error_in_bounded_time_and_back_works_again),
      TEST_CASE(redis_out_of_memory_refuses_the_whole_batch),
      TEST_CASE(redis_replicas_must_acknowledge_new_tasks),
      TEST_CASE(redis_a_huge_batch_commits_or_fails_cleanly),
      TEST_CASE(redis_over_maxmemory_renews_and_refuses_adds_behind_an_outcome),
      TEST_CASE(redis_a_batch_sent_again_after_an_unknown_outcome_knows_its_own_tasks),
      TEST_CASE(redis_a_failed_batch_leaves_the_known_queues_as_they_were),
      TEST_CASE(redis_renew_has_its_own_connection),
      TEST_CASE(redis_errmsg_is_the_callers_own_failure),
      TEST_CASE(redis_refuses_a_queued_outcome_and_purges_a_broken_task),
      TEST_CASE(redis_ids_are_not_handed_out_again_by_a_redis_that_lost_them),
      TEST_CASE(redis_two_stores_never_expire_the_same_task),
      TEST_CASE(redis_duplicates_are_reported_after_commit),
      TEST_CASE(redis_a_queue_made_elsewhere_is_learnt),
      TEST_CASE(v3_the_request_that_added_a_task_comes_back),
      TEST_CASE(v3_retry_runs_a_task_again_with_one_more_attempt),
      TEST_CASE(v3_cancel_stops_waiting_tasks_and_asks_running_ones),
      TEST_CASE(v3_remove_deletes_any_task_but_a_running_one),
      TEST_CASE(v3_bulk_actions_keep_to_their_state_and_queue),
      TEST_CASE(v3_bulk_actions_over_many_tasks_do_each_once),
      TEST_CASE(v3_error_history_and_queue_stats),
      TEST_CASE(v3_nodes_beat_lapse_and_withdraw),
  };
  int rc = test__run("store", cases, sizeof cases / sizeof cases[0]);
  tc_remove_tree(store_dir);
  tc_redis_remove(&redis);
  return rc;
}
