/*
 * process_worker.c - the child side of the PROCESS executor: the loop a
 * worker process runs instead of a server, reading one TASK message at a
 * time from its pipe, running the task and answering DONE.
 *
 * Runs only in a worker process, which is this same program exec'd by the
 * server's process pool (see process_pool.c) with CODA_WORKER_FD in its
 * environment: main() registers its tasks and reaches coda_app_worker() or
 * coda_app_run(), which land here and never return. A task is found by its
 * registered name; its arguments arrive as bytes (args.c) and are copied
 * into memory the task owns for as long as it runs.
 *
 * The loop is single-threaded blocking I/O on one descriptor; the only
 * other writer is coda_task_progress() (coda__worker_progress), possibly
 * from a thread the task started, which sends each PROGRESS message in one
 * write below PIPE_BUF so that it never interleaves with a DONE.
 *
 * It must never outlive the server (PR_SET_PDEATHSIG, and a closed pipe
 * ends it), never die of a signal meant for the server's process group,
 * and never answer for a task other than the one it was sent: a chained
 * task whose predecessor failed in a list that stops on failure is
 * answered as skipped, not run.
 */
#include "tasks/process.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#define PROGRESS_EVERY_MS 10
/* Workers crunch below the server: nice 19 and SCHED_BATCH (no wake-up
 * preemption of the loop threads), so a saturated pool barely delays a
 * response. They still get the CPU the server leaves idle, so they never
 * starve the way SCHED_IDLE could under sustained load. */
#define WORKER_NICE 19

static int worker_fd = -1; /* in a worker process: the pipe to the server */
static uint64_t progress_sent_ns;
/* The task whose lease the server said is lost (CODA__LEASE_SIGNAL): the
 * low 31 bits of its id, + 1 (0: none). Written by the signal handler. */
static volatile sig_atomic_t lease_lost_tag;

int coda__in_worker(void) { return worker_fd >= 0; }

static void on_lease_signal(int signo, siginfo_t *info, void *context) {
  (void)signo, (void)context;
  if (info->si_code == SI_QUEUE)
    lease_lost_tag = (sig_atomic_t)((info->si_value.sival_int & 0x7fffffff) + 1);
}

int coda__worker_lease_lost(const coda_task *t) {
  sig_atomic_t tag = lease_lost_tag;
  return tag != 0 && tag == (sig_atomic_t)((t->id & 0x7fffffff) + 1);
}

int coda__worker_progress(coda_task *t, double fraction) {
  t->progress = fraction;
  uint64_t now = uv_hrtime();
  if (fraction < 1 && now - progress_sent_ns < PROGRESS_EVERY_MS * 1000000ull)
    return 0; /* DONE carries the latest value */
  progress_sent_ns = now;
  char m[CODA__MSG_PROGRESS_SIZE];
  coda__wire_put_progress(m, t->id, fraction);
  return write(worker_fd, m, sizeof m) == (ssize_t)sizeof m ? 0 : CODA_EIO;
}

static int read_full(int fd, void *p, size_t n) {
  char *c = p;
  while (n > 0) {
    ssize_t r = read(fd, c, n);
    if (r == 0)
      return -1;
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    c += r;
    n -= (size_t)r;
  }
  return 0;
}

static int write_full(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Rebuilds in t the task a TASK message describes, with NUL-terminated
 * copies of its strings and bytes in *copies (to be freed). -1 for an
 * unknown name or arguments that do not decode. */
static int rebuild_task(coda__engine *e, const coda__task_msg *m, coda_task *t,
                        coda__arg *args, char **copies) {
  char name[256];
  int nargs;
  size_t bytes;
  memset(t, 0, sizeof *t);
  t->id = m->id;
  t->attempt = m->attempt;
  t->durable = m->durable;
  t->delivered = m->delivered;
  t->request_id = m->request_id;
  /* In the payload: this copy of a task is never freed by task_free(). */
  t->trace = (char *)m->trace;
  t->executor = CODA_EXEC_PROCESS;
  if (m->name_len >= sizeof name)
    return -1;
  memcpy(name, m->name, m->name_len);
  name[m->name_len] = '\0';
  t->def = coda__engine_find(e, name);
  if (!t->def || coda__args_measure(m->args, m->args_len, &nargs, &bytes) != 0)
    return -1;
  if (!(*copies = malloc(bytes ? bytes : 1)))
    _exit(1); /* seen by the server as a crash, like any failed allocation here */
  t->args = args;
  t->nargs =
      coda__args_decode(m->args, m->args_len, args, CODA__ARGS_MAX, *copies, bytes);
  return 0;
}

/* The worker's last outcomes, enough to find a chained task's predecessor:
 * it was sent just before it, so it is among the last CODA__CHAIN_DEPTH. */
typedef struct outcomes {
  uint64_t id[CODA__CHAIN_DEPTH * 2];
  uint8_t failed[CODA__CHAIN_DEPTH * 2];
  unsigned at;
} outcomes;

static int failed_recently(const outcomes *o, uint64_t id) {
  for (size_t i = 0; i < sizeof o->id / sizeof o->id[0]; i++)
    if (o->id[i] == id)
      return o->failed[i];
  return 0;
}

static void remember(outcomes *o, uint64_t id, int failed) {
  unsigned i = o->at++ % (sizeof o->id / sizeof o->id[0]);
  o->id[i] = id;
  o->failed[i] = (uint8_t)failed;
}

static void on_stop_signal(int signo) { (void)signo; }

/* The server decides when workers stop (it closes the pipe, or kills one
 * past its timeout). A Ctrl-C in a terminal, `systemctl stop` or `timeout`
 * signal the whole process group or cgroup: the server drains its tasks
 * then, and its workers must be alive to finish them. A handler that does
 * nothing, not SIG_IGN: handlers reset at exec, so a program a task starts
 * can still be stopped by SIGTERM or Ctrl-C. */
static void keep_stop_signals_for_the_server(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* A worker starts with every signal unblocked and at its default action:
 * uv_spawn blocks them in the parent across fork, but its child resets
 * every handler to SIG_DFL and empties its signal mask just before exec
 * (libuv unix/process.c), so nothing the server blocks or ignores survives
 * into the worker. From exec to coda_app_worker(), the program's own main()
 * runs (its start-up code, its task registrations), and a stop signal for
 * the group then would kill the worker; its replacement could die the same
 * way. So the handlers go in before main(), when the library is loaded
 * into a worker; only exec and the dynamic loader's work remain before
 * them. In any other process this does nothing. */
__attribute__((constructor)) static void keep_stop_signals_from_the_start(void) {
  if (getenv("CODA_WORKER_FD"))
    keep_stop_signals_for_the_server();
}

/* Before the first task: tie the worker's life to the server's, keep its
 * signals for the server to decide, and let it yield to the server. */
static void prepare_process(void) {
  /* Killed with the server's control thread, even in the middle of a long
   * task; a server that died before this line closed the pipe, and the
   * first read ends the worker. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  /* Again: main() may have changed them since the constructor. */
  keep_stop_signals_for_the_server();
  signal(SIGPIPE, SIG_IGN);
  /* The server tells a running durable task that its lease is lost. */
  struct sigaction lost;
  memset(&lost, 0, sizeof lost);
  lost.sa_sigaction = on_lease_signal;
  lost.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&lost.sa_mask);
  sigaction(CODA__LEASE_SIGNAL, &lost, NULL);
  /* Exec'd as /proc/self/fd/N, the worker would be named "N" in ps and
   * pgrep: it takes its program's name back. */
  prctl(PR_SET_NAME, program_invocation_short_name);
}

/* Runs the task of one TASK payload (or skips or refuses it) and fills the
 * DONE answer; the message and result it points to live until `t` is
 * cleaned up. */
static void run_one(coda__engine *e, const char *payload, size_t len, outcomes *recent,
                    coda_task *t, coda__arg *args, char **copies, coda__done_msg *done) {
  coda__task_msg m;
  memset(t, 0, sizeof *t);
  int bad = coda__wire_get_task(payload, len, &m) != 0 ||
            rebuild_task(e, &m, t, args, copies) != 0;
  const char *why = NULL;
  memset(done, 0, sizeof *done);
  done->id = m.id;
  if (bad) {
    done->rc = CODA_ENOTFOUND;
    why = "unknown task name or bad message (is it registered before coda_app_run?)";
  } else if (m.skip && failed_recently(recent, m.after)) {
    done->skipped = 1; /* a skipped task counts as failed for the next */
  } else {
    coda__log_fields f;
    coda__task_log_fields(t, &f);
    const coda__log_fields *outer = coda__log_scope(&f);
    int rc = t->def->fn(t);
    coda__log_scope(outer);
    done->rc = rc > 0 ? 0 : rc;
    why = t->error;
  }
  remember(recent, m.id, done->rc < 0 || done->skipped);
  done->message = why;
  done->message_len = why ? (uint32_t)strlen(why) : 0;
  done->has_result = !bad && t->result;
  done->result = done->has_result ? t->result : NULL;
  done->result_len = done->has_result ? (uint32_t)t->result_len : 0;
  done->progress = bad ? 0 : t->progress;
}

void coda__process_worker_main(coda__engine *e, int fd) {
  coda__arg args[CODA__ARGS_MAX];
  coda__buf out = {0};
  outcomes recent;
  worker_fd = fd;
  prepare_process();
  char ready[CODA__MSG_HEADER];
  coda__wire_put_ready(ready);
  if (write_full(fd, ready, sizeof ready) != 0)
    _exit(1);
  memset(&recent, 0, sizeof recent);
  struct sched_param sp = {0};
  sched_setscheduler(0, SCHED_BATCH, &sp); /* best effort: nice alone otherwise */
  setpriority(PRIO_PROCESS, 0, WORKER_NICE);
  for (;;) {
    char hdr[CODA__MSG_HEADER];
    uint32_t len, kind;
    if (read_full(fd, hdr, sizeof hdr) != 0)
      _exit(0);
    coda__wire_header(hdr, &len, &kind);
    if (len > CODA__MSG_MAX)
      _exit(0);
    char *msg = malloc((size_t)len + 1);
    if (!msg || read_full(fd, msg, len) != 0)
      _exit(1);
    coda_task t;
    char *copies = NULL;
    coda__done_msg done;
    /* The parent sends nothing but TASK messages. */
    run_one(e, msg, kind == CODA__MSG_TASK ? len : 0, &recent, &t, args, &copies, &done);
    out.len = 0;
    if (coda__wire_put_done(&out, &done) != 0 || write_full(fd, out.base, out.len) != 0)
      _exit(1);
    free(t.error);
    free(t.result);
    free(copies);
    free(msg);
  }
}

int coda_app_worker(coda_app *app) {
  const char *fd = getenv("CODA_WORKER_FD");
  if (!fd)
    return 0;
  int n = atoi(fd);
  unsetenv("CODA_WORKER_FD");
  const char *log = getenv("CODA_WORKER_LOG");
  if (log && strcmp(log, "json") == 0)
    coda_app_set(app, CODA_OPT_LOG_FORMAT, CODA__LOG_JSON);
  unsetenv("CODA_WORKER_LOG");
  coda__process_worker_main(coda__engine_of(app), n);
  return 0; /* not reached */
}
