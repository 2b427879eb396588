/*
 * backup.c - `cbfs backup`: a logically full, physically incremental backup
 * of a running cluster (DESIGN §4).
 *
 * Steps: check the data directory, the server and the repository's cluster;
 * reserve WAL with a temporary slot; pg_backup_start; walk the data
 * directory and tablespaces into the manifest; read every file in block-
 * sized pieces across --jobs threads (hash, look up, compress new blocks,
 * append to the thread's own pack, store full packs); pg_backup_stop; copy
 * the WAL from start to stop into the repository where the archiver has not
 * already; store the manifest, then the record.  Nothing the backup stores
 * before the record is referenced by anything, so a backup killed at any
 * moment leaves the repository as it was (plus unreferenced packs).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cbfs/blockindex.h"
#include "cbfs/codec.h"
#include "cbfs/doomed.h"
#include "cbfs/lock.h"
#include "cbfs/log.h"
#include "cbfs/manifest.h"
#include "cbfs/pack.h"
#include "cbfs/ratelimit.h"
#include "cbfs/pgfile.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "cbfs/walarchive.h"
#include "commands.h"
#include "patroni.h"
#include "pgsession.h"

#define CHUNK_BYTES         (64u << 20) /* a work unit covers at most this much of one file */
#define REF_BATCH           256
#define OPT_STANDBY_TIMEOUT 0x2001
#define OPT_PATRONI         0x2002
#define OPT_PATRONI_MAX_LAG 0x2003
#define OPT_MAX_RATE        0x2004
#define OPT_IO_NICE         0x2005

typedef struct BackupFile {
    int64_t id;      /* manifest file id */
    char *src;       /* absolute path to read */
    const char *rel; /* path in the manifest (points into src or owned) */
    char *rel_owned;
    uint64_t size;  /* size at walk time: what we back up */
    bool relation;  /* a relation file: verify page checksums */
    uint32_t segno; /* relation segment number (for page checksums) */
    int vanished;   /* set (atomically) if it disappeared during the backup */
} BackupFile;

typedef struct WorkUnit {
    BackupFile *file;
    uint64_t first_block;
    uint64_t nblocks;
} WorkUnit;

typedef struct Backup {
    CbfsRepo *repo;
    CbfsBlockIndex *index;
    CbfsManifest *manifest;
    pthread_mutex_t manifest_lock; /* guards manifest */
    uint32_t block_size;
    uint64_t start_lsn;
    bool checksums;

    BackupFile **files;
    size_t nfiles, files_cap;
    WorkUnit *units;
    size_t nunits, units_cap;
    size_t next_unit;       /* atomic */
    BackupFile *pg_control; /* copied last */

    /* statistics, atomic */
    uint64_t bytes_read;
    uint64_t bytes_new_raw;
    uint64_t bytes_stored;
    uint64_t blocks_new;
    uint64_t blocks_reused;
    uint64_t bad_pages;
    uint64_t total_bytes;

    int failed; /* atomic: first failure stops the others */
    CbfsError err;
    pthread_mutex_t err_lock;
} Backup;

typedef struct Worker {
    Backup *b;
    pthread_t thread;
    CbfsCodec *codec;
    CbfsPackWriter *pack;
    uint8_t *buf;
    uint8_t *enc;
    size_t enc_cap;
    CbfsBlockRef refs[REF_BATCH];
    size_t nrefs;
    CbfsError err;
    /* the sealed pack being stored while the worker fills the next one */
    CbfsPackWriter *up_pack;
    pthread_t up_thread;
    bool up_running;
    int up_rc;
    CbfsError up_err;
} Worker;

static void backup_fail(Backup *b, const CbfsError *err)
{
    pthread_mutex_lock(&b->err_lock);
    if (!b->failed) {
        b->err = *err;
        __atomic_store_n(&b->failed, 1, __ATOMIC_SEQ_CST);
    }
    pthread_mutex_unlock(&b->err_lock);
}

static int flush_refs(Worker *w)
{
    int rc = 0;
    if (w->nrefs == 0)
        return 0;
    pthread_mutex_lock(&w->b->manifest_lock);
    rc = cbfs_manifest_add_blocks(w->b->manifest, w->refs, w->nrefs, &w->err);
    pthread_mutex_unlock(&w->b->manifest_lock);
    w->nrefs = 0;
    return rc;
}

static int start_pack(Worker *w)
{
    w->pack = cbfs_pack_writer_new();
    return cbfs_blockindex_pack_begin(w->b->index, cbfs_pack_writer_name(w->pack), &w->err);
}

/* Store a sealed pack and mark it stored in the dedup index. */
static int store_pack(Backup *b, CbfsPackWriter *pack, CbfsError *err)
{
    int rc = cbfs_pack_writer_finish(pack, b->repo->store, b->repo->crypt, err);
    if (rc == 0 && cbfs_pack_writer_count(pack) > 0)
        rc = cbfs_blockindex_pack_stored(b->index, cbfs_pack_writer_name(pack), err);
    cbfs_pack_writer_free(pack);
    return rc;
}

static void *upload_main(void *arg)
{
    Worker *w = arg;
    w->up_rc = store_pack(w->b, w->up_pack, &w->up_err);
    w->up_pack = NULL;
    return NULL;
}

/* Wait for the pack being stored in the background; its result. */
static int wait_upload(Worker *w)
{
    if (!w->up_running)
        return 0;
    pthread_join(w->up_thread, NULL);
    w->up_running = false;
    if (w->up_rc < 0) {
        w->err = w->up_err;
        return w->up_rc;
    }
    return 0;
}

/* Seal the current pack and store it: in the background (one pack in
 * flight per worker, so compression goes on while an object store takes
 * its time), or with wait, now, waiting for every pack of this worker.
 * Packs are all stored before the backup's manifest is: a failed store
 * fails the backup. */
static int finish_pack(Worker *w, bool wait)
{
    int rc = wait_upload(w);
    CbfsPackWriter *pack = w->pack;
    if (rc < 0 || !pack)
        return rc;
    w->pack = NULL;
    if (!wait) {
        cbfs_error_init(&w->up_err);
        w->up_pack = pack;
        if (pthread_create(&w->up_thread, NULL, upload_main, w) == 0) {
            w->up_running = true;
            return 0;
        }
        w->up_pack = NULL;
    }
    return store_pack(w->b, pack, &w->err);
}

/* Check the pages of one block; count and record the bad ones. */
static int verify_pages(Worker *w, BackupFile *f, int fd, uint64_t blockno, const uint8_t *data,
                        size_t len)
{
    Backup *b = w->b;
    for (size_t off = 0; off + CBFS_PG_PAGE_SIZE <= len; off += CBFS_PG_PAGE_SIZE) {
        uint64_t page = (blockno * b->block_size + off) / CBFS_PG_PAGE_SIZE;
        uint32_t abs = (uint32_t) (f->segno * CBFS_PG_RELSEG_PAGES + page);
        uint64_t lsn;
        uint8_t again[CBFS_PG_PAGE_SIZE];
        size_t n;
        int rc;

        if (cbfs_pg_page_verify(data + off, abs, &lsn) == CBFS_PG_PAGE_OK || lsn >= b->start_lsn)
            continue;
        /* maybe a torn read of a page being written: look once more */
        if (cbfs_pread_full(fd, again, sizeof(again), (off_t) (page * CBFS_PG_PAGE_SIZE), &n) ==
                0 &&
            n == sizeof(again) &&
            (memcmp(again, data + off, sizeof(again)) != 0 ||
             cbfs_pg_page_verify(again, abs, &lsn) == CBFS_PG_PAGE_OK || lsn >= b->start_lsn))
            continue;
        __atomic_add_fetch(&b->bad_pages, 1, __ATOMIC_RELAXED);
        cbfs_warning("page %llu of file \"%s\" has an invalid checksum", (unsigned long long) page,
                     f->rel);
        pthread_mutex_lock(&b->manifest_lock);
        rc = cbfs_manifest_add_bad_page(b->manifest, f->id, page, lsn, &w->err);
        pthread_mutex_unlock(&b->manifest_lock);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int store_block(Worker *w, BackupFile *f, uint64_t blockno, const uint8_t *data, size_t len)
{
    Backup *b = w->b;
    CbfsBlockRef *ref = &w->refs[w->nrefs];
    int rc;

    if (cbfs_is_zero(data, len))
        return 0; /* all-zero blocks are not stored: absent means zeros */
    cbfs_codec_block_id(w->codec, data, len, ref->id);
    if (cbfs_blockindex_lookup(b->index, ref->id, ref) == 0 && ref->raw_len == len) {
        __atomic_add_fetch(&b->blocks_reused, 1, __ATOMIC_RELAXED);
    } else {
        size_t n = cbfs_codec_encode(w->codec, ref->id, data, len, w->enc, w->enc_cap);
        if (!w->pack && (rc = start_pack(w)) < 0)
            return rc;
        ref->offset =
            cbfs_pack_writer_append(w->pack, ref->id, w->enc, (uint32_t) n, (uint32_t) len);
        strcpy(ref->pack, cbfs_pack_writer_name(w->pack));
        ref->stored_len = (uint32_t) n;
        ref->raw_len = (uint32_t) len;
        rc = cbfs_blockindex_add(b->index, ref, &w->err);
        if (rc < 0)
            return rc;
        __atomic_add_fetch(&b->blocks_new, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&b->bytes_new_raw, len, __ATOMIC_RELAXED);
        __atomic_add_fetch(&b->bytes_stored, n, __ATOMIC_RELAXED);
        if (cbfs_pack_writer_size(w->pack) >= CBFS_PACK_TARGET_SIZE) {
            /* the manifest may reference the pack only once it is stored
             * (or the whole backup fails): flush after storing */
            if ((rc = finish_pack(w, false)) < 0)
                return rc;
        }
    }
    ref->file = f->id;
    ref->blockno = blockno;
    if (++w->nrefs == REF_BATCH)
        return flush_refs(w);
    return 0;
}

static int process_unit(Worker *w, WorkUnit *u)
{
    Backup *b = w->b;
    BackupFile *f = u->file;
    int fd, rc = 0;

    if (__atomic_load_n(&f->vanished, __ATOMIC_RELAXED))
        return 0;
    fd = open(f->src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) { /* dropped during the backup: WAL replay removes it too */
            __atomic_store_n(&f->vanished, 1, __ATOMIC_RELAXED);
            return 0;
        }
        return cbfs_error_set(&w->err, errno, CBFS_EXIT_ERROR, "could not open file \"%s\": %s",
                              f->src, strerror(errno));
    }
    for (uint64_t i = 0; i < u->nblocks && rc == 0; i++) {
        uint64_t blockno = u->first_block + i;
        uint64_t off = blockno * b->block_size;
        size_t want = f->size - off < b->block_size ? (size_t) (f->size - off) : b->block_size;
        size_t n;

        if (__atomic_load_n(&b->failed, __ATOMIC_RELAXED))
            break;
        rc = cbfs_pread_full(fd, w->buf, want, (off_t) off, &n);
        if (rc < 0) {
            rc = cbfs_error_set(&w->err, -rc, CBFS_EXIT_ERROR, "could not read file \"%s\": %s",
                                f->src, strerror(-rc));
            break;
        }
        /* truncated while we read: WAL replay truncates it again */
        if (n < want)
            memset(w->buf + n, 0, want - n);
        __atomic_add_fetch(&b->bytes_read, want, __ATOMIC_RELAXED);
        cbfs_ratelimit_take(cbfs_ratelimit_global(), want);
        if (f->relation && b->checksums)
            rc = verify_pages(w, f, fd, blockno, w->buf, want);
        if (rc == 0)
            rc = store_block(w, f, blockno, w->buf, want);
    }
    close(fd);
    return rc;
}

static void *worker_main(void *arg)
{
    Worker *w = arg;
    Backup *b = w->b;
    int rc = 0;

    for (;;) {
        size_t i = __atomic_fetch_add(&b->next_unit, 1, __ATOMIC_RELAXED);
        if (i >= b->nunits || __atomic_load_n(&b->failed, __ATOMIC_RELAXED))
            break;
        rc = process_unit(w, &b->units[i]);
        if (rc < 0) {
            cbfs_error_prefix(&w->err, "could not back up \"%s\"", b->units[i].file->rel);
            break;
        }
    }
    /* store the last pack before the refs to it: a reference never precedes its pack */
    if (rc == 0)
        rc = finish_pack(w, true);
    else
        wait_upload(w); /* no thread outlives its worker */
    if (rc == 0)
        rc = flush_refs(w);
    if (rc < 0)
        backup_fail(b, &w->err);
    return NULL;
}

/* ---- walking the data directory ---- */

static void add_unit(Backup *b, BackupFile *f, uint64_t first, uint64_t n)
{
    if (b->nunits == b->units_cap) {
        b->units_cap = b->units_cap ? 2 * b->units_cap : 1024;
        b->units = cbfs_xrealloc(b->units, b->units_cap * sizeof(WorkUnit));
    }
    b->units[b->nunits++] = (WorkUnit){f, first, n};
}

static int add_entry(Backup *b, int64_t parent, const char *rel, const struct stat *st,
                     enum cbfs_file_type type, const char *target, int64_t *ret_id, CbfsError *err)
{
    CbfsFileEntry fe = {
        .path = rel,
        .parent = parent,
        .type = type,
        .mode = st->st_mode & 07777,
        .uid = st->st_uid,
        .gid = st->st_gid,
        .size = type == CBFS_FILE_REG ? (uint64_t) st->st_size : 0,
        .mtime = st->st_mtime,
        .target = target,
    };
    int rc = cbfs_manifest_add_file(b->manifest, &fe, ret_id, err);
    if (rc < 0)
        cbfs_error_prefix(err, "could not record \"%s\"", rel);
    return rc;
}

static int add_regular(Backup *b, int64_t parent, const char *src, const char *rel,
                       const struct stat *st, CbfsError *err)
{
    BackupFile *f = cbfs_xcalloc(1, sizeof(*f));
    CbfsRelFile rf;
    const char *base = strrchr(rel, '/');
    char *dir = cbfs_xstrdup(rel);
    char *slash = strrchr(dir, '/');
    uint64_t nblocks, per_unit;
    int rc;

    rc = add_entry(b, parent, rel, st, CBFS_FILE_REG, NULL, &f->id, err);
    if (rc < 0) {
        free(f);
        free(dir);
        return rc;
    }
    if (slash)
        *slash = '\0';
    f->src = cbfs_xstrdup(src);
    f->rel_owned = cbfs_xstrdup(rel);
    f->rel = f->rel_owned;
    f->size = (uint64_t) st->st_size;
    if (slash && cbfs_pg_is_relation_dir(dir) && cbfs_pg_parse_relfile(base + 1, &rf)) {
        f->relation = true;
        f->segno = rf.segno;
    }
    free(dir);
    if (b->nfiles == b->files_cap) {
        b->files_cap = b->files_cap ? 2 * b->files_cap : 1024;
        b->files = cbfs_xrealloc(b->files, b->files_cap * sizeof(BackupFile *));
    }
    b->files[b->nfiles++] = f;
    b->total_bytes += f->size;
    if (strcmp(rel, "global/pg_control") == 0) {
        b->pg_control = f; /* copied last */
        return 0;
    }
    nblocks = (f->size + b->block_size - 1) / b->block_size;
    per_unit = CHUNK_BYTES / b->block_size;
    for (uint64_t first = 0; first < nblocks; first += per_unit)
        add_unit(b, f, first, nblocks - first < per_unit ? nblocks - first : per_unit);
    return 0;
}

static int walk_dir(Backup *b, int64_t parent, const char *src, const char *rel,
                    const char *pg_major, CbfsError *err);

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static int walk_entry(Backup *b, int64_t parent, const char *src, const char *rel,
                      const char *pg_major, const char *const *siblings, size_t nsiblings,
                      const char *name, CbfsError *err)
{
    struct stat st;
    enum cbfs_pg_exclude ex;
    bool top = strchr(rel, '/') == NULL;

    if (lstat(src, &st) < 0) {
        if (errno == ENOENT)
            return 0; /* removed since the listing */
        return cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not stat file \"%s\": %s", src,
                              strerror(errno));
    }
    /* pg_wal may be a symlink to another disk: it is recorded as an empty folder */
    if (top && strcmp(rel, "pg_wal") == 0 && S_ISLNK(st.st_mode) && stat(src, &st) < 0)
        return cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not stat \"%s\": %s", src,
                              strerror(errno));
    ex = cbfs_pg_exclude_path(rel, S_ISDIR(st.st_mode));
    if (ex == CBFS_PG_EXCLUDE)
        return 0;
    if (S_ISREG(st.st_mode)) {
        char *dir = cbfs_xstrdup(rel);
        char *slash = strrchr(dir, '/');
        bool unlogged = false;
        if (slash) {
            CbfsRelFile rf;
            *slash = '\0';
            /* an unlogged relation has an init fork beside it; siblings is sorted */
            if (cbfs_pg_is_relation_dir(dir) && cbfs_pg_parse_relfile(name, &rf) &&
                strcmp(rf.fork, "init") != 0) {
                char init[32];
                const char *key = init;
                snprintf(init, sizeof(init), "%u_init", rf.relfilenode);
                unlogged = bsearch(&key, siblings, nsiblings, sizeof(char *), cmp_name) != NULL;
            }
        }
        free(dir);
        if (unlogged)
            return 0; /* unlogged relations come back empty: only the init fork is kept */
        return add_regular(b, parent, src, rel, &st, err);
    }
    if (S_ISDIR(st.st_mode)) {
        int64_t id;
        int rc = add_entry(b, parent, rel, &st, CBFS_FILE_DIR, NULL, &id, err);
        if (rc < 0 || ex == CBFS_PG_EXCLUDE_CONTENTS)
            return rc;
        if (strcmp(rel, "pg_wal") == 0)
            return 0;
        return walk_dir(b, id, src, rel, pg_major, err);
    }
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(src, target, sizeof(target) - 1);
        struct stat tst;
        CbfsRelFile rf;
        int rc;
        if (n < 0)
            return cbfs_error_set(err, errno, CBFS_EXIT_ERROR,
                                  "could not read symbolic link \"%s\": %s", src, strerror(errno));
        target[n] = '\0';
        if (strncmp(rel, "pg_tblspc/", 10) != 0 || strchr(rel + 10, '/') ||
            !cbfs_pg_parse_relfile(rel + 10, &rf) || rf.fork[0] || rf.segno) {
            cbfs_warning("skipping symbolic link \"%s\" outside pg_tblspc", rel);
            return 0;
        }
        if (stat(src, &tst) < 0 || !S_ISDIR(tst.st_mode))
            return cbfs_error_set(err, ENOTDIR, CBFS_EXIT_ERROR,
                                  "tablespace link \"%s\" does not point to a directory", src);
        int64_t link_id;
        rc = add_entry(b, parent, rel, &st, CBFS_FILE_SYMLINK, target, &link_id, err);
        if (rc < 0)
            return rc;
        /* the tablespace's contents: only this server version's folder */
        {
            DIR *d = opendir(src);
            struct dirent *de;
            if (!d)
                return cbfs_error_set(err, errno, CBFS_EXIT_ERROR,
                                      "could not open directory \"%s\": %s", src, strerror(errno));
            while (rc == 0 && (de = readdir(d)) != NULL) {
                char *prefix = cbfs_xasprintf("PG_%s_", pg_major);
                if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
                    char *s2 = cbfs_xasprintf("%s/%s", src, de->d_name);
                    char *r2 = cbfs_xasprintf("%s/%s", rel, de->d_name);
                    struct stat vst;
                    if (lstat(s2, &vst) == 0 && S_ISDIR(vst.st_mode)) {
                        int64_t vid;
                        /* the version folder's parent is the tablespace link */
                        rc = add_entry(b, link_id, r2, &vst, CBFS_FILE_DIR, NULL, &vid, err);
                        if (rc == 0)
                            rc = walk_dir(b, vid, s2, r2, pg_major, err);
                    }
                    free(s2);
                    free(r2);
                }
                free(prefix);
            }
            closedir(d);
        }
        return rc;
    }
    /* sockets, fifos, devices: not part of a data directory */
    return 0;
}

static int walk_dir(Backup *b, int64_t parent, const char *src, const char *rel,
                    const char *pg_major, CbfsError *err)
{
    DIR *d = opendir(src);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0;
    int rc = 0;

    if (!d) {
        if (errno == ENOENT)
            return 0;
        return cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not open directory \"%s\": %s",
                              src, strerror(errno));
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        names = cbfs_xrealloc(names, (n + 1) * sizeof(char *));
        names[n++] = cbfs_xstrdup(de->d_name);
    }
    closedir(d);
    if (n > 1) /* an empty folder has no list at all (qsort wants one) */
        qsort(names, n, sizeof(char *), cmp_name);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char *s = cbfs_xasprintf("%s/%s", src, names[i]);
        char *r = rel[0] ? cbfs_xasprintf("%s/%s", rel, names[i]) : cbfs_xstrdup(names[i]);
        rc = walk_entry(b, parent, s, r, pg_major, (const char *const *) names, n, names[i], err);
        free(s);
        free(r);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* ---- WAL ---- */

/* Copy into the repository every WAL file the backup needs that is not there
 * yet: segments start..stop of the backup's timeline, and its history file. */
static int copy_wal(Backup *b, const char *pgdata, uint32_t tli, uint64_t start_lsn,
                    uint64_t stop_lsn, uint32_t seg_size, uint64_t *ret_copied, CbfsError *err)
{
    uint64_t first = cbfs_wal_segno(start_lsn, seg_size);
    uint64_t last = cbfs_wal_segno(stop_lsn - 1, seg_size);
    uint64_t copied = 0;
    int rc = 0;

    for (uint64_t seg = first; seg <= last && rc == 0; seg++) {
        char name[CBFS_WAL_NAME_MAX], *path;
        uint8_t *data;
        size_t len;
        cbfs_wal_segname(tli, seg, seg_size, name, sizeof(name));
        rc = cbfs_wal_exists(b->repo, name, err);
        if (rc == 0)
            continue; /* archived already */
        if (rc != -ENOENT)
            return rc;
        path = cbfs_xasprintf("%s/pg_wal/%s", pgdata, name);
        rc = cbfs_read_file(path, &data, &len, err);
        free(path);
        if (rc < 0) {
            cbfs_error_prefix(err, "could not copy WAL file \"%s\" needed by the backup", name);
            return rc;
        }
        rc = cbfs_wal_push_buffer(b->repo, name, data, len, err);
        free(data);
        copied++;
    }
    if (rc == 0 && tli > 1) {
        char name[32], *path;
        uint8_t *data;
        size_t len;
        snprintf(name, sizeof(name), "%08X.history", tli);
        if (cbfs_wal_exists(b->repo, name, err) == -ENOENT) {
            path = cbfs_xasprintf("%s/pg_wal/%s", pgdata, name);
            rc = cbfs_read_file(path, &data, &len, err);
            free(path);
            if (rc == 0) {
                rc = cbfs_wal_push_buffer(b->repo, name, data, len, err);
                free(data);
            }
        }
    }
    *ret_copied = copied;
    return rc;
}

static const char *label_field(const char *text, const char *field, char *buf, size_t len)
{
    const char *p = strstr(text, field);
    size_t n;
    if (!p)
        return NULL;
    p += strlen(field);
    n = strcspn(p, " \n");
    if (n >= len)
        return NULL;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

/* ---- the command ---- */

static void usage(void)
{
    printf("Usage: cbfs backup REPO --pgdata DIR [OPTIONS]\n"
           "\n"
           "Back up a running PostgreSQL cluster into the repository.\n"
           "\n"
           "Options:\n"
           "  -D, --pgdata DIR       the cluster's data directory (required)\n"
           "  -d, --dbname CONNINFO  how to connect (default: dbname=postgres, libpq defaults)\n"
           "  -l, --label TEXT       backup label (default: the start time, 20261121T103000Z)\n"
           "  -j, --jobs N           parallel reader/compressor threads (default: 2)\n"
           "      --standby-timeout SECONDS\n"
           "                         on a standby: how long to wait for it to stream from\n"
           "                         its primary and to receive the WAL the backup ends in\n"
           "                         (default: 60)\n"
           "      --patroni URL      this member's Patroni REST API: back up only if this\n"
           "                         member is the first healthy replica, or the leader\n"
           "                         when none is; else say who does and exit 0\n"
           "      --patroni-max-lag SIZE\n"
           "                         a replica lagging more is not healthy (default 16MB)\n"
           "      --max-rate RATE    read the data directory at most RATE bytes a second\n"
           "                         (50M, 1G; also CBFS_MAX_RATE or max_rate in the\n"
           "                         configuration)\n"
           "      --io-nice CLASS    I/O priority of the reads: idle (only when the disk is\n"
           "                         otherwise idle) or 0-7 (best effort, 7 the lowest)\n"
           "      --node NAME        back up as this node of a repository holding several\n"
           "                         (a Citus coordinator or worker); its first backup or\n"
           "                         WAL file makes the node\n"
           "      --passphrase-file FILE\n"
           "                         passphrase of an encrypted repository (mode 0600; else\n"
           "                         CBFS_PASSPHRASE, CBFS_PASSPHRASE_FILE or a prompt)\n"
           "  -h, --help             show this help\n");
}

static int read_sysid(const char *pgdata, uint64_t *ret)
{
    char *path = cbfs_xasprintf("%s/global/pg_control", pgdata);
    uint8_t buf[8];
    size_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return -errno;
    if (cbfs_pread_full(fd, buf, sizeof(buf), 0, &n) < 0 || n != sizeof(buf)) {
        close(fd);
        return -EIO;
    }
    close(fd);
    memcpy(ret, buf, sizeof(*ret)); /* system_identifier is the first field, host order */
    return 0;
}

int cmd_backup(int argc, char **argv)
{
    static const struct option opts[] = {
        {"pgdata", required_argument, NULL, 'D'},
        {"dbname", required_argument, NULL, 'd'},
        {"label", required_argument, NULL, 'l'},
        {"jobs", required_argument, NULL, 'j'},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"node", required_argument, NULL, CMD_OPT_NODE},
        {"standby-timeout", required_argument, NULL, OPT_STANDBY_TIMEOUT},
        {"patroni", required_argument, NULL, OPT_PATRONI},
        {"patroni-max-lag", required_argument, NULL, OPT_PATRONI_MAX_LAG},
        {"max-rate", required_argument, NULL, OPT_MAX_RATE},
        {"io-nice", required_argument, NULL, OPT_IO_NICE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *pgdata_arg = NULL, *conninfo = NULL, *label_arg = NULL, *node = NULL;
    const char *patroni = NULL, *max_rate = NULL, *io_nice = NULL;
    uint64_t patroni_max_lag = 16u << 20;
    long jobs = 2, standby_timeout = 60;
    char pgdata[PATH_MAX], label[CBFS_LABEL_MAX + 1], pg_major[16] = "";
    char *label_file = NULL, *spc_map = NULL, *manifest_path = NULL, *cache = NULL;
    CbfsLocation loc;
    CbfsError err;
    Backup b;
    CbfsHolder reg;
    bool registered = false;
    PgSession *pg = NULL;
    Worker *workers = NULL;
    uint64_t sysid = 0, owner = 0, stop_lsn = 0, wal_copied = 0;
    time_t start_time, stop_time;
    double t0 = cbfs_now();
    int c, rc;

    cbfs_error_init(&err);
    memset(&b, 0, sizeof(b));
    pthread_mutex_init(&b.manifest_lock, NULL);
    pthread_mutex_init(&b.err_lock, NULL);
    while ((c = getopt_long(argc, argv, "D:d:l:j:h", opts, NULL)) != -1) {
        switch (c) {
        case 'D':
            pgdata_arg = optarg;
            break;
        case 'd':
            conninfo = optarg;
            break;
        case 'l':
            label_arg = optarg;
            break;
        case 'j':
            if (cbfs_parse_int(optarg, 1, 256, &jobs) < 0)
                return cmd_usage_error("backup", "invalid value for --jobs: \"%s\"", optarg);
            break;
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case CMD_OPT_NODE:
            node = optarg;
            break;
        case OPT_PATRONI:
            patroni = optarg;
            break;
        case OPT_PATRONI_MAX_LAG:
            if (cbfs_parse_size(optarg, &patroni_max_lag) < 0)
                return cmd_usage_error("backup", "invalid value for --patroni-max-lag: \"%s\"",
                                       optarg);
            break;
        case OPT_MAX_RATE:
            max_rate = optarg;
            break;
        case OPT_IO_NICE:
            io_nice = optarg;
            break;
        case OPT_STANDBY_TIMEOUT:
            if (cbfs_parse_int(optarg, 0, 86400, &standby_timeout) < 0)
                return cmd_usage_error("backup", "invalid value for --standby-timeout: \"%s\"",
                                       optarg);
            break;
        case 'h':
            usage();
            return 0;
        default:
            return cmd_usage_error("backup", NULL);
        }
    }
    if (optind + 1 != argc)
        return cmd_usage_error("backup",
                               optind >= argc ? "no repository given" : "too many arguments");
    if (!pgdata_arg)
        return cmd_usage_error("backup", "--pgdata is required");
    if (label_arg && !cbfs_label_valid(label_arg))
        return cmd_usage_error("backup", "invalid label \"%s\"", label_arg);
    if ((rc = cmd_max_rate("backup", max_rate)) != 0)
        return rc;
    if (io_nice && (rc = cmd_io_nice("backup", io_nice)) != 0)
        return rc;

    /* one cron line on every member: only the chosen one backs up */
    if (patroni) {
        PatroniChoice pc;
        bool mine;
        if (patroni_choose(patroni, patroni_max_lag, &pc, &err) < 0)
            return cmd_fail(&err);
        mine = strcmp(pc.self, pc.chosen) == 0;
        if (mine)
            cbfs_info("Patroni: this member (%s) backs up: %s", pc.self, pc.why);
        else
            printf("member \"%s\" backs up (%s); nothing to do on \"%s\"\n", pc.chosen, pc.why,
                   pc.self);
        patroni_choice_release(&pc);
        if (!mine)
            return 0;
    }
    if (cbfs_location_parse(argv[optind], false, &loc, &err) < 0)
        return cmd_fail(&err);
    rc = cbfs_repo_open(&loc, &b.repo, &err);
    cbfs_location_release(&loc);
    if (rc == 0 && (rc = cbfs_repo_set_node(b.repo, node, &err)) < 0)
        cbfs_repo_free(b.repo);
    if (rc < 0)
        return cmd_fail(&err);
    b.block_size = b.repo->block_size;

    /* the data directory */
    {
        char *ver = cbfs_xasprintf("%s/PG_VERSION", pgdata_arg);
        uint8_t *text;
        size_t len;
        if (!realpath(pgdata_arg, pgdata) || cbfs_read_file(ver, &text, &len, NULL) < 0 ||
            read_sysid(pgdata, &sysid) < 0) {
            free(ver);
            cbfs_error_set(&err, ENOENT, CBFS_EXIT_DATABASE,
                           "\"%s\" is not a PostgreSQL data directory", pgdata_arg);
            goto fail;
        }
        free(ver);
        snprintf(pg_major, sizeof(pg_major), "%.*s", (int) strcspn((char *) text, "\n"),
                 (char *) text);
        free(text);
    }
    /* the server */
    if (pg_session_connect(conninfo, &pg, &err) < 0)
        goto fail;
    if (pg->system_identifier != sysid) {
        cbfs_error_set(&err, EINVAL, CBFS_EXIT_DATABASE,
                       "data directory \"%s\" belongs to database system %llu, but the server is "
                       "database system %llu",
                       pgdata_arg, (unsigned long long) sysid,
                       (unsigned long long) pg->system_identifier);
        goto fail;
    }
    if (pg->server_version / 10000 != atoi(pg_major)) {
        cbfs_error_set(&err, EINVAL, CBFS_EXIT_DATABASE,
                       "data directory \"%s\" is PostgreSQL %s, but the server is %d", pgdata_arg,
                       pg_major, pg->server_version / 10000);
        goto fail;
    }
    /* a standby: backed up as a primary is (its data directory, its
     * pg_backup_start/stop), once it streams; its WAL below */
    if (pg->in_recovery && pg_session_wait_streaming(pg, (int) standby_timeout, &err) < 0)
        goto fail;
    if (strcmp(pg->wal_level, "minimal") == 0) {
        cbfs_error_set(&err, EINVAL, CBFS_EXIT_DATABASE,
                       "cannot back up: wal_level is \"minimal\"; it must be \"replica\" or "
                       "\"logical\"");
        goto fail;
    }
    if (pg->wal_segment_size == 0 || (pg->wal_segment_size & (pg->wal_segment_size - 1))) {
        cbfs_error_set(&err, EINVAL, CBFS_EXIT_DATABASE,
                       "server reports an invalid WAL segment size");
        goto fail;
    }
    b.checksums = pg->data_checksums;
    /* the repository's key (its passphrase is asked here, once), then its cluster */
    if (cbfs_repo_unlock(b.repo, &err) < 0 || cbfs_repo_claim(b.repo, sysid, &owner, &err) < 0)
        goto fail;
    if (owner != sysid) {
        char what[CBFS_ERROR_MSG_MAX / 2];
        cbfs_error_set(&err, EINVAL, CBFS_EXIT_DATABASE,
                       "%s belongs to database system %llu, not %llu",
                       cbfs_repo_what(b.repo, what, sizeof(what)), (unsigned long long) owner,
                       (unsigned long long) sysid);
        goto fail;
    }
    /* the label */
    start_time = time(NULL);
    if (label_arg) {
        CbfsKv *rec;
        char what[CBFS_ERROR_MSG_MAX / 2];
        snprintf(label, sizeof(label), "%s", label_arg);
        rc = cbfs_repo_read_backup(b.repo, label, &rec, &err);
        if (rc == 0) {
            cbfs_kv_free(rec);
            cbfs_error_set(&err, EEXIST, CBFS_EXIT_ERROR, "backup \"%s\" already exists in %s",
                           label, cbfs_repo_what(b.repo, what, sizeof(what)));
            goto fail;
        }
        if (rc != -ENOENT)
            goto fail;
    } else {
        struct tm tm;
        CbfsKv *rec;
        gmtime_r(&start_time, &tm);
        strftime(label, sizeof(label), "%Y%m%dT%H%M%SZ", &tm);
        for (int i = 2; cbfs_repo_read_backup(b.repo, label, &rec, &err) == 0; i++) {
            cbfs_kv_free(rec);
            strftime(label, sizeof(label), "%Y%m%dT%H%M%SZ", &tm);
            snprintf(label + strlen(label), sizeof(label) - strlen(label), "-%d", i);
        }
        cbfs_error_init(&err);
    }

    /* register before looking at packs, then stay away from the ones gc is
     * about to remove or rewrite (lock.h, doomed.h) */
    if (cbfs_running_register(b.repo, label, &reg, &err) < 0)
        goto fail;
    registered = true;
    cbfs_test_pause("backup-registered");
    {
        char **avoid;
        size_t navoid;
        if (cbfs_doomed_packs(b.repo, &avoid, &navoid, &err) < 0) {
            cbfs_error_prefix(&err, "could not read gc's lists in repository \"%s\"",
                              b.repo->display);
            goto fail;
        }
        if (cbfs_blockindex_open(b.repo, &b.index, &(size_t){0}, &err) < 0) {
            for (size_t i = 0; i < navoid; i++)
                free(avoid[i]);
            free(avoid);
            goto fail;
        }
        cbfs_blockindex_avoid(b.index, avoid, navoid);
    }
    cbfs_test_pause("backup-indexed");
    if (cbfs_repo_cache_dir(b.repo, &cache, &err) < 0)
        goto fail;
    manifest_path = cbfs_xasprintf("%s/backup-%s-%d.db", cache, label, (int) getpid());
    unlink(manifest_path);
    if (cbfs_manifest_create(manifest_path, &b.manifest, &err) < 0)
        goto fail;

    if (pg_session_reserve_wal(pg, &err) < 0) {
        cbfs_warning("%s; relying on WAL archiving for the backup's WAL", err.msg);
        cbfs_error_init(&err);
    }
    if (pg_session_backup_start(pg, label, &b.start_lsn, &err) < 0)
        goto fail;
    {
        char lsn[32];
        cbfs_lsn_format(b.start_lsn, lsn, sizeof(lsn));
        cbfs_info("backup %s started at %s%s", label, lsn,
                  pg->in_recovery ? " (from a standby)" : "");
    }

    /* walk, then copy with the workers */
    if (cbfs_manifest_begin(b.manifest, &err) < 0 ||
        walk_dir(&b, 0, pgdata, "", pg_major, &err) < 0)
        goto fail;
    workers = cbfs_xcalloc((size_t) jobs, sizeof(Worker));
    for (long i = 0; i < jobs; i++) {
        Worker *w = &workers[i];
        w->b = &b;
        w->codec = cbfs_repo_codec_new(b.repo, b.repo->compress_level);
        w->buf = cbfs_xmalloc(b.block_size);
        w->enc_cap = cbfs_codec_bound(b.block_size);
        w->enc = cbfs_xmalloc(w->enc_cap);
        cbfs_error_init(&w->err);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            cbfs_error_set(&err, EAGAIN, CBFS_EXIT_ERROR, "could not start a thread");
            backup_fail(&b, &err);
            jobs = i;
            break;
        }
    }
    while (__atomic_load_n(&b.next_unit, __ATOMIC_RELAXED) < b.nunits &&
           !__atomic_load_n(&b.failed, __ATOMIC_RELAXED)) {
        char done[32], total[32];
        cbfs_format_size(__atomic_load_n(&b.bytes_read, __ATOMIC_RELAXED), done, sizeof(done));
        cbfs_format_size(b.total_bytes, total, sizeof(total));
        cbfs_progress("backup %s: %s of %s read", label, done, total);
        usleep(200000);
    }
    for (long i = 0; i < jobs; i++)
        pthread_join(workers[i].thread, NULL);
    cbfs_progress_end();
    if (b.failed) {
        err = b.err;
        goto fail;
    }
    /* pg_control last, by a fresh worker context on this thread */
    if (b.pg_control) {
        Worker *w = &workers[0];
        WorkUnit u = {b.pg_control, 0, (b.pg_control->size + b.block_size - 1) / b.block_size};
        if (process_unit(w, &u) < 0 || finish_pack(w, true) < 0 || flush_refs(w) < 0) {
            wait_upload(w);
            err = w->err;
            goto fail;
        }
    }
    for (size_t i = 0; i < b.nfiles; i++)
        if (b.files[i]->vanished && cbfs_manifest_remove_file(b.manifest, b.files[i]->id, &err) < 0)
            goto fail;

    if (pg_session_backup_stop(pg, &stop_lsn, &label_file, &spc_map, &err) < 0)
        goto fail;
    stop_time = time(NULL);
    {
        char buf[64], tli_s[16];
        uint32_t tli;
        if (!label_field(label_file, "START TIMELINE: ", tli_s, sizeof(tli_s)) ||
            (tli = (uint32_t) strtoul(tli_s, NULL, 10)) == 0) {
            cbfs_error_set(&err, EINVAL, CBFS_EXIT_DATABASE,
                           "server returned a backup_label without START TIMELINE");
            goto fail;
        }
        /* A standby neither ends its WAL file nor archives it: its last
         * WAL file is copied from pg_wal once the standby has all of it (or
         * taken as stored, when the primary archived it already). */
        if (pg->in_recovery) {
            uint64_t last_seg = cbfs_wal_segno(stop_lsn - 1, pg->wal_segment_size);
            char last[CBFS_WAL_NAME_MAX];
            cbfs_wal_segname(tli, last_seg, pg->wal_segment_size, last, sizeof(last));
            rc = cbfs_wal_exists(b.repo, last, &err);
            if (rc == -ENOENT) {
                cbfs_error_init(&err);
                rc = pg_session_wait_received(pg, conninfo,
                                              (last_seg + 1) * (uint64_t) pg->wal_segment_size,
                                              (int) standby_timeout, &err);
            }
            if (rc < 0)
                goto fail;
        }
        if (copy_wal(&b, pgdata, tli, b.start_lsn, stop_lsn, pg->wal_segment_size, &wal_copied,
                     &err) < 0)
            goto fail;

        /* metadata */
        uint64_t nfiles, logical;
        CbfsKv *rec = cbfs_kv_new();
        char start_s[32], stop_s[32], ws[CBFS_WAL_NAME_MAX], we[CBFS_WAL_NAME_MAX];
        cbfs_format_time(start_time, start_s, sizeof(start_s));
        cbfs_format_time(stop_time, stop_s, sizeof(stop_s));
        cbfs_wal_segname(tli, cbfs_wal_segno(b.start_lsn, pg->wal_segment_size),
                         pg->wal_segment_size, ws, sizeof(ws));
        cbfs_wal_segname(tli, cbfs_wal_segno(stop_lsn - 1, pg->wal_segment_size),
                         pg->wal_segment_size, we, sizeof(we));
        if (cbfs_manifest_totals(b.manifest, &nfiles, &logical, &err) < 0) {
            cbfs_kv_free(rec);
            goto fail;
        }
        cbfs_kv_set(rec, "label", label);
        if (b.repo->node)
            cbfs_kv_set(rec, "node", b.repo->node);
        cbfs_kv_set(rec, "start_time", start_s);
        cbfs_kv_set(rec, "stop_time", stop_s);
        cbfs_lsn_format(b.start_lsn, buf, sizeof(buf));
        cbfs_kv_set(rec, "start_lsn", buf);
        cbfs_lsn_format(stop_lsn, buf, sizeof(buf));
        cbfs_kv_set(rec, "stop_lsn", buf);
        cbfs_kv_set_u64(rec, "timeline", tli);
        cbfs_kv_set(rec, "wal_start", ws);
        cbfs_kv_set(rec, "wal_stop", we);
        cbfs_kv_set_u64(rec, "wal_segment_size", pg->wal_segment_size);
        cbfs_kv_set_u64(rec, "pg_version", (uint64_t) pg->server_version);
        cbfs_kv_set_u64(rec, "system_identifier", sysid);
        cbfs_kv_set_u64(rec, "file_count", nfiles);
        cbfs_kv_set_u64(rec, "logical_size", logical);
        cbfs_kv_set_u64(rec, "stored_size", b.bytes_stored);
        cbfs_kv_set_u64(rec, "bad_pages", b.bad_pages);
        cbfs_kv_set_u64(rec, "block_size", b.block_size);
        cbfs_kv_set(rec, "cbfs_version", CBFS_VERSION);
        cbfs_kv_set(rec, "data_checksums", b.checksums ? "on" : "off");
        cbfs_kv_set(rec, "backup_from", pg->in_recovery ? "standby" : "primary");

        const char *keys[] = {"label",        "start_time",        "stop_time",
                              "start_lsn",    "stop_lsn",          "timeline",
                              "wal_start",    "wal_stop",          "wal_segment_size",
                              "pg_version",   "system_identifier", "block_size",
                              "cbfs_version", "data_checksums"};
        for (size_t i = 0; i < CBFS_ARRAY_LEN(keys); i++)
            if (cbfs_manifest_set_meta(b.manifest, keys[i], cbfs_kv_get(rec, keys[i]), &err) < 0)
                goto fail_rec;
        {
            struct stat pst;
            char v[32];
            if (stat(pgdata, &pst) < 0)
                memset(&pst, 0, sizeof(pst));
            snprintf(v, sizeof(v), "%o", (unsigned) (pst.st_mode & 07777));
            cbfs_manifest_set_meta(b.manifest, "pgdata_mode", v, NULL);
            snprintf(v, sizeof(v), "%u", (unsigned) pst.st_uid);
            cbfs_manifest_set_meta(b.manifest, "pgdata_uid", v, NULL);
            snprintf(v, sizeof(v), "%u", (unsigned) pst.st_gid);
            cbfs_manifest_set_meta(b.manifest, "pgdata_gid", v, NULL);
        }
        if (cbfs_manifest_set_meta(b.manifest, "backup_label", label_file, &err) < 0 ||
            cbfs_manifest_set_meta(b.manifest, "tablespace_map", spc_map, &err) < 0 ||
            cbfs_manifest_set_meta(b.manifest, "tablespaces", pg->tablespaces, &err) < 0 ||
            cbfs_manifest_commit(b.manifest, &err) < 0)
            goto fail_rec;
        cbfs_manifest_free(b.manifest);
        b.manifest = NULL;
        cbfs_test_pause("backup-commit");
        if (cbfs_running_check(b.repo, &reg, &err) == -ENOENT) {
            /* gc took this backup for a dead one and may have removed packs it uses */
            cbfs_error_set(&err, ENOENT, CBFS_EXIT_ERROR,
                           "backup \"%s\" was not stored: its registration \"%s\" was removed "
                           "from repository \"%s\" while it ran (see cbfs gc --running-timeout)",
                           label, reg.key, b.repo->display);
            goto fail_rec;
        }
        if (cbfs_repo_commit_backup(b.repo, label, manifest_path, rec, &err) < 0)
            goto fail_rec;
        cbfs_kv_free(rec);
        goto done;
    fail_rec:
        cbfs_kv_free(rec);
        goto fail;
    }
done : {
    double secs = cbfs_now() - t0;
    char rd[32], st[32], tp[32];
    cbfs_format_size(b.bytes_read, rd, sizeof(rd));
    cbfs_format_size(b.bytes_stored, st, sizeof(st));
    cbfs_format_size((uint64_t) ((double) b.bytes_read / (secs > 0 ? secs : 1)), tp, sizeof(tp));
    printf("backup %s complete: read %s, stored %s new (deduplication ratio %.1f), "
           "%llu bad pages, %llu WAL files copied, %s/s, %.1f s\n",
           label, rd, st,
           b.bytes_stored ? (double) b.bytes_read / (double) b.bytes_stored : (double) b.bytes_read,
           (unsigned long long) b.bad_pages, (unsigned long long) wal_copied, tp, secs);
    rc = 0;
    goto out;
}
fail:
    rc = cmd_fail(&err);
out:
    if (registered)
        cbfs_registration_release(b.repo, &reg);
    if (workers) {
        for (long i = 0; i < jobs; i++) {
            cbfs_codec_free(workers[i].codec);
            cbfs_pack_writer_free(workers[i].pack);
            free(workers[i].buf);
            free(workers[i].enc);
        }
        free(workers);
    }
    for (size_t i = 0; i < b.nfiles; i++) {
        free(b.files[i]->src);
        free(b.files[i]->rel_owned);
        free(b.files[i]);
    }
    free(b.files);
    free(b.units);
    cbfs_manifest_free(b.manifest);
    if (manifest_path)
        unlink(manifest_path);
    free(manifest_path);
    free(cache);
    free(label_file);
    free(spc_map);
    pg_session_free(pg);
    cbfs_blockindex_free(b.index);
    cbfs_repo_free(b.repo);
    return rc;
}
