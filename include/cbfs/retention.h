/*
 * retention.h - which backups a retention policy keeps (issue 7, `cbfs
 * expire`).  A pure decision over a list of backups: nothing is read or
 * removed here.
 *
 * Rules, each keeping a backup for a reason (a backup may have several):
 *   newest        the newest backup, always
 *   pinned        a pinned backup, always
 *   mounted       a backup that is mounted, always
 *   cluster point (set by expire, not here) the backup a kept cluster
 *                 restore point of the repository starts from
 *   last N        the N newest
 *   within D      every backup that ended at most D seconds before now
 *   daily N       the newest backup of each of the N newest UTC days that
 *   weekly N      have a backup (ISO 8601 weeks, calendar months): days
 *   monthly N     without a backup do not use up N
 * A backup no rule keeps is expired.
 */
#ifndef CBFS_RETENTION_H
#define CBFS_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct CbfsRetention {
    int keep_last;       /* 0: rule off */
    int64_t keep_within; /* seconds; 0: rule off */
    int keep_daily, keep_weekly, keep_monthly;
} CbfsRetention;

enum cbfs_keep_reason {
    CBFS_KEEP_NEWEST = 1 << 0,
    CBFS_KEEP_PINNED = 1 << 1,
    CBFS_KEEP_LAST = 1 << 2,
    CBFS_KEEP_WITHIN = 1 << 3,
    CBFS_KEEP_DAILY = 1 << 4,
    CBFS_KEEP_WEEKLY = 1 << 5,
    CBFS_KEEP_MONTHLY = 1 << 6,
    CBFS_KEEP_MOUNTED = 1 << 7,
    CBFS_KEEP_CLUSTER = 1 << 8, /* a kept cluster restore point starts from it (expire) */
};

typedef struct CbfsRetainItem {
    const char *label; /* borrowed */
    time_t time;       /* when the backup ended (its stop time) */
    bool pinned;
    bool mounted;  /* a live mount registration (lock.h) */
    unsigned keep; /* out: enum cbfs_keep_reason bits; 0 = expire */
} CbfsRetainItem;

/* True when no rule is set: such a policy would keep only the newest and
 * the pinned backups, which a command should refuse rather than apply. */
bool cbfs_retention_empty(const CbfsRetention *p);

/* Decide for every item (any order; ties in time broken by label, the
 * greater label being the newer).  now is the reference for keep_within. */
void cbfs_retention_apply(const CbfsRetention *p, time_t now, CbfsRetainItem *items, size_t n);

/* "newest, last, daily" for keep bits, into buf. */
void cbfs_retention_reasons(unsigned keep, char *buf, size_t len);

/* A duration: a positive integer with a unit, s m h d w (e.g. "36h", "14d",
 * "2w"), or several in a row ("1d12h").  Seconds into *ret: 0 or -EINVAL. */
int cbfs_parse_duration(const char *s, int64_t *ret);

#endif
