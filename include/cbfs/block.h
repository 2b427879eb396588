/*
 * block.h - a backup's block references: where a block is now, and reading
 * it (DESIGN §3.3, §3.9).  This is the one way to find a block: restore,
 * the mount (and so verify), check and gc's repack all read through it.
 *
 * A manifest names each block by the pack and offset it was first stored
 * at, and manifests are immutable.  gc may since have rewritten that pack:
 * then the pack is gone and its relocation map (moved.h) says where each of
 * its live extents went, possibly into a pack that was rewritten in turn.
 *
 * Resolution is per block, never per run: a block at (pack, offset,
 * stored_len) is where the manifest says while that pack is present;
 * otherwise its map must hold the block's whole range inside one extent,
 * and the block is at the same distance into that extent in the new pack;
 * and so on, through at most CBFS_BLOCK_HOPS_MAX maps.  A pack that is gone
 * without a map, a map that cannot be read or that does not hold the block,
 * or a longer chain is an error naming the object.  Two blocks adjacent in
 * an old pack need not be adjacent after a rewrite (gc drops the unused
 * blocks between runs, and may cut a long run into several extents), so
 * reads are coalesced only after resolution.
 *
 * "Present" means: for readers, a ranged read of the pack found it (or the
 * pack's map is known already: a map is only stored once the pack it
 * points into holds the copies, so reading through it is always right);
 * for check, the pack was listed.  Both take the same steps.
 */
#ifndef CBFS_BLOCK_H
#define CBFS_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbfs/codec.h"
#include "cbfs/error.h"
#include "cbfs/pack.h"
#include "cbfs/store.h"

/* A block of a file as a manifest names it (manifest.h). */
typedef struct CbfsBlockRef {
    int64_t file;
    uint64_t blockno;
    uint8_t id[CBFS_BLOCK_ID_LEN];
    char pack[CBFS_PACK_NAME_LEN + 1]; /* where it was stored first */
    uint64_t offset;
    uint32_t stored_len;
    uint32_t raw_len;
} CbfsBlockRef;

/* Where a block's stored bytes are. */
typedef struct CbfsBlockLoc {
    char pack[CBFS_PACK_NAME_LEN + 1];
    uint64_t offset;
    uint32_t len;
} CbfsBlockLoc;

#define CBFS_BLOCK_HOPS_MAX 16         /* relocation maps followed for one block */
#define CBFS_BLOCK_RUN_MAX  (8u << 20) /* stored bytes fetched with one request */

/* Does the pack named name exist?  For cbfs_block_locate. */
typedef bool (*cbfs_block_present_fn)(void *ctx, const char *name);

/* Where the block at *loc is now, for a caller that knows which packs
 * exist: while present(ctx, loc->pack) is false, one step through that
 * pack's relocation map.  0: *loc is in a present pack.  -ENOENT: *loc
 * names a pack that is neither present nor has a map (err: "pack … is
 * missing").  Otherwise a map could not be read, does not hold the block,
 * or the chain is longer than CBFS_BLOCK_HOPS_MAX (err names the map). */
int cbfs_block_locate(CbfsStore *st, CbfsBlockLoc *loc, cbfs_block_present_fn present, void *ctx,
                      CbfsError *err);

/* The stored bytes of refs[0..n), back to back in out (the sum of their
 * stored_len), each block found as above; blocks adjacent in one pack once
 * resolved are fetched with one request of at most CBFS_BLOCK_RUN_MAX.
 * Bytes are not decoded here: cbfs_pack_decode_block does, against the id,
 * naming the place ret_at[i] (unless NULL: n entries) says block i was
 * read from.  Errors name the pack (and the offset, or the map).
 * Thread-safe: maps read are cached per process. */
int cbfs_block_read_stored(CbfsStore *st, const CbfsBlockRef *refs, size_t n, uint8_t *out,
                           CbfsBlockLoc *ret_at, CbfsError *err);

/* One block: read as above, decoded into out (ref->raw_len bytes) and
 * verified against ref->id; a mismatch names the pack and offset. */
int cbfs_block_read(CbfsStore *st, CbfsCodec *codec, const CbfsBlockRef *ref, void *out,
                    CbfsError *err);

#endif
