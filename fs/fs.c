/*
 * fs.c - FUSE low-level operations of a mounted backup.
 *
 * pg_wal is a symlink to the local folder OVERLAY/pg_wal (inode PGWAL_INO):
 * WAL, written on every commit and fetched by recovery, bypasses FUSE.
 *
 * Inode numbers: 1 is the data directory; a backup entry with manifest id N
 * is N + 1 (stable across mounts); TSROOT and TSROOT + 1 + N are the hidden
 * folder ".cbfs_tablespaces" and the contents of tablespace link N, which
 * the link pg_tblspc/<oid> points to (relative target, so the mount point
 * can be anything); inodes made in the overlay come from 1 << 40 up.
 *
 * Names resolve upper first: overlay dirents, then whiteouts, then the
 * manifest's children of the folder's backup entry.  File bytes resolve
 * per 8 KiB page: pages in the overlay's page map come from the overlay
 * data file, others below base_limit from the backup (block cache),
 * anything else from the data file (holes read as zeros).
 *
 * Passthrough (libfuse 3.16 and later, a kernel with FUSE_PASSTHROUGH,
 * the daemon as root): a regular file whose bytes all live in its data
 * file (created here, truncated to nothing, or every backup page brought
 * up) is opened with the data file as its backing file, so the kernel
 * serves its reads and writes without us.  The decision is made when the
 * inode has no open handle; while it has a backing file every further
 * open shares it, and when it has handles without one, every further open
 * goes without (the kernel allows no mix).  Writes that bypass us change
 * the data file's size and mtime: they are taken from the data file
 * (fstat) whenever the inode's attributes are read, set, synced or its
 * last handle closed, and fsync makes the size durable in overlay.db
 * before it answers.  The kernel keeps passthrough and its writeback cache
 * apart: a mount with passthrough writes through (each write a request)
 * for files still partly in the backup.  Writes that bypass us bypass the
 * overlay's reserve too (overlay_make_room): a backing file is only set up
 * while the overlay's file system has room (overlay_headroom); below that,
 * new opens go through us.  Files already open with one may still write
 * the file system full; then the overlay's spare file keeps its records
 * going for a while, and a change of names may fail with ENOSPC (never
 * EIO) until there is room again.
 *
 * Locks, in the order they may be taken:
 *   fs->ns_lock     namespace: the overlay database and the manifest handle
 *   fs->itab_lock   the inode table (held only to find or add an entry)
 *   inode->lock     one inode's attributes, data file, page map, block refs
 * No thread takes ns_lock while holding an inode lock or itab_lock.
 * Every FUSE request is answered exactly once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

#include "blockcache.h"
#include "cbfs/log.h"
#include "cbfs/point.h"
#include "cbfs/util.h"
#include "fs.h"

#define TSROOT_INO (1ull << 39)
/* pg_wal: a symlink to OVERLAY/pg_wal, a local folder, so that WAL (the
 * commit path, and every segment recovery fetches) never goes through FUSE */
#define PGWAL_INO        (TSROOT_INO - 1)
#define TSROOT_NAME      ".cbfs_tablespaces"
#define READAHEAD_BLOCKS 256
#define FH_PASSTHROUGH   1 /* a file handle opened with a backing file */
#define TIMEOUT          60.0

typedef struct Inode {
    uint64_t ino;
    struct Inode *hnext;
    pthread_mutex_t lock;
    /* attributes */
    int64_t base_id; /* manifest id of the backing entry, 0 if none */
    int64_t list_id; /* manifest parent id whose children this folder shows, -1 none */
    int type;
    uint32_t mode;
    uint64_t size;
    int64_t mtime_ns, ctime_ns;
    uint32_t nlink;
    char *target;
    uint64_t base_limit; /* backup bytes still visible */
    bool upper;          /* has a row in the overlay */
    bool attr_dirty;     /* mtime changed since the row was written */
    /* data */
    int fd; /* overlay data file, -1 while not open */
    int opens;
    uint8_t *map; /* page map (base-backed files), loaded lazily */
    size_t map_bytes;
    bool map_loaded, map_dirty;
    bool map_unsynced;  /* the map file was written and not synced since */
    CbfsBlockRef *refs; /* backup blocks, loaded lazily, then immutable */
    size_t nrefs;
    bool refs_loaded;
    uint64_t next_seq; /* offset a sequential reader asks for next */
    int backing_id;    /* passthrough: the kernel's id of the data file, 0 none */
    int pt_opens;      /* handles open with it */
} Inode;

struct Fs {
    CbfsRepo *repo;
    CbfsManifest *manifest; /* guarded by ns_lock */
    Overlay *ov;            /* guarded by ns_lock */
    BlockCache *cache;
    pthread_mutex_t ns_lock;
    pthread_mutex_t itab_lock;
    Inode **itab;
    size_t nbuckets;
    uid_t uid;
    gid_t gid;
    uint32_t block_size;
    int64_t tblspc_id; /* manifest id of pg_tblspc, 0 if none */
    bool has_tablespaces;
    char *pgwal_target; /* absolute path of OVERLAY/pg_wal */
    char *label;
    const CbfsTarget *target; /* borrowed from the config */
    bool want_passthrough;    /* asked for (and possible in this build) */
    bool passthrough;         /* granted by the kernel at init */
    bool want_uring;          /* FUSE over io_uring asked for */
    uint64_t headroom;        /* free space passthrough needs (overlay_headroom) */
    int64_t last_fg_ns;       /* monotonic time of the last read that needed the backup */
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- inode table ---- */

static Inode *itab_find(Fs *fs, uint64_t ino)
{
    Inode *in;
    pthread_mutex_lock(&fs->itab_lock);
    for (in = fs->itab[ino % fs->nbuckets]; in; in = in->hnext)
        if (in->ino == ino)
            break;
    pthread_mutex_unlock(&fs->itab_lock);
    return in;
}

static Inode *itab_add(Fs *fs, Inode *in)
{
    Inode *old;
    pthread_mutex_lock(&fs->itab_lock);
    for (old = fs->itab[in->ino % fs->nbuckets]; old; old = old->hnext)
        if (old->ino == in->ino)
            break;
    if (!old) {
        in->hnext = fs->itab[in->ino % fs->nbuckets];
        fs->itab[in->ino % fs->nbuckets] = in;
    }
    pthread_mutex_unlock(&fs->itab_lock);
    if (old) {
        free(in->target);
        free(in);
        return old;
    }
    return in;
}

/* The permission bits a node keeps.  A regular file never keeps set-user-ID
 * or set-group-ID (a data directory has no use for them): so there is
 * nothing for a write, a truncate or a chown to clear, which lets the mount
 * take on that duty (FUSE_CAP_HANDLE_KILLPRIV_V2, op_init) and spares the
 * kernel a GETXATTR of security.capability before every write. */
static uint32_t kept_mode(int type, uint32_t mode)
{
    return mode & (type == CBFS_FILE_REG ? 01777u : 07777u);
}

static Inode *inode_alloc(uint64_t ino)
{
    Inode *in = cbfs_xcalloc(1, sizeof(*in));
    in->ino = ino;
    in->fd = -1;
    in->list_id = -1;
    pthread_mutex_init(&in->lock, NULL);
    return in;
}

static void from_row(Inode *in, const OvInode *row)
{
    in->base_id = row->base_id;
    in->type = row->type;
    in->mode = row->mode;
    in->size = row->size;
    in->mtime_ns = row->mtime_ns;
    in->ctime_ns = row->ctime_ns;
    in->nlink = row->nlink;
    in->target = row->target;
    in->base_limit = row->base_limit;
    in->upper = true;
}

static void to_row(const Inode *in, OvInode *row)
{
    *row = (OvInode){
        .ino = in->ino,
        .base_id = in->base_id,
        .type = in->type,
        .mode = in->mode,
        .size = in->size,
        .mtime_ns = in->mtime_ns,
        .ctime_ns = in->ctime_ns,
        .nlink = in->nlink,
        .target = in->target,
        .base_limit = in->base_limit,
    };
}

/* The hidden tablespace folders: made up by the mount, never removed or moved. */
static bool is_virtual(uint64_t ino)
{
    return ino == PGWAL_INO || (ino >= TSROOT_INO && ino < (1ull << 40));
}

/* Where a folder's backup children come from. */
static int64_t list_id_for(Fs *fs, uint64_t ino, int64_t base_id, int type)
{
    if (type != CBFS_FILE_DIR)
        return -1;
    if (ino == FUSE_ROOT_ID)
        return 0;
    if (ino > TSROOT_INO && ino < (1ull << 40))
        return (int64_t) (ino - TSROOT_INO - 1);
    (void) fs;
    return base_id > 0 ? base_id : -1;
}

/* Load an inode: from the table, the overlay, or the backup.  Caller holds
 * ns_lock.  -ENOENT if it does not exist. */
static int inode_get_locked(Fs *fs, uint64_t ino, Inode **ret)
{
    Inode *in = itab_find(fs, ino);
    OvInode row;
    int rc;

    if (in) {
        *ret = in;
        return 0;
    }
    in = inode_alloc(ino);
    rc = overlay_get_inode(fs->ov, ino, &row);
    if (rc == 0) {
        from_row(in, &row);
        /* writes beyond the recorded size may have landed after the row was
         * written: the data file's size covers them */
        if (in->type == CBFS_FILE_REG) {
            char *path = overlay_data_path(fs->ov, ino);
            struct stat st;
            if (stat(path, &st) == 0 && (uint64_t) st.st_size > in->size)
                in->size = (uint64_t) st.st_size;
            free(path);
        }
    } else if (rc != -ENOENT) {
        free(in);
        return -EIO;
    } else if (ino == PGWAL_INO) {
        in->type = CBFS_FILE_SYMLINK;
        in->mode = 0777;
        in->nlink = 1;
        in->target = cbfs_xstrdup(fs->pgwal_target);
        in->mtime_ns = in->ctime_ns = now_ns();
    } else if (ino == FUSE_ROOT_ID || ino == TSROOT_INO) {
        in->type = CBFS_FILE_DIR;
        in->mode = 0700;
        in->nlink = 2;
        in->mtime_ns = in->ctime_ns = now_ns();
    } else if (ino > TSROOT_INO && ino < (1ull << 40) && fs->has_tablespaces) {
        in->type = CBFS_FILE_DIR;
        in->mode = 0700;
        in->nlink = 2;
        in->mtime_ns = in->ctime_ns = now_ns();
    } else if (ino >= 2 && ino < TSROOT_INO) {
        CbfsFileEntry f;
        CbfsError err;
        cbfs_error_init(&err);
        rc = cbfs_manifest_get_file(fs->manifest, (int64_t) ino - 1, &f, &err);
        if (rc < 0) {
            free(in);
            return rc == -ENOENT ? -ENOENT : -EIO;
        }
        in->base_id = f.id;
        in->type = f.type;
        in->mode = kept_mode(f.type, f.mode);
        in->size = f.size;
        in->base_limit = f.size;
        in->mtime_ns = in->ctime_ns = f.mtime * 1000000000;
        in->nlink = f.type == CBFS_FILE_DIR ? 2 : 1;
        if (f.type == CBFS_FILE_SYMLINK) {
            /* tablespace links point into the mount, relative to pg_tblspc */
            in->target = cbfs_xasprintf("../" TSROOT_NAME "/%lld", (long long) f.id);
        }
        cbfs_file_entry_release(&f);
    } else {
        free(in);
        return -ENOENT;
    }
    in->list_id = list_id_for(fs, ino, in->base_id, in->type);
    *ret = itab_add(fs, in);
    return 0;
}

static int inode_get(Fs *fs, uint64_t ino, Inode **ret)
{
    Inode *in = itab_find(fs, ino);
    int rc;
    if (in) {
        *ret = in;
        return 0;
    }
    pthread_mutex_lock(&fs->ns_lock);
    rc = inode_get_locked(fs, ino, ret);
    pthread_mutex_unlock(&fs->ns_lock);
    return rc;
}

/* Write the inode's row.  Caller holds ns_lock and in->lock. */
static int persist_locked(Fs *fs, Inode *in)
{
    OvInode row;
    to_row(in, &row);
    int rc = overlay_put_inode(fs->ov, &row);
    if (rc < 0)
        return rc;
    in->upper = true;
    in->attr_dirty = false;
    return 0;
}

static void fill_stat(Fs *fs, Inode *in, struct stat *st)
{
    static const mode_t types[] = {0, S_IFREG, S_IFDIR, S_IFLNK};
    memset(st, 0, sizeof(*st));
    st->st_ino = in->ino;
    st->st_mode = types[in->type] | (in->type == CBFS_FILE_SYMLINK ? 0777 : in->mode);
    st->st_nlink = in->nlink ? in->nlink : 1;
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_size =
        (off_t) (in->type == CBFS_FILE_SYMLINK && in->target ? strlen(in->target) : in->size);
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t) ((in->size + 511) / 512);
    st->st_mtim.tv_sec = in->mtime_ns / 1000000000;
    st->st_mtim.tv_nsec = in->mtime_ns % 1000000000;
    st->st_ctim.tv_sec = in->ctime_ns / 1000000000;
    st->st_ctim.tv_nsec = in->ctime_ns % 1000000000;
    st->st_atim = st->st_mtim;
}

static void reply_entry(fuse_req_t req, Fs *fs, Inode *in)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.ino = in->ino;
    e.generation = 1;
    e.attr_timeout = TIMEOUT;
    e.entry_timeout = TIMEOUT;
    pthread_mutex_lock(&in->lock);
    fill_stat(fs, in, &e.attr);
    pthread_mutex_unlock(&in->lock);
    fuse_reply_entry(req, &e);
}

/* ---- names ---- */

/* Resolve parent/name to an inode number.  Caller holds ns_lock. */
static int resolve_locked(Fs *fs, Inode *parent, const char *name, uint64_t *ret)
{
    CbfsFileEntry f;
    CbfsError err;
    int rc;

    if (parent->type != CBFS_FILE_DIR)
        return -ENOTDIR;
    if (parent->ino == FUSE_ROOT_ID && strcmp(name, "pg_wal") == 0) {
        *ret = PGWAL_INO;
        return 0;
    }
    rc = overlay_lookup(fs->ov, parent->ino, name, ret);
    if (rc == 0)
        return 0;
    if (rc == 1)
        return -ENOENT; /* whiteout */
    if (rc != -ENOENT)
        return -EIO;
    if (parent->ino == FUSE_ROOT_ID && fs->has_tablespaces && strcmp(name, TSROOT_NAME) == 0) {
        *ret = TSROOT_INO;
        return 0;
    }
    if (parent->ino == TSROOT_INO) {
        char *end;
        long long id = strtoll(name, &end, 10);
        if (*end || id <= 0 || cbfs_manifest_get_file(fs->manifest, id, &f, &err) < 0)
            return -ENOENT;
        rc = f.type == CBFS_FILE_SYMLINK && f.parent == fs->tblspc_id ? 0 : -ENOENT;
        cbfs_file_entry_release(&f);
        if (rc == 0)
            *ret = TSROOT_INO + 1 + (uint64_t) id;
        return rc;
    }
    if (parent->list_id < 0)
        return -ENOENT;
    cbfs_error_init(&err);
    rc = cbfs_manifest_lookup(fs->manifest, parent->list_id, name, &f, &err);
    if (rc < 0)
        return rc == -ENOENT ? -ENOENT : -EIO;
    *ret = (uint64_t) f.id + 1;
    cbfs_file_entry_release(&f);
    return 0;
}

/* The inode parent/name names (and the parent's).  Caller holds ns_lock. */
static int lookup_locked(Fs *fs, uint64_t parent, const char *name, Inode **ret_parent, Inode **ret)
{
    Inode *p;
    uint64_t ino;
    int rc = inode_get_locked(fs, parent, &p);
    if (rc == 0)
        rc = resolve_locked(fs, p, name, &ino);
    if (rc == 0)
        rc = inode_get_locked(fs, ino, ret);
    if (rc == 0 && ret_parent)
        *ret_parent = p;
    return rc;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in = NULL;
    int rc;

    pthread_mutex_lock(&fs->ns_lock);
    rc = lookup_locked(fs, parent, name, NULL, &in);
    pthread_mutex_unlock(&fs->ns_lock);
    if (rc < 0) {
        if (rc == -ENOENT) {
            /* a negative entry the kernel may cache: names only change through us */
            struct fuse_entry_param e;
            memset(&e, 0, sizeof(e));
            e.entry_timeout = TIMEOUT;
            fuse_reply_entry(req, &e);
            return;
        }
        fuse_reply_err(req, -rc);
        return;
    }
    reply_entry(req, fs, in);
}

/* Passthrough writes went straight to the data file: take its size and
 * mtime.  Caller holds in->lock. */
static void backing_refresh(Inode *in)
{
    struct stat st;
    int64_t mt;
    if (!in->backing_id || in->fd < 0 || fstat(in->fd, &st) < 0)
        return;
    mt = (int64_t) st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if ((uint64_t) st.st_size != in->size || mt > in->mtime_ns) {
        in->size = (uint64_t) st.st_size;
        if (mt > in->mtime_ns)
            in->mtime_ns = in->ctime_ns = mt;
        in->attr_dirty = true;
    }
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in;
    struct stat st;
    int rc = inode_get(fs, ino, &in);
    (void) fi;
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    pthread_mutex_lock(&in->lock);
    backing_refresh(in);
    fill_stat(fs, in, &st);
    pthread_mutex_unlock(&in->lock);
    fuse_reply_attr(req, &st, TIMEOUT);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in;
    int rc = inode_get(fs, ino, &in);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    if (in->type != CBFS_FILE_SYMLINK || !in->target) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    fuse_reply_readlink(req, in->target);
}

/* ---- data ---- */

static int open_data(Fs *fs, Inode *in)
{
    char *path;
    if (in->fd >= 0)
        return 0;
    if (in->nlink == 0 && in->type == CBFS_FILE_REG)
        return -ESTALE; /* unlinked and no descriptor left */
    path = overlay_data_path(fs->ov, in->ino);
    in->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(path);
    return in->fd < 0 ? -errno : 0;
}

static bool based(const Inode *in)
{
    return in->type == CBFS_FILE_REG && in->base_id > 0;
}

static void load_map(Fs *fs, Inode *in)
{
    size_t pages = (size_t) ((in->base_limit + OVERLAY_PAGE - 1) / OVERLAY_PAGE);
    if (in->map_loaded)
        return;
    in->map_bytes = (pages + 7) / 8;
    in->map = cbfs_xcalloc(in->map_bytes ? in->map_bytes : 1, 1);
    if (in->upper) {
        char *path = overlay_map_path(fs->ov, in->ino);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            size_t n;
            cbfs_pread_full(fd, in->map, in->map_bytes, 0, &n);
            close(fd);
        }
        free(path);
    }
    in->map_loaded = true;
}

static bool page_upper(const Inode *in, uint64_t page)
{
    return in->map_loaded && page / 8 < in->map_bytes && (in->map[page / 8] >> (page % 8)) & 1;
}

/* Make the data file's written bytes durable, through in->fd or, when the
 * daemon has it closed, a descriptor of its own.  Caller holds in->lock. */
static int sync_data(Fs *fs, Inode *in)
{
    char *path;
    int fd, rc = 0;
    if (in->fd >= 0)
        return fdatasync(in->fd) < 0 ? -errno : 0;
    path = overlay_data_path(fs->ov, in->ino);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    if (fdatasync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* Write the page map; with sync, make it durable.  Caller holds in->lock.
 * The data file is synced first, so a persisted bit never points at
 * missing data; a map written without sync (at release) is synced, data
 * first, at the next fsync, even if nothing changed in between. */
static int save_map(Fs *fs, Inode *in, bool sync)
{
    char *path;
    int fd, rc = 0;
    if (!in->map_dirty && !(sync && in->map_unsynced))
        return 0;
    if (sync && (rc = sync_data(fs, in)) < 0)
        return rc;
    path = overlay_map_path(fs->ov, in->ino);
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    free(path);
    if (fd < 0)
        return -errno;
    if (in->map_dirty)
        rc = cbfs_pwrite_full(fd, in->map, in->map_bytes, 0);
    if (rc == 0 && sync && fdatasync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc == 0) {
        in->map_unsynced = !sync && (in->map_unsynced || in->map_dirty);
        in->map_dirty = false;
    }
    return rc;
}

static int load_refs(Fs *fs, Inode *in)
{
    CbfsBlockRef *refs = NULL;
    size_t n = 0;
    CbfsError err;
    int rc = 0;

    pthread_mutex_lock(&in->lock);
    if (in->refs_loaded) {
        pthread_mutex_unlock(&in->lock);
        return 0;
    }
    pthread_mutex_unlock(&in->lock);
    cbfs_error_init(&err);
    pthread_mutex_lock(&fs->ns_lock);
    rc = cbfs_manifest_file_blocks(fs->manifest, in->base_id, &refs, &n, &err);
    pthread_mutex_unlock(&fs->ns_lock);
    if (rc < 0) {
        cbfs_error("%s", err.msg);
        return -EIO;
    }
    pthread_mutex_lock(&in->lock);
    if (!in->refs_loaded) {
        in->refs = refs;
        in->nrefs = n;
        in->refs_loaded = true;
        refs = NULL;
    }
    pthread_mutex_unlock(&in->lock);
    free(refs);
    return 0;
}

static const CbfsBlockRef *find_ref(const Inode *in, uint64_t blockno)
{
    size_t lo = 0, hi = in->nrefs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (in->refs[mid].blockno < blockno)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < in->nrefs && in->refs[lo].blockno == blockno ? &in->refs[lo] : NULL;
}

/* Read backup bytes [off, off + len) of in (refs loaded) into buf. */
static int read_base(Fs *fs, Inode *in, char *buf, uint64_t off, size_t len, const char *why)
{
    while (len > 0) {
        uint64_t blockno = off / fs->block_size;
        size_t in_block = (size_t) (off % fs->block_size);
        size_t n = fs->block_size - in_block < len ? fs->block_size - in_block : len;
        const CbfsBlockRef *ref = find_ref(in, blockno);
        if (!ref || in_block >= ref->raw_len) {
            memset(buf, 0, n); /* not stored: zeros */
        } else {
            CbfsError err;
            size_t have = ref->raw_len - in_block < n ? ref->raw_len - in_block : n;
            cbfs_error_init(&err);
            if (blockcache_read(fs->cache, ref, in_block, have, buf, &err) < 0) {
                char *path = NULL;
                CbfsFileEntry f;
                pthread_mutex_lock(&fs->ns_lock);
                if (cbfs_manifest_get_file(fs->manifest, in->base_id, &f, NULL) == 0) {
                    path = cbfs_xstrdup(f.path);
                    cbfs_file_entry_release(&f);
                }
                pthread_mutex_unlock(&fs->ns_lock);
                cbfs_error("%s of \"%s\" at offset %llu failed: %s", why, path ? path : "?",
                           (unsigned long long) off, err.msg);
                free(path);
                return -EIO;
            }
            if (have < n)
                memset(buf + have, 0, n - have);
        }
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

static int read_upper(Inode *in, char *buf, uint64_t off, size_t len)
{
    size_t n = 0;
    if (in->fd >= 0 && cbfs_pread_full(in->fd, buf, len, (off_t) off, &n) < 0)
        return -EIO;
    if (n < len)
        memset(buf + n, 0, len - n);
    return 0;
}

/* Do all of the file's bytes live in its data file?  Caller holds
 * in->lock.  (Unused in a build without passthrough.) */
__attribute__((unused)) static bool whole(Fs *fs, Inode *in)
{
    uint64_t pages;
    if (in->type != CBFS_FILE_REG)
        return false;
    if (!based(in) || in->base_limit == 0)
        return true;
    load_map(fs, in);
    pages = (in->base_limit + OVERLAY_PAGE - 1) / OVERLAY_PAGE;
    for (uint64_t b = 0; b < pages / 8; b++)
        if (in->map[b] != 0xff)
            return false;
    for (uint64_t page = pages / 8 * 8; page < pages; page++)
        if (!page_upper(in, page))
            return false;
    return true;
}

/* Open with the data file as backing file when the rules above allow;
 * otherwise leave fi as it is.  Caller holds in->lock and has counted
 * this open in in->opens (and opened the data file if it is whole). */
static void passthrough_open(fuse_req_t req, Fs *fs, Inode *in, struct fuse_file_info *fi)
{
#if CBFS_FUSE_PASSTHROUGH
    struct stat st;
    if (!fs->passthrough || (!in->backing_id && in->opens > 1) || in->fd < 0 || !whole(fs, in))
        return;
    if (!in->backing_id) {
        /* passthrough writes bypass overlay_make_room: only with room */
        if (!overlay_headroom(fs->ov, fs->headroom))
            return;
        /* the data file holds the whole file, holes and all */
        if (fstat(in->fd, &st) < 0 ||
            ((uint64_t) st.st_size < in->size && ftruncate(in->fd, (off_t) in->size) < 0))
            return;
        in->backing_id = fuse_passthrough_open(req, in->fd);
        if (in->backing_id <= 0) {
            cbfs_warning("passthrough is off for this mount: the kernel refused a backing file");
            in->backing_id = 0;
            fs->passthrough = false;
            return;
        }
    }
    fi->backing_id = in->backing_id;
    fi->keep_cache = 0;      /* the file's page cache is the data file's now */
    fi->fh = FH_PASSTHROUGH; /* release gets fh back, not backing_id */
    in->pt_opens++;
#else
    (void) req, (void) fs, (void) in, (void) fi;
#endif
}

/* A handle closed: its share of the backing file goes with it.  Caller
 * holds in->lock. */
static void passthrough_release(fuse_req_t req, Inode *in, struct fuse_file_info *fi)
{
#if CBFS_FUSE_PASSTHROUGH
    if (fi->fh != FH_PASSTHROUGH || !in->backing_id)
        return;
    backing_refresh(in);
    if (--in->pt_opens <= 0) {
        fuse_passthrough_close(req, in->backing_id);
        in->backing_id = 0;
        in->pt_opens = 0;
    }
#else
    (void) req, (void) in, (void) fi;
#endif
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in;
    int rc = inode_get(fs, ino, &in);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    if (in->type == CBFS_FILE_DIR) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    pthread_mutex_lock(&in->lock);
    in->opens++;
    /* any inode with an overlay row may have bytes in its data file */
    if (in->upper && in->fd < 0 && in->type == CBFS_FILE_REG)
        rc = open_data(fs, in);
    if (rc < 0)
        in->opens--;
    /* the kernel's page cache stays valid: every change comes through us */
    fi->keep_cache = 1;
    if (rc == 0 && in->upper)
        passthrough_open(req, fs, in, fi);
    pthread_mutex_unlock(&in->lock);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in;
    char *buf;
    uint64_t end, pos;
    int rc = inode_get(fs, ino, &in);
    (void) fi;

    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    if (based(in) && (rc = load_refs(fs, in)) < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    pthread_mutex_lock(&in->lock);
    if ((uint64_t) off >= in->size) {
        pthread_mutex_unlock(&in->lock);
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    end = (uint64_t) off + size < in->size ? (uint64_t) off + size : in->size;
    if (in->upper && in->fd < 0 && (rc = open_data(fs, in)) < 0) {
        pthread_mutex_unlock(&in->lock);
        fuse_reply_err(req, -rc);
        return;
    }
    buf = cbfs_xmalloc(end - (uint64_t) off);
    if (based(in)) {
        load_map(fs, in);
        /* read-ahead for sequential readers */
        if ((uint64_t) off == in->next_seq && in->base_limit > end) {
            uint64_t first = (end + fs->block_size - 1) / fs->block_size;
            for (uint64_t b = first; b < first + READAHEAD_BLOCKS; b++) {
                const CbfsBlockRef *ref = find_ref(in, b);
                if ((uint64_t) b * fs->block_size >= in->base_limit)
                    break;
                if (ref)
                    blockcache_prefetch(fs->cache, ref);
            }
        }
        in->next_seq = end;
    }
    for (pos = (uint64_t) off; pos < end && rc == 0;) {
        uint64_t page = pos / OVERLAY_PAGE;
        uint64_t page_end = (page + 1) * OVERLAY_PAGE < end ? (page + 1) * OVERLAY_PAGE : end;
        if (!based(in) || page_upper(in, page) || pos >= in->base_limit) {
            rc = read_upper(in, buf + (pos - (uint64_t) off), pos, (size_t) (page_end - pos));
        } else {
            uint64_t base_end = page_end < in->base_limit ? page_end : in->base_limit;
            /* backup fetches may block: do them without the inode lock */
            pthread_mutex_unlock(&in->lock);
            __atomic_store_n(&fs->last_fg_ns, cbfs_now_ns(), __ATOMIC_RELAXED);
            rc = read_base(fs, in, buf + (pos - (uint64_t) off), pos, (size_t) (base_end - pos),
                           "read");
            pthread_mutex_lock(&in->lock);
            if (rc == 0 && base_end < page_end)
                rc = read_upper(in, buf + (base_end - (uint64_t) off), base_end,
                                (size_t) (page_end - base_end));
        }
        pos = page_end;
    }
    pthread_mutex_unlock(&in->lock);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_buf(req, buf, end - (uint64_t) off);
    free(buf);
}

/* Make sure the inode has an overlay row (it is about to change).  An
 * unlinked inode still open somewhere gets none: its data file lives on
 * through the open descriptor only. */
static int ensure_upper(Fs *fs, Inode *in)
{
    int rc = 0;
    if (in->upper)
        return 0;
    pthread_mutex_lock(&fs->ns_lock);
    pthread_mutex_lock(&in->lock);
    if (!in->upper && in->nlink > 0)
        rc = persist_locked(fs, in);
    pthread_mutex_unlock(&in->lock);
    pthread_mutex_unlock(&fs->ns_lock);
    return rc;
}

/* Write buf at off, copying up the backup bytes of partly written pages.
 * Caller holds in->lock (it is dropped around backup reads). */
static int write_locked(Fs *fs, Inode *in, const char *buf, size_t len, uint64_t off)
{
    uint64_t end = off + len, need = 0;
    int rc = open_data(fs, in);
    if (rc < 0)
        return rc;
    /* what the write allocates: pages brought up, bytes past the end */
    if (based(in)) {
        load_map(fs, in);
        for (uint64_t page = off / OVERLAY_PAGE; page * OVERLAY_PAGE < end; page++)
            if (page * OVERLAY_PAGE < in->base_limit && !page_upper(in, page))
                need += OVERLAY_PAGE;
    }
    if (end > in->size)
        need += end - (off > in->size ? off : in->size);
    if (need && (rc = overlay_make_room(fs->ov, need)) < 0)
        return rc;
    if (based(in)) {
        for (uint64_t page = off / OVERLAY_PAGE; page * OVERLAY_PAGE < end; page++) {
            uint64_t ps = page * OVERLAY_PAGE, pe = ps + OVERLAY_PAGE;
            if (ps >= in->base_limit || page_upper(in, page))
                continue;
            if (off > ps || end < pe) {
                /* partly written page: bring the backup's bytes up first */
                uint64_t be = pe < in->base_limit ? pe : in->base_limit;
                char page_buf[OVERLAY_PAGE];
                pthread_mutex_unlock(&in->lock);
                rc = read_base(fs, in, page_buf, ps, (size_t) (be - ps), "copy-up");
                pthread_mutex_lock(&in->lock);
                if (rc < 0)
                    return rc;
                if (page_upper(in, page))
                    continue; /* another writer brought it up meanwhile */
                rc = cbfs_pwrite_full(in->fd, page_buf, (size_t) (be - ps), (off_t) ps);
                if (rc < 0)
                    return rc;
            }
            in->map[page / 8] |= (uint8_t) (1u << (page % 8));
            in->map_dirty = true;
        }
    }
    rc = cbfs_pwrite_full(in->fd, buf, len, (off_t) off);
    if (rc < 0)
        return rc;
    if (end > in->size)
        in->size = end;
    in->mtime_ns = in->ctime_ns = now_ns();
    in->attr_dirty = true;
    return 0;
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in;
    int rc = inode_get(fs, ino, &in);
    (void) fi;

    if (rc == 0 && based(in))
        rc = load_refs(fs, in);
    if (rc == 0)
        rc = ensure_upper(fs, in);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    pthread_mutex_lock(&in->lock);
    rc = write_locked(fs, in, buf, size, (uint64_t) off);
    pthread_mutex_unlock(&in->lock);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_write(req, size);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in;
    int rc = inode_get(fs, ino, &in);
    (void) datasync;
    (void) fi;
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    /* the data, then the page map, then overlay.db (names and rows are
     * committed at each change and made durable here; a size left out of
     * a row is covered by the data file's size, read at the next mount) */
    if (in->backing_id) {
        /* passthrough writes may have extended the file: its size must be
         * durable with its data (overlay.db commits it) */
        pthread_mutex_lock(&fs->ns_lock);
        pthread_mutex_lock(&in->lock);
        backing_refresh(in);
        rc = sync_data(fs, in);
        /* a map written at an earlier release is made durable too */
        if (rc == 0 && (in->map_dirty || in->map_unsynced))
            rc = save_map(fs, in, true);
        if (rc == 0 && in->attr_dirty && in->nlink > 0)
            rc = persist_locked(fs, in);
        pthread_mutex_unlock(&in->lock);
        pthread_mutex_unlock(&fs->ns_lock);
        if (rc == 0)
            rc = overlay_sync(fs->ov); /* its name and size with it */
        fuse_reply_err(req, -rc);
        return;
    }
    pthread_mutex_lock(&in->lock);
    if (in->map_dirty || in->map_unsynced)
        rc = save_map(fs, in, true); /* syncs the data before the map */
    else
        rc = sync_data(fs, in);
    pthread_mutex_unlock(&in->lock);
    if (rc == 0)
        rc = overlay_sync(fs->ov); /* the file's name (and row) with it */
    fuse_reply_err(req, -rc);
}

/* Nothing to do at close: ENOSYS tells the kernel to stop sending flushes
 * (it still writes cached pages back before a close returns). */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void) ino;
    (void) fi;
    fuse_reply_err(req, ENOSYS);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in;
    if (inode_get(fs, ino, &in) == 0) {
        pthread_mutex_lock(&fs->ns_lock);
        pthread_mutex_lock(&in->lock);
        passthrough_release(req, in, fi);
        save_map(fs, in, false);
        if (in->attr_dirty && in->nlink > 0)
            persist_locked(fs, in);
        if (--in->opens <= 0) {
            in->opens = 0;
            if (in->fd >= 0)
                close(in->fd);
            in->fd = -1;
        }
        pthread_mutex_unlock(&in->lock);
        pthread_mutex_unlock(&fs->ns_lock);
    }
    fuse_reply_err(req, 0);
}

/* Truncate or extend.  Caller holds ns_lock and in->lock. */
static int set_size_locked(Fs *fs, Inode *in, uint64_t size)
{
    int rc = open_data(fs, in);
    if (rc < 0)
        return rc;
    if (size < in->base_limit) {
        /* the backup's bytes beyond size are gone for good */
        load_map(fs, in);
        in->base_limit = size;
        for (uint64_t page = (size + OVERLAY_PAGE - 1) / OVERLAY_PAGE; page / 8 < in->map_bytes;
             page++)
            in->map[page / 8] &= (uint8_t) ~(1u << (page % 8));
        in->map_dirty = true;
        if (size % OVERLAY_PAGE && !page_upper(in, size / OVERLAY_PAGE)) {
            /* the page holding the new end keeps its backup bytes below size */
        }
    }
    if (ftruncate(in->fd, (off_t) size) < 0)
        return -errno;
    in->size = size;
    in->mtime_ns = in->ctime_ns = now_ns();
    return 0;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in;
    struct stat st;
    int rc = inode_get(fs, ino, &in);
    (void) fi;

    if (rc == 0 && based(in) && (to_set & FUSE_SET_ATTR_SIZE))
        rc = load_refs(fs, in);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    pthread_mutex_lock(&fs->ns_lock);
    pthread_mutex_lock(&in->lock);
    backing_refresh(in);
    if ((to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) &&
        (((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != fs->uid) ||
         ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != fs->gid)))
        rc = -EPERM; /* every file belongs to the mount's owner */
    if (rc == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
        if (in->type != CBFS_FILE_REG)
            rc = -EISDIR;
        else
            rc = set_size_locked(fs, in, (uint64_t) attr->st_size);
        if (rc == 0)
            rc = save_map(fs, in, true);
    }
    if (rc == 0 && (to_set & FUSE_SET_ATTR_MODE))
        in->mode = kept_mode(in->type, attr->st_mode);
    if (rc == 0 && (to_set & FUSE_SET_ATTR_MTIME))
        in->mtime_ns = (to_set & FUSE_SET_ATTR_MTIME_NOW)
                           ? now_ns()
                           : (int64_t) attr->st_mtim.tv_sec * 1000000000 + attr->st_mtim.tv_nsec;
    if (rc == 0 && (to_set & ~(FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW))) {
        in->ctime_ns = now_ns();
        rc = persist_locked(fs, in);
    }
    if (rc == 0)
        fill_stat(fs, in, &st);
    pthread_mutex_unlock(&in->lock);
    pthread_mutex_unlock(&fs->ns_lock);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, TIMEOUT);
}

/* ---- folders ---- */

typedef struct DirEntry {
    char *name;
    uint64_t ino;
    int type;
} DirEntry;

typedef struct DirList {
    DirEntry *e;
    size_t n, cap;
    char **hidden; /* whiteouts and upper names, to hide backup entries */
    size_t nhidden;
} DirList;

static void dl_add(DirList *dl, const char *name, uint64_t ino, int type)
{
    if (dl->n == dl->cap) {
        dl->cap = dl->cap ? 2 * dl->cap : 32;
        dl->e = cbfs_xrealloc(dl->e, dl->cap * sizeof(DirEntry));
    }
    dl->e[dl->n++] = (DirEntry){cbfs_xstrdup(name), ino, type};
}

static void dl_free(DirList *dl)
{
    for (size_t i = 0; i < dl->n; i++)
        free(dl->e[i].name);
    for (size_t i = 0; i < dl->nhidden; i++)
        free(dl->hidden[i]);
    free(dl->e);
    free(dl->hidden);
    free(dl);
}

typedef struct ListCtx {
    Fs *fs;
    DirList *dl;
} ListCtx;

static int upper_cb(const char *name, uint64_t ino, bool is_whiteout, void *ctx)
{
    ListCtx *lc = ctx;
    DirList *dl = lc->dl;
    dl->hidden = cbfs_xrealloc(dl->hidden, (dl->nhidden + 1) * sizeof(char *));
    dl->hidden[dl->nhidden++] = cbfs_xstrdup(name);
    if (!is_whiteout) {
        Inode *in;
        if (inode_get_locked(lc->fs, ino, &in) == 0)
            dl_add(dl, name, ino, in->type);
    }
    return 0;
}

static int base_cb(const CbfsFileEntry *f, void *ctx)
{
    ListCtx *lc = ctx;
    const char *name = strrchr(f->path, '/') ? strrchr(f->path, '/') + 1 : f->path;
    for (size_t i = 0; i < lc->dl->nhidden; i++)
        if (strcmp(lc->dl->hidden[i], name) == 0)
            return 0;
    dl_add(lc->dl, name, (uint64_t) f->id + 1, f->type);
    return 0;
}

/* All names of a folder.  Caller holds ns_lock. */
static int list_locked(Fs *fs, Inode *dir, DirList **ret)
{
    DirList *dl = cbfs_xcalloc(1, sizeof(*dl));
    ListCtx lc = {fs, dl};
    CbfsError err;
    int rc;

    cbfs_error_init(&err);
    rc = overlay_list(fs->ov, dir->ino, upper_cb, &lc);
    if (rc == 0 && dir->ino == TSROOT_INO) {
        /* one folder per tablespace link, named by its manifest id */
        rc = cbfs_manifest_foreach_child(fs->manifest, fs->tblspc_id, base_cb, &lc, &err);
        for (size_t i = 0; i < dl->n; i++) {
            char name[32];
            uint64_t id = dl->e[i].ino - 1;
            snprintf(name, sizeof(name), "%llu", (unsigned long long) id);
            free(dl->e[i].name);
            dl->e[i].name = cbfs_xstrdup(name);
            dl->e[i].ino = TSROOT_INO + 1 + id;
            dl->e[i].type = CBFS_FILE_DIR;
        }
    } else if (rc == 0 && dir->list_id >= 0) {
        rc = cbfs_manifest_foreach_child(fs->manifest, dir->list_id, base_cb, &lc, &err);
        if (rc == 0 && dir->ino == FUSE_ROOT_ID && fs->has_tablespaces)
            dl_add(dl, TSROOT_NAME, TSROOT_INO, CBFS_FILE_DIR);
        if (rc == 0 && dir->ino == FUSE_ROOT_ID) {
            bool seen = false;
            for (size_t i = 0; i < dl->n; i++) {
                if (strcmp(dl->e[i].name, "pg_wal") == 0) {
                    dl->e[i].ino = PGWAL_INO;
                    dl->e[i].type = CBFS_FILE_SYMLINK;
                    seen = true;
                }
            }
            if (!seen)
                dl_add(dl, "pg_wal", PGWAL_INO, CBFS_FILE_SYMLINK);
        }
    }
    if (rc < 0) {
        dl_free(dl);
        return -EIO;
    }
    *ret = dl;
    return 0;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in;
    DirList *dl = NULL;
    int rc;

    pthread_mutex_lock(&fs->ns_lock);
    rc = inode_get_locked(fs, ino, &in);
    if (rc == 0 && in->type != CBFS_FILE_DIR)
        rc = -ENOTDIR;
    if (rc == 0)
        rc = list_locked(fs, in, &dl);
    pthread_mutex_unlock(&fs->ns_lock);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    fi->fh = (uint64_t) (uintptr_t) dl;
    fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    static const mode_t types[] = {0, S_IFREG, S_IFDIR, S_IFLNK};
    DirList *dl = (DirList *) (uintptr_t) fi->fh;
    char *buf = cbfs_xmalloc(size);
    size_t used = 0;

    for (size_t i = (size_t) off; i < dl->n + 2; i++) {
        struct stat st;
        const char *name;
        size_t n;
        memset(&st, 0, sizeof(st));
        if (i == 0) {
            name = ".";
            st.st_ino = ino;
            st.st_mode = S_IFDIR;
        } else if (i == 1) {
            name = "..";
            st.st_ino = FUSE_ROOT_ID;
            st.st_mode = S_IFDIR;
        } else {
            name = dl->e[i - 2].name;
            st.st_ino = dl->e[i - 2].ino;
            st.st_mode = types[dl->e[i - 2].type];
        }
        n = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t) (i + 1));
        if (n > size - used)
            break;
        used += n;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void) ino;
    dl_free((DirList *) (uintptr_t) fi->fh);
    fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    /* every name change was committed before its reply: made durable now */
    (void) ino;
    (void) datasync;
    (void) fi;
    fuse_reply_err(req, -overlay_sync(((Fs *) fuse_req_userdata(req))->ov));
}

/* ---- namespace changes (all under ns_lock, one overlay transaction) ---- */

/* Remove name from parent's view.  Caller holds ns_lock, in a transaction. */
static int unname_locked(Fs *fs, Inode *parent, const char *name)
{
    uint64_t ino;
    int rc = overlay_lookup(fs->ov, parent->ino, name, &ino);
    if (rc == 0)
        rc = overlay_remove_dirent(fs->ov, parent->ino, name);
    else if (rc == -ENOENT)
        rc = 0;
    else if (rc == 1)
        return 0;
    if (rc == 0 && parent->list_id >= 0) {
        /* hide a backup entry of that name, if any */
        CbfsFileEntry f;
        if (cbfs_manifest_lookup(fs->manifest, parent->list_id, name, &f, NULL) == 0) {
            cbfs_file_entry_release(&f);
            rc = overlay_add_whiteout(fs->ov, parent->ino, name);
        }
    }
    return rc;
}

/* What a namespace change altered in an inode in memory, put back if its
 * transaction does not commit (a full overlay file system, say), and the
 * data file that goes once it does. */
typedef struct Undo {
    Inode *in;
    uint32_t nlink;
    int64_t ctime_ns;
    bool upper;
    bool gone; /* the last link dropped: the data goes after the commit */
} Undo;

static void undo_save(Undo *u, Inode *in)
{
    *u = (Undo){in, in->nlink, in->ctime_ns, in->upper, false};
}

/* The transaction rolled back: the inode as it was. */
static void undo_apply(Undo *u)
{
    if (!u->in)
        return;
    pthread_mutex_lock(&u->in->lock);
    u->in->nlink = u->nlink;
    u->in->ctime_ns = u->ctime_ns;
    u->in->upper = u->upper;
    pthread_mutex_unlock(&u->in->lock);
}

/* The transaction committed: the data of an inode whose last link went is
 * removed (an open descriptor keeps it readable until closed). */
static void undo_commit(Fs *fs, Undo *u)
{
    if (!u->in || !u->gone)
        return;
    char *data = overlay_data_path(fs->ov, u->in->ino), *map = overlay_map_path(fs->ov, u->in->ino);
    pthread_mutex_lock(&u->in->lock);
    unlink(data);
    unlink(map);
    u->in->upper = false;
    u->in->map_dirty = false;
    u->in->map_unsynced = false;
    pthread_mutex_unlock(&u->in->lock);
    free(data);
    free(map);
}

/* Drop one link of in; its data goes with the last one, once the caller's
 * transaction commits (undo_commit).  Caller holds ns_lock. */
static int drop_link_locked(Fs *fs, Inode *in, Undo *u)
{
    int rc;
    pthread_mutex_lock(&in->lock);
    undo_save(u, in);
    if (in->nlink > 0)
        in->nlink--;
    if (in->type == CBFS_FILE_DIR || in->nlink == 0) {
        in->nlink = 0;
        rc = overlay_delete_inode(fs->ov, in->ino);
        u->gone = true;
    } else {
        in->ctime_ns = now_ns();
        rc = persist_locked(fs, in);
    }
    pthread_mutex_unlock(&in->lock);
    return rc;
}

static bool dir_empty_locked(Fs *fs, Inode *dir)
{
    DirList *dl;
    bool empty;
    if (list_locked(fs, dir, &dl) < 0)
        return false;
    empty = dl->n == 0;
    dl_free(dl);
    return empty;
}

/* 0 if name is free in folder p, -EEXIST if taken, else the lookup's error.
 * Caller holds ns_lock. */
static int name_free_locked(Fs *fs, Inode *p, const char *name)
{
    uint64_t ino;
    int rc = resolve_locked(fs, p, name, &ino);
    return rc == 0 ? -EEXIST : rc == -ENOENT ? 0 : rc;
}

/* A new inode named parent/name, in one committed transaction. */
static int make_node(Fs *fs, uint64_t parent, const char *name, int type, mode_t mode,
                     const char *target, Inode **ret)
{
    Inode *p, *in;
    int rc;

    if (strlen(name) > 255)
        return -ENAMETOOLONG;
    pthread_mutex_lock(&fs->ns_lock);
    rc = inode_get_locked(fs, parent, &p);
    if (rc == 0 && p->type != CBFS_FILE_DIR)
        rc = -ENOTDIR;
    if (rc == 0)
        rc = name_free_locked(fs, p, name);
    if (rc == 0)
        rc = overlay_begin(fs->ov);
    if (rc == 0) {
        uint64_t ino;
        rc = overlay_new_ino(fs->ov, &ino);
        if (rc < 0) {
            overlay_rollback(fs->ov);
            pthread_mutex_unlock(&fs->ns_lock);
            return rc;
        }
        in = inode_alloc(ino);
        in->type = type;
        in->mode = kept_mode(type, mode);
        in->nlink = type == CBFS_FILE_DIR ? 2 : 1;
        in->mtime_ns = in->ctime_ns = now_ns();
        in->target = target ? cbfs_xstrdup(target) : NULL;
        rc = persist_locked(fs, in);
        if (rc == 0)
            rc = overlay_add_dirent(fs->ov, p->ino, name, in->ino);
        if (rc == 0)
            rc = overlay_commit(fs->ov);
        if (rc < 0) {
            overlay_rollback(fs->ov);
            free(in->target);
            free(in);
        } else {
            *ret = itab_add(fs, in);
            p->mtime_ns = p->ctime_ns = in->ctime_ns;
        }
    }
    pthread_mutex_unlock(&fs->ns_lock);
    return rc;
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in;
    struct fuse_entry_param e;
    int rc = make_node(fuse_req_userdata(req), parent, name, CBFS_FILE_REG, mode, NULL, &in);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    pthread_mutex_lock(&in->lock);
    in->opens++;
    rc = open_data(fs, in);
    memset(&e, 0, sizeof(e));
    e.ino = in->ino;
    e.generation = 1;
    e.attr_timeout = e.entry_timeout = TIMEOUT;
    fill_stat(fs, in, &e.attr);
    fi->keep_cache = 1;
    if (rc == 0)
        passthrough_open(req, fs, in, fi); /* a new file is whole */
    pthread_mutex_unlock(&in->lock);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    fuse_reply_create(req, &e, fi);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    Inode *in;
    int rc;
    (void) rdev;
    if (!S_ISREG(mode)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    rc = make_node(fuse_req_userdata(req), parent, name, CBFS_FILE_REG, mode, NULL, &in);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        reply_entry(req, fuse_req_userdata(req), in);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    Inode *in;
    int rc = make_node(fuse_req_userdata(req), parent, name, CBFS_FILE_DIR, mode, NULL, &in);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        reply_entry(req, fuse_req_userdata(req), in);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    Inode *in;
    int rc = make_node(fuse_req_userdata(req), parent, name, CBFS_FILE_SYMLINK, 0777, link, &in);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        reply_entry(req, fuse_req_userdata(req), in);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *in, *p;
    int rc;

    pthread_mutex_lock(&fs->ns_lock);
    rc = inode_get_locked(fs, ino, &in);
    if (rc == 0)
        rc = inode_get_locked(fs, newparent, &p);
    if (rc == 0 && in->type == CBFS_FILE_DIR)
        rc = -EPERM;
    if (rc == 0)
        rc = name_free_locked(fs, p, newname);
    if (rc == 0)
        rc = overlay_begin(fs->ov);
    if (rc == 0) {
        Undo u;
        pthread_mutex_lock(&in->lock);
        undo_save(&u, in);
        in->nlink++;
        in->ctime_ns = now_ns();
        rc = persist_locked(fs, in);
        pthread_mutex_unlock(&in->lock);
        if (rc == 0)
            rc = overlay_add_dirent(fs->ov, p->ino, newname, in->ino);
        if (rc == 0)
            rc = overlay_commit(fs->ov);
        if (rc < 0) {
            overlay_rollback(fs->ov);
            undo_apply(&u);
        }
    }
    pthread_mutex_unlock(&fs->ns_lock);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        reply_entry(req, fs, in);
}

static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name, bool dir)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *p, *in;
    int rc;

    pthread_mutex_lock(&fs->ns_lock);
    rc = lookup_locked(fs, parent, name, &p, &in);
    if (rc == 0 && is_virtual(in->ino))
        rc = -EPERM;
    if (rc == 0 && dir && in->type != CBFS_FILE_DIR)
        rc = -ENOTDIR;
    if (rc == 0 && !dir && in->type == CBFS_FILE_DIR)
        rc = -EISDIR;
    if (rc == 0 && dir && !dir_empty_locked(fs, in))
        rc = -ENOTEMPTY;
    if (rc == 0)
        rc = overlay_begin(fs->ov);
    if (rc == 0) {
        Undo u = {0};
        rc = unname_locked(fs, p, name);
        if (rc == 0)
            rc = drop_link_locked(fs, in, &u);
        if (rc == 0)
            rc = overlay_commit(fs->ov);
        if (rc < 0) {
            overlay_rollback(fs->ov);
            undo_apply(&u);
        } else {
            undo_commit(fs, &u);
            p->mtime_ns = p->ctime_ns = now_ns();
        }
    }
    pthread_mutex_unlock(&fs->ns_lock);
    fuse_reply_err(req, rc < 0 ? -rc : 0);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_name(req, parent, name, false);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_name(req, parent, name, true);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    Fs *fs = fuse_req_userdata(req);
    Inode *p, *np, *src, *dst = NULL;
    uint64_t ino, dino;
    int rc;

    if (flags & ~RENAME_NOREPLACE) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    pthread_mutex_lock(&fs->ns_lock);
    rc = inode_get_locked(fs, parent, &p);
    if (rc == 0)
        rc = inode_get_locked(fs, newparent, &np);
    if (rc == 0)
        rc = resolve_locked(fs, p, name, &ino);
    if (rc == 0)
        rc = inode_get_locked(fs, ino, &src);
    if (rc == 0 && is_virtual(ino))
        rc = -EPERM;
    if (rc == 0 && np->type != CBFS_FILE_DIR)
        rc = -ENOTDIR;
    if (rc == 0) {
        int r = resolve_locked(fs, np, newname, &dino);
        if (r == 0) {
            rc = inode_get_locked(fs, dino, &dst);
            if (rc == 0 && is_virtual(dino))
                rc = -EPERM;
            else if (rc == 0 && dino == ino)
                dst = NULL, rc = 1; /* same file: nothing to do */
            else if (rc == 0 && (flags & RENAME_NOREPLACE))
                rc = -EEXIST;
            else if (rc == 0 && dst->type == CBFS_FILE_DIR && src->type != CBFS_FILE_DIR)
                rc = -EISDIR;
            else if (rc == 0 && dst->type != CBFS_FILE_DIR && src->type == CBFS_FILE_DIR)
                rc = -ENOTDIR;
            else if (rc == 0 && dst->type == CBFS_FILE_DIR && !dir_empty_locked(fs, dst))
                rc = -ENOTEMPTY;
        } else if (r != -ENOENT) {
            rc = r;
        }
    }
    if (rc == 0)
        rc = overlay_begin(fs->ov);
    if (rc == 0) {
        Undo du = {0}, su = {0};
        /* all in one transaction: the rename is atomic across a crash */
        if (dst) {
            rc = unname_locked(fs, np, newname);
            if (rc == 0)
                rc = drop_link_locked(fs, dst, &du);
        }
        if (rc == 0)
            rc = unname_locked(fs, p, name);
        if (rc == 0)
            rc = overlay_add_dirent(fs->ov, np->ino, newname, ino);
        if (rc == 0 && !src->upper) {
            pthread_mutex_lock(&src->lock);
            undo_save(&su, src);
            src->ctime_ns = now_ns();
            rc = persist_locked(fs, src);
            pthread_mutex_unlock(&src->lock);
        }
        if (rc == 0)
            rc = overlay_commit(fs->ov);
        if (rc < 0) {
            overlay_rollback(fs->ov);
            undo_apply(&su);
            undo_apply(&du);
        } else {
            undo_commit(fs, &du);
        }
    }
    pthread_mutex_unlock(&fs->ns_lock);
    fuse_reply_err(req, rc < 0 ? -rc : 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    Fs *fs = fuse_req_userdata(req);
    struct statvfs sv;
    (void) ino;
    if (statvfs(overlay_dir(fs->ov), &sv) < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    sv.f_namemax = 255;
    fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    Fs *fs = userdata;
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    conn->max_readahead = 1u << 20;
    /* PostgreSQL's recovery prefetches with posix_fadvise(WILLNEED): each a
     * background read; the kernel's default of 12 in flight made it wait */
    conn->max_background = 64;
    conn->congestion_threshold = 48;
#if CBFS_FUSE_PASSTHROUGH
    if (fs->want_passthrough && (conn->capable & FUSE_CAP_PASSTHROUGH)) {
        conn->want |= FUSE_CAP_PASSTHROUGH;
        /* the overlay may itself sit on a stacked file system (overlayfs) */
        conn->max_backing_stack_depth = 1;
        fs->passthrough = true;
    }
#endif
    /* the kernel does not combine passthrough with its writeback cache */
    if ((conn->capable & FUSE_CAP_WRITEBACK_CACHE) && !fs->passthrough)
        conn->want |= FUSE_CAP_WRITEBACK_CACHE;
    cbfs_info("FUSE passthrough %s",
              fs->passthrough          ? "on"
              : !CBFS_FUSE_PASSTHROUGH ? "off (this build's libfuse has none)"
              : !fs->want_passthrough  ? "off (not asked for, or not running as root)"
                                       : "off (the kernel does not offer it)");
    if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
        conn->want |= FUSE_CAP_CACHE_SYMLINKS;
#if CBFS_FUSE_URING
    cbfs_info("FUSE over io_uring %s",
              !fs->want_uring ? "off (not asked for, or the kernel's fuse.enable_uring is off)"
              : (conn->capable_ext & FUSE_CAP_OVER_IO_URING)
                  ? "on"
                  : "off (the kernel does not offer it)");
#else
    cbfs_info("FUSE over io_uring off (this build's libfuse has none)");
#endif
#ifdef FUSE_CAP_HANDLE_KILLPRIV_V2
    /* see kept_mode(); without it (libfuse before 3.16) the kernel asks for
     * security.capability before every write into its cache */
    if (conn->capable & FUSE_CAP_HANDLE_KILLPRIV_V2)
        conn->want |= FUSE_CAP_HANDLE_KILLPRIV_V2;
#endif
}

/* The mount's root answers one extended attribute, FS_XATTR_OVERLAY: the
 * overlay folder, where `cbfs hydrate` and `cbfs umount --materialize`
 * leave their requests (hydrate.h).  Nothing else has any. */
static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    Fs *fs = fuse_req_userdata(req);
    const char *v = overlay_dir(fs->ov);
    size_t len = strlen(v);
    if (ino != FUSE_ROOT_ID || strcmp(name, FS_XATTR_OVERLAY) != 0)
        fuse_reply_err(req, ENODATA);
    else if (size == 0)
        fuse_reply_xattr(req, len);
    else if (size < len)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, v, len);
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .getxattr = op_getxattr,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .create = op_create,
};

const struct fuse_lowlevel_ops *fs_ops(void)
{
    return &ops;
}

/* ---- the whole tree: hydration and materialize (fs.h) ---- */

int fs_walk(Fs *fs, fs_walk_cb cb, void *ctx)
{
    typedef struct Frame {
        uint64_t ino;
        char *path;
    } Frame;
    Frame *stack = cbfs_xmalloc(sizeof(Frame));
    size_t n = 1;
    int rc = 0;

    stack[0] = (Frame){FUSE_ROOT_ID, cbfs_xstrdup("")};
    while (n > 0 && rc == 0) {
        Frame f = stack[--n];
        Inode *dir;
        DirList *dl = NULL;
        pthread_mutex_lock(&fs->ns_lock);
        rc = inode_get_locked(fs, f.ino, &dir);
        if (rc == 0)
            rc = list_locked(fs, dir, &dl);
        pthread_mutex_unlock(&fs->ns_lock);
        for (size_t i = 0; rc == 0 && i < dl->n; i++) {
            DirEntry *e = &dl->e[i];
            char *path = *f.path ? cbfs_xasprintf("%s/%s", f.path, e->name) : cbfs_xstrdup(e->name);
            rc = cb(path, e->ino, e->type, ctx);
            if (rc == 0 && e->type == CBFS_FILE_DIR) {
                stack = cbfs_xrealloc(stack, (n + 1) * sizeof(Frame));
                stack[n++] = (Frame){e->ino, path};
            } else {
                free(path);
            }
        }
        if (dl)
            dl_free(dl);
        free(f.path);
    }
    while (n > 0)
        free(stack[--n].path);
    free(stack);
    return rc;
}

int fs_entry(Fs *fs, uint64_t ino, FsEntry *ret)
{
    Inode *in;
    int rc = inode_get(fs, ino, &in);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&in->lock);
    backing_refresh(in);
    *ret = (FsEntry){
        .type = in->type,
        .mode = in->mode,
        .size = in->size,
        .mtime_ns = in->mtime_ns,
        .nlink = in->nlink,
        .target = in->target ? cbfs_xstrdup(in->target) : NULL,
        .data = overlay_data_path(fs->ov, ino),
        .pg_wal = ino == PGWAL_INO,
        .based = based(in),
        .base_bytes = based(in) ? in->base_limit : 0,
    };
    if (ret->based) {
        uint64_t pages = (in->base_limit + OVERLAY_PAGE - 1) / OVERLAY_PAGE, up = 0;
        load_map(fs, in);
        for (uint64_t p = 0; p < pages; p++)
            up += page_upper(in, p);
        ret->upper_bytes = up * OVERLAY_PAGE < in->base_limit ? up * OVERLAY_PAGE : in->base_limit;
    }
    pthread_mutex_unlock(&in->lock);
    return 0;
}

void fs_entry_release(FsEntry *e)
{
    free(e->target);
    free(e->data);
    e->target = e->data = NULL;
}

int fs_hydrate_file(Fs *fs, uint64_t ino, fs_hydrate_throttle throttle, void *ctx,
                    uint64_t *ret_copied)
{
    Inode *in;
    char *buf = NULL;
    uint64_t since_sync = 0;
    int rc = inode_get(fs, ino, &in);

    *ret_copied = 0;
    if (rc < 0 || !based(in))
        return rc;
    if ((rc = load_refs(fs, in)) < 0 || (rc = ensure_upper(fs, in)) < 0)
        return rc;
    /* held like a handle: the data file stays open, passthrough waits */
    pthread_mutex_lock(&in->lock);
    in->opens++;
    rc = open_data(fs, in);
    if (rc == 0)
        load_map(fs, in);
    pthread_mutex_unlock(&in->lock);
    buf = cbfs_xmalloc(fs->block_size);
    for (uint64_t b = 0; rc == 0; b++) {
        uint64_t start = b * fs->block_size, end, first, last, missing = 0;
        pthread_mutex_lock(&in->lock);
        end = start + fs->block_size < in->base_limit ? start + fs->block_size : in->base_limit;
        if (start >= in->base_limit || in->nlink == 0) { /* done, or removed meanwhile */
            pthread_mutex_unlock(&in->lock);
            break;
        }
        first = start / OVERLAY_PAGE;
        last = (end + OVERLAY_PAGE - 1) / OVERLAY_PAGE;
        for (uint64_t p = first; p < last; p++)
            missing += !page_upper(in, p);
        pthread_mutex_unlock(&in->lock);
        if (!missing)
            continue;
        if ((rc = throttle(ctx, end - start)) < 0)
            break;
        rc = read_base(fs, in, buf, start, (size_t) (end - start), "hydration");
        pthread_mutex_lock(&in->lock);
        if (rc == 0)
            rc = overlay_make_room(fs->ov, missing * OVERLAY_PAGE);
        /* pages PostgreSQL wrote meanwhile, or cut off by a truncation,
         * are left as they are */
        for (uint64_t p = first; rc == 0 && p < last; p++) {
            uint64_t ps = p * OVERLAY_PAGE, pe = ps + OVERLAY_PAGE;
            if (page_upper(in, p) || ps >= in->base_limit)
                continue;
            if (pe > in->base_limit)
                pe = in->base_limit;
            rc = cbfs_pwrite_full(in->fd, buf + (ps - start), (size_t) (pe - ps), (off_t) ps);
            if (rc == 0) {
                in->map[p / 8] |= (uint8_t) (1u << (p % 8));
                in->map_dirty = true;
                *ret_copied += pe - ps;
                since_sync += pe - ps;
            }
        }
        /* durable in steps: the data, then the map (save_map) */
        if (rc == 0 && since_sync >= (64u << 20)) {
            rc = save_map(fs, in, true);
            since_sync = 0;
        }
        pthread_mutex_unlock(&in->lock);
    }
    free(buf);
    pthread_mutex_lock(&fs->ns_lock);
    pthread_mutex_lock(&in->lock);
    if (in->nlink == 0)
        in->map_dirty = false; /* removed meanwhile: no map for it */
    else if (rc == 0)
        rc = save_map(fs, in, true);
    else
        save_map(fs, in, false);
    if (--in->opens <= 0) {
        in->opens = 0;
        if (in->fd >= 0)
            close(in->fd);
        in->fd = -1;
    }
    pthread_mutex_unlock(&in->lock);
    pthread_mutex_unlock(&fs->ns_lock);
    return rc;
}

int64_t fs_last_foreground(const Fs *fs)
{
    return __atomic_load_n(&fs->last_fg_ns, __ATOMIC_RELAXED);
}

void fs_owner(const Fs *fs, uid_t *uid, gid_t *gid)
{
    *uid = fs->uid;
    *gid = fs->gid;
}

bool fs_has_tablespaces(const Fs *fs)
{
    return fs->has_tablespaces;
}

const char *fs_overlay_dir(const Fs *fs)
{
    return overlay_dir(fs->ov);
}

/* ---- setup ---- */

/* Can uid/gid traverse every folder above path? */
static int reachable(const char *path, uid_t uid, gid_t gid, CbfsError *err)
{
    char *p = cbfs_xstrdup(path);
    int rc = 0;
    for (char *s = strrchr(p, '/'); s && s > p && rc == 0; s = strrchr(p, '/')) {
        struct stat st;
        *s = '\0';
        if (stat(p, &st) < 0)
            continue; /* created below */
        if (uid != 0 && !(st.st_mode & S_IXOTH) && !(st.st_uid == uid && (st.st_mode & S_IXUSR)) &&
            !(st.st_gid == gid && (st.st_mode & S_IXGRP)))
            rc = cbfs_error_set(err, EACCES, CBFS_EXIT_USAGE,
                                "user %u cannot reach the overlay folder \"%s\" (\"%s\" is closed "
                                "to it); choose one with -o overlay=",
                                (unsigned) uid, path, p);
    }
    free(p);
    return rc;
}

static int any_link_cb(const CbfsFileEntry *f, void *ctx)
{
    if (f->type == CBFS_FILE_SYMLINK)
        *(bool *) ctx = true;
    return 0;
}

int fs_new(const FsConfig *cfg, Fs **ret, CbfsError *err)
{
    Fs *fs = cbfs_xcalloc(1, sizeof(*fs));
    CbfsFileEntry f;
    int rc;

    fs->repo = cfg->repo;
    fs->ov = cfg->overlay;
    fs->uid = cfg->uid;
    fs->gid = cfg->gid;
    fs->block_size = cfg->repo->block_size;
    fs->label = cbfs_xstrdup(cfg->label);
    fs->target = cfg->target;
    fs->want_passthrough = CBFS_FUSE_PASSTHROUGH && cfg->passthrough && geteuid() == 0;
    fs->want_uring = cfg->io_uring;
    fs->headroom = cfg->headroom ? cfg->headroom : OVERLAY_HEADROOM;
    fs->nbuckets = 16381;
    fs->itab = cbfs_xcalloc(fs->nbuckets, sizeof(Inode *));
    pthread_mutex_init(&fs->ns_lock, NULL);
    pthread_mutex_init(&fs->itab_lock, NULL);
    rc = cbfs_repo_open_manifest(cfg->repo, cfg->record, cfg->cache_dir, &fs->manifest, err);
    if (rc < 0) {
        fs_free(fs);
        return rc;
    }
    if (cbfs_manifest_lookup(fs->manifest, 0, "pg_tblspc", &f, NULL) == 0) {
        fs->tblspc_id = f.id;
        cbfs_file_entry_release(&f);
        cbfs_manifest_foreach_child(fs->manifest, fs->tblspc_id, any_link_cb, &fs->has_tablespaces,
                                    NULL);
    }
    /* the local pg_wal the symlink points to, owned like every file; the
     * user PostgreSQL runs as must be able to reach it */
    fs->pgwal_target = cbfs_xasprintf("%s/pg_wal", overlay_dir(cfg->overlay));
    if ((rc = reachable(fs->pgwal_target, cfg->uid, cfg->gid, err)) < 0) {
        fs_free(fs);
        return rc;
    }
    {
        char *status = cbfs_xasprintf("%s/archive_status", fs->pgwal_target);
        rc = cbfs_mkdir_p(status, 0700, err);
        if (rc == 0 && (chown(fs->pgwal_target, cfg->uid, cfg->gid) < 0 ||
                        chown(status, cfg->uid, cfg->gid) < 0))
            rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not prepare \"%s\": %s",
                                fs->pgwal_target, strerror(errno));
        free(status);
        if (rc < 0) {
            fs_free(fs);
            return rc;
        }
    }
    fs->cache = blockcache_new(cfg->repo->store, cfg->repo->crypt, cfg->cache_size,
                               cfg->repo->block_size, cfg->prefetchers);
    *ret = fs;
    return 0;
}

CbfsManifest *fs_manifest(Fs *fs)
{
    return fs->manifest;
}

bool fs_passthrough(const Fs *fs)
{
    return fs->passthrough;
}

void fs_free(Fs *fs)
{
    if (!fs)
        return;
    /* write back what release has not: page maps and attributes */
    if (fs->itab) {
        pthread_mutex_lock(&fs->ns_lock);
        for (size_t b = 0; b < fs->nbuckets; b++) {
            Inode *in = fs->itab[b];
            while (in) {
                Inode *next = in->hnext;
                if (in->fd >= 0)
                    fdatasync(in->fd);
                save_map(fs, in, true);
                if (in->attr_dirty && in->nlink > 0 && fs->ov)
                    persist_locked(fs, in);
                if (in->fd >= 0)
                    close(in->fd);
                free(in->map);
                free(in->refs);
                free(in->target);
                pthread_mutex_destroy(&in->lock);
                free(in);
                in = next;
            }
        }
        pthread_mutex_unlock(&fs->ns_lock);
    }
    blockcache_free(fs->cache);
    cbfs_manifest_free(fs->manifest);
    free(fs->itab);
    free(fs->label);
    free(fs->pgwal_target);
    free(fs);
}

/* Create (or append to) a file in the data directory's top folder. */
static int inject_file(Fs *fs, const char *name, const char *text, bool append)
{
    Inode *in = NULL;
    int rc;

    pthread_mutex_lock(&fs->ns_lock);
    rc = lookup_locked(fs, FUSE_ROOT_ID, name, NULL, &in);
    pthread_mutex_unlock(&fs->ns_lock);
    if (rc == -ENOENT)
        rc = make_node(fs, FUSE_ROOT_ID, name, CBFS_FILE_REG, 0600, NULL, &in);
    else if (rc == 0 && !append)
        rc = -EEXIST;
    if (rc < 0)
        return rc;
    if (based(in) && (rc = load_refs(fs, in)) < 0)
        return rc;
    if ((rc = ensure_upper(fs, in)) < 0)
        return rc;
    pthread_mutex_lock(&fs->ns_lock);
    pthread_mutex_lock(&in->lock);
    rc = write_locked(fs, in, text, strlen(text), in->size);
    if (rc == 0 && fdatasync(in->fd) < 0)
        rc = -errno;
    if (rc == 0)
        rc = save_map(fs, in, true);
    if (rc == 0)
        rc = persist_locked(fs, in);
    pthread_mutex_unlock(&in->lock);
    pthread_mutex_unlock(&fs->ns_lock);
    return rc;
}

int fs_inject(Fs *fs, const char *self, CbfsError *err)
{
    char *label_text = cbfs_manifest_get_meta(fs->manifest, "backup_label");
    char *conf = cbfs_target_recovery_conf(fs->repo, fs->target, "mount.cbfs", self, true);
    int rc;

    if (!label_text) {
        free(conf);
        return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                              "manifest of backup \"%s\" has no backup_label", fs->label);
    }
    rc = inject_file(fs, "backup_label", label_text, false);
    if (rc == 0)
        rc = inject_file(fs, "recovery.signal", "", false);
    if (rc == 0)
        rc = inject_file(fs, "postgresql.auto.conf", conf, true);
    if (rc == 0)
        rc = overlay_sync(fs->ov);
    if (rc < 0)
        cbfs_error_set(err, -rc, CBFS_EXIT_ERROR,
                       "could not prepare the mount's recovery files: %s", strerror(-rc));
    free(label_text);
    free(conf);
    return rc;
}
