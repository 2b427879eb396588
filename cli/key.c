/*
 * key.c - `cbfs key change REPO`: wrap the repository's master key under a
 * new passphrase.  Only the config object changes (the one object ever
 * replaced, docs/design.md §3.1); no block, pack or other object is
 * rewritten, because they are encrypted under keys derived from the master
 * key, which stays.  The old passphrase stops working at once, also for
 * archive_command and restore_command lines that still give it.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cbfs/passphrase.h"
#include "cbfs/repo.h"
#include "cbfs/lock.h"
#include "cbfs/log.h"
#include "commands.h"

static void usage(void)
{
    printf("Usage: cbfs key change REPO [OPTIONS]\n"
           "\n"
           "Change the passphrase of an encrypted repository: its master key is wrapped\n"
           "again under the new passphrase; no data is rewritten.  The current passphrase\n"
           "comes from --passphrase-file, CBFS_PASSPHRASE, CBFS_PASSPHRASE_FILE or a\n"
           "prompt; the new one from --new-passphrase-file, CBFS_NEW_PASSPHRASE or a\n"
           "prompt (asked twice).\n"
           "\n"
           "Options:\n"
           "      --passphrase-file FILE      the current passphrase (mode 0600)\n"
           "      --new-passphrase-file FILE  the new passphrase (mode 0600)\n"
           "  -h, --help                      show this help\n");
}

int cmd_key(int argc, char **argv)
{
    static const struct option opts[] = {
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"new-passphrase-file", required_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    CbfsLocation loc;
    CbfsRepo *repo = NULL;
    CbfsHolder lock;
    bool locked = false;
    CbfsError err;
    char *fresh = NULL;
    int c, rc;

    cbfs_error_init(&err);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage();
        return 0;
    }
    if (argc < 2)
        return cmd_usage_error("key", "no key command given (change)");
    if (strcmp(argv[1], "change") != 0)
        return cmd_usage_error("key", "unknown key command \"%s\" (change)", argv[1]);
    argc--;
    argv++;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case 'N':
            cbfs_passphrase_set_new_file(optarg);
            break;
        case 'h':
            usage();
            return 0;
        default:
            return cmd_usage_error("key", NULL);
        }
    }
    if (optind + 1 != argc)
        return cmd_usage_error("key",
                               optind >= argc ? "no repository given" : "too many arguments");
    if (cbfs_location_parse(argv[optind], false, &loc, &err) < 0)
        return cmd_fail(&err);
    rc = cbfs_repo_open(&loc, &repo, &err);
    cbfs_location_release(&loc);
    if (rc == 0 && !repo->crypt)
        rc = cbfs_error_set(&err, EINVAL, CBFS_EXIT_USAGE,
                            "could not change the passphrase of repository \"%s\": it is not "
                            "encrypted",
                            repo->display);
    /* the current passphrase first: a wrong one is refused before asking for a new one */
    if (rc == 0)
        rc = cbfs_repo_unlock(repo, &err);
    /* the repository lock: two key changes must not race on the config object */
    if (rc == 0 && (rc = cbfs_lock_acquire(repo, "key change", &lock, &err)) == 0)
        locked = true;
    if (rc == 0) {
        rc = cbfs_passphrase_read(CBFS_PASSPHRASE_NEW, repo->display, true, &fresh, &err);
        if (rc < 0)
            cbfs_error_prefix(&err, "could not change the passphrase of repository \"%s\"",
                              repo->display);
    }
    if (rc == 0)
        rc = cbfs_repo_change_passphrase(repo, fresh, NULL, &err);
    if (rc == 0)
        printf("changed the passphrase of repository \"%s\"\n", repo->display);
    if (locked)
        cbfs_lock_release(repo, &lock);
    cbfs_passphrase_free(fresh);
    cbfs_repo_free(repo);
    return rc < 0 ? cmd_fail(&err) : 0;
}
