/*
 * server.h - the running server: one event loop per thread, each with its
 * own SO_REUSEPORT listener, plus a control loop on the thread that called
 * coda_app_run() for signals and shutdown.
 *
 * Loops share nothing mutable. The control loop talks to a worker loop only
 * through the worker's `wakeup` async handle and the atomic `stop_level`.
 */
#ifndef CODA_SERVER_SERVER_H
#define CODA_SERVER_SERVER_H

#include "app/app.h"
#include "common/buf.h"
#include "common/queue.h"

#include <stdatomic.h>
#include <time.h>
#include <uv.h>

typedef struct coda__loop {
  uv_loop_t uv;
  coda_app *app;
  coda__server *server;
  int index;
  uv_thread_t thread;
  int listen_fd;
  uv_tcp_t listener;
  uv_async_t wakeup;    /* from the control loop: look at stop_level */
  uv_timer_t sweep;     /* timeouts, checked every sweep_ms */
  uv_timer_t deadline;  /* the graceful shutdown deadline */
  uv_prepare_t prepare; /* once per iteration: flush the access log */
  atomic_int stop_level; /* 0 run, 1 graceful, 2 now */
  int stopping;
  int responses_done; /* stopping and no connection left */
  int listener_closed;
  int accept_pending; /* a connection waits in the backlog (limit reached) */
  coda__queue conns;
  long nconns;
  uint64_t next_request;
  time_t date_second;
  char date_line[40]; /* "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" */
  size_t date_len;
  coda__buf log; /* access log lines of this iteration */
  int cut_connections; /* connections closed at the shutdown deadline */
  atomic_ulong requests; /* served, for /stats (written by this loop only) */
  /* LOOP executor: tasks handed to this loop from any thread. task_mu
   * protects task_inbox; task_async wakes the loop, coalesced, and its
   * callback drains the inbox in full. */
  uv_mutex_t task_mu;
  coda__queue task_inbox;
  uv_async_t task_async;
  int task_inbox_open;
  /* THREAD tasks started on this loop during the current iteration,
   * submitted together by thread_batch_check (loop thread only). */
  coda__queue thread_batch;
  uv_check_t thread_batch_check;
  uv_idle_t thread_batch_idle; /* active while the batch is not empty: the
                                  next poll must not block before the flush */
  uv_thread_t self;
  /* Held responses whose durable tasks the store thread has written (or
   * failed to write): hold_mu protects hold_inbox and hold_inbox_open;
   * hold_async wakes the loop, which drains the inbox in full. */
  uv_mutex_t hold_mu;
  coda__queue hold_inbox;
  uv_async_t hold_async;
  int hold_inbox_open;
} coda__loop;

struct coda__server {
  coda_app *app;
  int nloops;
  coda__loop *loops;
  uv_loop_t control;
  uv_async_t stop_async;  /* coda_app_stop() */
  uv_async_t done_async;  /* a worker loop finished its responses */
  uv_async_t drain_async; /* the task engine went idle while draining */
  uv_timer_t drain_timer; /* the task drain deadline */
  uv_timer_t watch_timer; /* thread task timeouts */
  int drain_started;
  int drain_finished;
  uv_signal_t sigint;
  uv_signal_t sigterm;
  atomic_int stop_requests;
  atomic_int control_ready; /* stop_async may be sent */
  atomic_int loops_done;
  int handled_stop;
};

/* Refreshes the cached Date line when the second changed. */
void coda__loop_update_date(coda__loop *loop);

/* Hands the access log lines buffered so far to the logger, so that lines a
 * task logs next come after its request's line. */
void coda__loop_flush_log(coda__loop *loop);

/* A connection closed: accept a waiting one, or finish shutting down. */
void coda__loop_conn_closed(coda__loop *loop);

#endif /* CODA_SERVER_SERVER_H */
