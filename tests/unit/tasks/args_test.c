/*
 * args_test.c - the argument codec (src/tasks/args.c) that the stores and
 * the process workers share.
 *
 * Checks: every argument type survives a round trip, edge values included;
 * the bytes are those coda wrote before the codec had its own file (so old
 * SQLite files still read back); and input cut short anywhere, or corrupt
 * in any way the format can express, is refused rather than read past its
 * end.
 */
#include "coda.h"
#include "tasks/args.h"
#include "test.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static coda__arg str(const char *s) {
  return (coda__arg){.type = 's', .len = (uint32_t)strlen(s), .v.p = s};
}
static coda__arg bytes(const void *p, size_t n) {
  return (coda__arg){.type = 'b', .len = (uint32_t)n, .v.p = p};
}
static coda__arg num(int64_t i) { return (coda__arg){.type = 'i', .v.i = i}; }
static coda__arg real(double d) { return (coda__arg){.type = 'd', .v.d = d}; }

/* Encodes in, decodes it back into out (whose strings live in *store, to
 * be freed); returns the decoded count or a negative code. */
static int round_trip(const coda__arg *in, int n, coda__arg *out, char **store) {
  coda__buf b = {0};
  int rc = coda__args_encode(in, n, &b);
  int nargs = -1;
  size_t need = 0;
  *store = NULL;
  if (rc == 0)
    rc = coda__args_measure(b.base, b.len, &nargs, &need);
  if (rc == 0 && nargs != n)
    rc = CODA_EINVAL;
  if (rc == 0) {
    *store = malloc(need ? need : 1);
    rc = coda__args_decode(b.base, b.len, out, CODA__ARGS_MAX, *store, need);
  }
  coda__buf_free(&b);
  return rc;
}

static int same_arg(const coda__arg *a, const coda__arg *b) {
  if (a->type != b->type)
    return 0;
  switch (a->type) {
  case 'i':
    return a->v.i == b->v.i;
  case 'd':
    return memcmp(&a->v.d, &b->v.d, sizeof(double)) == 0; /* NaN, -0.0 too */
  default:
    return a->len == b->len && (!a->len || memcmp(a->v.p, b->v.p, a->len) == 0) &&
           b->v.p[b->len] == '\0';
  }
}

TEST(every_type_survives_a_round_trip) {
  static const unsigned char blob[] = {0x00, 0xff, 0x00, 'x', 0x80};
  char long_str[70000];
  memset(long_str, 'q', sizeof long_str - 1);
  long_str[sizeof long_str - 1] = '\0';
  coda__arg in[] = {str("hello"),
                    str(""),
                    str(long_str),
                    bytes(blob, sizeof blob),
                    bytes(NULL, 0),
                    num(0),
                    num(INT64_MIN),
                    num(INT64_MAX),
                    num(-1),
                    real(0.0),
                    real(-0.0),
                    real(DBL_MAX),
                    real(DBL_TRUE_MIN),
                    real(-INFINITY),
                    real(NAN),
                    real(3.141592653589793)};
  int n = (int)(sizeof in / sizeof in[0]);
  coda__arg out[CODA__ARGS_MAX];
  char *store;
  CHECK_EQ_INT(round_trip(in, n, out, &store), n);
  for (int i = 0; i < n; i++)
    if (!same_arg(&in[i], &out[i])) {
      fprintf(stderr, "  argument %d (%c) differs\n", i, in[i].type);
      CHECK(0);
    }
  /* The copies are the decoder's own: the encoded bytes are gone. */
  CHECK(out[0].v.p >= store && out[0].v.p < store + 6);
  free(store);
}

TEST(no_arguments_and_the_most_arguments) {
  coda__arg in[CODA__ARGS_MAX + 1], out[CODA__ARGS_MAX];
  for (int i = 0; i <= CODA__ARGS_MAX; i++)
    in[i] = i % 2 ? num(i) : str("s");
  char *store;
  CHECK_EQ_INT(round_trip(in, 0, out, &store), 0);
  free(store);
  CHECK_EQ_INT(round_trip(in, CODA__ARGS_MAX, out, &store), CODA__ARGS_MAX);
  for (int i = 0; i < CODA__ARGS_MAX; i++)
    CHECK(same_arg(&in[i], &out[i]));
  free(store);
  coda__buf b = {0};
  CHECK_EQ_INT(coda__args_encode(in, CODA__ARGS_MAX + 1, &b), CODA_EINVAL);
  coda__arg bad = {.type = 'x'};
  CHECK_EQ_INT(coda__args_encode(&bad, 1, &b), CODA_EINVAL);
  CHECK_EQ_INT(b.len, 0); /* nothing half-written on a refusal */
  coda__buf_free(&b);
}

/* What coda__task_encode_args wrote before this codec existed, for the
 * task ("hi", -2, "a\0b", 1.5): rows of SQLite files written then. The
 * format is in native byte order; these bytes are a little-endian host's. */
static const unsigned char stored_before[] = {
    0x04, 0x73, 0x02, 0x00, 0x00, 0x00, 0x68, 0x69, 0x69, 0xfe, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0x62, 0x03, 0x00, 0x00, 0x00, 0x61, 0x00,
    0x62, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8, 0x3f};

TEST(the_bytes_are_those_already_in_stores) {
  if (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
    return;
  coda__arg in[] = {str("hi"), num(-2), bytes("a\0b", 3), real(1.5)};
  coda__buf b = {0};
  REQUIRE(coda__args_encode(in, 4, &b) == 0);
  CHECK_EQ_INT(b.len, sizeof stored_before);
  CHECK(b.len == sizeof stored_before && memcmp(b.base, stored_before, b.len) == 0);
  coda__buf_free(&b);
  coda__arg out[CODA__ARGS_MAX];
  char dst[16];
  CHECK_EQ_INT(coda__args_decode(stored_before, sizeof stored_before, out, CODA__ARGS_MAX,
                                 dst, sizeof dst),
               4);
  for (int i = 0; i < 4; i++)
    CHECK(same_arg(&in[i], &out[i]));
}

/* Every prefix of a valid encoding is refused, by both calls. */
TEST(truncated_input_is_refused) {
  coda__arg in[] = {str("abc"), num(7), bytes("\1\2", 2), real(2.5)};
  coda__buf b = {0};
  REQUIRE(coda__args_encode(in, 4, &b) == 0);
  coda__arg out[CODA__ARGS_MAX];
  char dst[64];
  for (size_t len = 0; len < b.len; len++) {
    /* A copy of just the prefix, so that ASan sees any read past it. */
    char *cut = malloc(len ? len : 1);
    memcpy(cut, b.base, len);
    int n;
    size_t need;
    if (coda__args_measure(cut, len, &n, &need) != CODA_EINVAL ||
        coda__args_decode(cut, len, out, CODA__ARGS_MAX, dst, sizeof dst) !=
            CODA_EINVAL) {
      fprintf(stderr, "  a prefix of %zu bytes was accepted\n", len);
      CHECK(0);
    }
    free(cut);
  }
  coda__buf_free(&b);
}

static int refused(const void *data, size_t len) {
  coda__arg out[CODA__ARGS_MAX];
  char dst[64];
  int n;
  size_t need;
  return coda__args_measure(data, len, &n, &need) == CODA_EINVAL &&
         coda__args_decode(data, len, out, CODA__ARGS_MAX, dst, sizeof dst) ==
             CODA_EINVAL;
}

TEST(corrupt_input_is_refused) {
  static const unsigned char unknown_type[] = {1, 'x', 0, 0, 0, 0, 0, 0, 0, 0};
  static const unsigned char too_many[] = {CODA__ARGS_MAX + 1};
  static const unsigned char length_past_end[] = {1, 's', 0xff, 0xff, 0xff, 0xff, 'a'};
  static const unsigned char count_past_end[] = {2, 'i', 1, 0, 0, 0, 0, 0, 0, 0};
  static const unsigned char trailing[] = {1, 'i', 1, 0, 0, 0, 0, 0, 0, 0, 0};
  static const unsigned char nul_type[] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  CHECK(refused(unknown_type, sizeof unknown_type));
  CHECK(refused(too_many, sizeof too_many));
  CHECK(refused(length_past_end, sizeof length_past_end));
  CHECK(refused(count_past_end, sizeof count_past_end));
  CHECK(refused(trailing, sizeof trailing));
  CHECK(refused(nul_type, sizeof nul_type));
  CHECK(refused(NULL, 0));
  /* The well-formed one these were made from is accepted. */
  CHECK(!refused(trailing, sizeof trailing - 1));
}

/* Decoding into less room than measured is refused, not overrun. */
TEST(decoding_never_writes_past_the_room_it_is_given) {
  coda__arg in[] = {str("abcdef"), num(1), str("gh")};
  coda__buf b = {0};
  REQUIRE(coda__args_encode(in, 3, &b) == 0);
  int n;
  size_t need;
  REQUIRE(coda__args_measure(b.base, b.len, &n, &need) == 0);
  CHECK_EQ_INT(n, 3);
  CHECK_EQ_INT(need, 7 + 3);
  coda__arg out[3];
  for (size_t cap = 0; cap < need; cap++) {
    char *dst = malloc(cap ? cap : 1);
    CHECK_EQ_INT(coda__args_decode(b.base, b.len, out, 3, dst, cap), CODA_EINVAL);
    free(dst);
  }
  char dst[10];
  CHECK_EQ_INT(coda__args_decode(b.base, b.len, out, 2, dst, sizeof dst), CODA_EINVAL);
  CHECK_EQ_INT(coda__args_decode(b.base, b.len, out, 3, dst, sizeof dst), 3);
  CHECK_EQ_STR(out[2].v.p, "gh");
  coda__buf_free(&b);
}

RUN_TESTS(args, TEST_CASE(every_type_survives_a_round_trip),
          TEST_CASE(no_arguments_and_the_most_arguments),
          TEST_CASE(the_bytes_are_those_already_in_stores),
          TEST_CASE(truncated_input_is_refused), TEST_CASE(corrupt_input_is_refused),
          TEST_CASE(decoding_never_writes_past_the_room_it_is_given))
