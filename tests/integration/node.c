/*
 * node.c - test programs as processes (node.h).
 */
#include "node.h"

#include "harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* environ plus extra, in a malloc'd array (the strings are borrowed). */
static char **merged_env(char *const extra[]) {
  size_t a = 0, b = 0;
  while (environ[a])
    a++;
  while (extra && extra[b])
    b++;
  char **env = calloc(a + b + 1, sizeof *env);
  if (!env)
    return NULL;
  for (size_t i = 0; i < b; i++)
    env[i] = extra[i];
  for (size_t i = 0; i < a; i++)
    env[b + i] = environ[i]; /* the first of a name wins: extra overrides */
  return env;
}

static int spawn(tc_node *n, char *const argv[], char *const env[], const char *log_path,
                 int fd3) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0)
    return -1;
  int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  char **envp = merged_env(env);
  int rc = -1;
  if (logfd >= 0 && envp) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, logfd, 2);
    if (fd3 >= 0)
      posix_spawn_file_actions_adddup2(&fa, fd3, 3);
    rc = posix_spawn(&n->pid, argv[0], &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
  }
  free(envp);
  if (logfd >= 0)
    close(logfd);
  close(out[1]);
  if (rc != 0) {
    close(out[0]);
    n->pid = 0;
    return -1;
  }
  n->out_fd = out[0];
  return 0;
}

/* Reads "port N\n" from its stdout until the deadline. */
static int read_port(tc_node *n, uint64_t end) {
  char line[64];
  size_t len = 0;
  while (len + 1 < sizeof line && !memchr(line, '\n', len) && tc_now_ms() < end) {
    struct pollfd p = {n->out_fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0)
      continue;
    ssize_t r = read(n->out_fd, line + len, sizeof line - 1 - len);
    if (r <= 0)
      return -1; /* it exited before binding */
    len += (size_t)r;
  }
  line[len] = '\0';
  return sscanf(line, "port %d", &n->port) == 1 && n->port >= 0 ? 0 : -1;
}

int tc_node_start(tc_node *n, char *const argv[], char *const env[], const char *log_path,
                  int fd3, int timeout_ms) {
  memset(n, 0, sizeof *n);
  n->out_fd = -1;
  if (spawn(n, argv, env, log_path, fd3) != 0)
    return -1;
  uint64_t end = tc_now_ms() + (uint64_t)timeout_ms;
  if (read_port(n, end) != 0)
    return -1;
  if (n->port == 0)
    return 0;
  /* Bound is not yet accepting for every loop: wait until it accepts. */
  while (tc_now_ms() < end) {
    int fd = tc_connect(n->port, 1000);
    if (fd >= 0) {
      close(fd);
      return 0;
    }
    tc_sleep_ms(2);
  }
  return -1;
}

int tc_node_start_logged(tc_node *n, char *const argv[], const char *log_path,
                         const char *marker, int timeout_ms) {
  memset(n, 0, sizeof *n);
  n->out_fd = -1;
  if (spawn(n, argv, NULL, log_path, -1) != 0)
    return -1;
  uint64_t end = tc_now_ms() + (uint64_t)timeout_ms;
  static char log[1 << 16];
  while (tc_now_ms() < end) {
    tc_read_file(log_path, log, sizeof log);
    const char *m = strstr(log, marker);
    if (m) {
      n->port = atoi(m + strlen(marker));
      return 0;
    }
    int status;
    if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
      n->pid = 0;
      return -1; /* it exited before it was up */
    }
    tc_sleep_ms(10);
  }
  return -1;
}

int tc_node_exited(tc_node *n, int *status) {
  if (n->pid <= 0 || waitpid(n->pid, status, WNOHANG) != n->pid)
    return 0;
  n->pid = 0;
  if (n->out_fd >= 0)
    close(n->out_fd);
  n->out_fd = -1;
  return 1;
}

int tc_node_end(tc_node *n, int sig, int ms) {
  int status = 0;
  if (n->pid > 0) {
    kill(n->pid, sig);
    uint64_t end = tc_now_ms() + (uint64_t)ms;
    pid_t r;
    while ((r = waitpid(n->pid, &status, WNOHANG)) == 0 && tc_now_ms() < end)
      tc_sleep_ms(5);
    if (r != n->pid) {
      kill(n->pid, SIGKILL);
      waitpid(n->pid, &status, 0);
      status = -1;
    }
  }
  if (n->out_fd >= 0)
    close(n->out_fd);
  n->out_fd = -1;
  return status;
}

/* ---- crash_server's answers ----------------------------------------------- */

/* GET /tasks/{id} on fd: fills state ("" on a transport failure). */
int tc_post_job(int fd, uint64_t job, uint64_t *id, char *buf, size_t cap) {
  char req[128];
  int n = snprintf(req, sizeof req,
                   "POST /jobs?n=%llu HTTP/1.1\r\nHost: node\r\nContent-Length: 0\r\n\r\n",
                   (unsigned long long)job);
  *id = 0;
  if (tc_send(fd, req, (size_t)n) != 0 || tc_read_response(fd, buf, cap) == 0)
    return -1;
  int status = tc_status(buf);
  const char *body = tc_body(buf);
  const char *p = body ? strstr(body, "\"id\":") : NULL;
  if (status == 202 && p)
    *id = strtoull(p + 5, NULL, 10);
  return status;
}

void tc_task_state(int fd, uint64_t id, char *state, size_t cap, int *attempts) {
  char req[96], buf[8192];
  state[0] = '\0';
  int n = snprintf(req, sizeof req, "GET /tasks/%llu HTTP/1.1\r\nHost: crash\r\n\r\n",
                   (unsigned long long)id);
  if (tc_send(fd, req, (size_t)n) != 0 || tc_read_response(fd, buf, sizeof buf) == 0)
    return;
  if (tc_status(buf) == 404) {
    snprintf(state, cap, "not-found");
    return;
  }
  const char *h = strcasestr(buf, "\r\nX-State: ");
  if (!h) {
    snprintf(state, cap, "status-%d", tc_status(buf));
    return;
  }
  h += strlen("\r\nX-State: ");
  size_t len = strcspn(h, "\r");
  snprintf(state, cap, "%.*s", (int)(len < cap ? len : cap - 1), h);
  const char *a = strcasestr(buf, "\r\nX-Attempts: ");
  *attempts = a ? atoi(a + strlen("\r\nX-Attempts: ")) : -1;
}

/* ---- the journal ---------------------------------------------------------- */

static int by_job_then_line(const void *a, const void *b) {
  const run_line *x = a, *y = b;
  if (x->job != y->job)
    return x->job < y->job ? -1 : 1;
  return x->line < y->line ? -1 : x->line > y->line;
}

run_line *tc_journal_read(const char *path, size_t *nruns, long *malformed) {
  *nruns = 0;
  *malformed = 0;
  FILE *f = fopen(path, "r");
  if (!f)
    return NULL;
  run_line *runs = NULL;
  size_t cap = 0, lineno = 0;
  char line[256];
  int ok = 1;
  while (ok && fgets(line, sizeof line, f)) {
    unsigned long long id, job, t_us;
    int pid, attempt;
    char extra;
    lineno++;
    if (strchr(line, '\n') && sscanf(line, "%llu %llu %d %d %llu %c", &id, &job, &pid,
                                     &attempt, &t_us, &extra) == 5) {
      if (*nruns == cap) {
        size_t want = cap ? cap * 2 : 4096;
        run_line *more = realloc(runs, want * sizeof *runs);
        ok = more != NULL;
        if (ok) {
          runs = more;
          cap = want;
        }
      }
      if (ok)
        runs[(*nruns)++] = (run_line){id, job, pid, attempt, t_us, 0, lineno};
    } else if ((*malformed)++ < 5) {
      fprintf(stderr, "  journal line %zu malformed: %s\n", lineno, line);
    }
  }
  fclose(f);
  if (!ok || !runs) {
    free(runs);
    return NULL;
  }
  qsort(runs, *nruns, sizeof *runs, by_job_then_line);
  return runs;
}
