/*
 * test-block.c - unit tests for lib/block.c, the one way to find and read a
 * backup's blocks through gc's relocation maps.
 *
 * The property: random backups of random files in random packs; rounds of
 * new backups, expiry and rewrites like gc's (each pack's live blocks
 * copied into new packs, extents cut at random, maps stored, old packs
 * removed -- or left behind, as a killed gc leaves them), so that blocks
 * move again and again (chains of maps).  After every round, every block
 * of every kept backup is read through cbfs_block_read_stored in random
 * groups of neighbours -- exactly as restore and the mount read a file --
 * and through cbfs_block_read and cbfs_block_locate, and must return its
 * bytes.  Then the failures, each naming its object: a pack gone without a
 * map (also at the end of a chain), a map that does not hold a block, a
 * loop of maps.
 *
 * The seeds are fixed, so a run is repeatable; CBFS_TEST_SEED=N runs seed N
 * alone (a failure prints its seed).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/block.h"
#include "cbfs/codec.h"
#include "cbfs/moved.h"
#include "cbfs/pack.h"
#include "cbfs/store.h"
#include "cbfs/util.h"
#include "tap.h"

#define FILES       12 /* files of a backup */
#define FILE_BLOCKS 24 /* blocks of a file */
#define ROUNDS      6
#define KEEP        3 /* backups kept by expiry */
#define MAX_BACKUPS (ROUNDS + 1)
#define MAX_RAW     8192
#define MAX_BLOCKS  (MAX_BACKUPS * FILES * FILE_BLOCKS)
#define MAX_PACKS   4096

/* A "# " line of TAP. */
#define diag(...) (printf("# "), printf(__VA_ARGS__), putchar('\n'))

static uint64_t rng;

static uint64_t next(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * UINT64_C(2685821657736338717);
}

static unsigned below(unsigned n)
{
    return (unsigned) (next() % n);
}

/* A block as it was made: its bytes, stored and raw. */
typedef struct Blk {
    uint8_t raw[MAX_RAW];
    uint32_t raw_len;
    uint8_t *stored;
    uint32_t stored_len;
    uint8_t id[CBFS_BLOCK_ID_LEN];
} Blk;

/* A backup: each file's refs, as its manifest names them. */
typedef struct Backup {
    CbfsBlockRef refs[FILES][FILE_BLOCKS];
    int blk[FILES][FILE_BLOCKS]; /* index into World.blks */
    bool kept;
} Backup;

/* The model gc works from: packs that exist, maps stored. */
typedef struct World {
    CbfsStore *st;
    CbfsCodec *codec;
    Blk *blks;
    int nblks;
    Backup backups[MAX_BACKUPS];
    int nbackups;
    char packs[MAX_PACKS][CBFS_PACK_NAME_LEN + 1]; /* every pack ever made */
    bool present[MAX_PACKS];
    CbfsMovedMap *maps[MAX_PACKS]; /* the map stored for packs[i], or NULL */
    int npacks;
    /* made by this seed */
    int rewrites, chained, leftovers;
} World;

static int pack_index(const World *w, const char *name)
{
    for (int i = 0; i < w->npacks; i++)
        if (strcmp(w->packs[i], name) == 0)
            return i;
    return -1;
}

static int add_pack(World *w, const char *name)
{
    if (w->npacks == MAX_PACKS)
        abort();
    memcpy(w->packs[w->npacks], name, CBFS_PACK_NAME_LEN + 1);
    w->present[w->npacks] = true;
    w->maps[w->npacks] = NULL;
    return w->npacks++;
}

/* ---------------------------------------------------------------- backups */

static int new_block(World *w)
{
    Blk *b = &w->blks[w->nblks];
    uint8_t tmp[MAX_RAW + 64];
    size_t bound = cbfs_codec_bound(MAX_RAW);
    uint8_t *enc = cbfs_xmalloc(bound);

    b->raw_len = 512 + below(MAX_RAW - 512 + 1);
    /* compressible, but each block its own */
    for (uint32_t i = 0; i < b->raw_len; i++)
        tmp[i] = (uint8_t) (i % 7 == 0 ? next() : (uint64_t) (w->nblks + i / 64));
    memcpy(b->raw, tmp, b->raw_len);
    cbfs_block_id(b->raw, b->raw_len, b->id);
    b->stored_len = (uint32_t) cbfs_codec_encode(w->codec, b->id, b->raw, b->raw_len, enc, bound);
    b->stored = enc;
    return w->nblks++;
}

/* A pack being written: its stored blocks back to back, which is all a
 * reader of blocks needs (a real writer's index and trailer are pack.c's). */
typedef struct PackBuf {
    char name[CBFS_PACK_NAME_LEN + 1];
    CbfsBuf data;
    size_t count;
} PackBuf;

static PackBuf *pack_new(void)
{
    PackBuf *p = cbfs_xcalloc(1, sizeof(*p));
    uint64_t r[2] = {next(), next()};
    cbfs_hex_encode((const uint8_t *) r, sizeof(r), p->name);
    cbfs_buf_init(&p->data);
    return p;
}

static uint64_t pack_append(PackBuf *p, const void *stored, uint32_t len)
{
    uint64_t off = p->data.len;
    cbfs_buf_append(&p->data, stored, len);
    p->count++;
    return off;
}

/* Store the pack (if it holds anything) and free it. */
static void finish_pack(World *w, PackBuf *p)
{
    CbfsError err;
    char key[CBFS_PACK_KEY_MAX];
    cbfs_error_init(&err);
    if (p->count) {
        cbfs_pack_key_into(p->name, key);
        if (cbfs_store_put(w->st, key, p->data.data, p->data.len, &err) < 0)
            abort();
        add_pack(w, p->name);
    }
    cbfs_buf_release(&p->data);
    free(p);
}

/* A new backup: the previous one with about a tenth of its blocks changed
 * (all of them new for the first), new blocks written file after file into
 * new packs of random sizes, as a backup writes them. */
static void take_backup(World *w)
{
    Backup *b = &w->backups[w->nbackups];
    const Backup *prev = w->nbackups ? &w->backups[w->nbackups - 1] : NULL;
    PackBuf *pw = pack_new();
    unsigned limit = 4 + below(60); /* blocks per pack */

    for (int f = 0; f < FILES; f++)
        for (int k = 0; k < FILE_BLOCKS; k++) {
            CbfsBlockRef *r = &b->refs[f][k];
            if (prev && below(10) != 0) {
                *r = prev->refs[f][k];
                b->blk[f][k] = prev->blk[f][k];
                continue;
            }
            if (pw->count >= limit) {
                finish_pack(w, pw);
                pw = pack_new();
            }
            b->blk[f][k] = new_block(w);
            const Blk *x = &w->blks[b->blk[f][k]];
            memset(r, 0, sizeof(*r));
            r->file = f;
            r->blockno = (uint64_t) k;
            memcpy(r->id, x->id, CBFS_BLOCK_ID_LEN);
            memcpy(r->pack, pw->name, CBFS_PACK_NAME_LEN + 1);
            r->offset = pack_append(pw, x->stored, x->stored_len);
            r->stored_len = x->stored_len;
            r->raw_len = x->raw_len;
        }
    finish_pack(w, pw);
    b->kept = true;
    w->nbackups++;
}

/* ---------------------------------------------------------------- gc */

/* Where gc finds a ref's block: through the maps first (a pack a killed gc
 * left behind has one), else in its pack. */
static void gc_locate(const World *w, const CbfsBlockRef *r, CbfsBlockLoc *at)
{
    memcpy(at->pack, r->pack, sizeof(at->pack));
    at->offset = r->offset;
    at->len = r->stored_len;
    for (int hops = 0; hops < CBFS_BLOCK_HOPS_MAX; hops++) {
        int p = pack_index(w, at->pack);
        const CbfsExtent *e =
            p >= 0 && w->maps[p] ? cbfs_moved_find(w->maps[p], at->offset, at->len) : NULL;
        if (!e)
            return;
        memcpy(at->pack, e->new_pack, sizeof(at->pack));
        at->offset = e->new_off + (at->offset - e->old_off);
    }
}

typedef struct Live {
    int pack;
    uint64_t off;
    uint32_t len;
} Live;

static int cmp_live(const void *a, const void *b)
{
    const Live *x = a, *y = b;
    if (x->pack != y->pack)
        return x->pack < y->pack ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

static void remove_pack(World *w, int p)
{
    CbfsError err;
    char *key = cbfs_pack_key(w->packs[p]);
    cbfs_error_init(&err);
    cbfs_store_remove(w->st, key, &err);
    w->present[p] = false;
    free(key);
}

/* Rewrite pack p: copy its live blocks in offset order into new packs
 * (the writer changes at random: an old pack may straddle two new ones,
 * which gc avoids but readers must not need), cut extents at random too,
 * store the new packs, then the map, then remove p (not always: a killed
 * gc leaves it). */
static void rewrite(World *w, int p, Live *live, size_t n)
{
    CbfsMovedMap *m = cbfs_xcalloc(1, sizeof(*m));
    PackBuf *pw = pack_new();
    PackBuf *done[64];
    size_t ndone = 0;
    char pkey[CBFS_PACK_KEY_MAX];
    CbfsError err;

    cbfs_error_init(&err);
    cbfs_pack_key_into(w->packs[p], pkey);
    memcpy(m->pack, w->packs[p], sizeof(m->pack));
    m->ext = cbfs_xcalloc(n, sizeof(CbfsExtent));
    for (size_t i = 0; i < n; i++) {
        uint8_t buf[MAX_RAW + 64];
        size_t got;
        uint64_t new_off;
        CbfsExtent *last = m->n ? &m->ext[m->n - 1] : NULL;
        if (i > 0 && below(8) == 0 && ndone < 63) {
            done[ndone++] = pw;
            pw = pack_new();
        }
        if (cbfs_store_get_range(w->st, pkey, live[i].off, live[i].len, buf, &got, &err) < 0 ||
            got != live[i].len)
            abort();
        new_off = pack_append(pw, buf, live[i].len);
        if (last && below(4) != 0 && last->old_off + last->len == live[i].off &&
            strcmp(last->new_pack, pw->name) == 0 && last->new_off + last->len == new_off) {
            last->len += live[i].len; /* the same extent goes on */
            continue;
        }
        m->ext[m->n].old_off = live[i].off;
        m->ext[m->n].len = live[i].len;
        m->ext[m->n].new_off = new_off;
        memcpy(m->ext[m->n].new_pack, pw->name, CBFS_PACK_NAME_LEN + 1);
        m->n++;
    }
    done[ndone++] = pw;
    for (size_t i = 0; i < ndone; i++)
        finish_pack(w, done[i]);
    if (cbfs_moved_store(w->st, m, &err) < 0)
        abort();
    w->maps[p] = m;
    w->rewrites++;
    if (below(6) == 0)
        w->leftovers++; /* killed before the old pack went */
    else
        remove_pack(w, p);
}

/* Expire down to KEEP backups, then a gc: packs no kept block is in are
 * removed (a leftover of a killed gc among them), a random half of the
 * others are rewritten. */
static void collect(World *w)
{
    int nkept = 0, npacks = w->npacks; /* the packs before this gc */
    Live *live = cbfs_xcalloc(MAX_BACKUPS * FILES * FILE_BLOCKS, sizeof(Live));
    size_t n = 0, total = 0;
    bool *used = cbfs_xcalloc((size_t) npacks, sizeof(bool));

    for (int i = w->nbackups - 1; i >= 0; i--)
        if (w->backups[i].kept && ++nkept > KEEP)
            w->backups[i].kept = false;
    /* every kept block where gc finds it: one entry a block, by pack */
    for (int i = 0; i < w->nbackups; i++)
        for (int f = 0; f < FILES && w->backups[i].kept; f++)
            for (int k = 0; k < FILE_BLOCKS; k++) {
                CbfsBlockLoc at;
                gc_locate(w, &w->backups[i].refs[f][k], &at);
                live[n].pack = pack_index(w, at.pack);
                live[n].off = at.offset;
                live[n++].len = at.len;
            }
    qsort(live, n, sizeof(Live), cmp_live);
    for (size_t i = 0; i < n; i++)
        if (total == 0 || live[total - 1].pack != live[i].pack ||
            live[total - 1].off != live[i].off)
            live[total++] = live[i];
    for (size_t i = 0; i < total;) {
        size_t j = i;
        int p = live[i].pack;
        while (j < total && live[j].pack == p)
            j++;
        if (p >= 0 && p < npacks) {
            used[p] = true;
            if (w->present[p] && !w->maps[p] && below(2) == 0)
                rewrite(w, p, live + i, j - i);
        }
        i = j;
    }
    for (int p = 0; p < npacks; p++)
        if (w->present[p] && !used[p])
            remove_pack(w, p);
    free(used);
    free(live);
}

/* ---------------------------------------------------------------- reading */

static bool exists(void *ctx, const char *name)
{
    World *w = ctx;
    char key[CBFS_PACK_KEY_MAX];
    uint64_t size;
    CbfsError err;
    cbfs_error_init(&err);
    cbfs_pack_key_into(name, key);
    return cbfs_store_stat(w->st, key, &size, &err) == 0;
}

/* Every block of every kept backup, read as restore and the mount read:
 * a file's refs in random groups of neighbours.  Returns the failures. */
static int read_all(World *w, uint64_t seed, int round, int *ret_reads)
{
    int failures = 0;
    uint8_t *buf = cbfs_xmalloc((size_t) FILE_BLOCKS * cbfs_codec_bound(MAX_RAW));
    CbfsBlockLoc at[FILE_BLOCKS];

    for (int i = 0; i < w->nbackups; i++) {
        const Backup *b = &w->backups[i];
        if (!b->kept)
            continue;
        for (int f = 0; f < FILES; f++)
            for (int k = 0; k < FILE_BLOCKS;) {
                int n = 1 + (int) below(below(3) == 0 ? FILE_BLOCKS : 4), pos = 0;
                CbfsError err;
                if (k + n > FILE_BLOCKS)
                    n = FILE_BLOCKS - k;
                cbfs_error_init(&err);
                (*ret_reads)++;
                if (cbfs_block_read_stored(w->st, &b->refs[f][k], (size_t) n, buf, at, &err) < 0) {
                    if (failures++ == 0)
                        diag("seed %llu round %d backup %d file %d blocks %d+%d: %s",
                             (unsigned long long) seed, round, i, f, k, n, err.msg);
                    k += n;
                    continue;
                }
                for (int j = 0; j < n; j++) {
                    const Blk *x = &w->blks[b->blk[f][k + j]];
                    if (memcmp(buf + pos, x->stored, x->stored_len) != 0 && failures++ == 0)
                        diag("seed %llu round %d backup %d file %d block %d: wrong bytes",
                             (unsigned long long) seed, round, i, f, k + j);
                    pos += (int) x->stored_len;
                }
                k += n;
            }
    }
    free(buf);
    return failures;
}

/* A sample of single blocks: decoded and verified (cbfs_block_read), and
 * found by cbfs_block_locate as check finds them.  Returns the failures. */
static int read_sample(World *w, uint64_t seed, int round)
{
    int failures = 0;
    for (int t = 0; t < 40; t++) {
        int i = (int) below((unsigned) w->nbackups), f = (int) below(FILES),
            k = (int) below(FILE_BLOCKS);
        const Backup *b = &w->backups[i];
        const Blk *x = &w->blks[b->blk[f][k]];
        uint8_t raw[MAX_RAW], stored[MAX_RAW + 64];
        CbfsBlockLoc at;
        CbfsError err;
        size_t got;
        char key[CBFS_PACK_KEY_MAX];

        if (!b->kept)
            continue;
        cbfs_error_init(&err);
        if (cbfs_block_read(w->st, w->codec, &b->refs[f][k], raw, &err) < 0 ||
            memcmp(raw, x->raw, x->raw_len) != 0) {
            if (failures++ == 0)
                diag("seed %llu round %d: cbfs_block_read: %s", (unsigned long long) seed, round,
                     err.msg);
            continue;
        }
        memcpy(at.pack, b->refs[f][k].pack, sizeof(at.pack));
        at.offset = b->refs[f][k].offset;
        at.len = b->refs[f][k].stored_len;
        cbfs_pack_key_into(at.pack, key);
        if (cbfs_block_locate(w->st, &at, exists, w, &err) < 0 ||
            cbfs_pack_read_range(w->st, at.pack, at.offset, at.len, stored, &err) < 0 ||
            (got = at.len, memcmp(stored, x->stored, got) != 0)) {
            if (failures++ == 0)
                diag("seed %llu round %d: cbfs_block_locate: %s", (unsigned long long) seed, round,
                     err.code ? err.msg : "wrong bytes");
        }
    }
    return failures;
}

static int chains(const World *w)
{
    int n = 0;
    for (int p = 0; p < w->npacks; p++)
        for (size_t e = 0; w->maps[p] && e < w->maps[p]->n; e++) {
            int q = pack_index(w, w->maps[p]->ext[e].new_pack);
            if (q >= 0 && w->maps[q]) {
                n++;
                break;
            }
        }
    return n;
}

static void world_free(World *w)
{
    for (int i = 0; i < w->nblks; i++)
        free(w->blks[i].stored);
    free(w->blks);
    for (int p = 0; p < w->npacks; p++)
        if (w->maps[p]) {
            cbfs_moved_release(w->maps[p]);
            free(w->maps[p]);
        }
    cbfs_codec_free(w->codec);
    cbfs_store_free(w->st);
}

static void test_property(uint64_t first, uint64_t last)
{
    int failures = 0, reads = 0, rewrites = 0, chained = 0, leftovers = 0;
    World *w = cbfs_xcalloc(1, sizeof(*w));

    for (uint64_t seed = first; seed <= last; seed++) {
        memset(w, 0, sizeof(*w));
        rng = seed * UINT64_C(0x9E3779B97F4A7C15) | 1;
        w->st = cbfs_store_mem_new();
        w->codec = cbfs_codec_new(1);
        w->blks = cbfs_xcalloc(MAX_BLOCKS, sizeof(Blk));
        take_backup(w);
        for (int round = 0; round < ROUNDS; round++) {
            take_backup(w);
            collect(w);
            failures += read_all(w, seed, round, &reads);
            failures += read_sample(w, seed, round);
        }
        rewrites += w->rewrites;
        chained += chains(w);
        leftovers += w->leftovers;
        world_free(w);
    }
    free(w);
    is_int(failures, 0,
           "seeds %llu..%llu: %d reads of kept backups' blocks through %d rewrites (%d maps "
           "into moved packs, %d old packs left by a killed gc) all return their bytes",
           (unsigned long long) first, (unsigned long long) last, reads, rewrites, chained,
           leftovers);
    ok(chained > 0 && leftovers > 0 && rewrites > 0,
       "... the runs made chains of maps and left old packs behind");
}

/* ---------------------------------------------------------------- failures */

static const char *P = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0", *Q = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0",
                  *R = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0", *L1 = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0",
                  *L2 = "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0";

static void one_extent(CbfsStore *st, const char *from, uint64_t off, uint64_t len, const char *to,
                       uint64_t new_off)
{
    CbfsMovedMap m = {0};
    CbfsExtent e = {off, len, "", new_off};
    CbfsError err;
    memcpy(m.pack, from, sizeof(m.pack));
    memcpy(e.new_pack, to, sizeof(e.new_pack));
    m.ext = &e;
    m.n = 1;
    cbfs_error_init(&err);
    cbfs_moved_store(st, &m, &err);
}

static CbfsBlockRef ref_at(const char *pack, uint64_t off, uint32_t len)
{
    CbfsBlockRef r = {.offset = off, .stored_len = len};
    memcpy(r.pack, pack, sizeof(r.pack));
    return r;
}

static bool in_store(void *ctx, const char *name)
{
    char key[CBFS_PACK_KEY_MAX];
    uint64_t size;
    CbfsError err;
    cbfs_error_init(&err);
    cbfs_pack_key_into(name, key);
    return cbfs_store_stat(ctx, key, &size, &err) == 0;
}

static void test_failures(void)
{
    CbfsStore *st = cbfs_store_mem_new();
    CbfsBlockRef refs[2];
    CbfsBlockLoc at;
    CbfsError err;
    uint8_t buf[64];

    /* P moved [0,10) to Q, and Q is gone without a map */
    one_extent(st, P, 0, 10, Q, 100);
    refs[0] = ref_at(P, 0, 10);
    cbfs_error_init(&err);
    is_int(cbfs_block_read_stored(st, refs, 1, buf, NULL, &err), -ENOENT,
           "a block moved into a pack that is gone");
    is_str(err.msg,
           "pack \"packs/b0/b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0.pack\" is missing (gc moved the block "
           "there from pack \"packs/a0/a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0.pack\")",
           "... names the pack missing and the one the manifest names");
    is_int(err.code, CBFS_EXIT_CORRUPT, "... as corrupt");
    memcpy(at.pack, P, sizeof(at.pack));
    at.offset = 0;
    at.len = 10;
    cbfs_error_init(&err);
    is_int(cbfs_block_locate(st, &at, in_store, st, &err), -ENOENT, "locate says the same");
    is_str(at.pack, Q, "... and where the chain ends");

    /* Q comes to be, holding the bytes at 100 */
    {
        char data[128], *key = cbfs_pack_key(Q);
        memset(data, 'q', sizeof(data));
        memcpy(data + 100, "0123456789", 10);
        cbfs_store_put(st, key, data, sizeof(data), &err);
        free(key);
    }
    /* the block right after the one P's map holds: in the old pack it was
     * its neighbour, but the map does not hold it */
    refs[1] = ref_at(P, 10, 4);
    cbfs_error_init(&err);
    is_int(cbfs_block_read_stored(st, refs, 2, buf, NULL, &err), -ERANGE,
           "two neighbours in an old pack, one of them not in its map");
    is_str(err.msg,
           "relocation map \"moved/a0/a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0\" does not hold offset 10 "
           "(4 bytes)",
           "... names the map and the offset");
    cbfs_error_init(&err);
    memset(buf, 0, sizeof(buf));
    is_int(cbfs_block_read_stored(st, refs, 1, buf, NULL, &err), 0, "the one it holds reads");
    ok(memcmp(buf, "0123456789", 10) == 0, "... its bytes");

    /* R is not there and has no map */
    refs[0] = ref_at(R, 0, 4);
    cbfs_error_init(&err);
    is_int(cbfs_block_read_stored(st, refs, 1, buf, NULL, &err), -ENOENT,
           "a pack gone without a map");
    is_str(err.msg, "pack \"packs/c0/c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0.pack\" is missing",
           "... names it");

    /* a loop: L1 -> L2 -> L1 */
    one_extent(st, L1, 0, 8, L2, 0);
    one_extent(st, L2, 0, 8, L1, 0);
    refs[0] = ref_at(L1, 0, 8);
    cbfs_error_init(&err);
    is_int(cbfs_block_read_stored(st, refs, 1, buf, NULL, &err), -ELOOP, "a loop of maps");
    is_str(err.msg,
           "a block of pack \"packs/d0/d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0.pack\" was moved more "
           "than 16 times (relocation maps form a loop)",
           "... ends, naming the pack");
    memcpy(at.pack, L1, sizeof(at.pack));
    at.offset = 0;
    at.len = 8;
    cbfs_error_init(&err);
    is_int(cbfs_block_locate(st, &at, in_store, st, &err), -ELOOP, "locate ends too");
    cbfs_store_free(st);
}

int main(void)
{
    const char *one = getenv("CBFS_TEST_SEED");
    if (one && *one) {
        uint64_t s = strtoull(one, NULL, 10);
        test_property(s, s);
    } else {
        test_property(1, 40);
    }
    test_failures();
    return done_testing();
}
