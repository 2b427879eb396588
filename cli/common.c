/*
 * common.c - helpers every command entry point shares (also linked into
 * mount.cbfs).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cbfs/config.h"
#include "cbfs/error.h"
#include "cbfs/log.h"
#include "cbfs/ratelimit.h"
#include "cbfs/util.h"
#include "commands.h"

int cmd_fail(const CbfsError *err)
{
    cbfs_error("%s", err->msg[0] ? err->msg : "unknown error");
    return cbfs_error_exit_code(err);
}

int cmd_usage_error(const char *cmd, const char *fmt, ...)
{
    if (fmt) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        cbfs_error("%s", msg);
    }
    /* mount.cbfs is its own program; everything else is a cbfs subcommand */
    if (strcmp(cbfs_log_get_progname(), "cbfs") == 0)
        fprintf(stderr, "Try \"cbfs %s --help\" for more information.\n", cmd);
    else
        fprintf(stderr, "Try \"%s --help\" for more information.\n", cbfs_log_get_progname());
    return CBFS_EXIT_USAGE;
}

bool cmd_detach(void)
{
    pid_t pid = fork();
    int null;
    if (pid != 0) {
        if (pid > 0)
            waitpid(pid, NULL, 0); /* the middle child exits at once */
        return false;
    }
    /* the middle child: a session of its own, then gone, so the caller's
     * parent (PostgreSQL) neither waits for nor signals the grandchild */
    setsid();
    if (fork() != 0)
        _exit(0);
    null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
    signal(SIGPIPE, SIG_IGN);
    return true;
}

int cmd_open_repo(const char *spec, bool allow_point, CbfsRepo **ret, char **ret_point)
{
    CbfsLocation loc;
    CbfsError err;
    int rc;

    cbfs_error_init(&err);
    if (cbfs_location_parse(spec, allow_point, &loc, &err) < 0)
        return cmd_fail(&err);
    if (ret_point)
        *ret_point = loc.point ? cbfs_xstrdup(loc.point) : NULL;
    rc = cbfs_repo_open(&loc, ret, &err);
    cbfs_location_release(&loc);
    /* a wrong or missing passphrase is an error also where nothing is
     * decrypted (no backups yet) */
    if (rc == 0 && (rc = cbfs_repo_unlock(*ret, &err)) < 0) {
        cbfs_repo_free(*ret);
        *ret = NULL;
    }
    return rc < 0 ? cmd_fail(&err) : 0;
}

int cmd_max_rate(const char *cmd, const char *arg)
{
    static const char *const envs[] = {"CBFS_MAX_RATE", NULL};
    CbfsRateLimit *rl;
    CbfsError err;
    const char *v = arg;

    cbfs_error_init(&err);
    if (!v && cbfs_config_get("max_rate", envs, false, &v, &err) < 0)
        return cmd_fail(&err);
    if (!v)
        return 0;
    if (cbfs_ratelimit_parse(v, &rl, &err) < 0)
        return cmd_usage_error(cmd, "%s", err.msg);
    cbfs_ratelimit_set_global(rl); /* lives as long as the process */
    return 0;
}

int cmd_io_nice(const char *cmd, const char *cls)
{
    /* ioprio_set(2): no wrapper in glibc */
    enum { IOPRIO_CLASS_BE = 2, IOPRIO_CLASS_IDLE = 3, IOPRIO_WHO_PROCESS = 1 };
    long level = 0;
    int prio;
    if (strcmp(cls, "idle") == 0)
        prio = IOPRIO_CLASS_IDLE << 13;
    else if (cbfs_parse_int(cls, 0, 7, &level) == 0)
        prio = (IOPRIO_CLASS_BE << 13) | (int) level;
    else
        return cmd_usage_error(cmd, "invalid --io-nice \"%s\" (idle, or 0 to 7)", cls);
    if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) < 0)
        cbfs_warning("could not set the I/O priority: %s", strerror(errno));
    return 0;
}
