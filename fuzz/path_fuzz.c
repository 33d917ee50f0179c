/*
 * path_fuzz.c - libFuzzer target for the path normalization routes match
 * (src/http/path.c). Each input, prefixed with '/', is normalized; beyond
 * ASan and UBSan, it traps when a property of RFC 3986 6.2.2 fails:
 *  - the result is an absolute path no longer than the input;
 *  - no "." or ".." segment is left;
 *  - no escape of an unreserved byte is left ("%41" would be "A");
 *  - normalizing again changes nothing.
 * Run by scripts/fuzz after the parser target.
 */
#include "http/path.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c)                                                                        \
  do {                                                                                   \
    if (!(c))                                                                            \
      __builtin_trap();                                                                  \
  } while (0)

static int unreserved(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~';
}

static void check(const char *out, size_t in_len) {
  size_t n = strlen(out);
  ASSERT(n >= 1 && n <= in_len && out[0] == '/');
  for (size_t s = 1; s <= n; s++) { /* each segment starts after a '/' */
    if (out[s - 1] != '/')
      continue;
    size_t e = s;
    while (e < n && out[e] != '/')
      e++;
    ASSERT(!(e - s == 1 && out[s] == '.'));
    ASSERT(!(e - s == 2 && out[s] == '.' && out[s + 1] == '.'));
  }
  for (size_t i = 0; i + 2 < n; i++) {
    int hi = coda__hex_value((unsigned char)out[i + 1]);
    int lo = coda__hex_value((unsigned char)out[i + 2]);
    if (out[i] == '%' && hi >= 0 && lo >= 0)
      ASSERT(!unreserved(hi * 16 + lo));
  }
}

/* The parser lets through only whole escapes ("%" HEXDIG HEXDIG). */
static int valid_escapes(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] == '%' &&
        (i + 2 >= n || coda__hex_value(p[i + 1]) < 0 || coda__hex_value(p[i + 2]) < 0))
      return 0;
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096 || memchr(data, 0, size) || !valid_escapes(data, size))
    return 0; /* a path is a C string here, as the parser passes it */
  size_t n = size + 1;
  char *in = malloc(n + 1), *out = malloc(n + 1), *again = malloc(n + 1);
  if (!in || !out || !again)
    abort();
  in[0] = '/';
  memcpy(in + 1, data, size);
  in[n] = '\0';
  coda__path_normalize(out, in, n);
  check(out, n);
  size_t m = strlen(out);
  coda__path_normalize(again, out, m);
  ASSERT(strcmp(again, out) == 0);
  ASSERT(coda__path_needs_normalizing(in) || strcmp(out, in) == 0);
  free(in);
  free(out);
  free(again);
  return 0;
}
