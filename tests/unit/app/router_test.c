/*
 * router_test.c - route patterns, matching, precedence, 405's Allow list.
 */
#include "app/router.h"
#include "test.h"

#include <stdio.h>
#include <string.h>

static int h(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)res, (void)user;
  return 0;
}

static coda__router *r;

static const coda__route *match(const char *method, const char *path, coda__match *m) {
  coda__router_match(r, method, strlen(method), path, strlen(path), m);
  return m->route;
}

TEST(bad_patterns_are_refused) {
  CHECK_EQ_INT(coda__router_add(r, "GET", "nope", h, NULL), CODA_EINVAL);
  CHECK_EQ_INT(coda__router_add(r, "GET", "/a/{}", h, NULL), CODA_EINVAL);
  CHECK_EQ_INT(coda__router_add(r, "GET", "/a/x{y}", h, NULL), CODA_EINVAL);
  CHECK_EQ_INT(coda__router_add(r, "G T", "/a", h, NULL), CODA_EINVAL);
  CHECK_EQ_INT(coda__router_add(r, "GET", "/a/{1}/{2}/{3}/{4}/{5}/{6}/{7}/{8}/{9}", h, NULL),
               CODA_EINVAL);
  CHECK_EQ_INT(coda__router_add(r, "GET", "/dup", h, NULL), 0);
  CHECK_EQ_INT(coda__router_add(r, "GET", "/dup", h, NULL), CODA_EEXIST);
}

TEST(literal_and_capture_segments) {
  coda__match m;
  REQUIRE(coda__router_add(r, "GET", "/users/{id}/posts/{post}", h, (void *)1) == 0);
  REQUIRE(match("GET", "/users/42/posts/7", &m) != NULL);
  CHECK_EQ_INT(m.nparams, 2);
  CHECK(m.params[0].len == 2 && memcmp(m.params[0].value, "42", 2) == 0);
  CHECK_EQ_STR(m.params[1].name, "post");
  CHECK(match("GET", "/users/42/posts", &m) == NULL);
  CHECK(match("GET", "/users/42/posts/7/x", &m) == NULL);
  CHECK(match("GET", "/users//posts/7", &m) == NULL); /* empty capture */
}

TEST(trailing_slash_is_significant) {
  coda__match m;
  REQUIRE(coda__router_add(r, "GET", "/thread/", h, NULL) == 0);
  CHECK(match("GET", "/thread/", &m) != NULL);
  CHECK(match("GET", "/thread", &m) == NULL);
  REQUIRE(coda__router_add(r, "GET", "/", h, NULL) == 0);
  CHECK(match("GET", "/", &m) != NULL);
}

TEST(literal_beats_capture_whatever_the_order) {
  coda__match m;
  REQUIRE(coda__router_add(r, "GET", "/items/{id}", h, (void *)1) == 0);
  REQUIRE(coda__router_add(r, "GET", "/items/new", h, (void *)2) == 0);
  REQUIRE(match("GET", "/items/new", &m) != NULL);
  CHECK(m.route->user == (void *)2);
  REQUIRE(match("GET", "/items/old", &m) != NULL);
  CHECK(m.route->user == (void *)1);
}

TEST(head_is_served_by_get_and_405_lists_methods) {
  coda__match m;
  REQUIRE(coda__router_add(r, "GET", "/res", h, (void *)1) == 0);
  REQUIRE(coda__router_add(r, "DELETE", "/res", h, (void *)2) == 0);
  REQUIRE(match("HEAD", "/res", &m) != NULL);
  CHECK(m.route->user == (void *)1);
  CHECK(match("POST", "/res", &m) == NULL);
  CHECK_EQ_INT(m.path_matched, 1);
  CHECK(match("POST", "/elsewhere", &m) == NULL);
  CHECK_EQ_INT(m.path_matched, 0);
  char allow[64];
  coda__router_allow(r, "/res", 4, allow, sizeof allow);
  CHECK_EQ_STR(allow, "GET, HEAD, DELETE");
  REQUIRE(coda__router_add(r, "HEAD", "/res", h, (void *)3) == 0);
  REQUIRE(match("HEAD", "/res", &m) != NULL);
  CHECK(m.route->user == (void *)3); /* an explicit HEAD route wins */
  coda__router_allow(r, "/res", 4, allow, sizeof allow);
  CHECK_EQ_STR(allow, "GET, HEAD, DELETE");
}

TEST(a_literal_path_for_another_method_falls_back_to_captures) {
  coda__match m;
  REQUIRE(coda__router_add(r, "GET", "/users/me", h, (void *)1) == 0);
  REQUIRE(coda__router_add(r, "DELETE", "/users/{id}", h, (void *)2) == 0);
  REQUIRE(match("DELETE", "/users/me", &m) != NULL);
  CHECK(m.route->user == (void *)2);
  CHECK(m.nparams == 1 && m.params[0].len == 2);
  CHECK(match("PUT", "/users/me", &m) == NULL);
  CHECK_EQ_INT(m.path_matched, 1);
}

TEST(hundreds_of_literal_routes_each_find_their_own) {
  char path[32];
  for (long i = 0; i < 300; i++) {
    snprintf(path, sizeof path, "/r/%ld", i);
    REQUIRE(coda__router_add(r, i % 2 ? "POST" : "GET", path, h, (void *)(i + 1)) == 0);
  }
  coda__match m;
  for (long i = 0; i < 300; i++) {
    snprintf(path, sizeof path, "/r/%ld", i);
    REQUIRE(match(i % 2 ? "POST" : "GET", path, &m) != NULL);
    CHECK(m.route->user == (void *)(i + 1));
    CHECK(match(i % 2 ? "GET" : "POST", path, &m) == NULL);
    CHECK_EQ_INT(m.path_matched, 1);
  }
  CHECK(match("GET", "/r/300", &m) == NULL);
  CHECK_EQ_INT(m.path_matched, 0);
  CHECK(match("GET", "/r/1/", &m) == NULL);
}

static void fresh(void (*fn)(void)) {
  r = coda__router_new();
  fn();
  coda__router_free(r);
}

#define CASE(fn)                                                               \
  static void fn##_fresh(void) { fresh(fn); }
CASE(bad_patterns_are_refused)
CASE(literal_and_capture_segments)
CASE(trailing_slash_is_significant)
CASE(literal_beats_capture_whatever_the_order)
CASE(head_is_served_by_get_and_405_lists_methods)
CASE(a_literal_path_for_another_method_falls_back_to_captures)
CASE(hundreds_of_literal_routes_each_find_their_own)

RUN_TESTS(router, {"bad_patterns_are_refused", bad_patterns_are_refused_fresh},
          {"literal_and_capture_segments", literal_and_capture_segments_fresh},
          {"trailing_slash_is_significant", trailing_slash_is_significant_fresh},
          {"literal_beats_capture_whatever_the_order", literal_beats_capture_whatever_the_order_fresh},
          {"head_is_served_by_get_and_405_lists_methods", head_is_served_by_get_and_405_lists_methods_fresh},
          {"a_literal_path_for_another_method_falls_back_to_captures",
           a_literal_path_for_another_method_falls_back_to_captures_fresh},
          {"hundreds_of_literal_routes_each_find_their_own",
           hundreds_of_literal_routes_each_find_their_own_fresh})
