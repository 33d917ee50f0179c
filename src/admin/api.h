/*
 * api.h - what the files of the JSON admin API (api.c: overview, queues,
 * nodes, schedules; api_tasks.c: tasks and their actions) share. The API
 * itself is docs/admin-api.md.
 *
 * Every answer is built with jansson: task names, errors, arguments and
 * results are whatever the application wrote (quotes, `<script>`, bytes
 * that are not UTF-8), and only an encoder gets them right. Ids are JSON
 * strings of decimal digits: Redis ids pass 2^53, which a JavaScript
 * number cannot hold.
 *
 * Threads: the handlers run on the event loop of their request. The views
 * read the store from there (as coda_task_get() does). The actions are
 * written by the store thread while the loop goes on serving: their
 * response is deferred (coda__res_defer()) and answered from the loop's
 * inbox once written (api_tasks.c), since a bulk one may take seconds and
 * even one write waits for the batch being written. Pause and resume
 * still wait on the loop (one small write).
 */
#ifndef CODA_ADMIN_API_H
#define CODA_ADMIN_API_H

#include "admin/admin.h"
#include "tasks/durable.h"

#include <jansson.h>
#include <stdint.h>

/* The app's durable engine, or NULL when no task store was opened. */
coda__durable *coda__admin_durable(coda_app *app);

/* The store implements the operators' member `member` (store.h version 3):
 * the ops branch fills the three stores in turn. */
#define CODA__ADMIN_STORE_HAS(d, member)                                                 \
  ((d) && (d)->store->m->version >= 3 && (d)->store->m->member != NULL)

/* Answers `value` (stolen; NULL: out of memory, a 500) with `status`. */
int coda__admin_reply(coda_res *res, int status, json_t *value);

/* Answers a CODA_E* code of the engine as the API's error: 400 for
 * CODA_EINVAL, 404 CODA_ENOTFOUND, 409 CODA_ESTATE (`state_msg`), 503
 * CODA_ESTORE and CODA_ETIMEDOUT (a store busy past its timeout), 500
 * otherwise. Returns 0. */
int coda__admin_fail(coda_res *res, int rc, const char *state_msg);

/* 501 {"error":"not implemented yet"}: the store lacks the operators'
 * member the route needs. Returns 0. */
int coda__admin_not_ready(coda_res *res);

/* An id as a JSON string of decimal digits. */
json_t *coda__admin_id(uint64_t id);

/* Reads a decimal id ("1" to "18446744073709551615"); -1 otherwise. */
int coda__admin_parse_id(const char *s, uint64_t *id);

/* A string as a JSON string (bytes that are not UTF-8 become U+FFFD), or
 * null for NULL. */
json_t *coda__admin_text(const char *s);

/* {"queued":N,"scheduled":N,"running":N,...} from counts by state. */
json_t *coda__admin_counts(const long counts[6], long scheduled);

/* Logs an action (`admin: retry task 123 by 127.0.0.1:5000 (bearer)`,
 * with the failure when rc < 0) and counts it when it was carried out. */
void coda__admin_action_log(coda__admin *a, coda_req *req, coda__admin_action action,
                            const char *what, long rc);

/* A queue name for the log: characters outside A-Z a-z 0-9 _ . - (a name
 * that was refused) become '?', so a request cannot write lines of its
 * own into the log. At most cap - 1 bytes. */
const char *coda__admin_log_name(const char *name, char *buf, size_t cap);

/* Unix ms now (the wall clock: the store's times are unix ms). */
int64_t coda__admin_now_ms(void);

#endif /* CODA_ADMIN_API_H */
