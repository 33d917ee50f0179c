/*
 * dashboard.h - the dashboard's files, built into the library.
 *
 * cmake/embed.cmake turns src/admin/assets/ into a generated C file that
 * defines coda__dashboard_assets[]; dashboard.c serves them under /coda/.
 */
#ifndef CODA_ADMIN_DASHBOARD_H
#define CODA_ADMIN_DASHBOARD_H

#include <stddef.h>

typedef struct coda__asset {
  const char *name;          /* "app.js": a file of src/admin/assets/ */
  const unsigned char *data; /* followed by a NUL that len does not count */
  size_t len;
  const char *etag; /* quoted, from the file's SHA-256 */
} coda__asset;

/* Ends with an entry whose name is NULL. */
extern const coda__asset coda__dashboard_assets[];

/* The asset called `name`, or NULL. */
const coda__asset *coda__dashboard_asset(const char *name);

#endif /* CODA_ADMIN_DASHBOARD_H */
