/*
 * loop_executor.c - the LOOP executor: tasks that run on the event loop of
 * the connection whose response they follow (or any loop of the engine for
 * a task with no response). They must not block; one that returns
 * CODA_PENDING finishes later through coda_task_done(), from a libuv
 * callback on the same loop (a timer, a socket, libcurl's multi interface).
 *
 * Any thread may submit (the previous task of the list may have run on the
 * thread pool): the task is posted to the loop's inbox (common/inbox.h),
 * whose one coalescing wake-up drains it in full. The same file batches the
 * THREAD tasks a loop starts during one iteration (one hand-off to the pool
 * per iteration).
 *
 * Threads: everything here but coda__task_loop_post() and
 * coda__loop_submit() runs on the loop's thread, except
 * coda__loop_executor_free_pending() and _destroy(), which run once the
 * loop has ended. Posts take the task loop's `mu` and are refused once the
 * executor has closed: the inbox belongs to the loop's owner (the server
 * frees it with its loops), and a post may come from a thread that
 * outlives the loop (a THREAD task left running at shutdown).
 */
#include "tasks/task.h"

#include <stdlib.h>

static void close_timer(uv_handle_t *h) { free(h); }

static void stop_timer(coda_task *t) {
  if (!t->timer)
    return;
  uv_timer_stop(t->timer);
  uv_close((uv_handle_t *)t->timer, close_timer);
  t->timer = NULL;
}

static void on_timeout(uv_timer_t *timer) {
  coda_task *t = timer->data;
  coda__task_report(t, CODA_STAT_TIMED_OUT, "no coda_task_done() before its timeout");
  t->orphaned = 1; /* freed when coda_task_done() finally comes, or at the end */
  stop_timer(t);   /* its handle must not outlive the loop */
  coda__task_finish(t, CODA_ETIMEDOUT, NULL);
}

static void run_task(coda__task_loop *tl, coda_task *t) {
  coda__task_begin(t);
  coda__log_fields f;
  coda__task_log_fields(t, &f);
  const coda__log_fields *outer = coda__log_scope(&f);
  int rc = t->def->fn(t);
  coda__log_scope(outer);
  if (rc != CODA_PENDING) {
    if (t->deadline_ns && uv_hrtime() > t->deadline_ns)
      coda__task_report(t, CODA_STAT_TIMED_OUT, "blocked its loop past its timeout");
    coda__task_finish(t, rc, NULL);
    return;
  }
  t->pending = 1;
  coda__queue_insert_tail(&tl->pending, &t->link);
  if (t->def->timeout_ms <= 0)
    return;
  t->timer = malloc(sizeof *t->timer);
  if (!t->timer)
    return; /* no timeout then; the task still finishes on its own */
  uv_timer_init(tl->uv, t->timer);
  t->timer->data = t;
  uv_timer_start(t->timer, on_timeout, (uint64_t)t->def->timeout_ms, 0);
}

void coda_task_done(coda_task *t, int rc, const char *message) {
  stop_timer(t);
  if (t->pending)
    coda__queue_remove(&t->link);
  t->pending = 0;
  if (t->orphaned) { /* its timeout already finished it */
    coda__task_free(t);
    return;
  }
  coda__task_finish(t, rc > 0 ? 0 : rc, message);
}

void coda__loop_executor_free_pending(coda__task_loop *tl) {
  while (!coda__queue_empty(&tl->pending)) {
    coda__queue *q = coda__queue_head(&tl->pending);
    coda__queue_remove(q);
    coda_task *t = coda__container_of(q, coda_task, link);
    t->pending = 0;
    if (t->orphaned)
      coda__task_free(t);
    else
      coda__task_drop_advance(t, "its loop ended before coda_task_done()");
  }
}

/* Called by the executor's callbacks, on the loop's thread: from then on
 * THREAD tasks started there can be batched. */
static void learn_thread(coda__task_loop *tl) {
  if (atomic_load_explicit(&tl->self_known, memory_order_relaxed))
    return;
  tl->self = uv_thread_self();
  atomic_store_explicit(&tl->self_known, 1, memory_order_release);
}

static void on_post(coda__inbox_msg *m, int cancelled) {
  coda_task *t = coda__container_of(m, coda_task, post);
  if (cancelled) {
    coda__task_drop_advance(t, "shutdown before it ran");
    return;
  }
  learn_thread(t->loop);
  run_task(t->loop, t);
}

int coda__task_loop_post(coda__task_loop *tl, coda__inbox_msg *msg, coda__inbox_fn fn) {
  uv_mutex_lock(&tl->mu);
  int rc = tl->closed ? CODA_ESTATE : coda__inbox_post(tl->inbox, msg, fn);
  uv_mutex_unlock(&tl->mu);
  return rc;
}

int coda__loop_submit(coda__task_loop *tl, coda_task *t) {
  return coda__task_loop_post(tl, &t->post, on_post);
}

/* A closed loop's batch is never flushed again: a THREAD task started
 * while the loop ends (a LOOP task before it in its list was cancelled by
 * the inbox's close) goes straight to the pool. `closed` is set by the
 * loop's own thread, so reading it here, on that thread, needs no lock. */
int coda__loop_can_defer(const coda__task_loop *tl) {
  if (!atomic_load_explicit(&tl->self_known, memory_order_acquire))
    return 0;
  uv_thread_t me = uv_thread_self();
  return uv_thread_equal(&me, &tl->self) && !tl->closed;
}

static void on_idle(uv_idle_t *h) { (void)h; }

void coda__loop_defer_thread_task(coda__task_loop *tl, coda_task *t) {
  if (coda__queue_empty(&tl->thread_batch))
    uv_idle_start(&tl->thread_batch_idle, on_idle);
  coda__queue_insert_tail(&tl->thread_batch, &t->link);
}

static void flush_thread_batch(coda__task_loop *tl) {
  if (coda__queue_empty(&tl->thread_batch))
    return;
  uv_idle_stop(&tl->thread_batch_idle);
  coda__thread_pool *pool = atomic_load(&tl->engine->threads);
  if (!pool || coda__thread_pool_submit_batch(pool, &tl->thread_batch) != 0)
    coda__tasks_drop_queue(&tl->thread_batch, "the thread pool has stopped");
}

static void on_check(uv_check_t *c) {
  coda__task_loop *tl = c->data;
  learn_thread(tl);
  flush_thread_batch(tl);
}

int coda__loop_executor_init(coda__task_loop *tl) {
  coda__queue_init(&tl->thread_batch);
  coda__queue_init(&tl->pending);
  if (uv_mutex_init(&tl->mu) != 0)
    return CODA_ENOMEM;
  uv_check_init(tl->uv, &tl->thread_batch_check);
  tl->thread_batch_check.data = tl;
  uv_check_start(&tl->thread_batch_check, on_check);
  uv_unref((uv_handle_t *)&tl->thread_batch_check);
  uv_idle_init(tl->uv, &tl->thread_batch_idle);
  return 0;
}

/* The loop is ending (the drain is over): the batch goes to the pool, the
 * handles close. LOOP tasks still in the inbox are dropped when its owner
 * closes it. Pending LOOP tasks lose their timeout timers, which would keep
 * the loop running until they fire, past the drain deadline: such a task
 * ends when its own handles call coda_task_done() before the loop ends, or
 * is dropped at the engine's stop (coda__loop_executor_free_pending). */
void coda__loop_executor_close(coda__task_loop *tl) {
  uv_mutex_lock(&tl->mu);
  int was_closed = tl->closed;
  tl->closed = 1;
  uv_mutex_unlock(&tl->mu);
  if (was_closed)
    return;
  for (coda__queue *q = tl->pending.next; q != &tl->pending; q = q->next)
    stop_timer(coda__container_of(q, coda_task, link));
  flush_thread_batch(tl);
  if (!uv_is_closing((uv_handle_t *)&tl->thread_batch_check))
    uv_close((uv_handle_t *)&tl->thread_batch_check, NULL);
  if (!uv_is_closing((uv_handle_t *)&tl->thread_batch_idle))
    uv_close((uv_handle_t *)&tl->thread_batch_idle, NULL);
}

void coda__loop_executor_destroy(coda__task_loop *tl) { uv_mutex_destroy(&tl->mu); }
