/*
 * process_wire.c - the messages between the server and its PROCESS workers,
 * as bytes (formats in process.h). It owns the framing and the field
 * layout, nothing else: the arguments inside a TASK message are args.c's,
 * and what a message means is process_pool.c's and process_worker.c's.
 *
 * Runs in both processes: on the server's control loop (encoding TASK,
 * decoding DONE and PROGRESS) and in a worker (the other way round, and a
 * PROGRESS from any thread of a task). Pure functions on caller memory: no
 * I/O, no locks, no state.
 *
 * It must never read past a payload's end, whatever the lengths inside it
 * say: a task can scribble over its worker's memory before the worker
 * answers, and the server must survive that answer. Every reader checks
 * each field against what is left and reports a short payload.
 */
#include "tasks/process.h"

#include <string.h>

/* ---- writing ------------------------------------------------------------ */

static void put(coda__buf *b, const void *p, size_t n, int *rc) {
  if (*rc == 0 && coda__buf_append(b, p, n) != 0)
    *rc = CODA_ENOMEM;
}

/* Starts a frame of `kind` in b; returns where it starts. */
static size_t begin(coda__buf *b, uint32_t kind, int *rc) {
  size_t start = b->len;
  uint32_t hdr[2] = {0, kind};
  put(b, hdr, sizeof hdr, rc);
  return start;
}

/* Writes the frame's payload length, or on failure takes the frame back. */
static int end(coda__buf *b, size_t start, int rc) {
  if (rc) {
    b->len = start;
    return rc;
  }
  uint32_t len = (uint32_t)(b->len - start - CODA__MSG_HEADER);
  memcpy(b->base + start, &len, 4);
  return 0;
}

int coda__wire_put_task(coda__buf *b, const coda_task *t, const coda_task *after) {
  int rc = 0;
  size_t start = begin(b, CODA__MSG_TASK, &rc);
  uint16_t nlen = (uint16_t)strlen(t->def->name);
  int32_t attempt = t->attempt ? t->attempt : 1;
  uint8_t durable = t->durable, skip = after != NULL;
  uint8_t delivered = coda_task_delivered(t) != 0;
  uint64_t after_id = after ? after->id : 0;
  put(b, &t->id, 8, &rc);
  put(b, &attempt, 4, &rc);
  put(b, &durable, 1, &rc);
  put(b, &skip, 1, &rc);
  put(b, &delivered, 1, &rc);
  put(b, &after_id, 8, &rc);
  put(b, &t->request_id, 8, &rc);
  put(b, &nlen, 2, &rc);
  put(b, t->def->name, nlen, &rc);
  /* The traceparent with its NUL (0: none), for the worker's log lines. */
  const char *trace = coda_task_traceparent(t);
  uint8_t tlen = trace && strlen(trace) < 255 ? (uint8_t)(strlen(trace) + 1) : 0;
  put(b, &tlen, 1, &rc);
  put(b, trace ? trace : "", tlen, &rc);
  if (rc == 0)
    rc = coda__args_encode(t->args, t->nargs, b);
  return end(b, start, rc);
}

int coda__wire_put_done(coda__buf *b, const coda__done_msg *m) {
  int rc = 0;
  size_t start = begin(b, CODA__MSG_DONE, &rc);
  uint8_t has_result = m->has_result != 0, skipped = m->skipped != 0;
  uint32_t rlen = has_result ? m->result_len : 0;
  put(b, &m->id, 8, &rc);
  put(b, &m->rc, 4, &rc);
  put(b, &skipped, 1, &rc);
  put(b, &m->message_len, 4, &rc);
  put(b, m->message_len ? m->message : "", m->message_len, &rc);
  put(b, &has_result, 1, &rc);
  put(b, &rlen, 4, &rc);
  put(b, rlen ? m->result : "", rlen, &rc);
  put(b, &m->progress, 8, &rc);
  return end(b, start, rc);
}

void coda__wire_put_progress(char *out, uint64_t id, double fraction) {
  uint32_t hdr[2] = {16, CODA__MSG_PROGRESS};
  memcpy(out, hdr, 8);
  memcpy(out + 8, &id, 8);
  memcpy(out + 16, &fraction, 8);
}

void coda__wire_put_ready(char *out) {
  uint32_t hdr[2] = {0, CODA__MSG_READY};
  memcpy(out, hdr, 8);
}

/* ---- reading ------------------------------------------------------------ */

typedef struct reader {
  const char *p;
  size_t left;
  int bad;
} reader;

static const void *take(reader *r, size_t n) {
  if (r->bad || r->left < n) {
    r->bad = 1;
    return NULL;
  }
  const void *p = r->p;
  r->p += n;
  r->left -= n;
  return p;
}

#define TAKE(r, var)                                                                     \
  do {                                                                                   \
    const void *p_ = take((r), sizeof(var));                                             \
    if (p_)                                                                              \
      memcpy(&(var), p_, sizeof(var));                                                   \
  } while (0)

void coda__wire_header(const void *hdr, uint32_t *len, uint32_t *kind) {
  uint32_t h[2];
  memcpy(h, hdr, sizeof h);
  *len = h[0];
  *kind = h[1];
}

size_t coda__wire_next(const char *data, size_t len, uint32_t *kind, const char **payload,
                       size_t *payload_len) {
  uint32_t plen;
  if (len < CODA__MSG_HEADER)
    return 0;
  coda__wire_header(data, &plen, kind);
  if (len - CODA__MSG_HEADER < plen)
    return 0;
  *payload = data + CODA__MSG_HEADER;
  *payload_len = plen;
  return CODA__MSG_HEADER + (size_t)plen;
}

int coda__wire_get_task(const char *payload, size_t len, coda__task_msg *m) {
  reader r = {payload, len, 0};
  uint8_t durable = 0, skip = 0, delivered = 0;
  uint16_t nlen = 0;
  memset(m, 0, sizeof *m);
  m->attempt = 1;
  TAKE(&r, m->id);
  TAKE(&r, m->attempt);
  TAKE(&r, durable);
  TAKE(&r, skip);
  TAKE(&r, delivered);
  TAKE(&r, m->after);
  TAKE(&r, m->request_id);
  TAKE(&r, nlen);
  m->name = take(&r, nlen);
  m->name_len = nlen;
  uint8_t tlen = 0;
  TAKE(&r, tlen);
  m->trace = tlen ? take(&r, tlen) : NULL;
  if (m->trace && m->trace[tlen - 1] != '\0')
    r.bad = 1;
  m->durable = durable != 0;
  m->skip = skip != 0;
  m->delivered = delivered != 0;
  m->args = r.p;
  m->args_len = r.left;
  return r.bad ? CODA_EINVAL : 0;
}

int coda__wire_get_done(const char *payload, size_t len, coda__done_msg *m) {
  reader r = {payload, len, 0};
  uint8_t has_result = 0, skipped = 0;
  memset(m, 0, sizeof *m);
  TAKE(&r, m->id);
  TAKE(&r, m->rc);
  TAKE(&r, skipped);
  TAKE(&r, m->message_len);
  m->message = take(&r, m->message_len);
  TAKE(&r, has_result);
  TAKE(&r, m->result_len);
  m->result = take(&r, m->result_len);
  TAKE(&r, m->progress);
  m->has_result = has_result != 0;
  m->skipped = skipped != 0;
  return r.bad ? CODA_EINVAL : 0;
}

int coda__wire_get_progress(const char *payload, size_t len, uint64_t *id,
                            double *fraction) {
  reader r = {payload, len, 0};
  TAKE(&r, *id);
  TAKE(&r, *fraction);
  return r.bad ? CODA_EINVAL : 0;
}

int coda__wire_get_id(const char *payload, size_t len, uint64_t *id) {
  reader r = {payload, len, 0};
  TAKE(&r, *id);
  return r.bad ? CODA_EINVAL : 0;
}
