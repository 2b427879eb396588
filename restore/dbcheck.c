/*
 * dbcheck.c - the SQL-level checks of `cbfs verify` (see dbcheck.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbfs/log.h"
#include "cbfs/util.h"
#include "dbcheck.h"
#include "pq.h"

#define BIG_RELATION (8u << 20) /* bigger ones go first, across databases */
#define BOOLOID      16

enum task_kind { TASK_INDEX, TASK_TABLE, TASK_SQL, TASK_FILES };

typedef struct DbcTask {
    enum task_kind kind;
    size_t db;
    uint32_t oid;
    char *name;
    uint64_t size;
    long heap;          /* TASK_INDEX: the table task its heapallindexed scan reads, or -1 */
    bool read_by_index; /* TASK_TABLE: an index's task reads it (heap above) */
    const char *sql_file;
} DbcTask;

typedef struct DbcWorker {
    DbCheck *c;
    pthread_t thread;
    PGconn *conn;
    size_t conn_db;
    PGcancel *cancel; /* under c->lock */
    char *amcheck;    /* schema of amcheck in conn_db, quoted */
} DbcWorker;

static void noop_notice(void *arg, const char *msg)
{
    (void) arg;
    (void) msg;
}

static PGconn *connect_db(DbCheck *c, const char *db, CbfsError *err)
{
    char port[16];
    const char *keys[] = {"host",    "port", "user", "dbname", "fallback_application_name",
                          "options", NULL};
    const char *vals[] = {c->host,
                          port,
                          c->user,
                          db,
                          "cbfs verify",
                          "-c statement_timeout=0 -c lock_timeout=0"
                          " -c idle_in_transaction_session_timeout=0"
                          " -c default_transaction_read_only=off -c client_min_messages=warning"
                          /* count(*) must read the heap, not an index */
                          " -c enable_indexscan=off -c enable_indexonlyscan=off"
                          " -c enable_bitmapscan=off",
                          NULL};
    PGconn *conn;

    snprintf(port, sizeof(port), "%d", c->port);
    conn = pq.connectdbParams(keys, vals, 0);
    if (pq.status(conn) != CONNECTION_OK) {
        char *msg = pq_first_line(pq.errorMessage(conn));
        cbfs_error_set(err, ECONNREFUSED, CBFS_EXIT_UNCHECKED,
                       "could not connect to database \"%s\": %s", db, msg);
        free(msg);
        pq.finish(conn);
        return NULL;
    }
    pq.setNoticeProcessor(conn, noop_notice, NULL);
    return conn;
}

/* Run sql with up to one parameter; NULL and the message in *ret_msg on
 * failure (caller frees either). */
static PGresult *run(PGconn *conn, const char *sql, const char *param, char **ret_msg)
{
    PGresult *res =
        pq.execParams(conn, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL, NULL, 0);
    ExecStatusType st = pq.resultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    *ret_msg = pq_first_line(res ? pq.resultErrorMessage(res) : pq.errorMessage(conn));
    if (!**ret_msg) {
        free(*ret_msg);
        *ret_msg = pq_first_line(pq.errorMessage(conn));
    }
    pq.clear(res);
    return NULL;
}

#define NO_DB ((size_t) -1) /* a failure outside any database: a file */

static void add_failure(DbCheck *c, size_t db, const char *relation, const char *check,
                        const char *msg)
{
    pthread_mutex_lock(&c->lock);
    c->failures = cbfs_xrealloc(c->failures, (c->nfailures + 1) * sizeof(*c->failures));
    c->failures[c->nfailures++] = (DbcFailure){
        .database = db == NO_DB ? NULL : cbfs_xstrdup(c->dbs[db].name),
        .relation = cbfs_xstrdup(relation),
        .check = cbfs_xstrdup(check),
        .message = cbfs_xstrdup(msg),
    };
    if (db != NO_DB)
        c->dbs[db].failures++;
    pthread_mutex_unlock(&c->lock);
}

/* A failure to keep checking at all (lost server): the run did not finish. */
static void set_broken(DbCheck *c, const CbfsError *err)
{
    pthread_mutex_lock(&c->lock);
    if (!c->broken) {
        c->err = *err;
        c->broken = 1;
    }
    pthread_mutex_unlock(&c->lock);
}

static bool stopping(DbCheck *c)
{
    return *c->stop || __atomic_load_n(&c->broken, __ATOMIC_RELAXED);
}

/* ---- listing ---- */

static size_t add_task(DbCheck *c, DbcTask t)
{
    c->tasks = cbfs_xrealloc(c->tasks, (c->ntasks + 1) * sizeof(*c->tasks));
    c->tasks[c->ntasks] = t;
    return c->ntasks++;
}

static void add_covered(DbCheck *c, const char *path)
{
    if (!*path)
        return;
    c->covered = cbfs_xrealloc(c->covered, (c->ncovered + 1) * sizeof(*c->covered));
    c->covered[c->ncovered++] = cbfs_xstrdup(path);
}

/* The table task of oid among tasks [first, c->ntasks) (a database's
 * tables, in oid order, then its indexes), or -1. */
static long find_table(DbCheck *c, size_t first, uint32_t oid)
{
    size_t lo = first, hi = c->ntasks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const DbcTask *t = &c->tasks[mid];
        if (t->kind != TASK_TABLE || t->oid > oid)
            hi = mid;
        else if (t->oid < oid)
            lo = mid + 1;
        else
            return (long) mid;
    }
    return -1;
}

static const char list_sql[] =
    "SELECT c.oid::text, c.relkind::text,"
    " quote_ident(n.nspname) || '.' || quote_ident(c.relname),"
    " pg_relation_size(c.oid)::text, coalesce(pg_relation_filepath(c.oid), ''),"
    " coalesce(i.indrelid::text, '')"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " LEFT JOIN pg_index i ON i.indexrelid = c.oid"
    " LEFT JOIN pg_am a ON a.oid = c.relam"
    " WHERE c.relpersistence <> 't' AND ("
    "  (c.relkind = 'i' AND a.amname = 'btree' AND i.indisvalid AND i.indisready)"
    "  OR c.relkind IN ('r', 't') OR (c.relkind = 'm' AND c.relispopulated))"
    " ORDER BY c.oid";

/* Add a database's tables (in oid order), then its indexes. */
static int list_database(DbCheck *c, size_t db, CbfsError *err)
{
    PGconn *conn = connect_db(c, c->dbs[db].name, err);
    PGresult *res;
    char *msg = NULL;
    size_t first = c->ntasks;
    int rc = 0;

    if (!conn)
        return -ECONNREFUSED;
    /* on a Citus worker, Citus would propagate the DDL (and refuse it
     * there): a check's extension is the node's own affair */
    res = run(conn, "SET citus.enable_ddl_propagation TO off", NULL, &msg);
    pq.clear(res);
    free(msg);
    msg = NULL;
    res = run(conn, "CREATE EXTENSION IF NOT EXISTS amcheck", NULL, &msg);
    pq.clear(res);
    if (res)
        res = run(conn, list_sql, NULL, &msg);
    if (!res) {
        rc = cbfs_error_set(err, EIO, CBFS_EXIT_UNCHECKED,
                            "could not list the relations of \"%s\": %s", c->dbs[db].name, msg);
        free(msg);
        pq.finish(conn);
        return rc;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < pq.ntuples(res); i++) {
            bool index = strcmp(pq.getvalue(res, i, 1), "i") == 0;
            DbcTask t = {.db = db, .heap = -1};
            if (index != (pass == 1))
                continue;
            t.kind = index ? TASK_INDEX : TASK_TABLE;
            t.oid = (uint32_t) strtoul(pq.getvalue(res, i, 0), NULL, 10);
            t.name = cbfs_xstrdup(pq.getvalue(res, i, 2));
            t.size = strtoull(pq.getvalue(res, i, 3), NULL, 10);
            add_covered(c, pq.getvalue(res, i, 4));
            if (index) {
                uint32_t heap = (uint32_t) strtoul(pq.getvalue(res, i, 5), NULL, 10);
                long ti = find_table(c, first, heap);
                /* one heapallindexed scan reads the table: the first index
                 * of a table takes its read over */
                if (ti >= 0 && !c->tasks[ti].read_by_index) {
                    c->tasks[ti].read_by_index = true;
                    t.heap = ti;
                }
            }
            add_task(c, t);
        }
    }
    pq.clear(res);
    pq.finish(conn);
    return 0;
}

static int cmp_task(const void *a, const void *b)
{
    const DbcTask *x = *(DbcTask *const *) a, *y = *(DbcTask *const *) b;
    bool xb = x->size >= BIG_RELATION, yb = y->size >= BIG_RELATION;
    /* big relations first, largest first; then, database by database,
     * the small ones (a connection serves a run of them) */
    if (xb != yb)
        return xb ? -1 : 1;
    if (!xb && x->db != y->db)
        return x->db < y->db ? -1 : 1;
    if (x->size != y->size)
        return x->size > y->size ? -1 : 1;
    return x->oid < y->oid ? -1 : x->oid > y->oid;
}

static void build_queue(DbCheck *c)
{
    size_t files = add_task(c, (DbcTask){.kind = TASK_FILES, .heap = -1});
    c->queue = cbfs_xcalloc(c->ntasks + 1, sizeof(*c->queue));
    /* the file reads start at once, next to the largest relations */
    c->queue[c->nqueue++] = &c->tasks[files];
    for (size_t i = 0; i < c->ntasks; i++)
        if (i != files && c->tasks[i].kind != TASK_SQL && !c->tasks[i].read_by_index)
            c->queue[c->nqueue++] = &c->tasks[i];
    qsort(c->queue + 1, c->nqueue - 1, sizeof(*c->queue), cmp_task);
    if (c->ncovered > 1)
        qsort(c->covered, c->ncovered, sizeof(*c->covered), cbfs_cmp_strp);
    /* the user's SQL last: it may rely on a healthy database */
    for (size_t i = 0; i < c->ntasks; i++)
        if (c->tasks[i].kind == TASK_SQL)
            c->queue[c->nqueue++] = &c->tasks[i];
}

/* ---- running ---- */

static int use_db(DbcWorker *w, size_t db, CbfsError *err)
{
    DbCheck *c = w->c;
    PGcancel *old;
    PGresult *res;
    char *msg = NULL;

    if (w->conn && w->conn_db == db && pq.status(w->conn) == CONNECTION_OK)
        return 0;
    pthread_mutex_lock(&c->lock);
    old = w->cancel;
    w->cancel = NULL;
    pthread_mutex_unlock(&c->lock);
    if (old)
        pq.freeCancel(old);
    if (w->conn)
        pq.finish(w->conn);
    free(w->amcheck);
    w->amcheck = NULL;
    w->conn = connect_db(c, c->dbs[db].name, err);
    if (!w->conn)
        return -ECONNREFUSED;
    w->conn_db = db;
    pthread_mutex_lock(&c->lock);
    w->cancel = pq.getCancel(w->conn);
    pthread_mutex_unlock(&c->lock);
    res = run(w->conn,
              "SELECT quote_ident(n.nspname) FROM pg_extension e"
              " JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'",
              NULL, &msg);
    if (res && pq.ntuples(res) == 1)
        w->amcheck = cbfs_xstrdup(pq.getvalue(res, 0, 0));
    pq.clear(res);
    if (!w->amcheck) {
        int rc = cbfs_error_set(err, EIO, CBFS_EXIT_UNCHECKED,
                                "amcheck is not available in database \"%s\"%s%s", c->dbs[db].name,
                                msg ? ": " : "", msg ? msg : "");
        free(msg);
        return rc;
    }
    return 0;
}

/* One query about t that must succeed (its oid is $1 if with_oid): false
 * (and a failure recorded) if not. */
static bool check_query(DbcWorker *w, const DbcTask *t, const char *sql, bool with_oid,
                        const char *check)
{
    char oid[16], *msg = NULL;
    PGresult *res;

    snprintf(oid, sizeof(oid), "%u", t->oid);
    res = run(w->conn, sql, with_oid ? oid : NULL, &msg);
    if (res) {
        pq.clear(res);
        return true;
    }
    if (!stopping(w->c))
        add_failure(w->c, t->db, t->name, check, msg);
    free(msg);
    return false;
}

static void count_read(DbCheck *c, size_t db, bool index, uint64_t bytes)
{
    pthread_mutex_lock(&c->lock);
    if (index)
        c->dbs[db].indexes++;
    else
        c->dbs[db].tables++;
    c->dbs[db].bytes += bytes;
    pthread_mutex_unlock(&c->lock);
}

static void run_relation(DbcWorker *w, const DbcTask *t)
{
    DbCheck *c = w->c;
    char *sql;

    if (t->kind == TASK_INDEX) {
        const DbcTask *heap = t->heap >= 0 ? &c->tasks[t->heap] : NULL;
        sql = cbfs_xasprintf("SELECT %s.bt_index_check($1::oid::regclass, true)", w->amcheck);
        if (check_query(w, t, sql, true, "amcheck")) {
            count_read(c, t->db, true, t->size);
            if (heap) /* its heap was read whole by the check */
                count_read(c, t->db, false, heap->size);
        } else if (heap && !stopping(c)) {
            /* the check stopped early: read the table on its own */
            run_relation(w, heap);
        }
        free(sql);
        return;
    }
    sql = cbfs_xasprintf("SELECT count(*) FROM ONLY %s", t->name);
    if (check_query(w, t, sql, false, "read"))
        count_read(c, t->db, false, t->size);
    free(sql);
}

/* Every boolean of every row of every result must be true. */
static void run_sql_file(DbcWorker *w, const DbcTask *t)
{
    DbCheck *c = w->c;
    uint8_t *text = NULL;
    size_t len, stmt = 0;
    CbfsError err;
    PGresult *res;

    cbfs_error_init(&err);
    if (cbfs_read_file(t->sql_file, &text, &len, &err) < 0) {
        add_failure(c, t->db, t->sql_file, "sql", err.msg);
        return;
    }
    if (!pq.sendQuery(w->conn, (const char *) text)) {
        char *msg = pq_first_line(pq.errorMessage(w->conn));
        add_failure(c, t->db, t->sql_file, "sql", msg);
        free(msg);
    }
    while ((res = pq.getResult(w->conn)) != NULL) {
        ExecStatusType st = pq.resultStatus(res);
        stmt++;
        if (st == PGRES_FATAL_ERROR) {
            char *msg = pq_first_line(pq.resultErrorMessage(res));
            char *line = cbfs_xasprintf("statement %zu: %s", stmt, msg);
            add_failure(c, t->db, t->sql_file, "sql", line);
            free(line);
            free(msg);
        } else if (st == PGRES_TUPLES_OK) {
            bool bad = false;
            for (int col = 0; col < pq.nfields(res) && !bad; col++) {
                if (pq.ftype(res, col) != BOOLOID)
                    continue;
                for (int row = 0; row < pq.ntuples(res) && !bad; row++) {
                    if (pq.getisnull(res, row, col) || strcmp(pq.getvalue(res, row, col), "t")) {
                        char *line =
                            cbfs_xasprintf("statement %zu: column \"%s\" is %s in row %d", stmt,
                                           pq.fname(res, col),
                                           pq.getisnull(res, row, col) ? "null" : "false", row + 1);
                        add_failure(c, t->db, t->sql_file, "sql", line);
                        free(line);
                        bad = true;
                    }
                }
            }
        }
        pq.clear(res);
    }
    free(text);
}

/* ---- the other files ---- */

static DbCheck *walk_check; /* nftw has no context argument; one walk at a time */
static pthread_mutex_t walk_lock = PTHREAD_MUTEX_INITIALIZER;

static bool is_covered(DbCheck *c, const char *rel)
{
    char base[4096];
    const char *dot = strrchr(rel, '.'), *slash = strrchr(rel, '/');
    const char *key = rel;

    /* segments "N.1", "N.2" of a covered relation are covered too */
    if (dot && (!slash || dot > slash) && strspn(dot + 1, "0123456789") == strlen(dot + 1) &&
        dot[1] && (size_t) (dot - rel) < sizeof(base)) {
        memcpy(base, rel, (size_t) (dot - rel));
        base[dot - rel] = '\0';
        key = base;
    }
    return bsearch(&key, c->covered, c->ncovered, sizeof(*c->covered), cbfs_cmp_strp) != NULL;
}

static int read_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    DbCheck *c = walk_check;
    const char *rel = path + strlen(c->datadir) + 1;
    char relbuf[4096];
    uint8_t *buf;
    int fd;
    ssize_t n;
    uint64_t total = 0;

    (void) st;
    (void) ftw;
    if (stopping(c))
        return 1;
    if (flag != FTW_F || strlen(path) <= strlen(c->datadir))
        return 0;
    if (strncmp(rel, "pg_wal/", 7) == 0 || strcmp(rel, "postmaster.pid") == 0)
        return 0;
    if (strncmp(rel, ".cbfs_tablespaces/", 18) == 0) {
        snprintf(relbuf, sizeof(relbuf), "pg_tblspc/%s", rel + 18);
        rel = relbuf;
    }
    if (is_covered(c, rel))
        return 0;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno != ENOENT) { /* PostgreSQL may remove files meanwhile */
            char *msg = cbfs_xasprintf("could not open file: %s", strerror(errno));
            add_failure(c, NO_DB, rel, "file", msg);
            free(msg);
        }
        return 0;
    }
    buf = cbfs_xmalloc(1u << 20);
    while ((n = read(fd, buf, 1u << 20)) > 0)
        total += (uint64_t) n;
    if (n < 0) {
        char *msg = cbfs_xasprintf("could not read file: %s", strerror(errno));
        add_failure(c, NO_DB, rel, "file", msg);
        free(msg);
    }
    free(buf);
    close(fd);
    pthread_mutex_lock(&c->lock);
    c->files_read++;
    c->file_bytes += total;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static void run_files(DbCheck *c)
{
    pthread_mutex_lock(&walk_lock);
    walk_check = c;
    nftw(c->datadir, read_one, 32, FTW_PHYS | FTW_MOUNT);
    walk_check = NULL;
    pthread_mutex_unlock(&walk_lock);
}

static void *worker_main(void *arg)
{
    DbcWorker *w = arg;
    DbCheck *c = w->c;
    CbfsError err;

    cbfs_error_init(&err);
    for (;;) {
        DbcTask *t;
        double t0;
        pthread_mutex_lock(&c->lock);
        t = c->next < c->nqueue ? c->queue[c->next++] : NULL;
        pthread_mutex_unlock(&c->lock);
        if (!t || stopping(c))
            break;
        t0 = cbfs_now();
        if (t->kind == TASK_FILES) {
            run_files(c);
            continue;
        }
        if (use_db(w, t->db, &err) < 0) {
            set_broken(c, &err);
            break;
        }
        if (t->kind == TASK_SQL)
            run_sql_file(w, t);
        else
            run_relation(w, t);
        if (pq.status(w->conn) != CONNECTION_OK && !stopping(c)) {
            cbfs_error_set(&err, EIO, CBFS_EXIT_UNCHECKED,
                           "lost the connection to the verification server while checking %s",
                           t->name ? t->name : t->sql_file);
            set_broken(c, &err);
        }
        pthread_mutex_lock(&c->lock);
        c->dbs[t->db].seconds += cbfs_now() - t0;
        pthread_mutex_unlock(&c->lock);
        if (isatty(STDERR_FILENO))
            cbfs_progress("verify: %zu of %zu checks", c->next, c->nqueue);
    }
    return NULL;
}

static int list_databases(DbCheck *c, CbfsError *err)
{
    PGconn *conn = connect_db(c, "postgres", err);
    PGresult *res;
    char *msg = NULL;

    if (!conn) {
        /* a cluster without a "postgres" database */
        cbfs_error_init(err);
        if (!(conn = connect_db(c, "template1", err)))
            return -ECONNREFUSED;
    }
    res = run(conn, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname", NULL,
              &msg);
    if (!res) {
        int rc = cbfs_error_set(err, EIO, CBFS_EXIT_UNCHECKED, "could not list databases: %s", msg);
        free(msg);
        pq.finish(conn);
        return rc;
    }
    c->ndbs = (size_t) pq.ntuples(res);
    c->dbs = cbfs_xcalloc(c->ndbs ? c->ndbs : 1, sizeof(*c->dbs));
    for (size_t i = 0; i < c->ndbs; i++)
        c->dbs[i].name = cbfs_xstrdup(pq.getvalue(res, (int) i, 0));
    pq.clear(res);
    pq.finish(conn);
    return 0;
}

int dbcheck_run(DbCheck *c, CbfsError *err)
{
    size_t sql_db = 0;
    int rc, jobs = c->jobs > 0 ? c->jobs : 1;

    pthread_mutex_init(&c->lock, NULL);
    cbfs_error_init(&c->err);
    if ((rc = pq_load(err)) < 0 || (rc = list_databases(c, err)) < 0)
        return rc;
    for (size_t i = 0; i < c->ndbs && rc == 0 && !*c->stop; i++)
        rc = list_database(c, i, err);
    if (rc < 0)
        return rc;
    if (c->nsql > 0) {
        for (sql_db = 0; sql_db < c->ndbs; sql_db++)
            if (strcmp(c->dbs[sql_db].name, c->sql_database) == 0)
                break;
        if (sql_db == c->ndbs)
            return cbfs_error_set(err, ENOENT, CBFS_EXIT_UNCHECKED,
                                  "database \"%s\" for the SQL checks does not exist",
                                  c->sql_database);
        for (size_t i = 0; i < c->nsql; i++)
            add_task(
                c,
                (DbcTask){.kind = TASK_SQL, .db = sql_db, .heap = -1, .sql_file = c->sql_files[i]});
    }
    build_queue(c);
    c->workers = cbfs_xcalloc((size_t) jobs, sizeof(*c->workers));
    __atomic_store_n(&c->started, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < jobs; i++) {
        c->workers[i].c = c;
        pthread_create(&c->workers[i].thread, NULL, worker_main, &c->workers[i]);
    }
    for (int i = 0; i < jobs; i++) {
        DbcWorker *w = &c->workers[i];
        pthread_join(w->thread, NULL);
        pthread_mutex_lock(&c->lock);
        if (w->cancel)
            pq.freeCancel(w->cancel);
        w->cancel = NULL;
        pthread_mutex_unlock(&c->lock);
        if (w->conn)
            pq.finish(w->conn);
        free(w->amcheck);
    }
    cbfs_progress_end();
    if (c->broken && !*c->stop) {
        *err = c->err;
        return -EIO;
    }
    return 0;
}

void dbcheck_cancel(DbCheck *c)
{
    char buf[256];
    if (!__atomic_load_n(&c->started, __ATOMIC_SEQ_CST))
        return;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < (c->jobs > 0 ? c->jobs : 1); i++)
        if (c->workers[i].cancel)
            pq.cancel(c->workers[i].cancel, buf, sizeof(buf));
    pthread_mutex_unlock(&c->lock);
}

void dbcheck_release(DbCheck *c)
{
    if (!c->dbs && !c->tasks)
        return;
    for (size_t i = 0; i < c->ndbs; i++)
        free(c->dbs[i].name);
    free(c->dbs);
    for (size_t i = 0; i < c->nfailures; i++) {
        free(c->failures[i].database);
        free(c->failures[i].relation);
        free(c->failures[i].check);
        free(c->failures[i].message);
    }
    free(c->failures);
    for (size_t i = 0; i < c->ntasks; i++)
        free(c->tasks[i].name);
    free(c->tasks);
    free(c->queue);
    for (size_t i = 0; i < c->ncovered; i++)
        free(c->covered[i]);
    free(c->covered);
    free(c->workers);
    pthread_mutex_destroy(&c->lock);
}
