/*
 * metrics_test.c - the metrics registry: the text format (HELP, TYPE,
 * buckets, sum, count), escaping, bounded labels, and per-thread shards
 * merged at scrape time.
 */
#include "common/metrics.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char *const methods[] = {"GET", "POST", "OTHER", NULL};

static char *render(coda__metrics *m) {
  coda__buf b = {0};
  if (coda__metrics_render(m, &b) != 0 || coda__buf_append(&b, "", 1) != 0) {
    coda__buf_free(&b);
    return NULL;
  }
  return b.base;
}

TEST(counter_renders_help_type_and_series) {
  coda__metrics *m = coda__metrics_new();
  REQUIRE(m);
  coda__metric_label labels[] = {{"method", methods, 0}, {"route", NULL, 4}};
  coda__metric *f =
      coda__metrics_counter(m, "coda_test_total", "Requests \\ served\nby x", 2, labels);
  REQUIRE(f);
  int route = coda__metric_intern(f, 1, "/users/{id}");
  CHECK_EQ_INT(route, 0);
  CHECK_EQ_INT(coda__metric_intern(f, 1, "/users/{id}"), 0);
  coda__metric_add(f, coda__metric_series(f, (int[]){0, route}), 2);
  coda__metric_add(f, coda__metric_series(f, (int[]){1, route}), 1);
  char *text = render(m);
  REQUIRE(text);
  CHECK_EQ_STR(text, "# HELP coda_test_total Requests \\\\ served\\nby x\n"
                     "# TYPE coda_test_total counter\n"
                     "coda_test_total{method=\"GET\",route=\"/users/{id}\"} 2\n"
                     "coda_test_total{method=\"POST\",route=\"/users/{id}\"} 1\n");
  free(text);
  coda__metrics_free(m);
}

TEST(label_values_are_escaped) {
  coda__metrics *m = coda__metrics_new();
  coda__metric_label l = {"task", NULL, 4};
  coda__metric *f = coda__metrics_counter(m, "coda_x_total", "x", 1, &l);
  REQUIRE(f);
  int v = coda__metric_intern(f, 0, "a\"b\\c\nd");
  coda__metric_add(f, coda__metric_series(f, &v), 1);
  char *text = render(m);
  REQUIRE(text);
  CHECK(strstr(text, "coda_x_total{task=\"a\\\"b\\\\c\\nd\"} 1\n") != NULL);
  free(text);
  coda__metrics_free(m);
}

TEST(histogram_has_cumulative_buckets_sum_and_count) {
  coda__metrics *m = coda__metrics_new();
  static const double bounds[] = {0.001, 0.01, 0.1};
  coda__metric *f = coda__metrics_histogram(m, "coda_d_seconds", "d", 0, NULL, bounds, 3);
  REQUIRE(f);
  coda__metric_observe_ns(f, 0, 500000);     /* 0.0005 s */
  coda__metric_observe_ns(f, 0, 1000000);    /* 0.001 s: le is inclusive */
  coda__metric_observe_ns(f, 0, 50000000);   /* 0.05 s */
  coda__metric_observe_ns(f, 0, 2000000000); /* 2 s: only +Inf */
  char *text = render(m);
  REQUIRE(text);
  CHECK_EQ_STR(text, "# HELP coda_d_seconds d\n"
                     "# TYPE coda_d_seconds histogram\n"
                     "coda_d_seconds_bucket{le=\"0.001\"} 2\n"
                     "coda_d_seconds_bucket{le=\"0.01\"} 2\n"
                     "coda_d_seconds_bucket{le=\"0.1\"} 3\n"
                     "coda_d_seconds_bucket{le=\"+Inf\"} 4\n"
                     "coda_d_seconds_sum 2.0515\n"
                     "coda_d_seconds_count 4\n");
  CHECK_EQ_INT(coda__metric_value(f, 0), 4);
  free(text);
  coda__metrics_free(m);
}

/* Whatever the traffic, an interned label keeps cap values: the rest count
 * as "other", and nothing is lost. */
TEST(labels_stay_bounded) {
  coda__metrics *m = coda__metrics_new();
  coda__metric_label l = {"route", NULL, 3};
  coda__metric *f = coda__metrics_counter(m, "coda_r_total", "r", 1, &l);
  REQUIRE(f);
  char name[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(name, sizeof name, "/r%d", i);
    int v = coda__metric_intern(f, 0, name);
    CHECK(v >= 0 && v < 3);
    coda__metric_add(f, coda__metric_series(f, &v), 1);
  }
  char *text = render(m);
  REQUIRE(text);
  CHECK_EQ_STR(text, "# HELP coda_r_total r\n# TYPE coda_r_total counter\n"
                     "coda_r_total{route=\"/r0\"} 1\n"
                     "coda_r_total{route=\"/r1\"} 1\n"
                     "coda_r_total{route=\"other\"} 998\n");
  free(text);
  coda__metrics_free(m);
}

typedef struct {
  coda__metrics *m;
  coda__metric *f;
  coda__metric *h;
  int slot;
} worker_arg;

static void count_a_lot(void *p) {
  worker_arg *a = p;
  int v = a->slot;
  size_t s = coda__metric_series(a->f, &v);
  for (int i = 0; i < 100000; i++) {
    coda__metric_add(a->f, s, 1);
    coda__metric_observe_ns(a->h, 0, (uint64_t)i);
  }
}

/* Each thread counts into its own shard; a scrape adds them up. More
 * threads than shards share the last one (atomically). */
TEST(shards_merge_at_scrape) {
  coda__metrics *m = coda__metrics_new();
  static const char *const kinds[] = {"a", "b", NULL};
  coda__metric_label l = {"kind", kinds, 0};
  static const double bounds[] = {0.00001};
  worker_arg a = {m, coda__metrics_counter(m, "coda_s_total", "s", 1, &l),
                  coda__metrics_histogram(m, "coda_h_seconds", "h", 0, NULL, bounds, 1),
                  1};
  REQUIRE(a.f && a.h);
  enum { N = CODA__METRICS_SHARDS + 8 };
  uv_thread_t th[N];
  for (int i = 0; i < N; i++)
    REQUIRE(uv_thread_create(&th[i], count_a_lot, &a) == 0);
  for (int i = 0; i < N; i++)
    uv_thread_join(&th[i]);
  CHECK_EQ_INT(coda__metric_value(a.f, 1), (long long)N * 100000);
  CHECK_EQ_INT(coda__metric_value(a.f, 0), 0);
  CHECK_EQ_INT(coda__metric_value(a.h, 0), (long long)N * 100000);
  char *text = render(m);
  REQUIRE(text);
  char want[128];
  snprintf(want, sizeof want, "coda_s_total{kind=\"b\"} %lld\n", (long long)N * 100000);
  CHECK(strstr(text, want) != NULL);
  CHECK(strstr(text, "kind=\"a\"") == NULL); /* never counted: not shown */
  snprintf(want, sizeof want, "coda_h_seconds_bucket{le=\"1e-05\"} %lld\n",
           (long long)N * 10001);
  CHECK(strstr(text, want) != NULL);
  free(text);
  coda__metrics_free(m);
}

/* Off (CODA_OPT_METRICS 0) counts nothing; a family registered once the
 * layout is frozen is refused, and a NULL family is a no-op. */
TEST(off_frozen_and_null) {
  coda__metrics *m = coda__metrics_new();
  coda__metric *f = coda__metrics_counter(m, "coda_o_total", "o", 0, NULL);
  REQUIRE(f);
  CHECK(coda__metrics_counter(m, "coda_o_total", "dup", 0, NULL) == NULL);
  coda__metrics_enable(m, 0);
  coda__metric_add(f, 0, 5);
  CHECK_EQ_INT(coda__metric_value(f, 0), 0);
  coda__metrics_enable(m, 1);
  coda__metric_add(f, 0, 5);
  CHECK_EQ_INT(coda__metric_value(f, 0), 5);
  CHECK(coda__metrics_counter(m, "coda_late_total", "late", 0, NULL) == NULL);
  coda__metric_add(NULL, 0, 1);
  coda__metric_observe_ns(NULL, 0, 1);
  CHECK_EQ_INT(coda__metric_intern(NULL, 0, "x"), -1);
  coda__metrics_free(m);
}

static void gauges(void *data, coda__buf *out) {
  const char *names[] = {"queue"}, *values[] = {data};
  coda__metrics_head(out, "coda_g", "g", "gauge");
  coda__metrics_sample(out, "coda_g", 1, names, values, 1.5);
}

TEST(collectors_follow_the_families) {
  coda__metrics *m = coda__metrics_new();
  CHECK_EQ_INT(coda__metrics_add_collector(m, gauges, "q\"1"), 0);
  char *text = render(m);
  REQUIRE(text);
  CHECK_EQ_STR(text,
               "# HELP coda_g g\n# TYPE coda_g gauge\ncoda_g{queue=\"q\\\"1\"} 1.5\n");
  free(text);
  coda__metrics_free(m);
}

RUN_TESTS(metrics, TEST_CASE(counter_renders_help_type_and_series),
          TEST_CASE(label_values_are_escaped),
          TEST_CASE(histogram_has_cumulative_buckets_sum_and_count),
          TEST_CASE(labels_stay_bounded), TEST_CASE(shards_merge_at_scrape),
          TEST_CASE(off_frozen_and_null), TEST_CASE(collectors_follow_the_families))
