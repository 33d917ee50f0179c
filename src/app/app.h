/*
 * app.h - the application object: options, routes, middleware, logger.
 *
 * Everything here is written by one thread before coda_app_run() and only
 * read afterwards, by every loop thread, without locks. The exceptions are
 * the atomics at the end (connection count, stop requests), which any thread
 * may touch.
 */
#ifndef CODA_APP_APP_H
#define CODA_APP_APP_H

#include "coda.h"
#include "common/log.h"
#include "http/parser.h"

#include <stdatomic.h>
#include <sys/socket.h>

typedef struct coda__router coda__router;
typedef struct coda__engine coda__engine;
typedef struct coda__server coda__server;

typedef struct coda__options {
  long threads;
  long max_header_bytes;
  long max_headers;
  long max_uri;
  long max_body;
  long header_timeout;
  long keepalive_timeout;
  long body_timeout;
  long send_timeout;
  long max_connections;
  long write_high_water;
  long shutdown_timeout;
  long access_log;
  long log_level;
  long handle_signals;
  long thread_pool_size;
  long thread_queue;
  long loop_queue;
  long process_workers;
  long process_queue;
  long task_drain_timeout;
  long retry_after;
  long store_poll;
  long task_lease;
  long store_max_bytes;
  long max_attempts;
  long backoff;
  long backoff_max;
  long task_retain;
  long body_min_rate;
} coda__options;

typedef struct coda__middleware_entry {
  coda_middleware fn;
  void *user;
} coda__middleware_entry;

struct coda_app {
  coda__options opt;
  coda__http_limits limits; /* derived from opt at run time */
  coda__router *router;
  coda__middleware_entry *middleware;
  int nmiddleware;
  coda_error_handler on_error;
  void *on_error_user;
  char *listen_host;
  int listen_port;
  struct sockaddr_storage addr;
  int bound_port;
  coda__logger logger;
  coda__server *server; /* while bound or running */
  coda__engine *engine; /* background tasks */
  atomic_int running;
  atomic_long nconnections;
};

/* Requests served so far, all loops (for /stats). */
uint64_t coda__app_requests(const coda_app *app);

/* Logs when `level` is enabled; arguments are not evaluated otherwise. */
#define CODA__LOG(app, level, ...)                                                       \
  do {                                                                                   \
    if ((long)(level) >= (app)->opt.log_level)                                           \
      coda_log((app), (level), __VA_ARGS__);                                             \
  } while (0)

#endif /* CODA_APP_APP_H */
