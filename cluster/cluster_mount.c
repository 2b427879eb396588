/*
 * cluster_mount.c - `cbfs mount REPO@POINT DIR --cluster [--start]
 * [--overlay DIR] [-o OPTIONS]` and `cbfs umount DIR` of such a mount.
 *
 * Every node of the cluster restore point is mounted on DIR/NODE by a mount
 * of its own (`cbfs mount REPO@POINT DIR/NODE -o node=NODE,...`, the same
 * daemon as a single mount), recovering to the point and pausing there,
 * with Citus's background work off (cluster_run.h).  Before anything is
 * mounted every node is checked: it is in the repository, has a backup
 * before the point and the WAL from it to the point.  A node that cannot
 * be mounted unmounts the others.  With --start the nodes' servers are
 * started and the cluster brought back (cluster_start).
 *
 * `cbfs umount DIR` of such a DIR stops the servers cbfs started, in any
 * state, then unmounts every node, also when its daemon or its server was
 * killed; DIR/NODE folders cbfs made are removed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cbfs/clusterpoint.h"
#include "cbfs/log.h"
#include "cbfs/passphrase.h"
#include "cbfs/point.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cluster.h"
#include "cluster_run.h"
#include "commands.h"
#include "pgserver.h"

typedef struct MountArgs {
    const char *source, *dir, *overlay, *user, *db_user, *pg_bin;
    char *opts; /* the -o options, given on to every node's mount */
    bool start;
    uid_t uid;
    gid_t gid;
    bool uid_given;
} MountArgs;

static void usage(void)
{
    printf("Usage: cbfs mount REPO@POINT DIR --cluster [--start] [--overlay DIR] [-o OPTIONS]\n"
           "\n"
           "Mount every node of the cluster restore point POINT on DIR/NODE, each a data\n"
           "directory that recovers to the point and pauses there.\n"
           "\n"
           "Options:\n"
           "      --start           start every node's PostgreSQL (sockets and logs in\n"
           "                        DIR/.cbfs), wait until all have reached the point,\n"
           "                        resume them all, point the cluster's metadata at the\n"
           "                        new nodes and print the coordinator's connection string\n"
           "      --overlay DIR     keep each node's writable layer in DIR/NODE\n"
           "      --user USER       the user the servers run as, when run as root\n"
           "                        (default: uid= of -o, else postgres)\n"
           "      --db-user ROLE    the superuser role cbfs connects as (default: the user)\n"
           "      --pg-bin DIR      PostgreSQL's bin directory (default: found by version)\n"
           "  -o OPTIONS            mount options for every node (see cbfs mount --help)\n"
           "\n"
           "Unmount with \"cbfs umount DIR\": it stops the servers and unmounts every node.\n");
}

static int parse(int argc, char **argv, MountArgs *a)
{
    const char *pos[2];
    int npos = 0;
    CbfsBuf o;

    memset(a, 0, sizeof(*a));
    cbfs_buf_init(&o);
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
#define VALUE(opt)                                                                                 \
    (strcmp(argv[i], opt) == 0                                                                     \
         ? (i + 1 < argc ? (v = argv[++i]) : NULL)                                                 \
         : (strncmp(argv[i], opt "=", strlen(opt) + 1) == 0 ? (v = argv[i] + strlen(opt) + 1)      \
                                                            : NULL))
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage();
            cbfs_buf_release(&o);
            return -1;
        } else if (strcmp(argv[i], "--cluster") == 0) {
            continue;
        } else if (strcmp(argv[i], "--start") == 0) {
            a->start = true;
        } else if (VALUE("--overlay")) {
            a->overlay = v;
        } else if (VALUE("--user")) {
            a->user = v;
        } else if (VALUE("--db-user")) {
            a->db_user = v;
        } else if (VALUE("--pg-bin")) {
            a->pg_bin = v;
        } else if (VALUE("--passphrase-file")) {
            cbfs_passphrase_set_file(v);
        } else if (strcmp(argv[i], "-o") == 0 || strncmp(argv[i], "-o", 2) == 0) {
            const char *list = argv[i][2] ? argv[i] + 2 : i + 1 < argc ? argv[++i] : NULL;
            if (!list) {
                cbfs_buf_release(&o);
                return cmd_usage_error("mount", "-o needs an option list");
            }
            cbfs_buf_printf(&o, "%s%s", o.len ? "," : "", list);
        } else if (argv[i][0] == '-') {
            cbfs_buf_release(&o);
            return cmd_usage_error("mount", "unknown option \"%s\"", argv[i]);
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            cbfs_buf_release(&o);
            return cmd_usage_error("mount", "too many arguments");
        }
#undef VALUE
    }
    if (npos < 2) {
        cbfs_buf_release(&o);
        return cmd_usage_error("mount", "usage: cbfs mount REPO@POINT DIR --cluster");
    }
    a->source = pos[0];
    a->dir = pos[1];
    a->opts = o.data ? o.data : cbfs_xstrdup("");
    /* options cbfs sets itself for every node */
    {
        char *copy = cbfs_xstrdup(a->opts), *save = NULL;
        int rc = 0;
        for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
            if (strncmp(t, "node=", 5) == 0 || strncmp(t, "overlay=", 8) == 0 ||
                strncmp(t, "target_action=", 14) == 0 || strncmp(t, "settings=", 9) == 0)
                rc = cmd_usage_error("mount",
                                     "mount option \"%.*s\" is set by --cluster for each node",
                                     (int) strcspn(t, "="), t);
            if (strncmp(t, "uid=", 4) == 0) {
                struct passwd *pw = getpwnam(t + 4);
                long n;
                a->uid_given = true;
                if (pw) {
                    a->uid = pw->pw_uid;
                    a->gid = pw->pw_gid;
                } else if (cbfs_parse_int(t + 4, 0, 0x7fffffff, &n) == 0) {
                    a->uid = (uid_t) n;
                    pw = getpwuid(a->uid);
                    a->gid = pw ? pw->pw_gid : (gid_t) n;
                }
            }
        }
        free(copy);
        if (rc != 0) {
            free(a->opts);
            return rc;
        }
    }
    return 0;
}

/* The user the servers run as: --user, uid=, yourself, or (root) postgres. */
static int pick_user(MountArgs *a, Cluster *c, CbfsError *err)
{
    struct passwd *pw;
    if (a->user)
        pw = getpwnam(a->user);
    else if (a->uid_given)
        pw = getpwuid(a->uid);
    else if (geteuid() == 0)
        pw = getpwnam("postgres");
    else
        pw = getpwuid(geteuid());
    if (!pw)
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_USAGE,
                              "user \"%s\" does not exist: give the user PostgreSQL runs as with "
                              "--user",
                              a->user ? a->user : "postgres");
    if (pw->pw_uid == 0 && a->start)
        return cbfs_error_set(err, EPERM, CBFS_EXIT_USAGE,
                              "PostgreSQL cannot run as root: give another user with --user");
    if (geteuid() != 0 && pw->pw_uid != geteuid())
        return cbfs_error_set(err, EPERM, CBFS_EXIT_USAGE,
                              "--user needs root: the servers would run as \"%s\"", pw->pw_name);
    c->user = cbfs_xstrdup(pw->pw_name);
    c->uid = pw->pw_uid;
    c->gid = pw->pw_gid;
    c->db_user = cbfs_xstrdup(a->db_user ? a->db_user : pw->pw_name);
    return 0;
}

/* The point, every node of it checked: in the repository, a backup before
 * the point and the WAL from it to the point.  Fills c's nodes. */
int cluster_resolve(CbfsRepo *repo, const char *point, CbfsClusterPoint *cp, Cluster *c,
                    int *ret_pg_major, CbfsError *err)
{
    char **names;
    size_t nn;
    int rc;

    if (!point)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "--cluster needs a cluster restore point: %s@POINT", repo->display);
    if ((rc = cbfs_repo_list_nodes(repo, &names, &nn, err)) < 0)
        return rc;
    cbfs_store_free_names(names, nn);
    if (nn < 2)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "repository \"%s\" holds %s: --cluster needs the nodes of a cluster",
                              repo->display, nn == 0 ? "no node" : "one node");
    rc = cbfs_cluster_point_read(repo, point, cp, err);
    if (rc == -ENOENT)
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                              "\"%s\" is not a cluster restore point of repository \"%s\"", point,
                              repo->display);
    if (rc < 0)
        return rc;
    c->point = cbfs_xstrdup(point);
    c->nodes = cbfs_xcalloc(cp->n, sizeof(ClusterNode));
    for (size_t i = 0; i < cp->n && rc == 0; i++) {
        CbfsRepo *v = cbfs_repo_node_view(repo, cp->nodes[i].node);
        CbfsTarget t;
        CbfsKv *rec = NULL;
        bool exists;
        uint64_t version = 0;
        rc = cbfs_repo_node_exists(repo, cp->nodes[i].node, &exists, err);
        if (rc == 0 && !exists)
            rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                                "node \"%s\" of cluster restore point \"%s\" is not in repository "
                                "\"%s\"",
                                cp->nodes[i].node, point, repo->display);
        if (rc == 0 && (rc = cbfs_point_resolve(v, point, &t, err)) < 0) {
            CbfsKv **recs = NULL;
            size_t nrecs = 0;
            CbfsError e;
            cbfs_error_init(&e);
            if (cbfs_repo_list_backups(v, &recs, &nrecs, &e) == 0 && nrecs == 0)
                cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                               "node \"%s\" has no backup before cluster restore point \"%s\"",
                               cp->nodes[i].node, point);
            else
                cbfs_error_prefix(err, "node \"%s\"", cp->nodes[i].node);
            cbfs_repo_free_backups(recs, nrecs);
        }
        if (rc == 0) {
            rc = cbfs_repo_read_backup(v, t.label, &rec, err);
            if (rc == 0 && cbfs_kv_get_u64(rec, "pg_version", &version) == 0 && ret_pg_major)
                *ret_pg_major = (int) (version / 10000);
            cbfs_kv_free(rec);
            cbfs_target_release(&t);
        }
        c->nodes[c->n].name = cbfs_xstrdup(cp->nodes[i].node);
        c->nodes[c->n].group = cp->nodes[i].group;
        if (strcmp(cp->nodes[i].node, cp->coordinator) == 0)
            c->coordinator = c->n;
        c->n++;
        cbfs_repo_free(v);
    }
    return rc;
}

/* Start the mount of node nd of c on its datadir: a `cbfs mount` of its
 * own, in the background (its output in DIR/.cbfs/mount-NODE.err).  The
 * pid, or -1 with err set. */
static pid_t mount_start(const ClusterMountSpec *a, const Cluster *c, const ClusterNode *nd,
                         const char *settings, CbfsError *err)
{
    char self[PATH_MAX], *opts, *log = cbfs_xasprintf("%s/mount-%s.err", c->run, nd->name);
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    int fd;
    pid_t pid;

    if (n <= 0) {
        free(log);
        cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not find the cbfs program");
        return -1;
    }
    self[n] = '\0';
    opts = cbfs_xasprintf("node=%s,target_action=pause,settings=%s,uid=%u,gid=%u%s%s%s%s%s%s",
                          nd->name, settings, (unsigned) c->uid, (unsigned) c->gid,
                          a->overlay ? ",overlay=" : "", a->overlay ? a->overlay : "",
                          a->overlay ? "/" : "", a->overlay ? nd->name : "",
                          a->opts && *a->opts ? "," : "", a->opts ? a->opts : "");
    fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    free(log);
    pid = fork();
    if (pid == 0) {
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execl(self, "cbfs", "mount", a->source, nd->datadir, "-o", opts, (char *) NULL);
        _exit(127);
    }
    if (fd >= 0)
        close(fd);
    free(opts);
    if (pid < 0)
        cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not run cbfs mount: %s",
                       strerror(errno));
    return pid;
}

/* Wait for the mount of nd started as pid: 0 once it is up; else its
 * error, its last line. */
static int mount_finish(const Cluster *c, const ClusterNode *nd, pid_t pid, CbfsError *err)
{
    char *log = cbfs_xasprintf("%s/mount-%s.err", c->run, nd->name);
    int status;

    if (waitpid(pid, &status, 0) < 0) {
        free(log);
        return cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not run cbfs mount: %s",
                              strerror(errno));
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        uint8_t *text = NULL;
        size_t len;
        char *last = NULL;
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : CBFS_EXIT_ERROR;
        if (cbfs_read_file(log, &text, &len, NULL) == 0) {
            while (len && text[len - 1] == '\n')
                text[--len] = '\0';
            last = strrchr((char *) text, '\n');
            last = last ? last + 1 : (char *) text;
            if (strncmp(last, "cbfs: ", 6) == 0)
                last += 6;
        }
        cbfs_error_set(err, EIO, code ? code : CBFS_EXIT_ERROR, "could not mount node \"%s\": %s",
                       nd->name, last && *last ? last : "the mount failed");
        free(text);
        free(log);
        return -EIO;
    }
    unlink(log);
    free(log);
    return 0;
}

/* Unmount path: gently, then lazily. */
static void unmount_path(const char *path)
{
    if (geteuid() == 0) {
        for (int i = 0; i < 100 && umount2(path, 0) < 0 && errno == EBUSY; i++)
            cbfs_sleep_ms(50);
        umount2(path, MNT_DETACH);
    } else {
        pid_t pid = fork();
        if (pid == 0) {
            int null = open("/dev/null", O_WRONLY);
            dup2(null, STDERR_FILENO);
            execlp("fusermount3", "fusermount3", "-u", "-z", path, (char *) NULL);
            _exit(127);
        }
        if (pid > 0)
            waitpid(pid, NULL, 0);
    }
}

/* The mount daemon serving mountpoint (a cbfs or mount.cbfs process with
 * it among its arguments), or 0. */
static pid_t daemon_of(const char *mountpoint)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    pid_t found = 0;

    while (d && !found && (de = readdir(d)) != NULL) {
        char *path;
        uint8_t *buf = NULL;
        size_t len;
        bool cbfs = false, mnt = false;
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        path = cbfs_xasprintf("/proc/%s/cmdline", de->d_name);
        if (cbfs_read_file(path, &buf, &len, NULL) == 0) {
            for (size_t off = 0; off < len; off += strlen((char *) buf + off) + 1) {
                const char *arg = (const char *) buf + off, *base = strrchr(arg, '/');
                if (off == 0)
                    cbfs = strcmp(base ? base + 1 : arg, "cbfs") == 0 ||
                           strcmp(base ? base + 1 : arg, "mount.cbfs") == 0;
                else if (strcmp(arg, mountpoint) == 0)
                    mnt = true;
            }
            if (cbfs && mnt)
                found = (pid_t) atoi(de->d_name);
        }
        free(buf);
        free(path);
    }
    if (d)
        closedir(d);
    return found;
}

/* Stop c's servers, unmount its nodes (and wait for their daemons to end:
 * they remove their registrations as they go), remove what cbfs made in
 * DIR. */
void cluster_teardown(Cluster *c)
{
    char *path;
    cluster_stop(c);
    for (size_t i = 0; i < c->n; i++) {
        pid_t pid = c->nodes[i].mounted ? daemon_of(c->nodes[i].datadir) : 0;
        if (c->nodes[i].mounted)
            unmount_path(c->nodes[i].datadir);
        for (int t = 0; pid > 0 && t < 200 && kill(pid, 0) == 0; t++)
            cbfs_sleep_ms(50);
        if (pid > 0 && kill(pid, 0) == 0 && daemon_of(c->nodes[i].datadir) == pid)
            kill(pid, SIGKILL); /* stuck: its mount is gone already */
        if (c->nodes[i].datadir)
            rmdir(c->nodes[i].datadir); /* only when empty: never a node's data */
    }
    path = cbfs_xasprintf("%s/cluster", c->run);
    unlink(path);
    free(path);
    cbfs_remove_tree(c->run);
}

int cluster_mount_nodes(const ClusterMountSpec *s, Cluster *c, CbfsError *err)
{
    char real[PATH_MAX], *settings = NULL;
    int rc;

    /* DIR: a directory, not mounted on; DIR/NODE: absent or empty */
    if (!realpath(s->dir, real))
        return cbfs_error_set(err, errno, CBFS_EXIT_USAGE, "could not mount on \"%s\": %s", s->dir,
                              strerror(errno));
    c->dir = cbfs_xstrdup(real);
    c->run = cbfs_xasprintf("%s/.cbfs", real);
    if (access(c->run, F_OK) == 0) {
        free(c->run);
        c->run = NULL;
        return cbfs_error_set(err, EEXIST, CBFS_EXIT_USAGE,
                              "could not mount on \"%s\": a cluster is mounted there already (run "
                              "cbfs umount \"%s\")",
                              s->dir, s->dir);
    }
    for (size_t i = 0; i < c->n; i++) {
        ClusterNode *nd = &c->nodes[i];
        nd->datadir = cbfs_xasprintf("%s/%s", real, nd->name);
        if (mkdir(nd->datadir, 0700) < 0 && (errno != EEXIST || cbfs_is_mount_point(nd->datadir))) {
            rc = cbfs_error_set(err, errno, CBFS_EXIT_USAGE, "could not mount on \"%s\": %s",
                                nd->datadir,
                                errno == EEXIST ? "it is already a mount point" : strerror(errno));
            goto undo;
        }
    }
    if (s->overlay && access(s->overlay, F_OK) < 0) {
        /* made here: the servers' user's, as each node's overlay is (it
         * holds their pg_wal) */
        if ((rc = cbfs_mkdir_p(s->overlay, 0700, err)) < 0)
            goto undo;
        if (geteuid() == 0 && chown(s->overlay, c->uid, c->gid) < 0) {
            rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not give \"%s\" to %s: %s",
                                s->overlay, c->user, strerror(errno));
            goto undo;
        }
    }
    if ((rc = cluster_prepare_run(c, &settings, err)) < 0)
        goto undo;
    /* every node at once, then wait for them all */
    {
        pid_t *pids = cbfs_xcalloc(c->n, sizeof(pid_t));
        CbfsError e;
        rc = 0;
        for (size_t i = 0; i < c->n; i++) {
            cbfs_error_init(&e);
            pids[i] = mount_start(s, c, &c->nodes[i], settings, &e);
            if (pids[i] < 0 && rc == 0) {
                *err = e;
                rc = -EIO;
            }
        }
        for (size_t i = 0; i < c->n; i++) {
            if (pids[i] <= 0)
                continue;
            cbfs_error_init(&e);
            if (mount_finish(c, &c->nodes[i], pids[i], &e) < 0) {
                if (rc == 0) {
                    *err = e;
                    rc = -EIO;
                }
            } else {
                c->nodes[i].mounted = true;
            }
        }
        free(pids);
        if (rc == 0)
            rc = cluster_save(c, err);
        if (rc < 0)
            goto undo;
    }
    if (!s->quiet) {
        printf("cluster restore point %s mounted: %zu nodes under %s\n", c->point, c->n, c->dir);
        for (size_t i = 0; i < c->n; i++)
            printf("  %-20s %s%s\n", c->nodes[i].name, c->nodes[i].datadir,
                   i == c->coordinator ? " (coordinator)" : "");
        fflush(stdout);
    }
    if (s->start && (rc = cluster_start(c, s->quiet, err)) < 0)
        goto undo;
    free(settings);
    return 0;
undo:
    cluster_teardown(c);
    free(settings);
    return rc;
}

int cmd_cluster_mount(int argc, char **argv)
{
    MountArgs a;
    ClusterMountSpec spec;
    CbfsLocation loc;
    CbfsRepo *repo = NULL;
    CbfsClusterPoint cp = {0};
    Cluster c = {0};
    CbfsError err;
    int rc = parse(argc, argv, &a), pg_major = 15;

    if (rc != 0)
        return rc < 0 ? 0 : rc;
    cbfs_error_init(&err);
    if (cbfs_location_parse(a.source, true, &loc, &err) < 0) {
        free(a.opts);
        return cmd_fail(&err);
    }
    rc = cbfs_repo_open(&loc, &repo, &err);
    if (rc == 0)
        rc = cbfs_repo_unlock(repo, &err);
    /* the mounts and the servers' restore_command get the passphrase */
    if (rc == 0 && repo->crypt)
        rc = cbfs_passphrase_export(repo->display, &err);
    if (rc == 0)
        rc = pick_user(&a, &c, &err);
    if (rc == 0)
        rc = cluster_resolve(repo, loc.point, &cp, &c, &pg_major, &err);
    cbfs_location_release(&loc);
    if (rc == 0 && a.start)
        rc = pgserver_find_bindir(pg_major, a.pg_bin, &c.bindir, &err);
    if (rc < 0)
        goto fail;
    c.repo = cbfs_xstrdup(repo->display);
    spec = (ClusterMountSpec){a.source, a.dir, a.overlay, a.opts, a.start, false};
    if ((rc = cluster_mount_nodes(&spec, &c, &err)) < 0)
        goto fail;
    rc = 0;
    goto out;
fail:
    rc = cmd_fail(&err);
out:
    free(a.opts);
    cluster_release(&c);
    cbfs_cluster_point_release(&cp);
    cbfs_repo_free(repo);
    return rc;
}

int cmd_umount_any(int argc, char **argv)
{
    Cluster c;
    CbfsError err;
    int rc;

    cbfs_error_init(&err);
    if (argc != 2 || argv[1][0] == '-')
        return cmd_umount(argc, argv);
    rc = cluster_load(argv[1], &c, &err);
    if (rc == -ENOENT)
        return cmd_umount(argc, argv);
    if (rc < 0)
        return cmd_fail(&err);
    cluster_teardown(&c);
    cluster_release(&c);
    return 0;
}
