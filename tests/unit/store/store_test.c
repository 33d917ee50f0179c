/*
 * store_test.c - the contract of store.h, checked the same way on every
 * store through its vtable: the memory store, and the SQLite store on a
 * file in a mkdtemp() directory that main() removes at the end.
 *
 * Each TEST hands one check function to on_each_store(), which opens a
 * fresh store per URI, runs the check, closes the store, and names the
 * store under any failure the check printed. A check only sees the vtable,
 * drives it as the engine does (every write in a begin .. commit batch),
 * and uses fixed times, never the clock. A SIGALRM ends the program if a
 * check hangs (a list callback that deadlocks on get(), say).
 */
#include "harness.h"
#include "store/store.h"
#include "test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define T0 INT64_C(1700000000000) /* "now", in unix ms */
#define LEASE_MS 60000
#define MAX_SEEN 16

static char store_dir[] = "/tmp/coda-store-test-XXXXXX";

/* ---- the stores ------------------------------------------------------------ */

typedef void (*store_check)(coda__store *s);

static int open_store(int which, coda__store **s) {
  static int files;
  char uri[256], err[256] = "";
  if (which == 0)
    snprintf(uri, sizeof uri, "memory");
  else
    snprintf(uri, sizeof uri, "sqlite:%s/store-%d.db", store_dir, ++files);
  int rc = coda__store_open(uri, 0, s, err, sizeof err);
  if (rc != 0)
    fprintf(stderr, "  cannot open %s: %s (%s)\n", uri, err, coda_strerror(rc));
  return rc;
}

static void on_each_store(store_check check) {
  for (int which = 0; which < 2; which++) {
    coda__store *s;
    int before = test__failures_in_case;
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

static int enqueue_record(coda__store *s, const coda__task_record *r, int owned) {
  int rc = s->m->begin(s);
  if (rc != 0)
    return rc;
  rc = s->m->enqueue(s, r, owned, owned ? T0 + LEASE_MS : 0);
  if (rc == 0)
    return s->m->commit(s);
  s->m->rollback(s);
  return rc;
}

/* A task that is not claimed (owned 0) or is claimed by this process. */
static int add(coda__store *s, uint64_t id, const char *key, int64_t run_at, int owned) {
  coda__task_record r = task(id, key, run_at);
  return enqueue_record(s, &r, owned);
}

static coda__task_record outcome(uint64_t id, coda_task_state state,
                                 int64_t finished_at) {
  return (coda__task_record){.id = id,
                             .state = state,
                             .attempts = 1,
                             .run_at = T0,
                             .started_at = finished_at - 5,
                             .finished_at = finished_at};
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

static int finish_as(coda__store *s, uint64_t id, coda_task_state state, int64_t at) {
  coda__task_record r = outcome(id, state, at);
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
                     .has_key = r->key != NULL};
    copy_text(t->name, sizeof t->name, r->name);
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
  CHECK(s->m->errmsg(s)[0] != '\0');
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
  REQUIRE(claim_count(s, T0, 10) == 1);
  coda__task_record r = outcome(1, CODA_STATE_SUCCEEDED, T0 + 20);
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
  REQUIRE(claim_count(s, T0, 10) == 1);
  coda__task_record r = outcome(1, CODA_STATE_FAILED, T0 + 20);
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
  r = outcome(1, CODA_STATE_SUCCEEDED, T0 + 600);
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
  REQUIRE(claim_count(s, T0, 10) == 1);
  coda__task_record r = outcome(1, CODA_STATE_DEAD, T0 + 20);
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
  REQUIRE(claim_count(s, T0 + 300, 10) == 1); /* task 2 */
  CHECK_EQ_INT(s->m->next_due(s), T0 + 500);
  REQUIRE(claim_count(s, T0 + 500, 10) == 1); /* task 1 */
  CHECK_EQ_INT(s->m->next_due(s), 0);
  coda__task_record r = outcome(1, CODA_STATE_FAILED, T0 + 600);
  r.run_at = T0 + 900;
  REQUIRE(finish(s, &r) == 0);
  REQUIRE(finish_as(s, 2, CODA_STATE_SUCCEEDED, T0 + 600) == 0);
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
  REQUIRE(add(s, 4, NULL, T0, 1) == 0);
  REQUIRE(finish_as(s, 4, CODA_STATE_SUCCEEDED, T0 + 10) == 0);
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
  if (rc == 0 && (rc = claim_count(s, T0, 10)) != 6)
    return rc < 0 ? rc : CODA_ESTORE;
  coda__task_record failed = outcome(6, CODA_STATE_FAILED, T0 + 10);
  failed.run_at = T0 + 100000;
  if ((rc = finish_as(s, 1, CODA_STATE_SUCCEEDED, T0 + 100)) ||
      (rc = finish_as(s, 2, CODA_STATE_DEAD, T0 + 50)) ||
      (rc = finish_as(s, 3, CODA_STATE_SUCCEEDED, T0 + 300)) ||
      (rc = finish_as(s, 4, CODA_STATE_SUCCEEDED, T0 + 2000)) || (rc = finish(s, &failed)))
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
  REQUIRE(claim_count(s, T0, 10) == 4);
  REQUIRE(finish_as(s, 4, CODA_STATE_SUCCEEDED, T0 + 2000) == 0);
  REQUIRE(finish_as(s, 2, CODA_STATE_DEAD, T0 + 50) == 0);
  REQUIRE(finish_as(s, 1, CODA_STATE_SUCCEEDED, T0 + 100) == 0);
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

/* ---- main ------------------------------------------------------------------- */

int main(void) {
  if (!mkdtemp(store_dir)) {
    perror("mkdtemp");
    return 1;
  }
  static const test__case cases[] = {
      TEST_CASE(enqueue_then_get_round_trips_every_field),
      TEST_CASE(enqueue_of_a_taken_id_is_a_duplicate_only_with_the_same_key),
      TEST_CASE(rollback_forgets_the_whole_batch),
      TEST_CASE(claim_takes_only_due_unowned_tasks),
      TEST_CASE(claim_respects_max_and_leases),
      TEST_CASE(finish_records_the_outcome),
      TEST_CASE(next_due_is_the_earliest_waiting_run_at),
      TEST_CASE(reserved_id_blocks_never_overlap),
      TEST_CASE(list_pages_by_id_and_lets_its_callback_read),
      TEST_CASE(purge_forgets_old_finished_tasks_only),
      TEST_CASE(purge_is_not_held_back_by_a_younger_task),
      TEST_CASE(progress_is_stored_and_read_back),
  };
  int rc = test__run("store", cases, sizeof cases / sizeof cases[0]);
  tc_remove_tree(store_dir);
  return rc;
}
