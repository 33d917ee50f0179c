/*
 * top.c - `coda-admin top`: the overview and the queues, redrawn every
 * second until q or Ctrl-C, with processed and failed per second.
 *
 * On a terminal it draws on the alternate screen and reads keys without
 * echo; both are undone on every way out (q, Ctrl-C, SIGTERM, an error).
 * When stdout is not a terminal it draws no escapes: one frame after
 * another, or one alone with --once. With --json each frame is one line
 * {"overview": ..., "queues": [...]} of the API's objects.
 */
#include "cli.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_asked;

static void on_signal(int sig) {
  (void)sig;
  stop_asked = 1;
}

/* Rates from the last two frames' totals (the server's own rates before
 * there are two). */
typedef struct top_state {
  int64_t at_ms;
  double processed, failed;
  int have;
} top_state;

static double total(json_t *o, const char *key) {
  return json_number_value(json_object_get(o, key));
}

static void print_frame(cli *c, json_t *ov, json_t *qs, top_state *st) {
  int64_t now = cli_now_ms();
  double proc = total(ov, "processed"), fail = total(ov, "failed_total");
  json_t *rates = json_object_get(ov, "rates");
  double pr = json_number_value(json_object_get(rates, "processed_per_s"));
  double fr = json_number_value(json_object_get(rates, "failed_per_s"));
  if (st->have && now > st->at_ms) {
    double secs = (double)(now - st->at_ms) / 1000.0;
    pr = (proc - st->processed) / secs;
    fr = (fail - st->failed) / secs;
  }
  *st = (top_state){now, proc, fail, 1};
  char clock[32];
  time_t secs = (time_t)(now / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  strftime(clock, sizeof clock, "%H:%M:%SZ", &tm);
  char u[300], s[64], v[64];
  printf("coda-admin top  %s  store %s  coda %s  %s\n\n", cli_clean(c->url, u, sizeof u),
         cli_clean(cli_str(ov, "store"), s, sizeof s),
         cli_clean(cli_str(ov, "version"), v, sizeof v), clock);
  printf("processed %8.1f/s   total %.0f\n", pr, proc);
  printf("failed    %8.1f/s   total %.0f\n\n", fr, fail);
  json_t *counts = json_object_get(ov, "counts");
  static const char *const states[] = {"queued", "scheduled", "running",  "succeeded",
                                       "failed", "dead",      "cancelled"};
  for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
    char n[24];
    printf("%s%s %s", i ? "  " : "", states[i], cli_num(counts, states[i], n, sizeof n));
  }
  char nn[24], rq[24];
  printf("\nnodes %s  http requests %s\n\n", cli_num(ov, "nodes", nn, sizeof nn),
         cli_num(json_object_get(ov, "http"), "requests", rq, sizeof rq));
  cli_print_queues(json_object_get(qs, "queues"));
}

/* One frame: both calls, then the drawing. */
static int frame(cli *c, top_state *st, int screen) {
  json_t *ov = NULL, *qs = NULL;
  int rc = cli_call(c, "GET", "overview", &ov, NULL);
  if (rc == 0)
    rc = cli_call(c, "GET", "queues", &qs, NULL);
  if (rc == 0 && c->json) {
    json_t *both =
        json_pack("{s:O, s:O}", "overview", ov, "queues", json_object_get(qs, "queues"));
    char *line = both ? json_dumps(both, JSON_COMPACT) : NULL;
    if (line)
      printf("%s\n", line);
    free(line);
    json_decref(both);
  } else if (rc == 0) {
    if (screen)
      fputs("\033[H\033[2J", stdout); /* home, clear */
    print_frame(c, ov, qs, st);
    if (screen)
      fputs("\n(q or Ctrl-C to quit)", stdout);
    else if (!c->once)
      putchar('\n');
  }
  fflush(stdout);
  json_decref(ov);
  json_decref(qs);
  return rc;
}

/* Waits up to a second for q (a terminal's key) or a signal. */
static int wait_tick(int keys) {
  struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
  int64_t until = cli_now_ms() + 1000;
  for (int64_t left; !stop_asked && (left = until - cli_now_ms()) > 0;) {
    int n = poll(keys ? &p : NULL, keys ? 1 : 0, (int)left);
    if (n < 0 && errno != EINTR)
      return 1;
    char ch;
    if (n > 0 && read(STDIN_FILENO, &ch, 1) <= 0)
      keys = 0; /* stdin closed: keys are gone, Ctrl-C still works */
    else if (n > 0 && (ch == 'q' || ch == 'Q' || ch == 3 /* ^C in raw mode */))
      return 1;
  }
  return stop_asked;
}

int cli_cmd_top(cli *c) {
  top_state st = {0};
  if (c->once)
    return frame(c, &st, 0);
  int screen = isatty(STDOUT_FILENO) && !c->json;
  int keys = screen && isatty(STDIN_FILENO);
  struct termios saved, raw;
  if (keys && tcgetattr(STDIN_FILENO, &saved) == 0) {
    raw = saved;
    raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    tcsetattr(STDIN_FILENO, TCSANOW, &raw);
  } else {
    keys = 0;
  }
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  if (screen)
    fputs("\033[?1049h\033[?25l", stdout); /* alternate screen, no cursor */
  c->hold = screen; /* an error on that screen would vanish with it */
  int rc = 0;
  while (!stop_asked && (rc = frame(c, &st, screen)) == 0 && !wait_tick(keys))
    ;
  if (screen)
    fputs("\033[?25h\033[?1049l", stdout);
  fflush(stdout);
  if (keys)
    tcsetattr(STDIN_FILENO, TCSANOW, &saved);
  if (rc && c->hold)
    fprintf(stderr, "%s\n", c->error);
  return rc;
}
