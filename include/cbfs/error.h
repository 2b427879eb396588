/*
 * error.h - errors carried out of libcbfs, and the exit codes of every command.
 *
 * Library functions return 0 or a negative errno and describe a failure in a
 * CbfsError out-parameter.  Each layer may prefix the message with its own
 * context ("could not back up \"base/1/1259\": ...").  Only a command's main()
 * turns an error into an exit code: the code is chosen where the failure is
 * first detected (cbfs_error_set) and kept as prefixes are added.
 */
#ifndef CBFS_ERROR_H
#define CBFS_ERROR_H

#include <stdarg.h>

/* Exit codes: stable, documented in docs/design.md.  Never renumber. */
enum cbfs_exit {
    CBFS_EXIT_OK = 0,
    CBFS_EXIT_ERROR = 1,           /* generic failure; also "not found" for wal-fetch */
    CBFS_EXIT_USAGE = 2,           /* bad command line */
    CBFS_EXIT_REPO = 3,            /* repository missing, unreadable or not a cbfs repository */
    CBFS_EXIT_DATABASE = 4,        /* PostgreSQL unreachable, wrong cluster, cannot back up */
    CBFS_EXIT_CORRUPT = 5,         /* stored data failed verification */
    CBFS_EXIT_CONFLICT = 6,        /* object exists with different content (wal-push) */
    CBFS_EXIT_NOT_FOUND = 7,       /* unknown backup label or point */
    CBFS_EXIT_TARGET = 8,          /* restore target unusable (not empty, not writable) */
    CBFS_EXIT_UNCHECKED = 9,       /* verify: the check could not run (PostgreSQL binaries,
                                    * mount, server start, interrupted): nothing was judged */
    CBFS_EXIT_STOP_RECOVERY = 200, /* wal-fetch failed in archive recovery: a code
                                    * PostgreSQL takes as fatal, not as the archive's end */
};

#define CBFS_ERROR_MSG_MAX 1024

typedef struct CbfsError {
    int code;                     /* enum cbfs_exit; 0 while no error is set */
    char msg[CBFS_ERROR_MSG_MAX]; /* one line, PostgreSQL style, no final period */
} CbfsError;

void cbfs_error_init(CbfsError *err);

/* Set the error (replacing any earlier one).  err may be NULL.  Returns -errnum
 * so a caller can write `return cbfs_error_set(err, ...)`; errnum must be > 0. */
int cbfs_error_set(CbfsError *err, int errnum, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefix the current message with "<prefix>: ".  Keeps the code. */
void cbfs_error_prefix(CbfsError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The exit code for a failed command: err->code, or CBFS_EXIT_ERROR if unset. */
int cbfs_error_exit_code(const CbfsError *err);

#endif
