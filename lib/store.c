/*
 * store.c - backend selection and key rules shared by every driver.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/store.h"
#include "cbfs/util.h"

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

typedef struct Names {
    size_t prefix_len;
    const char *suffix;
    char **v;
    size_t n;
} Names;

static int collect_name(const char *key, uint64_t size, void *ctx)
{
    Names *ns = ctx;
    const char *name = key + ns->prefix_len;
    size_t n = strlen(name), sl = strlen(ns->suffix);
    (void) size;
    if (n > sl && strcmp(name + n - sl, ns->suffix) == 0 && !memchr(name, '/', n - sl)) {
        ns->v = cbfs_xrealloc(ns->v, (ns->n + 1) * sizeof(char *));
        ns->v[ns->n++] = cbfs_xasprintf("%.*s", (int) (n - sl), name);
    }
    return 0;
}

int cbfs_store_list_names(CbfsStore *st, const char *prefix, const char *suffix, char ***ret,
                          size_t *ret_n, CbfsError *err)
{
    Names ns = {strlen(prefix), suffix, NULL, 0};
    int rc = cbfs_store_list(st, prefix, collect_name, &ns, err);
    if (rc < 0) {
        cbfs_store_free_names(ns.v, ns.n);
        return rc;
    }
    if (ns.n > 1)
        qsort(ns.v, ns.n, sizeof(char *), cbfs_cmp_strp);
    *ret = ns.v;
    *ret_n = ns.n;
    return 0;
}

void cbfs_store_free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int cbfs_store_get_kv(CbfsStore *st, const char *key, CbfsKv **ret, CbfsError *err)
{
    uint8_t *text;
    size_t len;
    int rc = cbfs_store_get(st, key, &text, &len, err);

    if (rc < 0)
        return rc;
    rc = cbfs_kv_parse((const char *) text, len, ret, err);
    free(text);
    return rc;
}
