/*
 * pin.c - `cbfs pin REPO@LABEL` and `cbfs unpin REPO@LABEL`.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/pin.h"
#include "commands.h"

static int pin_command(int argc, char **argv, bool pin)
{
    const char *cmd = pin ? "pin" : "unpin";
    CbfsRepo *repo;
    char *label = NULL;
    const char *node = NULL;
    CbfsError err;
    int rc;

    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        if (pin)
            printf("Usage: cbfs pin REPO@LABEL [--node NAME] [--passphrase-file FILE]\n"
                   "\n"
                   "Keep a backup whatever the retention policy says: cbfs expire never\n"
                   "removes a pinned backup (nor the WAL from its start on).\n");
        else
            printf("Usage: cbfs unpin REPO@LABEL [--node NAME] [--passphrase-file FILE]\n"
                   "\n"
                   "Let the retention policy decide about a pinned backup again.\n");
        return 0;
    }
    /* REPO@LABEL, then the options (--passphrase-file FILE, --node NAME) */
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--passphrase-file") == 0)
            cbfs_passphrase_set_file(argv[i + 1]);
        else if (strcmp(argv[i], "--node") == 0)
            node = argv[i + 1];
        else
            return cmd_usage_error(cmd, "unknown option \"%s\"", argv[i]);
    }
    if (argc < 2 || argc % 2 != 0)
        return cmd_usage_error(cmd, argc < 2 ? "no backup given" : "too many arguments");
    if ((rc = cmd_open_repo(argv[1], true, &repo, &label)) != 0)
        return rc;
    cbfs_error_init(&err);
    if (cbfs_repo_select_node(repo, node, &err) < 0) {
        rc = cmd_fail(&err);
        goto out;
    }
    if (pin) { /* unpin must work for a backup already gone */
        char *resolved;
        if (cbfs_repo_resolve(repo, label, &resolved, &err) < 0) {
            rc = cmd_fail(&err);
            goto out;
        }
        free(label);
        label = resolved;
    }
    if (pin) {
        rc = cbfs_pin_add(repo, label, &err);
        if (rc == -EEXIST)
            printf("backup %s is already pinned\n", label);
        else if (rc == 0)
            printf("backup %s pinned\n", label);
    } else {
        if (!label || strcmp(label, "latest") == 0) {
            rc = cbfs_error_set(&err, EINVAL, CBFS_EXIT_USAGE, "unpin needs a backup label");
            goto fail;
        }
        rc = cbfs_pin_remove(repo, label, &err);
        if (rc == -ENOENT)
            rc = cbfs_error_set(&err, ENOENT, CBFS_EXIT_NOT_FOUND,
                                "backup \"%s\" is not pinned in repository \"%s\"", label,
                                repo->display);
        else if (rc == 0)
            printf("backup %s unpinned\n", label);
    }
fail:
    rc = (rc < 0 && rc != -EEXIST) ? cmd_fail(&err) : 0;
out:
    free(label);
    cbfs_repo_free(repo);
    return rc;
}

int cmd_pin(int argc, char **argv)
{
    return pin_command(argc, argv, true);
}

int cmd_unpin(int argc, char **argv)
{
    return pin_command(argc, argv, false);
}
