/*
 * materialize.c - a fully hydrated mount becomes an ordinary data
 * directory: its overlay's files are moved (renamed, never copied) into
 * the target, on the overlay's file system.  See hydrate.h.
 *
 * All or nothing: the tree is checked first (every file whole, no
 * tablespace); then folders are made and files moved one by one, each
 * step recorded, and a failure undoes the steps in reverse, leaving the
 * overlay as it was and the target empty.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbfs/util.h"
#include "hydrate.h"

typedef struct Node {
    char *path;
    uint64_t ino;
    int type;
} Node;

typedef struct Step {
    enum { MADE_DIR, MOVED, MADE_FILE } kind;
    char *from, *to;
} Step;

typedef struct Link { /* the first name placed of a file with several */
    uint64_t ino;
    char *path;
} Link;

typedef struct Tree {
    Fs *fs;
    Node *v;
    size_t n, cap;
    Step *steps;
    size_t nsteps;
    Link *links;
    size_t nlinks;
} Tree;

static int collect(const char *path, uint64_t ino, int type, void *ctx)
{
    Tree *t = ctx;
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 1024;
        t->v = cbfs_xrealloc(t->v, t->cap * sizeof(Node));
    }
    t->v[t->n++] = (Node){cbfs_xstrdup(path), ino, type};
    return 0;
}

static void step(Tree *t, int kind, const char *from, const char *to)
{
    t->steps = cbfs_xrealloc(t->steps, (t->nsteps + 1) * sizeof(Step));
    t->steps[t->nsteps++] = (Step){kind, from ? cbfs_xstrdup(from) : NULL, cbfs_xstrdup(to)};
}

static void undo(Tree *t)
{
    while (t->nsteps > 0) {
        Step *s = &t->steps[--t->nsteps];
        if (s->kind == MADE_DIR)
            rmdir(s->to);
        else if (s->kind == MOVED)
            rename(s->to, s->from);
        else
            unlink(s->to);
        free(s->from);
        free(s->to);
    }
}

static void set_attrs(const char *path, const FsEntry *e, uid_t uid, gid_t gid, bool link)
{
    struct timespec ts[2];
    ts[0].tv_sec = ts[1].tv_sec = e->mtime_ns / 1000000000;
    ts[0].tv_nsec = ts[1].tv_nsec = e->mtime_ns % 1000000000;
    if (!link)
        chmod(path, e->mode & 07777);
    (void) !lchown(path, uid, gid);
    utimensat(AT_FDCWD, path, ts, link ? AT_SYMLINK_NOFOLLOW : 0);
}

/* Move or make one entry; 0 or -errno (err set). */
static int place(Tree *t, const Node *nd, const char *dst, uid_t uid, gid_t gid, CbfsError *err)
{
    FsEntry e;
    const char *first = NULL;
    int rc = fs_entry(t->fs, nd->ino, &e);
    if (rc < 0)
        return cbfs_error_set(err, -rc, CBFS_EXIT_ERROR, "could not read \"%s\": %s", nd->path,
                              strerror(-rc));
    for (size_t k = 0; nd->type == CBFS_FILE_REG && e.nlink > 1 && k < t->nlinks; k++)
        if (t->links[k].ino == nd->ino)
            first = t->links[k].path;
    if (nd->type == CBFS_FILE_DIR) {
        if (mkdir(dst, 0700) < 0)
            rc = -errno;
        else
            step(t, MADE_DIR, NULL, dst);
    } else if (nd->type == CBFS_FILE_SYMLINK && e.pg_wal) {
        char *from = cbfs_xasprintf("%s/pg_wal", fs_overlay_dir(t->fs));
        if (rename(from, dst) < 0)
            rc = -errno;
        else
            step(t, MOVED, from, dst);
        free(from);
    } else if (nd->type == CBFS_FILE_SYMLINK) {
        if (symlink(e.target ? e.target : "", dst) < 0)
            rc = -errno;
        else
            step(t, MADE_FILE, NULL, dst);
    } else if (first) {
        /* another name of a file already moved */
        if (link(first, dst) < 0)
            rc = -errno;
        else
            step(t, MADE_FILE, NULL, dst);
    } else if (access(e.data, F_OK) == 0) {
        if (rename(e.data, dst) < 0)
            rc = -errno;
        else
            step(t, MOVED, e.data, dst);
    } else {
        int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            rc = -errno;
        else {
            close(fd);
            step(t, MADE_FILE, NULL, dst);
        }
    }
    /* the size PostgreSQL saw: a data file may end in a hole */
    if (rc == 0 && nd->type == CBFS_FILE_REG && truncate(dst, (off_t) e.size) < 0)
        rc = -errno;
    if (rc == 0) {
        set_attrs(dst, &e, uid, gid, nd->type == CBFS_FILE_SYMLINK);
        if (nd->type == CBFS_FILE_REG && e.nlink > 1 && !first) {
            t->links = cbfs_xrealloc(t->links, (t->nlinks + 1) * sizeof(Link));
            t->links[t->nlinks++] = (Link){nd->ino, cbfs_xstrdup(dst)};
        }
    } else {
        cbfs_error_set(err, -rc, CBFS_EXIT_ERROR, "could not move \"%s\" into \"%s\": %s", nd->path,
                       dst, strerror(-rc));
    }
    fs_entry_release(&e);
    return rc;
}

int fs_materialize(Fs *fs, const char *target, uid_t uid, gid_t gid, uint64_t *ret_files,
                   CbfsError *err)
{
    Tree t = {.fs = fs};
    uint64_t base = 0, upper = 0, files = 0;
    bool made_target = false;
    int rc;

    if (fs_has_tablespaces(fs))
        return cbfs_error_set(err, ENOTSUP, CBFS_EXIT_USAGE,
                              "could not materialize into \"%s\": the backup has tablespaces",
                              target);
    rc = fs_walk(fs, collect, &t);
    for (size_t i = 0; rc == 0 && i < t.n; i++) {
        FsEntry e;
        if (t.v[i].type != CBFS_FILE_REG || fs_entry(fs, t.v[i].ino, &e) < 0)
            continue;
        base += e.base_bytes;
        upper += e.upper_bytes < e.base_bytes ? e.upper_bytes : e.base_bytes;
        fs_entry_release(&e);
    }
    if (rc == 0 && upper < base)
        rc = cbfs_error_set(err, EAGAIN, CBFS_EXIT_USAGE,
                            "could not materialize into \"%s\": hydration is not complete (%llu "
                            "of %llu bytes of the backup are in the overlay)",
                            target, (unsigned long long) upper, (unsigned long long) base);
    else if (rc < 0)
        rc = cbfs_error_set(err, -rc, CBFS_EXIT_ERROR, "could not list the mount: %s",
                            strerror(-rc));
    if (rc == 0) {
        if (mkdir(target, 0700) == 0)
            made_target = true;
        else if (errno != EEXIST)
            rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not create \"%s\": %s", target,
                                strerror(errno));
    }
    for (size_t i = 0; rc == 0 && i < t.n; i++) {
        char *dst = cbfs_xasprintf("%s/%s", target, t.v[i].path);
        rc = place(&t, &t.v[i], dst, uid, gid, err);
        files += rc == 0 && t.v[i].type == CBFS_FILE_REG;
        free(dst);
    }
    if (rc < 0) {
        undo(&t);
        if (made_target)
            rmdir(target);
    } else {
        chmod(target, 0700);
        (void) !chown(target, uid, gid);
        for (size_t i = 0; i < t.nsteps; i++) {
            free(t.steps[i].from);
            free(t.steps[i].to);
        }
        *ret_files = files;
    }
    for (size_t i = 0; i < t.n; i++)
        free(t.v[i].path);
    for (size_t i = 0; i < t.nlinks; i++)
        free(t.links[i].path);
    free(t.links);
    free(t.v);
    free(t.steps);
    return rc;
}
