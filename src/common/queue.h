/*
 * queue.h - intrusive circular doubly-linked lists, the one list in coda.
 *
 * Embed a coda__queue in a struct, link it into a head, and get the struct
 * back with coda__container_of. Nothing here allocates or locks: the owner
 * of the head says which thread may touch it.
 */
#ifndef CODA_COMMON_QUEUE_H
#define CODA_COMMON_QUEUE_H

#include <stddef.h>

#define coda__container_of(ptr, type, member)                                  \
  ((type *)((char *)(ptr) - offsetof(type, member)))

typedef struct coda__queue {
  struct coda__queue *next;
  struct coda__queue *prev;
} coda__queue;

static inline void coda__queue_init(coda__queue *q) { q->next = q->prev = q; }

static inline int coda__queue_empty(const coda__queue *q) { return q->next == q; }

static inline void coda__queue_insert_tail(coda__queue *head, coda__queue *q) {
  q->next = head;
  q->prev = head->prev;
  head->prev->next = q;
  head->prev = q;
}

static inline void coda__queue_insert_head(coda__queue *head, coda__queue *q) {
  q->next = head->next;
  q->prev = head;
  head->next->prev = q;
  head->next = q;
}

static inline void coda__queue_remove(coda__queue *q) {
  q->prev->next = q->next;
  q->next->prev = q->prev;
  q->next = q->prev = q;
}

static inline coda__queue *coda__queue_head(const coda__queue *head) {
  return head->next;
}

/* Moves every element of `from` to the tail of `to`; `from` ends empty. */
static inline void coda__queue_move(coda__queue *to, coda__queue *from) {
  if (coda__queue_empty(from))
    return;
  coda__queue *first = from->next, *last = from->prev;
  first->prev = to->prev;
  to->prev->next = first;
  last->next = to;
  to->prev = last;
  coda__queue_init(from);
}

#define coda__queue_foreach(q, head)                                           \
  for ((q) = (head)->next; (q) != (head); (q) = (q)->next)

#endif /* CODA_COMMON_QUEUE_H */
