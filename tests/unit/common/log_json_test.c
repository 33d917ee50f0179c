/*
 * log_json_test.c - the JSON log format (CODA_OPT_LOG_FORMAT 1): every
 * line is one whole JSON object whatever the message holds (quotes,
 * control characters, bytes that are not UTF-8, 10 kB), with its time in
 * RFC 3339 UTC and ms, and the task fields of the thread's scope.
 * Each line is parsed back with jansson.
 */
#include "test.h"

#include "common/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static size_t jfmt(char *buf, size_t cap, coda_log_level level, const coda__log_fields *f,
                   const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t n = coda__log_format_json(buf, cap, level, f, fmt, ap);
  va_end(ap);
  return n;
}

/* The line as a JSON object (one line, ending in \n), or NULL. */
static json_t *parse_line(const char *buf, size_t n) {
  if (n == 0 || buf[n - 1] != '\n' || memchr(buf, '\n', n - 1))
    return NULL;
  json_error_t err;
  json_t *j = json_loadb(buf, n - 1, 0, &err);
  if (!j)
    fprintf(stderr, "not JSON (%s): %.*s\n", err.text, (int)n, buf);
  return j;
}

TEST(escaping_keeps_every_line_valid_json) {
  char out[64];
  size_t used;
  static const char plain[] = "a\"b\\c\n\x01\x7f";
  size_t n = coda__json_escape(out, sizeof out, plain, sizeof plain - 1, &used);
  CHECK_EQ_INT((int)used, (int)sizeof plain - 1);
  out[n] = '\0';
  CHECK_EQ_STR(out, "a\\\"b\\\\c\\n\\u0001\\u007f");
  /* UTF-8 passes; a stray byte, a truncated sequence, an overlong form
   * and a surrogate each become U+FFFD. */
  static const char mixed[] = "\xc3\xa9|\xff|\xe2\x82|\xc0\xaf|\xed\xa0\x80";
  n = coda__json_escape(out, sizeof out, mixed, sizeof mixed - 1, NULL);
  out[n] = '\0';
  CHECK_EQ_STR(out,
               "\xc3\xa9|\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd");
  /* Cut short, never inside an escape. */
  n = coda__json_escape(out, 7, "ab\"\"\"", 5, &used);
  CHECK_EQ_INT((int)n, 6);
  CHECK_EQ_INT((int)used, 4);
}

TEST(time_is_rfc3339_utc_with_milliseconds) {
  char t[25];
  coda__log_time(t, 1005);
  CHECK_EQ_STR(t, "1970-01-01T00:00:01.005Z");
  coda__log_time(t, 1796383977123LL);
  CHECK_EQ_STR(t, "2026-12-04T11:32:57.123Z");
  coda__log_time(t, 1796383977999LL); /* the same second, from the cache */
  CHECK_EQ_STR(t, "2026-12-04T11:32:57.999Z");
}

TEST(a_line_has_time_level_message_and_the_task_fields) {
  char buf[4096];
  coda__log_fields f = {.request_id = 42,
                        .task_id = 18446744073709551615ull,
                        .task_name = "send \"mail\"",
                        .attempt = 3,
                        .trace =
                            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"};
  size_t n = jfmt(buf, sizeof buf, CODA_LOG_WARN, &f, "disk %s at %d%%", "full\n", 99);
  json_t *j = parse_line(buf, n);
  REQUIRE(j != NULL);
  CHECK_EQ_STR(json_string_value(json_object_get(j, "level")), "warning");
  CHECK_EQ_STR(json_string_value(json_object_get(j, "message")), "disk full\n at 99%");
  const char *time = json_string_value(json_object_get(j, "time"));
  REQUIRE(time != NULL);
  CHECK(strlen(time) == 24 && time[10] == 'T' && time[19] == '.' && time[23] == 'Z');
  CHECK_EQ_STR(json_string_value(json_object_get(j, "request_id")), "42");
  /* Ids are strings: a Redis id may pass 2^53. */
  CHECK_EQ_STR(json_string_value(json_object_get(j, "task_id")), "18446744073709551615");
  CHECK_EQ_STR(json_string_value(json_object_get(j, "task")), "send \"mail\"");
  CHECK_EQ_INT((int)json_integer_value(json_object_get(j, "attempt")), 3);
  CHECK_EQ_STR(json_string_value(json_object_get(j, "trace_id")),
               "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK_EQ_STR(json_string_value(json_object_get(j, "span_id")), "00f067aa0ba902b7");
  json_decref(j);
  /* Without fields: none of their members. */
  n = jfmt(buf, sizeof buf, CODA_LOG_INFO, NULL, "plain");
  j = parse_line(buf, n);
  REQUIRE(j != NULL);
  CHECK_EQ_INT((int)json_object_size(j), 3);
  json_decref(j);
}

TEST(a_long_or_hostile_message_still_closes_the_object) {
  static char big[10000];
  memset(big, '"', sizeof big - 1);
  char buf[4096];
  coda__log_fields f = {.task_id = 7, .task_name = "t", .attempt = 1};
  size_t n = jfmt(buf, sizeof buf, CODA_LOG_ERROR, &f, "%s", big);
  CHECK(n <= sizeof buf);
  json_t *j = parse_line(buf, n);
  REQUIRE(j != NULL);
  CHECK(strlen(json_string_value(json_object_get(j, "message"))) > 1000);
  CHECK_EQ_STR(json_string_value(json_object_get(j, "task_id")), "7");
  json_decref(j);
  n = jfmt(buf, sizeof buf, CODA_LOG_ERROR, NULL, "bad \xff\xfe bytes \x1b[31m red");
  j = parse_line(buf, n);
  REQUIRE(j != NULL);
  CHECK_EQ_STR(json_string_value(json_object_get(j, "message")),
               "bad \xef\xbf\xbd\xef\xbf\xbd bytes \x1b[31m red");
  json_decref(j);
}

/* A logger in the JSON format takes the fields of the thread's scope (set
 * by a task's executor) for lines that carry none of their own. */
TEST(lines_logged_in_a_scope_carry_its_fields) {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  coda__logger lg;
  REQUIRE(coda__logger_init(&lg, sv[0], 1 << 16) == 0);
  lg.format = CODA__LOG_JSON; /* not started: lines are written through */
  coda__log_fields f = {.task_id = 9, .task_name = "scoped", .attempt = 2};
  const coda__log_fields *outer = coda__log_scope(&f);
  coda__log(&lg, CODA_LOG_INFO, CODA_LOG_INFO, "inside %d", 1);
  coda__log_scope(outer);
  coda__log(&lg, CODA_LOG_INFO, CODA_LOG_INFO, "outside");
  coda__log(&lg, CODA_LOG_INFO, CODA_LOG_DEBUG, "below the level");
  char buf[4096];
  size_t got = 0, lines = 0;
  while (lines < 2) { /* the socket has both lines already: written through */
    ssize_t r = read(sv[1], buf + got, sizeof buf - 1 - got);
    REQUIRE(r > 0);
    for (ssize_t i = 0; i < r; i++)
      lines += buf[got + (size_t)i] == '\n';
    got += (size_t)r;
  }
  buf[got] = '\0';
  char *nl = strchr(buf, '\n');
  json_t *in = parse_line(buf, (size_t)(nl + 1 - buf));
  json_t *out = parse_line(nl + 1, strlen(nl + 1));
  REQUIRE(in != NULL && out != NULL);
  CHECK_EQ_STR(json_string_value(json_object_get(in, "task")), "scoped");
  CHECK_EQ_INT((int)json_integer_value(json_object_get(in, "attempt")), 2);
  CHECK(json_object_get(out, "task") == NULL);
  CHECK_EQ_STR(json_string_value(json_object_get(out, "message")), "outside");
  json_decref(in);
  json_decref(out);
  coda__logger_free(&lg);
  close(sv[0]);
  close(sv[1]);
}

RUN_TESTS(log_json, TEST_CASE(escaping_keeps_every_line_valid_json),
          TEST_CASE(time_is_rfc3339_utc_with_milliseconds),
          TEST_CASE(a_line_has_time_level_message_and_the_task_fields),
          TEST_CASE(a_long_or_hostile_message_still_closes_the_object),
          TEST_CASE(lines_logged_in_a_scope_carry_its_fields))
