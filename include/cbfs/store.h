/*
 * store.h - the object store: one interface, a driver per backend (posix,
 * in-memory for unit tests, s3).
 *
 * Keys are '/'-separated relative names made of [A-Za-z0-9._-] components,
 * never starting with '.' (such names are the drivers' temp files), never
 * containing "..".  Objects are immutable and created once (DESIGN §3.1):
 * there is no overwrite, with one documented exception: `replace`, which
 * only `cbfs key change` uses, on the config object.
 *
 * Every op returns 0 or a negative errno.  -ENOENT ("not found") is a result,
 * not a failure: ops return it without setting err.  Any other error sets err
 * with a message naming the object.
 *
 * Thread safety: every op may be called concurrently on one CbfsStore.
 */
#ifndef CBFS_STORE_H
#define CBFS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbfs/crypt.h"
#include "cbfs/error.h"
#include "cbfs/location.h"

typedef struct CbfsStore CbfsStore;

/* Called once per listed key (relative to the store root); return 0 to go
 * on, non-zero to stop the listing (that value is returned by list). */
typedef int (*cbfs_store_list_cb)(const char *key, uint64_t size, void *ctx);

typedef struct CbfsStoreOps {
    const char *name;
    /* Read up to len bytes at off into buf; *ret_n is the count read (short
     * only at the end of the object).  -ENOENT if the object is absent. */
    int (*get_range)(CbfsStore *st, const char *key, uint64_t off, size_t len, void *buf,
                     size_t *ret_n, CbfsError *err);
    /* Whole object into a new buffer (caller frees *ret_buf; NUL-terminated
     * for convenience, the NUL not counted).  -ENOENT if absent. */
    int (*get)(CbfsStore *st, const char *key, uint8_t **ret_buf, size_t *ret_len, CbfsError *err);
    /* Create the object durably, all or nothing.  -EEXIST if it already
     * exists (err not set; the existing object is untouched); a driver that
     * cannot tell its own earlier attempt from another writer (S3) returns
     * 0 when the existing object holds exactly data. */
    int (*put)(CbfsStore *st, const char *key, const void *data, size_t len, CbfsError *err);
    /* Size of the object.  -ENOENT if absent. */
    int (*stat)(CbfsStore *st, const char *key, uint64_t *ret_size, CbfsError *err);
    /* Every key under prefix ("" for all; "wal/" for a folder), in no
     * particular order. */
    int (*list)(CbfsStore *st, const char *prefix, cbfs_store_list_cb cb, void *ctx,
                CbfsError *err);
    /* Delete; -ENOENT if absent. */
    int (*remove)(CbfsStore *st, const char *key, CbfsError *err);
    /* Create or replace the object, atomically and durably: a reader sees
     * the old object or the new one, whole, never a mix or nothing.  The
     * single exception to create-once (docs/design.md §3.1): only the
     * config object is replaced, by `cbfs key change`. */
    int (*replace)(CbfsStore *st, const char *key, const void *data, size_t len, CbfsError *err);
    void (*free)(CbfsStore *st);
} CbfsStoreOps;

struct CbfsStore {
    const CbfsStoreOps *ops;
    char *display; /* the location as shown in messages (no secrets) */
};

/* Open the backend for loc.  For a posix location the directory must exist
 * unless create is set (then it is created, with its parents).  Caller frees
 * with cbfs_store_free. */
int cbfs_store_open(const CbfsLocation *loc, bool create, CbfsStore **ret, CbfsError *err);
/* An in-memory store (unit tests). */
CbfsStore *cbfs_store_mem_new(void);
/* A posix store rooted at directory root; display names it in messages. */
int cbfs_store_posix_new(const char *root, const char *display, bool create, CbfsStore **ret,
                         CbfsError *err);
/* An S3 store for loc (see store_s3.c for its settings). */
int cbfs_store_s3_new(const CbfsLocation *loc, CbfsStore **ret, CbfsError *err);

/* The s3_timeout of the S3 stores made from now on, in seconds (0: none):
 * a default the setting overrides, or with override the value itself. */
void cbfs_store_s3_timeout(unsigned seconds, bool override);
/* inner (owned from now on) with every object other than "config" and
 * "packs/..." sealed on put and authenticated and opened on get, under
 * crypt (borrowed; outlives the store).  See store_crypt.c. */
CbfsStore *cbfs_store_crypt_new(CbfsStore *inner, CbfsCrypt *crypt);
/* One node's view of a repository of several nodes (store_node.c): the
 * keys a node owns under node/<node>/, its claim "cluster" as
 * nodes/<node>, shared keys as they are.  inner is borrowed; node must be a
 * valid node name (repo.h). */
CbfsStore *cbfs_store_node_new(CbfsStore *inner, const char *node);
void cbfs_store_free(CbfsStore *st);

/* True if key is well formed (see above). */
bool cbfs_store_key_valid(const char *key);
/* For drivers: the error for a key that is not well formed. */
int cbfs_store_bad_key(CbfsStore *st, const char *key, CbfsError *err);

/* The names of the objects directly under prefix (a folder, "points/")
 * whose key ends with suffix ("" for any), prefix and suffix removed,
 * sorted.  Caller frees each and the array (cbfs_store_free_names). */
int cbfs_store_list_names(CbfsStore *st, const char *prefix, const char *suffix, char ***ret,
                          size_t *ret_n, CbfsError *err);
void cbfs_store_free_names(char **names, size_t n);
/* Get key and parse it as kv text (kv.h): 0 and *ret (caller frees), or the
 * get's error (-ENOENT when absent) or the parse's. */
int cbfs_store_get_kv(CbfsStore *st, const char *key, CbfsKv **ret, CbfsError *err);

/* Convenience wrappers over the ops table. */
static inline int cbfs_store_get_range(CbfsStore *st, const char *key, uint64_t off, size_t len,
                                       void *buf, size_t *ret_n, CbfsError *err)
{
    return st->ops->get_range(st, key, off, len, buf, ret_n, err);
}
static inline int cbfs_store_get(CbfsStore *st, const char *key, uint8_t **ret_buf, size_t *ret_len,
                                 CbfsError *err)
{
    return st->ops->get(st, key, ret_buf, ret_len, err);
}
static inline int cbfs_store_put(CbfsStore *st, const char *key, const void *data, size_t len,
                                 CbfsError *err)
{
    return st->ops->put(st, key, data, len, err);
}
static inline int cbfs_store_stat(CbfsStore *st, const char *key, uint64_t *ret_size,
                                  CbfsError *err)
{
    return st->ops->stat(st, key, ret_size, err);
}
static inline int cbfs_store_list(CbfsStore *st, const char *prefix, cbfs_store_list_cb cb,
                                  void *ctx, CbfsError *err)
{
    return st->ops->list(st, prefix, cb, ctx, err);
}
static inline int cbfs_store_remove(CbfsStore *st, const char *key, CbfsError *err)
{
    return st->ops->remove(st, key, err);
}
static inline int cbfs_store_replace(CbfsStore *st, const char *key, const void *data, size_t len,
                                     CbfsError *err)
{
    return st->ops->replace(st, key, data, len, err);
}

#endif
