/*
 * task.c - task definitions, argument packing, runs, outcomes and counters
 * (see task.h for the threading rules).
 *
 * A task is one allocation: the struct, its argument descriptors and the
 * copied argument bytes. Its queue slot is taken when it is added and given
 * back when it ends, however it ends, so an executor's queue can never hold
 * more than its configured bound, counting tasks that wait for their
 * response to be written.
 */
#include "tasks/task.h"

#include "app/exchange.h"
#include "app/router.h"
#include "common/error.h"
#include "server/server.h"

#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TASK_ARGS CODA__ARGS_MAX

static const char *const executor_names[] = {"default", "loop", "thread", "process"};

const char *coda_executor_name(coda_executor ex) {
  return ex >= 0 && ex < CODA_EXEC_COUNT_ ? executor_names[ex] : "unknown";
}

static coda_executor resolve_executor(coda_executor ex) {
  return ex == CODA_EXEC_DEFAULT ? CODA_EXEC_THREAD : ex;
}

static void run_free(coda_tasks *run);
static void task_free(coda_task *t);

static void free_task_loop(coda__task_loop *tl) {
  coda__loop_executor_destroy(tl);
  free(tl);
}

/* ---- engine and definitions ----------------------------------------- */

int coda__engine_free(void *data) {
  coda__engine *e = data;
  /* A thread task left running at shutdown may still touch the engine and
   * the app: they stay until it returns. */
  if (e->left_threads && coda__thread_pool_release(e->left_threads) != 0)
    return CODA_ESTATE;
  e->left_threads = NULL;
  if (e->left_procs)
    coda__process_pool_free(e->left_procs);
  e->left_procs = NULL;
  for (int i = 0; i < e->ndefs; i++) {
    free(e->defs[i]->name);
    free(e->defs[i]->queue);
    free(e->defs[i]);
  }
  for (int i = 0; i < e->nqueues; i++)
    free(e->queues[i]);
  free(e->queues);
  free(e->defs);
  for (int i = 0; i < e->nroute_lists; i++) {
    coda_tasks *l = e->route_lists[i];
    for (int k = 0; k < l->n; k++)
      coda__task_free_template(l->tasks[k]);
    run_free(l);
  }
  free(e->route_lists);
  for (int i = 0; i < e->nloops; i++)
    free_task_loop(e->loops[i]);
  free(e->loops);
  while (e->retired) {
    coda__task_loop *tl = e->retired;
    e->retired = tl->retired;
    free_task_loop(tl);
  }
  uv_mutex_destroy(&e->loops_mu);
  coda__durable_free(e);
  coda__schedule_free(e);
  free(e);
  return 0;
}

/* ---- the engine as a service of the server ----------------------------- */

static int service_start(void *data, coda__server *s, uv_loop_t *control) {
  coda__engine *e = data;
  e->server = s;
  return coda__engine_start(e, control);
}

static int service_loop_init(void *data, coda__loop *loop) {
  coda__engine *e = data;
  coda__task_loop *tl =
      coda__engine_add_loop(e, coda__loop_uv(loop), coda__loop_inbox(loop));
  if (!tl)
    return CODA_ENOMEM;
  coda__loop_set_slot(loop, e->loop_slot, tl);
  return 0;
}

static void service_loop_close(void *data, coda__loop *loop) {
  coda__engine *e = data;
  coda__task_loop *tl = coda__loop_slot(loop, e->loop_slot);
  if (tl)
    coda__engine_loop_close(tl);
}

static void service_ready(void *data) { coda__engine_ready(data); }
static void service_drain(void *data) { coda__engine_drain(data); }

static long service_outstanding(void *data) {
  coda__engine *e = data;
  return atomic_load(&e->outstanding);
}

static void service_report(void *data) {
  coda__engine *e = data;
  atomic_store(&e->draining, 0);
  while (atomic_load(&e->notifying) > 0)
    sched_yield();
  coda__engine_report_unfinished(e);
}

static void service_stop(void *data) {
  coda__engine *e = data;
  coda__engine_stop(e);
  e->server = NULL;
}

static uv_once_t slot_once = UV_ONCE_INIT;
static int engine_slot = -1;
static void take_slot(void) { engine_slot = coda__loop_slot_key(); }

coda__engine *coda__engine_peek(const coda_app *app) {
  return app->ext.free == coda__tasks_ext.free ? app->ext.data : NULL;
}

coda__engine *coda__engine_of(coda_app *app) {
  coda__engine *e = coda__engine_peek(app);
  if (e)
    return e;
  /* Made while the app runs, it would never be started by the server:
   * task configuration belongs before coda_app_run(). */
  if (atomic_load(&app->running))
    return NULL;
  uv_once(&slot_once, take_slot);
  if (engine_slot < 0 || (e = calloc(1, sizeof *e)) == NULL)
    return NULL;
  if (uv_mutex_init(&e->loops_mu) != 0) {
    free(e);
    return NULL;
  }
  e->app = app;
  e->loop_slot = engine_slot;
  e->service = (coda__service){"the task engine", e,
                               service_start,        service_loop_init,
                               service_loop_close,   service_ready,
                               service_drain,        service_outstanding,
                               service_report,       service_stop,
                               coda__engine_stats_json};
  coda__app_ext ext = coda__tasks_ext;
  ext.data = e;
  if (coda__app_add_service(app, &e->service) != 0 || coda__app_set_ext(app, &ext) != 0) {
    uv_mutex_destroy(&e->loops_mu);
    free(e);
    return NULL;
  }
  coda__task_metrics_init(e);
  return e;
}

/* ---- starting and stopping ------------------------------------------- */

static void on_watch(uv_timer_t *t) {
  coda__engine *e = t->data;
  coda__thread_pool *pool = atomic_load(&e->threads);
  if (pool)
    coda__thread_pool_watch(pool, uv_hrtime());
  coda__process_pool *procs = atomic_load(&e->procs);
  if (procs)
    coda__process_pool_watch(procs, uv_hrtime());
}

int coda__engine_start(coda__engine *e, uv_loop_t *control) {
  const coda__options *o = &e->app->opt;
  /* THREAD tasks left running by the previous run still use that run's
   * pools: a new run waits until they have returned. */
  if (e->left_threads) {
    if (coda__thread_pool_release(e->left_threads) != 0)
      return CODA_ESTATE;
    e->left_threads = NULL;
    if (e->left_procs)
      coda__process_pool_free(e->left_procs);
    e->left_procs = NULL;
  }
  uv_timer_init(control, &e->watch);
  e->watch.data = e;
  e->watching = 1;
  uv_timer_start(&e->watch, on_watch, 20, 20);
  uv_unref((uv_handle_t *)&e->watch);
  coda__thread_pool *pool = coda__thread_pool_new(e, (int)o->thread_pool_size);
  if (!pool)
    return CODA_ENOMEM;
  atomic_store(&e->threads, pool);
  for (int i = 0; i < e->ndefs; i++) {
    if (e->defs[i]->executor != CODA_EXEC_PROCESS)
      continue;
    int workers =
        o->process_workers ? (int)o->process_workers : (int)uv_available_parallelism();
    coda__process_pool *procs = coda__process_pool_new(e, control, workers);
    if (!procs)
      return CODA_EIO;
    atomic_store(&e->procs, procs);
    break; /* only apps with PROCESS tasks pay for workers */
  }
  return coda__durable_start(e);
}

coda__task_loop *coda__engine_add_loop(coda__engine *e, uv_loop_t *uv,
                                       coda__inbox *inbox) {
  coda__task_loop *tl = calloc(1, sizeof *tl);
  if (!tl)
    return NULL;
  tl->engine = e;
  tl->uv = uv;
  tl->inbox = inbox;
  uv_mutex_lock(&e->loops_mu);
  int rc = 0;
  if (e->nloops == e->loops_cap) {
    int cap = e->loops_cap ? e->loops_cap * 2 : 8;
    coda__task_loop **l = realloc(e->loops, (size_t)cap * sizeof *l);
    if (l) {
      e->loops = l;
      e->loops_cap = cap;
    } else {
      rc = CODA_ENOMEM;
    }
  }
  if (rc == 0)
    rc = coda__loop_executor_init(tl);
  if (rc == 0)
    e->loops[e->nloops++] = tl;
  uv_mutex_unlock(&e->loops_mu);
  if (rc) {
    free(tl);
    return NULL;
  }
  return tl;
}

void coda__engine_loop_close(coda__task_loop *tl) { coda__loop_executor_close(tl); }

void coda__engine_ready(coda__engine *e) { coda__durable_loops_ready(e); }

void coda__engine_drain(coda__engine *e) {
  coda__durable_draining(e); /* no new attempts from the store */
  atomic_store(&e->draining, 1);
}

void coda__engine_stop(coda__engine *e) {
  coda__durable_quiesce(e);
  /* The process pool refuses new tasks first, but stays allocated until
   * the thread pool has stopped: a THREAD task ending meanwhile may submit
   * the next task of its list to it (and gets CODA_ESTATE). */
  coda__process_pool *procs = atomic_load(&e->procs);
  coda__thread_pool *threads = atomic_load(&e->threads);
  if (procs)
    coda__process_pool_close(procs);
  if (threads && coda__thread_pool_stop(threads) != 0)
    e->left_threads = threads;
  atomic_store(&e->threads, NULL);
  atomic_store(&e->procs, NULL);
  if (procs) {
    coda__process_pool_stop(procs, !e->left_threads);
    if (e->left_threads)
      e->left_procs = procs; /* freed with the engine, once they return */
  }
  coda__durable_stop(e); /* after the pools: their last outcomes get written */
  if (e->watching && !uv_is_closing((uv_handle_t *)&e->watch))
    uv_close((uv_handle_t *)&e->watch, NULL);
  e->watching = 0;
  /* The loops are gone; a next run adds new ones. Their state stays until
   * the engine is freed: a task left running may still point at it. */
  uv_mutex_lock(&e->loops_mu);
  int n = e->nloops;
  e->nloops = 0;
  uv_mutex_unlock(&e->loops_mu);
  for (int i = 0; i < n; i++) {
    coda__task_loop *tl = e->loops[i];
    coda__loop_executor_free_pending(tl); /* its list goes on: not under loops_mu */
    tl->retired = e->retired;
    e->retired = tl;
  }
}

coda_task_def *coda__engine_find(coda__engine *e, const char *name) {
  for (int i = 0; i < e->ndefs; i++)
    if (strcmp(e->defs[i]->name, name) == 0)
      return e->defs[i];
  return NULL;
}

coda_task_def *coda_app_task(coda_app *app, const char *name, coda_task_fn fn,
                             coda_executor executor) {
  coda__engine *e = coda__engine_of(app);
  if (!e || !name || !*name || !fn || executor < 0 || executor >= CODA_EXEC_COUNT_ ||
      coda__engine_find(e, name) || atomic_load(&app->running))
    return NULL;
  if (e->ndefs == e->defs_cap) {
    int cap = e->defs_cap ? e->defs_cap * 2 : 16;
    coda_task_def **defs = realloc(e->defs, (size_t)cap * sizeof *defs);
    if (!defs)
      return NULL;
    e->defs = defs;
    e->defs_cap = cap;
  }
  coda_task_def *d = calloc(1, sizeof *d);
  if (!d || !(d->name = strdup(name))) {
    free(d);
    return NULL;
  }
  d->fn = fn;
  d->executor = resolve_executor(executor);
  d->engine = e;
  e->defs[e->ndefs++] = d;
  coda__task_metrics_def(d);
  return d;
}

int coda_task_def_timeout(coda_task_def *def, long timeout_ms) {
  if (!def || timeout_ms < 0)
    return CODA_EINVAL;
  def->timeout_ms = timeout_ms;
  return 0;
}

void coda_app_on_task_error(coda_app *app, coda_task_error_hook hook, void *user) {
  coda__engine *e = coda__engine_of(app);
  if (!e)
    return;
  e->hook = hook;
  e->hook_user = user;
}

/* ---- creating tasks ---------------------------------------------------- */

/* Takes a slot in the executor's bounded queue. */
static int reserve(coda__engine *e, coda_task_def *def, coda_executor ex) {
  const coda__options *o = &e->app->opt;
  long cap = ex == CODA_EXEC_LOOP     ? o->loop_queue
             : ex == CODA_EXEC_THREAD ? o->thread_queue
                                      : o->process_queue;
  if (atomic_fetch_add_explicit(&e->reserved[ex], 1, memory_order_relaxed) >= cap) {
    atomic_fetch_sub_explicit(&e->reserved[ex], 1, memory_order_relaxed);
    coda__stat_add(e, ex, CODA_STAT_REJECTED, 1);
    coda__task_metrics_outcome(def, ex, CODA__OUTCOME_REJECTED);
    return CODA_EFULL;
  }
  coda__stat_add(e, ex, CODA_STAT_QUEUED, 1);
  atomic_fetch_add_explicit(&e->outstanding, 1, memory_order_relaxed);
  return 0;
}

/* The engine has no work left: if the server is draining, it may end the
 * drain now. Any thread. */
static void notify_idle(coda__engine *e) {
  atomic_fetch_add(&e->notifying, 1);
  coda__server *s = atomic_load(&e->draining) ? e->server : NULL;
  if (s)
    coda__server_idle(s);
  atomic_fetch_sub(&e->notifying, 1);
}

void coda__task_unreserve_def(coda_task_def *def) {
  coda__engine *e = def->engine;
  atomic_fetch_sub_explicit(&e->reserved[def->executor], 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&def->outstanding, 1, memory_order_relaxed);
  if (atomic_fetch_sub_explicit(&e->outstanding, 1, memory_order_acq_rel) == 1)
    notify_idle(e);
}

static void unreserve(coda_task *t) { coda__task_unreserve_def(t->def); }

void coda__task_force_reserve(coda_task_def *def) {
  coda__engine *e = def->engine;
  atomic_fetch_add_explicit(&e->reserved[def->executor], 1, memory_order_relaxed);
  coda__stat_add(e, def->executor, CODA_STAT_QUEUED, 1);
  atomic_fetch_add_explicit(&e->outstanding, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&def->outstanding, 1, memory_order_relaxed);
}

/* Measures the arguments: count and bytes to copy. */
static int measure_args(const char *fmt, va_list ap, int *nargs, size_t *bytes) {
  va_list aq;
  va_copy(aq, ap);
  int n = 0, rc = 0;
  size_t b = 0;
  for (const char *f = fmt ? fmt : ""; *f && rc == 0; f++, n++) {
    if (n == MAX_TASK_ARGS) {
      rc = CODA_EINVAL;
      break;
    }
    switch (*f) {
    case 's': {
      const char *s = va_arg(aq, const char *);
      b += (s ? strlen(s) : 0) + 1;
      break;
    }
    case 'i':
      (void)va_arg(aq, int64_t);
      break;
    case 'd':
      (void)va_arg(aq, double);
      break;
    case 'b':
      (void)va_arg(aq, const void *);
      b += va_arg(aq, size_t) + 1;
      break;
    default:
      rc = CODA_EINVAL;
    }
  }
  va_end(aq);
  *nargs = n;
  *bytes = b;
  return rc;
}

static void fill_args(coda_task *t, const char *fmt, va_list ap, char *data) {
  for (int i = 0; i < t->nargs; i++) {
    coda__arg *a = &t->args[i];
    a->type = fmt[i];
    switch (fmt[i]) {
    case 's': {
      const char *s = va_arg(ap, const char *);
      size_t n = s ? strlen(s) : 0;
      memcpy(data, s ? s : "", n + 1);
      a->v.p = data;
      a->len = (uint32_t)n;
      data += n + 1;
      break;
    }
    case 'i':
      a->v.i = va_arg(ap, int64_t);
      break;
    case 'd':
      a->v.d = va_arg(ap, double);
      break;
    default: { /* 'b' */
      const void *p = va_arg(ap, const void *);
      size_t n = va_arg(ap, size_t);
      if (n)
        memcpy(data, p, n);
      data[n] = '\0';
      a->v.p = data;
      a->len = (uint32_t)n;
      data += n + 1;
    }
    }
  }
}

static coda_task *task_alloc(coda_task_def *def, int nargs, size_t bytes) {
  size_t size = sizeof(coda_task) + (size_t)nargs * sizeof(coda__arg) + bytes;
  coda_task *t = malloc(size);
  if (!t)
    return NULL;
  memset(t, 0, sizeof *t);
  coda__queue_init(&t->link);
  t->def = def;
  t->executor = def->executor;
  t->nargs = nargs;
  t->args = (coda__arg *)(t + 1);
  t->wire_len = bytes;
  t->id = atomic_fetch_add_explicit(&def->engine->next_id, 1, memory_order_relaxed) + 1;
  return t;
}

int coda__task_new(coda__engine *e, coda_task_def *def, unsigned flags, const char *fmt,
                   va_list ap, coda_task **out) {
  int nargs;
  size_t bytes;
  if (!def || def->engine != e)
    return CODA_EINVAL;
  int rc = measure_args(fmt, ap, &nargs, &bytes);
  if (rc)
    return rc;
  if ((rc = reserve(e, def, def->executor)) != 0)
    return rc;
  coda_task *t = task_alloc(def, nargs, bytes);
  if (!t) {
    coda__stat_add(e, def->executor, CODA_STAT_QUEUED, -1);
    atomic_fetch_sub(&e->reserved[def->executor], 1);
    atomic_fetch_sub(&e->outstanding, 1);
    return CODA_ENOMEM;
  }
  atomic_fetch_add_explicit(&def->outstanding, 1, memory_order_relaxed);
  t->flags = flags;
  fill_args(t, fmt, ap, (char *)(t->args + nargs));
  *out = t;
  return 0;
}

int coda__task_clone(const coda_task *src, coda_task **out) {
  coda__engine *e = src->def->engine;
  int rc = reserve(e, src->def, src->executor);
  if (rc)
    return rc;
  coda_task *t = task_alloc(src->def, src->nargs, src->wire_len);
  if (t && src->def->durable) {
    int prc = coda__durable_prepare(e, t, NULL);
    if (prc) {
      task_free(t);
      coda__stat_add(e, src->executor, CODA_STAT_QUEUED, -1);
      atomic_fetch_sub(&e->reserved[src->executor], 1);
      atomic_fetch_sub(&e->outstanding, 1);
      return prc;
    }
  }
  if (!t) {
    coda__stat_add(e, src->executor, CODA_STAT_QUEUED, -1);
    atomic_fetch_sub(&e->reserved[src->executor], 1);
    atomic_fetch_sub(&e->outstanding, 1);
    return CODA_ENOMEM;
  }
  atomic_fetch_add_explicit(&src->def->outstanding, 1, memory_order_relaxed);
  t->flags = src->flags;
  char *data = (char *)(t->args + t->nargs);
  for (int i = 0; i < t->nargs; i++) {
    t->args[i] = src->args[i];
    if (src->args[i].type == 's' || src->args[i].type == 'b') {
      memcpy(data, src->args[i].v.p, src->args[i].len + 1);
      t->args[i].v.p = data;
      data += src->args[i].len + 1;
    }
  }
  *out = t;
  return 0;
}

static void task_free(coda_task *t) {
  free(t->error);
  free(t->key);
  free(t->trace);
  free(t->origin);
  free(t->result);
  free(t);
}

void coda__task_free(coda_task *t) { task_free(t); }

int coda__task_template(coda_task_def *def, unsigned flags, const char *fmt, va_list ap,
                        coda_task **out) {
  int nargs;
  size_t bytes;
  int rc = measure_args(fmt, ap, &nargs, &bytes);
  if (rc)
    return rc;
  coda_task *t = task_alloc(def, nargs, bytes);
  if (!t)
    return CODA_ENOMEM;
  t->flags = flags;
  fill_args(t, fmt, ap, (char *)(t->args + nargs));
  *out = t;
  return 0;
}

void coda__task_free_template(coda_task *t) { task_free(t); }

void coda__task_reject(coda_task *t) {
  coda__engine *e = t->def->engine;
  coda__stat_add(e, t->executor, CODA_STAT_QUEUED, -1);
  coda__stat_add(e, t->executor, CODA_STAT_REJECTED, 1);
  coda__task_metrics_outcome(t->def, t->executor, CODA__OUTCOME_REJECTED);
  unreserve(t);
  task_free(t);
}

/* Where a task came from, for log lines: "request 42", or for a task
 * added outside any request (coda_app_enqueue, or an attempt read back
 * from the store, which keeps no request) "no request". */
static const char *origin(const coda_task *t, char *buf, size_t cap) {
  const char *trace = coda_task_traceparent(t);
  if (!t->request_id && !trace)
    return "no request";
  int n = t->request_id
              ? snprintf(buf, cap, "request %llu", (unsigned long long)t->request_id)
              : snprintf(buf, cap, "no request");
  /* The trace id alone (the request's own span is in the JSON lines). */
  if (trace && n > 0 && (size_t)n < cap)
    snprintf(buf + n, cap - (size_t)n, ", trace %.32s", trace + 3);
  return buf;
}

const char *coda_task_traceparent(const coda_task *t) {
  if (!t)
    return NULL;
  /* Durable tasks keep their own copy (it goes to the store and comes
   * back with a claim); the others share their run's. */
  return t->trace ? t->trace : t->run ? t->run->trace : NULL;
}

void coda__task_log_fields(const coda_task *t, coda__log_fields *f) {
  *f = (coda__log_fields){.request_id = t->request_id,
                          .task_id = t->id,
                          .task_name = t->def ? t->def->name : NULL,
                          .attempt = t->attempt ? t->attempt : 1,
                          .trace = coda_task_traceparent(t)};
}

void coda__task_log(const coda_task *t, coda_log_level level, const char *fmt, ...) {
  coda_app *app = t->def->engine->app;
  if ((long)level < app->opt.log_level)
    return;
  coda__log_fields f;
  coda__task_log_fields(t, &f);
  va_list ap;
  va_start(ap, fmt);
  coda__logv_fields(&app->logger, app->opt.log_level, level, &f, fmt, ap);
  va_end(ap);
}

static void drop(coda_task *t, const char *why, int final) {
  coda__engine *e = t->def->engine;
  if (t->durable)
    coda__durable_abandon(t, final ? why : NULL);
  coda__stat_add(e, t->executor, CODA_STAT_QUEUED, -1);
  coda__stat_add(e, t->executor, CODA_STAT_DROPPED, 1);
  coda__task_metrics_outcome(t->def, t->executor, CODA__OUTCOME_DROPPED);
  char from[96];
  coda__task_log(t, CODA_LOG_WARN, "task %s (id %llu, %s, %s) dropped: %s", t->def->name,
                 (unsigned long long)t->id, coda_executor_name(t->executor),
                 origin(t, from, sizeof from), why);
  unreserve(t);
  task_free(t);
}

void coda__task_drop(coda_task *t, const char *why) { drop(t, why, 0); }
void coda__task_drop_final(coda_task *t, const char *why) { drop(t, why, 1); }

void coda__task_drop_advance(coda_task *t, const char *why) {
  coda_tasks *run = t->run;
  coda__task_drop(t, why);
  if (run)
    coda__run_advance(run, 1);
}

void coda__tasks_drop_queue(coda__queue *q, const char *why) {
  while (!coda__queue_empty(q)) {
    coda__queue *item = coda__queue_head(q);
    coda__queue_remove(item);
    coda__task_drop_advance(coda__container_of(item, coda_task, link), why);
  }
}

/* ---- running and finishing ------------------------------------------- */

void coda__task_begin(coda_task *t) {
  coda__engine *e = t->def->engine;
  coda__stat_add(e, t->executor, CODA_STAT_QUEUED, -1);
  coda__stat_add(e, t->executor, CODA_STAT_RUNNING, 1);
  t->started_ns = uv_hrtime();
  coda__task_metrics_began(t);
  if (t->durable)
    coda__durable_began(t);
  if (t->def->timeout_ms > 0)
    t->deadline_ns = t->started_ns + (uint64_t)t->def->timeout_ms * 1000000u;
}

static void log_failure(coda_task *t, const char *what, const char *message) {
  coda__engine *e = t->def->engine;
  uint64_t ms = (uv_hrtime() - t->started_ns) / 1000000u;
  char from[96];
  coda__task_log(t, CODA_LOG_ERROR,
                 "task %s (id %llu, %s executor, %s, attempt %d) %s after %llu ms: %s",
                 t->def->name, (unsigned long long)t->id, coda_executor_name(t->executor),
                 origin(t, from, sizeof from), t->attempt ? t->attempt : 1, what,
                 (unsigned long long)ms, message ? message : "no message");
  if (e->hook)
    e->hook(t, message ? message : what, e->hook_user);
}

void coda__task_report(coda_task *t, coda_task_stat_kind kind, const char *message) {
  int expected = 0;
  /* `reported` keeps the kind (never 0 here), for the outcome metric. */
  if (!atomic_compare_exchange_strong(&t->reported, &expected, (int)kind))
    return;
  coda__stat_add(t->def->engine, t->executor, kind, 1);
  if (kind == CODA_STAT_TIMED_OUT)
    atomic_store(&t->cancelled, 1);
  log_failure(t, kind == CODA_STAT_TIMED_OUT ? "timed out" : "crashed", message);
}

void coda__task_finish(coda_task *t, int rc, const char *message) {
  coda__engine *e = t->def->engine;
  coda__stat_add(e, t->executor, CODA_STAT_RUNNING, -1);
  int failed = rc < 0 || atomic_load(&t->reported);
  char described[64];
  const char *why = NULL;
  if (failed)
    why = message ? message : t->error ? t->error : coda__describe_rc(rc, described, sizeof described);
  int reported = atomic_load(&t->reported);
  if (failed) {
    coda__stat_add(e, t->executor, CODA_STAT_FAILED, 1);
    if (!reported)
      log_failure(t, "failed", why);
  } else {
    coda__stat_add(e, t->executor, CODA_STAT_SUCCEEDED, 1);
  }
  coda__task_metrics_ended(t, !failed                           ? CODA__OUTCOME_SUCCEEDED
                              : reported == CODA_STAT_TIMED_OUT ? CODA__OUTCOME_TIMED_OUT
                              : reported == CODA_STAT_CRASHED   ? CODA__OUTCOME_CRASHED
                                                                : CODA__OUTCOME_FAILED);
  coda_tasks *run = t->run;
  if (t->durable && t->orphaned) {
    /* Finished by its timeout, still held by its code until
     * coda_task_done(): the outcome is recorded, t stays. */
    coda__durable_finished_keep(t, failed, why);
  } else if (t->durable) {
    /* Its slot is given back once the outcome is in the store. */
    coda__durable_finished(t, failed, why);
  } else {
    unreserve(t);
    if (!t->orphaned)
      task_free(t);
  }
  if (run)
    coda__run_advance(run, failed);
}

/* ---- dispatching to executors --------------------------------------- */

static void submit(coda_task *t) {
  coda__engine *e = t->def->engine;
  if (!t->due_ns && coda__metrics_on(e->app->metrics))
    t->due_ns = uv_hrtime(); /* its queue wait starts */
  int rc = CODA_ESTATE;
  switch (t->executor) {
  case CODA_EXEC_LOOP: {
    if (!t->loop) { /* no response: any loop will do */
      uv_mutex_lock(&e->loops_mu);
      if (e->nloops)
        t->loop = e->loops[t->id % (uint64_t)e->nloops];
      uv_mutex_unlock(&e->loops_mu);
    }
    if (t->loop)
      rc = coda__loop_submit(t->loop, t);
    break;
  }
  case CODA_EXEC_PROCESS: {
    coda__process_pool *procs = atomic_load(&e->procs);
    if (procs)
      rc = coda__process_pool_submit(procs, t);
    break;
  }
  default: {
    coda__thread_pool *pool = atomic_load(&e->threads);
    if (pool && t->loop && coda__loop_can_defer(t->loop)) {
      coda__loop_defer_thread_task(t->loop, t); /* one hand-off per iteration */
      rc = 0;
    } else if (pool) {
      rc = coda__thread_pool_submit(pool, t);
    }
  }
  }
  if (rc == 0)
    return;
  /* The executor is not running (shutdown): the task cannot run; say so. */
  coda_tasks *run = t->run;
  coda__task_drop(t, "its executor is not running");
  if (run)
    coda__run_advance(run, 1);
}

void coda__task_submit(coda_task *t) { submit(t); }

/* ---- arguments as bytes (for stores) ------------------------------------ */

int coda__task_decode_args(coda_task_def *def, const void *data, size_t len,
                           coda_task **out) {
  int nargs;
  size_t bytes;
  int rc = coda__args_measure(data, len, &nargs, &bytes);
  if (rc)
    return rc;
  coda_task *t = task_alloc(def, nargs, bytes);
  if (!t)
    return CODA_ENOMEM;
  coda__args_decode(data, len, t->args, nargs, (char *)(t->args + nargs), bytes);
  *out = t;
  return 0;
}

/* ---- runs ---------------------------------------------------------------- */

coda_tasks *coda_tasks_new(coda_app *app) {
  coda_tasks *run = calloc(1, sizeof *run);
  if (!run)
    return NULL;
  run->app = app;
  run->tasks = run->inline_tasks;
  run->cap = (int)(sizeof run->inline_tasks / sizeof run->inline_tasks[0]);
  return run;
}

static void run_free(coda_tasks *run) {
  if (run->tasks != run->inline_tasks)
    free(run->tasks);
  free(run->trace);
  free(run->origin);
  free(run);
}

static int replace_str(char **at, const char *value) {
  char *copy = value ? strdup(value) : NULL;
  if (value && !copy)
    return CODA_ENOMEM;
  free(*at);
  *at = copy;
  return 0;
}

int coda__tasks_set_origin(coda_tasks *run, const char *trace, const char *origin) {
  run->origin_set = 1;
  if (replace_str(&run->trace, trace) != 0 || replace_str(&run->origin, origin) != 0)
    return CODA_ENOMEM;
  return 0;
}

void coda_tasks_free(coda_tasks *run) {
  if (!run)
    return;
  for (int i = run->next; i < run->n; i++)
    coda__task_drop(run->tasks[i], "task list freed");
  run_free(run);
}

void coda__run_abandon(coda_tasks *run) {
  if (!run)
    return;
  for (int i = run->next; i < run->n; i++) {
    coda_task *t = run->tasks[i];
    coda__task_drop(t, t->durable && t->stored ? "shutdown: it runs at the next start"
                                               : "shutdown: its response was never sent");
  }
  run_free(run);
}

int coda__run_append(coda_tasks *run, coda_task *t) {
  if (run->n == run->cap) {
    int cap = run->cap * 2;
    coda_task **tasks = malloc((size_t)cap * sizeof *tasks);
    if (!tasks)
      return CODA_ENOMEM;
    memcpy(tasks, run->tasks, (size_t)run->n * sizeof *tasks);
    if (run->tasks != run->inline_tasks)
      free(run->tasks);
    run->tasks = tasks;
    run->cap = cap;
  }
  if (run->request_id)
    t->request_id = run->request_id; /* known from now on, for the logs */
  if (t->durable && !t->stored &&
      (replace_str(&t->trace, run->trace) != 0 ||
       replace_str(&t->origin, run->origin) != 0))
    return CODA_ENOMEM;
  run->tasks[run->n++] = t;
  if (t->durable && !t->stored)
    run->durable_unstored++;
  return 0;
}

int coda__run_add(coda_tasks *run, coda_task_def *def, coda_task_opts *opts,
                  const char *fmt, va_list ap) {
  if (!def)
    return CODA_EINVAL;
  coda_task *t;
  coda__engine *e = def->engine;
  int rc = coda__task_new(e, def, opts->flags, fmt, ap, &t);
  if (rc)
    return rc;
  if ((rc = coda__durable_prepare(e, t, opts)) != 0) {
    coda__task_reject(t);
    return rc;
  }
  opts->id = t->id;
  if ((rc = coda__run_append(run, t)) != 0)
    coda__task_drop(t, "out of memory");
  return rc;
}

int coda__opts_read(const coda_task_opts *in, coda_task_opts *out) {
  memset(out, 0, sizeof *out);
  out->size = sizeof *out;
  if (!in)
    return 0;
  /* A caller built against an older header has a shorter struct: read what
   * it has. One built against a newer one: read what this coda knows. */
  if (in->size < offsetof(coda_task_opts, flags) + sizeof in->flags)
    return CODA_EINVAL; /* not made with CODA_TASK_OPTS_INIT */
  memcpy(out, in, in->size < sizeof *out ? in->size : sizeof *out);
  out->size = sizeof *out;
  if (out->flags & ~(unsigned)(CODA_TASK_ALWAYS | CODA_TASK_DURABLE))
    return CODA_EINVAL; /* a list flag, or an unknown bit */
  return 0;
}

void coda__opts_write_id(coda_task_opts *in, uint64_t id) {
  if (in && in->size >= offsetof(coda_task_opts, id) + sizeof in->id)
    in->id = id;
}

static int tasks_add(coda_tasks *list, coda_task_def *def, coda_task_opts *opts,
                     const char *fmt, va_list ap) {
  coda_task_opts o;
  int rc = coda__opts_read(opts, &o);
  if (rc == 0 && (rc = coda__run_add(list, def, &o, fmt, ap)) == 0)
    coda__opts_write_id(opts, o.id);
  return rc;
}

int coda_tasks_add(coda_tasks *list, coda_task_def *def, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = tasks_add(list, def, NULL, fmt, ap);
  va_end(ap);
  return rc;
}

int coda_tasks_add_opts(coda_tasks *list, coda_task_def *def, coda_task_opts *opts,
                        const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = tasks_add(list, def, opts, fmt, ap);
  va_end(ap);
  return rc;
}

int coda_tasks_set_flags(coda_tasks *list, unsigned flags) {
  if (flags & ~(CODA_LIST_PARALLEL | CODA_LIST_STOP_ON_FAILURE))
    return CODA_EINVAL;
  list->flags = flags;
  return 0;
}

void coda__run_drop_failed(coda_tasks *run) {
  int kept = 0;
  for (int i = 0; i < run->n; i++) {
    coda_task *t = run->tasks[i];
    if (t->flags & CODA_TASK_ALWAYS)
      run->tasks[kept++] = t;
    else
      coda__task_drop(t, "the handler failed");
  }
  run->n = kept;
}

/* The next task of a sequential run, or the end of the run. */
static void run_next(coda_tasks *run) {
  while (run->next < run->n) {
    coda_task *t = run->tasks[run->next++];
    if (run->ahead > 0) {
      /* Already with the worker that ran the task before it, which runs
       * it next (or skips it: see process_pool.c). */
      run->ahead--;
      return;
    }
    if ((run->flags & CODA_LIST_STOP_ON_FAILURE) && run->failed) {
      coda__task_drop_final(t, "an earlier task of its list failed");
      continue;
    }
    submit(t);
    return;
  }
  run_free(run);
}

void coda__run_advance(coda_tasks *run, int failed) {
  if (run->flags & CODA_LIST_PARALLEL) {
    if (atomic_fetch_sub(&run->remaining, 1) == 1)
      run_free(run);
    return;
  }
  if (failed)
    run->failed = 1;
  run_next(run);
}

void coda__run_start(coda_tasks *run, int delivered) {
  run->delivered = delivered;
  for (int i = 0; i < run->n; i++) {
    run->tasks[i]->run = run;
    run->tasks[i]->loop = run->loop;
    run->tasks[i]->request_id = run->request_id;
  }
  if (run->n == 0) {
    run_free(run);
    return;
  }
  if (run->flags & CODA_LIST_PARALLEL) {
    atomic_store(&run->remaining, run->n);
    int n = run->n;
    run->next = n;
    for (int i = 0; i < n; i++)
      submit(run->tasks[i]); /* the run may be freed after the last */
    return;
  }
  run_next(run);
}

/* ---- the task's own view --------------------------------------------- */

static const coda__arg *arg(const coda_task *t, int i, char type) {
  return i >= 0 && i < t->nargs && t->args[i].type == type ? &t->args[i] : NULL;
}

int coda_task_nargs(const coda_task *t) { return t->nargs; }

const char *coda_task_str(const coda_task *t, int i) {
  const coda__arg *a = arg(t, i, 's');
  return a ? a->v.p : NULL;
}

int64_t coda_task_int(const coda_task *t, int i) {
  const coda__arg *a = arg(t, i, 'i');
  return a ? a->v.i : 0;
}

double coda_task_double(const coda_task *t, int i) {
  const coda__arg *a = arg(t, i, 'd');
  return a ? a->v.d : 0.0;
}

const void *coda_task_bytes(const coda_task *t, int i, size_t *len) {
  const coda__arg *a = arg(t, i, 'b');
  if (len)
    *len = a ? a->len : 0;
  return a ? a->v.p : NULL;
}

int coda_task_fail(coda_task *t, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  free(t->error);
  t->error = strdup(msg);
  return CODA_EHANDLER;
}

int coda_task_cancelled(const coda_task *t) {
  if (coda__in_worker() && coda__worker_lease_lost(t))
    return 1;
  return atomic_load_explicit(&((coda_task *)t)->cancelled, memory_order_relaxed);
}
int coda_task_delivered(const coda_task *t) {
  return t->run ? t->run->delivered : t->delivered;
}
const char *coda_task_name(const coda_task *t) { return t->def->name; }
coda_executor coda_task_executor(const coda_task *t) { return t->executor; }
uint64_t coda_task_id(const coda_task *t) { return t->id; }
uint64_t coda_task_request_id(const coda_task *t) { return t->request_id; }
coda_app *coda_task_app(const coda_task *t) { return t->def->engine->app; }
void *coda_task_loop(coda_task *t) {
  return t->executor == CODA_EXEC_LOOP && t->loop ? t->loop->uv : NULL;
}

/* ---- counters ---------------------------------------------------------- */

long coda_task_stat(const coda_app *app, coda_executor ex, coda_task_stat_kind kind) {
  if (ex < CODA_EXEC_LOOP || ex >= CODA_EXEC_COUNT_ || kind < 0 ||
      kind >= CODA_STAT_COUNT_)
    return -1;
  coda__engine *e = coda__engine_peek(app);
  return e ? atomic_load_explicit(&e->stats[ex][kind], memory_order_relaxed) : 0;
}

/* The engine's figures for coda_stats_json(): ,"tasks":{...},"durable":{...}. */
size_t coda__engine_stats_json(void *data, char *buf, size_t cap) {
  static const char *const names[CODA_STAT_COUNT_] = {
      "queued",    "running",  "succeeded", "failed",    "timed_out",
      "crashed",   "rejected", "dropped",   "retried",   "dead",
      "duplicate", "claimed",  "restarted", "lease_lost"};
  coda__engine *e = data;
  char tmp[4096];
  size_t n = (size_t)snprintf(tmp, sizeof tmp, ",\"tasks\":{");
  for (int ex = CODA_EXEC_LOOP; ex < CODA_EXEC_COUNT_; ex++) {
    n += (size_t)snprintf(tmp + n, sizeof tmp - n, "%s\"%s\":{",
                          ex > CODA_EXEC_LOOP ? "," : "",
                          coda_executor_name((coda_executor)ex));
    for (int k = 0; k < CODA_STAT_COUNT_; k++)
      n += (size_t)snprintf(
          tmp + n, sizeof tmp - n, "%s\"%s\":%ld", k ? "," : "", names[k],
          coda_task_stat(e->app, (coda_executor)ex, (coda_task_stat_kind)k));
    n += (size_t)snprintf(tmp + n, sizeof tmp - n, "}");
  }
  n += (size_t)snprintf(tmp + n, sizeof tmp - n, "},\"durable\":");
  n += coda__durable_stats_json(e, tmp + n, sizeof tmp - n);
  if (cap) {
    size_t c = n < cap ? n : cap - 1;
    memcpy(buf, tmp, c);
    buf[c] = '\0';
  }
  return n;
}

/* ---- shutdown report ---------------------------------------------------- */

long coda__engine_report_unfinished(coda__engine *e) {
  long total = 0;
  char list[1024];
  size_t n = 0;
  list[0] = '\0';
  for (int i = 0; i < e->ndefs; i++) {
    long left = atomic_load(&e->defs[i]->outstanding);
    if (left <= 0)
      continue;
    total += left;
    if (n < sizeof list)
      n += (size_t)snprintf(list + n, sizeof list - n, "%s%s x%ld", n ? ", " : "",
                            e->defs[i]->name, left);
  }
  if (total)
    coda_log(e->app, CODA_LOG_WARN, "shutdown: %ld tasks did not finish: %s", total,
             list);
  return total;
}
