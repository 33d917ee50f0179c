/*
 * router.h - routes by method and path pattern ("/users/{id}").
 *
 * Built on one thread before the server runs, then read-only: every loop
 * thread matches against it without locks. Matching allocates nothing: it
 * reports captures as spans of the caller's path.
 */
#ifndef CODA_APP_ROUTER_H
#define CODA_APP_ROUTER_H

#include "coda.h"

#include <stddef.h>

#define CODA__MAX_PARAMS 8

typedef struct coda__router coda__router;

typedef struct coda__route {
  char *method;
  char *pattern;
  struct coda__segment *segs;
  int nsegs;
  int nstatic;
  size_t pattern_len; /* for all-literal patterns: the whole path's length */
  size_t method_len;
  coda_handler handler;
  void *user;
  void *ext; /* the upper layer's data for this route (its declared tasks),
               owned by that layer; coda__app_ext.route runs when it is set */
  /* The pattern's slot in the app's HTTP metric families (app.c), so that
   * counting a request never looks the pattern up. */
  int metric_route;
  int metric_route_duration;
} coda__route;

typedef struct coda__param {
  const char *name;  /* the route's capture name, NUL-terminated */
  const char *value; /* span of the raw path, not terminated */
  size_t len;
} coda__param;

typedef struct coda__match {
  const coda__route *route; /* NULL when nothing matched */
  int nparams;
  coda__param params[CODA__MAX_PARAMS];
  int path_matched; /* some route has this path, for another method */
} coda__match;

coda__router *coda__router_new(void);
void coda__router_free(coda__router *r);

/* 0, CODA_EINVAL (bad pattern or method), CODA_EEXIST, CODA_ENOMEM. */
int coda__router_add(coda__router *r, const char *method, const char *pattern,
                     coda_handler handler, void *user);

/* The route registered for exactly this method and pattern, or NULL. */
coda__route *coda__router_find(coda__router *r, const char *method, const char *pattern);

/* Finds the route for method and raw path (no query). A GET route serves
 * HEAD. Among matches, the one with the most literal segments wins, so
 * "/users/me" beats "/users/{id}" whatever the order of registration. */
void coda__router_match(const coda__router *r, const char *method, size_t mlen,
                        const char *path, size_t plen, coda__match *m);

/* Writes the methods allowed for `path` as "GET, HEAD, POST" into buf
 * (NUL-terminated, truncated to cap); path NULL: those of every route. */
void coda__router_allow(const coda__router *r, const char *path, size_t plen, char *buf,
                        size_t cap);

/* Whether a method is one of RFC 9110's or has a route: others are 501. */
int coda__router_knows_method(const coda__router *r, const char *method, size_t mlen);

#endif /* CODA_APP_ROUTER_H */
