/*
 * blockindex.c - local SQLite deduplication index.  See blockindex.h.
 *
 * Schema:
 *   packs(name TEXT PRIMARY KEY, stored INT, run TEXT)
 *   blocks(id BLOB PRIMARY KEY, pack TEXT, offset INT, stored_len INT,
 *          raw_len INT) WITHOUT ROWID, indexed by pack
 * Lock order: bi->lock is the only lock; SQLite's own file locks are taken
 * inside it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "cbfs/blockindex.h"
#include "cbfs/sqlerr.h"
#include "cbfs/log.h"
#include "cbfs/util.h"

#define BATCH_ROWS 4096

struct CbfsBlockIndex {
    pthread_mutex_t lock; /* guards db and the statements */
    sqlite3 *db;
    char *path;
    char run[17]; /* this process's run id */
    sqlite3_stmt *lookup;
    sqlite3_stmt *insert;
    /* rows added but not yet written: one transaction per batch costs far
     * less CPU than one per block, and holding no SQLite write lock between
     * batches lets other backups on this host use the index meanwhile */
    CbfsBlockRef pending[BATCH_ROWS];
    size_t npending;
    uint16_t slots[2 * BATCH_ROWS]; /* open addressing: index + 1 into pending, 0 empty */
    char **avoid;                   /* sorted: packs gc is about to remove or rewrite (doomed.h) */
    size_t navoid;
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS packs(name TEXT PRIMARY KEY, stored INT NOT NULL, run TEXT);"
    "CREATE TABLE IF NOT EXISTS blocks(id BLOB PRIMARY KEY, pack TEXT NOT NULL,"
    " offset INT NOT NULL, stored_len INT NOT NULL, raw_len INT NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS blocks_pack ON blocks(pack);";

static int flush_pending(CbfsBlockIndex *bi, CbfsError *err);

static int db_error(CbfsBlockIndex *bi, CbfsError *err)
{
    return cbfs_error_set(err, cbfs_sqlite_errno(bi->db), CBFS_EXIT_ERROR,
                          "could not use block index \"%s\": %s", bi->path,
                          cbfs_sqlite_errmsg(bi->db));
}

typedef struct NameList {
    char **names;
    size_t n;
} NameList;

static int collect_pack(const char *key, uint64_t size, void *ctx)
{
    NameList *nl = ctx;
    const char *slash = strrchr(key, '/');
    size_t len;
    (void) size;
    if (!slash)
        return 0;
    slash++;
    len = strlen(slash);
    if (len != CBFS_PACK_NAME_LEN + 5 || strcmp(slash + CBFS_PACK_NAME_LEN, ".pack") != 0)
        return 0;
    nl->names = cbfs_xrealloc(nl->names, (nl->n + 1) * sizeof(char *));
    nl->names[nl->n++] = cbfs_xasprintf("%.*s", CBFS_PACK_NAME_LEN, slash);
    return 0;
}

/* Bring the index in step with the packs the store holds. */
static int sync_packs(CbfsBlockIndex *bi, CbfsRepo *r, size_t *ret_synced, CbfsError *err)
{
    NameList listed = {0};
    sqlite3_stmt *known = NULL, *ins_pack = NULL, *del_blocks = NULL, *del_pack = NULL;
    size_t synced = 0;
    int rc;

    rc = cbfs_store_list(r->store, "packs/", collect_pack, &listed, err);
    if (rc < 0)
        goto out;
    if (listed.n)
        qsort(listed.names, listed.n, sizeof(char *), cbfs_cmp_strp);

    if (sqlite3_exec(bi->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
        /* only stored packs can be "gone": an unstored one may belong to a
         * backup still running on this host */
        sqlite3_prepare_v2(bi->db, "SELECT name FROM packs WHERE stored = 1", -1, &known, NULL) ||
        sqlite3_prepare_v2(bi->db,
                           "INSERT OR REPLACE INTO packs(name, stored, run) VALUES (?, 1, NULL)",
                           -1, &ins_pack, NULL) ||
        sqlite3_prepare_v2(bi->db, "DELETE FROM blocks WHERE pack = ?", -1, &del_blocks, NULL) ||
        sqlite3_prepare_v2(bi->db, "DELETE FROM packs WHERE name = ?", -1, &del_pack, NULL)) {
        rc = db_error(bi, err);
        goto rollback;
    }
    /* forget packs that are gone */
    {
        NameList gone = {0};
        while (sqlite3_step(known) == SQLITE_ROW) {
            char *name = (char *) sqlite3_column_text(known, 0);
            if (!listed.n ||
                !bsearch(&name, listed.names, listed.n, sizeof(char *), cbfs_cmp_strp)) {
                gone.names = cbfs_xrealloc(gone.names, (gone.n + 1) * sizeof(char *));
                gone.names[gone.n++] = cbfs_xstrdup(name);
            }
        }
        sqlite3_reset(known);
        for (size_t i = 0; i < gone.n; i++) {
            sqlite3_bind_text(del_blocks, 1, gone.names[i], -1, SQLITE_STATIC);
            sqlite3_bind_text(del_pack, 1, gone.names[i], -1, SQLITE_STATIC);
            if (sqlite3_step(del_blocks) != SQLITE_DONE || sqlite3_step(del_pack) != SQLITE_DONE)
                rc = db_error(bi, err);
            sqlite3_reset(del_blocks);
            sqlite3_reset(del_pack);
            free(gone.names[i]);
        }
        free(gone.names);
        if (rc < 0)
            goto rollback;
    }
    /* read the packs we have not indexed yet */
    {
        sqlite3_stmt *is_stored = NULL;
        if (sqlite3_prepare_v2(bi->db, "SELECT stored FROM packs WHERE name = ?", -1, &is_stored,
                               NULL)) {
            rc = db_error(bi, err);
            goto rollback;
        }
        for (size_t i = 0; i < listed.n && rc == 0; i++) {
            CbfsPackEntry *entries;
            size_t n;
            bool have;
            sqlite3_bind_text(is_stored, 1, listed.names[i], -1, SQLITE_STATIC);
            have = sqlite3_step(is_stored) == SQLITE_ROW && sqlite3_column_int(is_stored, 0) == 1;
            sqlite3_reset(is_stored);
            if (have)
                continue;
            rc = cbfs_pack_read_index(r->store, r->crypt, listed.names[i], &entries, &n, err);
            if (rc == -ENOENT) { /* removed meanwhile */
                rc = 0;
                continue;
            }
            if (rc == -EBADMSG) {
                /* a damaged pack is never offered for deduplication; check reports it */
                cbfs_warning("%s", err->msg);
                cbfs_error_init(err);
                rc = 0;
                continue;
            }
            if (rc < 0)
                break;
            for (size_t k = 0; k < n && rc == 0; k++) {
                sqlite3_stmt *st = bi->insert;
                sqlite3_reset(st);
                sqlite3_bind_blob(st, 1, entries[k].id, CBFS_BLOCK_ID_LEN, SQLITE_STATIC);
                sqlite3_bind_text(st, 2, listed.names[i], -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 3, (int64_t) entries[k].offset);
                sqlite3_bind_int64(st, 4, entries[k].stored_len);
                sqlite3_bind_int64(st, 5, entries[k].raw_len);
                if (sqlite3_step(st) != SQLITE_DONE)
                    rc = db_error(bi, err);
            }
            free(entries);
            sqlite3_bind_text(ins_pack, 1, listed.names[i], -1, SQLITE_STATIC);
            if (rc == 0 && sqlite3_step(ins_pack) != SQLITE_DONE)
                rc = db_error(bi, err);
            sqlite3_reset(ins_pack);
            synced++;
        }
        sqlite3_finalize(is_stored);
        if (rc < 0)
            goto rollback;
    }
    if (sqlite3_exec(bi->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_error(bi, err);
        goto rollback;
    }
    *ret_synced = synced;
    goto out;
rollback:
    sqlite3_exec(bi->db, "ROLLBACK", NULL, NULL, NULL);
out:
    sqlite3_finalize(known);
    sqlite3_finalize(ins_pack);
    sqlite3_finalize(del_blocks);
    sqlite3_finalize(del_pack);
    for (size_t i = 0; i < listed.n; i++)
        free(listed.names[i]);
    free(listed.names);
    return rc;
}

int cbfs_blockindex_open(CbfsRepo *r, CbfsBlockIndex **ret, size_t *ret_synced, CbfsError *err)
{
    CbfsBlockIndex *bi;
    char *dir;
    uint8_t rnd[8];
    int rc = cbfs_repo_cache_dir(r, &dir, err);

    if (rc < 0)
        return rc;
    bi = cbfs_xcalloc(1, sizeof(*bi));
    pthread_mutex_init(&bi->lock, NULL);
    bi->path = cbfs_xasprintf("%s/blocks.db", dir);
    free(dir);
    cbfs_random_bytes(rnd, sizeof(rnd));
    cbfs_hex_encode(rnd, sizeof(rnd), bi->run);
    if (sqlite3_open_v2(bi->path, &bi->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        rc = cbfs_error_set(err, EIO, CBFS_EXIT_ERROR, "could not open block index \"%s\": %s",
                            bi->path, bi->db ? cbfs_sqlite_errmsg(bi->db) : "out of memory");
        cbfs_blockindex_free(bi);
        return rc;
    }
    sqlite3_busy_timeout(bi->db, 60000);
    if (sqlite3_exec(bi->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
                     NULL) != SQLITE_OK ||
        sqlite3_exec(bi->db, schema, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(bi->db,
                           "SELECT b.pack, b.offset, b.stored_len, b.raw_len FROM blocks b"
                           " JOIN packs p ON p.name = b.pack"
                           " WHERE b.id = ? AND (p.stored = 1 OR p.run = ?)",
                           -1, &bi->lookup, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(bi->db,
                           "INSERT OR REPLACE INTO blocks(id, pack, offset, stored_len, raw_len)"
                           " VALUES (?,?,?,?,?)",
                           -1, &bi->insert, NULL) != SQLITE_OK) {
        rc = db_error(bi, err);
        cbfs_blockindex_free(bi);
        return rc;
    }
    rc = sync_packs(bi, r, ret_synced, err);
    if (rc < 0) {
        cbfs_blockindex_free(bi);
        return rc;
    }
    *ret = bi;
    return 0;
}

void cbfs_blockindex_free(CbfsBlockIndex *bi)
{
    if (!bi)
        return;
    if (bi->db)
        flush_pending(bi, NULL);
    sqlite3_finalize(bi->lookup);
    sqlite3_finalize(bi->insert);
    sqlite3_close(bi->db);
    pthread_mutex_destroy(&bi->lock);
    for (size_t i = 0; i < bi->navoid; i++)
        free(bi->avoid[i]);
    free(bi->avoid);
    free(bi->path);
    free(bi);
}

static size_t slot_of(const uint8_t *id)
{
    uint32_t h;
    memcpy(&h, id, sizeof(h));
    return h % (2 * BATCH_ROWS);
}

/* The pending row for id, or NULL.  Caller holds bi->lock. */
static const CbfsBlockRef *pending_find(CbfsBlockIndex *bi, const uint8_t *id)
{
    for (size_t s = slot_of(id); bi->slots[s]; s = (s + 1) % (2 * BATCH_ROWS))
        if (memcmp(bi->pending[bi->slots[s] - 1].id, id, CBFS_BLOCK_ID_LEN) == 0)
            return &bi->pending[bi->slots[s] - 1];
    return NULL;
}

/* Write the pending rows in one transaction.  Caller holds bi->lock. */
static int flush_pending(CbfsBlockIndex *bi, CbfsError *err)
{
    sqlite3_stmt *st = bi->insert;
    int rc = 0;

    if (bi->npending == 0)
        return 0;
    if (sqlite3_exec(bi->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_error(bi, err);
    for (size_t i = 0; i < bi->npending && rc == 0; i++) {
        const CbfsBlockRef *ref = &bi->pending[i];
        sqlite3_reset(st);
        sqlite3_bind_blob(st, 1, ref->id, CBFS_BLOCK_ID_LEN, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, ref->pack, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (int64_t) ref->offset);
        sqlite3_bind_int64(st, 4, ref->stored_len);
        sqlite3_bind_int64(st, 5, ref->raw_len);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(bi, err);
    }
    sqlite3_reset(st);
    if (rc == 0 && sqlite3_exec(bi->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = db_error(bi, err);
    if (rc < 0) {
        sqlite3_exec(bi->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    bi->npending = 0;
    memset(bi->slots, 0, sizeof(bi->slots));
    return 0;
}

int cbfs_blockindex_lookup(CbfsBlockIndex *bi, const uint8_t id[CBFS_BLOCK_ID_LEN],
                           CbfsBlockRef *ref)
{
    sqlite3_stmt *st = bi->lookup;
    const CbfsBlockRef *p;
    int rc = -ENOENT;

    pthread_mutex_lock(&bi->lock);
    if ((p = pending_find(bi, id)) != NULL) {
        *ref = *p;
        pthread_mutex_unlock(&bi->lock);
        return 0;
    }
    sqlite3_reset(st);
    sqlite3_bind_blob(st, 1, id, CBFS_BLOCK_ID_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, bi->run, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *pack = (const char *) sqlite3_column_text(st, 0);
        if (pack && cbfs_pack_name_valid(pack) &&
            !(bi->navoid && bsearch(&pack, bi->avoid, bi->navoid, sizeof(char *), cbfs_cmp_strp))) {
            memcpy(ref->id, id, CBFS_BLOCK_ID_LEN);
            strcpy(ref->pack, pack);
            ref->offset = (uint64_t) sqlite3_column_int64(st, 1);
            ref->stored_len = (uint32_t) sqlite3_column_int64(st, 2);
            ref->raw_len = (uint32_t) sqlite3_column_int64(st, 3);
            rc = 0;
        }
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&bi->lock);
    return rc;
}

void cbfs_blockindex_avoid(CbfsBlockIndex *bi, char **packs, size_t n)
{
    pthread_mutex_lock(&bi->lock);
    for (size_t i = 0; i < bi->navoid; i++)
        free(bi->avoid[i]);
    free(bi->avoid);
    bi->avoid = packs;
    bi->navoid = n;
    pthread_mutex_unlock(&bi->lock);
}

int cbfs_blockindex_add(CbfsBlockIndex *bi, const CbfsBlockRef *ref, CbfsError *err)
{
    int rc = 0;

    pthread_mutex_lock(&bi->lock);
    if (!pending_find(bi, ref->id)) {
        size_t s = slot_of(ref->id);
        if (bi->npending == BATCH_ROWS && (rc = flush_pending(bi, err)) < 0) {
            pthread_mutex_unlock(&bi->lock);
            return rc;
        }
        s = slot_of(ref->id);
        while (bi->slots[s])
            s = (s + 1) % (2 * BATCH_ROWS);
        bi->pending[bi->npending] = *ref;
        bi->slots[s] = (uint16_t) (++bi->npending);
    }
    pthread_mutex_unlock(&bi->lock);
    return rc;
}

static int set_pack(CbfsBlockIndex *bi, const char *pack, int stored, CbfsError *err)
{
    sqlite3_stmt *st;
    int rc = 0;

    pthread_mutex_lock(&bi->lock);
    /* the rows go first, so a pack marked stored always has its blocks */
    if (stored && (rc = flush_pending(bi, err)) < 0) {
        /* err is set */
    } else if (sqlite3_prepare_v2(
                   bi->db, "INSERT OR REPLACE INTO packs(name, stored, run) VALUES (?, ?, ?)", -1,
                   &st, NULL) != SQLITE_OK) {
        rc = db_error(bi, err);
    } else {
        sqlite3_bind_text(st, 1, pack, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, stored);
        sqlite3_bind_text(st, 3, bi->run, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(bi, err);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&bi->lock);
    return rc;
}

int cbfs_blockindex_pack_stored(CbfsBlockIndex *bi, const char *pack, CbfsError *err)
{
    return set_pack(bi, pack, 1, err);
}

/* Register a pack of this run before its first block is added. */
int cbfs_blockindex_pack_begin(CbfsBlockIndex *bi, const char *pack, CbfsError *err)
{
    return set_pack(bi, pack, 0, err);
}
