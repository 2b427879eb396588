/*
 * cluster_restore.c - `cbfs restore REPO@POINT DIR --cluster [--start]
 * [--jobs N] [--node-dir NODE=DIR]...`: a full copy of every node of a
 * cluster restore point, all nodes at once.
 *
 * Every node is checked first, as for the mount (cluster_resolve).  Each
 * node is then restored by a `cbfs restore` of its own, all of them in
 * parallel, into DIR/NODE (or its --node-dir), its tablespaces into
 * <that directory>.tablespaces/, recovering to the point and pausing there
 * with Citus's background work off (cluster_run.h).  With --start the
 * servers are started and the cluster brought back as for the mount; they
 * run on after the command, stopped with pg_ctl or `cbfs umount DIR`.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cbfs/log.h"
#include "cbfs/passphrase.h"
#include "cbfs/point.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cluster.h"
#include "commands.h"
#include "pgserver.h"

typedef struct RestoreArgs {
    const char *source, *dir, *user, *db_user, *pg_bin;
    long jobs;
    bool start;
    char **node_dirs; /* NODE=DIR */
    size_t nnode_dirs;
} RestoreArgs;

static void usage(void)
{
    printf("Usage: cbfs restore REPO@POINT DIR --cluster [--start] [--jobs N]\n"
           "                    [--node-dir NODE=DIR]...\n"
           "\n"
           "Restore every node of the cluster restore point POINT, all at once, into\n"
           "DIR/NODE, each a data directory that recovers to the point and pauses there.\n"
           "\n"
           "Options:\n"
           "      --start           start every node (sockets and logs in DIR/.cbfs), wait\n"
           "                        until all have reached the point, resume them all,\n"
           "                        point the cluster's metadata at the new nodes and print\n"
           "                        the coordinator's connection string\n"
           "  -j, --jobs N          download threads of each node's restore (default 2)\n"
           "      --node-dir NODE=DIR  restore NODE into DIR instead (repeatable)\n"
           "      --user USER       the user the servers run as, when run as root\n"
           "                        (default postgres)\n"
           "      --db-user ROLE    the superuser role cbfs connects as (default: the user)\n"
           "      --pg-bin DIR      PostgreSQL's bin directory (default: found by version)\n"
           "      --passphrase-file FILE  an encrypted repository's passphrase\n");
}

static int parse(int argc, char **argv, RestoreArgs *a)
{
    const char *pos[2];
    int npos = 0;

    memset(a, 0, sizeof(*a));
    a->jobs = 2;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
#define VALUE(opt)                                                                                 \
    (strcmp(argv[i], opt) == 0                                                                     \
         ? (i + 1 < argc ? (v = argv[++i]) : NULL)                                                 \
         : (strncmp(argv[i], opt "=", strlen(opt) + 1) == 0 ? (v = argv[i] + strlen(opt) + 1)      \
                                                            : NULL))
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage();
            return -1;
        } else if (strcmp(argv[i], "--cluster") == 0) {
            continue;
        } else if (strcmp(argv[i], "--start") == 0) {
            a->start = true;
        } else if (VALUE("--jobs") || VALUE("-j")) {
            if (cbfs_parse_int(v, 1, 256, &a->jobs) < 0)
                return cmd_usage_error("restore", "invalid value for --jobs: \"%s\"", v);
        } else if (VALUE("--node-dir")) {
            if (!strchr(v, '=') || strchr(v, '=') == v || strchr(v, '=')[1] != '/')
                return cmd_usage_error("restore",
                                       "invalid node directory \"%s\": expected "
                                       "NODE=/absolute/dir",
                                       v);
            a->node_dirs = cbfs_xrealloc(a->node_dirs, (a->nnode_dirs + 1) * sizeof(char *));
            a->node_dirs[a->nnode_dirs++] = (char *) v;
        } else if (VALUE("--user")) {
            a->user = v;
        } else if (VALUE("--db-user")) {
            a->db_user = v;
        } else if (VALUE("--pg-bin")) {
            a->pg_bin = v;
        } else if (VALUE("--passphrase-file")) {
            cbfs_passphrase_set_file(v);
        } else if (argv[i][0] == '-') {
            return cmd_usage_error("restore", "unknown option \"%s\" with --cluster", argv[i]);
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            return cmd_usage_error("restore", "too many arguments");
        }
#undef VALUE
    }
    if (npos < 2)
        return cmd_usage_error("restore", "usage: cbfs restore REPO@POINT DIR --cluster");
    a->source = pos[0];
    a->dir = pos[1];
    return 0;
}

static int pick_user(const RestoreArgs *a, Cluster *c, CbfsError *err)
{
    struct passwd *pw = a->user          ? getpwnam(a->user)
                        : geteuid() == 0 ? getpwnam("postgres")
                                         : getpwuid(geteuid());
    if (!pw)
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_USAGE,
                              "user \"%s\" does not exist: give the user PostgreSQL runs as with "
                              "--user",
                              a->user ? a->user : "postgres");
    if (pw->pw_uid == 0 && a->start)
        return cbfs_error_set(err, EPERM, CBFS_EXIT_USAGE,
                              "PostgreSQL cannot run as root: give another user with --user");
    c->user = cbfs_xstrdup(pw->pw_name);
    c->uid = pw->pw_uid;
    c->gid = pw->pw_gid;
    c->db_user = cbfs_xstrdup(a->db_user ? a->db_user : pw->pw_name);
    return 0;
}

/* Each node's data directory: its --node-dir, else DIR/NODE. */
static int node_dirs(const RestoreArgs *a, Cluster *c, CbfsError *err)
{
    for (size_t k = 0; k < a->nnode_dirs; k++) {
        const char *eq = strchr(a->node_dirs[k], '=');
        bool known = false;
        for (size_t i = 0; i < c->n; i++)
            if (strlen(c->nodes[i].name) == (size_t) (eq - a->node_dirs[k]) &&
                strncmp(c->nodes[i].name, a->node_dirs[k], (size_t) (eq - a->node_dirs[k])) == 0) {
                free(c->nodes[i].datadir);
                c->nodes[i].datadir = cbfs_xstrdup(eq + 1);
                known = true;
            }
        if (!known)
            return cbfs_error_set(err, ENOENT, CBFS_EXIT_USAGE,
                                  "node \"%.*s\" of --node-dir is not a node of cluster restore "
                                  "point \"%s\"",
                                  (int) (eq - a->node_dirs[k]), a->node_dirs[k], c->point);
    }
    for (size_t i = 0; i < c->n; i++)
        if (!c->nodes[i].datadir)
            c->nodes[i].datadir = cbfs_xasprintf("%s/%s", c->dir, c->nodes[i].name);
    return 0;
}

/* Start `cbfs restore` of node nd in the background; its output to a log. */
static pid_t start_restore(const RestoreArgs *a, const Cluster *c, const ClusterNode *nd,
                           const char *settings, CbfsError *err)
{
    char self[PATH_MAX], jobs[16], *log = cbfs_xasprintf("%s/restore-%s.log", c->run, nd->name);
    char *tsdir = cbfs_xasprintf("%s.tablespaces", nd->datadir);
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    pid_t pid;

    snprintf(jobs, sizeof(jobs), "%ld", a->jobs);
    if (n <= 0 || fd < 0) {
        cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not start the restore of node \"%s\"",
                       nd->name);
        free(log);
        free(tsdir);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    self[n] = '\0';
    pid = fork();
    if (pid == 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        execl(self, "cbfs", "restore", a->source, nd->datadir, "--node", nd->name,
              "--target-action", "pause", "--jobs", jobs, "--settings", settings,
              "--tablespace-dir", tsdir, (char *) NULL);
        _exit(127);
    }
    close(fd);
    free(log);
    free(tsdir);
    if (pid < 0)
        cbfs_error_set(err, errno, CBFS_EXIT_ERROR,
                       "could not start the restore of node \"%s\": %s", nd->name, strerror(errno));
    return pid;
}

/* The last line a node's restore printed, without "cbfs: ". */
static char *last_line(const Cluster *c, const ClusterNode *nd)
{
    char *log = cbfs_xasprintf("%s/restore-%s.log", c->run, nd->name), *line;
    uint8_t *text = NULL;
    size_t len = 0;
    if (cbfs_read_file(log, &text, &len, NULL) == 0) {
        while (len && text[len - 1] == '\n')
            text[--len] = '\0';
        line = strrchr((char *) text, '\n');
        line = line ? line + 1 : (char *) text;
        if (strncmp(line, "cbfs: ", 6) == 0)
            line += 6;
        line = cbfs_xstrdup(line);
    } else {
        line = cbfs_xstrdup("");
    }
    free(text);
    free(log);
    return line;
}

int cmd_cluster_restore(int argc, char **argv)
{
    RestoreArgs a;
    CbfsLocation loc;
    CbfsRepo *repo = NULL;
    CbfsClusterPoint cp = {0};
    Cluster c = {0};
    CbfsError err;
    char real[PATH_MAX], *settings = NULL;
    pid_t *pids = NULL;
    int rc = parse(argc, argv, &a), pg_major = 15, failed = 0;
    double t0 = cbfs_now();

    if (rc != 0)
        return rc < 0 ? 0 : rc;
    cbfs_error_init(&err);
    if (cbfs_location_parse(a.source, true, &loc, &err) < 0) {
        free(a.node_dirs);
        return cmd_fail(&err);
    }
    rc = cbfs_repo_open(&loc, &repo, &err);
    if (rc == 0)
        rc = cbfs_repo_unlock(repo, &err);
    if (rc == 0 && repo->crypt)
        rc = cbfs_passphrase_export(repo->display, &err);
    if (rc == 0)
        rc = pick_user(&a, &c, &err);
    if (rc == 0)
        rc = cluster_resolve(repo, loc.point, &cp, &c, &pg_major, &err);
    cbfs_location_release(&loc);
    if (rc < 0)
        goto fail;
    if (a.start && (rc = pgserver_find_bindir(pg_major, a.pg_bin, &c.bindir, &err)) < 0)
        goto fail;
    if (mkdir(a.dir, 0755) < 0 && errno != EEXIST) {
        rc = cbfs_error_set(&err, errno, CBFS_EXIT_TARGET, "could not restore into \"%s\": %s",
                            a.dir, strerror(errno));
        goto fail;
    }
    if (!realpath(a.dir, real)) {
        rc = cbfs_error_set(&err, errno, CBFS_EXIT_TARGET, "could not restore into \"%s\": %s",
                            a.dir, strerror(errno));
        goto fail;
    }
    c.dir = cbfs_xstrdup(real);
    c.run = cbfs_xasprintf("%s/.cbfs", real);
    c.repo = cbfs_xstrdup(repo->display);
    if (access(c.run, F_OK) == 0) {
        rc = cbfs_error_set(&err, EEXIST, CBFS_EXIT_TARGET,
                            "could not restore into \"%s\": a cluster was brought back there "
                            "already",
                            a.dir);
        goto fail;
    }
    if ((rc = node_dirs(&a, &c, &err)) < 0 || (rc = cluster_prepare_run(&c, &settings, &err)) < 0)
        goto fail;
    /* every node at once; each checks its own target directory */
    pids = cbfs_xcalloc(c.n, sizeof(pid_t));
    for (size_t i = 0; i < c.n; i++)
        pids[i] = start_restore(&a, &c, &c.nodes[i], settings, &err);
    for (size_t i = 0; i < c.n; i++) {
        int status;
        if (pids[i] <= 0) {
            failed++;
            continue;
        }
        if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            char *line = last_line(&c, &c.nodes[i]);
            int code =
                WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : CBFS_EXIT_ERROR;
            if (!failed)
                cbfs_error_set(&err, EIO, code, "could not restore node \"%s\": %s",
                               c.nodes[i].name, *line ? line : "the restore failed");
            free(line);
            failed++;
        }
    }
    if (failed) {
        rc = -EIO;
        goto fail;
    }
    if ((rc = cluster_save(&c, &err)) < 0)
        goto fail;
    printf("cluster restore point %s restored: %zu nodes in %.1f s\n", c.point, c.n,
           cbfs_now() - t0);
    for (size_t i = 0; i < c.n; i++)
        printf("  %-20s %s%s\n", c.nodes[i].name, c.nodes[i].datadir,
               i == c.coordinator ? " (coordinator)" : "");
    fflush(stdout);
    if (a.start && (rc = cluster_start(&c, false, &err)) < 0)
        goto fail;
    rc = 0;
    goto out;
fail:
    rc = cmd_fail(&err);
out:
    free(pids);
    free(settings);
    free(a.node_dirs);
    cluster_release(&c);
    cbfs_cluster_point_release(&cp);
    cbfs_repo_free(repo);
    return rc;
}
