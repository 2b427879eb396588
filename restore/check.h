/*
 * check.h - `cbfs check REPO [--read-data [PERCENT]] [--jobs N] [--json]
 * [--metrics-file FILE]`: is the repository whole?  Everything wrong is
 * reported, grouped by backup, not just the first problem.
 *
 * What is checked:
 *   - every backup record can be read; its manifest exists, matches the
 *     record's SHA-256 and passes SQLite's quick_check; every path in it is
 *     one a restore would accept (cbfs_manifest_path_valid);
 *   - every block the manifest references, followed to where it is now
 *     exactly as restore and the mount follow it (cbfs_block_locate: a
 *     pack gc rewrote is followed through its relocation map, block by
 *     block; a listed pack stands for one a read finds), lies in a stored
 *     pack whose trailer index is sound (read once per pack, whatever the
 *     number of backups sharing it; the listed object size must be the one
 *     the trailer implies) and lists the same id, offset and lengths; a
 *     ref whose map cannot be read or does not hold it leads nowhere
 *     (unresolved-ref);
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
 *     relocation map "moved/a0/a0…" does not hold every block the backup names in
 *       pack "packs/a0/a0….pack"; 12 blocks of the backup cannot be found  (one line;
 *       then its first refs, as above)
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
 *   bad-index-entry, bad-block, wal-gap, missing-history, bad-history,
 *   unresolved-ref (one per relocation map, its "object"), cluster-point (a
 *   node that cannot reach a cluster restore point, with "node").
 *   Extra keys: missing-pack, bad-pack and unresolved-ref: "blocks" (refs of
 *   the backup in that pack, or through that map), "refs": [{"file",
 *   "offset"}] (the first 10); bad-index-entry
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
 *
 * The command is four modules sharing the state below (private to them):
 *   check.c         the command: options, backup records, manifests and
 *                   their refs, the whole check in order;
 *   check_packs.c   every pack seen: the table, index reads and block reads
 *                   on --jobs threads, the packs no backup uses;
 *   check_wal.c     WAL continuity: the listing, the timeline histories and
 *                   the gaps of each backup;
 *   check_report.c  the problems found, and the report, human or JSON.
 */
#ifndef CBFS_CHECK_H
#define CBFS_CHECK_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cbfs/error.h"
#include "cbfs/pack.h"
#include "cbfs/repo.h"

#define DETAIL_MAX     100 /* problems of one kind listed per backup */
#define REF_DETAIL_MAX 10  /* refs listed for a missing or damaged pack */
#define SEG_NAME_LEN   25  /* a segment name and its NUL */

/* ---------------------------------------------------------------- problems */

/* The kinds of problem; their JSON names are in check_report.c, in this order. */
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
    K_UNRESOLVED_REF,
    K_CLUSTER_POINT,
    K_COUNT
};

typedef struct Ref {
    char *file;
    uint64_t offset;
} Ref;

/* One problem: a message, and the fields its JSON object shows. */
typedef struct Problem {
    enum kind kind;
    char *message;            /* one line, PostgreSQL style */
    char *object;             /* a repository key, or NULL */
    char *file;               /* a path in the backup, or NULL */
    int64_t offset;           /* byte offset in file, -1 if none */
    int64_t pack_offset;      /* bad-index-entry, bad-block, unresolved-ref; else -1 */
    Ref refs[REF_DETAIL_MAX]; /* missing-pack, bad-pack, unresolved-ref: the first refs */
    size_t nrefs;
    uint64_t nblocks; /* missing-pack, bad-pack, unresolved-ref: refs of the backup */
    uint32_t tli;     /* wal-gap */
    char from[SEG_NAME_LEN], to[SEG_NAME_LEN];
    bool inside;
    char *node; /* cluster-point */
} Problem;

typedef struct Problems {
    Problem *v;
    size_t n;
    size_t per_kind[K_COUNT];
    uint64_t unlisted; /* past DETAIL_MAX of one kind: counted only */
} Problems;

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
    const void *listed_for; /* the Backup whose pack list holds it last */
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

/* ---------------------------------------------------------------- state */

/* One backup record under backups/, oldest first in Check.backups. */
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

typedef struct Timeline Timeline; /* a timeline with a history file: check_wal.c */

/* A WAL gap as the JSON "wal.gaps" shows it: each distinct range once. */
typedef struct Gap {
    uint32_t tli;
    char from[SEG_NAME_LEN], to[SEG_NAME_LEN];
    bool inside;
    const char **labels; /* borrowed from the backups */
    size_t nlabels;
} Gap;

/* The archived WAL, as listed, and what its checks found. */
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

/* One node of the repository: its backups and WAL, checked in turn (the
 * packs are the repository's, checked once). */
typedef struct NodeCheck {
    char *name;
    CbfsRepo *view;
    Backup *backups;
    size_t nbackups;
    Wal wal;
} NodeCheck;

/* A cluster restore point: restorable when every node has a backup before
 * it that is whole (no problem found) and the WAL from there to it. */
typedef struct ClusterCheck {
    char *name;
    Problems problems; /* kind cluster-point: one per node that cannot reach it */
} ClusterCheck;

typedef struct Check Check;
typedef struct Worker Worker; /* a thread of a parallel phase: check_packs.c */
typedef struct Run Run;       /* blocks read in one request: check_packs.c */
typedef void (*task_fn)(Worker *w, size_t i);

/* The whole check: set up by cmd_check, filled by check_run.  repo,
 * backups and wal are the node being checked (moved into nodes[] once it
 * is done). */
struct Check {
    CbfsRepo *base;   /* the whole repository */
    const char *only; /* --node */
    NodeCheck *nodes;
    size_t nnodes;
    bool several; /* the repository holds named nodes: reports go node by node */
    ClusterCheck *cps;
    size_t ncps;
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
    /* a parallel phase (check_packs.c) */
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

/* ---------------------------------------------------------------- check.c */

/* Set by SIGINT, SIGTERM and SIGHUP: every loop, walk and parallel phase
 * stops early, and the check ends as interrupted. */
extern volatile sig_atomic_t check_interrupted;

/* ---------------------------------------------------------------- check_packs.c */

/* The pack named name in t, or NULL. */
Pack *check_packs_find(const PackTable *t, const char *name);
/* Add a pack named name (not in t yet): zeroed, neither stored nor used.
 * Owned by t; the pointer stays valid until check_packs_release. */
Pack *check_packs_add(PackTable *t, const char *name);
void check_packs_release(PackTable *t);

/* Add every pack listed under packs/ (well named, at its own key) to
 * c->packs as stored, with its size.  < 0 when the listing fails. */
int check_packs_list(Check *c, CbfsError *err);

/* Read, on --jobs threads, the indexes of the stored packs among list that
 * are not loaded yet.  A pack gone since the listing is marked not stored;
 * one whose index cannot be read gets its error.  With unused, only the
 * soundness is wanted: the entries are freed.  Otherwise they are sorted by
 * offset and, with --read-data, every entry gets its mark. */
void check_packs_load_indexes(Check *c, Pack **list, size_t n, bool unused);

/* Read, on --jobs threads, every block of b's packs that is MARK_SELECTED
 * and not MARK_READ yet (an earlier backup may have read it): decompress,
 * hash against its id.  A block that fails is MARK_BAD, its message in
 * Pack.bad; the totals are added to c->blocks_read, bytes_read, bad_blocks. */
void check_packs_read_blocks(Check *c, Backup *b);

/* The packs no backup uses: read their indexes; each that cannot be read is
 * a bad-pack problem of c->pack_problems.  Counts them in c->unused_packs. */
void check_packs_unused(Check *c);

/* The entry of p's index at offset, or -1. */
ssize_t check_pack_entry(const Pack *p, uint64_t offset);
/* Why the block at entry failed its read.  Borrowed from p. */
const char *check_pack_bad_message(const Pack *p, size_t entry);

/* ---------------------------------------------------------------- check_wal.c */

/* List wal/ into c->wal: segment names sorted, history files, timelines
 * with segments.  < 0 when the listing fails. */
int check_wal_list(Check *c, CbfsError *err);
/* Read and parse every history file (bad-history), and report each
 * timeline above 1 with segments but no history file (missing-history):
 * problems of c->wal. */
void check_wal_histories(Check *c);
/* WAL continuity for backup b, after check_wal_histories: every gap is a
 * wal-gap problem of b and is added to c->wal.gaps.  A record whose WAL
 * fields are invalid is a bad-record problem of b. */
void check_wal_backup(Check *c, Backup *b);
void check_wal_release(Wal *w);

/* ---------------------------------------------------------------- check_report.c */

/* Add a problem to ps (the message is made one line); NULL (and counted as
 * unlisted) when its kind is one of bad-path, bad-index-entry and
 * bad-block and already has DETAIL_MAX entries listed.  The pointer is
 * borrowed until the next problem added to ps. */
__attribute__((format(printf, 6, 7))) Problem *check_problem_add(Problems *ps, enum kind k,
                                                                 const char *object,
                                                                 const char *file, int64_t offset,
                                                                 const char *fmt, ...);
void check_problems_release(Problems *ps);
/* Listed and unlisted. */
uint64_t check_problems_count(const Problems *ps);
/* Of every backup, the WAL and the packs no backup uses. */
uint64_t check_problems_total(const Check *c);

/* one when n is 1, else many. */
const char *check_plural(uint64_t n, const char *one, const char *many);

/* The report on stdout, human or JSON (the formats above); secs is the
 * duration shown. */
void check_report_print(const Check *c, double secs);
void check_report_json(const Check *c, double secs);

#endif
