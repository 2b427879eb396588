/*
 * gc_repack.c - rewrite packs that are mostly unused.  The live blocks of a
 * pack are copied, stored bytes unchanged (each checked against its id
 * first) and in offset order, into a new pack; several old packs share a
 * new one, but one old pack's blocks never straddle two, so a run of
 * adjacent blocks stays one extent.  Order, so a kill at any moment loses
 * nothing: the new pack, then the old packs' maps, then the old packs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/block.h"
#include "cbfs/codec.h"
#include "cbfs/log.h"
#include "cbfs/pack.h"
#include "cbfs/util.h"
#include "gc.h"

#define RUN_MAX CBFS_BLOCK_RUN_MAX /* one copied run, one extent, at most */

typedef struct {
    Gc *g;
    CbfsCodec *codec;
    CbfsPackWriter *w;
    CbfsMovedMap *pending; /* maps into w, stored once w is */
    size_t npending;
    uint64_t removed, written;
    size_t repacked;
} Repack;

/* Store the new pack, then the maps into it, then remove the old packs. */
static int flush(Repack *rp, CbfsError *err)
{
    int rc = 0;
    if (!rp->w)
        return 0;
    if (cbfs_pack_writer_count(rp->w)) {
        rp->written += cbfs_pack_writer_size(rp->w) +
                       cbfs_pack_writer_count(rp->w) * CBFS_PACK_ENTRY_LEN + CBFS_PACK_TRAILER_LEN;
        rc = cbfs_pack_writer_finish(rp->w, rp->g->repo->store, rp->g->repo->crypt, err);
    }
    cbfs_test_pause("gc-repack-stored");
    for (size_t i = 0; i < rp->npending && rc == 0; i++)
        rc = cbfs_moved_store(rp->g->repo->store, &rp->pending[i], err);
    cbfs_test_pause("gc-maps-stored");
    for (size_t i = 0; i < rp->npending && rc == 0; i++) {
        char *key = cbfs_pack_key(rp->pending[i].pack);
        GcPack *p = gc_find_pack(rp->g, rp->pending[i].pack);
        rc = cbfs_store_remove(rp->g->repo->store, key, err);
        if (rc == -ENOENT)
            rc = 0;
        if (rc < 0)
            cbfs_error_prefix(err, "could not remove \"%s\"", key);
        else {
            rp->removed += p ? p->size : 0;
            rp->repacked++;
        }
        free(key);
    }
    for (size_t i = 0; i < rp->npending; i++)
        cbfs_moved_release(&rp->pending[i]);
    free(rp->pending);
    rp->pending = NULL;
    rp->npending = 0;
    cbfs_pack_writer_free(rp->w);
    rp->w = NULL;
    return rc;
}

/* Copy one run of adjacent live entries e[0..n) of pack p. */
static int copy_run(Repack *rp, GcPack *p, const CbfsPackEntry *e, size_t n, CbfsMovedMap *map,
                    uint8_t *raw, CbfsError *err)
{
    uint64_t len = e[n - 1].offset + e[n - 1].stored_len - e[0].offset;
    uint8_t *buf = cbfs_xmalloc(len ? len : 1);
    CbfsBlockRef *refs = cbfs_xcalloc(n, sizeof(*refs));
    uint64_t new_off = 0;
    int rc;

    /* read as every reader reads (block.h): the pack is there (gc holds
     * the lock), so this is one request */
    for (size_t i = 0; i < n; i++) {
        memcpy(refs[i].pack, p->name, sizeof(refs[i].pack));
        refs[i].offset = e[i].offset;
        refs[i].stored_len = e[i].stored_len;
    }
    rc = cbfs_block_read_stored(rp->g->repo->store, refs, n, buf, NULL, err);
    free(refs);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const uint8_t *stored = buf + (e[i].offset - e[0].offset);
        uint64_t off;
        rc = cbfs_pack_decode_block(rp->codec, p->name, e[i].offset, stored, e[i].stored_len,
                                    e[i].raw_len, e[i].id, raw, err);
        if (rc < 0)
            break;
        off = cbfs_pack_writer_append(rp->w, e[i].id, stored, e[i].stored_len, e[i].raw_len);
        if (i == 0)
            new_off = off;
    }
    if (rc == 0) {
        CbfsExtent *x;
        map->ext = cbfs_xrealloc(map->ext, (map->n + 1) * sizeof(CbfsExtent));
        x = &map->ext[map->n++];
        x->old_off = e[0].offset;
        x->len = len;
        x->new_off = new_off;
        memcpy(x->new_pack, cbfs_pack_writer_name(rp->w), CBFS_PACK_NAME_LEN + 1);
    }
    free(buf);
    return rc;
}

static int cmp_entry(const void *a, const void *b)
{
    uint64_t x = ((const CbfsPackEntry *) a)->offset, y = ((const CbfsPackEntry *) b)->offset;
    return x < y ? -1 : x > y;
}

static int repack_one(Repack *rp, GcPack *p, uint8_t *raw, CbfsError *err)
{
    CbfsPackEntry *entries, *live;
    size_t n, nlive = 0, found = 0;
    CbfsMovedMap map;
    int rc = cbfs_pack_read_index_sized(rp->g->repo->store, rp->g->repo->crypt, p->name, p->size,
                                        &entries, &n, err);

    if (rc < 0)
        return rc;
    if (n > 1)
        qsort(entries, n, sizeof(*entries), cmp_entry);
    live = cbfs_xcalloc(n ? n : 1, sizeof(*live));
    for (size_t i = 0; i < n; i++)
        if (gc_pack_live(p, entries[i].offset))
            live[nlive++] = entries[i];
    for (size_t i = 0; i < nlive; i++)
        found += live[i].stored_len;
    if (found != p->live_bytes) {
        /* a backup names a block the pack's index does not have: leave it to check */
        char *key = cbfs_pack_key(p->name);
        rc = cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                            "pack \"%s\" does not hold every block the backups name in it "
                            "(run cbfs check)",
                            key);
        free(key);
        goto out;
    }
    /* one old pack's blocks never straddle two new packs */
    if (rp->w && cbfs_pack_writer_size(rp->w) + found > CBFS_PACK_TARGET_SIZE &&
        (rc = flush(rp, err)) < 0)
        goto out;
    if (!rp->w)
        rp->w = cbfs_pack_writer_new();
    memset(&map, 0, sizeof(map));
    memcpy(map.pack, p->name, sizeof(map.pack));
    for (size_t i = 0; i < nlive && rc == 0;) {
        size_t j = i + 1;
        uint64_t run = live[i].stored_len;
        while (j < nlive && live[j].offset == live[j - 1].offset + live[j - 1].stored_len &&
               run + live[j].stored_len <= RUN_MAX)
            run += live[j++].stored_len;
        /* a run cut at RUN_MAX starts a new extent, still contiguous in both */
        rc = copy_run(rp, p, live + i, j - i, &map, raw, err);
        i = j;
    }
    if (rc == 0) {
        rp->pending = cbfs_xrealloc(rp->pending, (rp->npending + 1) * sizeof(CbfsMovedMap));
        rp->pending[rp->npending++] = map;
    } else
        cbfs_moved_release(&map);
out:
    free(entries);
    free(live);
    return rc;
}

int gc_repack(Gc *g, char **names, size_t n, uint64_t *ret_removed_bytes,
              uint64_t *ret_written_bytes, size_t *ret_repacked, CbfsError *err)
{
    Repack rp = {.g = g};
    uint8_t *raw = cbfs_xmalloc(g->repo->block_size);
    int rc = 0, failed = 0;

    rp.codec = cbfs_repo_codec_new(g->repo, 1); /* the repository is unlocked (cmd_open_repo) */
    for (size_t i = 0; i < n && rc == 0; i++) {
        GcPack *p = gc_find_pack(g, names[i]);
        if (!p || p->fate != GC_REPACK)
            continue;
        rc = repack_one(&rp, p, raw, err);
        if (rc == -EBADMSG) {
            /* a damaged pack stays as it is: reported, the others go on */
            cbfs_warning("%s", err->msg);
            cbfs_error_init(err);
            p->fate = GC_KEEP;
            failed++;
            rc = 0;
        }
    }
    if (rc == 0)
        rc = flush(&rp, err);
    else {
        for (size_t i = 0; i < rp.npending; i++)
            cbfs_moved_release(&rp.pending[i]);
        free(rp.pending);
        cbfs_pack_writer_free(rp.w);
    }
    cbfs_codec_free(rp.codec);
    free(raw);
    *ret_removed_bytes = rp.removed;
    *ret_written_bytes = rp.written;
    *ret_repacked = rp.repacked;
    if (rc == 0 && failed)
        rc = cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                            "%d %s could not be repacked (see above)", failed,
                            failed == 1 ? "pack" : "packs");
    return rc;
}
