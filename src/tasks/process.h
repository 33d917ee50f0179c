/*
 * process.h - what the three parts of the PROCESS executor share. Private
 * to src/tasks/; the rest of the engine sees only the coda__process_pool_*
 * and coda__worker_* entry points of task.h.
 *
 *   process_pool.c    the parent: starts workers, queues tasks, sends
 *                     them, reads the answers, replaces dead workers
 *   process_worker.c  the child: the loop that reads a task, runs it and
 *                     answers
 *   process_wire.c    the messages between them, as bytes
 *
 * Every message is framed the same way, both ways: u32 payload length, u32
 * kind, payload (native byte order: both ends are the same program).
 *   TASK (parent to worker): u64 id, i32 attempt, u8 durable, u8 skip, u8
 *     delivered, u64 after, u64 request id, u16 name length, name, then the
 *     task's arguments as args.c encodes them, to the end of the payload.
 *     With skip set, the task does not run if the task `after` failed or
 *     was skipped. Delivered is coda_task_delivered() in the server, the
 *     request id its coda_task_request_id() (0: none).
 *   DONE (worker to parent): u64 id, i32 rc, u8 skipped, u32 message
 *     length, message, u8 has result, u32 result length, result, f64
 *     progress. Skipped: the task did not run (its chained predecessor
 *     failed or was skipped); rc is then 0. Any rc is the task's own, so a
 *     task may return any negative value.
 *   PROGRESS (worker to parent, while the task runs): u64 id, f64 progress.
 *   READY (worker to parent, once, before any task): no payload.
 */
#ifndef CODA_TASKS_PROCESS_H
#define CODA_TASKS_PROCESS_H

#include "tasks/task.h"

#include <stddef.h>
#include <stdint.h>

typedef enum coda__msg_kind {
  CODA__MSG_TASK = 1,
  CODA__MSG_DONE = 2,
  CODA__MSG_PROGRESS = 3,
  CODA__MSG_READY = 4
} coda__msg_kind;

/* Bytes of a frame's header (length and kind). */
#define CODA__MSG_HEADER 8
/* The largest payload a worker accepts; a longer one ends it. */
#define CODA__MSG_MAX (64u << 20)
/* Bytes of a whole PROGRESS message, below PIPE_BUF: one write() is whole,
 * even from a thread of the task. */
#define CODA__MSG_PROGRESS_SIZE (CODA__MSG_HEADER + 16)

/* The most tasks of one ordered list sent ahead to one worker (a chain;
 * see process_pool.c). The worker remembers the outcomes of twice as many,
 * enough to find a chained task's predecessor among them. */
#define CODA__CHAIN_DEPTH 16

/* A TASK message, read: its strings and arguments point into the payload. */
typedef struct coda__task_msg {
  uint64_t id;
  int32_t attempt;
  int durable;
  int skip;       /* skip the task if `after` failed or was skipped */
  int delivered;  /* its response was delivered */
  uint64_t after; /* with skip: the task before it in its list */
  uint64_t request_id;
  const char *name;
  size_t name_len;
  const char *trace; /* NUL-terminated in the payload, NULL: none */
  const void *args; /* args.c's encoding */
  size_t args_len;
} coda__task_msg;

/* A DONE message. Read, message and result point into the payload. */
typedef struct coda__done_msg {
  uint64_t id;
  int32_t rc;
  int skipped;         /* not run: see DONE above */
  const char *message; /* not NUL-terminated */
  uint32_t message_len;
  int has_result;
  const void *result;
  uint32_t result_len;
  double progress;
} coda__done_msg;

/* ---- process_wire.c: encoding (appends one whole frame to b) ---- */

/* t as a TASK message; `after`, when not NULL, is the task before it in a
 * list that stops on failure (it is then skipped if that one failed).
 * CODA_ENOMEM or CODA_EINVAL (its arguments do not encode): b is then
 * left as it was. */
int coda__wire_put_task(coda__buf *b, const coda_task *t, const coda_task *after);
int coda__wire_put_done(coda__buf *b, const coda__done_msg *m);
/* A PROGRESS message into out, which holds CODA__MSG_PROGRESS_SIZE bytes. */
void coda__wire_put_progress(char *out, uint64_t id, double fraction);
/* A READY message into out, which holds CODA__MSG_HEADER bytes. */
void coda__wire_put_ready(char *out);

/* ---- process_wire.c: decoding ---- */

/* The frame header at hdr (CODA__MSG_HEADER bytes): payload length, kind. */
void coda__wire_header(const void *hdr, uint32_t *len, uint32_t *kind);
/* The first whole frame in data[0..len): its kind and payload, and the
 * bytes it takes (0 while it is incomplete). */
size_t coda__wire_next(const char *data, size_t len, uint32_t *kind, const char **payload,
                       size_t *payload_len);
/* Payload readers: 0, or CODA_EINVAL when the payload is too short. Fields
 * read before the end was found are set (a TASK's id, so that an answer
 * can still name it). The TASK's arguments are checked by args.c. */
int coda__wire_get_task(const char *payload, size_t len, coda__task_msg *m);
int coda__wire_get_done(const char *payload, size_t len, coda__done_msg *m);
int coda__wire_get_progress(const char *payload, size_t len, uint64_t *id,
                            double *fraction);
/* The id that starts a DONE or PROGRESS payload; CODA_EINVAL if too short. */
int coda__wire_get_id(const char *payload, size_t len, uint64_t *id);

#endif /* CODA_TASKS_PROCESS_H */
