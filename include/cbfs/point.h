/*
 * point.h - restore points and recovery targets (DESIGN §2, §8).
 *
 * A restore point is the object points/<name> (kv: name, lsn, time,
 * timeline, system_identifier), created once by `cbfs restore-point` after
 * the WAL holding it reached the repository.
 *
 * REPO@POINT for mount and restore resolves to the newest complete backup
 * that ends before the point, plus the recovery target that makes
 * PostgreSQL replay WAL up to it:
 *   (none), latest      newest backup, recovery_target = 'immediate'
 *   <backup label>      that backup, 'immediate'
 *   <restore point>     recovery_target_name
 *   <ISO 8601 time>     recovery_target_time (2026-11-21T10:30:00Z, +01:00...)
 *   lsn:X/Y             recovery_target_lsn
 */
#ifndef CBFS_POINT_H
#define CBFS_POINT_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cbfs/repo.h"

enum cbfs_target_kind {
    CBFS_TARGET_IMMEDIATE,
    CBFS_TARGET_NAME,
    CBFS_TARGET_TIME,
    CBFS_TARGET_LSN,
};

typedef struct CbfsTarget {
    enum cbfs_target_kind kind;
    char *label; /* the backup to start from */
    char *value; /* recovery_target_name, _time (as PostgreSQL reads it) or _lsn */
    bool pause;  /* recovery_target_action = 'pause' instead of 'promote' */
    char *extra; /* more settings for the copy (configuration file lines), or NULL */
} CbfsTarget;

/* Resolve point (NULL means latest).  Errors, with CBFS_EXIT_NOT_FOUND:
 * unknown name, a point before the first backup, beyond the archived WAL or
 * in the future; each says what is available.  Release with
 * cbfs_target_release. */
int cbfs_point_resolve(CbfsRepo *r, const char *point, CbfsTarget *ret, CbfsError *err);
void cbfs_target_release(CbfsTarget *t);

/* The recovery settings a restored or mounted copy needs (appended to its
 * postgresql.auto.conf): restore_command running "<self> wal-fetch <repo>
 * %f %p" (both quoted for the shell, the whole for the configuration file;
 * in an encrypted repository whose passphrase came from a file,
 * "--passphrase-file <file>" after wal-fetch: the file, never the secret),
 * the target, recovery_target_action, archive_mode = 'off' when
 * archive_off, then t->extra.  who names the writer in a comment.  Caller
 * frees. */
char *cbfs_target_recovery_conf(const CbfsRepo *r, const CbfsTarget *t, const char *who,
                                const char *self, bool archive_off);
/* The settings of a copy that starts as a standby (restore --standby):
 * restore_command and recovery_end_command as above, recovery_target_timeline
 * 'latest', no target; primary_conninfo and primary_slot_name only when
 * given (NULL: none written); archive_mode = 'off' when archive_off; then
 * extra (may be NULL).  Caller frees. */
char *cbfs_standby_recovery_conf(const CbfsRepo *r, const char *label, const char *self,
                                 const char *primary_conninfo, const char *slot, bool archive_off,
                                 const char *extra);

/* Server settings from a file for t->extra (mount -o settings=, restore
 * --settings): its text with a comment naming it.  Errors: "could not read
 * settings file \"%s\": ..." (CBFS_EXIT_USAGE).  *ret: caller frees. */
int cbfs_read_settings(const char *path, char **ret, CbfsError *err);

/* Store a restore point; -EEXIST (with err) if the name is taken. */
int cbfs_point_create(CbfsRepo *r, const char *name, uint64_t lsn, time_t when, uint32_t tli,
                      uint64_t sysid, CbfsError *err);
/* -ENOENT if there is no such point. */
int cbfs_point_read(CbfsRepo *r, const char *name, CbfsKv **ret, CbfsError *err);
/* All points, oldest first (by LSN). */
int cbfs_point_list(CbfsRepo *r, CbfsKv ***ret, size_t *ret_n, CbfsError *err);

/* ISO 8601 date and time with a zone ("Z", "+01", "+01:00", "-0530"),
 * 'T' or ' ' between date and time, optional fraction of a second.
 * *ret_time is the whole seconds (UTC epoch); *ret_pg (caller frees) the
 * same instant as PostgreSQL accepts it ("2026-11-21 10:30:00.25+00").
 * 0 or -EINVAL. */
int cbfs_parse_time(const char *s, time_t *ret_time, char **ret_pg);

#endif
