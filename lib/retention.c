/*
 * retention.c - which backups a retention policy keeps (see retention.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/retention.h"
#include "cbfs/util.h"

bool cbfs_retention_empty(const CbfsRetention *p)
{
    return p->keep_last <= 0 && p->keep_within <= 0 && p->keep_daily <= 0 && p->keep_weekly <= 0 &&
           p->keep_monthly <= 0;
}

/* Newest first. */
static int cmp_newest(const void *a, const void *b)
{
    const CbfsRetainItem *x = *(CbfsRetainItem *const *) a, *y = *(CbfsRetainItem *const *) b;
    if (x->time != y->time)
        return x->time > y->time ? -1 : 1;
    return -strcmp(x->label, y->label);
}

enum period { DAY, WEEK, MONTH };

/* A number naming the UTC day, ISO week or month t falls in. */
static long period_of(time_t t, enum period p)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    switch (p) {
    case DAY:
        return (long) (tm.tm_year + 1900) * 1000 + tm.tm_yday;
    case WEEK: {
        char buf[16];
        /* %G: ISO 8601 week-based year, %V: its week */
        strftime(buf, sizeof(buf), "%G%V", &tm);
        return strtol(buf, NULL, 10);
    }
    case MONTH:
        return (long) (tm.tm_year + 1900) * 100 + tm.tm_mon;
    }
    return 0;
}

/* Keep the newest backup of each of the n newest periods with a backup. */
static void keep_periods(CbfsRetainItem **sorted, size_t count, int n, enum period p,
                         unsigned reason)
{
    long last = 0;
    int taken = 0;
    for (size_t i = 0; i < count && taken < n; i++) {
        long period = period_of(sorted[i]->time, p);
        if (taken > 0 && period == last)
            continue;
        sorted[i]->keep |= reason;
        last = period;
        taken++;
    }
}

void cbfs_retention_apply(const CbfsRetention *p, time_t now, CbfsRetainItem *items, size_t n)
{
    CbfsRetainItem **sorted;

    if (n == 0)
        return;
    sorted = cbfs_xmalloc(n * sizeof(*sorted));
    for (size_t i = 0; i < n; i++) {
        sorted[i] = &items[i];
        items[i].keep =
            (items[i].pinned ? CBFS_KEEP_PINNED : 0u) | (items[i].mounted ? CBFS_KEEP_MOUNTED : 0u);
    }
    if (n > 1)
        qsort(sorted, n, sizeof(*sorted), cmp_newest);
    sorted[0]->keep |= CBFS_KEEP_NEWEST;
    for (size_t i = 0; i < n; i++) {
        if ((long) i < p->keep_last)
            sorted[i]->keep |= CBFS_KEEP_LAST;
        if (p->keep_within > 0 && sorted[i]->time >= now - p->keep_within)
            sorted[i]->keep |= CBFS_KEEP_WITHIN;
    }
    keep_periods(sorted, n, p->keep_daily, DAY, CBFS_KEEP_DAILY);
    keep_periods(sorted, n, p->keep_weekly, WEEK, CBFS_KEEP_WEEKLY);
    keep_periods(sorted, n, p->keep_monthly, MONTH, CBFS_KEEP_MONTHLY);
    free(sorted);
}

void cbfs_retention_reasons(unsigned keep, char *buf, size_t len)
{
    static const char *const names[] = {"newest", "pinned",  "last",    "within",       "daily",
                                        "weekly", "monthly", "mounted", "cluster point"};
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < CBFS_ARRAY_LEN(names); i++) {
        if (!(keep & (1u << i)))
            continue;
        int k = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", names[i]);
        if (k < 0 || (size_t) k >= len - used)
            break;
        used += (size_t) k;
    }
}

int cbfs_parse_duration(const char *s, int64_t *ret)
{
    int64_t total = 0;

    if (!s || !*s)
        return -EINVAL;
    while (*s) {
        char *end;
        long long v;
        int64_t unit;
        if (*s < '0' || *s > '9')
            return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || v <= 0 || v > 1000000)
            return -EINVAL;
        switch (*end) {
        case 's':
            unit = 1;
            break;
        case 'm':
            unit = 60;
            break;
        case 'h':
            unit = 3600;
            break;
        case 'd':
            unit = 86400;
            break;
        case 'w':
            unit = 7 * 86400;
            break;
        default:
            return -EINVAL;
        }
        total += (int64_t) v * unit;
        s = end + 1;
    }
    *ret = total;
    return 0;
}
