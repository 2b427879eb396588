/*
 * common.c - helpers every command entry point shares (also linked into
 * mount.cbfs).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cbfs/error.h"
#include "cbfs/log.h"
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
