/*
 * cron.h - five-field cron expressions in UTC, for periodic tasks
 * (schedule.c): parsing, and the due times before and after an instant.
 *
 *   minute hour day-of-month month day-of-week
 *
 * Each field is `*` or a comma-separated list of items; an item is a
 * number, a range `a-b`, `*` or `a` (from a to the field's maximum), each
 * optionally stepped by `/n` (`*\/5`, `1-10/2`, `5/15`). Months take
 * names jan..dec, weekdays sun..sat (any case, also in ranges); Sunday is 0
 * or 7. When both day fields are restricted, a day matches if either does
 * (the rule every cron keeps); a day field that starts with `*` (`*`,
 * `*\/2`) counts as unrestricted there, so it narrows the other one
 * instead. The macros @yearly (@annually), @monthly, @weekly, @daily
 * (@midnight) and @hourly stand for their usual expressions.
 *
 * Pure functions: any thread, no allocation.
 */
#ifndef CODA_TASKS_CRON_H
#define CODA_TASKS_CRON_H

#include <stddef.h>
#include <stdint.h>

typedef struct coda__cron {
  uint64_t minutes; /* bit m: minute m, 0..59 */
  uint64_t hours;   /* 0..23 */
  uint64_t mdays;   /* 1..31 */
  uint64_t months;  /* 1..12 */
  uint64_t wdays;   /* 0..6, Sunday 0 */
  int mday_star;    /* the field started with '*' */
  int wday_star;
} coda__cron;

/* Parses expr into *out. Returns 0, or CODA_EINVAL with a sentence in err
 * naming the field and what is wrong ("hour: 24 is out of range 0-23"). An
 * expression that can never match (day 30 of February) is refused too. */
int coda__cron_parse(const char *expr, coda__cron *out, char *err, size_t errlen);

/* The first due time strictly after `after_ms` (unix ms, UTC), a whole
 * minute; -1 if none in the next 400 years (never, for a parsed one). */
int64_t coda__cron_next(const coda__cron *c, int64_t after_ms);

/* The last due time at or before `at_ms`; -1 if none in the 400 years
 * before it. */
int64_t coda__cron_prev(const coda__cron *c, int64_t at_ms);

#endif /* CODA_TASKS_CRON_H */
