/*
 * hydrate.h - a mount's background work, asked for by `cbfs hydrate` and
 * `cbfs umount --materialize` through files in its overlay folder
 * (DESIGN §6, "Hydration"):
 *
 *   hydrate.want          "rate = BYTES" (0: no limit): hydration was asked
 *                         for; it goes on at every mount of this overlay
 *                         until every file is whole
 *   hydrate.status        kv, rewritten every second while it runs and at
 *                         its end: state (running, done, failed), rate,
 *                         bytes_total, bytes_done, files_total, files_done,
 *                         started, updated, error
 *   materialize.request   the target folder; the answer is
 *   materialize.result    "ok N" (N files moved) or the error, one line
 *
 * Hydration copies every backup block of every file PostgreSQL can see
 * (fs_walk) into the overlay, one thread, one block at a time, each block
 * checked against its id, never ahead of a foreground read (it waits until
 * none needed the backup for 50 ms) and at most `rate` bytes a second.
 * Pages PostgreSQL wrote are left alone; the page maps make it resumable.
 */
#ifndef CBFS_FS_HYDRATE_H
#define CBFS_FS_HYDRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "fs.h"

typedef struct Hydrator Hydrator;

/* Watches the overlay folder for requests; with want (-o hydrate[=RATE])
 * starts hydrating at once at rate (bytes a second, 0: no limit).
 * materialize_done is set once a materialize moved the overlay's files
 * out (the daemon must then remove what is left of the overlay). */
Hydrator *hydrator_start(Fs *fs, bool want, uint64_t rate);
void hydrator_stop(Hydrator *h);
bool hydrator_materialized(const Hydrator *h);

/* Move a fully hydrated tree out into target (materialize.c); *ret_files:
 * how many files.  Error text in err. */
int fs_materialize(Fs *fs, const char *target, uid_t uid, gid_t gid, uint64_t *ret_files,
                   CbfsError *err);

#endif
