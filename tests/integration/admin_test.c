/*
 * admin_test.c - the JSON admin API under /coda/api/ (docs/admin-api.md),
 * through a real server on loopback, answers parsed with jansson, on each
 * store (memory, a SQLite file, a real redis-server started here):
 *  - every view's shape and status codes (session, overview, queues,
 *    nodes, schedules, tasks, one task), 400 for bad input, 404 unknown;
 *  - the listing's pages (after, limit, next_after) and filters (state,
 *    "scheduled", queue, name, id);
 *  - a task whose error and arguments hold markup and quotes comes back as
 *    the exact strings;
 *  - actions by bearer token change the store and the listing shows it
 *    (retry, cancel, delete, the bulk forms, pause and resume), are counted
 *    in coda_admin_actions_total; without a token, or by cookie without the
 *    CSRF token, they change nothing.
 * CODA_ADMIN_STORES=memory,sqlite,redis picks the stores (default: all).
 */
#include "admin/admin.h"
#include "harness.h"
#include "stores.h"
#include "test.h"

#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOKEN "admin-test-token-0123456789abcdef"
#define BEARER "Authorization: Bearer " TOKEN "\r\n"
#define EVIL "<img src=x onerror=alert(1)> \"quotes\" <script>x</script> \\ end"
#define WAIT_MS 20000
#define HOUR_MS 3600000L

static const char *current; /* the store of the case running, for messages */
static int with_tick; /* the fixture schedules "tick" (its catch-up task runs at start) */

/* ---- the app --------------------------------------------------------------------- */

static atomic_int bad_fails = 1; /* "bad" and "mailer" fail while set */

static int ok_task(coda_task *t) {
  (void)t;
  return 0;
}

/* A message that is not UTF-8: the API shows U+FFFD for the byte. */
static int raw_task(coda_task *t) { return coda_task_fail(t, "x\xffy"); }

static int bad_task(coda_task *t) {
  return atomic_load(&bad_fails) ? coda_task_fail(t, "%s", EVIL) : 0;
}

typedef struct fixture {
  coda_app *app;
  test_server ts;
  coda_task_def *ok, *bad, *mailer, *tick, *raw;
  int started;
  char uri[512]; /* of its store */
} fixture;

/* POST /add/{what}: one durable task of `what` (bad, mailer, later: an ok
 * task due in an hour), with arguments that need escaping; answers its id. */
static int h_add(coda_req *req, coda_res *res, void *user) {
  fixture *f = user;
  const char *what = coda_req_param(req, "what");
  coda_task_def *def = strcmp(what, "raw") == 0      ? f->raw
                       : strcmp(what, "bad") == 0    ? f->bad
                       : strcmp(what, "mailer") == 0 ? f->mailer
                                                     : f->ok;
  coda_task_opts o =
      CODA_TASK_OPTS_INIT(.flags = CODA_TASK_DURABLE,
                          .delay_ms = strcmp(what, "later") == 0 ? HOUR_MS : 0);
  int rc = coda_res_add_task_opts(res, def, &o, "sib", EVIL, (int64_t)42, "\x01\x02\xff",
                                  (size_t)3);
  if (rc)
    return rc;
  char body[32];
  snprintf(body, sizeof body, "%" PRIu64, o.id);
  return coda_res_body(res, body, strlen(body));
}

static tc_stores st; /* the stores every case runs on */

static void store_uri(const char *kind, char *uri, size_t cap) {
  tc_stores_uri(&st, kind, uri, cap);
}

static int fixture_start(fixture *f, const char *kind) {
  memset(f, 0, sizeof *f);
  current = kind;
  char *uri = f->uri;
  store_uri(kind, f->uri, sizeof f->uri);
  coda_app *app = f->app = coda_app_new();
  if (!app)
    return -1;
  coda_app_set(app, CODA_OPT_LOG_LEVEL,
               getenv("ADMIN_TEST_LOG") ? CODA_LOG_DEBUG : CODA_LOG_OFF);
  coda_app_set(app, CODA_OPT_THREADS, 1);
  coda_app_set(app, CODA_OPT_STORE_POLL, 20);
  f->ok = coda_app_task(app, "ok", ok_task, CODA_EXEC_THREAD);
  f->bad = coda_app_task(app, "bad", bad_task, CODA_EXEC_THREAD);
  f->mailer = coda_app_task(app, "mailer", bad_task, CODA_EXEC_THREAD);
  f->tick = coda_app_task(app, "tick", ok_task, CODA_EXEC_THREAD);
  f->raw = coda_app_task(app, "raw", raw_task, CODA_EXEC_THREAD);
  if (!f->ok || !f->bad || !f->mailer || !f->tick || !f->raw)
    return -1;
  coda_task_def_retry(f->raw, 1, 10, 10);
  coda_task_def_retry(f->bad, 1, 10, 10);
  coda_task_def_retry(f->mailer, 1, 10, 10);
  if (coda_task_def_queue(f->mailer, "mail") != 0 ||
      (with_tick && coda_app_every(app, f->tick, HOUR_MS) != 0) ||
      coda_app_route(app, "POST", "/add/{what}", h_add, f) != 0 ||
      coda_app_admin(app, TOKEN) != 0)
    return -1;
  if (coda_app_store(app, uri) != 0) {
    fprintf(stderr, "  coda_app_store(%s): %s\n", uri, coda_app_store_error(app));
    return -1;
  }
  if (ts_start(&f->ts, app) != 0)
    return -1;
  f->started = 1;
  return 0;
}

static void fixture_stop(fixture *f) {
  if (f->started)
    CHECK_EQ_INT(ts_stop(&f->ts), 0);
  if (f->app)
    CHECK_EQ_INT(tc_app_free(f->app, 5000), 0);
  memset(f, 0, sizeof *f);
}

/* ---- HTTP and JSON --------------------------------------------------------------- */

static char resp[1 << 20];

/* One request with the head lines `head`; *out (may be NULL) the parsed
 * body, NULL when it is not JSON. Returns the status or -1. */
static int call(fixture *f, const char *method, const char *path, const char *head,
                json_t **out) {
  if (out)
    *out = NULL;
  char raw[2048];
  snprintf(raw, sizeof raw,
           "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n%s\r\n", method,
           path, head);
  int fd = tc_connect(f->ts.port, 10000);
  if (fd < 0)
    return -1;
  int status = -1;
  resp[0] = '\0';
  if (tc_send_str(fd, raw) == 0 && tc_read_response(fd, resp, sizeof resp) > 0)
    status = tc_status(resp);
  close(fd);
  const char *body = tc_body(resp);
  if (out && body && *body)
    *out = json_loads(body, 0, NULL);
  if (status >= 400 && out && *out && !json_is_string(json_object_get(*out, "error")))
    fprintf(stderr, "  [%s] %s %s: %d without an error member\n", current, method, path,
            status);
  return status;
}

static int get(fixture *f, const char *path, json_t **out) {
  return call(f, "GET", path, BEARER, out);
}

static int post(fixture *f, const char *path, json_t **out) {
  return call(f, "POST", path, BEARER, out);
}

static const char *str(json_t *o, const char *key) {
  return json_string_value(json_object_get(o, key));
}

static long long num(json_t *o, const char *key) {
  return json_integer_value(json_object_get(o, key));
}

static uint64_t add(fixture *f, const char *what) {
  int fd = tc_connect(f->ts.port, 10000);
  if (fd < 0)
    return 0;
  char raw[256], buf[4096];
  snprintf(raw, sizeof raw,
           "POST /add/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", what);
  uint64_t id = 0;
  if (tc_send_str(fd, raw) == 0 && tc_read_response(fd, buf, sizeof buf) > 0 &&
      tc_status(buf) == 200)
    id = strtoull(tc_body(buf), NULL, 10);
  close(fd);
  return id;
}

static coda_task_state state_of(fixture *f, uint64_t id) {
  coda_task_info *info = NULL;
  if (coda_task_get(f->app, id, &info) != 0)
    return (coda_task_state)-1;
  coda_task_state s = info->state;
  coda_task_info_free(info);
  return s;
}

static int wait_state(fixture *f, uint64_t id, coda_task_state want) {
  uint64_t end = tc_now_ms() + WAIT_MS;
  coda_task_state s = state_of(f, id);
  for (; s != want && tc_now_ms() < end; s = state_of(f, id))
    tc_sleep_ms(5);
  if (s != want)
    fprintf(stderr, "  [%s] task %" PRIu64 " is %d, not %s\n", current, id, (int)s,
            coda_task_state_name(want));
  return s == want;
}

/* Waits until the task is dead after `n` attempts. */
static int wait_attempts(fixture *f, uint64_t id, int n) {
  uint64_t end = tc_now_ms() + WAIT_MS;
  for (;;) {
    coda_task_info *info = NULL;
    int done = coda_task_get(f->app, id, &info) == 0 && info->attempts == n &&
               info->state == CODA_STATE_DEAD;
    coda_task_info_free(info);
    if (done)
      return 1;
    if (tc_now_ms() >= end)
      return 0;
    tc_sleep_ms(5);
  }
}

/* The state the API lists for a task (GET tasks?id=), or "" if none. */
static char listed_state[16];
static const char *listed(fixture *f, uint64_t id) {
  char path[96];
  json_t *j;
  snprintf(path, sizeof path, "/coda/api/tasks?id=%" PRIu64, id);
  listed_state[0] = '\0';
  if (get(f, path, &j) == 200 && json_array_size(json_object_get(j, "tasks")) == 1)
    snprintf(listed_state, sizeof listed_state, "%s",
             str(json_array_get(json_object_get(j, "tasks"), 0), "state"));
  json_decref(j);
  return listed_state;
}

static void id_text(uint64_t id, char *buf, size_t cap) {
  snprintf(buf, cap, "%" PRIu64, id);
}

/* A dead task of `what` (bad or mailer), or 0. */
static uint64_t dead_task(fixture *f, const char *what) {
  uint64_t id = add(f, what);
  return id && wait_state(f, id, CODA_STATE_DEAD) ? id : 0;
}

#define FOR_EACH_STORE(f)                                                                \
  for (int store_i = 0; store_i < st.n; store_i++)                                    \
    for (int once = (fixture_start(&(f), st.kinds[store_i]) == 0 ? 1 : -1); once != 0;     \
         once = 0, fixture_stop(&(f)))                                                   \
      if (once < 0) {                                                                    \
        CHECK(!"fixture started");                                                       \
      } else

/* ---- views ------------------------------------------------------------------------ */

static void check_counts(json_t *counts) {
  static const char *const keys[] = {"queued", "scheduled", "running",  "succeeded",
                                     "failed", "dead",      "cancelled"};
  CHECK(json_is_object(counts));
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    CHECK(json_is_integer(json_object_get(counts, keys[i])));
}

static void views_of(fixture *f) {
  json_t *j;
  uint64_t dead = dead_task(f, "bad"), later = add(f, "later");
  CHECK(dead && later);
  CHECK_EQ_INT(get(f, "/coda/api/session", &j), 200);
  CHECK_EQ_STR(str(j, "store"), current);
  CHECK_EQ_INT((int)strlen(str(j, "csrf") ? str(j, "csrf") : ""), 64);
  json_decref(j);

  CHECK_EQ_INT(get(f, "/coda/api/overview", &j), 200);
  CHECK(json_integer_value(json_object_get(j, "now")) > 1600000000000LL);
  CHECK_EQ_STR(str(j, "version"), coda_version());
  CHECK_EQ_STR(str(j, "store"), current);
  json_t *counts = json_object_get(j, "counts");
  check_counts(counts);
  CHECK(num(counts, "dead") >= 1);
  CHECK(num(counts, "scheduled") >= 1);
  CHECK(num(j, "failed_total") >= 1);
  CHECK(json_is_integer(json_object_get(j, "processed")));
  json_t *rates = json_object_get(j, "rates");
  CHECK(json_is_number(json_object_get(rates, "processed_per_s")));
  CHECK(json_is_number(json_object_get(rates, "failed_per_s")));
  CHECK(num(j, "queues") >= 1);
  CHECK_EQ_INT(num(j, "nodes"), 1);
  CHECK(json_integer_value(json_object_get(json_object_get(j, "http"), "requests")) >= 3);
  json_decref(j);

  /* The rates: another failure, seen a second or more after the last
   * sample. */
  uint64_t again = dead_task(f, "bad");
  CHECK(again != 0);
  double failed_rate = 0;
  for (uint64_t end = tc_now_ms() + WAIT_MS; failed_rate <= 0 && tc_now_ms() < end;) {
    tc_sleep_ms(50);
    CHECK_EQ_INT(get(f, "/coda/api/overview", &j), 200);
    failed_rate =
        json_number_value(json_object_get(json_object_get(j, "rates"), "failed_per_s"));
    json_decref(j);
  }
  CHECK(failed_rate > 0);

  CHECK_EQ_INT(get(f, "/coda/api/queues", &j), 200);
  json_t *qs = json_object_get(j, "queues"), *def = NULL;
  CHECK(json_is_array(qs));
  for (size_t i = 0; i < json_array_size(qs); i++)
    if (strcmp(str(json_array_get(qs, i), "name"), "default") == 0)
      def = json_array_get(qs, i);
  CHECK(def != NULL);
  if (def) {
    CHECK(json_is_false(json_object_get(def, "paused")));
    check_counts(json_object_get(def, "counts"));
    CHECK(num(json_object_get(def, "counts"), "dead") >= 1);
    CHECK(json_is_integer(json_object_get(def, "latency_ms")));
    CHECK(num(def, "failed") >= 1);
    CHECK(json_is_integer(json_object_get(def, "processed")));
  }
  json_decref(j);

  CHECK_EQ_INT(get(f, "/coda/api/nodes", &j), 200);
  json_t *nodes = json_object_get(j, "nodes");
  CHECK_EQ_INT(json_array_size(nodes), 1);
  json_t *n = json_array_get(nodes, 0);
  CHECK_EQ_STR(str(n, "role"), "server");
  CHECK_EQ_INT(num(n, "pid"), getpid());
  CHECK(json_is_string(json_object_get(n, "id")) &&
        json_is_string(json_object_get(n, "host")));
  CHECK(json_is_array(json_object_get(n, "queues")));
  CHECK(str(n, "listen") && strstr(str(n, "listen"), ":") != NULL);
  CHECK(json_is_integer(json_object_get(n, "running")));
  CHECK(json_is_integer(json_object_get(n, "processed")));
  CHECK(num(n, "last_seen") >= num(n, "started_at") && num(n, "started_at") > 0);
  CHECK_EQ_STR(str(n, "version"), coda_version());
  json_decref(j);

  CHECK_EQ_INT(get(f, "/coda/api/schedules", &j), 200);
  json_t *s = json_array_get(json_object_get(j, "schedules"), 0);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "schedules")), 1);
  CHECK_EQ_STR(str(s, "task"), "tick");
  CHECK_EQ_INT(num(s, "every_ms"), HOUR_MS);
  CHECK(json_is_null(json_object_get(s, "cron")));
  CHECK(num(s, "next_run") > 0);
  json_t *last = json_object_get(s, "last_run");
  CHECK(json_is_null(last) || json_is_integer(last));
  json_decref(j);
}

TEST(views_have_their_shape) {
  fixture f;
  with_tick = 1;
  FOR_EACH_STORE(f) views_of(&f);
  with_tick = 0;
}

/* ---- the listing ------------------------------------------------------------------ */

static int has_id(json_t *tasks, uint64_t id) {
  char want[24];
  id_text(id, want, sizeof want);
  for (size_t i = 0; i < json_array_size(tasks); i++)
    if (strcmp(str(json_array_get(tasks, i), "id"), want) == 0)
      return 1;
  return 0;
}

/* Every page of `query` (limit 3) until next_after is null. */
static int walk_pages(fixture *f, const char *query, json_t *all) {
  char path[512], after[32] = "";
  for (int pages = 0; pages < 100; pages++) {
    json_t *j;
    snprintf(path, sizeof path, "/coda/api/tasks?%s&limit=3%s%s", query,
             *after ? "&after=" : "", after);
    if (get(f, path, &j) != 200) {
      json_decref(j);
      return -1;
    }
    json_t *tasks = json_object_get(j, "tasks"), *next = json_object_get(j, "next_after");
    CHECK(json_array_size(tasks) <= 3);
    json_array_extend(all, tasks);
    if (json_is_null(next)) {
      json_decref(j);
      return pages + 1;
    }
    CHECK(json_is_string(next));
    CHECK_EQ_STR(json_string_value(next), str(json_array_get(tasks, 2), "id"));
    snprintf(after, sizeof after, "%s", json_string_value(next));
    json_decref(j);
  }
  return -1;
}

static void listing_of(fixture *f) {
  enum { LATER = 7 };
  uint64_t later[LATER], dead = dead_task(f, "bad"), mail = dead_task(f, "mailer");
  CHECK(dead && mail);
  for (int i = 0; i < LATER; i++)
    CHECK((later[i] = add(f, "later")) != 0);
  json_t *all = json_array(), *j;

  /* Every task, in pages of 3: each once, ids increasing. */
  CHECK_EQ_INT(walk_pages(f, "state=", all), 3);
  CHECK_EQ_INT(json_array_size(all), LATER + 2);
  for (size_t i = 1; i < json_array_size(all); i++)
    CHECK(strtoull(str(json_array_get(all, i - 1), "id"), NULL, 10) <
          strtoull(str(json_array_get(all, i), "id"), NULL, 10));
  json_array_clear(all);
  CHECK_EQ_INT(walk_pages(f, "state=scheduled", all), 3);
  CHECK_EQ_INT(json_array_size(all), LATER);
  for (int i = 0; i < LATER; i++)
    CHECK(has_id(all, later[i]));
  json_array_clear(all);
  CHECK_EQ_INT(walk_pages(f, "state=dead", all), 1);
  CHECK_EQ_INT(json_array_size(all), 2);
  json_array_clear(all);
  CHECK_EQ_INT(walk_pages(f, "state=dead&queue=mail", all), 1);
  CHECK_EQ_INT(json_array_size(all), 1);
  CHECK(has_id(all, mail));
  CHECK_EQ_STR(str(json_array_get(all, 0), "queue"), "mail");
  json_array_clear(all);
  CHECK_EQ_INT(walk_pages(f, "name=bad", all), 1);
  CHECK_EQ_INT(json_array_size(all), 1);
  CHECK(has_id(all, dead));
  json_array_clear(all);
  CHECK_EQ_INT(walk_pages(f, "state=succeeded,running", all), 1);
  CHECK_EQ_INT(json_array_size(all), 0);
  json_decref(all);

  /* The default page; a limit past 500 gives 500. */
  CHECK_EQ_INT(get(f, "/coda/api/tasks", &j), 200);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "tasks")), LATER + 2);
  CHECK(json_is_null(json_object_get(j, "next_after")));
  json_decref(j);
  CHECK_EQ_INT(get(f, "/coda/api/tasks?limit=100000", &j), 200);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "tasks")), LATER + 2);
  json_decref(j);

  /* A summary's members. */
  char path[128];
  snprintf(path, sizeof path, "/coda/api/tasks?id=%" PRIu64, dead);
  CHECK_EQ_INT(get(f, path, &j), 200);
  json_t *t = json_array_get(json_object_get(j, "tasks"), 0);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "tasks")), 1);
  CHECK(json_is_null(json_object_get(j, "next_after")));
  CHECK_EQ_STR(str(t, "name"), "bad");
  CHECK_EQ_STR(str(t, "queue"), "default");
  CHECK_EQ_STR(str(t, "state"), "dead");
  CHECK_EQ_INT(num(t, "attempts"), 1);
  CHECK_EQ_INT(num(t, "max_attempts"), 1);
  CHECK(num(t, "created_at") > 0 && num(t, "finished_at") >= num(t, "created_at"));
  CHECK(json_is_integer(json_object_get(t, "run_at")));
  CHECK(json_is_integer(json_object_get(t, "started_at")));
  CHECK(json_is_number(json_object_get(t, "progress")));
  CHECK_EQ_STR(str(t, "error"), EVIL);
  json_decref(j);
  CHECK_EQ_INT(get(f, "/coda/api/tasks?id=999999999999", &j), 200);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "tasks")), 0);
  json_decref(j);

  /* Bad input. */
  static const char *const bad[] = {
      "state=bogus", "state=dead,", "limit=0",
      "limit=x",     "after=abc",   "after=-1",
      "id=12a",      "id=0",        "id=99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(path, sizeof path, "/coda/api/tasks?%s", bad[i]);
    CHECK_EQ_INT(get(f, path, &j), 400);
    CHECK(str(j, "error") != NULL);
    json_decref(j);
  }
}

TEST(tasks_are_paged_and_filtered) {
  fixture f;
  FOR_EACH_STORE(f) listing_of(&f);
}

/* ---- one task ---------------------------------------------------------------------- */

static void detail_of(fixture *f) {
  uint64_t id = dead_task(f, "bad");
  REQUIRE(id);
  char path[128], want_id[24];
  id_text(id, want_id, sizeof want_id);
  json_t *j;
  snprintf(path, sizeof path, "/coda/api/tasks/%" PRIu64, id);
  CHECK_EQ_INT(get(f, path, &j), 200);
  /* The raw answer escapes the quotes: they cannot end a string early. */
  CHECK(strstr(resp, "\\\"quotes\\\"") != NULL);
  CHECK(strstr(resp, "Content-Type: application/json") != NULL);
  CHECK(strstr(resp, "X-Content-Type-Options: nosniff") != NULL);
  CHECK_EQ_STR(str(j, "id"), want_id);
  CHECK_EQ_STR(str(j, "error"), EVIL);
  CHECK(json_is_null(json_object_get(j, "key")));
  CHECK(json_is_null(json_object_get(j, "result")));
  json_t *args = json_object_get(j, "args");
  CHECK_EQ_INT(json_array_size(args), 3);
  CHECK_EQ_STR(json_string_value(json_array_get(args, 0)), EVIL);
  CHECK_EQ_INT(json_integer_value(json_array_get(args, 1)), 42);
  CHECK_EQ_STR(str(json_array_get(args, 2), "base64"), "AQL/");
  json_t *errors = json_object_get(j, "errors");
  CHECK_EQ_INT(json_array_size(errors), 1);
  CHECK_EQ_INT(num(json_array_get(errors, 0), "attempt"), 1);
  CHECK(num(json_array_get(errors, 0), "at") > 0);
  CHECK_EQ_STR(str(json_array_get(errors, 0), "error"), EVIL);
  json_t *request = json_object_get(j, "request");
  CHECK(json_is_object(request));
  CHECK(str(request, "id") &&
        strspn(str(request, "id"), "0123456789") == strlen(str(request, "id")));
  CHECK_EQ_STR(str(request, "origin"), "POST /add/{what}");
  CHECK(json_is_null(json_object_get(j, "traceparent")));
  CHECK(json_is_false(json_object_get(j, "cancel_requested")));
  json_decref(j);

  uint64_t raw = dead_task(f, "raw");
  CHECK(raw != 0);
  snprintf(path, sizeof path, "/coda/api/tasks/%" PRIu64, raw);
  CHECK_EQ_INT(get(f, path, &j), 200);
  CHECK_EQ_STR(str(j, "error"), "x\xef\xbf\xbdy");
  json_decref(j);

  CHECK_EQ_INT(get(f, "/coda/api/tasks/999999999999", &j), 404);
  CHECK_EQ_STR(str(j, "error"), "unknown task");
  json_decref(j);
  CHECK_EQ_INT(get(f, "/coda/api/tasks/abc", &j), 400);
  json_decref(j);
  CHECK_EQ_INT(get(f, "/coda/api/nope", &j), 404);
  json_decref(j);
}

TEST(a_task_in_full_comes_back_as_exact_json) {
  fixture f;
  FOR_EACH_STORE(f) detail_of(&f);
}

/* ---- actions ----------------------------------------------------------------------- */

static int post_ok(fixture *f, const char *fmt, uint64_t id, const char *want_id) {
  char path[128];
  snprintf(path, sizeof path, fmt, id);
  json_t *j;
  int status = post(f, path, &j);
  int ok = status == 200 && json_is_true(json_object_get(j, "ok")) && str(j, "id") &&
           strcmp(str(j, "id"), want_id) == 0;
  if (!ok)
    fprintf(stderr, "  [%s] POST %s: %d %s\n", current, path, status, tc_body(resp));
  json_decref(j);
  return ok;
}

static void actions_of(fixture *f) {
  coda__admin *a = coda__admin_of(f->app);
  uint64_t before[CODA__ADMIN_ACT_COUNT_];
  for (int i = 0; i < CODA__ADMIN_ACT_COUNT_; i++)
    before[i] = coda__admin_counted(a, (coda__admin_action)i);
  char id_s[24], path[160];
  json_t *j;

  /* Retry a dead task, which now succeeds. */
  uint64_t dead = dead_task(f, "bad");
  REQUIRE(dead);
  id_text(dead, id_s, sizeof id_s);
  atomic_store(&bad_fails, 0);
  CHECK(post_ok(f, "/coda/api/tasks/%" PRIu64 "/retry", dead, id_s));
  CHECK(wait_state(f, dead, CODA_STATE_SUCCEEDED));
  CHECK_EQ_STR(listed(f, dead), "succeeded");
  snprintf(path, sizeof path, "/coda/api/tasks/%" PRIu64 "/retry", dead);
  CHECK_EQ_INT(post(f, path, &j), 409);
  CHECK(str(j, "error") != NULL);
  json_decref(j);
  atomic_store(&bad_fails, 1);

  /* Cancel a scheduled task; delete it. */
  uint64_t later = add(f, "later");
  REQUIRE(later);
  id_text(later, id_s, sizeof id_s);
  CHECK(post_ok(f, "/coda/api/tasks/%" PRIu64 "/cancel", later, id_s));
  CHECK_EQ_STR(listed(f, later), "cancelled");
  snprintf(path, sizeof path, "/coda/api/tasks/%" PRIu64 "/cancel", later);
  CHECK_EQ_INT(post(f, path, &j), 409);
  json_decref(j);
  CHECK(post_ok(f, "/coda/api/tasks/%" PRIu64 "/delete", later, id_s));
  CHECK_EQ_STR(listed(f, later), "");
  snprintf(path, sizeof path, "/coda/api/tasks/%" PRIu64, later);
  CHECK_EQ_INT(get(f, path, &j), 404);
  json_decref(j);
  snprintf(path, sizeof path, "/coda/api/tasks/%" PRIu64 "/delete", later);
  CHECK_EQ_INT(post(f, path, &j), 404);
  json_decref(j);

  /* The bulk forms touch one queue. */
  uint64_t m1 = dead_task(f, "mailer"), m2 = dead_task(f, "mailer"),
           d1 = dead_task(f, "bad");
  REQUIRE(m1 && m2 && d1);
  CHECK_EQ_INT(post(f, "/coda/api/tasks/delete?state=dead&queue=mail", &j), 200);
  CHECK_EQ_INT(num(j, "count"), 2);
  json_decref(j);
  CHECK_EQ_STR(listed(f, m1), "");
  CHECK_EQ_STR(listed(f, m2), "");
  CHECK_EQ_STR(listed(f, d1), "dead");
  atomic_store(&bad_fails, 0);
  CHECK_EQ_INT(post(f, "/coda/api/tasks/retry?state=dead", &j), 200);
  CHECK_EQ_INT(num(j, "count"), 1);
  json_decref(j);
  CHECK(wait_state(f, d1, CODA_STATE_SUCCEEDED));
  atomic_store(&bad_fails, 1);
  CHECK_EQ_INT(post(f, "/coda/api/tasks/retry?state=queued", &j), 400);
  json_decref(j);
  CHECK_EQ_INT(post(f, "/coda/api/tasks/retry", &j), 400);
  json_decref(j);
  CHECK_EQ_INT(post(f, "/coda/api/tasks/delete?state=running", &j), 400);
  json_decref(j);
  CHECK_EQ_INT(post(f, "/coda/api/tasks/delete?state=scheduled", &j), 400);
  json_decref(j);
  CHECK_EQ_INT(post(f, "/coda/api/tasks/delete?state=dead&queue=q%0Ax", &j), 400);
  json_decref(j);

  /* Pause and resume a queue. */
  CHECK_EQ_INT(post(f, "/coda/api/queues/mail/pause", &j), 200);
  CHECK_EQ_STR(str(j, "queue"), "mail");
  CHECK(json_is_true(json_object_get(j, "paused")));
  json_decref(j);
  CHECK_EQ_INT(get(f, "/coda/api/queues", &j), 200);
  json_t *qs = json_object_get(j, "queues");
  int seen = 0;
  for (size_t i = 0; i < json_array_size(qs); i++)
    if (strcmp(str(json_array_get(qs, i), "name"), "mail") == 0) {
      seen = 1;
      CHECK(json_is_true(json_object_get(json_array_get(qs, i), "paused")));
    }
  CHECK(seen);
  json_decref(j);
  CHECK_EQ_INT(post(f, "/coda/api/queues/mail/resume", &j), 200);
  CHECK(json_is_false(json_object_get(j, "paused")));
  json_decref(j);
  CHECK_EQ_INT(post(f, "/coda/api/queues/bad%20name/pause", &j), 400);
  json_decref(j);

  /* Counted: retry 1, cancel 1, delete 1, each bulk 1, pause 1, resume 1. */
  static const int want[CODA__ADMIN_ACT_COUNT_] = {1, 1, 1, 1, 1, 1, 1};
  for (int i = 0; i < CODA__ADMIN_ACT_COUNT_; i++)
    CHECK_EQ_INT(coda__admin_counted(a, (coda__admin_action)i) - before[i], want[i]);
  char *text = NULL;
  CHECK_EQ_INT(coda_app_metrics_text(f->app, &text, NULL), 0);
  CHECK(text && strstr(text, "coda_admin_actions_total{action=\"retry\"} 1\n") != NULL);
  free(text);
}

TEST(actions_by_bearer_change_the_store) {
  fixture f;
  FOR_EACH_STORE(f) actions_of(&f);
}

static void refusals_of(fixture *f) {
  uint64_t dead = dead_task(f, "bad");
  REQUIRE(dead);
  coda__admin *a = coda__admin_of(f->app);
  uint64_t retried = coda__admin_counted(a, CODA__ADMIN_ACT_RETRY);
  char path[128], head[512], csrf[80];
  json_t *j;
  snprintf(path, sizeof path, "/coda/api/tasks/%" PRIu64 "/retry", dead);
  CHECK_EQ_INT(call(f, "POST", path, "", &j), 401);
  json_decref(j);
  CHECK_EQ_INT(
      call(f, "POST", path, "Authorization: Bearer wrong-token-0123456789\r\n", &j), 401);
  json_decref(j);
  CHECK_EQ_INT(call(f, "POST", path, "Cookie: coda_admin=" TOKEN "\r\n", &j), 403);
  json_decref(j);
  CHECK_EQ_INT(call(f, "POST", "/coda/api/tasks/delete?state=dead",
                    "Cookie: coda_admin=" TOKEN "\r\nX-Coda-CSRF: 0123\r\n", &j),
               403);
  json_decref(j);
  CHECK_EQ_INT(call(f, "POST", "/coda/api/queues/default/pause", "", &j), 401);
  json_decref(j);
  CHECK_EQ_INT(call(f, "GET", "/coda/api/tasks", "", &j), 401);
  json_decref(j);
  /* Nothing changed. */
  CHECK_EQ_INT(state_of(f, dead), CODA_STATE_DEAD);
  CHECK_EQ_STR(listed(f, dead), "dead");
  CHECK_EQ_INT(coda__admin_counted(a, CODA__ADMIN_ACT_RETRY), retried);
  CHECK_EQ_INT(get(f, "/coda/api/queues", &j), 200);
  json_t *qs = json_object_get(j, "queues");
  for (size_t i = 0; i < json_array_size(qs); i++)
    CHECK(json_is_false(json_object_get(json_array_get(qs, i), "paused")));
  json_decref(j);
  /* The cookie with the session's CSRF token goes through. */
  CHECK_EQ_INT(get(f, "/coda/api/session", &j), 200);
  snprintf(csrf, sizeof csrf, "%s", str(j, "csrf") ? str(j, "csrf") : "");
  json_decref(j);
  snprintf(head, sizeof head, "Cookie: coda_admin=" TOKEN "\r\nX-Coda-CSRF: %s\r\n",
           csrf);
  CHECK_EQ_INT(call(f, "POST", path, head, &j), 200);
  json_decref(j);
  CHECK(wait_attempts(f, dead, 2)); /* retried: it ran (and failed) again */
  CHECK_EQ_STR(listed(f, dead), "dead");
  CHECK_EQ_INT(coda__admin_counted(a, CODA__ADMIN_ACT_RETRY), retried + 1);
}

TEST(actions_without_credentials_change_nothing) {
  fixture f;
  FOR_EACH_STORE(f) refusals_of(&f);
}

/* An action does not hold the event loop while the store writes it. A
 * second SQLite connection (as an operator's sqlite3 shell) holds the
 * file's write lock, so the store thread waits for it to delete a
 * succeeded task; meanwhile, on the
 * server's one event loop, another request is answered at once, and the
 * action's own answer comes only once the lock is let go. (Before, the
 * handler waited on the loop for the store thread: nothing else on that
 * loop was answered until the busy timeout.) */
TEST(an_action_does_not_hold_the_event_loop) {
  int have = 0;
  for (int i = 0; i < st.n; i++)
    have |= strcmp(st.kinds[i], "sqlite") == 0;
  if (!have) {
    fprintf(stderr, "  sqlite not among the stores: nothing to check\n");
    return;
  }
  fixture f;
  REQUIRE(fixture_start(&f, "sqlite") == 0);
  /* A succeeded task: deleting it is a write, which must wait for the lock. */
  uint64_t done = add(&f, "ok");
  REQUIRE(done != 0);
  REQUIRE(wait_state(&f, done, CODA_STATE_SUCCEEDED));
  sqlite3 *db = NULL;
  REQUIRE(sqlite3_open(f.uri + strlen("sqlite:"), &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);

  int act = tc_connect(f.ts.port, 10000);
  REQUIRE(act >= 0);
  REQUIRE(tc_send_str(act, "POST /coda/api/tasks/delete?state=succeeded HTTP/1.1\r\n"
                           "Host: x\r\nContent-Length: 0\r\n" BEARER "\r\n") == 0);
  /* The loop answers another request while the action waits for the lock
   * (a 404: nothing of the store is read). */
  char buf[4096];
  uint64_t t0 = tc_now_ms();
  CHECK_EQ_INT(tc_get(f.ts.port, "/nothing-here", buf, sizeof buf, 10000), 404);
  uint64_t took = tc_now_ms() - t0;
  /* ... and the action has not been answered: the lock is still held. */
  struct pollfd p = {.fd = act, .events = POLLIN};
  int early = poll(&p, 1, 0);
  if (early != 0 || took >= 1000)
    fprintf(stderr, "  the other request took %llu ms; the action answered before: %d\n",
            (unsigned long long)took, early);
  CHECK_EQ_INT(early, 0);

  REQUIRE(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
  size_t n = tc_read_response(act, buf, sizeof buf);
  CHECK(n > 0);
  /* 200 once the lock went in time; 503 if the store's busy timeout came
   * first (a very slow machine). Either way the action was answered. */
  int status = n ? tc_status(buf) : -1;
  if (getenv("ADMIN_TEST_LOG"))
    fprintf(stderr, "  the action: %d after %llu ms\n", status,
            (unsigned long long)(tc_now_ms() - t0));
  CHECK(status == 200 || status == 503);
  if (status == 200)
    CHECK_EQ_INT(state_of(&f, done), (coda_task_state)-1); /* deleted */
  close(act);
  sqlite3_close(db);
  /* The server goes on after it. */
  CHECK_EQ_INT(tc_get(f.ts.port, "/nothing-here", buf, sizeof buf, 10000), 404);
  fixture_stop(&f);
}

/* Without a task store the views are empty and actions find nothing. */
TEST(no_store_means_empty_views) {
  coda_app *app = coda_app_new();
  REQUIRE(app);
  coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
  fixture f;
  memset(&f, 0, sizeof f);
  f.app = app;
  current = "none";
  REQUIRE(coda_app_admin(app, TOKEN) == 0);
  REQUIRE(ts_start(&f.ts, app) == 0);
  f.started = 1;
  json_t *j;
  CHECK_EQ_INT(get(&f, "/coda/api/session", &j), 200);
  CHECK_EQ_STR(str(j, "store"), "none");
  json_decref(j);
  CHECK_EQ_INT(get(&f, "/coda/api/overview", &j), 200);
  CHECK_EQ_INT(num(json_object_get(j, "counts"), "dead"), 0);
  CHECK_EQ_INT(num(j, "nodes"), 0);
  json_decref(j);
  CHECK_EQ_INT(get(&f, "/coda/api/tasks", &j), 200);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "tasks")), 0);
  json_decref(j);
  CHECK_EQ_INT(get(&f, "/coda/api/queues", &j), 200);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "queues")), 0);
  json_decref(j);
  CHECK_EQ_INT(get(&f, "/coda/api/schedules", &j), 200);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "schedules")), 0);
  json_decref(j);
  CHECK_EQ_INT(post(&f, "/coda/api/tasks/1/retry", &j), 404);
  json_decref(j);
  CHECK_EQ_INT(post(&f, "/coda/api/queues/default/pause", &j), 409);
  json_decref(j);
  CHECK_EQ_INT(post(&f, "/coda/api/tasks/delete?state=dead", &j), 409);
  json_decref(j);
  fixture_stop(&f);
}

int main(void) {
  if (tc_stores_open(&st, "CODA_ADMIN_STORES", "admin") != 0) {
    tc_stores_close(&st);
    return 1;
  }
  static const test__case cases[] = {
      TEST_CASE(views_have_their_shape),
      TEST_CASE(tasks_are_paged_and_filtered),
      TEST_CASE(a_task_in_full_comes_back_as_exact_json),
      TEST_CASE(actions_by_bearer_change_the_store),
      TEST_CASE(actions_without_credentials_change_nothing),
      TEST_CASE(no_store_means_empty_views),
      TEST_CASE(an_action_does_not_hold_the_event_loop),
  };
  int rc = test__run("admin", cases, sizeof cases / sizeof cases[0]);
  tc_stores_close(&st);
  return rc;
}
