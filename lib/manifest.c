/*
 * manifest.c - SQLite manifest.  See manifest.h for the schema.
 *
 * A manifest is written by one backup into a local temporary file with
 * journaling off (it becomes durable only when uploaded; a crash leaves a
 * temp file nobody references), then opened read-only by readers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cbfs/lazyvfs.h"
#include "cbfs/manifest.h"
#include "cbfs/sqlerr.h"
#include "cbfs/util.h"

#define LEN_BYTES 8 /* a run's lens entry: stored_len u32le, raw_len u32le */

/* The run being built by add_blocks, stored when the next block does not
 * extend it (or at commit). */
typedef struct Run {
    int64_t file; /* 0: none */
    uint64_t blockno, next_offset;
    int64_t pack;
    uint64_t offset;
    uint32_t count;
    uint8_t ids[CBFS_MANIFEST_RUN_MAX * CBFS_BLOCK_ID_LEN];
    uint8_t lens[CBFS_MANIFEST_RUN_MAX * LEN_BYTES];
} Run;

struct CbfsManifest {
    sqlite3 *db;
    char *path;           /* file, or object key */
    int format;           /* 1: blocks, one row each; 2: runs */
    CbfsMobject *mo;      /* read in place (lazyvfs.h), else NULL */
    char *unlink_on_free; /* a local copy that dies with the handle */
    sqlite3_stmt *ins_run;
    sqlite3_stmt *find_pack;
    sqlite3_stmt *ins_pack;
    char last_pack[CBFS_PACK_NAME_LEN + 1]; /* cache of the last pack looked up */
    int64_t last_pack_id;
    Run *run;
};

/* Format 2; format 1 had blocks(file, blockno, id, pack, offset,
 * stored_len, raw_len) with one row per block, and is still read. */
static const char schema[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE files(id INTEGER PRIMARY KEY, parent INT NOT NULL, name TEXT NOT NULL,"
    " path TEXT NOT NULL UNIQUE, type INT NOT NULL, mode INT NOT NULL, uid INT NOT NULL,"
    " gid INT NOT NULL, size INT NOT NULL, mtime INT NOT NULL, target TEXT,"
    " UNIQUE(parent, name));"
    "CREATE TABLE packs(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
    "CREATE TABLE runs(file INT NOT NULL, blockno INT NOT NULL, count INT NOT NULL,"
    " pack INT NOT NULL, offset INT NOT NULL, ids BLOB NOT NULL, lens BLOB NOT NULL,"
    " PRIMARY KEY(file, blockno)) WITHOUT ROWID;"
    "CREATE TABLE bad_pages(file INT NOT NULL, page INT NOT NULL, lsn INT NOT NULL);";

static int db_error(CbfsManifest *m, CbfsError *err, const char *what)
{
    if (m->mo && cbfs_mobject_take_error(m->mo, err))
        return -EIO;
    return cbfs_error_set(err, cbfs_sqlite_errno(m->db), CBFS_EXIT_ERROR,
                          "could not %s manifest \"%s\": %s", what, m->path,
                          cbfs_sqlite_errmsg(m->db));
}

static int exec(CbfsManifest *m, const char *sql, CbfsError *err)
{
    if (sqlite3_exec(m->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_error(m, err, "update");
    return 0;
}

static int prepare(CbfsManifest *m, const char *sql, sqlite3_stmt **st, CbfsError *err)
{
    if (sqlite3_prepare_v2(m->db, sql, -1, st, NULL) != SQLITE_OK)
        return db_error(m, err, "query");
    return 0;
}

static int open_db(const char *path, int flags, CbfsManifest **ret, CbfsError *err)
{
    CbfsManifest *m = cbfs_xcalloc(1, sizeof(*m));
    m->path = cbfs_xstrdup(path);
    if (sqlite3_open_v2(path, &m->db, flags, NULL) != SQLITE_OK) {
        int rc = cbfs_error_set(err, EIO, CBFS_EXIT_ERROR, "could not open manifest \"%s\": %s",
                                path, m->db ? cbfs_sqlite_errmsg(m->db) : "out of memory");
        cbfs_manifest_free(m);
        return rc;
    }
    sqlite3_busy_timeout(m->db, 10000);
    *ret = m;
    return 0;
}

int cbfs_manifest_create(const char *path, CbfsManifest **ret, CbfsError *err)
{
    CbfsManifest *m;
    int rc = open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &m, err);
    if (rc < 0)
        return rc;
    m->format = 2;
    m->run = cbfs_xcalloc(1, sizeof(Run));
    /* pages of 4 KiB: a run (CBFS_MANIFEST_RUN_MAX) fits in one */
    if ((rc = exec(m, "PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;",
                   err)) < 0 ||
        (rc = exec(m, schema, err)) < 0 ||
        (rc = cbfs_manifest_set_meta(m, "format", CBFS_MANIFEST_FORMAT, err)) < 0 ||
        (rc = prepare(m,
                      "INSERT INTO runs(file, blockno, count, pack, offset, ids, lens)"
                      " VALUES (?,?,?,?,?,?,?)",
                      &m->ins_run, err)) < 0 ||
        (rc = prepare(m, "SELECT id FROM packs WHERE name = ?", &m->find_pack, err)) < 0 ||
        (rc = prepare(m, "INSERT INTO packs(name) VALUES (?)", &m->ins_pack, err)) < 0) {
        cbfs_manifest_free(m);
        return rc;
    }
    *ret = m;
    return 0;
}

/* The format of a manifest just opened (m->db), else the error. */
static int read_format(CbfsManifest *m, CbfsError *err)
{
    char *format = cbfs_manifest_get_meta(m, "format");
    if (format && (strcmp(format, "1") == 0 || strcmp(format, "2") == 0)) {
        m->format = format[0] - '0';
        free(format);
        return 0;
    }
    free(format);
    if (m->mo && cbfs_mobject_take_error(m->mo, err))
        return -EIO;
    return cbfs_error_set(err, EINVAL, CBFS_EXIT_CORRUPT,
                          "manifest \"%s\" is not a cbfs manifest of format 1 or 2", m->path);
}

int cbfs_manifest_open(const char *path, CbfsManifest **ret, CbfsError *err)
{
    CbfsManifest *m;
    int rc = open_db(path, SQLITE_OPEN_READONLY, &m, err);
    if (rc < 0)
        return rc;
    rc = read_format(m, err);
    if (rc < 0) {
        cbfs_manifest_free(m);
        return rc;
    }
    *ret = m;
    return 0;
}

int cbfs_manifest_open_object(CbfsMobject *mo, CbfsManifest **ret, CbfsError *err)
{
    CbfsManifest *m = cbfs_xcalloc(1, sizeof(*m));
    int rc;

    m->path = cbfs_xstrdup(cbfs_mobject_name(mo));
    m->mo = mo;
    rc = cbfs_lazyvfs_open(mo, &m->db, err);
    if (rc == 0) {
        /* the chunk cache (mobject.c) keeps pages; SQLite's own cache a few */
        sqlite3_exec(m->db, "PRAGMA cache_size=64", NULL, NULL, NULL);
        rc = read_format(m, err);
    }
    if (rc < 0) {
        cbfs_manifest_free(m);
        return rc;
    }
    *ret = m;
    return 0;
}

void cbfs_manifest_unlink_on_free(CbfsManifest *m)
{
    free(m->unlink_on_free);
    m->unlink_on_free = cbfs_xstrdup(m->path);
}

uint64_t cbfs_manifest_fetched(const CbfsManifest *m)
{
    return m->mo ? cbfs_mobject_fetched(m->mo) : 0;
}

uint64_t cbfs_manifest_object_size(const CbfsManifest *m)
{
    return m->mo ? cbfs_mobject_size(m->mo) : 0;
}

void cbfs_manifest_free(CbfsManifest *m)
{
    if (!m)
        return;
    sqlite3_finalize(m->ins_run);
    sqlite3_finalize(m->find_pack);
    sqlite3_finalize(m->ins_pack);
    if (m->mo)
        cbfs_lazyvfs_close(m->db);
    else
        sqlite3_close(m->db);
    cbfs_mobject_free(m->mo);
    if (m->unlink_on_free) {
        unlink(m->unlink_on_free);
        free(m->unlink_on_free);
    }
    free(m->run);
    free(m->path);
    free(m);
}

int cbfs_manifest_begin(CbfsManifest *m, CbfsError *err)
{
    return exec(m, "BEGIN", err);
}

static int flush_run(CbfsManifest *m, CbfsError *err);

int cbfs_manifest_commit(CbfsManifest *m, CbfsError *err)
{
    int rc = flush_run(m, err);
    return rc < 0 ? rc : exec(m, "COMMIT", err);
}

int cbfs_manifest_set_meta(CbfsManifest *m, const char *key, const char *value, CbfsError *err)
{
    sqlite3_stmt *st;
    int rc = prepare(m, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(m, err, "update");
    sqlite3_finalize(st);
    return rc;
}

char *cbfs_manifest_get_meta(CbfsManifest *m, const char *key)
{
    sqlite3_stmt *st;
    char *v = NULL;
    if (sqlite3_prepare_v2(m->db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL) !=
        SQLITE_OK)
        return NULL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = cbfs_xstrdup((const char *) sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

int cbfs_manifest_add_file(CbfsManifest *m, const CbfsFileEntry *f, int64_t *ret_id, CbfsError *err)
{
    sqlite3_stmt *st;
    int rc = prepare(m,
                     "INSERT INTO files(path, type, mode, uid, gid, size, mtime, target, parent,"
                     " name) VALUES (?,?,?,?,?,?,?,?,?,?)",
                     &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, f->path, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, f->type);
    sqlite3_bind_int(st, 3, (int) f->mode);
    sqlite3_bind_int64(st, 4, f->uid);
    sqlite3_bind_int64(st, 5, f->gid);
    sqlite3_bind_int64(st, 6, (int64_t) f->size);
    sqlite3_bind_int64(st, 7, f->mtime);
    if (f->target)
        sqlite3_bind_text(st, 8, f->target, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 8);
    sqlite3_bind_int64(st, 9, f->parent);
    sqlite3_bind_text(st, 10, strrchr(f->path, '/') ? strrchr(f->path, '/') + 1 : f->path, -1,
                      SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(m, err, "update");
    else if (ret_id)
        *ret_id = sqlite3_last_insert_rowid(m->db);
    sqlite3_finalize(st);
    return rc;
}

static int exec_ids(CbfsManifest *m, const char *sql, int64_t a, int64_t b, CbfsError *err)
{
    sqlite3_stmt *st;
    int rc = prepare(m, sql, &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(m, err, "update");
    sqlite3_finalize(st);
    return rc;
}

int cbfs_manifest_set_file_size(CbfsManifest *m, int64_t file, uint64_t size, CbfsError *err)
{
    return exec_ids(m, "UPDATE files SET size = ?2 WHERE id = ?1", file, (int64_t) size, err);
}

int cbfs_manifest_remove_file(CbfsManifest *m, int64_t file, CbfsError *err)
{
    int rc;
    if (m->run && m->run->file == file)
        m->run->file = 0; /* its run is dropped with it */
    rc = exec_ids(m,
                  m->format == 1 ? "DELETE FROM blocks WHERE file = ?1 AND ?2 = ?2"
                                 : "DELETE FROM runs WHERE file = ?1 AND ?2 = ?2",
                  file, 0, err);
    if (rc == 0)
        rc = exec_ids(m, "DELETE FROM bad_pages WHERE file = ?1 AND ?2 = ?2", file, 0, err);
    if (rc == 0)
        rc = exec_ids(m, "DELETE FROM files WHERE id = ?1 AND ?2 = ?2", file, 0, err);
    return rc;
}

static int pack_id(CbfsManifest *m, const char *name, int64_t *ret, CbfsError *err)
{
    sqlite3_stmt *st = m->find_pack;
    int rc;

    if (m->last_pack[0] && strcmp(m->last_pack, name) == 0) {
        *ret = m->last_pack_id;
        return 0;
    }
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *ret = sqlite3_column_int64(st, 0);
    } else if (rc == SQLITE_DONE) {
        sqlite3_reset(m->ins_pack);
        sqlite3_bind_text(m->ins_pack, 1, name, -1, SQLITE_STATIC);
        if (sqlite3_step(m->ins_pack) != SQLITE_DONE)
            return db_error(m, err, "update");
        *ret = sqlite3_last_insert_rowid(m->db);
    } else {
        return db_error(m, err, "query");
    }
    strcpy(m->last_pack, name);
    m->last_pack_id = *ret;
    return 0;
}

static int flush_run(CbfsManifest *m, CbfsError *err)
{
    sqlite3_stmt *st = m->ins_run;
    Run *r = m->run;
    if (!r || !r->file)
        return 0;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, r->file);
    sqlite3_bind_int64(st, 2, (int64_t) r->blockno);
    sqlite3_bind_int64(st, 3, r->count);
    sqlite3_bind_int64(st, 4, r->pack);
    sqlite3_bind_int64(st, 5, (int64_t) r->offset);
    sqlite3_bind_blob(st, 6, r->ids, (int) (r->count * CBFS_BLOCK_ID_LEN), SQLITE_STATIC);
    sqlite3_bind_blob(st, 7, r->lens, (int) (r->count * LEN_BYTES), SQLITE_STATIC);
    r->file = 0;
    if (sqlite3_step(st) != SQLITE_DONE)
        return db_error(m, err, "update");
    return 0;
}

int cbfs_manifest_add_blocks(CbfsManifest *m, const CbfsBlockRef *refs, size_t n, CbfsError *err)
{
    Run *r = m->run;
    for (size_t i = 0; i < n; i++) {
        const CbfsBlockRef *b = &refs[i];
        int64_t pid = 0;
        int rc = pack_id(m, b->pack, &pid, err);
        if (rc < 0)
            return rc;
        if (r->file == b->file && b->blockno >= r->blockno && b->blockno < r->blockno + r->count)
            return cbfs_error_set(err, EEXIST, CBFS_EXIT_ERROR,
                                  "could not update manifest \"%s\": block %llu of file %lld"
                                  " added twice",
                                  m->path, (unsigned long long) b->blockno, (long long) b->file);
        if (!(r->file == b->file && b->blockno == r->blockno + r->count && pid == r->pack &&
              b->offset == r->next_offset && r->count < CBFS_MANIFEST_RUN_MAX)) {
            if ((rc = flush_run(m, err)) < 0)
                return rc;
            r->file = b->file;
            r->blockno = b->blockno;
            r->pack = pid;
            r->offset = b->offset;
            r->count = 0;
        }
        memcpy(r->ids + r->count * CBFS_BLOCK_ID_LEN, b->id, CBFS_BLOCK_ID_LEN);
        cbfs_put_le32(r->lens + r->count * LEN_BYTES, b->stored_len);
        cbfs_put_le32(r->lens + r->count * LEN_BYTES + 4, b->raw_len);
        r->count++;
        r->next_offset = b->offset + b->stored_len;
    }
    return 0;
}

int cbfs_manifest_add_bad_page(CbfsManifest *m, int64_t file, uint64_t page, uint64_t lsn,
                               CbfsError *err)
{
    sqlite3_stmt *st;
    int rc = prepare(m, "INSERT INTO bad_pages(file, page, lsn) VALUES (?,?,?)", &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, file);
    sqlite3_bind_int64(st, 2, (int64_t) page);
    sqlite3_bind_int64(st, 3, (int64_t) lsn);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(m, err, "update");
    sqlite3_finalize(st);
    return rc;
}

int cbfs_manifest_foreach_meta(CbfsManifest *m, cbfs_manifest_meta_cb cb, void *ctx, CbfsError *err)
{
    sqlite3_stmt *st;
    int rc = prepare(m, "SELECT key, value FROM meta ORDER BY key", &st, err);
    if (rc < 0)
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int r = cb((const char *) sqlite3_column_text(st, 0),
                   (const char *) sqlite3_column_text(st, 1), ctx);
        if (r != 0) {
            sqlite3_finalize(st);
            return r;
        }
    }
    rc = rc == SQLITE_DONE ? 0 : db_error(m, err, "read");
    sqlite3_finalize(st);
    return rc;
}

int cbfs_manifest_foreach_bad_page(CbfsManifest *m, cbfs_manifest_bad_page_cb cb, void *ctx,
                                   CbfsError *err)
{
    sqlite3_stmt *st;
    int rc = prepare(m, "SELECT file, page, lsn FROM bad_pages ORDER BY file, page", &st, err);
    if (rc < 0)
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int r = cb(sqlite3_column_int64(st, 0), (uint64_t) sqlite3_column_int64(st, 1),
                   (uint64_t) sqlite3_column_int64(st, 2), ctx);
        if (r != 0) {
            sqlite3_finalize(st);
            return r;
        }
    }
    rc = rc == SQLITE_DONE ? 0 : db_error(m, err, "read");
    sqlite3_finalize(st);
    return rc;
}

#define FILE_COLUMNS "id, path, type, mode, uid, gid, size, mtime, target, parent"

static void row_entry(sqlite3_stmt *st, CbfsFileEntry *f)
{
    *f = (CbfsFileEntry){
        .id = sqlite3_column_int64(st, 0),
        .path = (const char *) sqlite3_column_text(st, 1),
        .type = (enum cbfs_file_type) sqlite3_column_int(st, 2),
        .mode = (uint32_t) sqlite3_column_int(st, 3),
        .uid = (uint32_t) sqlite3_column_int64(st, 4),
        .gid = (uint32_t) sqlite3_column_int64(st, 5),
        .size = (uint64_t) sqlite3_column_int64(st, 6),
        .mtime = sqlite3_column_int64(st, 7),
        .target = (const char *) sqlite3_column_text(st, 8),
        .parent = sqlite3_column_int64(st, 9),
    };
}

/* Call cb for each row of st, then finalize st. */
static int each_row(CbfsManifest *m, sqlite3_stmt *st, cbfs_manifest_file_cb cb, void *ctx,
                    CbfsError *err)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        CbfsFileEntry f;
        int r;
        row_entry(st, &f);
        r = cb(&f, ctx);
        if (r != 0) {
            sqlite3_finalize(st);
            return r;
        }
    }
    rc = rc == SQLITE_DONE ? 0 : db_error(m, err, "read");
    sqlite3_finalize(st);
    return rc;
}

int cbfs_manifest_foreach_file(CbfsManifest *m, cbfs_manifest_file_cb cb, void *ctx, CbfsError *err)
{
    sqlite3_stmt *st;
    int rc = prepare(m, "SELECT " FILE_COLUMNS " FROM files ORDER BY path", &st, err);
    if (rc < 0)
        return rc;
    return each_row(m, st, cb, ctx, err);
}

int cbfs_manifest_foreach_child(CbfsManifest *m, int64_t parent, cbfs_manifest_file_cb cb,
                                void *ctx, CbfsError *err)
{
    sqlite3_stmt *st;
    int rc =
        prepare(m, "SELECT " FILE_COLUMNS " FROM files WHERE parent = ? ORDER BY name", &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, parent);
    return each_row(m, st, cb, ctx, err);
}

static int one_file(CbfsManifest *m, sqlite3_stmt *st, CbfsFileEntry *ret, CbfsError *err)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        row_entry(st, ret);
        ret->path = cbfs_xstrdup(ret->path);
        ret->target = ret->target ? cbfs_xstrdup(ret->target) : NULL;
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : db_error(m, err, "read");
    }
    sqlite3_finalize(st);
    return rc;
}

int cbfs_manifest_get_file(CbfsManifest *m, int64_t id, CbfsFileEntry *ret, CbfsError *err)
{
    sqlite3_stmt *st;
    int rc = prepare(m, "SELECT " FILE_COLUMNS " FROM files WHERE id = ?", &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    return one_file(m, st, ret, err);
}

int cbfs_manifest_lookup(CbfsManifest *m, int64_t parent, const char *name, CbfsFileEntry *ret,
                         CbfsError *err)
{
    sqlite3_stmt *st;
    int rc =
        prepare(m, "SELECT " FILE_COLUMNS " FROM files WHERE parent = ? AND name = ?", &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, parent);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    return one_file(m, st, ret, err);
}

void cbfs_file_entry_release(CbfsFileEntry *f)
{
    free((char *) f->path);
    free((char *) f->target);
    f->path = f->target = NULL;
}

/* The refs of the run in columns col on: blockno, count, ids, pack name,
 * offset, lens; *ret (grown as needed, *cap entries) gets them at *n. */
static int run_rows(CbfsManifest *m, sqlite3_stmt *st, int col, int64_t file, CbfsBlockRef **ret,
                    size_t *n, size_t *cap, CbfsError *err)
{
    int64_t blockno = sqlite3_column_int64(st, col), count = sqlite3_column_int64(st, col + 1);
    const uint8_t *ids = sqlite3_column_blob(st, col + 2);
    const char *pack = (const char *) sqlite3_column_text(st, col + 3);
    int64_t offset = sqlite3_column_int64(st, col + 4);
    const uint8_t *lens = sqlite3_column_blob(st, col + 5);
    uint64_t off;

    if (blockno < 0 || count < 1 || count > CBFS_MANIFEST_RUN_MAX || offset < 0 || !pack ||
        !cbfs_pack_name_valid(pack) || !ids || !lens ||
        sqlite3_column_bytes(st, col + 2) != count * CBFS_BLOCK_ID_LEN ||
        sqlite3_column_bytes(st, col + 5) != count * LEN_BYTES)
        return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                              "manifest \"%s\" has an invalid block entry", m->path);
    if (*n + (size_t) count > *cap) {
        while (*n + (size_t) count > *cap)
            *cap = *cap ? *cap * 2 : 256;
        *ret = cbfs_xrealloc(*ret, *cap * sizeof(**ret));
    }
    off = (uint64_t) offset;
    for (int64_t i = 0; i < count; i++) {
        CbfsBlockRef *r = &(*ret)[(*n)++];
        r->file = file;
        r->blockno = (uint64_t) (blockno + i);
        memcpy(r->id, ids + i * CBFS_BLOCK_ID_LEN, CBFS_BLOCK_ID_LEN);
        strcpy(r->pack, pack);
        r->offset = off;
        r->stored_len = cbfs_get_le32(lens + i * LEN_BYTES);
        r->raw_len = cbfs_get_le32(lens + i * LEN_BYTES + 4);
        off += r->stored_len;
    }
    return 0;
}

/* Format 1: one block per row, columns from col on: blockno, id, pack
 * name, offset, stored_len, raw_len. */
static int block_row(CbfsManifest *m, sqlite3_stmt *st, int col, int64_t file, CbfsBlockRef **ret,
                     size_t *n, size_t *cap, CbfsError *err)
{
    const char *pack = (const char *) sqlite3_column_text(st, col + 2);
    CbfsBlockRef *r;
    if (sqlite3_column_bytes(st, col + 1) != CBFS_BLOCK_ID_LEN || !pack ||
        !cbfs_pack_name_valid(pack) || sqlite3_column_int64(st, col + 3) < 0)
        return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                              "manifest \"%s\" has an invalid block entry", m->path);
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        *ret = cbfs_xrealloc(*ret, *cap * sizeof(**ret));
    }
    r = &(*ret)[(*n)++];
    r->file = file;
    r->blockno = (uint64_t) sqlite3_column_int64(st, col);
    memcpy(r->id, sqlite3_column_blob(st, col + 1), CBFS_BLOCK_ID_LEN);
    strcpy(r->pack, pack);
    r->offset = (uint64_t) sqlite3_column_int64(st, col + 3);
    r->stored_len = (uint32_t) sqlite3_column_int64(st, col + 4);
    r->raw_len = (uint32_t) sqlite3_column_int64(st, col + 5);
    return 0;
}

static int rows(CbfsManifest *m, sqlite3_stmt *st, int col, int64_t file, CbfsBlockRef **ret,
                size_t *n, size_t *cap, CbfsError *err)
{
    return m->format == 1 ? block_row(m, st, col, file, ret, n, cap, err)
                          : run_rows(m, st, col, file, ret, n, cap, err);
}

int cbfs_manifest_file_blocks(CbfsManifest *m, int64_t file, CbfsBlockRef **ret, size_t *ret_n,
                              CbfsError *err)
{
    sqlite3_stmt *st;
    CbfsBlockRef *refs = NULL;
    size_t n = 0, cap = 0;
    int rc = flush_run(m, err);
    if (rc == 0)
        rc = prepare(m,
                     m->format == 1
                         ? "SELECT b.blockno, b.id, p.name, b.offset, b.stored_len, b.raw_len"
                           " FROM blocks b JOIN packs p ON p.id = b.pack WHERE b.file = ?"
                           " ORDER BY b.blockno"
                         : "SELECT r.blockno, r.count, r.ids, p.name, r.offset, r.lens"
                           " FROM runs r JOIN packs p ON p.id = r.pack WHERE r.file = ?"
                           " ORDER BY r.blockno",
                     &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, file);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (rows(m, st, 0, file, &refs, &n, &cap, err) < 0) {
            free(refs);
            sqlite3_finalize(st);
            return -EBADMSG;
        }
    }
    if (rc != SQLITE_DONE) {
        free(refs);
        rc = db_error(m, err, "read");
    } else {
        *ret = refs;
        *ret_n = n;
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int cbfs_manifest_foreach_block(CbfsManifest *m, cbfs_manifest_block_cb cb, void *ctx,
                                CbfsError *err)
{
    sqlite3_stmt *st;
    CbfsBlockRef *refs = NULL;
    size_t cap = 0;
    int rc = flush_run(m, err);
    if (rc == 0)
        rc = prepare(m,
                     m->format == 1
                         ? "SELECT f.path, b.file, b.blockno, b.id, p.name, b.offset,"
                           " b.stored_len, b.raw_len FROM blocks b JOIN packs p ON p.id = b.pack"
                           " JOIN files f ON f.id = b.file ORDER BY p.name, b.offset"
                         : "SELECT f.path, r.file, r.blockno, r.count, r.ids, p.name, r.offset,"
                           " r.lens FROM runs r JOIN packs p ON p.id = r.pack"
                           " JOIN files f ON f.id = r.file ORDER BY p.name, r.offset",
                     &st, err);
    if (rc < 0)
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *path = (const char *) sqlite3_column_text(st, 0);
        size_t n = 0;
        if (!path || rows(m, st, 2, sqlite3_column_int64(st, 1), &refs, &n, &cap, err) < 0) {
            free(refs);
            sqlite3_finalize(st);
            return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                                  "manifest \"%s\" has an invalid block entry", m->path);
        }
        for (size_t i = 0; i < n; i++) {
            if ((rc = cb(&refs[i], path, ctx)) != 0) {
                free(refs);
                sqlite3_finalize(st);
                return rc;
            }
        }
    }
    free(refs);
    rc = rc == SQLITE_DONE ? 0 : db_error(m, err, "read");
    sqlite3_finalize(st);
    return rc;
}

int cbfs_manifest_quick_check(CbfsManifest *m, CbfsError *err)
{
    sqlite3_stmt *st;
    const char *res;
    int rc = prepare(m, "PRAGMA quick_check(1)", &st, err);
    if (rc < 0)
        return rc;
    rc = sqlite3_step(st);
    res = rc == SQLITE_ROW ? (const char *) sqlite3_column_text(st, 0) : NULL;
    if (!res || strcmp(res, "ok") != 0) {
        /* SQLite's first finding, on one line: "*** in database main ***\nPage 9: ..." */
        char *why = cbfs_xstrdup(res ? res : sqlite3_errmsg(m->db)), *p = why;
        if (strncmp(p, "*** in database main ***\n", 25) == 0)
            p += 25;
        for (char *c = p; *c; c++)
            if (*c == '\n' || *c == '\r' || *c == '\t')
                *c = ' ';
        rc = cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT, "manifest \"%s\" is damaged: %s",
                            m->path, p);
        free(why);
    } else {
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

static int count(CbfsManifest *m, const char *sql, uint64_t *ret, CbfsError *err)
{
    sqlite3_stmt *st;
    int rc = prepare(m, sql, &st, err);
    if (rc < 0)
        return rc;
    if (sqlite3_step(st) == SQLITE_ROW)
        *ret = (uint64_t) sqlite3_column_int64(st, 0);
    else
        rc = db_error(m, err, "read");
    sqlite3_finalize(st);
    return rc;
}

int cbfs_manifest_totals(CbfsManifest *m, uint64_t *ret_files, uint64_t *ret_bytes, CbfsError *err)
{
    int rc = count(m, "SELECT count(*) FROM files", ret_files, err);
    if (rc == 0)
        rc = count(m, "SELECT coalesce(sum(size), 0) FROM files WHERE type = 1", ret_bytes, err);
    return rc;
}

int cbfs_manifest_bad_page_count(CbfsManifest *m, uint64_t *ret, CbfsError *err)
{
    return count(m, "SELECT count(*) FROM bad_pages", ret, err);
}

bool cbfs_manifest_path_valid(const char *path)
{
    const char *s = path;
    if (!*s || *s == '/')
        return false;
    for (const char *c = path; *c; c++)
        if ((unsigned char) *c < 0x20 || *c == 0x7f)
            return false;
    while (*s) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t) (e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            return false;
        s += n;
        if (*s == '/') {
            s++;
            if (!*s)
                return false;
        }
    }
    return true;
}
