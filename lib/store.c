/*
 * store.c - backend selection and key rules shared by every driver.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/store.h"

bool cbfs_store_key_valid(const char *key)
{
    const char *s = key;

    if (!*s)
        return false;
    while (*s) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t) (e - s) : strlen(s);
        if (n == 0 || s[0] == '.')
            return false;
        for (size_t i = 0; i < n; i++) {
            char c = s[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-'))
                return false;
        }
        s += n;
        if (*s == '/') {
            s++;
            if (!*s)
                return false;
        }
    }
    return true;
}

int cbfs_store_bad_key(CbfsStore *st, const char *key, CbfsError *err)
{
    return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR, "invalid object name \"%s\" in \"%s\"", key,
                          st->display);
}

int cbfs_store_open(const CbfsLocation *loc, bool create, CbfsStore **ret, CbfsError *err)
{
    switch (loc->kind) {
    case CBFS_LOCATION_POSIX:
        return cbfs_store_posix_new(loc->path, loc->spec, create, ret, err);
    case CBFS_LOCATION_S3:
        (void) create; /* the bucket must exist; nothing to create */
        return cbfs_store_s3_new(loc, ret, err);
    }
    return -EINVAL;
}

void cbfs_store_free(CbfsStore *st)
{
    if (st)
        st->ops->free(st);
}
