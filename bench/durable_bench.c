/*
 * durable_bench.c - durable tasks in a real coda app: how many are accepted and completed
 * per second, and a server for the HTTP measurements. Used by bench/durable.sh.
 *
 *   durable_bench enqueue --store URI [--n 200000] [--producers 1]
 *     Starts an app (one event loop on 127.0.0.1:0, run on its own thread) whose store is
 *     URI ("sqlite:PATH" or "memory"), and one durable THREAD task that increments an
 *     atomic counter. Once the app runs, producer threads call coda_app_enqueue() N
 *     times in all, then the main thread calls coda_app_store_sync() and waits until
 *     the counter reaches N (polled every 100 us). Times are taken from the first
 *     enqueue:
 *       enqueued   the last coda_app_enqueue() call returned;
 *       accepted   coda_app_store_sync() returned: every task is in the store (with
 *                  sqlite, committed and fsynced);
 *       completed  the N-th task has run (its success is written by a later commit).
 *     tasks/s = N / time. When a queue is full (CODA_EFULL) the producer waits 100 us and
 *     tries again (counted as "full retries"). Then it syncs until the first and last
 *     task of each producer read back as "succeeded" through coda_task_get() (the
 *     outcomes are written by later commits; the time is printed as "outcome read
 *     back"), and prints the app's counters (coda_stats_json). A warm-up task runs
 *     before the clock starts, so the store holds N + 1 tasks.
 *
 *   durable_bench serve --listen HOST:PORT --store URI [--threads 1]
 *     Serves until SIGTERM:
 *       GET /plain    {"status":"ok"}, no task (for the start-up check)
 *       GET /durable  202 {"id":ID} + Location /tasks/ID, one durable THREAD task
 *       GET /memory   202 {"status":"queued"}, the same task in memory (not durable)
 *       GET /count    {"durable":N,"memory":M}: tasks of each kind that have run
 *       GET /stats    coda_stats_json()
 *     Both task kinds run the same function (an atomic increment).
 *
 * Output ends with "RESULT name value" lines for the script. Exit status 1 when
 * something failed (a store error, a task that did not run, a status not succeeded).
 */
#include <coda.h>

#include "bench_util.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#define MAX_PRODUCERS 16

static coda_app *app;
static coda_task_def *durable_def, *memory_def;

/* Incremented by the tasks (THREAD pool threads), read by everyone. */
static atomic_long durable_done, memory_done;

/* CPU time of the whole process (every thread), in ns. */
static uint64_t cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
         (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
}

/* ---- tasks --------------------------------------------------------------------- */

static int count_durable(coda_task *t) {
  (void)t;
  atomic_fetch_add_explicit(&durable_done, 1, memory_order_relaxed);
  return 0;
}

static int count_memory(coda_task *t) {
  (void)t;
  atomic_fetch_add_explicit(&memory_done, 1, memory_order_relaxed);
  return 0;
}

/* ---- options ------------------------------------------------------------------- */

static const char *arg_str(int argc, char **argv, const char *name,
                           const char *fallback) {
  for (int i = 2; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0)
      return argv[i + 1];
  return fallback;
}

static long arg_long(int argc, char **argv, const char *name, long fallback) {
  const char *v = arg_str(argc, argv, name, NULL);
  return v ? strtol(v, NULL, 10) : fallback;
}

/* Registers both tasks, sets the common options and opens the store. */
static int setup(const char *store, const char *listen, long threads) {
  static const struct {
    coda_option opt;
    long value;
  } opts[] = {
      {CODA_OPT_LOG_LEVEL, CODA_LOG_WARN},
      /* Room for every task of a run: the benchmark measures the store, not the
       * executor's admission limit. */
      {CODA_OPT_THREAD_QUEUE, 10000000},
  };
  durable_def = coda_app_task(app, "bench_durable", count_durable, CODA_EXEC_THREAD);
  memory_def = coda_app_task(app, "bench_memory", count_memory, CODA_EXEC_THREAD);
  if (!durable_def || !memory_def)
    return CODA_ENOMEM;
  int rc = coda_task_def_durable(durable_def, 1);
  for (size_t i = 0; rc == 0 && i < sizeof opts / sizeof opts[0]; i++)
    rc = coda_app_set(app, opts[i].opt, opts[i].value);
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_THREADS, threads);
  if (rc == 0)
    rc = coda_app_listen(app, listen);
  if (rc == 0) {
    rc = coda_app_store(app, store);
    if (rc)
      fprintf(stderr, "durable_bench: store %s: %s: %s\n", store, coda_strerror(rc),
              coda_app_store_error(app));
  }
  return rc;
}

/* ---- enqueue mode ----------------------------------------------------------------- */

typedef struct producer {
  uv_thread_t thread;
  long n;            /* tasks to enqueue */
  long full_retries; /* CODA_EFULL answers waited out */
  int rc;            /* first other error */
  uint64_t first_id, last_id;
  uint64_t end_ns; /* when its last enqueue returned */
} producer;

static atomic_int go; /* producers start together */

static void producer_main(void *arg) {
  producer *p = arg;
  while (!atomic_load(&go)) {
  }
  for (long i = 0; i < p->n; i++) {
    coda_task_opts o = CODA_TASK_OPTS_INIT(.flags = CODA_TASK_DURABLE);
    int rc;
    while ((rc = coda_app_enqueue(app, durable_def, &o, "i", (int64_t)i)) == CODA_EFULL) {
      p->full_retries++;
      sleep_us(100);
    }
    if (rc) {
      p->rc = rc;
      break;
    }
    if (i == 0)
      p->first_id = o.id;
    p->last_id = o.id;
  }
  p->end_ns = now_ns();
}

typedef struct server {
  uv_thread_t thread;
  int rc;
} server;

static void server_main(void *arg) {
  server *s = arg;
  s->rc = coda_app_run(app);
}

/* Reads a task's status back; 1 when it is "succeeded", 0 when not (yet), -1 on error.
 * Quiet unless `report`. */
static int succeeded(uint64_t id, int report) {
  coda_task_info *info = NULL;
  int rc = coda_task_get(app, id, &info);
  if (rc) {
    fprintf(stderr, "durable_bench: coda_task_get(%llu): %s\n", (unsigned long long)id,
            coda_strerror(rc));
    return -1;
  }
  int ok = info->state == CODA_STATE_SUCCEEDED;
  if (!ok && report)
    fprintf(stderr,
            "durable_bench: task %llu is %s after the run (attempts %d, error %s)\n",
            (unsigned long long)id, coda_task_state_name(info->state), info->attempts,
            info->error ? info->error : "none");
  coda_task_info_free(info);
  return ok;
}

/* Waits until the store says every producer's first and last task succeeded: a task's
 * outcome is written by a group commit after it has run. The memory store forgets the
 * oldest finished tasks past 100,000, so there only the last are read. Returns 0, or -1
 * after 10 s. */
static int wait_recorded(const producer *ps, int nproducers, int check_first) {
  uint64_t deadline = now_ns() + 10ull * 1000000000u;
  for (;;) {
    int all = coda_app_store_sync(app) == 0, last = now_ns() > deadline;
    for (int i = 0; i < nproducers && all; i++) {
      int a = check_first ? succeeded(ps[i].first_id, last) : 1;
      int b = a == 1 ? succeeded(ps[i].last_id, last) : 0;
      if (a < 0 || b < 0)
        return -1;
      all = a == 1 && b == 1;
    }
    if (all)
      return 0;
    if (last)
      return -1;
    sleep_us(1000);
  }
}

/* Starts the producers once the app accepts enqueues, and times the run. */
static int measure(long n, int nproducers, const char *store) {
  producer ps[MAX_PRODUCERS];
  memset(ps, 0, sizeof ps);
  /* The app runs once its listener answers; an enqueue before that is CODA_ESTATE. */
  for (int i = 0; i < 5000; i++) {
    coda_task_opts o = CODA_TASK_OPTS_INIT(.flags = CODA_TASK_DURABLE);
    int rc = coda_app_enqueue(app, durable_def, &o, "i", (int64_t)-1);
    if (rc == 0)
      break;
    if (rc != CODA_ESTATE || i == 4999) {
      fprintf(stderr, "durable_bench: the warm-up enqueue failed: %s\n",
              coda_strerror(rc));
      return -1;
    }
    sleep_us(1000);
  }
  if (coda_app_store_sync(app) != 0)
    return -1;
  while (atomic_load(&durable_done) < 1)
    sleep_us(100);
  atomic_store(&durable_done, 0);

  for (int i = 0; i < nproducers; i++) {
    ps[i].n = n / nproducers + (i < n % nproducers);
    if (uv_thread_create(&ps[i].thread, producer_main, &ps[i]) != 0)
      return -1;
  }
  uint64_t cpu0 = cpu_ns(), t0 = now_ns();
  atomic_store(&go, 1);
  uint64_t enqueued = t0;
  long full = 0;
  int failed = 0;
  for (int i = 0; i < nproducers; i++) {
    uv_thread_join(&ps[i].thread);
    enqueued = ps[i].end_ns > enqueued ? ps[i].end_ns : enqueued;
    full += ps[i].full_retries;
    if (ps[i].rc) {
      fprintf(stderr, "durable_bench: coda_app_enqueue: %s: %s\n",
              coda_strerror(ps[i].rc), coda_app_store_error(app));
      failed = 1;
    }
  }
  int sync_rc = coda_app_store_sync(app);
  uint64_t accepted = now_ns();
  if (sync_rc) {
    fprintf(stderr, "durable_bench: coda_app_store_sync: %s: %s\n",
            coda_strerror(sync_rc), coda_app_store_error(app));
    failed = 1;
  }
  uint64_t completed = 0, deadline = accepted + 120ull * 1000000000u;
  while (!failed && !completed && now_ns() < deadline) {
    if (atomic_load(&durable_done) >= n)
      completed = now_ns();
    else
      sleep_us(100);
  }
  uint64_t cpu1 = cpu_ns();
  if (!failed && !completed) {
    fprintf(stderr, "durable_bench: %ld of %ld tasks ran within 120 s of the sync\n",
            atomic_load(&durable_done), n);
    failed = 1;
  }
  long done = atomic_load(&durable_done);
  if (failed || wait_recorded(ps, nproducers, strcmp(store, "memory") != 0) != 0)
    return -1;
  uint64_t recorded = now_ns();
  double te = (double)(enqueued - t0) / 1e9, ta = (double)(accepted - t0) / 1e9,
         tc = (double)(completed - t0) / 1e9, tr = (double)(recorded - t0) / 1e9;
  double cpu_us = (double)(cpu1 - cpu0) / 1000.0 / (double)n;
  printf("%s: %ld tasks, %d producer(s): enqueued in %.3f s (%.0f/s), accepted (synced) "
         "in %.3f s (%.0f/s), completed in %.3f s (%.0f/s), outcome read back at %.3f s; "
         "%.2f us CPU per task; %ld full retries; %ld runs\n",
         store, n, nproducers, te, (double)n / te, ta, (double)n / ta, tc, (double)n / tc,
         tr, cpu_us, full, done);
  printf("RESULT n %ld\nRESULT enqueued_per_s %.0f\nRESULT accepted_per_s %.0f\n", n,
         (double)n / te, (double)n / ta);
  printf("RESULT completed_per_s %.0f\nRESULT recorded_s %.3f\nRESULT cpu_us_per_task "
         "%.3f\n",
         (double)n / tc, tr, cpu_us);
  printf("RESULT full_retries %ld\nRESULT runs %ld\n", full, done);
  return 0;
}

static int enqueue_mode(int argc, char **argv) {
  const char *store = arg_str(argc, argv, "--store", NULL);
  long n = arg_long(argc, argv, "--n", 200000);
  long nproducers = arg_long(argc, argv, "--producers", 1);
  if (!store || n < 1 || nproducers < 1 || nproducers > MAX_PRODUCERS) {
    fprintf(stderr,
            "usage: durable_bench enqueue --store URI [--n N] [--producers 1..%d]\n",
            MAX_PRODUCERS);
    return 2;
  }
  int rc = setup(store, "127.0.0.1:0", 1);
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_HANDLE_SIGNALS, 0);
  if (rc == 0)
    rc = coda_app_bind(app);
  if (rc) {
    fprintf(stderr, "durable_bench: start-up: %s\n", coda_strerror(rc));
    return 1;
  }
  server s = {0};
  if (uv_thread_create(&s.thread, server_main, &s) != 0)
    return 1;
  int failed = measure(n, (int)nproducers, store) != 0;
  static char stats[16384];
  coda_stats_json(app, stats, sizeof stats);
  printf("stats %s\n", stats);
  coda_app_stop(app);
  uv_thread_join(&s.thread);
  if (s.rc) {
    fprintf(stderr, "durable_bench: coda_app_run: %s\n", coda_strerror(s.rc));
    failed = 1;
  }
  return failed;
}

/* ---- serve mode ------------------------------------------------------------------- */

static int plain(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  static const char body[] = "{\"status\":\"ok\"}";
  coda_res_header(res, "Content-Type", "application/json");
  return coda_res_body_static(res, body, sizeof body - 1);
}

static int add_durable(coda_req *req, coda_res *res, void *user) {
  (void)user;
  coda_task_opts o = CODA_TASK_OPTS_INIT(.flags = CODA_TASK_DURABLE);
  int rc = coda_res_add_task_opts(res, durable_def, &o, "i", (int64_t)coda_req_id(req));
  if (rc)
    return rc;
  char location[64], body[64];
  snprintf(location, sizeof location, "/tasks/%llu", (unsigned long long)o.id);
  snprintf(body, sizeof body, "{\"id\":%llu}", (unsigned long long)o.id);
  rc = coda_res_header(res, "Location", location);
  return rc ? rc : coda_res_json_text(res, 202, body);
}

static int add_memory(coda_req *req, coda_res *res, void *user) {
  (void)user;
  int rc = coda_res_add_task(res, memory_def, "i", (int64_t)coda_req_id(req));
  return rc ? rc : coda_res_json_text(res, 202, "{\"status\":\"queued\"}");
}

static int count(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  char body[96];
  snprintf(body, sizeof body, "{\"durable\":%ld,\"memory\":%ld}",
           atomic_load(&durable_done), atomic_load(&memory_done));
  return coda_res_json_text(res, 200, body);
}

static int stats(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  char buf[16384];
  size_t len = coda_stats_json(app, buf, sizeof buf);
  if (len >= sizeof buf)
    return CODA_ELIMIT;
  return coda_res_json_text(res, 200, buf);
}

static int serve_mode(int argc, char **argv) {
  const char *store = arg_str(argc, argv, "--store", NULL);
  const char *listen = arg_str(argc, argv, "--listen", NULL);
  long threads = arg_long(argc, argv, "--threads", 1);
  if (!store || !listen || threads < 1) {
    fprintf(stderr,
            "usage: durable_bench serve --listen HOST:PORT --store URI [--threads N]\n");
    return 2;
  }
  int rc = setup(store, listen, threads);
  if (rc == 0)
    rc = coda_app_route(app, "GET", "/plain", plain, NULL);
  if (rc == 0)
    rc = coda_app_route(app, "GET", "/durable", add_durable, NULL);
  if (rc == 0)
    rc = coda_app_route(app, "GET", "/memory", add_memory, NULL);
  if (rc == 0)
    rc = coda_app_route(app, "GET", "/count", count, NULL);
  if (rc == 0)
    rc = coda_app_route(app, "GET", "/stats", stats, NULL);
  if (rc == 0)
    rc = coda_app_run(app);
  if (rc)
    fprintf(stderr, "durable_bench: serve: %s\n", coda_strerror(rc));
  return rc ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 2 || (strcmp(argv[1], "enqueue") != 0 && strcmp(argv[1], "serve") != 0)) {
    fprintf(stderr, "usage: durable_bench enqueue|serve [options] (see the source)\n");
    return 2;
  }
  app = coda_app_new();
  if (!app)
    return 1;
  int rc =
      strcmp(argv[1], "enqueue") == 0 ? enqueue_mode(argc, argv) : serve_mode(argc, argv);
  coda_app_free(app);
  return rc;
}
