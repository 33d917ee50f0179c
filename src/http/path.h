/*
 * path.h - the normalization of a request path that routes match (RFC 3986
 * 6.2.2): escaped unreserved bytes decoded, then dot segments removed.
 * Pure functions on caller memory; any thread.
 */
#ifndef CODA_HTTP_PATH_H
#define CODA_HTTP_PATH_H

#include <stddef.h>

/* Whether an absolute path ("/...") may change when normalized: it holds
 * a '%' or a "/.". Anything else is returned as it is. */
int coda__path_needs_normalizing(const char *path);

/* Writes the normalized form of the n bytes at src (an absolute path) to
 * dst, which has room for n + 1 bytes, NUL-terminated; never longer than
 * src. Decodes "%XX" where XX is an unreserved byte (ALPHA DIGIT - . _ ~),
 * leaves other escapes ("%2F") as they are, then removes "." and ".."
 * segments (RFC 3986 5.2.4; ".." never climbs above the root). */
void coda__path_normalize(char *dst, const char *src, size_t n);

/* The value of a hex digit, or -1. */
int coda__hex_value(int c);

/* Copies a request-target to `out` (room for tlen bytes) with the value of
 * every query parameter whose name is `token` (percent-encoded or not:
 * "%74oken" is the same name to a decoder) replaced by "REDACTED", cut to
 * the value's length: a secret passed in a link, such as the admin
 * dashboard's, stays out of every log line. Returns the bytes written,
 * never more than tlen. */
size_t coda__http_redact_target(char *out, const char *t, size_t tlen);

#endif /* CODA_HTTP_PATH_H */
