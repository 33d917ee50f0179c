/*
 * latency.c - response latency at a fixed request rate, and a load that keeps a coda
 * app's PROCESS workers busy. Used by bench/tasks.sh.
 *
 *   latency --port P [--path /plain] [--rate 2000] [--seconds 10] [--warmup 1]
 *           [--connections 16] [--samples FILE]
 *     Sends GET PATH to 127.0.0.1:P on keep-alive connections, one request in flight
 *     per connection, on a fixed schedule: request i is due at start + i / rate. A
 *     request's latency runs from the time it was due, not from the time a connection
 *     was free to send it, so a stalled server shows up in the figures instead of
 *     slowing the client down (no coordinated omission). Prints p50/p90/p99/p99.9/max
 *     of the requests due after the warm-up, and with --samples writes each of their
 *     latencies (us, one per line) to FILE so that runs can be pooled.
 *
 *   latency --port P --saturate PATH [--backlog 4] [--seconds 10]
 *     Keeps the PROCESS executor of a coda app busy: every 10 ms it reads GET /stats and
 *     sends GET PATH (which must add one PROCESS task) until the executor's `queued`
 *     count reaches the backlog. Prints the share of polls that found tasks both running
 *     and waiting, i.e. no worker idle.
 *
 * Both end with "RESULT name value" lines for the script. Exit status 1 on socket
 * errors or when the server answered anything but 2xx (saturate mode: 503 is counted,
 * not an error). One thread; epoll in rate mode, blocking sockets in saturate mode.
 */
#include "bench_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNECTIONS 256
#define BUF_SIZE 16384

typedef struct options {
  int port;
  const char *path;
  const char *saturate;
  const char *samples;
  double rate, seconds, warmup;
  int connections, backlog;
} options;


/* A connected TCP socket to 127.0.0.1:port, or -1. */
static int connect_to(int port, int nonblocking) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      (nonblocking && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Length of the complete response at the start of buf, 0 if incomplete, -1 if it cannot
 * be framed (no Content-Length: the bench servers always send one). */
static long response_length(const char *buf, size_t n) {
  const char *end = memmem(buf, n, "\r\n\r\n", 4);
  if (!end)
    return 0;
  size_t head = (size_t)(end - buf) + 4;
  const char *cl = memmem(buf, head, "\r\ncontent-length:", 17);
  if (!cl)
    cl = memmem(buf, head, "\r\nContent-Length:", 17);
  if (!cl)
    return -1;
  size_t body = strtoul(cl + 17, NULL, 10);
  return n >= head + body ? (long)(head + body) : 0;
}

static int status_of(const char *buf) {
  return strncmp(buf, "HTTP/1.", 7) == 0 ? atoi(buf + 9) : -1;
}

/* ---- rate mode -------------------------------------------------------------- */

typedef struct conn {
  int fd;
  int busy;
  uint64_t due; /* when the request in flight was due */
  size_t have;
  char buf[BUF_SIZE];
} conn;

typedef struct rate_run {
  const options *o;
  int epfd;
  conn *conns;
  int nconns;
  int next_conn; /* round robin, so that no connection idles into the keep-alive timeout
                  */
  char request[512];
  size_t request_len;
  uint64_t start, interval, measure_from;
  uint64_t *lat; /* latencies of requests due after the warm-up */
  size_t nlat, cap;
  uint64_t *waiting; /* due times of requests that found no free connection */
  size_t wait_head, wait_tail, wait_cap;
  long sent, ok, non2xx, errors, waited;
} rate_run;

/* Replaces c's socket with a new connection (after the server closed it). */
static void reconnect(rate_run *r, conn *c) {
  epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->busy = 0;
  c->fd = connect_to(r->o->port, 1);
  if (c->fd >= 0) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(r->epfd, EPOLL_CTL_ADD, c->fd, &ev);
  }
}

static int send_on(rate_run *r, conn *c, uint64_t due) {
  c->busy = 1;
  c->due = due;
  c->have = 0;
  ssize_t w = send(c->fd, r->request, r->request_len, MSG_NOSIGNAL);
  if (w != (ssize_t)r->request_len) { /* a short request always fits an idle socket */
    reconnect(r, c);
    return -1;
  }
  r->sent++;
  return 0;
}

static conn *idle_conn(rate_run *r) {
  for (int k = 0; k < r->nconns; k++) {
    conn *c = &r->conns[(r->next_conn + k) % r->nconns];
    if (!c->busy && c->fd >= 0) {
      r->next_conn = (int)(c - r->conns + 1) % r->nconns;
      return c;
    }
  }
  return NULL;
}

/* Sends the request due at `due` now, or queues it until a connection is free. */
static void dispatch(rate_run *r, uint64_t due) {
  conn *c = idle_conn(r);
  if (c) {
    if (send_on(r, c, due) != 0)
      r->errors++;
    return;
  }
  r->waited++;
  if (r->wait_tail - r->wait_head == r->wait_cap) {
    r->errors++; /* hopelessly behind: drop it, counted as an error */
    return;
  }
  r->waiting[r->wait_tail++ % r->wait_cap] = due;
}

static void record(rate_run *r, uint64_t due, uint64_t done) {
  if (due < r->measure_from || r->nlat == r->cap)
    return;
  r->lat[r->nlat++] = done - due;
}

/* Reads what arrived on c; completes its request when the response is whole. */
static void on_readable(rate_run *r, conn *c) {
  for (;;) {
    ssize_t n = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    if (n <= 0) {
      /* The server closed the connection. A request in flight is lost (it counts as
       * unanswered); an idle keep-alive connection may be closed at any time. */
      reconnect(r, c);
      return;
    }
    c->have += (size_t)n;
    long len = response_length(c->buf, c->have);
    if (len < 0 || (len == 0 && c->have == sizeof c->buf)) {
      fprintf(stderr, "latency: a response without Content-Length or too long\n");
      reconnect(r, c); /* unanswered */
      return;
    }
    if (len == 0)
      continue;
    uint64_t done = now_ns();
    int status = status_of(c->buf);
    if (status >= 200 && status < 300)
      r->ok++;
    else
      r->non2xx++;
    record(r, c->due, done);
    c->busy = 0;
    if (r->wait_head != r->wait_tail) {
      uint64_t due = r->waiting[r->wait_head++ % r->wait_cap];
      if (send_on(r, c, due) != 0)
        r->errors++;
    }
    return;
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static double pct_us(const uint64_t *v, size_t n, double p) {
  if (n == 0)
    return 0;
  size_t i = (size_t)(p / 100.0 * (double)n);
  if (i >= n)
    i = n - 1;
  return (double)v[i] / 1000.0;
}

static int rate_mode(const options *o) {
  rate_run r;
  memset(&r, 0, sizeof r);
  r.o = o;
  r.nconns = o->connections;
  r.interval = (uint64_t)(1e9 / o->rate);
  r.cap = (size_t)(o->rate * (o->seconds + 1)) + 16;
  r.wait_cap = (size_t)o->rate + 16; /* one second behind at most */
  r.lat = malloc(r.cap * sizeof *r.lat);
  r.waiting = malloc(r.wait_cap * sizeof *r.waiting);
  r.conns = calloc((size_t)r.nconns, sizeof *r.conns);
  r.epfd = epoll_create1(EPOLL_CLOEXEC);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (!r.lat || !r.waiting || !r.conns || r.epfd < 0 || tfd < 0) {
    fprintf(stderr, "latency: out of resources\n");
    return 1;
  }
  r.request_len =
      (size_t)snprintf(r.request, sizeof r.request,
                       "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", o->path, o->port);
  for (int i = 0; i < r.nconns; i++) {
    conn *c = &r.conns[i];
    c->fd = connect_to(o->port, 1);
    if (c->fd < 0) {
      fprintf(stderr, "latency: cannot connect to 127.0.0.1:%d: %s\n", o->port,
              strerror(errno));
      return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(r.epfd, EPOLL_CTL_ADD, c->fd, &ev);
  }
  struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(r.epfd, EPOLL_CTL_ADD, tfd, &tev);

  r.start = now_ns() + 1000000; /* the first request is due in 1 ms */
  r.measure_from = r.start + (uint64_t)(o->warmup * 1e9);
  uint64_t total = (uint64_t)((o->warmup + o->seconds) * o->rate);
  uint64_t end_due = r.start + total * r.interval;
  struct itimerspec its = {
      .it_interval = {(time_t)(r.interval / 1000000000u),
                      (long)(r.interval % 1000000000u)},
      .it_value = {(time_t)(r.start / 1000000000u), (long)(r.start % 1000000000u)},
  };
  timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);

  uint64_t next = 0; /* index of the next request to send */
  struct epoll_event events[64];
  for (;;) {
    uint64_t now = now_ns();
    int pending = r.wait_head != r.wait_tail;
    for (int i = 0; i < r.nconns && !pending; i++)
      pending = r.conns[i].busy;
    if (next >= total && (!pending || now > end_due + 5000000000ull))
      break; /* all sent and answered, or 5 s past the end */
    int n = epoll_wait(r.epfd, events, 64, 100);
    if (n < 0 && errno != EINTR) {
      perror("latency: epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == NULL) {
        uint64_t ticks;
        if (read(tfd, &ticks, sizeof ticks) != sizeof ticks)
          continue;
        /* Every request due by now, each with its own due time. */
        now = now_ns();
        while (next < total && r.start + next * r.interval <= now) {
          dispatch(&r, r.start + next * r.interval);
          next++;
        }
        if (next >= total) {
          struct itimerspec off = {{0, 0}, {0, 0}};
          timerfd_settime(tfd, 0, &off, NULL);
        }
      } else {
        on_readable(&r, events[i].data.ptr);
      }
    }
  }
  long unanswered = r.sent - r.ok - r.non2xx;
  qsort(r.lat, r.nlat, sizeof *r.lat, cmp_u64);
  double secs = (double)(now_ns() - r.start) / 1e9;
  printf(
      "GET %s at %.0f req/s for %.0f s (+%.0f s warm-up), %d connections: %ld sent, %ld "
      "2xx, %ld other, %ld errors, %ld unanswered, %ld waited for a connection\n",
      o->path, o->rate, o->seconds, o->warmup, r.nconns, r.sent, r.ok, r.non2xx, r.errors,
      unanswered, r.waited);
  printf(
      "latency (us): p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (%zu samples)\n",
      pct_us(r.lat, r.nlat, 50), pct_us(r.lat, r.nlat, 90), pct_us(r.lat, r.nlat, 99),
      pct_us(r.lat, r.nlat, 99.9), r.nlat ? (double)r.lat[r.nlat - 1] / 1000 : 0.0,
      r.nlat);
  printf("RESULT rate %.1f\n", (double)r.sent / secs);
  printf("RESULT samples %zu\n", r.nlat);
  printf(
      "RESULT p50_us %.1f\nRESULT p90_us %.1f\nRESULT p99_us %.1f\nRESULT p999_us %.1f\n",
      pct_us(r.lat, r.nlat, 50), pct_us(r.lat, r.nlat, 90), pct_us(r.lat, r.nlat, 99),
      pct_us(r.lat, r.nlat, 99.9));
  printf("RESULT max_us %.1f\n", r.nlat ? (double)r.lat[r.nlat - 1] / 1000 : 0.0);
  printf("RESULT errors %ld\nRESULT non2xx %ld\nRESULT waited %ld\n",
         r.errors + unanswered, r.non2xx, r.waited);
  if (o->samples) {
    FILE *f = fopen(o->samples, "w");
    for (size_t i = 0; f && i < r.nlat; i++)
      fprintf(f, "%.1f\n", (double)r.lat[i] / 1000.0);
    if (!f || fclose(f) != 0) {
      fprintf(stderr, "latency: cannot write %s\n", o->samples);
      r.errors++;
    }
  }
  for (int i = 0; i < r.nconns; i++)
    if (r.conns[i].fd >= 0)
      close(r.conns[i].fd);
  close(tfd);
  close(r.epfd);
  free(r.lat);
  free(r.waiting);
  free(r.conns);
  return r.errors + unanswered + r.non2xx ? 1 : 0;
}

/* ---- saturate mode ------------------------------------------------------------ */

/* One GET on a blocking keep-alive socket; returns the status (body in buf) or -1. */
static int get(int fd, int port, const char *path, char *buf, size_t cap) {
  char req[512];
  int len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
                     path, port);
  if (send(fd, req, (size_t)len, MSG_NOSIGNAL) != len)
    return -1;
  size_t have = 0;
  for (;;) {
    ssize_t n = recv(fd, buf + have, cap - 1 - have, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    have += (size_t)n;
    buf[have] = '\0';
    long whole = response_length(buf, have);
    if (whole < 0 || (whole == 0 && have == cap - 1))
      return -1;
    if (whole > 0)
      return status_of(buf);
  }
}

/* The PROCESS executor's `field` from a coda /stats body, or -1. */
static long process_stat(const char *response, const char *field) {
  const char *body = strstr(response, "\r\n\r\n");
  json_t *root = body ? json_loads(body + 4, 0, NULL) : NULL;
  json_t *v =
      json_object_get(json_object_get(json_object_get(root, "tasks"), "process"), field);
  long out = json_is_integer(v) ? (long)json_integer_value(v) : -1;
  json_decref(root);
  return out;
}

static int saturate_mode(const options *o) {
  int stats_fd = connect_to(o->port, 0), load_fd = connect_to(o->port, 0);
  if (stats_fd < 0 || load_fd < 0) {
    fprintf(stderr, "latency: cannot connect to 127.0.0.1:%d\n", o->port);
    return 1;
  }
  static char buf[BUF_SIZE];
  uint64_t end = now_ns() + (uint64_t)(o->seconds * 1e9);
  long polls = 0, saturated = 0, sent = 0, accepted = 0, full = 0, errors = 0;
  while (now_ns() < end && errors == 0) {
    if (get(stats_fd, o->port, "/stats", buf, sizeof buf) != 200) {
      errors++;
      break;
    }
    long queued = process_stat(buf, "queued"), running = process_stat(buf, "running");
    if (queued < 0 || running < 0) {
      fprintf(stderr, "latency: /stats has no tasks.process.queued/running\n");
      errors++;
      break;
    }
    polls++;
    saturated += running > 0 && queued > 0;
    for (long i = queued; i < o->backlog; i++) {
      int status = get(load_fd, o->port, o->saturate, buf, sizeof buf);
      sent++;
      if (status >= 200 && status < 300) {
        accepted++;
      } else if (status == 503) {
        full++;
        break;
      } else {
        errors++;
        break;
      }
    }
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  printf("saturate %s: %ld requests (%ld accepted, %ld answered 503), %ld polls, workers "
         "busy with work waiting in %.1f%% of them\n",
         o->saturate, sent, accepted, full, polls,
         polls ? 100.0 * (double)saturated / (double)polls : 0.0);
  printf("RESULT busy_pct %.1f\nRESULT accepted %ld\nRESULT errors %ld\n",
         polls ? 100.0 * (double)saturated / (double)polls : 0.0, accepted, errors);
  close(stats_fd);
  close(load_fd);
  return errors ? 1 : 0;
}

/* ---- main ----------------------------------------------------------------------- */

static void usage(void) {
  fprintf(
      stderr,
      "usage: latency --port P [--path /plain] [--rate R] [--seconds S] [--warmup S]\n"
      "               [--connections C] [--samples FILE]\n"
      "       latency --port P --saturate PATH [--backlog B] [--seconds S]\n");
}

int main(int argc, char **argv) {
  options o = {.path = "/plain",
               .rate = 2000,
               .seconds = 10,
               .warmup = 1,
               .connections = 16,
               .backlog = 4};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      usage();
      return 2;
    }
    if (strcmp(a, "--port") == 0)
      o.port = atoi(v);
    else if (strcmp(a, "--path") == 0)
      o.path = v;
    else if (strcmp(a, "--saturate") == 0)
      o.saturate = v;
    else if (strcmp(a, "--rate") == 0)
      o.rate = atof(v);
    else if (strcmp(a, "--seconds") == 0)
      o.seconds = atof(v);
    else if (strcmp(a, "--warmup") == 0)
      o.warmup = atof(v);
    else if (strcmp(a, "--connections") == 0)
      o.connections = atoi(v);
    else if (strcmp(a, "--backlog") == 0)
      o.backlog = atoi(v);
    else if (strcmp(a, "--samples") == 0)
      o.samples = v;
    else {
      usage();
      return 2;
    }
    i++;
  }
  if (o.port <= 0 || o.port > 65535 || o.rate <= 0 || o.seconds <= 0 || o.warmup < 0 ||
      o.connections < 1 || o.connections > MAX_CONNECTIONS || o.backlog < 1) {
    usage();
    return 2;
  }
  return o.saturate ? saturate_mode(&o) : rate_mode(&o);
}
