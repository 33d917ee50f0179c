/*
 * process_pool.c - the PROCESS executor: worker processes started with the
 * server, each running one task at a time, for CPU work with true
 * parallelism and crash isolation.
 *
 * No fork after threads exist, except to exec: a worker is this same
 * program, started again through uv_spawn (fork immediately followed by
 * exec) with CODA_WORKER_FD in its environment. Its main() registers the
 * same tasks and reaches coda_app_worker() or coda_app_run(), which see the
 * variable and serve tasks instead of HTTP. So a task is found by its
 * registered name, and its arguments cross the process boundary as bytes.
 *
 * Threads: the pool lives on the control loop (the thread that called
 * coda_app_run). Other threads submit through `inbox` (under `mu`) and one
 * coalescing async. Everything else is touched by the control loop only.
 *
 * Ordered lists: the tasks of a list run one after another, so a PROCESS
 * task that follows a PROCESS task is not sent after a round trip through
 * the parent (tens of microseconds of wake-ups) but right behind the one
 * before it, to the same worker (a chain; see chain_ahead). The worker runs
 * them in order; in a list that stops on failure it skips a chained task
 * whose predecessor failed, and the parent drops it when the answer comes.
 *
 * Wire format, both ways: u32 payload length, u32 kind, payload.
 *   TASK (parent to worker): u64 id, i32 attempt, u8 durable, u8 skip, u64
 *     after, u16 name length, name, then the arguments as args.c encodes
 *     them for the stores, to the end of the payload. With skip set, the
 *     task does not run if the task `after` failed or was skipped.
 *   DONE (worker to parent): u64 id, i32 rc, u32 message length, message,
 *     u8 has result, u32 result length, result, f64 progress.
 *   PROGRESS (worker to parent, while the task runs): u64 id, f64 progress.
 *   READY (worker to parent, once, before any task): no payload.
 *
 * Durable PROCESS tasks report progress and results like the others:
 * coda_task_progress() in a worker sends PROGRESS (at most one per
 * PROGRESS_EVERY_MS; DONE carries the last value), and the result set by
 * coda_task_set_result() travels with DONE.
 */
#include "common/buf.h"
#include "tasks/task.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MSG_TASK 1
#define MSG_DONE 2
#define MSG_PROGRESS 3
#define MSG_READY 4
#define PROGRESS_EVERY_MS 10
/* Workers crunch below the server: nice 19 and SCHED_BATCH (no wake-up
 * preemption of the loop threads), so a saturated pool barely delays a
 * response. They still get the CPU the server leaves idle, so they never
 * starve the way SCHED_IDLE could under sustained load. */
#define WORKER_NICE 19
#define MAX_MESSAGE (64u << 20)
/* Tasks sent ahead to one worker, so it finds its next task waiting instead
 * of sleeping through a round trip. Small, because a task queued behind a
 * long one on the same worker waits for it. */
#define PIPELINE_DEPTH 4
/* A chain (the tasks of one ordered list) may go deeper: its tasks wait for
 * each other anyway, and the deeper it is, the less often the worker waits
 * for the server to send the next one. */
#define CHAIN_DEPTH 16
/* A worker gets tasks only once it says READY (it reached the task loop).
 * One that ends before that did not really start (a broken binary, a
 * crash in start-up code, a missing library): no task is lost with it, and
 * its replacement waits, from RESPAWN_MIN_MS doubling up to RESPAWN_MAX_MS,
 * so that a worker that can never start costs a log line per few seconds,
 * not a core. */
#define RESPAWN_MIN_MS 100
#define RESPAWN_MAX_MS 5000

extern char **environ;

typedef struct worker {
  coda__process_pool *pool;
  uv_process_t proc;
  uv_pipe_t pipe;
  uv_timer_t timer;
  uv_timer_t respawn; /* lives with the pool, not with one process */
  int ready;          /* said READY: tasks may be sent */
  int quick_exits;    /* ended before READY, in a row */
  coda__buf in;
  coda_task *inflight[CHAIN_DEPTH]; /* sent, in order; the head runs */
  int head;
  int count;
  int begun; /* the head has begun (or is known to be skipped) */
  int alive;
  int killed_for_timeout;
  int handles_open;
  int index;
} worker;

struct coda__process_pool {
  coda__engine *engine;
  uv_loop_t *loop;
  uv_mutex_t mu;
  coda__queue inbox; /* any thread -> control loop, under mu */
  int accepting;     /* under mu */
  uv_async_t async;
  coda__queue waiting; /* control loop only */
  worker *workers;
  int nworkers;
  int stopping;
  uv_thread_t control; /* the thread of `loop` */
  char **argv;         /* this program's command line, for the workers */
  char **envp;
  int exe_fd;   /* this program's file, opened at start (see exe_path) */
  char exe[32]; /* "/proc/self/fd/N": what workers exec */
};

/* ---- encoding ------------------------------------------------------- */

static void put(coda__buf *b, const void *p, size_t n, int *rc) {
  if (coda__buf_append(b, p, n) != 0)
    *rc = CODA_ENOMEM;
}

/* `after`: for a chained task in a list that stops on failure, the task
 * before it, else NULL. */
static int encode_task(coda__buf *b, const coda_task *t, const coda_task *after) {
  int rc = 0;
  uint32_t hdr[2] = {0, MSG_TASK};
  put(b, hdr, sizeof hdr, &rc);
  uint16_t nlen = (uint16_t)strlen(t->def->name);
  int32_t attempt = t->attempt ? t->attempt : 1;
  uint8_t durable = t->durable, skip = after != NULL;
  uint64_t after_id = after ? after->id : 0;
  put(b, &t->id, 8, &rc);
  put(b, &attempt, 4, &rc);
  put(b, &durable, 1, &rc);
  put(b, &skip, 1, &rc);
  put(b, &after_id, 8, &rc);
  put(b, &nlen, 2, &rc);
  put(b, t->def->name, nlen, &rc);
  if (rc == 0)
    rc = coda__args_encode(t->args, t->nargs, b);
  if (rc == 0) {
    uint32_t len = (uint32_t)(b->len - sizeof hdr);
    memcpy(b->base, &len, 4);
  }
  return rc;
}

typedef struct reader {
  const char *p;
  size_t left;
  int bad;
} reader;

static const void *take(reader *r, size_t n) {
  if (r->bad || r->left < n) {
    r->bad = 1;
    return NULL;
  }
  const void *p = r->p;
  r->p += n;
  r->left -= n;
  return p;
}

#define TAKE(r, var)                                                                     \
  do {                                                                                   \
    const void *p_ = take((r), sizeof(var));                                             \
    if (p_)                                                                              \
      memcpy(&(var), p_, sizeof(var));                                                   \
  } while (0)

/* ---- the worker side -------------------------------------------------- */

static int worker_fd = -1; /* in a worker process: the pipe to the server */
static uint64_t progress_sent_ns;

int coda__in_worker(void) { return worker_fd >= 0; }

int coda__worker_progress(coda_task *t, double fraction) {
  t->progress = fraction;
  uint64_t now = uv_hrtime();
  if (fraction < 1 && now - progress_sent_ns < PROGRESS_EVERY_MS * 1000000ull)
    return 0; /* DONE carries the latest value */
  progress_sent_ns = now;
  char m[8 + 8 + 8];
  uint32_t hdr[2] = {16, MSG_PROGRESS};
  memcpy(m, hdr, 8);
  memcpy(m + 8, &t->id, 8);
  memcpy(m + 16, &fraction, 8);
  /* One write below PIPE_BUF: whole, even from a thread of the task. */
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

/* A TASK message's chain fields. */
typedef struct chain_ref {
  int skip;
  uint64_t after;
} chain_ref;

/* Rebuilds a task from a TASK message; its strings and bytes are copies,
 * NUL-terminated, in *copies (to be freed). *id is the message's task id,
 * set even when the task is not rebuilt (an unknown name), so that the
 * answer still names it. */
static coda_task *decode_task(coda__engine *e, const char *msg, size_t len,
                              coda__arg *args, int max_args, chain_ref *chain,
                              uint64_t *id, char **copies) {
  static coda_task t;
  memset(&t, 0, sizeof t);
  reader r = {msg, len, 0};
  uint16_t nlen = 0;
  int32_t attempt = 1;
  uint8_t durable = 0, skip = 0;
  TAKE(&r, t.id);
  *id = t.id;
  TAKE(&r, attempt);
  TAKE(&r, durable);
  TAKE(&r, skip);
  TAKE(&r, chain->after);
  chain->skip = skip != 0;
  t.attempt = attempt;
  t.durable = durable != 0;
  TAKE(&r, nlen);
  const char *name = take(&r, nlen);
  if (r.bad)
    return NULL;
  char namebuf[256];
  if (nlen >= sizeof namebuf)
    return NULL;
  memcpy(namebuf, name, nlen);
  namebuf[nlen] = '\0';
  t.def = coda__engine_find(e, namebuf);
  if (!t.def)
    return NULL;
  t.executor = CODA_EXEC_PROCESS;
  int nargs;
  size_t bytes;
  if (coda__args_measure(r.p, r.left, &nargs, &bytes) != 0 || nargs > max_args)
    return NULL;
  if (!(*copies = malloc(bytes ? bytes : 1)))
    _exit(1); /* seen by the server as a crash, like any failed allocation here */
  t.args = args;
  t.nargs = coda__args_decode(r.p, r.left, args, max_args, *copies, bytes);
  return &t;
}

/* The worker's last outcomes, enough to find a chained task's predecessor:
 * it was sent just before it, so it is among the last CHAIN_DEPTH. */
typedef struct outcomes {
  uint64_t id[CHAIN_DEPTH * 2];
  uint8_t failed[CHAIN_DEPTH * 2];
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

void coda__process_worker_main(coda__engine *e, int fd) {
  coda__arg args[CODA__ARGS_MAX];
  coda__buf out = {0};
  worker_fd = fd;
  /* Killed with the server's control thread, even in the middle of a long
   * task; a server that died before this line closed the pipe, and the
   * first read ends the worker. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  /* The server decides when workers stop (it closes the pipe, or kills
   * one past its timeout). A Ctrl-C in a terminal, `systemctl stop` or
   * `timeout` signal the whole process group or cgroup: the server drains
   * its tasks then, and its workers must be alive to finish them. A
   * handler that does nothing, not SIG_IGN: handlers reset at exec, so a
   * program a task starts can still be stopped by SIGTERM or Ctrl-C. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  /* Exec'd as /proc/self/fd/N, the worker would be named "N" in ps and
   * pgrep: it takes its program's name back. */
  prctl(PR_SET_NAME, program_invocation_short_name);
  uint32_t ready[2] = {0, MSG_READY};
  if (write_full(fd, ready, sizeof ready) != 0)
    _exit(1);
  outcomes recent;
  memset(&recent, 0, sizeof recent);
  struct sched_param sp = {0};
  sched_setscheduler(0, SCHED_BATCH, &sp); /* best effort: nice alone otherwise */
  setpriority(PRIO_PROCESS, 0, WORKER_NICE);
  for (;;) {
    uint32_t hdr[2];
    if (read_full(fd, hdr, sizeof hdr) != 0 || hdr[0] > MAX_MESSAGE)
      _exit(0);
    char *msg = malloc((size_t)hdr[0] + 1);
    if (!msg || read_full(fd, msg, hdr[0]) != 0)
      _exit(1);
    uint32_t len = hdr[0];
    chain_ref chain = {0, 0};
    uint64_t id = 0;
    char *copies = NULL;
    coda_task *t = decode_task(e, msg, len, args, CODA__ARGS_MAX, &chain, &id, &copies);
    int32_t rc;
    const char *why = NULL;
    if (!t) {
      rc = CODA_ENOTFOUND;
      why = "unknown task name or bad message (is it registered before coda_app_run?)";
    } else if (chain.skip && failed_recently(&recent, chain.after)) {
      rc = CODA__SKIPPED;
    } else {
      rc = t->def->fn(t);
      if (rc > 0)
        rc = 0;
      why = t->error;
    }
    remember(&recent, id, rc < 0);
    uint32_t mlen = why ? (uint32_t)strlen(why) : 0;
    uint8_t has_result = t && t->result;
    uint32_t rlen = has_result ? (uint32_t)t->result_len : 0;
    double progress = t ? t->progress : 0;
    uint32_t out_hdr[2] = {0, MSG_DONE};
    int bad = 0;
    out.len = 0;
    put(&out, out_hdr, 8, &bad);
    put(&out, &id, 8, &bad);
    put(&out, &rc, 4, &bad);
    put(&out, &mlen, 4, &bad);
    put(&out, why ? why : "", mlen, &bad);
    put(&out, &has_result, 1, &bad);
    put(&out, &rlen, 4, &bad);
    put(&out, has_result ? t->result : "", rlen, &bad);
    put(&out, &progress, 8, &bad);
    if (bad)
      _exit(1);
    out_hdr[0] = (uint32_t)(out.len - 8);
    memcpy(out.base, out_hdr, 4);
    if (write_full(fd, out.base, out.len) != 0)
      _exit(1);
    if (t) {
      free(t->error);
      free(t->result);
    }
    free(copies);
    free(msg);
  }
}

/* ---- the server side --------------------------------------------------- */

static void spawn_worker(worker *w);
static void dispatch(coda__process_pool *p);

static void on_respawn(uv_timer_t *timer) { spawn_worker(timer->data); }

/* How long the replacement of a worker that just ended waits. */
static uint64_t respawn_delay(worker *w) {
  if (w->ready) {
    w->quick_exits = 0;
    return 0;
  }
  uint64_t delay = RESPAWN_MIN_MS;
  for (int i = 0; i < w->quick_exits && delay < RESPAWN_MAX_MS; i++)
    delay *= 2;
  w->quick_exits++;
  return delay < RESPAWN_MAX_MS ? delay : RESPAWN_MAX_MS;
}

static void on_handle_closed(uv_handle_t *h) {
  worker *w = h->data;
  if (--w->handles_open > 0 || w->pool->stopping)
    return;
  uint64_t delay = respawn_delay(w);
  if (delay == 0)
    spawn_worker(w); /* the replacement */
  else
    uv_timer_start(&w->respawn, on_respawn, delay, 0);
}

static void close_worker(worker *w) {
  w->alive = 0;
  w->in.len = 0;
  uv_close((uv_handle_t *)&w->proc, on_handle_closed);
  uv_close((uv_handle_t *)&w->pipe, on_handle_closed);
  uv_close((uv_handle_t *)&w->timer, on_handle_closed);
}

static coda_task *current(const worker *w) {
  return w->count ? w->inflight[w->head] : NULL;
}

static void on_timeout(uv_timer_t *timer);

static int stops_after_failure(const coda_tasks *run) {
  return (run->flags & CODA_TASKS_STOP_ON_FAILURE) && run->failed;
}

/* The head task starts running in the worker now (the one before it just
 * finished there): its clock and its timeout start. A chained task whose
 * list has stopped on a failure is skipped by the worker: it never begins. */
static void start_current(worker *w) {
  coda_task *t = current(w);
  if (!t || w->begun)
    return;
  w->begun = 1;
  if (t->chained && stops_after_failure(t->run)) {
    t->skipping = 1;
    return;
  }
  coda__task_begin(t);
  if (t->def->timeout_ms > 0)
    uv_timer_start(&w->timer, on_timeout, (uint64_t)t->def->timeout_ms, 0);
}

static void chain_ahead(worker *w);

static void finish_current(worker *w, int rc, const char *message) {
  coda_task *t = current(w);
  if (!t)
    return;
  w->head = (w->head + 1) % CHAIN_DEPTH;
  w->count--;
  w->begun = 0;
  uv_timer_stop(&w->timer);
  /* The list advances first: whether the next chained task is skipped
   * depends on how this one ended. */
  if (t->skipping || rc == CODA__SKIPPED) {
    coda_tasks *run = t->run;
    if (!t->skipping) { /* begun by a parent that did not expect the skip */
      coda__stat_add(t->def->engine, t->executor, CODA_STAT_RUNNING, -1);
      coda__stat_add(t->def->engine, t->executor, CODA_STAT_QUEUED, 1);
    }
    coda__task_drop_final(t, "an earlier task of its list failed");
    coda__run_advance(run, 1);
  } else {
    coda__task_finish(t, rc, message); /* may dispatch more, even to w */
  }
  if (w->alive) {
    start_current(w);
    chain_ahead(w);
  }
}

/* Whether t is chained and its predecessor has not finished yet. */
static int is_ahead(const coda_task *t) {
  const coda_tasks *run = t->run;
  if (!t->chained)
    return 0;
  for (int i = run->next; i < run->next + run->ahead; i++)
    if (run->tasks[i] == t)
      return 1;
  return 0;
}

/* The tasks sent to a dead worker behind its head never started: they go
 * back to the front of the queue, in order, for the other workers. A chained
 * task whose predecessor has not finished is taken back by its list instead,
 * which submits it again when that predecessor ends. */
static void requeue_unstarted(worker *w) {
  coda__process_pool *p = w->pool;
  for (int k = w->count - 1; k >= 1; k--) {
    coda_task *t = w->inflight[(w->head + k) % CHAIN_DEPTH];
    if (is_ahead(t))
      t->run->ahead--;
    else
      coda__queue_insert_head(&p->waiting, &t->link);
    t->chained = 0;
  }
  if (w->count > 1)
    w->count = 1;
}

static void consume_input(worker *w);

/* Reads what the worker wrote before it ended and the loop has not read
 * yet: libuv may report the exit first. Without this, a task that
 * finished just before its worker crashed in the next one would be taken
 * for the one that crashed, and the next one, seen as unstarted, would run
 * again. The pipe is non-blocking; a read is safe between libuv's own. */
static void drain_pipe(worker *w) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&w->pipe, &fd) != 0)
    return;
  for (;;) {
    if (coda__buf_reserve(&w->in, 4096) != 0)
      return;
    ssize_t n = read(fd, w->in.base + w->in.len, w->in.cap - w->in.len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    w->in.len += (size_t)n;
    consume_input(w);
  }
}

static void on_worker_exit(uv_process_t *proc, int64_t status, int signo) {
  worker *w = proc->data;
  coda__process_pool *p = w->pool;
  char why[128];
  w->alive = 0; /* nothing more is sent to it */
  drain_pipe(w);
  requeue_unstarted(w);
  coda_task *t = current(w);
  if (t && t->skipping) {
    finish_current(w, CODA__SKIPPED, NULL);
  } else if (t && w->killed_for_timeout) {
    finish_current(w, CODA_ETIMEDOUT, NULL); /* already reported */
  } else if (t) {
    if (signo)
      snprintf(why, sizeof why, "worker %d killed by signal %d (%s)", (int)proc->pid,
               signo, strsignal(signo));
    else
      snprintf(why, sizeof why, "worker %d exited with status %lld", (int)proc->pid,
               (long long)status);
    coda__task_report(t, CODA_STAT_CRASHED, why);
    finish_current(w, CODA_ECRASHED, why);
  }
  if (!p->stopping)
    coda_log(p->engine->app, CODA_LOG_WARN,
             "process worker %d ended (%s %d)%s; replacing it", (int)proc->pid,
             signo ? "signal" : "status", signo ? signo : (int)status,
             w->ready ? "" : " before it was ready (the replacement waits)");
  if (!p->stopping)
    coda__stat_add(p->engine, CODA_EXEC_PROCESS, CODA_STAT_RESTARTED, 1);
  w->killed_for_timeout = 0;
  close_worker(w);
  dispatch(p); /* its requeued tasks, to the workers still alive */
}

static void on_timeout(uv_timer_t *timer) {
  worker *w = timer->data;
  coda_task *t = current(w);
  if (!t || !w->alive)
    return;
  w->killed_for_timeout = 1;
  coda__task_report(t, CODA_STAT_TIMED_OUT, "past its timeout; its worker is killed");
  uv_process_kill(&w->proc, SIGKILL);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  worker *w = h->data;
  if (coda__buf_reserve(&w->in, suggested) != 0) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  *buf = uv_buf_init(w->in.base + w->in.len, (unsigned)(w->in.cap - w->in.len));
}

/* Handles every complete DONE message in the worker's input. */
static void consume_input(worker *w) {
  size_t at = 0;
  while (w->in.len - at >= 8) {
    uint32_t hdr[2];
    memcpy(hdr, w->in.base + at, 8);
    if (w->in.len - at - 8 < hdr[0])
      break;
    reader r = {w->in.base + at + 8, hdr[0], 0};
    at += 8 + hdr[0];
    if (hdr[1] == MSG_READY) {
      w->ready = 1;
      continue;
    }
    uint64_t id = 0;
    TAKE(&r, id);
    coda_task *t = current(w);
    if (!t || t->id != id)
      continue; /* not the head: stale or garbled */
    if (hdr[1] == MSG_PROGRESS) {
      double progress = 0;
      TAKE(&r, progress);
      if (!r.bad && t->durable && !t->skipping)
        coda_task_progress(t, progress);
      continue;
    }
    int32_t rc = 0;
    uint32_t mlen = 0, rlen = 0;
    uint8_t has_result = 0;
    double progress = 0;
    TAKE(&r, rc);
    TAKE(&r, mlen);
    const char *msg = take(&r, mlen);
    TAKE(&r, has_result);
    TAKE(&r, rlen);
    const char *result = take(&r, rlen);
    TAKE(&r, progress);
    if (hdr[1] != MSG_DONE || r.bad)
      continue;
    int ran = !t->skipping && rc != CODA__SKIPPED;
    if (ran && t->durable && progress != t->progress)
      coda_task_progress(t, progress);
    if (ran && t->durable && has_result)
      coda_task_set_result(t, result ? result : "", rlen);
    char text[512];
    size_t n = mlen < sizeof text - 1 ? mlen : sizeof text - 1;
    memcpy(text, msg ? msg : "", n);
    text[n] = '\0';
    finish_current(w, rc, n ? text : NULL);
  }
  memmove(w->in.base, w->in.base + at, w->in.len - at);
  w->in.len -= at;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  worker *w = s->data;
  if (n < 0) {
    uv_read_stop(s); /* the exit callback will follow */
    return;
  }
  w->in.len += (size_t)n;
  consume_input(w);
  dispatch(w->pool);
}

typedef struct write_req {
  uv_write_t req;
  coda__buf buf;
} write_req;

static void on_written(uv_write_t *req, int status) {
  write_req *wr = (write_req *)req;
  (void)status; /* a dead worker is seen by its exit callback */
  coda__buf_free(&wr->buf);
  free(wr);
}

/* Sends t to w, behind what w has. CODA_ENOMEM when it cannot be encoded
 * (t is not sent). */
static int send_task(worker *w, coda_task *t, const coda_task *after) {
  write_req *wr = calloc(1, sizeof *wr);
  if (!wr || encode_task(&wr->buf, t, after) != 0) {
    if (wr)
      coda__buf_free(&wr->buf);
    free(wr);
    return CODA_ENOMEM;
  }
  w->inflight[(w->head + w->count) % CHAIN_DEPTH] = t;
  if (++w->count == 1)
    start_current(w);
  uv_buf_t b = uv_buf_init(wr->buf.base, (unsigned)wr->buf.len);
  if (uv_write(&wr->req, (uv_stream_t *)&w->pipe, &b, 1, on_written) != 0) {
    coda__buf_free(&wr->buf);
    free(wr); /* the worker is going away; its exit reports the task */
  }
  return 0;
}

/* Chains: while w has room, the task after w's last one in its ordered list
 * goes to w as well, if it is a PROCESS task and the list goes on. It is
 * right behind its predecessor in w's pipe, so it is the head as soon as
 * that one ends, and the worker never waits for the parent in between. */
static void chain_ahead(worker *w) {
  while (w->alive && w->ready && w->count > 0 && w->count < CHAIN_DEPTH) {
    coda_task *last = w->inflight[(w->head + w->count - 1) % CHAIN_DEPTH];
    coda_tasks *run = last->run;
    if (!run || (run->flags & CODA_TASKS_PARALLEL) || stops_after_failure(run))
      return;
    int at = run->next + run->ahead; /* the first task of the list not sent */
    if (at >= run->n || run->tasks[at - 1] != last ||
        run->tasks[at]->executor != CODA_EXEC_PROCESS)
      return;
    coda_task *t = run->tasks[at];
    int stop = (run->flags & CODA_TASKS_STOP_ON_FAILURE) != 0;
    if (send_task(w, t, stop ? last : NULL) != 0)
      return; /* the list submits it when its turn comes */
    t->chained = 1;
    run->ahead++;
  }
}

/* Fills the workers round-robin: every idle worker gets a task before any
 * worker gets a second one, and none gets more than PIPELINE_DEPTH. */
static void dispatch(coda__process_pool *p) {
  int sent = 1;
  while (sent && !coda__queue_empty(&p->waiting)) {
    sent = 0;
    for (int i = 0; i < p->nworkers && !coda__queue_empty(&p->waiting); i++) {
      worker *w = &p->workers[i];
      if (!w->alive || !w->ready || w->count >= PIPELINE_DEPTH)
        continue;
      coda__queue *q = coda__queue_head(&p->waiting);
      coda__queue_remove(q);
      coda_task *t = coda__container_of(q, coda_task, link);
      if (send_task(w, t, NULL) != 0) {
        coda__task_begin(t);
        coda__task_finish(t, CODA_ENOMEM, "out of memory sending it to a worker");
      } else {
        chain_ahead(w);
      }
      sent = 1;
    }
  }
}

static void on_inbox(uv_async_t *a) {
  coda__process_pool *p = a->data;
  uv_mutex_lock(&p->mu);
  coda__queue_move(&p->waiting, &p->inbox);
  uv_mutex_unlock(&p->mu);
  dispatch(p);
}

int coda__process_pool_submit(coda__process_pool *p, coda_task *t) {
  uv_thread_t me = uv_thread_self();
  if (uv_thread_equal(&me, &p->control) && p->accepting && !p->stopping) {
    /* Already on the pool's thread (the previous task of an ordered list
     * just finished here): no inbox, no async hop. */
    coda__queue_insert_tail(&p->waiting, &t->link);
    dispatch(p);
    return 0;
  }
  uv_mutex_lock(&p->mu);
  int ok = p->accepting;
  if (ok) {
    coda__queue_insert_tail(&p->inbox, &t->link);
    uv_async_send(&p->async);
  }
  uv_mutex_unlock(&p->mu);
  return ok ? 0 : CODA_ESTATE;
}

static void spawn_worker(worker *w) {
  coda__process_pool *p = w->pool;
  uv_stdio_container_t stdio[4];
  uv_pipe_init(p->loop, &w->pipe, 0);
  uv_timer_init(p->loop, &w->timer);
  w->pipe.data = w->timer.data = w->proc.data = w;
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
  stdio[3].data.stream = (uv_stream_t *)&w->pipe;
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.file = p->exe;
  o.args = p->argv;
  o.env = p->envp;
  o.stdio = stdio;
  o.stdio_count = 4;
  o.exit_cb = on_worker_exit;
  w->handles_open = 3;
  int rc = uv_spawn(p->loop, &w->proc, &o);
  if (rc) {
    coda_log(p->engine->app, CODA_LOG_ERROR,
             "cannot start a process worker: %s; trying again", uv_strerror(rc));
    w->ready = 0; /* never started: the retry waits */
    uv_close((uv_handle_t *)&w->proc, on_handle_closed);
    uv_close((uv_handle_t *)&w->pipe, on_handle_closed);
    uv_close((uv_handle_t *)&w->timer, on_handle_closed);
    return;
  }
  w->alive = 1;
  w->ready = 0;
  /* Workers never keep the control loop alive: the server's own handles
   * decide when it ends. */
  uv_unref((uv_handle_t *)&w->proc);
  uv_unref((uv_handle_t *)&w->pipe);
  uv_unref((uv_handle_t *)&w->timer);
  uv_read_start((uv_stream_t *)&w->pipe, on_alloc, on_read);
  dispatch(p);
}

/* This program's argv, from /proc, so workers start the same way. */
static char **read_cmdline(void) {
  FILE *f = fopen("/proc/self/cmdline", "rb");
  if (!f)
    return NULL;
  static char data[8192];
  size_t n = fread(data, 1, sizeof data - 1, f);
  fclose(f);
  data[n] = '\0';
  int argc = 0;
  for (size_t i = 0; i < n; i++)
    argc += data[i] == '\0';
  char **argv = calloc((size_t)argc + 2, sizeof *argv);
  if (!argv)
    return NULL;
  size_t at = 0;
  for (int i = 0; i < argc && at < n; i++) {
    argv[i] = data + at;
    at += strlen(data + at) + 1;
  }
  return argv;
}

static char **worker_env(void) {
  int n = 0;
  while (environ[n])
    n++;
  char **env = calloc((size_t)n + 2, sizeof *env);
  if (!env)
    return NULL;
  int k = 0;
  for (int i = 0; i < n; i++)
    if (strncmp(environ[i], "CODA_WORKER_FD=", 15) != 0)
      env[k++] = environ[i];
  env[k] = "CODA_WORKER_FD=3";
  return env;
}

/* Workers exec this program's file through a descriptor opened now:
 * "/proc/self/fd/N" in the child is the same file even if the binary was
 * replaced on disk meanwhile (a deploy must not start new code under an
 * old server), and under valgrind, whose /proc/self/exe is valgrind
 * itself, opening /proc/self/exe gives the program's own file. N is kept
 * above the descriptors uv_spawn sets up in the child (0-3). Falls back to
 * "/proc/self/exe". */
static void open_exe(coda__process_pool *p) {
  snprintf(p->exe, sizeof p->exe, "/proc/self/exe");
  p->exe_fd = -1;
  int fd = open("/proc/self/exe", O_PATH | O_CLOEXEC);
  if (fd < 0)
    return;
  p->exe_fd = fcntl(fd, F_DUPFD_CLOEXEC, 16);
  close(fd);
  if (p->exe_fd >= 0)
    snprintf(p->exe, sizeof p->exe, "/proc/self/fd/%d", p->exe_fd);
}

coda__process_pool *coda__process_pool_new(coda__engine *e, uv_loop_t *loop,
                                           int workers) {
  coda__process_pool *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->engine = e;
  p->loop = loop;
  p->control = uv_thread_self();
  p->nworkers = workers;
  p->workers = calloc((size_t)workers, sizeof *p->workers);
  p->argv = read_cmdline();
  p->envp = worker_env();
  open_exe(p);
  coda__queue_init(&p->inbox);
  coda__queue_init(&p->waiting);
  if (!p->workers || !p->argv || !p->envp || uv_mutex_init(&p->mu) != 0) {
    if (p->exe_fd >= 0)
      close(p->exe_fd);
    free(p->workers);
    free(p->argv);
    free(p->envp);
    free(p);
    return NULL;
  }
  uv_async_init(loop, &p->async, on_inbox);
  p->async.data = p;
  uv_unref((uv_handle_t *)&p->async);
  p->accepting = 1;
  for (int i = 0; i < workers; i++) {
    worker *w = &p->workers[i];
    w->pool = p;
    w->index = i;
    uv_timer_init(loop, &w->respawn);
    w->respawn.data = w;
    uv_unref((uv_handle_t *)&w->respawn);
    spawn_worker(w);
  }
  return p;
}

void coda__process_pool_close(coda__process_pool *p) {
  uv_mutex_lock(&p->mu);
  p->accepting = 0;
  uv_mutex_unlock(&p->mu);
}

/* Called after the control loop stopped: kill the workers, drop what is
 * left, and let one more turn of the loop close the handles. */
void coda__process_pool_stop(coda__process_pool *p, int free_it) {
  uv_mutex_lock(&p->mu);
  p->accepting = 0;
  coda__queue_move(&p->waiting, &p->inbox);
  uv_mutex_unlock(&p->mu);
  p->stopping = 1;
  for (int i = 0; i < p->nworkers; i++) {
    worker *w = &p->workers[i];
    if (w->alive) {
      uv_process_kill(&w->proc, SIGKILL);
      waitpid(w->proc.pid, NULL, 0);
      w->alive = 0;
      requeue_unstarted(w); /* dropped below with the rest of the queue */
      coda_task *t = current(w);
      if (t && t->durable && !t->skipping) {
        /* Killed by the stop, not by itself: its attempt is not spent.
         * It stays in the store as it is and runs at the next start. */
        w->head = (w->head + 1) % CHAIN_DEPTH;
        w->count = 0;
        w->begun = 0;
        coda__stat_add(p->engine, t->executor, CODA_STAT_RUNNING, -1);
        coda__stat_add(p->engine, t->executor, CODA_STAT_QUEUED, 1);
        coda_tasks *run = t->run;
        coda__task_drop(t, "the server stopped while it ran; it runs at the next start");
        if (run)
          coda__run_advance(run, 1);
      } else if (t) {
        finish_current(w, CODA_ECRASHED, "the server stopped while it ran");
      }
      close_worker(w);
    }
    uv_close((uv_handle_t *)&w->respawn, NULL);
    coda__buf_free(&w->in);
  }
  coda__tasks_drop_queue(&p->waiting, "shutdown before it ran");
  uv_close((uv_handle_t *)&p->async, NULL);
  uv_run(p->loop, UV_RUN_NOWAIT);
  if (!free_it)
    return; /* a thread left running may still submit: it finds it closed */
  uv_mutex_destroy(&p->mu);
  free(p->workers);
  if (p->exe_fd >= 0)
    close(p->exe_fd);
  free(p->argv);
  free(p->envp);
  free(p);
}

int coda_app_worker(coda_app *app) {
  const char *fd = getenv("CODA_WORKER_FD");
  if (!fd)
    return 0;
  int n = atoi(fd);
  unsetenv("CODA_WORKER_FD");
  coda__process_worker_main(app->engine, n);
  return 0; /* not reached */
}
