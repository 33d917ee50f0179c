/*
 * conn.h - one client connection: reading, parsing, dispatching, writing,
 * pipelining and timeouts.
 *
 * A connection belongs to one loop thread for its whole life. Its read
 * buffer, output buffers, arena, request and response are allocated once,
 * when it is accepted, and reused for every request on it: the keep-alive
 * fast path allocates nothing.
 */
#ifndef CODA_SERVER_CONN_H
#define CODA_SERVER_CONN_H

#include "app/exchange.h"
#include "common/buf.h"
#include "common/queue.h"
#include "server/server.h"

#include <uv.h>

enum {
  CODA__CONN_HEAD,      /* reading a request head (or idle) */
  CODA__CONN_BODY,      /* reading a request body */
  CODA__CONN_STREAMING, /* a streaming response is open */
  CODA__CONN_HOLDING,   /* a response waits for its durable tasks' write */
  CODA__CONN_CLOSING    /* no more requests: flush, then close */
};

/* A body written from memory coda does not own, between two byte runs of
 * the output buffer. */
typedef struct coda__out_segment {
  size_t at; /* offset in the batch's bytes where it goes */
  const char *data;
  size_t len;
  coda_release_fn release;
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

struct coda_stream {
  coda__conn *conn;
  int chunked; /* HTTP/1.1: chunked framing; 1.0: close-delimited */
  int discard; /* HEAD: the body is not sent */
};

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
  /* Flags. */
  unsigned keep_alive : 1;
  unsigned continue_sent : 1;
  unsigned read_active : 1;
  unsigned read_eof : 1;
  unsigned write_active : 1;
  unsigned closed : 1; /* uv_close called */
  unsigned lingering : 1;
  unsigned stream_open : 1;
  unsigned dispatching : 1;
  unsigned in_process : 1;
  /* A held response: the store thread has its tasks; the connection's
   * memory stays until coda__conn_hold_done() even if it closes. */
  struct coda__hold *hold;
  size_t hold_consumed; /* read-buffer bytes up to the held request's end */
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
  /* The current exchange. */
  coda_req req;
  coda_res res;
  coda_stream stream;
  coda__arena arena;
  char peer[64];
  _Alignas(16) char arena_block[4096];
};

/* Accepts a pending connection on loop's listener. */
int coda__conn_accept(coda__loop *loop);

/* Where a response's bytes go. */
coda__buf *coda__conn_out(coda__conn *c);

/* Queues an external body segment after the bytes queued so far. */
int coda__conn_out_external(coda__conn *c, const char *data, size_t len,
                            coda_release_fn release, void *release_data,
                            void *release_arg);

/* Marks the end of a response at the current output position. */
int coda__conn_mark_response(coda__conn *c, coda__written_cb cb, void *arg);

/* Writes what is pending (in as few syscalls as possible). */
void coda__conn_flush(coda__conn *c);

/* Starts a graceful close (after the current response) or a hard one. */
void coda__conn_shutdown(coda__conn *c, int now);

/* True when the connection has nothing in progress. */
int coda__conn_idle(const coda__conn *c);

/* Called by the sweep timer: applies timeouts. */
void coda__conn_check_timeouts(coda__conn *c, uint64_t now);

/* Finishes a streaming response and resumes pipelined requests. */
void coda__conn_stream_done(coda__conn *c);

/* The store thread wrote (rc 0) or failed to write (rc < 0) the durable
 * tasks of the held response: send it, or a 503 instead, and go on with
 * pipelined requests. Loop thread. */
void coda__conn_hold_done(coda__conn *c, int rc);
/* The loop ended while c, closed, still waited for its hold, so nothing will
 * send the response or start its tasks: they are dropped and counted (the
 * durable ones that were written stay in the store for the next start),
 * the written callback says "failed", and c is freed. Any thread (the
 * written callback runs on it): a loop that has ended never touches c. */
void coda__conn_hold_orphaned(coda__conn *c);

/* Appends the access log line of the current exchange. */
void coda__conn_access_log(coda__conn *c, int status);

#endif /* CODA_SERVER_CONN_H */
