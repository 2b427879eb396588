/*
 * codec.c - block ids (SHA-256 or keyed HMAC), zstd compression and, in an
 * encrypted repository, AES-256-GCM sealing, with verify-on-decode.  See
 * codec.h for the stored form.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "cbfs/codec.h"

#define AAD_LABEL     "cbfs block"
#define AAD_LABEL_LEN sizeof(AAD_LABEL) /* with its NUL: a separator */

struct CbfsCodec {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    int level;
    CbfsCrypt *crypt; /* borrowed; NULL without encryption */
    uint8_t *scratch; /* an opened zstd frame, before decompression */
    size_t scratch_cap;
};

CbfsCodec *cbfs_codec_new(int level)
{
    CbfsCodec *c = cbfs_xcalloc(1, sizeof(*c));
    c->cctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    if (!c->cctx || !c->dctx)
        abort();
    c->level = level;
    ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, level);
    /* the block id already covers the content; no frame checksum needed */
    ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_checksumFlag, 0);
    return c;
}

void cbfs_codec_free(CbfsCodec *c)
{
    if (!c)
        return;
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    free(c->scratch);
    free(c);
}

void cbfs_codec_set_crypt(CbfsCodec *c, CbfsCrypt *crypt)
{
    c->crypt = crypt;
}

void cbfs_codec_block_id(const CbfsCodec *c, const void *data, size_t len,
                         uint8_t id[CBFS_BLOCK_ID_LEN])
{
    if (c->crypt)
        cbfs_crypt_block_id(c->crypt, data, len, id);
    else
        cbfs_sha256(data, len, id);
}

void cbfs_block_id(const void *data, size_t len, uint8_t id[CBFS_BLOCK_ID_LEN])
{
    cbfs_sha256(data, len, id);
}

void cbfs_block_id_hex(const uint8_t id[CBFS_BLOCK_ID_LEN], char out[65])
{
    cbfs_hex_encode(id, CBFS_BLOCK_ID_LEN, out);
}

size_t cbfs_codec_bound(size_t len)
{
    size_t b = ZSTD_compressBound(len);
    return (b > len ? b : len) + CBFS_CRYPT_OVERHEAD;
}

static size_t block_aad(const uint8_t id[CBFS_BLOCK_ID_LEN], uint8_t aad[])
{
    memcpy(aad, AAD_LABEL, AAD_LABEL_LEN);
    memcpy(aad + AAD_LABEL_LEN, id, CBFS_BLOCK_ID_LEN);
    return AAD_LABEL_LEN + CBFS_BLOCK_ID_LEN;
}

size_t cbfs_codec_encode(CbfsCodec *c, const uint8_t id[CBFS_BLOCK_ID_LEN], const void *raw,
                         size_t len, void *out, size_t cap)
{
    /* the inner form goes where the ciphertext will be, and is sealed in place */
    size_t skip = c->crypt ? CBFS_CRYPT_NONCE_LEN : 0;
    uint8_t *inner = (uint8_t *) out + skip, aad[AAD_LABEL_LEN + CBFS_BLOCK_ID_LEN];
    size_t n = ZSTD_compress2(c->cctx, inner, cap - (c->crypt ? CBFS_CRYPT_OVERHEAD : 0), raw, len);

    if (ZSTD_isError(n) || n >= len) {
        memcpy(inner, raw, len);
        n = len;
    }
    if (!c->crypt)
        return n;
    cbfs_crypt_seal(c->crypt, aad, block_aad(id, aad), inner, n, out);
    return n + CBFS_CRYPT_OVERHEAD;
}

static int corrupt(const uint8_t id[CBFS_BLOCK_ID_LEN], void *out, size_t raw_len, const char *why,
                   CbfsError *err)
{
    char hex[65];
    memset(out, 0, raw_len); /* nothing of a block that failed stays behind */
    cbfs_block_id_hex(id, hex);
    return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT, "block %s is corrupt: %s", hex, why);
}

int cbfs_codec_decode(CbfsCodec *c, const void *stored, size_t stored_len, void *out,
                      size_t raw_len, const uint8_t id[CBFS_BLOCK_ID_LEN], CbfsError *err)
{
    uint8_t got[CBFS_BLOCK_ID_LEN], aad[AAD_LABEL_LEN + CBFS_BLOCK_ID_LEN];
    const void *inner = stored;
    size_t inner_len = stored_len;

    if (c->crypt) {
        if (stored_len < CBFS_CRYPT_OVERHEAD)
            return corrupt(id, out, raw_len, "too short to be encrypted", err);
        inner_len = stored_len - CBFS_CRYPT_OVERHEAD;
        /* raw: open straight into out; a zstd frame: into scratch first */
        if (inner_len != raw_len) {
            if (inner_len > c->scratch_cap) {
                c->scratch = cbfs_xrealloc(c->scratch, inner_len);
                c->scratch_cap = inner_len;
            }
            inner = c->scratch;
        } else {
            inner = out;
        }
        if (cbfs_crypt_open(c->crypt, aad, block_aad(id, aad), stored, stored_len, (void *) inner) <
            0)
            return corrupt(id, out, raw_len, "authentication failed", err);
    }
    if (inner_len == raw_len) {
        if (inner != out)
            memcpy(out, inner, raw_len);
    } else {
        size_t n = ZSTD_decompressDCtx(c->dctx, out, raw_len, inner, inner_len);
        if (ZSTD_isError(n) || n != raw_len)
            return corrupt(id, out, raw_len,
                           ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong length", err);
    }
    cbfs_codec_block_id(c, out, raw_len, got);
    if (memcmp(got, id, CBFS_BLOCK_ID_LEN) != 0)
        return corrupt(id, out, raw_len, "content does not match its id", err);
    return 0;
}
