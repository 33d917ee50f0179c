/*
 * limits_test.c - the server's defences, seen from a raw socket: malformed
 * and oversized requests, timeouts, the connection limit, the write
 * high-water mark and deep pipelining.
 *
 * Every test starts its own app on an ephemeral port with the limits it
 * needs, talks to it with the bytes a hostile or broken client would send,
 * and stops it. Timing assertions use generous bounds (a few sweep periods)
 * so they hold under ASan, yet each would fail if the limit were ignored.
 */
#include "harness.h"
#include "test.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define BIG_BYTES (16u << 20) /* far more than loopback buffers swallow */
#define MB_BYTES (1u << 20)

static char big_body[BIG_BYTES];
static char mb_body[MB_BYTES];

/* Shared by the handlers of one app. */
typedef struct counters {
  atomic_int mb_calls;
  atomic_int plain_calls;
} counters;

/* ---- handlers -------------------------------------------------------- */

static int plain_handler(coda_req *req, coda_res *res, void *user) {
  (void)req;
  counters *k = user;
  atomic_fetch_add(&k->plain_calls, 1);
  return coda_res_json_text(res, 200, "{\"ok\":true}");
}

static int echo_handler(coda_req *req, coda_res *res, void *user) {
  (void)user;
  size_t len;
  const char *body = coda_req_body(req, &len);
  return coda_res_body(res, body, len);
}

static int big_handler(coda_req *req, coda_res *res, void *user) {
  (void)req;
  (void)user;
  return coda_res_body(res, big_body, sizeof big_body);
}

/* The same 16 MiB written from the static buffer, so the handler costs
 * nothing: copying 16 MiB under ASan on a busy machine took up to 1.3 s.
 * The steady-reader case is about the reader, not about the handler's time
 * (a_slow_handler_does_not_eat_the_send_timeout is). */
static int big_static_handler(coda_req *req, coda_res *res, void *user) {
  (void)req;
  (void)user;
  return coda_res_body_static(res, big_body, sizeof big_body);
}

/* The same 16 MiB after a handler that holds its loop for
 * SLOW_HANDLER_MS, longer than the send timeout of the case that uses it
 * (a slow database query, a blocking call a handler should not make). */
#define SLOW_HANDLER_MS 2000

static int slow_big_handler(coda_req *req, coda_res *res, void *user) {
  uint64_t until = tc_now_ms() + SLOW_HANDLER_MS;
  while (tc_now_ms() < until)
    tc_sleep_ms(10);
  return big_static_handler(req, res, user);
}

/* 1 MiB, copied (/mb/{n}) or written from the static buffer (/mbs/{n});
 * the header X-N echoes n so the client can check the order. */
static int mb_respond(coda_req *req, coda_res *res, void *user, int copy) {
  counters *k = user;
  atomic_fetch_add(&k->mb_calls, 1);
  int rc = coda_res_header(res, "X-N", coda_req_param(req, "n"));
  if (rc)
    return rc;
  return copy ? coda_res_body(res, mb_body, sizeof mb_body)
              : coda_res_body_static(res, mb_body, sizeof mb_body);
}

static int mb_handler(coda_req *req, coda_res *res, void *user) {
  return mb_respond(req, res, user, 1);
}

static int mbs_handler(coda_req *req, coda_res *res, void *user) {
  return mb_respond(req, res, user, 0);
}

static int n_handler(coda_req *req, coda_res *res, void *user) {
  (void)user;
  const char *n = coda_req_param(req, "n");
  return coda_res_body(res, n, strlen(n));
}

/* ---- setup ----------------------------------------------------------- */

static void fill_bodies(void) {
  for (size_t i = 0; i < sizeof big_body; i++)
    big_body[i] = (char)('a' + i % 26);
  for (size_t i = 0; i < sizeof mb_body; i++)
    mb_body[i] = (char)('A' + (i * 7) % 26);
}

/* An app with every test route and quiet logs; `k` outlives it. */
static coda_app *new_app(counters *k) {
  static int filled;
  if (!filled) {
    fill_bodies();
    filled = 1;
  }
  atomic_init(&k->mb_calls, 0);
  atomic_init(&k->plain_calls, 0);
  coda_app *app = coda_app_new();
  if (!app)
    return NULL;
  int rc = coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_ERROR);
  rc |= coda_app_set(app, CODA_OPT_THREADS, 1);
  rc |= coda_app_route(app, "GET", "/plain", plain_handler, k);
  rc |= coda_app_route(app, "POST", "/echo", echo_handler, k);
  rc |= coda_app_route(app, "GET", "/big", big_handler, k);
  rc |= coda_app_route(app, "GET", "/big-static", big_static_handler, k);
  rc |= coda_app_route(app, "GET", "/slow-big", slow_big_handler, k);
  rc |= coda_app_route(app, "GET", "/mb/{n}", mb_handler, k);
  rc |= coda_app_route(app, "GET", "/mbs/{n}", mbs_handler, k);
  rc |= coda_app_route(app, "GET", "/n/{n}", n_handler, k);
  if (rc) {
    coda_app_free(app);
    return NULL;
  }
  return app;
}

static void set_rcv_timeout(int fd, int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* True when fd becomes readable (data or EOF) within ms. */
static int wait_readable(int fd, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, ms) > 0;
}

/* One keep-alive GET /plain on a fresh connection; returns the status. */
static int plain_status(int port) {
  int fd = tc_connect(port, 2000);
  if (fd < 0)
    return -1;
  char buf[4096];
  int status = -1;
  if (tc_send_str(fd, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n") == 0 &&
      tc_read_response(fd, buf, sizeof buf) > 0)
    status = tc_status(buf);
  close(fd);
  return status;
}

/* ---- bulk response reading ------------------------------------------- */

typedef struct span {
  size_t off, len;   /* the whole response */
  size_t body, blen; /* its body */
} span;

/* The length of a complete Content-Length response at buf[0..n), or 0. */
static size_t cl_response_length(const char *buf, size_t n, size_t *body, size_t *blen) {
  const char *end = memmem(buf, n, "\r\n\r\n", 4);
  if (!end)
    return 0;
  size_t head = (size_t)(end - buf) + 4;
  const char *cl = memmem(buf, head, "\r\nContent-Length: ", 18);
  size_t len = cl ? strtoul(cl + 18, NULL, 10) : 0;
  if (n < head + len)
    return 0;
  *body = head;
  *blen = len;
  return head + len;
}

/* Reads from fd into buf until `want` complete responses are there, EOF,
 * or `timeout_ms` passes. Fills spans[] and returns how many were read;
 * *closed is set on EOF or reset. Reads in bulk: megabytes a byte at a
 * time would take minutes. */
static int read_responses(int fd, char *buf, size_t cap, span *spans, int want,
                          int timeout_ms, int *closed) {
  uint64_t deadline = tc_now_ms() + (uint64_t)timeout_ms;
  size_t n = 0, pos = 0;
  int got = 0;
  *closed = 0;
  set_rcv_timeout(fd, 100);
  while (got < want) {
    size_t body, blen;
    size_t len = cl_response_length(buf + pos, n - pos, &body, &blen);
    if (len) {
      spans[got++] = (span){pos, len, pos + body, blen};
      pos += len;
      continue;
    }
    if (n == cap || tc_now_ms() > deadline)
      break;
    ssize_t r = recv(fd, buf + n, cap - n, 0);
    if (r == 0 || (r < 0 && errno == ECONNRESET)) {
      *closed = 1;
      break;
    }
    if (r > 0)
      n += (size_t)r;
  }
  return got;
}

/* The value of header `name` ("X-N: ") inside one response, as a number. */
static long header_number(const char *resp, size_t len, const char *name) {
  const char *end = memmem(resp, len, "\r\n\r\n", 4);
  size_t nlen = strlen(name);
  const char *h = end ? memmem(resp, (size_t)(end - resp), name, nlen) : NULL;
  return h ? strtol(h + nlen, NULL, 10) : -1;
}

/* ---- 1. malformed and oversized requests ----------------------------- */

/* Sends `data`, expects exactly one response with `status`, marked
 * Connection: close, then EOF from the server, all within 1.5 s; then a
 * new connection must still be served. */
static void expect_rejected(int port, const char *name, const char *data, size_t len,
                            int status) {
  int before = test__failures_in_case;
  int fd = tc_connect(port, 2000);
  CHECK(fd >= 0);
  if (fd >= 0) {
    char buf[8192];
    int closed;
    uint64_t t0 = tc_now_ms();
    CHECK(tc_send(fd, data, len) == 0);
    size_t n = tc_read_all(fd, buf, sizeof buf, &closed);
    uint64_t took = tc_now_ms() - t0;
    CHECK(n > 0);
    CHECK_EQ_INT(tc_status(buf), status);
    CHECK_EQ_INT(tc_count(buf, "HTTP/1."), 1);
    CHECK(strstr(buf, "\r\nConnection: close\r\n") != NULL);
    CHECK(closed);
    CHECK(took < 1500);
    close(fd);
  }
  CHECK_EQ_INT(plain_status(port), 200);
  if (test__failures_in_case != before)
    fprintf(stderr, "    in case: %s\n", name);
}

typedef struct bad_case {
  const char *name;
  const char *data;
  size_t len; /* literals may hold a NUL */
  int status;
} bad_case;

#define BAD(name, lit, status)                                                           \
  { name, lit, sizeof(lit) - 1, status }

static const bad_case bad_cases[] = {
    BAD("bare LF line endings", "GET /plain HTTP/1.1\nHost: x\n\n", 400),
    BAD("bare LF after a field", "GET /plain HTTP/1.1\r\nHost: x\n\r\n", 400),
    BAD("obs-fold", "GET /plain HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    BAD("space before colon", "GET /plain HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    BAD("HTTP/1.1 without Host", "GET /plain HTTP/1.1\r\nX-A: a\r\n\r\n", 400),
    BAD("two Host fields", "GET /plain HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    BAD("Content-Length with Transfer-Encoding",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400),
    BAD("two different Content-Length",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        "Content-Length: 6\r\n\r\nhello!",
        400),
    BAD("Content-Length list with different values",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!", 400),
    BAD("Content-Length +5",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400),
    BAD("Content-Length -1",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    BAD("Transfer-Encoding gzip, chunked",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
        "\r\n0\r\n\r\n",
        501),
    BAD("Transfer-Encoding chunked in HTTP/1.0",
        "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    BAD("HTTP/2.0", "GET /plain HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    BAD("NUL in a field value", "GET /plain HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
        400),
    BAD("bad chunk size hex",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "zz\r\nhello\r\n0\r\n\r\n",
        400),
    BAD("no CRLF after chunk data",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhelloXX0\r\n\r\n",
        400),
    BAD("Expect: something-else",
        "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n"
        "Content-Length: 5\r\n\r\n",
        417),
    /* The smuggling classic: if the chunked framing won, "0\r\n\r\n" would
     * end the body and the GET would be answered as a second request. */
    BAD("CL.TE smuggling",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n",
        400),
    BAD("TE.CL smuggling",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Content-Length: 4\r\n\r\n5c\r\nGET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
        "0\r\n\r\n",
        400),
};

/* The limits the malformed-request tests run under. */
#define T_MAX_URI 64
#define T_MAX_HEADER_BYTES 1024
#define T_MAX_HEADERS 8
#define T_MAX_BODY 1024

static coda_app *limited_app(counters *k) {
  coda_app *app = new_app(k);
  if (!app)
    return NULL;
  int rc = coda_app_set(app, CODA_OPT_MAX_URI, T_MAX_URI);
  rc |= coda_app_set(app, CODA_OPT_MAX_HEADER_BYTES, T_MAX_HEADER_BYTES);
  rc |= coda_app_set(app, CODA_OPT_MAX_HEADERS, T_MAX_HEADERS);
  rc |= coda_app_set(app, CODA_OPT_MAX_BODY, T_MAX_BODY);
  if (rc) {
    coda_app_free(app);
    return NULL;
  }
  return app;
}

TEST(malformed_requests_get_an_error_and_close) {
  counters k;
  coda_app *app = limited_app(&k);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++)
    expect_rejected(ts.port, bad_cases[i].name, bad_cases[i].data, bad_cases[i].len,
                    bad_cases[i].status);
  /* A good request, then a bad one behind it on the same connection: the
   * first is answered, the second gets its error, then the close. */
  int fd = tc_connect(ts.port, 2000);
  CHECK(fd >= 0);
  if (fd >= 0) {
    char buf[8192];
    int closed;
    CHECK(tc_send_str(fd, "GET /n/1 HTTP/1.1\r\nHost: x\r\n\r\n"
                          "GET /n/2 HTTP/2.0\r\nHost: x\r\n\r\n"
                          "GET /n/3 HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
    tc_read_all(fd, buf, sizeof buf, &closed);
    CHECK(closed);
    CHECK_EQ_INT(tc_count(buf, "HTTP/1.1 "), 2);
    CHECK_EQ_INT(tc_status(buf), 200);
    const char *second = strstr(buf + 1, "HTTP/1.1 ");
    CHECK(second && tc_status(second) == 505);
    close(fd);
  }
  /* None of them reached a handler; only the liveness probes did. */
  CHECK_EQ_INT(atomic_load(&k.plain_calls),
               (int)(sizeof bad_cases / sizeof bad_cases[0]));
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

/* Appends n copies of c to p. */
static char *put_run(char *p, char c, size_t n) {
  memset(p, c, n);
  return p + n;
}

static char *put_str(char *p, const char *s) {
  size_t n = strlen(s);
  memcpy(p, s, n);
  return p + n;
}

TEST(oversized_heads_are_refused) {
  counters k;
  coda_app *app = limited_app(&k);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  char req[4096], *p;

  /* A complete request whose target is longer than the URI limit. */
  p = put_str(req, "GET /");
  p = put_run(p, 'u', T_MAX_URI + 10);
  p = put_str(p, " HTTP/1.1\r\nHost: x\r\n\r\n");
  expect_rejected(ts.port, "long target", req, (size_t)(p - req), 414);

  /* A request line that never ends: 414 as soon as it is too long. */
  p = put_str(req, "GET /");
  p = put_run(p, 'u', T_MAX_URI + 200);
  expect_rejected(ts.port, "unfinished long request line", req, (size_t)(p - req), 414);

  /* A head over the byte limit in three fields (below the field count). */
  p = put_str(req, "GET /plain HTTP/1.1\r\nHost: x\r\n");
  for (int i = 0; i < 3; i++) {
    p = put_str(p, "X-Big: ");
    p = put_run(p, 'v', 400);
    p = put_str(p, "\r\n");
  }
  p = put_str(p, "\r\n");
  expect_rejected(ts.port, "head over max header bytes", req, (size_t)(p - req), 431);

  /* The same, but the head never ends: the limit still applies. */
  expect_rejected(ts.port, "unfinished head over max header bytes", req,
                  (size_t)(p - req) - 2, 431);

  /* One field more than allowed, in a small head. */
  p = put_str(req, "GET /plain HTTP/1.1\r\nHost: x\r\n");
  for (int i = 0; i < T_MAX_HEADERS; i++)
    p = put_str(p, "X-F: f\r\n");
  p = put_str(p, "\r\n");
  expect_rejected(ts.port, "too many fields", req, (size_t)(p - req), 431);

  /* Exactly at the field limit is fine. */
  p = put_str(req, "GET /plain HTTP/1.1\r\nHost: x\r\n");
  for (int i = 0; i < T_MAX_HEADERS - 1; i++)
    p = put_str(p, "X-F: f\r\n");
  p = put_str(p, "\r\n");
  *p = '\0';
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  char buf[4096];
  CHECK(tc_send_str(fd, req) == 0);
  CHECK(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  close(fd);

  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

TEST(oversized_bodies_are_refused_without_reading_them) {
  counters k;
  coda_app *app = limited_app(&k);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  char req[8192];

  /* Only the head is sent: the 413 must not wait for a body. */
  snprintf(req, sizeof req,
           "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
           T_MAX_BODY + 1);
  expect_rejected(ts.port, "Content-Length above max body", req, strlen(req), 413);

  /* One chunk announced larger than the limit, its data not sent. */
  snprintf(req, sizeof req,
           "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
           "\r\n%x\r\n",
           T_MAX_BODY + 1);
  expect_rejected(ts.port, "chunk above max body", req, strlen(req), 413);

  /* Chunks each below the limit whose sum is above it. */
  char *p = req;
  p = put_str(p, "POST /echo HTTP/1.1\r\nHost: x\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 3; i++) {
    p = put_str(p, "190\r\n"); /* 400 bytes */
    p = put_run(p, 'b', 400);
    p = put_str(p, "\r\n");
  }
  expect_rejected(ts.port, "chunks summing above max body", req, (size_t)(p - req), 413);

  /* A body exactly at the limit is served, chunked and not. */
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  p = req;
  p += sprintf(p, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
               T_MAX_BODY);
  p = put_run(p, 'c', T_MAX_BODY);
  p = put_str(p, "POST /echo HTTP/1.1\r\nHost: x\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n");
  p += sprintf(p, "%x\r\n", T_MAX_BODY);
  p = put_run(p, 'd', T_MAX_BODY);
  p = put_str(p, "\r\n0\r\n\r\n");
  CHECK(tc_send(fd, req, (size_t)(p - req)) == 0);
  char buf[4096];
  for (int i = 0; i < 2; i++) {
    CHECK(tc_read_response(fd, buf, sizeof buf) > 0);
    CHECK_EQ_INT(tc_status(buf), 200);
    const char *body = tc_body(buf);
    CHECK(body && strlen(body) == T_MAX_BODY && body[0] == (i ? 'd' : 'c'));
  }
  close(fd);

  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

/* ---- 2. timeouts ----------------------------------------------------- */

#define SHORT_MS 300 /* the timeout under test */
#define LONG_MS 5000 /* the others, so they cannot be what fired */

static coda_app *timeout_app(counters *k, long header, long keepalive, long body,
                             long send) {
  coda_app *app = new_app(k);
  if (!app)
    return NULL;
  int rc = coda_app_set(app, CODA_OPT_HEADER_TIMEOUT, header);
  rc |= coda_app_set(app, CODA_OPT_KEEPALIVE_TIMEOUT, keepalive);
  rc |= coda_app_set(app, CODA_OPT_BODY_TIMEOUT, body);
  rc |= coda_app_set(app, CODA_OPT_SEND_TIMEOUT, send);
  if (rc) {
    coda_app_free(app);
    return NULL;
  }
  return app;
}

/* Reads what the server sends until it closes; checks it closed between
 * lo and hi ms after t0 and returns the status of what came (0 if
 * nothing). */
static int close_after(int fd, uint64_t t0, int lo, int hi) {
  char buf[4096];
  int closed;
  set_rcv_timeout(fd, hi + 1000);
  size_t n = tc_read_all(fd, buf, sizeof buf, &closed);
  uint64_t took = tc_now_ms() - t0;
  CHECK(closed);
  if (took < (uint64_t)lo || took > (uint64_t)hi)
    fprintf(stderr, "  closed after %llu ms, expected %d..%d\n", (unsigned long long)took,
            lo, hi);
  CHECK(took >= (uint64_t)lo);
  CHECK(took <= (uint64_t)hi);
  if (n == 0)
    return 0;
  CHECK_EQ_INT(tc_count(buf, "HTTP/1."), 1);
  return tc_status(buf);
}

TEST(header_timeout_answers_408) {
  counters k;
  coda_app *app = timeout_app(&k, SHORT_MS, LONG_MS, LONG_MS, LONG_MS);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  uint64_t t0 = tc_now_ms();
  CHECK(tc_send_str(fd, "GET /plain HTTP/1.1\r\nHost: x\r\n") == 0);
  CHECK_EQ_INT(close_after(fd, t0, SHORT_MS - 50, SHORT_MS + 700), 408);
  close(fd);
  CHECK_EQ_INT(plain_status(ts.port), 200);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

/* One byte every 50 ms: each byte is progress, yet the head as a whole
 * must still be complete within the header timeout. */
TEST(slowloris_is_cut_at_the_header_timeout) {
  counters k;
  coda_app *app = timeout_app(&k, SHORT_MS, LONG_MS, LONG_MS, LONG_MS);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  const char *head = "GET /plain HTTP/1.1\r\nHost: x\r\nX-Slow: ";
  uint64_t t0 = tc_now_ms();
  int answered = 0, sent = 0;
  for (size_t i = 0; tc_now_ms() - t0 < 2500; i++) {
    char c = i < strlen(head) ? head[i] : 's';
    if (tc_send(fd, &c, 1) != 0)
      break;
    sent++;
    if (wait_readable(fd, 50)) {
      answered = 1;
      break;
    }
  }
  CHECK(answered);
  CHECK(sent > 3); /* the trickle really happened */
  CHECK_EQ_INT(close_after(fd, t0, SHORT_MS - 50, SHORT_MS + 700), 408);
  close(fd);
  CHECK_EQ_INT(plain_status(ts.port), 200);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

TEST(idle_keepalive_connection_is_closed) {
  counters k;
  coda_app *app = timeout_app(&k, LONG_MS, SHORT_MS, LONG_MS, LONG_MS);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  char buf[4096];
  CHECK(tc_send_str(fd, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
  CHECK(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  uint64_t t0 = tc_now_ms();
  /* Closed quietly: nothing more is sent on an idle connection. */
  CHECK_EQ_INT(close_after(fd, t0, SHORT_MS - 50, SHORT_MS + 700), 0);
  close(fd);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

/* A connection that never sends a byte gets the header timeout, not the
 * (longer) keep-alive one. */
TEST(silent_new_connection_is_closed_at_the_header_timeout) {
  counters k;
  coda_app *app = timeout_app(&k, SHORT_MS, LONG_MS, LONG_MS, LONG_MS);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  uint64_t t0 = tc_now_ms();
  int status = close_after(fd, t0, SHORT_MS - 50, SHORT_MS + 700);
  CHECK(status == 0 || status == 408); /* a quiet close or a 408 */
  close(fd);
  CHECK_EQ_INT(plain_status(ts.port), 200);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

TEST(body_timeout_answers_408) {
  counters k;
  coda_app *app = timeout_app(&k, LONG_MS, LONG_MS, SHORT_MS, LONG_MS);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  uint64_t t0 = tc_now_ms();
  CHECK(tc_send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 10\r\n\r\nab") == 0);
  CHECK_EQ_INT(close_after(fd, t0, SHORT_MS - 50, SHORT_MS + 700), 408);
  close(fd);
  CHECK_EQ_INT(plain_status(ts.port), 200);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

/* Sends a body of 15 steps of `step` bytes, one step per 100 ms (gaps well
 * inside the 400 ms body timeout), to a server whose minimum body rate is
 * min_rate; returns the status and sets *took (ms from the first byte). */
static int trickle(long min_rate, int step, uint64_t *took) {
  counters k;
  coda_app *app = timeout_app(&k, LONG_MS, LONG_MS, 400, LONG_MS);
  if (!app || coda_app_set(app, CODA_OPT_BODY_MIN_RATE, min_rate) != 0)
    return -1;
  test_server ts;
  int status = -1;
  if (ts_start(&ts, app) != 0) {
    coda_app_free(app);
    return -1;
  }
  int fd = tc_connect(ts.port, 2000);
  char head[128], chunk[64];
  snprintf(head, sizeof head,
           "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 15 * step);
  memset(chunk, 'x', sizeof chunk);
  if (fd >= 0 && step <= (int)sizeof chunk && tc_send_str(fd, head) == 0) {
    uint64_t t0 = tc_now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (int i = 0; i < 15 && poll(&p, 1, 0) == 0; i++) {
      send(fd, chunk, (size_t)step, MSG_NOSIGNAL);
      tc_sleep_ms(100);
    }
    char buf[4096];
    set_rcv_timeout(fd, 3000);
    if (tc_read_response(fd, buf, sizeof buf) > 0)
      status = tc_status(buf);
    *took = tc_now_ms() - t0;
  }
  if (fd >= 0)
    close(fd);
  if (plain_status(ts.port) != 200)
    status = -2; /* the server must live on */
  ts_stop(&ts);
  coda_app_free(app);
  return status;
}

/* A body that never pauses for the body timeout but crawls: the minimum
 * rate gives it 400 ms + 1 s per 100 bytes, so 408 at about 450 ms; with
 * no minimum the same body is read to the end (1.5 s) and echoed. */
TEST(a_trickled_body_answers_408_below_the_minimum_rate) {
  uint64_t took = 0;
  CHECK_EQ_INT(trickle(100, 1, &took), 408);
  if (took < 400 || took > 1200)
    fprintf(stderr, "  408 after %llu ms\n", (unsigned long long)took);
  CHECK(took >= 400 && took <= 1200);
  CHECK_EQ_INT(trickle(0, 1, &took), 200);
  CHECK(took >= 1400);
  /* At 300 B/s, above the 100 B/s minimum, the body outlasts the 400 ms
   * body timeout several times over and is read to the end. */
  CHECK_EQ_INT(trickle(100, 30, &took), 200);
  CHECK(took >= 1400);
}

/* A client that asks for 16 MiB and never reads. The observable: the
 * server's send buffer plus our (shrunk) receive buffer hold far less than
 * 16 MiB, so the write stalls; once the server has cut the connection,
 * draining our socket yields what the kernels had buffered and then EOF
 * (or a reset) - fewer bytes than the response. A server that never cut
 * would go on writing as we drain, deliver the whole response and keep the
 * connection open, so `closed` would stay 0 and the length would be
 * complete. Meanwhile a second connection is served normally. */
TEST(send_stall_is_cut_at_the_send_timeout) {
  counters k;
  coda_app *app = timeout_app(&k, LONG_MS, LONG_MS, LONG_MS, SHORT_MS);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 3000);
  REQUIRE(fd >= 0);
  int small = 16384;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  CHECK(tc_send_str(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
  tc_sleep_ms(SHORT_MS + 900); /* the cut comes within a sweep or two */
  CHECK_EQ_INT(plain_status(ts.port), 200);

  size_t cap = BIG_BYTES + 65536;
  char *buf = malloc(cap);
  REQUIRE(buf);
  int closed;
  set_rcv_timeout(fd, 3000);
  size_t n = tc_read_all(fd, buf, cap, &closed);
  CHECK(closed);
  CHECK(n > 0 && tc_status(buf) == 200);
  CHECK(n < BIG_BYTES); /* cut: the body never arrived in full */
  free(buf);
  close(fd);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

/* A steady reader for the send-timeout case. It reads at STEADY_BYTES_PER_MS
 * by the clock, never ahead of it, and after a pause (this thread
 * descheduled on a busy machine) catches up at once: the pace is set by
 * time, not by how long each sleep really took, so a loaded machine does
 * not slow the reader down. The server sees progress only when the kernel
 * wakes its writer, once about a third of the send buffer (at most 4 MiB)
 * has drained: every ~1.4 MB, ~220 ms at this pace, well inside
 * STEADY_SEND_MS; the whole 16 MiB takes 2.6 s or more, well past it. */
#define STEADY_SEND_MS 1000
#define STEADY_BYTES_PER_MS 6400

typedef struct steady_reader {
  int fd;
  uint64_t t0;
  uint64_t last;        /* when the last read returned */
  uint64_t longest_gap; /* the longest pause between two reads, ms */
  int closed;
} steady_reader;

/* Reads into buf until it holds `until` bytes (it holds `n` already), the
 * peer closes, or a read times out; returns the bytes buf holds. */
static size_t read_steadily(steady_reader *sr, char *buf, size_t n, size_t until) {
  set_rcv_timeout(sr->fd, 2000);
  while (n < until) {
    uint64_t now = tc_now_ms();
    size_t allowed = (size_t)(now - sr->t0 + 1) * STEADY_BYTES_PER_MS;
    if (n >= allowed) {
      tc_sleep_ms(2);
      continue;
    }
    size_t want = until - n;
    if (want > allowed - n)
      want = allowed - n;
    if (want > 65536)
      want = 65536;
    ssize_t r = recv(sr->fd, buf + n, want, 0);
    now = tc_now_ms();
    if (now - sr->last > sr->longest_gap)
      sr->longest_gap = now - sr->last;
    sr->last = now;
    if (r == 0 || (r < 0 && errno == ECONNRESET)) {
      sr->closed = 1;
      break;
    }
    if (r < 0)
      break;
    n += (size_t)r;
  }
  return n;
}

/* The length of the /big response: its head, then BIG_BYTES. */
static size_t big_response_length(const char *buf, size_t n) {
  const char *end = memmem(buf, n, "\r\n\r\n", 4);
  return end ? (size_t)(end - buf) + 4 + BIG_BYTES : 0;
}

/* The send timeout is about a stall, not about the whole response: a
 * client that keeps reading, however long the response takes, is not
 * cut. A server that timed the whole response, or handed the kernel the
 * whole body in one write (whose completion is its only sign of
 * progress), would cut this reader. */
TEST(steady_slow_reader_is_not_cut_by_the_send_timeout) {
  counters k;
  coda_app *app = timeout_app(&k, LONG_MS, LONG_MS, LONG_MS, STEADY_SEND_MS);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  size_t cap = BIG_BYTES + 65536;
  char *buf = malloc(cap);
  REQUIRE(buf);
  CHECK(tc_send_str(fd, "GET /big-static HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
  steady_reader sr = {.fd = fd, .t0 = tc_now_ms()};
  sr.last = sr.t0;
  size_t n = read_steadily(&sr, buf, 0, 4096); /* at least the head */
  size_t full = big_response_length(buf, n);
  CHECK(full > 0);
  if (full > 0 && n < full)
    n = read_steadily(&sr, buf, n, full);
  uint64_t took = tc_now_ms() - sr.t0;
  if (n != full)
    fprintf(stderr, "  read %zu of %zu bytes in %llu ms; longest pause %llu ms\n", n,
            full, (unsigned long long)took, (unsigned long long)sr.longest_gap);
  CHECK(took > 2 * STEADY_SEND_MS); /* the reading really was slow */
  CHECK(!sr.closed);
  CHECK(full > 0 && n == full);
  CHECK(n == full && memcmp(buf + full - BIG_BYTES, big_body, BIG_BYTES) == 0);
  /* And the connection is still good for another request. */
  CHECK(tc_send_str(fd, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
  CHECK(tc_read_response(fd, buf, 4096) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  free(buf);
  close(fd);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

/* The send timeout counts from the server's last progress, and a handler
 * that held the loop for longer than the timeout is not a stalled reader:
 * the server's first write comes after the handler returned, and its
 * clock must say so. A server that stamped that write with the time its
 * loop iteration began (before the handler ran) would see a write already
 * older than the timeout and cut this reader, which reads steadily from
 * the first byte on, at its first sweep. */
TEST(a_slow_handler_does_not_eat_the_send_timeout) {
  counters k;
  coda_app *app = timeout_app(&k, LONG_MS, LONG_MS, LONG_MS, STEADY_SEND_MS);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  size_t cap = BIG_BYTES + 65536;
  char *buf = malloc(cap);
  REQUIRE(buf);
  uint64_t asked = tc_now_ms();
  CHECK(tc_send_str(fd, "GET /slow-big HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
  /* The reader's pace starts with the first byte, not with the request:
   * it must not catch up on the handler's time in one gulp. */
  CHECK(wait_readable(fd, SLOW_HANDLER_MS + 10000));
  steady_reader sr = {.fd = fd, .t0 = tc_now_ms()};
  sr.last = sr.t0;
  CHECK(sr.t0 - asked >= SLOW_HANDLER_MS - 50); /* the handler really was slow */
  size_t n = read_steadily(&sr, buf, 0, 4096);
  size_t full = big_response_length(buf, n);
  CHECK(full > 0);
  if (full > 0 && n < full)
    n = read_steadily(&sr, buf, n, full);
  uint64_t took = tc_now_ms() - sr.t0;
  if (n != full)
    fprintf(stderr, "  read %zu of %zu bytes in %llu ms; longest pause %llu ms\n", n,
            full, (unsigned long long)took, (unsigned long long)sr.longest_gap);
  CHECK(took > 2 * STEADY_SEND_MS); /* the reading really was slow */
  CHECK(!sr.closed);
  CHECK(full > 0 && n == full);
  CHECK(n == full && memcmp(buf + full - BIG_BYTES, big_body, BIG_BYTES) == 0);
  free(buf);
  close(fd);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

/* A connection writing a long response is not idle: the keep-alive timeout
 * counts from when the last byte was written, not from when the handler
 * ran. The server only knows when its last write went into the kernel, so
 * the client reads slowly for longer than the keep-alive timeout while the
 * server is still writing (our receive buffer is pinned small and at most
 * ~3 MiB of 16 get read, so the server's 4 MiB send buffer cannot hold the
 * rest), then drains the rest at once: the server's last write and our
 * last read are then a few milliseconds apart, and the idle close must
 * come about one keep-alive timeout after that, not at once. */
TEST(keepalive_timeout_starts_after_the_response_is_written) {
  enum { KEEPALIVE_MS = 500, SLOW_MS = 1000 };
  counters k;
  coda_app *app = timeout_app(&k, LONG_MS, KEEPALIVE_MS, LONG_MS, LONG_MS);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  int small = 65536;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  size_t cap = BIG_BYTES + 65536;
  char *buf = malloc(cap);
  REQUIRE(buf);
  CHECK(tc_send_str(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
  set_rcv_timeout(fd, 2000);
  uint64_t t0 = tc_now_ms();
  size_t n = 0, full = 0;
  int closed = 0;
  while (!full || n < full) {
    int slow = tc_now_ms() - t0 < SLOW_MS;
    size_t want = cap - n;
    if (slow && want > 65536)
      want = 65536;
    if (full && want > full - n)
      want = full - n;
    ssize_t r = recv(fd, buf + n, want, 0);
    if (r <= 0) {
      closed = r == 0 || errno == ECONNRESET;
      break;
    }
    n += (size_t)r;
    if (!full)
      full = big_response_length(buf, n);
    if (slow)
      tc_sleep_ms(20); /* about 3 MB/s */
  }
  uint64_t t1 = tc_now_ms();
  CHECK(!closed);
  CHECK(full > 0 && n == full);
  CHECK(t1 - t0 >= SLOW_MS); /* the response took longer than the timeout */
  CHECK_EQ_INT(close_after(fd, t1, KEEPALIVE_MS - 200, KEEPALIVE_MS + 700), 0);
  free(buf);
  close(fd);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

/* ---- 3. the connection limit ----------------------------------------- */

static coda_app *two_connection_app(counters *k) {
  coda_app *app = new_app(k);
  if (app && coda_app_set(app, CODA_OPT_MAX_CONNECTIONS, 2) != 0) {
    coda_app_free(app);
    return NULL;
  }
  return app;
}

TEST(connection_limit_evicts_an_idle_connection) {
  counters k;
  coda_app *app = two_connection_app(&k);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  /* ts_start's probe connection must be gone before we count. */
  tc_sleep_ms(50);
  char buf[4096];
  int fds[2];
  for (int i = 0; i < 2; i++) {
    fds[i] = tc_connect(ts.port, 2000);
    REQUIRE(fds[i] >= 0);
    CHECK(tc_send_str(fds[i], "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
    CHECK(tc_read_response(fds[i], buf, sizeof buf) > 0);
    CHECK_EQ_INT(tc_status(buf), 200);
  }
  CHECK_EQ_INT(plain_status(ts.port), 200);
  int nclosed = 0, survivor = -1;
  for (int i = 0; i < 2; i++) {
    int closed;
    set_rcv_timeout(fds[i], 300);
    size_t n = tc_read_all(fds[i], buf, sizeof buf, &closed);
    CHECK_EQ_INT(n, 0);
    nclosed += closed;
    if (!closed)
      survivor = fds[i];
  }
  CHECK_EQ_INT(nclosed, 1);
  if (survivor >= 0) {
    set_rcv_timeout(survivor, 2000);
    CHECK(tc_send_str(survivor, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
    CHECK(tc_read_response(survivor, buf, sizeof buf) > 0);
    CHECK_EQ_INT(tc_status(buf), 200);
  }
  close(fds[0]);
  close(fds[1]);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

TEST(connection_limit_queues_when_all_are_busy) {
  counters k;
  coda_app *app = two_connection_app(&k);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  tc_sleep_ms(50);
  int busy[2];
  for (int i = 0; i < 2; i++) {
    busy[i] = tc_connect(ts.port, 2000);
    REQUIRE(busy[i] >= 0);
    CHECK(tc_send_str(busy[i], "GET /plain HTTP/1.1\r\nHost: x\r\n") == 0);
  }
  tc_sleep_ms(100); /* both accepted and mid-head */
  int third = tc_connect(ts.port, 500);
  REQUIRE(third >= 0); /* the backlog takes it */
  char buf[4096];
  CHECK(tc_send_str(third, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
  CHECK_EQ_INT(tc_read_response(third, buf, sizeof buf), 0);
  CHECK_EQ_INT(atomic_load(&k.plain_calls), 0);

  close(busy[0]);
  set_rcv_timeout(third, 2000);
  uint64_t t0 = tc_now_ms();
  CHECK(tc_read_response(third, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  CHECK(tc_now_ms() - t0 < 300); /* on the close, not at a later sweep */

  /* The other busy one is still alive and can finish its request. */
  set_rcv_timeout(busy[1], 2000);
  CHECK(tc_send_str(busy[1], "\r\n") == 0);
  CHECK(tc_read_response(busy[1], buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  close(busy[1]);
  close(third);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

/* ---- 4. the write high-water mark ------------------------------------ */

#define HW_REQUESTS 40

/* 40 pipelined 1 MiB responses to a client that does not read: the server
 * must stop running handlers while the unsent output is above the mark,
 * then serve them all, in order, once the client reads. */
static void high_water_case(const char *prefix) {
  counters k;
  coda_app *app = new_app(&k);
  REQUIRE(app);
  REQUIRE(coda_app_set(app, CODA_OPT_WRITE_HIGH_WATER, 65536) == 0);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  char reqs[HW_REQUESTS * 64], *p = reqs;
  for (int i = 1; i <= HW_REQUESTS; i++)
    p += sprintf(p, "GET /%s/%d HTTP/1.1\r\nHost: x\r\n\r\n", prefix, i);
  CHECK(tc_send(fd, reqs, (size_t)(p - reqs)) == 0);
  tc_sleep_ms(500);
  int early = atomic_load(&k.mb_calls);
  fprintf(stderr, "  /%s: %d handler runs before the client read\n", prefix, early);
  /* Loopback buffers hold a few MiB: a handful of responses, never 40. */
  CHECK(early >= 1);
  CHECK(early <= 12);

  size_t cap = (size_t)HW_REQUESTS * (MB_BYTES + 512);
  char *buf = malloc(cap);
  span *spans = calloc(HW_REQUESTS, sizeof *spans);
  REQUIRE(buf && spans);
  int closed;
  int got = read_responses(fd, buf, cap, spans, HW_REQUESTS, 4000, &closed);
  CHECK_EQ_INT(got, HW_REQUESTS);
  CHECK(!closed);
  int in_order = 1, bodies_ok = 1;
  for (int i = 0; i < got; i++) {
    const char *r = buf + spans[i].off;
    CHECK_EQ_INT(tc_status(r), 200);
    if (header_number(r, spans[i].len, "\r\nX-N: ") != i + 1)
      in_order = 0;
    if (spans[i].blen != MB_BYTES || memcmp(buf + spans[i].body, mb_body, MB_BYTES) != 0)
      bodies_ok = 0;
  }
  CHECK(in_order);
  CHECK(bodies_ok);
  CHECK_EQ_INT(atomic_load(&k.mb_calls), HW_REQUESTS);
  free(spans);
  free(buf);
  close(fd);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

/* Requests parked behind the high-water mark arrived in full long ago:
 * the client is slow to read, not slow to send, so the header timeout must
 * not answer them with 408 (the send timeout governs a slow reader). */
TEST(parked_requests_do_not_hit_the_header_timeout) {
  enum { N = 10, HEADER_MS = 400 };
  counters k;
  coda_app *app = timeout_app(&k, HEADER_MS, LONG_MS, LONG_MS, LONG_MS);
  REQUIRE(app);
  REQUIRE(coda_app_set(app, CODA_OPT_WRITE_HIGH_WATER, 65536) == 0);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  char reqs[N * 64], *p = reqs;
  for (int i = 1; i <= N; i++)
    p += sprintf(p, "GET /mb/%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
  CHECK(tc_send(fd, reqs, (size_t)(p - reqs)) == 0);
  tc_sleep_ms(3 * HEADER_MS);
  CHECK(atomic_load(&k.mb_calls) < N); /* some really were parked */
  size_t cap = (size_t)N * (MB_BYTES + 512);
  char *buf = malloc(cap);
  span spans[N];
  REQUIRE(buf);
  int closed;
  int got = read_responses(fd, buf, cap, spans, N, 4000, &closed);
  CHECK_EQ_INT(got, N);
  CHECK(!closed);
  for (int i = 0; i < got; i++) {
    const char *r = buf + spans[i].off;
    if (tc_status(r) != 200 || header_number(r, spans[i].len, "\r\nX-N: ") != i + 1) {
      fprintf(stderr, "  response %d: status %d\n", i + 1, tc_status(r));
      CHECK(0);
      break;
    }
  }
  free(buf);
  close(fd);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

TEST(high_water_pauses_copied_bodies) { high_water_case("mb"); }

TEST(high_water_pauses_static_bodies) { high_water_case("mbs"); }

/* ---- 5. pipelining --------------------------------------------------- */

static void pipeline_case(int count) {
  counters k;
  coda_app *app = new_app(&k);
  REQUIRE(app);
  test_server ts;
  REQUIRE(ts_start(&ts, app) == 0);
  int fd = tc_connect(ts.port, 2000);
  REQUIRE(fd >= 0);
  size_t rcap = (size_t)count * 48;
  char *reqs = malloc(rcap), *p = reqs;
  size_t cap = (size_t)count * 512;
  char *buf = malloc(cap);
  span *spans = calloc((size_t)count, sizeof *spans);
  REQUIRE(reqs && buf && spans);
  for (int i = 0; i < count; i++)
    p += sprintf(p, "GET /n/%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
  CHECK(tc_send(fd, reqs, (size_t)(p - reqs)) == 0);
  int closed;
  int got = read_responses(fd, buf, cap, spans, count, 4000, &closed);
  CHECK_EQ_INT(got, count);
  CHECK(!closed);
  int in_order = 1;
  for (int i = 0; i < got; i++) {
    char want[16];
    int wlen = snprintf(want, sizeof want, "%d", i);
    if (tc_status(buf + spans[i].off) != 200 || spans[i].blen != (size_t)wlen ||
        memcmp(buf + spans[i].body, want, (size_t)wlen) != 0)
      in_order = 0;
  }
  CHECK(in_order);
  /* Nothing extra follows the last response. */
  set_rcv_timeout(fd, 100);
  char extra[64];
  CHECK(recv(fd, extra, sizeof extra, 0) < 0);
  free(spans);
  free(buf);
  free(reqs);
  close(fd);
  CHECK_EQ_INT(ts_stop(&ts), 0);
  coda_app_free(app);
}

TEST(hundred_pipelined_requests_in_order) { pipeline_case(100); }

/* More requests than the read buffer holds (16 KiB): parsing must resume
 * after the buffer is compacted. */
TEST(pipelining_past_the_read_buffer) { pipeline_case(2000); }

RUN_TESTS(limits, TEST_CASE(malformed_requests_get_an_error_and_close),
          TEST_CASE(oversized_heads_are_refused),
          TEST_CASE(oversized_bodies_are_refused_without_reading_them),
          TEST_CASE(header_timeout_answers_408),
          TEST_CASE(slowloris_is_cut_at_the_header_timeout),
          TEST_CASE(idle_keepalive_connection_is_closed),
          TEST_CASE(silent_new_connection_is_closed_at_the_header_timeout),
          TEST_CASE(body_timeout_answers_408),
          TEST_CASE(a_trickled_body_answers_408_below_the_minimum_rate),
          TEST_CASE(send_stall_is_cut_at_the_send_timeout),
          TEST_CASE(steady_slow_reader_is_not_cut_by_the_send_timeout),
          TEST_CASE(a_slow_handler_does_not_eat_the_send_timeout),
          TEST_CASE(keepalive_timeout_starts_after_the_response_is_written),
          TEST_CASE(connection_limit_evicts_an_idle_connection),
          TEST_CASE(connection_limit_queues_when_all_are_busy),
          TEST_CASE(parked_requests_do_not_hit_the_header_timeout),
          TEST_CASE(high_water_pauses_copied_bodies),
          TEST_CASE(high_water_pauses_static_bodies),
          TEST_CASE(hundred_pipelined_requests_in_order),
          TEST_CASE(pipelining_past_the_read_buffer))
