/*
 * store.h - the task store interface: a small versioned table of functions
 * that the durable-task engine (tasks/durable.c) drives, and the records it
 * exchanges with a store.
 *
 * Implementations: memory_store.c (durable semantics in memory: ids,
 * retries, status; nothing survives the process), sqlite_store.c (one
 * file, WAL, an fsync per commit) and redis_store.c (shared by every
 * process pointed at it: servers and workers of a fleet).
 * New members are only ever added at the end; `version` says which exist.
 *
 * The engine makes no assumption a store cannot keep:
 *  - a batch (begin .. commit) is atomic and durable when commit returns 0;
 *    rollback forgets the whole batch (the memory store forgets the new
 *    tasks; its other writes cannot fail, and the engine writes them again
 *    after a rollback, which changes nothing);
 *  - ids are chosen by the engine (blocks from reserve_ids, or derived from
 *    an idempotency key), never by the store;
 *  - claiming is a store operation, and a claim carries a lease and a
 *    fencing token. The memory and SQLite stores belong to one process at
 *    a time, so their claims end with it (recover() releases them at the
 *    next start); a store shared by several processes (Redis) relies on
 *    expire() alone. Every store implements expire() all the same (a hung
 *    heartbeat is a lost lease anywhere), so the three behave alike;
 *  - fencing, the one rule for every store: an outcome (finish()), a
 *    fenced progress (progress_leased()) or a renewal (renew()) applies
 *    only while the task is running under a claim whose token is the one
 *    it carries (record.lease, coda__lease.lease). Token 0 is not special:
 *    no claim ever has it (an unowned enqueue sets 0, a claim adds 1), so
 *    a write under 0 is refused like any stale one. The engine therefore
 *    writes every outcome under the token of the claim it holds: a task's
 *    own, a claim's "unknown task, marked dead", an expiry's outcome under
 *    the token expire() gave. A refused write changes nothing and is
 *    reported by refused() after the commit. Only progress() (version 1)
 *    is not fenced;
 *  - what get() reports follows the claims: a task claimed (claim(), an
 *    owned enqueue, expire()) is RUNNING in the store from the claim to its
 *    outcome, whichever process asks. The engine's own reads
 *    (coda_task_get, listings) show a task alive in this process as queued
 *    until its attempt begins, so the difference is only the short wait
 *    for a slot, seen from elsewhere;
 *
 * Errors: CODA_ETIMEDOUT when the store waited for a lock in vain (the
 * engine does not retry pieces of that batch at once), CODA_ELIMIT when
 * what was written does not fit (full, or a value too big: an outcome is
 * then written without its result), CODA_ESTORE for the rest, with
 * errmsg() saying what.
 *
 * Threads: every call except get() is made from the engine's store thread,
 * one at a time. get() may be called from any thread at any moment, so a
 * store serialises it with its own lock or connection.
 */
#ifndef CODA_STORE_STORE_H
#define CODA_STORE_STORE_H

#include "coda.h"

#include <stddef.h>
#include <stdint.h>

#define CODA__STORE_VERSION 3

typedef struct coda__store coda__store;

/* A task as a store keeps it. Pointers are borrowed for the call. */
typedef struct coda__task_record {
  uint64_t id;
  const char *name;
  const char *key; /* NULL: none */
  const void *args;
  size_t args_len;
  coda_task_state state;
  int attempts;
  int max_attempts;
  int64_t created_at; /* unix ms */
  int64_t run_at;
  int64_t started_at;
  int64_t finished_at;
  double progress;
  const char *error; /* NULL: none */
  const void *result;
  size_t result_len;
  /* Version 2. */
  const char *queue; /* NULL: "default" */
  /* The fencing token of the claim that ran this attempt, a counter of
   * the task's own: an owned enqueue() sets 1 (an unowned one 0), and each
   * claim() or expire() of the task adds 1, so a token is never reused for
   * a task. finish(), progress_leased() and renew() are refused for any
   * token but the current one of a running task (the fencing rule above:
   * 0 is never current). */
  uint64_t lease;
  /* Version 3. Written by enqueue() (the request that added the task),
   * read back by get(), find() and list(); a store ignores them in the
   * records it is given elsewhere. */
  const char *trace;   /* traceparent, NULL: none */
  uint64_t request_id; /* 0: none */
  const char *origin;  /* "METHOD /pattern", NULL: none */
  /* Read only (get, find, list): set by cancel() on a running task, and
   * the failed attempts finish() recorded (the last CODA_TASK_ERRORS_KEPT). */
  int cancel_requested;
  int n_errors;
  const coda_task_error *errors;
} coda__task_record;

/* What queue_stats() reports of a queue; nodes() of a process. */
typedef int (*coda__queue_fn)(const coda_queue_info *q, void *user);
typedef int (*coda__node_fn)(const coda_node_info *n, void *user);

/* One claim the engine holds: the task and the token of its claim. */
typedef struct coda__lease {
  uint64_t id;
  uint64_t lease;
} coda__lease;

/* Filters of find(): NULL / -1 / 0 mean "any". */
typedef struct coda__task_filter {
  int state;          /* a coda_task_state, or -1 */
  const char *queue;
  const char *name;
  uint64_t after_id;  /* ids above this one, increasing */
  int limit;
  /* Version 3: CODA_STATE_BIT()s of the states wanted, 0: as `state` says.
   * A store may ignore it (Redis does): the engine reads such a filter with
   * state -1 and checks each row's state itself, so ignoring it costs only
   * rows read for nothing. */
  unsigned states;
} coda__task_filter;

/* Called by claim() for each task it claimed; the record lives for the
 * call. A claim cannot be cut short (SQLite claims its rows in one
 * statement): `max` bounds it. */
typedef void (*coda__claim_fn)(void *user, const coda__task_record *r);

typedef struct coda__store_methods {
  int version;
  const char *name;
  /* Start-up, before anything else: tasks that were claimed by a process
   * that is now known dead go back to queued (returns how many, or < 0).
   * A store that cannot know (Redis) relies on leases instead. */
  int (*recover)(coda__store *s, int64_t now);
  int (*begin)(coda__store *s);
  int (*commit)(coda__store *s);
  void (*rollback)(coda__store *s);
  /* Writes a new task. When a task with the same id exists: CODA_EEXIST
   * (the same key: a duplicate) or CODA_ESTORE (a different key). `owned`:
   * written already claimed by this process until `lease_until`, which is
   * the task's first claim: RUNNING, token 1, attempts as r says (the
   * engine writes 1), and expire() takes it back like any claim. Unowned:
   * QUEUED (r->state is ignored), token 0. */
  int (*enqueue)(coda__store *s, const coda__task_record *r, int owned,
                 int64_t lease_until);
  /* Claims up to `max` tasks that are due (queued or failed, run_at <= now,
   * not claimed) in the queues served and not paused: each becomes
   * running, attempts + 1, leased until `lease_until`, with a new token.
   * A task whose lease expired is taken back by expire(), never here.
   * Returns how many, or < 0. */
  int (*claim)(coda__store *s, int64_t now, int64_t lease_until, int max,
               coda__claim_fn fn, void *user);
  /* The end of an attempt: r->state is SUCCEEDED, FAILED (with run_at for
   * the next attempt) or DEAD; attempts, times, error, progress and result
   * as the record says. Releases the claim. */
  int (*finish)(coda__store *s, const coda__task_record *r);
  /* Not fenced (version 1): applies to any task that exists. The engine
   * uses progress_leased() when the store has it. */
  int (*progress)(coda__store *s, uint64_t id, double progress);
  /* Reserves `count` ids for the engine, never handed out again, even
   * after a crash: *first .. *first + count - 1. */
  int (*reserve_ids)(coda__store *s, uint64_t count, uint64_t *first);
  /* Reads one task into a coda_task_info allocated with malloc (one block,
   * strings inside). Any thread. CODA_ENOTFOUND if unknown. */
  int (*get)(coda__store *s, uint64_t id, coda_task_info **out);
  /* The earliest run_at of a task waiting for its time, or 0 if none. */
  int64_t (*next_due)(coda__store *s);
  const char *(*errmsg)(coda__store *s);
  void (*close)(coda__store *s);
  /* Version 1 ends here; later members may be NULL in older stores. */
  /* Like begin(), for a batch that holds only outcomes and progress: its
   * commit may become durable with the next ordinary commit instead of
   * its own (an outcome lost to a power cut only runs its task again). */
  int (*begin_lazy)(coda__store *s);
  /* Tasks in `state` with an id above after_id, by id, at most `limit`:
   * fn gets each as a coda_task_info it must not keep, with the store's
   * lock released (fn may call get(); coda__info_list does this). Any
   * thread. Returns how many, or < 0. */
  int (*list)(coda__store *s, coda_task_state state, uint64_t after_id, int limit,
              coda_task_list_fn fn, void *user);
  /* Deletes up to `limit` tasks that succeeded or died before
   * `finished_before` (unix ms): their ids and keys are forgotten. Which
   * go first is the store's choice (the engine purges until none is
   * left), but a younger task never holds back an older one. Inside a
   * batch. Returns how many, or < 0. */
  int (*purge)(coda__store *s, int64_t finished_before, int limit);
  /* ---- Version 2: stores shared by several processes. ----------------
   * A claim has a fencing token (record.lease). The memory and SQLite
   * stores implement these too (one process: nothing is ever taken over
   * unless expire() takes it), so the engine has one code path. */
  /* The queues claim() takes tasks from, in that order of preference
   * (n == 0: every queue). Called once, before the first claim. */
  int (*serve)(coda__store *s, const char *const *queues, int n);
  /* Pauses (1) or resumes (0) a queue for every process sharing the store:
   * claim() takes nothing from a paused queue; running tasks go on.
   * Outside a batch. */
  int (*pause)(coda__store *s, const char *queue, int paused);
  /* Extends to lease_until the leases of the claims in l that still hold
   * (same id, same token, still running); lost[i] = 1 for each one that
   * does not (expired and taken over, deleted, finished). Outside a batch,
   * and may be called from a thread other than the store thread (the
   * heartbeat): a store serialises it as it does get(). Returns 0 or < 0. */
  int (*renew)(coda__store *s, const coda__lease *l, int n, int64_t lease_until,
               unsigned char *lost);
  /* After commit() returned 0: the outcomes (finish) and progress of that
   * batch the store refused because their claim no longer held the task
   * (record.lease is not the task's current token, or it is not running).
   * Copies up to max of them to out and returns how many (0 nearly
   * always). Refused writes changed nothing. */
  int (*refused)(coda__store *s, coda__lease *out, int max);
  /* Takes over up to max running tasks whose lease ended before now, in
   * one atomic step (two processes never take the same one). In a shared
   * store (Redis) claim(), expire() and purge() apply when called, and a
   * rollback of their batch does not undo them. Each gets a
   * fresh token and a lease until lease_until, attempts unchanged, and fn
   * gets its record; the engine then writes its outcome (the attempt failed:
   * "its lease expired", retried with the definition's backoff, or dead)
   * with finish() under that token. Inside a batch. Returns how many or < 0. */
  int (*expire)(coda__store *s, int64_t now, int64_t lease_until, int max,
                coda__claim_fn fn, void *user);
  /* Like progress(), fenced by the claim's token. */
  int (*progress_leased)(coda__store *s, const coda__lease *l, double progress);
  /* Tasks matching f by increasing id; fn as for list(). Any thread.
   * Returns how many, or < 0. */
  int (*find)(coda__store *s, const coda__task_filter *f, coda_task_list_fn fn, void *user);
  /* The queues paused for every process (pause()), as names separated by
   * commas (queue names hold none) in buf, NUL-terminated. Returns how
   * many, CODA_ELIMIT if they do not fit, or < 0. The engine reads it every
   * poll, so that a task it adds in a paused queue is written unclaimed
   * rather than run at once (an owned enqueue is a claim). May be NULL:
   * nothing is known paused. */
  int (*paused)(coda__store *s, char *buf, size_t cap);
  /* After commit() returned 0: the ids of that batch's enqueues that were
   * duplicates (the id was stored already with the same key), which a
   * store that checks ids only when the batch reaches it (Redis: one round
   * trip per batch, not one per enqueue) cannot report as CODA_EEXIST from
   * enqueue(): its enqueue() returned 0 and nothing of them was written.
   * The engine treats them as an EEXIST from enqueue (t->duplicate). An id
   * taken by another key still fails the whole commit (CODA_ESTORE), and a
   * duplicate within one batch is still CODA_EEXIST from enqueue(). NULL
   * in a store whose enqueue() reports every duplicate itself. Copies up
   * to max ids to out and returns how many. */
  int (*duplicates)(coda__store *s, uint64_t *out, int max);
  /* Gives back claims whose attempt never began (a stop before they ran):
   * each task still running under that token goes back to waiting, due at
   * once, its attempts as before the claim (the claim is not counted as an
   * attempt); others are left alone. Outside a batch. Returns 0 or < 0.
   * May be NULL (the lease then ends and expire() counts an attempt). */
  int (*release)(coda__store *s, const coda__lease *l, int n);
  /* ---- Version 3: what operators see and do (include/coda.h "operators'
   * actions and views"). -------------------------------------------------
   * The actions are made outside a batch, like pause(), each atomic and
   * durable when it returns, from the store thread (before the run: from
   * the configuring thread). They return CODA_ENOTFOUND for an unknown id
   * and CODA_ESTATE when the task's state does not allow it.
   *
   * Rules every store keeps besides:
   *  - finish() counts the attempt in its queue's processed (SUCCEEDED) or
   *    failed (FAILED, DEAD, CANCELLED) totals, appends a FAILED or DEAD
   *    outcome's error to the task's history (attempt, finished_at, error;
   *    the last CODA_TASK_ERRORS_KEPT), and writes a FAILED outcome of a
   *    task whose cancel was requested as CANCELLED (it is not retried,
   *    whichever process ran it);
   *  - renew() sets lost[i] = 2 for a claim that holds but whose task was
   *    asked to stop (cancel()): its lease is renewed all the same;
   *  - CANCELLED is a final state: purge() deletes it past the retention
   *    like SUCCEEDED and DEAD. */
  /* DEAD, FAILED, CANCELLED, or QUEUED with run_at > now: becomes QUEUED,
   * due at `now`, unclaimed, cancel request cleared; when its attempts
   * reached max_attempts, max_attempts becomes attempts + 1. */
  int (*retry)(coda__store *s, uint64_t id, int64_t now);
  /* QUEUED or FAILED: becomes CANCELLED (finished_at now), returns 0.
   * RUNNING: its cancel is requested, returns 1 (the outcome decides). */
  int (*cancel)(coda__store *s, uint64_t id, int64_t now);
  /* Any state but RUNNING: the task is deleted, id and key forgotten. */
  int (*remove)(coda__store *s, uint64_t id);
  /* retry() or remove() on every task in `state` of `queue` (NULL: all).
   * Returns how many, or < 0. */
  long (*retry_all)(coda__store *s, coda_task_state state, const char *queue,
                    int64_t now);
  long (*remove_all)(coda__store *s, coda_task_state state, const char *queue);
  /* Each queue known (tasks were added to it, or it is paused), by name,
   * to fn until it returns nonzero, with no lock of the store held. Any
   * thread, and cheap: counters the store keeps, no scan of the tasks.
   * Returns how many fn got, or < 0. */
  int (*queue_stats)(coda__store *s, int64_t now, coda__queue_fn fn, void *user);
  /* This process's node record, written (or replaced) now; it is no longer
   * listed once `ttl_ms` has passed without another beat. Any thread (the
   * heartbeat's), serialised like renew(). */
  int (*node_beat)(coda__store *s, const coda_node_info *n, int64_t now, int64_t ttl_ms);
  /* The node records not expired at `now`, to fn until it returns nonzero.
   * Any thread. Returns how many fn got, or < 0. */
  int (*nodes)(coda__store *s, int64_t now, coda__node_fn fn, void *user);
} coda__store_methods;

/* What commit() returns when it cannot know whether the batch was applied
 * (the command was sent, then a timeout or a broken connection; or written
 * but not acknowledged by the replicas asked for). A store that returns it
 * recognises the batch's own tasks when the same batch is committed again
 * (the Redis store: a nonce kept until a commit of adds succeeds): a task
 * without a key that its lost call wrote then counts as written, not as an
 * id taken; one with a key is a duplicate, as ever (duplicates()). The engine answers the
 * batch's adds as not accepted (503) but keeps its owned tasks registered,
 * so they run and renew if the write did land (their outcome is refused if
 * it did not). Outcomes of the batch are written again. */
#define CODA__STORE_UNKNOWN (-2001)

struct coda__store {
  const coda__store_methods *m;
};

/* Opens a store from a URI ("memory", "sqlite:PATH", "redis://..."). On failure returns
 * CODA_ESTORE (or CODA_EINVAL for an unknown scheme) with a message in
 * err. `max_bytes`: a size cap where the store supports one (0: none). */
int coda__store_open(const char *uri, long max_bytes, coda__store **out, char *err,
                     size_t errlen);

coda__store *coda__memory_store_open(void);
int coda__sqlite_store_open(const char *path, long max_bytes, coda__store **out,
                            char *err, size_t errlen);
/* 0 when none of the SQLite store's per-task statements builds a temporary
 * b-tree, sorter or automatic index at each run (EXPLAIN of each); else
 * CODA_ESTATE (or CODA_ESTORE) with the statement and the opcode in why.
 * For tests: such a statement once cost 4 us per task. */
int coda__sqlite_store_check_plans(coda__store *s, char *why, size_t cap);
/* The connection's PRAGMA synchronous now (2: FULL, each commit fsync'd;
 * 1: NORMAL, during a lazy batch), or -1 when it cannot be read. Call it
 * from the thread that owns the store, between batches. For tests. */
int coda__sqlite_store_synchronous(coda__store *s);
/* uri: redis://HOST:PORT[/DB][?prefix=NAME&replicas=N]. Connects, checks
 * maxmemory-policy (refused unless it cannot evict coda's keys) and loads
 * the scripts: CODA_ESTORE with the reason in err on any failure. */
int coda__redis_store_open(const char *uri, coda__store **out, char *err, size_t errlen);

/* Builds a coda_task_info in one malloc'd block from a record. */
coda_task_info *coda__task_info_from_record(const coda__task_record *r);

/* Infos gathered under a store's lock, handed to a list callback after it
 * is released (the callback may read the store again). */
typedef struct coda__info_list {
  coda_task_info **items;
  int n, cap;
} coda__info_list;
/* Adds a copy of r; CODA_ENOMEM on failure. */
int coda__info_list_add(coda__info_list *l, const coda__task_record *r);
/* Calls fn on each until it returns nonzero, frees them all; returns how
 * many fn got. */
int coda__info_list_deliver(coda__info_list *l, coda_task_list_fn fn, void *user);

/* Appends an error to a history (errors[0..*n), each with its message
 * malloc'd), keeping the last CODA_TASK_ERRORS_KEPT. CODA_ENOMEM. */
int coda__errors_push(coda_task_error **errors, int *n, int attempt, int64_t at,
                      const char *error);
void coda__errors_free(coda_task_error *errors, int n);
/* A history as JSON ([[attempt,at,"error"],..]) in a malloc'd string, and
 * back (the messages of *out in one block with it: free(*out) once).
 * NULL/0 when there is none or it does not parse. */
char *coda__errors_to_json(const coda_task_error *errors, int n);
int coda__errors_from_json(const char *json, size_t len, coda_task_error **out);

/* The nodes of a store that keeps them in this process (memory, SQLite):
 * the records beaten here, under the store's own lock. */
typedef struct coda__node_table {
  struct coda__node_slot *slots;
  int n;
} coda__node_table;
int coda__node_table_beat(coda__node_table *t, const coda_node_info *n, int64_t now,
                          int64_t ttl_ms);
/* Copies the live records into a list handed to fn after the caller's
 * lock is released: call _collect under it, then _deliver. */
typedef struct coda__node_list {
  coda_node_info *items;
  char **strings; /* one block per item */
  int n;
} coda__node_list;
int coda__node_table_collect(const coda__node_table *t, int64_t now,
                             coda__node_list *out);
int coda__node_list_deliver(coda__node_list *l, coda__node_fn fn, void *user);
void coda__node_table_free(coda__node_table *t);

/* Unix time in ms. */
int64_t coda__unix_ms(void);

#endif /* CODA_STORE_STORE_H */
