/*
 * overlay.c - persistent state of the writable layer.  See overlay.h.
 *
 * overlay.db runs with synchronous=FULL: a namespace change (create,
 * unlink, rename, chmod, truncate) is durable when the FUSE request that made
 * it is answered, which is what PostgreSQL's fsync of a directory expects.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cbfs/util.h"
#include "overlay.h"

struct Overlay {
    int lock_fd; /* flock held while mounted: one mount per overlay */
    sqlite3 *db;
    char *dir;
    uint64_t next_ino;
};

#define FIRST_OVERLAY_INO (1ull << 40)

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS inodes(ino INTEGER PRIMARY KEY, base_id INT NOT NULL,"
    " type INT NOT NULL, mode INT NOT NULL, size INT NOT NULL, mtime_ns INT NOT NULL,"
    " ctime_ns INT NOT NULL, nlink INT NOT NULL, target TEXT, base_limit INT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS dirents(parent INT NOT NULL, name TEXT NOT NULL,"
    " ino INT NOT NULL, PRIMARY KEY(parent, name)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS whiteouts(parent INT NOT NULL, name TEXT NOT NULL,"
    " PRIMARY KEY(parent, name)) WITHOUT ROWID;";

static char *meta_get(Overlay *o, const char *key)
{
    sqlite3_stmt *st;
    char *v = NULL;
    if (sqlite3_prepare_v2(o->db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL))
        return NULL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = cbfs_xstrdup((const char *) sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

static int meta_set(Overlay *o, const char *key, const char *value)
{
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(o->db, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", -1, &st,
                           NULL))
        return -EIO;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    return rc;
}

int overlay_open(const char *dir, const char *repo_id, const char *label, bool *ret_created,
                 Overlay **ret, CbfsError *err)
{
    Overlay *o = cbfs_xcalloc(1, sizeof(*o));
    char *path, *data, *rid, *lab, *next;
    int rc;

    o->dir = cbfs_xstrdup(dir);
    o->lock_fd = -1;
    data = cbfs_xasprintf("%s/data", dir);
    rc = cbfs_mkdir_p(data, 0700, err);
    free(data);
    if (rc < 0) {
        overlay_close(o);
        return rc;
    }
    /* a mount that was just unmounted may still be writing its state back:
     * wait for it a while before calling the overlay busy */
    path = cbfs_xasprintf("%s/lock", dir);
    o->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(path);
    for (int i = 0; o->lock_fd >= 0 && flock(o->lock_fd, LOCK_EX | LOCK_NB) < 0; i++) {
        if (errno != EWOULDBLOCK || i == 100) {
            overlay_close(o);
            return cbfs_error_set(err, EBUSY, CBFS_EXIT_USAGE,
                                  "overlay \"%s\" is in use by another mount", dir);
        }
        usleep(100000);
    }
    path = cbfs_xasprintf("%s/overlay.db", dir);
    if (sqlite3_open_v2(path, &o->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) ||
        sqlite3_exec(o->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL,
                     NULL) ||
        sqlite3_exec(o->db, schema, NULL, NULL, NULL)) {
        rc = cbfs_error_set(err, EIO, CBFS_EXIT_ERROR, "could not open overlay \"%s\": %s", path,
                            o->db ? sqlite3_errmsg(o->db) : "out of memory");
        free(path);
        overlay_close(o);
        return rc;
    }
    free(path);
    rid = meta_get(o, "repository_id");
    lab = meta_get(o, "label");
    if (!rid) {
        if (meta_set(o, "repository_id", repo_id) < 0 || meta_set(o, "label", label) < 0) {
            overlay_close(o);
            return cbfs_error_set(err, EIO, CBFS_EXIT_ERROR, "could not initialize overlay \"%s\"",
                                  dir);
        }
        *ret_created = true;
    } else {
        *ret_created = false;
        if (strcmp(rid, repo_id) != 0 || !lab || strcmp(lab, label) != 0) {
            rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                                "overlay \"%s\" belongs to backup \"%s\" of another mount, not "
                                "\"%s\"",
                                dir, lab ? lab : "?", label);
            free(rid);
            free(lab);
            overlay_close(o);
            return rc;
        }
    }
    free(rid);
    free(lab);
    next = meta_get(o, "next_ino");
    o->next_ino = next ? strtoull(next, NULL, 10) : FIRST_OVERLAY_INO;
    free(next);
    *ret = o;
    return 0;
}

void overlay_close(Overlay *o)
{
    if (!o)
        return;
    sqlite3_close(o->db);
    if (o->lock_fd >= 0)
        close(o->lock_fd);
    free(o->dir);
    free(o);
}

const char *overlay_dir(const Overlay *o)
{
    return o->dir;
}

int overlay_begin(Overlay *o)
{
    return sqlite3_exec(o->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) ? -EIO : 0;
}

int overlay_commit(Overlay *o)
{
    return sqlite3_exec(o->db, "COMMIT", NULL, NULL, NULL) ? -EIO : 0;
}

void overlay_rollback(Overlay *o)
{
    sqlite3_exec(o->db, "ROLLBACK", NULL, NULL, NULL);
}

int overlay_get_inode(Overlay *o, uint64_t ino, OvInode *ret)
{
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(o->db,
                           "SELECT base_id, type, mode, size, mtime_ns, ctime_ns, nlink, target,"
                           " base_limit FROM inodes WHERE ino = ?",
                           -1, &st, NULL))
        return -EIO;
    sqlite3_bind_int64(st, 1, (int64_t) ino);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *t = (const char *) sqlite3_column_text(st, 7);
        ret->ino = ino;
        ret->base_id = sqlite3_column_int64(st, 0);
        ret->type = sqlite3_column_int(st, 1);
        ret->mode = (uint32_t) sqlite3_column_int(st, 2);
        ret->size = (uint64_t) sqlite3_column_int64(st, 3);
        ret->mtime_ns = sqlite3_column_int64(st, 4);
        ret->ctime_ns = sqlite3_column_int64(st, 5);
        ret->nlink = (uint32_t) sqlite3_column_int(st, 6);
        ret->target = t ? cbfs_xstrdup(t) : NULL;
        ret->base_limit = (uint64_t) sqlite3_column_int64(st, 8);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
    }
    sqlite3_finalize(st);
    return rc;
}

int overlay_put_inode(Overlay *o, const OvInode *in)
{
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(o->db,
                           "INSERT OR REPLACE INTO inodes(ino, base_id, type, mode, size, mtime_ns,"
                           " ctime_ns, nlink, target, base_limit) VALUES (?,?,?,?,?,?,?,?,?,?)",
                           -1, &st, NULL))
        return -EIO;
    sqlite3_bind_int64(st, 1, (int64_t) in->ino);
    sqlite3_bind_int64(st, 2, in->base_id);
    sqlite3_bind_int(st, 3, in->type);
    sqlite3_bind_int(st, 4, (int) in->mode);
    sqlite3_bind_int64(st, 5, (int64_t) in->size);
    sqlite3_bind_int64(st, 6, in->mtime_ns);
    sqlite3_bind_int64(st, 7, in->ctime_ns);
    sqlite3_bind_int(st, 8, (int) in->nlink);
    if (in->target)
        sqlite3_bind_text(st, 9, in->target, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 9);
    sqlite3_bind_int64(st, 10, (int64_t) in->base_limit);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    return rc;
}

static int exec_u64_text(Overlay *o, const char *sql, uint64_t a, const char *b, uint64_t c,
                         int nparams)
{
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(o->db, sql, -1, &st, NULL))
        return -EIO;
    sqlite3_bind_int64(st, 1, (int64_t) a);
    if (nparams >= 2)
        sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    if (nparams >= 3)
        sqlite3_bind_int64(st, 3, (int64_t) c);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    return rc;
}

int overlay_delete_inode(Overlay *o, uint64_t ino)
{
    return exec_u64_text(o, "DELETE FROM inodes WHERE ino = ?", ino, NULL, 0, 1);
}

uint64_t overlay_new_ino(Overlay *o)
{
    char buf[32];
    uint64_t ino = o->next_ino++;
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long) o->next_ino);
    meta_set(o, "next_ino", buf);
    return ino;
}

int overlay_lookup(Overlay *o, uint64_t parent, const char *name, uint64_t *ret_ino)
{
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(o->db,
                           "SELECT ino, 0 FROM dirents WHERE parent = ?1 AND name = ?2"
                           " UNION ALL SELECT 0, 1 FROM whiteouts WHERE parent = ?1 AND name = ?2",
                           -1, &st, NULL))
        return -EIO;
    sqlite3_bind_int64(st, 1, (int64_t) parent);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    rc = -ENOENT;
    /* a dirent wins over a whiteout of the same name */
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (sqlite3_column_int(st, 1) == 0) {
            *ret_ino = (uint64_t) sqlite3_column_int64(st, 0);
            rc = 0;
            break;
        }
        rc = 1;
    }
    sqlite3_finalize(st);
    return rc;
}

int overlay_add_dirent(Overlay *o, uint64_t parent, const char *name, uint64_t ino)
{
    return exec_u64_text(o, "INSERT OR REPLACE INTO dirents(parent, name, ino) VALUES (?,?,?)",
                         parent, name, ino, 3);
}

int overlay_remove_dirent(Overlay *o, uint64_t parent, const char *name)
{
    return exec_u64_text(o, "DELETE FROM dirents WHERE parent = ? AND name = ?", parent, name, 0,
                         2);
}

int overlay_add_whiteout(Overlay *o, uint64_t parent, const char *name)
{
    return exec_u64_text(o, "INSERT OR IGNORE INTO whiteouts(parent, name) VALUES (?,?)", parent,
                         name, 0, 2);
}

int overlay_remove_whiteout(Overlay *o, uint64_t parent, const char *name)
{
    return exec_u64_text(o, "DELETE FROM whiteouts WHERE parent = ? AND name = ?", parent, name, 0,
                         2);
}

int overlay_list(Overlay *o, uint64_t parent, overlay_entry_cb cb, void *ctx)
{
    sqlite3_stmt *st;
    int rc = 0;
    if (sqlite3_prepare_v2(o->db,
                           "SELECT name, ino, 0 FROM dirents WHERE parent = ?1"
                           " UNION ALL SELECT name, 0, 1 FROM whiteouts WHERE parent = ?1",
                           -1, &st, NULL))
        return -EIO;
    sqlite3_bind_int64(st, 1, (int64_t) parent);
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW)
        rc = cb((const char *) sqlite3_column_text(st, 0), (uint64_t) sqlite3_column_int64(st, 1),
                sqlite3_column_int(st, 2) == 1, ctx);
    sqlite3_finalize(st);
    return rc;
}

char *overlay_data_path(Overlay *o, uint64_t ino)
{
    return cbfs_xasprintf("%s/data/%llu", o->dir, (unsigned long long) ino);
}

char *overlay_map_path(Overlay *o, uint64_t ino)
{
    return cbfs_xasprintf("%s/data/%llu.map", o->dir, (unsigned long long) ino);
}
