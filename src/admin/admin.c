/*
 * admin.c - coda_app_admin(): the token, the guard every admin route
 * starts with, and GET /coda/api/session (see admin.h for the rules).
 */
#include "admin/admin.h"

#include "app/app.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

/* The tag of the admin state among the app's attachments. */
static const char admin_tag;

/* A token is what a link, a header and a cookie carry as it is, with
 * nothing to escape or decode anywhere: RFC 3986's unreserved characters. */
static int token_char_ok(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~';
}

static int random_hex(char *out, size_t nbytes) {
  unsigned char raw[64];
  if (nbytes > sizeof raw || uv_random(NULL, NULL, raw, nbytes, 0, NULL) != 0)
    return CODA_EIO;
  for (size_t i = 0; i < nbytes; i++)
    snprintf(out + 2 * i, 3, "%02x", raw[i]);
  return 0;
}

static int set_token(coda__admin *a, const char *token) {
  if (!token || !*token) {
    a->generated = 1;
    a->token_len = 64;
    return random_hex(a->token, 32);
  }
  size_t len = strlen(token);
  if (len < 16 || len > CODA__ADMIN_TOKEN_MAX)
    return CODA_EINVAL;
  for (size_t i = 0; i < len; i++)
    if (!token_char_ok((unsigned char)token[i]))
      return CODA_EINVAL;
  memcpy(a->token, token, len + 1);
  a->token_len = len;
  return 0;
}

coda__admin *coda__admin_of(const coda_app *app) {
  return coda__app_attached_data(app, &admin_tag);
}

int coda__admin_secret_eq(const char *secret, size_t len, const char *given, size_t given_len) {
  unsigned char diff = len != given_len;
  for (size_t i = 0; i < len; i++)
    diff |= (unsigned char)secret[i] ^ (unsigned char)(i < given_len ? given[i] : 0);
  return diff == 0;
}

/* The value of cookie `name` in a Cookie header ("a=1; b=2"), or NULL. */
static const char *cookie_value(const char *header, const char *name, size_t *len) {
  size_t nlen = strlen(name);
  for (const char *p = header; p && *p;) {
    while (*p == ' ' || *p == ';')
      p++;
    const char *end = strchr(p, ';');
    size_t plen = end ? (size_t)(end - p) : strlen(p);
    if (plen > nlen && p[nlen] == '=' && memcmp(p, name, nlen) == 0) {
      *len = plen - nlen - 1;
      return p + nlen + 1;
    }
    p = end;
  }
  return NULL;
}

enum { BY_NONE, BY_BEARER, BY_COOKIE };

/* The value of the query parameter spelt exactly `token` (a percent-encoded
 * spelling is not taken: the logs redact every spelling, but one login
 * path is simpler to reason about), or NULL. Tokens need no decoding. */
static const char *link_token(coda_req *req, size_t *len) {
  for (const char *p = coda_req_query_string(req); p && *p;) {
    const char *amp = strchr(p, '&');
    size_t plen = amp ? (size_t)(amp - p) : strlen(p);
    if (plen >= 6 && memcmp(p, "token=", 6) == 0) {
      *len = plen - 6;
      return p + 6;
    }
    p = amp ? amp + 1 : NULL;
  }
  return NULL;
}

/* How the request proves it holds the token, or BY_NONE. */
static int authenticated(coda__admin *a, coda_req *req) {
  const char *auth = coda_req_header(req, "Authorization");
  if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
    const char *t = auth + 7;
    while (*t == ' ')
      t++;
    return coda__admin_secret_eq(a->token, a->token_len, t, strlen(t)) ? BY_BEARER : BY_NONE;
  }
  size_t len;
  const char *cookie = coda_req_header(req, "Cookie");
  const char *v = cookie ? cookie_value(cookie, CODA__ADMIN_COOKIE, &len) : NULL;
  if (v && coda__admin_secret_eq(a->token, a->token_len, v, len))
    return BY_COOKIE;
  return BY_NONE;
}

/* An Origin header, when a browser sends one, must name this host. */
static int same_origin(coda_req *req) {
  const char *origin = coda_req_header(req, "Origin");
  if (!origin)
    return 1;
  const char *host = coda_req_header(req, "Host");
  const char *sep = strstr(origin, "://");
  return host && sep && strcmp(sep + 3, host) == 0;
}

int coda__admin_error(coda_res *res, int status, const char *msg) {
  /* A message may quote what was asked (a queue name, a task's state):
   * jansson escapes it. Not UTF-8 (it cannot be from our messages): a
   * fixed text. */
  json_t *body = json_pack("{s:s}", "error", msg);
  if (body)
    coda_res_json(res, status, body);
  else
    coda_res_json_text(res, status, "{\"error\":\"unprintable error\"}");
  json_decref(body);
  return 0;
}

static int unauthorized(coda_res *res) {
  coda_res_header(res, "WWW-Authenticate", "Bearer realm=\"coda\"");
  coda_res_header(res, "Cache-Control", "no-store");
  return coda__admin_error(res, 401,
                           "an admin token is needed: Authorization: Bearer TOKEN, or open "
                           "the dashboard link printed at start");
}

/* GET ...?token=TOKEN: the dashboard link. A right token sets the cookie
 * and sends the browser to the same path without the query. */
static int login(coda__admin *a, coda_req *req, coda_res *res, const char *token,
                 size_t token_len) {
  if (a->closed || !coda__admin_secret_eq(a->token, a->token_len, token, token_len))
    return unauthorized(res);
  char cookie[CODA__ADMIN_TOKEN_MAX + 96];
  /* Path=/coda: the application's own routes never see it (a handler that
   * logs its headers cannot leak it); /metrics is for scrapers, with the
   * bearer token. */
  snprintf(cookie, sizeof cookie, "%s=%s; Path=/coda; HttpOnly; SameSite=Strict",
           CODA__ADMIN_COOKIE, a->token);
  coda_res_status(res, 303);
  coda_res_header(res, "Set-Cookie", cookie);
  coda_res_header(res, "Location", coda_req_path(req));
  coda_res_header(res, "Cache-Control", "no-store");
  coda_res_header(res, "Referrer-Policy", "no-referrer");
  return 0;
}

int coda__admin_guard(coda__admin *a, coda_req *req, coda_res *res, unsigned need) {
  int post = strcmp(coda_req_method(req), "GET") != 0 && strcmp(coda_req_method(req), "HEAD") != 0;
  size_t token_len = 0;
  const char *token = post ? NULL : link_token(req, &token_len);
  if (token) {
    login(a, req, res, token, token_len);
    return 1;
  }
  int by = a->closed ? BY_NONE : authenticated(a, req);
  if (by == BY_NONE) {
    unauthorized(res);
    return 1;
  }
  if (post && !same_origin(req)) {
    coda__admin_error(res, 403, "cross-origin request refused");
    return 1;
  }
  if ((need & CODA__ADMIN_ACTION) && by == BY_COOKIE) {
    const char *csrf = coda_req_header(req, CODA__ADMIN_CSRF_HEADER);
    if (!csrf || !coda__admin_secret_eq(a->csrf, strlen(a->csrf), csrf, strlen(csrf))) {
      coda__admin_error(res, 403, "missing or wrong " CODA__ADMIN_CSRF_HEADER " header");
      return 1;
    }
  }
  coda_res_header(res, "Cache-Control", "no-store");
  /* Answers hold what tasks wrote: a browser must never read them as HTML. */
  coda_res_header(res, "X-Content-Type-Options", "nosniff");
  return 0;
}

const char *coda__admin_who(coda_req *req, char *buf, size_t cap) {
  coda__admin *a = coda__admin_of(coda_req_app(req));
  int by = a ? authenticated(a, req) : BY_NONE;
  snprintf(buf, cap, "%s (%s)", coda_req_peer(req),
           by == BY_BEARER ? "bearer" : by == BY_COOKIE ? "cookie" : "unauthenticated");
  return buf;
}

/* GET /coda/api/session: what the dashboard needs before its first action. */
static int get_session(coda_req *req, coda_res *res, void *user) {
  coda__admin *a = user;
  if (coda__admin_guard(a, req, res, CODA__ADMIN_READ))
    return 0;
  json_t *body = json_pack("{s:s,s:s,s:s}", "csrf", a->csrf, "version", coda_version(), "store",
                           coda__admin_store_name(a->app));
  if (!body)
    return CODA_ENOMEM;
  int rc = coda_res_json(res, 200, body);
  json_decref(body);
  return rc;
}

int coda__admin_session_mount(coda_app *app, coda__admin *a) {
  return coda_app_route(app, "GET", "/coda/api/session", get_session, a);
}

/* The pieces of the surface, each in a file of its own. */
static int (*const mounts[])(coda_app *, coda__admin *) = {
    coda__admin_session_mount,
    coda__admin_metrics_mount,
    coda__admin_api_mount,
    coda__admin_tasks_mount,
    coda__admin_dashboard_mount,
};

/* The label values of coda_admin_actions_total, by coda__admin_action. */
static const char *const action_names[] = {"retry",  "cancel", "delete", "retry_all",
                                           "delete_all", "pause", "resume", NULL};
_Static_assert(sizeof action_names / sizeof action_names[0] == CODA__ADMIN_ACT_COUNT_ + 1,
               "an action without a label value");

void coda__admin_count(coda__admin *a, coda__admin_action action) {
  int slot = (int)action;
  if (a->actions)
    coda__metric_add(a->actions, coda__metric_series(a->actions, &slot), 1);
}

uint64_t coda__admin_counted(coda__admin *a, coda__admin_action action) {
  int slot = (int)action;
  return a->actions ? coda__metric_value(a->actions, coda__metric_series(a->actions, &slot)) : 0;
}

/* Registered at mount, before the registry freezes; NULL (nothing counted)
 * if it is frozen or full already. */
static void register_metrics(coda_app *app, coda__admin *a) {
  coda__metric_label label = {.name = "action", .values = action_names};
  a->actions = coda__metrics_counter(app->metrics, "coda_admin_actions_total",
                                     "Actions taken through the admin API, by action", 1, &label);
}

static void admin_free(void *data) {
  coda__admin *a = data;
  uv_mutex_destroy(&a->mu);
  free(a);
}

int coda_app_admin(coda_app *app, const char *token) {
  if (!app || atomic_load(&app->running))
    return app ? CODA_ESTATE : CODA_EINVAL;
  if (coda__admin_of(app))
    return CODA_EEXIST;
  coda__admin *a = calloc(1, sizeof *a);
  if (!a)
    return CODA_ENOMEM;
  a->app = app;
  if (uv_mutex_init(&a->mu) != 0) {
    free(a);
    return CODA_ENOMEM;
  }
  if (!token || !*token)
    token = getenv("CODA_ADMIN_TOKEN");
  int rc = set_token(a, token);
  if (rc == 0)
    rc = random_hex(a->csrf, 32);
  if (rc == 0)
    rc = coda__app_attach(app, &admin_tag, a, admin_free);
  if (rc != 0) {
    admin_free(a);
    return rc;
  }
  register_metrics(app, a);
  for (size_t i = 0; rc == 0 && i < sizeof mounts / sizeof mounts[0]; i++)
    rc = mounts[i](app, a);
  /* Routes already added stay (a route cannot be taken back); they refuse
   * everyone from now on, so nothing is left open by a failed mount. */
  if (rc != 0)
    a->closed = 1;
  return rc;
}

const char *coda_app_admin_token(const coda_app *app) {
  coda__admin *a = app ? coda__admin_of(app) : NULL;
  return a ? a->token : NULL;
}
