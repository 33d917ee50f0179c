/*
 * app.c - the application object: options, routes, middleware, dispatch,
 * running the server and logging (see coda.h, app.h).
 *
 * Configuration calls run on one thread before coda_app_run(); dispatch runs
 * on every loop thread and only reads the app. The app is the server's
 * dispatch hook; the layer above (tasks) plugs in through app->ext and the
 * services it adds, never by being called from here by name.
 */
#include "app/app.h"

#include "app/exchange.h"
#include "app/router.h"
#include "common/error.h"
#include "http/path.h"
#include "http/response.h"

#include <arpa/inet.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define LOG_RING_BYTES (1u << 20)

/* ---- metrics ----------------------------------------------------------- */

/* Known methods keep their name, anything else is OTHER: a client cannot
 * grow the label set by inventing methods. */
static const char *const metric_methods[] = {"GET",    "HEAD",  "POST",    "PUT",
                                             "DELETE", "PATCH", "OPTIONS", "CONNECT",
                                             "TRACE",  "OTHER", NULL};
static const char *const metric_classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx", NULL};
/* Patterns the HTTP families keep apart (the rest count as "other"). */
#define METRIC_ROUTES 64
/* HTTP durations: from 0.5 ms (a keep-alive /plain) to 10 s. */
static const double http_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1,    0.25,  0.5,    1,     2.5,  10};

static void build_info(void *data, coda__buf *out) {
  (void)data;
  const char *names[] = {"version"}, *values[] = {coda_version()};
  coda__metrics_head(out, "coda_build_info",
                     "The coda library serving: 1, with its version.", "gauge");
  coda__metrics_sample(out, "coda_build_info", 1, names, values, 1);
}

static int metrics_init(coda_app *app) {
  app->metrics = coda__metrics_new();
  if (!app->metrics)
    return CODA_ENOMEM;
  coda__metric_label req[] = {{"method", metric_methods, 0},
                              {"route", NULL, METRIC_ROUTES},
                              {"status", metric_classes, 0}};
  app->http_requests =
      coda__metrics_counter(app->metrics, "coda_http_requests_total",
                            "HTTP responses by method, route pattern (\"none\": no route "
                            "matched) and status class.",
                            3, req);
  app->http_duration = coda__metrics_histogram(
      app->metrics, "coda_http_request_duration_seconds",
      "Time from a complete request to its response queued for writing, by route "
      "pattern.",
      1, &req[1], http_buckets, (int)(sizeof http_buckets / sizeof http_buckets[0]));
  if (!app->http_requests || !app->http_duration ||
      coda__metrics_add_collector(app->metrics, build_info, NULL) != 0)
    return CODA_ENOMEM;
  /* "none" takes the first slot of both families. */
  coda__metric_intern(app->http_requests, 1, "none");
  coda__metric_intern(app->http_duration, 0, "none");
  return 0;
}

static int method_slot(const char *m, size_t len) {
  for (int i = 0; metric_methods[i + 1]; i++)
    if (strlen(metric_methods[i]) == len && memcmp(metric_methods[i], m, len) == 0)
      return i;
  return (int)(sizeof metric_methods / sizeof metric_methods[0]) - 2; /* OTHER */
}

static int status_class(int status) {
  return status < 200 ? 0 : status >= 500 ? 4 : status / 100 - 1; /* 1xx..5xx */
}

/* The server's own answers (400, 408, 413, 431, ...): counted with no
 * route ("none"), the method as far as it was parsed (else OTHER). */
static void count_rejected(void *data, const char *method, size_t method_len, int status) {
  coda_app *app = data;
  if (!coda__metrics_on(app->metrics))
    return;
  int slots[3] = {method ? method_slot(method, method_len) : method_slot("", 0), 0,
                  status_class(status)};
  coda__metric_add(app->http_requests, coda__metric_series(app->http_requests, slots), 1);
}

void coda__app_count_response(coda_app *app, const coda_req *req, int status) {
  if (!coda__metrics_on(app->metrics))
    return;
  const coda__route *rt = req->match.route;
  int slots[3] = {method_slot(req->method, req->head->method.len),
                  rt ? rt->metric_route : 0, status_class(status)};
  coda__metric_add(app->http_requests, coda__metric_series(app->http_requests, slots), 1);
  uint64_t ns = uv_hrtime() - req->metrics_t0;
  int route = rt ? rt->metric_route_duration : 0;
  coda__metric_observe_ns(app->http_duration,
                          coda__metric_series(app->http_duration, &route), ns);
}

int coda_app_metrics_text(coda_app *app, char **out, size_t *len) {
  if (!app || !out)
    return CODA_EINVAL;
  coda__buf b = {0};
  int rc = coda__metrics_render(app->metrics, &b);
  if (rc == 0)
    rc = coda__buf_append(&b, "", 1); /* a NUL, not counted */
  if (rc != 0) {
    coda__buf_free(&b);
    return CODA_ENOMEM;
  }
  *out = b.base;
  if (len)
    *len = b.len - 1;
  return 0;
}

static const coda__options default_options = {
#define CODA__OPTION_DEFAULT(name, field, def, min, max) .field = (def),
    CODA_OPTION_MAP(CODA__OPTION_DEFAULT)
#undef CODA__OPTION_DEFAULT
};

coda_app *coda_app_new(void) {
  coda_app *app = calloc(1, sizeof *app);
  if (!app)
    return NULL;
  app->opt = default_options;
  app->router = coda__router_new();
  if (!app->router || coda__logger_init(&app->logger, 2, LOG_RING_BYTES) != 0) {
    coda__router_free(app->router);
    free(app);
    return NULL;
  }
  coda_app_listen(app, "127.0.0.1:8000");
  if (metrics_init(app) != 0) {
    coda_app_free(app);
    return NULL;
  }
  return app;
}

int coda_app_free(coda_app *app) {
  if (!app)
    return 0;
  if (atomic_load(&app->running))
    return CODA_ESTATE;
  if (app->ext.free && app->ext.free(app->ext.data) != 0)
    return CODA_ESTATE; /* a thread of the layer above still runs and may touch it */
  /* Bound and never run: its listening sockets close here. */
  coda__server_free(atomic_exchange(&app->server, NULL));
  for (int i = 0; i < CODA__APP_MAX_ATTACHED; i++)
    if (app->attached[i].tag && app->attached[i].free)
      app->attached[i].free(app->attached[i].data);
  coda__router_free(app->router);
  free(app->middleware);
  free(app->listen_host);
  coda__logger_free(&app->logger);
  coda__metrics_free(app->metrics);
  free(app);
  return 0;
}

int coda__app_attach(coda_app *app, const void *tag, void *data, void (*free)(void *data)) {
  if (coda__app_attached_data(app, tag))
    return CODA_EEXIST;
  for (int i = 0; i < CODA__APP_MAX_ATTACHED; i++) {
    if (!app->attached[i].tag) {
      app->attached[i] = (coda__app_attached){tag, data, free};
      return 0;
    }
  }
  return CODA_ELIMIT;
}

void *coda__app_attached_data(const coda_app *app, const void *tag) {
  for (int i = 0; i < CODA__APP_MAX_ATTACHED; i++)
    if (app->attached[i].tag == tag)
      return app->attached[i].data;
  return NULL;
}

/* Each option's field and its allowed range. */
typedef struct {
  size_t offset;
  long min, max;
} option_info;

static const option_info option_table[] = {
#define CODA__OPTION_INFO(name, field, def, lo, hi)                                     \
  [CODA_OPT_##name] = {offsetof(coda__options, field), (lo), (hi)},
    CODA_OPTION_MAP(CODA__OPTION_INFO)
#undef CODA__OPTION_INFO
};

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
  if (opt == CODA_OPT_LOG_FORMAT) {
    /* Set before the logger runs (the app is not running): no line is
     * being formatted with the old value. */
    app->logger.format = (int)value;
    coda__log_set_default_format((int)value);
  }
  return 0;
}

long coda_app_get(const coda_app *app, coda_option opt) {
  const option_info *info = find_option(opt);
  if (!info)
    return -1;
  return *(const long *)((const char *)&app->opt + info->offset);
}

int coda_app_listen(coda_app *app, const char *host_port) {
  if (atomic_load(&app->server) || atomic_load(&app->running))
    return CODA_ESTATE;
  if (!host_port) {
    app->listen = 0; /* tasks only */
    return 0;
  }
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
  app->listen = 1;
  return 0;
}

int coda_app_port(const coda_app *app) {
  coda__server *s = atomic_load(&((coda_app *)app)->server);
  return s ? s->bound_port : 0;
}

int coda_app_route(coda_app *app, const char *method, const char *pattern,
                   coda_handler handler, void *user) {
  if (atomic_load(&app->running))
    return CODA_ESTATE;
  int rc = coda__router_add(app->router, method, pattern, handler, user);
  coda__route *rt = rc == 0 ? coda__router_find(app->router, method, pattern) : NULL;
  if (rt) {
    /* The pattern, never the path: the label set is the routes'. */
    rt->metric_route = coda__metric_intern(app->http_requests, 1, pattern);
    rt->metric_route_duration = coda__metric_intern(app->http_duration, 0, pattern);
  }
  return rc;
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
  if (rt->ext && app->ext.route) {
    int rc = app->ext.route(app->ext.data, res, rt->ext);
    if (rc)
      return rc;
  }
  return rt->handler(req, res, rt->user);
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

/* How a failed request is logged: a handler's own failure (a bug to look
 * at) is an ERROR line each time; back-pressure (503: a full queue, a store
 * that cannot write) is expected under load, so the first is a WARN line
 * and the rest are counted and summarised at most once a second. */
/* The request-target as a log line may show it: at most cap - 1 bytes,
 * a `token` parameter's value redacted as in the access log. */
static const char *loggable_target(const coda_req *req, char *buf, size_t cap) {
  size_t n = strlen(req->target);
  n = n < cap - 1 ? n : cap - 1;
  buf[coda__http_redact_target(buf, req->target, n)] = '\0';
  return buf;
}

static void log_failure(coda_app *app, const coda_req *req, int rc) {
  char why[64];
  if (rc == CODA_EFULL || rc == CODA_ESTORE) {
    long n = atomic_fetch_add(&app->busy_requests, 1) + 1;
    static _Thread_local uint64_t last_ms;
    uint64_t now = uv_hrtime() / 1000000;
    if (n == 1 || now - last_ms >= 1000) {
      last_ms = now;
      char target[512];
      CODA__LOG(app, CODA_LOG_WARN,
                "busy: \"%s %s\" request %llu answered 503 (%s); %ld such answers so far",
                req->method, loggable_target(req, target, sizeof target),
                (unsigned long long)req->id, coda_strerror(rc), n);
    }
    return;
  }
  atomic_fetch_add(&app->failed_requests, 1);
  char target[512];
  CODA__LOG(app, CODA_LOG_ERROR, "handler failed: \"%s %s\" request %llu: %s", req->method,
            loggable_target(req, target, sizeof target), (unsigned long long)req->id,
            coda__describe_rc(rc, why, sizeof why));
}

static int run_handlers(coda_app *app, coda_req *req, coda_res *res) {
  if (app->nmiddleware == 0)
    return route_request(app, req, res);
  coda_next first = {app, req, res, 0, 0};
  return coda_next_call(&first);
}

int coda__app_dispatch(void *data, coda__conn *c, void *exchange, const coda__request *r) {
  coda_app *app = data;
  coda__exchange *x = exchange;
  coda_req *req = &x->req;
  coda_res *res = &x->res;
  coda__req_begin(req, app, c, r);
  coda__res_reset(res, app, c, r->id);
  req->metrics_t0 = coda__metrics_on(app->metrics) ? uv_hrtime() : 0;
  int rc = run_handlers(app, req, res);
  if (res->streaming)
    return CODA__STREAMING;
  if (res->deferred) /* its layer answers later, whatever rc says */
    return CODA__GATED;
  if (rc < 0) {
    log_failure(app, req, rc);
    coda__app_fail_response(app, req, res, rc);
  }
  if (res->ext && app->ext.gate) {
    int g = app->ext.gate(app->ext.data, res);
    if (g == CODA__GATED)
      return CODA__GATED;
    if (g < 0) {
      log_failure(app, req, g);
      coda__app_fail_response(app, req, res, g);
    }
  }
  return coda__res_commit(res) == 0 ? CODA__ANSWERED : CODA_ENOMEM;
}

void coda__app_release(void *data, void *exchange) {
  (void)data;
  coda__res_release(&((coda__exchange *)exchange)->res);
}

void coda__app_fail_response(coda_app *app, coda_req *req, coda_res *res, int rc) {
  /* The failed response goes; the extension drops what must not follow
   * it (tasks not added as ALWAYS). */
  if (res->ext && app->ext.failed)
    app->ext.failed(app->ext.data, res);
  void *ext = res->ext;
  coda__res_reset(res, app, res->conn, res->request_id);
  res->ext = ext;
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

/* ---- extension and services ------------------------------------------ */

int coda__app_set_ext(coda_app *app, const coda__app_ext *ext) {
  if (app->ext.data)
    return CODA_EEXIST;
  app->ext = *ext;
  return 0;
}

int coda__app_add_service(coda_app *app, const coda__service *svc) {
  /* The server takes its services when it is made (coda_app_bind()): one
   * added later would never start, so it is refused. */
  if (atomic_load(&app->server))
    return CODA_ESTATE;
  if (app->nservices == CODA__APP_MAX_SERVICES)
    return CODA_ELIMIT;
  app->services[app->nservices++] = svc;
  return 0;
}

size_t coda_stats_json(const coda_app *app, char *buf, size_t cap) {
  char tmp[8192];
  size_t n = (size_t)snprintf(tmp, sizeof tmp, "{\"requests\":%llu",
                              (unsigned long long)coda__app_requests(app));
  for (int i = 0; i < app->nservices; i++) {
    const coda__service *svc = app->services[i];
    if (svc->stats_json)
      n += svc->stats_json(svc->data, tmp + n, sizeof tmp - n);
    if (n >= sizeof tmp - 1)
      n = sizeof tmp - 2;
  }
  tmp[n++] = '}';
  tmp[n] = '\0';
  if (cap) {
    size_t c = n < cap ? n : cap - 1;
    memcpy(buf, tmp, c);
    buf[c] = '\0';
  }
  return n;
}

uint64_t coda__app_requests(const coda_app *app) {
  coda__server *s = atomic_load(&((coda_app *)app)->server);
  return s ? coda__server_requests(s) : 0;
}

/* ---- running --------------------------------------------------------- */

static void server_config(coda_app *app, coda__server_config *cfg) {
  const coda__options *o = &app->opt;
  memset(cfg, 0, sizeof *cfg);
  cfg->threads = o->threads ? (int)o->threads : (int)uv_available_parallelism();
  cfg->listen = app->listen;
  cfg->host = app->listen_host;
  cfg->addr = app->addr;
  cfg->port = app->listen_port;
  cfg->limits.max_header_bytes = (uint32_t)o->max_header_bytes;
  cfg->limits.max_headers = (uint32_t)o->max_headers;
  cfg->limits.max_uri = (uint32_t)o->max_uri;
  cfg->limits.max_body = (uint64_t)o->max_body;
  cfg->header_timeout = (uint64_t)o->header_timeout;
  cfg->keepalive_timeout = (uint64_t)o->keepalive_timeout;
  cfg->body_timeout = (uint64_t)o->body_timeout;
  cfg->body_min_rate = (uint64_t)o->body_min_rate;
  cfg->send_timeout = (uint64_t)o->send_timeout;
  cfg->shutdown_timeout = (uint64_t)o->shutdown_timeout;
  cfg->drain_timeout = (uint64_t)o->task_drain_timeout;
  cfg->max_connections = o->max_connections;
  cfg->write_high_water = (size_t)o->write_high_water;
  cfg->send_buffer = (int)o->send_buffer;
  cfg->access_log = (int)o->access_log;
  cfg->log_format = (int)o->log_format;
  cfg->handle_signals = (int)o->handle_signals;
  cfg->log_level = o->log_level;
  cfg->logger = &app->logger;
  cfg->version = coda_version();
}

int coda_app_bind(coda_app *app) {
  if (app->ext.enter)
    app->ext.enter(app->ext.data); /* a task worker process never gets past this */
  if (atomic_load(&app->server))
    return 0;
  coda__metrics_enable(app->metrics, (int)app->opt.metrics);
  coda__server_config cfg;
  server_config(app, &cfg);
  coda__server_hooks hooks = {app, sizeof(coda__exchange), coda__app_dispatch,
                              coda__app_release, count_rejected};
  coda__server *s;
  int rc = coda__server_new(&cfg, &hooks, app->services, app->nservices, &s);
  if (rc == 0)
    atomic_store(&app->server, s);
  return rc;
}

int coda_app_run(coda_app *app) {
  int expected = 0;
  if (!atomic_compare_exchange_strong(&app->running, &expected, 1))
    return CODA_ESTATE;
  int rc = coda_app_bind(app);
  if (rc == 0) {
    coda__logger_start(&app->logger);
    rc = coda__server_run(atomic_load(&app->server));
    coda__logger_stop(&app->logger);
  }
  /* A coda_app_stop() on another thread may hold the server: it is freed
   * once none does. The app counts as running until then, so that
   * coda_app_free() cannot free it under this thread. */
  coda__server *s = atomic_exchange(&app->server, NULL);
  while (atomic_load(&app->stoppers) > 0)
    sched_yield();
  coda__server_free(s);
  atomic_store(&app->running, 0);
  return rc;
}

/* A stop counts from coda_app_bind() on, so one that comes while another
 * thread is still starting coda_app_run() is not lost: that run returns at
 * once. Atomics only, so a signal handler may call it; see `stoppers`. */
void coda_app_stop(coda_app *app) {
  atomic_fetch_add(&app->stoppers, 1);
  coda__server *s = atomic_load(&app->server);
  if (s)
    coda__server_stop(s);
  atomic_fetch_sub(&app->stoppers, 1);
}

/* ---- logging --------------------------------------------------------- */

void coda_log(coda_app *app, coda_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (app)
    coda__logv(&app->logger, app->opt.log_level, level, fmt, ap);
  else
    coda__logv(NULL, CODA_LOG_DEBUG, level, fmt, ap);
  va_end(ap);
}
