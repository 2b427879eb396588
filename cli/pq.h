/*
 * pq.h - libpq, loaded when a command first talks to PostgreSQL rather than
 * linked: the commands PostgreSQL runs once per WAL file (wal-push,
 * wal-fetch) never need it, and its dependencies (LDAP, GnuTLS, Kerberos)
 * cost milliseconds at every process start.
 */
#ifndef CBFS_CLI_PQ_H
#define CBFS_CLI_PQ_H

#include <libpq-fe.h>

#include "cbfs/error.h"

/* The functions cbfs calls, named as in libpq without the "PQ". */
typedef struct PqApi {
    int (*cancel)(PGcancel *, char *, int);
    void (*clear)(PGresult *);
    PGconn *(*connectdbParams)(const char *const *, const char *const *, int);
    void (*conninfoFree)(PQconninfoOption *);
    PQconninfoOption *(*conninfoParse)(const char *, char **);
    char *(*errorMessage)(const PGconn *);
    PGresult *(*execParams)(PGconn *, const char *, int, const Oid *, const char *const *,
                            const int *, const int *, int);
    char *(*fname)(const PGresult *, int);
    void (*finish)(PGconn *);
    void (*freeCancel)(PGcancel *);
    void (*freemem)(void *);
    Oid (*ftype)(const PGresult *, int);
    PGcancel *(*getCancel)(PGconn *);
    int (*getisnull)(const PGresult *, int, int);
    PGresult *(*getResult)(PGconn *);
    char *(*getvalue)(const PGresult *, int, int);
    int (*nfields)(const PGresult *);
    int (*ntuples)(const PGresult *);
    PGPing (*pingParams)(const char *const *, const char *const *, int);
    char *(*resultErrorMessage)(const PGresult *);
    ExecStatusType (*resultStatus)(const PGresult *);
    int (*sendQuery)(PGconn *, const char *);
    int (*serverVersion)(const PGconn *);
    PQnoticeProcessor (*setNoticeProcessor)(PGconn *, PQnoticeProcessor, void *);
    ConnStatusType (*status)(const PGconn *);
} PqApi;

extern PqApi pq;

/* Load libpq once (thread-safe): 0, or CBFS_EXIT_DATABASE with "could not
 * load libpq: ...". */
int pq_load(CbfsError *err);

/* The first line of a libpq message, without "ERROR:  " / "FATAL:  ".
 * Caller frees. */
char *pq_first_line(const char *msg);

#endif
