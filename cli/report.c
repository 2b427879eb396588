/*
 * report.c - `cbfs list` and `cbfs info`: what the repository holds.
 * Both read only backup records (never manifests), so they stay fast.
 *
 * A repository that holds only the default node is shown as it always was.
 * One that holds named nodes (docs/design.md §8) is shown node by node,
 * then its cluster restore points; --node shows one node.  In JSON every
 * backup and restore point carries its "node".
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cbfs/clusterpoint.h"
#include "cbfs/json.h"
#include "cbfs/lock.h"
#include "cbfs/pin.h"
#include "cbfs/point.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "commands.h"

/* The fields shown, in order; numeric ones are emitted as JSON numbers. */
static const struct {
    const char *key;
    bool number;
} fields[] = {
    {"label", false},        {"start_time", false},        {"stop_time", false},
    {"start_lsn", false},    {"stop_lsn", false},          {"timeline", true},
    {"pg_version", true},    {"system_identifier", false}, {"file_count", true},
    {"logical_size", true},  {"stored_size", true},        {"bad_pages", true},
    {"wal_start", false},    {"wal_stop", false},          {"block_size", true},
    {"cbfs_version", false}, {"backup_from", false},
};

/* A record's value of field key; backups older than the field were all
 * taken from primaries. */
static const char *field_value(const CbfsKv *rec, const char *key)
{
    const char *v = cbfs_kv_get(rec, key);
    if (!v && strcmp(key, "backup_from") == 0)
        return "primary";
    return v;
}

/* What keeps a backup beyond the policy: a pin, a live mount (or copy). */
typedef struct Marks {
    bool pinned;
    unsigned mounted; /* live registrations (lock.h) */
} Marks;

static void json_record(CbfsJson *j, const CbfsKv *rec, const char *node, const Marks *mk)
{
    cbfs_json_begin_object(j);
    for (size_t i = 0; i < CBFS_ARRAY_LEN(fields); i++) {
        const char *v = field_value(rec, fields[i].key);
        uint64_t n;
        cbfs_json_key(j, fields[i].key);
        if (fields[i].number && cbfs_kv_get_u64(rec, fields[i].key, &n) == 0)
            cbfs_json_uint(j, n);
        else
            cbfs_json_string(j, v);
    }
    cbfs_json_key(j, "node");
    cbfs_json_string(j, node);
    if (mk) {
        cbfs_json_key(j, "pinned");
        cbfs_json_bool(j, mk->pinned);
        cbfs_json_key(j, "mounted");
        cbfs_json_bool(j, mk->mounted > 0);
    }
    cbfs_json_end_object(j);
}

static void json_point(CbfsJson *j, const CbfsKv *pt, const char *node)
{
    static const char *const keys[] = {"name", "lsn", "time", "timeline"};
    cbfs_json_begin_object(j);
    for (size_t k = 0; k < CBFS_ARRAY_LEN(keys); k++) {
        uint64_t tli = 0;
        cbfs_json_key(j, keys[k]);
        if (k == 3 && cbfs_kv_get_u64(pt, "timeline", &tli) == 0)
            cbfs_json_uint(j, tli);
        else
            cbfs_json_string(j, cbfs_kv_get(pt, keys[k]));
    }
    cbfs_json_key(j, "node");
    cbfs_json_string(j, node);
    cbfs_json_end_object(j);
}

static void json_cluster_point(CbfsJson *j, const CbfsClusterPoint *p)
{
    char lsn[32];
    cbfs_json_begin_object(j);
    cbfs_json_key(j, "name");
    cbfs_json_string(j, p->name);
    cbfs_json_key(j, "time");
    cbfs_json_string(j, p->time);
    cbfs_json_key(j, "coordinator");
    cbfs_json_string(j, p->coordinator);
    cbfs_json_key(j, "nodes");
    cbfs_json_begin_array(j);
    for (size_t i = 0; i < p->n; i++) {
        const CbfsPointNode *nd = &p->nodes[i];
        cbfs_json_begin_object(j);
        cbfs_json_key(j, "node");
        cbfs_json_string(j, nd->node);
        cbfs_json_key(j, "group");
        cbfs_json_int(j, nd->group);
        cbfs_json_key(j, "lsn");
        cbfs_lsn_format(nd->lsn, lsn, sizeof(lsn));
        cbfs_json_string(j, lsn);
        cbfs_json_key(j, "timeline");
        cbfs_json_uint(j, nd->timeline);
        cbfs_json_key(j, "system_identifier");
        snprintf(lsn, sizeof(lsn), "%llu", (unsigned long long) nd->system_identifier);
        cbfs_json_string(j, lsn);
        cbfs_json_key(j, "host");
        cbfs_json_string(j, nd->host);
        cbfs_json_key(j, "port");
        cbfs_json_int(j, nd->port);
        cbfs_json_end_object(j);
    }
    cbfs_json_end_array(j);
    cbfs_json_end_object(j);
}

typedef struct Options {
    bool json, points, cluster_points;
    const char *node;
} Options;

static int parse_options(int argc, char **argv, const char *cmd, const char *help, Options *o,
                         bool list)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'J'},
        {"points", no_argument, NULL, 'P'},
        {"cluster-points", no_argument, NULL, 'C'},
        {"node", required_argument, NULL, CMD_OPT_NODE},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    memset(o, 0, sizeof(*o));
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'J') {
            o->json = true;
        } else if (c == 'P' && list) {
            o->points = true;
        } else if (c == 'C' && list) {
            o->cluster_points = true;
        } else if (c == CMD_OPT_NODE) {
            o->node = optarg;
        } else if (c == CMD_OPT_PASSPHRASE_FILE) {
            cbfs_passphrase_set_file(optarg);
        } else if (c == 'h') {
            fputs(help, stdout);
            return -1;
        } else {
            return cmd_usage_error(cmd, NULL);
        }
    }
    if (optind + 1 != argc)
        return cmd_usage_error(cmd, optind >= argc ? "no repository given" : "too many arguments");
    return 0;
}

/* ---------------------------------------------------------------- list */

/* One node's backups and restore points: read, then shown. */
typedef struct NodeList {
    CbfsRepo *view;
    CbfsKv **backups, **points;
    size_t nbackups, npoints;
    Marks *marks; /* one per backup */
} NodeList;

static void print_backups(const NodeList *nl)
{
    printf("%-24s %-20s %-13s %-13s %3s %9s %10s %10s %4s  %s\n", "label", "stop time", "start lsn",
           "stop lsn", "tli", "files", "size", "stored", "bad", "kept");
    for (size_t i = 0; i < nl->nbackups; i++) {
        const CbfsKv *b = nl->backups[i];
        uint64_t files = 0, size = 0, stored = 0, bad = 0;
        char s1[32], s2[32];
        cbfs_kv_get_u64(b, "file_count", &files);
        cbfs_kv_get_u64(b, "logical_size", &size);
        cbfs_kv_get_u64(b, "stored_size", &stored);
        cbfs_kv_get_u64(b, "bad_pages", &bad);
        cbfs_format_size(size, s1, sizeof(s1));
        cbfs_format_size(stored, s2, sizeof(s2));
        const Marks *mk = &nl->marks[i];
        printf("%-24s %-20s %-13s %-13s %3s %9llu %10s %10s %4llu  %s%s%s\n",
               cbfs_kv_get(b, "label"), cbfs_kv_get(b, "stop_time"), cbfs_kv_get(b, "start_lsn"),
               cbfs_kv_get(b, "stop_lsn"), cbfs_kv_get(b, "timeline"), (unsigned long long) files,
               s1, s2, (unsigned long long) bad, mk->pinned ? "pinned" : "",
               mk->pinned && mk->mounted ? "," : "", mk->mounted ? "mounted" : "");
    }
    if (nl->npoints > 0) {
        printf("\n%-24s %-20s %-13s %3s\n", "restore point", "time", "lsn", "tli");
        for (size_t i = 0; i < nl->npoints; i++)
            printf("%-24s %-20s %-13s %3s\n", cbfs_kv_get(nl->points[i], "name"),
                   cbfs_kv_get(nl->points[i], "time"), cbfs_kv_get(nl->points[i], "lsn"),
                   cbfs_kv_get(nl->points[i], "timeline"));
    }
}

static void print_cluster_points(const CbfsClusterPoint *cps, size_t n)
{
    printf("%-24s %-20s %s\n", "cluster restore point", "time", "nodes (lsn)");
    for (size_t i = 0; i < n; i++) {
        printf("%-24s %-20s", cps[i].name, cps[i].time);
        for (size_t k = 0; k < cps[i].n; k++) {
            char lsn[32];
            cbfs_lsn_format(cps[i].nodes[k].lsn, lsn, sizeof(lsn));
            printf("%s%s %s", k ? ", " : " ", cps[i].nodes[k].node, lsn);
        }
        printf("\n");
    }
}

static int read_node(CbfsRepo *view, NodeList *nl, CbfsError *err)
{
    char **pins = NULL;
    size_t npins = 0, nmounts = 0;
    CbfsHolder *mounts = NULL;
    time_t now = time(NULL);
    int rc;

    memset(nl, 0, sizeof(*nl));
    nl->view = view;
    if (cbfs_repo_list_backups(view, &nl->backups, &nl->nbackups, err) < 0)
        return -1;
    nl->marks = cbfs_xcalloc(nl->nbackups ? nl->nbackups : 1, sizeof(Marks));
    if (cbfs_pin_list(view, &pins, &npins, err) < 0 ||
        cbfs_mount_list(view, &mounts, &nmounts, err) < 0)
        return -1;
    for (size_t i = 0; i < nl->nbackups; i++) {
        const char *label = cbfs_kv_get(nl->backups[i], "label");
        nl->marks[i].pinned = label && cbfs_pin_in(pins, npins, label);
        /* as expire counts them: another host's until removed */
        for (size_t k = 0; label && k < nmounts; k++)
            if (strcmp(mounts[k].label, label) == 0 && cbfs_holder_alive(&mounts[k], 0, now))
                nl->marks[i].mounted++;
    }
    for (size_t i = 0; i < npins; i++)
        free(pins[i]);
    free(pins);
    free(mounts);
    rc = cbfs_point_list(view, &nl->points, &nl->npoints, err);
    return rc;
}

static void release_node(NodeList *nl)
{
    cbfs_repo_free_backups(nl->backups, nl->nbackups);
    cbfs_repo_free_backups(nl->points, nl->npoints);
    free(nl->marks);
}

int cmd_list(int argc, char **argv)
{
    Options o;
    CbfsRepo *repo;
    NodeList *nls = NULL;
    size_t nn = 0, ncp = 0;
    char **names = NULL;
    CbfsClusterPoint *cps = NULL;
    bool multi;
    CbfsError err;
    int rc = parse_options(
        argc, argv, "list",
        "Usage: cbfs list REPO [--json] [--points | --cluster-points] [--node NAME]\n"
        "                 [--passphrase-file FILE]\n\n"
        "List the backups and restore points in the repository, oldest first; in a\n"
        "repository of several nodes, node by node, then the cluster restore points.\n"
        "With --json: an array of backups (each with its \"node\"), or with --points of\n"
        "restore points, or with --cluster-points of cluster restore points\n"
        "({\"name\", \"time\", \"coordinator\", \"nodes\": [{\"node\", \"group\", \"lsn\",\n"
        "\"timeline\", \"system_identifier\", \"host\", \"port\"}]}).\n",
        &o, true);

    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if ((rc = cmd_open_repo(argv[optind], false, &repo, NULL)) != 0)
        return rc;
    cbfs_error_init(&err);
    if (o.node) {
        if (cbfs_repo_select_node(repo, o.node, &err) < 0)
            goto fail;
        names = cbfs_xcalloc(1, sizeof(char *));
        names[nn++] = cbfs_xstrdup(cbfs_repo_node_name(repo));
    } else if (cbfs_repo_list_nodes(repo, &names, &nn, &err) < 0 ||
               cbfs_cluster_point_list(repo, &cps, &ncp, &err) < 0) {
        goto fail;
    }
    /* the default node alone (or nothing yet): as it always was */
    multi = !o.node && (ncp > 0 || nn > 1 || (nn == 1 && strcmp(names[0], CBFS_NODE_DEFAULT)));
    if (nn == 0) {
        names = cbfs_xrealloc(names, sizeof(char *));
        names[nn++] = cbfs_xstrdup(CBFS_NODE_DEFAULT);
    }
    nls = cbfs_xcalloc(nn, sizeof(NodeList));
    for (size_t i = 0; i < nn; i++)
        if (read_node(cbfs_repo_node_view(repo, names[i]), &nls[i], &err) < 0) {
            nn = i + 1;
            goto fail;
        }
    if (o.json) {
        CbfsJson j;
        cbfs_json_init(&j);
        cbfs_json_begin_array(&j);
        if (o.cluster_points)
            for (size_t i = 0; i < ncp; i++)
                json_cluster_point(&j, &cps[i]);
        else
            for (size_t k = 0; k < nn; k++)
                for (size_t i = 0; i < (o.points ? nls[k].npoints : nls[k].nbackups); i++)
                    if (o.points)
                        json_point(&j, nls[k].points[i], names[k]);
                    else
                        json_record(&j, nls[k].backups[i], names[k], &nls[k].marks[i]);
        cbfs_json_end_array(&j);
        printf("%s\n", j.out.data);
        cbfs_json_release(&j);
    } else if (!multi) {
        print_backups(&nls[0]);
    } else {
        for (size_t k = 0; k < nn; k++) {
            uint64_t sysid;
            CbfsError e;
            cbfs_error_init(&e);
            if (cbfs_repo_cluster(nls[k].view, &sysid, &e) == 0)
                printf("%snode \"%s\" (database system %llu)\n", k ? "\n" : "", names[k],
                       (unsigned long long) sysid);
            else
                printf("%snode \"%s\"\n", k ? "\n" : "", names[k]);
            print_backups(&nls[k]);
        }
        if (ncp > 0) {
            printf("\n");
            print_cluster_points(cps, ncp);
        }
    }
    rc = 0;
    goto out;
fail:
    rc = cmd_fail(&err);
out:
    for (size_t i = 0; nls && i < nn; i++) {
        release_node(&nls[i]);
        cbfs_repo_free(nls[i].view);
    }
    free(nls);
    for (size_t i = 0; i < ncp; i++)
        cbfs_cluster_point_release(&cps[i]);
    free(cps);
    cbfs_store_free_names(names, nn);
    cbfs_repo_free(repo);
    return rc;
}

/* ---------------------------------------------------------------- info */

/* For each node of a cluster point: the backup a restore starts from, or
 * why there is none (no backup before the point, a WAL gap). */
static int info_cluster_point(CbfsRepo *repo, const CbfsClusterPoint *cp, bool json)
{
    CbfsJson j;
    bool all = true;
    char lsn[32];

    if (json) {
        cbfs_json_init(&j);
        cbfs_json_begin_object(&j);
        cbfs_json_key(&j, "name");
        cbfs_json_string(&j, cp->name);
        cbfs_json_key(&j, "time");
        cbfs_json_string(&j, cp->time);
        cbfs_json_key(&j, "coordinator");
        cbfs_json_string(&j, cp->coordinator);
        cbfs_json_key(&j, "nodes");
        cbfs_json_begin_array(&j);
    } else {
        printf("cluster restore point %s, created %s, coordinator %s\n", cp->name, cp->time,
               cp->coordinator);
        printf("  %-20s %5s %-13s %-24s %s\n", "node", "group", "lsn", "backup",
               "WAL to the point");
    }
    for (size_t i = 0; i < cp->n; i++) {
        const CbfsPointNode *nd = &cp->nodes[i];
        CbfsRepo *v = cbfs_repo_node_view(repo, nd->node);
        CbfsTarget t;
        CbfsError e;
        int rc;
        cbfs_error_init(&e);
        rc = cbfs_point_resolve(v, cp->name, &t, &e);
        all &= rc == 0;
        cbfs_lsn_format(nd->lsn, lsn, sizeof(lsn));
        if (json) {
            cbfs_json_begin_object(&j);
            cbfs_json_key(&j, "node");
            cbfs_json_string(&j, nd->node);
            cbfs_json_key(&j, "group");
            cbfs_json_int(&j, nd->group);
            cbfs_json_key(&j, "lsn");
            cbfs_json_string(&j, lsn);
            cbfs_json_key(&j, "timeline");
            cbfs_json_uint(&j, nd->timeline);
            cbfs_json_key(&j, "backup");
            cbfs_json_string(&j, rc == 0 ? t.label : NULL);
            cbfs_json_key(&j, "restorable");
            cbfs_json_bool(&j, rc == 0);
            cbfs_json_key(&j, "error");
            cbfs_json_string(&j, rc == 0 ? NULL : e.msg);
            cbfs_json_end_object(&j);
        } else {
            printf("  %-20s %5d %-13s %-24s %s\n", nd->node, nd->group, lsn,
                   rc == 0 ? t.label : "-", rc == 0 ? "reaches the point" : e.msg);
        }
        if (rc == 0)
            cbfs_target_release(&t);
        cbfs_repo_free(v);
    }
    if (json) {
        cbfs_json_end_array(&j);
        cbfs_json_key(&j, "restorable");
        cbfs_json_bool(&j, all);
        cbfs_json_end_object(&j);
        printf("%s\n", j.out.data);
        cbfs_json_release(&j);
    } else {
        printf("%s\n", all ? "restorable: every node has a backup before the point and its WAL"
                           : "NOT restorable (see above)");
    }
    return 0;
}

int cmd_info(int argc, char **argv)
{
    Options o;
    CbfsRepo *repo;
    CbfsKv *rec;
    char *point = NULL, *label = NULL;
    CbfsError err;
    CbfsClusterPoint cp;
    int rc =
        parse_options(argc, argv, "info",
                      "Usage: cbfs info REPO[@LABEL|@latest|@POINT] [--json] [--node NAME]\n"
                      "                 [--passphrase-file FILE]\n\n"
                      "Show one backup (the newest by default).  For a cluster restore point:\n"
                      "for every node, the backup a restore starts from and whether its WAL\n"
                      "reaches the point.\n",
                      &o, false);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if ((rc = cmd_open_repo(argv[optind], true, &repo, &point)) != 0)
        return rc;
    cbfs_error_init(&err);
    if (!o.node && point) {
        rc = cbfs_cluster_point_read(repo, point, &cp, &err);
        if (rc == 0) {
            rc = info_cluster_point(repo, &cp, o.json);
            cbfs_cluster_point_release(&cp);
            goto out;
        }
        if (rc != -ENOENT) {
            rc = cmd_fail(&err);
            goto out;
        }
    }
    if (cbfs_repo_select_node(repo, o.node, &err) < 0 ||
        cbfs_repo_resolve(repo, point, &label, &err) < 0 ||
        cbfs_repo_read_backup(repo, label, &rec, &err) < 0) {
        rc = cmd_fail(&err);
        goto out;
    }
    if (o.json) {
        CbfsJson j;
        cbfs_json_init(&j);
        json_record(&j, rec, cbfs_repo_node_name(repo), NULL);
        printf("%s\n", j.out.data);
        cbfs_json_release(&j);
    } else {
        for (size_t i = 0; i < CBFS_ARRAY_LEN(fields); i++) {
            const char *v = field_value(rec, fields[i].key);
            printf("%-18s %s\n", fields[i].key, v ? v : "");
        }
        if (repo->node)
            printf("%-18s %s\n", "node", repo->node);
    }
    cbfs_kv_free(rec);
    rc = 0;
out:
    free(point);
    free(label);
    cbfs_repo_free(repo);
    return rc;
}
