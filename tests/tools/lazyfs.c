/*
 * lazyfs.c - a FUSE file system for power-cut tests, in the manner of
 * LazyFS (the one Jepsen uses): a pass-through to a backing folder that
 * keeps written file data in memory until it is synced, and loses all of
 * it at a "crash".
 *
 *   lazyfs BACKING MOUNTPOINT [-f]     (unmount with fusermount3 -u)
 *
 * Model of the disk under it:
 *   - file data written and not yet synced (fsync, fdatasync) lives in
 *     this process's memory, in 4 KiB pages over the backing file; reads
 *     see it; a sync writes that file's pages, sets its size and fsyncs
 *     the backing file;
 *   - a size set by truncate, and every namespace change (create, mkdir,
 *     unlink, rename, link, symlink, chmod, times) reach the backing folder
 *     at once: metadata is durable as soon as it is made (a file system
 *     that journals metadata synchronously; stricter models lose more);
 *   - SIGUSR1 is the power cut: unsynced data is dropped and every later
 *     request fails with EIO until the file system is mounted again (the
 *     writers are killed and the mount taken down by the test meanwhile);
 *   - SIGUSR2 writes, on stderr, how many pages are unsynced.
 *
 * Single-threaded (-s): every request runs on the one FUSE loop thread.
 */
#define FUSE_USE_VERSION 31
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#define PAGE 4096u

typedef struct Page {
    uint64_t index;
    struct Page *next;
    char data[PAGE];
} Page;

/* The unsynced state of one backing file (by inode number). */
typedef struct Dirty {
    ino_t ino;
    uint64_t size; /* the file's size as the writers see it */
    size_t npages;
    Page **buckets; /* hash of pages by index */
    size_t nbuckets;
    struct Dirty *next;
} Dirty;

static int backing = -1; /* the backing folder */
static Dirty *dirty_list;
static volatile sig_atomic_t crashed, report;

static const char *rel(const char *path)
{
    return path[1] ? path + 1 : ".";
}

static Dirty *dirty_find(ino_t ino)
{
    for (Dirty *d = dirty_list; d; d = d->next)
        if (d->ino == ino)
            return d;
    return NULL;
}

static void dirty_free(Dirty *d)
{
    for (size_t b = 0; b < d->nbuckets; b++)
        for (Page *p = d->buckets[b], *n; p; p = n) {
            n = p->next;
            free(p);
        }
    free(d->buckets);
    free(d);
}

static void dirty_drop(ino_t ino)
{
    for (Dirty **pp = &dirty_list; *pp; pp = &(*pp)->next)
        if ((*pp)->ino == ino) {
            Dirty *d = *pp;
            *pp = d->next;
            dirty_free(d);
            return;
        }
}

static Page *page_find(Dirty *d, uint64_t index)
{
    for (Page *p = d->buckets[index % d->nbuckets]; p; p = p->next)
        if (p->index == index)
            return p;
    return NULL;
}

static void page_add(Dirty *d, Page *p)
{
    size_t b = p->index % d->nbuckets;
    p->next = d->buckets[b];
    d->buckets[b] = p;
    d->npages++;
}

/* The power cut: what was not synced is gone, and from now on nothing. */
static void check_signals(void)
{
    if (crashed == 1) {
        while (dirty_list) {
            Dirty *d = dirty_list;
            dirty_list = d->next;
            dirty_free(d);
        }
        crashed = 2;
    }
    if (report) {
        size_t n = 0;
        for (Dirty *d = dirty_list; d; d = d->next)
            n += d->npages;
        fprintf(stderr, "lazyfs: %zu unsynced pages\n", n);
        report = 0;
    }
}

#define ENTER()                                                                                    \
    do {                                                                                           \
        check_signals();                                                                           \
        if (crashed)                                                                               \
            return -EIO;                                                                           \
    } while (0)

static void on_usr1(int sig)
{
    (void) sig;
    if (!crashed)
        crashed = 1;
}

static void on_usr2(int sig)
{
    (void) sig;
    report = 1;
}

static int lz_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    Dirty *d;
    (void) fi;
    ENTER();
    if (fstatat(backing, rel(path), st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (S_ISREG(st->st_mode) && (d = dirty_find(st->st_ino)) != NULL)
        st->st_size = (off_t) d->size;
    return 0;
}

static int lz_readlink(const char *path, char *buf, size_t len)
{
    ssize_t n;
    ENTER();
    n = readlinkat(backing, rel(path), buf, len - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return 0;
}

/* A new entry belongs to whoever made it (this process runs as root). */
static int own(const char *path)
{
    const struct fuse_context *c = fuse_get_context();
    return fchownat(backing, rel(path), c->uid, c->gid, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int lz_mkdir(const char *path, mode_t mode)
{
    ENTER();
    return mkdirat(backing, rel(path), mode) < 0 ? -errno : own(path);
}

static int lz_unlink(const char *path)
{
    ENTER();
    return unlinkat(backing, rel(path), 0) < 0 ? -errno : 0;
}

static int lz_rmdir(const char *path)
{
    ENTER();
    return unlinkat(backing, rel(path), AT_REMOVEDIR) < 0 ? -errno : 0;
}

static int lz_symlink(const char *target, const char *path)
{
    ENTER();
    return symlinkat(target, backing, rel(path)) < 0 ? -errno : own(path);
}

static int lz_rename(const char *from, const char *to, unsigned int flags)
{
    ENTER();
    if (flags)
        return -EINVAL;
    return renameat(backing, rel(from), backing, rel(to)) < 0 ? -errno : 0;
}

static int lz_link(const char *from, const char *to)
{
    ENTER();
    return linkat(backing, rel(from), backing, rel(to), 0) < 0 ? -errno : 0;
}

static int lz_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    (void) fi;
    ENTER();
    return fchmodat(backing, rel(path), mode, 0) < 0 ? -errno : 0;
}

static int lz_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    (void) fi;
    ENTER();
    return fchownat(backing, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int lz_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    (void) fi;
    ENTER();
    return utimensat(backing, rel(path), tv, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int lz_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    struct stat st;
    Dirty *d;
    int fd = fi ? (int) fi->fh : openat(backing, rel(path), O_WRONLY | O_CLOEXEC);
    int rc = 0;
    ENTER();
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || ftruncate(fd, size) < 0)
        rc = -errno;
    else if ((d = dirty_find(st.st_ino)) != NULL) {
        /* pages past the end go; the last one keeps zeros past it */
        for (size_t b = 0; b < d->nbuckets; b++)
            for (Page **pp = &d->buckets[b]; *pp;) {
                Page *p = *pp;
                if (p->index * PAGE >= (uint64_t) size) {
                    *pp = p->next;
                    free(p);
                    d->npages--;
                    continue;
                }
                if ((p->index + 1) * PAGE > (uint64_t) size)
                    memset(p->data + (size - (off_t) (p->index * PAGE)), 0,
                           (p->index + 1) * PAGE - (uint64_t) size);
                pp = &p->next;
            }
        d->size = (uint64_t) size;
    }
    if (!fi)
        close(fd);
    return rc;
}

static int lz_open(const char *path, struct fuse_file_info *fi)
{
    int fd;
    ENTER();
    /* read-write whatever was asked: a partly written page is read first */
    fd = openat(backing, rel(path),
                (fi->flags & ~(O_APPEND | O_DIRECT | O_ACCMODE)) | O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    fi->fh = (uint64_t) fd;
    return 0;
}

static int lz_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int fd;
    ENTER();
    fd = openat(backing, rel(path),
                (fi->flags & ~(O_APPEND | O_DIRECT | O_ACCMODE)) | O_RDWR | O_CREAT | O_CLOEXEC,
                mode);
    if (fd < 0)
        return -errno;
    fi->fh = (uint64_t) fd;
    return own(path);
}

static int lz_read(const char *path, char *buf, size_t len, off_t off, struct fuse_file_info *fi)
{
    int fd = (int) fi->fh;
    struct stat st;
    Dirty *d;
    uint64_t size, end;
    ssize_t n;
    (void) path;
    ENTER();
    if (fstat(fd, &st) < 0)
        return -errno;
    d = dirty_find(st.st_ino);
    size = d ? d->size : (uint64_t) st.st_size;
    if ((uint64_t) off >= size)
        return 0;
    end = (uint64_t) off + len < size ? (uint64_t) off + len : size;
    memset(buf, 0, end - (uint64_t) off);
    n = pread(fd, buf, end - (uint64_t) off, off);
    if (n < 0)
        return -errno;
    if (d)
        for (uint64_t i = (uint64_t) off / PAGE; i * PAGE < end; i++) {
            Page *p = page_find(d, i);
            uint64_t s = i * PAGE > (uint64_t) off ? i * PAGE : (uint64_t) off;
            uint64_t e = (i + 1) * PAGE < end ? (i + 1) * PAGE : end;
            if (p)
                memcpy(buf + (s - (uint64_t) off), p->data + (s - i * PAGE), e - s);
        }
    return (int) (end - (uint64_t) off);
}

static int lz_write(const char *path, const char *buf, size_t len, off_t off,
                    struct fuse_file_info *fi)
{
    int fd = (int) fi->fh;
    struct stat st;
    Dirty *d;
    uint64_t end = (uint64_t) off + len;
    (void) path;
    ENTER();
    if (fstat(fd, &st) < 0)
        return -errno;
    d = dirty_find(st.st_ino);
    if (!d) {
        d = calloc(1, sizeof(*d));
        d->ino = st.st_ino;
        d->size = (uint64_t) st.st_size;
        d->nbuckets = 1024;
        d->buckets = calloc(d->nbuckets, sizeof(Page *));
        d->next = dirty_list;
        dirty_list = d;
    }
    for (uint64_t i = (uint64_t) off / PAGE; i * PAGE < end; i++) {
        Page *p = page_find(d, i);
        uint64_t s = i * PAGE > (uint64_t) off ? i * PAGE : (uint64_t) off;
        uint64_t e = (i + 1) * PAGE < end ? (i + 1) * PAGE : end;
        if (!p) {
            p = calloc(1, sizeof(*p));
            p->index = i;
            /* what the file holds there now, unsynced bytes aside */
            if (i * PAGE < d->size && pread(fd, p->data, PAGE, (off_t) (i * PAGE)) < 0) {
                free(p);
                return -errno;
            }
            if ((i + 1) * PAGE > d->size && i * PAGE < d->size)
                memset(p->data + (d->size - i * PAGE), 0, (i + 1) * PAGE - d->size);
            else if (i * PAGE >= d->size)
                memset(p->data, 0, PAGE);
            page_add(d, p);
        }
        memcpy(p->data + (s - i * PAGE), buf + (s - (uint64_t) off), e - s);
    }
    if (end > d->size)
        d->size = end;
    return (int) len;
}

static int lz_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    int fd = (int) fi->fh;
    struct stat st;
    Dirty *d;
    (void) path;
    (void) datasync;
    ENTER();
    if (fstat(fd, &st) < 0)
        return -errno;
    if ((d = dirty_find(st.st_ino)) != NULL) {
        for (size_t b = 0; b < d->nbuckets; b++)
            for (Page *p = d->buckets[b]; p; p = p->next) {
                uint64_t len = (p->index + 1) * PAGE <= d->size ? PAGE : d->size - p->index * PAGE;
                if (p->index * PAGE >= d->size)
                    continue;
                if (pwrite(fd, p->data, len, (off_t) (p->index * PAGE)) != (ssize_t) len)
                    return errno ? -errno : -EIO;
            }
        if ((uint64_t) st.st_size < d->size && ftruncate(fd, (off_t) d->size) < 0)
            return -errno;
        dirty_drop(st.st_ino);
    }
    return fsync(fd) < 0 ? -errno : 0;
}

static int lz_release(const char *path, struct fuse_file_info *fi)
{
    (void) path;
    close((int) fi->fh); /* unsynced pages stay, as in a page cache */
    return 0;
}

static int lz_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    int fd;
    DIR *dir;
    struct dirent *de;
    (void) off;
    (void) fi;
    (void) flags;
    ENTER();
    fd = openat(backing, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    dir = fdopendir(fd);
    if (!dir) {
        close(fd);
        return -errno;
    }
    while ((de = readdir(dir)) != NULL)
        if (fill(buf, de->d_name, NULL, 0, 0))
            break;
    closedir(dir);
    return 0;
}

static int lz_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void) path;
    (void) datasync;
    (void) fi;
    ENTER();
    return 0; /* names are durable as soon as they change */
}

static int lz_statfs(const char *path, struct statvfs *sv)
{
    (void) path;
    ENTER();
    return fstatvfs(backing, sv) < 0 ? -errno : 0;
}

static int lz_access(const char *path, int mask)
{
    ENTER();
    return faccessat(backing, rel(path), mask, AT_EACCESS) < 0 ? -errno : 0;
}

static const struct fuse_operations ops = {
    .getattr = lz_getattr,
    .readlink = lz_readlink,
    .mkdir = lz_mkdir,
    .unlink = lz_unlink,
    .rmdir = lz_rmdir,
    .symlink = lz_symlink,
    .rename = lz_rename,
    .link = lz_link,
    .chmod = lz_chmod,
    .chown = lz_chown,
    .truncate = lz_truncate,
    .open = lz_open,
    .read = lz_read,
    .write = lz_write,
    .statfs = lz_statfs,
    .release = lz_release,
    .fsync = lz_fsync,
    .readdir = lz_readdir,
    .fsyncdir = lz_fsyncdir,
    .access = lz_access,
    .create = lz_create,
    .utimens = lz_utimens,
};

int main(int argc, char **argv)
{
    char *fargv[8];
    int fargc = 0;
    bool foreground = false;

    if (argc < 3) {
        fprintf(stderr, "usage: lazyfs BACKING MOUNTPOINT [-f]\n");
        return 2;
    }
    backing = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (backing < 0) {
        fprintf(stderr, "lazyfs: could not open \"%s\": %s\n", argv[1], strerror(errno));
        return 1;
    }
    for (int i = 3; i < argc; i++)
        foreground |= strcmp(argv[i], "-f") == 0;
    signal(SIGUSR1, on_usr1);
    signal(SIGUSR2, on_usr2);
    umask(0);
    fargv[fargc++] = "lazyfs";
    fargv[fargc++] = argv[2];
    fargv[fargc++] = "-s";
    fargv[fargc++] = "-o";
    /* no writeback cache (libfuse's default): every write comes here when
     * it is made; no attribute caching: sizes are this process's */
    fargv[fargc++] = "allow_other,default_permissions,attr_timeout=0,entry_timeout=0,"
                     "negative_timeout=0,fsname=lazyfs";
    if (foreground)
        fargv[fargc++] = "-f";
    fargv[fargc] = NULL;
    return fuse_main(fargc, fargv, &ops, NULL);
}
