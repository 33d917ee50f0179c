/*
 * parser.c - the HTTP/1.1 request parser (RFC 9112, RFC 9110).
 *
 * Owns nothing, allocates nothing, keeps no state between calls except what
 * the caller holds (the scan cursor, the chunked decoder). Any thread may
 * call it. It is strict on purpose: every rule whose violation lets two
 * implementations frame a message differently (bare CR or LF, obs-fold,
 * whitespace before a colon, Content-Length with Transfer-Encoding,
 * conflicting lengths) is an error, never a guess.
 */
#include "http/parser.h"

#include <string.h>

/* RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" /
 * "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
const uint8_t coda__http_tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1,  ['|'] = 1,
    ['~'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,  ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['A'] = 1, ['B'] = 1,  ['C'] = 1,
    ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,  ['J'] = 1,
    ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,  ['Q'] = 1,
    ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1,  ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1,  ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1,
    ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,  ['s'] = 1,
    ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1,  ['z'] = 1,
};

static inline int field_value_char(unsigned char c) { return coda__http_value_char(c); }

/* Bytes allowed in a request-target: visible ASCII. RFC 3986 leaves no room
 * for spaces, controls or raw 8-bit bytes. */
static inline int target_char(unsigned char c) { return c > 0x20 && c < 0x7f; }

static inline int is_ows(char c) { return c == ' ' || c == '\t'; }

static int ascii_lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int span_ieq(const char *p, size_t n, const char *lit) {
  size_t m = strlen(lit);
  if (n != m)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (ascii_lower((unsigned char)p[i]) != lit[i])
      return 0;
  return 1;
}

static size_t skip_leading_crlf(const char *buf, size_t len) {
  size_t pos = 0;
  while (pos + 1 < len && buf[pos] == '\r' && buf[pos + 1] == '\n')
    pos += 2;
  return pos;
}

/* Slack beyond max_uri that a request line may take: a method, two spaces,
 * "HTTP/1.1" and CRLF. Methods longer than this are not worth serving. */
#define REQUEST_LINE_SLACK 48
#define MAX_METHOD (REQUEST_LINE_SLACK - 16)

/* A request line past its limit: 414 if the target is what is long, but a
 * method longer than any we serve is a 501 (RFC 9112 3: a server that
 * receives a method longer than any it implements SHOULD answer 501). */
static int line_too_long(const char *buf, size_t start, size_t len) {
  for (size_t i = start; i < len && i - start <= MAX_METHOD; i++) {
    if (buf[i] == ' ')
      return i == start ? -400 : -414;
    if (!coda__http_tchar[(unsigned char)buf[i]])
      return -400; /* not a method at all (TLS bytes, say) */
  }
  return -501;
}

int coda__http_head_end(const char *buf, size_t len, size_t *scan,
                        const coda__http_limits *limits) {
  size_t start = skip_leading_crlf(buf, len);
  if (start < len && buf[start] == '\n')
    return -400; /* a bare LF: RFC 9112 2.2, we do not accept it */
  size_t line = *scan > start ? *scan : start;
  for (;;) {
    const char *nl = memchr(buf + line, '\n', len - line);
    if (!nl)
      break;
    size_t p = (size_t)(nl - buf);
    if (buf[p - 1] != '\r')
      return -400;
    if (line == start && p - start > (size_t)limits->max_uri + REQUEST_LINE_SLACK)
      return line_too_long(buf, start, p);
    if (p == line + 1) {
      if (p + 1 > limits->max_header_bytes)
        return -431;
      return (int)(p + 1);
    }
    line = p + 1;
    if (line > limits->max_header_bytes)
      return -431;
  }
  *scan = line;
  if (line == start && len - start > (size_t)limits->max_uri + REQUEST_LINE_SLACK)
    return line_too_long(buf, start, len);
  if (len > limits->max_header_bytes)
    return -431;
  return 0;
}

/* ---- request line ---------------------------------------------------- */

static void set_span(coda__span *s, size_t off, size_t len) {
  s->off = (uint32_t)off;
  s->len = (uint32_t)len;
}

/* Bytes that visible ASCII allows but RFC 3986 keeps out of a URI, and
 * that browsers percent-encode in a path (WHATWG's path set; not '|' or
 * '^', which they send raw, so those pass). A path with one is a 400 (RFC
 * 9112 3.2): never a real path, and a classic way around a filter that
 * reads it differently. Queries are left alone, where sloppy clients send
 * raw braces and quotes. */
static int unsafe_path_char(unsigned char c) {
  return c == '"' || c == '<' || c == '>' || c == '\\' || c == '`' || c == '{' ||
         c == '}';
}

static int is_hex(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_alnum(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RFC 3986 3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ). */
static int reg_name_char(unsigned char c) {
  return is_alnum(c) || (c != 0 && strchr("-._~!$&'()*+,;=", c) != NULL);
}

/* RFC 3986 3.2.2-3.2.3: host [ ":" port ], where host is an IP-literal in
 * brackets, or an IPv4 address or reg-name, and port = *DIGIT. Userinfo
 * ("user@host") is deprecated for http(s) and refused. Empty is valid (a
 * Host with no authority to name). */
static int valid_authority(const char *p, size_t n) {
  size_t i = 0;
  if (n > 0 && p[0] == '[') {
    const char *close = memchr(p, ']', n);
    if (!close || close == p + 1)
      return 0;
    for (i = 1; p + i < close; i++)
      if (!is_hex((unsigned char)p[i]) && p[i] != ':' &&
          !reg_name_char((unsigned char)p[i]))
        return 0;
    i++;
  } else {
    while (i < n && p[i] != ':') {
      unsigned char c = (unsigned char)p[i];
      if (c == '%' && i + 2 < n && is_hex((unsigned char)p[i + 1]) &&
          is_hex((unsigned char)p[i + 2]))
        i += 3;
      else if (c != '%' && reg_name_char(c))
        i++;
      else
        return 0;
    }
  }
  if (i < n && p[i++] != ':')
    return 0;
  for (; i < n; i++)
    if (p[i] < '0' || p[i] > '9')
      return 0;
  return 1;
}

/* Where an authority in a request-target ends: the first '/', '?' or end. */
static size_t authority_end(const char *buf, size_t a, size_t tend) {
  while (a < tend && buf[a] != '/' && buf[a] != '?' && buf[a] != '#')
    a++;
  return a;
}

/* Splits an origin path "/a/b?x" into path and query spans. '#' has no place
 * in a request-target (RFC 9112 3.2). */
static int split_path_query(const char *buf, size_t p0, size_t end,
                            coda__http_head *out) {
  const char *q = memchr(buf + p0, '?', end - p0);
  size_t pend = q ? (size_t)(q - buf) : end;
  if (memchr(buf + p0, '#', end - p0))
    return -400;
  for (size_t i = p0; i < pend; i++) {
    if (unsafe_path_char((unsigned char)buf[i]))
      return -400;
    /* RFC 3986 2.1: pct-encoded = "%" HEXDIG HEXDIG. A stray '%' would let
     * the normalization routes see (http/path.c) form a new escape, and a
     * "%00" would end the decoded path early in a handler's hands. */
    if (buf[i] == '%' &&
        (i + 2 >= pend || !is_hex((unsigned char)buf[i + 1]) ||
         !is_hex((unsigned char)buf[i + 2]) || (buf[i + 1] == '0' && buf[i + 2] == '0')))
      return -400;
  }
  set_span(&out->path, p0, pend - p0);
  if (q)
    set_span(&out->query, pend + 1, end - pend - 1);
  return 0;
}

static int parse_absolute_form(const char *buf, size_t t0, size_t tend,
                               size_t version_slash, coda__http_head *out) {
  size_t n = tend - t0, skip;
  if (n > 7 && span_ieq(buf + t0, 7, "http://"))
    skip = 7;
  else if (n > 8 && span_ieq(buf + t0, 8, "https://"))
    skip = 8;
  else
    return -400;
  size_t a0 = t0 + skip, a = authority_end(buf, a0, tend);
  if (a == a0 || buf[a0] == ':' || !valid_authority(buf + a0, a - a0))
    return -400; /* RFC 9110 4.2.1: an http URI has a non-empty host */
  set_span(&out->host, a0, a - a0);
  out->flags |= CODA__HTTP_ABSOLUTE_FORM;
  if (a == tend) {
    /* No path: it means "/". The span points at the '/' of "HTTP/" so that
     * every span stays inside the caller's buffer. */
    set_span(&out->path, version_slash, 1);
    return 0;
  }
  if (buf[a] == '?') {
    set_span(&out->path, version_slash, 1);
    set_span(&out->query, a + 1, tend - a - 1);
    return memchr(buf + a, '#', tend - a) ? -400 : 0;
  }
  if (buf[a] != '/')
    return -400;
  return split_path_query(buf, a, tend, out);
}

static int parse_target(const char *buf, size_t t0, size_t tend, size_t version_slash,
                        coda__http_head *out) {
  const char *method = buf + out->method.off;
  size_t mlen = out->method.len;
  if (mlen == 7 && memcmp(method, "CONNECT", 7) == 0) {
    /* authority-form: host:port, nothing else (RFC 9112 3.2.3). */
    if (authority_end(buf, t0, tend) != tend || !valid_authority(buf + t0, tend - t0))
      return -400;
    /* The port is required: its ':' comes after an IP-literal's ']'. */
    const char *close = buf[t0] == '[' ? memchr(buf + t0, ']', tend - t0) : buf + t0;
    if (buf[t0] == ':' || !close || !memchr(close, ':', (size_t)(buf + tend - close)))
      return -400;
    out->flags |= CODA__HTTP_AUTHORITY_FORM;
    set_span(&out->path, t0, tend - t0);
    return 0;
  }
  if (buf[t0] == '/')
    return split_path_query(buf, t0, tend, out);
  if (buf[t0] == '*' && tend - t0 == 1) {
    if (mlen != 7 || memcmp(method, "OPTIONS", 7) != 0)
      return -400;
    out->flags |= CODA__HTTP_ASTERISK_FORM;
    set_span(&out->path, t0, 1);
    return 0;
  }
  return parse_absolute_form(buf, t0, tend, version_slash, out);
}

static int parse_request_line(const char *buf, size_t len, size_t *posp,
                              const coda__http_limits *limits, coda__http_head *out) {
  size_t pos = *posp, m0 = pos;
  while (pos < len && coda__http_tchar[(unsigned char)buf[pos]])
    pos++;
  if (pos == m0 || pos >= len || buf[pos] != ' ')
    return -400;
  set_span(&out->method, m0, pos - m0);
  size_t t0 = ++pos;
  while (pos < len && target_char((unsigned char)buf[pos]))
    pos++;
  if (pos == t0 || pos >= len || buf[pos] != ' ')
    return -400;
  if (pos - t0 > limits->max_uri)
    return -414;
  set_span(&out->target, t0, pos - t0);
  size_t tend = pos++;
  /* HTTP-version = "HTTP/" DIGIT "." DIGIT, then CRLF. */
  if (len - pos < 10 || memcmp(buf + pos, "HTTP/", 5) != 0)
    return -400;
  const char *v = buf + pos;
  if (v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9' ||
      v[8] != '\r' || v[9] != '\n')
    return -400;
  if (v[5] != '1')
    return -505;
  out->version_minor = v[7] == '0' ? 0 : 1;
  int rc = parse_target(buf, t0, tend, pos + 4, out);
  if (rc)
    return rc;
  *posp = pos + 10;
  return 0;
}

/* ---- header fields --------------------------------------------------- */

typedef struct {
  int has_host;
  int has_te;
  int te_chunked; /* how many times "chunked" appears */
  int te_last_chunked;
  int te_unknown;
  int conn_close;
  int conn_keep_alive;
} field_state;

/* Calls fn on each element of a comma-separated list, OWS trimmed. Empty
 * elements are passed too, so callers decide whether they are allowed. */
typedef int (*list_fn)(const char *p, size_t n, void *arg);

static int for_each_list_item(const char *p, size_t n, list_fn fn, void *arg) {
  size_t i = 0;
  for (;;) {
    size_t s = i;
    while (i < n && p[i] != ',')
      i++;
    size_t a = s, b = i;
    while (a < b && is_ows(p[a]))
      a++;
    while (b > a && is_ows(p[b - 1]))
      b--;
    int rc = fn(p + a, b - a, arg);
    if (rc)
      return rc;
    if (i == n)
      return 0;
    i++;
  }
}

typedef struct {
  uint64_t value;
  int seen;
} length_state;

static int length_item(const char *p, size_t n, void *arg) {
  length_state *ls = arg;
  if (n == 0)
    return -400;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9')
      return -400;
    unsigned d = (unsigned)(p[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -400;
    v = v * 10 + d;
  }
  if (ls->seen && ls->value != v)
    return -400;
  ls->value = v;
  ls->seen = 1;
  return 0;
}

static int te_item(const char *p, size_t n, void *arg) {
  field_state *fs = arg;
  if (n == 0)
    return 0; /* RFC 9110 5.6.1: empty list elements are ignored */
  if (span_ieq(p, n, "chunked")) {
    fs->te_chunked++;
    fs->te_last_chunked = 1;
    return 0;
  }
  fs->te_last_chunked = 0;
  fs->te_unknown = 1;
  return 0;
}

static int connection_item(const char *p, size_t n, void *arg) {
  field_state *fs = arg;
  if (span_ieq(p, n, "close"))
    fs->conn_close = 1;
  else if (span_ieq(p, n, "keep-alive"))
    fs->conn_keep_alive = 1;
  return 0;
}

static int interpret_field(const char *buf, const coda__http_field *f, field_state *fs,
                           length_state *ls, coda__http_head *out) {
  const char *name = buf + f->name.off, *val = buf + f->value.off;
  size_t nlen = f->name.len, vlen = f->value.len;
  switch (nlen) {
  case 4:
    if (!span_ieq(name, nlen, "host"))
      return 0;
    if (fs->has_host)
      return -400; /* RFC 9112 3.2: more than one Host is a 400 */
    fs->has_host = 1;
    if (!valid_authority(val, vlen))
      return -400; /* RFC 9112 3.2: an invalid Host is a 400 */
    if (!(out->flags & CODA__HTTP_ABSOLUTE_FORM))
      out->host = f->value;
    return 0;
  case 6:
    if (!span_ieq(name, nlen, "expect"))
      return 0;
    if (!span_ieq(val, vlen, "100-continue"))
      return -417;
    if (out->version_minor == 1)
      out->flags |= CODA__HTTP_EXPECT_CONTINUE;
    return 0;
  case 10:
    if (!span_ieq(name, nlen, "connection"))
      return 0;
    return for_each_list_item(val, vlen, connection_item, fs);
  case 14:
    if (!span_ieq(name, nlen, "content-length"))
      return 0;
    return for_each_list_item(val, vlen, length_item, ls);
  case 17:
    if (!span_ieq(name, nlen, "transfer-encoding"))
      return 0;
    fs->has_te = 1;
    return for_each_list_item(val, vlen, te_item, fs);
  default:
    return 0;
  }
}

/* Parses one field line at *posp; *posp moves past its CRLF. */
static int parse_field_line(const char *buf, size_t len, size_t *posp,
                            coda__http_field *f) {
  size_t pos = *posp, n0 = pos;
  if (is_ows(buf[pos]))
    return -400; /* obs-fold, RFC 9112 5.2 */
  while (pos < len && coda__http_tchar[(unsigned char)buf[pos]])
    pos++;
  if (pos == n0 || pos >= len || buf[pos] != ':')
    return -400; /* empty name, bad name byte, or space before the colon */
  set_span(&f->name, n0, pos - n0);
  pos++;
  while (pos < len && is_ows(buf[pos]))
    pos++;
  size_t v0 = pos;
  while (pos < len && field_value_char((unsigned char)buf[pos]))
    pos++;
  if (pos + 1 >= len || buf[pos] != '\r' || buf[pos + 1] != '\n')
    return -400; /* bare CR, NUL or another control byte */
  size_t vend = pos;
  while (vend > v0 && is_ows(buf[vend - 1]))
    vend--;
  set_span(&f->value, v0, vend - v0);
  *posp = pos + 2;
  return 0;
}

static int finish_framing(const field_state *fs, const length_state *ls,
                          const coda__http_limits *limits, coda__http_head *out) {
  if (fs->has_te) {
    if (ls->seen || out->version_minor == 0)
      return -400; /* RFC 9112 6.1 and 6.3: ambiguous framing */
    /* RFC 9112 6.3: chunked not last (or absent) leaves the length
     * unknown: 400. RFC 9112 6.1: chunked at most once. Only then is a
     * coding we do not know a 501 (RFC 9112 6.1). */
    if (fs->te_chunked != 1 || !fs->te_last_chunked)
      return -400;
    if (fs->te_unknown)
      return -501;
    out->flags |= CODA__HTTP_CHUNKED;
  } else if (ls->seen) {
    if (ls->value > limits->max_body)
      return -413;
    out->content_length = ls->value;
    out->flags |= CODA__HTTP_HAS_LENGTH;
  }
  if (out->version_minor == 1 && !fs->has_host)
    return -400; /* RFC 9112 3.2 */
  int keep =
      out->version_minor == 1 ? !fs->conn_close : fs->conn_keep_alive && !fs->conn_close;
  if (keep)
    out->flags |= CODA__HTTP_KEEP_ALIVE;
  return 0;
}

int coda__http_parse_head(const char *buf, size_t len, const coda__http_limits *limits,
                          coda__http_head *out) {
  coda__http_field *fields = out->fields;
  memset(out, 0, sizeof *out);
  out->fields = fields;
  if (len > limits->max_header_bytes)
    return -431;
  size_t pos = skip_leading_crlf(buf, len);
  const char *eol = memchr(buf + pos, '\n', len - pos);
  if (eol && (size_t)(eol - buf) - pos > (size_t)limits->max_uri + REQUEST_LINE_SLACK)
    return -414; /* the same bound coda__http_head_end applies */
  int rc = parse_request_line(buf, len, &pos, limits, out);
  if (rc)
    return rc;
  field_state fs = {0};
  length_state ls = {0};
  while (pos < len && buf[pos] != '\r') {
    if (out->nfields == limits->max_headers)
      return -431;
    coda__http_field *f = &fields[out->nfields];
    if ((rc = parse_field_line(buf, len, &pos, f)) != 0)
      return rc;
    out->nfields++;
    if ((rc = interpret_field(buf, f, &fs, &ls, out)) != 0)
      return rc;
  }
  if (pos + 2 != len || buf[pos + 1] != '\n')
    return -400;
  out->head_len = (uint32_t)len;
  return finish_framing(&fs, &ls, limits, out);
}

/* ---- chunked bodies -------------------------------------------------- */

enum {
  CH_SIZE,      /* hex digits of the chunk size */
  CH_SIZE_WS,   /* BWS after the size, before ';' or CR */
  CH_EXT_NAME0, /* chunk-ext (RFC 9112 7.1.1), checked and ignored: */
  CH_EXT_NAME,  /*   BWS ";" BWS name [ BWS "=" BWS value ] */
  CH_EXT_POST_NAME,
  CH_EXT_VALUE0,
  CH_EXT_TOKEN,
  CH_EXT_QUOTED,
  CH_EXT_QUOTED_ESC,
  CH_EXT_POST_VALUE,
  CH_SIZE_LF, /* the LF ending the size line */
  CH_DATA,    /* chunk data */
  CH_DATA_CR, /* the CRLF after chunk data */
  CH_DATA_LF,
  CH_TRAILER,  /* start of a trailer line, or the final CRLF */
  CH_TR_NAME,  /* trailer field name */
  CH_TR_VALUE, /* trailer field value, ignored, up to CR */
  CH_TR_LF,
  CH_FINAL_LF,
  CH_DONE
};

/* 15 hex digits keep a chunk size below 2^60, far above any body limit, and
 * make the overflow check a digit count. */
#define MAX_CHUNK_SIZE_DIGITS 15

void coda__chunked_init(coda__chunked *d) { memset(d, 0, sizeof *d); }

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = (unsigned char)ascii_lower(c);
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* One byte of a chunk extension. Extensions are ignored, but only once
 * they parse: a lenient reader here is a smuggling vector when a proxy in
 * front reads the same bytes differently. */
static int extension_step(coda__chunked *d, unsigned char c) {
  int ows = c == ' ' || c == '\t', tchar = coda__http_tchar[c];
  switch (d->state) {
  case CH_EXT_NAME0:
    d->state = tchar ? CH_EXT_NAME : d->state;
    return tchar || ows ? 0 : -400;
  case CH_EXT_NAME:
  case CH_EXT_POST_NAME:
    if (tchar && d->state == CH_EXT_NAME)
      return 0;
    if (ows)
      d->state = CH_EXT_POST_NAME;
    else if (c == '=')
      d->state = CH_EXT_VALUE0;
    else if (c == ';')
      d->state = CH_EXT_NAME0;
    else if (c == '\r')
      d->state = CH_SIZE_LF;
    else
      return -400;
    return 0;
  case CH_EXT_VALUE0:
    if (ows)
      return 0;
    if (c == '"')
      d->state = CH_EXT_QUOTED;
    else if (tchar)
      d->state = CH_EXT_TOKEN;
    else
      return -400;
    return 0;
  case CH_EXT_QUOTED:
    if (c == '"')
      d->state = CH_EXT_POST_VALUE;
    else if (c == '\\')
      d->state = CH_EXT_QUOTED_ESC;
    else if (!field_value_char(c))
      return -400;
    return 0;
  case CH_EXT_QUOTED_ESC:
    d->state = CH_EXT_QUOTED;
    return field_value_char(c) ? 0 : -400;
  default: /* CH_EXT_TOKEN, CH_EXT_POST_VALUE */
    if (tchar && d->state == CH_EXT_TOKEN)
      return 0;
    if (ows)
      d->state = CH_EXT_POST_VALUE;
    else if (c == ';')
      d->state = CH_EXT_NAME0;
    else if (c == '\r')
      d->state = CH_SIZE_LF;
    else
      return -400;
    return 0;
  }
}

/* One byte of the framing (everything but chunk data). */
static int chunked_step(coda__chunked *d, unsigned char c, uint64_t max_body,
                        uint32_t max_trailer_bytes) {
  switch (d->state) {
  case CH_SIZE: {
    int h = hex_value(c);
    if (h >= 0) {
      if (++d->ndigits > MAX_CHUNK_SIZE_DIGITS)
        return -400;
      d->remaining = d->remaining * 16 + (uint64_t)h;
      return 0;
    }
    if (d->ndigits == 0)
      return -400;
    if (c == ' ' || c == '\t')
      d->state = CH_SIZE_WS;
    else if (c == ';')
      d->state = CH_EXT_NAME0;
    else if (c == '\r')
      d->state = CH_SIZE_LF;
    else
      return -400;
    return 0;
  }
  case CH_SIZE_WS:
    if (c == ';')
      d->state = CH_EXT_NAME0;
    else if (c == '\r')
      d->state = CH_SIZE_LF;
    else if (c != ' ' && c != '\t')
      return -400;
    return 0;
  case CH_EXT_NAME0:
  case CH_EXT_NAME:
  case CH_EXT_POST_NAME:
  case CH_EXT_VALUE0:
  case CH_EXT_TOKEN:
  case CH_EXT_QUOTED:
  case CH_EXT_QUOTED_ESC:
  case CH_EXT_POST_VALUE:
    if (++d->trailer_bytes > max_trailer_bytes)
      return -431;
    return extension_step(d, c);
  case CH_SIZE_LF:
    if (c != '\n')
      return -400;
    if (d->remaining == 0) {
      d->state = CH_TRAILER;
      return 0;
    }
    if (d->remaining > max_body || d->total + d->remaining > max_body)
      return -413;
    d->state = CH_DATA;
    return 0;
  case CH_DATA_CR:
    if (c != '\r')
      return -400;
    d->state = CH_DATA_LF;
    return 0;
  case CH_DATA_LF:
    if (c != '\n')
      return -400;
    d->state = CH_SIZE;
    d->ndigits = 0;
    d->remaining = 0;
    return 0;
  case CH_TRAILER:
    if (c == '\r') {
      d->state = CH_FINAL_LF;
      return 0;
    }
    if (!coda__http_tchar[c])
      return -400;
    d->state = CH_TR_NAME;
    break;
  case CH_TR_NAME:
    if (c == ':')
      d->state = CH_TR_VALUE;
    else if (!coda__http_tchar[c])
      return -400;
    break;
  case CH_TR_VALUE:
    if (c == '\r')
      d->state = CH_TR_LF;
    else if (!field_value_char(c))
      return -400;
    break;
  case CH_TR_LF:
    if (c != '\n')
      return -400;
    d->state = CH_TRAILER;
    break;
  case CH_FINAL_LF:
    if (c != '\n')
      return -400;
    d->state = CH_DONE;
    return 0;
  default:
    return -400;
  }
  /* Only trailer bytes get here. */
  if (++d->trailer_bytes > max_trailer_bytes)
    return -431;
  return 0;
}

int coda__chunked_decode(coda__chunked *d, char *buf, size_t len, size_t *in, size_t *out,
                         uint64_t max_body, uint32_t max_trailer_bytes) {
  size_t i = *in, o = *out;
  int rc = 0;
  while (i < len && d->state != CH_DONE) {
    if (d->state == CH_DATA) {
      size_t n = len - i;
      if (n > d->remaining)
        n = (size_t)d->remaining;
      if (o != i)
        memmove(buf + o, buf + i, n);
      i += n;
      o += n;
      d->remaining -= n;
      d->total += n;
      if (d->remaining == 0)
        d->state = CH_DATA_CR;
      continue;
    }
    rc = chunked_step(d, (unsigned char)buf[i], max_body, max_trailer_bytes);
    if (rc)
      break;
    i++;
  }
  *in = i;
  *out = o;
  if (rc)
    return rc;
  return d->state == CH_DONE ? 1 : 0;
}
