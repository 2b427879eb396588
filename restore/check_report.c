/*
 * check_report.c - what `cbfs check` found: the problems, as they are
 * recorded (of a backup, of the WAL, of the packs no backup uses), and the
 * report on stdout, human or JSON; both formats are described in check.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/json.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "check.h"

/* ---------------------------------------------------------------- problems */

/* By enum kind. */
static const char *const kind_names[K_COUNT] = {
    "bad-record",      "bad-manifest",    "bad-path",       "missing-pack",
    "bad-pack",        "bad-index-entry", "bad-block",      "wal-gap",
    "missing-history", "bad-history",     "unresolved-ref", "cluster-point",
};

Problem *check_problem_add(Problems *ps, enum kind k, const char *object, const char *file,
                           int64_t offset, const char *fmt, ...)
{
    Problem *p;
    va_list ap;
    char msg[2 * CBFS_ERROR_MSG_MAX];

    if ((k == K_BAD_PATH || k == K_BAD_INDEX_ENTRY || k == K_BAD_BLOCK) &&
        ps->per_kind[k] >= DETAIL_MAX) {
        ps->unlisted++;
        return NULL;
    }
    ps->per_kind[k]++;
    ps->v = cbfs_xrealloc(ps->v, (ps->n + 1) * sizeof(Problem));
    p = &ps->v[ps->n++];
    memset(p, 0, sizeof(*p));
    p->kind = k;
    p->object = object ? cbfs_xstrdup(object) : NULL;
    p->file = file ? cbfs_xstrdup(file) : NULL;
    p->offset = offset;
    p->pack_offset = -1;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* one line, whatever a library message held */
    for (char *c = msg; *c; c++)
        if (*c == '\n' || *c == '\r' || *c == '\t')
            *c = ' ';
    p->message = cbfs_xstrdup(msg);
    return p;
}

void check_problems_release(Problems *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        Problem *p = &ps->v[i];
        free(p->message);
        free(p->object);
        free(p->file);
        free(p->node);
        for (size_t k = 0; k < p->nrefs; k++)
            free(p->refs[k].file);
    }
    free(ps->v);
    memset(ps, 0, sizeof(*ps));
}

uint64_t check_problems_count(const Problems *ps)
{
    return ps->n + ps->unlisted;
}

uint64_t check_problems_total(const Check *c)
{
    uint64_t n = check_problems_count(&c->pack_problems);
    for (size_t k = 0; k < c->nnodes; k++) {
        n += check_problems_count(&c->nodes[k].wal.problems);
        for (size_t i = 0; i < c->nodes[k].nbackups; i++)
            n += check_problems_count(&c->nodes[k].backups[i].problems);
    }
    for (size_t i = 0; i < c->ncps; i++)
        n += check_problems_count(&c->cps[i].problems);
    return n;
}

const char *check_plural(uint64_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* ---------------------------------------------------------------- human output */

static void print_problems(const Problems *ps, const char *indent)
{
    for (size_t i = 0; i < ps->n; i++) {
        const Problem *p = &ps->v[i];
        printf("%s%s\n", indent, p->message);
        for (size_t k = 0; k < p->nrefs; k++)
            printf("%s    \"%s\" at offset %llu\n", indent, p->refs[k].file,
                   (unsigned long long) p->refs[k].offset);
        if (p->nblocks > p->nrefs)
            printf("%s    and %llu more\n", indent, (unsigned long long) (p->nblocks - p->nrefs));
    }
    if (ps->unlisted)
        printf("%sand %llu more %s not listed\n", indent, (unsigned long long) ps->unlisted,
               check_plural(ps->unlisted, "problem", "problems"));
}

static void print_backup(const Backup *b)
{
    uint64_t n = check_problems_count(&b->problems);
    printf("backup \"%s\": ", b->label);
    if (n == 0)
        printf("ok");
    else
        printf("%llu %s", (unsigned long long) n, check_plural(n, "problem", "problems"));
    if (b->manifest_read)
        printf(" (%llu files, %llu blocks, %zu packs)", (unsigned long long) b->files,
               (unsigned long long) b->blocks, b->npacks);
    printf("\n");
    print_problems(&b->problems, "  ");
}

static void print_wal(const Wal *w)
{
    printf("WAL: %llu %s", (unsigned long long) w->files, check_plural(w->files, "file", "files"));
    if (w->nseg_tlis) {
        printf(" on %s ", check_plural(w->nseg_tlis, "timeline", "timelines"));
        for (size_t i = 0; i < w->nseg_tlis; i++)
            printf("%s%u", i == 0 ? "" : ", ", w->seg_tlis[i]);
        printf(", newest %s", w->segs[w->nsegs - 1]);
    }
    if (w->ngaps)
        printf(", %zu %s (listed with the backups)", w->ngaps,
               check_plural(w->ngaps, "gap", "gaps"));
    printf("\n");
    print_problems(&w->problems, "  ");
}

typedef struct PackCounts {
    size_t stored, used, unused, missing;
} PackCounts;

static PackCounts pack_counts(const Check *c)
{
    PackCounts n = {0, 0, c->unused_packs, 0};
    for (size_t i = 0; i < c->packs.n; i++) {
        const Pack *p = c->packs.v[i];
        n.stored += p->stored;
        n.used += p->used;
        n.missing += p->used && !p->stored;
    }
    return n;
}

void check_report_print(const Check *c, double secs)
{
    uint64_t n = check_problems_total(c);
    size_t nbackups = 0;
    uint64_t wal_files = 0;
    for (size_t k = 0; k < c->nnodes; k++) {
        const NodeCheck *nc = &c->nodes[k];
        if (c->several)
            printf("node \"%s\":\n", nc->name);
        for (size_t i = 0; i < nc->nbackups; i++)
            print_backup(&nc->backups[i]);
        print_wal(&nc->wal);
        nbackups += nc->nbackups;
        wal_files += nc->wal.files;
    }
    for (size_t i = 0; i < c->ncps; i++) {
        uint64_t np = check_problems_count(&c->cps[i].problems);
        printf("cluster restore point \"%s\": %s\n", c->cps[i].name,
               np ? "NOT restorable" : "restorable on every node");
        print_problems(&c->cps[i].problems, "  ");
    }
    {
        PackCounts pc = pack_counts(c);
        if (c->only)
            printf("packs: %zu used by node %s's backups, %zu missing\n", pc.used, c->only,
                   pc.missing);
        else
            printf("packs: %zu stored, %zu used by backups, %zu used by none, %zu missing\n",
                   pc.stored, pc.used, pc.unused, pc.missing);
    }
    print_problems(&c->pack_problems, "  ");
    printf("checked %zu %s", nbackups, check_plural(nbackups, "backup", "backups"));
    if (c->several)
        printf(" of %zu %s", c->nnodes, check_plural(c->nnodes, "node", "nodes"));
    printf(", %zu %s, %llu WAL %s", c->packs.n, check_plural(c->packs.n, "pack", "packs"),
           (unsigned long long) wal_files, check_plural(wal_files, "file", "files"));
    if (c->percent) {
        char sz[32];
        cbfs_format_size(c->bytes_read, sz, sizeof(sz));
        printf(", read %llu %s (%s", (unsigned long long) c->blocks_read,
               check_plural(c->blocks_read, "block", "blocks"), sz);
        if (c->percent < 100)
            printf(", a %ld%% sample", c->percent);
        if (c->bad_blocks)
            printf(", %llu bad", (unsigned long long) c->bad_blocks);
        printf(")");
    }
    if (n == 0)
        printf(": no problems");
    else
        printf(": %llu %s", (unsigned long long) n, check_plural(n, "problem", "problems"));
    printf(" in %.1f s\n", secs);
}

/* ---------------------------------------------------------------- JSON output */

/* The keys a WAL gap has both as a problem and in the "wal.gaps" list. */
static void json_gap_range(CbfsJson *j, uint32_t tli, const char *from, const char *to, bool inside)
{
    cbfs_json_key(j, "timeline");
    cbfs_json_uint(j, tli);
    cbfs_json_key(j, "from");
    cbfs_json_string(j, from);
    cbfs_json_key(j, "to");
    cbfs_json_string(j, to);
    cbfs_json_key(j, "inside_backup");
    cbfs_json_bool(j, inside);
}

static void json_problem(CbfsJson *j, const Problem *p)
{
    cbfs_json_begin_object(j);
    cbfs_json_key(j, "kind");
    cbfs_json_string(j, kind_names[p->kind]);
    cbfs_json_key(j, "message");
    cbfs_json_string(j, p->message);
    cbfs_json_key(j, "object");
    cbfs_json_string(j, p->object);
    cbfs_json_key(j, "file");
    cbfs_json_string(j, p->file);
    cbfs_json_key(j, "offset");
    if (p->offset >= 0)
        cbfs_json_int(j, p->offset);
    else
        cbfs_json_string(j, NULL);
    if (p->kind == K_MISSING_PACK || p->kind == K_BAD_PACK || p->kind == K_UNRESOLVED_REF) {
        cbfs_json_key(j, "blocks");
        cbfs_json_uint(j, p->nblocks);
        cbfs_json_key(j, "refs");
        cbfs_json_begin_array(j);
        for (size_t k = 0; k < p->nrefs; k++) {
            cbfs_json_begin_object(j);
            cbfs_json_key(j, "file");
            cbfs_json_string(j, p->refs[k].file);
            cbfs_json_key(j, "offset");
            cbfs_json_uint(j, p->refs[k].offset);
            cbfs_json_end_object(j);
        }
        cbfs_json_end_array(j);
    } else if (p->pack_offset >= 0) {
        cbfs_json_key(j, "pack_offset");
        cbfs_json_int(j, p->pack_offset);
    } else if (p->kind == K_WAL_GAP) {
        json_gap_range(j, p->tli, p->from, p->to, p->inside);
    } else if (p->kind == K_CLUSTER_POINT) {
        cbfs_json_key(j, "node");
        cbfs_json_string(j, p->node);
    }
    cbfs_json_end_object(j);
}

static void json_problems(CbfsJson *j, const Problems *ps)
{
    cbfs_json_key(j, "problems");
    cbfs_json_begin_array(j);
    for (size_t i = 0; i < ps->n; i++)
        json_problem(j, &ps->v[i]);
    cbfs_json_end_array(j);
}

static void json_count(CbfsJson *j, const char *key, bool known, uint64_t v)
{
    cbfs_json_key(j, key);
    if (known)
        cbfs_json_uint(j, v);
    else
        cbfs_json_string(j, NULL);
}

static void json_backup(CbfsJson *j, const Backup *b, const char *node)
{
    cbfs_json_begin_object(j);
    cbfs_json_key(j, "label");
    cbfs_json_string(j, b->label);
    cbfs_json_key(j, "node");
    cbfs_json_string(j, node);
    cbfs_json_key(j, "ok");
    cbfs_json_bool(j, check_problems_count(&b->problems) == 0);
    json_count(j, "files", b->manifest_read, b->files);
    json_count(j, "blocks", b->manifest_read, b->blocks);
    json_count(j, "packs", b->manifest_read, b->npacks);
    json_problems(j, &b->problems);
    cbfs_json_key(j, "unlisted");
    cbfs_json_uint(j, b->problems.unlisted);
    cbfs_json_end_object(j);
}

static void json_wal(CbfsJson *j, const Wal *w)
{
    cbfs_json_key(j, "wal");
    cbfs_json_begin_object(j);
    cbfs_json_key(j, "files");
    cbfs_json_uint(j, w->files);
    cbfs_json_key(j, "timelines");
    cbfs_json_begin_array(j);
    for (size_t i = 0; i < w->nseg_tlis; i++)
        cbfs_json_uint(j, w->seg_tlis[i]);
    cbfs_json_end_array(j);
    cbfs_json_key(j, "newest");
    cbfs_json_string(j, w->nsegs ? w->segs[w->nsegs - 1] : NULL);
    cbfs_json_key(j, "gaps");
    cbfs_json_begin_array(j);
    for (size_t i = 0; i < w->ngaps; i++) {
        const Gap *g = &w->gaps[i];
        cbfs_json_begin_object(j);
        json_gap_range(j, g->tli, g->from, g->to, g->inside);
        cbfs_json_key(j, "backups");
        cbfs_json_begin_array(j);
        for (size_t k = 0; k < g->nlabels; k++)
            cbfs_json_string(j, g->labels[k]);
        cbfs_json_end_array(j);
        cbfs_json_end_object(j);
    }
    cbfs_json_end_array(j);
    json_problems(j, &w->problems);
    cbfs_json_end_object(j);
}

void check_report_json(const Check *c, double secs)
{
    CbfsJson j;
    uint64_t n = check_problems_total(c);

    cbfs_json_init(&j);
    cbfs_json_begin_object(&j);
    cbfs_json_key(&j, "repository");
    cbfs_json_string(&j, c->base->display);
    cbfs_json_key(&j, "ok");
    cbfs_json_bool(&j, n == 0);
    cbfs_json_key(&j, "duration_seconds");
    cbfs_json_double(&j, secs);
    cbfs_json_key(&j, "backups");
    cbfs_json_begin_array(&j);
    for (size_t k = 0; k < c->nnodes; k++)
        for (size_t i = 0; i < c->nodes[k].nbackups; i++)
            json_backup(&j, &c->nodes[k].backups[i], c->nodes[k].name);
    cbfs_json_end_array(&j);
    if (c->nnodes > 0)
        json_wal(&j, &c->nodes[0].wal);
    cbfs_json_key(&j, "nodes");
    cbfs_json_begin_array(&j);
    for (size_t k = 0; k < c->nnodes; k++) {
        bool ok = check_problems_count(&c->nodes[k].wal.problems) == 0;
        for (size_t i = 0; i < c->nodes[k].nbackups; i++)
            ok &= check_problems_count(&c->nodes[k].backups[i].problems) == 0;
        cbfs_json_begin_object(&j);
        cbfs_json_key(&j, "node");
        cbfs_json_string(&j, c->nodes[k].name);
        cbfs_json_key(&j, "ok");
        cbfs_json_bool(&j, ok);
        json_wal(&j, &c->nodes[k].wal);
        cbfs_json_end_object(&j);
    }
    cbfs_json_end_array(&j);
    cbfs_json_key(&j, "cluster_points");
    cbfs_json_begin_array(&j);
    for (size_t i = 0; i < c->ncps; i++) {
        cbfs_json_begin_object(&j);
        cbfs_json_key(&j, "name");
        cbfs_json_string(&j, c->cps[i].name);
        cbfs_json_key(&j, "restorable");
        cbfs_json_bool(&j, check_problems_count(&c->cps[i].problems) == 0);
        json_problems(&j, &c->cps[i].problems);
        cbfs_json_end_object(&j);
    }
    cbfs_json_end_array(&j);
    cbfs_json_key(&j, "packs");
    cbfs_json_begin_object(&j);
    {
        PackCounts pc = pack_counts(c);
        json_count(&j, "stored", true, pc.stored);
        json_count(&j, "used", true, pc.used);
        json_count(&j, "unused", true, pc.unused);
        json_count(&j, "missing", true, pc.missing);
    }
    json_problems(&j, &c->pack_problems);
    cbfs_json_end_object(&j);
    cbfs_json_key(&j, "read_data");
    if (c->percent) {
        cbfs_json_begin_object(&j);
        json_count(&j, "percent", true, (uint64_t) c->percent);
        json_count(&j, "blocks", true, c->blocks_read);
        json_count(&j, "bytes", true, c->bytes_read);
        json_count(&j, "bad_blocks", true, c->bad_blocks);
        cbfs_json_end_object(&j);
    } else {
        cbfs_json_string(&j, NULL);
    }
    json_count(&j, "problems", true, n);
    cbfs_json_end_object(&j);
    printf("%s\n", j.out.data);
    cbfs_json_release(&j);
}
