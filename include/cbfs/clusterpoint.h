/*
 * clusterpoint.h - cluster restore points: one named point at which every
 * node of a Citus cluster agrees (docs/design.md §8).
 *
 * `cbfs restore-point` on a Citus coordinator writes the point into every
 * node's WAL at once (citus_create_restore_point blocks distributed commits
 * meanwhile), finds each node's record of it in that node's archived WAL,
 * stores each node's own restore point (points/<name>, so that one node can
 * be restored to it alone), and then, last, the object
 * cluster-points/<name> (shared, created once): the point exists once it
 * does.
 *
 * Format (kv text): name, time (ISO 8601, UTC), coordinator (the node
 * name), nodes (the count), then for each node i from 0: node<i>_name,
 * node<i>_lsn (of the restore point record in its WAL), node<i>_timeline,
 * node<i>_system_identifier, node<i>_group (Citus group id; 0 is the
 * coordinator's), node<i>_host, node<i>_port (where the source node
 * listened); and pg_dist_node: the coordinator's pg_dist_node at the point,
 * one row a line, tab-separated (nodeid groupid nodename nodeport noderole
 * isactive hasmetadata metadatasynced shouldhaveshards).
 */
#ifndef CBFS_CLUSTERPOINT_H
#define CBFS_CLUSTERPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "cbfs/repo.h"

typedef struct CbfsPointNode {
    char *node; /* the repository node */
    uint64_t lsn;
    uint32_t timeline;
    uint64_t system_identifier;
    int group;  /* Citus group id */
    char *host; /* the source node's address in pg_dist_node */
    int port;
} CbfsPointNode;

typedef struct CbfsClusterPoint {
    char *name;
    char *time;
    char *coordinator; /* node name */
    CbfsPointNode *nodes;
    size_t n;
    char *dist_node; /* pg_dist_node rows, tab-separated, one a line */
} CbfsClusterPoint;

/* Store p as cluster-points/<name>: -EEXIST (err set) if the name is taken. */
int cbfs_cluster_point_store(CbfsRepo *r, const CbfsClusterPoint *p, CbfsError *err);
/* -ENOENT (no error set) if there is none of that name; a damaged object
 * is CBFS_EXIT_CORRUPT naming it. */
int cbfs_cluster_point_read(CbfsRepo *r, const char *name, CbfsClusterPoint *ret, CbfsError *err);
/* Every cluster point, oldest first (by time, then name).  Release each
 * with cbfs_cluster_point_release and free the array. */
int cbfs_cluster_point_list(CbfsRepo *r, CbfsClusterPoint **ret, size_t *ret_n, CbfsError *err);
/* Remove one (expire). */
int cbfs_cluster_point_remove(CbfsRepo *r, const char *name, CbfsError *err);
void cbfs_cluster_point_release(CbfsClusterPoint *p);
/* The entry of node in p, or NULL. */
const CbfsPointNode *cbfs_cluster_point_node(const CbfsClusterPoint *p, const char *node);

#endif
