/*
 * sqlerr.h - what a failed SQLite call means to the user: the file
 * system's own error where there is one.
 *
 * SQLite reports a full disk as SQLITE_FULL ("database or disk is full")
 * and most failed reads and writes as SQLITE_IOERR ("disk I/O error"),
 * with the system call's errno kept aside.  A full disk must read as a
 * full disk ("No space left on device"), whatever SQLite called it.
 */
#ifndef CBFS_SQLERR_H
#define CBFS_SQLERR_H

#include <sqlite3.h>

/* The errno of db's last failure: ENOSPC for a full file system or quota,
 * the system call's errno behind an I/O error, else EIO. */
int cbfs_sqlite_errno(sqlite3 *db);

/* db's last failure as one line: strerror() of the errno behind a full
 * disk or an I/O error, else SQLite's own message. */
const char *cbfs_sqlite_errmsg(sqlite3 *db);

#endif
