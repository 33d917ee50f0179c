/*
 * durable.c - durable tasks: ids, the store thread and its group commits,
 * claims of due tasks, retries with backoff and jitter, status by id.
 *
 * The store thread owns every write to the store. Loop threads, executor
 * threads and coda_app_enqueue() callers push operations onto `ops` (under
 * `mu`) and signal `cond`; the thread takes all that has accumulated, writes
 * it in one transaction (one fsync), and then hands each outcome back:
 *  - a held response (OP_HOLD) goes to its loop's hold inbox, where
 *    coda__conn_hold_done() sends it, or a 503 if the write failed;
 *  - a task enqueued outside a request (OP_ENQUEUE) is submitted;
 *  - the end of an attempt (OP_FINISH) gives back the task's queue slot
 *    only now, so the slots bound everything in flight, writes included.
 * While it waits it claims due tasks (retries, delayed tasks, tasks left by
 * a previous run) every CODA_OPT_STORE_POLL ms, or sooner when the store
 * says one is due sooner.
 *
 * Ids: blocks of ID_BLOCK (about a million) reserved in the store (so never reused, even
 * after a crash), handed out under `id_mu`; the store thread reserves the
 * next block when half of the current one is used. A task with an
 * idempotency key gets an id derived from the key instead, so the handler
 * knows it at once and a second add of the key finds the first task.
 *
 * Tasks alive in this process are in `live` (under `reg_mu`), so a status
 * read shows queued/running and progress without a store write for each.
 *
 * Must never: write to the store from an event loop, or free a slot
 * before the task's outcome is in the store.
 */
#include "tasks/task.h"

#include "app/exchange.h"
#include "common/idmap.h"
#include "server/conn.h"
#include "server/server.h"
#include "store/store.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define ID_BLOCK (1u << 20)
#define KEY_ID_BIT (1ULL << 62)
#define MAX_CLAIM 512

typedef enum { OP_HOLD, OP_ENQUEUE, OP_FINISH, OP_PROGRESS, OP_SYNC } op_kind;

typedef struct store_op {
  coda__queue link;
  op_kind kind;
  int rc; /* the outcome, once written */
} store_op;

typedef struct coda__hold coda__hold;
struct coda__hold {
  store_op op;
  coda__loop *loop;
  coda__conn *conn;
  coda_tasks *run;
};

typedef struct enqueue_op {
  store_op op;
  coda_task *task;
} enqueue_op;

typedef struct finish_op {
  store_op op;
  coda_task_def *def; /* whose slot is given back once written (NULL: none) */
  coda_executor executor;
  coda__task_record r;
  char *error;
  void *result;
} finish_op;

typedef struct progress_op {
  store_op op;
  uint64_t id;
  double progress;
} progress_op;

typedef struct sync_op {
  store_op op;
  int done;
} sync_op;

struct coda__durable {
  coda__engine *engine;
  coda__store *store;
  /* mu protects ops, stop and the sync ops' done flags. */
  uv_mutex_t mu;
  uv_cond_t cond;   /* work arrived, or stop */
  uv_cond_t synced; /* a batch ended */
  coda__queue ops;
  int stop;
  int coalescing; /* the store thread gathers outcomes: they need no wake-up */
  int kick;       /* claim now (the loops just became ready) */
  int running;
  uv_thread_t thread;
  atomic_int faulted;                  /* the last batch failed: adds fail fast */
  atomic_long batches, errors, purged; /* for the stats */
  atomic_int draining;
  /* id_mu protects the id blocks and `refill`. */
  uv_mutex_t id_mu;
  uint64_t id_next, id_end, spare_first, spare_end;
  int refill;
  /* reg_mu protects `live` and the progress and began_at of the tasks
   * in it. */
  uv_mutex_t reg_mu;
  coda__idmap live;
  /* submit_mu: the store thread submits tasks to the executors only under
   * it and only while !no_submit; the engine sets no_submit under it
   * before it stops the pools, so they are never reached once stopping. */
  uv_mutex_t submit_mu;
  int no_submit;
  /* Set under submit_mu once the server's loops exist (LOOP tasks need
   * them): until then claims wait and enqueued tasks are parked. */
  int loops_ready;
  coda__queue parked; /* store thread only */
  /* Store thread only. */
  coda__queue retry_ops; /* outcomes a failed batch could not write */
  coda__buf scratch;
  int64_t next_poll;
  int64_t next_purge; /* store thread only */
  unsigned next_loop;
  atomic_ullong rng;
  char err[512]; /* last error, for coda_app_store_error (under mu) */
};

static int64_t now_ms(void) { return coda__unix_ms(); }

static void set_error(coda__durable *d, const char *msg) {
  uv_mutex_lock(&d->mu);
  snprintf(d->err, sizeof d->err, "%s", msg);
  uv_mutex_unlock(&d->mu);
}

/* ---- opening --------------------------------------------------------------- */

static char open_error[512]; /* for an app whose store failed to open */

int coda_app_store(coda_app *app, const char *uri) {
  coda__engine *e = app->engine;
  if (!uri || atomic_load(&app->running))
    return uri ? CODA_ESTATE : CODA_EINVAL;
  /* A PROCESS worker runs main() again: the store is the server's (whose
   * lock it holds); the worker never writes to it. */
  if (getenv("CODA_WORKER_FD"))
    return 0;
  coda__durable_free(e);
  return coda__durable_open(e, uri);
}

const char *coda_app_store_error(const coda_app *app) {
  coda__durable *d = app->engine->durable;
  return d ? d->err : open_error;
}

int coda__durable_open(coda__engine *e, const char *uri) {
  coda__durable *d = calloc(1, sizeof *d);
  if (!d)
    return CODA_ENOMEM;
  char err[512] = "";
  int rc = coda__store_open(uri, e->app->opt.store_max_bytes, &d->store, err, sizeof err);
  if (rc) {
    snprintf(open_error, sizeof open_error, "%s", err);
    coda_log(e->app, CODA_LOG_ERROR, "task store \"%s\": %s", uri, err);
    free(d);
    return rc == CODA_EINVAL ? rc : CODA_ESTORE;
  }
  open_error[0] = '\0';
  d->engine = e;
  uv_mutex_init(&d->mu);
  uv_cond_init(&d->cond);
  uv_cond_init(&d->synced);
  uv_mutex_init(&d->id_mu);
  uv_mutex_init(&d->reg_mu);
  uv_mutex_init(&d->submit_mu);
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
  coda__buf_free(&d->scratch);
  uv_mutex_destroy(&d->mu);
  uv_cond_destroy(&d->cond);
  uv_cond_destroy(&d->synced);
  uv_mutex_destroy(&d->id_mu);
  uv_mutex_destroy(&d->reg_mu);
  uv_mutex_destroy(&d->submit_mu);
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
  return KEY_ID_BIT | (h & (KEY_ID_BIT - 1));
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
  if (!d->refill && !d->spare_end && d->id_end - d->id_next < ID_BLOCK / 2)
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

static int is_outcome(const store_op *op) {
  return op->kind == OP_FINISH || op->kind == OP_PROGRESS;
}

static void push_op(coda__durable *d, store_op *op) {
  uv_mutex_lock(&d->mu);
  coda__queue_insert_tail(&d->ops, &op->link);
  if (!d->coalescing || !is_outcome(op))
    uv_cond_signal(&d->cond);
  uv_mutex_unlock(&d->mu);
}

static int only_outcomes(coda__queue *ops) {
  coda__queue *q;
  coda__queue_foreach(q, ops) {
    if (!is_outcome(coda__container_of(q, store_op, link)))
      return 0;
  }
  return 1;
}

/* Outcomes alone are written lazily (no fsync of their own) and nobody
 * waits for them, so the store thread gathers them for up to
 * OUTCOME_WINDOW_MS into one batch: at moderate rates that is one write
 * for many tasks, not one per task. Anything else (a held response, a
 * sync, the stop) ends the window at once. Called under d->mu. */
#define OUTCOME_WINDOW_MS 2
#define OUTCOME_BATCH_MAX 256

static void gather_outcomes(coda__durable *d, coda__queue *batch, int n) {
  uint64_t until = uv_hrtime() + OUTCOME_WINDOW_MS * 1000000ull;
  d->coalescing = 1;
  while (!d->stop && n < OUTCOME_BATCH_MAX) {
    if (!coda__queue_empty(&d->ops)) {
      int urgent = !only_outcomes(&d->ops);
      coda__queue *q;
      coda__queue_foreach(q, &d->ops) n++;
      coda__queue_move(batch, &d->ops);
      if (urgent)
        break;
      continue;
    }
    uint64_t now = uv_hrtime();
    if (now >= until)
      break;
    uv_cond_timedwait(&d->cond, &d->mu, until - now);
  }
  d->coalescing = 0;
}

int coda__durable_hold(coda__conn *c) {
  coda__durable *d = c->loop->app->engine->durable;
  if (!d || !d->running)
    return CODA_ESTORE;
  coda__hold *h = calloc(1, sizeof *h);
  if (!h)
    return CODA_ENOMEM;
  h->op.kind = OP_HOLD;
  h->loop = c->loop;
  h->conn = c;
  h->run = c->res.run;
  c->hold = h;
  push_op(d, &h->op);
  return 0;
}

/* coda_app_enqueue(): a task with no response. */
static int enqueue_alone(coda_app *app, coda_task_def *def, coda_task_opts *opts,
                         const char *fmt, va_list ap) {
  coda__engine *e = app->engine;
  coda__durable *d = e->durable;
  if (!d || !d->running)
    return CODA_ESTATE;
  coda_task_opts local = {0};
  if (!opts)
    opts = &local;
  unsigned saved = opts->flags;
  opts->flags |= CODA_TASK_DURABLE;
  coda_task *t;
  int rc = coda__task_new(e, def, opts->flags, fmt, ap, &t);
  if (rc == 0 && (rc = coda__durable_prepare(e, t, opts)) != 0)
    coda__task_reject(t);
  opts->flags = saved;
  if (rc)
    return rc;
  opts->id = t->id;
  enqueue_op *op = calloc(1, sizeof *op);
  if (!op) {
    coda__task_drop(t, "out of memory");
    return CODA_ENOMEM;
  }
  op->op.kind = OP_ENQUEUE;
  op->task = t;
  push_op(d, &op->op);
  return 0;
}

int coda_app_enqueue(coda_app *app, coda_task_def *def, coda_task_opts *opts,
                     const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = enqueue_alone(app, def, opts, fmt, ap);
  va_end(ap);
  return rc;
}

int coda_app_store_sync(coda_app *app) {
  coda__durable *d = app->engine->durable;
  if (!d)
    return CODA_ESTATE;
  if (!d->running)
    return 0;
  sync_op op = {.op = {.kind = OP_SYNC}};
  uv_mutex_lock(&d->mu);
  coda__queue_insert_tail(&d->ops, &op.op.link);
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
static int64_t backoff_ms(coda__durable *d, const coda_task *t, uint64_t random) {
  const coda__options *o = &d->engine->app->opt;
  int64_t base = t->def->backoff_ms ? t->def->backoff_ms : o->backoff;
  int64_t max = t->def->backoff_max_ms ? t->def->backoff_max_ms : o->backoff_max;
  int64_t delay = base;
  for (int i = 1; i < t->attempt && delay < max; i++)
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
  double progress = t->progress;
  uv_mutex_unlock(&d->reg_mu);
  return progress;
}

void coda__durable_abandon(coda_task *t, const char *final_why) {
  coda__durable *d = t->def->engine->durable;
  if (!d || !t->stored)
    return;
  leave_live(d, t);
  if (!final_why)
    return; /* stays in the store as it is: it runs at the next start */
  finish_op *op = calloc(1, sizeof *op);
  if (!op)
    return; /* not recorded: it runs at the next start */
  int64_t now = now_ms();
  op->op.kind = OP_FINISH;
  op->executor = t->executor; /* def NULL: the caller gave the slot back */
  op->r.id = t->id;
  op->r.name = t->def->name;
  op->r.state = CODA_TASK_DEAD;
  op->r.attempts = t->attempt > 0 ? t->attempt - 1 : 0; /* it never ran */
  op->r.max_attempts = t->max_attempts;
  op->r.finished_at = now;
  op->r.error = op->error = strdup(final_why);
  push_op(d, &op->op);
}

/* Builds and queues the outcome of t's attempt, which gives back its slot
 * once written; t's result moves into it. */
static void record_outcome(coda_task *t, int failed, const char *message) {
  coda__engine *e = t->def->engine;
  coda__durable *d = e->durable;
  double progress = leave_live(d, t);
  finish_op *op = calloc(1, sizeof *op);
  if (!op) {
    /* Not recorded: the task stays claimed and runs again at the next
     * start (at least once). Its slot is given back now. */
    coda__task_unreserve_def(t->def);
    return;
  }
  int64_t now = now_ms();
  op->op.kind = OP_FINISH;
  op->def = t->def;
  op->executor = t->executor;
  coda__task_record *r = &op->r;
  r->id = t->id;
  r->name = t->def->name;
  r->attempts = t->attempt;
  r->max_attempts = t->max_attempts;
  r->started_at = t->began_at ? t->began_at : now;
  r->finished_at = now;
  r->progress = failed ? progress : 1.0;
  if (!failed) {
    r->state = CODA_TASK_SUCCEEDED;
    op->result = t->result;
    r->result = t->result;
    r->result_len = t->result_len;
    t->result = NULL;
  } else if (t->attempt >= t->max_attempts) {
    r->state = CODA_TASK_DEAD;
    coda__stat_add(e, t->executor, CODA_STAT_DEAD, 1);
    CODA__LOG(e->app, CODA_LOG_ERROR, "task %s (id %llu) is dead after %d attempts: %s",
              t->def->name, (unsigned long long)t->id, t->attempt,
              message ? message : "failed");
  } else {
    r->state = CODA_TASK_FAILED;
    int64_t wait = backoff_ms(d, t, next_random(d));
    r->run_at = now + wait;
    coda__stat_add(e, t->executor, CODA_STAT_RETRIED, 1);
    CODA__LOG(e->app, CODA_LOG_WARN,
              "task %s (id %llu): attempt %d of %d failed; retry in %lld ms",
              t->def->name, (unsigned long long)t->id, t->attempt, t->max_attempts,
              (long long)wait);
  }
  if (failed && message)
    r->error = op->error = strdup(message);
  push_op(d, &op->op);
}

void coda__durable_finished(coda_task *t, int failed, const char *message) {
  record_outcome(t, failed, message);
  coda__task_free(t);
}

void coda__durable_finished_keep(coda_task *t, int failed, const char *message) {
  record_outcome(t, failed, message);
}

/* ---- the store thread: writing ------------------------------------------- */

static int write_task(coda__durable *d, coda_task *t, int64_t now) {
  coda__store *s = d->store;
  d->scratch.len = 0;
  if (coda__task_encode_args(t, &d->scratch) != 0)
    return CODA_ENOMEM;
  int delayed = t->run_at > now;
  coda__task_record r = {
      .id = t->id,
      .name = t->def->name,
      .key = t->key,
      .args = d->scratch.base,
      .args_len = d->scratch.len,
      .state = CODA_TASK_QUEUED,
      .attempts = delayed ? 0 : 1,
      .max_attempts = t->max_attempts,
      .created_at = t->created_at,
      .run_at = delayed ? t->run_at : t->created_at,
  };
  int rc = s->m->enqueue(s, &r, !delayed, now + d->engine->app->opt.task_lease);
  if (rc == CODA_EEXIST) {
    t->duplicate = 1;
    return 0;
  }
  return rc;
}

/* Writes one operation. Returns nonzero only for a failure that spoils the
 * whole batch; what concerns one operation alone goes to op->rc. */
static int apply(coda__durable *d, store_op *op, int64_t now) {
  coda__store *s = d->store;
  switch (op->kind) {
  case OP_HOLD: {
    coda_tasks *run = ((coda__hold *)op)->run;
    for (int i = 0; i < run->n; i++) {
      coda_task *t = run->tasks[i];
      if (!t->durable || t->stored)
        continue;
      int rc = write_task(d, t, now);
      if (rc)
        return rc;
    }
    return 0;
  }
  case OP_ENQUEUE:
    return write_task(d, ((enqueue_op *)op)->task, now);
  case OP_FINISH:
    return s->m->finish(s, &((finish_op *)op)->r);
  case OP_PROGRESS:
    return s->m->progress(s, ((progress_op *)op)->id, ((progress_op *)op)->progress);
  case OP_SYNC:
    return 0;
  }
  return 0;
}

static void register_live(coda__durable *d, coda_task *t) {
  uv_mutex_lock(&d->reg_mu);
  coda__idmap_put(&d->live, t->id, t); /* without memory: no live status */
  uv_mutex_unlock(&d->reg_mu);
}

/* A written task that will not run now: a duplicate, or delayed (the
 * claims will run it at its time). */
static int set_aside(coda__durable *d, coda_task *t, int64_t now) {
  if (t->duplicate)
    coda__stat_add(d->engine, t->executor, CODA_STAT_DUPLICATE, 1);
  if (!t->duplicate && t->run_at <= now)
    return 0;
  coda__stat_add(d->engine, t->executor, CODA_STAT_QUEUED, -1);
  coda__task_unreserve_def(t->def);
  coda__task_free(t);
  return 1;
}

static void hold_written(coda__durable *d, coda__hold *h, int64_t now) {
  coda_tasks *run = h->run;
  int kept = 0;
  for (int i = 0; i < run->n; i++) {
    coda_task *t = run->tasks[i];
    if (t->durable && !t->stored) {
      t->stored = 1;
      if (set_aside(d, t, now))
        continue;
      register_live(d, t);
    }
    run->tasks[kept++] = t;
  }
  run->n = kept;
  run->durable_unstored = 0;
}

static void post_hold(coda__hold *h) {
  coda__loop *loop = h->loop;
  uv_mutex_lock(&loop->hold_mu);
  int open = loop->hold_inbox_open;
  if (open) {
    coda__queue_insert_tail(&loop->hold_inbox, &h->op.link);
    uv_async_send(&loop->hold_async);
  }
  uv_mutex_unlock(&loop->hold_mu);
  if (open)
    return;
  /* The loop has ended (shutdown cut the connection): nobody will send the
   * response. Written tasks stay claimed in the store for the next start. */
  coda__conn_hold_orphaned(h->conn);
  free(h);
}

static void report_store_error(coda__durable *d, const char *what, int refuse_adds) {
  coda__engine *e = d->engine;
  const char *msg = d->store->m->errmsg(d->store);
  atomic_fetch_add_explicit(&d->errors, 1, memory_order_relaxed);
  set_error(d, msg);
  /* Refused new tasks make adds fail fast (503) until a write succeeds;
   * that state is logged when it begins, not for every batch. */
  int was = refuse_adds ? atomic_exchange(&d->faulted, 1) : 0;
  if (!was)
    coda_log(e->app, CODA_LOG_ERROR, "task store: %s failed: %s", what, msg);
}

/* Hands each written operation on, in the order written. */
static void complete(coda__durable *d, coda__queue *batch, int rc, int64_t now) {
  coda__engine *e = d->engine;
  while (!coda__queue_empty(batch)) {
    coda__queue *q = coda__queue_head(batch);
    coda__queue_remove(q);
    store_op *op = coda__container_of(q, store_op, link);
    op->rc = op->rc ? op->rc : rc ? CODA_ESTORE : 0;
    switch (op->kind) {
    case OP_HOLD: {
      coda__hold *h = (coda__hold *)op;
      if (op->rc == 0)
        hold_written(d, h, now);
      post_hold(h);
      break;
    }
    case OP_ENQUEUE: {
      coda_task *t = ((enqueue_op *)op)->task;
      free(op);
      if (rc) {
        CODA__LOG(e->app, CODA_LOG_ERROR,
                  "task %s (id %llu) was not written and will not run", t->def->name,
                  (unsigned long long)t->id);
        coda__task_drop(t, "the store could not write it");
        break;
      }
      t->stored = 1;
      if (set_aside(d, t, now))
        break;
      uv_mutex_lock(&d->submit_mu);
      if (d->no_submit) {
        coda__task_drop(t, "shutdown: it runs at the next start");
      } else if (!d->loops_ready) {
        register_live(d, t);
        coda__queue_insert_tail(&d->parked, &t->link); /* until the loops exist */
      } else {
        register_live(d, t);
        coda__task_submit(t);
      }
      uv_mutex_unlock(&d->submit_mu);
      break;
    }
    case OP_FINISH: {
      finish_op *f = (finish_op *)op;
      if (rc) { /* kept, and tried again with the next batch */
        f->op.rc = 0;
        coda__queue_insert_tail(&d->retry_ops, &f->op.link);
        break;
      }
      if (f->def)
        coda__task_unreserve_def(f->def);
      free(f->error);
      free(f->result);
      free(f);
      break;
    }
    case OP_PROGRESS:
      free(op);
      break;
    case OP_SYNC:
      uv_mutex_lock(&d->mu);
      ((sync_op *)op)->done = 1;
      uv_mutex_unlock(&d->mu);
      break;
    }
  }
  uv_mutex_lock(&d->mu);
  uv_cond_broadcast(&d->synced);
  uv_mutex_unlock(&d->mu);
}

/* One operation in its own transaction. */
static int write_alone(coda__durable *d, store_op *op, int64_t now) {
  coda__store *s = d->store;
  int rc = s->m->begin(s);
  if (rc == 0)
    rc = apply(d, op, now);
  if (rc == 0)
    rc = s->m->commit(s);
  if (rc)
    s->m->rollback(s);
  return rc;
}

/* A batch of outcomes failed: find the one the store refuses, so that it
 * cannot hold back the others. An outcome whose result does not fit
 * (CODA_ELIMIT) is written without it, with an error that says so; what
 * still fails, or fails for another reason, waits for the next batch with
 * its result (the store itself is failing). */
static void write_one_by_one(coda__durable *d, coda__queue *batch, int64_t now) {
  int failed = 0, wrote = 0;
  coda__queue done;
  coda__queue_init(&done);
  while (!coda__queue_empty(batch)) {
    coda__queue *q = coda__queue_head(batch);
    coda__queue_remove(q);
    store_op *op = coda__container_of(q, store_op, link);
    int rc = write_alone(d, op, now);
    if (rc == CODA_ELIMIT && op->kind == OP_FINISH && ((finish_op *)op)->result) {
      finish_op *f = (finish_op *)op;
      char why[160];
      snprintf(why, sizeof why, "its result (%zu bytes) could not be stored: %s",
               f->r.result_len, d->store->m->errmsg(d->store));
      coda_log(d->engine->app, CODA_LOG_ERROR, "task %s (id %llu): %s", f->r.name,
               (unsigned long long)f->r.id, why);
      free(f->result);
      free(f->error);
      f->result = NULL;
      f->r.result = NULL;
      f->r.result_len = 0;
      f->r.error = f->error = strdup(why);
      rc = write_alone(d, op, now);
    }
    if (rc)
      report_store_error(d, "recording a task's end", 0);
    failed |= rc != 0;
    wrote |= rc == 0;
    coda__queue q1;
    coda__queue_init(&q1);
    coda__queue_insert_tail(&q1, &op->link);
    complete(d, &q1, rc, now);
  }
  if (wrote && !failed && atomic_exchange(&d->faulted, 0))
    coda_log(d->engine->app, CODA_LOG_INFO, "task store: writing again");
}

static void write_batch(coda__durable *d, coda__queue *batch) {
  coda__store *s = d->store;
  int64_t now = now_ms();
  uv_mutex_lock(&d->id_mu);
  int want_ids = d->refill;
  uv_mutex_unlock(&d->id_mu);
  uint64_t first = 0;
  /* Outcomes alone need not wait for their own fsync: the next batch of
   * new tasks makes them durable too (losing one only re-runs a task). */
  int lazy = !want_ids && s->m->begin_lazy;
  coda__queue *q;
  coda__queue_foreach(q, batch) {
    op_kind k = coda__container_of(q, store_op, link)->kind;
    if (k != OP_FINISH && k != OP_PROGRESS)
      lazy = 0;
  }
  int rc = lazy ? s->m->begin_lazy(s) : s->m->begin(s);
  if (rc == 0 && want_ids)
    rc = s->m->reserve_ids(s, ID_BLOCK, &first);
  coda__queue_foreach(q, batch) {
    if (rc)
      break;
    rc = apply(d, coda__container_of(q, store_op, link), now);
  }
  if (rc == 0)
    rc = s->m->commit(s);
  if (rc == CODA_ETIMEDOUT) {
    /* Locked by another program: every piece would wait again. New tasks
     * fail (503), outcomes wait for the next batch. */
    s->m->rollback(s);
    report_store_error(d, "writing a batch (the store is locked)", 1);
  } else if (rc) {
    s->m->rollback(s);
    /* Split what failed: new tasks, and outcomes of finished ones. New
     * tasks may be what the store refused (it is full), or an outcome may
     * be (its result does not fit); neither may hold back the other. */
    coda__queue others;
    coda__queue_init(&others);
    int adds = 0;
    coda__queue *next;
    for (q = coda__queue_head(batch); q != batch; q = next) {
      next = q->next;
      store_op *op = coda__container_of(q, store_op, link);
      if (op->kind == OP_HOLD || op->kind == OP_ENQUEUE) {
        adds++;
      } else {
        coda__queue_remove(q);
        coda__queue_insert_tail(&others, q);
      }
    }
    if (adds && !coda__queue_empty(&others)) {
      write_batch(d, batch); /* the new tasks alone, once more */
      write_one_by_one(d, &others, now);
      return;
    }
    if (!adds) {
      write_one_by_one(d, &others, now);
      return;
    }
    /* New tasks alone, refused: adds fail fast until a write succeeds. */
    report_store_error(d, "writing new tasks", 1);
  } else {
    if (atomic_exchange(&d->faulted, 0))
      coda_log(d->engine->app, CODA_LOG_INFO, "task store: writing again");
    atomic_fetch_add_explicit(&d->batches, 1, memory_order_relaxed);
    if (want_ids) {
      uv_mutex_lock(&d->id_mu);
      d->spare_first = first;
      d->spare_end = first + ID_BLOCK;
      d->refill = 0;
      uv_mutex_unlock(&d->id_mu);
    }
  }
  complete(d, batch, rc, now);
}

/* ---- the store thread: claiming ------------------------------------------- */

typedef struct claim_ctx {
  coda__durable *d;
  coda__queue tasks;
  struct {
    uint64_t id;
    int attempts;
    int unreadable;     /* registered, but its arguments do not decode */
  } unknown[MAX_CLAIM]; /* every task of a claim may be unknown */
  int nunknown;
} claim_ctx;

static void on_claimed(void *user, const coda__task_record *r) {
  claim_ctx *cx = user;
  coda__engine *e = cx->d->engine;
  coda_task_def *def = coda__engine_find(e, r->name);
  coda_task *t = NULL;
  if (!def || coda__task_decode_args(def, r->args, r->args_len, &t) != 0) {
    coda_log(e->app, CODA_LOG_ERROR,
             "task store: task %llu names \"%s\", which %s; it is marked dead",
             (unsigned long long)r->id, r->name,
             def ? "cannot be read back" : "is not registered in this program");
    if (cx->nunknown < MAX_CLAIM) {
      cx->unknown[cx->nunknown].id = r->id;
      cx->unknown[cx->nunknown].attempts = r->attempts;
      cx->unknown[cx->nunknown++].unreadable = def != NULL;
    }
    return;
  }
  t->id = r->id;
  t->durable = t->stored = 1;
  t->attempt = r->attempts;
  t->max_attempts = r->max_attempts;
  t->created_at = r->created_at;
  t->progress = r->progress;
  if (r->key)
    t->key = strdup(r->key);
  coda__queue_insert_tail(&cx->tasks, &t->link);
}

static long free_slots(coda__engine *e) {
  const coda__options *o = &e->app->opt;
  long free_thread = o->thread_queue - atomic_load(&e->reserved[CODA_EXEC_THREAD]);
  long free_loop = o->loop_queue - atomic_load(&e->reserved[CODA_EXEC_LOOP]);
  long free_proc = o->process_queue - atomic_load(&e->reserved[CODA_EXEC_PROCESS]);
  long n = free_thread;
  if (free_loop < n)
    n = free_loop;
  if (e->procs && free_proc < n)
    n = free_proc;
  return n < 0 ? 0 : n > MAX_CLAIM ? MAX_CLAIM : n;
}

static void claim_due(coda__durable *d) {
  coda__store *s = d->store;
  coda__engine *e = d->engine;
  const coda__options *o = &e->app->opt;
  int64_t now = now_ms();
  d->next_poll = now + o->store_poll;
  long max = free_slots(e);
  if (max == 0)
    return;
  claim_ctx cx = {.d = d};
  coda__queue_init(&cx.tasks);
  int rc = s->m->begin(s);
  int n = rc ? rc : s->m->claim(s, now, now + o->task_lease, (int)max, on_claimed, &cx);
  for (int i = 0; n >= 0 && i < cx.nunknown; i++) {
    coda__task_record dead = {.id = cx.unknown[i].id,
                              .state = CODA_TASK_DEAD,
                              .attempts = cx.unknown[i].attempts,
                              .finished_at = now,
                              .error = cx.unknown[i].unreadable
                                           ? "its arguments cannot be read back"
                                           : "no task of that name in this program"};
    if (s->m->finish(s, &dead) != 0)
      n = -1;
  }
  rc = n < 0 ? CODA_ESTORE : s->m->commit(s);
  if (rc) {
    s->m->rollback(s);
    report_store_error(d, "claiming due tasks", 0);
    while (!coda__queue_empty(&cx.tasks)) {
      coda__queue *q = coda__queue_head(&cx.tasks);
      coda__queue_remove(q);
      coda__task_free(coda__container_of(q, coda_task, link));
    }
    return;
  }
  /* The store took a write: adds may try it again. */
  if (atomic_exchange(&d->faulted, 0))
    coda_log(e->app, CODA_LOG_INFO, "task store: writing again");
  while (!coda__queue_empty(&cx.tasks)) {
    coda__queue *q = coda__queue_head(&cx.tasks);
    coda__queue_remove(q);
    coda_task *t = coda__container_of(q, coda_task, link);
    coda__task_force_reserve(t->def);
    coda__stat_add(e, t->executor, CODA_STAT_CLAIMED, 1);
    register_live(d, t);
    coda__task_submit(t);
  }
  if (n == max) {
    d->next_poll = now; /* more are due */
    return;
  }
  int64_t due = s->m->next_due(s);
  if (due && due < d->next_poll)
    d->next_poll = due > now ? due : now + 1;
}

/* ---- retention ------------------------------------------------------------- */

/* Finished tasks past CODA_OPT_TASK_RETAIN are deleted PURGE_BATCH at a
 * time, in a batch of their own that is not fsync'd (a purge lost to a
 * power cut is done again), so that responses held for a commit never
 * wait long behind one. */
#define PURGE_BATCH 1000
#define PURGE_EVERY_MS 60000

static int64_t purge_every(const coda__options *o) {
  return o->task_retain < PURGE_EVERY_MS ? o->task_retain : PURGE_EVERY_MS;
}

static void purge_old(coda__durable *d) {
  coda__store *s = d->store;
  const coda__options *o = &d->engine->app->opt;
  int64_t now = now_ms();
  if (!s->m->purge || o->task_retain == 0) {
    d->next_purge = INT64_MAX;
    return;
  }
  d->next_purge = now + purge_every(o);
  int rc = s->m->begin_lazy ? s->m->begin_lazy(s) : s->m->begin(s);
  int n = rc ? rc : s->m->purge(s, now - o->task_retain, PURGE_BATCH);
  rc = n < 0 ? n : s->m->commit(s);
  if (rc) {
    s->m->rollback(s);
    report_store_error(d, "purging finished tasks", 0);
    return;
  }
  atomic_fetch_add_explicit(&d->purged, n, memory_order_relaxed);
  if (n == PURGE_BATCH)
    d->next_purge = now + 10; /* more to go: soon, between other batches */
}

/* ---- the store thread ------------------------------------------------------- */

static void store_main(void *arg) {
  coda__durable *d = arg;
  coda__queue batch;
  for (;;) {
    coda__queue_init(&batch);
    uv_mutex_lock(&d->mu);
    for (;;) {
      if (!coda__queue_empty(&d->ops) || d->stop || d->kick)
        break;
      int64_t next = d->next_poll < d->next_purge ? d->next_poll : d->next_purge;
      int64_t wait = next - now_ms();
      if (wait <= 0)
        break;
      uv_cond_timedwait(&d->cond, &d->mu, (uint64_t)wait * 1000000u);
    }
    if (d->kick) {
      d->kick = 0;
      d->next_poll = 0;
    }
    coda__queue_move(&batch, &d->ops);
    if (!d->stop && !coda__queue_empty(&batch) && only_outcomes(&batch))
      gather_outcomes(d, &batch, 1);
    int stop = d->stop;
    uv_mutex_unlock(&d->mu);
    int64_t now = now_ms();
    /* Outcomes a failed batch kept go first, at the poll's pace. */
    if (!coda__queue_empty(&d->retry_ops) && (now >= d->next_poll || stop)) {
      coda__queue retry;
      coda__queue_init(&retry);
      coda__queue_move(&retry, &d->retry_ops);
      coda__queue_move(&retry, &batch);
      coda__queue_move(&batch, &retry);
    }
    uv_mutex_lock(&d->id_mu);
    int refill = d->refill;
    uv_mutex_unlock(&d->id_mu);
    if (!coda__queue_empty(&batch) || refill)
      write_batch(d, &batch);
    if (stop) {
      uv_mutex_lock(&d->mu);
      int more = !coda__queue_empty(&d->ops);
      uv_mutex_unlock(&d->mu);
      if (!more)
        break;
      continue;
    }
    uv_mutex_lock(&d->submit_mu);
    while (!coda__queue_empty(&d->parked) && (d->loops_ready || d->no_submit)) {
      coda__queue *q = coda__queue_head(&d->parked);
      coda__queue_remove(q);
      coda_task *t = coda__container_of(q, coda_task, link);
      if (d->no_submit)
        coda__task_drop(t, "shutdown: it runs at the next start");
      else
        coda__task_submit(t);
    }
    uv_mutex_unlock(&d->submit_mu);
    if (now_ms() >= d->next_poll) {
      uv_mutex_lock(&d->submit_mu);
      if (!d->no_submit && d->loops_ready && !atomic_load(&d->draining))
        claim_due(d);
      else
        d->next_poll = now_ms() + d->engine->app->opt.store_poll;
      uv_mutex_unlock(&d->submit_mu);
    }
    if (now_ms() >= d->next_purge)
      purge_old(d);
  }
  long lost = 0;
  while (!coda__queue_empty(&d->retry_ops)) {
    coda__queue *q = coda__queue_head(&d->retry_ops);
    coda__queue_remove(q);
    finish_op *f = coda__container_of(q, finish_op, op.link);
    coda__task_unreserve_def(f->def);
    free(f->error);
    free(f->result);
    free(f);
    lost++;
  }
  if (lost)
    coda_log(d->engine->app, CODA_LOG_WARN,
             "task store: %ld task outcomes could not be written; those tasks run again "
             "at the next start",
             lost);
}

int coda__durable_start(coda__engine *e) {
  if (!e->durable && coda__durable_open(e, "memory") != 0) /* the default store */
    return CODA_ENOMEM;
  coda__durable *d = e->durable;
  coda__store *s = d->store;
  int64_t now = now_ms();
  uint64_t first = 0;
  int rc = s->m->begin(s);
  int recovered = rc ? rc : s->m->recover(s, now);
  rc = recovered < 0 ? recovered : s->m->reserve_ids(s, ID_BLOCK, &first);
  if (rc == 0)
    rc = s->m->commit(s);
  if (rc) {
    s->m->rollback(s);
    set_error(d, s->m->errmsg(s));
    coda_log(e->app, CODA_LOG_ERROR, "task store: cannot start: %s", s->m->errmsg(s));
    return CODA_ESTORE;
  }
  if (recovered > 0)
    coda_log(e->app, CODA_LOG_WARN,
             "task store: %d tasks were queued or running when the last run ended; "
             "they run again",
             recovered);
  d->id_next = first;
  d->id_end = first + ID_BLOCK;
  d->spare_first = d->spare_end = 0;
  d->refill = 0;
  d->stop = 0;
  d->no_submit = 0;
  d->loops_ready = 0;
  d->kick = 0;
  coda__queue_init(&d->parked);
  atomic_store(&d->draining, 0);
  atomic_store(&d->faulted, 0);
  d->next_poll = 0; /* claim what is due at once */
  d->next_purge = now + purge_every(&e->app->opt);
  if (uv_thread_create(&d->thread, store_main, d) != 0)
    return CODA_ENOMEM;
  d->running = 1;
  return 0;
}

void coda__durable_loops_ready(coda__engine *e) {
  coda__durable *d = e->durable;
  if (!d)
    return;
  uv_mutex_lock(&d->submit_mu);
  d->loops_ready = 1;
  uv_mutex_unlock(&d->submit_mu);
  uv_mutex_lock(&d->mu);
  d->kick = 1; /* claim what is due now */
  uv_cond_signal(&d->cond);
  uv_mutex_unlock(&d->mu);
}

void coda__durable_quiesce(coda__engine *e) {
  coda__durable *d = e->durable;
  if (!d)
    return;
  uv_mutex_lock(&d->submit_mu);
  d->no_submit = 1;
  uv_mutex_unlock(&d->submit_mu);
}

void coda__durable_draining(coda__engine *e) {
  if (e->durable)
    atomic_store(&e->durable->draining, 1);
}

void coda__durable_stop(coda__engine *e) {
  coda__durable *d = e->durable;
  if (!d || !d->running)
    return;
  uv_mutex_lock(&d->mu);
  d->stop = 1;
  uv_cond_signal(&d->cond);
  uv_mutex_unlock(&d->mu);
  uv_thread_join(&d->thread);
  d->running = 0;
  uv_mutex_lock(&d->reg_mu);
  coda__idmap_free(&d->live);
  uv_mutex_unlock(&d->reg_mu);
}

/* ---- loops: the hold inbox ---------------------------------------------- */

static void on_hold_inbox(uv_async_t *a) {
  coda__loop *loop = a->data;
  coda__queue local;
  coda__queue_init(&local);
  uv_mutex_lock(&loop->hold_mu);
  coda__queue_move(&local, &loop->hold_inbox);
  uv_mutex_unlock(&loop->hold_mu);
  while (!coda__queue_empty(&local)) {
    coda__queue *q = coda__queue_head(&local);
    coda__queue_remove(q);
    coda__hold *h = coda__container_of(q, coda__hold, op.link);
    coda__conn *c = h->conn;
    int rc = h->op.rc;
    free(h);
    if (rc)
      coda_log(loop->app, CODA_LOG_ERROR,
               "durable tasks of request %llu were not written: answering 503",
               (unsigned long long)c->req.id);
    coda__conn_hold_done(c, rc);
  }
}

int coda__durable_loop_init(coda__loop *loop) {
  coda__queue_init(&loop->hold_inbox);
  if (uv_mutex_init(&loop->hold_mu) != 0)
    return CODA_ENOMEM;
  if (uv_async_init(&loop->uv, &loop->hold_async, on_hold_inbox) != 0) {
    uv_mutex_destroy(&loop->hold_mu);
    return CODA_ENOMEM;
  }
  loop->hold_async.data = loop;
  uv_unref((uv_handle_t *)&loop->hold_async); /* held connections keep it alive */
  loop->hold_inbox_open = 1;
  return 0;
}

void coda__durable_loop_close(coda__loop *loop) {
  coda__queue left;
  coda__queue_init(&left);
  uv_mutex_lock(&loop->hold_mu);
  loop->hold_inbox_open = 0;
  coda__queue_move(&left, &loop->hold_inbox);
  uv_mutex_unlock(&loop->hold_mu);
  /* Holds that arrived after the loop's last turn: their connections are
   * closed (the loop ends only once it has none), so none is answered. */
  while (!coda__queue_empty(&left)) {
    coda__queue *q = coda__queue_head(&left);
    coda__queue_remove(q);
    coda__hold *h = coda__container_of(q, coda__hold, op.link);
    coda__conn_hold_orphaned(h->conn);
    free(h);
  }
  if (!uv_is_closing((uv_handle_t *)&loop->hold_async))
    uv_close((uv_handle_t *)&loop->hold_async, NULL);
}

/* ---- status ---------------------------------------------------------------- */

int coda_task_get(coda_app *app, uint64_t id, coda_task_info **out) {
  coda__durable *d = app->engine->durable;
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
    (*out)->state = t->began_at ? CODA_TASK_RUNNING : CODA_TASK_QUEUED;
    (*out)->attempts = t->attempt;
    (*out)->progress = t->progress;
    if (t->began_at)
      (*out)->started_at = t->began_at;
  }
  uv_mutex_unlock(&d->reg_mu);
  return 0;
}

/* A listing merges two streams by id: the store's, in which a task alive
 * here may show a stale state (a first attempt is written queued and never
 * claimed), and the live tasks, read as coda_task_get() shows them. */
typedef struct live_id {
  uint64_t id;
  coda_task_state state;
} live_id;

typedef struct list_merge {
  coda_app *app;
  coda_task_state state;
  live_id *live; /* the tasks alive here when the listing began, by id */
  size_t nlive, next_live, cap;
  uint64_t after_id;
  int delivered, limit, stopped, nomem;
  coda_task_list_fn fn;
  void *user;
} list_merge;

static void snapshot_live(void *value, void *user) {
  coda_task *t = value;
  list_merge *m = user;
  if (t->id <= m->after_id || m->nomem)
    return;
  if (m->nlive == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    live_id *p = realloc(m->live, cap * sizeof *p);
    if (!p) {
      m->nomem = 1;
      return;
    }
    m->live = p;
    m->cap = cap;
  }
  m->live[m->nlive++] =
      (live_id){t->id, t->began_at ? CODA_TASK_RUNNING : CODA_TASK_QUEUED};
}

static int by_live_id(const void *a, const void *b) {
  uint64_t x = ((const live_id *)a)->id, y = ((const live_id *)b)->id;
  return x < y ? -1 : x > y;
}

static void deliver(list_merge *m, const coda_task_info *info) {
  m->delivered++;
  if (m->fn(info, m->user) || m->delivered == m->limit)
    m->stopped = 1;
}

/* The live tasks with an id below `below`, those in the listed state read
 * again (the state may have moved on since the snapshot). */
static void deliver_live_below(list_merge *m, uint64_t below) {
  while (!m->stopped && m->next_live < m->nlive && m->live[m->next_live].id < below) {
    live_id l = m->live[m->next_live++];
    coda_task_info *info;
    if (l.state != m->state || coda_task_get(m->app, l.id, &info) != 0)
      continue;
    if (info->state == m->state)
      deliver(m, info);
    coda_task_info_free(info);
  }
}

static int on_stored(const coda_task_info *info, void *user) {
  list_merge *m = user;
  m->after_id = info->id;
  deliver_live_below(m, info->id + 1);
  int live = m->next_live > 0 && m->live[m->next_live - 1].id == info->id;
  if (!live && !m->stopped)
    deliver(m, info);
  return m->stopped;
}

int coda_task_list(coda_app *app, coda_task_state state, uint64_t after_id, int limit,
                   coda_task_list_fn fn, void *user) {
  coda__durable *d = app->engine->durable;
  if (!fn || limit < 0 || state < CODA_TASK_QUEUED || state > CODA_TASK_DEAD)
    return CODA_EINVAL;
  if (!d || !d->store->m->list)
    return d ? CODA_ESTATE : 0;
  if (limit == 0)
    return 0;
  list_merge m = {.app = app,
                  .state = state,
                  .after_id = after_id,
                  .limit = limit,
                  .fn = fn,
                  .user = user};
  uv_mutex_lock(&d->reg_mu);
  coda__idmap_each_user(&d->live, snapshot_live, &m);
  uv_mutex_unlock(&d->reg_mu);
  if (m.nomem) {
    free(m.live);
    return CODA_ENOMEM;
  }
  if (m.nlive > 1)
    qsort(m.live, m.nlive, sizeof *m.live, by_live_id);
  /* Stored tasks that are alive here are skipped, so a page may deliver
   * fewer than it read: read pages until the limit or the end. */
  int rc = 0;
  while (!m.stopped) {
    rc = d->store->m->list(d->store, state, m.after_id, limit, on_stored, &m);
    if (rc < limit)
      break;
  }
  if (rc >= 0)
    deliver_live_below(&m, UINT64_MAX);
  free(m.live);
  return rc < 0 ? rc : m.delivered;
}

int coda_task_progress(coda_task *t, double fraction) {
  coda__durable *d = t->def->engine->durable;
  if (!t->durable)
    return CODA_ESTATE;
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
  uv_mutex_unlock(&d->reg_mu);
  progress_op *op = calloc(1, sizeof *op);
  if (!op)
    return CODA_ENOMEM;
  op->op.kind = OP_PROGRESS;
  op->id = t->id;
  op->progress = fraction;
  push_op(d, &op->op);
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
