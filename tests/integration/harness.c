/*
 * harness.c - shared integration test helpers (see harness.h).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void server_thread(void *arg) {
  test_server *ts = arg;
  ts->run_rc = coda_app_run(ts->app);
}

int ts_start(test_server *ts, coda_app *app) {
  memset(ts, 0, sizeof *ts);
  ts->app = app;
  int rc = coda_app_listen(app, "127.0.0.1:0");
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_HANDLE_SIGNALS, 0);
  if (coda_app_get(app, CODA_OPT_THREADS) == 0 && rc == 0)
    rc = coda_app_set(app, CODA_OPT_THREADS, 1);
  if (rc == 0)
    rc = coda_app_bind(app);
  if (rc)
    return rc;
  ts->port = coda_app_port(app);
  if (uv_thread_create(&ts->thread, server_thread, ts) != 0)
    return CODA_ENOMEM;
  /* Wait until the server answers, so tests never race its start. */
  for (int i = 0; i < 200; i++) {
    int fd = tc_connect(ts->port, 1000);
    if (fd >= 0) {
      close(fd);
      return 0;
    }
    tc_sleep_ms(10);
  }
  return CODA_EIO;
}

int ts_stop(test_server *ts) {
  /* The app may still be starting its loops: stop until it takes. */
  coda_app_stop(ts->app);
  uv_thread_join(&ts->thread);
  return ts->run_rc;
}

int tc_app_free(coda_app *app, int ms) {
  int rc = coda_app_free(app);
  for (int waited = 0; rc == CODA_ESTATE && waited < ms; waited += 5) {
    tc_sleep_ms(5);
    rc = coda_app_free(app);
  }
  return rc;
}

int tc_connect(int port, int timeout_ms) {
  return tc_connect_rcvbuf(port, timeout_ms, 0);
}

int tc_connect_rcvbuf(int port, int timeout_ms, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  /* Before connect, so the advertised window is small from the start
   * (shrinking it later stalls loopback TCP on retransmission timers). */
  if (rcvbuf > 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int tc_send(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

int tc_send_str(int fd, const char *s) { return tc_send(fd, s, strlen(s)); }

size_t tc_read_all(int fd, char *buf, size_t cap, int *closed) {
  size_t n = 0;
  *closed = 0;
  while (n + 1 < cap) {
    ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
    if (r == 0) {
      *closed = 1;
      break;
    }
    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == ECONNRESET)
        *closed = 1;
      break;
    }
    n += (size_t)r;
  }
  buf[n] = '\0';
  return n;
}

/* Length of a complete response at buf[0..n), or 0 if incomplete. */
static size_t response_length(const char *buf, size_t n) {
  const char *end = memmem(buf, n, "\r\n\r\n", 4);
  if (!end)
    return 0;
  size_t head = (size_t)(end - buf) + 4;
  if (strncmp(buf, "HTTP/1.1 1", 10) == 0) /* 1xx: head only */
    return head;
  const char *cl = memmem(buf, head, "\r\nContent-Length: ", 18);
  if (cl) {
    size_t len = strtoul(cl + 18, NULL, 10);
    return n >= head + len ? head + len : 0;
  }
  if (memmem(buf, head, "\r\nTransfer-Encoding: chunked", 28)) {
    const char *last = memmem(buf + head, n - head, "\r\n0\r\n\r\n", 7);
    if (!last && n - head >= 5 && memcmp(buf + head, "0\r\n\r\n", 5) == 0)
      return head + 5;
    return last ? (size_t)(last - buf) + 7 : 0;
  }
  return head; /* no body (HEAD, 204, 304) */
}

/* Peeks at what has arrived and consumes only the bytes of one response,
 * so pipelined responses behind it stay in the socket. */
static size_t read_one(int fd, char *buf, size_t cap, int head_only) {
  size_t n = 0;
  for (;;) {
    ssize_t r = recv(fd, buf + n, cap - n - 1, MSG_PEEK);
    if (r < 0 && errno == EINTR)
      continue; /* SIGCHLD from process workers interrupts timed recv */
    if (r <= 0)
      return 0;
    size_t have = n + (size_t)r;
    buf[have] = '\0';
    size_t len;
    if (head_only) {
      const char *e = memmem(buf, have, "\r\n\r\n", 4);
      len = e ? (size_t)(e - buf) + 4 : 0;
    } else {
      len = response_length(buf, have);
    }
    size_t take = len ? len - n : (size_t)r;
    while (take > 0) {
      ssize_t got = recv(fd, buf + n, take, MSG_WAITALL);
      if (got < 0 && errno == EINTR)
        continue;
      if (got <= 0)
        return 0;
      n += (size_t)got;
      take -= (size_t)got;
    }
    buf[n] = '\0';
    if (len)
      return len;
    if (n + 1 >= cap)
      return 0;
  }
}

size_t tc_read_response(int fd, char *buf, size_t cap) {
  return read_one(fd, buf, cap, 0);
}

size_t tc_read_head(int fd, char *buf, size_t cap) { return read_one(fd, buf, cap, 1); }

int tc_status(const char *resp) {
  if (strncmp(resp, "HTTP/1.", 7) != 0 || strlen(resp) < 12)
    return -1;
  return atoi(resp + 9);
}

const char *tc_body(const char *resp) {
  const char *p = strstr(resp, "\r\n\r\n");
  return p ? p + 4 : NULL;
}

int tc_count(const char *hay, const char *needle) {
  int n = 0;
  size_t len = strlen(needle);
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += len)
    n++;
  return n;
}

uint64_t tc_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t tc_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void tc_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int tc_get(int port, const char *path, char *buf, size_t cap, int timeout_ms) {
  int fd = tc_connect(port, timeout_ms);
  if (fd < 0) {
    fprintf(stderr, "  GET %s: connect: %s\n", path, strerror(errno));
    return -1;
  }
  char req[1024];
  snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
  tc_send_str(fd, req);
  size_t n = tc_read_response(fd, buf, cap);
  close(fd);
  if (!n) {
    fprintf(stderr, "  GET %s: no response\n", path);
    return -1;
  }
  return tc_status(buf);
}

void tc_read_file(const char *path, char *buf, size_t cap) {
  buf[0] = '\0';
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  buf[n > 0 ? n : 0] = '\0';
}

static int remove_entry(const char *path, const struct stat *sb, int flag,
                        struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  if (remove(path) != 0)
    fprintf(stderr, "  remove %s: %s\n", path, strerror(errno));
  return 0;
}

void tc_remove_tree(const char *dir) {
  nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void tc_journal_path(char *buf, size_t cap, const char *prefix) {
  const char *inherited = getenv("CODA_TEST_JOURNAL");
  if (inherited) {
    snprintf(buf, cap, "%s", inherited);
    return;
  }
  snprintf(buf, cap, "%s-%d", prefix, (int)getpid());
  setenv("CODA_TEST_JOURNAL", buf, 1);
}

/* Appends opt to the sanitizer options in environment variable var. */
static void add_sanitizer_option(const char *var, const char *opt) {
  const char *old = getenv(var);
  char buf[2048];
  snprintf(buf, sizeof buf, "%s%s%s", old ? old : "", old && *old ? ":" : "", opt);
  setenv(var, buf, 1);
}

void tc_workers_die_of_segv(void) {
  add_sanitizer_option("ASAN_OPTIONS", "handle_segv=0");
  add_sanitizer_option("TSAN_OPTIONS", "handle_segv=0");
}
