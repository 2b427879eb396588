/*
 * store_crypt.c - the object store of an encrypted repository: a CbfsStore
 * over another one (posix, s3, memory) that seals whole objects on put and
 * authenticates and opens them on get.
 *
 * Which objects: every key but "config" (plaintext: it holds the wrapped
 * key, and must be read before any key exists), "packs/..." (packs seal
 * each block and their index themselves, so that one block is still one
 * ranged read: pack.h, codec.h) and manifest objects "*.mdb" (sealed chunk
 * by chunk for the same reason: mobject.h).  So manifests, backup records, the cluster
 * object, WAL objects, restore points and whatever comes later (pins, locks)
 * are sealed without knowing it.
 *
 * Sealed object: "CBFSENC1" || nonce[12] || ciphertext || tag[16], the
 * AAD "cbfs object" NUL <repository id> NUL <key>: an object renamed over
 * another, or copied from another repository, does not open.  A failed
 * open is CBFS_EXIT_CORRUPT naming the object; nothing of it is returned.
 *
 * stat and list report the plaintext size (stored size less
 * STORE_CRYPT_OVERHEAD), so callers see the same sizes as in a repository
 * without encryption.  get_range reads the whole object (the tag covers it
 * all) and returns a slice; it is used on such objects only for a WAL
 * object's header, when a push finds the name taken, which is rare.
 *
 * Keys are needed only by get, get_range, put and replace: stat, list and
 * remove pass through, so wal-push's fast path (a stat) and wal-fetch of a
 * missing segment (-ENOENT comes before any key is needed) never unwrap it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/mobject.h"
#include "cbfs/store.h"
#include "cbfs/util.h"

#define MAGIC_LEN            8
#define STORE_CRYPT_OVERHEAD (MAGIC_LEN + CBFS_CRYPT_OVERHEAD)

static const char magic[MAGIC_LEN] = {'C', 'B', 'F', 'S', 'E', 'N', 'C', '1'};
static const char aad_label[] = "cbfs object";

typedef struct CryptStore {
    CbfsStore base;
    CbfsStore *inner;
    CbfsCrypt *crypt;
} CryptStore;

/* Objects stored as they are. */
static bool passes(const char *key)
{
    return strcmp(key, "config") == 0 || strncmp(key, "packs/", 6) == 0 || cbfs_mobject_key(key);
}

/* The AAD of key (caller frees). */
static uint8_t *object_aad(const CryptStore *cs, const char *key, size_t *ret_len)
{
    const char *id = cbfs_crypt_repo_id(cs->crypt);
    size_t ll = sizeof(aad_label), il = strlen(id) + 1, kl = strlen(key);
    uint8_t *aad = cbfs_xmalloc(ll + il + kl);

    memcpy(aad, aad_label, ll); /* with the NULs: separators */
    memcpy(aad + ll, id, il);
    memcpy(aad + ll + il, key, kl);
    *ret_len = ll + il + kl;
    return aad;
}

static int corrupt(CryptStore *cs, const char *key, const char *why, CbfsError *err)
{
    return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                          "object \"%s\" in repository \"%s\" is corrupt: %s", key,
                          cs->base.display, why);
}

static int crypt_get(CbfsStore *st, const char *key, uint8_t **ret_buf, size_t *ret_len,
                     CbfsError *err)
{
    CryptStore *cs = (CryptStore *) st;
    uint8_t *sealed, *plain, *aad;
    size_t len, aad_len, n;
    int rc;

    rc = cbfs_store_get(cs->inner, key, &sealed, &len, err);
    if (rc < 0 || passes(key)) {
        if (rc == 0) {
            *ret_buf = sealed;
            *ret_len = len;
        }
        return rc; /* -ENOENT before any key is needed: a missing WAL file is quick */
    }
    if ((rc = cbfs_crypt_unlock(cs->crypt, err)) < 0) {
        free(sealed);
        return rc;
    }
    if (len < STORE_CRYPT_OVERHEAD || memcmp(sealed, magic, MAGIC_LEN) != 0) {
        free(sealed);
        return corrupt(cs, key, "not an encrypted object", err);
    }
    n = len - STORE_CRYPT_OVERHEAD;
    plain = cbfs_xmalloc(n + 1);
    aad = object_aad(cs, key, &aad_len);
    rc = cbfs_crypt_open(cs->crypt, aad, aad_len, sealed + MAGIC_LEN, len - MAGIC_LEN, plain);
    free(aad);
    free(sealed);
    if (rc < 0) {
        free(plain);
        return corrupt(cs, key, "authentication failed", err);
    }
    plain[n] = '\0'; /* NUL-terminated like every driver's */
    *ret_buf = plain;
    *ret_len = n;
    return 0;
}

static int crypt_get_range(CbfsStore *st, const char *key, uint64_t off, size_t len, void *buf,
                           size_t *ret_n, CbfsError *err)
{
    CryptStore *cs = (CryptStore *) st;
    uint8_t *plain;
    size_t n;
    int rc;

    if (passes(key))
        return cbfs_store_get_range(cs->inner, key, off, len, buf, ret_n, err);
    /* the tag covers the whole object: it is read whole */
    rc = crypt_get(st, key, &plain, &n, err);
    if (rc < 0)
        return rc;
    *ret_n = off < n ? (n - off < len ? n - off : len) : 0;
    if (*ret_n)
        memcpy(buf, plain + off, *ret_n);
    free(plain);
    return 0;
}

/* The sealed form of data under key (caller frees). */
static uint8_t *seal(CryptStore *cs, const char *key, const void *data, size_t len)
{
    uint8_t *sealed = cbfs_xmalloc(len + STORE_CRYPT_OVERHEAD), *aad;
    size_t aad_len;

    memcpy(sealed, magic, MAGIC_LEN);
    aad = object_aad(cs, key, &aad_len);
    cbfs_crypt_seal(cs->crypt, aad, aad_len, data, len, sealed + MAGIC_LEN);
    free(aad);
    return sealed;
}

static int crypt_put(CbfsStore *st, const char *key, const void *data, size_t len, CbfsError *err)
{
    CryptStore *cs = (CryptStore *) st;
    uint8_t *sealed;
    int rc;

    if (passes(key))
        return cbfs_store_put(cs->inner, key, data, len, err);
    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    if ((rc = cbfs_crypt_unlock(cs->crypt, err)) < 0)
        return rc;
    /* sealed once: a driver's retries of this put send the same bytes, so
     * its "is the existing object ours?" check still holds */
    sealed = seal(cs, key, data, len);
    rc = cbfs_store_put(cs->inner, key, sealed, len + STORE_CRYPT_OVERHEAD, err);
    free(sealed);
    return rc;
}

static int crypt_replace(CbfsStore *st, const char *key, const void *data, size_t len,
                         CbfsError *err)
{
    CryptStore *cs = (CryptStore *) st;
    uint8_t *sealed;
    int rc;

    if (passes(key))
        return cbfs_store_replace(cs->inner, key, data, len, err);
    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    if ((rc = cbfs_crypt_unlock(cs->crypt, err)) < 0)
        return rc;
    sealed = seal(cs, key, data, len);
    rc = cbfs_store_replace(cs->inner, key, sealed, len + STORE_CRYPT_OVERHEAD, err);
    free(sealed);
    return rc;
}

static uint64_t plain_size(const char *key, uint64_t size)
{
    if (passes(key))
        return size;
    return size > STORE_CRYPT_OVERHEAD ? size - STORE_CRYPT_OVERHEAD : 0;
}

static int crypt_stat(CbfsStore *st, const char *key, uint64_t *ret_size, CbfsError *err)
{
    CryptStore *cs = (CryptStore *) st;
    uint64_t size;
    int rc = cbfs_store_stat(cs->inner, key, &size, err);
    if (rc == 0 && ret_size)
        *ret_size = plain_size(key, size);
    return rc;
}

typedef struct ListCtx {
    cbfs_store_list_cb cb;
    void *ctx;
} ListCtx;

static int list_cb(const char *key, uint64_t size, void *ctx)
{
    ListCtx *lc = ctx;
    return lc->cb(key, plain_size(key, size), lc->ctx);
}

static int crypt_list(CbfsStore *st, const char *prefix, cbfs_store_list_cb cb, void *ctx,
                      CbfsError *err)
{
    CryptStore *cs = (CryptStore *) st;
    ListCtx lc = {cb, ctx};
    return cbfs_store_list(cs->inner, prefix, list_cb, &lc, err);
}

static int crypt_remove(CbfsStore *st, const char *key, CbfsError *err)
{
    return cbfs_store_remove(((CryptStore *) st)->inner, key, err);
}

static void crypt_free(CbfsStore *st)
{
    CryptStore *cs = (CryptStore *) st;
    cbfs_store_free(cs->inner);
    free(st->display);
    free(cs);
}

static const CbfsStoreOps crypt_ops = {
    .name = "encrypted",
    .get_range = crypt_get_range,
    .get = crypt_get,
    .put = crypt_put,
    .stat = crypt_stat,
    .list = crypt_list,
    .remove = crypt_remove,
    .replace = crypt_replace,
    .free = crypt_free,
};

CbfsStore *cbfs_store_crypt_new(CbfsStore *inner, CbfsCrypt *crypt)
{
    CryptStore *cs = cbfs_xcalloc(1, sizeof(*cs));
    cs->base.ops = &crypt_ops;
    cs->base.display = cbfs_xstrdup(inner->display);
    cs->inner = inner;
    cs->crypt = crypt;
    return &cs->base;
}
