/*
 * walfetch.c - `cbfs wal-fetch REPO NAME DEST`, PostgreSQL's restore_command.
 * A file the repository does not have is a quiet exit 1 (PostgreSQL probes
 * for files that do not exist); a damaged one is a loud exit 5.
 *
 * Prefetch: recovery asks for one segment at a time, and replay waits for
 * each fetch.  After serving segment N, a detached child fetches N+1 ..
 * N+PREFETCH into a spool folder beside DEST (pg_wal/cbfs-prefetch), on
 * several threads, each verified and written atomically like any fetch; the
 * next call moves its segment from there.  One prefetcher runs at a time
 * (flock); while it fetches a segment it holds <segment>.lock, and a call
 * for that segment waits for it instead of fetching it twice.  A spooled file is as good as a fresh
 * fetch: repository objects are immutable and verified before they are written.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
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

#define PREFETCH         8
#define PREFETCH_THREADS 4

typedef struct Prefetch {
    CbfsRepo *repo;
    const char *spool;
    char names[PREFETCH][CBFS_WAL_NAME_MAX];
    int next;    /* atomic: next index to fetch */
    int stop_at; /* atomic: first index known missing */
} Prefetch;

static void *prefetch_thread(void *arg)
{
    Prefetch *p = arg;
    for (;;) {
        int i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        char *path, *lock;
        int lfd;
        CbfsError err;
        struct stat st;
        if (i >= PREFETCH || i >= __atomic_load_n(&p->stop_at, __ATOMIC_RELAXED))
            break;
        path = cbfs_xasprintf("%s/%s", p->spool, p->names[i]);
        lock = cbfs_xasprintf("%s/%s.lock", p->spool, p->names[i]);
        cbfs_error_init(&err);
        /* held while fetching: a call for this segment waits for it */
        lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (lfd >= 0)
            flock(lfd, LOCK_EX);
        if (stat(path, &st) != 0 && cbfs_wal_fetch(p->repo, p->names[i], path, &err) == -ENOENT) {
            /* the archive ends here (for now): no use fetching beyond */
            int cur = __atomic_load_n(&p->stop_at, __ATOMIC_RELAXED);
            while (i < cur && !__atomic_compare_exchange_n(&p->stop_at, &cur, i, false,
                                                           __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                ;
        }
        if (lfd >= 0) {
            unlink(lock);
            close(lfd);
        }
        free(lock);
        free(path);
    }
    return NULL;
}

/* Drop spooled segments of timeline tli older than segno (already used). */
static void prune_spool(const char *spool, uint32_t tli, uint64_t segno, uint32_t seg_size)
{
    DIR *d = opendir(spool);
    struct dirent *de;
    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        uint32_t t;
        uint64_t s;
        if (cbfs_wal_parse_segname(de->d_name, seg_size, &t, &s) == 0 && t == tli && s < segno) {
            char *path = cbfs_xasprintf("%s/%s", spool, de->d_name);
            unlink(path);
            free(path);
        }
    }
    closedir(d);
}

/* After serving name, fetch the next segments in a detached child. */
static void start_prefetch(const char *repo_spec, const char *node, const char *name,
                           const char *spool, uint32_t seg_size)
{
    uint32_t tli;
    uint64_t segno;

    if (cbfs_wal_parse_segname(name, seg_size, &tli, &segno) < 0)
        return;
    prune_spool(spool, tli, segno + 1, seg_size);
    if (!cmd_detach())
        return; /* PostgreSQL's restore_command returns now */
    {
        char *lock = cbfs_xasprintf("%s/.lock", spool);
        int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        Prefetch p;
        pthread_t th[PREFETCH_THREADS];
        int n = 0;
        CbfsLocation loc;
        CbfsRepo *repo;
        CbfsError err;
        free(lock);
        if (lfd < 0 || flock(lfd, LOCK_EX | LOCK_NB) < 0)
            _exit(0); /* another prefetcher is at work */
        /* a repository of our own: nothing is shared with the parent's */
        cbfs_error_init(&err);
        if (cbfs_location_parse(repo_spec, false, &loc, &err) < 0 ||
            cbfs_repo_open(&loc, &repo, &err) < 0 || cbfs_repo_set_node(repo, node, &err) < 0)
            _exit(0);
        memset(&p, 0, sizeof(p));
        p.repo = repo;
        p.spool = spool;
        p.stop_at = PREFETCH;
        for (int i = 0; i < PREFETCH; i++)
            cbfs_wal_segname(tli, segno + 1 + (uint64_t) i, seg_size, p.names[i],
                             sizeof(p.names[i]));
        for (int i = 0; i < PREFETCH_THREADS; i++)
            if (pthread_create(&th[n], NULL, prefetch_thread, &p) == 0)
                n++;
        for (int i = 0; i < n; i++)
            pthread_join(th[i], NULL);
        _exit(0);
    }
}

/* Move segment name from the spool to dest, waiting for a prefetcher that
 * is fetching it right now rather than fetching it a second time. */
static bool take_spooled(const char *spool, const char *name, const char *dest)
{
    char *path = cbfs_xasprintf("%s/%s", spool, name);
    char *lock = cbfs_xasprintf("%s/%s.lock", spool, name);
    bool ok = rename(path, dest) == 0;
    if (!ok) {
        int lfd = open(lock, O_RDWR | O_CLOEXEC);
        if (lfd >= 0) {
            flock(lfd, LOCK_EX);
            close(lfd);
        }
        ok = rename(path, dest) == 0;
    }
    free(lock);
    free(path);
    return ok;
}

/* Recovery is over: wait for a prefetcher still at work, then drop the
 * segments it fetched that recovery did not use, and the spool. */
static int end_prefetch(const char *spool)
{
    char *lock = cbfs_xasprintf("%s/.lock", spool);
    int lfd = open(lock, O_RDWR | O_CLOEXEC);
    DIR *d;
    struct dirent *de;

    if (lfd >= 0)
        flock(lfd, LOCK_EX);
    d = opendir(spool);
    while (d && (de = readdir(d)) != NULL) {
        char *path;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            strcmp(de->d_name, ".lock") == 0)
            continue;
        path = cbfs_xasprintf("%s/%s", spool, de->d_name);
        unlink(path);
        free(path);
    }
    if (d)
        closedir(d);
    unlink(lock);
    rmdir(spool);
    if (lfd >= 0)
        close(lfd);
    free(lock);
    return 0;
}

/* The segment size, from the header of a fetched segment. */
static uint32_t segment_size(const char *path)
{
    uint8_t buf[64];
    size_t n = 0;
    uint64_t sysid;
    uint32_t size = 0, tli;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    cbfs_pread_full(fd, buf, sizeof(buf), 0, &n);
    close(fd);
    if (cbfs_wal_segment_header(buf, n, &sysid, &size, &tli) < 0)
        return 0;
    return size;
}

/*
 * A failure that is not "no such file" (a store that does not answer, a
 * corrupt object).  PostgreSQL takes any plain non-zero exit of
 * restore_command for the end of the archive: in archive recovery it would
 * end recovery there and promote, short of what the archive holds.  So
 * when it runs us in archive recovery (recovery.signal in the data
 * directory, its working directory, and no standby.signal) the exit code
 * is one it treats as fatal instead: recovery stops, and starts again when
 * the store answers.  A standby, which goes on streaming and asks again,
 * gets the plain code.
 */
static int fetch_failed(const CbfsError *err)
{
    int code = cmd_fail(err);
    if (access("recovery.signal", F_OK) == 0 && access("standby.signal", F_OK) != 0)
        return CBFS_EXIT_STOP_RECOVERY;
    return code;
}

int cmd_wal_fetch(int argc, char **argv)
{
    static const struct option opts[] = {
        {"end", no_argument, NULL, 'E'},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"node", required_argument, NULL, CMD_OPT_NODE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    CbfsLocation loc;
    CbfsRepo *repo;
    CbfsError err;
    char *spool, *dir;
    const char *name, *dest, *spec, *node = NULL;
    bool end = false;
    int c, rc;

    cbfs_error_init(&err);
    /* PostgreSQL waits on restore_command: a store that does not answer
     * is given a minute (s3_timeout sets another) */
    cbfs_store_s3_timeout(60, false);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'E':
            end = true;
            break;
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case CMD_OPT_NODE:
            node = optarg;
            break;
        case 'h':
            printf("Usage: cbfs wal-fetch [--passphrase-file FILE] [--node NAME] REPO NAME DEST\n"
                   "       cbfs wal-fetch --end\n"
                   "\n"
                   "Restore WAL file NAME from the repository into DEST; for restore_command:\n"
                   "  restore_command = 'cbfs wal-fetch REPO %%f %%p'\n"
                   "Exits 1 without a message when the repository does not have NAME.\n"
                   "Other failures (the store does not answer within s3_timeout, 60 s by\n"
                   "default; a corrupt object) exit 200 when run in archive recovery (the\n"
                   "current directory holds recovery.signal, not standby.signal), so that\n"
                   "PostgreSQL stops recovery instead of ending it early.\n"
                   "Prefetches the next segments into cbfs-prefetch/ beside DEST.\n"
                   "--node NAME fetches that node's WAL (a repository holding several).\n"
                   "An encrypted repository's passphrase comes from --passphrase-file FILE\n"
                   "(mode 0600), CBFS_PASSPHRASE or CBFS_PASSPHRASE_FILE.\n"
                   "\n"
                   "--end removes pg_wal/cbfs-prefetch under the current directory (the data\n"
                   "directory, where PostgreSQL runs it); for recovery_end_command:\n"
                   "  recovery_end_command = 'cbfs wal-fetch --end'\n");
            return 0;
        default:
            return cmd_usage_error("wal-fetch", NULL);
        }
    }
    if (end) {
        if (optind != argc)
            return cmd_usage_error("wal-fetch", "too many arguments");
        return end_prefetch("pg_wal/cbfs-prefetch");
    }
    if (argc - optind != 3)
        return cmd_usage_error("wal-fetch",
                               argc - optind < 3 ? "missing arguments" : "too many arguments");
    spec = argv[optind];
    name = argv[optind + 1];
    dest = argv[optind + 2];
    if (cbfs_location_parse(spec, false, &loc, &err) < 0)
        return cmd_fail(&err);
    rc = cbfs_repo_open(&loc, &repo, &err);
    cbfs_location_release(&loc);
    if (rc == 0 && (rc = cbfs_repo_set_node(repo, node, &err)) < 0)
        cbfs_repo_free(repo);
    if (rc < 0)
        return fetch_failed(&err);

    dir = cbfs_xstrdup(dest);
    if (strrchr(dir, '/'))
        *strrchr(dir, '/') = '\0';
    else
        strcpy(dir, ".");
    spool = cbfs_xasprintf("%s/cbfs-prefetch", dir);
    free(dir);
    if (cbfs_wal_classify(name, NULL) == CBFS_WAL_SEGMENT && take_spooled(spool, name, dest)) {
        rc = 0; /* prefetched */
    } else {
        rc = cbfs_wal_fetch(repo, name, dest, &err);
    }
    if (rc == 0 && cbfs_wal_classify(name, NULL) == CBFS_WAL_SEGMENT &&
        (mkdir(spool, 0700) == 0 || errno == EEXIST)) {
        uint32_t seg_size = segment_size(dest);
        if (seg_size)
            start_prefetch(spec, node, name, spool, seg_size);
    }
    free(spool);
    cbfs_repo_free(repo);
    if (rc == -ENOENT)
        return CBFS_EXIT_ERROR;
    return rc < 0 ? fetch_failed(&err) : 0;
}
