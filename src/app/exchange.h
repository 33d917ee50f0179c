/*
 * exchange.h - the request and response objects a handler sees, the
 * stream, and the calls the app and the layer above make on them.
 *
 * They live in the connection's exchange memory (server/conn.h) and are
 * reused request after request; everything a request needs beyond them
 * comes from the connection's arena, which is reset when the response is
 * done. One thread: the connection's event loop.
 */
#ifndef CODA_APP_EXCHANGE_H
#define CODA_APP_EXCHANGE_H

#include "app/router.h"
#include "coda.h"
#include "common/arena.h"
#include "http/parser.h"
#include "server/conn.h"

#include <stdint.h>

typedef struct coda__res_header {
  struct coda__res_header *next;
  const char *name;
  const char *value;
  size_t name_len;
  size_t value_len;
} coda__res_header;

enum { CODA__BODY_NONE, CODA__BODY_COPY, CODA__BODY_STATIC, CODA__BODY_BORROW };

struct coda_req {
  coda_app *app;
  coda__conn *conn;
  coda__arena *arena;
  const coda__http_head *head;
  char *base; /* first byte of the head in the read buffer */
  const char *method;
  const char *target;
  const char *query_string;
  const char *path_raw; /* NUL-terminated raw path */
  char *path;           /* decoded, lazily */
  const char *body;
  size_t body_len;
  coda__match match;
  const char *param_values[CODA__MAX_PARAMS];
  uint64_t id;
  int is_head;
  uint64_t metrics_t0; /* uv_hrtime() at dispatch, for the duration metric */
};

struct coda_res {
  coda_app *app;
  coda__conn *conn;
  coda__arena *arena;
  uint64_t request_id;
  int status;
  coda__res_header *headers;
  const char *body;
  size_t body_len;
  int body_kind;
  coda_release_fn release;
  void *release_arg;
  coda__written_cb written_cb;
  void *written_arg;
  int streaming;
  int deferred; /* coda__res_defer(): answered later by coda__res_resume() */
  void *ext;    /* the upper layer's state for this response (its tasks) */
};

struct coda_stream {
  coda__conn *conn;
  coda_res *res;
  int chunked; /* HTTP/1.1: chunked framing; 1.0: close-delimited */
  int discard; /* HEAD: the body is not sent */
};

/* What a connection's exchange memory holds. */
typedef struct coda__exchange {
  coda_req req;
  coda_res res;
  coda_stream stream;
} coda__exchange;

/* Prepares req from a dispatched request: NUL-terminates its strings in
 * place. */
void coda__req_begin(coda_req *req, coda_app *app, coda__conn *conn,
                     const coda__request *r);

/* Decodes the matched route's captures into the arena. */
int coda__req_decode_params(coda_req *req);

/* Resets a response to an empty 200, releasing a borrowed body. */
void coda__res_reset(coda_res *res, coda_app *app, coda__conn *conn, uint64_t request_id);

/* Releases what the response still holds (a borrowed body). */
void coda__res_release(coda_res *res);

/* Registers the written callback of this response (one per response):
 * CODA_EEXIST if one is set. */
int coda__res_on_written(coda_res *res, coda__written_cb cb, void *arg);

/* For the upper layer, in its committed() hook: cb runs once the
 * response's last byte is in the kernel (ok 1) or the connection failed
 * (ok 0). */
int coda__res_mark_written(coda_res *res, coda__written_cb cb, void *arg);

/* Serialises a finished response into the connection's output. */
int coda__res_commit(coda_res *res);

/* A gated response (coda__app_ext.gate) goes on: rc 0 writes it as built,
 * a negative rc writes the failure answer for rc instead (503 for
 * CODA_ESTORE). On a connection that closed meanwhile, nothing is written
 * and the extension hears committed(queued 0). Loop thread. */
void coda__res_resume(coda_res *res, int rc);

/* For a layer above the app whose handler answers later (the admin API,
 * while the store thread writes an operator's action): the response is
 * held as a gated one once the handler returns, and the layer calls
 * coda__res_resume() on the loop thread (or coda__res_abandon()) exactly
 * once, with the response built meanwhile. CODA_ESTATE when the response
 * holds tasks or streams (their gate would be skipped). on 0 takes it back
 * (the work could not start; the handler answers now). Loop thread, from
 * the handler. */
int coda__res_defer(coda_res *res, int on);

/* The loop ended while the response was gated: nothing will answer it.
 * Its written callback hears "failed" and the connection is freed. Any
 * thread. */
void coda__res_abandon(coda_res *res);

/* The server's dispatch hook: runs middleware, routing and the handler,
 * then the error handler if needed, then writes the response (or starts
 * the stream, or gates it). */
int coda__app_dispatch(void *app, coda__conn *c, void *exchange, const coda__request *r);

/* Counts a response that leaves (written or streamed) in the HTTP
 * metrics: by method, route pattern and status class, and its duration
 * since dispatch. Loop thread. */
void coda__app_count_response(coda_app *app, const coda_req *req, int status);

/* The server's release hook. */
void coda__app_release(void *app, void *exchange);

/* Replaces the response with the framework's answer to a failure `rc`
 * (500, or 503 + Retry-After for CODA_EFULL and CODA_ESTORE, or what the
 * app's error handler makes of it); the extension drops what must not
 * follow a failed response. */
void coda__app_fail_response(coda_app *app, coda_req *req, coda_res *res, int rc);

/* Percent-decodes src into dst (which may be src); '+' becomes a space when
 * plus_is_space. Invalid escapes are kept as they are. Returns the length. */
size_t coda__percent_decode(char *dst, const char *src, size_t n, int plus_is_space);

#endif /* CODA_APP_EXCHANGE_H */
