/*
 * alloc_test.c - proves the keep-alive fast path allocates nothing.
 *
 * This program replaces malloc and friends (glibc lets an executable
 * interpose them) with versions that count calls from every thread, then
 * runs a real server and 10,000 keep-alive requests through it, plain and
 * pipelined, with and without the access log. Not built under ASan, which
 * owns malloc itself.
 */
#include "harness.h"
#include "test.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static atomic_long allocations;

void *malloc(size_t n) {
  atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
  return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
  atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
  return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
  atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
  return __libc_realloc(p, n);
}
int posix_memalign(void **p, size_t align, size_t n) {
  atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
  *p = __libc_memalign(align, n);
  return *p ? 0 : 12;
}
void *aligned_alloc(size_t align, size_t n) {
  atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
  return __libc_memalign(align, n);
}
void free(void *p) { __libc_free(p); }

#define REQUESTS 10000

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

static int h_user(coda_req *req, coda_res *res, void *user) {
  (void)user;
  const char *id = coda_req_param(req, "id");
  const char *q = coda_req_query(req, "q");
  coda_res_header(res, "X-Id", id ? id : "-");
  return coda_res_body(res, q ? q : "", q ? strlen(q) : 0);
}

/* Sends `batch` copies of req at once and reads as many responses. */
static int exchange(int fd, const char *req, int batch) {
  static char out[64 * 1024], in[256 * 1024];
  size_t rlen = strlen(req), n = 0;
  for (int i = 0; i < batch; i++, n += rlen)
    memcpy(out + n, req, rlen);
  if (tc_send(fd, out, n) != 0)
    return -1;
  for (int i = 0; i < batch; i++)
    if (tc_read_response(fd, in, sizeof in) == 0 || tc_status(in) != 200)
      return -1;
  return 0;
}

/* Allocations made while `rounds` exchanges of `batch` requests ran, after
 * a warm-up that lets buffers reach their working size. */
static long count_allocations(int port, const char *req, int batch) {
  int fd = tc_connect(port, 5000);
  if (fd < 0)
    return -1;
  for (int i = 0; i < 100; i++)
    if (exchange(fd, req, batch) != 0)
      return -1;
  long before = atomic_load(&allocations);
  for (int i = 0; i < REQUESTS / batch; i++)
    if (exchange(fd, req, batch) != 0)
      return -1;
  long after = atomic_load(&allocations);
  close(fd);
  return after - before;
}

static test_server ts;

static const char get_plain[] = "GET /plain HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n";
static const char post_echo[] = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
                                "Content-Type: text/plain\r\n\r\nhello world";
static const char get_user[] = "GET /users/a%20b?x=1&q=caf%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n";

TEST(plain_keep_alive_allocates_nothing) {
  CHECK_EQ_INT(count_allocations(ts.port, get_plain, 1), 0);
}

TEST(pipelined_allocates_nothing) {
  CHECK_EQ_INT(count_allocations(ts.port, get_plain, 16), 0);
}

TEST(echo_with_body_allocates_nothing) {
  CHECK_EQ_INT(count_allocations(ts.port, post_echo, 1), 0);
}

TEST(params_and_query_allocate_nothing) {
  CHECK_EQ_INT(count_allocations(ts.port, get_user, 1), 0);
}

static coda_app *app;

TEST(access_log_allocates_nothing) {
  ts_stop(&ts);
  coda_app_set(app, CODA_OPT_ACCESS_LOG, 1);
  REQUIRE(ts_start(&ts, app) == 0);
  /* The log goes to stderr; send it to /dev/null for this case. */
  int saved = dup(2), null = open("/dev/null", O_WRONLY);
  dup2(null, 2);
  long n = count_allocations(ts.port, get_plain, 1);
  dup2(saved, 2);
  close(null);
  close(saved);
  CHECK_EQ_INT(n, 0);
}

/* The counter works: a request that does allocate is seen. Without this,
 * a broken interposition would make every case above pass. */
TEST(the_counter_sees_allocations) {
  long before = atomic_load(&allocations);
  void *p = malloc(32);
  free(p);
  CHECK_EQ_INT(atomic_load(&allocations) - before, 1);
  char *big = malloc(1 << 20); /* a 1 MiB body makes the server grow */
  memset(big, 'x', 1 << 20);
  int fd = tc_connect(ts.port, 5000);
  char head[128];
  snprintf(head, sizeof head,
           "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", (1 << 20) - 200);
  before = atomic_load(&allocations);
  tc_send_str(fd, head);
  tc_send(fd, big, (1 << 20) - 200);
  static char in[(1 << 20) + 4096];
  CHECK(tc_read_response(fd, in, sizeof in) > 0);
  CHECK(atomic_load(&allocations) - before > 0);
  close(fd);
  free(big);
}

int main(void) {
  app = coda_app_new();
  coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_WARN);
  coda_app_route(app, "GET", "/plain", h_plain, NULL);
  coda_app_route(app, "POST", "/echo", h_echo, NULL);
  coda_app_route(app, "GET", "/users/{id}", h_user, NULL);
  if (ts_start(&ts, app) != 0)
    return 1;
  static const test__case cases[] = {
      TEST_CASE(plain_keep_alive_allocates_nothing),
      TEST_CASE(pipelined_allocates_nothing),
      TEST_CASE(echo_with_body_allocates_nothing),
      TEST_CASE(params_and_query_allocate_nothing),
      TEST_CASE(the_counter_sees_allocations),
      TEST_CASE(access_log_allocates_nothing), /* last: restarts the server */
  };
  int rc = test__run("alloc", cases, sizeof cases / sizeof cases[0]);
  ts_stop(&ts);
  coda_app_free(app);
  return rc;
}
