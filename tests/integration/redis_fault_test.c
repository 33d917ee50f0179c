/*
 * redis_fault_test.c - the Redis store when Redis itself fails: killed and
 * restarted (AOF, fsync always), down for a while, out of memory, and
 * replaced by its promoted replica. In every case no task whose 202 the
 * client received is lost, adds answer 503 with Retry-After (in bounded
 * time) while they cannot be stored, and the server carries on.
 *
 * The programs are real: redis-server processes started here on ephemeral
 * ports in temp dirs (tests/redis_server.c), crash_server processes as the
 * coda server and worker (tests/integration/node.c), clients on raw
 * sockets. The journal crash_server writes (one line per run that reached
 * its end) tells which jobs ran.
 */
#include "harness.h"
#include "node.h"
#include "redis_server.h"
#include "tcp_proxy.h"
#include "test.h"

#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CLIENTS 3
#define MAX_JOBS (1u << 20)
#define LEASE_MS 2000
#define FINAL_WAIT_MS 60000
/* An add that cannot be stored is answered within this (the store's
 * command timeout and the engine's wait for the batch are far shorter). */
#define REFUSAL_BOUND_MS 5000

static struct {
  char dir[PATH_MAX];
  char journal[PATH_MAX + 16];
  char log[PATH_MAX + 16];
  tc_node server, worker;
  int port; /* the server's */
  uint64_t *acked;
  atomic_uint_fast64_t next_job;
  atomic_int stop;
  atomic_long n_acked, n_rejected, n_other, n_no_retry_after;
  atomic_long plain_ok, plain_failed;
  atomic_ullong slowest_refusal_ms;
} g;

static volatile sig_atomic_t pids[2];

static void on_fatal_signal(int sig) {
  for (int i = 0; i < 2; i++)
    if (pids[i] > 0)
      kill((pid_t)pids[i], SIGKILL);
  signal(sig, SIG_DFL);
  raise(sig);
}

static void setup(const char *name) {
  memset(&g, 0, sizeof g);
  snprintf(g.dir, sizeof g.dir, "/tmp/coda-%s-XXXXXX", name);
  REQUIRE(mkdtemp(g.dir) != NULL);
  snprintf(g.journal, sizeof g.journal, "%s/journal", g.dir);
  snprintf(g.log, sizeof g.log, "%s/nodes.log", g.dir);
  g.acked = calloc(MAX_JOBS, sizeof *g.acked);
  REQUIRE(g.acked != NULL);
  atomic_store(&g.next_job, 1);
  signal(SIGTERM, on_fatal_signal);
  signal(SIGINT, on_fatal_signal);
  signal(SIGALRM, on_fatal_signal);
  alarm(280);
}

static void print_log(void) {
  char buf[6001];
  tc_read_file(g.log, buf, sizeof buf);
  fprintf(stderr, "  --- start of %s ---\n%s\n  ---\n", g.log, buf);
}

static void teardown(void) {
  if (g.server.pid > 0)
    tc_node_end(&g.server, SIGKILL, 1000);
  if (g.worker.pid > 0)
    tc_node_end(&g.worker, SIGKILL, 1000);
  pids[0] = pids[1] = 0;
  alarm(0);
  if (test__failures_in_case)
    print_log();
  tc_remove_tree(g.dir);
  free(g.acked);
  g.acked = NULL;
}

/* crash_server on uri: the server (HTTP) or a worker. */
static int start_node(tc_node *n, const char *uri, int worker) {
  char lease[16];
  snprintf(lease, sizeof lease, "%d", LEASE_MS);
  char *argv[] = {CODA_CRASH_SERVER, (char *)uri, g.journal, lease, NULL};
  char *worker_env[] = {"CRASH_SERVER_WORKER=1", NULL};
  int rc = tc_node_start(n, argv, worker ? worker_env : NULL, g.log, -1, 20000);
  pids[worker] = n->pid;
  if (!worker)
    g.port = n->port;
  return rc;
}

static int end_nodes(void) {
  int ok = 1;
  tc_node *n[2] = {&g.server, &g.worker};
  for (int i = 0; i < 2; i++) {
    if (n[i]->pid <= 0)
      continue;
    int st = tc_node_end(n[i], SIGTERM, 10000);
    ok &= st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    n[i]->pid = 0;
    pids[i] = 0;
  }
  return ok;
}

/* ---- load ----------------------------------------------------------------- */

static void note_refusal(const char *resp, uint64_t took_ms) {
  atomic_fetch_add(&g.n_rejected, 1);
  if (!strcasestr(resp, "\r\nRetry-After: "))
    atomic_fetch_add(&g.n_no_retry_after, 1);
  unsigned long long was = atomic_load(&g.slowest_refusal_ms);
  while (took_ms > was && !atomic_compare_exchange_weak(&g.slowest_refusal_ms, &was, took_ms)) {
  }
}

static void client_main(void *arg) {
  (void)arg;
  char buf[4096];
  while (!atomic_load(&g.stop)) {
    int fd = tc_connect(g.port, 10000);
    if (fd < 0) {
      tc_sleep_ms(5);
      continue;
    }
    while (!atomic_load(&g.stop)) {
      uint64_t job = atomic_fetch_add(&g.next_job, 1);
      if (job >= MAX_JOBS)
        break;
      uint64_t t0 = tc_now_ms(), v;
      int status = tc_post_job(fd, job, &v, buf, sizeof buf);
      if (status < 0)
        break;
      if (status == 202 && v > 0) {
        g.acked[job] = v;
        atomic_fetch_add(&g.n_acked, 1);
      } else if (status == 503) {
        note_refusal(buf, tc_now_ms() - t0);
        tc_sleep_ms(10); /* as Retry-After asks, roughly: no tight retry loop */
      } else if (atomic_fetch_add(&g.n_other, 1) < 5) {
        fprintf(stderr, "  unexpected answer to job %llu: %.300s\n",
                (unsigned long long)job, buf);
      }
    }
    close(fd);
  }
}

/* GET /plain and POST /mem, every 20 ms: neither needs the store. */
static void plain_main(void *arg) {
  (void)arg;
  char buf[2048];
  int turn = 0;
  while (!atomic_load(&g.stop)) {
    int fd = tc_connect(g.port, 3000);
    int ok = 0;
    if (fd >= 0) {
      const char *req = turn++ % 2 ? "GET /plain HTTP/1.1\r\nHost: f\r\n\r\n"
                                   : "POST /mem HTTP/1.1\r\nHost: f\r\nContent-Length: 0\r\n\r\n";
      ok = tc_send_str(fd, req) == 0 && tc_read_response(fd, buf, sizeof buf) > 0 &&
           (tc_status(buf) == 200 || tc_status(buf) == 202);
      close(fd);
    }
    atomic_fetch_add(ok ? &g.plain_ok : &g.plain_failed, 1);
    tc_sleep_ms(20);
  }
}

typedef struct {
  uv_thread_t clients[CLIENTS], plain;
} load;

static void load_start(load *l) {
  atomic_store(&g.stop, 0);
  for (int i = 0; i < CLIENTS; i++)
    uv_thread_create(&l->clients[i], client_main, NULL);
  uv_thread_create(&l->plain, plain_main, NULL);
}

static void load_stop(load *l) {
  atomic_store(&g.stop, 1);
  for (int i = 0; i < CLIENTS; i++)
    uv_thread_join(&l->clients[i]);
  uv_thread_join(&l->plain);
}

/* Every acknowledged task reads back succeeded on the server, and its job
 * is in the journal. Returns how many did not. */
static long check_all_acknowledged_ran(void) {
  uint64_t njobs = atomic_load(&g.next_job), start = tc_now_ms();
  long bad = 0;
  int fd = -1;
  for (uint64_t job = 1; job < njobs; job++) {
    if (!g.acked[job])
      continue;
    char state[32] = "";
    int attempts = 0;
    while (tc_now_ms() - start < FINAL_WAIT_MS) {
      if (fd < 0 && (fd = tc_connect(g.port, 5000)) < 0)
        break;
      tc_task_state(fd, g.acked[job], state, sizeof state, &attempts);
      if (!state[0]) {
        close(fd);
        fd = -1;
        continue;
      }
      if (strcmp(state, "succeeded") == 0 || strcmp(state, "not-found") == 0)
        break;
      tc_sleep_ms(50);
    }
    if (strcmp(state, "succeeded") != 0 && bad++ < 5)
      fprintf(stderr, "  job %llu (task %llu, acknowledged) is %s\n",
              (unsigned long long)job, (unsigned long long)g.acked[job],
              state[0] ? state : "unreadable");
  }
  if (fd >= 0)
    close(fd);
  /* The journal too: a run that reached its end for each. */
  size_t nruns = 0;
  long malformed = 0;
  run_line *runs = tc_journal_read(g.journal, &nruns, &malformed);
  unsigned char *ran = calloc(njobs, 1);
  for (size_t i = 0; ran && i < nruns; i++)
    if (runs[i].job < njobs)
      ran[runs[i].job] = 1;
  for (uint64_t job = 1; ran && job < njobs; job++)
    if (g.acked[job] && !ran[job] && bad++ < 10)
      fprintf(stderr, "  job %llu was acknowledged, and is not in the journal\n",
              (unsigned long long)job);
  free(ran);
  free(runs);
  printf("  %ld acknowledged, %ld refused with 503 (slowest refusal %llu ms), "
         "%ld other; /plain and /mem: %ld answered, %ld failed; %llu ms to check\n",
         atomic_load(&g.n_acked), atomic_load(&g.n_rejected),
         (unsigned long long)atomic_load(&g.slowest_refusal_ms), atomic_load(&g.n_other),
         atomic_load(&g.plain_ok), atomic_load(&g.plain_failed),
         (unsigned long long)(tc_now_ms() - start));
  return bad + malformed;
}

/* utime + stime of a process, in clock ticks. */
static long cpu_ticks(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  tc_read_file(path, buf, sizeof buf);
  const char *p = strrchr(buf, ')');
  unsigned long ut = 0, st = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
    return -1;
  return (long)(ut + st);
}

/* ---- the cases -------------------------------------------------------------- */

TEST(redis_killed_and_restarted_with_aof_always_loses_nothing_acknowledged) {
  setup("redis-aof");
  tc_redis r;
  REQUIRE(tc_redis_start(&r, "appendonly yes\nappendfsync always\n") == 0);
  char uri[256];
  tc_redis_uri(&r, uri, sizeof uri, "/0?prefix=aof");
  CHECK_EQ_INT(start_node(&g.server, uri, 0), 0);
  CHECK_EQ_INT(start_node(&g.worker, uri, 1), 0);
  if (test__failures_in_case)
    goto out;
  load l;
  load_start(&l);
  for (int k = 0; k < 5; k++) {
    tc_sleep_ms(300 + rand() % 300);
    tc_redis_kill(&r);
    tc_sleep_ms(500); /* down: adds must be refused, not hang */
    CHECK_EQ_INT(tc_redis_restart(&r), 0);
    printf("  redis killed and restarted (%d): %ld acknowledged, %ld refused\n", k + 1,
           atomic_load(&g.n_acked), atomic_load(&g.n_rejected));
    fflush(stdout);
  }
  tc_sleep_ms(500);
  load_stop(&l);

  /* Down with no load: the store retries with backoff, not in a loop. */
  tc_redis_kill(&r);
  long c0 = cpu_ticks(g.server.pid) + cpu_ticks(g.worker.pid);
  uint64_t t0 = tc_now_ms();
  tc_sleep_ms(2000);
  long used_ms = (cpu_ticks(g.server.pid) + cpu_ticks(g.worker.pid) - c0) * 1000 /
                 sysconf(_SC_CLK_TCK);
  printf("  redis down for %llu ms with no load: server and worker used %ld ms of CPU\n",
         (unsigned long long)(tc_now_ms() - t0), used_ms);
  CHECK(used_ms < 400); /* a busy retry loop would use the whole 2 s */
  CHECK_EQ_INT(tc_redis_restart(&r), 0);

  CHECK_EQ_INT(check_all_acknowledged_ran(), 0);
  CHECK(atomic_load(&g.n_acked) >= 100);
  CHECK(atomic_load(&g.n_rejected) > 0); /* adds came while it was down */
  CHECK_EQ_INT(atomic_load(&g.n_no_retry_after), 0);
  CHECK(atomic_load(&g.slowest_refusal_ms) <= REFUSAL_BOUND_MS);
  CHECK_EQ_INT(atomic_load(&g.n_other), 0);
  CHECK_EQ_INT(atomic_load(&g.plain_failed), 0);
  CHECK(atomic_load(&g.plain_ok) > 50);
  CHECK(end_nodes());
out:
  teardown();
  tc_redis_remove(&r);
}

TEST(redis_out_of_memory_refuses_adds_with_503_and_loses_nothing) {
  setup("redis-oom");
  tc_redis r;
  REQUIRE(tc_redis_start(&r, "maxmemory 4mb\nmaxmemory-policy noeviction\n") == 0);
  char uri[256];
  tc_redis_uri(&r, uri, sizeof uri, "/0?prefix=oom");
  CHECK_EQ_INT(start_node(&g.server, uri, 0), 0);
  if (test__failures_in_case)
    goto out;
  load l;
  load_start(&l);
  /* Finished tasks are kept (by age), so memory only grows: until refused. */
  uint64_t end = tc_now_ms() + 120000;
  while (atomic_load(&g.n_rejected) < 20 && tc_now_ms() < end)
    tc_sleep_ms(20);
  long acked_at_oom = atomic_load(&g.n_acked);
  tc_sleep_ms(300);
  load_stop(&l);
  printf("  out of memory after %ld acknowledged\n", acked_at_oom);
  CHECK(atomic_load(&g.n_rejected) >= 20);
  /* The operator gives it memory: everything acknowledged runs. */
  redisReply *rep = tc_redis_cmd(&r, "CONFIG SET maxmemory 0");
  CHECK(rep && rep->type == REDIS_REPLY_STATUS);
  if (rep)
    freeReplyObject(rep);
  CHECK_EQ_INT(check_all_acknowledged_ran(), 0);
  CHECK_EQ_INT(atomic_load(&g.n_no_retry_after), 0);
  CHECK_EQ_INT(atomic_load(&g.n_other), 0);
  CHECK_EQ_INT(atomic_load(&g.plain_failed), 0);
  CHECK(end_nodes());
out:
  teardown();
  tc_redis_remove(&r);
}

TEST(a_promoted_replica_has_every_task_acknowledged_with_replicas_1) {
  setup("redis-failover");
  tc_redis primary, replica;
  REQUIRE(tc_redis_start(&primary, "appendonly no\n") == 0);
  char conf[128];
  snprintf(conf, sizeof conf, "appendonly no\nreplicaof 127.0.0.1 %d\n", primary.port);
  REQUIRE(tc_redis_start(&replica, conf) == 0);
  /* Wait until the replica is in sync, or WAIT 1 cannot succeed. */
  uint64_t end = tc_now_ms() + 10000;
  int linked = 0;
  while (!linked && tc_now_ms() < end) {
    redisReply *rep = tc_redis_cmd(&replica, "INFO replication");
    linked = rep && rep->type == REDIS_REPLY_STRING &&
             strstr(rep->str, "master_link_status:up") != NULL;
    if (rep)
      freeReplyObject(rep);
    if (!linked)
      tc_sleep_ms(20);
  }
  CHECK(linked);
  /* The server reaches "the primary" through an address that the failover
   * moves to the replica, as a virtual IP or a DNS name would. */
  tc_proxy *addr = tc_proxy_start(primary.port);
  REQUIRE(addr != NULL);
  char uri[256];
  snprintf(uri, sizeof uri, "redis://127.0.0.1:%d/0?prefix=fo&replicas=1",
           tc_proxy_port(addr));
  CHECK_EQ_INT(start_node(&g.server, uri, 0), 0);
  if (test__failures_in_case)
    goto out;
  load l;
  load_start(&l);
  tc_sleep_ms(1500);
  long before = atomic_load(&g.n_acked);
  tc_redis_kill(&primary);
  redisReply *rep = tc_redis_cmd(&replica, "REPLICAOF NO ONE");
  CHECK(rep && rep->type == REDIS_REPLY_STATUS);
  if (rep)
    freeReplyObject(rep);
  tc_proxy_retarget(addr, replica.port);
  printf("  primary killed after %ld acknowledged; replica promoted\n", before);
  /* With no replica of its own the new primary cannot acknowledge
   * (replicas=1): adds are refused, not acknowledged and at risk. */
  tc_sleep_ms(500);
  long alone = atomic_load(&g.n_acked);
  /* The old primary comes back as the new one's replica: adds work again. */
  CHECK_EQ_INT(tc_redis_restart(&primary), 0);
  rep = tc_redis_cmd(&primary, "REPLICAOF 127.0.0.1 %d", replica.port);
  CHECK(rep && rep->type == REDIS_REPLY_STATUS);
  if (rep)
    freeReplyObject(rep);
  end = tc_now_ms() + 20000;
  while (atomic_load(&g.n_acked) < alone + 100 && tc_now_ms() < end)
    tc_sleep_ms(20);
  load_stop(&l);
  printf("  %ld acknowledged by the promoted replica alone; %ld once it had a replica\n",
         alone - before, atomic_load(&g.n_acked) - alone);
  CHECK(before >= 50);
  CHECK(atomic_load(&g.n_acked) >= alone + 100);
  CHECK_EQ_INT(check_all_acknowledged_ran(), 0);
  CHECK_EQ_INT(atomic_load(&g.n_other), 0);
  CHECK(end_nodes());
out:
  teardown();
  tc_proxy_stop(addr);
  tc_redis_remove(&replica);
  tc_redis_remove(&primary);
}

RUN_TESTS(redis_fault,
          TEST_CASE(redis_killed_and_restarted_with_aof_always_loses_nothing_acknowledged),
          TEST_CASE(redis_out_of_memory_refuses_adds_with_503_and_loses_nothing),
          TEST_CASE(a_promoted_replica_has_every_task_acknowledged_with_replicas_1))
