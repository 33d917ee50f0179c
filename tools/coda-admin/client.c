/*
 * client.c - the HTTP side of coda-admin: one libcurl easy handle, reused
 * so that `top` keeps one connection open, and the mapping of every way a
 * call can fail to one line on stderr and an exit status.
 *
 * The token goes in the Authorization header only: never in the URL (it
 * would reach access logs and proxies) and never in a message.
 */
#include "cli.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Answers larger than this are refused: an admin page is a few kB, and a
 * runaway body must not eat the operator's memory. */
#define REPLY_MAX (64u << 20)

int cli_client_init(cli *c) {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
    return -1;
  c->curl = curl_easy_init();
  return c->curl ? 0 : -1;
}

void cli_client_free(cli *c) {
  if (c->curl)
    curl_easy_cleanup(c->curl);
  c->curl = NULL;
  curl_global_cleanup();
}

static size_t on_data(char *p, size_t size, size_t n, void *user) {
  cli_reply *r = user;
  size_t add = size * n;
  if (r->len + add > REPLY_MAX)
    return 0; /* curl fails the transfer */
  char *b = realloc(r->body, r->len + add + 1);
  if (!b)
    return 0;
  memcpy(b + r->len, p, add);
  r->len += add;
  b[r->len] = '\0';
  r->body = b;
  return add;
}

const char *cli_escape(const char *s, char *buf, size_t cap) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = 0;
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    int plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
                ch == '~';
    if (n + 4 > cap)
      return NULL;
    if (plain) {
      buf[n++] = (char)ch;
    } else {
      buf[n++] = '%';
      buf[n++] = hex[ch >> 4];
      buf[n++] = hex[ch & 15];
    }
  }
  buf[n] = '\0';
  return buf;
}

/* What a failed status means for the operator, beyond the server's words. */
static int exit_of(long status) {
  switch (status) {
  case 401:
  case 403:
    return CLI_EXIT_AUTH;
  case 404:
    return CLI_EXIT_NOTFOUND;
  case 409:
    return CLI_EXIT_CONFLICT;
  default:
    return CLI_EXIT_ERROR;
  }
}

/* One line for an HTTP error: the API's {"error": "..."} when there is
 * one, cleaned for the terminal. */
/* Says what failed: on stderr now, or kept for later (c->hold). */
__attribute__((format(printf, 2, 3))) static void fail(cli *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->error, sizeof c->error, fmt, ap);
  va_end(ap);
  if (!c->hold)
    fprintf(stderr, "%s\n", c->error);
}

static int report_status(cli *c, const cli_reply *r, const char *method,
                         const char *path) {
  json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
  const char *msg = j ? json_string_value(json_object_get(j, "error")) : NULL;
  char clean[512];
  const char *what = r->status == 401
                         ? "not authorised (check --token or CODA_ADMIN_TOKEN)"
                     : r->status == 403 ? "refused"
                     : r->status == 404 ? "not found"
                     : r->status == 409 ? "not allowed in the task's state"
                     : r->status == 400 ? "bad request"
                     : r->status == 501 ? "not supported by this store"
                     : r->status == 503 ? "the task store is unavailable"
                                        : "failed";
  if (msg && strcmp(msg, what) == 0)
    msg = NULL; /* "404 not found: not found" says it twice */
  fail(c, "coda-admin: %s /coda/api/%s: %ld %s%s%s", method, path, r->status, what,
       msg ? ": " : "", msg ? cli_clean(msg, clean, sizeof clean) : "");
  json_decref(j);
  return exit_of(r->status);
}

static int perform(cli *c, const char *method, const char *url, cli_reply *r) {
  CURL *h = c->curl;
  char auth[600];
  struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/json");
  if (c->token && *c->token) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
    hdrs = curl_slist_append(hdrs, auth);
  }
  curl_easy_reset(h);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "coda-admin");
  if (strcmp(method, "POST") == 0) {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
  }
  CURLcode rc = curl_easy_perform(h);
  curl_slist_free_all(hdrs);
  memset(auth, 0, sizeof auth);
  if (rc != CURLE_OK) {
    fail(c, "coda-admin: cannot reach %s: %s", c->url, curl_easy_strerror(rc));
    return CLI_EXIT_CONNECT;
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
  return 0;
}

int cli_call(cli *c, const char *method, const char *path, json_t **out, char **raw) {
  size_t ulen = strlen(c->url);
  while (ulen > 0 && c->url[ulen - 1] == '/')
    ulen--;
  size_t cap = ulen + strlen(path) + 16;
  char *url = malloc(cap);
  if (!url) {
    fail(c, "coda-admin: out of memory");
    return CLI_EXIT_ERROR;
  }
  snprintf(url, cap, "%.*s/coda/api/%s", (int)ulen, c->url, path);
  cli_reply r = {0};
  int rc = perform(c, method, url, &r);
  free(url);
  if (rc == 0 && r.status >= 400)
    rc = report_status(c, &r, method, path);
  else if (rc == 0 && r.status != 200) {
    fail(c, "coda-admin: %s /coda/api/%s: unexpected status %ld", method, path, r.status);
    rc = CLI_EXIT_ERROR;
  }
  json_t *j = NULL;
  if (rc == 0 && out) {
    json_error_t err;
    j = r.body ? json_loadb(r.body, r.len, 0, &err) : NULL;
    if (!j || !json_is_object(j)) {
      fail(c, "coda-admin: %s /coda/api/%s: the answer is not a JSON object", method,
           path);
      json_decref(j);
      j = NULL;
      rc = CLI_EXIT_ERROR;
    }
  }
  if (rc == 0) {
    if (out)
      *out = j;
    if (raw) {
      *raw = r.body ? r.body : strdup("");
      r.body = NULL;
    }
  }
  free(r.body);
  return rc;
}
