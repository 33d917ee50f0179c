/*
 * log.c - the logger thread and line formatting (see log.h for the lock
 * rule and the wake-up policy).
 *
 * The writer thread is the only one that calls write(2) while the logger
 * runs; callers on loop threads only copy into the ring and, rarely, signal.
 */
#include "common/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* What the writer thread is doing, for callers deciding whether to signal. */
enum { WRITER_BUSY, WRITER_IDLE, WRITER_GATHERING };

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

/* Writes ring bytes [from, to) with one writev(2) when the sink takes them
 * all (the span may wrap around the end of the ring). */
static void write_span(coda__logger *lg, uint64_t from, uint64_t to) {
  while (from < to) {
    size_t at = (size_t)(from % lg->cap), n = (size_t)(to - from);
    struct iovec iov[2] = {{lg->ring + at, lg->cap - at < n ? lg->cap - at : n}};
    iov[1] = (struct iovec){lg->ring, n - iov[0].iov_len};
    ssize_t w = writev(lg->fd, iov, iov[1].iov_len ? 2 : 1);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return; /* nowhere left to report a failing log sink */
    from += (uint64_t)w;
  }
}

int coda__logger_init(coda__logger *lg, int fd, size_t ring_bytes) {
  memset(lg, 0, sizeof *lg);
  lg->ring = malloc(ring_bytes);
  if (!lg->ring)
    return CODA_ENOMEM;
  lg->cap = ring_bytes;
  lg->fd = fd;
  lg->gather_ms = CODA__LOG_GATHER_MS;
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

static int has_work(const coda__logger *lg) {
  return lg->head != lg->tail || lg->dropped;
}

/* Waits on the condition in state `what`; called with mu held. */
static void writer_wait(coda__logger *lg, int what) {
  lg->writer = what;
  if (what == WRITER_IDLE)
    uv_cond_wait(&lg->cond, &lg->mu);
  else
    (void)uv_cond_timedwait(&lg->cond, &lg->mu, (uint64_t)lg->gather_ms * 1000000u);
  lg->writer = WRITER_BUSY;
  lg->signalled = 0;
}

static void writer_main(void *arg) {
  coda__logger *lg = arg;
  uv_mutex_lock(&lg->mu);
  for (;;) {
    while (!has_work(lg) && !lg->stop)
      writer_wait(lg, WRITER_IDLE);
    /* Let more lines come (a caller ends this early past half full). */
    if (!lg->stop && lg->gather_ms > 0 && lg->tail - lg->head < lg->cap / 2)
      writer_wait(lg, WRITER_GATHERING);
    if (!has_work(lg) && lg->stop)
      break;
    uint64_t from = lg->head, to = lg->tail, dropped = lg->dropped;
    lg->dropped = 0;
    uv_mutex_unlock(&lg->mu);
    write_span(lg, from, to);
    if (dropped) {
      char note[96];
      int m = snprintf(note, sizeof note,
                       "WARNING:  log: %llu lines dropped (sink too slow)\n",
                       (unsigned long long)dropped);
      write_all(lg->fd, note, (size_t)m);
    }
    uv_mutex_lock(&lg->mu);
    lg->head = to; /* only now may callers reuse those bytes */
  }
  /* Still under mu: from here on callers write through, so a line logged
   * while the logger stops is written, not left in the ring. */
  lg->accepting = 0;
  uv_mutex_unlock(&lg->mu);
}

int coda__logger_start(coda__logger *lg) {
  if (lg->started)
    return 0;
  uv_mutex_lock(&lg->mu);
  lg->stop = 0;
  lg->accepting = 1;
  lg->writer = WRITER_BUSY;
  uv_mutex_unlock(&lg->mu);
  if (uv_thread_create(&lg->thread, writer_main, lg) != 0) {
    uv_mutex_lock(&lg->mu);
    lg->accepting = 0;
    uv_mutex_unlock(&lg->mu);
    return CODA_ENOMEM;
  }
  lg->started = 1;
  return 0;
}

void coda__logger_stop(coda__logger *lg) {
  if (!lg->started)
    return;
  uv_mutex_lock(&lg->mu);
  lg->stop = 1;
  uv_cond_signal(&lg->cond);
  uv_mutex_unlock(&lg->mu);
  uv_thread_join(&lg->thread);
  lg->started = 0;
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
  if (!lg->accepting) {
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
  /* A busy or gathering writer looks at the ring again by itself. */
  int wake = !lg->signalled &&
             (lg->writer == WRITER_IDLE ||
              (lg->writer == WRITER_GATHERING && lg->tail - lg->head >= lg->cap / 2));
  lg->signalled |= wake;
  uv_mutex_unlock(&lg->mu);
  if (wake)
    uv_cond_signal(&lg->cond); /* the one waiter is the writer */
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

/* ---- JSON lines ------------------------------------------------------ */

static atomic_int default_format;
static _Thread_local const coda__log_fields *scope;

void coda__log_set_default_format(int format) { atomic_store(&default_format, format); }
int coda__log_default_format(void) { return atomic_load(&default_format); }

const coda__log_fields *coda__log_scope(const coda__log_fields *f) {
  const coda__log_fields *prev = scope;
  scope = f;
  return prev;
}

const coda__log_fields *coda__log_scope_current(void) { return scope; }

/* The length of the UTF-8 sequence at s (n bytes left), 0 if it is not
 * one (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c < 0xc2 || c > 0xf4)
    return 0;
  if (c == 0xe0)
    lo = 0xa0;
  else if (c == 0xed)
    hi = 0x9f;
  else if (c == 0xf0)
    lo = 0x90;
  else if (c == 0xf4)
    hi = 0x8f;
  if (n < len || s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < len; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  return len;
}

size_t coda__json_escape(char *out, size_t cap, const char *s, size_t n, size_t *used) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s;
  size_t o = 0, i = 0;
  while (i < n) {
    char tmp[8];
    size_t tlen, take = 1;
    unsigned char c = u[i];
    if (c == '"' || c == '\\') {
      tmp[0] = '\\', tmp[1] = (char)c, tlen = 2;
    } else if (c == '\n' || c == '\t' || c == '\r') {
      tmp[0] = '\\', tmp[1] = c == '\n' ? 'n' : c == '\t' ? 't' : 'r', tlen = 2;
    } else if (c < 0x20 || c == 0x7f) {
      memcpy(tmp, "\\u00", 4);
      tmp[4] = hex[c >> 4], tmp[5] = hex[c & 15], tlen = 6;
    } else if (c < 0x80) {
      tmp[0] = (char)c, tlen = 1;
    } else if ((take = utf8_len(u + i, n - i)) != 0) {
      memcpy(tmp, u + i, take), tlen = take;
    } else {
      memcpy(tmp, "\\ufffd", 6), tlen = 6, take = 1;
    }
    if (o + tlen > cap)
      break;
    memcpy(out + o, tmp, tlen);
    o += tlen;
    i += take;
  }
  if (used)
    *used = i;
  return o;
}

void coda__log_time(char out[25], int64_t unix_ms) {
  static _Thread_local int64_t cached_sec = -1;
  static _Thread_local char cached[21]; /* "2026-12-04T11:32:57." */
  int64_t sec = unix_ms / 1000;
  if (sec != cached_sec) {
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S.", &tm);
    cached_sec = sec;
  }
  int ms = (int)(unix_ms % 1000);
  memcpy(out, cached, 20);
  out[20] = (char)('0' + ms / 100);
  out[21] = (char)('0' + ms / 10 % 10);
  out[22] = (char)('0' + ms % 10);
  out[23] = 'Z';
  out[24] = '\0';
}

static const char *const level_name[] = {
    [CODA_LOG_DEBUG] = "debug",
    [CODA_LOG_INFO] = "info",
    [CODA_LOG_WARN] = "warning",
    [CODA_LOG_ERROR] = "error",
};

/* The 32 hex digits of a traceparent's trace id, or NULL. */
static const char *trace_id(const char *tp, char out[33]) {
  if (!tp || strlen(tp) < 55 || tp[2] != '-' || tp[35] != '-')
    return NULL;
  memcpy(out, tp + 3, 32);
  out[32] = '\0';
  return out;
}

size_t coda__log_format_json(char *buf, size_t cap, coda_log_level level,
                             const coda__log_fields *f, const char *fmt, va_list ap) {
  if (level < CODA_LOG_DEBUG || level > CODA_LOG_ERROR)
    level = CODA_LOG_ERROR;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  char when[25], msg[2048];
  coda__log_time(when, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
  int m = vsnprintf(msg, sizeof msg, fmt, ap);
  size_t mlen = m < 0 ? 0 : (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
  /* The fields after the message are bounded (ids, a cut name, a trace):
   * room is kept for them so the object always closes. */
  size_t n =
      (size_t)snprintf(buf, cap, "{\"time\":\"%s\",\"level\":\"%s\",\"message\":\"", when,
                       level_name[level]);
  n += coda__json_escape(buf + n, cap - n - 400, msg, mlen, NULL);
  buf[n++] = '"';
  if (f && f->request_id)
    n += (size_t)snprintf(buf + n, cap - n, ",\"request_id\":\"%llu\"",
                          (unsigned long long)f->request_id);
  if (f && f->task_id)
    n += (size_t)snprintf(buf + n, cap - n, ",\"task_id\":\"%llu\"",
                          (unsigned long long)f->task_id);
  if (f && f->task_name) {
    memcpy(buf + n, ",\"task\":\"", 9);
    n += 9;
    n += coda__json_escape(buf + n, 128, f->task_name, strlen(f->task_name), NULL);
    buf[n++] = '"';
  }
  if (f && f->attempt)
    n += (size_t)snprintf(buf + n, cap - n, ",\"attempt\":%d", f->attempt);
  char tid[33];
  if (f && trace_id(f->trace, tid))
    n += (size_t)snprintf(buf + n, cap - n, ",\"trace_id\":\"%s\",\"span_id\":\"%.16s\"",
                          tid, f->trace + 36);
  buf[n++] = '}';
  buf[n++] = '\n';
  return n;
}

void coda__logv_fields(coda__logger *lg, long min_level, coda_log_level level,
                       const coda__log_fields *f, const char *fmt, va_list ap) {
  if ((long)level < min_level)
    return;
  char line[4096];
  int format = lg ? lg->format : coda__log_default_format();
  size_t n = format == CODA__LOG_JSON
                 ? coda__log_format_json(line, sizeof line, level, f ? f : scope, fmt, ap)
                 : coda__log_format(line, sizeof line, level, fmt, ap);
  if (lg)
    coda__logger_write(lg, line, n);
  else
    fwrite(line, 1, n, stderr);
}

void coda__logv(coda__logger *lg, long min_level, coda_log_level level, const char *fmt,
                va_list ap) {
  coda__logv_fields(lg, min_level, level, NULL, fmt, ap);
}

void coda__log(coda__logger *lg, long min_level, coda_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  coda__logv(lg, min_level, level, fmt, ap);
  va_end(ap);
}
