/*
 * moved.h - relocation maps: where gc moved the live blocks of a pack it
 * rewrote (DESIGN §3.9).
 *
 * Manifests are immutable and name each block's pack and offset.  When gc
 * repacks pack P it copies P's live blocks, stored bytes unchanged and in
 * offset order, into a new pack N, stores moved/XX/<P> (create-once), and
 * only then removes P.  A reader that finds P missing looks for the map and
 * reads from N instead; every block is still checked against its id.  Runs
 * of adjacent live blocks stay adjacent, so a map is a list of extents.  N
 * may itself be repacked later: resolution follows the chain.
 *
 * Format: "cbfs-moved 1 <P>" line, then "<old_off> <len> <new_pack>
 * <new_off>" lines in old_off order, then "end <count> <sha256 of the text
 * before this line>".
 */
#ifndef CBFS_MOVED_H
#define CBFS_MOVED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbfs/pack.h"
#include "cbfs/store.h"

typedef struct CbfsExtent {
    uint64_t old_off, len;
    char new_pack[CBFS_PACK_NAME_LEN + 1];
    uint64_t new_off;
} CbfsExtent;

typedef struct CbfsMovedMap {
    char pack[CBFS_PACK_NAME_LEN + 1];
    CbfsExtent *ext; /* sorted by old_off, not overlapping */
    size_t n;
} CbfsMovedMap;

/* "moved/XX/<name>"; caller frees. */
char *cbfs_moved_key(const char *name);
/* Store a map (create-once; an identical existing one is fine). */
int cbfs_moved_store(CbfsStore *st, const CbfsMovedMap *m, CbfsError *err);
/* Read and check a map: -ENOENT if none; damaged: CBFS_EXIT_CORRUPT. */
int cbfs_moved_read(CbfsStore *st, const char *name, CbfsMovedMap *ret, CbfsError *err);
void cbfs_moved_release(CbfsMovedMap *m);
/* The extent holding [off, off+len), or NULL. */
const CbfsExtent *cbfs_moved_find(const CbfsMovedMap *m, uint64_t off, uint64_t len);

/* One step of resolution (block.h resolves blocks with it): where
 * [off, off+len) of pack name was moved, by name's map (read once, then
 * cached for the life of the process): *ret_pack (33 bytes; may be name
 * itself) and *ret_off.  -ENOENT (no error set) if name has no map; a
 * damaged map, or one that does not hold the whole range in one extent,
 * is CBFS_EXIT_CORRUPT naming the map.  Thread-safe. */
int cbfs_moved_resolve(CbfsStore *st, const char *name, uint64_t off, uint64_t len, char *ret_pack,
                       uint64_t *ret_off, CbfsError *err);
/* Has this process read name's map already (so the pack has moved)? */
bool cbfs_moved_known(const char *name);

#endif
