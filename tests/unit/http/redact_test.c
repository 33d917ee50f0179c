/*
 * redact_test.c - coda__http_redact_target() (src/http/path.h): a `token`
 * query parameter's value never reaches a log, however its name is
 * percent-encoded; everything else of the target is kept byte for byte.
 */
#include "http/path.h"
#include "test.h"

#include <string.h>

static void check(const char *in, const char *want) {
  char out[256];
  size_t n = coda__http_redact_target(out, in, strlen(in));
  CHECK(n <= strlen(in));
  out[n] = '\0';
  CHECK_EQ_STR(out, want);
}

TEST(token_values_are_hidden) {
  check("/coda/?token=0123456789abcdef", "/coda/?token=REDACTED");
  check("/coda/?a=1&token=0123456789abcdef&b=2", "/coda/?a=1&token=REDACTED&b=2");
  check("/x?token=abcd", "/x?token=REDA"); /* cut to the value's length */
  check("/x?token=", "/x?token=");
  check("/x?token=a&token=b", "/x?token=R&token=R");
}

TEST(encoded_names_are_hidden_too) {
  check("/coda/?%74oken=secret-value-123", "/coda/?%74oken=REDACTED");
  check("/coda/?tok%65n=secret-value-123", "/coda/?tok%65n=REDACTED");
  check("/coda/?%74%6F%6B%65%6E=secret-value-123", "/coda/?%74%6F%6B%65%6E=REDACTED");
}

TEST(other_names_and_paths_are_kept) {
  check("/plain", "/plain");
  check("/token=x", "/token=x"); /* a path, not a query */
  check("/x?tokens=abc&mytoken=abc&token", "/x?tokens=abc&mytoken=abc&token");
  check("/x?%7=abc&%zz=1&tok%6=2", "/x?%7=abc&%zz=1&tok%6=2");
  check("/x?a=%74oken", "/x?a=%74oken");
}

RUN_TESTS(http_redact, TEST_CASE(token_values_are_hidden), TEST_CASE(encoded_names_are_hidden_too),
          TEST_CASE(other_names_and_paths_are_kept))
