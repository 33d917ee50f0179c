/*
 * demo_test.c - the demo program as a user runs it: a separate process on
 * an ephemeral port, its access log on stderr, and SIGTERM/SIGINT ending it
 * with exit status 0.
 */
#include "harness.h"
#include "test.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
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

static int demo_start(demo *d) {
  memset(d, 0, sizeof *d);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  char *argv[] = {CODA_DEMO_PATH, "--listen", "127.0.0.1:0", "--threads", "2", NULL};
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

/* Sends a signal and waits for the exit; returns the exit status, or -1 if
 * it did not exit normally within ms. */
static int demo_stop(demo *d, int sig, int ms) {
  kill(d->pid, sig);
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  int status;
  while (tc_now_ms() < end) {
    pid_t r = waitpid(d->pid, &status, WNOHANG);
    if (r == d->pid) {
      read_log(d, 50, NULL);
      close(d->err_fd);
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    tc_sleep_ms(10);
  }
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

TEST(demo_exits_zero_on_sigint_with_an_open_connection) {
  demo d;
  REQUIRE(demo_start(&d) == 0);
  int fd = tc_connect(d.port, 3000);
  char buf[4096];
  tc_send_str(fd, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(tc_read_response(fd, buf, sizeof buf) > 0);
  uint64_t t0 = tc_now_ms();
  CHECK_EQ_INT(demo_stop(&d, SIGINT, 5000), 0); /* idle keep-alive is closed */
  CHECK(tc_now_ms() - t0 < 1000);
  int closed;
  tc_read_all(fd, buf, sizeof buf, &closed);
  CHECK(closed);
  close(fd);
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
          TEST_CASE(demo_exits_zero_on_sigint_with_an_open_connection),
          TEST_CASE(demo_rejects_bad_arguments))
