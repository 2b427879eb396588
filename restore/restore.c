/*
 * restore.c - `cbfs restore REPO[@LABEL] DIR`: a full, parallel copy of a
 * backup into a new data directory, set up to recover to the end of the
 * backup through `cbfs wal-fetch`.
 *
 * Trust: every path comes from the manifest and is checked
 * (cbfs_manifest_path_valid); the only symbolic links created are the
 * tablespace links pg_tblspc/<oid>, whose targets are absolute, normalized
 * and either given by the user (--tablespace-map) or the original location.
 * Files are created with O_EXCL|O_NOFOLLOW, so nothing is written through a
 * link the restore did not make.
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
#include <unistd.h>

#include "cbfs/block.h"
#include "cbfs/codec.h"
#include "cbfs/crypt.h"
#include "cbfs/log.h"
#include "cbfs/manifest.h"
#include "cbfs/pack.h"
#include "cbfs/pgfile.h"
#include "cbfs/point.h"
#include "cbfs/ratelimit.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "commands.h"
#include "delta.h"

#define OPT_DELTA            0x2001
#define OPT_MAX_RATE         0x2010
#define OPT_STANDBY          0x2002
#define OPT_PRIMARY_CONNINFO 0x2003
#define OPT_PRIMARY_SLOT     0x2004
#define OPT_SCOPE            0x2005
#define OPT_ROLE             0x2006
#define OPT_DATADIR          0x2007
#define OPT_IGNORED          0x2008

typedef struct RFile {
    int64_t id;
    char *path; /* relative */
    uint64_t size;
    uint32_t mode, uid, gid;
    int64_t mtime;
} RFile;

typedef struct Tablespace {
    char *oid;
    char *name;
    char *target; /* where it is restored */
} Tablespace;

typedef struct Restore {
    CbfsRepo *repo;
    const char *manifest_path;
    char *dir;
    uint32_t block_size;
    RFile *files;
    size_t nfiles;
    size_t nwork; /* the files the workers restore: all but PG_VERSION, last */
    RFile *dirs;
    size_t ndirs;
    size_t next;    /* atomic */
    uint64_t bytes; /* atomic */
    uint64_t total;
    bool delta;             /* --delta over an existing data directory */
    uint64_t blocks_same;   /* atomic: delta, blocks left as they were */
    uint64_t blocks_zeroed; /* atomic: delta, blocks the backup has as zeros */
    int failed;             /* atomic */
    CbfsError err;
    pthread_mutex_t lock;
} Restore;

static void restore_fail(Restore *r, const CbfsError *err)
{
    pthread_mutex_lock(&r->lock);
    if (!r->failed) {
        r->err = *err;
        __atomic_store_n(&r->failed, 1, __ATOMIC_SEQ_CST);
    }
    pthread_mutex_unlock(&r->lock);
}

/* A worker's buffers, reused from file to file. */
typedef struct Scratch {
    uint8_t *buf; /* one decoded block */
    uint8_t *run; /* stored blocks read together */
    size_t run_cap;
    CbfsBlockLoc *at; /* where each of them was read */
    size_t at_cap;
} Scratch;

/* --delta: compare each block of the local file (old_size bytes before it
 * was cut or extended to the backup's size) with the backup's; zero the
 * blocks the backup has as zeros; keep in refs (*n) only the blocks to
 * fetch and write. */
static int delta_blocks(Restore *r, CbfsCodec *codec, Scratch *s, int fd, const char *path,
                        const RFile *f, uint64_t old_size, CbfsBlockRef *refs, size_t *n,
                        CbfsError *err)
{
    uint64_t bs = r->block_size, nblocks = (f->size + bs - 1) / bs;
    size_t k = 0, keep = 0;
    uint8_t id[CBFS_BLOCK_ID_LEN];

    for (uint64_t b = 0; b < nblocks; b++) {
        uint64_t off = b * bs, len = f->size - off < bs ? f->size - off : bs;
        const CbfsBlockRef *ref = k < *n && refs[k].blockno == b ? &refs[k++] : NULL;
        bool local_zero = off >= old_size; /* extended: zeros */
        if (!local_zero) {
            size_t got = 0;
            int rc = cbfs_pread_full(fd, s->buf, len, (off_t) off, &got);
            if (rc < 0)
                return cbfs_error_set(err, -rc, CBFS_EXIT_TARGET, "could not read file \"%s\": %s",
                                      path, strerror(-rc));
            memset(s->buf + got, 0, len - got);
        }
        if (ref) {
            if (!local_zero && ref->raw_len == len) {
                cbfs_codec_block_id(codec, s->buf, len, id);
                if (memcmp(id, ref->id, sizeof(id)) == 0) {
                    __atomic_add_fetch(&r->blocks_same, 1, __ATOMIC_RELAXED);
                    continue;
                }
            }
            refs[keep++] = *ref;
        } else if (!local_zero && !cbfs_is_zero(s->buf, len)) {
            memset(s->buf, 0, len);
            int rc = cbfs_pwrite_full(fd, s->buf, len, (off_t) off);
            if (rc < 0)
                return cbfs_error_set(err, -rc, CBFS_EXIT_TARGET, "could not write file \"%s\": %s",
                                      path, strerror(-rc));
            __atomic_add_fetch(&r->blocks_zeroed, 1, __ATOMIC_RELAXED);
        }
    }
    *n = keep;
    return 0;
}

static int restore_file(Restore *r, CbfsManifest *m, CbfsCodec *codec, Scratch *s, const RFile *f,
                        CbfsError *err)
{
    char *path = cbfs_xasprintf("%s/%s", r->dir, f->path);
    CbfsBlockRef *refs = NULL;
    size_t n = 0;
    struct stat st = {0};
    int fd, rc;

    fd = open(path,
              r->delta ? O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC
                       : O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
              0600);
    if (fd < 0) {
        rc = cbfs_error_set(err, errno, CBFS_EXIT_TARGET, "could not create file \"%s\": %s", path,
                            strerror(errno));
        free(path);
        return rc;
    }
    if (r->delta && fstat(fd, &st) < 0) {
        rc = cbfs_error_set(err, errno, CBFS_EXIT_TARGET, "could not stat file \"%s\": %s", path,
                            strerror(errno));
        goto out;
    }
    if (ftruncate(fd, (off_t) f->size) < 0) {
        rc = cbfs_error_set(err, errno, CBFS_EXIT_TARGET, "could not extend file \"%s\": %s", path,
                            strerror(errno));
        goto out;
    }
    rc = cbfs_manifest_file_blocks(m, f->id, &refs, &n, err);
    if (rc == 0 && r->delta)
        rc = delta_blocks(r, codec, s, fd, path, f, (uint64_t) st.st_size, refs, &n, err);
    for (size_t i = 0; i < n && rc == 0;) {
        /* blocks stored one after another are read together: each is found
         * on its own (block.h), and read in one request with those still
         * next to it where it is now */
        size_t j = i + 1, len = refs[i].stored_len, k, pos;
        while (j < n && strcmp(refs[j].pack, refs[i].pack) == 0 &&
               refs[j].offset == refs[j - 1].offset + refs[j - 1].stored_len &&
               len + refs[j].stored_len <=
                   cbfs_ratelimit_chunk(cbfs_ratelimit_global(), CBFS_BLOCK_RUN_MAX))
            len += refs[j++].stored_len;
        if (len > s->run_cap) {
            s->run = cbfs_xrealloc(s->run, len);
            s->run_cap = len;
        }
        if (j - i > s->at_cap) {
            s->at = cbfs_xrealloc(s->at, (j - i) * sizeof(CbfsBlockLoc));
            s->at_cap = j - i;
        }
        cbfs_ratelimit_take(cbfs_ratelimit_global(), len);
        rc = cbfs_block_read_stored(r->repo->store, refs + i, j - i, s->run, s->at, err);
        for (k = i, pos = 0; k < j && rc == 0; pos += refs[k].stored_len, k++) {
            uint64_t off = refs[k].blockno * r->block_size;
            const CbfsBlockLoc *at = &s->at[k - i];
            if (refs[k].raw_len > r->block_size || off + refs[k].raw_len > f->size) {
                rc = cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                                    "manifest block %llu of \"%s\" lies outside the file",
                                    (unsigned long long) refs[k].blockno, f->path);
                break;
            }
            rc = cbfs_pack_decode_block(codec, at->pack, at->offset, s->run + pos,
                                        refs[k].stored_len, refs[k].raw_len, refs[k].id, s->buf,
                                        err);
            if (rc == 0) {
                rc = cbfs_pwrite_full(fd, s->buf, refs[k].raw_len, (off_t) off);
                if (rc < 0)
                    cbfs_error_set(err, -rc, CBFS_EXIT_TARGET, "could not write file \"%s\": %s",
                                   path, strerror(-rc));
            }
            if (rc < 0)
                break;
            __atomic_add_fetch(&r->bytes, refs[k].raw_len, __ATOMIC_RELAXED);
        }
        if (rc < 0)
            cbfs_error_prefix(
                err, "could not restore \"%s\" at offset %llu", f->path,
                (unsigned long long) (refs[k < j ? k : j - 1].blockno * r->block_size));
        i = j;
    }
    if (rc == 0) {
        struct timespec ts[2] = {{f->mtime, 0}, {f->mtime, 0}};
        if (geteuid() == 0)
            (void) !fchown(fd, f->uid, f->gid);
        if (fchmod(fd, f->mode & 07777) < 0 || futimens(fd, ts) < 0)
            rc = cbfs_error_set(err, errno, CBFS_EXIT_TARGET,
                                "could not set attributes of \"%s\": %s", path, strerror(errno));
    }
out:
    free(refs);
    close(fd);
    free(path);
    return rc;
}

typedef struct RWorker {
    Restore *r;
    pthread_t thread;
} RWorker;

static void *rworker_main(void *arg)
{
    RWorker *w = arg;
    Restore *r = w->r;
    CbfsManifest *m = NULL;
    CbfsCodec *codec = cbfs_repo_codec_new(r->repo, 1); /* unlocked by cmd_restore */
    Scratch s = {cbfs_xmalloc(r->block_size), NULL, 0, NULL, 0};
    CbfsError err;

    cbfs_error_init(&err);
    if (cbfs_manifest_open(r->manifest_path, &m, &err) < 0) {
        restore_fail(r, &err);
    } else {
        for (;;) {
            size_t i = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED);
            if (i >= r->nwork || __atomic_load_n(&r->failed, __ATOMIC_RELAXED))
                break;
            if (restore_file(r, m, codec, &s, &r->files[i], &err) < 0) {
                restore_fail(r, &err);
                break;
            }
        }
    }
    cbfs_manifest_free(m);
    cbfs_codec_free(codec);
    free(s.buf);
    free(s.run);
    free(s.at);
    return NULL;
}

/* ---- collecting the manifest ---- */

typedef struct Collect {
    Restore *r;
    Tablespace *ts;
    size_t nts;
    const char *label;
    CbfsError *err;
} Collect;

static Tablespace *find_ts(Collect *c, const char *oid)
{
    for (size_t i = 0; i < c->nts; i++)
        if (strcmp(c->ts[i].oid, oid) == 0)
            return &c->ts[i];
    return NULL;
}

static int collect_cb(const CbfsFileEntry *f, void *ctx)
{
    Collect *c = ctx;
    Restore *r = c->r;
    RFile rf;

    if (!cbfs_manifest_path_valid(f->path)) {
        cbfs_error_set(c->err, EBADMSG, CBFS_EXIT_CORRUPT,
                       "manifest of backup \"%s\" names an invalid path \"%s\"", c->label, f->path);
        return -EBADMSG;
    }
    rf = (RFile){f->id, cbfs_xstrdup(f->path), f->size, f->mode, f->uid, f->gid, f->mtime};
    switch (f->type) {
    case CBFS_FILE_REG:
        r->files = cbfs_xrealloc(r->files, (r->nfiles + 1) * sizeof(RFile));
        r->files[r->nfiles++] = rf;
        r->total += f->size;
        return 0;
    case CBFS_FILE_DIR:
        r->dirs = cbfs_xrealloc(r->dirs, (r->ndirs + 1) * sizeof(RFile));
        r->dirs[r->ndirs++] = rf;
        return 0;
    case CBFS_FILE_SYMLINK: {
        const char *oid = f->path + strlen("pg_tblspc/");
        CbfsRelFile rel;
        Tablespace *t;
        free(rf.path);
        if (strncmp(f->path, "pg_tblspc/", 10) != 0 || strchr(oid, '/') ||
            !cbfs_pg_parse_relfile(oid, &rel) || rel.fork[0] || rel.segno || !f->target ||
            f->target[0] != '/' || strstr(f->target, "/../") ||
            strcmp(f->target + strlen(f->target) - 3 < f->target
                       ? f->target
                       : f->target + strlen(f->target) - 3,
                   "/..") == 0) {
            cbfs_error_set(c->err, EBADMSG, CBFS_EXIT_CORRUPT,
                           "manifest of backup \"%s\" names an invalid link \"%s\"", c->label,
                           f->path);
            return -EBADMSG;
        }
        t = find_ts(c, oid);
        if (!t) {
            c->ts = cbfs_xrealloc(c->ts, (c->nts + 1) * sizeof(Tablespace));
            t = &c->ts[c->nts++];
            memset(t, 0, sizeof(*t));
            t->oid = cbfs_xstrdup(oid);
        }
        if (!t->target)
            t->target = cbfs_xstrdup(f->target);
        return 0;
    }
    }
    cbfs_error_set(c->err, EBADMSG, CBFS_EXIT_CORRUPT,
                   "manifest of backup \"%s\" has an entry of unknown type", c->label);
    free(rf.path);
    return -EBADMSG;
}

/* How the copy recovers: to a target (recovery.signal), or as a standby
 * (standby.signal). */
typedef struct Recovery {
    bool standby;
    bool patroni; /* called by Patroni: its recovery settings, not ours */
    const char *primary_conninfo, *slot;
} Recovery;

/* Append the recovery settings to postgresql.auto.conf and add the signal. */
static int write_recovery(Restore *r, const CbfsTarget *t, const Recovery *rec, const char *self,
                          bool archive_off, CbfsError *err)
{
    char *conf = cbfs_xasprintf("%s/postgresql.auto.conf", r->dir);
    char *sig =
        cbfs_xasprintf("%s/%s", r->dir, rec->standby ? "standby.signal" : "recovery.signal");
    char *text = NULL;
    int fd, rc = 0;

    /* Patroni writes a replica's settings into postgresql.conf at every
     * role change: settings in postgresql.auto.conf would override them */
    if (!rec->standby)
        text = cbfs_target_recovery_conf(r->repo, t, "cbfs restore", self, archive_off);
    else if (!rec->patroni)
        text = cbfs_standby_recovery_conf(r->repo, t->label, self, rec->primary_conninfo, rec->slot,
                                          archive_off, t->extra);
    if (text) {
        fd = open(conf, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 || cbfs_write_full(fd, text, strlen(text)) < 0)
            rc = cbfs_error_set(err, errno, CBFS_EXIT_TARGET, "could not write file \"%s\": %s",
                                conf, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    if (rc == 0) {
        fd = open(sig, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
            rc = cbfs_error_set(err, errno, CBFS_EXIT_TARGET, "could not create file \"%s\": %s",
                                sig, strerror(errno));
        else
            close(fd);
    }
    free(text);
    free(conf);
    free(sig);
    return rc;
}

static int write_small(const char *dir, const char *name, const char *text, CbfsError *err)
{
    char *path = cbfs_xasprintf("%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int rc = 0;
    if (fd < 0 || cbfs_write_full(fd, text, strlen(text)) < 0)
        rc = cbfs_error_set(err, errno, CBFS_EXIT_TARGET, "could not write file \"%s\": %s", path,
                            strerror(errno));
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

static void usage(void)
{
    printf(
        "Usage: cbfs restore REPO[@POINT] DIR [OPTIONS]\n"
        "\n"
        "Restore a backup into DIR (absent or empty; see --delta) as a data directory that\n"
        "recovers, fetching WAL with \"cbfs wal-fetch\", to POINT: a backup label or latest (the\n"
        "end of that backup), a restore point name, a time (2026-11-21T10:30:00Z) or\n"
        "lsn:X/Y.  The newest backup ending before the point is restored.\n"
        "\n"
        "Options:\n"
        "  -j, --jobs N                    parallel download threads (default: 2)\n"
        "      --max-rate RATE             read the repository at most RATE bytes a second\n"
        "                                  (50M, 1G; also CBFS_MAX_RATE or max_rate in the\n"
        "                                  configuration)\n"
        "  -T, --tablespace-map OID_OR_NAME=DIR\n"
        "                                  restore a tablespace into DIR (repeatable)\n"
        "      --archive-mode off|preserve off (default) turns archiving off in the copy,\n"
        "                                  so it never archives into the repository\n"
        "      --target-action promote|pause\n"
        "                                  at the point: promote (default) or pause\n"
        "  -B, --tablespace-dir BASE       restore every tablespace not mapped with\n"
        "                                  --tablespace-map into BASE/<its name>\n"
        "      --settings FILE             server settings added to postgresql.auto.conf\n"
        "      --standby                   start as a standby: standby.signal, no recovery\n"
        "                                  target, timeline 'latest', archive_mode kept\n"
        "      --primary-conninfo CONNINFO --primary-slot-name NAME\n"
        "                                  with --standby: stream from there\n"
        "      --scope, --role, --datadir DIR, --connstring\n"
        "                                  as Patroni's create_replica_methods pass them:\n"
        "                                  --role=replica means --standby, and the recovery\n"
        "                                  settings are left to Patroni; --datadir is DIR\n"
        "      --delta                     DIR is a data directory of the same cluster (no\n"
        "                                  server running): write only the blocks that\n"
        "                                  differ from the backup, remove what it lacks\n"
        "      --node NAME                 a node of a repository that holds several\n"
        "      --passphrase-file FILE      passphrase of an encrypted repository (mode 0600;\n"
        "                                  also written into restore_command)\n"
        "  -h, --help                      show this help\n");
}

int cmd_restore(int argc, char **argv)
{
    static const struct option opts[] = {
        {"jobs", required_argument, NULL, 'j'},
        {"max-rate", required_argument, NULL, OPT_MAX_RATE},
        {"tablespace-map", required_argument, NULL, 'T'},
        {"archive-mode", required_argument, NULL, 'A'},
        {"target-action", required_argument, NULL, 'P'},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"node", required_argument, NULL, CMD_OPT_NODE},
        {"settings", required_argument, NULL, 'S'},
        {"tablespace-dir", required_argument, NULL, 'B'},
        {"delta", optional_argument, NULL, OPT_DELTA},
        {"standby", no_argument, NULL, OPT_STANDBY},
        {"primary-conninfo", required_argument, NULL, OPT_PRIMARY_CONNINFO},
        {"primary-slot-name", required_argument, NULL, OPT_PRIMARY_SLOT},
        /* what Patroni passes to a create_replica_methods command */
        {"scope", required_argument, NULL, OPT_SCOPE},
        {"role", required_argument, NULL, OPT_ROLE},
        {"datadir", required_argument, NULL, OPT_DATADIR},
        {"connstring", required_argument, NULL, OPT_IGNORED},
        /* Patroni passes its own method settings too, unless no_params */
        {"keep_data", optional_argument, NULL, OPT_IGNORED},
        {"no_leader", optional_argument, NULL, OPT_IGNORED},
        {"no_master", optional_argument, NULL, OPT_IGNORED},
        {"no_params", optional_argument, NULL, OPT_IGNORED},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *node = NULL, *settings = NULL, *ts_base = NULL;
    long jobs = 2;
    char **maps = NULL;
    size_t nmaps = 0;
    bool archive_off = true, archive_given = false, delta = false;
    Recovery recovery = {0};
    const char *datadir = NULL, *dir;
    CbfsLocation loc;
    CbfsError err;
    Restore r;
    Collect col;
    CbfsKv *rec = NULL;
    CbfsManifest *m = NULL;
    char *label = NULL, *cache = NULL, *manifest_path = NULL, *backup_label = NULL;
    char *spcmap = NULL, *tsnames = NULL, self[PATH_MAX];
    RWorker *workers = NULL;
    double t0 = cbfs_now();
    int c, rc = 0;
    bool made_dir = false, started = false, pause = false;
    uint64_t removed = 0;
    CbfsTarget target = {0};

    cbfs_error_init(&err);
    memset(&r, 0, sizeof(r));
    memset(&col, 0, sizeof(col));
    pthread_mutex_init(&r.lock, NULL);
    bool rate_given = false;
    while ((c = getopt_long(argc, argv, "j:T:h", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            if (cbfs_parse_int(optarg, 1, 256, &jobs) < 0)
                return cmd_usage_error("restore", "invalid value for --jobs: \"%s\"", optarg);
            break;
        case OPT_MAX_RATE:
            if ((rc = cmd_max_rate("restore", optarg)) != 0)
                return rc;
            rate_given = true;
            break;
        case 'T':
            if (!strchr(optarg, '=') || strchr(optarg, '=') == optarg ||
                strchr(optarg, '=')[1] != '/')
                return cmd_usage_error("restore",
                                       "invalid tablespace mapping \"%s\": expected "
                                       "OID_OR_NAME=/absolute/dir",
                                       optarg);
            maps = cbfs_xrealloc(maps, (nmaps + 1) * sizeof(char *));
            maps[nmaps++] = optarg;
            break;
        case 'A':
            archive_given = true;
            if (strcmp(optarg, "off") == 0)
                archive_off = true;
            else if (strcmp(optarg, "preserve") == 0)
                archive_off = false;
            else
                return cmd_usage_error("restore", "invalid value for --archive-mode: \"%s\"",
                                       optarg);
            break;
        case 'P':
            if (strcmp(optarg, "promote") == 0)
                pause = false;
            else if (strcmp(optarg, "pause") == 0)
                pause = true;
            else
                return cmd_usage_error("restore", "invalid value for --target-action: \"%s\"",
                                       optarg);
            break;
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case CMD_OPT_NODE:
            node = optarg;
            break;
        case 'S':
            settings = optarg;
            break;
        case OPT_DELTA:
            /* --delta, or --delta=True as Patroni passes a method's setting */
            delta = true;
            if (optarg && cbfs_parse_bool(optarg, &delta) < 0)
                return cmd_usage_error("restore", "invalid value for --delta: \"%s\"", optarg);
            break;
        case OPT_STANDBY:
            recovery.standby = true;
            break;
        case OPT_PRIMARY_CONNINFO:
            recovery.primary_conninfo = optarg;
            break;
        case OPT_PRIMARY_SLOT:
            recovery.slot = optarg;
            break;
        case OPT_SCOPE:
            recovery.patroni = true;
            break;
        case OPT_ROLE:
            recovery.patroni = true;
            if (strcmp(optarg, "replica") != 0)
                return cmd_usage_error("restore", "invalid value for --role: \"%s\" (replica)",
                                       optarg);
            recovery.standby = true;
            break;
        case OPT_DATADIR:
            datadir = optarg;
            break;
        case OPT_IGNORED:
            /* --connstring, the member Patroni would clone from (cbfs reads
             * the repository), and Patroni's own settings of the method */
            break;
        case 'B':
            if (optarg[0] != '/')
                return cmd_usage_error("restore",
                                       "invalid value for --tablespace-dir: \"%s\" (an absolute "
                                       "directory)",
                                       optarg);
            ts_base = optarg;
            break;
        case 'h':
            usage();
            return 0;
        default:
            return cmd_usage_error("restore", NULL);
        }
    }
    /* else $CBFS_MAX_RATE or max_rate in the configuration */
    if (!rate_given && (rc = cmd_max_rate("restore", NULL)) != 0)
        return rc;
    /* REPO DIR, or REPO --datadir DIR (as Patroni calls) */
    if (datadir && optind + 1 == argc)
        dir = datadir;
    else if (!datadir && optind + 2 == argc)
        dir = argv[optind + 1];
    else
        return cmd_usage_error("restore", optind + (datadir ? 1 : 2) > argc ? "missing arguments"
                                                                            : "too many arguments");
    if (!recovery.standby && (recovery.primary_conninfo || recovery.slot))
        return cmd_usage_error("restore",
                               "--primary-conninfo and --primary-slot-name need --standby");
    if (recovery.standby && pause)
        return cmd_usage_error("restore", "--standby cannot be combined with --target-action");
    /* a standby keeps archiving as its cluster does once promoted */
    if (recovery.standby && !archive_given)
        archive_off = false;
    {
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n < 0)
            snprintf(self, sizeof(self), "cbfs");
        else
            self[n] = '\0';
    }
    if (cbfs_location_parse(argv[optind], true, &loc, &err) < 0) {
        free(maps);
        return cmd_fail(&err);
    }
    rc = cbfs_repo_open(&loc, &r.repo, &err);
    if (rc == 0)
        rc = cbfs_repo_select_node(r.repo, node, &err);
    if (rc == 0)
        rc = cbfs_repo_unlock(r.repo, &err);
    if (rc == 0)
        rc = cbfs_point_resolve(r.repo, loc.point, &target, &err);
    if (rc == 0 && settings)
        rc = cbfs_read_settings(settings, &target.extra, &err);
    if (rc == 0 && recovery.standby && target.kind != CBFS_TARGET_IMMEDIATE)
        rc = cbfs_error_set(&err, EINVAL, CBFS_EXIT_USAGE,
                            "--standby cannot be combined with a recovery target (\"%s\")",
                            loc.point);
    if (rc == 0) {
        label = cbfs_xstrdup(target.label);
        target.pause = pause;
    }
    cbfs_location_release(&loc);
    if (rc < 0)
        goto fail;
    r.block_size = r.repo->block_size;

    /* the target must be absent or empty; it is created only once the
     * backup and the options were found usable */
    {
        const char *d = dir;
        bool exists;
        if (!cbfs_dir_empty(d, &exists)) {
            struct stat st;
            if (stat(d, &st) == 0 && !S_ISDIR(st.st_mode))
                cbfs_error_set(&err, ENOTDIR, CBFS_EXIT_TARGET,
                               "could not restore into \"%s\": not a directory", d);
            else if (errno == ENOTDIR || errno == EACCES)
                cbfs_error_set(&err, errno, CBFS_EXIT_TARGET, "could not restore into \"%s\": %s",
                               d, strerror(errno));
            else if (delta)
                r.delta = true; /* checked against the backup below */
            else
                cbfs_error_set(&err, ENOTEMPTY, CBFS_EXIT_TARGET,
                               "could not restore into \"%s\": directory is not empty", d);
            if (!r.delta)
                goto fail;
        }
    }

    /* the manifest */
    if (cbfs_repo_read_backup(r.repo, label, &rec, &err) < 0 ||
        cbfs_repo_cache_dir(r.repo, &cache, &err) < 0 ||
        cbfs_repo_fetch_manifest(r.repo, rec, cache, &manifest_path, &err) < 0 ||
        cbfs_manifest_open(manifest_path, &m, &err) < 0)
        goto fail;
    if (r.delta) {
        uint64_t sysid = 0;
        if (cbfs_kv_get_u64(rec, "system_identifier", &sysid) < 0) {
            cbfs_error_set(&err, EBADMSG, CBFS_EXIT_CORRUPT,
                           "record of backup \"%s\" has no system identifier", label);
            goto fail;
        }
        if (delta_check_target(dir, sysid, &err) < 0)
            goto fail;
    }
    r.manifest_path = manifest_path;
    {
        char *bs = cbfs_manifest_get_meta(m, "block_size");
        if (!bs || strtoul(bs, NULL, 10) != r.block_size) {
            free(bs);
            cbfs_error_set(&err, EBADMSG, CBFS_EXIT_CORRUPT,
                           "manifest of backup \"%s\" has a wrong block size", label);
            goto fail;
        }
        free(bs);
    }
    backup_label = cbfs_manifest_get_meta(m, "backup_label");
    spcmap = cbfs_manifest_get_meta(m, "tablespace_map");
    tsnames = cbfs_manifest_get_meta(m, "tablespaces");
    if (!backup_label) {
        cbfs_error_set(&err, EBADMSG, CBFS_EXIT_CORRUPT,
                       "manifest of backup \"%s\" has no backup_label", label);
        goto fail;
    }
    col.r = &r;
    col.label = label;
    col.err = &err;
    if ((rc = cbfs_manifest_foreach_file(m, collect_cb, &col, &err)) != 0)
        goto fail;

    /* tablespaces: names, then the user's mappings */
    for (char *line = tsnames; line && *line;) {
        char *nl = strchr(line, '\n'), *eq;
        if (nl)
            *nl = '\0';
        eq = strchr(line, '=');
        if (eq) {
            Tablespace *t;
            *eq = '\0';
            if ((t = find_ts(&col, line)) != NULL)
                t->name = cbfs_xstrdup(eq + 1);
        }
        line = nl ? nl + 1 : NULL;
    }
    for (size_t i = 0; ts_base && i < col.nts; i++) {
        /* a name from the repository is a path component only when it is
         * a plain one; else the oid (digits, checked above) */
        const char *n = col.ts[i].name;
        bool plain =
            n && *n && strcmp(n, ".") != 0 && strcmp(n, "..") != 0 &&
            strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
                strlen(n);
        free(col.ts[i].target);
        col.ts[i].target = cbfs_xasprintf("%s/%s", ts_base, plain ? n : col.ts[i].oid);
    }
    for (size_t i = 0; i < nmaps; i++) {
        char *key = cbfs_xstrdup(maps[i]);
        char *val = strchr(key, '=');
        Tablespace *t = NULL;
        *val++ = '\0';
        for (size_t k = 0; k < col.nts; k++)
            if (strcmp(col.ts[k].oid, key) == 0 ||
                (col.ts[k].name && strcmp(col.ts[k].name, key) == 0))
                t = &col.ts[k];
        if (!t) {
            cbfs_error_set(&err, ENOENT, CBFS_EXIT_USAGE,
                           "tablespace \"%s\" is not in backup \"%s\"", key, label);
            free(key);
            goto fail;
        }
        free(t->target);
        t->target = cbfs_xstrdup(val);
        free(key);
    }
    /* from here on the restore writes */
    {
        const char *d = dir;
        char abs[PATH_MAX];
        struct stat st;
        if (stat(d, &st) < 0) {
            if (cbfs_mkdir_p(d, 0700, &err) < 0)
                goto fail;
            made_dir = true;
        }
        if (!realpath(d, abs)) {
            cbfs_error_set(&err, errno, CBFS_EXIT_TARGET, "could not restore into \"%s\": %s", d,
                           strerror(errno));
            goto fail;
        }
        r.dir = cbfs_xstrdup(abs);
        started = true;
    }
    /* the data directory itself: owner and mode as backed up (PostgreSQL wants 0700/0750) */
    {
        char *mode = cbfs_manifest_get_meta(m, "pgdata_mode");
        char *uid = cbfs_manifest_get_meta(m, "pgdata_uid");
        char *gid = cbfs_manifest_get_meta(m, "pgdata_gid");
        if (mode && (strtoul(mode, NULL, 8) & 07777) != 0)
            (void) !chmod(r.dir, (mode_t) (strtoul(mode, NULL, 8) & 0750));
        if (uid && gid && geteuid() == 0) {
            uid_t u = (uid_t) strtoul(uid, NULL, 10);
            gid_t g = (gid_t) strtoul(gid, NULL, 10);
            (void) !chown(r.dir, u, g);
            /* the server's restore_command runs as the owner: its first
             * wal-fetch finds the key in that user's key cache */
            if (r.repo->crypt && u != 0)
                cbfs_crypt_cache_share(r.repo->crypt, u, g);
        }
        free(mode);
        free(uid);
        free(gid);
    }
    for (size_t i = 0; i < col.nts; i++) {
        Tablespace *t = &col.ts[i];
        char *link = cbfs_xasprintf("%s/pg_tblspc/%s", r.dir, t->oid);
        bool exists;
        if (r.delta) {
            /* the same cluster's tablespace: its folder is compared like the
             * rest; a link elsewhere (or anything else in its place) is
             * replaced */
            char cur[PATH_MAX];
            struct stat lst;
            ssize_t len = readlink(link, cur, sizeof(cur) - 1);
            if (len > 0 && (size_t) len == strlen(t->target) &&
                memcmp(cur, t->target, (size_t) len) == 0) {
                free(link);
                continue;
            }
            if (lstat(link, &lst) == 0) {
                if (S_ISDIR(lst.st_mode))
                    cbfs_remove_tree(link);
                else
                    unlink(link);
            }
        } else if (!cbfs_dir_empty(t->target, &exists)) {
            cbfs_error_set(&err, ENOTEMPTY, CBFS_EXIT_TARGET,
                           "could not restore tablespace %s into \"%s\": directory is not empty",
                           t->name ? t->name : t->oid, t->target);
            free(link);
            goto fail;
        }
        if (cbfs_mkdir_p(r.dir, 0700, &err) < 0 || cbfs_mkdir_p(t->target, 0700, &err) < 0) {
            free(link);
            goto fail;
        }
        {
            char *tsdir = cbfs_xasprintf("%s/pg_tblspc", r.dir);
            int mk = cbfs_mkdir_p(tsdir, 0700, &err);
            free(tsdir);
            if (mk < 0 || symlink(t->target, link) < 0) {
                if (mk == 0)
                    cbfs_error_set(&err, errno, CBFS_EXIT_TARGET,
                                   "could not create symbolic link \"%s\": %s", link,
                                   strerror(errno));
                free(link);
                goto fail;
            }
        }
        if (geteuid() == 0) {
            struct stat st;
            if (stat(r.dir, &st) == 0) {
                (void) !chown(t->target, st.st_uid, st.st_gid);
                /* --tablespace-dir's folder, made here, is the server's too */
                if (ts_base)
                    (void) !chown(ts_base, st.st_uid, st.st_gid);
            }
        }
        free(link);
    }

    /* PG_VERSION is written last, once all the rest is durable: until then
     * no server starts on the directory (and --delta removes it first) */
    r.nwork = r.nfiles;
    for (size_t i = 0; i < r.nfiles; i++)
        if (strcmp(r.files[i].path, "PG_VERSION") == 0) {
            RFile t = r.files[i];
            r.files[i] = r.files[r.nfiles - 1];
            r.files[r.nfiles - 1] = t;
            r.nwork = r.nfiles - 1;
            break;
        }
    if (r.delta) {
        char *p = cbfs_xasprintf("%s/PG_VERSION", r.dir);
        int u = unlink(p), e = errno;
        free(p);
        if (u < 0 && e != ENOENT) {
            cbfs_error_set(&err, e, CBFS_EXIT_TARGET, "could not remove \"%s/PG_VERSION\": %s",
                           r.dir, strerror(e));
            goto fail;
        }
    }

    /* --delta: away with what the backup does not have */
    if (r.delta) {
        DeltaEntry *e = cbfs_xcalloc(r.nfiles + r.ndirs + col.nts + 1, sizeof(DeltaEntry));
        char **links = cbfs_xcalloc(col.nts + 1, sizeof(char *));
        size_t ne = 0;
        for (size_t i = 0; i < r.nfiles; i++)
            e[ne++] = (DeltaEntry){r.files[i].path, DELTA_FILE};
        for (size_t i = 0; i < r.ndirs; i++)
            e[ne++] = (DeltaEntry){r.dirs[i].path, DELTA_DIR};
        for (size_t i = 0; i < col.nts; i++) {
            links[i] = cbfs_xasprintf("pg_tblspc/%s", col.ts[i].oid);
            e[ne++] = (DeltaEntry){links[i], DELTA_LINK};
        }
        rc = delta_prune(r.dir, e, ne, &removed, &err);
        for (size_t i = 0; i < col.nts; i++)
            free(links[i]);
        free(links);
        free(e);
        if (rc < 0)
            goto fail;
    }

    /* folders (in path order, so parents come first), then files */
    for (size_t i = 0; i < r.ndirs; i++) {
        char *p = cbfs_xasprintf("%s/%s", r.dir, r.dirs[i].path);
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            cbfs_error_set(&err, errno, CBFS_EXIT_TARGET, "could not create directory \"%s\": %s",
                           p, strerror(errno));
            free(p);
            goto fail;
        }
        free(p);
    }
    workers = cbfs_xcalloc((size_t) jobs, sizeof(RWorker));
    for (long i = 0; i < jobs; i++) {
        workers[i].r = &r;
        if (pthread_create(&workers[i].thread, NULL, rworker_main, &workers[i]) != 0) {
            cbfs_error_set(&err, EAGAIN, CBFS_EXIT_ERROR, "could not start a thread");
            restore_fail(&r, &err);
            jobs = i;
            break;
        }
    }
    while (__atomic_load_n(&r.next, __ATOMIC_RELAXED) < r.nwork &&
           !__atomic_load_n(&r.failed, __ATOMIC_RELAXED)) {
        char done[32], total[32];
        cbfs_format_size(__atomic_load_n(&r.bytes, __ATOMIC_RELAXED), done, sizeof(done));
        cbfs_format_size(r.total, total, sizeof(total));
        cbfs_progress("restore %s: %s of %s", label, done, total);
        usleep(200000);
    }
    for (long i = 0; i < jobs; i++)
        pthread_join(workers[i].thread, NULL);
    cbfs_progress_end();
    if (r.failed) {
        err = r.err;
        goto fail;
    }
    /* folder attributes last (deepest first, so parents' mtimes stick) */
    for (size_t i = r.ndirs; i-- > 0;) {
        char *p = cbfs_xasprintf("%s/%s", r.dir, r.dirs[i].path);
        struct timespec ts[2] = {{r.dirs[i].mtime, 0}, {r.dirs[i].mtime, 0}};
        if (geteuid() == 0)
            (void) !lchown(p, r.dirs[i].uid, r.dirs[i].gid);
        (void) !chmod(p, r.dirs[i].mode & 07777);
        (void) !utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW);
        free(p);
    }
    /* backup_label, tablespace_map (remapped), recovery settings */
    if (write_small(r.dir, "backup_label", backup_label, &err) < 0)
        goto fail;
    if (col.nts > 0) {
        CbfsBuf map;
        cbfs_buf_init(&map);
        for (size_t i = 0; i < col.nts; i++)
            cbfs_buf_printf(&map, "%s %s\n", col.ts[i].oid, col.ts[i].target);
        rc = write_small(r.dir, "tablespace_map", map.data, &err);
        cbfs_buf_release(&map);
        if (rc < 0)
            goto fail;
    }
    (void) spcmap;
    if (write_recovery(&r, &target, &recovery, self, archive_off, &err) < 0)
        goto fail;
    if (geteuid() == 0) {
        /* the files cbfs wrote itself belong to the data directory's owner */
        struct stat st;
        const char *names[] = {"backup_label", "tablespace_map", "recovery.signal",
                               "postgresql.auto.conf"};
        if (stat(r.dir, &st) == 0)
            for (size_t i = 0; i < CBFS_ARRAY_LEN(names); i++) {
                char *p = cbfs_xasprintf("%s/%s", r.dir, names[i]);
                (void) !lchown(p, st.st_uid, st.st_gid);
                free(p);
            }
    }
    /* make it all durable */
    {
        int fd = open(r.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || syncfs(fd) < 0) {
            cbfs_error_set(&err, errno, CBFS_EXIT_TARGET, "could not sync \"%s\": %s", r.dir,
                           strerror(errno));
            if (fd >= 0)
                close(fd);
            goto fail;
        }
        close(fd);
        for (size_t i = 0; i < col.nts; i++) {
            fd = open(col.ts[i].target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd >= 0) {
                (void) !syncfs(fd);
                close(fd);
            }
        }
    }
    if (r.nwork < r.nfiles) {
        CbfsCodec *codec = cbfs_repo_codec_new(r.repo, 1);
        Scratch sc = {cbfs_xmalloc(r.block_size), NULL, 0, NULL, 0};
        char *p = cbfs_xasprintf("%s/PG_VERSION", r.dir);
        int fd;
        cbfs_test_pause("restore-pg-version");
        rc = restore_file(&r, m, codec, &sc, &r.files[r.nwork], &err);
        if (rc == 0) {
            fd = open(p, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || fsync(fd) < 0)
                rc = cbfs_error_set(&err, errno, CBFS_EXIT_TARGET, "could not sync \"%s\": %s", p,
                                    strerror(errno));
            if (fd >= 0)
                close(fd);
        }
        if (rc == 0)
            rc = cbfs_fsync_dir(r.dir, &err);
        free(p);
        free(sc.buf);
        free(sc.run);
        free(sc.at);
        cbfs_codec_free(codec);
        if (rc < 0)
            goto fail;
    }
    {
        double secs = cbfs_now() - t0;
        char sz[32], tp[32];
        cbfs_format_size(r.bytes, sz, sizeof(sz));
        cbfs_format_size((uint64_t) ((double) r.bytes / (secs > 0 ? secs : 1)), tp, sizeof(tp));
        if (r.delta)
            printf("delta restore of backup %s complete: %zu files, %llu blocks the same, %s "
                   "written, %llu blocks zeroed, %llu entries removed, %.1f s\n",
                   label, r.nfiles, (unsigned long long) r.blocks_same, sz,
                   (unsigned long long) r.blocks_zeroed, (unsigned long long) removed, secs);
        else
            printf("restore of backup %s complete: %zu files, %s written, %s/s, %.1f s\n", label,
                   r.nfiles, sz, tp, secs);
        if (archive_off)
            printf("archive_mode is off in the restored copy; use --archive-mode=preserve to "
                   "keep archiving\n");
    }
    rc = 0;
    goto out;
fail:
    /* never leave a half-restored directory that looks like a data directory */
    if (started) {
        const char *names[] = {"recovery.signal", "backup_label", "PG_VERSION"};
        for (size_t i = 0; i < CBFS_ARRAY_LEN(names); i++) {
            char *p = cbfs_xasprintf("%s/%s", r.dir, names[i]);
            unlink(p);
            free(p);
        }
        if (r.delta)
            cbfs_error_prefix(&err, "delta restore into \"%s\" is incomplete (run it again)",
                              r.dir);
        else
            cbfs_error_prefix(&err, "restore into \"%s\" is incomplete (remove it and retry)",
                              r.dir);
    } else if (made_dir) {
        rmdir(dir);
    }
    rc = cmd_fail(&err);
out:
    free(workers);
    for (size_t i = 0; i < r.nfiles; i++)
        free(r.files[i].path);
    for (size_t i = 0; i < r.ndirs; i++)
        free(r.dirs[i].path);
    free(r.files);
    free(r.dirs);
    for (size_t i = 0; i < col.nts; i++) {
        free(col.ts[i].oid);
        free(col.ts[i].name);
        free(col.ts[i].target);
    }
    free(col.ts);
    cbfs_manifest_free(m);
    if (manifest_path)
        unlink(manifest_path);
    free(manifest_path);
    free(cache);
    free(label);
    free(backup_label);
    free(spcmap);
    free(tsnames);
    free(r.dir);
    free(maps);
    cbfs_kv_free(rec);
    cbfs_target_release(&target);
    cbfs_repo_free(r.repo);
    return rc;
}
