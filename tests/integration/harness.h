/*
 * harness.h - what integration tests share: a real coda server on an
 * ephemeral loopback port, run on its own thread, and raw-socket clients
 * for the bytes libcurl would never send.
 */
#ifndef CODA_TEST_HARNESS_H
#define CODA_TEST_HARNESS_H

#include <coda.h>
#include <stddef.h>
#include <uv.h>

typedef struct test_server {
  coda_app *app;
  uv_thread_t thread;
  int port;
  int run_rc;
} test_server;

/* Binds app to 127.0.0.1:0 (signals not handled, access log off unless
 * set) and runs it on a thread. Returns 0 or a CODA_E* code. */
int ts_start(test_server *ts, coda_app *app);

/* coda_app_stop() and join; returns what coda_app_run() returned. */
int ts_stop(test_server *ts);

/* coda_app_free(), again every 5 ms while THREAD tasks left running at
 * shutdown still run (CODA_ESTATE), for up to ms. Returns its last rc. */
int tc_app_free(coda_app *app, int ms);

/* A connected blocking socket to the test server (-1 on failure) with a
 * receive timeout of `timeout_ms`. */
int tc_connect(int port, int timeout_ms);

/* The same with a small receive buffer (bytes), for clients that must
 * not absorb a large response in kernel buffers. */
int tc_connect_rcvbuf(int port, int timeout_ms, int rcvbuf);

/* Sends all bytes; 0 or -1. */
int tc_send(int fd, const void *p, size_t n);
int tc_send_str(int fd, const char *s);

/* Reads until the peer closes, the buffer is full or the timeout passes.
 * Returns the bytes read (NUL-terminated), and sets *closed when EOF was
 * seen. */
size_t tc_read_all(int fd, char *buf, size_t cap, int *closed);

/* Reads exactly one HTTP/1.1 response (head, then Content-Length or
 * chunked body) into buf. Returns its length, 0 on timeout or EOF first. */
size_t tc_read_response(int fd, char *buf, size_t cap);

/* Reads only a response head (for HEAD requests). */
size_t tc_read_head(int fd, char *buf, size_t cap);

/* GET path on a connection of its own (receive timeout timeout_ms); the
 * response goes to buf. Returns its status, or -1 (said on stderr). */
int tc_get(int port, const char *path, char *buf, size_t cap, int timeout_ms);

/* The status code of the response in buf, or -1. */
int tc_status(const char *resp);

/* The body of the response in buf (after the blank line), or NULL. */
const char *tc_body(const char *resp);

/* Reads a whole (small) file into buf, NUL-terminated; "" if it cannot. */
void tc_read_file(const char *path, char *buf, size_t cap);

/* Removes a directory and all it holds (a test's temp dir); what cannot
 * be removed is reported on stderr. */
void tc_remove_tree(const char *dir);

/* A journal path shared by a test and its PROCESS workers: "PREFIX-PID" of
 * the parent, passed down in CODA_TEST_JOURNAL (workers re-run main()). */
void tc_journal_path(char *buf, size_t cap, const char *prefix);

/* For tests whose PROCESS workers crash on purpose. A sanitizer catches a
 * SIGSEGV and writes a symbolized report before the process dies: seconds
 * per crash on a busy machine, so the crash was counted long after the
 * test had stopped waiting, and the next cases saw it. This sets
 * handle_segv=0 in ASAN_OPTIONS and TSAN_OPTIONS for the processes started
 * from now on (this one keeps the options it started with): the workers
 * then die of their SIGSEGV at once, as without a sanitizer. Call it
 * before the first worker starts, while no other thread reads the
 * environment. */
void tc_workers_die_of_segv(void);

/* Counts non-overlapping occurrences of needle. */
int tc_count(const char *hay, const char *needle);

/* Milliseconds of a monotonic clock. */
uint64_t tc_now_ms(void);
/* The wall clock in ms, exact: time(NULL) reads a coarse clock that can lag
 * the stores' CLOCK_REALTIME by a tick, so a bound built on it can be
 * crossed by a task added just before. */
uint64_t tc_wall_ms(void);

/* Sleeps ms milliseconds. */
void tc_sleep_ms(int ms);

#endif /* CODA_TEST_HARNESS_H */
