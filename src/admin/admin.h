/*
 * admin.h - the admin surface (the top layer): GET /metrics, the dashboard
 * under /coda/ and the JSON admin API under /coda/api/, mounted together by
 * coda_app_admin() and all behind one token.
 *
 * Who may ask (docs/operations.md, "Securing the admin surface"):
 *  - a request with `Authorization: Bearer TOKEN`, or with the cookie
 *    `coda_admin=TOKEN`. There is no exception for loopback peers: behind a
 *    reverse proxy every peer is loopback;
 *  - the cookie is set by opening any admin GET route with `?token=TOKEN`
 *    (the link the demo prints at start): the answer is a 303 to the same
 *    path without the query, so the token leaves the address bar at once;
 *  - an action (POST) authenticated by the cookie must also carry the CSRF
 *    token of GET /coda/api/session in `X-Coda-CSRF`, and a POST whose
 *    Origin is not this host is refused, whatever its credentials. A
 *    bearer token is not sent by a browser on its own, so it needs no CSRF.
 * Every comparison of a secret is constant-time.
 */
#ifndef CODA_ADMIN_ADMIN_H
#define CODA_ADMIN_ADMIN_H

#include "coda.h"
#include "common/metrics.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define CODA__ADMIN_TOKEN_MAX 128
#define CODA__ADMIN_COOKIE "coda_admin"
#define CODA__ADMIN_CSRF_HEADER "X-Coda-CSRF"

typedef struct coda__admin {
  coda_app *app;
  char token[CODA__ADMIN_TOKEN_MAX + 1];
  size_t token_len;
  char csrf[65]; /* 32 random bytes in hex, made at mount */
  int generated; /* the token was made here, not given */
  int closed;    /* a mount failed: every request is refused */
  /* coda_admin_actions_total{action} (NULL when the registry could not
   * take it: the actions are then not counted). */
  coda__metric *actions;
  /* The overview's rates: the fleet's processed and failed totals at the
   * last sample, and the rates between the two last samples. Loops call
   * the overview at once, so `mu` guards these. */
  uv_mutex_t mu;
  int64_t sample_at;
  long sample_processed, sample_failed;
  double rate_processed, rate_failed;
} coda__admin;

/* The actions of the API, the values of coda_admin_actions_total's label. */
typedef enum {
  CODA__ADMIN_ACT_RETRY = 0,
  CODA__ADMIN_ACT_CANCEL,
  CODA__ADMIN_ACT_DELETE,
  CODA__ADMIN_ACT_RETRY_ALL,
  CODA__ADMIN_ACT_DELETE_ALL,
  CODA__ADMIN_ACT_PAUSE,
  CODA__ADMIN_ACT_RESUME,
  CODA__ADMIN_ACT_COUNT_
} coda__admin_action;

/* Counts one action carried out (coda_admin_actions_total{action}). Any
 * thread. */
void coda__admin_count(coda__admin *a, coda__admin_action action);
/* How many actions of that kind were counted (tests, summaries). */
uint64_t coda__admin_counted(coda__admin *a, coda__admin_action action);

/* What a route needs besides the token. */
enum {
  CODA__ADMIN_READ = 0,   /* GET: the token (bearer or cookie) */
  CODA__ADMIN_ACTION = 1, /* POST: the token, and the CSRF token when by cookie */
};

/* The mount of an app, or NULL when coda_app_admin() was not called. */
coda__admin *coda__admin_of(const coda_app *app);

/* Checks who asks. Returns 0 when the request may go on; otherwise it has
 * answered (401 without a valid token, 403 for a failed CSRF or Origin
 * check, 303 after a ?token= login) and returns nonzero: the handler then
 * returns 0 at once. */
int coda__admin_guard(coda__admin *a, coda_req *req, coda_res *res, unsigned need);

/* The app's task store: "memory", "sqlite", "redis", or "none" (api.c). */
const char *coda__admin_store_name(coda_app *app);

/* "PEER (bearer)" or "PEER (cookie)": who asked, for the action log. */
const char *coda__admin_who(coda_req *req, char *buf, size_t cap);

/* Answers {"error": msg} with `status` (msg is escaped: it may hold
 * anything). Returns 0 (a handler's success: the error is the answer). */
int coda__admin_error(coda_res *res, int status, const char *msg);

/* Constant-time equality of a secret of `len` bytes with `given` (any
 * length): the time depends on `len` only. */
int coda__admin_secret_eq(const char *secret, size_t len, const char *given, size_t given_len);

/* The pieces of the surface mount their routes through these (admin.c
 * calls each); every handler starts with coda__admin_guard(). */
int coda__admin_session_mount(coda_app *app, coda__admin *a);
int coda__admin_metrics_mount(coda_app *app, coda__admin *a); /* GET /metrics */
int coda__admin_api_mount(coda_app *app, coda__admin *a);     /* api.c: views, queues */
int coda__admin_tasks_mount(coda_app *app, coda__admin *a);   /* api_tasks.c: tasks */
int coda__admin_dashboard_mount(coda_app *app, coda__admin *a); /* dashboard.c */

#endif /* CODA_ADMIN_ADMIN_H */
