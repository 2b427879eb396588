/*
 * cluster_run.c - starting and stopping a cluster brought back from a
 * cluster restore point, and the state `cbfs umount` finds it by.  See
 * cluster_run.h for the order of the start and why.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbfs/kv.h"
#include "cbfs/util.h"
#include "cluster_run.h"
#include "pgserver.h"
#include "pq.h"

#define STATE_FILE "cluster"

/* Citus's background work that connects to other nodes: off until the
 * metadata names the restored nodes. */
static const char *const background[] = {
    "citus.recover_2pc_interval",
    "citus.distributed_deadlock_detection_factor",
    "citus.defer_shard_delete_interval",
    "citus.background_task_queue_interval",
};

/* ---------------------------------------------------------------- state */

int cluster_prepare_run(Cluster *c, char **ret_settings, CbfsError *err)
{
    CbfsBuf b;
    char *path;
    int rc;

    if (mkdir(c->run, 0700) < 0 && errno != EEXIST)
        return cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not create directory \"%s\": %s",
                              c->run, strerror(errno));
    if (geteuid() == 0 && chown(c->run, c->uid, c->gid) < 0)
        return cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not give \"%s\" to %s: %s",
                              c->run, c->user, strerror(errno));
    cbfs_buf_init(&b);
    cbfs_buf_printf(&b,
                    "# written by cbfs for cluster restore point %s: Citus's background work\n"
                    "# stays off until the metadata names the restored nodes\n",
                    c->point);
    for (size_t i = 0; i < CBFS_ARRAY_LEN(background); i++)
        cbfs_buf_printf(&b, "%s = -1\n", background[i]);
    /* pausing at the point needs a server that takes connections */
    cbfs_buf_printf(&b, "hot_standby = on\n");
    path = cbfs_xasprintf("%s/%s", c->run, CLUSTER_SETTINGS_FILE);
    rc = cbfs_write_file_atomic(path, b.data, b.len, 0644, err);
    cbfs_buf_release(&b);
    if (rc < 0) {
        free(path);
        return rc;
    }
    *ret_settings = path;
    return 0;
}

static void key(char *buf, size_t size, size_t i, const char *what)
{
    snprintf(buf, size, "node%zu_%s", i, what);
}

int cluster_save(const Cluster *c, CbfsError *err)
{
    CbfsKv *kv = cbfs_kv_new();
    char k[64], *text, *path = cbfs_xasprintf("%s/%s", c->run, STATE_FILE);
    int rc;

    cbfs_kv_set(kv, "dir", c->dir);
    cbfs_kv_set(kv, "repository", c->repo);
    cbfs_kv_set(kv, "point", c->point);
    cbfs_kv_set(kv, "user", c->user);
    cbfs_kv_set_u64(kv, "uid", c->uid);
    cbfs_kv_set_u64(kv, "gid", c->gid);
    cbfs_kv_set(kv, "db_user", c->db_user);
    cbfs_kv_set(kv, "bindir", c->bindir ? c->bindir : "");
    cbfs_kv_set_u64(kv, "coordinator", c->coordinator);
    cbfs_kv_set_u64(kv, "nodes", c->n);
    for (size_t i = 0; i < c->n; i++) {
        const ClusterNode *nd = &c->nodes[i];
        key(k, sizeof(k), i, "name");
        cbfs_kv_set(kv, k, nd->name);
        key(k, sizeof(k), i, "datadir");
        cbfs_kv_set(kv, k, nd->datadir);
        key(k, sizeof(k), i, "mounted");
        cbfs_kv_set(kv, k, nd->mounted ? "yes" : "no");
        key(k, sizeof(k), i, "group");
        cbfs_kv_set_u64(kv, k, (uint64_t) nd->group);
        key(k, sizeof(k), i, "port");
        cbfs_kv_set_u64(kv, k, (uint64_t) nd->port);
        key(k, sizeof(k), i, "pid");
        cbfs_kv_set_u64(kv, k, (uint64_t) nd->pid);
    }
    text = cbfs_kv_format(kv);
    rc = cbfs_write_file_atomic(path, text, strlen(text), 0600, err);
    free(text);
    free(path);
    cbfs_kv_free(kv);
    return rc;
}

static const char *get(const CbfsKv *kv, const char *k)
{
    const char *v = cbfs_kv_get(kv, k);
    return v ? v : "";
}

int cluster_load(const char *dir, Cluster *ret, CbfsError *err)
{
    char *path = cbfs_xasprintf("%s/.cbfs/%s", dir, STATE_FILE), k[64];
    uint8_t *text;
    size_t len;
    CbfsKv *kv = NULL;
    uint64_t n = 0, u;
    int rc = cbfs_read_file(path, &text, &len, NULL);

    memset(ret, 0, sizeof(*ret));
    if (rc < 0) {
        /* no cluster there: also a dead mount (ENOTCONN), a file, ... */
        free(path);
        return -ENOENT;
    }
    rc = cbfs_kv_parse((const char *) text, len, &kv, err);
    free(text);
    if (rc < 0 || cbfs_kv_get_u64(kv, "nodes", &n) < 0 || n == 0 || n > 10000) {
        cbfs_kv_free(kv);
        rc = cbfs_error_set(err, EBADMSG, CBFS_EXIT_ERROR, "\"%s\" is damaged", path);
        free(path);
        return rc;
    }
    free(path);
    ret->dir = cbfs_xstrdup(get(kv, "dir"));
    ret->run = cbfs_xasprintf("%s/.cbfs", dir);
    ret->repo = cbfs_xstrdup(get(kv, "repository"));
    ret->point = cbfs_xstrdup(get(kv, "point"));
    ret->user = cbfs_xstrdup(get(kv, "user"));
    ret->db_user = cbfs_xstrdup(get(kv, "db_user"));
    ret->bindir = cbfs_xstrdup(get(kv, "bindir"));
    ret->uid = cbfs_kv_get_u64(kv, "uid", &u) == 0 ? (uid_t) u : 0;
    ret->gid = cbfs_kv_get_u64(kv, "gid", &u) == 0 ? (gid_t) u : 0;
    ret->coordinator = cbfs_kv_get_u64(kv, "coordinator", &u) == 0 && u < n ? (size_t) u : 0;
    ret->nodes = cbfs_xcalloc(n, sizeof(ClusterNode));
    ret->n = n;
    for (size_t i = 0; i < n; i++) {
        ClusterNode *nd = &ret->nodes[i];
        key(k, sizeof(k), i, "name");
        nd->name = cbfs_xstrdup(get(kv, k));
        key(k, sizeof(k), i, "datadir");
        nd->datadir = cbfs_xstrdup(get(kv, k));
        key(k, sizeof(k), i, "mounted");
        nd->mounted = strcmp(get(kv, k), "yes") == 0;
        key(k, sizeof(k), i, "group");
        nd->group = cbfs_kv_get_u64(kv, k, &u) == 0 ? (int) u : -1;
        key(k, sizeof(k), i, "port");
        nd->port = cbfs_kv_get_u64(kv, k, &u) == 0 && u < 65536 ? (int) u : 0;
        key(k, sizeof(k), i, "pid");
        nd->pid = cbfs_kv_get_u64(kv, k, &u) == 0 && u < 1u << 30 ? (pid_t) u : 0;
    }
    cbfs_kv_free(kv);
    return 0;
}

void cluster_release(Cluster *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->nodes[i].name);
        free(c->nodes[i].datadir);
    }
    free(c->nodes);
    free(c->dir);
    free(c->run);
    free(c->repo);
    free(c->point);
    free(c->user);
    free(c->db_user);
    free(c->bindir);
    memset(c, 0, sizeof(*c));
}

/* ---------------------------------------------------------------- servers */

static PgServer server_of(const Cluster *c, const ClusterNode *nd)
{
    PgServer s = {.bindir = c->bindir,
                  .datadir = nd->datadir,
                  .workdir = c->run,
                  .user = c->user,
                  .uid = c->uid,
                  .gid = c->gid,
                  .port = nd->port,
                  .name = nd->name,
                  .detach = true,
                  .pid = nd->pid};
    return s;
}

void cluster_stop(Cluster *c)
{
    for (size_t i = 0; i < c->n; i++) {
        ClusterNode *nd = &c->nodes[i];
        PgServer s = server_of(c, nd);
        if (nd->pid > 0 && pgserver_is_ours(&s))
            pgserver_stop_fast(&s, 30);
        free(s.log);
        nd->pid = 0;
    }
}

/* A session with node nd's server, database db. */
static PGconn *connect_node(const Cluster *c, const ClusterNode *nd, const char *db)
{
    char port[16];
    const char *keys[] = {"host", "port", "user", "dbname", "connect_timeout", "application_name",
                          NULL};
    const char *vals[] = {c->run, port, c->db_user, db, "10", "cbfs", NULL};
    snprintf(port, sizeof(port), "%d", nd->port);
    return pq.connectdbParams(keys, vals, 0);
}

static int node_error(const ClusterNode *nd, const char *what, PGconn *conn, CbfsError *err)
{
    char *msg = pq_first_line(pq.errorMessage(conn));
    int rc = cbfs_error_set(err, EIO, CBFS_EXIT_DATABASE, "node \"%s\": could not %s: %s", nd->name,
                            what, msg);
    free(msg);
    return rc;
}

/* Run sql on conn; with ret, its first value (caller frees). */
static int run_sql(const ClusterNode *nd, PGconn *conn, const char *sql, int nparams,
                   const char *const *params, const char *what, char **ret, CbfsError *err)
{
    PGresult *res = pq.execParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = pq.resultStatus(res);
    int rc = 0;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        char *msg = pq_first_line(pq.resultErrorMessage(res));
        rc = cbfs_error_set(err, EIO, CBFS_EXIT_DATABASE, "node \"%s\": could not %s: %s", nd->name,
                            what, msg);
        free(msg);
    } else if (ret) {
        *ret = cbfs_xstrdup(st == PGRES_TUPLES_OK && pq.ntuples(res) > 0 ? pq.getvalue(res, 0, 0)
                                                                         : "");
    }
    pq.clear(res);
    return rc;
}

/* Why a server stopped: the last FATAL or PANIC line of its log. */
static int server_died(const Cluster *c, const ClusterNode *nd, CbfsError *err)
{
    PgServer s = server_of(c, nd);
    char *line;
    bool started;
    int rc;
    s.log = cbfs_xasprintf("%s/%s.log", c->run, nd->name);
    pgserver_log_verdict(&s, &line, &started);
    rc = cbfs_error_set(err, EIO, started ? CBFS_EXIT_CORRUPT : CBFS_EXIT_ERROR,
                        "node \"%s\": PostgreSQL stopped%s: %s (log: %s)", nd->name,
                        started ? " during recovery" : "", *line ? line : "see its log", s.log);
    free(line);
    free(s.log);
    return rc;
}

enum node_state { NODE_STARTING, NODE_PAUSED, NODE_PROMOTED, NODE_GONE };

static enum node_state node_state(const Cluster *c, const ClusterNode *nd)
{
    PgServer s = server_of(c, nd);
    PGconn *conn;
    PGresult *res;
    enum node_state st = NODE_STARTING;

    if (kill(nd->pid, 0) < 0 && errno == ESRCH)
        return NODE_GONE;
    conn = connect_node(c, nd, "postgres");
    (void) s;
    if (pq.status(conn) == CONNECTION_OK) {
        res = pq.execParams(conn,
                            "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN "
                            "pg_get_wal_replay_pause_state() ELSE '' END",
                            0, NULL, NULL, NULL, NULL, 0);
        if (pq.resultStatus(res) == PGRES_TUPLES_OK && pq.ntuples(res) == 1) {
            if (strcmp(pq.getvalue(res, 0, 0), "f") == 0)
                st = NODE_PROMOTED;
            else if (strcmp(pq.getvalue(res, 0, 1), "paused") == 0)
                st = NODE_PAUSED;
        }
        pq.clear(res);
    }
    pq.finish(conn);
    return st;
}

/* Wait until every node is in state want; any other end is an error. */
static int wait_all(const Cluster *c, enum node_state want, int timeout_s, CbfsError *err)
{
    double t0 = cbfs_now();
    for (;;) {
        size_t done = 0;
        for (size_t i = 0; i < c->n; i++) {
            enum node_state st = node_state(c, &c->nodes[i]);
            if (st == NODE_GONE)
                return server_died(c, &c->nodes[i], err);
            if (st == want)
                done++;
            else if (want == NODE_PAUSED && st == NODE_PROMOTED)
                return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                                      "node \"%s\" left recovery before restore point \"%s\"",
                                      c->nodes[i].name, c->point);
        }
        if (done == c->n)
            return 0;
        if (cbfs_now() - t0 > timeout_s)
            for (size_t i = 0; i < c->n; i++)
                if (node_state(c, &c->nodes[i]) != want)
                    return cbfs_error_set(err, ETIMEDOUT, CBFS_EXIT_ERROR,
                                          "node \"%s\" did not %s within %d s", c->nodes[i].name,
                                          want == NODE_PAUSED ? "reach the restore point"
                                                              : "leave recovery",
                                          timeout_s);
        cbfs_sleep_ms(50);
    }
}

/* The databases of nd where Citus is installed (caller frees each and the
 * array). */
static int citus_databases(const Cluster *c, const ClusterNode *nd, char ***ret, size_t *ret_n,
                           CbfsError *err)
{
    PGconn *conn = connect_node(c, nd, "postgres");
    PGresult *res;
    char **dbs = NULL;
    size_t n = 0;
    int rc = 0;

    if (pq.status(conn) != CONNECTION_OK) {
        rc = node_error(nd, "connect", conn, err);
        pq.finish(conn);
        return rc;
    }
    res = pq.execParams(conn, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1", 0,
                        NULL, NULL, NULL, NULL, 0);
    for (int r = 0; pq.resultStatus(res) == PGRES_TUPLES_OK && r < pq.ntuples(res); r++) {
        const char *db = pq.getvalue(res, r, 0);
        PGconn *dc = connect_node(c, nd, db);
        PGresult *e;
        if (pq.status(dc) != CONNECTION_OK) {
            pq.finish(dc);
            continue;
        }
        e = pq.execParams(dc, "SELECT 1 FROM pg_extension WHERE extname = 'citus'", 0, NULL, NULL,
                          NULL, NULL, 0);
        if (pq.resultStatus(e) == PGRES_TUPLES_OK && pq.ntuples(e) == 1) {
            dbs = cbfs_xrealloc(dbs, (n + 1) * sizeof(char *));
            dbs[n++] = cbfs_xstrdup(db);
        }
        pq.clear(e);
        pq.finish(dc);
    }
    pq.clear(res);
    pq.finish(conn);
    *ret = dbs;
    *ret_n = n;
    return rc;
}

/* Step 3: nd's pg_dist_node in db names the restored nodes. */
static int rewrite_metadata(const Cluster *c, const ClusterNode *nd, const char *db, CbfsError *err)
{
    PGconn *conn = connect_node(c, nd, db);
    char *gone = cbfs_xasprintf("%s/not-restored", c->run);
    CbfsBuf groups;
    int rc = 0;

    if (pq.status(conn) != CONNECTION_OK) {
        rc = node_error(nd, "connect", conn, err);
        goto out;
    }
    cbfs_buf_init(&groups);
    cbfs_buf_printf(&groups, "{");
    rc = run_sql(nd, conn, "BEGIN", 0, NULL, "begin", NULL, err);
    for (size_t i = 0; i < c->n && rc == 0; i++) {
        char port[16], group[16];
        const char *params[] = {c->run, port, group};
        snprintf(port, sizeof(port), "%d", c->nodes[i].port);
        snprintf(group, sizeof(group), "%d", c->nodes[i].group);
        cbfs_buf_printf(&groups, "%s%d", i ? "," : "", c->nodes[i].group);
        rc = run_sql(nd, conn,
                     "UPDATE pg_dist_node SET nodename = $1, nodeport = $2::int"
                     " WHERE groupid = $3::int AND noderole = 'primary'",
                     3, params, "rewrite pg_dist_node", NULL, err);
    }
    cbfs_buf_printf(&groups, "}");
    if (rc == 0) {
        const char *params[] = {gone, groups.data};
        rc = run_sql(nd, conn,
                     "UPDATE pg_dist_node SET nodename = $1"
                     " WHERE NOT (groupid = ANY ($2::int[]) AND noderole = 'primary')",
                     2, params, "rewrite pg_dist_node", NULL, err);
    }
    if (rc == 0)
        rc = run_sql(nd, conn, "COMMIT", 0, NULL, "commit", NULL, err);
    cbfs_buf_release(&groups);
out:
    pq.finish(conn);
    free(gone);
    return rc;
}

/* Step 4: background work back on. */
static int background_on(const Cluster *c, const ClusterNode *nd, CbfsError *err)
{
    PGconn *conn = connect_node(c, nd, "postgres");
    int rc = 0;
    if (pq.status(conn) != CONNECTION_OK) {
        rc = node_error(nd, "connect", conn, err);
        pq.finish(conn);
        return rc;
    }
    for (size_t i = 0; i < CBFS_ARRAY_LEN(background) && rc == 0; i++) {
        char *sql = cbfs_xasprintf("ALTER SYSTEM RESET %s", background[i]);
        rc = run_sql(nd, conn, sql, 0, NULL, "turn Citus's background work back on", NULL, err);
        free(sql);
    }
    if (rc == 0)
        rc =
            run_sql(nd, conn, "SELECT pg_reload_conf()", 0, NULL, "reload its settings", NULL, err);
    pq.finish(conn);
    return rc;
}

/* Steps 3 and 4 on one node (a thread of its own: the nodes are settled at
 * once). */
typedef struct Settle {
    const Cluster *c;
    const ClusterNode *nd;
    int rc;
    CbfsError err;
} Settle;

static void *settle_node(void *arg)
{
    Settle *s = arg;
    char **dbs = NULL;
    size_t ndb = 0;

    s->rc = citus_databases(s->c, s->nd, &dbs, &ndb, &s->err);
    for (size_t k = 0; k < ndb && s->rc == 0; k++)
        s->rc = rewrite_metadata(s->c, s->nd, dbs[k], &s->err);
    for (size_t k = 0; k < ndb; k++)
        free(dbs[k]);
    free(dbs);
    if (s->rc == 0)
        s->rc = background_on(s->c, s->nd, &s->err);
    return NULL;
}

static int settle_all(const Cluster *c, CbfsError *err)
{
    Settle *s = cbfs_xcalloc(c->n, sizeof(Settle));
    pthread_t *t = cbfs_xcalloc(c->n, sizeof(pthread_t));
    bool *started = cbfs_xcalloc(c->n, sizeof(bool));
    int rc = 0;

    for (size_t i = 0; i < c->n; i++) {
        s[i].c = c;
        s[i].nd = &c->nodes[i];
        started[i] = pthread_create(&t[i], NULL, settle_node, &s[i]) == 0;
        if (!started[i])
            settle_node(&s[i]);
    }
    for (size_t i = 0; i < c->n; i++) {
        if (started[i])
            pthread_join(t[i], NULL);
        if (s[i].rc < 0 && rc == 0) {
            rc = s[i].rc;
            if (err)
                *err = s[i].err;
        }
    }
    free(started);
    free(t);
    free(s);
    return rc;
}

int cluster_start(Cluster *c, bool quiet, CbfsError *err)
{
    ClusterNode *coord = &c->nodes[c->coordinator];
    int rc;

    if ((rc = pq_load(err)) < 0)
        return rc;
    /* 1. start every node, recovering to the point and pausing there */
    for (size_t i = 0; i < c->n; i++) {
        ClusterNode *nd = &c->nodes[i];
        PgServer s;
        nd->port = pgserver_free_port();
        s = server_of(c, nd);
        s.pid = 0;
        rc = pgserver_start(&s, err);
        nd->pid = s.pid;
        free(s.log);
        if (rc == 0)
            rc = cluster_save(c, err);
        if (rc < 0) {
            cbfs_error_prefix(err, "node \"%s\"", nd->name);
            goto fail;
        }
    }
    if ((rc = wait_all(c, NODE_PAUSED, 3600, err)) < 0)
        goto fail;
    /* 2. all at the point: all go on and promote.  (pg_promote() would skip
     * the end-of-recovery checkpoint, but PostgreSQL 15 notices a promotion
     * requested while paused only on the pause loop's one-second tick:
     * slower than the checkpoint unless recovery dirtied much.) */
    for (size_t i = 0; i < c->n && rc == 0; i++) {
        PGconn *conn = connect_node(c, &c->nodes[i], "postgres");
        if (pq.status(conn) != CONNECTION_OK)
            rc = node_error(&c->nodes[i], "connect", conn, err);
        else
            rc = run_sql(&c->nodes[i], conn, "SELECT pg_wal_replay_resume()", 0, NULL,
                         "resume recovery", NULL, err);
        pq.finish(conn);
    }
    if (rc < 0 || (rc = wait_all(c, NODE_PROMOTED, 600, err)) < 0)
        goto fail;
    /* 3. each node's metadata names the restored nodes, 4. background work */
    if ((rc = settle_all(c, err)) == 0) {
        char **dbs = NULL;
        size_t ndb = 0;
        rc = citus_databases(c, coord, &dbs, &ndb, err);
        for (size_t k = 0; k < ndb && rc == 0; k++) {
            PGconn *conn = connect_node(c, coord, dbs[k]);
            if (pq.status(conn) != CONNECTION_OK)
                rc = node_error(coord, "connect", conn, err);
            else
                rc = run_sql(coord, conn, "SELECT recover_prepared_transactions()", 0, NULL,
                             "recover prepared transactions", NULL, err);
            pq.finish(conn);
        }
        for (size_t k = 0; k < ndb; k++)
            free(dbs[k]);
        free(dbs);
    }
    if (rc < 0)
        goto fail;
    if (!quiet) {
        printf("coordinator: host=%s port=%d\n", c->run, coord->port);
        fflush(stdout);
    }
    return 0;
fail:
    cluster_stop(c);
    cluster_save(c, NULL);
    return rc;
}
