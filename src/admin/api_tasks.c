/*
 * api_tasks.c - the durable tasks in the JSON admin API: the paged
 * listing with its filters, one task in full, and the actions on one task
 * or on every task of a state (docs/admin-api.md).
 *
 * Loop threads run every handler, behind coda__admin_guard(). A listing
 * reads the store through coda_task_find(), one page (plus one task, to
 * know whether another page follows) within CODA_TASK_FIND_BUDGET rows read
 * (a short page then); "scheduled" is not a state of the
 * store but a view (queued or failed, due later), filtered here.
 */
#include "admin/api.h"
#include "app/exchange.h"
#include "tasks/task.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIMIT_DEFAULT 50
#define LIMIT_MAX 500

/* ---- one task as JSON ---------------------------------------------------------- */

static json_t *summary(const coda_task_info *t) {
  return json_pack("{s:o,s:o,s:o,s:s,s:i,s:i,s:I,s:I,s:I,s:I,s:f,s:o}", "id",
                   coda__admin_id(t->id), "name", coda__admin_text(t->name), "queue",
                   coda__admin_text(t->queue), "state", coda_task_state_name(t->state),
                   "attempts", t->attempts, "max_attempts", t->max_attempts, "created_at",
                   (json_int_t)t->created_at, "run_at", (json_int_t)t->run_at,
                   "started_at", (json_int_t)t->started_at, "finished_at",
                   (json_int_t)t->finished_at, "progress", t->progress, "error",
                   coda__admin_text(t->error));
}

static json_t *base64(const unsigned char *p, size_t n) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *out = malloc((n + 2) / 3 * 4 + 1);
  if (!out)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                 (i + 2 < n ? p[i + 2] : 0);
    out[o++] = tab[v >> 18 & 63];
    out[o++] = tab[v >> 12 & 63];
    out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? tab[v & 63] : '=';
  }
  json_t *v = json_stringn(out, o);
  free(out);
  return v;
}

/* A result is text when it is UTF-8, else {"base64": ...}, as the
 * arguments show their byte strings. */
static json_t *result_json(const coda_task_info *t) {
  if (!t->result)
    return json_null();
  json_t *text = json_stringn(t->result, t->result_len);
  return text ? text : json_pack("{s:o}", "base64", base64(t->result, t->result_len));
}

/* The arguments decoded by the engine (coda_task_args_json()). */
static json_t *args_json(const coda_task_info *t) {
  char small[512];
  size_t need = coda_task_args_json(t, small, sizeof small);
  char *buf = need < sizeof small ? small : malloc(need + 1);
  if (!buf)
    return NULL;
  if (buf != small)
    coda_task_args_json(t, buf, need + 1);
  json_t *v = json_loadb(buf, need, 0, NULL);
  if (buf != small)
    free(buf);
  return v && json_is_array(v) ? v : (json_decref(v), json_array());
}

static json_t *errors_json(const coda_task_info *t) {
  json_t *arr = json_array();
  for (int i = 0; arr && i < t->n_errors; i++)
    json_array_append_new(arr, json_pack("{s:i,s:I,s:o}", "attempt", t->errors[i].attempt,
                                         "at", (json_int_t)t->errors[i].at, "error",
                                         coda__admin_text(t->errors[i].error)));
  return arr;
}

static json_t *detail(const coda_task_info *t) {
  json_t *o = summary(t);
  if (!o)
    return NULL;
  json_t *request = t->request_id
                        ? json_pack("{s:o,s:o}", "id", coda__admin_id(t->request_id),
                                    "origin", coda__admin_text(t->origin))
                        : json_null();
  json_object_set_new(o, "key", coda__admin_text(t->key));
  json_object_set_new(o, "args", args_json(t));
  json_object_set_new(o, "result", result_json(t));
  json_object_set_new(o, "errors", errors_json(t));
  json_object_set_new(o, "request", request);
  json_object_set_new(o, "traceparent", coda__admin_text(t->trace));
  json_object_set_new(o, "cancel_requested", json_boolean(t->cancel_requested));
  /* A member that could not be made (out of memory) fails the whole. */
  const char *keys[] = {"key",     "args",        "result",          "errors",
                        "request", "traceparent", "cancel_requested"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (!json_object_get(o, keys[i])) {
      json_decref(o);
      return NULL;
    }
  return o;
}

/* ---- the listing ------------------------------------------------------------- */

#define SCHEDULED_ONLY ((unsigned)1 << 31)

/* A state name, "scheduled", or a comma-separated list of them, as
 * CODA_STATE_BIT()s (SCHEDULED_ONLY for "scheduled"); -1 if unknown. */
static int parse_states(const char *list, unsigned *bits) {
  *bits = 0;
  for (const char *p = list; *p;) {
    size_t n = strcspn(p, ",");
    if (n == 0 || (p[n] == ',' && p[n + 1] == '\0'))
      return -1;
    int found = 0;
    if (n == 9 && strncmp(p, "scheduled", 9) == 0) {
      *bits |= SCHEDULED_ONLY;
      found = 1;
    }
    for (int s = CODA_STATE_QUEUED; !found && s <= CODA_STATE_CANCELLED; s++) {
      const char *name = coda_task_state_name((coda_task_state)s);
      if (strlen(name) == n && strncmp(p, name, n) == 0) {
        *bits |= CODA_STATE_BIT(s);
        found = 1;
      }
    }
    if (!found)
      return -1;
    p += n + (p[n] == ',');
  }
  return 0;
}

typedef struct page {
  json_t *arr;
  int limit, n, more;
  uint64_t last_id;
  unsigned states;    /* the real states asked (a task "scheduled" matches too) */
  int scheduled_only; /* "scheduled" was asked: such tasks match besides */
  int64_t now;
} page;

static int wanted(const page *p, const coda_task_info *t) {
  if (!p->scheduled_only)
    return 1;
  if (p->states & CODA_STATE_BIT(t->state))
    return 1;
  return (t->state == CODA_STATE_QUEUED || t->state == CODA_STATE_FAILED) &&
         t->run_at > p->now;
}

static int add_task(const coda_task_info *t, void *user) {
  page *p = user;
  if (!wanted(p, t))
    return 0;
  if (p->n == p->limit) {
    p->more = 1;
    return 1;
  }
  json_t *o = summary(t);
  if (!o || json_array_append_new(p->arr, o) != 0)
    return -1;
  p->n++;
  p->last_id = t->id;
  return 0;
}

/* GET tasks?id=ID: the one task, or none. */
static int find_one(coda__admin *a, coda_res *res, const char *id_text) {
  uint64_t id;
  if (coda__admin_parse_id(id_text, &id) != 0)
    return coda__admin_error(res, 400, "id: a task id is decimal digits");
  json_t *arr = json_array();
  coda_task_info *info = NULL;
  int rc = coda_task_get(a->app, id, &info);
  if (rc == 0) {
    json_array_append_new(arr, summary(info));
    coda_task_info_free(info);
  } else if (rc != CODA_ENOTFOUND) {
    json_decref(arr);
    return coda__admin_fail(res, rc, "no task store");
  }
  return coda__admin_reply(res, 200, json_pack("{s:o,s:n}", "tasks", arr, "next_after"));
}

static int parse_limit(const char *s, int *limit) {
  *limit = LIMIT_DEFAULT;
  if (!s)
    return 0;
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < 1)
    return -1;
  *limit = v > LIMIT_MAX ? LIMIT_MAX : (int)v;
  return 0;
}

static int get_tasks(coda_req *req, coda_res *res, void *user) {
  coda__admin *a = user;
  if (coda__admin_guard(a, req, res, CODA__ADMIN_READ))
    return 0;
  if (!coda__admin_durable(a->app))
    return coda__admin_reply(res, 200, json_pack("{s:[],s:n}", "tasks", "next_after"));
  const char *id = coda_req_query(req, "id");
  if (id)
    return find_one(a, res, id);
  const char *state = coda_req_query(req, "state"), *after = coda_req_query(req, "after");
  page p = {.now = coda__admin_now_ms()};
  unsigned bits = 0;
  uint64_t after_id = 0;
  if (state && parse_states(state, &bits) != 0)
    return coda__admin_error(
        res, 400,
        "state: one or more (comma-separated) of queued, scheduled, running, "
        "succeeded, failed, dead, cancelled");
  if (after && *after && coda__admin_parse_id(after, &after_id) != 0)
    return coda__admin_error(res, 400, "after: a task id is decimal digits");
  if (parse_limit(coda_req_query(req, "limit"), &p.limit) != 0)
    return coda__admin_error(res, 400, "limit: a number from 1 (at most 500 are given)");
  p.scheduled_only = (bits & SCHEDULED_ONLY) != 0;
  p.states = bits & ~SCHEDULED_ONLY;
  if (p.scheduled_only)
    bits =
        p.states | CODA_STATE_BIT(CODA_STATE_QUEUED) | CODA_STATE_BIT(CODA_STATE_FAILED);
  const char *queue = coda_req_query(req, "queue"), *name = coda_req_query(req, "name");
  /* On the event loop: a bounded read of the store, so a page may be short
   * (even empty) with a next_after, where the budget ran out. */
  uint64_t resume = 0;
  coda_task_filter f =
      CODA_TASK_FILTER_INIT(.states = bits, .queue = queue && *queue ? queue : NULL,
                            .name = name && *name ? name : NULL, .after_id = after_id,
                            .limit = p.scheduled_only ? 0 : p.limit + 1,
                            .budget = CODA_TASK_FIND_BUDGET, .next_after = &resume);
  if (!(p.arr = json_array()))
    return CODA_ENOMEM;
  int rc = coda_task_find(a->app, &f, add_task, &p);
  if (rc < 0) {
    json_decref(p.arr);
    return coda__admin_fail(res, rc, "no task store");
  }
  json_t *next = p.more ? coda__admin_id(p.last_id) : resume ? coda__admin_id(resume)
                                                              : json_null();
  return coda__admin_reply(res, 200,
                           json_pack("{s:o,s:o}", "tasks", p.arr, "next_after", next));
}

static int get_task(coda_req *req, coda_res *res, void *user) {
  coda__admin *a = user;
  if (coda__admin_guard(a, req, res, CODA__ADMIN_READ))
    return 0;
  uint64_t id;
  if (coda__admin_parse_id(coda_req_param(req, "id"), &id) != 0)
    return coda__admin_error(res, 400, "a task id is decimal digits");
  if (!coda__admin_durable(a->app))
    return coda__admin_error(res, 404, "unknown task");
  coda_task_info *info = NULL;
  int rc = coda_task_get(a->app, id, &info);
  if (rc != 0)
    return coda__admin_fail(res, rc, "no task store");
  json_t *o = detail(info);
  coda_task_info_free(info);
  return coda__admin_reply(res, 200, o);
}

/* ---- actions ------------------------------------------------------------------- */

typedef struct action {
  coda__admin_action kind;
  const char *name;      /* in the log: "retry task 12" */
  const char *state_msg; /* the 409's message */
} action;

static const action task_actions[] = {
    [CODA__ADMIN_ACT_RETRY] =
        {CODA__ADMIN_ACT_RETRY, "retry",
         "only a dead, failed, cancelled or scheduled task can be retried"},
    [CODA__ADMIN_ACT_CANCEL] = {CODA__ADMIN_ACT_CANCEL, "cancel",
                                "the task has ended (succeeded, dead or cancelled)"},
    [CODA__ADMIN_ACT_DELETE] = {CODA__ADMIN_ACT_DELETE, "delete",
                                "the task is running: cancel it first"},
};

/* The engine's kind of each action of the API. */
static const coda__admin_kind store_kind[] = {
    [CODA__ADMIN_ACT_RETRY] = CODA__ADMIN_RETRY,
    [CODA__ADMIN_ACT_CANCEL] = CODA__ADMIN_CANCEL,
    [CODA__ADMIN_ACT_DELETE] = CODA__ADMIN_DELETE,
    [CODA__ADMIN_ACT_RETRY_ALL] = CODA__ADMIN_RETRY_ALL,
    [CODA__ADMIN_ACT_DELETE_ALL] = CODA__ADMIN_DELETE_ALL,
};

static int is_bulk(coda__admin_action kind) {
  return kind == CODA__ADMIN_ACT_RETRY_ALL || kind == CODA__ADMIN_ACT_DELETE_ALL;
}

static const char *bulk_state_msg(coda__admin_action kind) {
  return kind == CODA__ADMIN_ACT_RETRY_ALL
             ? "state: one of dead, failed, cancelled"
             : "state: one of queued, succeeded, failed, dead, cancelled";
}

/* Logs a written action and answers what the store said (rc: the
 * engine's answer, a count for the bulk forms). */
static int answer(coda__admin *a, coda_req *req, coda_res *res, coda__admin_action kind,
                  const char *what, uint64_t id, long rc) {
  coda__admin_action_log(a, req, kind, what, rc);
  if (is_bulk(kind)) {
    if (rc == CODA_EINVAL)
      return coda__admin_error(res, 400, bulk_state_msg(kind));
    if (rc < 0)
      return coda__admin_fail(res, (int)rc, "no task store");
    return coda__admin_reply(res, 200, json_pack("{s:I}", "count", (json_int_t)rc));
  }
  if (rc < 0)
    return coda__admin_fail(res, (int)rc, task_actions[kind].state_msg);
  json_t *o = json_pack("{s:o,s:b}", "id", coda__admin_id(id), "ok", 1);
  /* cancel of a running task: asked, the attempt decides (coda.h). */
  if (o && kind == CODA__ADMIN_ACT_CANCEL)
    json_object_set_new(o, "cancel_requested", json_boolean(rc == 1));
  return coda__admin_reply(res, 200, o);
}

/* An action the store thread writes while this loop goes on serving: a
 * bulk one may take seconds, and even one write waits for the batch being
 * written. The response is deferred and answered from the loop's inbox. */
typedef struct pending {
  coda__admin_op op; /* first: on_done() gets &op */
  coda__inbox_msg msg;
  coda__task_loop *loop;
  coda__admin *admin;
  coda_req *req; /* the exchange stays while the response is deferred */
  coda_res *res;
  coda__admin_action kind;
  char queue[72];
  char what[160];
} pending;

static void on_answer(coda__inbox_msg *m, int cancelled) {
  pending *p = coda__container_of(m, pending, msg);
  if (cancelled) { /* the loop ended: nobody to answer (ops.c logged it) */
    coda__res_abandon(p->res);
  } else {
    int rc = answer(p->admin, p->req, p->res, p->kind, p->what, p->op.id, p->op.count);
    coda__res_resume(p->res, rc < 0 ? rc : 0);
  }
  free(p);
}

/* Store thread: the action is written. */
static void on_written(coda__admin_op *op) {
  pending *p = (pending *)op;
  if (coda__task_loop_post(p->loop, &p->msg, on_answer) != 0) {
    coda__res_abandon(p->res);
    free(p);
  }
}

/* Starts the action on the store thread and defers the answer: 0. Else
 * nothing started: CODA_EINVAL (a bulk form's state), CODA_ESTATE (no
 * store thread, or no engine state on this loop: the waiting form then),
 * CODA_ENOMEM. */
static int start(coda__admin *a, coda_req *req, coda_res *res, coda__admin_action kind,
                 const coda__admin_op *op, const char *what) {
  coda__task_loop *loop = coda__res_task_loop(res);
  if (!loop)
    return CODA_ESTATE;
  pending *p = calloc(1, sizeof *p);
  if (!p)
    return CODA_ENOMEM;
  p->op = *op;
  p->op.on_done = on_written;
  if (op->queue) {
    snprintf(p->queue, sizeof p->queue, "%s", op->queue);
    p->op.queue = p->queue;
  }
  snprintf(p->what, sizeof p->what, "%s", what);
  p->loop = loop;
  p->admin = a;
  p->req = req;
  p->res = res;
  p->kind = kind;
  /* Deferred first: the answer is posted to this loop, which runs it
   * only after this handler has returned. */
  int rc = coda__res_defer(res, 1);
  rc = rc ? rc : coda__ops_admin_start(a->app, &p->op);
  if (rc) {
    coda__res_defer(res, 0);
    free(p);
  }
  return rc;
}

/* The waiting form, where no store thread runs yet. */
static long run_waiting(coda_app *app, const coda__admin_op *op) {
  switch (op->what) {
  case CODA__ADMIN_RETRY:
    return coda_task_retry(app, op->id);
  case CODA__ADMIN_CANCEL:
    return coda_task_cancel(app, op->id);
  case CODA__ADMIN_DELETE:
    return coda_task_delete(app, op->id);
  case CODA__ADMIN_RETRY_ALL:
    return coda_tasks_retry_all(app, op->state, op->queue);
  case CODA__ADMIN_DELETE_ALL:
    return coda_tasks_delete_all(app, op->state, op->queue);
  }
  return CODA_EINVAL;
}

static int act(coda__admin *a, coda_req *req, coda_res *res, coda__admin_action kind,
               const coda__admin_op *op, const char *what) {
  int rc = start(a, req, res, kind, op, what);
  if (rc == 0)
    return 0; /* answered once written */
  long n = rc == CODA_ESTATE ? run_waiting(a->app, op) : rc;
  return answer(a, req, res, kind, what, op->id, n);
}

static int task_action(coda_req *req, coda_res *res, coda__admin *a,
                       coda__admin_action kind) {
  if (coda__admin_guard(a, req, res, CODA__ADMIN_ACTION))
    return 0;
  uint64_t id;
  if (coda__admin_parse_id(coda_req_param(req, "id"), &id) != 0)
    return coda__admin_error(res, 400, "a task id is decimal digits");
  coda__durable *d = coda__admin_durable(a->app);
  if (!d)
    return coda__admin_error(res, 404, "unknown task");
  if (!CODA__ADMIN_STORE_HAS(d, retry))
    return coda__admin_not_ready(res);
  char what[64];
  snprintf(what, sizeof what, "%s task %" PRIu64, task_actions[kind].name, id);
  coda__admin_op op = {.what = store_kind[kind], .id = id};
  return act(a, req, res, kind, &op, what);
}

static int post_retry(coda_req *req, coda_res *res, void *user) {
  return task_action(req, res, user, CODA__ADMIN_ACT_RETRY);
}

static int post_cancel(coda_req *req, coda_res *res, void *user) {
  return task_action(req, res, user, CODA__ADMIN_ACT_CANCEL);
}

static int post_delete(coda_req *req, coda_res *res, void *user) {
  return task_action(req, res, user, CODA__ADMIN_ACT_DELETE);
}

/* POST tasks/retry?state=S&queue=Q and tasks/delete?...: one state. */
static int bulk(coda_req *req, coda_res *res, coda__admin *a, coda__admin_action kind) {
  if (coda__admin_guard(a, req, res, CODA__ADMIN_ACTION))
    return 0;
  const char *state = coda_req_query(req, "state"), *queue = coda_req_query(req, "queue");
  unsigned bits;
  int retry = kind == CODA__ADMIN_ACT_RETRY_ALL;
  if (!state || parse_states(state, &bits) != 0 || bits == 0 || (bits & SCHEDULED_ONLY) ||
      (bits & (bits - 1)) != 0)
    return coda__admin_error(res, 400, bulk_state_msg(kind));
  coda_task_state st = (coda_task_state)__builtin_ctz(bits);
  if (queue && !*queue)
    queue = NULL;
  char safe[72];
  if (queue && (strlen(queue) > 64 ||
                strcmp(coda__admin_log_name(queue, safe, sizeof safe), queue)))
    return coda__admin_error(res, 400,
                             "queue: 1 to 64 characters among A-Z a-z 0-9 _ . -");
  coda__durable *d = coda__admin_durable(a->app);
  if (!d)
    return coda__admin_fail(res, CODA_ESTATE, "no task store");
  if (!CODA__ADMIN_STORE_HAS(d, retry_all))
    return coda__admin_not_ready(res);
  char what[160];
  snprintf(what, sizeof what, "%s every %s task of %s%s", retry ? "retry" : "delete",
           coda_task_state_name(st), queue ? "queue " : "every queue",
           queue ? coda__admin_log_name(queue, safe, sizeof safe) : "");
  coda__admin_op op = {.what = store_kind[kind], .state = st, .queue = queue};
  return act(a, req, res, kind, &op, what);
}

static int post_retry_all(coda_req *req, coda_res *res, void *user) {
  return bulk(req, res, user, CODA__ADMIN_ACT_RETRY_ALL);
}

static int post_delete_all(coda_req *req, coda_res *res, void *user) {
  return bulk(req, res, user, CODA__ADMIN_ACT_DELETE_ALL);
}

int coda__admin_tasks_mount(coda_app *app, coda__admin *a) {
  static const struct {
    const char *method, *pattern;
    coda_handler fn;
  } routes[] = {
      {"GET", "/coda/api/tasks", get_tasks},
      {"GET", "/coda/api/tasks/{id}", get_task},
      {"POST", "/coda/api/tasks/{id}/retry", post_retry},
      {"POST", "/coda/api/tasks/{id}/cancel", post_cancel},
      {"POST", "/coda/api/tasks/{id}/delete", post_delete},
      {"POST", "/coda/api/tasks/retry", post_retry_all},
      {"POST", "/coda/api/tasks/delete", post_delete_all},
  };
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < sizeof routes / sizeof routes[0]; i++)
    rc = coda_app_route(app, routes[i].method, routes[i].pattern, routes[i].fn, a);
  return rc;
}
