/*
 * lazyvfs.h - SQLite reading a manifest object in place (mobject.h): a VFS
 * whose main database file is a CbfsMobject, so a query fetches only the
 * pages it touches, each chunk checked before SQLite sees it.  Every other
 * file SQLite opens (temporary ones for sorting) is the default VFS's.
 */
#ifndef CBFS_LAZYVFS_H
#define CBFS_LAZYVFS_H

#include <sqlite3.h>

#include "cbfs/error.h"
#include "cbfs/mobject.h"

/* Open mo read-only as a SQLite database (mo stays the caller's and must
 * outlive the handle; close it with cbfs_lazyvfs_close).  A read of mo
 * that fails is an I/O error to SQLite, and its own error is kept by mo
 * (cbfs_mobject_take_error): this open's, and any later query's. */
int cbfs_lazyvfs_open(CbfsMobject *mo, sqlite3 **ret, CbfsError *err);
void cbfs_lazyvfs_close(sqlite3 *db);
#endif
