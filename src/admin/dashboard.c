/*
 * dashboard.c - GET /coda/ (the dashboard's page) and GET /coda/assets/NAME
 * (its script, style sheet and icon), from the files built into the library
 * (dashboard.h). Both are behind the admin guard, like the API they call.
 *
 * Every answer carries a Content-Security-Policy that allows nothing but
 * this origin: no inline script, no other host. The page puts data in with
 * textContent only, so a task's arguments or error cannot become markup;
 * the policy is the second wall should that ever slip. The files change
 * only with the library, so they are sent with an ETag and revalidated
 * (no-cache), and a matching If-None-Match gets a 304 without the body.
 */
#include "admin/dashboard.h"

#include "admin/admin.h"

#include <stdio.h>
#include <string.h>

static const char csp[] = "default-src 'self'; base-uri 'none'; form-action 'self'; "
                          "frame-ancestors 'none'";

const coda__asset *coda__dashboard_asset(const char *name) {
  for (const coda__asset *a = coda__dashboard_assets; a->name; a++)
    if (strcmp(a->name, name) == 0)
      return a;
  return NULL;
}

static const char *content_type(const char *name) {
  static const struct {
    const char *ext, *type;
  } types[] = {
      {".html", "text/html; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
  };
  const char *dot = strrchr(name, '.');
  for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
    if (strcmp(dot, types[i].ext) == 0)
      return types[i].type;
  return "application/octet-stream";
}

/* Does If-None-Match name this ETag? It may list several, or be "*". */
static int not_modified(coda_req *req, const char *etag) {
  const char *inm = coda_req_header(req, "If-None-Match");
  return inm && (strcmp(inm, "*") == 0 || strstr(inm, etag) != NULL);
}

static int send_asset(coda_req *req, coda_res *res, const coda__asset *a) {
  coda_res_header(res, "Content-Security-Policy", csp);
  coda_res_header(res, "X-Content-Type-Options", "nosniff");
  coda_res_header(res, "Referrer-Policy", "no-referrer");
  coda_res_header(res, "X-Frame-Options", "DENY");
  /* The guard said no-store (right for the API's data); these bytes are
   * the library's own and may be kept, if checked each time. */
  coda_res_header(res, "Cache-Control", "private, no-cache");
  coda_res_header(res, "ETag", a->etag);
  if (not_modified(req, a->etag))
    return coda_res_status(res, 304);
  coda_res_header(res, "Content-Type", content_type(a->name));
  coda_res_status(res, 200);
  return coda_res_body_static(res, a->data, a->len);
}

static int not_found(coda_res *res) {
  coda_res_header(res, "Content-Security-Policy", csp);
  return coda__admin_error(res, 404, "no such file");
}

/* GET /coda/: the page; everything else it needs it fetches. */
static int get_page(coda_req *req, coda_res *res, void *user) {
  if (coda__admin_guard(user, req, res, CODA__ADMIN_READ))
    return 0;
  const coda__asset *a = coda__dashboard_asset("index.html");
  return a ? send_asset(req, res, a) : not_found(res);
}

/* GET /coda/assets/NAME. Names are looked up in the table, never on a
 * disk, so "..", "%2F" and the like simply find nothing. */
static int get_asset(coda_req *req, coda_res *res, void *user) {
  if (coda__admin_guard(user, req, res, CODA__ADMIN_READ))
    return 0;
  const char *name = coda_req_param(req, "name");
  const coda__asset *a = name ? coda__dashboard_asset(name) : NULL;
  return a ? send_asset(req, res, a) : not_found(res);
}

/* GET /coda: to /coda/ (the page's links are relative to it), keeping a
 * ?token= so the login still happens there. The Location is relative, so
 * it stays right behind a proxy that serves coda under a prefix. */
static int get_bare(coda_req *req, coda_res *res, void *user) {
  (void)user;
  const char *q = coda_req_query_string(req);
  size_t len = strlen(q) + sizeof "coda/?";
  char *location = coda_req_alloc(req, len);
  if (!location)
    return CODA_ENOMEM;
  snprintf(location, len, "coda/%s%s", *q ? "?" : "", q);
  coda_res_status(res, 302);
  coda_res_header(res, "Cache-Control", "no-store");
  return coda_res_header(res, "Location", location);
}

int coda__admin_dashboard_mount(coda_app *app, coda__admin *a) {
  int rc = coda_app_route(app, "GET", "/coda", get_bare, a);
  if (rc == 0)
    rc = coda_app_route(app, "GET", "/coda/", get_page, a);
  if (rc == 0)
    rc = coda_app_route(app, "GET", "/coda/assets/{name}", get_asset, a);
  return rc;
}
