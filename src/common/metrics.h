/*
 * metrics.h - a registry of counter and histogram families with bounded
 * label sets, rendered in the Prometheus text format 0.0.4.
 *
 * Counting is meant for hot paths (every request, every task), so a count
 * touches memory only the counting thread writes: each thread takes a shard
 * of the registry's cells on its first count (a thread-local cache maps
 * registry -> shard) and bumps its own cells with a relaxed load and a
 * relaxed store, which compile to plain moves, never a locked instruction.
 * A scrape sums every shard. Threads past CODA__METRICS_SHARDS share one
 * last shard, bumped with relaxed fetch-adds.
 *
 * Labels are bounded whatever the traffic: a label is either an
 * enumeration fixed at registration (its values are known: methods, status
 * classes, outcomes) or interned into a table of `cap` values per family,
 * whose last slot is the value "other": a value past the table counts
 * there. A family's series are every combination of its labels' slots,
 * laid out densely (mixed radix), so a count is an index computation and
 * an add; families should keep that product small (a few thousand).
 *
 * Lifecycle: families are registered at configuration time, on one thread,
 * before any count; the registry's layout is frozen at the first count or
 * scrape, after which registering fails (NULL). Every counting function
 * takes a NULL family and then does nothing, so a layer may count into a
 * family that could not be made. Counting, interning and rendering are
 * thread-safe.
 */
#ifndef CODA_COMMON_METRICS_H
#define CODA_COMMON_METRICS_H

#include "common/buf.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define CODA__METRICS_SHARDS 128 /* threads with a shard of their own */
#define CODA__METRIC_MAX_LABELS 4
#define CODA__METRIC_MAX_BUCKETS 16

typedef struct coda__metrics coda__metrics;
typedef struct coda__metric coda__metric;
typedef _Atomic uint64_t coda__metric_cell;

typedef enum { CODA__METRIC_COUNTER, CODA__METRIC_HISTOGRAM } coda__metric_type;

/* One label of a family: an enumeration (`values`, NULL-terminated, the
 * caller passes the index) or an interned label (`values` NULL, up to
 * `cap` values of which the last is "other"; cap >= 2). */
typedef struct coda__metric_label {
  const char *name;
  const char *const *values;
  int cap;
} coda__metric_label;

/* Where a thread counts: its own cells, or the shared last shard. */
typedef struct coda__metric_shard {
  uint64_t registry; /* the registry's id: ids are never reused */
  coda__metric_cell *cells;
  int shared;
} coda__metric_shard;

struct coda__metric {
  coda__metrics *m;
  coda__metric_type type;
  char *name;
  char *help;
  int nlabels;
  coda__metric_label labels[CODA__METRIC_MAX_LABELS];
  int radix[CODA__METRIC_MAX_LABELS]; /* slots of each label */
  /* Interned labels: their values (slot cap-1 holds "other"), published
   * with a release store under the registry's mutex, read without it. */
  _Atomic(char *) *interned[CODA__METRIC_MAX_LABELS];
  int nbounds; /* histograms: upper bounds, then +Inf */
  double bounds[CODA__METRIC_MAX_BUCKETS];
  uint64_t bounds_ns[CODA__METRIC_MAX_BUCKETS];
  size_t nseries;
  size_t width;  /* cells per series: 1, or buckets + 1 (+Inf) + 1 (sum, ns) */
  size_t offset; /* first cell in a shard */
};

/* Appends families computed at scrape time (gauges) to `out`, with
 * coda__metrics_head() and coda__metrics_sample(). Called on the scraping
 * thread, in registration order, after the registry's own families. */
typedef void (*coda__metrics_collect_fn)(void *data, coda__buf *out);

#define CODA__METRICS_FAMILIES 32
#define CODA__METRICS_COLLECTORS 8

/* Lock rule: `mu` protects registration, interning and shard claims; the
 * cells are atomics (see above); `on`, `id`, the families' layout and
 * `ncells` are written before the first count and only read after. */
struct coda__metrics {
  uint64_t id;
  int on;
  uv_mutex_t mu;
  atomic_int frozen;
  coda__metric *families[CODA__METRICS_FAMILIES];
  int nfamilies;
  size_t ncells; /* per shard */
  _Atomic(coda__metric_cell *) shards[CODA__METRICS_SHARDS];
  int nshards; /* under mu */
  struct {
    coda__metrics_collect_fn fn;
    void *data;
  } collectors[CODA__METRICS_COLLECTORS];
  int ncollectors;
};

/* A new empty registry, or NULL. Counting is on (coda__metrics_enable). */
coda__metrics *coda__metrics_new(void);
/* Frees the registry and its shards. No thread may count into it any more. */
void coda__metrics_free(coda__metrics *m);

/* Turns counting on or off (CODA_OPT_METRICS): off, every count returns at
 * once. Configuration time (a plain field, read by every counter). */
void coda__metrics_enable(coda__metrics *m, int on);
static inline int coda__metrics_on(const coda__metrics *m) { return m && m->on; }

/* Registers a family. `name` and `help` are copied; `labels` is copied,
 * but an enumeration's values must live as long as the registry (static
 * tables). Histogram `bounds` are in seconds, increasing, at most
 * CODA__METRIC_MAX_BUCKETS; +Inf is implied. NULL if the registry is
 * frozen or full, a name is taken, or out of memory. */
coda__metric *coda__metrics_counter(coda__metrics *m, const char *name, const char *help,
                                    int nlabels, const coda__metric_label *labels);
coda__metric *coda__metrics_histogram(coda__metrics *m, const char *name,
                                      const char *help, int nlabels,
                                      const coda__metric_label *labels,
                                      const double *bounds, int nbounds);

/* Adds a collector (at most 8). 0, CODA_ELIMIT. Configuration time. */
int coda__metrics_add_collector(coda__metrics *m, coda__metrics_collect_fn fn,
                                void *data);

/* The slot of `value` for interned label `label` of f: interned on first
 * sight (a mutex, once per value), then found without a lock. Once the
 * table is full, the slot of "other". -1 for a NULL family. */
int coda__metric_intern(coda__metric *f, int label, const char *value);

/* The series for one slot of each label (enumeration index, or interned
 * slot); an out-of-range slot is taken as the label's last. */
static inline size_t coda__metric_series(const coda__metric *f, const int *slots) {
  size_t s = 0;
  for (int i = 0; i < f->nlabels; i++) {
    int v = slots[i];
    if (v < 0 || v >= f->radix[i])
      v = f->radix[i] - 1;
    s = s * (size_t)f->radix[i] + (size_t)v;
  }
  return s;
}

/* The calling thread's shard of the registry (slow path of the cache). */
coda__metric_shard *coda__metrics_shard_slow(coda__metrics *m);

extern _Thread_local coda__metric_shard coda__metrics_tls[4];

static inline coda__metric_shard *coda__metrics_shard(coda__metrics *m, uint64_t id) {
  if (coda__metrics_tls[0].registry == id)
    return &coda__metrics_tls[0];
  return coda__metrics_shard_slow(m);
}

static inline void coda__metric_cell_add(const coda__metric_shard *sh, size_t i,
                                         uint64_t n) {
  coda__metric_cell *c = sh->cells + i;
  if (sh->shared)
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
  else /* only this thread writes it: no read-modify-write needed */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Counts n for a series of a counter. Any thread. */
void coda__metric_add(coda__metric *f, size_t series, uint64_t n);

/* Observes a duration, in nanoseconds, for a series of a histogram. Any
 * thread. */
void coda__metric_observe_ns(coda__metric *f, size_t series, uint64_t ns);

/* Reads a series' total over every shard (a counter's value, a histogram's
 * count). For tests and summaries; any thread. */
uint64_t coda__metric_value(coda__metric *f, size_t series);

/* Appends every family (those with no count yet show no series) and then
 * the collectors' output to `out`. 0 or CODA_ENOMEM. Any thread. */
int coda__metrics_render(coda__metrics *m, coda__buf *out);

/* -- for collectors -- */

/* "# HELP name help\n# TYPE name type\n", help escaped. */
int coda__metrics_head(coda__buf *out, const char *name, const char *help,
                       const char *type);
/* One sample line: name{l1="v1",...} value, values escaped ("\\", "\"",
 * "\n"). nlabels may be 0. */
int coda__metrics_sample(coda__buf *out, const char *name, int nlabels,
                         const char *const *names, const char *const *values,
                         double value);
/* Appends a label value escaped per the text format. */
int coda__metrics_escape(coda__buf *out, const char *value, int help);

#endif /* CODA_COMMON_METRICS_H */
