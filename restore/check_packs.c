/*
 * check_packs.c - every pack `cbfs check` sees: the table of them (the
 * stored ones from the listing, then the missing ones the manifests
 * reference), their trailer indexes and, with --read-data, their blocks.
 *
 * Index reads and block reads run as parallel phases on --jobs threads
 * (this one included): a phase is a number of tasks, taken in turn by the
 * threads; each task writes only its own pack (index) or its own entries
 * (marks), and Check.lock guards the list of bad blocks of a pack.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/block.h"
#include "cbfs/codec.h"
#include "cbfs/pack.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cbfs/ratelimit.h"
#include "check.h"

#define RUN_MAX CBFS_BLOCK_RUN_MAX /* stored bytes read from a pack in one request */

/* ---------------------------------------------------------------- the table */

static uint64_t pack_hash(const char *name)
{
    uint64_t h = 0;
    for (int i = 0; i < 16 && name[i]; i++)
        h = h << 4 | (uint64_t) (name[i] <= '9' ? name[i] - '0' : name[i] - 'a' + 10);
    return h;
}

static void table_place(PackTable *t, size_t idx)
{
    size_t s = pack_hash(t->v[idx]->name) & (t->nslots - 1);
    while (t->slots[s])
        s = (s + 1) & (t->nslots - 1);
    t->slots[s] = idx + 1;
}

Pack *check_packs_find(const PackTable *t, const char *name)
{
    size_t s;
    if (!t->nslots)
        return NULL;
    for (s = pack_hash(name) & (t->nslots - 1); t->slots[s]; s = (s + 1) & (t->nslots - 1))
        if (strcmp(t->v[t->slots[s] - 1]->name, name) == 0)
            return t->v[t->slots[s] - 1];
    return NULL;
}

Pack *check_packs_add(PackTable *t, const char *name)
{
    Pack *p = cbfs_xcalloc(1, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    t->v = cbfs_xrealloc(t->v, (t->n + 1) * sizeof(Pack *));
    t->v[t->n++] = p;
    if (2 * t->n > t->nslots) {
        free(t->slots);
        t->nslots = t->nslots ? 2 * t->nslots : 1024;
        t->slots = cbfs_xcalloc(t->nslots, sizeof(size_t));
        for (size_t i = 0; i < t->n; i++)
            table_place(t, i);
    } else {
        table_place(t, t->n - 1);
    }
    return p;
}

void check_packs_release(PackTable *t)
{
    for (size_t i = 0; i < t->n; i++) {
        Pack *p = t->v[i];
        free(p->error);
        free(p->entries);
        free(p->marks);
        for (size_t k = 0; k < p->nbad; k++)
            free(p->bad[k].message);
        free(p->bad);
        free(p);
    }
    free(t->v);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

/* The index entry at offset, or -1. */
ssize_t check_pack_entry(const Pack *p, uint64_t offset)
{
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->entries[mid].offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < p->n && p->entries[lo].offset == offset ? (ssize_t) lo : -1;
}

const char *check_pack_bad_message(const Pack *p, size_t entry)
{
    for (size_t i = 0; i < p->nbad; i++)
        if (p->bad[i].entry == entry)
            return p->bad[i].message;
    return "block failed verification";
}

/* ---------------------------------------------------------------- listing */

static int pack_list_cb(const char *key, uint64_t size, void *ctx)
{
    Check *c = ctx;
    const char *name = strrchr(key, '/');
    char want[CBFS_PACK_NAME_LEN + 1];
    char *expect;
    Pack *p;

    if (!name || strlen(++name) != CBFS_PACK_NAME_LEN + 5 ||
        strcmp(name + CBFS_PACK_NAME_LEN, ".pack") != 0)
        return 0;
    snprintf(want, sizeof(want), "%.*s", CBFS_PACK_NAME_LEN, name);
    if (!cbfs_pack_name_valid(want))
        return 0;
    expect = cbfs_pack_key(want);
    if (strcmp(expect, key) == 0 && !check_packs_find(&c->packs, want)) {
        p = check_packs_add(&c->packs, want);
        p->stored = true;
        p->size = size;
    }
    free(expect);
    return 0;
}

int check_packs_list(Check *c, CbfsError *err)
{
    return cbfs_store_list(c->repo->store, "packs/", pack_list_cb, c, err);
}

/* ---------------------------------------------------------------- parallel tasks */

struct Worker {
    Check *c;
    pthread_t thread;
    CbfsCodec *codec; /* made on first use */
    uint8_t *run, *raw;
    size_t run_cap, raw_cap;
};

struct Run {
    Pack *pack;
    size_t first, count; /* entries */
    size_t len;          /* stored bytes */
};

static void *worker_main(void *arg)
{
    Worker *w = arg;
    Check *c = w->c;
    for (;;) {
        size_t i = __atomic_fetch_add(&c->next_task, 1, __ATOMIC_RELAXED);
        if (i >= c->ntasks || check_interrupted)
            break;
        c->task(w, i);
    }
    return NULL;
}

/* Run fn for tasks 0..n-1 on up to --jobs threads (this one included). */
static void run_tasks(Check *c, size_t n, task_fn fn)
{
    size_t nw = (size_t) c->jobs < n ? (size_t) c->jobs : n, started = 1;
    Worker *w;

    if (n == 0)
        return;
    c->task = fn;
    c->ntasks = n;
    c->next_task = 0;
    w = cbfs_xcalloc(nw, sizeof(Worker));
    for (size_t i = 0; i < nw; i++)
        w[i].c = c;
    for (; started < nw; started++)
        if (pthread_create(&w[started].thread, NULL, worker_main, &w[started]) != 0)
            break; /* fewer threads: the others take more tasks */
    worker_main(&w[0]);
    for (size_t i = 0; i < started; i++) {
        if (i > 0)
            pthread_join(w[i].thread, NULL);
        cbfs_codec_free(w[i].codec);
        free(w[i].run);
        free(w[i].raw);
    }
    free(w);
}

/* ---------------------------------------------------------------- pack indexes */

static int cmp_entry(const void *a, const void *b)
{
    const CbfsPackEntry *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static void load_task(Worker *w, size_t i)
{
    Check *c = w->c;
    Pack *p = c->load[i];
    CbfsError err;
    int rc;

    cbfs_error_init(&err);
    rc = cbfs_pack_read_index_sized(c->repo->store, c->repo->crypt, p->name, p->size, &p->entries,
                                    &p->n, &err);
    if (rc == 0) /* --max-rate holds what check reads, indexes too */
        cbfs_ratelimit_take(cbfs_ratelimit_global(),
                            (uint64_t) p->n * CBFS_PACK_ENTRY_LEN + CBFS_PACK_TRAILER_LEN);
    p->loaded = true;
    if (rc == -ENOENT) { /* gone since the listing */
        p->stored = false;
        return;
    }
    if (rc < 0) {
        p->entries = NULL;
        p->n = 0;
        p->error = cbfs_xstrdup(err.msg);
        return;
    }
    if (c->load_unused) { /* only its soundness was wanted */
        free(p->entries);
        p->entries = NULL;
        p->n = 0;
        return;
    }
    if (p->n > 1)
        qsort(p->entries, p->n, sizeof(CbfsPackEntry), cmp_entry);
    if (c->percent)
        p->marks = cbfs_xcalloc(p->n ? p->n : 1, 1);
}

/* Read the indexes of the stored packs among list that are not loaded yet. */
void check_packs_load_indexes(Check *c, Pack **list, size_t n, bool unused)
{
    size_t k = 0;
    c->load = cbfs_xcalloc(n ? n : 1, sizeof(Pack *));
    for (size_t i = 0; i < n; i++)
        if (list[i]->stored && !list[i]->loaded)
            c->load[k++] = list[i];
    c->load_unused = unused;
    run_tasks(c, k, load_task);
    free(c->load);
    c->load = NULL;
}

/* The packs no backup uses: their indexes must be sound too. */
void check_packs_unused(Check *c)
{
    Pack **list = cbfs_xcalloc(c->packs.n ? c->packs.n : 1, sizeof(Pack *));
    size_t n = 0;
    for (size_t i = 0; i < c->packs.n; i++)
        if (!c->packs.v[i]->used && c->packs.v[i]->stored)
            list[n++] = c->packs.v[i];
    check_packs_load_indexes(c, list, n, true);
    for (size_t i = 0; i < n; i++) {
        if (!list[i]->stored)
            continue; /* removed since the listing */
        c->unused_packs++;
        if (list[i]->error) {
            char *key = cbfs_pack_key(list[i]->name);
            check_problem_add(&c->pack_problems, K_BAD_PACK, key, NULL, -1,
                              "%s (no backup uses it)", list[i]->error);
            free(key);
        }
    }
    free(list);
}

/* ---------------------------------------------------------------- reading blocks */

static void mark_bad(Check *c, Pack *p, size_t entry, const char *msg)
{
    pthread_mutex_lock(&c->lock);
    p->marks[entry] |= MARK_BAD;
    p->bad = cbfs_xrealloc(p->bad, (p->nbad + 1) * sizeof(BadBlock));
    p->bad[p->nbad].entry = entry;
    p->bad[p->nbad++].message = cbfs_xstrdup(msg);
    pthread_mutex_unlock(&c->lock);
    __atomic_add_fetch(&c->bad_blocks, 1, __ATOMIC_RELAXED);
}

static void read_task(Worker *w, size_t i)
{
    Check *c = w->c;
    const Run *r = &c->runs[i];
    Pack *p = r->pack;
    const CbfsPackEntry *e0 = &p->entries[r->first];
    CbfsBlockRef *refs;
    CbfsError err;
    int rc;

    if (!w->codec)
        w->codec = cbfs_repo_codec_new(c->repo, 1); /* unlocked by cmd_check */
    if (r->len > w->run_cap) {
        w->run = cbfs_xrealloc(w->run, r->len);
        w->run_cap = r->len;
    }
    /* the blocks refs lead to, read as restore reads them (block.h) */
    refs = cbfs_xcalloc(r->count, sizeof(*refs));
    for (size_t k = 0; k < r->count; k++) {
        memcpy(refs[k].pack, p->name, sizeof(refs[k].pack));
        refs[k].offset = p->entries[r->first + k].offset;
        refs[k].stored_len = p->entries[r->first + k].stored_len;
    }
    cbfs_error_init(&err);
    cbfs_ratelimit_take(cbfs_ratelimit_global(), r->len);
    rc = cbfs_block_read_stored(c->repo->store, refs, r->count, w->run, NULL, &err);
    free(refs);
    for (size_t k = r->first; k < r->first + r->count; k++) {
        const CbfsPackEntry *e = &p->entries[k];
        p->marks[k] |= MARK_READ;
        if (rc < 0) {
            mark_bad(c, p, k, err.msg);
            continue;
        }
        if (e->raw_len > w->raw_cap) {
            w->raw = cbfs_xrealloc(w->raw, e->raw_len);
            w->raw_cap = e->raw_len;
        }
        cbfs_error_init(&err);
        if (cbfs_pack_decode_block(w->codec, p->name, e->offset, w->run + (e->offset - e0->offset),
                                   e->stored_len, e->raw_len, e->id, w->raw, &err) < 0) {
            mark_bad(c, p, k, err.msg);
            continue;
        }
        __atomic_add_fetch(&c->blocks_read, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&c->bytes_read, e->raw_len, __ATOMIC_RELAXED);
    }
}

/* Runs of selected, unread entries stored one after another, up to RUN_MAX. */
static size_t collect_runs(Check *c, Pack *p, size_t nruns)
{
    for (size_t i = 0; i < p->n;) {
        size_t j = i + 1, len = p->entries[i].stored_len;
        if ((p->marks[i] & (MARK_SELECTED | MARK_READ)) != MARK_SELECTED) {
            i++;
            continue;
        }
        while (j < p->n && (p->marks[j] & (MARK_SELECTED | MARK_READ)) == MARK_SELECTED &&
               p->entries[j].offset == p->entries[j - 1].offset + p->entries[j - 1].stored_len &&
               len + p->entries[j].stored_len <=
                   cbfs_ratelimit_chunk(cbfs_ratelimit_global(), RUN_MAX))
            len += p->entries[j++].stored_len;
        c->runs = cbfs_xrealloc(c->runs, (nruns + 1) * sizeof(Run));
        c->runs[nruns++] = (Run){p, i, j - i, len};
        i = j;
    }
    return nruns;
}

/* Read every selected block of b's packs that no earlier backup read. */
void check_packs_read_blocks(Check *c, Backup *b)
{
    size_t nruns = 0;
    for (size_t i = 0; i < b->npacks; i++)
        if (b->packs[i]->marks)
            nruns = collect_runs(c, b->packs[i], nruns);
    run_tasks(c, nruns, read_task);
    free(c->runs);
    c->runs = NULL;
}
