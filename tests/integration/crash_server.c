/*
 * crash_server.c - the program crash_test kills with SIGKILL over and over:
 * a real coda server with a SQLite store and one durable THREAD task.
 *
 *   crash_server STORE JOURNAL_PATH [LEASE_MS [DONE_FD]]
 *
 * STORE is a SQLite file's path or a store URI (redis://...: the fleet
 * test runs several of these on one Redis). With CRASH_SERVER_WORKER=1 in
 * its environment it is a worker: no listener, it runs tasks only.
 *
 * It listens on 127.0.0.1:0 and prints "port N" on stdout once bound, then
 * serves:
 *   POST /jobs?n=JOB[&ms=MS]  adds one durable task carrying JOB (which
 *                     runs for MS ms if given) and answers 202
 *                     {"id":ID,"job":JOB} (Location: /tasks/ID) once the
 *                     task is in the store; 503 when it could not be.
 *   GET /plain        200, no task; POST /mem: 202 and one in-memory task
 *   GET /tasks/{id}   the task's status as coda_task_info_json(), with the
 *                     state and attempts also in X-State and X-Attempts so
 *                     the test needs neither a JSON parser nor the schema.
 *
 * Each run of the task appends "ID JOB PID ATTEMPT T", padded to 64 bytes
 * with spaces and a newline, to the journal (T:
 * CLOCK_MONOTONIC in microseconds, the test's clock) with one O_APPEND
 * write, then fdatasync, before it returns success. A line therefore exists
 * for every run that reached its end, including one whose success never
 * made it to the store because the process was killed in between: that is
 * the duplicate at-least-once allows, and the test tells it from a real one
 * by the PID. (A write to the page cache already survives kill -9; the
 * fdatasync keeps the line across a power cut too, and widens the window
 * between a run's end and its acknowledgement, where kills must be
 * harmless.)
 *
 * With DONE_FD (a memfd the test passes down, one {pid, t} slot of two
 * uint64_t per job number), the first run of a job also records its pid
 * and the time it returned success, as the very last thing it does: a
 * store to shared memory, which no disk can delay (a journal write can
 * block for hundreds of milliseconds behind another thread's fdatasync).
 * The test uses it to tell a success the store had no time to record from
 * one it lost.
 */
#include <coda.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  _Atomic uint64_t pid;
  _Atomic uint64_t t_us;
} done_slot;

static int journal_fd = -1;
#define JOURNAL_LINE 64 /* divides the page size */
static coda_task_def *job_def;
static done_slot *done_map;
static size_t done_slots;

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Maps the test's memfd of done slots; without it, no slots are kept. */
static int map_done(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size <= 0)
    return -1;
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return -1;
  done_map = p;
  done_slots = (size_t)st.st_size / sizeof *done_map;
  return 0;
}

static int job_task(coda_task *t) {
  int64_t job = coda_task_int(t, 0);
  int64_t ms = coda_task_int(t, 1);
  /* 0-2 ms of "work", varied by job, so kills land mid-task as well as
   * between tasks; or as long as the job asked (?ms=), which the fleet
   * test uses to outlast a lease. */
  unsigned us = ms > 0 ? 0 : (unsigned)(((uint64_t)job * 2654435761u) % 2001u);
  for (int64_t slept = 0; slept < ms; slept += 10)
    usleep(10000);
  if (us)
    usleep(us);
  /* Every line is JOURNAL_LINE bytes (padded with spaces), so none
   * straddles a page of the file: a write that does is copied a page at a
   * time, and a kill -9 between the two halves leaves a torn line. */
  char line[JOURNAL_LINE + 1];
  int n = snprintf(line, sizeof line, "%llu %lld %d %d %llu",
                   (unsigned long long)coda_task_id(t), (long long)job, (int)getpid(),
                   coda_task_attempt(t), (unsigned long long)now_us());
  if (n < 0 || n >= JOURNAL_LINE)
    return coda_task_fail(t, "journal line too long");
  memset(line + n, ' ', (size_t)(JOURNAL_LINE - 1 - n));
  line[JOURNAL_LINE - 1] = '\n';
  n = JOURNAL_LINE;
  if (write(journal_fd, line, (size_t)n) != n)
    return coda_task_fail(t, "journal write: %s", strerror(errno));
  if (fdatasync(journal_fd) != 0)
    return coda_task_fail(t, "journal fdatasync: %s", strerror(errno));
  /* The result names the process whose run it is. */
  char result[32];
  int len = snprintf(result, sizeof result, "pid %d", (int)getpid());
  coda_task_set_result(t, result, (size_t)len);
  /* The first run of a job claims its slot, and only then reads the
   * clock: nothing but the return lies between that time and the success
   * being queued for the store. */
  if (done_map && job > 0 && (uint64_t)job < done_slots) {
    uint64_t none = 0;
    if (atomic_compare_exchange_strong(&done_map[job].pid, &none, (uint64_t)getpid()))
      atomic_store(&done_map[job].t_us, now_us());
  }
  return 0;
}

static int post_job(coda_req *req, coda_res *res, void *user) {
  (void)user;
  const char *n = coda_req_query(req, "n");
  char *end = NULL;
  long long job = n ? strtoll(n, &end, 10) : 0;
  if (!n || !*n || *end || job <= 0)
    return coda_res_json_text(res, 400, "{\"error\":\"want ?n=JOB\"}");
  const char *ms = coda_req_query(req, "ms");
  long long run_ms = ms ? strtoll(ms, NULL, 10) : 0;
  coda_task_opts o = CODA_TASK_OPTS_INIT(.flags = CODA_TASK_DURABLE);
  int rc = coda_res_add_task_opts(res, job_def, &o, "ii", (int64_t)job, (int64_t)run_ms);
  if (rc)
    return rc; /* 503 with Retry-After: not accepted */
  char body[96], location[64];
  snprintf(body, sizeof body, "{\"id\":%llu,\"job\":%lld}", (unsigned long long)o.id,
           job);
  snprintf(location, sizeof location, "/tasks/%llu", (unsigned long long)o.id);
  coda_res_header(res, "Location", location);
  return coda_res_json_text(res, 202, body);
}

/* GET /plain: no task at all; POST /mem: one in-memory task. Both must
 * carry on while the store is down. */
static int memory_task(coda_task *t) {
  (void)t;
  return 0;
}
static coda_task_def *memory_def;

static int get_plain(coda_req *req, coda_res *res, void *user) {
  (void)req;
  (void)user;
  return coda_res_json_text(res, 200, "{\"plain\":true}");
}

static int post_mem(coda_req *req, coda_res *res, void *user) {
  (void)req;
  (void)user;
  int rc = coda_res_add_task(res, memory_def, "");
  return rc ? rc : coda_res_json_text(res, 202, "{\"memory\":true}");
}

static int get_task(coda_req *req, coda_res *res, void *user) {
  (void)user;
  const char *s = coda_req_param(req, "id");
  char *end = NULL;
  unsigned long long id = s ? strtoull(s, &end, 10) : 0;
  if (!s || !*s || *end)
    return coda_res_json_text(res, 400, "{\"error\":\"bad id\"}");
  coda_task_info *info = NULL;
  int rc = coda_task_get(coda_req_app(req), (uint64_t)id, &info);
  if (rc == CODA_ENOTFOUND)
    return coda_res_json_text(res, 404, "{\"error\":\"no such task\"}");
  if (rc) {
    char body[256];
    snprintf(body, sizeof body, "{\"error\":\"%s\"}", coda_strerror(rc));
    coda_res_header(res, "X-State", "error");
    return coda_res_json_text(res, 500, body);
  }
  char small[1024], attempts[16];
  size_t need = coda_task_info_json(info, small, sizeof small);
  char *json = small;
  if (need >= sizeof small) {
    json = coda_req_alloc(req, need + 1);
    if (json)
      coda_task_info_json(info, json, need + 1);
  }
  snprintf(attempts, sizeof attempts, "%d", info->attempts);
  coda_res_header(res, "X-State", coda_task_state_name(info->state));
  coda_res_header(res, "X-Attempts", attempts);
  coda_task_info_free(info);
  if (!json)
    return CODA_ENOMEM;
  return coda_res_json_text(res, 200, json);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s STORE_PATH JOURNAL_PATH [LEASE_MS [DONE_FD]]\n", argv[0]);
    return 2;
  }
  /* Never outlive the test that drives it, even if the test is killed. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  long lease = argc > 3 ? atol(argv[3]) : 3000;
  if (argc > 4 && map_done(atoi(argv[4])) != 0) {
    fprintf(stderr, "crash_server: cannot map done slots (fd %s): %s\n", argv[4],
            strerror(errno));
    return 2;
  }
  journal_fd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (journal_fd < 0) {
    fprintf(stderr, "crash_server: %s: %s\n", argv[2], strerror(errno));
    return 2;
  }
  coda_app *app = coda_app_new();
  if (!app)
    return 2;
  job_def = coda_app_task(app, "crash_job", job_task, CODA_EXEC_THREAD);
  /* A task caught by many kills must not run out of attempts: dead is a
   * verdict for tasks that fail, and this one never does. */
  int rc = job_def ? coda_task_def_retry(job_def, 1000, 0, 0) : CODA_ENOMEM;
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_THREADS, 2);
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_STORE_POLL, 20);
  /* Short enough that a task running at a kill runs again within the test,
   * far longer than a run takes, so a live process never loses its lease. */
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_TASK_LEASE, lease);
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_LOG_LEVEL, CODA_LOG_WARN);
  if (rc == 0)
    rc = coda_app_route(app, "POST", "/jobs", post_job, NULL);
  if (rc == 0)
    rc = coda_app_route(app, "GET", "/tasks/{id}", get_task, NULL);
  memory_def = coda_app_task(app, "memory_job", memory_task, CODA_EXEC_THREAD);
  if (rc == 0)
    rc = memory_def ? coda_app_route(app, "GET", "/plain", get_plain, NULL) : CODA_ENOMEM;
  if (rc == 0)
    rc = coda_app_route(app, "POST", "/mem", post_mem, NULL);
  if (rc) {
    fprintf(stderr, "crash_server: set-up: %s\n", coda_strerror(rc));
    return 2;
  }
  char uri[4200];
  /* A URI (redis://..., memory) as it is; a bare path is a SQLite file. */
  if (strstr(argv[1], "://") || strncmp(argv[1], "sqlite:", 7) == 0)
    snprintf(uri, sizeof uri, "%s", argv[1]);
  else
    snprintf(uri, sizeof uri, "sqlite:%s", argv[1]);
  rc = coda_app_store(app, uri);
  if (rc) {
    fprintf(stderr, "crash_server: store %s: %s (%s)\n", argv[1], coda_strerror(rc),
            coda_app_store_error(app));
    return 2;
  }
  /* CRASH_SERVER_WORKER=1: a worker, which runs tasks and serves no HTTP
   * (it prints "port 0"). */
  const char *worker = getenv("CRASH_SERVER_WORKER");
  int is_worker = worker && strcmp(worker, "1") == 0;
  rc = coda_app_listen(app, is_worker ? NULL : "127.0.0.1:0");
  if (rc == 0)
    rc = coda_app_bind(app);
  if (rc) {
    fprintf(stderr, "crash_server: listen: %s\n", coda_strerror(rc));
    return 2;
  }
  printf("port %d\n", coda_app_port(app));
  fflush(stdout);
  rc = coda_app_run(app);
  coda_app_free(app);
  close(journal_fd);
  if (rc)
    fprintf(stderr, "crash_server: run: %s\n", coda_strerror(rc));
  return rc ? 1 : 0;
}
