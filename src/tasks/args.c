/*
 * args.c - the argument codec (format in args.h): used by the store thread
 * to write and read back durable tasks, and by the process pool and its
 * workers for every PROCESS task.
 *
 * Runs on whatever thread calls it and owns nothing: it reads and writes
 * only the memory it is given. It must never trust a length it reads: the
 * bytes come from a store file or another process, so every count and
 * length is checked against what is left before anything is copied.
 */
#include "tasks/args.h"

#include "coda.h"

#include <string.h>

static int has_length(char type) { return type == 's' || type == 'b'; }

int coda__args_encode(const coda__arg *args, int nargs, coda__buf *b) {
  if (nargs < 0 || nargs > CODA__ARGS_MAX)
    return CODA_EINVAL;
  for (int i = 0; i < nargs; i++)
    if (!has_length(args[i].type) && args[i].type != 'i' && args[i].type != 'd')
      return CODA_EINVAL;
  uint8_t n = (uint8_t)nargs;
  int rc = coda__buf_append(b, &n, 1);
  for (int i = 0; i < nargs && rc == 0; i++) {
    const coda__arg *a = &args[i];
    rc = coda__buf_append(b, &a->type, 1);
    if (rc == 0 && has_length(a->type)) {
      rc = coda__buf_append(b, &a->len, 4);
      if (rc == 0 && a->len)
        rc = coda__buf_append(b, a->v.p, a->len);
    } else if (rc == 0) {
      rc = coda__buf_append(b, &a->v, 8);
    }
  }
  return rc ? CODA_ENOMEM : 0;
}

/* Reads the encoding in data[0..len) and checks it; with args, also fills
 * args[0..max_args) and copies the payloads into dst[0..cap). Sets *nargs
 * and *bytes (the room the copies take). 0 or CODA_EINVAL. */
static int walk(const unsigned char *p, size_t len, coda__arg *args, int max_args,
                char *dst, size_t cap, int *nargs, size_t *bytes) {
  if (len < 1 || p[0] > CODA__ARGS_MAX || (args && p[0] > max_args))
    return CODA_EINVAL;
  int n = p[0];
  size_t at = 1, used = 0;
  for (int i = 0; i < n; i++) {
    if (at >= len)
      return CODA_EINVAL;
    char type = (char)p[at++];
    coda__arg a = {.type = type};
    if (has_length(type)) {
      if (len - at < 4)
        return CODA_EINVAL;
      memcpy(&a.len, p + at, 4);
      at += 4;
      if (len - at < a.len)
        return CODA_EINVAL;
      if (args) {
        if (cap - used < (size_t)a.len + 1)
          return CODA_EINVAL;
        memcpy(dst + used, p + at, a.len);
        dst[used + a.len] = '\0';
        a.v.p = dst + used;
      }
      at += a.len;
      used += (size_t)a.len + 1;
    } else if (type == 'i' || type == 'd') {
      if (len - at < 8)
        return CODA_EINVAL;
      memcpy(&a.v, p + at, 8);
      at += 8;
    } else {
      return CODA_EINVAL;
    }
    if (args)
      args[i] = a;
  }
  if (at != len)
    return CODA_EINVAL; /* trailing bytes: not what coda wrote */
  *nargs = n;
  *bytes = used;
  return 0;
}

int coda__args_measure(const void *data, size_t len, int *nargs, size_t *bytes) {
  return walk(data, len, NULL, 0, NULL, 0, nargs, bytes);
}

int coda__args_decode(const void *data, size_t len, coda__arg *args, int max_args,
                      char *dst, size_t cap) {
  int n;
  size_t bytes;
  int rc = walk(data, len, args, max_args, dst, cap, &n, &bytes);
  return rc ? rc : n;
}
