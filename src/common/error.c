/*
 * error.c - error codes to text, generated from CODA_ERRNO_MAP in coda.h.
 */
#include "common/error.h"

#include <stdio.h>

const char *coda_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define CODA_ERRNO_CASE(name, value, text)                                     \
  case CODA_E##name:                                                           \
    return text;
    CODA_ERRNO_MAP(CODA_ERRNO_CASE)
#undef CODA_ERRNO_CASE
  default:
    return "not a coda error code";
  }
}

int coda__is_error_code(int rc) {
  switch (rc) {
#define CODA_ERRNO_IS(name, value, text) case CODA_E##name:
    CODA_ERRNO_MAP(CODA_ERRNO_IS)
#undef CODA_ERRNO_IS
    return 1;
  default:
    return 0;
  }
}

const char *coda__describe_rc(int rc, char *buf, size_t cap) {
  if (rc == 0 || coda__is_error_code(rc))
    return coda_strerror(rc);
  snprintf(buf, cap, "returned %d (not a CODA_E* code)", rc);
  return buf;
}

#define CODA_STR2(x) #x
#define CODA_STR(x) CODA_STR2(x)

const char *coda_version(void) {
  return CODA_STR(CODA_VERSION_MAJOR) "." CODA_STR(CODA_VERSION_MINOR) "." CODA_STR(
      CODA_VERSION_PATCH);
}
