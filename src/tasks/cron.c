/*
 * cron.c - five-field cron expressions (cron.h): a parser into one bit set
 * per field, and a walk over the calendar in UTC that skips whole months,
 * days and hours that cannot match, so finding the next due time costs a
 * few dozen steps, not one per minute.
 *
 * Dates are computed from day numbers (days since 1970-01-01) with the
 * proleptic Gregorian calendar; no time zone, no libc time functions (UTC
 * only, and the same answer on every machine of a fleet).
 */
#include "tasks/cron.h"

#include "coda.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- the calendar ---------------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int64_t y, int m) {
  static const int days[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : days[m];
}

/* Day number of a date. Years are counted from March, so the leap day is
 * the last of its year and the month lengths follow a fixed pattern. */
static int64_t day_number(int64_t y, int m, int d) {
  if (m <= 2)
    y--;
  int64_t era = floor_div(y, 400);
  int64_t year_of_era = y - era * 400;                          /* 0..399 */
  int64_t day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + d - 1; /* from March 1 */
  int64_t day_of_era =
      year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + day_of_era - 719468; /* 719468: 0000-03-01 to 1970-01-01 */
}

typedef struct when {
  int64_t y;
  int m, d, h, min; /* m 1..12, d 1..31 (may run past the month while walking) */
} when;

static void date_of(int64_t day, when *w) {
  day += 719468;
  int64_t era = floor_div(day, 146097);
  int64_t day_of_era = day - era * 146097; /* 0..146096 */
  int64_t year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  int64_t day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  int64_t mp = (5 * day_of_year + 2) / 153; /* 0: March */
  w->d = (int)(day_of_year - (153 * mp + 2) / 5 + 1);
  w->m = (int)(mp < 10 ? mp + 3 : mp - 9);
  w->y = year_of_era + era * 400 + (w->m <= 2);
}

static void when_of_minute(int64_t minute, when *w) {
  int64_t day = floor_div(minute, 1440);
  int of_day = (int)(minute - day * 1440);
  date_of(day, w);
  w->h = of_day / 60;
  w->min = of_day % 60;
}

static int64_t ms_of(const when *w) {
  return ((day_number(w->y, w->m, w->d) * 24 + w->h) * 60 + w->min) * 60000;
}

static int weekday(int64_t y, int m, int d) {
  return (int)((day_number(y, m, d) % 7 + 11) % 7); /* 1970-01-01 was a Thursday (4) */
}

/* ---- matching -------------------------------------------------------------- */

static int has(uint64_t set, int i) { return (int)(set >> i & 1); }

static int next_bit(uint64_t set, int from, int max) {
  for (int i = from; i <= max; i++)
    if (has(set, i))
      return i;
  return -1;
}

static int prev_bit(uint64_t set, int from) {
  for (int i = from; i >= 0; i--)
    if (has(set, i))
      return i;
  return -1;
}

static int day_matches(const coda__cron *c, const when *w) {
  int by_date = has(c->mdays, w->d);
  int by_weekday = has(c->wdays, weekday(w->y, w->m, w->d));
  if (c->mday_star || c->wday_star)
    return by_date && by_weekday;
  return by_date || by_weekday;
}

static void to_next_month(when *w) {
  if (++w->m > 12) {
    w->m = 1;
    w->y++;
  }
  w->d = 1;
  w->h = w->min = 0;
}

static void to_next_day(when *w) {
  w->d++;
  w->h = w->min = 0;
}

int64_t coda__cron_next(const coda__cron *c, int64_t after_ms) {
  when w;
  when_of_minute(floor_div(after_ms, 60000) + 1, &w);
  int64_t last_year = w.y + 400;
  while (w.y <= last_year) {
    if (!has(c->months, w.m) || w.d > days_in_month(w.y, w.m)) {
      to_next_month(&w);
      continue;
    }
    if (!day_matches(c, &w)) {
      to_next_day(&w);
      continue;
    }
    int h = next_bit(c->hours, w.h, 23);
    if (h < 0) {
      to_next_day(&w);
      continue;
    }
    if (h != w.h) {
      w.h = h;
      w.min = 0;
    }
    int min = next_bit(c->minutes, w.min, 59);
    if (min < 0) {
      w.min = 0;
      if (++w.h == 24)
        to_next_day(&w);
      continue;
    }
    w.min = min;
    return ms_of(&w);
  }
  return -1;
}

static void to_prev_month(when *w) {
  if (--w->m < 1) {
    w->m = 12;
    w->y--;
  }
  w->d = days_in_month(w->y, w->m);
  w->h = 23;
  w->min = 59;
}

static void to_prev_day(when *w) {
  w->d--;
  w->h = 23;
  w->min = 59;
}

int64_t coda__cron_prev(const coda__cron *c, int64_t at_ms) {
  when w;
  when_of_minute(floor_div(at_ms, 60000), &w);
  int64_t first_year = w.y - 400;
  while (w.y >= first_year) {
    if (!has(c->months, w.m) || w.d < 1) {
      to_prev_month(&w);
      continue;
    }
    if (!day_matches(c, &w)) {
      to_prev_day(&w);
      continue;
    }
    int h = prev_bit(c->hours, w.h);
    if (h < 0) {
      to_prev_day(&w);
      continue;
    }
    if (h != w.h) {
      w.h = h;
      w.min = 59;
    }
    int min = prev_bit(c->minutes, w.min);
    if (min < 0) {
      w.min = 59;
      if (--w.h < 0)
        to_prev_day(&w);
      continue;
    }
    w.min = min;
    return ms_of(&w);
  }
  return -1;
}

/* ---- parsing --------------------------------------------------------------- */

typedef struct field {
  const char *name;
  int min, max;
  const char *const *names; /* names[i] is value min + i, or NULL */
  int nnames;
} field;

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static const field fields[5] = {
    {"minute", 0, 59, NULL, 0},          {"hour", 0, 23, NULL, 0},
    {"day-of-month", 1, 31, NULL, 0},    {"month", 1, 12, month_names, 12},
    {"day-of-week", 0, 7, day_names, 7}, /* 7 is Sunday again */
};

typedef struct parser {
  const char *p;   /* the next character of the field */
  const char *end; /* the field's end */
  const field *f;
  char *err;
  size_t errlen;
} parser;

static int failf(parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(parser *ps, const char *fmt, ...) {
  int n = snprintf(ps->err, ps->errlen, "%s: ", ps->f->name);
  if (n >= 0 && (size_t)n < ps->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return CODA_EINVAL;
}

/* A number or, where the field has them, a three-letter name. */
static int parse_value(parser *ps, int *out) {
  const char *start = ps->p;
  if (ps->p < ps->end && isdigit((unsigned char)*ps->p)) {
    long v = 0;
    while (ps->p < ps->end && isdigit((unsigned char)*ps->p)) {
      if (v < 100000)
        v = v * 10 + (*ps->p - '0');
      ps->p++;
    }
    if (v < ps->f->min || v > ps->f->max)
      return failf(ps, "%.*s is out of range %d-%d", (int)(ps->p - start), start,
                   ps->f->min, ps->f->max);
    *out = (int)v;
    return 0;
  }
  while (ps->p < ps->end && isalpha((unsigned char)*ps->p))
    ps->p++;
  size_t len = (size_t)(ps->p - start);
  if (len == 0 && ps->p < ps->end)
    return failf(ps, "unexpected '%c'", *ps->p);
  if (len == 0)
    return failf(ps, "a value is missing");
  for (int i = 0; len == 3 && i < ps->f->nnames; i++) {
    if (strncasecmp(start, ps->f->names[i], 3) == 0) {
      *out = ps->f->min + i;
      return 0;
    }
  }
  if (!ps->f->names)
    return failf(ps, "\"%.*s\" is not a number (names are for month and day-of-week)",
                 (int)len, start);
  return failf(ps, "unknown name \"%.*s\" (%s)", (int)len, start,
               ps->f->names == month_names ? "jan..dec" : "sun..sat");
}

static int parse_step(parser *ps, int *step) {
  const char *start = ps->p;
  long v = 0;
  while (ps->p < ps->end && isdigit((unsigned char)*ps->p)) {
    if (v < 100000)
      v = v * 10 + (*ps->p - '0');
    ps->p++;
  }
  if (ps->p == start)
    return failf(ps, "a step needs a number after '/'");
  if (v < 1 || v > ps->f->max)
    return failf(ps, "step %.*s is out of range 1-%d", (int)(ps->p - start), start,
                 ps->f->max);
  *step = (int)v;
  return 0;
}

/* One item of a list: `*`, `a`, `a-b`, each optionally `/step`. */
static int parse_item(parser *ps, uint64_t *set) {
  int lo, hi, step = 1, rc;
  if (ps->p < ps->end && *ps->p == '*') {
    ps->p++;
    lo = ps->f->min;
    hi = ps->f->max;
  } else {
    if ((rc = parse_value(ps, &lo)) != 0)
      return rc;
    hi = lo;
    if (ps->p < ps->end && *ps->p == '-') {
      ps->p++;
      if ((rc = parse_value(ps, &hi)) != 0)
        return rc;
      if (ps->f->max == 7 && hi == 0 && lo > 0)
        hi = 7; /* fri-sun */
      if (hi < lo)
        return failf(ps, "the range %d-%d goes backwards", lo, hi);
    } else if (ps->p < ps->end && *ps->p == '/') {
      hi = ps->f->max; /* a/step: from a to the end */
    }
  }
  if (ps->p < ps->end && *ps->p == '/') {
    ps->p++;
    if ((rc = parse_step(ps, &step)) != 0)
      return rc;
  }
  if (ps->p < ps->end && *ps->p != ',')
    return failf(ps, "unexpected '%c'", *ps->p);
  for (int v = lo; v <= hi; v += step)
    *set |= 1ULL << v;
  return 0;
}

static int parse_field(parser *ps, uint64_t *set) {
  *set = 0;
  for (;;) {
    int rc = parse_item(ps, set);
    if (rc)
      return rc;
    if (ps->p == ps->end)
      break;
    ps->p++; /* ',' */
    if (ps->p == ps->end || *ps->p == ',')
      return failf(ps, "an empty item in a list");
  }
  if (ps->f->max == 7 && has(*set, 7)) /* Sunday as 7 */
    *set = (*set | 1) & ~(1ULL << 7);
  return 0;
}

static const char *macro(const char *expr) {
  static const struct {
    const char *name, *expr;
  } macros[] = {{"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"},
                {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
                {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
                {"@hourly", "0 * * * *"}};
  size_t len = strcspn(expr, " \t\r\n");
  for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
    if (strlen(macros[i].name) == len && strncasecmp(expr, macros[i].name, len) == 0 &&
        expr[len + strspn(expr + len, " \t\r\n")] == '\0')
      return macros[i].expr;
  return NULL;
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int coda__cron_parse(const char *expr, coda__cron *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (errlen)
    err[0] = '\0';
  if (!expr) {
    snprintf(err, errlen, "no expression");
    return CODA_EINVAL;
  }
  while (is_blank(*expr))
    expr++;
  if (*expr == '@') {
    const char *m = macro(expr);
    if (!m) {
      snprintf(err, errlen,
               "unknown macro \"%.*s\" (@yearly, @monthly, @weekly, @daily, "
               "@hourly)",
               (int)strcspn(expr, " \t\r\n"), expr);
      return CODA_EINVAL;
    }
    expr = m;
  }
  uint64_t *sets[5] = {&out->minutes, &out->hours, &out->mdays, &out->months,
                       &out->wdays};
  const char *p = expr;
  int n = 0;
  for (;;) {
    while (is_blank(*p))
      p++;
    if (!*p)
      break;
    const char *start = p;
    while (*p && !is_blank(*p))
      p++;
    if (n == 5) {
      n++;
      break;
    }
    parser ps = {start, p, &fields[n], err, errlen};
    int rc = parse_field(&ps, sets[n]);
    if (rc)
      return rc;
    if (n == 2)
      out->mday_star = *start == '*';
    if (n == 4)
      out->wday_star = *start == '*';
    n++;
  }
  if (n != 5) {
    snprintf(err, errlen,
             "expected 5 fields (minute hour day-of-month month day-of-week), got %s%d",
             n > 5 ? "more than " : "", n > 5 ? 5 : n);
    return CODA_EINVAL;
  }
  if (coda__cron_next(out, 0) < 0) {
    snprintf(err, errlen, "\"%s\" never matches: no month chosen has that day", expr);
    return CODA_EINVAL;
  }
  return 0;
}
