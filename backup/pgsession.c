/*
 * pgsession.c - libpq conversation of a backup.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "pgsession.h"
#include "pq.h"

static int query_error(PgSession *s, CbfsError *err, const char *what)
{
    char *msg = pq_first_line(pq.errorMessage(s->conn));
    int rc;
    rc = cbfs_error_set(err, EIO, CBFS_EXIT_DATABASE, "could not %s: %s", what, msg);
    free(msg);
    return rc;
}

/* Run a query returning one row; *ret gets a PGresult the caller clears. */
static int query(PgSession *s, const char *sql, const char *param, const char *what, PGresult **ret,
                 CbfsError *err)
{
    PGresult *res =
        pq.execParams(s->conn, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL, NULL, 0);
    if (pq.resultStatus(res) != PGRES_TUPLES_OK || pq.ntuples(res) != 1) {
        int rc = query_error(s, err, what);
        pq.clear(res);
        return rc;
    }
    *ret = res;
    return 0;
}

int pg_session_connect(const char *conninfo, PgSession **ret, CbfsError *err)
{
    return pg_session_connect_at(conninfo, NULL, 0, ret, err);
}

int pg_session_connect_at(const char *conninfo, const char *host, int port, PgSession **ret,
                          CbfsError *err)
{
    PgSession *s = cbfs_xcalloc(1, sizeof(*s));
    const char *keys[6], *vals[6];
    char port_s[16];
    PGresult *res;
    int n = 0, rc;

    if ((rc = pq_load(err)) < 0) {
        free(s);
        return rc;
    }

    keys[n] = "dbname";
    vals[n++] = conninfo ? conninfo : "dbname=postgres";
    if (!conninfo && geteuid() == 0 && !getenv("PGUSER")) {
        keys[n] = "user";
        vals[n++] = "postgres";
    }
    if (host) {
        /* after dbname: they override what conninfo says */
        snprintf(port_s, sizeof(port_s), "%d", port);
        keys[n] = "host";
        vals[n++] = host;
        keys[n] = "port";
        vals[n++] = port_s;
    }
    keys[n] = "fallback_application_name";
    vals[n++] = "cbfs";
    keys[n] = NULL;
    vals[n] = NULL;
    s->conn = pq.connectdbParams(keys, vals, 1);
    if (pq.status(s->conn) != CONNECTION_OK) {
        char *msg = cbfs_xstrdup(pq.errorMessage(s->conn));
        char *nl = strchr(msg, '\n');
        if (nl)
            *nl = '\0';
        rc = cbfs_error_set(err, ECONNREFUSED, CBFS_EXIT_DATABASE,
                            "could not connect to the server: %s", msg);
        free(msg);
        pg_session_free(s);
        return rc;
    }
    s->server_version = pq.serverVersion(s->conn);
    if (s->server_version < 100000) {
        int major = s->server_version / 10000;
        pg_session_free(s);
        return cbfs_error_set(err, ENOTSUP, CBFS_EXIT_DATABASE,
                              "PostgreSQL %d is not supported (10 or later is required)", major);
    }
    rc = query(s,
               "SELECT (SELECT system_identifier FROM pg_control_system())::text,"
               " pg_is_in_recovery()::text, current_setting('wal_level'),"
               " current_setting('data_checksums'),"
               " (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),"
               " current_setting('data_directory'),"
               " coalesce((SELECT string_agg(oid::text || '=' || spcname, E'\\n' ORDER BY oid)"
               "  FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')), '')",
               NULL, "read the server settings", &res, err);
    if (rc < 0) {
        pg_session_free(s);
        return rc;
    }
    s->system_identifier = strtoull(pq.getvalue(res, 0, 0), NULL, 10);
    s->in_recovery = strcmp(pq.getvalue(res, 0, 1), "true") == 0;
    s->wal_level = cbfs_xstrdup(pq.getvalue(res, 0, 2));
    s->data_checksums = strcmp(pq.getvalue(res, 0, 3), "on") == 0;
    s->wal_segment_size = (uint32_t) strtoul(pq.getvalue(res, 0, 4), NULL, 10);
    s->data_directory = cbfs_xstrdup(pq.getvalue(res, 0, 5));
    s->tablespaces = cbfs_xstrdup(pq.getvalue(res, 0, 6));
    pq.clear(res);
    if (s->server_version < 110000)
        s->wal_segment_size *= 8192; /* PostgreSQL 10 reports it in 8 kB units */
    *ret = s;
    return 0;
}

void pg_session_free(PgSession *s)
{
    if (!s)
        return;
    pq.finish(s->conn);
    free(s->wal_level);
    free(s->data_directory);
    free(s->tablespaces);
    free(s);
}

int pg_session_value(PgSession *s, const char *sql, const char *param, const char *what, char **ret,
                     CbfsError *err)
{
    PGresult *res;
    int rc = query(s, sql, param, what, &res, err);
    if (rc < 0)
        return rc;
    *ret = cbfs_xstrdup(pq.getvalue(res, 0, 0));
    pq.clear(res);
    return 0;
}

int pg_session_rows(PgSession *s, const char *sql, const char *param, const char *what, PgRows *ret,
                    CbfsError *err)
{
    PGresult *res =
        pq.execParams(s->conn, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL, NULL, 0);
    int rc = 0;

    memset(ret, 0, sizeof(*ret));
    if (pq.resultStatus(res) == PGRES_TUPLES_OK) {
        ret->nrows = (size_t) pq.ntuples(res);
        ret->ncols = (size_t) pq.nfields(res);
        ret->cells = cbfs_xcalloc(ret->nrows * ret->ncols + 1, sizeof(char *));
        for (size_t r = 0; r < ret->nrows; r++)
            for (size_t c = 0; c < ret->ncols; c++)
                if (!pq.getisnull(res, (int) r, (int) c))
                    ret->cells[r * ret->ncols + c] =
                        cbfs_xstrdup(pq.getvalue(res, (int) r, (int) c));
    } else if (pq.resultStatus(res) != PGRES_COMMAND_OK) {
        rc = query_error(s, err, what);
    }
    pq.clear(res);
    return rc;
}

const char *pg_rows_get(const PgRows *r, size_t row, size_t col)
{
    return row < r->nrows && col < r->ncols ? r->cells[row * r->ncols + col] : NULL;
}

void pg_rows_release(PgRows *r)
{
    for (size_t i = 0; i < r->nrows * r->ncols; i++)
        free(r->cells[i]);
    free(r->cells);
    memset(r, 0, sizeof(*r));
}

int pg_session_exec(PgSession *s, const char *sql, const char *what, CbfsError *err)
{
    PgRows rows;
    int rc = pg_session_rows(s, sql, NULL, what, &rows, err);
    pg_rows_release(&rows);
    return rc;
}

int pg_session_reserve_wal(PgSession *s, CbfsError *err)
{
    char name[64];
    PGresult *res;
    uint8_t rnd[4];
    char hex[9];
    int rc;

    cbfs_random_bytes(rnd, sizeof(rnd));
    cbfs_hex_encode(rnd, sizeof(rnd), hex);
    snprintf(name, sizeof(name), "cbfs_backup_%d_%s", (int) getpid(), hex);
    rc = query(s, "SELECT slot_name FROM pg_create_physical_replication_slot($1, true, true)", name,
               "create a temporary replication slot", &res, err);
    if (rc == 0)
        pq.clear(res);
    return rc;
}

int pg_session_backup_start(PgSession *s, const char *label, uint64_t *ret_lsn, CbfsError *err)
{
    PGresult *res;
    int rc = query(s,
                   s->server_version >= 150000 ? "SELECT pg_backup_start($1, true)::text"
                                               : "SELECT pg_start_backup($1, true, false)::text",
                   label, "start the backup", &res, err);
    if (rc < 0)
        return rc;
    rc = cbfs_lsn_parse(pq.getvalue(res, 0, 0), ret_lsn);
    if (rc < 0)
        rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_DATABASE, "server returned an invalid LSN");
    pq.clear(res);
    return rc;
}

int pg_session_backup_stop(PgSession *s, uint64_t *ret_lsn, char **ret_label_file,
                           char **ret_tablespace_map, CbfsError *err)
{
    PGresult *res;
    int rc =
        query(s,
              s->server_version >= 150000
                  ? "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
                  : "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)",
              NULL, "stop the backup", &res, err);
    if (rc < 0)
        return rc;
    rc = cbfs_lsn_parse(pq.getvalue(res, 0, 0), ret_lsn);
    if (rc < 0) {
        pq.clear(res);
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_DATABASE, "server returned an invalid LSN");
    }
    *ret_label_file = cbfs_xstrdup(pq.getvalue(res, 0, 1));
    *ret_tablespace_map = cbfs_xstrdup(pq.getisnull(res, 0, 2) ? "" : pq.getvalue(res, 0, 2));
    pq.clear(res);
    return 0;
}

/* ---------------------------------------------------------------- standbys */

int pg_session_wait_streaming(PgSession *s, int timeout_s, CbfsError *err)
{
    double t0 = cbfs_now();
    char *status = NULL;
    int rc;

    for (;;) {
        free(status);
        status = NULL;
        /* a role without pg_read_all_stats sees the receiver's row but not
         * its state: then the wait for the backup's WAL is the only check */
        rc = pg_session_value(s,
                              "SELECT CASE WHEN NOT EXISTS (SELECT FROM pg_stat_wal_receiver)"
                              " THEN 'none' ELSE coalesce((SELECT status FROM"
                              " pg_stat_wal_receiver), 'hidden') END",
                              NULL, "read the standby's WAL receiver", &status, err);
        if (rc < 0)
            return rc;
        if (strcmp(status, "streaming") == 0 || strcmp(status, "hidden") == 0)
            break;
        if (cbfs_now() - t0 >= timeout_s) {
            rc = cbfs_error_set(err, ETIMEDOUT, CBFS_EXIT_DATABASE,
                                "cannot back up: the standby is not streaming from its primary "
                                "(WAL receiver: %s; waited %d s)",
                                strcmp(status, "none") == 0 ? "not running" : status, timeout_s);
            free(status);
            return rc;
        }
        cbfs_sleep_ms(500);
    }
    free(status);
    return 0;
}

/* Ask the standby's primary (host and port from primary_conninfo, the rest
 * from conninfo) to switch to a new WAL file.  Best effort: a primary that
 * cannot be reached only makes the wait longer. */
static void ask_primary_switch(PgSession *s, const char *conninfo)
{
    char *pci = NULL, *perr = NULL;
    PQconninfoOption *opts;
    const char *host = NULL, *port = NULL;
    PgSession *p = NULL;
    CbfsError e;

    cbfs_error_init(&e);
    if (pg_session_value(s, "SELECT current_setting('primary_conninfo')", NULL,
                         "read primary_conninfo", &pci, &e) < 0 ||
        !*pci || !(opts = pq.conninfoParse(pci, &perr))) {
        free(pci);
        if (perr)
            pq.freemem(perr);
        return;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val && *o->val)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0 && o->val && *o->val && !host)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0 && o->val && *o->val)
            port = o->val;
    }
    if (host && pg_session_connect_at(conninfo, host, port ? atoi(port) : 5432, &p, &e) == 0) {
        if (!p->in_recovery && p->system_identifier == s->system_identifier)
            pg_session_exec(p, "SELECT pg_switch_wal()", "switch WAL", &e);
        pg_session_free(p);
    }
    pq.conninfoFree(opts);
    free(pci);
}

int pg_session_wait_received(PgSession *s, const char *conninfo, uint64_t lsn, int timeout_s,
                             CbfsError *err)
{
    double t0 = cbfs_now();
    bool asked = false;
    char *v = NULL, want[32];
    int rc;

    cbfs_lsn_format(lsn, want, sizeof(want));
    for (;;) {
        uint64_t got = 0;
        free(v);
        v = NULL;
        rc = pg_session_value(s, "SELECT coalesce(pg_last_wal_receive_lsn(), '0/0')::text", NULL,
                              "read the standby's received WAL", &v, err);
        if (rc < 0)
            return rc;
        if (cbfs_lsn_parse(v, &got) == 0 && got >= lsn)
            break;
        if (!asked) {
            ask_primary_switch(s, conninfo);
            asked = true;
        }
        if (cbfs_now() - t0 >= timeout_s) {
            rc = cbfs_error_set(err, ETIMEDOUT, CBFS_EXIT_DATABASE,
                                "cannot back up: the standby did not receive WAL up to %s within "
                                "%d s (received up to %s)",
                                want, timeout_s, v);
            free(v);
            return rc;
        }
        cbfs_sleep_ms(100);
    }
    free(v);
    return 0;
}
