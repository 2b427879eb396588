/*
 * test-moved.c - unit tests for gc's objects: relocation maps (lib/moved.c:
 * store, read back, find extents, resolve, and refuse damaged maps, naming
 * them), reads of a moved pack through block.h (one map and a chain of
 * two), and gc's plans (lib/doomed.c: the union of packs backups
 * must avoid, a damaged plan refused).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/block.h"
#include "cbfs/doomed.h"
#include "cbfs/moved.h"
#include "cbfs/pack.h"
#include "cbfs/store.h"
#include "tap.h"

static const char *A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
static const char *C = "cccccccccccccccccccccccccccccccc";

static void extent(CbfsMovedMap *m, uint64_t old_off, uint64_t len, const char *to,
                   uint64_t new_off)
{
    CbfsExtent *e;
    m->ext = realloc(m->ext, (m->n + 1) * sizeof(CbfsExtent));
    e = &m->ext[m->n++];
    e->old_off = old_off;
    e->len = len;
    e->new_off = new_off;
    snprintf(e->new_pack, sizeof(e->new_pack), "%s", to);
}

static void test_maps(CbfsStore *st)
{
    CbfsMovedMap m = {0}, back;
    CbfsError err;
    char to[CBFS_PACK_NAME_LEN + 1];
    uint64_t off;
    uint8_t *text;
    size_t len;
    char *key;

    snprintf(m.pack, sizeof(m.pack), "%s", A);
    extent(&m, 0, 100, B, 500);
    extent(&m, 300, 50, B, 600);
    cbfs_error_init(&err);
    is_int(cbfs_moved_store(st, &m, &err), 0, "a map is stored");
    is_int(cbfs_moved_store(st, &m, &err), 0, "storing the same map again is fine (a retried gc)");
    is_int(cbfs_moved_read(st, A, &back, &err), 0, "and read back");
    ok(back.n == 2 && back.ext[1].old_off == 300 && back.ext[1].new_off == 600 &&
           strcmp(back.ext[0].new_pack, B) == 0,
       "with its extents");
    ok(cbfs_moved_find(&back, 10, 20) == &back.ext[0], "a range inside the first extent");
    ok(cbfs_moved_find(&back, 90, 20) == NULL, "a range past an extent's end is not covered");
    ok(cbfs_moved_find(&back, 150, 10) == NULL, "a range between extents is not covered");
    ok(cbfs_moved_find(&back, 300, 50) == &back.ext[1], "exactly the second extent");
    cbfs_moved_release(&back);
    is_int(cbfs_moved_resolve(st, A, 320, 10, to, &off, &err), 0, "resolve 320+10");
    ok(strcmp(to, B) == 0 && off == 620, "... is at %s offset %llu", to, (unsigned long long) off);
    is_int(cbfs_moved_resolve(st, A, 200, 10, to, &off, &err), -ERANGE,
           "a range the map does not cover");
    is_str(err.msg,
           "relocation map \"moved/aa/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" does not hold offset 200 "
           "(10 bytes)",
           "... names the map");
    cbfs_error_init(&err);
    is_int(cbfs_moved_resolve(st, C, 0, 1, to, &off, &err), -ENOENT, "no map: -ENOENT");

    /* a different map under the same name is a conflict */
    m.ext[0].new_off = 501;
    is_int(cbfs_moved_store(st, &m, &err), -EEXIST, "a different map under the same name");
    free(m.ext);

    /* damaged maps */
    key = cbfs_moved_key(A);
    is_int(cbfs_store_get(st, key, &text, &len, &err), 0, "the stored text");
    {
        const char *bad[] = {"x", "cbfs-moved 1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nend 0 00\n",
                             NULL};
        char *flipped = strndup((char *) text, len);
        flipped[strlen("cbfs-moved 1 ") + 33] = '7'; /* a digit of an offset */
        for (int i = 0; i < 3; i++) {
            CbfsStore *s2 = cbfs_store_mem_new();
            const char *t = i < 2 ? bad[i] : flipped;
            cbfs_store_put(s2, key, t, strlen(t), &err);
            cbfs_error_init(&err);
            is_int(cbfs_moved_read(s2, A, &back, &err), -EBADMSG, "damaged map %d refused", i);
            is_str(err.msg, "object \"moved/aa/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is damaged",
                   "... naming it");
            cbfs_store_free(s2);
        }
        free(flipped);
    }
    free(text);
    free(key);
}

/* len stored bytes at offset of pack name, read as one block (block.h). */
static int read_stored(CbfsStore *st, const char *name, uint64_t offset, uint32_t len, void *out,
                       CbfsError *err)
{
    CbfsBlockRef ref = {.offset = offset, .stored_len = len};
    snprintf(ref.pack, sizeof(ref.pack), "%s", name);
    return cbfs_block_read_stored(st, &ref, 1, out, NULL, err);
}

/* A pack E whose blocks moved to F, then from F to G: a read follows.  (Names
 * of their own: maps are cached per process by pack name.) */
static void test_read_through(void)
{
    CbfsStore *st = cbfs_store_mem_new();
    CbfsMovedMap c = {0}, a = {0};
    const char *E = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", *F = "ffffffffffffffffffffffffffffffff",
               *G = "11111111111111111111111111111111";
    CbfsError err;
    char buf[16], *bkey = cbfs_pack_key(G);

    cbfs_error_init(&err);
    /* B holds "0123456789" at offset 40 */
    {
        char data[64];
        memset(data, '.', sizeof(data));
        memcpy(data + 40, "0123456789", 10);
        cbfs_store_put(st, bkey, data, sizeof(data), &err);
    }
    snprintf(c.pack, sizeof(c.pack), "%s", E);
    extent(&c, 1000, 10, F, 20);
    snprintf(a.pack, sizeof(a.pack), "%s", F);
    extent(&a, 20, 10, G, 40);
    cbfs_moved_store(st, &c, &err);
    cbfs_moved_store(st, &a, &err);
    memset(buf, 0, sizeof(buf));
    is_int(read_stored(st, E, 1002, 5, buf, &err), 0, "a block of a pack moved twice");
    is_str(buf, "23456", "... reads the bytes where they are now");
    is_int(read_stored(st, E, 5, 5, buf, &err), -ERANGE, "a block the map does not hold");
    cbfs_error_init(&err);
    is_int(read_stored(st, "dddddddddddddddddddddddddddddddd", 0, 5, buf, &err), -ENOENT,
           "a missing pack without a map");
    is_str(err.msg, "pack \"packs/dd/dddddddddddddddddddddddddddddddd.pack\" is missing",
           "... is missing, by name");
    free(c.ext);
    free(a.ext);
    free(bkey);
    cbfs_store_free(st);
}

static void test_plans(void)
{
    CbfsRepo r = {0};
    CbfsDoomed d1 = {0}, d2 = {0};
    CbfsError err;
    char *k1, *k2, **packs;
    size_t n;

    r.store = cbfs_store_mem_new();
    r.display = "mem";
    cbfs_error_init(&err);
    is_int(cbfs_doomed_packs(&r, &packs, &n, &err), 0, "no plans");
    is_int((int) n, 0, "... no packs to avoid");
    free(packs);
    cbfs_doomed_add(&d1.packs, &d1.npacks, B);
    cbfs_doomed_add(&d1.packs, &d1.npacks, A);
    cbfs_doomed_add(&d1.manifests, &d1.nmanifests, "backups/x.1.db");
    cbfs_doomed_add(&d2.packs, &d2.npacks, A);
    cbfs_doomed_add(&d2.packs, &d2.npacks, C);
    cbfs_doomed_add(&d2.moved, &d2.nmoved, C);
    is_int(cbfs_doomed_store(&r, &d1, &k1, &err), 0, "a plan is stored");
    is_int(cbfs_doomed_store(&r, &d2, &k2, &err), 0, "a second plan");
    ok(strncmp(k1, "gc/", 3) == 0 && strcmp(k1, k2) != 0, "under gc/, distinct: %s %s", k1, k2);
    is_int(cbfs_doomed_packs(&r, &packs, &n, &err), 0, "the packs to avoid");
    ok(n == 3 && strcmp(packs[0], A) == 0 && strcmp(packs[1], B) == 0 && strcmp(packs[2], C) == 0,
       "... the sorted union of both plans");
    for (size_t i = 0; i < n; i++)
        free(packs[i]);
    free(packs);
    /* a plan cut short (no end line) is refused: a backup must not go on without it */
    cbfs_store_remove(r.store, k2, &err);
    cbfs_store_put(r.store, k2, "cbfs-doomed 1\npack aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", 48, &err);
    cbfs_error_init(&err);
    is_int(cbfs_doomed_packs(&r, &packs, &n, &err), -EBADMSG, "a damaged plan");
    ok(strstr(err.msg, k2) != NULL, "... is named: %s", err.msg);
    free(k1);
    free(k2);
    cbfs_doomed_release(&d1);
    cbfs_doomed_release(&d2);
    cbfs_store_free(r.store);
}

int main(void)
{
    CbfsStore *st = cbfs_store_mem_new();
    test_maps(st);
    cbfs_store_free(st);
    test_read_through();
    test_plans();
    return done_testing();
}
