/*
 * test.h - the tiny test harness every coda test uses.
 *
 * A test file defines functions with TEST(name) and lists them in
 * RUN_TESTS(name, ...) which becomes main(). CHECK records a failure and
 * goes on; REQUIRE returns from the test. The last line printed is
 * "N passed, N failed" and the exit code is non-zero on any failure, so
 * ctest and people read the same thing.
 *
 * CODA_TEST_ONLY=name[,name...] runs only the named cases, so one flaky
 * case can be run a hundred times under load without the others.
 */
#ifndef CODA_TEST_H
#define CODA_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test__failures_in_case;

#define TEST(name) static void name(void)

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__,      \
              #cond);                                                          \
      test__failures_in_case++;                                                \
    }                                                                          \
  } while (0)

#define REQUIRE(cond)                                                          \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "  %s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__,    \
              #cond);                                                          \
      test__failures_in_case++;                                                \
      return;                                                                  \
    }                                                                          \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                     \
  do {                                                                         \
    long long test__a = (long long)(a), test__b = (long long)(b);              \
    if (test__a != test__b) {                                                  \
      fprintf(stderr, "  %s:%d: CHECK failed: %s == %s (%lld != %lld)\n",      \
              __FILE__, __LINE__, #a, #b, test__a, test__b);                   \
      test__failures_in_case++;                                                \
    }                                                                          \
  } while (0)

#define CHECK_EQ_STR(a, b)                                                     \
  do {                                                                         \
    const char *test__a = (a), *test__b = (b);                                 \
    if (!test__a || !test__b || strcmp(test__a, test__b) != 0) {               \
      fprintf(stderr, "  %s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n",  \
              __FILE__, __LINE__, #a, #b, test__a ? test__a : "(null)",        \
              test__b ? test__b : "(null)");                                   \
      test__failures_in_case++;                                                \
    }                                                                          \
  } while (0)

typedef struct {
  const char *name;
  void (*fn)(void);
} test__case;

static inline int test__selected(const char *name) {
  const char *only = getenv("CODA_TEST_ONLY");
  if (!only || !*only)
    return 1;
  size_t len = strlen(name);
  for (const char *p = only; *p;) {
    const char *end = strchr(p, ',');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n == len && strncmp(p, name, n) == 0)
      return 1;
    p += end ? n + 1 : n;
  }
  return 0;
}

static inline int test__run(const char *suite, const test__case *cases,
                            size_t n) {
  int passed = 0, failed = 0;
  for (size_t i = 0; i < n; i++) {
    if (!test__selected(cases[i].name))
      continue;
    test__failures_in_case = 0;
    cases[i].fn();
    if (test__failures_in_case == 0) {
      passed++;
      printf("ok   %s.%s\n", suite, cases[i].name);
    } else {
      failed++;
      printf("FAIL %s.%s\n", suite, cases[i].name);
    }
    fflush(stdout);
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

#define TEST_CASE(fn) {#fn, fn}
#define RUN_TESTS(suite, ...)                                                  \
  int main(void) {                                                             \
    static const test__case cases[] = {__VA_ARGS__};                           \
    return test__run(#suite, cases, sizeof cases / sizeof cases[0]);           \
  }

#endif /* CODA_TEST_H */
