/*
 * task.h - the background-task engine: definitions, tasks, ordered lists
 * ("runs"), counters and the executors' common entry points.
 *
 * Threads: a task is created on its request's loop thread, started on that
 * thread once the response is written, then handed to its executor (loop,
 * thread pool, process pool), whose thread finishes it. A run (the tasks of
 * one response) is touched by one thread at a time when sequential: each
 * hand-off goes through an executor queue whose mutex orders the accesses.
 * Parallel runs count down an atomic. Counters are relaxed atomics.
 */
#ifndef CODA_TASKS_TASK_H
#define CODA_TASKS_TASK_H

#include "app/app.h"
#include "common/buf.h"
#include "common/inbox.h"
#include "common/queue.h"
#include "tasks/args.h"

#include <signal.h>
#include <stdatomic.h>
#include <uv.h>

typedef struct coda__engine coda__engine;
typedef struct coda__thread_pool coda__thread_pool;
typedef struct coda__process_pool coda__process_pool;

/* The engine's state on one event loop: where LOOP tasks run and where
 * THREAD tasks started on that loop are batched. Made by
 * coda__engine_add_loop() for any libuv loop with an inbox: a server's
 * loops (through the engine's service) or bare ones (a test, a worker).
 *
 * It outlives its loop: tasks and held responses keep pointing at it (a
 * THREAD task left running at shutdown submits the next task of its list
 * when it returns, long after), so it is freed only with the engine. The
 * loop, its inbox and the memory they live in are its owner's, and may be
 * gone once the loop has ended: `mu` orders every post to `inbox` before
 * the executor's close, after which `inbox` is never touched again. */
typedef struct coda__task_loop {
  coda__engine *engine;
  uv_loop_t *uv;
  uv_mutex_t mu; /* protects `closed` against the posting threads */
  coda__inbox *inbox;
  int closed;                      /* set under mu by the loop's close */
  struct coda__task_loop *retired; /* the engine's list of ended loops */
  /* The loop's thread, learnt by the executor's first callback there
   * (before that, nothing is batched). */
  uv_thread_t self;
  atomic_int self_known;
  /* THREAD tasks started on this loop during the current iteration,
   * submitted together by the check handle (loop thread only). */
  coda__queue thread_batch;
  /* LOOP tasks that returned CODA_PENDING and have not called
   * coda_task_done() (timed out or not), by their `link`: freed at
   * coda__engine_stop() if they never do (loop thread, then the control
   * thread once the loop has ended). */
  coda__queue pending;
  uv_check_t thread_batch_check;
  uv_idle_t thread_batch_idle; /* active while the batch is not empty: the
                                  next poll must not block before the flush */
} coda__task_loop;

struct coda_task_def {
  char *name;
  coda_task_fn fn;
  coda_executor executor;
  long timeout_ms;
  int durable;      /* every task of this definition is durable */
  int max_attempts; /* 0: the app's */
  long backoff_ms;  /* 0: the app's */
  long backoff_max_ms;
  char *queue; /* durable: the queue its tasks are claimed from (NULL: "default") */
  atomic_long outstanding; /* added and not finished, for the shutdown report */
  coda__engine *engine;
  /* Its slots in the engine's metric families (task_metrics.c), set at
   * configuration time so that counting never looks a name up. */
  int metric_task, metric_queue, metric_task_duration, metric_queue_wait;
};

struct coda_task {
  coda__queue link; /* in an executor queue */
  struct coda_tasks *run;
  coda_task_def *def;
  coda_executor executor;
  unsigned flags;
  uint64_t id;
  uint64_t request_id;
  uint64_t started_ns;
  uint64_t due_ns;      /* when it could first start (submitted), for the queue wait */
  uint64_t deadline_ns; /* 0: none */
  atomic_int cancelled;
  atomic_int reported; /* a timeout or crash was already reported */
  int pending;         /* a LOOP task waiting for coda_task_done */
  int orphaned;        /* finished by its timeout; freed at coda_task_done */
  char *error;
  coda__task_loop *loop;
  coda__inbox_msg post; /* LOOP: how it reaches its loop */
  uv_timer_t *timer; /* LOOP task timeout */
  int nargs;
  coda__arg *args;
  size_t wire_len; /* PROCESS: bytes of the serialised arguments */
  /* PROCESS, control loop only: sent to a worker right behind the task
   * before it in its ordered list (chained), and, when that one failed in a
   * list that stops on failure, skipped there rather than run (skipping). */
  unsigned chained : 1;
  unsigned skipping : 1;
  /* PROCESS, in a worker: whether its response was delivered, as the server
   * said (the worker's copy of the task has no run to ask). */
  unsigned delivered : 1;
  /* Durable tasks (durable.c). The store thread reads them while it writes
   * the task; the hand-offs through its queue order those accesses. */
  unsigned durable : 1;
  unsigned stored : 1;    /* in the store */
  unsigned duplicate : 1; /* its key matched a task already stored */
  unsigned elsewhere : 1; /* written unclaimed: a queue this process does not serve */
  /* The fencing token of this process's claim (0: none), set by the store
   * thread before the task is registered live, read under the registry
   * lock by the heartbeat. */
  uint64_t lease;
  /* Unix ms: the end of the lease as this process last knew it (set at
   * the claim, moved by each renewal; under the registry lock once
   * registered). Past it with no renewal, the lease is taken as lost. */
  int64_t lease_end;
  /* Set once by the heartbeat or the store thread when the claim is lost:
   * the attempt's outcome will be refused (coda_task_lease_lost()). */
  atomic_int lease_lost;
  /* PROCESS: the pid of the worker running it (0: none), set and cleared
   * by the control loop, read by the heartbeat to tell the worker. */
  atomic_int worker_pid;
  /* coda_task_cancel() asked this attempt to stop (set once, any thread):
   * a failure then ends it as cancelled; a PROCESS task still running at
   * cancel_kill_ns (uv_hrtime, 0: none) has its worker killed by the
   * control loop's watch. */
  atomic_int cancel_requested;
  _Atomic uint64_t cancel_kill_ns;
  int attempt;            /* 1 for the first */
  int max_attempts;
  int64_t created_at; /* unix ms */
  int64_t run_at;     /* unix ms: not before (0: now) */
  char *key;          /* idempotency key or NULL (owned) */
  /* Durable: the request that added it (owned, NULL: none), written with
   * it to the store (coda_task_info.trace, .origin). */
  char *trace, *origin;
  double progress;    /* under the durable registry lock */
  /* Its progress op not yet written, which takes `progress` when it is:
   * at most one per task (durable.c, under the registry lock). */
  struct coda__progress_op *progress_op;
  int64_t began_at;   /* unix ms, under the same lock; 0: not begun */
  void *result;       /* owned */
  size_t result_len;
};

struct coda_tasks {
  coda_app *app;
  coda_task **tasks;
  int n;
  int cap;
  unsigned flags;
  int next;
  int ahead; /* tasks from `next` on already chained to a worker (process_pool.c) */
  atomic_int remaining;
  int failed;
  int delivered;
  coda__task_loop *loop;
  uint64_t request_id;
  int durable_unstored; /* durable tasks not yet in the store */
  /* The request's traceparent and "METHOD /pattern" (owned, NULL: none),
   * copied into each durable task appended (coda__tasks_set_origin). */
  char *trace, *origin;
  int origin_set; /* set once (by the response path or a caller) */
  coda_task *inline_tasks[4];
};

struct coda__engine {
  coda_app *app;
  coda_task_def **defs;
  int ndefs;
  int defs_cap;
  atomic_long stats[CODA_EXEC_COUNT_][CODA_STAT_COUNT_];
  atomic_long reserved[CODA_EXEC_COUNT_];
  atomic_ullong next_id;
  atomic_long outstanding;
  coda_task_error_hook hook;
  void *hook_user;
  /* The pools, NULL once stopped. Atomic: a THREAD task left running at
   * shutdown reads them when it submits the next task of its list. */
  _Atomic(coda__thread_pool *) threads;
  _Atomic(coda__process_pool *) procs;
  coda__server *server;     /* while draining: told when outstanding hits 0 */
  coda__service service;    /* how the server runs the engine */
  int loop_slot;            /* the server loops' slot holding a coda__task_loop */
  coda__task_loop **loops;  /* every loop tasks may run on */
  int nloops;
  int loops_cap;
  uv_mutex_t loops_mu;      /* protects loops/nloops against a reader on
                               another thread while a loop is added */
  coda__task_loop *retired; /* loops of earlier runs, freed with the engine */
  uv_timer_t watch;         /* THREAD task timeouts (control loop) */
  int watching;
  char **queues;            /* coda_app_queues(): the queues served, by preference */
  int nqueues;              /* 0: every queue */
  coda_tasks **route_lists; /* templates of route-level tasks, owned here */
  int nroute_lists;
  struct coda__durable *durable; /* the store and its thread (durable.c) */
  /* Why the last store failed to open, while `durable` is NULL (durable.c;
   * written by a configuration call, so on one thread per app). */
  char store_error[512];
  atomic_int draining;
  /* Threads between a look at `draining` and their coda__server_idle():
   * the report waits for none to be left, so none can use the server
   * once the drain is over (a thread left running outlives it). */
  atomic_int notifying;
  coda__thread_pool *left_threads; /* stopped with tasks still running */
  coda__process_pool *left_procs;  /* stopped, kept for left_threads */
  struct coda__scheduler *scheduler; /* periodic tasks (schedule.c), or NULL */
  /* Metric families in the app's registry (task_metrics.c); NULL if they
   * could not be made (counting into them is then a no-op). */
  coda__metric *m_tasks;    /* task, queue, executor, outcome */
  coda__metric *m_duration; /* task, executor */
  coda__metric *m_wait;     /* queue */
  coda__metric *m_batch;    /* store batches */
  coda__metric *m_restarts; /* PROCESS workers replaced */
};

/* What ended a task, for coda_tasks_total{outcome}: an attempt ends
 * SUCCEEDED, FAILED, TIMED_OUT or CRASHED; a failed durable attempt is
 * then RETRIED or DEAD; REJECTED and DROPPED never ran. */
typedef enum {
  CODA__OUTCOME_SUCCEEDED = 0,
  CODA__OUTCOME_FAILED,
  CODA__OUTCOME_TIMED_OUT,
  CODA__OUTCOME_CRASHED,
  CODA__OUTCOME_RETRIED,
  CODA__OUTCOME_DEAD,
  CODA__OUTCOME_REJECTED,
  CODA__OUTCOME_DROPPED,
} coda__task_outcome;

/* task_metrics.c. Registers the engine's families and its collector
 * (configuration time, once per engine). */
void coda__task_metrics_init(coda__engine *e);
/* Takes a definition's label slots (its name, its queue); again after
 * coda_task_def_queue(). Configuration time. */
void coda__task_metrics_def(coda_task_def *def);
/* Counts one outcome of a task of `def` on executor `ex`. Any thread. */
void coda__task_metrics_outcome(coda_task_def *def, coda_executor ex,
                                coda__task_outcome o);
/* A task starts: its queue wait (due to now). Its thread. */
void coda__task_metrics_began(coda_task *t);
/* An attempt ended: its outcome and duration. Any thread. */
void coda__task_metrics_ended(coda_task *t, coda__task_outcome o);
/* A store batch took `ns` (the store thread). */
void coda__task_metrics_batch(coda__engine *e, uint64_t ns);

/* The app's engine, made on first use (a configuration call: one thread,
 * before coda_app_run()), which installs it as the app's extension and a
 * service of the server. NULL when out of memory. */
coda__engine *coda__engine_of(coda_app *app);
/* The app's engine or NULL if no task call was ever made. Any thread. */
coda__engine *coda__engine_peek(const coda_app *app);
/* The extension's free and stats_json (app.h). */
int coda__engine_free(void *data);
size_t coda__engine_stats_json(void *data, char *buf, size_t cap);

/* Running without a server (bare libuv loops; the server does the same
 * through the engine's service). Start: the thread and process pools, the
 * store thread, the thread-task watchdog on `control` (its thread must run
 * that loop). Then add each loop tasks may use (before it runs, or on its
 * thread), and call coda__engine_ready() once they are all there. */
int coda__engine_start(coda__engine *e, uv_loop_t *control);
coda__task_loop *coda__engine_add_loop(coda__engine *e, uv_loop_t *uv,
                                       coda__inbox *inbox);
void coda__engine_ready(coda__engine *e);
/* Takes no new attempts from the store; sets `draining`. */
void coda__engine_drain(coda__engine *e);
/* Closes the engine's state on a loop (its thread, or once it no longer
 * runs), before the loop's inbox closes: from then on LOOP tasks and held
 * responses for that loop are refused at once, on the posting thread. */
void coda__engine_loop_close(coda__task_loop *tl);
/* Stops the pools and the store thread; tasks still queued are dropped
 * and counted. The control loop must run once more to close the watchdog. */
void coda__engine_stop(coda__engine *e);
/* Logs, by name, the tasks added and not finished. Returns how many. */
long coda__engine_report_unfinished(coda__engine *e);

coda_task_def *coda__engine_find(coda__engine *e, const char *name);

/* Builds a task with copied arguments and takes a queue slot. */
int coda__task_new(coda__engine *e, coda_task_def *def, unsigned flags, const char *fmt,
                   va_list ap, coda_task **out);
/* Copies a task (its arguments included), taking a new queue slot. */
int coda__task_clone(const coda_task *src, coda_task **out);

/* Refuses a task at add time (the caller is told): counted as rejected,
 * slot released, freed, no log line. */
void coda__task_reject(coda_task *t);
/* Drops a task that will not run: counted, slot released, freed. */
void coda__task_drop(coda_task *t, const char *why);
/* Drops a task that will not run, and advances its list as after a
 * failure (the next task runs, unless the list stops on failure). */
void coda__task_drop_advance(coda_task *t, const char *why);
/* Drops every task queued in `q` (an executor stopping), and with each one
 * the rest of its list, which can no longer run in order. */
void coda__tasks_drop_queue(coda__queue *q, const char *why);

/* An executor says the task is starting on the current thread. */
void coda__task_begin(coda_task *t);
/* An executor says the task is over (rc 0 or negative, message may be
 * NULL); advances its run. Any thread. */
void coda__task_finish(coda_task *t, int rc, const char *message);
/* Reports a timeout or crash as soon as it is seen (once per task). */
void coda__task_report(coda_task *t, coda_task_stat_kind kind, const char *message);

/* Reads a caller's options (NULL: defaults) into a full local copy:
 * CODA_EINVAL without a size (not made with CODA_TASK_OPTS_INIT) or with
 * a flag that is not a task flag. Then writes the id back where the
 * caller's struct has room for it. */
int coda__opts_read(const coda_task_opts *in, coda_task_opts *out);
void coda__opts_write_id(coda_task_opts *in, uint64_t id);

/* Sets what the durable tasks appended to `run` from now on record of
 * the request that added them: its W3C traceparent (trace, NULL: none)
 * and origin ("POST /reports/{id}", NULL: none). Copied; CODA_ENOMEM.
 * The response path sets both from the request (attach.c); a caller that
 * knows better may set them again. */
int coda__tasks_set_origin(coda_tasks *run, const char *trace, const char *origin);
/* A response's run: appends, starts once written. */
int coda__run_append(coda_tasks *run, coda_task *t);
/* Builds a task (coda__task_new) and appends it. */
int coda__run_add(coda_tasks *run, coda_task_def *def, coda_task_opts *opts,
                  const char *fmt, va_list ap);
void coda__run_start(coda_tasks *run, int delivered);
/* The handler failed: keep only ALWAYS tasks. */
void coda__run_drop_failed(coda_tasks *run);
/* The current task of a run ended (failed or not): start the next one. */
void coda__run_advance(coda_tasks *run, int failed);
/* The server stopped before the run could start: drops its tasks (those
 * written to the store run at the next start) and frees it. */
void coda__run_abandon(coda_tasks *run);

/* Executors. */
int coda__loop_executor_init(coda__task_loop *tl);
void coda__loop_executor_close(coda__task_loop *tl);
/* Frees what coda__loop_executor_init() made (once the loop has ended). */
void coda__loop_executor_destroy(coda__task_loop *tl);
/* Posts msg to the loop's inbox: 0, or CODA_ESTATE once the loop's
 * executor has closed (msg was not posted). Any thread. */
int coda__task_loop_post(coda__task_loop *tl, coda__inbox_msg *msg, coda__inbox_fn fn);
int coda__loop_submit(coda__task_loop *tl, coda_task *t);
/* LOOP tasks still pending when their loop ended: dropped (never done) or
 * freed (finished by their timeout). After the loop's thread has ended. */
void coda__loop_executor_free_pending(coda__task_loop *tl);

coda__process_pool *coda__process_pool_new(coda__engine *e, uv_loop_t *loop, int workers);
int coda__process_pool_submit(coda__process_pool *p, coda_task *t);
/* Control loop: kills the worker of a cancelled task past its grace
 * period (coda_task.cancel_kill_ns). */
void coda__process_pool_watch(coda__process_pool *p, uint64_t now_ns);
/* Refuses new tasks (submit returns CODA_ESTATE); the pool stays usable. */
void coda__process_pool_close(coda__process_pool *p);
/* Kills the workers and drops what is left; frees the pool if free_it. */
void coda__process_pool_stop(coda__process_pool *p, int free_it);
/* Frees a pool stopped without free_it. */
void coda__process_pool_free(coda__process_pool *p);
/* In a worker process (coda__in_worker): sends a PROCESS task's progress to
 * the server. */
int coda__in_worker(void);
int coda__worker_progress(coda_task *t, double fraction);
/* In a worker process: serve tasks from fd until it closes. Never returns. */
void coda__process_worker_main(coda__engine *e, int fd);

/* A task that never runs, only cloned (route-level tasks). */
int coda__task_template(coda_task_def *def, unsigned flags, const char *fmt, va_list ap,
                        coda_task **out);
void coda__task_free_template(coda_task *t);

/* 1 if v is a W3C traceparent coda keeps (version 00, lowercase hex, ids
 * not all zero), else 0 (NULL too). */
int coda__traceparent_valid(const char *v);

/* What a log line about t carries in the JSON format: its id, name,
 * attempt, request id and traceparent. */
void coda__task_log_fields(const coda_task *t, coda__log_fields *f);
/* coda_log() through t's app, with t's fields (a line about a task logged
 * outside its run: failure, drop, death). Any thread. */
void coda__task_log(const coda_task *t, coda_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Response side (attach.c): the app's extension hooks (app.h). */
extern const coda__app_ext coda__tasks_ext;
/* Drops the run's durable tasks that are not in the store (their write
 * failed), so that what remains can still run. */
void coda__run_drop_unstored(coda_tasks *run);
/* The engine's state on the loop serving this response, where
 * coda__task_loop_post() reaches it from another thread; NULL when there
 * is none (no engine, or one made after the server started). Loop thread. */
coda__task_loop *coda__res_task_loop(const coda_res *res);

coda__thread_pool *coda__thread_pool_new(coda__engine *e, int nthreads);
/* 0, or CODA_ESTATE once stopped (the caller drops the task). */
int coda__thread_pool_submit(coda__thread_pool *p, coda_task *t);
/* Submits a whole queue of tasks with one lock and the fewest wake-ups;
 * `tasks` ends empty on success. CODA_ESTATE once stopped. */
int coda__thread_pool_submit_batch(coda__thread_pool *p, coda__queue *tasks);
/* On the loop's own thread, while its executor is open: THREAD tasks
 * started during this iteration are collected and submitted together when
 * the iteration's I/O is done. */
int coda__loop_can_defer(const coda__task_loop *tl);
void coda__loop_defer_thread_task(coda__task_loop *tl, coda_task *t);
void coda__thread_pool_watch(coda__thread_pool *p, uint64_t now_ns);
/* Stops the pool: running tasks are cancelled and get a short grace; the
 * pool is freed (0), or, if some are still running, their threads are
 * detached and the pool kept (CODA_ESTATE) until coda__thread_pool_release()
 * finds them all returned. */
int coda__thread_pool_stop(coda__thread_pool *p);
/* Frees a pool kept by its stop once its last thread has returned: 0, or
 * CODA_ESTATE while one still runs. Any thread. */
int coda__thread_pool_release(coda__thread_pool *p);

/* Builds a task of def from argument bytes read back from a store (the
 * codec of args.h), with its own copy of them. CODA_EINVAL if they do not
 * decode. */
int coda__task_decode_args(coda_task_def *def, const void *data, size_t len,
                           coda_task **out);
/* Takes a slot for a task read back from the store (may exceed the bound
 * by what one claim brings, which the claim limits). */
void coda__task_force_reserve(coda_task_def *def);
/* Gives back a slot taken for def (the task itself was freed earlier). */
void coda__task_unreserve_def(coda_task_def *def);
void coda__task_free(coda_task *t);
/* Submits a task with no response (read back from the store). */
void coda__task_submit(coda_task *t);

/* ---- durable tasks (durable.c) ---- */
typedef struct coda__durable coda__durable;
int coda__durable_open(coda__engine *e, const char *uri);
void coda__durable_free(coda__engine *e);
/* Starts the store thread (after the pools): recovery, then claims. */
int coda__durable_start(coda__engine *e);
/* Writes what is left and stops the thread (after the pools stopped). */
void coda__durable_stop(coda__engine *e);
/* At add time: makes t durable (id, key, delay, attempts) when asked. */
int coda__durable_prepare(coda__engine *e, coda_task *t, const coda_task_opts *opts);
/* Hands the durable tasks of a gated response to the store thread;
 * coda__res_resume() follows on the response's loop thread (or
 * coda__res_abandon() if that loop has ended). */
int coda__durable_hold(coda_res *res, coda_tasks *run);
/* A durable task's attempt ended: the store thread records it (retry,
 * dead or success) and then gives back its slot. Frees t. */
void coda__durable_finished(coda_task *t, int failed, const char *message);
/* The same for a task its executor still references (a LOOP task finished
 * by its timeout): t is not freed. */
void coda__durable_finished_keep(coda_task *t, int failed, const char *message);
/* A stored durable task that will not run in this process leaves the live
 * registry. With final_why (its list stopped on a failure: it must never
 * run) it is written as dead with that error; otherwise it stays in the
 * store and runs at the next start. Neither frees t nor gives back its
 * slot. */
void coda__durable_abandon(coda_task *t, const char *final_why);
/* Drops a task that must never run (its list stopped on a failure). */
void coda__task_drop_final(coda_task *t, const char *why);
/* The attempt begins (executor thread). */
void coda__durable_began(coda_task *t);
/* Whether this process serves the queue (coda_app_queues()). */
int coda__engine_serves(const coda__engine *e, const char *queue);
/* The queue of a definition. */
static inline const char *coda__def_queue(const coda_task_def *def) {
  return def->queue ? def->queue : "default";
}
/* Marks t's claim lost (heartbeat or store thread, under the durable
 * registry lock): coda_task_lease_lost() and coda_task_cancelled() become
 * true, in a PROCESS worker too (process_worker.c). */
void coda__task_mark_lease_lost(coda_task *t, const char *why);
/* The signal that tells a PROCESS worker its current task's lease is lost;
 * its value is the low 31 bits of the task's id. */
#define CODA__LEASE_SIGNAL (SIGRTMIN + 2)
/* In a worker process: whether the server said t's lease is lost. */
int coda__worker_lease_lost(const coda_task *t);
/* Tests only: pauses (1) or resumes (0) the heartbeat's renewals, so that a
 * running task's lease can expire. */
void coda__durable_test_pause_heartbeat(coda_app *app, int paused);
/* coda_app_enqueue() for the engine's own adds (periodic tasks): when it
 * returns 0, `written` is called once, on the store thread, with 0 when
 * the task is in the store (a duplicate of its key included) or an error
 * when its write failed or its fate is unknown. Not called otherwise. */
typedef void (*coda__written_fn)(void *user, int rc);
int coda__durable_enqueue_notify(coda_app *app, coda_task_def *def, coda_task_opts *opts,
                                 coda__written_fn written, void *user, const char *fmt,
                                 ...);
size_t coda__durable_stats_json(coda__engine *e, char *buf, size_t cap);
/* The server's loops are initialised: the store thread may hand tasks to
 * the executors (LOOP ones need the loops). */
void coda__durable_loops_ready(coda__engine *e);
/* The store thread stops handing tasks to the executors (before they stop). */
void coda__durable_quiesce(coda__engine *e);
/* Stops claiming new attempts (the drain has begun). */
void coda__durable_draining(coda__engine *e);

/* ---- periodic tasks (schedule.c) ---- */
typedef struct coda__scheduler coda__scheduler;
/* Frees the schedules (with the engine). */
void coda__schedule_free(coda__engine *e);

static inline void coda__stat_add(coda__engine *e, coda_executor ex,
                                  coda_task_stat_kind k, long v) {
  atomic_fetch_add_explicit(&e->stats[ex][k], v, memory_order_relaxed);
}

#endif /* CODA_TASKS_TASK_H */
