/*
 * dashboard_test.c - the dashboard's files as the server sends them
 * (src/admin/dashboard.c): each one byte for byte as in src/admin/assets/,
 * with its type, the CSP and an ETag; a 304 for a known ETag; 401 without
 * the token; 404 for a name that is not there, ".." included; GET /coda
 * sent on to /coda/. And the rules the page keeps, read from the files:
 * no inline script or handler in index.html, no markup sink in app.js.
 * The page in a real browser is tests/browser/dashboard.test.js.
 */
#include "admin/dashboard.h"
#include "harness.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOKEN "dashboard-test-token-0123456789"
#define BEARER "Authorization: Bearer " TOKEN "\r\n"

static test_server ts;

static void start(void) {
  coda_app *app = coda_app_new();
  REQUIRE(app);
  CHECK_EQ_INT(coda_app_admin(app, TOKEN), 0);
  REQUIRE(ts_start(&ts, app) == 0);
}

static void stop(void) {
  coda_app *app = ts.app;
  ts_stop(&ts);
  tc_app_free(app, 2000);
}

/* GET target with extra head lines on a fresh connection; the response to
 * buf. Returns its status, or -1. */
static int get(const char *target, const char *extra_head, char *buf, size_t cap) {
  char raw[1024];
  snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n", target, extra_head);
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

/* The value of response header `name` (as "\r\nName: value"), copied to
 * out; "" if absent. */
static const char *header(const char *resp, const char *name, char *out, size_t cap) {
  char key[128];
  snprintf(key, sizeof key, "\r\n%s: ", name);
  const char *p = strstr(resp, key);
  const char *end = p ? strstr(p + strlen(key), "\r\n") : NULL;
  out[0] = '\0';
  if (p && end) {
    p += strlen(key);
    size_t n = (size_t)(end - p) < cap - 1 ? (size_t)(end - p) : cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
  }
  return out;
}

/* A file of src/admin/assets/ (malloc'd, NUL-terminated), or NULL. */
static char *read_source(const char *name, size_t *len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", CODA_ASSETS_DIR, name);
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc((size_t)n + 1);
  if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
    free(p);
    p = NULL;
  }
  fclose(f);
  if (p) {
    p[n] = '\0';
    *len = (size_t)n;
  }
  return p;
}

TEST(every_asset_is_served_as_built) {
  start();
  static char buf[1 << 20];
  char value[256];
  int n = 0;
  for (const coda__asset *a = coda__dashboard_assets; a->name; a++, n++) {
    size_t len = 0;
    char *src = read_source(a->name, &len);
    REQUIRE(src != NULL);
    CHECK(a->len == len && memcmp(a->data, src, len) == 0); /* embedded byte for byte */
    CHECK(a->data[a->len] == '\0');
    char target[256];
    snprintf(target, sizeof target, "/coda/assets/%s", a->name);
    CHECK_EQ_INT(get(target, BEARER, buf, sizeof buf), 200);
    const char *body = tc_body(buf);
    CHECK(body && strlen(body) == len && memcmp(body, src, len) == 0);
    CHECK(strstr(header(buf, "Content-Security-Policy", value, sizeof value),
                 "default-src 'self'") != NULL);
    CHECK_EQ_STR(header(buf, "X-Content-Type-Options", value, sizeof value), "nosniff");
    CHECK_EQ_STR(header(buf, "ETag", value, sizeof value), a->etag);
    CHECK_EQ_STR(header(buf, "Cache-Control", value, sizeof value), "private, no-cache");
    const char *ext = strrchr(a->name, '.');
    const char *want = strcmp(ext, ".js") == 0    ? "text/javascript; charset=utf-8"
                       : strcmp(ext, ".css") == 0 ? "text/css; charset=utf-8"
                       : strcmp(ext, ".svg") == 0 ? "image/svg+xml"
                                                  : "text/html; charset=utf-8";
    CHECK_EQ_STR(header(buf, "Content-Type", value, sizeof value), want);
    free(src);
  }
  CHECK(n >= 4);
  /* The page itself at /coda/. */
  CHECK_EQ_INT(get("/coda/", BEARER, buf, sizeof buf), 200);
  CHECK(strstr(tc_body(buf), "<script src=\"assets/app.js\"") != NULL);
  CHECK(strstr(header(buf, "Content-Security-Policy", value, sizeof value),
               "frame-ancestors 'none'"));
  stop();
}

TEST(a_known_etag_gets_304) {
  start();
  static char buf[1 << 20];
  char value[256], inm[256];
  const coda__asset *js = coda__dashboard_asset("app.js");
  REQUIRE(js != NULL);
  snprintf(inm, sizeof inm, BEARER "If-None-Match: W/\"x\", %s\r\n", js->etag);
  CHECK_EQ_INT(get("/coda/assets/app.js", inm, buf, sizeof buf), 304);
  CHECK_EQ_STR(tc_body(buf), "");
  CHECK_EQ_STR(header(buf, "ETag", value, sizeof value), js->etag);
  CHECK_EQ_INT(
      get("/coda/assets/app.js", BEARER "If-None-Match: \"other\"\r\n", buf, sizeof buf),
      200);
  stop();
}

TEST(without_the_token_nothing_is_sent) {
  start();
  char buf[8192];
  const char *targets[] = {"/coda/", "/coda/assets/app.js", "/coda/assets/index.html",
                           "/coda/assets/nothing.js"};
  for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
    CHECK_EQ_INT(get(targets[i], "", buf, sizeof buf), 401);
    CHECK(strstr(buf, "use strict") == NULL && strstr(buf, "<!doctype") == NULL);
    CHECK_EQ_INT(get(targets[i], "Authorization: Bearer wrong-token-0123456789\r\n", buf,
                     sizeof buf),
                 401);
  }
  /* The dashboard link: the cookie, then the page by it. */
  CHECK_EQ_INT(get("/coda/?token=" TOKEN, "", buf, sizeof buf), 303);
  CHECK_EQ_INT(get("/coda/", "Cookie: coda_admin=" TOKEN "\r\n", buf, sizeof buf), 200);
  stop();
}

TEST(unknown_names_are_404) {
  start();
  char buf[8192];
  const char *targets[] = {"/coda/assets/nothing.js", "/coda/assets/..%2Fadmin.c",
                           "/coda/assets/.%2E%2Fapp.js", "/coda/assets/APP.JS",
                           "/coda/assets/app.js%20"};
  for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
    CHECK_EQ_INT(get(targets[i], BEARER, buf, sizeof buf), 404);
  /* A NUL in the path is refused before any route (400), never app.js. */
  CHECK_EQ_INT(get("/coda/assets/app.js%00", BEARER, buf, sizeof buf), 400);
  stop();
}

TEST(bare_coda_goes_to_the_page) {
  start();
  char buf[8192], value[256];
  CHECK_EQ_INT(get("/coda", "", buf, sizeof buf), 302);
  CHECK_EQ_STR(header(buf, "Location", value, sizeof value), "coda/");
  CHECK_EQ_INT(get("/coda?token=abc", "", buf, sizeof buf), 302);
  CHECK_EQ_STR(header(buf, "Location", value, sizeof value), "coda/?token=abc");
  stop();
}

/* The page must run under default-src 'self' and never turn data into
 * markup: these are the constructs that would break either rule. */
TEST(the_files_keep_the_page_rules) {
  const coda__asset *html = coda__dashboard_asset("index.html");
  const coda__asset *js = coda__dashboard_asset("app.js");
  REQUIRE(html && js);
  const char *h = (const char *)html->data;
  for (const char *p = strstr(h, "<script"); p; p = strstr(p + 1, "<script")) {
    const char *end = strchr(p, '>');
    REQUIRE(end != NULL);
    CHECK(strstr(p, " src=") && strstr(p, " src=") < end); /* no inline script */
    CHECK(strncmp(end, "></script>", 10) == 0);
  }
  const char *inline_bits[] = {" onclick=",   " onload=", " onerror=", " style=",
                               "javascript:", "http://",  "https://",  "//"};
  for (size_t i = 0; i < sizeof inline_bits / sizeof inline_bits[0]; i++)
    if (strstr(h, inline_bits[i]) != NULL) {
      printf("index.html holds %s\n", inline_bits[i]);
      CHECK(0);
    }
  const char *sinks[] = {
      "innerHTML", "outerHTML",    "insertAdjacentHTML",   "document.write",
      "eval(",     "new Function", "setAttribute('style'", "http://",
      "https://"};
  for (size_t i = 0; i < sizeof sinks / sizeof sinks[0]; i++)
    if (strstr((const char *)js->data, sinks[i]) != NULL) {
      printf("app.js holds %s\n", sinks[i]);
      CHECK(0);
    }
}

RUN_TESTS(dashboard, TEST_CASE(every_asset_is_served_as_built),
          TEST_CASE(a_known_etag_gets_304), TEST_CASE(without_the_token_nothing_is_sent),
          TEST_CASE(unknown_names_are_404), TEST_CASE(bare_coda_goes_to_the_page),
          TEST_CASE(the_files_keep_the_page_rules))
