/*
 * pack.h - pack objects: many stored blocks in one object (DESIGN §3.4).
 *
 * Format of packs/XX/<name>.pack (name: 32 lowercase hex digits, random;
 * XX its first two):
 *
 *   block data     stored blocks back to back (see codec.h)
 *   index          count entries of 48 bytes: id[32], offset u64le,
 *                  stored_len u32le, raw_len u32le
 *   trailer        56 bytes: magic "CBFSPK01", count u32le, reserved u32le
 *                  (0), index offset u64le, SHA-256 of the index [32]
 *
 * In an encrypted repository the blocks are sealed one by one (codec.h) and
 * the index is sealed as a whole (count * 48 + CBFS_CRYPT_OVERHEAD bytes),
 * AAD "cbfs pack index" NUL <pack name> <count u32le> <index offset u64le>,
 * so an index is only ever read in the pack it was written for; the trailer
 * stays plaintext with magic "CBFSPKE1" and the SHA-256 of the sealed index.
 * The functions taking a crypt read and write that form (crypt NULL: the
 * plain one); an unencrypted pack in an encrypted repository, or the
 * reverse, is a damaged index.
 *
 * The trailer index lets the repository be re-indexed from packs alone; a
 * reader of one block needs only (pack, offset, stored_len, raw_len, id),
 * which the manifest's block map holds, and fetches it with one ranged GET
 * (through block.h, which follows gc's relocation maps).
 */
#ifndef CBFS_PACK_H
#define CBFS_PACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbfs/codec.h"
#include "cbfs/error.h"
#include "cbfs/store.h"

#define CBFS_PACK_NAME_LEN    32
#define CBFS_PACK_TRAILER_LEN 56
#define CBFS_PACK_ENTRY_LEN   48
#define CBFS_PACK_TARGET_SIZE (16u << 20) /* seal a pack once it holds this much */

typedef struct CbfsPackEntry {
    uint8_t id[CBFS_BLOCK_ID_LEN];
    uint64_t offset;
    uint32_t stored_len;
    uint32_t raw_len;
} CbfsPackEntry;

typedef struct CbfsPackWriter CbfsPackWriter;

/* A new, empty pack with a fresh random name.  Caller frees. */
CbfsPackWriter *cbfs_pack_writer_new(void);
void cbfs_pack_writer_free(CbfsPackWriter *w);
/* Borrowed for the writer's lifetime. */
const char *cbfs_pack_writer_name(const CbfsPackWriter *w);
/* Append a stored block; returns its offset in the pack. */
uint64_t cbfs_pack_writer_append(CbfsPackWriter *w, const uint8_t id[CBFS_BLOCK_ID_LEN],
                                 const void *stored, uint32_t stored_len, uint32_t raw_len);
size_t cbfs_pack_writer_size(const CbfsPackWriter *w);
size_t cbfs_pack_writer_count(const CbfsPackWriter *w);
/* Seal (index + trailer; the index encrypted under crypt unless NULL) and
 * store the pack.  After this the writer may only be freed.  An empty pack
 * is not stored. */
int cbfs_pack_writer_finish(CbfsPackWriter *w, CbfsStore *st, CbfsCrypt *crypt, CbfsError *err);

bool cbfs_pack_name_valid(const char *name);
/* "packs/XX/<name>.pack"; caller frees. */
char *cbfs_pack_key(const char *name);
/* The same into a buffer (no allocation: the read path). */
#define CBFS_PACK_KEY_MAX (CBFS_PACK_NAME_LEN + 16)
void cbfs_pack_key_into(const char *name, char out[CBFS_PACK_KEY_MAX]);

/* Read and check a pack's trailer index (encrypted under crypt unless
 * NULL; it is unlocked if need be).  *ret_entries: caller frees.  -ENOENT
 * if the pack is absent; -EBADMSG (err names the pack) if the trailer or
 * index is damaged. */
int cbfs_pack_read_index(CbfsStore *st, CbfsCrypt *crypt, const char *name,
                         CbfsPackEntry **ret_entries, size_t *ret_n, CbfsError *err);
/* The same for a pack whose object size is already known (from a listing
 * of packs/): one request fewer.  A size other than the one the trailer
 * implies (index offset + count * 48 + 56) is a damaged index. */
int cbfs_pack_read_index_sized(CbfsStore *st, CbfsCrypt *crypt, const char *name, uint64_t size,
                               CbfsPackEntry **ret_entries, size_t *ret_n, CbfsError *err);

/* len stored bytes of pack name at offset, in one ranged read, as they
 * are: no relocation map is followed (block.h does that).  -ENOENT when
 * the pack is gone (err: "pack … is missing"); a short read is an error
 * naming the pack and the offset. */
int cbfs_pack_read_range(CbfsStore *st, const char *name, uint64_t offset, size_t len, void *out,
                         CbfsError *err);
/* Decode one block read with cbfs_pack_read_range (codec.h) and verify it
 * against id; a mismatch names the pack and the offset. */
int cbfs_pack_decode_block(CbfsCodec *codec, const char *name, uint64_t offset,
                           const uint8_t *stored, uint32_t stored_len, uint32_t raw_len,
                           const uint8_t id[CBFS_BLOCK_ID_LEN], void *out, CbfsError *err);

#endif
