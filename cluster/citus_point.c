/*
 * citus_point.c - a cluster restore point, made on a Citus coordinator
 * whose nodes all back up and archive into one repository
 * (clusterpoint.h, docs/design.md §8).
 *
 * Order, so that nothing is written unless the whole point can be:
 *   1. read pg_dist_node (the active primaries and the coordinator) and
 *      connect to every node; match each, by system identifier, to a node
 *      of the repository; refuse a group with none, a name already taken;
 *   2. note each node's WAL insert position, then citus_create_restore_point
 *      (Citus writes the record on every node while it blocks distributed
 *      commits), then pg_switch_wal() on every node;
 *   3. wait until every node's segments from the noted position to the
 *      switch are in the repository, read them back and find the point's
 *      record in each: its LSN on that node;
 *   4. store each node's own restore point, then the cluster point.
 */
#include <errno.h>
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
#include "pgsession.h"

typedef struct Member {
    int group, nodeid;
    char *host;
    int port;
    PgSession *pg; /* the coordinator's is the caller's */
    bool own;      /* pg is ours to close */
    CbfsRepo *view;
    uint64_t before, switched, lsn; /* lsn: the end of the point's record */
    uint32_t tli;
    char **segs;
    size_t nsegs;
} Member;

typedef struct Point {
    CbfsRepo *repo;
    const char *name;
    Member *m;
    size_t n;
    char *dist_node;
} Point;

static void release(Point *p)
{
    for (size_t i = 0; i < p->n; i++) {
        Member *m = &p->m[i];
        free(m->host);
        if (m->own)
            pg_session_free(m->pg);
        cbfs_repo_free(m->view);
        for (size_t k = 0; k < m->nsegs; k++)
            free(m->segs[k]);
        free(m->segs);
    }
    free(p->m);
    free(p->dist_node);
}

static const char *where(const Member *m, char *buf, size_t size)
{
    snprintf(buf, size, "%s:%d", m->host && *m->host ? m->host : "?", m->port);
    return buf;
}

/* pg_dist_node: one member per group (the active primary), the coordinator
 * (group 0) first even when pg_dist_node does not list it. */
static int read_members(Point *p, PgSession *coord, const char *conninfo, CbfsError *err)
{
    PgRows rows;
    CbfsBuf text;
    int rc = pg_session_rows(coord,
                             "SELECT nodeid, groupid, nodename, nodeport, noderole, isactive,"
                             " hasmetadata, metadatasynced, shouldhaveshards FROM pg_dist_node"
                             " ORDER BY groupid, nodeid",
                             NULL, "read pg_dist_node", &rows, err);
    if (rc < 0)
        return rc;
    cbfs_buf_init(&text);
    p->m = cbfs_xcalloc(rows.nrows + 1, sizeof(Member));
    p->m[0] = (Member){.group = 0, .pg = coord, .host = cbfs_xstrdup("")};
    p->n = 1;
    for (size_t r = 0; r < rows.nrows; r++) {
        int group = atoi(pg_rows_get(&rows, r, 1));
        bool primary = strcmp(pg_rows_get(&rows, r, 4), "primary") == 0 &&
                       strcmp(pg_rows_get(&rows, r, 5), "t") == 0;
        for (size_t c = 0; c < rows.ncols; c++)
            cbfs_buf_printf(&text, "%s%s", c ? "\t" : "",
                            pg_rows_get(&rows, r, c) ? pg_rows_get(&rows, r, c) : "");
        cbfs_buf_printf(&text, "\n");
        if (!primary)
            continue;
        if (group == 0) { /* the coordinator's address as the cluster knows it */
            free(p->m[0].host);
            p->m[0].host = cbfs_xstrdup(pg_rows_get(&rows, r, 2));
            p->m[0].port = atoi(pg_rows_get(&rows, r, 3));
            p->m[0].nodeid = atoi(pg_rows_get(&rows, r, 0));
            continue;
        }
        p->m[p->n++] = (Member){.group = group,
                                .nodeid = atoi(pg_rows_get(&rows, r, 0)),
                                .host = cbfs_xstrdup(pg_rows_get(&rows, r, 2)),
                                .port = atoi(pg_rows_get(&rows, r, 3))};
    }
    pg_rows_release(&rows);
    p->dist_node = text.data ? text.data : cbfs_xstrdup("");
    for (size_t i = 1; i < p->n; i++) {
        Member *m = &p->m[i];
        char at[300];
        rc = pg_session_connect_at(conninfo, m->host, m->port, &m->pg, err);
        if (rc < 0) {
            char why[CBFS_ERROR_MSG_MAX];
            snprintf(why, sizeof(why), "%s", err->msg);
            return cbfs_error_set(err, ECONNREFUSED, CBFS_EXIT_DATABASE,
                                  "could not connect to Citus worker group %d at %s: %s", m->group,
                                  where(m, at, sizeof(at)), why);
        }
        m->own = true;
    }
    return 0;
}

/* Each member's node in the repository, by system identifier. */
static int match_nodes(Point *p, CbfsError *err)
{
    char **names;
    size_t nn;
    uint64_t *ids;
    int rc = cbfs_repo_list_nodes(p->repo, &names, &nn, err);

    if (rc < 0)
        return rc;
    ids = cbfs_xcalloc(nn ? nn : 1, sizeof(uint64_t));
    for (size_t i = 0; i < nn && rc == 0; i++) {
        CbfsRepo *v = cbfs_repo_node_view(p->repo, names[i]);
        rc = cbfs_repo_cluster(v, &ids[i], err);
        cbfs_repo_free(v);
    }
    for (size_t i = 0; i < p->n && rc == 0; i++) {
        Member *m = &p->m[i];
        size_t k;
        char at[300];
        for (k = 0; k < nn && ids[k] != m->pg->system_identifier; k++)
            ;
        if (k == nn) {
            rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                                "Citus %s group %d at %s (database system %llu) has no node in "
                                "repository \"%s\": back it up with --node first",
                                m->group == 0 ? "coordinator" : "worker", m->group,
                                where(m, at, sizeof(at)),
                                (unsigned long long) m->pg->system_identifier, p->repo->display);
            break;
        }
        m->view = cbfs_repo_node_view(p->repo, names[k]);
    }
    cbfs_store_free_names(names, nn);
    free(ids);
    return rc;
}

/* The name must be free on every node and for the cluster. */
static int name_free(Point *p, CbfsError *err)
{
    CbfsClusterPoint cp;
    CbfsKv *kv;
    int rc = cbfs_cluster_point_read(p->repo, p->name, &cp, err);

    if (rc == 0) {
        cbfs_cluster_point_release(&cp);
        return cbfs_error_set(err, EEXIST, CBFS_EXIT_CONFLICT,
                              "cluster restore point \"%s\" already exists in repository \"%s\"",
                              p->name, p->repo->display);
    }
    if (rc != -ENOENT)
        return rc;
    for (size_t i = 0; i < p->n; i++) {
        char what[CBFS_ERROR_MSG_MAX / 2];
        if ((rc = cbfs_point_read(p->m[i].view, p->name, &kv, err)) == 0 ||
            (rc = cbfs_repo_read_backup(p->m[i].view, p->name, &kv, err)) == 0) {
            cbfs_kv_free(kv);
            return cbfs_error_set(err, EEXIST, CBFS_EXIT_CONFLICT,
                                  "\"%s\" is already a restore point or backup of %s", p->name,
                                  cbfs_repo_what(p->m[i].view, what, sizeof(what)));
        }
        if (rc != -ENOENT)
            return rc;
    }
    cbfs_error_init(err);
    return 0;
}

static int lsn_value(PgSession *s, const char *sql, const char *param, const char *what,
                     uint64_t *ret, CbfsError *err)
{
    char *v = NULL;
    int rc = pg_session_value(s, sql, param, what, &v, err);
    if (rc == 0 && cbfs_lsn_parse(v, ret) < 0)
        rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_DATABASE, "server returned an invalid LSN");
    free(v);
    return rc;
}

/* The WAL files from m->before to the switch. */
static void list_segments(Member *m)
{
    uint32_t size = m->pg->wal_segment_size;
    uint64_t first = cbfs_wal_segno(m->before, size), last = cbfs_wal_segno(m->switched - 1, size);
    for (uint64_t s = first; s <= last; s++) {
        char name[CBFS_WAL_NAME_MAX];
        cbfs_wal_segname(m->tli, s, size, name, sizeof(name));
        m->segs = cbfs_xrealloc(m->segs, (m->nsegs + 1) * sizeof(char *));
        m->segs[m->nsegs++] = cbfs_xstrdup(name);
    }
}

static int wait_archived(Point *p, long wait_s, CbfsError *err)
{
    for (size_t i = 0; i < p->n; i++) {
        Member *m = &p->m[i];
        for (size_t k = 0; k < m->nsegs; k++)
            for (long t = 0;; t++) {
                int rc = cbfs_wal_exists(m->view, m->segs[k], err);
                if (rc == 0)
                    break;
                if (rc != -ENOENT)
                    return rc;
                if (t >= wait_s * 10) {
                    char what[CBFS_ERROR_MSG_MAX / 2];
                    return cbfs_error_set(
                        err, ETIMEDOUT, CBFS_EXIT_ERROR,
                        "WAL file \"%s\" holding restore point \"%s\" did not reach %s within "
                        "%ld s (is its archive_command cbfs wal-push --node %s?)",
                        m->segs[k], p->name, cbfs_repo_what(m->view, what, sizeof(what)), wait_s,
                        cbfs_repo_node_name(m->view));
                }
                usleep(100000);
            }
    }
    return 0;
}

/* The point's record in m's archived WAL. */
static int find_record(Point *p, Member *m, CbfsError *err)
{
    CbfsBuf all;
    int rc = 0;

    cbfs_buf_init(&all);
    for (size_t k = 0; k < m->nsegs && rc == 0; k++) {
        uint8_t *seg;
        size_t len;
        if ((rc = cbfs_wal_read(m->view, m->segs[k], &seg, &len, err)) == 0) {
            cbfs_buf_append(&all, seg, len);
            free(seg);
        }
    }
    if (rc == 0) {
        uint64_t start;
        rc = cbfs_wal_find_restore_point((const uint8_t *) all.data, all.len, p->name, &start,
                                         &m->lsn, NULL);
        if (rc <= 0) {
            char a[32], b[32], what[CBFS_ERROR_MSG_MAX / 2];
            cbfs_lsn_format(m->before, a, sizeof(a));
            cbfs_lsn_format(m->switched, b, sizeof(b));
            rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_DATABASE,
                                "restore point \"%s\" is not in the WAL of %s between %s and %s",
                                p->name, cbfs_repo_what(m->view, what, sizeof(what)), a, b);
        } else {
            rc = 0;
        }
    }
    cbfs_buf_release(&all);
    return rc;
}

int cluster_point_create(CbfsRepo *repo, PgSession *coord, const char *conninfo, const char *name,
                         long wait_s, CbfsError *err)
{
    Point p = {.repo = repo, .name = name};
    CbfsClusterPoint cp = {0};
    uint64_t coord_lsn;
    time_t now;
    char tbuf[32], lsn_s[32];
    int rc;

    if ((rc = read_members(&p, coord, conninfo, err)) < 0 || (rc = match_nodes(&p, err)) < 0 ||
        (rc = name_free(&p, err)) < 0)
        goto out;
    for (size_t i = 0; i < p.n && rc == 0; i++) {
        char *seg = NULL;
        Member *m = &p.m[i];
        rc = lsn_value(m->pg, "SELECT pg_current_wal_insert_lsn()::text", NULL,
                       "read the WAL position", &m->before, err);
        if (rc == 0)
            rc = pg_session_value(m->pg, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
                                  NULL, "read the timeline", &seg, err);
        if (rc == 0 && cbfs_wal_classify(seg, &m->tli) != CBFS_WAL_SEGMENT)
            rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_DATABASE,
                                "server returned an invalid WAL file name");
        free(seg);
    }
    if (rc < 0)
        goto out;
    rc = lsn_value(coord, "SELECT citus_create_restore_point($1)::text", name,
                   "create the restore point", &coord_lsn, err);
    now = time(NULL);
    for (size_t i = 0; i < p.n && rc == 0; i++) {
        rc = lsn_value(p.m[i].pg, "SELECT pg_switch_wal()::text", NULL, "switch WAL",
                       &p.m[i].switched, err);
        if (rc == 0 && p.m[i].switched <= p.m[i].before)
            rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_DATABASE,
                                "node \"%s\" wrote no WAL for the restore point",
                                cbfs_repo_node_name(p.m[i].view));
        if (rc == 0)
            list_segments(&p.m[i]);
    }
    if (rc < 0 || (rc = wait_archived(&p, wait_s, err)) < 0)
        goto out;
    for (size_t i = 0; i < p.n && rc == 0; i++)
        rc = find_record(&p, &p.m[i], err);
    if (rc < 0)
        goto out;
    if (p.m[0].lsn != coord_lsn) {
        char a[32], b[32];
        cbfs_lsn_format(p.m[0].lsn, a, sizeof(a));
        cbfs_lsn_format(coord_lsn, b, sizeof(b));
        rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_DATABASE,
                            "restore point \"%s\" is at %s in the coordinator's WAL, not at %s",
                            name, a, b);
        goto out;
    }
    /* every node's own point, then the cluster's */
    for (size_t i = 0; i < p.n && rc == 0; i++)
        rc = cbfs_point_create(p.m[i].view, name, p.m[i].lsn, now, p.m[i].tli,
                               p.m[i].pg->system_identifier, err);
    if (rc < 0)
        goto out;
    cbfs_format_time(now, tbuf, sizeof(tbuf));
    cp.name = (char *) name;
    cp.time = tbuf;
    cp.coordinator = (char *) cbfs_repo_node_name(p.m[0].view);
    cp.n = p.n;
    cp.nodes = cbfs_xcalloc(p.n, sizeof(CbfsPointNode));
    cp.dist_node = p.dist_node;
    for (size_t i = 0; i < p.n; i++)
        cp.nodes[i] = (CbfsPointNode){(char *) cbfs_repo_node_name(p.m[i].view),
                                      p.m[i].lsn,
                                      p.m[i].tli,
                                      p.m[i].pg->system_identifier,
                                      p.m[i].group,
                                      p.m[i].host,
                                      p.m[i].port};
    rc = cbfs_cluster_point_store(repo, &cp, err);
    free(cp.nodes);
    if (rc < 0)
        goto out;
    printf("cluster restore point %s created on %zu nodes:\n", name, p.n);
    for (size_t i = 0; i < p.n; i++) {
        cbfs_lsn_format(p.m[i].lsn, lsn_s, sizeof(lsn_s));
        printf("  %-20s group %-3d %s (timeline %u)\n", cbfs_repo_node_name(p.m[i].view),
               p.m[i].group, lsn_s, p.m[i].tli);
    }
out:
    if (rc < 0)
        cbfs_error_prefix(err, "could not create cluster restore point \"%s\"", name);
    release(&p);
    return rc;
}
