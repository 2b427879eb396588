/*
 * check.c - `cbfs check REPO [--read-data [PERCENT]] [--jobs N] [--json]
 * [--metrics-file FILE]`: is the repository whole?  Everything wrong is
 * reported, grouped by backup, not just the first problem.
 *
 * What is checked:
 *   - every backup record can be read; its manifest exists, matches the
 *     record's SHA-256 and passes SQLite's quick_check; every path in it is
 *     one a restore would accept (cbfs_manifest_path_valid);
 *   - every block the manifest references lies in a stored pack whose
 *     trailer index is sound (read once per pack, whatever the number of
 *     backups sharing it; the listed object size must be the one the
 *     trailer implies) and lists the same id, offset and lengths;
 *   - the trailer index of every stored pack no backup uses;
 *   - WAL: every segment from the backup's start to its stop on its
 *     timeline ("needed by backup": without it the backup cannot be
 *     restored), then every segment from there on to the newest archived
 *     one, following the timeline history files to the newest timeline
 *     that branched off the backup's timeline at or after its stop ("needed
 *     for recovery past backup": recovery stops there); every timeline
 *     above 1 that has WAL files has a readable history file;
 *   - with --read-data, every distinct block referenced (or each with
 *     probability PERCENT/100, decided once per block): read, decompressed
 *     and hashed against its id, blocks stored one after another in one
 *     ranged read of up to 8 MiB.  A block that fails is reported for every
 *     backup, file and offset that references it.  Blocks of missing packs,
 *     of packs whose index is damaged, and refs the index does not list are
 *     not read: they are reported already.
 *
 * Each manifest is walked in pack order: once for the packs it uses (whose
 * indexes not read yet are then read in parallel), once to check every ref
 * against its pack's index (choosing the blocks to read), and, only when a
 * block read for it failed, once more to name every ref to a bad block.
 *
 * A WAL gap is reported once per backup that needs it, as that backup's
 * problem (kind "wal-gap"); the JSON "wal.gaps" list shows the same gaps
 * grouped: each distinct range once, with every backup that needs it.
 * The problem count is the number of problems of every backup plus the
 * repository's own (WAL history files, packs no backup uses).  Of one kind
 * of problem (bad-path, bad-index-entry, bad-block), at most 100 are listed
 * per backup; the rest are counted ("unlisted").  "Used" packs are those
 * the manifests that could be read reference.
 *
 * Human output (stdout):
 *   backup "b1": ok (1021 files, 2688 blocks, 3 packs)
 *   backup "b2": 2 problems (1030 files, 2702 blocks, 4 packs)
 *     pack "packs/3f/3f….pack" is missing; it holds 37 blocks of the backup
 *         "PG_VERSION" at offset 0
 *         … (the first 10 refs, in pack order)
 *         and 27 more
 *     file "base/5/16385" at offset 65536: pack "packs/…" offset 8192: block … is corrupt: …
 *     WAL missing from 000000010000000000000005 to 000000010000000000000007 (timeline 1),
 *       needed by backup "b2"                                           (one line)
 *   WAL: 12 files on timeline 1, newest 00000001000000000000000C, 1 gap (listed with the backups)
 *     WAL history file "wal/00000002/00000002.history" is missing (timeline 2 has WAL files)
 *   packs: 5 stored, 4 used by backups, 1 used by none, 1 missing
 *   checked 2 backups, 6 packs, 12 WAL files, read 2702 blocks (160.2 MB): 3 problems in 1.3 s
 * A single missing segment reads "WAL missing: SEGMENT (timeline N), ..."; a
 * gap past the backup's stop "..., needed for recovery past backup "b1"".
 * On stderr, when something is wrong: cbfs: repository "R" has 3 problems
 *
 * JSON output (--json), one object:
 *   {"repository": "R", "ok": bool, "duration_seconds": 1.234,
 *    "backups": [{"label": "b1", "ok": bool,
 *                 "files": N|null, "blocks": N|null, "packs": N|null,  (null: manifest unread)
 *                 "problems": [PROBLEM...], "unlisted": N}],
 *    "wal": {"files": N, "timelines": [1, 2], "newest": "segment"|null,
 *            "gaps": [{"timeline": 1, "from": "segment", "to": "segment",
 *                      "inside_backup": bool, "backups": ["b1", ...]}],
 *            "problems": [PROBLEM...]},
 *    "packs": {"stored": N, "used": N, "unused": N, "missing": N,
 *              "problems": [PROBLEM...]},  (unused: stored, no backup uses it)
 *    "read_data": {"percent": 1-100, "blocks": N, "bytes": N, "bad_blocks": N} | null,
 *    "problems": N}
 *   PROBLEM: {"kind": K, "message": "one line", "object": "repository key"|null,
 *             "file": "path in the backup"|null, "offset": N|null, ...}
 *   K is one of bad-record, bad-manifest, bad-path, missing-pack, bad-pack,
 *   bad-index-entry, bad-block, wal-gap, missing-history, bad-history.
 *   Extra keys: missing-pack and bad-pack: "blocks" (refs of the backup in
 *   that pack), "refs": [{"file", "offset"}] (the first 10); bad-index-entry
 *   and bad-block: "pack_offset"; wal-gap: "timeline", "from", "to",
 *   "inside_backup" (true: between the backup's start and stop).
 *
 * Exit: 0 nothing wrong, 5 problems found, 3 repository cannot be opened,
 * 2 usage, 1 another failure (listing the repository, interrupted).
 *
 * Memory: the trailer indexes of the packs referenced stay in memory (49
 * bytes per stored block: about 0.8 MB per GB stored at 64 KiB blocks);
 * manifests are fetched one at a time into a private temp directory.
 *
 * Threads: the main thread walks manifests and records problems; index
 * reads and block reads run on --jobs threads, each task writing only its
 * own pack (index) or its own entries (marks); Check.lock guards the list
 * of bad blocks of a pack.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbfs/codec.h"
#include "cbfs/json.h"
#include "cbfs/log.h"
#include "cbfs/manifest.h"
#include "cbfs/pack.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "cbfs/walarchive.h"
#include "commands.h"
#include "metrics.h"

#define RUN_MAX        (8u << 20) /* stored bytes read from a pack in one request */
#define DETAIL_MAX     100        /* problems of one kind listed per backup */
#define REF_DETAIL_MAX 10         /* refs listed for a missing or damaged pack */
#define SEG_NAME_LEN   25         /* a segment name and its NUL */

/* ---------------------------------------------------------------- problems */

enum kind {
    K_BAD_RECORD,
    K_BAD_MANIFEST,
    K_BAD_PATH,
    K_MISSING_PACK,
    K_BAD_PACK,
    K_BAD_INDEX_ENTRY,
    K_BAD_BLOCK,
    K_WAL_GAP,
    K_MISSING_HISTORY,
    K_BAD_HISTORY,
    K_COUNT
};

static const char *const kind_names[K_COUNT] = {
    "bad-record",      "bad-manifest", "bad-path", "missing-pack",    "bad-pack",
    "bad-index-entry", "bad-block",    "wal-gap",  "missing-history", "bad-history",
};

typedef struct Ref {
    char *file;
    uint64_t offset;
} Ref;

typedef struct Problem {
    enum kind kind;
    char *message;            /* one line, PostgreSQL style */
    char *object;             /* a repository key, or NULL */
    char *file;               /* a path in the backup, or NULL */
    int64_t offset;           /* byte offset in file, -1 if none */
    int64_t pack_offset;      /* bad-index-entry, bad-block; else -1 */
    Ref refs[REF_DETAIL_MAX]; /* missing-pack, bad-pack: the first refs */
    size_t nrefs;
    uint64_t nblocks; /* missing-pack, bad-pack: refs of the backup in the pack */
    uint32_t tli;     /* wal-gap */
    char from[SEG_NAME_LEN], to[SEG_NAME_LEN];
    bool inside;
} Problem;

typedef struct Problems {
    Problem *v;
    size_t n;
    size_t per_kind[K_COUNT];
    uint64_t unlisted; /* past DETAIL_MAX of one kind: counted only */
} Problems;

/* Add a problem; NULL (and counted as unlisted) when its kind already has
 * DETAIL_MAX entries listed. */
__attribute__((format(printf, 6, 7))) static Problem *problem_add(Problems *ps, enum kind k,
                                                                  const char *object,
                                                                  const char *file, int64_t offset,
                                                                  const char *fmt, ...)
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

static void problems_release(Problems *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        Problem *p = &ps->v[i];
        free(p->message);
        free(p->object);
        free(p->file);
        for (size_t k = 0; k < p->nrefs; k++)
            free(p->refs[k].file);
    }
    free(ps->v);
    memset(ps, 0, sizeof(*ps));
}

static uint64_t problems_count(const Problems *ps)
{
    return ps->n + ps->unlisted;
}

/* ---------------------------------------------------------------- packs */

enum mark {
    MARK_DECIDED = 1,  /* --read-data sampling has decided about the block */
    MARK_SELECTED = 2, /* to be read */
    MARK_READ = 4,     /* read (or tried) */
    MARK_BAD = 8,      /* failed: message in Pack.bad */
};

typedef struct BadBlock {
    size_t entry;
    char *message;
} BadBlock;

typedef struct Pack {
    char name[CBFS_PACK_NAME_LEN + 1];
    uint64_t size;          /* object size from the listing */
    bool stored;            /* listed under packs/ */
    bool used;              /* referenced by a backup */
    bool loaded;            /* index read, or error set */
    char *error;            /* the index could not be read: why */
    CbfsPackEntry *entries; /* by offset */
    size_t n;
    uint8_t *marks; /* per entry, enum mark (with --read-data) */
    BadBlock *bad;  /* under Check.lock while blocks are read */
    size_t nbad;
} Pack;

/* Every pack seen: the stored ones, then referenced ones that are missing.
 * Open addressing on the name's first 16 hex digits (random). */
typedef struct PackTable {
    Pack **v;
    size_t n;
    size_t *slots; /* index + 1 into v; 0 is empty */
    size_t nslots; /* a power of two, at least twice n */
} PackTable;

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

static Pack *table_find(const PackTable *t, const char *name)
{
    size_t s;
    if (!t->nslots)
        return NULL;
    for (s = pack_hash(name) & (t->nslots - 1); t->slots[s]; s = (s + 1) & (t->nslots - 1))
        if (strcmp(t->v[t->slots[s] - 1]->name, name) == 0)
            return t->v[t->slots[s] - 1];
    return NULL;
}

static Pack *table_add(PackTable *t, const char *name)
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

static void table_release(PackTable *t)
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
static ssize_t pack_entry(const Pack *p, uint64_t offset)
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

static const char *pack_bad_message(const Pack *p, size_t entry)
{
    for (size_t i = 0; i < p->nbad; i++)
        if (p->bad[i].entry == entry)
            return p->bad[i].message;
    return "block failed verification";
}

/* ---------------------------------------------------------------- state */

typedef struct Backup {
    char *label;
    CbfsKv *rec;         /* NULL when the record could not be read */
    uint64_t stop_lsn;   /* for the order (0 if unknown) */
    uint32_t block_size; /* for file offsets */
    bool manifest_read;
    uint64_t files, blocks;
    Pack **packs; /* the distinct packs it references */
    size_t npacks;
    Problems problems;
} Backup;

typedef struct Timeline {
    uint32_t tli;
    CbfsTliSwitch *sw; /* its history: ancestors, oldest first */
    size_t n;
    bool parsed;
} Timeline;

typedef struct Gap {
    uint32_t tli;
    char from[SEG_NAME_LEN], to[SEG_NAME_LEN];
    bool inside;
    const char **labels; /* borrowed from the backups */
    size_t nlabels;
} Gap;

typedef struct Wal {
    char (*segs)[SEG_NAME_LEN]; /* every segment name, sorted */
    size_t nsegs;
    Timeline *tls; /* timelines with a history file, ascending */
    size_t ntls;
    uint32_t *seg_tlis; /* timelines with segments, ascending, distinct */
    size_t nseg_tlis;
    uint64_t files; /* every WAL object */
    Problems problems;
    Gap *gaps;
    size_t ngaps;
} Wal;

typedef struct Check Check;
typedef struct Worker Worker;
typedef void (*task_fn)(Worker *w, size_t i);

struct Worker {
    Check *c;
    pthread_t thread;
    CbfsCodec *codec; /* made on first use */
    uint8_t *run, *raw;
    size_t run_cap, raw_cap;
};

typedef struct Run {
    Pack *pack;
    size_t first, count; /* entries */
    size_t len;          /* stored bytes */
} Run;

struct Check {
    CbfsRepo *repo;
    long jobs;
    long percent; /* --read-data: 0 off, else 1..100 */
    char *tmpdir;
    Backup *backups;
    size_t nbackups;
    PackTable packs;
    Problems pack_problems; /* packs no backup uses */
    size_t unused_packs;
    Wal wal;
    uint64_t rng;
    /* a parallel phase */
    task_fn task;
    size_t ntasks;
    size_t next_task; /* atomic */
    Pack **load;      /* index reads */
    bool load_unused;
    Run *runs; /* block reads */
    /* --read-data totals, atomic */
    uint64_t blocks_read, bytes_read, bad_blocks;
    pthread_mutex_t lock;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void) sig;
    interrupted = 1;
}

/* ---------------------------------------------------------------- parallel tasks */

static void *worker_main(void *arg)
{
    Worker *w = arg;
    Check *c = w->c;
    for (;;) {
        size_t i = __atomic_fetch_add(&c->next_task, 1, __ATOMIC_RELAXED);
        if (i >= c->ntasks || interrupted)
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
    rc = cbfs_pack_read_index_sized(c->repo->store, p->name, p->size, &p->entries, &p->n, &err);
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
    qsort(p->entries, p->n, sizeof(CbfsPackEntry), cmp_entry);
    if (c->percent)
        p->marks = cbfs_xcalloc(p->n ? p->n : 1, 1);
}

/* Read the indexes of the stored packs among list that are not loaded yet. */
static void load_indexes(Check *c, Pack **list, size_t n, bool unused)
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
    CbfsError err;
    int rc;

    if (!w->codec)
        w->codec = cbfs_codec_new(1);
    if (r->len > w->run_cap) {
        w->run = cbfs_xrealloc(w->run, r->len);
        w->run_cap = r->len;
    }
    cbfs_error_init(&err);
    rc = cbfs_pack_read_run(c->repo->store, p->name, e0->offset, r->len, w->run, &err);
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
               len + p->entries[j].stored_len <= RUN_MAX)
            len += p->entries[j++].stored_len;
        c->runs = cbfs_xrealloc(c->runs, (nruns + 1) * sizeof(Run));
        c->runs[nruns++] = (Run){p, i, j - i, len};
        i = j;
    }
    return nruns;
}

/* Read every selected block of b's packs that no earlier backup read. */
static void read_blocks(Check *c, Backup *b)
{
    size_t nruns = 0;
    for (size_t i = 0; i < b->npacks; i++)
        if (b->packs[i]->marks)
            nruns = collect_runs(c, b->packs[i], nruns);
    run_tasks(c, nruns, read_task);
    free(c->runs);
    c->runs = NULL;
}

/* ---------------------------------------------------------------- one backup */

/* err's message with the local manifest path replaced by its object key. */
static const char *manifest_message(CbfsError *err, const char *local, const char *key)
{
    char *at = local ? strstr(err->msg, local) : NULL;
    if (at) {
        char rest[CBFS_ERROR_MSG_MAX];
        snprintf(rest, sizeof(rest), "%s", at + strlen(local));
        snprintf(at, sizeof(err->msg) - (size_t) (at - err->msg), "%s%s", key, rest);
    }
    return err->msg;
}

typedef struct Scan {
    Check *c;
    Backup *b;
    Pack *pack;    /* of the previous ref */
    ssize_t group; /* index of the missing-pack/bad-pack problem of that pack, or -1 */
} Scan;

static int path_cb(const CbfsFileEntry *f, void *ctx)
{
    Backup *b = ctx;
    b->files++;
    if (!cbfs_manifest_path_valid(f->path))
        problem_add(&b->problems, K_BAD_PATH, NULL, f->path, -1,
                    "the manifest names an invalid path \"%s\"", f->path);
    return interrupted ? 1 : 0;
}

/* The pack of a ref; true when it is not the previous ref's.  A pack the
 * listing did not show is added as missing. */
static bool scan_pack(Scan *s, const char *name)
{
    if (s->pack && strcmp(s->pack->name, name) == 0)
        return false;
    s->pack = table_find(&s->c->packs, name);
    if (!s->pack)
        s->pack = table_add(&s->c->packs, name);
    s->group = -1;
    return true;
}

/* First walk: the distinct packs b references (refs come in pack order),
 * and its block count. */
static int collect_cb(const CbfsBlockRef *ref, const char *path, void *ctx)
{
    Scan *s = ctx;
    Backup *b = s->b;
    (void) path;
    b->blocks++;
    if (scan_pack(s, ref->pack)) {
        s->pack->used = true;
        b->packs = cbfs_xrealloc(b->packs, (b->npacks + 1) * sizeof(Pack *));
        b->packs[b->npacks++] = s->pack;
    }
    return interrupted ? 1 : 0;
}

/* A ref into a pack that is missing or whose index is unreadable: one
 * problem per pack, listing the first refs. */
static void group_ref(Scan *s, Pack *p, const CbfsBlockRef *ref, const char *path)
{
    Backup *b = s->b;
    Problem *g;
    if (s->group < 0) {
        char *key = cbfs_pack_key(p->name);
        if (p->stored)
            g = problem_add(&b->problems, K_BAD_PACK, key, NULL, -1, "%s", p->error);
        else
            g = problem_add(&b->problems, K_MISSING_PACK, key, NULL, -1, "pack \"%s\" is missing",
                            key);
        free(key);
        s->group = (ssize_t) (g - b->problems.v);
    }
    g = &b->problems.v[s->group];
    if (g->nrefs < REF_DETAIL_MAX) {
        g->refs[g->nrefs].file = cbfs_xstrdup(path);
        g->refs[g->nrefs++].offset = ref->blockno * b->block_size;
    }
    g->nblocks++;
}

static uint64_t next_random(Check *c)
{
    /* xorshift64*: plenty for sampling */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * UINT64_C(2685821657736338717);
}

/* Second walk: every ref against its pack's index; picks blocks to read. */
static int verify_cb(const CbfsBlockRef *ref, const char *path, void *ctx)
{
    Scan *s = ctx;
    Check *c = s->c;
    Pack *p;
    ssize_t e;

    scan_pack(s, ref->pack);
    p = s->pack;
    if (!p->stored || p->error) {
        group_ref(s, p, ref, path);
        return interrupted ? 1 : 0;
    }
    e = pack_entry(p, ref->offset);
    if (e < 0 || memcmp(p->entries[e].id, ref->id, CBFS_BLOCK_ID_LEN) != 0 ||
        p->entries[e].stored_len != ref->stored_len || p->entries[e].raw_len != ref->raw_len) {
        char *key = cbfs_pack_key(p->name);
        uint64_t off = ref->blockno * s->b->block_size;
        Problem *pr = problem_add(&s->b->problems, K_BAD_INDEX_ENTRY, key, path, (int64_t) off,
                                  "file \"%s\" at offset %llu: %s at offset %llu of pack \"%s\"",
                                  path, (unsigned long long) off,
                                  e < 0 ? "no block is indexed" : "another block is indexed",
                                  (unsigned long long) ref->offset, key);
        if (pr)
            pr->pack_offset = (int64_t) ref->offset;
        free(key);
    } else if (p->marks && !(p->marks[e] & MARK_DECIDED)) {
        p->marks[e] |= MARK_DECIDED;
        if (c->percent >= 100 || (long) (next_random(c) % 100) < c->percent)
            p->marks[e] |= MARK_SELECTED;
    }
    return interrupted ? 1 : 0;
}

/* Third walk, when a pack of b has bad blocks: every ref to one. */
static int bad_block_cb(const CbfsBlockRef *ref, const char *path, void *ctx)
{
    Scan *s = ctx;
    Pack *p;
    ssize_t e;

    scan_pack(s, ref->pack);
    p = s->pack;
    if (!p->nbad || (e = pack_entry(p, ref->offset)) < 0 || !(p->marks[e] & MARK_BAD) ||
        memcmp(p->entries[e].id, ref->id, CBFS_BLOCK_ID_LEN) != 0)
        return interrupted ? 1 : 0;
    {
        char *key = cbfs_pack_key(p->name);
        uint64_t off = ref->blockno * s->b->block_size;
        Problem *pr = problem_add(&s->b->problems, K_BAD_BLOCK, key, path, (int64_t) off,
                                  "file \"%s\" at offset %llu: %s", path, (unsigned long long) off,
                                  pack_bad_message(p, (size_t) e));
        if (pr)
            pr->pack_offset = (int64_t) ref->offset;
        free(key);
    }
    return interrupted ? 1 : 0;
}

static void finish_groups(Backup *b)
{
    for (size_t i = 0; i < b->problems.n; i++) {
        Problem *p = &b->problems.v[i];
        if (p->kind == K_MISSING_PACK || p->kind == K_BAD_PACK) {
            char *m = cbfs_xasprintf("%s; it holds %llu block%s of the backup", p->message,
                                     (unsigned long long) p->nblocks, p->nblocks == 1 ? "" : "s");
            free(p->message);
            p->message = m;
        }
    }
}

static bool has_bad_blocks(const Backup *b)
{
    for (size_t i = 0; i < b->npacks; i++)
        if (b->packs[i]->nbad)
            return true;
    return false;
}

/* The block checks of a manifest that opened and passed quick_check. */
static void check_blocks(Check *c, Backup *b, CbfsManifest *m, const char *local, const char *key)
{
    Scan s = {c, b, NULL, -1};
    CbfsError err;
    int rc;

    cbfs_error_init(&err);
    rc = cbfs_manifest_foreach_block(m, collect_cb, &s, &err);
    if (rc < 0) {
        problem_add(&b->problems, K_BAD_MANIFEST, key, NULL, -1, "%s",
                    manifest_message(&err, local, key));
        return;
    }
    if (rc > 0)
        return; /* interrupted */
    load_indexes(c, b->packs, b->npacks, false);
    s.pack = NULL;
    rc = cbfs_manifest_foreach_block(m, verify_cb, &s, &err);
    finish_groups(b);
    if (rc < 0)
        problem_add(&b->problems, K_BAD_MANIFEST, key, NULL, -1, "%s",
                    manifest_message(&err, local, key));
    if (rc != 0 || !c->percent)
        return;
    read_blocks(c, b);
    if (has_bad_blocks(b) && !interrupted) {
        s.pack = NULL;
        cbfs_manifest_foreach_block(m, bad_block_cb, &s, &err);
    }
}

static void check_backup(Check *c, Backup *b)
{
    const char *key = cbfs_kv_get(b->rec, "manifest");
    char *local = NULL;
    CbfsManifest *m = NULL;
    CbfsError err;

    cbfs_error_init(&err);
    if (cbfs_repo_fetch_manifest(c->repo, b->rec, c->tmpdir, &local, &err) < 0 ||
        cbfs_manifest_open(local, &m, &err) < 0 || cbfs_manifest_quick_check(m, &err) < 0) {
        problem_add(&b->problems, K_BAD_MANIFEST, key, NULL, -1, "%s",
                    manifest_message(&err, local, key ? key : "?"));
        goto out;
    }
    b->manifest_read = true;
    if (cbfs_manifest_foreach_file(m, path_cb, b, &err) < 0) {
        problem_add(&b->problems, K_BAD_MANIFEST, key, NULL, -1, "%s",
                    manifest_message(&err, local, key));
        goto out;
    }
    if (!interrupted)
        check_blocks(c, b, m, local, key);
out:
    cbfs_manifest_free(m);
    if (local)
        unlink(local);
    free(local);
}

/* ---------------------------------------------------------------- backup records */

typedef struct Labels {
    char **v;
    size_t n;
} Labels;

static int label_cb(const char *key, uint64_t size, void *ctx)
{
    Labels *l = ctx;
    const char *name = key + strlen("backups/");
    size_t n = strlen(name);
    (void) size;
    if (n > 5 && strcmp(name + n - 5, ".info") == 0 && !strchr(name, '/')) {
        l->v = cbfs_xrealloc(l->v, (l->n + 1) * sizeof(char *));
        l->v[l->n++] = cbfs_xasprintf("%.*s", (int) (n - 5), name);
    }
    return 0;
}

/* Oldest first, as cbfs list shows them: by stop LSN, then label. */
static int cmp_backup(const void *a, const void *b)
{
    const Backup *x = a, *y = b;
    if (x->stop_lsn != y->stop_lsn)
        return x->stop_lsn < y->stop_lsn ? -1 : 1;
    return strcmp(x->label, y->label);
}

/* Every record under backups/; one that cannot be read is that backup's
 * problem (cbfs_repo_list_backups would fail as a whole). */
static int read_backups(Check *c, CbfsError *err)
{
    Labels l = {0};
    int rc = cbfs_store_list(c->repo->store, "backups/", label_cb, &l, err);

    c->backups = cbfs_xcalloc(l.n ? l.n : 1, sizeof(Backup));
    for (size_t i = 0; i < l.n; i++) {
        Backup *b = &c->backups[c->nbackups];
        CbfsError rerr;
        uint64_t bs;
        int r;
        cbfs_error_init(&rerr);
        r = rc < 0 ? -ENOENT : cbfs_repo_read_backup(c->repo, l.v[i], &b->rec, &rerr);
        if (r == -ENOENT) { /* not a valid label, or gone */
            free(l.v[i]);
            continue;
        }
        b->label = l.v[i];
        c->nbackups++;
        if (r < 0) {
            b->rec = NULL;
            problem_add(&b->problems, K_BAD_RECORD, NULL, NULL, -1, "%s", rerr.msg);
            continue;
        }
        if (cbfs_kv_get(b->rec, "stop_lsn"))
            cbfs_lsn_parse(cbfs_kv_get(b->rec, "stop_lsn"), &b->stop_lsn);
        b->block_size = c->repo->block_size;
        if (cbfs_kv_get_u64(b->rec, "block_size", &bs) == 0 && bs >= 8192 && bs % 8192 == 0 &&
            bs <= (1u << 20))
            b->block_size = (uint32_t) bs;
    }
    free(l.v);
    if (rc == 0 && c->nbackups)
        qsort(c->backups, c->nbackups, sizeof(Backup), cmp_backup);
    return rc;
}

/* ---------------------------------------------------------------- listings */

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
    if (strcmp(expect, key) == 0 && !table_find(&c->packs, want)) {
        p = table_add(&c->packs, want);
        p->stored = true;
        p->size = size;
    }
    free(expect);
    return 0;
}

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

static int list_wal(Check *c, CbfsError *err)
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
        problem_add(&c->wal.problems, K_BAD_HISTORY, key, NULL, -1, "%s", err.msg);
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
        problem_add(&c->wal.problems, K_BAD_HISTORY, key, NULL, -1,
                    "WAL history file \"%s\" is damaged: not the history of timeline %u", key,
                    t->tli);
    } else {
        t->parsed = true;
    }
    free(text);
    free(buf);
    free(key);
}

static void check_histories(Check *c)
{
    Wal *w = &c->wal;
    for (size_t i = 0; i < w->ntls && !interrupted; i++)
        read_history(c, &w->tls[i]);
    for (size_t i = 0; i < w->nseg_tlis; i++) {
        uint32_t tli = w->seg_tlis[i];
        if (tli > 1 && !find_tl(w, tli)) {
            char name[CBFS_WAL_NAME_MAX], *key;
            snprintf(name, sizeof(name), "%08X.history", tli);
            key = cbfs_wal_key(name);
            problem_add(&w->problems, K_MISSING_HISTORY, key, NULL, -1,
                        "WAL history file \"%s\" is missing (timeline %u has WAL files)", key, tli);
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
        p = problem_add(&b->problems, K_WAL_GAP, NULL, NULL, -1,
                        "WAL missing: %s (timeline %u), %s \"%s\"", f, tli,
                        inside ? "needed by backup" : "needed for recovery past backup", b->label);
    else
        p = problem_add(&b->problems, K_WAL_GAP, NULL, NULL, -1,
                        "WAL missing from %s to %s (timeline %u), %s \"%s\"", f, t, tli,
                        inside ? "needed by backup" : "needed for recovery past backup", b->label);
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
        problem_add(&b->problems, K_BAD_RECORD, NULL, NULL, -1,
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
static void check_backup_wal(Check *c, Backup *b)
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

static void wal_release(Wal *w)
{
    free(w->segs);
    for (size_t i = 0; i < w->ntls; i++)
        free(w->tls[i].sw);
    free(w->tls);
    free(w->seg_tlis);
    for (size_t i = 0; i < w->ngaps; i++)
        free(w->gaps[i].labels);
    free(w->gaps);
    problems_release(&w->problems);
}

/* ---------------------------------------------------------------- the whole check */

static int make_tmpdir(Check *c, CbfsError *err)
{
    const char *base = getenv("TMPDIR");
    c->tmpdir = cbfs_xasprintf("%s/cbfs-check.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(c->tmpdir)) {
        int rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR,
                                "could not create temporary directory \"%s\": %s", c->tmpdir,
                                strerror(errno));
        free(c->tmpdir);
        c->tmpdir = NULL;
        return rc;
    }
    return 0;
}

/* The packs no backup uses: their indexes must be sound too. */
static void check_unused_packs(Check *c)
{
    Pack **list = cbfs_xcalloc(c->packs.n ? c->packs.n : 1, sizeof(Pack *));
    size_t n = 0;
    for (size_t i = 0; i < c->packs.n; i++)
        if (!c->packs.v[i]->used && c->packs.v[i]->stored)
            list[n++] = c->packs.v[i];
    load_indexes(c, list, n, true);
    for (size_t i = 0; i < n; i++) {
        if (!list[i]->stored)
            continue; /* removed since the listing */
        c->unused_packs++;
        if (list[i]->error) {
            char *key = cbfs_pack_key(list[i]->name);
            problem_add(&c->pack_problems, K_BAD_PACK, key, NULL, -1, "%s (no backup uses it)",
                        list[i]->error);
            free(key);
        }
    }
    free(list);
}

static int check_run(Check *c, CbfsError *err)
{
    int rc;
    if ((rc = make_tmpdir(c, err)) < 0 ||
        (rc = cbfs_store_list(c->repo->store, "packs/", pack_list_cb, c, err)) < 0 ||
        (rc = list_wal(c, err)) < 0 || (rc = read_backups(c, err)) < 0)
        return rc;
    for (size_t i = 0; i < c->nbackups && !interrupted; i++) {
        cbfs_progress("check: backup %s (%zu of %zu)", c->backups[i].label, i + 1, c->nbackups);
        if (c->backups[i].rec)
            check_backup(c, &c->backups[i]);
    }
    cbfs_progress_end();
    if (!interrupted)
        check_unused_packs(c);
    if (!interrupted)
        check_histories(c);
    for (size_t i = 0; i < c->nbackups && !interrupted; i++)
        check_backup_wal(c, &c->backups[i]);
    if (interrupted)
        return cbfs_error_set(err, EINTR, CBFS_EXIT_ERROR, "check interrupted");
    return 0;
}

static uint64_t total_problems(const Check *c)
{
    uint64_t n = problems_count(&c->wal.problems) + problems_count(&c->pack_problems);
    for (size_t i = 0; i < c->nbackups; i++)
        n += problems_count(&c->backups[i].problems);
    return n;
}

static void check_release(Check *c)
{
    for (size_t i = 0; i < c->nbackups; i++) {
        Backup *b = &c->backups[i];
        free(b->label);
        cbfs_kv_free(b->rec);
        free(b->packs);
        problems_release(&b->problems);
    }
    free(c->backups);
    table_release(&c->packs);
    problems_release(&c->pack_problems);
    wal_release(&c->wal);
    if (c->tmpdir)
        rmdir(c->tmpdir);
    free(c->tmpdir);
    pthread_mutex_destroy(&c->lock);
}

/* ---------------------------------------------------------------- human output */

static const char *plural(uint64_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

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
               plural(ps->unlisted, "problem", "problems"));
}

static void print_backup(const Backup *b)
{
    uint64_t n = problems_count(&b->problems);
    printf("backup \"%s\": ", b->label);
    if (n == 0)
        printf("ok");
    else
        printf("%llu %s", (unsigned long long) n, plural(n, "problem", "problems"));
    if (b->manifest_read)
        printf(" (%llu files, %llu blocks, %zu packs)", (unsigned long long) b->files,
               (unsigned long long) b->blocks, b->npacks);
    printf("\n");
    print_problems(&b->problems, "  ");
}

static void print_wal(const Wal *w)
{
    printf("WAL: %llu %s", (unsigned long long) w->files, plural(w->files, "file", "files"));
    if (w->nseg_tlis) {
        printf(" on %s ", plural(w->nseg_tlis, "timeline", "timelines"));
        for (size_t i = 0; i < w->nseg_tlis; i++)
            printf("%s%u", i == 0 ? "" : ", ", w->seg_tlis[i]);
        printf(", newest %s", w->segs[w->nsegs - 1]);
    }
    if (w->ngaps)
        printf(", %zu %s (listed with the backups)", w->ngaps, plural(w->ngaps, "gap", "gaps"));
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

static void print_report(const Check *c, double secs)
{
    uint64_t n = total_problems(c);
    for (size_t i = 0; i < c->nbackups; i++)
        print_backup(&c->backups[i]);
    print_wal(&c->wal);
    {
        PackCounts pc = pack_counts(c);
        printf("packs: %zu stored, %zu used by backups, %zu used by none, %zu missing\n", pc.stored,
               pc.used, pc.unused, pc.missing);
    }
    print_problems(&c->pack_problems, "  ");
    printf("checked %zu %s, %zu %s, %llu WAL %s", c->nbackups,
           plural(c->nbackups, "backup", "backups"), c->packs.n,
           plural(c->packs.n, "pack", "packs"), (unsigned long long) c->wal.files,
           plural(c->wal.files, "file", "files"));
    if (c->percent) {
        char sz[32];
        cbfs_format_size(c->bytes_read, sz, sizeof(sz));
        printf(", read %llu %s (%s", (unsigned long long) c->blocks_read,
               plural(c->blocks_read, "block", "blocks"), sz);
        if (c->percent < 100)
            printf(", a %ld%% sample", c->percent);
        if (c->bad_blocks)
            printf(", %llu bad", (unsigned long long) c->bad_blocks);
        printf(")");
    }
    if (n == 0)
        printf(": no problems");
    else
        printf(": %llu %s", (unsigned long long) n, plural(n, "problem", "problems"));
    printf(" in %.1f s\n", secs);
}

/* ---------------------------------------------------------------- JSON output */

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
    if (p->kind == K_MISSING_PACK || p->kind == K_BAD_PACK) {
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
        cbfs_json_key(j, "timeline");
        cbfs_json_uint(j, p->tli);
        cbfs_json_key(j, "from");
        cbfs_json_string(j, p->from);
        cbfs_json_key(j, "to");
        cbfs_json_string(j, p->to);
        cbfs_json_key(j, "inside_backup");
        cbfs_json_bool(j, p->inside);
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

static void json_backup(CbfsJson *j, const Backup *b)
{
    cbfs_json_begin_object(j);
    cbfs_json_key(j, "label");
    cbfs_json_string(j, b->label);
    cbfs_json_key(j, "ok");
    cbfs_json_bool(j, problems_count(&b->problems) == 0);
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
        cbfs_json_key(j, "timeline");
        cbfs_json_uint(j, g->tli);
        cbfs_json_key(j, "from");
        cbfs_json_string(j, g->from);
        cbfs_json_key(j, "to");
        cbfs_json_string(j, g->to);
        cbfs_json_key(j, "inside_backup");
        cbfs_json_bool(j, g->inside);
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

static void json_report(const Check *c, double secs)
{
    CbfsJson j;
    uint64_t n = total_problems(c);

    cbfs_json_init(&j);
    cbfs_json_begin_object(&j);
    cbfs_json_key(&j, "repository");
    cbfs_json_string(&j, c->repo->display);
    cbfs_json_key(&j, "ok");
    cbfs_json_bool(&j, n == 0);
    cbfs_json_key(&j, "duration_seconds");
    cbfs_json_double(&j, secs);
    cbfs_json_key(&j, "backups");
    cbfs_json_begin_array(&j);
    for (size_t i = 0; i < c->nbackups; i++)
        json_backup(&j, &c->backups[i]);
    cbfs_json_end_array(&j);
    json_wal(&j, &c->wal);
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

/* ---------------------------------------------------------------- the command */

static void usage(void)
{
    printf(
        "Usage: cbfs check REPO [OPTIONS]\n"
        "\n"
        "Check that the repository is whole: every backup's record and manifest, that\n"
        "every block a manifest references is in a stored pack whose index lists it,\n"
        "the index of every pack, and that the archived WAL has no gap from each\n"
        "backup's start to its stop (needed to restore it) and on to the newest WAL\n"
        "file, following timeline switches (needed to recover past it).  Everything\n"
        "wrong is reported, grouped by backup; a WAL gap once per backup needing it.\n"
        "\n"
        "Options:\n"
        "      --read-data[=PERCENT]  also read every referenced block (or each with a\n"
        "                             probability of PERCENT, 1-100), decompress it and\n"
        "                             verify its checksum; \"--read-data 10\" works too\n"
        "                             when the next argument is a number\n"
        "  -j, --jobs N               parallel requests (default: 4)\n"
        "      --json                 print the report as JSON:\n"
        "                               {\"repository\", \"ok\", \"duration_seconds\",\n"
        "                                \"backups\": [{\"label\", \"ok\", \"files\", \"blocks\",\n"
        "                                  \"packs\", \"problems\": [P], \"unlisted\"}],\n"
        "                                \"wal\": {\"files\", \"timelines\", \"newest\",\n"
        "                                  \"gaps\": [{\"timeline\", \"from\", \"to\",\n"
        "                                    \"inside_backup\", \"backups\"}], \"problems\"},\n"
        "                                \"packs\": {\"stored\", \"used\", \"unused\", "
        "\"missing\",\n"
        "                                  \"problems\"},\n"
        "                                \"read_data\": {\"percent\", \"blocks\", \"bytes\",\n"
        "                                  \"bad_blocks\"} or null, \"problems\": N}\n"
        "                               P: {\"kind\", \"message\", \"object\", \"file\", "
        "\"offset\"}\n"
        "      --metrics-file FILE    write Prometheus metrics (cbfs_check_*) to FILE\n"
        "  -h, --help                 show this help\n"
        "\n"
        "Exit status: 0 nothing wrong, 5 problems found, 3 repository cannot be opened,\n"
        "2 usage error, 1 another failure.\n");
}

/* "10" or "10%" for --read-data. */
static bool is_number(const char *s)
{
    size_t n = strspn(s, "0123456789");
    return n > 0 && n <= 4 && (s[n] == '\0' || (s[n] == '%' && s[n + 1] == '\0'));
}

static int parse_percent(const char *s, long *ret)
{
    char buf[8];
    if (!is_number(s))
        return -EINVAL;
    snprintf(buf, sizeof(buf), "%.*s", (int) strspn(s, "0123456789"), s);
    return cbfs_parse_int(buf, 1, 100, ret);
}

typedef struct Options {
    long jobs;
    long percent;
    bool json;
    const char *metrics;
    const char *repo;
} Options;

/* 0 to go on, -1 after --help, or an exit code. */
static int parse_options(int argc, char **argv, Options *o)
{
    static const struct option opts[] = {
        {"read-data", optional_argument, NULL, 'R'},
        {"jobs", required_argument, NULL, 'j'},
        {"json", no_argument, NULL, 'J'},
        {"metrics-file", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;

    *o = (Options){4, 0, false, NULL, NULL};
    while ((ch = getopt_long(argc, argv, "j:h", opts, NULL)) != -1) {
        const char *arg = optarg;
        switch (ch) {
        case 'R':
            if (!arg && optind < argc && is_number(argv[optind]))
                arg = argv[optind++];
            o->percent = 100;
            if (arg && parse_percent(arg, &o->percent) < 0)
                return cmd_usage_error("check",
                                       "invalid value for --read-data: \"%s\" (expected a "
                                       "percentage from 1 to 100)",
                                       arg);
            break;
        case 'j':
            if (cbfs_parse_int(optarg, 1, 256, &o->jobs) < 0)
                return cmd_usage_error("check", "invalid value for --jobs: \"%s\"", optarg);
            break;
        case 'J':
            o->json = true;
            break;
        case 'M':
            o->metrics = optarg;
            break;
        case 'h':
            usage();
            return -1;
        default:
            return cmd_usage_error("check", NULL);
        }
    }
    if (optind + 1 != argc)
        return cmd_usage_error("check",
                               optind >= argc ? "no repository given" : "too many arguments");
    o->repo = argv[optind];
    return 0;
}

static int write_metrics(const Options *o, const char *repository, bool success, double secs,
                         uint64_t bytes, uint64_t failures)
{
    CmdMetrics m = {"check", repository, success, secs, bytes, failures};
    CbfsError err;
    cbfs_error_init(&err);
    if (!o->metrics)
        return 0;
    if (cmd_metrics_write(o->metrics, &m, &err) < 0) {
        cmd_fail(&err);
        return -1;
    }
    return 0;
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second one ends the process at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

int cmd_check(int argc, char **argv)
{
    Options o;
    CbfsLocation loc;
    CbfsError err;
    Check c;
    double t0 = cbfs_now(), secs;
    uint64_t n;
    int rc = parse_options(argc, argv, &o);

    if (rc != 0)
        return rc < 0 ? 0 : rc;
    cbfs_error_init(&err);
    if (cbfs_location_parse(o.repo, false, &loc, &err) < 0)
        return cmd_fail(&err);
    memset(&c, 0, sizeof(c));
    pthread_mutex_init(&c.lock, NULL);
    c.jobs = o.jobs;
    c.percent = o.percent;
    cbfs_random_bytes(&c.rng, sizeof(c.rng));
    c.rng |= 1; /* xorshift never leaves 0 */
    rc = cbfs_repo_open(&loc, &c.repo, &err);
    cbfs_location_release(&loc);
    if (rc < 0) {
        rc = cmd_fail(&err);
        write_metrics(&o, o.repo, false, cbfs_now() - t0, 0, 0);
        check_release(&c);
        return rc;
    }
    catch_signals();
    rc = check_run(&c, &err);
    secs = cbfs_now() - t0;
    n = total_problems(&c);
    if (rc < 0) {
        rc = cmd_fail(&err);
    } else {
        if (o.json)
            json_report(&c, secs);
        else
            print_report(&c, secs);
        fflush(stdout);
        if (n)
            cbfs_error("repository \"%s\" has %llu %s", c.repo->display, (unsigned long long) n,
                       plural(n, "problem", "problems"));
        rc = n ? CBFS_EXIT_CORRUPT : 0;
    }
    if (write_metrics(&o, c.repo->display, rc == 0, secs, c.bytes_read, n) < 0 && rc == 0)
        rc = CBFS_EXIT_ERROR;
    check_release(&c);
    cbfs_repo_free(c.repo);
    return rc;
}
