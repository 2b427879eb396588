/*
 * codec.h - the block codec: block ids, compression, verification.
 *
 * A block's id is the SHA-256 of its plaintext (DESIGN §3.3).  A stored
 * block is a zstd frame of the plaintext, or the plaintext itself when zstd
 * does not make it smaller: stored length == raw length means "stored raw"
 * (a zstd frame can never be exactly as long as its input here, because we
 * only keep one that is strictly shorter).
 *
 * Thread safety: a CbfsCodec holds zstd contexts; use one per thread.
 */
#ifndef CBFS_CODEC_H
#define CBFS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "cbfs/error.h"
#include "cbfs/util.h"

#define CBFS_BLOCK_ID_LEN CBFS_SHA256_LEN

typedef struct CbfsCodec CbfsCodec;

/* level: zstd level 1..19.  Caller frees with cbfs_codec_free. */
CbfsCodec *cbfs_codec_new(int level);
void cbfs_codec_free(CbfsCodec *c);

void cbfs_block_id(const void *data, size_t len, uint8_t id[CBFS_BLOCK_ID_LEN]);
/* Hex form of a block id (65 bytes). */
void cbfs_block_id_hex(const uint8_t id[CBFS_BLOCK_ID_LEN], char out[65]);

/* Worst-case stored size for a block of len bytes. */
size_t cbfs_codec_bound(size_t len);
/* Encode raw (len bytes) into out (cap >= cbfs_codec_bound(len)); returns
 * the stored length. */
size_t cbfs_codec_encode(CbfsCodec *c, const void *raw, size_t len, void *out, size_t cap);
/* Decode a stored block into out (exactly raw_len bytes) and check that its
 * SHA-256 is id.  -EBADMSG with err ("block <id> is corrupt: ...") when the data does
 * not decompress to raw_len bytes or the id does not match. */
int cbfs_codec_decode(CbfsCodec *c, const void *stored, size_t stored_len, void *out,
                      size_t raw_len, const uint8_t id[CBFS_BLOCK_ID_LEN], CbfsError *err);

#endif
