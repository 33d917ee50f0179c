/*
 * listing.c - coda_task_find() and coda_task_list(): durable tasks read
 * from the store by filter (state, queue, name), by increasing id, with the
 * state of the tasks alive in this process as coda_task_get() shows it.
 *
 * A listing merges two streams by id: the store's rows (find(), or list()
 * for a store without it), in which a task alive here shows the store's
 * state (running from its claim, though it may still wait for a slot), and the
 * live tasks, read as coda_task_get() shows them. A live task's name and
 * queue never change, so they are matched here; its state is matched as
 * it is when it is delivered.
 *
 * A budget (coda_task_filter.budget) bounds the rows read from the store
 * in one call, so that a listing of rare states among many tasks cannot
 * hold an event loop for seconds: when it runs out, the call ends at the
 * last row it read (after_id), live tasks above it left to the next call.
 *
 * Any thread; it takes the durable registry lock (reg_mu) only to copy
 * what it needs, never while it reads the store or calls the caller.
 */
#include "tasks/durable.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define ANY_STATES ((1u << (CODA_STATE_CANCELLED + 1)) - 1)
#define PAGE_NO_LIMIT 1000 /* rows per store read when the caller set no limit */

typedef struct live_id {
  uint64_t id;
  coda_task_state state;
} live_id;

typedef struct list_merge {
  coda_app *app;
  coda__durable *d;
  unsigned states; /* CODA_STATE_BIT()s wanted */
  const char *name, *queue;
  live_id *live; /* the matching tasks alive here when the listing began, by id */
  size_t nlive, next_live, cap;
  uint64_t after_id;
  int delivered, limit, stopped, nomem;
  int budget;   /* rows to read from the store at most, 0: no bound */
  int examined; /* rows read from the store so far */
  int budget_out; /* it ran out before the end: the listing stops at after_id */
  int rc; /* a failed read of a live task */
  coda_task_list_fn fn;
  void *user;
} list_merge;

static int wanted(const list_merge *m, coda_task_state state) {
  return (m->states >> state & 1) != 0;
}

/* The queue a live task belongs to: its definition's. */
static const char *live_queue(const coda_task *t) {
  return t->def->queue ? t->def->queue : "default";
}

static int live_matches(const list_merge *m, const coda_task *t) {
  return t->id > m->after_id && (!m->name || strcmp(t->def->name, m->name) == 0) &&
         (!m->queue || strcmp(live_queue(t), m->queue) == 0);
}

static void snapshot_live(void *value, void *user) {
  coda_task *t = value;
  list_merge *m = user;
  if (m->nomem || !live_matches(m, t))
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
      (live_id){t->id, t->began_at ? CODA_STATE_RUNNING : CODA_STATE_QUEUED};
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

/* Reads a task again as coda_task_get() shows it (its state may have moved
 * on since the snapshot) and delivers it if it is in a listed state. */
static void deliver_current(list_merge *m, uint64_t id) {
  coda_task_info *info;
  int rc = coda_task_get(m->app, id, &info);
  if (rc == CODA_ENOTFOUND)
    return; /* purged meanwhile */
  if (rc) {
    m->rc = rc;
    m->stopped = 1;
    return;
  }
  if (wanted(m, info->state))
    deliver(m, info);
  coda_task_info_free(info);
}

/* The live tasks of the snapshot with an id below `below`: those then in
 * a listed state, and the stored row `stored_id`, whatever its state then
 * (it may have finished since: the store says so now). */
static void deliver_live_below(list_merge *m, uint64_t below, uint64_t stored_id) {
  while (!m->stopped && m->next_live < m->nlive && m->live[m->next_live].id < below) {
    live_id l = m->live[m->next_live++];
    if (wanted(m, l.state) || l.id == stored_id)
      deliver_current(m, l.id);
  }
}

static int is_live_now(coda__durable *d, uint64_t id) {
  uv_mutex_lock(&d->reg_mu);
  int live = coda__idmap_get(&d->live, id) != NULL;
  uv_mutex_unlock(&d->reg_mu);
  return live;
}

static int on_stored(const coda_task_info *info, void *user) {
  list_merge *m = user;
  m->after_id = info->id;
  m->examined++;
  deliver_live_below(m, info->id + 1, info->id);
  int in_snapshot = m->next_live > 0 && m->live[m->next_live - 1].id == info->id;
  if (m->stopped || in_snapshot)
    return m->stopped;
  /* Alive since the snapshot (a claimed retry): its state is not the
   * stored one. */
  if (is_live_now(m->d, info->id))
    deliver_current(m, info->id);
  else if (wanted(m, info->state)) /* the store was asked for several states */
    deliver(m, info);
  return m->stopped;
}

/* One read of the store from m->after_id: the rows it read, or < 0. */
static int read_page(list_merge *m, int page) {
  coda__store *s = m->d->store;
  int one_state = m->states && !(m->states & (m->states - 1));
  int state = -1;
  for (int i = 0; one_state && i <= CODA_STATE_CANCELLED; i++)
    if (m->states == CODA_STATE_BIT(i))
      state = i;
  if (s->m->version >= 2 && s->m->find) {
    /* A set of several states is passed as such: a store that ignores it
     * (states is version 3) reads "any", sorted out here (on_stored). */
    coda__task_filter f = {.state = state,
                           .states = state < 0 && m->states != ANY_STATES ? m->states : 0,
                           .queue = m->queue,
                           .name = m->name,
                           .after_id = m->after_id,
                           .limit = page};
    return s->m->find(s, &f, on_stored, m);
  }
  if (s->m->list && state >= 0 && !m->name && (!m->queue || !strcmp(m->queue, "default")))
    return s->m->list(s, (coda_task_state)state, m->after_id, page, on_stored, m);
  return CODA_ESTATE; /* a store that cannot search so */
}

static int merge(list_merge *m) {
  coda__durable *d = m->d;
  uv_mutex_lock(&d->reg_mu);
  coda__idmap_each_user(&d->live, snapshot_live, m);
  uv_mutex_unlock(&d->reg_mu);
  if (m->nomem) {
    free(m->live);
    return CODA_ENOMEM;
  }
  if (m->nlive > 1)
    qsort(m->live, m->nlive, sizeof *m->live, by_live_id);
  /* A stored row of a live task is delivered from the live side (or not
   * at all), so a read may deliver fewer rows than it read: read `limit`
   * plus the live tasks still ahead, which is enough in one read unless
   * tasks turned live meanwhile. */
  int rc = 0, want = m->limit > 0 ? m->limit : PAGE_NO_LIMIT;
  while (!m->stopped) {
    size_t ahead = m->nlive - m->next_live;
    int page = ahead > (size_t)(INT_MAX - want) ? INT_MAX : want + (int)ahead;
    if (m->budget > 0 && page > m->budget - m->examined)
      page = m->budget - m->examined;
    rc = read_page(m, page);
    if (rc < page)
      break;
    if (m->budget > 0 && m->examined >= m->budget && !m->stopped) {
      /* The rest is the next call's: live tasks above after_id too. */
      m->budget_out = 1;
      break;
    }
  }
  if (rc >= 0 && !m->budget_out)
    deliver_live_below(m, UINT64_MAX, 0);
  free(m->live);
  return rc < 0 ? rc : m->rc ? m->rc : m->delivered;
}

/* Reads a caller's filter into a full local copy, as coda__opts_read()
 * does options: a shorter struct (an older header) is read as far as it
 * goes; one without its size is refused. */
static int filter_read(const coda_task_filter *in, coda_task_filter *out) {
  memset(out, 0, sizeof *out);
  out->size = sizeof *out;
  if (!in)
    return 0;
  if (in->size < offsetof(coda_task_filter, states) + sizeof in->states)
    return CODA_EINVAL; /* not made with CODA_TASK_FILTER_INIT */
  memcpy(out, in, in->size < sizeof *out ? in->size : sizeof *out);
  out->size = sizeof *out;
  if ((out->states & ~ANY_STATES) || out->limit < 0 || out->budget < 0 ||
      (out->budget > 0 && !out->next_after))
    return CODA_EINVAL;
  return 0;
}

int coda_task_find(coda_app *app, const coda_task_filter *filter, coda_task_list_fn fn,
                   void *user) {
  coda_task_filter f;
  if (!app || !fn || filter_read(filter, &f) != 0)
    return CODA_EINVAL;
  if (f.next_after)
    *f.next_after = 0;
  coda__engine *e = coda__engine_peek(app);
  coda__durable *d = e ? e->durable : NULL;
  if (!d)
    return 0; /* no store: no durable task */
  list_merge m = {.app = app,
                  .d = d,
                  .states = f.states ? f.states : ANY_STATES,
                  .name = f.name,
                  .queue = f.queue,
                  .after_id = f.after_id,
                  .limit = f.limit,
                  .budget = f.budget,
                  .fn = fn,
                  .user = user};
  int rc = merge(&m);
  if (rc >= 0 && m.budget_out)
    *f.next_after = m.after_id;
  return rc;
}

int coda_task_list(coda_app *app, coda_task_state state, uint64_t after_id, int limit,
                   coda_task_list_fn fn, void *user) {
  if (!fn || limit < 0 || state < CODA_STATE_QUEUED || state > CODA_STATE_CANCELLED)
    return CODA_EINVAL;
  if (limit == 0)
    return 0;
  coda_task_filter f = CODA_TASK_FILTER_INIT(.states = CODA_STATE_BIT(state),
                                             .after_id = after_id, .limit = limit);
  return coda_task_find(app, &f, fn, user);
}
