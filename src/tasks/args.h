/*
 * args.h - a task's arguments, and the one codec that turns them into bytes
 * and back: the stores keep these bytes in a task's row (SQLite's `args`
 * column), and the process pool sends the same bytes to a worker in a TASK
 * message (process_wire.c). Private to src/tasks/.
 *
 * Format (native byte order, as written by every coda so far):
 *   u8 count (at most CODA__ARGS_MAX), then per argument a type byte and
 *   's', 'b': u32 length, that many bytes (no NUL)
 *   'i', 'd': 8 bytes (an int64_t or a double)
 * The bytes end with the last argument: anything after it is refused.
 *
 * Pure functions on caller memory: any thread, no locks, no allocation
 * except the buffer that coda__args_encode grows.
 */
#ifndef CODA_TASKS_ARGS_H
#define CODA_TASKS_ARGS_H

#include "common/buf.h"

#include <stddef.h>
#include <stdint.h>

/* The most arguments a task takes; the count is one byte on the wire. */
#define CODA__ARGS_MAX 32

typedef struct coda__arg {
  char type; /* 's', 'i', 'd', 'b' */
  uint32_t len;
  union {
    int64_t i;
    double d;
    const char *p;
  } v;
} coda__arg;

/* Appends the encoding of args[0..nargs) to b. 0; CODA_EINVAL for more than
 * CODA__ARGS_MAX arguments or an unknown type (b unchanged); CODA_ENOMEM
 * (b may hold part of the encoding: the caller discards it). */
int coda__args_encode(const coda__arg *args, int nargs, coda__buf *b);

/* Checks that data[0..len) is exactly one encoding and measures it: its
 * argument count and the bytes its strings and byte arguments need once
 * decoded (each with a NUL after it). 0 or CODA_EINVAL. */
int coda__args_measure(const void *data, size_t len, int *nargs, size_t *bytes);

/* Decodes data[0..len) into args[0..max_args), copying every string and
 * byte argument, NUL-terminated, into dst[0..cap), so the arguments point
 * into dst, never into data. Returns the argument count, or CODA_EINVAL if
 * data is not one encoding or does not fit max_args and cap (which
 * coda__args_measure gives). */
int coda__args_decode(const void *data, size_t len, coda__arg *args, int max_args,
                      char *dst, size_t cap);

#endif /* CODA_TASKS_ARGS_H */
