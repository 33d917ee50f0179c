/*
 * find_test.c - listing durable tasks by filter: the stores' find()
 * (memory_store.c, sqlite_store.c, redis_store.c) and coda_task_find()
 * above it (src/tasks/listing.c), on every store, with no server (tasks
 * are written through the store's vtable as the store thread writes them).
 *
 * The stores are a list of URIs: "memory", a SQLite file in a temp
 * directory, and Redis on a redis-server main() starts on an ephemeral
 * port (tests/redis_server.h), under a fresh key prefix for each case, so
 * that each case starts from an empty store.
 *
 * Checks: each filter alone and together (state, name, queue, after_id,
 * limit, several states), by increasing id; a callback that stops early,
 * and one that reads the store again; the filter's size and bad members
 * refused; SQLite searches by name through its index.
 */
#include "app/app.h"
#include "harness.h"
#include "redis_server.h"
#include "tasks/durable.h"
#include "test.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define T0 INT64_C(1700000000000)

static char store_dir[] = "/tmp/coda-find-test-XXXXXX";
static tc_redis redis;
static int redis_up;

/* ---- the tasks every check starts from ------------------------------------ */

/* Twelve tasks, ids 1..12; name by id % 3; what became of them by id. */
static const char *const names[3] = {"tick", "mail", "report"};

static coda_task_state state_of(uint64_t id) {
  static const coda_task_state states[12] = {
      CODA_STATE_QUEUED,    CODA_STATE_SUCCEEDED, CODA_STATE_DEAD,
      CODA_STATE_SUCCEEDED, CODA_STATE_FAILED,    CODA_STATE_QUEUED,
      CODA_STATE_SUCCEEDED, CODA_STATE_DEAD,      CODA_STATE_SUCCEEDED,
      CODA_STATE_FAILED,    CODA_STATE_SUCCEEDED, CODA_STATE_QUEUED};
  return states[id - 1];
}

static int fill(coda__store *s) {
  int rc = s->m->begin(s);
  for (uint64_t id = 1; rc == 0 && id <= 12; id++) {
    char key[32];
    snprintf(key, sizeof key, "k%llu", (unsigned long long)id);
    coda__task_record r = {.id = id,
                           .name = names[id % 3],
                           .key = id % 2 ? key : NULL,
                           .args = "",
                           .state = CODA_STATE_QUEUED,
                           .max_attempts = 3,
                           .created_at = T0,
                           .run_at = T0 + 3600000}; /* later: not claimed by anyone */
    coda_task_state st = state_of(id);
    /* A task that will have an outcome is written claimed (token 1), as
     * a running task's is: a fenced store takes outcomes only from the
     * claim that holds the task. */
    int owned = st != CODA_STATE_QUEUED;
    rc = s->m->enqueue(s, &r, owned, owned ? T0 + 60000 : 0);
    if (rc == 0 && st != CODA_STATE_QUEUED) {
      coda__task_record f = {.id = id,
                             .name = names[id % 3],
                             .state = st,
                             .attempts = 1,
                             .max_attempts = 3,
                             .run_at = st == CODA_STATE_FAILED ? T0 + 3600000 : 0,
                             .started_at = T0,
                             .finished_at = T0 + (int64_t)id,
                             .lease = 1};
      rc = s->m->finish(s, &f);
    }
  }
  if (rc == 0)
    return s->m->commit(s);
  s->m->rollback(s);
  return rc;
}

/* What a listing delivered. */
typedef struct seen {
  uint64_t ids[16];
  int n;
  int stop_after;      /* return nonzero after this many (0: never) */
  coda__store *reread; /* get() each task again from the callback */
  int reread_failed;
} seen;

static int collect(const coda_task_info *info, void *user) {
  seen *s = user;
  if (s->n < 16)
    s->ids[s->n] = info->id;
  s->n++;
  if (s->reread) {
    coda_task_info *again;
    if (s->reread->m->get(s->reread, info->id, &again) != 0)
      s->reread_failed++;
    else
      coda_task_info_free(again);
  }
  return s->stop_after && s->n >= s->stop_after;
}

/* "1,4,7": the ids delivered, to compare with what a check expects. */
static const char *ids_of(const seen *s, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = '\0';
  for (int i = 0; i < s->n && i < 16 && n < cap; i++)
    n += (size_t)snprintf(buf + n, cap - n, "%s%llu", i ? "," : "",
                          (unsigned long long)s->ids[i]);
  return buf;
}

/* ---- the stores' find() ------------------------------------------------------ */

static const char *store_find(coda__store *s, int state, const char *queue,
                              const char *name, uint64_t after, int limit) {
  static char buf[128];
  seen got = {0};
  coda__task_filter f = {
      .state = state, .queue = queue, .name = name, .after_id = after, .limit = limit};
  int rc = s->m->find(s, &f, collect, &got);
  if (rc != got.n)
    return "(the count returned is not what the callback got)";
  return ids_of(&got, buf, sizeof buf);
}

/* A set of states (store.h version 3), for the stores that read it. */
static const char *store_find_states(coda__store *s, unsigned states, const char *name,
                                     uint64_t after, int limit) {
  static char buf[128];
  seen got = {0};
  coda__task_filter f = {
      .state = -1, .states = states, .name = name, .after_id = after, .limit = limit};
  int rc = s->m->find(s, &f, collect, &got);
  if (rc != got.n)
    return "(the count returned is not what the callback got)";
  return ids_of(&got, buf, sizeof buf);
}

static void check_store_find(coda__store *s) {
  REQUIRE(s->m->version >= 2 && s->m->find);
  REQUIRE(fill(s) == 0);
  CHECK_EQ_STR(store_find(s, -1, NULL, NULL, 0, 0), "1,2,3,4,5,6,7,8,9,10,11,12");
  CHECK_EQ_STR(store_find(s, CODA_STATE_SUCCEEDED, NULL, NULL, 0, 0), "2,4,7,9,11");
  CHECK_EQ_STR(store_find(s, CODA_STATE_QUEUED, NULL, NULL, 0, 0), "1,6,12");
  CHECK_EQ_STR(store_find(s, CODA_STATE_RUNNING, NULL, NULL, 0, 0), "");
  CHECK_EQ_STR(store_find(s, -1, NULL, "tick", 0, 0), "3,6,9,12");
  CHECK_EQ_STR(store_find(s, -1, NULL, "mail", 0, 0), "1,4,7,10");
  CHECK_EQ_STR(store_find(s, -1, NULL, "nothing", 0, 0), "");
  CHECK_EQ_STR(store_find(s, CODA_STATE_SUCCEEDED, NULL, "report", 0, 0), "2,11");
  CHECK_EQ_STR(store_find(s, CODA_STATE_DEAD, NULL, "tick", 0, 0), "3");
  CHECK_EQ_STR(store_find(s, CODA_STATE_FAILED, NULL, "tick", 0, 0), "");
  CHECK_EQ_STR(store_find(s, -1, NULL, NULL, 5, 3), "6,7,8");
  CHECK_EQ_STR(store_find(s, -1, NULL, "tick", 3, 2), "6,9");
  CHECK_EQ_STR(store_find(s, -1, NULL, "tick", 9, 2), "12");
  CHECK_EQ_STR(store_find(s, -1, NULL, "tick", 12, 0), "");
  CHECK_EQ_STR(store_find(s, CODA_STATE_FAILED, NULL, NULL, 0, 1), "5");
  /* Every task written with no queue is in "default". */
  CHECK_EQ_STR(store_find(s, -1, "default", NULL, 0, 0), "1,2,3,4,5,6,7,8,9,10,11,12");
  CHECK_EQ_STR(store_find(s, -1, "default", "mail", 0, 2), "1,4");
  CHECK_EQ_STR(store_find(s, -1, "cpu", NULL, 0, 0), "");
  if (strcmp(s->m->name, "redis") != 0) { /* Redis reads .state alone */
    unsigned dead_failed = CODA_STATE_BIT(CODA_STATE_DEAD) | CODA_STATE_BIT(CODA_STATE_FAILED);
    CHECK_EQ_STR(store_find_states(s, dead_failed, NULL, 0, 0), "3,5,8,10");
    CHECK_EQ_STR(store_find_states(s, dead_failed, NULL, 3, 2), "5,8");
    CHECK_EQ_STR(store_find_states(s, dead_failed, "tick", 0, 0), "3");
    CHECK_EQ_STR(store_find_states(s, CODA_STATE_BIT(CODA_STATE_RUNNING), NULL, 0, 0), "");
  }
  /* A callback that stops, and one that reads the store meanwhile. */
  seen stop = {.stop_after = 2};
  coda__task_filter all = {.state = -1};
  CHECK_EQ_INT(s->m->find(s, &all, collect, &stop), 2);
  seen reread = {.reread = s};
  CHECK_EQ_INT(s->m->find(s, &all, collect, &reread), 12);
  CHECK_EQ_INT(reread.reread_failed, 0);
}

/* ---- coda_task_find() ------------------------------------------------------- */

static const char *find(coda_app *app, const coda_task_filter *f) {
  static char buf[128];
  seen got = {0};
  int rc = coda_task_find(app, f, collect, &got);
  if (rc < 0) {
    snprintf(buf, sizeof buf, "(%s)", coda_strerror(rc));
    return buf;
  }
  if (rc != got.n)
    return "(the count returned is not what the callback got)";
  return ids_of(&got, buf, sizeof buf);
}

static void check_public_find(coda_app *app) {
  CHECK_EQ_STR(find(app, NULL), "1,2,3,4,5,6,7,8,9,10,11,12");
  CHECK_EQ_STR(find(app, CODA_TASK_FILTER()), "1,2,3,4,5,6,7,8,9,10,11,12");
  CHECK_EQ_STR(find(app, CODA_TASK_FILTER(.name = "tick")), "3,6,9,12");
  CHECK_EQ_STR(find(app, CODA_TASK_FILTER(.states = CODA_STATE_BIT(CODA_STATE_DEAD))),
               "3,8");
  CHECK_EQ_STR(find(app, CODA_TASK_FILTER(.states = CODA_STATE_BIT(CODA_STATE_FAILED) |
                                                    CODA_STATE_BIT(CODA_STATE_DEAD))),
               "3,5,8,10");
  CHECK_EQ_STR(find(app, CODA_TASK_FILTER(.states = CODA_STATE_BIT(CODA_STATE_SUCCEEDED) |
                                                    CODA_STATE_BIT(CODA_STATE_QUEUED),
                                          .name = "report", .limit = 2)),
               "2,11"); /* 5 is failed: not listed */
  CHECK_EQ_STR(find(app, CODA_TASK_FILTER(.name = "mail", .queue = "default")),
               "1,4,7,10");
  CHECK_EQ_STR(find(app, CODA_TASK_FILTER(.queue = "cpu")), "");
  /* Pages of two through one name. */
  char all[128] = "";
  uint64_t after = 0;
  for (int pages = 0; pages < 10; pages++) {
    seen got = {0};
    int rc = coda_task_find(
        app, CODA_TASK_FILTER(.name = "mail", .after_id = after, .limit = 2), collect,
        &got);
    CHECK(rc >= 0 && rc <= 2 && rc == got.n);
    if (rc <= 0)
      break;
    char buf[64];
    snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s", all[0] ? "," : "",
             ids_of(&got, buf, sizeof buf));
    after = got.ids[got.n - 1];
  }
  CHECK_EQ_STR(all, "1,4,7,10");
  /* coda_task_list() is find with one state. */
  seen listed = {0};
  CHECK_EQ_INT(coda_task_list(app, CODA_STATE_SUCCEEDED, 4, 2, collect, &listed), 2);
  CHECK(listed.n == 2 && listed.ids[0] == 7 && listed.ids[1] == 9);
  /* Refused: no size, a state that does not exist, a negative limit, no
   * callback. */
  coda_task_filter no_size = {.name = "tick"};
  CHECK_EQ_STR(find(app, &no_size), "(invalid argument)");
  CHECK_EQ_STR(find(app, CODA_TASK_FILTER(.states = CODA_STATE_BIT(6))),
               "(invalid argument)");
  CHECK_EQ_STR(find(app, CODA_TASK_FILTER(.limit = -1)), "(invalid argument)");
  CHECK_EQ_INT(coda_task_find(app, NULL, NULL, NULL), CODA_EINVAL);
  /* A caller built against an older, shorter filter (no limit member). */
  coda_task_filter older = CODA_TASK_FILTER_INIT(.name = "tick", .limit = 1);
  older.size = offsetof(coda_task_filter, limit);
  CHECK_EQ_STR(find(app, &older), "3,6,9,12");
}

/* ---- the stores ---------------------------------------------------------------- */

static int nuris;
static char uris[3][512];

static void on_each_store(void (*check)(coda__store *), void (*check_app)(coda_app *)) {
  for (int i = 0; i < nuris; i++) {
    int before = test__failures_in_case;
    coda_app *app = coda_app_new();
    REQUIRE(app);
    int rc = coda_app_store(app, uris[i]);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
      coda__store *s = coda__engine_peek(app)->durable->store;
      alarm(60);
      if (check)
        check(s);
      if (check_app && fill(s) == 0)
        check_app(app);
      alarm(0);
    }
    coda_app_free(app);
    if (test__failures_in_case != before)
      fprintf(stderr, "  ^ on %s\n", uris[i]);
  }
}

static void fresh_uris(void) {
  static int round;
  round++;
  nuris = 0;
  snprintf(uris[nuris++], sizeof uris[0], "memory");
  snprintf(uris[nuris++], sizeof uris[0], "sqlite:%s/find-%d.db", store_dir, round);
  char suffix[64];
  snprintf(suffix, sizeof suffix, "/0?prefix=find%d", round);
  tc_redis_uri(&redis, uris[nuris++], sizeof uris[0], suffix);
}

TEST(stores_find_by_each_filter) {
  REQUIRE(redis_up);
  fresh_uris();
  on_each_store(check_store_find, NULL);
}

TEST(coda_task_find_filters_pages_and_refuses) {
  REQUIRE(redis_up);
  fresh_uris();
  on_each_store(NULL, check_public_find);
}

/* The search by name is an index range, not a scan of every task. */
TEST(sqlite_finds_by_name_through_an_index) {
  char path[512], uri[600];
  snprintf(path, sizeof path, "%s/plan.db", store_dir);
  snprintf(uri, sizeof uri, "sqlite:%s", path);
  coda_app *app = coda_app_new();
  REQUIRE(app && coda_app_store(app, uri) == 0);
  sqlite3 *db;
  REQUIRE(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
  sqlite3_stmt *st;
  REQUIRE(
      sqlite3_prepare_v2(db,
                         "EXPLAIN QUERY PLAN SELECT id FROM coda_tasks WHERE id>?1 AND "
                         "state=?2 AND name=?3 ORDER BY id LIMIT ?5",
                         -1, &st, NULL) == SQLITE_OK);
  char plan[512] = "";
  while (sqlite3_step(st) == SQLITE_ROW)
    snprintf(plan + strlen(plan), sizeof plan - strlen(plan), "%s; ",
             (const char *)sqlite3_column_text(st, 3));
  sqlite3_finalize(st);
  sqlite3_close(db);
  if (!strstr(plan, "coda_tasks_name") || strstr(plan, "TEMP B-TREE"))
    fprintf(stderr, "  plan: %s\n", plan);
  CHECK(strstr(plan, "USING INDEX coda_tasks_name") != NULL);
  CHECK(strstr(plan, "TEMP B-TREE") == NULL); /* no sort: the index gives the order */
  coda_app_free(app);
}

int main(void) {
  if (!mkdtemp(store_dir)) {
    perror("mkdtemp");
    return 1;
  }
  redis_up = tc_redis_start(&redis, NULL) == 0;
  static const test__case cases[] = {
      TEST_CASE(stores_find_by_each_filter),
      TEST_CASE(coda_task_find_filters_pages_and_refuses),
      TEST_CASE(sqlite_finds_by_name_through_an_index),
  };
  int rc = test__run("find", cases, sizeof cases / sizeof cases[0]);
  tc_remove_tree(store_dir);
  tc_redis_remove(&redis);
  return rc;
}
