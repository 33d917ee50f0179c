/*
 * parser_fuzz.c - libFuzzer target for the HTTP/1.1 request parser.
 *
 * Each input is treated as the bytes of one connection: find the head with
 * coda__http_head_end(), parse it, and when the body is chunked decode the
 * bytes after the head. It runs twice, with wide and with narrow limits, so
 * that every limit path is reachable from small inputs.
 *
 * Beyond ASan and UBSan, it traps (__builtin_trap) when an invariant of the
 * contract in src/http/parser.h breaks: a span outside the head, a head that
 * depends on how the bytes were split into reads, a status the contract does
 * not list, a framing flag that disagrees with the fields it came from, or a
 * decoder whose output overtakes its input. Every buffer handed to the
 * parser is a heap block of exactly the size given, so any read past the
 * end is an ASan report.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc
 *        fuzz/parser_fuzz.c src/http/parser.c -o parser_fuzz
 * Run:   ./parser_fuzz -dict=fuzz/http.dict CORPUS_COPY fuzz/corpus
 */
#include "http/parser.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(cond)                                                           \
  do {                                                                         \
    if (!(cond))                                                               \
      __builtin_trap();                                                        \
  } while (0)

#define MAX_TRAILER_BYTES 256

static const coda__http_limits limits_wide = {8192, 64, 4096, 1 << 20};
static const coda__http_limits limits_narrow = {256, 4, 32, 16};

/* ---- small independent readings of the head ---------------------------- */

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* Case-insensitive comparison of n bytes with a lowercase literal. */
static int equals_ci(const char *p, size_t n, const char *lit) {
  if (n != strlen(lit))
    return 0;
  for (size_t i = 0; i < n; i++)
    if (lower((unsigned char)p[i]) != lit[i])
      return 0;
  return 1;
}

static int span_inside(coda__span s, uint64_t end) {
  return (uint64_t)s.off + s.len <= end;
}

static int span_within(coda__span inner, coda__span outer) {
  return inner.off >= outer.off &&
         (uint64_t)inner.off + inner.len <= (uint64_t)outer.off + outer.len;
}

static int all_tchar(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!coda__http_tchar[(unsigned char)p[i]])
      return 0;
  return n > 0;
}

/* RFC 9110 5.5: no controls but HTAB, no OWS at either end. */
static int clean_value(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return 0;
  }
  return n == 0 || (!is_ows(p[0]) && !is_ows(p[n - 1]));
}

/* Calls fn on each OWS-trimmed element of a comma-separated value. */
typedef void (*item_fn)(const char *p, size_t n, void *arg);

static void each_item(const char *p, size_t n, item_fn fn, void *arg) {
  size_t i = 0;
  while (i <= n) {
    size_t a = i, b;
    while (i < n && p[i] != ',')
      i++;
    b = i++;
    while (a < b && is_ows(p[a]))
      a++;
    while (b > a && is_ows(p[b - 1]))
      b--;
    fn(p + a, b - a, arg);
  }
}

/* Every element of an accepted Content-Length is the reported length. */
static void length_item(const char *p, size_t n, void *arg) {
  uint64_t want = *(const uint64_t *)arg, v = 0;
  ASSERT(n > 0);
  for (size_t i = 0; i < n; i++) {
    ASSERT(p[i] >= '0' && p[i] <= '9');
    unsigned digit = (unsigned)(p[i] - '0');
    ASSERT(v <= (UINT64_MAX - digit) / 10); /* no silent wrap-around */
    v = v * 10 + digit;
  }
  ASSERT(v == want);
}

typedef struct connection_options {
  int close, keep_alive;
} connection_options;

static void connection_item(const char *p, size_t n, void *arg) {
  connection_options *o = arg;
  if (equals_ci(p, n, "close"))
    o->close = 1;
  if (equals_ci(p, n, "keep-alive"))
    o->keep_alive = 1;
}

/* RFC 9112 6.1: chunked, exactly once, is the only coding we accept. */
typedef struct codings {
  int count, chunked;
} codings;

static void coding_item(const char *p, size_t n, void *arg) {
  codings *c = arg;
  if (n == 0)
    return; /* RFC 9110 5.6.1: empty elements do not count */
  c->count++;
  c->chunked += equals_ci(p, n, "chunked");
}

/* ---- the head ---------------------------------------------------------- */

static void check_field_syntax(const char *buf, const coda__http_head *h) {
  uint32_t prev_end = h->target.off + h->target.len;
  for (uint32_t i = 0; i < h->nfields; i++) {
    const coda__http_field *f = &h->fields[i];
    ASSERT(span_inside(f->name, h->head_len));
    ASSERT(span_inside(f->value, h->head_len));
    ASSERT(f->name.off > prev_end && f->name.off + f->name.len < h->head_len);
    ASSERT(all_tchar(buf + f->name.off, f->name.len));
    ASSERT(buf[f->name.off + f->name.len] == ':');
    ASSERT(f->value.off > f->name.off + f->name.len);
    ASSERT(clean_value(buf + f->value.off, f->value.len));
    prev_end = f->value.off + f->value.len;
  }
}

static void check_request_line(const char *buf, const coda__http_head *h,
                               const coda__http_limits *lim) {
  const uint32_t forms = CODA__HTTP_ABSOLUTE_FORM | CODA__HTTP_ASTERISK_FORM |
                         CODA__HTTP_AUTHORITY_FORM;
  uint32_t form = h->flags & forms;
  ASSERT((form & (form - 1)) == 0); /* at most one form */
  ASSERT(all_tchar(buf + h->method.off, h->method.len));
  ASSERT(h->method.off + h->method.len < h->target.off);
  ASSERT(h->target.len > 0 && h->target.len <= lim->max_uri);
  for (uint32_t i = 0; i < h->target.len; i++) {
    unsigned char c = (unsigned char)buf[h->target.off + i];
    ASSERT(c > 0x20 && c != 0x7f);
  }
  if (h->query.len > 0) {
    ASSERT(span_within(h->query, h->target));
    ASSERT(buf[h->query.off - 1] == '?');
  }
  if (form == CODA__HTTP_ASTERISK_FORM || form == CODA__HTTP_AUTHORITY_FORM)
    return;
  ASSERT(h->path.len > 0 && buf[h->path.off] == '/');
  ASSERT(!memchr(buf + h->path.off, '?', h->path.len));
  if (!span_within(h->path, h->target))
    ASSERT(form == CODA__HTTP_ABSOLUTE_FORM && h->path.len == 1);
  if (form == CODA__HTTP_ABSOLUTE_FORM)
    ASSERT(h->host.len > 0 && span_within(h->host, h->target));
}

/* The flags must agree with what the fields say, read independently. */
static void check_framing(const char *buf, const coda__http_head *h,
                          const coda__http_limits *lim) {
  int hosts = 0, lengths = 0, encodings = 0, expects = 0;
  connection_options conn = {0, 0};
  codings te = {0, 0};
  for (uint32_t i = 0; i < h->nfields; i++) {
    const coda__http_field *f = &h->fields[i];
    const char *name = buf + f->name.off, *value = buf + f->value.off;
    if (equals_ci(name, f->name.len, "host")) {
      hosts++;
      if (!(h->flags & CODA__HTTP_ABSOLUTE_FORM))
        ASSERT(h->host.off == f->value.off && h->host.len == f->value.len);
    } else if (equals_ci(name, f->name.len, "content-length")) {
      lengths++;
      uint64_t want = h->content_length;
      each_item(value, f->value.len, length_item, &want);
    } else if (equals_ci(name, f->name.len, "transfer-encoding")) {
      encodings++;
      each_item(value, f->value.len, coding_item, &te);
    } else if (equals_ci(name, f->name.len, "expect")) {
      expects++;
      ASSERT(equals_ci(value, f->value.len, "100-continue"));
    } else if (equals_ci(name, f->name.len, "connection")) {
      each_item(value, f->value.len, connection_item, &conn);
    }
  }
  ASSERT(hosts <= 1 && (h->version_minor == 0 || hosts == 1));
  ASSERT(!!(h->flags & CODA__HTTP_CHUNKED) == (encodings > 0));
  ASSERT(!(encodings > 0 && (lengths > 0 || h->version_minor == 0)));
  ASSERT(encodings == 0 || (te.count == 1 && te.chunked == 1));
  ASSERT(!!(h->flags & CODA__HTTP_HAS_LENGTH) == (lengths > 0 && !encodings));
  if (h->flags & CODA__HTTP_HAS_LENGTH)
    ASSERT(h->content_length <= lim->max_body);
  if (h->flags & CODA__HTTP_EXPECT_CONTINUE)
    ASSERT(expects > 0 && h->version_minor == 1);
  int keep =
      h->version_minor == 1 ? !conn.close : conn.keep_alive && !conn.close;
  ASSERT(!!(h->flags & CODA__HTTP_KEEP_ALIVE) == keep);
}

static void check_head(const char *buf, int n, const coda__http_head *h,
                       const coda__http_limits *lim) {
  ASSERT(h->head_len == (uint32_t)n);
  ASSERT(h->version_minor <= 1);
  ASSERT((h->flags & ~(uint32_t)0x7f) == 0);
  ASSERT(h->nfields <= lim->max_headers);
  const coda__span spans[] = {h->method, h->target, h->path, h->query, h->host};
  for (size_t i = 0; i < sizeof spans / sizeof spans[0]; i++)
    ASSERT(span_inside(spans[i], h->head_len));
  check_request_line(buf, h, lim);
  check_field_syntax(buf, h);
  check_framing(buf, h, lim);
}

static int head_end_status_ok(int n) {
  return n >= 0 || n == -400 || n == -414 || n == -431 || n == -501; /* 501: a long method */
}

static int parse_status_ok(int rc) {
  return rc == 0 || rc == -400 || rc == -413 || rc == -414 || rc == -417 ||
         rc == -431 || rc == -501 || rc == -505;
}

/* head_end over the data arriving `step` bytes per read, in a buffer whose
 * undelivered part is zeroed so that reading ahead changes the answer. */
static int head_end_in_steps(const char *data, size_t size, size_t step,
                             const coda__http_limits *lim) {
  char *buf = calloc(size ? size : 1, 1);
  size_t scan = 0, avail = 0;
  int n = 0;
  ASSERT(buf);
  while (n == 0 && avail < size) {
    size_t next = size - avail < step ? size : avail + step;
    memcpy(buf + avail, data + avail, next - avail);
    avail = next;
    n = coda__http_head_end(buf, avail, &scan, lim);
    ASSERT(scan <= avail);
  }
  free(buf);
  return n;
}

/* The head found, or the error, must not depend on how the bytes were
 * split into reads. */
static void check_split_reads(const char *data, size_t size, int whole,
                              const coda__http_limits *lim) {
  const size_t steps[] = {1, size / 3 + 1};
  for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
    int n = head_end_in_steps(data, size, steps[i], lim);
    if (n > 0)
      ASSERT(n == whole);
    else if (whole < 0)
      ASSERT(n < 0);
    else
      ASSERT(n == whole);
  }
}

/* ---- chunked bodies ---------------------------------------------------- */

typedef struct decoded {
  int rc;
  size_t in, out;
  char *buf;
} decoded;

/* Decodes body[0..len) in a heap copy, `step` bytes per read. */
static decoded decode_in_steps(const char *body, size_t len, size_t step,
                               uint64_t max_body) {
  decoded r = {0, 0, 0, calloc(len ? len : 1, 1)};
  coda__chunked d;
  ASSERT(r.buf);
  coda__chunked_init(&d);
  for (size_t avail = 0; r.rc == 0 && avail < len;) {
    size_t next = len - avail < step ? len : avail + step;
    memcpy(r.buf + avail, body + avail, next - avail);
    avail = next;
    r.rc = coda__chunked_decode(&d, r.buf, avail, &r.in, &r.out, max_body,
                                MAX_TRAILER_BYTES);
    ASSERT(r.rc == 0 || r.rc == 1 || r.rc == -400 || r.rc == -413 ||
           r.rc == -431);
    ASSERT(r.out <= r.in && r.in <= avail);
    ASSERT(d.total == r.out && d.total <= max_body);
  }
  return r;
}

static void check_chunked(const char *body, size_t len, uint64_t max_body) {
  decoded whole = decode_in_steps(body, len, len ? len : 1, max_body);
  decoded bytewise = decode_in_steps(body, len, 1, max_body);
  ASSERT(whole.rc == bytewise.rc);
  if (whole.rc >= 0) {
    ASSERT(whole.in == bytewise.in && whole.out == bytewise.out);
    ASSERT(memcmp(whole.buf, bytewise.buf, whole.out) == 0);
  }
  if (whole.rc == 1)
    ASSERT(whole.in >= 5); /* at least "0\r\n\r\n" */
  free(whole.buf);
  free(bytewise.buf);
}

/* ---- one connection ---------------------------------------------------- */

static void run(const char *data, size_t size, const coda__http_limits *lim) {
  char *buf = malloc(size ? size : 1);
  coda__http_field *fields = malloc(sizeof *fields * lim->max_headers);
  coda__http_head head = {.fields = fields};
  size_t scan = 0;
  ASSERT(buf && fields);
  memcpy(buf, data, size);
  int n = coda__http_head_end(buf, size, &scan, lim);
  ASSERT(head_end_status_ok(n) && scan <= size);
  check_split_reads(data, size, n, lim);
  int rc = -1;
  if (n > 0) {
    ASSERT((size_t)n <= size && (uint32_t)n <= lim->max_header_bytes);
    rc = coda__http_parse_head(buf, (size_t)n, lim, &head);
    ASSERT(parse_status_ok(rc) && head.fields == fields);
    if (rc == 0)
      check_head(buf, n, &head, lim);
  }
  if (rc == 0 && (head.flags & CODA__HTTP_CHUNKED))
    check_chunked(data + n, size - (size_t)n, lim->max_body);
  else if (rc != 0)
    check_chunked(data, size, lim->max_body); /* the decoder on its own */
  free(fields);
  free(buf);
}

/* parse_head must accept only what head_end delimits as one whole head. */
static void run_parse_head_alone(const char *data, size_t size) {
  char *buf = malloc(size ? size : 1);
  coda__http_field fields[64];
  coda__http_head head = {.fields = fields};
  ASSERT(buf);
  memcpy(buf, data, size);
  int rc = coda__http_parse_head(buf, size, &limits_wide, &head);
  ASSERT(parse_status_ok(rc));
  if (rc == 0) {
    size_t scan = 0;
    ASSERT(coda__http_head_end(buf, size, &scan, &limits_wide) == (int)size);
  }
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *bytes = (const char *)data;
  run(bytes, size, &limits_wide);
  run(bytes, size, &limits_narrow);
  run_parse_head_alone(bytes, size);
  return 0;
}
