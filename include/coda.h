/*
 * coda.h - the whole public API of coda, a C web framework whose headline
 * feature is work that runs after the response has been sent.
 *
 * Conventions (read once, they hold everywhere below):
 *  - Functions that can fail return int: 0 on success, a negative CODA_E*
 *    code on failure. coda_strerror() names a code.
 *  - Long-lived objects are opaque handles (coda_app). Request and response
 *    handles (coda_req, coda_res) are valid only during the call that hands
 *    them to you, unless a function says otherwise.
 *  - Threads: coda_app_* configuration calls are made from one thread before
 *    coda_app_run(). Handlers and middleware run on one of the app's event
 *    loop threads; everything a handler receives belongs to that thread.
 *    coda_app_stop() may be called from any thread or a signal handler.
 *  - Memory: strings passed to coda are copied unless the function name says
 *    static or borrow. Strings coda returns are owned by coda and live as long
 *    as the object they came from.
 */
#ifndef CODA_H
#define CODA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CODA_BUILDING) && defined(__GNUC__)
#define CODA_API __attribute__((visibility("default")))
#else
#define CODA_API
#endif

#define CODA_VERSION_MAJOR 0
#define CODA_VERSION_MINOR 1
#define CODA_VERSION_PATCH 0

/* Error codes: one table, expanded into the enum and into coda_strerror().
 * They are all below -1000, so a plain -1 (or any small negative value) a
 * handler or task returns is never mistaken for one: it is reported as
 * "returned -1 (not a CODA_E* code)". */
#define CODA_ERRNO_MAP(X)                                                      \
  X(NOMEM, -1001, "out of memory")                                             \
  X(INVAL, -1002, "invalid argument")                                          \
  X(STATE, -1003, "operation not allowed in this state")                       \
  X(IO, -1004, "input/output error")                                           \
  X(ADDR, -1005, "bad or unusable listen address")                             \
  X(EXIST, -1006, "already exists")                                            \
  X(LIMIT, -1007, "a configured limit was reached")                            \
  X(CLOSED, -1008, "connection closed")                                        \
  X(FULL, -1009, "queue full")                                                 \
  X(HANDLER, -1010, "handler failed")                                          \
  X(TIMEDOUT, -1011, "timed out")                                              \
  X(CRASHED, -1012, "worker process crashed")                                  \
  X(NOTFOUND, -1013, "not found")                                              \
  X(STORE, -1014, "task store error (see coda_app_store_error)")

typedef enum {
#define CODA_ERRNO_ENUM(name, value, text) CODA_E##name = (value),
  CODA_ERRNO_MAP(CODA_ERRNO_ENUM)
#undef CODA_ERRNO_ENUM
} coda_errno;

/** Returns a static, human-readable message for a CODA_E* code, "success"
 *  for 0, or "not a coda error code" for anything else. Thread-safe. */
CODA_API const char *coda_strerror(int err);

/** Returns the library version as "MAJOR.MINOR.PATCH". */
CODA_API const char *coda_version(void);

/* ------------------------------------------------------------------------ */
/* Application                                                              */
/* ------------------------------------------------------------------------ */

typedef struct coda_app coda_app;
typedef struct coda_req coda_req;
typedef struct coda_res coda_res;
typedef struct coda_next coda_next;
typedef struct coda_stream coda_stream;

/** Integer options for coda_app_set(), declared once in this table and
 *  expanded into the enum below and coda's defaults and ranges. Sizes in
 *  bytes, times in milliseconds; 0 is never a valid time. Columns: name,
 *  internal field, default, minimum, maximum; after each, what it bounds and
 *  what a request that breaks it gets. New options are only ever added at
 *  the end. */
#define CODA_OPTION_MAP(X)                                                               \
  X(THREADS, threads, 0, 0, 1024)               /* event loops; 0: one per core */      \
  X(MAX_HEADER_BYTES, max_header_bytes, 8192, 256, 1 << 20) /* head -> 431 */           \
  X(MAX_HEADERS, max_headers, 64, 1, 4096)      /* field lines -> 431 */                 \
  X(MAX_URI, max_uri, 4096, 16, 1 << 20)        /* request-target -> 414 */             \
  X(MAX_BODY, max_body, 1 << 20, 0, 1L << 40)   /* request body -> 413 */               \
  X(HEADER_TIMEOUT, header_timeout, 10000, 1, 86400000) /* first byte to end of head    \
                                                           -> 408 */                     \
  X(KEEPALIVE_TIMEOUT, keepalive_timeout, 5000, 1, 86400000) /* idle keep-alive         \
                                                                 -> close */             \
  X(BODY_TIMEOUT, body_timeout, 10000, 1, 86400000) /* longest gap in a body -> 408 */  \
  X(SEND_TIMEOUT, send_timeout, 10000, 1, 86400000) /* longest stall of unsent output   \
                                                       -> close */                       \
  X(MAX_CONNECTIONS, max_connections, 10000, 1, 10000000) /* open connections, app */  \
  X(WRITE_HIGH_WATER, write_high_water, 1 << 20, 1024, 1L << 40) /* unsent bytes that   \
                                                                    pause reading */     \
  X(SHUTDOWN_TIMEOUT, shutdown_timeout, 10000, 1, 86400000) /* graceful shutdown */     \
  X(ACCESS_LOG, access_log, 0, 0, 1)            /* 1: one log line per request */       \
  X(LOG_LEVEL, log_level, CODA_LOG_INFO, CODA_LOG_DEBUG, CODA_LOG_OFF) /* a level */    \
  X(HANDLE_SIGNALS, handle_signals, 1, 0, 1)    /* 1: SIGINT/SIGTERM stop the app */    \
  X(THREAD_POOL_SIZE, thread_pool_size, 16, 1, 1024) /* THREAD executor threads */      \
  X(THREAD_QUEUE, thread_queue, 10000, 1, 100000000) /* THREAD tasks added and not      \
                                                        finished -> 503 */               \
  X(LOOP_QUEUE, loop_queue, 10000, 1, 100000000) /* LOOP tasks likewise -> 503 */       \
  X(PROCESS_WORKERS, process_workers, 0, 0, 1024) /* PROCESS workers; 0: one per core */\
  X(PROCESS_QUEUE, process_queue, 1000, 1, 100000000) /* PROCESS tasks -> 503 */        \
  X(TASK_DRAIN_TIMEOUT, task_drain_timeout, 10000, 0, 86400000) /* shutdown: time tasks \
                                                                   get to finish */      \
  X(RETRY_AFTER, retry_after, 1, 0, 86400)      /* seconds in Retry-After when full */  \
  X(STORE_POLL, store_poll, 100, 1, 3600000)    /* durable: how often due tasks are     \
                                                   claimed */                            \
  X(TASK_LEASE, task_lease, 300000, 1000, 86400000L * 30) /* durable: a claim's lease */\
  X(STORE_MAX_BYTES, store_max_bytes, 0, 0, 1L << 50) /* durable: store size cap, 0     \
                                                         none -> 503 */                  \
  X(MAX_ATTEMPTS, max_attempts, 5, 1, 1000000)  /* durable: attempts per task */        \
  X(BACKOFF, backoff, 1000, 1, 86400000)        /* durable: first retry delay */        \
  X(BACKOFF_MAX, backoff_max, 300000, 1, 86400000L * 30) /* durable: longest delay */   \
  X(TASK_RETAIN, task_retain, 604800000L, 0, 86400000L * 36500) /* durable: how long    \
                          finished (succeeded or dead) tasks are kept, 0 forever */      \
  X(BODY_MIN_RATE, body_min_rate, 1024, 0, 1L << 40) /* bytes/s a body must keep up on  \
                          average: it gets BODY_TIMEOUT plus 1 s per this many bytes     \
                          received; 0 no minimum -> 408 */                               \
  X(SEND_BUFFER, send_buffer, 0, 0, 1L << 30)   /* the kernel send buffer of each       \
                          connection (SO_SNDBUF), 0 the kernel's default: how much of a  \
                          response may still be unread by the client when its tasks     \
                          start (docs/tasks.md) */                                     \
  X(CANCEL_GRACE_MS, cancel_grace_ms, 5000, 1, 86400000) /* coda_task_cancel(): how long \
                          a running PROCESS task has to stop before its worker is killed */ \
  X(METRICS, metrics, 1, 0, 1)                  /* 1: count the Prometheus metrics of  \
                          coda_app_metrics_text(); 0: count nothing */                   \
  X(LOG_FORMAT, log_format, 0, 0, 1)            /* 0: uvicorn-style text lines; 1: one  \
                          JSON object per line (docs/operations.md, "JSON logs") */

typedef enum {
  CODA_OPT_NONE_ = 0,
#define CODA_OPTION_ENUM(name, field, def, min, max) CODA_OPT_##name,
  CODA_OPTION_MAP(CODA_OPTION_ENUM)
#undef CODA_OPTION_ENUM
  CODA_OPT_COUNT_
} coda_option;

typedef enum {
  CODA_LOG_DEBUG = 0,
  CODA_LOG_INFO,
  CODA_LOG_WARN,
  CODA_LOG_ERROR,
  CODA_LOG_OFF
} coda_log_level;

/** Creates an application with default options and no routes. Returns NULL
 *  when out of memory. Free with coda_app_free(). */
CODA_API coda_app *coda_app_new(void);

/** Frees an app that is not running, with its routes and middleware.
 *  Returns 0 once freed (NULL is fine). Returns CODA_ESTATE and frees
 *  nothing while the app runs, or while THREAD tasks that ignored
 *  cancellation at shutdown still run on threads coda had to leave them
 *  (coda_app_run() logs how many): they may still touch the app. Call it
 *  again later; it succeeds once they have returned. */
CODA_API int coda_app_free(coda_app *app);

/** Sets an integer option. Returns CODA_EINVAL for an unknown option or a
 *  value out of range, CODA_ESTATE once the app runs. */
CODA_API int coda_app_set(coda_app *app, coda_option opt, long value);

/** Reads an integer option (its default if never set), or -1 if unknown. */
CODA_API long coda_app_get(const coda_app *app, coda_option opt);

/** Sets the address to listen on, as "HOST:PORT" (IPv4 "127.0.0.1:8000" or
 *  IPv6 "[::1]:8000"). Port 0 asks the kernel for a free port; read it back
 *  with coda_app_port() once the app is bound. NULL: no listener at all,
 *  the app runs its background tasks only (a worker process). */
CODA_API int coda_app_listen(coda_app *app, const char *host_port);

/** The bound TCP port after coda_app_listen(), or 0. */
CODA_API int coda_app_port(const coda_app *app);

/** Runs the server on the calling thread until coda_app_stop(), SIGINT or
 *  SIGTERM (if CODA_OPT_HANDLE_SIGNALS). It starts CODA_OPT_THREADS event
 *  loops, each with its own SO_REUSEPORT listener (none after
 *  coda_app_listen(app, NULL): the loops then only run tasks), and the task
 *  executors. On stop it stops accepting, finishes in-flight requests
 *  (cutting what is left at CODA_OPT_SHUTDOWN_TIMEOUT), closes idle
 *  connections, then lets background tasks finish for up to
 *  CODA_OPT_TASK_DRAIN_TIMEOUT and logs by name what did not. THREAD tasks
 *  still running then see coda_task_cancelled() become true and get 100 ms
 *  more; threads still busy after that are left to finish on their own (see
 *  coda_app_free()). So it returns at most SHUTDOWN_TIMEOUT +
 *  TASK_DRAIN_TIMEOUT + 100 ms after the stop, plus what PROCESS workers
 *  and the store need to close. A second stop cuts connections and skips
 *  the drain (it returns within about 100 ms).
 *  Returns 0 after a stop, or a CODA_E* code if it could not start. Binds
 *  first if coda_app_bind() was not called (default "127.0.0.1:8000"). In a
 *  PROCESS worker it serves tasks instead and never returns.
 *  CODA_ESTATE if THREAD tasks a previous run left running (see
 *  coda_app_free()) have not returned yet. */
CODA_API int coda_app_run(coda_app *app);

/** Binds the listening sockets now, so that coda_app_port() is known before
 *  coda_app_run(). They listen from here on: a client that connects before
 *  coda_app_run() waits in the kernel's backlog and is answered once the app
 *  runs, so a program may tell its supervisor it is ready right after this.
 *  Called by coda_app_run() if not called before. */
CODA_API int coda_app_bind(coda_app *app);

/** Asks a running app to shut down gracefully, as SIGTERM does. Safe from any
 *  thread and from a signal handler; calling it again forces the stop. A
 *  stop that comes once the app is bound but before coda_app_run() has
 *  started (another thread is starting it) makes that run return at once;
 *  on an app that is not bound it does nothing. */
CODA_API void coda_app_stop(coda_app *app);

/** Writes a log line at the given level through coda's logger (one writer
 *  thread, never blocks the caller on I/O). Thread-safe. With app NULL the
 *  line goes straight to stderr. The line is "LEVEL:    message", or with
 *  CODA_OPT_LOG_FORMAT 1 a JSON object {"time", "level", "message", ...}
 *  which, logged from a running task, also carries its "task_id", "task",
 *  "attempt", "request_id" and "trace_id"/"span_id" (of the traceparent
 *  of the request that added it). The format of app-NULL lines is the last
 *  one set by any app of the process. */
CODA_API void coda_log(coda_app *app, coda_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------------------ */
/* Routes, handlers and middleware                                           */
/* ------------------------------------------------------------------------ */

/** A request handler. It runs on an event loop thread and must not block.
 *  Fill `res` and return 0. Returning a negative value means the handler
 *  failed: the response it built is discarded and the app's error handler
 *  answers (500 by default). */
typedef int (*coda_handler)(coda_req *req, coda_res *res, void *user);

/** A middleware. It wraps everything after it: code before
 *  coda_next_call(next) runs before the handler, code after it sees (and may
 *  change) the response. Return what coda_next_call() returned to pass the
 *  outcome on, or answer by itself without calling next. */
typedef int (*coda_middleware)(coda_req *req, coda_res *res, coda_next *next,
                               void *user);

/** Called when a handler (or middleware) fails, to build the error response.
 *  `err` is the handler's negative return value. The response has been reset
 *  to an empty 500. */
typedef void (*coda_error_handler)(coda_req *req, coda_res *res, int err,
                                   void *user);

/** Registers a route. `method` is an HTTP method ("GET", "POST", ...);
 *  `pattern` is a path where a segment "{name}" captures one path segment,
 *  e.g. "/users/{id}". A GET route also serves HEAD. When several patterns
 *  match, the one with more literal segments wins ("/users/me" beats
 *  "/users/{id}"), whatever the registration order. Returns
 *  CODA_EEXIST for the same method and pattern twice, CODA_EINVAL for a bad
 *  pattern. Call before coda_app_run(). */
CODA_API int coda_app_route(coda_app *app, const char *method,
                            const char *pattern, coda_handler handler,
                            void *user);

/** Appends a middleware; the first added is the outermost. Call before
 *  coda_app_run(). */
CODA_API int coda_app_use(coda_app *app, coda_middleware middleware, void *user);

/** Runs the rest of the chain (further middleware, then routing and the
 *  handler). Call at most once per middleware invocation. */
CODA_API int coda_next_call(coda_next *next);

/** Replaces the default error handler (500 with a JSON error body). */
CODA_API void coda_app_on_error(coda_app *app, coda_error_handler handler,
                                void *user);

/* ------------------------------------------------------------------------ */
/* Requests (read-only; valid during the handler call)                       */
/* ------------------------------------------------------------------------ */

/** The method, e.g. "GET". NUL-terminated. */
CODA_API const char *coda_req_method(const coda_req *req);

/** The percent-decoded path without the query, e.g. "/users/42", after
 *  the normalization routes match (docs/guide.md). Dot segments are
 *  removed before "%2F" and other reserved escapes are decoded, so this
 *  can still hold ".." (from "..%2F"): a handler that maps a path to files
 *  must still refuse "..".
 *  For an absolute-form target ("http://host/p?q") this is "/p". */
CODA_API const char *coda_req_path(const coda_req *req);

/** The raw request-target as sent, e.g. "/users/42?x=1". */
CODA_API const char *coda_req_target(const coda_req *req);

/** The raw query string after '?', or "" if none. */
CODA_API const char *coda_req_query_string(const coda_req *req);

/** The percent-decoded value of the first query parameter `name` ('+' is a
 *  space), "" for a parameter with no value, NULL if absent. */
CODA_API const char *coda_req_query(coda_req *req, const char *name);

/** The value of path capture `name` of the matched route ("{id}"), decoded,
 *  or NULL. */
CODA_API const char *coda_req_param(const coda_req *req, const char *name);

/** The value of the first header field `name` (case-insensitive), without
 *  surrounding whitespace, or NULL. */
CODA_API const char *coda_req_header(const coda_req *req, const char *name);

/** Number of header fields. */
CODA_API int coda_req_header_count(const coda_req *req);
/** The i-th header field (0-based): CODA_EINVAL out of range. */
CODA_API int coda_req_header_at(const coda_req *req, int i, const char **name,
                                const char **value);

/** The request body (de-chunked) and its length; never NULL (an empty body is
 *  ""). The bytes are followed by a NUL that is not counted. */
CODA_API const char *coda_req_body(const coda_req *req, size_t *len);

/** The HTTP minor version: 0 or 1. */
CODA_API int coda_req_version(const coda_req *req);

/** The peer as "IP:PORT". */
CODA_API const char *coda_req_peer(const coda_req *req);

/** A process-unique request id (for logs and, later, tasks). */
CODA_API uint64_t coda_req_id(const coda_req *req);

/** Allocates `size` bytes that live until the response is done (the
 *  per-request arena). NULL when out of memory. Never free it. */
CODA_API void *coda_req_alloc(coda_req *req, size_t size);

/* ------------------------------------------------------------------------ */
/* Responses                                                                 */
/* ------------------------------------------------------------------------ */

/** Sets the status code (100-999 excluding 1xx; default 200). */
CODA_API int coda_res_status(coda_res *res, int status);

/** The status code set so far. */
CODA_API int coda_res_get_status(const coda_res *res);

/** Sets header `name` to `value`, replacing an earlier value of the same
 *  name (case-insensitive). Both are copied. Content-Length,
 *  Transfer-Encoding, Date and Connection are managed by coda and rejected
 *  with CODA_EINVAL. A NULL value removes the header. */
CODA_API int coda_res_header(coda_res *res, const char *name, const char *value);

/** Adds header `name` without replacing existing ones (e.g. Set-Cookie). */
CODA_API int coda_res_add_header(coda_res *res, const char *name,
                                 const char *value);

/** A response header set so far (case-insensitive), or NULL. */
CODA_API const char *coda_res_get_header(const coda_res *res, const char *name);

/** Sets the body to a copy of `len` bytes. */
CODA_API int coda_res_body(coda_res *res, const void *data, size_t len);

/** Sets the body to bytes that live for the whole program (not copied). */
CODA_API int coda_res_body_static(coda_res *res, const void *data, size_t len);

/** Release callback for borrowed bodies; called once, on the loop thread,
 *  when coda no longer needs the bytes (sent, failed or replaced). */
typedef void (*coda_release_fn)(void *data, void *arg);

/** Sets the body to borrowed bytes (not copied); `release` (may be NULL) is
 *  called with (data, arg) once coda is done with them. */
CODA_API int coda_res_body_borrow(coda_res *res, const void *data, size_t len,
                                  coda_release_fn release, void *arg);

/** Sets status, "Content-Type: application/json" and the body to the
 *  compact serialisation of a jansson value (struct json_t from
 *  <jansson.h>). The value is not stolen. */
struct json_t;
CODA_API int coda_res_json(coda_res *res, int status, const struct json_t *value);

/** Sets status, "Content-Type: application/json" and a copy of a JSON text
 *  the caller already has. */
CODA_API int coda_res_json_text(coda_res *res, int status, const char *json);

/** Starts a streaming (chunked) response with the status and headers set so
 *  far. The returned stream stays valid until coda_stream_end(), which must
 *  be called exactly once, possibly later, from the same loop thread (a
 *  timer, a loop task). Requests pipelined behind it wait for it. Returns
 *  NULL if a stream was already started, or if the response holds durable
 *  tasks: they are written to the store before the response leaves, and a
 *  stream's head leaves at once (answer without a stream, or add them as
 *  plain tasks). */
CODA_API coda_stream *coda_res_stream(coda_res *res);

/** Sends `len` bytes as one chunk (copied). Returns CODA_ECLOSED if the
 *  client has gone; keep calling coda_stream_end() anyway. */
CODA_API int coda_stream_write(coda_stream *stream, const void *data, size_t len);

/** Ends the stream (the last chunk) and frees it. */
CODA_API int coda_stream_end(coda_stream *stream);

/** The app a stream belongs to (for coda_log and timers). */
CODA_API coda_app *coda_stream_app(coda_stream *stream);

/** The libuv loop (uv_loop_t *) of the thread running this request, for
 *  handlers that start timers or other non-blocking work. */
CODA_API void *coda_req_loop(coda_req *req);

/** The app serving a request. */
CODA_API coda_app *coda_req_app(const coda_req *req);


/* ------------------------------------------------------------------------ */
/* Background tasks                                                          */
/* ------------------------------------------------------------------------ */

/*
 * A task is work attached to a response that starts only after the
 * response's last byte has been written to the socket (or the connection
 * failed: committed tasks still run and can ask coda_task_delivered()).
 *
 *   static int send_email(coda_task *t) {
 *     const char *to = coda_task_str(t, 0);
 *     ...                                   // blocking is fine on THREAD
 *     return 0;                             // or coda_task_fail(t, "...")
 *   }
 *   coda_task_def *email = coda_app_task(app, "send_email", send_email,
 *                                        CODA_EXEC_THREAD);   // at start-up
 *   ...
 *   int rc = coda_res_add_task(res, email, "s", address);     // in a handler
 *   if (rc) return rc;        // CODA_EFULL becomes 503 + Retry-After
 *
 * Tasks added to one response run one after another in the order added,
 * across executors, unless the list is marked parallel. A failed task does
 * not stop the ones after it unless the list is marked stop-on-failure. If
 * the handler fails, its tasks are dropped except those added with
 * CODA_TASK_ALWAYS. Arguments are copied when added; a task never sees the
 * request's memory. Every failure, crash and timeout is logged (task name,
 * executor, request id, duration), counted and passed to the error hook.
 */

/** Where a task runs. */
typedef enum {
  CODA_EXEC_DEFAULT = 0, /* THREAD */
  CODA_EXEC_LOOP,    /* on the connection's event loop: must not block; may
                        return CODA_PENDING and call coda_task_done() */
  CODA_EXEC_THREAD,  /* a bounded pool of coda's own threads: blocking I/O */
  CODA_EXEC_PROCESS, /* pre-started worker processes: CPU work, isolation */
  CODA_EXEC_COUNT_
} coda_executor;

typedef struct coda_task coda_task;
typedef struct coda_task_def coda_task_def;
typedef struct coda_tasks coda_tasks;

/** Options of one add: coda_res_add_task_opts(), coda_tasks_add_opts(),
 *  coda_app_enqueue(). Always make one with CODA_TASK_OPTS_INIT (or the
 *  pointer form CODA_TASK_OPTS), which records its size: members are only
 *  ever added at the end, and coda reads only those the caller's header
 *  had, so a program built against an older coda.h keeps working. Options
 *  without their size are refused (CODA_EINVAL). */
typedef struct coda_task_opts {
  size_t size;      /* sizeof(coda_task_opts) in the caller's header */
  unsigned flags;   /* coda_task_flag bits */
  int max_attempts; /* durable: 0 = the definition's */
  int64_t delay_ms; /* durable: run no earlier than now + delay_ms */
  int64_t run_at;   /* durable: unix time in ms to run at or after (0: now) */
  const char *key;  /* durable: idempotency key (copied), or NULL */
  uint64_t id;      /* out: the task's id */
} coda_task_opts;

/** An initializer: coda_task_opts o = CODA_TASK_OPTS_INIT(.flags = ...); */
#define CODA_TASK_OPTS_INIT(...) {.size = sizeof(coda_task_opts), __VA_ARGS__}
/** A pointer to options for one call, when the id is not needed:
 *  coda_res_add_task_opts(res, def, CODA_TASK_OPTS(.flags = CODA_TASK_ALWAYS),
 *  "s", text). */
#define CODA_TASK_OPTS(...) (&(coda_task_opts)CODA_TASK_OPTS_INIT(__VA_ARGS__))

/** A task function. Return 0 for success, a negative value (or
 *  coda_task_fail()) for failure, or CODA_PENDING from a LOOP task that
 *  will finish later through coda_task_done(). */
typedef int (*coda_task_fn)(coda_task *task);

/** What a LOOP task function returns when it finishes later, through
 *  coda_task_done(). Positive, so never a CODA_E* code. */
#define CODA_PENDING 1

/** Flags of one task (coda_task_opts.flags). Their bits (0-7) are disjoint
 *  from the list flags', so a list flag given here (or the reverse) is
 *  refused with CODA_EINVAL, never taken for another meaning. */
typedef enum coda_task_flag {
  CODA_TASK_ALWAYS = 0x1, /* run even if the handler fails */
  CODA_TASK_DURABLE = 0x2 /* written to the store before the response (below) */
} coda_task_flag;

/** Flags of a task list (coda_tasks_set_flags(), coda_res_tasks_flags()):
 *  bits 8-15. */
typedef enum coda_list_flag {
  CODA_LIST_PARALLEL = 0x100,       /* start all at once */
  CODA_LIST_STOP_ON_FAILURE = 0x200 /* skip the rest after a failure */
} coda_list_flag;

/** Registers a task under a unique name, at start-up (before
 *  coda_app_run()). PROCESS tasks are found by this name in the worker
 *  processes, which run the same program: register them unconditionally,
 *  before coda_app_run(). Returns NULL on a duplicate name or no memory. The
 *  definition lives as long as the app. */
CODA_API coda_task_def *coda_app_task(coda_app *app, const char *name,
                                      coda_task_fn fn, coda_executor executor);

/** If this process was started by coda as a PROCESS worker, serves tasks
 *  until the server stops it and never returns; otherwise returns 0 at once.
 *  coda_app_run() and coda_app_bind() call it first. Call it yourself right
 *  after registering tasks if main() does work before coda_app_run() that a
 *  worker must skip (a worker runs your program again from main()). */
CODA_API int coda_app_worker(coda_app *app);

/** Sets a per-attempt timeout in milliseconds (0: none). A PROCESS task past
 *  it is killed and its worker replaced; a THREAD task is reported as timed
 *  out and sees coda_task_cancelled() become true; a LOOP task is reported
 *  and its late completion ignored. */
CODA_API int coda_task_def_timeout(coda_task_def *def, long timeout_ms);

/** Adds a task to the response's list. `fmt` describes the arguments, one
 *  letter each: 's' (const char *, copied), 'i' (int64_t), 'd' (double),
 *  'b' (const void *, size_t: raw bytes, copied). Returns 0, CODA_EFULL when
 *  the executor's queue is full (the default answer is then 503 with
 *  Retry-After), CODA_EINVAL for a bad format. Loop thread of the request.
 *  For flags, a delay or a key: coda_res_add_task_opts(). */
CODA_API int coda_res_add_task(coda_res *res, coda_task_def *def, const char *fmt, ...);

/** Sets CODA_LIST_* flags on the response's own list (CODA_EINVAL for any
 *  other bit). */
CODA_API int coda_res_tasks_flags(coda_res *res, unsigned flags);

/** A task list built apart from any response (for example by a helper
 *  function), then attached with coda_res_attach_tasks(). Queue slots are
 *  taken when tasks are added. Free with coda_tasks_free() unless attached. */
CODA_API coda_tasks *coda_tasks_new(coda_app *app);
/** Adds a task to a standalone list; arguments as coda_res_add_task(). */
CODA_API int coda_tasks_add(coda_tasks *list, coda_task_def *def, const char *fmt, ...);
/** The same with options (coda_task_opts, may be NULL). */
CODA_API int coda_tasks_add_opts(coda_tasks *list, coda_task_def *def, coda_task_opts *opts,
                                 const char *fmt, ...);
/** Sets CODA_LIST_* flags on a standalone list (CODA_EINVAL for others). */
CODA_API int coda_tasks_set_flags(coda_tasks *list, unsigned flags);
/** Moves every task of `list` to the end of the response's list (keeping
 *  their order and the list's flags) and frees `list`. */
CODA_API int coda_res_attach_tasks(coda_res *res, coda_tasks *list);
/** Frees a list that was not attached, dropping its tasks. */
CODA_API void coda_tasks_free(coda_tasks *list);

/** Declares a task that runs after every response of a route (for example
 *  request logging), with fixed arguments copied now. Added as ALWAYS. Call
 *  after coda_app_route() for that method and pattern. */
CODA_API int coda_app_route_task(coda_app *app, const char *method, const char *pattern,
                                  coda_task_def *def, const char *fmt, ...);

/* -- inside a task (any executor's thread; the task handle is valid until
 *    the task function returns, or until coda_task_done for PENDING) -- */

/** Number of arguments the task was added with. */
CODA_API int coda_task_nargs(const coda_task *t);
/** Argument i as a string (NULL if out of range or not 's'). */
CODA_API const char *coda_task_str(const coda_task *t, int i);
/** Argument i as an integer (0 if out of range or not 'i'). */
CODA_API int64_t coda_task_int(const coda_task *t, int i);
/** Argument i as a double (0.0 if out of range or not 'd'). */
CODA_API double coda_task_double(const coda_task *t, int i);
/** Argument i as bytes (NULL if out of range or not 'b'). */
CODA_API const void *coda_task_bytes(const coda_task *t, int i, size_t *len);
/** Records a failure message (copied) and returns CODA_EHANDLER, so a task
 *  can `return coda_task_fail(t, "smtp: %s", why);`. */
CODA_API int coda_task_fail(coda_task *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/** True once a THREAD task has passed its timeout (or shutdown forced), and
 *  for a durable task of any executor once its lease is lost (see
 *  coda_task_lease_lost()): the task should stop, as its outcome will not
 *  be recorded. A PROCESS task's worker sees only the lost lease (a
 *  timeout kills the worker instead). Any thread. */
CODA_API int coda_task_cancelled(const coda_task *t);
/** True once the running durable task's lease is lost: the heartbeat could
 *  not renew it in time, and the store gave the task to another attempt
 *  (another process, or a retry here). Whatever this attempt records from
 *  then on (outcome, result, progress) is refused by the store, logged and
 *  counted as CODA_STAT_LEASE_LOST. In a PROCESS worker it is told by a
 *  signal (SIGRTMIN+2, handled by coda: leave it alone in task code), seen
 *  within a heartbeat (CODA_OPT_TASK_LEASE / 3). Any thread. */
CODA_API int coda_task_lease_lost(const coda_task *t);
/** True if the response this task belongs to reached the client's socket. */
CODA_API int coda_task_delivered(const coda_task *t);
/** The registered name of the task's definition. */
CODA_API const char *coda_task_name(const coda_task *t);
/** Where the task runs (never CODA_EXEC_DEFAULT). */
CODA_API coda_executor coda_task_executor(const coda_task *t);
/** A process-unique id of this task, as in the logs. */
CODA_API uint64_t coda_task_id(const coda_task *t);
/** The id of the request whose response the task follows (coda_req_id). */
CODA_API uint64_t coda_task_request_id(const coda_task *t);

/** The W3C `traceparent` header of the request that added the task
 *  ("00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"), or NULL when
 *  that request had none, or one that is not valid (coda never makes one
 *  up). A durable task keeps it in the store, so a worker in another
 *  process or on another machine sees it too. Valid while the task runs;
 *  any thread that holds the task. */
CODA_API const char *coda_task_traceparent(const coda_task *t);
/** The app the task belongs to (NULL-safe for coda_log in a worker). */
CODA_API coda_app *coda_task_app(const coda_task *t);
/** The loop (uv_loop_t *) of a LOOP task. NULL elsewhere. */
CODA_API void *coda_task_loop(coda_task *t);
/** Finishes a LOOP task that returned CODA_PENDING: rc 0 or negative,
 *  with an optional message. Call once, on the task's loop thread. */
CODA_API void coda_task_done(coda_task *t, int rc, const char *message);
/** Human name of an executor: "loop", "thread", "process". */
CODA_API const char *coda_executor_name(coda_executor ex);

/** Called for every failed, crashed or timed-out task, on the thread that
 *  saw it end (any thread: make it thread-safe). `message` says why. */
typedef void (*coda_task_error_hook)(const coda_task *t, const char *message, void *user);
/** Sets the error hook (one per app; NULL removes it). Call before coda_app_run(). */
CODA_API void coda_app_on_task_error(coda_app *app, coda_task_error_hook hook, void *user);

/** Counters, per executor, for coda_task_stat(). */
typedef enum {
  CODA_STAT_QUEUED = 0, /* added, not started (includes waiting for the response) */
  CODA_STAT_RUNNING,
  CODA_STAT_SUCCEEDED,
  CODA_STAT_FAILED, /* includes crashed and timed out */
  CODA_STAT_TIMED_OUT,
  CODA_STAT_CRASHED,
  CODA_STAT_REJECTED,   /* queue full at add time */
  CODA_STAT_DROPPED,    /* handler failed, or skipped after a failure */
  CODA_STAT_RETRIED,    /* durable: failed attempts with another one scheduled */
  CODA_STAT_DEAD,       /* durable: every attempt failed */
  CODA_STAT_DUPLICATE,  /* durable: adds whose idempotency key was known */
  CODA_STAT_CLAIMED,    /* durable: attempts read back from the store */
  CODA_STAT_RESTARTED,  /* process: workers replaced after they ended (a worker
                           that ends before it is ready for tasks is replaced
                           after 0.1 s, doubling up to 5 s) */
  CODA_STAT_LEASE_LOST, /* durable: outcomes the store refused because the
                           attempt's lease had been taken over (not retried) */
  CODA_STAT_COUNT_
} coda_task_stat_kind;

/** Reads one counter (thread-safe, relaxed). */
CODA_API long coda_task_stat(const coda_app *app, coda_executor ex, coda_task_stat_kind kind);

/** Fills `buf` with all counters as JSON ({"requests":N,"tasks":{"thread":
 *  {"queued":..},..}}); returns the length needed (like snprintf). */
CODA_API size_t coda_stats_json(const coda_app *app, char *buf, size_t cap);

/* ------------------------------------------------------------------------ */
/* Durable tasks                                                             */
/* ------------------------------------------------------------------------ */

/*
 * A task added with CODA_TASK_DURABLE (or of a definition made durable with
 * coda_task_def_durable()) is written to the app's task store before its
 * response is sent. If the write fails, the response becomes 503 with
 * Retry-After (the handler's own answer is discarded) and its tasks are
 * dropped, except ALWAYS tasks that are not durable. Once written, the task
 * runs at least once: if it fails it is retried with exponential backoff and
 * jitter up to its maximum attempts, then marked dead; if the process dies,
 * the next start runs it again. Its id can be given to the client and read
 * back with coda_task_get().
 *
 *   coda_task_opts o = CODA_TASK_OPTS_INIT(.flags = CODA_TASK_DURABLE);
 *   int rc = coda_res_add_task_opts(res, report, &o, "s", user);
 *   if (rc) return rc;                        // 503 when full or store down
 *   coda_res_header(res, "Location", ...);    // o.id is the task's id
 *
 * Stores: "memory" (the default: durable semantics without surviving a
 * restart) and "sqlite:PATH" (one file, WAL, fsync on every group commit).
 * Writes from every loop are grouped into one transaction and one fsync by
 * the store thread; the event loops never touch the disk for a write.
 */

/** Chooses the task store, before coda_app_run(): "memory" or
 *  "sqlite:PATH" (the file and its directory's WAL files are created on
 *  first use; the schema is versioned and migrated). Opens it now, so a
 *  corrupt, read-only or locked file, or one in use by another process, is
 *  reported at start-up: CODA_ESTORE with the reason in
 *  coda_app_store_error(). Durable tasks left by an earlier run (queued, or
 *  running when that process died) run again once the app runs. */
CODA_API int coda_app_store(coda_app *app, const char *uri);

/** The last store error message ("" if none). Owned by the app, valid until
 *  the next store call on this thread's side; copy it to keep it. */
CODA_API const char *coda_app_store_error(const coda_app *app);

/** Makes every task of this definition durable (route-level tasks too). */
CODA_API int coda_task_def_durable(coda_task_def *def, int durable);

/** Puts the definition's durable tasks in a named queue (default
 *  "default"): they run on the processes that serve that queue
 *  (coda_app_queues()), whichever process added them. A name is 1 to 64
 *  characters among A-Z a-z 0-9 _ . - (CODA_EINVAL otherwise). Copied.
 *  Before coda_app_run(). */
CODA_API int coda_task_def_queue(coda_task_def *def, const char *queue);

/** Which queues this process claims durable tasks from, as a
 *  comma-separated list in order of preference ("cpu,default"); NULL or ""
 *  serves every queue (the default). A durable task added here of a queue
 *  not served is written unclaimed for a process that serves it. Before
 *  coda_app_run(): CODA_ESTATE after, CODA_EINVAL for a bad name. */
CODA_API int coda_app_queues(coda_app *app, const char *queues);

/** Pauses (paused 1) or resumes (0) claiming from a queue, for every
 *  process sharing the store: tasks running go on, nothing new of that
 *  queue starts until it is resumed. Waits for the store to record it.
 *  Any thread but a task's or an event loop's of this app while it runs
 *  (it blocks for one store write). CODA_ESTATE without a store. */
CODA_API int coda_app_queue_pause(coda_app *app, const char *queue, int paused);

/** Retry policy of a definition's durable tasks: attempts in all (>= 1),
 *  first backoff and its cap in ms. The delay before attempt n+1 is
 *  min(backoff_max, backoff * 2^(n-1)), then a random jitter takes it to
 *  between half and all of that. 0 keeps the app's default for a field. */
CODA_API int coda_task_def_retry(coda_task_def *def, int max_attempts, long backoff_ms,
                                 long backoff_max_ms);

/** Adds a task with options (see coda_res_add_task() for `fmt`); opts may
 *  be NULL (the same as coda_res_add_task()). A durable
 *  task gets its id at once, in opts->id. With a key, the id is derived
 *  from the key: a second add of the same key (while the first is kept in
 *  the store) gets the same id, and only the first task runs. A delayed
 *  task is written now and runs at its time, apart from the response's
 *  list. Returns CODA_EFULL when the queue is full, CODA_ESTORE when the
 *  store's last write failed (both become 503 with Retry-After). */
CODA_API int coda_res_add_task_opts(coda_res *res, coda_task_def *def, coda_task_opts *opts,
                                    const char *fmt, ...);

/** Adds a durable task from outside any request (CODA_TASK_DURABLE is
 *  implied), from any thread, once coda_app_run() has started. It is written
 *  by the next group commit and then runs; if that write fails it is logged
 *  and counted as a store error and does not run. */
CODA_API int coda_app_enqueue(coda_app *app, coda_task_def *def, coda_task_opts *opts,
                              const char *fmt, ...);

/** Waits (blocking the caller) until every durable write queued so far is
 *  in the store. Not from an event loop thread. Returns 0 or CODA_ESTORE. */
CODA_API int coda_app_store_sync(coda_app *app);

/* -- periodic tasks --
 *
 *   coda_task_def *tick = coda_app_task(app, "tick", tick_fn, CODA_EXEC_THREAD);
 *   coda_app_every(app, tick, 1000);             // each second, on the second
 *   coda_app_cron(app, report, "30 6 * * mon-fri"); // 06:30 UTC on weekdays
 *
 * Each due time adds one durable task of the definition, as
 * coda_app_enqueue() does (durable whatever the definition says; other adds
 * of it are as the definition says), with run_at its due time and the
 * idempotency key "periodic:NAME:DUE" (DUE in unix ms). The task gets one
 * argument, its due time in unix ms: coda_task_int(t, 0). Due times are on
 * the wall clock in UTC: an interval's are its multiples since the unix
 * epoch (every 1000 ms is on each second, every hour on the hour), a cron
 * expression's are its minutes. So every process that schedules the
 * definition against one store (the servers and workers of a fleet) adds
 * the same keys, and each due time runs once, whichever processes are up.
 * A process adds a due time when it comes (a timer on the server's control
 * loop, no polling), and stops adding them when it begins to shut down.
 *
 * Missed due times: when the app starts, the latest due time at or before
 * that moment is added as well, if it is younger than CODA_OPT_TASK_RETAIN
 * (any age if 0). If some process ran it, its key is still in the store and
 * nothing runs; if every process was down then, it runs once, now. Earlier
 * missed due times do not run: one catch-up, never a burst. This relies on
 * the retention keeping finished tasks longer than the interval: a due time
 * older than the retention is not caught up (the store could no longer tell
 * whether it ran). A process that falls behind while it runs (suspended)
 * likewise adds only the latest due time it missed.
 *
 * Both are configuration calls (before coda_app_bind() and coda_app_run()); one schedule per
 * definition. Schedules run while coda_app_run() runs, with a listener or
 * without one (a worker process). */

/** Runs `def` every `interval_ms` milliseconds (at least 10), at the
 *  multiples of the interval since the unix epoch. Returns 0, CODA_EINVAL
 *  (no def, a def of another app, an interval below 10 ms), CODA_EEXIST
 *  (the definition has a schedule already), CODA_ESTATE once the app is
 *  bound or runs, or CODA_ENOMEM. */
CODA_API int coda_app_every(coda_app *app, coda_task_def *def, long interval_ms);

/** Runs `def` at the minutes of a five-field cron expression in UTC:
 *  "minute hour day-of-month month day-of-week", each `*` or a list of
 *  numbers, ranges `a-b` and steps (`1-10/2`; every 5 minutes is `*` then
 *  `/5`); months and weekdays
 *  also by name (jan, mon); Sunday is 0 or 7; when both day fields are
 *  restricted a day matches either (a day field that starts with `*`
 *  restricts nothing there); @hourly, @daily, @weekly, @monthly, @yearly.
 *  Returns as coda_app_every(), and CODA_EINVAL for an expression that does
 *  not parse or never matches, with the reason logged ("hour: 24 is out of
 *  range 0-23"). */
CODA_API int coda_app_cron(coda_app *app, coda_task_def *def, const char *expr);

/** States of a durable task. */
typedef enum {
  CODA_STATE_QUEUED = 0, /* waiting: for its response, its turn or its time */
  CODA_STATE_RUNNING,
  CODA_STATE_SUCCEEDED,
  CODA_STATE_FAILED, /* the last attempt failed; another one is scheduled */
  CODA_STATE_DEAD,   /* every attempt failed */
  CODA_STATE_CANCELLED /* cancelled by an operator (coda_task_cancel()): never runs
                          again unless retried (coda_task_retry()) */
} coda_task_state;

/** One failed attempt of a durable task (coda_task_info.errors). */
typedef struct coda_task_error {
  int attempt;       /* 1 for the first */
  int64_t at;        /* unix ms, when it ended */
  const char *error; /* its message ("" if it gave none) */
} coda_task_error;

/** A durable task's status, as read by coda_task_get(). Times are unix ms,
 *  0 when not reached. New fields are only ever added at the end. */
typedef struct coda_task_info {
  uint64_t id;
  coda_task_state state;
  const char *name;
  const char *key;       /* NULL if none */
  int attempts;          /* attempts handed to run (docs/durable.md) */
  int max_attempts;
  int64_t created_at;
  int64_t run_at;        /* next attempt not before */
  int64_t started_at;    /* last attempt */
  int64_t finished_at;
  double progress;       /* 0..1, as last reported */
  const char *error;     /* last failure, NULL if none */
  const void *result;    /* stored by coda_task_set_result(), or NULL */
  size_t result_len;
  const char *queue;     /* the queue it is claimed from ("default") */
  const char *trace;     /* W3C traceparent of the request that added it, or NULL */
  uint64_t request_id;   /* the id of that request (0: added outside a request) */
  const char *origin;    /* "METHOD /route/{pattern}" of that request, or NULL */
  int cancel_requested;  /* coda_task_cancel() asked a running attempt to stop */
  int n_errors;          /* entries in errors */
  const coda_task_error *errors; /* its failed attempts, oldest first; the store
                                    keeps the last CODA_TASK_ERRORS_KEPT of them */
  const void *args;      /* its arguments, encoded (coda_task_args_json() reads them) */
  size_t args_len;
} coda_task_info;

/** How many failed attempts a task's error history keeps (the latest). */
#define CODA_TASK_ERRORS_KEPT 10

/** Reads a durable task's status (any thread; a read of the store). Free
 *  *out with coda_task_info_free(). CODA_ENOTFOUND if unknown. */
CODA_API int coda_task_get(coda_app *app, uint64_t id, coda_task_info **out);
/** Called by coda_task_list() for each task; `info` lives for the call.
 *  Return nonzero to stop. */
typedef int (*coda_task_list_fn)(const coda_task_info *info, void *user);

/** Lists durable tasks in one state (for example the dead ones), by
 *  increasing id, starting after `after_id` (0: from the first), at most
 *  `limit`. Any thread; it reads the store (SQLite: a scan of the table,
 *  for operators, not for a hot path). Returns how many, or a CODA_E*
 *  code. Tasks alive in this process show their state as coda_task_get()
 *  does (a first attempt that runs now is listed as running, not by the
 *  queued state stored for it). */
CODA_API int coda_task_list(coda_app *app, coda_task_state state, uint64_t after_id, int limit,
                            coda_task_list_fn fn, void *user);

/** A set of states, for coda_task_filter.states:
 *  CODA_STATE_BIT(CODA_STATE_FAILED) | CODA_STATE_BIT(CODA_STATE_DEAD). */
#define CODA_STATE_BIT(state) (1u << (state))

/** What coda_task_find() lists: the tasks that match every member set.
 *  Always make one with CODA_TASK_FILTER_INIT (or the pointer form
 *  CODA_TASK_FILTER), which records its size: members are only ever added
 *  at the end, and coda reads only those the caller's header had. A filter
 *  without its size is refused (CODA_EINVAL). */
typedef struct coda_task_filter {
  size_t size;       /* sizeof(coda_task_filter) in the caller's header */
  unsigned states;   /* CODA_STATE_BIT() of each state listed; 0: every state */
  const char *queue; /* tasks of this queue ("default" unless named); NULL: any */
  const char *name;  /* tasks of this definition (coda_app_task()'s name); NULL: any */
  uint64_t after_id; /* ids above this one: 0 from the first, else the last id of
                        the previous page */
  int limit;         /* at most this many; 0: no limit */
  /* Added later (read only when the caller's size has them). A bound on
   * the work of one call, for callers on an event loop: at most `budget`
   * rows are read from the store (0: no bound). When it runs out before
   * the end, the call returns what matched so far (maybe nothing) and sets
   * *next_after to the last id it examined: pass that as after_id to go
   * on. *next_after is 0 when the listing reached its end or its limit, or
   * fn stopped it. A budget needs next_after (CODA_EINVAL otherwise). */
  int budget;
  uint64_t *next_after;
} coda_task_filter;

/** A budget for coda_task_filter: what the admin API reads per request. */
#define CODA_TASK_FIND_BUDGET 5000

/** coda_task_filter f = CODA_TASK_FILTER_INIT(.name = "tick", .limit = 50); */
#define CODA_TASK_FILTER_INIT(...) {.size = sizeof(coda_task_filter), __VA_ARGS__}
/** A pointer to a filter for one call:
 *  coda_task_find(app, CODA_TASK_FILTER(.name = "tick"), fn, user). */
#define CODA_TASK_FILTER(...) (&(const coda_task_filter)CODA_TASK_FILTER_INIT(__VA_ARGS__))

/** Lists the durable tasks that match `filter` (NULL: all of them), by
 *  increasing id, to fn (return nonzero from it to stop). Pages: pass the
 *  last id delivered as after_id. Ids follow the order tasks were added,
 *  except for tasks with an idempotency key (periodic tasks among them),
 *  whose id is derived from the key. Any thread; it reads the store
 *  (SQLite: by name through an index, otherwise a scan, for operators, not
 *  for a hot path); tasks alive in this process show their state as
 *  coda_task_get() does, as for coda_task_list(). The strings of the
 *  filter are borrowed for the call. Without a budget, one call reads
 *  every row it needs, however many that is: set one (CODA_TASK_FIND_BUDGET)
 *  on an event loop. Returns how many fn got, CODA_EINVAL
 *  for a bad filter (no size, an unknown state bit, a negative limit or
 *  budget, a budget without next_after), or
 *  another CODA_E* code. coda_task_list() is this with one state. */
CODA_API int coda_task_find(coda_app *app, const coda_task_filter *filter,
                            coda_task_list_fn fn, void *user);

/** Frees what coda_task_get() returned. */
CODA_API void coda_task_info_free(coda_task_info *info);
/** Writes the status as JSON (a result is included as a string if it is
 *  valid UTF-8 text). Returns the length needed, like snprintf. */
CODA_API size_t coda_task_info_json(const coda_task_info *info, char *buf, size_t cap);
/** "queued", "running", "succeeded", "failed", "dead", "cancelled". */
CODA_API const char *coda_task_state_name(coda_task_state state);

/** Writes a task's arguments (info->args) as a JSON array, for display:
 *  integers and doubles as numbers, strings as strings, byte strings as
 *  {"base64":"..."}; arguments that do not decode give []. NUL-terminated
 *  when cap > 0; returns the length needed, like snprintf. */
CODA_API size_t coda_task_args_json(const coda_task_info *info, char *buf, size_t cap);

/* -- operators' actions and views --
 *
 * What an admin surface (coda_app_admin(), the dashboard, coda-admin) is
 * built on; usable directly too. Each action is one write made by the
 * store thread, and returns once the store holds it (on Redis, for the
 * whole fleet). Any thread but an event loop's or a task's of this app
 * while it runs (they block for one store write); before coda_app_run()
 * they write to the store directly. They return CODA_ENOTFOUND for an
 * unknown id, CODA_ESTATE when the task's state does not allow the
 * action (or there is no store), CODA_ESTORE when the store failed. */

/** Runs a task again now: a dead, failed (waiting for its retry) or
 *  cancelled task, or a queued one whose run_at is in the future, becomes
 *  queued and due at once. A task that used all its attempts gets one
 *  more. */
CODA_API int coda_task_retry(coda_app *app, uint64_t id);

/** Cancels a task. A queued, scheduled or failed one becomes cancelled
 *  and never runs (returns 0). A running one is asked to stop (returns 1):
 *  coda_task_cancelled() becomes true in its attempt (in another process
 *  of a fleet, at that process's next lease renewal, within
 *  CODA_OPT_TASK_LEASE / 3 and at most 5 s); a PROCESS task still running
 *  CODA_OPT_CANCEL_GRACE_MS later has its worker killed. The attempt then
 *  ends as cancelled, unless it succeeded. A PROCESS worker is told as it
 *  is told of a lost lease, so coda_task_lease_lost() reads true there as
 *  well. CODA_ESTATE for a task that succeeded, died or was cancelled
 *  already. */
CODA_API int coda_task_cancel(coda_app *app, uint64_t id);

/** Deletes a task in any state but running (CODA_ESTATE: cancel it first);
 *  its id and key are forgotten. */
CODA_API int coda_task_delete(coda_app *app, uint64_t id);

/** coda_task_retry() on every task in `state` (dead, failed or cancelled;
 *  CODA_EINVAL otherwise) of `queue` (NULL: every queue). Returns how
 *  many, or a CODA_E* code. */
CODA_API long coda_tasks_retry_all(coda_app *app, coda_task_state state, const char *queue);

/** coda_task_delete() on every task in `state` (any but running:
 *  CODA_EINVAL) of `queue` (NULL: every queue). Returns how many, or a
 *  CODA_E* code. */
CODA_API long coda_tasks_delete_all(coda_app *app, coda_task_state state, const char *queue);

/** One queue, as coda_app_queue_stats() reports it. */
typedef struct coda_queue_info {
  const char *name;
  int paused;
  long counts[6];        /* tasks by coda_task_state (queued counts due and scheduled) */
  long scheduled;        /* queued or failed whose run_at is in the future */
  int64_t oldest_due_at; /* run_at of the oldest task due and not claimed; 0: none */
  long processed, failed; /* attempts ended ok / not ok since the store was made
                             (fleet-wide on Redis) */
} coda_queue_info;

/** Calls fn for each queue the store knows (every queue a task was added
 *  to, and paused ones), by name; fn returns nonzero to stop, and must not
 *  keep the pointers. Any thread; cheap on every store (counters, no scan
 *  of the tasks). Returns how many fn got, or a CODA_E* code (CODA_ESTATE
 *  without a store). */
CODA_API int coda_app_queue_stats(coda_app *app, int (*fn)(const coda_queue_info *, void *),
                                  void *user);

/** A process that runs durable tasks against the store. */
typedef struct coda_node_info {
  const char *id;      /* "HOST:PID:START_MS" */
  const char *host;
  int pid;
  const char *role;    /* "server" (it listens) or "worker" */
  const char *queues;  /* served, comma-separated; "" every queue */
  const char *listen;  /* "HOST:PORT" or "" */
  int running;         /* durable attempts running there now */
  long processed;      /* durable attempts ended there */
  int64_t started_at, last_seen; /* unix ms */
  const char *version; /* coda_version() of that process */
} coda_node_info;

/** Calls fn for each process whose last heartbeat is recent (each running
 *  app beats every CODA_OPT_TASK_LEASE / 3, at most every 5 s, and is
 *  forgotten after three missed beats). On Redis every process of the
 *  fleet; on the memory and SQLite stores this process (while it runs).
 *  Any thread. Returns how many fn got, or a CODA_E* code. */
CODA_API int coda_app_nodes(coda_app *app, int (*fn)(const coda_node_info *, void *),
                            void *user);

/** A periodic schedule of this process (coda_app_every(), coda_app_cron()). */
typedef struct coda_schedule_info {
  const char *task;    /* the definition's name */
  long every_ms;       /* coda_app_every()'s interval, else 0 */
  const char *cron;    /* coda_app_cron()'s expression, else NULL */
  int64_t next_run;    /* unix ms of the next due time (0: not running) */
  int64_t last_run;    /* unix ms of the last due time added, 0 if none yet */
} coda_schedule_info;

/** Calls fn for each schedule of this app, in the order made. Any thread.
 *  Returns how many fn got. */
CODA_API int coda_app_schedules(coda_app *app, int (*fn)(const coda_schedule_info *, void *),
                                void *user);

/* -- inside a durable task -- */

/** True if the task is durable. */
CODA_API int coda_task_durable(const coda_task *t);
/** The attempt this run is (1 for the first). */
CODA_API int coda_task_attempt(const coda_task *t);
/** Reports progress (0..1) of a durable task, visible through
 *  coda_task_get() at once and written to the store. Any executor: in a
 *  PROCESS worker it is sent to the server (at most every 10 ms; the last
 *  value always arrives with the task's end). CODA_ESTATE if not durable,
 *  CODA_EINVAL if fraction is not a finite number. Cheap in a tight loop:
 *  a task has at most one write of its progress pending, which takes the
 *  latest value. */
CODA_API int coda_task_progress(coda_task *t, double fraction);
/** Stores a result (copied) of a durable task, written with its outcome.
 *  Any executor (a PROCESS worker sends it with the task's end).
 *  CODA_ESTATE if not durable. */
CODA_API int coda_task_set_result(coda_task *t, const void *data, size_t len);

/* ------------------------------------------------------------------------ */
/* Monitoring: metrics, the admin API and the dashboard                      */
/* ------------------------------------------------------------------------ */

/*
 * One call mounts the admin surface: GET /metrics (Prometheus), the
 * dashboard at /coda/ and the JSON admin API under /coda/api/. Every one
 * of these routes needs the admin token, whoever asks (loopback included:
 * behind a reverse proxy every peer is loopback): `Authorization: Bearer
 * TOKEN`, or the cookie set by opening /coda/?token=TOKEN (HttpOnly,
 * SameSite=Strict, Path=/coda; the answer is a redirect that drops the
 * token from the address). Actions are POST; by cookie they also need the CSRF token the
 * dashboard reads from /coda/api/session. docs/operations.md has the rules.
 *
 *   coda_app_admin(app, NULL);      // token from $CODA_ADMIN_TOKEN, or made up
 *   printf("http://127.0.0.1:%d/coda/?token=%s\n", coda_app_port(app),
 *          coda_app_admin_token(app));
 */

/** Mounts the admin surface (configuration time, before coda_app_run()).
 *  `token`: 16 to 128 characters among A-Z a-z 0-9 - . _ ~ (nothing a link,
 *  a header or a cookie must escape; `openssl rand -hex 32` makes one), else
 *  CODA_EINVAL; NULL or "": the environment's CODA_ADMIN_TOKEN,
 *  and without it 32 random bytes as 64 hex digits. CODA_EEXIST if mounted
 *  already, CODA_ESTATE while the app runs. */
CODA_API int coda_app_admin(coda_app *app, const char *token);

/** The admin token in force, or NULL before coda_app_admin(). */
CODA_API const char *coda_app_admin_token(const coda_app *app);

/** Renders the app's metrics in the Prometheus text format 0.0.4 (what
 *  GET /metrics serves, with Content-Type `text/plain; version=0.0.4;
 *  charset=utf-8`) into a malloc'd, NUL-terminated text: *out, to free()
 *  by the caller; *len (may be NULL) its length without the NUL. Any
 *  thread, running or not; it sums every thread's counters and asks the
 *  store's and queues' figures (so not from a hot path). Returns 0,
 *  CODA_EINVAL, CODA_ENOMEM.
 *
 *  Families (names start with coda_, counters end in _total, durations are
 *  histograms in seconds); label sets are bounded whatever the traffic
 *  (methods outside RFC 9110's are OTHER, patterns, tasks and queues past
 *  their table count as "other"):
 *  - coda_http_requests_total{method,route,status}: route is the matched
 *    pattern ("/tasks/{id}"), "none" when no route matched; status is the
 *    class (2xx..5xx). Requests the server answers itself (400 for a
 *    malformed head, 408, 413, 431, ...) count with route "none" and, when
 *    the head did not parse, method OTHER.
 *    coda_http_request_duration_seconds{route}: from the
 *    complete request to its response queued for writing.
 *  - coda_tasks_total{task,queue,executor,outcome}: an attempt ends
 *    succeeded, failed, timed_out or crashed; a failed durable attempt is
 *    then retried or dead; a task refused at add time (full queue) is
 *    rejected, one that never ran (its handler failed, an earlier task of
 *    a stop-on-failure list failed, shutdown) dropped.
 *    coda_task_duration_seconds{task,executor}: attempts, start to end.
 *    coda_task_queue_wait_seconds{queue}: from due (its response written,
 *    or its run_at) to started.
 *  - coda_store_up (gauge 0/1: the last write to the store succeeded),
 *    coda_store_batch_duration_seconds (one group commit of the store
 *    thread), coda_process_restarts_total (PROCESS workers replaced),
 *    coda_build_info{version} 1.
 *  With CODA_OPT_METRICS 0 nothing is counted (the text has the families'
 *  heads, the gauges and build info only). */
CODA_API int coda_app_metrics_text(coda_app *app, char **out, size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* CODA_H */
