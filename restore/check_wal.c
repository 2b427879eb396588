/*
 * check_wal.c - WAL continuity for `cbfs check`: the listing of wal/, the
 * timeline history files, and for each backup the segments it needs, from
 * its start to its stop on its timeline, then on to the newest archived
 * segment, following the history files to the newest timeline that
 * branched off the backup's timeline at or after its stop (see check.h).
 *
 * A gap is a problem of each backup that needs it, and is also kept once
 * per distinct range in Wal.gaps, with the labels of those backups.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "cbfs/walarchive.h"
#include "check.h"

/* A timeline with a history file. */
struct Timeline {
    uint32_t tli;
    CbfsTliSwitch *sw; /* its history: ancestors, oldest first */
    size_t n;
    bool parsed;
};

/* ---------------------------------------------------------------- listing */

static int cmp_seg(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int cmp_tl(const void *a, const void *b)
{
    const Timeline *x = a, *y = b;
    return x->tli < y->tli ? -1 : x->tli > y->tli;
}

static int wal_list_cb(const char *key, uint64_t size, void *ctx)
{
    Wal *w = ctx;
    const char *name = strrchr(key, '/') ? strrchr(key, '/') + 1 : key;
    char *expect = cbfs_wal_key(name);
    uint32_t tli;
    enum cbfs_wal_kind kind = cbfs_wal_classify(name, &tli);
    (void) size;

    if (!expect || strcmp(expect, key) != 0) { /* not a WAL object of ours */
        free(expect);
        return 0;
    }
    free(expect);
    w->files++;
    if (kind == CBFS_WAL_SEGMENT) {
        w->segs = cbfs_xrealloc(w->segs, (w->nsegs + 1) * sizeof(*w->segs));
        snprintf(w->segs[w->nsegs++], SEG_NAME_LEN, "%s", name);
    } else if (kind == CBFS_WAL_HISTORY) {
        w->tls = cbfs_xrealloc(w->tls, (w->ntls + 1) * sizeof(Timeline));
        w->tls[w->ntls++] = (Timeline){tli, NULL, 0, false};
    }
    return 0;
}

int check_wal_list(Check *c, CbfsError *err)
{
    Wal *w = &c->wal;
    int rc = cbfs_store_list(c->repo->store, "wal/", wal_list_cb, w, err);
    if (rc < 0)
        return rc;
    if (w->nsegs)
        qsort(w->segs, w->nsegs, sizeof(*w->segs), cmp_seg);
    if (w->ntls)
        qsort(w->tls, w->ntls, sizeof(Timeline), cmp_tl);
    for (size_t i = 0; i < w->nsegs; i++) {
        uint32_t tli;
        cbfs_wal_classify(w->segs[i], &tli);
        if (!w->nseg_tlis || w->seg_tlis[w->nseg_tlis - 1] != tli) {
            w->seg_tlis = cbfs_xrealloc(w->seg_tlis, (w->nseg_tlis + 1) * sizeof(uint32_t));
            w->seg_tlis[w->nseg_tlis++] = tli;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- WAL: timelines */

static Timeline *find_tl(Wal *w, uint32_t tli)
{
    for (size_t i = 0; i < w->ntls; i++)
        if (w->tls[i].tli == tli)
            return &w->tls[i];
    return NULL;
}

static void read_history(Check *c, Timeline *t)
{
    char name[CBFS_WAL_NAME_MAX], *key, *text;
    uint8_t *buf = NULL;
    size_t len = 0;
    CbfsError err;

    snprintf(name, sizeof(name), "%08X.history", t->tli);
    key = cbfs_wal_key(name);
    cbfs_error_init(&err);
    if (cbfs_wal_read(c->repo, name, &buf, &len, &err) < 0) {
        check_problem_add(&c->wal.problems, K_BAD_HISTORY, key, NULL, -1, "%s", err.msg);
        free(key);
        return;
    }
    text = cbfs_xmalloc(len + 1);
    memcpy(text, buf, len);
    text[len] = '\0';
    if (cbfs_wal_parse_history(text, &t->sw, &t->n) < 0 || t->n == 0 ||
        t->sw[t->n - 1].tli >= t->tli) {
        free(t->sw);
        t->sw = NULL;
        t->n = 0;
        check_problem_add(&c->wal.problems, K_BAD_HISTORY, key, NULL, -1,
                          "WAL history file \"%s\" is damaged: not the history of timeline %u", key,
                          t->tli);
    } else {
        t->parsed = true;
    }
    free(text);
    free(buf);
    free(key);
}

void check_wal_histories(Check *c)
{
    Wal *w = &c->wal;
    for (size_t i = 0; i < w->ntls && !check_interrupted; i++)
        read_history(c, &w->tls[i]);
    for (size_t i = 0; i < w->nseg_tlis; i++) {
        uint32_t tli = w->seg_tlis[i];
        if (tli > 1 && !find_tl(w, tli)) {
            char name[CBFS_WAL_NAME_MAX], *key;
            snprintf(name, sizeof(name), "%08X.history", tli);
            key = cbfs_wal_key(name);
            check_problem_add(&w->problems, K_MISSING_HISTORY, key, NULL, -1,
                              "WAL history file \"%s\" is missing (timeline %u has WAL files)", key,
                              tli);
            free(key);
        }
    }
}

/* One timeline of the way from a backup to the newest WAL: it starts at
 * begin (where it branched off its parent) and, unless it is the last,
 * ends at end (where its child branched off). */
typedef struct Hop {
    uint32_t tli;
    uint64_t begin, end;
    bool has_end;
} Hop;

/* The way from timeline tli at stop to the newest timeline that branched
 * off tli at or after stop (tli itself if none).  *ret: caller frees. */
static size_t timeline_path(Wal *w, uint32_t tli, uint64_t stop, Hop **ret)
{
    for (size_t i = w->ntls; i-- > 0;) {
        const Timeline *t = &w->tls[i];
        if (t->tli <= tli || !t->parsed)
            continue;
        for (size_t k = 0; k < t->n; k++) {
            if (t->sw[k].tli != tli || t->sw[k].end < stop)
                continue;
            /* ancestors k..n-1, then t itself */
            Hop *h = cbfs_xcalloc(t->n - k + 1, sizeof(Hop));
            for (size_t j = k; j < t->n; j++)
                h[j - k] = (Hop){t->sw[j].tli, j > k ? t->sw[j - 1].end : 0, t->sw[j].end, true};
            h[t->n - k] = (Hop){t->tli, t->sw[t->n - 1].end, 0, false};
            *ret = h;
            return t->n - k + 1;
        }
    }
    *ret = cbfs_xcalloc(1, sizeof(Hop));
    (*ret)[0] = (Hop){tli, 0, 0, false};
    return 1;
}

/* ---------------------------------------------------------------- WAL: segments */

/* Index of the first segment name >= name. */
static size_t seg_lower_bound(const Wal *w, const char *name)
{
    size_t lo = 0, hi = w->nsegs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(w->segs[mid], name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The newest segment number archived on tli: false if none. */
static bool newest_segno(const Wal *w, uint32_t tli, uint32_t seg_size, uint64_t *ret)
{
    char next[SEG_NAME_LEN];
    size_t i;
    if (tli == UINT32_MAX)
        return false;
    snprintf(next, sizeof(next), "%08X%016d", tli + 1, 0);
    for (i = seg_lower_bound(w, next); i-- > 0;) {
        uint32_t t;
        if (cbfs_wal_parse_segname(w->segs[i], seg_size, &t, ret) < 0)
            continue; /* a name another segment size would not make */
        return t == tli;
    }
    return false;
}

static void add_gap(Check *c, Backup *b, uint32_t tli, uint64_t from, uint64_t to,
                    uint32_t seg_size, bool inside)
{
    char f[SEG_NAME_LEN], t[SEG_NAME_LEN];
    Problem *p;
    Gap *g = NULL;

    cbfs_wal_segname(tli, from, seg_size, f, sizeof(f));
    cbfs_wal_segname(tli, to, seg_size, t, sizeof(t));
    if (from == to)
        p = check_problem_add(
            &b->problems, K_WAL_GAP, NULL, NULL, -1, "WAL missing: %s (timeline %u), %s \"%s\"", f,
            tli, inside ? "needed by backup" : "needed for recovery past backup", b->label);
    else
        p = check_problem_add(&b->problems, K_WAL_GAP, NULL, NULL, -1,
                              "WAL missing from %s to %s (timeline %u), %s \"%s\"", f, t, tli,
                              inside ? "needed by backup" : "needed for recovery past backup",
                              b->label);
    p->tli = tli;
    memcpy(p->from, f, sizeof(f));
    memcpy(p->to, t, sizeof(t));
    p->inside = inside;
    /* the grouped view */
    for (size_t i = 0; i < c->wal.ngaps && !g; i++)
        if (c->wal.gaps[i].tli == tli && c->wal.gaps[i].inside == inside &&
            strcmp(c->wal.gaps[i].from, f) == 0 && strcmp(c->wal.gaps[i].to, t) == 0)
            g = &c->wal.gaps[i];
    if (!g) {
        c->wal.gaps = cbfs_xrealloc(c->wal.gaps, (c->wal.ngaps + 1) * sizeof(Gap));
        g = &c->wal.gaps[c->wal.ngaps++];
        memset(g, 0, sizeof(*g));
        g->tli = tli;
        memcpy(g->from, f, sizeof(f));
        memcpy(g->to, t, sizeof(t));
        g->inside = inside;
    }
    g->labels = cbfs_xrealloc(g->labels, (g->nlabels + 1) * sizeof(char *));
    g->labels[g->nlabels++] = b->label;
}

/* Report the runs of segments lo..hi of tli that are not archived. */
static void find_gaps(Check *c, Backup *b, uint32_t tli, uint64_t lo, uint64_t hi,
                      uint32_t seg_size, bool inside)
{
    const Wal *w = &c->wal;
    char name[SEG_NAME_LEN];
    uint64_t expect = lo;

    cbfs_wal_segname(tli, lo, seg_size, name, sizeof(name));
    for (size_t i = seg_lower_bound(w, name); i < w->nsegs && expect <= hi; i++) {
        uint32_t t;
        uint64_t s;
        if (cbfs_wal_parse_segname(w->segs[i], seg_size, &t, &s) < 0)
            continue;
        if (t != tli || s > hi)
            break;
        if (s > expect)
            add_gap(c, b, tli, expect, s - 1, seg_size, inside);
        expect = s + 1;
    }
    if (expect <= hi)
        add_gap(c, b, tli, expect, hi, seg_size, inside);
}

typedef struct BackupWal {
    uint32_t tli, seg_size;
    uint64_t stop_lsn;
    uint64_t start_seg, stop_seg;
} BackupWal;

/* The WAL fields of b's record, or a bad-record problem. */
static bool backup_wal(Backup *b, BackupWal *bw)
{
    const char *ws = cbfs_kv_get(b->rec, "wal_start"), *we = cbfs_kv_get(b->rec, "wal_stop");
    const char *stop = cbfs_kv_get(b->rec, "stop_lsn");
    uint64_t tli = 0, seg_size = 0;
    uint32_t t1 = 0, t2 = 0;

    if (cbfs_kv_get_u64(b->rec, "timeline", &tli) < 0 || tli == 0 || tli > UINT32_MAX ||
        cbfs_kv_get_u64(b->rec, "wal_segment_size", &seg_size) < 0 || seg_size > UINT32_MAX ||
        !stop || cbfs_lsn_parse(stop, &bw->stop_lsn) < 0 || !ws || !we ||
        cbfs_wal_parse_segname(ws, (uint32_t) seg_size, &t1, &bw->start_seg) < 0 ||
        cbfs_wal_parse_segname(we, (uint32_t) seg_size, &t2, &bw->stop_seg) < 0 || t1 != tli ||
        t2 != tli || bw->start_seg > bw->stop_seg) {
        check_problem_add(&b->problems, K_BAD_RECORD, NULL, NULL, -1,
                          "backup record \"backups/%s.info\" has invalid WAL fields (timeline, "
                          "stop_lsn, wal_start, wal_stop, wal_segment_size)",
                          b->label);
        return false;
    }
    bw->tli = (uint32_t) tli;
    bw->seg_size = (uint32_t) seg_size;
    return true;
}

/* WAL continuity for one backup: start..stop, then on to the newest segment. */
void check_wal_backup(Check *c, Backup *b)
{
    BackupWal bw;
    Hop *path;
    size_t n;

    if (!b->rec || !backup_wal(b, &bw))
        return;
    find_gaps(c, b, bw.tli, bw.start_seg, bw.stop_seg, bw.seg_size, true);
    n = timeline_path(&c->wal, bw.tli, bw.stop_lsn, &path);
    for (size_t j = 0; j < n; j++) {
        uint64_t lo = j == 0 ? bw.stop_seg + 1 : cbfs_wal_segno(path[j].begin, bw.seg_size);
        uint64_t end_seg, hi;
        if (path[j].has_end) {
            /* the segment holding the switch is the child's; the parent's is .partial */
            end_seg = cbfs_wal_segno(path[j].end, bw.seg_size);
            if (end_seg == 0)
                continue;
            hi = end_seg - 1;
        } else if (!newest_segno(&c->wal, path[j].tli, bw.seg_size, &hi)) {
            continue;
        }
        if (hi >= lo)
            find_gaps(c, b, path[j].tli, lo, hi, bw.seg_size, false);
    }
    free(path);
}

void check_wal_release(Wal *w)
{
    free(w->segs);
    for (size_t i = 0; i < w->ntls; i++)
        free(w->tls[i].sw);
    free(w->tls);
    free(w->seg_tlis);
    for (size_t i = 0; i < w->ngaps; i++)
        free(w->gaps[i].labels);
    free(w->gaps);
    check_problems_release(&w->problems);
}
