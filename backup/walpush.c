/*
 * walpush.c - `cbfs wal-push REPO PATH`, PostgreSQL's archive_command.
 * Exit 0 only once the file is durably in the repository (DESIGN §5).
 */
#include <stdio.h>
#include <string.h>

#include "cbfs/repo.h"
#include "cbfs/walarchive.h"
#include "commands.h"

int cmd_wal_push(int argc, char **argv)
{
    CbfsLocation loc;
    CbfsRepo *repo;
    CbfsError err;
    int rc;

    cbfs_error_init(&err);
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("Usage: cbfs wal-push REPO PATH\n"
               "\n"
               "Store the WAL file at PATH in the repository; for archive_command:\n"
               "  archive_command = 'cbfs wal-push REPO %%p'\n"
               "Exits 0 only once the file is durably stored (or an identical copy was).\n");
        return 0;
    }
    if (argc != 3)
        return cmd_usage_error("wal-push", argc < 3 ? "missing arguments" : "too many arguments");
    if (cbfs_location_parse(argv[1], false, &loc, &err) < 0)
        return cmd_fail(&err);
    rc = cbfs_repo_open(&loc, &repo, &err);
    cbfs_location_release(&loc);
    if (rc < 0)
        return cmd_fail(&err);
    rc = cbfs_wal_push_file(repo, argv[2], &err);
    cbfs_repo_free(repo);
    return rc < 0 ? cmd_fail(&err) : 0;
}
