/*
 * restorepoint.c - `cbfs restore-point REPO NAME`: a named point in the WAL
 * that mount and restore can recover to (DESIGN §8).
 *
 * On a Citus coordinator citus_create_restore_point() marks the point on
 * every node at once; elsewhere pg_create_restore_point().  The WAL is then
 * switched so the segment holding the point is archived, and the point is
 * recorded only once that segment is in the repository: a recorded point
 * is always reachable.
 *
 * On a Citus coordinator of a repository that holds named nodes, without
 * --node, the point is a cluster point (cluster/citus_point.c): recorded
 * for every node.  With --node it is recorded for that node only.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cbfs/clusterpoint.h"
#include "cbfs/point.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "cbfs/walarchive.h"
#include "cluster.h"
#include "commands.h"
#include "pgsession.h"

int cmd_restore_point(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dbname", required_argument, NULL, 'd'},
        {"wait", required_argument, NULL, 'w'},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"node", required_argument, NULL, CMD_OPT_NODE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *conninfo = NULL, *name, *node = NULL;
    bool named_nodes = false;
    long wait_s = 60;
    CbfsLocation loc;
    CbfsRepo *repo = NULL;
    PgSession *pg = NULL;
    CbfsError err;
    CbfsKv *kv = NULL;
    char *citus = NULL, *lsn_s = NULL, *seg = NULL;
    uint64_t owner, lsn;
    uint32_t tli;
    time_t now, t;
    int c, rc;

    cbfs_error_init(&err);
    while ((c = getopt_long(argc, argv, "d:w:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            conninfo = optarg;
            break;
        case 'w':
            if (cbfs_parse_int(optarg, 1, 86400, &wait_s) < 0)
                return cmd_usage_error("restore-point", "invalid value for --wait: \"%s\"", optarg);
            break;
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case CMD_OPT_NODE:
            node = optarg;
            break;
        case 'h':
            printf("Usage: cbfs restore-point REPO NAME [--dbname CONNINFO] [--wait SECONDS]\n"
                   "                          [--node NAME] [--passphrase-file FILE]\n"
                   "\n"
                   "Create the restore point NAME (citus_create_restore_point on a Citus\n"
                   "coordinator, else pg_create_restore_point), switch WAL, wait until the\n"
                   "WAL holding it is in the repository (--wait, default 60 s), and record\n"
                   "it, so that REPO@NAME can be mounted or restored.\n"
                   "\n"
                   "On a Citus coordinator of a repository that holds its nodes (each backed\n"
                   "up and archiving with --node), the point is a cluster point: cbfs reads\n"
                   "pg_dist_node, connects to every node, switches WAL on each, waits for\n"
                   "every node's WAL and records the point for all of them, so that\n"
                   "REPO@NAME mounts, restores and verifies as a whole cluster (--cluster).\n"
                   "--node NAME records a point of that node alone.\n");
            return 0;
        default:
            return cmd_usage_error("restore-point", NULL);
        }
    }
    if (optind + 2 != argc)
        return cmd_usage_error("restore-point",
                               optind + 2 > argc ? "missing arguments" : "too many arguments");
    name = argv[optind + 1];
    if (!cbfs_label_valid(name) || cbfs_parse_time(name, &t, NULL) == 0)
        return cmd_usage_error("restore-point",
                               "invalid restore point name \"%s\" (letters, digits, \".\", \"_\" "
                               "and \"-\"; not \"latest\")",
                               name);
    if (cbfs_location_parse(argv[optind], false, &loc, &err) < 0)
        return cmd_fail(&err);
    rc = cbfs_repo_open(&loc, &repo, &err);
    cbfs_location_release(&loc);
    if (rc < 0)
        return cmd_fail(&err);
    /* a wrong passphrase is found before the server is touched */
    if ((rc = cbfs_repo_unlock(repo, &err)) < 0)
        goto fail;
    if (node) {
        if ((rc = cbfs_repo_set_node(repo, node, &err)) < 0)
            goto fail;
    } else {
        char **names;
        size_t nn;
        if ((rc = cbfs_repo_list_nodes(repo, &names, &nn, &err)) < 0)
            goto fail;
        for (size_t i = 0; i < nn; i++)
            named_nodes |= strcmp(names[i], CBFS_NODE_DEFAULT) != 0;
        cbfs_store_free_names(names, nn);
    }
    if (named_nodes) {
        /* a cluster point, or this server's point when it is no coordinator */
        if (pg_session_connect(conninfo, &pg, &err) < 0 ||
            pg_session_value(pg, "SELECT count(*)::text FROM pg_extension WHERE extname = 'citus'",
                             NULL, "look for the citus extension", &citus, &err) < 0)
            goto fail;
        if (strcmp(citus, "0") != 0) {
            if (cluster_point_create(repo, pg, conninfo, name, wait_s, &err) < 0)
                goto fail;
            rc = 0;
            goto out;
        }
        cbfs_error_set(&err, EINVAL, CBFS_EXIT_USAGE,
                       "repository \"%s\" holds several nodes and the server is no Citus "
                       "coordinator: give the node with --node",
                       repo->display);
        goto fail;
    }

    /* names are unique among points and backups: refuse before touching the server */
    if ((rc = cbfs_point_read(repo, name, &kv, &err)) == 0) {
        cbfs_error_set(&err, EEXIST, CBFS_EXIT_CONFLICT,
                       "restore point \"%s\" already exists in repository \"%s\"", name,
                       repo->display);
        goto fail;
    } else if (rc != -ENOENT) {
        goto fail;
    }
    if ((rc = cbfs_repo_read_backup(repo, name, &kv, &err)) == 0) {
        cbfs_error_set(&err, EEXIST, CBFS_EXIT_CONFLICT,
                       "\"%s\" is already the label of a backup in repository \"%s\"", name,
                       repo->display);
        goto fail;
    } else if (rc != -ENOENT) {
        goto fail;
    }
    cbfs_error_init(&err);

    if (pg_session_connect(conninfo, &pg, &err) < 0)
        goto fail;
    if (pg->in_recovery) {
        cbfs_error_set(&err, EINVAL, CBFS_EXIT_DATABASE,
                       "cannot create a restore point: the server is a standby");
        goto fail;
    }
    if (cbfs_repo_claim(repo, pg->system_identifier, &owner, &err) < 0)
        goto fail;
    if (owner != pg->system_identifier) {
        char what[CBFS_ERROR_MSG_MAX / 2];
        cbfs_error_set(&err, EINVAL, CBFS_EXIT_DATABASE,
                       "%s belongs to database system %llu, not %llu",
                       cbfs_repo_what(repo, what, sizeof(what)), (unsigned long long) owner,
                       (unsigned long long) pg->system_identifier);
        goto fail;
    }
    if (pg_session_value(pg, "SELECT count(*)::text FROM pg_extension WHERE extname = 'citus'",
                         NULL, "look for the citus extension", &citus, &err) < 0)
        goto fail;
    if (pg_session_value(pg,
                         strcmp(citus, "0") != 0 ? "SELECT citus_create_restore_point($1)::text"
                                                 : "SELECT pg_create_restore_point($1)::text",
                         name, "create the restore point", &lsn_s, &err) < 0 ||
        cbfs_lsn_parse(lsn_s, &lsn) < 0)
        goto fail;
    now = time(NULL);
    /* the segment holding the point's record, then complete it */
    if (pg_session_value(pg, "SELECT pg_walfile_name($1::pg_lsn)", lsn_s,
                         "find the restore point's WAL file", &seg, &err) < 0)
        goto fail;
    {
        char *sw = NULL;
        if (pg_session_value(pg, "SELECT pg_switch_wal()::text", NULL, "switch WAL", &sw, &err) < 0)
            goto fail;
        free(sw);
    }
    if (cbfs_wal_classify(seg, &tli) != CBFS_WAL_SEGMENT) {
        cbfs_error_set(&err, EINVAL, CBFS_EXIT_DATABASE,
                       "server returned an invalid WAL file name");
        goto fail;
    }
    for (long i = 0;; i++) {
        rc = cbfs_wal_exists(repo, seg, &err);
        if (rc == 0)
            break;
        if (rc != -ENOENT)
            goto fail;
        if (i >= wait_s * 10) {
            cbfs_error_set(&err, ETIMEDOUT, CBFS_EXIT_ERROR,
                           "restore point \"%s\" was created at %s, but WAL file \"%s\" did not "
                           "reach repository \"%s\" within %ld s (is archive_command cbfs "
                           "wal-push?)",
                           name, lsn_s, seg, repo->display, wait_s);
            goto fail;
        }
        usleep(100000);
    }
    if (cbfs_point_create(repo, name, lsn, now, tli, pg->system_identifier, &err) < 0)
        goto fail;
    printf("restore point %s created at %s (timeline %u, WAL file %s)%s\n", name, lsn_s, tli, seg,
           strcmp(citus, "0") != 0 ? " on every Citus node" : "");
    rc = 0;
    goto out;
fail:
    rc = cmd_fail(&err);
out:
    cbfs_kv_free(kv);
    free(citus);
    free(lsn_s);
    free(seg);
    pg_session_free(pg);
    cbfs_repo_free(repo);
    return rc;
}
