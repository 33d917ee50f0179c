/*
 * buf.c - growable byte buffer (see buf.h).
 */
#include "common/buf.h"

#include "coda.h"

#include <stdint.h>
#include <stdlib.h>

int coda__buf_reserve(coda__buf *b, size_t n) {
  if (b->cap - b->len >= n)
    return 0;
  if (n > SIZE_MAX / 2 - b->len)
    return CODA_ENOMEM;
  size_t cap = b->cap ? b->cap : 1024;
  while (cap - b->len < n)
    cap *= 2;
  char *p = realloc(b->base, cap);
  if (!p)
    return CODA_ENOMEM;
  b->base = p;
  b->cap = cap;
  return 0;
}

static int append_digits(coda__buf *b, unsigned long long v, unsigned base) {
  static const char digits[] = "0123456789abcdef";
  char tmp[24];
  size_t n = 0;
  do {
    tmp[sizeof tmp - ++n] = digits[v % base];
    v /= base;
  } while (v);
  return coda__buf_append(b, tmp + sizeof tmp - n, n);
}

int coda__buf_append_u64(coda__buf *b, unsigned long long v) {
  return append_digits(b, v, 10);
}

int coda__buf_append_hex(coda__buf *b, unsigned long long v) {
  return append_digits(b, v, 16);
}

void coda__buf_free(coda__buf *b) {
  free(b->base);
  b->base = NULL;
  b->len = b->cap = 0;
}
