/*
 * chain_test.c - ordered lists of PROCESS tasks ("chains": sent to one worker
 * back to back, see process_pool.c) under stress: many clients at once,
 * random lists mixing PROCESS tasks that succeed, fail, crash their worker or
 * spin past their timeout with THREAD and LOOP tasks, in ordered,
 * stop-on-failure and parallel lists, long and short.
 *
 * Every task appends "S <request> <index>" to a journal when it starts and
 * "E <request> <index>" when it returns (O_APPEND: short lines are atomic
 * across processes). The outcome of each task is fixed by its kind, so what
 * must run, in which order, what each counter must say and which tasks the
 * error hook must hear about are all known in advance; the test compares
 * them with what happened once the counters have settled.
 *
 * The lists come from a seeded generator; the seed is printed on failure and
 * CODA_CHAIN_SEED=<n> replays it.
 *
 * PROCESS workers re-run this program: main() registers the tasks and calls
 * coda_app_worker() before anything else.
 */
#include "harness.h"
#include "test.h"

#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LEN 40 /* tasks in one list */
/* Requests are numbered across the tests, in these ranges. */
#define MANY_FIRST 0 /* three workers, six clients */
#define MANY_LAST 240
#define ONE_FIRST MANY_LAST /* one worker, four clients */
#define ONE_LAST 340
#define STOP_FIRST ONE_LAST /* a server stopped under load */
#define STOP_LAST 350
#define AFTER STOP_LAST /* the last request */
#define MAX_REQ (AFTER + 1)
#define MAX_CLIENTS 6
#define WORKERS 3
#define SPIN_TIMEOUT_MS 150
#define SETTLE_MS 30000 /* the longest stall allowed while tasks settle */
#define MAX_PROBLEMS 12 /* problems described in full; the rest are counted */

static char journal_path[256];
static uint64_t seed;

/* ---- what a task does ------------------------------------------------- */

typedef enum { SUCCEEDS, FAILS, CRASHES, SPINS } outcome;

typedef struct kind {
  char code;
  const char *name;
  coda_executor executor;
  outcome outcome;
} kind;

static const kind kinds[] = {
    {'o', "p_ok", CODA_EXEC_PROCESS, SUCCEEDS},
    {'f', "p_fail", CODA_EXEC_PROCESS, FAILS},
    {'c', "p_crash", CODA_EXEC_PROCESS, CRASHES},
    {'s', "p_spin", CODA_EXEC_PROCESS, SPINS},
    {'t', "t_ok", CODA_EXEC_THREAD, SUCCEEDS},
    {'u', "t_fail", CODA_EXEC_THREAD, FAILS},
    {'l', "l_ok", CODA_EXEC_LOOP, SUCCEEDS},
    {'m', "l_fail", CODA_EXEC_LOOP, FAILS},
};
#define NKINDS (int)(sizeof kinds / sizeof kinds[0])

/* One app's definitions, in kinds[] order (the route's user data). */
typedef struct app_defs {
  coda_task_def *def[NKINDS];
} app_defs;

static const kind *kind_of(char code) {
  for (int i = 0; i < NKINDS; i++)
    if (kinds[i].code == code)
      return &kinds[i];
  return NULL;
}

static int kind_index_by_name(const char *name) {
  for (int i = 0; i < NKINDS; i++)
    if (strcmp(kinds[i].name, name) == 0)
      return i;
  return -1;
}

static void journal(char what, int rid, int idx) {
  char line[64];
  int n = snprintf(line, sizeof line, "%c %d %d\n", what, rid, idx);
  int fd = open(journal_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (fd >= 0) {
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
  }
}

/* Arguments: request, index in its list, microseconds to sleep (never on a
 * loop: LOOP tasks must not block). */
static int step(coda_task *t) {
  int rid = (int)coda_task_int(t, 0), idx = (int)coda_task_int(t, 1);
  const kind *k = &kinds[kind_index_by_name(coda_task_name(t))];
  journal('S', rid, idx);
  if (k->outcome == CRASHES)
    raise(SIGSEGV);
  if (k->outcome == SPINS)
    for (;;) {
    }
  if (coda_task_int(t, 2) > 0)
    usleep((useconds_t)coda_task_int(t, 2));
  journal('E', rid, idx);
  return k->outcome == FAILS ? coda_task_fail(t, "failing on purpose") : 0;
}

/* ---- the lists ------------------------------------------------------------ */

typedef struct spec {
  unsigned flags; /* CODA_TASKS_* */
  int attach;     /* built apart with coda_tasks_new() and attached */
  int n;
  char code[MAX_LEN + 1];
  int sleep_us[MAX_LEN];
  int pause_ms; /* the client waits this long before sending it */
} spec;

static spec specs[MAX_REQ];
static atomic_int reports[MAX_REQ][MAX_LEN]; /* error hook calls per task */
static atomic_int stray_reports;

static uint64_t rng;

static uint32_t rnd(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (uint32_t)((rng * 0x2545F4914F6CDD1DULL) >> 32);
}

static int below(int n) { return (int)(rnd() % (uint32_t)n); }

/* Short lists mix everything; long ones are mostly PROCESS tasks in a row,
 * so chains pass CHAIN_DEPTH (16). Weights out of 200. */
static char random_code(int long_list) {
  static const char codes[] = "ofcstulm";
  static const int short_w[] = {118, 14, 7, 3, 24, 7, 21, 6};
  static const int long_w[] = {182, 5, 3, 1, 4, 2, 2, 1};
  const int *w = long_list ? long_w : short_w;
  int r = below(200);
  for (int i = 0; i < 8; i++) {
    if (r < w[i])
      return codes[i];
    r -= w[i];
  }
  return 'o';
}

static void random_spec(spec *s) {
  memset(s, 0, sizeof *s);
  int shape = below(100);
  if (shape < 40)
    s->flags = 0;
  else if (shape < 82)
    s->flags = CODA_LIST_STOP_ON_FAILURE;
  else if (shape < 92)
    s->flags = CODA_LIST_PARALLEL;
  else
    s->flags = CODA_LIST_PARALLEL | CODA_LIST_STOP_ON_FAILURE;
  s->attach = below(4) == 0;
  int long_list = below(100) < 12;
  s->n = long_list ? 17 + below(MAX_LEN - 16) : 1 + below(10);
  for (int i = 0; i < s->n; i++) {
    s->code[i] = random_code(long_list);
    s->sleep_us[i] = kind_of(s->code[i])->executor == CODA_EXEC_LOOP ? 0 : 250 * below(8);
  }
  s->pause_ms = below(5) == 0 ? below(25) : 0;
}

static int ordered(const spec *s) { return !(s->flags & CODA_LIST_PARALLEL); }

static int stops(const spec *s) {
  return ordered(s) && (s->flags & CODA_LIST_STOP_ON_FAILURE);
}

/* How many of the list's tasks run: all, unless it stops on failure. */
static int runs(const spec *s) {
  if (!stops(s))
    return s->n;
  for (int i = 0; i < s->n; i++)
    if (kind_of(s->code[i])->outcome != SUCCEEDS)
      return i + 1;
  return s->n;
}

static int ends(char code) {
  outcome o = kind_of(code)->outcome;
  return o == SUCCEEDS || o == FAILS;
}

/* ---- the app ----------------------------------------------------------- */

static void on_task_error(const coda_task *t, const char *message, void *user) {
  (void)message, (void)user;
  int64_t rid = coda_task_int(t, 0), idx = coda_task_int(t, 1);
  if (rid >= 0 && rid < MAX_REQ && idx >= 0 && idx < MAX_LEN)
    atomic_fetch_add(&reports[rid][idx], 1);
  else
    atomic_fetch_add(&stray_reports, 1);
}

/* GET /run?r=<request>: the tasks of specs[r]. */
static int h_run(coda_req *req, coda_res *res, void *user) {
  const app_defs *defs = user;
  const char *r = coda_req_query(req, "r");
  int rid = r ? atoi(r) : -1;
  if (rid < 0 || rid >= MAX_REQ || specs[rid].n == 0)
    return CODA_EINVAL;
  const spec *s = &specs[rid];
  coda_tasks *list = s->attach ? coda_tasks_new(coda_req_app(req)) : NULL;
  int rc =
      list ? coda_tasks_set_flags(list, s->flags) : coda_res_tasks_flags(res, s->flags);
  for (int i = 0; i < s->n && rc == 0; i++) {
    coda_task_def *def = defs->def[kind_of(s->code[i]) - kinds];
    int64_t a = rid, b = i, c = s->sleep_us[i];
    rc = list ? coda_tasks_add(list, def, "iii", a, b, c)
              : coda_res_add_task(res, def, "iii", a, b, c);
  }
  if (list && rc == 0)
    rc = coda_res_attach_tasks(res, list);
  else if (list)
    coda_tasks_free(list);
  return rc ? rc : coda_res_body_static(res, "ok", 2);
}

static int h_plain(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  return coda_res_body_static(res, "plain", 5);
}

static coda_app *make_app(app_defs *defs) {
  coda_app *a = coda_app_new();
  for (int i = 0; i < NKINDS; i++)
    defs->def[i] = coda_app_task(a, kinds[i].name, step, kinds[i].executor);
  coda_task_def_timeout(defs->def[kind_of('s') - kinds], SPIN_TIMEOUT_MS);
  coda_app_set(a, CODA_OPT_LOG_LEVEL, CODA_LOG_OFF);
  coda_app_set(a, CODA_OPT_THREADS, 2);
  coda_app_set(a, CODA_OPT_PROCESS_WORKERS, WORKERS);
  coda_app_set(a, CODA_OPT_PROCESS_QUEUE, 100000);
  coda_app_on_task_error(a, on_task_error, NULL);
  coda_app_route(a, "GET", "/run", h_run, defs);
  coda_app_route(a, "GET", "/plain", h_plain, NULL);
  return a;
}

/* tc_get with SIGCHLD (a worker ended) held off this thread, so that it
 * interrupts no connect(); the server's threads take it. */
static int get(int port, const char *path, char *buf, size_t cap) {
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &chld, &old);
  int status = tc_get(port, path, buf, cap, 10000);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return status;
}

/* ---- counters ------------------------------------------------------------ */

typedef struct stats {
  long v[CODA_EXEC_COUNT_][CODA_STAT_COUNT_];
} stats;

static stats read_stats(coda_app *a) {
  stats s;
  memset(&s, 0, sizeof s);
  for (int ex = CODA_EXEC_LOOP; ex < CODA_EXEC_COUNT_; ex++)
    for (int k = 0; k < CODA_STAT_COUNT_; k++)
      s.v[ex][k] = coda_task_stat(a, (coda_executor)ex, (coda_task_stat_kind)k);
  return s;
}

static long ended(const stats *s, int ex) {
  return s->v[ex][CODA_STAT_SUCCEEDED] + s->v[ex][CODA_STAT_FAILED] +
         s->v[ex][CODA_STAT_DROPPED];
}

/* What requests [first, last) must add to the counters. */
static stats expected_stats(int first, int last) {
  stats e;
  memset(&e, 0, sizeof e);
  for (int r = first; r < last; r++) {
    const spec *s = &specs[r];
    int ran = runs(s);
    for (int i = 0; i < s->n; i++) {
      const kind *k = kind_of(s->code[i]);
      long *v = e.v[k->executor];
      if (i >= ran)
        v[CODA_STAT_DROPPED]++;
      else if (k->outcome == SUCCEEDS)
        v[CODA_STAT_SUCCEEDED]++;
      else
        v[CODA_STAT_FAILED]++;
      if (i < ran && k->outcome == CRASHES)
        v[CODA_STAT_CRASHED]++;
      if (i < ran && k->outcome == SPINS)
        v[CODA_STAT_TIMED_OUT]++;
    }
  }
  return e;
}

/* Polls until nothing is queued or running and every task added since
 * `base` has ended, or `ms` pass without one more task ending: the bound is
 * on a stall, not on the whole, so a slow machine only takes longer (under
 * TSan at load 9 a storm ran 900 of its 1284 PROCESS tasks in 45 s), while
 * tasks that are lost stop the count and fail it. */
static int settle(coda_app *a, const stats *base, const stats *want, int ms) {
  uint64_t deadline = tc_now_ms() + (uint64_t)ms;
  long seen = -1;
  for (;;) {
    stats now = read_stats(a);
    int done = 1;
    long total = 0;
    for (int ex = CODA_EXEC_LOOP; ex < CODA_EXEC_COUNT_; ex++) {
      done &= now.v[ex][CODA_STAT_QUEUED] == 0 && now.v[ex][CODA_STAT_RUNNING] == 0 &&
              ended(&now, ex) - ended(base, ex) == ended(want, ex);
      total += ended(&now, ex);
    }
    if (done)
      return 1;
    if (total != seen) {
      seen = total;
      deadline = tc_now_ms() + (uint64_t)ms;
    }
    if (tc_now_ms() > deadline)
      return 0;
    tc_sleep_ms(10);
  }
}

static const char *const stat_names[] = {"queued",    "running", "succeeded", "failed",
                                         "timed_out", "crashed", "rejected",  "dropped"};

/* Compares the counters the lists decide (deltas from base) with `want`. */
static int check_stats(const stats *base, const stats *now, const stats *want) {
  int bad = 0;
  for (int ex = CODA_EXEC_LOOP; ex < CODA_EXEC_COUNT_; ex++) {
    for (int k = 0; k <= CODA_STAT_DROPPED; k++) {
      long got = now->v[ex][k] - (k <= CODA_STAT_RUNNING ? 0 : base->v[ex][k]);
      if (got != want->v[ex][k]) {
        fprintf(stderr, "  %s %s: %ld, expected %ld\n",
                coda_executor_name((coda_executor)ex), stat_names[k], got,
                want->v[ex][k]);
        bad++;
      }
    }
  }
  return bad;
}

/* ---- the journal ----------------------------------------------------------- */

typedef struct event {
  char what; /* 'S' or 'E' */
  int rid, idx;
} event;

typedef struct journal_events {
  event *ev;
  int n;
  int malformed;
} journal_events;

static journal_events journal_load(void) {
  journal_events j = {NULL, 0, 0};
  int fd = open(journal_path, O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    if (fd >= 0)
      close(fd);
    return j;
  }
  char *text = malloc((size_t)st.st_size + 1);
  ssize_t len = text ? read(fd, text, (size_t)st.st_size) : -1;
  close(fd);
  if (len < 0) {
    free(text);
    return j;
  }
  text[len] = '\0';
  j.ev = calloc((size_t)len / 6 + 1, sizeof *j.ev); /* a line is 6 bytes or more */
  for (char *line = text, *nl; j.ev && *line; line = nl + 1) {
    nl = strchr(line, '\n');
    if (!nl)
      nl = line + strlen(line) - 1;
    event e;
    if (sscanf(line, "%c %d %d", &e.what, &e.rid, &e.idx) == 3 &&
        (e.what == 'S' || e.what == 'E') && e.rid >= 0 && e.rid < MAX_REQ && e.idx >= 0 &&
        e.idx < MAX_LEN)
      j.ev[j.n++] = e;
    else
      j.malformed++;
  }
  free(text);
  return j;
}

/* One request's events, in journal order, into ev (cap entries); returns how
 * many there were (possibly more than cap). */
static int events_of(const journal_events *j, int rid, event *ev, int cap) {
  int n = 0;
  for (int i = 0; i < j->n; i++)
    if (j->ev[i].rid == rid) {
      if (n < cap)
        ev[n] = j->ev[i];
      n++;
    }
  return n;
}

/* What an ordered list must journal: S i (and E i if it returns) for every
 * task that runs, in list order. */
static int expected_events(const spec *s, int rid, event *ev) {
  int n = 0, ran = runs(s);
  for (int i = 0; i < ran; i++) {
    ev[n++] = (event){'S', rid, i};
    if (ends(s->code[i]))
      ev[n++] = (event){'E', rid, i};
  }
  return n;
}

static void print_events(const char *label, const event *ev, int n) {
  fprintf(stderr, "    %s:", label);
  for (int i = 0; i < n; i++)
    fprintf(stderr, " %c%d", ev[i].what, ev[i].idx);
  fprintf(stderr, "\n");
}

static void describe(int rid, const char *problem, const event *want, int nwant,
                     const event *got, int ngot) {
  const spec *s = &specs[rid];
  fprintf(stderr, "  request %d (%s%s%s, %d tasks \"%s\"): %s\n", rid,
          s->flags & CODA_LIST_PARALLEL ? "parallel" : "ordered",
          s->flags & CODA_LIST_STOP_ON_FAILURE ? ", stop on failure" : "",
          s->attach ? ", attached" : "", s->n, s->code, problem);
  if (want)
    print_events("expected", want, nwant);
  print_events("journal ", got, ngot);
}

/* A spinning PROCESS task is killed at its timeout, whose clock starts when
 * the task is next in its worker: on a busy machine that (niced) worker may
 * not get the CPU for so long, and the task is killed before its first line
 * ran. So it may be missing from the journal; the counters, checked apart,
 * still show that it timed out rather than being dropped. */
static int may_not_start(const spec *s, int i) {
  return kind_of(s->code[i])->outcome == SPINS;
}

/* An ordered list's journal: the tasks that started, in list order, each
 * one's end (if it returns) right after its start. Normally exactly the
 * tasks that must run. If the server stopped meanwhile (`stopped`), some
 * were dropped instead: a list that stops on failure then ran a prefix of
 * them, another one any of them in order, and one PROCESS task may have been
 * killed before its end. */
static const char *check_ordered(const spec *s, const event *got, int ngot, int stopped) {
  int last = -1, started = 0, killed = 0, failed = 0;
  for (int i = 0; i < ngot; i++) {
    const event *e = &got[i];
    if (e->idx >= s->n)
      return "a task the list does not have";
    if (e->what == 'E') {
      if (i == 0 || got[i - 1].what != 'S' || got[i - 1].idx != e->idx ||
          !ends(s->code[e->idx]))
        return "a task ended out of turn";
      continue;
    }
    if (e->idx <= last)
      return "a task ran twice or out of order";
    if (!stopped)
      while (last + 1 < e->idx && may_not_start(s, last + 1)) {
        last++, started++;
        failed = 1;
      }
    if (failed && stops(s))
      return "a task ran after a failure";
    if (e->idx != last + 1 && (!stopped || stops(s)))
      return "a task was skipped";
    const kind *k = kind_of(s->code[e->idx]);
    int has_end = i + 1 < ngot && got[i + 1].what == 'E' && got[i + 1].idx == e->idx;
    if (ends(k->code) && !has_end) {
      if (!stopped || killed || k->executor != CODA_EXEC_PROCESS)
        return "a task did not end";
      killed = 1; /* by the server's stop, as it ran */
    }
    failed |= k->outcome != SUCCEEDS || !has_end;
    last = e->idx;
    started++;
  }
  if (!stopped)
    while (last + 1 < runs(s) && may_not_start(s, last + 1))
      last++, started++;
  if (!stopped && started != runs(s))
    return started < runs(s) ? "tasks did not run" : "tasks ran after a failure";
  return NULL;
}

/* A parallel list's journal: every task started once and, if it returns,
 * ended once, in any order (at most once each if the server stopped). */
static const char *check_parallel(const spec *s, const event *got, int ngot,
                                  int stopped) {
  int started[MAX_LEN] = {0}, returned[MAX_LEN] = {0};
  for (int i = 0; i < ngot; i++) {
    if (got[i].idx >= s->n)
      return "a task the list does not have";
    if (got[i].what == 'S')
      started[got[i].idx]++;
    else if (!started[got[i].idx])
      return "a task returned before it started";
    else
      returned[got[i].idx]++;
  }
  for (int i = 0; i < s->n; i++)
    if (started[i] > 1 || (!stopped && started[i] != 1 && !may_not_start(s, i)) ||
        returned[i] > started[i] || (!stopped && returned[i] != ends(s->code[i])))
      return "a task did not run exactly once";
  return NULL;
}

static const char *check_request(int rid, const journal_events *j, int stopped,
                                 event *want, int *nwant, event *got, int *ngot) {
  const spec *s = &specs[rid];
  enum { CAP = 4 * MAX_LEN };
  *ngot = events_of(j, rid, got, CAP);
  *nwant = ordered(s) ? expected_events(s, rid, want) : 0;
  if (*ngot > CAP)
    return "far too many journal lines";
  return ordered(s) ? check_ordered(s, got, *ngot, stopped)
                    : check_parallel(s, got, *ngot, stopped);
}

/* Checks the journal and the error hook for requests [first, last).
 * Returns the number of bad requests (the first few described). */
static int check_journal(int first, int last, int stopped) {
  journal_events j = journal_load();
  int bad = 0;
  event want[4 * MAX_LEN], got[4 * MAX_LEN];
  int nwant, ngot;
  if (j.malformed) {
    fprintf(stderr, "  %d malformed journal lines\n", j.malformed);
    bad++;
  }
  for (int r = first; r < last; r++) {
    const char *problem = check_request(r, &j, stopped, want, &nwant, got, &ngot);
    if (!problem && !stopped) {
      const spec *s = &specs[r];
      int ran = runs(s);
      for (int i = 0; i < s->n && !problem; i++) {
        int reported = i < ran && kind_of(s->code[i])->outcome != SUCCEEDS;
        if (atomic_load(&reports[r][i]) != reported)
          problem = reported ? "a failure the error hook did not hear about"
                             : "the error hook heard of a task that did not fail";
      }
    }
    if (problem && ++bad <= MAX_PROBLEMS)
      describe(r, problem, nwant ? want : NULL, nwant, got,
               ngot < 4 * MAX_LEN ? ngot : 0);
  }
  if (bad > MAX_PROBLEMS)
    fprintf(stderr, "  ... and %d more bad requests\n", bad - MAX_PROBLEMS);
  free(j.ev);
  return bad;
}

/* ---- clients ---------------------------------------------------------------- */

typedef struct client {
  int port;
  int first, last, stride;
  int bad; /* responses other than 200 */
} client;

static void client_main(void *arg) {
  client *c = arg;
  char buf[4096], path[64];
  int sent = 0;
  for (int r = c->first; r < c->last; r += c->stride) {
    if (specs[r].pause_ms)
      tc_sleep_ms(specs[r].pause_ms);
    snprintf(path, sizeof path, "/run?r=%d", r);
    int status = get(c->port, path, buf, sizeof buf);
    if (status != 200) {
      fprintf(stderr, "  GET %s: %d\n", path, status);
      c->bad++;
    }
    if (++sent % 8 == 0 && get(c->port, "/plain", buf, sizeof buf) != 200)
      c->bad++; /* serving goes on while workers die */
  }
}

/* Sends requests [first, last) from `nclients` threads at once. Returns the
 * number of responses that were not 200. */
static int run_clients(int port, int first, int last, int nclients) {
  client c[MAX_CLIENTS];
  uv_thread_t th[MAX_CLIENTS];
  int bad = 0;
  for (int i = 0; i < nclients; i++) {
    c[i] = (client){port, first + i, last, nclients, 0};
    if (uv_thread_create(&th[i], client_main, &c[i]) != 0)
      c[i].bad = 1, c[i].last = 0;
  }
  for (int i = 0; i < nclients; i++) {
    if (c[i].last)
      uv_thread_join(&th[i]);
    bad += c[i].bad;
  }
  return bad;
}

static void fill_specs(int first, int last) {
  for (int r = first; r < last; r++) {
    random_spec(&specs[r]);
    for (int i = 0; i < MAX_LEN; i++)
      atomic_store(&reports[r][i], 0);
  }
}

static void say_seed(void) {
  fprintf(stderr, "  seed %llu (CODA_CHAIN_SEED=%llu replays it)\n",
          (unsigned long long)seed, (unsigned long long)seed);
}

/* ---- tests ------------------------------------------------------------------- */

static test_server ts;
static coda_app *app;
static app_defs app_tasks;

/* Sends requests [first, last) from `nclients` clients at once, waits for
 * their tasks to settle and checks everything against the lists. */
static void storm(coda_app *a, int port, int first, int last, int nclients) {
  fill_specs(first, last);
  stats want = expected_stats(first, last);
  stats base = read_stats(a);
  uint64_t t0 = tc_now_ms();
  CHECK_EQ_INT(run_clients(port, first, last, nclients), 0);
  uint64_t sent_ms = tc_now_ms() - t0;
  int settled = settle(a, &base, &want, SETTLE_MS);
  uint64_t settle_ms = tc_now_ms() - t0;
  stats now = read_stats(a);
  CHECK(settled);
  CHECK_EQ_INT(check_stats(&base, &now, &want), 0);
  long crashes = want.v[CODA_EXEC_PROCESS][CODA_STAT_CRASHED];
  long timeouts = want.v[CODA_EXEC_PROCESS][CODA_STAT_TIMED_OUT];
  /* Each crash and each timeout costs a worker, and nothing else does. */
  CHECK_EQ_INT(now.v[CODA_EXEC_PROCESS][CODA_STAT_RESTARTED] -
                   base.v[CODA_EXEC_PROCESS][CODA_STAT_RESTARTED],
               crashes + timeouts);
  CHECK_EQ_INT(check_journal(first, last, 0), 0);
  CHECK_EQ_INT(atomic_load(&stray_reports), 0);
  char buf[4096];
  CHECK_EQ_INT(get(port, "/plain", buf, sizeof buf), 200);
  long tasks = 0, dropped = 0;
  for (int ex = CODA_EXEC_LOOP; ex < CODA_EXEC_COUNT_; ex++) {
    tasks += ended(&want, ex);
    dropped += want.v[ex][CODA_STAT_DROPPED];
  }
  printf("  %d requests, %ld tasks (%ld dropped after a failure), %ld crashes, "
         "%ld timeouts: sent in %llu ms, settled in %llu ms\n",
         last - first, tasks, dropped, crashes, timeouts, (unsigned long long)sent_ms,
         (unsigned long long)settle_ms);
}

TEST(random_lists_on_three_workers_keep_order_and_account_for_every_task) {
  int failures = test__failures_in_case;
  rng = seed;
  storm(app, ts.port, MANY_FIRST, MANY_LAST, 6);
  if (test__failures_in_case != failures)
    say_seed();
}

/* One worker: every chain, and every task sent ahead of a chain, shares it,
 * so each crash or timeout gives back tasks of many lists at once. */
TEST(random_lists_on_one_worker_keep_order_and_account_for_every_task) {
  int failures = test__failures_in_case;
  rng = seed ^ 0x1111;
  static app_defs own;
  coda_app *a = make_app(&own);
  coda_app_set(a, CODA_OPT_PROCESS_WORKERS, 1);
  test_server s;
  REQUIRE(ts_start(&s, a) == 0);
  storm(a, s.port, ONE_FIRST, ONE_LAST, 4);
  ts_stop(&s);
  coda_app_free(a);
  if (test__failures_in_case != failures)
    say_seed();
}

/* After the storm the replaced workers still run long chains, in order. */
TEST(the_replaced_workers_still_run_chains) {
  int r = AFTER;
  int failures = test__failures_in_case;
  spec *s = &specs[r];
  memset(s, 0, sizeof *s);
  s->flags = CODA_LIST_STOP_ON_FAILURE;
  s->n = MAX_LEN;
  for (int i = 0; i < s->n; i++)
    s->code[i] = i == 20 ? 't' : 'o'; /* two chains, one past CHAIN_DEPTH */
  stats want = expected_stats(r, r + 1);
  stats base = read_stats(app);
  char buf[64];
  snprintf(buf, sizeof buf, "/run?r=%d", r);
  char resp[4096];
  REQUIRE(get(ts.port, buf, resp, sizeof resp) == 200);
  CHECK(settle(app, &base, &want, SETTLE_MS));
  stats now = read_stats(app);
  CHECK_EQ_INT(check_stats(&base, &now, &want), 0);
  CHECK_EQ_INT(check_journal(r, r + 1, 0), 0);
  if (test__failures_in_case != failures)
    say_seed();
}

/* The server stops while chains are in flight on every worker: what ran
 * kept its order, and every task is accounted for (run, failed or dropped),
 * with nothing left queued or running. */
TEST(stopping_with_chains_in_flight_accounts_for_every_task) {
  int first = STOP_FIRST, last = STOP_LAST;
  int failures = test__failures_in_case;
  rng = seed ^ 0x5151;
  for (int r = first; r < last; r++) {
    spec *s = &specs[r];
    memset(s, 0, sizeof *s);
    s->flags = r % 3 == 0   ? 0
               : r % 3 == 1 ? CODA_LIST_STOP_ON_FAILURE
                            : CODA_LIST_PARALLEL;
    s->n = 24 + below(MAX_LEN - 23);
    for (int i = 0; i < s->n; i++) {
      int k = below(100);
      s->code[i] = k < 3 ? 'f' : k < 5 ? 'c' : 'o';
      s->sleep_us[i] = 5000;
    }
    s->code[s->n - 1] = 't'; /* a THREAD task ends each list */
  }
  static app_defs own;
  coda_app *a = make_app(&own);
  coda_app_set(a, CODA_OPT_PROCESS_WORKERS, 2);
  coda_app_set(a, CODA_OPT_TASK_DRAIN_TIMEOUT, 150);
  test_server s;
  REQUIRE(ts_start(&s, a) == 0);
  char buf[4096], path[64];
  stats base = read_stats(a);
  long added[CODA_EXEC_COUNT_] = {0};
  for (int r = first; r < last; r++) {
    snprintf(path, sizeof path, "/run?r=%d", r);
    CHECK_EQ_INT(get(s.port, path, buf, sizeof buf), 200);
    for (int i = 0; i < specs[r].n; i++)
      added[kind_of(specs[r].code[i])->executor]++;
  }
  tc_sleep_ms(100); /* under way: chains on both workers, more waiting */
  ts_stop(&s);
  stats now = read_stats(a);
  for (int ex = CODA_EXEC_LOOP; ex < CODA_EXEC_COUNT_; ex++) {
    CHECK_EQ_INT(now.v[ex][CODA_STAT_QUEUED], 0);
    CHECK_EQ_INT(now.v[ex][CODA_STAT_RUNNING], 0);
    CHECK_EQ_INT(ended(&now, ex) - ended(&base, ex), added[ex]);
  }
  CHECK(now.v[CODA_EXEC_PROCESS][CODA_STAT_DROPPED] > 0); /* it did stop them */
  CHECK_EQ_INT(check_journal(first, last, 1), 0);
  coda_app_free(a);
  if (test__failures_in_case != failures)
    say_seed();
}

int main(void) {
  tc_journal_path(journal_path, sizeof journal_path, "/tmp/coda-chain-journal");
  app = make_app(&app_tasks);
  coda_app_worker(app);     /* a PROCESS worker stops here */
  tc_workers_die_of_segv(); /* the crashes are on purpose */
  const char *s = getenv("CODA_CHAIN_SEED");
  seed = s ? strtoull(s, NULL, 0) : 0xC0DAC4A1ULL;
  if (seed == 0)
    seed = 1; /* xorshift never leaves 0 */
  unlink(journal_path);
  if (ts_start(&ts, app) != 0)
    return 1;
  static const test__case cases[] = {
      TEST_CASE(random_lists_on_three_workers_keep_order_and_account_for_every_task),
      TEST_CASE(random_lists_on_one_worker_keep_order_and_account_for_every_task),
      TEST_CASE(the_replaced_workers_still_run_chains),
      TEST_CASE(stopping_with_chains_in_flight_accounts_for_every_task),
  };
  int rc = test__run("chain", cases, sizeof cases / sizeof cases[0]);
  ts_stop(&ts);
  coda_app_free(app);
  unlink(journal_path);
  return rc;
}
