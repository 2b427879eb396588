/*
 * pq.c - libpq loaded at run time (see pq.h).
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "cbfs/util.h"
#include "pq.h"

PqApi pq;
static pthread_once_t pq_once = PTHREAD_ONCE_INIT;
static char pq_error[256];

static void load(void)
{
    const CbfsDlSym syms[] = {
        {(void **) &pq.cancel, "PQcancel"},
        {(void **) &pq.clear, "PQclear"},
        {(void **) &pq.connectdbParams, "PQconnectdbParams"},
        {(void **) &pq.conninfoFree, "PQconninfoFree"},
        {(void **) &pq.conninfoParse, "PQconninfoParse"},
        {(void **) &pq.errorMessage, "PQerrorMessage"},
        {(void **) &pq.execParams, "PQexecParams"},
        {(void **) &pq.fname, "PQfname"},
        {(void **) &pq.finish, "PQfinish"},
        {(void **) &pq.freeCancel, "PQfreeCancel"},
        {(void **) &pq.freemem, "PQfreemem"},
        {(void **) &pq.ftype, "PQftype"},
        {(void **) &pq.getCancel, "PQgetCancel"},
        {(void **) &pq.getisnull, "PQgetisnull"},
        {(void **) &pq.getResult, "PQgetResult"},
        {(void **) &pq.getvalue, "PQgetvalue"},
        {(void **) &pq.nfields, "PQnfields"},
        {(void **) &pq.ntuples, "PQntuples"},
        {(void **) &pq.pingParams, "PQpingParams"},
        {(void **) &pq.resultErrorMessage, "PQresultErrorMessage"},
        {(void **) &pq.resultStatus, "PQresultStatus"},
        {(void **) &pq.sendQuery, "PQsendQuery"},
        {(void **) &pq.serverVersion, "PQserverVersion"},
        {(void **) &pq.setNoticeProcessor, "PQsetNoticeProcessor"},
        {(void **) &pq.status, "PQstatus"},
    };
    cbfs_dl_load("libpq.so.5", "libpq", syms, CBFS_ARRAY_LEN(syms), pq_error, sizeof(pq_error));
}

int pq_load(CbfsError *err)
{
    pthread_once(&pq_once, load);
    if (pq_error[0])
        return cbfs_error_set(err, ENOSYS, CBFS_EXIT_DATABASE, "%s", pq_error);
    return 0;
}

char *pq_first_line(const char *msg)
{
    static const char *const prefixes[] = {"ERROR:  ", "FATAL:  ", "PANIC:  "};
    char *s;
    if (!msg)
        msg = "";
    for (size_t i = 0; i < CBFS_ARRAY_LEN(prefixes); i++)
        if (strncmp(msg, prefixes[i], strlen(prefixes[i])) == 0)
            msg += strlen(prefixes[i]);
    s = cbfs_xstrdup(msg);
    s[strcspn(s, "\n")] = '\0';
    return s;
}
