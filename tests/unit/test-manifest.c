/*
 * test-manifest.c - unit tests for lib/manifest.c: creating a manifest,
 * reading it back read-only (files in path order, block maps joined with
 * their packs, totals, bad pages, meta), removing a file, path validity,
 * and refusing files that are not manifests.
 *
 * Each run works in its own mkdtemp() directory under /tmp, removed at the
 * end.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cbfs/manifest.h"
#include "tap.h"

static char tmpdir[] = "/tmp/cbfs-test-manifest.XXXXXX";

static char *tmp_path(const char *name)
{
    return cbfs_xasprintf("%s/%s", tmpdir, name);
}

/* ---- paths ---- */

static void test_path_valid(void)
{
    static const char *const good[] = {
        "base/1/1259",
        "PG_VERSION",
        "global/pg_control",
        "pg_tblspc/16384",
        "a",
        "a.b/c..d/...e",
        "base/1/1259_fsm",
        "pg_tblspc/16384/PG_15_x/5/16385",
        "name with space",
        "caf\xc3\xa9",
    };
    static const char *const bad[] = {
        "",     "/etc/passwd", "..", "../x", "a/..", "a/../b", ".",     "./a",   "a/.",   "a/./b",
        "a//b", "a/",          "/",  "//",   "a\nb", "a\tb",   "\x01x", "x\x1f", "a\x7f", "a/b\rc",
    };

    for (size_t i = 0; i < CBFS_ARRAY_LEN(good); i++)
        ok(cbfs_manifest_path_valid(good[i]), "path \"%s\" is valid", good[i]);
    for (size_t i = 0; i < CBFS_ARRAY_LEN(bad); i++)
        ok(!cbfs_manifest_path_valid(bad[i]), "path \"%s\" is not valid", show(bad[i]));
}

/* ---- create, fill, read back ---- */

#define NFILES 6

typedef struct Expect {
    CbfsFileEntry f;
    int64_t id;
} Expect;

/* Added out of path order on purpose. */
static Expect files[NFILES] = {
    {{0, "global/pg_control", CBFS_FILE_REG, 0600, 26, 26, 8192, 1700000000, NULL, 0}, 0},
    {{0, "base", CBFS_FILE_DIR, 0700, 26, 26, 0, 1700000001, NULL, 0}, 0},
    {{0, "pg_tblspc/16384", CBFS_FILE_SYMLINK, 0777, 26, 26, 0, 1700000002, "/srv/ts1", 0}, 0},
    {{0, "base/1/1259", CBFS_FILE_REG, 0640, 4000000000u, 7, 5ull << 32, -5, NULL, 0}, 0},
    {{0, "PG_VERSION", CBFS_FILE_REG, 0600, 0, 0, 3, 1700000004, NULL, 0}, 0},
    {{0, "base/1", CBFS_FILE_DIR, 0700, 26, 26, 0, 1700000005, NULL, 0}, 0},
};

/* Sorted by path (byte order): indexes into files[]. */
static const int sorted[NFILES] = {4, 1, 5, 3, 0, 2};

static const char *const pack_names[3] = {
    "00112233445566778899aabbccddeeff",
    "ffeeddccbbaa99887766554433221100",
    "0123456789abcdef0123456789abcdef",
};

static CbfsBlockRef make_ref(int64_t file, uint64_t blockno)
{
    CbfsBlockRef r;
    char data[64];

    memset(&r, 0, sizeof(r));
    r.file = file;
    r.blockno = blockno;
    snprintf(data, sizeof(data), "file %lld block %llu", (long long) file,
             (unsigned long long) blockno);
    cbfs_block_id(data, strlen(data), r.id);
    snprintf(r.pack, sizeof(r.pack), "%s", pack_names[blockno % 3]);
    r.offset = blockno * 1000 + (uint64_t) file;
    r.stored_len = (uint32_t) (100 + blockno);
    r.raw_len = 8192;
    return r;
}

typedef struct Seen {
    int n;
    int order_ok, fields_ok;
    int stop_after;
} Seen;

static int same(const char *a, const char *b)
{
    return (a && b) ? strcmp(a, b) == 0 : a == b;
}

static int seen_file(const CbfsFileEntry *f, void *ctx)
{
    Seen *s = ctx;
    const Expect *e;

    if (s->n >= NFILES) {
        s->order_ok = 0;
        return 0;
    }
    e = &files[sorted[s->n]];
    if (!same(f->path, e->f.path))
        s->order_ok = 0;
    else if (f->id != e->id || f->type != e->f.type || f->mode != e->f.mode || f->uid != e->f.uid ||
             f->gid != e->f.gid || f->size != e->f.size || f->mtime != e->f.mtime ||
             !same(f->target, e->f.target))
        s->fields_ok = 0;
    s->n++;
    return s->stop_after && s->n == s->stop_after ? 42 : 0;
}

static int collect_path(const CbfsFileEntry *f, void *ctx)
{
    cbfs_buf_printf(ctx, "%s,", f->path);
    return 0;
}

static void check_blocks(CbfsManifest *m, int64_t file, uint64_t nblocks, const char *what)
{
    CbfsBlockRef *refs = NULL;
    size_t n = 0;
    int bad = 0;
    CbfsError err;

    cbfs_error_init(&err);
    is_int(cbfs_manifest_file_blocks(m, file, &refs, &n, &err), 0, "%s: file_blocks", what);
    is_int(n, nblocks, "%s: %llu blocks", what, (unsigned long long) nblocks);
    for (size_t i = 0; i < n && i < nblocks; i++) {
        CbfsBlockRef want = make_ref(file, i);
        if (refs[i].file != file || refs[i].blockno != i ||
            memcmp(refs[i].id, want.id, CBFS_BLOCK_ID_LEN) != 0 ||
            strcmp(refs[i].pack, want.pack) != 0 || refs[i].offset != want.offset ||
            refs[i].stored_len != want.stored_len || refs[i].raw_len != want.raw_len)
            bad++;
    }
    is_int(bad, 0, "%s: every block ref in block order with its pack name", what);
    free(refs);
}

/* What foreach_block saw: refs compared with make_ref, order, paths. */
typedef struct BlockSeen {
    int n, bad, order_ok, path_ok, stop_after;
    int64_t relid, pgc;
    CbfsBlockRef last;
} BlockSeen;

static int seen_block(const CbfsBlockRef *r, const char *path, void *ctx)
{
    BlockSeen *s = ctx;
    CbfsBlockRef want = make_ref(r->file, r->blockno);

    if (memcmp(r->id, want.id, CBFS_BLOCK_ID_LEN) != 0 || strcmp(r->pack, want.pack) != 0 ||
        r->offset != want.offset || r->stored_len != want.stored_len || r->raw_len != want.raw_len)
        s->bad++;
    if (!((r->file == s->relid && strcmp(path, "base/1/1259") == 0) ||
          (r->file == s->pgc && strcmp(path, "global/pg_control") == 0)))
        s->path_ok = 0;
    if (s->n > 0) {
        int c = strcmp(s->last.pack, r->pack);
        if (c > 0 || (c == 0 && s->last.offset >= r->offset))
            s->order_ok = 0;
    }
    s->last = *r;
    s->n++;
    return s->stop_after && s->n == s->stop_after ? 7 : 0;
}

static void test_foreach_block(CbfsManifest *m, int64_t relid, int64_t pgc)
{
    BlockSeen s = {0, 0, 1, 1, 0, relid, pgc, {0}};
    CbfsError err;

    cbfs_error_init(&err);
    is_int(cbfs_manifest_foreach_block(m, seen_block, &s, &err), 0, "foreach_block");
    is_int(s.n, 11, "foreach_block: every block ref of every file");
    is_int(s.bad, 0, "foreach_block: every field read back");
    ok(s.order_ok, "foreach_block: ordered by pack name, then offset");
    ok(s.path_ok, "foreach_block: each ref comes with its file's path");
    s = (BlockSeen){0, 0, 1, 1, 3, relid, pgc, {0}};
    is_int(cbfs_manifest_foreach_block(m, seen_block, &s, &err), 7,
           "foreach_block: a callback's non-zero return stops it and is returned");
    is_int(s.n, 3, "foreach_block: no call after the stop");
    is_int(cbfs_manifest_quick_check(m, &err), 0, "quick_check of a sound manifest");
    is_str(err.msg, "", "no error message");
}

static void test_manifest(void)
{
    char *path = tmp_path("m1.db");
    CbfsManifest *m = NULL;
    CbfsError err;
    int64_t relid = 0, pgc = 0;
    uint64_t nfiles = 0, nbytes = 0, nbad = 0;
    char *v;
    Seen seen = {0, 1, 1, 0};

    cbfs_error_init(&err);
    is_int(cbfs_manifest_create(path, &m, &err), 0, "create a manifest");
    is_int(cbfs_manifest_begin(m, &err), 0, "begin");
    for (int i = 0; i < NFILES; i++)
        is_int(cbfs_manifest_add_file(m, &files[i].f, &files[i].id, &err), 0, "add \"%s\"",
               files[i].f.path);
    ok(files[0].id != files[3].id && files[0].id > 0, "files get distinct ids");
    relid = files[3].id;
    pgc = files[0].id;
    {
        /* a second entry for a path is refused */
        int64_t id = -1;
        ok(cbfs_manifest_add_file(m, &files[0].f, &id, &err) < 0, "a duplicate path is refused");
        ok(strstr(err.msg, path) != NULL, "with a message naming the manifest: \"%s\"", err.msg);
        cbfs_error_init(&err);
    }

    /* blocks: base/1/1259 gets 10 (across all 3 packs, added in reverse
     * order), global/pg_control 1 */
    {
        CbfsBlockRef refs[10];
        for (int i = 0; i < 10; i++)
            refs[i] = make_ref(relid, (uint64_t) (9 - i));
        is_int(cbfs_manifest_add_blocks(m, refs, 5, &err), 0, "add 5 blocks");
        is_int(cbfs_manifest_add_blocks(m, refs + 5, 5, &err), 0, "add 5 more blocks");
        refs[0] = make_ref(pgc, 0);
        is_int(cbfs_manifest_add_blocks(m, refs, 1, &err), 0, "add a block of another file");
        is_int(cbfs_manifest_add_blocks(m, refs, 0, &err), 0, "add no block");
    }
    is_int(cbfs_manifest_add_bad_page(m, relid, 3, 0x1234, &err), 0, "add a bad page");
    is_int(cbfs_manifest_add_bad_page(m, relid, 7, 0x5678, &err), 0, "add another bad page");
    is_int(cbfs_manifest_add_bad_page(m, pgc, 0, 1, &err), 0, "add a bad page of another file");
    is_int(cbfs_manifest_set_meta(m, "label", "first", &err), 0, "set meta label");
    is_int(cbfs_manifest_set_meta(m, "label", "full-1", &err), 0, "replace meta label");
    is_int(cbfs_manifest_set_meta(m, "backup_label", "START WAL LOCATION: 0/2000028\nx", &err), 0,
           "set a multi-line meta value");
    is_int(cbfs_manifest_set_file_size(m, files[4].id, 4, &err), 0, "set a file's size");
    files[4].f.size = 4;
    is_int(cbfs_manifest_commit(m, &err), 0, "commit");
    is_str(err.msg, "", "no error message along the way");

    v = cbfs_manifest_get_meta(m, "label");
    is_str(v, "full-1", "meta readable while writing");
    free(v);
    cbfs_manifest_free(m);
    m = NULL;

    /* read back */
    is_int(cbfs_manifest_open(path, &m, &err), 0, "reopen read-only");
    if (!m) {
        free(path);
        return;
    }
    v = cbfs_manifest_get_meta(m, "format");
    is_str(v, CBFS_MANIFEST_FORMAT, "meta format is " CBFS_MANIFEST_FORMAT);
    free(v);
    v = cbfs_manifest_get_meta(m, "label");
    is_str(v, "full-1", "meta label replaced");
    free(v);
    v = cbfs_manifest_get_meta(m, "backup_label");
    is_str(v, "START WAL LOCATION: 0/2000028\nx", "multi-line meta value kept");
    free(v);
    ok(cbfs_manifest_get_meta(m, "stop_lsn") == NULL, "an absent meta key is NULL");

    is_int(cbfs_manifest_foreach_file(m, seen_file, &seen, &err), 0, "foreach_file");
    is_int(seen.n, NFILES, "every file seen once");
    ok(seen.order_ok, "files come in path order");
    ok(seen.fields_ok, "every field read back (id, type, mode, uid, gid, size, mtime, target)");
    seen = (Seen){0, 1, 1, 2};
    is_int(cbfs_manifest_foreach_file(m, seen_file, &seen, &err), 42,
           "a callback's non-zero return stops foreach and is returned");
    is_int(seen.n, 2, "no call after the stop");

    check_blocks(m, relid, 10, "base/1/1259");
    check_blocks(m, pgc, 1, "global/pg_control");
    check_blocks(m, files[1].id, 0, "a directory");
    check_blocks(m, 9999, 0, "an unknown file id");
    test_foreach_block(m, relid, pgc);

    is_int(cbfs_manifest_totals(m, &nfiles, &nbytes, &err), 0, "totals");
    is_int(nfiles, NFILES, "totals: all files, any type");
    is_int(nbytes, 8192 + (5ull << 32) + 4, "totals: bytes of regular files only");
    is_int(cbfs_manifest_bad_page_count(m, &nbad, &err), 0, "bad page count");
    is_int(nbad, 3, "3 bad pages");

    /* read-only: writes fail with a message */
    {
        CbfsFileEntry f = {0, "new", CBFS_FILE_REG, 0600, 0, 0, 0, 0, NULL, 0};
        int64_t id;
        cbfs_error_init(&err);
        ok(cbfs_manifest_add_file(m, &f, &id, &err) < 0,
           "a manifest opened with open is read-only");
        ok(strstr(err.msg, path) != NULL, "message names the manifest: \"%s\"", err.msg);
    }
    cbfs_manifest_free(m);
    m = NULL;

    /* remove_file: on a new manifest built the same way */
    {
        char *path2 = tmp_path("m2.db");
        CbfsBlockRef refs[4];
        CbfsFileEntry a = {0, "a", CBFS_FILE_REG, 0600, 1, 1, 100, 1, NULL, 0};
        CbfsFileEntry b = {0, "b", CBFS_FILE_REG, 0600, 1, 1, 200, 1, NULL, 0};
        int64_t ida = 0, idb = 0;

        cbfs_error_init(&err);
        is_int(cbfs_manifest_create(path2, &m, &err), 0, "create a second manifest");
        cbfs_manifest_add_file(m, &a, &ida, &err);
        cbfs_manifest_add_file(m, &b, &idb, &err);
        for (int i = 0; i < 2; i++) {
            refs[i] = make_ref(ida, (uint64_t) i);
            refs[2 + i] = make_ref(idb, (uint64_t) i);
        }
        cbfs_manifest_add_blocks(m, refs, 4, &err);
        cbfs_manifest_add_bad_page(m, ida, 1, 1, &err);
        cbfs_manifest_add_bad_page(m, idb, 1, 1, &err);
        is_str(err.msg, "", "second manifest filled");
        is_int(cbfs_manifest_remove_file(m, ida, &err), 0, "remove_file");
        check_blocks(m, ida, 0, "removed file");
        check_blocks(m, idb, 2, "remaining file");
        cbfs_manifest_totals(m, &nfiles, &nbytes, &err);
        is_int(nfiles, 1, "after remove: 1 file");
        is_int(nbytes, 200, "after remove: its bytes only");
        cbfs_manifest_bad_page_count(m, &nbad, &err);
        is_int(nbad, 1, "after remove: its bad pages are gone");
        {
            CbfsBuf paths;
            cbfs_buf_init(&paths);
            is_int(cbfs_manifest_foreach_file(m, collect_path, &paths, &err), 0, "foreach_file");
            is_str(paths.data, "b,", "after remove: foreach sees only the other file");
            cbfs_buf_release(&paths);
        }
        cbfs_manifest_free(m);
        m = NULL;
        free(path2);
    }
    free(path);
}

/* ---- not manifests ---- */

static void check_open_fails(const char *path, const char *want, const char *what)
{
    CbfsManifest *m = NULL;
    CbfsError err;
    int rc;

    cbfs_error_init(&err);
    rc = cbfs_manifest_open(path, &m, &err);
    ok(rc < 0, "%s: open fails", what);
    ok(strstr(err.msg, want) != NULL, "%s: message \"%s\" contains \"%s\"", what, err.msg, want);
    ok(strstr(err.msg, path) != NULL, "%s: message names the file", what);
    if (rc == 0)
        cbfs_manifest_free(m);
}

static void write_text(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fwrite(text, 1, len, f);
        fclose(f);
    }
}

static void sqlite_file(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) == SQLITE_OK)
        sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
}

static void test_not_manifest(void)
{
    char *garbage = tmp_path("garbage.db"), *empty = tmp_path("empty.db");
    char *other = tmp_path("other.db"), *fmt2 = tmp_path("format3.db");
    char *missing = tmp_path("missing.db"), *exists = tmp_path("m1.db");
    CbfsManifest *m = NULL;
    CbfsError err;
    char junk[4096];

    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char) (i * 7 + 3);
    write_text(garbage, junk, sizeof(junk));
    write_text(empty, "", 0);
    sqlite_file(other, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    sqlite_file(fmt2, "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                      "INSERT INTO meta VALUES ('format', '3');");

    check_open_fails(garbage, "is not a cbfs manifest", "garbage file");
    check_open_fails(empty, "is not a cbfs manifest", "empty file");
    check_open_fails(other, "is not a cbfs manifest", "another SQLite database");
    check_open_fails(fmt2, "is not a cbfs manifest of format 1 or 2", "a manifest of format 3");
    check_open_fails(missing, "could not open manifest", "a missing file");
    ok(access(missing, F_OK) != 0, "opening a missing manifest does not create it");

    cbfs_error_init(&err);
    ok(cbfs_manifest_create(exists, &m, &err) < 0, "create refuses an existing manifest");
    ok(err.msg[0] != '\0', "with a message: \"%s\"", err.msg);
    if (m)
        cbfs_manifest_free(m);
    cbfs_manifest_free(NULL);

    free(garbage);
    free(empty);
    free(other);
    free(fmt2);
    free(missing);
    free(exists);
}

/* ---- damaged manifests: foreach_block and quick_check ---- */

static void copy_file(const char *from, const char *to)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (cbfs_read_file(from, &data, &len, NULL) == 0)
        write_text(to, (const char *) data, len);
    free(data);
}

static int count_block(const CbfsBlockRef *r, const char *path, void *ctx)
{
    (void) r;
    (void) path;
    (*(int *) ctx)++;
    return 0;
}

/* foreach_block on a copy of m1.db changed by sql must fail as corrupt. */
static void check_bad_entry(const char *sql, const char *what)
{
    char *path = tmp_path("bad-entry.db"), *m1 = tmp_path("m1.db");
    CbfsManifest *m = NULL;
    CbfsError err;
    int n = 0, rc;

    unlink(path);
    copy_file(m1, path);
    free(m1);
    sqlite_file(path, sql);
    cbfs_error_init(&err);
    is_int(cbfs_manifest_open(path, &m, &err), 0, "%s: opens", what);
    if (m) {
        rc = cbfs_manifest_foreach_block(m, count_block, &n, &err);
        is_int(rc, -EBADMSG, "%s: foreach_block fails with -EBADMSG", what);
        is_int(err.code, CBFS_EXIT_CORRUPT, "%s: CBFS_EXIT_CORRUPT", what);
        ok(strstr(err.msg, "has an invalid block entry") && strstr(err.msg, path), "%s: \"%s\"",
           what, err.msg);
    }
    cbfs_manifest_free(m);
    free(path);
}

static void test_damaged(void)
{
    char *path = tmp_path("damaged.db"), *m1 = tmp_path("m1.db");
    CbfsManifest *m = NULL;
    CbfsError err;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long page_size = 0, root = 0;

    check_bad_entry("UPDATE packs SET name = 'not-a-pack-' || id", "a pack name that is not one");
    check_bad_entry("UPDATE runs SET ids = x'0011' WHERE blockno = 2", "a block id of 2 bytes");
    check_bad_entry("UPDATE runs SET offset = -1 WHERE blockno = 1", "a negative offset");
    check_bad_entry("UPDATE runs SET count = 0 WHERE blockno = 1", "a run of no block");
    check_bad_entry("UPDATE runs SET count = 2 WHERE blockno = 1", "a count its ids do not match");
    check_bad_entry("UPDATE runs SET lens = x'00' WHERE blockno = 1", "lens of 1 byte");

    /* the runs table's root page overwritten: open works (meta is elsewhere),
     * quick_check finds it */
    copy_file(m1, path);
    free(m1);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db,
                           "SELECT rootpage, (SELECT page_size FROM pragma_page_size())"
                           " FROM sqlite_master WHERE name = 'runs'",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        root = sqlite3_column_int(st, 0);
        page_size = sqlite3_column_int(st, 1);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    ok(root > 1 && page_size >= 512, "runs table: root page %ld of %ld bytes", root, page_size);
    {
        int fd = open(path, O_WRONLY);
        char *junk = malloc((size_t) page_size);
        memset(junk, 0xa5, (size_t) page_size);
        ok(fd >= 0 && pwrite(fd, junk, (size_t) page_size, (root - 1) * page_size) == page_size,
           "overwrite the page");
        if (fd >= 0)
            close(fd);
        free(junk);
    }
    cbfs_error_init(&err);
    is_int(cbfs_manifest_open(path, &m, &err), 0, "a manifest with a damaged page opens");
    if (m) {
        is_int(cbfs_manifest_quick_check(m, &err), -EBADMSG, "quick_check: -EBADMSG");
        is_int(err.code, CBFS_EXIT_CORRUPT, "quick_check: CBFS_EXIT_CORRUPT");
        ok(strstr(err.msg, "is damaged: ") && strstr(err.msg, path),
           "quick_check: message names the manifest: \"%s\"", err.msg);
        ok(!strchr(err.msg, '\n') && !strstr(err.msg, "***"),
           "quick_check: SQLite's finding on one line");
    }
    cbfs_manifest_free(m);
    free(path);
}

/* ---- runs: consecutive blocks in one pack are one row ---- */

static int64_t count_rows(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* 1000 blocks of one file: runs broken by the 24-block limit, a change of
 * pack at 300, a hole (an all-zero block) at 600, an offset jump at 700,
 * and the blocks of 800.. added before those of 750..799 (two workers) */
static CbfsBlockRef run_ref(int64_t file, uint64_t b)
{
    CbfsBlockRef r = make_ref(file, b);
    snprintf(r.pack, sizeof(r.pack), "%s", pack_names[b >= 300 && b < 400 ? 1 : 0]);
    r.stored_len = (uint32_t) (1000 + b % 7);
    r.offset = 0;
    for (uint64_t i = 0; i < b; i++)
        r.offset += 1000 + i % 7;
    if (b >= 700)
        r.offset += 5;
    return r;
}

static void test_runs(void)
{
    char *path = tmp_path("runs.db");
    CbfsManifest *m = NULL;
    CbfsError err;
    CbfsFileEntry f = {.path = "base/1/16384", .type = CBFS_FILE_REG, .mode = 0600, .size = 1};
    int64_t id = 0;
    CbfsBlockRef *refs = calloc(1000, sizeof(*refs)), *got = NULL, dup;
    size_t n = 0, k = 0, ngot = 0;
    int bad = 0;

    cbfs_error_init(&err);
    is_int(cbfs_manifest_create(path, &m, &err), 0, "runs: create");
    cbfs_manifest_begin(m, &err);
    cbfs_manifest_add_file(m, &f, &id, &err);
    for (uint64_t b = 0; b < 1000; b++)
        if (b != 600)
            refs[n++] = run_ref(id, b);
    /* 0..749 in batches of 100, then 800..999, then 750..799 */
    for (k = 0; k < n && refs[k].blockno < 750; k += 100) {
        size_t m_ = 100;
        while (k + m_ > n || (m_ && refs[k + m_ - 1].blockno >= 750))
            m_--;
        is_int(cbfs_manifest_add_blocks(m, refs + k, m_, &err), 0, "runs: add %zu blocks", m_);
        if (m_ < 100) {
            k += m_;
            break;
        }
    }
    {
        size_t at800 = k + 50;
        is_int(cbfs_manifest_add_blocks(m, refs + at800, n - at800, &err), 0, "runs: add 800..999");
        is_int(cbfs_manifest_add_blocks(m, refs + k, 50, &err), 0, "runs: then 750..799");
    }
    dup = refs[k + 49]; /* block 799: in the run being built */
    is_int(cbfs_manifest_add_blocks(m, &dup, 1, &err), -EEXIST, "runs: a block added twice");
    ok(strstr(err.msg, "block 799 of file") && strstr(err.msg, "added twice"), "... says so: %s",
       err.msg);
    cbfs_error_init(&err);
    is_int(cbfs_manifest_commit(m, &err), 0, "runs: commit");
    cbfs_manifest_free(m);
    m = NULL;

    /* 0-299: 13 rows (12 of 24, 12 blocks) | 300-399: 5 | 400-599: 9 | 601-699: 5 |
     * 700-749: 3 | 800-999: 9 | 750-799: 3 */
    is_int(count_rows(path, "SELECT count(*) FROM runs"), 47, "runs: 999 blocks in 47 rows");
    is_int(count_rows(path, "SELECT max(count) FROM runs"), CBFS_MANIFEST_RUN_MAX,
           "runs: at most %d blocks a row", CBFS_MANIFEST_RUN_MAX);
    is_int(count_rows(path, "PRAGMA page_size"), 4096, "runs: pages of 4 KiB");
    is_int(count_rows(path,
                      "SELECT count(*) FROM dbstat WHERE name = 'runs' AND pagetype = 'overflow'"),
           0, "runs: no row overflows its page");
    is_int(cbfs_manifest_open(path, &m, &err), 0, "runs: reopen");
    if (m) {
        is_int(cbfs_manifest_file_blocks(m, id, &got, &ngot, &err), 0, "runs: file_blocks");
        is_int(ngot, n, "runs: every block back");
        for (size_t i = 0; i < ngot && i < n; i++)
            if (got[i].file != refs[i].file || got[i].blockno != refs[i].blockno ||
                memcmp(got[i].id, refs[i].id, CBFS_BLOCK_ID_LEN) != 0 ||
                strcmp(got[i].pack, refs[i].pack) != 0 || got[i].offset != refs[i].offset ||
                got[i].stored_len != refs[i].stored_len || got[i].raw_len != refs[i].raw_len)
                bad++;
        is_int(bad, 0, "runs: each in block order, every field as added");
        free(got);
    }
    cbfs_manifest_free(m);
    free(refs);
    free(path);
}

/* ---- format 1: one row per block, written by earlier versions, read ---- */

static int collect_ref(const CbfsBlockRef *r, const char *path, void *ctx)
{
    CbfsBuf *b = ctx;
    cbfs_buf_printf(b, "%s:%llu@%.4s+%llu/%u;", path, (unsigned long long) r->blockno, r->pack,
                    (unsigned long long) r->offset, r->stored_len);
    return 0;
}

static void test_format1(void)
{
    char *path = tmp_path("format1.db");
    CbfsManifest *m = NULL;
    CbfsError err;
    CbfsBlockRef *refs = NULL;
    size_t n = 0;
    CbfsBuf seen;
    char sql[4096];

    snprintf(sql, sizeof(sql),
             "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
             "CREATE TABLE files(id INTEGER PRIMARY KEY, parent INT NOT NULL, name TEXT NOT NULL,"
             " path TEXT NOT NULL UNIQUE, type INT NOT NULL, mode INT NOT NULL, uid INT NOT NULL,"
             " gid INT NOT NULL, size INT NOT NULL, mtime INT NOT NULL, target TEXT,"
             " UNIQUE(parent, name));"
             "CREATE TABLE packs(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
             "CREATE TABLE blocks(file INT NOT NULL, blockno INT NOT NULL, id BLOB NOT NULL,"
             " pack INT NOT NULL, offset INT NOT NULL, stored_len INT NOT NULL,"
             " raw_len INT NOT NULL, PRIMARY KEY(file, blockno)) WITHOUT ROWID;"
             "CREATE TABLE bad_pages(file INT NOT NULL, page INT NOT NULL, lsn INT NOT NULL);"
             "INSERT INTO meta VALUES ('format', '1');"
             "INSERT INTO files VALUES (1, 0, 'a', 'a', 1, 384, 0, 0, 3, 0, NULL);"
             "INSERT INTO files VALUES (2, 0, 'b', 'b', 1, 384, 0, 0, 1, 0, NULL);"
             "INSERT INTO packs VALUES (1, '%s'), (2, '%s');"
             "INSERT INTO blocks VALUES (1, 0, zeroblob(32), 2, 10, 5, 8192),"
             " (1, 2, zeroblob(32), 1, 20, 6, 8192), (2, 0, zeroblob(32), 1, 0, 7, 8192);",
             pack_names[0], pack_names[1]);
    sqlite_file(path, sql);
    cbfs_error_init(&err);
    is_int(cbfs_manifest_open(path, &m, &err), 0, "format 1: opens");
    if (!m) {
        free(path);
        return;
    }
    is_int(cbfs_manifest_file_blocks(m, 1, &refs, &n, &err), 0, "format 1: file_blocks");
    ok(n == 2 && refs[0].blockno == 0 && refs[0].offset == 10 && refs[1].blockno == 2 &&
           refs[1].stored_len == 6 && strcmp(refs[1].pack, pack_names[0]) == 0,
       "format 1: its rows read back");
    free(refs);
    cbfs_buf_init(&seen);
    is_int(cbfs_manifest_foreach_block(m, collect_ref, &seen, &err), 0, "format 1: foreach_block");
    is_str(seen.data, "b:0@0011+0/7;a:2@0011+20/6;a:0@ffee+10/5;",
           "format 1: every block, by pack and offset");
    cbfs_buf_release(&seen);
    cbfs_manifest_free(m);
    free(path);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! could not create a temp directory\n");
        return 1;
    }
    test_path_valid();
    test_manifest();
    test_not_manifest();
    test_damaged();
    test_runs();
    test_format1();
    rm_rf(tmpdir);
    ok(access(tmpdir, F_OK) != 0, "temp directory removed");
    return done_testing();
}
