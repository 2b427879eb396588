/*
 * blockindex.h - the local deduplication index: block id -> where it is
 * stored (DESIGN §3.5: "a local SQLite cache ... always rebuildable from the
 * repository").
 *
 * It lives in the repository's cache directory (repo.h) as blocks.db.  On
 * open it is brought in step with the repository: packs that appeared are
 * read (their trailer index), packs that disappeared are forgotten.  A block
 * is offered for deduplication only if its pack is known to be stored, or
 * belongs to the current run (its pack will be stored before the manifest
 * that references it).  Several processes may share the file.
 *
 * Thread safety: all functions may be called from several threads.
 */
#ifndef CBFS_BLOCKINDEX_H
#define CBFS_BLOCKINDEX_H

#include "cbfs/manifest.h"
#include "cbfs/repo.h"

typedef struct CbfsBlockIndex CbfsBlockIndex;

/* Open and synchronize.  *ret_synced gets the number of packs read. */
int cbfs_blockindex_open(CbfsRepo *r, CbfsBlockIndex **ret, size_t *ret_synced, CbfsError *err);
void cbfs_blockindex_free(CbfsBlockIndex *bi);

/* 0 and ref's pack/offset/lengths filled if the block can be reused;
 * -ENOENT if not. */
int cbfs_blockindex_lookup(CbfsBlockIndex *bi, const uint8_t id[CBFS_BLOCK_ID_LEN],
                           CbfsBlockRef *ref);
/* Never offer blocks of these packs (sorted; the index takes them over):
 * gc is about to remove or rewrite them (doomed.h). */
void cbfs_blockindex_avoid(CbfsBlockIndex *bi, char **packs, size_t n);
/* A pack of this run is being filled: call before its first block is added. */
int cbfs_blockindex_pack_begin(CbfsBlockIndex *bi, const char *pack, CbfsError *err);
/* A block just appended to one of this run's packs. */
int cbfs_blockindex_add(CbfsBlockIndex *bi, const CbfsBlockRef *ref, CbfsError *err);
/* One of this run's packs is now durably stored. */
int cbfs_blockindex_pack_stored(CbfsBlockIndex *bi, const char *pack, CbfsError *err);

#endif
