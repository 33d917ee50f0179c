/*
 * memory_store.c - the store for apps that want durable semantics (ids,
 * retries with backoff, delayed tasks, idempotency keys, status by id)
 * without a file: everything is lost with the process.
 *
 * Layout: a map of entries by id, the ids in increasing order (for
 * find(): a page costs a binary search and a walk, never a sort of every
 * entry), a list of the entries waiting to be claimed (queued or failed, not claimed), and a
 * FIFO of finished ones (succeeded or dead), in the order they finished,
 * of which the oldest are forgotten past MAX_FINISHED, so memory stays
 * bounded under any load, and past their retention (purge).
 *
 * Threads: one mutex guards everything; get() takes it from any thread.
 * Every call applies at once (a store that cannot lose power needs no
 * commit), but a batch can still fail halfway (out of memory, an id taken
 * by another key), and the engine then answers 503 for its new tasks and
 * expects rollback to forget them, so that a retry is not taken for a
 * duplicate of a task that never runs. The ids enqueued since begin are
 * kept for that; outcomes and progress need no undo (the engine writes
 * them again, and writing one twice changes nothing).
 *
 * Version 2 (fencing): each entry keeps its claim token (r.lease) and when
 * its lease ends; claimed entries are linked in `claimed`, which expire()
 * walks. An outcome is refused unless it carries the current token of a
 * claimed entry, or it is the same outcome written again after its batch
 * was rolled back: a rollback cannot undo an outcome here, so the entry
 * remembers the token that finished it until that batch commits (no other
 * claim can carry that token, so this is the engine repeating itself).
 * Once committed, a second outcome under the same token is refused, as in
 * the stores that undo.
 */
#include "common/idmap.h"
#include "common/queue.h"
#include "store/store.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define MAX_FINISHED 100000

typedef struct entry {
  coda__queue link; /* in waiting, claimed or finished */
  coda__task_record r;
  int owned;
  int64_t lease_until;  /* while owned */
  uint64_t finished_by; /* the token of the outcome that released it, 0: none */
  char *name, *key, *error, *queue, *trace, *origin;
  void *args, *result;
  coda_task_error *errors; /* r.errors, r.n_errors: the failed attempts */
} entry;

/* Version 3: what each queue ever added to has done (finish()). */
typedef struct queue_totals {
  char *name;
  long processed, failed;
} queue_totals;

typedef struct memory_store {
  coda__store base;
  uv_mutex_t mu;
  coda__idmap entries; /* id -> entry */
  /* Every id of entries, increasing, plus ids forgotten since the last
   * compaction (find() skips those: they are no longer in entries). Ids
   * mostly come in increasing order (blocks of reserve_ids), so an add is
   * an append; a key's derived id is inserted in place. Forgetting leaves
   * the id, so a purge of many shifts nothing; order_add() compacts once
   * the forgotten outnumber the kept. */
  uint64_t *order;
  size_t norder, order_cap;
  coda__queue waiting;
  coda__queue claimed;
  coda__queue finished;
  char **served; /* serve(): the queues claim() takes from, NULL: all */
  int nserved;
  char **paused; /* pause(): queues claim() takes nothing from */
  int npaused;
  coda__lease *refused; /* outcomes the open batch refused */
  int nrefused, refused_cap;
  size_t nfinished;
  uint64_t next_id;
  uint64_t *added; /* ids enqueued in the open batch, for rollback */
  size_t nadded, added_cap;
  uint64_t *ended; /* ids the open batch finished: finished_by ends at commit */
  size_t nended, ended_cap;
  queue_totals *totals; /* every queue a task was added to */
  int ntotals;
  coda__node_table nodes;
  char err[128];
} memory_store;

static const coda__store_methods memory_methods;

static void entry_free(entry *e) {
  free(e->name);
  free(e->key);
  free(e->error);
  free(e->queue);
  free(e->args);
  free(e->result);
  free(e->trace);
  free(e->origin);
  coda__errors_free(e->errors, e->r.n_errors);
  free(e);
}

static int is_final(coda_task_state state) {
  return state == CODA_STATE_SUCCEEDED || state == CODA_STATE_DEAD ||
         state == CODA_STATE_CANCELLED;
}

static void forget(memory_store *s, entry *e) {
  if (is_final(e->r.state))
    s->nfinished--; /* it leaves the finished FIFO */
  coda__idmap_remove(&s->entries, e->r.id);
  coda__queue_remove(&e->link);
  entry_free(e);
}

static char *dup_or_null(const char *p) { return p ? strdup(p) : NULL; }

static void *dup_bytes(const void *p, size_t n) {
  void *c = malloc(n ? n : 1);
  if (c && n)
    memcpy(c, p, n);
  return c;
}

coda__store *coda__memory_store_open(void) {
  memory_store *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->base.m = &memory_methods;
  uv_mutex_init(&s->mu);
  coda__queue_init(&s->waiting);
  coda__queue_init(&s->claimed);
  coda__queue_init(&s->finished);
  s->next_id = 1;
  return &s->base;
}

static void free_entry_value(void *e) { entry_free(e); }

static void free_names(char **names, int n) {
  for (int i = 0; i < n; i++)
    free(names[i]);
  free(names);
}

static void memory_close(coda__store *base) {
  memory_store *s = (memory_store *)base;
  coda__idmap_each(&s->entries, free_entry_value);
  coda__idmap_free(&s->entries);
  free(s->order);
  uv_mutex_destroy(&s->mu);
  free(s->added);
  free(s->ended);
  free_names(s->served, s->nserved);
  free_names(s->paused, s->npaused);
  free(s->refused);
  for (int i = 0; i < s->ntotals; i++)
    free(s->totals[i].name);
  free(s->totals);
  coda__node_table_free(&s->nodes);
  free(s);
}

static int memory_recover(coda__store *base, int64_t now) {
  (void)base;
  (void)now;
  return 0; /* nothing outlives a process here */
}

static int memory_begin(coda__store *base) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  s->nadded = 0;
  s->nended = 0;
  s->nrefused = 0;
  uv_mutex_unlock(&s->mu);
  return 0;
}

/* What commit() keeps: the writes, and the refusals for refused(). */
static int memory_commit(coda__store *base) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  s->nadded = 0;
  for (size_t i = 0; i < s->nended; i++) {
    entry *e = coda__idmap_get(&s->entries, s->ended[i]);
    if (e)
      e->finished_by = 0; /* committed: the outcome is not written again */
  }
  s->nended = 0;
  uv_mutex_unlock(&s->mu);
  return 0;
}

static void memory_rollback(coda__store *base) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  for (size_t i = 0; i < s->nadded; i++) {
    entry *e = coda__idmap_get(&s->entries, s->added[i]);
    if (e)
      forget(s, e);
  }
  s->nadded = 0;
  s->nended = 0; /* their finished_by stays: the engine writes them again */
  s->nrefused = 0;
  uv_mutex_unlock(&s->mu);
}

/* Makes room to remember one more id of the batch: CODA_ENOMEM before
 * anything is written, so that rollback can always undo. */
static int reserve_id_slot(uint64_t **ids, size_t n, size_t *cap) {
  if (n < *cap)
    return 0;
  size_t grown = *cap ? *cap * 2 : 64;
  uint64_t *p = realloc(*ids, grown * sizeof *p);
  if (!p)
    return CODA_ENOMEM;
  *ids = p;
  *cap = grown;
  return 0;
}

static int reserve_undo(memory_store *s) {
  return reserve_id_slot(&s->added, s->nadded, &s->added_cap);
}

/* The totals of a queue, made on first use; NULL when out of memory.
 * Under mu. */
static queue_totals *totals_of(memory_store *s, const char *queue) {
  for (int i = 0; i < s->ntotals; i++)
    if (strcmp(s->totals[i].name, queue) == 0)
      return &s->totals[i];
  queue_totals *grown = realloc(s->totals, (size_t)(s->ntotals + 1) * sizeof *grown);
  if (!grown)
    return NULL;
  s->totals = grown;
  char *name = strdup(queue);
  if (!name)
    return NULL;
  s->totals[s->ntotals] = (queue_totals){name, 0, 0};
  return &s->totals[s->ntotals++];
}

/* The index in s->order of the first id above `id`. */
static size_t order_after(const memory_store *s, uint64_t id) {
  size_t lo = 0, hi = s->norder;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->order[mid] <= id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Drops the forgotten ids from s->order: O(n), once per as many forgets. */
static void order_compact(memory_store *s) {
  size_t kept = 0;
  for (size_t i = 0; i < s->norder; i++)
    if (coda__idmap_get(&s->entries, s->order[i]))
      s->order[kept++] = s->order[i];
  s->norder = kept;
}

/* Puts id in s->order (it may be there already, forgotten and added
 * again). 0, or CODA_ENOMEM with nothing changed. */
static int order_add(memory_store *s, uint64_t id) {
  if (s->norder > 64 && s->norder > 2 * s->entries.live)
    order_compact(s);
  size_t at = s->norder && s->order[s->norder - 1] < id ? s->norder : order_after(s, id);
  if (at > 0 && s->order[at - 1] == id)
    return 0;
  if (s->norder == s->order_cap) {
    size_t cap = s->order_cap ? s->order_cap * 2 : 1024;
    uint64_t *p = realloc(s->order, cap * sizeof *p);
    if (!p)
      return CODA_ENOMEM;
    s->order = p;
    s->order_cap = cap;
  }
  memmove(s->order + at + 1, s->order + at, (s->norder - at) * sizeof *s->order);
  s->order[at] = id;
  s->norder++;
  return 0;
}

static int memory_enqueue(coda__store *base, const coda__task_record *r, int owned,
                          int64_t lease_until) {
  memory_store *s = (memory_store *)base;
  int rc = 0;
  uv_mutex_lock(&s->mu);
  entry *old = coda__idmap_get(&s->entries, r->id);
  if (old) {
    const char *k = old->key;
    rc = k && r->key && strcmp(k, r->key) == 0 ? CODA_EEXIST : CODA_ESTORE;
    if (rc == CODA_ESTORE)
      snprintf(s->err, sizeof s->err, "memory store: id taken by another key");
    goto out;
  }
  /* An id left in order by a failure below is skipped like a forgotten one. */
  entry *e = reserve_undo(s) == 0 && order_add(s, r->id) == 0 ? calloc(1, sizeof *e) : NULL;
  if (!e) {
    rc = CODA_ENOMEM;
    goto out;
  }
  e->r = *r;
  e->name = strdup(r->name);
  e->key = dup_or_null(r->key);
  e->queue = strdup(r->queue ? r->queue : "default");
  e->args = dup_bytes(r->args, r->args_len);
  e->trace = dup_or_null(r->trace);
  e->origin = dup_or_null(r->origin);
  if (!e->name || (r->key && !e->key) || !e->queue || !e->args ||
      (r->trace && !e->trace) || (r->origin && !e->origin) || !totals_of(s, e->queue)) {
    entry_free(e);
    rc = CODA_ENOMEM;
    goto out;
  }
  /* An owned enqueue is the task's first claim: running, as a claim
   * makes it (store.h). */
  e->r.state = owned ? CODA_STATE_RUNNING : CODA_STATE_QUEUED;
  e->r.name = e->name;
  e->r.key = e->key;
  e->r.queue = e->queue;
  e->r.lease = owned ? 1 : 0;
  e->lease_until = owned ? lease_until : 0;
  e->r.args = e->args;
  e->r.trace = e->trace;
  e->r.origin = e->origin;
  e->r.cancel_requested = 0;
  e->r.errors = NULL;
  e->r.n_errors = 0;
  e->r.error = NULL;
  e->r.result = NULL;
  e->r.result_len = 0;
  e->owned = owned;
  coda__queue_init(&e->link);
  if (coda__idmap_put(&s->entries, r->id, e) != 0) {
    entry_free(e);
    rc = CODA_ENOMEM;
    goto out;
  }
  coda__queue_insert_tail(owned ? &s->claimed : &s->waiting, &e->link);
  s->added[s->nadded++] = r->id;
out:
  uv_mutex_unlock(&s->mu);
  return rc;
}

static int listed(char *const *names, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(names[i], name) == 0)
      return 1;
  return 0;
}

/* Whether claim() may take e now, from `queue` (NULL: any served one). */
static int claimable(const memory_store *s, const entry *e, const char *queue,
                     int64_t now) {
  if (e->r.run_at > now || listed(s->paused, s->npaused, e->queue))
    return 0;
  if (queue)
    return strcmp(e->queue, queue) == 0;
  return s->nserved == 0 || listed(s->served, s->nserved, e->queue);
}

static int claim_from(memory_store *s, const char *queue, int64_t now,
                      int64_t lease_until, int max, coda__claim_fn fn, void *user) {
  int n = 0;
  coda__queue *q = coda__queue_head(&s->waiting);
  while (q != &s->waiting && n < max) {
    entry *e = coda__container_of(q, entry, link);
    q = q->next;
    if (!claimable(s, e, queue, now))
      continue;
    coda__queue_remove(&e->link);
    coda__queue_insert_tail(&s->claimed, &e->link);
    e->owned = 1;
    e->lease_until = lease_until;
    e->r.lease++;
    e->r.state = CODA_STATE_RUNNING;
    e->r.attempts++;
    n++;
    fn(user, &e->r);
  }
  return n;
}

static int memory_claim(coda__store *base, int64_t now, int64_t lease_until, int max,
                        coda__claim_fn fn, void *user) {
  memory_store *s = (memory_store *)base;
  int n = 0;
  uv_mutex_lock(&s->mu);
  if (s->nserved == 0)
    n = claim_from(s, NULL, now, lease_until, max, fn, user);
  for (int i = 0; i < s->nserved && n < max; i++) /* in the order of preference */
    n += claim_from(s, s->served[i], now, lease_until, max - n, fn, user);
  uv_mutex_unlock(&s->mu);
  return n;
}

/* Remembers a refused write for refused(); the batch's writes fit (the
 * engine reads them back after each commit). Under mu. */
static void refuse(memory_store *s, uint64_t id, uint64_t lease) {
  if (s->nrefused == s->refused_cap) {
    int cap = s->refused_cap ? s->refused_cap * 2 : 16;
    coda__lease *p = realloc(s->refused, (size_t)cap * sizeof *p);
    if (!p)
      return; /* refused all the same, only not reported */
    s->refused = p;
    s->refused_cap = cap;
  }
  s->refused[s->nrefused++] = (coda__lease){id, lease};
}

/* Whether a write carrying `lease` still holds e (see the top). */
static int holds(const entry *e, uint64_t lease, int rewrite_ok) {
  if (!e || e->r.lease != lease)
    return 0;
  /* finished_by 0 is "none": token 0 belongs to no claim. */
  return e->owned || (rewrite_ok && e->finished_by != 0 && e->finished_by == lease);
}

/* An attempt ended: its queue's totals, and its error in the history. */
static void count_outcome(memory_store *s, entry *e, const coda__task_record *r,
                          coda_task_state state) {
  queue_totals *t = totals_of(s, e->queue);
  if (t && state == CODA_STATE_SUCCEEDED)
    t->processed++;
  else if (t)
    t->failed++;
  if (state != CODA_STATE_SUCCEEDED &&
      coda__errors_push(&e->errors, &e->r.n_errors, r->attempts, r->finished_at,
                        r->error) == 0)
    e->r.errors = e->errors; /* out of memory: the history misses one */
}

static int memory_finish(coda__store *base, const coda__task_record *r) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  entry *e = coda__idmap_get(&s->entries, r->id);
  if (!holds(e, r->lease, 1)) {
    refuse(s, r->id, r->lease); /* taken over, finished or forgotten */
    uv_mutex_unlock(&s->mu);
    return 0;
  }
  if (reserve_id_slot(&s->ended, s->nended, &s->ended_cap) != 0) {
    snprintf(s->err, sizeof s->err, "memory store: out of memory");
    uv_mutex_unlock(&s->mu);
    return CODA_ENOMEM;
  }
  s->ended[s->nended++] = r->id;
  int again = !e->owned; /* the same outcome written again (see the top) */
  if (is_final(e->r.state))
    s->nfinished--; /* written twice: it is counted again below */
  coda_task_state state = r->state;
  if (state == CODA_STATE_FAILED && e->r.cancel_requested)
    state = CODA_STATE_CANCELLED; /* store.h version 3 */
  if (!again)
    count_outcome(s, e, r, state);
  free(e->error);
  e->error = dup_or_null(r->error);
  free(e->result); /* the last attempt's result, or none (as SQLite) */
  e->result = r->result ? dup_bytes(r->result, r->result_len) : NULL;
  e->r.result_len = e->result ? r->result_len : 0;
  e->r.state = state;
  e->r.attempts = r->attempts;
  e->r.run_at = r->run_at;
  e->r.started_at = r->started_at;
  e->r.finished_at = r->finished_at;
  e->r.progress = r->progress;
  e->r.error = e->error;
  e->r.result = e->result;
  e->owned = 0;
  e->lease_until = 0;
  e->finished_by = r->lease;
  coda__queue_remove(&e->link);
  if (state == CODA_STATE_FAILED) {
    coda__queue_insert_tail(&s->waiting, &e->link);
  } else {
    coda__queue_insert_tail(&s->finished, &e->link);
    if (++s->nfinished > MAX_FINISHED)
      forget(s, coda__container_of(coda__queue_head(&s->finished), entry, link));
  }
  uv_mutex_unlock(&s->mu);
  return 0;
}

static int memory_progress(coda__store *base, uint64_t id, double progress) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  entry *e = coda__idmap_get(&s->entries, id);
  if (e)
    e->r.progress = progress;
  uv_mutex_unlock(&s->mu);
  return 0;
}

static int memory_reserve_ids(coda__store *base, uint64_t count, uint64_t *first) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  *first = s->next_id;
  s->next_id += count;
  uv_mutex_unlock(&s->mu);
  return 0;
}

static int memory_get(coda__store *base, uint64_t id, coda_task_info **out) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  entry *e = coda__idmap_get(&s->entries, id);
  int rc = CODA_ENOTFOUND;
  if (e) {
    *out = coda__task_info_from_record(&e->r);
    rc = *out ? 0 : CODA_ENOMEM;
  }
  uv_mutex_unlock(&s->mu);
  return rc;
}

static int64_t memory_next_due(coda__store *base) {
  memory_store *s = (memory_store *)base;
  int64_t when = 0;
  coda__queue *q;
  uv_mutex_lock(&s->mu);
  coda__queue_foreach(q, &s->waiting) {
    entry *e = coda__container_of(q, entry, link);
    if (!claimable(s, e, NULL, INT64_MAX))
      continue; /* a queue this process does not serve, or paused */
    if (!when || e->r.run_at < when)
      when = e->r.run_at;
  }
  uv_mutex_unlock(&s->mu);
  return when;
}

typedef struct list_ctx {
  const coda__task_filter *f;
  entry **found;
  size_t n, cap;
  int nomem;
} list_ctx;

static int in_queue(const entry *e, const char *queue) {
  return strcmp(e->r.queue ? e->r.queue : "default", queue) == 0;
}

static int state_matches(const entry *e, const coda__task_filter *f) {
  if (f->states)
    return (f->states >> e->r.state & 1) != 0;
  return f->state < 0 || (int)e->r.state == f->state;
}

static int matches(const entry *e, const coda__task_filter *f) {
  return e->r.id > f->after_id && state_matches(e, f) &&
         (!f->name || strcmp(e->r.name, f->name) == 0) &&
         (!f->queue || in_queue(e, f->queue));
}

static void collect(void *value, void *user) {
  entry *e = value;
  list_ctx *cx = user;
  if (cx->nomem || !matches(e, cx->f))
    return;
  if (cx->n == cx->cap) {
    size_t cap = cx->cap ? cx->cap * 2 : 64;
    entry **p = realloc(cx->found, cap * sizeof *p);
    if (!p) {
      cx->nomem = 1;
      return;
    }
    cx->found = p;
    cx->cap = cap;
  }
  cx->found[cx->n++] = e;
}

/* A walk of the ids from after_id: O(rows given + rows skipped), under mu
 * (the caller bounds what it asks for: coda_task_find() reads pages). */
static int memory_find(coda__store *base, const coda__task_filter *f,
                       coda_task_list_fn fn, void *user) {
  memory_store *s = (memory_store *)base;
  coda__info_list out = {0};
  int nomem = 0;
  size_t limit = f->limit > 0 ? (size_t)f->limit : SIZE_MAX, n = 0;
  uv_mutex_lock(&s->mu);
  for (size_t i = order_after(s, f->after_id); !nomem && n < limit && i < s->norder; i++) {
    entry *e = coda__idmap_get(&s->entries, s->order[i]);
    if (!e || !matches(e, f))
      continue;
    nomem = coda__info_list_add(&out, &e->r) != 0;
    n++;
  }
  uv_mutex_unlock(&s->mu);
  if (nomem) {
    coda__info_list_deliver(&out, NULL, NULL);
    return CODA_ENOMEM;
  }
  return coda__info_list_deliver(&out, fn, user);
}

static int memory_list(coda__store *base, coda_task_state state, uint64_t after_id,
                       int limit, coda_task_list_fn fn, void *user) {
  coda__task_filter f = {.state = (int)state, .after_id = after_id, .limit = limit};
  return limit > 0 ? memory_find(base, &f, fn, user) : 0;
}

static const char *memory_errmsg(coda__store *base) {
  return ((memory_store *)base)->err;
}

static int memory_purge(coda__store *base, int64_t finished_before, int limit) {
  memory_store *s = (memory_store *)base;
  int n = 0;
  uv_mutex_lock(&s->mu);
  /* In the order they finished, which their finished_at (taken on the
   * executors' threads) may not follow exactly: skip, do not stop at, a
   * younger one. */
  coda__queue *q = coda__queue_head(&s->finished);
  while (n < limit && q != &s->finished) {
    entry *e = coda__container_of(q, entry, link);
    q = q->next;
    if (e->r.finished_at >= finished_before)
      continue;
    forget(s, e);
    n++;
  }
  uv_mutex_unlock(&s->mu);
  return n;
}

/* ---- version 2 ------------------------------------------------------------ */

static int copy_names(const char *const *names, int n, char ***out) {
  char **c = n ? calloc((size_t)n, sizeof *c) : NULL;
  if (n && !c)
    return CODA_ENOMEM;
  for (int i = 0; i < n; i++) {
    if (!(c[i] = strdup(names[i]))) {
      free_names(c, i);
      return CODA_ENOMEM;
    }
  }
  *out = c;
  return 0;
}

static int memory_serve(coda__store *base, const char *const *queues, int n) {
  memory_store *s = (memory_store *)base;
  char **c;
  if (n < 0 || copy_names(queues, n, &c) != 0)
    return n < 0 ? CODA_EINVAL : CODA_ENOMEM;
  uv_mutex_lock(&s->mu);
  free_names(s->served, s->nserved);
  s->served = c;
  s->nserved = n;
  uv_mutex_unlock(&s->mu);
  return 0;
}

static int memory_pause(coda__store *base, const char *queue, int paused) {
  memory_store *s = (memory_store *)base;
  int rc = 0;
  uv_mutex_lock(&s->mu);
  int i = 0;
  while (i < s->npaused && strcmp(s->paused[i], queue) != 0)
    i++;
  if (!paused && i < s->npaused) {
    free(s->paused[i]);
    s->paused[i] = s->paused[--s->npaused];
  } else if (paused && i == s->npaused) {
    char **p = realloc(s->paused, (size_t)(s->npaused + 1) * sizeof *p);
    char *name = p ? strdup(queue) : NULL;
    if (p)
      s->paused = p;
    if (name)
      s->paused[s->npaused++] = name;
    else
      rc = CODA_ENOMEM;
  }
  uv_mutex_unlock(&s->mu);
  return rc;
}

static int memory_renew(coda__store *base, const coda__lease *l, int n,
                        int64_t lease_until, unsigned char *lost) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  for (int i = 0; i < n; i++) {
    entry *e = coda__idmap_get(&s->entries, l[i].id);
    int held = holds(e, l[i].lease, 0);
    lost[i] = !held ? 1 : e->r.cancel_requested ? 2 : 0; /* 2: store.h version 3 */
    if (held)
      e->lease_until = lease_until;
  }
  uv_mutex_unlock(&s->mu);
  return 0;
}

static int memory_refused(coda__store *base, coda__lease *out, int max) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  int n = s->nrefused < max ? s->nrefused : max;
  if (n > 0)
    memcpy(out, s->refused, (size_t)n * sizeof *out);
  uv_mutex_unlock(&s->mu);
  return n;
}

static int memory_expire(coda__store *base, int64_t now, int64_t lease_until, int max,
                         coda__claim_fn fn, void *user) {
  memory_store *s = (memory_store *)base;
  int n = 0;
  uv_mutex_lock(&s->mu);
  coda__queue *q;
  coda__queue_foreach(q, &s->claimed) {
    entry *e = coda__container_of(q, entry, link);
    if (n == max)
      break;
    if (e->lease_until >= now)
      continue;
    e->r.lease++; /* the old claim's writes are refused from now on */
    e->lease_until = lease_until;
    e->r.state = CODA_STATE_RUNNING;
    n++;
    fn(user, &e->r);
  }
  uv_mutex_unlock(&s->mu);
  return n;
}

static int memory_progress_leased(coda__store *base, const coda__lease *l,
                                  double progress) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  entry *e = coda__idmap_get(&s->entries, l->id);
  if (holds(e, l->lease, 0))
    e->r.progress = progress;
  else
    refuse(s, l->id, l->lease);
  uv_mutex_unlock(&s->mu);
  return 0;
}

static int memory_paused(coda__store *base, char *buf, size_t cap) {
  memory_store *s = (memory_store *)base;
  size_t len = 0;
  int rc = 0;
  uv_mutex_lock(&s->mu);
  if (cap)
    buf[0] = '\0';
  for (int i = 0; i < s->npaused && rc == 0; i++) {
    int n = snprintf(buf + len, cap - len, "%s%s", i ? "," : "", s->paused[i]);
    if (n < 0 || (size_t)n >= cap - len)
      rc = CODA_ELIMIT;
    else
      len += (size_t)n;
  }
  rc = rc ? rc : s->npaused;
  uv_mutex_unlock(&s->mu);
  return rc;
}

/* store.h release(): the entry leaves `claimed` for `waiting` (at its
 * run_at, due since it was claimed); its token stays, so the next claim's
 * is new. */
static int memory_release(coda__store *base, const coda__lease *l, int n) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  for (int i = 0; i < n; i++) {
    entry *e = coda__idmap_get(&s->entries, l[i].id);
    if (!holds(e, l[i].lease, 0) || e->r.state != CODA_STATE_RUNNING)
      continue;
    coda__queue_remove(&e->link);
    e->owned = 0;
    e->lease_until = 0;
    e->r.attempts = e->r.attempts > 0 ? e->r.attempts - 1 : 0;
    if (e->r.cancel_requested) { /* asked to stop before it began: it ends here */
      coda__queue_insert_tail(&s->finished, &e->link);
      e->r.state = CODA_STATE_CANCELLED;
      e->r.finished_at = coda__unix_ms();
      s->nfinished++;
      continue;
    }
    coda__queue_insert_tail(&s->waiting, &e->link);
    e->r.state = e->r.attempts > 0 ? CODA_STATE_FAILED : CODA_STATE_QUEUED;
  }
  uv_mutex_unlock(&s->mu);
  return 0;
}

/* ---- version 3 ------------------------------------------------------------ */

/* Moves e to `to` as a task no longer finished or claimed. Under mu. */
static void relink(memory_store *s, entry *e, coda__queue *to) {
  if (is_final(e->r.state))
    s->nfinished--;
  coda__queue_remove(&e->link);
  coda__queue_insert_tail(to, &e->link);
}

static int retry_entry(memory_store *s, entry *e, int64_t now) {
  coda_task_state st = e->r.state;
  int allowed = st == CODA_STATE_DEAD || st == CODA_STATE_FAILED ||
                st == CODA_STATE_CANCELLED ||
                (st == CODA_STATE_QUEUED && e->r.run_at > now);
  if (!allowed)
    return CODA_ESTATE;
  relink(s, e, &s->waiting);
  e->r.state = CODA_STATE_QUEUED;
  e->r.run_at = now;
  e->r.finished_at = 0;
  e->r.cancel_requested = 0;
  e->finished_by = 0; /* an old outcome written again is refused */
  if (e->r.attempts >= e->r.max_attempts)
    e->r.max_attempts = e->r.attempts + 1;
  return 0;
}

static int memory_retry(coda__store *base, uint64_t id, int64_t now) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  entry *e = coda__idmap_get(&s->entries, id);
  int rc = e ? retry_entry(s, e, now) : CODA_ENOTFOUND;
  uv_mutex_unlock(&s->mu);
  return rc;
}

static int memory_cancel(coda__store *base, uint64_t id, int64_t now) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  entry *e = coda__idmap_get(&s->entries, id);
  int rc = e ? CODA_ESTATE : CODA_ENOTFOUND;
  if (e && e->r.state == CODA_STATE_RUNNING) {
    e->r.cancel_requested = 1;
    rc = 1;
  } else if (e && (e->r.state == CODA_STATE_QUEUED || e->r.state == CODA_STATE_FAILED)) {
    relink(s, e, &s->finished);
    e->r.state = CODA_STATE_CANCELLED;
    e->r.finished_at = now;
    e->finished_by = 0;
    if (++s->nfinished > MAX_FINISHED)
      forget(s, coda__container_of(coda__queue_head(&s->finished), entry, link));
    rc = 0;
  }
  uv_mutex_unlock(&s->mu);
  return rc;
}

static int memory_remove(coda__store *base, uint64_t id) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  entry *e = coda__idmap_get(&s->entries, id);
  int rc = !e ? CODA_ENOTFOUND : e->r.state == CODA_STATE_RUNNING ? CODA_ESTATE : 0;
  if (rc == 0)
    forget(s, e);
  uv_mutex_unlock(&s->mu);
  return rc;
}

/* The entries in `state` of `queue` (NULL: any), found under mu. */
static long bulk(memory_store *s, coda_task_state state, const char *queue, int64_t now,
                 int retry) {
  coda__task_filter f = {.state = (int)state, .queue = queue};
  list_ctx cx = {.f = &f};
  coda__idmap_each_user(&s->entries, collect, &cx);
  long n = cx.nomem ? CODA_ENOMEM : 0;
  for (size_t i = 0; n >= 0 && i < cx.n; i++) {
    entry *e = cx.found[i];
    if (retry)
      n += retry_entry(s, e, now) == 0;
    else if (e->r.state != CODA_STATE_RUNNING && ++n)
      forget(s, e);
  }
  free(cx.found);
  return n;
}

static long memory_retry_all(coda__store *base, coda_task_state state, const char *queue,
                             int64_t now) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  long n = bulk(s, state, queue, now, 1);
  uv_mutex_unlock(&s->mu);
  return n;
}

static long memory_remove_all(coda__store *base, coda_task_state state,
                              const char *queue) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  long n = bulk(s, state, queue, 0, 0);
  uv_mutex_unlock(&s->mu);
  return n;
}

typedef struct stats_ctx {
  memory_store *s;
  coda_queue_info *q;
  int n;
  int64_t now;
} stats_ctx;

static coda_queue_info *stats_of(stats_ctx *cx, const char *queue) {
  for (int i = 0; i < cx->n; i++)
    if (strcmp(cx->q[i].name, queue) == 0)
      return &cx->q[i];
  return NULL;
}

static void count_entry(void *value, void *user) {
  entry *e = value;
  stats_ctx *cx = user;
  coda_queue_info *q = stats_of(cx, e->queue);
  if (!q)
    return;
  q->counts[e->r.state]++;
  int waits = e->r.state == CODA_STATE_QUEUED || e->r.state == CODA_STATE_FAILED;
  if (waits && e->r.run_at > cx->now)
    q->scheduled++;
  else if (waits && (!q->oldest_due_at || e->r.run_at < q->oldest_due_at))
    q->oldest_due_at = e->r.run_at;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const coda_queue_info *)a)->name, ((const coda_queue_info *)b)->name);
}

/* The memory store counts by a scan of its entries (at most MAX_FINISHED
 * finished ones and what waits): it has no disk or network to spare. */
static int memory_queue_stats(coda__store *base, int64_t now, coda__queue_fn fn,
                              void *user) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  for (int i = 0; i < s->npaused; i++)
    totals_of(s, s->paused[i]); /* a paused queue is known, tasks or not */
  stats_ctx cx = {.s = s, .now = now, .n = s->ntotals};
  cx.q = calloc((size_t)(s->ntotals ? s->ntotals : 1), sizeof *cx.q);
  int rc = cx.q ? 0 : CODA_ENOMEM;
  for (int i = 0; rc == 0 && i < s->ntotals; i++) {
    cx.q[i].name = strdup(s->totals[i].name);
    cx.q[i].processed = s->totals[i].processed;
    cx.q[i].failed = s->totals[i].failed;
    cx.q[i].paused = listed(s->paused, s->npaused, s->totals[i].name);
    if (!cx.q[i].name)
      rc = CODA_ENOMEM;
  }
  if (rc == 0)
    coda__idmap_each_user(&s->entries, count_entry, &cx);
  uv_mutex_unlock(&s->mu);
  if (rc == 0)
    qsort(cx.q, (size_t)cx.n, sizeof *cx.q, by_name);
  int given = 0;
  for (int i = 0; cx.q && i < cx.n; i++) {
    if (rc == 0 && given >= 0) {
      given++;
      if (fn(&cx.q[i], user))
        rc = 1; /* stop */
    }
    free((char *)cx.q[i].name);
  }
  free(cx.q);
  return rc < 0 ? rc : given;
}

static int memory_node_beat(coda__store *base, const coda_node_info *n, int64_t now,
                            int64_t ttl_ms) {
  memory_store *s = (memory_store *)base;
  uv_mutex_lock(&s->mu);
  int rc = coda__node_table_beat(&s->nodes, n, now, ttl_ms);
  uv_mutex_unlock(&s->mu);
  return rc;
}

static int memory_nodes(coda__store *base, int64_t now, coda__node_fn fn, void *user) {
  memory_store *s = (memory_store *)base;
  coda__node_list l = {0};
  uv_mutex_lock(&s->mu);
  int rc = coda__node_table_collect(&s->nodes, now, &l);
  uv_mutex_unlock(&s->mu);
  return rc ? rc : coda__node_list_deliver(&l, fn, user);
}

static const coda__store_methods memory_methods = {
    .version = CODA__STORE_VERSION,
    .name = "memory",
    .recover = memory_recover,
    .begin = memory_begin,
    .commit = memory_commit, /* what is written stays; the undo list empties */
    .rollback = memory_rollback,
    .enqueue = memory_enqueue,
    .claim = memory_claim,
    .finish = memory_finish,
    .progress = memory_progress,
    .reserve_ids = memory_reserve_ids,
    .get = memory_get,
    .next_due = memory_next_due,
    .errmsg = memory_errmsg,
    .close = memory_close,
    .begin_lazy = memory_begin,
    .list = memory_list,
    .purge = memory_purge,
    .find = memory_find,
    .serve = memory_serve,
    .pause = memory_pause,
    .renew = memory_renew,
    .refused = memory_refused,
    .expire = memory_expire,
    .progress_leased = memory_progress_leased,
    .paused = memory_paused,
    .release = memory_release,
    .retry = memory_retry,
    .cancel = memory_cancel,
    .remove = memory_remove,
    .retry_all = memory_retry_all,
    .remove_all = memory_remove_all,
    .queue_stats = memory_queue_stats,
    .node_beat = memory_node_beat,
    .nodes = memory_nodes,
};
