/*
 * codec.h - the block codec: block ids, compression, encryption,
 * verification.
 *
 * A block's id is the SHA-256 of its plaintext, or in an encrypted
 * repository the HMAC-SHA256 of it under the repository's id key (DESIGN
 * §3.3): cbfs_codec_block_id picks by the codec's crypt.
 *
 * Stored block.  The inner form is a zstd frame of the plaintext, or the
 * plaintext itself when zstd does not make it smaller: inner length == raw
 * length means "raw" (a zstd frame can never be exactly as long as its input
 * here, because we only keep one that is strictly shorter).  Without
 * encryption the stored block is the inner form; with it, the inner form
 * sealed with AES-256-GCM (crypt.h: nonce[12] || ciphertext || tag[16],
 * CBFS_CRYPT_OVERHEAD bytes more) under the AAD "cbfs block" NUL <id>.  The
 * AAD holds the block's id and nothing of where it is stored, so a stored
 * block can be copied verbatim into another pack (gc's repacking) and still
 * opens, while a block put in another's place does not.
 *
 * Thread safety: a CbfsCodec holds zstd contexts and a scratch buffer; use
 * one per thread (they may share one crypt).
 */
#ifndef CBFS_CODEC_H
#define CBFS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "cbfs/crypt.h"
#include "cbfs/error.h"
#include "cbfs/util.h"

#define CBFS_BLOCK_ID_LEN CBFS_SHA256_LEN

typedef struct CbfsCodec CbfsCodec;

/* level: zstd level 1..19.  Caller frees with cbfs_codec_free. */
CbfsCodec *cbfs_codec_new(int level);
void cbfs_codec_free(CbfsCodec *c);
/* Encrypt and decrypt blocks, and make keyed ids, with crypt (borrowed;
 * NULL: none).  crypt must be unlocked (cbfs_crypt_unlock). */
void cbfs_codec_set_crypt(CbfsCodec *c, CbfsCrypt *crypt);

/* The id of a block: SHA-256, or HMAC-SHA256 when the codec has a crypt. */
void cbfs_codec_block_id(const CbfsCodec *c, const void *data, size_t len,
                         uint8_t id[CBFS_BLOCK_ID_LEN]);
/* SHA-256 of a block (the id in a repository without encryption). */
void cbfs_block_id(const void *data, size_t len, uint8_t id[CBFS_BLOCK_ID_LEN]);
/* Hex form of a block id (65 bytes). */
void cbfs_block_id_hex(const uint8_t id[CBFS_BLOCK_ID_LEN], char out[65]);

/* Worst-case stored size for a block of len bytes (encrypted or not). */
size_t cbfs_codec_bound(size_t len);
/* Encode raw (len bytes, whose id is id) into out (cap >=
 * cbfs_codec_bound(len)); returns the stored length. */
size_t cbfs_codec_encode(CbfsCodec *c, const uint8_t id[CBFS_BLOCK_ID_LEN], const void *raw,
                         size_t len, void *out, size_t cap);
/* Decode a stored block into out (exactly raw_len bytes) and check that its
 * id is id.  -EBADMSG with err ("block <id> is corrupt: ...") when it does
 * not authenticate, does not decompress to raw_len bytes or does not match
 * its id; out holds nothing of it then. */
int cbfs_codec_decode(CbfsCodec *c, const void *stored, size_t stored_len, void *out,
                      size_t raw_len, const uint8_t id[CBFS_BLOCK_ID_LEN], CbfsError *err);

#endif
