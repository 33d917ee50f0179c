/*
 * thread_pool.c - the THREAD executor: a fixed set of coda's own threads
 * (not libuv's shared pool, which file system calls also use) taking tasks
 * from one FIFO queue.
 *
 * Lock rule: `mu` protects `queue`, `stop` and `running[]`. A worker holds
 * it to take a task and to mark its slot, never while the task runs or
 * while finishing it (finishing may submit the next task of the same list
 * back to this pool). The watchdog (control loop thread) holds it to look
 * at running tasks' deadlines.
 */
#include "tasks/task.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

typedef struct worker_slot {
  coda__thread_pool *pool;
  int index;
} worker_slot;

struct coda__thread_pool {
  coda__engine *engine;
  uv_mutex_t mu;
  uv_cond_t cond;
  coda__queue queue;
  int stop;
  int idle;    /* workers waiting on cond */
  int wakeups; /* signals sent and not yet taken by a waiting worker */
  int nthreads;
  atomic_int live; /* workers that have not returned (detached ones too) */
  uv_thread_t *threads;
  worker_slot *slots;
  coda_task **running;
};

/* How many waiting workers to wake for n new tasks: no more than are idle
 * and not already woken. Awake workers take queued tasks before sleeping and
 * wake one more while work is left, so a busy pool costs the submitter no
 * wake-up at all and a burst costs one. Called with mu. */
static int wakeups_for(coda__thread_pool *p, int n) {
  int can = p->idle - p->wakeups;
  if (n > can)
    n = can;
  if (n < 0)
    n = 0;
  p->wakeups += n;
  return n;
}

/* Signals after unlocking, so a woken worker does not block on mu. */
static void wake(coda__thread_pool *p, int n) {
  for (int i = 0; i < n; i++)
    uv_cond_signal(&p->cond);
}

static void worker_main(void *arg) {
  worker_slot *slot = arg;
  coda__thread_pool *p = slot->pool;
  /* SCHED_BATCH: a woken worker does not preempt the event loop thread on
   * the same core; it runs when the loop waits for I/O. Responses stay
   * fast and tasks started together run together. */
  struct sched_param sp = {0};
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  uv_mutex_lock(&p->mu);
  for (;;) {
    while (coda__queue_empty(&p->queue) && !p->stop) {
      p->idle++;
      uv_cond_wait(&p->cond, &p->mu);
      p->idle--;
      if (p->wakeups > 0)
        p->wakeups--;
    }
    if (p->stop)
      break;
    coda__queue *q = coda__queue_head(&p->queue);
    coda__queue_remove(q);
    coda_task *t = coda__container_of(q, coda_task, link);
    p->running[slot->index] = t;
    coda__task_begin(t); /* under mu: the watchdog reads the deadline */
    /* More waiting: pass the wake-up on (one at a time, so a burst of tiny
     * tasks is drained by one thread instead of waking them all). */
    int more = !coda__queue_empty(&p->queue) ? wakeups_for(p, 1) : 0;
    uv_mutex_unlock(&p->mu);
    wake(p, more);
    int rc = t->def->fn(t);
    uv_mutex_lock(&p->mu);
    p->running[slot->index] = NULL;
    uv_mutex_unlock(&p->mu);
    coda__task_finish(t, rc > 0 ? 0 : rc, NULL);
    uv_mutex_lock(&p->mu);
  }
  uv_mutex_unlock(&p->mu);
  atomic_fetch_sub(&p->live, 1); /* the last touch of p: it may be freed next */
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
    free(p->threads);
    free(p->slots);
    free(p->running);
    free(p);
    return NULL;
  }
  uv_cond_init(&p->cond);
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
    n = wakeups_for(p, 1);
  }
  uv_mutex_unlock(&p->mu);
  wake(p, n);
  return stopped ? CODA_ESTATE : 0;
}

int coda__thread_pool_submit_batch(coda__thread_pool *p, coda__queue *tasks) {
  int some = !coda__queue_empty(tasks);
  uv_mutex_lock(&p->mu);
  int stopped = p->stop, n = 0;
  if (!stopped) {
    coda__queue_move(&p->queue, tasks);
    n = wakeups_for(p, some); /* the woken worker wakes the next */
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

static void pool_free(coda__thread_pool *p) {
  uv_cond_destroy(&p->cond);
  uv_mutex_destroy(&p->mu);
  free(p->threads);
  free(p->slots);
  free(p->running);
  free(p);
}

int coda__thread_pool_stop(coda__thread_pool *p) {
  uv_mutex_lock(&p->mu);
  p->stop = 1;
  uv_cond_broadcast(&p->cond);
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
  pool_free(p);
  return 0;
}

int coda__thread_pool_release(coda__thread_pool *p) {
  if (atomic_load(&p->live) > 0)
    return CODA_ESTATE;
  pool_free(p);
  return 0;
}
