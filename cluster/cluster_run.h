/*
 * cluster_run.h - a Citus cluster brought back from a cluster restore
 * point: its nodes' data directories (mounts or restored copies) side by
 * side under DIR, and the servers cbfs starts on them (docs/design.md §8).
 *
 * DIR/.cbfs (the run directory, owned by the user the servers run as, mode
 * 0700) holds the servers' sockets and logs, the settings file every node
 * starts with, and the state file "cluster" that `cbfs umount DIR` reads:
 * which nodes are mounted where, which servers run with which pid.
 *
 * Starting (cluster_start), in this order, so that no restored node ever
 * connects to a node of the source cluster:
 *   1. every node starts with Citus's background work off (2PC recovery,
 *      distributed deadlock detection, deferred shard cleanup, background
 *      tasks: the settings file), recovers to the point and pauses there;
 *      deadlock detection would otherwise connect to the source's nodes
 *      even while paused in recovery;
 *   2. once all have paused, all resume and promote;
 *   3. each node's own pg_dist_node, in every database that has Citus, is
 *      rewritten to the restored nodes' sockets and ports (locally: Citus's
 *      citus_update_node would tell the source's nodes); nodes that are not
 *      part of the point get an address that leads nowhere;
 *   4. the background work is turned back on (ALTER SYSTEM RESET), and the
 *      coordinator resolves the prepared transactions left at the point
 *      (recover_prepared_transactions): every distributed transaction is
 *      then wholly there or wholly absent.
 */
#ifndef CBFS_CLUSTER_RUN_H
#define CBFS_CLUSTER_RUN_H

#include <stdbool.h>
#include <sys/types.h>

#include "cbfs/clusterpoint.h"
#include "cbfs/error.h"

typedef struct ClusterNode {
    char *name;    /* the repository node */
    char *datadir; /* DIR/NODE, or another directory (restore --node-dir) */
    bool mounted;  /* a mount cbfs made (umount unmounts it) */
    int group;     /* Citus group: 0 is the coordinator */
    int port;      /* 0 until started */
    pid_t pid;     /* the postmaster, 0 when not started */
} ClusterNode;

typedef struct Cluster {
    char *dir;   /* DIR */
    char *run;   /* DIR/.cbfs */
    char *repo;  /* the repository location, for messages */
    char *point; /* the cluster restore point */
    char *user;  /* OS user the servers run as */
    uid_t uid;
    gid_t gid;
    char *db_user; /* superuser role cbfs connects as */
    char *bindir;  /* PostgreSQL's bin directory */
    ClusterNode *nodes;
    size_t n;
    size_t coordinator; /* index into nodes */
} Cluster;

/* The settings every node starts with (written to DIR/.cbfs/settings.conf
 * by cluster_prepare_run, given to mount -o settings= and restore
 * --settings). */
#define CLUSTER_SETTINGS_FILE "settings.conf"

/* Make DIR/.cbfs for c (its owner c->uid, mode 0700) with the settings
 * file.  *ret_settings: its path (caller frees). */
int cluster_prepare_run(Cluster *c, char **ret_settings, CbfsError *err);
/* Write DIR/.cbfs/cluster (atomically). */
int cluster_save(const Cluster *c, CbfsError *err);
/* Read DIR/.cbfs/cluster into ret: -ENOENT (no error set) when DIR holds
 * no cluster cbfs brought back (or cannot be read: a dead mount). */
int cluster_load(const char *dir, Cluster *ret, CbfsError *err);
void cluster_release(Cluster *c);

/* Steps 1-4 above; prints (unless quiet) the coordinator's connection
 * string on a line of its own ("coordinator: host=... port=..."); the
 * servers run on after
 * the command ends.  On failure the servers it started are stopped and err
 * names the node. */
int cluster_start(Cluster *c, bool quiet, CbfsError *err);
/* Stop every server cbfs started on c (fast, then immediate, then
 * SIGKILL), in any state, also when its data directory is a dead mount. */
void cluster_stop(Cluster *c);

#endif
