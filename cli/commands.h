/*
 * commands.h - entry points of the cbfs subcommands.  Each takes the
 * arguments after the subcommand name (argv[0] is the subcommand) and
 * returns the process exit code (enum cbfs_exit).
 */
#ifndef CBFS_COMMANDS_H
#define CBFS_COMMANDS_H

#include <stdbool.h>

#include "cbfs/error.h"
#include "cbfs/repo.h"
#include "cbfs/passphrase.h"

/* getopt value of --passphrase-file, which every command that opens a
 * repository takes: it calls cbfs_passphrase_set_file(optarg). */
#define CMD_OPT_PASSPHRASE_FILE 0x1000 /* above every command's own values */
/* getopt value of --node NAME (repo.h: nodes), on every command that
 * serves one node of a repository. */
#define CMD_OPT_NODE 0x1001

int cmd_init(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_wal_push(int argc, char **argv);
int cmd_wal_fetch(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_restore_point(int argc, char **argv);
int cmd_umount(int argc, char **argv);
int cmd_hydrate(int argc, char **argv);
/* cbfs umount MOUNTPOINT --materialize TARGET (fs/control.c) */
int control_materialize(const char *mnt, const char *target, CbfsError *err);
int cmd_verify(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_pin(int argc, char **argv);
int cmd_unpin(int argc, char **argv);
int cmd_expire(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_copy(int argc, char **argv);
int cmd_mounts(int argc, char **argv);
int cmd_key(int argc, char **argv);

/* Shared by the commands: print err as one line and return its exit code. */
int cmd_fail(const CbfsError *err);
/* Parse spec (REPO, or REPO@POINT when allow_point) and open the
 * repository: 0, or the exit code after printing the error.  *ret_point
 * (may be NULL) gets the point or NULL; caller frees. */
int cmd_open_repo(const char *spec, bool allow_point, CbfsRepo **ret, char **ret_point);
/* "try \"cbfs CMD --help\"" after a usage error; returns CBFS_EXIT_USAGE. */
int cmd_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --max-rate RATE (arg, NULL if not given), else $CBFS_MAX_RATE or
 * max_rate in the configuration: the command's bulk reads are held to it
 * (ratelimit.h).  0, or the exit code after printing the error. */
int cmd_max_rate(const char *cmd, const char *arg);

/* --io-nice CLASS: this process's (and its later threads') I/O priority,
 * idle or best effort 0-7.  0, or the exit code of a usage error. */
int cmd_io_nice(const char *cmd, const char *cls);

/* Fork a detached worker (double fork, own session, stdio on /dev/null,
 * SIGPIPE ignored): true in the worker, which must end with _exit(); false
 * in the caller, which goes on at once. */
bool cmd_detach(void);

#endif
