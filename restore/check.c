/*
 * check.c - `cbfs check REPO [--read-data [PERCENT]] [--jobs N] [--json]
 * [--metrics-file FILE]`: is the repository whole?  What is checked, the
 * report, the exit codes, memory and threads: see check.h.
 *
 * This file is the command: its options, the backup records, each backup's
 * manifest (its paths, then its refs against the pack indexes, then the
 * blocks read), and the whole check in order: list packs/ and wal/, read
 * the records, check each backup's manifest, the packs no backup uses, the
 * WAL history files, and each backup's WAL.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbfs/block.h"
#include "cbfs/clusterpoint.h"
#include "cbfs/log.h"
#include "cbfs/manifest.h"
#include "cbfs/moved.h"
#include "cbfs/pack.h"
#include "cbfs/point.h"
#include "cbfs/ratelimit.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "check.h"
#include "commands.h"
#include "metrics.h"

volatile sig_atomic_t check_interrupted;

static void on_signal(int sig)
{
    (void) sig;
    check_interrupted = 1;
}

/* ---------------------------------------------------------------- one backup */

/* err's message with the local manifest path replaced by its object key. */
static const char *manifest_message(CbfsError *err, const char *local, const char *key)
{
    char *at = local ? strstr(err->msg, local) : NULL;
    if (at) {
        char rest[CBFS_ERROR_MSG_MAX];
        snprintf(rest, sizeof(rest), "%s", at + strlen(local));
        snprintf(at, sizeof(err->msg) - (size_t) (at - err->msg), "%s%s", key, rest);
    }
    return err->msg;
}

typedef struct Scan {
    Check *c;
    Backup *b;
    Pack *pack;    /* of the previous ref */
    ssize_t group; /* index of the missing-pack/bad-pack problem of that pack, or -1 */
} Scan;

static int path_cb(const CbfsFileEntry *f, void *ctx)
{
    Backup *b = ctx;
    b->files++;
    if (!cbfs_manifest_path_valid(f->path))
        check_problem_add(&b->problems, K_BAD_PATH, NULL, f->path, -1,
                          "the manifest names an invalid path \"%s\"", f->path);
    return check_interrupted ? 1 : 0;
}

/* The pack of a ref; true when it is not the previous ref's.  A pack the
 * listing did not show is added as missing. */
static bool scan_pack(Scan *s, const char *name)
{
    if (s->pack && strcmp(s->pack->name, name) == 0)
        return false;
    s->pack = check_packs_find(&s->c->packs, name);
    if (!s->pack)
        s->pack = check_packs_add(&s->c->packs, name);
    s->group = -1;
    return true;
}

static bool listed(void *ctx, const char *name)
{
    const Pack *p = check_packs_find(ctx, name);
    return p && p->stored;
}

/* Where a ref's block is now, found as restore and the mount find it
 * (block.h), a listed pack standing for one a read finds: 0 and *tmp, the
 * ref moved there (the ref itself when its pack is listed); -ENOENT and
 * *tmp naming the pack that is missing; otherwise err says why the ref
 * leads nowhere, and *tmp names the pack whose map failed. */
static int locate(Scan *s, const CbfsBlockRef *ref, CbfsBlockRef *tmp, CbfsError *err)
{
    CbfsBlockLoc at;
    int rc;

    *tmp = *ref;
    memcpy(at.pack, ref->pack, sizeof(at.pack));
    at.offset = ref->offset;
    at.len = ref->stored_len;
    cbfs_error_init(err);
    rc = cbfs_block_locate(s->c->repo->store, &at, listed, &s->c->packs, err);
    memcpy(tmp->pack, at.pack, sizeof(at.pack));
    tmp->offset = at.offset;
    return rc;
}

/* First walk: the distinct packs b references (refs come in pack order),
 * and its block count. */
static int collect_cb(const CbfsBlockRef *ref0, const char *path, void *ctx)
{
    Scan *s = ctx;
    CbfsBlockRef tmp;
    const CbfsBlockRef *ref = &tmp;
    Backup *b = s->b;
    CbfsError err;
    int rc;
    (void) path;
    b->blocks++;
    rc = locate(s, ref0, &tmp, &err);
    if (rc < 0 && rc != -ENOENT)
        return check_interrupted ? 1 : 0; /* it leads nowhere: verify_cb says why */
    /* refs come in pack order, but refs followed through relocation maps
     * interleave: a pack is listed once per backup all the same */
    if (scan_pack(s, ref->pack) && s->pack->listed_for != b) {
        s->pack->listed_for = b;
        s->pack->used = true;
        b->packs = cbfs_xrealloc(b->packs, (b->npacks + 1) * sizeof(Pack *));
        b->packs[b->npacks++] = s->pack;
    }
    return check_interrupted ? 1 : 0;
}

/* A ref into a pack that is missing or whose index is unreadable: one
 * problem per pack, listing the first refs. */
static void group_ref(Scan *s, Pack *p, const CbfsBlockRef *ref, const char *path)
{
    Backup *b = s->b;
    Problem *g;
    if (s->group < 0) {
        char *key = cbfs_pack_key(p->name);
        if (p->stored)
            g = check_problem_add(&b->problems, K_BAD_PACK, key, NULL, -1, "%s", p->error);
        else
            g = check_problem_add(&b->problems, K_MISSING_PACK, key, NULL, -1,
                                  "pack \"%s\" is missing", key);
        free(key);
        s->group = (ssize_t) (g - b->problems.v);
    }
    g = &b->problems.v[s->group];
    if (g->nrefs < REF_DETAIL_MAX) {
        g->refs[g->nrefs].file = cbfs_xstrdup(path);
        g->refs[g->nrefs++].offset = ref->blockno * b->block_size;
    }
    g->nblocks++;
}

/* A ref that leads nowhere: the map of pack name (the manifest's pack, or
 * one its blocks were moved to) could not be read or does not hold it.
 * One problem per map, listing the first refs. */
static void unresolved_ref(Backup *b, const char *name, int rc, const CbfsError *err,
                           const CbfsBlockRef *ref, const char *path)
{
    char *key = cbfs_moved_key(name);
    Problem *g = NULL;

    for (size_t i = 0; i < b->problems.n && !g; i++)
        if (b->problems.v[i].kind == K_UNRESOLVED_REF && strcmp(b->problems.v[i].object, key) == 0)
            g = &b->problems.v[i];
    if (!g && rc == -ERANGE) {
        char *pkey = cbfs_pack_key(name);
        g = check_problem_add(&b->problems, K_UNRESOLVED_REF, key, NULL, -1,
                              "relocation map \"%s\" does not hold every block the backup "
                              "names in pack \"%s\"",
                              key, pkey);
        free(pkey);
    } else if (!g) {
        g = check_problem_add(&b->problems, K_UNRESOLVED_REF, key, NULL, -1, "%s", err->msg);
    }
    if (g->nrefs < REF_DETAIL_MAX) {
        g->refs[g->nrefs].file = cbfs_xstrdup(path);
        g->refs[g->nrefs++].offset = ref->blockno * b->block_size;
    }
    g->nblocks++;
    free(key);
}

static uint64_t next_random(Check *c)
{
    /* xorshift64*: plenty for sampling */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * UINT64_C(2685821657736338717);
}

/* Second walk: every ref against its pack's index; picks blocks to read. */
static int verify_cb(const CbfsBlockRef *ref0, const char *path, void *ctx)
{
    Scan *s = ctx;
    CbfsBlockRef tmp;
    const CbfsBlockRef *ref = &tmp;
    Check *c = s->c;
    CbfsError err;
    Pack *p;
    ssize_t e;
    int rc = locate(s, ref0, &tmp, &err);

    if (rc < 0 && rc != -ENOENT) {
        unresolved_ref(s->b, tmp.pack, rc, &err, ref0, path);
        return check_interrupted ? 1 : 0;
    }
    scan_pack(s, ref->pack);
    p = s->pack;
    if (!p->stored || p->error) {
        group_ref(s, p, ref, path);
        return check_interrupted ? 1 : 0;
    }
    e = check_pack_entry(p, ref->offset);
    if (e < 0 || memcmp(p->entries[e].id, ref->id, CBFS_BLOCK_ID_LEN) != 0 ||
        p->entries[e].stored_len != ref->stored_len || p->entries[e].raw_len != ref->raw_len) {
        char *key = cbfs_pack_key(p->name);
        uint64_t off = ref->blockno * s->b->block_size;
        Problem *pr = check_problem_add(
            &s->b->problems, K_BAD_INDEX_ENTRY, key, path, (int64_t) off,
            "file \"%s\" at offset %llu: %s at offset %llu of pack \"%s\"", path,
            (unsigned long long) off, e < 0 ? "no block is indexed" : "another block is indexed",
            (unsigned long long) ref->offset, key);
        if (pr)
            pr->pack_offset = (int64_t) ref->offset;
        free(key);
    } else if (p->marks && !(p->marks[e] & MARK_DECIDED)) {
        p->marks[e] |= MARK_DECIDED;
        if (c->percent >= 100 || (long) (next_random(c) % 100) < c->percent)
            p->marks[e] |= MARK_SELECTED;
    }
    return check_interrupted ? 1 : 0;
}

/* Third walk, when a pack of b has bad blocks: every ref to one. */
static int bad_block_cb(const CbfsBlockRef *ref0, const char *path, void *ctx)
{
    Scan *s = ctx;
    CbfsBlockRef tmp;
    const CbfsBlockRef *ref = &tmp;
    CbfsError err;
    Pack *p;
    ssize_t e;

    if (locate(s, ref0, &tmp, &err) < 0)
        return check_interrupted ? 1 : 0;
    scan_pack(s, ref->pack);
    p = s->pack;
    if (!p->nbad || (e = check_pack_entry(p, ref->offset)) < 0 || !(p->marks[e] & MARK_BAD) ||
        memcmp(p->entries[e].id, ref->id, CBFS_BLOCK_ID_LEN) != 0)
        return check_interrupted ? 1 : 0;
    {
        char *key = cbfs_pack_key(p->name);
        uint64_t off = ref->blockno * s->b->block_size;
        Problem *pr =
            check_problem_add(&s->b->problems, K_BAD_BLOCK, key, path, (int64_t) off,
                              "file \"%s\" at offset %llu: %s", path, (unsigned long long) off,
                              check_pack_bad_message(p, (size_t) e));
        if (pr)
            pr->pack_offset = (int64_t) ref->offset;
        free(key);
    }
    return check_interrupted ? 1 : 0;
}

static void finish_groups(Backup *b)
{
    for (size_t i = 0; i < b->problems.n; i++) {
        Problem *p = &b->problems.v[i];
        if (p->kind == K_MISSING_PACK || p->kind == K_BAD_PACK || p->kind == K_UNRESOLVED_REF) {
            char *m = cbfs_xasprintf(
                p->kind == K_UNRESOLVED_REF ? "%s; %llu block%s of the backup cannot be found"
                                            : "%s; it holds %llu block%s of the backup",
                p->message, (unsigned long long) p->nblocks, p->nblocks == 1 ? "" : "s");
            free(p->message);
            p->message = m;
        }
    }
}

static bool has_bad_blocks(const Backup *b)
{
    for (size_t i = 0; i < b->npacks; i++)
        if (b->packs[i]->nbad)
            return true;
    return false;
}

/* The block checks of a manifest that opened and passed quick_check. */
static void check_blocks(Check *c, Backup *b, CbfsManifest *m, const char *local, const char *key)
{
    Scan s = {c, b, NULL, -1};
    CbfsError err;
    int rc;

    cbfs_error_init(&err);
    rc = cbfs_manifest_foreach_block(m, collect_cb, &s, &err);
    if (rc < 0) {
        check_problem_add(&b->problems, K_BAD_MANIFEST, key, NULL, -1, "%s",
                          manifest_message(&err, local, key));
        return;
    }
    if (rc > 0)
        return; /* interrupted */
    check_packs_load_indexes(c, b->packs, b->npacks, false);
    s.pack = NULL;
    rc = cbfs_manifest_foreach_block(m, verify_cb, &s, &err);
    finish_groups(b);
    if (rc < 0)
        check_problem_add(&b->problems, K_BAD_MANIFEST, key, NULL, -1, "%s",
                          manifest_message(&err, local, key));
    if (rc != 0 || !c->percent)
        return;
    check_packs_read_blocks(c, b);
    if (has_bad_blocks(b) && !check_interrupted) {
        s.pack = NULL;
        cbfs_manifest_foreach_block(m, bad_block_cb, &s, &err);
    }
}

static void check_backup(Check *c, Backup *b)
{
    const char *key = cbfs_kv_get(b->rec, "manifest");
    char *local = NULL;
    CbfsManifest *m = NULL;
    CbfsError err;

    cbfs_error_init(&err);
    {
        uint64_t size = 0; /* --max-rate holds the manifests check reads too */
        if (cbfs_kv_get_u64(b->rec, "manifest_size", &size) == 0)
            cbfs_ratelimit_take(cbfs_ratelimit_global(), size);
    }
    if (cbfs_repo_fetch_manifest(c->repo, b->rec, c->tmpdir, &local, &err) < 0 ||
        cbfs_manifest_open(local, &m, &err) < 0 || cbfs_manifest_quick_check(m, &err) < 0) {
        check_problem_add(&b->problems, K_BAD_MANIFEST, key, NULL, -1, "%s",
                          manifest_message(&err, local, key ? key : "?"));
        goto out;
    }
    b->manifest_read = true;
    if (cbfs_manifest_foreach_file(m, path_cb, b, &err) < 0) {
        check_problem_add(&b->problems, K_BAD_MANIFEST, key, NULL, -1, "%s",
                          manifest_message(&err, local, key));
        goto out;
    }
    if (!check_interrupted)
        check_blocks(c, b, m, local, key);
out:
    cbfs_manifest_free(m);
    if (local)
        unlink(local);
    free(local);
}

/* ---------------------------------------------------------------- backup records */

/* Oldest first, as cbfs list shows them: by stop LSN, then label. */
static int cmp_backup(const void *a, const void *b)
{
    const Backup *x = a, *y = b;
    if (x->stop_lsn != y->stop_lsn)
        return x->stop_lsn < y->stop_lsn ? -1 : 1;
    return strcmp(x->label, y->label);
}

/* Every record under backups/; one that cannot be read is that backup's
 * problem (cbfs_repo_list_backups would fail as a whole). */
static int read_backups(Check *c, CbfsError *err)
{
    char **labels = NULL;
    size_t nlabels = 0;
    int rc = cbfs_repo_list_labels(c->repo, &labels, &nlabels, err);

    c->backups = cbfs_xcalloc(nlabels ? nlabels : 1, sizeof(Backup));
    for (size_t i = 0; i < nlabels; i++) {
        Backup *b = &c->backups[c->nbackups];
        CbfsError rerr;
        uint64_t bs;
        int r;
        cbfs_error_init(&rerr);
        r = cbfs_repo_read_backup(c->repo, labels[i], &b->rec, &rerr);
        if (r == -ENOENT) { /* not a valid label, or gone */
            free(labels[i]);
            continue;
        }
        b->label = labels[i];
        c->nbackups++;
        if (r < 0) {
            b->rec = NULL;
            check_problem_add(&b->problems, K_BAD_RECORD, NULL, NULL, -1, "%s", rerr.msg);
            continue;
        }
        if (cbfs_kv_get(b->rec, "stop_lsn"))
            cbfs_lsn_parse(cbfs_kv_get(b->rec, "stop_lsn"), &b->stop_lsn);
        b->block_size = c->repo->block_size;
        if (cbfs_kv_get_u64(b->rec, "block_size", &bs) == 0 && bs >= 8192 && bs % 8192 == 0 &&
            bs <= (1u << 20))
            b->block_size = (uint32_t) bs;
    }
    free(labels);
    if (rc == 0 && c->nbackups)
        qsort(c->backups, c->nbackups, sizeof(Backup), cmp_backup);
    return rc;
}

/* ---------------------------------------------------------------- the whole check */

static int make_tmpdir(Check *c, CbfsError *err)
{
    const char *base = getenv("TMPDIR");
    c->tmpdir = cbfs_xasprintf("%s/cbfs-check.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(c->tmpdir)) {
        int rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR,
                                "could not create temporary directory \"%s\": %s", c->tmpdir,
                                strerror(errno));
        free(c->tmpdir);
        c->tmpdir = NULL;
        return rc;
    }
    return 0;
}

/* Check the node c->repo serves: its backups and its WAL. */
static void check_node(Check *c)
{
    for (size_t i = 0; i < c->nbackups && !check_interrupted; i++) {
        cbfs_progress("check: %s%sbackup %s (%zu of %zu)", c->several ? "node " : "",
                      c->several ? cbfs_repo_node_name(c->repo) : "", c->backups[i].label, i + 1,
                      c->nbackups);
        if (c->backups[i].rec)
            check_backup(c, &c->backups[i]);
    }
    cbfs_progress_end();
    if (!check_interrupted)
        check_wal_histories(c);
    for (size_t i = 0; i < c->nbackups && !check_interrupted; i++)
        check_wal_backup(c, &c->backups[i]);
}

/* The backup a node restores a cluster point from, as restore finds it:
 * NULL (and why) when there is none or its WAL does not reach the point. */
static const Backup *point_backup(Check *c, const NodeCheck *nc, const char *point, char *why,
                                  size_t size)
{
    CbfsTarget t;
    CbfsError e;
    cbfs_error_init(&e);
    if (cbfs_point_resolve(nc->view, point, &t, &e) < 0) {
        snprintf(why, size, "%s", e.msg);
        return NULL;
    }
    for (size_t i = 0; i < nc->nbackups; i++)
        if (strcmp(nc->backups[i].label, t.label) == 0) {
            cbfs_target_release(&t);
            return &nc->backups[i];
        }
    snprintf(why, size, "backup \"%s\" is not in the repository", t.label);
    cbfs_target_release(&t);
    (void) c;
    return NULL;
}

/* Every cluster point: restorable on every node? */
static int check_cluster_points(Check *c, CbfsError *err)
{
    CbfsClusterPoint *cps;
    size_t n;
    int rc = cbfs_cluster_point_list(c->base, &cps, &n, err);

    if (rc < 0)
        return rc;
    c->cps = cbfs_xcalloc(n ? n : 1, sizeof(ClusterCheck));
    for (size_t i = 0; i < n; i++) {
        ClusterCheck *cc = &c->cps[c->ncps++];
        char *key = cbfs_xasprintf("cluster-points/%s", cps[i].name);
        cc->name = cbfs_xstrdup(cps[i].name);
        for (size_t k = 0; k < cps[i].n; k++) {
            const NodeCheck *nc = NULL;
            const Backup *b;
            char why[CBFS_ERROR_MSG_MAX];
            Problem *p = NULL;
            for (size_t j = 0; j < c->nnodes && !nc; j++)
                if (strcmp(c->nodes[j].name, cps[i].nodes[k].node) == 0)
                    nc = &c->nodes[j];
            if (!nc) {
                p = check_problem_add(&cc->problems, K_CLUSTER_POINT, key, NULL, -1,
                                      "node \"%s\" is not in the repository", cps[i].nodes[k].node);
            } else if (!(b = point_backup(c, nc, cps[i].name, why, sizeof(why)))) {
                p = check_problem_add(&cc->problems, K_CLUSTER_POINT, key, NULL, -1,
                                      "node \"%s\": %s", nc->name, why);
            } else if (check_problems_count(&b->problems) > 0) {
                p = check_problem_add(&cc->problems, K_CLUSTER_POINT, key, NULL, -1,
                                      "node \"%s\": backup \"%s\" it starts from has problems",
                                      nc->name, b->label);
            }
            if (p)
                p->node = cbfs_xstrdup(cps[i].nodes[k].node);
        }
        free(key);
        cbfs_cluster_point_release(&cps[i]);
    }
    free(cps);
    return 0;
}

static int check_run(Check *c, CbfsError *err)
{
    char **names = NULL;
    size_t nn = 0;
    int rc;

    if ((rc = make_tmpdir(c, err)) < 0 || (rc = check_packs_list(c, err)) < 0)
        return rc;
    if (c->only) {
        if ((rc = cbfs_repo_select_node(c->base, c->only, err)) < 0)
            return rc;
        names = cbfs_xcalloc(1, sizeof(char *));
        names[nn++] = cbfs_xstrdup(cbfs_repo_node_name(c->base));
    } else if ((rc = cbfs_repo_list_nodes(c->base, &names, &nn, err)) < 0) {
        return rc;
    }
    if (nn == 0) {
        names = cbfs_xrealloc(names, sizeof(char *));
        names[nn++] = cbfs_xstrdup(CBFS_NODE_DEFAULT);
    }
    c->several = nn > 1 || strcmp(names[0], CBFS_NODE_DEFAULT) != 0;
    c->nodes = cbfs_xcalloc(nn, sizeof(NodeCheck));
    for (size_t i = 0; i < nn && rc == 0 && !check_interrupted; i++) {
        NodeCheck *nc = &c->nodes[c->nnodes++];
        nc->name = names[i];
        names[i] = NULL;
        nc->view = cbfs_repo_node_view(c->base, nc->name);
        c->repo = nc->view;
        if ((rc = check_wal_list(c, err)) == 0 && (rc = read_backups(c, err)) == 0)
            check_node(c);
        /* the node's results, and a clean slate for the next */
        nc->backups = c->backups;
        nc->nbackups = c->nbackups;
        nc->wal = c->wal;
        c->backups = NULL;
        c->nbackups = 0;
        memset(&c->wal, 0, sizeof(c->wal));
    }
    cbfs_store_free_names(names, nn);
    c->repo = c->base;
    if (rc < 0)
        return rc;
    /* the packs no backup uses: only known when every node was looked at */
    if (!check_interrupted && !c->only)
        check_packs_unused(c);
    if (!check_interrupted && !c->only && (rc = check_cluster_points(c, err)) < 0)
        return rc;
    if (check_interrupted)
        return cbfs_error_set(err, EINTR, CBFS_EXIT_ERROR, "check interrupted");
    return 0;
}

static void release_backups(Backup *backups, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        Backup *b = &backups[i];
        free(b->label);
        cbfs_kv_free(b->rec);
        free(b->packs);
        check_problems_release(&b->problems);
    }
    free(backups);
}

static void check_release(Check *c)
{
    release_backups(c->backups, c->nbackups);
    check_wal_release(&c->wal);
    for (size_t i = 0; i < c->nnodes; i++) {
        release_backups(c->nodes[i].backups, c->nodes[i].nbackups);
        check_wal_release(&c->nodes[i].wal);
        cbfs_repo_free(c->nodes[i].view);
        free(c->nodes[i].name);
    }
    free(c->nodes);
    for (size_t i = 0; i < c->ncps; i++) {
        free(c->cps[i].name);
        check_problems_release(&c->cps[i].problems);
    }
    free(c->cps);
    check_packs_release(&c->packs);
    check_problems_release(&c->pack_problems);
    if (c->tmpdir)
        rmdir(c->tmpdir);
    free(c->tmpdir);
    pthread_mutex_destroy(&c->lock);
}

/* ---------------------------------------------------------------- the command */

static void usage(void)
{
    printf(
        "Usage: cbfs check REPO [OPTIONS]\n"
        "\n"
        "Check that the repository is whole: every backup's record and manifest, that\n"
        "every block a manifest references is in a stored pack whose index lists it,\n"
        "the index of every pack, and that the archived WAL has no gap from each\n"
        "backup's start to its stop (needed to restore it) and on to the newest WAL\n"
        "file, following timeline switches (needed to recover past it).  Everything\n"
        "wrong is reported, grouped by backup; a WAL gap once per backup needing it.\n"
        "\n"
        "Options:\n"
        "      --read-data[=PERCENT]  also read every referenced block (or each with a\n"
        "                             probability of PERCENT, 1-100), decompress it and\n"
        "                             verify its checksum; \"--read-data 10\" works too\n"
        "                             when the next argument is a number\n"
        "  -j, --jobs N               parallel requests (default: 4)\n"
        "      --max-rate RATE        read blocks at most RATE bytes a second (50M, 1G;\n"
        "                             also CBFS_MAX_RATE or max_rate in the configuration)\n"
        "      --json                 print the report as JSON:\n"
        "                               {\"repository\", \"ok\", \"duration_seconds\",\n"
        "                                \"backups\": [{\"label\", \"ok\", \"files\", \"blocks\",\n"
        "                                  \"packs\", \"problems\": [P], \"unlisted\"}],\n"
        "                                \"wal\": {\"files\", \"timelines\", \"newest\",\n"
        "                                  \"gaps\": [{\"timeline\", \"from\", \"to\",\n"
        "                                    \"inside_backup\", \"backups\"}], \"problems\"},\n"
        "                                \"packs\": {\"stored\", \"used\", \"unused\", "
        "\"missing\",\n"
        "                                  \"problems\"},\n"
        "                                \"read_data\": {\"percent\", \"blocks\", \"bytes\",\n"
        "                                  \"bad_blocks\"} or null, \"problems\": N}\n"
        "                               P: {\"kind\", \"message\", \"object\", \"file\", "
        "\"offset\"}\n"
        "      --metrics-file FILE    write Prometheus metrics (cbfs_check_*) to FILE\n"
        "      --node NAME            check one node of a repository that holds several\n"
        "      --passphrase-file FILE passphrase of an encrypted repository (mode 0600)\n"
        "  -h, --help                 show this help\n"
        "\n"
        "Exit status: 0 nothing wrong, 5 problems found, 3 repository cannot be opened,\n"
        "2 usage error, 1 another failure.\n");
}

/* "10" or "10%" for --read-data. */
static bool is_number(const char *s)
{
    size_t n = strspn(s, "0123456789");
    return n > 0 && n <= 4 && (s[n] == '\0' || (s[n] == '%' && s[n + 1] == '\0'));
}

static int parse_percent(const char *s, long *ret)
{
    char buf[8];
    if (!is_number(s))
        return -EINVAL;
    snprintf(buf, sizeof(buf), "%.*s", (int) strspn(s, "0123456789"), s);
    return cbfs_parse_int(buf, 1, 100, ret);
}

typedef struct Options {
    long jobs;
    long percent;
    bool json;
    const char *metrics;
    const char *repo;
    const char *node;
} Options;

/* 0 to go on, -1 after --help, or an exit code. */
static int parse_options(int argc, char **argv, Options *o)
{
    static const struct option opts[] = {
        {"read-data", optional_argument, NULL, 'R'},
        {"jobs", required_argument, NULL, 'j'},
        {"json", no_argument, NULL, 'J'},
        {"max-rate", required_argument, NULL, 'r'},
        {"metrics-file", required_argument, NULL, 'M'},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"node", required_argument, NULL, CMD_OPT_NODE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    bool rate_given = false;

    *o = (Options){4, 0, false, NULL, NULL, NULL};
    while ((ch = getopt_long(argc, argv, "j:h", opts, NULL)) != -1) {
        const char *arg = optarg;
        switch (ch) {
        case 'R':
            if (!arg && optind < argc && is_number(argv[optind]))
                arg = argv[optind++];
            o->percent = 100;
            if (arg && parse_percent(arg, &o->percent) < 0)
                return cmd_usage_error("check",
                                       "invalid value for --read-data: \"%s\" (expected a "
                                       "percentage from 1 to 100)",
                                       arg);
            break;
        case 'j':
            if (cbfs_parse_int(optarg, 1, 256, &o->jobs) < 0)
                return cmd_usage_error("check", "invalid value for --jobs: \"%s\"", optarg);
            break;
        case 'J':
            o->json = true;
            break;
        case 'r': {
            int rc = cmd_max_rate("check", optarg);
            if (rc != 0)
                return rc;
            rate_given = true;
            break;
        }
        case 'M':
            o->metrics = optarg;
            break;
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case CMD_OPT_NODE:
            o->node = optarg;
            break;
        case 'h':
            usage();
            return -1;
        default:
            return cmd_usage_error("check", NULL);
        }
    }
    if (optind + 1 != argc)
        return cmd_usage_error("check",
                               optind >= argc ? "no repository given" : "too many arguments");
    /* else $CBFS_MAX_RATE or max_rate in the configuration */
    if (!rate_given) {
        int rc = cmd_max_rate("check", NULL);
        if (rc != 0)
            return rc;
    }
    o->repo = argv[optind];
    return 0;
}

static int write_metrics(const Options *o, const char *repository, bool success, double secs,
                         uint64_t bytes, uint64_t failures)
{
    CmdMetrics m = {"check", repository, success, secs, bytes, failures};
    CbfsError err;
    cbfs_error_init(&err);
    if (!o->metrics)
        return 0;
    if (cmd_metrics_write(o->metrics, &m, &err) < 0) {
        cmd_fail(&err);
        return -1;
    }
    return 0;
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second one ends the process at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

int cmd_check(int argc, char **argv)
{
    Options o;
    CbfsLocation loc;
    CbfsError err;
    Check c;
    double t0 = cbfs_now(), secs;
    uint64_t n;
    int rc = parse_options(argc, argv, &o);

    if (rc != 0)
        return rc < 0 ? 0 : rc;
    cbfs_error_init(&err);
    if (cbfs_location_parse(o.repo, false, &loc, &err) < 0)
        return cmd_fail(&err);
    memset(&c, 0, sizeof(c));
    pthread_mutex_init(&c.lock, NULL);
    c.jobs = o.jobs;
    c.percent = o.percent;
    cbfs_random_bytes(&c.rng, sizeof(c.rng));
    c.rng |= 1; /* xorshift never leaves 0 */
    rc = cbfs_repo_open(&loc, &c.repo, &err);
    c.base = c.repo;
    c.only = o.node;
    cbfs_location_release(&loc);
    /* every object is read: an encrypted repository's key first */
    if (rc == 0)
        rc = cbfs_repo_unlock(c.repo, &err);
    if (rc < 0) {
        rc = cmd_fail(&err);
        write_metrics(&o, o.repo, false, cbfs_now() - t0, 0, 0);
        check_release(&c);
        cbfs_repo_free(c.base);
        return rc;
    }
    catch_signals();
    rc = check_run(&c, &err);
    secs = cbfs_now() - t0;
    n = check_problems_total(&c);
    if (rc < 0) {
        rc = cmd_fail(&err);
    } else {
        if (o.json)
            check_report_json(&c, secs);
        else
            check_report_print(&c, secs);
        fflush(stdout);
        if (n)
            cbfs_error("repository \"%s\" has %llu %s", c.base->display, (unsigned long long) n,
                       check_plural(n, "problem", "problems"));
        rc = n ? CBFS_EXIT_CORRUPT : 0;
    }
    if (write_metrics(&o, c.base->display, rc == 0, secs, c.bytes_read, n) < 0 && rc == 0)
        rc = CBFS_EXIT_ERROR;
    check_release(&c);
    cbfs_repo_free(c.base);
    return rc;
}
