/*
 * kore_trivial.c - Kore side of bench/tasks.sh: the same routes as coda-demo's /plain and
 * /trivial, as a Kore 4 module built against the Debian package's headers
 * (/usr/include/kore, with the flags in /usr/share/kore/features) and loaded by
 * `kore -c kore.conf` (see bench/kore.conf.in).
 *
 * GET /trivial answers {"status":"queued"} and starts one kore_task that counts itself,
 * the closest Kore has to a fire-and-forget background task: the response is sent first,
 * then the task is handed to one of Kore's task threads. A task is not bound to the
 * request (that would make the request wait for it); a callback frees it when the task
 * thread closes its end of the task's socketpair. That is Kore's design: one socketpair
 * and one epoll registration per task.
 *
 * GET /stats answers {"runs":N}, the number of tasks that ran, so the benchmark can check
 * that every answered request's task ran. The counter is only touched by task threads
 * (atomically) and read by the worker.
 */
#include <kore/kore.h> /* first: http.h relies on what it includes */
#include <kore/http.h>
#include <kore/seccomp.h>
#include <kore/tasks.h>

#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

int plain(struct http_request *);
int trivial(struct http_request *);
int stats(struct http_request *);

static atomic_long runs;

/* Kore 4.1's worker sandbox allows clone but not clone3 or rseq, which glibc >= 2.34 uses
 * to start a thread: without these two rules the first kore_task_run() kills the worker
 * ("died from sandbox violation", syscall 435). Kore's documented way for a module to
 * extend the sandbox. */
KORE_SECCOMP_FILTER("bench", KORE_SYSCALL_ALLOW(clone3), KORE_SYSCALL_ALLOW(rseq), );

static const char plain_body[] = "{\"status\":\"ok\"}";
static const char queued_body[] = "{\"status\":\"queued\"}";

/* Runs on a Kore task thread. */
static int trivial_task(struct kore_task *t) {
  (void)t;
  atomic_fetch_add_explicit(&runs, 1, memory_order_relaxed);
  return KORE_RESULT_OK;
}

/*
 * Finished tasks are freed late. The task thread ends a task in kore_task_finish():
 * write-lock, close its end of the socketpair, unlock. The close wakes this worker, which
 * could destroy and free the task while that unlock is still touching the lock's memory
 * (glibc's rwlock unlock writes the lock word after releasing it): freeing at once made
 * the worker die of SIGSEGV under load. So a finished task's socketpair is closed at
 * once, but its lock and memory wait in a ring and are freed GRAVE_SLOTS tasks later
 * (well over 100 ms at the rates measured here).
 */
#define GRAVE_SLOTS 16384
static struct kore_task *grave[GRAVE_SLOTS];
static size_t grave_next;

/* Runs on the worker's event loop when the task's channel reports something. */
static void trivial_done(struct kore_task *t) {
  if (!kore_task_finished(t))
    return;
  /* Its descriptors go now (kore_task_handle() has stopped watching them; the task
   * thread closed fds[1] under the lock that kore_task_finished() just took); only the
   * lock and the memory wait. */
  close(t->fds[0]);
  t->fds[0] = -1;
  struct kore_task *old = grave[grave_next];
  grave[grave_next] = t;
  grave_next = (grave_next + 1) % GRAVE_SLOTS;
  if (old) {
    kore_task_destroy(old);
    kore_free(old);
  }
}

static int json(struct http_request *req, const char *body, size_t len) {
  http_response_header(req, "content-type", "application/json");
  http_response(req, 200, body, len);
  return KORE_RESULT_OK;
}

int plain(struct http_request *req) {
  return json(req, plain_body, sizeof plain_body - 1);
}

int trivial(struct http_request *req) {
  json(req, queued_body, sizeof queued_body - 1);
  struct kore_task *t = kore_malloc(sizeof *t);
  kore_task_create(t, trivial_task);
  kore_task_bind_callback(t, trivial_done);
  kore_task_run(t);
  return KORE_RESULT_OK;
}

int stats(struct http_request *req) {
  char body[64];
  int n = snprintf(body, sizeof body, "{\"runs\":%ld}", atomic_load(&runs));
  return json(req, body, (size_t)n);
}
