/*
 * block.c - finding and reading a backup's blocks through gc's relocation
 * maps.  See block.h for what is guaranteed.
 *
 * A read of n blocks walks them in the caller's order and cuts them into
 * runs: blocks of one pack that follow one another both in the pack and in
 * the output buffer.  A run whose pack is there is one ranged read.  When
 * the pack is gone, every block of the run takes one step through the
 * pack's map on its own, and the blocks so moved are cut into runs afresh,
 * in the new pack(s), and read the same way: nothing is ever read as one
 * range that was not one range where it is now.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/block.h"
#include "cbfs/moved.h"
#include "cbfs/util.h"

/* The message for a pack that is gone without a map.  from: the pack the
 * manifest names, when the block was followed elsewhere. */
static int missing(const char *name, const char *from, CbfsError *err)
{
    char key[CBFS_PACK_KEY_MAX], from_key[CBFS_PACK_KEY_MAX];

    cbfs_pack_key_into(name, key);
    if (!from || strcmp(from, name) == 0)
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_CORRUPT, "pack \"%s\" is missing", key);
    cbfs_pack_key_into(from, from_key);
    return cbfs_error_set(err, ENOENT, CBFS_EXIT_CORRUPT,
                          "pack \"%s\" is missing (gc moved the block there from pack \"%s\")", key,
                          from_key);
}

static int too_many_hops(const char *from, CbfsError *err)
{
    char key[CBFS_PACK_KEY_MAX];
    cbfs_pack_key_into(from, key);
    return cbfs_error_set(err, ELOOP, CBFS_EXIT_CORRUPT,
                          "a block of pack \"%s\" was moved more than %d times (relocation maps "
                          "form a loop)",
                          key, CBFS_BLOCK_HOPS_MAX);
}

/* One step: loc's pack is gone; where its map moved the block.  from: the
 * pack the manifest names (for the message). */
static int step(CbfsStore *st, CbfsBlockLoc *loc, const char *from, CbfsError *err)
{
    int rc = cbfs_moved_resolve(st, loc->pack, loc->offset, loc->len, loc->pack, &loc->offset, err);
    if (rc == -ENOENT)
        rc = missing(loc->pack, from, err);
    return rc;
}

int cbfs_block_locate(CbfsStore *st, CbfsBlockLoc *loc, cbfs_block_present_fn present, void *ctx,
                      CbfsError *err)
{
    char from[CBFS_PACK_NAME_LEN + 1];
    int rc;

    memcpy(from, loc->pack, sizeof(from));
    for (int hops = 0; !present(ctx, loc->pack); hops++) {
        if (hops == CBFS_BLOCK_HOPS_MAX)
            return too_many_hops(from, err);
        if ((rc = step(st, loc, from, err)) < 0)
            return rc;
    }
    return 0;
}

/* A block being read: where it is now, where its bytes go, and the pack
 * the manifest names. */
typedef struct Loc {
    CbfsBlockLoc at;
    uint8_t *dst;
    const char *from;
} Loc;

/* The end of the run starting at l[0]: blocks of one pack, each following
 * the previous one in the pack and in the output, up to RUN_MAX bytes. */
static size_t run_end(const Loc *l, size_t n, size_t *ret_len)
{
    size_t j = 1, len = l[0].at.len;
    while (j < n && strcmp(l[j].at.pack, l[0].at.pack) == 0 &&
           l[j].at.offset == l[j - 1].at.offset + l[j - 1].at.len &&
           l[j].dst == l[j - 1].dst + l[j - 1].at.len && len + l[j].at.len <= CBFS_BLOCK_RUN_MAX)
        len += l[j++].at.len;
    *ret_len = len;
    return j;
}

static int read_locs(CbfsStore *st, Loc *l, size_t n, int hops, CbfsError *err)
{
    for (size_t i = 0; i < n;) {
        size_t len, j = i + run_end(l + i, n - i, &len);
        int rc = -ENOENT;

        /* a pack whose map this process has read is gone (or about to
         * be): no request for it */
        if (!cbfs_moved_known(l[i].at.pack)) {
            rc = cbfs_pack_read_range(st, l[i].at.pack, l[i].at.offset, len, l[i].dst, err);
            if (rc < 0 && rc != -ENOENT)
                return rc;
        }
        if (rc == -ENOENT) {
            if (hops == CBFS_BLOCK_HOPS_MAX)
                return too_many_hops(l[i].from, err);
            for (size_t k = i; k < j; k++)
                if ((rc = step(st, &l[k].at, l[k].from, err)) < 0)
                    return rc;
            if ((rc = read_locs(st, l + i, j - i, hops + 1, err)) < 0)
                return rc;
        }
        i = j;
    }
    return 0;
}

int cbfs_block_read_stored(CbfsStore *st, const CbfsBlockRef *refs, size_t n, uint8_t *out,
                           CbfsBlockLoc *ret_at, CbfsError *err)
{
    Loc one, *l = n == 1 ? &one : cbfs_xmalloc((n ? n : 1) * sizeof(Loc));
    uint8_t *dst = out;
    int rc;

    for (size_t i = 0; i < n; i++) {
        memcpy(l[i].at.pack, refs[i].pack, sizeof(l[i].at.pack));
        l[i].at.offset = refs[i].offset;
        l[i].at.len = refs[i].stored_len;
        l[i].dst = dst;
        l[i].from = refs[i].pack;
        dst += refs[i].stored_len;
    }
    rc = read_locs(st, l, n, 0, err);
    for (size_t i = 0; i < n && ret_at && rc == 0; i++)
        ret_at[i] = l[i].at;
    if (l != &one)
        free(l);
    return rc;
}

int cbfs_block_read(CbfsStore *st, CbfsCodec *codec, const CbfsBlockRef *ref, void *out,
                    CbfsError *err)
{
    uint8_t *stored = cbfs_xmalloc(ref->stored_len ? ref->stored_len : 1);
    CbfsBlockLoc at;
    int rc = cbfs_block_read_stored(st, ref, 1, stored, &at, err);
    if (rc == 0)
        rc = cbfs_pack_decode_block(codec, at.pack, at.offset, stored, ref->stored_len,
                                    ref->raw_len, ref->id, out, err);
    free(stored);
    return rc;
}
