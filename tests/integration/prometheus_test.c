/*
 * prometheus_test.c - a real Prometheus (Debian's /usr/bin/prometheus)
 * scrapes the demo's GET /metrics with the admin token, and a PromQL query
 * through its HTTP API returns the number of tasks this test ran.
 *
 * The test starts both programs: the demo on port 0 (no periodic tick, so
 * every task is one of ours), Prometheus on an ephemeral loopback port with
 * a config and a TSDB in a temp dir, scraping every second. Prometheus is
 * started with PR_SET_PDEATHSIG, so it dies with the test even if the test
 * crashes, and is stopped (SIGTERM, then SIGKILL) on every path.
 */
#include "harness.h"
#include "node.h"
#include "test.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROMETHEUS "/usr/bin/prometheus"
#define TOKEN "prometheus-test-token-0123456789"
#define NTASKS 37

/* A port nobody listens on now (the kernel's choice for port 0). Another
 * program could take it before Prometheus binds it: the start then fails
 * and is tried again on another port. */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

/* Starts Prometheus; its output goes to log. The child only execs (this
 * process has no threads of its own here). */
static pid_t start_prometheus(const char *dir, int port, const char *log) {
  char config[300], storage[300], listen[64];
  snprintf(config, sizeof config, "--config.file=%s/prometheus.yml", dir);
  snprintf(storage, sizeof storage, "--storage.tsdb.path=%s/data", dir);
  snprintf(listen, sizeof listen, "--web.listen-address=127.0.0.1:%d", port);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0)
    return pid;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)
    _exit(127); /* the test died before the line above */
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
  }
  execl(PROMETHEUS, PROMETHEUS, config, storage, listen, "--log.level=warn",
        (char *)NULL);
  _exit(127);
}

typedef struct {
  char *data;
  size_t len;
} body;

static size_t on_data(char *p, size_t size, size_t n, void *user) {
  body *b = user;
  char *more = realloc(b->data, b->len + size * n + 1);
  if (!more)
    return 0;
  memcpy(more + b->len, p, size * n);
  b->len += size * n;
  more[b->len] = '\0';
  b->data = more;
  return size * n;
}

/* GET url; returns the status (0 if no answer), the body in *out (free). */
static long http_get(const char *url, char **out) {
  CURL *c = curl_easy_init();
  body b = {NULL, 0};
  long status = 0;
  if (!c)
    return 0;
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
  if (curl_easy_perform(c) == CURLE_OK)
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(c);
  if (out)
    *out = b.data;
  else
    free(b.data);
  return status;
}

/* Waits until Prometheus answers /-/ready, or it exits, or the deadline. */
static int wait_ready(pid_t pid, int port, int ms) {
  char url[96];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/-/ready", port);
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  while (tc_now_ms() < end) {
    if (http_get(url, NULL) == 200)
      return 0;
    if (waitpid(pid, NULL, WNOHANG) == pid)
      return -1; /* ended: the port was taken, or a bad config */
    tc_sleep_ms(100);
  }
  return -1;
}

/* The value of an instant query whose result is one sample, or -1. */
static double query(int port, const char *promql) {
  CURL *c = curl_easy_init();
  char *q = c ? curl_easy_escape(c, promql, 0) : NULL;
  char url[1024];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/api/v1/query?query=%s", port,
           q ? q : "");
  curl_free(q);
  if (c)
    curl_easy_cleanup(c);
  char *text = NULL;
  double v = -1;
  if (http_get(url, &text) == 200 && text) {
    json_t *root = json_loads(text, 0, NULL);
    json_t *result = json_object_get(json_object_get(root, "data"), "result");
    json_t *value = json_object_get(json_array_get(result, 0), "value");
    const char *s = json_string_value(json_array_get(value, 1));
    if (json_array_size(result) == 1 && s)
      v = strtod(s, NULL);
    json_decref(root);
  }
  free(text);
  return v;
}

/* Polls a query until it returns want, or the deadline; returns the last
 * value seen. */
static double wait_value(int port, const char *promql, double want, int ms) {
  uint64_t end = tc_now_ms() + (uint64_t)ms;
  double v;
  while ((v = query(port, promql)) != want && tc_now_ms() < end)
    tc_sleep_ms(250);
  return v;
}

static int write_config(const char *dir, int demo_port) {
  char path[300];
  snprintf(path, sizeof path, "%s/prometheus.yml", dir);
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  fprintf(f,
          "global:\n"
          "  scrape_interval: 1s\n"
          "  evaluation_interval: 1s\n"
          "scrape_configs:\n"
          "  - job_name: coda\n"
          "    scrape_interval: 1s\n"
          "    scrape_timeout: 1s\n"
          "    authorization:\n"
          "      credentials: %s\n"
          "    static_configs:\n"
          "      - targets: ['127.0.0.1:%d']\n",
          TOKEN, demo_port);
  return fclose(f);
}

/* The checks, with both programs up. Never returns early: the caller
 * stops them afterwards, whatever happened here. */
static void scrape_and_query(int prom_port, int demo_port) {
  /* Scraped with the token: the target is up. */
  CHECK_EQ_INT(wait_value(prom_port, "up{job=\"coda\"}", 1, 30000), 1);
  char buf[4096];
  int ok = 0;
  for (int i = 0; i < NTASKS; i++)
    ok += tc_get(demo_port, "/trivial", buf, sizeof buf, 5000) == 200;
  CHECK_EQ_INT(ok, NTASKS);
  double v = wait_value(prom_port, "sum(coda_tasks_total{outcome=\"succeeded\"})", NTASKS,
                        60000);
  if (v != NTASKS)
    fprintf(stderr, "  sum(coda_tasks_total{outcome=\"succeeded\"}) = %g, want %d\n", v,
            NTASKS);
  CHECK(v == NTASKS);
  CHECK(wait_value(prom_port,
                   "sum(coda_tasks_total{task=\"trivial\",executor=\"thread\"})", NTASKS,
                   10000) == NTASKS);
  CHECK(wait_value(prom_port,
                   "sum(coda_http_requests_total{method=\"GET\",route=\"/trivial\","
                   "status=\"2xx\"})",
                   NTASKS, 10000) == NTASKS);
  CHECK(wait_value(prom_port, "sum(coda_task_duration_seconds_count{task=\"trivial\"})",
                   NTASKS, 10000) == NTASKS);
  CHECK(wait_value(prom_port, "coda_build_info", 1, 10000) == 1);
  /* Without the token the demo refuses a scrape. */
  CHECK_EQ_INT(tc_get(demo_port, "/metrics", buf, sizeof buf, 5000), 401);
}

TEST(prometheus_scrapes_the_demo) {
  struct stat st;
  if (stat(PROMETHEUS, &st) != 0) {
    fprintf(stderr,
            "  %s is missing: run scripts/deps (the test needs the real server)\n",
            PROMETHEUS);
    CHECK(0 && "prometheus installed");
    return;
  }
  char dir[] = "/tmp/coda-prometheus-XXXXXX";
  REQUIRE(mkdtemp(dir));
  char demo_log[300], prom_log[300];
  snprintf(demo_log, sizeof demo_log, "%s/demo.log", dir);
  snprintf(prom_log, sizeof prom_log, "%s/prometheus.log", dir);
  char *argv[] = {CODA_DEMO_PATH,  "--listen", "127.0.0.1:0", "--threads", "2",
                  "--store",       "memory",   "--tick",      "0",         "--quiet",
                  "--admin-token", TOKEN,      NULL};
  tc_node demo;
  int rc = tc_node_start_logged(&demo, argv, demo_log,
                                "listening on http://127.0.0.1:", 20000);
  CHECK_EQ_INT(rc, 0);
  pid_t prom = -1;
  int prom_port = -1;
  if (rc == 0 && write_config(dir, demo.port) == 0) {
    for (int attempt = 0; attempt < 3 && prom_port < 0; attempt++) {
      int port = free_port();
      prom = port > 0 ? start_prometheus(dir, port, prom_log) : -1;
      if (prom > 0 && wait_ready(prom, port, 60000) == 0) {
        prom_port = port;
      } else if (prom > 0) {
        kill(prom, SIGKILL);
        waitpid(prom, NULL, 0);
        prom = -1;
      }
    }
  }
  CHECK(prom_port > 0);
  if (prom_port > 0)
    scrape_and_query(prom_port, demo.port);
  if (prom > 0) {
    tc_node p = {prom, -1, prom_port};
    CHECK(tc_node_end(&p, SIGTERM, 20000) != -1);
  }
  CHECK(tc_node_end(&demo, SIGTERM, 20000) != -1);
  if (test__failures_in_case) {
    static char text[1 << 14];
    tc_read_file(prom_log, text, sizeof text);
    fprintf(stderr, "  prometheus log:\n%s\n", text);
  }
  tc_remove_tree(dir);
}

RUN_TESTS(prometheus, TEST_CASE(prometheus_scrapes_the_demo))
