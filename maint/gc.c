/*
 * gc.c - `cbfs gc REPO [--dry-run] [--max-waste PERCENT]
 * [--running-timeout DURATION]`: remove the packs no backup uses, rewrite
 * the ones mostly unused, remove manifests no record names and relocation
 * maps nothing reaches through.
 *
 * Safety against backups running meanwhile, on any host (DESIGN §3.9,
 * lock.h, doomed.h):
 *   1. take the repository lock (expire and other gcs wait);
 *   2. mark what every backup uses; plan;
 *   3. store the plan's list (gc/<time>.<rand>) before anything else;
 *   4. list the running backups' registrations: a backup registered now
 *      may use anything it saw before the list existed, so if one is alive
 *      nothing is removed (the list stays: backups starting later keep
 *      away from its packs) and gc says to run again later;
 *   5. otherwise mark again for the backups that finished meanwhile, then
 *      repack, remove, and remove the lists.
 * Every step leaves the retained backups whole when killed: packs are
 * removed only after what replaces them (new pack, then map) is stored.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/doomed.h"
#include "cbfs/lock.h"
#include "cbfs/log.h"
#include "cbfs/retention.h"
#include "cbfs/util.h"
#include "commands.h"
#include "gc.h"

static const char usage_text[] =
    "Usage: cbfs gc REPO [OPTIONS]\n"
    "\n"
    "Free the space of what no backup uses: remove unused packs, rewrite packs\n"
    "whose unused share is above --max-waste, remove manifests of backups that\n"
    "are gone.  Safe while backups and wal-push run on other hosts: when a\n"
    "backup that started earlier is still running, nothing is removed and gc\n"
    "asks to be run again.\n"
    "\n"
    "Options:\n"
    "  -n, --dry-run                 show what would be done, change nothing\n"
    "  -w, --max-waste PERCENT       rewrite packs more than PERCENT unused (default 25;\n"
    "                                100: never rewrite)\n"
    "      --running-timeout DURATION  take a running backup registered by another\n"
    "                                host as dead after DURATION (default 3d)\n"
    "      --passphrase-file FILE    an encrypted repository's passphrase\n"
    "  -h, --help                    show this help\n";

typedef struct {
    size_t packs, manifests, maps, repacked;
    uint64_t pack_bytes, manifest_bytes, repack_in, repack_out;
} Totals;

static void plan(Gc *g, CbfsDoomed *d, Totals *t)
{
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < g->npacks; i++) {
        GcPack *p = &g->packs[i];
        if (p->fate == GC_DELETE) {
            t->packs++;
            t->pack_bytes += p->size;
        } else if (p->fate == GC_REPACK) {
            t->repacked++;
            t->repack_in += p->size;
            t->repack_out += p->live_bytes;
        } else
            continue;
        cbfs_doomed_add(&d->packs, &d->npacks, p->name);
    }
    for (size_t i = 0; i < g->ndb; i++)
        if (!gc_manifest_named(g, g->db_keys[i])) {
            cbfs_doomed_add(&d->manifests, &d->nmanifests, g->db_keys[i]);
            t->manifests++;
            t->manifest_bytes += g->db_sizes[i];
        }
    for (size_t i = 0; i < g->npacks; i++)
        if (g->packs[i].map && !g->packs[i].map_used) {
            cbfs_doomed_add(&d->moved, &d->nmoved, g->packs[i].name);
            t->maps++;
        }
}

static void print_plan(const Totals *t, bool dry)
{
    char a[32], b[32], c[32];
    cbfs_format_size(t->pack_bytes, a, sizeof(a));
    cbfs_format_size(t->repack_in, b, sizeof(b));
    cbfs_format_size(t->repack_out, c, sizeof(c));
    printf("%s %zu unused %s (%s), rewrite %zu %s (%s, of which %s in use), remove %zu "
           "%s and %zu relocation %s\n",
           dry ? "would remove" : "to remove:", t->packs, t->packs == 1 ? "pack" : "packs", a,
           t->repacked, t->repacked == 1 ? "pack" : "packs", b, c, t->manifests,
           t->manifests == 1 ? "orphaned manifest" : "orphaned manifests", t->maps,
           t->maps == 1 ? "map" : "maps");
}

/* The running backups that may use what the plan removes: those alive.
 * Dead ones' registrations are removed. */
static int running_node(CbfsRepo *v, int64_t timeout, size_t *alive, CbfsError *err)
{
    CbfsHolder *hs;
    size_t n;
    time_t now = time(NULL);
    int rc = cbfs_running_list(v, &hs, &n, err);

    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        char who[256];
        cbfs_holder_describe(&hs[i], who, sizeof(who));
        if (cbfs_holder_alive(&hs[i], timeout, now)) {
            printf("running: %s%s%s\n", who, v->node ? " of node " : "", v->node ? v->node : "");
            (*alive)++;
            continue;
        }
        cbfs_warning("removing the registration of %s: it is no longer running", who);
        rc = cbfs_store_remove(v->store, hs[i].key, err);
        if (rc < 0 && rc != -ENOENT)
            break;
        rc = 0;
    }
    free(hs);
    return rc;
}

/* The running backups of every node.  Nodes are listed again first: a
 * backup claims its node before it registers, so one registered before
 * this listing is seen, and one registered after it registered after the
 * plan was stored and keeps away from its packs. */
static int running_backups(Gc *g, int64_t timeout, size_t *ret_alive, CbfsError *err)
{
    size_t alive = 0;
    int rc = gc_list_nodes(g, err);
    for (size_t i = 0; i < g->nnodes && rc == 0; i++)
        rc = running_node(g->nodes[i], timeout, &alive, err);
    if (rc == 0)
        *ret_alive = alive;
    return rc;
}

/* Remove key (as the whole repository knows it). */
static int remove_key(Gc *g, const char *key, CbfsError *err)
{
    int rc = cbfs_store_remove(g->repo->shared, key, err);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        cbfs_error_prefix(err, "could not remove \"%s\"", key);
    return rc;
}

/* Act on the plan d, with the marks brought up to date. */
static int sweep(Gc *g, const CbfsDoomed *d, Totals *done, CbfsError *err)
{
    int rc, bad = 0;

    memset(done, 0, sizeof(*done));
    /* backups that finished since the plan were registered before it: count
     * what they use too (their packs cannot be in it otherwise).  Marks only
     * grow while we hold the lock (nothing else removes a backup), so the
     * backups read for the plan need not be read again. */
    if ((rc = gc_mark_backups(g, err)) < 0)
        return rc;
    gc_decide(g);

    /* rewrite first: its old packs go only once their maps are stored */
    rc = gc_repack(g, d->packs, d->npacks, &done->repack_in, &done->repack_out, &done->repacked,
                   err);
    if (rc == -EBADMSG) {
        cbfs_warning("%s", err->msg);
        cbfs_error_init(err);
        bad = 1;
        rc = 0;
    }
    for (size_t i = 0; i < d->npacks && rc == 0; i++) {
        GcPack *p = gc_find_pack(g, d->packs[i]);
        char *key;
        if (!p || p->fate != GC_DELETE)
            continue;
        key = cbfs_pack_key(p->name);
        rc = remove_key(g, key, err);
        free(key);
        if (rc == 0) {
            done->packs++;
            done->pack_bytes += p->size;
        }
        cbfs_test_pause("gc-pack-removed");
    }
    for (size_t i = 0; i < d->nmanifests && rc == 0; i++) {
        if (gc_manifest_named(g, d->manifests[i]))
            continue;
        rc = remove_key(g, d->manifests[i], err);
        for (size_t k = 0; k < g->ndb && rc == 0; k++)
            if (strcmp(g->db_keys[k], d->manifests[i]) == 0) {
                done->manifests++;
                done->manifest_bytes += g->db_sizes[k];
            }
    }
    for (size_t i = 0; i < d->nmoved && rc == 0; i++) {
        GcPack *p = gc_find_pack(g, d->moved[i]);
        char *key;
        if (!p || p->map_used)
            continue;
        key = cbfs_moved_key(p->name);
        rc = remove_key(g, key, err);
        free(key);
        if (rc == 0)
            done->maps++;
    }
    if (rc == 0 && bad)
        return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                              "some packs are damaged and were kept; run \"cbfs check "
                              "--read-data\"");
    return rc;
}

int cmd_gc(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dry-run", no_argument, NULL, 'n'},
        {"max-waste", required_argument, NULL, 'w'},
        {"running-timeout", required_argument, NULL, 'T'},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool dry = false, locked = false;
    long max_waste = 25;
    int64_t timeout = 3 * 86400;
    Gc g;
    CbfsHolder lock;
    CbfsDoomed d = {0};
    Totals planned, done;
    char *list_key = NULL, **old_lists = NULL;
    size_t nold = 0, alive = 0;
    double t0 = cbfs_now();
    CbfsError err;
    int c, rc;

    cbfs_error_init(&err);
    memset(&g, 0, sizeof(g));
    while ((c = getopt_long(argc, argv, "nw:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            dry = true;
            break;
        case 'w':
            if (cbfs_parse_int(optarg, 0, 100, &max_waste) < 0)
                return cmd_usage_error(
                    "gc", "invalid value \"%s\" for --max-waste: must be 0 to 100", optarg);
            break;
        case 'T':
            if (cbfs_parse_duration(optarg, &timeout) < 0)
                return cmd_usage_error("gc",
                                       "invalid value \"%s\" for --running-timeout: must be a "
                                       "duration such as 12h or 3d",
                                       optarg);
            break;
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return cmd_usage_error("gc", NULL);
        }
    }
    if (optind + 1 != argc)
        return cmd_usage_error("gc", optind >= argc ? "no repository given" : "too many arguments");
    if ((rc = cmd_open_repo(argv[optind], false, &g.repo, NULL)) != 0)
        return rc;
    g.max_waste = (int) max_waste;
    {
        char *cache;
        if (cbfs_repo_cache_dir(g.repo, &cache, &err) < 0)
            goto fail;
        g.tmpdir = cbfs_xasprintf("%s/gc.XXXXXX", cache);
        free(cache);
        if (!mkdtemp(g.tmpdir)) {
            cbfs_error_set(&err, errno, CBFS_EXIT_ERROR, "could not create directory \"%s\": %s",
                           g.tmpdir, strerror(errno));
            free(g.tmpdir);
            g.tmpdir = NULL;
            goto fail;
        }
    }

    if (!dry) {
        if (cbfs_lock_acquire(g.repo, "gc", &lock, &err) < 0)
            goto fail;
        locked = true;
    }
    cbfs_test_pause("gc-locked");
    /* packs first: a pack stored after the listing is not in the plan */
    if (gc_list_nodes(&g, &err) < 0 || gc_list_packs(&g, &err) < 0 ||
        gc_list_manifests(&g, &err) < 0 || gc_mark_backups(&g, &err) < 0)
        goto fail;
    gc_decide(&g);
    plan(&g, &d, &planned);
    if (g.missing_refs)
        cbfs_warning("backups use %llu blocks in packs that are missing; run \"cbfs check\"",
                     (unsigned long long) g.missing_refs);
    print_plan(&planned, dry);
    if (dry || d.npacks + d.nmanifests + d.nmoved == 0) {
        if (!dry)
            printf("nothing to collect\n");
        rc = 0;
        goto out;
    }

    if (cbfs_doomed_keys(g.repo, &old_lists, &nold, &err) < 0 ||
        cbfs_doomed_store(g.repo, &d, &list_key, &err) < 0)
        goto fail;
    cbfs_test_pause("gc-planned");
    if (running_backups(&g, timeout, &alive, &err) < 0)
        goto fail;
    if (alive) {
        printf("gc deferred: %zu running %s may use what would be removed; the plan is "
               "kept (%s) so later backups keep away from it; run gc again when %s finished\n",
               alive, alive == 1 ? "backup" : "backups", list_key,
               alive == 1 ? "it has" : "they have");
        rc = 0;
        goto out;
    }
    cbfs_test_pause("gc-sweep");
    rc = sweep(&g, &d, &done, &err);
    if (rc < 0 && rc != -EBADMSG)
        goto fail;
    {
        CbfsError e2;
        int r2 = 0;
        cbfs_error_init(&e2);
        /* our plan and the older ones: all acted on now */
        r2 = remove_key(&g, list_key, &e2);
        for (size_t i = 0; i < nold && r2 == 0; i++)
            r2 = remove_key(&g, old_lists[i], &e2);
        if (r2 < 0 && rc == 0) {
            err = e2;
            rc = r2;
        }
    }
    {
        char freed[32], a[32], b[32];
        uint64_t f = done.pack_bytes + done.manifest_bytes + done.repack_in;
        f = f > done.repack_out ? f - done.repack_out : 0;
        cbfs_format_size(f, freed, sizeof(freed));
        cbfs_format_size(done.repack_in, a, sizeof(a));
        cbfs_format_size(done.repack_out, b, sizeof(b));
        printf("gc complete: removed %zu %s, rewrote %zu %s (%s into %s), removed %zu "
               "%s and %zu relocation %s; freed %s in %.1f s\n",
               done.packs, done.packs == 1 ? "pack" : "packs", done.repacked,
               done.repacked == 1 ? "pack" : "packs", a, b, done.manifests,
               done.manifests == 1 ? "manifest" : "manifests", done.maps,
               done.maps == 1 ? "map" : "maps", freed, cbfs_now() - t0);
    }
    if (rc < 0)
        goto fail;
    rc = 0;
    goto out;
fail:
    rc = cmd_fail(&err);
out:
    if (locked)
        cbfs_lock_release(g.repo, &lock);
    for (size_t i = 0; i < nold; i++)
        free(old_lists[i]);
    free(old_lists);
    free(list_key);
    cbfs_doomed_release(&d);
    gc_release(&g);
    cbfs_repo_free(g.repo);
    return rc;
}
