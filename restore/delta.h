/*
 * delta.h - `cbfs restore --delta`: a backup restored over an existing data
 * directory of the same cluster, writing only what differs (docs/design.md
 * §5, "Delta restore").
 *
 * The directory must be the same database system's (pg_control's system
 * identifier equals the backup's) and no server may run on it.  Then:
 *   1. delta_prune removes every entry the backup does not have, and every
 *      entry whose type differs from the backup's (a folder where the
 *      backup has a file, ...); tablespace links are followed, nothing else;
 *   2. restore.c rewrites each file block by block, comparing the local
 *      block's content id with the manifest's: only blocks that differ are
 *      fetched (and verified) and written; a block the backup does not
 *      store (all zeros) is zeroed where it is not; files are cut or
 *      extended to the backup's size.
 * Nothing stale is kept: what is left is exactly the backup's content,
 * plus the recovery settings of a normal restore.
 */
#ifndef CBFS_RESTORE_DELTA_H
#define CBFS_RESTORE_DELTA_H

#include <stdint.h>

#include "cbfs/error.h"

/* 0 when dir is a data directory of database system sysid with no server
 * running on it; else one error (CBFS_EXIT_TARGET):
 *   could not restore into "D" with --delta: not a PostgreSQL data directory
 *   could not restore into "D" with --delta: it is database system N, not M
 *   could not restore into "D" with --delta: a server is running on it (pid P) */
int delta_check_target(const char *dir, uint64_t sysid, CbfsError *err);

/* What the backup holds at a relative path. */
enum delta_kind { DELTA_FILE, DELTA_DIR, DELTA_LINK };
typedef struct DeltaEntry {
    const char *path; /* relative, borrowed */
    enum delta_kind kind;
} DeltaEntry;

/* Remove from dir what is not among entries (n of them, any order: sorted
 * here) or has another kind.  *ret_removed: how many entries went. */
int delta_prune(const char *dir, DeltaEntry *entries, size_t n, uint64_t *ret_removed,
                CbfsError *err);

#endif
