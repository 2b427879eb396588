/*
 * copy.c - `cbfs copy SOURCE DESTINATION`: a second repository
 * (docs/design.md, "A second repository").
 *
 * Copies what DESTINATION lacks of one node: backups (oldest first), the
 * WAL from the oldest backup DESTINATION then holds on, history files,
 * restore points and pins.  Blocks are read from SOURCE, decoded and
 * checked against their ids, and stored in DESTINATION only when its dedup
 * index does not have them; an encrypted DESTINATION seals with its own key
 * (so ids are computed again from the plaintext).  A backup appears in
 * DESTINATION as a backup does: manifest, then record, after every pack it
 * names is stored; killed and run again, the packs stored before the kill
 * are found by the dedup index and nothing is stored twice.
 *
 * Next to gc and expire: in DESTINATION the copy is a running backup
 * (running/<label>, the doomed packs avoided, lock.h); in SOURCE it is a
 * reader expire keeps the backup for (mounts/<label>, command "copy"), and
 * blocks gc moved are found through relocation maps (block.h).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbfs/blockindex.h"
#include "cbfs/doomed.h"
#include "cbfs/lock.h"
#include "cbfs/log.h"
#include "cbfs/pin.h"
#include "cbfs/point.h"
#include "cbfs/ratelimit.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "cbfs/walarchive.h"
#include "commands.h"

#define FETCH_BYTES  (8u << 20) /* stored bytes fetched from SOURCE in one batch */
#define BATCH_BLOCKS 512        /* ... and at most this many blocks */

typedef struct CopyFile {
    int64_t src_id, dst_id;
    uint64_t size;
} CopyFile;

typedef struct Copy {
    CbfsRepo *src, *dst;
    const char *label;
    bool same_ids; /* neither side encrypted: a block's id is the same on both */
    const char *src_manifest_path;
    CbfsManifest *dst_m; /* guarded by lock */
    CbfsBlockIndex *index;
    CbfsRateLimit *rate; /* bytes read from SOURCE, or NULL */
    CopyFile *files;
    size_t nfiles, next; /* next: the next file a worker takes (guarded by lock) */
    pthread_mutex_t lock;
    bool failed;
    CbfsError err; /* the first failure (guarded by lock) */
    /* counters (atomic) */
    uint64_t blocks, blocks_new, bytes_read, bytes_raw, bytes_stored;
} Copy;

typedef struct Worker {
    Copy *c;
    CbfsManifest *src_m; /* one handle per thread */
    CbfsCodec *src_codec, *dst_codec;
    CbfsPackWriter *pack;
    uint8_t *stored, *raw, *enc;
    size_t stored_cap, enc_cap;
    CbfsBlockRef *batch;
    CbfsBlockLoc *at;
    CbfsError err;
} Worker;

static void copy_fail(Copy *c, const CbfsError *err)
{
    pthread_mutex_lock(&c->lock);
    if (!c->failed) {
        c->failed = true;
        c->err = *err;
    }
    pthread_mutex_unlock(&c->lock);
}

static int store_pack(Worker *w)
{
    Copy *c = w->c;
    int rc = 0;
    if (!w->pack)
        return 0;
    rc = cbfs_pack_writer_finish(w->pack, c->dst->store, c->dst->crypt, &w->err);
    if (rc == 0 && cbfs_pack_writer_count(w->pack) > 0)
        rc = cbfs_blockindex_pack_stored(c->index, cbfs_pack_writer_name(w->pack), &w->err);
    cbfs_pack_writer_free(w->pack);
    w->pack = NULL;
    return rc;
}

/* Block i of the batch (its stored bytes at sb, read from where w->at[i]
 * says) decoded, checked and, unless DESTINATION has it, stored there; *ref
 * becomes DESTINATION's reference. */
static int put_block(Worker *w, CbfsBlockRef *ref, const uint8_t *sb, const CbfsBlockLoc *at)
{
    Copy *c = w->c;
    CbfsBlockRef mine = *ref;
    const uint8_t *out;
    size_t n;
    int rc = cbfs_pack_decode_block(w->src_codec, at->pack, at->offset, sb, ref->stored_len,
                                    ref->raw_len, ref->id, w->raw, &w->err);
    if (rc < 0)
        return rc;
    __atomic_add_fetch(&c->bytes_raw, ref->raw_len, __ATOMIC_RELAXED);
    if (c->same_ids) {
        /* checked above: the stored bytes go over as they are */
        out = sb;
        n = ref->stored_len;
    } else {
        cbfs_codec_block_id(w->dst_codec, w->raw, ref->raw_len, mine.id);
        if (cbfs_blockindex_lookup(c->index, mine.id, &mine) == 0 && mine.raw_len == ref->raw_len) {
            mine.file = ref->file;
            mine.blockno = ref->blockno;
            *ref = mine;
            return 0;
        }
        n = cbfs_codec_encode(w->dst_codec, mine.id, w->raw, ref->raw_len, w->enc, w->enc_cap);
        out = w->enc;
    }
    if (!w->pack) {
        w->pack = cbfs_pack_writer_new();
        if ((rc = cbfs_blockindex_pack_begin(c->index, cbfs_pack_writer_name(w->pack), &w->err)) <
            0)
            return rc;
    }
    mine.offset = cbfs_pack_writer_append(w->pack, mine.id, out, (uint32_t) n, ref->raw_len);
    strcpy(mine.pack, cbfs_pack_writer_name(w->pack));
    mine.stored_len = (uint32_t) n;
    mine.raw_len = ref->raw_len;
    if ((rc = cbfs_blockindex_add(c->index, &mine, &w->err)) < 0)
        return rc;
    __atomic_add_fetch(&c->blocks_new, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&c->bytes_stored, n, __ATOMIC_RELAXED);
    *ref = mine;
    if (cbfs_pack_writer_size(w->pack) >= CBFS_PACK_TARGET_SIZE)
        return store_pack(w);
    return 0;
}

/* Fetch the stored bytes of refs[idx[0..n)] in one go and put each. */
static int put_batch(Worker *w, CbfsBlockRef *refs, const size_t *idx, size_t n, size_t bytes)
{
    Copy *c = w->c;
    size_t off = 0;
    int rc;
    if (n == 0)
        return 0;
    if (bytes > w->stored_cap) {
        w->stored_cap = bytes;
        w->stored = cbfs_xrealloc(w->stored, bytes);
    }
    for (size_t i = 0; i < n; i++)
        w->batch[i] = refs[idx[i]];
    if (c->rate)
        cbfs_ratelimit_take(c->rate, bytes);
    rc = cbfs_block_read_stored(c->src->store, w->batch, n, w->stored, w->at, &w->err);
    if (rc < 0)
        return rc;
    __atomic_add_fetch(&c->bytes_read, bytes, __ATOMIC_RELAXED);
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t len = refs[idx[i]].stored_len; /* SOURCE's: put_block makes it DESTINATION's */
        rc = put_block(w, &refs[idx[i]], w->stored + off, &w->at[i]);
        off += len;
    }
    return rc;
}

/* One file: its references in SOURCE turned into DESTINATION's. */
static int copy_file(Worker *w, const CopyFile *f)
{
    Copy *c = w->c;
    CbfsBlockRef *refs = NULL;
    size_t n = 0, *idx = NULL, nidx = 0, bytes = 0;
    int rc = cbfs_manifest_file_blocks(w->src_m, f->src_id, &refs, &n, &w->err);
    if (rc < 0)
        return rc;
    idx = cbfs_xmalloc((n ? n : 1) * sizeof(*idx));
    for (size_t i = 0; i < n && rc == 0; i++) {
        CbfsBlockRef *r = &refs[i];
        if (r->raw_len > c->dst->block_size ||
            r->stored_len > cbfs_codec_bound(c->dst->block_size) + 64) {
            rc = cbfs_error_set(&w->err, EBADMSG, CBFS_EXIT_CORRUPT,
                                "backup \"%s\" in repository \"%s\" names a block of %u bytes",
                                c->label, c->src->display, r->raw_len);
            break;
        }
        __atomic_add_fetch(&c->blocks, 1, __ATOMIC_RELAXED);
        if (c->same_ids) {
            CbfsBlockRef have;
            if (cbfs_blockindex_lookup(c->index, r->id, &have) == 0 && have.raw_len == r->raw_len) {
                have.file = r->file;
                have.blockno = r->blockno;
                *r = have;
                continue;
            }
        }
        if (nidx == BATCH_BLOCKS ||
            bytes + r->stored_len > cbfs_ratelimit_chunk(c->rate, FETCH_BYTES)) {
            rc = put_batch(w, refs, idx, nidx, bytes);
            nidx = bytes = 0;
        }
        idx[nidx++] = i;
        bytes += r->stored_len;
    }
    if (rc == 0)
        rc = put_batch(w, refs, idx, nidx, bytes);
    free(idx);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++)
            refs[i].file = f->dst_id;
        pthread_mutex_lock(&c->lock);
        rc = cbfs_manifest_add_blocks(c->dst_m, refs, n, &w->err);
        pthread_mutex_unlock(&c->lock);
    }
    free(refs);
    return rc;
}

static void *worker_main(void *arg)
{
    Worker *w = arg;
    Copy *c = w->c;
    int rc = cbfs_manifest_open(c->src_manifest_path, &w->src_m, &w->err);

    while (rc == 0) {
        const CopyFile *f = NULL;
        pthread_mutex_lock(&c->lock);
        if (!c->failed && c->next < c->nfiles)
            f = &c->files[c->next++];
        pthread_mutex_unlock(&c->lock);
        if (!f)
            break;
        rc = copy_file(w, f);
    }
    if (rc == 0)
        rc = store_pack(w);
    if (rc < 0)
        copy_fail(c, &w->err);
    cbfs_manifest_free(w->src_m);
    w->src_m = NULL;
    return NULL;
}

typedef struct FileWalk {
    Copy *c;
    CbfsManifest *dst_m;
    int64_t *map; /* SOURCE's file id -> DESTINATION's */
    size_t map_len;
    CbfsError *err;
} FileWalk;

static int map_id(FileWalk *fw, int64_t src, int64_t *ret)
{
    if (src == 0) {
        *ret = 0;
        return 0;
    }
    if (src < 0 || (size_t) src >= fw->map_len || fw->map[src] == 0)
        return cbfs_error_set(fw->err, EBADMSG, CBFS_EXIT_CORRUPT,
                              "backup \"%s\" in repository \"%s\" has a file whose folder is "
                              "not listed before it",
                              fw->c->label, fw->c->src->display);
    *ret = fw->map[src];
    return 0;
}

static int max_id_cb(const CbfsFileEntry *f, void *ctx)
{
    int64_t *max = ctx;
    if (f->id > *max)
        *max = f->id;
    return 0;
}

/* Every file of SOURCE's manifest into DESTINATION's (parents first: the
 * listing is in path order), and the regular ones with blocks listed for
 * the workers. */
static int file_cb(const CbfsFileEntry *f, void *ctx)
{
    FileWalk *fw = ctx;
    Copy *c = fw->c;
    CbfsFileEntry g = *f;
    int64_t id;
    if (!f->path || !cbfs_manifest_path_valid(f->path) || f->id <= 0 ||
        (size_t) f->id >= fw->map_len)
        return cbfs_error_set(fw->err, EBADMSG, CBFS_EXIT_CORRUPT,
                              "backup \"%s\" in repository \"%s\" names an invalid path", c->label,
                              c->src->display);
    if (map_id(fw, f->parent, &g.parent) < 0)
        return -EBADMSG;
    if (cbfs_manifest_add_file(fw->dst_m, &g, &id, fw->err) < 0)
        return -EIO;
    fw->map[f->id] = id;
    if (f->type == CBFS_FILE_REG && f->size > 0) {
        if (c->nfiles % 256 == 0)
            c->files = cbfs_xrealloc(c->files, (c->nfiles + 256) * sizeof(*c->files));
        c->files[c->nfiles++] = (CopyFile){.src_id = f->id, .dst_id = id, .size = f->size};
    }
    return 0;
}

static int meta_cb(const char *key, const char *value, void *ctx)
{
    FileWalk *fw = ctx;
    if (!value || strcmp(key, "format") == 0) /* DESTINATION's own */
        return 0;
    return cbfs_manifest_set_meta(fw->dst_m, key, value, fw->err) < 0 ? -EIO : 0;
}

static int bad_page_cb(int64_t file, uint64_t page, uint64_t lsn, void *ctx)
{
    FileWalk *fw = ctx;
    int64_t id;
    if (map_id(fw, file, &id) < 0)
        return -EBADMSG;
    return cbfs_manifest_add_bad_page(fw->dst_m, id, page, lsn, fw->err) < 0 ? -EIO : 0;
}

typedef struct Totals {
    unsigned backups, wal, points, pins;
    uint64_t blocks, blocks_new, bytes_read, bytes_stored;
} Totals;

/* One backup, label, whose SOURCE record is rec. */
static int copy_backup(CbfsRepo *src, CbfsRepo *dst, const CbfsKv *rec, const char *label,
                       long jobs, CbfsRateLimit *rate, Totals *tot, CbfsError *err)
{
    Copy c = {.src = src,
              .dst = dst,
              .label = label,
              .same_ids = !src->crypt && !dst->crypt,
              .rate = rate};
    CbfsHolder src_reg, dst_reg;
    bool src_registered = false, dst_registered = false;
    char *cache = NULL, *src_path = NULL, *dst_path = NULL, *text = NULL;
    CbfsManifest *src_m = NULL;
    CbfsKv *out = NULL;
    FileWalk fw = {.c = &c, .err = err};
    Worker *workers = NULL;
    pthread_t *threads = NULL;
    long started = 0;
    int64_t max_id = 0;
    int rc;

    pthread_mutex_init(&c.lock, NULL);
    cbfs_error_init(&c.err);
    rc = cbfs_reader_register(src, label, "copy", NULL, &src_reg, &src_registered, err);
    if (rc == 0 && (rc = cbfs_running_register(dst, label, &dst_reg, err)) == 0)
        dst_registered = true;
    cbfs_test_pause("copy-registered");
    if (rc == 0) {
        char **avoid;
        size_t navoid;
        rc = cbfs_doomed_packs(dst, &avoid, &navoid, err);
        if (rc == 0 && (rc = cbfs_blockindex_open(dst, &c.index, &(size_t){0}, err)) < 0) {
            for (size_t i = 0; i < navoid; i++)
                free(avoid[i]);
            free(avoid);
        } else if (rc == 0) {
            cbfs_blockindex_avoid(c.index, avoid, navoid);
        }
    }
    if (rc == 0)
        rc = cbfs_repo_cache_dir(dst, &cache, err);
    if (rc == 0)
        rc = cbfs_repo_fetch_manifest(src, rec, cache, &src_path, err);
    if (rc == 0)
        rc = cbfs_manifest_open(src_path, &src_m, err);
    if (rc == 0) {
        dst_path = cbfs_xasprintf("%s/copy-%s-%d.db", cache, label, (int) getpid());
        unlink(dst_path);
        rc = cbfs_manifest_create(dst_path, &c.dst_m, err);
    }
    if (rc == 0)
        rc = cbfs_manifest_begin(c.dst_m, err);
    fw.dst_m = c.dst_m;
    if (rc == 0)
        rc = cbfs_manifest_foreach_file(src_m, max_id_cb, &max_id, err);
    if (rc == 0) {
        fw.map_len = (size_t) max_id + 1;
        fw.map = cbfs_xcalloc(fw.map_len, sizeof(*fw.map));
        rc = cbfs_manifest_foreach_meta(src_m, meta_cb, &fw, err);
    }
    if (rc == 0)
        rc = cbfs_manifest_foreach_file(src_m, file_cb, &fw, err);
    if (rc == 0)
        rc = cbfs_manifest_foreach_bad_page(src_m, bad_page_cb, &fw, err);
    cbfs_manifest_free(src_m);
    src_m = NULL;

    /* the blocks, file by file on jobs threads */
    if (rc == 0) {
        c.src_manifest_path = src_path;
        workers = cbfs_xcalloc((size_t) jobs, sizeof(*workers));
        threads = cbfs_xcalloc((size_t) jobs, sizeof(*threads));
        for (long i = 0; i < jobs; i++) {
            Worker *w = &workers[i];
            w->c = &c;
            w->src_codec = cbfs_repo_codec_new(src, src->compress_level);
            w->dst_codec = cbfs_repo_codec_new(dst, dst->compress_level);
            w->raw = cbfs_xmalloc(dst->block_size);
            w->enc_cap = cbfs_codec_bound(dst->block_size);
            w->enc = cbfs_xmalloc(w->enc_cap);
            w->batch = cbfs_xmalloc(BATCH_BLOCKS * sizeof(*w->batch));
            w->at = cbfs_xmalloc(BATCH_BLOCKS * sizeof(*w->at));
            cbfs_error_init(&w->err);
        }
        for (; started < jobs; started++)
            if (pthread_create(&threads[started], NULL, worker_main, &workers[started]) != 0)
                break;
        if (started == 0)
            worker_main(&workers[0]);
        for (long i = 0; i < started; i++)
            pthread_join(threads[i], NULL);
        if (c.failed) {
            *err = c.err;
            rc = -EIO;
        }
    }
    if (rc == 0)
        rc = cbfs_manifest_commit(c.dst_m, err);
    cbfs_manifest_free(c.dst_m);
    c.dst_m = NULL;
    cbfs_test_pause("copy-commit");
    if (rc == 0 && cbfs_running_check(dst, &dst_reg, err) == -ENOENT)
        rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_ERROR,
                            "backup \"%s\" was not copied: its registration \"%s\" was removed "
                            "from repository \"%s\" while it ran (see cbfs gc --running-timeout)",
                            label, dst_reg.key, dst->display);
    if (rc == 0) {
        /* SOURCE's record, with DESTINATION's manifest keys (commit) */
        text = cbfs_kv_format(rec);
        rc = cbfs_kv_parse(text, strlen(text), &out, err);
    }
    if (rc == 0) {
        cbfs_kv_unset(out, "manifest_sha256");
        cbfs_kv_set_u64(out, "stored_size", c.bytes_stored);
        cbfs_kv_set(out, "copied_from", src->id);
        rc = cbfs_repo_commit_backup(dst, label, dst_path, out, err);
    }
    if (rc == 0) {
        char rd[32], st[32];
        cbfs_format_size(c.bytes_read, rd, sizeof(rd));
        cbfs_format_size(c.bytes_stored, st, sizeof(st));
        printf("copied backup %s: %llu blocks, %llu new (read %s, stored %s)\n", label,
               (unsigned long long) c.blocks, (unsigned long long) c.blocks_new, rd, st);
        tot->backups++;
    }
    tot->blocks += c.blocks;
    tot->blocks_new += c.blocks_new;
    tot->bytes_read += c.bytes_read;
    tot->bytes_stored += c.bytes_stored;

    if (workers) {
        for (long i = 0; i < jobs; i++) {
            cbfs_codec_free(workers[i].src_codec);
            cbfs_codec_free(workers[i].dst_codec);
            cbfs_pack_writer_free(workers[i].pack);
            free(workers[i].stored);
            free(workers[i].raw);
            free(workers[i].enc);
            free(workers[i].batch);
            free(workers[i].at);
        }
    }
    free(workers);
    free(threads);
    if (dst_registered)
        cbfs_registration_release(dst, &dst_reg);
    if (src_registered)
        cbfs_registration_release(src, &src_reg);
    cbfs_blockindex_free(c.index);
    cbfs_kv_free(out);
    free(text);
    free(fw.map);
    free(c.files);
    if (src_path)
        unlink(src_path);
    if (dst_path)
        unlink(dst_path);
    free(src_path);
    free(dst_path);
    free(cache);
    pthread_mutex_destroy(&c.lock);
    return rc;
}

/* ---- WAL, restore points, pins ---------------------------------------- */

typedef struct WalList {
    char **names;
    size_t n;
} WalList;

static int wal_cb(const char *key, uint64_t size, void *ctx)
{
    WalList *l = ctx;
    const char *name = strrchr(key, '/');
    (void) size;
    name = name ? name + 1 : key;
    if (cbfs_wal_classify(name, NULL) == CBFS_WAL_INVALID)
        return 0;
    if (l->n % 256 == 0)
        l->names = cbfs_xrealloc(l->names, (l->n + 256) * sizeof(char *));
    l->names[l->n++] = cbfs_xstrdup(name);
    return 0;
}

/* The segment number a WAL file name starts at (history files: none). */
static bool wal_segno(const char *name, uint32_t seg_size, uint64_t *ret)
{
    char seg[25];
    uint32_t tli;
    enum cbfs_wal_kind k = cbfs_wal_classify(name, NULL);
    if (k == CBFS_WAL_HISTORY || k == CBFS_WAL_INVALID)
        return false;
    memcpy(seg, name, 24);
    seg[24] = '\0';
    return cbfs_wal_parse_segname(seg, seg_size, &tli, ret) == 0;
}

/* WAL DESTINATION lacks: every history file, and every other file from
 * segment `from` on (read, checked, stored again: DESTINATION seals its
 * own). */
static int copy_wal(CbfsRepo *src, CbfsRepo *dst, uint64_t from, uint32_t seg_size,
                    CbfsRateLimit *rate, Totals *tot, CbfsError *err)
{
    WalList have = {0}, want = {0};
    int rc = cbfs_store_list(src->store, "wal/", wal_cb, &want, err);
    if (rc == 0)
        rc = cbfs_store_list(dst->store, "wal/", wal_cb, &have, err);
    if (rc == 0 && have.n)
        qsort(have.names, have.n, sizeof(char *), cbfs_cmp_strp);
    if (rc == 0 && want.n)
        qsort(want.names, want.n, sizeof(char *), cbfs_cmp_strp);
    for (size_t i = 0; rc == 0 && i < want.n; i++) {
        const char *name = want.names[i];
        uint64_t segno;
        uint8_t *buf = NULL;
        size_t len;
        if (have.n && bsearch(&name, have.names, have.n, sizeof(char *), cbfs_cmp_strp))
            continue;
        if (wal_segno(name, seg_size, &segno) && segno < from)
            continue;
        if (rate) { /* what is read: the stored object */
            char *key = cbfs_wal_key(name);
            uint64_t size = 0;
            CbfsError e;
            cbfs_error_init(&e);
            if (cbfs_store_stat(src->store, key, &size, &e) == 0)
                cbfs_ratelimit_take(rate, size);
            free(key);
        }
        rc = cbfs_wal_read(src, name, &buf, &len, err);
        if (rc == -ENOENT) { /* expired meanwhile */
            cbfs_error_init(err);
            rc = 0;
            continue;
        }
        if (rc == 0)
            rc = cbfs_wal_push_buffer(dst, name, buf, len, err);
        free(buf);
        if (rc == 0)
            tot->wal++;
    }
    cbfs_store_free_names(have.names, have.n);
    cbfs_store_free_names(want.names, want.n);
    return rc;
}

static int copy_points(CbfsRepo *src, CbfsRepo *dst, uint64_t sysid, Totals *tot, CbfsError *err)
{
    CbfsKv **pts = NULL;
    size_t n = 0;
    int rc = cbfs_point_list(src, &pts, &n, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *name = cbfs_kv_get(pts[i], "name");
        const char *ts = cbfs_kv_get(pts[i], "time");
        uint64_t lsn, tli;
        time_t when;
        CbfsKv *old;
        if (!name || !ts || cbfs_parse_time(ts, &when, NULL) < 0 ||
            cbfs_lsn_parse(cbfs_kv_get(pts[i], "lsn") ? cbfs_kv_get(pts[i], "lsn") : "", &lsn) <
                0 ||
            cbfs_kv_get_u64(pts[i], "timeline", &tli) < 0)
            continue; /* point.c reads only valid ones */
        if (cbfs_point_read(dst, name, &old, err) == 0) {
            cbfs_kv_free(old);
            continue;
        }
        cbfs_error_init(err);
        rc = cbfs_point_create(dst, name, lsn, when, (uint32_t) tli, sysid, err);
        if (rc == -EEXIST) {
            cbfs_error_init(err);
            rc = 0;
        } else if (rc == 0) {
            tot->points++;
        }
    }
    for (size_t i = 0; i < n; i++)
        cbfs_kv_free(pts[i]);
    free(pts);
    return rc;
}

static int copy_pins(CbfsRepo *src, CbfsRepo *dst, Totals *tot, CbfsError *err)
{
    char **pins = NULL, **have = NULL;
    size_t n = 0, nhave = 0;
    int rc = cbfs_pin_list(src, &pins, &n, err);
    if (rc == 0)
        rc = cbfs_pin_list(dst, &have, &nhave, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        CbfsKv *rec;
        if (cbfs_pin_in(have, nhave, pins[i]))
            continue;
        if (cbfs_repo_read_backup(dst, pins[i], &rec, err) < 0) { /* not copied (--since) */
            cbfs_error_init(err);
            continue;
        }
        cbfs_kv_free(rec);
        rc = cbfs_pin_add(dst, pins[i], err);
        if (rc == -EEXIST) {
            cbfs_error_init(err);
            rc = 0;
        } else if (rc == 0) {
            tot->pins++;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(pins[i]);
    for (size_t i = 0; i < nhave; i++)
        free(have[i]);
    free(pins);
    free(have);
    return rc;
}

/* ---- the command ------------------------------------------------------ */

static void usage(void)
{
    printf("Usage: cbfs copy SOURCE DESTINATION [--node NAME] [--since LABEL] [--jobs N]\n"
           "                [--max-rate RATE] [--passphrase-file FILE]\n"
           "                [--dest-passphrase-file FILE]\n"
           "\n"
           "Copy into DESTINATION what it lacks of SOURCE: backups (oldest first), the\n"
           "WAL from its oldest backup on, restore points and pins.  Only blocks\n"
           "DESTINATION does not have are stored, each checked on the way; an\n"
           "encrypted DESTINATION seals with its own key.  A backup appears in\n"
           "DESTINATION once all of it is there; killed and run again, a copy goes on\n"
           "where it stopped.  DESTINATION must exist (cbfs init), with SOURCE's block\n"
           "size, and hold nothing of another database system.\n"
           "\n"
           "Options:\n"
           "  --node NAME                 copy this node of a repository that holds\n"
           "                              several (default: the default node)\n"
           "  --since LABEL               only that backup and newer ones (the WAL from\n"
           "                              the oldest backup DESTINATION then holds)\n"
           "  --jobs N                    files copied at once (default 2)\n"
           "  --max-rate RATE             at most RATE bytes a second read from SOURCE\n"
           "                              (50M, 1G; also max_rate in the configuration)\n"
           "  --passphrase-file FILE      SOURCE's passphrase (and DESTINATION's, unless\n"
           "                              given apart)\n"
           "  --dest-passphrase-file FILE DESTINATION's passphrase (also\n"
           "                              $CBFS_DEST_PASSPHRASE, $CBFS_DEST_PASSPHRASE_FILE)\n");
}

/* Unwrap DESTINATION's key with its own passphrase. */
static int unlock_dest(CbfsRepo *dst, CbfsError *err)
{
    char *pass = NULL;
    int rc;
    if (!dst->crypt)
        return 0;
    rc = cbfs_passphrase_read(CBFS_PASSPHRASE_DEST, dst->display, false, &pass, err);
    if (rc < 0) {
        if (rc == -ENOENT)
            cbfs_error_set(err, EACCES, CBFS_EXIT_USAGE,
                           "could not open repository \"%s\": repository is encrypted and no "
                           "passphrase was given (set CBFS_DEST_PASSPHRASE or "
                           "CBFS_DEST_PASSPHRASE_FILE, or use --dest-passphrase-file)",
                           dst->display);
        else
            cbfs_error_prefix(err, "could not open repository \"%s\"", dst->display);
        return rc;
    }
    rc = cbfs_crypt_unlock_with(dst->crypt, pass, err);
    cbfs_passphrase_free(pass);
    return rc;
}

static int cmp_stop(const void *a, const void *b)
{
    const CbfsKv *x = *(CbfsKv *const *) a, *y = *(CbfsKv *const *) b;
    uint64_t tx = 0, ty = 0;
    cbfs_kv_get_u64(x, "stop_time", &tx);
    cbfs_kv_get_u64(y, "stop_time", &ty);
    if (tx != ty)
        return tx < ty ? -1 : 1;
    return strcmp(cbfs_kv_get(x, "label"), cbfs_kv_get(y, "label"));
}

int cmd_copy(int argc, char **argv)
{
    static const struct option opts[] = {
        {"node", required_argument, NULL, CMD_OPT_NODE},
        {"since", required_argument, NULL, 's'},
        {"jobs", required_argument, NULL, 'j'},
        {"max-rate", required_argument, NULL, 'r'},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"dest-passphrase-file", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *node = NULL, *since = NULL, *rate_arg = NULL;
    long jobs = 2;
    CbfsRepo *src = NULL, *dst = NULL;
    CbfsLocation loc;
    CbfsKv **backups = NULL;
    size_t nbackups = 0;
    CbfsRateLimit *rate = NULL;
    Totals tot = {0};
    CbfsError err;
    uint64_t src_sysid = 0, owner = 0, since_stop = 0, oldest = UINT64_MAX;
    uint32_t seg_size = 0;
    bool have_src_sysid = false;
    double t0 = cbfs_now();
    int c, rc = 0;

    cbfs_error_init(&err);
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case CMD_OPT_NODE:
            node = optarg;
            break;
        case 's':
            since = optarg;
            break;
        case 'j':
            if (cbfs_parse_int(optarg, 1, 64, &jobs) < 0)
                return cmd_usage_error("copy", "invalid --jobs \"%s\" (1 to 64)", optarg);
            break;
        case 'r':
            rate_arg = optarg;
            break;
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case 'd':
            cbfs_passphrase_set_dest_file(optarg);
            break;
        case 'h':
            usage();
            return 0;
        default:
            return cmd_usage_error("copy", "unknown option");
        }
    }
    if (argc - optind != 2)
        return cmd_usage_error("copy", argc - optind < 2 ? "a source and a destination are needed"
                                                         : "too many arguments");
    if ((rc = cmd_max_rate("copy", rate_arg)) != 0)
        return rc;
    rate = cbfs_ratelimit_global();
    if ((rc = cmd_open_repo(argv[optind], false, &src, NULL)) != 0)
        goto out_rc;
    if (cbfs_location_parse(argv[optind + 1], false, &loc, &err) < 0)
        goto fail;
    rc = cbfs_repo_open(&loc, &dst, &err);
    cbfs_location_release(&loc);
    if (rc < 0 || unlock_dest(dst, &err) < 0)
        goto fail;
    if (strcmp(src->id, dst->id) == 0) {
        cbfs_error_set(&err, EINVAL, CBFS_EXIT_USAGE,
                       "could not copy repository \"%s\" into \"%s\": they are the same repository",
                       src->display, dst->display);
        goto fail;
    }
    if (src->block_size != dst->block_size) {
        cbfs_error_set(&err, EINVAL, CBFS_EXIT_USAGE,
                       "could not copy repository \"%s\" into \"%s\": its block size is %u, "
                       "not %u (make it with cbfs init --block-size %u)",
                       src->display, dst->display, dst->block_size, src->block_size,
                       src->block_size);
        goto fail;
    }
    if (cbfs_repo_select_node(src, node, &err) < 0 || cbfs_repo_set_node(dst, node, &err) < 0)
        goto fail;
    rc = cbfs_repo_cluster(src, &src_sysid, &err);
    if (rc < 0 && rc != -ENOENT)
        goto fail;
    have_src_sysid = rc == 0;
    cbfs_error_init(&err);
    if (have_src_sysid) {
        if (cbfs_repo_claim(dst, src_sysid, &owner, &err) < 0)
            goto fail;
        if (owner != src_sysid) {
            cbfs_error_set(&err, EINVAL, CBFS_EXIT_USAGE,
                           "could not copy into repository \"%s\": it holds database system "
                           "%llu, not %llu of repository \"%s\"",
                           dst->display, (unsigned long long) owner, (unsigned long long) src_sysid,
                           src->display);
            goto fail;
        }
    }

    /* backups DESTINATION lacks, oldest first */
    if (cbfs_repo_list_backups(src, &backups, &nbackups, &err) < 0)
        goto fail;
    if (nbackups)
        qsort(backups, nbackups, sizeof(*backups), cmp_stop);
    if (since) {
        size_t i;
        for (i = 0; i < nbackups; i++)
            if (strcmp(cbfs_kv_get(backups[i], "label"), since) == 0)
                break;
        if (i == nbackups) {
            cbfs_error_set(&err, ENOENT, CBFS_EXIT_NOT_FOUND,
                           "backup \"%s\" not found in repository \"%s\"", since, src->display);
            goto fail;
        }
        cbfs_kv_get_u64(backups[i], "stop_time", &since_stop);
    }
    for (size_t i = 0; i < nbackups; i++) {
        const char *label = cbfs_kv_get(backups[i], "label");
        uint64_t stop = 0;
        CbfsKv *have;
        cbfs_kv_get_u64(backups[i], "stop_time", &stop);
        if (since && (stop < since_stop || (stop == since_stop && strcmp(label, since) < 0)))
            continue;
        if (cbfs_repo_read_backup(dst, label, &have, &err) == 0) {
            cbfs_kv_free(have);
            continue;
        }
        if (err.code != CBFS_EXIT_NOT_FOUND && err.msg[0])
            goto fail;
        cbfs_error_init(&err);
        rc = copy_backup(src, dst, backups[i], label, jobs, rate, &tot, &err);
        if (rc < 0) {
            if (rc == -ENOENT && strstr(err.msg, "expired meanwhile")) {
                cbfs_warning("%s", err.msg);
                cbfs_error_init(&err);
                continue;
            }
            goto fail;
        }
    }

    /* WAL from the oldest backup DESTINATION holds on */
    cbfs_repo_free_backups(backups, nbackups);
    backups = NULL;
    nbackups = 0;
    if (cbfs_repo_list_backups(dst, &backups, &nbackups, &err) < 0)
        goto fail;
    for (size_t i = 0; i < nbackups; i++) {
        const char *ws = cbfs_kv_get(backups[i], "wal_start");
        uint64_t size = 0, segno;
        uint32_t tli;
        if (!ws || cbfs_kv_get_u64(backups[i], "wal_segment_size", &size) < 0 || !size ||
            size > UINT32_MAX || cbfs_wal_parse_segname(ws, (uint32_t) size, &tli, &segno) < 0)
            continue;
        seg_size = (uint32_t) size;
        if (segno < oldest)
            oldest = segno;
    }
    if (seg_size && copy_wal(src, dst, oldest, seg_size, rate, &tot, &err) < 0)
        goto fail;
    if (have_src_sysid && copy_points(src, dst, src_sysid, &tot, &err) < 0)
        goto fail;
    if (copy_pins(src, dst, &tot, &err) < 0)
        goto fail;
    {
        char rd[32], st[32];
        cbfs_format_size(tot.bytes_read, rd, sizeof(rd));
        cbfs_format_size(tot.bytes_stored, st, sizeof(st));
        printf("copy complete: %u backups (%llu blocks, %llu new; read %s, stored %s), %u WAL "
               "files, %u restore points, %u pins, %.1f s\n",
               tot.backups, (unsigned long long) tot.blocks, (unsigned long long) tot.blocks_new,
               rd, st, tot.wal, tot.points, tot.pins, cbfs_now() - t0);
    }
    rc = 0;
    goto out;
fail:
    rc = cmd_fail(&err);
out:
    cbfs_repo_free_backups(backups, nbackups);
    cbfs_repo_free(dst);
out_rc:
    cbfs_repo_free(src);
    return rc;
}
