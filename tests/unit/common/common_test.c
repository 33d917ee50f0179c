/*
 * common_test.c - the small shared pieces: error table, arena, buffers,
 * log line format, intrusive queue.
 */
#include "common/arena.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/log.h"
#include "common/queue.h"
#include "test.h"

#include <stdint.h>

TEST(errors_have_names) {
  CHECK_EQ_STR(coda_strerror(0), "success");
  CHECK_EQ_STR(coda_strerror(CODA_ENOMEM), "out of memory");
  CHECK_EQ_STR(coda_strerror(CODA_EFULL), "queue full");
  CHECK_EQ_STR(coda_strerror(-9999), "not a coda error code");
  CHECK_EQ_STR(coda_version(), "0.1.0");
}

/* A handler or task that returns -1 is not "out of memory": no CODA_E*
 * code is a small negative number, and the log says what was returned. */
TEST(a_plain_minus_one_is_not_a_coda_error) {
  char buf[64];
  CHECK(!coda__is_error_code(-1));
  CHECK(coda__is_error_code(CODA_ENOMEM));
  for (int rc = -1; rc >= -100; rc--)
    CHECK(!coda__is_error_code(rc));
  CHECK_EQ_STR(coda__describe_rc(-1, buf, sizeof buf), "returned -1 (not a CODA_E* code)");
  CHECK_EQ_STR(coda__describe_rc(CODA_EFULL, buf, sizeof buf), "queue full");
}

TEST(arena_uses_the_inline_block_first_then_the_heap) {
  _Alignas(16) char block[256];
  coda__arena a;
  coda__arena_init(&a, block, sizeof block);
  char *p = coda__arena_alloc(&a, 10);
  char *q = coda__arena_alloc(&a, 10);
  CHECK(p == block);
  CHECK(q == block + 16); /* 16-byte aligned */
  char *big = coda__arena_alloc(&a, 1000);
  CHECK(big && (big < block || big >= block + sizeof block));
  CHECK(a.extra != NULL);
  memset(big, 1, 1000);
  char *s = coda__arena_strndup(&a, "hello world", 5);
  CHECK_EQ_STR(s, "hello");
  coda__arena_reset(&a);
  CHECK(a.extra == NULL);
  CHECK(coda__arena_alloc(&a, 8) == block);
}

TEST(buf_grows_and_formats_numbers) {
  coda__buf b = {0};
  CHECK_EQ_INT(coda__buf_append_lit(&b, "n="), 0);
  coda__buf_append_u64(&b, 0);
  coda__buf_append_lit(&b, ",");
  coda__buf_append_u64(&b, UINT64_MAX);
  coda__buf_append_lit(&b, ",");
  coda__buf_append_hex(&b, 255);
  CHECK(b.len == strlen("n=0,18446744073709551615,ff"));
  CHECK(memcmp(b.base, "n=0,18446744073709551615,ff", b.len) == 0);
  size_t cap = b.cap;
  for (int i = 0; i < 1000; i++)
    coda__buf_append_lit(&b, "0123456789");
  CHECK(b.cap > cap);
  CHECK_EQ_INT(b.len, 27 + 10000);
  coda__buf_free(&b);
  CHECK(b.base == NULL);
}

static size_t fmt(char *buf, size_t cap, coda_log_level level, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  size_t n = coda__log_format(buf, cap, level, f, ap);
  va_end(ap);
  return n;
}

TEST(log_lines_use_the_seeds_prefixes_and_truncate) {
  char line[64];
  size_t n = fmt(line, sizeof line, CODA_LOG_INFO, "hello %d", 42);
  CHECK(n == strlen("INFO:     hello 42\n") && memcmp(line, "INFO:     hello 42\n", n) == 0);
  n = fmt(line, sizeof line, CODA_LOG_ERROR, "%s", "x");
  CHECK(memcmp(line, "ERROR:    x\n", n) == 0);
  n = fmt(line, sizeof line, CODA_LOG_WARN,
          "a very long message that does not fit in sixty-four bytes at all");
  CHECK(n <= sizeof line);
  CHECK(line[n - 1] == '\n');
}

typedef struct item {
  int v;
  coda__queue link;
} item;

TEST(queue_links_and_unlinks) {
  coda__queue head;
  coda__queue_init(&head);
  CHECK(coda__queue_empty(&head));
  item a = {1, {0}}, b = {2, {0}}, c = {3, {0}};
  coda__queue_insert_tail(&head, &a.link);
  coda__queue_insert_tail(&head, &b.link);
  coda__queue_insert_tail(&head, &c.link);
  coda__queue_remove(&b.link);
  int sum = 0, order = 0;
  coda__queue *q;
  coda__queue_foreach(q, &head) {
    item *it = coda__container_of(q, item, link);
    order = order * 10 + it->v;
    sum += it->v;
  }
  CHECK_EQ_INT(order, 13);
  CHECK_EQ_INT(sum, 4);
}

RUN_TESTS(common, TEST_CASE(errors_have_names), TEST_CASE(a_plain_minus_one_is_not_a_coda_error),
          TEST_CASE(arena_uses_the_inline_block_first_then_the_heap),
          TEST_CASE(buf_grows_and_formats_numbers),
          TEST_CASE(log_lines_use_the_seeds_prefixes_and_truncate),
          TEST_CASE(queue_links_and_unlinks))
