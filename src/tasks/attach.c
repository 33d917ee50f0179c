/*
 * attach.c - where tasks meet responses: adding them in handlers and
 * middleware, route-level tasks, and the app's extension hooks (app.h)
 * that hand a response's list to the "response fully written" event, drop
 * it when the handler fails, and gate a response until its durable tasks
 * are in the store. Loop thread of the request.
 */
#include "app/exchange.h"
#include "tasks/task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The engine's state on the loop serving this response (NULL when the
 * loop has none: the engine was made after the server started). */
static coda__task_loop *res_loop(const coda_res *res, const coda__engine *e) {
  return coda__loop_slot(coda__conn_loop(res->conn), e->loop_slot);
}

/* A W3C traceparent (Trace Context, level 1) coda keeps: version "00",
 * then a 32-digit trace id and a 16-digit parent id, neither all zeros,
 * and 2 digits of flags, all lowercase hex: exactly 55 characters. Any
 * other header is not kept (never repaired, and no id is made up): it
 * reaches operators' screens and other processes' logs. */
static int hex_run(const char *p, size_t n) {
  int nonzero = 0;
  for (size_t i = 0; i < n; i++) {
    if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
      return -1;
    nonzero |= p[i] != '0';
  }
  return nonzero;
}

int coda__traceparent_valid(const char *v) {
  return v && strlen(v) == 55 && v[0] == '0' && v[1] == '0' && v[2] == '-' &&
         v[35] == '-' && v[52] == '-' && hex_run(v + 3, 32) == 1 &&
         hex_run(v + 36, 16) == 1 && hex_run(v + 53, 2) >= 0;
}

/* The request a run's durable tasks come from: its traceparent, and its
 * method with the pattern of the route that matched (never the raw path:
 * that may hold ids or tokens). Out of memory, they are not recorded.
 * Noted when the first durable task is added: no copy for a response
 * of in-memory tasks. */
static void note_origin(coda_res *res, coda_tasks *run) {
  if (!res->conn)
    return;
  const coda_req *req = &((coda__exchange *)coda__conn_exchange(res->conn))->req;
  const char *trace = coda_req_header(req, "traceparent");
  const coda__route *route = req->match.route;
  char origin[300];
  if (route && req->method)
    snprintf(origin, sizeof origin, "%s %s", req->method, route->pattern);
  coda__tasks_set_origin(run, coda__traceparent_valid(trace) ? trace : NULL,
                         route && req->method ? origin : NULL);
}

/* In-memory tasks keep the request's traceparent too (their log lines,
 * coda_task_traceparent()), but only a request that carries a valid one
 * costs a copy: without tracing, nothing is allocated. */
static void note_trace(coda_res *res, coda_tasks *run) {
  if (!res->conn || run->trace)
    return;
  const coda_req *req = &((coda__exchange *)coda__conn_exchange(res->conn))->req;
  const char *trace = coda_req_header(req, "traceparent");
  if (coda__traceparent_valid(trace))
    run->trace = strdup(trace); /* out of memory: not kept */
}

coda__task_loop *coda__res_task_loop(const coda_res *res) {
  coda__engine *e = coda__engine_peek(res->app);
  return e ? res_loop(res, e) : NULL;
}

static coda_tasks *res_run(coda_res *res) {
  if (!res->ext) {
    coda__engine *e = coda__engine_peek(res->app);
    coda_tasks *run = e ? coda_tasks_new(res->app) : NULL;
    if (run) {
      run->loop = res_loop(res, e);
      run->request_id = res->request_id;
    }
    res->ext = run;
  }
  return res->ext;
}

static int res_add(coda_res *res, coda_task_def *def, coda_task_opts *opts, const char *fmt,
                   va_list ap) {
  coda_task_opts o;
  int rc = coda__opts_read(opts, &o);
  if (rc)
    return rc;
  if (!def)
    return CODA_EINVAL;
  if (res->streaming && ((o.flags & CODA_TASK_DURABLE) || def->durable))
    return CODA_ESTATE; /* the response has left: too late to write first */
  coda_tasks *run = res_run(res);
  if (!run)
    return CODA_ENOMEM;
  /* Only durable tasks keep it: no copy for a response of in-memory ones. */
  if (((o.flags & CODA_TASK_DURABLE) || def->durable) && !run->origin_set)
    note_origin(res, run);
  else if (!run->origin_set)
    note_trace(res, run);
  if ((rc = coda__run_add(run, def, &o, fmt, ap)) == 0)
    coda__opts_write_id(opts, o.id);
  return rc;
}

int coda_res_add_task(coda_res *res, coda_task_def *def, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = res_add(res, def, NULL, fmt, ap);
  va_end(ap);
  return rc;
}

int coda_res_add_task_opts(coda_res *res, coda_task_def *def, coda_task_opts *opts,
                           const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = res_add(res, def, opts, fmt, ap);
  va_end(ap);
  return rc;
}

void coda__run_drop_unstored(coda_tasks *run) {
  int kept = 0;
  for (int i = 0; i < run->n; i++) {
    coda_task *t = run->tasks[i];
    if (t->durable && !t->stored)
      coda__task_drop(t, "the store could not write it");
    else
      run->tasks[kept++] = t;
  }
  run->n = kept;
  run->durable_unstored = 0;
}

int coda_res_tasks_flags(coda_res *res, unsigned flags) {
  coda_tasks *run = res_run(res);
  return run ? coda_tasks_set_flags(run, flags) : CODA_ENOMEM;
}

int coda_res_attach_tasks(coda_res *res, coda_tasks *list) {
  coda_tasks *run = res_run(res);
  if (!run)
    return CODA_ENOMEM;
  for (int i = 0; i < list->n; i++) {
    if (list->tasks[i]->durable && !run->origin_set)
      note_origin(res, run);
    int rc = coda__run_append(run, list->tasks[i]);
    if (rc) {
      list->next = i; /* what was not moved is dropped by the free */
      coda_tasks_free(list);
      return rc;
    }
  }
  run->flags |= list->flags;
  list->n = 0;
  coda_tasks_free(list);
  return 0;
}

int coda_app_route_task(coda_app *app, const char *method, const char *pattern,
                        coda_task_def *def, const char *fmt, ...) {
  coda__engine *e = coda__engine_of(app);
  coda__route *route = coda__router_find(app->router, method, pattern);
  if (!e)
    return CODA_ENOMEM;
  if (!route || !def || atomic_load(&app->running))
    return route ? CODA_ESTATE : CODA_ENOTFOUND;
  if (!route->ext) {
    coda_tasks **lists = realloc(e->route_lists, (size_t)(e->nroute_lists + 1) * sizeof *lists);
    if (!lists)
      return CODA_ENOMEM;
    e->route_lists = lists;
    if (!(route->ext = coda_tasks_new(app)))
      return CODA_ENOMEM;
    e->route_lists[e->nroute_lists++] = route->ext;
  }
  coda_task *t;
  va_list ap;
  va_start(ap, fmt);
  int rc = coda__task_template(def, CODA_TASK_ALWAYS, fmt, ap, &t);
  va_end(ap);
  if (rc)
    return rc;
  if ((rc = coda__run_append(route->ext, t)) != 0)
    coda__task_free_template(t);
  return rc;
}

/* ---- the app's extension ------------------------------------------------- */

/* A route with declared tasks matched: copies of them join the response. */
static int ext_route(void *data, coda_res *res, void *route_ext) {
  (void)data;
  const coda_tasks *templates = route_ext;
  coda_tasks *run = res_run(res);
  if (!run)
    return CODA_ENOMEM;
  for (int i = 0; i < templates->n; i++) {
    coda_task *t;
    int rc = coda__task_clone(templates->tasks[i], &t);
    if (rc)
      return rc;
    if (t->durable && !run->origin_set)
      note_origin(res, run);
    if ((rc = coda__run_append(run, t)) != 0) {
      coda__task_drop(t, "out of memory");
      return rc;
    }
  }
  return 0;
}

static void ext_failed(void *data, coda_res *res) {
  (void)data;
  coda__run_drop_failed(res->ext);
}

/* Durable tasks are written before the response leaves: the response waits
 * (gated) for the store thread. */
static int ext_gate(void *data, coda_res *res) {
  (void)data;
  coda_tasks *run = res->ext;
  if (!run->durable_unstored)
    return 0;
  int rc = coda__durable_hold(res, run);
  if (rc == 0)
    return CODA__GATED;
  coda__run_drop_unstored(run); /* no store thread: 503 at once */
  return rc;
}

/* A stream's head leaves before anything could be written to the store:
 * a response holding durable tasks answers without one. */
static int ext_stream(void *data, coda_res *res) {
  (void)data;
  const coda_tasks *run = res->ext;
  return run->durable_unstored ? CODA_ESTATE : 0;
}

static void on_response_written(void *arg, int ok) { coda__run_start(arg, ok); }

static void ext_committed(void *data, coda_res *res, int queued) {
  (void)data;
  coda_tasks *run = res->ext;
  if (run->n == 0) {
    coda_tasks_free(run);
    return;
  }
  /* The tasks start when the last byte is in the socket, not before. */
  if (!queued || coda__res_mark_written(res, on_response_written, run) != 0)
    coda__run_start(run, 0);
}

static void ext_enter(void *data) {
  coda__engine *e = data;
  coda_app_worker(e->app);
}

const coda__app_ext coda__tasks_ext = {
    .route = ext_route,
    .failed = ext_failed,
    .gate = ext_gate,
    .stream = ext_stream,
    .committed = ext_committed,
    .enter = ext_enter,
    .free = coda__engine_free,
};
