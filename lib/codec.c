/*
 * codec.c - SHA-256 block ids and zstd compression with verify-on-decode.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "cbfs/codec.h"

struct CbfsCodec {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    int level;
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
    free(c);
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
    return b > len ? b : len;
}

size_t cbfs_codec_encode(CbfsCodec *c, const void *raw, size_t len, void *out, size_t cap)
{
    size_t n = ZSTD_compress2(c->cctx, out, cap, raw, len);
    if (ZSTD_isError(n) || n >= len) {
        memcpy(out, raw, len);
        return len;
    }
    return n;
}

int cbfs_codec_decode(CbfsCodec *c, const void *stored, size_t stored_len, void *out,
                      size_t raw_len, const uint8_t id[CBFS_BLOCK_ID_LEN], CbfsError *err)
{
    uint8_t got[CBFS_BLOCK_ID_LEN];
    char hex[65];

    if (stored_len == raw_len) {
        memcpy(out, stored, raw_len);
    } else {
        size_t n = ZSTD_decompressDCtx(c->dctx, out, raw_len, stored, stored_len);
        if (ZSTD_isError(n) || n != raw_len) {
            cbfs_block_id_hex(id, hex);
            return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT, "block %s is corrupt: %s", hex,
                                  ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong length");
        }
    }
    cbfs_block_id(out, raw_len, got);
    if (memcmp(got, id, CBFS_BLOCK_ID_LEN) != 0) {
        cbfs_block_id_hex(id, hex);
        return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                              "block %s is corrupt: content does not match its id", hex);
    }
    return 0;
}
