/*
 * test-pack.c - unit tests for lib/pack.c: writing a pack into the
 * in-memory store, reading its trailer index and its blocks back, and
 * rejecting damaged, truncated and missing packs with a message that names
 * the pack; encrypted packs: sealed index bound to the pack's name, sealed
 * blocks that still read when copied verbatim into another pack (gc).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cbfs/block.h"
#include "cbfs/codec.h"
#include "cbfs/crypt.h"
#include "cbfs/kv.h"
#include "cbfs/pack.h"
#include "cbfs/store.h"
#include "tap.h"
#include "testkeys.h"

#define NBLOCKS 300 /* more than the writer's first allocation of entries */
#define BLOCK   8192

typedef struct Block {
    uint8_t *raw;
    uint32_t raw_len;
    uint8_t id[CBFS_BLOCK_ID_LEN];
    uint64_t offset;
    uint32_t stored_len;
} Block;

static Block blocks[NBLOCKS];

/* One block of pack name, read as every reader reads it (block.h). */
static int read_block(CbfsStore *st, CbfsCodec *c, const char *name, uint64_t offset,
                      uint32_t stored_len, uint32_t raw_len, const uint8_t id[CBFS_BLOCK_ID_LEN],
                      void *out, CbfsError *err)
{
    CbfsBlockRef ref = {.offset = offset, .stored_len = stored_len, .raw_len = raw_len};
    snprintf(ref.pack, sizeof(ref.pack), "%s", name);
    memcpy(ref.id, id, CBFS_BLOCK_ID_LEN);
    return cbfs_block_read(st, c, &ref, out, err);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static int count_key(const char *key, uint64_t size, void *ctx)
{
    (void) key;
    (void) size;
    (*(int *) ctx)++;
    return 0;
}

static int count_keys(CbfsStore *st)
{
    int n = 0;
    cbfs_store_list(st, "", count_key, &n, NULL);
    return n;
}

/* Block i: compressible, random, short or empty-ish, so the pack holds both
 * stored forms and many lengths. */
static void make_blocks(void)
{
    for (int i = 0; i < NBLOCKS; i++) {
        Block *b = &blocks[i];
        b->raw_len = (i % 7 == 0) ? (uint32_t) (1 + i) : BLOCK;
        b->raw = malloc(b->raw_len);
        if (i % 3 == 0) {
            cbfs_random_bytes(b->raw, b->raw_len);
        } else {
            for (uint32_t k = 0; k < b->raw_len; k++)
                b->raw[k] = (uint8_t) ((k / 64) * (i + 1));
        }
        cbfs_block_id(b->raw, b->raw_len, b->id);
    }
}

/* Write all blocks into a new pack; returns the writer (not finished). */
static CbfsPackWriter *fill_pack(CbfsCodec *c)
{
    CbfsPackWriter *w = cbfs_pack_writer_new();
    uint8_t *stored = malloc(cbfs_codec_bound(BLOCK));
    uint64_t expect_off = 0;
    int offsets_ok = 1, sizes_ok = 1;

    for (int i = 0; i < NBLOCKS; i++) {
        Block *b = &blocks[i];
        size_t n = cbfs_codec_encode(c, b->id, b->raw, b->raw_len, stored, cbfs_codec_bound(BLOCK));
        b->stored_len = (uint32_t) n;
        b->offset = cbfs_pack_writer_append(w, b->id, stored, b->stored_len, b->raw_len);
        if (b->offset != expect_off)
            offsets_ok = 0;
        expect_off += n;
        if (cbfs_pack_writer_size(w) != expect_off || cbfs_pack_writer_count(w) != (size_t) i + 1)
            sizes_ok = 0;
    }
    ok(offsets_ok, "append returns each block's offset, back to back");
    ok(sizes_ok, "writer size and count follow the appends");
    free(stored);
    return w;
}

/* ---- names and keys ---- */

static void test_names(void)
{
    static const char *const bad[] = {
        "",
        "0123456789abcdef0123456789abcde",   /* 31 */
        "0123456789abcdef0123456789abcdef0", /* 33 */
        "0123456789ABCDEF0123456789abcdef",  /* uppercase */
        "0123456789abcdef0123456789abcdeg",
        "0123456789abcdef/123456789abcdef",
        "../../../../../../../../etc/pass",
        "0123456789abcdef0123456789abcde ",
    };
    CbfsPackWriter *w1 = cbfs_pack_writer_new(), *w2 = cbfs_pack_writer_new();
    char *key;

    ok(cbfs_pack_name_valid("0123456789abcdef0123456789abcdef"), "32 lowercase hex is valid");
    ok(cbfs_pack_name_valid("ffffffffffffffffffffffffffffffff"), "all f is valid");
    for (size_t i = 0; i < CBFS_ARRAY_LEN(bad); i++)
        ok(!cbfs_pack_name_valid(bad[i]), "\"%s\" is not a pack name", bad[i]);

    ok(cbfs_pack_name_valid(cbfs_pack_writer_name(w1)), "a new writer's name \"%s\" is valid",
       cbfs_pack_writer_name(w1));
    ok(strcmp(cbfs_pack_writer_name(w1), cbfs_pack_writer_name(w2)) != 0,
       "two writers get different names");
    is_int(cbfs_pack_writer_size(w1), 0, "a new writer is empty");
    is_int(cbfs_pack_writer_count(w1), 0, "a new writer holds no block");

    key = cbfs_pack_key("0123456789abcdef0123456789abcdef");
    is_str(key, "packs/01/0123456789abcdef0123456789abcdef.pack", "pack key format");
    free(key);
    key = cbfs_pack_key("fe23456789abcdef0123456789abcdef");
    is_str(key, "packs/fe/fe23456789abcdef0123456789abcdef.pack", "folder is the first two digits");
    ok(cbfs_store_key_valid(key), "a pack key is a valid store key");
    free(key);
    cbfs_pack_writer_free(w1);
    cbfs_pack_writer_free(w2);
    cbfs_pack_writer_free(NULL);
}

/* ---- write, index, read ---- */

static void test_empty(void)
{
    CbfsStore *st = cbfs_store_mem_new();
    CbfsPackWriter *w = cbfs_pack_writer_new();
    CbfsError err;

    cbfs_error_init(&err);
    is_int(cbfs_pack_writer_finish(w, st, NULL, &err), 0, "finishing an empty pack succeeds");
    is_int(count_keys(st), 0, "an empty pack is not stored");
    cbfs_pack_writer_free(w);
    cbfs_store_free(st);
}

/* Store a copy of pack bytes under a new name; returns the name (static). */
static const char *put_copy(CbfsStore *st, const uint8_t *data, size_t len)
{
    static char names[64][CBFS_PACK_NAME_LEN + 1];
    static int next;
    char *name = names[next++ % 64];
    char *key;
    uint8_t rnd[CBFS_PACK_NAME_LEN / 2];

    cbfs_random_bytes(rnd, sizeof(rnd));
    cbfs_hex_encode(rnd, sizeof(rnd), name);
    key = cbfs_pack_key(name);
    if (cbfs_store_put(st, key, data, len, NULL) != 0)
        printf("# could not store a copy as \"%s\"\n", key);
    free(key);
    return name;
}

/* read_index must fail with -EBADMSG, CBFS_EXIT_CORRUPT, naming the pack. */
static void check_bad_index(CbfsStore *st, const char *name, const char *what)
{
    CbfsPackEntry *entries = NULL;
    size_t n = 12345;
    CbfsError err;
    char *key = cbfs_pack_key(name);

    int rc;

    cbfs_error_init(&err);
    rc = cbfs_pack_read_index(st, NULL, name, &entries, &n, &err);
    is_int(rc, -EBADMSG, "%s: -EBADMSG", what);
    is_int(err.code, CBFS_EXIT_CORRUPT, "%s: CBFS_EXIT_CORRUPT", what);
    ok(strstr(err.msg, key) != NULL, "%s: message \"%s\" names the pack", what, err.msg);
    if (rc == 0)
        free(entries);
    free(key);
}

static void test_pack(void)
{
    CbfsStore *st = cbfs_store_mem_new();
    CbfsCodec *c = cbfs_codec_new(3);
    CbfsPackWriter *w;
    CbfsPackEntry *entries = NULL;
    CbfsError err;
    char name[CBFS_PACK_NAME_LEN + 1], *key;
    uint8_t *data = NULL, *out = malloc(BLOCK), *copy;
    size_t n = 0, len = 0, data_len;
    uint64_t size = 0;
    int bad, raw_blocks = 0;

    w = fill_pack(c);
    snprintf(name, sizeof(name), "%s", cbfs_pack_writer_name(w));
    data_len = cbfs_pack_writer_size(w);
    for (int i = 0; i < NBLOCKS; i++)
        raw_blocks += blocks[i].stored_len == blocks[i].raw_len;
    ok(raw_blocks > 0 && raw_blocks < NBLOCKS, "the pack mixes raw (%d) and compressed blocks",
       raw_blocks);

    cbfs_error_init(&err);
    is_int(cbfs_pack_writer_finish(w, st, NULL, &err), 0, "finish stores the pack");
    is_str(err.msg, "", "no error message");
    cbfs_pack_writer_free(w);
    is_int(count_keys(st), 1, "the store holds one object");
    key = cbfs_pack_key(name);
    is_int(cbfs_store_stat(st, key, &size, NULL), 0, "stored as \"%s\"", key);
    is_int(size, data_len + NBLOCKS * CBFS_PACK_ENTRY_LEN + CBFS_PACK_TRAILER_LEN,
           "size is blocks + index + trailer");
    is_int(cbfs_store_get(st, key, &data, &len, NULL), 0, "the pack can be read whole");
    ok(memcmp(data + len - CBFS_PACK_TRAILER_LEN, "CBFSPK01", 8) == 0, "trailer magic");
    ok(data[len - CBFS_PACK_TRAILER_LEN + 8] == NBLOCKS % 256 &&
           data[len - CBFS_PACK_TRAILER_LEN + 9] == NBLOCKS / 256,
       "trailer count, little-endian");

    /* the index */
    is_int(cbfs_pack_read_index(st, NULL, name, &entries, &n, &err), 0, "read the index back");
    is_int(n, NBLOCKS, "index has every block");
    bad = 0;
    for (size_t i = 0; i < n && i < NBLOCKS; i++) {
        if (memcmp(entries[i].id, blocks[i].id, CBFS_BLOCK_ID_LEN) != 0 ||
            entries[i].offset != blocks[i].offset ||
            entries[i].stored_len != blocks[i].stored_len ||
            entries[i].raw_len != blocks[i].raw_len)
            bad++;
    }
    is_int(bad, 0, "every index entry matches its block, in order");
    free(entries);

    /* the same with the size known from a listing; any other size is a damaged index */
    entries = NULL;
    is_int(cbfs_pack_read_index_sized(st, NULL, name, size, &entries, &n, &err), 0,
           "read_index_sized with the object's size");
    is_int(n, NBLOCKS, "read_index_sized: every block");
    free(entries);
    for (int d = -1; d <= 1; d += 2) {
        entries = NULL;
        cbfs_error_init(&err);
        is_int(cbfs_pack_read_index_sized(st, NULL, name, size + (uint64_t) d, &entries, &n, &err),
               -EBADMSG, "read_index_sized with size %+d: -EBADMSG", d);
        ok(strstr(err.msg, key) != NULL, "read_index_sized with size %+d: \"%s\"", d, err.msg);
    }
    cbfs_error_init(&err);
    entries = NULL;

    /* every block */
    bad = 0;
    for (int i = 0; i < NBLOCKS; i++) {
        Block *b = &blocks[i];
        memset(out, 0, BLOCK);
        if (read_block(st, c, name, b->offset, b->stored_len, b->raw_len, b->id, out, &err) != 0 ||
            memcmp(out, b->raw, b->raw_len) != 0)
            bad++;
    }
    is_int(bad, 0, "every block reads back verified (%d blocks)", NBLOCKS);

    /* a block read with the wrong id, or at the wrong offset */
    {
        Block *b = &blocks[5], *o = &blocks[4];
        char *want = cbfs_xasprintf("pack \"%s\" offset %llu", key, (unsigned long long) b->offset);
        cbfs_error_init(&err);
        is_int(read_block(st, c, name, b->offset, b->stored_len, b->raw_len, o->id, out, &err),
               -EBADMSG, "wrong id: -EBADMSG");
        is_int(err.code, CBFS_EXIT_CORRUPT, "wrong id: CBFS_EXIT_CORRUPT");
        ok(strstr(err.msg, want) == err.msg, "wrong id: message \"%s\" starts with \"%s\"", err.msg,
           want);
        ok(strstr(err.msg, "is corrupt") != NULL, "wrong id: message says corrupt");
        free(want);
    }

    /* a damaged block: the index still reads, the block does not */
    copy = malloc(len);
    {
        Block *b = &blocks[10];
        const char *cname;
        char *ckey, *want;
        memcpy(copy, data, len);
        copy[b->offset + b->stored_len / 2] ^= 0x10;
        cname = put_copy(st, copy, len);
        ckey = cbfs_pack_key(cname);
        is_int(cbfs_pack_read_index(st, NULL, cname, &entries, &n, &err), 0,
               "a damaged block leaves the index readable");
        free(entries);
        cbfs_error_init(&err);
        is_int(read_block(st, c, cname, b->offset, b->stored_len, b->raw_len, b->id, out, &err),
               -EBADMSG, "damaged block: -EBADMSG");
        is_int(err.code, CBFS_EXIT_CORRUPT, "damaged block: CBFS_EXIT_CORRUPT");
        want = cbfs_xasprintf("pack \"%s\" offset %llu", ckey, (unsigned long long) b->offset);
        ok(strstr(err.msg, want) != NULL, "damaged block: message \"%s\" names pack and offset",
           err.msg);
        free(want);
        is_int(read_block(st, c, cname, blocks[11].offset, blocks[11].stored_len,
                          blocks[11].raw_len, blocks[11].id, out, &err),
               0, "the next block of that pack is fine");
        free(ckey);
    }

    /* damaged trailer and index */
    {
        static const struct {
            size_t from_end; /* byte position counted from the end of the pack */
            const char *what;
        } flips[] = {
            {56, "trailer magic"},
            {49, "trailer magic, last byte"},
            {48, "trailer count"},
            {45, "trailer count, high byte"},
            {40, "trailer index offset"},
            {33, "trailer index offset, high byte"},
            {32, "trailer index checksum"},
            {1, "trailer index checksum, last byte"},
            {57, "index, last entry"},
            {56 + NBLOCKS * CBFS_PACK_ENTRY_LEN, "index, first entry id"},
            {56 + NBLOCKS * CBFS_PACK_ENTRY_LEN - 32, "index, first entry offset"},
            {56 + NBLOCKS * CBFS_PACK_ENTRY_LEN - 40, "index, first entry stored_len"},
            {56 + NBLOCKS * CBFS_PACK_ENTRY_LEN - 44, "index, first entry raw_len"},
        };
        for (size_t i = 0; i < CBFS_ARRAY_LEN(flips); i++) {
            memcpy(copy, data, len);
            copy[len - flips[i].from_end] ^= 0x04;
            check_bad_index(st, put_copy(st, copy, len), flips[i].what);
        }
    }

    /* truncated packs */
    check_bad_index(st, put_copy(st, data, len - 1), "pack missing its last byte");
    check_bad_index(st, put_copy(st, data, CBFS_PACK_TRAILER_LEN - 1),
                    "pack shorter than a trailer");
    check_bad_index(st, put_copy(st, data, 0), "empty object");
    check_bad_index(st, put_copy(st, data + 1, len - 1), "pack missing its first byte");
    {
        /* cut inside the block data: a block beyond the cut is reported truncated */
        Block *b = &blocks[NBLOCKS - 1];
        const char *cname = put_copy(st, data, b->offset + b->stored_len / 2);
        char *ckey = cbfs_pack_key(cname), *want;
        cbfs_error_init(&err);
        is_int(read_block(st, c, cname, b->offset, b->stored_len, b->raw_len, b->id, out, &err),
               -EBADMSG, "truncated pack: block read is -EBADMSG");
        is_int(err.code, CBFS_EXIT_CORRUPT, "truncated pack: CBFS_EXIT_CORRUPT");
        want = cbfs_xasprintf("pack \"%s\" is truncated at offset %llu", ckey,
                              (unsigned long long) b->offset);
        is_str(err.msg, want, "truncated pack: message");
        free(want);
        free(ckey);
    }

    /* a missing pack */
    {
        const char *gone = "00000000000000000000000000000000";
        char *gkey = cbfs_pack_key(gone);
        cbfs_error_init(&err);
        entries = NULL;
        is_int(cbfs_pack_read_index(st, NULL, gone, &entries, &n, &err), -ENOENT,
               "index of a missing pack: -ENOENT");
        is_int(err.code, 0, "index of a missing pack: no error set");
        cbfs_error_init(&err);
        ok(read_block(st, c, gone, 0, blocks[0].stored_len, blocks[0].raw_len, blocks[0].id, out,
                      &err) < 0,
           "block of a missing pack: an error");
        is_int(err.code, CBFS_EXIT_CORRUPT, "block of a missing pack: CBFS_EXIT_CORRUPT");
        ok(strstr(err.msg, gkey) != NULL, "block of a missing pack: message \"%s\" names it",
           err.msg);
        free(gkey);
    }

    free(copy);
    free(data);
    free(out);
    free(key);
    cbfs_codec_free(c);
    cbfs_store_free(st);
}

/* A pack whose index is self-consistent (its checksum matches) but whose
 * entries point outside the block data must be rejected, also when
 * offset + stored_len overflows 64 bits. */
static void test_crafted_index(void)
{
    CbfsStore *st = cbfs_store_mem_new();
    static const struct {
        uint64_t offset;
        uint32_t stored_len;
        const char *what;
    } cases[] = {
        {0, 101, "an entry one byte past the block data"},
        {100, 1, "an entry starting at the index"},
        {UINT64_MAX - 9, 20, "an entry whose end overflows 64 bits"},
        {UINT64_MAX, 1, "an entry at offset 2^64-1"},
    };

    for (size_t i = 0; i < CBFS_ARRAY_LEN(cases); i++) {
        uint8_t pack[100 + CBFS_PACK_ENTRY_LEN + CBFS_PACK_TRAILER_LEN];
        uint8_t *e = pack + 100, *t = e + CBFS_PACK_ENTRY_LEN;

        memset(pack, 0x33, 100);
        cbfs_block_id(pack, 20, e);
        put_le64(e + 32, cases[i].offset);
        put_le32(e + 40, cases[i].stored_len);
        put_le32(e + 44, cases[i].stored_len);
        memcpy(t, "CBFSPK01", 8);
        put_le32(t + 8, 1);
        put_le32(t + 12, 0);
        put_le64(t + 16, 100);
        cbfs_sha256(e, CBFS_PACK_ENTRY_LEN, t + 24);
        check_bad_index(st, put_copy(st, pack, sizeof(pack)), cases[i].what);
    }
    {
        /* the same layout with a sane entry is accepted: the cases above fail
         * only for their entry */
        uint8_t pack[100 + CBFS_PACK_ENTRY_LEN + CBFS_PACK_TRAILER_LEN];
        uint8_t *e = pack + 100, *t = e + CBFS_PACK_ENTRY_LEN;
        CbfsPackEntry *entries = NULL;
        size_t n = 0;
        CbfsError err;

        memset(pack, 0x33, 100);
        cbfs_block_id(pack, 20, e);
        put_le64(e + 32, 80);
        put_le32(e + 40, 20);
        put_le32(e + 44, 20);
        memcpy(t, "CBFSPK01", 8);
        put_le32(t + 8, 1);
        put_le32(t + 12, 0);
        put_le64(t + 16, 100);
        cbfs_sha256(e, CBFS_PACK_ENTRY_LEN, t + 24);
        cbfs_error_init(&err);
        is_int(cbfs_pack_read_index(st, NULL, put_copy(st, pack, sizeof(pack)), &entries, &n, &err),
               0, "a hand-built pack with a sane entry is accepted");
        is_int(n, 1, "and has one entry");
        ok(entries && entries[0].offset == 80 && entries[0].stored_len == 20,
           "with its offset and length");
        free(entries);
    }
    cbfs_store_free(st);
}

/* A trailer whose count is huge and whose index offset wraps around so that
 * offset + index length + trailer == size.  Reading it must be -EBADMSG,
 * not an attempt to allocate count * 48 bytes (here 206 GB).  Run in a
 * child with its address space limited, so a failure cannot hurt the host;
 * skipped under ASan, which cannot run with such a limit. */
static void test_huge_count(void)
{
#if defined(__SANITIZE_ADDRESS__)
    ok(1, "# SKIP huge trailer count: cannot limit the address space under ASan");
#else
    CbfsStore *st = cbfs_store_mem_new();
    uint8_t pack[100 + CBFS_PACK_TRAILER_LEN], *t = pack + 100;
    uint64_t index_len = (uint64_t) UINT32_MAX * CBFS_PACK_ENTRY_LEN;
    const char *name;
    pid_t pid;
    int status = 0;

    memset(pack, 0x33, sizeof(pack));
    memcpy(t, "CBFSPK01", 8);
    put_le32(t + 8, UINT32_MAX);
    put_le32(t + 12, 0);
    put_le64(t + 16, (uint64_t) sizeof(pack) - CBFS_PACK_TRAILER_LEN - index_len);
    name = put_copy(st, pack, sizeof(pack));
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        struct rlimit lim = {1u << 30, 1u << 30};
        CbfsPackEntry *entries = NULL;
        size_t n = 0;
        CbfsError err;
        int rc;

        setrlimit(RLIMIT_AS, &lim);
        cbfs_error_init(&err);
        rc = cbfs_pack_read_index(st, NULL, name, &entries, &n, &err);
        _exit(rc == -EBADMSG && err.code == CBFS_EXIT_CORRUPT ? 0 : 1);
    }
    ok(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "a trailer with count 2^32-1 and a wrapped index offset is -EBADMSG (child %s %d)",
       WIFSIGNALED(status) ? "killed by signal" : "exited with",
       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    cbfs_store_free(st);
#endif
}

/* ---- encrypted packs ---- */

/* read_index with crypt must fail with -EBADMSG naming the pack. */
static void check_bad_sealed_index(CbfsStore *st, CbfsCrypt *crypt, const char *name,
                                   const char *what)
{
    CbfsPackEntry *entries = NULL;
    size_t n = 0;
    CbfsError err;
    char *key = cbfs_pack_key(name), *want = cbfs_xasprintf("pack \"%s\" has a damaged index", key);
    int rc;

    cbfs_error_init(&err);
    rc = cbfs_pack_read_index(st, crypt, name, &entries, &n, &err);
    is_int(rc, -EBADMSG, "%s: -EBADMSG", what);
    is_str(err.msg, want, "%s: message", what);
    if (rc == 0)
        free(entries);
    free(want);
    free(key);
}

static void test_encrypted_pack(void)
{
    static const char marker[] = "MARKER-in-a-pack";
    CbfsStore *st = cbfs_store_mem_new();
    CbfsCrypt *crypt = test_crypt(), *other = test_crypt();
    CbfsCodec *c = cbfs_codec_new(3);
    CbfsPackWriter *w = cbfs_pack_writer_new(), *w2;
    CbfsPackEntry *entries = NULL;
    CbfsError err;
    Block eb[40];
    uint8_t *stored = malloc(cbfs_codec_bound(BLOCK)), *out = malloc(BLOCK), *data = NULL, *copy;
    char name[CBFS_PACK_NAME_LEN + 1], name2[CBFS_PACK_NAME_LEN + 1], *key, *key2;
    size_t n = 0, len = 0, data_len;
    uint64_t size = 0;
    int bad = 0;

    cbfs_codec_set_crypt(c, crypt);
    snprintf(name, sizeof(name), "%s", cbfs_pack_writer_name(w));
    for (int i = 0; i < 40; i++) {
        Block *b = &eb[i];
        size_t sn;
        b->raw_len = i % 5 == 0 ? 100 + (uint32_t) i : BLOCK;
        b->raw = malloc(b->raw_len);
        if (i % 3 == 0)
            cbfs_random_bytes(b->raw, b->raw_len);
        else
            for (uint32_t k = 0; k < b->raw_len; k++)
                b->raw[k] = (uint8_t) marker[(k + (uint32_t) i) % (sizeof(marker) - 1)];
        cbfs_codec_block_id(c, b->raw, b->raw_len, b->id);
        sn = cbfs_codec_encode(c, b->id, b->raw, b->raw_len, stored, cbfs_codec_bound(BLOCK));
        b->stored_len = (uint32_t) sn;
        b->offset = cbfs_pack_writer_append(w, b->id, stored, b->stored_len, b->raw_len);
    }
    data_len = cbfs_pack_writer_size(w);
    cbfs_error_init(&err);
    is_int(cbfs_pack_writer_finish(w, st, crypt, &err), 0, "an encrypted pack is stored");
    cbfs_pack_writer_free(w);
    key = cbfs_pack_key(name);
    cbfs_store_stat(st, key, &size, NULL);
    is_int(size, data_len + 40 * CBFS_PACK_ENTRY_LEN + CBFS_CRYPT_OVERHEAD + CBFS_PACK_TRAILER_LEN,
           "size is blocks + sealed index (nonce and tag more) + trailer");
    cbfs_store_get(st, key, &data, &len, NULL);
    ok(memcmp(data + len - CBFS_PACK_TRAILER_LEN, "CBFSPKE1", 8) == 0, "trailer magic CBFSPKE1");
    ok(memmem(data, len, "MARKER", 6) == NULL, "no plaintext of the blocks in the pack");
    ok(memmem(data, len, eb[1].id, CBFS_BLOCK_ID_LEN) == NULL,
       "no block id in the pack either (the index is sealed)");

    is_int(cbfs_pack_read_index(st, crypt, name, &entries, &n, &err), 0, "read the sealed index");
    is_int(n, 40, "every entry");
    for (size_t i = 0; i < n && i < 40; i++)
        if (memcmp(entries[i].id, eb[i].id, CBFS_BLOCK_ID_LEN) != 0 ||
            entries[i].offset != eb[i].offset || entries[i].stored_len != eb[i].stored_len ||
            entries[i].raw_len != eb[i].raw_len)
            bad++;
    is_int(bad, 0, "every entry matches its block");
    free(entries);
    entries = NULL;
    is_int(cbfs_pack_read_index_sized(st, crypt, name, size, &entries, &n, &err), 0,
           "read_index_sized with the crypt");
    free(entries);
    bad = 0;
    for (int i = 0; i < 40; i++)
        if (read_block(st, c, name, eb[i].offset, eb[i].stored_len, eb[i].raw_len, eb[i].id, out,
                       &err) != 0 ||
            memcmp(out, eb[i].raw, eb[i].raw_len) != 0)
            bad++;
    is_int(bad, 0, "every block reads back");
    is_str(err.msg, "", "no error so far");

    check_bad_sealed_index(st, NULL, name, "an encrypted pack read without the key");
    check_bad_sealed_index(st, other, name, "an encrypted pack read with another key");
    {
        /* a plain pack in an encrypted repository */
        CbfsCodec *pc = cbfs_codec_new(3);
        CbfsPackWriter *pw = cbfs_pack_writer_new();
        char pname[CBFS_PACK_NAME_LEN + 1];
        size_t pn = cbfs_codec_encode(pc, eb[1].id, eb[1].raw, eb[1].raw_len, stored,
                                      cbfs_codec_bound(BLOCK));
        snprintf(pname, sizeof(pname), "%s", cbfs_pack_writer_name(pw));
        cbfs_pack_writer_append(pw, eb[1].id, stored, (uint32_t) pn, eb[1].raw_len);
        cbfs_pack_writer_finish(pw, st, NULL, &err);
        check_bad_sealed_index(st, crypt, pname, "a plain pack read with the key");
        cbfs_pack_writer_free(pw);
        cbfs_codec_free(pc);
    }

    copy = malloc(len);
    /* the same bytes under another name: the index names its pack */
    check_bad_sealed_index(st, crypt, put_copy(st, data, len), "a pack copied to another name");
    /* a flipped byte in the sealed index, in the trailer */
    {
        static const struct {
            size_t from_end;
            const char *what;
        } flips[] = {
            {CBFS_PACK_TRAILER_LEN + 1, "sealed index, last byte (tag)"},
            {CBFS_PACK_TRAILER_LEN + 40 * CBFS_PACK_ENTRY_LEN / 2, "sealed index, middle"},
            {CBFS_PACK_TRAILER_LEN + 40 * CBFS_PACK_ENTRY_LEN + CBFS_CRYPT_OVERHEAD,
             "sealed index, first byte (nonce)"},
            {CBFS_PACK_TRAILER_LEN - 8, "trailer count"},
            {1, "trailer checksum"},
        };
        for (size_t i = 0; i < CBFS_ARRAY_LEN(flips); i++) {
            memcpy(copy, data, len);
            copy[len - flips[i].from_end] ^= 0x10;
            check_bad_sealed_index(st, crypt, put_copy(st, copy, len), flips[i].what);
        }
    }
    /* a flipped byte in a block: the index reads, the block fails naming pack and offset */
    {
        Block *b = &eb[7];
        const char *cname;
        char *ckey, *want;
        memcpy(copy, data, len);
        copy[b->offset + b->stored_len / 2] ^= 0x01;
        cname = put_copy(st, copy, len);
        ckey = cbfs_pack_key(cname);
        cbfs_error_init(&err);
        is_int(read_block(st, c, cname, b->offset, b->stored_len, b->raw_len, b->id, out, &err),
               -EBADMSG, "a flipped byte in an encrypted block: -EBADMSG");
        want =
            cbfs_xasprintf("pack \"%s\" offset %llu: block ", ckey, (unsigned long long) b->offset);
        ok(strncmp(err.msg, want, strlen(want)) == 0 &&
               strstr(err.msg, "is corrupt: authentication failed") != NULL,
           "message \"%s\"", err.msg);
        is_int(err.code, CBFS_EXIT_CORRUPT, "CBFS_EXIT_CORRUPT");
        free(want);
        free(ckey);
    }
    /* two blocks swapped in place (same length): each fails, neither reads as the other */
    {
        Block *x = &eb[2], *y = &eb[4];
        memcpy(copy, data, len);
        if (x->stored_len == y->stored_len) {
            memcpy(copy + x->offset, data + y->offset, y->stored_len);
            memcpy(copy + y->offset, data + x->offset, x->stored_len);
        }
        {
            const char *cname = put_copy(st, copy, len);
            ok(x->stored_len == y->stored_len, "two blocks of one stored length (%u)",
               x->stored_len);
            ok(read_block(st, c, cname, x->offset, x->stored_len, x->raw_len, x->id, out, &err) ==
                       -EBADMSG &&
                   read_block(st, c, cname, y->offset, y->stored_len, y->raw_len, y->id, out,
                              &err) == -EBADMSG,
               "blocks swapped within a pack both fail");
        }
    }

    /* gc's repacking: stored blocks copied verbatim into a new pack still read */
    w2 = cbfs_pack_writer_new();
    snprintf(name2, sizeof(name2), "%s", cbfs_pack_writer_name(w2));
    for (int i = 39; i >= 20; i--) {
        Block *b = &eb[i];
        b->offset = cbfs_pack_writer_append(w2, b->id, data + b->offset, b->stored_len, b->raw_len);
    }
    cbfs_error_init(&err);
    is_int(cbfs_pack_writer_finish(w2, st, crypt, &err), 0, "a repacked pack is stored");
    cbfs_pack_writer_free(w2);
    key2 = cbfs_pack_key(name2);
    entries = NULL;
    is_int(cbfs_pack_read_index(st, crypt, name2, &entries, &n, &err), 0, "its index reads");
    is_int(n, 20, "with the 20 blocks copied");
    free(entries);
    bad = 0;
    for (int i = 20; i < 40; i++)
        if (read_block(st, c, name2, eb[i].offset, eb[i].stored_len, eb[i].raw_len, eb[i].id, out,
                       &err) != 0 ||
            memcmp(out, eb[i].raw, eb[i].raw_len) != 0)
            bad++;
    is_int(bad, 0, "every copied block reads back at its new offset");

    for (int i = 0; i < 40; i++)
        free(eb[i].raw);
    free(copy);
    free(data);
    free(stored);
    free(out);
    free(key);
    free(key2);
    cbfs_codec_free(c);
    cbfs_crypt_free(crypt);
    cbfs_crypt_free(other);
    cbfs_store_free(st);
}

int main(void)
{
    make_blocks();
    test_names();
    test_empty();
    test_pack();
    test_crafted_index();
    test_huge_count();
    test_encrypted_pack();
    for (int i = 0; i < NBLOCKS; i++)
        free(blocks[i].raw);
    return done_testing();
}
