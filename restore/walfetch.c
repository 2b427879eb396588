/*
 * walfetch.c - `cbfs wal-fetch REPO NAME DEST`, PostgreSQL's restore_command.
 * A file the repository does not have is a quiet exit 1 (PostgreSQL probes
 * for files that do not exist); a damaged one is a loud exit 5.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cbfs/repo.h"
#include "cbfs/walarchive.h"
#include "commands.h"

int cmd_wal_fetch(int argc, char **argv)
{
    CbfsLocation loc;
    CbfsRepo *repo;
    CbfsError err;
    int rc;

    cbfs_error_init(&err);
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("Usage: cbfs wal-fetch REPO NAME DEST\n"
               "\n"
               "Restore WAL file NAME from the repository into DEST; for restore_command:\n"
               "  restore_command = 'cbfs wal-fetch REPO %%f %%p'\n"
               "Exits 1 without a message when the repository does not have NAME.\n");
        return 0;
    }
    if (argc != 4)
        return cmd_usage_error("wal-fetch", argc < 4 ? "missing arguments" : "too many arguments");
    if (cbfs_location_parse(argv[1], false, &loc, &err) < 0)
        return cmd_fail(&err);
    rc = cbfs_repo_open(&loc, &repo, &err);
    cbfs_location_release(&loc);
    if (rc < 0)
        return cmd_fail(&err);
    rc = cbfs_wal_fetch(repo, argv[2], argv[3], &err);
    cbfs_repo_free(repo);
    if (rc == -ENOENT)
        return CBFS_EXIT_ERROR;
    return rc < 0 ? cmd_fail(&err) : 0;
}
