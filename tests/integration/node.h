/*
 * node.h - a coda program a test starts as a process of its own (a server
 * or a worker of a fleet, crash_server), reads the port it bound from its
 * stdout, and ends with a signal of its choice (SIGKILL for the crash
 * tests).
 */
#ifndef CODA_TEST_NODE_H
#define CODA_TEST_NODE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tc_node {
  pid_t pid;
  int out_fd; /* read end of its stdout */
  int port;   /* what it printed as "port N"; 0: a worker, no listener */
} tc_node;

/* Spawns argv[0] with argv, the test's environment plus `env` (NAME=VALUE
 * strings, NULL-terminated, may be NULL), its stdout on a pipe, its stderr
 * appended to log_path, and fd 3 a copy of fd3 when fd3 >= 0. Waits up to
 * timeout_ms for a "port N" line, then, for N > 0, until the port accepts.
 * Returns 0, or -1 (n->pid is then the child's pid if it was spawned, so
 * the caller can end it). */
int tc_node_start(tc_node *n, char *const argv[], char *const env[], const char *log_path,
                  int fd3, int timeout_ms);

/* The same for a program that says it is up in its log (stderr, appended
 * to log_path, which should be its own): waits until the log holds
 * `marker`; if the marker is followed by a number, that is n->port (the
 * demo's "listening on http://127.0.0.1:"), else the port is 0. */
int tc_node_start_logged(tc_node *n, char *const argv[], const char *log_path,
                         const char *marker, int timeout_ms);

/* Sends sig and waits up to ms for the exit. Returns the wait status, or
 * -1 if it had to be killed with SIGKILL. Closes its stdout pipe. */
int tc_node_end(tc_node *n, int sig, int ms);

/* Reaps n if it has exited by itself: 1 (with *status), or 0 if it runs. */
int tc_node_exited(tc_node *n, int *status);

/* POST /jobs?n=JOB to crash_server on the keep-alive connection fd; the
 * response goes to buf. Returns its status, with *id the task id of a 202
 * (0 otherwise), or -1 when the send or the read failed (not
 * acknowledged, whatever the server did with it). */
int tc_post_job(int fd, uint64_t job, uint64_t *id, char *buf, size_t cap);

/* GET /tasks/{id} of crash_server on the connection fd: state gets its
 * X-State ("succeeded", ...), "not-found", "status-N", or "" when the
 * connection failed; *attempts its X-Attempts. */
void tc_task_state(int fd, uint64_t id, char *state, size_t cap, int *attempts);

/* One finished run of a crash_server job, as its journal has it: lines
 * "ID JOB PID ATTEMPT T" (T: CLOCK_MONOTONIC in us), one per run. */
typedef struct {
  uint64_t id;
  uint64_t job;
  int pid;
  int attempt;
  uint64_t t_us;    /* when it wrote the line */
  uint64_t done_us; /* when it returned success, if the caller knows, or 0 */
  size_t line;      /* journal order */
} run_line;

/* Reads a journal: the runs sorted by job, then journal order (malloc'd;
 * NULL if it cannot be read or holds no run). Counts lines that do not
 * parse in *malformed and shows the first few on stderr. */
run_line *tc_journal_read(const char *path, size_t *nruns, long *malformed);

#endif /* CODA_TEST_NODE_H */
