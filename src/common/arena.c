/*
 * arena.c - the per-request bump allocator (see arena.h).
 */
#include "common/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct coda__arena_block {
  coda__arena_block *next;
  size_t cap;
  _Alignas(16) char data[];
};

#define ARENA_ALIGN 16
#define ARENA_MIN_BLOCK 8192

void coda__arena_init(coda__arena *a, void *inline_block, size_t cap) {
  a->first = inline_block;
  a->first_cap = cap;
  a->base = inline_block;
  a->cap = cap;
  a->used = 0;
  a->extra = NULL;
}

void *coda__arena_alloc(coda__arena *a, size_t n) {
  size_t at = (a->used + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
  if (n <= a->cap && at <= a->cap - n) {
    a->used = at + n;
    return a->base + at;
  }
  size_t cap = n > ARENA_MIN_BLOCK ? n : ARENA_MIN_BLOCK;
  if (cap > SIZE_MAX - sizeof(coda__arena_block))
    return NULL;
  coda__arena_block *b = malloc(sizeof *b + cap);
  if (!b)
    return NULL;
  b->cap = cap;
  b->next = a->extra;
  a->extra = b;
  a->base = b->data;
  a->cap = cap;
  a->used = n;
  return b->data;
}

char *coda__arena_strndup(coda__arena *a, const char *s, size_t n) {
  char *p = coda__arena_alloc(a, n + 1);
  if (!p)
    return NULL;
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

void coda__arena_reset(coda__arena *a) {
  while (a->extra) {
    coda__arena_block *next = a->extra->next;
    free(a->extra);
    a->extra = next;
  }
  a->base = a->first;
  a->cap = a->first_cap;
  a->used = 0;
}
