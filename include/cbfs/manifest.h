/*
 * manifest.h - the per-backup SQLite manifest (DESIGN §3.5).
 *
 * Schema (format 2, pages of 4 KiB):
 *   meta(key TEXT PRIMARY KEY, value TEXT)       backup metadata, see below
 *   files(id INTEGER PRIMARY KEY, parent INT, name TEXT, path TEXT UNIQUE,
 *         type INT, mode INT, uid INT, gid INT, size INT, mtime INT, target TEXT)
 *         UNIQUE(parent, name): parent is the id of the containing folder's
 *         entry, 0 for the data directory itself; name the last component
 *   packs(id INTEGER PRIMARY KEY, name TEXT UNIQUE)
 *   runs(file INT, blockno INT, count INT, pack INT, offset INT, ids BLOB,
 *        lens BLOB, PRIMARY KEY(file, blockno)) WITHOUT ROWID
 *        count (1..CBFS_MANIFEST_RUN_MAX) consecutive blocks of a file,
 *        from blockno on, stored back to back in one pack from offset on;
 *        ids: their ids, 32 bytes each; lens: stored_len u32le, raw_len
 *        u32le each (block i is at offset + the stored_len of those before)
 *   bad_pages(file INT, page INT, lsn INT)
 *
 * Format 1 (read, no longer written) had blocks(file, blockno, id, pack,
 * offset, stored_len, raw_len) instead of runs, one row per block: about
 * 2.6 times the bytes.
 *
 * Paths are relative to the data directory ("base/1/1259"); tablespace
 * contents appear below "pg_tblspc/<oid>/", whose entry is a symlink whose
 * target is the tablespace's original location.  A block absent from the
 * block map is all zeros.  Block n of a file covers bytes
 * [n * block_size, n * block_size + raw_len).
 *
 * Meta keys: format, label, cbfs_version, pg_version, system_identifier,
 * timeline, start_lsn, stop_lsn, start_time, stop_time, backup_label,
 * tablespace_map, block_size, based_on, wal_segment_size, data_checksums.
 *
 * Blocks are added file by file in block order (add_blocks keeps the run
 * being built until the next block does not extend it, or commit).
 *
 * Thread safety: one CbfsManifest per thread.
 */
#ifndef CBFS_MANIFEST_H
#define CBFS_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbfs/block.h"
#include "cbfs/codec.h"
#include "cbfs/error.h"
#include "cbfs/mobject.h"
#include "cbfs/pack.h"

#define CBFS_MANIFEST_FORMAT  "2"
#define CBFS_MANIFEST_RUN_MAX 24 /* blocks in one row of runs: 988 bytes, one page */

enum cbfs_file_type { CBFS_FILE_REG = 1, CBFS_FILE_DIR = 2, CBFS_FILE_SYMLINK = 3 };

typedef struct CbfsFileEntry {
    int64_t id;
    const char *path; /* borrowed (see each function) */
    enum cbfs_file_type type;
    uint32_t mode; /* permission bits only */
    uint32_t uid, gid;
    uint64_t size;
    int64_t mtime;
    const char *target; /* symlinks, else NULL */
    int64_t parent;     /* id of the containing folder, 0 for the top */
} CbfsFileEntry;

typedef struct CbfsManifest CbfsManifest;

/* Create a new manifest database at path (the file must not exist). */
int cbfs_manifest_create(const char *path, CbfsManifest **ret, CbfsError *err);
/* Open an existing manifest read-only; checks the format. */
int cbfs_manifest_open(const char *path, CbfsManifest **ret, CbfsError *err);
/* Open a stored manifest in place (lazyvfs.h): the handle owns mo, and a
 * read that fails names the object (and chunk). */
int cbfs_manifest_open_object(CbfsMobject *mo, CbfsManifest **ret, CbfsError *err);
/* The local file of a handle opened with cbfs_manifest_open is removed when
 * the handle is freed. */
void cbfs_manifest_unlink_on_free(CbfsManifest *m);
/* Stored bytes read so far by a handle opened in place, and the plain size
 * of that manifest (both 0 for a file). */
uint64_t cbfs_manifest_fetched(const CbfsManifest *m);
uint64_t cbfs_manifest_object_size(const CbfsManifest *m);
void cbfs_manifest_free(CbfsManifest *m);

int cbfs_manifest_begin(CbfsManifest *m, CbfsError *err);
int cbfs_manifest_commit(CbfsManifest *m, CbfsError *err);

int cbfs_manifest_set_meta(CbfsManifest *m, const char *key, const char *value, CbfsError *err);
/* Caller frees; NULL if absent. */
char *cbfs_manifest_get_meta(CbfsManifest *m, const char *key);

int cbfs_manifest_add_file(CbfsManifest *m, const CbfsFileEntry *f, int64_t *ret_id,
                           CbfsError *err);
int cbfs_manifest_set_file_size(CbfsManifest *m, int64_t file, uint64_t size, CbfsError *err);
/* Drop a file (and its blocks), e.g. one removed while being backed up. */
int cbfs_manifest_remove_file(CbfsManifest *m, int64_t file, CbfsError *err);
int cbfs_manifest_add_blocks(CbfsManifest *m, const CbfsBlockRef *refs, size_t n, CbfsError *err);
int cbfs_manifest_add_bad_page(CbfsManifest *m, int64_t file, uint64_t page, uint64_t lsn,
                               CbfsError *err);

/* Callback for each file, in path order; f->path and f->target are
 * borrowed for the call.  Return non-zero to stop (returned as is). */
typedef int (*cbfs_manifest_file_cb)(const CbfsFileEntry *f, void *ctx);
int cbfs_manifest_foreach_file(CbfsManifest *m, cbfs_manifest_file_cb cb, void *ctx,
                               CbfsError *err);
/* One entry by id, or by parent id and name: 0, or -ENOENT.  ret->path and
 * ret->target are allocated (free them with cbfs_file_entry_release). */
int cbfs_manifest_get_file(CbfsManifest *m, int64_t id, CbfsFileEntry *ret, CbfsError *err);
int cbfs_manifest_lookup(CbfsManifest *m, int64_t parent, const char *name, CbfsFileEntry *ret,
                         CbfsError *err);
void cbfs_file_entry_release(CbfsFileEntry *f);
/* The entries whose parent is parent, in name order; f is borrowed for the
 * call and f->path is the full path. */
int cbfs_manifest_foreach_child(CbfsManifest *m, int64_t parent, cbfs_manifest_file_cb cb,
                                void *ctx, CbfsError *err);

/* All block refs of one file in block order; *ret: caller frees. */
int cbfs_manifest_file_blocks(CbfsManifest *m, int64_t file, CbfsBlockRef **ret, size_t *ret_n,
                              CbfsError *err);
/* Every block ref of the backup, grouped by pack (by name), runs in offset
 * order (two files may share blocks: then offsets may repeat); path is the
 * file's path, borrowed for the call.  Return non-zero to stop (returned
 * as is).  An entry that is not well formed is CBFS_EXIT_CORRUPT. */
typedef int (*cbfs_manifest_block_cb)(const CbfsBlockRef *ref, const char *path, void *ctx);
int cbfs_manifest_foreach_block(CbfsManifest *m, cbfs_manifest_block_cb cb, void *ctx,
                                CbfsError *err);
/* SQLite's quick_check: 0, or CBFS_EXIT_CORRUPT naming the manifest. */
/* Every meta key and value (a value may be NULL), in key order; a non-zero
 * return of cb stops and is returned. */
typedef int (*cbfs_manifest_meta_cb)(const char *key, const char *value, void *ctx);
int cbfs_manifest_foreach_meta(CbfsManifest *m, cbfs_manifest_meta_cb cb, void *ctx,
                               CbfsError *err);
/* Every page recorded as bad (file id, page number, LSN), likewise. */
typedef int (*cbfs_manifest_bad_page_cb)(int64_t file, uint64_t page, uint64_t lsn, void *ctx);
int cbfs_manifest_foreach_bad_page(CbfsManifest *m, cbfs_manifest_bad_page_cb cb, void *ctx,
                                   CbfsError *err);

int cbfs_manifest_quick_check(CbfsManifest *m, CbfsError *err);

/* Totals: number of files (all types) and sum of regular file sizes. */
int cbfs_manifest_totals(CbfsManifest *m, uint64_t *ret_files, uint64_t *ret_bytes, CbfsError *err);
int cbfs_manifest_bad_page_count(CbfsManifest *m, uint64_t *ret, CbfsError *err);

/* A path from a manifest is used only if relative, without empty, "." or
 * ".." components and without control characters. */
bool cbfs_manifest_path_valid(const char *path);

#endif
