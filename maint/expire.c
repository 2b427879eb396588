/*
 * expire.c - `cbfs expire REPO [policy] [--dry-run]`: remove the backups a
 * retention policy does not keep, the WAL no kept backup needs and the
 * restore points before the oldest kept backup.  Packs are left to gc.
 *
 * Order, so that a kill at any moment leaves the repository usable: the
 * lock; then for each expired backup its record (the backup is gone), then
 * its manifest (an orphan manifest left by a kill is gc's); then WAL and
 * points older than the oldest kept backup's start, which nothing kept can
 * use.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/clusterpoint.h"
#include "cbfs/config.h"
#include "cbfs/lock.h"
#include "cbfs/log.h"
#include "cbfs/pin.h"
#include "cbfs/point.h"
#include "cbfs/retention.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "commands.h"

static const char usage_text[] =
    "Usage: cbfs expire REPO [OPTIONS]\n"
    "\n"
    "Remove the backups the retention policy does not keep, the WAL no kept\n"
    "backup needs (everything from the oldest kept backup's start on stays,\n"
    "so point-in-time recovery works across the whole window) and the restore\n"
    "points before it.  The newest, the pinned and the mounted backups are\n"
    "always kept.\n"
    "Run \"cbfs gc\" afterwards to free the space of packs no backup uses.\n"
    "\n"
    "Policy (a backup any rule keeps is kept; without options, the keep_*\n"
    "settings of the configuration file):\n"
    "  --keep-last N          the N newest backups\n"
    "  --keep-within DURATION every backup that ended within DURATION (36h, 14d, 2w)\n"
    "  --keep-daily N         the newest backup of each of the last N days with one\n"
    "  --keep-weekly N        ... of each of the last N ISO weeks with one\n"
    "  --keep-monthly N       ... of each of the last N months with one\n"
    "\n"
    "In a repository of several nodes the policy applies to each node's backups;\n"
    "a cluster restore point no older than the oldest backup kept on any node\n"
    "is kept, and on every node with it the backup it starts from and the WAL\n"
    "from there on.\n"
    "\n"
    "Options:\n"
    "  -n, --dry-run          show what would be removed, remove nothing\n"
    "      --node NAME        expire one node only (it keeps what every cluster\n"
    "                         point needs)\n"
    "      --passphrase-file FILE  an encrypted repository's passphrase\n"
    "  -h, --help             show this help\n";

static int set_count(const char *name, const char *v, int *out)
{
    long n;
    if (cbfs_parse_int(v, 1, 1000000, &n) < 0)
        return cmd_usage_error("expire", "invalid value \"%s\" for %s: must be a positive integer",
                               v, name);
    *out = (int) n;
    return 0;
}

static int set_within(const char *name, const char *v, int64_t *out)
{
    if (cbfs_parse_duration(v, out) < 0)
        return cmd_usage_error("expire",
                               "invalid value \"%s\" for %s: must be a duration such as 36h or 14d",
                               v, name);
    return 0;
}

/* The policy from the configuration file (keep_last, keep_within, ...). */
static int policy_from_config(CbfsRetention *p)
{
    static const char *const keys[] = {"keep_last", "keep_within", "keep_daily", "keep_weekly",
                                       "keep_monthly"};
    int *counts[] = {&p->keep_last, NULL, &p->keep_daily, &p->keep_weekly, &p->keep_monthly};
    CbfsError err;

    cbfs_error_init(&err);
    for (size_t i = 0; i < CBFS_ARRAY_LEN(keys); i++) {
        const char *v;
        int rc;
        if (cbfs_config_get(keys[i], NULL, false, &v, &err) < 0)
            return cmd_fail(&err);
        if (!v)
            continue;
        rc = counts[i] ? set_count(keys[i], v, counts[i]) : set_within(keys[i], v, &p->keep_within);
        if (rc)
            return rc;
    }
    return 0;
}

/* Now, or $CBFS_NOW (Unix seconds) so that tests can replay a made-up
 * history without a clock moving under them. */
static time_t expire_now(void)
{
    const char *s = getenv("CBFS_NOW");
    long v;
    if (s && cbfs_parse_int(s, 0, 0x7fffffffL, &v) == 0)
        return (time_t) v;
    return time(NULL);
}

typedef struct {
    char **keys;
    uint64_t *sizes;
    size_t n;
} WalList;

static int collect_wal(const char *key, uint64_t size, void *ctx)
{
    WalList *l = ctx;
    l->keys = cbfs_xrealloc(l->keys, (l->n + 1) * sizeof(char *));
    l->sizes = cbfs_xrealloc(l->sizes, (l->n + 1) * sizeof(uint64_t));
    l->keys[l->n] = cbfs_xstrdup(key);
    l->sizes[l->n++] = size;
    return 0;
}

/* True if the WAL object key holds a file older than segment cut: a
 * segment, partial segment or backup history file whose segment number is
 * below it.  History files always stay (they are tiny, and recovery to a
 * later timeline reads every one). */
static bool wal_before(const char *key, uint64_t cut, uint32_t seg_size)
{
    const char *name = strrchr(key, '/');
    enum cbfs_wal_kind kind;
    char seg[25];
    uint32_t tli;
    uint64_t segno;

    name = name ? name + 1 : key;
    kind = cbfs_wal_classify(name, NULL);
    if (kind != CBFS_WAL_SEGMENT && kind != CBFS_WAL_PARTIAL && kind != CBFS_WAL_BACKUP_HISTORY)
        return false;
    memcpy(seg, name, 24);
    seg[24] = '\0';
    return cbfs_wal_parse_segname(seg, seg_size, &tli, &segno) == 0 && segno < cut;
}

static int remove_object(CbfsRepo *r, const char *key, CbfsError *err)
{
    int rc = cbfs_store_remove(r->store, key, err);
    if (rc < 0 && rc != -ENOENT) {
        cbfs_error_prefix(err, "could not remove \"%s\"", key);
        return rc;
    }
    return 0;
}

/* Keep the live mount registrations (lock.h) in mounts[0..*n) and remove
 * the others (not in a dry run).  A mount of another host counts until it
 * unregisters: its process cannot be looked at, and a mount may rightly
 * last for weeks; a dead mount of this host is gone. */
static void live_mounts(CbfsRepo *repo, CbfsHolder *mounts, size_t *n, bool dry)
{
    time_t now = time(NULL);
    size_t live = 0;

    for (size_t i = 0; i < *n; i++) {
        CbfsError e;
        if (cbfs_holder_alive(&mounts[i], 0, now)) {
            mounts[live++] = mounts[i];
            continue;
        }
        cbfs_error_init(&e);
        if (!dry && cbfs_registration_remove(repo, &mounts[i], &e) < 0)
            cbfs_warning("%s", e.msg);
    }
    *n = live;
}

static bool mounted(const CbfsHolder *mounts, size_t n, const char *label)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(mounts[i].label, label) == 0)
            return true;
    return false;
}

/* One node's part: its backups and what the policy says of them. */
typedef struct NodeExpire {
    CbfsRepo *v;
    CbfsKv **recs;
    size_t nrecs;
    CbfsRetainItem *items;
    char **pins;
    size_t npins;
    CbfsHolder *mounts;
    size_t nmounts;
} NodeExpire;

static void release_node(NodeExpire *ne)
{
    for (size_t i = 0; i < ne->npins; i++)
        free(ne->pins[i]);
    free(ne->pins);
    free(ne->mounts);
    free(ne->items);
    if (ne->recs)
        cbfs_repo_free_backups(ne->recs, ne->nrecs);
    cbfs_repo_free(ne->v);
}

/* Read the node's backups, pins and mounts, and apply the policy. */
static int decide_node(NodeExpire *ne, const CbfsRetention *policy, bool dry, CbfsError *err)
{
    if (cbfs_repo_list_backups(ne->v, &ne->recs, &ne->nrecs, err) < 0 ||
        cbfs_pin_list(ne->v, &ne->pins, &ne->npins, err) < 0 ||
        cbfs_mount_list(ne->v, &ne->mounts, &ne->nmounts, err) < 0)
        return -1;
    live_mounts(ne->v, ne->mounts, &ne->nmounts, dry);
    ne->items = cbfs_xcalloc(ne->nrecs ? ne->nrecs : 1, sizeof(CbfsRetainItem));
    for (size_t i = 0; i < ne->nrecs; i++) {
        const char *stop = cbfs_kv_get(ne->recs[i], "stop_time");
        CbfsRetainItem *it = &ne->items[i];
        it->label = cbfs_kv_get(ne->recs[i], "label");
        it->pinned = cbfs_pin_in(ne->pins, ne->npins, it->label);
        it->mounted = mounted(ne->mounts, ne->nmounts, it->label);
        if (!stop || cbfs_parse_time(stop, &it->time, NULL) < 0)
            return cbfs_error_set(err, EINVAL, CBFS_EXIT_CORRUPT,
                                  "backup record of \"%s\" has no valid stop_time", it->label);
    }
    cbfs_retention_apply(policy, expire_now(), ne->items, ne->nrecs);
    return 0;
}

/* The newest backup of the node that ends at or before lsn (records are
 * oldest first): a cluster point of the node starts from it. */
static void keep_for_point(NodeExpire *ne, uint64_t lsn)
{
    for (size_t i = ne->nrecs; i-- > 0;) {
        uint64_t stop;
        const char *s = cbfs_kv_get(ne->recs[i], "stop_lsn");
        if (s && cbfs_lsn_parse(s, &stop) == 0 && stop <= lsn) {
            ne->items[i].keep |= CBFS_KEEP_CLUSTER;
            return;
        }
    }
}

typedef struct Totals {
    size_t backups, expired, wal, points;
    uint64_t wal_bytes;
} Totals;

/* Remove what the node does not keep: backups, then WAL and restore points
 * before its oldest kept backup's start.  Lines prefixed by the node's name
 * when there are several. */
static int expire_node(NodeExpire *ne, bool dry, bool several, Totals *t, CbfsError *err)
{
    CbfsRepo *v = ne->v;
    char pre[CBFS_NODE_MAX + 16] = "";
    const CbfsKv *oldest = NULL;
    uint64_t seg_size, cut_seg, cut_lsn;
    uint32_t tli;
    WalList wal = {0};
    CbfsKv **points = NULL;
    size_t npoints = 0;
    int rc = 0;

    if (several)
        snprintf(pre, sizeof(pre), "%s: ", cbfs_repo_node_name(v));
    t->backups += ne->nrecs;
    for (size_t i = 0; i < ne->nrecs && rc == 0; i++) {
        char why[160];
        if (ne->items[i].keep) {
            cbfs_retention_reasons(ne->items[i].keep, why, sizeof(why));
            printf("%skeep    %s (%s)\n", pre, ne->items[i].label, why);
            continue;
        }
        printf("%sexpire  %s\n", pre, ne->items[i].label);
        t->expired++;
        if (!dry) {
            char *ikey = cbfs_xasprintf("backups/%s.info", ne->items[i].label);
            const char *mkey = cbfs_kv_get(ne->recs[i], "manifest");
            rc = remove_object(v, ikey, err);
            free(ikey);
            cbfs_test_pause("expire-record-removed");
            if (rc == 0 && mkey && strncmp(mkey, "backups/", 8) == 0 && cbfs_store_key_valid(mkey))
                rc = remove_object(v, mkey, err);
        }
    }
    if (rc < 0 || ne->nrecs == 0)
        return rc;

    /* WAL and restore points before the oldest kept backup's start */
    for (size_t i = 0; i < ne->nrecs && !oldest; i++)
        if (ne->items[i].keep)
            oldest = ne->recs[i];
    if (!oldest || cbfs_kv_get_u64(oldest, "wal_segment_size", &seg_size) < 0 ||
        !cbfs_kv_get(oldest, "wal_start") ||
        cbfs_wal_parse_segname(cbfs_kv_get(oldest, "wal_start"), (uint32_t) seg_size, &tli,
                               &cut_seg) < 0 ||
        !cbfs_kv_get(oldest, "start_lsn") ||
        cbfs_lsn_parse(cbfs_kv_get(oldest, "start_lsn"), &cut_lsn) < 0)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_CORRUPT,
                              "backup record of \"%s\" has no valid WAL start",
                              oldest ? cbfs_kv_get(oldest, "label") : "?");
    if ((rc = cbfs_store_list(v->store, "wal/", collect_wal, &wal, err)) < 0)
        goto out;
    for (size_t i = 0; i < wal.n; i++) {
        if (!wal_before(wal.keys[i], cut_seg, (uint32_t) seg_size))
            continue;
        t->wal++;
        t->wal_bytes += wal.sizes[i];
        if (!dry && (rc = remove_object(v, wal.keys[i], err)) < 0)
            goto out;
    }
    if ((rc = cbfs_point_list(v, &points, &npoints, err)) < 0)
        goto out;
    for (size_t i = 0; i < npoints; i++) {
        uint64_t lsn;
        const char *name = cbfs_kv_get(points[i], "name");
        if (!name || !cbfs_kv_get(points[i], "lsn") ||
            cbfs_lsn_parse(cbfs_kv_get(points[i], "lsn"), &lsn) < 0 || lsn >= cut_lsn)
            continue;
        printf("%sexpire  restore point %s\n", pre, name);
        t->points++;
        if (!dry) {
            char *pkey = cbfs_xasprintf("points/%s", name);
            rc = remove_object(v, pkey, err);
            free(pkey);
            if (rc < 0)
                goto out;
        }
    }
    if (!several) {
        char size[32], segname[32];
        cbfs_format_size(t->wal_bytes, size, sizeof(size));
        cbfs_wal_segname(tli, cut_seg, (uint32_t) seg_size, segname, sizeof(segname));
        printf("%s %zu of %zu %s, %zu WAL %s (%s) before %s and %zu restore %s%s\n",
               dry ? "would expire" : "expired", t->expired, t->backups,
               t->backups == 1 ? "backup" : "backups", t->wal, t->wal == 1 ? "file" : "files", size,
               segname, t->points, t->points == 1 ? "point" : "points",
               dry ? "" : "; run \"cbfs gc\" to free the space of unused packs");
    }
out:
    for (size_t i = 0; i < wal.n; i++)
        free(wal.keys[i]);
    free(wal.keys);
    free(wal.sizes);
    if (points)
        cbfs_repo_free_backups(points, npoints);
    return rc;
}

int cmd_expire(int argc, char **argv)
{
    static const struct option opts[] = {
        {"keep-last", required_argument, NULL, 'L'},
        {"keep-within", required_argument, NULL, 'W'},
        {"keep-daily", required_argument, NULL, 'D'},
        {"keep-weekly", required_argument, NULL, 'K'},
        {"keep-monthly", required_argument, NULL, 'M'},
        {"dry-run", no_argument, NULL, 'n'},
        {"node", required_argument, NULL, CMD_OPT_NODE},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    CbfsRetention policy = {0};
    bool dry = false, locked = false, several;
    const char *node = NULL;
    CbfsRepo *repo = NULL;
    CbfsHolder lock;
    NodeExpire *nodes = NULL;
    size_t nn = 0, ncp = 0, cp_expired = 0;
    char **names = NULL;
    CbfsClusterPoint *cps = NULL;
    bool *cp_keep = NULL;
    Totals t = {0};
    time_t oldest_kept = 0;
    CbfsError err;
    int c, rc;

    cbfs_error_init(&err);
    while ((c = getopt_long(argc, argv, "nh", opts, NULL)) != -1) {
        switch (c) {
        case 'L':
            if ((rc = set_count("--keep-last", optarg, &policy.keep_last)))
                return rc;
            break;
        case 'W':
            if ((rc = set_within("--keep-within", optarg, &policy.keep_within)))
                return rc;
            break;
        case 'D':
            if ((rc = set_count("--keep-daily", optarg, &policy.keep_daily)))
                return rc;
            break;
        case 'K':
            if ((rc = set_count("--keep-weekly", optarg, &policy.keep_weekly)))
                return rc;
            break;
        case 'M':
            if ((rc = set_count("--keep-monthly", optarg, &policy.keep_monthly)))
                return rc;
            break;
        case 'n':
            dry = true;
            break;
        case CMD_OPT_NODE:
            node = optarg;
            break;
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return cmd_usage_error("expire", NULL);
        }
    }
    if (optind + 1 != argc)
        return cmd_usage_error("expire",
                               optind >= argc ? "no repository given" : "too many arguments");
    /* command line over configuration file, as a whole */
    if (cbfs_retention_empty(&policy) && (rc = policy_from_config(&policy)) != 0)
        return rc;
    if (cbfs_retention_empty(&policy))
        return cmd_usage_error("expire",
                               "no retention policy: give --keep-last, --keep-within, "
                               "--keep-daily, --keep-weekly or --keep-monthly, or set keep_last, "
                               "keep_within, ... in the configuration file");
    if ((rc = cmd_open_repo(argv[optind], false, &repo, NULL)) != 0)
        return rc;
    if (node) {
        if (cbfs_repo_select_node(repo, node, &err) < 0)
            goto fail;
        names = cbfs_xcalloc(1, sizeof(char *));
        names[nn++] = cbfs_xstrdup(cbfs_repo_node_name(repo));
    } else if (cbfs_repo_list_nodes(repo, &names, &nn, &err) < 0) {
        goto fail;
    }
    if (nn == 0) {
        names = cbfs_xrealloc(names, sizeof(char *));
        names[nn++] = cbfs_xstrdup(CBFS_NODE_DEFAULT);
    }
    several = nn > 1 || strcmp(names[0], CBFS_NODE_DEFAULT) != 0;

    /* the lock before the pins (pin.h) */
    if (!dry) {
        if (cbfs_lock_acquire(repo, "expire", &lock, &err) < 0)
            goto fail;
        locked = true;
    }
    cbfs_test_pause("expire-locked");
    nodes = cbfs_xcalloc(nn, sizeof(NodeExpire));
    for (size_t i = 0; i < nn; i++) {
        nodes[i].v = cbfs_repo_node_view(repo, names[i]);
        if (decide_node(&nodes[i], &policy, dry, &err) < 0)
            goto fail;
        for (size_t k = 0; k < nodes[i].nrecs; k++)
            if (nodes[i].items[k].keep && (!oldest_kept || nodes[i].items[k].time < oldest_kept))
                oldest_kept = nodes[i].items[k].time;
    }
    /* cluster points no older than the oldest backup the policy keeps on any
     * node stay, and with them what each node needs to reach them */
    if (cbfs_cluster_point_list(repo, &cps, &ncp, &err) < 0)
        goto fail;
    cp_keep = cbfs_xcalloc(ncp ? ncp : 1, sizeof(bool));
    for (size_t i = 0; i < ncp; i++) {
        time_t when = 0;
        /* with --node, the other nodes' policy is not known: every cluster
         * point is kept, and what this node needs for it */
        cp_keep[i] = node || cbfs_parse_time(cps[i].time, &when, NULL) < 0 || when >= oldest_kept;
        for (size_t k = 0; k < nn && cp_keep[i]; k++) {
            const CbfsPointNode *pn = cbfs_cluster_point_node(&cps[i], names[k]);
            if (pn)
                keep_for_point(&nodes[k], pn->lsn);
        }
    }
    if (!several && nodes[0].nrecs == 0) {
        printf("repository %s has no backups: nothing to expire\n", repo->display);
        rc = 0;
        goto out;
    }
    for (size_t i = 0; i < nn; i++)
        if ((rc = expire_node(&nodes[i], dry, several, &t, &err)) < 0)
            goto fail;
    for (size_t i = 0; i < ncp && !node; i++) {
        if (cp_keep[i]) {
            printf("keep    cluster restore point %s\n", cps[i].name);
            continue;
        }
        printf("expire  cluster restore point %s\n", cps[i].name);
        cp_expired++;
        if (!dry && cbfs_cluster_point_remove(repo, cps[i].name, &err) < 0)
            goto fail;
    }
    if (several) {
        char size[32];
        cbfs_format_size(t.wal_bytes, size, sizeof(size));
        printf("%s %zu of %zu %s on %zu %s, %zu WAL %s (%s), %zu restore %s and %zu cluster "
               "restore %s%s\n",
               dry ? "would expire" : "expired", t.expired, t.backups,
               t.backups == 1 ? "backup" : "backups", nn, nn == 1 ? "node" : "nodes", t.wal,
               t.wal == 1 ? "file" : "files", size, t.points, t.points == 1 ? "point" : "points",
               cp_expired, cp_expired == 1 ? "point" : "points",
               dry ? "" : "; run \"cbfs gc\" to free the space of unused packs");
    }
    rc = 0;
    goto out;
fail:
    rc = cmd_fail(&err);
out:
    if (locked)
        cbfs_lock_release(repo, &lock);
    for (size_t i = 0; nodes && i < nn; i++)
        release_node(&nodes[i]);
    free(nodes);
    for (size_t i = 0; i < ncp; i++)
        cbfs_cluster_point_release(&cps[i]);
    free(cps);
    free(cp_keep);
    cbfs_store_free_names(names, nn);
    cbfs_repo_free(repo);
    return rc;
}
