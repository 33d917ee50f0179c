/*
 * http_test.c - the HTTP/1.1 server and application API, end to end: a real
 * server on an ephemeral port, libcurl and raw sockets as clients.
 */
#include "app/exchange.h"
#include "harness.h"
#include "test.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- handlers -------------------------------------------------------- */

static const char plain[] = "{\"status\":\"ok\"}";

static int h_plain(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  coda_res_header(res, "Content-Type", "application/json");
  return coda_res_body_static(res, plain, sizeof plain - 1);
}

static int h_echo(coda_req *req, coda_res *res, void *user) {
  (void)user;
  size_t len;
  const char *body = coda_req_body(req, &len);
  return coda_res_body(res, body, len);
}

/* Echoes the decoded path, a path parameter, a query parameter and a header
 * as JSON, built with jansson through coda_res_json. */
static int h_user(coda_req *req, coda_res *res, void *user) {
  (void)user;
  json_t *o = json_pack("{s:s, s:s, s:s?, s:s?, s:s}", "path", coda_req_path(req), "id",
                        coda_req_param(req, "id"), "q", coda_req_query(req, "q"), "hdr",
                        coda_req_header(req, "x-CUSTOM"), "method", coda_req_method(req));
  int rc = coda_res_json(res, 200, o);
  json_decref(o);
  return rc;
}

static int h_me(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  return coda_res_json_text(res, 200, "{\"me\":true}");
}

static int h_fail(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  coda_res_body_static(res, "partial", 7);
  return CODA_EIO;
}

/* Streams three chunks from a timer, 30 ms apart. */
typedef struct {
  uv_timer_t timer;
  coda_stream *stream;
  int sent;
} stream_state;

static void stream_closed(uv_handle_t *h) { free(h->data); }

static void stream_tick(uv_timer_t *t) {
  stream_state *st = t->data;
  static const char *parts[] = {"one,", "two,", "three"};
  coda_stream_write(st->stream, parts[st->sent], strlen(parts[st->sent]));
  if (++st->sent == 3) {
    coda_stream_end(st->stream);
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, stream_closed);
  }
}

static int h_stream(coda_req *req, coda_res *res, void *user) {
  (void)user;
  stream_state *st = calloc(1, sizeof *st);
  coda_res_header(res, "Content-Type", "text/plain");
  st->stream = coda_res_stream(res);
  if (!st->stream) {
    free(st);
    return CODA_ESTATE;
  }
  uv_timer_init(coda_req_loop(req), &st->timer);
  st->timer.data = st;
  uv_timer_start(&st->timer, stream_tick, 30, 30);
  return 0;
}

/* Larger than the kernel can buffer between us and a client that does not
 * read (tcp_wmem's 4 MiB ceiling plus a small receive window). */
static char big_body[16 << 20];

static int h_big(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  return coda_res_body_static(res, big_body, sizeof big_body);
}

typedef struct {
  atomic_int released;
} borrow_state;

static void on_release(void *data, void *arg) {
  (void)data;
  borrow_state *b = arg;
  atomic_fetch_add(&b->released, 1);
}

static borrow_state borrowed;

static int h_borrow(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  return coda_res_body_borrow(res, big_body, 100000, on_release, &borrowed);
}

/* Middleware: adds a header before, and rewrites the status after. */
static int mw_outer(coda_req *req, coda_res *res, coda_next *next, void *user) {
  (void)user;
  coda_res_header(res, "X-Before", "1");
  int rc = coda_next_call(next);
  if (strcmp(coda_req_path(req), "/teapot") == 0 && coda_res_get_status(res) == 404) {
    coda_res_status(res, 418);
    coda_res_body_static(res, "teapot", 6);
  }
  coda_res_header(res, "X-After",
                  coda_res_get_header(res, "X-Before") ? "saw-before" : "no");
  return rc;
}

/* Middleware that answers by itself without calling next. */
static int mw_gate(coda_req *req, coda_res *res, coda_next *next, void *user) {
  (void)user;
  if (coda_req_header(req, "X-Block")) {
    coda_res_status(res, 403);
    return coda_res_body_static(res, "blocked", 7);
  }
  return coda_next_call(next);
}

static void on_error(coda_req *req, coda_res *res, int err, void *user) {
  (void)req, (void)user;
  coda_res_status(res, 500);
  coda_res_header(res, "X-Error", coda_strerror(err));
  coda_res_body_static(res, "custom error", 12);
}

/* ---- the "response fully written" event ----------------------------- */

typedef struct {
  atomic_int calls;
  atomic_int ok;
} written_state;

static written_state written;

static void on_written(void *arg, int ok) {
  written_state *w = arg;
  atomic_store(&w->ok, ok);
  atomic_fetch_add(&w->calls, 1);
}

static int mw_written(coda_req *req, coda_res *res, coda_next *next, void *user) {
  (void)user;
  int rc = coda_next_call(next);
  if (strncmp(coda_req_path(req), "/big", 4) == 0 ||
      strcmp(coda_req_path(req), "/stream") == 0)
    coda__res_on_written(res, on_written, &written);
  return rc;
}

/* ---- fixture --------------------------------------------------------- */

static test_server ts;
static coda_app *app;

static void start(int threads) {
  app = coda_app_new();
  coda_app_set(app, CODA_OPT_THREADS, threads);
  coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
  coda_app_use(app, mw_outer, NULL);
  coda_app_use(app, mw_gate, NULL);
  coda_app_use(app, mw_written, NULL);
  coda_app_on_error(app, on_error, NULL);
  coda_app_route(app, "GET", "/plain", h_plain, NULL);
  coda_app_route(app, "POST", "/echo", h_echo, NULL);
  coda_app_route(app, "PUT", "/echo", h_echo, NULL);
  coda_app_route(app, "GET", "/users/{id}", h_user, NULL);
  coda_app_route(app, "GET", "/users/me", h_me, NULL);
  coda_app_route(app, "GET", "/fail", h_fail, NULL);
  coda_app_route(app, "GET", "/stream", h_stream, NULL);
  coda_app_route(app, "GET", "/big", h_big, NULL);
  coda_app_route(app, "GET", "/borrow", h_borrow, NULL);
  int rc = ts_start(&ts, app);
  if (rc) {
    fprintf(stderr, "cannot start server: %s\n", coda_strerror(rc));
    exit(1);
  }
}

static void stop(void) {
  ts_stop(&ts);
  coda_app_free(app);
}

/* ---- libcurl --------------------------------------------------------- */

typedef struct {
  char *data;
  size_t len;
  size_t cap;
} sink;

/* Grows by doubling: growing by each piece libcurl hands over copied the
 * whole body once per 16 KiB, which for 16 MiB under ASan on a busy
 * machine was slow enough that the server saw a stalled reader and cut it
 * at the send timeout. */
static size_t sink_write(char *p, size_t size, size_t n, void *arg) {
  sink *s = arg;
  if (s->len + size * n + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + size * n + 1)
      cap *= 2;
    char *d = realloc(s->data, cap);
    if (!d)
      return 0;
    s->data = d;
    s->cap = cap;
  }
  memcpy(s->data + s->len, p, size * n);
  s->len += size * n;
  s->data[s->len] = '\0';
  return size * n;
}

static long curl_get(CURL *c, const char *path, sink *body, sink *head) {
  char url[256];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", ts.port, path);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, sink_write);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, head);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
  long status = 0;
  if (curl_easy_perform(c) == CURLE_OK)
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  return status;
}

static void sink_free(sink *s) {
  free(s->data);
  s->data = NULL;
  s->len = 0;
  s->cap = 0;
}

/* ---- tests ----------------------------------------------------------- */

TEST(plain_and_keep_alive_with_libcurl) {
  CURL *c = curl_easy_init();
  sink body = {0}, head = {0};
  CHECK_EQ_INT(curl_get(c, "/plain", &body, &head), 200);
  CHECK_EQ_STR(body.data, plain);
  CHECK(strstr(head.data, "Content-Type: application/json\r\n") != NULL);
  CHECK(strstr(head.data, "Date: ") != NULL);
  CHECK(strstr(head.data, "X-Before: 1\r\n") != NULL);
  CHECK(strstr(head.data, "X-After: saw-before\r\n") != NULL);
  sink_free(&body);
  CHECK_EQ_INT(curl_get(c, "/plain", &body, &head), 200);
  long connects = -1;
  curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects);
  CHECK_EQ_INT(connects, 0); /* the second request reused the connection */
  sink_free(&body);
  sink_free(&head);
  curl_easy_cleanup(c);
}

TEST(routes_params_query_and_headers) {
  CURL *c = curl_easy_init();
  sink body = {0}, head = {0};
  struct curl_slist *h = curl_slist_append(NULL, "X-Custom: hello there ");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  CHECK_EQ_INT(curl_get(c, "/users/a%20b?x=1&q=caf%C3%A9+au+lait&z", &body, &head), 200);
  json_t *o = json_loads(body.data ? body.data : "", 0, NULL);
  REQUIRE(o != NULL);
  CHECK_EQ_STR(json_string_value(json_object_get(o, "id")), "a b");
  CHECK_EQ_STR(json_string_value(json_object_get(o, "path")), "/users/a b");
  CHECK_EQ_STR(json_string_value(json_object_get(o, "q")), "caf\xc3\xa9 au lait");
  CHECK_EQ_STR(json_string_value(json_object_get(o, "hdr")), "hello there");
  json_decref(o);
  sink_free(&body);
  /* A literal segment beats a capture, whatever the registration order. */
  CHECK_EQ_INT(curl_get(c, "/users/me", &body, &head), 200);
  CHECK_EQ_STR(body.data, "{\"me\":true}");
  sink_free(&body);
  sink_free(&head);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
}

TEST(not_found_method_not_allowed_and_head) {
  int fd = tc_connect(ts.port, 2000);
  char buf[8192];
  tc_send_str(fd, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 404);
  tc_send_str(fd, "DELETE /echo HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 405);
  CHECK(strstr(buf, "\r\nAllow: POST, PUT\r\n") != NULL);
  tc_send_str(fd, "HEAD /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_head(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  CHECK(strstr(buf, "Content-Length: 15\r\n") != NULL);
  CHECK_EQ_STR(tc_body(buf), ""); /* HEAD: the length of GET, no body */
  /* The connection still works: the HEAD left no stray body bytes. */
  tc_send_str(fd, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_STR(tc_body(buf), plain);
  /* Middleware can change the response after the router answered. */
  tc_send_str(fd, "GET /teapot HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 418);
  /* ... or answer without calling the rest of the chain. */
  tc_send_str(fd, "GET /plain HTTP/1.1\r\nHost: x\r\nX-Block: 1\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 403);
  close(fd);
}

/* One request on fd; returns the status and leaves the response in buf. */
static int ask(int fd, const char *request, char *buf, size_t cap) {
  if (tc_send_str(fd, request) != 0 || tc_read_response(fd, buf, cap) == 0)
    return -1;
  return tc_status(buf);
}

TEST(unknown_methods_options_and_equivalent_paths) {
  int fd = tc_connect(ts.port, 2000);
  char buf[8192];
  REQUIRE(fd >= 0);
  /* RFC 9110 9.1: a method no route has and RFC 9110 does not define is
   * 501; methods are case-sensitive. The connection stays usable. */
  CHECK_EQ_INT(ask(fd, "FOO /plain HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf), 501);
  CHECK_EQ_INT(ask(fd, "get /plain HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf), 501);
  CHECK_EQ_INT(ask(fd, "PATCH /plain HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf), 405);
  /* RFC 9110 9.3.7: OPTIONS * asks about the server as a whole. */
  tc_send_str(fd, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_head(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 204);
  CHECK(strstr(buf, "\r\nAllow: GET, HEAD, POST, PUT\r\n") != NULL);
  CHECK(strstr(buf, "Content-Length") == NULL);
  /* RFC 3986 6.2.2: escaped unreserved bytes and dot segments name the
   * same resource; other escapes ("%2F") stay what they are. */
  const char *same[] = {"/pla%69n",      "/%70lain",      "/users/../plain",
                        "/a/./../plain", "/%2e%2e/plain", "/users/%2E%2E/plain",
                        "/../../plain"};
  for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", same[i]);
    CHECK_EQ_INT(ask(fd, req, buf, sizeof buf), 200);
    if (strcmp(tc_body(buf), plain) != 0)
      fprintf(stderr, "  %s: %s\n", same[i], tc_body(buf));
    CHECK_EQ_STR(tc_body(buf), plain);
  }
  CHECK_EQ_INT(ask(fd, "GET /users/%31?q=a HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf),
               200);
  CHECK(strstr(buf, "\"id\": \"1\"") != NULL || strstr(buf, "\"id\":\"1\"") != NULL);
  CHECK_EQ_INT(ask(fd, "GET /users/a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf),
               200);
  CHECK(strstr(buf, "a/b") != NULL); /* one parameter, decoded after matching */
  CHECK_EQ_INT(ask(fd, "GET /plain/. HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf), 404);
  close(fd);
}

TEST(failing_handler_goes_to_error_handler) {
  int fd = tc_connect(ts.port, 2000);
  char buf[4096];
  tc_send_str(fd, "GET /fail HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 500);
  CHECK(strstr(buf, "X-Error: input/output error\r\n") != NULL);
  CHECK_EQ_STR(tc_body(buf), "custom error");
  CHECK(strstr(buf, "partial") == NULL); /* the failed response is dropped */
  close(fd);
}

TEST(pipelining_answers_in_order_in_one_write) {
  int fd = tc_connect(ts.port, 2000);
  const char *reqs = "GET /users/1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                     "GET /users/3 HTTP/1.1\r\nHost: x\r\n\r\n"
                     "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  tc_send_str(fd, reqs);
  char buf[16384];
  int closed;
  tc_read_all(fd, buf, sizeof buf, &closed);
  CHECK(closed);
  CHECK_EQ_INT(tc_count(buf, "HTTP/1.1 200 OK"), 4);
  const char *a = strstr(buf, "\"id\":\"1\""), *b = strstr(buf, "\r\n\r\nhello"),
             *c = strstr(buf, "\"id\":\"3\""), *d = strstr(buf, plain);
  CHECK(a && b && c && d && a < b && b < c && c < d);
  CHECK_EQ_INT(tc_count(buf, "Connection: close"), 1);
  close(fd);
}

TEST(http10_keep_alive_and_close) {
  char buf[4096];
  int closed;
  int fd = tc_connect(ts.port, 2000);
  tc_send_str(fd, "GET /plain HTTP/1.0\r\n\r\n");
  tc_read_all(fd, buf, sizeof buf, &closed);
  CHECK(closed); /* HTTP/1.0 without keep-alive: one response, then close */
  CHECK_EQ_INT(tc_status(buf), 200);
  CHECK(strstr(buf, "Connection: close\r\n") != NULL);
  close(fd);
  fd = tc_connect(ts.port, 2000);
  tc_send_str(fd, "GET /plain HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK(strstr(buf, "Connection: keep-alive\r\n") != NULL);
  tc_send_str(fd, "GET /plain HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  close(fd);
  fd = tc_connect(ts.port, 2000);
  tc_send_str(fd, "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  tc_read_all(fd, buf, sizeof buf, &closed);
  CHECK(closed);
  CHECK(strstr(buf, "Connection: close\r\n") != NULL);
  close(fd);
}

TEST(expect_continue_then_body) {
  char buf[4096];
  int fd = tc_connect(ts.port, 2000);
  tc_send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
                  "Expect: 100-continue\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_STR(buf, "HTTP/1.1 100 Continue\r\n\r\n");
  tc_send_str(fd, "hello world");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  CHECK_EQ_STR(tc_body(buf), "hello world");
  /* With the body already there, no 100 Continue is sent. */
  tc_send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                  "Expect: 100-continue\r\n\r\nok");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  CHECK_EQ_STR(tc_body(buf), "ok");
  close(fd);
}

TEST(absolute_form_and_chunked_request_body) {
  char buf[4096];
  int fd = tc_connect(ts.port, 2000);
  tc_send_str(fd,
              "GET http://example.com/users/7?q=z HTTP/1.1\r\nHost: example.com\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  CHECK(strstr(buf, "\"id\":\"7\"") != NULL);
  CHECK(strstr(buf, "\"q\":\"z\"") != NULL);
  /* Extensions and trailers are accepted and ignored; sent in pieces. */
  tc_send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5;ext=1\r\nhello\r\n");
  tc_sleep_ms(20);
  tc_send_str(fd, "1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  CHECK_EQ_STR(tc_body(buf), "hello 0123456789");
  close(fd);
}

TEST(streaming_response_and_pipelined_request_behind_it) {
  char buf[8192];
  int fd = tc_connect(ts.port, 3000);
  atomic_store(&written.calls, 0);
  tc_send_str(
      fd,
      "GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  CHECK(strstr(buf, "Transfer-Encoding: chunked\r\n") != NULL);
  CHECK(strstr(buf, "4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n") != NULL);
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_STR(tc_body(buf), plain);
  close(fd);
  for (int i = 0; i < 100 && atomic_load(&written.calls) == 0; i++)
    tc_sleep_ms(5);
  CHECK_EQ_INT(atomic_load(&written.calls), 1);
  CHECK_EQ_INT(atomic_load(&written.ok), 1);
}

TEST(large_static_and_borrowed_bodies) {
  CURL *c = curl_easy_init();
  sink body = {0}, head = {0};
  memset(big_body, 'b', sizeof big_body);
  CHECK_EQ_INT(curl_get(c, "/big", &body, &head), 200);
  CHECK_EQ_INT(body.len, sizeof big_body);
  CHECK(body.data && body.data[0] == 'b' && body.data[body.len - 1] == 'b');
  sink_free(&body);
  atomic_store(&borrowed.released, 0);
  CHECK_EQ_INT(curl_get(c, "/borrow", &body, &head), 200);
  CHECK_EQ_INT(body.len, 100000);
  sink_free(&body);
  sink_free(&head);
  curl_easy_cleanup(c);
  for (int i = 0; i < 100 && atomic_load(&borrowed.released) == 0; i++)
    tc_sleep_ms(5);
  CHECK_EQ_INT(atomic_load(&borrowed.released), 1); /* released exactly once */
}

/* The written event fires only once the last byte is in the socket: with a
 * 4 MiB body and a client that has not read yet, it must not have fired;
 * once the client reads everything, it fires with ok = 1. */
TEST(written_event_waits_for_the_last_byte) {
  atomic_store(&written.calls, 0);
  int fd = tc_connect_rcvbuf(ts.port, 5000, 4096);
  tc_send_str(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
  tc_sleep_ms(200);
  CHECK_EQ_INT(atomic_load(&written.calls), 0);
  static char buf[sizeof big_body + 4096];
  size_t n = tc_read_response(fd, buf, sizeof buf);
  CHECK(n > sizeof big_body);
  for (int i = 0; i < 200 && atomic_load(&written.calls) == 0; i++)
    tc_sleep_ms(5);
  CHECK_EQ_INT(atomic_load(&written.calls), 1);
  CHECK_EQ_INT(atomic_load(&written.ok), 1);
  close(fd);
}

TEST(written_event_reports_failure_when_the_client_leaves) {
  atomic_store(&written.calls, 0);
  atomic_store(&written.ok, -1);
  int fd = tc_connect_rcvbuf(ts.port, 3000, 4096);
  tc_send_str(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
  tc_sleep_ms(100);
  struct linger lg = {1, 0}; /* reset, not a polite close */
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
  for (int i = 0; i < 200 && atomic_load(&written.calls) == 0; i++)
    tc_sleep_ms(5);
  CHECK_EQ_INT(atomic_load(&written.calls), 1);
  CHECK_EQ_INT(atomic_load(&written.ok), 0);
}

TEST(echo_round_trips_a_large_body) {
  CURL *c = curl_easy_init();
  sink body = {0}, head = {0};
  size_t n = 300000;
  char *data = malloc(n);
  for (size_t i = 0; i < n; i++)
    data[i] = (char)('a' + i % 26);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/echo", ts.port);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)n);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, sink_write);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &head);
  CHECK_EQ_INT(curl_easy_perform(c), CURLE_OK);
  CHECK_EQ_INT(body.len, n);
  CHECK(body.data && memcmp(body.data, data, n) == 0);
  free(data);
  sink_free(&body);
  sink_free(&head);
  curl_easy_cleanup(c);
}

/* ---- shutdown and threads (own servers) ------------------------------ */

static int h_slow(coda_req *req, coda_res *res, void *user);

typedef struct {
  uv_timer_t timer;
  coda_stream *stream;
} slow_state;

static void slow_done(uv_timer_t *t) {
  slow_state *s = t->data;
  coda_stream_write(s->stream, "done", 4);
  coda_stream_end(s->stream);
  uv_close((uv_handle_t *)t, stream_closed);
}

/* How many /slow requests have reached their handler: a test stops the
 * server only once its request is in flight, not after a sleep that a busy
 * machine can outlast (the connection would then be idle, and closed at
 * once). */
static atomic_int slow_started;

static void wait_slow_started(int before) {
  for (uint64_t t0 = tc_now_ms();
       atomic_load(&slow_started) == before && tc_now_ms() - t0 < 5000;)
    tc_sleep_ms(2);
  CHECK(atomic_load(&slow_started) > before);
}

static int h_slow(coda_req *req, coda_res *res, void *user) {
  (void)user;
  atomic_fetch_add(&slow_started, 1);
  slow_state *s = calloc(1, sizeof *s);
  s->stream = coda_res_stream(res);
  uv_timer_init(coda_req_loop(req), &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, slow_done, 300, 0);
  return 0;
}

TEST(graceful_shutdown_finishes_in_flight_and_closes_idle) {
  coda_app *a = coda_app_new();
  test_server s;
  coda_app_set(a, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
  coda_app_route(a, "GET", "/slow", h_slow, NULL);
  coda_app_route(a, "GET", "/plain", h_plain, NULL);
  REQUIRE(ts_start(&s, a) == 0);
  char buf[4096];
  int idle = tc_connect(s.port, 3000);
  tc_send_str(idle, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(idle, buf, sizeof buf) > 0);
  int busy = tc_connect(s.port, 3000);
  int before = atomic_load(&slow_started);
  tc_send_str(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_slow_started(before);
  uint64_t t0 = tc_now_ms();
  coda_app_stop(a);
  int closed;
  tc_read_all(idle, buf, sizeof buf, &closed);
  CHECK(closed); /* the idle keep-alive connection is closed at once */
  CHECK(tc_now_ms() - t0 < 250);
  tc_read_all(busy, buf, sizeof buf, &closed);
  CHECK(closed);
  CHECK(strstr(buf, "4\r\ndone\r\n0\r\n\r\n") != NULL); /* finished, not cut */
  uv_thread_join(&s.thread);
  CHECK_EQ_INT(s.run_rc, 0);
  CHECK(tc_now_ms() - t0 < 2000);
  CHECK(tc_connect(s.port, 500) < 0); /* no longer accepting */
  close(idle);
  close(busy);
  coda_app_free(a);
}

TEST(shutdown_deadline_cuts_what_does_not_finish) {
  coda_app *a = coda_app_new();
  test_server s;
  coda_app_set(a, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
  coda_app_set(a, CODA_OPT_SHUTDOWN_TIMEOUT, 100);
  coda_app_route(a, "GET", "/slow", h_slow, NULL); /* takes 300 ms */
  REQUIRE(ts_start(&s, a) == 0);
  int busy = tc_connect(s.port, 3000);
  int before = atomic_load(&slow_started);
  tc_send_str(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_slow_started(before);
  uint64_t t0 = tc_now_ms();
  coda_app_stop(a);
  /* The deadline cuts the connection: the client sees it close, after
   * the deadline and without the "done" the stream would send at 300 ms.
   * (When coda_app_run() returns is not the point: the application's
   * timer runs its course first, whatever the deadline.) */
  char buf[4096];
  int closed = 0;
  tc_read_all(busy, buf, sizeof buf, &closed);
  uint64_t cut = tc_now_ms() - t0;
  CHECK(closed);
  CHECK(strstr(buf, "done") == NULL);
  CHECK(cut >= 90);
  close(busy);
  uv_thread_join(&s.thread);
  CHECK(tc_now_ms() - t0 < 5000);
  coda_app_free(a);
}

/* A stream whose client has reset the connection, ended from a timer: the
 * last write fails and closes the connection, and coda_stream_end() runs
 * before libuv's close callback. The connection must be freed once, by
 * that callback (it was freed by the end, then used and freed again by
 * the callback: ASan reported the use after free). Reading has stopped
 * (the client filled the read buffer), so only the write sees the reset. */
typedef struct {
  uv_timer_t timer;
  coda_stream *stream;
  atomic_int *ended;
} reset_state;

static atomic_int reset_ended;

static void reset_tick(uv_timer_t *t) {
  reset_state *st = t->data;
  static char chunk[65536];
  coda_stream_write(st->stream, chunk, sizeof chunk); /* fails: the peer reset */
  coda_stream_end(st->stream);
  atomic_store(st->ended, 1);
  uv_close((uv_handle_t *)t, stream_closed);
}

static int h_reset_stream(coda_req *req, coda_res *res, void *user) {
  (void)user;
  reset_state *st = calloc(1, sizeof *st);
  st->stream = coda_res_stream(res);
  if (!st->stream) {
    free(st);
    return CODA_ESTATE;
  }
  st->ended = &reset_ended;
  uv_timer_init(coda_req_loop(req), &st->timer);
  st->timer.data = st;
  uv_timer_start(&st->timer, reset_tick, 300, 0);
  return 0;
}

TEST(a_stream_ended_after_its_client_reset_is_freed_once) {
  coda_app *a = coda_app_new();
  test_server s;
  coda_app_set(a, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
  coda_app_set(a, CODA_OPT_THREADS, 1);
  coda_app_route(a, "GET", "/reset-stream", h_reset_stream, NULL);
  coda_app_route(a, "GET", "/plain", h_plain, NULL);
  REQUIRE(ts_start(&s, a) == 0);
  atomic_store(&reset_ended, 0);
  int fd = tc_connect(s.port, 3000);
  REQUIRE(fd >= 0);
  /* The request, then more bytes than the read buffer holds: the server
   * stops reading while the stream is open, and never sees the reset. */
  static char req[70000];
  int n = snprintf(req, sizeof req, "GET /reset-stream HTTP/1.1\r\nHost: x\r\n\r\n");
  memset(req + n, 'x', sizeof req - (size_t)n);
  CHECK_EQ_INT(tc_send(fd, req, sizeof req), 0);
  char buf[4096];
  CHECK(tc_read_head(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd); /* RST */
  for (int i = 0; i < 400 && !atomic_load(&reset_ended); i++)
    tc_sleep_ms(5);
  CHECK(atomic_load(&reset_ended));
  tc_sleep_ms(50); /* the close callback has run */
  CHECK_EQ_INT(tc_get(s.port, "/plain", buf, sizeof buf, 3000), 200); /* still serving */
  CHECK_EQ_INT(ts_stop(&s), 0);
  coda_app_free(a);
}

static atomic_int loops_seen[4];

static int h_which_loop(coda_req *req, coda_res *res, void *user) {
  (void)user;
  atomic_fetch_add(&loops_seen[(coda_req_id(req) >> 48) & 3], 1);
  return coda_res_body_static(res, "x", 1);
}

TEST(several_loops_share_the_port) {
  coda_app *a = coda_app_new();
  test_server s;
  coda_app_set(a, CODA_OPT_THREADS, 2);
  coda_app_set(a, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
  coda_app_route(a, "GET", "/", h_which_loop, NULL);
  REQUIRE(ts_start(&s, a) == 0);
  char buf[1024];
  for (int i = 0; i < 40; i++) {
    int fd = tc_connect(s.port, 2000);
    tc_send_str(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(tc_read_response(fd, buf, sizeof buf) > 0);
    close(fd);
  }
  /* SO_REUSEPORT spreads connections by hash: 40 all on one loop would be
   * a one-in-2^39 event, or a listener that is not shared. */
  CHECK(atomic_load(&loops_seen[0]) > 0);
  CHECK(atomic_load(&loops_seen[1]) > 0);
  CHECK_EQ_INT(atomic_load(&loops_seen[0]) + atomic_load(&loops_seen[1]), 40);
  CHECK_EQ_INT(ts_stop(&s), 0);
  coda_app_free(a);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  start(1); /* the server the first cases share */
  static const test__case cases[] = {
      TEST_CASE(plain_and_keep_alive_with_libcurl),
      TEST_CASE(routes_params_query_and_headers),
      TEST_CASE(not_found_method_not_allowed_and_head),
      TEST_CASE(unknown_methods_options_and_equivalent_paths),
      TEST_CASE(failing_handler_goes_to_error_handler),
      TEST_CASE(pipelining_answers_in_order_in_one_write),
      TEST_CASE(http10_keep_alive_and_close),
      TEST_CASE(expect_continue_then_body),
      TEST_CASE(absolute_form_and_chunked_request_body),
      TEST_CASE(streaming_response_and_pipelined_request_behind_it),
      TEST_CASE(large_static_and_borrowed_bodies),
      TEST_CASE(written_event_waits_for_the_last_byte),
      TEST_CASE(written_event_reports_failure_when_the_client_leaves),
      TEST_CASE(echo_round_trips_a_large_body),
      TEST_CASE(graceful_shutdown_finishes_in_flight_and_closes_idle),
      TEST_CASE(shutdown_deadline_cuts_what_does_not_finish),
      TEST_CASE(a_stream_ended_after_its_client_reset_is_freed_once),
      TEST_CASE(several_loops_share_the_port),
  };
  int rc = test__run("http", cases, sizeof cases / sizeof cases[0]);
  stop();
  curl_global_cleanup();
  return rc;
}
