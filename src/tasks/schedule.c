/*
 * schedule.c - periodic tasks: coda_app_every() and coda_app_cron().
 *
 * Each due time adds one durable task, as coda_app_enqueue() does, with an
 * idempotency key made of the definition's name and the due time
 * ("periodic:tick:1764826020000") and run_at the due time. Every process
 * that schedules the definition against the same store computes the same
 * due times (wall clock, unix ms, UTC: multiples of the interval since the
 * epoch, or the cron expression's minutes) and adds the same key, and the
 * store keeps one task per key: each due time runs once, on whichever
 * processes are up.
 *
 * At start, the latest due time at or before now is added too, if it is
 * younger than CODA_OPT_TASK_RETAIN: the key is still in the store if some
 * process ran it (its task finished after its due time, so it cannot have
 * been purged yet), so it runs only if every process was down then. Older
 * missed due times are not run: one catch-up, never a burst. A due time
 * older than the retention is not caught up, since the store can no longer
 * tell whether it ran: keep the retention longer than the interval.
 *
 * Threads: a service of the server (added by the first schedule, after the
 * engine's, so it starts once the store thread runs and stops before it).
 * Its timers run on the control loop, one per schedule, armed for the
 * next due time only (no polling); they are unreferenced, so they never
 * keep the control loop alive, and stop at the drain: a stopping app adds
 * no new due time. Everything here is touched by the configuring thread
 * before coda_app_run(), then by the control thread only, except what the
 * store thread reports about a write (under the scheduler's `mu`).
 *
 * A due time whose add failed (refused at once, or its write failed on
 * the store thread, which says so through `async`) is tried again with
 * the app's task backoff (CODA_OPT_BACKOFF, doubling up to
 * CODA_OPT_BACKOFF_MAX) until it is added or the next due time replaces it:
 * a store down at a due time does not skip it on every process. The key
 * makes a retry of a write that did land a duplicate, not a second run.
 */
#include "tasks/cron.h"
#include "tasks/durable.h"
#include "tasks/task.h"

#include "server/server.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_INTERVAL_MS 10

typedef struct schedule {
  coda__scheduler *owner;
  coda_task_def *def;
  long interval_ms; /* 0: cron */
  coda__cron cron;
  char what[160]; /* "every 1000 ms", "cron \"*\/5 * * * *\"", for the logs */
  uv_timer_t timer;
  int timer_open;
  int64_t due; /* the due time the timer waits for */
  /* Control thread: the due time of the last add, the one whose add
   * failed and waits for `retry` (0: none), and how many tries it had. */
  int64_t tried, pending;
  int retries;
  uv_timer_t retry;
  int64_t failed_write; /* under the scheduler's mu: set by the store thread */
  /* Under the scheduler's mu, for coda_app_schedules() (any thread): the
   * due time armed, and the last one added. */
  int64_t next_run, last_run;
  char expr[128]; /* cron: the expression as given ("" for an interval) */
} schedule;

struct coda__scheduler {
  coda__engine *engine;
  coda__service service;
  schedule **items;
  int n, cap;
  atomic_long added, failed; /* due times added, and those that could not be */
  /* mu protects async_open and the schedules' failed_write: the store
   * thread reports a failed write through async until the stop closes it. */
  uv_mutex_t mu;
  uv_async_t async;
  int async_open;
};

/* What the store thread reports back about one add. */
typedef struct written {
  schedule *sc;
  int64_t due;
} written;

/* ---- due times ------------------------------------------------------------- */

static int64_t floor_to(int64_t t, int64_t step) {
  int64_t q = t / step;
  return (t % step != 0 && t < 0 ? q - 1 : q) * step;
}

/* The last due time at or before t (-1: none). */
static int64_t due_at_or_before(const schedule *sc, int64_t t) {
  return sc->interval_ms ? floor_to(t, sc->interval_ms) : coda__cron_prev(&sc->cron, t);
}

/* The first due time after t (-1: none). */
static int64_t due_after(const schedule *sc, int64_t t) {
  return sc->interval_ms ? floor_to(t, sc->interval_ms) + sc->interval_ms
                         : coda__cron_next(&sc->cron, t);
}

static void on_retry(uv_timer_t *timer);

/* The add of `due` failed: tried again after a backoff, unless a newer
 * due time was tried since (it replaces this one). Control thread. */
static void retry_later(schedule *sc, int64_t due, int rc) {
  coda__engine *e = sc->owner->engine;
  atomic_fetch_add_explicit(&sc->owner->failed, 1, memory_order_relaxed);
  if (due != sc->tried || !sc->timer_open || !e->durable)
    return;
  sc->pending = due;
  int64_t wait = coda__durable_backoff(e->durable, sc->def, ++sc->retries);
  uv_timer_start(&sc->retry, on_retry, (uint64_t)wait, 0);
  coda_log(e->app, CODA_LOG_WARN,
           "periodic task %s: due time %lld was not added (%s); tried again in %lld ms",
           sc->def->name, (long long)due, coda_strerror(rc), (long long)wait);
}

/* Store thread: the write of one add ended. A failure goes to the control
 * thread (on_write_failed). */
static void on_written(void *user, int rc) {
  written *w = user;
  schedule *sc = w->sc;
  coda__scheduler *sch = sc->owner;
  if (rc) {
    uv_mutex_lock(&sch->mu);
    if (sch->async_open) {
      if (w->due > sc->failed_write)
        sc->failed_write = w->due;
      uv_async_send(&sch->async);
    }
    uv_mutex_unlock(&sch->mu);
  }
  free(w);
}

static void on_write_failed(uv_async_t *a) {
  coda__scheduler *sch = a->data;
  for (int i = 0; i < sch->n; i++) {
    schedule *sc = sch->items[i];
    uv_mutex_lock(&sch->mu);
    int64_t due = sc->failed_write;
    sc->failed_write = 0;
    uv_mutex_unlock(&sch->mu);
    if (due)
      retry_later(sc, due, CODA_ESTORE);
  }
}

/* Adds the task of one due time. Control thread. */
static void add_due(schedule *sc, int64_t due) {
  coda__engine *e = sc->owner->engine;
  char key[300];
  snprintf(key, sizeof key, "periodic:%s:%lld", sc->def->name, (long long)due);
  coda_task_opts o = CODA_TASK_OPTS_INIT(.key = key, .run_at = due);
  sc->tried = due;
  written *w = malloc(sizeof *w);
  int rc;
  if (w) {
    *w = (written){sc, due};
    rc = coda__durable_enqueue_notify(e->app, sc->def, &o, on_written, w, "i",
                                      (int64_t)due);
    if (rc)
      free(w); /* not called back */
  } else {
    rc = coda_app_enqueue(e->app, sc->def, &o, "i", (int64_t)due); /* not told */
  }
  if (rc == 0) {
    atomic_fetch_add_explicit(&sc->owner->added, 1, memory_order_relaxed);
    uv_mutex_lock(&sc->owner->mu);
    if (due > sc->last_run)
      sc->last_run = due;
    uv_mutex_unlock(&sc->owner->mu);
    return;
  }
  if (rc == CODA_ESTATE) { /* the store stops: the app does too */
    atomic_fetch_add_explicit(&sc->owner->failed, 1, memory_order_relaxed);
    return;
  }
  retry_later(sc, due, rc);
}

static void on_retry(uv_timer_t *timer) {
  schedule *sc = timer->data;
  int64_t due = sc->pending;
  sc->pending = 0;
  if (due)
    add_due(sc, due);
}

static void on_due(uv_timer_t *timer);

/* Arms the timer for the first due time after `after`. */
static void arm(schedule *sc, int64_t after) {
  int64_t now = coda__unix_ms();
  sc->due = due_after(sc, after);
  uv_mutex_lock(&sc->owner->mu);
  sc->next_run = sc->due > 0 ? sc->due : 0;
  uv_mutex_unlock(&sc->owner->mu);
  if (sc->due < 0)
    return; /* a cron expression with no due time left in 400 years */
  int64_t wait = sc->due > now ? sc->due - now : 0;
  uv_timer_start(&sc->timer, on_due, (uint64_t)wait, 0);
}

static void on_due(uv_timer_t *timer) {
  schedule *sc = timer->data;
  int64_t now = coda__unix_ms();
  if (now < sc->due) { /* the wall clock lags the loop's clock: wait for it */
    uv_timer_start(&sc->timer, on_due, (uint64_t)(sc->due - now), 0);
    return;
  }
  /* Due times the loop slept through (a suspended process, a clock that
   * jumped) are not run one by one: the latest stands for them. */
  int64_t due = due_at_or_before(sc, now);
  /* A newer due time replaces one still waiting to be tried again. */
  uv_timer_stop(&sc->retry);
  sc->pending = 0;
  sc->retries = 0;
  add_due(sc, due > sc->due ? due : sc->due);
  arm(sc, now);
}

/* ---- the service --------------------------------------------------------- */

static int scheduler_start(void *data, coda__server *s, uv_loop_t *control) {
  coda__scheduler *sch = data;
  const coda__options *o = &sch->engine->app->opt;
  (void)s;
  int64_t now = coda__unix_ms();
  if (uv_async_init(control, &sch->async, on_write_failed) != 0)
    return CODA_ENOMEM;
  uv_unref((uv_handle_t *)&sch->async);
  sch->async.data = sch;
  uv_mutex_lock(&sch->mu);
  sch->async_open = 1;
  uv_mutex_unlock(&sch->mu);
  for (int i = 0; i < sch->n; i++) {
    schedule *sc = sch->items[i];
    uv_timer_init(control, &sc->timer);
    uv_unref((uv_handle_t *)&sc->timer);
    sc->timer.data = sc;
    uv_timer_init(control, &sc->retry);
    uv_unref((uv_handle_t *)&sc->retry);
    sc->retry.data = sc;
    sc->tried = sc->pending = sc->failed_write = 0;
    sc->retries = 0;
    sc->timer_open = 1;
    int64_t last = due_at_or_before(sc, now);
    if (last >= 0 && (o->task_retain == 0 || last > now - o->task_retain))
      add_due(sc, last); /* runs only if no process ran it */
    arm(sc, now);
    CODA__LOG(sch->engine->app, CODA_LOG_INFO, "periodic task %s: %s", sc->def->name,
              sc->what);
  }
  return 0;
}

static void scheduler_drain(void *data) {
  coda__scheduler *sch = data;
  for (int i = 0; i < sch->n; i++)
    if (sch->items[i]->timer_open) {
      uv_timer_stop(&sch->items[i]->timer);
      uv_timer_stop(&sch->items[i]->retry);
    }
}

/* After every loop has ended; the control loop runs once more, which
 * completes the closes. */
static void scheduler_stop(void *data) {
  coda__scheduler *sch = data;
  uv_mutex_lock(&sch->mu);
  int async_open = sch->async_open;
  sch->async_open = 0; /* the store thread reports no more */
  uv_mutex_unlock(&sch->mu);
  if (async_open)
    uv_close((uv_handle_t *)&sch->async, NULL);
  for (int i = 0; i < sch->n; i++) {
    schedule *sc = sch->items[i];
    if (sc->timer_open && !uv_is_closing((uv_handle_t *)&sc->timer)) {
      uv_close((uv_handle_t *)&sc->timer, NULL);
      uv_close((uv_handle_t *)&sc->retry, NULL);
    }
    sc->timer_open = 0;
  }
}

static size_t scheduler_stats_json(void *data, char *buf, size_t cap) {
  coda__scheduler *sch = data;
  return (size_t)snprintf(buf, cap,
                          ",\"periodic\":{\"schedules\":%d,\"added\":%ld,\"failed\":%ld}",
                          sch->n, atomic_load(&sch->added), atomic_load(&sch->failed));
}

/* The app's scheduler, made and added as a service by the first schedule. */
static coda__scheduler *scheduler_of(coda__engine *e) {
  if (e->scheduler)
    return e->scheduler;
  coda__scheduler *sch = calloc(1, sizeof *sch);
  if (!sch)
    return NULL;
  sch->engine = e;
  uv_mutex_init(&sch->mu);
  sch->service = (coda__service){.name = "the periodic tasks",
                                 .data = sch,
                                 .start = scheduler_start,
                                 .drain = scheduler_drain,
                                 .stop = scheduler_stop,
                                 .stats_json = scheduler_stats_json};
  if (coda__app_add_service(e->app, &sch->service) != 0) {
    uv_mutex_destroy(&sch->mu);
    free(sch);
    return NULL;
  }
  e->scheduler = sch;
  return sch;
}

void coda__schedule_free(coda__engine *e) {
  coda__scheduler *sch = e->scheduler;
  if (!sch)
    return;
  for (int i = 0; i < sch->n; i++)
    free(sch->items[i]);
  free(sch->items);
  uv_mutex_destroy(&sch->mu);
  free(sch);
  e->scheduler = NULL;
}

/* ---- the calls --------------------------------------------------------------- */

static int add_schedule(coda_app *app, coda_task_def *def, schedule *sc) {
  coda__engine *e = app ? coda__engine_peek(app) : NULL;
  if (!e || !def || def->engine != e)
    return CODA_EINVAL;
  if (atomic_load(&app->running) || atomic_load(&app->server))
    return CODA_ESTATE; /* the server, made by coda_app_bind(), has its services */
  coda__scheduler *sch = e->scheduler;
  for (int i = 0; sch && i < sch->n; i++)
    if (sch->items[i]->def == def)
      return CODA_EEXIST; /* one schedule per definition */
  if (!(sch = scheduler_of(e)))
    return CODA_ENOMEM;
  if (sch->n == sch->cap) {
    int cap = sch->cap ? sch->cap * 2 : 4;
    schedule **items = realloc(sch->items, (size_t)cap * sizeof *items);
    if (!items)
      return CODA_ENOMEM;
    sch->items = items;
    sch->cap = cap;
  }
  schedule *copy = malloc(sizeof *copy);
  if (!copy)
    return CODA_ENOMEM;
  *copy = *sc;
  copy->owner = sch;
  copy->def = def;
  sch->items[sch->n++] = copy;
  return 0;
}

int coda_app_every(coda_app *app, coda_task_def *def, long interval_ms) {
  if (interval_ms < MIN_INTERVAL_MS)
    return CODA_EINVAL;
  schedule sc = {.interval_ms = interval_ms};
  snprintf(sc.what, sizeof sc.what, "every %ld ms", interval_ms);
  return add_schedule(app, def, &sc);
}

int coda_app_cron(coda_app *app, coda_task_def *def, const char *expr) {
  schedule sc = {0};
  char err[200];
  if (coda__cron_parse(expr, &sc.cron, err, sizeof err) != 0) {
    if (app)
      coda_log(app, CODA_LOG_ERROR, "periodic task %s: cron \"%s\": %s",
               def ? def->name : "?", expr ? expr : "", err);
    return CODA_EINVAL;
  }
  snprintf(sc.what, sizeof sc.what, "cron \"%.120s\" (UTC)", expr);
  snprintf(sc.expr, sizeof sc.expr, "%s", expr);
  return add_schedule(app, def, &sc);
}

int coda_app_schedules(coda_app *app, int (*fn)(const coda_schedule_info *, void *),
                       void *user) {
  coda__engine *e = app ? coda__engine_peek(app) : NULL;
  coda__scheduler *sch = e ? e->scheduler : NULL;
  if (!fn)
    return CODA_EINVAL;
  int given = 0;
  for (int i = 0; sch && i < sch->n; i++) {
    schedule *sc = sch->items[i];
    coda_schedule_info info = {.task = sc->def->name,
                               .every_ms = sc->interval_ms,
                               .cron = sc->interval_ms ? NULL : sc->expr};
    uv_mutex_lock(&sch->mu);
    info.next_run = sc->next_run;
    info.last_run = sc->last_run;
    uv_mutex_unlock(&sch->mu);
    given++;
    if (fn(&info, user))
      break;
  }
  return given;
}
