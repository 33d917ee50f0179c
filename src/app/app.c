/*
 * app.c - the application object: options, routes, middleware, dispatch
 * and logging (see coda.h, app.h).
 *
 * Configuration calls run on one thread before coda_app_run(); dispatch runs
 * on every loop thread and only reads the app.
 */
#include "app/app.h"

#include "app/exchange.h"
#include "app/router.h"
#include "tasks/task.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define LOG_RING_BYTES (1u << 20)

static const coda__options default_options = {
    .threads = 0, /* 0: one per core, resolved at run time */
    .max_header_bytes = 8192,
    .max_headers = 64,
    .max_uri = 4096,
    .max_body = 1 << 20,
    .header_timeout = 10000,
    .keepalive_timeout = 5000,
    .body_timeout = 10000,
    .send_timeout = 10000,
    .max_connections = 10000,
    .write_high_water = 1 << 20,
    .shutdown_timeout = 10000,
    .access_log = 0,
    .log_level = CODA_LOG_INFO,
    .handle_signals = 1,
    .thread_pool_size = 16,
    .thread_queue = 10000,
    .loop_queue = 10000,
    .process_workers = 0, /* 0: one per core */
    .process_queue = 1000,
    .task_drain_timeout = 10000,
    .retry_after = 1,
    .store_poll = 100,
    .task_lease = 300000,
    .store_max_bytes = 0,
    .max_attempts = 5,
    .backoff = 1000,
    .backoff_max = 300000,
    .task_retain = 604800000L,
    .body_min_rate = 1024,
};

coda_app *coda_app_new(void) {
  coda_app *app = calloc(1, sizeof *app);
  if (!app)
    return NULL;
  app->opt = default_options;
  app->router = coda__router_new();
  app->engine = coda__engine_new(app);
  if (!app->router || !app->engine ||
      coda__logger_init(&app->logger, 2, LOG_RING_BYTES) != 0) {
    coda__router_free(app->router);
    coda__engine_free(app->engine);
    free(app);
    return NULL;
  }
  coda_app_listen(app, "127.0.0.1:8000");
  return app;
}

void coda_app_free(coda_app *app) {
  if (!app)
    return;
  if (atomic_load(&app->engine->leaked))
    return; /* a thread task still runs and may touch it (logged at stop) */
  coda__router_free(app->router);
  coda__engine_free(app->engine);
  free(app->middleware);
  free(app->listen_host);
  coda__logger_free(&app->logger);
  free(app);
}

/* Each option's field and its allowed range. */
typedef struct {
  size_t offset;
  long min, max;
} option_info;

#define OPT(field, lo, hi)                                                               \
  { offsetof(coda__options, field), lo, hi }
static const option_info option_table[] = {
    [CODA_OPT_THREADS] = OPT(threads, 0, 1024),
    [CODA_OPT_MAX_HEADER_BYTES] = OPT(max_header_bytes, 256, 1 << 20),
    [CODA_OPT_MAX_HEADERS] = OPT(max_headers, 1, 4096),
    [CODA_OPT_MAX_URI] = OPT(max_uri, 16, 1 << 20),
    [CODA_OPT_MAX_BODY] = OPT(max_body, 0, 1L << 40),
    [CODA_OPT_HEADER_TIMEOUT] = OPT(header_timeout, 1, 86400000),
    [CODA_OPT_KEEPALIVE_TIMEOUT] = OPT(keepalive_timeout, 1, 86400000),
    [CODA_OPT_BODY_TIMEOUT] = OPT(body_timeout, 1, 86400000),
    [CODA_OPT_SEND_TIMEOUT] = OPT(send_timeout, 1, 86400000),
    [CODA_OPT_MAX_CONNECTIONS] = OPT(max_connections, 1, 10000000),
    [CODA_OPT_WRITE_HIGH_WATER] = OPT(write_high_water, 1024, 1L << 40),
    [CODA_OPT_SHUTDOWN_TIMEOUT] = OPT(shutdown_timeout, 1, 86400000),
    [CODA_OPT_ACCESS_LOG] = OPT(access_log, 0, 1),
    [CODA_OPT_LOG_LEVEL] = OPT(log_level, CODA_LOG_DEBUG, CODA_LOG_OFF),
    [CODA_OPT_HANDLE_SIGNALS] = OPT(handle_signals, 0, 1),
    [CODA_OPT_THREAD_POOL_SIZE] = OPT(thread_pool_size, 1, 1024),
    [CODA_OPT_THREAD_QUEUE] = OPT(thread_queue, 1, 100000000),
    [CODA_OPT_LOOP_QUEUE] = OPT(loop_queue, 1, 100000000),
    [CODA_OPT_PROCESS_WORKERS] = OPT(process_workers, 0, 1024),
    [CODA_OPT_PROCESS_QUEUE] = OPT(process_queue, 1, 100000000),
    [CODA_OPT_TASK_DRAIN_TIMEOUT] = OPT(task_drain_timeout, 0, 86400000),
    [CODA_OPT_RETRY_AFTER] = OPT(retry_after, 0, 86400),
    [CODA_OPT_STORE_POLL] = OPT(store_poll, 1, 3600000),
    [CODA_OPT_TASK_LEASE] = OPT(task_lease, 1000, 86400000L * 30),
    [CODA_OPT_STORE_MAX_BYTES] = OPT(store_max_bytes, 0, 1L << 50),
    [CODA_OPT_MAX_ATTEMPTS] = OPT(max_attempts, 1, 1000000),
    [CODA_OPT_BACKOFF] = OPT(backoff, 1, 86400000),
    [CODA_OPT_BACKOFF_MAX] = OPT(backoff_max, 1, 86400000L * 30),
    [CODA_OPT_TASK_RETAIN] = OPT(task_retain, 0, 86400000L * 36500),
    [CODA_OPT_BODY_MIN_RATE] = OPT(body_min_rate, 0, 1L << 40),
};
#undef OPT

static const option_info *find_option(coda_option opt) {
  if ((int)opt <= 0 || (size_t)opt >= sizeof option_table / sizeof option_table[0])
    return NULL;
  return &option_table[opt];
}

int coda_app_set(coda_app *app, coda_option opt, long value) {
  const option_info *info = find_option(opt);
  if (!info || value < info->min || value > info->max)
    return CODA_EINVAL;
  if (atomic_load(&app->running))
    return CODA_ESTATE;
  *(long *)((char *)&app->opt + info->offset) = value;
  return 0;
}

long coda_app_get(const coda_app *app, coda_option opt) {
  const option_info *info = find_option(opt);
  if (!info)
    return -1;
  return *(const long *)((const char *)&app->opt + info->offset);
}

int coda_app_listen(coda_app *app, const char *host_port) {
  if (!host_port || app->server)
    return app->server ? CODA_ESTATE : CODA_EINVAL;
  const char *colon = strrchr(host_port, ':');
  if (!colon || colon == host_port)
    return CODA_EADDR;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || end == colon + 1 || port < 0 || port > 65535)
    return CODA_EADDR;
  const char *h = host_port;
  size_t hlen = (size_t)(colon - host_port);
  if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
    h++;
    hlen -= 2;
  }
  char host[INET6_ADDRSTRLEN];
  if (hlen >= sizeof host)
    return CODA_EADDR;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) != 0)
    return CODA_EADDR;
  char *copy = strdup(host);
  if (!copy)
    return CODA_ENOMEM;
  free(app->listen_host);
  app->listen_host = copy;
  app->listen_port = (int)port;
  app->addr = ss;
  return 0;
}

int coda_app_port(const coda_app *app) { return app->bound_port; }

int coda_app_route(coda_app *app, const char *method, const char *pattern,
                   coda_handler handler, void *user) {
  if (atomic_load(&app->running))
    return CODA_ESTATE;
  return coda__router_add(app->router, method, pattern, handler, user);
}

int coda_app_use(coda_app *app, coda_middleware middleware, void *user) {
  if (!middleware)
    return CODA_EINVAL;
  if (atomic_load(&app->running))
    return CODA_ESTATE;
  coda__middleware_entry *m =
      realloc(app->middleware, (size_t)(app->nmiddleware + 1) * sizeof *m);
  if (!m)
    return CODA_ENOMEM;
  m[app->nmiddleware++] = (coda__middleware_entry){middleware, user};
  app->middleware = m;
  return 0;
}

void coda_app_on_error(coda_app *app, coda_error_handler handler, void *user) {
  app->on_error = handler;
  app->on_error_user = user;
}

/* ---- dispatch -------------------------------------------------------- */

struct coda_next {
  coda_app *app;
  coda_req *req;
  coda_res *res;
  int index;
  int called;
};

static const char not_found_body[] = "{\"error\":\"not found\"}";
static const char not_allowed_body[] = "{\"error\":\"method not allowed\"}";
static const char not_implemented_body[] = "{\"error\":\"method not implemented\"}";
static const char internal_body[] = "{\"error\":\"internal server error\"}";
static const char busy_body[] = "{\"error\":\"busy, retry later\"}";

static int answer_static_json(coda_res *res, int status, const char *body, size_t len) {
  coda_res_status(res, status);
  coda_res_header(res, "Content-Type", "application/json");
  return coda_res_body_static(res, body, len);
}

static int route_request(coda_app *app, coda_req *req, coda_res *res) {
  const char *path = req->path_raw;
  coda__router_match(app->router, req->method, req->head->method.len, path, strlen(path),
                     &req->match);
  if (!req->match.route) {
    size_t mlen = req->head->method.len;
    if (!coda__router_knows_method(app->router, req->method, mlen))
      return answer_static_json(res, 501, not_implemented_body,
                                sizeof not_implemented_body - 1); /* RFC 9110 9.1 */
    char allow[256];
    if (req->head->flags & CODA__HTTP_ASTERISK_FORM) {
      /* "OPTIONS *": the server as a whole (RFC 9110 9.3.7). */
      coda__router_allow(app->router, NULL, 0, allow, sizeof allow);
      coda_res_header(res, "Allow", allow);
      coda_res_status(res, 204);
      return 0;
    }
    if (!req->match.path_matched)
      return answer_static_json(res, 404, not_found_body, sizeof not_found_body - 1);
    coda__router_allow(app->router, path, strlen(path), allow, sizeof allow);
    coda_res_header(res, "Allow", allow);
    return answer_static_json(res, 405, not_allowed_body, sizeof not_allowed_body - 1);
  }
  if (coda__req_decode_params(req) != 0)
    return CODA_ENOMEM;
  const coda__route *rt = req->match.route;
  int rc = coda__res_add_route_tasks(res, rt);
  return rc ? rc : rt->handler(req, res, rt->user);
}

int coda_next_call(coda_next *next) {
  if (next->called)
    return CODA_ESTATE;
  next->called = 1;
  coda_app *app = next->app;
  if (next->index >= app->nmiddleware)
    return route_request(app, next->req, next->res);
  coda_next inner = {app, next->req, next->res, next->index + 1, 0};
  const coda__middleware_entry *m = &app->middleware[next->index];
  return m->fn(next->req, next->res, &inner, m->user);
}

void coda__app_dispatch(coda_app *app, coda_req *req, coda_res *res) {
  int rc;
  if (app->nmiddleware == 0) {
    rc = route_request(app, req, res);
  } else {
    coda_next first = {app, req, res, 0, 0};
    rc = coda_next_call(&first);
  }
  if (rc >= 0 || res->streaming)
    return;
  CODA__LOG(app, CODA_LOG_ERROR, "handler failed: \"%s %s\" request %llu: %s",
            req->method, req->target, (unsigned long long)req->id, coda_strerror(rc));
  coda__app_fail_response(app, req, res, rc);
}

void coda__app_fail_response(coda_app *app, coda_req *req, coda_res *res, int rc) {
  /* The failed response goes, and so do its tasks, except ALWAYS ones. */
  struct coda_tasks *run = res->run;
  res->run = NULL;
  coda__res_reset(res, res->conn, res->arena);
  if (run) {
    coda__run_drop_failed(run);
    res->run = run;
  }
  res->status = 500;
  /* A full task queue or a store that cannot write is back-pressure, not a
   * bug: 503 + Retry-After. */
  int busy = rc == CODA_EFULL || rc == CODA_ESTORE;
  if (busy) {
    char secs[24];
    snprintf(secs, sizeof secs, "%ld", app->opt.retry_after);
    res->status = 503;
    coda_res_header(res, "Retry-After", secs);
  }
  if (app->on_error)
    app->on_error(req, res, rc, app->on_error_user);
  else if (busy)
    answer_static_json(res, 503, busy_body, sizeof busy_body - 1);
  else
    answer_static_json(res, 500, internal_body, sizeof internal_body - 1);
}

/* ---- logging --------------------------------------------------------- */

void coda_log(coda_app *app, coda_log_level level, const char *fmt, ...) {
  if (app && (long)level < app->opt.log_level)
    return;
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  size_t n = coda__log_format(line, sizeof line, level, fmt, ap);
  va_end(ap);
  if (app)
    coda__logger_write(&app->logger, line, n);
  else
    fwrite(line, 1, n, stderr);
}
