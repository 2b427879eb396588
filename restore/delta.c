/*
 * delta.c - the checks and the pruning of `cbfs restore --delta` (see
 * delta.h).
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbfs/util.h"
#include "delta.h"

int delta_check_target(const char *dir, uint64_t sysid, CbfsError *err)
{
    char *path = cbfs_xasprintf("%s/global/pg_control", dir), *pid_path;
    uint8_t *data = NULL, *pid_text = NULL;
    size_t len = 0, pid_len = 0;
    uint64_t local;
    int rc = 0;

    if (cbfs_read_file(path, &data, &len, NULL) < 0 || len < sizeof(local)) {
        free(data);
        free(path);
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_TARGET,
                              "could not restore into \"%s\" with --delta: not a PostgreSQL data "
                              "directory",
                              dir);
    }
    memcpy(&local, data, sizeof(local)); /* the first field, host order */
    free(data);
    free(path);
    if (local != sysid)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_TARGET,
                              "could not restore into \"%s\" with --delta: it is database system "
                              "%llu, not %llu",
                              dir, (unsigned long long) local, (unsigned long long) sysid);
    /* a live postmaster.pid: the pid exists and is a postgres process */
    pid_path = cbfs_xasprintf("%s/postmaster.pid", dir);
    if (cbfs_read_file(pid_path, &pid_text, &pid_len, NULL) == 0) {
        long pid = strtol((const char *) pid_text, NULL, 10);
        if (pid > 0 && (kill((pid_t) pid, 0) == 0 || errno == EPERM)) {
            /* a live pid: refused unless it is plainly not a running
             * postgres (a stale file whose pid came back as something
             * else, or a server killed and not yet reaped) */
            char *stat_path = cbfs_xasprintf("/proc/%ld/stat", pid), *state = NULL;
            uint8_t *stat = NULL;
            size_t slen;
            /* "pid (comm) S ...": a zombie (Z) is a dead server */
            if (cbfs_read_file(stat_path, &stat, &slen, NULL) == 0)
                state = strrchr((char *) stat, ')');
            if (!state || (strstr((char *) stat, "(postgres)") && state[1] == ' ' &&
                           state[2] != 'Z' && state[2] != 'X'))
                rc = cbfs_error_set(err, EBUSY, CBFS_EXIT_TARGET,
                                    "could not restore into \"%s\" with --delta: a server is "
                                    "running on it (pid %ld)",
                                    dir, pid);
            free(stat);
            free(stat_path);
        }
        free(pid_text);
    }
    free(pid_path);
    return rc;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const DeltaEntry *) a)->path, ((const DeltaEntry *) b)->path);
}

typedef struct Prune {
    DeltaEntry *entries;
    size_t n;
    uint64_t removed;
    CbfsError *err;
} Prune;

static const DeltaEntry *find(const Prune *p, const char *rel)
{
    DeltaEntry key = {rel, DELTA_FILE};
    return bsearch(&key, p->entries, p->n, sizeof(DeltaEntry), entry_cmp);
}

static int remove_entry(Prune *p, const char *full, bool is_dir)
{
    struct stat st;
    /* a folder's tree goes entry by entry: what stays is why it failed */
    int e = ENOTEMPTY;

    if (is_dir)
        cbfs_remove_tree(full);
    else if (unlink(full) < 0)
        e = errno;
    if (lstat(full, &st) < 0 && errno == ENOENT) {
        p->removed++;
        return 0;
    }
    return cbfs_error_set(p->err, e, CBFS_EXIT_TARGET, "could not remove \"%s\": %s", full,
                          strerror(e));
}

/* Walk folder full (relative path rel, "" for the data directory). */
static int prune_dir(Prune *p, const char *full, const char *rel)
{
    DIR *d = opendir(full);
    struct dirent *de;
    int rc = 0;
    /* pg_tblspc/<oid>/: what the backup does not name belongs to another
     * server version sharing the tablespace's folder: left alone */
    bool tablespace_root = strncmp(rel, "pg_tblspc/", 10) == 0 && !strchr(rel + 10, '/');

    if (!d)
        return cbfs_error_set(p->err, errno, CBFS_EXIT_TARGET,
                              "could not open directory \"%s\": %s", full, strerror(errno));
    while (rc == 0 && (de = readdir(d)) != NULL) {
        char *cfull, *crel;
        const DeltaEntry *e;
        struct stat st;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        cfull = cbfs_xasprintf("%s/%s", full, de->d_name);
        crel = *rel ? cbfs_xasprintf("%s/%s", rel, de->d_name) : cbfs_xstrdup(de->d_name);
        e = find(p, crel);
        if (lstat(cfull, &st) < 0) {
            if (errno != ENOENT)
                rc = cbfs_error_set(p->err, errno, CBFS_EXIT_TARGET, "could not stat \"%s\": %s",
                                    cfull, strerror(errno));
        } else if (!e) {
            if (!tablespace_root)
                rc = remove_entry(p, cfull, S_ISDIR(st.st_mode));
        } else if (e->kind == DELTA_FILE) {
            if (!S_ISREG(st.st_mode))
                rc = remove_entry(p, cfull, S_ISDIR(st.st_mode));
        } else if (e->kind == DELTA_DIR) {
            struct stat tst;
            /* pg_wal kept as a link to a folder elsewhere (a WAL disk) */
            bool wal_link = strcmp(crel, "pg_wal") == 0 && S_ISLNK(st.st_mode) &&
                            stat(cfull, &tst) == 0 && S_ISDIR(tst.st_mode);
            if (S_ISDIR(st.st_mode) || wal_link)
                rc = prune_dir(p, cfull, crel);
            else
                rc = remove_entry(p, cfull, false);
        } else if (S_ISLNK(st.st_mode)) { /* a tablespace link, made right by the caller */
            struct stat tst;
            if (stat(cfull, &tst) == 0 && S_ISDIR(tst.st_mode))
                rc = prune_dir(p, cfull, crel);
        } else {
            rc = remove_entry(p, cfull, S_ISDIR(st.st_mode));
        }
        free(cfull);
        free(crel);
    }
    closedir(d);
    return rc;
}

int delta_prune(const char *dir, DeltaEntry *entries, size_t n, uint64_t *ret_removed,
                CbfsError *err)
{
    Prune p = {entries, n, 0, err};
    int rc;

    if (n > 1)
        qsort(entries, n, sizeof(DeltaEntry), entry_cmp);
    rc = prune_dir(&p, dir, "");
    *ret_removed = p.removed;
    return rc;
}
