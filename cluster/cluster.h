/*
 * cluster.h - what spans the nodes of a repository (docs/design.md §8):
 * Citus cluster restore points, and mounting, restoring and verifying a
 * whole cluster at one.
 */
#ifndef CBFS_CLUSTER_H
#define CBFS_CLUSTER_H

#include "cbfs/clusterpoint.h"
#include "cbfs/error.h"
#include "cbfs/repo.h"
#include "cluster_run.h"
#include "pgsession.h"

/* `cbfs restore-point` on a Citus coordinator (coord, connected with
 * conninfo) of a repository holding nodes: the point on every node, found
 * in each node's archived WAL (waiting up to wait_s seconds for it), each
 * node's own point, then the cluster point (citus_point.c).  Prints what
 * it made.  Nothing is written unless all of it can be. */
int cluster_point_create(CbfsRepo *repo, PgSession *coord, const char *conninfo, const char *name,
                         long wait_s, CbfsError *err);

/* What to mount (cluster_mount_nodes). */
typedef struct ClusterMountSpec {
    const char *source;  /* REPO@POINT */
    const char *dir;     /* DIR: each node on DIR/NODE */
    const char *overlay; /* each node's overlay in OVERLAY/NODE, or NULL: temporary ones */
    const char *opts;    /* more -o options for every node, or NULL */
    bool start;          /* then cluster_start */
    bool quiet;          /* print nothing (not even the coordinator line) */
} ClusterMountSpec;

/* Mount every node of c (filled by cluster_resolve, with its user and, to
 * start, its bindir) on DIR/NODE, and start the cluster when asked.  On
 * failure nothing stays mounted or running. */
int cluster_mount_nodes(const ClusterMountSpec *s, Cluster *c, CbfsError *err);
/* Stop c's servers, unmount its nodes, remove DIR/.cbfs and the empty
 * DIR/NODE folders. */
void cluster_teardown(Cluster *c);

/* `cbfs mount REPO@POINT DIR --cluster ...` (cluster_mount.c). */
int cmd_cluster_mount(int argc, char **argv);
/* `cbfs restore REPO@POINT DIR --cluster ...` (cluster_restore.c). */
int cmd_cluster_restore(int argc, char **argv);
/* `cbfs verify REPO@POINT --cluster ...` (cluster_verify.c). */
int cmd_cluster_verify(int argc, char **argv);
/* `cbfs umount DIR`: a cluster mounted on DIR, else cmd_umount. */
int cmd_umount_any(int argc, char **argv);

/* The cluster restore point named point, with every node of it checked:
 * in the repository, with a backup before the point and the WAL from that
 * backup to the point (errors name the node).  Fills cp, and c's point and
 * nodes (name, group; the coordinator's index); *ret_pg_major gets the
 * PostgreSQL major version of the backups.  Refuses a repository of fewer
 * than two nodes and a point that is not a cluster point. */
int cluster_resolve(CbfsRepo *repo, const char *point, CbfsClusterPoint *cp, Cluster *c,
                    int *ret_pg_major, CbfsError *err);

#endif
