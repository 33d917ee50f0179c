/*
 * arena.h - the per-request bump allocator.
 *
 * The first block lives inside its owner (a connection), so a request that
 * fits in it costs no heap allocation. Larger requests chain malloc'd blocks
 * that coda__arena_reset() frees when the request ends. One thread only:
 * the owner's event loop.
 */
#ifndef CODA_COMMON_ARENA_H
#define CODA_COMMON_ARENA_H

#include <stddef.h>

typedef struct coda__arena_block coda__arena_block;

typedef struct coda__arena {
  char *base; /* current block's bytes */
  size_t used;
  size_t cap;
  char *first; /* the owner's inline block */
  size_t first_cap;
  coda__arena_block *extra; /* heap blocks, newest first */
} coda__arena;

void coda__arena_init(coda__arena *a, void *inline_block, size_t cap);

/* Returns 16-byte aligned memory, or NULL when out of memory. */
void *coda__arena_alloc(coda__arena *a, size_t n);

/* Copies n bytes and appends a NUL. */
char *coda__arena_strndup(coda__arena *a, const char *s, size_t n);

/* Frees every heap block and makes the inline block empty again. */
void coda__arena_reset(coda__arena *a);

#endif /* CODA_COMMON_ARENA_H */
