/*
 * redis_server.h - real redis-server processes for tests: each on a free
 * ephemeral loopback port, in a fresh temp directory of its own (its
 * config, log, RDB and AOF files), with whatever config lines the test
 * adds (appendonly, maxmemory, replicaof ...). A test can stop it, kill -9
 * it and start it again on the same port and directory, and must remove
 * it at the end (which stops it if it still runs).
 *
 * Not thread-safe: one test thread drives a given server. The process is
 * started with posix_spawn (the child only execs), so it is safe to call
 * once the test has threads.
 */
#ifndef CODA_TEST_REDIS_SERVER_H
#define CODA_TEST_REDIS_SERVER_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct tc_redis {
  char dir[64]; /* the temp directory, "" before start */
  char *extra;  /* config lines added by the test (malloc'd copy) */
  int port;
  pid_t pid; /* 0 when not running */
} tc_redis;

/* Starts redis-server with `extra_config` (lines of redis.conf, may be
 * NULL) on a free port, and waits until it answers PING (up to 10 s). A
 * port taken between choosing and binding it is retried on another. 0, or
 * -1 with the reason on stderr (redis-server missing, no answer: its log
 * is printed). */
int tc_redis_start(tc_redis *r, const char *extra_config);

/* SIGTERM and wait for the process (redis saves nothing unless the config
 * asks; an AOF is flushed). 0, or -1 if it had to be killed. */
int tc_redis_stop(tc_redis *r);

/* SIGKILL and wait: a crash, nothing flushed. */
void tc_redis_kill(tc_redis *r);

/* Starts a stopped or killed server again on the same port, directory and
 * config (its data comes back as its persistence settings allow), and
 * waits for PING. 0 or -1. */
int tc_redis_restart(tc_redis *r);

/* Stops the server if it runs and removes its directory. */
void tc_redis_remove(tc_redis *r);

/* "redis://127.0.0.1:PORT" followed by suffix (e.g. "/0?prefix=t1"). */
void tc_redis_uri(const tc_redis *r, char *buf, size_t cap, const char *suffix);

/* A new connection to the server (1 s timeouts), or NULL (said on stderr).
 * The caller frees it with redisFree(). */
redisContext *tc_redis_connect(const tc_redis *r);

/* One command on a connection of its own (redisCommand's format); the
 * reply, which the caller frees with freeReplyObject(), or NULL. */
redisReply *tc_redis_cmd(const tc_redis *r, const char *fmt, ...);

#endif /* CODA_TEST_REDIS_SERVER_H */
