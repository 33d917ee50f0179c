/*
 * response.h - HTTP/1.1 serialisation: the status line, header fields,
 * Content-Length and chunked framing, and the Date line (RFC 9112 4, 6,
 * 7.1; RFC 9110 6.6.1).
 *
 * Pure functions over a caller's buffer; any thread. They append and
 * report failure (out of memory) as CODA_ENOMEM, never partially: on
 * failure the buffer may hold a prefix, and the caller abandons it.
 * Header names and values are written as given: the layer above checks
 * them (tokens, no CR/LF) before they get here.
 */
#ifndef CODA_HTTP_RESPONSE_H
#define CODA_HTTP_RESPONSE_H

#include "common/buf.h"

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* The reason phrase of a status code ("Not Found"), "Unknown" otherwise. */
const char *coda__http_reason(int status);

/* "HTTP/1.1 404 Not Found\r\n". */
int coda__http_status_line(coda__buf *out, int status);

/* "Name: value\r\n". */
int coda__http_write_field(coda__buf *out, const char *name, size_t nlen, const char *value,
                     size_t vlen);

/* "Content-Length: N\r\n". */
int coda__http_content_length(coda__buf *out, uint64_t n);

/* Whether a response with this status has a body (not 1xx, 204, 304). */
int coda__http_status_has_body(int status);

/* One chunk of a chunked body: "SIZE\r\n" data "\r\n" (nothing for len 0,
 * which would end the body). */
int coda__http_chunk(coda__buf *out, const void *data, size_t len);

/* The last chunk and the empty trailer section: "0\r\n\r\n". */
int coda__http_last_chunk(coda__buf *out);

/* Formats "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" for `now` into buf
 * (at least 40 bytes); returns its length. */
size_t coda__http_date_line(time_t now, char *buf, size_t cap);

/* A complete error response that closes the connection: status line,
 * Server, the Date line given, a text body naming the status. */
int coda__http_error_response(coda__buf *out, int status, const char *date_line,
                              size_t date_len);

#endif /* CODA_HTTP_RESPONSE_H */
