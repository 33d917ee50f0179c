/*
 * demo_test.c - the demo program as a user runs it: a separate process on
 * an ephemeral port, its access log on stderr, and SIGTERM/SIGINT ending it
 * with exit status 0.
 */
#include "harness.h"
#include "test.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct {
  pid_t pid;
  int err_fd; /* read end of the demo's stderr */
  int port;
  char log[65536];
  size_t log_len;
} demo;

/* Reads the demo's stderr for up to ms milliseconds (or until `until`
 * appears in it). */
static void read_log(demo *d, int ms, const char *until) {
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  while (tc_now_ms() < end) {
    if (until && strstr(d->log, until))
      return;
    if (d->log_len > sizeof d->log / 2) { /* keep reading: keep the newest quarter */
      size_t drop = d->log_len - sizeof d->log / 4;
      memmove(d->log, d->log + drop, d->log_len - drop + 1);
      d->log_len -= drop;
    }
    struct pollfd p = {d->err_fd, POLLIN, 0};
    if (poll(&p, 1, 20) <= 0)
      continue;
    ssize_t r = read(d->err_fd, d->log + d->log_len, sizeof d->log - d->log_len - 1);
    if (r <= 0)
      return;
    d->log_len += (size_t)r;
    d->log[d->log_len] = '\0';
  }
}

/* Each demo gets its own store file in a temp directory (removed at exit). */
static char store_dir[] = "/tmp/coda-demo-test-XXXXXX";
static char store_uri[256];
/* The demo's --tick: off, so that /stats counts only the seeds' tasks,
 * unless a case turns it on. */
static const char *tick_ms = "0";

static void remove_store(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", store_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", store_dir);
}

static int demo_start(demo *d) {
  memset(d, 0, sizeof *d);
  if (!store_uri[0]) {
    if (!mkdtemp(store_dir))
      return -1;
    atexit(remove_store);
    snprintf(store_uri, sizeof store_uri, "sqlite:%s/data/coda.db", store_dir);
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  char *argv[] = {CODA_DEMO_PATH, "--listen", "127.0.0.1:0", "--threads", "2",
                  "--store", store_uri, "--tick", (char *)tick_ms, NULL};
  int rc = posix_spawn(&d->pid, CODA_DEMO_PATH, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  d->err_fd = fds[0];
  if (rc != 0)
    return -1;
  read_log(d, 5000, "listening on http://127.0.0.1:");
  const char *p = strstr(d->log, "listening on http://127.0.0.1:");
  if (!p)
    return -1;
  d->port = atoi(p + strlen("listening on http://127.0.0.1:"));
  return d->port > 0 ? 0 : -1;
}

/* Sends a signal (0: none) and waits for the exit, reading the demo's
 * stderr meanwhile so that it can never block on a full pipe; returns the
 * exit status, or -1 (said on stderr, with the end of its log) if it did
 * not exit normally within ms. */
static int demo_stop(demo *d, int sig, int ms) {
  kill(d->pid, sig);
  uint64_t t0 = tc_now_ms();
  int status;
  while (tc_now_ms() - t0 < (uint64_t)ms) {
    pid_t r = waitpid(d->pid, &status, WNOHANG);
    if (r == d->pid) {
      read_log(d, 50, NULL);
      close(d->err_fd);
      if (WIFEXITED(status))
        return WEXITSTATUS(status);
      fprintf(stderr, "  demo killed by signal %d; its log ends:\n%s\n", WTERMSIG(status),
              d->log_len > 2000 ? d->log + d->log_len - 2000 : d->log);
      return -1;
    }
    read_log(d, 10, NULL);
  }
  fprintf(stderr, "  demo still running %d ms after signal %d; its log ends:\n%s\n", ms,
          sig, d->log_len > 2000 ? d->log + d->log_len - 2000 : d->log);
  kill(d->pid, SIGKILL);
  waitpid(d->pid, &status, 0);
  close(d->err_fd);
  return -1;
}

TEST(demo_serves_its_routes_and_logs_them) {
  demo d;
  REQUIRE(demo_start(&d) == 0);
  char buf[8192];
  int fd = tc_connect(d.port, 3000);
  tc_send_str(fd, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_STR(tc_body(buf), "{\"status\":\"ok\"}");
  tc_send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n\x01\x02 bin\xff");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK(memcmp(tc_body(buf), "\x01\x02 bin\xff", 7) == 0);
  tc_send_str(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK(strstr(tc_body(buf), "\"/plain\"") && strstr(tc_body(buf), "\"/echo\""));
  close(fd);
  read_log(&d, 2000, "\"GET / HTTP/1.1\" 200 OK");
  /* The seeds' (uvicorn's) access log format. */
  CHECK(strstr(d.log, " - \"GET /plain HTTP/1.1\" 200 OK\n") != NULL);
  CHECK(strstr(d.log, "INFO:     127.0.0.1:") != NULL);
  CHECK(strstr(d.log, " - \"POST /echo HTTP/1.1\" 200 OK\n") != NULL);
  CHECK_EQ_INT(demo_stop(&d, SIGTERM, 5000), 0);
  CHECK(strstr(d.log, "Shutdown complete") != NULL);
}

/* A one-shot HTTP receiver for the webhook: accepts one connection, reads
 * one request, answers 204, and keeps what it read. */
typedef struct {
  int listen_fd;
  int port;
  char got[4096];
  uv_thread_t thread;
} receiver;

static void receiver_main(void *arg) {
  receiver *r = arg;
  int fd = accept(r->listen_fd, NULL, NULL);
  if (fd < 0)
    return;
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  size_t n = 0;
  while (n + 1 < sizeof r->got) {
    ssize_t k = recv(fd, r->got + n, sizeof r->got - n - 1, 0);
    if (k <= 0)
      break;
    n += (size_t)k;
    r->got[n] = '\0';
    const char *head_end = strstr(r->got, "\r\n\r\n");
    const char *cl = strcasestr(r->got, "Content-Length: ");
    if (head_end && cl && n >= (size_t)(head_end + 4 - r->got) + strtoul(cl + 16, NULL, 10))
      break;
  }
  const char *answer = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
  ssize_t w = send(fd, answer, strlen(answer), MSG_NOSIGNAL);
  (void)w;
  close(fd);
}

static int receiver_start(receiver *r) {
  memset(r, 0, sizeof *r);
  r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (bind(r->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(r->listen_fd, 4) != 0 ||
      getsockname(r->listen_fd, (struct sockaddr *)&a, &len) != 0)
    return -1;
  r->port = ntohs(a.sin_port);
  return uv_thread_create(&r->thread, receiver_main, r);
}

/* The seeds' routes: answers in milliseconds, the task's lines after the
 * response's line, a different PID for the process task, three register
 * tasks in order, a webhook really delivered, counters that add up. */
TEST(demo_runs_the_seeds_tasks_after_the_response) {
  demo d;
  REQUIRE(demo_start(&d) == 0);
  char buf[8192];
  int fd = tc_connect(d.port, 5000);
  uint64_t t0 = tc_now_ms();
  tc_send_str(fd, "GET /thread/?email=seed@example.com HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK(tc_now_ms() - t0 < 500); /* the 2 s email runs after */
  /* The seeds' bodies, byte for byte. */
  CHECK(strstr(buf, "\r\n\r\n{\"status\": \"queued\", \"message\": \"Email is sending in "
                    "background\"}") != NULL);
  tc_send_str(fd, "GET /process/ HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK(strstr(buf, "\r\n\r\n{\"status\": \"queued\", \"message\": \"Heavy calculation "
                    "started\"}") != NULL);
  CHECK(tc_now_ms() - t0 < 1000);
  const char *reg = "{\"email\":\"alice@example.com\"}";
  char req[512];
  snprintf(req, sizeof req, "POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
           strlen(reg), reg);
  tc_send_str(fd, req);
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 201);
  tc_send_str(fd, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\none\ntwo\nsix\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 202);
  CHECK(strstr(buf, "\"bytes\":12") != NULL);
  receiver r;
  REQUIRE(receiver_start(&r) == 0);
  char order[256];
  snprintf(order, sizeof order, "{\"item\":\"latte\",\"webhook\":\"http://127.0.0.1:%d/hook\"}", r.port);
  snprintf(req, sizeof req, "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
           strlen(order), order);
  tc_send_str(fd, req);
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  CHECK_EQ_INT(tc_status(buf), 201);
  uv_thread_join(&r.thread);
  close(r.listen_fd);
  CHECK(strstr(r.got, "POST /hook HTTP/1.1\r\n") != NULL);
  CHECK(strstr(r.got, "{\"event\":\"order.created\",\"order\":1,\"item\":\"latte\"}") != NULL);
  read_log(&d, 4000, "Email sent to seed@example.com!");
  const char *resp = strstr(d.log, "\"GET /thread/?email=seed@example.com HTTP/1.1\" 200 OK");
  const char *start = strstr(d.log, "[Thread] \u23f3 Starting email to seed@example.com...");
  const char *sent = strstr(d.log, "[Thread] \u2705 Email sent to seed@example.com!");
  CHECK(resp && start && sent && resp < start && start < sent);
  const char *pid = strstr(d.log, "Processing data 101 on PID ");
  REQUIRE(pid != NULL);
  CHECK(atoi(pid + strlen("Processing data 101 on PID ")) != (int)d.pid);
  CHECK(strstr(d.log, "processed: 12 bytes, 3 lines") != NULL); /* the upload task */
  const char *e1 = strstr(d.log, "Email sent to alice@example.com!");
  const char *e2 = strstr(d.log, "profile created for alice@example.com");
  const char *e3 = strstr(d.log, "admin notified: new user alice@example.com");
  CHECK(e1 && e2 && e3 && e1 < e2 && e2 < e3);
  /* A task logs its last line a moment before it is counted: poll. */
  for (int i = 0; i < 100; i++) {
    tc_send_str(fd, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
    if (strstr(buf, "\"thread\":{\"queued\":0,\"running\":0,\"succeeded\":4"))
      break;
    tc_sleep_ms(20);
  }
  CHECK(strstr(buf, "\"thread\":{\"queued\":0,\"running\":0,\"succeeded\":4") != NULL);
  CHECK(strstr(buf, "\"loop\":{\"queued\":0,\"running\":0,\"succeeded\":2") != NULL);
  close(fd);
  CHECK_EQ_INT(demo_stop(&d, SIGTERM, 5000), 0);
}

/* GET /tasks/{id} on a fresh connection; returns the body's state field
 * start ("queued", ...) or "" when unreadable. */
static const char *task_state(int port, unsigned long long id, char *buf, size_t cap) {
  int fd = tc_connect(port, 3000);
  char req[128];
  snprintf(req, sizeof req, "GET /tasks/%llu HTTP/1.1\r\nHost: x\r\n\r\n", id);
  tc_send_str(fd, req);
  size_t n = tc_read_response(fd, buf, cap);
  close(fd);
  const char *st = n ? strstr(buf, "\"state\":\"") : NULL;
  return st ? st + 9 : "";
}

/* The durable route: 202 with Location once stored; two failed attempts,
 * then success; the task survives a restart of the demo between them. */
TEST(demo_durable_report_retries_and_survives_a_restart) {
  demo d;
  REQUIRE(demo_start(&d) == 0);
  char buf[8192];
  int fd = tc_connect(d.port, 3000);
  const char *body = "{\"name\":\"q3\"}";
  char req[256];
  snprintf(req, sizeof req,
           "POST /reports HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
           strlen(body), body);
  tc_send_str(fd, req);
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  close(fd);
  CHECK_EQ_INT(tc_status(buf), 202);
  const char *loc = strstr(buf, "\r\nLocation: /tasks/");
  REQUIRE(loc != NULL);
  unsigned long long id = strtoull(loc + strlen("\r\nLocation: /tasks/"), NULL, 10);
  CHECK(strstr(tc_body(buf), "\"status\":\"/tasks/") != NULL);
  /* The first attempt fails at once; stop the demo while it waits. */
  read_log(&d, 3000, "attempt 1 of 5 failed");
  CHECK(strstr(d.log, "attempt 1 of 5 failed; retry in") != NULL);
  /* The outcome is written by the next group commit, a moment later. */
  const char *state = "";
  for (int i = 0; i < 100 && strncmp(state, "failed\"", 7) != 0; i++) {
    state = task_state(d.port, id, buf, sizeof buf);
    if (strncmp(state, "failed\"", 7) != 0)
      tc_sleep_ms(10);
  }
  CHECK(strncmp(state, "failed\"", 7) == 0);
  CHECK(strstr(buf, "\"error\":\"upstream unavailable (attempt 1) for report q3\"") != NULL);
  CHECK_EQ_INT(demo_stop(&d, SIGTERM, 5000), 0);
  /* A new process on the same store finishes the job. */
  REQUIRE(demo_start(&d) == 0);
  for (int i = 0; i < 200; i++) {
    state = task_state(d.port, id, buf, sizeof buf);
    if (strncmp(state, "succeeded\"", 10) == 0)
      break;
    tc_sleep_ms(50);
  }
  CHECK(strncmp(state, "succeeded\"", 10) == 0);
  CHECK(strstr(buf, "\"attempts\":3") != NULL);
  CHECK(strstr(buf, "\"progress\":1.0") != NULL);
  CHECK(strstr(buf, "\"result\":\"{\\\"report\\\":\\\"q3\\\",\\\"rows\\\":42}\"") != NULL);
  read_log(&d, 2000, "[Report] q3: done");
  CHECK(strstr(d.log, "[Report] q3: attempt 3") != NULL);
  int nf = tc_connect(d.port, 3000);
  tc_send_str(nf, "GET /tasks/999999 HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(nf, buf, sizeof buf) > 0);
  close(nf);
  CHECK_EQ_INT(tc_status(buf), 404);
  CHECK_EQ_INT(demo_stop(&d, SIGTERM, 5000), 0);
}

/* GET /tasks?name=tick: the periodic task's runs, each with its due time
 * (a multiple of the interval), once each; pages by id with next_after. */
static json_t *get_json(int port, const char *path, int *status) {
  char buf[65536];
  *status = tc_get(port, path, buf, sizeof buf, 3000);
  const char *body = *status > 0 ? tc_body(buf) : NULL;
  return body ? json_loads(body, 0, NULL) : NULL;
}

/* Succeeded tick runs listed in one page (-1 if the answer is unreadable). */
static int succeeded_ticks(int port) {
  int status;
  json_t *j = get_json(port, "/tasks?name=tick&state=succeeded&limit=1000", &status);
  int n = j && status == 200 ? (int)json_array_size(json_object_get(j, "tasks")) : -1;
  json_decref(j);
  return n;
}

TEST(demo_lists_the_periodic_tick_by_name) {
  tick_ms = "200";
  demo d;
  int started = demo_start(&d);
  tick_ms = "0";
  REQUIRE(started == 0);
  uint64_t end = tc_now_ms() + 20000;
  while (succeeded_ticks(d.port) < 4 && tc_now_ms() < end)
    tc_sleep_ms(50);
  CHECK(succeeded_ticks(d.port) >= 4);
  /* Every run, any state: a due time each, aligned, none twice. */
  int status;
  json_t *all = get_json(d.port, "/tasks?name=tick", &status);
  CHECK_EQ_INT(status, 200);
  json_t *tasks = json_object_get(all, "tasks");
  REQUIRE(json_is_array(tasks));
  size_t n = json_array_size(tasks);
  CHECK(n >= 4);
  CHECK_EQ_STR(json_string_value(json_object_get(all, "name")), "tick");
  long long dues[256];
  for (size_t i = 0; i < n && i < 256; i++) {
    json_t *t = json_array_get(tasks, i);
    dues[i] = json_integer_value(json_object_get(t, "due"));
    CHECK_EQ_STR(json_string_value(json_object_get(t, "name")), "tick");
    CHECK(dues[i] > 0 && dues[i] % 200 == 0);
    for (size_t k = 0; k < i; k++)
      CHECK(dues[k] != dues[i]);
    if (i > 0) /* by increasing id */
      CHECK(json_integer_value(json_object_get(t, "id")) >
            json_integer_value(json_object_get(json_array_get(tasks, i - 1), "id")));
  }
  /* Pages of two cover the same tasks (and the ticks added meanwhile,
   * whose ids, derived from their keys, fall anywhere). */
  static json_int_t paged_ids[4096];
  size_t npaged = 0;
  char path[128] = "/tasks?name=tick&limit=2";
  for (int pages = 0; pages < 1000; pages++) {
    json_t *page = get_json(d.port, path, &status);
    json_t *items = json_object_get(page, "tasks");
    for (size_t i = 0; i < json_array_size(items) && npaged < 4096; i++)
      paged_ids[npaged++] =
          json_integer_value(json_object_get(json_array_get(items, i), "id"));
    json_t *next = json_object_get(page, "next_after");
    if (json_is_integer(next))
      snprintf(path, sizeof path, "/tasks?name=tick&limit=2&after=%lld",
               (long long)json_integer_value(next));
    int more = json_is_integer(next);
    json_decref(page);
    if (!more)
      break;
  }
  size_t paged = 0;
  for (size_t i = 0; i < n; i++) {
    json_int_t id = json_integer_value(json_object_get(json_array_get(tasks, i), "id"));
    for (size_t k = 0; k < npaged; k++)
      if (paged_ids[k] == id) {
        paged++;
        break;
      }
  }
  CHECK_EQ_INT(paged, n);
  json_decref(all);
  json_t *none = get_json(d.port, "/tasks?name=nothing", &status);
  CHECK_EQ_INT(status, 200);
  CHECK_EQ_INT(json_array_size(json_object_get(none, "tasks")), 0);
  json_decref(none);
  char buf[4096];
  CHECK_EQ_INT(tc_get(d.port, "/tasks?name=", buf, sizeof buf, 3000), 422);
  CHECK_EQ_INT(demo_stop(&d, SIGTERM, 5000), 0);
}

/* SIGINT closes an idle keep-alive connection at once, not after the
 * keep-alive timeout (5 s) or at the shutdown deadline (10 s), and the demo
 * exits with status 0. Timed by the end of the connection, not by the exit
 * of the process: under ASan that also waits for the leak check of the
 * demo and of its workers, which took over a second on a busy machine. */
TEST(demo_exits_zero_on_sigint_with_an_open_connection) {
  demo d;
  REQUIRE(demo_start(&d) == 0);
  int fd = tc_connect(d.port, 3000); /* a read waits 3 s at most */
  char buf[4096];
  tc_send_str(fd, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  uint64_t t0 = tc_now_ms();
  kill(d.pid, SIGINT);
  int closed;
  tc_read_all(fd, buf, sizeof buf, &closed);
  uint64_t took = tc_now_ms() - t0;
  if (!closed || took >= 3000)
    fprintf(stderr, "  closed %d after %llu ms\n", closed, (unsigned long long)took);
  CHECK(closed);
  CHECK(took < 3000);
  close(fd);
  CHECK_EQ_INT(demo_stop(&d, 0, 10000), 0); /* signal 0: only waits for the exit */
}

TEST(demo_rejects_bad_arguments) {
  pid_t pid;
  char *argv[] = {CODA_DEMO_PATH, "--listen", "not-an-address", NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  REQUIRE(posix_spawn(&pid, CODA_DEMO_PATH, &fa, NULL, argv, environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
  int status;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0);
}

RUN_TESTS(demo, TEST_CASE(demo_serves_its_routes_and_logs_them),
          TEST_CASE(demo_runs_the_seeds_tasks_after_the_response),
          TEST_CASE(demo_durable_report_retries_and_survives_a_restart),
          TEST_CASE(demo_exits_zero_on_sigint_with_an_open_connection),
          TEST_CASE(demo_rejects_bad_arguments),
          TEST_CASE(demo_lists_the_periodic_tick_by_name))
