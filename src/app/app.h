/*
 * app.h - the application object: options, routes, middleware, logger,
 * and the two ways the layer above (tasks) plugs into the app: an
 * extension that follows every response (coda__app_ext) and services the
 * server runs (coda__app_add_service).
 *
 * Everything here is written by one thread before coda_app_run() and only
 * read afterwards, by every loop thread, without locks. The exceptions are
 * `running`, `server` and `stoppers`, which any thread may read.
 */
#ifndef CODA_APP_APP_H
#define CODA_APP_APP_H

#include "coda.h"
#include "common/log.h"
#include "common/metrics.h"
#include "server/server.h"

#include <stdatomic.h>
#include <sys/socket.h>

typedef struct coda__router coda__router;

/* Every option of CODA_OPTION_MAP, as a long. */
typedef struct coda__options {
#define CODA__OPTION_FIELD(name, field, def, min, max) long field;
  CODA_OPTION_MAP(CODA__OPTION_FIELD)
#undef CODA__OPTION_FIELD
} coda__options;

typedef struct coda__middleware_entry {
  coda_middleware fn;
  void *user;
} coda__middleware_entry;

/* What an upper layer does with each response, registered once
 * (coda__app_set_ext). `data` is the layer's own; `res->ext` is its
 * per-response state (NULL until it sets it). Loop thread of the response
 * unless said otherwise. Every member may be NULL. */
typedef struct coda__app_ext {
  void *data;
  /* A route that carries the layer's data (coda__route.ext) matched:
   * before its handler runs. A negative return fails the request. */
  int (*route)(void *data, coda_res *res, void *route_ext);
  /* The handler or middleware failed: the response is being replaced by
   * the failure answer; drop what must not follow it. */
  void (*failed)(void *data, coda_res *res);
  /* The response is complete: 0 lets it be written now, CODA__GATED holds
   * it (the layer calls coda__res_resume() or coda__res_abandon() later,
   * on the loop thread), a negative code fails it (503/500). */
  int (*gate)(void *data, coda_res *res);
  /* coda_res_stream() is about to begin a stream, whose head leaves at
   * once, before any gate: a nonzero return refuses it (coda_res_stream()
   * returns NULL and the handler answers as usual). */
  int (*stream)(void *data, coda_res *res);
  /* The response was committed: its bytes are queued (queued 1: the
   * layer may coda__res_mark_written()) or it could not be written
   * (queued 0: the connection is gone). */
  void (*committed)(void *data, coda_res *res, int queued);
  /* coda_app_bind() and coda_app_run() call it first: a process that is a
   * task worker serves there and never returns. */
  void (*enter)(void *data);
  /* coda_app_free(): free the layer. Returns nonzero if it cannot be
   * freed yet (threads of it still run): the app is then kept. */
  int (*free)(void *data);
} coda__app_ext;

#define CODA__APP_MAX_SERVICES 4
#define CODA__APP_MAX_ATTACHED 4

/* State an upper layer keeps with the app besides its extension (the
 * admin mount), found again by its tag (the address of a static of that
 * layer) and freed by coda_app_free() with `free`. */
typedef struct coda__app_attached {
  const void *tag;
  void *data;
  void (*free)(void *data);
} coda__app_attached;

struct coda_app {
  coda__options opt;
  coda__router *router;
  coda__middleware_entry *middleware;
  int nmiddleware;
  coda_error_handler on_error;
  void *on_error_user;
  int listen; /* 0: coda_app_listen(app, NULL): no HTTP */
  char *listen_host;
  int listen_port;
  struct sockaddr_storage addr;
  coda__logger logger;
  /* While bound or running. Atomic, with `stoppers` (coda_app_stop() calls
   * under way, from any thread or a signal handler): coda_app_run() clears
   * it, then waits for stoppers to be 0 before it frees the server. */
  _Atomic(coda__server *) server;
  atomic_int stoppers;
  coda__app_ext ext;
  const coda__service *services[CODA__APP_MAX_SERVICES];
  int nservices;
  coda__app_attached attached[CODA__APP_MAX_ATTACHED];
  atomic_int running;
  atomic_long failed_requests; /* handler failures, for the summary log */
  atomic_long busy_requests;   /* 503 answers (full queue, store down) */
  /* Every layer's metric families (common/metrics.h); made with the app,
   * counting switched by CODA_OPT_METRICS when the app binds. */
  coda__metrics *metrics;
  coda__metric *http_requests; /* method, route, status class */
  coda__metric *http_duration; /* route */
};

/* Installs the upper layer's extension (one per app). CODA_EEXIST if one
 * is there. Configuration time. */
int coda__app_set_ext(coda_app *app, const coda__app_ext *ext);
/* The extension's data, or NULL. */
static inline void *coda__app_ext_data(const coda_app *app) { return app->ext.data; }

/* Adds a service the server will run (the struct must live as long as the
 * app). Configuration time, before coda_app_bind(): CODA_ESTATE after. */
int coda__app_add_service(coda_app *app, const coda__service *svc);

/* Attaches `data` under `tag` (configuration time): CODA_EEXIST if the tag
 * has data, CODA_ELIMIT when the table is full. */
int coda__app_attach(coda_app *app, const void *tag, void *data, void (*free)(void *data));
/* The data attached under `tag`, or NULL. Any thread once the app runs. */
void *coda__app_attached_data(const coda_app *app, const void *tag);

/* Requests served so far, all loops (for /stats). */
uint64_t coda__app_requests(const coda_app *app);

/* Logs when `level` is enabled; arguments are not evaluated otherwise. */
#define CODA__LOG(app, level, ...)                                                       \
  do {                                                                                   \
    if ((long)(level) >= (app)->opt.log_level)                                           \
      coda_log((app), (level), __VA_ARGS__);                                             \
  } while (0)

#endif /* CODA_APP_APP_H */
