/*
 * cli.h - coda-admin, the command line of the admin API (docs/admin-api.md,
 * docs/operations.md): what the pieces of the program share.
 *
 * One process, one thread, one request at a time: every command is a GET or
 * a POST under URL/coda/api/ with `Authorization: Bearer TOKEN`, and the
 * answer printed as an aligned table (people) or as the API's JSON
 * (--json, scripts). Any failure is one line on stderr and an exit status
 * that says which kind (CLI_EXIT_*), so scripts can tell "not found" from
 * "server down".
 */
#ifndef CODA_ADMIN_CLI_H
#define CODA_ADMIN_CLI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Exit statuses (documented in usage and docs/operations.md). */
enum {
  CLI_EXIT_OK = 0,
  CLI_EXIT_ERROR = 1,    /* the server answered an error (400, 5xx) or bad JSON */
  CLI_EXIT_USAGE = 2,    /* the command line is wrong */
  CLI_EXIT_CONNECT = 3,  /* the server cannot be reached */
  CLI_EXIT_AUTH = 4,     /* 401 or 403: no token, a wrong one, or refused */
  CLI_EXIT_NOTFOUND = 5, /* 404: no such task or queue */
  CLI_EXIT_CONFLICT = 6, /* 409: the task's state does not allow it */
};

typedef struct cli {
  const char *url; /* the server, e.g. http://127.0.0.1:8000 (no trailing slash needed) */
  const char *token; /* never printed */
  int json;          /* print the API's JSON as it came */
  int once;          /* top: one frame */
  /* tasks filters, and the queue of retry-dead/delete-dead */
  const char *state, *queue, *name, *after, *limit;
  void *curl; /* one easy handle, reused: one connection for top */
  /* The last failure's line; with `hold`, kept and not printed yet (top
   * prints it once it has left the alternate screen). */
  char error[600];
  int hold;
} cli;

/* ---- client.c ---- */

/* An answer: the HTTP status and the body (owned, NUL-terminated). */
typedef struct cli_reply {
  long status;
  char *body;
  size_t len;
} cli_reply;

int cli_client_init(cli *c);
void cli_client_free(cli *c);
/* GET or POST URL/coda/api/PATH (PATH already escaped). On any failure
 * (transport, status >= 400, body not JSON when `out` is wanted) prints
 * one line on stderr and returns a CLI_EXIT_*; else 0 with *out the parsed
 * body (caller decrefs) and, when `raw` is not NULL, the body as it came
 * (caller frees). */
int cli_call(cli *c, const char *method, const char *path, json_t **out, char **raw);
/* Percent-escapes a path segment or query value into buf; NULL if too long. */
const char *cli_escape(const char *s, char *buf, size_t cap);

/* ---- table.c ---- */

typedef struct cli_table {
  int ncols, nrows, cap;
  const char **heads;
  unsigned right; /* bit i: column i is right-aligned (numbers) */
  char **cells;   /* nrows * ncols, owned */
} cli_table;

void cli_table_init(cli_table *t, int ncols, const char **heads, unsigned right);
/* Adds a row of ncols cells (copied; NULL prints "-"). */
int cli_table_row(cli_table *t, const char **cells);
void cli_table_print(const cli_table *t);
void cli_table_free(cli_table *t);

/* A string for a terminal: control characters (escape sequences in an
 * error message, say) become '?', so data never drives the terminal. */
const char *cli_clean(const char *s, char *buf, size_t cap);
/* An integer member (JSON number, or a string of digits such as ids) as
 * text, "-" when absent or null. */
const char *cli_num(json_t *obj, const char *key, char *buf, size_t cap);
/* A unix-ms timestamp member as "2026-12-04 11:27:03Z (5s ago)", or "-". */
const char *cli_when(json_t *obj, const char *key, int64_t now_ms, int with_date,
                     char *buf, size_t cap);
/* A span of ms as "950ms", "12s", "3m20s", "5h2m", "2d3h". */
const char *cli_span(int64_t ms, char *buf, size_t cap);
int64_t cli_now_ms(void);
/* The member as a string ("" for absent/null), for cells. */
const char *cli_str(json_t *obj, const char *key);

/* ---- commands.c ---- */

int cli_cmd_stats(cli *c);
int cli_cmd_tasks(cli *c);
int cli_cmd_task(cli *c, const char *id);
int cli_cmd_task_action(cli *c, const char *action, const char *id);
int cli_cmd_bulk(cli *c, const char *action);
int cli_cmd_queues(cli *c);
int cli_cmd_queue_action(cli *c, const char *action, const char *queue);
int cli_cmd_nodes(cli *c);
int cli_cmd_schedules(cli *c);
/* The queue table, shared with top. */
void cli_print_queues(json_t *queues);

/* ---- top.c ---- */

int cli_cmd_top(cli *c);

#endif /* CODA_ADMIN_CLI_H */
