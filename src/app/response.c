/*
 * response.c - building responses and writing them out (see coda.h).
 *
 * A response is built in the request's arena while the handler and the
 * middleware run; coda__res_commit() then serialises it into the
 * connection's output buffer in one pass. Small bodies are copied next to
 * the head, so a keep-alive response is one contiguous write; large static
 * or borrowed bodies are written from where they are. Loop thread only.
 */
#include "app/exchange.h"
#include "server/conn.h"
#include "tasks/task.h"

#include <jansson.h>
#include <strings.h>

/* Bodies up to this size are copied next to the head: one iovec beats two
 * for small writes, and the copy is cheaper than a second syscall piece. */
#define COPY_BODY_MAX 16384

const char *coda__status_reason(int status) {
  switch (status) {
  case 100: return "Continue";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 206: return "Partial Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 417: return "Expectation Failed";
  case 422: return "Unprocessable Content";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  default: return "Unknown";
  }
}

void coda__res_release(coda_res *res) {
  if (res->body_kind == CODA__BODY_BORROW && res->release)
    res->release((void *)res->body, res->release_arg);
  res->body_kind = CODA__BODY_NONE;
  res->release = NULL;
  res->body = NULL;
  res->body_len = 0;
}

void coda__res_reset(coda_res *res, coda__conn *conn, coda__arena *arena) {
  coda__res_release(res);
  res->conn = conn;
  res->arena = arena;
  res->status = 200;
  res->headers = NULL;
  res->written_cb = NULL;
  res->written_arg = NULL;
  res->streaming = 0;
  res->run = NULL; /* handed on by commit, or by the failure path */
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

static int body_allowed(int status) { return status != 204 && status != 304; }

/* Writes the status line, fixed headers and the user's headers. `framing`
 * is the Content-Length or Transfer-Encoding line, already formatted. */
static int write_head(coda_res *res, coda__buf *out, int chunked) {
  coda__conn *c = res->conn;
  coda__loop *loop = c->loop;
  int rc = 0;
  if (res->status == 200) {
    rc |= coda__buf_append_lit(out, "HTTP/1.1 200 OK\r\n");
  } else {
    const char *reason = coda__status_reason(res->status);
    rc |= coda__buf_append_lit(out, "HTTP/1.1 ");
    rc |= coda__buf_append_u64(out, (unsigned)res->status);
    rc |= coda__buf_append_lit(out, " ");
    rc |= coda__buf_append(out, reason, strlen(reason));
    rc |= coda__buf_append_lit(out, "\r\n");
  }
  coda__loop_update_date(loop);
  rc |= coda__buf_append_lit(out, "Server: coda\r\n");
  rc |= coda__buf_append(out, loop->date_line, loop->date_len);
  for (coda__res_header *h = res->headers; h; h = h->next) {
    rc |= coda__buf_append(out, h->name, h->name_len);
    rc |= coda__buf_append_lit(out, ": ");
    rc |= coda__buf_append(out, h->value, h->value_len);
    rc |= coda__buf_append_lit(out, "\r\n");
  }
  if (chunked) {
    rc |= coda__buf_append_lit(out, "Transfer-Encoding: chunked\r\n");
  } else if (body_allowed(res->status) && !res->streaming) {
    rc |= coda__buf_append_lit(out, "Content-Length: ");
    rc |= coda__buf_append_u64(out, res->body_len);
    rc |= coda__buf_append_lit(out, "\r\n");
  }
  if (!c->keep_alive)
    rc |= coda__buf_append_lit(out, "Connection: close\r\n");
  else if (c->req.head->version_minor == 0)
    rc |= coda__buf_append_lit(out, "Connection: keep-alive\r\n");
  rc |= coda__buf_append_lit(out, "\r\n");
  return rc ? CODA_ENOMEM : 0;
}

int coda__res_commit(coda_res *res) {
  coda__conn *c = res->conn;
  coda__buf *out = coda__conn_out(c);
  if (write_head(res, out, 0) != 0)
    return CODA_ENOMEM;
  int rc = 0;
  if (!c->req.is_head && body_allowed(res->status) && res->body_len) {
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
  if (rc == 0) {
    coda__res_tasks_commit(res);
  } else if (res->run) {
    /* The response is lost; its committed tasks still run. */
    coda__run_start(res->run, 0);
    res->run = NULL;
  }
  return rc;
}

/* ---- streaming ------------------------------------------------------- */

coda_stream *coda_res_stream(coda_res *res) {
  coda__conn *c = res->conn;
  if (res->streaming || c->state != CODA__CONN_BODY)
    return NULL;
  int chunked = c->req.head->version_minor == 1;
  if (!chunked)
    c->keep_alive = 0; /* HTTP/1.0: the end of the body is the close */
  coda__res_release(res);
  res->streaming = 1;
  if (write_head(res, coda__conn_out(c), chunked && !c->req.is_head) != 0) {
    res->streaming = 0;
    return NULL;
  }
  c->stream = (coda_stream){c, chunked, c->req.is_head};
  c->stream_open = 1;
  c->state = CODA__CONN_STREAMING;
  coda__conn_access_log(c, res->status);
  if (!c->dispatching)
    coda__conn_flush(c);
  return &c->stream;
}

int coda_stream_write(coda_stream *s, const void *data, size_t len) {
  coda__conn *c = s->conn;
  if (c->closed)
    return CODA_ECLOSED;
  if (s->discard || len == 0)
    return 0;
  coda__buf *out = coda__conn_out(c);
  int rc = 0;
  if (s->chunked) {
    rc |= coda__buf_append_hex(out, len);
    rc |= coda__buf_append_lit(out, "\r\n");
  }
  rc |= coda__buf_append(out, data, len);
  if (s->chunked)
    rc |= coda__buf_append_lit(out, "\r\n");
  if (rc)
    return CODA_ENOMEM;
  if (!c->dispatching)
    coda__conn_flush(c);
  return 0;
}

int coda_stream_end(coda_stream *s) {
  coda__conn *c = s->conn;
  int rc = 0;
  if (!c->closed) {
    if (s->chunked && !s->discard)
      rc = coda__buf_append_lit(coda__conn_out(c), "0\r\n\r\n") ? CODA_ENOMEM : 0;
    if (rc == 0)
      rc = coda__conn_mark_response(c, c->res.written_cb, c->res.written_arg);
    coda__res_tasks_commit(&c->res);
    if (!c->dispatching)
      coda__conn_flush(c);
  } else {
    rc = CODA_ECLOSED;
    if (c->res.written_cb)
      c->res.written_cb(c->res.written_arg, 0);
    if (c->res.run) {
      coda__run_start(c->res.run, 0); /* the client left; the work was accepted */
      c->res.run = NULL;
    }
  }
  c->stream_open = 0;
  coda__conn_stream_done(c);
  return rc;
}

coda_app *coda_stream_app(coda_stream *s) { return s->conn->loop->app; }
