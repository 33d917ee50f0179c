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
  int n_errors = r->errors ? r->n_errors : 0;
  size_t errors_size = 0;
  for (int i = 0; i < n_errors; i++)
    errors_size += str_size(r->errors[i].error ? r->errors[i].error : "");
  /* The error array first, right behind the struct, so it stays aligned. */
  size_t size = sizeof(coda_task_info) + (size_t)n_errors * sizeof(coda_task_error) +
                str_size(r->name) + str_size(r->key) + str_size(r->error) +
                r->result_len + 1 + str_size(r->queue ? r->queue : "default") +
                str_size(r->trace) + str_size(r->origin) + errors_size + r->args_len;
  coda_task_info *info = malloc(size);
  if (!info)
    return NULL;
  coda_task_error *errors = (coda_task_error *)(info + 1);
  char *p = (char *)(errors + n_errors);
  info->queue = put_str(&p, r->queue ? r->queue : "default");
  info->trace = put_str(&p, r->trace);
  info->origin = put_str(&p, r->origin);
  info->request_id = r->request_id;
  info->cancel_requested = r->cancel_requested;
  info->n_errors = n_errors;
  info->errors = n_errors ? errors : NULL;
  for (int i = 0; i < n_errors; i++) {
    errors[i] = r->errors[i];
    errors[i].error = put_str(&p, r->errors[i].error ? r->errors[i].error : "");
  }
  info->args_len = r->args ? r->args_len : 0;
  info->args = NULL;
  if (r->args && r->args_len) {
    info->args = memcpy(p, r->args, r->args_len);
    p += r->args_len;
  }
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
  static const char *const names[] = {"queued", "running", "succeeded",
                                      "failed", "dead",    "cancelled"};
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

/* ---- error histories --------------------------------------------------------- */

void coda__errors_free(coda_task_error *errors, int n) {
  for (int i = 0; i < n; i++)
    free((char *)errors[i].error);
  free(errors);
}

int coda__errors_push(coda_task_error **errors, int *n, int attempt, int64_t at,
                      const char *error) {
  char *copy = strdup(error ? error : "");
  if (!copy)
    return CODA_ENOMEM;
  if (*n == CODA_TASK_ERRORS_KEPT) { /* the oldest goes */
    free((char *)(*errors)[0].error);
    memmove(*errors, *errors + 1, (size_t)(*n - 1) * sizeof **errors);
    (*n)--;
  } else {
    coda_task_error *grown = realloc(*errors, (size_t)(*n + 1) * sizeof **errors);
    if (!grown) {
      free(copy);
      return CODA_ENOMEM;
    }
    *errors = grown;
  }
  (*errors)[(*n)++] = (coda_task_error){attempt, at, copy};
  return 0;
}

char *coda__errors_to_json(const coda_task_error *errors, int n) {
  json_t *a = json_array();
  for (int i = 0; a && i < n; i++)
    json_array_append_new(a, json_pack("[i,I,s]", errors[i].attempt,
                                       (json_int_t)errors[i].at,
                                       errors[i].error ? errors[i].error : ""));
  char *out = a ? json_dumps(a, JSON_COMPACT) : NULL;
  json_decref(a);
  return out;
}

int coda__errors_from_json(const char *text, size_t len, coda_task_error **out) {
  *out = NULL;
  json_t *a = text && len ? json_loadb(text, len, 0, NULL) : NULL;
  size_t n = json_is_array(a) ? json_array_size(a) : 0;
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_array_get(a, i);
    bytes += json_string_length(json_array_get(e, 2)) + 1;
  }
  coda_task_error *errors = n ? malloc(n * sizeof *errors + bytes) : NULL;
  if (!errors) {
    json_decref(a);
    return 0;
  }
  char *p = (char *)(errors + n);
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_array_get(a, i);
    const char *msg = json_string_value(json_array_get(e, 2));
    errors[i].attempt = (int)json_integer_value(json_array_get(e, 0));
    errors[i].at = (int64_t)json_integer_value(json_array_get(e, 1));
    errors[i].error = put_str(&p, msg ? msg : "");
  }
  json_decref(a);
  *out = errors;
  return (int)n;
}

/* ---- nodes kept in this process ---------------------------------------------- */

struct coda__node_slot {
  coda_node_info info; /* its strings in `strings` */
  char *strings;
  int64_t expires_at;
};

/* info's strings copied into one block (*block), pointing into it. */
static int copy_node(const coda_node_info *n, coda_node_info *to, char **block) {
  const char *fields[] = {n->id, n->host, n->role, n->queues, n->listen, n->version};
  size_t size = 0;
  for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
    size += str_size(fields[i] ? fields[i] : "");
  char *p = malloc(size);
  if (!p)
    return CODA_ENOMEM;
  *block = p;
  *to = *n;
  to->id = put_str(&p, n->id ? n->id : "");
  to->host = put_str(&p, n->host ? n->host : "");
  to->role = put_str(&p, n->role ? n->role : "");
  to->queues = put_str(&p, n->queues ? n->queues : "");
  to->listen = put_str(&p, n->listen ? n->listen : "");
  to->version = put_str(&p, n->version ? n->version : "");
  return 0;
}

int coda__node_table_beat(coda__node_table *t, const coda_node_info *n, int64_t now,
                          int64_t ttl_ms) {
  int i = 0;
  while (i < t->n && strcmp(t->slots[i].info.id, n->id) != 0)
    i++;
  if (i == t->n) {
    struct coda__node_slot *grown = realloc(t->slots, (size_t)(t->n + 1) * sizeof *grown);
    if (!grown)
      return CODA_ENOMEM;
    t->slots = grown;
    t->slots[t->n].strings = NULL;
  }
  coda_node_info copy;
  char *block;
  if (copy_node(n, &copy, &block) != 0)
    return CODA_ENOMEM;
  if (i == t->n)
    t->n++;
  free(t->slots[i].strings);
  t->slots[i].info = copy;
  t->slots[i].info.last_seen = now;
  t->slots[i].strings = block;
  t->slots[i].expires_at = now + ttl_ms;
  return 0;
}

int coda__node_table_collect(const coda__node_table *t, int64_t now,
                             coda__node_list *out) {
  out->n = 0;
  out->items = t->n ? calloc((size_t)t->n, sizeof *out->items) : NULL;
  out->strings = t->n ? calloc((size_t)t->n, sizeof *out->strings) : NULL;
  if (t->n && (!out->items || !out->strings)) {
    free(out->items);
    free(out->strings);
    return CODA_ENOMEM;
  }
  for (int i = 0; i < t->n; i++) {
    if (t->slots[i].expires_at <= now)
      continue;
    if (copy_node(&t->slots[i].info, &out->items[out->n], &out->strings[out->n]) != 0) {
      out->n++;
      coda__node_list_deliver(out, NULL, NULL);
      return CODA_ENOMEM;
    }
    out->n++;
  }
  return 0;
}

int coda__node_list_deliver(coda__node_list *l, coda__node_fn fn, void *user) {
  int given = 0, stop = 0;
  for (int i = 0; i < l->n; i++) {
    if (fn && !stop && l->strings[i]) {
      given++;
      stop = fn(&l->items[i], user);
    }
    free(l->strings[i]);
  }
  free(l->items);
  free(l->strings);
  l->items = NULL;
  l->strings = NULL;
  l->n = 0;
  return given;
}

void coda__node_table_free(coda__node_table *t) {
  for (int i = 0; i < t->n; i++)
    free(t->slots[i].strings);
  free(t->slots);
  t->slots = NULL;
  t->n = 0;
}
