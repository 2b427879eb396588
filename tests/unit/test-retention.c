/*
 * test-retention.c - unit tests for lib/retention.c: which backups each
 * retention rule keeps, on a made-up history of 61 backups (one a day from
 * 2026-01-01 to 2026-03-01 at 02:00 UTC, and a second one on the last day at
 * 14:00), and the duration syntax of --keep-within.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cbfs/retention.h"
#include "cbfs/util.h"
#include "tap.h"

#define DAY      86400
#define T0       1767225600 /* 2026-01-01T00:00:00Z, a Thursday */
#define NHISTORY 61

static char labels[NHISTORY][8];
static CbfsRetainItem items[NHISTORY];

/* Items in a scrambled order, so that the decision does not rely on it. */
static void history(void)
{
    for (int i = 0; i < NHISTORY; i++) {
        int k = (i * 37) % NHISTORY; /* 37 is prime to 61: a permutation */
        if (k < 60) {
            snprintf(labels[i], sizeof(labels[i]), "d%02d", k);
            items[i].time = T0 + (time_t) k * DAY + 2 * 3600;
        } else {
            snprintf(labels[i], sizeof(labels[i]), "d59b");
            items[i].time = T0 + 59 * DAY + 14 * 3600;
        }
        items[i].label = labels[i];
        items[i].pinned = false;
        items[i].keep = 0;
    }
}

/* The labels kept, sorted, space-separated (static buffer). */
static const char *kept(void)
{
    static char buf[1024];
    const char *sorted[NHISTORY];
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < NHISTORY; i++)
        if (items[i].keep)
            sorted[n++] = items[i].label;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(sorted[j - 1], sorted[j]) > 0; j--) {
            const char *t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        strcat(buf, i ? " " : "");
        strcat(buf, sorted[i]);
    }
    return buf;
}

static unsigned keep_of(const char *label)
{
    for (int i = 0; i < NHISTORY; i++)
        if (strcmp(items[i].label, label) == 0)
            return items[i].keep;
    return ~0u;
}

static const char *apply(CbfsRetention p, time_t now)
{
    history();
    cbfs_retention_apply(&p, now, items, NHISTORY);
    return kept();
}

static void test_rules(void)
{
    time_t now = T0 + 59 * DAY + 15 * 3600;

    is_str(apply((CbfsRetention){.keep_last = 3}, now), "d58 d59 d59b", "last 3");
    ok(keep_of("d59b") == (CBFS_KEEP_NEWEST | CBFS_KEEP_LAST),
       "the newest is kept as newest and last");
    is_str(apply((CbfsRetention){.keep_within = 2 * DAY}, now), "d58 d59 d59b",
           "within 2 days (from day 57 15:00 on)");
    is_str(apply((CbfsRetention){.keep_daily = 3}, now), "d57 d58 d59b",
           "daily 3: the newest of each day, one per day");
    /* ISO weeks: 2026-02-23 (Mon) to 03-01 (Sun) holds d53..d59b; the one
     * before ends on 02-22, d52 */
    is_str(apply((CbfsRetention){.keep_weekly = 2}, now), "d52 d59b", "weekly 2: ISO weeks");
    is_str(apply((CbfsRetention){.keep_monthly = 3}, now), "d30 d58 d59b",
           "monthly 3: the last backup of March, February and January");
    is_str(apply((CbfsRetention){.keep_monthly = 12}, now), "d30 d58 d59b",
           "monthly 12: months without a backup do not count");
    is_str(apply((CbfsRetention){.keep_last = 1, .keep_daily = 2, .keep_monthly = 2}, now),
           "d58 d59b", "rules combine as a union");
    ok(keep_of("d58") == (CBFS_KEEP_DAILY | CBFS_KEEP_MONTHLY), "... with every reason recorded");
    apply((CbfsRetention){.keep_last = 100}, now);
    {
        int n = 0;
        for (int i = 0; i < NHISTORY; i++)
            n += items[i].keep != 0;
        is_int(n, NHISTORY, "last 100 keeps all 61");
    }
}

static void test_pinned_and_empty(void)
{
    CbfsRetention none = {0};
    time_t now = T0 + 70 * DAY;

    ok(cbfs_retention_empty(&none), "no rule: the policy is empty");
    ok(!cbfs_retention_empty(&(CbfsRetention){.keep_weekly = 1}), "a rule: not empty");
    history();
    for (int i = 0; i < NHISTORY; i++)
        items[i].pinned = strcmp(items[i].label, "d05") == 0;
    cbfs_retention_apply(&none, now, items, NHISTORY);
    is_str(kept(), "d05 d59b", "an empty policy keeps the newest and the pinned");
    is_int(keep_of("d05"), CBFS_KEEP_PINNED, "the pinned backup says why");
    cbfs_retention_apply(&(CbfsRetention){.keep_within = DAY}, now, items, NHISTORY);
    is_str(kept(), "d05 d59b", "within a day of a later now: only the newest and the pinned");
}

static void test_ties(void)
{
    CbfsRetainItem two[2] = {{.label = "b", .time = T0}, {.label = "a", .time = T0}};
    cbfs_retention_apply(&(CbfsRetention){.keep_last = 1}, T0, two, 2);
    ok(two[0].keep != 0 && two[1].keep == 0, "same time: the greater label is the newer");
    cbfs_retention_apply(&(CbfsRetention){.keep_last = 1}, T0, two, 0);
    ok(1, "no backups: nothing to decide");
}

static void test_reasons(void)
{
    char buf[128];
    cbfs_retention_reasons(CBFS_KEEP_NEWEST | CBFS_KEEP_DAILY | CBFS_KEEP_MONTHLY, buf,
                           sizeof(buf));
    is_str(buf, "newest, daily, monthly", "reasons are listed in rule order");
    cbfs_retention_reasons(0, buf, sizeof(buf));
    is_str(buf, "", "no reason: empty");
    cbfs_retention_reasons(0x7f, buf, 12);
    ok(strlen(buf) < 12, "a short buffer is not overrun");
}

static void test_durations(void)
{
    static const struct {
        const char *s;
        int64_t want;
    } good[] = {{"7d", 7 * DAY},  {"36h", 36 * 3600}, {"1d12h", DAY + 12 * 3600},
                {"2w", 14 * DAY}, {"90m", 5400},      {"45s", 45}};
    static const char *const bad[] = {"", "d", "7", "7x", "-1d", "0d", "1.5d", "d7", "7d ", "7D"};
    for (size_t i = 0; i < CBFS_ARRAY_LEN(good); i++) {
        int64_t v = -1;
        int rc = cbfs_parse_duration(good[i].s, &v);
        ok(rc == 0 && v == good[i].want, "duration \"%s\" is %lld s", good[i].s,
           (long long) good[i].want);
    }
    for (size_t i = 0; i < CBFS_ARRAY_LEN(bad); i++) {
        int64_t v = 0;
        is_int(cbfs_parse_duration(bad[i], &v), -EINVAL, "duration \"%s\" is refused", bad[i]);
    }
}

int main(void)
{
    test_rules();
    test_pinned_and_empty();
    test_ties();
    test_reasons();
    test_durations();
    return done_testing();
}
