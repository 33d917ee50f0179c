/*
 * server.h - the running server: one event loop per thread, each with its
 * own SO_REUSEPORT listener (or none: a process that only runs tasks), plus
 * a control loop on the thread that called coda__server_run() for signals,
 * shutdown and the services' timers.
 *
 * The server knows HTTP/1 connections and nothing of what answers them. The
 * layers above plug in through what this header offers:
 *  - hooks (coda__server_hooks): the dispatch of each complete request, and
 *    the release of the per-connection memory the upper layer reserved;
 *  - services (coda__service): start, per-loop init/close, begin drain,
 *    outstanding work, report, stop, called on the control loop (per-loop
 *    init before the loop's thread starts, per-loop close on that thread);
 *  - per-loop slots (coda__loop_slot) for the upper layers' loop state;
 *  - one inbox per loop (coda__loop_inbox): any thread posts work to it;
 *  - on each connection (conn.h): the output, "response written" marks,
 *    the response gate and streams.
 *
 * Loops share nothing mutable. The control loop talks to a worker loop only
 * through the worker's `wakeup` async handle and the atomic `stop_level`.
 */
#ifndef CODA_SERVER_SERVER_H
#define CODA_SERVER_SERVER_H

#include "common/buf.h"
#include "common/inbox.h"
#include "common/log.h"
#include "common/queue.h"
#include "http/parser.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <uv.h>

typedef struct coda__server coda__server;
typedef struct coda__loop coda__loop;
typedef struct coda__conn coda__conn;

#define CODA__LOOP_SLOTS 4

/* What the server needs to know, copied at coda__server_new(). Times in
 * ms. */
typedef struct coda__server_config {
  int threads;     /* event loops (>= 1) */
  int listen;      /* 0: no listener, the loops only run what is posted */
  const char *host; /* for log lines */
  struct sockaddr_storage addr;
  int port; /* 0: any free port */
  coda__http_limits limits;
  uint64_t header_timeout;
  uint64_t keepalive_timeout;
  uint64_t body_timeout;
  uint64_t body_min_rate; /* bytes/s, 0: none */
  uint64_t send_timeout;
  uint64_t shutdown_timeout;
  uint64_t drain_timeout; /* how long services get to finish their work */
  long max_connections;
  size_t write_high_water;
  int send_buffer; /* SO_SNDBUF of each connection, 0: the kernel's */
  int access_log;
  int log_format; /* CODA__LOG_TEXT or CODA__LOG_JSON (the access log's lines) */
  int handle_signals;
  long log_level;
  coda__logger *logger;
  const char *version; /* for the start-up line */
} coda__server_config;

/* What the server hands up for each complete request. The bytes stay where
 * they are until the response is done (the dispatch may write NULs over
 * delimiters in place). */
typedef struct coda__request {
  char *base; /* the first byte of the head in the read buffer */
  const coda__http_head *head;
  char *body; /* de-chunked, followed by a NUL */
  size_t body_len;
  uint64_t id; /* process-unique: loop index in the top 16 bits */
} coda__request;

/* What dispatch returns. */
enum {
  CODA__ANSWERED = 0, /* the response is in the connection's output */
  CODA__STREAMING,    /* coda__conn_stream_begin() was called */
  CODA__GATED         /* not ready yet: coda__conn_gate_end() follows */
};

typedef struct coda__server_hooks {
  void *data;
  /* Bytes of per-connection memory for the upper layer's exchange (its
   * request and response), allocated with the connection, reused for
   * every request on it (coda__conn_exchange). Zeroed once. */
  size_t exchange_size;
  /* Answers a complete request; loop thread. Returns CODA__ANSWERED,
   * CODA__STREAMING, CODA__GATED, or a negative code (nothing could be
   * written: the connection closes). */
  int (*dispatch)(void *data, coda__conn *c, void *exchange, const coda__request *r);
  /* The connection closed: release what the exchange holds (a borrowed
   * body). Loop thread. May be NULL. */
  void (*release)(void *data, void *exchange);
  /* The server answered a request itself, never dispatched (a malformed
   * or oversized head, a body or header timeout): `status` is its 4xx or
   * 5xx; method and its length as parsed, or NULL when the head did not
   * get that far. Loop thread. May be NULL. */
  void (*rejected)(void *data, const char *method, size_t method_len, int status);
} coda__server_hooks;

/* A service: the task engine, a store's link, later a metrics exporter.
 * Every member may be NULL. */
typedef struct coda__service {
  const char *name;
  void *data;
  /* Control thread, before any loop exists. */
  int (*start)(void *data, coda__server *s, uv_loop_t *control);
  /* Control thread, before the loop's thread starts; a nonzero return
   * fails the start. Keep per-loop state in a slot. */
  int (*loop_init)(void *data, coda__loop *loop);
  /* The loop's own thread, as it ends (its inbox is still open). */
  void (*loop_close)(void *data, coda__loop *loop);
  /* Control thread: every loop runs. */
  void (*ready)(void *data);
  /* Control thread: every loop has finished its responses; take no new
   * work. While draining, call coda__server_idle() when outstanding()
   * drops to 0. */
  void (*drain)(void *data);
  long (*outstanding)(void *data); /* work not finished; any thread */
  /* Control thread: the drain is over (idle or deadline): log what did
   * not finish. */
  void (*report)(void *data);
  /* Control thread, after every loop thread has ended. */
  void (*stop)(void *data);
  /* Appends ,"name":{...} members to a JSON object of figures (the app's
   * coda_stats_json()). Any thread, running or not. Returns the length
   * needed, like snprintf. */
  size_t (*stats_json)(void *data, char *buf, size_t cap);
} coda__service;

struct coda__loop {
  uv_loop_t uv;
  coda__server *server;
  int index;
  uv_thread_t thread;
  uv_thread_t self;
  int listen_fd;
  uv_tcp_t listener;
  uv_async_t wakeup;    /* from the control loop: look at stop_level */
  uv_timer_t sweep;     /* timeouts, checked every sweep_ms */
  uv_timer_t deadline;  /* the graceful shutdown deadline */
  uv_prepare_t prepare; /* once per iteration: flush the access log */
  coda__inbox inbox;    /* work posted from any thread */
  void *slots[CODA__LOOP_SLOTS];
  atomic_int stop_level; /* 0 run, 1 graceful, 2 now, 3 end */
  int stopping;
  int responses_done; /* stopping and no connection left */
  int accept_pending; /* a connection waits in the backlog (limit reached) */
  coda__queue conns;
  long nconns;
  uint64_t next_request;
  time_t date_second;
  char date_line[40]; /* "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" */
  size_t date_len;
  coda__buf log; /* access log lines of this iteration */
  int cut_connections; /* connections closed at the shutdown deadline */
  int uv_made;         /* uv_loop_init() succeeded (for a failed start) */
  int inbox_made;      /* coda__inbox_init() succeeded (idem) */
  atomic_ulong requests; /* served (written by this loop only) */
};

struct coda__server {
  coda__server_config cfg;
  coda__server_hooks hooks;
  const coda__service *services[8];
  int nservices;
  int nloops;
  int nstarted; /* loops whose thread runs: the first nstarted */
  coda__loop *loops;
  int bound_port;
  atomic_long nconnections;
  uv_loop_t control;
  uv_async_t stop_async;  /* coda__server_stop() */
  uv_async_t done_async;  /* a worker loop finished its responses */
  uv_async_t drain_async; /* a service went idle while draining */
  uv_timer_t drain_timer; /* the drain deadline */
  int drain_started;
  int drain_finished;
  uv_signal_t sigint;
  uv_signal_t sigterm;
  atomic_int running;
  atomic_int stop_requests;
  /* stop_async and drain_async may be sent: set once the control loop
   * runs, cleared before it is closed, which first waits until no sender
   * (`senders`: coda__server_stop() and _idle() calls under way) is left. */
  atomic_int control_ready;
  atomic_int senders;
  atomic_int loops_done;
  int handled_stop;
};

/* Creates the server and binds its listening sockets (listening already:
 * connections that arrive before coda__server_run() wait in the kernel's
 * backlog, none is refused). CODA_EADDR (logged) if the address cannot be
 * used, CODA_ENOMEM. The hooks and services are copied (the services'
 * structs must outlive the server). */
int coda__server_new(const coda__server_config *cfg, const coda__server_hooks *hooks,
                     const coda__service *const *services, int nservices,
                     coda__server **out);

/* Runs until stopped (coda__server_stop, SIGINT/SIGTERM): starts the
 * services and the loops, then on stop finishes responses, drains the
 * services up to the drain deadline, and stops them. 0, or the code of
 * what failed to start (logged with what it was). Calling thread. */
int coda__server_run(coda__server *s);

/* Asks a running server to stop gracefully; again to stop now. Any thread
 * or a signal handler. */
void coda__server_stop(coda__server *s);

/* Closes the sockets and frees (not while it runs). */
void coda__server_free(coda__server *s);

/* A service's outstanding work dropped to 0 while draining. Any thread. */
void coda__server_idle(coda__server *s);

/* Requests served so far, all loops. Any thread. */
uint64_t coda__server_requests(const coda__server *s);

/* A per-loop slot number for an upper layer, process-wide (as
 * pthread_key_create): take one at init, then coda__loop_slot(). -1 when
 * all CODA__LOOP_SLOTS are taken. Thread-safe. */
int coda__loop_slot_key(void);

static inline void *coda__loop_slot(const coda__loop *loop, int key) {
  return loop->slots[key];
}
static inline void coda__loop_set_slot(coda__loop *loop, int key, void *p) {
  loop->slots[key] = p;
}
static inline uv_loop_t *coda__loop_uv(coda__loop *loop) { return &loop->uv; }
static inline coda__inbox *coda__loop_inbox(coda__loop *loop) { return &loop->inbox; }

/* Refreshes the cached Date line when the second changed. */
void coda__loop_update_date(coda__loop *loop);

/* Hands the access log lines buffered so far to the logger, so that lines
 * logged next (by a task) come after them. Loop thread. */
void coda__loop_flush_log(coda__loop *loop);

/* A connection closed: accept a waiting one, or finish shutting down. */
void coda__loop_conn_closed(coda__loop *loop);

/* Logs through the server's logger at its level. */
#define CODA__SERVER_LOG(s, level, ...)                                                  \
  coda__log((s)->cfg.logger, (s)->cfg.log_level, (level), __VA_ARGS__)

#endif /* CODA_SERVER_SERVER_H */
