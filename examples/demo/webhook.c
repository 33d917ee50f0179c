/*
 * webhook.c - outgoing webhooks from LOOP tasks: libcurl's multi_socket
 * interface driven by the task's own libuv loop, so a POST never blocks
 * the loop and needs no thread of its own.
 *
 * A loop with transfers in flight has one webhook_loop: a CURLM, one
 * uv_timer_t for curl's timeouts and one uv_poll_t per socket curl asks us
 * to watch. It is found by loop pointer in a process-wide registry;
 * registry_mu protects only the registry list. Everything inside a
 * webhook_loop is touched only by the thread running its loop, and curl is
 * never re-entered from its own callbacks.
 *
 * It lives exactly as long as its transfers. coda leaves the handles an
 * application started alone when it ends a loop, so ours must never be
 * left open: while a transfer runs, its active timer and pollers keep the
 * loop running (at most the 10 s transfer timeout past coda's task drain),
 * and when the last transfer finishes everything is closed and freed. An
 * idle loop holds nothing of ours, and a later loop that happens to get
 * the same address cannot find a stale entry. The price is that
 * keep-alive connections are reused only between transfers that overlap.
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

/* A node in a webhook_loop's list of transfers or of pollers. It is the
 * first member of both, so a node converts back with a cast. */
typedef struct webhook_link {
  struct webhook_link *next;
  struct webhook_link **pprev;
} webhook_link;

typedef struct webhook_loop {
  struct webhook_loop *next_loop; /* registry, under registry_mu */
  uv_loop_t *loop;
  CURLM *multi;               /* NULL once closing */
  uv_timer_t timer;           /* curl's next timeout */
  struct curl_slist *headers; /* shared by every transfer */
  webhook_link *requests;     /* transfers in flight */
  webhook_link *sockets;      /* pollers, until their close callback */
  int handles;                /* open uv handles; freed when 0 and closing */
  int finishing;              /* inside finish_done(): it closes, not us */
  int closing;
} webhook_loop;

typedef struct webhook_request {
  webhook_link link;
  webhook_loop *wl;
  coda_task *task;
  CURL *easy;
  char error[CURL_ERROR_SIZE];
} webhook_request;

typedef struct webhook_socket {
  webhook_link link;
  webhook_loop *wl;
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
  if (uv_mutex_init(&registry_mu) != 0 ||
      curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    global_rc = CODA_ENOMEM;
}

/* ---- a loop's webhook state ------------------------------------------- */

/* Every handle we open ends here, through one of the close callbacks
 * below; the last one frees the webhook_loop. */
static void handle_closed(webhook_loop *wl) {
  if (--wl->handles == 0 && wl->closing) {
    curl_slist_free_all(wl->headers);
    free(wl);
  }
}

static void on_socket_closed(uv_handle_t *h) {
  webhook_socket *s = h->data;
  webhook_loop *wl = s->wl;
  link_remove(&s->link);
  free(s);
  handle_closed(wl);
}

static void on_timer_closed(uv_handle_t *h) { handle_closed(h->data); }

static void socket_close(webhook_socket *s) {
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, on_socket_closed);
}

/* Called once the last transfer is gone; the memory goes with the last
 * close callback. */
static void loop_close(webhook_loop *wl) {
  uv_mutex_lock(&registry_mu);
  webhook_loop **p = &registry;
  while (*p != wl)
    p = &(*p)->next_loop;
  *p = wl->next_loop;
  uv_mutex_unlock(&registry_mu);
  wl->closing = 1;
  /* No transfer is left, so curl watches no socket; it only closes the
   * connections it kept alive (a socket it still watched would get
   * CURL_POLL_REMOVE first, and the callback below closes the poller). */
  curl_multi_cleanup(wl->multi);
  wl->multi = NULL;
  for (webhook_link *l = wl->sockets; l; l = l->next) {
    webhook_socket *s = (webhook_socket *)l;
    if (!uv_is_closing((uv_handle_t *)&s->poll))
      socket_close(s);
  }
  uv_close((uv_handle_t *)&wl->timer, on_timer_closed);
}

/* ---- finishing transfers ----------------------------------------------- */

/* Takes the transfer off the multi handle and frees it; the task is not
 * touched. */
static void request_free(webhook_request *req) {
  curl_multi_remove_handle(req->wl->multi, req->easy);
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
  /* Finishing may start the list's next task, which may post again on
   * this loop: that transfer joins this webhook_loop. */
  coda_task_done(t, rc, rc ? why : NULL);
}

/* Finishes every transfer curl reports done, then closes the loop's
 * webhook state if nothing is left. Called after each
 * curl_multi_socket_action(), never from inside a curl callback; `wl` may
 * be closing when it returns. */
static void finish_done(webhook_loop *wl) {
  CURLMsg *msg;
  int left;
  wl->finishing = 1;
  while ((msg = curl_multi_info_read(wl->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    /* Read msg before request_free() invalidates it. */
    CURLcode result = msg->data.result;
    char *priv = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
    request_finish((webhook_request *)priv, result);
  }
  wl->finishing = 0;
  if (!wl->requests)
    loop_close(wl);
}

/* ---- libuv side ------------------------------------------------------- */

static void on_timer(uv_timer_t *timer) {
  webhook_loop *wl = timer->data;
  int running;
  curl_multi_socket_action(wl->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  finish_done(wl);
}

/* On a socket error (a reset, say) libuv stops the poller and reports no
 * events. We let curl read and write so it meets the error itself: a reset
 * on a reused keep-alive connection that the peer had just closed is then
 * retried on a fresh one, which CURL_CSELECT_ERR would turn into a failure
 * ("select/poll returned error"). */
static void on_poll(uv_poll_t *poll, int status, int events) {
  webhook_socket *s = poll->data;
  webhook_loop *wl = s->wl; /* s may be closed by the call below */
  int flags = 0;
  if (status < 0)
    flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(wl->multi, s->fd, flags, &running);
  finish_done(wl);
}

static webhook_socket *socket_open(webhook_loop *wl, curl_socket_t fd) {
  webhook_socket *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  if (uv_poll_init_socket(wl->loop, &s->poll, fd) != 0) {
    free(s);
    return NULL;
  }
  s->poll.data = s;
  s->wl = wl;
  s->fd = fd;
  wl->handles++;
  link_insert(&wl->sockets, &s->link);
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
  webhook_loop *wl = userp;
  webhook_socket *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    /* Stop now: curl closes the descriptor right after we return, and it
     * may be reused at once by another thread. */
    if (s)
      socket_close(s);
    if (s && !wl->closing)
      curl_multi_assign(wl->multi, fd, NULL);
    return 0;
  }
  if (!s) {
    s = socket_open(wl, fd);
    if (!s)
      return 0;
    curl_multi_assign(wl->multi, fd, s);
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
  webhook_loop *wl = userp;
  if (wl->closing)
    return 0;
  if (timeout_ms < 0)
    uv_timer_stop(&wl->timer);
  else
    uv_timer_start(&wl->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ---- finding a loop's webhook state ------------------------------------ */

static webhook_loop *loop_new(uv_loop_t *loop) {
  webhook_loop *wl = calloc(1, sizeof *wl);
  if (!wl)
    return NULL;
  wl->loop = loop;
  wl->headers = curl_slist_append(NULL, "Content-Type: application/json");
  /* No "Expect: 100-continue" round trip before the body. */
  struct curl_slist *h = wl->headers ? curl_slist_append(wl->headers, "Expect:") : NULL;
  wl->multi = h ? curl_multi_init() : NULL;
  if (!wl->multi) {
    curl_slist_free_all(wl->headers);
    free(wl);
    return NULL;
  }
  curl_multi_setopt(wl->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(wl->multi, CURLMOPT_SOCKETDATA, wl);
  curl_multi_setopt(wl->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(wl->multi, CURLMOPT_TIMERDATA, wl);
  uv_timer_init(loop, &wl->timer);
  wl->timer.data = wl;
  wl->handles = 1;
  return wl;
}

/* The webhook state of `loop`, created if it has no transfer yet; NULL
 * without memory. Loop thread. */
static webhook_loop *loop_find(uv_loop_t *loop) {
  uv_mutex_lock(&registry_mu);
  webhook_loop *wl = registry;
  while (wl && wl->loop != loop)
    wl = wl->next_loop;
  if (!wl && (wl = loop_new(loop)) != NULL) {
    wl->next_loop = registry;
    registry = wl;
  }
  uv_mutex_unlock(&registry_mu);
  return wl;
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
    rc = curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->wl->headers);
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
  webhook_loop *wl = loop_find(loop);
  if (!wl)
    return CODA_ENOMEM;
  webhook_request *req = calloc(1, sizeof *req);
  if (req) {
    req->wl = wl;
    req->task = t;
    req->easy = curl_easy_init();
  }
  if (!req || !req->easy || request_setup(req, url, body, len) != CURLE_OK ||
      curl_multi_add_handle(wl->multi, req->easy) != CURLM_OK) {
    if (req)
      curl_easy_cleanup(req->easy);
    free(req);
    if (!wl->requests && !wl->finishing)
      loop_close(wl);
    return CODA_ENOMEM;
  }
  /* curl only arms its timer here; the transfer starts from the loop, so
   * coda_task_done() cannot come before we return. */
  link_insert(&wl->requests, &req->link);
  return CODA_PENDING;
}
