/*
 * task_metrics.c - the task engine's figures in the app's metrics registry
 * (common/metrics.h): tasks by name, queue, executor and outcome, attempt
 * durations, queue waits, store batches, process restarts, and at scrape
 * time the store's health (and the queues' gauges, see tasks_collect()).
 *
 * Counting runs on whatever thread a task ends on (a loop, a pool thread,
 * the control loop for PROCESS tasks, the store thread for retried and
 * dead); each count goes to that thread's own shard. Label slots of a
 * definition are taken at configuration time, so no count looks up a
 * string.
 */
#include "tasks/durable.h"
#include "tasks/task.h"

#include <uv.h>

/* Definitions and queues kept apart; the rest count as "other". */
#define METRIC_TASKS 32
#define METRIC_QUEUES 8

static const char *const executors[] = {"loop", "thread", "process", NULL};
static const char *const outcomes[] = {"succeeded", "failed",  "timed_out",
                                       "crashed",   "retried", "dead",
                                       "rejected",  "dropped", NULL};
/* Attempts: from a millisecond (a LOOP task) to ten minutes (a report). */
static const double task_buckets[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1,
                                      2.5,   5,     10,   30,   60,  300, 600};
static const double wait_buckets[] = {0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
                                      1,      5,     10,    60,   300,  3600};
static const double batch_buckets[] = {0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                       0.025,  0.05,   0.1,   0.25,   1,     5};

#define NBUCKETS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The queues' gauges, from the store's summary (coda_app_queue_stats():
 * counts kept by the store, no scan on Redis). Each family's samples must
 * stay together, so they are gathered in two buffers and appended after
 * their heads. At most METRIC_GAUGE_QUEUES queues get their own series:
 * the rest are added up under queue="other", so the labels stay bounded
 * whatever names the store holds. */
#define METRIC_GAUGE_QUEUES 64

typedef struct queue_gauges {
  coda__buf tasks, age;
  int n;
  int64_t now;
  long other[CODA_STATE_CANCELLED + 2]; /* by state, then scheduled */
  int64_t other_oldest;
  int other_used;
} queue_gauges;

static void queue_samples(queue_gauges *g, const char *queue, const long *counts,
                          long scheduled, int64_t oldest) {
  static const char *const names[] = {"queue", "state"};
  for (int st = 0; st <= CODA_STATE_CANCELLED + 1; st++) {
    const char *values[] = {queue, st <= CODA_STATE_CANCELLED
                                       ? coda_task_state_name((coda_task_state)st)
                                       : "scheduled"};
    coda__metrics_sample(&g->tasks, "coda_queue_tasks", 2, names, values,
                         (double)(st <= CODA_STATE_CANCELLED ? counts[st] : scheduled));
  }
  double age = oldest > 0 && g->now > oldest ? (double)(g->now - oldest) / 1000.0 : 0.0;
  coda__metrics_sample(&g->age, "coda_queue_oldest_age_seconds", 1, names, &queue, age);
}

static int on_queue(const coda_queue_info *q, void *user) {
  queue_gauges *g = user;
  if (g->n++ < METRIC_GAUGE_QUEUES) {
    queue_samples(g, q->name, q->counts, q->scheduled, q->oldest_due_at);
    return 0;
  }
  g->other_used = 1;
  for (int st = 0; st <= CODA_STATE_CANCELLED; st++)
    g->other[st] += q->counts[st];
  g->other[CODA_STATE_CANCELLED + 1] += q->scheduled;
  if (q->oldest_due_at > 0 && (g->other_oldest == 0 || q->oldest_due_at < g->other_oldest))
    g->other_oldest = q->oldest_due_at;
  return 0;
}

static void queue_gauges_collect(coda__engine *e, coda__buf *out) {
  queue_gauges g = {.now = coda__unix_ms()};
  if (coda_app_queue_stats(e->app, on_queue, &g) >= 0) {
    if (g.other_used)
      queue_samples(&g, "other", g.other, g.other[CODA_STATE_CANCELLED + 1], g.other_oldest);
    coda__metrics_head(out, "coda_queue_tasks",
                       "Durable tasks in the store by queue and state (scheduled: queued or "
                       "failed, waiting for a later run_at; also counted in their state).",
                       "gauge");
    coda__buf_append(out, g.tasks.base, g.tasks.len);
    coda__metrics_head(out, "coda_queue_oldest_age_seconds",
                       "How long the oldest due, unclaimed task of the queue has waited "
                       "since it was due (0: none waits).",
                       "gauge");
    coda__buf_append(out, g.age.base, g.age.len);
  }
  coda__buf_free(&g.tasks);
  coda__buf_free(&g.age);
}

/* Gauges asked at scrape time, on the scraping thread. */
static void tasks_collect(void *data, coda__buf *out) {
  coda__engine *e = data;
  coda__durable *d = e->durable;
  coda__metrics_head(
      out, "coda_store_up",
      "1 when the task store's last write succeeded (0: it fails, durable adds "
      "are answered 503); absent without a store.",
      "gauge");
  if (d) {
    coda__metrics_sample(out, "coda_store_up", 0, NULL, NULL,
                         atomic_load(&d->faulted) ? 0 : 1);
    queue_gauges_collect(e, out);
  }
}

void coda__task_metrics_init(coda__engine *e) {
  coda__metrics *m = e->app->metrics;
  coda__metric_label task = {"task", NULL, METRIC_TASKS},
                     queue = {"queue", NULL, METRIC_QUEUES},
                     ex = {"executor", executors, 0}, outcome = {"outcome", outcomes, 0};
  e->m_tasks = coda__metrics_counter(m, "coda_tasks_total",
                                     "Task outcomes: an attempt ends succeeded, failed, "
                                     "timed_out or crashed; a failed durable "
                                     "attempt is then retried or dead; rejected (queue "
                                     "full) and dropped tasks never ran.",
                                     4, (coda__metric_label[]){task, queue, ex, outcome});
  e->m_duration = coda__metrics_histogram(
      m, "coda_task_duration_seconds", "Task attempts, from start to end.", 2,
      (coda__metric_label[]){task, ex}, task_buckets, NBUCKETS(task_buckets));
  e->m_wait = coda__metrics_histogram(
      m, "coda_task_queue_wait_seconds",
      "From when a task was due (its response written, or its run_at) to its start.", 1,
      &queue, wait_buckets, NBUCKETS(wait_buckets));
  e->m_batch = coda__metrics_histogram(
      m, "coda_store_batch_duration_seconds",
      "One group commit of the store thread (begin to commit, fsync included).", 0, NULL,
      batch_buckets, NBUCKETS(batch_buckets));
  e->m_restarts =
      coda__metrics_counter(m, "coda_process_restarts_total",
                            "PROCESS workers replaced after they ended.", 0, NULL);
  coda__metrics_add_collector(m, tasks_collect, e);
}

void coda__task_metrics_def(coda_task_def *def) {
  coda__engine *e = def->engine;
  const char *queue = def->queue ? def->queue : "default";
  def->metric_task = coda__metric_intern(e->m_tasks, 0, def->name);
  def->metric_queue = coda__metric_intern(e->m_tasks, 1, queue);
  def->metric_task_duration = coda__metric_intern(e->m_duration, 0, def->name);
  def->metric_queue_wait = coda__metric_intern(e->m_wait, 0, queue);
}

/* The executor's slot: loop, thread, process (DEFAULT runs on THREAD). */
static int executor_slot(coda_executor ex) {
  return ex == CODA_EXEC_LOOP ? 0 : ex == CODA_EXEC_PROCESS ? 2 : 1;
}

void coda__task_metrics_outcome(coda_task_def *def, coda_executor ex,
                                coda__task_outcome o) {
  coda__metric *f = def->engine->m_tasks;
  if (!f || !coda__metrics_on(f->m))
    return;
  int slots[4] = {def->metric_task, def->metric_queue, executor_slot(ex), (int)o};
  coda__metric_add(f, coda__metric_series(f, slots), 1);
}

static uint64_t unix_ms(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0)
    return 0;
  return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

void coda__task_metrics_began(coda_task *t) {
  coda_task_def *def = t->def;
  coda__metric *f = def->engine->m_wait;
  if (!f || !coda__metrics_on(f->m))
    return;
  uint64_t wait = t->due_ns && t->started_ns > t->due_ns ? t->started_ns - t->due_ns : 0;
  if (t->durable) {
    /* A stored task was due at its run_at (or when added), which may be
     * long before this process claimed it. */
    int64_t due = t->run_at > t->created_at ? t->run_at : t->created_at;
    uint64_t now = unix_ms();
    if (due > 0 && now > (uint64_t)due && (now - (uint64_t)due) * 1000000u > wait)
      wait = (now - (uint64_t)due) * 1000000u;
  }
  coda__metric_observe_ns(f, coda__metric_series(f, &def->metric_queue_wait), wait);
  t->due_ns = 0; /* a later attempt is due again when it is submitted */
}

void coda__task_metrics_ended(coda_task *t, coda__task_outcome o) {
  coda_task_def *def = t->def;
  coda__metric *f = def->engine->m_duration;
  if (!f || !coda__metrics_on(f->m))
    return;
  coda__task_metrics_outcome(def, t->executor, o);
  int slots[2] = {def->metric_task_duration, executor_slot(t->executor)};
  coda__metric_observe_ns(f, coda__metric_series(f, slots), uv_hrtime() - t->started_ns);
}

void coda__task_metrics_batch(coda__engine *e, uint64_t ns) {
  coda__metric_observe_ns(e->m_batch, 0, ns);
}
