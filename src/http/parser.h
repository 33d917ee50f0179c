/*
 * parser.h - the HTTP/1.1 request parser (RFC 9112), our own.
 *
 * It owns nothing and allocates nothing: the caller keeps the bytes, the
 * parser reports offsets into them. It runs on whichever thread calls it
 * and keeps no global state. It must never accept a message whose framing
 * another implementation could read differently (request smuggling): when
 * in doubt it answers 400 and the connection is closed.
 *
 * Use: feed the buffered bytes of a connection to coda__http_head_end()
 * until it finds the end of the head, then coda__http_parse_head() once,
 * then read the body by Content-Length or through coda__chunked_decode().
 */
#ifndef CODA_HTTP_PARSER_H
#define CODA_HTTP_PARSER_H

#include <stddef.h>
#include <stdint.h>

typedef struct coda__http_limits {
  uint32_t max_header_bytes; /* request line + fields + final CRLF -> 431 */
  uint32_t max_headers;      /* number of field lines -> 431 */
  uint32_t max_uri;          /* request-target length -> 414 */
  uint64_t max_body;         /* Content-Length above this -> 413 */
} coda__http_limits;

/* A span of the head: offset from the start of the head, and length. */
typedef struct coda__span {
  uint32_t off;
  uint32_t len;
} coda__span;

typedef struct coda__http_field {
  coda__span name;
  coda__span value; /* without leading and trailing OWS */
} coda__http_field;

enum {
  CODA__HTTP_CHUNKED = 1 << 0,         /* Transfer-Encoding: chunked */
  CODA__HTTP_HAS_LENGTH = 1 << 1,      /* a valid Content-Length was present */
  CODA__HTTP_KEEP_ALIVE = 1 << 2,      /* the connection may be reused */
  CODA__HTTP_EXPECT_CONTINUE = 1 << 3, /* Expect: 100-continue */
  CODA__HTTP_ABSOLUTE_FORM = 1 << 4,   /* target was http://authority/... */
  CODA__HTTP_ASTERISK_FORM = 1 << 5,   /* OPTIONS * */
  CODA__HTTP_AUTHORITY_FORM = 1 << 6,  /* CONNECT host:port */
};

typedef struct coda__http_head {
  coda__span method;
  coda__span target;    /* the request-target exactly as sent */
  coda__span path;      /* origin path part of target (absolute-form: after
                           the authority; "/" if empty), before '?' */
  coda__span query;     /* after '?', without it; len 0 if none */
  coda__span host;      /* the Host field value (or the authority of an
                           absolute-form target, which takes precedence) */
  uint8_t version_minor; /* 0 or 1 (HTTP/1.x with x>1 is read as 1) */
  uint32_t flags;        /* CODA__HTTP_* */
  uint64_t content_length; /* valid if CODA__HTTP_HAS_LENGTH */
  uint32_t nfields;
  coda__http_field *fields; /* caller-provided array of max_headers entries */
  uint32_t head_len;        /* bytes of the head including the final CRLF */
} coda__http_head;

/*
 * Looks for the end of the head in buf[0..len). `*scan` is where the
 * previous call stopped (start with 0); it is advanced so that a head
 * arriving one byte at a time costs linear time.
 * Returns the head length (> 0) when the empty line is found, 0 when more
 * bytes are needed, or a negative HTTP status: -414 when the request line
 * alone is longer than the URI limit allows, -431 when the head exceeds
 * max_header_bytes, -400 for a NUL or bare CR seen early.
 * Leading empty lines before the request line (RFC 9112 2.2) are counted in
 * the head and skipped by coda__http_parse_head().
 */
int coda__http_head_end(const char *buf, size_t len, size_t *scan,
                        const coda__http_limits *limits);

/*
 * Parses a complete head of `len` bytes (as returned by
 * coda__http_head_end). `out->fields` must point to an array of
 * limits->max_headers entries. Returns 0 on success or a negative HTTP
 * status for the error response: -400 (malformed, smuggling risk, Host
 * missing or repeated in HTTP/1.1), -414, -431, -413 (Content-Length above
 * max_body), -417 (an Expect other than 100-continue), -501 (a transfer
 * coding other than chunked), -505 (HTTP version not 1.x).
 */
int coda__http_parse_head(const char *buf, size_t len,
                          const coda__http_limits *limits,
                          coda__http_head *out);

/* Incremental decoder of a chunked body (RFC 9112 section 7.1). */
typedef struct coda__chunked {
  uint8_t state;
  uint8_t ndigits;    /* hex digits read for the current size */
  uint64_t remaining; /* bytes left in the current chunk, or its size */
  uint64_t total;     /* decoded bytes so far */
  uint32_t trailer_bytes;
} coda__chunked;

/* Resets a decoder before the first call. */
void coda__chunked_init(coda__chunked *d);

/*
 * Decodes in place: reads raw bytes buf[*in .. len) and writes the chunk
 * data to buf[*out ..), which never overtakes *in. Both offsets advance.
 * Returns 1 when the last chunk and the trailer section have been read
 * (*in is then just past the final CRLF), 0 when more bytes are needed, or
 * a negative HTTP status: -400 (bad hex, size overflow, missing CRLF after
 * data, bad extension or trailer), -413 (decoded total above max_body),
 * -431 (trailers above max_trailer_bytes).
 */
int coda__chunked_decode(coda__chunked *d, char *buf, size_t len, size_t *in,
                         size_t *out, uint64_t max_body,
                         uint32_t max_trailer_bytes);

/* True for bytes allowed in a token (RFC 9110 5.6.2: tchar). */
extern const uint8_t coda__http_tchar[256];

/* RFC 9110 5.5: field-value bytes are VCHAR, obs-text, SP and HTAB. Every
 * other control byte (NUL, CR, LF, DEL, ...) is refused. */
static inline int coda__http_value_char(unsigned char c) {
  return c >= 0x20 ? c != 0x7f : c == '\t';
}

#endif /* CODA_HTTP_PARSER_H */
