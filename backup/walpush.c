/*
 * walpush.c - `cbfs wal-push REPO PATH`, PostgreSQL's archive_command.
 * Exit 0 only once the file is durably in the repository (DESIGN §5).
 *
 * Parallel push: the archiver hands over one segment per call and waits for
 * each.  When pg_wal/archive_status lists more segments as ready, this call
 * stores up to PARALLEL - 1 of them too, on other threads; the archiver's
 * next calls then find them stored and only compare checksums.  The exit
 * code speaks for PATH alone, and only once it is stored: nothing is ever
 * acknowledged that is not durable.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "cbfs/walarchive.h"
#include "commands.h"

#define PARALLEL 4

typedef struct Push {
    CbfsRepo *repo;
    char *path;
    int rc;
    CbfsError err;
    pthread_t thread;
} Push;

static void *push_thread(void *arg)
{
    Push *p = arg;
    const char *name = strrchr(p->path, '/') ? strrchr(p->path, '/') + 1 : p->path;
    cbfs_error_init(&p->err);
    /* stored already (by an earlier call's threads): the archiver's own call
     * for it compares the content; nothing to do here */
    if (cbfs_wal_exists(p->repo, name, &p->err) == 0)
        return NULL;
    p->rc = cbfs_wal_push_file(p->repo, p->path, &p->err);
    return NULL;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Up to max segments that archive_status beside path marks ready, after
 * name, oldest first.  Paths are returned (caller frees each). */
static size_t ready_after(const char *path, const char *name, char **ret, size_t max)
{
    char *dir = cbfs_xstrdup(path), *status;
    char **names = NULL;
    size_t n = 0, out = 0;
    DIR *d;
    struct dirent *de;

    if (strrchr(dir, '/'))
        *strrchr(dir, '/') = '\0';
    else
        strcpy(dir, ".");
    status = cbfs_xasprintf("%s/archive_status", dir);
    d = opendir(status);
    while (d && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        char seg[CBFS_WAL_NAME_MAX];
        if (len != 24 + 6 || strcmp(de->d_name + 24, ".ready") != 0)
            continue;
        snprintf(seg, sizeof(seg), "%.24s", de->d_name);
        if (cbfs_wal_classify(seg, NULL) != CBFS_WAL_SEGMENT || strcmp(seg, name) <= 0)
            continue;
        names = cbfs_xrealloc(names, (n + 1) * sizeof(char *));
        names[n++] = cbfs_xstrdup(seg);
    }
    if (d)
        closedir(d);
    if (n > 1)
        qsort(names, n, sizeof(char *), cmp_name);
    for (size_t i = 0; i < n; i++) {
        if (out < max)
            ret[out++] = cbfs_xasprintf("%s/%s", dir, names[i]);
        free(names[i]);
    }
    free(names);
    free(status);
    free(dir);
    return out;
}

int cmd_wal_push(int argc, char **argv)
{
    CbfsLocation loc;
    CbfsRepo *repo;
    CbfsError err;
    Push pushes[PARALLEL];
    char *extra[PARALLEL - 1];
    const char *name;
    size_t nextra;
    int rc;

    cbfs_error_init(&err);
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("Usage: cbfs wal-push REPO PATH\n"
               "\n"
               "Store the WAL file at PATH in the repository; for archive_command:\n"
               "  archive_command = 'cbfs wal-push REPO %%p'\n"
               "Exits 0 only once the file is durably stored (or an identical copy was).\n"
               "Segments that archive_status marks ready are stored alongside, in parallel.\n");
        return 0;
    }
    if (argc != 3)
        return cmd_usage_error("wal-push", argc < 3 ? "missing arguments" : "too many arguments");
    if (cbfs_location_parse(argv[1], false, &loc, &err) < 0)
        return cmd_fail(&err);
    rc = cbfs_repo_open(&loc, &repo, &err);
    cbfs_location_release(&loc);
    if (rc < 0)
        return cmd_fail(&err);

    name = strrchr(argv[2], '/') ? strrchr(argv[2], '/') + 1 : argv[2];
    nextra = cbfs_wal_classify(name, NULL) == CBFS_WAL_SEGMENT
                 ? ready_after(argv[2], name, extra, PARALLEL - 1)
                 : 0;
    memset(pushes, 0, sizeof(pushes));
    for (size_t i = 0; i < nextra; i++) {
        pushes[i].repo = repo;
        pushes[i].path = extra[i];
        if (pthread_create(&pushes[i].thread, NULL, push_thread, &pushes[i]) != 0)
            pushes[i].path = NULL, free(extra[i]);
    }
    rc = cbfs_wal_push_file(repo, argv[2], &err);
    /* the others are waited for: a process must not exit under their writes */
    for (size_t i = 0; i < nextra; i++) {
        if (!pushes[i].path)
            continue;
        pthread_join(pushes[i].thread, NULL);
        free(pushes[i].path);
    }
    cbfs_repo_free(repo);
    return rc < 0 ? cmd_fail(&err) : 0;
}
