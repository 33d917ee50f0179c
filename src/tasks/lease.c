/*
 * lease.c - what a durable engine needs to share a store with other
 * processes (store.h version 2): the queues it serves and pauses, the
 * heartbeat that renews the leases of its running tasks, the takeover of
 * tasks whose lease expired (a process that died, or was cut off), and the
 * outcomes the store refused because their claim was lost (fencing).
 *
 * Threads:
 *  - the heartbeat runs on a thread of its own, never on the store thread
 *    (a long batch, or a store that hangs, must not starve it) nor on a
 *    task's thread or process (a CPU-bound task must not starve it). It
 *    only reads the live registry under reg_mu and calls the store's
 *    renew(), which the store serialises itself;
 *  - expiry, refusals and pauses run on the store thread;
 *  - coda_app_queues()/coda_task_def_queue() are configuration calls (one
 *    thread, before coda_app_run()); coda_app_queue_pause() is any thread,
 *    and waits for the store thread.
 *
 * Must never: hold reg_mu while it calls the store, or touch a task that
 * has left the live registry (it may be freed).
 */
#include "tasks/durable.h"

#include <stdlib.h>
#include <string.h>

#define QUEUE_NAME_MAX 64
#define EXPIRE_MAX                                                                       \
  256 /* tasks taken over per call: the store thread's other work goes on */

/* ---- queues ---------------------------------------------------------------- */

static int valid_queue(const char *q, size_t len) {
  if (len == 0 || len > QUEUE_NAME_MAX)
    return 0;
  for (size_t i = 0; i < len; i++) {
    char c = q[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '.' || c == '-'))
      return 0;
  }
  return 1;
}

int coda_task_def_queue(coda_task_def *def, const char *queue) {
  if (!def || !queue || !valid_queue(queue, strlen(queue)))
    return CODA_EINVAL;
  if (atomic_load(&def->engine->app->running))
    return CODA_ESTATE;
  char *copy = strdup(queue);
  if (!copy)
    return CODA_ENOMEM;
  free(def->queue);
  def->queue = copy;
  coda__task_metrics_def(def);
  return 0;
}

static void free_queues(char **q, int n) {
  for (int i = 0; i < n; i++)
    free(q[i]);
  free(q);
}

int coda_app_queues(coda_app *app, const char *queues) {
  coda__engine *e = coda__engine_of(app);
  if (!e)
    return CODA_ENOMEM;
  if (atomic_load(&app->running))
    return CODA_ESTATE;
  char **list = NULL;
  int n = 0, rc = 0;
  for (const char *p = queues; p && *p && rc == 0;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (!valid_queue(p, len)) {
      rc = CODA_EINVAL;
      break;
    }
    char **grown = realloc(list, (size_t)(n + 1) * sizeof *grown);
    char *name = grown ? strndup(p, len) : NULL;
    if (grown)
      list = grown;
    if (!name) {
      rc = CODA_ENOMEM;
      break;
    }
    list[n++] = name;
    p = end ? end + 1 : p + len;
  }
  if (rc) {
    free_queues(list, n);
    return rc;
  }
  free_queues(e->queues, e->nqueues);
  e->queues = list;
  e->nqueues = n;
  return 0;
}

int coda__engine_serves(const coda__engine *e, const char *queue) {
  if (e->nqueues == 0)
    return 1;
  for (int i = 0; i < e->nqueues; i++)
    if (strcmp(e->queues[i], queue) == 0)
      return 1;
  return 0;
}

int coda_app_queue_pause(coda_app *app, const char *queue, int paused) {
  coda__engine *e = coda__engine_peek(app);
  coda__durable *d = e ? e->durable : NULL;
  if (!queue || !valid_queue(queue, strlen(queue)))
    return CODA_EINVAL;
  if (!d || !d->store->m->pause)
    return CODA_ESTATE;
  if (!atomic_load(&d->running)) /* before the run: the store is only ours */
    return d->store->m->pause(d->store, queue, paused);
  coda__pause_op op = {.op = {.kind = CODA__OP_PAUSE}, .queue = queue, .paused = paused};
  uv_mutex_lock(&d->mu);
  if (d->stop) {
    uv_mutex_unlock(&d->mu);
    return CODA_ESTATE;
  }
  coda__queue_insert_tail(&d->ops, &op.op.link);
  atomic_fetch_add_explicit(&d->pushed, 1, memory_order_release);
  uv_cond_signal(&d->cond);
  while (!op.done)
    uv_cond_wait(&d->synced, &d->mu);
  uv_mutex_unlock(&d->mu);
  return op.op.rc;
}

void coda__lease_write_pauses(coda__durable *d, coda__queue *batch) {
  coda__store *s = d->store;
  coda__queue *q, *next;
  int any = 0;
  for (q = coda__queue_head(batch); q != batch; q = next) {
    next = q->next;
    coda__store_op *op = coda__container_of(q, coda__store_op, link);
    if (op->kind != CODA__OP_PAUSE)
      continue;
    coda__queue_remove(q);
    coda__pause_op *p = (coda__pause_op *)op;
    int rc = s->m->pause(s, p->queue, p->paused);
    if (rc)
      coda_log(d->engine->app, CODA_LOG_ERROR, "task store: %s queue %s failed: %s",
               p->paused ? "pausing" : "resuming", p->queue, s->m->errmsg(s));
    else
      coda_log(d->engine->app, CODA_LOG_INFO, "task queue %s %s", p->queue,
               p->paused ? "paused" : "resumed");
    uv_mutex_lock(&d->mu);
    p->op.rc = rc;
    p->done = 1;
    uv_mutex_unlock(&d->mu);
    any = 1;
  }
  if (!any)
    return;
  d->next_poll = 0; /* a resumed queue: claim now */
  coda__lease_refresh_paused(d);
  uv_mutex_lock(&d->mu);
  uv_cond_broadcast(&d->synced);
  uv_mutex_unlock(&d->mu);
}

void coda__lease_refresh_paused(coda__durable *d) {
  coda__store *s = d->store;
  if (!s->m->paused)
    return;
  char buf[sizeof d->paused];
  int rc = s->m->paused(s, buf, sizeof buf);
  if (rc >= 0)
    memcpy(d->paused, buf, sizeof buf);
  /* On an error the last list stands: a task added in a queue paused
   * since then may run here once, as if added just before the pause. */
}

int coda__lease_is_paused(const coda__durable *d, const char *queue) {
  size_t len = strlen(queue);
  for (const char *p = d->paused; *p;) {
    const char *end = strchr(p, ',');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n == len && memcmp(p, queue, n) == 0)
      return 1;
    p += end ? n + 1 : n;
  }
  return 0;
}

/* ---- lost leases ---------------------------------------------------------- */

void coda__task_mark_lease_lost(coda_task *t, const char *why) {
  if (atomic_exchange(&t->lease_lost, 1))
    return;
  atomic_store(&t->cancelled, 1);
  int pid = atomic_load(&t->worker_pid);
  if (pid > 0) {
    /* The worker runs the task's code in another process: it learns it
     * from a signal whose value names the task (a late signal for a task
     * that ended there is told apart by it). The value is the id's low 31
     * bits, so two tasks of one worker could share it (ids 2^31 apart, or
     * keyed ids, which are hashes): a late signal meant for the one that
     * ended would then cancel the other. Negligible (the signal must come
     * late, and to the worker that ran both), and it costs one attempt at
     * most: the task is told to stop, as at a timeout. */
    union sigval v = {.sival_int = (int)(t->id & 0x7fffffff)};
    sigqueue(pid, CODA__LEASE_SIGNAL, v);
  }
  coda_log(t->def->engine->app, CODA_LOG_WARN,
           "task %s (id %llu) lost its lease (attempt %d): %s; what this attempt "
           "records is refused once another attempt holds the task",
           t->def->name, (unsigned long long)t->id, t->attempt, why);
}

void coda__lease_mark_lost(coda__durable *d, uint64_t id, uint64_t below) {
  uv_mutex_lock(&d->reg_mu);
  coda_task *t = coda__idmap_get(&d->live, id);
  if (t && t->lease && t->lease < below)
    coda__task_mark_lease_lost(t, "the store gave it to another attempt");
  uv_mutex_unlock(&d->reg_mu);
}

int coda_task_lease_lost(const coda_task *t) {
  if (coda__in_worker())
    return coda__worker_lease_lost(t);
  return atomic_load_explicit(&((coda_task *)t)->lease_lost, memory_order_relaxed);
}

/* ---- the heartbeat -------------------------------------------------------- */

typedef struct lease_list {
  coda__lease *items;
  int n, cap, nomem;
} lease_list;

static void snapshot_claim(void *value, void *user) {
  coda_task *t = value;
  lease_list *l = user;
  if (!t->lease || l->nomem || atomic_load(&t->lease_lost))
    return;
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 64;
    coda__lease *p = realloc(l->items, (size_t)cap * sizeof *p);
    if (!p) {
      l->nomem = 1;
      return;
    }
    l->items = p;
    l->cap = cap;
  }
  l->items[l->n++] = (coda__lease){t->id, t->lease};
}

/* A renewal went through: the lease of that claim now ends at `until`. */
static void renewed(coda__durable *d, const coda__lease *l, int64_t until) {
  uv_mutex_lock(&d->reg_mu);
  coda_task *t = coda__idmap_get(&d->live, l->id);
  if (t && t->lease == l->lease && until > t->lease_end)
    t->lease_end = until;
  uv_mutex_unlock(&d->reg_mu);
}

/* The store cannot be reached (cut off, or down): a claim whose lease
 * ended meanwhile may be another process's by now, so its task is told it
 * lost the lease (coda_task_cancelled() becomes true) rather than go on as
 * if nothing happened. If no one took it over, its outcome is still
 * accepted once the store is back. */
static void expire_unrenewed_one(void *value, void *user) {
  coda_task *t = value;
  int64_t now = *(const int64_t *)user;
  if (t->lease && t->lease_end && t->lease_end <= now && !atomic_load(&t->lease_lost))
    coda__task_mark_lease_lost(t, "it could not be renewed before it ended (the store is "
                                  "unreachable)");
}

static void expire_unrenewed(coda__durable *d, int64_t now) {
  uv_mutex_lock(&d->reg_mu);
  coda__idmap_each_user(&d->live, expire_unrenewed_one, &now);
  uv_mutex_unlock(&d->reg_mu);
}

static void renew_all(coda__durable *d, lease_list *l) {
  coda__store *s = d->store;
  l->n = l->nomem = 0;
  uv_mutex_lock(&d->reg_mu);
  coda__idmap_each_user(&d->live, snapshot_claim, l);
  uv_mutex_unlock(&d->reg_mu);
  if (l->n == 0)
    return;
  unsigned char *lost = calloc((size_t)l->n, 1);
  int64_t until = now_ms() + d->engine->app->opt.task_lease;
  int rc = lost ? s->m->renew(s, l->items, l->n, until, lost) : CODA_ENOMEM;
  if (rc) {
    /* Tried again at the next beat; the lease has two more beats left. */
    if (!d->hb_failing)
      coda_log(d->engine->app, CODA_LOG_WARN, "task store: renewing %d leases failed: %s",
               l->n, s->m->errmsg(s));
    d->hb_failing = 1;
    free(lost);
    expire_unrenewed(d, now_ms());
    return;
  }
  d->hb_failing = 0;
  for (int i = 0; i < l->n; i++) {
    if (lost[i] == 1) {
      coda__lease_mark_lost(d, l->items[i].id, l->items[i].lease + 1);
      continue;
    }
    renewed(d, &l->items[i], until);
    if (lost[i] == 2) /* held, and an operator asked it to stop (store.h v3) */
      coda__ops_cancel_live(d, l->items[i].id);
  }
  free(lost);
}

static void heartbeat_main(void *arg) {
  coda__durable *d = arg;
  /* A third of the lease, so that two beats may fail before it ends; at
   * most the node beat's interval, so that operators see this process
   * (and a cancel reaches its tasks) within seconds. */
  uint64_t every_ns = (uint64_t)coda__ops_beat_every_ms(d) * 1000000u;
  lease_list l = {0};
  coda__ops_node_beat(d, 0);
  uv_mutex_lock(&d->hb_mu);
  for (;;) {
    uint64_t until = uv_hrtime() + every_ns;
    for (;;) {
      /* One reading of the clock: read twice, it could pass `until`
       * between the test and the subtraction, which would then wrap. */
      uint64_t now = uv_hrtime();
      if (d->hb_stop || now >= until)
        break;
      uv_cond_timedwait(&d->hb_cond, &d->hb_mu, until - now);
    }
    if (d->hb_stop)
      break;
    if (d->hb_paused)
      continue;
    uv_mutex_unlock(&d->hb_mu);
    renew_all(d, &l);
    coda__ops_node_beat(d, 0);
    uv_mutex_lock(&d->hb_mu);
  }
  uv_mutex_unlock(&d->hb_mu);
  coda__ops_node_beat(d, 1); /* stopping: no longer listed */
  free(l.items);
}

int coda__lease_start(coda__durable *d) {
  coda__engine *e = d->engine;
  coda__store *s = d->store;
  if (s->m->version < 2 || !s->m->serve)
    return 0; /* a version 1 store: no leases to renew */
  int rc = s->m->serve(s, (const char *const *)e->queues, e->nqueues);
  if (rc) {
    coda_log(e->app, CODA_LOG_ERROR, "task store: cannot serve the queues: %s",
             s->m->errmsg(s));
    return rc;
  }
  d->next_expire = 0;
  d->paused[0] = '\0';
  coda__lease_refresh_paused(d);
  d->hb_stop = 0;
  d->hb_failing = 0;
  coda__ops_node_init(d);
  if (!s->m->renew)
    return 0;
  if (uv_thread_create(&d->hb_thread, heartbeat_main, d) != 0)
    return CODA_ENOMEM;
  d->hb_running = 1;
  return 0;
}

void coda__lease_stop(coda__durable *d) {
  if (!d->hb_running)
    return;
  uv_mutex_lock(&d->hb_mu);
  d->hb_stop = 1;
  uv_cond_signal(&d->hb_cond);
  uv_mutex_unlock(&d->hb_mu);
  uv_thread_join(&d->hb_thread);
  d->hb_running = 0;
}

void coda__durable_test_pause_heartbeat(coda_app *app, int paused) {
  coda__engine *e = coda__engine_peek(app);
  coda__durable *d = e ? e->durable : NULL;
  if (!d)
    return;
  uv_mutex_lock(&d->hb_mu);
  d->hb_paused = paused;
  uv_mutex_unlock(&d->hb_mu);
}

/* ---- expiry ---------------------------------------------------------------- */

typedef struct expired {
  uint64_t id, lease;
  int attempts, max_attempts;
  double progress;
  char *name;
} expired;

typedef struct expire_ctx {
  expired items[EXPIRE_MAX];
  int n;
} expire_ctx;

static void on_expired(void *user, const coda__task_record *r) {
  expire_ctx *cx = user;
  if (cx->n == EXPIRE_MAX)
    return; /* cannot happen: the store takes at most max */
  cx->items[cx->n++] =
      (expired){r->id,           r->lease,    r->attempts,
                r->max_attempts, r->progress, strdup(r->name ? r->name : "")};
}

/* The outcome of an expired attempt, as a failed attempt's would be. */
static coda__task_record expired_outcome(coda__durable *d, const expired *x, int64_t now,
                                         coda_executor *ex) {
  coda__engine *e = d->engine;
  coda_task_def *def = x->name ? coda__engine_find(e, x->name) : NULL;
  *ex = def ? def->executor : CODA_EXEC_THREAD;
  coda__task_record r = {.id = x->id,
                         .name = x->name,
                         .attempts = x->attempts,
                         .max_attempts = x->max_attempts,
                         .finished_at = now,
                         .progress = x->progress,
                         .lease = x->lease,
                         .error = "its lease expired (its process died, hung or was cut "
                                  "off from the store)"};
  if (x->attempts >= x->max_attempts) {
    r.state = CODA_STATE_DEAD;
    CODA__LOG(e->app, CODA_LOG_ERROR,
              "task %s (id %llu) is dead after %d attempts: its lease expired", x->name,
              (unsigned long long)x->id, x->attempts);
  } else {
    r.state = CODA_STATE_FAILED;
    int64_t wait = coda__durable_backoff(d, def, x->attempts);
    r.run_at = now + wait;
    CODA__LOG(e->app, CODA_LOG_WARN,
              "task %s (id %llu): attempt %d of %d: its lease expired; retry in %lld ms",
              x->name, (unsigned long long)x->id, x->attempts, x->max_attempts,
              (long long)wait);
  }
  return r;
}

void coda__lease_expire_due(coda__durable *d) {
  coda__store *s = d->store;
  const coda__options *o = &d->engine->app->opt;
  int64_t now = now_ms();
  if (now < d->next_expire)
    return;
  d->next_expire = now + o->task_lease / 2;
  if (!s->m->expire)
    return;
  expire_ctx *cx = calloc(1, sizeof *cx);
  if (!cx)
    return;
  coda_executor ex[EXPIRE_MAX];
  int rc = s->m->begin(s);
  int n = rc ? rc : s->m->expire(s, now, now + o->task_lease, EXPIRE_MAX, on_expired, cx);
  for (int i = 0; n > 0 && i < cx->n; i++) {
    coda__task_record r = expired_outcome(d, &cx->items[i], now, &ex[i]);
    if (s->m->finish(s, &r) != 0)
      n = -1;
  }
  rc = n < 0 ? CODA_ESTORE : s->m->commit(s);
  if (rc) {
    s->m->rollback(s);
    coda_log(d->engine->app, CODA_LOG_ERROR,
             "task store: taking over expired tasks failed: %s", s->m->errmsg(s));
    d->next_expire = now + o->store_poll;
  } else {
    for (int i = 0; i < cx->n; i++) {
      /* One of ours (its heartbeat fell behind): it hears it at once. */
      coda__lease_mark_lost(d, cx->items[i].id, cx->items[i].lease);
      int dead = cx->items[i].attempts >= cx->items[i].max_attempts;
      coda__stat_add(d->engine, ex[i], dead ? CODA_STAT_DEAD : CODA_STAT_RETRIED, 1);
      const char *name = cx->items[i].name;
      coda_task_def *def = name ? coda__engine_find(d->engine, name) : NULL;
      if (def)
        coda__task_metrics_outcome(def, ex[i],
                                   dead ? CODA__OUTCOME_DEAD : CODA__OUTCOME_RETRIED);
    }
    if (cx->n == EXPIRE_MAX)
      d->next_expire = now; /* more may have expired */
    if (cx->n)
      d->next_poll = 0; /* their retries may be due */
  }
  for (int i = 0; i < cx->n; i++)
    free(cx->items[i].name);
  free(cx);
}

/* ---- refused outcomes ------------------------------------------------------ */

void coda__lease_check_refused(coda__durable *d, coda__queue *batch) {
  coda__store *s = d->store;
  if (!s->m->refused)
    return;
  int max = 0;
  coda__queue *q;
  coda__queue_foreach(q, batch) {
    if (coda__op_is_outcome(coda__container_of(q, coda__store_op, link)))
      max++;
  }
  if (max == 0)
    return;
  coda__lease *out = malloc((size_t)max * sizeof *out);
  int n = out ? s->m->refused(s, out, max) : 0;
  for (int i = 0; i < n; i++) {
    coda__queue_foreach(q, batch) {
      coda__store_op *op = coda__container_of(q, coda__store_op, link);
      if (op->kind != CODA__OP_FINISH)
        continue; /* refused progress says nothing the outcome will not */
      coda__finish_op *f = (coda__finish_op *)op;
      if (f->r.id != out[i].id || f->r.lease != out[i].lease)
        continue;
      if (f->unknown) {
        coda_log(d->engine->app, CODA_LOG_INFO,
                 "task %s (id %llu): the outcome of attempt %d was refused when written "
                 "again: the batch whose fate was unknown had written it, or the lease "
                 "was taken over",
                 f->r.name, (unsigned long long)f->r.id, f->r.attempts);
        break;
      }
      coda__stat_add(d->engine, f->executor, CODA_STAT_LEASE_LOST, 1);
      coda_log(d->engine->app, CODA_LOG_WARN,
               "task %s (id %llu): the outcome of attempt %d was refused: its lease had "
               "been taken over (counted as lease_lost, not retried)",
               f->r.name, (unsigned long long)f->r.id, f->r.attempts);
      break;
    }
  }
  free(out);
}
