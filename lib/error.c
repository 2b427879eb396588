/*
 * error.c - CbfsError: a one-line message and the exit code it maps to.
 */
#include <stdio.h>
#include <string.h>

#include "cbfs/error.h"

void cbfs_error_init(CbfsError *err)
{
    err->code = 0;
    err->msg[0] = '\0';
}

int cbfs_error_set(CbfsError *err, int errnum, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return errnum > 0 ? -errnum : -1;
}

void cbfs_error_prefix(CbfsError *err, const char *fmt, ...)
{
    char prefix[CBFS_ERROR_MSG_MAX];
    char joined[2 * CBFS_ERROR_MSG_MAX + 2];
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    snprintf(joined, sizeof(joined), "%s: %s", prefix, err->msg);
    /* keep the line whole when short; cut it where it would overflow */
    memcpy(err->msg, joined, sizeof(err->msg) - 1);
    err->msg[sizeof(err->msg) - 1] = '\0';
}

int cbfs_error_exit_code(const CbfsError *err)
{
    return err->code ? err->code : CBFS_EXIT_ERROR;
}
