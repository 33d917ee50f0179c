/*
 * cron_test.c - cron expressions (src/tasks/cron.c): parsing, the next and
 * previous due times, and refusals.
 *
 * Checks: each syntax (lists, ranges, steps, names, Sunday as 0 or 7,
 * macros) on hand-picked dates; the day-of-month / day-of-week rule (either
 * when both are restricted, both when one starts with '*'); month ends,
 * leap days and year ends; "strictly after" and "at or before"; every due
 * time of a span of minutes against a brute-force check that uses libc's
 * own calendar (gmtime_r), for many expressions, both directions; and bad
 * expressions refused with a message naming the field and the fault.
 */
#include "coda.h"
#include "tasks/cron.h"
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Unix ms of a UTC date and time. */
static int64_t utc(int y, int mo, int d, int h, int mi, int s) {
  struct tm tm = {.tm_year = y - 1900,
                  .tm_mon = mo - 1,
                  .tm_mday = d,
                  .tm_hour = h,
                  .tm_min = mi,
                  .tm_sec = s};
  return (int64_t)timegm(&tm) * 1000;
}

static int64_t next_of(const char *expr, int64_t after) {
  coda__cron c;
  char err[200];
  if (coda__cron_parse(expr, &c, err, sizeof err) != 0) {
    fprintf(stderr, "  \"%s\" refused: %s\n", expr, err);
    return -2;
  }
  return coda__cron_next(&c, after);
}

static int64_t prev_of(const char *expr, int64_t at) {
  coda__cron c;
  char err[200];
  if (coda__cron_parse(expr, &c, err, sizeof err) != 0) {
    fprintf(stderr, "  \"%s\" refused: %s\n", expr, err);
    return -2;
  }
  return coda__cron_prev(&c, at);
}

TEST(every_minute_is_strictly_after) {
  int64_t t = utc(2025, 12, 4, 5, 27, 0);
  CHECK_EQ_INT(next_of("* * * * *", t), t + 60000); /* on a due time: the next */
  CHECK_EQ_INT(next_of("* * * * *", t - 1), t);     /* just before: that one */
  CHECK_EQ_INT(next_of("* * * * *", t + 59999), t + 60000);
  CHECK_EQ_INT(prev_of("* * * * *", t), t); /* at or before */
  CHECK_EQ_INT(prev_of("* * * * *", t + 59999), t);
  CHECK_EQ_INT(prev_of("* * * * *", t - 1), t - 60000);
}

TEST(steps_ranges_and_lists) {
  int64_t t = utc(2025, 3, 10, 12, 3, 20);
  CHECK_EQ_INT(next_of("*/5 * * * *", t), utc(2025, 3, 10, 12, 5, 0));
  CHECK_EQ_INT(next_of("*/5 * * * *", utc(2025, 3, 10, 12, 55, 0)),
               utc(2025, 3, 10, 13, 0, 0));
  CHECK_EQ_INT(next_of("0 1-10/2 * * *", t), utc(2025, 3, 11, 1, 0, 0));
  CHECK_EQ_INT(next_of("0 1-10/2 * * *", utc(2025, 3, 11, 1, 0, 0)),
               utc(2025, 3, 11, 3, 0, 0));
  CHECK_EQ_INT(next_of("0 1-10/2 * * *", utc(2025, 3, 11, 9, 0, 0)),
               utc(2025, 3, 12, 1, 0, 0)); /* 1,3,5,7,9: 11 is not in */
  CHECK_EQ_INT(next_of("0,30 9 * * *", t), utc(2025, 3, 11, 9, 0, 0));
  CHECK_EQ_INT(next_of("0,30 9 * * *", utc(2025, 3, 11, 9, 0, 0)),
               utc(2025, 3, 11, 9, 30, 0));
  CHECK_EQ_INT(next_of("15,45 8-9,17 * * *", utc(2025, 3, 11, 9, 46, 0)),
               utc(2025, 3, 11, 17, 15, 0));
  CHECK_EQ_INT(next_of("10/20 * * * *", t), utc(2025, 3, 10, 12, 10, 0)); /* 10,30,50 */
  CHECK_EQ_INT(next_of("10/20 * * * *", utc(2025, 3, 10, 12, 50, 0)),
               utc(2025, 3, 10, 13, 10, 0));
  CHECK_EQ_INT(next_of("  7   6 * * *  ", t), utc(2025, 3, 11, 6, 7, 0)); /* blanks */
}

TEST(month_and_weekday_names) {
  int64_t t = utc(2025, 3, 10, 12, 0, 0); /* a Monday */
  CHECK_EQ_INT(next_of("0 9 * jan,JUL *", t), utc(2025, 7, 1, 9, 0, 0));
  CHECK_EQ_INT(next_of("0 9 * * Sat", t), utc(2025, 3, 15, 9, 0, 0));
  CHECK_EQ_INT(next_of("0 9 * * mon-fri", utc(2025, 3, 14, 9, 0, 0)), /* Friday */
               utc(2025, 3, 17, 9, 0, 0));
  CHECK_EQ_INT(next_of("0 9 * * fri-sun", utc(2025, 3, 14, 9, 0, 0)),
               utc(2025, 3, 15, 9, 0, 0));
  CHECK_EQ_INT(next_of("0 0 1 mar-may/2 *", t), utc(2025, 5, 1, 0, 0, 0));
}

TEST(sunday_is_zero_or_seven) {
  int64_t t = utc(2025, 3, 10, 12, 0, 0);
  int64_t sunday = utc(2025, 3, 16, 0, 0, 0);
  CHECK_EQ_INT(next_of("0 0 * * 0", t), sunday);
  CHECK_EQ_INT(next_of("0 0 * * 7", t), sunday);
  CHECK_EQ_INT(next_of("0 0 * * sun", t), sunday);
  CHECK_EQ_INT(next_of("0 0 * * 6-7", utc(2025, 3, 15, 0, 0, 0)), sunday);
  CHECK_EQ_INT(next_of("0 0 * * 5-0", utc(2025, 3, 15, 0, 0, 0)), sunday);
}

TEST(day_of_month_or_day_of_week) {
  /* Both restricted: the 13th or any Friday. 2025-06-13 is a Friday. */
  CHECK_EQ_INT(next_of("0 0 13 * fri", utc(2025, 5, 29, 0, 0, 0)),
               utc(2025, 5, 30, 0, 0, 0)); /* Friday 30 May */
  CHECK_EQ_INT(next_of("0 0 13 * fri", utc(2025, 7, 11, 0, 0, 0)),
               utc(2025, 7, 13, 0, 0, 0)); /* Sunday 13 July */
  /* A day field that starts with '*' narrows the other: odd days that are
   * Mondays. */
  CHECK_EQ_INT(next_of("0 0 */2 * mon", utc(2025, 3, 10, 0, 0, 0)),
               utc(2025, 3, 17, 0, 0, 0));
  CHECK_EQ_INT(next_of("0 0 1 * *", utc(2025, 3, 10, 0, 0, 0)), utc(2025, 4, 1, 0, 0, 0));
  CHECK_EQ_INT(next_of("0 0 * * 1", utc(2025, 3, 10, 0, 0, 0)),
               utc(2025, 3, 17, 0, 0, 0));
}

TEST(month_ends_leap_days_and_year_ends) {
  CHECK_EQ_INT(next_of("0 0 31 * *", utc(2025, 3, 31, 0, 0, 0)),
               utc(2025, 5, 31, 0, 0, 0));
  CHECK_EQ_INT(next_of("0 0 29 2 *", utc(2025, 3, 1, 0, 0, 0)),
               utc(2028, 2, 29, 0, 0, 0));
  CHECK_EQ_INT(next_of("0 0 29 2 *", utc(2096, 3, 1, 0, 0, 0)),
               utc(2104, 2, 29, 0, 0, 0)); /* 2100 is not a leap year */
  CHECK_EQ_INT(next_of("0 0 1 1 *", utc(2025, 12, 31, 23, 59, 0)),
               utc(2026, 1, 1, 0, 0, 0));
  CHECK_EQ_INT(next_of("59 23 31 12 *", utc(2025, 12, 31, 23, 59, 0)),
               utc(2026, 12, 31, 23, 59, 0));
  CHECK_EQ_INT(prev_of("0 0 29 2 *", utc(2028, 2, 28, 0, 0, 0)),
               utc(2024, 2, 29, 0, 0, 0));
  CHECK_EQ_INT(prev_of("0 0 31 * *", utc(2025, 5, 30, 0, 0, 0)),
               utc(2025, 3, 31, 0, 0, 0));
  CHECK_EQ_INT(prev_of("59 23 31 12 *", utc(2026, 1, 1, 0, 0, 0)),
               utc(2025, 12, 31, 23, 59, 0));
  CHECK_EQ_INT(prev_of("30 * * * *", utc(2026, 1, 1, 0, 10, 0)),
               utc(2025, 12, 31, 23, 30, 0));
  /* Before 1970 works too. */
  CHECK_EQ_INT(next_of("0 12 * * *", utc(1969, 12, 31, 13, 0, 0)),
               utc(1970, 1, 1, 12, 0, 0));
  CHECK_EQ_INT(prev_of("0 12 * * *", utc(1970, 1, 1, 11, 0, 0)),
               utc(1969, 12, 31, 12, 0, 0));
}

TEST(macros) {
  int64_t t = utc(2025, 3, 10, 12, 3, 0);
  CHECK_EQ_INT(next_of("@hourly", t), utc(2025, 3, 10, 13, 0, 0));
  CHECK_EQ_INT(next_of("@daily", t), utc(2025, 3, 11, 0, 0, 0));
  CHECK_EQ_INT(next_of("@midnight", t), utc(2025, 3, 11, 0, 0, 0));
  CHECK_EQ_INT(next_of("@weekly", t), utc(2025, 3, 16, 0, 0, 0));
  CHECK_EQ_INT(next_of("@monthly", t), utc(2025, 4, 1, 0, 0, 0));
  CHECK_EQ_INT(next_of("@yearly", t), utc(2026, 1, 1, 0, 0, 0));
  CHECK_EQ_INT(next_of("@ANNUALLY", t), utc(2026, 1, 1, 0, 0, 0));
}

/* The brute force: does the minute at unix second s match? Through libc's
 * calendar, so it shares no date arithmetic with cron.c. */
static int matches(const char *expr, const coda__cron *c, time_t s) {
  struct tm tm;
  gmtime_r(&s, &tm);
  int dom = (int)(c->mdays >> tm.tm_mday & 1), dow = (int)(c->wdays >> tm.tm_wday & 1);
  int day = c->mday_star || c->wday_star ? dom && dow : dom || dow;
  (void)expr;
  return (int)(c->minutes >> tm.tm_min & 1) && (int)(c->hours >> tm.tm_hour & 1) &&
         (int)(c->months >> (tm.tm_mon + 1) & 1) && day;
}

/* Lists, by brute force, the due times of `minutes` minutes from `from`,
 * then asks next() and prev() about instants every `step` minutes and
 * around each due time, and checks their answers against that list. */
static int sweep(const char *expr, int64_t from, int64_t minutes, int step) {
  coda__cron c;
  char err[200];
  if (coda__cron_parse(expr, &c, err, sizeof err) != 0) {
    fprintf(stderr, "  \"%s\" refused: %s\n", expr, err);
    return 0;
  }
  int64_t *hits = malloc((size_t)(minutes + 1) * sizeof *hits);
  if (!hits)
    return 0;
  size_t n = 0;
  for (int64_t i = 0; i <= minutes; i++)
    if (matches(expr, &c, (time_t)((from + i * 60000) / 1000)))
      hits[n++] = from + i * 60000;
  int64_t end = from + minutes * 60000;
  int bad = 0;
  size_t k = 0; /* hits[k] is the first hit > q */
  int64_t span = (int64_t)step * 60000;
  for (int64_t q = from; q <= end;) {
    /* The next instant to ask about: on a grid every step minutes (7 s
     * in), or just before, on, or at the end of the minute of a hit. */
    int64_t rel = q - from - 7000;
    int64_t cand[5] = {from + 7000 + (rel <= 0 ? 0 : (rel + span - 1) / span * span),
                       k < n ? hits[k] - 1 : INT64_MAX, k < n ? hits[k] : INT64_MAX,
                       k > 0 ? hits[k - 1] + 59999 : INT64_MAX,
                       k < n ? hits[k] + 59999 : INT64_MAX};
    int64_t pick = INT64_MAX;
    for (int j = 0; j < 5; j++)
      if (cand[j] >= q && cand[j] < pick)
        pick = cand[j];
    if (pick > end)
      break;
    q = pick + 1;
    while (k < n && hits[k] <= pick)
      k++;
    if (k < n && coda__cron_next(&c, pick) != hits[k] && bad++ < 3)
      fprintf(stderr, "  \"%s\": next after %lld is %lld, not %lld\n", expr,
              (long long)pick, (long long)coda__cron_next(&c, pick), (long long)hits[k]);
    if (k > 0 && coda__cron_prev(&c, pick) != hits[k - 1] && bad++ < 3)
      fprintf(stderr, "  \"%s\": prev at %lld is %lld, not %lld\n", expr, (long long)pick,
              (long long)coda__cron_prev(&c, pick), (long long)hits[k - 1]);
  }
  if (n == 0)
    fprintf(stderr, "  \"%s\": no due time in the sweep (a useless case)\n", expr);
  free(hits);
  return bad == 0 && n > 0;
}

TEST(every_due_time_of_a_span_matches_brute_force) {
  static const char *const dense[] = {"* * * * *",
                                      "*/7 * * * *",
                                      "3-50/11 */5 * * *",
                                      "0,15,59 0-3,22 * * *",
                                      "*/10 9-17 * * mon-fri",
                                      "0 0 13 * fri",
                                      "30 4 1,15 * 5",
                                      "0 */6 */2 * *",
                                      "0 12 * * sun,7",
                                      "5 0 * 3 *"};
  /* Three weeks across a month end and a leap day. */
  int64_t from = utc(2024, 2, 20, 0, 0, 0);
  for (size_t i = 0; i < sizeof dense / sizeof dense[0]; i++)
    CHECK(sweep(dense[i], from, 21 * 1440, 1));
  static const char *const sparse[] = {"0 0 29 2 *",      "0 0 31 * *", "59 23 31 12 *",
                                       "0 0 1 jan,jul *", "@weekly",    "0 0 * feb mon"};
  /* Four years, across a leap year and year ends. */
  for (size_t i = 0; i < sizeof sparse / sizeof sparse[0]; i++)
    CHECK(sweep(sparse[i], utc(2023, 11, 1, 0, 0, 0), 4LL * 366 * 1440, 61));
}

/* Refused, with a message that contains `says`. */
static int refused(const char *expr, const char *says) {
  coda__cron c;
  char err[200] = "";
  int rc = coda__cron_parse(expr, &c, err, sizeof err);
  if (rc != CODA_EINVAL || !strstr(err, says)) {
    fprintf(stderr, "  \"%s\": rc %d, message \"%s\" (wanted \"%s\")\n",
            expr ? expr : "NULL", rc, err, says);
    return 0;
  }
  return 1;
}

TEST(bad_expressions_are_refused_with_a_clear_error) {
  CHECK(refused(NULL, "no expression"));
  CHECK(refused("", "expected 5 fields"));
  CHECK(refused("* * * *", "got 4"));
  CHECK(refused("* * * * * *", "got more than 5"));
  CHECK(refused("60 * * * *", "minute: 60 is out of range 0-59"));
  CHECK(refused("* 24 * * *", "hour: 24 is out of range 0-23"));
  CHECK(refused("* * 0 * *", "day-of-month: 0 is out of range 1-31"));
  CHECK(refused("* * 32 * *", "day-of-month: 32 is out of range"));
  CHECK(refused("* * * 13 *", "month: 13 is out of range 1-12"));
  CHECK(refused("* * * * 8", "day-of-week: 8 is out of range 0-7"));
  CHECK(refused("*/0 * * * *", "minute: step 0 is out of range"));
  CHECK(refused("*/ * * * *", "minute: a step needs a number"));
  CHECK(refused("5-2 * * * *", "minute: the range 5-2 goes backwards"));
  CHECK(refused("1-2-3 * * * *", "minute: unexpected '-'"));
  CHECK(refused("a * * * *", "minute: \"a\" is not a number"));
  CHECK(refused("* * * foo *", "month: unknown name \"foo\""));
  CHECK(refused("* * * * monday", "day-of-week: unknown name \"monday\""));
  CHECK(refused("* * * * jan", "day-of-week: unknown name \"jan\""));
  CHECK(refused("1,,2 * * * *", "minute: an empty item"));
  CHECK(refused("1, * * * *", "minute: an empty item"));
  CHECK(refused(",1 * * * *", "minute: unexpected ','"));
  CHECK(refused("* * - * *", "day-of-month: unexpected '-'"));
  CHECK(refused("1-* * * * *", "minute: unexpected '*'"));
  CHECK(refused("0 0 30 2 *", "never matches"));
  CHECK(refused("0 0 31 apr,jun,sep,nov *", "never matches"));
  CHECK(refused("@reboot", "unknown macro \"@reboot\""));
  CHECK(refused("@daily x", "unknown macro"));
  CHECK(refused("* * * * 99999999999999999999",
                "day-of-week: 99999999999999999999 is out"));
  /* And what is close to those but fine. */
  coda__cron c;
  char err[200];
  CHECK_EQ_INT(coda__cron_parse("0 0 30 2 mon", &c, err, sizeof err), 0); /* or Mondays */
  CHECK_EQ_INT(coda__cron_parse("0 0 31 * *", &c, err, sizeof err), 0);
  CHECK_EQ_INT(coda__cron_parse("59 23 31 12 7", &c, err, sizeof err), 0);
}

RUN_TESTS(cron_test, TEST_CASE(every_minute_is_strictly_after),
          TEST_CASE(steps_ranges_and_lists), TEST_CASE(month_and_weekday_names),
          TEST_CASE(sunday_is_zero_or_seven), TEST_CASE(day_of_month_or_day_of_week),
          TEST_CASE(month_ends_leap_days_and_year_ends), TEST_CASE(macros),
          TEST_CASE(every_due_time_of_a_span_matches_brute_force),
          TEST_CASE(bad_expressions_are_refused_with_a_clear_error))
