/*
 * task_list_test.c - coda_task_list()'s merge of the store's rows with the
 * tasks alive in this process (src/tasks/listing.c), on both stores, with
 * no server: tasks are made "alive" by putting them in the live registry,
 * and the store's list and find methods are wrapped so that a task can
 * change state in the middle of the store's scan, as it can in a running
 * server.
 *
 * Checks: a task alive when the listing starts that finishes during the
 * scan is listed by its new state; one that turns alive during the scan is
 * listed by its live state, not its stored one; and many live tasks ahead
 * of the first match cost one store read, not one per page.
 */
#include "app/app.h"
#include "harness.h"
#include "tasks/durable.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char store_dir[] = "/tmp/coda-task-list-XXXXXX";

/* The wrapped store: what happens during its next scan. */
static coda__store_methods wrapped;
static const coda__store_methods *orig;
static coda__durable *D;
static int list_calls;
static uint64_t finish_in_scan; /* this live task ends during the scan */
static uint64_t revive_in_scan; /* this stored task turns live (running) */

static void unregister(uint64_t id) {
  uv_mutex_lock(&D->reg_mu);
  free(coda__idmap_remove(&D->live, id));
  uv_mutex_unlock(&D->reg_mu);
}

static coda_task *make_live(uint64_t id, int running) {
  coda_task *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  t->id = id;
  t->attempt = 1;
  t->began_at = running ? coda__unix_ms() : 0;
  uv_mutex_lock(&D->reg_mu);
  coda__idmap_put(&D->live, id, t);
  uv_mutex_unlock(&D->reg_mu);
  return t;
}

/* What happens at the start of a store's scan (list or find). */
static void scan_begins(coda__store *s) {
  list_calls++;
  if (finish_in_scan) { /* as record_outcome: leave the registry, write */
    unregister(finish_in_scan);
    coda__task_record r = {.id = finish_in_scan,
                           .lease = 1, /* its owned enqueue's claim */
                           .state = CODA_STATE_SUCCEEDED,
                           .attempts = 1,
                           .finished_at = coda__unix_ms(),
                           .progress = 1};
    orig->finish(s, &r);
    finish_in_scan = 0;
  }
  if (revive_in_scan) {
    make_live(revive_in_scan, 1);
    revive_in_scan = 0;
  }
}

static int list_hook(coda__store *s, coda_task_state state, uint64_t after, int limit,
                     coda_task_list_fn fn, void *user) {
  scan_begins(s);
  return orig->list(s, state, after, limit, fn, user);
}

static int find_hook(coda__store *s, const coda__task_filter *f, coda_task_list_fn fn,
                     void *user) {
  scan_begins(s);
  return orig->find(s, f, fn, user);
}

/* Writes task id: owned and queued (a first attempt running here), queued
 * for later (not owned, due in an hour), or succeeded. */
enum { OWNED, LATER, SUCCEEDED };

static int put(coda__store *s, uint64_t id, int how) {
  coda__task_record r = {.id = id,
                         .name = "t",
                         .args = "",
                         .state = CODA_STATE_QUEUED,
                         .attempts = how == LATER ? 0 : 1,
                         .max_attempts = 3,
                         .created_at = 1,
                         .run_at = how == LATER ? coda__unix_ms() + 3600000 : 1};
  int rc = s->m->begin(s);
  rc = rc ? rc : s->m->enqueue(s, &r, how != LATER, 0);
  if (rc == 0 && how == SUCCEEDED) {
    coda__task_record f = {.id = id,
                           .lease = 1, /* its owned enqueue's claim */
                           .state = CODA_STATE_SUCCEEDED,
                           .attempts = 1,
                           .finished_at = 1,
                           .progress = 1};
    rc = s->m->finish(s, &f);
  }
  if (rc == 0)
    return s->m->commit(s);
  s->m->rollback(s);
  return rc;
}

static coda_app *open_app(const char *uri) {
  coda_app *app = coda_app_new();
  if (!app || coda_app_store(app, uri) != 0)
    return NULL;
  D = coda__engine_peek(app)->durable;
  orig = D->store->m;
  wrapped = *orig;
  wrapped.list = list_hook;
  wrapped.find = find_hook;
  D->store->m = &wrapped;
  list_calls = 0;
  return app;
}

static void free_live(void *t) { free(t); }

static void close_app(coda_app *app) {
  D->store->m = orig;
  uv_mutex_lock(&D->reg_mu);
  coda__idmap_each(&D->live, free_live);
  coda__idmap_free(&D->live);
  uv_mutex_unlock(&D->reg_mu);
  coda_app_free(app);
}

typedef struct seen {
  uint64_t ids[8];
  coda_task_state states[8];
  int n;
} seen;

static int collect(const coda_task_info *info, void *user) {
  seen *s = user;
  if (s->n < 8) {
    s->ids[s->n] = info->id;
    s->states[s->n] = info->state;
  }
  s->n++;
  return 0;
}

static const char *uri_of(int sqlite, const char *name, char *buf, size_t cap) {
  if (!sqlite)
    return "memory";
  snprintf(buf, cap, "sqlite:%s/%s.db", store_dir, name);
  return buf;
}

static void finished_during_the_scan(int sqlite) {
  char uri[512];
  coda_app *app = open_app(uri_of(sqlite, "finish", uri, sizeof uri));
  REQUIRE(app);
  REQUIRE(put(D->store, 5, SUCCEEDED) == 0);
  REQUIRE(put(D->store, 10, OWNED) == 0);
  REQUIRE(make_live(10, 1));
  finish_in_scan = 10;
  seen s = {0};
  CHECK_EQ_INT(coda_task_list(app, CODA_STATE_SUCCEEDED, 0, 10, collect, &s), 2);
  CHECK_EQ_INT(s.n, 2);
  CHECK(s.ids[0] == 5 && s.ids[1] == 10);
  CHECK(s.states[1] == CODA_STATE_SUCCEEDED);
  close_app(app);
}

TEST(a_task_that_ends_during_the_scan_is_listed_by_its_end) {
  finished_during_the_scan(0);
  finished_during_the_scan(1);
}

static void alive_during_the_scan(int sqlite) {
  char uri[512];
  coda_app *app = open_app(uri_of(sqlite, "revive", uri, sizeof uri));
  REQUIRE(app);
  REQUIRE(put(D->store, 7, LATER) == 0);
  REQUIRE(put(D->store, 8, LATER) == 0);
  revive_in_scan = 7; /* claimed and started: running, though stored queued */
  seen queued = {0}, running = {0};
  CHECK_EQ_INT(coda_task_list(app, CODA_STATE_QUEUED, 0, 10, collect, &queued), 1);
  CHECK(queued.n == 1 && queued.ids[0] == 8);
  CHECK_EQ_INT(coda_task_list(app, CODA_STATE_RUNNING, 0, 10, collect, &running), 1);
  CHECK(running.n == 1 && running.ids[0] == 7 && running.states[0] == CODA_STATE_RUNNING);
  close_app(app);
}

TEST(a_task_alive_since_the_snapshot_is_listed_by_its_live_state) {
  alive_during_the_scan(0);
  alive_during_the_scan(1);
}

static void many_live_ahead(int sqlite) {
  char uri[512];
  coda_app *app = open_app(uri_of(sqlite, "many", uri, sizeof uri));
  REQUIRE(app);
  enum { N = 2000 };
  for (uint64_t id = 1; id <= N; id++) {
    REQUIRE(put(D->store, id, OWNED) == 0);
    REQUIRE(make_live(id, 1));
  }
  REQUIRE(put(D->store, N + 1, LATER) == 0);
  seen s = {0};
  CHECK_EQ_INT(coda_task_list(app, CODA_STATE_QUEUED, 0, 1, collect, &s), 1);
  CHECK(s.n == 1 && s.ids[0] == N + 1);
  CHECK_EQ_INT(list_calls, 1);
  close_app(app);
}

TEST(live_tasks_ahead_cost_one_store_read) {
  many_live_ahead(0);
  many_live_ahead(1);
}

int main(void) {
  if (!mkdtemp(store_dir)) {
    perror("mkdtemp");
    return 1;
  }
  alarm(60);
  static const test__case cases[] = {
      TEST_CASE(a_task_that_ends_during_the_scan_is_listed_by_its_end),
      TEST_CASE(a_task_alive_since_the_snapshot_is_listed_by_its_live_state),
      TEST_CASE(live_tasks_ahead_cost_one_store_read),
  };
  int rc = test__run("task_list", cases, sizeof cases / sizeof cases[0]);
  tc_remove_tree(store_dir);
  return rc;
}
