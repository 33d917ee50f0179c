/*
 * response.c - building responses and writing them out (see coda.h).
 *
 * A response is built in the request's arena while the handler and the
 * middleware run; coda__res_commit() then serialises it (http/response.h)
 * into the connection's output buffer in one pass. Small bodies are copied
 * next to the head, so a keep-alive response is one contiguous write;
 * large static or borrowed bodies are written from where they are. The
 * app's extension (the task layer) hears when a response commits, fails or
 * is gated (app.h). Loop thread only.
 */
#include "app/app.h"
#include "app/exchange.h"
#include "http/response.h"

#include <jansson.h>
#include <strings.h>

/* Bodies up to this size are copied next to the head: one iovec beats two
 * for small writes, and the copy is cheaper than a second syscall piece. */
#define COPY_BODY_MAX 16384

void coda__res_release(coda_res *res) {
  if (res->body_kind == CODA__BODY_BORROW && res->release)
    res->release((void *)res->body, res->release_arg);
  res->body_kind = CODA__BODY_NONE;
  res->release = NULL;
  res->body = NULL;
  res->body_len = 0;
}

void coda__res_reset(coda_res *res, coda_app *app, coda__conn *conn, uint64_t request_id) {
  coda__res_release(res);
  res->app = app;
  res->conn = conn;
  res->arena = coda__conn_arena(conn);
  res->request_id = request_id;
  res->status = 200;
  res->headers = NULL;
  res->written_cb = NULL;
  res->written_arg = NULL;
  res->streaming = 0;
  res->deferred = 0;
  res->ext = NULL; /* handed on by commit, or by the failure path */
}

int coda__res_defer(coda_res *res, int on) {
  if (on && (res->ext || res->streaming))
    return CODA_ESTATE;
  res->deferred = on != 0;
  return 0;
}

int coda__res_on_written(coda_res *res, coda__written_cb cb, void *arg) {
  if (res->written_cb)
    return CODA_EEXIST;
  res->written_cb = cb;
  res->written_arg = arg;
  return 0;
}

int coda_res_status(coda_res *res, int status) {
  if (status < 200 || status > 999)
    return CODA_EINVAL;
  res->status = status;
  return 0;
}

int coda_res_get_status(const coda_res *res) { return res->status; }

/* ---- headers --------------------------------------------------------- */

static int managed_header(const char *name, size_t len) {
  /* Gated by length, so common names cost one switch. */
  switch (len) {
  case 4:
    return strcasecmp(name, "date") == 0;
  case 10:
    return strcasecmp(name, "connection") == 0;
  case 14:
    return strcasecmp(name, "content-length") == 0;
  case 17:
    return strcasecmp(name, "transfer-encoding") == 0;
  default:
    return 0;
  }
}

/* Names must be tokens and values must not contain CR, LF, NUL or other
 * controls but HTAB: a header can never split the response. Measures both
 * on the way (vlen is 0 for a NULL value). */
static int valid_header(const char *name, const char *value, size_t *nlen, size_t *vlen) {
  if (!name || !*name)
    return 0;
  const unsigned char *p = (const unsigned char *)name;
  while (coda__http_tchar[*p]) /* stops at the NUL too */
    p++;
  if (*p)
    return 0;
  *nlen = (size_t)(p - (const unsigned char *)name);
  *vlen = 0;
  if (value) {
    const unsigned char *v = (const unsigned char *)value;
    while (*v && coda__http_value_char(*v))
      v++;
    if (*v)
      return 0;
    *vlen = (size_t)(v - (const unsigned char *)value);
  }
  return !managed_header(name, *nlen);
}

/* Unlinks every header called `name`. */
static void remove_header(coda_res *res, const char *name, size_t len) {
  for (coda__res_header **h = &res->headers; *h;) {
    if ((*h)->name_len == len && strcasecmp((*h)->name, name) == 0)
      *h = (*h)->next;
    else
      h = &(*h)->next;
  }
}

static coda__res_header **find_header(coda_res *res, const char *name) {
  size_t len = strlen(name);
  for (coda__res_header **h = &res->headers; *h; h = &(*h)->next)
    if ((*h)->name_len == len && strcasecmp((*h)->name, name) == 0)
      return h;
  return NULL;
}

/* One arena block holds the entry and copies of both strings. */
static int append_header(coda_res *res, const char *name, size_t nlen, const char *value,
                         size_t vlen) {
  coda__res_header *h = coda__arena_alloc(res->arena, sizeof *h + nlen + vlen + 2);
  if (!h)
    return CODA_ENOMEM;
  char *text = (char *)(h + 1);
  memcpy(text, name, nlen + 1);
  memcpy(text + nlen + 1, value, vlen + 1);
  h->name = text;
  h->value = text + nlen + 1;
  h->name_len = nlen;
  h->value_len = vlen;
  h->next = NULL;
  coda__res_header **tail = &res->headers;
  while (*tail)
    tail = &(*tail)->next;
  *tail = h;
  return 0;
}

int coda_res_header(coda_res *res, const char *name, const char *value) {
  size_t nlen, vlen;
  if (!valid_header(name, value, &nlen, &vlen))
    return CODA_EINVAL;
  if (res->headers)
    remove_header(res, name, nlen);
  return value ? append_header(res, name, nlen, value, vlen) : 0;
}

int coda_res_add_header(coda_res *res, const char *name, const char *value) {
  size_t nlen, vlen;
  if (!value || !valid_header(name, value, &nlen, &vlen))
    return CODA_EINVAL;
  return append_header(res, name, nlen, value, vlen);
}

const char *coda_res_get_header(const coda_res *res, const char *name) {
  coda__res_header **h = find_header((coda_res *)res, name);
  return h ? (*h)->value : NULL;
}

/* ---- bodies ---------------------------------------------------------- */

static int set_body(coda_res *res, const void *data, size_t len, int kind,
                    coda_release_fn release, void *arg) {
  if (res->streaming)
    return CODA_ESTATE;
  coda__res_release(res);
  res->body = len ? data : "";
  res->body_len = len;
  res->body_kind = kind;
  res->release = release;
  res->release_arg = arg;
  return 0;
}

int coda_res_body(coda_res *res, const void *data, size_t len) {
  char *copy = coda__arena_alloc(res->arena, len ? len : 1);
  if (!copy)
    return CODA_ENOMEM;
  if (len)
    memcpy(copy, data, len);
  return set_body(res, copy, len, CODA__BODY_COPY, NULL, NULL);
}

int coda_res_body_static(coda_res *res, const void *data, size_t len) {
  return set_body(res, data, len, CODA__BODY_STATIC, NULL, NULL);
}

int coda_res_body_borrow(coda_res *res, const void *data, size_t len,
                         coda_release_fn release, void *arg) {
  return set_body(res, data, len, CODA__BODY_BORROW, release, arg);
}

static int set_json_type(coda_res *res, int status) {
  int rc = coda_res_status(res, status);
  return rc ? rc : coda_res_header(res, "Content-Type", "application/json");
}

int coda_res_json(coda_res *res, int status, const struct json_t *value) {
  size_t n = json_dumpb(value, NULL, 0, JSON_COMPACT);
  if (n == 0)
    return CODA_EINVAL;
  char *p = coda__arena_alloc(res->arena, n);
  if (!p)
    return CODA_ENOMEM;
  if (json_dumpb(value, p, n, JSON_COMPACT) != n)
    return CODA_EINVAL;
  int rc = set_json_type(res, status);
  return rc ? rc : set_body(res, p, n, CODA__BODY_COPY, NULL, NULL);
}

int coda_res_json_text(coda_res *res, int status, const char *json) {
  int rc = set_json_type(res, status);
  return rc ? rc : coda_res_body(res, json, strlen(json));
}

/* ---- serialisation --------------------------------------------------- */

/* Writes the status line, fixed headers and the user's headers, then the
 * framing: chunked, or Content-Length unless the status has no body or the
 * body is close-delimited (a stream over HTTP/1.0). */
static int write_head(coda_res *res, coda__buf *out, int chunked) {
  coda__conn *c = res->conn;
  const coda_req *req = &((coda__exchange *)coda__conn_exchange(c))->req;
  size_t dlen;
  const char *date = coda__conn_date(c, &dlen);
  int ok = coda__http_status_line(out, res->status) == 0;
  ok &= coda__buf_append_lit(out, "Server: coda\r\n") == 0;
  ok &= coda__buf_append(out, date, dlen) == 0;
  for (coda__res_header *h = res->headers; h; h = h->next)
    ok &= coda__http_write_field(out, h->name, h->name_len, h->value, h->value_len) == 0;
  if (chunked)
    ok &= coda__buf_append_lit(out, "Transfer-Encoding: chunked\r\n") == 0;
  else if (coda__http_status_has_body(res->status) && !res->streaming)
    ok &= coda__http_content_length(out, res->body_len) == 0;
  if (!coda__conn_keep_alive(c))
    ok &= coda__buf_append_lit(out, "Connection: close\r\n") == 0;
  else if (req->head->version_minor == 0)
    ok &= coda__buf_append_lit(out, "Connection: keep-alive\r\n") == 0;
  ok &= coda__buf_append_lit(out, "\r\n") == 0;
  return ok ? 0 : CODA_ENOMEM;
}

static void ext_committed(coda_res *res, int queued) {
  const coda__app_ext *ext = &res->app->ext;
  if (res->ext && ext->committed)
    ext->committed(ext->data, res, queued);
  res->ext = NULL;
}

int coda__res_mark_written(coda_res *res, coda__written_cb cb, void *arg) {
  return coda__conn_mark_response(res->conn, cb, arg);
}

int coda__res_commit(coda_res *res) {
  coda__conn *c = res->conn;
  const coda_req *req = &((coda__exchange *)coda__conn_exchange(c))->req;
  coda__buf *out = coda__conn_out(c);
  if (write_head(res, out, 0) != 0) {
    ext_committed(res, 0); /* the response is lost; its committed work still runs */
    return CODA_ENOMEM;
  }
  int rc = 0;
  if (!req->is_head && coda__http_status_has_body(res->status) && res->body_len) {
    if (res->body_len > COPY_BODY_MAX && res->body_kind != CODA__BODY_COPY) {
      /* Written from where it is; released once written. */
      rc = coda__conn_out_external(c, res->body, res->body_len,
                                   res->body_kind == CODA__BODY_BORROW ? res->release
                                                                       : NULL,
                                   (void *)res->body, res->release_arg);
      if (rc == 0)
        res->body_kind = CODA__BODY_NONE; /* the output owns the release now */
    } else {
      rc = coda__buf_append(out, res->body, res->body_len) ? CODA_ENOMEM : 0;
    }
  }
  coda__res_release(res);
  if (rc == 0)
    rc = coda__conn_mark_response(c, res->written_cb, res->written_arg);
  coda__conn_access_log(c, res->status);
  coda__app_count_response(res->app, req, res->status);
  ext_committed(res, rc == 0);
  return rc;
}

void coda__res_resume(coda_res *res, int rc) {
  coda__conn *c = res->conn;
  coda__exchange *x = coda__conn_exchange(c);
  if (coda__conn_closed(c)) {
    /* The client left meanwhile: nothing to send; what was committed
     * still runs, knowing it was not delivered. */
    if (res->written_cb)
      res->written_cb(res->written_arg, 0);
    ext_committed(res, 0);
    coda__conn_gate_end(c, 0);
    return;
  }
  if (rc != 0)
    coda__app_fail_response(res->app, &x->req, res, rc);
  coda__conn_gate_end(c, coda__res_commit(res) == 0);
}

void coda__res_abandon(coda_res *res) {
  if (res->written_cb)
    res->written_cb(res->written_arg, 0);
  res->ext = NULL;
  coda__conn_gate_orphan(res->conn);
}

/* ---- streaming ------------------------------------------------------- */

coda_stream *coda_res_stream(coda_res *res) {
  coda__conn *c = res->conn;
  coda__exchange *x = coda__conn_exchange(c);
  const coda__app_ext *ext = &res->app->ext;
  if (res->streaming || (res->ext && ext->stream && ext->stream(ext->data, res) != 0) ||
      coda__conn_stream_begin(c) != 0)
    return NULL;
  int chunked = x->req.head->version_minor == 1;
  if (!chunked)
    coda__conn_no_keep_alive(c); /* HTTP/1.0: the end of the body is the close */
  coda__res_release(res);
  res->streaming = 1;
  if (write_head(res, coda__conn_out(c), chunked && !x->req.is_head) != 0) {
    /* Out of memory: no stream; what the handler answers next goes on a
     * connection that closes after it. */
    coda__conn_no_keep_alive(c);
    res->streaming = 0;
    coda__conn_stream_abort(c);
    return NULL;
  }
  x->stream = (coda_stream){c, res, chunked, x->req.is_head};
  coda__conn_access_log(c, res->status);
  coda__app_count_response(res->app, &x->req, res->status);
  return &x->stream;
}

int coda_stream_write(coda_stream *s, const void *data, size_t len) {
  coda__conn *c = s->conn;
  if (coda__conn_closed(c))
    return CODA_ECLOSED;
  if (s->discard || len == 0)
    return 0;
  coda__buf *out = coda__conn_out(c);
  int rc = s->chunked ? coda__http_chunk(out, data, len)
                      : (coda__buf_append(out, data, len) ? CODA_ENOMEM : 0);
  if (rc)
    return rc;
  coda__conn_send(c);
  return 0;
}

int coda_stream_end(coda_stream *s) {
  coda__conn *c = s->conn;
  coda_res *res = s->res;
  int rc = 0;
  if (!coda__conn_closed(c)) {
    if (s->chunked && !s->discard)
      rc = coda__http_last_chunk(coda__conn_out(c));
    if (rc == 0)
      rc = coda__conn_mark_response(c, res->written_cb, res->written_arg);
    ext_committed(res, rc == 0);
    coda__conn_send(c);
  } else {
    rc = CODA_ECLOSED;
    if (res->written_cb)
      res->written_cb(res->written_arg, 0);
    ext_committed(res, 0); /* the client left; the work was accepted */
  }
  res->streaming = 0;
  coda__conn_stream_end(c);
  return rc;
}

coda_app *coda_stream_app(coda_stream *s) { return s->res->app; }
