/*
 * redis_store_test.c - the task engine on the Redis store with several
 * apps at once in one process, each with its own store connection to one
 * redis-server (a fleet but for the address space): what holds across
 * processes that share a store, seen through the public API.
 *
 * main() starts a redis-server of its own (tests/redis_server.h) on an
 * ephemeral port in a temp dir and removes it at the end; each case uses
 * a key prefix of its own.
 *
 * Checks:
 *  - an idempotency key holds across apps: the same key added on two apps
 *    (one after the other, then at the same moment, by coda_app_enqueue()
 *    and through a response's task list) is one task that runs once, and
 *    every add reports its id; the others count as duplicates (the Redis
 *    store learns of them only at commit: store.h duplicates());
 *  - a task one app adds in a queue it does not serve runs on the other,
 *    and the first reads its outcome back;
 *  - a task whose name the claiming app does not know is marked dead under
 *    the claim's token (a fenced store refuses any other), and every app
 *    reads it dead;
 *  - a task whose meta an older coda wrote as text is read back as it was,
 *    claimed and run, and its meta is binary once written again.
 */
#include "harness.h"
#include "redis_server.h"
#include "tasks/durable.h"
#include "test.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NAPPS 2

static tc_redis redis;
static int redis_up;

/* ---- tasks -------------------------------------------------------------------- */

static atomic_int runs[NAPPS]; /* note runs by app */
static coda_app *apps[NAPPS];

static int note_task(coda_task *t) {
  for (int i = 0; i < NAPPS; i++)
    if (coda_task_app(t) == apps[i])
      atomic_fetch_add(&runs[i], 1);
  return 0;
}

static int total_runs(void) {
  int n = 0;
  for (int i = 0; i < NAPPS; i++)
    n += atomic_load(&runs[i]);
  return n;
}

/* GET /add?key=K: a durable note in the response's list; answers its id. */
static int h_add(coda_req *req, coda_res *res, void *user) {
  coda_task_def *note = user;
  coda_task_opts o = CODA_TASK_OPTS_INIT(.flags = CODA_TASK_DURABLE);
  o.key = coda_req_query(req, "key");
  int rc = coda_res_add_task_opts(res, note, &o, "");
  if (rc)
    return rc;
  char body[32];
  snprintf(body, sizeof body, "%" PRIu64, o.id);
  coda_res_status(res, 202);
  return coda_res_body(res, body, strlen(body));
}

/* ---- apps ----------------------------------------------------------------------- */

typedef struct node {
  coda_app *app;
  coda_task_def *note, *ghost;
  test_server ts;
  int started;
} node;

/* App i on the Redis store under `prefix`, serving `queues` (NULL: all);
 * with_ghost: it also knows the "ghost" task (in queue "ghosts"). */
static int node_start(node *n, int i, const char *prefix, const char *queues,
                      int with_ghost) {
  memset(n, 0, sizeof *n);
  char suffix[128], uri[256];
  snprintf(suffix, sizeof suffix, "/0?prefix=%s", prefix);
  tc_redis_uri(&redis, uri, sizeof uri, suffix);
  n->app = apps[i] = coda_app_new();
  if (!n->app)
    return -1;
  coda_app_set(n->app, CODA_OPT_LOG_LEVEL,
               getenv("REDIS_TEST_LOG") ? CODA_LOG_DEBUG : CODA_LOG_OFF);
  coda_app_set(n->app, CODA_OPT_THREADS, 1);
  coda_app_set(n->app, CODA_OPT_PROCESS_WORKERS, 0);
  coda_app_set(n->app, CODA_OPT_STORE_POLL, 20);
  n->note = coda_app_task(n->app, "note", note_task, CODA_EXEC_THREAD);
  if (!n->note)
    return -1;
  coda_task_def_durable(n->note, 1);
  if (with_ghost) {
    n->ghost = coda_app_task(n->app, "ghost", note_task, CODA_EXEC_THREAD);
    if (!n->ghost || coda_task_def_queue(n->ghost, "ghosts") != 0)
      return -1;
  }
  coda_app_route(n->app, "GET", "/add", h_add, n->note);
  if (coda_app_queues(n->app, queues) != 0)
    return -1;
  int rc = coda_app_store(n->app, uri);
  if (rc) {
    fprintf(stderr, "  coda_app_store(%s): %s\n", uri, coda_app_store_error(n->app));
    return -1;
  }
  if (ts_start(&n->ts, n->app) != 0)
    return -1;
  n->started = 1;
  /* The store thread starts with the task engine, after the listener. */
  coda__durable *d = coda__engine_peek(n->app)->durable;
  uint64_t end = tc_now_ms() + 10000;
  while (!atomic_load(&d->running) && tc_now_ms() < end)
    tc_sleep_ms(5);
  return atomic_load(&d->running) ? 0 : -1;
}

static void node_stop(node *n, int i) {
  if (n->started)
    CHECK_EQ_INT(ts_stop(&n->ts), 0);
  if (n->app)
    CHECK_EQ_INT(tc_app_free(n->app, 5000), 0);
  n->started = 0;
  n->app = apps[i] = NULL;
}

static uint64_t enqueue_key(node *n, coda_task_def *def, const char *key) {
  coda_task_opts o = CODA_TASK_OPTS_INIT(.key = key);
  int rc = coda_app_enqueue(n->app, def, &o, "");
  if (rc) {
    fprintf(stderr, "  enqueue: %s\n", coda_strerror(rc));
    return 0;
  }
  return o.id;
}

/* GET /add?key=K on n; the id it answered, or 0. */
static uint64_t add_over_http(node *n, const char *key) {
  char path[128], buf[4096];
  snprintf(path, sizeof path, "/add?key=%s", key);
  if (tc_get(n->ts.port, path, buf, sizeof buf, 10000) != 202) {
    fprintf(stderr, "  GET %s: %s\n", path, buf);
    return 0;
  }
  const char *body = strstr(buf, "\r\n\r\n");
  return body ? strtoull(body + 4, NULL, 10) : 0;
}

/* The task's state as app reads it once it is `want` (up to ms), or -1. */
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
      fprintf(stderr, "  task %" PRIu64 ": state %d, not %d after %d ms\n", id, last,
              (int)want, ms);
      return -1;
    }
    tc_sleep_ms(10);
  }
}

/* Waits until the duplicates counted over both apps reach want. */
static long wait_duplicates(long want, int ms) {
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  long n;
  for (;;) {
    n = 0;
    for (int i = 0; i < NAPPS; i++)
      if (apps[i])
        n += coda_task_stat(apps[i], CODA_EXEC_THREAD, CODA_STAT_DUPLICATE);
    if (n >= want || tc_now_ms() >= end)
      return n;
    tc_sleep_ms(10);
  }
}

/* ---- 1. an idempotency key across apps ----------------------------------------------
 */

TEST(an_idempotency_key_holds_across_two_apps_on_one_redis) {
  REQUIRE(redis_up);
  node a, b;
  for (int i = 0; i < NAPPS; i++)
    atomic_store(&runs[i], 0);
  REQUIRE(node_start(&a, 0, "idem", NULL, 0) == 0);
  if (node_start(&b, 1, "idem", NULL, 0) != 0) {
    node_stop(&a, 0);
    REQUIRE(0);
  }
  /* One after the other: A's task ran; B's add of the key is that task. */
  uint64_t id = enqueue_key(&a, a.note, "order-1");
  CHECK(id != 0);
  CHECK(wait_state(a.app, id, CODA_STATE_SUCCEEDED, 10000, NULL) == 0);
  CHECK_EQ_INT(enqueue_key(&b, b.note, "order-1"), id);
  CHECK_EQ_INT(add_over_http(&b, "order-1"), id);
  CHECK_EQ_INT(wait_duplicates(2, 10000), 2);
  CHECK_EQ_INT(coda_app_store_sync(b.app), 0);
  CHECK(wait_state(b.app, id, CODA_STATE_SUCCEEDED, 10000, NULL) == 0);
  /* In quick succession on both apps, both ways in: still one task. */
  uint64_t id2 = enqueue_key(&a, a.note, "order-2");
  uint64_t id3 = enqueue_key(&b, b.note, "order-2");
  uint64_t id4 = add_over_http(&a, "order-2");
  uint64_t id5 = add_over_http(&b, "order-2");
  CHECK(id2 != 0 && id2 != id);
  CHECK(id3 == id2 && id4 == id2 && id5 == id2);
  CHECK(wait_state(a.app, id2, CODA_STATE_SUCCEEDED, 10000, NULL) == 0);
  CHECK(wait_state(b.app, id2, CODA_STATE_SUCCEEDED, 10000, NULL) == 0);
  CHECK_EQ_INT(wait_duplicates(5, 10000), 5);
  CHECK_EQ_INT(coda_app_store_sync(a.app), 0);
  CHECK_EQ_INT(coda_app_store_sync(b.app), 0);
  CHECK_EQ_INT(total_runs(), 2); /* order-1 once, order-2 once */
  coda_task_info *info = NULL;
  REQUIRE(coda_task_get(b.app, id2, &info) == 0);
  CHECK_EQ_INT(info->attempts, 1);
  CHECK_EQ_STR(info->key, "order-2");
  coda_task_info_free(info);
  node_stop(&b, 1);
  node_stop(&a, 0);
}

/* ---- 2. a queue served elsewhere ------------------------------------------------- */

TEST(a_task_in_a_queue_one_app_does_not_serve_runs_on_the_other) {
  REQUIRE(redis_up);
  node a, b;
  for (int i = 0; i < NAPPS; i++)
    atomic_store(&runs[i], 0);
  REQUIRE(node_start(&a, 0, "elsewhere", "web", 1) == 0); /* not "ghosts" */
  if (node_start(&b, 1, "elsewhere", NULL, 1) != 0) {
    node_stop(&a, 0);
    REQUIRE(0);
  }
  uint64_t id = enqueue_key(&a, a.ghost, NULL);
  CHECK(id != 0);
  coda_task_info *info = NULL;
  CHECK(wait_state(a.app, id, CODA_STATE_SUCCEEDED, 10000, &info) == 0);
  if (info)
    CHECK_EQ_INT(info->attempts, 1);
  coda_task_info_free(info);
  CHECK_EQ_INT(atomic_load(&runs[0]), 0);
  CHECK_EQ_INT(atomic_load(&runs[1]), 1);
  node_stop(&b, 1);
  node_stop(&a, 0);
}

/* ---- 3. an unknown name ----------------------------------------------------------- */

TEST(a_task_the_claiming_app_does_not_know_is_marked_dead_under_its_claim) {
  REQUIRE(redis_up);
  node a, b;
  for (int i = 0; i < NAPPS; i++)
    atomic_store(&runs[i], 0);
  REQUIRE(node_start(&a, 0, "unknown", "web", 1) == 0); /* knows ghost, not its queue */
  if (node_start(&b, 1, "unknown", NULL, 0) != 0) {     /* serves it, knows no ghost */
    node_stop(&a, 0);
    REQUIRE(0);
  }
  uint64_t id = enqueue_key(&a, a.ghost, NULL);
  CHECK(id != 0);
  coda_task_info *info = NULL;
  CHECK(wait_state(a.app, id, CODA_STATE_DEAD, 10000, &info) == 0);
  if (info)
    CHECK(info->error && strstr(info->error, "no task of that name"));
  coda_task_info_free(info);
  CHECK(wait_state(b.app, id, CODA_STATE_DEAD, 10000, NULL) == 0);
  CHECK_EQ_INT(total_runs(), 0);
  CHECK_EQ_INT(coda_task_stat(b.app, CODA_EXEC_THREAD, CODA_STAT_LEASE_LOST), 0);
  node_stop(&b, 1);
  node_stop(&a, 0);
}

/* ---- 4. meta written as text by an older coda ------------------------------------- */

/* The stored meta of task `id` under prefix "legacy" (a reply to free). */
static redisReply *legacy_meta(uint64_t id) {
  return tc_redis_cmd(&redis, "HGET {legacy}:meta %016" PRIx64, id);
}

TEST(a_task_whose_meta_an_older_coda_wrote_as_text_is_read_and_run) {
  REQUIRE(redis_up);
  node a, b;
  for (int i = 0; i < NAPPS; i++)
    atomic_store(&runs[i], 0);
  REQUIRE(node_start(&a, 0, "legacy", "web", 0) == 0); /* not "default": it waits */
  uint64_t id = enqueue_key(&a, a.note, NULL);
  REQUIRE(id != 0);
  REQUIRE(coda_app_store_sync(a.app) == 0);
  coda_task_info *info = NULL;
  CHECK(coda_task_get(a.app, id, &info) == 0);
  REQUIRE(info);
  redisReply *r = legacy_meta(id);
  CHECK(r && r->type == REDIS_REPLY_STRING && r->len > 0 && r->str[0] == 'B');
  freeReplyObject(r);
  /* As an older coda wrote it: numbers in text, no nonce. */
  char text[256];
  snprintf(text, sizeof text, "0 0 %d %" PRId64 " %" PRId64 " 0 0 0 0 0.25",
           info->max_attempts, info->created_at, info->run_at);
  r = tc_redis_cmd(&redis, "HSET {legacy}:meta %016" PRIx64 " %s", id, text);
  CHECK(r && r->type == REDIS_REPLY_INTEGER);
  freeReplyObject(r);
  coda_task_info *back = NULL;
  CHECK(coda_task_get(a.app, id, &back) == 0);
  if (back) {
    CHECK_EQ_INT(back->state, CODA_STATE_QUEUED);
    CHECK_EQ_INT(back->max_attempts, info->max_attempts);
    CHECK(back->created_at == info->created_at && back->run_at == info->run_at);
    CHECK(back->progress == 0.25);
  }
  coda_task_info_free(back);
  coda_task_info_free(info);
  if (node_start(&b, 1, "legacy", NULL, 0) != 0) { /* serves "default" */
    node_stop(&a, 0);
    REQUIRE(0);
  }
  CHECK(wait_state(a.app, id, CODA_STATE_SUCCEEDED, 10000, &info) == 0);
  if (info)
    CHECK_EQ_INT(info->attempts, 1);
  coda_task_info_free(info);
  CHECK_EQ_INT(total_runs(), 1);
  r = legacy_meta(id);
  CHECK(r && r->type == REDIS_REPLY_STRING && r->len > 0 && r->str[0] == 'B');
  freeReplyObject(r);
  node_stop(&b, 1);
  node_stop(&a, 0);
}

int main(void) {
  redis_up = tc_redis_start(&redis, NULL) == 0;
  static const test__case cases[] = {
      TEST_CASE(an_idempotency_key_holds_across_two_apps_on_one_redis),
      TEST_CASE(a_task_in_a_queue_one_app_does_not_serve_runs_on_the_other),
      TEST_CASE(a_task_the_claiming_app_does_not_know_is_marked_dead_under_its_claim),
      TEST_CASE(a_task_whose_meta_an_older_coda_wrote_as_text_is_read_and_run),
  };
  int rc = test__run("redis_store", cases, sizeof cases / sizeof cases[0]);
  tc_redis_remove(&redis);
  return rc;
}
