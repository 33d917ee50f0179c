/*
 * coda-demo - the seeds' examples in C, and the program `make run` starts.
 *
 *   coda-demo [--listen HOST:PORT] [--threads N] [--quiet]
 *
 * Routes are listed by GET /. Handlers here run on the event loop threads
 * and never block.
 */
#include <coda.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char plain_body[] = "{\"status\":\"ok\"}";

static const char index_body[] =
    "{\"name\":\"coda-demo\",\"routes\":["
    "{\"method\":\"GET\",\"path\":\"/\",\"does\":\"this list\"},"
    "{\"method\":\"GET\",\"path\":\"/plain\",\"does\":\"{\\\"status\\\":\\\"ok\\\"}, no task\"},"
    "{\"method\":\"POST\",\"path\":\"/echo\",\"does\":\"the request body back, verbatim\"}"
    "]}";

static int get_index(coda_req *req, coda_res *res, void *user) {
  (void)req;
  (void)user;
  coda_res_header(res, "Content-Type", "application/json");
  return coda_res_body_static(res, index_body, sizeof index_body - 1);
}

static int get_plain(coda_req *req, coda_res *res, void *user) {
  (void)req;
  (void)user;
  coda_res_header(res, "Content-Type", "application/json");
  return coda_res_body_static(res, plain_body, sizeof plain_body - 1);
}

static int post_echo(coda_req *req, coda_res *res, void *user) {
  (void)user;
  size_t len;
  const char *body = coda_req_body(req, &len);
  const char *type = coda_req_header(req, "Content-Type");
  coda_res_header(res, "Content-Type", type ? type : "application/octet-stream");
  return coda_res_body(res, body, len);
}

static void usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s [--listen HOST:PORT] [--threads N] [--quiet]\n"
          "  --listen   address to serve on (default 127.0.0.1:8000; port 0 = any)\n"
          "  --threads  event loops, one per thread (default: one per core)\n"
          "  --quiet    no access log\n",
          argv0);
}

int main(int argc, char **argv) {
  const char *listen = "127.0.0.1:8000";
  long threads = 0;
  int access_log = 1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
      listen = argv[++i];
    } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = strtol(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--quiet") == 0) {
      access_log = 0;
    } else {
      usage(argv[0]);
      return 2;
    }
  }
  coda_app *app = coda_app_new();
  if (!app) {
    fprintf(stderr, "coda-demo: out of memory\n");
    return 1;
  }
  int rc = coda_app_listen(app, listen);
  if (rc == 0 && threads > 0)
    rc = coda_app_set(app, CODA_OPT_THREADS, threads);
  if (rc == 0)
    rc = coda_app_set(app, CODA_OPT_ACCESS_LOG, access_log);
  if (rc == 0)
    rc = coda_app_route(app, "GET", "/", get_index, NULL);
  if (rc == 0)
    rc = coda_app_route(app, "GET", "/plain", get_plain, NULL);
  if (rc == 0)
    rc = coda_app_route(app, "POST", "/echo", post_echo, NULL);
  if (rc == 0)
    rc = coda_app_run(app);
  if (rc != 0)
    fprintf(stderr, "coda-demo: %s\n", coda_strerror(rc));
  coda_app_free(app);
  return rc == 0 ? 0 : 1;
}
