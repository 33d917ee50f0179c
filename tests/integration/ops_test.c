/*
 * ops_test.c - what operators do and see, through the public API, on each
 * store (memory, a SQLite file, a real redis-server started here): retry
 * a dead task and see it succeed; cancel a scheduled task and see it never
 * run; cancel a running THREAD task and see coda_task_cancelled(); cancel
 * a running PROCESS task that ignores it and see its worker killed after
 * the grace period; delete; retry and delete all dead tasks of one queue
 * only; queue statistics; the nodes (two apps on one Redis are two
 * nodes); the schedules; a task's history, arguments and origin.
 *
 * PROCESS workers re-run this program: main() registers the PROCESS task
 * on a registry app and calls coda_app_worker() before anything else.
 * CODA_OPS_STORES=memory,sqlite,redis picks the stores (default: all).
 */
#include "harness.h"
#include "stores.h"
#include "tasks/durable.h"
#include "test.h"

#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 20000
#define GRACE_MS 300


/* ---- tasks -------------------------------------------------------------------- */

static atomic_int fail_flaky = 1; /* flaky fails while set */
static atomic_int flaky_runs, note_runs, waiter_started, waiter_saw_cancel;

static int flaky_task(coda_task *t) {
  (void)t;
  atomic_fetch_add(&flaky_runs, 1);
  return atomic_load(&fail_flaky) ? coda_task_fail(t, "flaky <b>says</b> no") : 0;
}

static int note_task(coda_task *t) {
  (void)t;
  atomic_fetch_add(&note_runs, 1);
  return 0;
}

static int tick_task(coda_task *t) { /* the schedules' (not counted with note) */
  (void)t;
  return 0;
}

/* Runs until it is cancelled (at most WAIT_MS), then fails. */
static int waiter_task(coda_task *t) {
  atomic_store(&waiter_started, 1);
  uint64_t end = tc_now_ms() + WAIT_MS;
  while (!coda_task_cancelled(t) && tc_now_ms() < end)
    tc_sleep_ms(2);
  atomic_store(&waiter_saw_cancel, coda_task_cancelled(t));
  return -1;
}

/* A PROCESS task that ignores cancellation: only a kill ends it. */
static int stubborn_task(coda_task *t) {
  (void)t;
  for (int i = 0; i < 600; i++)
    sleep(1);
  return 0;
}

static void register_tasks(coda_app *app) {
  coda_app_task(app, "stubborn", stubborn_task, CODA_EXEC_PROCESS);
}

/* ---- apps ----------------------------------------------------------------------- */

typedef struct fixture {
  coda_app *app;
  coda_task_def *flaky, *note, *waiter, *stubborn, *tick, *report;
  test_server ts;
  int started;
} fixture;

static const char *current_store;

/* A new store URI of the kind `kind` (each case its own file or prefix). */
static tc_stores st; /* the stores every case runs on */

static void store_uri(const char *kind, char *uri, size_t cap) {
  tc_stores_uri(&st, kind, uri, cap);
}

static int h_add(coda_req *req, coda_res *res, void *user) {
  (void)req;
  coda_task_def *def = user;
  coda_task_opts o = CODA_TASK_OPTS_INIT(.flags = CODA_TASK_DURABLE);
  int rc = coda_res_add_task_opts(res, def, &o, "sib", "hello <script>", (int64_t)42,
                                  "\x01\x02", (size_t)2);
  if (rc)
    return rc;
  char body[32];
  snprintf(body, sizeof body, "%" PRIu64, o.id);
  coda_res_status(res, 202);
  return coda_res_body(res, body, strlen(body));
}

/* The store thread starts after the listener: wait until it runs. */
static int wait_running(coda_app *app) {
  coda__durable *d = coda__engine_peek(app)->durable;
  uint64_t end = tc_now_ms() + WAIT_MS;
  while (!atomic_load(&d->running) && tc_now_ms() < end)
    tc_sleep_ms(5);
  return atomic_load(&d->running) ? 0 : -1;
}

static int fixture_start_queues(fixture *f, const char *uri, int process_workers,
                                const char *queues) {
  memset(f, 0, sizeof *f);
  coda_app *app = f->app = coda_app_new();
  if (!app)
    return -1;
  coda_app_set(app, CODA_OPT_LOG_LEVEL,
               getenv("OPS_TEST_LOG") ? CODA_LOG_DEBUG : CODA_LOG_OFF);
  coda_app_set(app, CODA_OPT_THREADS, 1);
  coda_app_set(app, CODA_OPT_PROCESS_WORKERS, process_workers);
  coda_app_set(app, CODA_OPT_STORE_POLL, 20);
  coda_app_set(app, CODA_OPT_TASK_LEASE, 3000); /* beats every second */
  coda_app_set(app, CODA_OPT_CANCEL_GRACE_MS, GRACE_MS);
  f->flaky = coda_app_task(app, "flaky", flaky_task, CODA_EXEC_THREAD);
  f->note = coda_app_task(app, "note", note_task, CODA_EXEC_THREAD);
  f->waiter = coda_app_task(app, "waiter", waiter_task, CODA_EXEC_THREAD);
  f->stubborn = coda_app_task(app, "stubborn", stubborn_task, CODA_EXEC_PROCESS);
  f->tick = coda_app_task(app, "tick", tick_task, CODA_EXEC_THREAD);
  f->report = coda_app_task(app, "report", tick_task, CODA_EXEC_THREAD);
  if (!f->flaky || !f->note || !f->waiter || !f->stubborn || !f->tick || !f->report)
    return -1;
  coda_task_def_retry(f->flaky, 1, 10, 10);
  coda_task_def_retry(f->waiter, 3, 10, 10);
  coda_task_def_retry(f->stubborn, 3, 10, 10);
  coda_app_route(app, "GET", "/add/{what}", h_add, f->note);
  if (coda_app_every(app, f->tick, 3600000) != 0 ||
      coda_app_cron(app, f->report, "30 6 * * mon-fri") != 0)
    return -1;
  if (coda_app_queues(app, queues) != 0)
    return -1;
  if (coda_app_store(app, uri) != 0) {
    fprintf(stderr, "  coda_app_store(%s): %s\n", uri, coda_app_store_error(app));
    return -1;
  }
  if (ts_start(&f->ts, app) != 0)
    return -1;
  f->started = 1;
  return wait_running(app);
}

static int fixture_start(fixture *f, const char *uri, int process_workers) {
  return fixture_start_queues(f, uri, process_workers, NULL);
}

static void fixture_stop(fixture *f) {
  if (f->started)
    CHECK_EQ_INT(ts_stop(&f->ts), 0);
  if (f->app)
    CHECK_EQ_INT(tc_app_free(f->app, 5000), 0);
  f->started = 0;
  f->app = NULL;
}

static uint64_t add(fixture *f, coda_task_def *def, const char *queue, long delay_ms) {
  coda_task_opts o = CODA_TASK_OPTS_INIT(.delay_ms = delay_ms);
  (void)queue;
  if (coda_app_enqueue(f->app, def, &o, "") != 0 || coda_app_store_sync(f->app) != 0)
    return 0;
  return o.id;
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
  while (s != want && tc_now_ms() < end) {
    tc_sleep_ms(5);
    s = state_of(f, id);
  }
  if (s != want)
    fprintf(stderr, "  [%s] task %" PRIu64 " is %s, not %s\n", current_store, id,
            coda_task_state_name(s), coda_task_state_name(want));
  return s == want;
}

/* ---- the cases, run on each store --------------------------------------------- */

static void retry_dead(fixture *f) {
  atomic_store(&fail_flaky, 1);
  uint64_t id = add(f, f->flaky, NULL, 0);
  REQUIRE(id);
  REQUIRE(wait_state(f, id, CODA_STATE_DEAD));
  coda_task_info *info = NULL;
  REQUIRE(coda_task_get(f->app, id, &info) == 0);
  CHECK_EQ_INT(info->n_errors, 1);
  if (info->n_errors == 1) {
    CHECK_EQ_INT(info->errors[0].attempt, 1);
    CHECK_EQ_STR(info->errors[0].error, "flaky <b>says</b> no");
    CHECK(info->errors[0].at > 0);
  }
  CHECK_EQ_STR(info->queue, "default");
  coda_task_info_free(info);
  CHECK_EQ_INT(coda_task_retry(f->app, 999999999), CODA_ENOTFOUND);
  atomic_store(&fail_flaky, 0);
  CHECK_EQ_INT(coda_task_retry(f->app, id), 0);
  REQUIRE(wait_state(f, id, CODA_STATE_SUCCEEDED));
  REQUIRE(coda_task_get(f->app, id, &info) == 0);
  CHECK_EQ_INT(info->attempts, 2);
  CHECK_EQ_INT(info->max_attempts, 2); /* one more than it had */
  CHECK_EQ_INT(info->n_errors, 1);
  coda_task_info_free(info);
  CHECK_EQ_INT(coda_task_retry(f->app, id), CODA_ESTATE); /* it succeeded */
  CHECK_EQ_INT(coda_task_cancel(f->app, id), CODA_ESTATE);
}

static void cancel_scheduled(fixture *f) {
  int before = atomic_load(&note_runs);
  uint64_t id = add(f, f->note, NULL, 3600000);
  REQUIRE(id);
  CHECK_EQ_INT(state_of(f, id), CODA_STATE_QUEUED);
  CHECK_EQ_INT(coda_task_cancel(f->app, id), 0);
  CHECK_EQ_INT(state_of(f, id), CODA_STATE_CANCELLED);
  CHECK_EQ_INT(coda_task_cancel(f->app, id), CODA_ESTATE);
  /* A second task of the same queue, due now, runs: claims went by, and
   * the cancelled one was not among them. */
  uint64_t marker = add(f, f->note, NULL, 0);
  REQUIRE(wait_state(f, marker, CODA_STATE_SUCCEEDED));
  CHECK_EQ_INT(atomic_load(&note_runs) - before, 1);
  CHECK_EQ_INT(state_of(f, id), CODA_STATE_CANCELLED);
  /* Retried, a cancelled task runs after all. */
  CHECK_EQ_INT(coda_task_retry(f->app, id), 0);
  REQUIRE(wait_state(f, id, CODA_STATE_SUCCEEDED));
  CHECK_EQ_INT(atomic_load(&note_runs) - before, 2);
}

static void cancel_running_thread(fixture *f) {
  atomic_store(&waiter_started, 0);
  atomic_store(&waiter_saw_cancel, 0);
  uint64_t id = add(f, f->waiter, NULL, 0);
  REQUIRE(id);
  uint64_t end = tc_now_ms() + WAIT_MS;
  while (!atomic_load(&waiter_started) && tc_now_ms() < end)
    tc_sleep_ms(2);
  REQUIRE(atomic_load(&waiter_started));
  CHECK_EQ_INT(coda_task_cancel(f->app, id), 1);
  REQUIRE(wait_state(f, id, CODA_STATE_CANCELLED));
  CHECK_EQ_INT(atomic_load(&waiter_saw_cancel), 1);
  coda_task_info *info = NULL;
  REQUIRE(coda_task_get(f->app, id, &info) == 0);
  CHECK_EQ_INT(info->attempts, 1); /* not retried, though it had 3 */
  CHECK_EQ_INT(info->cancel_requested, 1);
  coda_task_info_free(info);
}

static void cancel_running_process(fixture *f) {
  uint64_t id = add(f, f->stubborn, NULL, 0);
  REQUIRE(id);
  REQUIRE(wait_state(f, id, CODA_STATE_RUNNING));
  /* Running in the store may still mean waiting for the worker: wait
   * until it has begun here (coda_task_get() shows it queued till then
   * only in the process that runs it, which is this one). */
  uint64_t t0 = tc_now_ms();
  CHECK_EQ_INT(coda_task_cancel(f->app, id), 1);
  REQUIRE(wait_state(f, id, CODA_STATE_CANCELLED));
  CHECK(tc_now_ms() - t0 >= GRACE_MS - 50);
  coda_task_info *info = NULL;
  REQUIRE(coda_task_get(f->app, id, &info) == 0);
  CHECK(info->error && strstr(info->error, "killed"));
  CHECK_EQ_INT(info->attempts, 1);
  coda_task_info_free(info);
}

static void delete_tasks(fixture *f) {
  atomic_store(&fail_flaky, 1);
  uint64_t dead = add(f, f->flaky, NULL, 0);
  REQUIRE(wait_state(f, dead, CODA_STATE_DEAD));
  CHECK_EQ_INT(coda_task_delete(f->app, dead), 0);
  coda_task_info *info = NULL;
  CHECK_EQ_INT(coda_task_get(f->app, dead, &info), CODA_ENOTFOUND);
  CHECK_EQ_INT(coda_task_delete(f->app, dead), CODA_ENOTFOUND);
  uint64_t later = add(f, f->note, NULL, 3600000);
  CHECK_EQ_INT(coda_task_delete(f->app, later), 0);
  CHECK_EQ_INT(coda_task_get(f->app, later, &info), CODA_ENOTFOUND);
  /* A running task cannot be deleted: cancel it first. */
  atomic_store(&waiter_started, 0);
  uint64_t running = add(f, f->waiter, NULL, 0);
  uint64_t end = tc_now_ms() + WAIT_MS;
  while (!atomic_load(&waiter_started) && tc_now_ms() < end)
    tc_sleep_ms(2);
  CHECK_EQ_INT(coda_task_delete(f->app, running), CODA_ESTATE);
  CHECK_EQ_INT(coda_task_cancel(f->app, running), 1);
  REQUIRE(wait_state(f, running, CODA_STATE_CANCELLED));
  CHECK_EQ_INT(coda_task_delete(f->app, running), 0);
}

typedef struct queue_seen {
  coda_queue_info q[8];
  char names[8][65];
  int n;
} queue_seen;

static int on_queue(const coda_queue_info *q, void *user) {
  queue_seen *s = user;
  if (s->n < 8) {
    s->q[s->n] = *q;
    snprintf(s->names[s->n], sizeof s->names[0], "%s", q->name);
    s->q[s->n].name = s->names[s->n];
    s->n++;
  }
  return 0;
}

static const coda_queue_info *find_queue(const queue_seen *s, const char *name) {
  for (int i = 0; i < s->n; i++)
    if (strcmp(s->names[i], name) == 0)
      return &s->q[i];
  return NULL;
}

/* Dead tasks in queues "a" and "b": retry all of "a" (they succeed now),
 * delete all of "b"; the others are left alone. Then the queues' numbers. */
static void bulk_and_stats(fixture *f, coda_task_def *in_a, coda_task_def *in_b) {
  atomic_store(&fail_flaky, 1);
  uint64_t a[3], b[2];
  for (int i = 0; i < 3; i++)
    a[i] = add(f, in_a, NULL, 0);
  for (int i = 0; i < 2; i++)
    b[i] = add(f, in_b, NULL, 0);
  for (int i = 0; i < 3; i++)
    REQUIRE(wait_state(f, a[i], CODA_STATE_DEAD));
  for (int i = 0; i < 2; i++)
    REQUIRE(wait_state(f, b[i], CODA_STATE_DEAD));
  uint64_t later = add(f, in_a, NULL, 3600000); /* scheduled */
  REQUIRE(later);
  queue_seen s = {0};
  CHECK(coda_app_queue_stats(f->app, on_queue, &s) >= 2);
  const coda_queue_info *qa = find_queue(&s, "a"), *qb = find_queue(&s, "b");
  REQUIRE(qa && qb);
  CHECK_EQ_INT(qa->counts[CODA_STATE_DEAD], 3);
  CHECK_EQ_INT(qa->counts[CODA_STATE_QUEUED], 1);
  CHECK_EQ_INT(qa->scheduled, 1);
  CHECK_EQ_INT(qa->oldest_due_at, 0);
  CHECK_EQ_INT(qa->failed, 3);
  CHECK_EQ_INT(qa->processed, 0);
  CHECK_EQ_INT(qb->counts[CODA_STATE_DEAD], 2);
  CHECK_EQ_INT(qb->failed, 2);
  CHECK_EQ_INT(qa->paused, 0);

  CHECK_EQ_INT(coda_tasks_retry_all(f->app, CODA_STATE_RUNNING, "a"), CODA_EINVAL);
  atomic_store(&fail_flaky, 0);
  CHECK_EQ_INT(coda_tasks_retry_all(f->app, CODA_STATE_DEAD, "a"), 3);
  for (int i = 0; i < 3; i++)
    CHECK(wait_state(f, a[i], CODA_STATE_SUCCEEDED));
  for (int i = 0; i < 2; i++)
    CHECK_EQ_INT(state_of(f, b[i]), CODA_STATE_DEAD); /* another queue */
  CHECK_EQ_INT(coda_tasks_delete_all(f->app, CODA_STATE_DEAD, "b"), 2);
  for (int i = 0; i < 2; i++)
    CHECK_EQ_INT((int)state_of(f, b[i]), -1);
  CHECK_EQ_INT(state_of(f, later), CODA_STATE_QUEUED);

  /* A paused queue with a due task: paused, and its oldest due known. */
  CHECK_EQ_INT(coda_app_queue_pause(f->app, "a", 1), 0);
  uint64_t due = add(f, in_a, NULL, 0);
  memset(&s, 0, sizeof s);
  CHECK(coda_app_queue_stats(f->app, on_queue, &s) >= 2);
  qa = find_queue(&s, "a");
  qb = find_queue(&s, "b");
  REQUIRE(qa && qb);
  CHECK_EQ_INT(qa->paused, 1);
  CHECK_EQ_INT(qa->counts[CODA_STATE_SUCCEEDED], 3);
  CHECK_EQ_INT(qa->counts[CODA_STATE_DEAD], 0);
  CHECK_EQ_INT(qa->counts[CODA_STATE_QUEUED], 2);
  CHECK_EQ_INT(qa->scheduled, 1);
  int64_t now_ms = (int64_t)tc_wall_ms() + 1000;
  if (!(qa->oldest_due_at > 0 && qa->oldest_due_at <= now_ms))
    fprintf(stderr, "  [%s] oldest due %lld, now about %lld, task %llu is %d\n", current_store,
            (long long)qa->oldest_due_at, (long long)now_ms, (unsigned long long)due,
            (int)state_of(f, due));
  CHECK(qa->oldest_due_at > 0 && qa->oldest_due_at <= now_ms);
  CHECK_EQ_INT(qa->processed, 3);
  CHECK_EQ_INT(qa->failed, 3);
  CHECK_EQ_INT(qb->counts[CODA_STATE_DEAD], 0);
  CHECK_EQ_INT(coda_app_queue_pause(f->app, "a", 0), 0);
  CHECK(wait_state(f, due, CODA_STATE_SUCCEEDED));
}

typedef struct nodes_seen {
  int n, self, servers;
  char ids[4][320];
} nodes_seen;

static int on_node(const coda_node_info *n, void *user) {
  nodes_seen *s = user;
  if (s->n < 4)
    snprintf(s->ids[s->n], sizeof s->ids[0], "%s", n->id);
  s->n++;
  s->self += n->pid == (int)getpid();
  s->servers += strcmp(n->role, "server") == 0 && n->listen[0] && n->started_at > 0 &&
                n->last_seen >= n->started_at && strcmp(n->version, coda_version()) == 0;
  return 0;
}

static int count_nodes(coda_app *app, nodes_seen *s, int want) {
  uint64_t end = tc_now_ms() + WAIT_MS;
  for (;;) {
    memset(s, 0, sizeof *s);
    int rc = coda_app_nodes(app, on_node, s);
    if (rc == want || tc_now_ms() >= end)
      return rc;
    tc_sleep_ms(10);
  }
}

typedef struct schedules_seen {
  int n, every, cron;
} schedules_seen;

static int on_schedule(const coda_schedule_info *sc, void *user) {
  schedules_seen *s = user;
  int64_t now = (int64_t)tc_wall_ms();
  s->n++;
  if (strcmp(sc->task, "tick") == 0 && sc->every_ms == 3600000 && !sc->cron &&
      sc->next_run > now && sc->next_run <= now + 3600000 + 1000 && sc->last_run > 0 &&
      sc->last_run <= now + 1000)
    s->every++; /* its catch-up due time was added at start */
  if (strcmp(sc->task, "report") == 0 && sc->every_ms == 0 && sc->cron &&
      strcmp(sc->cron, "30 6 * * mon-fri") == 0 && sc->next_run > now)
    s->cron++;
  return 0;
}

static void views(fixture *f) {
  nodes_seen ns;
  CHECK_EQ_INT(count_nodes(f->app, &ns, 1), 1);
  CHECK_EQ_INT(ns.self, 1);
  CHECK_EQ_INT(ns.servers, 1);
  schedules_seen ss = {0};
  uint64_t end = tc_now_ms() + WAIT_MS;
  while (tc_now_ms() < end) { /* last_run: once the catch-up add is written */
    memset(&ss, 0, sizeof ss);
    CHECK_EQ_INT(coda_app_schedules(f->app, on_schedule, &ss), 2);
    if (ss.every && ss.cron)
      break;
    tc_sleep_ms(10);
  }
  CHECK_EQ_INT(ss.every, 1);
  CHECK_EQ_INT(ss.cron, 1);
}

/* A task added by a request: its origin, request id, traceparent and
 * arguments come back. */
static void origin_and_args(fixture *f) {
  int fd = tc_connect(f->ts.port, 5000);
  REQUIRE(fd >= 0);
  const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  char req[512], resp[4096];
  snprintf(req, sizeof req, "GET /add/x HTTP/1.1\r\nHost: t\r\ntraceparent: %s\r\n\r\n",
           tp);
  REQUIRE(tc_send_str(fd, req) == 0);
  REQUIRE(tc_read_response(fd, resp, sizeof resp) > 0);
  close(fd);
  CHECK_EQ_INT(tc_status(resp), 202);
  uint64_t id = strtoull(tc_body(resp), NULL, 10);
  REQUIRE(id);
  REQUIRE(wait_state(f, id, CODA_STATE_SUCCEEDED));
  coda_task_info *info = NULL;
  REQUIRE(coda_task_get(f->app, id, &info) == 0);
  CHECK_EQ_STR(info->trace, tp);
  CHECK_EQ_STR(info->origin, "GET /add/{what}");
  CHECK(info->request_id > 0);
  char json[256];
  size_t n = coda_task_args_json(info, json, sizeof json);
  CHECK_EQ_STR(json, "[\"hello <script>\",42,{\"base64\":\"AQI=\"}]");
  CHECK_EQ_INT(n, strlen(json));
  coda_task_info_free(info);
}

static void run_on_stores(void (*fn)(fixture *), int process_workers) {
  for (int i = 0; i < st.n; i++) {
    char uri[PATH_MAX + 64];
    current_store = st.kinds[i];
    store_uri(st.kinds[i], uri, sizeof uri);
    fixture f;
    int ok = fixture_start(&f, uri, process_workers) == 0;
    CHECK(ok);
    if (ok)
      fn(&f);
    fixture_stop(&f);
  }
}

static void bulk_case(fixture *f) {
  /* Queues need definitions of their own: made before the run, so this
   * case starts its own app. */
  (void)f;
}

TEST(a_dead_task_retried_succeeds) { run_on_stores(retry_dead, 0); }
TEST(a_cancelled_scheduled_task_never_runs) { run_on_stores(cancel_scheduled, 0); }
TEST(a_cancelled_running_thread_task_sees_it) { run_on_stores(cancel_running_thread, 0); }
TEST(a_cancelled_process_task_is_killed_after_the_grace) {
  run_on_stores(cancel_running_process, 1);
}
TEST(tasks_are_deleted_but_not_while_running) { run_on_stores(delete_tasks, 0); }
TEST(views_list_this_node_and_the_schedules) { run_on_stores(views, 0); }
TEST(a_request_s_origin_and_arguments_are_kept) { run_on_stores(origin_and_args, 0); }

TEST(bulk_actions_touch_one_queue_and_stats_count) {
  (void)bulk_case;
  for (int i = 0; i < st.n; i++) {
    char uri[PATH_MAX + 64];
    current_store = st.kinds[i];
    store_uri(st.kinds[i], uri, sizeof uri);
    fixture f;
    memset(&f, 0, sizeof f);
    /* fixture_start() with two more definitions, in queues a and b. */
    coda_app *app = f.app = coda_app_new();
    REQUIRE(app);
    coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
    coda_app_set(app, CODA_OPT_THREADS, 1);
    coda_app_set(app, CODA_OPT_PROCESS_WORKERS, 0);
    coda_app_set(app, CODA_OPT_STORE_POLL, 20);
    coda_task_def *in_a = coda_app_task(app, "flaky_a", flaky_task, CODA_EXEC_THREAD);
    coda_task_def *in_b = coda_app_task(app, "flaky_b", flaky_task, CODA_EXEC_THREAD);
    REQUIRE(in_a && in_b);
    coda_task_def_queue(in_a, "a");
    coda_task_def_queue(in_b, "b");
    coda_task_def_retry(in_a, 1, 10, 10);
    coda_task_def_retry(in_b, 1, 10, 10);
    coda_task_def_durable(in_a, 1);
    coda_task_def_durable(in_b, 1);
    REQUIRE(coda_app_store(app, uri) == 0);
    REQUIRE(ts_start(&f.ts, app) == 0);
    f.started = 1;
    REQUIRE(wait_running(app) == 0);
    bulk_and_stats(&f, in_a, in_b);
    fixture_stop(&f);
  }
}

/* Two apps on one Redis are two nodes, each seen from the other. */
TEST(nodes_of_a_fleet_are_listed) {
  if (!st.redis_up) {
    fprintf(stderr, "  (redis not in CODA_OPS_STORES: skipped)\n");
    return;
  }
  char uri[256];
  store_uri("redis", uri, sizeof uri);
  fixture f1, f2;
  int ok1 = fixture_start(&f1, uri, 0) == 0, ok2 = fixture_start(&f2, uri, 0) == 0;
  CHECK(ok1 && ok2);
  if (ok1 && ok2) {
    nodes_seen a, b;
    CHECK_EQ_INT(count_nodes(f1.app, &a, 2), 2);
    CHECK_EQ_INT(count_nodes(f2.app, &b, 2), 2);
    CHECK_EQ_INT(a.servers, 2);
    CHECK(strcmp(a.ids[0], a.ids[1]) != 0);
    fixture_stop(&f2);
    /* Its record is withdrawn at the stop. */
    CHECK_EQ_INT(count_nodes(f1.app, &a, 1), 1);
  }
  fixture_stop(&f1);
  if (!ok1 || !ok2)
    fixture_stop(&f2);
}

/* A task running in another process of the fleet hears of its cancel at
 * that process's next lease renewal (store.h: renew() reports 2). */
TEST(a_cancel_reaches_a_task_running_elsewhere) {
  if (!st.redis_up) {
    fprintf(stderr, "  (redis not in CODA_OPS_STORES: skipped)\n");
    return;
  }
  char uri[256];
  store_uri("redis", uri, sizeof uri);
  fixture adder, runner;
  int ok1 = fixture_start_queues(&adder, uri, 0, "elsewhere") == 0;
  int ok2 = ok1 && fixture_start_queues(&runner, uri, 0, "default") == 0;
  CHECK(ok1 && ok2);
  if (ok2) {
    atomic_store(&waiter_started, 0);
    atomic_store(&waiter_saw_cancel, 0);
    uint64_t id = add(&adder, adder.waiter, NULL, 0);
    uint64_t end = tc_now_ms() + WAIT_MS;
    while (!atomic_load(&waiter_started) && tc_now_ms() < end)
      tc_sleep_ms(2);
    REQUIRE(atomic_load(&waiter_started));
    uint64_t t0 = tc_now_ms();
    CHECK_EQ_INT(coda_task_cancel(adder.app, id), 1); /* not alive in `adder` */
    CHECK(wait_state(&adder, id, CODA_STATE_CANCELLED));
    CHECK_EQ_INT(atomic_load(&waiter_saw_cancel), 1);
    CHECK(tc_now_ms() - t0 < 5000); /* a beat is a second here */
    coda_task_info *info = NULL;
    if (coda_task_get(adder.app, id, &info) == 0) {
      CHECK_EQ_INT(info->attempts, 1);
      CHECK_EQ_INT(info->cancel_requested, 1);
      CHECK_EQ_INT(info->n_errors, 1);
      coda_task_info_free(info);
    }
    fixture_stop(&runner);
  }
  fixture_stop(&adder);
}

int main(void) {
  coda_app *registry = coda_app_new();
  register_tasks(registry);
  coda_app_worker(registry); /* a PROCESS worker stops here */
  coda_app_free(registry);
  if (tc_stores_open(&st, "CODA_OPS_STORES", "ops") != 0) {
    tc_stores_close(&st);
    return 1;
  }
  static const test__case cases[] = {
      TEST_CASE(a_dead_task_retried_succeeds),
      TEST_CASE(a_cancelled_scheduled_task_never_runs),
      TEST_CASE(a_cancelled_running_thread_task_sees_it),
      TEST_CASE(a_cancelled_process_task_is_killed_after_the_grace),
      TEST_CASE(tasks_are_deleted_but_not_while_running),
      TEST_CASE(bulk_actions_touch_one_queue_and_stats_count),
      TEST_CASE(views_list_this_node_and_the_schedules),
      TEST_CASE(a_request_s_origin_and_arguments_are_kept),
      TEST_CASE(nodes_of_a_fleet_are_listed),
      TEST_CASE(a_cancel_reaches_a_task_running_elsewhere),
  };
  int rc = test__run("ops", cases, sizeof cases / sizeof cases[0]);
  tc_stores_close(&st);
  return rc;
}
