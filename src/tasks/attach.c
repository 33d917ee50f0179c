/*
 * attach.c - where tasks meet responses: adding them in handlers and
 * middleware, route-level tasks, and handing a response's list to the
 * "response fully written" event. Loop thread of the request.
 */
#include "app/exchange.h"
#include "server/conn.h"
#include "tasks/task.h"

#include <stdlib.h>

static coda_tasks *res_run(coda_res *res) {
  if (!res->run) {
    res->run = coda_tasks_new(res->conn->loop->app);
    if (res->run) {
      res->run->loop = res->conn->loop;
      res->run->request_id = res->conn->req.id;
    }
  }
  return res->run;
}

static int res_add(coda_res *res, coda_task_def *def, coda_task_opts *opts, const char *fmt,
                   va_list ap) {
  if (res->streaming && ((opts->flags & CODA_TASK_DURABLE) || (def && def->durable)))
    return CODA_ESTATE; /* the response has left: too late to write first */
  coda_tasks *run = res_run(res);
  return run ? coda__run_add(run, def, opts, fmt, ap) : CODA_ENOMEM;
}

int coda_res_add_task(coda_res *res, coda_task_def *def, const char *fmt, ...) {
  coda_task_opts opts = {0};
  va_list ap;
  va_start(ap, fmt);
  int rc = res_add(res, def, &opts, fmt, ap);
  va_end(ap);
  return rc;
}

int coda_res_add_task_flags(coda_res *res, coda_task_def *def, unsigned flags,
                            const char *fmt, ...) {
  coda_task_opts opts = {.flags = flags};
  va_list ap;
  va_start(ap, fmt);
  int rc = res_add(res, def, &opts, fmt, ap);
  va_end(ap);
  return rc;
}

int coda_res_add_task_opts(coda_res *res, coda_task_def *def, coda_task_opts *opts,
                           const char *fmt, ...) {
  coda_task_opts none = {0};
  va_list ap;
  va_start(ap, fmt);
  int rc = res_add(res, def, opts ? opts : &none, fmt, ap);
  va_end(ap);
  return rc;
}

void coda__res_drop_unstored(coda_res *res) {
  coda_tasks *run = res->run;
  if (!run)
    return;
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
  coda__engine *e = app->engine;
  coda__route *route = coda__router_find(app->router, method, pattern);
  if (!route || !def || atomic_load(&app->running))
    return route ? CODA_ESTATE : CODA_ENOTFOUND;
  if (!route->tasks) {
    coda_tasks **lists = realloc(e->route_lists, (size_t)(e->nroute_lists + 1) * sizeof *lists);
    if (!lists)
      return CODA_ENOMEM;
    e->route_lists = lists;
    if (!(route->tasks = coda_tasks_new(app)))
      return CODA_ENOMEM;
    e->route_lists[e->nroute_lists++] = route->tasks;
  }
  coda_task *t;
  va_list ap;
  va_start(ap, fmt);
  int rc = coda__task_template(def, CODA_TASK_ALWAYS, fmt, ap, &t);
  va_end(ap);
  if (rc)
    return rc;
  if ((rc = coda__run_append(route->tasks, t)) != 0)
    coda__task_free_template(t);
  return rc;
}

int coda__res_add_route_tasks(coda_res *res, const coda__route *route) {
  if (!route->tasks)
    return 0;
  coda_tasks *run = res_run(res);
  if (!run)
    return CODA_ENOMEM;
  for (int i = 0; i < route->tasks->n; i++) {
    coda_task *t;
    int rc = coda__task_clone(route->tasks->tasks[i], &t);
    if (rc)
      return rc;
    if ((rc = coda__run_append(run, t)) != 0) {
      coda__task_drop(t, "out of memory");
      return rc;
    }
  }
  return 0;
}

static void on_response_written(void *arg, int ok) {
  coda_tasks *run = arg;
  coda__loop_flush_log(run->loop); /* the request's log line comes first */
  coda__run_start(run, ok);
}

void coda__res_tasks_commit(coda_res *res) {
  coda_tasks *run = res->run;
  if (!run)
    return;
  res->run = NULL;
  if (run->n == 0) {
    coda_tasks_free(run);
    return;
  }
  /* The tasks start when the last byte is in the socket, not before. */
  if (coda__conn_mark_response(res->conn, on_response_written, run) != 0)
    coda__run_start(run, 0);
}
