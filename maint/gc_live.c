/*
 * gc_live.c - what the backups use: every block every backup's manifest
 * names, followed through relocation maps to where it is now.  gc removes
 * nothing it cannot prove unused, so any manifest it cannot read stops it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbfs/log.h"
#include "cbfs/manifest.h"
#include "cbfs/util.h"
#include "gc.h"

static int cmp_pack(const void *a, const void *b)
{
    return strcmp(((const GcPack *) a)->name, ((const GcPack *) b)->name);
}

GcPack *gc_find_pack(Gc *g, const char *name)
{
    GcPack key;
    if (strlen(name) != CBFS_PACK_NAME_LEN || !g->npacks)
        return NULL;
    memcpy(key.name, name, CBFS_PACK_NAME_LEN + 1);
    return bsearch(&key, g->packs, g->npacks, sizeof(GcPack), cmp_pack);
}

typedef struct {
    Gc *g;
    bool maps; /* listing moved/ rather than packs/ */
    char **names;
    size_t n;
} Listing;

static int collect(const char *key, uint64_t size, void *ctx)
{
    Listing *l = ctx;
    const char *base = strrchr(key, '/');
    char name[CBFS_PACK_NAME_LEN + 1];
    size_t len;

    base = base ? base + 1 : key;
    len = strlen(base);
    if (!l->maps) {
        /* packs/XX/<name>.pack */
        if (len != CBFS_PACK_NAME_LEN + 5 || strcmp(base + CBFS_PACK_NAME_LEN, ".pack") != 0)
            return 0;
        memcpy(name, base, CBFS_PACK_NAME_LEN);
        name[CBFS_PACK_NAME_LEN] = '\0';
        if (!cbfs_pack_name_valid(name))
            return 0;
        l->g->packs = cbfs_xrealloc(l->g->packs, (l->g->npacks + 1) * sizeof(GcPack));
        memset(&l->g->packs[l->g->npacks], 0, sizeof(GcPack));
        memcpy(l->g->packs[l->g->npacks].name, name, sizeof(name));
        l->g->packs[l->g->npacks].listed = true;
        l->g->packs[l->g->npacks++].size = size;
    } else if (len == CBFS_PACK_NAME_LEN && cbfs_pack_name_valid(base)) {
        l->names = cbfs_xrealloc(l->names, (l->n + 1) * sizeof(char *));
        l->names[l->n++] = cbfs_xstrdup(base);
    }
    return 0;
}

int gc_list_packs(Gc *g, CbfsError *err)
{
    Listing packs = {g, false, NULL, 0}, maps = {g, true, NULL, 0};
    int rc = cbfs_store_list(g->repo->store, "packs/", collect, &packs, err);
    if (rc == 0)
        rc = cbfs_store_list(g->repo->store, "moved/", collect, &maps, err);
    if (rc < 0)
        goto out;
    if (g->npacks)
        qsort(g->packs, g->npacks, sizeof(GcPack), cmp_pack);
    /* a map's pack is usually gone: give it an entry of its own */
    for (size_t i = 0; i < maps.n; i++)
        if (!gc_find_pack(g, maps.names[i])) {
            g->packs = cbfs_xrealloc(g->packs, (g->npacks + 1) * sizeof(GcPack));
            memset(&g->packs[g->npacks], 0, sizeof(GcPack));
            memcpy(g->packs[g->npacks++].name, maps.names[i], CBFS_PACK_NAME_LEN + 1);
            qsort(g->packs, g->npacks, sizeof(GcPack), cmp_pack);
        }
    for (size_t i = 0; i < maps.n && rc == 0; i++) {
        GcPack *p = gc_find_pack(g, maps.names[i]);
        p->map = cbfs_xcalloc(1, sizeof(CbfsMovedMap));
        rc = cbfs_moved_read(g->repo->store, maps.names[i], p->map, err);
        if (rc == -ENOENT) { /* removed meanwhile: only gc does that, and we hold the lock */
            free(p->map);
            p->map = NULL;
            rc = 0;
        } else if (rc < 0) {
            free(p->map);
            p->map = NULL;
        }
    }
out:
    for (size_t i = 0; i < maps.n; i++)
        free(maps.names[i]);
    free(maps.names);
    return rc;
}

/* The live set: open addressing on offset + 1 (0 marks an empty slot). */
static size_t live_slot(uint64_t key, size_t cap)
{
    return (size_t) ((key * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

bool gc_pack_live(const GcPack *p, uint64_t off)
{
    if (!p->cap)
        return false;
    for (size_t slot = live_slot(off + 1, p->cap); p->offs[slot]; slot = (slot + 1) & (p->cap - 1))
        if (p->offs[slot] == off + 1)
            return true;
    return false;
}

static void add_live(GcPack *p, uint64_t off, uint32_t len)
{
    size_t slot;
    if (2 * (p->count + 1) > p->cap) {
        size_t ncap = p->cap ? 2 * p->cap : 256;
        uint64_t *offs = cbfs_xcalloc(ncap, sizeof(uint64_t));
        uint32_t *lens = cbfs_xcalloc(ncap, sizeof(uint32_t));
        for (size_t i = 0; i < p->cap; i++) {
            if (!p->offs[i])
                continue;
            for (slot = live_slot(p->offs[i], ncap); offs[slot]; slot = (slot + 1) & (ncap - 1))
                ;
            offs[slot] = p->offs[i];
            lens[slot] = p->lens[i];
        }
        free(p->offs);
        free(p->lens);
        p->offs = offs;
        p->lens = lens;
        p->cap = ncap;
    }
    if (gc_pack_live(p, off))
        return;
    for (slot = live_slot(off + 1, p->cap); p->offs[slot]; slot = (slot + 1) & (p->cap - 1))
        ;
    p->offs[slot] = off + 1;
    p->lens[slot] = len;
    p->count++;
    p->live_bytes += len;
}

/* A block a backup uses: where is it now? */
static void mark(Gc *g, const char *pack, uint64_t off, uint32_t len, int depth)
{
    GcPack *p = gc_find_pack(g, pack);
    if (p && p->map && depth < 16) {
        const CbfsExtent *e = cbfs_moved_find(p->map, off, len);
        if (e) {
            p->map_used = true;
            mark(g, e->new_pack, e->new_off + (off - e->old_off), len, depth + 1);
            return;
        }
        /* not in the map: the pack itself must keep it (if it still has it) */
    }
    if (p && p->listed)
        add_live(p, off, len);
    else
        g->missing_refs++;
}

static int mark_block(const CbfsBlockRef *ref, const char *path, void *ctx)
{
    (void) path;
    mark(ctx, ref->pack, ref->offset, ref->stored_len, 0);
    return 0;
}

bool gc_manifest_named(Gc *g, const char *key)
{
    for (size_t i = 0; i < g->nseen; i++)
        if (strcmp(g->seen[i], key) == 0)
            return true;
    return false;
}

static bool label_seen(Gc *g, const char *label)
{
    for (size_t i = 0; i < g->nseen; i++)
        if (strcmp(g->seen_labels[i], label) == 0)
            return true;
    return false;
}

int gc_list_nodes(Gc *g, CbfsError *err)
{
    char **names;
    size_t n;
    int rc = cbfs_repo_list_nodes(g->repo, &names, &n, err);
    if (rc < 0)
        return rc;
    /* the default node always (it may have backups and no claim only if
     * the claim was lost, but then they must count all the same) */
    if (g->nnodes == 0) {
        g->nodes = cbfs_xcalloc(1, sizeof(CbfsRepo *));
        g->nodes[g->nnodes++] = cbfs_repo_node_view(g->repo, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        bool known = strcmp(names[i], CBFS_NODE_DEFAULT) == 0;
        for (size_t k = 0; k < g->nnodes && !known; k++)
            known = g->nodes[k]->node && strcmp(g->nodes[k]->node, names[i]) == 0;
        if (known)
            continue;
        g->nodes = cbfs_xrealloc(g->nodes, (g->nnodes + 1) * sizeof(CbfsRepo *));
        g->nodes[g->nnodes++] = cbfs_repo_node_view(g->repo, names[i]);
    }
    cbfs_store_free_names(names, n);
    return 0;
}

char *gc_full_key(const CbfsRepo *v, const char *key)
{
    return v->node ? cbfs_xasprintf("node/%s/%s", v->node, key) : cbfs_xstrdup(key);
}

static int mark_node(Gc *g, CbfsRepo *v, CbfsError *err)
{
    CbfsKv **recs;
    size_t n;
    int rc = cbfs_repo_list_backups(v, &recs, &n, err);

    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *label = cbfs_kv_get(recs[i], "label");
        const char *mkey = cbfs_kv_get(recs[i], "manifest");
        char *path = NULL, *qual = cbfs_xasprintf("%s/%s", cbfs_repo_node_name(v), label);
        CbfsManifest *m = NULL;
        if (label_seen(g, qual)) {
            free(qual);
            continue;
        }
        rc = cbfs_repo_fetch_manifest(v, recs[i], g->tmpdir, &path, err);
        if (rc == 0)
            rc = cbfs_manifest_open(path, &m, err);
        if (rc == 0)
            rc = cbfs_manifest_foreach_block(m, mark_block, g, err);
        cbfs_manifest_free(m);
        if (path) {
            unlink(path);
            free(path);
        }
        if (rc < 0) {
            char what[CBFS_ERROR_MSG_MAX / 2];
            cbfs_error_prefix(err, "could not read backup \"%s\" of %s", label,
                              cbfs_repo_what(v, what, sizeof(what)));
            free(qual);
            break;
        }
        g->seen = cbfs_xrealloc(g->seen, (g->nseen + 1) * sizeof(char *));
        g->seen_labels = cbfs_xrealloc(g->seen_labels, (g->nseen + 1) * sizeof(char *));
        g->seen[g->nseen] = gc_full_key(v, mkey);
        g->seen_labels[g->nseen++] = qual;
    }
    cbfs_repo_free_backups(recs, n);
    return rc;
}

int gc_mark_backups(Gc *g, CbfsError *err)
{
    int rc = 0;
    for (size_t i = 0; i < g->nnodes && rc == 0; i++)
        rc = mark_node(g, g->nodes[i], err);
    return rc;
}

typedef struct DbList {
    Gc *g;
    const CbfsRepo *v;
} DbList;

static int collect_db(const char *key, uint64_t size, void *ctx)
{
    DbList *l = ctx;
    Gc *g = l->g;
    size_t len = strlen(key);
    if (!cbfs_mobject_key(key) && (len < 4 || strcmp(key + len - 3, ".db") != 0))
        return 0;
    g->db_keys = cbfs_xrealloc(g->db_keys, (g->ndb + 1) * sizeof(char *));
    g->db_sizes = cbfs_xrealloc(g->db_sizes, (g->ndb + 1) * sizeof(uint64_t));
    g->db_keys[g->ndb] = gc_full_key(l->v, key);
    g->db_sizes[g->ndb++] = size;
    return 0;
}

int gc_list_manifests(Gc *g, CbfsError *err)
{
    int rc = 0;
    for (size_t i = 0; i < g->nnodes && rc == 0; i++) {
        DbList l = {g, g->nodes[i]};
        rc = cbfs_store_list(g->nodes[i]->store, "backups/", collect_db, &l, err);
    }
    return rc;
}

void gc_decide(Gc *g)
{
    for (size_t i = 0; i < g->npacks; i++) {
        GcPack *p = &g->packs[i];
        p->fate = GC_KEEP;
        if (!p->listed)
            continue;
        if (p->count == 0)
            p->fate = GC_DELETE; /* unused, or all of it reached through its map */
        else {
            /* unused: what a rewrite would drop (the index entries of live
             * blocks and the trailer are not waste) */
            uint64_t keep = p->live_bytes + p->count * CBFS_PACK_ENTRY_LEN + CBFS_PACK_TRAILER_LEN;
            uint64_t waste = p->size > keep ? p->size - keep : 0;
            if (waste * 100 > (uint64_t) g->max_waste * p->size)
                p->fate = p->map ? GC_KEEP : GC_REPACK; /* a map that misses a live block: keep */
        }
    }
}

void gc_release(Gc *g)
{
    for (size_t i = 0; i < g->npacks; i++) {
        if (g->packs[i].map) {
            cbfs_moved_release(g->packs[i].map);
            free(g->packs[i].map);
        }
        free(g->packs[i].offs);
        free(g->packs[i].lens);
    }
    free(g->packs);
    for (size_t i = 0; i < g->ndb; i++)
        free(g->db_keys[i]);
    free(g->db_keys);
    free(g->db_sizes);
    for (size_t i = 0; i < g->nseen; i++) {
        free(g->seen[i]);
        free(g->seen_labels[i]);
    }
    free(g->seen);
    free(g->seen_labels);
    for (size_t i = 0; i < g->nnodes; i++)
        cbfs_repo_free(g->nodes[i]);
    free(g->nodes);
    if (g->tmpdir)
        cbfs_remove_tree(g->tmpdir);
    free(g->tmpdir);
}
