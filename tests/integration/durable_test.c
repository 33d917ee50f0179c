/*
 * durable_test.c - durable tasks end to end: a real server on a loopback
 * port, real clients, and the two stores ("memory" and a real SQLite file
 * in a mkdtemp directory that is removed at the end).
 *
 * Every case builds its own app (the options differ: poll, backoff, caps),
 * runs it on a thread with the harness, and reads task status back with
 * coda_task_get(), the library call behind GET /tasks/{id}. Tasks record
 * each run (tag, attempt, monotonic and wall-clock time, phase) in one
 * mutex-protected table, so checks compare what ran with what the store
 * says. Tags are unique per case and per store, so a late run of one case
 * can never satisfy another.
 *
 * All handlers go through one route, GET /add?def=NAME&tag=T&..., which
 * adds a durable task of that definition with the options the query asks
 * for and answers 202 with the id in the body and a Location header.
 *
 * Cases: status by id (state, attempts, times, progress, result, JSON,
 * unknown ids), retries, backoff timing with its cap and jitter, dead
 * after the last attempt (opts and definition policy, error hook), delayed
 * tasks (delay_ms and run_at), idempotency keys, a full store (503 with
 * Retry-After, nothing acknowledged lost), an outcome too big for a capped
 * store, a failing handler's durable tasks, a durable PROCESS task,
 * route-level durable tasks, timeouts as failed attempts, a queue wait
 * past the lease, a restart on the same file, and store errors at start
 * (each app its own, two apps opening on two threads at once).
 */
#include "app/app.h"
#include "harness.h"
#include "tasks/durable.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <math.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- clocks and run records ---------------------------------------------- */

static int64_t unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct {
  char tag[64];
  int attempt;
  uint64_t mono;
  int64_t wall;
  int phase;
  int durable; /* what coda_task_durable() said */
} run_event;

#define MAX_EVENTS 8192
static run_event events[MAX_EVENTS];
static int nevents;
static uv_mutex_t events_mu; /* tasks record from the executors' threads */
static atomic_int phase = 1; /* the restart case: which app is running */

static void record_run_durable(const char *tag, int attempt, int durable) {
  uv_mutex_lock(&events_mu);
  if (nevents < MAX_EVENTS) {
    run_event *e = &events[nevents++];
    snprintf(e->tag, sizeof e->tag, "%s", tag ? tag : "(null)");
    e->attempt = attempt;
    e->mono = tc_now_ms();
    e->wall = unix_ms();
    e->phase = atomic_load(&phase);
    e->durable = durable;
  }
  uv_mutex_unlock(&events_mu);
}

static void record_run(const char *tag, int attempt) {
  record_run_durable(tag, attempt, 1);
}

/* Copies up to `max` runs of `tag` (in the order they ran); returns how
 * many there were in all. */
static int runs_of(const char *tag, run_event *out, int max) {
  int n = 0;
  uv_mutex_lock(&events_mu);
  for (int i = 0; i < nevents; i++)
    if (strcmp(events[i].tag, tag) == 0) {
      if (out && n < max)
        out[n] = events[i];
      n++;
    }
  uv_mutex_unlock(&events_mu);
  return n;
}

static int runs_in_phase(const char *tag, int ph) {
  int n = 0;
  uv_mutex_lock(&events_mu);
  for (int i = 0; i < nevents; i++)
    if (strcmp(events[i].tag, tag) == 0 && events[i].phase == ph)
      n++;
  uv_mutex_unlock(&events_mu);
  return n;
}

static int wait_runs(const char *tag, int n, int ms) {
  for (int waited = 0; waited < ms; waited += 5) {
    if (runs_of(tag, NULL, 0) >= n)
      return 1;
    tc_sleep_ms(5);
  }
  return runs_of(tag, NULL, 0) >= n;
}

/* Gates hold a task until the test opens them (or 20 s, or a stop). */
static atomic_int gate_status, gate_blob;
static atomic_int status_reached;

static void wait_gate(coda_task *t, atomic_int *gate) {
  for (int i = 0; i < 4000 && !atomic_load(gate) && !coda_task_cancelled(t); i++)
    tc_sleep_ms(5);
}

/* ---- tasks ---------------------------------------------------------------- */

/* Reports progress 0.5, waits at the gate, stores a result. */
static int status_task(coda_task *t) {
  const char *tag = coda_task_str(t, 0);
  record_run(tag, coda_task_attempt(t));
  if (!coda_task_durable(t))
    return coda_task_fail(t, "not durable");
  if (coda_task_progress(t, 0.5) != 0)
    return coda_task_fail(t, "progress refused");
  atomic_store(&status_reached, 1);
  wait_gate(t, &gate_status);
  char result[128];
  int n = snprintf(result, sizeof result, "result:%s", tag);
  if (coda_task_set_result(t, result, (size_t)n) != 0)
    return coda_task_fail(t, "set_result refused");
  return 0;
}

/* The same on the event loop, without waiting. */
static int status_loop_task(coda_task *t) {
  const char *tag = coda_task_str(t, 0);
  record_run(tag, coda_task_attempt(t));
  char result[128];
  int n = snprintf(result, sizeof result, "loop:%s", tag);
  if (coda_task_progress(t, 0.25) != 0 || coda_task_set_result(t, result, (size_t)n) != 0)
    return coda_task_fail(t, "progress or result refused");
  return 0;
}

/* Fails its first `fails` attempts (argument 1), then succeeds. */
static int flaky_task(coda_task *t) {
  const char *tag = coda_task_str(t, 0);
  int attempt = coda_task_attempt(t);
  record_run(tag, attempt);
  if (attempt <= coda_task_int(t, 1))
    return coda_task_fail(t, "flaky attempt %d of %s", attempt, tag);
  return 0;
}

/* Always fails. */
static int doomed_task(coda_task *t) {
  const char *tag = coda_task_str(t, 0);
  int attempt = coda_task_attempt(t);
  record_run(tag, attempt);
  return coda_task_fail(t, "doomed attempt %d of %s", attempt, tag);
}

/* Records its run and sleeps argument 1 ms. */
static int note_task(coda_task *t) {
  record_run_durable(coda_task_str(t, 0), coda_task_attempt(t), coda_task_durable(t));
  if (coda_task_int(t, 1) > 0)
    tc_sleep_ms((int)coda_task_int(t, 1));
  return 0;
}

/* Bytes whose pattern depends on the sequence number, checked on arrival. */
static size_t blob_len(int64_t seq) { return 1024 + (size_t)((seq * 997) % 3072); }
static unsigned char blob_byte(int64_t seq, size_t i) {
  return (unsigned char)((seq * 31 + (int64_t)i) & 0xff);
}

static int blob_task(coda_task *t) {
  const char *tag = coda_task_str(t, 0);
  int64_t seq = coda_task_int(t, 1);
  size_t len = 0;
  const unsigned char *b = coda_task_bytes(t, 2, &len);
  if (!b || len != blob_len(seq))
    return coda_task_fail(t, "blob %lld: %zu bytes", (long long)seq, len);
  for (size_t i = 0; i < len; i++)
    if (b[i] != blob_byte(seq, i))
      return coda_task_fail(t, "blob %lld: byte %zu differs", (long long)seq, i);
  wait_gate(t, &gate_blob);
  record_run(tag, coda_task_attempt(t));
  return 0;
}

/* PROCESS tasks run in worker processes that share no memory with the
 * test: they append "TAG attempt=N durable=D" lines to a journal file
 * (O_APPEND writes of a short line are atomic). */
static char journal_path[256];

static int proc_flaky_task(coda_task *t) {
  const char *tag = coda_task_str(t, 0);
  int attempt = coda_task_attempt(t);
  char line[160];
  int n = snprintf(line, sizeof line, "%s attempt=%d durable=%d\n", tag, attempt,
                   coda_task_durable(t));
  int fd = open(journal_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (fd >= 0) {
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
  }
  if (attempt <= coda_task_int(t, 1))
    return coda_task_fail(t, "process attempt %d of %s", attempt, tag);
  return 0;
}

/* In a worker process: progress 0.25, then 0.5 and a pause long enough to
 * be seen, 0.75 at the end, and a result naming the tag. Attempt 1 fails
 * when arg 1 is set (its progress must stay as reported). */
static int proc_report_task(coda_task *t) {
  coda_task_progress(t, 0.25);
  coda_task_progress(t, 0.5); /* within 10 ms: only DONE or a later send has it */
  tc_sleep_ms(30);
  coda_task_progress(t, 0.6);
  tc_sleep_ms(400);
  coda_task_progress(t, 0.75);
  char result[96];
  int n = snprintf(result, sizeof result, "rendered %s by %d", coda_task_str(t, 0),
                   (int)getpid());
  coda_task_set_result(t, result, (size_t)n);
  if (coda_task_int(t, 1) && coda_task_attempt(t) == 1)
    return coda_task_fail(t, "first attempt fails");
  return 0;
}

static void late_done(uv_timer_t *tm) {
  coda_task_done(tm->data, 0, NULL);
  uv_close((uv_handle_t *)tm, (uv_close_cb)free);
}

/* LOOP: says PENDING and calls coda_task_done() 300 ms later, past its
 * 100 ms timeout. */
static int late_loop_task(coda_task *t) {
  record_run(coda_task_str(t, 0), coda_task_attempt(t));
  uv_timer_t *tm = malloc(sizeof *tm);
  if (!tm)
    return CODA_ENOMEM;
  uv_timer_init(coda_task_loop(t), tm);
  tm->data = t;
  uv_timer_start(tm, late_done, 300, 0);
  return CODA_PENDING;
}

static void journal_read(char *buf, size_t cap) { tc_read_file(journal_path, buf, cap); }

/* Outlives its timeout on attempt 1 (it stops when cancelled, failing),
 * succeeds at once on attempt 2. */
static int sleepy_task(coda_task *t) {
  int attempt = coda_task_attempt(t);
  record_run(coda_task_str(t, 0), attempt);
  if (attempt > 1)
    return 0;
  for (int i = 0; i < 600 && !coda_task_cancelled(t); i++)
    tc_sleep_ms(5);
  return coda_task_fail(t, "stopped after cancellation");
}

/* Stores a result of argument 1 bytes; says what coda_task_set_result
 * answered. */
static atomic_int big_result_rc = 1;

static int big_result_task(coda_task *t) {
  size_t len = (size_t)coda_task_int(t, 1);
  char *data = malloc(len);
  if (!data)
    return coda_task_fail(t, "no memory");
  memset(data, 'r', len);
  int rc = coda_task_set_result(t, data, len);
  free(data);
  atomic_store(&big_result_rc, rc);
  record_run(coda_task_str(t, 0), coda_task_attempt(t));
  return 0;
}

/* Restart case: in phase 1 it outlives the drain deadline and stops only
 * when cancelled by the shutdown (a failure: it did not finish); in phase
 * 2 it finishes at once. */
static int slow_task(coda_task *t) {
  record_run(coda_task_str(t, 0), coda_task_attempt(t));
  if (atomic_load(&phase) == 1) {
    for (int i = 0; i < 1000 && !coda_task_cancelled(t); i++)
      tc_sleep_ms(5);
    return coda_task_fail(t, "interrupted by the shutdown");
  }
  return 0;
}

/* ---- error hook ----------------------------------------------------------- */

static uv_mutex_t hook_mu;
static int hook_calls_total;
static char hook_last_tag[64], hook_last_message[256];
static int hook_max_attempt; /* for hook_last_tag's task */
static int hook_calls_for_tag;

static void on_task_error(const coda_task *t, const char *message, void *user) {
  (void)user;
  const char *tag = coda_task_str(t, 0);
  uv_mutex_lock(&hook_mu);
  hook_calls_total++;
  if (tag && strcmp(tag, hook_last_tag) != 0) {
    snprintf(hook_last_tag, sizeof hook_last_tag, "%s", tag);
    hook_calls_for_tag = 0;
    hook_max_attempt = 0;
  }
  hook_calls_for_tag++;
  if (coda_task_attempt(t) > hook_max_attempt)
    hook_max_attempt = coda_task_attempt(t);
  snprintf(hook_last_message, sizeof hook_last_message, "%s", message ? message : "");
  uv_mutex_unlock(&hook_mu);
}

/* ---- fixture: an app with every definition and the /add route ------------ */

typedef struct {
  coda_task_def *status, *status_loop, *flaky, *doomed, *doomed_def, *note, *blob, *slow,
      *big_result, *proc_flaky, *route_note, *sleepy, *proc_report, *late_loop;
} defs;

typedef struct {
  coda_app *app;
  test_server ts;
  defs d;
  int started;
} fixture;

static coda_task_def *def_named(defs *d, const char *name) {
  if (!name)
    return NULL;
  struct {
    const char *name;
    coda_task_def *def;
  } table[] = {{"status", d->status},
               {"status_loop", d->status_loop},
               {"flaky", d->flaky},
               {"doomed", d->doomed},
               {"doomed_def", d->doomed_def},
               {"note", d->note},
               {"blob", d->blob},
               {"slow", d->slow},
               {"big_result", d->big_result},
               {"proc_flaky", d->proc_flaky},
               {"proc_report", d->proc_report},
               {"late_loop", d->late_loop},
               {"sleepy", d->sleepy}};
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (strcmp(table[i].name, name) == 0)
      return table[i].def;
  return NULL;
}

static long long query_int(coda_req *req, const char *name, long long dflt) {
  const char *v = coda_req_query(req, name);
  return v && *v ? strtoll(v, NULL, 10) : dflt;
}

/* GET /add?def=NAME&tag=T[&n=INT][&max=N][&delay=MS][&at=UNIXMS][&key=K] */
static int h_add(coda_req *req, coda_res *res, void *user) {
  defs *d = user;
  coda_task_def *def = def_named(d, coda_req_query(req, "def"));
  const char *tag = coda_req_query(req, "tag");
  if (!def || !tag)
    return coda_res_json_text(res, 400, "{\"error\":\"def and tag\"}");
  coda_task_opts o = CODA_TASK_OPTS_INIT();
  o.flags = CODA_TASK_DURABLE;
  o.max_attempts = (int)query_int(req, "max", 0);
  o.delay_ms = query_int(req, "delay", 0);
  o.run_at = query_int(req, "at", 0);
  o.key = coda_req_query(req, "key");
  int64_t n = query_int(req, "n", 0);
  int rc;
  if (def == d->blob) {
    size_t len = blob_len(n);
    unsigned char *b = coda_req_alloc(req, len);
    if (!b)
      return CODA_ENOMEM;
    for (size_t i = 0; i < len; i++)
      b[i] = blob_byte(n, i);
    rc = coda_res_add_task_opts(res, def, &o, "sib", tag, n, (const void *)b, len);
  } else {
    rc = coda_res_add_task_opts(res, def, &o, "si", tag, n);
  }
  if (rc)
    return rc;
  char body[32], loc[64];
  snprintf(body, sizeof body, "%" PRIu64, o.id);
  snprintf(loc, sizeof loc, "/tasks/%" PRIu64, o.id);
  coda_res_status(res, 202);
  coda_res_header(res, "Location", loc);
  return coda_res_body(res, body, strlen(body));
}

/* GET /add-then-fail?tag=T[&always=1]: adds a durable note (ALWAYS when
 * asked), keeps its id for the test, then fails (500). */
static _Atomic uint64_t failed_handler_id;

static int h_add_then_fail(coda_req *req, coda_res *res, void *user) {
  defs *d = user;
  coda_task_opts o = CODA_TASK_OPTS_INIT();
  o.flags = CODA_TASK_DURABLE | (coda_req_query(req, "always") ? CODA_TASK_ALWAYS : 0u);
  int rc = coda_res_add_task_opts(res, d->note, &o, "si", coda_req_query(req, "tag"),
                                  (int64_t)0);
  atomic_store(&failed_handler_id, rc ? 0 : o.id);
  return rc ? rc : CODA_EIO;
}

/* 202 with the two task ids as the body: "ID1 ID2". */
static int reply_ids(coda_res *res, uint64_t a, uint64_t b) {
  char body[64];
  snprintf(body, sizeof body, "%" PRIu64 " %" PRIu64, a, b);
  coda_res_status(res, 202);
  return coda_res_body(res, body, strlen(body));
}

/* GET /stopping?tag=T: a stop-on-failure list of a durable task that dies
 * at once, then a durable note that must then never run. Body "ID1 ID2". */
static int h_stopping(coda_req *req, coda_res *res, void *user) {
  defs *d = user;
  char a[64], b[64];
  snprintf(a, sizeof a, "%s-a", coda_req_query(req, "tag"));
  snprintf(b, sizeof b, "%s-b", coda_req_query(req, "tag"));
  coda_res_tasks_flags(res, CODA_LIST_STOP_ON_FAILURE);
  coda_task_opts o1 = CODA_TASK_OPTS_INIT(), o2 = CODA_TASK_OPTS_INIT();
  o1.flags = o2.flags = CODA_TASK_DURABLE;
  o1.max_attempts = 1;
  int rc = coda_res_add_task_opts(res, d->doomed, &o1, "si", a, (int64_t)0);
  rc = rc ? rc : coda_res_add_task_opts(res, d->note, &o2, "si", b, (int64_t)0);
  return rc ? rc : reply_ids(res, o1.id, o2.id);
}

/* GET /pair?tag=T: two durable PROCESS tasks in one ordered list (they go
 * to one worker as a chain); the first fails its first attempt. */
static int h_pair(coda_req *req, coda_res *res, void *user) {
  defs *d = user;
  char a[64], b[64];
  snprintf(a, sizeof a, "%s-a", coda_req_query(req, "tag"));
  snprintf(b, sizeof b, "%s-b", coda_req_query(req, "tag"));
  coda_task_opts o1 = CODA_TASK_OPTS_INIT(), o2 = CODA_TASK_OPTS_INIT();
  o1.flags = o2.flags = CODA_TASK_DURABLE;
  int rc = coda_res_add_task_opts(res, d->proc_report, &o1, "si", a, (int64_t)1);
  rc = rc ? rc : coda_res_add_task_opts(res, d->proc_report, &o2, "si", b, (int64_t)0);
  return rc ? rc : reply_ids(res, o1.id, o2.id);
}

static int h_plain(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  return coda_res_body_static(res, "plain", 5);
}

/* GET /durable-stream?tag=T: a durable task (it sleeps 300 ms), then a
 * stream; if the stream is refused, an ordinary answer. The body says which
 * and gives the task's id. */
static int h_durable_stream(coda_req *req, coda_res *res, void *user) {
  defs *d = user;
  coda_task_opts o = CODA_TASK_OPTS_INIT(.flags = CODA_TASK_DURABLE);
  int rc = coda_res_add_task_opts(res, d->note, &o, "si", coda_req_query(req, "tag"),
                                  (int64_t)300);
  if (rc)
    return rc;
  char text[64];
  coda_stream *st = coda_res_stream(res);
  if (!st) {
    snprintf(text, sizeof text, "refused %llu", (unsigned long long)o.id);
    return coda_res_body(res, text, strlen(text));
  }
  snprintf(text, sizeof text, "streamed %llu", (unsigned long long)o.id);
  coda_stream_write(st, text, strlen(text));
  return coda_stream_end(st);
}

/* GET /busy?ms=N: blocks its loop for N ms (what a handler must never do;
 * a test uses it to make things happen in one loop iteration). */
static int h_busy(coda_req *req, coda_res *res, void *user) {
  (void)user;
  tc_sleep_ms(atoi(coda_req_query(req, "ms")));
  return coda_res_body_static(res, "busy", 4);
}

static defs register_defs(coda_app *a) {
  defs d;
  d.status = coda_app_task(a, "status", status_task, CODA_EXEC_THREAD);
  d.status_loop = coda_app_task(a, "status_loop", status_loop_task, CODA_EXEC_LOOP);
  d.flaky = coda_app_task(a, "flaky", flaky_task, CODA_EXEC_THREAD);
  d.doomed = coda_app_task(a, "doomed", doomed_task, CODA_EXEC_THREAD);
  d.doomed_def = coda_app_task(a, "doomed_def", doomed_task, CODA_EXEC_THREAD);
  d.note = coda_app_task(a, "note", note_task, CODA_EXEC_THREAD);
  d.blob = coda_app_task(a, "blob", blob_task, CODA_EXEC_THREAD);
  d.slow = coda_app_task(a, "slow", slow_task, CODA_EXEC_THREAD);
  d.big_result = coda_app_task(a, "big_result", big_result_task, CODA_EXEC_THREAD);
  d.proc_flaky = coda_app_task(a, "proc_flaky", proc_flaky_task, CODA_EXEC_PROCESS);
  d.proc_report = coda_app_task(a, "proc_report", proc_report_task, CODA_EXEC_PROCESS);
  d.late_loop = coda_app_task(a, "late_loop", late_loop_task, CODA_EXEC_LOOP);
  coda_task_def_timeout(d.late_loop, 100);
  d.route_note = coda_app_task(a, "route_note", note_task, CODA_EXEC_THREAD);
  d.sleepy = coda_app_task(a, "sleepy", sleepy_task, CODA_EXEC_THREAD);
  coda_task_def_timeout(d.sleepy, 150);
  return d;
}

static int quiet(void) {
  return getenv("DURABLE_TEST_LOG") ? CODA_LOG_DEBUG : CODA_LOG_OFF;
}

/* A new app on `store`, with a fast poll and a short backoff, then the
 * options in `opts` (option, value pairs ending with 0; set before the
 * store opens, since the size cap applies at open). Returns 0 or the
 * coda_app_store() code (the message is printed). */
static int fixture_init(fixture *f, const char *store, const long *opts) {
  memset(f, 0, sizeof *f);
  f->app = coda_app_new();
  if (!f->app)
    return CODA_ENOMEM;
  f->d = register_defs(f->app);
  coda_app_set(f->app, CODA_OPT_LOG_LEVEL, quiet());
  coda_app_set(f->app, CODA_OPT_THREADS, 2);
  coda_app_set(f->app, CODA_OPT_PROCESS_WORKERS, 0);
  coda_app_set(f->app, CODA_OPT_STORE_POLL, 20);
  coda_app_set(f->app, CODA_OPT_BACKOFF, 200);
  for (int i = 0; opts && opts[i]; i += 2) {
    int rc = coda_app_set(f->app, (coda_option)opts[i], opts[i + 1]);
    if (rc) {
      fprintf(stderr, "  coda_app_set(%ld, %ld): %s\n", opts[i], opts[i + 1],
              coda_strerror(rc));
      return rc;
    }
  }
  coda_app_on_task_error(f->app, on_task_error, NULL);
  coda_app_route(f->app, "GET", "/add", h_add, &f->d);
  coda_app_route(f->app, "GET", "/plain", h_plain, NULL);
  coda_app_route(f->app, "GET", "/add-then-fail", h_add_then_fail, &f->d);
  /* A route whose declared task is of a definition made durable. */
  coda_task_def_durable(f->d.route_note, 1);
  coda_app_route(f->app, "GET", "/routed", h_plain, NULL);
  coda_app_route(f->app, "GET", "/stopping", h_stopping, &f->d);
  coda_app_route(f->app, "GET", "/pair", h_pair, &f->d);
  coda_app_route(f->app, "GET", "/busy", h_busy, NULL);
  coda_app_route(f->app, "GET", "/durable-stream", h_durable_stream, &f->d);
  coda_app_route_task(f->app, "GET", "/routed", f->d.route_note, "si", "route-note",
                      (int64_t)0);
  int rc = coda_app_store(f->app, store);
  if (rc)
    fprintf(stderr, "  coda_app_store(%s): %s: %s\n", store, coda_strerror(rc),
            coda_app_store_error(f->app));
  return rc;
}

static int fixture_start(fixture *f) {
  int rc = ts_start(&f->ts, f->app);
  f->started = rc == 0;
  if (rc)
    fprintf(stderr, "  ts_start: %s\n", coda_strerror(rc));
  return rc;
}

static void fixture_done(fixture *f) {
  if (f->started)
    ts_stop(&f->ts);
  f->started = 0;
  coda_app_free(f->app);
  f->app = NULL;
}

/* ---- HTTP ------------------------------------------------------------------ */

/* One request on its own connection; returns the status (-1: none). */
static int http_get(int port, const char *path, char *buf, size_t cap) {
  return tc_get(port, path, buf, cap, 10000);
}

/* GET path, which must answer 202 with an id in the body; 0 otherwise. */
static uint64_t add_task(int port, const char *path) {
  char buf[4096];
  int status = http_get(port, path, buf, sizeof buf);
  if (status != 202) {
    fprintf(stderr, "  GET %s: status %d\n", path, status);
    return 0;
  }
  const char *body = tc_body(buf);
  return body ? strtoull(body, NULL, 10) : 0;
}

/* ---- status helpers ---------------------------------------------------------- */

/* Polls until the task reaches `want` (or ms pass); returns the last info
 * read (NULL if never found), which the caller frees. */
static coda_task_info *wait_state(coda_app *a, uint64_t id, coda_task_state want,
                                  int ms) {
  coda_task_info *info = NULL;
  for (int waited = 0;; waited += 5) {
    coda_task_info_free(info);
    info = NULL;
    if (coda_task_get(a, id, &info) != 0)
      info = NULL;
    if ((info && info->state == want) || waited >= ms)
      return info;
    tc_sleep_ms(5);
  }
}

static const char *state_name(const coda_task_info *info) {
  return info ? coda_task_state_name(info->state) : "(not found)";
}

#define CHECK_STATE(info, want)                                                          \
  do {                                                                                   \
    if (!(info) || (info)->state != (want)) {                                            \
      fprintf(stderr, "  %s:%d: state %s, expected %s\n", __FILE__, __LINE__,            \
              state_name(info), coda_task_state_name(want));                             \
      test__failures_in_case++;                                                          \
    }                                                                                    \
  } while (0)

/* REQUIRE for a case with a running fixture `f`: stop it before leaving. */
#define REQUIRE_F(cond)                                                                  \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "  %s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);       \
      test__failures_in_case++;                                                          \
      fixture_done(&f);                                                                  \
      return;                                                                            \
    }                                                                                    \
  } while (0)

static char store_dir[256];
static int store_seq;

/* "memory", or "sqlite:DIR/NAME-N.db" for a fresh file. */
static const char *store_uri(const char *kind, const char *name, char *buf, size_t cap) {
  if (strcmp(kind, "memory") == 0)
    return "memory";
  snprintf(buf, cap, "sqlite:%s/%s-%d.db", store_dir, name, ++store_seq);
  return buf;
}

/* ---- 1. status by id ------------------------------------------------------ */

typedef struct listed {
  uint64_t ids[16];
  coda_task_state states[16];
  int n;
  int all_dead;
} listed;

static int collect_listed(const coda_task_info *info, void *user) {
  listed *l = user;
  if (l->n == 0)
    l->all_dead = 1;
  if (info->state != CODA_STATE_DEAD)
    l->all_dead = 0;
  if (l->n < 16) {
    l->states[l->n] = info->state;
    l->ids[l->n++] = info->id;
  }
  return 0;
}

static void status_by_id(const char *kind) {
  char uri[512], path[512], tag[64];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri(kind, "status", uri, sizeof uri), NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  atomic_store(&gate_status, 0);
  atomic_store(&status_reached, 0);
  snprintf(tag, sizeof tag, "status-%s", kind);

  int64_t before = unix_ms();
  char buf[4096];
  snprintf(path, sizeof path, "/add?def=status&tag=%s", tag);
  int status = http_get(f.ts.port, path, buf, sizeof buf);
  CHECK_EQ_INT(status, 202);
  uint64_t id = tc_body(buf) ? strtoull(tc_body(buf), NULL, 10) : 0;
  if (status != 202 || id == 0)
    goto out;
  char loc[64];
  snprintf(loc, sizeof loc, "\r\nLocation: /tasks/%" PRIu64 "\r\n", id);
  CHECK(strstr(buf, loc) != NULL);

  /* Written before the response: readable the moment the client has it. */
  coda_task_info *info = NULL;
  CHECK_EQ_INT(coda_task_get(f.app, id, &info), 0);
  if (info) {
    CHECK(info->id == id);
    CHECK_EQ_STR(info->name, "status");
    CHECK(info->key == NULL);
    CHECK(info->state == CODA_STATE_QUEUED || info->state == CODA_STATE_RUNNING);
    CHECK(info->created_at >= before && info->created_at <= unix_ms());
    CHECK_EQ_INT(info->max_attempts, 5); /* CODA_OPT_MAX_ATTEMPTS' default */
  }
  coda_task_info_free(info);

  /* Running, held at the gate: progress 0.5 is visible, no result yet. */
  for (int i = 0; i < 1000 && !atomic_load(&status_reached); i++)
    tc_sleep_ms(5);
  CHECK(atomic_load(&status_reached));
  info = wait_state(f.app, id, CODA_STATE_RUNNING, 2000);
  CHECK_STATE(info, CODA_STATE_RUNNING);
  if (info) {
    CHECK(info->progress > 0.49 && info->progress < 0.51);
    CHECK_EQ_INT(info->attempts, 1);
    CHECK(info->started_at >= info->created_at);
    CHECK_EQ_INT(info->finished_at, 0);
    CHECK(info->result == NULL);
    CHECK(info->error == NULL);
  }
  coda_task_info_free(info);

  /* Listed as running too, though the store wrote its first attempt as
   * queued; and not listed as queued. */
  listed running = {0}, queued = {0};
  CHECK(coda_task_list(f.app, CODA_STATE_RUNNING, 0, 10, collect_listed, &running) >= 1);
  int seen = 0;
  for (int i = 0; i < running.n; i++)
    seen += running.ids[i] == id && running.states[i] == CODA_STATE_RUNNING;
  CHECK_EQ_INT(seen, 1);
  CHECK(coda_task_list(f.app, CODA_STATE_QUEUED, 0, 10, collect_listed, &queued) >= 0);
  for (int i = 0; i < queued.n; i++)
    CHECK(queued.ids[i] != id);

  atomic_store(&gate_status, 1);
  info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info && info->state == CODA_STATE_SUCCEEDED) {
    CHECK_EQ_INT(info->attempts, 1);
    CHECK(info->created_at >= before);
    CHECK(info->started_at >= info->created_at);
    CHECK(info->finished_at >= info->started_at);
    CHECK(info->finished_at <= unix_ms());
    char want[128];
    int n = snprintf(want, sizeof want, "result:%s", tag);
    CHECK(info->result != NULL && info->result_len == (size_t)n &&
          memcmp(info->result, want, (size_t)n) == 0);
    size_t need = coda_task_info_json(info, NULL, 0);
    char *json = malloc(need + 1);
    REQUIRE_F(json != NULL);
    CHECK_EQ_INT(coda_task_info_json(info, json, need + 1), need);
    json[need] = '\0';
    CHECK(strstr(json, "\"state\":\"succeeded\"") != NULL);
    CHECK(strstr(json, want) != NULL); /* the text result, as a string */
    char idtext[40];
    snprintf(idtext, sizeof idtext, "%" PRIu64, id);
    CHECK(strstr(json, idtext) != NULL);
    free(json);
  }
  coda_task_info_free(info);
  CHECK_EQ_INT(runs_of(tag, NULL, 0), 1);

  /* A LOOP task reports progress and a result the same way. */
  char ltag[64];
  snprintf(ltag, sizeof ltag, "status-loop-%s", kind);
  snprintf(path, sizeof path, "/add?def=status_loop&tag=%s", ltag);
  uint64_t lid = add_task(f.ts.port, path);
  CHECK(lid != 0 && lid != id);
  info = wait_state(f.app, lid, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info && info->state == CODA_STATE_SUCCEEDED) {
    char want[128];
    int n = snprintf(want, sizeof want, "loop:%s", ltag);
    CHECK(info->result_len == (size_t)n && memcmp(info->result, want, (size_t)n) == 0);
    CHECK_EQ_STR(info->name, "status_loop");
  }
  coda_task_info_free(info);

  /* From outside any request: enqueue, sync, then it is in the store. */
  char etag[64];
  snprintf(etag, sizeof etag, "enqueued-%s", kind);
  coda_task_opts o = CODA_TASK_OPTS_INIT();
  CHECK_EQ_INT(coda_app_enqueue(f.app, f.d.note, &o, "si", etag, (int64_t)0), 0);
  CHECK(o.id != 0);
  CHECK_EQ_INT(coda_app_store_sync(f.app), 0);
  info = NULL;
  CHECK_EQ_INT(coda_task_get(f.app, o.id, &info), 0);
  coda_task_info_free(info);
  info = wait_state(f.app, o.id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  CHECK_EQ_INT(runs_of(etag, NULL, 0), 1);

  /* Unknown ids. */
  info = NULL;
  CHECK_EQ_INT(coda_task_get(f.app, id + 1000003, &info), CODA_ENOTFOUND);
  CHECK_EQ_INT(coda_task_get(f.app, UINT64_C(0xfeedfacecafebeef), &info), CODA_ENOTFOUND);
  CHECK_EQ_INT(coda_task_get(f.app, 0, &info), CODA_ENOTFOUND);
out:
  atomic_store(&gate_status, 1);
  fixture_done(&f);
}

TEST(status_by_id_memory) { status_by_id("memory"); }
TEST(status_by_id_sqlite) { status_by_id("sqlite"); }

/* ---- 2. retries ------------------------------------------------------------ */

static void retries(const char *kind) {
  char uri[512], path[512], tag[64];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri(kind, "retry", uri, sizeof uri), NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  snprintf(tag, sizeof tag, "retry-%s", kind);
  snprintf(path, sizeof path, "/add?def=flaky&tag=%s&n=2&max=4", tag);
  uint64_t id = add_task(f.ts.port, path);
  REQUIRE_F(id != 0);

  /* Watch it: failed (with the error of the attempt that just failed)
   * between attempts, then succeeded. */
  int saw_failed = 0, error_ok = 1;
  coda_task_info *info = NULL;
  for (int waited = 0; waited < 8000; waited += 3) {
    coda_task_info_free(info);
    info = NULL;
    if (coda_task_get(f.app, id, &info) != 0) {
      info = NULL;
      break;
    }
    if (info->state == CODA_STATE_FAILED) {
      saw_failed |= 1 << info->attempts;
      char want[128];
      snprintf(want, sizeof want, "flaky attempt %d of %s", info->attempts, tag);
      if (!info->error || !strstr(info->error, want)) {
        fprintf(stderr, "  failed after attempt %d, error \"%s\"\n", info->attempts,
                info->error ? info->error : "(null)");
        error_ok = 0;
      }
      CHECK(info->run_at > info->started_at); /* the next attempt is scheduled */
    }
    if (info->state == CODA_STATE_SUCCEEDED || info->state == CODA_STATE_DEAD)
      break;
    tc_sleep_ms(3);
  }
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info) {
    CHECK_EQ_INT(info->attempts, 3);
    CHECK_EQ_INT(info->max_attempts, 4);
  }
  coda_task_info_free(info);
  CHECK(saw_failed & (1 << 1)); /* failed after attempt 1 */
  CHECK(saw_failed & (1 << 2)); /* and after attempt 2 */
  CHECK(error_ok);

  tc_sleep_ms(300); /* no attempt after the success */
  run_event ev[8];
  int n = runs_of(tag, ev, 8);
  CHECK_EQ_INT(n, 3);
  for (int i = 0; i < n && i < 8; i++)
    CHECK_EQ_INT(ev[i].attempt, i + 1);
  fixture_done(&f);
}

TEST(retries_memory) { retries("memory"); }
TEST(retries_sqlite) { retries("sqlite"); }

/* ---- 3. backoff timing -------------------------------------------------- */

/* B = 200 ms, cap 300 ms, poll 20 ms; attempts 1-4 fail, 5 succeeds. The
 * delay before attempt n+1 is d = min(300, 200 * 2^(n-1)) = 200, 300, 300,
 * 300, jittered to [d/2, d]; a missing cap would give 400, 800, 1600. */
#define BACKOFF_TOLERANCE 100
/* Late is load (an fsync, a busy machine: 336 ms for a 200 ms backoff was
 * seen in CI's ASan stage); early is what a wrong backoff shows. */
#define BACKOFF_LATE 1000

static void backoff_timing(const char *kind) {
  char uri[512], path[512], tag[64];
  fixture f;
  const long opts[] = {
      CODA_OPT_BACKOFF, 200, CODA_OPT_BACKOFF_MAX, 300, CODA_OPT_MAX_ATTEMPTS, 6, 0};
  REQUIRE(fixture_init(&f, store_uri(kind, "backoff", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  snprintf(tag, sizeof tag, "backoff-%s", kind);
  snprintf(path, sizeof path, "/add?def=flaky&tag=%s&n=4", tag);
  uint64_t id = add_task(f.ts.port, path);
  REQUIRE_F(id != 0);
  coda_task_info *info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 8000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info) {
    CHECK_EQ_INT(info->attempts, 5);
    CHECK_EQ_INT(info->max_attempts, 6); /* the app's default, as set */
  }
  coda_task_info_free(info);
  run_event ev[8];
  int n = runs_of(tag, ev, 8);
  CHECK_EQ_INT(n, 5);
  const long delay[] = {200, 300, 300, 300};
  const long poll = 20;
  int below_full = 0;
  printf("  backoff gaps (%s):", kind);
  for (int i = 1; i < n && i < 5; i++) {
    long gap = (long)(ev[i].mono - ev[i - 1].mono);
    long d = delay[i - 1];
    printf(" %ld [%ld..%ld]", gap, d / 2, d);
    if (gap < d / 2 - BACKOFF_TOLERANCE || gap > d + poll + BACKOFF_LATE) {
      fprintf(stderr,
              "  gap before attempt %d: %ld ms, expected %ld..%ld (-%d, +%d, +poll)\n",
              i + 1, gap, d / 2, d, BACKOFF_TOLERANCE, BACKOFF_LATE);
      test__failures_in_case++;
    }
    if (gap < d - 10)
      below_full++;
  }
  printf("\n");
  /* Jitter: with four uniform draws in [d/2, d], all four landing in the
   * last 10 ms has a probability around 1e-4; without jitter it is sure. */
  CHECK(below_full >= 1);
  fixture_done(&f);
}

TEST(backoff_timing_memory) { backoff_timing("memory"); }
TEST(backoff_timing_sqlite) { backoff_timing("sqlite"); }

/* ---- 4. dead after the last attempt ------------------------------------- */

static void dead_after_last_attempt(const char *kind) {
  char uri[512], path[512], tag[64], tag2[64];
  fixture f;
  const long opts[] = {CODA_OPT_BACKOFF, 100, 0};
  REQUIRE(fixture_init(&f, store_uri(kind, "dead", uri, sizeof uri), opts) == 0);
  /* The definition's own policy: 2 attempts, 50 ms apart. */
  CHECK_EQ_INT(coda_task_def_retry(f.d.doomed_def, 2, 50, 100), 0);
  REQUIRE(fixture_start(&f) == 0);

  snprintf(tag, sizeof tag, "dead-%s", kind);
  uv_mutex_lock(&hook_mu);
  int hooks_before = hook_calls_total;
  uv_mutex_unlock(&hook_mu);
  snprintf(path, sizeof path, "/add?def=doomed&tag=%s&max=3", tag);
  uint64_t id = add_task(f.ts.port, path);
  REQUIRE_F(id != 0);
  coda_task_info *info = wait_state(f.app, id, CODA_STATE_DEAD, 8000);
  CHECK_STATE(info, CODA_STATE_DEAD);
  if (info) {
    CHECK_EQ_INT(info->attempts, 3);
    CHECK_EQ_INT(info->max_attempts, 3);
    char want[128];
    snprintf(want, sizeof want, "doomed attempt 3 of %s", tag);
    CHECK(info->error && strstr(info->error, want));
    CHECK(info->finished_at >= info->started_at && info->started_at > 0);
  }
  coda_task_info_free(info);
  /* The hook heard of it, for the last attempt at least. The hook may be
   * called just after the state is written: give it a moment. */
  int hook_ok = 0;
  for (int i = 0; i < 200 && !hook_ok; i++) {
    uv_mutex_lock(&hook_mu);
    hook_ok = hook_calls_total > hooks_before && strcmp(hook_last_tag, tag) == 0 &&
              hook_max_attempt == 3 && strstr(hook_last_message, "doomed attempt");
    uv_mutex_unlock(&hook_mu);
    if (!hook_ok)
      tc_sleep_ms(5);
  }
  uv_mutex_lock(&hook_mu);
  if (!hook_ok)
    fprintf(stderr, "  hook: %d calls, last for %s attempt %d: \"%s\"\n",
            hook_calls_total - hooks_before, hook_last_tag, hook_max_attempt,
            hook_last_message);
  CHECK(hook_calls_for_tag >= 1 && hook_calls_for_tag <= 3);
  uv_mutex_unlock(&hook_mu);
  CHECK(hook_ok);

  /* The definition's policy applies when the add names none. */
  snprintf(tag2, sizeof tag2, "dead-def-%s", kind);
  snprintf(path, sizeof path, "/add?def=doomed_def&tag=%s", tag2);
  uint64_t id2 = add_task(f.ts.port, path);
  REQUIRE_F(id2 != 0);
  info = wait_state(f.app, id2, CODA_STATE_DEAD, 5000);
  CHECK_STATE(info, CODA_STATE_DEAD);
  if (info) {
    CHECK_EQ_INT(info->attempts, 2);
    CHECK_EQ_INT(info->max_attempts, 2);
  }
  coda_task_info_free(info);

  /* Longer than a 4th attempt's backoff (100 * 2^2 + poll): none comes. */
  tc_sleep_ms(700);
  CHECK_EQ_INT(runs_of(tag, NULL, 0), 3);
  CHECK_EQ_INT(runs_of(tag2, NULL, 0), 2);
  info = NULL;
  CHECK_EQ_INT(coda_task_get(f.app, id, &info), 0);
  CHECK_STATE(info, CODA_STATE_DEAD);
  coda_task_info_free(info);

  /* Both are listed as dead, by id; paging resumes after the last id. */
  listed l = {0};
  CHECK_EQ_INT(coda_task_list(f.app, CODA_STATE_DEAD, 0, 10, collect_listed, &l), 2);
  CHECK_EQ_INT(l.n, 2);
  CHECK(l.ids[0] == (id < id2 ? id : id2) && l.ids[1] == (id < id2 ? id2 : id));
  CHECK(l.all_dead);
  listed page = {0};
  CHECK_EQ_INT(coda_task_list(f.app, CODA_STATE_DEAD, 0, 1, collect_listed, &page), 1);
  CHECK_EQ_INT(
      coda_task_list(f.app, CODA_STATE_DEAD, page.ids[0], 10, collect_listed, &page), 1);
  CHECK(page.n == 2 && page.ids[1] == l.ids[1]);
  listed none = {0};
  CHECK_EQ_INT(coda_task_list(f.app, CODA_STATE_FAILED, 0, 10, collect_listed, &none), 0);
  fixture_done(&f);
}

TEST(dead_after_the_last_attempt_memory) { dead_after_last_attempt("memory"); }
TEST(dead_after_the_last_attempt_sqlite) { dead_after_last_attempt("sqlite"); }

/* ---- 5. delayed tasks ---------------------------------------------------- */

static void delayed_check(fixture *f, const char *tag, const char *query, int64_t delay,
                          int64_t at) {
  char path[512];
  snprintf(path, sizeof path, "/add?def=note&tag=%s&%s", tag, query);
  uint64_t sent = tc_now_ms();
  uint64_t id = add_task(f->ts.port, path);
  uint64_t got = tc_now_ms();
  REQUIRE(id != 0);
  tc_sleep_ms(300);
  coda_task_info *info = NULL;
  CHECK_EQ_INT(coda_task_get(f->app, id, &info), 0);
  CHECK_STATE(info, CODA_STATE_QUEUED);
  if (info) {
    if (at)
      CHECK_EQ_INT(info->run_at, at);
    else
      CHECK(info->run_at >= info->created_at + delay - 1 &&
            info->run_at <= info->created_at + delay + 1);
  }
  coda_task_info_free(info);
  CHECK_EQ_INT(runs_of(tag, NULL, 0), 0);
  CHECK(wait_runs(tag, 1, 5000));
  run_event ev;
  if (runs_of(tag, &ev, 1) == 1) {
    if (at) { /* due at a wall-clock time */
      printf("  %s ran %lld ms after its time\n", tag, (long long)(ev.wall - at));
      CHECK(ev.wall >= at);
      CHECK(ev.wall <= at + 20 + 250);
    } else { /* due `delay` after the add, which is between sent and got */
      long early = (long)(ev.mono - sent), late = (long)(ev.mono - got);
      printf("  %s ran %ld ms after the request (delay %lld)\n", tag, early,
             (long long)delay);
      CHECK(early >= delay - 2); /* ms rounding of the stored times */
      CHECK(late <= delay + 20 + 250);
    }
  }
  info = wait_state(f->app, id, CODA_STATE_SUCCEEDED, 2000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
}

static void delayed(const char *kind) {
  char uri[512], tag[64], q[64];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri(kind, "delay", uri, sizeof uri), NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  snprintf(tag, sizeof tag, "delay-ms-%s", kind);
  delayed_check(&f, tag, "delay=600", 600, 0);
  snprintf(tag, sizeof tag, "delay-at-%s", kind);
  int64_t at = unix_ms() + 600;
  snprintf(q, sizeof q, "at=%lld", (long long)at);
  delayed_check(&f, tag, q, 600, at);
  fixture_done(&f);
}

TEST(delayed_tasks_memory) { delayed("memory"); }
TEST(delayed_tasks_sqlite) { delayed("sqlite"); }

/* ---- 6. idempotency keys ------------------------------------------------- */

static void idempotency(const char *kind) {
  char uri[512], path[512], tag[64], tag2[64];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri(kind, "idem", uri, sizeof uri), NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  snprintf(tag, sizeof tag, "idem-%s", kind);
  snprintf(tag2, sizeof tag2, "idem-other-%s", kind);

  /* The first runs for 150 ms: the second add comes while it is kept. */
  snprintf(path, sizeof path, "/add?def=note&tag=%s&n=150&key=order-%s-1", tag, kind);
  uint64_t id1 = add_task(f.ts.port, path);
  uint64_t id2 = add_task(f.ts.port, path);
  REQUIRE_F(id1 != 0);
  CHECK(id2 == id1);
  coda_task_info *info = wait_state(f.app, id1, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info) {
    char key[64];
    snprintf(key, sizeof key, "order-%s-1", kind);
    CHECK_EQ_STR(info->key, key);
    CHECK_EQ_INT(info->attempts, 1);
  }
  coda_task_info_free(info);
  /* After it succeeded, still the same task. */
  uint64_t id3 = add_task(f.ts.port, path);
  CHECK(id3 == id1);

  snprintf(path, sizeof path, "/add?def=note&tag=%s&key=order-%s-2", tag2, kind);
  uint64_t other = add_task(f.ts.port, path);
  CHECK(other != 0 && other != id1);
  info = wait_state(f.app, other, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);

  tc_sleep_ms(300);
  CHECK_EQ_INT(runs_of(tag, NULL, 0), 1);
  CHECK_EQ_INT(runs_of(tag2, NULL, 0), 1);
  fixture_done(&f);
}

TEST(idempotency_keys_memory) { idempotency("memory"); }
TEST(idempotency_keys_sqlite) { idempotency("sqlite"); }

/* ---- 6c. tasks that end unusually ---------------------------------------------- */

/* A durable LOOP task finished by its timeout (its late coda_task_done()
 * is ignored) has a failed attempt recorded and is retried, until dead. */
static void loop_timeout(const char *kind) {
  char uri[512], tag[64], path[128];
  fixture f;
  const long opts[] = {CODA_OPT_BACKOFF, 50, 0};
  REQUIRE(fixture_init(&f, store_uri(kind, "looplate", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  snprintf(tag, sizeof tag, "looplate-%s", kind);
  snprintf(path, sizeof path, "/add?def=late_loop&tag=%s&max=3", tag);
  uint64_t id = add_task(f.ts.port, path);
  REQUIRE_F(id != 0);
  coda_task_info *info = wait_state(f.app, id, CODA_STATE_DEAD, 8000);
  CHECK_STATE(info, CODA_STATE_DEAD);
  if (info)
    CHECK_EQ_INT(info->attempts, 3);
  coda_task_info_free(info);
  CHECK_EQ_INT(runs_of(tag, NULL, 0), 3);
  tc_sleep_ms(400); /* the last late coda_task_done() comes and goes */
  fixture_done(&f);
}

TEST(a_loop_task_past_its_timeout_is_retried_memory) { loop_timeout("memory"); }
TEST(a_loop_task_past_its_timeout_is_retried_sqlite) { loop_timeout("sqlite"); }

/* In a list that stops on failure, a durable task after a failed one is
 * written as dead, never runs, and does not run after a restart either. */
static void stopped_list(const char *kind) {
  char uri[512], tag[64], path[128], buf[4096], b_tag[80];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri(kind, "stopped", uri, sizeof uri), NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  snprintf(tag, sizeof tag, "stopped-%s", kind);
  snprintf(b_tag, sizeof b_tag, "%s-b", tag);
  snprintf(path, sizeof path, "/stopping?tag=%s", tag);
  REQUIRE_F(http_get(f.ts.port, path, buf, sizeof buf) == 202);
  uint64_t a = 0, b = 0;
  if (tc_body(buf))
    sscanf(tc_body(buf), "%" SCNu64 " %" SCNu64, &a, &b);
  REQUIRE_F(a && b);
  coda_task_info *info = wait_state(f.app, b, CODA_STATE_DEAD, 5000);
  CHECK_STATE(info, CODA_STATE_DEAD);
  if (info) {
    CHECK_EQ_INT(info->attempts, 0);
    CHECK(info->error && strstr(info->error, "an earlier task of its list failed"));
  }
  coda_task_info_free(info);
  CHECK_EQ_INT(runs_of(b_tag, NULL, 0), 0);
  fixture_done(&f);
  if (strcmp(kind, "sqlite") == 0) {
    REQUIRE(fixture_init(&f, uri, NULL) == 0);
    REQUIRE(fixture_start(&f) == 0);
    tc_sleep_ms(300); /* claims every 20 ms */
    CHECK_EQ_INT(runs_of(b_tag, NULL, 0), 0);
    info = wait_state(f.app, b, CODA_STATE_DEAD, 1000);
    CHECK_STATE(info, CODA_STATE_DEAD);
    coda_task_info_free(info);
    fixture_done(&f);
  }
}

TEST(a_stopped_list_writes_its_durable_rest_as_dead_memory) { stopped_list("memory"); }
TEST(a_stopped_list_writes_its_durable_rest_as_dead_sqlite) { stopped_list("sqlite"); }

/* A durable PROCESS task killed by the server's own stop has not spent its
 * attempt: it stays in the store and succeeds at the next start. */
TEST(a_process_task_killed_by_the_stop_runs_at_the_next_start) {
  char uri[512];
  fixture f;
  const long opts[] = {CODA_OPT_PROCESS_WORKERS, 1, CODA_OPT_TASK_DRAIN_TIMEOUT, 50, 0};
  store_uri("sqlite", "procstop", uri, sizeof uri);
  REQUIRE(fixture_init(&f, uri, opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  uint64_t id = add_task(f.ts.port, "/add?def=proc_report&tag=procstop&max=1");
  REQUIRE_F(id != 0);
  coda_task_info *info = wait_state(f.app, id, CODA_STATE_RUNNING, 5000);
  CHECK_STATE(info, CODA_STATE_RUNNING);
  coda_task_info_free(info);
  fixture_done(&f); /* the drain ends after 50 ms, while it runs */
  const long again[] = {CODA_OPT_PROCESS_WORKERS, 1, 0};
  REQUIRE(fixture_init(&f, uri, again) == 0);
  REQUIRE(fixture_start(&f) == 0);
  info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  fixture_done(&f);
}

/* A stored task whose name this program does not register is marked dead
 * when claimed, with its attempt counted and a reason. */
TEST(a_stored_task_of_an_unknown_name_is_marked_dead) {
  char uri[512];
  fixture f;
  store_uri("sqlite", "ghost", uri, sizeof uri);
  REQUIRE(fixture_init(&f, uri, NULL) == 0); /* creates the file */
  fixture_done(&f);
  sqlite3 *db;
  REQUIRE(sqlite3_open(uri + 7, &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db,
                       "INSERT INTO coda_tasks(id,name,args,state,attempts,max_attempts,"
                       "created_at,run_at) VALUES(77,'ghost',x'',0,0,3,1000,1000)",
                       NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  REQUIRE(fixture_init(&f, uri, NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  coda_task_info *info = wait_state(f.app, 77, CODA_STATE_DEAD, 3000);
  CHECK_STATE(info, CODA_STATE_DEAD);
  if (info) {
    CHECK_EQ_INT(info->attempts, 1);
    CHECK(info->error && strstr(info->error, "no task of that name"));
  }
  coda_task_info_free(info);
  fixture_done(&f);
}

/* A list callback may read each task again (the store's lock is not held
 * while it runs). */
static coda_app *list_app;

static int get_each(const coda_task_info *one, void *user) {
  coda_task_info *full = NULL;
  int rc = coda_task_get(list_app, one->id, &full);
  if (rc == 0 && full->state == CODA_STATE_DEAD)
    ++*(int *)user;
  coda_task_info_free(full);
  return 0;
}

static void get_inside_list(const char *kind) {
  char uri[512];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri(kind, "listget", uri, sizeof uri), NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  uint64_t id = add_task(f.ts.port, "/add?def=doomed&tag=listget&max=1");
  REQUIRE_F(id != 0);
  coda_task_info *info = wait_state(f.app, id, CODA_STATE_DEAD, 3000);
  CHECK_STATE(info, CODA_STATE_DEAD);
  coda_task_info_free(info);
  list_app = f.app;
  int read_back = 0;
  int n = coda_task_list(f.app, CODA_STATE_DEAD, 0, 10, get_each, &read_back);
  CHECK(n >= 1);
  CHECK_EQ_INT(read_back, n);
  fixture_done(&f);
}

TEST(a_list_callback_can_read_tasks_memory) { get_inside_list("memory"); }
TEST(a_list_callback_can_read_tasks_sqlite) { get_inside_list("sqlite"); }

/* ---- 6a. held responses on the wire ------------------------------------------ */

/* Requests pipelined behind a response held for its store write are read
 * meanwhile and answered after it, in order; a client that half-closes
 * while its response is held still gets it, then the close. */
TEST(pipelined_requests_wait_behind_a_held_response) {
  char uri[512], buf[65536];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri("sqlite", "pipeline", uri, sizeof uri), NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  int fd = tc_connect(f.ts.port, 10000);
  REQUIRE_F(fd >= 0);
  /* The first alone, the others while its store write (an fsync) is
   * likely still under way: they are read during the hold. */
  REQUIRE_F(tc_send_str(fd, "GET /add?def=note&tag=pipe-1 HTTP/1.1\r\nHost: t\r\n\r\n") ==
            0);
  tc_sleep_ms(1);
  const char *two = "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n"
                    "GET /add?def=note&tag=pipe-2 HTTP/1.1\r\nHost: t\r\n\r\n";
  REQUIRE_F(tc_send_str(fd, two) == 0);
  size_t n = tc_read_response(fd, buf, sizeof buf);
  CHECK(n > 0 && tc_status(buf) == 202);
  n = tc_read_response(fd, buf, sizeof buf);
  CHECK(n > 0 && tc_status(buf) == 200 && strcmp(tc_body(buf), "plain") == 0);
  n = tc_read_response(fd, buf, sizeof buf);
  CHECK(n > 0 && tc_status(buf) == 202);
  uint64_t second = n > 0 ? strtoull(tc_body(buf), NULL, 10) : 0;
  /* Half-close right after a durable request: its answer still comes. */
  REQUIRE_F(tc_send_str(fd, "GET /add?def=note&tag=pipe-3 HTTP/1.1\r\nHost: t\r\n\r\n") ==
            0);
  shutdown(fd, SHUT_WR);
  int closed = 0;
  n = tc_read_all(fd, buf, sizeof buf, &closed);
  CHECK(n > 0 && tc_status(buf) == 202);
  CHECK(closed); /* then the server closes */
  close(fd);
  CHECK(wait_runs("pipe-1", 1, 5000));
  CHECK(wait_runs("pipe-2", 1, 5000));
  CHECK(wait_runs("pipe-3", 1, 5000));
  coda_task_info *info = wait_state(f.app, second, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  fixture_done(&f);
}

/* ---- 6b. retention ------------------------------------------------------------ */

static long purged_stat(coda_app *a) {
  char buf[4096];
  coda_stats_json(a, buf, sizeof buf);
  const char *p = strstr(buf, "\"purged\":");
  return p ? strtol(p + 9, NULL, 10) : -1;
}

static int gone(coda_app *a, uint64_t id) {
  coda_task_info *info = NULL;
  int rc = coda_task_get(a, id, &info);
  coda_task_info_free(info);
  return rc == CODA_ENOTFOUND;
}

/* Finished tasks go after CODA_OPT_TASK_RETAIN (400 ms here); waiting ones
 * stay; a key is known as long as its task is kept. */
static void retention(const char *kind) {
  char uri[512], path[512], tag[64];
  const long opts[] = {CODA_OPT_TASK_RETAIN, 400, 0};
  fixture f;
  REQUIRE(fixture_init(&f, store_uri(kind, "retain", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  snprintf(tag, sizeof tag, "retain-%s", kind);
  snprintf(path, sizeof path, "/add?def=note&tag=%s&key=retain-%s", tag, kind);
  uint64_t done = add_task(f.ts.port, path);
  snprintf(path, sizeof path, "/add?def=doomed&tag=retain-dead-%s&max=1", kind);
  uint64_t dead = add_task(f.ts.port, path);
  snprintf(path, sizeof path, "/add?def=note&tag=retain-later-%s&delay=3000", kind);
  uint64_t later = add_task(f.ts.port, path);
  REQUIRE_F(done && dead && later);
  coda_task_info *info = wait_state(f.app, done, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  info = wait_state(f.app, dead, CODA_STATE_DEAD, 5000);
  CHECK_STATE(info, CODA_STATE_DEAD);
  coda_task_info_free(info);
  uint64_t t0 = tc_now_ms();
  int waited = 0;
  while ((!gone(f.app, done) || !gone(f.app, dead)) && waited < 3000) {
    tc_sleep_ms(20);
    waited += 20;
  }
  CHECK(gone(f.app, done));
  CHECK(gone(f.app, dead));
  CHECK(tc_now_ms() - t0 >= 200); /* not before its time (400 ms after it finished) */
  CHECK(purged_stat(f.app) >= 2);
  info = NULL;
  CHECK_EQ_INT(coda_task_get(f.app, later, &info), 0); /* still waiting: kept */
  if (info)
    CHECK_STATE(info, CODA_STATE_QUEUED);
  coda_task_info_free(info);
  /* The key was forgotten with its task: the same request runs again. */
  snprintf(path, sizeof path, "/add?def=note&tag=%s&key=retain-%s", tag, kind);
  uint64_t again = add_task(f.ts.port, path);
  CHECK(again == done); /* ids come from the key */
  info = wait_state(f.app, again, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  CHECK_EQ_INT(runs_of(tag, NULL, 0), 2);
  fixture_done(&f);
}

TEST(finished_tasks_are_purged_after_their_retention_memory) { retention("memory"); }
TEST(finished_tasks_are_purged_after_their_retention_sqlite) { retention("sqlite"); }

/* A file of schema version 1 (before the retention index) is migrated at
 * open and keeps its tasks. */
TEST(a_version_1_store_is_migrated) {
  char path[512], uri[600];
  snprintf(path, sizeof path, "%s/v1-%d.db", store_dir, ++store_seq);
  sqlite3 *db;
  REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
  const char *v1 =
      "PRAGMA journal_mode=WAL;"
      "CREATE TABLE coda_tasks(id INTEGER PRIMARY KEY, name TEXT NOT NULL, key TEXT,"
      " args BLOB, state INTEGER NOT NULL, attempts INTEGER NOT NULL,"
      " max_attempts INTEGER NOT NULL, created_at INTEGER NOT NULL, run_at INTEGER NOT "
      "NULL,"
      " started_at INTEGER NOT NULL DEFAULT 0, finished_at INTEGER NOT NULL DEFAULT 0,"
      " owned INTEGER NOT NULL DEFAULT 0, lease_until INTEGER NOT NULL DEFAULT 0,"
      " progress REAL NOT NULL DEFAULT 0, error TEXT, result BLOB);"
      "CREATE INDEX coda_tasks_due ON coda_tasks(run_at) WHERE owned=0 AND state IN "
      "(0,3);"
      "CREATE TABLE coda_meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
      "INSERT INTO coda_meta VALUES('next_id', 100);"
      "INSERT INTO coda_tasks(id,name,state,attempts,max_attempts,created_at,run_at,"
      " finished_at) VALUES(7,'note',2,1,5,1000,1000,2000);"
      "PRAGMA user_version=1;";
  REQUIRE(sqlite3_exec(db, v1, NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  snprintf(uri, sizeof uri, "sqlite:%s", path);
  fixture f;
  REQUIRE(fixture_init(&f, uri, NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  coda_task_info *info = NULL;
  /* Long past its retention, but the first purge comes a minute after the
   * start: the migrated row is read as it was. */
  CHECK_EQ_INT(coda_task_get(f.app, 7, &info), 0);
  if (info)
    CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  fixture_done(&f);
  REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
  sqlite3_stmt *st;
  REQUIRE(sqlite3_prepare_v2(
              db,
              "SELECT (SELECT user_version FROM pragma_user_version),"
              " (SELECT count(*) FROM sqlite_master WHERE name='coda_tasks_done' AND"
              "  instr(sql, 'state=2 OR state=4 OR state=5') > 0),"
              " (SELECT queue||','||token FROM coda_tasks WHERE id=7)",
              -1, &st, NULL) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK_EQ_INT(sqlite3_column_int(st, 0), 5);
  CHECK_EQ_INT(sqlite3_column_int(st, 1), 1); /* version 5: no IN, no temp b-tree */
  /* Version 3 added a task's queue and claim token: old rows read as the
   * default queue, never claimed. */
  CHECK_EQ_STR((const char *)sqlite3_column_text(st, 2), "default,0");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* ---- 7. disk full -------------------------------------------------------- */

/* A 128 KiB cap and 1-4 KiB tasks held at a gate (so they stay in the
 * store): requests go on until the store refuses. */
TEST(a_full_store_answers_503_and_loses_nothing_acknowledged) {
  char uri[512], path[512], buf[8192];
  fixture f;
  const long opts[] = {CODA_OPT_RETRY_AFTER, 3, CODA_OPT_STORE_MAX_BYTES, 128 * 1024, 0};
  REQUIRE(fixture_init(&f, store_uri("sqlite", "full", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  atomic_store(&gate_blob, 0);

  enum { MAX_REQ = 1000 };
  static uint64_t ids[MAX_REQ];
  static int statuses[MAX_REQ];
  int accepted = 0, refused = 0, first_refused = -1, sent = 0, missing = 0,
      no_retry_after = 0;
  for (int i = 0; i < MAX_REQ; i++) {
    snprintf(path, sizeof path, "/add?def=blob&tag=blob-%d&n=%d", i, i);
    int status = http_get(f.ts.port, path, buf, sizeof buf);
    sent++;
    statuses[i] = status;
    ids[i] = 0;
    if (status == 202) {
      accepted++;
      ids[i] = strtoull(tc_body(buf), NULL, 10);
      coda_task_info *info = NULL;
      if (coda_task_get(f.app, ids[i], &info) != 0)
        missing++; /* acknowledged but not in the store */
      coda_task_info_free(info);
    } else if (status == 503) {
      refused++;
      if (first_refused < 0)
        first_refused = i;
      if (!strstr(buf, "\r\nRetry-After: 3\r\n"))
        no_retry_after++;
    } else {
      fprintf(stderr, "  request %d: status %d\n", i, status);
    }
    if (first_refused >= 0 && i >= first_refused + 20)
      break;
  }
  printf("  disk full: %d requests, %d accepted, %d refused (first at #%d)\n", sent,
         accepted, refused, first_refused);
  CHECK(accepted > 0);
  CHECK(refused > 0);
  CHECK_EQ_INT(accepted + refused, sent);
  CHECK_EQ_INT(missing, 0);
  CHECK_EQ_INT(no_retry_after, 0);
  CHECK_EQ_INT(http_get(f.ts.port, "/plain", buf, sizeof buf), 200);

  /* Let them run: every acknowledged task succeeds, no refused one runs. */
  atomic_store(&gate_blob, 1);
  int not_succeeded = 0, lost = 0, ran_refused = 0;
  uint64_t deadline = tc_now_ms() + 30000; /* for them all, not each */
  for (int i = 0; i < sent; i++) {
    char tag[32];
    snprintf(tag, sizeof tag, "blob-%d", i);
    if (statuses[i] == 202) {
      uint64_t now = tc_now_ms();
      int left = now < deadline ? (int)(deadline - now) : 0;
      coda_task_info *info = wait_state(f.app, ids[i], CODA_STATE_SUCCEEDED, left);
      if (!info || info->state != CODA_STATE_SUCCEEDED) {
        if (not_succeeded++ < 5)
          fprintf(stderr, "  blob %d (id %" PRIu64 "): %s, error %s\n", i, ids[i],
                  state_name(info), info && info->error ? info->error : "-");
      }
      coda_task_info_free(info);
      if (runs_of(tag, NULL, 0) < 1)
        lost++;
    } else if (runs_of(tag, NULL, 0) > 0) {
      ran_refused++;
    }
  }
  CHECK_EQ_INT(not_succeeded, 0);
  CHECK_EQ_INT(lost, 0);
  CHECK_EQ_INT(ran_refused, 0);
  CHECK_EQ_INT(http_get(f.ts.port, "/plain", buf, sizeof buf), 200);
  fixture_done(&f);
}

/* An outcome the capped store cannot hold (a result larger than the cap)
 * must not stall the outcomes written after it: the next task's success
 * is still recorded, and the big one ends one way or another (its result
 * refused, or the task failed with a reason), not stuck in "running". */
TEST(an_outcome_too_big_for_the_store_does_not_block_the_others) {
  char uri[512], buf[4096];
  fixture f;
  const long opts[] = {CODA_OPT_STORE_MAX_BYTES, 128 * 1024, CODA_OPT_TASK_DRAIN_TIMEOUT,
                       1000, 0};
  REQUIRE(fixture_init(&f, store_uri("sqlite", "bigresult", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  atomic_store(&big_result_rc, 1);
  uint64_t big = add_task(f.ts.port, "/add?def=big_result&tag=big-result&n=2000000");
  REQUIRE_F(big != 0);
  CHECK(wait_runs("big-result", 1, 3000));
  printf("  set_result(2 MB) with a 128 KiB cap: %s\n",
         atomic_load(&big_result_rc) ? coda_strerror(atomic_load(&big_result_rc)) : "0");
  uint64_t after = add_task(f.ts.port, "/add?def=note&tag=after-big-result");
  CHECK(after != 0);
  coda_task_info *info = wait_state(f.app, after, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  info = NULL;
  int ended = 0;
  for (int i = 0; i < 1000 && !ended; i++) {
    coda_task_info_free(info);
    info = NULL;
    if (coda_task_get(f.app, big, &info) == 0 && info->state != CODA_STATE_QUEUED &&
        info->state != CODA_STATE_RUNNING)
      ended = 1;
    else
      tc_sleep_ms(5);
  }
  printf("  the big one: %s, error %s, result %zu bytes\n", state_name(info),
         info && info->error ? info->error : "-", info ? info->result_len : 0);
  CHECK(ended);
  coda_task_info_free(info);
  CHECK_EQ_INT(http_get(f.ts.port, "/plain", buf, sizeof buf), 200);
  fixture_done(&f);
}

/* A store that refuses outcomes for a while (an I/O error, not a full
 * disk): the outcome waits, with its result, and is written once the
 * store writes again. Faults are injected by wrapping the store's table
 * of functions (internal headers). */
static const coda__store_methods *fault_orig;
static coda__store_methods fault_methods;
static atomic_int finish_faults;

static int faulty_finish(coda__store *s, const coda__task_record *r) {
  if (r->result && atomic_load(&finish_faults) > 0) {
    atomic_fetch_sub(&finish_faults, 1);
    return CODA_ESTORE;
  }
  return fault_orig->finish(s, r);
}

static void refused_outcome(const char *kind) {
  char uri[512], path[128], tag[64], stats[4096];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri(kind, "refused", uri, sizeof uri), NULL) == 0);
  coda__store *store = coda__engine_peek(f.app)->durable->store;
  fault_orig = store->m;
  fault_methods = *fault_orig;
  fault_methods.finish = faulty_finish;
  store->m = &fault_methods;
  atomic_store(&finish_faults, 3);
  REQUIRE_F(fixture_start(&f) == 0);
  snprintf(tag, sizeof tag, "refused-%s", kind);
  snprintf(path, sizeof path, "/add?def=big_result&tag=%s&n=100", tag);
  uint64_t id = add_task(f.ts.port, path);
  REQUIRE_F(id != 0);
  coda_task_info *info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info && info->state == CODA_STATE_SUCCEEDED) {
    CHECK(info->result_len == 100 && info->result &&
          memchr(info->result, 'r', 100) == info->result &&
          ((const char *)info->result)[99] == 'r');
    CHECK(info->error == NULL);
  }
  coda_task_info_free(info);
  CHECK_EQ_INT(atomic_load(&finish_faults), 0);
  CHECK_EQ_INT(runs_of(tag, NULL, 0), 1); /* written late, not run again */
  coda_stats_json(f.app, stats, sizeof stats);
  CHECK(strstr(stats, "\"errors\":0,") == NULL); /* the refusals were counted */
  fixture_done(&f);
}

TEST(a_refused_outcome_is_written_later_with_its_result_memory) {
  refused_outcome("memory");
}
TEST(a_refused_outcome_is_written_later_with_its_result_sqlite) {
  refused_outcome("sqlite");
}

/* The store refuses to reserve the next block of ids (asked for when half
 * of the current one is used, forced here): the batch's new tasks are
 * written anyway with ids that remain, and the next batch asks again. */
static atomic_int reserve_faults;

static int faulty_reserve(coda__store *s, uint64_t count, uint64_t *first) {
  if (atomic_load(&reserve_faults) > 0) {
    atomic_fetch_sub(&reserve_faults, 1);
    return CODA_ESTORE;
  }
  return fault_orig->reserve_ids(s, count, first);
}

static int refilling(coda__durable *d) {
  uv_mutex_lock(&d->id_mu);
  int refill = d->refill;
  uv_mutex_unlock(&d->id_mu);
  return refill;
}

TEST(a_refused_id_reservation_does_not_fail_new_tasks) {
  char uri[512];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri("sqlite", "reserve", uri, sizeof uri), NULL) == 0);
  coda__durable *d = coda__engine_peek(f.app)->durable;
  fault_orig = d->store->m;
  fault_methods = *fault_orig;
  fault_methods.reserve_ids = faulty_reserve;
  d->store->m = &fault_methods;
  REQUIRE_F(fixture_start(&f) == 0);
  uint64_t before = add_task(f.ts.port, "/add?def=note&tag=reserve-before");
  REQUIRE_F(before != 0);
  coda_task_info *info = wait_state(f.app, before, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED); /* so the next batch is the add's */
  coda_task_info_free(info);
  CHECK_EQ_INT(coda_app_store_sync(f.app), 0);
  atomic_store(&reserve_faults, 1);
  uv_mutex_lock(&d->id_mu);
  d->refill = 1;
  uv_mutex_unlock(&d->id_mu);
  uint64_t id = add_task(f.ts.port, "/add?def=note&tag=reserve-refused");
  CHECK(id != 0);
  CHECK_EQ_INT(atomic_load(&reserve_faults), 0);
  info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  uint64_t next = add_task(f.ts.port, "/add?def=note&tag=reserve-again");
  CHECK(next != 0 && next != id);
  CHECK(!refilling(d));
  fixture_done(&f);
}

/* A database locked by another program (a sqlite3 shell holding a write
 * transaction): the store waits its busy timeout, then the durable request
 * gets 503 + Retry-After and the error is counted; meanwhile the event loop
 * serves other requests; once the lock goes, durable adds work again. */
typedef struct locked_req {
  int port;
  int status;
  char buf[4096];
} locked_req;

static void locked_request(void *arg) {
  locked_req *r = arg;
  r->status = http_get(r->port, "/add?def=note&tag=locked-out", r->buf, sizeof r->buf);
}

TEST(a_locked_database_answers_503_and_the_loop_keeps_serving) {
  char uri[512], buf[4096];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri("sqlite", "locked", uri, sizeof uri), NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  REQUIRE_F(add_task(f.ts.port, "/add?def=note&tag=before-lock") != 0);
  sqlite3 *other;
  REQUIRE_F(sqlite3_open(uri + strlen("sqlite:"), &other) == SQLITE_OK);
  sqlite3_busy_timeout(other, 5000); /* the store thread writes too */
  REQUIRE_F(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
  locked_req r = {.port = f.ts.port};
  uv_thread_t th;
  uint64_t t0 = tc_now_ms();
  REQUIRE_F(uv_thread_create(&th, locked_request, &r) == 0);
  /* While that request waits on the lock, the loops answer others. */
  tc_sleep_ms(200);
  uint64_t t1 = tc_now_ms();
  CHECK_EQ_INT(http_get(f.ts.port, "/plain", buf, sizeof buf), 200);
  CHECK(tc_now_ms() - t1 < 1000);
  uv_thread_join(&th);
  uint64_t waited = tc_now_ms() - t0;
  printf("  locked database: status %d after %llu ms\n", r.status,
         (unsigned long long)waited);
  CHECK_EQ_INT(r.status, 503);
  CHECK(strstr(r.buf, "\r\nRetry-After: ") != NULL);
  CHECK(waited >= 900); /* the busy timeout (1 s) was waited out, not skipped */
  CHECK(strstr(coda_app_store_error(f.app), "locked") != NULL);
  char stats[4096];
  coda_stats_json(f.app, stats, sizeof stats);
  CHECK(strstr(stats, "\"errors\":0") == NULL);
  CHECK_EQ_INT(runs_of("locked-out", NULL, 0), 0);
  sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_close(other);
  /* The lock is gone: within a claim cycle or two the store writes again
   * (adds failed fast until then, as a client retrying after Retry-After
   * would see), and a durable add is accepted and runs. */
  uint64_t id = 0;
  for (int i = 0; i < 60 && !id; i++) {
    if (http_get(f.ts.port, "/add?def=note&tag=after-lock", buf, sizeof buf) == 202)
      id = strtoull(tc_body(buf), NULL, 10);
    else
      tc_sleep_ms(50);
  }
  CHECK(id != 0);
  coda_task_info *info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  fixture_done(&f);
}

/* A held response whose store write outlasts the server's shutdown: the
 * deadline cuts the connection, the loops end, and the write ends later
 * (the lock). Nothing is answered, the task that was not written is
 * counted as dropped, and the connection is freed by the store thread
 * (LeakSanitizer, in the ASan stage, fails a leaked one).
 *
 * The lock is taken only once the store is quiet (the first task's outcome
 * written), and with a busy timeout: the store thread itself takes the
 * write lock for a moment every poll (20 ms here), and a BEGIN IMMEDIATE
 * that lands on one of those must wait it out, not fail. */
TEST(a_hold_outlasting_the_shutdown_frees_its_connection) {
  char uri[512], buf[4096];
  fixture f;
  const long opts[] = {CODA_OPT_SHUTDOWN_TIMEOUT, 100, CODA_OPT_TASK_DRAIN_TIMEOUT, 100,
                       0};
  REQUIRE(fixture_init(&f, store_uri("sqlite", "cuthold", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  uint64_t before = add_task(f.ts.port, "/add?def=note&tag=before-cut");
  REQUIRE_F(before != 0);
  coda_task_info *info = wait_state(f.app, before, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  CHECK_EQ_INT(coda_app_store_sync(f.app), 0);
  sqlite3 *other;
  REQUIRE_F(sqlite3_open(uri + strlen("sqlite:"), &other) == SQLITE_OK);
  sqlite3_busy_timeout(other, 5000);
  int locked = sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (locked != SQLITE_OK) {
    fprintf(stderr, "  BEGIN IMMEDIATE: %s\n", sqlite3_errmsg(other));
    sqlite3_close(other);
  }
  REQUIRE_F(locked == SQLITE_OK);
  int fd = tc_connect(f.ts.port, 2000);
  CHECK(fd >= 0);
  if (fd >= 0)
    CHECK_EQ_INT(
        tc_send_str(fd, "GET /add?def=note&tag=cut-hold HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
  /* The handler has added its task once it is counted; the response is
   * then held while the store thread waits on the lock. */
  int added = 0;
  for (uint64_t t = tc_now_ms(); !added && tc_now_ms() - t < 5000; tc_sleep_ms(2))
    added = coda_task_stat(f.app, CODA_EXEC_THREAD, CODA_STAT_QUEUED) == 1;
  CHECK(added);
  uint64_t t0 = tc_now_ms();
  CHECK_EQ_INT(ts_stop(&f.ts), 0);
  f.started = 0;
  CHECK(tc_now_ms() - t0 < 5000);
  if (fd >= 0) {
    int closed = 0;
    /* Nothing at all: a 503 would mean the write gave up before the loops
     * ended, which is another case. */
    size_t n = tc_read_all(fd, buf, sizeof buf, &closed);
    CHECK(closed);
    if (n)
      fprintf(stderr, "  answered: %.40s\n", buf);
    CHECK_EQ_INT(n, 0);
    close(fd);
  }
  char stats[4096];
  coda_stats_json(f.app, stats, sizeof stats);
  const char *thread = strstr(stats, "\"thread\":{");
  CHECK(thread && strncmp(thread, "\"thread\":{\"queued\":0,", 21) == 0);
  CHECK(thread && strstr(thread, "\"dropped\":1,") != NULL &&
        strstr(thread, "\"dropped\":1,") < strstr(thread, "\"process\":"));
  sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_close(other);
  CHECK_EQ_INT(runs_of("cut-hold", NULL, 0), 0);
  fixture_done(&f);
}

/* A held response whose client resets the connection in the same loop
 * iteration as the store thread's answer: the loop sees the reset first
 * (close_now), then the answer, whose gate end freed the connection before
 * libuv's close callback used it (ASan: heap-use-after-free in on_close).
 * A handler that blocks the only loop lines both events up for one epoll
 * batch. */
TEST(a_held_response_whose_client_resets_as_the_store_answers) {
  char uri[512], buf[4096];
  fixture f;
  const long opts[] = {CODA_OPT_THREADS, 1, 0};
  REQUIRE(fixture_init(&f, store_uri("sqlite", "resethold", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  REQUIRE_F(add_task(f.ts.port, "/add?def=note&tag=before-reset") != 0);
  sqlite3 *other;
  REQUIRE_F(sqlite3_open(uri + strlen("sqlite:"), &other) == SQLITE_OK);
  int locked = 0;
  for (int i = 0; i < 200 && !locked; i++) {
    locked = sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    if (!locked)
      tc_sleep_ms(10);
  }
  REQUIRE_F(locked);
  int held = tc_connect(f.ts.port, 5000);
  REQUIRE_F(held >= 0);
  CHECK_EQ_INT(
      tc_send_str(held, "GET /add?def=note&tag=reset-hold HTTP/1.1\r\nHost: t\r\n\r\n"),
      0);
  tc_sleep_ms(100); /* held: the store thread waits on the lock */
  int busy = tc_connect(f.ts.port, 5000);
  REQUIRE_F(busy >= 0);
  CHECK_EQ_INT(tc_send_str(busy, "GET /busy?ms=800 HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
  tc_sleep_ms(100); /* the loop is blocked */
  struct linger lg = {1, 0};
  setsockopt(held, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(held); /* RST, seen when the loop polls again */
  sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL); /* the store writes and answers */
  sqlite3_close(other);
  CHECK(tc_read_response(busy, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 200);
  close(busy);
  CHECK_EQ_INT(http_get(f.ts.port, "/plain", buf, sizeof buf), 200); /* still serving */
  CHECK(wait_runs("reset-hold", 1, 5000)); /* written, so it runs (not delivered) */
  fixture_done(&f);
}

/* A stream sends its head at once, before any store write: a response that
 * holds durable tasks cannot stream (coda_res_stream() returns NULL and the
 * handler answers as usual, after the write). It streamed, and the task the
 * client was told about was in no store: coda_task_get() did not find it,
 * and a crash then would have lost it. */
TEST(a_response_holding_durable_tasks_cannot_stream) {
  char uri[512], buf[4096];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri("sqlite", "durstream", uri, sizeof uri), NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  CHECK_EQ_INT(http_get(f.ts.port, "/durable-stream?tag=dur-stream", buf, sizeof buf),
               200);
  const char *body = tc_body(buf);
  REQUIRE_F(body != NULL);
  CHECK(strncmp(body, "refused ", 8) == 0);
  const char *sp = strchr(body, ' ');
  uint64_t id = sp ? strtoull(sp + 1, NULL, 10) : 0;
  REQUIRE_F(id != 0);
  coda_task_info *info = NULL;
  CHECK_EQ_INT(coda_task_get(f.app, id, &info), 0); /* in the store already */
  coda_task_info_free(info);
  info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  fixture_done(&f);
}

/* ---- handler failure, PROCESS tasks, route-level durable tasks -------- */

/* A failing handler's durable task is dropped (never written, never run);
 * an ALWAYS durable task is written and runs. */
static void handler_failure(const char *kind) {
  char uri[512], path[512], tag[64], buf[4096];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri(kind, "fail", uri, sizeof uri), NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  snprintf(tag, sizeof tag, "handler-failed-%s", kind);
  snprintf(path, sizeof path, "/add-then-fail?tag=%s", tag);
  CHECK_EQ_INT(http_get(f.ts.port, path, buf, sizeof buf), 500);
  uint64_t dropped = atomic_load(&failed_handler_id);
  CHECK(dropped != 0);
  char atag[64];
  snprintf(atag, sizeof atag, "handler-failed-always-%s", kind);
  snprintf(path, sizeof path, "/add-then-fail?tag=%s&always=1", atag);
  CHECK_EQ_INT(http_get(f.ts.port, path, buf, sizeof buf), 500);
  uint64_t kept = atomic_load(&failed_handler_id);
  REQUIRE_F(kept != 0 && kept != dropped);
  coda_task_info *info = wait_state(f.app, kept, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  CHECK_EQ_INT(runs_of(atag, NULL, 0), 1);
  CHECK_EQ_INT(coda_app_store_sync(f.app), 0);
  tc_sleep_ms(200);
  info = NULL;
  CHECK_EQ_INT(coda_task_get(f.app, dropped, &info), CODA_ENOTFOUND);
  coda_task_info_free(info);
  CHECK_EQ_INT(runs_of(tag, NULL, 0), 0);
  fixture_done(&f);
}

TEST(a_failing_handler_drops_durable_tasks_but_not_always_ones_memory) {
  handler_failure("memory");
}
TEST(a_failing_handler_drops_durable_tasks_but_not_always_ones_sqlite) {
  handler_failure("sqlite");
}

/* A durable PROCESS task: the worker sees that it is durable and which
 * attempt it runs; it fails once, then succeeds on attempt 2. */
TEST(a_durable_process_task_is_retried_and_knows_its_attempt) {
  char uri[512], buf[8192];
  fixture f;
  const long opts[] = {CODA_OPT_PROCESS_WORKERS, 1, CODA_OPT_BACKOFF, 100, 0};
  REQUIRE(fixture_init(&f, store_uri("sqlite", "process", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  unlink(journal_path);
  uint64_t id = add_task(f.ts.port, "/add?def=proc_flaky&tag=proc&n=1&max=3");
  REQUIRE_F(id != 0);
  coda_task_info *info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info) {
    CHECK_EQ_INT(info->attempts, 2);
    CHECK_EQ_STR(info->name, "proc_flaky");
  }
  coda_task_info_free(info);
  journal_read(buf, sizeof buf);
  printf("  process journal: %s", buf[0] ? buf : "(empty)\n");
  CHECK_EQ_STR(buf, "proc attempt=1 durable=1\nproc attempt=2 durable=1\n");
  fixture_done(&f);
  unlink(journal_path);
}

/* A durable PROCESS task's progress is seen while it runs in its worker,
 * and its result is stored with its success; a failed attempt keeps the
 * progress it reached. */
TEST(a_durable_process_task_reports_progress_and_a_result) {
  char uri[512];
  fixture f;
  const long opts[] = {CODA_OPT_PROCESS_WORKERS, 1, CODA_OPT_BACKOFF, 600, 0};
  REQUIRE(fixture_init(&f, store_uri("sqlite", "preport", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  uint64_t id = add_task(f.ts.port, "/add?def=proc_report&tag=chart&n=1&max=2");
  REQUIRE_F(id != 0);
  double seen = 0;
  int running_seen = 0;
  for (int i = 0; i < 400 && seen < 0.6; i++) {
    coda_task_info *info = NULL;
    if (coda_task_get(f.app, id, &info) == 0 && info->state == CODA_STATE_RUNNING) {
      running_seen = 1;
      seen = info->progress;
    }
    coda_task_info_free(info);
    tc_sleep_ms(5);
  }
  CHECK(running_seen);
  CHECK(seen >= 0.6 && seen < 0.7); /* 0.6, while the worker still runs it */
  /* Attempt 1 fails after 0.75: the failed state keeps that progress. */
  coda_task_info *info = wait_state(f.app, id, CODA_STATE_FAILED, 5000);
  CHECK_STATE(info, CODA_STATE_FAILED);
  if (info)
    CHECK(info->progress > 0.74 && info->progress < 0.76);
  coda_task_info_free(info);
  info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info) {
    CHECK_EQ_INT(info->attempts, 2);
    CHECK(info->progress == 1.0);
    CHECK(info->result && info->result_len > 13 &&
          memcmp(info->result, "rendered chart by ", 18) == 0);
    char text[96] = {0};
    memcpy(text, info->result, info->result_len < 95 ? info->result_len : 95);
    CHECK(atoi(text + 18) != (int)getpid()); /* made in the worker */
  }
  coda_task_info_free(info);
  fixture_done(&f);
}

/* Two durable PROCESS tasks of one list run chained on one worker: the
 * first fails once and is retried on its own, the second runs after it
 * anyway; both end with their results. */
TEST(chained_durable_process_tasks_keep_their_outcomes) {
  char uri[512], buf[4096];
  fixture f;
  const long opts[] = {CODA_OPT_PROCESS_WORKERS, 1, CODA_OPT_BACKOFF, 100, 0};
  REQUIRE(fixture_init(&f, store_uri("sqlite", "pair", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  REQUIRE_F(http_get(f.ts.port, "/pair?tag=pair", buf, sizeof buf) == 202);
  uint64_t a = 0, b = 0;
  if (tc_body(buf))
    sscanf(tc_body(buf), "%" SCNu64 " %" SCNu64, &a, &b);
  REQUIRE_F(a && b);
  coda_task_info *ia = wait_state(f.app, a, CODA_STATE_SUCCEEDED, 8000);
  coda_task_info *ib = wait_state(f.app, b, CODA_STATE_SUCCEEDED, 8000);
  CHECK_STATE(ia, CODA_STATE_SUCCEEDED);
  CHECK_STATE(ib, CODA_STATE_SUCCEEDED);
  if (ia) {
    CHECK_EQ_INT(ia->attempts, 2);
    CHECK(ia->result && ia->result_len > 18 &&
          memcmp(ia->result, "rendered pair-a by ", 19) == 0);
  }
  if (ib) {
    CHECK_EQ_INT(ib->attempts, 1);
    CHECK(ib->result && ib->result_len > 18 &&
          memcmp(ib->result, "rendered pair-b by ", 19) == 0);
  }
  coda_task_info_free(ia);
  coda_task_info_free(ib);
  fixture_done(&f);
}

/* coda_task_def_durable() makes a route's declared task durable. */
TEST(a_definition_made_durable_makes_route_tasks_durable) {
  char uri[512], buf[4096];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri("sqlite", "routed", uri, sizeof uri), NULL) == 0);
  REQUIRE(fixture_start(&f) == 0);
  int before = runs_of("route-note", NULL, 0);
  CHECK_EQ_INT(http_get(f.ts.port, "/routed", buf, sizeof buf), 200);
  CHECK(wait_runs("route-note", before + 1, 3000));
  run_event ev[64];
  int n = runs_of("route-note", ev, 64);
  if (n > before && n <= 64)
    CHECK_EQ_INT(ev[n - 1].durable, 1);
  fixture_done(&f);
}

/* A THREAD attempt past its timeout counts as a failed attempt: reported
 * to the hook, retried, and the retry's success is what the store says. */
static void timeout_is_a_failed_attempt(const char *kind) {
  char uri[512], path[512], tag[64];
  fixture f;
  const long opts[] = {CODA_OPT_BACKOFF, 100, 0};
  REQUIRE(fixture_init(&f, store_uri(kind, "timeout", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  snprintf(tag, sizeof tag, "sleepy-%s", kind);
  snprintf(path, sizeof path, "/add?def=sleepy&tag=%s&max=3", tag);
  uint64_t id = add_task(f.ts.port, path);
  REQUIRE_F(id != 0);
  coda_task_info *info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info)
    CHECK_EQ_INT(info->attempts, 2);
  coda_task_info_free(info);
  tc_sleep_ms(300);
  run_event ev[4];
  int n = runs_of(tag, ev, 4);
  CHECK_EQ_INT(n, 2);
  if (n == 2)
    CHECK(ev[1].mono - ev[0].mono >= 150); /* the retry came after the timeout */
  uv_mutex_lock(&hook_mu);
  CHECK(strcmp(hook_last_tag, tag) == 0 && hook_max_attempt == 1);
  uv_mutex_unlock(&hook_mu);
  fixture_done(&f);
}

TEST(a_timeout_is_a_failed_attempt_memory) { timeout_is_a_failed_attempt("memory"); }
TEST(a_timeout_is_a_failed_attempt_sqlite) { timeout_is_a_failed_attempt("sqlite"); }

/* A task waiting in the executor's queue behind a slow one, longer than
 * the lease, must still run once: within one process nothing else can
 * hold its claim. */
TEST(a_task_queued_past_its_lease_runs_once) {
  char uri[512];
  fixture f;
  const long opts[] = {CODA_OPT_THREAD_POOL_SIZE, 1, CODA_OPT_TASK_LEASE, 1000, 0};
  REQUIRE(fixture_init(&f, store_uri("sqlite", "lease", uri, sizeof uri), opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  uint64_t slow = add_task(f.ts.port, "/add?def=note&tag=lease-slow&n=2500");
  REQUIRE_F(slow != 0);
  CHECK(wait_runs("lease-slow", 1, 2000));
  uint64_t queued = add_task(f.ts.port, "/add?def=note&tag=lease-queued");
  REQUIRE_F(queued != 0);
  coda_task_info *info = wait_state(f.app, queued, CODA_STATE_SUCCEEDED, 8000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info)
    CHECK_EQ_INT(info->attempts, 1);
  coda_task_info_free(info);
  tc_sleep_ms(300);
  CHECK_EQ_INT(runs_of("lease-queued", NULL, 0), 1);
  CHECK_EQ_INT(runs_of("lease-slow", NULL, 0), 1);
  fixture_done(&f);
}

/* ---- 8. restart ---------------------------------------------------------- */

/* App #1 on a file: a task still running at the drain deadline, one queued
 * behind it (one pool thread), one due in 2 s and one in an hour. App #2
 * on the same file runs the first three; the last stays queued at its
 * time. */
TEST(left_over_tasks_run_after_a_restart) {
  char uri[512];
  store_uri("sqlite", "restart", uri, sizeof uri);
  atomic_store(&phase, 1);
  fixture f;
  const long opts[] = {CODA_OPT_THREAD_POOL_SIZE, 1, CODA_OPT_TASK_DRAIN_TIMEOUT, 300, 0};
  REQUIRE(fixture_init(&f, uri, opts) == 0);
  REQUIRE(fixture_start(&f) == 0);
  uint64_t slow = add_task(f.ts.port, "/add?def=slow&tag=restart-slow");
  CHECK(wait_runs("restart-slow", 1, 3000));
  uint64_t behind = add_task(f.ts.port, "/add?def=note&tag=restart-behind");
  uint64_t soon = add_task(f.ts.port, "/add?def=note&tag=restart-soon&delay=2000");
  uint64_t far = add_task(f.ts.port, "/add?def=note&tag=restart-far&delay=3600000");
  int64_t soon_at = 0, far_at = 0;
  coda_task_info *info = NULL;
  if (soon && coda_task_get(f.app, soon, &info) == 0)
    soon_at = info->run_at;
  coda_task_info_free(info);
  info = NULL;
  if (far && coda_task_get(f.app, far, &info) == 0)
    far_at = info->run_at;
  coda_task_info_free(info);
  uint64_t t0 = tc_now_ms();
  fixture_done(&f);
  printf("  app #1 stopped in %llu ms\n", (unsigned long long)(tc_now_ms() - t0));
  REQUIRE_F(slow && behind && soon && far);
  CHECK(soon_at > 0 && far_at > 0);
  CHECK_EQ_INT(runs_of("restart-soon", NULL, 0), 0);
  CHECK_EQ_INT(runs_of("restart-far", NULL, 0), 0);

  atomic_store(&phase, 2);
  REQUIRE(fixture_init(&f, uri, NULL) == 0);
  /* Readable as soon as the store is open, before the app runs. */
  info = NULL;
  CHECK_EQ_INT(coda_task_get(f.app, far, &info), 0);
  if (info)
    CHECK_EQ_INT(info->run_at, far_at);
  coda_task_info_free(info);
  REQUIRE(fixture_start(&f) == 0);
  int64_t started = unix_ms(); /* app #2 may start after soon_at, under load */
  info = NULL;
  CHECK_EQ_INT(coda_task_get(f.app, soon, &info), 0);
  if (info) {
    CHECK_EQ_INT(info->run_at, soon_at); /* its time is kept */
    if (unix_ms() < soon_at - 50)
      CHECK_STATE(info, CODA_STATE_QUEUED);
  }
  coda_task_info_free(info);

  info = wait_state(f.app, slow, CODA_STATE_SUCCEEDED, 8000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info)
    CHECK_EQ_INT(info->attempts, 2); /* the interrupted one counts */
  coda_task_info_free(info);
  CHECK_EQ_INT(runs_in_phase("restart-slow", 2), 1);

  info = wait_state(f.app, behind, CODA_STATE_SUCCEEDED, 8000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  CHECK_EQ_INT(runs_of("restart-behind", NULL, 0), 1);

  info = wait_state(f.app, soon, CODA_STATE_SUCCEEDED, 8000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  run_event ev;
  if (runs_of("restart-soon", &ev, 1) == 1) {
    CHECK_EQ_INT(ev.phase, 2);
    CHECK(ev.wall >= soon_at);
    /* Claimed within a poll (20 ms) of its time, or of app #2's start if
     * that came later; the rest is the claim and the hand-over to a thread
     * on a machine that may be busy. */
    int64_t due = soon_at > started ? soon_at : started;
    if (ev.wall > due + 20 + 1000)
      fprintf(stderr, "  restart-soon ran %lld ms after it was due\n",
              (long long)(ev.wall - due));
    CHECK(ev.wall <= due + 20 + 1000);
  } else {
    fprintf(stderr, "  restart-soon ran %d times\n", runs_of("restart-soon", NULL, 0));
    test__failures_in_case++;
  }

  info = NULL;
  CHECK_EQ_INT(coda_task_get(f.app, far, &info), 0);
  CHECK_STATE(info, CODA_STATE_QUEUED);
  if (info) {
    CHECK_EQ_INT(info->run_at, far_at);
    CHECK_EQ_INT(info->attempts, 0);
  }
  coda_task_info_free(info);
  CHECK_EQ_INT(runs_of("restart-far", NULL, 0), 0);
  fixture_done(&f);
  atomic_store(&phase, 1);
}

/* ---- 9. store errors at start-up --------------------------------------- */

/* As root, permission bits do not stop us: drop the capabilities that
 * override them, on this thread only (coda_app_store opens on the calling
 * thread), and put them back after. Returns 0 if it could. */
static int drop_dac(int drop) {
  if (geteuid() != 0)
    return 0;
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &hdr, data) != 0)
    return -1;
  uint32_t mask =
      (1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH) | (1u << CAP_FOWNER);
  if (drop)
    data[0].effective &= ~mask;
  else
    data[0].effective |= mask & data[0].permitted;
  return syscall(SYS_capset, &hdr, data) == 0 ? 0 : -1;
}

static int open_store(const char *uri, char *msg, size_t cap) {
  coda_app *a = coda_app_new();
  coda_app_set(a, CODA_OPT_LOG_LEVEL, quiet());
  int rc = coda_app_store(a, uri);
  snprintf(msg, cap, "%s", coda_app_store_error(a));
  coda_app_free(a);
  return rc;
}

TEST(store_errors_are_reported_at_start_up) {
  char uri[600], path[512], msg[512];

  /* Garbage bytes: refused with a message, and left as they were. */
  snprintf(path, sizeof path, "%s/garbage.db", store_dir);
  unsigned char junk[8192];
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (unsigned char)(i * 7919 + 13);
  FILE *fp = fopen(path, "wb");
  REQUIRE(fp != NULL);
  fwrite(junk, 1, sizeof junk, fp);
  fclose(fp);
  snprintf(uri, sizeof uri, "sqlite:%s", path);
  CHECK_EQ_INT(open_store(uri, msg, sizeof msg), CODA_ESTORE);
  printf("  garbage file: %s\n", msg);
  CHECK(msg[0] != '\0');
  CHECK(strstr(msg, path) || strstr(msg, "not a database") || strstr(msg, "corrupt"));
  unsigned char back[sizeof junk + 1];
  fp = fopen(path, "rb");
  REQUIRE(fp != NULL);
  size_t n = fread(back, 1, sizeof back, fp);
  fclose(fp);
  CHECK(n == sizeof junk && memcmp(back, junk, sizeof junk) == 0);

  /* A file in a directory we may not write to. */
  char rodir[300];
  snprintf(rodir, sizeof rodir, "%s/readonly-dir", store_dir);
  REQUIRE(mkdir(rodir, 0555) == 0);
  snprintf(uri, sizeof uri, "sqlite:%s/tasks.db", rodir);
  if (drop_dac(1) == 0) {
    int rc = open_store(uri, msg, sizeof msg);
    drop_dac(0);
    CHECK_EQ_INT(rc, CODA_ESTORE);
    printf("  read-only directory: %s\n", msg);
    CHECK(msg[0] != '\0');
  } else {
    printf("  read-only directory: skipped (cannot drop CAP_DAC_OVERRIDE)\n");
  }
  chmod(rodir, 0755);

  /* A read-only database file (a valid one, made first). */
  snprintf(path, sizeof path, "%s/readonly.db", store_dir);
  snprintf(uri, sizeof uri, "sqlite:%s", path);
  CHECK_EQ_INT(open_store(uri, msg, sizeof msg), 0);
  CHECK(chmod(path, 0444) == 0);
  if (drop_dac(1) == 0) {
    int rc = open_store(uri, msg, sizeof msg);
    drop_dac(0);
    CHECK_EQ_INT(rc, CODA_ESTORE);
    printf("  read-only file: %s\n", msg);
    CHECK(msg[0] != '\0');
  } else {
    printf("  read-only file: skipped (cannot drop CAP_DAC_OVERRIDE)\n");
  }
  chmod(path, 0644);

  /* One file, two apps: the second is told it is in use; once the first
   * is freed, the file can be opened again. */
  snprintf(path, sizeof path, "%s/shared.db", store_dir);
  snprintf(uri, sizeof uri, "sqlite:%s", path);
  coda_app *first = coda_app_new();
  coda_app_set(first, CODA_OPT_LOG_LEVEL, quiet());
  CHECK_EQ_INT(coda_app_store(first, uri), 0);
  CHECK_EQ_INT(open_store(uri, msg, sizeof msg), CODA_ESTORE);
  printf("  in use: %s\n", msg);
  CHECK(strstr(msg, "in use") != NULL);
  coda_app_free(first);
  CHECK_EQ_INT(open_store(uri, msg, sizeof msg), 0);

  /* Not a store URI at all. */
  CHECK(open_store("bogus:whatever", msg, sizeof msg) < 0);
}

/* Two apps in one process, each opening a bad store on its own thread at
 * the same time: each reports its own error, not the other's, and an app
 * that never opened a store reports none. Both threads fail their open
 * before either reads its error (the barrier), so an error kept once per
 * process would show the same text to both. Under TSan it is also a race. */
typedef struct {
  const char *uri;
  uv_barrier_t *both_opened;
  int rc;
  char msg[512];
} bad_open;

static void open_bad_store(void *arg) {
  bad_open *b = arg;
  coda_app *a = coda_app_new();
  if (a) {
    coda_app_set(a, CODA_OPT_LOG_LEVEL, quiet());
    b->rc = coda_app_store(a, b->uri);
  }
  uv_barrier_wait(b->both_opened);
  if (a)
    snprintf(b->msg, sizeof b->msg, "%s", coda_app_store_error(a));
  coda_app_free(a);
}

TEST(each_app_reports_its_own_store_error) {
  uv_barrier_t both_opened;
  REQUIRE(uv_barrier_init(&both_opened, 2) == 0);
  bad_open b[2] = {{.uri = "bogus-first:1", .both_opened = &both_opened, .rc = 1},
                   {.uri = "bogus-second:2", .both_opened = &both_opened, .rc = 1}};
  uv_thread_t th[2];
  REQUIRE(uv_thread_create(&th[0], open_bad_store, &b[0]) == 0);
  REQUIRE(uv_thread_create(&th[1], open_bad_store, &b[1]) == 0);
  uv_thread_join(&th[0]);
  uv_thread_join(&th[1]);
  uv_barrier_destroy(&both_opened);
  for (int i = 0; i < 2; i++) {
    printf("  %s: %s\n", b[i].uri, b[i].msg);
    CHECK(b[i].rc < 0);
    CHECK(strstr(b[i].msg, b[i].uri) != NULL);
    CHECK(strstr(b[i].msg, b[1 - i].uri) == NULL);
  }
  coda_app *none = coda_app_new();
  REQUIRE(none);
  CHECK_EQ_STR(coda_app_store_error(none), "");
  coda_app_free(none);
}

/* ---- 9. store faults from the review: a wrapped store ------------------- */

/* A wrapper around the store's table of functions (as the fault cases
 * above), for the cases below: it counts the enqueues of each batch, can
 * hold a commit until the test opens a gate (a store that is slow while
 * adds pile up), and can answer a commit with CODA__STORE_UNKNOWN, after
 * applying it or not (a Redis command sent, then a timeout). */
static const coda__store_methods *wrap_orig;
static coda__store_methods wrap_methods;
static atomic_int wrap_batch_adds, wrap_max_adds, wrap_batches_with_adds;
static atomic_int wrap_gate_closed;
static uv_mutex_t wrap_mu;
static uv_cond_t wrap_cond;
/* > 0: that many commits with enqueues answer CODA__STORE_UNKNOWN; applied
 * first when wrap_unknown_applies. The ids of their enqueues are kept. */
static atomic_int wrap_unknown, wrap_unknown_applies;
static uint64_t wrap_unknown_ids[16];
static atomic_int wrap_nunknown_ids;
static uint64_t wrap_batch_ids[16];
static atomic_int wrap_nbatch_ids;
/* > 0: that many enqueues fail (CODA_ESTORE): a store that is down. */
static atomic_int wrap_enqueue_faults;

static atomic_int wrap_progress_writes;
/* > 0: that many commits of a batch that claimed tasks fail (CODA_ESTORE),
 * without committing: what a claim outside the batch meets when the rest
 * of it cannot be written. */
static atomic_int wrap_claim_faults, wrap_claimed;

static int wrap_claim(coda__store *s, int64_t now, int64_t lease_until, int max,
                      coda__claim_fn fn, void *user) {
  int n = wrap_orig->claim(s, now, lease_until, max, fn, user);
  if (n > 0)
    atomic_store(&wrap_claimed, 1);
  return n;
}

static int wrap_progress_leased(coda__store *s, const coda__lease *l, double progress) {
  atomic_fetch_add(&wrap_progress_writes, 1);
  return wrap_orig->progress_leased(s, l, progress);
}

static int wrap_begin(coda__store *s) {
  atomic_store(&wrap_claimed, 0);
  atomic_store(&wrap_batch_adds, 0);
  atomic_store(&wrap_nbatch_ids, 0);
  return wrap_orig->begin(s);
}

static int wrap_begin_lazy(coda__store *s) {
  atomic_store(&wrap_claimed, 0);
  atomic_store(&wrap_batch_adds, 0);
  atomic_store(&wrap_nbatch_ids, 0);
  return wrap_orig->begin_lazy(s);
}

static int wrap_enqueue(coda__store *s, const coda__task_record *r, int owned,
                        int64_t lease_until) {
  if (atomic_load(&wrap_enqueue_faults) > 0) {
    atomic_fetch_sub(&wrap_enqueue_faults, 1);
    return CODA_ESTORE;
  }
  atomic_fetch_add(&wrap_batch_adds, 1);
  int i = atomic_fetch_add(&wrap_nbatch_ids, 1);
  if (i < 16)
    wrap_batch_ids[i] = r->id;
  return wrap_orig->enqueue(s, r, owned, lease_until);
}

static int wrap_commit(coda__store *s) {
  if (atomic_exchange(&wrap_claimed, 0) && atomic_load(&wrap_claim_faults) > 0) {
    atomic_fetch_sub(&wrap_claim_faults, 1);
    return CODA_ESTORE;
  }
  int adds = atomic_load(&wrap_batch_adds);
  if (adds > 0) {
    atomic_fetch_add(&wrap_batches_with_adds, 1);
    int max = atomic_load(&wrap_max_adds);
    while (adds > max && !atomic_compare_exchange_weak(&wrap_max_adds, &max, adds)) {
    }
  }
  uv_mutex_lock(&wrap_mu);
  uint64_t end = uv_hrtime() + 60000000000ull; /* never forever */
  while (atomic_load(&wrap_gate_closed) && uv_hrtime() < end)
    uv_cond_timedwait(&wrap_cond, &wrap_mu, 100000000ull);
  uv_mutex_unlock(&wrap_mu);
  if (adds > 0 && atomic_load(&wrap_unknown) > 0) {
    atomic_fetch_sub(&wrap_unknown, 1);
    int n = atomic_load(&wrap_nbatch_ids);
    for (int i = 0; i < n && i < 16; i++) {
      int k = atomic_fetch_add(&wrap_nunknown_ids, 1);
      if (k < 16)
        wrap_unknown_ids[k] = wrap_batch_ids[i];
    }
    if (atomic_load(&wrap_unknown_applies)) {
      int rc = wrap_orig->commit(s);
      if (rc)
        return rc;
    }
    return CODA__STORE_UNKNOWN;
  }
  return wrap_orig->commit(s);
}

static void wrap_store(coda_app *app) {
  coda__store *store = coda__engine_peek(app)->durable->store;
  wrap_orig = store->m;
  wrap_methods = *wrap_orig;
  wrap_methods.begin = wrap_begin;
  if (wrap_orig->begin_lazy)
    wrap_methods.begin_lazy = wrap_begin_lazy;
  wrap_methods.enqueue = wrap_enqueue;
  wrap_methods.commit = wrap_commit;
  wrap_methods.claim = wrap_claim;
  atomic_store(&wrap_claim_faults, 0);
  atomic_store(&wrap_claimed, 0);
  if (wrap_orig->progress_leased)
    wrap_methods.progress_leased = wrap_progress_leased;
  atomic_store(&wrap_progress_writes, 0);
  store->m = &wrap_methods;
  atomic_store(&wrap_batch_adds, 0);
  atomic_store(&wrap_max_adds, 0);
  atomic_store(&wrap_batches_with_adds, 0);
  atomic_store(&wrap_gate_closed, 0);
  atomic_store(&wrap_unknown, 0);
  atomic_store(&wrap_unknown_applies, 0);
  atomic_store(&wrap_nunknown_ids, 0);
  atomic_store(&wrap_enqueue_faults, 0);
}

static void wrap_open_gate(void) {
  uv_mutex_lock(&wrap_mu);
  atomic_store(&wrap_gate_closed, 0);
  uv_cond_broadcast(&wrap_cond);
  uv_mutex_unlock(&wrap_mu);
}

/* Polls cond() every 5 ms until it holds or ms pass. */
static int wait_for(int (*cond)(void), int ms) {
  for (int waited = 0; !cond() && waited < ms; waited += 5)
    tc_sleep_ms(5);
  return cond();
}

/* #3: a burst of adds while the store is slow. 100,000 coda_app_enqueue()
 * calls from four threads pile up behind a commit held at the gate; once
 * it opens they are written in batches of at most 4,096 (before the cap,
 * one batch took them all: a Redis store built one command of 1.3 million
 * arguments on its stack), and every task runs. */
#define BURST_THREADS 4
#define BURST_EACH 25000
static atomic_int burst_ran;
static atomic_int burst_failed_adds;
static coda_app *burst_app;
static coda_task_def *burst_def;

static int burst_task(coda_task *t) {
  (void)t;
  atomic_fetch_add(&burst_ran, 1);
  return 0;
}

static void burst_adder(void *arg) {
  (void)arg;
  for (int i = 0; i < BURST_EACH; i++) {
    int rc = coda_app_enqueue(burst_app, burst_def, NULL, "");
    if (rc != 0 && atomic_fetch_add(&burst_failed_adds, 1) == 0)
      fprintf(stderr, "  coda_app_enqueue: %s\n", coda_strerror(rc));
  }
}

static int burst_store_runs(void) {
  return atomic_load(&coda__engine_peek(burst_app)->durable->running);
}

static int burst_all_ran(void) {
  return atomic_load(&burst_ran) >= BURST_THREADS * BURST_EACH;
}

TEST(a_burst_of_adds_behind_a_slow_store_is_written_in_bounded_batches) {
  fixture f;
  const long opts[] = {CODA_OPT_THREAD_QUEUE, 2 * BURST_THREADS * BURST_EACH, 0};
  REQUIRE(fixture_init(&f, "memory", opts) == 0);
  burst_app = f.app;
  burst_def = coda_app_task(f.app, "burst", burst_task, CODA_EXEC_THREAD);
  REQUIRE(burst_def != NULL);
  wrap_store(f.app);
  atomic_store(&burst_ran, 0);
  atomic_store(&burst_failed_adds, 0);
  REQUIRE_F(fixture_start(&f) == 0);
  REQUIRE_F(wait_for(burst_store_runs, 5000));
  atomic_store(&wrap_gate_closed, 1); /* the next commit waits */
  uv_thread_t th[BURST_THREADS];
  for (int i = 0; i < BURST_THREADS; i++)
    REQUIRE_F(uv_thread_create(&th[i], burst_adder, NULL) == 0);
  for (int i = 0; i < BURST_THREADS; i++)
    uv_thread_join(&th[i]);
  wrap_open_gate();
  REQUIRE_F(atomic_load(&burst_failed_adds) == 0);
  CHECK(wait_for(burst_all_ran, 120000));
  printf("  %d tasks ran; %d batches of adds, the biggest %d adds\n",
         atomic_load(&burst_ran), atomic_load(&wrap_batches_with_adds),
         atomic_load(&wrap_max_adds));
  CHECK(atomic_load(&wrap_max_adds) <= 4096);
  CHECK(atomic_load(&wrap_batches_with_adds) >= BURST_THREADS * BURST_EACH / 4096);
  CHECK(coda_app_store_sync(f.app) == 0);
  fixture_done(&f);
}

/* #2: a commit whose fate the store cannot know (CODA__STORE_UNKNOWN).
 * The held response gets 503, but its owned task is kept and runs: if the
 * write landed, it succeeds once in the store (before, it sat there owned
 * with no heartbeat until expiry made it dead without running, max 1);
 * if it did not land, it runs and its outcome is refused, and nothing
 * else is held back. A coda_app_enqueue() task (its caller was told 0)
 * is kept the same way. Adds fail fast (503) until a write succeeds. */
static int unknown_ids_seen(void) { return atomic_load(&wrap_nunknown_ids) > 0; }

static void unknown_commit(int applies) {
  char buf[4096], tag[64], path[128];
  fixture f;
  REQUIRE(fixture_init(&f, "memory", NULL) == 0);
  wrap_store(f.app);
  REQUIRE_F(fixture_start(&f) == 0);
  atomic_store(&wrap_unknown_applies, applies);
  atomic_store(&wrap_unknown, 1);
  snprintf(tag, sizeof tag, "unknown-hold-%d", applies);
  snprintf(path, sizeof path, "/add?def=note&tag=%s&max=1", tag);
  CHECK_EQ_INT(http_get(f.ts.port, path, buf, sizeof buf), 503);
  REQUIRE_F(unknown_ids_seen());
  uint64_t id = wrap_unknown_ids[0];
  /* It runs here, once. */
  for (int i = 0; i < 1000 && runs_of(tag, NULL, 0) == 0; i++)
    tc_sleep_ms(5);
  CHECK_EQ_INT(runs_of(tag, NULL, 0), 1);
  if (applies) {
    coda_task_info *info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 5000);
    CHECK_STATE(info, CODA_STATE_SUCCEEDED);
    if (info)
      CHECK_EQ_INT(info->attempts, 1);
    coda_task_info_free(info);
  } else {
    CHECK(coda_app_store_sync(f.app) == 0);
    coda_task_info *info = NULL;
    CHECK_EQ_INT(coda_task_get(f.app, id, &info), CODA_ENOTFOUND);
    coda_task_info_free(info);
  }
  /* The store writes again: adds are accepted and run. */
  uint64_t next = 0;
  snprintf(tag, sizeof tag, "unknown-after-%d", applies);
  snprintf(path, sizeof path, "/add?def=note&tag=%s", tag);
  for (int i = 0; i < 100 && !next; i++) {
    if (http_get(f.ts.port, path, buf, sizeof buf) == 202)
      next = strtoull(tc_body(buf), NULL, 10);
    else
      tc_sleep_ms(20);
  }
  CHECK(next != 0);
  coda_task_info *info = wait_state(f.app, next, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  /* A task added with coda_app_enqueue() in a batch of unknown fate. */
  atomic_store(&wrap_nunknown_ids, 0);
  atomic_store(&wrap_unknown, 1);
  snprintf(tag, sizeof tag, "unknown-enqueue-%d", applies);
  coda_task_opts o = CODA_TASK_OPTS_INIT(.max_attempts = 1);
  CHECK_EQ_INT(coda_app_enqueue(f.app, f.d.note, &o, "si", tag, (int64_t)0), 0);
  for (int i = 0; i < 1000 && runs_of(tag, NULL, 0) == 0; i++)
    tc_sleep_ms(5);
  CHECK_EQ_INT(runs_of(tag, NULL, 0), 1);
  if (applies) {
    info = wait_state(f.app, o.id, CODA_STATE_SUCCEEDED, 5000);
    CHECK_STATE(info, CODA_STATE_SUCCEEDED);
    coda_task_info_free(info);
  }
  fixture_done(&f);
}

TEST(a_commit_of_unknown_fate_that_landed_answers_503_and_runs_its_task) {
  unknown_commit(1);
}
TEST(a_commit_of_unknown_fate_that_did_not_land_runs_its_task_unrecorded) {
  unknown_commit(0);
}

/* Release at the stop: the claims of tasks that never began (queued
 * behind a task that holds the one thread) are given back with the
 * store's release(), and the one that began is not. The wrapper records
 * what the engine gives back and passes it on to the store's own
 * release() when it has one (the memory store gains it with the store
 * side of the review): then the store must show them waiting again with
 * no attempt counted (max_attempts 1 would otherwise make them dead after
 * one lease without running); without it they stay running, attempt 1,
 * as before. */
static uint64_t released_ids[64];
static atomic_int nreleased;

static int wrap_release(coda__store *s, const coda__lease *l, int n) {
  for (int i = 0; i < n; i++) {
    int k = atomic_fetch_add(&nreleased, 1);
    if (k < 64)
      released_ids[k] = l[i].id;
  }
  return wrap_orig->release ? wrap_orig->release(s, l, n) : 0;
}

static int was_released(uint64_t id) {
  int n = atomic_load(&nreleased);
  for (int i = 0; i < n && i < 64; i++)
    if (released_ids[i] == id)
      return 1;
  return 0;
}

TEST(claims_that_never_began_are_given_back_at_the_stop) {
  fixture f;
  const long opts[] = {CODA_OPT_THREAD_POOL_SIZE, 1, CODA_OPT_TASK_DRAIN_TIMEOUT, 50, 0};
  REQUIRE(fixture_init(&f, "memory", opts) == 0);
  wrap_store(f.app);
  int store_releases = wrap_orig->release != NULL;
  wrap_methods.release = wrap_release;
  atomic_store(&nreleased, 0);
  REQUIRE_F(fixture_start(&f) == 0);
  uint64_t blocker = add_task(f.ts.port, "/add?def=slow&tag=release-blocker&max=1");
  REQUIRE_F(blocker != 0);
  coda_task_info *info = wait_state(f.app, blocker, CODA_STATE_RUNNING, 5000);
  CHECK_STATE(info, CODA_STATE_RUNNING);
  coda_task_info_free(info);
  uint64_t waiting[3];
  for (int i = 0; i < 3; i++) {
    char path[128];
    snprintf(path, sizeof path, "/add?def=note&tag=release-waiting-%d&max=1", i);
    waiting[i] = add_task(f.ts.port, path);
    REQUIRE_F(waiting[i] != 0);
  }
  ts_stop(&f.ts); /* the blocker is cancelled; the three never began */
  f.started = 0;
  printf("  %d claims given back (the store %s release())\n", atomic_load(&nreleased),
         store_releases ? "has" : "has no");
  CHECK(!was_released(blocker));
  for (int i = 0; i < 3; i++) {
    CHECK(was_released(waiting[i]));
    CHECK_EQ_INT(coda_task_get(f.app, waiting[i], &info), 0);
    if (store_releases) {
      CHECK_STATE(info, CODA_STATE_QUEUED);
      if (info)
        CHECK_EQ_INT(info->attempts, 0);
    } else {
      CHECK_STATE(info, CODA_STATE_RUNNING);
    }
    coda_task_info_free(info);
  }
  CHECK_EQ_INT(runs_of("release-waiting-0", NULL, 0), 0);
  fixture_done(&f);
}

/* #10: progress in a tight loop while the store is slow costs one
 * pending write, which takes the latest value (before: one op per call,
 * 10,001 writes queued); a value that is not a number is refused. */
static atomic_int pb_go, pb_calls_done, pb_release, pb_nan_rc, pb_inf_rc;

static int progress_burst_task(coda_task *t) {
  for (int i = 0; i < 2000 && !atomic_load(&pb_go); i++)
    tc_sleep_ms(5);
  atomic_store(&pb_nan_rc, coda_task_progress(t, NAN));
  atomic_store(&pb_inf_rc, coda_task_progress(t, INFINITY));
  for (int i = 0; i < 10000; i++)
    coda_task_progress(t, i / 20000.0);
  coda_task_progress(t, 0.75);
  atomic_store(&pb_calls_done, 1);
  for (int i = 0; i < 2000 && !atomic_load(&pb_release); i++)
    tc_sleep_ms(5);
  return 0;
}

static int pb_done(void) { return atomic_load(&pb_calls_done); }

TEST(progress_in_a_tight_loop_keeps_one_pending_write) {
  fixture f;
  REQUIRE(fixture_init(&f, "memory", NULL) == 0);
  coda_task_def *def =
      coda_app_task(f.app, "progress_burst", progress_burst_task, CODA_EXEC_THREAD);
  REQUIRE(def != NULL);
  wrap_store(f.app);
  atomic_store(&pb_go, 0);
  atomic_store(&pb_calls_done, 0);
  atomic_store(&pb_release, 0);
  REQUIRE_F(fixture_start(&f) == 0);
  coda_task_opts o = CODA_TASK_OPTS_INIT();
  for (int i = 0; i < 200; i++) { /* the store thread starts with the server */
    if (coda_app_enqueue(f.app, def, &o, "") == 0)
      break;
    tc_sleep_ms(5);
  }
  REQUIRE_F(o.id != 0);
  coda_task_info *info = wait_state(f.app, o.id, CODA_STATE_RUNNING, 5000);
  CHECK_STATE(info, CODA_STATE_RUNNING);
  coda_task_info_free(info);
  atomic_store(&wrap_gate_closed, 1); /* the next commit waits */
  atomic_store(&pb_go, 1);
  CHECK(wait_for(pb_done, 10000));
  wrap_open_gate();
  CHECK_EQ_INT(coda_app_store_sync(f.app), 0);
  int writes = atomic_load(&wrap_progress_writes);
  printf("  10,002 progress calls, %d writes\n", writes);
  CHECK(writes >= 1 && writes <= 3);
  CHECK_EQ_INT(atomic_load(&pb_nan_rc), CODA_EINVAL);
  CHECK_EQ_INT(atomic_load(&pb_inf_rc), CODA_EINVAL);
  coda__store *store = coda__engine_peek(f.app)->durable->store;
  info = NULL;
  CHECK_EQ_INT(wrap_orig->get(store, o.id, &info), 0); /* the store's own value */
  if (info)
    CHECK(info->progress == 0.75);
  coda_task_info_free(info);
  atomic_store(&pb_release, 1);
  info = wait_state(f.app, o.id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  coda_task_info_free(info);
  fixture_done(&f);
}

/* #9: the batch of a claim fails. Where the claim is not undone by the
 * rollback (the memory store, as Redis, whose claim runs at once), the
 * claimed task runs now (before: it was freed and stayed claimed until its
 * lease ended, then expiry made it dead without a run, max_attempts 1);
 * where it is undone (SQLite), it is not run then, but claimed again by
 * the next poll: once either way, one attempt. */
static void failed_claim(const char *kind) {
  char uri[512], tag[64], path[160];
  fixture f;
  REQUIRE(fixture_init(&f, store_uri(kind, "claimfail", uri, sizeof uri), NULL) == 0);
  wrap_store(f.app);
  REQUIRE_F(fixture_start(&f) == 0);
  snprintf(tag, sizeof tag, "claim-fails-%s", kind);
  snprintf(path, sizeof path, "/add?def=note&tag=%s&max=1&delay=100", tag);
  atomic_store(&wrap_claim_faults, 1);
  uint64_t id = add_task(f.ts.port, path);
  REQUIRE_F(id != 0);
  coda_task_info *info = wait_state(f.app, id, CODA_STATE_SUCCEEDED, 5000);
  CHECK_STATE(info, CODA_STATE_SUCCEEDED);
  if (info)
    CHECK_EQ_INT(info->attempts, 1);
  coda_task_info_free(info);
  CHECK_EQ_INT(atomic_load(&wrap_claim_faults), 0); /* the fault happened */
  CHECK_EQ_INT(runs_of(tag, NULL, 0), 1);
  fixture_done(&f);
}

TEST(a_claim_whose_batch_fails_still_runs_its_tasks_memory) { failed_claim("memory"); }
TEST(a_claim_whose_batch_fails_still_runs_its_tasks_sqlite) { failed_claim("sqlite"); }

/* ---- main ----------------------------------------------------------------- */

int main(void) {
  /* PROCESS workers re-run this program: they register the same tasks and
   * stop in coda_app_worker(). The journal path is the parent's. */
  const char *inherited = getenv("CODA_DURABLE_TEST_JOURNAL");
  if (inherited) {
    snprintf(journal_path, sizeof journal_path, "%s", inherited);
  } else {
    snprintf(journal_path, sizeof journal_path, "/tmp/coda-durable-journal-%d",
             (int)getpid());
    setenv("CODA_DURABLE_TEST_JOURNAL", journal_path, 1);
  }
  uv_mutex_init(&wrap_mu);
  uv_cond_init(&wrap_cond);
  coda_app *registry = coda_app_new();
  register_defs(registry);
  coda_app_worker(registry); /* a PROCESS worker stops here */
  coda_app_free(registry);
  uv_mutex_init(&events_mu);
  uv_mutex_init(&hook_mu);
  snprintf(store_dir, sizeof store_dir, "/tmp/coda-durable-XXXXXX");
  if (!mkdtemp(store_dir)) {
    perror("mkdtemp");
    return 1;
  }
  static const test__case cases[] = {
      TEST_CASE(status_by_id_memory),
      TEST_CASE(status_by_id_sqlite),
      TEST_CASE(retries_memory),
      TEST_CASE(retries_sqlite),
      TEST_CASE(backoff_timing_memory),
      TEST_CASE(backoff_timing_sqlite),
      TEST_CASE(dead_after_the_last_attempt_memory),
      TEST_CASE(dead_after_the_last_attempt_sqlite),
      TEST_CASE(a_refused_outcome_is_written_later_with_its_result_memory),
      TEST_CASE(a_refused_outcome_is_written_later_with_its_result_sqlite),
      TEST_CASE(a_refused_id_reservation_does_not_fail_new_tasks),
      TEST_CASE(a_locked_database_answers_503_and_the_loop_keeps_serving),
      TEST_CASE(a_hold_outlasting_the_shutdown_frees_its_connection),
      TEST_CASE(a_held_response_whose_client_resets_as_the_store_answers),
      TEST_CASE(a_response_holding_durable_tasks_cannot_stream),
      TEST_CASE(pipelined_requests_wait_behind_a_held_response),
      TEST_CASE(a_loop_task_past_its_timeout_is_retried_memory),
      TEST_CASE(a_loop_task_past_its_timeout_is_retried_sqlite),
      TEST_CASE(a_stopped_list_writes_its_durable_rest_as_dead_memory),
      TEST_CASE(a_stopped_list_writes_its_durable_rest_as_dead_sqlite),
      TEST_CASE(a_process_task_killed_by_the_stop_runs_at_the_next_start),
      TEST_CASE(a_stored_task_of_an_unknown_name_is_marked_dead),
      TEST_CASE(a_list_callback_can_read_tasks_memory),
      TEST_CASE(a_list_callback_can_read_tasks_sqlite),
      TEST_CASE(finished_tasks_are_purged_after_their_retention_memory),
      TEST_CASE(finished_tasks_are_purged_after_their_retention_sqlite),
      TEST_CASE(a_version_1_store_is_migrated),
      TEST_CASE(delayed_tasks_memory),
      TEST_CASE(delayed_tasks_sqlite),
      TEST_CASE(idempotency_keys_memory),
      TEST_CASE(idempotency_keys_sqlite),
      TEST_CASE(a_full_store_answers_503_and_loses_nothing_acknowledged),
      TEST_CASE(an_outcome_too_big_for_the_store_does_not_block_the_others),
      TEST_CASE(a_failing_handler_drops_durable_tasks_but_not_always_ones_memory),
      TEST_CASE(a_failing_handler_drops_durable_tasks_but_not_always_ones_sqlite),
      TEST_CASE(a_durable_process_task_is_retried_and_knows_its_attempt),
      TEST_CASE(a_durable_process_task_reports_progress_and_a_result),
      TEST_CASE(chained_durable_process_tasks_keep_their_outcomes),
      TEST_CASE(a_definition_made_durable_makes_route_tasks_durable),
      TEST_CASE(a_timeout_is_a_failed_attempt_memory),
      TEST_CASE(a_timeout_is_a_failed_attempt_sqlite),
      TEST_CASE(a_task_queued_past_its_lease_runs_once),
      TEST_CASE(left_over_tasks_run_after_a_restart),
      TEST_CASE(store_errors_are_reported_at_start_up),
      TEST_CASE(each_app_reports_its_own_store_error),
      TEST_CASE(a_burst_of_adds_behind_a_slow_store_is_written_in_bounded_batches),
      TEST_CASE(a_commit_of_unknown_fate_that_landed_answers_503_and_runs_its_task),
      TEST_CASE(a_commit_of_unknown_fate_that_did_not_land_runs_its_task_unrecorded),
      TEST_CASE(claims_that_never_began_are_given_back_at_the_stop),
      TEST_CASE(progress_in_a_tight_loop_keeps_one_pending_write),
      TEST_CASE(a_claim_whose_batch_fails_still_runs_its_tasks_memory),
      TEST_CASE(a_claim_whose_batch_fails_still_runs_its_tasks_sqlite),
  };
  int rc = test__run("durable", cases, sizeof cases / sizeof cases[0]);
  tc_remove_tree(store_dir);
  uv_mutex_destroy(&hook_mu);
  uv_mutex_destroy(&events_mu);
  return rc;
}
