/*
 * conn.h - one client connection: reading, parsing, dispatching, writing,
 * pipelining and timeouts; and what the layer answering requests may do
 * with it (write output, mark the end of a response, stream, gate).
 *
 * A connection belongs to one loop thread for its whole life. Its read
 * buffer, output buffers, arena and the upper layer's exchange memory are
 * allocated once, when it is accepted, and reused for every request on it:
 * the keep-alive fast path allocates nothing.
 */
#ifndef CODA_SERVER_CONN_H
#define CODA_SERVER_CONN_H

#include "common/arena.h"
#include "common/buf.h"
#include "common/queue.h"
#include "server/server.h"

#include <uv.h>

enum {
  CODA__CONN_HEAD,      /* reading a request head (or idle) */
  CODA__CONN_BODY,      /* reading a request body, or dispatching it */
  CODA__CONN_STREAMING, /* a streaming response is open */
  CODA__CONN_GATED,     /* a response is not ready yet (coda__conn_gate_end) */
  CODA__CONN_CLOSING    /* no more requests: flush, then close */
};

/* Called once per response when its last byte has been written to the
 * socket (ok = 1) or the connection failed before that (ok = 0). This is
 * where work that must run after the response hooks in. */
typedef void (*coda__written_cb)(void *arg, int ok);

/* Releases memory an external output segment pointed to. */
typedef void (*coda__release_cb)(void *data, void *arg);

/* A body written from memory coda does not own, between two byte runs of
 * the output buffer. */
typedef struct coda__out_segment {
  size_t at; /* offset in the batch's bytes where it goes */
  const char *data;
  size_t len;
  coda__release_cb release;
  void *release_data;
  void *release_arg;
} coda__out_segment;

/* A run of output: copied bytes plus external segments. */
typedef struct coda__out_batch {
  coda__buf bytes;
  coda__out_segment *segs;
  int nsegs;
  int segs_cap;
} coda__out_batch;

/* A response whose end is at stream offset `end`, waiting to be written. */
typedef struct coda__out_mark {
  uint64_t end;
  coda__written_cb cb;
  void *arg;
} coda__out_mark;

struct coda__conn {
  uv_tcp_t tcp;
  coda__loop *loop;
  coda__queue link; /* in loop->conns */
  int state;
  /* Reading. */
  char *rbuf;
  size_t rlen, rcap;
  size_t head_scan;
  size_t head_len;
  uint64_t body_need; /* Content-Length body bytes */
  coda__chunked chunked;
  size_t chunk_in, chunk_out; /* relative to the request start */
  coda__http_head head;
  coda__http_field *fields;
  const char *head_base; /* the dispatched request's head, for the log */
  uint64_t request_id;   /* the dispatched request's id, for the JSON log */
  uint64_t dispatch_ns;  /* uv_hrtime() at its dispatch (JSON log only) */
  /* Flags. */
  unsigned keep_alive : 1;
  unsigned continue_sent : 1;
  unsigned read_active : 1;
  unsigned read_eof : 1;
  unsigned write_active : 1;
  unsigned closed : 1;     /* uv_close called */
  unsigned close_done : 1; /* its close callback has run: only then may an
                              ending stream or gate free the memory */
  unsigned lingering : 1;
  unsigned stream_open : 1;
  unsigned dispatching : 1;
  unsigned in_process : 1;
  /* A gated response: the memory stays until coda__conn_gate_end() or
   * coda__conn_gate_orphan(), even if the connection closes. */
  unsigned gated : 1;
  size_t gate_consumed; /* read-buffer bytes up to the gated request's end */
  /* Timing (loop time, ms). */
  uint64_t head_started; /* first byte of the current head, 0 if none */
  uint64_t last_read;
  uint64_t body_started; /* when the body began, for the minimum rate */
  uint64_t body_bytes;   /* body bytes read since */
  uint64_t last_write;
  uint64_t idle_since;
  uint64_t linger_until;
  unsigned long requests;
  /* Writing. */
  coda__out_batch pending;
  coda__out_batch inflight;
  size_t inflight_done;   /* bytes of inflight already written */
  uint64_t queued_total;  /* bytes ever queued */
  uint64_t written_total; /* bytes ever written */
  coda__out_mark *marks;
  int nmarks, marks_cap, marks_head;
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
  uv_buf_t iov[16];
  coda__arena arena;
  char peer[64];
  _Alignas(16) char arena_block[4096];
  _Alignas(16) char exchange[]; /* hooks.exchange_size bytes */
};

/* ---- for the server's loops ---------------------------------------------- */

/* Accepts a pending connection on loop's listener. */
int coda__conn_accept(coda__loop *loop);

/* Starts a graceful close (after the current response) or a hard one. */
void coda__conn_shutdown(coda__conn *c, int now);

/* True when the connection has nothing in progress. */
int coda__conn_idle(const coda__conn *c);

/* Called by the sweep timer: applies timeouts. */
void coda__conn_check_timeouts(coda__conn *c, uint64_t now);

/* ---- for the layer that answers requests (loop thread) ------------------- */

/* Where a response's bytes go. */
coda__buf *coda__conn_out(coda__conn *c);

/* Queues an external body segment after the bytes queued so far. */
int coda__conn_out_external(coda__conn *c, const char *data, size_t len,
                            coda__release_cb release, void *release_data,
                            void *release_arg);

/* Marks the end of a response at the current output position: cb runs
 * once every byte before it is in the kernel (ok 1), or the connection
 * failed first (ok 0). The access log lines buffered so far are handed to
 * the logger before the first callback of a write runs. */
int coda__conn_mark_response(coda__conn *c, coda__written_cb cb, void *arg);

/* Writes what is pending, except during the dispatch (which writes once,
 * after every pipelined request of a read has been answered). */
void coda__conn_send(coda__conn *c);

/* Appends the access log line of the current request (or "-" for none). */
void coda__conn_access_log(coda__conn *c, int status);

/* A streaming response begins (only during its dispatch, which then
 * returns CODA__STREAMING): pipelined requests wait for its end.
 * CODA_ESTATE otherwise. */
int coda__conn_stream_begin(coda__conn *c);
/* A stream that could not begin after all (its head could not be
 * written): back to an ordinary response, during the same dispatch. */
void coda__conn_stream_abort(coda__conn *c);
/* The stream has ended (its last bytes are queued, or the connection has
 * closed): resumes pipelined requests, frees a closed connection. */
void coda__conn_stream_end(coda__conn *c);

/* The gated response is settled: its bytes are in the output (ok 1), or it
 * could not be written (ok 0: the connection closes). Pipelined requests
 * resume. On a connection that closed meanwhile, frees it. Loop thread. */
void coda__conn_gate_end(coda__conn *c, int ok);
/* The loop ended while c, closed, was still gated: nothing will answer
 * it; frees c. Any thread (a loop that has ended never touches c). */
void coda__conn_gate_orphan(coda__conn *c);

static inline void *coda__conn_exchange(coda__conn *c) { return c->exchange; }
static inline coda__loop *coda__conn_loop(const coda__conn *c) { return c->loop; }
static inline coda__arena *coda__conn_arena(coda__conn *c) { return &c->arena; }
static inline const char *coda__conn_peer(const coda__conn *c) { return c->peer; }
static inline int coda__conn_closed(const coda__conn *c) { return c->closed; }
static inline int coda__conn_keep_alive(const coda__conn *c) { return c->keep_alive; }
/* The connection closes after this response. */
static inline void coda__conn_no_keep_alive(coda__conn *c) { c->keep_alive = 0; }
/* The loop's "Date: ...\r\n" line, refreshed. */
static inline const char *coda__conn_date(coda__conn *c, size_t *len) {
  coda__loop_update_date(c->loop);
  *len = c->loop->date_len;
  return c->loop->date_line;
}

#endif /* CODA_SERVER_CONN_H */
