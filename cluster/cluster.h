/*
 * cluster.h - what spans the nodes of a repository (docs/design.md §8):
 * Citus cluster restore points, and mounting, restoring and verifying a
 * whole cluster at one.
 */
#ifndef CBFS_CLUSTER_H
#define CBFS_CLUSTER_H

#include "cbfs/error.h"
#include "cbfs/repo.h"
#include "pgsession.h"

/* `cbfs restore-point` on a Citus coordinator (coord, connected with
 * conninfo) of a repository holding nodes: the point on every node, found
 * in each node's archived WAL (waiting up to wait_s seconds for it), each
 * node's own point, then the cluster point (citus_point.c).  Prints what
 * it made.  Nothing is written unless all of it can be. */
int cluster_point_create(CbfsRepo *repo, PgSession *coord, const char *conninfo, const char *name,
                         long wait_s, CbfsError *err);

#endif
