/*
 * coda-admin - see and steer a coda app from a shell: its tasks, queues,
 * nodes and schedules, through the JSON admin API (coda_app_admin()).
 *
 *   coda-admin [--url URL] [--token TOKEN] [--json] COMMAND [ARGS]
 *
 * URL and token default to $CODA_URL (else http://127.0.0.1:8000) and
 * $CODA_ADMIN_TOKEN. Options may come before or after the command.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
  fputs(
      "usage: coda-admin [--url URL] [--token TOKEN] [--json] COMMAND [ARGS]\n"
      "\n"
      "reads (--json prints the API's JSON):\n"
      "  stats                      counts by state, processed and failed, rates\n"
      "  tasks [--state S] [--queue Q] [--name N] [--after ID] [--limit N]\n"
      "                             durable tasks, by id; S: queued scheduled running\n"
      "                             succeeded failed dead cancelled\n"
      "  task ID                    one task: attempts, errors, args, request, trace\n"
      "  queues                     sizes by state, latency, paused\n"
      "  nodes                      servers and workers, their queues and heartbeats\n"
      "  schedules                  periodic tasks and their next run\n"
      "  top [--once]               a live view, every second, until q or Ctrl-C\n"
      "actions:\n"
      "  retry ID | cancel ID | delete ID\n"
      "  retry-dead [--queue Q] | delete-dead [--queue Q]\n"
      "  pause QUEUE | resume QUEUE\n"
      "\n"
      "  --url URL      the app (default $CODA_URL, else http://127.0.0.1:8000)\n"
      "  --token TOKEN  the admin token (default $CODA_ADMIN_TOKEN)\n"
      "\n"
      "exit status: 0 done, 1 server error, 2 usage, 3 server unreachable,\n"
      "             4 not authorised (401/403), 5 not found, 6 wrong task state (409)\n",
      f);
}

/* An option taking a value; returns the value's index or -1 (usage). */
static int value_of(int argc, char **argv, int i, const char **out) {
  if (i + 1 >= argc) {
    fprintf(stderr, "coda-admin: %s needs a value\n", argv[i]);
    return -1;
  }
  *out = argv[i + 1];
  return i + 1;
}

/* Splits options from words; returns the number of words or -1. */
static int parse(cli *c, int argc, char **argv, char **words, int cap) {
  struct {
    const char *name;
    const char **slot;
  } opts[] = {{"--url", &c->url},     {"--token", &c->token}, {"--state", &c->state},
              {"--queue", &c->queue}, {"--name", &c->name},   {"--after", &c->after},
              {"--limit", &c->limit}};
  int n = 0;
  for (int i = 1; i < argc; i++) {
    size_t k = 0;
    for (; k < sizeof opts / sizeof opts[0]; k++)
      if (strcmp(argv[i], opts[k].name) == 0)
        break;
    if (k < sizeof opts / sizeof opts[0]) {
      if ((i = value_of(argc, argv, i, opts[k].slot)) < 0)
        return -1;
    } else if (strcmp(argv[i], "--json") == 0) {
      c->json = 1;
    } else if (strcmp(argv[i], "--once") == 0) {
      c->once = 1;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "coda-admin: unknown option %s\n", argv[i]);
      return -1;
    } else if (n < cap) {
      words[n++] = argv[i];
    } else {
      fprintf(stderr, "coda-admin: too many arguments\n");
      return -1;
    }
  }
  return n;
}

typedef struct command {
  const char *name;
  int nargs; /* words after the name */
} command;

static int run(cli *c, char **w, int n) {
  static const command table[] = {
      {"stats", 0},  {"tasks", 0},      {"task", 1},        {"retry", 1},  {"cancel", 1},
      {"delete", 1}, {"retry-dead", 0}, {"delete-dead", 0}, {"queues", 0}, {"pause", 1},
      {"resume", 1}, {"nodes", 0},      {"schedules", 0},   {"top", 0}};
  size_t k = 0;
  for (; k < sizeof table / sizeof table[0]; k++)
    if (strcmp(w[0], table[k].name) == 0)
      break;
  if (k == sizeof table / sizeof table[0]) {
    fprintf(stderr, "coda-admin: unknown command \"%s\" (coda-admin --help)\n", w[0]);
    return CLI_EXIT_USAGE;
  }
  if (n - 1 != table[k].nargs) {
    fprintf(stderr, "coda-admin: %s takes %s\n", w[0],
            table[k].nargs
                ? (w[0][0] == 'p' || w[0][0] == 'r' ? "one argument" : "a task id")
                : "no argument");
    return CLI_EXIT_USAGE;
  }
  const char *cmd = w[0], *arg = n > 1 ? w[1] : NULL;
  if (strcmp(cmd, "stats") == 0)
    return cli_cmd_stats(c);
  if (strcmp(cmd, "tasks") == 0)
    return cli_cmd_tasks(c);
  if (strcmp(cmd, "task") == 0)
    return cli_cmd_task(c, arg);
  if (strcmp(cmd, "retry") == 0 || strcmp(cmd, "cancel") == 0 ||
      strcmp(cmd, "delete") == 0)
    return cli_cmd_task_action(c, cmd, arg);
  if (strcmp(cmd, "retry-dead") == 0)
    return cli_cmd_bulk(c, "retry");
  if (strcmp(cmd, "delete-dead") == 0)
    return cli_cmd_bulk(c, "delete");
  if (strcmp(cmd, "queues") == 0)
    return cli_cmd_queues(c);
  if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0)
    return cli_cmd_queue_action(c, cmd, arg);
  if (strcmp(cmd, "nodes") == 0)
    return cli_cmd_nodes(c);
  if (strcmp(cmd, "schedules") == 0)
    return cli_cmd_schedules(c);
  return cli_cmd_top(c);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    }
    if (strcmp(argv[i], "--version") == 0) {
      printf("coda-admin %s\n", CODA_ADMIN_VERSION);
      return 0;
    }
  }
  cli c = {.url = getenv("CODA_URL"), .token = getenv("CODA_ADMIN_TOKEN")};
  char *words[4];
  int n = parse(&c, argc, argv, words, 4);
  if (n <= 0) {
    if (n == 0)
      usage(stderr);
    return CLI_EXIT_USAGE;
  }
  if (!c.url || !*c.url)
    c.url = "http://127.0.0.1:8000";
  if (strncmp(c.url, "http://", 7) != 0 && strncmp(c.url, "https://", 8) != 0) {
    fprintf(stderr, "coda-admin: --url must start with http:// or https://\n");
    return CLI_EXIT_USAGE;
  }
  if (cli_client_init(&c) != 0) {
    fprintf(stderr, "coda-admin: cannot start libcurl\n");
    return CLI_EXIT_ERROR;
  }
  int rc = run(&c, words, n);
  cli_client_free(&c);
  return rc;
}
