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

#endif
