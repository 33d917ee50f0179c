/*
 * inbox.c - cross-thread hand-off to one event loop (see inbox.h).
 */
#include "common/inbox.h"

#include "coda.h"

static void run_all(coda__queue *q, int cancelled) {
  while (!coda__queue_empty(q)) {
    coda__queue *l = coda__queue_head(q);
    coda__queue_remove(l);
    coda__inbox_msg *m = coda__container_of(l, coda__inbox_msg, link);
    m->fn(m, cancelled);
  }
}

static void on_async(uv_async_t *a) {
  coda__inbox *in = a->data;
  coda__queue local;
  coda__queue_init(&local);
  uv_mutex_lock(&in->mu);
  coda__queue_move(&local, &in->queue);
  uv_mutex_unlock(&in->mu);
  run_all(&local, 0);
}

int coda__inbox_init(coda__inbox *in, uv_loop_t *loop) {
  coda__queue_init(&in->queue);
  if (uv_mutex_init(&in->mu) != 0)
    return CODA_ENOMEM;
  if (uv_async_init(loop, &in->async, on_async) != 0) {
    uv_mutex_destroy(&in->mu);
    return CODA_ENOMEM;
  }
  in->async.data = in;
  uv_unref((uv_handle_t *)&in->async);
  in->open = 1;
  return 0;
}

int coda__inbox_post(coda__inbox *in, coda__inbox_msg *msg, coda__inbox_fn fn) {
  msg->fn = fn;
  uv_mutex_lock(&in->mu);
  int open = in->open;
  if (open) {
    coda__queue_insert_tail(&in->queue, &msg->link);
    uv_async_send(&in->async);
  }
  uv_mutex_unlock(&in->mu);
  return open ? 0 : CODA_ESTATE;
}

void coda__inbox_close(coda__inbox *in) {
  coda__queue left;
  coda__queue_init(&left);
  uv_mutex_lock(&in->mu);
  if (!in->open) {
    uv_mutex_unlock(&in->mu);
    return;
  }
  in->open = 0;
  coda__queue_move(&left, &in->queue);
  uv_mutex_unlock(&in->mu);
  run_all(&left, 1);
  if (!uv_is_closing((uv_handle_t *)&in->async))
    uv_close((uv_handle_t *)&in->async, NULL);
}

void coda__inbox_destroy(coda__inbox *in) { uv_mutex_destroy(&in->mu); }
