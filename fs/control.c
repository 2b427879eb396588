/*
 * control.c - `cbfs hydrate MOUNTPOINT` and `cbfs umount MOUNTPOINT
 * --materialize TARGET`: requests to a running mount's daemon, left in its
 * overlay folder (hydrate.h), which the mount's root names in its extended
 * attribute FS_XATTR_OVERLAY.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cbfs/json.h"
#include "cbfs/kv.h"
#include "cbfs/util.h"
#include "commands.h"
#include "fs.h"

/* The overlay folder of the mount at mnt (caller frees). */
static int overlay_of(const char *mnt, const char *what, char **ret, CbfsError *err)
{
    char buf[PATH_MAX];
    ssize_t n = getxattr(mnt, FS_XATTR_OVERLAY, buf, sizeof(buf) - 1);
    if (n < 0)
        return cbfs_error_set(err, errno, CBFS_EXIT_USAGE, "could not %s \"%s\": %s", what, mnt,
                              errno == ENODATA || errno == ENOTSUP || errno == EOPNOTSUPP
                                  ? "not a mounted backup"
                                  : strerror(errno));
    buf[n] = '\0';
    *ret = cbfs_xstrdup(buf);
    return 0;
}

static CbfsKv *read_kv(const char *dir, const char *name)
{
    char *path = cbfs_xasprintf("%s/%s", dir, name);
    uint8_t *data = NULL;
    size_t len = 0;
    CbfsKv *kv = NULL;
    if (cbfs_read_file(path, &data, &len, NULL) == 0)
        cbfs_kv_parse((const char *) data, len, &kv, NULL);
    free(data);
    free(path);
    return kv;
}

static uint64_t kv_u64(const CbfsKv *kv, const char *key)
{
    uint64_t v = 0;
    if (kv)
        cbfs_kv_get_u64(kv, key, &v);
    return v;
}

static void print_status(const char *mnt, const CbfsKv *st, bool json)
{
    const char *state = st && cbfs_kv_get(st, "state") ? cbfs_kv_get(st, "state") : "not started";
    uint64_t total = kv_u64(st, "bytes_total"), done = kv_u64(st, "bytes_done");
    if (json) {
        CbfsJson j;
        static const char *const nums[] = {"bytes_total", "bytes_done", "files_total", "files_done",
                                           "rate"};
        cbfs_json_init(&j);
        cbfs_json_begin_object(&j);
        cbfs_json_key(&j, "mount");
        cbfs_json_string(&j, mnt);
        cbfs_json_key(&j, "state");
        cbfs_json_string(&j, state);
        for (size_t i = 0; i < CBFS_ARRAY_LEN(nums); i++) {
            cbfs_json_key(&j, nums[i]);
            cbfs_json_uint(&j, kv_u64(st, nums[i]));
        }
        cbfs_json_key(&j, "error");
        cbfs_json_string(&j, st ? cbfs_kv_get(st, "error") : NULL);
        cbfs_json_end_object(&j);
        printf("%s\n", j.out.data);
        cbfs_json_release(&j);
        return;
    }
    printf("hydration of \"%s\": %s", mnt, state);
    if (st)
        printf(", %llu of %llu bytes (%.1f%%), %llu of %llu files", (unsigned long long) done,
               (unsigned long long) total, total ? 100.0 * (double) done / (double) total : 100.0,
               (unsigned long long) kv_u64(st, "files_done"),
               (unsigned long long) kv_u64(st, "files_total"));
    if (st && cbfs_kv_get(st, "error"))
        printf(": %s", cbfs_kv_get(st, "error"));
    putchar('\n');
}

int cmd_hydrate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"rate", required_argument, NULL, 'r'}, {"status", no_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},       {"wait", no_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0}};
    uint64_t rate = 0;
    bool status = false, json = false, wait = false;
    char *ov = NULL, *path, *text;
    CbfsError err;
    int c, rc;

    cbfs_error_init(&err);
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            if (cbfs_parse_size(optarg, &rate) < 0 || rate == 0)
                return cmd_usage_error("hydrate", "invalid rate \"%s\" (bytes a second: 50M)",
                                       optarg);
            break;
        case 's':
            status = true;
            break;
        case 'j':
            json = true;
            break;
        case 'w':
            wait = true;
            break;
        case 'h':
            printf("Usage: cbfs hydrate MOUNTPOINT [--rate RATE] [--wait]\n"
                   "       cbfs hydrate MOUNTPOINT --status [--json]\n\n"
                   "Copy every block of a mounted backup into its overlay, in the background,\n"
                   "behind PostgreSQL's reads and at most RATE bytes a second (50M; default\n"
                   "no limit).  It goes on at every mount of that overlay until done; then\n"
                   "every file is served from the overlay, and \"cbfs umount MOUNTPOINT\n"
                   "--materialize TARGET\" makes it an ordinary data directory.\n"
                   "  --status   how far it got (--json: as JSON)\n"
                   "  --wait     return once it is done (exit 1 if it failed)\n");
            return 0;
        default:
            return CBFS_EXIT_USAGE;
        }
    }
    if (optind != argc - 1)
        return cmd_usage_error("hydrate",
                               optind >= argc ? "no mount point given" : "too many arguments");
    if (overlay_of(argv[optind], "hydrate", &ov, &err) < 0)
        return cmd_fail(&err);
    if (status) {
        CbfsKv *st = read_kv(ov, "hydrate.status");
        print_status(argv[optind], st, json);
        cbfs_kv_free(st);
        free(ov);
        return 0;
    }
    /* hydrate.want is the record (kept for the next mounts); the request
     * makes a daemon that finished or failed start again */
    path = cbfs_xasprintf("%s/hydrate.want", ov);
    text = cbfs_xasprintf("rate = %llu\n", (unsigned long long) rate);
    rc = cbfs_write_file_atomic(path, text, strlen(text), 0644, &err);
    free(path);
    free(text);
    if (rc == 0) {
        path = cbfs_xasprintf("%s/hydrate.request", ov);
        rc = cbfs_write_file_atomic(path, "", 0, 0644, &err);
        free(path);
    }
    if (rc < 0) {
        free(ov);
        return cmd_fail(&err);
    }
    if (!wait) {
        char sz[32] = "";
        if (rate)
            cbfs_format_size(rate, sz, sizeof(sz));
        printf("hydration of \"%s\" asked for (%s%s%s); see \"cbfs hydrate %s --status\"\n",
               argv[optind], rate ? "at most " : "no rate limit", sz, rate ? "/s" : "",
               argv[optind]);
        free(ov);
        return 0;
    }
    /* the request is taken within a second; then the status is this run's */
    for (int i = 0; i < 100; i++) {
        struct stat sb;
        char *req = cbfs_xasprintf("%s/hydrate.request", ov);
        int gone = stat(req, &sb) < 0;
        free(req);
        if (gone)
            break;
        usleep(100000);
    }
    for (;;) {
        CbfsKv *st = read_kv(ov, "hydrate.status");
        const char *state = st ? cbfs_kv_get(st, "state") : NULL;
        if (state && (strcmp(state, "done") == 0 || strcmp(state, "failed") == 0)) {
            bool ok = strcmp(state, "done") == 0;
            print_status(argv[optind], st, json);
            cbfs_kv_free(st);
            free(ov);
            return ok ? 0 : CBFS_EXIT_ERROR;
        }
        cbfs_kv_free(st);
        if (!cbfs_is_mount_point(argv[optind])) {
            free(ov);
            cbfs_error_set(&err, EIO, CBFS_EXIT_ERROR,
                           "could not hydrate \"%s\": it was unmounted before hydration ended",
                           argv[optind]);
            return cmd_fail(&err);
        }
        usleep(500000);
    }
}

/* Is anything still running with the data directory at mnt? */
static long server_pid(const char *mnt)
{
    char *path = cbfs_xasprintf("%s/postmaster.pid", mnt);
    FILE *f = fopen(path, "r");
    long pid = 0;
    free(path);
    if (!f)
        return 0;
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 0 || (kill((pid_t) pid, 0) < 0 && errno == ESRCH))
        pid = 0;
    fclose(f);
    return pid;
}

int control_materialize(const char *mnt, const char *target_arg, CbfsError *err)
{
    char *ov = NULL, *parent, *slash, *req, *res, *target = NULL;
    char rp[PATH_MAX];
    struct stat so, st;
    long pid;
    int rc = 0;

    if (overlay_of(mnt, "materialize", &ov, err) < 0)
        return -EINVAL;
    if ((pid = server_pid(mnt)) > 0) {
        free(ov);
        return cbfs_error_set(err, EBUSY, CBFS_EXIT_USAGE,
                              "could not materialize \"%s\": the server on it is running (pid %ld)",
                              mnt, pid);
    }
    /* the target: absent or empty, on the overlay's file system */
    parent = cbfs_xstrdup(target_arg);
    slash = strrchr(parent, '/');
    if (slash == parent)
        parent[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        strcpy(parent, ".");
    if (!realpath(parent, rp))
        rc = cbfs_error_set(err, errno, CBFS_EXIT_TARGET,
                            "could not materialize \"%s\" into "
                            "\"%s\": %s",
                            mnt, target_arg, strerror(errno));
    else
        target =
            cbfs_xasprintf("%s/%s", strcmp(rp, "/") == 0 ? "" : rp, slash ? slash + 1 : target_arg);
    free(parent);
    if (rc == 0 && !cbfs_dir_empty(target, NULL))
        rc = cbfs_error_set(err, ENOTEMPTY, CBFS_EXIT_TARGET,
                            "could not materialize \"%s\" into \"%s\": it is not empty", mnt,
                            target_arg);
    if (rc == 0 && stat(ov, &so) == 0 && stat(rp, &st) == 0 && so.st_dev != st.st_dev)
        rc = cbfs_error_set(err, EXDEV, CBFS_EXIT_TARGET,
                            "could not materialize \"%s\" into \"%s\": it is not on the file "
                            "system of the mount's overlay \"%s\"",
                            mnt, target_arg, ov);
    if (rc < 0) {
        free(ov);
        free(target);
        return rc;
    }
    req = cbfs_xasprintf("%s/materialize.request", ov);
    res = cbfs_xasprintf("%s/materialize.result", ov);
    unlink(res);
    rc = cbfs_write_file_atomic(req, target, strlen(target), 0644, err);
    while (rc == 0) {
        uint8_t *data = NULL;
        size_t len = 0;
        if (cbfs_read_file(res, &data, &len, NULL) == 0) {
            while (len && data[len - 1] == '\n')
                data[--len] = '\0';
            if (strncmp((char *) data, "ok ", 3) == 0) {
                printf("materialized \"%s\" into \"%s\" (%s files moved); start it with "
                       "pg_ctl -D %s\n",
                       mnt, target, (char *) data + 3, target);
                unlink(res);
            } else {
                rc = cbfs_error_set(err, EIO, CBFS_EXIT_USAGE, "%s", (char *) data);
            }
            free(data);
            break;
        }
        if (!cbfs_is_mount_point(mnt)) {
            rc = cbfs_error_set(err, EIO, CBFS_EXIT_ERROR,
                                "could not materialize \"%s\": its daemon is gone", mnt);
            break;
        }
        usleep(100000);
    }
    unlink(req);
    free(req);
    free(res);
    free(ov);
    free(target);
    return rc;
}
