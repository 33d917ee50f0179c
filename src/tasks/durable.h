/*
 * durable.h - what durable.c (adding, outcomes, status, the loops' hold
 * inboxes) and store_thread.c (the thread that writes, claims and purges)
 * share: the operations queued for the store thread and the engine's
 * durable state. Private to src/tasks/.
 */
#ifndef CODA_TASKS_DURABLE_H
#define CODA_TASKS_DURABLE_H

#include "tasks/task.h"

#include "common/idmap.h"
#include "server/conn.h"
#include "store/store.h"

#define CODA__ID_BLOCK (1u << 20)
#define CODA__KEY_ID_BIT (1ULL << 62)
#define CODA__MAX_CLAIM 512

typedef enum {
  CODA__OP_HOLD,
  CODA__OP_ENQUEUE,
  CODA__OP_FINISH,
  CODA__OP_PROGRESS,
  CODA__OP_SYNC,
  CODA__OP_PAUSE, /* outside any batch: written before it (lease.c) */
  CODA__OP_ADMIN  /* an operator's action, likewise (ops.c) */
} coda__op_kind;

typedef struct coda__store_op {
  coda__queue link;
  coda__op_kind kind;
  int rc; /* the outcome, once written */
} coda__store_op;

typedef struct coda__hold coda__hold;
struct coda__hold {
  coda__store_op op;
  coda__inbox_msg msg; /* back to the response's loop */
  coda__task_loop *loop;
  coda_res *res; /* gated: its connection's memory stays until we resume */
  coda_tasks *run;
};

/* The store thread wrote (op.rc 0) or failed to write a hold's tasks:
 * back to the response's loop, or, if that loop has ended, the response
 * is abandoned here. Frees h. Store thread. */
void coda__durable_hold_written(coda__hold *h);

typedef struct coda__enqueue_op {
  coda__store_op op;
  coda_task *task;
  coda__written_fn written; /* NULL: nobody asked (coda__durable_enqueue_notify) */
  void *user;
} coda__enqueue_op;

typedef struct coda__finish_op {
  coda__store_op op;
  coda_task_def *def; /* whose slot is given back once written (NULL: none) */
  coda_executor executor;
  coda__task_record r;
  char *error;
  void *result;
  /* It was in a batch whose fate is unknown (CODA__STORE_UNKNOWN): written
   * again, it may find itself written already and be refused. */
  int unknown;
} coda__finish_op;

/* A task has at most one progress op pending: later calls update its
 * value (under reg_mu) until the store thread takes it (apply). */
typedef struct coda__progress_op {
  coda__store_op op;
  uint64_t id;
  uint64_t lease; /* the claim's token */
  double progress; /* under reg_mu until taken */
  coda_task *task; /* whose op this is, until taken or the task ends (reg_mu) */
} coda__progress_op;

/* The store thread takes a progress op: from now on the task's next
 * coda_task_progress() queues a new one. Returns the value to write. */
double coda__durable_take_progress(coda__durable *d, coda__progress_op *p);

typedef struct coda__pause_op {
  coda__store_op op;
  const char *queue; /* the caller's, which waits */
  int paused;
  int done; /* under mu */
} coda__pause_op;

typedef enum {
  CODA__ADMIN_RETRY,
  CODA__ADMIN_CANCEL,
  CODA__ADMIN_DELETE,
  CODA__ADMIN_RETRY_ALL,
  CODA__ADMIN_DELETE_ALL
} coda__admin_kind;

typedef struct coda__admin_op {
  coda__store_op op; /* op.rc: the store's answer */
  coda__admin_kind what;
  uint64_t id;
  coda_task_state state;
  const char *queue; /* the caller's, kept until the action is written */
  long count;        /* the bulk forms' result */
  int done;          /* under mu */
  /* Set by coda__ops_admin_start(): called on the store thread once the
   * action is written (count and op.rc set) instead of waking a waiter;
   * it may free the op. */
  void (*on_done)(struct coda__admin_op *a);
} coda__admin_op;

typedef struct coda__sync_op {
  coda__store_op op;
  int done;
} coda__sync_op;

struct coda__durable {
  coda__engine *engine;
  coda__store *store;
  /* mu protects ops, stop and the sync ops' done flags. Once stop is set,
   * operations are refused (push_op): the thread drains what was queued
   * before and ends, and nothing queued later would ever be taken. */
  uv_mutex_t mu;
  uv_cond_t cond;   /* work arrived, or stop */
  uv_cond_t synced; /* a batch ended */
  coda__queue ops;
  /* Bumped (under mu) by every push to ops, read without mu: the store
   * thread's brief spin after a batch watches it (store_thread.c). */
  atomic_uint pushed;
  int stop;
  int coalescing; /* the store thread gathers outcomes: they need no wake-up */
  int kick;       /* claim now (the loops just became ready) */
  atomic_int running; /* the store thread runs: read from any thread */
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
  /* Also under reg_mu: claims this process gave up before their attempt
   * began (dropped at the stop), which the store thread gives back with
   * the store's release() when it has one. */
  coda__lease *unstarted;
  int nunstarted, unstarted_cap;
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
  int64_t next_expire; /* store thread only */
  /* The heartbeat (lease.c): its own thread, which renews the leases of
   * the live tasks every CODA_OPT_TASK_LEASE / 3. hb_mu protects hb_stop
   * and hb_paused; hb_cond wakes it to stop. */
  uv_thread_t hb_thread;
  uv_mutex_t hb_mu;
  uv_cond_t hb_cond;
  int hb_stop, hb_paused, hb_running;
  int hb_failing; /* heartbeat thread only: the last renewal failed */
  /* Store thread only: the queues paused fleet-wide as last read (store
   * paused()), comma-separated: a task added here in one of them is
   * written unclaimed. */
  char paused[1024];
  char err[512]; /* last error, for coda_app_store_error (under mu) */
  /* This process as a node of the store (ops.c): set at the start, read
   * by the heartbeat; `processed` counts the attempts ended here. */
  char node_id[320];
  char node_host[256];
  int64_t node_started_at;
  int64_t next_beat; /* heartbeat thread only: unix ms of the next node beat */
  atomic_long processed;
};

static inline int64_t now_ms(void) { return coda__unix_ms(); }

static inline int coda__op_is_outcome(const coda__store_op *op) {
  return op->kind == CODA__OP_FINISH || op->kind == CODA__OP_PROGRESS;
}

/* The last store error, for coda_app_store_error(). Any thread. */
void coda__durable_set_error(coda__durable *d, const char *msg);

/* ---- leases and queues (lease.c) ---- */
/* Tells the store the queues served and starts the heartbeat (after the
 * store's recovery, before the store thread claims). */
int coda__lease_start(coda__durable *d);
/* Stops and joins the heartbeat (before the store thread stops). */
void coda__lease_stop(coda__durable *d);
/* Store thread: takes over tasks whose lease expired and records each
 * attempt as failed, when it is time to look (every lease / 2). */
void coda__lease_expire_due(coda__durable *d);
/* Store thread, after a commit of `batch` returned 0: the outcomes the
 * store refused are logged and counted (not retried). */
void coda__lease_check_refused(coda__durable *d, coda__queue *batch);
/* Store thread: takes the pause ops out of `batch` and writes them, each
 * alone, waking their callers. */
void coda__lease_write_pauses(coda__durable *d, coda__queue *batch);
/* Store thread: reads which queues are paused (every poll), and whether
 * one is. */
void coda__lease_refresh_paused(coda__durable *d);
int coda__lease_is_paused(const coda__durable *d, const char *queue);
/* The delay before the attempt after `attempt` of a def's task (def NULL:
 * the app's policy), jittered. Any thread. */
int64_t coda__durable_backoff(coda__durable *d, const coda_task_def *def, int attempt);
/* The live task of this id, if it holds a claim with a token below
 * `below` (tokens only grow), is marked lost. Any thread but the registry
 * lock's holder. */
void coda__lease_mark_lost(coda__durable *d, uint64_t id, uint64_t below);

/* ---- operators' actions and views (ops.c) ---- */
/* Store thread: takes the admin ops out of `batch` and writes them, each
 * alone, waking their callers. */
void coda__ops_write_admin(coda__durable *d, coda__queue *batch);
/* Queues an operator's action (what, id, state, queue set; on_done set)
 * for the store thread and returns at once: on_done follows on the store
 * thread. CODA_EINVAL for a bulk form's state (as coda_tasks_retry_all()),
 * CODA_ESTATE when no store thread runs (nothing queued: the caller may
 * use the waiting form). Any thread. */
int coda__ops_admin_start(coda_app *app, coda__admin_op *a);
/* The running task of this id, if alive here, is asked to stop
 * (coda_task_cancelled(), a PROCESS worker told at once and killed after
 * the grace period). Any thread but the registry lock's holder. */
void coda__ops_cancel_live(coda__durable *d, uint64_t id);
/* Names this process as a node (at the start, before the heartbeat). */
void coda__ops_node_init(coda__durable *d);
/* Heartbeat thread: writes this process's node record when it is due
 * (gone 1: at the stop, the record is withdrawn). */
void coda__ops_node_beat(coda__durable *d, int gone);
/* How often a node beats, and after how long its record lapses. */
int64_t coda__ops_beat_every_ms(const coda__durable *d);

#endif /* CODA_TASKS_DURABLE_H */
