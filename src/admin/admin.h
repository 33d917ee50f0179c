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

#include <stddef.h>

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
} coda__admin;

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

/* "PEER (bearer)" or "PEER (cookie)": who asked, for the action log. */
const char *coda__admin_who(coda_req *req, char *buf, size_t cap);

/* Answers {"error": msg} with `status`. Returns 0 (a handler's success: the
 * error is the answer). */
int coda__admin_error(coda_res *res, int status, const char *msg);

/* Constant-time equality of a secret of `len` bytes with `given` (any
 * length): the time depends on `len` only. */
int coda__admin_secret_eq(const char *secret, size_t len, const char *given, size_t given_len);

/* The pieces of the surface mount their routes through these (admin.c
 * calls each); every handler starts with coda__admin_guard(). */
int coda__admin_session_mount(coda_app *app, coda__admin *a);
int coda__admin_dashboard_mount(coda_app *app, coda__admin *a); /* dashboard.c */

#endif /* CODA_ADMIN_ADMIN_H */
