/*
 * redis_server.c - see redis_server.h. A server is found ready when it
 * answers PING; until then the test polls it every 10 ms up to a deadline,
 * and gives up early if the process has exited (a port taken meanwhile:
 * the first start then tries another port).
 */
#include "redis_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define READY_MS 10000
#define STOP_MS 10000
#define PORT_TRIES 5

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* A port the kernel just handed out and that nobody holds now. */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static int write_config(const tc_redis *r) {
  char path[128];
  snprintf(path, sizeof path, "%s/redis.conf", r->dir);
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  fprintf(f,
          "port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nlogfile %s/redis.log\n"
          "save \"\"\ndaemonize no\nappendfilename appendonly.aof\n%s\n",
          r->port, r->dir, r->dir, r->extra ? r->extra : "");
  return fclose(f) == 0 ? 0 : -1;
}

static int spawn(tc_redis *r) {
  char conf[128];
  snprintf(conf, sizeof conf, "%s/redis.conf", r->dir);
  char *argv[] = {"redis-server", conf, NULL};
  int rc = posix_spawnp(&r->pid, "redis-server", NULL, NULL, argv, environ);
  if (rc != 0) {
    fprintf(stderr, "  cannot start redis-server: %s\n", strerror(rc));
    r->pid = 0;
    return -1;
  }
  return 0;
}

static int answers_ping(const tc_redis *r) {
  struct timeval tv = {0, 200000};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
  int ok = 0;
  if (c && !c->err) {
    redisSetTimeout(c, tv);
    redisReply *reply = redisCommand(c, "PING");
    ok = reply && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;
    if (reply)
      freeReplyObject(reply);
  }
  if (c)
    redisFree(c);
  return ok;
}

static void print_log(const tc_redis *r) {
  char path[128], line[512];
  snprintf(path, sizeof path, "%s/redis.log", r->dir);
  FILE *f = fopen(path, "r");
  if (!f)
    return;
  while (fgets(line, sizeof line, f))
    fprintf(stderr, "  redis.log: %s", line);
  fclose(f);
}

/* 0 once it answers; -1 if it exited (reaped) or the deadline passed. */
static int wait_ready(tc_redis *r) {
  long long deadline = now_ms() + READY_MS;
  while (now_ms() < deadline) {
    if (answers_ping(r))
      return 0;
    int status;
    if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
      r->pid = 0;
      return -1;
    }
    pause_ms(10);
  }
  return -1;
}

static int launch(tc_redis *r, int quiet) {
  if (write_config(r) != 0 || spawn(r) != 0)
    return -1;
  if (wait_ready(r) == 0)
    return 0;
  if (!quiet)
    print_log(r);
  if (r->pid)
    tc_redis_kill(r);
  return -1;
}

int tc_redis_start(tc_redis *r, const char *extra_config) {
  memset(r, 0, sizeof *r);
  snprintf(r->dir, sizeof r->dir, "/tmp/coda-redis-XXXXXX");
  if (!mkdtemp(r->dir)) {
    perror("  mkdtemp");
    r->dir[0] = '\0';
    return -1;
  }
  r->extra = strdup(extra_config ? extra_config : "");
  for (int i = 0; i < PORT_TRIES; i++) {
    r->port = free_port();
    if (r->port > 0 && launch(r, i + 1 < PORT_TRIES) == 0)
      return 0;
  }
  fprintf(stderr, "  redis-server did not answer PING on port %d\n", r->port);
  return -1;
}

int tc_redis_restart(tc_redis *r) {
  if (r->pid)
    tc_redis_stop(r);
  if (launch(r, 0) != 0) {
    fprintf(stderr, "  redis-server did not come back on port %d\n", r->port);
    return -1;
  }
  return 0;
}

int tc_redis_stop(tc_redis *r) {
  if (!r->pid)
    return 0;
  kill(r->pid, SIGTERM);
  long long deadline = now_ms() + STOP_MS;
  int status;
  while (now_ms() < deadline) {
    if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
      r->pid = 0;
      return 0;
    }
    pause_ms(5);
  }
  fprintf(stderr, "  redis-server %d ignored SIGTERM for %d ms: killed\n", (int)r->pid,
          STOP_MS);
  tc_redis_kill(r);
  return -1;
}

void tc_redis_kill(tc_redis *r) {
  if (!r->pid)
    return;
  kill(r->pid, SIGKILL);
  while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR) {
  }
  r->pid = 0;
}

static int remove_dir(const char *dir) {
  char cmd[128];
  /* The directory is ours (mkdtemp) and holds only what redis wrote
   * there, appendonlydir included. */
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd);
}

void tc_redis_remove(tc_redis *r) {
  tc_redis_stop(r);
  if (r->dir[0] && remove_dir(r->dir) != 0)
    fprintf(stderr, "  could not remove %s\n", r->dir);
  r->dir[0] = '\0';
  free(r->extra);
  r->extra = NULL;
}

void tc_redis_uri(const tc_redis *r, char *buf, size_t cap, const char *suffix) {
  snprintf(buf, cap, "redis://127.0.0.1:%d%s", r->port, suffix ? suffix : "");
}

redisContext *tc_redis_connect(const tc_redis *r) {
  struct timeval tv = {1, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
  if (!c || c->err) {
    fprintf(stderr, "  cannot connect to redis on port %d: %s\n", r->port,
            c ? c->errstr : "out of memory");
    if (c)
      redisFree(c);
    return NULL;
  }
  redisSetTimeout(c, tv);
  return c;
}

redisReply *tc_redis_cmd(const tc_redis *r, const char *fmt, ...) {
  redisContext *c = tc_redis_connect(r);
  if (!c)
    return NULL;
  va_list ap;
  va_start(ap, fmt);
  redisReply *reply = redisvCommand(c, fmt, ap);
  va_end(ap);
  if (!reply)
    fprintf(stderr, "  redis command failed: %s\n", c->errstr);
  redisFree(c);
  return reply;
}
