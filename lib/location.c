/*
 * location.c - parse repository locations.  Pure string work: nothing here
 * touches the filesystem or the network except getcwd() for relative paths.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbfs/location.h"
#include "cbfs/util.h"

static int invalid(CbfsError *err, const char *spec, const char *why)
{
    return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE, "invalid repository location \"%s\": %s",
                          spec, why);
}

static bool valid_bucket(const char *b, size_t n)
{
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char) b[i]) || isdigit((unsigned char) b[i]) || b[i] == '-' ||
              b[i] == '.'))
            return false;
    return isalnum((unsigned char) b[0]) && isalnum((unsigned char) b[n - 1]);
}

/* Collapse "//", "/./", "x/.." and a trailing '/' (lexically, like realpath -s). */
static void normalize_path(const char *in, char **ret)
{
    CbfsBuf b;
    const char *s = in;

    cbfs_buf_init(&b);
    while (*s) {
        const char *e;
        size_t n;
        while (*s == '/')
            s++;
        if (!*s)
            break;
        e = strchr(s, '/');
        n = e ? (size_t) (e - s) : strlen(s);
        if (n == 1 && s[0] == '.') {
            /* skip */
        } else if (n == 2 && s[0] == '.' && s[1] == '.') {
            char *last = strrchr(b.data, '/');
            if (last) {
                b.len = (size_t) (last - b.data);
                b.data[b.len] = '\0';
            }
        } else {
            cbfs_buf_append(&b, "/", 1);
            cbfs_buf_append(&b, s, n);
        }
        s += n;
    }
    if (b.len == 0)
        cbfs_buf_append(&b, "/", 1);
    *ret = b.data;
}

int cbfs_location_parse(const char *spec, bool allow_point, CbfsLocation *ret, CbfsError *err)
{
    char *repo = cbfs_xstrdup(spec);
    const char *colon;
    int rc = 0;

    memset(ret, 0, sizeof(*ret));
    if (allow_point) {
        char *at = strrchr(repo, '@');
        if (at) {
            *at = '\0';
            if (at[1] == '\0') {
                rc = invalid(err, spec, "empty point after \"@\"");
                goto fail;
            }
            ret->point = cbfs_xstrdup(at + 1);
        }
    }
    if (repo[0] == '\0') {
        rc = invalid(err, spec, "empty location");
        goto fail;
    }
    ret->spec = cbfs_xstrdup(repo);

    if (strncmp(repo, "s3://", 5) == 0) {
        const char *b = repo + 5;
        const char *slash = strchr(b, '/');
        size_t blen = slash ? (size_t) (slash - b) : strlen(b);
        if (!valid_bucket(b, blen)) {
            rc = invalid(err, spec, "invalid bucket name");
            goto fail;
        }
        ret->kind = CBFS_LOCATION_S3;
        ret->bucket = cbfs_xasprintf("%.*s", (int) blen, b);
        ret->prefix = cbfs_xstrdup(slash ? slash : "");
    } else if (strncmp(repo, "file:", 5) == 0) {
        if (repo[5] != '/') {
            rc = invalid(err, spec, "a file: location must be an absolute path");
            goto fail;
        }
        ret->kind = CBFS_LOCATION_POSIX;
        normalize_path(repo + 5, &ret->path);
    } else if ((colon = strchr(repo, ':')) != NULL && colon[1] == '/' && repo[0] != '/' &&
               !memchr(repo, '/', (size_t) (colon - repo))) {
        size_t blen = (size_t) (colon - repo);
        if (!valid_bucket(repo, blen)) {
            rc = invalid(err, spec, "invalid bucket name");
            goto fail;
        }
        ret->kind = CBFS_LOCATION_S3;
        ret->bucket = cbfs_xasprintf("%.*s", (int) blen, repo);
        ret->prefix = cbfs_xstrdup(colon + 1);
    } else {
        char *abs;
        if (repo[0] == '/') {
            abs = cbfs_xstrdup(repo);
        } else {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof(cwd))) {
                rc = invalid(err, spec, "could not get the current directory");
                goto fail;
            }
            abs = cbfs_xasprintf("%s/%s", cwd, repo);
        }
        ret->kind = CBFS_LOCATION_POSIX;
        normalize_path(abs, &ret->path);
        free(abs);
    }
    if (ret->kind == CBFS_LOCATION_S3) {
        /* strip leading and trailing '/' from the prefix */
        char *p = ret->prefix;
        size_t n;
        while (*p == '/')
            memmove(p, p + 1, strlen(p));
        n = strlen(p);
        while (n > 0 && p[n - 1] == '/')
            p[--n] = '\0';
        if (strstr(p, "..") || strstr(p, "//")) {
            rc = invalid(err, spec, "invalid prefix");
            goto fail;
        }
    }
    free(repo);
    return 0;
fail:
    free(repo);
    cbfs_location_release(ret);
    return rc;
}

void cbfs_location_release(CbfsLocation *loc)
{
    free(loc->spec);
    free(loc->path);
    free(loc->bucket);
    free(loc->prefix);
    free(loc->point);
    memset(loc, 0, sizeof(*loc));
}
