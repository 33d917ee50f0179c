/*
 * error.c - error codes to text, generated from CODA_ERRNO_MAP in coda.h.
 */
#include "coda.h"

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
    return "unknown error";
  }
}

#define CODA_STR2(x) #x
#define CODA_STR(x) CODA_STR2(x)

const char *coda_version(void) {
  return CODA_STR(CODA_VERSION_MAJOR) "." CODA_STR(CODA_VERSION_MINOR) "." CODA_STR(
      CODA_VERSION_PATCH);
}
