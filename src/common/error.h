/*
 * error.h - describing a return code in a log line. The codes and their
 * text are CODA_ERRNO_MAP in coda.h.
 */
#ifndef CODA_COMMON_ERROR_H
#define CODA_COMMON_ERROR_H

#include "coda.h"

#include <stddef.h>

/* Whether rc is one of the CODA_E* codes. */
int coda__is_error_code(int rc);

/* The text of a CODA_E* code, or, for a value a handler or task returned
 * that is none ("-1"), "returned -1 (not a CODA_E* code)" written into buf.
 * Returns a string that lives as long as buf. */
const char *coda__describe_rc(int rc, char *buf, size_t cap);

#endif /* CODA_COMMON_ERROR_H */
