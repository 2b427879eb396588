/*
 * walpush.c - `cbfs wal-push REPO PATH`, PostgreSQL's archive_command.
 * Exit 0 only once the file is durably in the repository (DESIGN §5).
 *
 * Background queue: the archiver hands over one segment per call and waits
 * for each.  When PATH lies in a pg_wal whose archive_status lists more
 * segments as ready, this call starts a detached pusher (one per pg_wal,
 * flock) that stores those segments ahead of the archiver on several
 * threads, while the call stores PATH itself.  Once a segment is durably
 * stored the pusher leaves a marker in pg_wal/cbfs-push/<segment>.ok naming
 * the repository and the file it read (device, inode, size, mtime).  The
 * archiver's later call for that segment finds a marker that matches its
 * file, checks that the object is still in the repository, and returns 0
 * without reading the segment again.  A segment the pusher is storing right
 * now is locked (<segment>.lock); the archiver's call waits for it rather
 * than storing it twice.  Without a matching marker the call stores the
 * segment itself, so a pusher that failed or died costs time, never safety.
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
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbfs/repo.h"
#include "cbfs/store.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "cbfs/walarchive.h"
#include "commands.h"

#define PUSH_THREADS 4  /* background threads */
#define PUSH_AHEAD   32 /* segments the pusher takes per scan */

/* The push queue of one pg_wal. */
typedef struct Queue {
    char *wal_dir; /* absolute pg_wal */
    char *spool;   /* pg_wal/cbfs-push */
} Queue;

/* The queue of the pg_wal holding path, or false when path is not a segment
 * in a folder with archive_status (then there is nothing to queue). */
static bool queue_open(const char *path, Queue *q)
{
    char *dir = cbfs_xstrdup(path), *real, *status;
    struct stat st;
    bool ok;

    if (strrchr(dir, '/'))
        *strrchr(dir, '/') = '\0';
    else
        strcpy(dir, ".");
    real = realpath(dir, NULL);
    free(dir);
    if (!real)
        return false;
    status = cbfs_xasprintf("%s/archive_status", real);
    ok = stat(status, &st) == 0 && S_ISDIR(st.st_mode);
    free(status);
    if (!ok) {
        free(real);
        return false;
    }
    q->wal_dir = real;
    q->spool = cbfs_xasprintf("%s/cbfs-push", real);
    if (mkdir(q->spool, 0700) < 0 && errno != EEXIST) {
        free(q->spool);
        free(q->wal_dir);
        return false;
    }
    return true;
}

static void queue_close(Queue *q)
{
    free(q->spool);
    free(q->wal_dir);
}

/* What a marker says of the file at path: repository, node and file
 * identity. */
static char *marker_text(const CbfsRepo *repo, const struct stat *st)
{
    return cbfs_xasprintf("repository %s\nnode %s\ndevice %llu\ninode %llu\nsize %lld\nmtime "
                          "%lld.%09ld\n",
                          repo->id, cbfs_repo_node_name(repo), (unsigned long long) st->st_dev,
                          (unsigned long long) st->st_ino, (long long) st->st_size,
                          (long long) st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
}

/* The segment's lock, held (blocking or not); -1 if not taken. */
static int lock_segment(const Queue *q, const char *name, bool wait)
{
    char *path = cbfs_xasprintf("%s/%s.lock", q->spool, name);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(path);
    if (fd < 0)
        return -1;
    if (flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* True if a marker says this very file (st) is stored in repo. */
static bool marker_matches(const Queue *q, const CbfsRepo *repo, const char *name,
                           const struct stat *st)
{
    char *path = cbfs_xasprintf("%s/%s.ok", q->spool, name);
    char *want = marker_text(repo, st);
    char buf[256];
    ssize_t n = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
    }
    free(path);
    bool match = n == (ssize_t) strlen(want) && memcmp(buf, want, (size_t) n) == 0;
    free(want);
    return match;
}

/* Leave the marker: written whole (rename) after the object is durable.  It
 * need not survive a crash; without it the segment is only pushed again. */
static void marker_write(const Queue *q, const CbfsRepo *repo, const char *name,
                         const struct stat *st)
{
    char *path = cbfs_xasprintf("%s/%s.ok", q->spool, name);
    char *tmp = cbfs_xasprintf("%s/%s.ok.tmp", q->spool, name);
    char *text = marker_text(repo, st);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        bool ok = write(fd, text, strlen(text)) == (ssize_t) strlen(text);
        close(fd);
        if (!ok || rename(tmp, path) < 0)
            unlink(tmp);
    }
    free(text);
    free(tmp);
    free(path);
}

static void marker_remove(const Queue *q, const char *name)
{
    char *ok = cbfs_xasprintf("%s/%s.ok", q->spool, name);
    char *lock = cbfs_xasprintf("%s/%s.lock", q->spool, name);
    unlink(ok);
    unlink(lock);
    free(lock);
    free(ok);
}

/* Up to max segments that archive_status marks ready and that have no
 * marker yet, oldest first, after `after`.  Returns the count; *ret is an
 * array of names (caller frees with free_names). */
static size_t unmarked_ready(const Queue *q, const char *after, size_t max, char ***ret)
{
    char *status = cbfs_xasprintf("%s/archive_status", q->wal_dir);
    char **names = NULL;
    size_t n = 0, kept = 0;
    DIR *d = opendir(status);
    struct dirent *de;

    while (d && (de = readdir(d)) != NULL) {
        char seg[CBFS_WAL_NAME_MAX];
        if (strlen(de->d_name) != 24 + 6 || strcmp(de->d_name + 24, ".ready") != 0)
            continue;
        snprintf(seg, sizeof(seg), "%.24s", de->d_name);
        if (cbfs_wal_classify(seg, NULL) != CBFS_WAL_SEGMENT || strcmp(seg, after) <= 0)
            continue;
        names = cbfs_xrealloc(names, (n + 1) * sizeof(char *));
        names[n++] = cbfs_xstrdup(seg);
    }
    if (d)
        closedir(d);
    if (n > 1)
        qsort(names, n, sizeof(char *), cbfs_cmp_strp);
    for (size_t i = 0; i < n; i++) {
        char *ok = cbfs_xasprintf("%s/%s.ok", q->spool, names[i]);
        struct stat st;
        if (kept < max && stat(ok, &st) < 0)
            names[kept++] = names[i];
        else
            free(names[i]);
        free(ok);
    }
    free(status);
    *ret = names;
    return kept;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* ---- the background pusher ------------------------------------------------ */

typedef struct Pusher {
    const Queue *q;
    CbfsRepo *repo;
    char **names;
    size_t count;
    size_t next;   /* atomic */
    size_t stored; /* atomic */
} Pusher;

/* Push one ready segment unless it is locked (being pushed) or marked. */
static void pusher_one(Pusher *p, const char *name)
{
    char *path = cbfs_xasprintf("%s/%s", p->q->wal_dir, name);
    struct stat before, after;
    CbfsError err;
    int fd = lock_segment(p->q, name, false);

    cbfs_error_init(&err);
    if (fd < 0)
        goto out;
    if (stat(path, &before) < 0 || marker_matches(p->q, p->repo, name, &before))
        goto out;
    if (cbfs_wal_push_file(p->repo, path, &err) == 0 && stat(path, &after) == 0 &&
        before.st_ino == after.st_ino && before.st_size == after.st_size &&
        before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
        before.st_mtim.tv_nsec == after.st_mtim.tv_nsec) {
        marker_write(p->q, p->repo, name, &after);
        __atomic_fetch_add(&p->stored, 1, __ATOMIC_RELAXED);
    }
out:
    if (fd >= 0)
        close(fd);
    free(path);
}

static void *pusher_thread(void *arg)
{
    Pusher *p = arg;
    for (;;) {
        size_t i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (i >= p->count)
            return NULL;
        pusher_one(p, p->names[i]);
    }
}

/* Drop markers and locks of segments no longer ready (archived since). */
static void pusher_prune(const Queue *q)
{
    DIR *d = opendir(q->spool);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        char seg[CBFS_WAL_NAME_MAX], *ready;
        struct stat st;
        size_t len = strlen(de->d_name);
        if (len <= 24 || de->d_name[24] != '.' || strcmp(de->d_name, "pusher.lock") == 0)
            continue;
        snprintf(seg, sizeof(seg), "%.24s", de->d_name);
        if (cbfs_wal_classify(seg, NULL) != CBFS_WAL_SEGMENT)
            continue;
        ready = cbfs_xasprintf("%s/archive_status/%s.ready", q->wal_dir, seg);
        if (stat(ready, &st) < 0 && errno == ENOENT) {
            char *path = cbfs_xasprintf("%s/%s", q->spool, de->d_name);
            unlink(path);
            free(path);
        }
        free(ready);
    }
    if (d)
        closedir(d);
}

/* The detached pusher: stores ready segments (other than `skip`, which the
 * archiver's own call is storing) until a scan finds nothing left to do. */
static void pusher_run(const Queue *q, const char *repo_spec, const char *node, const char *skip)
{
    CbfsLocation loc;
    CbfsRepo *repo = NULL;
    CbfsError err;
    char *lock = cbfs_xasprintf("%s/pusher.lock", q->spool);
    int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

    free(lock);
    if (lfd < 0 || flock(lfd, LOCK_EX | LOCK_NB) < 0)
        return; /* another pusher is at work: it scans again before it ends */
    cbfs_error_init(&err);
    /* a repository of our own: nothing is shared with the parent's */
    if (cbfs_location_parse(repo_spec, false, &loc, &err) < 0)
        return;
    if (cbfs_repo_open(&loc, &repo, &err) < 0 || cbfs_repo_set_node(repo, node, &err) < 0) {
        cbfs_repo_free(repo);
        cbfs_location_release(&loc);
        return;
    }
    for (int round = 0; round < 1000; round++) {
        Pusher p;
        pthread_t th[PUSH_THREADS];
        int n = 0;
        char **names;
        size_t todo = unmarked_ready(q, skip, PUSH_AHEAD, &names);

        memset(&p, 0, sizeof(p));
        p.q = q;
        p.repo = repo;
        p.names = names;
        p.count = todo;
        for (int i = 0; i < PUSH_THREADS && (size_t) i < todo; i++)
            if (pthread_create(&th[n], NULL, pusher_thread, &p) == 0)
                n++;
        for (int i = 0; i < n; i++)
            pthread_join(th[i], NULL);
        free_names(names, todo);
        pusher_prune(q);
        if (todo == 0 || p.stored == 0)
            break; /* all done, or nothing could be stored: the archiver's calls take over */
    }
    cbfs_repo_free(repo);
    cbfs_location_release(&loc);
}

/* Start the pusher, detached, if segments after name are ready. */
static void pusher_start(const Queue *q, const char *repo_spec, const char *node, const char *name)
{
    char **names;
    size_t unmarked = unmarked_ready(q, name, 1, &names);

    free_names(names, unmarked);
    if (unmarked == 0)
        return;
    if (!cmd_detach())
        return; /* the archiver's call goes on while the pusher works */
    pusher_run(q, repo_spec, node, name);
    _exit(0);
}

/* ---- the archiver's call -------------------------------------------------- */

int cmd_wal_push(int argc, char **argv)
{
    static const struct option opts[] = {
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"node", required_argument, NULL, CMD_OPT_NODE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    CbfsLocation loc;
    CbfsRepo *repo;
    CbfsError err;
    Queue q;
    bool queued;
    const char *path, *name, *spec, *node = NULL;
    int c, rc, lfd = -1;

    cbfs_error_init(&err);
    /* the archiver waits on us: a store that does not answer is given a
     * minute (s3_timeout sets another), then PostgreSQL tries again */
    cbfs_store_s3_timeout(60, false);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case CMD_OPT_NODE:
            node = optarg;
            break;
        case 'h':
            printf("Usage: cbfs wal-push [--passphrase-file FILE] [--node NAME] REPO PATH\n"
                   "\n"
                   "Store the WAL file at PATH in the repository; for archive_command:\n"
                   "  archive_command = 'cbfs wal-push REPO %%p'\n"
                   "Exits 0 only once the file is durably stored (or an identical copy was).\n"
                   "Segments that archive_status marks ready are stored ahead by a background\n"
                   "pusher, which leaves its markers in cbfs-push/ beside PATH.\n"
                   "\n"
                   "With --node NAME the file is stored as that node's, in a repository that\n"
                   "holds several (a Citus coordinator or worker): the node's first file or\n"
                   "backup makes it, and a server of another system identifier is refused.\n"
                   "\n"
                   "An encrypted repository's passphrase comes from --passphrase-file FILE\n"
                   "(mode 0600), CBFS_PASSPHRASE or CBFS_PASSPHRASE_FILE.\n");
            return 0;
        default:
            return cmd_usage_error("wal-push", NULL);
        }
    }
    if (argc - optind != 2)
        return cmd_usage_error("wal-push",
                               argc - optind < 2 ? "missing arguments" : "too many arguments");
    spec = argv[optind];
    path = argv[optind + 1];
    if (cbfs_location_parse(spec, false, &loc, &err) < 0)
        return cmd_fail(&err);
    rc = cbfs_repo_open(&loc, &repo, &err);
    cbfs_location_release(&loc);
    if (rc == 0 && (rc = cbfs_repo_set_node(repo, node, &err)) < 0)
        cbfs_repo_free(repo);
    if (rc < 0)
        return cmd_fail(&err);

    name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    queued = cbfs_wal_classify(name, NULL) == CBFS_WAL_SEGMENT && queue_open(path, &q);
    if (queued) {
        struct stat st;
        pusher_start(&q, spec, node, name);
        lfd = lock_segment(&q, name, true); /* the pusher may be storing it now */
        if (stat(path, &st) == 0 && marker_matches(&q, repo, name, &st) &&
            cbfs_wal_exists(repo, name, &err) == 0) {
            rc = 0; /* stored ahead by the pusher */
            goto done;
        }
    }
    rc = cbfs_wal_push_file(repo, path, &err);
done:
    if (queued) {
        if (rc == 0)
            marker_remove(&q, name);
        if (lfd >= 0)
            close(lfd);
        queue_close(&q);
    }
    cbfs_repo_free(repo);
    return rc < 0 ? cmd_fail(&err) : 0;
}
