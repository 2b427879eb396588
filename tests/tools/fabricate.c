/*
 * fabricate.c - a backup whose manifest describes far more data than the
 * repository holds, for bench/mount-scale.sh.
 *
 *   fabricate REPO SOURCE LABEL SIZE FOLDER [DISTINCT]
 *
 * Stores backup LABEL in REPO (a local repository without encryption): a
 * copy of backup SOURCE (a real one: its files, blocks and metadata, so a
 * server can start on a mount of LABEL), plus relation files of 1 GiB
 * (PostgreSQL's segments) in SOURCE's folder FOLDER ("base/5"), 9000000,
 * 9000000.1, ... adding up to SIZE bytes ("1T", "100G").  Their blocks
 * cycle through DISTINCT (default 4096) distinct, compressible blocks
 * stored once, one after another in a few packs, as a first full backup
 * lays them out; so the manifest holds SIZE / block size real block
 * references over a few hundred MB of packs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbfs/codec.h"
#include "cbfs/location.h"
#include "cbfs/manifest.h"
#include "cbfs/pack.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"

#define SEGMENT (1ull << 30)

static const char *const meta_keys[] = {
    "label",      "cbfs_version",   "pg_version", "system_identifier", "timeline",
    "start_lsn",  "stop_lsn",       "start_time", "stop_time",         "backup_label",
    "block_size", "tablespace_map", "based_on",   "wal_segment_size",  "data_checksums",
};

static void die(const char *what, const CbfsError *err)
{
    fprintf(stderr, "fabricate: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    exit(1);
}

typedef struct Copy {
    CbfsManifest *src, *dst;
    int64_t *map; /* source id -> new id */
    size_t nmap;
    const char *db_path; /* FOLDER */
    int64_t db_dir;      /* its new id */
    CbfsError err;
} Copy;

static int copy_file(const CbfsFileEntry *f, void *ctx)
{
    Copy *c = ctx;
    CbfsFileEntry e = *f;
    CbfsBlockRef *refs = NULL;
    size_t n = 0;
    int64_t id = 0;

    if ((size_t) f->id >= c->nmap) {
        size_t nn = (size_t) f->id * 2 + 16;
        c->map = cbfs_xrealloc(c->map, nn * sizeof(int64_t));
        memset(c->map + c->nmap, 0, (nn - c->nmap) * sizeof(int64_t));
        c->nmap = nn;
    }
    e.parent = f->parent ? c->map[f->parent] : 0;
    if (cbfs_manifest_add_file(c->dst, &e, &id, &c->err) < 0)
        return -1;
    c->map[f->id] = id;
    if (f->type == CBFS_FILE_DIR && strcmp(f->path, c->db_path) == 0)
        c->db_dir = id;
    if (f->type != CBFS_FILE_REG)
        return 0;
    if (cbfs_manifest_file_blocks(c->src, f->id, &refs, &n, &c->err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        refs[i].file = id;
    if (cbfs_manifest_add_blocks(c->dst, refs, n, &c->err) < 0) {
        free(refs);
        return -1;
    }
    free(refs);
    return 0;
}

int main(int argc, char **argv)
{
    CbfsLocation loc;
    CbfsRepo *repo;
    CbfsKv *rec, *nrec;
    CbfsError err;
    Copy c = {0};
    CbfsCodec *codec;
    CbfsBlockRef *distinct, ref;
    CbfsPackWriter *w = NULL;
    uint64_t size, ndistinct = 4096, bs, nseg, k = 0;
    char *cache, *src_path, *dst_path;
    uint8_t *raw, *stored;
    size_t cap;

    if (argc < 6 || argc > 7 || cbfs_parse_size(argv[4], &size) < 0 ||
        (argc == 7 && cbfs_parse_size(argv[6], &ndistinct) < 0) || ndistinct == 0) {
        fprintf(stderr, "usage: fabricate REPO SOURCE LABEL SIZE FOLDER [DISTINCT]\n");
        return 2;
    }
    c.db_path = argv[5];
    cbfs_error_init(&err);
    if (cbfs_location_parse(argv[1], false, &loc, &err) < 0 ||
        cbfs_repo_open(&loc, &repo, &err) < 0)
        die("could not open the repository", &err);
    if (repo->crypt)
        die("an encrypted repository is not supported", NULL);
    bs = repo->block_size;
    if (cbfs_repo_read_backup(repo, argv[2], &rec, &err) < 0 ||
        cbfs_repo_cache_dir(repo, &cache, &err) < 0 ||
        cbfs_repo_fetch_manifest(repo, rec, cache, &src_path, &err) < 0 ||
        cbfs_manifest_open(src_path, &c.src, &err) < 0)
        die("could not read the source backup", &err);

    /* the source, copied */
    dst_path = cbfs_xasprintf("%s/fabricate-%d.db", cache, (int) getpid());
    unlink(dst_path);
    cbfs_error_init(&c.err);
    if (cbfs_manifest_create(dst_path, &c.dst, &err) < 0 || cbfs_manifest_begin(c.dst, &err) < 0)
        die("could not create the manifest", &err);
    for (size_t i = 0; i < CBFS_ARRAY_LEN(meta_keys); i++) {
        char *v = cbfs_manifest_get_meta(c.src, meta_keys[i]);
        if (v && cbfs_manifest_set_meta(c.dst, meta_keys[i], v, &err) < 0)
            die("could not copy the metadata", &err);
        free(v);
    }
    cbfs_manifest_set_meta(c.dst, "label", argv[3], &err);
    if (cbfs_manifest_foreach_file(c.src, copy_file, &c, &err) != 0)
        die("could not copy the source's files", &c.err);
    if (!c.db_dir)
        die("the source backup has no such folder", NULL);

    /* the distinct blocks, stored once */
    codec = cbfs_repo_codec_new(repo, repo->compress_level);
    distinct = cbfs_xcalloc(ndistinct, sizeof(*distinct));
    raw = cbfs_xmalloc(bs);
    cap = cbfs_codec_bound(bs);
    stored = cbfs_xmalloc(cap);
    for (uint64_t i = 0; i < ndistinct; i++) {
        size_t len;
        for (uint64_t b = 0; b < bs; b++)
            raw[b] = (uint8_t) ("fabricated block "[b % 17] + (b % 4096 == 0 ? i : 0));
        snprintf((char *) raw, 64, "distinct block %llu of %llu", (unsigned long long) i,
                 (unsigned long long) ndistinct);
        if (!w)
            w = cbfs_pack_writer_new();
        memset(&ref, 0, sizeof(ref));
        cbfs_codec_block_id(codec, raw, bs, ref.id);
        len = cbfs_codec_encode(codec, ref.id, raw, bs, stored, cap);
        snprintf(ref.pack, sizeof(ref.pack), "%s", cbfs_pack_writer_name(w));
        ref.offset = cbfs_pack_writer_append(w, ref.id, stored, (uint32_t) len, (uint32_t) bs);
        ref.stored_len = (uint32_t) len;
        ref.raw_len = (uint32_t) bs;
        distinct[i] = ref;
        if (cbfs_pack_writer_size(w) >= CBFS_PACK_TARGET_SIZE || i + 1 == ndistinct) {
            if (cbfs_pack_writer_finish(w, repo->store, repo->crypt, &err) < 0)
                die("could not store a pack", &err);
            cbfs_pack_writer_free(w);
            w = NULL;
        }
    }

    /* the relation files: 1 GiB segments, blocks cycling through them */
    nseg = (size + SEGMENT - 1) / SEGMENT;
    for (uint64_t s = 0; s < nseg; s++) {
        uint64_t fsize = s + 1 < nseg ? SEGMENT : size - s * SEGMENT, nblocks = fsize / bs;
        CbfsBlockRef *refs = cbfs_xmalloc(nblocks * sizeof(*refs));
        char *path = s ? cbfs_xasprintf("%s/9000000.%llu", c.db_path, (unsigned long long) s)
                       : cbfs_xasprintf("%s/9000000", c.db_path);
        CbfsFileEntry f = {.path = path,
                           .type = CBFS_FILE_REG,
                           .mode = 0600,
                           .uid = 0,
                           .gid = 0,
                           .size = nblocks * bs,
                           .mtime = 1700000000,
                           .parent = c.db_dir};
        int64_t id;
        if (cbfs_manifest_add_file(c.dst, &f, &id, &err) < 0)
            die("could not add a file", &err);
        for (uint64_t b = 0; b < nblocks; b++, k++) {
            refs[b] = distinct[k % ndistinct];
            refs[b].file = id;
            refs[b].blockno = b;
        }
        if (cbfs_manifest_add_blocks(c.dst, refs, nblocks, &err) < 0)
            die("could not add blocks", &err);
        free(refs);
        free(path);
    }
    if (cbfs_manifest_commit(c.dst, &err) < 0)
        die("could not write the manifest", &err);
    cbfs_manifest_free(c.dst);
    cbfs_manifest_free(c.src);
    unlink(src_path);

    /* the record: the source's, with the new label */
    {
        /* one "key = value" line per key (kv.h) */
        char *text = cbfs_kv_format(rec), *line, *save = NULL;
        CbfsBuf keep;
        cbfs_buf_init(&keep);
        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
            if (strncmp(line, "manifest", 8) != 0 && strncmp(line, "label ", 6) != 0)
                cbfs_buf_printf(&keep, "%s\n", line);
        if (cbfs_kv_parse(keep.data ? keep.data : "", keep.len, &nrec, &err) < 0)
            die("could not copy the record", &err);
        cbfs_buf_release(&keep);
        free(text);
    }
    if (cbfs_repo_commit_backup(repo, argv[3], dst_path, nrec, &err) < 0)
        die("could not store the backup", &err);
    unlink(dst_path);
    printf("%s: %llu block references in %llu files of 1 GiB over %llu distinct blocks\n", argv[3],
           (unsigned long long) k, (unsigned long long) nseg, (unsigned long long) ndistinct);
    free(dst_path);
    free(src_path);
    free(cache);
    free(distinct);
    free(raw);
    free(stored);
    free(c.map);
    cbfs_codec_free(codec);
    cbfs_kv_free(rec);
    cbfs_kv_free(nrec);
    cbfs_repo_free(repo);
    cbfs_location_release(&loc);
    return 0;
}
