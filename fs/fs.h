/*
 * fs.h - the FUSE low-level filesystem of a mounted backup: the backup's
 * files read lazily from the repository (base layer), PostgreSQL's changes
 * kept in the overlay (overlay.h), plus the files cbfs injects so that the
 * mount starts as a recovering copy (DESIGN §6).
 */
#ifndef CBFS_FS_FS_H
#define CBFS_FS_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "cbfs/manifest.h"
#include "cbfs/repo.h"
#include "overlay.h"

struct fuse_lowlevel_ops;

#define FS_XATTR_OVERLAY "user.cbfs.overlay" /* on the root: the overlay folder */

typedef struct FsConfig {
    CbfsRepo *repo;        /* borrowed */
    const CbfsKv *record;  /* the backup's record: its manifest is read in place */
    const char *cache_dir; /* where a manifest of the first layout is fetched to */
    const char *label;
    const struct CbfsTarget *target; /* recovery target written into a new overlay */
    Overlay *overlay;                /* borrowed */
    uid_t uid;                       /* owner shown for every file */
    gid_t gid;
    size_t cache_size; /* bytes of decompressed blocks kept in memory */
    int prefetchers;   /* read-ahead threads */
    bool passthrough;  /* serve whole files from their data file (fs.c) */
    bool io_uring;     /* FUSE over io_uring asked for (mount.c passes it to libfuse) */
    uint64_t headroom; /* ... while this much is free (0: OVERLAY_HEADROOM) */
} FsConfig;

typedef struct Fs Fs;

int fs_new(const FsConfig *cfg, Fs **ret, CbfsError *err);
/* Write every dirty page map and attribute to the overlay; then free. */
void fs_free(Fs *fs);
/* The manifest handle (for its counters; guarded like every use). */
CbfsManifest *fs_manifest(Fs *fs);
/* Did the kernel grant passthrough (known once the session started)? */
bool fs_passthrough(const Fs *fs);
/* Files injected into a new overlay: backup_label, recovery.signal and the
 * recovery settings appended to postgresql.auto.conf (restore_command
 * runs "<self> wal-fetch <repo> %f %p"). */
int fs_inject(Fs *fs, const char *self, CbfsError *err);
const struct fuse_lowlevel_ops *fs_ops(void);

/* The tree as PostgreSQL sees it (hydration, materialize): every name
 * below the data directory, folders before what they hold, path relative
 * ("base/5/1259").  cb runs without any lock; non-zero stops the walk and
 * is returned. */
typedef int (*fs_walk_cb)(const char *path, uint64_t ino, int type, void *ctx);
int fs_walk(Fs *fs, fs_walk_cb cb, void *ctx);

typedef struct FsEntry {
    int type; /* enum cbfs_file_type */
    uint32_t mode;
    uint64_t size;
    int64_t mtime_ns;
    uint32_t nlink;
    char *target;         /* symlinks */
    char *data;           /* its overlay data file (may not exist) */
    bool pg_wal;          /* the pg_wal link (to the overlay's pg_wal folder) */
    bool based;           /* a regular file backed by the backup */
    uint64_t base_bytes;  /* ... its bytes still from the backup's file */
    uint64_t upper_bytes; /* ... of which already in the data file */
} FsEntry;
int fs_entry(Fs *fs, uint64_t ino, FsEntry *ret);
void fs_entry_release(FsEntry *e);

/* Bring every backup page of ino up into its data file, block by block,
 * each checked on the way (read_base), leaving pages PostgreSQL wrote
 * alone; durable in steps of 64 MB and at the end (data, then page map).
 * throttle(ctx, bytes) is called before each block is fetched; a negative
 * return stops (and is returned).  *ret_copied: bytes written. */
typedef int (*fs_hydrate_throttle)(void *ctx, uint64_t bytes);
int fs_hydrate_file(Fs *fs, uint64_t ino, fs_hydrate_throttle throttle, void *ctx,
                    uint64_t *ret_copied);
/* Monotonic ns of the last read that needed the backup (0: none). */
int64_t fs_last_foreground(const Fs *fs);
bool fs_has_tablespaces(const Fs *fs);
/* The owner every file shows. */
void fs_owner(const Fs *fs, uid_t *uid, gid_t *gid);
const char *fs_overlay_dir(const Fs *fs);

#endif
