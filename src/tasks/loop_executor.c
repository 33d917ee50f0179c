/*
 * loop_executor.c - the LOOP executor: tasks that run on the event loop of
 * the connection whose response they follow. They must not block; one that
 * returns CODA_TASK_PENDING finishes later through coda_task_done(), from a
 * libuv callback on the same loop (a timer, a socket, libcurl's multi
 * interface).
 *
 * Any thread may submit (the previous task of the list may have run on the
 * thread pool): the task goes into the loop's inbox under task_mu and one
 * coalescing uv_async_t wakes the loop, which drains the inbox in full.
 */
#include "server/server.h"
#include "tasks/task.h"

#include <stdlib.h>

static void on_timeout(uv_timer_t *timer) {
  coda_task *t = timer->data;
  coda__task_report(t, CODA_STAT_TIMED_OUT, "no coda_task_done() before its timeout");
  t->orphaned = 1; /* freed when coda_task_done() finally comes */
  coda__task_finish(t, CODA_ETIMEDOUT, NULL);
}

static void run_task(coda__loop *loop, coda_task *t) {
  coda__task_begin(t);
  int rc = t->def->fn(t);
  if (rc != CODA_TASK_PENDING) {
    if (t->deadline_ns && uv_hrtime() > t->deadline_ns)
      coda__task_report(t, CODA_STAT_TIMED_OUT, "blocked its loop past its timeout");
    coda__task_finish(t, rc, NULL);
    return;
  }
  t->pending = 1;
  if (t->def->timeout_ms <= 0)
    return;
  t->timer = malloc(sizeof *t->timer);
  if (!t->timer)
    return; /* no timeout then; the task still finishes on its own */
  uv_timer_init(&loop->uv, t->timer);
  t->timer->data = t;
  uv_timer_start(t->timer, on_timeout, (uint64_t)t->def->timeout_ms, 0);
}

static void on_inbox(uv_async_t *a) {
  coda__loop *loop = a->data;
  coda__queue local;
  coda__queue_init(&local);
  uv_mutex_lock(&loop->task_mu);
  coda__queue_move(&local, &loop->task_inbox);
  uv_mutex_unlock(&loop->task_mu);
  while (!coda__queue_empty(&local)) {
    coda__queue *q = coda__queue_head(&local);
    coda__queue_remove(q);
    run_task(loop, coda__container_of(q, coda_task, link));
  }
}

int coda__loop_on_thread(const coda__loop *loop) {
  uv_thread_t me = uv_thread_self();
  return uv_thread_equal(&me, &loop->self);
}

static void on_idle(uv_idle_t *h) { (void)h; }

void coda__loop_defer_thread_task(coda__loop *loop, coda_task *t) {
  if (coda__queue_empty(&loop->thread_batch))
    uv_idle_start(&loop->thread_batch_idle, on_idle);
  coda__queue_insert_tail(&loop->thread_batch, &t->link);
}

static void flush_thread_batch(coda__loop *loop) {
  if (coda__queue_empty(&loop->thread_batch))
    return;
  uv_idle_stop(&loop->thread_batch_idle);
  coda__engine *e = loop->app->engine;
  if (!e->threads || coda__thread_pool_submit_batch(e->threads, &loop->thread_batch) != 0)
    coda__tasks_drop_queue(&loop->thread_batch, "the thread pool has stopped");
}

static void on_check(uv_check_t *c) { flush_thread_batch(c->data); }

int coda__loop_executor_init(coda__loop *loop) {
  coda__queue_init(&loop->thread_batch);
  uv_check_init(&loop->uv, &loop->thread_batch_check);
  loop->thread_batch_check.data = loop;
  uv_check_start(&loop->thread_batch_check, on_check);
  uv_unref((uv_handle_t *)&loop->thread_batch_check);
  uv_idle_init(&loop->uv, &loop->thread_batch_idle);
  coda__queue_init(&loop->task_inbox);
  if (uv_mutex_init(&loop->task_mu) != 0)
    return CODA_ENOMEM;
  if (uv_async_init(&loop->uv, &loop->task_async, on_inbox) != 0) {
    uv_mutex_destroy(&loop->task_mu);
    return CODA_ENOMEM;
  }
  loop->task_async.data = loop;
  /* The inbox does not keep the loop alive; open connections and the
   * shutdown sequence do. */
  uv_unref((uv_handle_t *)&loop->task_async);
  uv_mutex_lock(&loop->task_mu);
  loop->task_inbox_open = 1;
  uv_mutex_unlock(&loop->task_mu);
  return 0;
}

int coda__loop_submit(coda__loop *loop, coda_task *t) {
  uv_mutex_lock(&loop->task_mu);
  int open = loop->task_inbox_open;
  if (open) {
    coda__queue_insert_tail(&loop->task_inbox, &t->link);
    uv_async_send(&loop->task_async);
  }
  uv_mutex_unlock(&loop->task_mu);
  return open ? 0 : CODA_ESTATE;
}

/* Closes the inbox (the loop is ending): what is in it is dropped. */
void coda__loop_executor_close(coda__loop *loop) {
  flush_thread_batch(loop);
  if (!uv_is_closing((uv_handle_t *)&loop->thread_batch_check))
    uv_close((uv_handle_t *)&loop->thread_batch_check, NULL);
  if (!uv_is_closing((uv_handle_t *)&loop->thread_batch_idle))
    uv_close((uv_handle_t *)&loop->thread_batch_idle, NULL);
  uv_mutex_lock(&loop->task_mu);
  loop->task_inbox_open = 0;
  uv_mutex_unlock(&loop->task_mu);
  coda__tasks_drop_queue(&loop->task_inbox, "shutdown before it ran");
  if (!uv_is_closing((uv_handle_t *)&loop->task_async))
    uv_close((uv_handle_t *)&loop->task_async, NULL);
}
