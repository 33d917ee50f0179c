/*
 * stores.h - the stores a test runs its cases on: memory, SQLite (a file
 * in a temp directory of the test's own) and Redis (a redis-server the
 * test starts on an ephemeral port, tests/redis_server.h), all three
 * unless an environment variable names some ("memory,redis"), so that one
 * store's cases can be run alone.
 */
#ifndef CODA_TEST_STORES_H
#define CODA_TEST_STORES_H

#include "redis_server.h"

#include <stddef.h>

typedef struct tc_stores {
  const char *kinds[3]; /* "memory", "sqlite", "redis", as chosen */
  int n;
  tc_redis redis;
  int redis_up;
  char tmpdir[64];
  const char *name; /* of the test: names files and key prefixes */
  int seq;
} tc_stores;

/* Chooses the stores (all, or those listed in the environment variable
 * `env`), starts the redis-server if Redis is one, and makes the temp
 * directory. 0, or -1 (said on stderr; tc_stores_close() cleans up). */
int tc_stores_open(tc_stores *s, const char *env, const char *name);

/* A store of `kind` that starts empty: a new SQLite file, or a new key
 * prefix on the Redis; "memory" is always new. */
void tc_stores_uri(tc_stores *s, const char *kind, char *uri, size_t cap);

/* Stops and removes the redis-server and the temp directory. */
void tc_stores_close(tc_stores *s);

#endif /* CODA_TEST_STORES_H */
