/*
 * pgsession.h - the libpq session a backup holds open from
 * pg_backup_start to pg_backup_stop (non-exclusive backups end with the
 * session, so a killed backup never leaves the server in backup mode).
 */
#ifndef CBFS_PGSESSION_H
#define CBFS_PGSESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "cbfs/error.h"

typedef struct PgSession {
    struct pg_conn *conn;
    int server_version; /* server_version_num, e.g. 150018 */
    uint64_t system_identifier;
    bool in_recovery;
    char *wal_level;
    bool data_checksums;
    uint32_t wal_segment_size;
    char *data_directory; /* as the server reports it */
    char *tablespaces;    /* "oid=name\n" lines for every user tablespace */
} PgSession;

/* Connect and read the facts above.  conninfo may be NULL (libpq defaults,
 * dbname=postgres, user=postgres when root and PGUSER is unset).  Errors:
 * "could not connect to the server: ..." (CBFS_EXIT_DATABASE). */
int pg_session_connect(const char *conninfo, PgSession **ret, CbfsError *err);
/* The same to host and port (a Citus node): they override conninfo's,
 * the rest (user, database, password, sslmode) is conninfo's. */
int pg_session_connect_at(const char *conninfo, const char *host, int port, PgSession **ret,
                          CbfsError *err);
void pg_session_free(PgSession *s);

/* Rows of a query, as text (NULL for SQL null). */
typedef struct PgRows {
    size_t nrows, ncols;
    char **cells; /* row by row */
} PgRows;
/* Run sql (param: $1, may be NULL); a statement that returns no rows gives
 * none.  Errors: "could not <what>: <server message>". */
int pg_session_rows(PgSession *s, const char *sql, const char *param, const char *what, PgRows *ret,
                    CbfsError *err);
/* The cell, or NULL (SQL null, or out of range).  Borrowed from r. */
const char *pg_rows_get(const PgRows *r, size_t row, size_t col);
void pg_rows_release(PgRows *r);
/* Run a statement (or several, without parameters), ignoring rows. */
int pg_session_exec(PgSession *s, const char *sql, const char *what, CbfsError *err);

/* One text value from a query of one row and column; param may be NULL.
 * *ret: caller frees.  Errors: "could not <what>: <server message>". */
int pg_session_value(PgSession *s, const char *sql, const char *param, const char *what, char **ret,
                     CbfsError *err);

/* Temporary physical replication slot holding WAL from now on, so the
 * backup can copy its WAL from pg_wal even when the server does not archive. */
int pg_session_reserve_wal(PgSession *s, CbfsError *err);
/* pg_backup_start / pg_start_backup (fast checkpoint).  Returns start LSN. */
int pg_session_backup_start(PgSession *s, const char *label, uint64_t *ret_lsn, CbfsError *err);
/* pg_backup_stop / pg_stop_backup without waiting for archiving; the
 * backup_label and tablespace_map texts are returned (caller frees). */
int pg_session_backup_stop(PgSession *s, uint64_t *ret_lsn, char **ret_label_file,
                           char **ret_tablespace_map, CbfsError *err);

/* A standby: wait up to timeout_s until its WAL receiver streams.  Error:
 * "cannot back up: the standby is not streaming from its primary (WAL
 * receiver: STATUS; waited N s)". */
int pg_session_wait_streaming(PgSession *s, int timeout_s, CbfsError *err);
/* A standby: wait up to timeout_s until it has received (and flushed) WAL
 * up to lsn.  Its primary (host and port of primary_conninfo, the rest of
 * conninfo) is asked once to switch WAL files, when it can be reached.
 * Error: "cannot back up: the standby did not receive WAL up to L within N
 * s (received up to M)". */
int pg_session_wait_received(PgSession *s, const char *conninfo, uint64_t lsn, int timeout_s,
                             CbfsError *err);

#endif
