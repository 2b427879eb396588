/*
 * overlay.h - the mount's writable layer: every change PostgreSQL makes to a
 * mounted backup, kept in a local directory (DESIGN §6).
 *
 * Layout of an overlay directory:
 *   overlay.db        SQLite: meta (repository id, backup label, next inode),
 *                     inodes (attributes of every inode that differs from the
 *                     backup or was created here), dirents (names added or
 *                     moved here), whiteouts (backup names removed or moved
 *                     away)
 *   data/<ino>        sparse file with the inode's written bytes at their
 *                     own offsets
 *   data/<ino>.map    for inodes backed by a backup file: one bit per 8 KiB
 *                     page, set when the page's current bytes are in
 *                     data/<ino> rather than in the backup
 *
 * Invariants: a page bit is persisted only after the page's data was
 * fsynced; bytes of the backup file at or beyond base_limit are never shown
 * (a truncation hides them for good); names are resolved upper first
 * (dirents), then whiteouts, then the backup.
 *
 * Changes are atomic when committed and durable after overlay_sync.
 *
 * Thread safety: none but overlay_sync; the caller serializes (fs.c holds
 * its namespace lock).
 */
#ifndef CBFS_FS_OVERLAY_H
#define CBFS_FS_OVERLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "cbfs/error.h"

#define OVERLAY_PAGE 8192

typedef struct Overlay Overlay;

typedef struct OvInode {
    uint64_t ino;
    int64_t base_id; /* manifest file id backing it, 0 if none */
    int type;        /* enum cbfs_file_type */
    uint32_t mode;   /* permission bits */
    uint64_t size;
    int64_t mtime_ns;
    int64_t ctime_ns;
    uint32_t nlink;
    char *target;        /* symlinks; owned */
    uint64_t base_limit; /* bytes of the backup file still visible */
} OvInode;

/* Open (creating if needed) the overlay in dir for backup label of
 * repository repo_id.  An overlay made for another backup is refused.
 * *ret_created tells whether it is new (so the caller injects files). */
int overlay_open(const char *dir, const char *repo_id, const char *label, bool *ret_created,
                 Overlay **ret, CbfsError *err);
void overlay_close(Overlay *o);
const char *overlay_dir(const Overlay *o);

/* Room for len more bytes of file data, or -ENOSPC: data may not take the
 * last part of the overlay's file system (a 32nd of it, 1 to 64 MB), kept
 * for overlay.db and the page maps, so that on a full disk a write of data
 * fails with ENOSPC while unlink, rename, fsync and the bookkeeping of
 * writes that fit still succeed. */
int overlay_make_room(Overlay *o, uint64_t len);
/* Is there room enough to let writes bypass overlay_make_room (FUSE
 * passthrough)?  At least headroom bytes free, and 8 reserves. */
#define OVERLAY_HEADROOM (512ull << 20) /* the default */
bool overlay_headroom(Overlay *o, uint64_t headroom);

/* Make every change committed so far durable (fsync and fsyncdir call it).
 * Thread-safe: no serialization needed.  0, -ENOSPC or -EIO. */
int overlay_sync(Overlay *o);

int overlay_begin(Overlay *o);
int overlay_commit(Overlay *o);
void overlay_rollback(Overlay *o);

/* -ENOENT if the inode has no row. ret->target is allocated. */
int overlay_get_inode(Overlay *o, uint64_t ino, OvInode *ret);
int overlay_put_inode(Overlay *o, const OvInode *in);
int overlay_delete_inode(Overlay *o, uint64_t ino);
/* A fresh inode number in *ret, its successor recorded (in the caller's
 * transaction). */
int overlay_new_ino(Overlay *o, uint64_t *ret);

/* Name resolution in the upper layer: 0 and *ret_ino if parent/name is a
 * dirent; 1 if it is a whiteout; -ENOENT if neither. */
int overlay_lookup(Overlay *o, uint64_t parent, const char *name, uint64_t *ret_ino);
int overlay_add_dirent(Overlay *o, uint64_t parent, const char *name, uint64_t ino);
int overlay_remove_dirent(Overlay *o, uint64_t parent, const char *name);
int overlay_add_whiteout(Overlay *o, uint64_t parent, const char *name);
int overlay_remove_whiteout(Overlay *o, uint64_t parent, const char *name);
/* Visit dirents (is_whiteout false, ino set) and whiteouts (true) of parent. */
typedef int (*overlay_entry_cb)(const char *name, uint64_t ino, bool is_whiteout, void *ctx);
int overlay_list(Overlay *o, uint64_t parent, overlay_entry_cb cb, void *ctx);
/* Number of dirents under parent (to check a folder is empty). */

/* Paths of an inode's data and page map; caller frees. */
char *overlay_data_path(Overlay *o, uint64_t ino);
char *overlay_map_path(Overlay *o, uint64_t ino);

#endif
