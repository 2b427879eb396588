/*
 * cluster_verify.c - `cbfs verify REPO@POINT --cluster`: test a whole
 * Citus cluster at a cluster restore point without a copy.
 *
 * The cluster is mounted and brought back in a private work directory
 * (cluster_mount_nodes with --start), then:
 *   - on every node, verify's checks (dbcheck.h: amcheck on every B-tree
 *     index, every table and every other file read through the mount);
 *   - through the coordinator, in every database with Citus:
 *       placements   every shard placement's relation exists on its node;
 *       counts       count(*) of every distributed table equals the sum of
 *                    its shards' counts read on the nodes holding them;
 *       reference    every reference table has the same row count on
 *                    every node that holds it;
 *       prepared     no prepared transaction is left on any node once
 *                    recover_prepared_transactions() has run;
 *   - the mounts' logs: a stored block that failed its id check.
 * Then the servers are stopped, the nodes unmounted and the work directory
 * removed, in every case.
 *
 * Exit codes as verify's: 0 passed, 5 the cluster's backups are bad (the
 * failing node named), 9 the check could not run; 2, 3, 7 as for every
 * command.  --json: {"repository", "point", "result", "exit_code",
 * "error", "duration_seconds", "bytes_checked", "nodes": [{"node",
 * "databases": [...as verify], "files": {"count", "bytes"}, "failures":
 * [...]}], "citus": {"placements", "distributed_tables",
 * "reference_tables", "prepared_transactions"}, "failures": [{"check",
 * "node", "database", "relation", "message"}]}.
 */
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbfs/json.h"
#include "cbfs/log.h"
#include "cbfs/passphrase.h"
#include "cbfs/point.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cluster.h"
#include "commands.h"
#include "dbcheck.h"
#include "metrics.h"
#include "pgserver.h"
#include "pq.h"

typedef struct Failure {
    char *check, *node, *database, *relation, *message;
} Failure;

typedef struct CVerify {
    const char *source, *user, *db_user, *pg_bin, *work_base, *metrics;
    int jobs;
    bool json;
    char *work;
    CbfsRepo *repo;
    Cluster c;
    CbfsClusterPoint cp;
    DbCheck *checks; /* one per node */
    Failure *failures;
    size_t nfailures;
    uint64_t placements, dist_tables, ref_tables, prepared;
    double t0;
} CVerify;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    stop = sig;
}

static void add_failure(CVerify *v, const char *check, const char *node, const char *db,
                        const char *rel, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void add_failure(CVerify *v, const char *check, const char *node, const char *db,
                        const char *rel, const char *fmt, ...)
{
    va_list ap;
    char msg[1024];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    v->failures = cbfs_xrealloc(v->failures, (v->nfailures + 1) * sizeof(Failure));
    v->failures[v->nfailures++] =
        (Failure){cbfs_xstrdup(check), node ? cbfs_xstrdup(node) : NULL,
                  db ? cbfs_xstrdup(db) : NULL, rel ? cbfs_xstrdup(rel) : NULL, cbfs_xstrdup(msg)};
}

static size_t failure_count(const CVerify *v)
{
    size_t n = v->nfailures;
    for (size_t i = 0; v->checks && i < v->c.n; i++)
        n += v->checks[i].nfailures;
    return n;
}

static uint64_t bytes_checked(const CVerify *v)
{
    uint64_t n = 0;
    for (size_t i = 0; v->checks && i < v->c.n; i++) {
        n += v->checks[i].file_bytes;
        for (size_t k = 0; k < v->checks[i].ndbs; k++)
            n += v->checks[i].dbs[k].bytes;
    }
    return n;
}

/* ---------------------------------------------------------------- options */

static void usage(void)
{
    printf("Usage: cbfs verify REPO@POINT --cluster [OPTIONS]\n"
           "\n"
           "Test a Citus cluster at the cluster restore point POINT without a copy: mount\n"
           "every node, bring the cluster back, run verify's checks on every node (amcheck,\n"
           "every table and file read), then through the coordinator: every shard\n"
           "placement exists on its node, every distributed table's count(*) is the sum\n"
           "of its shards' counts, every reference table has the same count on every\n"
           "node, no prepared transaction is left after recover_prepared_transactions().\n"
           "\n"
           "Options:\n"
           "  -j, --jobs=N          checks run at once on each node (default 2)\n"
           "      --json            print the result as JSON (docs/design.md)\n"
           "      --metrics-file=F  write Prometheus metrics to F (textfile collector)\n"
           "      --user=USER       run PostgreSQL as USER when run as root (default postgres)\n"
           "      --db-user=ROLE    superuser role to connect as (default: that user's name)\n"
           "      --pg-bin=DIR      PostgreSQL's bin directory (default: found by version)\n"
           "      --work-dir=DIR    where the private directory goes (default /var/tmp)\n"
           "      --passphrase-file=FILE  an encrypted repository's passphrase\n"
           "\n"
           "Exit status: 0 passed; 5 the backups are bad; 9 the check could not run;\n"
           "2 bad usage; 3 repository unreadable; 7 no such point.\n");
}

static int parse(CVerify *v, int argc, char **argv)
{
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
#define VALUE(opt)                                                                                 \
    (strcmp(argv[i], opt) == 0                                                                     \
         ? (i + 1 < argc ? (val = argv[++i]) : NULL)                                               \
         : (strncmp(argv[i], opt "=", strlen(opt) + 1) == 0 ? (val = argv[i] + strlen(opt) + 1)    \
                                                            : NULL))
        long n;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage();
            return -1;
        } else if (strcmp(argv[i], "--cluster") == 0) {
            continue;
        } else if (strcmp(argv[i], "--json") == 0) {
            v->json = true;
        } else if (VALUE("--jobs") || VALUE("-j")) {
            if (cbfs_parse_int(val, 1, 64, &n) < 0)
                return cmd_usage_error("verify", "invalid --jobs \"%s\" (1 to 64)", val);
            v->jobs = (int) n;
        } else if (VALUE("--metrics-file")) {
            v->metrics = val;
        } else if (VALUE("--user")) {
            v->user = val;
        } else if (VALUE("--db-user")) {
            v->db_user = val;
        } else if (VALUE("--pg-bin")) {
            v->pg_bin = val;
        } else if (VALUE("--work-dir")) {
            v->work_base = val;
        } else if (VALUE("--passphrase-file")) {
            cbfs_passphrase_set_file(val);
        } else if (argv[i][0] == '-') {
            return cmd_usage_error("verify", "unknown option \"%s\" with --cluster", argv[i]);
        } else if (npos++ == 0) {
            v->source = argv[i];
        } else {
            return cmd_usage_error("verify", "too many arguments");
        }
#undef VALUE
    }
    if (!v->source)
        return cmd_usage_error("verify", "no repository given");
    return 0;
}

/* ---------------------------------------------------------------- the Citus checks */

static PGconn *connect_node(const CVerify *v, const ClusterNode *nd, const char *db)
{
    char port[16];
    const char *keys[] = {"host", "port", "user", "dbname", "connect_timeout", "application_name",
                          NULL};
    const char *vals[] = {v->c.run, port, v->c.db_user, db, "10", "cbfs verify", NULL};
    snprintf(port, sizeof(port), "%d", nd->port);
    return pq.connectdbParams(keys, vals, 0);
}

/* Rows of sql on conn (NULL and err set on failure; caller clears). */
static PGresult *query(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = pq.execParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (pq.resultStatus(res) != PGRES_TUPLES_OK) {
        pq.clear(res);
        return NULL;
    }
    return res;
}

static const ClusterNode *node_of_group(const CVerify *v, int group)
{
    for (size_t i = 0; i < v->c.n; i++)
        if (v->c.nodes[i].group == group)
            return &v->c.nodes[i];
    return NULL;
}

/* count(*) of a relation on a node, or -1 (with a failure added). */
static long long count_on(CVerify *v, const ClusterNode *nd, const char *db, const char *rel,
                          const char *check)
{
    PGconn *conn = connect_node(v, nd, db);
    long long n = -1;
    char *sql = cbfs_xasprintf("SELECT count(*) FROM %s", rel);
    PGresult *res = pq.status(conn) == CONNECTION_OK ? query(conn, sql, 0, NULL) : NULL;
    if (res) {
        n = atoll(pq.getvalue(res, 0, 0));
        pq.clear(res);
    } else {
        char *msg = pq_first_line(pq.errorMessage(conn));
        add_failure(v, check, nd->name, db, rel, "could not count the rows of %s: %s", rel, msg);
        free(msg);
    }
    free(sql);
    pq.finish(conn);
    return n;
}

/* Every check of one database with Citus. */
static int citus_db(CVerify *v, const char *db, CbfsError *err)
{
    const ClusterNode *coord = &v->c.nodes[v->c.coordinator];
    PGconn *conn = connect_node(v, coord, db);
    PGresult *res;
    int rc = 0;

    if (pq.status(conn) != CONNECTION_OK) {
        char *msg = pq_first_line(pq.errorMessage(conn));
        rc = cbfs_error_set(err, EIO, CBFS_EXIT_UNCHECKED,
                            "could not connect to the coordinator (node \"%s\"): %s", coord->name,
                            msg);
        free(msg);
        pq.finish(conn);
        return rc;
    }
    /* placements: every shard's relation on every node said to hold it */
    res = query(conn,
                "SELECT p.groupid, shard_name(s.logicalrelid, s.shardid), "
                "s.logicalrelid::regclass::text FROM pg_dist_placement p "
                "JOIN pg_dist_shard s USING (shardid) ORDER BY 2, 1",
                0, NULL);
    for (int r = 0; res && r < pq.ntuples(res) && !stop; r++) {
        const ClusterNode *nd = node_of_group(v, atoi(pq.getvalue(res, r, 0)));
        const char *shard = pq.getvalue(res, r, 1);
        PGconn *nc;
        PGresult *e;
        v->placements++;
        if (!nd) {
            add_failure(v, "placement", NULL, db, shard,
                        "shard %s is placed on group %s, which is not in the cluster point", shard,
                        pq.getvalue(res, r, 0));
            continue;
        }
        nc = connect_node(v, nd, db);
        e = pq.status(nc) == CONNECTION_OK
                ? query(nc, "SELECT to_regclass($1) IS NOT NULL", 1, (const char *const[]){shard})
                : NULL;
        if (!e || strcmp(pq.getvalue(e, 0, 0), "t") != 0)
            add_failure(v, "placement", nd->name, db, shard,
                        "shard %s of table %s is missing on node \"%s\"", shard,
                        pq.getvalue(res, r, 2), nd->name);
        if (e)
            pq.clear(e);
        pq.finish(nc);
    }
    if (res)
        pq.clear(res);
    /* distributed tables: the whole equals the sum of its shards; reference
     * tables: every copy the same */
    res = query(conn,
                "SELECT logicalrelid::regclass::text, partmethod::text, repmodel::text "
                "FROM pg_dist_partition ORDER BY 1",
                0, NULL);
    for (int r = 0; res && r < pq.ntuples(res) && !stop; r++) {
        const char *table = pq.getvalue(res, r, 0);
        bool reference =
            strcmp(pq.getvalue(res, r, 1), "n") == 0 && strcmp(pq.getvalue(res, r, 2), "t") == 0;
        bool distributed = strcmp(pq.getvalue(res, r, 1), "h") == 0;
        PGresult *sh;
        long long whole, sum = 0, first = -1;
        if (!reference && !distributed)
            continue; /* a Citus local table: checked on the coordinator like any table */
        whole = reference ? -1 : count_on(v, coord, db, table, "count");
        sh = query(conn,
                   "SELECT p.groupid, shard_name(s.logicalrelid, s.shardid) FROM pg_dist_shard s "
                   "JOIN pg_dist_placement p USING (shardid) WHERE s.logicalrelid = $1::regclass "
                   "ORDER BY s.shardid, p.groupid",
                   1, (const char *const[]){table});
        for (int k = 0; sh && k < pq.ntuples(sh); k++) {
            const ClusterNode *nd = node_of_group(v, atoi(pq.getvalue(sh, k, 0)));
            long long n;
            if (!nd)
                continue; /* a placement failure already */
            n = count_on(v, nd, db, pq.getvalue(sh, k, 1), reference ? "reference" : "count");
            if (n < 0)
                continue;
            if (reference) {
                if (first < 0)
                    first = n;
                else if (n != first)
                    add_failure(v, "reference", nd->name, db, table,
                                "reference table %s has %lld rows on node \"%s\", %lld elsewhere",
                                table, n, nd->name, first);
            } else {
                sum += n;
            }
        }
        if (sh)
            pq.clear(sh);
        if (reference) {
            v->ref_tables++;
        } else {
            v->dist_tables++;
            if (whole >= 0 && whole != sum)
                add_failure(v, "count", coord->name, db, table,
                            "distributed table %s counts %lld rows, its shards %lld", table, whole,
                            sum);
        }
    }
    if (res)
        pq.clear(res);
    /* prepared transactions: resolved by the coordinator, none left */
    res = query(conn, "SELECT recover_prepared_transactions()", 0, NULL);
    if (res)
        pq.clear(res);
    else {
        char *msg = pq_first_line(pq.errorMessage(conn));
        add_failure(v, "prepared", coord->name, db, NULL,
                    "recover_prepared_transactions() failed: %s", msg);
        free(msg);
    }
    pq.finish(conn);
    return 0;
}

static int citus_checks(CVerify *v, CbfsError *err)
{
    const ClusterNode *coord = &v->c.nodes[v->c.coordinator];
    PGconn *conn = connect_node(v, coord, "postgres");
    PGresult *res;
    int rc = 0;

    if (pq.status(conn) != CONNECTION_OK) {
        char *msg = pq_first_line(pq.errorMessage(conn));
        rc = cbfs_error_set(err, EIO, CBFS_EXIT_UNCHECKED,
                            "could not connect to the coordinator (node \"%s\"): %s", coord->name,
                            msg);
        free(msg);
        pq.finish(conn);
        return rc;
    }
    res = query(conn, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1", 0, NULL);
    for (int r = 0; res && r < pq.ntuples(res) && rc == 0 && !stop; r++) {
        const char *db = pq.getvalue(res, r, 0);
        PGconn *dc = connect_node(v, coord, db);
        PGresult *e = pq.status(dc) == CONNECTION_OK
                          ? query(dc, "SELECT 1 FROM pg_extension WHERE extname = 'citus'", 0, NULL)
                          : NULL;
        bool citus = e && pq.ntuples(e) == 1;
        if (e)
            pq.clear(e);
        pq.finish(dc);
        if (citus)
            rc = citus_db(v, db, err);
    }
    if (res)
        pq.clear(res);
    pq.finish(conn);
    /* no prepared transaction left anywhere */
    for (size_t i = 0; i < v->c.n && rc == 0; i++) {
        PGconn *nc = connect_node(v, &v->c.nodes[i], "postgres");
        PGresult *e = pq.status(nc) == CONNECTION_OK
                          ? query(nc, "SELECT gid FROM pg_prepared_xacts ORDER BY 1", 0, NULL)
                          : NULL;
        for (int k = 0; e && k < pq.ntuples(e); k++) {
            v->prepared++;
            add_failure(v, "prepared", v->c.nodes[i].name, NULL, NULL,
                        "prepared transaction \"%s\" is left on node \"%s\"", pq.getvalue(e, k, 0),
                        v->c.nodes[i].name);
        }
        if (e)
            pq.clear(e);
        pq.finish(nc);
    }
    return rc;
}

/* A stored block that failed its id check, as each node's mount logged it. */
static void mount_failures(CVerify *v)
{
    for (size_t i = 0; i < v->c.n; i++) {
        char *path = cbfs_xasprintf("%s/overlay/%s/mount.log", v->work, v->c.nodes[i].name);
        uint8_t *buf = NULL;
        size_t len;
        if (cbfs_read_file(path, &buf, &len, NULL) == 0)
            for (char *line = (char *) buf; line && *line;) {
                char *nl = strchr(line, '\n');
                if (nl)
                    *nl = '\0';
                if (strstr(line, " failed: "))
                    add_failure(v, "storage", v->c.nodes[i].name, NULL, NULL, "%s",
                                strncmp(line, "cbfs: ", 6) == 0 ? line + 6 : line);
                line = nl ? nl + 1 : NULL;
            }
        free(buf);
        free(path);
    }
}

/* ---------------------------------------------------------------- the run */

static int pick_user(CVerify *v, CbfsError *err)
{
    struct passwd *pw =
        geteuid() == 0 ? getpwnam(v->user ? v->user : "postgres") : getpwuid(geteuid());
    if (!pw)
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_UNCHECKED,
                              "user \"%s\" does not exist: give the user PostgreSQL runs as with "
                              "--user",
                              v->user ? v->user : "postgres");
    if (pw->pw_uid == 0)
        return cbfs_error_set(err, EPERM, CBFS_EXIT_UNCHECKED,
                              "PostgreSQL cannot run as root: give another user with --user");
    if (geteuid() != 0 && v->user && strcmp(v->user, pw->pw_name) != 0)
        return cbfs_error_set(err, EPERM, CBFS_EXIT_UNCHECKED,
                              "--user needs root: PostgreSQL runs as \"%s\"", pw->pw_name);
    v->c.user = cbfs_xstrdup(pw->pw_name);
    v->c.uid = pw->pw_uid;
    v->c.gid = pw->pw_gid;
    v->c.db_user = cbfs_xstrdup(v->db_user ? v->db_user : pw->pw_name);
    return 0;
}

static int run(CVerify *v, CbfsError *err)
{
    CbfsLocation loc;
    ClusterMountSpec spec;
    char *dir, *overlay, *cache, *opts;
    int rc, pg_major = 15;

    if ((rc = cbfs_location_parse(v->source, true, &loc, err)) < 0)
        return rc;
    rc = cbfs_repo_open(&loc, &v->repo, err);
    if (rc == 0)
        rc = cbfs_repo_unlock(v->repo, err);
    if (rc == 0 && v->repo->crypt)
        rc = cbfs_passphrase_export(v->repo->display, err);
    if (rc == 0)
        rc = pick_user(v, err);
    if (rc == 0)
        rc = cluster_resolve(v->repo, loc.point, &v->cp, &v->c, &pg_major, err);
    cbfs_location_release(&loc);
    if (rc == 0)
        rc = pgserver_find_bindir(pg_major, v->pg_bin, &v->c.bindir, err);
    if (rc < 0)
        return rc;
    v->c.repo = cbfs_xstrdup(v->repo->display);
    v->work = cbfs_xasprintf("%s/cbfs-verify-XXXXXX", v->work_base ? v->work_base : "/var/tmp");
    if (!mkdtemp(v->work)) {
        rc = cbfs_error_set(err, errno, CBFS_EXIT_UNCHECKED,
                            "could not create a work directory in \"%s\": %s",
                            v->work_base ? v->work_base : "/var/tmp", strerror(errno));
        free(v->work);
        v->work = NULL;
        return rc;
    }
    dir = cbfs_xasprintf("%s/cluster", v->work);
    overlay = cbfs_xasprintf("%s/overlay", v->work);
    cache = cbfs_xasprintf("%s/cache", v->work);
    opts = cbfs_xasprintf("cache_dir=%s", cache);
    chmod(v->work, 0755);
    if (mkdir(dir, 0755) < 0 || mkdir(cache, 0700) < 0 ||
        (geteuid() == 0 && chown(cache, v->c.uid, v->c.gid) < 0)) {
        rc = cbfs_error_set(err, errno, CBFS_EXIT_UNCHECKED,
                            "could not prepare the work directory \"%s\": %s", v->work,
                            strerror(errno));
    } else {
        spec = (ClusterMountSpec){v->source, dir, overlay, opts, true, true};
        rc = cluster_mount_nodes(&spec, &v->c, err);
        /* a node that stopped during recovery: the backups are bad */
        if (rc < 0 && cbfs_error_exit_code(err) == CBFS_EXIT_CORRUPT)
            add_failure(v, "recovery", NULL, NULL, NULL, "%s", err->msg);
        else if (rc < 0 && cbfs_error_exit_code(err) != CBFS_EXIT_NOT_FOUND &&
                 cbfs_error_exit_code(err) != CBFS_EXIT_REPO)
            err->code = CBFS_EXIT_UNCHECKED;
    }
    free(dir);
    free(overlay);
    free(cache);
    free(opts);
    if (rc < 0)
        return rc;
    v->checks = cbfs_xcalloc(v->c.n, sizeof(DbCheck));
    for (size_t i = 0; i < v->c.n && rc == 0 && !stop; i++) {
        ClusterNode *nd = &v->c.nodes[i];
        v->checks[i] = (DbCheck){
            .host = v->c.run,
            .port = nd->port,
            .user = v->c.db_user,
            .jobs = v->jobs,
            .sql_database = "postgres",
            .datadir = nd->datadir,
            .stop = &stop,
        };
        if ((rc = dbcheck_run(&v->checks[i], err)) < 0)
            cbfs_error_prefix(err, "node \"%s\"", nd->name);
    }
    if (rc == 0 && !stop)
        rc = citus_checks(v, err);
    if (rc == 0 && stop)
        rc = cbfs_error_set(err, EINTR, CBFS_EXIT_UNCHECKED, "interrupted by signal %d (%s)",
                            (int) stop, strsignal((int) stop));
    return rc;
}

/* ---------------------------------------------------------------- the report */

static void json_db(CbfsJson *j, const DbcDatabase *d)
{
    cbfs_json_begin_object(j);
    cbfs_json_key(j, "name");
    cbfs_json_string(j, d->name);
    cbfs_json_key(j, "indexes");
    cbfs_json_uint(j, d->indexes);
    cbfs_json_key(j, "tables");
    cbfs_json_uint(j, d->tables);
    cbfs_json_key(j, "bytes");
    cbfs_json_uint(j, d->bytes);
    cbfs_json_key(j, "seconds");
    cbfs_json_double(j, d->seconds);
    cbfs_json_key(j, "failures");
    cbfs_json_uint(j, d->failures);
    cbfs_json_end_object(j);
}

static void json_failure(CbfsJson *j, const char *check, const char *node, const char *db,
                         const char *rel, const char *msg)
{
    cbfs_json_begin_object(j);
    cbfs_json_key(j, "check");
    cbfs_json_string(j, check);
    cbfs_json_key(j, "node");
    cbfs_json_string(j, node);
    cbfs_json_key(j, "database");
    cbfs_json_string(j, db);
    cbfs_json_key(j, "relation");
    cbfs_json_string(j, rel);
    cbfs_json_key(j, "message");
    cbfs_json_string(j, msg);
    cbfs_json_end_object(j);
}

static void report_json(const CVerify *v, int code, const CbfsError *err)
{
    CbfsJson j;
    cbfs_json_init(&j);
    cbfs_json_begin_object(&j);
    cbfs_json_key(&j, "repository");
    cbfs_json_string(&j, v->repo ? v->repo->display : NULL);
    cbfs_json_key(&j, "point");
    cbfs_json_string(&j, v->c.point);
    cbfs_json_key(&j, "result");
    cbfs_json_string(&j, code == 0 ? "passed" : code == CBFS_EXIT_CORRUPT ? "failed" : "error");
    cbfs_json_key(&j, "exit_code");
    cbfs_json_int(&j, code);
    cbfs_json_key(&j, "error");
    cbfs_json_string(&j, code != 0 && err->msg[0] ? err->msg : NULL);
    cbfs_json_key(&j, "duration_seconds");
    cbfs_json_double(&j, cbfs_now() - v->t0);
    cbfs_json_key(&j, "bytes_checked");
    cbfs_json_uint(&j, bytes_checked(v));
    cbfs_json_key(&j, "nodes");
    cbfs_json_begin_array(&j);
    for (size_t i = 0; i < v->c.n; i++) {
        const DbCheck *c = v->checks ? &v->checks[i] : NULL;
        cbfs_json_begin_object(&j);
        cbfs_json_key(&j, "node");
        cbfs_json_string(&j, v->c.nodes[i].name);
        cbfs_json_key(&j, "databases");
        cbfs_json_begin_array(&j);
        for (size_t k = 0; c && k < c->ndbs; k++)
            json_db(&j, &c->dbs[k]);
        cbfs_json_end_array(&j);
        cbfs_json_key(&j, "files");
        cbfs_json_begin_object(&j);
        cbfs_json_key(&j, "count");
        cbfs_json_uint(&j, c ? c->files_read : 0);
        cbfs_json_key(&j, "bytes");
        cbfs_json_uint(&j, c ? c->file_bytes : 0);
        cbfs_json_end_object(&j);
        cbfs_json_end_object(&j);
    }
    cbfs_json_end_array(&j);
    cbfs_json_key(&j, "citus");
    cbfs_json_begin_object(&j);
    cbfs_json_key(&j, "placements");
    cbfs_json_uint(&j, v->placements);
    cbfs_json_key(&j, "distributed_tables");
    cbfs_json_uint(&j, v->dist_tables);
    cbfs_json_key(&j, "reference_tables");
    cbfs_json_uint(&j, v->ref_tables);
    cbfs_json_key(&j, "prepared_transactions");
    cbfs_json_uint(&j, v->prepared);
    cbfs_json_end_object(&j);
    cbfs_json_key(&j, "failures");
    cbfs_json_begin_array(&j);
    for (size_t i = 0; i < v->nfailures; i++)
        json_failure(&j, v->failures[i].check, v->failures[i].node, v->failures[i].database,
                     v->failures[i].relation, v->failures[i].message);
    for (size_t i = 0; v->checks && i < v->c.n; i++)
        for (size_t k = 0; k < v->checks[i].nfailures; k++) {
            const DbcFailure *f = &v->checks[i].failures[k];
            json_failure(&j, f->check, v->c.nodes[i].name, f->database, f->relation, f->message);
        }
    cbfs_json_end_array(&j);
    cbfs_json_end_object(&j);
    printf("%s\n", j.out.data);
    cbfs_json_release(&j);
}

static void report_text(const CVerify *v, int code)
{
    char size[32];
    if (!v->c.point)
        return;
    printf("cluster restore point \"%s\": %zu nodes\n", v->c.point, v->c.n);
    for (size_t i = 0; v->checks && i < v->c.n; i++) {
        const DbCheck *c = &v->checks[i];
        uint64_t idx = 0, tables = 0, bytes = c->file_bytes;
        for (size_t k = 0; k < c->ndbs; k++) {
            idx += c->dbs[k].indexes;
            tables += c->dbs[k].tables;
            bytes += c->dbs[k].bytes;
        }
        cbfs_format_size(bytes, size, sizeof(size));
        printf("  node \"%s\": %zu databases, %llu indexes, %llu tables, %llu other files, %s "
               "read, %zu failures\n",
               v->c.nodes[i].name, c->ndbs, (unsigned long long) idx, (unsigned long long) tables,
               (unsigned long long) c->files_read, size, c->nfailures);
        for (size_t k = 0; k < c->nfailures; k++)
            printf("    FAILED (%s): %s%s%s%s: %s\n", c->failures[k].check,
                   c->failures[k].database ? "database \"" : "",
                   c->failures[k].database ? c->failures[k].database : "",
                   c->failures[k].database ? "\", " : "", c->failures[k].relation,
                   c->failures[k].message);
    }
    printf("  citus: %llu placements, %llu distributed tables, %llu reference tables checked\n",
           (unsigned long long) v->placements, (unsigned long long) v->dist_tables,
           (unsigned long long) v->ref_tables);
    for (size_t i = 0; i < v->nfailures; i++)
        printf("  FAILED (%s): %s\n", v->failures[i].check, v->failures[i].message);
    cbfs_format_size(bytes_checked(v), size, sizeof(size));
    printf("%s: %zu nodes, %s checked in %.1f s\n",
           code == 0                   ? "passed"
           : code == CBFS_EXIT_CORRUPT ? "FAILED"
                                       : "not verified",
           v->c.n, size, cbfs_now() - v->t0);
}

/* The node a failure belongs to, for the one line on stderr. */
static const char *failing_node(const CVerify *v)
{
    for (size_t i = 0; v->checks && i < v->c.n; i++)
        if (v->checks[i].nfailures)
            return v->c.nodes[i].name;
    for (size_t i = 0; i < v->nfailures; i++)
        if (v->failures[i].node)
            return v->failures[i].node;
    return NULL;
}

int cmd_cluster_verify(int argc, char **argv)
{
    CVerify v = {.jobs = 2};
    CbfsError err;
    struct sigaction sa;
    int rc, code;

    cbfs_error_init(&err);
    if ((rc = parse(&v, argc, argv)) != 0)
        return rc < 0 ? 0 : rc;
    v.t0 = cbfs_now();
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if ((rc = pq_load(&err)) == 0)
        rc = run(&v, &err);
    if (v.c.run)
        mount_failures(&v);
    if (v.c.run)
        cluster_teardown(&v.c);
    if (v.work)
        cbfs_remove_tree(v.work);

    code = rc < 0 ? cbfs_error_exit_code(&err) : failure_count(&v) ? CBFS_EXIT_CORRUPT : 0;
    if (code == CBFS_EXIT_UNCHECKED && v.nfailures > 0 && !stop)
        code = CBFS_EXIT_CORRUPT; /* a bad block found on the way condemns the backups */
    if (v.json)
        report_json(&v, code, &err);
    else
        report_text(&v, code);
    fflush(stdout);
    if (code == CBFS_EXIT_CORRUPT) {
        const char *node = failing_node(&v);
        if (rc < 0)
            cbfs_error("cluster restore point \"%s\" failed verification: %s", v.c.point, err.msg);
        else
            cbfs_error("cluster restore point \"%s\" failed verification on node \"%s\": %zu "
                       "failures",
                       v.c.point, node ? node : "?", failure_count(&v));
    } else if (code != 0) {
        cbfs_error("%s%s%s%s", v.c.point ? "could not verify cluster restore point \"" : "",
                   v.c.point ? v.c.point : "", v.c.point ? "\": " : "", err.msg);
    }
    if (v.metrics) {
        CbfsError merr;
        CmdMetrics m = {
            .job = "verify",
            .repository = v.repo ? v.repo->display : v.source,
            .success = code == 0,
            .duration = cbfs_now() - v.t0,
            .bytes_checked = bytes_checked(&v),
            .failures = failure_count(&v),
        };
        cbfs_error_init(&merr);
        if (cmd_metrics_write(v.metrics, &m, &merr) < 0 && code == 0)
            code = cmd_fail(&merr);
    }
    for (size_t i = 0; v.checks && i < v.c.n; i++)
        dbcheck_release(&v.checks[i]);
    free(v.checks);
    for (size_t i = 0; i < v.nfailures; i++) {
        free(v.failures[i].check);
        free(v.failures[i].node);
        free(v.failures[i].database);
        free(v.failures[i].relation);
        free(v.failures[i].message);
    }
    free(v.failures);
    free(v.work);
    cluster_release(&v.c);
    cbfs_cluster_point_release(&v.cp);
    cbfs_repo_free(v.repo);
    return code;
}
