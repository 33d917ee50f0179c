/*
 * request.c - what a handler reads of a request (see coda.h, exchange.h).
 *
 * The head stays in the connection's read buffer; coda__req_begin() writes
 * NULs over the delimiters that end each string (the space after the method
 * and the target, the colon after a field name, the byte after a value), so
 * strings are handed out without copying. Anything decoded goes to the
 * request's arena. Loop thread only.
 */
#include "app/exchange.h"
#include "http/path.h"

#include <strings.h>

static const char *normalize_path(coda__arena *a, const char *p);

void coda__req_begin(coda_req *req, coda_app *app, coda__conn *conn,
                     const coda__request *r) {
  const coda__http_head *head = r->head;
  char *base = r->base;
  coda__arena *arena = coda__conn_arena(conn);
  req->app = app;
  req->conn = conn;
  req->arena = arena;
  req->head = head;
  req->base = base;
  req->id = r->id;
  req->path = NULL;
  req->match.route = NULL;
  req->match.nparams = 0;
  req->body = r->body;
  req->body_len = r->body_len;
  base[head->method.off + head->method.len] = '\0';
  base[head->target.off + head->target.len] = '\0';
  req->method = base + head->method.off;
  req->target = base + head->target.off;
  req->is_head = head->method.len == 4 && memcmp(req->method, "HEAD", 4) == 0;
  uint32_t target_end = head->target.off + head->target.len;
  req->query_string = head->query.len ? base + head->query.off : "";
  if (head->path.off + head->path.len == target_end)
    req->path_raw = base + head->path.off; /* already ends with the target */
  else
    req->path_raw = coda__arena_strndup(arena, base + head->path.off, head->path.len);
  if (!req->path_raw)
    req->path_raw = "/";
  else if (!(req->path_raw = normalize_path(arena, req->path_raw)))
    req->path_raw = ""; /* out of memory: no route matches, never the raw form */
  for (uint32_t i = 0; i < head->nfields; i++) {
    const coda__http_field *f = &head->fields[i];
    base[f->name.off + f->name.len] = '\0';
    base[f->value.off + f->value.len] = '\0';
  }
}

/* Routes see the normalized path (http/path.h). A path that cannot change
 * costs one scan and no copy; NULL when the arena is out of memory. */
static const char *normalize_path(coda__arena *a, const char *p) {
  if (!coda__path_needs_normalizing(p))
    return p;
  size_t n = strlen(p);
  char *d = coda__arena_alloc(a, n + 1);
  if (d)
    coda__path_normalize(d, p, n);
  return d;
}

size_t coda__percent_decode(char *dst, const char *src, size_t n, int plus_is_space) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    char ch = src[i];
    if (ch == '%' && i + 2 < n) {
      int hi = coda__hex_value((unsigned char)src[i + 1]);
      int lo = coda__hex_value((unsigned char)src[i + 2]);
      if (hi >= 0 && lo >= 0) {
        dst[o++] = (char)(hi * 16 + lo);
        i += 2;
        continue;
      }
    } else if (ch == '+' && plus_is_space) {
      ch = ' ';
    }
    dst[o++] = ch;
  }
  return o;
}

/* Decodes into a fresh NUL-terminated arena string. */
static char *decode_copy(coda__arena *a, const char *s, size_t n, int plus) {
  char *d = coda__arena_alloc(a, n + 1);
  if (!d)
    return NULL;
  d[coda__percent_decode(d, s, n, plus)] = '\0';
  return d;
}

const char *coda_req_method(const coda_req *req) { return req->method; }
const char *coda_req_target(const coda_req *req) { return req->target; }
const char *coda_req_query_string(const coda_req *req) { return req->query_string; }
int coda_req_version(const coda_req *req) { return req->head->version_minor; }
const char *coda_req_peer(const coda_req *req) { return coda__conn_peer(req->conn); }
uint64_t coda_req_id(const coda_req *req) { return req->id; }
void *coda_req_alloc(coda_req *req, size_t size) {
  return coda__arena_alloc(req->arena, size);
}
void *coda_req_loop(coda_req *req) { return coda__loop_uv(coda__conn_loop(req->conn)); }
coda_app *coda_req_app(const coda_req *req) { return req->app; }

const char *coda_req_path(const coda_req *req) {
  coda_req *r = (coda_req *)req; /* the decoded path is cached */
  if (r->path)
    return r->path;
  if (!strchr(r->path_raw, '%'))
    return r->path_raw;
  r->path = decode_copy(r->arena, r->path_raw, strlen(r->path_raw), 0);
  return r->path ? r->path : r->path_raw;
}

const char *coda_req_query(coda_req *req, const char *name) {
  const char *q = req->query_string;
  size_t nlen = strlen(name);
  while (*q) {
    const char *amp = strchr(q, '&');
    size_t plen = amp ? (size_t)(amp - q) : strlen(q);
    const char *eq = memchr(q, '=', plen);
    size_t klen = eq ? (size_t)(eq - q) : plen;
    char *key = decode_copy(req->arena, q, klen, 1);
    if (key && strlen(key) == nlen && memcmp(key, name, nlen) == 0) {
      if (!eq)
        return "";
      return decode_copy(req->arena, eq + 1, plen - klen - 1, 1);
    }
    if (!amp)
      break;
    q = amp + 1;
  }
  return NULL;
}

const char *coda_req_param(const coda_req *req, const char *name) {
  for (int i = 0; i < req->match.nparams; i++)
    if (strcmp(req->match.params[i].name, name) == 0)
      return req->param_values[i];
  return NULL;
}

const char *coda_req_header(const coda_req *req, const char *name) {
  const coda__http_head *h = req->head;
  for (uint32_t i = 0; i < h->nfields; i++)
    if (strcasecmp(req->base + h->fields[i].name.off, name) == 0)
      return req->base + h->fields[i].value.off;
  return NULL;
}

int coda_req_header_count(const coda_req *req) { return (int)req->head->nfields; }

int coda_req_header_at(const coda_req *req, int i, const char **name,
                       const char **value) {
  if (i < 0 || (uint32_t)i >= req->head->nfields)
    return CODA_EINVAL;
  *name = req->base + req->head->fields[i].name.off;
  *value = req->base + req->head->fields[i].value.off;
  return 0;
}

const char *coda_req_body(const coda_req *req, size_t *len) {
  if (len)
    *len = req->body_len;
  return req->body;
}

int coda__req_decode_params(coda_req *req) {
  for (int i = 0; i < req->match.nparams; i++) {
    const coda__param *p = &req->match.params[i];
    req->param_values[i] = decode_copy(req->arena, p->value, p->len, 0);
    if (!req->param_values[i])
      return CODA_ENOMEM;
  }
  return 0;
}
