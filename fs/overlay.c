/*
 * overlay.c - persistent state of the writable layer.  See overlay.h.
 *
 * overlay.db runs in WAL mode with synchronous=NORMAL: a namespace change
 * (create, unlink, rename, chmod, truncate) is atomic when the FUSE request
 * that made it is answered, and durable after overlay_sync (an fdatasync
 * of the WAL file), which fsync of a file or a folder calls: what
 * PostgreSQL's fsync of a file, then of its folder, expects.  (SQLite syncs
 * the WAL before a checkpoint and the database after it, and the WAL's
 * header before it is reused, so a synced WAL is all a commit needs.)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cbfs/log.h"
#include "cbfs/sqlerr.h"
#include "cbfs/util.h"
#include "overlay.h"

/* The statements the mount runs on every namespace change, prepared once
 * (parsing them each time was a fifth of the daemon's CPU replaying
 * DDL-heavy WAL). */
enum {
    ST_META_GET,
    ST_META_SET,
    ST_BEGIN,
    ST_COMMIT,
    ST_GET_INODE,
    ST_PUT_INODE,
    ST_DELETE_INODE,
    ST_LOOKUP,
    ST_ADD_DIRENT,
    ST_REMOVE_DIRENT,
    ST_ADD_WHITEOUT,
    ST_REMOVE_WHITEOUT,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?",
    [ST_META_SET] = "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_GET_INODE] = "SELECT base_id, type, mode, size, mtime_ns, ctime_ns, nlink, target,"
                     " base_limit FROM inodes WHERE ino = ?",
    [ST_PUT_INODE] = "INSERT OR REPLACE INTO inodes(ino, base_id, type, mode, size, mtime_ns,"
                     " ctime_ns, nlink, target, base_limit) VALUES (?,?,?,?,?,?,?,?,?,?)",
    [ST_DELETE_INODE] = "DELETE FROM inodes WHERE ino = ?",
    [ST_LOOKUP] = "SELECT ino, 0 FROM dirents WHERE parent = ?1 AND name = ?2"
                  " UNION ALL SELECT 0, 1 FROM whiteouts WHERE parent = ?1 AND name = ?2",
    [ST_ADD_DIRENT] = "INSERT OR REPLACE INTO dirents(parent, name, ino) VALUES (?,?,?)",
    [ST_REMOVE_DIRENT] = "DELETE FROM dirents WHERE parent = ? AND name = ?",
    [ST_ADD_WHITEOUT] = "INSERT OR IGNORE INTO whiteouts(parent, name) VALUES (?,?)",
    [ST_REMOVE_WHITEOUT] = "DELETE FROM whiteouts WHERE parent = ? AND name = ?",
};

struct Overlay {
    int lock_fd; /* flock held while mounted: one mount per overlay */
    sqlite3 *db;
    char *dir;
    pthread_mutex_t sync_lock;
    int wal_fd;     /* overlay.db-wal, opened at the first sync */
    int64_t synced; /* sqlite3_total_changes64 at the last sync */
    uint64_t next_ino;
    uint64_t reserve; /* bytes data may not take: for overlay.db and page maps */
    uint64_t spare;   /* size of the spare file (0: none, or given up) */
    int spare_held;   /* the spare file holds its space: 1, 0, or -1 not known yet */
    pthread_mutex_t spare_lock;
    int64_t space_checked; /* atomic: when free space was last read (ns) */
    uint64_t space_free;   /* atomic: free bytes then, less what was since allocated */
    pthread_mutex_t stmt_lock;
    sqlite3_stmt *stmts[ST_COUNT];
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

/* The errno for the statement that just failed: a full file system (or
 * quota) is ENOSPC, as it would be for a local file; anything else EIO. */
static int ov_errno(Overlay *o)
{
    int e = cbfs_sqlite_errno(o->db);
    cbfs_error("overlay \"%s\": %s", o->dir, cbfs_sqlite_errmsg(o->db));
    return e == ENOSPC ? -ENOSPC : -EIO;
}

/* Statement `which`, prepared at its first use, with o->stmt_lock held
 * (NULL if it would not prepare: the lock is held all the same).  Every
 * stmt_take is followed by one stmt_give. */
static sqlite3_stmt *stmt_take(Overlay *o, int which)
{
    pthread_mutex_lock(&o->stmt_lock);
    if (!o->stmts[which] && sqlite3_prepare_v3(o->db, stmt_sql[which], -1,
                                               SQLITE_PREPARE_PERSISTENT, &o->stmts[which], NULL))
        o->stmts[which] = NULL;
    return o->stmts[which];
}

static void stmt_give(Overlay *o, sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    pthread_mutex_unlock(&o->stmt_lock);
}

/* Run statement `which`, which returns no rows, with up to three
 * parameters: an integer, a text and an integer (nparams says how many). */
static int stmt_exec(Overlay *o, int which, uint64_t a, const char *b, uint64_t c, int nparams)
{
    sqlite3_stmt *st = stmt_take(o, which);
    int rc;
    if (!st) {
        rc = ov_errno(o);
        stmt_give(o, st);
        return rc;
    }
    if (nparams >= 1)
        sqlite3_bind_int64(st, 1, (int64_t) a);
    if (nparams >= 2)
        sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    if (nparams >= 3)
        sqlite3_bind_int64(st, 3, (int64_t) c);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : ov_errno(o);
    stmt_give(o, st);
    return rc;
}

static char *meta_get(Overlay *o, const char *key)
{
    sqlite3_stmt *st = stmt_take(o, ST_META_GET);
    char *v = NULL;
    if (st) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            v = cbfs_xstrdup((const char *) sqlite3_column_text(st, 0));
    }
    stmt_give(o, st);
    return v;
}

static int meta_set(Overlay *o, const char *key, const char *value)
{
    sqlite3_stmt *st = stmt_take(o, ST_META_SET);
    int rc;
    if (!st) {
        rc = ov_errno(o);
    } else {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : ov_errno(o);
    }
    stmt_give(o, st);
    return rc;
}

/*
 * The spare file: space set aside on the overlay's file system that only
 * the overlay's own records may use.  Data written through the mount
 * leaves o->reserve free (overlay_make_room), but what PostgreSQL writes
 * into the overlay's pg_wal, or anything else on that file system, can
 * take the last byte; then a rename, an unlink or the row of a new file
 * would fail.  So when free space runs out, the spare file is emptied
 * before the next change of overlay.db (all of it at once: a writer that
 * keeps going, PostgreSQL's WAL, takes a part, the records have the rest),
 * and made again once there is plenty of room.
 */
#define SPARE_LOW (256u << 10) /* free bytes below which the spare is used */

static void spare_check(Overlay *o)
{
    struct statvfs sv;
    char *path;
    uint64_t avail;
    struct stat st;
    int fd;

    /* a statvfs on every call; the file itself is only opened to change it
     * (and once, to learn what it holds) */
    if (!o->spare || statvfs(o->dir, &sv) < 0)
        return;
    avail = (uint64_t) sv.f_bavail * sv.f_frsize;
    pthread_mutex_lock(&o->spare_lock);
    if ((o->spare_held == 0 && avail <= 4 * o->reserve + o->spare) ||
        (o->spare_held == 1 && avail >= SPARE_LOW)) {
        pthread_mutex_unlock(&o->spare_lock);
        return;
    }
    path = cbfs_xasprintf("%s/spare", o->dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0 && fstat(fd, &st) == 0) {
        uint64_t have = (uint64_t) st.st_blocks * 512;
        o->spare_held = have >= o->spare;
        if (avail < SPARE_LOW && have > 0) {
            if (ftruncate(fd, 0) == 0) {
                o->spare_held = 0;
                cbfs_warning("overlay \"%s\": its file system is full; the space set aside for "
                             "its records is in use",
                             o->dir);
            }
        } else if (have < o->spare && avail > 4 * o->reserve + o->spare) {
            /* fallocate proper: where the file system has none, no spare
             * (posix_fallocate would write it out, again and again) */
            if (fallocate(fd, 0, 0, (off_t) o->spare) == 0)
                o->spare_held = 1;
            else if (errno == EOPNOTSUPP)
                o->spare = 0;
        }
    }
    if (fd >= 0)
        close(fd);
    pthread_mutex_unlock(&o->spare_lock);
    free(path);
}

int overlay_open(const char *dir, const char *repo_id, const char *label, bool *ret_created,
                 Overlay **ret, CbfsError *err)
{
    Overlay *o = cbfs_xcalloc(1, sizeof(*o));
    pthread_mutex_init(&o->spare_lock, NULL);
    pthread_mutex_init(&o->sync_lock, NULL);
    pthread_mutex_init(&o->stmt_lock, NULL);
    o->wal_fd = -1;
    o->spare_held = -1;
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
        sqlite3_exec(o->db,
                     "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL;"
                     " PRAGMA synchronous=NORMAL;",
                     NULL, NULL, NULL) ||
        sqlite3_exec(o->db, schema, NULL, NULL, NULL)) {
        rc = cbfs_error_set(err, EIO, CBFS_EXIT_ERROR, "could not open overlay \"%s\": %s", path,
                            o->db ? cbfs_sqlite_errmsg(o->db) : "out of memory");
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
    {
        /* a 32nd of the file system, from 1 MB to 64 MB */
        struct statvfs sv;
        uint64_t size = statvfs(dir, &sv) == 0 ? (uint64_t) sv.f_blocks * sv.f_frsize : 0;
        o->reserve = size / 32;
        if (o->reserve < (1u << 20))
            o->reserve = 1u << 20;
        if (o->reserve > (64u << 20))
            o->reserve = 64u << 20;
        o->spare = o->reserve / 2;
    }
    spare_check(o);
    *ret = o;
    return 0;
}

int overlay_make_room(Overlay *o, uint64_t len)
{
    int64_t now = cbfs_now_ns(), then = __atomic_load_n(&o->space_checked, __ATOMIC_RELAXED);
    uint64_t free_now = __atomic_load_n(&o->space_free, __ATOMIC_RELAXED);

    /* free space is read again every 100 ms, and on every call once it
     * comes near the reserve; in between, what was handed out is counted */
    if (then == 0 || now - then > 100000000 || free_now < 4 * o->reserve + len) {
        struct statvfs sv;
        if (statvfs(o->dir, &sv) < 0)
            return 0; /* cannot tell: the write itself will say */
        free_now = (uint64_t) sv.f_bavail * sv.f_frsize;
        __atomic_store_n(&o->space_checked, now, __ATOMIC_RELAXED);
    }
    if (free_now < o->reserve + len)
        return -ENOSPC;
    __atomic_store_n(&o->space_free, free_now - len, __ATOMIC_RELAXED);
    return 0;
}

bool overlay_headroom(Overlay *o, uint64_t headroom)
{
    struct statvfs sv;
    uint64_t floor = 8 * o->reserve > headroom ? 8 * o->reserve : headroom;
    return statvfs(o->dir, &sv) == 0 && (uint64_t) sv.f_bavail * sv.f_frsize >= floor;
}

void overlay_close(Overlay *o)
{
    if (!o)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(o->stmts[i]);
    sqlite3_close(o->db); /* a last checkpoint, synced */
    if (o->wal_fd >= 0)
        close(o->wal_fd);
    pthread_mutex_destroy(&o->spare_lock);
    pthread_mutex_destroy(&o->sync_lock);
    pthread_mutex_destroy(&o->stmt_lock);
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
    spare_check(o);
    return stmt_exec(o, ST_BEGIN, 0, NULL, 0, 0);
}

int overlay_commit(Overlay *o)
{
    return stmt_exec(o, ST_COMMIT, 0, NULL, 0, 0);
}

int overlay_sync(Overlay *o)
{
    int64_t want = sqlite3_total_changes64(o->db);
    int rc = 0;

    pthread_mutex_lock(&o->sync_lock);
    if (want > o->synced) {
        if (o->wal_fd < 0) {
            char *path = cbfs_xasprintf("%s/overlay.db-wal", o->dir);
            o->wal_fd = open(path, O_RDWR | O_CLOEXEC);
            free(path);
        }
        if (o->wal_fd < 0 || fdatasync(o->wal_fd) < 0)
            rc = errno == ENOSPC || errno == EDQUOT ? -ENOSPC : -EIO;
        else
            o->synced = want;
    }
    pthread_mutex_unlock(&o->sync_lock);
    return rc;
}

void overlay_rollback(Overlay *o)
{
    sqlite3_exec(o->db, "ROLLBACK", NULL, NULL, NULL);
}

int overlay_get_inode(Overlay *o, uint64_t ino, OvInode *ret)
{
    sqlite3_stmt *st = stmt_take(o, ST_GET_INODE);
    int rc;
    if (!st) {
        rc = ov_errno(o);
        stmt_give(o, st);
        return rc;
    }
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
        rc = rc == SQLITE_DONE ? -ENOENT : ov_errno(o);
    }
    stmt_give(o, st);
    return rc;
}

int overlay_put_inode(Overlay *o, const OvInode *in)
{
    spare_check(o);
    sqlite3_stmt *st = stmt_take(o, ST_PUT_INODE);
    int rc;
    if (!st) {
        rc = ov_errno(o);
        stmt_give(o, st);
        return rc;
    }
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
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : ov_errno(o);
    stmt_give(o, st);
    return rc;
}

int overlay_delete_inode(Overlay *o, uint64_t ino)
{
    return stmt_exec(o, ST_DELETE_INODE, ino, NULL, 0, 1);
}

int overlay_new_ino(Overlay *o, uint64_t *ret)
{
    char buf[32];
    /* the counter moves on even if the row fails: a number handed out
     * in a transaction rolled back is never handed out again */
    *ret = o->next_ino++;
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long) o->next_ino);
    return meta_set(o, "next_ino", buf);
}

int overlay_lookup(Overlay *o, uint64_t parent, const char *name, uint64_t *ret_ino)
{
    sqlite3_stmt *st = stmt_take(o, ST_LOOKUP);
    int rc;
    if (!st) {
        rc = ov_errno(o);
        stmt_give(o, st);
        return rc;
    }
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
    stmt_give(o, st);
    return rc;
}

int overlay_add_dirent(Overlay *o, uint64_t parent, const char *name, uint64_t ino)
{
    return stmt_exec(o, ST_ADD_DIRENT, parent, name, ino, 3);
}

int overlay_remove_dirent(Overlay *o, uint64_t parent, const char *name)
{
    return stmt_exec(o, ST_REMOVE_DIRENT, parent, name, 0, 2);
}

int overlay_add_whiteout(Overlay *o, uint64_t parent, const char *name)
{
    return stmt_exec(o, ST_ADD_WHITEOUT, parent, name, 0, 2);
}

int overlay_remove_whiteout(Overlay *o, uint64_t parent, const char *name)
{
    return stmt_exec(o, ST_REMOVE_WHITEOUT, parent, name, 0, 2);
}

int overlay_list(Overlay *o, uint64_t parent, overlay_entry_cb cb, void *ctx)
{
    sqlite3_stmt *st;
    int rc = 0;
    if (sqlite3_prepare_v2(o->db,
                           "SELECT name, ino, 0 FROM dirents WHERE parent = ?1"
                           " UNION ALL SELECT name, 0, 1 FROM whiteouts WHERE parent = ?1",
                           -1, &st, NULL))
        return ov_errno(o);
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
