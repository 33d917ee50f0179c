/*
 * log.h - coda's logger: callers on any thread format a line and hand it to
 * one writer thread through a bounded ring, so no event loop ever blocks on
 * a slow terminal or disk. When the ring is full, lines are dropped and
 * counted (the count is written once there is room again): logging must
 * never stall serving.
 *
 * Wake-ups: a caller signals the writer only when the writer sleeps on an
 * empty ring (or when the ring passes half full), never once per line. The
 * woken writer then gathers for up to `gather_ms` before it writes, so lines
 * from many loop iterations leave in one write(2) and a busy server wakes
 * its writer about 1000 / gather_ms times a second, whatever its request
 * rate. The price: a line reaches the sink up to gather_ms after it was
 * logged (at once when the logger stops).
 *
 * Lock rule: `mu` protects the ring indexes, `accepting`, `stop`, `dropped`,
 * `writer` and `signalled`. Callers copy into the ring under it; the writer
 * holds it only to read and advance the indexes, and writes the bytes
 * between them out with mu released: callers never touch [head, tail).
 */
#ifndef CODA_COMMON_LOG_H
#define CODA_COMMON_LOG_H

#include "coda.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* How long a woken writer waits for more lines before writing. */
#define CODA__LOG_GATHER_MS 10

typedef struct coda__logger {
  uv_mutex_t mu;
  uv_cond_t cond;
  uv_thread_t thread;
  char *ring;
  size_t cap;
  uint64_t head; /* next byte to write out */
  uint64_t tail; /* next byte to fill */
  uint64_t dropped;
  long gather_ms; /* set after init to change CODA__LOG_GATHER_MS */
  int fd;
  int started;   /* the writer thread exists (start/stop caller only) */
  int accepting; /* the writer takes lines; otherwise callers write through */
  int stop;
  int writer;    /* what the writer thread is doing (log.c) */
  int signalled; /* the writer was signalled and has not woken yet */
} coda__logger;

int coda__logger_init(coda__logger *lg, int fd, size_t ring_bytes);
/* Starts the writer thread; before that, lines are written synchronously. */
int coda__logger_start(coda__logger *lg);
/* Writes out what is buffered and joins the writer thread; lines logged from
 * then on are written synchronously, none is lost. */
void coda__logger_stop(coda__logger *lg);
void coda__logger_free(coda__logger *lg);

/* Queues bytes (whole lines). Thread-safe; never waits for the writer. */
void coda__logger_write(coda__logger *lg, const char *p, size_t n);

/* Formats "LEVEL:    message\n" into buf; returns its length (<= cap). */
size_t coda__log_format(char *buf, size_t cap, coda_log_level level,
                        const char *fmt, va_list ap);

/* Formats and queues one line if level >= min_level (lg NULL: stderr).
 * Thread-safe. The layers below the app log through this; the app's
 * coda_log() is the same with the app's logger and level. */
void coda__logv(coda__logger *lg, long min_level, coda_log_level level, const char *fmt,
                va_list ap);
void coda__log(coda__logger *lg, long min_level, coda_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* CODA_COMMON_LOG_H */
