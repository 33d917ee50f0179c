/*
 * metrics.c - the metrics registry: families, interned labels, per-thread
 * shards of cells, and the Prometheus text format 0.0.4 (see metrics.h).
 *
 * Threads: registration on the configuring thread; counts on any thread,
 * each into its own shard; interning, shard claims and scrapes on any
 * thread, under `mu` for what they change. A scrape reads other threads'
 * cells with relaxed loads: each total is exact for the counts that
 * happened before it, and a series' buckets may be a count apart from its
 * _count while a histogram is being observed (Prometheus tolerates that).
 */
#include "common/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Thread_local coda__metric_shard coda__metrics_tls[4];

static atomic_ullong next_registry_id = 1;

coda__metrics *coda__metrics_new(void) {
  coda__metrics *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  if (uv_mutex_init(&m->mu) != 0) {
    free(m);
    return NULL;
  }
  m->id = atomic_fetch_add(&next_registry_id, 1);
  m->on = 1;
  return m;
}

static void family_free(coda__metric *f) {
  for (int i = 0; i < f->nlabels; i++) {
    if (!f->interned[i])
      continue;
    for (int v = 0; v < f->labels[i].cap; v++)
      free(atomic_load(&f->interned[i][v]));
    free(f->interned[i]);
  }
  free(f->name);
  free(f->help);
  free(f);
}

void coda__metrics_free(coda__metrics *m) {
  if (!m)
    return;
  for (int i = 0; i < m->nfamilies; i++)
    family_free(m->families[i]);
  for (int i = 0; i < CODA__METRICS_SHARDS; i++)
    free(atomic_load(&m->shards[i]));
  uv_mutex_destroy(&m->mu);
  free(m);
}

void coda__metrics_enable(coda__metrics *m, int on) {
  if (m)
    m->on = on != 0;
}

/* ---- registration ----------------------------------------------------- */

static int name_taken(const coda__metrics *m, const char *name) {
  for (int i = 0; i < m->nfamilies; i++)
    if (strcmp(m->families[i]->name, name) == 0)
      return 1;
  return 0;
}

/* Sets up a label's slots; an interned label gets its table with "other"
 * in the last slot. */
static int label_init(coda__metric *f, int i, const coda__metric_label *l) {
  f->labels[i] = *l;
  if (l->values) {
    int n = 0;
    while (l->values[n])
      n++;
    f->radix[i] = n;
    return n > 0 ? 0 : CODA_EINVAL;
  }
  if (l->cap < 2)
    return CODA_EINVAL;
  f->radix[i] = l->cap;
  f->interned[i] = calloc((size_t)l->cap, sizeof *f->interned[i]);
  char *other = strdup("other");
  if (!f->interned[i] || !other) {
    free(other);
    return CODA_ENOMEM;
  }
  atomic_init(&f->interned[i][l->cap - 1], other);
  return 0;
}

static coda__metric *family_new(coda__metrics *m, coda__metric_type type,
                                const char *name, const char *help, int nlabels,
                                const coda__metric_label *labels, const double *bounds,
                                int nbounds) {
  if (!m || nlabels < 0 || nlabels > CODA__METRIC_MAX_LABELS || nbounds < 0 ||
      nbounds > CODA__METRIC_MAX_BUCKETS)
    return NULL;
  coda__metric *f = calloc(1, sizeof *f);
  if (!f)
    return NULL;
  f->m = m;
  f->type = type;
  f->name = strdup(name);
  f->help = strdup(help ? help : "");
  int rc = f->name && f->help ? 0 : CODA_ENOMEM;
  f->nseries = 1;
  for (int i = 0; i < nlabels && rc == 0; i++) {
    f->nlabels = i + 1; /* so that family_free() sees what was made */
    rc = label_init(f, i, &labels[i]);
    f->nseries *= (size_t)f->radix[i];
  }
  f->nlabels = nlabels;
  for (int i = 0; i < nbounds && rc == 0; i++) {
    if (!(bounds[i] > 0) || (i && bounds[i] <= bounds[i - 1]))
      rc = CODA_EINVAL;
    f->bounds[i] = bounds[i];
    f->bounds_ns[i] = (uint64_t)(bounds[i] * 1e9 + 0.5);
  }
  f->nbounds = nbounds;
  f->width = type == CODA__METRIC_HISTOGRAM ? (size_t)nbounds + 2 : 1;
  uv_mutex_lock(&m->mu);
  if (rc == 0 && (atomic_load(&m->frozen) || m->nfamilies == CODA__METRICS_FAMILIES ||
                  name_taken(m, name)))
    rc = CODA_ESTATE;
  if (rc == 0) {
    f->offset = m->ncells;
    m->ncells += f->nseries * f->width;
    m->families[m->nfamilies++] = f;
  }
  uv_mutex_unlock(&m->mu);
  if (rc) {
    family_free(f);
    return NULL;
  }
  return f;
}

coda__metric *coda__metrics_counter(coda__metrics *m, const char *name, const char *help,
                                    int nlabels, const coda__metric_label *labels) {
  return family_new(m, CODA__METRIC_COUNTER, name, help, nlabels, labels, NULL, 0);
}

coda__metric *coda__metrics_histogram(coda__metrics *m, const char *name,
                                      const char *help, int nlabels,
                                      const coda__metric_label *labels,
                                      const double *bounds, int nbounds) {
  return family_new(m, CODA__METRIC_HISTOGRAM, name, help, nlabels, labels, bounds,
                    nbounds);
}

int coda__metrics_add_collector(coda__metrics *m, coda__metrics_collect_fn fn,
                                void *data) {
  if (!m || m->ncollectors == CODA__METRICS_COLLECTORS)
    return CODA_ELIMIT;
  m->collectors[m->ncollectors].fn = fn;
  m->collectors[m->ncollectors].data = data;
  m->ncollectors++;
  return 0;
}

/* ---- labels ----------------------------------------------------------- */

static int find_interned(coda__metric *f, int label, const char *value) {
  int last = f->labels[label].cap - 1;
  for (int v = 0; v < last; v++) {
    const char *s = atomic_load_explicit(&f->interned[label][v], memory_order_acquire);
    if (!s)
      return -1 - v; /* the first free slot, encoded */
    if (strcmp(s, value) == 0)
      return v;
  }
  return last; /* full: "other" */
}

int coda__metric_intern(coda__metric *f, int label, const char *value) {
  if (!f || label < 0 || label >= f->nlabels || !f->interned[label])
    return -1;
  if (!value)
    value = "";
  int v = find_interned(f, label, value);
  if (v >= 0)
    return v;
  uv_mutex_lock(&f->m->mu);
  v = find_interned(f, label, value); /* another thread may have added it */
  if (v < 0) {
    char *copy = strdup(value);
    v = copy ? -1 - v : f->labels[label].cap - 1;
    if (copy)
      atomic_store_explicit(&f->interned[label][v], copy, memory_order_release);
  }
  uv_mutex_unlock(&f->m->mu);
  return v;
}

/* ---- shards ----------------------------------------------------------- */

static coda__metric_cell *claim_cells(coda__metrics *m, int *shared) {
  uv_mutex_lock(&m->mu);
  atomic_store(&m->frozen, 1);
  int i = m->nshards < CODA__METRICS_SHARDS - 1 ? m->nshards : CODA__METRICS_SHARDS - 1;
  coda__metric_cell *cells = atomic_load(&m->shards[i]);
  if (!cells) {
    /* Zeroed memory is a valid zero for these lock-free atomics. */
    cells = calloc(m->ncells ? m->ncells : 1, sizeof *cells);
    if (cells) {
      atomic_store(&m->shards[i], cells);
      if (i < CODA__METRICS_SHARDS - 1)
        m->nshards++;
    }
  }
  uv_mutex_unlock(&m->mu);
  *shared = i == CODA__METRICS_SHARDS - 1;
  return cells;
}

coda__metric_shard *coda__metrics_shard_slow(coda__metrics *m) {
  coda__metric_shard *tls = coda__metrics_tls;
  int found = -1;
  for (int i = 1; i < 4 && found < 0; i++)
    if (tls[i].registry == m->id)
      found = i;
  coda__metric_shard hit;
  if (found >= 0) {
    hit = tls[found];
  } else {
    /* A thread that counts into more than four registries in turn takes a
     * new shard each time one comes back: still correct, only wasteful. */
    hit.registry = m->id;
    hit.cells = claim_cells(m, &hit.shared);
    if (!hit.cells)
      return NULL;
    found = 3;
  }
  memmove(&tls[1], &tls[0], (size_t)found * sizeof *tls);
  tls[0] = hit;
  return &tls[0];
}

/* ---- counting --------------------------------------------------------- */

void coda__metric_add(coda__metric *f, size_t series, uint64_t n) {
  if (!f || !f->m->on || series >= f->nseries)
    return;
  coda__metric_shard *sh = coda__metrics_shard(f->m, f->m->id);
  if (sh)
    coda__metric_cell_add(sh, f->offset + series * f->width, n);
}

void coda__metric_observe_ns(coda__metric *f, size_t series, uint64_t ns) {
  if (!f || !f->m->on || series >= f->nseries || f->type != CODA__METRIC_HISTOGRAM)
    return;
  coda__metric_shard *sh = coda__metrics_shard(f->m, f->m->id);
  if (!sh)
    return;
  size_t base = f->offset + series * f->width;
  int b = 0;
  while (b < f->nbounds && ns > f->bounds_ns[b])
    b++;
  coda__metric_cell_add(sh, base + (size_t)b, 1);
  coda__metric_cell_add(sh, base + (size_t)f->nbounds + 1, ns);
}

/* Sums every shard into `sum` (m->ncells cells). */
static void sum_shards(coda__metrics *m, uint64_t *sum, size_t ncells) {
  memset(sum, 0, ncells * sizeof *sum);
  for (int i = 0; i < CODA__METRICS_SHARDS; i++) {
    coda__metric_cell *cells = atomic_load(&m->shards[i]);
    if (!cells)
      continue;
    for (size_t c = 0; c < ncells; c++)
      sum[c] += atomic_load_explicit(&cells[c], memory_order_relaxed);
  }
}

static uint64_t series_count(const coda__metric *f, const uint64_t *cells) {
  if (f->type == CODA__METRIC_COUNTER)
    return cells[0];
  uint64_t n = 0;
  for (int b = 0; b <= f->nbounds; b++)
    n += cells[b];
  return n;
}

uint64_t coda__metric_value(coda__metric *f, size_t series) {
  if (!f || series >= f->nseries)
    return 0;
  uint64_t cells[CODA__METRIC_MAX_BUCKETS + 2] = {0};
  size_t base = f->offset + series * f->width;
  for (int i = 0; i < CODA__METRICS_SHARDS; i++) {
    coda__metric_cell *sh = atomic_load(&f->m->shards[i]);
    for (size_t c = 0; sh && c < f->width; c++)
      cells[c] += atomic_load_explicit(&sh[base + c], memory_order_relaxed);
  }
  return series_count(f, cells);
}

/* ---- the text format -------------------------------------------------- */

int coda__metrics_escape(coda__buf *out, const char *value, int help) {
  int rc = 0;
  for (const char *p = value; *p && rc == 0; p++) {
    if (*p == '\\')
      rc = coda__buf_append_lit(out, "\\\\");
    else if (*p == '\n')
      rc = coda__buf_append_lit(out, "\\n");
    else if (*p == '"' && !help) /* HELP text escapes only \ and newline */
      rc = coda__buf_append_lit(out, "\\\"");
    else
      rc = coda__buf_append(out, p, 1);
  }
  return rc;
}

int coda__metrics_head(coda__buf *out, const char *name, const char *help,
                       const char *type) {
  int rc = coda__buf_append_lit(out, "# HELP ");
  rc = rc ? rc : coda__buf_append(out, name, strlen(name));
  rc = rc ? rc : coda__buf_append_lit(out, " ");
  rc = rc ? rc : coda__metrics_escape(out, help, 1);
  rc = rc ? rc : coda__buf_append_lit(out, "\n# TYPE ");
  rc = rc ? rc : coda__buf_append(out, name, strlen(name));
  rc = rc ? rc : coda__buf_append_lit(out, " ");
  rc = rc ? rc : coda__buf_append(out, type, strlen(type));
  return rc ? rc : coda__buf_append_lit(out, "\n");
}

/* A number as Prometheus reads it: integers exactly, others with enough
 * digits to round-trip, and +Inf. */
static int append_number(coda__buf *out, double v) {
  char tmp[40];
  int n;
  if (isinf(v))
    n = snprintf(tmp, sizeof tmp, v > 0 ? "+Inf" : "-Inf");
  else if (isnan(v))
    n = snprintf(tmp, sizeof tmp, "NaN");
  else if (v > -1e15 && v < 1e15 && v == (double)(int64_t)v)
    n = snprintf(tmp, sizeof tmp, "%.0f", v);
  else if ((n = snprintf(tmp, sizeof tmp, "%.15g", v)) > 0 && strtod(tmp, NULL) != v)
    n = snprintf(tmp, sizeof tmp, "%.17g", v); /* the shortest that reads back exact */
  return coda__buf_append(out, tmp, (size_t)n);
}

/* name{names[i]="values[i]",...,extra="extra_value"} for sample lines. */
static int append_labels(coda__buf *out, int n, const char *const *names,
                         const char *const *values, const char *extra,
                         const char *extra_value) {
  if (n == 0 && !extra)
    return 0;
  int rc = coda__buf_append_lit(out, "{");
  for (int i = 0; i <= n && rc == 0; i++) {
    const char *k = i < n ? names[i] : extra;
    const char *v = i < n ? values[i] : extra_value;
    if (!k)
      break;
    rc = i ? coda__buf_append_lit(out, ",") : 0;
    rc = rc ? rc : coda__buf_append(out, k, strlen(k));
    rc = rc ? rc : coda__buf_append_lit(out, "=\"");
    rc = rc ? rc : coda__metrics_escape(out, v, 0);
    rc = rc ? rc : coda__buf_append_lit(out, "\"");
  }
  return rc ? rc : coda__buf_append_lit(out, "}");
}

static int sample(coda__buf *out, const char *name, const char *suffix, int n,
                  const char *const *names, const char *const *values, const char *extra,
                  const char *extra_value, double v) {
  int rc = coda__buf_append(out, name, strlen(name));
  rc = rc ? rc : coda__buf_append(out, suffix, strlen(suffix));
  rc = rc ? rc : append_labels(out, n, names, values, extra, extra_value);
  rc = rc ? rc : coda__buf_append_lit(out, " ");
  rc = rc ? rc : append_number(out, v);
  return rc ? rc : coda__buf_append_lit(out, "\n");
}

int coda__metrics_sample(coda__buf *out, const char *name, int nlabels,
                         const char *const *names, const char *const *values,
                         double value) {
  return sample(out, name, "", nlabels, names, values, NULL, NULL, value);
}

/* The label values of a series; 0 if one is an interned slot never
 * filled (such a series has never been counted). */
static int series_labels(const coda__metric *f, size_t series, const char **values) {
  for (int i = f->nlabels - 1; i >= 0; i--) {
    int v = (int)(series % (size_t)f->radix[i]);
    series /= (size_t)f->radix[i];
    values[i] = f->interned[i]
                    ? atomic_load_explicit(&f->interned[i][v], memory_order_acquire)
                    : f->labels[i].values[v];
    if (!values[i])
      return 0;
  }
  return 1;
}

static int render_histogram(coda__buf *out, const coda__metric *f, int n,
                            const char **names, const char **values,
                            const uint64_t *cells) {
  uint64_t cumulative = 0;
  int rc = 0;
  for (int b = 0; b <= f->nbounds && rc == 0; b++) {
    cumulative += cells[b];
    char le[32];
    if (b < f->nbounds)
      snprintf(le, sizeof le, "%g", f->bounds[b]);
    else
      snprintf(le, sizeof le, "+Inf");
    rc = sample(out, f->name, "_bucket", n, names, values, "le", le, (double)cumulative);
  }
  double sum = (double)cells[f->nbounds + 1] / 1e9;
  rc = rc ? rc : sample(out, f->name, "_sum", n, names, values, NULL, NULL, sum);
  return rc ? rc
            : sample(out, f->name, "_count", n, names, values, NULL, NULL,
                     (double)cumulative);
}

static int render_family(coda__buf *out, const coda__metric *f, const uint64_t *sum) {
  int rc = coda__metrics_head(out, f->name, f->help,
                              f->type == CODA__METRIC_COUNTER ? "counter" : "histogram");
  const char *names[CODA__METRIC_MAX_LABELS], *values[CODA__METRIC_MAX_LABELS];
  for (int i = 0; i < f->nlabels; i++)
    names[i] = f->labels[i].name;
  for (size_t s = 0; s < f->nseries && rc == 0; s++) {
    const uint64_t *cells = sum + f->offset + s * f->width;
    if (series_count(f, cells) == 0 || !series_labels(f, s, values))
      continue; /* never counted: no series, as with any client library */
    if (f->type == CODA__METRIC_COUNTER)
      rc = sample(out, f->name, "", f->nlabels, names, values, NULL, NULL,
                  (double)cells[0]);
    else
      rc = render_histogram(out, f, f->nlabels, names, values, cells);
  }
  return rc;
}

int coda__metrics_render(coda__metrics *m, coda__buf *out) {
  uv_mutex_lock(&m->mu);
  atomic_store(&m->frozen, 1); /* the layout is read below without the lock */
  uv_mutex_unlock(&m->mu);
  uint64_t *sum = malloc((m->ncells ? m->ncells : 1) * sizeof *sum);
  if (!sum)
    return CODA_ENOMEM;
  sum_shards(m, sum, m->ncells);
  int rc = 0;
  for (int i = 0; i < m->nfamilies && rc == 0; i++)
    rc = render_family(out, m->families[i], sum);
  free(sum);
  for (int i = 0; i < m->ncollectors && rc == 0; i++)
    m->collectors[i].fn(m->collectors[i].data, out);
  return rc;
}
