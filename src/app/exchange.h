/*
 * exchange.h - the request and response objects a handler sees, and the
 * internal calls the server makes on them.
 *
 * Both live inside their connection and are reused request after request;
 * everything a request needs beyond them comes from the connection's arena,
 * which is reset when the response is done. One thread: the connection's
 * event loop.
 */
#ifndef CODA_APP_EXCHANGE_H
#define CODA_APP_EXCHANGE_H

#include "app/router.h"
#include "coda.h"
#include "common/arena.h"
#include "http/parser.h"

#include <stdint.h>

typedef struct coda__conn coda__conn;

/* Called once per response when its last byte has been written to the
 * socket (ok = 1) or the connection failed before that (ok = 0). This is
 * where work that must run after the response hooks in. */
typedef void (*coda__written_cb)(void *arg, int ok);

typedef struct coda__res_header {
  struct coda__res_header *next;
  const char *name;
  const char *value;
  size_t name_len;
  size_t value_len;
} coda__res_header;

enum { CODA__BODY_NONE, CODA__BODY_COPY, CODA__BODY_STATIC, CODA__BODY_BORROW };

struct coda_req {
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
};

struct coda_res {
  coda__conn *conn;
  coda__arena *arena;
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
  struct coda_tasks *run; /* background tasks added so far, or NULL */
};

/* Prepares req from a parsed head: NUL-terminates its strings in place. */
void coda__req_begin(coda_req *req, coda__conn *conn, coda__arena *arena,
                     char *base, const coda__http_head *head, uint64_t id);

/* Decodes the matched route's captures into the arena. */
int coda__req_decode_params(coda_req *req);

/* Resets a response to an empty 200, releasing a borrowed body. */
void coda__res_reset(coda_res *res, coda__conn *conn, coda__arena *arena);

/* Releases what the response still holds (a borrowed body). */
void coda__res_release(coda_res *res);

/* Registers the written callback of this response (one per response):
 * CODA_EEXIST if one is set. */
int coda__res_on_written(coda_res *res, coda__written_cb cb, void *arg);

/* Serialises a finished response into the connection's output. */
int coda__res_commit(coda_res *res);

/* Runs middleware, routing and the handler, then the error handler if
 * needed. The response is complete (or streaming) when it returns. */
void coda__app_dispatch(coda_app *app, coda_req *req, coda_res *res);

/* Replaces the response with the framework's answer to a failure `rc`
 * (500, or 503 + Retry-After for CODA_EFULL and CODA_ESTORE, or what the
 * app's error handler makes of it); its tasks are dropped except ALWAYS
 * ones. */
void coda__app_fail_response(coda_app *app, coda_req *req, coda_res *res, int rc);

/* Status line text, e.g. "Not Found". */
const char *coda__status_reason(int status);

/* Percent-decodes src into dst (which may be src); '+' becomes a space when
 * plus_is_space. Invalid escapes are kept as they are. Returns the length. */
size_t coda__percent_decode(char *dst, const char *src, size_t n, int plus_is_space);

#endif /* CODA_APP_EXCHANGE_H */
