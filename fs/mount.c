/*
 * mount.c - `mount.cbfs REPO[@POINT] MOUNTPOINT [-o OPTIONS]` (also
 * `cbfs mount`) and `cbfs umount MOUNTPOINT`.
 *
 * Follows mount-helper conventions, so `mount -t cbfs REPO@POINT /mnt -o …`
 * and an /etc/fstab line work: options come as one -o list, generic mount
 * options are accepted and ignored, -n/-s/-v are accepted.  Without -f the
 * command returns only once the file system is mounted and ready (a child
 * reports through a pipe), so `mount.cbfs … && pg_ctl start …` works.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

#include "cbfs/crypt.h"
#include "cbfs/lock.h"
#include "cbfs/log.h"
#include "cbfs/point.h"
#include "cbfs/repo.h"
#include "cbfs/retention.h"
#include "cbfs/store.h"
#include "cbfs/util.h"
#include "commands.h"
#include "fs.h"
#include "hydrate.h"
#include "overlay.h"

typedef struct MountOptions {
    const char *source;
    const char *mountpoint;
    uid_t uid;
    gid_t gid;
    char *overlay; /* persistent overlay, or NULL for a temporary one */
    char *cache_dir;
    uint64_t cache_size;
    int passthrough; /* -1: the default (see serve), 0: no, 1: yes */
    int io_uring;    /* -1: the default (see serve), 0: no, 1: yes */
    uint64_t headroom;
    bool hydrate;
    uint64_t hydrate_rate;
    bool max_rate; /* -o max_rate= given (the limit is set: ratelimit.h) */
    bool allow_other;
    bool debug;
    bool foreground;
    bool pause;     /* target_action=pause */
    char *node;     /* node=NAME or --node NAME: a node of a repository of several */
    char *settings; /* settings=FILE: lines added to postgresql.auto.conf */
} MountOptions;

static void mount_usage(void)
{
    printf("Usage: mount.cbfs REPO[@POINT] MOUNTPOINT [-o OPTIONS] [-f]\n"
           "       cbfs mount REPO[@POINT] MOUNTPOINT [-o OPTIONS] [-f]\n"
           "\n"
           "Mount a backup as a PostgreSQL data directory: reads come from the repository,\n"
           "writes go to a local overlay, and PostgreSQL started on it recovers\n"
           "to POINT: a backup label or \"latest\" (the default; the end of that backup), a\n"
           "restore point name, a time (2026-11-21T10:30:00Z) or lsn:X/Y.\n"
           "\n"
           "Options (-o, comma-separated):\n"
           "  uid=USER, gid=GROUP   owner shown for every file (default: you)\n"
           "  overlay=DIR           keep the writable layer in DIR (survives unmount)\n"
           "  cache_dir=DIR         where temporary overlays (and old manifests) live\n"
           "  cache_size=SIZE       memory for decompressed blocks (default 128M)\n"
           "  allow_other           let other users in (implied when uid= is not you)\n"
           "  passthrough           files wholly in the overlay are served by the kernel\n"
           "                        from it (FUSE passthrough: as root, where the kernel and\n"
           "                        this build allow), and the kernel's writeback cache is\n"
           "                        off; the default for a mount that hydrates (hydrate, or\n"
           "                        an overlay cbfs hydrate was run on)\n"
           "  nopassthrough         every read and write through the daemon, with the\n"
           "                        writeback cache; the default otherwise\n"
           "  io_uring              FUSE requests over io_uring, fewer context switches\n"
           "                        (where this build and the kernel have it; the\n"
           "                        default when the kernel's fuse.enable_uring is on)\n"
           "  noio_uring            FUSE requests through /dev/fuse reads and writes\n"
           "  headroom=SIZE         free space the overlay's file system must have for a\n"
           "                        file to be opened with passthrough (default 512M)\n"
           "  hydrate[=RATE]        copy every block of the backup into the overlay in the\n"
           "                        background, behind PostgreSQL's reads, at most RATE\n"
           "                        bytes a second (50M); goes on at every mount of this\n"
           "                        overlay until done (cbfs hydrate MOUNTPOINT --status)\n"
           "  max_rate=RATE         hydration and read-ahead read at most RATE bytes a\n"
           "                        second (50M; also CBFS_MAX_RATE or max_rate in the\n"
           "                        configuration); PostgreSQL's own reads are not held\n"
           "  target_action=pause   pause at the point instead of promoting\n"
           "  node=NAME             a node of a repository that holds several (also\n"
           "                        --node NAME)\n"
           "  settings=FILE         server settings added to postgresql.auto.conf\n"
           "  store_timeout=TIME    how long a read that needs the object store retries\n"
           "                        while it does not answer, then fails with EIO (default\n"
           "                        60s; S3 only)\n"
           "  passphrase_file=FILE  passphrase of an encrypted repository (mode 0600; also\n"
           "                        written into restore_command, so PostgreSQL's user\n"
           "                        must be able to read it)\n"
           "  debug                 log every FUSE request (implies -f)\n"
           "  -f                    stay in the foreground\n"
           "\n"
           "Unmount with \"cbfs umount MOUNTPOINT\" or \"fusermount3 -u MOUNTPOINT\".\n");
}

static int parse_owner(const char *v, bool user, unsigned *ret)
{
    long n;
    if (cbfs_parse_int(v, 0, 0x7fffffff, &n) == 0) {
        *ret = (unsigned) n;
        return 0;
    }
    if (user) {
        struct passwd *pw = getpwnam(v);
        if (pw) {
            *ret = pw->pw_uid;
            return 0;
        }
    } else {
        struct group *gr = getgrnam(v);
        if (gr) {
            *ret = gr->gr_gid;
            return 0;
        }
    }
    return -EINVAL;
}

static int parse_o(MountOptions *mo, const char *list, const char *cmd)
{
    char *copy = cbfs_xstrdup(list), *save = NULL;
    /* what mount(8) gives a helper from an fstab line (fstab(5), mount(8)
     * "FILESYSTEM-INDEPENDENT MOUNT OPTIONS"): nothing to do here */
    static const char *const ignored[] = {
        "rw",     "defaults", "auto",  "noauto",  "_netdev",  "nofail",   "user",   "users",
        "nouser", "owner",    "group", "noatime", "atime",    "relatime", "nodev",  "nosuid",
        "dev",    "suid",     "exec",  "noexec",  "lazytime", "async",    "silent", "loud"};
    int rc = 0;

    for (char *o = strtok_r(copy, ",", &save); o && rc == 0; o = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(o, '=');
        const char *v = eq ? eq + 1 : NULL;
        bool known = false;
        if (eq)
            *eq = '\0';
        if (strcmp(o, "uid") == 0 && v) {
            unsigned u = 0;
            if (parse_owner(v, true, &u) < 0)
                rc = cmd_usage_error(cmd, "unknown user \"%s\"", v);
            else
                mo->uid = u;
            continue;
        }
        if (strcmp(o, "gid") == 0 && v) {
            unsigned g = 0;
            if (parse_owner(v, false, &g) < 0)
                rc = cmd_usage_error(cmd, "unknown group \"%s\"", v);
            else
                mo->gid = g;
            continue;
        }
        if (strcmp(o, "overlay") == 0 && v && *v) {
            free(mo->overlay);
            mo->overlay = cbfs_xstrdup(v);
            continue;
        }
        if (strcmp(o, "cache_dir") == 0 && v && *v) {
            free(mo->cache_dir);
            mo->cache_dir = cbfs_xstrdup(v);
            continue;
        }
        if (strcmp(o, "cache_size") == 0 && v) {
            if (cbfs_parse_size(v, &mo->cache_size) < 0 || mo->cache_size < (1u << 20))
                rc = cmd_usage_error(cmd, "invalid cache_size \"%s\" (at least 1M)", v);
            continue;
        }
        if (strcmp(o, "settings") == 0 && v && *v) {
            free(mo->settings);
            mo->settings = cbfs_xstrdup(v);
            continue;
        }
        if (strcmp(o, "node") == 0 && v && *v) {
            free(mo->node);
            mo->node = cbfs_xstrdup(v);
            continue;
        }
        if (strcmp(o, "store_timeout") == 0 && v) {
            int64_t secs;
            if (cbfs_parse_duration(v, &secs) < 0 || secs > 86400)
                rc = cmd_usage_error(cmd,
                                     "invalid store_timeout \"%s\" (a duration such as 30s or "
                                     "5m, at most 1d)",
                                     v);
            else
                cbfs_store_s3_timeout((unsigned) secs, true);
            continue;
        }
        if (strcmp(o, "passphrase_file") == 0 && v && *v) {
            cbfs_passphrase_set_file(v);
            continue;
        }
        if (strcmp(o, "target_action") == 0 && v &&
            (strcmp(v, "promote") == 0 || strcmp(v, "pause") == 0)) {
            mo->pause = strcmp(v, "pause") == 0;
            continue;
        }
        if (strcmp(o, "hydrate") == 0) {
            mo->hydrate = true;
            if (v && (cbfs_parse_size(v, &mo->hydrate_rate) < 0 || mo->hydrate_rate == 0))
                rc = cmd_usage_error(cmd, "invalid hydrate rate \"%s\" (bytes a second: 50M)", v);
            continue;
        }
        if (strcmp(o, "max_rate") == 0 && v) {
            rc = cmd_max_rate(cmd, v);
            mo->max_rate = true;
            continue;
        }
        if (strcmp(o, "headroom") == 0 && v) {
            if (cbfs_parse_size(v, &mo->headroom) < 0 || mo->headroom < (1u << 20))
                rc = cmd_usage_error(cmd, "invalid headroom \"%s\" (at least 1M)", v);
            continue;
        }
        if ((strcmp(o, "passthrough") == 0 || strcmp(o, "nopassthrough") == 0) && !v) {
            mo->passthrough = o[0] != 'n';
            continue;
        }
        if ((strcmp(o, "io_uring") == 0 || strcmp(o, "noio_uring") == 0) && !v) {
            mo->io_uring = o[0] != 'n';
            continue;
        }
        if (strcmp(o, "allow_other") == 0 && !v) {
            mo->allow_other = true;
            continue;
        }
        if (strcmp(o, "debug") == 0 && !v) {
            mo->debug = mo->foreground = true;
            continue;
        }
        /* comments and options meant for others (x-systemd.*, x-gvfs-*),
         * and the user a user mount was made for (user=NAME) */
        if (strcmp(o, "comment") == 0 || strncmp(o, "x-", 2) == 0 || strncmp(o, "X-", 2) == 0 ||
            (strcmp(o, "user") == 0 && v))
            continue;
        for (size_t i = 0; i < CBFS_ARRAY_LEN(ignored); i++)
            if (strcmp(o, ignored[i]) == 0 && !v)
                known = true;
        if (!known)
            rc = cmd_usage_error(cmd, "unknown mount option \"%s\"", o);
    }
    free(copy);
    return rc;
}

/* Is the kernel's FUSE over io_uring turned on (fuse.enable_uring)? */
static bool kernel_uring(void)
{
    uint8_t *v = NULL;
    size_t len = 0;
    CbfsError err;
    bool on;
    cbfs_error_init(&err);
    on = cbfs_read_file("/sys/module/fuse/parameters/enable_uring", &v, &len, &err) == 0 &&
         len > 0 && (v[0] == 'Y' || v[0] == '1');
    free(v);
    return on;
}

/* Everything the daemon runs; reports readiness (or the error) on ready_fd. */
static int serve(MountOptions *mo, CbfsRepo *repo, const CbfsTarget *target, const char *identity,
                 const CbfsKv *rec, const char *cache, const char *overlay_dir, bool temp_overlay,
                 int ready_fd)
{
    Overlay *ov = NULL;
    Fs *fs = NULL;
    Hydrator *hy = NULL;
    struct fuse_session *se = NULL;
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    struct fuse_loop_config cfg;
    CbfsError err;
    char self[PATH_MAX], *opts;
    CbfsHolder reg;
    bool created, registered = false, materialized = false;
    int rc, passthrough = mo->passthrough, uring = mo->io_uring;

    cbfs_error_init(&err);
    /* many FUSE threads each with its own malloc arena fragment memory that
     * the block cache frees; a few arenas keep the daemon near its budget */
    mallopt(M_ARENA_MAX, 2);
    {
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        self[n > 0 ? n : 0] = '\0';
        /* restore_command must call the cbfs executable, not mount.cbfs */
        if (n > 0 && strcmp(strrchr(self, '/') + 1, "mount.cbfs") == 0) {
            char *slash = strrchr(self, '/');
            snprintf(slash + 1, sizeof(self) - (size_t) (slash + 1 - self), "cbfs");
            /* installed apart (mount.cbfs in sbin, cbfs in bin) */
            if (access(self, X_OK) != 0 && access(CBFS_BINDIR "/cbfs", X_OK) == 0)
                snprintf(self, sizeof(self), "%s", CBFS_BINDIR "/cbfs");
        }
    }
    rc = overlay_open(overlay_dir, repo->id, identity, &created, &ov, &err);
    /* The kernel takes passthrough or its writeback cache for the whole
     * mount, at its start.  Passthrough pays where files are whole in the
     * overlay, which is what hydration makes; until then the writeback
     * cache is worth more (PostgreSQL's writes of backup pages reach the
     * daemon in batches, not one request each).  So: on for a mount that
     * hydrates (-o hydrate, or an overlay cbfs hydrate was run on). */
    if (passthrough < 0) {
        char *want = cbfs_xasprintf("%s/hydrate.want", overlay_dir);
        passthrough = mo->hydrate || access(want, F_OK) == 0;
        free(want);
    }
    /* FUSE over io_uring needs the kernel's consent (fuse.enable_uring,
     * off unless the administrator turned it on): asked for by default
     * where it is on, never without this build's support for it */
    if (uring < 0)
        uring = kernel_uring();
    uring = uring && CBFS_FUSE_URING;
    if (rc == 0) {
        FsConfig fc = {
            .repo = repo,
            .record = rec,
            .cache_dir = cache,
            .label = target->label,
            .target = target,
            .overlay = ov,
            .uid = mo->uid,
            .gid = mo->gid,
            .cache_size = mo->cache_size,
            .prefetchers = 4,
            .passthrough = passthrough,
            .io_uring = uring,
            .headroom = mo->headroom,
        };
        rc = fs_new(&fc, &fs, &err);
    }
    if (rc == 0 && created)
        rc = fs_inject(fs, self, &err);
    if (rc == 0)
        rc = cbfs_reader_register(repo, target->label, "mount", mo->mountpoint, &reg, &registered,
                                  &err);
    if (rc < 0)
        goto report;

    opts = cbfs_xasprintf("fsname=%s,subtype=cbfs,default_permissions%s", mo->source,
                          mo->allow_other ? ",allow_other" : "");
    fuse_opt_add_arg(&args, "mount.cbfs");
    fuse_opt_add_arg(&args, "-o");
    fuse_opt_add_arg(&args, opts);
    if (mo->debug)
        fuse_opt_add_arg(&args, "-d");
    if (uring) {
        fuse_opt_add_arg(&args, "-o");
        fuse_opt_add_arg(&args, "io_uring");
    }
    free(opts);
    se = fuse_session_new(&args, fs_ops(), sizeof(struct fuse_lowlevel_ops), fs);
    if (!se) {
        rc = cbfs_error_set(&err, EINVAL, CBFS_EXIT_ERROR,
                            "could not mount on \"%s\": could not start a FUSE session",
                            mo->mountpoint);
        goto report;
    }
    if (fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, mo->mountpoint) != 0) {
        rc = cbfs_error_set(&err, EIO, CBFS_EXIT_ERROR,
                            "could not mount on \"%s\": the kernel refused the FUSE mount",
                            mo->mountpoint);
        goto report;
    }
report:
    if (ready_fd >= 0) {
        /* the parent prints the message and exits with the code */
        char msg[CBFS_ERROR_MSG_MAX + 16];
        int n = snprintf(msg, sizeof(msg), "%d %s", rc < 0 ? cbfs_error_exit_code(&err) : 0,
                         rc < 0 ? err.msg : "");
        (void) !write(ready_fd, msg, (size_t) n);
        close(ready_fd);
    } else if (rc < 0) {
        cmd_fail(&err);
    }
    if (rc == 0) {
        if (!mo->foreground) {
            /* the mount is up: detach, keep a log in the overlay */
            char *log = cbfs_xasprintf("%s/mount.log", overlay_dir);
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
            int null = open("/dev/null", O_RDWR);
            free(log);
            if (null >= 0) {
                dup2(null, STDIN_FILENO);
                dup2(null, STDOUT_FILENO);
                close(null);
            }
            if (fd >= 0) {
                dup2(fd, STDERR_FILENO);
                close(fd);
            }
            (void) !chdir("/");
        }
        hy = hydrator_start(fs, mo->hydrate, mo->hydrate_rate);
        {
            /* how little of the manifest a mount needs (read in place) */
            CbfsManifest *m = fs_manifest(fs);
            if (cbfs_manifest_object_size(m))
                cbfs_info("mounted backup \"%s\" on \"%s\": %llu bytes of its manifest's %llu read",
                          target->label, mo->mountpoint,
                          (unsigned long long) cbfs_manifest_fetched(m),
                          (unsigned long long) cbfs_manifest_object_size(m));
        }
        memset(&cfg, 0, sizeof(cfg));
        cfg.clone_fd = 0;
        cfg.max_idle_threads = 16;
        rc = fuse_session_loop_mt(se, &cfg);
        fuse_session_unmount(se);
        materialized = hydrator_materialized(hy);
        hydrator_stop(hy);
    }
    if (se) {
        fuse_remove_signal_handlers(se);
        fuse_session_destroy(se);
    }
    fuse_opt_free_args(&args);
    if (registered)
        cbfs_registration_release(repo, &reg);
    fs_free(fs);
    overlay_close(ov);
    /* an overlay whose files were moved out is spent */
    if (temp_overlay || materialized)
        cbfs_remove_tree(overlay_dir);
    return rc < 0 ? cbfs_error_exit_code(&err) : 0;
}

int cmd_mount(int argc, char **argv)
{
    MountOptions mo = {.uid = getuid(),
                       .gid = getgid(),
                       .cache_size = 128u << 20,
                       .passthrough = -1,
                       .io_uring = -1};
    CbfsLocation loc;
    CbfsRepo *repo = NULL;
    CbfsKv *rec = NULL;
    CbfsError err;
    char *label = NULL, *cache = NULL, *overlay_dir = NULL;
    char mnt[PATH_MAX];
    const char *pos[2];
    int npos = 0, rc;
    bool temp_overlay = false;
    const char *cmd = "mount";
    CbfsTarget target = {0};
    char *identity = NULL;

    cbfs_error_init(&err);
    cbfs_log_set_progname(strcmp(argv[0], "mount.cbfs") == 0 ? "mount.cbfs" : "cbfs");
    /* a read waits this long for a store that does not answer (s3_timeout
     * in the configuration sets another default, store_timeout= overrides) */
    cbfs_store_s3_timeout(60, false);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            mount_usage();
            return 0;
        } else if (strcmp(argv[i], "-o") == 0) {
            if (i + 1 >= argc)
                return cmd_usage_error(cmd, "-o needs an option list");
            if ((rc = parse_o(&mo, argv[++i], cmd)) != 0)
                return rc;
        } else if (strncmp(argv[i], "-o", 2) == 0) {
            if ((rc = parse_o(&mo, argv[i] + 2, cmd)) != 0)
                return rc;
        } else if (strcmp(argv[i], "--node") == 0 || strncmp(argv[i], "--node=", 7) == 0) {
            const char *v = argv[i][6] == '=' ? argv[i] + 7 : i + 1 < argc ? argv[++i] : NULL;
            if (!v || !*v)
                return cmd_usage_error(cmd, "--node needs a node name");
            free(mo.node);
            mo.node = cbfs_xstrdup(v);
        } else if (strcmp(argv[i], "-f") == 0) {
            mo.foreground = true;
        } else if (argv[i][0] == '-' && argv[i][1] &&
                   strspn(argv[i] + 1, "nsv") == strlen(argv[i] + 1)) {
            /* mount(8)'s helper flags -n (no mtab), -s (sloppy: unknown
             * options are refused all the same), -v: nothing to do */
        } else if (strcmp(argv[i], "-t") == 0 || strncmp(argv[i], "-t", 2) == 0) {
            /* mount(8) passes -t TYPE.SUBTYPE when there is a subtype */
            const char *t = argv[i][2] ? argv[i] + 2 : i + 1 < argc ? argv[++i] : "";
            if (strcmp(t, "cbfs") != 0 && strcmp(t, "fuse.cbfs") != 0)
                return cmd_usage_error(cmd, "file system type \"%s\" is not cbfs", t);
        } else if (strcmp(argv[i], "-N") == 0 || strncmp(argv[i], "-N", 2) == 0) {
            /* mount -N NS: the helper should switch to that namespace */
            return cmd_usage_error(cmd, "-N is not supported: run mount.cbfs in that mount "
                                        "namespace (nsenter -m)");
        } else if (argv[i][0] == '-') {
            return cmd_usage_error(cmd, "unknown option \"%s\"", argv[i]);
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            return cmd_usage_error(cmd, "too many arguments");
        }
    }
    if (npos < 2)
        return cmd_usage_error(cmd, "usage: mount.cbfs REPO[@POINT] MOUNTPOINT [-o OPTIONS]");
    mo.source = pos[0];
    mo.mountpoint = pos[1];
    if (!mo.max_rate && (rc = cmd_max_rate(cmd, NULL)) != 0)
        return rc;
    if (mo.uid != getuid())
        mo.allow_other = true;

    /* the mount point: a directory that is not mounted on already */
    {
        struct stat st, pst;
        char *parent;
        if (stat(mo.mountpoint, &st) < 0) {
            cbfs_error_set(&err, errno, CBFS_EXIT_USAGE, "could not mount on \"%s\": %s",
                           mo.mountpoint,
                           errno == ENOTCONN ? "a dead mount is still there (run cbfs umount)"
                                             : strerror(errno));
            return cmd_fail(&err);
        }
        if (!S_ISDIR(st.st_mode)) {
            cbfs_error_set(&err, ENOTDIR, CBFS_EXIT_USAGE, "could not mount on \"%s\": %s",
                           mo.mountpoint, strerror(ENOTDIR));
            return cmd_fail(&err);
        }
        if (!realpath(mo.mountpoint, mnt)) {
            cbfs_error_set(&err, errno, CBFS_EXIT_USAGE, "could not mount on \"%s\": %s",
                           mo.mountpoint, strerror(errno));
            return cmd_fail(&err);
        }
        parent = cbfs_xasprintf("%s/..", mnt);
        rc = stat(parent, &pst);
        free(parent);
        if (rc == 0 && (pst.st_dev != st.st_dev || pst.st_ino == st.st_ino)) {
            cbfs_error_set(&err, EBUSY, CBFS_EXIT_USAGE,
                           "could not mount on \"%s\": it is already a mount point", mo.mountpoint);
            return cmd_fail(&err);
        }
        mo.mountpoint = mnt;
    }
    /* the repository, the point, the manifest */
    if (cbfs_location_parse(mo.source, true, &loc, &err) < 0)
        return cmd_fail(&err);
    rc = cbfs_repo_open(&loc, &repo, &err);
    if (rc == 0)
        rc = cbfs_repo_select_node(repo, mo.node, &err);
    /* an encrypted repository's key now, in the foreground: the daemon
     * cannot ask for a passphrase */
    if (rc == 0)
        rc = cbfs_repo_unlock(repo, &err);
    /* the server's restore_command runs as uid: its first wal-fetch then
     * finds the key in that user's key cache instead of deriving it again */
    if (rc == 0 && repo->crypt && geteuid() == 0 && mo.uid != 0)
        cbfs_crypt_cache_share(repo->crypt, mo.uid, mo.gid);
    if (rc == 0)
        rc = cbfs_point_resolve(repo, loc.point, &target, &err);
    if (rc == 0 && mo.settings)
        rc = cbfs_read_settings(mo.settings, &target.extra, &err);
    if (rc == 0) {
        label = cbfs_xstrdup(target.label);
        target.pause = mo.pause;
        /* an overlay belongs to one backup (of one node) and one target */
        identity = cbfs_xasprintf("%s%s%s%s%s", repo->node ? repo->node : "", repo->node ? "/" : "",
                                  label, target.value ? "@" : "", target.value ? target.value : "");
    }
    cbfs_location_release(&loc);
    if (rc < 0)
        goto fail;
    if (mo.cache_dir) {
        cache = cbfs_xasprintf("%s/%s", mo.cache_dir, repo->id);
        if ((rc = cbfs_mkdir_p(cache, 0700, &err)) < 0)
            goto fail;
    } else if ((rc = cbfs_repo_cache_dir(repo, &cache, &err)) < 0) {
        goto fail;
    }
    /* its manifest is read in place by the daemon, only the pages it needs */
    if ((rc = cbfs_repo_read_backup(repo, label, &rec, &err)) < 0)
        goto fail;
    if (mo.overlay) {
        if ((rc = cbfs_mkdir_p(mo.overlay, 0700, &err)) < 0)
            goto fail;
        overlay_dir = realpath(mo.overlay, NULL);
    } else {
        /* pg_wal lives in the overlay and PostgreSQL's user must reach it:
         * /var/tmp (or cache_dir=), not the mounting user's private cache */
        overlay_dir =
            cbfs_xasprintf("%s/cbfs-overlay-XXXXXX", mo.cache_dir ? mo.cache_dir : "/var/tmp");
        if (!mkdtemp(overlay_dir)) {
            rc = cbfs_error_set(&err, errno, CBFS_EXIT_ERROR,
                                "could not create a temporary overlay \"%s\": %s", overlay_dir,
                                strerror(errno));
            goto fail;
        }
        temp_overlay = true;
    }
    /* the overlay belongs to the user PostgreSQL runs as (its pg_wal is
     * PostgreSQL's); the daemon, root or that user, keeps writing in it */
    if (overlay_dir && geteuid() == 0 && chown(overlay_dir, mo.uid, mo.gid) < 0) {
        rc = cbfs_error_set(&err, errno, CBFS_EXIT_ERROR, "could not give \"%s\" to user %u: %s",
                            overlay_dir, (unsigned) mo.uid, strerror(errno));
        goto fail;
    }

    if (mo.foreground) {
        rc = serve(&mo, repo, &target, identity, rec, cache, overlay_dir, temp_overlay, -1);
    } else {
        int pipefd[2];
        pid_t pid;
        if (pipe2(pipefd, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
            rc = cbfs_error_set(&err, errno, CBFS_EXIT_ERROR, "could not start the daemon: %s",
                                strerror(errno));
            goto fail;
        }
        if (pid == 0) {
            close(pipefd[0]);
            setsid();
            rc = serve(&mo, repo, &target, identity, rec, cache, overlay_dir, temp_overlay,
                       pipefd[1]);
            _exit(rc);
        }
        close(pipefd[1]);
        {
            char msg[CBFS_ERROR_MSG_MAX + 16];
            ssize_t n;
            int code;
            char *space;
            do
                n = read(pipefd[0], msg, sizeof(msg) - 1);
            while (n < 0 && errno == EINTR);
            close(pipefd[0]);
            if (n <= 0) {
                int status;
                waitpid(pid, &status, 0);
                rc = cbfs_error_set(&err, EIO, CBFS_EXIT_ERROR,
                                    "could not mount on \"%s\": the daemon died while starting",
                                    mo.mountpoint);
                goto fail;
            }
            msg[n] = '\0';
            code = atoi(msg);
            space = strchr(msg, ' ');
            if (code != 0) {
                int status;
                waitpid(pid, &status, 0);
                cbfs_error("%s", space ? space + 1 : "could not mount");
                rc = code;
            } else {
                rc = 0;
            }
        }
        /* the overlay and cache belong to the daemon now */
        goto out;
    }
    goto out;
fail:
    rc = cmd_fail(&err);
    if (temp_overlay)
        cbfs_remove_tree(overlay_dir);
out:
    free(overlay_dir);
    free(cache);
    free(label);
    free(mo.overlay);
    free(mo.cache_dir);
    free(mo.node);
    free(mo.settings);
    free(identity);
    cbfs_target_release(&target);
    cbfs_kv_free(rec);
    cbfs_repo_free(repo);
    return rc;
}

int cmd_umount(int argc, char **argv)
{
    char mnt[PATH_MAX];
    CbfsError err;

    cbfs_error_init(&err);
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("Usage: cbfs umount MOUNTPOINT [--materialize TARGET]\n\nUnmount a backup "
               "mounted with mount.cbfs (also after its daemon died).\n"
               "  --materialize TARGET  first make the mount an ordinary data directory at\n"
               "                        TARGET by moving its overlay's files there: after\n"
               "                        PostgreSQL stopped, once hydration is done (cbfs\n"
               "                        hydrate), TARGET absent or empty and on the overlay's\n"
               "                        file system; the overlay is used up\n");
        return 0;
    }
    if (argc == 4 && strcmp(argv[2], "--materialize") == 0) {
        if (control_materialize(argv[1], argv[3], &err) < 0)
            return cmd_fail(&err);
        argc = 2;
    } else if (argc == 3 && strncmp(argv[2], "--materialize=", 14) == 0) {
        if (control_materialize(argv[1], argv[2] + 14, &err) < 0)
            return cmd_fail(&err);
        argc = 2;
    }
    if (argc != 2)
        return cmd_usage_error("umount", argc < 2 ? "no mount point given" : "too many arguments");
    /* a dead daemon's mount point cannot be resolved: use the name as given */
    if (!realpath(argv[1], mnt))
        snprintf(mnt, sizeof(mnt), "%s", argv[1]);
    if (geteuid() == 0) {
        if (umount2(mnt, 0) < 0) {
            cbfs_error_set(&err, errno, errno == EINVAL ? CBFS_EXIT_USAGE : CBFS_EXIT_ERROR,
                           "could not unmount \"%s\": %s", argv[1],
                           errno == EINVAL ? "not mounted" : strerror(errno));
            return cmd_fail(&err);
        }
        return 0;
    }
    execlp("fusermount3", "fusermount3", "-u", mnt, (char *) NULL);
    cbfs_error_set(&err, errno, CBFS_EXIT_ERROR, "could not run fusermount3: %s", strerror(errno));
    return cmd_fail(&err);
}
