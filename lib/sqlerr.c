/*
 * sqlerr.c - SQLite's failures in the file system's words (see sqlerr.h).
 */
#include <errno.h>
#include <string.h>

#include "cbfs/sqlerr.h"

int cbfs_sqlite_errno(sqlite3 *db)
{
    int code = sqlite3_errcode(db), se = sqlite3_system_errno(db);

    /* the system errno is that of the last system call that failed, maybe
     * long ago: it only explains an I/O error or a full disk */
    if (code == SQLITE_FULL)
        return ENOSPC;
    if (code == SQLITE_IOERR && (se == ENOSPC || se == EDQUOT))
        return ENOSPC;
    if (code == SQLITE_IOERR && se > 0)
        return se;
    return EIO;
}

const char *cbfs_sqlite_errmsg(sqlite3 *db)
{
    int code = sqlite3_errcode(db);

    if (code == SQLITE_FULL || (code == SQLITE_IOERR && sqlite3_system_errno(db) > 0))
        return strerror(cbfs_sqlite_errno(db));
    return sqlite3_errmsg(db);
}
