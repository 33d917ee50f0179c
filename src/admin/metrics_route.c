/*
 * metrics_route.c - GET /metrics: the app's metrics in the Prometheus text
 * format 0.0.4 (coda_app_metrics_text()), behind the admin token like every
 * admin route. Prometheus sends the token with `authorization:
 * credentials:` in its scrape config (docs/operations.md).
 *
 * Runs on a loop thread: a scrape sums every thread's shard and asks the
 * engine's gauges, a few microseconds per family; the text is handed to the
 * response as a borrowed body and freed once written.
 */
#include "admin/admin.h"

#include <stdlib.h>

static void free_text(void *data, void *arg) {
  (void)arg;
  free(data);
}

static int get_metrics(coda_req *req, coda_res *res, void *user) {
  coda__admin *a = user;
  if (coda__admin_guard(a, req, res, CODA__ADMIN_READ))
    return 0;
  char *text;
  size_t len;
  int rc = coda_app_metrics_text(a->app, &text, &len);
  if (rc != 0)
    return rc;
  coda_res_header(res, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  return coda_res_body_borrow(res, text, len, free_text, NULL);
}

int coda__admin_metrics_mount(coda_app *app, coda__admin *a) {
  return coda_app_route(app, "GET", "/metrics", get_metrics, a);
}
