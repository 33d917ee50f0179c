/*
 * store_thread.c - the durable engine's store thread, which owns every
 * write to the store: it takes what loops, executors and
 * coda_app_enqueue() callers queued (durable.c), writes it in one
 * transaction (one fsync) and hands each result back; it claims due tasks
 * every CODA_OPT_STORE_POLL ms and purges finished ones past
 * CODA_OPT_TASK_RETAIN. Also the engine's start and stop of that thread.
 *
 * Runs on the store thread, except coda__durable_start/_loops_ready/
 * _quiesce/_draining/_stop (the thread that starts and stops the app).
 * Must never: run task code, or hold `mu` while it writes to the store.
 */
#include "tasks/durable.h"

#include "app/exchange.h"

#include <stdlib.h>
#include <string.h>

static int only_outcomes(coda__queue *ops) {
  coda__queue *q;
  coda__queue_foreach(q, ops) {
    if (!coda__op_is_outcome(coda__container_of(q, coda__store_op, link)))
      return 0;
  }
  return 1;
}

/* A batch holds at most BATCH_MAX operations (a held response counts its
 * tasks): a store builds a batch in memory, and Redis sends it as one
 * command, so a burst of adds is written in several batches in a row
 * rather than one unbounded one. What is left waits in d->ops for the
 * next turn of the loop, which does not wait while ops are queued. */
#define BATCH_MAX 4096

static int op_weight(const coda__store_op *op) {
  if (op->kind == CODA__OP_HOLD) {
    int n = ((const coda__hold *)op)->run->n;
    return n > 1 ? n : 1;
  }
  return 1;
}

/* Moves operations from the head of `from` to the tail of `to` until
 * `room` is used (at least one, whatever its weight, so that a big held
 * response still goes); returns the weight moved. */
static int take_ops(coda__queue *to, coda__queue *from, int room) {
  int n = 0;
  while (!coda__queue_empty(from)) {
    coda__queue *q = coda__queue_head(from);
    int w = op_weight(coda__container_of(q, coda__store_op, link));
    if (n > 0 && n + w > room)
      break;
    coda__queue_remove(q);
    coda__queue_insert_tail(to, q);
    n += w;
  }
  return n;
}

/* Outcomes alone are written lazily (no fsync of their own) and nobody
 * waits for them, so the store thread gathers them for up to
 * OUTCOME_WINDOW_MS into one batch: at moderate rates that is one write
 * for many tasks, not one per task. Anything else (a held response, a
 * sync, the stop) ends the window at once, and so does a full batch
 * (`room`). Called under d->mu. */
#define OUTCOME_WINDOW_MS 2
#define OUTCOME_BATCH_MAX 256

static void gather_outcomes(coda__durable *d, coda__queue *batch, int n, int room) {
  uint64_t until = uv_hrtime() + OUTCOME_WINDOW_MS * 1000000ull;
  d->coalescing = 1;
  while (!d->stop && n < OUTCOME_BATCH_MAX && n < room) {
    if (!coda__queue_empty(&d->ops)) {
      coda__queue fresh;
      coda__queue_init(&fresh);
      n += take_ops(&fresh, &d->ops, room - n);
      int urgent = !only_outcomes(&fresh);
      coda__queue_move(batch, &fresh);
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

/* ---- the store thread: writing ------------------------------------------- */

static int write_task(coda__durable *d, coda_task *t, int64_t now) {
  coda__store *s = d->store;
  d->scratch.len = 0;
  if (coda__args_encode(t->args, t->nargs, &d->scratch) != 0)
    return CODA_ENOMEM;
  int delayed = t->run_at > now;
  /* Claimed at once by this process only if it serves the task's queue
   * and the queue is not paused; otherwise a claim takes it, here or in
   * a process that serves it. */
  const char *queue = coda__def_queue(t->def);
  int owned = !delayed && coda__engine_serves(d->engine, queue) &&
              !coda__lease_is_paused(d, queue);
  coda__task_record r = {
      .id = t->id,
      .name = t->def->name,
      .key = t->key,
      .args = d->scratch.base,
      .args_len = d->scratch.len,
      .state = CODA_STATE_QUEUED,
      .attempts = owned ? 1 : 0,
      .max_attempts = t->max_attempts,
      .created_at = t->created_at,
      .run_at = delayed ? t->run_at : t->created_at,
      .queue = queue,
      .trace = t->trace,
      .request_id = t->request_id,
      .origin = t->origin,
  };
  t->elsewhere = !delayed && !owned;
  t->lease = owned ? 1 : 0; /* an owned enqueue is the task's first claim */
  t->lease_end = owned ? now + d->engine->app->opt.task_lease : 0;
  int rc = s->m->enqueue(s, &r, owned, now + d->engine->app->opt.task_lease);
  if (rc == CODA_EEXIST) {
    t->duplicate = 1;
    return 0;
  }
  return rc;
}

/* Writes one operation. Returns nonzero only for a failure that spoils the
 * whole batch; what concerns one operation alone goes to op->rc. */
static int apply(coda__durable *d, coda__store_op *op, int64_t now) {
  coda__store *s = d->store;
  switch (op->kind) {
  case CODA__OP_HOLD: {
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
  case CODA__OP_ENQUEUE:
    return write_task(d, ((coda__enqueue_op *)op)->task, now);
  case CODA__OP_FINISH:
    return s->m->finish(s, &((coda__finish_op *)op)->r);
  case CODA__OP_PROGRESS: {
    coda__progress_op *p = (coda__progress_op *)op;
    double value = coda__durable_take_progress(d, p); /* the latest */
    if (s->m->progress_leased) {
      coda__lease l = {p->id, p->lease};
      return s->m->progress_leased(s, &l, value);
    }
    return s->m->progress(s, p->id, value);
  }
  case CODA__OP_SYNC:
  case CODA__OP_PAUSE: /* written apart, before the batch */
  case CODA__OP_ADMIN:
    return 0;
  }
  return 0;
}

/* After a commit: the batch's new tasks that the store found stored
 * already with the same key (a store that knows it only at commit,
 * store.h duplicates()) are duplicates, as if enqueue() had said
 * CODA_EEXIST: nothing of them was written, and they do not run here. */
static int is_duplicate_id(const uint64_t *ids, int n, uint64_t id) {
  for (int i = 0; i < n; i++)
    if (ids[i] == id)
      return 1;
  return 0;
}

static void mark_duplicates(coda__durable *d, coda__queue *batch) {
  coda__store *s = d->store;
  if (s->m->version < 2 || !s->m->duplicates)
    return;
  int max = 0;
  coda__queue *q;
  coda__queue_foreach(q, batch) {
    coda__store_op *op = coda__container_of(q, coda__store_op, link);
    if (op->kind == CODA__OP_HOLD)
      max += ((coda__hold *)op)->run->n;
    else if (op->kind == CODA__OP_ENQUEUE)
      max++;
  }
  /* Out of memory, the first 64 are known still (nearly always all). */
  uint64_t few[64];
  uint64_t *ids = max > 64 ? malloc((size_t)max * sizeof *ids) : few;
  if (!ids) {
    ids = few;
    max = 64;
  }
  int n = max ? s->m->duplicates(s, ids, max) : 0;
  coda__queue_foreach(q, batch) {
    if (n <= 0)
      break;
    coda__store_op *op = coda__container_of(q, coda__store_op, link);
    if (op->kind == CODA__OP_ENQUEUE) {
      coda_task *t = ((coda__enqueue_op *)op)->task;
      if (is_duplicate_id(ids, n, t->id))
        t->duplicate = 1;
    } else if (op->kind == CODA__OP_HOLD) {
      coda_tasks *run = ((coda__hold *)op)->run;
      for (int i = 0; i < run->n; i++) {
        coda_task *t = run->tasks[i];
        if (t->durable && !t->stored && is_duplicate_id(ids, n, t->id))
          t->duplicate = 1;
      }
    }
  }
  if (ids != few)
    free(ids);
}

static void register_live(coda__durable *d, coda_task *t) {
  uv_mutex_lock(&d->reg_mu);
  coda__idmap_put(&d->live, t->id, t); /* without memory: no live status */
  uv_mutex_unlock(&d->reg_mu);
}

/* A written task that will not run now: a duplicate, delayed (the claims
 * will run it at its time), or of a queue another process serves or that
 * is paused. */
static int set_aside(coda__durable *d, coda_task *t, int64_t now) {
  if (t->duplicate)
    coda__stat_add(d->engine, t->executor, CODA_STAT_DUPLICATE, 1);
  if (!t->duplicate && t->run_at <= now && !t->elsewhere)
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


static void report_store_error(coda__durable *d, const char *what, int refuse_adds) {
  coda__engine *e = d->engine;
  const char *msg = d->store->m->errmsg(d->store);
  atomic_fetch_add_explicit(&d->errors, 1, memory_order_relaxed);
  coda__durable_set_error(d, msg);
  /* Refused new tasks make adds fail fast (503) until a write succeeds;
   * that state is logged when it begins, not for every batch. */
  int was = refuse_adds ? atomic_exchange(&d->faulted, 1) : 0;
  if (!was)
    coda_log(e->app, CODA_LOG_ERROR, "task store: %s failed: %s", what, msg);
}

/* Submits a stored task that runs here now (or parks it until the loops
 * exist; at the stop it stays claimed in the store). */
static void start_stored(coda__durable *d, coda_task *t) {
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
}

/* The batch's fate is unknown (CODA__STORE_UNKNOWN): an owned new task
 * may be in the store, running under this process's claim (token 1). Left
 * alone, it would sit there with no heartbeat until its lease ended and
 * expire() counted an attempt it never had (dead at once with
 * max_attempts 1). So it is kept and run like a written one: the heartbeat
 * renews it if the write landed; if it did not, the renewal reports the
 * lease lost and the outcome is refused, which changes nothing. Its add
 * is still answered as failed (503): it may run though the client was told
 * no, which is the at-least-once side of not knowing. Unowned ones (delayed,
 * or of a queue run elsewhere) need nothing: if written, a claim takes
 * them. Keyed ones are not kept either: their id comes from the key, so
 * the task in the store may be another process's duplicate, claimed under
 * the same token 1 (every owned enqueue's), and fencing could not tell
 * this run from that one; left alone, the lease brings one back as before.
 * Returns whether t was kept. */
static int keep_unknown(coda__durable *d, coda_task *t) {
  if (!t->lease || t->key || t->duplicate)
    return 0;
  CODA__LOG(d->engine->app, CODA_LOG_WARN,
            "task %s (id %llu): the store could not tell whether it was written; it "
            "runs, and its outcome is refused if it was not",
            t->def->name, (unsigned long long)t->id);
  t->stored = 1;
  start_stored(d, t);
  return 1;
}

/* A held response whose batch's fate is unknown: its owned new tasks
 * leave its list and run alone (keep_unknown); the response gets its 503
 * and the rest of the list is dropped as when a write fails. */
static void keep_unknown_hold(coda__durable *d, coda__hold *h) {
  coda_tasks *run = h->run;
  int kept = 0;
  for (int i = 0; i < run->n; i++) {
    coda_task *t = run->tasks[i];
    if (t->durable && !t->stored && keep_unknown(d, t))
      continue;
    run->tasks[kept++] = t;
  }
  run->n = kept;
}

/* Hands each written operation on, in the order written. rc
 * CODA__STORE_UNKNOWN: the batch may or may not have been written. Wakes
 * the callers of coda_app_store_sync() only when the batch held a sync op:
 * a caller who adds a task then syncs is waiting already while the add
 * alone is written, and a wake-up for nothing would cost it a sleep more. */
static void complete(coda__durable *d, coda__queue *batch, int rc, int64_t now) {
  coda__engine *e = d->engine;
  int unknown = rc == CODA__STORE_UNKNOWN;
  int synced = 0;
  while (!coda__queue_empty(batch)) {
    coda__queue *q = coda__queue_head(batch);
    coda__queue_remove(q);
    coda__store_op *op = coda__container_of(q, coda__store_op, link);
    op->rc = op->rc ? op->rc : rc ? CODA_ESTORE : 0;
    switch (op->kind) {
    case CODA__OP_HOLD: {
      coda__hold *h = (coda__hold *)op;
      if (op->rc == 0)
        hold_written(d, h, now);
      else if (unknown)
        keep_unknown_hold(d, h);
      coda__durable_hold_written(h);
      break;
    }
    case CODA__OP_ENQUEUE: {
      coda__enqueue_op *eop = (coda__enqueue_op *)op;
      coda_task *t = eop->task;
      if (eop->written) /* before t may be freed or run */
        eop->written(eop->user, rc ? CODA_ESTORE : 0);
      free(op);
      if (unknown && keep_unknown(d, t))
        break;
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
      start_stored(d, t);
      break;
    }
    case CODA__OP_FINISH: {
      coda__finish_op *f = (coda__finish_op *)op;
      if (rc) { /* kept, and tried again with the next batch */
        f->op.rc = 0;
        f->unknown |= unknown; /* if it landed, the next write is refused */
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
    case CODA__OP_PROGRESS: /* not written again: the next one will be */
      coda__durable_take_progress(d, (coda__progress_op *)op);
      free(op);
      break;
    case CODA__OP_SYNC:
      uv_mutex_lock(&d->mu);
      ((coda__sync_op *)op)->done = 1;
      uv_mutex_unlock(&d->mu);
      synced = 1;
      break;
    case CODA__OP_PAUSE: /* taken out of every batch before it is written */
    case CODA__OP_ADMIN:
      break;
    }
  }
  if (!synced) /* pause and admin ops wake their callers themselves */
    return;
  uv_mutex_lock(&d->mu);
  uv_cond_broadcast(&d->synced);
  uv_mutex_unlock(&d->mu);
}

/* One operation in its own transaction. */
static int write_alone(coda__durable *d, coda__store_op *op, int64_t now) {
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
    coda__store_op *op = coda__container_of(q, coda__store_op, link);
    int rc = write_alone(d, op, now);
    if (rc == CODA_ELIMIT && op->kind == CODA__OP_FINISH && ((coda__finish_op *)op)->result) {
      coda__finish_op *f = (coda__finish_op *)op;
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
    if (rc == 0)
      coda__lease_check_refused(d, &q1);
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
    coda__op_kind k = coda__container_of(q, coda__store_op, link)->kind;
    if (k != CODA__OP_FINISH && k != CODA__OP_PROGRESS)
      lazy = 0;
  }
  int rc = lazy ? s->m->begin_lazy(s) : s->m->begin(s);
  if (rc == 0 && want_ids && (rc = s->m->reserve_ids(s, CODA__ID_BLOCK, &first)) != 0) {
    /* The current block still has ids (a refill starts at half): write
     * the batch without the next one, which the next batch asks for. */
    report_store_error(d, "reserving task ids", 0);
    s->m->rollback(s);
    want_ids = 0;
    rc = s->m->begin(s);
  }
  coda__queue_foreach(q, batch) {
    if (rc)
      break;
    rc = apply(d, coda__container_of(q, coda__store_op, link), now);
  }
  if (rc == 0)
    rc = s->m->commit(s);
  if (rc == CODA__STORE_UNKNOWN) {
    /* Written or not, the store cannot tell: not tried again (the same
     * ids could be refused as taken, or written twice). New tasks are
     * answered as failed, owned ones kept running (keep_unknown); outcomes
     * are written again with the next batch. */
    s->m->rollback(s);
    report_store_error(d, "writing a batch (whether it was written is unknown)", 1);
  } else if (rc == CODA_ETIMEDOUT) {
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
      coda__store_op *op = coda__container_of(q, coda__store_op, link);
      if (op->kind == CODA__OP_HOLD || op->kind == CODA__OP_ENQUEUE) {
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
    mark_duplicates(d, batch);
    coda__lease_check_refused(d, batch);
    if (want_ids) {
      uv_mutex_lock(&d->id_mu);
      d->spare_first = first;
      d->spare_end = first + CODA__ID_BLOCK;
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
    uint64_t id, lease;
    int attempts;
    int unreadable;     /* registered, but its arguments do not decode */
  } unknown[CODA__MAX_CLAIM]; /* every task of a claim may be unknown */
  int nunknown;
  int64_t lease_until; /* of this claim */
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
    if (cx->nunknown < CODA__MAX_CLAIM) {
      cx->unknown[cx->nunknown].id = r->id;
      cx->unknown[cx->nunknown].lease = r->lease;
      cx->unknown[cx->nunknown].attempts = r->attempts;
      cx->unknown[cx->nunknown++].unreadable = def != NULL;
    }
    return;
  }
  t->id = r->id;
  t->lease = r->lease;
  t->lease_end = cx->lease_until;
  t->durable = t->stored = 1;
  t->attempt = r->attempts;
  t->max_attempts = r->max_attempts;
  t->created_at = r->created_at;
  t->progress = r->progress;
  if (r->key)
    t->key = strdup(r->key);
  /* The request's traceparent, kept by the store (version 3), for this
   * attempt's log lines and coda_task_traceparent(), wherever it runs. */
  if (r->trace && *r->trace)
    t->trace = strdup(r->trace);
  coda__queue_insert_tail(&cx->tasks, &t->link);
}

/* Whether the store holds t under the claim just made, though the batch
 * failed: a store may claim outside the batch (Redis runs its claim at
 * once; the memory store's claims are not undone by rollback), or inside
 * it (SQLite: rolled back, the task waits again). get() says which, task
 * by task: running, with the attempt this claim counted. When it cannot
 * tell, the task is not run here (its lease brings it back, as before). */
static int claim_held(coda__durable *d, const coda_task *t) {
  coda__store *s = d->store;
  coda_task_info *info = NULL;
  int held = s->m->get(s, t->id, &info) == 0 && info->state == CODA_STATE_RUNNING &&
             info->attempts == t->attempt;
  coda_task_info_free(info);
  return held;
}

static void submit_claimed(coda__durable *d, coda_task *t) {
  coda__task_force_reserve(t->def);
  coda__stat_add(d->engine, t->executor, CODA_STAT_CLAIMED, 1);
  register_live(d, t);
  coda__task_submit(t);
}

/* The claim's batch failed (review #9): claimed tasks the store still holds
 * run now rather than sit claimed until their lease ends (an attempt
 * counted, never run: dead at once with max_attempts 1); the others are
 * freed. The outcomes of unknown tasks wait for the next batch, like any
 * outcome a failed batch could not write (refused then if the claim was
 * undone: the next claim marks them again). */
static void claim_failed(coda__durable *d, claim_ctx *cx, int64_t now) {
  while (!coda__queue_empty(&cx->tasks)) {
    coda__queue *q = coda__queue_head(&cx->tasks);
    coda__queue_remove(q);
    coda_task *t = coda__container_of(q, coda_task, link);
    if (claim_held(d, t))
      submit_claimed(d, t);
    else
      coda__task_free(t);
  }
  for (int i = 0; i < cx->nunknown; i++) {
    coda__finish_op *f = calloc(1, sizeof *f);
    char *why =
        strdup(cx->unknown[i].unreadable ? "its arguments cannot be read back"
                                         : "no task of that name in this program");
    if (!f || !why) {
      free(f);
      free(why);
      continue; /* claimed again once its lease ends */
    }
    f->op.kind = CODA__OP_FINISH;
    f->executor = CODA_EXEC_THREAD;
    f->unknown = 1; /* refused if the claim was undone */
    f->r = (coda__task_record){.id = cx->unknown[i].id,
                               .state = CODA_STATE_DEAD,
                               .attempts = cx->unknown[i].attempts,
                               .lease = cx->unknown[i].lease,
                               .finished_at = now,
                               .error = why};
    f->error = why;
    coda__queue_insert_tail(&d->retry_ops, &f->op.link);
  }
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
  return n < 0 ? 0 : n > CODA__MAX_CLAIM ? CODA__MAX_CLAIM : n;
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
  claim_ctx cx = {.d = d, .lease_until = now + o->task_lease};
  coda__queue_init(&cx.tasks);
  int rc = s->m->begin(s);
  int n = rc ? rc : s->m->claim(s, now, cx.lease_until, (int)max, on_claimed, &cx);
  for (int i = 0; n >= 0 && i < cx.nunknown; i++) {
    coda__task_record dead = {.id = cx.unknown[i].id,
                              .state = CODA_STATE_DEAD,
                              .attempts = cx.unknown[i].attempts,
                              .lease = cx.unknown[i].lease,
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
    claim_failed(d, &cx, now);
    return;
  }
  /* The store took a write: adds may try it again. */
  if (atomic_exchange(&d->faulted, 0))
    coda_log(e->app, CODA_LOG_INFO, "task store: writing again");
  while (!coda__queue_empty(&cx.tasks)) {
    coda__queue *q = coda__queue_head(&cx.tasks);
    coda__queue_remove(q);
    submit_claimed(d, coda__container_of(q, coda_task, link));
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

/* ---- unstarted claims ------------------------------------------------------- */

/* Gives back the claims dropped before their attempt began (durable.c
 * keeps them, only when the store has release()). Outside any batch. A
 * failure leaves them to their leases (expire() then counts an attempt). */
static void release_unstarted(coda__durable *d) {
  coda__store *s = d->store;
  uv_mutex_lock(&d->reg_mu);
  coda__lease *l = d->unstarted;
  int n = d->nunstarted;
  d->unstarted = NULL;
  d->nunstarted = d->unstarted_cap = 0;
  uv_mutex_unlock(&d->reg_mu);
  if (n == 0) {
    free(l);
    return;
  }
  int rc = s->m->release(s, l, n);
  if (rc)
    coda_log(d->engine->app, CODA_LOG_WARN,
             "task store: giving back %d tasks that did not start failed: %s; they run "
             "again when their lease ends",
             n, s->m->errmsg(s));
  else
    CODA__LOG(d->engine->app, CODA_LOG_INFO,
              "task store: %d tasks that did not start were given back", n);
  free(l);
}

/* ---- the store thread ------------------------------------------------------- */

/* After a batch someone waited for (an add, a held response, a sync), the
 * store thread watches for the next operation for up to STORE_SPIN_NS
 * before it sleeps: a caller that adds one task at a time, each
 * acknowledged, pushes its next one within microseconds of being woken,
 * and a thread asleep on the condition would add a wake-up to every add's
 * latency. Outcomes alone do not spin (nobody waits for them), and the
 * spin ends at the first push, so an idle store thread costs nothing. */
#ifndef STORE_SPIN_NS
#define STORE_SPIN_NS 50000u
#endif

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Called under d->mu with d->ops empty; returns with it held, once an
 * operation was pushed or STORE_SPIN_NS passed. (A caller waiting for its batch does not
 * spin likewise: measured on 2 cores, a third busy thread beside the store
 * thread and redis-server made every add slower.) */
static void spin_for_ops(coda__durable *d) {
  unsigned seen = atomic_load_explicit(&d->pushed, memory_order_relaxed);
  uv_mutex_unlock(&d->mu);
  uint64_t until = uv_hrtime() + STORE_SPIN_NS;
  for (unsigned i = 0; atomic_load_explicit(&d->pushed, memory_order_acquire) == seen;
       i++) {
    cpu_relax();
    if ((i & 15) == 15 && uv_hrtime() >= until)
      break;
  }
  uv_mutex_lock(&d->mu);
}

static void store_main(void *arg) {
  coda__durable *d = arg;
  coda__queue batch;
  int spin = 0; /* the last turn wrote a batch that someone waited for */
  for (;;) {
    coda__queue_init(&batch);
    uv_mutex_lock(&d->mu);
    for (;;) {
      if (!coda__queue_empty(&d->ops) || d->stop || d->kick)
        break;
      int64_t next = d->next_poll < d->next_purge ? d->next_poll : d->next_purge;
      if (d->next_expire < next)
        next = d->next_expire;
      int64_t wait = next - now_ms();
      if (wait <= 0)
        break;
      if (spin) { /* then look again: ops, stop, and the clock moved */
        spin = 0;
        spin_for_ops(d);
        continue;
      }
      uv_cond_timedwait(&d->cond, &d->mu, (uint64_t)wait * 1000000u);
    }
    if (d->kick) {
      d->kick = 0;
      d->next_poll = 0;
    }
    int stop = d->stop;
    int64_t now = now_ms();
    /* Outcomes a failed batch kept go first, at the poll's pace; at the
     * stop all of them, since there is no next turn for them. */
    int n = 0;
    if (!coda__queue_empty(&d->retry_ops) && (now >= d->next_poll || stop)) {
      if (stop)
        coda__queue_move(&batch, &d->retry_ops);
      else
        n = take_ops(&batch, &d->retry_ops, BATCH_MAX);
    }
    coda__queue fresh;
    coda__queue_init(&fresh);
    int m = n < BATCH_MAX ? take_ops(&fresh, &d->ops, BATCH_MAX - n) : 0;
    if (!stop && m && only_outcomes(&fresh))
      gather_outcomes(d, &fresh, m, BATCH_MAX - n);
    coda__queue_move(&batch, &fresh);
    uv_mutex_unlock(&d->mu);
    coda__lease_write_pauses(d, &batch);
    coda__ops_write_admin(d, &batch);
    uv_mutex_lock(&d->id_mu);
    int refill = d->refill;
    uv_mutex_unlock(&d->id_mu);
    if (!coda__queue_empty(&batch) || refill) {
      spin = !only_outcomes(&batch);
      uint64_t t0 = uv_hrtime();
      write_batch(d, &batch);
      coda__task_metrics_batch(d->engine, uv_hrtime() - t0);
    }
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
      coda__lease_refresh_paused(d);
      uv_mutex_lock(&d->submit_mu);
      if (!d->no_submit && d->loops_ready && !atomic_load(&d->draining))
        claim_due(d);
      else
        d->next_poll = now_ms() + d->engine->app->opt.store_poll;
      uv_mutex_unlock(&d->submit_mu);
    }
    if (now_ms() >= d->next_purge)
      purge_old(d);
    coda__lease_expire_due(d);
    release_unstarted(d);
  }
  release_unstarted(d); /* what the pools dropped at the stop */
  long lost = 0;
  while (!coda__queue_empty(&d->retry_ops)) {
    coda__queue *q = coda__queue_head(&d->retry_ops);
    coda__queue_remove(q);
    coda__finish_op *f = coda__container_of(q, coda__finish_op, op.link);
    if (f->def) /* none: an outcome whose slot was given back already */
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
  rc = recovered < 0 ? recovered : s->m->reserve_ids(s, CODA__ID_BLOCK, &first);
  if (rc == 0)
    rc = s->m->commit(s);
  if (rc) {
    s->m->rollback(s);
    coda__durable_set_error(d, s->m->errmsg(s));
    coda_log(e->app, CODA_LOG_ERROR, "task store: cannot start: %s", s->m->errmsg(s));
    return CODA_ESTORE;
  }
  if (recovered > 0)
    coda_log(e->app, CODA_LOG_WARN,
             "task store: %d tasks were queued or running when the last run ended; "
             "they run again",
             recovered);
  d->id_next = first;
  d->id_end = first + CODA__ID_BLOCK;
  d->spare_first = d->spare_end = 0;
  d->refill = 0;
  uv_mutex_lock(&d->mu);
  d->stop = 0;
  uv_mutex_unlock(&d->mu);
  d->no_submit = 0;
  d->loops_ready = 0;
  d->kick = 0;
  coda__queue_init(&d->parked);
  atomic_store(&d->draining, 0);
  atomic_store(&d->faulted, 0);
  d->next_poll = 0; /* claim what is due at once */
  d->next_purge = now + purge_every(&e->app->opt);
  d->next_expire = INT64_MAX;           /* a store without leases */
  if ((rc = coda__lease_start(d)) != 0) /* queues served, then the heartbeat */
    return rc;
  if (uv_thread_create(&d->thread, store_main, d) != 0) {
    coda__lease_stop(d);
    return CODA_ENOMEM;
  }
  atomic_store(&d->running, 1);
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
  if (!d || !atomic_load(&d->running))
    return;
  coda__lease_stop(d);
  uv_mutex_lock(&d->mu);
  d->stop = 1;
  uv_cond_signal(&d->cond);
  uv_mutex_unlock(&d->mu);
  uv_thread_join(&d->thread);
  atomic_store(&d->running, 0);
  uv_mutex_lock(&d->reg_mu);
  coda__idmap_free(&d->live);
  uv_mutex_unlock(&d->reg_mu);
}
