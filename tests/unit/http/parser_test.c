/*
 * parser_test.c - the HTTP/1.1 request parser held to RFC 9112 and RFC 9110,
 * one table row per rule.
 *
 * Every head row runs through coda__http_head_end() and then
 * coda__http_parse_head() twice: once with all bytes at hand and once with
 * the bytes arriving one at a time, and both runs must give the same answer.
 * Chunked rows run through coda__chunked_decode() the same two ways. A row
 * that fails prints its name, so a failure reads as the rule it broke.
 */
#include "http/parser.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>

#include "test.h"

/* A string literal as the (bytes, length) pair the parser takes; the length
 * counts embedded NULs. */
#define R(s) s, sizeof(s) - 1

/* What a row expects when the head never ends: more bytes are needed. */
#define NEED_MORE 1

#define MAX_FIELDS 64

#define X16 "0123456789abcdef"
#define X64 X16 X16 X16 X16
#define X256 X64 X64 X64 X64

static const coda__http_limits limits_default = {8192, MAX_FIELDS, 4096, 1048576};
static const coda__http_limits limits_uri_64 = {8192, MAX_FIELDS, 64, 1048576};
static const coda__http_limits limits_head_128 = {128, MAX_FIELDS, 64, 1048576};
static const coda__http_limits limits_fields_4 = {8192, 4, 4096, 1048576};
static const coda__http_limits limits_body_10 = {8192, MAX_FIELDS, 4096, 10};

static coda__http_field fields[MAX_FIELDS];

/* Records a failed expectation of one row, naming the row. */
static void row_fail(const char *row, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "  row \"%s\": ", row);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  test__failures_in_case++;
}

static void row_expect_int(const char *row, const char *what, long long got,
                           long long want) {
  if (got != want)
    row_fail(row, "%s: got %lld, want %lld", what, got, want);
}

/* ---- running heads -------------------------------------------------- */

static int span_inside(coda__span s, uint32_t head_len) {
  return (uint64_t)s.off + s.len <= head_len;
}

/* Every span a successful parse reports must lie inside the head. */
static void check_spans_inside(const char *row, const coda__http_head *h) {
  const coda__span spans[] = {h->method, h->target, h->path, h->query, h->host};
  for (size_t i = 0; i < sizeof spans / sizeof spans[0]; i++)
    if (!span_inside(spans[i], h->head_len))
      row_fail(row, "span %zu outside the head", i);
  for (uint32_t i = 0; i < h->nfields; i++)
    if (!span_inside(h->fields[i].name, h->head_len) ||
        !span_inside(h->fields[i].value, h->head_len))
      row_fail(row, "field %u outside the head", (unsigned)i);
}

/* Parses a head whose end is at n (n > 0) or returns the error n. */
static int parse_found_head(const char *buf, int n, const coda__http_limits *limits,
                            coda__http_head *head) {
  if (n < 0)
    return n;
  head->fields = fields;
  int rc = coda__http_parse_head(buf, (size_t)n, limits, head);
  if (rc == 0 && head->head_len != (uint32_t)n)
    return -1; /* head_len is wrong: a status no row expects */
  return rc;
}

/* Both stages over all bytes at once, as when one read got everything. The
 * bytes sit in a heap block of exactly len bytes, so that ASan sees any read
 * past the end. */
static int parse_at_once(const char *raw, size_t len, const coda__http_limits *limits,
                         coda__http_head *head) {
  char *buf = malloc(len ? len : 1);
  size_t scan = 0;
  if (!buf)
    return -2;
  memcpy(buf, raw, len);
  int n = coda__http_head_end(buf, len, &scan, limits);
  int rc = n == 0 ? NEED_MORE : parse_found_head(buf, n, limits, head);
  free(buf);
  return rc;
}

/* Both stages with the bytes arriving one at a time. The buffer past the
 * bytes delivered holds NULs, so a parser that reads ahead gets caught. */
static int parse_bytewise(const char *raw, size_t len, const coda__http_limits *limits,
                          coda__http_head *head) {
  char *buf = calloc(len + 1, 1);
  size_t scan = 0;
  int rc = NEED_MORE;
  for (size_t i = 1; buf && i <= len; i++) {
    buf[i - 1] = raw[i - 1];
    int n = coda__http_head_end(buf, i, &scan, limits);
    if (scan > i)
      n = -2; /* the cursor ran past the data */
    if (n != 0) {
      rc = parse_found_head(buf, n, limits, head);
      break;
    }
  }
  free(buf);
  return rc;
}

/* Runs a row both ways and returns the status; *head is from the run with
 * all bytes at once. */
static int run_head(const char *row, const char *raw, size_t len,
                    const coda__http_limits *limits, coda__http_head *head) {
  coda__http_head bytewise;
  int rc_bytewise = parse_bytewise(raw, len, limits, &bytewise);
  int rc = parse_at_once(raw, len, limits, head);
  row_expect_int(row, "status one byte at a time vs at once", rc_bytewise, rc);
  if (rc == 0)
    check_spans_inside(row, head);
  return rc;
}

/* ---- status rows ---------------------------------------------------- */

typedef struct status_row {
  const char *name;
  const char *raw;
  size_t len;
  int status; /* 0, NEED_MORE or the negative HTTP status */
} status_row;

static void run_status_rows(const status_row *rows, size_t n,
                            const coda__http_limits *limits) {
  for (size_t i = 0; i < n; i++) {
    coda__http_head head;
    int rc = run_head(rows[i].name, rows[i].raw, rows[i].len, limits, &head);
    row_expect_int(rows[i].name, "status", rc, rows[i].status);
  }
}

#define RUN_STATUS_ROWS(rows)                                                            \
  run_status_rows(rows, sizeof rows / sizeof rows[0], &limits_default)

#define HOST "Host: example.com\r\n"

static const status_row request_line_rows[] = {
    /* RFC 9112 3: request-line = method SP request-target SP HTTP-version */
    {"well-formed request line", R("GET / HTTP/1.1\r\n" HOST "\r\n"), 0},
    /* RFC 9110 9.1: any token is a method, registered or not */
    {"extension method", R("PURGE /a HTTP/1.1\r\n" HOST "\r\n"), 0},
    /* RFC 9112 3: exactly one SP between the parts */
    {"two spaces after method", R("GET  / HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"two spaces before version", R("GET /  HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"tab as separator", R("GET\t/ HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"space after version", R("GET / HTTP/1.1 \r\n" HOST "\r\n"), -400},
    {"missing version", R("GET /\r\n" HOST "\r\n"), -400},
    {"missing target", R("GET HTTP/1.1\r\n" HOST "\r\n"), -400},
    /* RFC 9110 9.1: method = token */
    {"method with '@'", R("G@T / HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"empty method", R(" / HTTP/1.1\r\n" HOST "\r\n"), -400},
    /* RFC 9112 3.2: no whitespace or controls inside the request-target */
    {"space in target", R("GET /a b HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"control byte in target", R("GET /a\x01z HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"DEL in target", R("GET /a\x7fz HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"NUL in target", R("GET /a\0z HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"empty target", R("GET  HTTP/1.1\r\n" HOST "\r\n"), -400},
    /* RFC 9112 3.2.1: origin-form = absolute-path [ "?" query ] */
    {"relative target", R("GET a/b HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"fragment in target", R("GET /a#b HTTP/1.1\r\n" HOST "\r\n"), -400},
    /* RFC 9112 3.2.2: absolute-form, of an http or https URI here */
    {"absolute-form", R("GET http://example.com/ HTTP/1.1\r\n" HOST "\r\n"), 0},
    {"absolute-form https", R("GET https://example.com/ HTTP/1.1\r\n" HOST "\r\n"), 0},
    {"absolute-form other scheme", R("GET ftp://example.com/ HTTP/1.1\r\n" HOST "\r\n"),
     -400},
    /* RFC 9110 4.2.1: an http URI with an empty host is invalid */
    {"absolute-form empty host", R("GET http:///a HTTP/1.1\r\n" HOST "\r\n"), -400},
    /* RFC 9110 4.2.4: userinfo in an http URI is treated as an error */
    {"absolute-form userinfo", R("GET http://u@example.com/ HTTP/1.1\r\n" HOST "\r\n"),
     -400},
    /* RFC 3986 3.2.2-3.2.3: the authority of an absolute-form target */
    {"absolute-form with a port", R("GET http://a:80/x HTTP/1.1\r\n" HOST "\r\n"), 0},
    {"absolute-form IPv6", R("GET http://[::1]:80/x HTTP/1.1\r\n" HOST "\r\n"), 0},
    {"absolute-form bad port", R("GET http://a:b/x HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"absolute-form two ports", R("GET http://a:80:80/x HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"absolute-form unclosed bracket", R("GET http://[::1/x HTTP/1.1\r\n" HOST "\r\n"),
     -400},
    {"absolute-form quote", R("GET http://a\"b/x HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"absolute-form bad percent", R("GET http://a%zz/x HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"CONNECT bad port", R("CONNECT a:b HTTP/1.1\r\nHost: a:b\r\n\r\n"), -400},
    {"CONNECT IPv6 without a port", R("CONNECT [::1] HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"CONNECT IPv6 with a port", R("CONNECT [::1]:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 0},
    {"CONNECT without a host", R("CONNECT :443 HTTP/1.1\r\nHost: a\r\n\r\n"), -400},
    {"absolute-form port but no host", R("GET http://:80/x HTTP/1.1\r\n" HOST "\r\n"),
     -400},
    /* RFC 3986 2, RFC 9112 3.2: bytes outside a URI's alphabet in the path */
    {"quote in path", R("GET /a\"b HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"'<' in path", R("GET /a<b HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"'>' in path", R("GET /a>b HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"backslash in path", R("GET /a\\b HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"'^' in path, as browsers send it", R("GET /a^b HTTP/1.1\r\n" HOST "\r\n"), 0},
    {"backtick in path", R("GET /a`b HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"braces in path", R("GET /a{b} HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"'|' in path, as browsers send it", R("GET /a|b HTTP/1.1\r\n" HOST "\r\n"), 0},
    {"braces in the query are let through",
     R("GET /a?f={\"x\":1} HTTP/1.1\r\n" HOST "\r\n"), 0},
    /* RFC 3986 2.1: pct-encoded = "%" HEXDIG HEXDIG */
    {"stray '%' in path", R("GET /a%zz HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"'%' at the end of the path", R("GET /a% HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"half an escape", R("GET /a%2 HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"half an escape before the query", R("GET /a%2?q=1 HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"'%' that would form an escape", R("GET /%%32%65 HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"escaped NUL in path", R("GET /a%00.txt HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"whole escapes", R("GET /a%2Fb%41 HTTP/1.1\r\n" HOST "\r\n"), 0},
    {"stray '%' in the query is let through", R("GET /a?q=100% HTTP/1.1\r\n" HOST "\r\n"),
     0},
    {"sub-delims in path", R("GET /a!$&'()*+,;=:@b HTTP/1.1\r\n" HOST "\r\n"), 0},
    /* RFC 9112 3.2.3: authority-form is only for CONNECT */
    {"CONNECT authority-form",
     R("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), 0},
    {"authority-form with GET", R("GET example.com:443 HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"CONNECT with origin-form", R("CONNECT /a HTTP/1.1\r\n" HOST "\r\n"), -400},
    /* RFC 9112 3.2.4: asterisk-form is only for OPTIONS */
    {"OPTIONS asterisk-form", R("OPTIONS * HTTP/1.1\r\n" HOST "\r\n"), 0},
    {"asterisk-form with GET", R("GET * HTTP/1.1\r\n" HOST "\r\n"), -400},
};

static const status_row version_rows[] = {
    /* RFC 9112 2.3: HTTP-name is case-sensitive */
    {"lowercase HTTP-name", R("GET / http/1.1\r\n" HOST "\r\n"), -400},
    /* RFC 9112 2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT */
    {"two-digit minor", R("GET / HTTP/1.10\r\n" HOST "\r\n"), -400},
    {"missing minor", R("GET / HTTP/1\r\n" HOST "\r\n"), -400},
    {"missing dot", R("GET / HTTP/11\r\n" HOST "\r\n"), -400},
    /* RFC 9110 15.6.6: a major version we do not speak is 505 */
    {"HTTP/2.0", R("GET / HTTP/2.0\r\n" HOST "\r\n"), -505},
    {"HTTP/3.0", R("GET / HTTP/3.0\r\n" HOST "\r\n"), -505},
    {"HTTP/0.9", R("GET / HTTP/0.9\r\n" HOST "\r\n"), -505},
    /* RFC 9110 6.2: a higher minor version is read as the highest we know */
    {"HTTP/1.2", R("GET / HTTP/1.2\r\n" HOST "\r\n"), 0},
    {"HTTP/1.0", R("GET / HTTP/1.0\r\n\r\n"), 0},
};

static const status_row line_ending_rows[] = {
    /* RFC 9112 2.2: a server ignores at least one CRLF before the request */
    {"leading CRLF", R("\r\nGET / HTTP/1.1\r\n" HOST "\r\n"), 0},
    /* RFC 9112 2.2: a bare LF MAY be accepted; we are strict and refuse */
    {"bare LF everywhere", R("GET / HTTP/1.1\nHost: a\n\n"), -400},
    {"bare LF after request line", R("GET / HTTP/1.1\nHost: a\r\n\r\n"), -400},
    {"bare LF after a field", R("GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n"), -400},
    {"bare LF ending the head", R("GET / HTTP/1.1\r\nHost: a\r\n\n"), -400},
    /* RFC 9112 2.2: a bare CR anywhere is invalid */
    {"bare CR in request line", R("GET /a\rb HTTP/1.1\r\n" HOST "\r\n"), -400},
    {"bare CR in field value", R("GET / HTTP/1.1\r\n" HOST "X: a\rb\r\n\r\n"), -400},
    {"bare CR ending a field", R("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n"), -400},
    {"CR CR LF", R("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n"), -400},
    /* RFC 9112 2.2: whitespace before the first field line is rejected */
    {"space before first field", R("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), -400},
    /* RFC 9112 2.2: a head without its empty line is not complete */
    {"no empty line yet", R("GET / HTTP/1.1\r\n" HOST), NEED_MORE},
};

static const status_row field_syntax_rows[] = {
    /* RFC 9112 5.1: no whitespace between field name and colon */
    {"space before colon", R("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), -400},
    {"tab before colon", R("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), -400},
    /* RFC 9112 5.2: obs-fold is rejected in a request */
    {"obs-fold with SP", R("GET / HTTP/1.1\r\n" HOST "X: a\r\n b\r\n\r\n"), -400},
    {"obs-fold with HTAB", R("GET / HTTP/1.1\r\n" HOST "X: a\r\n\tb\r\n\r\n"), -400},
    /* RFC 9110 5.1: field-name = token */
    {"'@' in name", R("GET / HTTP/1.1\r\n" HOST "Ho@st: a\r\n\r\n"), -400},
    {"space in name", R("GET / HTTP/1.1\r\n" HOST "X Y: z\r\n\r\n"), -400},
    {"'(' as name", R("GET / HTTP/1.1\r\n" HOST "(: x\r\n\r\n"), -400},
    {"empty name", R("GET / HTTP/1.1\r\n" HOST ": v\r\n\r\n"), -400},
    {"no colon", R("GET / HTTP/1.1\r\n" HOST "X-Foo\r\n\r\n"), -400},
    {"NUL in name", R("GET / HTTP/1.1\r\n" HOST "X\0Y: z\r\n\r\n"), -400},
    {"obs-text in name", R("GET / HTTP/1.1\r\n" HOST "X\xe9: z\r\n\r\n"), -400},
    /* RFC 9110 5.5: field-value has no controls but HTAB */
    {"NUL in value", R("GET / HTTP/1.1\r\n" HOST "X: a\0z\r\n\r\n"), -400},
    {"0x01 in value", R("GET / HTTP/1.1\r\n" HOST "X: a\x01z\r\n\r\n"), -400},
    {"0x08 in value", R("GET / HTTP/1.1\r\n" HOST "X: a\x08z\r\n\r\n"), -400},
    {"0x0b in value", R("GET / HTTP/1.1\r\n" HOST "X: a\x0bz\r\n\r\n"), -400},
    {"0x0c in value", R("GET / HTTP/1.1\r\n" HOST "X: a\x0cz\r\n\r\n"), -400},
    {"0x1f in value", R("GET / HTTP/1.1\r\n" HOST "X: a\x1fz\r\n\r\n"), -400},
    {"DEL in value", R("GET / HTTP/1.1\r\n" HOST "X: a\x7fz\r\n\r\n"), -400},
    {"HTAB in value", R("GET / HTTP/1.1\r\n" HOST "X: a\tz\r\n\r\n"), 0},
    {"obs-text in value", R("GET / HTTP/1.1\r\n" HOST "X: \x80\xff\r\n\r\n"), 0},
};

static const status_row host_rows[] = {
    /* RFC 9112 3.2: an HTTP/1.1 request without Host is a 400 */
    {"HTTP/1.1 without Host", R("GET / HTTP/1.1\r\nX: y\r\n\r\n"), -400},
    {"absolute-form without Host", R("GET http://example.com/ HTTP/1.1\r\n\r\n"), -400},
    /* RFC 9112 3.2: so is one with more than one Host line */
    {"repeated Host", R("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), -400},
    {"repeated Host, other case", R("GET / HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n"),
     -400},
    {"repeated Host in HTTP/1.0", R("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
     -400},
    /* RFC 9112 3.2: and one whose Host value is not a valid uri-host */
    {"space in Host value", R("GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n"), -400},
    /* RFC 3986 3.2.2-3.2.3: Host = uri-host [ ":" port ], port = *DIGIT */
    {"Host with a port", R("GET / HTTP/1.1\r\nHost: a:8080\r\n\r\n"), 0},
    {"Host with an empty port", R("GET / HTTP/1.1\r\nHost: a:\r\n\r\n"), 0},
    {"empty Host", R("GET / HTTP/1.1\r\nHost: \r\n\r\n"), 0},
    {"IPv4 Host", R("GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"), 0},
    {"IPv6 Host", R("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"), 0},
    {"percent-encoded Host", R("GET / HTTP/1.1\r\nHost: a%41b\r\n\r\n"), 0},
    {"non-digit port", R("GET / HTTP/1.1\r\nHost: a:b\r\n\r\n"), -400},
    {"two ports", R("GET / HTTP/1.1\r\nHost: a:80:80\r\n\r\n"), -400},
    {"signed port", R("GET / HTTP/1.1\r\nHost: a:+80\r\n\r\n"), -400},
    {"hex port", R("GET / HTTP/1.1\r\nHost: a:0x50\r\n\r\n"), -400},
    {"IPv6 without brackets", R("GET / HTTP/1.1\r\nHost: ::1\r\n\r\n"), -400},
    {"unclosed bracket", R("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"), -400},
    {"text after the bracket", R("GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n"), -400},
    {"empty brackets", R("GET / HTTP/1.1\r\nHost: []\r\n\r\n"), -400},
    {"bad percent-encoding", R("GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n"), -400},
    {"truncated percent-encoding", R("GET / HTTP/1.1\r\nHost: a%4\r\n\r\n"), -400},
    {"quote in Host", R("GET / HTTP/1.1\r\nHost: \"a\"\r\n\r\n"), -400},
    {"backslash in Host", R("GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n"), -400},
    {"'<' in Host", R("GET / HTTP/1.1\r\nHost: a<b\r\n\r\n"), -400},
    {"'|' in Host", R("GET / HTTP/1.1\r\nHost: a|b\r\n\r\n"), -400},
    {"userinfo in Host", R("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), -400},
    {"path in Host", R("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), -400},
    /* RFC 9110 5.1: field names are case-insensitive */
    {"lowercase host", R("GET / HTTP/1.1\r\nhost: a\r\n\r\n"), 0},
    /* RFC 9112 3.2: Host is only required of HTTP/1.1 */
    {"HTTP/1.0 without Host", R("GET / HTTP/1.0\r\n\r\n"), 0},
};

#define POST_HEAD "POST / HTTP/1.1\r\n" HOST

static const status_row content_length_rows[] = {
    /* RFC 9112 6.3: Content-Length with Transfer-Encoding is an error */
    {"Content-Length then Transfer-Encoding",
     R(POST_HEAD "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), -400},
    {"Transfer-Encoding then Content-Length",
     R(POST_HEAD "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), -400},
    /* RFC 9110 8.6: differing lengths are unrecoverable */
    {"two different lengths",
     R(POST_HEAD "Content-Length: 5\r\nContent-Length: 6\r\n\r\n"), -400},
    {"list of different lengths", R(POST_HEAD "Content-Length: 5, 6\r\n\r\n"), -400},
    /* RFC 9110 8.6: Content-Length = 1*DIGIT */
    {"plus sign", R(POST_HEAD "Content-Length: +5\r\n\r\n"), -400},
    {"minus sign", R(POST_HEAD "Content-Length: -5\r\n\r\n"), -400},
    {"hex", R(POST_HEAD "Content-Length: 0x5\r\n\r\n"), -400},
    {"empty", R(POST_HEAD "Content-Length:\r\n\r\n"), -400},
    {"only a space", R(POST_HEAD "Content-Length: \r\n\r\n"), -400},
    {"trailing letter", R(POST_HEAD "Content-Length: 5a\r\n\r\n"), -400},
    {"space inside", R(POST_HEAD "Content-Length: 1 2\r\n\r\n"), -400},
    /* RFC 9110 8.6: large numerals must not overflow into a small length */
    {"overflow", R(POST_HEAD "Content-Length: 99999999999999999999999\r\n\r\n"), -400},
    {"2^64", R(POST_HEAD "Content-Length: 18446744073709551616\r\n\r\n"), -400},
};

static const status_row transfer_encoding_rows[] = {
    /* RFC 9112 6.1: chunked must not be applied more than once */
    {"chunked twice in a list",
     R(POST_HEAD "Transfer-Encoding: chunked, chunked\r\n\r\n"), -400},
    {"chunked twice in two lines",
     R(POST_HEAD "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
     -400},
    /* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing */
    {"Transfer-Encoding in HTTP/1.0",
     R("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), -400},
    /* RFC 9112 6.1: a transfer coding we do not understand is 501 */
    {"gzip, chunked", R(POST_HEAD "Transfer-Encoding: gzip, chunked\r\n\r\n"), -501},
    /* RFC 9112 6.3: chunked not the final coding (or absent): the length
     * cannot be known, 400, whatever the other codings */
    {"gzip", R(POST_HEAD "Transfer-Encoding: gzip\r\n\r\n"), -400},
    {"identity", R(POST_HEAD "Transfer-Encoding: identity\r\n\r\n"), -400},
    {"chunked, gzip", R(POST_HEAD "Transfer-Encoding: chunked, gzip\r\n\r\n"), -400},
    {"chunked, identity", R(POST_HEAD "Transfer-Encoding: chunked, identity\r\n\r\n"),
     -400},
    {"chunked then gzip on two lines",
     R(POST_HEAD "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"), -400},
    {"empty Transfer-Encoding", R(POST_HEAD "Transfer-Encoding: \r\n\r\n"), -400},
    /* RFC 9110 5.6.1: empty list elements are ignored */
    {"leading comma", R(POST_HEAD "Transfer-Encoding: ,chunked\r\n\r\n"), 0},
    {"trailing comma", R(POST_HEAD "Transfer-Encoding: chunked ,\r\n\r\n"), 0},
    {"double comma", R(POST_HEAD "Transfer-Encoding: chunked,,\r\n\r\n"), 0},
    /* RFC 9112 7: transfer-coding names are case-insensitive */
    {"Chunked", R(POST_HEAD "Transfer-Encoding: Chunked\r\n\r\n"), 0},
};

static const status_row expect_rows[] = {
    /* RFC 9110 10.1.1: an expectation we cannot meet is 417 */
    {"unknown expectation", R(POST_HEAD "Expect: something\r\n\r\n"), -417},
    {"100-continue with more", R(POST_HEAD "Expect: 100-continue, x\r\n\r\n"), -417},
    {"100-continue", R(POST_HEAD "Expect: 100-continue\r\n\r\n"), 0},
};

TEST(request_line_rules) { RUN_STATUS_ROWS(request_line_rows); }
TEST(version_rules) { RUN_STATUS_ROWS(version_rows); }
TEST(line_ending_rules) { RUN_STATUS_ROWS(line_ending_rows); }
TEST(field_syntax_rules) { RUN_STATUS_ROWS(field_syntax_rows); }
TEST(host_rules) { RUN_STATUS_ROWS(host_rows); }
TEST(content_length_error_rules) { RUN_STATUS_ROWS(content_length_rows); }
TEST(transfer_encoding_rules) { RUN_STATUS_ROWS(transfer_encoding_rows); }
TEST(expect_rules) { RUN_STATUS_ROWS(expect_rows); }

/* ---- limits --------------------------------------------------------- */

typedef struct limit_row {
  const char *name;
  const coda__http_limits *limits;
  const char *raw;
  size_t len;
  int status;
} limit_row;

/* A request-target of exactly 64 bytes, and the 128-byte head holding it. */
#define TARGET_64 "/" X16 X16 X16 "123456789abcdef"
#define HEAD_128 "GET / HTTP/1.1\r\nHost: a\r\nX: " X64 X16 X16 "\r\n\r\n"
_Static_assert(sizeof(TARGET_64) - 1 == 64, "TARGET_64 is 64 bytes");
_Static_assert(sizeof(HEAD_128) - 1 == 128, "HEAD_128 is 128 bytes");

#define FIELDS_4 "Host: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n"

static const limit_row limit_rows[] = {
    /* RFC 9112 3: a request-target longer than we accept is 414 */
    {"target at max_uri", &limits_uri_64,
     R("GET " TARGET_64 " HTTP/1.1\r\nHost: a\r\n\r\n"), 0},
    {"target above max_uri, complete head", &limits_uri_64,
     R("GET " TARGET_64 "x HTTP/1.1\r\nHost: a\r\n\r\n"), -414},
    {"target above max_uri, head incomplete", &limits_uri_64, R("GET /" X256), -414},
    /* RFC 9112 3: the request line as a whole is bounded too; head_end()
     * refuses one longer than the limits allow, and the answer must not
     * depend on how the bytes were split into reads: a method longer than
     * any we implement is 501 (RFC 9112 3), a long target 414 */
    {"long method, short target", &limits_uri_64,
     R(X64 X64 " / HTTP/1.1\r\nHost: a\r\n\r\n"), -501},
    {"long method, head incomplete", &limits_uri_64, R(X64 X64 X64), -501},
    /* not a method at all: control bytes (a TLS hello, say) are a 400 */
    {"long binary line", &limits_uri_64, R("\x16\x03\x01" X64 X64 X64), -400},
    {"32-byte method, long target", &limits_uri_64,
     R(X16 X16 " /" X64 X64 " HTTP/1.1\r\nHost: a\r\n\r\n"), -414},
    /* RFC 6585 5: a head larger than we accept is 431 */
    {"head at max_header_bytes", &limits_head_128, R(HEAD_128), 0},
    {"head above max_header_bytes, complete", &limits_head_128,
     R("GET / HTTP/1.1\r\nHost: a\r\nX: " X64 X64 "\r\n\r\n"), -431},
    {"head above max_header_bytes, incomplete", &limits_head_128,
     R("GET / HTTP/1.1\r\nHost: a\r\nX: " X256), -431},
    {"fields at max_headers", &limits_fields_4, R("GET / HTTP/1.1\r\n" FIELDS_4 "\r\n"),
     0},
    {"fields above max_headers", &limits_fields_4,
     R("GET / HTTP/1.1\r\n" FIELDS_4 "D: 4\r\n\r\n"), -431},
    /* RFC 9110 15.5.14: a body larger than we accept is 413, decided from
     * Content-Length before any body byte arrives */
    {"Content-Length at max_body", &limits_body_10,
     R(POST_HEAD "Content-Length: 10\r\n\r\n"), 0},
    {"Content-Length above max_body", &limits_body_10,
     R(POST_HEAD "Content-Length: 11\r\n\r\n"), -413},
    {"Content-Length above default max_body", &limits_default,
     R(POST_HEAD "Content-Length: 1048577\r\n\r\n"), -413},
    {"huge Content-Length", &limits_default,
     R(POST_HEAD "Content-Length: 18446744073709551615\r\n\r\n"), -413},
};

TEST(limit_rules) {
  for (size_t i = 0; i < sizeof limit_rows / sizeof limit_rows[0]; i++) {
    const limit_row *r = &limit_rows[i];
    coda__http_head head;
    int rc = run_head(r->name, r->raw, r->len, r->limits, &head);
    row_expect_int(r->name, "status", rc, r->status);
  }
}

/* ---- flags ---------------------------------------------------------- */

typedef struct flag_row {
  const char *name;
  const char *raw;
  size_t len;
  uint32_t on;  /* flags that must be set */
  uint32_t off; /* flags that must be clear */
} flag_row;

#define KEEP_ALIVE CODA__HTTP_KEEP_ALIVE
#define EXPECT CODA__HTTP_EXPECT_CONTINUE
#define CHUNKED CODA__HTTP_CHUNKED
#define LENGTH CODA__HTTP_HAS_LENGTH
#define FORMS                                                                            \
  (CODA__HTTP_ABSOLUTE_FORM | CODA__HTTP_ASTERISK_FORM | CODA__HTTP_AUTHORITY_FORM)

static const flag_row flag_rows[] = {
    /* RFC 9112 9.3: HTTP/1.1 is persistent unless "close" is sent */
    {"1.1 default", R("GET / HTTP/1.1\r\n" HOST "\r\n"), KEEP_ALIVE, 0},
    {"1.1 close", R("GET / HTTP/1.1\r\n" HOST "Connection: close\r\n\r\n"), 0,
     KEEP_ALIVE},
    {"1.1 Close", R("GET / HTTP/1.1\r\n" HOST "Connection: Close\r\n\r\n"), 0,
     KEEP_ALIVE},
    {"1.1 close in a list", R("GET / HTTP/1.1\r\n" HOST "Connection: foo, Close\r\n\r\n"),
     0, KEEP_ALIVE},
    {"1.1 close in second line",
     R("GET / HTTP/1.1\r\n" HOST "Connection: foo\r\nConnection: close\r\n\r\n"), 0,
     KEEP_ALIVE},
    /* RFC 9110 7.6.1: connection options are tokens, not prefixes */
    {"1.1 closed is not close", R("GET / HTTP/1.1\r\n" HOST "Connection: closed\r\n\r\n"),
     KEEP_ALIVE, 0},
    /* RFC 9112 9.3: HTTP/1.0 persists only with "keep-alive" */
    {"1.0 default", R("GET / HTTP/1.0\r\n\r\n"), 0, KEEP_ALIVE},
    {"1.0 keep-alive", R("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), KEEP_ALIVE,
     0},
    {"1.0 Keep-Alive in a list",
     R("GET / HTTP/1.0\r\nConnection: foo, Keep-Alive\r\n\r\n"), KEEP_ALIVE, 0},
    {"1.0 keep-alive and close",
     R("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), 0, KEEP_ALIVE},
    {"1.0 keep-alivex", R("GET / HTTP/1.0\r\nConnection: keep-alivex\r\n\r\n"), 0,
     KEEP_ALIVE},
    /* RFC 9110 10.1.1: the 100-continue token is case-insensitive */
    {"Expect: 100-continue", R(POST_HEAD "Expect: 100-continue\r\n\r\n"), EXPECT, 0},
    {"Expect: 100-Continue", R(POST_HEAD "Expect: 100-Continue\r\n\r\n"), EXPECT, 0},
    {"no Expect", R(POST_HEAD "\r\n"), 0, EXPECT},
    /* RFC 9110 10.1.1: a 100-continue in HTTP/1.0 is ignored */
    {"Expect in HTTP/1.0", R("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"), 0,
     EXPECT},
    /* RFC 9112 6.3: the framing the body will be read with */
    {"chunked", R(POST_HEAD "Transfer-Encoding: chunked\r\n\r\n"), CHUNKED, LENGTH},
    {"chunked with OWS", R(POST_HEAD "Transfer-Encoding: \t chunked \t\r\n\r\n"), CHUNKED,
     LENGTH},
    {"Content-Length", R(POST_HEAD "Content-Length: 3\r\n\r\n"), LENGTH, CHUNKED},
    {"no body", R("GET / HTTP/1.1\r\n" HOST "\r\n"), 0, LENGTH | CHUNKED},
    /* RFC 9112 3.2: the four forms of request-target */
    {"origin-form", R("GET /a HTTP/1.1\r\n" HOST "\r\n"), 0, FORMS},
    {"absolute-form", R("GET http://a/ HTTP/1.1\r\n" HOST "\r\n"),
     CODA__HTTP_ABSOLUTE_FORM, CODA__HTTP_ASTERISK_FORM},
    {"asterisk-form", R("OPTIONS * HTTP/1.1\r\n" HOST "\r\n"), CODA__HTTP_ASTERISK_FORM,
     CODA__HTTP_ABSOLUTE_FORM},
    {"authority-form", R("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
     CODA__HTTP_AUTHORITY_FORM, CODA__HTTP_ABSOLUTE_FORM},
};

TEST(flag_rules) {
  for (size_t i = 0; i < sizeof flag_rows / sizeof flag_rows[0]; i++) {
    const flag_row *r = &flag_rows[i];
    coda__http_head head;
    int rc = run_head(r->name, r->raw, r->len, &limits_default, &head);
    row_expect_int(r->name, "status", rc, 0);
    if (rc != 0)
      continue;
    if ((head.flags & r->on) != r->on)
      row_fail(r->name, "flags 0x%x lack 0x%x", (unsigned)head.flags, (unsigned)r->on);
    if (head.flags & r->off)
      row_fail(r->name, "flags 0x%x have 0x%x", (unsigned)head.flags,
               (unsigned)(head.flags & r->off));
  }
}

/* ---- spans ---------------------------------------------------------- */

/* Checks that a span covers exactly `want`; NULL means not checked. */
static void expect_span(const char *row, const char *what, const char *buf, coda__span s,
                        const char *want) {
  if (!want)
    return;
  size_t n = strlen(want);
  if (s.len != n || memcmp(buf + s.off, want, n) != 0)
    row_fail(row, "%s is \"%.*s\", want \"%s\"", what, (int)s.len, buf + s.off, want);
}

typedef struct span_row {
  const char *name;
  const char *raw;
  size_t len;
  const char *method, *path, *query, *host; /* NULL: not checked */
  int minor;
} span_row;

static const span_row span_rows[] = {
    /* RFC 9112 3.2.1: path and query of an origin-form target */
    {"path and query", R("GET /a/b?x=1 HTTP/1.1\r\n" HOST "\r\n"), "GET", "/a/b", "x=1",
     "example.com", 1},
    {"no query", R("POST /a HTTP/1.1\r\n" HOST "\r\n"), "POST", "/a", "", "example.com",
     1},
    {"empty query", R("GET /a? HTTP/1.1\r\n" HOST "\r\n"), "GET", "/a", "", NULL, 1},
    {"first '?' splits", R("GET /a?b?c HTTP/1.1\r\n" HOST "\r\n"), "GET", "/a", "b?c",
     NULL, 1},
    {"root with query", R("GET /?x HTTP/1.1\r\n" HOST "\r\n"), "GET", "/", "x", NULL, 1},
    /* RFC 9110 9.1: the method is case-sensitive and kept as sent */
    {"extension method", R("M-SEARCH /a HTTP/1.1\r\n" HOST "\r\n"), "M-SEARCH", "/a", "",
     NULL, 1},
    /* RFC 9112 3.2.2: absolute-form; its authority takes precedence over
     * Host (RFC 9112 3.2.2, 7.2) and an empty path means "/" */
    {"absolute-form", R("GET http://example.com/a/b?x=1 HTTP/1.1\r\nHost: other\r\n\r\n"),
     "GET", "/a/b", "x=1", "example.com", 1},
    {"absolute-form without path",
     R("GET http://example.com HTTP/1.1\r\nHost: other\r\n\r\n"), "GET", "/", "",
     "example.com", 1},
    {"absolute-form with port",
     R("GET https://example.com:8443/x HTTP/1.1\r\n" HOST "\r\n"), "GET", "/x", "",
     "example.com:8443", 1},
    /* RFC 9112 5: Host value without its OWS */
    {"Host with OWS", R("GET / HTTP/1.1\r\nHost: \t example.com \t\r\n\r\n"), "GET", "/",
     "", "example.com", 1},
    /* RFC 9110 6.2: HTTP/1.2 is read as the highest 1.x we know */
    {"HTTP/1.2", R("GET / HTTP/1.2\r\n" HOST "\r\n"), "GET", "/", "", NULL, 1},
    {"HTTP/1.0 without Host", R("GET /x HTTP/1.0\r\n\r\n"), "GET", "/x", "", "", 0},
    /* RFC 9112 2.2: the leading CRLF is skipped, spans still index buf */
    {"leading CRLF", R("\r\nGET /a HTTP/1.1\r\n" HOST "\r\n"), "GET", "/a", "",
     "example.com", 1},
};

TEST(span_rules) {
  for (size_t i = 0; i < sizeof span_rows / sizeof span_rows[0]; i++) {
    const span_row *r = &span_rows[i];
    coda__http_head head;
    int rc = run_head(r->name, r->raw, r->len, &limits_default, &head);
    row_expect_int(r->name, "status", rc, 0);
    if (rc != 0)
      continue;
    expect_span(r->name, "method", r->raw, head.method, r->method);
    expect_span(r->name, "path", r->raw, head.path, r->path);
    expect_span(r->name, "query", r->raw, head.query, r->query);
    expect_span(r->name, "host", r->raw, head.host, r->host);
    row_expect_int(r->name, "version_minor", head.version_minor, r->minor);
  }
}

/* ---- field lines ---------------------------------------------------- */

typedef struct field_row {
  const char *name;
  const char *raw;
  size_t len;
  uint32_t nfields;
  uint32_t index; /* the field checked */
  const char *field_name, *field_value;
} field_row;

#define GET_HEAD "GET / HTTP/1.1\r\n" HOST

static const field_row field_rows[] = {
    /* RFC 9112 5: field-line = field-name ":" OWS field-value OWS */
    {"simple", R(GET_HEAD "X: a\r\n\r\n"), 2, 1, "X", "a"},
    {"Host is a field too", R(GET_HEAD "\r\n"), 1, 0, "Host", "example.com"},
    {"OWS spaces trimmed", R(GET_HEAD "X:   a b   \r\n\r\n"), 2, 1, "X", "a b"},
    {"OWS tabs trimmed", R(GET_HEAD "X:\t\ta\tb\t\t\r\n\r\n"), 2, 1, "X", "a\tb"},
    {"no OWS", R(GET_HEAD "X:a\r\n\r\n"), 2, 1, "X", "a"},
    {"empty value", R(GET_HEAD "X:\r\n\r\n"), 2, 1, "X", ""},
    {"only OWS", R(GET_HEAD "X: \t \r\n\r\n"), 2, 1, "X", ""},
    {"colon in value", R(GET_HEAD "X: a:b\r\n\r\n"), 2, 1, "X", "a:b"},
    /* RFC 9110 5.5: obs-text is allowed in values and kept as is */
    {"obs-text", R(GET_HEAD "X: caf\xc3\xa9\r\n\r\n"), 2, 1, "X", "caf\xc3\xa9"},
    {"obs-text bounds", R(GET_HEAD "X: \x80\xff\r\n\r\n"), 2, 1, "X", "\x80\xff"},
    /* RFC 9110 5.1: names are tokens, kept in the case they were sent */
    {"every tchar in a name", R(GET_HEAD "!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n"), 2, 1,
     "!#$%&'*+-.^_`|~09azAZ", "v"},
    {"name case kept", R(GET_HEAD "CoNtEnT-TyPe: text/html\r\n\r\n"), 2, 1,
     "CoNtEnT-TyPe", "text/html"},
    {"third field", R(GET_HEAD "A: 1\r\nB: 2\r\n\r\n"), 3, 2, "B", "2"},
};

TEST(field_value_rules) {
  for (size_t i = 0; i < sizeof field_rows / sizeof field_rows[0]; i++) {
    const field_row *r = &field_rows[i];
    coda__http_head head;
    int rc = run_head(r->name, r->raw, r->len, &limits_default, &head);
    row_expect_int(r->name, "status", rc, 0);
    if (rc != 0)
      continue;
    row_expect_int(r->name, "nfields", head.nfields, r->nfields);
    if (r->index >= head.nfields)
      continue;
    const coda__http_field *f = &head.fields[r->index];
    expect_span(r->name, "field name", r->raw, f->name, r->field_name);
    expect_span(r->name, "field value", r->raw, f->value, r->field_value);
  }
}

/* ---- Content-Length values ------------------------------------------ */

typedef struct length_row {
  const char *name;
  const char *raw;
  size_t len;
  uint64_t length;
} length_row;

static const length_row length_rows[] = {
    {"plain", R(POST_HEAD "Content-Length: 5\r\n\r\n"), 5},
    {"zero", R(POST_HEAD "Content-Length: 0\r\n\r\n"), 0},
    /* RFC 9110 8.6: 1*DIGIT allows leading zeros */
    {"leading zeros", R(POST_HEAD "Content-Length: 005\r\n\r\n"), 5},
    {"OWS", R(POST_HEAD "Content-Length: \t 5 \t\r\n\r\n"), 5},
    {"lowercase name", R(POST_HEAD "content-length: 7\r\n\r\n"), 7},
    /* RFC 9110 8.6: identical repeated values may be read as one */
    {"same length twice", R(POST_HEAD "Content-Length: 5\r\nContent-Length: 5\r\n\r\n"),
     5},
    {"same length in a list", R(POST_HEAD "Content-Length: 5, 5\r\n\r\n"), 5},
    {"at the default max_body", R(POST_HEAD "Content-Length: 1048576\r\n\r\n"), 1048576},
};

TEST(content_length_values) {
  for (size_t i = 0; i < sizeof length_rows / sizeof length_rows[0]; i++) {
    const length_row *r = &length_rows[i];
    coda__http_head head;
    int rc = run_head(r->name, r->raw, r->len, &limits_default, &head);
    row_expect_int(r->name, "status", rc, 0);
    if (rc != 0)
      continue;
    row_expect_int(r->name, "HAS_LENGTH", !!(head.flags & LENGTH), 1);
    row_expect_int(r->name, "content_length", (long long)head.content_length,
                   (long long)r->length);
  }
}

/* ---- head_end ------------------------------------------------------- */

typedef struct head_len_row {
  const char *name;
  const char *raw;
  size_t len;
  size_t head_len; /* the bytes before it are the head */
} head_len_row;

#define PIPELINED_GET "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"

static const head_len_row head_len_rows[] = {
    /* RFC 9112 2.1: the head ends with the empty line */
    {"head alone", R("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 27},
    /* RFC 9112 2.2: leading empty lines count as head bytes */
    {"leading CRLF", R("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 29},
    /* RFC 9112 6: the body follows the head and is not part of it */
    {"body after head", R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"),
     47},
    {"body looking like a head",
     R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n\r\n\r\n"), 47},
    /* RFC 9112 9.3.2: pipelined requests are separate heads */
    {"pipelined", R("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" PIPELINED_GET), 28},
    {"body then pipelined",
     R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
       "3\r\n\r\nabc" PIPELINED_GET),
     47},
    /* RFC 9112 2.2: a body byte is not checked as a head byte */
    {"NUL and bare LF in body",
     R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n\0\n\r"), 47},
};

TEST(head_len_excludes_what_follows) {
  for (size_t i = 0; i < sizeof head_len_rows / sizeof head_len_rows[0]; i++) {
    const head_len_row *r = &head_len_rows[i];
    size_t scan = 0;
    int n = coda__http_head_end(r->raw, r->len, &scan, &limits_default);
    row_expect_int(r->name, "head_end", n, (long long)r->head_len);
    if (n <= 0)
      continue;
    coda__http_head head = {.fields = fields};
    int rc = coda__http_parse_head(r->raw, (size_t)n, &limits_default, &head);
    row_expect_int(r->name, "parse_head", rc, 0);
    row_expect_int(r->name, "head_len", head.head_len, r->head_len);
  }
}

/* A second request in the same buffer parses from where the first ended. */
TEST(pipelined_second_request) {
  static const char raw[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" PIPELINED_GET;
  size_t len = sizeof raw - 1, scan = 0;
  int n = coda__http_head_end(raw, len, &scan, &limits_default);
  REQUIRE(n == 28);
  const char *second = raw + n;
  size_t scan2 = 0;
  int n2 = coda__http_head_end(second, len - (size_t)n, &scan2, &limits_default);
  CHECK_EQ_INT(n2, len - (size_t)n);
  coda__http_head head = {.fields = fields};
  REQUIRE(coda__http_parse_head(second, (size_t)n2, &limits_default, &head) == 0);
  expect_span("second request", "path", second, head.path, "/2");
}

/* The *scan cursor lets a head arriving one byte at a time be found exactly
 * when its last byte arrives. */
TEST(head_end_one_byte_at_a_time) {
  for (size_t i = 0; i < sizeof head_len_rows / sizeof head_len_rows[0]; i++) {
    const head_len_row *r = &head_len_rows[i];
    size_t scan = 0;
    for (size_t got = 1; got <= r->head_len; got++) {
      int n = coda__http_head_end(r->raw, got, &scan, &limits_default);
      long long want = got == r->head_len ? (long long)r->head_len : 0;
      if (n != want) {
        row_fail(r->name, "after %zu bytes head_end is %d, want %lld", got, n, want);
        break;
      }
      if (scan > got) {
        row_fail(r->name, "scan %zu past the %zu bytes", scan, got);
        break;
      }
    }
  }
}

/* ---- chunked bodies ------------------------------------------------- */

#define MAX_TRAILER 4096

typedef struct chunk_result {
  int rc;
  size_t in, out;
  uint64_t total;
  char *buf; /* decoded bytes are buf[0 .. out) */
} chunk_result;

/* Decodes raw[0..len) in a heap buffer of exactly len bytes, so that ASan
 * sees a read past the end, making `step` more bytes visible per call.
 * Bytes not yet delivered are NULs, so reading ahead changes the answer. */
static chunk_result decode(const char *raw, size_t len, size_t step, uint64_t max_body,
                           uint32_t max_trailer) {
  chunk_result r = {0, 0, 0, 0, calloc(len ? len : 1, 1)};
  coda__chunked d;
  coda__chunked_init(&d);
  if (!r.buf)
    r.rc = -1;
  for (size_t avail = 0; r.buf && avail < len;) {
    size_t next = len - avail < step ? len : avail + step;
    memcpy(r.buf + avail, raw + avail, next - avail);
    avail = next;
    r.rc = coda__chunked_decode(&d, r.buf, avail, &r.in, &r.out, max_body, max_trailer);
    if (r.out > r.in || r.in > avail)
      r.rc = -2; /* broke the in-place contract */
    if (r.rc != 0)
      break;
  }
  r.total = d.total;
  return r;
}

/* Runs a body at once and byte by byte; both runs must agree. */
static chunk_result run_chunked(const char *row, const char *raw, size_t len,
                                uint64_t max_body, uint32_t max_trailer) {
  chunk_result once = decode(raw, len, len, max_body, max_trailer);
  chunk_result bytewise = decode(raw, len, 1, max_body, max_trailer);
  row_expect_int(row, "status one byte at a time vs at once", bytewise.rc, once.rc);
  if (once.rc == 1 && bytewise.rc == 1 &&
      (bytewise.out != once.out || bytewise.in != once.in ||
       memcmp(bytewise.buf, once.buf, once.out) != 0))
    row_fail(row, "decoding one byte at a time gives other bytes");
  free(bytewise.buf);
  return once;
}

typedef struct chunk_row {
  const char *name;
  const char *raw;
  size_t len;
  const char *body;
  size_t body_len;
  size_t rest; /* bytes after the body, left unread */
} chunk_row;

static const chunk_row chunk_rows[] = {
    /* RFC 9112 7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF */
    {"one chunk", R("3\r\nabc\r\n0\r\n\r\n"), R("abc"), 0},
    {"two chunks", R("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), R("abcde"), 0},
    {"empty body", R("0\r\n\r\n"), R(""), 0},
    /* RFC 9112 7.1: chunk-size = 1*HEXDIG, either case (RFC 5234 2.3) */
    {"uppercase hex", R("A\r\n0123456789\r\n0\r\n\r\n"), R("0123456789"), 0},
    {"lowercase hex", R("a\r\n0123456789\r\n0\r\n\r\n"), R("0123456789"), 0},
    {"two digits upper", R("1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"),
     R("abcdefghijklmnopqrstuvwxyz"), 0},
    {"two digits lower", R("1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"),
     R("abcdefghijklmnopqrstuvwxyz"), 0},
    {"leading zeros", R("003\r\nabc\r\n0000\r\n\r\n"), R("abc"), 0},
    /* RFC 9112 7.1.1: chunk extensions are ignored */
    {"extension token", R("3;a=b\r\nabc\r\n0\r\n\r\n"), R("abc"), 0},
    {"extension quoted", R("3;a=\"q\"\r\nabc\r\n0\r\n\r\n"), R("abc"), 0},
    {"extension quoted with ';'", R("3;a=\"x; y\"\r\nabc\r\n0\r\n\r\n"), R("abc"), 0},
    {"extension name only", R("3;a\r\nabc\r\n0\r\n\r\n"), R("abc"), 0},
    {"two extensions", R("3;a=b;c=d\r\nabc\r\n0\r\n\r\n"), R("abc"), 0},
    {"extension on last chunk", R("3\r\nabc\r\n0;x=y\r\n\r\n"), R("abc"), 0},
    /* RFC 9112 7.1.1: BWS before ';' */
    {"BWS before extension", R("3 ;a=b\r\nabc\r\n0\r\n\r\n"), R("abc"), 0},
    /* RFC 9112 7.1.2: the trailer section is read and ignored */
    {"one trailer", R("3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"), R("abc"), 0},
    {"two trailers", R("0\r\nA: 1\r\nB: 2\r\n\r\n"), R(""), 0},
    /* RFC 9112 7.1: chunk-data is any octets */
    {"CRLF as data", R("2\r\n\r\n\r\n0\r\n\r\n"), R("\r\n"), 0},
    {"NUL as data", R("3\r\na\0c\r\n0\r\n\r\n"), R("a\0c"), 0},
    {"size line as data", R("5\r\n0\r\n\r\n\r\n0\r\n\r\n"), R("0\r\n\r\n"), 0},
    /* RFC 9112 9.3.2: the bytes after the body belong to the next request */
    {"next request after body", R("3\r\nabc\r\n0\r\n\r\nGET"), R("abc"), 3},
};

TEST(chunked_valid_bodies) {
  for (size_t i = 0; i < sizeof chunk_rows / sizeof chunk_rows[0]; i++) {
    const chunk_row *r = &chunk_rows[i];
    chunk_result got =
        run_chunked(r->name, r->raw, r->len, limits_default.max_body, MAX_TRAILER);
    row_expect_int(r->name, "status", got.rc, 1);
    if (got.rc == 1) {
      row_expect_int(r->name, "in", (long long)got.in, (long long)(r->len - r->rest));
      row_expect_int(r->name, "out", (long long)got.out, (long long)r->body_len);
      row_expect_int(r->name, "total", (long long)got.total, (long long)r->body_len);
      if (got.out == r->body_len && memcmp(got.buf, r->body, r->body_len))
        row_fail(r->name, "decoded bytes differ");
    }
    free(got.buf);
  }
}

typedef struct chunk_status_row {
  const char *name;
  const char *raw;
  size_t len;
  int status; /* 0 (need more) or a negative HTTP status */
} chunk_status_row;

static const chunk_status_row chunk_status_rows[] = {
    /* RFC 9112 7.1: a body is complete only after the last chunk's CRLF */
    {"size only", R("3"), 0},
    {"data incomplete", R("3\r\nab"), 0},
    {"final CRLF incomplete", R("3\r\nabc\r\n0\r\n\r"), 0},
    /* RFC 9112 7.1: chunk-size = 1*HEXDIG */
    {"bad hex", R("zz\r\n"), -400},
    {"hex then junk", R("3z\r\nabc\r\n0\r\n\r\n"), -400},
    {"empty size line", R("\r\nabc\r\n0\r\n\r\n"), -400},
    {"extension without size", R(";a=b\r\nabc\r\n0\r\n\r\n"), -400},
    {"negative size", R("-3\r\nabc\r\n0\r\n\r\n"), -400},
    {"0x prefix", R("0x3\r\nabc\r\n0\r\n\r\n"), -400},
    /* RFC 9112 7.1: sizes must not overflow the integer they are read into */
    {"17 hex digits", R("10000000000000000\r\n"), -400},
    {"17 digits, small value", R("00000000000000001\r\n"), -400},
    {"above 2^63", R("FFFFFFFFFFFFFFFF\r\n"), -400},
    /* RFC 9112 7.1: chunk-data is followed by CRLF */
    {"missing CRLF after data", R("3\r\nabcX\r\n0\r\n\r\n"), -400},
    {"LF only after data", R("3\r\nabc\n0\r\n\r\n"), -400},
    {"CR only after data", R("3\r\nabc\r0\r\n\r\n"), -400},
    {"junk then LF after data", R("3\r\nabcX\n0\r\n\r\n"), -400},
    /* RFC 9112 2.2 and 7.1: lines end in CRLF, never a bare LF */
    {"bare LF after size", R("3\nabc\r\n0\r\n\r\n"), -400},
    {"bare CR after size", R("3\rXabc\r\n0\r\n\r\n"), -400},
    {"bare LF after last chunk", R("0\n\r\n"), -400},
    {"bare LF ending the body", R("0\r\n\n"), -400},
    /* RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name ... ) */
    {"extension without name", R("3;\r\nabc\r\n0\r\n\r\n"), -400},
    {"control byte in extension", R("3;a\x01\r\nabc\r\n0\r\n\r\n"), -400},
    {"LF in extension", R("3;a\nb\r\nabc\r\n0\r\n\r\n"), -400},
    /* RFC 9112 7.1.2: trailer-section = *( field-line CRLF ) */
    {"trailer without colon", R("0\r\nX\r\n\r\n"), -400},
    {"space before colon in trailer", R("0\r\nX : v\r\n\r\n"), -400},
    {"obs-fold in trailer", R("0\r\nX: a\r\n b\r\n\r\n"), -400},
    {"NUL in trailer", R("0\r\nX: a\0b\r\n\r\n"), -400},
    {"bare LF in trailer", R("0\r\nX: a\n\r\n"), -400},
    {"CR CR LF in trailer", R("0\r\nX: a\r\r\n\r\n"), -400},
};

TEST(chunked_bad_and_partial_bodies) {
  for (size_t i = 0; i < sizeof chunk_status_rows / sizeof chunk_status_rows[0]; i++) {
    const chunk_status_row *r = &chunk_status_rows[i];
    chunk_result got =
        run_chunked(r->name, r->raw, r->len, limits_default.max_body, MAX_TRAILER);
    row_expect_int(r->name, "status", got.rc, r->status);
    free(got.buf);
  }
}

typedef struct chunk_limit_row {
  const char *name;
  uint64_t max_body;
  uint32_t max_trailer;
  const char *raw;
  size_t len;
  int status;
} chunk_limit_row;

static const chunk_limit_row chunk_limit_rows[] = {
    /* RFC 9110 15.5.14: a body larger than we accept is 413 */
    {"body at max_body", 5, MAX_TRAILER, R("5\r\nabcde\r\n0\r\n\r\n"), 1},
    {"one chunk above max_body", 4, MAX_TRAILER, R("5\r\nabcde\r\n0\r\n\r\n"), -413},
    {"chunks adding up above max_body", 5, MAX_TRAILER,
     R("3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"), -413},
    /* RFC 6585 5: trailers larger than we accept are 431 */
    {"trailers above the limit", 1048576, 8, R("0\r\nX-Long: 0123456789\r\n\r\n"), -431},
};

TEST(chunked_limits) {
  for (size_t i = 0; i < sizeof chunk_limit_rows / sizeof chunk_limit_rows[0]; i++) {
    const chunk_limit_row *r = &chunk_limit_rows[i];
    chunk_result got = run_chunked(r->name, r->raw, r->len, r->max_body, r->max_trailer);
    row_expect_int(r->name, "status", got.rc, r->status);
    free(got.buf);
  }
}

/* The server decodes in the connection buffer, right after the head. */
TEST(chunked_body_after_head) {
  char raw[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
               "\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\nGET";
  size_t len = sizeof raw - 1, scan = 0;
  int n = coda__http_head_end(raw, len, &scan, &limits_default);
  REQUIRE(n > 0);
  coda__http_head head = {.fields = fields};
  REQUIRE(coda__http_parse_head(raw, (size_t)n, &limits_default, &head) == 0);
  REQUIRE(head.flags & CODA__HTTP_CHUNKED);
  coda__chunked d;
  coda__chunked_init(&d);
  size_t in = (size_t)n, out = (size_t)n;
  CHECK_EQ_INT(coda__chunked_decode(&d, raw, len, &in, &out, 1048576, MAX_TRAILER), 1);
  CHECK_EQ_INT(out - (size_t)n, 9);
  CHECK(memcmp(raw + n, "Wikipedia", 9) == 0);
  CHECK_EQ_INT(len - in, 3);
  CHECK(memcmp(raw + in, "GET", 3) == 0);
}

RUN_TESTS(http_parser, TEST_CASE(request_line_rules), TEST_CASE(version_rules),
          TEST_CASE(line_ending_rules), TEST_CASE(field_syntax_rules),
          TEST_CASE(host_rules), TEST_CASE(content_length_error_rules),
          TEST_CASE(content_length_values), TEST_CASE(transfer_encoding_rules),
          TEST_CASE(expect_rules), TEST_CASE(limit_rules), TEST_CASE(flag_rules),
          TEST_CASE(span_rules), TEST_CASE(field_value_rules),
          TEST_CASE(head_len_excludes_what_follows), TEST_CASE(pipelined_second_request),
          TEST_CASE(head_end_one_byte_at_a_time), TEST_CASE(chunked_valid_bodies),
          TEST_CASE(chunked_bad_and_partial_bodies), TEST_CASE(chunked_limits),
          TEST_CASE(chunked_body_after_head))
