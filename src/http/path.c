/*
 * path.c - request path normalization (see path.h). Routes match the
 * normalized path so that two spellings of one URI ("/pla%69n", "/plain")
 * reach one route, and "%2e%2e" cannot climb past a prefix that middleware
 * checked. Allocates nothing; fuzzed by fuzz/path_fuzz.c.
 */
#include "http/path.h"

#include <string.h>

int coda__hex_value(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static int unreserved(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~';
}

int coda__path_needs_normalizing(const char *path) {
  return path[0] == '/' && (strchr(path, '%') || strstr(path, "/."));
}

/* RFC 3986 5.2.4, in place on an absolute path: "." segments go, ".."
 * takes the segment before it (never above the root). */
static void remove_dot_segments(char *d) {
  size_t r = 0, w = 0;
  while (d[r]) {
    size_t s = r + 1, e = s; /* d[r] is '/'; the segment is d[s..e) */
    while (d[e] && d[e] != '/')
      e++;
    int dot = e - s == 1 && d[s] == '.',
        dotdot = e - s == 2 && d[s] == '.' && d[s + 1] == '.';
    if (dot || dotdot) {
      while (dotdot && w > 0 && d[--w] != '/') {
      }
      if (!d[e])
        d[w++] = '/'; /* "/a/." and "/a/.." end with a slash */
    } else {
      memmove(d + w, d + r, e - r);
      w += e - r;
    }
    r = e;
  }
  if (w == 0)
    d[w++] = '/';
  d[w] = '\0';
}

void coda__path_normalize(char *dst, const char *src, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int hi = src[i] == '%' && i + 2 < n ? coda__hex_value((unsigned char)src[i + 1]) : -1;
    int lo = hi >= 0 ? coda__hex_value((unsigned char)src[i + 2]) : -1;
    if (lo >= 0 && unreserved(hi * 16 + lo)) {
      dst[o++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      dst[o++] = src[i];
    }
  }
  dst[o] = '\0';
  remove_dot_segments(dst);
}

/* Whether the query parameter name k (klen bytes, percent-encoded) decodes
 * to `name`; '+' is a space, as coda_req_query() decodes it. */
static int name_is(const char *k, size_t klen, const char *name) {
  size_t i = 0;
  for (; *name; name++) {
    if (i >= klen)
      return 0;
    int c = (unsigned char)k[i];
    if (c == '%' && i + 2 < klen && coda__hex_value(k[i + 1]) >= 0 &&
        coda__hex_value(k[i + 2]) >= 0) {
      c = coda__hex_value(k[i + 1]) * 16 + coda__hex_value(k[i + 2]);
      i += 3;
    } else {
      c = c == '+' ? ' ' : c;
      i++;
    }
    if (c != (unsigned char)*name)
      return 0;
  }
  return i == klen;
}

size_t coda__http_redact_target(char *out, const char *t, size_t tlen) {
  static const char hide[] = "REDACTED";
  const char *q = memchr(t, '?', tlen);
  size_t len = q ? (size_t)(q - t) + 1 : tlen;
  memcpy(out, t, len);
  for (size_t i = len; i < tlen;) {
    const char *amp = memchr(t + i, '&', tlen - i);
    size_t plen = amp ? (size_t)(amp - (t + i)) : tlen - i;
    const char *eq = memchr(t + i, '=', plen);
    size_t klen = eq ? (size_t)(eq - (t + i)) : plen;
    if (eq && name_is(t + i, klen, "token")) {
      size_t vlen = plen - klen - 1;
      size_t keep = vlen < sizeof hide - 1 ? vlen : sizeof hide - 1;
      memcpy(out + len, t + i, klen + 1);
      memcpy(out + len + klen + 1, hide, keep);
      len += klen + 1 + keep;
    } else {
      memcpy(out + len, t + i, plen);
      len += plen;
    }
    i += plen;
    if (amp) {
      out[len++] = '&';
      i++;
    }
  }
  return len;
}
