/*
 * gc.h - `cbfs gc`'s state, shared by its modules: gc.c (the command: lock,
 * plan, running backups, sweep, report), gc_live.c (what the backups use)
 * and gc_repack.c (rewriting packs that are mostly unused).
 */
#ifndef CBFS_MAINT_GC_H
#define CBFS_MAINT_GC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbfs/kv.h"
#include "cbfs/moved.h"
#include "cbfs/repo.h"

/* A pack: listed in packs/, or only named by a manifest or a map. */
typedef struct GcPack {
    char name[CBFS_PACK_NAME_LEN + 1];
    bool listed;
    uint64_t size;
    CbfsMovedMap *map; /* its relocation map, if it has one */
    bool map_used;     /* a backup still reaches a block through the map */
    /* live blocks: a hash set of offsets (gc_live.c) */
    uint64_t *offs;
    uint32_t *lens;
    size_t cap, count;
    uint64_t live_bytes;
    enum { GC_KEEP, GC_DELETE, GC_REPACK } fate;
} GcPack;

typedef struct Gc {
    CbfsRepo *repo;   /* the whole repository (its default node) */
    CbfsRepo **nodes; /* a view of every node, the default one first */
    size_t nnodes;
    int max_waste; /* percent */
    GcPack *packs; /* sorted by name */
    size_t npacks;
    char **db_keys; /* every node's backups/<label>.<r>.db listed (full keys), with its size */
    uint64_t *db_sizes;
    size_t ndb;
    char **seen; /* manifest keys (full) of the records read so far */
    size_t nseen;
    char **seen_labels;    /* "<node>/<label>" of those records */
    uint64_t missing_refs; /* blocks in packs that are gone without a map */
    char *tmpdir;          /* where manifests are fetched */
} Gc;

/* A view of every node of the repository into g->nodes (called again, the
 * nodes made since are added). */
int gc_list_nodes(Gc *g, CbfsError *err);
/* key of node v's as the whole repository knows it (caller frees). */
char *gc_full_key(const CbfsRepo *v, const char *key);
/* List packs/ and moved/ and load every map. */
int gc_list_packs(Gc *g, CbfsError *err);
/* Read every backup record of every node not read yet and mark what its
 * manifest uses. */
int gc_mark_backups(Gc *g, CbfsError *err);
/* List every node's backups/<label>.<r>.db. */
int gc_list_manifests(Gc *g, CbfsError *err);
/* True if key is the manifest of a record read. */
bool gc_manifest_named(Gc *g, const char *key);
GcPack *gc_find_pack(Gc *g, const char *name);
/* True if a backup uses the block at off of p. */
bool gc_pack_live(const GcPack *p, uint64_t off);
/* Decide each listed pack's fate from its live blocks. */
void gc_decide(Gc *g);
void gc_release(Gc *g);

/* Rewrite the GC_REPACK packs among names: live blocks into new packs,
 * then each pack's map, then remove it.  Counts into the totals. */
int gc_repack(Gc *g, char **names, size_t n, uint64_t *ret_removed_bytes,
              uint64_t *ret_written_bytes, size_t *ret_repacked, CbfsError *err);

#endif
