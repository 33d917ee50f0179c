/*
 * table.c - what coda-admin prints for people: aligned tables, times as
 * dates and ages, and strings cleaned of control characters (a task's error
 * message is data from anywhere: it must not move the cursor or retitle
 * the operator's terminal).
 */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cli_table_init(cli_table *t, int ncols, const char **heads, unsigned right) {
  memset(t, 0, sizeof *t);
  t->ncols = ncols;
  t->heads = heads;
  t->right = right;
}

int cli_table_row(cli_table *t, const char **cells) {
  if (t->nrows == t->cap) {
    int cap = t->cap ? t->cap * 2 : 16;
    char **more = realloc(t->cells, (size_t)cap * (size_t)t->ncols * sizeof *more);
    if (!more)
      return -1;
    t->cells = more;
    t->cap = cap;
  }
  char **row = t->cells + (size_t)t->nrows * (size_t)t->ncols;
  for (int i = 0; i < t->ncols; i++) {
    char clean[1024];
    row[i] =
        strdup(cells[i] && *cells[i] ? cli_clean(cells[i], clean, sizeof clean) : "-");
  }
  t->nrows++;
  return 0;
}

/* Columns on screen, counting a UTF-8 sequence once. */
static int width(const char *s) {
  int w = 0;
  for (; *s; s++)
    w += ((unsigned char)*s & 0xc0) != 0x80;
  return w;
}

static void cell(const char *s, int w, int right, int last) {
  int pad = w - width(s);
  if (right)
    printf("%*s%s", pad, "", s);
  else if (last)
    fputs(s, stdout);
  else
    printf("%s%*s", s, pad, "");
}

void cli_table_print(const cli_table *t) {
  int w[32] = {0};
  for (int i = 0; i < t->ncols && i < 32; i++) {
    w[i] = width(t->heads[i]);
    for (int r = 0; r < t->nrows; r++) {
      int cw = width(t->cells[(size_t)r * (size_t)t->ncols + (size_t)i]);
      w[i] = cw > w[i] ? cw : w[i];
    }
  }
  for (int r = -1; r < t->nrows; r++) {
    for (int i = 0; i < t->ncols; i++) {
      const char *s =
          r < 0 ? t->heads[i] : t->cells[(size_t)r * (size_t)t->ncols + (size_t)i];
      if (i)
        fputs("  ", stdout);
      cell(s, w[i], (int)((t->right >> i) & 1u), i == t->ncols - 1);
    }
    putchar('\n');
  }
}

void cli_table_free(cli_table *t) {
  for (size_t i = 0; i < (size_t)t->nrows * (size_t)t->ncols; i++)
    free(t->cells[i]);
  free(t->cells);
  t->cells = NULL;
  t->nrows = t->cap = 0;
}

const char *cli_clean(const char *s, char *buf, size_t cap) {
  size_t n = 0;
  for (; *s && n + 4 < cap; s++) {
    unsigned char ch = (unsigned char)*s;
    buf[n++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
  }
  if (*s) /* cut: say so */
    n += (size_t)snprintf(buf + n, cap - n, "...");
  buf[n] = '\0';
  return buf;
}

const char *cli_str(json_t *obj, const char *key) {
  const char *s = json_string_value(json_object_get(obj, key));
  return s ? s : "";
}

const char *cli_num(json_t *obj, const char *key, char *buf, size_t cap) {
  json_t *v = json_object_get(obj, key);
  if (json_is_integer(v))
    snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
  else if (json_is_real(v))
    snprintf(buf, cap, "%.1f", json_real_value(v));
  else if (json_is_string(v))
    snprintf(buf, cap, "%s", json_string_value(v));
  else
    snprintf(buf, cap, "-");
  return buf;
}

int64_t cli_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *cli_span(int64_t ms, char *buf, size_t cap) {
  if (ms < 0)
    ms = -ms;
  int64_t s = ms / 1000;
  if (ms < 1000)
    snprintf(buf, cap, "%" PRId64 "ms", ms);
  else if (s < 60)
    snprintf(buf, cap, "%" PRId64 "s", s);
  else if (s < 3600)
    snprintf(buf, cap, "%" PRId64 "m%" PRId64 "s", s / 60, s % 60);
  else if (s < 86400)
    snprintf(buf, cap, "%" PRId64 "h%" PRId64 "m", s / 3600, s / 60 % 60);
  else
    snprintf(buf, cap, "%" PRId64 "d%" PRId64 "h", s / 86400, s / 3600 % 24);
  return buf;
}

const char *cli_when(json_t *obj, const char *key, int64_t now_ms, int with_date,
                     char *buf, size_t cap) {
  json_t *v = json_object_get(obj, key);
  int64_t ms = json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
  if (ms <= 0) {
    snprintf(buf, cap, "-");
    return buf;
  }
  char span[32], date[32] = "";
  cli_span(now_ms - ms, span, sizeof span);
  if (with_date) {
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%SZ ", &tm);
  }
  if (ms <= now_ms)
    snprintf(buf, cap, "%s%s%s ago%s", date, with_date ? "(" : "", span,
             with_date ? ")" : "");
  else
    snprintf(buf, cap, "%s%sin %s%s", date, with_date ? "(" : "", span,
             with_date ? ")" : "");
  return buf;
}
