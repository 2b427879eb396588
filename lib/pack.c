/*
 * pack.c - build, seal, index and read pack objects.  See pack.h for the
 * format (plain and encrypted).  A writer keeps the pack in memory
 * (CBFS_PACK_TARGET_SIZE plus one block) and stores it with a single
 * create-once put.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/pack.h"
#include "cbfs/util.h"

static const char pack_magic[8] = {'C', 'B', 'F', 'S', 'P', 'K', '0', '1'};
static const char sealed_magic[8] = {'C', 'B', 'F', 'S', 'P', 'K', 'E', '1'};

#define INDEX_AAD_LABEL     "cbfs pack index"
#define INDEX_AAD_LABEL_LEN sizeof(INDEX_AAD_LABEL) /* with its NUL */
#define INDEX_AAD_LEN       (INDEX_AAD_LABEL_LEN + CBFS_PACK_NAME_LEN + 4 + 8)

struct CbfsPackWriter {
    char name[CBFS_PACK_NAME_LEN + 1];
    CbfsBuf data; /* block data so far */
    CbfsPackEntry *entries;
    size_t n, cap;
};

/* The AAD of a sealed index: the pack's name and where its index lies, so
 * that an index is never read in another pack or at another place. */
static void index_aad(const char *name, uint32_t count, uint64_t index_off,
                      uint8_t aad[INDEX_AAD_LEN])
{
    memcpy(aad, INDEX_AAD_LABEL, INDEX_AAD_LABEL_LEN);
    memcpy(aad + INDEX_AAD_LABEL_LEN, name, CBFS_PACK_NAME_LEN);
    cbfs_put_le32(aad + INDEX_AAD_LABEL_LEN + CBFS_PACK_NAME_LEN, count);
    cbfs_put_le64(aad + INDEX_AAD_LABEL_LEN + CBFS_PACK_NAME_LEN + 4, index_off);
}

CbfsPackWriter *cbfs_pack_writer_new(void)
{
    CbfsPackWriter *w = cbfs_xcalloc(1, sizeof(*w));
    uint8_t rnd[CBFS_PACK_NAME_LEN / 2];

    cbfs_random_bytes(rnd, sizeof(rnd));
    cbfs_hex_encode(rnd, sizeof(rnd), w->name);
    cbfs_buf_init(&w->data);
    /* one allocation for the whole pack: the target, one more block and the index */
    cbfs_buf_reserve(&w->data, CBFS_PACK_TARGET_SIZE + (2u << 20));
    return w;
}

void cbfs_pack_writer_free(CbfsPackWriter *w)
{
    if (!w)
        return;
    cbfs_buf_release(&w->data);
    free(w->entries);
    free(w);
}

const char *cbfs_pack_writer_name(const CbfsPackWriter *w)
{
    return w->name;
}

uint64_t cbfs_pack_writer_append(CbfsPackWriter *w, const uint8_t id[CBFS_BLOCK_ID_LEN],
                                 const void *stored, uint32_t stored_len, uint32_t raw_len)
{
    uint64_t off = w->data.len;

    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 256;
        w->entries = cbfs_xrealloc(w->entries, w->cap * sizeof(CbfsPackEntry));
    }
    memcpy(w->entries[w->n].id, id, CBFS_BLOCK_ID_LEN);
    w->entries[w->n].offset = off;
    w->entries[w->n].stored_len = stored_len;
    w->entries[w->n].raw_len = raw_len;
    w->n++;
    cbfs_buf_append(&w->data, stored, stored_len);
    return off;
}

size_t cbfs_pack_writer_size(const CbfsPackWriter *w)
{
    return w->data.len;
}

size_t cbfs_pack_writer_count(const CbfsPackWriter *w)
{
    return w->n;
}

int cbfs_pack_writer_finish(CbfsPackWriter *w, CbfsStore *st, CbfsCrypt *crypt, CbfsError *err)
{
    uint64_t index_off = w->data.len;
    size_t index_len = w->n * CBFS_PACK_ENTRY_LEN;
    size_t stored_len = index_len + (crypt ? CBFS_CRYPT_OVERHEAD : 0);
    uint8_t *index, *stored, trailer[CBFS_PACK_TRAILER_LEN];
    char *key;
    int rc;

    if (w->n == 0)
        return 0;
    if (crypt && (rc = cbfs_crypt_unlock(crypt, err)) < 0)
        return rc;
    index = cbfs_xmalloc(index_len);
    for (size_t i = 0; i < w->n; i++) {
        uint8_t *e = index + i * CBFS_PACK_ENTRY_LEN;
        memcpy(e, w->entries[i].id, CBFS_BLOCK_ID_LEN);
        cbfs_put_le64(e + 32, w->entries[i].offset);
        cbfs_put_le32(e + 40, w->entries[i].stored_len);
        cbfs_put_le32(e + 44, w->entries[i].raw_len);
    }
    stored = index;
    if (crypt) {
        uint8_t aad[INDEX_AAD_LEN];
        stored = cbfs_xmalloc(stored_len);
        index_aad(w->name, (uint32_t) w->n, index_off, aad);
        cbfs_crypt_seal(crypt, aad, sizeof(aad), index, index_len, stored);
        free(index);
    }
    memcpy(trailer, crypt ? sealed_magic : pack_magic, 8);
    cbfs_put_le32(trailer + 8, (uint32_t) w->n);
    cbfs_put_le32(trailer + 12, 0);
    cbfs_put_le64(trailer + 16, index_off);
    cbfs_sha256(stored, stored_len, trailer + 24);
    cbfs_buf_append(&w->data, stored, stored_len);
    cbfs_buf_append(&w->data, trailer, sizeof(trailer));
    free(stored);

    key = cbfs_pack_key(w->name);
    rc = cbfs_store_put(st, key, w->data.data, w->data.len, err);
    if (rc == -EEXIST) /* 128 random bits: only a bug gets here */
        rc = cbfs_error_set(err, EEXIST, CBFS_EXIT_ERROR, "pack \"%s\" already exists", key);
    else if (rc < 0)
        cbfs_error_prefix(err, "could not store pack \"%s\"", key);
    free(key);
    return rc;
}

bool cbfs_pack_name_valid(const char *name)
{
    if (strlen(name) != CBFS_PACK_NAME_LEN)
        return false;
    for (const char *s = name; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

void cbfs_pack_key_into(const char *name, char out[CBFS_PACK_KEY_MAX])
{
    snprintf(out, CBFS_PACK_KEY_MAX, "packs/%.2s/%s.pack", name, name);
}

char *cbfs_pack_key(const char *name)
{
    char key[CBFS_PACK_KEY_MAX];
    cbfs_pack_key_into(name, key);
    return cbfs_xstrdup(key);
}

int cbfs_pack_read_index(CbfsStore *st, CbfsCrypt *crypt, const char *name,
                         CbfsPackEntry **ret_entries, size_t *ret_n, CbfsError *err)
{
    char *key = cbfs_pack_key(name);
    uint64_t size;
    int rc = cbfs_store_stat(st, key, &size, err);

    free(key);
    if (rc < 0)
        return rc;
    return cbfs_pack_read_index_sized(st, crypt, name, size, ret_entries, ret_n, err);
}

int cbfs_pack_read_index_sized(CbfsStore *st, CbfsCrypt *crypt, const char *name, uint64_t size,
                               CbfsPackEntry **ret_entries, size_t *ret_n, CbfsError *err)
{
    char *key = cbfs_pack_key(name);
    uint8_t trailer[CBFS_PACK_TRAILER_LEN], sum[CBFS_SHA256_LEN];
    uint8_t *stored = NULL, *index = NULL;
    uint64_t index_off;
    uint32_t count;
    size_t n, index_len, stored_len, overhead = crypt ? CBFS_CRYPT_OVERHEAD : 0;
    CbfsPackEntry *entries = NULL;
    int rc;

    if (crypt && (rc = cbfs_crypt_unlock(crypt, err)) < 0)
        goto out;
    if (size < CBFS_PACK_TRAILER_LEN + overhead)
        goto corrupt;
    rc = cbfs_store_get_range(st, key, size - CBFS_PACK_TRAILER_LEN, CBFS_PACK_TRAILER_LEN, trailer,
                              &n, err);
    if (rc < 0)
        goto out;
    if (n != CBFS_PACK_TRAILER_LEN || memcmp(trailer, crypt ? sealed_magic : pack_magic, 8) != 0)
        goto corrupt;
    count = cbfs_get_le32(trailer + 8);
    index_off = cbfs_get_le64(trailer + 16);
    /* bound everything by the object's size before adding (no wrap-around) */
    if (count > (size - CBFS_PACK_TRAILER_LEN - overhead) / CBFS_PACK_ENTRY_LEN)
        goto corrupt;
    index_len = (size_t) count * CBFS_PACK_ENTRY_LEN;
    stored_len = index_len + overhead;
    if (index_off != size - CBFS_PACK_TRAILER_LEN - stored_len)
        goto corrupt;
    stored = cbfs_xmalloc(stored_len ? stored_len : 1);
    rc = cbfs_store_get_range(st, key, index_off, stored_len, stored, &n, err);
    if (rc < 0)
        goto out;
    cbfs_sha256(stored, stored_len, sum);
    if (n != stored_len || memcmp(sum, trailer + 24, CBFS_SHA256_LEN) != 0)
        goto corrupt;
    if (crypt) {
        uint8_t aad[INDEX_AAD_LEN];
        index = cbfs_xmalloc(index_len ? index_len : 1);
        index_aad(name, count, index_off, aad);
        if (cbfs_crypt_open(crypt, aad, sizeof(aad), stored, stored_len, index) < 0)
            goto corrupt;
    } else {
        index = stored;
        stored = NULL;
    }
    entries = cbfs_xcalloc(count ? count : 1, sizeof(CbfsPackEntry));
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = index + (size_t) i * CBFS_PACK_ENTRY_LEN;
        memcpy(entries[i].id, e, CBFS_BLOCK_ID_LEN);
        entries[i].offset = cbfs_get_le64(e + 32);
        entries[i].stored_len = cbfs_get_le32(e + 40);
        entries[i].raw_len = cbfs_get_le32(e + 44);
        if (entries[i].offset > index_off || entries[i].stored_len > index_off - entries[i].offset)
            goto corrupt;
    }
    *ret_entries = entries;
    *ret_n = count;
    entries = NULL;
    rc = 0;
    goto out;
corrupt:
    rc = cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT, "pack \"%s\" has a damaged index", key);
out:
    free(entries);
    free(stored);
    free(index);
    free(key);
    return rc;
}

int cbfs_pack_read_range(CbfsStore *st, const char *name, uint64_t offset, size_t len, void *out,
                         CbfsError *err)
{
    char key[CBFS_PACK_KEY_MAX];
    size_t n;
    int rc;

    /* the usual read is one request and no allocation */
    cbfs_pack_key_into(name, key);
    rc = cbfs_store_get_range(st, key, offset, len, out, &n, err);
    if (rc == -ENOENT)
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_CORRUPT, "pack \"%s\" is missing", key);
    if (rc == 0 && n != len)
        return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                              "pack \"%s\" is truncated at offset %llu", key,
                              (unsigned long long) offset);
    return rc;
}

int cbfs_pack_decode_block(CbfsCodec *codec, const char *name, uint64_t offset,
                           const uint8_t *stored, uint32_t stored_len, uint32_t raw_len,
                           const uint8_t id[CBFS_BLOCK_ID_LEN], void *out, CbfsError *err)
{
    int rc = cbfs_codec_decode(codec, stored, stored_len, out, raw_len, id, err);
    if (rc < 0) {
        char *key = cbfs_pack_key(name);
        cbfs_error_prefix(err, "pack \"%s\" offset %llu", key, (unsigned long long) offset);
        free(key);
    }
    return rc;
}
