/*
 * buf.h - a growable byte buffer that keeps its capacity across uses, so
 * a connection's output costs no allocation once it has seen its largest
 * response. One thread only.
 */
#ifndef CODA_COMMON_BUF_H
#define CODA_COMMON_BUF_H

#include "coda.h"

#include <stddef.h>
#include <string.h>

typedef struct coda__buf {
  char *base;
  size_t len;
  size_t cap;
} coda__buf;

/* Makes room for n more bytes; 0 or CODA_ENOMEM. */
int coda__buf_reserve(coda__buf *b, size_t n);

/* Appends n bytes: 0 or CODA_ENOMEM (the buffer is then unchanged). */
static inline int coda__buf_append(coda__buf *b, const void *p, size_t n) {
  if (n == 0) /* p may then be NULL (an empty buffer's base), which memcpy may not get */
    return 0;
  if (b->cap - b->len < n && coda__buf_reserve(b, n) != 0)
    return CODA_ENOMEM;
  memcpy(b->base + b->len, p, n);
  b->len += n;
  return 0;
}

#define coda__buf_append_lit(b, lit) coda__buf_append((b), (lit), sizeof(lit) - 1)

/* Appends a decimal number. */
int coda__buf_append_u64(coda__buf *b, unsigned long long v);

/* Appends a number in lower-case hex (chunk sizes). */
int coda__buf_append_hex(coda__buf *b, unsigned long long v);

void coda__buf_free(coda__buf *b);

#endif /* CODA_COMMON_BUF_H */
