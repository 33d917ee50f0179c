/*
 * router.c - route table and matching (see router.h).
 *
 * A pattern is split once, at registration, into segments that are either
 * literal text or a capture. All-literal patterns ("/plain", "/users/me")
 * are also in a hash table by path: when one of them serves the method it
 * is the best match by the rules below, found with one hash and one
 * compare. Otherwise matching walks the path's segments against each route;
 * route tables in C services are small, and a linear scan over pre-split
 * patterns beats a trie's pointer chasing until they are not.
 */
#include "app/router.h"

#include "http/parser.h"

#include <stdlib.h>
#include <string.h>

typedef struct coda__segment {
  char *text; /* literal text, or the capture name */
  size_t len;
  int capture;
} coda__segment;

struct coda__router {
  coda__route *routes;
  int n;
  int cap;
  /* All-literal routes by path: open addressing, route index + 1 (0 is an
   * empty slot), at most half full; rebuilt on each add. */
  int *literal;
  size_t literal_mask;
};

coda__router *coda__router_new(void) { return calloc(1, sizeof(coda__router)); }

static void route_free(coda__route *rt) {
  for (int i = 0; i < rt->nsegs; i++)
    free(rt->segs[i].text);
  free(rt->segs);
  free(rt->method);
  free(rt->pattern);
}

void coda__router_free(coda__router *r) {
  if (!r)
    return;
  for (int i = 0; i < r->n; i++)
    route_free(&r->routes[i]);
  free(r->routes);
  free(r->literal);
  free(r);
}

static int valid_method(const char *m) {
  if (!*m)
    return 0;
  for (const char *p = m; *p; p++)
    if (!coda__http_tchar[(unsigned char)*p])
      return 0;
  return 1;
}

/* Splits "/a/{b}/c" into segments; the pattern must start with '/'. */
static int compile_pattern(const char *pattern, coda__route *rt) {
  if (pattern[0] != '/')
    return CODA_EINVAL;
  int n = 1;
  for (const char *p = pattern + 1; *p; p++)
    n += *p == '/';
  rt->segs = calloc((size_t)n, sizeof *rt->segs);
  if (!rt->segs)
    return CODA_ENOMEM;
  const char *s = pattern + 1;
  int ncaptures = 0;
  for (int i = 0; i < n; i++) {
    const char *e = strchr(s, '/');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    const char *next = e ? e + 1 : s + len;
    coda__segment *seg = &rt->segs[rt->nsegs++];
    if (len >= 2 && s[0] == '{' && s[len - 1] == '}') {
      seg->capture = 1;
      s++;
      len -= 2;
      if (len == 0 || ++ncaptures > CODA__MAX_PARAMS)
        return CODA_EINVAL;
    } else if (memchr(s, '{', len) || memchr(s, '}', len)) {
      return CODA_EINVAL;
    } else {
      rt->nstatic++;
    }
    seg->text = strndup(s, len);
    seg->len = len;
    if (!seg->text)
      return CODA_ENOMEM;
    s = next;
  }
  return 0;
}

static uint64_t path_hash(const char *p, size_t n) {
  uint64_t h = 14695981039346656037u; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)p[i]) * 1099511628211u;
  return h;
}

static int is_literal(const coda__route *rt) { return rt->nstatic == rt->nsegs; }

static int index_literals(coda__router *r) {
  size_t size = 16;
  while (size < (size_t)r->n * 2)
    size *= 2;
  int *slots = calloc(size, sizeof *slots);
  if (!slots)
    return CODA_ENOMEM;
  for (int i = 0; i < r->n; i++) {
    const coda__route *rt = &r->routes[i];
    if (!is_literal(rt))
      continue;
    size_t at = (size_t)path_hash(rt->pattern, rt->pattern_len) & (size - 1);
    while (slots[at])
      at = (at + 1) & (size - 1);
    slots[at] = i + 1;
  }
  free(r->literal);
  r->literal = slots;
  r->literal_mask = size - 1;
  return 0;
}

int coda__router_add(coda__router *r, const char *method, const char *pattern,
                     coda_handler handler, void *user) {
  if (!method || !pattern || !handler || !valid_method(method))
    return CODA_EINVAL;
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->routes[i].method, method) == 0 &&
        strcmp(r->routes[i].pattern, pattern) == 0)
      return CODA_EEXIST;
  if (r->n == r->cap) {
    int cap = r->cap ? r->cap * 2 : 16;
    coda__route *routes = realloc(r->routes, (size_t)cap * sizeof *routes);
    if (!routes)
      return CODA_ENOMEM;
    r->routes = routes;
    r->cap = cap;
  }
  coda__route *rt = &r->routes[r->n];
  memset(rt, 0, sizeof *rt);
  rt->method = strdup(method);
  rt->pattern = strdup(pattern);
  int rc = rt->method && rt->pattern ? compile_pattern(pattern, rt) : CODA_ENOMEM;
  if (rc) {
    route_free(rt);
    return rc;
  }
  rt->handler = handler;
  rt->user = user;
  rt->pattern_len = strlen(pattern);
  rt->method_len = strlen(method);
  r->n++;
  if (index_literals(r) != 0) {
    route_free(&r->routes[--r->n]);
    return CODA_ENOMEM;
  }
  return 0;
}

coda__route *coda__router_find(coda__router *r, const char *method, const char *pattern) {
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->routes[i].method, method) == 0 &&
        strcmp(r->routes[i].pattern, pattern) == 0)
      return &r->routes[i];
  return NULL;
}

/* Matches one route's segments against the path; fills captures. */
static int match_path(const coda__route *rt, const char *path, size_t plen,
                      coda__param *params, int *nparams) {
  if (plen == 0 || path[0] != '/')
    return 0;
  if (is_literal(rt)) { /* one compare decides */
    *nparams = 0;
    return plen == rt->pattern_len && memcmp(path, rt->pattern, plen) == 0;
  }
  const char *s = path + 1, *end = path + plen;
  int np = 0;
  for (int i = 0; i < rt->nsegs; i++) {
    if (s > end)
      return 0;
    const char *e = memchr(s, '/', (size_t)(end - s));
    if (!e)
      e = end;
    size_t len = (size_t)(e - s);
    const coda__segment *seg = &rt->segs[i];
    if (seg->capture) {
      if (len == 0)
        return 0;
      params[np].name = seg->text;
      params[np].value = s;
      params[np].len = len;
      np++;
    } else if (len != seg->len || memcmp(s, seg->text, len) != 0) {
      return 0;
    }
    s = e + 1;
  }
  if (s <= end) /* the path has more segments than the pattern */
    return 0;
  *nparams = np;
  return 1;
}

static int method_serves(const coda__route *rt, const char *method, size_t mlen) {
  if (rt->method_len == mlen && memcmp(rt->method, method, mlen) == 0)
    return 2;
  if (mlen == 4 && memcmp(method, "HEAD", 4) == 0 && strcmp(rt->method, "GET") == 0)
    return 1;
  return 0;
}

/* The all-literal route for exactly this path that serves the method best,
 * or NULL (none, or none of them serves it). */
static const coda__route *match_literal(const coda__router *r, const char *method,
                                        size_t mlen, const char *path, size_t plen) {
  if (!r->literal)
    return NULL;
  const coda__route *found = NULL;
  int best = 0;
  for (size_t at = (size_t)path_hash(path, plen) & r->literal_mask; r->literal[at];
       at = (at + 1) & r->literal_mask) {
    const coda__route *rt = &r->routes[r->literal[at] - 1];
    if (rt->pattern_len != plen || memcmp(rt->pattern, path, plen) != 0)
      continue;
    int serves = method_serves(rt, method, mlen);
    if (serves > best) {
      best = serves;
      found = rt;
    }
  }
  return found;
}

void coda__router_match(const coda__router *r, const char *method, size_t mlen,
                        const char *path, size_t plen, coda__match *m) {
  int best = -1;
  coda__param params[CODA__MAX_PARAMS];
  m->nparams = 0;
  m->path_matched = 0;
  /* A literal route has the most literal segments a match can have. */
  m->route = match_literal(r, method, mlen, path, plen);
  if (m->route)
    return;
  for (int i = 0; i < r->n; i++) {
    const coda__route *rt = &r->routes[i];
    int np = 0;
    if (!match_path(rt, path, plen, params, &np))
      continue;
    int serves = method_serves(rt, method, mlen);
    if (!serves) {
      m->path_matched = 1;
      continue;
    }
    /* Literal segments weigh most; an exact HEAD route beats GET's. */
    int score = rt->nstatic * 4 + serves;
    if (score > best) {
      best = score;
      m->route = rt;
      m->nparams = np;
      memcpy(m->params, params, (size_t)np * sizeof *params);
    }
  }
}

static void allow_append(char *buf, size_t cap, const char *method) {
  size_t n = strlen(buf), mlen = strlen(method);
  /* Skip duplicates: look for the method as a whole list item. */
  for (const char *p = buf; (p = strstr(p, method)) != NULL; p += mlen)
    if ((p == buf || p[-1] == ' ') && (p[mlen] == ',' || p[mlen] == '\0'))
      return;
  if (n + mlen + 3 > cap)
    return;
  if (n)
    memcpy(buf + n, ", ", 2), n += 2;
  memcpy(buf + n, method, mlen + 1);
}

int coda__router_knows_method(const coda__router *r, const char *method, size_t mlen) {
  static const char *const standard[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                         "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  for (size_t i = 0; i < sizeof standard / sizeof standard[0]; i++)
    if (strlen(standard[i]) == mlen && memcmp(standard[i], method, mlen) == 0)
      return 1;
  for (int i = 0; i < r->n; i++)
    if (r->routes[i].method_len == mlen && memcmp(r->routes[i].method, method, mlen) == 0)
      return 1;
  return 0;
}

void coda__router_allow(const coda__router *r, const char *path, size_t plen, char *buf,
                        size_t cap) {
  coda__param params[CODA__MAX_PARAMS];
  buf[0] = '\0';
  for (int i = 0; i < r->n; i++) {
    int np;
    const coda__route *rt = &r->routes[i];
    if (path && !match_path(rt, path, plen, params, &np))
      continue;
    allow_append(buf, cap, rt->method);
    if (strcmp(rt->method, "GET") == 0)
      allow_append(buf, cap, "HEAD");
  }
}
