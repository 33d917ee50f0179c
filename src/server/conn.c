/*
 * conn.c - one client connection (see conn.h).
 *
 * Thread: the connection's loop, always. Life: accepted by the loop's
 * listener, freed in the close callback, except that an open stream keeps
 * the memory alive until coda_stream_end().
 *
 * Flow: every read appends to `rbuf` and runs process(), which parses and
 * dispatches every complete request in the buffer (pipelining), queues all
 * their responses in `pending`, and flushes once: the responses of one read
 * leave in one write. A partial write moves `pending` to `inflight` and
 * continues through uv_write; later responses wait in `pending`. Responses
 * therefore always leave in request order.
 *
 * Must never: block, allocate on the keep-alive fast path, or read a byte of
 * the next request before the current one is answered (streaming pauses
 * parsing, not reading).
 */
#include "server/conn.h"

#include "http/path.h"
#include "http/response.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define READ_BUF_MIN 16384
#define READ_BUF_SHRINK 65536 /* a buffer grown past this shrinks when idle */
#define LINGER_MS 2000        /* reading after our FIN, so the peer gets it */
#define CHUNK_FRAMING_SLACK 16384
/* uv_write is handed at most this much at a time, so a slow but steady
 * reader shows progress to the send-stall timeout between completions. */
#define WRITE_SLICE (64 * 1024)

static void process(coda__conn *c);
static void close_now(coda__conn *c);
static void conn_flush(coda__conn *c);
static void update_reading(coda__conn *c);

static uint64_t loop_now(const coda__conn *c) { return uv_now(&c->loop->uv); }

static const coda__server_config *conn_cfg(const coda__conn *c) {
  return &c->loop->server->cfg;
}

/* ---- output ---------------------------------------------------------- */

coda__buf *coda__conn_out(coda__conn *c) { return &c->pending.bytes; }

static size_t batch_size(const coda__out_batch *b) {
  size_t n = b->bytes.len;
  for (int i = 0; i < b->nsegs; i++)
    n += b->segs[i].len;
  return n;
}

static size_t out_unsent(const coda__conn *c) {
  return batch_size(&c->pending) + batch_size(&c->inflight) - c->inflight_done;
}

static void batch_release(coda__out_batch *b) {
  for (int i = 0; i < b->nsegs; i++)
    if (b->segs[i].release)
      b->segs[i].release(b->segs[i].release_data, b->segs[i].release_arg);
  b->nsegs = 0;
  b->bytes.len = 0;
}

static void batch_free(coda__out_batch *b) {
  batch_release(b);
  coda__buf_free(&b->bytes);
  free(b->segs);
  b->segs = NULL;
  b->segs_cap = 0;
}

int coda__conn_out_external(coda__conn *c, const char *data, size_t len,
                            coda__release_cb release, void *release_data,
                            void *release_arg) {
  coda__out_batch *b = &c->pending;
  if (b->nsegs == b->segs_cap) {
    int cap = b->segs_cap ? b->segs_cap * 2 : 4;
    coda__out_segment *segs = realloc(b->segs, (size_t)cap * sizeof *segs);
    if (!segs)
      return CODA_ENOMEM;
    b->segs = segs;
    b->segs_cap = cap;
  }
  b->segs[b->nsegs++] =
      (coda__out_segment){b->bytes.len, data, len, release, release_data, release_arg};
  return 0;
}

int coda__conn_mark_response(coda__conn *c, coda__written_cb cb, void *arg) {
  if (!cb)
    return 0;
  if (c->nmarks == c->marks_cap) {
    int cap = c->marks_cap ? c->marks_cap * 2 : 8;
    coda__out_mark *m = malloc((size_t)cap * sizeof *m);
    if (!m)
      return CODA_ENOMEM;
    for (int i = 0; i < c->nmarks; i++)
      m[i] = c->marks[(c->marks_head + i) % c->marks_cap];
    free(c->marks);
    c->marks = m;
    c->marks_cap = cap;
    c->marks_head = 0;
  }
  uint64_t end = c->written_total + out_unsent(c);
  c->marks[(c->marks_head + c->nmarks) % c->marks_cap] = (coda__out_mark){end, cb, arg};
  c->nmarks++;
  return 0;
}

/* Calls the written callbacks of every response now fully written; with
 * failed set, of every response left (the connection died). The access log
 * goes first, so that a task's lines follow its request's. */
static void fire_marks(coda__conn *c, int failed) {
  int flushed = 0;
  while (c->nmarks > 0) {
    coda__out_mark *m = &c->marks[c->marks_head];
    if (!failed && m->end > c->written_total)
      return;
    if (!flushed) {
      coda__loop_flush_log(c->loop);
      flushed = 1;
    }
    coda__out_mark done = *m;
    c->marks_head = (c->marks_head + 1) % c->marks_cap;
    c->nmarks--;
    done.cb(done.arg, !failed);
  }
}

/* Fills iov with the batch's pieces after `skip` bytes; returns the count
 * and the bytes covered in *total. */
static int build_iov(const coda__out_batch *b, size_t skip, uv_buf_t *iov, int max,
                     size_t limit, size_t *total) {
  int n = 0;
  size_t at = 0, sum = 0;
  for (int i = 0; i <= b->nsegs && n < max && sum < limit; i++) {
    size_t end = i < b->nsegs ? b->segs[i].at : b->bytes.len;
    const char *pieces[2] = {b->bytes.base + at, i < b->nsegs ? b->segs[i].data : NULL};
    size_t lens[2] = {end - at, i < b->nsegs ? b->segs[i].len : 0};
    for (int k = 0; k < 2 && n < max; k++) {
      size_t len = lens[k];
      const char *p = pieces[k];
      if (skip >= len) {
        skip -= len;
        continue;
      }
      p += skip;
      len -= skip;
      skip = 0;
      if (len > limit - sum)
        len = limit - sum;
      if (len == 0)
        break;
      iov[n++] = uv_buf_init((char *)p, (unsigned)len);
      sum += len;
    }
    at = end;
  }
  *total = sum;
  return n;
}

static void start_linger(coda__conn *c);
static void on_write(uv_write_t *req, int status);

static void start_write(coda__conn *c) {
  size_t total;
  int n = build_iov(&c->inflight, c->inflight_done, c->iov, 16, WRITE_SLICE, &total);
  c->write_active = 1;
  c->write_req.data = c;
  int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, c->iov, (unsigned)n, on_write);
  if (rc) {
    c->write_active = 0;
    close_now(c);
  }
}

static void wrote(coda__conn *c, size_t n) {
  c->written_total += n;
  /* The loop's time is cached when its iteration begins: a handler that
   * ran for seconds earlier in this iteration would make this write look
   * that much older, and the send timeout would cut a reader who is
   * keeping up. The refresh is a clock read (vDSO), no system call. */
  uv_update_time(&c->loop->uv);
  c->last_write = loop_now(c);
  fire_marks(c, 0);
}

static int can_process(const coda__conn *c) {
  return (c->state == CODA__CONN_HEAD || c->state == CODA__CONN_BODY) && c->rlen > 0 &&
         !c->closed && out_unsent(c) < conn_cfg(c)->write_high_water;
}

static void after_output_drained(coda__conn *c) {
  if (c->state == CODA__CONN_HEAD && c->rlen == 0)
    c->idle_since = loop_now(c); /* keep-alive idleness starts now */
  if (c->state == CODA__CONN_CLOSING && !c->stream_open)
    start_linger(c);
  else if (!c->in_process && can_process(c))
    process(c); /* requests parked behind the high-water mark */
  else
    update_reading(c);
}

static void on_write(uv_write_t *req, int status) {
  coda__conn *c = req->data;
  c->write_active = 0;
  if (status < 0) {
    if (status != UV_ECANCELED)
      close_now(c);
    return;
  }
  /* uv_write wrote every byte of the iov start_write() gave it. */
  size_t n;
  build_iov(&c->inflight, c->inflight_done, c->iov, 16, WRITE_SLICE, &n);
  c->inflight_done += n;
  wrote(c, n);
  if (c->inflight_done < batch_size(&c->inflight)) {
    start_write(c);
    return;
  }
  batch_release(&c->inflight);
  c->inflight_done = 0;
  conn_flush(c);
}

static void conn_flush(coda__conn *c) {
  if (c->write_active || c->closed)
    return;
  coda__out_batch *b = &c->pending;
  size_t total = batch_size(b);
  if (total == 0) {
    after_output_drained(c);
    return;
  }
  size_t covered;
  int n = build_iov(b, 0, c->iov, 16, SIZE_MAX, &covered);
  int w = uv_try_write((uv_stream_t *)&c->tcp, c->iov, (unsigned)n);
  if (w == UV_EAGAIN || w == UV_ENOSYS)
    w = 0;
  if (w < 0) {
    close_now(c);
    return;
  }
  if (w > 0)
    wrote(c, (size_t)w);
  if ((size_t)w == total) {
    batch_release(b);
    after_output_drained(c);
    return;
  }
  /* Partial: the rest goes through uv_write while new output accumulates
   * in the other batch. */
  coda__out_batch tmp = c->inflight;
  c->inflight = c->pending;
  c->pending = tmp;
  c->inflight_done = (size_t)w;
  start_write(c);
  update_reading(c);
}

/* ---- closing --------------------------------------------------------- */

static void conn_free(coda__conn *c) {
  batch_free(&c->pending);
  batch_free(&c->inflight);
  free(c->marks);
  free(c->rbuf);
  free(c->fields);
  coda__arena_reset(&c->arena);
  free(c);
}

static void on_close(uv_handle_t *h) {
  coda__conn *c = h->data;
  coda__loop *loop = c->loop;
  const coda__server_hooks *hooks = &loop->server->hooks;
  fire_marks(c, 1);
  if (hooks->release && !c->gated)
    hooks->release(hooks->data, c->exchange);
  batch_release(&c->pending);
  batch_release(&c->inflight);
  coda__queue_remove(&c->link);
  atomic_fetch_sub(&loop->server->nconnections, 1);
  c->close_done = 1;
  if (!c->stream_open && !c->gated)
    conn_free(c);
  coda__loop_conn_closed(loop);
}

static void close_now(coda__conn *c) {
  if (c->closed)
    return;
  c->closed = 1;
  c->read_active = 0;
  uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  coda__conn *c = req->data;
  /* While the server stops, the FIN is enough: waiting for the peer's
   * would hold the shutdown for LINGER_MS. */
  if (status < 0 || c->read_eof || c->loop->stopping)
    close_now(c);
}

/* Sends FIN after the last response, then reads and discards until the
 * peer closes or LINGER_MS: closing with unread input would send RST and
 * could destroy the response before the client reads it. */
static void start_linger(coda__conn *c) {
  if (c->lingering || c->closed)
    return;
  c->lingering = 1;
  c->linger_until = loop_now(c) + LINGER_MS;
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    close_now(c);
    return;
  }
  c->rlen = 0;
  update_reading(c);
}

int coda__conn_idle(const coda__conn *c) {
  return c->state == CODA__CONN_HEAD && c->rlen == 0 && !c->write_active && !c->gated &&
         batch_size(&c->pending) == 0 && !c->stream_open;
}

void coda__conn_shutdown(coda__conn *c, int now) {
  if (c->closed)
    return;
  if (now || coda__conn_idle(c) || c->lingering) {
    close_now(c);
    return;
  }
  c->keep_alive = 0;
  if (c->state == CODA__CONN_HEAD && c->rlen == 0) {
    c->state = CODA__CONN_CLOSING;
    conn_flush(c);
  }
}

/* ---- reading --------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  coda__conn *c = h->data;
  /* One byte stays free so a body can be NUL-terminated in place. */
  if (c->rlen + 1 >= c->rcap) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen - 1));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  coda__conn *c = s->data;
  if (n > 0) {
    c->last_read = loop_now(c);
    if (c->state == CODA__CONN_BODY)
      c->body_bytes += (uint64_t)n;
    if (c->lingering) {
      c->rlen = 0; /* discard: we are done with this peer */
      return;
    }
    c->rlen += (size_t)n;
    process(c);
    return;
  }
  if (n == 0)
    return;
  if (n == UV_ENOBUFS) {
    update_reading(c);
    return;
  }
  c->read_eof = 1;
  uv_read_stop(s);
  c->read_active = 0;
  if (n != UV_EOF || c->lingering || coda__conn_idle(c) || c->state == CODA__CONN_BODY ||
      (c->state == CODA__CONN_HEAD && c->rlen > 0)) {
    close_now(c);
    return;
  }
  /* The peer half-closed after its requests: answer them, then close. */
  c->keep_alive = 0;
  if (c->state == CODA__CONN_HEAD)
    c->state = CODA__CONN_CLOSING;
  conn_flush(c);
}

static void update_reading(coda__conn *c) {
  if (c->closed)
    return;
  /* While a response is gated, reading goes on (into the free part of the
   * buffer only: the gated request stays in place), so a gate costs no
   * epoll change. */
  int want =
      !c->read_eof &&
      (c->lingering ||
       ((c->state == CODA__CONN_HEAD || c->state == CODA__CONN_BODY ||
         c->state == CODA__CONN_STREAMING || c->state == CODA__CONN_GATED) &&
        c->rlen + 1 < c->rcap && out_unsent(c) < conn_cfg(c)->write_high_water));
  if (want && !c->read_active) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
      c->read_active = 1;
  } else if (!want && c->read_active) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->read_active = 0;
  }
}

static int grow_rbuf(coda__conn *c, size_t need) {
  if (need <= c->rcap)
    return 0;
  size_t cap = c->rcap;
  while (cap < need)
    cap *= 2;
  char *p = realloc(c->rbuf, cap);
  if (!p)
    return CODA_ENOMEM;
  c->rbuf = p;
  c->rcap = cap;
  return 0;
}

/* ---- access log ------------------------------------------------------ */

/* The JSON form of an access log line: {"time", "level", "message",
 * "method", "path", "status", "peer", "request_id", "duration_ms"}. The
 * path is escaped after redaction, so no token reaches it either. */
static void access_log_json(coda__conn *c, int status, const char *method, int mlen,
                            const char *target, int tlen) {
  coda__loop *loop = c->loop;
  /* Escaping makes a byte at most 6; the rest is bounded. */
  size_t need = 6 * (2 * (size_t)tlen + 2 * (size_t)mlen + strlen(c->peer)) + 256;
  if (coda__buf_reserve(&loop->log, need + (size_t)tlen) != 0)
    return;
  char *line = loop->log.base + loop->log.len;
  char *redacted = line + need; /* scratch past the line, in the same reserve */
  size_t rlen = coda__http_redact_target(redacted, target, (size_t)tlen);
  char when[25];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  coda__log_time(when, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
  size_t n = (size_t)snprintf(line, need,
                              "{\"time\":\"%s\",\"level\":\"info\",\"message\":\"", when);
  n += coda__json_escape(line + n, need - n, method, (size_t)mlen, NULL);
  line[n++] = ' ';
  n += coda__json_escape(line + n, need - n, redacted, rlen, NULL);
  n += (size_t)snprintf(line + n, need - n, " %d\",\"method\":\"", status);
  n += coda__json_escape(line + n, need - n, method, (size_t)mlen, NULL);
  n += (size_t)snprintf(line + n, need - n, "\",\"path\":\"");
  n += coda__json_escape(line + n, need - n, redacted, rlen, NULL);
  n += (size_t)snprintf(line + n, need - n, "\",\"status\":%d,\"peer\":\"", status);
  n += coda__json_escape(line + n, need - n, c->peer, strlen(c->peer), NULL);
  line[n++] = '"';
  if (c->head_base && c->request_id)
    n += (size_t)snprintf(line + n, need - n, ",\"request_id\":\"%llu\"",
                          (unsigned long long)c->request_id);
  if (c->head_base && c->dispatch_ns)
    n += (size_t)snprintf(line + n, need - n, ",\"duration_ms\":%.3f",
                          (double)(uv_hrtime() - c->dispatch_ns) / 1e6);
  n += (size_t)snprintf(line + n, need - n, "}\n");
  loop->log.len += n < need ? n : need;
}

void coda__conn_access_log(coda__conn *c, int status) {
  coda__loop *loop = c->loop;
  if (!conn_cfg(c)->access_log)
    return;
  const char *method = "-", *target = "-";
  int mlen = 1, tlen = 1, minor = 1;
  if (c->head_base) {
    method = c->head_base + c->head.method.off;
    mlen = (int)c->head.method.len;
    target = c->head_base + c->head.target.off;
    tlen = (int)c->head.target.len;
    minor = c->head.version_minor;
  }
  if (conn_cfg(c)->log_format == CODA__LOG_JSON) {
    access_log_json(c, status, method, mlen, target, tlen);
    return;
  }
  size_t need = (size_t)tlen + (size_t)mlen + strlen(c->peer) + 96;
  if (coda__buf_reserve(&loop->log, need) != 0)
    return;
  char *line = loop->log.base + loop->log.len;
  int n = snprintf(line, need, "INFO:     %s - \"%.*s ", c->peer, mlen, method);
  if (n <= 0 || (size_t)n >= need)
    return;
  size_t len = (size_t)n + coda__http_redact_target(line + n, target, (size_t)tlen);
  n = snprintf(line + len, need - len, " HTTP/1.%d\" %d %s\n", minor, status,
               coda__http_reason(status));
  if (n > 0)
    loop->log.len += len + ((size_t)n < need - len ? (size_t)n : need - len - 1);
}

/* ---- requests -------------------------------------------------------- */

/* Answers a request that cannot be served (4xx/5xx from the parser or a
 * timeout) and closes after it: after a framing error nothing that follows
 * on the connection can be trusted. */
static void error_response(coda__conn *c, int status) {
  size_t dlen;
  const char *date = coda__conn_date(c, &dlen);
  int rc = coda__http_error_response(coda__conn_out(c), status, date, dlen);
  const coda__server_hooks *hooks = &c->loop->server->hooks;
  if (hooks->rejected) {
    int parsed = c->head_base && c->head.method.len > 0;
    hooks->rejected(hooks->data, parsed ? c->head_base + c->head.method.off : NULL,
                    parsed ? c->head.method.len : 0, status);
  }
  c->head_base = NULL;
  coda__conn_access_log(c, status);
  c->keep_alive = 0;
  c->state = CODA__CONN_CLOSING;
  if (rc)
    close_now(c);
}

static void begin_body(coda__conn *c) {
  c->state = CODA__CONN_BODY;
  c->body_need = 0;
  c->body_started = loop_now(c);
  c->body_bytes = 0;
  if (c->head.flags & CODA__HTTP_CHUNKED) {
    coda__chunked_init(&c->chunked);
    c->chunk_in = c->chunk_out = c->head_len;
  } else if (c->head.flags & CODA__HTTP_HAS_LENGTH) {
    c->body_need = c->head.content_length;
  }
}

/* Returns 1 with *end set when the whole request is in the buffer, 0 when
 * more is needed, or a negative status. */
static int read_body(coda__conn *c, char *start, size_t avail, size_t *end) {
  const coda__server_config *cfg = conn_cfg(c);
  if (!(c->head.flags & CODA__HTTP_CHUNKED)) {
    if (avail - c->head_len < c->body_need)
      return 0;
    *end = c->head_len + (size_t)c->body_need;
    return 1;
  }
  size_t in = c->chunk_in, out = c->chunk_out;
  int rc = coda__chunked_decode(&c->chunked, start, avail, &in, &out,
                                cfg->limits.max_body, cfg->limits.max_header_bytes);
  if (rc < 0)
    return rc;
  if (rc == 1) {
    c->chunk_in = in;
    c->chunk_out = out;
    *end = in;
    return 1;
  }
  /* Close the gap the framing left, so the buffer holds only data. */
  memmove(start + out, start + in, avail - in);
  c->rlen -= in - out;
  c->chunk_in = c->chunk_out = out;
  return 0;
}

/* More body bytes are needed: make room, and say 100 Continue if asked. */
static int need_more_body(coda__conn *c, size_t rpos) {
  const coda__server_config *cfg = conn_cfg(c);
  size_t need;
  if (c->head.flags & CODA__HTTP_CHUNKED) {
    need = c->rlen - rpos + 1;
    if (c->rlen + 1 >= c->rcap)
      need = (c->rlen - rpos) * 2;
    size_t cap = c->head_len + (size_t)cfg->limits.max_body + CHUNK_FRAMING_SLACK;
    if (need > cap)
      need = cap;
  } else {
    need = c->head_len + (size_t)c->body_need + 1;
  }
  if (c->head.flags & CODA__HTTP_EXPECT_CONTINUE && !c->continue_sent) {
    c->continue_sent = 1;
    if (coda__buf_append_lit(coda__conn_out(c), "HTTP/1.1 100 Continue\r\n\r\n"))
      return CODA_ENOMEM;
  }
  /* Compaction below moves the request to offset 0. */
  return grow_rbuf(c, need);
}

static void finish_exchange(coda__conn *c) {
  coda__arena_reset(&c->arena);
  c->head_scan = 0;
  c->head_started = 0;
  c->continue_sent = 0;
  c->head_base = NULL;
  c->idle_since = loop_now(c);
  c->state = c->keep_alive ? CODA__CONN_HEAD : CODA__CONN_CLOSING;
}

static void dispatch(coda__conn *c, char *start, size_t end) {
  coda__loop *loop = c->loop;
  const coda__server_hooks *hooks = &loop->server->hooks;
  size_t body_end = c->head.flags & CODA__HTTP_CHUNKED ? c->chunk_out : end;
  char saved = start[body_end];
  start[body_end] = '\0';
  if (!(c->head.flags & CODA__HTTP_KEEP_ALIVE) || loop->stopping)
    c->keep_alive = 0;
  coda__request r = {start, &c->head, start + c->head_len, body_end - c->head_len,
                     ((uint64_t)loop->index << 48) | ++loop->next_request};
  atomic_fetch_add_explicit(&loop->requests, 1, memory_order_relaxed);
  c->head_base = start;
  c->request_id = r.id;
  if (loop->server->cfg.access_log && loop->server->cfg.log_format == CODA__LOG_JSON)
    c->dispatch_ns = uv_hrtime();
  c->dispatching = 1;
  int rc = hooks->dispatch(hooks->data, c, c->exchange, &r);
  c->dispatching = 0;
  start[body_end] = saved;
  c->requests++;
  if (rc == CODA__GATED) {
    c->gated = 1;
    c->state = CODA__CONN_GATED;
  } else if (rc < 0) {
    c->keep_alive = 0; /* out of memory: the response is lost, so is the link */
    close_now(c);
  }
}

/* Moves the unparsed tail of the buffer to its start. */
static void compact(coda__conn *c, size_t rpos) {
  if (rpos == 0)
    return;
  memmove(c->rbuf, c->rbuf + rpos, c->rlen - rpos);
  c->rlen -= rpos;
  if (c->rlen == 0 && c->rcap > READ_BUF_SHRINK && c->state == CODA__CONN_HEAD) {
    char *p = realloc(c->rbuf, READ_BUF_MIN);
    if (p) {
      c->rbuf = p;
      c->rcap = READ_BUF_MIN;
    }
  }
}

/* Parses and answers the requests in the buffer, in order, stopping at an
 * incomplete one, an open stream, or output above the high-water mark
 * (so a client that pipelines without reading cannot grow our memory). */
static size_t process_batch(coda__conn *c) {
  const coda__server_config *cfg = conn_cfg(c);
  size_t rpos = 0;
  while (c->state == CODA__CONN_HEAD || c->state == CODA__CONN_BODY) {
    char *start = c->rbuf + rpos;
    size_t avail = c->rlen - rpos;
    if (c->state == CODA__CONN_HEAD) {
      if (avail == 0 || out_unsent(c) >= cfg->write_high_water)
        break;
      if (!c->head_started)
        c->head_started = loop_now(c);
      int n = coda__http_head_end(start, avail, &c->head_scan, &cfg->limits);
      if (n == 0)
        break;
      if (n > 0) {
        int rc = coda__http_parse_head(start, (size_t)n, &cfg->limits, &c->head);
        if (rc < 0)
          n = rc;
      }
      if (n < 0) {
        error_response(c, -n);
        break;
      }
      c->head_len = (size_t)n;
      begin_body(c);
    }
    size_t end;
    int rc = read_body(c, start, avail, &end);
    if (rc < 0) {
      error_response(c, -rc);
      break;
    }
    if (rc == 0) {
      if (need_more_body(c, rpos) != 0)
        error_response(c, 500);
      break;
    }
    dispatch(c, start, end);
    rpos += end;
    if (c->state == CODA__CONN_GATED) {
      /* The request's bytes stay where they are (the response and the
       * access log point into them) until the gate ends. */
      c->gate_consumed = rpos;
      return rpos;
    }
    if (c->state == CODA__CONN_STREAMING)
      break;
    finish_exchange(c);
  }
  compact(c, rpos);
  return rpos;
}

static void process(coda__conn *c) {
  if (c->dispatching || c->closed || c->in_process)
    return;
  c->in_process = 1;
  size_t consumed;
  do {
    consumed = process_batch(c);
    conn_flush(c);
  } while (consumed > 0 && can_process(c));
  c->in_process = 0;
  update_reading(c);
}

void coda__conn_gate_orphan(coda__conn *c) {
  c->gated = 0;
  const coda__server_hooks *hooks = &c->loop->server->hooks;
  if (hooks->release)
    hooks->release(hooks->data, c->exchange);
  if (!c->stream_open)
    conn_free(c);
}

void coda__conn_gate_end(coda__conn *c, int ok) {
  c->gated = 0;
  if (c->closed) {
    /* The client left meanwhile: nothing to send. If the close callback
     * has not run yet (the connection closed earlier in this iteration),
     * it releases and frees, as for any connection. */
    if (!c->close_done)
      return;
    const coda__server_hooks *hooks = &c->loop->server->hooks;
    if (hooks->release)
      hooks->release(hooks->data, c->exchange);
    if (!c->stream_open)
      conn_free(c);
    return;
  }
  if (!ok) {
    c->keep_alive = 0;
    close_now(c);
    return;
  }
  finish_exchange(c);
  compact(c, c->gate_consumed);
  c->gate_consumed = 0;
  conn_flush(c);
  process(c);
}

void coda__conn_send(coda__conn *c) {
  if (!c->dispatching)
    conn_flush(c);
}

int coda__conn_stream_begin(coda__conn *c) {
  if (!c->dispatching || c->state != CODA__CONN_BODY || c->stream_open)
    return CODA_ESTATE;
  c->stream_open = 1;
  c->state = CODA__CONN_STREAMING;
  return 0;
}

void coda__conn_stream_abort(coda__conn *c) {
  if (c->dispatching && c->state == CODA__CONN_STREAMING) {
    c->stream_open = 0;
    c->state = CODA__CONN_BODY;
  }
}

void coda__conn_stream_end(coda__conn *c) {
  c->stream_open = 0;
  if (c->state == CODA__CONN_STREAMING)
    finish_exchange(c);
  if (c->closed) {
    /* Freed here only once the close callback has run; before that (a
     * write of this stream's end failed and closed it just now), the
     * callback frees it. */
    if (c->close_done && !c->gated)
      conn_free(c);
    return;
  }
  if (!c->dispatching)
    process(c);
}

/* ---- timeouts -------------------------------------------------------- */

void coda__conn_check_timeouts(coda__conn *c, uint64_t now) {
  const coda__server_config *o = conn_cfg(c);
  if (c->closed)
    return;
  if (c->lingering) {
    if (now >= c->linger_until)
      close_now(c);
    return;
  }
  if (c->write_active && now - c->last_write > o->send_timeout) {
    close_now(c); /* the client stopped reading */
    return;
  }
  if (c->state == CODA__CONN_HEAD) {
    if (c->rlen > 0) {
      /* head_started is 0 for requests parked behind the high-water mark:
       * they wait on us, not on the client. */
      if (c->head_started && now - c->head_started > o->header_timeout) {
        error_response(c, 408);
        conn_flush(c);
      }
    } else if (!c->write_active && batch_size(&c->pending) == 0) {
      uint64_t limit =
          c->requests ? o->keepalive_timeout : o->header_timeout;
      if (now - c->idle_since > limit)
        close_now(c);
    }
  } else if (c->state == CODA__CONN_BODY) {
    /* A gap longer than the body timeout, or a body slower on average
     * than the minimum rate (a trickle that never leaves a long gap, as
     * Apache's mod_reqtimeout MinRate). */
    uint64_t allowed = o->body_timeout;
    if (o->body_min_rate)
      allowed += c->body_bytes * 1000 / o->body_min_rate;
    if (now - c->last_read > o->body_timeout ||
        (o->body_min_rate && now - c->body_started > allowed)) {
      error_response(c, 408);
      conn_flush(c);
    }
  }
}

/* ---- accept ---------------------------------------------------------- */

static void format_peer(coda__conn *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
      uv_ip6_name(a, ip, sizeof ip);
      port = ntohs(a->sin6_port);
    } else {
      struct sockaddr_in *a = (struct sockaddr_in *)&ss;
      uv_ip4_name(a, ip, sizeof ip);
      port = ntohs(a->sin_port);
    }
  }
  snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
}

static void on_close_unaccepted(uv_handle_t *h) { conn_free(h->data); }

int coda__conn_accept(coda__loop *loop) {
  coda__server *s = loop->server;
  coda__conn *c = calloc(1, sizeof *c + s->hooks.exchange_size);
  if (!c)
    return CODA_ENOMEM;
  c->loop = loop;
  c->rcap = (size_t)s->cfg.limits.max_header_bytes + 2 > READ_BUF_MIN
                ? (size_t)s->cfg.limits.max_header_bytes + 2
                : READ_BUF_MIN;
  c->rbuf = malloc(c->rcap);
  c->fields = malloc(s->cfg.limits.max_headers * sizeof *c->fields);
  coda__queue_init(&c->link);
  coda__arena_init(&c->arena, c->arena_block, sizeof c->arena_block);
  if (!c->rbuf || !c->fields) {
    conn_free(c);
    return CODA_ENOMEM;
  }
  uv_tcp_init(&loop->uv, &c->tcp);
  c->tcp.data = c;
  int rc = uv_accept((uv_stream_t *)&loop->listener, (uv_stream_t *)&c->tcp);
  if (rc) {
    uv_close((uv_handle_t *)&c->tcp, on_close_unaccepted);
    return CODA_EIO;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (s->cfg.send_buffer) {
    int size = s->cfg.send_buffer;
    uv_send_buffer_size((uv_handle_t *)&c->tcp, &size);
  }
  format_peer(c);
  c->head.fields = c->fields;
  c->keep_alive = 1;
  c->state = CODA__CONN_HEAD;
  c->idle_since = c->last_read = c->last_write = loop_now(c);
  coda__queue_insert_tail(&loop->conns, &c->link);
  loop->nconns++;
  atomic_fetch_add(&s->nconnections, 1);
  update_reading(c);
  return 0;
}
