/*
 * server.c - binding, the worker loops, signals and graceful shutdown.
 *
 * Threads: coda_app_run() runs the control loop on the caller's thread
 * (signals, coda_app_stop()) and one worker thread per event loop. Each
 * worker owns its loop, listener and connections outright; the control
 * loop reaches a worker only through its `wakeup` async and `stop_level`.
 * coda_app_stop() touches only atomics and uv_async_send(), both safe from
 * a signal handler.
 *
 * Each worker has its own listening socket on the same port with
 * SO_REUSEPORT, so the kernel spreads connections over the loops and no
 * accept lock exists. libuv 1.44 has no flag for it, so the sockets are
 * made and bound here and handed to libuv with uv_tcp_open().
 */
#include "server/server.h"

#include "app/router.h"
#include "server/conn.h"
#include "tasks/task.h"

#include <errno.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024

void coda__loop_update_date(coda__loop *loop) {
  time_t now = time(NULL);
  if (now == loop->date_second)
    return;
  struct tm tm;
  gmtime_r(&now, &tm);
  loop->date_len = strftime(loop->date_line, sizeof loop->date_line,
                            "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
  loop->date_second = now;
}

/* ---- binding --------------------------------------------------------- */

static int open_listener(const struct sockaddr_storage *addr, int port) {
  struct sockaddr_storage ss = *addr;
  socklen_t len;
  if (ss.ss_family == AF_INET6) {
    ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
    len = sizeof(struct sockaddr_in6);
  } else {
    ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
    len = sizeof(struct sockaddr_in);
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      bind(fd, (struct sockaddr *)&ss, len) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

static int bound_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void derive_limits(coda_app *app) {
  app->limits.max_header_bytes = (uint32_t)app->opt.max_header_bytes;
  app->limits.max_headers = (uint32_t)app->opt.max_headers;
  app->limits.max_uri = (uint32_t)app->opt.max_uri;
  app->limits.max_body = (uint64_t)app->opt.max_body;
  if (app->opt.threads == 0)
    app->opt.threads = (long)uv_available_parallelism();
}

static void server_free(coda__server *s) {
  if (!s)
    return;
  for (int i = 0; i < s->nloops; i++)
    if (s->loops[i].listen_fd >= 0)
      close(s->loops[i].listen_fd);
  free(s->loops);
  free(s);
}

int coda_app_bind(coda_app *app) {
  coda_app_worker(app); /* a worker process never gets past this */
  if (app->server)
    return 0;
  derive_limits(app);
  coda__server *s = calloc(1, sizeof *s);
  if (!s)
    return CODA_ENOMEM;
  s->app = app;
  s->nloops = (int)app->opt.threads;
  s->loops = calloc((size_t)s->nloops, sizeof *s->loops);
  if (!s->loops) {
    free(s);
    return CODA_ENOMEM;
  }
  for (int i = 0; i < s->nloops; i++)
    s->loops[i].listen_fd = -1;
  int port = app->listen_port;
  for (int i = 0; i < s->nloops; i++) {
    int fd = open_listener(&app->addr, port);
    if (fd < 0) {
      coda_log(app, CODA_LOG_ERROR, "cannot listen on %s:%d: %s",
               app->listen_host, port, strerror(errno));
      server_free(s);
      return CODA_EADDR;
    }
    s->loops[i].listen_fd = fd;
    if (i == 0)
      port = bound_port(fd);
  }
  app->bound_port = port;
  app->server = s;
  return 0;
}

/* ---- worker loops ---------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) { (void)h; }

static void close_if_open(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, on_handle_closed);
}

/* Shutdown, per loop: once stopping and its last connection is gone, the
 * loop reports "responses done" to the control loop but stays up, because
 * LOOP tasks may still arrive or be pending. It ends when the control loop
 * says so (stop_level 3), after the task drain. */
static void maybe_finish(coda__loop *loop) {
  if (!loop->stopping || loop->nconns > 0 || loop->responses_done)
    return;
  loop->responses_done = 1;
  close_if_open((uv_handle_t *)&loop->listener);
  close_if_open((uv_handle_t *)&loop->sweep);
  close_if_open((uv_handle_t *)&loop->deadline);
  atomic_fetch_add(&loop->server->loops_done, 1);
  uv_async_send(&loop->server->done_async);
}

static void on_prepare_flush(coda__loop *loop);

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* The end of the loop: the inbox closes (dropping what is left) and coda's
 * own handles close. Handles the application started (a timer that will
 * end a stream, a LOOP task's socket) run their course: closing them here
 * would leak what their callbacks free. */
static void loop_exit(coda__loop *loop) {
  coda__loop_executor_close(loop);
  coda__durable_loop_close(loop);
  on_prepare_flush(loop);
  close_if_open((uv_handle_t *)&loop->listener);
  close_if_open((uv_handle_t *)&loop->sweep);
  close_if_open((uv_handle_t *)&loop->deadline);
  close_if_open((uv_handle_t *)&loop->prepare);
  close_if_open((uv_handle_t *)&loop->wakeup);
}

static void accept_one(coda__loop *loop) {
  int rc = coda__conn_accept(loop);
  if (rc)
    coda_log(loop->app, CODA_LOG_WARN, "accept failed: %s", coda_strerror(rc));
}

/* At the connection limit: close the oldest idle connection to make room,
 * or leave the new one in the backlog (libuv stops polling the listener
 * until we accept it). */
static int make_room(coda__loop *loop) {
  coda__queue *q;
  coda__queue_foreach(q, &loop->conns) {
    coda__conn *c = coda__container_of(q, coda__conn, link);
    if (!c->closed && coda__conn_idle(c)) {
      coda__conn_shutdown(c, 1);
      return 1;
    }
  }
  return 0;
}

static void on_connection(uv_stream_t *listener, int status) {
  coda__loop *loop = listener->data;
  if (status < 0 || loop->stopping)
    return;
  if (atomic_load(&loop->app->nconnections) >= loop->app->opt.max_connections &&
      !make_room(loop)) {
    loop->accept_pending = 1;
    return;
  }
  accept_one(loop);
}

void coda__loop_conn_closed(coda__loop *loop) {
  loop->nconns--;
  if (loop->accept_pending && !loop->stopping &&
      atomic_load(&loop->app->nconnections) < loop->app->opt.max_connections) {
    loop->accept_pending = 0;
    accept_one(loop);
  }
  maybe_finish(loop);
}

static void shutdown_connections(coda__loop *loop, int now) {
  coda__queue *q, *next;
  for (q = loop->conns.next; q != &loop->conns; q = next) {
    next = q->next;
    coda__conn *c = coda__container_of(q, coda__conn, link);
    if (now && !c->closed)
      loop->cut_connections++;
    coda__conn_shutdown(c, now);
  }
}

static void on_deadline(uv_timer_t *t) {
  coda__loop *loop = t->data;
  shutdown_connections(loop, 1);
}

static void on_wakeup(uv_async_t *a) {
  coda__loop *loop = a->data;
  int level = atomic_load(&loop->stop_level);
  if (level == 0)
    return;
  if (level >= 3) {
    loop_exit(loop);
    return;
  }
  if (!loop->stopping) {
    loop->stopping = 1;
    close_if_open((uv_handle_t *)&loop->listener);
    uv_timer_start(&loop->deadline, on_deadline,
                   (uint64_t)loop->app->opt.shutdown_timeout, 0);
  }
  shutdown_connections(loop, level >= 2);
  maybe_finish(loop);
}

static void on_sweep(uv_timer_t *t) {
  coda__loop *loop = t->data;
  uint64_t now = uv_now(&loop->uv);
  coda__queue *q, *next;
  for (q = loop->conns.next; q != &loop->conns; q = next) {
    next = q->next;
    coda__conn_check_timeouts(coda__container_of(q, coda__conn, link), now);
  }
  if (loop->accept_pending && !loop->stopping &&
      atomic_load(&loop->app->nconnections) < loop->app->opt.max_connections) {
    loop->accept_pending = 0;
    accept_one(loop);
  }
}

/* Once per loop iteration: hand this iteration's access log lines to the
 * logger thread in one piece. */
static void on_prepare_flush(coda__loop *loop) {
  if (loop->log.len) {
    coda__logger_write(&loop->app->logger, loop->log.base, loop->log.len);
    loop->log.len = 0;
  }
}

static void on_prepare(uv_prepare_t *p) { on_prepare_flush(p->data); }

void coda__loop_flush_log(coda__loop *loop) { on_prepare_flush(loop); }

static uint64_t sweep_interval(const coda__options *o) {
  long m = o->header_timeout;
  long others[] = {o->keepalive_timeout, o->body_timeout, o->send_timeout};
  for (size_t i = 0; i < 3; i++)
    if (others[i] < m)
      m = others[i];
  m /= 4;
  return (uint64_t)(m < 10 ? 10 : m > 1000 ? 1000 : m);
}

static void worker_main(void *arg) {
  coda__loop *loop = arg;
  coda__server *s = loop->server;
  loop->self = uv_thread_self();
  uv_run(&loop->uv, UV_RUN_DEFAULT);
  on_prepare_flush(loop); /* the last lines */
  (void)s;
}

static int loop_init(coda__server *s, int index) {
  coda__loop *loop = &s->loops[index];
  loop->app = s->app;
  loop->server = s;
  loop->index = index;
  coda__queue_init(&loop->conns);
  int rc = uv_loop_init(&loop->uv);
  if (rc)
    return CODA_ENOMEM;
  uv_tcp_init(&loop->uv, &loop->listener);
  loop->listener.data = loop;
  rc = uv_tcp_open(&loop->listener, loop->listen_fd);
  if (rc == 0) {
    loop->listen_fd = -1; /* libuv owns it now */
    rc = uv_listen((uv_stream_t *)&loop->listener, LISTEN_BACKLOG, on_connection);
  }
  uv_async_init(&loop->uv, &loop->wakeup, on_wakeup);
  loop->wakeup.data = loop;
  uv_timer_init(&loop->uv, &loop->sweep);
  loop->sweep.data = loop;
  uv_timer_init(&loop->uv, &loop->deadline);
  loop->deadline.data = loop;
  uv_prepare_init(&loop->uv, &loop->prepare);
  loop->prepare.data = loop;
  uv_prepare_start(&loop->prepare, on_prepare);
  if (coda__loop_executor_init(loop) != 0 || coda__durable_loop_init(loop) != 0)
    rc = rc ? rc : UV_ENOMEM;
  uint64_t every = sweep_interval(&s->app->opt);
  uv_timer_start(&loop->sweep, on_sweep, every, every);
  uv_unref((uv_handle_t *)&loop->deadline);
  if (rc) {
    coda_log(s->app, CODA_LOG_ERROR, "listen failed: %s", uv_strerror(rc));
    return CODA_EADDR;
  }
  return 0;
}

static void loop_close(coda__loop *loop) {
  /* Close whatever a failed start left open, then drain the callbacks. */
  uv_walk(&loop->uv, close_any, NULL);
  uv_run(&loop->uv, UV_RUN_DEFAULT);
  uv_loop_close(&loop->uv);
  coda__buf_free(&loop->log);
}

/* ---- control loop ---------------------------------------------------- */

static void finish_drain(coda__server *s);

static void request_stop(coda__server *s) {
  int n = atomic_load(&s->stop_requests);
  if (n == s->handled_stop || s->drain_finished)
    return;
  s->handled_stop = n;
  int level = n >= 2 ? 2 : 1;
  if (level == 2 && s->drain_started) {
    coda_log(s->app, CODA_LOG_INFO, "Second stop: not waiting for tasks");
    finish_drain(s); /* a second signal during the drain ends it now */
    return;
  }
  coda_log(s->app, CODA_LOG_INFO, level == 1
                                      ? "Shutting down (finishing in-flight requests)"
                                      : "Shutting down now");
  for (int i = 0; i < s->nloops; i++) {
    atomic_store(&s->loops[i].stop_level, level);
    uv_async_send(&s->loops[i].wakeup);
  }
}

static void on_stop_async(uv_async_t *a) { request_stop(a->data); }

static void on_signal(uv_signal_t *h, int signum) {
  (void)signum;
  coda__server *s = h->data;
  atomic_fetch_add(&s->stop_requests, 1);
  request_stop(s);
}

static void close_control(coda__server *s) {
  close_if_open((uv_handle_t *)&s->stop_async);
  close_if_open((uv_handle_t *)&s->done_async);
  close_if_open((uv_handle_t *)&s->drain_async);
  close_if_open((uv_handle_t *)&s->sigint);
  close_if_open((uv_handle_t *)&s->sigterm);
  close_if_open((uv_handle_t *)&s->drain_timer);
  close_if_open((uv_handle_t *)&s->watch_timer);
}

/* The end of the task drain, by idleness or deadline: report what did not
 * run, then end every loop. */
static void finish_drain(coda__server *s) {
  if (s->drain_finished)
    return;
  s->drain_finished = 1;
  atomic_store(&s->app->engine->draining, 0);
  coda__engine_report_unfinished(s->app->engine);
  for (int i = 0; i < s->nloops; i++) {
    atomic_store(&s->loops[i].stop_level, 3);
    uv_async_send(&s->loops[i].wakeup);
  }
  close_control(s);
}

static void on_drain_idle(uv_async_t *a) {
  coda__server *s = a->data;
  if (atomic_load(&s->app->engine->outstanding) == 0)
    finish_drain(s);
}

static void on_drain_deadline(uv_timer_t *t) { finish_drain(t->data); }

/* Every loop has finished its responses: give tasks until the drain
 * deadline (none after a second signal). */
static void on_done_async(uv_async_t *a) {
  coda__server *s = a->data;
  if (atomic_load(&s->loops_done) < s->nloops || s->drain_started)
    return;
  s->drain_started = 1;
  coda__durable_draining(s->app->engine); /* no new attempts from the store */
  coda__engine *e = s->app->engine;
  e->idle_async = &s->drain_async;
  atomic_store(&e->draining, 1);
  long left = atomic_load(&e->outstanding);
  if (left == 0 || atomic_load(&s->stop_requests) >= 2) {
    finish_drain(s);
    return;
  }
  coda_log(s->app, CODA_LOG_INFO, "Waiting for %ld background tasks (up to %ld ms)", left,
           s->app->opt.task_drain_timeout);
  uv_timer_start(&s->drain_timer, on_drain_deadline,
                 (uint64_t)s->app->opt.task_drain_timeout, 0);
  if (atomic_load(&e->outstanding) == 0) /* finished meanwhile */
    finish_drain(s);
}

static void on_watch(uv_timer_t *t) {
  coda__server *s = t->data;
  if (s->app->engine->threads)
    coda__thread_pool_watch(s->app->engine->threads, uv_hrtime());
}

/* A stop may come before the control loop exists (a thread calling
 * coda_app_stop() while coda_app_run() starts): the request is counted
 * first, and sent only once `control_ready` says the async exists; the
 * control loop looks at the count right after setting it. Both sides use
 * sequentially consistent atomics, so one of them sees the other. */
void coda_app_stop(coda_app *app) {
  coda__server *s = app->server;
  if (!s || !atomic_load(&app->running))
    return;
  atomic_fetch_add(&s->stop_requests, 1);
  if (atomic_load(&s->control_ready))
    uv_async_send(&s->stop_async);
}

static int control_init(coda__server *s) {
  if (uv_loop_init(&s->control) != 0)
    return CODA_ENOMEM;
  uv_async_init(&s->control, &s->stop_async, on_stop_async);
  s->stop_async.data = s;
  uv_async_init(&s->control, &s->done_async, on_done_async);
  s->done_async.data = s;
  uv_async_init(&s->control, &s->drain_async, on_drain_idle);
  s->drain_async.data = s;
  uv_timer_init(&s->control, &s->drain_timer);
  s->drain_timer.data = s;
  uv_timer_init(&s->control, &s->watch_timer);
  s->watch_timer.data = s;
  uv_timer_start(&s->watch_timer, on_watch, 20, 20);
  uv_unref((uv_handle_t *)&s->watch_timer);
  uv_signal_init(&s->control, &s->sigint);
  uv_signal_init(&s->control, &s->sigterm);
  s->sigint.data = s->sigterm.data = s;
  if (s->app->opt.handle_signals) {
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
  }
  return 0;
}

/* libuv writes to sockets and pipes with write(2), so a peer that has gone
 * raises SIGPIPE, whose default action kills the process. A server must
 * see EPIPE instead; a handler the application installed is left alone. */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

int coda_app_run(coda_app *app) {
  int expected = 0;
  ignore_sigpipe();
  if (!atomic_compare_exchange_strong(&app->running, &expected, 1))
    return CODA_ESTATE;
  int rc = coda_app_bind(app);
  if (rc) {
    atomic_store(&app->running, 0);
    return rc;
  }
  coda__server *s = app->server;
  coda__logger_start(&app->logger);
  rc = control_init(s);
  if (rc == 0)
    rc = coda__engine_start(app->engine, &s->control);
  int started = 0;
  for (int i = 0; rc == 0 && i < s->nloops; i++) {
    rc = loop_init(s, i);
    if (rc == 0 && uv_thread_create(&s->loops[i].thread, worker_main, &s->loops[i]) != 0)
      rc = CODA_ENOMEM;
    if (rc == 0)
      started++;
    else
      loop_close(&s->loops[i]);
  }
  if (rc == 0) {
    coda__durable_loops_ready(app->engine);
    coda_log(app, CODA_LOG_INFO, "coda %s listening on http://%s:%d (%d loops)",
             coda_version(), app->listen_host, app->bound_port, s->nloops);
  }
  else if (started) {
    /* Loops that never started count as done, so the drain can end. */
    atomic_store(&s->loops_done, s->nloops - started);
    atomic_store(&s->stop_requests, 2);
    request_stop(s);
  }
  if (started) {
    atomic_store(&s->control_ready, 1);
    if (atomic_load(&s->stop_requests))
      request_stop(s); /* a stop that came while starting */
    uv_run(&s->control, UV_RUN_DEFAULT);
  }
  int cut = 0;
  for (int i = 0; i < started; i++) {
    uv_thread_join(&s->loops[i].thread);
    cut += s->loops[i].cut_connections;
    if (uv_loop_close(&s->loops[i].uv) == UV_EBUSY)
      coda_log(app, CODA_LOG_WARN, "loop %d ended with handles still open", i);
    coda__buf_free(&s->loops[i].log);
  }
  coda__engine_stop(app->engine);
  if (cut)
    coda_log(app, CODA_LOG_WARN, "shutdown deadline: %d connections cut", cut);
  else if (rc == 0)
    coda_log(app, CODA_LOG_INFO, "Shutdown complete");
  close_control(s);
  uv_run(&s->control, UV_RUN_DEFAULT);
  uv_loop_close(&s->control);
  coda__logger_stop(&app->logger);
  app->server = NULL;
  app->bound_port = 0;
  server_free(s);
  atomic_store(&app->running, 0);
  return rc;
}

uint64_t coda__app_requests(const coda_app *app) {
  coda__server *s = app->server;
  uint64_t n = 0;
  for (int i = 0; s && i < s->nloops; i++)
    n += atomic_load_explicit(&s->loops[i].requests, memory_order_relaxed);
  return n;
}
