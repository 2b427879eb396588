/*
 * dbcheck.h - the checks `cbfs verify` runs against a started copy of a
 * backup, over libpq, on N connections at once:
 *
 *  - amcheck's bt_index_check(index, heapallindexed => true) on every valid
 *    B-tree index of every database that accepts connections (catalogs
 *    included).  The extension is created where it is missing: the copy is
 *    thrown away.
 *  - a full read of every table, materialized view and TOAST table
 *    (SELECT count(*) FROM ONLY ..., with index and bitmap scans off so
 *    that the heap itself is scanned: every page is read, page checksums
 *    are verified).  A table whose heap a heapallindexed check has just scanned
 *    whole is not read a second time; if that check failed, it is.
 *  - a read of every other file of the data directory (free space and
 *    visibility maps, non-B-tree indexes, pg_xact, ...) through the mount,
 *    so that every stored block of the backup passes the mount's id check.
 *  - the user's SQL files, in one database: an error, or a boolean column
 *    that is false or NULL in any row of any result, fails.
 *
 * Largest relations go first, so the jobs finish together.
 */
#ifndef CBFS_DBCHECK_H
#define CBFS_DBCHECK_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "cbfs/error.h"

typedef struct DbcFailure {
    char *database; /* NULL for a file */
    char *relation; /* schema-qualified, or a file path, or the SQL file */
    char *check;    /* "amcheck", "read", "file", "sql" */
    char *message;  /* one line */
} DbcFailure;

typedef struct DbcDatabase {
    char *name;
    uint64_t indexes; /* B-tree indexes checked */
    uint64_t tables;  /* tables read */
    uint64_t bytes;   /* relation bytes read by the checks */
    double seconds;   /* time spent on its checks, summed over the jobs */
    uint64_t failures;
} DbcDatabase;

typedef struct DbCheck {
    /* in */
    const char *host; /* socket directory */
    int port;
    const char *user; /* database role (a superuser) */
    int jobs;
    const char *const *sql_files;
    size_t nsql;
    const char *sql_database;
    const char *datadir; /* the mounted data directory, for the file reads */
    volatile sig_atomic_t *stop;

    /* out */
    DbcDatabase *dbs;
    size_t ndbs;
    DbcFailure *failures;
    size_t nfailures;
    uint64_t files_read, file_bytes; /* the other files */

    /* private */
    pthread_mutex_t lock;
    struct DbcTask *tasks; /* every check */
    size_t ntasks;
    struct DbcTask **queue; /* the ones to run, in order */
    size_t nqueue, next;
    char **covered; /* relation file paths the SQL checks read, sorted */
    size_t ncovered;
    struct DbcWorker *workers;
    CbfsError err; /* the first error that stopped the checks from running */
    int broken;
    int started; /* atomic: lock and workers are set up (dbcheck_cancel may run) */
} DbCheck;

/* Run every check.  0 when they ran (c->nfailures says whether they
 * passed); < 0 (CBFS_EXIT_UNCHECKED or CBFS_EXIT_DATABASE) when they
 * could not, e.g. no connection.  When *stop becomes set the checks end
 * early (the caller treats the run as interrupted). */
int dbcheck_run(DbCheck *c, CbfsError *err);
/* Cancel the queries in progress (from another thread, e.g. on SIGINT). */
void dbcheck_cancel(DbCheck *c);
void dbcheck_release(DbCheck *c);

#endif
