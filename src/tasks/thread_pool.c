/*
 * thread_pool.c - the THREAD executor: a fixed set of coda's own threads
 * (not libuv's shared pool, which file system calls also use) taking tasks
 * from one FIFO queue.
 *
 * Wake-ups. Waking a sleeping thread costs far more than a trivial task (a
 * futex call on the submitting thread, then two context switches: several
 * microseconds of CPU on a VM), so the pool wakes threads as seldom as it
 * can without letting a task wait more than SCOUT_NS behind a blocked one:
 *
 * - A worker that finds the queue empty becomes the pool's one "scout" if
 *   there is none: it waits with a timeout of SCOUT_NS on its own
 *   condition, which only the stop signals. While a scout exists nobody
 *   wakes anyone (up to SCOUT_BACKLOG queued tasks): whatever is queued
 *   meanwhile is taken when its wait ends. Under a steady stream of small
 *   tasks the loops make no wake-up call at all, and the pool wakes about
 *   twice per SCOUT_NS (the scout, and the one it hands its role to),
 *   whatever the request rate.
 * - A worker that takes a task and leaves others queued with no scout
 *   calls one sleeper to be the scout, so the rest are looked at within
 *   SCOUT_NS even if its own task blocks for seconds.
 * - A scout whose wait ends with tasks queued, none taken meanwhile and
 *   workers inside tasks (blocked, then) wakes one sleeper per queued task,
 *   up to the sleepers: a burst of blocking tasks starts together.
 * - A submitter wakes a sleeper when there is no scout and no wake-up on
 *   its way, so the first task into a quiet pool starts at once; or when
 *   SCOUT_BACKLOG tasks are queued, in case the scout lacks CPU time. The
 *   next task of a list, submitted by the worker finishing the one before,
 *   wakes nobody: that worker takes it next.
 * - A scout whose wait ends with nothing queued sleeps for good: an idle
 *   pool costs nothing.
 *
 * Lock rule: `mu` protects `queue` and `nqueued`, `stop`, the wake-up
 * bookkeeping (`idle`, `wakeups`, `scout`, `scout_call`, `taken`, `busy`)
 * and `running[]`. A worker holds it to take a task and to mark its slot,
 * never while the task runs or while finishing it (finishing may submit
 * the next task of the same list back to this pool). Signals are sent after
 * unlocking, so a woken worker does not block on mu; every worker woken
 * from `cond` takes back one pending call, whoever the signal was meant
 * for, so the counts may drop early but never stay up. The watchdog
 * (control loop thread) holds mu to look at running tasks' deadlines.
 */
#include "tasks/task.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

/* How long a task may wait for the scout when nobody was woken for it: the
 * start latency added under load, in exchange for about 1000 / 2 ms = 1000
 * wake-ups a second at any task rate. */
#define SCOUT_NS 2000000u
/* Queued tasks past which submitters wake a helper despite the scout. */
#define SCOUT_BACKLOG 1024

typedef struct worker_slot {
  coda__thread_pool *pool;
  int index;
} worker_slot;

struct coda__thread_pool {
  coda__engine *engine;
  uv_mutex_t mu;
  uv_cond_t cond;       /* sleepers wait here */
  uv_cond_t scout_cond; /* the scout waits here; signalled only to stop */
  coda__queue queue;
  long nqueued;
  int stop;
  int idle;            /* workers in an untimed wait */
  int wakeups;         /* workers signalled to take tasks, not yet awake */
  int scout;           /* a worker waits with a timeout, or was called to */
  int scout_call;      /* a sleeper was signalled to be the scout, not awake */
  unsigned long taken; /* tasks taken off the queue so far */
  int busy;            /* workers inside a task's function */
  int nthreads;
  atomic_int live; /* workers that have not returned (detached ones too) */
  uv_thread_t *threads;
  worker_slot *slots;
  coda_task **running;
};

/* The pool whose worker is finishing a task on this thread, if any. */
static _Thread_local coda__thread_pool *finishing_pool;

static void wake(coda__thread_pool *p, int n) {
  for (int i = 0; i < n; i++)
    uv_cond_signal(&p->cond);
}

/* Sleepers no pending signal is meant for. */
static int uncalled(const coda__thread_pool *p) {
  return p->idle - p->wakeups - p->scout_call;
}

/* Tasks were queued: wake a sleeper only if nobody is going to look at the
 * queue soon already. Called with mu; returns the signals to send. */
static int wakeups_for_submit(coda__thread_pool *p) {
  if (finishing_pool == p)
    return 0; /* this worker takes them once its task is finished */
  if ((p->scout && p->nqueued < SCOUT_BACKLOG) || p->wakeups || uncalled(p) <= 0)
    return 0; /* or the awake workers take them before they sleep */
  p->wakeups++;
  return 1;
}

/* Takes the first queued task for worker `slot`; called with mu. Sets the
 * signals to send so that what stays queued is looked at in time. */
static coda_task *take(coda__thread_pool *p, worker_slot *slot, int *signals) {
  coda__queue *q = coda__queue_head(&p->queue);
  coda__queue_remove(q);
  p->nqueued--;
  coda_task *t = coda__container_of(q, coda_task, link);
  p->running[slot->index] = t;
  p->taken++;
  p->busy++;
  coda__task_begin(t); /* under mu: the watchdog reads the deadline */
  *signals = 0;
  if (p->nqueued > 0 && !p->scout && !p->wakeups && uncalled(p) > 0) {
    p->scout = 1;
    p->scout_call = 1;
    *signals = 1;
  }
  return t;
}

/* Runs t outside mu and clears the worker's slot; returns with mu held. */
static void run(coda__thread_pool *p, worker_slot *slot, coda_task *t, int signals) {
  uv_mutex_unlock(&p->mu);
  wake(p, signals);
  coda__log_fields f;
  coda__task_log_fields(t, &f);
  coda__log_scope(&f); /* its coda_log() lines say which task they come from */
  int rc = t->def->fn(t);
  coda__log_scope(NULL);
  uv_mutex_lock(&p->mu);
  p->running[slot->index] = NULL;
  p->busy--;
  uv_mutex_unlock(&p->mu);
  finishing_pool = p;
  coda__task_finish(t, rc > 0 ? 0 : rc, NULL);
  finishing_pool = NULL;
  uv_mutex_lock(&p->mu);
}

/* Waits as the scout (p->scout already set), then wakes sleepers for a
 * burst of blocked work; returns with mu held, 0 when the wait ended with
 * nothing queued (the worker sleeps for good next), 1 otherwise. */
static int be_scout(coda__thread_pool *p) {
  unsigned long taken = p->taken;
  int rc = uv_cond_timedwait(&p->scout_cond, &p->mu, SCOUT_NS);
  p->scout = 0;
  if (p->nqueued == 0)
    return rc != UV_ETIMEDOUT;
  if (rc != UV_ETIMEDOUT || p->taken != taken || p->busy == 0)
    return 1; /* this worker takes the next task itself */
  /* Nothing was taken for a whole wait while workers were in tasks: they
   * are blocked. Wake one sleeper per queued task but the one this worker
   * takes next. */
  long n = p->nqueued - 1;
  if (n > uncalled(p))
    n = uncalled(p);
  if (n > 0) {
    p->wakeups += (int)n;
    uv_mutex_unlock(&p->mu);
    wake(p, (int)n);
    uv_mutex_lock(&p->mu);
  }
  return 1;
}

static void worker_main(void *arg) {
  worker_slot *slot = arg;
  coda__thread_pool *p = slot->pool;
  /* SCHED_BATCH: a woken worker does not preempt the event loop thread on
   * the same core; it runs when the loop waits for I/O. Responses stay
   * fast and tasks started together run together. */
  struct sched_param sp = {0};
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  int scout_ok = 1; /* may wait as the scout when the queue is empty */
  uv_mutex_lock(&p->mu);
  while (!p->stop) {
    if (p->nqueued > 0) {
      int signals;
      coda_task *t = take(p, slot, &signals);
      run(p, slot, t, signals);
      scout_ok = 1;
    } else if (!p->scout && scout_ok) {
      p->scout = 1;
      scout_ok = be_scout(p);
    } else {
      p->idle++;
      uv_cond_wait(&p->cond, &p->mu);
      p->idle--;
      scout_ok = 1;
      if (p->scout_call && !p->stop) {
        p->scout_call = 0; /* p->scout was set by the caller */
        scout_ok = be_scout(p);
      } else if (p->wakeups > 0) {
        p->wakeups--;
      }
    }
  }
  uv_mutex_unlock(&p->mu);
  atomic_fetch_sub(&p->live, 1); /* the last touch of p: it may be freed next */
}

static void pool_free(coda__thread_pool *p) {
  free(p->threads);
  free(p->slots);
  free(p->running);
  free(p);
}

coda__thread_pool *coda__thread_pool_new(coda__engine *e, int nthreads) {
  coda__thread_pool *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->engine = e;
  p->threads = calloc((size_t)nthreads, sizeof *p->threads);
  p->slots = calloc((size_t)nthreads, sizeof *p->slots);
  p->running = calloc((size_t)nthreads, sizeof *p->running);
  coda__queue_init(&p->queue);
  if (!p->threads || !p->slots || !p->running || uv_mutex_init(&p->mu) != 0) {
    pool_free(p);
    return NULL;
  }
  if (uv_cond_init(&p->cond) != 0) {
    uv_mutex_destroy(&p->mu);
    pool_free(p);
    return NULL;
  }
  if (uv_cond_init(&p->scout_cond) != 0) {
    uv_cond_destroy(&p->cond);
    uv_mutex_destroy(&p->mu);
    pool_free(p);
    return NULL;
  }
  for (int i = 0; i < nthreads; i++) {
    p->slots[i] = (worker_slot){p, i};
    atomic_fetch_add(&p->live, 1);
    if (uv_thread_create(&p->threads[i], worker_main, &p->slots[i]) != 0) {
      atomic_fetch_sub(&p->live, 1);
      break;
    }
    p->nthreads++;
  }
  if (p->nthreads == 0) {
    coda__thread_pool_stop(p);
    return NULL;
  }
  return p;
}

int coda__thread_pool_submit(coda__thread_pool *p, coda_task *t) {
  uv_mutex_lock(&p->mu);
  int stopped = p->stop, n = 0;
  if (!stopped) {
    coda__queue_insert_tail(&p->queue, &t->link);
    p->nqueued++;
    n = wakeups_for_submit(p);
  }
  uv_mutex_unlock(&p->mu);
  wake(p, n);
  return stopped ? CODA_ESTATE : 0;
}

int coda__thread_pool_submit_batch(coda__thread_pool *p, coda__queue *tasks) {
  long count = 0;
  coda__queue *q;
  coda__queue_foreach(q, tasks) count++;
  uv_mutex_lock(&p->mu);
  int stopped = p->stop, n = 0;
  if (!stopped && count > 0) {
    coda__queue_move(&p->queue, tasks);
    p->nqueued += count;
    n = wakeups_for_submit(p); /* the woken worker calls a scout for the rest */
  }
  uv_mutex_unlock(&p->mu);
  wake(p, n);
  return stopped ? CODA_ESTATE : 0;
}

void coda__thread_pool_watch(coda__thread_pool *p, uint64_t now_ns) {
  uv_mutex_lock(&p->mu);
  for (int i = 0; i < p->nthreads; i++) {
    coda_task *t = p->running[i];
    if (t && t->deadline_ns && now_ns > t->deadline_ns)
      coda__task_report(t, CODA_STAT_TIMED_OUT,
                        "past its timeout; cancellation requested, the thread goes on");
  }
  uv_mutex_unlock(&p->mu);
}

/* Running tasks get this long after the stop (which comes once the drain
 * deadline has passed, and sets coda_task_cancelled()) to return on their
 * own: docs/tasks.md states it. */
#define STOP_GRACE_MS 100

static int busy_threads(coda__thread_pool *p) {
  int busy = 0;
  uv_mutex_lock(&p->mu);
  for (int i = 0; i < p->nthreads; i++)
    if (p->running[i]) {
      atomic_store(&p->running[i]->cancelled, 1);
      busy++;
    }
  uv_mutex_unlock(&p->mu);
  return busy;
}

/* Frees a stopped pool whose threads have all returned. */
static void pool_destroy(coda__thread_pool *p) {
  uv_cond_destroy(&p->cond);
  uv_cond_destroy(&p->scout_cond);
  uv_mutex_destroy(&p->mu);
  pool_free(p);
}

int coda__thread_pool_stop(coda__thread_pool *p) {
  uv_mutex_lock(&p->mu);
  p->stop = 1;
  uv_cond_broadcast(&p->cond);
  uv_cond_broadcast(&p->scout_cond);
  uv_mutex_unlock(&p->mu);
  int busy;
  for (int waited = 0; (busy = busy_threads(p)) > 0 && waited < STOP_GRACE_MS; waited += 5)
    uv_sleep(5);
  if (busy) {
    /* A thread stuck in a blocking call cannot be stopped. It is left to
     * finish, and nothing it can still touch is freed: the pool, the
     * engine and the app stay until it returns (coda_app_free() refuses
     * until then). */
    for (int i = 0; i < p->nthreads; i++)
      pthread_detach(p->threads[i]);
    coda_log(p->engine->app, CODA_LOG_WARN,
             "shutdown: %d thread tasks still running %d ms after cancellation were left "
             "to finish; coda_app_free() waits for them",
             busy, STOP_GRACE_MS);
  } else {
    for (int i = 0; i < p->nthreads; i++)
      uv_thread_join(&p->threads[i]);
  }
  /* Taken under mu: a thread left running reads the queue (under mu) when
   * its task returns. */
  coda__queue never_ran;
  coda__queue_init(&never_ran);
  uv_mutex_lock(&p->mu);
  coda__queue_move(&never_ran, &p->queue);
  uv_mutex_unlock(&p->mu);
  coda__tasks_drop_queue(&never_ran, "shutdown before it ran");
  if (busy)
    return CODA_ESTATE;
  pool_destroy(p);
  return 0;
}

int coda__thread_pool_release(coda__thread_pool *p) {
  if (atomic_load(&p->live) > 0)
    return CODA_ESTATE;
  pool_destroy(p);
  return 0;
}
