/*
 * inbox.h - "run this on that loop": the one way any thread hands work to
 * an event loop (libuv threadpool.c's pattern: a queue under a mutex and
 * one coalescing uv_async_t whose callback drains the queue in full).
 *
 * Every layer above the server posts through the inbox of the loop it
 * targets (the LOOP executor's tasks, the store thread's answers to held
 * responses); each message carries its own callback, so the inbox knows
 * nothing of what it carries.
 *
 * Threads: coda__inbox_post() from any thread; the callbacks run on the
 * loop's thread, or on the thread that closes the inbox (cancelled = 1) for
 * messages that arrived after the loop's last turn. Lock rule: `mu` protects
 * `queue` and `open`, and is never held while a callback runs.
 */
#ifndef CODA_COMMON_INBOX_H
#define CODA_COMMON_INBOX_H

#include "common/queue.h"

#include <uv.h>

typedef struct coda__inbox_msg coda__inbox_msg;

/* Runs a message on the loop (cancelled 0) or tells it that the loop ended
 * before it could run (cancelled 1). The message belongs to the callback. */
typedef void (*coda__inbox_fn)(coda__inbox_msg *msg, int cancelled);

struct coda__inbox_msg {
  coda__queue link;
  coda__inbox_fn fn;
};

typedef struct coda__inbox {
  uv_mutex_t mu;
  coda__queue queue;
  uv_async_t async;
  int open;
} coda__inbox;

/* Opens the inbox on `loop` (on the loop's thread, or before it runs). The
 * async handle is unreferenced: an inbox never keeps its loop alive. */
int coda__inbox_init(coda__inbox *in, uv_loop_t *loop);

/* Queues msg to run fn on the loop and wakes it. Any thread. Returns 0, or
 * CODA_ESTATE once the inbox is closed (msg was not queued: the caller
 * still owns it). */
int coda__inbox_post(coda__inbox *in, coda__inbox_msg *msg, coda__inbox_fn fn);

/* Closes the inbox: later posts are refused; messages still queued run
 * with cancelled = 1, here; the async handle is closed. Loop thread. */
void coda__inbox_close(coda__inbox *in);

/* Frees the mutex once the loop has run the close callbacks. */
void coda__inbox_destroy(coda__inbox *in);

#endif /* CODA_COMMON_INBOX_H */
