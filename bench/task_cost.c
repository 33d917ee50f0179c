/*
 * task_cost.c - what adding and dispatching a background task costs, measured inside a
 * real coda app (one event loop on 127.0.0.1:0, run on its own thread).
 *
 *   task_cost [--thread-n N] [--process-n N] [--rounds R]
 *
 * A route handler adds N trivial tasks to its response and times the add calls with
 * clock_gettime. The client then waits until all N have run. The figures per task:
 *   add       time spent in coda_res_add_task(), in the handler;
 *   dispatch  from the handler's return to the last task's completion, divided by N
 *             (the response is written first, then the tasks are started and run);
 *   total     add + dispatch: the amortized cost of one task, end to end.
 * Each case runs with the response's list in its default order (each task is started
 * when the one before it has finished) and marked CODA_LIST_PARALLEL (all started at
 * once). A THREAD task increments a counter and the one that reaches N takes the time; a
 * PROCESS task does nothing in a worker process, and completion is seen when the
 * executor's SUCCEEDED counter reaches N (polled every 20 us).
 *
 * The median of R rounds (after one warm-up round) is printed, then one line per figure
 * "RESULT name value_ns" for bench/tasks.sh.
 *
 * PROCESS workers run this program again from main(): main() registers the tasks and
 * calls coda_app_worker() before anything else, so a worker never reaches the benchmark.
 */
#include <coda.h>

#include "bench_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define MAX_ROUNDS 50

static coda_app *app;
static coda_task_def *thread_def, *process_def;

/* Set by the client before each request, read by the handler and the tasks. */
static atomic_long thread_done; /* THREAD tasks run in this round */
static atomic_long thread_target;
static atomic_ullong last_done_ns; /* when the last THREAD task of the round ran */

/* Written by the handler (loop thread), read by the client after the response. */
static atomic_ullong add_ns, handler_end_ns;
static atomic_int add_rc;

/* ---- tasks ----------------------------------------------------------------- */

static int count_thread(coda_task *t) {
  (void)t;
  long n = atomic_fetch_add_explicit(&thread_done, 1, memory_order_relaxed) + 1;
  if (n == atomic_load_explicit(&thread_target, memory_order_relaxed))
    atomic_store(&last_done_ns, now_ns());
  return 0;
}

/* Runs in a worker process: nothing to count there; the parent's SUCCEEDED counter is. */
static int nothing_process(coda_task *t) {
  (void)t;
  return 0;
}

/* ---- the handler: GET /add?exec=thread|process&n=N&parallel=0|1 ---------------- */

static int add_tasks(coda_req *req, coda_res *res, void *user) {
  (void)user;
  const char *exec = coda_req_query(req, "exec");
  const char *n_text = coda_req_query(req, "n");
  const char *parallel = coda_req_query(req, "parallel");
  coda_task_def *def = exec && strcmp(exec, "process") == 0 ? process_def : thread_def;
  long n = n_text ? strtol(n_text, NULL, 10) : 0;
  int rc = 0;
  if (parallel && strcmp(parallel, "1") == 0)
    rc = coda_res_tasks_flags(res, CODA_LIST_PARALLEL);
  uint64_t t0 = now_ns();
  for (long i = 0; i < n && rc == 0; i++)
    rc = coda_res_add_task(res, def, "");
  uint64_t t1 = now_ns();
  atomic_store(&add_ns, t1 - t0);
  atomic_store(&add_rc, rc);
  atomic_store(&handler_end_ns, t1);
  if (rc)
    return rc;
  return coda_res_json_text(res, 200, "{\"added\":true}");
}

/* ---- a minimal client ------------------------------------------------------ */

static int client_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Sends one GET and reads its response; returns the status or -1. */
static int client_get(int fd, const char *target) {
  char buf[4096];
  int len = snprintf(buf, sizeof buf, "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", target);
  if (send(fd, buf, (size_t)len, MSG_NOSIGNAL) != len)
    return -1;
  size_t have = 0;
  for (;;) {
    ssize_t r = recv(fd, buf + have, sizeof buf - 1 - have, 0);
    if (r < 0 && errno == EINTR)
      continue; /* SIGCHLD from process workers */
    if (r <= 0)
      return -1;
    have += (size_t)r;
    buf[have] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (!end)
      continue;
    char *cl = strcasestr(buf, "\r\nContent-Length:");
    size_t body = cl ? strtoul(cl + 17, NULL, 10) : 0;
    if (have >= (size_t)(end + 4 - buf) + body)
      return atoi(buf + 9);
  }
}

/* ---- measuring ------------------------------------------------------------- */

typedef struct round_result {
  double add_ns, dispatch_ns; /* per task */
} round_result;

static int one_round(int fd, coda_executor ex, long n, int parallel, round_result *out) {
  long base = coda_task_stat(app, ex, CODA_STAT_SUCCEEDED);
  atomic_store(&thread_done, 0);
  atomic_store(&thread_target, ex == CODA_EXEC_THREAD ? n : -1);
  atomic_store(&last_done_ns, 0);
  char target[128];
  snprintf(target, sizeof target, "/add?exec=%s&n=%ld&parallel=%d",
           ex == CODA_EXEC_THREAD ? "thread" : "process", n, parallel);
  int status = client_get(fd, target);
  if (status != 200) {
    fprintf(stderr, "task_cost: GET %s answered %d (add: %s)\n", target, status,
            coda_strerror(atomic_load(&add_rc)));
    return -1;
  }
  uint64_t done = 0, deadline = now_ns() + 60ull * 1000000000u;
  while (now_ns() < deadline) {
    if (ex == CODA_EXEC_THREAD) {
      done = atomic_load(&last_done_ns);
    } else if (coda_task_stat(app, ex, CODA_STAT_SUCCEEDED) >= base + n) {
      done = now_ns();
    }
    if (done)
      break;
    sleep_us(20);
  }
  if (!done) {
    fprintf(stderr, "task_cost: %ld %s tasks did not finish within 60 s (%ld did)\n", n,
            coda_executor_name(ex), coda_task_stat(app, ex, CODA_STAT_SUCCEEDED) - base);
    return -1;
  }
  long failed = coda_task_stat(app, ex, CODA_STAT_FAILED);
  if (failed) {
    fprintf(stderr, "task_cost: %ld %s tasks failed\n", failed, coda_executor_name(ex));
    return -1;
  }
  out->add_ns = (double)atomic_load(&add_ns) / (double)n;
  out->dispatch_ns = (double)(done - atomic_load(&handler_end_ns)) / (double)n;
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Runs one case (warm-up + rounds), prints it and its RESULT lines. */
static int run_case(int fd, coda_executor ex, long n, int parallel, int rounds) {
  double add[MAX_ROUNDS], dispatch[MAX_ROUNDS], total[MAX_ROUNDS];
  round_result r;
  if (one_round(fd, ex, n, parallel, &r) != 0) /* warm-up: threads, allocator, pages */
    return -1;
  for (int i = 0; i < rounds; i++) {
    if (one_round(fd, ex, n, parallel, &r) != 0)
      return -1;
    add[i] = r.add_ns;
    dispatch[i] = r.dispatch_ns;
    total[i] = r.add_ns + r.dispatch_ns;
  }
  const char *name = coda_executor_name(ex), *order = parallel ? "parallel" : "ordered";
  double a = median(add, rounds), d = median(dispatch, rounds), t = median(total, rounds);
  printf("%-7s %-8s n=%-6ld add %8.3f us/task  dispatch+run %8.3f us/task  total %8.3f "
         "us/task (min %.3f, max %.3f)\n",
         name, order, n, a / 1000, d / 1000, t / 1000, total[0] / 1000,
         total[rounds - 1] / 1000);
  printf("RESULT %s_%s_n %ld\n", name, order, n);
  printf("RESULT %s_%s_add_ns %.1f\n", name, order, a);
  printf("RESULT %s_%s_dispatch_ns %.1f\n", name, order, d);
  printf("RESULT %s_%s_total_ns %.1f\n", name, order, t);
  fflush(stdout);
  return 0;
}

typedef struct server {
  uv_thread_t thread;
  int rc;
} server;

static void server_main(void *arg) {
  server *s = arg;
  s->rc = coda_app_run(app);
}

static long arg_long(int argc, char **argv, const char *name, long fallback) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0)
      return strtol(argv[i + 1], NULL, 10);
  return fallback;
}

static int setup(void) {
  int rc = coda_app_listen(app, "127.0.0.1:0");
  static const struct {
    coda_option opt;
    long value;
  } opts[] = {
      {CODA_OPT_THREADS, 1},
      {CODA_OPT_HANDLE_SIGNALS, 0},
      {CODA_OPT_LOG_LEVEL, CODA_LOG_WARN},
      {CODA_OPT_THREAD_QUEUE, 10000000},
      {CODA_OPT_PROCESS_QUEUE, 10000000},
  };
  for (size_t i = 0; rc == 0 && i < sizeof opts / sizeof opts[0]; i++)
    rc = coda_app_set(app, opts[i].opt, opts[i].value);
  if (rc == 0)
    rc = coda_app_route(app, "GET", "/add", add_tasks, NULL);
  if (rc == 0)
    rc = coda_app_bind(app);
  return rc;
}

int main(int argc, char **argv) {
  app = coda_app_new();
  if (!app)
    return 1;
  thread_def = coda_app_task(app, "bench_thread", count_thread, CODA_EXEC_THREAD);
  process_def = coda_app_task(app, "bench_process", nothing_process, CODA_EXEC_PROCESS);
  if (!thread_def || !process_def)
    return 1;
  coda_app_worker(app); /* a PROCESS worker stops here */

  long thread_n = arg_long(argc, argv, "--thread-n", 10000);
  long process_n = arg_long(argc, argv, "--process-n", 2000);
  long rounds = arg_long(argc, argv, "--rounds", 5);
  if (thread_n < 1 || process_n < 1 || rounds < 1 || rounds > MAX_ROUNDS) {
    fprintf(stderr, "usage: %s [--thread-n N] [--process-n N] [--rounds 1..%d]\n",
            argv[0], MAX_ROUNDS);
    return 2;
  }
  int rc = setup();
  if (rc) {
    fprintf(stderr, "task_cost: start-up: %s\n", coda_strerror(rc));
    return 1;
  }
  server s = {0};
  if (uv_thread_create(&s.thread, server_main, &s) != 0)
    return 1;
  int fd = -1;
  for (int i = 0; i < 500 && fd < 0; i++) {
    fd = client_connect(coda_app_port(app));
    if (fd < 0)
      sleep_us(10000);
  }
  printf("task_cost: coda %s, 1 event loop, %ld THREAD threads, %ld PROCESS workers, "
         "median of %ld rounds\n",
         coda_version(), coda_app_get(app, CODA_OPT_THREAD_POOL_SIZE),
         coda_app_get(app, CODA_OPT_PROCESS_WORKERS) > 0
             ? coda_app_get(app, CODA_OPT_PROCESS_WORKERS)
             : (long)uv_available_parallelism(),
         rounds);
  int failed = fd < 0;
  for (int parallel = 0; parallel < 2 && !failed; parallel++)
    failed = run_case(fd, CODA_EXEC_THREAD, thread_n, parallel, (int)rounds) != 0;
  for (int parallel = 0; parallel < 2 && !failed; parallel++)
    failed = run_case(fd, CODA_EXEC_PROCESS, process_n, parallel, (int)rounds) != 0;
  if (fd >= 0)
    close(fd);
  coda_app_stop(app);
  uv_thread_join(&s.thread);
  if (s.rc)
    fprintf(stderr, "task_cost: coda_app_run: %s\n", coda_strerror(s.rc));
  coda_app_free(app);
  return failed || s.rc ? 1 : 0;
}
