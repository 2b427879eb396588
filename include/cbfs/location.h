/*
 * location.h - repository locations and points (DESIGN §2).
 *
 *   /abs/path, file:/abs/path, relative/path   local directory repository
 *   s3://bucket/prefix, bucket:/prefix         S3-compatible object store
 *   ...@POINT                                  a backup label, "latest", ...
 */
#ifndef CBFS_LOCATION_H
#define CBFS_LOCATION_H

#include <stdbool.h>

#include "cbfs/error.h"

enum cbfs_location_kind { CBFS_LOCATION_POSIX, CBFS_LOCATION_S3 };

typedef struct CbfsLocation {
    enum cbfs_location_kind kind;
    char *spec;   /* the repository part as the user wrote it (for messages) */
    char *path;   /* POSIX: absolute, normalized (no trailing '/') */
    char *bucket; /* S3 */
    char *prefix; /* S3: without leading or trailing '/', may be "" */
    char *point;  /* text after '@', or NULL when none was given */
} CbfsLocation;

/* Parse spec.  With allow_point, a trailing "@POINT" is split off (the last
 * '@'); without, '@' is part of the location.  Relative POSIX paths are made
 * absolute against the current directory.  Returns 0 or -EINVAL with err
 * ("invalid repository location \"%s\": ..."). */
int cbfs_location_parse(const char *spec, bool allow_point, CbfsLocation *ret, CbfsError *err);
void cbfs_location_release(CbfsLocation *loc);

#endif
