/*
 * tasks_test.c - background tasks end to end: a real server, real clients,
 * real worker processes.
 *
 * Tasks record what they do by appending one line to a journal file (O_APPEND
 * writes are atomic for short lines), so that thread, loop and process tasks,
 * which share no memory, can all be checked in the order they ran.
 *
 * PROCESS workers re-run this program: main() registers the tasks on a
 * registry app and calls coda_app_worker() before anything else.
 */
#include "harness.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char journal_path[256];
static char noworker_path[300];
static char early_signal_path[300];

static void journal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void journal(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  line[n++] = '\n';
  int fd = open(journal_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (fd >= 0) {
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
  }
}

static void journal_read(char *buf, size_t cap) { tc_read_file(journal_path, buf, cap); }

static void journal_reset(void) { unlink(journal_path); }

/* Waits until the journal contains `needle` (or ms pass). */
static int journal_wait(const char *needle, int ms) {
  char buf[8192];
  for (int i = 0; i < ms / 5; i++) {
    journal_read(buf, sizeof buf);
    if (strstr(buf, needle))
      return 1;
    tc_sleep_ms(5);
  }
  return 0;
}

/* ---- tasks ------------------------------------------------------------ */

/* Writes its first argument to the journal, after sleeping arg 1 ms. */
static int note_task(coda_task *t) {
  if (coda_task_int(t, 1) > 0)
    tc_sleep_ms((int)coda_task_int(t, 1));
  journal("%s %s", coda_task_str(t, 0), coda_executor_name(coda_task_executor(t)));
  return 0;
}

static int fail_task(coda_task *t) {
  journal("fail %s", coda_task_str(t, 0));
  return coda_task_fail(t, "failing on purpose: %s", coda_task_str(t, 0));
}

static int crash_task(coda_task *t) {
  (void)t;
  raise(SIGSEGV);
  return 0;
}

static int spin_task(coda_task *t) {
  (void)t;
  for (;;) {
  }
  return 0;
}

/* Journals its worker's pid, then sleeps far longer than any test. */
static int sleeper_task(coda_task *t) {
  (void)t;
  journal("sleeper pid %d", (int)getpid());
  tc_sleep_ms(60000);
  return 0;
}

/* A thread task past its timeout sees the cancellation flag. */
static int slow_thread_task(coda_task *t) {
  for (int i = 0; i < 100 && !coda_task_cancelled(t); i++)
    tc_sleep_ms(10);
  journal("slow cancelled=%d", coda_task_cancelled(t));
  return 0;
}

/* Checks its copied arguments long after the request is gone. */
static int args_task(coda_task *t) {
  tc_sleep_ms(50);
  size_t len;
  const unsigned char *b = coda_task_bytes(t, 2, &len);
  journal("args %s %lld %zu %02x%02x delivered=%d", coda_task_str(t, 0),
          (long long)coda_task_int(t, 1), len, b ? b[0] : 0,
          b && len > 1 ? b[len - 1] : 0, coda_task_delivered(t));
  return 0;
}

/* Says whether its response reached the client. */
static int delivered_task(coda_task *t) {
  journal("delivered=%d", coda_task_delivered(t));
  return 0;
}

static coda_task_def *delivered_def, *delivered_process_def;

/* Says whether it knows the id of the request that added it (argument 0). */
static int request_id_task(coda_task *t) {
  journal("request id %s: %s %s", coda_executor_name(coda_task_executor(t)),
          coda_task_request_id(t) == (uint64_t)coda_task_int(t, 0) ? "same" : "different",
          coda_task_request_id(t) ? "nonzero" : "zero");
  return 0;
}

/* Returns -1000, a task's own failure code like any other. */
static int minus_thousand_task(coda_task *t) {
  journal("minus thousand %s", coda_task_str(t, 0));
  return -1000;
}

typedef struct {
  coda_task_def *note_thread, *note_loop, *note_process, *fail_thread, *fail_process,
      *crash, *spin, *slow, *args, *args_process, *sleeper, *request_id_thread,
      *request_id_process, *minus_thousand_process;
} defs;

static defs register_tasks(coda_app *app) {
  defs d;
  d.note_thread = coda_app_task(app, "note_thread", note_task, CODA_EXEC_THREAD);
  d.note_loop = coda_app_task(app, "note_loop", note_task, CODA_EXEC_LOOP);
  d.note_process = coda_app_task(app, "note_process", note_task, CODA_EXEC_PROCESS);
  d.fail_thread = coda_app_task(app, "fail_thread", fail_task, CODA_EXEC_THREAD);
  d.fail_process = coda_app_task(app, "fail_process", fail_task, CODA_EXEC_PROCESS);
  d.crash = coda_app_task(app, "crash", crash_task, CODA_EXEC_PROCESS);
  d.spin = coda_app_task(app, "spin", spin_task, CODA_EXEC_PROCESS);
  d.sleeper = coda_app_task(app, "sleeper", sleeper_task, CODA_EXEC_PROCESS);
  d.slow = coda_app_task(app, "slow", slow_thread_task, CODA_EXEC_THREAD);
  d.args = coda_app_task(app, "args", args_task, CODA_EXEC_THREAD);
  d.args_process = coda_app_task(app, "args_process", args_task, CODA_EXEC_PROCESS);
  delivered_def = coda_app_task(app, "delivered", delivered_task, CODA_EXEC_THREAD);
  delivered_process_def =
      coda_app_task(app, "delivered_process", delivered_task, CODA_EXEC_PROCESS);
  d.request_id_thread =
      coda_app_task(app, "request_id_thread", request_id_task, CODA_EXEC_THREAD);
  d.request_id_process =
      coda_app_task(app, "request_id_process", request_id_task, CODA_EXEC_PROCESS);
  d.minus_thousand_process = coda_app_task(app, "minus_thousand_process",
                                           minus_thousand_task, CODA_EXEC_PROCESS);
  coda_task_def_timeout(d.spin, 200);
  coda_task_def_timeout(d.slow, 100);
  return d;
}

/* ---- handlers ------------------------------------------------------------ */

static defs D;

/* GET /order: thread, loop, process, thread, in that order. */
static int h_order(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  int rc = coda_res_add_task(res, D.note_thread, "si", "1", (int64_t)60);
  rc = rc ? rc : coda_res_add_task(res, D.note_loop, "si", "2", (int64_t)0);
  rc = rc ? rc : coda_res_add_task(res, D.note_process, "si", "3", (int64_t)30);
  rc = rc ? rc : coda_res_add_task(res, D.note_thread, "si", "4", (int64_t)0);
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

/* GET /failing?stop=1: a failing task, then one that runs unless stop. */
static int h_failing(coda_req *req, coda_res *res, void *user) {
  (void)user;
  if (coda_req_query(req, "stop"))
    coda_res_tasks_flags(res, CODA_LIST_STOP_ON_FAILURE);
  int rc = coda_res_add_task(res, D.fail_thread, "s", "first");
  rc = rc ? rc : coda_res_add_task(res, D.note_thread, "si", "after-failure", (int64_t)0);
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

/* GET /handler-fails: adds two tasks, one ALWAYS, then fails. */
static int h_handler_fails(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  coda_res_add_task(res, D.note_thread, "si", "dropped", (int64_t)0);
  coda_res_add_task_opts(res, D.note_thread, CODA_TASK_OPTS(.flags = CODA_TASK_ALWAYS), "si", "always",
                          (int64_t)0);
  return CODA_EIO;
}

static char big[16 << 20];

/* GET /big: a 16 MiB body, then a loop task. */
static int h_big(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  coda_res_add_task(res, D.note_loop, "si", "after-big", (int64_t)0);
  return coda_res_body_static(res, big, sizeof big);
}

/* GET /big-delivered[?process=1]: 16 MiB, then a task that asks if they
 * arrived. */
static int h_big_delivered(coda_req *req, coda_res *res, void *user) {
  (void)user;
  coda_res_add_task(
      res, coda_req_query(req, "process") ? delivered_process_def : delivered_def, "");
  return coda_res_body_static(res, big, sizeof big);
}

/* GET /slowtask: the task sleeps 300 ms; the response must not wait. */
static int h_slowtask(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  int rc = coda_res_add_task(res, D.note_thread, "si", "slow-done", (int64_t)300);
  return rc ? rc : coda_res_body_static(res, "fast", 4);
}

/* POST /args[?process=1]: arguments from request memory, which is reused
 * right after, for a THREAD task or a PROCESS one. */
static int h_args(coda_req *req, coda_res *res, void *user) {
  (void)user;
  size_t len;
  const char *body = coda_req_body(req, &len);
  coda_task_def *def = coda_req_query(req, "process") ? D.args_process : D.args;
  int rc = coda_res_add_task(res, def, "sib", coda_req_header(req, "X-Name"), (int64_t)42,
                             body, len);
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

static int h_crash(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  int rc = coda_res_add_task(res, D.crash, "");
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

static int h_spin(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  int rc = coda_res_add_task(res, D.spin, "");
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

static int h_slowthread(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  int rc = coda_res_add_task(res, D.slow, "");
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

/* GET /pchain?mode=ok|fail|crash|spin[&stop=1]: consecutive PROCESS tasks,
 * which go to one worker as a chain, with the second one ok, failing,
 * crashing or past its timeout, then a THREAD task. c3 sleeps: if c3 and c4
 * were ever sent to two workers at once, c4 would be journaled first. */
static int h_pchain(coda_req *req, coda_res *res, void *user) {
  (void)user;
  const char *mode = coda_req_query(req, "mode");
  if (coda_req_query(req, "stop"))
    coda_res_tasks_flags(res, CODA_LIST_STOP_ON_FAILURE);
  int rc = coda_res_add_task(res, D.note_process, "si", "c1", (int64_t)20);
  if (rc == 0 && strcmp(mode, "fail") == 0)
    rc = coda_res_add_task(res, D.fail_process, "s", "c2");
  else if (rc == 0 && strcmp(mode, "crash") == 0)
    rc = coda_res_add_task(res, D.crash, "");
  else if (rc == 0 && strcmp(mode, "spin") == 0)
    rc = coda_res_add_task(res, D.spin, "");
  else if (rc == 0)
    rc = coda_res_add_task(res, D.note_process, "si", "c2", (int64_t)0);
  rc = rc ? rc : coda_res_add_task(res, D.note_process, "si", "c3", (int64_t)40);
  rc = rc ? rc : coda_res_add_task(res, D.note_process, "si", "c4", (int64_t)0);
  rc = rc ? rc : coda_res_add_task(res, D.note_thread, "si", "c5", (int64_t)0);
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

/* Registered in the server only, after coda_app_worker(): the workers do
 * not know it. */
static coda_task_def *parent_only_def;

/* GET /unknown: a task the workers cannot find, then one they can. */
static int h_unknown(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  int rc = coda_res_add_task(res, parent_only_def, "si", "never", (int64_t)0);
  rc =
      rc ? rc : coda_res_add_task(res, D.note_process, "si", "after-unknown", (int64_t)0);
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

static int h_process_note(coda_req *req, coda_res *res, void *user) {
  (void)user;
  const char *ms = coda_req_query(req, "ms");
  int rc = coda_res_add_task(res, D.note_process, "si", coda_req_query(req, "n"),
                             (int64_t)(ms ? atoll(ms) : 0));
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

/* GET /request-id: the request's id, to a THREAD task then a PROCESS one. */
static int h_request_id(coda_req *req, coda_res *res, void *user) {
  (void)user;
  int64_t id = (int64_t)coda_req_id(req);
  int rc = coda_res_add_task(res, D.request_id_thread, "i", id);
  rc = rc ? rc : coda_res_add_task(res, D.request_id_process, "i", id);
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

/* GET /minus-thousand: a PROCESS task returning -1000, then one after it. */
static int h_minus_thousand(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  int rc = coda_res_add_task(res, D.minus_thousand_process, "s", "m");
  rc = rc ? rc : coda_res_add_task(res, D.note_process, "si", "after-minus", (int64_t)0);
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

static int h_plain(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  return coda_res_body_static(res, "plain", 5);
}

/* A list built apart from the response, marked parallel, then attached. */
static int h_parallel(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  coda_tasks *l = coda_tasks_new(coda_req_app(req));
  coda_tasks_set_flags(l, CODA_LIST_PARALLEL);
  coda_tasks_add(l, D.note_thread, "si", "par-slow", (int64_t)200);
  coda_tasks_add(l, D.note_thread, "si", "par-fast", (int64_t)0);
  int rc = coda_res_attach_tasks(res, l);
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

/* Middleware adding a task before and after the handler. */
static int mw_tasks(coda_req *req, coda_res *res, coda_next *next, void *user) {
  (void)user;
  if (strcmp(coda_req_path(req), "/mw") != 0)
    return coda_next_call(next);
  coda_res_add_task(res, D.note_thread, "si", "mw-before", (int64_t)0);
  int rc = coda_next_call(next);
  coda_res_add_task(res, D.note_loop, "si", "mw-after", (int64_t)0);
  return rc;
}

static int h_mw(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  coda_res_add_task(res, D.note_thread, "si", "handler", (int64_t)0);
  return coda_res_body_static(res, "ok", 2);
}

static atomic_int hook_calls;
static char hook_message[256];
static uv_mutex_t hook_mu; /* the hook runs on the executors' threads */

static void on_task_error(const coda_task *t, const char *message, void *user) {
  (void)user;
  uv_mutex_lock(&hook_mu);
  snprintf(hook_message, sizeof hook_message, "%s: %s", coda_task_name(t), message);
  uv_mutex_unlock(&hook_mu);
  atomic_fetch_add(&hook_calls, 1);
}

static int hook_says(const char *a, const char *b) {
  uv_mutex_lock(&hook_mu);
  int yes = strstr(hook_message, a) && (!b || strstr(hook_message, b));
  uv_mutex_unlock(&hook_mu);
  return yes;
}

/* ---- fixture ------------------------------------------------------------- */

static test_server ts;
static coda_app *app;

static coda_app *make_app(void) {
  coda_app *a = coda_app_new();
  D = register_tasks(a);
  coda_app_set(a, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
  coda_app_set(a, CODA_OPT_PROCESS_WORKERS, 2);
  coda_app_on_task_error(a, on_task_error, NULL);
  coda_app_use(a, mw_tasks, NULL);
  coda_app_route(a, "GET", "/order", h_order, NULL);
  coda_app_route(a, "GET", "/failing", h_failing, NULL);
  coda_app_route(a, "GET", "/handler-fails", h_handler_fails, NULL);
  coda_app_route(a, "GET", "/big", h_big, NULL);
  coda_app_route(a, "GET", "/big-delivered", h_big_delivered, NULL);
  coda_app_route(a, "GET", "/slowtask", h_slowtask, NULL);
  coda_app_route(a, "POST", "/args", h_args, NULL);
  coda_app_route(a, "GET", "/crash", h_crash, NULL);
  coda_app_route(a, "GET", "/spin", h_spin, NULL);
  coda_app_route(a, "GET", "/slowthread", h_slowthread, NULL);
  coda_app_route(a, "GET", "/pnote", h_process_note, NULL);
  coda_app_route(a, "GET", "/pchain", h_pchain, NULL);
  coda_app_route(a, "GET", "/unknown", h_unknown, NULL);
  coda_app_route(a, "GET", "/plain", h_plain, NULL);
  coda_app_route(a, "GET", "/parallel", h_parallel, NULL);
  coda_app_route(a, "GET", "/mw", h_mw, NULL);
  coda_app_route(a, "GET", "/routed", h_plain, NULL);
  coda_app_route(a, "GET", "/request-id", h_request_id, NULL);
  coda_app_route(a, "GET", "/minus-thousand", h_minus_thousand, NULL);
  coda_app_route_task(a, "GET", "/routed", D.note_loop, "si", "route-task", (int64_t)0);
  return a;
}

static int get(int port, const char *path, char *buf, size_t cap) {
  return tc_get(port, path, buf, cap, 5000);
}

static long stat_of(coda_executor ex, coda_task_stat_kind k) {
  return coda_task_stat(app, ex, k);
}

/* ---- tests ----------------------------------------------------------------- */

TEST(tasks_run_in_order_across_executors) {
  char buf[8192];
  journal_reset();
  REQUIRE(get(ts.port, "/order", buf, sizeof buf) == 200);
  REQUIRE(journal_wait("4 thread", 5000));
  journal_read(buf, sizeof buf);
  CHECK_EQ_STR(buf, "1 thread\n2 loop\n3 process\n4 thread\n");
}

TEST(a_failed_task_does_not_stop_the_next_unless_asked) {
  char buf[8192];
  journal_reset();
  int before = atomic_load(&hook_calls);
  REQUIRE(get(ts.port, "/failing", buf, sizeof buf) == 200);
  REQUIRE(journal_wait("after-failure thread", 3000));
  journal_read(buf, sizeof buf);
  CHECK_EQ_STR(buf, "fail first\nafter-failure thread\n");
  CHECK(atomic_load(&hook_calls) == before + 1);
  CHECK(hook_says("fail_thread: failing on purpose: first", NULL));
  journal_reset();
  long dropped = stat_of(CODA_EXEC_THREAD, CODA_STAT_DROPPED);
  REQUIRE(get(ts.port, "/failing?stop=1", buf, sizeof buf) == 200);
  REQUIRE(journal_wait("fail first", 3000));
  for (int i = 0; i < 100 && stat_of(CODA_EXEC_THREAD, CODA_STAT_DROPPED) == dropped; i++)
    tc_sleep_ms(5);
  journal_read(buf, sizeof buf);
  CHECK_EQ_STR(buf, "fail first\n"); /* the second was skipped */
  CHECK_EQ_INT(stat_of(CODA_EXEC_THREAD, CODA_STAT_DROPPED), dropped + 1);
}

TEST(a_failing_handler_drops_its_tasks_but_not_always_ones) {
  char buf[8192];
  journal_reset();
  REQUIRE(get(ts.port, "/handler-fails", buf, sizeof buf) == 500);
  REQUIRE(journal_wait("always thread", 3000));
  tc_sleep_ms(50);
  journal_read(buf, sizeof buf);
  CHECK_EQ_STR(buf, "always thread\n");
}

TEST(the_response_is_complete_before_the_task_starts) {
  char buf[4096];
  journal_reset();
  int fd = tc_connect(ts.port, 5000);
  tc_send_str(fd, "GET /slowtask HTTP/1.1\r\nHost: x\r\n\r\n");
  uint64_t t0 = tc_now_ms();
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK(tc_now_ms() - t0 < 150); /* the 300 ms task does not hold it */
  CHECK_EQ_STR(tc_body(buf), "fast");
  journal_read(buf, sizeof buf);
  CHECK_EQ_STR(buf, ""); /* the client has it all; the task still sleeps */
  CHECK(journal_wait("slow-done thread", 3000));
  close(fd);
}

/* The strong form: with a 16 MiB body and a client not reading, the task
 * must not start; it starts once the last byte is in the socket. */
TEST(no_task_starts_before_the_last_byte_is_written) {
  journal_reset();
  int fd = tc_connect_rcvbuf(ts.port, 10000, 4096);
  tc_send_str(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
  tc_sleep_ms(300);
  char small[64];
  journal_read(small, sizeof small);
  CHECK_EQ_STR(small, "");
  static char buf[sizeof big + 4096];
  CHECK(tc_read_response(fd, buf, sizeof buf) > sizeof big);
  CHECK(journal_wait("after-big loop", 3000));
  close(fd);
}

/* The client resets the connection mid-response: the committed task still
 * runs, and knows its response did not arrive; after a response read to
 * the end, it knows it did. `query` picks the task's executor. */
static void check_delivered(const char *query) {
  char request[128];
  snprintf(request, sizeof request, "GET /big-delivered%s HTTP/1.1\r\nHost: x\r\n\r\n",
           query);
  journal_reset();
  int fd = tc_connect_rcvbuf(ts.port, 5000, 4096);
  tc_send_str(fd, request);
  tc_sleep_ms(100);
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
  REQUIRE(journal_wait("delivered=", 3000));
  char buf[256];
  journal_read(buf, sizeof buf);
  CHECK_EQ_STR(buf, "delivered=0\n");
  journal_reset();
  char resp[4096];
  fd = tc_connect(ts.port, 5000);
  tc_send_str(fd, request);
  static char whole[sizeof big + 4096];
  REQUIRE(tc_read_response(fd, whole, sizeof whole) > sizeof big);
  close(fd);
  REQUIRE(journal_wait("delivered=", 3000));
  journal_read(resp, sizeof resp);
  CHECK_EQ_STR(resp, "delivered=1\n");
}

TEST(tasks_of_an_abandoned_response_run_and_know_it) { check_delivered(""); }

/* A PROCESS task runs in another process, with no run of its own there:
 * its worker is told whether the response was delivered. */
TEST(a_process_task_knows_whether_its_response_was_delivered) {
  check_delivered("?process=1");
}

/* coda_task_request_id() is the id of the request that added the task, in
 * a PROCESS worker too (it was 0 there: the TASK message did not carry it). */
TEST(a_process_task_knows_its_request_id) {
  journal_reset();
  char buf[4096];
  CHECK_EQ_INT(get(ts.port, "/request-id", buf, sizeof buf), 200);
  REQUIRE(journal_wait("request id process", 5000));
  journal_read(buf, sizeof buf);
  CHECK(strstr(buf, "request id thread: same nonzero\n") != NULL);
  CHECK(strstr(buf, "request id process: same nonzero\n") != NULL);
}

/* A PROCESS task may return any negative value, -1000 included: it failed
 * (counted, reported, the list goes on). -1000 was also the worker's code
 * for "skipped", so such a task was dropped as if an earlier task of its
 * list had failed. */
TEST(a_process_task_returning_minus_1000_failed_and_was_not_skipped) {
  journal_reset();
  long failed = stat_of(CODA_EXEC_PROCESS, CODA_STAT_FAILED);
  long dropped = stat_of(CODA_EXEC_PROCESS, CODA_STAT_DROPPED);
  char buf[4096];
  CHECK_EQ_INT(get(ts.port, "/minus-thousand", buf, sizeof buf), 200);
  REQUIRE(journal_wait("after-minus process", 5000));
  journal_read(buf, sizeof buf);
  CHECK(strstr(buf, "minus thousand m\n") != NULL);
  /* Counted, then logged and handed to the hook: wait for both. */
  for (int i = 0; i < 200 && (stat_of(CODA_EXEC_PROCESS, CODA_STAT_FAILED) == failed ||
                              !hook_says("minus_thousand_process", "-1000"));
       i++)
    tc_sleep_ms(5);
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_FAILED) - failed, 1);
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_DROPPED) - dropped, 0);
  CHECK(hook_says("minus_thousand_process", "-1000"));
}

TEST(arguments_are_copied_and_outlive_the_request) {
  journal_reset();
  int fd = tc_connect(ts.port, 5000);
  char buf[4096];
  /* Two pipelined requests: the second overwrites the read buffer the first
   * one's strings came from, while the first one's task is still asleep. */
  tc_send_str(fd, "POST /args HTTP/1.1\r\nHost: x\r\nX-Name: first\r\nContent-Length: "
                  "3\r\n\r\n\x01\x02\x03"
                  "POST /args HTTP/1.1\r\nHost: x\r\nX-Name: second\r\nContent-Length: "
                  "2\r\n\r\n\xaa\xbb");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  close(fd);
  REQUIRE(journal_wait("args second", 3000));
  REQUIRE(journal_wait("args first", 3000));
  journal_read(buf, sizeof buf);
  CHECK(strstr(buf, "args first 42 3 0103 delivered=1\n") != NULL);
  CHECK(strstr(buf, "args second 42 2 aabb delivered=1\n") != NULL);
}

/* The same arguments reach a PROCESS task, through its worker's pipe. */
TEST(arguments_reach_a_process_task_whole) {
  journal_reset();
  int fd = tc_connect(ts.port, 5000);
  char buf[4096];
  static const char two[] = /* a NUL inside the first body */
      "POST /args?process=1 HTTP/1.1\r\nHost: x\r\nX-Name: pfirst\r\n"
      "Content-Length: 3\r\n\r\n\x01\x00\x03"
      "POST /args?process=1 HTTP/1.1\r\nHost: x\r\nX-Name: psecond\r\n"
      "Content-Length: 0\r\n\r\n";
  tc_send(fd, two, sizeof two - 1);
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  close(fd);
  REQUIRE(journal_wait("args psecond", 3000));
  REQUIRE(journal_wait("args pfirst", 3000));
  journal_read(buf, sizeof buf);
  CHECK(strstr(buf, "args pfirst 42 3 0103 delivered=1\n") != NULL);
  CHECK(strstr(buf, "args psecond 42 0 0000 delivered=1\n") != NULL);
}

TEST(route_level_and_middleware_tasks) {
  char buf[8192];
  journal_reset();
  REQUIRE(get(ts.port, "/routed", buf, sizeof buf) == 200);
  CHECK(journal_wait("route-task loop", 3000));
  journal_reset();
  REQUIRE(get(ts.port, "/mw", buf, sizeof buf) == 200);
  REQUIRE(journal_wait("mw-after loop", 3000));
  journal_read(buf, sizeof buf);
  CHECK_EQ_STR(buf, "mw-before thread\nhandler thread\nmw-after loop\n");
}

TEST(a_parallel_list_runs_its_tasks_together) {
  char buf[8192];
  journal_reset();
  REQUIRE(get(ts.port, "/parallel", buf, sizeof buf) == 200);
  REQUIRE(journal_wait("par-slow thread", 3000));
  journal_read(buf, sizeof buf);
  CHECK_EQ_STR(buf, "par-fast thread\npar-slow thread\n"); /* fast did not wait */
}

TEST(a_crashing_process_task_is_reported_and_its_worker_replaced) {
  char buf[4096];
  long crashed = stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED);
  long failed = stat_of(CODA_EXEC_PROCESS, CODA_STAT_FAILED);
  for (int i = 0; i < 3; i++) /* more crashes than workers */
    REQUIRE(get(ts.port, "/crash", buf, sizeof buf) == 200);
  for (int i = 0; i < 20; i++)
    CHECK_EQ_INT(get(ts.port, "/plain", buf, sizeof buf), 200); /* serving goes on */
  /* A deadline, not a duration: under a sanitizer each crash takes time to
   * die, and the crashes come one after another as workers are replaced. A
   * crash is counted as crashed, then (once the task is finished) as
   * failed: wait for both. */
  for (uint64_t t0 = tc_now_ms(); tc_now_ms() - t0 < 30000; tc_sleep_ms(10))
    if (stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED) >= crashed + 3 &&
        stat_of(CODA_EXEC_PROCESS, CODA_STAT_FAILED) >= failed + 3)
      break;
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED), crashed + 3);
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_FAILED), failed + 3);
  /* Killed by SIGSEGV (a sanitizer that caught it would abort, SIGABRT, or
   * exit with an error status instead; main() asks it not to). */
  CHECK(hook_says("crash: worker", "killed by signal") ||
        hook_says("crash: worker", "exited with status"));
  journal_reset();
  REQUIRE(get(ts.port, "/pnote?n=after-crash", buf, sizeof buf) == 200);
  CHECK(journal_wait("after-crash process", 5000)); /* replaced workers run tasks */
}

TEST(a_process_task_past_its_timeout_is_killed) {
  char buf[4096];
  long timed_out = stat_of(CODA_EXEC_PROCESS, CODA_STAT_TIMED_OUT);
  uint64_t t0 = tc_now_ms();
  REQUIRE(get(ts.port, "/spin", buf, sizeof buf) == 200);
  for (int i = 0; i < 300 && stat_of(CODA_EXEC_PROCESS, CODA_STAT_TIMED_OUT) == timed_out;
       i++)
    tc_sleep_ms(10);
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_TIMED_OUT), timed_out + 1);
  CHECK(tc_now_ms() - t0 < 1500);
  journal_reset();
  REQUIRE(get(ts.port, "/pnote?n=after-spin", buf, sizeof buf) == 200);
  CHECK(journal_wait("after-spin process", 5000));
}

/* Waits until no PROCESS task is queued or running: a task of an earlier
 * test may have written its journal line before the server counted it. */
static void settle(void) {
  for (int i = 0; i < 400; i++) {
    if (stat_of(CODA_EXEC_PROCESS, CODA_STAT_QUEUED) == 0 &&
        stat_of(CODA_EXEC_PROCESS, CODA_STAT_RUNNING) == 0)
      return;
    tc_sleep_ms(5);
  }
}

/* True once `pid` has exec'd as a worker: its environment block holds
 * CODA_WORKER_FD. Between uv_spawn's fork and its exec, a child is a copy
 * of this process, with this program's name and file. */
static int execd_as_worker(int pid) {
  static const char key[] = "CODA_WORKER_FD=";
  char path[64], buf[4096 + sizeof key];
  snprintf(path, sizeof path, "/proc/%d/environ", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return 0;
  size_t kept = 0; /* the tail of the last read, for a key cut in two */
  ssize_t n;
  int found = 0;
  while (!found && (n = read(fd, buf + kept, 4096)) > 0) {
    size_t len = kept + (size_t)n;
    found = memmem(buf, len, key, sizeof key - 1) != NULL;
    kept = len < sizeof key ? len : sizeof key;
    memmove(buf, buf + len - kept, kept);
  }
  close(fd);
  return found;
}

/* This program's child processes that run this program (its PROCESS
 * workers): up to `max` pids go to pids[]; *starting counts those not yet
 * named as this program (exec'd through /proc/self/fd/N, a worker is named
 * "N" until it takes the name back, right after it installs its signal
 * handlers) or not yet exec'd. Returns how many there are. */
static int find_workers(int *pids, int max, int *starting) {
  char self[PATH_MAX], exe[PATH_MAX], path[64], text[512], own[64];
  *starting = 0;
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0)
    return 0;
  self[len] = '\0';
  tc_read_file("/proc/self/comm", own, sizeof own);
  DIR *dir = opendir("/proc");
  int n = 0;
  for (struct dirent *e; dir && (e = readdir(dir)) != NULL;) {
    int pid = atoi(e->d_name);
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    tc_read_file(path, text, sizeof text);
    const char *p = strrchr(text, ')');
    int ppid = 0;
    if (pid <= 0 || !p || sscanf(p + 2, "%*c %d", &ppid) != 1 || ppid != getpid())
      continue;
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    len = readlink(path, exe, sizeof exe - 1);
    if (len <= 0 || (exe[len] = '\0', strcmp(exe, self) != 0))
      continue;
    char comm[64];
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    tc_read_file(path, comm, sizeof comm);
    if (strcmp(comm, own) != 0 || !execd_as_worker(pid))
      (*starting)++;
    if (n < max)
      pids[n] = pid;
    n++;
  }
  if (dir)
    closedir(dir);
  return n;
}

/* Waits until `want` workers are up and none is still starting. A worker
 * replaced after a crash in an earlier case can still be starting (seconds
 * under a sanitizer on a busy machine); a signal would kill it before it
 * has its handlers. */
static int workers_ready(int want, int ms) {
  int pids[16], starting = 0;
  for (uint64_t t0 = tc_now_ms(); tc_now_ms() - t0 < (uint64_t)ms; tc_sleep_ms(10))
    if (find_workers(pids, 16, &starting) >= want && starting == 0)
      return 1;
  return find_workers(pids, 16, &starting) >= want && starting == 0;
}

/* Sends sig to this program's PROCESS workers; returns how many. */
static int signal_workers(int sig) {
  int pids[16], starting = 0, n = 0;
  int found = find_workers(pids, 16, &starting);
  CHECK_EQ_INT(starting, 0); /* named as this program in ps and pgrep */
  for (int i = 0; i < found && i < 16; i++)
    if (kill(pids[i], sig) == 0)
      n++;
  return n;
}

/* Runs /pchain and returns the journal once `last` is in it and the task
 * counters have settled (dropped tasks leave no journal line). */
static void run_chain(const char *query, const char *last, char *buf, size_t cap) {
  settle();
  journal_reset();
  char path[128];
  snprintf(path, sizeof path, "/pchain?%s", query);
  REQUIRE(get(ts.port, path, buf, cap) == 200);
  REQUIRE(journal_wait(last, 5000));
  tc_sleep_ms(100); /* anything wrongly run after `last` shows up */
  journal_read(buf, cap);
}

TEST(a_chain_of_process_tasks_runs_in_order) {
  char buf[8192];
  settle();
  long ok = stat_of(CODA_EXEC_PROCESS, CODA_STAT_SUCCEEDED);
  for (int i = 0; i < 3; i++) {
    run_chain("mode=ok", "c5 thread", buf, sizeof buf);
    CHECK_EQ_STR(buf, "c1 process\nc2 process\nc3 process\nc4 process\nc5 thread\n");
  }
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_SUCCEEDED), ok + 12);
}

TEST(a_failure_in_a_process_chain_stops_it_only_when_asked) {
  char buf[8192];
  run_chain("mode=fail", "c5 thread", buf, sizeof buf);
  CHECK_EQ_STR(buf, "c1 process\nfail c2\nc3 process\nc4 process\nc5 thread\n");
  settle();
  long pdrop = stat_of(CODA_EXEC_PROCESS, CODA_STAT_DROPPED);
  long tdrop = stat_of(CODA_EXEC_THREAD, CODA_STAT_DROPPED);
  long failed = stat_of(CODA_EXEC_PROCESS, CODA_STAT_FAILED);
  long queued = stat_of(CODA_EXEC_PROCESS, CODA_STAT_QUEUED);
  run_chain("mode=fail&stop=1", "fail c2", buf, sizeof buf);
  for (int i = 0; i < 200 && stat_of(CODA_EXEC_THREAD, CODA_STAT_DROPPED) == tdrop; i++)
    tc_sleep_ms(5);
  journal_read(buf, sizeof buf);
  CHECK_EQ_STR(buf, "c1 process\nfail c2\n"); /* c3 and c4 were skipped in the worker */
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_DROPPED), pdrop + 2);
  CHECK_EQ_INT(stat_of(CODA_EXEC_THREAD, CODA_STAT_DROPPED), tdrop + 1);
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_FAILED), failed + 1);
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_QUEUED),
               queued); /* none left counted */
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_RUNNING), 0);
}

TEST(a_crash_or_timeout_in_a_process_chain_keeps_the_order) {
  char buf[8192];
  long crashed = stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED);
  /* The tasks chained behind the crash go back to the list, not to the
   * shared queue, so c3 still runs before c4. */
  run_chain("mode=crash", "c5 thread", buf, sizeof buf);
  CHECK_EQ_STR(buf, "c1 process\nc3 process\nc4 process\nc5 thread\n");
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED), crashed + 1);
  settle();
  long pdrop = stat_of(CODA_EXEC_PROCESS, CODA_STAT_DROPPED);
  run_chain("mode=crash&stop=1", "c1 process", buf, sizeof buf);
  for (int i = 0; i < 400 && stat_of(CODA_EXEC_PROCESS, CODA_STAT_DROPPED) < pdrop + 2;
       i++)
    tc_sleep_ms(5);
  journal_read(buf, sizeof buf);
  CHECK_EQ_STR(buf, "c1 process\n");
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_DROPPED), pdrop + 2);
  long timed_out = stat_of(CODA_EXEC_PROCESS, CODA_STAT_TIMED_OUT);
  run_chain("mode=spin", "c5 thread", buf, sizeof buf);
  CHECK_EQ_STR(buf, "c1 process\nc3 process\nc4 process\nc5 thread\n");
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_TIMED_OUT), timed_out + 1);
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_RUNNING), 0);
}

TEST(a_worker_that_cannot_start_is_retried_with_backoff) {
  char buf[4096];
  settle();
  /* Both workers past their start: one still starting would read the file
   * below and fail too, leaving no worker to serve. */
  REQUIRE(workers_ready(2, 20000));
  int fd = open(noworker_path, O_WRONLY | O_CREAT, 0600);
  REQUIRE(fd >= 0);
  close(fd);
  long restarted = stat_of(CODA_EXEC_PROCESS, CODA_STAT_RESTARTED);
  long crashed = stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED);
  REQUIRE(get(ts.port, "/crash", buf, sizeof buf) == 200);
  for (uint64_t t0 = tc_now_ms();
       stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED) == crashed &&
       tc_now_ms() - t0 < 20000;)
    tc_sleep_ms(10);
  REQUIRE(stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED) == crashed + 1);
  /* Its replacements die at start: 0 + 0.1 + 0.2 + 0.4 + 0.8 s apart, so at
   * most 5 in 1.6 s (without the wait: hundreds; a slow machine only makes
   * fewer). */
  tc_sleep_ms(1600);
  long tries = stat_of(CODA_EXEC_PROCESS, CODA_STAT_RESTARTED) - restarted;
  CHECK(tries <= 6);
  /* And they are retried: a third try comes, however slow the start. */
  for (uint64_t t0 = tc_now_ms(); tries < 3 && tc_now_ms() - t0 < 20000; tc_sleep_ms(10))
    tries = stat_of(CODA_EXEC_PROCESS, CODA_STAT_RESTARTED) - restarted;
  CHECK(tries >= 3);
  journal_reset();
  REQUIRE(get(ts.port, "/pnote?n=while-broken", buf, sizeof buf) == 200);
  CHECK(journal_wait("while-broken process", 10000)); /* the other worker serves */
  CHECK_EQ_INT(get(ts.port, "/plain", buf, sizeof buf), 200);
  unlink(noworker_path);
  /* The next try (1.6 s after the last at most) starts a worker for good. */
  long before = stat_of(CODA_EXEC_PROCESS, CODA_STAT_RESTARTED);
  tc_sleep_ms(3500);
  long after = stat_of(CODA_EXEC_PROCESS, CODA_STAT_RESTARTED);
  CHECK(after - before <= 2);
  for (int i = 0; i < 4; i++) { /* both workers run tasks again */
    char name[32];
    snprintf(name, sizeof name, "/pnote?n=healed%d", i);
    REQUIRE(get(ts.port, name, buf, sizeof buf) == 200);
  }
  CHECK(journal_wait("healed3 process", 10000));
  tc_sleep_ms(300);
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_RESTARTED), after);
}

TEST(a_task_its_worker_does_not_know_fails_and_the_list_goes_on) {
  char buf[8192];
  settle();
  long failed = stat_of(CODA_EXEC_PROCESS, CODA_STAT_FAILED);
  journal_reset();
  REQUIRE(get(ts.port, "/unknown", buf, sizeof buf) == 200);
  CHECK(journal_wait("after-unknown process", 5000));
  /* The worker's answer for the unknown task reaches the server's counter
   * on its own time: the journal line of the next task can come first. */
  for (int i = 0; i < 500 && stat_of(CODA_EXEC_PROCESS, CODA_STAT_FAILED) < failed + 1;
       i++)
    tc_sleep_ms(10);
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_FAILED), failed + 1);
  CHECK(hook_says("parent_only: unknown task name", NULL));
  settle();
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_RUNNING), 0);
}

/* The pid of a process, or its state letter from /proc ('Z': a zombie, '-':
 * gone). */
static char proc_state(int pid) {
  char path[64], text[512];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return '-';
  ssize_t n = read(fd, text, sizeof text - 1);
  close(fd);
  text[n > 0 ? n : 0] = '\0';
  const char *p = strrchr(text, ')');
  return p && p[1] == ' ' ? p[2] : '?';
}

/* `systemctl stop`, `timeout` or a terminal signal the whole group: the
 * workers leave stopping to the server, and a task in progress ends well. */
TEST(a_signal_to_the_whole_group_leaves_workers_to_the_server) {
  char buf[4096];
  settle();
  REQUIRE(workers_ready(2, 20000));
  long restarted = stat_of(CODA_EXEC_PROCESS, CODA_STAT_RESTARTED);
  long crashed = stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED);
  journal_reset();
  REQUIRE(get(ts.port, "/pnote?n=through-term&ms=400", buf, sizeof buf) == 200);
  for (uint64_t t0 = tc_now_ms();
       stat_of(CODA_EXEC_PROCESS, CODA_STAT_RUNNING) == 0 && tc_now_ms() - t0 < 5000;)
    tc_sleep_ms(5); /* the task is in its worker */
  CHECK(signal_workers(SIGTERM) >= 1);
  CHECK(signal_workers(SIGINT) >= 1);
  CHECK(journal_wait("through-term process", 5000));
  settle();
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED), crashed);
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_RESTARTED), restarted);
}

/* A Ctrl-C or a `systemctl stop` can come while a worker is starting: its
 * main() runs its own start-up code before it reaches coda_app_worker(),
 * and uv_spawn hands it every signal unblocked and at its default action.
 * A worker that died of it would be replaced, and the replacement could
 * die the same way. Here each new worker signals itself in main(); the
 * one that replaces a crashed worker must live and serve. */
TEST(a_stop_signal_while_a_worker_starts_does_not_kill_it) {
  char buf[4096];
  settle();
  REQUIRE(workers_ready(2, 20000)); /* both past main(), so neither reads the file */
  int fd = open(early_signal_path, O_WRONLY | O_CREAT, 0600);
  REQUIRE(fd >= 0);
  close(fd);
  long restarted = stat_of(CODA_EXEC_PROCESS, CODA_STAT_RESTARTED);
  long crashed = stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED);
  int asked = get(ts.port, "/crash", buf, sizeof buf) == 200;
  for (uint64_t t0 = tc_now_ms();
       asked && stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED) == crashed &&
       tc_now_ms() - t0 < 20000;)
    tc_sleep_ms(10);
  /* The replacement has signalled itself once it is past main(). */
  int ready = asked && workers_ready(2, 20000);
  unlink(early_signal_path);
  CHECK(asked);
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_CRASHED), crashed + 1);
  CHECK(ready);
  /* The crashed worker was replaced once; the signals ended no worker. */
  CHECK_EQ_INT(stat_of(CODA_EXEC_PROCESS, CODA_STAT_RESTARTED), restarted + 1);
  journal_reset();
  for (int i = 0; i < 4; i++) { /* and tasks run */
    char name[48];
    snprintf(name, sizeof name, "/pnote?n=after-early-signal%d", i);
    REQUIRE(get(ts.port, name, buf, sizeof buf) == 200);
  }
  CHECK(journal_wait("after-early-signal3 process", 10000));
}

/* A server killed with SIGKILL takes its workers with it, even one in the
 * middle of a long task (they would otherwise burn on, orphaned). The
 * server is this program again, in "orphan" mode (see main). */
TEST(workers_die_with_a_killed_server) {
  char buf[8192], env_journal[300];
  journal_reset();
  snprintf(env_journal, sizeof env_journal, "CODA_TEST_JOURNAL=%s", journal_path);
  char *argv[] = {"/proc/self/exe", NULL};
  char *envp[] = {"CODA_TEST_ORPHAN=1", env_journal, NULL};
  pid_t server;
  REQUIRE(posix_spawn(&server, "/proc/self/exe", NULL, NULL, argv, envp) == 0);
  int worker = 0;
  for (int i = 0; i < 1000 && !worker; i++) {
    journal_read(buf, sizeof buf);
    const char *p = strstr(buf, "sleeper pid ");
    if (p)
      worker = atoi(p + 12);
    else
      tc_sleep_ms(10);
  }
  if (!worker) {
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
  }
  REQUIRE(worker > 0);
  CHECK(proc_state(worker) != '-' &&
        proc_state(worker) != 'Z'); /* sleeping in its task */
  kill(server, SIGKILL);
  waitpid(server, NULL, 0);
  char st = 0;
  for (int i = 0; i < 200; i++) {
    st = proc_state(worker);
    if (st == '-' || st == 'Z')
      break;
    tc_sleep_ms(10);
  }
  if (st != '-' && st != 'Z')
    kill(worker, SIGKILL); /* do not leave it behind */
  CHECK(st == '-' || st == 'Z');
}

/* Orphan mode (CODA_TEST_ORPHAN): one worker, one sleeper task, then wait
 * to be killed. */
static int orphan_main(void) {
  coda_app_set(app, CODA_OPT_PROCESS_WORKERS, 1);
  coda_app_set(app, CODA_OPT_HANDLE_SIGNALS, 0);
  if (ts_start(&ts, app) != 0)
    return 1;
  char buf[4096];
  if (get(ts.port, "/sleeper", buf, sizeof buf) != 200)
    return 1;
  for (;;)
    pause();
}

static int h_sleeper(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  int rc = coda_res_add_task(res, D.sleeper, "");
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

TEST(a_thread_task_past_its_timeout_is_reported_and_cancelled) {
  char buf[4096];
  journal_reset();
  long timed_out = stat_of(CODA_EXEC_THREAD, CODA_STAT_TIMED_OUT);
  REQUIRE(get(ts.port, "/slowthread", buf, sizeof buf) == 200);
  REQUIRE(journal_wait("slow cancelled=", 3000));
  journal_read(buf, sizeof buf);
  CHECK_EQ_STR(buf, "slow cancelled=1\n");
  CHECK_EQ_INT(stat_of(CODA_EXEC_THREAD, CODA_STAT_TIMED_OUT), timed_out + 1);
}

/* ---- own servers ------------------------------------------------------------- */

/* GET /block[?ms=N]: a THREAD task that sleeps N ms (300 by default). */
static int h_block(coda_req *req, coda_res *res, void *user) {
  (void)user;
  const char *ms = coda_req_query(req, "ms");
  int rc = coda_res_add_task(res, D.note_thread, "si", "block",
                             (int64_t)(ms ? atoi(ms) : 300));
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

TEST(a_full_queue_answers_503_with_retry_after) {
  coda_app *a = make_app();
  coda_app_set(a, CODA_OPT_THREAD_POOL_SIZE, 1);
  coda_app_set(a, CODA_OPT_THREAD_QUEUE, 2);
  coda_app_set(a, CODA_OPT_RETRY_AFTER, 7);
  coda_app_set(a, CODA_OPT_PROCESS_WORKERS, 1);
  coda_app_route(a, "GET", "/block", h_block, NULL);
  test_server s;
  REQUIRE(ts_start(&s, a) == 0);
  char buf[4096];
  CHECK_EQ_INT(get(s.port, "/block", buf, sizeof buf), 200);
  CHECK_EQ_INT(get(s.port, "/block", buf, sizeof buf), 200);
  CHECK_EQ_INT(get(s.port, "/block", buf, sizeof buf), 503);
  CHECK(strstr(buf, "\r\nRetry-After: 7\r\n") != NULL);
  CHECK_EQ_INT(coda_task_stat(a, CODA_EXEC_THREAD, CODA_STAT_REJECTED), 1);
  CHECK_EQ_INT(get(s.port, "/plain", buf, sizeof buf), 200); /* no task: still served */
  ts_stop(&s);
  coda_app_free(a);
}

/* Shutdown waits for tasks up to the drain deadline, then says, by name,
 * what did not finish. The tasks are long (1 s each, 4 s in all on one
 * thread) so that none has finished when the stop begins, and a stop that
 * waited for the work would take seconds longer than one that kept the
 * deadline (450 ms, then 100 ms of grace for the task under way, which is
 * left to end on its thread): timings under a sanitizer on a busy machine
 * fall between the two, not across. */
TEST(shutdown_drains_tasks_and_reports_the_rest) {
  coda_app *a = make_app();
  coda_app_set(a, CODA_OPT_THREAD_POOL_SIZE, 1);
  coda_app_set(a, CODA_OPT_TASK_DRAIN_TIMEOUT, 450);
  coda_app_set(a, CODA_OPT_LOG_LEVEL, CODA_LOG_INFO);
  coda_app_set(a, CODA_OPT_PROCESS_WORKERS, 1);
  coda_app_route(a, "GET", "/block", h_block, NULL);
  test_server s;
  char logpath[] = "/tmp/coda-tasks-log-XXXXXX";
  int logfd = mkstemp(logpath);
  int saved = dup(2);
  dup2(logfd, 2);
  REQUIRE(ts_start(&s, a) == 0);
  char buf[4096];
  journal_reset();
  for (int i = 0; i < 4; i++)
    CHECK_EQ_INT(get(s.port, "/block?ms=1000", buf, sizeof buf), 200);
  uint64_t t0 = tc_now_ms();
  ts_stop(&s);
  uint64_t took = tc_now_ms() - t0;
  dup2(saved, 2);
  close(saved);
  if (took < 400 || took >= 3000)
    fprintf(stderr, "  stopped after %llu ms\n", (unsigned long long)took);
  CHECK(took >= 400 && took < 3000); /* the drain deadline, not the work */
  /* The task under way ends on its left thread (the app is freed once it
   * has); the three behind it never ran. */
  CHECK_EQ_INT(tc_app_free(a, 3000), 0);
  journal_read(buf, sizeof buf);
  CHECK_EQ_INT(tc_count(buf, "block thread"), 1);
  char log[16384];
  lseek(logfd, 0, SEEK_SET);
  ssize_t n = read(logfd, log, sizeof log - 1);
  log[n > 0 ? n : 0] = '\0';
  close(logfd);
  unlink(logpath);
  CHECK(strstr(log, "Waiting for 4 background tasks") != NULL);
  CHECK(strstr(log, "tasks did not finish: note_thread x") != NULL);
}

/* A second stop during the drain does not wait for the tasks. */
TEST(a_second_stop_skips_the_drain) {
  coda_app *a = make_app();
  coda_app_set(a, CODA_OPT_THREAD_POOL_SIZE, 1);
  coda_app_set(a, CODA_OPT_TASK_DRAIN_TIMEOUT, 10000);
  coda_app_set(a, CODA_OPT_PROCESS_WORKERS, 1);
  coda_app_route(a, "GET", "/block", h_block, NULL);
  test_server s;
  REQUIRE(ts_start(&s, a) == 0);
  char buf[4096];
  for (int i = 0; i < 6; i++) /* 6 s of work on one thread */
    CHECK_EQ_INT(get(s.port, "/block?ms=1000", buf, sizeof buf), 200);
  uint64_t t0 = tc_now_ms();
  coda_app_stop(a);
  tc_sleep_ms(100);
  coda_app_stop(a);
  uv_thread_join(&s.thread);
  uint64_t took = tc_now_ms() - t0;
  /* The task under way ends (1 s at most), the rest are dropped: not the
   * 6 s of queued work, nor the 10 s drain. */
  if (took >= 3000)
    fprintf(stderr, "  stopped after %llu ms\n", (unsigned long long)took);
  CHECK(took < 3000);
  CHECK(coda_task_stat(a, CODA_EXEC_THREAD, CODA_STAT_DROPPED) >= 3);
  CHECK_EQ_INT(tc_app_free(a, 2000), 0); /* the task that ran is left to end */
}

int main(void) {
  uv_mutex_init(&hook_mu);
  tc_journal_path(journal_path, sizeof journal_path, "/tmp/coda-tasks-journal");
  /* While this file exists, new workers fail at start-up (see
   * a_worker_that_cannot_start_is_retried_with_backoff). */
  snprintf(noworker_path, sizeof noworker_path, "%s.noworker", journal_path);
  if (getenv("CODA_WORKER_FD") && access(noworker_path, F_OK) == 0)
    _exit(3);
  /* While this file exists, new workers are sent SIGTERM and SIGINT here,
   * long before coda_app_worker() (see
   * a_stop_signal_while_a_worker_starts_does_not_kill_it). */
  snprintf(early_signal_path, sizeof early_signal_path, "%s.earlysignal", journal_path);
  if (getenv("CODA_WORKER_FD") && access(early_signal_path, F_OK) == 0) {
    raise(SIGTERM);
    raise(SIGINT);
  }
  app = make_app();
  coda_app_worker(app); /* a PROCESS worker stops here */
  parent_only_def = coda_app_task(app, "parent_only", note_task, CODA_EXEC_PROCESS);
  coda_app_route(app, "GET", "/sleeper", h_sleeper, NULL);
  if (getenv("CODA_TEST_ORPHAN"))
    return orphan_main();
  tc_workers_die_of_segv(); /* the crashes are on purpose */
  memset(big, 'b', sizeof big);
  if (ts_start(&ts, app) != 0)
    return 1;
  static const test__case cases[] = {
      TEST_CASE(tasks_run_in_order_across_executors),
      TEST_CASE(a_failed_task_does_not_stop_the_next_unless_asked),
      TEST_CASE(a_failing_handler_drops_its_tasks_but_not_always_ones),
      TEST_CASE(the_response_is_complete_before_the_task_starts),
      TEST_CASE(no_task_starts_before_the_last_byte_is_written),
      TEST_CASE(tasks_of_an_abandoned_response_run_and_know_it),
      TEST_CASE(a_process_task_knows_whether_its_response_was_delivered),
      TEST_CASE(a_process_task_knows_its_request_id),
      TEST_CASE(a_process_task_returning_minus_1000_failed_and_was_not_skipped),
      TEST_CASE(arguments_are_copied_and_outlive_the_request),
      TEST_CASE(arguments_reach_a_process_task_whole),
      TEST_CASE(route_level_and_middleware_tasks),
      TEST_CASE(a_parallel_list_runs_its_tasks_together),
      TEST_CASE(a_crashing_process_task_is_reported_and_its_worker_replaced),
      TEST_CASE(a_signal_to_the_whole_group_leaves_workers_to_the_server),
      TEST_CASE(a_stop_signal_while_a_worker_starts_does_not_kill_it),
      TEST_CASE(a_process_task_past_its_timeout_is_killed),
      TEST_CASE(a_chain_of_process_tasks_runs_in_order),
      TEST_CASE(a_failure_in_a_process_chain_stops_it_only_when_asked),
      TEST_CASE(a_crash_or_timeout_in_a_process_chain_keeps_the_order),
      TEST_CASE(a_worker_that_cannot_start_is_retried_with_backoff),
      TEST_CASE(a_task_its_worker_does_not_know_fails_and_the_list_goes_on),
      TEST_CASE(workers_die_with_a_killed_server),
      TEST_CASE(a_thread_task_past_its_timeout_is_reported_and_cancelled),
      TEST_CASE(a_full_queue_answers_503_with_retry_after),
      TEST_CASE(shutdown_drains_tasks_and_reports_the_rest),
      TEST_CASE(a_second_stop_skips_the_drain),
  };
  int rc = test__run("tasks", cases, sizeof cases / sizeof cases[0]);
  ts_stop(&ts);
  coda_app_free(app);
  unlink(journal_path);
  return rc;
}
