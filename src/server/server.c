/*
 * server.c - binding, the worker loops, signals and graceful shutdown.
 *
 * Threads: coda__server_run() runs the control loop on the caller's thread
 * (signals, coda__server_stop(), the services' timers) and one worker
 * thread per event loop. Each worker owns its loop, listener and
 * connections outright; the control loop reaches a worker only through its
 * `wakeup` async and `stop_level`. coda__server_stop() touches only atomics
 * and uv_async_send(), both safe from a signal handler.
 *
 * Shutdown, in order: stop accepting and finish responses (cut at the
 * shutdown deadline); every loop reports "responses done"; the services
 * drain (no new work; the server waits until their outstanding work is 0
 * or the drain deadline); they report what did not finish; the loops end
 * (each closes its services' loop state, then its inbox); the services
 * stop. A second stop cuts connections and skips the drain.
 *
 * Each worker has its own listening socket on the same port with
 * SO_REUSEPORT, so the kernel spreads connections over the loops and no
 * accept lock exists. libuv 1.44 has no flag for it, so the sockets are
 * made and bound here and handed to libuv with uv_tcp_open().
 */
#include "server/server.h"

#include "coda.h"
#include "http/response.h"
#include "server/conn.h"

#include <errno.h>
#include <sched.h>
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
  loop->date_len = coda__http_date_line(now, loop->date_line, sizeof loop->date_line);
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
  /* Listening from here on: a connection that arrives before the loops
   * run waits in the backlog instead of being refused. */
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
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

void coda__server_free(coda__server *s) {
  if (!s)
    return;
  for (int i = 0; i < s->nloops; i++)
    if (s->loops[i].listen_fd >= 0)
      close(s->loops[i].listen_fd);
  free(s->loops);
  free(s);
}

int coda__server_new(const coda__server_config *cfg, const coda__server_hooks *hooks,
                     const coda__service *const *services, int nservices,
                     coda__server **out) {
  *out = NULL;
  if (cfg->threads < 1 || nservices < 0 ||
      nservices > (int)(sizeof(((coda__server *)0)->services) / sizeof(void *)))
    return CODA_EINVAL;
  coda__server *s = calloc(1, sizeof *s);
  if (!s)
    return CODA_ENOMEM;
  s->cfg = *cfg;
  s->hooks = *hooks;
  for (int i = 0; i < nservices; i++)
    s->services[i] = services[i];
  s->nservices = nservices;
  s->nloops = cfg->threads;
  s->loops = calloc((size_t)s->nloops, sizeof *s->loops);
  if (!s->loops) {
    free(s);
    return CODA_ENOMEM;
  }
  for (int i = 0; i < s->nloops; i++)
    s->loops[i].listen_fd = -1;
  int port = cfg->port;
  for (int i = 0; cfg->listen && i < s->nloops; i++) {
    int fd = open_listener(&cfg->addr, port);
    if (fd < 0) {
      CODA__SERVER_LOG(s, CODA_LOG_ERROR, "cannot listen on %s:%d: %s", cfg->host, port,
                       strerror(errno));
      coda__server_free(s);
      return CODA_EADDR;
    }
    s->loops[i].listen_fd = fd;
    if (i == 0)
      port = bound_port(fd);
  }
  s->bound_port = cfg->listen ? port : 0;
  *out = s;
  return 0;
}

int coda__loop_slot_key(void) {
  static atomic_int next;
  int k = atomic_fetch_add(&next, 1);
  return k < CODA__LOOP_SLOTS ? k : -1;
}

/* ---- worker loops ---------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) { (void)h; }

static void close_if_open(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, on_handle_closed);
}

/* Shutdown, per loop: once stopping and its last connection is gone, the
 * loop reports "responses done" to the control loop but stays up, because
 * the services may still post work to it. It ends when the control loop
 * says so (stop_level 3), after the drain. */
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

/* The end of the loop: the services close their loop state, the inbox
 * closes (what is left in it is cancelled) and coda's own handles close.
 * Handles the application started (a timer that will end a stream, a LOOP
 * task's socket) run their course: closing them here would leak what their
 * callbacks free. */
static void loop_exit(coda__loop *loop) {
  coda__server *s = loop->server;
  for (int i = s->nservices - 1; i >= 0; i--)
    if (s->services[i]->loop_close)
      s->services[i]->loop_close(s->services[i]->data, loop);
  coda__inbox_close(&loop->inbox);
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
    CODA__SERVER_LOG(loop->server, CODA_LOG_WARN, "accept failed: %s", coda_strerror(rc));
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

static int below_connection_limit(const coda__loop *loop) {
  return atomic_load(&loop->server->nconnections) < loop->server->cfg.max_connections;
}

static void on_connection(uv_stream_t *listener, int status) {
  coda__loop *loop = listener->data;
  if (status < 0 || loop->stopping)
    return;
  if (!below_connection_limit(loop) && !make_room(loop)) {
    loop->accept_pending = 1;
    return;
  }
  accept_one(loop);
}

void coda__loop_conn_closed(coda__loop *loop) {
  loop->nconns--;
  if (loop->accept_pending && !loop->stopping && below_connection_limit(loop)) {
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
    uv_timer_start(&loop->deadline, on_deadline, loop->server->cfg.shutdown_timeout, 0);
  }
  shutdown_connections(loop, level >= 2);
  maybe_finish(loop);
}

static void on_sweep(uv_timer_t *t) {
  coda__loop *loop = t->data;
  coda__queue *q, *next;
  for (q = loop->conns.next; q != &loop->conns; q = next) {
    next = q->next;
    /* Read for each connection: a write refreshes the loop's time (conn.c
     * wrote()), and a check can run code that writes to another
     * connection (a 408 lets a pipelined request's handler run, which may
     * write to a stream it keeps). That connection's stamp would then be
     * later than a `now` read before the walk, and `now - stamp` wrap. */
    coda__conn_check_timeouts(coda__container_of(q, coda__conn, link), uv_now(&loop->uv));
  }
  if (loop->accept_pending && !loop->stopping && below_connection_limit(loop)) {
    loop->accept_pending = 0;
    accept_one(loop);
  }
}

/* Once per loop iteration: hand this iteration's access log lines to the
 * logger thread in one piece. */
static void on_prepare_flush(coda__loop *loop) {
  if (loop->log.len) {
    coda__logger_write(loop->server->cfg.logger, loop->log.base, loop->log.len);
    loop->log.len = 0;
  }
}

static void on_prepare(uv_prepare_t *p) { on_prepare_flush(p->data); }

void coda__loop_flush_log(coda__loop *loop) { on_prepare_flush(loop); }

static uint64_t sweep_interval(const coda__server_config *o) {
  uint64_t m = o->header_timeout;
  uint64_t others[] = {o->keepalive_timeout, o->body_timeout, o->send_timeout};
  for (size_t i = 0; i < 3; i++)
    if (others[i] < m)
      m = others[i];
  m /= 4;
  return m < 10 ? 10 : m > 1000 ? 1000 : m;
}

static void worker_main(void *arg) {
  coda__loop *loop = arg;
  loop->self = uv_thread_self();
  uv_run(&loop->uv, UV_RUN_DEFAULT);
  on_prepare_flush(loop); /* the last lines */
}

/* What a failed libuv call means for coda__server_run()'s caller. */
static int from_uv(int rc) { return rc == UV_ENOMEM ? CODA_ENOMEM : CODA_EIO; }

/* Prepares loop `index` (control thread, before its thread starts): the
 * loop, its listener, timers, inbox, then the services' loop state. Logs
 * what failed. What was made before a failure is undone by loop_close(),
 * which relies on uv_made and inbox_made. */
static int loop_init(coda__server *s, int index) {
  coda__loop *loop = &s->loops[index];
  loop->server = s;
  loop->index = index;
  coda__queue_init(&loop->conns);
  int rc = uv_loop_init(&loop->uv);
  if (rc != 0) {
    CODA__SERVER_LOG(s, CODA_LOG_ERROR, "loop %d: cannot create an event loop: %s", index,
                     uv_strerror(rc));
    return from_uv(rc);
  }
  loop->uv_made = 1;
  uv_tcp_init(&loop->uv, &loop->listener);
  loop->listener.data = loop;
  uv_timer_init(&loop->uv, &loop->sweep);
  loop->sweep.data = loop;
  uv_timer_init(&loop->uv, &loop->deadline);
  loop->deadline.data = loop;
  uv_unref((uv_handle_t *)&loop->deadline);
  uv_prepare_init(&loop->uv, &loop->prepare);
  loop->prepare.data = loop;
  uv_prepare_start(&loop->prepare, on_prepare);
  /* The first async handle of a loop makes its eventfd: it can fail. */
  rc = uv_async_init(&loop->uv, &loop->wakeup, on_wakeup);
  if (rc != 0) {
    CODA__SERVER_LOG(s, CODA_LOG_ERROR, "loop %d: cannot create its wake-up: %s", index,
                     uv_strerror(rc));
    return from_uv(rc);
  }
  loop->wakeup.data = loop;
  if (coda__inbox_init(&loop->inbox, &loop->uv) != 0) {
    CODA__SERVER_LOG(s, CODA_LOG_ERROR, "loop %d: out of memory", index);
    return CODA_ENOMEM;
  }
  loop->inbox_made = 1;
  if (s->cfg.listen) {
    rc = uv_tcp_open(&loop->listener, loop->listen_fd);
    if (rc == 0) {
      loop->listen_fd = -1; /* libuv owns it now */
      rc = uv_listen((uv_stream_t *)&loop->listener, LISTEN_BACKLOG, on_connection);
    }
    if (rc) {
      CODA__SERVER_LOG(s, CODA_LOG_ERROR, "loop %d: listen failed: %s", index,
                       uv_strerror(rc));
      return CODA_EADDR;
    }
    uint64_t every = sweep_interval(&s->cfg);
    uv_timer_start(&loop->sweep, on_sweep, every, every);
  }
  for (int i = 0; i < s->nservices; i++) {
    const coda__service *svc = s->services[i];
    rc = svc->loop_init ? svc->loop_init(svc->data, loop) : 0;
    if (rc) {
      CODA__SERVER_LOG(s, CODA_LOG_ERROR, "loop %d: %s could not start: %s", index,
                       svc->name, coda_strerror(rc));
      return rc;
    }
  }
  return 0;
}

/* A loop whose start failed, on the control thread (its thread never ran):
 * the services close what they made (a service looks at its slot), the
 * inbox closes if it was made, then every handle that was made closes
 * (uv_walk() sees only those) and the loop is freed. */
static void loop_close(coda__loop *loop) {
  if (!loop->uv_made) {
    coda__buf_free(&loop->log);
    return;
  }
  coda__server *s = loop->server;
  for (int i = s->nservices - 1; i >= 0; i--)
    if (s->services[i]->loop_close)
      s->services[i]->loop_close(s->services[i]->data, loop);
  if (loop->inbox_made)
    coda__inbox_close(&loop->inbox);
  on_prepare_flush(loop);
  uv_walk(&loop->uv, close_any, NULL);
  uv_run(&loop->uv, UV_RUN_DEFAULT);
  uv_loop_close(&loop->uv);
  if (loop->inbox_made)
    coda__inbox_destroy(&loop->inbox);
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
    CODA__SERVER_LOG(s, CODA_LOG_INFO, "Second stop: not waiting for background work");
    finish_drain(s); /* a second signal during the drain ends it now */
    return;
  }
  CODA__SERVER_LOG(s, CODA_LOG_INFO,
                   level == 1 ? "Shutting down (finishing in-flight requests)"
                              : "Shutting down now");
  for (int i = 0; i < s->nstarted; i++) {
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
}

static long outstanding(const coda__server *s) {
  long n = 0;
  for (int i = 0; i < s->nservices; i++)
    if (s->services[i]->outstanding)
      n += s->services[i]->outstanding(s->services[i]->data);
  return n;
}

/* The end of the drain, by idleness or deadline: the services report what
 * did not finish, then every loop ends. */
static void finish_drain(coda__server *s) {
  if (s->drain_finished)
    return;
  s->drain_finished = 1;
  for (int i = 0; i < s->nservices; i++)
    if (s->services[i]->report)
      s->services[i]->report(s->services[i]->data);
  for (int i = 0; i < s->nstarted; i++) {
    atomic_store(&s->loops[i].stop_level, 3);
    uv_async_send(&s->loops[i].wakeup);
  }
  close_control(s);
}

/* Sends to one of the control loop's asyncs, unless that loop is about to
 * be closed (uv_async_send() on a closed loop aborts the process). Atomics
 * only: safe from any thread and from a signal handler. */
static void send_to_control(coda__server *s, uv_async_t *a) {
  atomic_fetch_add(&s->senders, 1);
  if (atomic_load(&s->control_ready))
    uv_async_send(a);
  atomic_fetch_sub(&s->senders, 1);
}

/* Before the control loop is closed: no sender is left, and none starts. */
static void control_quiesce(coda__server *s) {
  atomic_store(&s->control_ready, 0);
  while (atomic_load(&s->senders) > 0)
    sched_yield();
}

void coda__server_idle(coda__server *s) { send_to_control(s, &s->drain_async); }

static void on_drain_idle(uv_async_t *a) {
  coda__server *s = a->data;
  if (s->drain_started && outstanding(s) == 0)
    finish_drain(s);
}

static void on_drain_deadline(uv_timer_t *t) { finish_drain(t->data); }

/* Every loop has finished its responses: the services take no new work
 * and get until the drain deadline (none after a second signal). */
static void on_done_async(uv_async_t *a) {
  coda__server *s = a->data;
  if (atomic_load(&s->loops_done) < s->nloops || s->drain_started)
    return;
  s->drain_started = 1;
  for (int i = 0; i < s->nservices; i++)
    if (s->services[i]->drain)
      s->services[i]->drain(s->services[i]->data);
  long left = outstanding(s);
  if (left == 0 || atomic_load(&s->stop_requests) >= 2) {
    finish_drain(s);
    return;
  }
  CODA__SERVER_LOG(s, CODA_LOG_INFO, "Waiting for %ld background tasks (up to %llu ms)",
                   left, (unsigned long long)s->cfg.drain_timeout);
  uv_timer_start(&s->drain_timer, on_drain_deadline, s->cfg.drain_timeout, 0);
  if (outstanding(s) == 0) /* finished meanwhile */
    finish_drain(s);
}

/* A stop may come before the control loop exists (a thread calling
 * coda__server_stop() while coda__server_run() starts): the request is
 * counted first, and sent only once `control_ready` says the async exists;
 * the control loop looks at the count right after setting it. Both sides
 * use sequentially consistent atomics, so one of them sees the other. */
void coda__server_stop(coda__server *s) {
  if (!s)
    return;
  atomic_fetch_add(&s->stop_requests, 1);
  send_to_control(s, &s->stop_async);
}

/* Closes what control_init() made before it failed. */
static void control_undo(coda__server *s) {
  uv_walk(&s->control, close_any, NULL);
  uv_run(&s->control, UV_RUN_DEFAULT);
  uv_loop_close(&s->control);
}

static int control_init(coda__server *s) {
  int rc = uv_loop_init(&s->control);
  if (rc != 0) {
    CODA__SERVER_LOG(s, CODA_LOG_ERROR, "cannot create the control loop: %s",
                     uv_strerror(rc));
    return from_uv(rc);
  }
  uv_timer_init(&s->control, &s->drain_timer);
  s->drain_timer.data = s;
  rc = uv_async_init(&s->control, &s->stop_async, on_stop_async);
  if (rc == 0)
    rc = uv_async_init(&s->control, &s->done_async, on_done_async);
  if (rc == 0)
    rc = uv_async_init(&s->control, &s->drain_async, on_drain_idle);
  if (rc == 0)
    rc = uv_signal_init(&s->control, &s->sigint);
  if (rc == 0)
    rc = uv_signal_init(&s->control, &s->sigterm);
  if (rc == 0 && s->cfg.handle_signals) {
    rc = uv_signal_start(&s->sigint, on_signal, SIGINT);
    if (rc == 0)
      rc = uv_signal_start(&s->sigterm, on_signal, SIGTERM);
  }
  if (rc != 0) {
    CODA__SERVER_LOG(s, CODA_LOG_ERROR, "cannot set up the control loop: %s",
                     uv_strerror(rc));
    control_undo(s);
    return from_uv(rc);
  }
  s->stop_async.data = s;
  s->done_async.data = s;
  s->drain_async.data = s;
  s->sigint.data = s->sigterm.data = s;
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

static int start_services(coda__server *s) {
  for (int i = 0; i < s->nservices; i++) {
    const coda__service *svc = s->services[i];
    int rc = svc->start ? svc->start(svc->data, s, &s->control) : 0;
    if (rc) {
      CODA__SERVER_LOG(s, CODA_LOG_ERROR, "%s could not start: %s", svc->name,
                       coda_strerror(rc));
      return rc;
    }
  }
  return 0;
}

static void log_started(coda__server *s) {
  if (s->cfg.listen)
    CODA__SERVER_LOG(s, CODA_LOG_INFO, "coda %s listening on http://%s:%d (%d loops)",
                     s->cfg.version, s->cfg.host, s->bound_port, s->nloops);
  else
    CODA__SERVER_LOG(s, CODA_LOG_INFO, "coda %s running tasks only, no HTTP (%d loops)",
                     s->cfg.version, s->nloops);
}

int coda__server_run(coda__server *s) {
  int expected = 0;
  if (!atomic_compare_exchange_strong(&s->running, &expected, 1))
    return CODA_ESTATE;
  ignore_sigpipe();
  int rc = control_init(s);
  int control = rc == 0;
  if (rc == 0)
    rc = start_services(s);
  int started = 0;
  for (int i = 0; rc == 0 && i < s->nloops; i++) {
    rc = loop_init(s, i);
    if (rc == 0 && uv_thread_create(&s->loops[i].thread, worker_main, &s->loops[i]) != 0) {
      CODA__SERVER_LOG(s, CODA_LOG_ERROR, "loop %d: cannot start its thread", i);
      rc = CODA_ENOMEM;
    }
    if (rc == 0)
      started++;
    else
      loop_close(&s->loops[i]);
  }
  s->nstarted = started; /* the loops after a failed one were never made */
  if (rc == 0) {
    for (int i = 0; i < s->nservices; i++)
      if (s->services[i]->ready)
        s->services[i]->ready(s->services[i]->data);
    log_started(s);
  } else if (started) {
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
      CODA__SERVER_LOG(s, CODA_LOG_WARN, "loop %d ended with handles still open", i);
    coda__buf_free(&s->loops[i].log);
  }
  if (control) {
    for (int i = s->nservices - 1; i >= 0; i--)
      if (s->services[i]->stop)
        s->services[i]->stop(s->services[i]->data);
  }
  /* Closed since their loop ended (posts are refused), the inboxes are
   * destroyed only now: a service's threads may try to post until it has
   * stopped them. */
  for (int i = 0; i < started; i++)
    coda__inbox_destroy(&s->loops[i].inbox);
  if (cut)
    CODA__SERVER_LOG(s, CODA_LOG_WARN, "shutdown deadline: %d connections cut", cut);
  else if (rc == 0)
    CODA__SERVER_LOG(s, CODA_LOG_INFO, "Shutdown complete");
  if (control) {
    control_quiesce(s);
    close_control(s);
    uv_run(&s->control, UV_RUN_DEFAULT);
    uv_loop_close(&s->control);
  }
  atomic_store(&s->running, 0);
  return rc;
}

uint64_t coda__server_requests(const coda__server *s) {
  uint64_t n = 0;
  for (int i = 0; s && i < s->nloops; i++)
    n += atomic_load_explicit(&s->loops[i].requests, memory_order_relaxed);
  return n;
}
