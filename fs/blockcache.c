/*
 * blockcache.c - LRU of decompressed blocks with single-flight fetches and a
 * prefetch queue.  See blockcache.h.
 *
 * Entries live in an open hash table keyed by block id and on an LRU list.
 * An entry is LOADING while one thread fetches it (others wait on the
 * condition variable), READY with data, or removed on failure (the waiters
 * then fetch themselves and get the error).  Eviction takes READY entries
 * from the LRU tail until the data fits in the capacity.
 */
#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "blockcache.h"
#include "cbfs/ratelimit.h"
#include "cbfs/block.h"
#include "cbfs/codec.h"
#include "cbfs/pack.h"
#include "cbfs/util.h"

enum entry_state { LOADING, READY };

typedef struct Entry {
    uint8_t id[CBFS_BLOCK_ID_LEN];
    enum entry_state state;
    uint8_t *data;
    size_t len;
    int pins;                  /* readers copying out of data */
    struct Entry *hnext;       /* hash chain */
    struct Entry *prev, *next; /* LRU list, most recent first */
} Entry;

#define PREFETCH_QUEUE 256
#define PREFETCH_RUN   32 /* blocks fetched with one request, at most */

struct BlockCache {
    CbfsStore *store;
    CbfsCrypt *crypt; /* an encrypted repository's (unlocked) keys, else NULL */
    size_t capacity;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t loaded;
    Entry **table;
    size_t nbuckets;
    Entry *head, *tail;
    size_t bytes;
    BlockCacheStats stats;
    /* prefetch ring */
    CbfsBlockRef queue[PREFETCH_QUEUE];
    size_t qhead, qlen;
    pthread_cond_t queued;
    pthread_t *threads;
    int nthreads;
    int stopping;
    /* freed block buffers kept for reuse: a block allocated by one thread
     * and freed by another otherwise scatters over malloc arenas, and the
     * process grows far beyond the cache's capacity */
    uint8_t **free_bufs;
    size_t nfree;
    size_t buf_size; /* size of the buffers kept (the repository's block size) */
};

#define MAX_FREE_BUFS 256

/* A buffer for a block of len bytes.  Caller holds c->lock. */
static uint8_t *buf_get(BlockCache *c, size_t len)
{
    if (len <= c->buf_size && c->nfree > 0)
        return c->free_bufs[--c->nfree];
    return cbfs_xmalloc(len > c->buf_size ? len : c->buf_size);
}

/* Give a buffer back.  Caller holds c->lock. */
static void buf_put(BlockCache *c, uint8_t *buf, size_t len)
{
    if (buf && len <= c->buf_size && c->nfree < MAX_FREE_BUFS)
        c->free_bufs[c->nfree++] = buf;
    else
        free(buf);
}

static size_t bucket(BlockCache *c, const uint8_t *id)
{
    uint64_t h;
    memcpy(&h, id, sizeof(h));
    return (size_t) (h % c->nbuckets);
}

static Entry *find(BlockCache *c, const uint8_t *id)
{
    for (Entry *e = c->table[bucket(c, id)]; e; e = e->hnext)
        if (memcmp(e->id, id, CBFS_BLOCK_ID_LEN) == 0)
            return e;
    return NULL;
}

static void lru_unlink(BlockCache *c, Entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(BlockCache *c, Entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static void remove_entry(BlockCache *c, Entry *e)
{
    Entry **pp = &c->table[bucket(c, e->id)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(c, e);
    c->bytes -= e->state == READY ? e->len : 0;
    buf_put(c, e->data, e->len);
    free(e);
}

static void evict(BlockCache *c)
{
    Entry *e = c->tail;
    while (c->bytes > c->capacity && e) {
        Entry *prev = e->prev;
        if (e->state == READY && e->pins == 0)
            remove_entry(c, e);
        e = prev;
    }
}

/* Fetch ref into its LOADING entry e (called unlocked).  With pin, a
 * successfully loaded entry comes back pinned, so it cannot be evicted
 * before the caller copied from it. */
static int load(BlockCache *c, Entry *e, const CbfsBlockRef *ref, CbfsCodec *codec, bool pin,
                CbfsError *err)
{
    uint8_t *data;
    int rc;

    pthread_mutex_lock(&c->lock);
    data = buf_get(c, ref->raw_len ? ref->raw_len : 1);
    pthread_mutex_unlock(&c->lock);
    rc = cbfs_block_read(c->store, codec, ref, data, err);
    pthread_mutex_lock(&c->lock);
    if (rc < 0) {
        buf_put(c, data, ref->raw_len);
        remove_entry(c, e);
    } else {
        e->data = data;
        e->len = ref->raw_len;
        e->state = READY;
        e->pins += pin ? 1 : 0;
        c->bytes += e->len;
        evict(c);
    }
    pthread_cond_broadcast(&c->loaded);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static Entry *insert_loading(BlockCache *c, const uint8_t *id)
{
    Entry *e = cbfs_xcalloc(1, sizeof(*e));
    size_t b = bucket(c, id);
    memcpy(e->id, id, CBFS_BLOCK_ID_LEN);
    e->state = LOADING;
    e->hnext = c->table[b];
    c->table[b] = e;
    lru_push(c, e);
    return e;
}

/* One codec (zstd contexts) per thread, freed when the thread ends (FUSE
 * starts and stops worker threads as the load changes).  The thread's codec
 * is given this cache's crypt at each use: one daemon has one cache, but a
 * codec must never decode with another repository's keys. */
static pthread_key_t codec_key;
static pthread_once_t codec_once = PTHREAD_ONCE_INIT;

static void codec_destroy(void *c)
{
    cbfs_codec_free(c);
}

static void codec_key_init(void)
{
    pthread_key_create(&codec_key, codec_destroy);
}

static CbfsCodec *codec_for_thread(BlockCache *cache)
{
    CbfsCodec *c;
    pthread_once(&codec_once, codec_key_init);
    c = pthread_getspecific(codec_key);
    if (!c) {
        c = cbfs_codec_new(1);
        pthread_setspecific(codec_key, c);
    }
    cbfs_codec_set_crypt(c, cache->crypt);
    return c;
}

int blockcache_read(BlockCache *c, const CbfsBlockRef *ref, size_t off, size_t len, void *out,
                    CbfsError *err)
{
    Entry *e;
    int rc;

    if (off + len > ref->raw_len)
        return cbfs_error_set(err, EIO, CBFS_EXIT_CORRUPT, "read beyond the end of a block");
    pthread_mutex_lock(&c->lock);
    for (;;) {
        e = find(c, ref->id);
        if (!e) {
            c->stats.misses++;
            e = insert_loading(c, ref->id);
            pthread_mutex_unlock(&c->lock);
            rc = load(c, e, ref, codec_for_thread(c), true, err);
            if (rc < 0)
                return rc;
            pthread_mutex_lock(&c->lock);
            break; /* loaded and pinned */
        }
        if (e->state == READY) {
            c->stats.hits++;
            e->pins++;
            break;
        }
        pthread_cond_wait(&c->loaded, &c->lock);
    }
    lru_unlink(c, e);
    lru_push(c, e);
    pthread_mutex_unlock(&c->lock);
    memcpy(out, e->data + off, len);
    pthread_mutex_lock(&c->lock);
    e->pins--;
    evict(c);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

void blockcache_prefetch(BlockCache *c, const CbfsBlockRef *ref)
{
    pthread_mutex_lock(&c->lock);
    if (c->nthreads > 0 && !find(c, ref->id) && c->qlen < PREFETCH_QUEUE) {
        c->queue[(c->qhead + c->qlen) % PREFETCH_QUEUE] = *ref;
        c->qlen++;
        pthread_cond_signal(&c->queued);
    }
    pthread_mutex_unlock(&c->lock);
}

/* Fetch n blocks stored one after another in one pack, with one ranged
 * read where they are still together (block.h), into their LOADING entries
 * (called unlocked).  A block that fails is forgotten: a reader's own
 * fetch reports it. */
static void load_run(BlockCache *c, Entry **es, const CbfsBlockRef *refs, size_t n,
                     CbfsCodec *codec)
{
    size_t len = 0;
    uint8_t *run;
    CbfsBlockLoc at[PREFETCH_RUN];
    CbfsError err;
    int rc;

    for (size_t i = 0; i < n; i++)
        len += refs[i].stored_len;
    run = cbfs_xmalloc(len ? len : 1);
    cbfs_error_init(&err);
    rc = cbfs_block_read_stored(c->store, refs, n, run, at, &err);
    for (size_t i = 0, pos = 0; i < n; pos += refs[i].stored_len, i++) {
        uint8_t *data;
        int brc = rc;
        pthread_mutex_lock(&c->lock);
        data = buf_get(c, refs[i].raw_len ? refs[i].raw_len : 1);
        pthread_mutex_unlock(&c->lock);
        if (brc == 0)
            brc =
                cbfs_pack_decode_block(codec, at[i].pack, at[i].offset, run + pos,
                                       refs[i].stored_len, refs[i].raw_len, refs[i].id, data, &err);
        pthread_mutex_lock(&c->lock);
        if (brc < 0) {
            buf_put(c, data, refs[i].raw_len);
            remove_entry(c, es[i]);
        } else {
            es[i]->data = data;
            es[i]->len = refs[i].raw_len;
            es[i]->state = READY;
            c->bytes += es[i]->len;
            evict(c);
        }
        pthread_cond_broadcast(&c->loaded);
        pthread_mutex_unlock(&c->lock);
    }
    free(run);
}

static void *prefetcher(void *arg)
{
    BlockCache *c = arg;
    CbfsBlockRef refs[PREFETCH_RUN];
    Entry *es[PREFETCH_RUN];

    pthread_mutex_lock(&c->lock);
    for (;;) {
        size_t n = 0;
        while (!c->stopping && c->qlen == 0)
            pthread_cond_wait(&c->queued, &c->lock);
        if (c->stopping)
            break;
        /* the next queued block, and those queued after it that follow it
         * in the same pack: one request for all */
        while (c->qlen > 0 && n < PREFETCH_RUN) {
            const CbfsBlockRef *ref = &c->queue[c->qhead];
            if (n > 0 && (strcmp(ref->pack, refs[n - 1].pack) != 0 ||
                          ref->offset != refs[n - 1].offset + refs[n - 1].stored_len))
                break;
            if (n > 0 && find(c, ref->id))
                break;
            refs[n] = *ref;
            c->qhead = (c->qhead + 1) % PREFETCH_QUEUE;
            c->qlen--;
            if (find(c, refs[n].id))
                continue; /* the first one is cached already: look at the next */
            es[n] = insert_loading(c, refs[n].id);
            c->stats.prefetched++;
            n++;
        }
        if (n == 0)
            continue;
        pthread_mutex_unlock(&c->lock);
        load_run(c, es, refs, n, codec_for_thread(c));
        {
            /* -o max_rate: accounted after the run, so that a reader
             * waiting for one of its blocks never waits for the limit */
            uint64_t bytes = 0;
            for (size_t i = 0; i < n; i++)
                bytes += refs[i].stored_len;
            cbfs_ratelimit_take(cbfs_ratelimit_global(), bytes);
        }
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

BlockCache *blockcache_new(CbfsStore *store, CbfsCrypt *crypt, size_t capacity, size_t block_size,
                           int prefetchers)
{
    BlockCache *c = cbfs_xcalloc(1, sizeof(*c));
    c->store = store;
    c->crypt = crypt;
    c->capacity = capacity;
    c->buf_size = block_size;
    c->free_bufs = cbfs_xcalloc(MAX_FREE_BUFS, sizeof(uint8_t *));
    c->nbuckets = 65521;
    c->table = cbfs_xcalloc(c->nbuckets, sizeof(Entry *));
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->loaded, NULL);
    pthread_cond_init(&c->queued, NULL);
    c->threads = cbfs_xcalloc((size_t) (prefetchers > 0 ? prefetchers : 1), sizeof(pthread_t));
    for (int i = 0; i < prefetchers; i++)
        if (pthread_create(&c->threads[i], NULL, prefetcher, c) == 0)
            c->nthreads++;
    return c;
}

void blockcache_free(BlockCache *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->stopping = 1;
    pthread_cond_broadcast(&c->queued);
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < c->nthreads; i++)
        pthread_join(c->threads[i], NULL);
    while (c->head)
        remove_entry(c, c->head);
    while (c->nfree > 0)
        free(c->free_bufs[--c->nfree]);
    free(c->free_bufs);
    free(c->table);
    free(c->threads);
    free(c);
}

void blockcache_stats(BlockCache *c, BlockCacheStats *ret)
{
    pthread_mutex_lock(&c->lock);
    *ret = c->stats;
    ret->bytes = c->bytes;
    pthread_mutex_unlock(&c->lock);
}
