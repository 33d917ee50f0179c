/*
 * idmap.c - see idmap.h.
 */
#include "common/idmap.h"

#include "coda.h"

#include <stdlib.h>

char coda__idmap_tomb;
#define TOMB ((void *)&coda__idmap_tomb)

static size_t hash_id(uint64_t id) {
  id ^= id >> 33;
  id *= 0xff51afd7ed558ccdULL;
  id ^= id >> 33;
  return (size_t)id;
}

/* The slot holding id, or the empty slot that ends its probe sequence. */
static coda__idmap_slot *probe(const coda__idmap *m, uint64_t id) {
  size_t mask = m->cap - 1;
  for (size_t i = hash_id(id) & mask;; i = (i + 1) & mask) {
    coda__idmap_slot *s = &m->slots[i];
    if (!s->value || (s->value != TOMB && s->id == id))
      return s;
  }
}

void *coda__idmap_get(const coda__idmap *m, uint64_t id) {
  if (!m->cap)
    return NULL;
  coda__idmap_slot *s = probe(m, id);
  return s->value;
}

static int rehash(coda__idmap *m, size_t cap) {
  coda__idmap_slot *old = m->slots;
  size_t oldcap = m->cap;
  coda__idmap_slot *slots = calloc(cap, sizeof *slots);
  if (!slots)
    return CODA_ENOMEM;
  m->slots = slots;
  m->cap = cap;
  m->used = m->live;
  for (size_t i = 0; i < oldcap; i++)
    if (old[i].value && old[i].value != TOMB)
      *probe(m, old[i].id) = old[i];
  free(old);
  return 0;
}

int coda__idmap_put(coda__idmap *m, uint64_t id, void *value) {
  if ((m->used + 1) * 4 >= m->cap * 3) {
    /* Mostly tombstones: sweep them at the same size; else double. */
    size_t cap = m->cap < 64 ? 64 : (m->live + 1) * 2 > m->cap ? m->cap * 2 : m->cap;
    if (rehash(m, cap) != 0)
      return CODA_ENOMEM;
  }
  coda__idmap_slot *s = probe(m, id);
  if (!s->value) {
    m->used++;
    m->live++;
  }
  s->id = id;
  s->value = value;
  return 0;
}

void *coda__idmap_remove(coda__idmap *m, uint64_t id) {
  if (!m->cap)
    return NULL;
  coda__idmap_slot *s = probe(m, id);
  void *v = s->value;
  if (v) {
    s->value = TOMB;
    m->live--;
  }
  return v;
}

void coda__idmap_each(const coda__idmap *m, void (*fn)(void *value)) {
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i].value && m->slots[i].value != TOMB)
      fn(m->slots[i].value);
}

void coda__idmap_each_user(const coda__idmap *m, void (*fn)(void *value, void *user),
                           void *user) {
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i].value && m->slots[i].value != TOMB)
      fn(m->slots[i].value, user);
}

void coda__idmap_free(coda__idmap *m) {
  free(m->slots);
  m->slots = NULL;
  m->cap = m->used = m->live = 0;
}
