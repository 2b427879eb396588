/*
 * mobject.c - a manifest as stored, read chunk by chunk.  See mobject.h.
 *
 * The reader keeps the chunks it fetched in a direct-mapped cache (chunk n
 * in slot n mod slots): SQLite walks a b-tree from the root down, so the
 * upper pages are read again and again and stay, while a long scan only
 * ever evicts what it has just used.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/mobject.h"
#include "cbfs/util.h"

#define SHA_LEN CBFS_SHA256_LEN

typedef struct Slot {
    int64_t no; /* -1: empty */
    uint8_t *data;
} Slot;

struct CbfsMobject {
    CbfsStore *st;
    const CbfsCrypt *crypt;
    char *key, *label;
    uint64_t size;
    uint32_t chunk, nchunks;
    uint8_t *sums; /* nchunks * SHA_LEN */
    pthread_mutex_t lock;
    Slot *slots;
    size_t nslots;
    uint64_t fetched;
    bool failed; /* the last read failed with err */
    CbfsError err;
};

static const char chunk_label[] = "cbfs manifest chunk";
static const char index_label[] = "cbfs manifest index";

bool cbfs_mobject_key(const char *key)
{
    size_t n = strlen(key), s = strlen(CBFS_MOBJECT_SUFFIX);
    return n > s && strcmp(key + n - s, CBFS_MOBJECT_SUFFIX) == 0;
}

/* AAD: label NUL repository id NUL key [NUL chunk u32le]; caller frees. */
static uint8_t *aad_of(const CbfsCrypt *crypt, const char *label, const char *key, int64_t no,
                       size_t *ret_len)
{
    const char *id = cbfs_crypt_repo_id(crypt);
    size_t ll = strlen(label) + 1, il = strlen(id) + 1, kl = strlen(key);
    size_t n = ll + il + kl + (no >= 0 ? 5 : 0);
    uint8_t *a = cbfs_xmalloc(n), *p = a;
    memcpy(p, label, ll);
    p += ll;
    memcpy(p, id, il);
    p += il;
    memcpy(p, key, kl);
    p += kl;
    if (no >= 0) {
        *p++ = 0;
        cbfs_put_le32(p, (uint32_t) no);
    }
    *ret_len = n;
    return a;
}

static size_t overhead(const CbfsCrypt *crypt)
{
    return crypt ? CBFS_CRYPT_OVERHEAD : 0;
}

void cbfs_mobject_build(const CbfsCrypt *crypt, const char *key, const void *data, size_t len,
                        uint32_t chunk, uint8_t **ret, size_t *ret_len, char ret_index_sha[65])
{
    size_t n = (len + chunk - 1) / chunk, ov = overhead(crypt);
    size_t out_len = len + n * ov + n * SHA_LEN + ov;
    uint8_t *out = cbfs_xmalloc(out_len ? out_len : 1), *p = out;
    uint8_t *index = cbfs_xmalloc(n * SHA_LEN + 1), sum[SHA_LEN];

    for (size_t i = 0; i < n; i++) {
        const uint8_t *c = (const uint8_t *) data + i * chunk;
        size_t cl = i + 1 < n ? chunk : len - i * chunk;
        cbfs_sha256(c, cl, index + i * SHA_LEN);
        if (crypt) {
            size_t al;
            uint8_t *aad = aad_of(crypt, chunk_label, key, (int64_t) i, &al);
            cbfs_crypt_seal(crypt, aad, al, c, cl, p);
            free(aad);
        } else {
            memcpy(p, c, cl);
        }
        p += cl + ov;
    }
    if (crypt) {
        size_t al;
        uint8_t *aad = aad_of(crypt, index_label, key, -1, &al);
        cbfs_crypt_seal(crypt, aad, al, index, n * SHA_LEN, p);
        free(aad);
    } else {
        memcpy(p, index, n * SHA_LEN);
    }
    cbfs_sha256(index, n * SHA_LEN, sum);
    cbfs_hex_encode(sum, SHA_LEN, ret_index_sha);
    free(index);
    *ret = out;
    *ret_len = out_len;
}

/* Stored offset and length of chunk i, and its plain length. */
static void chunk_place(const CbfsMobject *mo, uint32_t i, uint64_t *off, size_t *stored,
                        size_t *plain)
{
    size_t ov = overhead(mo->crypt);
    *plain = i + 1 < mo->nchunks ? mo->chunk : (size_t) (mo->size - (uint64_t) i * mo->chunk);
    *off = (uint64_t) i * (mo->chunk + ov);
    *stored = *plain + ov;
}

static int corrupt(const CbfsMobject *mo, CbfsError *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int corrupt(const CbfsMobject *mo, CbfsError *err, const char *fmt, ...)
{
    char what[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                          "manifest \"%s\" of backup \"%s\" is corrupt: %s", mo->key, mo->label,
                          what);
}

static int missing(const CbfsMobject *mo, CbfsError *err)
{
    return cbfs_error_set(err, ENOENT, CBFS_EXIT_CORRUPT,
                          "manifest \"%s\" of backup \"%s\" is missing", mo->key, mo->label);
}

/* Open (if sealed) and check chunk i, stored at in (stored bytes), into
 * out (plain bytes). */
static int check_chunk(const CbfsMobject *mo, uint32_t i, const uint8_t *in, size_t stored,
                       uint8_t *out, size_t plain, CbfsError *err)
{
    uint8_t sum[SHA_LEN];
    if (mo->crypt) {
        size_t al;
        uint8_t *aad = aad_of(mo->crypt, chunk_label, mo->key, i, &al);
        int rc = cbfs_crypt_open(mo->crypt, aad, al, in, stored, out);
        free(aad);
        if (rc < 0)
            return corrupt(mo, err, "chunk %u: authentication failed", i);
    } else {
        memcpy(out, in, plain);
    }
    cbfs_sha256(out, plain, sum);
    if (memcmp(sum, mo->sums + (size_t) i * SHA_LEN, SHA_LEN) != 0)
        return corrupt(mo, err, "chunk %u: checksum mismatch", i);
    return 0;
}

static int fetch(CbfsMobject *mo, uint64_t off, size_t len, uint8_t *buf, CbfsError *err)
{
    size_t got = 0;
    int rc = cbfs_store_get_range(mo->st, mo->key, off, len, buf, &got, err);
    if (rc == -ENOENT)
        return missing(mo, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&mo->lock);
    mo->fetched += got;
    pthread_mutex_unlock(&mo->lock);
    if (got != len)
        return corrupt(mo, err, "%llu bytes short", (unsigned long long) (len - got));
    return 0;
}

int cbfs_mobject_open(CbfsStore *st, const CbfsCrypt *crypt, const CbfsKv *record,
                      size_t cache_bytes, CbfsMobject **ret, CbfsError *err)
{
    const char *key = cbfs_kv_get(record, "manifest");
    const char *want = cbfs_kv_get(record, "manifest_index_sha256");
    const char *label = cbfs_kv_get(record, "label");
    uint64_t size, chunk, ov = crypt ? CBFS_CRYPT_OVERHEAD : 0, ioff;
    uint8_t *stored, sum[SHA_LEN];
    char hex[2 * SHA_LEN + 1];
    size_t ilen;
    CbfsMobject *mo;
    int rc;

    if (!key || !want || !label || strncmp(key, "backups/", 8) != 0 || !cbfs_store_key_valid(key) ||
        !cbfs_mobject_key(key) || cbfs_kv_get_u64(record, "manifest_size", &size) < 0 ||
        cbfs_kv_get_u64(record, "manifest_chunk", &chunk) < 0 || chunk < 512 ||
        chunk > (64u << 20) || size / chunk >= UINT32_MAX)
        return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT, "backup record of \"%s\" is damaged",
                              label ? label : "?");
    mo = cbfs_xcalloc(1, sizeof(*mo));
    mo->st = st;
    mo->crypt = crypt;
    mo->key = cbfs_xstrdup(key);
    mo->label = cbfs_xstrdup(label);
    mo->size = size;
    mo->chunk = (uint32_t) chunk;
    mo->nchunks = (uint32_t) ((size + chunk - 1) / chunk);
    pthread_mutex_init(&mo->lock, NULL);
    cbfs_error_init(&mo->err);
    if (!cache_bytes)
        cache_bytes = CBFS_MOBJECT_CACHE_DEFAULT;
    mo->nslots = cache_bytes / chunk ? cache_bytes / chunk : 1;
    mo->slots = cbfs_xcalloc(mo->nslots, sizeof(Slot));
    for (size_t i = 0; i < mo->nslots; i++)
        mo->slots[i].no = -1;

    /* the index, after the chunks */
    ioff = size + mo->nchunks * ov;
    ilen = (size_t) mo->nchunks * SHA_LEN;
    stored = cbfs_xmalloc(ilen + ov + 1);
    mo->sums = cbfs_xmalloc(ilen + 1);
    rc = fetch(mo, ioff, ilen + ov, stored, err);
    if (rc == 0 && crypt) {
        size_t al;
        uint8_t *aad = aad_of(crypt, index_label, key, -1, &al);
        if (cbfs_crypt_open(crypt, aad, al, stored, ilen + ov, mo->sums) < 0)
            rc = corrupt(mo, err, "index: authentication failed");
        free(aad);
    } else if (rc == 0) {
        memcpy(mo->sums, stored, ilen);
    }
    free(stored);
    if (rc == 0) {
        cbfs_sha256(mo->sums, ilen, sum);
        cbfs_hex_encode(sum, SHA_LEN, hex);
        if (strcmp(hex, want) != 0)
            rc = corrupt(mo, err, "index: checksum mismatch");
    }
    if (rc < 0) {
        cbfs_mobject_free(mo);
        return rc;
    }
    *ret = mo;
    return 0;
}

void cbfs_mobject_free(CbfsMobject *mo)
{
    if (!mo)
        return;
    for (size_t i = 0; i < mo->nslots; i++)
        free(mo->slots[i].data);
    free(mo->slots);
    pthread_mutex_destroy(&mo->lock);
    free(mo->sums);
    free(mo->key);
    free(mo->label);
    free(mo);
}

uint64_t cbfs_mobject_size(const CbfsMobject *mo)
{
    return mo->size;
}

uint64_t cbfs_mobject_fetched(const CbfsMobject *mo)
{
    return mo->fetched;
}

const char *cbfs_mobject_name(const CbfsMobject *mo)
{
    return mo->key;
}

/* Copy len bytes at off inside chunk i into out: from the cache, or
 * fetched, checked and cached. */
static int read_in_chunk(CbfsMobject *mo, uint32_t i, size_t off, size_t len, uint8_t *out,
                         CbfsError *err)
{
    Slot *s = &mo->slots[i % mo->nslots];
    uint64_t soff;
    size_t stored, plain;
    uint8_t *in, *data;
    int rc;

    pthread_mutex_lock(&mo->lock);
    if (s->no == (int64_t) i) {
        memcpy(out, s->data + off, len);
        pthread_mutex_unlock(&mo->lock);
        return 0;
    }
    pthread_mutex_unlock(&mo->lock);

    chunk_place(mo, i, &soff, &stored, &plain);
    in = cbfs_xmalloc(stored);
    data = cbfs_xmalloc(mo->chunk);
    rc = fetch(mo, soff, stored, in, err);
    if (rc == 0)
        rc = check_chunk(mo, i, in, stored, data, plain, err);
    free(in);
    if (rc < 0) {
        free(data);
        return rc;
    }
    memcpy(out, data + off, len);
    pthread_mutex_lock(&mo->lock);
    free(s->data);
    s->data = data;
    s->no = i;
    pthread_mutex_unlock(&mo->lock);
    return 0;
}

static int read_failed(CbfsMobject *mo, const CbfsError *err)
{
    pthread_mutex_lock(&mo->lock);
    mo->failed = true;
    mo->err = *err;
    pthread_mutex_unlock(&mo->lock);
    return -EIO;
}

bool cbfs_mobject_take_error(CbfsMobject *mo, CbfsError *err)
{
    bool failed;
    pthread_mutex_lock(&mo->lock);
    failed = mo->failed;
    if (failed && err)
        *err = mo->err;
    mo->failed = false;
    pthread_mutex_unlock(&mo->lock);
    return failed;
}

int cbfs_mobject_read(CbfsMobject *mo, uint64_t off, size_t len, void *buf, CbfsError *err)
{
    uint8_t *out = buf;
    CbfsError mine;
    if (!err) {
        cbfs_error_init(&mine);
        err = &mine;
    }
    if (off > mo->size || len > mo->size - off) {
        corrupt(mo, err, "read past its end at %llu", (unsigned long long) off);
        return read_failed(mo, err);
    }
    while (len) {
        uint32_t i = (uint32_t) (off / mo->chunk);
        size_t in = (size_t) (off % mo->chunk), n = mo->chunk - in;
        int rc;
        if (n > len)
            n = len;
        rc = read_in_chunk(mo, i, in, n, out, err);
        if (rc < 0)
            return read_failed(mo, err);
        out += n;
        off += n;
        len -= n;
    }
    return 0;
}

int cbfs_mobject_read_all(CbfsMobject *mo, uint8_t **ret, CbfsError *err)
{
    size_t ov = overhead(mo->crypt), total = (size_t) mo->size + mo->nchunks * ov;
    uint8_t *in = cbfs_xmalloc(total + 1), *out = cbfs_xmalloc((size_t) mo->size + 1);
    int rc = fetch(mo, 0, total, in, err);
    for (uint32_t i = 0; rc == 0 && i < mo->nchunks; i++) {
        uint64_t soff;
        size_t stored, plain;
        chunk_place(mo, i, &soff, &stored, &plain);
        rc = check_chunk(mo, i, in + soff, stored, out + (size_t) i * mo->chunk, plain, err);
    }
    free(in);
    if (rc < 0) {
        free(out);
        return rc;
    }
    *ret = out;
    return 0;
}
