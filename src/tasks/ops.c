/*
 * ops.c - what operators see and do (include/coda.h "operators' actions
 * and views"): retry, cancel and delete a durable task, the bulk forms,
 * queue statistics, the nodes of the store (this process beats its own
 * record from the lease heartbeat), and a task's arguments as JSON.
 *
 * Threads: the public actions run on the caller's thread and wait for the
 * store thread, which writes each one alone outside any batch, as it does
 * a pause (store.h version 3); before the app runs they call the store
 * directly (it is only ours then). coda__ops_admin_start() queues one
 * without waiting (the admin API, on an event loop: its on_done runs on
 * the store thread). The views read the store from the caller's thread
 * (the store serialises them as it does get()). The node beat runs on the
 * heartbeat thread. Must never: hold reg_mu while it calls the store, or
 * wait for an action on an event loop or in a task of this app (an action
 * blocks for a store write, however long a bulk one takes).
 */
#include "tasks/durable.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NODE_BEAT_MAX_MS 5000
#define NODE_MISSED_BEATS 3

static coda__durable *app_durable(coda_app *app) {
  coda__engine *e = coda__engine_peek(app);
  return e ? e->durable : NULL;
}

/* ---- actions ------------------------------------------------------------------ */

/* One action, written by the store (the caller's thread before the run). */
static long apply_admin(coda__durable *d, coda__admin_op *a, int64_t now) {
  coda__store *s = d->store;
  switch (a->what) {
  case CODA__ADMIN_RETRY:
    return s->m->retry(s, a->id, now);
  case CODA__ADMIN_CANCEL:
    return s->m->cancel(s, a->id, now);
  case CODA__ADMIN_DELETE:
    return s->m->remove(s, a->id);
  case CODA__ADMIN_RETRY_ALL:
    return s->m->retry_all(s, a->state, a->queue, now);
  case CODA__ADMIN_DELETE_ALL:
    return s->m->remove_all(s, a->state, a->queue);
  }
  return CODA_EINVAL;
}

static const char *const admin_names[] = {"retry", "cancel", "delete", "retry all",
                                          "delete all"};

static void log_admin(coda__durable *d, const coda__admin_op *a, long rc) {
  coda_app *app = d->engine->app;
  if (rc < 0 && rc != CODA_ENOTFOUND && rc != CODA_ESTATE)
    coda_log(app, CODA_LOG_ERROR, "task store: %s failed: %s", admin_names[a->what],
             d->store->m->errmsg(d->store));
  else if (rc >= 0 &&
           (a->what == CODA__ADMIN_RETRY_ALL || a->what == CODA__ADMIN_DELETE_ALL))
    CODA__LOG(app, CODA_LOG_INFO, "tasks: %s %s of queue %s: %ld", admin_names[a->what],
              coda_task_state_name(a->state), a->queue ? a->queue : "(any)", rc);
  else if (rc >= 0)
    CODA__LOG(app, CODA_LOG_INFO, "task %llu: %s%s", (unsigned long long)a->id,
              admin_names[a->what], rc == 1 ? " requested (it is running)" : "");
}

/* What follows a write: a cancelled running task is told here (the
 * heartbeat tells those of other processes), a retried one is claimed
 * at once. */
static void after_admin(coda__durable *d, const coda__admin_op *a, long rc) {
  if (a->what == CODA__ADMIN_CANCEL && rc == 1)
    coda__ops_cancel_live(d, a->id);
  if ((a->what == CODA__ADMIN_RETRY || a->what == CODA__ADMIN_RETRY_ALL) && rc >= 0)
    d->next_poll = 0; /* store thread only (or before the run) */
}

void coda__ops_write_admin(coda__durable *d, coda__queue *batch) {
  coda__queue *q, *next;
  int any = 0;
  for (q = coda__queue_head(batch); q != batch; q = next) {
    next = q->next;
    coda__store_op *op = coda__container_of(q, coda__store_op, link);
    if (op->kind != CODA__OP_ADMIN)
      continue;
    coda__queue_remove(q);
    coda__admin_op *a = (coda__admin_op *)op;
    long rc = apply_admin(d, a, now_ms());
    log_admin(d, a, rc);
    after_admin(d, a, rc);
    uv_mutex_lock(&d->mu);
    a->count = rc;
    a->op.rc = rc < 0 ? (int)rc : (int)(rc > 1 ? 0 : rc);
    void (*on_done)(coda__admin_op *) = a->on_done;
    a->done = 1;
    uv_mutex_unlock(&d->mu);
    if (on_done)
      on_done(a); /* nobody waits for it; it may be freed now */
    else
      any = 1;
  }
  if (!any)
    return;
  uv_mutex_lock(&d->mu);
  uv_cond_broadcast(&d->synced);
  uv_mutex_unlock(&d->mu);
}

static int valid_bulk_state(coda_task_state state, int retry);

static coda__durable *admin_durable(coda_app *app) {
  coda__durable *d = app_durable(app);
  return d && d->store->m->version >= 3 && d->store->m->retry ? d : NULL;
}

/* Hands the action to the store thread; called with d->mu held. */
static int queue_admin(coda__durable *d, coda__admin_op *a) {
  if (d->stop)
    return CODA_ESTATE;
  a->op.kind = CODA__OP_ADMIN;
  coda__queue_insert_tail(&d->ops, &a->op.link);
  atomic_fetch_add_explicit(&d->pushed, 1, memory_order_release);
  uv_cond_signal(&d->cond);
  return 0;
}

/* Queues the action for the store thread and waits for it. */
static long run_admin(coda_app *app, coda__admin_op *a) {
  coda__durable *d = admin_durable(app);
  if (!d)
    return CODA_ESTATE;
  if (!atomic_load(&d->running)) { /* before the run: the store is only ours */
    long rc = apply_admin(d, a, now_ms());
    log_admin(d, a, rc);
    return rc;
  }
  uv_mutex_lock(&d->mu);
  int rc = queue_admin(d, a);
  while (rc == 0 && !a->done)
    uv_cond_wait(&d->synced, &d->mu);
  uv_mutex_unlock(&d->mu);
  return rc ? rc : a->count;
}

int coda__ops_admin_start(coda_app *app, coda__admin_op *a) {
  if ((a->what == CODA__ADMIN_RETRY_ALL || a->what == CODA__ADMIN_DELETE_ALL) &&
      !valid_bulk_state(a->state, a->what == CODA__ADMIN_RETRY_ALL))
    return CODA_EINVAL;
  coda__durable *d = admin_durable(app);
  if (!d || !a->on_done || !atomic_load(&d->running))
    return CODA_ESTATE;
  uv_mutex_lock(&d->mu);
  int rc = queue_admin(d, a);
  uv_mutex_unlock(&d->mu);
  return rc;
}

int coda_task_retry(coda_app *app, uint64_t id) {
  coda__admin_op a = {.what = CODA__ADMIN_RETRY, .id = id};
  return (int)run_admin(app, &a);
}

int coda_task_cancel(coda_app *app, uint64_t id) {
  coda__admin_op a = {.what = CODA__ADMIN_CANCEL, .id = id};
  return (int)run_admin(app, &a);
}

int coda_task_delete(coda_app *app, uint64_t id) {
  coda__admin_op a = {.what = CODA__ADMIN_DELETE, .id = id};
  return (int)run_admin(app, &a);
}

static int valid_bulk_state(coda_task_state state, int retry) {
  if (retry)
    return state == CODA_STATE_DEAD || state == CODA_STATE_FAILED ||
           state == CODA_STATE_CANCELLED;
  return state >= CODA_STATE_QUEUED && state <= CODA_STATE_CANCELLED &&
         state != CODA_STATE_RUNNING;
}

long coda_tasks_retry_all(coda_app *app, coda_task_state state, const char *queue) {
  if (!valid_bulk_state(state, 1))
    return CODA_EINVAL;
  coda__admin_op a = {.what = CODA__ADMIN_RETRY_ALL, .state = state, .queue = queue};
  return run_admin(app, &a);
}

long coda_tasks_delete_all(coda_app *app, coda_task_state state, const char *queue) {
  if (!valid_bulk_state(state, 0))
    return CODA_EINVAL;
  coda__admin_op a = {.what = CODA__ADMIN_DELETE_ALL, .state = state, .queue = queue};
  return run_admin(app, &a);
}

/* ---- cancelling a running attempt ------------------------------------------- */

void coda__ops_cancel_live(coda__durable *d, uint64_t id) {
  const coda__options *o = &d->engine->app->opt;
  uv_mutex_lock(&d->reg_mu);
  coda_task *t = coda__idmap_get(&d->live, id);
  if (t && !atomic_exchange(&t->cancel_requested, 1)) {
    atomic_store(&t->cancelled, 1);
    if (t->executor == CODA_EXEC_PROCESS) {
      atomic_store(&t->cancel_kill_ns,
                   uv_hrtime() + (uint64_t)o->cancel_grace_ms * 1000000u);
      /* The worker learns it as it learns a lost lease (lease.c). */
      int pid = atomic_load(&t->worker_pid);
      if (pid > 0) {
        union sigval v = {.sival_int = (int)(t->id & 0x7fffffff)};
        sigqueue(pid, CODA__LEASE_SIGNAL, v);
      }
    }
    coda_log(d->engine->app, CODA_LOG_WARN, "task %s (id %llu): cancel requested",
             t->def->name, (unsigned long long)t->id);
  }
  uv_mutex_unlock(&d->reg_mu);
}

/* ---- queues --------------------------------------------------------------------- */

int coda_app_queue_stats(coda_app *app, int (*fn)(const coda_queue_info *, void *),
                         void *user) {
  coda__durable *d = app_durable(app);
  if (!fn)
    return CODA_EINVAL;
  if (!d || d->store->m->version < 3 || !d->store->m->queue_stats)
    return CODA_ESTATE;
  return d->store->m->queue_stats(d->store, now_ms(), fn, user);
}

/* ---- nodes ---------------------------------------------------------------------- */

int64_t coda__ops_beat_every_ms(const coda__durable *d) {
  int64_t every = d->engine->app->opt.task_lease / 3;
  return every < NODE_BEAT_MAX_MS ? every : NODE_BEAT_MAX_MS;
}

void coda__ops_node_init(coda__durable *d) {
  if (gethostname(d->node_host, sizeof d->node_host) != 0)
    snprintf(d->node_host, sizeof d->node_host, "localhost");
  d->node_host[sizeof d->node_host - 1] = '\0';
  /* Two apps of one process started in the same millisecond (tests do)
   * still get ids of their own. */
  static atomic_llong last_start;
  long long start = now_ms(), prev = atomic_load(&last_start);
  do {
    if (start <= prev)
      start = prev + 1;
  } while (!atomic_compare_exchange_weak(&last_start, &prev, start));
  d->node_started_at = start;
  snprintf(d->node_id, sizeof d->node_id, "%s:%d:%lld", d->node_host, (int)getpid(),
           (long long)d->node_started_at);
  d->next_beat = 0;
}

static void count_running(void *value, void *user) {
  coda_task *t = value;
  if (t->began_at)
    ++*(int *)user;
}

void coda__ops_node_beat(coda__durable *d, int gone) {
  coda__store *s = d->store;
  coda__engine *e = d->engine;
  coda_app *app = e->app;
  int64_t now = now_ms();
  if (s->m->version < 3 || !s->m->node_beat || (!gone && now < d->next_beat))
    return;
  int64_t every = coda__ops_beat_every_ms(d);
  d->next_beat = now + every;
  char queues[1024] = "", listen[300] = "";
  for (int i = 0, len = 0; i < e->nqueues && len < (int)sizeof queues; i++)
    len += snprintf(queues + len, sizeof queues - (size_t)len, "%s%s", i ? "," : "",
                    e->queues[i]);
  int port = coda_app_port(app);
  if (app->listen && port)
    snprintf(listen, sizeof listen, "%s:%d",
             app->listen_host ? app->listen_host : "127.0.0.1", port);
  int running = 0;
  uv_mutex_lock(&d->reg_mu);
  coda__idmap_each_user(&d->live, count_running, &running);
  uv_mutex_unlock(&d->reg_mu);
  coda_node_info n = {.id = d->node_id,
                      .host = d->node_host,
                      .pid = (int)getpid(),
                      .role = app->listen ? "server" : "worker",
                      .queues = queues,
                      .listen = listen,
                      .running = running,
                      .processed = atomic_load(&d->processed),
                      .started_at = d->node_started_at,
                      .last_seen = now,
                      .version = coda_version()};
  int rc = s->m->node_beat(s, &n, now, gone ? 0 : every * NODE_MISSED_BEATS);
  if (rc && !gone)
    CODA__LOG(app, CODA_LOG_DEBUG, "task store: node heartbeat failed: %s",
              s->m->errmsg(s));
}

int coda_app_nodes(coda_app *app, int (*fn)(const coda_node_info *, void *), void *user) {
  coda__durable *d = app_durable(app);
  if (!fn)
    return CODA_EINVAL;
  if (!d || d->store->m->version < 3 || !d->store->m->nodes)
    return CODA_ESTATE;
  return d->store->m->nodes(d->store, now_ms(), fn, user);
}

/* ---- arguments --------------------------------------------------------------- */

static json_t *arg_json(const coda__arg *a) {
  switch (a->type) {
  case 'i':
    return json_integer((json_int_t)a->v.i);
  case 'd':
    return json_real(a->v.d);
  case 's': {
    json_t *str = json_stringn(a->v.p, a->len);
    if (str)
      return str;
  } /* not UTF-8: shown as bytes */
  /* fall through */
  case 'b': {
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = (const unsigned char *)a->v.p;
    char *out = malloc(((size_t)a->len + 2) / 3 * 4 + 1);
    if (!out)
      return NULL;
    size_t o = 0;
    for (uint32_t i = 0; i < a->len; i += 3) {
      uint32_t v = (uint32_t)p[i] << 16;
      if (i + 1 < a->len)
        v |= (uint32_t)p[i + 1] << 8;
      if (i + 2 < a->len)
        v |= p[i + 2];
      out[o++] = b64[(v >> 18) & 63];
      out[o++] = b64[(v >> 12) & 63];
      out[o++] = i + 1 < a->len ? b64[(v >> 6) & 63] : '=';
      out[o++] = i + 2 < a->len ? b64[v & 63] : '=';
    }
    out[o] = '\0';
    json_t *obj = json_pack("{s:s}", "base64", out);
    free(out);
    return obj;
  }
  }
  return json_null();
}

static json_t *args_array(const coda_task_info *info) {
  json_t *array = json_array();
  int nargs = 0;
  size_t bytes = 0;
  if (!array || !info || !info->args ||
      coda__args_measure(info->args, info->args_len, &nargs, &bytes) != 0)
    return array;
  coda__arg args[CODA__ARGS_MAX];
  char *dst = malloc(bytes ? bytes : 1);
  int n = dst ? coda__args_decode(info->args, info->args_len, args, CODA__ARGS_MAX, dst,
                                  bytes)
              : -1;
  for (int i = 0; i < n; i++)
    json_array_append_new(array, arg_json(&args[i]));
  free(dst);
  return array;
}

size_t coda_task_args_json(const coda_task_info *info, char *buf, size_t cap) {
  json_t *array = args_array(info);
  char *text = array ? json_dumps(array, JSON_COMPACT) : NULL;
  json_decref(array);
  const char *out = text ? text : "[]";
  size_t n = strlen(out);
  if (cap) {
    size_t c = n < cap - 1 ? n : cap - 1;
    memcpy(buf, out, c);
    buf[c] = '\0';
  }
  free(text);
  return n;
}
