/*
 * walarchive.h - WAL files in the repository (DESIGN §3.6, §5).
 *
 * One object per WAL file: wal/<TTTTTTTT>/<name>, where TTTTTTTT is the
 * timeline of the file (history files included).  Object format:
 *   magic "CBFSWAL1" [8], SHA-256 of the plain file [32], plain length u64le,
 *   then the zstd frame of the file (or the file itself when zstd does not
 *   make it smaller: stored length == plain length).
 * In an encrypted repository the repository's store seals that whole object
 * (store_crypt.c); nothing here changes.
 */
#ifndef CBFS_WALARCHIVE_H
#define CBFS_WALARCHIVE_H

#include <stdbool.h>

#include "cbfs/repo.h"

#define CBFS_WAL_OBJECT_HEADER 48

/* "wal/<TTTTTTTT>/<name>" or NULL if name is not a WAL file name.  Caller frees. */
char *cbfs_wal_key(const char *name);

/* Store the WAL file at path (its name is the last component).  Returns 0
 * once the file is durably stored, also when an identical copy already
 * was.  Refuses a file of another cluster and never replaces a different
 * copy (CBFS_EXIT_CONFLICT). */
int cbfs_wal_push_file(CbfsRepo *r, const char *path, CbfsError *err);
/* Same, from a buffer (data of len bytes named name). */
int cbfs_wal_push_buffer(CbfsRepo *r, const char *name, const uint8_t *data, size_t len,
                         CbfsError *err);

/* Restore WAL file name into dest (written atomically).  -ENOENT without an
 * error message when the repository does not have it; a corrupt object is
 * CBFS_EXIT_CORRUPT naming it. */
int cbfs_wal_fetch(CbfsRepo *r, const char *name, const char *dest, CbfsError *err);

/* The same into a new buffer (caller frees *ret_buf). */
int cbfs_wal_read(CbfsRepo *r, const char *name, uint8_t **ret_buf, size_t *ret_len,
                  CbfsError *err);

/* 0 if the repository holds WAL file name, -ENOENT if not. */
int cbfs_wal_exists(CbfsRepo *r, const char *name, CbfsError *err);

#endif
