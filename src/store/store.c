/*
 * store.c - what every store shares: opening one from a URI, and the
 * coda_task_info a status read returns (one malloc'd block, so the caller
 * frees it with one call whatever store it came from).
 */
#include "store/store.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t coda__unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int coda__store_open(const char *uri, long max_bytes, coda__store **out, char *err,
                     size_t errlen) {
  *out = NULL;
  if (strcmp(uri, "memory") == 0) {
    *out = coda__memory_store_open();
    return *out ? 0 : CODA_ENOMEM;
  }
  if (strncmp(uri, "sqlite:", 7) == 0 && uri[7])
    return coda__sqlite_store_open(uri + 7, max_bytes, out, err, errlen);
  if (strncmp(uri, "redis://", 8) == 0)
    return coda__redis_store_open(uri, out, err, errlen);
  snprintf(err, errlen,
           "unknown store \"%s\" (use memory, sqlite:PATH or redis://HOST:PORT[/DB])", uri);
  return CODA_EINVAL;
}

static size_t str_size(const char *s) { return s ? strlen(s) + 1 : 0; }

static char *put_str(char **p, const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  char *at = memcpy(*p, s, n);
  *p += n;
  return at;
}

coda_task_info *coda__task_info_from_record(const coda__task_record *r) {
  size_t size = sizeof(coda_task_info) + str_size(r->name) + str_size(r->key) +
                str_size(r->error) + r->result_len + 1;
  coda_task_info *info = malloc(size);
  if (!info)
    return NULL;
  char *p = (char *)(info + 1);
  info->id = r->id;
  info->state = r->state;
  info->name = put_str(&p, r->name ? r->name : "");
  info->key = put_str(&p, r->key);
  info->attempts = r->attempts;
  info->max_attempts = r->max_attempts;
  info->created_at = r->created_at;
  info->run_at = r->run_at;
  info->started_at = r->started_at;
  info->finished_at = r->finished_at;
  info->progress = r->progress;
  info->error = put_str(&p, r->error);
  info->result = NULL;
  info->result_len = r->result_len;
  if (r->result) {
    memcpy(p, r->result, r->result_len);
    p[r->result_len] = '\0'; /* text results read as strings */
    info->result = p;
  }
  return info;
}

void coda_task_info_free(coda_task_info *info) { free(info); }

const char *coda_task_state_name(coda_task_state state) {
  static const char *const names[] = {"queued", "running", "succeeded", "failed", "dead"};
  return (unsigned)state < sizeof names / sizeof names[0] ? names[state] : "unknown";
}

/* A time field: null until reached. */
static json_t *ms_or_null(int64_t ms) { return ms ? json_integer(ms) : json_null(); }

size_t coda_task_info_json(const coda_task_info *info, char *buf, size_t cap) {
  json_t *o = json_pack("{s:I,s:s,s:s,s:i,s:i,s:o,s:o,s:o,s:o,s:f}", "id",
                        (json_int_t)info->id, "state", coda_task_state_name(info->state),
                        "name", info->name, "attempts", info->attempts, "max_attempts",
                        info->max_attempts, "created_at", ms_or_null(info->created_at),
                        "run_at", ms_or_null(info->run_at), "started_at",
                        ms_or_null(info->started_at), "finished_at",
                        ms_or_null(info->finished_at), "progress", info->progress);
  if (!o)
    return 0;
  json_object_set_new(o, "error", info->error ? json_string(info->error) : json_null());
  if (info->key)
    json_object_set_new(o, "key", json_string(info->key));
  if (info->result) {
    /* json_stringn refuses invalid UTF-8: binary results show as a size. */
    json_t *text = json_stringn(info->result, info->result_len);
    json_object_set_new(o, "result", text ? text : json_null());
    json_object_set_new(o, "result_bytes", json_integer((json_int_t)info->result_len));
  }
  size_t n = json_dumpb(o, NULL, 0, JSON_COMPACT);
  if (cap) {
    size_t c = n < cap - 1 ? n : cap - 1;
    if (n <= c) {
      json_dumpb(o, buf, n, JSON_COMPACT);
    } else { /* truncated, as snprintf would */
      char *tmp = malloc(n);
      if (tmp && json_dumpb(o, tmp, n, JSON_COMPACT) == n)
        memcpy(buf, tmp, c);
      else
        c = 0;
      free(tmp);
    }
    buf[c] = '\0';
  }
  json_decref(o);
  return n;
}

int coda__info_list_add(coda__info_list *l, const coda__task_record *r) {
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 16;
    coda_task_info **items = realloc(l->items, (size_t)cap * sizeof *items);
    if (!items)
      return CODA_ENOMEM;
    l->items = items;
    l->cap = cap;
  }
  coda_task_info *info = coda__task_info_from_record(r);
  if (!info)
    return CODA_ENOMEM;
  l->items[l->n++] = info;
  return 0;
}

int coda__info_list_deliver(coda__info_list *l, coda_task_list_fn fn, void *user) {
  int given = 0, stop = 0;
  for (int i = 0; i < l->n; i++) {
    if (fn && !stop) {
      given++;
      stop = fn(l->items[i], user);
    }
    coda_task_info_free(l->items[i]);
  }
  free(l->items);
  l->items = NULL;
  l->n = l->cap = 0;
  return given;
}
