/*
 * admin_auth_test.c - who may use the admin surface (src/admin/admin.h):
 * no token, a wrong token, a cookie without the CSRF token, a cross-site
 * POST, each refused with nothing done; the right bearer token, the
 * dashboard link's cookie and the CSRF token let a request through; the
 * token never reaches the access log (the demo, as users run it).
 */
#include "admin/admin.h"
#include "harness.h"
#include "node.h"
#include "test.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TOKEN "test-admin-token-0123456789"

static atomic_int actions_run;

/* An action of the test app, guarded as every admin action is. */
static int post_action(coda_req *req, coda_res *res, void *user) {
  (void)user;
  coda__admin *a = coda__admin_of(coda_req_app(req));
  if (coda__admin_guard(a, req, res, CODA__ADMIN_ACTION))
    return 0;
  atomic_fetch_add(&actions_run, 1);
  return coda_res_json_text(res, 200, "{\"ok\":true}");
}

static test_server ts;

static void start(void) {
  coda_app *app = coda_app_new();
  REQUIRE(app);
  CHECK_EQ_INT(coda_app_admin(app, TOKEN), 0);
  CHECK_EQ_INT(coda_app_route(app, "POST", "/coda/api/test-action", post_action, NULL), 0);
  REQUIRE(ts_start(&ts, app) == 0);
}

static void stop(void) {
  coda_app *app = ts.app;
  ts_stop(&ts);
  tc_app_free(app, 2000);
}

/* Sends one raw request on a fresh connection; the response to buf. */
static int request(const char *raw, char *buf, size_t cap) {
  int fd = tc_connect(ts.port, 5000);
  if (fd < 0)
    return -1;
  buf[0] = '\0';
  int status = -1;
  if (tc_send_str(fd, raw) == 0 && tc_read_response(fd, buf, cap) > 0)
    status = tc_status(buf);
  close(fd);
  return status;
}

static int get_session(const char *extra_head, char *buf, size_t cap) {
  char raw[1024];
  snprintf(raw, sizeof raw, "GET /coda/api/session HTTP/1.1\r\nHost: x\r\n%s\r\n", extra_head);
  return request(raw, buf, cap);
}

/* POST of the test action with extra head lines; returns the status. */
static int post(const char *extra_head, char *buf, size_t cap) {
  char raw[1024];
  snprintf(raw, sizeof raw,
           "POST /coda/api/test-action HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           "Content-Length: 0\r\n%s\r\n",
           extra_head);
  return request(raw, buf, cap);
}

/* The csrf of /coda/api/session, read with the bearer token. */
static void read_csrf(char *csrf, size_t cap) {
  char buf[4096];
  csrf[0] = '\0';
  REQUIRE(get_session("Authorization: Bearer " TOKEN "\r\n", buf, sizeof buf) == 200);
  const char *p = strstr(buf, "\"csrf\":\"");
  REQUIRE(p);
  p += 8;
  size_t n = strcspn(p, "\"");
  REQUIRE(n == 64 && n < cap);
  memcpy(csrf, p, n);
  csrf[n] = '\0';
}

TEST(no_or_wrong_token_is_401) {
  start();
  char buf[4096];
  CHECK_EQ_INT(get_session("", buf, sizeof buf), 401);
  CHECK(strstr(buf, "WWW-Authenticate: Bearer") != NULL);
  CHECK_EQ_INT(get_session("Authorization: Bearer wrong-token-0123456789\r\n", buf, sizeof buf),
               401);
  /* A prefix of the token, and the token with a byte more, are wrong too. */
  CHECK_EQ_INT(get_session("Authorization: Bearer test-admin-token-012345678\r\n", buf,
                           sizeof buf),
               401);
  CHECK_EQ_INT(get_session("Authorization: Bearer " TOKEN "0\r\n", buf, sizeof buf), 401);
  CHECK_EQ_INT(get_session("Cookie: coda_admin=nope\r\n", buf, sizeof buf), 401);
  CHECK_EQ_INT(get_session("Authorization: Basic " TOKEN "\r\n", buf, sizeof buf), 401);
  /* A loopback peer gets no exception. */
  CHECK_EQ_INT(tc_get(ts.port, "/coda/api/session", buf, sizeof buf, 5000), 401);
  CHECK_EQ_INT(get_session("Authorization: Bearer " TOKEN "\r\n", buf, sizeof buf), 200);
  CHECK(strstr(buf, "Cache-Control: no-store") != NULL);
  stop();
}

TEST(dashboard_link_sets_a_strict_cookie) {
  start();
  char buf[4096];
  CHECK_EQ_INT(tc_get(ts.port, "/coda/api/session?token=" TOKEN, buf, sizeof buf, 5000), 303);
  CHECK(strstr(buf, "Set-Cookie: coda_admin=" TOKEN "; Path=/coda; HttpOnly; SameSite=Strict") !=
        NULL);
  CHECK(strstr(buf, "Location: /coda/api/session\r\n") != NULL);
  CHECK_EQ_INT(tc_get(ts.port, "/coda/api/session?token=wrong-token-0123456789", buf, sizeof buf,
                      5000),
               401);
  CHECK(strstr(buf, "Set-Cookie") == NULL);
  CHECK_EQ_INT(get_session("Cookie: a=1; coda_admin=" TOKEN "; b=2\r\n", buf, sizeof buf), 200);
  stop();
}

TEST(actions_need_csrf_by_cookie) {
  start();
  atomic_store(&actions_run, 0);
  char buf[4096], csrf[80], head[512];
  read_csrf(csrf, sizeof csrf);
  CHECK_EQ_INT(post("", buf, sizeof buf), 401);
  CHECK_EQ_INT(post("Cookie: coda_admin=" TOKEN "\r\n", buf, sizeof buf), 403);
  CHECK_EQ_INT(post("Cookie: coda_admin=" TOKEN "\r\nX-Coda-CSRF: 00\r\n", buf, sizeof buf), 403);
  CHECK_EQ_INT(atomic_load(&actions_run), 0);
  /* A cross-site form post carries the Origin of the other site. */
  snprintf(head, sizeof head,
           "Cookie: coda_admin=" TOKEN "\r\nX-Coda-CSRF: %s\r\nOrigin: http://evil.example\r\n",
           csrf);
  CHECK_EQ_INT(post(head, buf, sizeof buf), 403);
  CHECK_EQ_INT(atomic_load(&actions_run), 0);
  snprintf(head, sizeof head,
           "Cookie: coda_admin=" TOKEN "\r\nX-Coda-CSRF: %s\r\nOrigin: http://127.0.0.1\r\n",
           csrf);
  CHECK_EQ_INT(post(head, buf, sizeof buf), 200);
  CHECK_EQ_INT(atomic_load(&actions_run), 1);
  /* A bearer token is never sent by a browser on its own: no CSRF. */
  CHECK_EQ_INT(post("Authorization: Bearer " TOKEN "\r\n", buf, sizeof buf), 200);
  CHECK_EQ_INT(atomic_load(&actions_run), 2);
  /* The link login works for GET only: a POST with ?token= is refused. */
  CHECK_EQ_INT(request("POST /coda/api/test-action?token=" TOKEN
                       " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
                       buf, sizeof buf),
               401);
  CHECK_EQ_INT(atomic_load(&actions_run), 2);
  stop();
}

TEST(mount_checks_the_token) {
  coda_app *app = coda_app_new();
  REQUIRE(app);
  CHECK(coda_app_admin_token(app) == NULL);
  CHECK_EQ_INT(coda_app_admin(app, "short"), CODA_EINVAL);
  CHECK_EQ_INT(coda_app_admin(app, "has a space in it, 1234"), CODA_EINVAL);
  CHECK_EQ_INT(coda_app_admin(app, "base64+like/token=0123"), CODA_EINVAL); /* + / = need escaping */
  CHECK_EQ_INT(coda_app_admin(app, "amp&in-the-token-0123"), CODA_EINVAL);
  CHECK(coda_app_admin_token(app) == NULL);
  unsetenv("CODA_ADMIN_TOKEN");
  CHECK_EQ_INT(coda_app_admin(app, NULL), 0);
  const char *t = coda_app_admin_token(app);
  REQUIRE(t);
  CHECK_EQ_INT((int)strlen(t), 64);
  CHECK_EQ_INT((int)strspn(t, "0123456789abcdef"), 64);
  CHECK_EQ_INT(coda_app_admin(app, TOKEN), CODA_EEXIST);
  coda_app_free(app);
  /* Two apps never make the same token. */
  coda_app *b = coda_app_new(), *c = coda_app_new();
  REQUIRE(b && c);
  CHECK_EQ_INT(coda_app_admin(b, NULL), 0);
  CHECK_EQ_INT(coda_app_admin(c, NULL), 0);
  CHECK(strcmp(coda_app_admin_token(b), coda_app_admin_token(c)) != 0);
  coda_app_free(b);
  coda_app_free(c);
  /* CODA_ADMIN_TOKEN is the token when none is given. */
  setenv("CODA_ADMIN_TOKEN", TOKEN, 1);
  coda_app *d = coda_app_new();
  REQUIRE(d);
  CHECK_EQ_INT(coda_app_admin(d, NULL), 0);
  CHECK_EQ_STR(coda_app_admin_token(d), TOKEN);
  coda_app_free(d);
  unsetenv("CODA_ADMIN_TOKEN");
}

TEST(secret_compare) {
  CHECK(coda__admin_secret_eq("abc", 3, "abc", 3));
  CHECK(!coda__admin_secret_eq("abc", 3, "abd", 3));
  CHECK(!coda__admin_secret_eq("abc", 3, "ab", 2));
  CHECK(!coda__admin_secret_eq("abc", 3, "abcd", 4));
  CHECK(!coda__admin_secret_eq("abc", 3, "", 0));
}

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* How many times `needle` occurs in the file. */
static int count_in_file(const char *path, const char *needle) {
  static char buf[1 << 16];
  tc_read_file(path, buf, sizeof buf);
  int n = 0;
  for (const char *p = buf; (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

/* The demo as users run it (access log on): the requests that carry the
 * token, in a link or a header, are logged without it. */
static void demo_log_case(int given) {
  char dir[] = "/tmp/coda-admin-auth-XXXXXX";
  REQUIRE(mkdtemp(dir));
  char log[256], token[200];
  snprintf(log, sizeof log, "%s/demo.log", dir);
  if (given)
    setenv("CODA_ADMIN_TOKEN", TOKEN, 1);
  else
    unsetenv("CODA_ADMIN_TOKEN");
  char *argv[] = {CODA_DEMO_PATH, "--listen", "127.0.0.1:0", "--store", "memory", "--tick", "0",
                  NULL};
  tc_node n;
  int rc = tc_node_start_logged(&n, argv, log, "listening on http://127.0.0.1:", 20000);
  unsetenv("CODA_ADMIN_TOKEN");
  if (rc != 0) {
    CHECK(rc == 0);
    tc_node_end(&n, SIGKILL, 5000);
    tc_remove_tree(dir);
    return;
  }
  static char text[1 << 16];
  tc_read_file(log, text, sizeof text);
  const char *link = strstr(text, "/coda/?token=");
  CHECK(link != NULL);
  if (given) {
    snprintf(token, sizeof token, "%s", TOKEN);
    CHECK(strstr(text, TOKEN) == NULL); /* a token the operator chose is not printed */
  } else if (link) {
    snprintf(token, sizeof token, "%.64s", link + 13);
    CHECK_EQ_INT((int)strspn(token, "0123456789abcdef"), 64);
  }
  char path[512], buf[4096], head[512];
  snprintf(path, sizeof path, "/coda/api/session?token=%s", token);
  CHECK_EQ_INT(tc_get(n.port, path, buf, sizeof buf, 5000), 303);
  /* Only the literal spelling logs in; an encoded one is redacted all the same. */
  snprintf(path, sizeof path, "/coda/api/session?%%74oken=%s", token);
  CHECK_EQ_INT(tc_get(n.port, path, buf, sizeof buf, 5000), 401);
  int fd = tc_connect(n.port, 5000);
  REQUIRE(fd >= 0);
  snprintf(head, sizeof head,
           "GET /coda/api/session HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n",
           token);
  CHECK(tc_send_str(fd, head) == 0);
  CHECK(tc_read_response(fd, buf, sizeof buf) > 0 && tc_status(buf) == 200);
  close(fd);
  /* Wait for both access log lines (the log has its own writer thread). */
  int64_t deadline = now_ms() + 10000;
  while (count_in_file(log, "\"GET /coda/api/session") < 3 && now_ms() < deadline)
    usleep(10000);
  CHECK_EQ_INT(count_in_file(log, "\"GET /coda/api/session"), 3);
  CHECK_EQ_INT(count_in_file(log, "GET /coda/api/session?%74oken=REDACTED HTTP/1.1\" 401"), 1);
  CHECK_EQ_INT(count_in_file(log, "GET /coda/api/session?token=REDACTED HTTP/1.1\" 303"), 1);
  /* The token appears only in the link printed at start, when made up. */
  CHECK_EQ_INT(count_in_file(log, token), given ? 0 : 1);
  CHECK(tc_node_end(&n, SIGTERM, 15000) != -1);
  tc_remove_tree(dir);
}

TEST(token_stays_out_of_the_access_log) {
  demo_log_case(0);
  demo_log_case(1);
}

RUN_TESTS(admin_auth, TEST_CASE(no_or_wrong_token_is_401),
          TEST_CASE(dashboard_link_sets_a_strict_cookie), TEST_CASE(actions_need_csrf_by_cookie),
          TEST_CASE(mount_checks_the_token), TEST_CASE(secret_compare),
          TEST_CASE(token_stays_out_of_the_access_log))
