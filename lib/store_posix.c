/*
 * store_posix.c - object store on a local (or NFS-mounted) directory.
 *
 * Object KEY lives at ROOT/KEY.  put() writes ROOT/dir/.tmp.<name>.<pid>.<rand>,
 * fsyncs it, then moves it into place without replacing anything
 * (renameat2 RENAME_NOREPLACE, or link()+unlink() where the filesystem lacks
 * it) and fsyncs the directory: an object is either absent or complete and
 * durable, and an existing one is never replaced (replace(), for the config
 * object alone, uses rename(2) instead).  Leftover temp files of a killed
 * writer start with '.' and are never listed.
 *
 * When run as root in a repository owned by someone else (backups read the
 * data directory as root, wal-push runs as postgres), new files and folders
 * are given to the repository root's owner so both can go on writing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbfs/store.h"
#include "cbfs/util.h"

#define DIR_MODE  0750
#define FILE_MODE 0640

typedef struct PosixStore {
    CbfsStore base;
    char *root;
    bool chown_new; /* give new entries to owner/group below */
    uid_t owner;
    gid_t group;
} PosixStore;

static char *key_path(PosixStore *ps, const char *key)
{
    return cbfs_xasprintf("%s/%s", ps->root, key);
}

static int posix_get_range(CbfsStore *st, const char *key, uint64_t off, size_t len, void *buf,
                           size_t *ret_n, CbfsError *err)
{
    PosixStore *ps = (PosixStore *) st;
    char *path;
    int fd, rc;

    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    path = key_path(ps, key);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT
                 ? -ENOENT
                 : cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not open object \"%s\": %s",
                                  path, strerror(errno));
        free(path);
        return rc;
    }
    {
        struct stat sb;
        if (fstat(fd, &sb) == 0 && !S_ISREG(sb.st_mode)) { /* a folder is not an object */
            close(fd);
            free(path);
            return -ENOENT;
        }
    }
    rc = cbfs_pread_full(fd, buf, len, (off_t) off, ret_n);
    if (rc < 0)
        cbfs_error_set(err, -rc, CBFS_EXIT_ERROR, "could not read object \"%s\": %s", path,
                       strerror(-rc));
    close(fd);
    free(path);
    return rc;
}

static int posix_get(CbfsStore *st, const char *key, uint8_t **ret_buf, size_t *ret_len,
                     CbfsError *err)
{
    PosixStore *ps = (PosixStore *) st;
    char *path;
    int rc;
    struct stat sb;

    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    path = key_path(ps, key);
    if (stat(path, &sb) == 0 ? !S_ISREG(sb.st_mode) : errno == ENOENT) {
        free(path); /* absent, or a folder: not an object */
        return -ENOENT;
    }
    rc = cbfs_read_file(path, ret_buf, ret_len, err);
    if (rc == -ENOENT)
        cbfs_error_init(err);
    free(path);
    return rc;
}

static void give_away(PosixStore *ps, int fd, const char *path)
{
    if (!ps->chown_new)
        return;
    if (fd >= 0)
        (void) !fchown(fd, ps->owner, ps->group);
    else
        (void) !lchown(path, ps->owner, ps->group);
}

/* mkdir -p for the parent folders of key, giving each new folder away. */
static int make_parents(PosixStore *ps, const char *key, CbfsError *err)
{
    char *path = key_path(ps, key);
    size_t rootlen = strlen(ps->root);
    int rc = 0;

    for (char *s = path + rootlen + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(path, DIR_MODE) == 0) {
            /* the new folder's entry must be durable before anything in it is */
            char *parent = cbfs_xstrdup(path);
            *strrchr(parent, '/') = '\0';
            give_away(ps, -1, path);
            rc = cbfs_fsync_dir(parent, err);
            free(parent);
            if (rc < 0)
                break;
        } else if (errno != EEXIST) {
            rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR,
                                "could not create directory \"%s\": %s", path, strerror(errno));
            break;
        }
        *s = '/';
    }
    free(path);
    return rc;
}

/* Write data to a temp file beside key's path, fsync it, move it into place
 * (without replacing anything unless replace) and fsync the folder. */
static int store_file(PosixStore *ps, const char *key, const void *data, size_t len, bool replace,
                      CbfsError *err)
{
    CbfsStore *st = &ps->base;
    char *path, *tmp, *dir, *slash;
    uint8_t rnd[8];
    char rndhex[17];
    int fd, rc;

    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    rc = make_parents(ps, key, err);
    if (rc < 0)
        return rc;
    path = key_path(ps, key);
    dir = cbfs_xstrdup(path);
    slash = strrchr(dir, '/');
    *slash = '\0';
    cbfs_random_bytes(rnd, sizeof(rnd));
    cbfs_hex_encode(rnd, sizeof(rnd), rndhex);
    tmp = cbfs_xasprintf("%s/.tmp.%s.%d.%s", dir, slash + 1, (int) getpid(), rndhex);

    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, FILE_MODE);
    if (fd < 0) {
        rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not create object \"%s\": %s", path,
                            strerror(errno));
        goto out;
    }
    give_away(ps, fd, tmp);
    rc = cbfs_write_full(fd, data, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0) {
        cbfs_error_set(err, -rc, CBFS_EXIT_ERROR, "could not write object \"%s\": %s", path,
                       strerror(-rc));
        unlink(tmp);
        goto out;
    }
    if (replace) {
        /* rename(2) replaces atomically: readers see the old file or the new */
        if (rename(tmp, path) < 0) {
            rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not store object \"%s\": %s",
                                path, strerror(errno));
            unlink(tmp);
            goto out;
        }
    } else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) < 0) {
        if (errno == EEXIST) {
            unlink(tmp);
            rc = -EEXIST;
            goto out;
        }
        if (errno != EINVAL && errno != ENOSYS) {
            rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not store object \"%s\": %s",
                                path, strerror(errno));
            unlink(tmp);
            goto out;
        }
        /* no RENAME_NOREPLACE here: link() fails with EEXIST just the same */
        if (link(tmp, path) < 0) {
            int e = errno;
            unlink(tmp);
            rc = e == EEXIST
                     ? -EEXIST
                     : cbfs_error_set(err, e, CBFS_EXIT_ERROR, "could not store object \"%s\": %s",
                                      path, strerror(e));
            goto out;
        }
        unlink(tmp);
    }
    rc = cbfs_fsync_dir(dir, err);
out:
    free(path);
    free(tmp);
    free(dir);
    return rc;
}

static int posix_put(CbfsStore *st, const char *key, const void *data, size_t len, CbfsError *err)
{
    return store_file((PosixStore *) st, key, data, len, false, err);
}

static int posix_replace(CbfsStore *st, const char *key, const void *data, size_t len,
                         CbfsError *err)
{
    return store_file((PosixStore *) st, key, data, len, true, err);
}

static int posix_stat(CbfsStore *st, const char *key, uint64_t *ret_size, CbfsError *err)
{
    PosixStore *ps = (PosixStore *) st;
    struct stat sb;
    char *path;
    int rc = 0;

    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    path = key_path(ps, key);
    if (stat(path, &sb) < 0)
        rc = errno == ENOENT
                 ? -ENOENT
                 : cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not stat object \"%s\": %s",
                                  path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        rc = -ENOENT;
    else if (ret_size)
        *ret_size = (uint64_t) sb.st_size;
    free(path);
    return rc;
}

/* Walk dir (relative "rel", "" for the root) recursively, reporting regular
 * files whose key starts with filter. */
static int walk(PosixStore *ps, const char *rel, const char *filter, cbfs_store_list_cb cb,
                void *ctx, CbfsError *err)
{
    char *path = rel[0] ? key_path(ps, rel) : cbfs_xstrdup(ps->root);
    DIR *d = opendir(path);
    struct dirent *de;
    int rc = 0;

    if (!d) {
        rc = errno == ENOENT
                 ? 0
                 : cbfs_error_set(err, errno, CBFS_EXIT_ERROR,
                                  "could not open directory \"%s\": %s", path, strerror(errno));
        free(path);
        return rc;
    }
    while (rc == 0 && (errno = 0, de = readdir(d)) != NULL) {
        char *key;
        struct stat sb;
        if (de->d_name[0] == '.')
            continue;
        key = rel[0] ? cbfs_xasprintf("%s/%s", rel, de->d_name) : cbfs_xstrdup(de->d_name);
        if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
            if (S_ISDIR(sb.st_mode)) {
                size_t kl = strlen(key), fl = strlen(filter);
                /* descend only where keys below could match the filter */
                if (strncmp(key, filter, kl < fl ? kl : fl) == 0)
                    rc = walk(ps, key, filter, cb, ctx, err);
            } else if (S_ISREG(sb.st_mode) && strncmp(key, filter, strlen(filter)) == 0) {
                rc = cb(key, (uint64_t) sb.st_size, ctx);
            }
        }
        free(key);
    }
    if (rc == 0 && errno != 0)
        rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not read directory \"%s\": %s",
                            path, strerror(errno));
    closedir(d);
    free(path);
    return rc;
}

static int posix_list(CbfsStore *st, const char *prefix, cbfs_store_list_cb cb, void *ctx,
                      CbfsError *err)
{
    PosixStore *ps = (PosixStore *) st;
    char *start = cbfs_xstrdup(prefix);
    char *slash = strrchr(start, '/');
    int rc;

    /* start the walk at the deepest folder the prefix names */
    if (slash)
        *slash = '\0';
    else
        start[0] = '\0';
    rc = walk(ps, start, prefix, cb, ctx, err);
    free(start);
    return rc;
}

static int posix_remove(CbfsStore *st, const char *key, CbfsError *err)
{
    PosixStore *ps = (PosixStore *) st;
    char *path;
    int rc = 0;

    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    path = key_path(ps, key);
    if (unlink(path) < 0)
        rc = errno == ENOENT || errno == EISDIR
                 ? -ENOENT
                 : cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not remove object \"%s\": %s",
                                  path, strerror(errno));
    free(path);
    return rc;
}

static void posix_free(CbfsStore *st)
{
    PosixStore *ps = (PosixStore *) st;
    free(ps->root);
    free(st->display);
    free(ps);
}

static const CbfsStoreOps posix_ops = {
    .name = "posix",
    .get_range = posix_get_range,
    .get = posix_get,
    .put = posix_put,
    .stat = posix_stat,
    .list = posix_list,
    .remove = posix_remove,
    .replace = posix_replace,
    .free = posix_free,
};

int cbfs_store_posix_new(const char *root, const char *display, bool create, CbfsStore **ret,
                         CbfsError *err)
{
    struct stat sb;
    PosixStore *ps;

    if (create) {
        int rc = cbfs_mkdir_p(root, DIR_MODE, err);
        if (rc < 0)
            return rc;
    }
    if (stat(root, &sb) < 0)
        return cbfs_error_set(err, errno, CBFS_EXIT_REPO, "could not open repository \"%s\": %s",
                              display, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return cbfs_error_set(err, ENOTDIR, CBFS_EXIT_REPO, "could not open repository \"%s\": %s",
                              display, strerror(ENOTDIR));
    ps = cbfs_xcalloc(1, sizeof(*ps));
    ps->base.ops = &posix_ops;
    ps->base.display = cbfs_xstrdup(display);
    ps->root = cbfs_xstrdup(root);
    ps->owner = sb.st_uid;
    ps->group = sb.st_gid;
    ps->chown_new = geteuid() == 0 && sb.st_uid != 0;
    *ret = &ps->base;
    return 0;
}
