/*
 * process_pool.c - the parent side of the PROCESS executor: worker
 * processes started with the server, each running one task at a time, for
 * CPU work with true parallelism and crash isolation. It owns the workers
 * (spawning, the pipes, READY, timeouts, replacing the ones that end), the
 * queue of tasks waiting for one, and the dispatch: which task goes to
 * which worker, and in which order the answers finish them. The child side
 * is process_worker.c; the bytes between them are process_wire.c's.
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
 * coalescing async. Everything else is touched by the control loop only,
 * which must never block on a worker: the pipes are non-blocking, and a
 * worker that hangs is killed by its task's timeout, not waited for (the
 * stop reaps only workers it has just sent SIGKILL).
 *
 * Ordered lists: the tasks of a list run one after another, so a PROCESS
 * task that follows a PROCESS task is not sent after a round trip through
 * the parent (tens of microseconds of wake-ups) but right behind the one
 * before it, to the same worker (a chain; see chain_ahead). The worker runs
 * them in order; in a list that stops on failure it skips a chained task
 * whose predecessor failed, and the parent drops it when the answer comes.
 *
 * Durable PROCESS tasks report progress and results like the others:
 * coda_task_progress() in a worker sends PROGRESS (DONE carries the last
 * value), and the result set by coda_task_set_result() travels with DONE.
 */
#include "tasks/process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Tasks sent ahead to one worker, so it finds its next task waiting instead
 * of sleeping through a round trip. Small, because a task queued behind a
 * long one on the same worker waits for it. */
#define PIPELINE_DEPTH 4
/* A chain (the tasks of one ordered list) may go deeper, up to
 * CODA__CHAIN_DEPTH: its tasks wait for each other anyway, and the deeper
 * it is, the less often the worker waits for the server to send the next
 * one. */
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
  coda_task *inflight[CODA__CHAIN_DEPTH]; /* sent, in order; the head runs */
  int head;
  int count;
  int begun; /* the head has begun (or is known to be skipped) */
  int alive;
  int killed_for_timeout;
  int killed_for_cancel; /* coda_task_cancel(): past its grace period */
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
  int exe_fd;   /* this program's file, opened at start (see open_exe) */
  char exe[32]; /* "/proc/self/fd/N": what workers exec */
};

/* ---- workers: starting, ending, replacing ------------------------------ */

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
  return (run->flags & CODA_LIST_STOP_ON_FAILURE) && run->failed;
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
  atomic_store(&t->worker_pid, w->proc.pid); /* a lost lease is told to it */
  if (t->def->timeout_ms > 0)
    uv_timer_start(&w->timer, on_timeout, (uint64_t)t->def->timeout_ms, 0);
}

static void chain_ahead(worker *w);

/* The head task ended: with rc (0 or negative) and message, or skipped
 * (the worker did not run it, or it was known to be skipped here). */
static void finish_current(worker *w, int rc, const char *message, int skipped) {
  coda_task *t = current(w);
  if (!t)
    return;
  w->head = (w->head + 1) % CODA__CHAIN_DEPTH;
  w->count--;
  w->begun = 0;
  atomic_store(&t->worker_pid, 0);
  uv_timer_stop(&w->timer);
  /* The list advances first: whether the next chained task is skipped
   * depends on how this one ended. */
  if (t->skipping || skipped) {
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
    coda_task *t = w->inflight[(w->head + k) % CODA__CHAIN_DEPTH];
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
    finish_current(w, 0, NULL, 1);
  } else if (t && w->killed_for_timeout) {
    finish_current(w, CODA_ETIMEDOUT, NULL, 0); /* already reported */
  } else if (t && w->killed_for_cancel) {
    finish_current(w, CODA_EHANDLER,
                   "cancelled: its worker was killed after the grace period", 0);
  } else if (t) {
    if (signo)
      snprintf(why, sizeof why, "worker %d killed by signal %d (%s)", (int)proc->pid,
               signo, strsignal(signo));
    else
      snprintf(why, sizeof why, "worker %d exited with status %lld", (int)proc->pid,
               (long long)status);
    coda__task_report(t, CODA_STAT_CRASHED, why);
    finish_current(w, CODA_ECRASHED, why, 0);
  }
  if (!p->stopping)
    coda_log(p->engine->app, CODA_LOG_WARN,
             "process worker %d ended (%s %d)%s; replacing it", (int)proc->pid,
             signo ? "signal" : "status", signo ? signo : (int)status,
             w->ready ? "" : " before it was ready (the replacement waits)");
  if (!p->stopping) {
    coda__stat_add(p->engine, CODA_EXEC_PROCESS, CODA_STAT_RESTARTED, 1);
    coda__metric_add(p->engine->m_restarts, 0, 1);
  }
  w->killed_for_timeout = 0;
  w->killed_for_cancel = 0;
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

void coda__process_pool_watch(coda__process_pool *p, uint64_t now_ns) {
  for (int i = 0; i < p->nworkers; i++) {
    worker *w = &p->workers[i];
    coda_task *t = current(w);
    if (!t || !w->alive || !w->begun || t->skipping || w->killed_for_timeout ||
        w->killed_for_cancel)
      continue;
    uint64_t at = atomic_load(&t->cancel_kill_ns);
    if (!at || now_ns < at)
      continue;
    w->killed_for_cancel = 1;
    coda_log(p->engine->app, CODA_LOG_WARN,
             "task %s (id %llu) was cancelled and still runs after the grace period; "
             "its worker %d is killed",
             t->def->name, (unsigned long long)t->id, (int)w->proc.pid);
    uv_process_kill(&w->proc, SIGKILL);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  worker *w = h->data;
  if (coda__buf_reserve(&w->in, suggested) != 0) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  *buf = uv_buf_init(w->in.base + w->in.len, (unsigned)(w->in.cap - w->in.len));
}

/* Handles every complete message in the worker's input. */
static void consume_input(worker *w) {
  size_t at = 0, n, len;
  uint32_t kind;
  const char *payload;
  while ((n = coda__wire_next(w->in.base + at, w->in.len - at, &kind, &payload, &len))) {
    at += n;
    if (kind == CODA__MSG_READY) {
      w->ready = 1;
      continue;
    }
    uint64_t id = 0;
    coda_task *t = current(w);
    if (coda__wire_get_id(payload, len, &id) != 0 || !t || t->id != id)
      continue; /* not the head: stale or garbled */
    if (kind == CODA__MSG_PROGRESS) {
      double progress = 0;
      if (coda__wire_get_progress(payload, len, &id, &progress) == 0 && t->durable &&
          !t->skipping)
        coda_task_progress(t, progress);
      continue;
    }
    coda__done_msg m;
    if (kind != CODA__MSG_DONE || coda__wire_get_done(payload, len, &m) != 0)
      continue;
    int ran = !t->skipping && !m.skipped;
    if (ran && t->durable && m.progress != t->progress)
      coda_task_progress(t, m.progress);
    if (ran && t->durable && m.has_result)
      coda_task_set_result(t, m.result ? m.result : "", m.result_len);
    char text[512];
    size_t tn = m.message_len < sizeof text - 1 ? m.message_len : sizeof text - 1;
    if (tn)
      memcpy(text, m.message, tn);
    text[tn] = '\0';
    finish_current(w, m.rc, tn ? text : NULL, m.skipped);
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
  if (!wr || coda__wire_put_task(&wr->buf, t, after) != 0) {
    if (wr)
      coda__buf_free(&wr->buf);
    free(wr);
    return CODA_ENOMEM;
  }
  w->inflight[(w->head + w->count) % CODA__CHAIN_DEPTH] = t;
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
  while (w->alive && w->ready && w->count > 0 && w->count < CODA__CHAIN_DEPTH) {
    coda_task *last = w->inflight[(w->head + w->count - 1) % CODA__CHAIN_DEPTH];
    coda_tasks *run = last->run;
    if (!run || (run->flags & CODA_LIST_PARALLEL) || stops_after_failure(run))
      return;
    int at = run->next + run->ahead; /* the first task of the list not sent */
    if (at >= run->n || run->tasks[at - 1] != last ||
        run->tasks[at]->executor != CODA_EXEC_PROCESS)
      return;
    coda_task *t = run->tasks[at];
    int stop = (run->flags & CODA_LIST_STOP_ON_FAILURE) != 0;
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
  char **env = calloc((size_t)n + 3, sizeof *env);
  if (!env)
    return NULL;
  int k = 0;
  for (int i = 0; i < n; i++)
    if (strncmp(environ[i], "CODA_WORKER_FD=", 15) != 0 &&
        strncmp(environ[i], "CODA_WORKER_LOG=", 16) != 0)
      env[k++] = environ[i];
  env[k++] = "CODA_WORKER_FD=3";
  /* A worker stops in coda_app_worker(), before the program sets its
   * options: it learns the log format from here. */
  if (coda__log_default_format() == CODA__LOG_JSON)
    env[k] = "CODA_WORKER_LOG=json";
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
        w->head = (w->head + 1) % CODA__CHAIN_DEPTH;
        w->count = 0;
        w->begun = 0;
        coda__stat_add(p->engine, t->executor, CODA_STAT_RUNNING, -1);
        coda__stat_add(p->engine, t->executor, CODA_STAT_QUEUED, 1);
        coda_tasks *run = t->run;
        coda__task_drop(t, "the server stopped while it ran; it runs at the next start");
        if (run)
          coda__run_advance(run, 1);
      } else if (t) {
        finish_current(w, CODA_ECRASHED, "the server stopped while it ran", 0);
      }
      close_worker(w);
    }
    uv_close((uv_handle_t *)&w->respawn, NULL);
    coda__buf_free(&w->in);
  }
  coda__tasks_drop_queue(&p->waiting, "shutdown before it ran");
  uv_close((uv_handle_t *)&p->async, NULL);
  uv_run(p->loop, UV_RUN_NOWAIT);
  if (free_it)
    coda__process_pool_free(p);
  /* Otherwise a thread left running may still submit: it finds it closed;
   * the engine frees the pool once that thread has returned. */
}

void coda__process_pool_free(coda__process_pool *p) {
  uv_mutex_destroy(&p->mu);
  free(p->workers);
  if (p->exe_fd >= 0)
    close(p->exe_fd);
  free(p->argv);
  free(p->envp);
  free(p);
}
