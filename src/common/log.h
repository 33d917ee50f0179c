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

/* Line formats (CODA_OPT_LOG_FORMAT). */
enum {
  CODA__LOG_TEXT = 0, /* "INFO:     message", uvicorn's lines (the seeds') */
  CODA__LOG_JSON = 1, /* one JSON object per line, for log pipelines */
};

/* What a line is about besides its message: written as JSON members in the
 * JSON format (zero/NULL members are left out), not at all in text. */
typedef struct coda__log_fields {
  uint64_t request_id;   /* 0: none */
  uint64_t task_id;      /* 0: none */
  const char *task_name; /* NULL: none */
  int attempt;           /* 0: none */
  const char *trace;     /* the W3C traceparent, NULL: none */
} coda__log_fields;

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
  int format;    /* CODA__LOG_TEXT or CODA__LOG_JSON; set before lines are logged */
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

/* Formats {"time": RFC 3339 UTC with ms, "level", "message", the fields}
 * and a newline into buf (cap >= 512): always one whole JSON object, the
 * message cut if it must be. Returns its length. */
size_t coda__log_format_json(char *buf, size_t cap, coda_log_level level,
                             const coda__log_fields *f, const char *fmt, va_list ap);

/* Writes s[0, n) as JSON string content (no quotes) into out, never more
 * than cap bytes and never half an escape: control characters escaped,
 * bytes that are not UTF-8 as U+FFFD. Returns the bytes written; *used,
 * when not NULL, gets the input bytes consumed (short of n when cut). */
size_t coda__json_escape(char *out, size_t cap, const char *s, size_t n, size_t *used);

/* "2026-12-04T11:32:57.123Z" (24 characters and a NUL) for unix ms; each
 * thread keeps the second it formatted last. */
void coda__log_time(char out[25], int64_t unix_ms);

/* The fields of what this thread runs now (a task, set by its executor
 * around the task function): lines logged from it carry them. NULL: none.
 * Returns the previous ones, to be put back. */
const coda__log_fields *coda__log_scope(const coda__log_fields *f);
const coda__log_fields *coda__log_scope_current(void);

/* The format of lines logged without a logger (coda_log(NULL, ...), the
 * layers' lg NULL). Process-wide: an app setting CODA_OPT_LOG_FORMAT sets
 * it too, and a process worker takes it from its server at start. */
void coda__log_set_default_format(int format);
int coda__log_default_format(void);

/* Formats and queues one line if level >= min_level (lg NULL: stderr).
 * Thread-safe. The layers below the app log through this; the app's
 * coda_log() is the same with the app's logger and level. */
void coda__logv(coda__logger *lg, long min_level, coda_log_level level, const char *fmt,
                va_list ap);
void coda__log(coda__logger *lg, long min_level, coda_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same with fields of its own (a task's, logged after it ran), which
 * win over the thread's scope. */
void coda__logv_fields(coda__logger *lg, long min_level, coda_log_level level,
                       const coda__log_fields *f, const char *fmt, va_list ap);

#endif /* CODA_COMMON_LOG_H */
