/*
 * blockcache.h - the mount's bounded in-memory cache of verified,
 * decompressed repository blocks, keyed by block id, with asynchronous
 * prefetch for read-ahead.
 *
 * A block enters the cache only after its id was verified (pack.h), so a
 * cache hit is as good as a fresh verified read.  Concurrent requests for the
 * same block wait for the one fetch in flight.
 *
 * Thread safety: every function may be called from any thread.
 * Lock order: cache->lock, then nothing (fetches run unlocked).
 */
#ifndef CBFS_FS_BLOCKCACHE_H
#define CBFS_FS_BLOCKCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "cbfs/crypt.h"
#include "cbfs/manifest.h"
#include "cbfs/store.h"

typedef struct BlockCache BlockCache;

/* store and crypt (NULL without encryption; else unlocked): the
 * repository's, borrowed; capacity: bytes of block data kept; block_size:
 * the repository's block size (buffers of that size are recycled);
 * prefetchers: background threads. */
BlockCache *blockcache_new(CbfsStore *store, CbfsCrypt *crypt, size_t capacity, size_t block_size,
                           int prefetchers);
void blockcache_free(BlockCache *c);

/* Copy len bytes at off within block ref into out, fetching and verifying
 * the block if needed.  0, or -EIO with err naming the pack and offset. */
int blockcache_read(BlockCache *c, const CbfsBlockRef *ref, size_t off, size_t len, void *out,
                    CbfsError *err);
/* Queue a background fetch of ref (no-op if cached or in flight). */
void blockcache_prefetch(BlockCache *c, const CbfsBlockRef *ref);

typedef struct BlockCacheStats {
    uint64_t hits, misses, prefetched, bytes;
} BlockCacheStats;
void blockcache_stats(BlockCache *c, BlockCacheStats *ret);

#endif
