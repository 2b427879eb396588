/*
 * verify.c - `cbfs verify REPO[@POINT]`: test a backup the way a restore
 * would use it, without a full copy (DESIGN §7).
 *
 * Mounts the point (`cbfs mount -f`, a child) on a private work directory,
 * starts PostgreSQL on it as an unprivileged user (pgserver.h), waits until
 * recovery reaches the target and the server promotes, runs the checks of
 * dbcheck.h, then stops the server and unmounts -- on success, on failure,
 * on SIGINT/SIGTERM/SIGHUP and when PostgreSQL does not start.  Children
 * run in process groups of their own, so a terminal's ^C reaches only this
 * process, which tears down in order (server, then mount); they also get a
 * parent-death signal, so a verify killed with SIGKILL leaves no server.
 *
 * Exit codes: 0 every check passed; 5 (CBFS_EXIT_CORRUPT) the backup is bad
 * -- a check failed, a stored block failed its id check, or PostgreSQL
 * stopped during recovery; 9 (CBFS_EXIT_UNCHECKED) the check could not run
 * (no PostgreSQL binaries, no such user, the mount or the server could not
 * start for a reason that is not the backup's, interrupted); 2, 3 and 7 as
 * for every command (usage, repository, unknown point).
 *
 * --json prints one object on stdout:
 *   {"repository", "point", "backup", "target": {"kind", "value"},
 *    "result": "passed"|"failed"|"error", "exit_code", "error",
 *    "duration_seconds", "recovery_seconds", "bytes_checked",
 *    "databases": [{"name", "indexes", "tables", "bytes", "seconds",
 *                   "failures"}],
 *    "files": {"count", "bytes"},
 *    "failures": [{"check", "database", "relation", "message"}]}
 * check is "amcheck", "read", "file", "sql", "storage" or "recovery".
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cbfs/json.h"
#include "cbfs/log.h"
#include "cbfs/point.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "commands.h"
#include "dbcheck.h"
#include "metrics.h"
#include "pgserver.h"

typedef struct Failure {
    const char *check;
    char *message;
} Failure;

typedef struct Verify {
    /* options */
    const char *source;
    int jobs;
    const char **sql;
    size_t nsql;
    const char *sql_db;
    bool json, keep_running;
    const char *metrics, *user, *db_user, *pg_bin, *work_base, *node;
    char **settings;
    size_t nsettings;

    /* state */
    CbfsRepo *repo;
    CbfsTarget target;
    char *point;
    int pg_major;
    char *work, *mnt, *mount_log;
    pid_t mount_pid;
    PgServer pg;
    DbCheck checks;
    volatile sig_atomic_t stop;
    pthread_t sig_thread;
    bool sig_thread_started;
    bool reported; /* --keep-running reports before it waits */

    /* result */
    Failure *failures; /* storage and recovery failures; the checks keep theirs */
    size_t nfailures;
    double t0, recovery_seconds;
} Verify;

static void add_failure(Verify *v, const char *check, const char *message)
{
    for (size_t i = 0; i < v->nfailures; i++)
        if (strcmp(v->failures[i].message, message) == 0)
            return;
    v->failures = cbfs_xrealloc(v->failures, (v->nfailures + 1) * sizeof(*v->failures));
    v->failures[v->nfailures++] = (Failure){check, cbfs_xstrdup(message)};
}

/* ---- signals: one thread waits for them and stops the work in order ---- */

static void *signal_main(void *arg)
{
    Verify *v = arg;
    sigset_t set;
    int sig;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGUSR1) /* the end of the run */
            return NULL;
        if (!v->stop)
            v->stop = sig;
        dbcheck_cancel(&v->checks);
    }
}

static void signals_start(Verify *v)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    v->sig_thread_started = pthread_create(&v->sig_thread, NULL, signal_main, v) == 0;
}

static void signals_stop(Verify *v)
{
    if (v->sig_thread_started) {
        pthread_kill(v->sig_thread, SIGUSR1);
        pthread_join(v->sig_thread, NULL);
    }
}

static int interrupted(Verify *v, CbfsError *err)
{
    return cbfs_error_set(err, EINTR, CBFS_EXIT_UNCHECKED, "interrupted by signal %d (%s)",
                          (int) v->stop, strsignal((int) v->stop));
}

/* ---- the work directory ---- */

static int make_work(Verify *v, CbfsError *err)
{
    char *cache;
    const char *base = v->work_base ? v->work_base : "/var/tmp";

    v->work = cbfs_xasprintf("%s/cbfs-verify-XXXXXX", base);
    if (!mkdtemp(v->work)) {
        int rc = cbfs_error_set(err, errno, CBFS_EXIT_UNCHECKED,
                                "could not create a work directory in \"%s\": %s", base,
                                strerror(errno));
        free(v->work);
        v->work = NULL;
        return rc;
    }
    v->mnt = cbfs_xasprintf("%s/data", v->work);
    v->mount_log = cbfs_xasprintf("%s/mount.log", v->work);
    cache = cbfs_xasprintf("%s/cache", v->work);
    /* the server's user owns the work directory (socket, log, overlay with
     * pg_wal); this process and the mount daemon reach it as root */
    if (mkdir(v->mnt, 0700) < 0 || mkdir(cache, 0700) < 0 ||
        (geteuid() == 0 &&
         (chown(v->work, v->pg.uid, v->pg.gid) < 0 || chown(cache, v->pg.uid, v->pg.gid) < 0))) {
        int rc = cbfs_error_set(err, errno, CBFS_EXIT_UNCHECKED,
                                "could not prepare the work directory \"%s\": %s", v->work,
                                strerror(errno));
        free(cache);
        return rc;
    }
    free(cache);
    v->pg.workdir = v->work;
    return 0;
}

static void remove_work(Verify *v)
{
    if (!v->work)
        return;
    cbfs_remove_tree(v->work); /* not into a mount that could not be removed */
}

/* ---- the mount ---- */

static bool is_mounted(const char *mnt)
{
    struct stat a, b;
    char *parent = cbfs_xasprintf("%s/..", mnt);
    bool yes = stat(mnt, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
    free(parent);
    return yes;
}

/* The last line of a log file, or "" (caller frees). */
static char *last_line(const char *path)
{
    uint8_t *buf = NULL;
    size_t len;
    char *line = NULL;
    if (cbfs_read_file(path, &buf, &len, NULL) == 0) {
        while (len > 0 && buf[len - 1] == '\n')
            buf[--len] = '\0';
        char *nl = strrchr((char *) buf, '\n');
        line = cbfs_xstrdup(nl ? nl + 1 : (char *) buf);
    }
    free(buf);
    return line ? line : cbfs_xstrdup("");
}

static int start_mount(Verify *v, CbfsError *err)
{
    char self[PATH_MAX], *opts, *source;
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    int logfd;

    if (n <= 0)
        return cbfs_error_set(err, errno, CBFS_EXIT_UNCHECKED, "could not find the cbfs program");
    self[n] = '\0';
    logfd = open(v->mount_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0)
        return cbfs_error_set(err, errno, CBFS_EXIT_UNCHECKED, "could not create file \"%s\": %s",
                              v->mount_log, strerror(errno));
    opts = cbfs_xasprintf("uid=%u,gid=%u,cache_dir=%s/cache%s%s", (unsigned) v->pg.uid,
                          (unsigned) v->pg.gid, v->work, v->repo->node ? ",node=" : "",
                          v->repo->node ? v->repo->node : "");
    /* the backup resolved here, so both sides mean the same one */
    source = v->target.kind == CBFS_TARGET_IMMEDIATE
                 ? cbfs_xasprintf("%s@%s", v->repo->loc.spec, v->target.label)
                 : cbfs_xstrdup(v->source);
    v->mount_pid = fork();
    if (v->mount_pid == 0) {
        sigset_t none;
        setpgid(0, 0);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(logfd, STDOUT_FILENO);
        dup2(logfd, STDERR_FILENO);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        execl(self, "cbfs", "mount", "-f", source, v->mnt, "-o", opts, (char *) NULL);
        _exit(127);
    }
    close(logfd);
    free(opts);
    free(source);
    if (v->mount_pid < 0) {
        v->mount_pid = 0;
        return cbfs_error_set(err, errno, CBFS_EXIT_UNCHECKED, "could not start the mount: %s",
                              strerror(errno));
    }
    setpgid(v->mount_pid, v->mount_pid);
    for (;;) {
        int status;
        if (v->stop)
            return interrupted(v, err);
        if (waitpid(v->mount_pid, &status, WNOHANG) == v->mount_pid) {
            char *line = last_line(v->mount_log);
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : CBFS_EXIT_UNCHECKED;
            const char *msg = strncmp(line, "cbfs: ", 6) == 0 ? line + 6 : line;
            v->mount_pid = 0;
            /* the mount's own code tells a bad backup (5), an unknown point
             * (7) or a repository that cannot be read (3) */
            if (code != CBFS_EXIT_CORRUPT && code != CBFS_EXIT_NOT_FOUND && code != CBFS_EXIT_REPO)
                code = CBFS_EXIT_UNCHECKED;
            cbfs_error_set(err, EIO, code, "could not mount the backup: %s",
                           *msg ? msg : "the mount stopped");
            free(line);
            return -EIO;
        }
        if (is_mounted(v->mnt))
            return 0;
        cbfs_sleep_ms(20);
    }
}

static void stop_mount(Verify *v)
{
    if (!v->mnt)
        return;
    if (is_mounted(v->mnt) || v->mount_pid > 0) {
        if (geteuid() == 0) {
            for (int i = 0; i < 100 && umount2(v->mnt, 0) < 0 && errno == EBUSY; i++)
                cbfs_sleep_ms(50);
            if (is_mounted(v->mnt))
                umount2(v->mnt, MNT_DETACH);
        } else {
            pid_t pid = fork();
            if (pid == 0) {
                int null = open("/dev/null", O_WRONLY);
                dup2(null, STDERR_FILENO);
                execlp("fusermount3", "fusermount3", "-u", "-z", v->mnt, (char *) NULL);
                _exit(127);
            }
            if (pid > 0)
                waitpid(pid, NULL, 0);
        }
    }
    if (v->mount_pid > 0) {
        int i;
        for (i = 0; i < 200 && waitpid(v->mount_pid, NULL, WNOHANG) == 0; i++)
            cbfs_sleep_ms(50);
        if (i == 200) {
            kill(v->mount_pid, SIGKILL);
            waitpid(v->mount_pid, NULL, 0);
        }
        v->mount_pid = 0;
    }
}

/* Read failures the mount logged: a stored block that failed its check. */
static void collect_mount_failures(Verify *v)
{
    uint8_t *buf = NULL;
    size_t len;
    if (!v->mount_log || cbfs_read_file(v->mount_log, &buf, &len, NULL) < 0)
        return;
    for (char *line = (char *) buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strstr(line, " failed: "))
            add_failure(v, "storage", strncmp(line, "cbfs: ", 6) == 0 ? line + 6 : line);
        line = nl ? nl + 1 : NULL;
    }
    free(buf);
}

/* ---- the server ---- */

static int start_server(Verify *v, CbfsError *err)
{
    int rc;
    double t0 = cbfs_now();

    v->pg.datadir = v->mnt;
    v->pg.port = pgserver_free_port();
    if ((rc = pgserver_start(&v->pg, err)) < 0)
        return rc;
    switch (pgserver_wait_ready(&v->pg, v->db_user, &v->stop, err)) {
    case PGSERVER_READY:
        v->recovery_seconds = cbfs_now() - t0;
        return 0;
    case PGSERVER_INTERRUPTED:
        return interrupted(v, err);
    case PGSERVER_EXITED:
        break;
    }
    if (err->code) /* e.g. the role to connect as does not exist */
        return -EIO;
    {
        char *line;
        bool started;
        pgserver_log_verdict(&v->pg, &line, &started);
        /* a bad block under the server shows in the mount's log */
        collect_mount_failures(v);
        if (started || v->nfailures > 0) {
            char *msg = cbfs_xasprintf("PostgreSQL stopped during recovery: %s",
                                       *line ? line : "see its log");
            add_failure(v, "recovery", msg);
            free(msg);
            rc = cbfs_error_set(err, EIO, CBFS_EXIT_CORRUPT,
                                "the backup could not be recovered: %s", *line ? line : "");
        } else {
            rc = cbfs_error_set(err, EIO, CBFS_EXIT_UNCHECKED, "PostgreSQL did not start: %s",
                                *line ? line : "see its log");
        }
        free(line);
    }
    return rc;
}

/* ---- the report ---- */

static const char *target_kind(const CbfsTarget *t)
{
    static const char *const kinds[] = {"immediate", "name", "time", "lsn"};
    return kinds[t->kind];
}

static uint64_t bytes_checked(const Verify *v)
{
    uint64_t n = v->checks.file_bytes;
    for (size_t i = 0; i < v->checks.ndbs; i++)
        n += v->checks.dbs[i].bytes;
    return n;
}

static size_t failure_count(const Verify *v)
{
    return v->nfailures + v->checks.nfailures;
}

static void report_json(const Verify *v, int code, const CbfsError *err)
{
    CbfsJson j;
    const DbCheck *c = &v->checks;

    cbfs_json_init(&j);
    cbfs_json_begin_object(&j);
    cbfs_json_key(&j, "repository");
    cbfs_json_string(&j, v->repo ? v->repo->display : NULL);
    cbfs_json_key(&j, "point");
    cbfs_json_string(&j, v->point);
    cbfs_json_key(&j, "backup");
    cbfs_json_string(&j, v->target.label);
    cbfs_json_key(&j, "target");
    if (v->target.label) {
        cbfs_json_begin_object(&j);
        cbfs_json_key(&j, "kind");
        cbfs_json_string(&j, target_kind(&v->target));
        cbfs_json_key(&j, "value");
        cbfs_json_string(&j, v->target.value);
        cbfs_json_end_object(&j);
    } else {
        cbfs_json_string(&j, NULL);
    }
    cbfs_json_key(&j, "result");
    cbfs_json_string(&j, code == 0 ? "passed" : code == CBFS_EXIT_CORRUPT ? "failed" : "error");
    cbfs_json_key(&j, "exit_code");
    cbfs_json_int(&j, code);
    cbfs_json_key(&j, "error");
    cbfs_json_string(&j, code != 0 && err->msg[0] ? err->msg : NULL);
    cbfs_json_key(&j, "duration_seconds");
    cbfs_json_double(&j, cbfs_now() - v->t0);
    cbfs_json_key(&j, "recovery_seconds");
    cbfs_json_double(&j, v->recovery_seconds);
    cbfs_json_key(&j, "bytes_checked");
    cbfs_json_uint(&j, bytes_checked(v));
    cbfs_json_key(&j, "databases");
    cbfs_json_begin_array(&j);
    for (size_t i = 0; i < c->ndbs; i++) {
        cbfs_json_begin_object(&j);
        cbfs_json_key(&j, "name");
        cbfs_json_string(&j, c->dbs[i].name);
        cbfs_json_key(&j, "indexes");
        cbfs_json_uint(&j, c->dbs[i].indexes);
        cbfs_json_key(&j, "tables");
        cbfs_json_uint(&j, c->dbs[i].tables);
        cbfs_json_key(&j, "bytes");
        cbfs_json_uint(&j, c->dbs[i].bytes);
        cbfs_json_key(&j, "seconds");
        cbfs_json_double(&j, c->dbs[i].seconds);
        cbfs_json_key(&j, "failures");
        cbfs_json_uint(&j, c->dbs[i].failures);
        cbfs_json_end_object(&j);
    }
    cbfs_json_end_array(&j);
    cbfs_json_key(&j, "files");
    cbfs_json_begin_object(&j);
    cbfs_json_key(&j, "count");
    cbfs_json_uint(&j, c->files_read);
    cbfs_json_key(&j, "bytes");
    cbfs_json_uint(&j, c->file_bytes);
    cbfs_json_end_object(&j);
    cbfs_json_key(&j, "failures");
    cbfs_json_begin_array(&j);
    for (size_t i = 0; i < failure_count(v); i++) {
        bool own = i < v->nfailures;
        const DbcFailure *f = own ? NULL : &c->failures[i - v->nfailures];
        cbfs_json_begin_object(&j);
        cbfs_json_key(&j, "check");
        cbfs_json_string(&j, own ? v->failures[i].check : f->check);
        cbfs_json_key(&j, "database");
        cbfs_json_string(&j, own ? NULL : f->database);
        cbfs_json_key(&j, "relation");
        cbfs_json_string(&j, own ? NULL : f->relation);
        cbfs_json_key(&j, "message");
        cbfs_json_string(&j, own ? v->failures[i].message : f->message);
        cbfs_json_end_object(&j);
    }
    cbfs_json_end_array(&j);
    cbfs_json_end_object(&j);
    printf("%s\n", j.out.data);
    cbfs_json_release(&j);
}

static void report_text(const Verify *v, int code)
{
    const DbCheck *c = &v->checks;
    char size[32];
    uint64_t indexes = 0, tables = 0;

    if (!v->target.label)
        return;
    printf("backup \"%s\"", v->target.label);
    if (v->target.kind != CBFS_TARGET_IMMEDIATE)
        printf(", recovered to %s %s", target_kind(&v->target), v->target.value);
    if (v->recovery_seconds > 0)
        printf(" (server ready in %.1f s)", v->recovery_seconds);
    printf("\n");
    for (size_t i = 0; i < c->ndbs; i++) {
        cbfs_format_size(c->dbs[i].bytes, size, sizeof(size));
        printf("  database \"%s\": %llu indexes, %llu tables, %s read in %.1f s, %llu failures\n",
               c->dbs[i].name, (unsigned long long) c->dbs[i].indexes,
               (unsigned long long) c->dbs[i].tables, size, c->dbs[i].seconds,
               (unsigned long long) c->dbs[i].failures);
        indexes += c->dbs[i].indexes;
        tables += c->dbs[i].tables;
    }
    if (c->files_read > 0) {
        cbfs_format_size(c->file_bytes, size, sizeof(size));
        printf("  other files: %llu read, %s\n", (unsigned long long) c->files_read, size);
    }
    for (size_t i = 0; i < v->nfailures; i++)
        printf("  FAILED (%s): %s\n", v->failures[i].check, v->failures[i].message);
    for (size_t i = 0; i < c->nfailures; i++) {
        const DbcFailure *f = &c->failures[i];
        if (f->database)
            printf("  FAILED (%s): database \"%s\", %s: %s\n", f->check, f->database, f->relation,
                   f->message);
        else
            printf("  FAILED (%s): %s: %s\n", f->check, f->relation, f->message);
    }
    cbfs_format_size(bytes_checked(v), size, sizeof(size));
    printf("%s: %zu databases, %llu indexes, %llu tables, %s checked in %.1f s\n",
           code == 0                   ? "passed"
           : code == CBFS_EXIT_CORRUPT ? "FAILED"
                                       : "not verified",
           c->ndbs, (unsigned long long) indexes, (unsigned long long) tables, size,
           cbfs_now() - v->t0);
}

/* ---- the command ---- */

static void usage(void)
{
    printf("Usage: cbfs verify REPO[@POINT] [OPTIONS]\n"
           "\n"
           "Test a backup without copying it: mount POINT (default latest) on a private\n"
           "directory, start PostgreSQL on it, wait until recovery reaches the point, then\n"
           "run amcheck (bt_index_check with heapallindexed) on every B-tree index of every\n"
           "database, read every table and every other file, and run the given SQL checks.\n"
           "The server is stopped and the mount removed in every case.\n"
           "\n"
           "Options:\n"
           "  -j, --jobs=N          checks run at once (default 2)\n"
           "      --sql=FILE        run FILE; an error, or a false or null boolean in any\n"
           "                        result, fails (repeatable)\n"
           "      --sql-database=DB database for --sql files (default postgres)\n"
           "      --json            print the result as JSON (documented in docs/design.md)\n"
           "      --metrics-file=F  write Prometheus metrics to F (textfile collector)\n"
           "      --keep-running    leave the server up after the checks until interrupted\n"
           "      --user=USER       run PostgreSQL as USER when run as root (default postgres)\n"
           "      --db-user=ROLE    superuser role to connect as (default: that user's name)\n"
           "      --pg-bin=DIR      PostgreSQL's bin directory (default: found by version)\n"
           "      --set=NAME=VALUE  a server setting for the run, e.g. shared_buffers=1GB\n"
           "      --node=NAME       a node of a repository that holds several\n"
           "      --work-dir=DIR    where the private directory goes (default /var/tmp); it\n"
           "                        holds what PostgreSQL writes during the run\n"
           "      --passphrase-file=FILE\n"
           "                        passphrase of an encrypted repository (mode 0600); the\n"
           "                        mount and the server's restore_command get it (or\n"
           "                        CBFS_PASSPHRASE's, or a prompt's) in CBFS_PASSPHRASE\n"
           "\n"
           "Exit status: 0 passed; 5 the backup is bad; 9 the check could not run;\n"
           "2 bad usage; 3 repository unreadable; 7 no such point.\n");
}

static int parse_args(Verify *v, int argc, char **argv)
{
    enum {
        O_SQL = 256,
        O_SQL_DB,
        O_JSON,
        O_METRICS,
        O_KEEP,
        O_USER,
        O_DB_USER,
        O_PG_BIN,
        O_SET,
        O_WORK
    };
    static const struct option opts[] = {
        {"jobs", required_argument, NULL, 'j'},
        {"sql", required_argument, NULL, O_SQL},
        {"sql-database", required_argument, NULL, O_SQL_DB},
        {"json", no_argument, NULL, O_JSON},
        {"metrics-file", required_argument, NULL, O_METRICS},
        {"keep-running", no_argument, NULL, O_KEEP},
        {"user", required_argument, NULL, O_USER},
        {"db-user", required_argument, NULL, O_DB_USER},
        {"pg-bin", required_argument, NULL, O_PG_BIN},
        {"set", required_argument, NULL, O_SET},
        {"work-dir", required_argument, NULL, O_WORK},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"node", required_argument, NULL, CMD_OPT_NODE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o;
    long n;

    optind = 1;
    while ((o = getopt_long(argc, argv, "j:h", opts, NULL)) != -1) {
        switch (o) {
        case 'j':
            if (cbfs_parse_int(optarg, 1, 64, &n) < 0)
                return cmd_usage_error("verify", "invalid --jobs \"%s\" (1 to 64)", optarg);
            v->jobs = (int) n;
            break;
        case O_SQL:
            if (access(optarg, R_OK) < 0)
                return cmd_usage_error("verify", "could not read SQL file \"%s\": %s", optarg,
                                       strerror(errno));
            v->sql = cbfs_xrealloc(v->sql, (v->nsql + 1) * sizeof(*v->sql));
            v->sql[v->nsql++] = optarg;
            break;
        case O_SQL_DB:
            v->sql_db = optarg;
            break;
        case O_JSON:
            v->json = true;
            break;
        case O_METRICS:
            v->metrics = optarg;
            break;
        case O_KEEP:
            v->keep_running = true;
            break;
        case O_USER:
            v->user = optarg;
            break;
        case O_DB_USER:
            v->db_user = optarg;
            break;
        case O_PG_BIN:
            v->pg_bin = optarg;
            break;
        case O_SET:
            if (!strchr(optarg, '=') || optarg[0] == '=')
                return cmd_usage_error("verify", "invalid --set \"%s\" (NAME=VALUE)", optarg);
            v->settings = cbfs_xrealloc(v->settings, (v->nsettings + 2) * sizeof(*v->settings));
            v->settings[v->nsettings++] = optarg;
            v->settings[v->nsettings] = NULL;
            break;
        case O_WORK:
            v->work_base = optarg;
            break;
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case CMD_OPT_NODE:
            v->node = optarg;
            break;
        case 'h':
            usage();
            return -1;
        default:
            return cmd_usage_error("verify", NULL);
        }
    }
    if (optind >= argc)
        return cmd_usage_error("verify", "no repository given");
    if (optind + 1 < argc)
        return cmd_usage_error("verify", "too many arguments");
    v->source = argv[optind];
    return 0;
}

/* The user PostgreSQL runs as: yourself, or (as root) --user / postgres. */
static int pick_user(Verify *v, CbfsError *err)
{
    struct passwd *pw;
    if (geteuid() != 0) {
        pw = getpwuid(geteuid());
        if (!pw)
            return cbfs_error_set(err, ENOENT, CBFS_EXIT_UNCHECKED, "who are you (uid %u)?",
                                  (unsigned) geteuid());
        if (v->user && strcmp(v->user, pw->pw_name) != 0)
            return cbfs_error_set(err, EPERM, CBFS_EXIT_UNCHECKED,
                                  "--user needs root: PostgreSQL runs as \"%s\"", pw->pw_name);
    } else {
        const char *name = v->user ? v->user : "postgres";
        pw = getpwnam(name);
        if (!pw)
            return cbfs_error_set(err, ENOENT, CBFS_EXIT_UNCHECKED,
                                  "user \"%s\" does not exist: give the user PostgreSQL runs as "
                                  "with --user",
                                  name);
        if (pw->pw_uid == 0)
            return cbfs_error_set(err, EPERM, CBFS_EXIT_UNCHECKED,
                                  "PostgreSQL cannot run as root: give another user with --user");
    }
    v->pg.user = cbfs_xstrdup(pw->pw_name);
    v->pg.uid = pw->pw_uid;
    v->pg.gid = pw->pw_gid;
    if (!v->db_user)
        v->db_user = v->pg.user;
    return 0;
}

/* Repository, point, backup record: what to mount and which PostgreSQL. */
static int resolve(Verify *v, CbfsError *err)
{
    CbfsLocation loc;
    CbfsKv *rec = NULL;
    uint64_t version = 0;
    int rc;

    if ((rc = cbfs_location_parse(v->source, true, &loc, err)) < 0)
        return rc;
    v->point = loc.point ? cbfs_xstrdup(loc.point) : NULL;
    rc = cbfs_repo_open(&loc, &v->repo, err);
    cbfs_location_release(&loc);
    if (rc == 0)
        rc = cbfs_repo_select_node(v->repo, v->node, err);
    /* an encrypted repository's passphrase reaches the mount and the
     * server's restore_command (as its user) through the environment */
    if (rc == 0 && v->repo->crypt && (rc = cbfs_passphrase_export(v->repo->display, err)) < 0)
        cbfs_error_prefix(err, "could not open repository \"%s\"", v->repo->display);
    if (rc == 0)
        rc = cbfs_repo_unlock(v->repo, err);
    if (rc == 0)
        rc = cbfs_point_resolve(v->repo, v->point, &v->target, err);
    if (rc == 0)
        rc = cbfs_repo_read_backup(v->repo, v->target.label, &rec, err);
    if (rc == 0 && (cbfs_kv_get_u64(rec, "pg_version", &version) < 0 || version < 100000))
        rc =
            cbfs_error_set(err, EINVAL, CBFS_EXIT_CORRUPT,
                           "backup \"%s\" does not record its PostgreSQL version", v->target.label);
    v->pg_major = (int) (version / 10000);
    cbfs_kv_free(rec);
    return rc;
}

static int verdict(const Verify *v, int rc, const CbfsError *err)
{
    int code = rc < 0 ? cbfs_error_exit_code(err) : failure_count(v) > 0 ? CBFS_EXIT_CORRUPT : 0;
    /* a bad block found while a run was cut short still condemns the backup */
    if (code == CBFS_EXIT_UNCHECKED && v->nfailures > 0 && !v->stop)
        code = CBFS_EXIT_CORRUPT;
    return code;
}

static void report(const Verify *v, int code, const CbfsError *err)
{
    if (v->json)
        report_json(v, code, err);
    else
        report_text(v, code);
    fflush(stdout);
}

static void wait_for_signal(Verify *v)
{
    if (!v->json)
        printf("server running: psql -h %s -p %d -U %s postgres  (interrupt to stop)\n", v->work,
               v->pg.port, v->db_user);
    fflush(stdout);
    while (!v->stop && v->pg.pid > 0 && waitpid(v->pg.pid, NULL, WNOHANG) == 0)
        cbfs_sleep_ms(200);
}

static int run(Verify *v, CbfsError *err)
{
    int rc;

    if ((rc = pick_user(v, err)) < 0 || (rc = resolve(v, err)) < 0 ||
        (rc = pgserver_find_bindir(v->pg_major, v->pg_bin, &v->pg.bindir, err)) < 0 ||
        (rc = make_work(v, err)) < 0 || (rc = start_mount(v, err)) < 0 ||
        (rc = start_server(v, err)) < 0)
        return rc;
    v->checks = (DbCheck){
        .host = v->work,
        .port = v->pg.port,
        .user = v->db_user,
        .jobs = v->jobs,
        .sql_files = v->sql,
        .nsql = v->nsql,
        .sql_database = v->sql_db,
        .datadir = v->mnt,
        .stop = &v->stop,
    };
    rc = dbcheck_run(&v->checks, err);
    if (rc == 0 && v->stop)
        rc = interrupted(v, err);
    if (rc == 0 && v->keep_running) {
        /* the verdict first, then the server for a look around */
        collect_mount_failures(v);
        report(v, verdict(v, 0, err), err);
        v->reported = true;
        wait_for_signal(v);
    }
    return rc;
}

int cmd_verify(int argc, char **argv)
{
    Verify v = {.jobs = 2, .sql_db = "postgres"};
    CbfsError err;
    int rc, code;

    cbfs_error_init(&err);
    if ((rc = parse_args(&v, argc, argv)) != 0) {
        free(v.sql);
        free(v.settings);
        return rc < 0 ? 0 : rc;
    }
    v.t0 = cbfs_now();
    v.pg.settings = v.settings;
    signals_start(&v);
    rc = run(&v, &err);
    pgserver_stop(&v.pg);
    stop_mount(&v);
    collect_mount_failures(&v);
    remove_work(&v);
    signals_stop(&v);

    code = verdict(&v, rc, &err);
    if (!v.reported)
        report(&v, code, &err);
    if (code == CBFS_EXIT_CORRUPT && rc < 0)
        cbfs_error("backup \"%s\" failed verification: %s", v.target.label, err.msg);
    else if (code == CBFS_EXIT_CORRUPT)
        cbfs_error("backup \"%s\" failed verification: %zu failures", v.target.label,
                   failure_count(&v));
    else if (code != 0 && v.target.label)
        cbfs_error("could not verify backup \"%s\": %s", v.target.label, err.msg);
    else if (code != 0)
        cbfs_error("%s", err.msg);
    if (v.metrics) {
        CbfsError merr;
        CmdMetrics m = {
            .job = "verify",
            .repository = v.repo ? v.repo->display : v.source,
            .success = code == 0,
            .duration = cbfs_now() - v.t0,
            .bytes_checked = bytes_checked(&v),
            .failures = failure_count(&v),
        };
        cbfs_error_init(&merr);
        if (cmd_metrics_write(v.metrics, &m, &merr) < 0 && code == 0)
            code = cmd_fail(&merr);
    }

    dbcheck_release(&v.checks);
    for (size_t i = 0; i < v.nfailures; i++)
        free(v.failures[i].message);
    free(v.failures);
    free(v.pg.bindir);
    free(v.pg.user);
    free(v.pg.log);
    free(v.work);
    free(v.mnt);
    free(v.mount_log);
    free(v.point);
    free(v.sql);
    free(v.settings);
    cbfs_target_release(&v.target);
    cbfs_repo_free(v.repo);
    return code;
}
