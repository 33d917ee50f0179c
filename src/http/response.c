/*
 * response.c - HTTP/1.1 serialisation (see response.h). No state, any
 * thread.
 */
#include "http/response.h"

#include "coda.h"

const char *coda__http_reason(int status) {
  switch (status) {
  case 100: return "Continue";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 206: return "Partial Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 417: return "Expectation Failed";
  case 422: return "Unprocessable Content";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  default: return "Unknown";
  }
}

/* The writers below collect whether every append succeeded (`ok`), and
 * answer 0 or CODA_ENOMEM once: error codes are never OR-ed together. */
static int result(int ok) { return ok ? 0 : CODA_ENOMEM; }

int coda__http_status_line(coda__buf *out, int status) {
  if (status == 200)
    return result(coda__buf_append_lit(out, "HTTP/1.1 200 OK\r\n") == 0);
  const char *reason = coda__http_reason(status);
  int ok = coda__buf_append_lit(out, "HTTP/1.1 ") == 0;
  ok &= coda__buf_append_u64(out, (unsigned)status) == 0;
  ok &= coda__buf_append_lit(out, " ") == 0;
  ok &= coda__buf_append(out, reason, strlen(reason)) == 0;
  ok &= coda__buf_append_lit(out, "\r\n") == 0;
  return result(ok);
}

int coda__http_write_field(coda__buf *out, const char *name, size_t nlen, const char *value,
                     size_t vlen) {
  int ok = coda__buf_append(out, name, nlen) == 0;
  ok &= coda__buf_append_lit(out, ": ") == 0;
  ok &= coda__buf_append(out, value, vlen) == 0;
  ok &= coda__buf_append_lit(out, "\r\n") == 0;
  return result(ok);
}

int coda__http_content_length(coda__buf *out, uint64_t n) {
  int ok = coda__buf_append_lit(out, "Content-Length: ") == 0;
  ok &= coda__buf_append_u64(out, n) == 0;
  ok &= coda__buf_append_lit(out, "\r\n") == 0;
  return result(ok);
}

int coda__http_status_has_body(int status) {
  return status >= 200 && status != 204 && status != 304;
}

int coda__http_chunk(coda__buf *out, const void *data, size_t len) {
  if (len == 0)
    return 0;
  int ok = coda__buf_append_hex(out, len) == 0;
  ok &= coda__buf_append_lit(out, "\r\n") == 0;
  ok &= coda__buf_append(out, data, len) == 0;
  ok &= coda__buf_append_lit(out, "\r\n") == 0;
  return result(ok);
}

int coda__http_last_chunk(coda__buf *out) {
  return result(coda__buf_append_lit(out, "0\r\n\r\n") == 0);
}

size_t coda__http_date_line(time_t now, char *buf, size_t cap) {
  struct tm tm;
  gmtime_r(&now, &tm);
  return strftime(buf, cap, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

int coda__http_error_response(coda__buf *out, int status, const char *date_line,
                              size_t date_len) {
  const char *reason = coda__http_reason(status);
  size_t rlen = strlen(reason);
  int ok = coda__http_status_line(out, status) == 0;
  ok &= coda__buf_append_lit(out, "Server: coda\r\n") == 0;
  ok &= coda__buf_append(out, date_line, date_len) == 0;
  ok &= coda__buf_append_lit(out, "Content-Type: text/plain; charset=utf-8\r\n") == 0;
  ok &= coda__http_content_length(out, rlen + 1) == 0;
  ok &= coda__buf_append_lit(out, "Connection: close\r\n\r\n") == 0;
  ok &= coda__buf_append(out, reason, rlen) == 0;
  ok &= coda__buf_append_lit(out, "\n") == 0;
  return result(ok);
}
