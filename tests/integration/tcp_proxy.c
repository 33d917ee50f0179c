/*
 * tcp_proxy.c - the cuttable TCP relay of tcp_proxy.h.
 *
 * One thread polls the listener, a wake-up pipe and both sides of every
 * relayed connection. Each direction of a pair has one buffer: bytes are
 * read from a side only when the buffer towards the other side is empty,
 * and written from it when the other side is writable, so a slow reader
 * pushes back on its writer as a real link does. While cut, nothing is
 * polled but the wake-up pipe.
 */
#include "tcp_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PAIRS 64
#define BUF_SIZE 65536

typedef struct {
  int fd;
  char buf[BUF_SIZE]; /* read from this side, waiting to go to the other */
  size_t off, len;
  int eof; /* this side shut down its writing */
} side;

typedef struct {
  int used;
  side s[2]; /* 0: the client, 1: the server */
} pair;

struct tc_proxy {
  int listen_fd, port;
  atomic_int target_port, drop;
  int wake[2];
  pthread_t thread;
  atomic_int cut, stop, seen, generation, connections;
  pair pairs[MAX_PAIRS];
};

static int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int connect_target(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* Blocking connect on loopback: immediate (accepted or refused). */
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 || set_nonblock(fd) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void close_pair(pair *p) {
  close(p->s[0].fd);
  close(p->s[1].fd);
  p->used = 0;
}

static void accept_one(tc_proxy *px) {
  int fd = accept4(px->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0)
    return;
  int up = connect_target(atomic_load(&px->target_port));
  pair *p = NULL;
  for (int i = 0; i < MAX_PAIRS && !p; i++)
    if (!px->pairs[i].used)
      p = &px->pairs[i];
  if (up < 0 || !p) {
    close(fd);
    if (up >= 0)
      close(up);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  memset(p, 0, sizeof *p);
  p->used = 1;
  p->s[0].fd = fd;
  p->s[1].fd = up;
  atomic_fetch_add(&px->connections, 1);
}

/* Moves bytes of one direction: from side `from` into its buffer, and
 * from its buffer to the other side. Returns -1 when the pair is done. */
static int pump(pair *p, int from, short rev_from, short rev_to) {
  side *a = &p->s[from], *b = &p->s[!from];
  if ((rev_from & (POLLIN | POLLHUP | POLLERR)) && a->len == 0 && !a->eof) {
    ssize_t n = read(a->fd, a->buf, sizeof a->buf);
    if (n > 0) {
      a->off = 0;
      a->len = (size_t)n;
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      a->eof = 1;
    }
  }
  (void)rev_to; /* a non-blocking write just says EAGAIN when it is not writable */
  if (a->len > 0) {
    ssize_t n = write(b->fd, a->buf + a->off, a->len);
    if (n > 0) {
      a->off += (size_t)n;
      a->len -= (size_t)n;
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return -1;
    }
  }
  if (a->eof && a->len == 0)
    return -1; /* one side closed: close both, as a relay does */
  return 0;
}

static void *relay_main(void *arg) {
  tc_proxy *px = arg;
  struct pollfd fds[2 + 2 * MAX_PAIRS];
  int owner[2 + 2 * MAX_PAIRS];
  while (!atomic_load(&px->stop)) {
    /* The generation first: a change stores cut, then bumps it. */
    int gen = atomic_load(&px->generation);
    int cut = atomic_load(&px->cut);
    if (atomic_exchange(&px->drop, 0))
      for (int i = 0; i < MAX_PAIRS; i++)
        if (px->pairs[i].used)
          close_pair(&px->pairs[i]);
    atomic_store(&px->seen, gen);
    int n = 0;
    fds[n++] = (struct pollfd){.fd = px->wake[0], .events = POLLIN};
    if (!cut)
      fds[n++] = (struct pollfd){.fd = px->listen_fd, .events = POLLIN};
    for (int i = 0; i < MAX_PAIRS && !cut; i++) {
      pair *p = &px->pairs[i];
      if (!p->used)
        continue;
      for (int k = 0; k < 2; k++) {
        short ev = 0;
        if (p->s[k].len == 0 && !p->s[k].eof)
          ev |= POLLIN;
        if (p->s[!k].len > 0)
          ev |= POLLOUT;
        owner[n] = i * 2 + k;
        fds[n++] = (struct pollfd){.fd = p->s[k].fd, .events = ev};
      }
    }
    if (poll(fds, (nfds_t)n, 1000) < 0 && errno != EINTR)
      break;
    if (fds[0].revents & POLLIN) {
      char c[64];
      while (read(px->wake[0], c, sizeof c) > 0) {
      }
    }
    if (cut)
      continue;
    if (fds[1].revents & POLLIN)
      accept_one(px);
    short rev[MAX_PAIRS][2] = {{0}};
    for (int j = 2; j < n; j++)
      rev[owner[j] / 2][owner[j] % 2] = fds[j].revents;
    for (int i = 0; i < MAX_PAIRS; i++) {
      pair *p = &px->pairs[i];
      if (!p->used || (!rev[i][0] && !rev[i][1]))
        continue;
      if (pump(p, 0, rev[i][0], rev[i][1]) != 0 || pump(p, 1, rev[i][1], rev[i][0]) != 0)
        close_pair(p);
    }
  }
  return NULL;
}

static void change(tc_proxy *p, int cut) {
  atomic_store(&p->cut, cut);
  int gen = atomic_fetch_add(&p->generation, 1) + 1;
  (void)!write(p->wake[1], "x", 1);
  /* The thread records the generation before it polls with the new state. */
  while (atomic_load(&p->seen) < gen)
    usleep(1000);
}

tc_proxy *tc_proxy_start(int target_port) {
  tc_proxy *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  atomic_store(&p->target_port, target_port);
  p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(p->listen_fd, 64) != 0 ||
      getsockname(p->listen_fd, (struct sockaddr *)&a, &len) != 0 ||
      pipe2(p->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
    if (p->listen_fd >= 0)
      close(p->listen_fd);
    free(p);
    return NULL;
  }
  p->port = ntohs(a.sin_port);
  if (pthread_create(&p->thread, NULL, relay_main, p) != 0) {
    close(p->listen_fd);
    close(p->wake[0]);
    close(p->wake[1]);
    free(p);
    return NULL;
  }
  return p;
}

int tc_proxy_port(const tc_proxy *p) { return p->port; }
void tc_proxy_cut(tc_proxy *p) { change(p, 1); }
void tc_proxy_retarget(tc_proxy *p, int target_port) {
  atomic_store(&p->target_port, target_port);
  atomic_store(&p->drop, 1);
  change(p, atomic_load(&p->cut));
}
void tc_proxy_restore(tc_proxy *p) { change(p, 0); }
int tc_proxy_connections(const tc_proxy *p) { return atomic_load(&p->connections); }

void tc_proxy_stop(tc_proxy *p) {
  if (!p)
    return;
  atomic_store(&p->stop, 1);
  (void)!write(p->wake[1], "x", 1);
  pthread_join(p->thread, NULL);
  for (int i = 0; i < MAX_PAIRS; i++)
    if (p->pairs[i].used)
      close_pair(&p->pairs[i]);
  close(p->listen_fd);
  close(p->wake[0]);
  close(p->wake[1]);
  free(p);
}
