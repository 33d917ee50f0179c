/*
 * coda-demo - the seeds' examples in C, and the program `make run` starts.
 *
 *   coda-demo [--listen HOST:PORT] [--threads N] [--store memory|sqlite:PATH] [--quiet]
 *             [--queues a,b] [--tick MS] [--admin-token T] [--log-format text|json]
 *   coda-demo --worker --store URI [--queues a,b]
 *
 * A worker serves no HTTP: it registers the same task definitions (it must
 * know every name it may claim) and runs the durable tasks of its queues
 * that any process sharing the store added, until SIGTERM or SIGINT.
 *
 * Routes are listed by GET /. Handlers run on the event loop threads and
 * never block; the slow work is in background tasks that start once the
 * response has been written.
 */
#include <coda.h>

#include "webhook.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

static coda_app *app;
static atomic_long trivial_runs, tick_runs;
static coda_task_def *tick_def, *trivial_def, *email_def, *cpu_def, *profile_def,
    *notify_def, *upload_def, *webhook_def, *report_def;

static const char plain_body[] = "{\"status\":\"ok\"}";
static const char queued_body[] = "{\"status\":\"queued\"}";
/* The seeds' bodies, byte for byte (Starlette's JSONResponse spacing). */
static const char thread_body[] =
    "{\"status\": \"queued\", \"message\": \"Email is sending in background\"}";
static const char process_body[] =
    "{\"status\": \"queued\", \"message\": \"Heavy calculation started\"}";

static const char index_body[] =
    "{\"name\":\"coda-demo\",\"routes\":["
    "{\"method\":\"GET\",\"path\":\"/\",\"does\":\"this list\"},"
    "{\"method\":\"GET\",\"path\":\"/plain\",\"does\":\"{\\\"status\\\":\\\"ok\\\"}, no task\"},"
    "{\"method\":\"GET\",\"path\":\"/trivial\",\"does\":\"one trivial thread task\"},"
    "{\"method\":\"GET\",\"path\":\"/thread/\",\"does\":\"2 s blocking email on the thread executor\"},"
    "{\"method\":\"GET\",\"path\":\"/process/\",\"does\":\"cpu_heavy_task on a worker process\"},"
    "{\"method\":\"POST\",\"path\":\"/register\",\"does\":\"201, then email, profile, admin note in order\"},"
    "{\"method\":\"POST\",\"path\":\"/upload\",\"does\":\"202, saves the body, processes it in a task\"},"
    "{\"method\":\"POST\",\"path\":\"/orders\",\"does\":\"201, then a webhook POST to the given URL\"},"
    "{\"method\":\"POST\",\"path\":\"/echo\",\"does\":\"the request body back, verbatim\"},"
    "{\"method\":\"POST\",\"path\":\"/reports\",\"does\":\"202 + Location, a durable report task that fails twice, then succeeds (max_attempts: 2 leaves it dead)\"},"
    "{\"method\":\"GET\",\"path\":\"/tasks/{id}\",\"does\":\"a durable task's state, attempts, progress, result\"},"
    "{\"method\":\"GET\",\"path\":\"/tasks?state=dead\",\"does\":\"durable tasks in one state, by id (after=, limit=)\"},"
    "{\"method\":\"GET\",\"path\":\"/tasks?name=tick\",\"does\":\"the runs of the periodic tick task and their due times, by id (state=, after=, limit=)\"},"
    "{\"method\":\"GET\",\"path\":\"/stats\",\"does\":\"request and task counters\"},"
    "{\"method\":\"GET\",\"path\":\"/metrics\",\"does\":\"Prometheus metrics (admin token: Authorization: Bearer)\"},"
    "{\"method\":\"GET\",\"path\":\"/coda/\",\"does\":\"the dashboard (admin token: open the link printed at start)\"},"
    "{\"method\":\"GET\",\"path\":\"/coda/api/session\",\"does\":\"the CSRF token for the dashboard's actions, version, store (admin token)\"},"
    "{\"method\":\"GET\",\"path\":\"/coda/api/overview\",\"does\":\"counts by state, processed and failed totals and rates, queues, nodes (admin token)\"},"
    "{\"method\":\"GET\",\"path\":\"/coda/api/queues\",\"does\":\"each queue: counts, latency, paused (admin token)\"},"
    "{\"method\":\"POST\",\"path\":\"/coda/api/queues/{name}/pause\",\"does\":\"stop claiming from a queue (admin token; /resume to go on)\"},"
    "{\"method\":\"GET\",\"path\":\"/coda/api/tasks?state=dead\",\"does\":\"durable tasks paged (state=, queue=, name=, id=, after=, limit=) (admin token)\"},"
    "{\"method\":\"GET\",\"path\":\"/coda/api/tasks/{id}\",\"does\":\"one task in full: arguments, errors, result, the request that added it (admin token)\"},"
    "{\"method\":\"POST\",\"path\":\"/coda/api/tasks/{id}/retry\",\"does\":\"run a task again now (admin token; also /cancel, /delete)\"},"
    "{\"method\":\"POST\",\"path\":\"/coda/api/tasks/retry?state=dead\",\"does\":\"retry every dead task (queue= for one queue; tasks/delete?state= deletes) (admin token)\"},"
    "{\"method\":\"GET\",\"path\":\"/coda/api/nodes\",\"does\":\"the servers and workers running tasks (admin token)\"},"
    "{\"method\":\"GET\",\"path\":\"/coda/api/schedules\",\"does\":\"the periodic tasks and their next run (admin token)\"}"
    "]}";

/* ---- tasks (they run after the response is sent) ---------------------- */

static int trivial_task(coda_task *t) {
  (void)t;
  atomic_fetch_add_explicit(&trivial_runs, 1, memory_order_relaxed);
  return 0;
}

/* The periodic task (every second, --tick): counts itself. Its argument is
 * its due time; GET /tasks?name=tick lists its runs. */
static int tick_task(coda_task *t) {
  (void)t;
  atomic_fetch_add_explicit(&tick_runs, 1, memory_order_relaxed);
  return 0;
}

/* The Flama seed's blocking_io_task: a 2 s "email" on a thread. */
static int blocking_io_task(coda_task *t) {
  const char *email = coda_task_str(t, 0);
  coda_log(app, CODA_LOG_INFO, "[Thread] \u23f3 Starting email to %s...", email);
  int64_t ms = coda_task_int(t, 1);
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL); /* stands for the SMTP round trips */
  coda_log(app, CODA_LOG_INFO, "[Thread] \u2705 Email sent to %s!", email);
  return 0;
}

/* The Flama seed's cpu_heavy_task, on a worker process. */
static int cpu_heavy_task(coda_task *t) {
  int64_t id = coda_task_int(t, 0);
  coda_log(NULL, CODA_LOG_INFO, "[Process] \u2699\ufe0f  Processing data %lld on PID %d...",
           (long long)id, (int)getpid());
  unsigned long long sum = 0;
  for (unsigned long long i = 0; i < 10000000ull; i++)
    sum += i * i;
  coda_log(NULL, CODA_LOG_INFO, "[Process] \u2705 Data %lld processed! (sum %llu)",
           (long long)id, sum);
  return 0;
}

static int create_profile_task(coda_task *t) {
  coda_log(app, CODA_LOG_INFO, "[Thread] profile created for %s", coda_task_str(t, 0));
  return 0;
}

/* Runs on the event loop: quick, non-blocking. */
static int notify_admin_task(coda_task *t) {
  coda_log(app, CODA_LOG_INFO, "[Loop] admin notified: new user %s", coda_task_str(t, 0));
  return 0;
}

/* Processes an uploaded file, then removes it. */
static int process_upload_task(coda_task *t) {
  const char *path = coda_task_str(t, 0);
  FILE *f = fopen(path, "rb");
  if (!f)
    return coda_task_fail(t, "cannot open %s", path);
  long bytes = 0, lines = 0;
  int c;
  while ((c = fgetc(f)) != EOF) {
    bytes++;
    lines += c == '\n';
  }
  fclose(f);
  unlink(path);
  coda_log(app, CODA_LOG_INFO, "[Thread] upload %s processed: %ld bytes, %ld lines", path,
           bytes, lines);
  return 0;
}

/* Delivers an order's webhook from the event loop, without blocking it. */
static int deliver_webhook_task(coda_task *t) {
  size_t len;
  const char *body = coda_task_bytes(t, 1, &len);
  coda_log(app, CODA_LOG_INFO, "[Loop] delivering webhook to %s", coda_task_str(t, 0));
  return demo_webhook_post(t, coda_task_str(t, 0), body, len);
}

/* A durable report: fails on its first two attempts (a flaky upstream),
 * so the retries show in the log and in GET /tasks/{id}; then builds the
 * "report" in five steps, reporting progress, and stores a result. With
 * max_attempts 1 or 2 it ends dead, and a retry from the dashboard or
 * coda-admin (one more attempt) makes it succeed. The error names the
 * report: whatever the client sent, which the dashboard must show as text. */
static int build_report_task(coda_task *t) {
  const char *name = coda_task_str(t, 0);
  int attempt = coda_task_attempt(t);
  coda_log(app, CODA_LOG_INFO, "[Report] %s: attempt %d (task %llu)", name, attempt,
           (unsigned long long)coda_task_id(t));
  if (attempt <= 2)
    return coda_task_fail(t, "upstream unavailable (attempt %d) for report %s", attempt, name);
  for (int step = 1; step <= 5; step++) {
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
    coda_task_progress(t, step / 5.0);
  }
  json_t *out = json_pack("{s:s, s:i}", "report", name, "rows", 42);
  char *result = out ? json_dumps(out, JSON_COMPACT) : NULL;
  json_decref(out);
  if (!result)
    return coda_task_fail(t, "out of memory");
  coda_task_set_result(t, result, strlen(result));
  free(result);
  coda_log(app, CODA_LOG_INFO, "[Report] %s: done", name);
  return 0;
}

/* ---- handlers ------------------------------------------------------------ */

static int static_json(coda_res *res, int status, const char *body, size_t len) {
  coda_res_status(res, status);
  coda_res_header(res, "Content-Type", "application/json");
  return coda_res_body_static(res, body, len);
}

static int get_index(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  return static_json(res, 200, index_body, sizeof index_body - 1);
}

static int get_plain(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  return static_json(res, 200, plain_body, sizeof plain_body - 1);
}

static int get_trivial(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  int rc = coda_res_add_task(res, trivial_def, "");
  return rc ? rc : static_json(res, 200, queued_body, sizeof queued_body - 1);
}

static int get_thread(coda_req *req, coda_res *res, void *user) {
  (void)user;
  const char *to = coda_req_query(req, "email");
  int rc = coda_res_add_task(res, email_def, "si", to ? to : "user@example.com", (int64_t)2000);
  return rc ? rc : static_json(res, 200, thread_body, sizeof thread_body - 1);
}

static int get_process(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  int rc = coda_res_add_task(res, cpu_def, "i", (int64_t)101);
  return rc ? rc : static_json(res, 200, process_body, sizeof process_body - 1);
}

/* POST /register {"email": "..."}: 201 now; email, profile and admin note
 * after, in that order, across the thread and loop executors. */
static int post_register(coda_req *req, coda_res *res, void *user) {
  (void)user;
  size_t len;
  const char *body = coda_req_body(req, &len);
  json_t *in = json_loadb(body, len, 0, NULL);
  const char *email = in ? json_string_value(json_object_get(in, "email")) : NULL;
  if (!email) {
    json_decref(in);
    return coda_res_json_text(res, 422, "{\"error\":\"body must be {\\\"email\\\": ...}\"}");
  }
  int rc = coda_res_add_task(res, email_def, "si", email, (int64_t)300);
  if (rc == 0)
    rc = coda_res_add_task(res, profile_def, "s", email);
  if (rc == 0)
    rc = coda_res_add_task(res, notify_def, "s", email);
  json_t *out = json_pack("{s:s, s:s}", "registered", email, "message",
                          "Registration successful");
  json_decref(in);
  if (rc == 0)
    rc = coda_res_json(res, 201, out);
  json_decref(out);
  return rc;
}

/* POST /upload: the body is saved to a temp file now (small writes; a real
 * service would stream it), 202 Accepted, and processed in a task. */
static int post_upload(coda_req *req, coda_res *res, void *user) {
  (void)user;
  size_t len;
  const char *body = coda_req_body(req, &len);
  char path[] = "/tmp/coda-upload-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0)
    return CODA_EIO;
  ssize_t w = write(fd, body, len);
  close(fd);
  if (w != (ssize_t)len) {
    unlink(path);
    return CODA_EIO;
  }
  int rc = coda_res_add_task(res, upload_def, "s", path);
  if (rc) {
    unlink(path);
    return rc;
  }
  json_t *out = json_pack("{s:s, s:I}", "file", path, "bytes", (json_int_t)len);
  rc = coda_res_json(res, 202, out);
  json_decref(out);
  return rc;
}

/* POST /orders {"item": "...", "webhook": "http://..."}: 201 now; the
 * webhook is POSTed after the response, from a LOOP task. */
static int post_orders(coda_req *req, coda_res *res, void *user) {
  (void)user;
  static atomic_long next_order;
  size_t len;
  const char *body = coda_req_body(req, &len);
  json_t *in = json_loadb(body, len, 0, NULL);
  const char *url = in ? json_string_value(json_object_get(in, "webhook")) : NULL;
  const char *item = in ? json_string_value(json_object_get(in, "item")) : NULL;
  if (!url || strncmp(url, "http://", 7) != 0) {
    json_decref(in);
    return coda_res_json_text(res, 422, "{\"error\":\"webhook must be an http:// URL\"}");
  }
  long id = atomic_fetch_add(&next_order, 1) + 1;
  json_t *event = json_pack("{s:s, s:I, s:s?}", "event", "order.created", "order",
                            (json_int_t)id, "item", item);
  char *payload = json_dumps(event, JSON_COMPACT);
  int rc = payload ? coda_res_add_task(res, webhook_def, "sb", url, payload, strlen(payload))
                   : CODA_ENOMEM;
  free(payload);
  json_decref(event);
  json_decref(in);
  if (rc)
    return rc;
  json_t *out = json_pack("{s:I, s:s}", "order", (json_int_t)id, "status", "created");
  rc = coda_res_json(res, 201, out);
  json_decref(out);
  return rc;
}

/* POST /reports {"name": "...", "max_attempts": N}: the task is in the
 * store before the 202 leaves; the client follows Location. An
 * Idempotency-Key header makes a retried POST return the first task
 * instead of starting a second one. max_attempts (1-100, default the
 * definition's 5) below 3 makes a task that ends dead. */
static int post_reports(coda_req *req, coda_res *res, void *user) {
  (void)user;
  size_t len;
  const char *body = coda_req_body(req, &len);
  json_t *in = json_loadb(body, len, 0, NULL);
  const char *name = in ? json_string_value(json_object_get(in, "name")) : NULL;
  json_t *max = in ? json_object_get(in, "max_attempts") : NULL;
  if (max && (!json_is_integer(max) || json_integer_value(max) < 1 ||
              json_integer_value(max) > 100)) {
    json_decref(in);
    return coda_res_json_text(res, 422, "{\"error\":\"max_attempts: 1 to 100\"}");
  }
  coda_task_opts opts = CODA_TASK_OPTS_INIT(.flags = CODA_TASK_DURABLE,
                         .key = coda_req_header(req, "Idempotency-Key"),
                         .max_attempts = max ? (int)json_integer_value(max) : 0);
  int rc = coda_res_add_task_opts(res, report_def, &opts, "s", name ? name : "monthly");
  json_decref(in);
  if (rc)
    return rc; /* 503 + Retry-After when full or the store cannot write */
  char location[64];
  snprintf(location, sizeof location, "/tasks/%llu", (unsigned long long)opts.id);
  coda_res_header(res, "Location", location);
  json_t *out = json_pack("{s:I, s:s}", "id", (json_int_t)opts.id, "status", location);
  rc = coda_res_json(res, 202, out);
  json_decref(out);
  return rc;
}

/* GET /tasks/{id}: the durable task's status, read from the store. */
static int get_task(coda_req *req, coda_res *res, void *user) {
  (void)user;
  char *end;
  const char *param = coda_req_param(req, "id");
  unsigned long long id = strtoull(param, &end, 10);
  coda_task_info *info;
  if (*end || coda_task_get(app, id, &info) != 0)
    return coda_res_json_text(res, 404, "{\"error\":\"no such task\"}");
  char buf[4096];
  size_t n = coda_task_info_json(info, buf, sizeof buf);
  coda_task_info_free(info);
  coda_res_header(res, "Content-Type", "application/json");
  return coda_res_body(res, buf, n < sizeof buf ? n : sizeof buf - 1);
}

/* A listed task as JSON, with the due time of a periodic task (from its
 * key, "periodic:NAME:DUE"). */
static int add_listed(const coda_task_info *info, void *user) {
  char buf[4096];
  size_t n = coda_task_info_json(info, buf, sizeof buf);
  json_t *item = n < sizeof buf ? json_loadb(buf, n, 0, NULL) : NULL;
  const char *due = info->key && strncmp(info->key, "periodic:", 9) == 0
                        ? strrchr(info->key, ':')
                        : NULL;
  if (item && due)
    json_object_set_new(item, "due", json_integer(strtoll(due + 1, NULL, 10)));
  if (item)
    json_array_append_new(user, item);
  return 0;
}

/* GET /tasks?state=dead&name=tick&after=ID&limit=N: durable tasks by state
 * (the dead ones when neither is given) and definition name, by increasing
 * id; page with after=<next_after>. The ids of periodic tasks derive from
 * their keys, so that is not the order of their due times: each carries
 * its "due" time. */
static int get_tasks(coda_req *req, coda_res *res, void *user) {
  (void)user;
  static const char *const states[] = {"queued", "running", "succeeded", "failed", "dead"};
  const char *state_name = coda_req_query(req, "state");
  const char *name = coda_req_query(req, "name");
  const char *after = coda_req_query(req, "after");
  const char *limit = coda_req_query(req, "limit");
  if (!state_name && !name)
    state_name = "dead";
  int state = -1;
  for (int i = 0; state_name && i < 5; i++)
    if (strcmp(state_name, states[i]) == 0)
      state = i;
  long n = limit ? strtol(limit, NULL, 10) : 50;
  if ((state_name && state < 0) || (name && !*name) || n < 1 || n > 1000)
    return coda_res_json_text(res, 422, "{\"error\":\"state: queued, running, succeeded, "
                                        "failed or dead; name: a task's; limit: 1..1000\"}");
  json_t *list = json_array();
  coda_task_filter f = CODA_TASK_FILTER_INIT(
      .states = state >= 0 ? CODA_STATE_BIT(state) : 0, .name = name,
      .after_id = after ? strtoull(after, NULL, 10) : 0, .limit = (int)n);
  int rc = coda_task_find(app, &f, add_listed, list);
  if (rc < 0) {
    json_decref(list);
    return rc;
  }
  size_t got = json_array_size(list);
  json_t *last = got ? json_object_get(json_array_get(list, got - 1), "id") : NULL;
  json_t *out = json_pack("{s:s?, s:s?, s:o, s:O?}", "state", state >= 0 ? states[state] : NULL,
                          "name", name, "tasks", list, "next_after",
                          got == (size_t)n ? last : NULL);
  rc = coda_res_json(res, 200, out);
  json_decref(out);
  return rc;
}

static int post_echo(coda_req *req, coda_res *res, void *user) {
  (void)user;
  size_t len;
  const char *body = coda_req_body(req, &len);
  const char *type = coda_req_header(req, "Content-Type");
  coda_res_header(res, "Content-Type", type ? type : "application/octet-stream");
  return coda_res_body(res, body, len);
}

static int get_stats(coda_req *req, coda_res *res, void *user) {
  (void)req, (void)user;
  char buf[4096];
  size_t n = coda_stats_json(app, buf, sizeof buf);
  coda_res_header(res, "Content-Type", "application/json");
  return coda_res_body(res, buf, n < sizeof buf ? n : sizeof buf - 1);
}

/* ---- main ---------------------------------------------------------------- */

static void usage(const char *argv0) {
  fprintf(
      stderr,
      "usage: %s [--listen HOST:PORT] [--threads N] [--store URI] [--queues a,b] "
      "[--quiet] [--tick MS] [--admin-token TOKEN] [--no-metrics]\n"
      "          [--log-format text|json]\n"
      "       %s --worker --store URI [--queues a,b] [--threads N]\n"
      "  --listen   address to serve on (default 127.0.0.1:8000; port 0 = any)\n"
      "  --threads  event loops, one per thread (default: one per core)\n"
      "  --store    durable tasks: memory, sqlite:PATH or redis://HOST:PORT[/DB][?prefix=&replicas=]\n"
      "             (default sqlite:data/coda.db)\n"
      "  --queues   the durable task queues this process runs, by preference "
      "(default: all)\n"
      "  --worker   no HTTP: run durable tasks only, until SIGTERM\n"
      "  --quiet    no access log\n"
      "  --tick     the periodic tick task's interval in ms (default 1000; 0: off)\n"
      "  --admin-token  the token of /metrics, the dashboard (/coda/) and the admin API\n"
      "             (visible in `ps`: prefer the environment's CODA_ADMIN_TOKEN)\n"
      "             (default $CODA_ADMIN_TOKEN, else a new one, printed with the link)\n"
      "  --no-metrics  count no metrics (CODA_OPT_METRICS 0; for bench/metrics.sh)\n"
      "  --log-format  text: uvicorn-style lines (default); json: one JSON object per line\n"
      "             with time, level, message, and request, task and trace ids\n",
      argv0, argv0);
}

static int register_tasks(void) {
  tick_def = coda_app_task(app, "tick", tick_task, CODA_EXEC_THREAD);
  trivial_def = coda_app_task(app, "trivial", trivial_task, CODA_EXEC_THREAD);
  email_def = coda_app_task(app, "blocking_io_task", blocking_io_task, CODA_EXEC_THREAD);
  cpu_def = coda_app_task(app, "cpu_heavy_task", cpu_heavy_task, CODA_EXEC_PROCESS);
  profile_def = coda_app_task(app, "create_profile", create_profile_task, CODA_EXEC_THREAD);
  notify_def = coda_app_task(app, "notify_admin", notify_admin_task, CODA_EXEC_LOOP);
  upload_def = coda_app_task(app, "process_upload", process_upload_task, CODA_EXEC_THREAD);
  webhook_def = coda_app_task(app, "deliver_webhook", deliver_webhook_task, CODA_EXEC_LOOP);
  coda_task_def_timeout(webhook_def, 15000);
  report_def = coda_app_task(app, "build_report", build_report_task, CODA_EXEC_THREAD);
  coda_task_def_retry(report_def, 5, 1000, 10000); /* ~1 s, ~2 s, ... between attempts */
  return tick_def && trivial_def && email_def && cpu_def && profile_def && notify_def && upload_def &&
                 webhook_def && report_def
             ? 0
             : CODA_ENOMEM;
}

static int register_routes(void) {
  static const struct {
    const char *method, *path;
    coda_handler fn;
  } routes[] = {
      {"GET", "/", get_index},         {"GET", "/plain", get_plain},
      {"GET", "/trivial", get_trivial}, {"GET", "/thread/", get_thread},
      {"GET", "/process/", get_process}, {"POST", "/register", post_register},
      {"POST", "/upload", post_upload}, {"POST", "/orders", post_orders},
      {"POST", "/echo", post_echo},     {"POST", "/reports", post_reports},
      {"GET", "/tasks/{id}", get_task}, {"GET", "/tasks", get_tasks},
      {"GET", "/stats", get_stats},
  };
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    int rc = coda_app_route(app, routes[i].method, routes[i].path, routes[i].fn, NULL);
    if (rc)
      return rc;
  }
  return 0;
}

/* The dashboard link, as Jupyter prints its own: with the token when it
 * was made up here (the operator has no other way to learn it), without
 * when the operator chose it. */
static void print_admin_link(const char *listen, int token_given) {
  const char *colon = strrchr(listen, ':');
  int hlen = colon ? (int)(colon - listen) : (int)strlen(listen);
  const char *host = listen;
  if (hlen == 7 && strncmp(listen, "0.0.0.0", 7) == 0)
    host = "127.0.0.1", hlen = 9;
  if (token_given)
    fprintf(stderr, "coda-demo: dashboard at http://%.*s:%d/coda/?token=<your admin token>\n",
            hlen, host, coda_app_port(app));
  else
    fprintf(stderr, "coda-demo: dashboard at http://%.*s:%d/coda/?token=%s\n", hlen, host,
            coda_app_port(app), coda_app_admin_token(app));
}

int main(int argc, char **argv) {
  const char *listen = "127.0.0.1:8000";
  const char *store = "sqlite:data/coda.db";
  const char *queues = NULL;
  const char *admin_token = getenv("CODA_ADMIN_TOKEN");
  long threads = 0;
  int access_log = 1, worker = 0, metrics = 1, log_json = 0;
  long tick_ms = 1000;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
      listen = argv[++i];
    } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = strtol(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc) {
      store = argv[++i];
    } else if (strcmp(argv[i], "--queues") == 0 && i + 1 < argc) {
      queues = argv[++i];
    } else if (strcmp(argv[i], "--worker") == 0) {
      worker = 1;
    } else if (strcmp(argv[i], "--quiet") == 0) {
      access_log = 0;
    } else if (strcmp(argv[i], "--tick") == 0 && i + 1 < argc) {
      tick_ms = strtol(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--admin-token") == 0 && i + 1 < argc) {
      admin_token = argv[++i];
    } else if (strcmp(argv[i], "--log-format") == 0 && i + 1 < argc &&
               (strcmp(argv[i + 1], "text") == 0 || strcmp(argv[i + 1], "json") == 0)) {
      log_json = strcmp(argv[++i], "json") == 0;
    } else if (strcmp(argv[i], "--no-metrics") == 0) {
      metrics = 0;
    } else {
      usage(argv[0]);
      return 2;
    }
  }
  app = coda_app_new();
  if (!app) {
    fprintf(stderr, "coda-demo: out of memory\n");
    return 1;
  }
  /* Before coda_app_worker(): the format is the server's to pass on. */
  int rc = coda_app_set(app, CODA_OPT_LOG_FORMAT, log_json);
  if (rc == 0)
    rc = register_tasks();
  if (rc == 0)
    coda_app_worker(app); /* a process worker stops here */
  if (rc == 0)
    rc = coda_app_listen(app, worker ? NULL : listen); /* NULL: tasks only */
  if (rc == 0 && queues && (rc = coda_app_queues(app, queues)) != 0)
    fprintf(stderr, "coda-demo: --queues %s: queue names are A-Z a-z 0-9 _ . -\n",
            queues);
  if (rc == 0 && threads > 0)
    rc = coda_app_set(app, CODA_OPT_THREADS, threads);
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_ACCESS_LOG, access_log);
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_METRICS, metrics);
  if (rc == 0 && (rc = coda_app_store(app, store)) != 0)
    fprintf(stderr, "coda-demo: store %s: %s\n", store, coda_app_store_error(app));
  if (rc == 0 && !worker)
    rc = register_routes();
  if (rc == 0 && !worker && (rc = coda_app_admin(app, admin_token)) != 0)
    fprintf(stderr, "coda-demo: admin token: 16 to 128 characters of A-Z a-z 0-9 - . _ ~\n");
  if (rc == 0 && tick_ms > 0 && (rc = coda_app_every(app, tick_def, tick_ms)) != 0)
    fprintf(stderr, "coda-demo: --tick %ld: at least 10 ms, or 0 for none\n", tick_ms);
  /* Bound now (every configuration call is made: the server is built from
   * them), so that the link carries the port. */
  if (rc == 0 && !worker && (rc = coda_app_bind(app)) == 0)
    print_admin_link(listen, admin_token && *admin_token);
  if (rc == 0 && worker)
    fprintf(stderr, "coda-demo: worker on %s, queues %s\n", store,
            queues ? queues : "(all)");
  if (rc == 0)
    rc = coda_app_run(app);
  if (rc != 0)
    fprintf(stderr, "coda-demo: %s\n", coda_strerror(rc));
  coda_app_free(app);
  return rc == 0 ? 0 : 1;
}
