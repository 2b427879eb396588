/*
 * lazyvfs.c - the VFS "cbfs-lazy".  See lazyvfs.h.
 *
 * The database is opened as "file:/cbfs-lazy/<n>?immutable=1": immutable,
 * so SQLite takes no locks and never looks for a journal; <n> names an
 * entry of a small table that hands the CbfsMobject to xOpen.  Any other
 * file goes to the default VFS, whose file objects fit in ours
 * (szOsFile is the larger of the two).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/lazyvfs.h"
#include "cbfs/util.h"

#define VFS_NAME "cbfs-lazy"
#define PREFIX   "/cbfs-lazy/"

typedef struct LazyFile {
    sqlite3_file base;
    CbfsMobject *mo;
} LazyFile;

typedef struct Pending {
    unsigned long n;
    CbfsMobject *mo;
    struct Pending *next;
} Pending;

static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static Pending *pending;
static unsigned long pending_next;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static sqlite3_vfs lazy_vfs;
static sqlite3_vfs *base_vfs;

static int lazy_close(sqlite3_file *f)
{
    (void) f;
    return SQLITE_OK;
}

static int lazy_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
    LazyFile *lf = (LazyFile *) f;
    uint64_t size = cbfs_mobject_size(lf->mo);
    size_t n = amt;

    if (off < 0)
        return SQLITE_IOERR_READ;
    if ((uint64_t) off >= size)
        n = 0;
    else if ((uint64_t) off + n > size)
        n = (size_t) (size - (uint64_t) off);
    /* the error is kept by mo for the caller (cbfs_mobject_take_error) */
    if (n && cbfs_mobject_read(lf->mo, (uint64_t) off, n, buf, NULL) < 0)
        return SQLITE_IOERR_READ;
    if (n < (size_t) amt) {
        memset((char *) buf + n, 0, (size_t) amt - n);
        return SQLITE_IOERR_SHORT_READ;
    }
    return SQLITE_OK;
}

static int lazy_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
    (void) f, (void) buf, (void) amt, (void) off;
    return SQLITE_READONLY;
}

static int lazy_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    (void) f, (void) size;
    return SQLITE_READONLY;
}

static int lazy_sync(sqlite3_file *f, int flags)
{
    (void) f, (void) flags;
    return SQLITE_OK;
}

static int lazy_size(sqlite3_file *f, sqlite3_int64 *ret)
{
    *ret = (sqlite3_int64) cbfs_mobject_size(((LazyFile *) f)->mo);
    return SQLITE_OK;
}

static int lazy_lock(sqlite3_file *f, int level)
{
    (void) f, (void) level;
    return SQLITE_OK;
}

static int lazy_reserved(sqlite3_file *f, int *ret)
{
    (void) f;
    *ret = 0;
    return SQLITE_OK;
}

static int lazy_control(sqlite3_file *f, int op, void *arg)
{
    (void) f, (void) op, (void) arg;
    return SQLITE_NOTFOUND;
}

static int lazy_sector(sqlite3_file *f)
{
    (void) f;
    return CBFS_MOBJECT_CHUNK;
}

static int lazy_caps(sqlite3_file *f)
{
    (void) f;
    return SQLITE_IOCAP_IMMUTABLE;
}

static const sqlite3_io_methods lazy_methods = {
    .iVersion = 1,
    .xClose = lazy_close,
    .xRead = lazy_read,
    .xWrite = lazy_write,
    .xTruncate = lazy_truncate,
    .xSync = lazy_sync,
    .xFileSize = lazy_size,
    .xLock = lazy_lock,
    .xUnlock = lazy_lock,
    .xCheckReservedLock = lazy_reserved,
    .xFileControl = lazy_control,
    .xSectorSize = lazy_sector,
    .xDeviceCharacteristics = lazy_caps,
};

static CbfsMobject *take_pending(const char *name)
{
    char *end;
    unsigned long n;
    CbfsMobject *mo = NULL;

    if (strncmp(name, PREFIX, strlen(PREFIX)) != 0)
        return NULL;
    n = strtoul(name + strlen(PREFIX), &end, 10);
    if (*end)
        return NULL;
    pthread_mutex_lock(&pending_lock);
    for (Pending **p = &pending; *p; p = &(*p)->next) {
        if ((*p)->n == n) {
            Pending *e = *p;
            mo = e->mo;
            *p = e->next;
            free(e);
            break;
        }
    }
    pthread_mutex_unlock(&pending_lock);
    return mo;
}

static int lazy_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    LazyFile *lf = (LazyFile *) f;
    CbfsMobject *mo;
    (void) vfs;

    if (!name || !(flags & SQLITE_OPEN_MAIN_DB) || !(mo = take_pending(name)))
        return base_vfs->xOpen(base_vfs, name, f, flags, out);
    if (flags & (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE))
        return SQLITE_READONLY;
    memset(lf, 0, sizeof(*lf));
    lf->base.pMethods = &lazy_methods;
    lf->mo = mo;
    if (out)
        *out = SQLITE_OPEN_READONLY;
    return SQLITE_OK;
}

static int lazy_delete(sqlite3_vfs *vfs, const char *name, int sync)
{
    (void) vfs;
    return base_vfs->xDelete(base_vfs, name, sync);
}

static int lazy_access(sqlite3_vfs *vfs, const char *name, int flags, int *ret)
{
    (void) vfs;
    if (strncmp(name, PREFIX, strlen(PREFIX)) == 0) {
        *ret = 0; /* no journal, no WAL file: never */
        return SQLITE_OK;
    }
    return base_vfs->xAccess(base_vfs, name, flags, ret);
}

static int lazy_fullpath(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    (void) vfs;
    if (strncmp(name, PREFIX, strlen(PREFIX)) == 0) {
        snprintf(out, (size_t) n, "%s", name);
        return SQLITE_OK;
    }
    return base_vfs->xFullPathname(base_vfs, name, n, out);
}

static int lazy_random(sqlite3_vfs *vfs, int n, char *out)
{
    (void) vfs;
    return base_vfs->xRandomness(base_vfs, n, out);
}

static int lazy_sleep(sqlite3_vfs *vfs, int us)
{
    (void) vfs;
    return base_vfs->xSleep(base_vfs, us);
}

static int lazy_time(sqlite3_vfs *vfs, double *ret)
{
    (void) vfs;
    return base_vfs->xCurrentTime(base_vfs, ret);
}

static int lazy_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void) vfs;
    return base_vfs->xGetLastError ? base_vfs->xGetLastError(base_vfs, n, out) : 0;
}

static void register_vfs(void)
{
    base_vfs = sqlite3_vfs_find(NULL);
    lazy_vfs = (sqlite3_vfs){
        .iVersion = 1,
        .szOsFile = base_vfs->szOsFile > (int) sizeof(LazyFile) ? base_vfs->szOsFile
                                                                : (int) sizeof(LazyFile),
        .mxPathname = base_vfs->mxPathname,
        .zName = VFS_NAME,
        .xOpen = lazy_open,
        .xDelete = lazy_delete,
        .xAccess = lazy_access,
        .xFullPathname = lazy_fullpath,
        .xRandomness = lazy_random,
        .xSleep = lazy_sleep,
        .xCurrentTime = lazy_time,
        .xGetLastError = lazy_last_error,
    };
    sqlite3_vfs_register(&lazy_vfs, 0);
}

int cbfs_lazyvfs_open(CbfsMobject *mo, sqlite3 **ret, CbfsError *err)
{
    Pending *p = cbfs_xcalloc(1, sizeof(*p));
    char uri[96], name[48];
    sqlite3 *db = NULL;
    int rc;

    pthread_once(&once, register_vfs);
    pthread_mutex_lock(&pending_lock);
    p->n = ++pending_next;
    p->mo = mo;
    p->next = pending;
    pending = p;
    pthread_mutex_unlock(&pending_lock);
    snprintf(name, sizeof(name), PREFIX "%lu", p->n);
    snprintf(uri, sizeof(uri), "file:%s?immutable=1", name);
    rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, VFS_NAME);
    take_pending(name); /* if SQLite never opened it */
    if (rc != SQLITE_OK) {
        if (cbfs_mobject_take_error(mo, err))
            rc = -EIO;
        else
            rc = cbfs_error_set(err, EIO, CBFS_EXIT_ERROR, "could not open manifest \"%s\": %s",
                                cbfs_mobject_name(mo), db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return rc;
    }
    *ret = db;
    return 0;
}

void cbfs_lazyvfs_close(sqlite3 *db)
{
    sqlite3_close(db);
}
