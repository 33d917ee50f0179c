/*
 * worker_test.c - coda-demo --worker: a process with no HTTP listener that
 * runs the durable tasks another process added, until SIGTERM.
 *
 * On SQLite (one process per file) the two processes share the file one
 * after the other: a server that serves no queue the report task is in
 * (--queues elsewhere) takes POST /reports and writes the task unclaimed;
 * it stops; a worker on the same file claims and runs it (three attempts:
 * the report fails twice by design) and ends with status 0 on SIGTERM. The
 * task's state is read from the file while the worker holds it (WAL lets
 * a reader in).
 *
 * On Redis (a redis-server main() starts on an ephemeral port, tests/
 * redis_server.h) the fleet version: a server and a worker run at the same
 * time on one store; the task the server adds (in no queue it serves) runs
 * on the worker, and the server's GET /tasks/{id} shows the state the
 * worker wrote.
 */
#include "harness.h"
#include "redis_server.h"
#include "test.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct {
  pid_t pid;
  int err_fd;
  int port;
  char log[65536];
  size_t log_len;
} proc;

static char store_dir[] = "/tmp/coda-worker-test-XXXXXX";
static tc_redis redis;
static int redis_up;

static void read_log(proc *p, int ms, const char *until) {
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  while (tc_now_ms() < end) {
    if (until && strstr(p->log, until))
      return;
    if (p->log_len > sizeof p->log / 2) { /* keep the newest quarter */
      size_t drop = p->log_len - sizeof p->log / 4;
      memmove(p->log, p->log + drop, p->log_len - drop + 1);
      p->log_len -= drop;
    }
    struct pollfd pf = {p->err_fd, POLLIN, 0};
    if (poll(&pf, 1, 20) <= 0)
      continue;
    ssize_t r = read(p->err_fd, p->log + p->log_len, sizeof p->log - p->log_len - 1);
    if (r <= 0)
      return;
    p->log_len += (size_t)r;
    p->log[p->log_len] = '\0';
  }
}

/* Starts coda-demo with argv (NULL-terminated, without the program) and
 * waits for `ready` in its log. */
static int start(proc *p, char **args, const char *ready) {
  memset(p, 0, sizeof *p);
  char *argv[16] = {CODA_DEMO_PATH};
  for (int i = 0; args[i] && i < 14; i++)
    argv[i + 1] = args[i];
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  int rc = posix_spawn(&p->pid, CODA_DEMO_PATH, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  p->err_fd = fds[0];
  if (rc != 0)
    return -1;
  read_log(p, 10000, ready);
  const char *at = strstr(p->log, ready);
  if (!at) {
    fprintf(stderr, "  coda-demo did not say \"%s\"; its log:\n%s\n", ready, p->log);
    return -1;
  }
  const char *port = strstr(p->log, "listening on http://127.0.0.1:");
  if (port)
    p->port = atoi(port + strlen("listening on http://127.0.0.1:"));
  return 0;
}

/* SIGTERM and the exit status (-1 if it did not exit normally in ms). */
static int stop(proc *p, int ms) {
  kill(p->pid, SIGTERM);
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  int status;
  while (tc_now_ms() < end) {
    if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
      read_log(p, 50, NULL);
      close(p->err_fd);
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    read_log(p, 10, NULL);
  }
  fprintf(stderr, "  still running after SIGTERM; its log:\n%s\n", p->log);
  kill(p->pid, SIGKILL);
  waitpid(p->pid, &status, 0);
  close(p->err_fd);
  return -1;
}

/* POST /reports; the new task's id, or 0. */
static unsigned long long post_report(int port) {
  char buf[4096];
  int fd = tc_connect(port, 5000);
  if (fd < 0)
    return 0;
  tc_send_str(fd, "POST /reports HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n"
                  "{\"name\":\"fleet\"}\n");
  size_t n = tc_read_response(fd, buf, sizeof buf);
  close(fd);
  const char *loc = n ? strstr(buf, "\r\nLocation: /tasks/") : NULL;
  if (tc_status(buf) != 202 || !loc) {
    fprintf(stderr, "  POST /reports: %s\n", buf);
    return 0;
  }
  return strtoull(loc + strlen("\r\nLocation: /tasks/"), NULL, 10);
}

/* The task's state in the SQLite file (-1: cannot read). */
static int file_state(const char *path, unsigned long long id) {
  sqlite3 *db;
  int state = -1;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
    sqlite3_stmt *st;
    sqlite3_busy_timeout(db, 1000);
    if (sqlite3_prepare_v2(db, "SELECT state FROM coda_tasks WHERE id=?1", -1, &st,
                           NULL) == SQLITE_OK) {
      sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
      if (sqlite3_step(st) == SQLITE_ROW)
        state = sqlite3_column_int(st, 0);
      sqlite3_finalize(st);
    }
  }
  sqlite3_close(db);
  return state;
}

TEST(a_worker_runs_a_task_a_server_added_to_a_queue_it_does_not_serve) {
  char path[256], uri[300];
  snprintf(path, sizeof path, "%s/fleet.db", store_dir);
  snprintf(uri, sizeof uri, "sqlite:%s", path);
  proc server, worker;
  char *server_args[] = {"--listen", "127.0.0.1:0", "--threads", "1",       "--store",
                         uri,        "--queues",    "elsewhere", "--quiet", NULL};
  REQUIRE(start(&server, server_args, "listening on http://127.0.0.1:") == 0);
  unsigned long long id = post_report(server.port);
  CHECK(id != 0);
  CHECK_EQ_INT(stop(&server, 15000), 0);
  CHECK(!strstr(server.log, "[Report]")); /* never ran there */
  CHECK_EQ_INT(file_state(path, id), 0);  /* queued, unclaimed */
  char *worker_args[] = {"--worker", "--store", uri, "--threads", "1", NULL};
  REQUIRE(start(&worker, worker_args, "coda-demo: worker on") == 0);
  int state = -1;
  uint64_t end = tc_now_ms() + 30000;
  while (tc_now_ms() < end && (state = file_state(path, id)) != 2)
    read_log(&worker, 50, NULL);
  CHECK_EQ_INT(state, 2); /* succeeded */
  CHECK_EQ_INT(stop(&worker, 15000), 0);
  CHECK(!strstr(worker.log, "listening on"));
  CHECK_EQ_INT(tc_count(worker.log, "[Report] fleet: attempt"), 3);
}

TEST(a_worker_and_a_server_run_at_once_on_one_redis) {
  REQUIRE(redis_up);
  char uri[256];
  tc_redis_uri(&redis, uri, sizeof uri, "/0?prefix=worker-fleet");
  proc server, worker;
  char *server_args[] = {"--listen",  "127.0.0.1:0", "--threads", "1",       "--store",
                         (char *)uri, "--queues",    "elsewhere", "--quiet", NULL};
  char *worker_args[] = {"--worker", "--store", (char *)uri, "--threads", "1", NULL};
  REQUIRE(start(&server, server_args, "listening on http://127.0.0.1:") == 0);
  if (start(&worker, worker_args, "coda-demo: worker on") != 0) {
    stop(&server, 15000);
    REQUIRE(0);
  }
  unsigned long long id = post_report(server.port);
  CHECK(id != 0);
  char path[64], buf[8192];
  snprintf(path, sizeof path, "/tasks/%llu", id);
  int done = 0;
  uint64_t end = tc_now_ms() + 30000;
  while (id && !done && tc_now_ms() < end) {
    done = tc_get(server.port, path, buf, sizeof buf, 5000) == 200 &&
           strstr(buf, "\"succeeded\"") != NULL;
    read_log(&worker, 50, NULL);
  }
  CHECK(done);
  /* The worker's outcome, read on the server: three attempts, a result. */
  CHECK(strstr(buf, "\"attempts\":3") != NULL);
  CHECK_EQ_INT(stop(&worker, 15000), 0);
  CHECK_EQ_INT(stop(&server, 15000), 0);
  CHECK(!strstr(server.log, "[Report]"));
  CHECK_EQ_INT(tc_count(worker.log, "[Report] fleet: attempt"), 3);
}

int main(void) {
  if (!mkdtemp(store_dir)) {
    perror("mkdtemp");
    return 1;
  }
  redis_up = tc_redis_start(&redis, NULL) == 0;
  static const test__case cases[] = {
      TEST_CASE(a_worker_runs_a_task_a_server_added_to_a_queue_it_does_not_serve),
      TEST_CASE(a_worker_and_a_server_run_at_once_on_one_redis),
  };
  int rc = test__run("worker", cases, sizeof cases / sizeof cases[0]);
  tc_remove_tree(store_dir);
  tc_redis_remove(&redis);
  return rc;
}
