/*
 * log.c - the logger thread and line formatting (see log.h).
 */
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return; /* nowhere left to report a failing log sink */
    }
    p += w;
    n -= (size_t)w;
  }
}

int coda__logger_init(coda__logger *lg, int fd, size_t ring_bytes) {
  memset(lg, 0, sizeof *lg);
  lg->ring = malloc(ring_bytes);
  if (!lg->ring)
    return CODA_ENOMEM;
  lg->cap = ring_bytes;
  lg->fd = fd;
  if (uv_mutex_init(&lg->mu) != 0) {
    free(lg->ring);
    return CODA_ENOMEM;
  }
  if (uv_cond_init(&lg->cond) != 0) {
    uv_mutex_destroy(&lg->mu);
    free(lg->ring);
    return CODA_ENOMEM;
  }
  return 0;
}

/* Copies up to `max` bytes out of the ring; called with mu held. */
static size_t take_locked(coda__logger *lg, char *out, size_t max) {
  size_t n = (size_t)(lg->tail - lg->head);
  if (n > max)
    n = max;
  size_t at = (size_t)(lg->head % lg->cap);
  size_t first = lg->cap - at < n ? lg->cap - at : n;
  memcpy(out, lg->ring + at, first);
  memcpy(out + first, lg->ring, n - first);
  lg->head += n;
  return n;
}

static void writer_main(void *arg) {
  coda__logger *lg = arg;
  char chunk[16384];
  uv_mutex_lock(&lg->mu);
  for (;;) {
    while (lg->head == lg->tail && !lg->dropped && !lg->stop)
      uv_cond_wait(&lg->cond, &lg->mu);
    if (lg->head == lg->tail && !lg->dropped && lg->stop)
      break;
    size_t n = take_locked(lg, chunk, sizeof chunk);
    uint64_t dropped = lg->dropped;
    lg->dropped = 0;
    uv_mutex_unlock(&lg->mu);
    write_all(lg->fd, chunk, n);
    if (dropped) {
      char note[96];
      int m = snprintf(note, sizeof note,
                       "WARNING:  log: %llu lines dropped (sink too slow)\n",
                       (unsigned long long)dropped);
      write_all(lg->fd, note, (size_t)m);
    }
    uv_mutex_lock(&lg->mu);
  }
  uv_mutex_unlock(&lg->mu);
}

int coda__logger_start(coda__logger *lg) {
  if (lg->running)
    return 0;
  lg->stop = 0;
  if (uv_thread_create(&lg->thread, writer_main, lg) != 0)
    return CODA_ENOMEM;
  lg->running = 1;
  return 0;
}

void coda__logger_stop(coda__logger *lg) {
  if (!lg->running)
    return;
  uv_mutex_lock(&lg->mu);
  lg->stop = 1;
  uv_cond_signal(&lg->cond);
  uv_mutex_unlock(&lg->mu);
  uv_thread_join(&lg->thread);
  lg->running = 0;
}

void coda__logger_free(coda__logger *lg) {
  coda__logger_stop(lg);
  uv_cond_destroy(&lg->cond);
  uv_mutex_destroy(&lg->mu);
  free(lg->ring);
  lg->ring = NULL;
}

void coda__logger_write(coda__logger *lg, const char *p, size_t n) {
  uv_mutex_lock(&lg->mu);
  if (!lg->running) {
    /* No writer yet (start-up) or any more (shutdown): write through. */
    write_all(lg->fd, p, n);
    uv_mutex_unlock(&lg->mu);
    return;
  }
  if (lg->cap - (size_t)(lg->tail - lg->head) < n) {
    lg->dropped++;
  } else {
    size_t at = (size_t)(lg->tail % lg->cap);
    size_t first = lg->cap - at < n ? lg->cap - at : n;
    memcpy(lg->ring + at, p, first);
    memcpy(lg->ring, p + first, n - first);
    lg->tail += n;
  }
  uv_cond_signal(&lg->cond);
  uv_mutex_unlock(&lg->mu);
}

static const char *const level_prefix[] = {
    [CODA_LOG_DEBUG] = "DEBUG:    ",
    [CODA_LOG_INFO] = "INFO:     ",
    [CODA_LOG_WARN] = "WARNING:  ",
    [CODA_LOG_ERROR] = "ERROR:    ",
};

size_t coda__log_format(char *buf, size_t cap, coda_log_level level,
                        const char *fmt, va_list ap) {
  if (level < CODA_LOG_DEBUG || level > CODA_LOG_ERROR)
    level = CODA_LOG_ERROR;
  size_t n = strlen(level_prefix[level]);
  memcpy(buf, level_prefix[level], n);
  int m = vsnprintf(buf + n, cap - n - 1, fmt, ap);
  if (m < 0)
    m = 0;
  n += (size_t)m < cap - n - 1 ? (size_t)m : cap - n - 2;
  buf[n++] = '\n';
  return n;
}

void coda__logv(coda__logger *lg, long min_level, coda_log_level level, const char *fmt,
                va_list ap) {
  if ((long)level < min_level)
    return;
  char line[2048];
  size_t n = coda__log_format(line, sizeof line, level, fmt, ap);
  if (lg)
    coda__logger_write(lg, line, n);
  else
    fwrite(line, 1, n, stderr);
}

void coda__log(coda__logger *lg, long min_level, coda_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  coda__logv(lg, min_level, level, fmt, ap);
  va_end(ap);
}
