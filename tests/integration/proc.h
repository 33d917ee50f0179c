/*
 * proc.h - child processes for the tests that run the real programs
 * (coda-demo, coda-admin): stdout and stderr go to files in a temp
 * directory, so a child never blocks on a pipe nobody reads, and a test
 * waits for what it expects in them with a deadline.
 */
#ifndef CODA_TESTS_PROC_H
#define CODA_TESTS_PROC_H

#include <sys/types.h>

typedef struct tproc {
  pid_t pid;
  char out[96], err[96]; /* the files of its stdout and stderr */
} tproc;

/* Starts argv[0] with `env` (NULL: this environment), stdin from
 * /dev/null. Returns 0 or -1. */
int tp_spawn(tproc *p, char *const argv[], char *const env[]);
/* Waits up to ms for the exit: its status (0-255), or -1 (killed by a
 * signal, or still running at the deadline: then killed). */
int tp_wait(tproc *p, int ms);
/* Sends sig and waits as tp_wait does. */
int tp_stop(tproc *p, int sig, int ms);
/* The whole file, malloc'd and NUL-terminated ("" when missing). */
char *tp_read(const char *path);
/* Waits up to ms for `needle` in the file; returns its contents then
 * (malloc'd) or NULL at the deadline. */
char *tp_wait_for(const char *path, const char *needle, int ms);
/* Removes its files. */
void tp_cleanup(tproc *p);

#endif
