/*
 * webhook.h - the demo's outgoing webhook: an HTTP POST sent from a LOOP
 * task without blocking its event loop (libcurl's multi_socket interface
 * driven by the task's libuv loop).
 */
#ifndef CODA_DEMO_WEBHOOK_H
#define CODA_DEMO_WEBHOOK_H

#include <coda.h>
#include <stddef.h>

/* Starts POSTing `body` (`len` bytes, Content-Type: application/json) to
 * `url` on the task's loop. Only http:// URLs are accepted; redirects are
 * not followed. The request times out after 10 s (5 s to connect).
 *
 * Returns CODA_PENDING once the request has started: the task then
 * finishes through coda_task_done(t, 0, NULL) on a 2xx answer, or
 * coda_task_done(t, CODA_EIO, "webhook: <curl error or HTTP status>")
 * otherwise. Returns a negative CODA_E* code if it could not start
 * (CODA_EINVAL for a bad argument, a non-http URL or a task that is not a
 * LOOP task; CODA_ENOMEM); then nothing more happens and the task function
 * should return that code.
 *
 * `url` and `body` are copied; the caller keeps ownership. A POST still
 * running when the server stops keeps its loop running until it ends (at
 * most its 10 s timeout), then finishes the task as usual. Thread: the
 * task's loop thread, from a LOOP task function. */
int demo_webhook_post(coda_task *t, const char *url, const char *body, size_t len);

#endif /* CODA_DEMO_WEBHOOK_H */
