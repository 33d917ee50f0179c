/*
 * webhook.c - outgoing webhooks from LOOP tasks: libcurl's multi_socket
 * interface driven by the task's own libuv loop, so a POST never blocks
 * the loop and needs no thread of its own.
 *
 * One context per uv loop: a CURLM, one uv_timer_t for curl's timeouts and
 * one uv_poll_t per socket curl asks us to watch. Contexts are found by
 * loop pointer in a process-wide registry; registry_mu protects only the
 * registry list. Everything inside a context is touched only by the thread
 * running its loop, and curl is never re-entered from its own callbacks.
 *
 * Contexts are never freed. coda ends a loop by closing every handle on it
 * (uv_walk + uv_close without a callback), so a context can outlive its
 * loop with its timer and pollers closed under it, and nothing of ours runs
 * after that. A later loop that gets the same address finds the context
 * with a closed timer and resets it: transfers of the dead loop are dropped
 * without touching their tasks (coda gave up on them with the loop) and the
 * pollers coda closed are freed. Our handles are unreferenced: coda, not a
 * webhook, decides when a loop may end.
 *
 * curl_global_init() runs once, on first use; the program must not call
 * curl_global_cleanup() while loops can still send webhooks.
 */
#include "webhook.h"

#include <curl/curl.h>
#include <uv.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WEBHOOK_TIMEOUT_MS 10000L
#define WEBHOOK_CONNECT_TIMEOUT_MS 5000L

/* A node in a context's list of transfers or of pollers. It is the first
 * member of both, so a node converts back with a cast. */
typedef struct webhook_link {
  struct webhook_link *next;
  struct webhook_link **pprev;
} webhook_link;

typedef struct webhook_loop {
  struct webhook_loop *next_loop; /* registry, under registry_mu */
  uv_loop_t *loop;                /* the key; never changes */
  CURLM *multi;                   /* NULL until set up, or after a reset */
  uv_timer_t timer;               /* curl's next timeout */
  struct curl_slist *headers;     /* shared by every transfer */
  webhook_link *requests;         /* transfers in flight */
  webhook_link *sockets;          /* pollers not yet closed by us */
  int resetting;                  /* curl callbacks do nothing */
} webhook_loop;

typedef struct webhook_request {
  webhook_link link;
  webhook_loop *ctx;
  coda_task *task;
  CURL *easy;
  char error[CURL_ERROR_SIZE];
} webhook_request;

typedef struct webhook_socket {
  webhook_link link;
  webhook_loop *ctx;
  curl_socket_t fd;
  uv_poll_t poll;
} webhook_socket;

static uv_once_t global_once = UV_ONCE_INIT;
static int global_rc; /* written once under global_once */
static uv_mutex_t registry_mu;
static webhook_loop *registry;

static void link_insert(webhook_link **head, webhook_link *l) {
  l->next = *head;
  l->pprev = head;
  if (*head)
    (*head)->pprev = &l->next;
  *head = l;
}

static void link_remove(webhook_link *l) {
  *l->pprev = l->next;
  if (l->next)
    l->next->pprev = l->pprev;
  l->next = NULL;
  l->pprev = NULL;
}

static void global_init(void) {
  if (uv_mutex_init(&registry_mu) != 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    global_rc = CODA_ENOMEM;
}

/* ---- finishing transfers ----------------------------------------------- */

/* Takes the transfer off the multi handle and frees it; the task is not
 * touched. */
static void request_free(webhook_request *req) {
  curl_multi_remove_handle(req->ctx->multi, req->easy);
  curl_easy_cleanup(req->easy);
  link_remove(&req->link);
  free(req);
}

static void request_finish(webhook_request *req, CURLcode result) {
  char why[CURL_ERROR_SIZE + 16];
  int rc = CODA_EIO;
  long status = 0;
  if (result != CURLE_OK) {
    snprintf(why, sizeof why, "webhook: %s",
             req->error[0] ? req->error : curl_easy_strerror(result));
  } else {
    curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status <= 299)
      rc = 0;
    else
      snprintf(why, sizeof why, "webhook: HTTP %ld", status);
  }
  coda_task *t = req->task;
  request_free(req);
  /* Last: finishing may start the list's next task, which may post again. */
  coda_task_done(t, rc, rc ? why : NULL);
}

/* Finishes every transfer curl reports done. Called after each
 * curl_multi_socket_action(), never from inside a curl callback. */
static void finish_done(webhook_loop *ctx) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(ctx->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    /* Read msg before request_free() invalidates it. */
    CURLcode result = msg->data.result;
    char *priv = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
    request_finish((webhook_request *)priv, result);
  }
}

/* ---- libuv side ------------------------------------------------------- */

static void on_timer(uv_timer_t *timer) {
  webhook_loop *ctx = timer->data;
  int running;
  curl_multi_socket_action(ctx->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  finish_done(ctx);
}

/* On a socket error (a reset, say) libuv stops the poller and reports no
 * events. We let curl read and write so it meets the error itself: a reset
 * on a reused keep-alive connection that the peer had just closed is then
 * retried on a fresh one, which CURL_CSELECT_ERR would turn into a failure
 * ("select/poll returned error"). */
static void on_poll(uv_poll_t *poll, int status, int events) {
  webhook_socket *s = poll->data;
  webhook_loop *ctx = s->ctx; /* s may be closed by the call below */
  int flags = 0;
  if (status < 0)
    flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(ctx->multi, s->fd, flags, &running);
  finish_done(ctx);
}

static void on_socket_closed(uv_handle_t *h) {
  webhook_socket *s = h->data;
  link_remove(&s->link);
  free(s);
}

static webhook_socket *socket_open(webhook_loop *ctx, curl_socket_t fd) {
  webhook_socket *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  if (uv_poll_init_socket(ctx->loop, &s->poll, fd) != 0) {
    free(s);
    return NULL;
  }
  s->poll.data = s;
  s->ctx = ctx;
  s->fd = fd;
  uv_unref((uv_handle_t *)&s->poll);
  link_insert(&ctx->sockets, &s->link);
  return s;
}

/* ---- curl side ---------------------------------------------------------- */

/* CURLMOPT_SOCKETFUNCTION: watch, re-arm or forget one socket. A socket we
 * cannot watch is left alone rather than reported: returning -1 would make
 * the whole multi handle unusable, while an unwatched transfer still ends
 * at its CURLOPT_TIMEOUT_MS through the timer. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                          void *socketp) {
  (void)easy;
  webhook_loop *ctx = userp;
  webhook_socket *s = socketp;
  if (ctx->resetting)
    return 0;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      /* Stop now: curl closes the descriptor right after we return. */
      uv_poll_stop(&s->poll);
      uv_close((uv_handle_t *)&s->poll, on_socket_closed);
      curl_multi_assign(ctx->multi, fd, NULL);
    }
    return 0;
  }
  if (!s) {
    s = socket_open(ctx, fd);
    if (!s)
      return 0;
    curl_multi_assign(ctx->multi, fd, s);
  }
  int events = 0;
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  uv_poll_start(&s->poll, events, on_poll);
  return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl's single timeout, as a one-shot uv timer. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  webhook_loop *ctx = userp;
  if (ctx->resetting)
    return 0;
  if (timeout_ms < 0)
    uv_timer_stop(&ctx->timer);
  else
    uv_timer_start(&ctx->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ---- per-loop contexts ------------------------------------------------ */

static int context_init(webhook_loop *ctx) {
  ctx->multi = curl_multi_init();
  if (!ctx->multi)
    return CODA_ENOMEM;
  curl_multi_setopt(ctx->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(ctx->multi, CURLMOPT_SOCKETDATA, ctx);
  curl_multi_setopt(ctx->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(ctx->multi, CURLMOPT_TIMERDATA, ctx);
  uv_timer_init(ctx->loop, &ctx->timer);
  ctx->timer.data = ctx;
  uv_unref((uv_handle_t *)&ctx->timer);
  return 0;
}

/* The loop this context served has ended (coda closed our timer) and a new
 * loop has its address. Nothing here belongs to a live loop any more. */
static void context_reset(webhook_loop *ctx) {
  ctx->resetting = 1;
  while (ctx->requests)
    request_free((webhook_request *)ctx->requests);
  curl_multi_cleanup(ctx->multi); /* closes cached connections */
  ctx->multi = NULL;
  while (ctx->sockets) {
    webhook_link *l = ctx->sockets;
    link_remove(l);
    free(l); /* closed by coda's uv_walk; its loop is gone */
  }
  ctx->resetting = 0;
}

static webhook_loop *context_new(uv_loop_t *loop) {
  webhook_loop *ctx = calloc(1, sizeof *ctx);
  if (!ctx)
    return NULL;
  ctx->loop = loop;
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  /* No "Expect: 100-continue" round trip before the body. */
  struct curl_slist *h2 = h ? curl_slist_append(h, "Expect:") : NULL;
  if (!h2) {
    curl_slist_free_all(h);
    free(ctx);
    return NULL;
  }
  ctx->headers = h2;
  return ctx;
}

/* The ready context of `loop`, or NULL without memory. Loop thread. */
static webhook_loop *context_for(uv_loop_t *loop) {
  uv_mutex_lock(&registry_mu);
  webhook_loop *ctx = registry;
  while (ctx && ctx->loop != loop)
    ctx = ctx->next_loop;
  if (!ctx && (ctx = context_new(loop)) != NULL) {
    ctx->next_loop = registry;
    registry = ctx;
  }
  uv_mutex_unlock(&registry_mu);
  if (!ctx)
    return NULL;
  /* Only coda closes our timer, and only when it ends the loop. */
  if (ctx->multi && uv_is_closing((uv_handle_t *)&ctx->timer))
    context_reset(ctx);
  if (!ctx->multi && context_init(ctx) != 0)
    return NULL;
  return ctx;
}

/* ---- starting a transfer ---------------------------------------------- */

static size_t discard(char *data, size_t size, size_t n, void *user) {
  (void)data;
  (void)user;
  return size * n;
}

static CURLcode request_setup(webhook_request *req, const char *url, const char *body,
                              size_t len) {
  CURL *e = req->easy;
  CURLcode rc = curl_easy_setopt(e, CURLOPT_URL, url);
  /* The size first: COPYPOSTFIELDS copies that many bytes. */
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body ? body : "");
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->ctx->headers);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, WEBHOOK_TIMEOUT_MS);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, WEBHOOK_CONNECT_TIMEOUT_MS);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_USERAGENT, "coda-demo-webhook");
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->error);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)req);
  return rc;
}

int demo_webhook_post(coda_task *t, const char *url, const char *body, size_t len) {
  /* Redirects are not followed, so the scheme checked here is the only
   * one curl will speak for this transfer. */
  if (!t || !url || (!body && len) || strncasecmp(url, "http://", 7) != 0)
    return CODA_EINVAL;
  uv_loop_t *loop = coda_task_loop(t);
  if (!loop)
    return CODA_EINVAL;
  uv_once(&global_once, global_init);
  if (global_rc)
    return global_rc;
  webhook_loop *ctx = context_for(loop);
  if (!ctx)
    return CODA_ENOMEM;
  webhook_request *req = calloc(1, sizeof *req);
  if (!req)
    return CODA_ENOMEM;
  req->ctx = ctx;
  req->task = t;
  req->easy = curl_easy_init();
  if (!req->easy || request_setup(req, url, body, len) != CURLE_OK ||
      curl_multi_add_handle(ctx->multi, req->easy) != CURLM_OK) {
    curl_easy_cleanup(req->easy);
    free(req);
    return CODA_ENOMEM;
  }
  /* curl only arms its timer here; the transfer starts from the loop. */
  link_insert(&ctx->requests, &req->link);
  return CODA_TASK_PENDING;
}
