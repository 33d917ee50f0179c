/*
 * listing_budget_test.c - coda_task_find()'s budget (issue 12, M1): one
 * call reads at most `budget` rows from the store, however rare the states
 * asked, and paging with next_after then gives every match exactly once.
 * Also the memory store's id order (find() walks its ids from after_id, no
 * sort), with ids added out of order, removed and added again.
 *
 * Rows are counted by wrapping the store's find(), not timed. The wrap can
 * also drop the filter's set of states, as a store that does not read it
 * (Redis) would: the budget alone must then bound the call.
 */
#include "app/app.h"
#include "tasks/durable.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NTASKS 50000
#define BUDGET 5000

static coda__store_methods wrapped;
static const coda__store_methods *orig;
static int ignore_states; /* the wrapped find() reads the filter as Redis does */
static long rows_read;    /* rows find() gave since the counter was reset */
static int find_calls;

typedef struct relay {
  coda_task_list_fn fn;
  void *user;
} relay;

static int count_row(const coda_task_info *info, void *user) {
  relay *r = user;
  rows_read++;
  return r->fn(info, r->user);
}

static int counting_find(coda__store *s, const coda__task_filter *f, coda_task_list_fn fn,
                         void *user) {
  coda__task_filter copy = *f;
  if (ignore_states)
    copy.states = 0;
  find_calls++;
  relay r = {fn, user};
  return orig->find(s, &copy, count_row, &r);
}

/* What became of task id: a few dead and cancelled among many queued. */
static coda_task_state fate(uint64_t id) {
  if (id % 7 == 3)
    return CODA_STATE_DEAD;
  if (id % 11 == 5)
    return CODA_STATE_CANCELLED;
  return CODA_STATE_QUEUED;
}

static int fill(coda__store *s) {
  int64_t now = coda__unix_ms();
  int rc = s->m->begin(s);
  for (uint64_t id = 1; rc == 0 && id <= NTASKS; id++) {
    coda_task_state st = fate(id);
    coda__task_record r = {.id = id, .name = "job", .args = "", .max_attempts = 1,
                           .created_at = now, .run_at = now + 3600000};
    rc = s->m->enqueue(s, &r, st == CODA_STATE_DEAD, now + 60000);
    if (rc == 0 && st == CODA_STATE_DEAD) {
      coda__task_record f = {.id = id, .name = "job", .state = st, .attempts = 1,
                             .max_attempts = 1, .finished_at = now, .lease = 1};
      rc = s->m->finish(s, &f);
    }
  }
  if (rc == 0)
    rc = s->m->commit(s);
  for (uint64_t id = 1; rc == 0 && id <= NTASKS; id++)
    if (fate(id) == CODA_STATE_CANCELLED)
      rc = s->m->cancel(s, id, now);
  return rc;
}

typedef struct seen {
  unsigned char *count; /* by id: how many times delivered */
  int n;
  uint64_t last;
  int wrong_state, out_of_order;
  unsigned states;
} seen;

static int on_task(const coda_task_info *t, void *user) {
  seen *s = user;
  if (t->id <= s->last)
    s->out_of_order++;
  s->last = t->id;
  if (!(s->states >> t->state & 1))
    s->wrong_state++;
  if (t->id >= 1 && t->id <= NTASKS)
    s->count[t->id]++;
  s->n++;
  return 0;
}

/* Pages through every task in `states` by `limit` (0: none) under the
 * budget, checking each call's rows read; returns how many calls it took,
 * or -1. */
static int page_all(coda_app *app, unsigned states, int limit, seen *got) {
  uint64_t after = 0;
  int calls = 0;
  for (;;) {
    uint64_t next = 0;
    rows_read = 0;
    got->last = after;
    coda_task_filter f = CODA_TASK_FILTER_INIT(.states = states, .after_id = after,
                                               .limit = limit, .budget = BUDGET,
                                               .next_after = &next);
    int before = got->n;
    int rc = coda_task_find(app, &f, on_task, got);
    calls++;
    CHECK(rc >= 0);
    CHECK(rows_read <= BUDGET);
    if (rc < 0 || rows_read > BUDGET || calls > 1000)
      return -1;
    CHECK_EQ_INT(rc, got->n - before);
    if (next) {
      CHECK(next > after);
      CHECK(next >= got->last); /* the rows it examined include those delivered */
      after = next;
    } else if (limit > 0 && rc == limit) {
      after = got->last;
    } else {
      return calls;
    }
  }
}

static void check_every_match_once(const seen *got, unsigned states) {
  int missing = 0, twice = 0, extra = 0;
  for (uint64_t id = 1; id <= NTASKS; id++) {
    int want = (states >> fate(id) & 1) != 0;
    if (want && got->count[id] == 0)
      missing++;
    else if (got->count[id] > 1)
      twice++;
    else if (!want && got->count[id])
      extra++;
  }
  CHECK_EQ_INT(missing, 0);
  CHECK_EQ_INT(twice, 0);
  CHECK_EQ_INT(extra, 0);
  CHECK_EQ_INT(got->wrong_state, 0);
  CHECK_EQ_INT(got->out_of_order, 0);
}

static int expected(unsigned states) {
  int n = 0;
  for (uint64_t id = 1; id <= NTASKS; id++)
    n += (states >> fate(id) & 1) != 0;
  return n;
}

static coda_app *app_with_tasks(coda__store **out) {
  coda_app *app = coda_app_new();
  if (!app || coda_app_store(app, "memory") != 0)
    return app;
  coda__store *s = coda__engine_peek(app)->durable->store;
  if (fill(s) != 0)
    return app;
  orig = s->m;
  wrapped = *orig;
  wrapped.find = counting_find;
  s->m = &wrapped;
  *out = s;
  return app;
}

static void release(coda_app *app, coda__store *s) {
  if (s)
    s->m = orig;
  coda_app_free(app);
}

static void check_listings(int ignoring_states) {
  coda__store *s = NULL;
  coda_app *app = app_with_tasks(&s);
  REQUIRE(s);
  ignore_states = ignoring_states;
  unsigned sets[] = {
      CODA_STATE_BIT(CODA_STATE_DEAD) | CODA_STATE_BIT(CODA_STATE_CANCELLED),
      CODA_STATE_BIT(CODA_STATE_QUEUED) | CODA_STATE_BIT(CODA_STATE_FAILED), /* "scheduled" */
      CODA_STATE_BIT(CODA_STATE_CANCELLED),
  };
  int limits[] = {0, 50, 501, 2000}; /* 2000: pages of 2001 rows, cut to fit */
  for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) {
    for (size_t j = 0; j < sizeof limits / sizeof *limits; j++) {
      seen got = {.count = calloc(NTASKS + 1, 1), .states = sets[i]};
      REQUIRE(got.count);
      int calls = page_all(app, sets[i], limits[j], &got);
      CHECK(calls > 0);
      CHECK_EQ_INT(got.n, expected(sets[i]));
      check_every_match_once(&got, sets[i]);
      if (test__failures_in_case)
        fprintf(stderr, "  ^ states %#x, limit %d: %d calls\n", sets[i], limits[j], calls);
      free(got.count);
    }
  }
  /* A listing of every queued task under no limit takes more than one
   * call: the budget cut it (45,000 rows to read at least). */
  seen got = {.count = calloc(NTASKS + 1, 1), .states = CODA_STATE_BIT(CODA_STATE_QUEUED)};
  REQUIRE(got.count);
  CHECK(page_all(app, got.states, 0, &got) >= expected(got.states) / BUDGET);
  free(got.count);
  /* Without a budget nothing changes: every match in one call. */
  find_calls = 0;
  seen all = {.count = calloc(NTASKS + 1, 1),
              .states = CODA_STATE_BIT(CODA_STATE_DEAD) | CODA_STATE_BIT(CODA_STATE_CANCELLED)};
  REQUIRE(all.count);
  CHECK_EQ_INT(coda_task_find(app, CODA_TASK_FILTER(.states = all.states), on_task, &all),
               expected(all.states));
  free(all.count);
  ignore_states = 0;
  release(app, s);
}

TEST(a_listing_reads_at_most_its_budget_and_pages_give_every_match_once) {
  check_listings(0);
}

TEST(the_budget_bounds_a_store_that_reads_no_set_of_states) { check_listings(1); }

TEST(a_budget_needs_next_after) {
  coda__store *s = NULL;
  coda_app *app = app_with_tasks(&s);
  REQUIRE(s);
  CHECK_EQ_INT(coda_task_find(app, CODA_TASK_FILTER(.budget = 10), on_task, NULL),
               CODA_EINVAL);
  uint64_t next = 7;
  CHECK_EQ_INT(coda_task_find(app, CODA_TASK_FILTER(.budget = -1, .next_after = &next),
                              on_task, NULL),
               CODA_EINVAL);
  release(app, s);
}

/* ---- the memory store's id order ---------------------------------------- */

static int collect_ids(const coda_task_info *t, void *user) {
  char *buf = user;
  size_t len = strlen(buf);
  snprintf(buf + len, 256 - len, "%s%llu", len ? "," : "", (unsigned long long)t->id);
  return 0;
}

static const char *find_ids(coda__store *s, uint64_t after, int limit) {
  static char buf[256];
  buf[0] = 0;
  coda__task_filter f = {.state = -1, .after_id = after, .limit = limit};
  return s->m->find(s, &f, collect_ids, buf) >= 0 ? buf : "(failed)";
}

static int add(coda__store *s, uint64_t id) {
  coda__task_record r = {.id = id, .name = "job", .args = "", .max_attempts = 1};
  return s->m->enqueue(s, &r, 0, 0);
}

TEST(the_memory_store_finds_by_id_whatever_the_order_of_adds) {
  coda__store *s = coda__memory_store_open();
  REQUIRE(s);
  REQUIRE(s->m->begin(s) == 0);
  uint64_t ids[] = {50, 10, 900, 30, 20, 1000000007, 5};
  for (size_t i = 0; i < sizeof ids / sizeof *ids; i++)
    CHECK_EQ_INT(add(s, ids[i]), 0);
  CHECK_EQ_INT(s->m->commit(s), 0);
  CHECK_EQ_STR(find_ids(s, 0, 0), "5,10,20,30,50,900,1000000007");
  CHECK_EQ_STR(find_ids(s, 10, 3), "20,30,50");
  CHECK_EQ_STR(find_ids(s, 900, 0), "1000000007");
  /* Removed, then one added again: listed once. */
  CHECK_EQ_INT(s->m->remove(s, 20), 0);
  CHECK_EQ_INT(s->m->remove(s, 50), 0);
  CHECK_EQ_STR(find_ids(s, 0, 0), "5,10,30,900,1000000007");
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(add(s, 50), 0);
  CHECK_EQ_INT(s->m->commit(s), 0);
  CHECK_EQ_STR(find_ids(s, 0, 0), "5,10,30,50,900,1000000007");
  /* A rolled-back add is not listed. */
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(add(s, 40), 0);
  s->m->rollback(s);
  CHECK_EQ_STR(find_ids(s, 0, 0), "5,10,30,50,900,1000000007");
  /* Many removed (the order is compacted on a later add), then more. */
  REQUIRE(s->m->begin(s) == 0);
  for (uint64_t id = 2000; id < 2300; id++)
    CHECK_EQ_INT(add(s, id), 0);
  CHECK_EQ_INT(s->m->commit(s), 0);
  for (uint64_t id = 2000; id < 2299; id++)
    CHECK_EQ_INT(s->m->remove(s, id), 0);
  REQUIRE(s->m->begin(s) == 0);
  CHECK_EQ_INT(add(s, 40), 0);
  CHECK_EQ_INT(add(s, 3000), 0);
  CHECK_EQ_INT(s->m->commit(s), 0);
  CHECK_EQ_STR(find_ids(s, 0, 0), "5,10,30,40,50,900,2299,3000,1000000007");
  CHECK_EQ_STR(find_ids(s, 900, 2), "2299,3000");
  s->m->close(s);
}

RUN_TESTS(listing_budget,
          TEST_CASE(a_listing_reads_at_most_its_budget_and_pages_give_every_match_once),
          TEST_CASE(the_budget_bounds_a_store_that_reads_no_set_of_states),
          TEST_CASE(a_budget_needs_next_after),
          TEST_CASE(the_memory_store_finds_by_id_whatever_the_order_of_adds))
