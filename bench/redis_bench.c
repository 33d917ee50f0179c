/*
 * redis_bench.c - coda's durable tasks on the Redis store, measured the way
 * ../shared/peers/redis/run.sh measures BullMQ, Sidekiq, Celery and RQ. Used by
 * bench/redis.sh. Same workload: N no-op tasks, each with one string argument "j<i>",
 * whose only work is to count themselves (the peers' tally protocol, below).
 *
 *   redis_bench enqueue --store URI [--n 20000] [--batch 1]
 *     One producer thread adds N durable tasks through coda_app_enqueue(), then calls
 *     coda_app_store_sync() every `batch` adds and waits for it: with --batch 1 each
 *     add is acknowledged by Redis before the next one starts (the peers'
 *     `await queue.add()`); with --batch 1000 the store thread writes the thousand in
 *     one commit (the peers' bulk APIs). The tasks go to queue "bench", which this
 *     process does not serve (coda_app_queues("warm")), so they stay queued for the
 *     workers. Before the clock starts one warm-up task of another definition (queue
 *     "warm", served by nobody) is added and synced, so the connection, the scripts and
 *     the id block are ready. Prints N / elapsed and the latency of one add+sync.
 *
 *   redis_bench worker --store URI --tally HOST:PORT [--exec thread|loop]
 *     A worker process as coda-demo --worker: no listener (coda_app_listen(app, NULL)),
 *     one event loop, serves queue "bench" only, runs the no-op task on the THREAD
 *     executor (default) or the LOOP executor, until SIGTERM; then flushes its tally.
 *
 *   redis_bench tally --tally HOST:PORT --n N wait|verify
 *     wait:   polls LLEN bench:done every 50 ms until it reaches N or nothing ran for
 *             STALL_S (30) s, then waits 0.5 s for late duplicates.
 *     verify: process/s = distinct tasks that ran / (latest end - earliest start), the
 *             executions beyond one per task (dups) and the tasks that never ran
 *             (missing). Exit status 1 when any is missing.
 *
 * Tally protocol (../shared/peers/redis/tally.py): a task appends its argument to an
 * in-memory buffer; a thread flushes the buffer every 50 ms in one MULTI:
 *   bench:done    RPUSH of every argument run (a duplicate shows twice)
 *   bench:starts  one entry per worker process: when its first task started (epoch s)
 *   bench:ends    one entry per flush: when that process's latest task ended (epoch s)
 *
 * Output ends with "RESULT name value" lines for the script.
 */
#include <coda.h>

#include "bench_util.h"

#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define QUEUE "bench"
#define DONE_KEY "bench:done"
#define STARTS_KEY "bench:starts"
#define ENDS_KEY "bench:ends"
#define FLUSH_MS 50
#define POLL_MS 50
#define SETTLE_MS 500
#define STALL_S 30

static coda_app *app;

/* ---- options ---------------------------------------------------------------------- */

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

/* Epoch seconds, as the peers record them. */
static double epoch_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Connects to the tally's Redis ("HOST:PORT"); NULL after printing why. */
static redisContext *tally_connect(const char *host_port) {
  char host[256];
  const char *colon = host_port ? strrchr(host_port, ':') : NULL;
  if (!colon || (size_t)(colon - host_port) >= sizeof host) {
    fprintf(stderr, "redis_bench: --tally HOST:PORT expected\n");
    return NULL;
  }
  memcpy(host, host_port, (size_t)(colon - host_port));
  host[colon - host_port] = '\0';
  redisContext *c = redisConnect(host, atoi(colon + 1));
  if (!c || c->err) {
    fprintf(stderr, "redis_bench: redis %s: %s\n", host_port, c ? c->errstr : "no memory");
    redisFree(c);
    return NULL;
  }
  return c;
}

/* ---- the worker's tally ----------------------------------------------------------- */

typedef struct tally {
  uv_mutex_t mu;
  char **buf; /* arguments run since the last flush */
  size_t len, cap;
  double first, last; /* epoch s of the first start and the latest end; 0 none */
  int sent_first;
  redisContext *redis; /* used by the flushing thread only (and the last flush) */
  uv_thread_t thread;
  atomic_int stop;
} tally;

static tally the_tally;

static void tally_record(tally *t, const char *arg, double started) {
  char *copy = strdup(arg ? arg : "?");
  double now = epoch_s();
  uv_mutex_lock(&t->mu);
  if (t->len == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 1024;
    char **b = realloc(t->buf, cap * sizeof *b);
    if (!b) {
      uv_mutex_unlock(&t->mu);
      free(copy);
      abort(); /* a lost count would read as a missing task */
    }
    t->buf = b, t->cap = cap;
  }
  t->buf[t->len++] = copy;
  if (t->first == 0)
    t->first = started;
  t->last = now;
  uv_mutex_unlock(&t->mu);
}

/* RPUSH key of `n` values (each a C string) as one argv command, appended. */
static void append_rpush(redisContext *c, const char *key, char **vals, size_t n) {
  const char **argv = malloc((n + 2) * sizeof *argv);
  if (!argv)
    abort();
  argv[0] = "RPUSH";
  argv[1] = key;
  for (size_t i = 0; i < n; i++)
    argv[i + 2] = vals[i];
  redisAppendCommandArgv(c, (int)(n + 2), argv, NULL);
  free(argv);
}

/* Sends what was recorded since the last flush, in one MULTI. Returns 0 or -1. */
static int tally_flush(tally *t) {
  uv_mutex_lock(&t->mu);
  char **buf = t->buf;
  size_t n = t->len;
  double first = t->sent_first ? 0 : t->first, last = t->last;
  t->buf = NULL, t->len = t->cap = 0;
  t->sent_first = t->first != 0;
  uv_mutex_unlock(&t->mu);
  if (n == 0) {
    free(buf);
    return 0;
  }
  char firsts[32], lasts[32];
  snprintf(firsts, sizeof firsts, "%.6f", first);
  snprintf(lasts, sizeof lasts, "%.6f", last);
  char *firstv[] = {firsts}, *lastv[] = {lasts};
  redisContext *c = t->redis;
  int replies = 0, rc = 0;
  redisAppendCommand(c, "MULTI"), replies++;
  append_rpush(c, DONE_KEY, buf, n), replies++;
  if (first != 0)
    append_rpush(c, STARTS_KEY, firstv, 1), replies++;
  append_rpush(c, ENDS_KEY, lastv, 1), replies++;
  redisAppendCommand(c, "EXEC"), replies++;
  for (int i = 0; i < replies; i++) {
    redisReply *r = NULL;
    if (redisGetReply(c, (void **)&r) != REDIS_OK || !r || r->type == REDIS_REPLY_ERROR) {
      fprintf(stderr, "redis_bench: tally flush: %s\n",
              r ? r->str : c->errstr[0] ? c->errstr : "no reply");
      rc = -1;
    }
    freeReplyObject(r);
    if (rc)
      break;
  }
  for (size_t i = 0; i < n; i++)
    free(buf[i]);
  free(buf);
  return rc;
}

static void tally_main(void *arg) {
  tally *t = arg;
  while (!atomic_load(&t->stop)) {
    sleep_us(FLUSH_MS * 1000);
    if (tally_flush(t) != 0)
      exit(1); /* counts lost: the run is void */
  }
}

/* ---- the task -------------------------------------------------------------------- */

static int noop(coda_task *t) {
  double started = epoch_s();
  tally_record(&the_tally, coda_task_str(t, 0), started);
  return 0;
}

static int warm(coda_task *t) {
  (void)t;
  return 0;
}

/* Registers the no-op task (queue "bench") and the warm-up task (queue "warm"). */
static coda_task_def *register_tasks(coda_executor exec, coda_task_def **warm_def) {
  coda_task_def *def = coda_app_task(app, "bench_noop", noop, exec);
  coda_task_def *w = coda_app_task(app, "bench_warm", warm, CODA_EXEC_THREAD);
  if (!def || !w || coda_task_def_durable(def, 1) || coda_task_def_queue(def, QUEUE) ||
      coda_task_def_durable(w, 1) || coda_task_def_queue(w, "warm"))
    return NULL;
  if (warm_def)
    *warm_def = w;
  return def;
}

static int open_store(const char *store) {
  int rc = coda_app_store(app, store);
  if (rc)
    fprintf(stderr, "redis_bench: store %s: %s: %s\n", store, coda_strerror(rc),
            coda_app_store_error(app));
  return rc;
}

/* ---- enqueue mode ------------------------------------------------------------------ */

typedef struct server {
  uv_thread_t thread;
  int rc;
} server;

static void server_main(void *arg) {
  server *s = arg;
  s->rc = coda_app_run(app);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Adds one task "j<i>"; waits out CODA_EFULL (counted). */
static int add_one(coda_task_def *def, long i, long *full) {
  char arg[32];
  snprintf(arg, sizeof arg, "j%ld", i);
  for (;;) {
    coda_task_opts o = CODA_TASK_OPTS_INIT(.flags = CODA_TASK_DURABLE);
    int rc = coda_app_enqueue(app, def, &o, "s", arg);
    if (rc != CODA_EFULL)
      return rc;
    (*full)++;
    sleep_us(100);
  }
}

/* The warm-up: the first add that the running app accepts, synced. */
static int warm_up(coda_task_def *warm_def) {
  for (int i = 0; i < 5000; i++) {
    int rc = coda_app_enqueue(app, warm_def, CODA_TASK_OPTS(.flags = CODA_TASK_DURABLE),
                              "s", "warm");
    if (rc == 0)
      return coda_app_store_sync(app);
    if (rc != CODA_ESTATE)
      return rc;
    sleep_us(1000);
  }
  return CODA_ESTATE;
}

static int measure(coda_task_def *def, coda_task_def *warm_def, long n, long batch) {
  int rc = warm_up(warm_def);
  if (rc) {
    fprintf(stderr, "redis_bench: warm-up: %s: %s\n", coda_strerror(rc),
            coda_app_store_error(app));
    return -1;
  }
  long nsyncs = (n + batch - 1) / batch, full = 0;
  uint64_t *lat = calloc((size_t)nsyncs, sizeof *lat);
  if (!lat)
    return -1;
  uint64_t t0 = now_ns();
  long k = 0;
  for (long i = 0; i < n && rc == 0; i += batch) {
    uint64_t s = now_ns();
    for (long j = i; j < i + batch && j < n && rc == 0; j++)
      rc = add_one(def, j, &full);
    if (rc == 0)
      rc = coda_app_store_sync(app);
    lat[k++] = now_ns() - s;
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  if (rc) {
    fprintf(stderr, "redis_bench: add: %s: %s\n", coda_strerror(rc),
            coda_app_store_error(app));
    free(lat);
    return -1;
  }
  qsort(lat, (size_t)k, sizeof *lat, cmp_u64);
  double p50 = (double)lat[k / 2] / 1e3, p99 = (double)lat[(k * 99) / 100] / 1e3;
  printf("coda enqueue: %ld tasks, a sync every %ld: %.3f s, %.0f tasks/s; per sync p50 "
         "%.0f us, p99 %.0f us; %ld full retries\n",
         n, batch, secs, (double)n / secs, p50, p99, full);
  printf("RESULT per_s %.0f\nRESULT p50_us %.0f\nRESULT p99_us %.0f\nRESULT full %ld\n",
         (double)n / secs, p50, p99, full);
  free(lat);
  return 0;
}

static int enqueue_mode(int argc, char **argv) {
  const char *store = arg_str(argc, argv, "--store", NULL);
  long n = arg_long(argc, argv, "--n", 20000), batch = arg_long(argc, argv, "--batch", 1);
  if (!store || n < 1 || batch < 1) {
    fprintf(stderr, "usage: redis_bench enqueue --store URI [--n N] [--batch B]\n");
    return 2;
  }
  coda_task_def *warm_def = NULL, *def = register_tasks(CODA_EXEC_THREAD, &warm_def);
  int rc = def ? 0 : CODA_ENOMEM;
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_WARN);
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_HANDLE_SIGNALS, 0);
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_THREADS, 1);
  if (rc == 0) /* serves a queue nobody adds to: the bench tasks stay for the workers */
    rc = coda_app_queues(app, "idle");
  if (rc == 0)
    rc = coda_app_listen(app, "127.0.0.1:0");
  if (rc == 0)
    rc = open_store(store);
  if (rc == 0)
    rc = coda_app_bind(app);
  if (rc) {
    fprintf(stderr, "redis_bench: start-up: %s\n", coda_strerror(rc));
    return 1;
  }
  server s = {0};
  if (uv_thread_create(&s.thread, server_main, &s) != 0)
    return 1;
  int failed = measure(def, warm_def, n, batch) != 0;
  coda_app_stop(app);
  uv_thread_join(&s.thread);
  if (s.rc) {
    fprintf(stderr, "redis_bench: coda_app_run: %s\n", coda_strerror(s.rc));
    failed = 1;
  }
  return failed;
}

/* ---- worker mode ------------------------------------------------------------------- */

static int worker_mode(int argc, char **argv) {
  const char *store = arg_str(argc, argv, "--store", NULL);
  const char *tally_at = arg_str(argc, argv, "--tally", NULL);
  const char *exec = arg_str(argc, argv, "--exec", "thread");
  if (!store || !tally_at || (strcmp(exec, "thread") && strcmp(exec, "loop"))) {
    fprintf(stderr, "usage: redis_bench worker --store URI --tally HOST:PORT "
                    "[--exec thread|loop]\n");
    return 2;
  }
  tally *t = &the_tally;
  uv_mutex_init(&t->mu);
  if (!(t->redis = tally_connect(tally_at)))
    return 1;
  coda_task_def *def =
      register_tasks(strcmp(exec, "loop") ? CODA_EXEC_THREAD : CODA_EXEC_LOOP, NULL);
  int rc = def ? 0 : CODA_ENOMEM;
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_WARN);
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_THREADS, 1);
  if (rc == 0)
    rc = coda_app_queues(app, QUEUE);
  if (rc == 0)
    rc = coda_app_listen(app, NULL); /* no HTTP: a worker */
  if (rc == 0)
    rc = open_store(store);
  if (rc == 0 && uv_thread_create(&t->thread, tally_main, t) != 0)
    rc = CODA_ENOMEM;
  if (rc == 0) {
    rc = coda_app_run(app); /* until SIGTERM */
    atomic_store(&t->stop, 1);
    uv_thread_join(&t->thread);
    if (tally_flush(t) != 0)
      rc = CODA_ESTORE;
  }
  if (rc)
    fprintf(stderr, "redis_bench: worker: %s\n", coda_strerror(rc));
  redisFree(t->redis);
  return rc ? 1 : 0;
}

/* ---- tally mode -------------------------------------------------------------------- */

static long long llen(redisContext *c, const char *key) {
  redisReply *r = redisCommand(c, "LLEN %s", key);
  long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
  freeReplyObject(r);
  return n;
}

static int tally_wait(redisContext *c, long n) {
  long long seen = -1;
  uint64_t since = now_ns();
  for (;;) {
    long long count = llen(c, DONE_KEY);
    if (count < 0) {
      fprintf(stderr, "redis_bench: LLEN failed\n");
      return 1;
    }
    if (count >= n)
      break;
    if (count != seen) {
      seen = count, since = now_ns();
    } else if (now_ns() - since > (uint64_t)STALL_S * 1000000000u) {
      fprintf(stderr, "redis_bench: stalled at %lld of %ld runs\n", count, n);
      break;
    }
    sleep_us(POLL_MS * 1000);
  }
  sleep_us(SETTLE_MS * 1000); /* late duplicates */
  return 0;
}

/* Reads a list whole; NULL on error. */
static redisReply *lrange(redisContext *c, const char *key) {
  redisReply *r = redisCommand(c, "LRANGE %s 0 -1", key);
  if (!r || r->type != REDIS_REPLY_ARRAY) {
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

static int tally_verify(redisContext *c, long n) {
  redisReply *done = lrange(c, DONE_KEY), *starts = lrange(c, STARTS_KEY),
             *ends = lrange(c, ENDS_KEY);
  int failed = !done || !starts || !ends;
  unsigned char *runs = calloc((size_t)n, 1);
  long distinct = 0, dups = 0, bad = 0;
  for (size_t i = 0; !failed && runs && i < done->elements; i++) {
    const char *s = done->element[i]->str;
    char *end;
    long j = s && s[0] == 'j' ? strtol(s + 1, &end, 10) : -1;
    if (j < 0 || j >= n || *end) {
      bad++;
      continue;
    }
    if (runs[j]++)
      dups++;
    else
      distinct++;
  }
  double first = 0, last = 0;
  for (size_t i = 0; !failed && i < starts->elements; i++) {
    double v = atof(starts->element[i]->str);
    first = first == 0 || v < first ? v : first;
  }
  for (size_t i = 0; !failed && i < ends->elements; i++) {
    double v = atof(ends->element[i]->str);
    last = v > last ? v : last;
  }
  double span = last - first, rate = span > 0 ? (double)distinct / span : 0;
  long missing = n - distinct;
  if (!failed) {
    printf("coda process: %ld distinct of %ld ran in %.3f s (%.0f/s) on %zu process(es); "
           "%ld duplicates, %ld missing, %ld unknown\n",
           distinct, n, span, rate, starts->elements, dups, missing, bad);
    printf("RESULT per_s %.0f\nRESULT dups %ld\nRESULT missing %ld\nRESULT span_s %.3f\n",
           rate, dups, missing, span);
  } else {
    fprintf(stderr, "redis_bench: cannot read the tally\n");
  }
  freeReplyObject(done), freeReplyObject(starts), freeReplyObject(ends);
  free(runs);
  return failed || missing || bad ? 1 : 0;
}

static int tally_mode(int argc, char **argv) {
  const char *at = arg_str(argc, argv, "--tally", NULL), *what = argv[argc - 1];
  long n = arg_long(argc, argv, "--n", 0);
  if (!at || n < 1 || (strcmp(what, "wait") && strcmp(what, "verify"))) {
    fprintf(stderr, "usage: redis_bench tally --tally HOST:PORT --n N wait|verify\n");
    return 2;
  }
  redisContext *c = tally_connect(at);
  if (!c)
    return 1;
  int rc = strcmp(what, "wait") == 0 ? tally_wait(c, n) : tally_verify(c, n);
  redisFree(c);
  return rc;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "tally") == 0)
    return tally_mode(argc, argv);
  if (strcmp(mode, "enqueue") && strcmp(mode, "worker")) {
    fprintf(stderr, "usage: redis_bench enqueue|worker|tally [options] (see the source)\n");
    return 2;
  }
  app = coda_app_new();
  if (!app)
    return 1;
  int rc = strcmp(mode, "enqueue") == 0 ? enqueue_mode(argc, argv) : worker_mode(argc, argv);
  coda_app_free(app);
  return rc;
}
