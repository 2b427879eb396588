/*
 * doomed.h - gc's lists of what it is about to remove (DESIGN §3.9).
 *
 * Before gc removes or rewrites anything it stores the list of those
 * objects as gc/<time>.<rand> (create-once), then looks for running
 * backups.  A backup registers itself (lock.h) before it reads these lists
 * and never reuses a block from a pack in one.  So every running backup
 * either registered before gc looked (gc then leaves everything in place
 * until it has finished) or has seen the list (and stays away from it).
 * A list is removed once gc has acted on it.
 *
 * Format: "cbfs-doomed 1" line, then "pack <name>" (removed or repacked),
 * "manifest <key>" (a manifest no record names) and "moved <name>" (a
 * relocation map no longer needed) lines, then "end <count>".
 */
#ifndef CBFS_DOOMED_H
#define CBFS_DOOMED_H

#include <stddef.h>

#include "cbfs/repo.h"

typedef struct CbfsDoomed {
    char **packs, **manifests, **moved;
    size_t npacks, nmanifests, nmoved;
} CbfsDoomed;

void cbfs_doomed_release(CbfsDoomed *d);
void cbfs_doomed_add(char ***list, size_t *n, const char *name);

/* Store d as a new list; *ret_key (caller frees) names it. */
int cbfs_doomed_store(CbfsRepo *r, const CbfsDoomed *d, char **ret_key, CbfsError *err);
/* The keys of every stored list.  Caller frees each and the array. */
int cbfs_doomed_keys(CbfsRepo *r, char ***ret, size_t *ret_n, CbfsError *err);
/* The union of every stored list's packs, sorted, for backups to avoid.
 * A damaged list is an error (CBFS_EXIT_CORRUPT naming it). */
int cbfs_doomed_packs(CbfsRepo *r, char ***ret, size_t *ret_n, CbfsError *err);

#endif
