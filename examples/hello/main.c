/*
 * hello - the smallest coda program: one route, one background task.
 * Built against an installed coda by tests/install_test.sh (pkg-config and
 * CMake's find_package), so the installed header, library and package files
 * are proven to work. `hello --check` prints the version and exits.
 */
#include <coda.h>

#include <stdio.h>
#include <string.h>

static int greet_later(coda_task *t) {
  coda_log(coda_task_app(t), CODA_LOG_INFO, "hello again, %s", coda_task_str(t, 0));
  return 0;
}

static coda_task_def *greet;

static int hello(coda_req *req, coda_res *res, void *user) {
  (void)user;
  const char *name = coda_req_param(req, "name");
  int rc = coda_res_add_task(res, greet, "s", name);
  if (rc)
    return rc;
  coda_res_header(res, "Content-Type", "text/plain");
  return coda_res_body(res, name, strlen(name));
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--check") == 0) {
    printf("coda %s\n", coda_version());
    return 0;
  }
  coda_app *app = coda_app_new();
  greet = coda_app_task(app, "greet_later", greet_later, CODA_EXEC_THREAD);
  coda_app_route(app, "GET", "/hello/{name}", hello, NULL);
  int rc = coda_app_run(app);
  coda_app_free(app);
  return rc == 0 ? 0 : 1;
}
