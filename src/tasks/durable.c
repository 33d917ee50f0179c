/*
 * durable.c - durable tasks: opening the store, ids, adding (held responses
 * and coda_app_enqueue), the end of an attempt (retries with backoff and
 * jitter), the answers to gated responses, and status by id. The thread that
 * writes, claims and purges is in store_thread.c.
 *
 * The store thread owns every write to the store. Loop threads, executor
 * threads and coda_app_enqueue() callers push operations onto `ops` (under
 * `mu`) and signal `cond`; the thread takes all that has accumulated, writes
 * it in one transaction (one fsync), and then hands each outcome back:
 *  - a gated response (CODA__OP_HOLD) is posted to its loop's inbox, where
 *    coda__res_resume() sends it, or a 503 if the write failed;
 *  - a task enqueued outside a request (CODA__OP_ENQUEUE) is submitted;
 *  - the end of an attempt (CODA__OP_FINISH) gives back the task's queue slot
 *    only now, so the slots bound everything in flight, writes included.
 * While it waits it claims due tasks (retries, delayed tasks, tasks left by
 * a previous run) every CODA_OPT_STORE_POLL ms, or sooner when the store
 * says one is due sooner.
 *
 * Ids: blocks of CODA__ID_BLOCK (about a million) reserved in the store (so
 * never reused, even after a crash), handed out under `id_mu`; the store thread reserves
 * the next block when half of the current one is used. A task with an idempotency key
 * gets an id derived from the key instead, so the handler knows it at once and a second
 * add of the key finds the first task.
 *
 * Tasks alive in this process are in `live` (under `reg_mu`), so a status
 * read shows queued/running and progress without a store write for each.
 *
 * Must never: write to the store from an event loop, or free a slot
 * before the task's outcome is in the store.
 */
#include "tasks/durable.h"

#include "app/exchange.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void coda__durable_set_error(coda__durable *d, const char *msg) {
  uv_mutex_lock(&d->mu);
  snprintf(d->err, sizeof d->err, "%s", msg);
  uv_mutex_unlock(&d->mu);
}

/* The app's durable state, or NULL (no engine, no store). Any thread. */
static coda__durable *app_durable(const coda_app *app) {
  coda__engine *e = coda__engine_peek(app);
  return e ? e->durable : NULL;
}

/* ---- opening --------------------------------------------------------------- */

int coda_app_store(coda_app *app, const char *uri) {
  coda__engine *e = coda__engine_of(app);
  if (!e)
    return CODA_ENOMEM;
  if (!uri || atomic_load(&app->running))
    return uri ? CODA_ESTATE : CODA_EINVAL;
  /* A PROCESS worker runs main() again: the store is the server's (whose
   * lock it holds); the worker never writes to it. */
  if (getenv("CODA_WORKER_FD"))
    return 0;
  coda__durable_free(e);
  return coda__durable_open(e, uri);
}

/* A store that failed to open leaves no coda__durable behind: its error is
 * kept in the engine, so each app reports its own. */
const char *coda_app_store_error(const coda_app *app) {
  coda__engine *e = coda__engine_peek(app);
  if (!e)
    return "";
  return e->durable ? e->durable->err : e->store_error;
}

int coda__durable_open(coda__engine *e, const char *uri) {
  coda__durable *d = calloc(1, sizeof *d);
  if (!d)
    return CODA_ENOMEM;
  char err[512] = "";
  int rc = coda__store_open(uri, e->app->opt.store_max_bytes, &d->store, err, sizeof err);
  if (rc) {
    snprintf(e->store_error, sizeof e->store_error, "%s", err);
    coda_log(e->app, CODA_LOG_ERROR, "task store \"%s\": %s", uri, err);
    free(d);
    return rc == CODA_EINVAL ? rc : CODA_ESTORE;
  }
  e->store_error[0] = '\0';
  d->engine = e;
  uv_mutex_init(&d->mu);
  uv_cond_init(&d->cond);
  uv_cond_init(&d->synced);
  uv_mutex_init(&d->id_mu);
  uv_mutex_init(&d->reg_mu);
  uv_mutex_init(&d->submit_mu);
  uv_mutex_init(&d->hb_mu);
  uv_cond_init(&d->hb_cond);
  coda__queue_init(&d->ops);
  coda__queue_init(&d->retry_ops);
  atomic_store(&d->rng, uv_hrtime());
  e->durable = d;
  return 0;
}

void coda__durable_free(coda__engine *e) {
  coda__durable *d = e->durable;
  if (!d)
    return;
  d->store->m->close(d->store);
  coda__idmap_free(&d->live);
  free(d->unstarted);
  coda__buf_free(&d->scratch);
  uv_mutex_destroy(&d->mu);
  uv_cond_destroy(&d->cond);
  uv_cond_destroy(&d->synced);
  uv_mutex_destroy(&d->id_mu);
  uv_mutex_destroy(&d->reg_mu);
  uv_mutex_destroy(&d->submit_mu);
  uv_mutex_destroy(&d->hb_mu);
  uv_cond_destroy(&d->hb_cond);
  free(d);
  e->durable = NULL;
}

/* ---- ids ------------------------------------------------------------------- */

static uint64_t key_id(const char *key) {
  uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then a finaliser */
  for (const unsigned char *p = (const unsigned char *)key; *p; p++)
    h = (h ^ *p) * 0x100000001b3ULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return CODA__KEY_ID_BIT | (h & (CODA__KEY_ID_BIT - 1));
}

static void wake(coda__durable *d) {
  uv_mutex_lock(&d->mu);
  uv_cond_signal(&d->cond);
  uv_mutex_unlock(&d->mu);
}

static int next_id(coda__durable *d, uint64_t *id) {
  int ask = 0, rc = 0;
  uv_mutex_lock(&d->id_mu);
  if (d->id_next == d->id_end && d->spare_end) {
    d->id_next = d->spare_first;
    d->id_end = d->spare_end;
    d->spare_first = d->spare_end = 0;
  }
  if (d->id_next < d->id_end)
    *id = d->id_next++;
  else
    rc = CODA_EFULL; /* the store thread has not kept up: back-pressure */
  if (!d->refill && !d->spare_end && d->id_end - d->id_next < CODA__ID_BLOCK / 2)
    ask = d->refill = 1;
  uv_mutex_unlock(&d->id_mu);
  if (ask)
    wake(d);
  return rc;
}

/* ---- adding ---------------------------------------------------------------- */

int coda__durable_prepare(coda__engine *e, coda_task *t, const coda_task_opts *opts) {
  coda__durable *d = e->durable;
  const coda__options *o = &e->app->opt;
  unsigned flags = opts ? opts->flags : t->flags;
  if (!(flags & CODA_TASK_DURABLE) && !t->def->durable)
    return 0;
  if (!d)
    return CODA_ESTATE; /* no store chosen: coda_app_store() */
  if (atomic_load_explicit(&d->faulted, memory_order_relaxed))
    return CODA_ESTORE; /* fail fast while the store cannot write */
  t->durable = 1;
  t->attempt = 1;
  t->max_attempts = opts && opts->max_attempts > 0 ? opts->max_attempts
                    : t->def->max_attempts         ? t->def->max_attempts
                                                   : (int)o->max_attempts;
  t->created_at = now_ms();
  if (opts && opts->run_at > 0)
    t->run_at = opts->run_at;
  else if (opts && opts->delay_ms > 0)
    t->run_at = t->created_at + opts->delay_ms;
  if (opts && opts->key) {
    if (!(t->key = strdup(opts->key)))
      return CODA_ENOMEM;
    t->id = key_id(opts->key);
    return 0;
  }
  return next_id(d, &t->id);
}

/* Queues op for the store thread: 0, or CODA_ESTATE once it is stopping
 * (op was not queued: the caller still owns it). */
static int push_op(coda__durable *d, coda__store_op *op) {
  uv_mutex_lock(&d->mu);
  int stopping = d->stop;
  if (!stopping) {
    coda__queue_insert_tail(&d->ops, &op->link);
    atomic_fetch_add_explicit(&d->pushed, 1, memory_order_release);
    if (!d->coalescing || !coda__op_is_outcome(op))
      uv_cond_signal(&d->cond);
  }
  uv_mutex_unlock(&d->mu);
  return stopping ? CODA_ESTATE : 0;
}

int coda__durable_hold(coda_res *res, coda_tasks *run) {
  coda__engine *e = coda__engine_peek(res->app);
  coda__durable *d = e ? e->durable : NULL;
  if (!d || !atomic_load(&d->running) || !run->loop)
    return CODA_ESTORE;
  coda__hold *h = calloc(1, sizeof *h);
  if (!h)
    return CODA_ENOMEM;
  h->op.kind = CODA__OP_HOLD;
  h->loop = run->loop;
  h->res = res;
  h->run = run;
  if (push_op(d, &h->op) != 0) {
    free(h);
    return CODA_ESTORE;
  }
  return 0;
}

/* coda_app_enqueue(): a task with no response. */
static int enqueue_alone(coda_app *app, coda_task_def *def, coda_task_opts *opts,
                         coda__written_fn written, void *user, const char *fmt,
                         va_list ap) {
  coda__engine *e = coda__engine_peek(app);
  coda__durable *d = e ? e->durable : NULL;
  if (!d || !atomic_load(&d->running))
    return CODA_ESTATE;
  coda_task_opts o;
  int rc = coda__opts_read(opts, &o);
  if (rc)
    return rc;
  o.flags |= CODA_TASK_DURABLE;
  coda_task *t;
  rc = coda__task_new(e, def, o.flags, fmt, ap, &t);
  if (rc == 0 && (rc = coda__durable_prepare(e, t, &o)) != 0)
    coda__task_reject(t);
  if (rc)
    return rc;
  coda__opts_write_id(opts, t->id);
  coda__enqueue_op *op = calloc(1, sizeof *op);
  if (!op) {
    coda__task_drop(t, "out of memory");
    return CODA_ENOMEM;
  }
  op->op.kind = CODA__OP_ENQUEUE;
  op->task = t;
  op->written = written;
  op->user = user;
  if (push_op(d, &op->op) != 0) { /* the app is stopping: refused, not lost */
    free(op);
    coda__task_reject(t);
    return CODA_ESTATE;
  }
  return 0;
}

int coda_app_enqueue(coda_app *app, coda_task_def *def, coda_task_opts *opts,
                     const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = enqueue_alone(app, def, opts, NULL, NULL, fmt, ap);
  va_end(ap);
  return rc;
}

int coda__durable_enqueue_notify(coda_app *app, coda_task_def *def, coda_task_opts *opts,
                                 coda__written_fn written, void *user, const char *fmt,
                                 ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = enqueue_alone(app, def, opts, written, user, fmt, ap);
  va_end(ap);
  return rc;
}

int coda_app_store_sync(coda_app *app) {
  coda__durable *d = app_durable(app);
  if (!d)
    return CODA_ESTATE;
  if (!atomic_load(&d->running))
    return 0;
  coda__sync_op op = {.op = {.kind = CODA__OP_SYNC}};
  uv_mutex_lock(&d->mu);
  if (d->stop) { /* the thread writes what it has and ends: nothing to wait for */
    uv_mutex_unlock(&d->mu);
    return 0;
  }
  coda__queue_insert_tail(&d->ops, &op.op.link);
  atomic_fetch_add_explicit(&d->pushed, 1, memory_order_release);
  uv_cond_signal(&d->cond);
  while (!op.done)
    uv_cond_wait(&d->synced, &d->mu);
  uv_mutex_unlock(&d->mu);
  return op.op.rc ? CODA_ESTORE : 0;
}

/* ---- the end of an attempt ----------------------------------------------- */

static uint64_t next_random(coda__durable *d) {
  /* splitmix64 over an atomic counter: any thread, no lock. */
  uint64_t x =
      atomic_fetch_add_explicit(&d->rng, 0x9E3779B97F4A7C15ULL, memory_order_relaxed);
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

/* min(max, base * 2^(attempt-1)), jittered to between half and all of it. */
int64_t coda__durable_backoff(coda__durable *d, const coda_task_def *def, int attempt) {
  const coda__options *o = &d->engine->app->opt;
  uint64_t random = next_random(d);
  int64_t base = def && def->backoff_ms ? def->backoff_ms : o->backoff;
  int64_t max = def && def->backoff_max_ms ? def->backoff_max_ms : o->backoff_max;
  int64_t delay = base;
  for (int i = 1; i < attempt && delay < max; i++)
    delay *= 2;
  if (delay > max)
    delay = max;
  int64_t half = delay / 2;
  return delay - half + (int64_t)(random % (uint64_t)(half + 1));
}

void coda__durable_began(coda_task *t) {
  coda__durable *d = t->def->engine->durable;
  uv_mutex_lock(&d->reg_mu);
  t->began_at = now_ms();
  uv_mutex_unlock(&d->reg_mu);
}

size_t coda__durable_stats_json(coda__engine *e, char *buf, size_t cap) {
  coda__durable *d = e->durable;
  if (!d)
    return (size_t)snprintf(buf, cap, "null");
  return (size_t)snprintf(
      buf, cap,
      "{\"store\":\"%s\",\"batches\":%ld,\"errors\":%ld,\"faulted\":%d,"
      "\"purged\":%ld}",
      d->store->m->name, atomic_load(&d->batches), atomic_load(&d->errors),
      atomic_load(&d->faulted), atomic_load(&d->purged));
}

/* Takes t out of the live registry (status reads go to the store from
 * now on); returns its progress. */
static double leave_live(coda__durable *d, coda_task *t) {
  uv_mutex_lock(&d->reg_mu);
  if (coda__idmap_get(&d->live, t->id) == t)
    coda__idmap_remove(&d->live, t->id);
  if (t->progress_op) { /* written without it: t is about to be freed */
    t->progress_op->task = NULL;
    t->progress_op = NULL;
  }
  double progress = t->progress;
  uv_mutex_unlock(&d->reg_mu);
  return progress;
}

/* A claim given up before its attempt began is kept for release(): the
 * task then waits in the store, due at once for any process, with no
 * attempt counted, rather than stay claimed until its lease ends and
 * expire() counts an attempt it never had. Without memory it is left to
 * the lease, as before. */
static void keep_unstarted(coda__durable *d, coda_task *t) {
  coda__store *s = d->store;
  if (s->m->version < 2 || !s->m->release || !t->lease)
    return;
  uv_mutex_lock(&d->reg_mu);
  int began = t->began_at != 0 || atomic_load(&t->lease_lost);
  if (!began && d->nunstarted == d->unstarted_cap) {
    int cap = d->unstarted_cap ? d->unstarted_cap * 2 : 64;
    coda__lease *p = realloc(d->unstarted, (size_t)cap * sizeof *p);
    if (p) {
      d->unstarted = p;
      d->unstarted_cap = cap;
    }
  }
  if (!began && d->nunstarted < d->unstarted_cap)
    d->unstarted[d->nunstarted++] = (coda__lease){t->id, t->lease};
  uv_mutex_unlock(&d->reg_mu);
}

void coda__durable_abandon(coda_task *t, const char *final_why) {
  coda__durable *d = t->def->engine->durable;
  if (!d || !t->stored)
    return;
  leave_live(d, t);
  if (!final_why) {
    /* Stays in the store: given back now if it never began, otherwise it
     * runs again once its lease ends (or at the next start). */
    keep_unstarted(d, t);
    return;
  }
  coda__finish_op *op = calloc(1, sizeof *op);
  if (!op)
    return; /* not recorded: it runs at the next start */
  int64_t now = now_ms();
  op->op.kind = CODA__OP_FINISH;
  op->executor = t->executor; /* def NULL: the caller gave the slot back */
  op->r.id = t->id;
  op->r.lease = t->lease;
  op->r.name = t->def->name;
  op->r.state = CODA_STATE_DEAD;
  op->r.attempts = t->attempt > 0 ? t->attempt - 1 : 0; /* it never ran */
  op->r.max_attempts = t->max_attempts;
  op->r.finished_at = now;
  op->r.error = op->error = strdup(final_why);
  if (push_op(d, &op->op) != 0) { /* not recorded: it runs at the next start */
    free(op->error);
    free(op);
  }
}

/* Builds and queues the outcome of t's attempt, which gives back its slot
 * once written; t's result moves into it. */
static void record_outcome(coda_task *t, int failed, const char *message) {
  coda__engine *e = t->def->engine;
  coda__durable *d = e->durable;
  double progress = leave_live(d, t);
  coda__finish_op *op = calloc(1, sizeof *op);
  if (!op) {
    /* Not recorded: the task stays claimed and runs again at the next
     * start (at least once). Its slot is given back now. */
    coda__task_unreserve_def(t->def);
    return;
  }
  int64_t now = now_ms();
  op->op.kind = CODA__OP_FINISH;
  op->def = t->def;
  op->executor = t->executor;
  coda__task_record *r = &op->r;
  r->id = t->id;
  r->lease = t->lease; /* fenced: refused if the claim was taken over */
  r->name = t->def->name;
  r->attempts = t->attempt;
  r->max_attempts = t->max_attempts;
  r->started_at = t->began_at ? t->began_at : now;
  r->finished_at = now;
  r->progress = failed ? progress : 1.0;
  atomic_fetch_add_explicit(&d->processed, 1, memory_order_relaxed);
  if (failed && atomic_load(&t->cancel_requested)) {
    /* An operator asked it to stop: not retried (the store would write
     * it so anyway, store.h version 3). */
    r->state = CODA_STATE_CANCELLED;
    coda__task_log(t, CODA_LOG_WARN, "task %s (id %llu) is cancelled (attempt %d): %s",
                   t->def->name, (unsigned long long)t->id, t->attempt,
                   message ? message : "failed");
  } else if (!failed) {
    r->state = CODA_STATE_SUCCEEDED;
    op->result = t->result;
    r->result = t->result;
    r->result_len = t->result_len;
    t->result = NULL;
  } else if (t->attempt >= t->max_attempts) {
    r->state = CODA_STATE_DEAD;
    coda__stat_add(e, t->executor, CODA_STAT_DEAD, 1);
    coda__task_metrics_outcome(t->def, t->executor, CODA__OUTCOME_DEAD);
    coda__task_log(t, CODA_LOG_ERROR, "task %s (id %llu) is dead after %d attempts: %s",
                   t->def->name, (unsigned long long)t->id, t->attempt,
                   message ? message : "failed");
  } else {
    r->state = CODA_STATE_FAILED;
    int64_t wait = coda__durable_backoff(d, t->def, t->attempt);
    r->run_at = now + wait;
    coda__stat_add(e, t->executor, CODA_STAT_RETRIED, 1);
    coda__task_metrics_outcome(t->def, t->executor, CODA__OUTCOME_RETRIED);
    coda__task_log(t, CODA_LOG_WARN,
                   "task %s (id %llu): attempt %d of %d failed; retry in %lld ms",
                   t->def->name, (unsigned long long)t->id, t->attempt, t->max_attempts,
                   (long long)wait);
  }
  if (failed && message)
    r->error = op->error = strdup(message);
  if (push_op(d, &op->op) != 0) {
    /* The store thread has stopped (a THREAD task left running at
     * shutdown): not recorded, as when out of memory above. */
    coda__task_unreserve_def(t->def);
    free(op->error);
    free(op->result);
    free(op);
  }
}

void coda__durable_finished(coda_task *t, int failed, const char *message) {
  record_outcome(t, failed, message);
  coda__task_free(t);
}

void coda__durable_finished_keep(coda_task *t, int failed, const char *message) {
  record_outcome(t, failed, message);
}

/* ---- gated responses: back to their loop ----------------------------- */

/* The loop has ended (shutdown cut the connection): nobody will send the
 * response. Written tasks stay claimed in the store for the next start. */
static void abandon_hold(coda__hold *h) {
  coda__run_abandon(h->run);
  coda__res_abandon(h->res);
  free(h);
}

static void on_hold_written(coda__inbox_msg *m, int cancelled) {
  coda__hold *h = coda__container_of(m, coda__hold, msg);
  if (cancelled) {
    abandon_hold(h);
    return;
  }
  coda_res *res = h->res;
  int rc = h->op.rc;
  if (rc) {
    coda_log(res->app, CODA_LOG_ERROR,
             "durable tasks of request %llu were not written: answering 503",
             (unsigned long long)res->request_id);
    coda__run_drop_unstored(h->run);
  }
  free(h);
  coda__res_resume(res, rc);
}

void coda__durable_hold_written(coda__hold *h) {
  if (coda__task_loop_post(h->loop, &h->msg, on_hold_written) != 0)
    abandon_hold(h);
}

/* ---- status ---------------------------------------------------------------- */

int coda_task_get(coda_app *app, uint64_t id, coda_task_info **out) {
  coda__durable *d = app_durable(app);
  *out = NULL;
  if (!d)
    return CODA_ENOTFOUND;
  int rc = d->store->m->get(d->store, id, out);
  if (rc)
    return rc;
  /* A task alive here knows better than the store whether it runs now. */
  uv_mutex_lock(&d->reg_mu);
  coda_task *t = coda__idmap_get(&d->live, id);
  if (t) {
    (*out)->state = t->began_at ? CODA_STATE_RUNNING : CODA_STATE_QUEUED;
    (*out)->attempts = t->attempt;
    (*out)->progress = t->progress;
    if (t->began_at)
      (*out)->started_at = t->began_at;
  }
  uv_mutex_unlock(&d->reg_mu);
  return 0;
}

double coda__durable_take_progress(coda__durable *d, coda__progress_op *p) {
  uv_mutex_lock(&d->reg_mu);
  if (p->task) {
    p->task->progress_op = NULL;
    p->task = NULL;
  }
  double progress = p->progress;
  uv_mutex_unlock(&d->reg_mu);
  return progress;
}

/* A task may report progress in a tight loop: it costs one pending op at
 * most (the latest value wins), so d->ops cannot fill with them. */
int coda_task_progress(coda_task *t, double fraction) {
  coda__durable *d = t->def->engine->durable;
  if (!t->durable)
    return CODA_ESTATE;
  if (!isfinite(fraction))
    return CODA_EINVAL; /* NaN passes both clamps below */
  if (fraction < 0)
    fraction = 0;
  if (fraction > 1)
    fraction = 1;
  if (coda__in_worker())
    return coda__worker_progress(t, fraction); /* sent to the server */
  if (!d)
    return CODA_ESTATE;
  uv_mutex_lock(&d->reg_mu);
  t->progress = fraction;
  if (t->progress_op) { /* one is pending: it writes this value */
    t->progress_op->progress = fraction;
    uv_mutex_unlock(&d->reg_mu);
    return 0;
  }
  uv_mutex_unlock(&d->reg_mu);
  coda__progress_op *op = calloc(1, sizeof *op);
  if (!op)
    return CODA_ENOMEM;
  op->op.kind = CODA__OP_PROGRESS;
  op->id = t->id;
  op->lease = t->lease;
  op->progress = fraction;
  op->task = t;
  /* Only this task's own thread reports its progress: nobody set one
   * meanwhile. Set before the push: the store thread may take it at once. */
  uv_mutex_lock(&d->reg_mu);
  t->progress_op = op;
  uv_mutex_unlock(&d->reg_mu);
  if (push_op(d, &op->op) != 0) {
    coda__durable_take_progress(d, op);
    free(op);
    return CODA_ESTATE; /* the store has stopped */
  }
  return 0;
}

int coda_task_set_result(coda_task *t, const void *data, size_t len) {
  if (!t->durable)
    return CODA_ESTATE;
  void *copy = malloc(len ? len : 1);
  if (!copy)
    return CODA_ENOMEM;
  if (len)
    memcpy(copy, data, len);
  free(t->result);
  t->result = copy;
  t->result_len = len;
  return 0;
}

int coda_task_durable(const coda_task *t) { return t->durable; }
int coda_task_attempt(const coda_task *t) { return t->attempt ? t->attempt : 1; }

int coda_task_def_durable(coda_task_def *def, int durable) {
  if (!def)
    return CODA_EINVAL;
  def->durable = durable != 0;
  return 0;
}

int coda_task_def_retry(coda_task_def *def, int max_attempts, long backoff_ms,
                        long backoff_max_ms) {
  if (!def || max_attempts < 0 || backoff_ms < 0 || backoff_max_ms < 0)
    return CODA_EINVAL;
  if (max_attempts)
    def->max_attempts = max_attempts;
  if (backoff_ms)
    def->backoff_ms = backoff_ms;
  if (backoff_max_ms)
    def->backoff_max_ms = backoff_max_ms;
  return 0;
}
