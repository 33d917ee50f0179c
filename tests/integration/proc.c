/* proc.c - see proc.h. */
#include "proc.h"

#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int tp_spawn(tproc *p, char *const argv[], char *const env[]) {
  static int seq;
  memset(p, 0, sizeof *p);
  snprintf(p->out, sizeof p->out, "/tmp/coda-proc-%d-%d.out", (int)getpid(), seq);
  snprintf(p->err, sizeof p->err, "/tmp/coda-proc-%d-%d.err", (int)getpid(), seq++);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, p->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, p->err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  int rc = posix_spawn(&p->pid, argv[0], &fa, NULL, argv, env ? env : environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? 0 : -1;
}

int tp_wait(tproc *p, int ms) {
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  int status;
  for (;;) {
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0 || tc_now_ms() >= end)
      break;
    tc_sleep_ms(5); /* polling a child's exit: no event to wait on here */
  }
  fprintf(stderr, "  %d still running after %d ms: killed\n", (int)p->pid, ms);
  kill(p->pid, SIGKILL);
  waitpid(p->pid, &status, 0);
  return -1;
}

int tp_stop(tproc *p, int sig, int ms) {
  kill(p->pid, sig);
  return tp_wait(p, ms);
}

char *tp_read(const char *path) {
  FILE *f = fopen(path, "rb");
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  if (!buf)
    abort();
  while (f) {
    if (cap - n < 2048 && !(buf = realloc(buf, cap *= 2)))
      abort();
    size_t r = fread(buf + n, 1, cap - n - 1, f);
    if (r == 0)
      break;
    n += r;
  }
  if (f)
    fclose(f);
  buf[n] = '\0';
  return buf;
}

char *tp_wait_for(const char *path, const char *needle, int ms) {
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  for (;;) {
    char *s = tp_read(path);
    if (strstr(s, needle))
      return s;
    free(s);
    if (tc_now_ms() >= end)
      return NULL;
    tc_sleep_ms(10); /* a file has no readiness to wait on */
  }
}

void tp_cleanup(tproc *p) {
  unlink(p->out);
  unlink(p->err);
}
