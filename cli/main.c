/*
 * main.c - the cbfs executable: git-style subcommands.
 */
#include <stdio.h>
#include <string.h>

#include "cbfs/error.h"
#include "cbfs/log.h"
#include "cluster.h"
#include "commands.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *summary;
} commands[] = {
    {"init", cmd_init, "create a repository"},
    {"backup", cmd_backup, "back up a running PostgreSQL cluster"},
    {"wal-push", cmd_wal_push, "store a WAL file (archive_command)"},
    {"wal-fetch", cmd_wal_fetch, "restore a WAL file (restore_command)"},
    {"list", cmd_list, "list the backups in a repository"},
    {"info", cmd_info, "show one backup"},
    {"restore-point", cmd_restore_point, "create a named point to recover to"},
    {"restore", cmd_restore, "restore a backup into a new data directory"},
    {"mount", cmd_mount, "mount a backup as a data directory (as mount.cbfs)"},
    {"umount", cmd_umount_any, "unmount a mounted backup (or cluster)"},
    {"hydrate", cmd_hydrate, "copy a mounted backup into its overlay, in the background"},
    {"verify", cmd_verify, "test a backup: start PostgreSQL on it and run amcheck"},
    {"check", cmd_check, "check the repository's objects, WAL and (optionally) data"},
    {"pin", cmd_pin, "keep a backup whatever the retention policy says"},
    {"unpin", cmd_unpin, "let the retention policy decide about a backup again"},
    {"expire", cmd_expire, "remove backups and WAL outside the retention policy"},
    {"gc", cmd_gc, "free the space no backup uses (packs, manifests)"},
    {"copy", cmd_copy, "copy backups, WAL and points into a second repository"},
    {"mounts", cmd_mounts, "list the mounts registered in a repository; prune dead ones"},
    {"key", cmd_key, "change the passphrase of an encrypted repository; forget cached keys"},
};

static void usage(FILE *out)
{
    fprintf(out, "Usage: cbfs COMMAND [ARGS...]\n\nPostgreSQL physical backups that you can "
                 "mount.\n\nCommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun \"cbfs COMMAND --help\" for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CBFS_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("cbfs %s\n", CBFS_VERSION);
        return 0;
    }
    /* a whole cluster: what spans the nodes (cluster/) */
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--cluster") == 0) {
            if (strcmp(argv[1], "mount") == 0)
                return cmd_cluster_mount(argc - 1, argv + 1);
            if (strcmp(argv[1], "restore") == 0)
                return cmd_cluster_restore(argc - 1, argv + 1);
            if (strcmp(argv[1], "verify") == 0)
                return cmd_cluster_verify(argc - 1, argv + 1);
        }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    cbfs_error("unknown command \"%s\"", argv[1]);
    fprintf(stderr, "Try \"cbfs --help\" for more information.\n");
    return CBFS_EXIT_USAGE;
}
