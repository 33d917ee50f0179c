/* stores.c - see stores.h. */
#include "stores.h"

#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int wanted(const char *list, const char *kind) {
  return !list || strstr(list, kind) != NULL;
}

int tc_stores_open(tc_stores *s, const char *env, const char *name) {
  memset(s, 0, sizeof *s);
  s->name = name;
  const char *list = getenv(env);
  static const char *const kinds[] = {"memory", "sqlite", "redis"};
  for (int i = 0; i < 3; i++)
    if (wanted(list, kinds[i]))
      s->kinds[s->n++] = kinds[i];
  snprintf(s->tmpdir, sizeof s->tmpdir, "/tmp/coda-%s-XXXXXX", name);
  if (!mkdtemp(s->tmpdir)) {
    perror("mkdtemp");
    s->tmpdir[0] = '\0';
    return -1;
  }
  if (wanted(list, "redis")) {
    if (tc_redis_start(&s->redis, NULL) != 0)
      return -1;
    s->redis_up = 1;
  }
  return 0;
}

void tc_stores_uri(tc_stores *s, const char *kind, char *uri, size_t cap) {
  int seq = ++s->seq;
  if (strcmp(kind, "sqlite") == 0) {
    snprintf(uri, cap, "sqlite:%s/%s-%d.db", s->tmpdir, s->name, seq);
  } else if (strcmp(kind, "redis") == 0) {
    char suffix[96];
    snprintf(suffix, sizeof suffix, "/0?prefix=%s%d", s->name, seq);
    tc_redis_uri(&s->redis, uri, cap, suffix);
  } else {
    snprintf(uri, cap, "memory");
  }
}

void tc_stores_close(tc_stores *s) {
  if (s->redis_up)
    tc_redis_remove(&s->redis);
  s->redis_up = 0;
  if (s->tmpdir[0])
    tc_remove_tree(s->tmpdir);
  s->tmpdir[0] = '\0';
}
