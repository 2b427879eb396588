/*
 * pgserver.c - a throwaway PostgreSQL server (see pgserver.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cbfs/util.h"
#include "pgserver.h"
#include "pq.h"

static bool has_postgres(const char *dir)
{
    char *p = cbfs_xasprintf("%s/postgres", dir);
    bool ok = access(p, X_OK) == 0;
    free(p);
    return ok;
}

int pgserver_find_bindir(int major, const char *given, char **ret, CbfsError *err)
{
    char *cand[2];
    FILE *f;

    if (given) {
        if (!has_postgres(given))
            return cbfs_error_set(err, ENOENT, CBFS_EXIT_UNCHECKED,
                                  "no postgres executable in \"%s\"", given);
        *ret = cbfs_xstrdup(given);
        return 0;
    }
    cand[0] = cbfs_xasprintf("/usr/lib/postgresql/%d/bin", major);
    cand[1] = cbfs_xasprintf("/usr/pgsql-%d/bin", major);
    for (int i = 0; i < 2; i++) {
        if (has_postgres(cand[i])) {
            *ret = cand[i];
            free(cand[1 - i]);
            return 0;
        }
    }
    free(cand[0]);
    free(cand[1]);
    /* pg_config in PATH, if it is the right version */
    f = popen("pg_config --version --bindir 2>/dev/null", "r");
    if (f) {
        char version[128] = "", bindir[4096] = "";
        int v = 0;
        if (fgets(version, sizeof(version), f) && fgets(bindir, sizeof(bindir), f) &&
            sscanf(version, "PostgreSQL %d", &v) == 1 && v == major) {
            bindir[strcspn(bindir, "\n")] = '\0';
            if (has_postgres(bindir)) {
                pclose(f);
                *ret = cbfs_xstrdup(bindir);
                return 0;
            }
        }
        pclose(f);
    }
    return cbfs_error_set(err, ENOENT, CBFS_EXIT_UNCHECKED,
                          "could not find PostgreSQL %d: give its bin directory with --pg-bin",
                          major);
}

int pgserver_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = 0;

    if (fd >= 0 && bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *) &a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port > 0 ? port : 54329;
}

static int write_owned(const PgServer *s, const char *name, const char *text, CbfsError *err)
{
    char *path = cbfs_xasprintf("%s/%s", s->workdir, name);
    int rc = cbfs_write_file_atomic(path, text, strlen(text), 0600, err);
    if (rc == 0 && geteuid() == 0 && chown(path, s->uid, s->gid) < 0)
        rc = cbfs_error_set(err, errno, CBFS_EXIT_UNCHECKED, "could not give \"%s\" to %s: %s",
                            path, s->user, strerror(errno));
    free(path);
    return rc;
}

/* The child: become the user, then exec the postmaster. */
static void exec_postmaster(PgServer *s, char **argv, int logfd)
{
    sigset_t none;

    setpgid(0, 0);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    dup2(logfd, STDOUT_FILENO);
    dup2(logfd, STDERR_FILENO);
    if (geteuid() == 0 && (setgroups(0, NULL) < 0 || initgroups(s->user, s->gid) < 0 ||
                           setgid(s->gid) < 0 || setuid(s->uid) < 0)) {
        dprintf(STDERR_FILENO, "cbfs: could not become user \"%s\": %s\n", s->user,
                strerror(errno));
        _exit(127);
    }
    /* set after the change of user, which clears it */
    if (!s->detach) {
        prctl(PR_SET_PDEATHSIG, SIGQUIT);
        if (getppid() == 1)
            _exit(127);
    }
    execv(argv[0], argv);
    dprintf(STDERR_FILENO, "cbfs: could not run \"%s\": %s\n", argv[0], strerror(errno));
    _exit(127);
}

int pgserver_start(PgServer *s, CbfsError *err)
{
    char *argv[64];
    char *own[32];
    int argc = 0, nown = 0, logfd, rc;
    struct stat st;
    char *conf;

    if ((rc = write_owned(s, "pg_hba.conf", "local all all trust\n", err)) < 0 ||
        (rc = write_owned(s, "pg_ident.conf", "", err)) < 0 ||
        (rc = write_owned(s, "empty.conf", "", err)) < 0)
        return rc;
    free(s->log);
    s->log = cbfs_xasprintf("%s/%s.log", s->workdir, s->name ? s->name : "postgres");
    logfd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd >= 0 && geteuid() == 0)
        (void) !fchown(logfd, s->uid, s->gid);
    if (logfd < 0)
        return cbfs_error_set(err, errno, CBFS_EXIT_UNCHECKED, "could not create file \"%s\": %s",
                              s->log, strerror(errno));

#define ARG(x)        (argv[argc++] = (x))
#define OWN(fmt, ...) (argv[argc++] = own[nown++] = cbfs_xasprintf(fmt, __VA_ARGS__))
    OWN("%s/postgres", s->bindir);
    ARG("-D");
    ARG(s->datadir);
    ARG("-p");
    OWN("%d", s->port);
    ARG("-c");
    ARG("listen_addresses=");
    ARG("-c");
    OWN("unix_socket_directories=%s", s->workdir);
    ARG("-c");
    OWN("hba_file=%s/pg_hba.conf", s->workdir);
    ARG("-c");
    OWN("ident_file=%s/pg_ident.conf", s->workdir);
    /* Debian keeps postgresql.conf in /etc: then run with none */
    conf = cbfs_xasprintf("%s/postgresql.conf", s->datadir);
    if (stat(conf, &st) < 0) {
        ARG("-c");
        OWN("config_file=%s/empty.conf", s->workdir);
    }
    free(conf);
    ARG("-c");
    ARG("logging_collector=off");
    ARG("-c");
    ARG("log_destination=stderr");
    ARG("-c");
    ARG("archive_mode=off");
    ARG("-c");
    OWN("cluster_name=cbfs-%s", s->name ? s->name : "verify");
    for (char **set = s->settings; set && *set && argc < 60; set++) {
        ARG("-c");
        ARG(*set);
    }
    argv[argc] = NULL;
#undef ARG
#undef OWN

    if (s->detach) {
        /* a child that starts the postmaster in a session of its own and
         * tells its pid, then goes: the postmaster is nobody's child */
        int fds[2];
        pid_t mid;
        if (pipe2(fds, O_CLOEXEC) < 0 || (mid = fork()) < 0) {
            rc = -errno;
        } else if (mid == 0) {
            pid_t pm;
            setsid();
            pm = fork();
            if (pm == 0)
                exec_postmaster(s, argv, logfd);
            (void) !write(fds[1], &pm, sizeof(pm));
            _exit(0);
        } else {
            pid_t pm = -1;
            close(fds[1]);
            if (read(fds[0], &pm, sizeof(pm)) != sizeof(pm))
                pm = -1;
            close(fds[0]);
            waitpid(mid, NULL, 0);
            s->pid = pm;
            rc = pm > 0 ? 0 : -ECHILD;
        }
        if (rc < 0)
            s->pid = 0;
    } else {
        s->pid = fork();
        if (s->pid == 0)
            exec_postmaster(s, argv, logfd);
        rc = s->pid < 0 ? -errno : 0;
        if (s->pid < 0)
            s->pid = 0;
        else
            setpgid(s->pid, s->pid); /* also here: no race with a signal to the group */
    }
    close(logfd);
    for (int i = 0; i < nown; i++)
        free(own[i]);
    if (rc < 0)
        return cbfs_error_set(err, -rc, CBFS_EXIT_UNCHECKED, "could not start PostgreSQL: %s",
                              strerror(-rc));
    return 0;
}

bool pgserver_is_ours(const PgServer *s)
{
    char *link, path[PATH_MAX], comm[64] = "", real[PATH_MAX];
    uint8_t *buf = NULL;
    size_t len;
    ssize_t n;
    bool yes;

    if (s->pid <= 0)
        return false;
    link = cbfs_xasprintf("/proc/%d/comm", (int) s->pid);
    if (cbfs_read_file(link, &buf, &len, NULL) == 0)
        snprintf(comm, sizeof(comm), "%.*s", (int) strcspn((char *) buf, "\n"), (char *) buf);
    free(buf);
    free(link);
    link = cbfs_xasprintf("/proc/%d/cwd", (int) s->pid);
    n = readlink(link, path, sizeof(path) - 1);
    free(link);
    if (n < 0)
        return false;
    path[n] = '\0';
    yes =
        strcmp(comm, "postgres") == 0 &&
        (strcmp(path, s->datadir) == 0 || (realpath(s->datadir, real) && strcmp(path, real) == 0));
    return yes;
}

static bool postmaster_gone(PgServer *s)
{
    int status;
    if (s->pid > 0 && s->detach) {
        /* not our child: gone once the process is, or is another one */
        if (kill(s->pid, 0) < 0 && errno == ESRCH)
            s->pid = 0;
    } else if (s->pid > 0 && waitpid(s->pid, &status, WNOHANG) == s->pid) {
        s->pid = 0;
    }
    return s->pid == 0;
}

enum pgserver_state pgserver_wait_ready(PgServer *s, const char *dbuser,
                                        volatile sig_atomic_t *stop, CbfsError *err)
{
    char port[16];
    const char *keys[] = {"host", "port", "user", "dbname", "connect_timeout", NULL};
    const char *vals[] = {s->workdir, port, dbuser, "postgres", "10", NULL};
    PGconn *conn = NULL;

    snprintf(port, sizeof(port), "%d", s->port);
    if (pq_load(err) < 0)
        return PGSERVER_EXITED;
    for (;; cbfs_sleep_ms(50)) {
        if (*stop) {
            if (conn)
                pq.finish(conn);
            return PGSERVER_INTERRUPTED;
        }
        if (postmaster_gone(s)) {
            if (conn)
                pq.finish(conn);
            return PGSERVER_EXITED;
        }
        if (!conn) {
            if (pq.pingParams(keys, vals, 0) != PQPING_OK)
                continue;
            conn = pq.connectdbParams(keys, vals, 0);
            if (pq.status(conn) != CONNECTION_OK) {
                /* e.g. the role does not exist: waiting will not help */
                char *msg = pq_first_line(pq.errorMessage(conn));
                cbfs_error_set(err, EACCES, CBFS_EXIT_UNCHECKED,
                               "could not connect to the verification server as \"%s\": %s", dbuser,
                               msg);
                free(msg);
                pq.finish(conn);
                return PGSERVER_EXITED;
            }
        }
        {
            PGresult *res =
                pq.execParams(conn, "SELECT pg_is_in_recovery()", 0, NULL, NULL, NULL, NULL, 0);
            bool ready = pq.resultStatus(res) == PGRES_TUPLES_OK && pq.ntuples(res) == 1 &&
                         strcmp(pq.getvalue(res, 0, 0), "f") == 0;
            bool broken = pq.status(conn) != CONNECTION_OK;
            pq.clear(res);
            if (ready) {
                pq.finish(conn);
                return PGSERVER_READY;
            }
            if (broken) {
                pq.finish(conn);
                conn = NULL;
            }
        }
    }
}

void pgserver_stop(PgServer *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGQUIT);
    for (int i = 0; i < 300 && !postmaster_gone(s); i++) /* 15 s */
        cbfs_sleep_ms(50);
    if (s->pid > 0) {
        kill(-s->pid, SIGKILL);
        if (s->detach)
            for (int i = 0; i < 100 && !postmaster_gone(s); i++)
                cbfs_sleep_ms(50);
        else
            waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

void pgserver_stop_fast(PgServer *s, int grace_s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGINT);
    for (int i = 0; i < grace_s * 20 && !postmaster_gone(s); i++)
        cbfs_sleep_ms(50);
    pgserver_stop(s);
}

void pgserver_log_verdict(const PgServer *s, char **ret_line, bool *ret_recovery_started)
{
    uint8_t *buf = NULL;
    size_t len;
    char *last = NULL;

    *ret_recovery_started = false;
    if (s->log && cbfs_read_file(s->log, &buf, &len, NULL) == 0) {
        for (char *line = (char *) buf; line && *line;) {
            char *nl = strchr(line, '\n'), *tag;
            if (nl)
                *nl = '\0';
            if (strstr(line, "database system was "))
                *ret_recovery_started = true;
            if ((tag = strstr(line, "FATAL:  ")) || (tag = strstr(line, "PANIC:  "))) {
                free(last);
                last = cbfs_xstrdup(tag);
            }
            line = nl ? nl + 1 : NULL;
        }
    }
    /* the control file is read before recovery starts, and is the backup's */
    if (last && strstr(last, "control file"))
        *ret_recovery_started = true;
    free(buf);
    *ret_line = last ? last : cbfs_xstrdup("");
}
