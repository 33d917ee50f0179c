/*
 * idmap.h - a hash map from 64-bit ids to pointers (open addressing, linear
 * probing, tombstones swept when the table grows). Used by the memory store
 * (every task it keeps) and by the durable-task engine (the tasks alive in
 * this process). No locking: the owner says which lock guards it.
 */
#ifndef CODA_COMMON_IDMAP_H
#define CODA_COMMON_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct coda__idmap_slot {
  uint64_t id;
  void *value; /* NULL: empty; coda__idmap_tomb: removed */
} coda__idmap_slot;

typedef struct coda__idmap {
  coda__idmap_slot *slots;
  size_t cap;  /* a power of two, or 0 before the first put */
  size_t used; /* live + tombstones */
  size_t live;
} coda__idmap;

extern char coda__idmap_tomb;

/* The value for id, or NULL. */
void *coda__idmap_get(const coda__idmap *m, uint64_t id);
/* Sets id's value (replacing any). 0, or CODA_ENOMEM. */
int coda__idmap_put(coda__idmap *m, uint64_t id, void *value);
/* Removes id; returns its value or NULL. */
void *coda__idmap_remove(coda__idmap *m, uint64_t id);
/* Calls fn for every live value. */
void coda__idmap_each(const coda__idmap *m, void (*fn)(void *value));
/* The same, with a user pointer. */
void coda__idmap_each_user(const coda__idmap *m, void (*fn)(void *value, void *user),
                           void *user);
void coda__idmap_free(coda__idmap *m);

#endif /* CODA_COMMON_IDMAP_H */
