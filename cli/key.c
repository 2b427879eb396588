/*
 * key.c - `cbfs key change REPO`: wrap the repository's master key under a
 * new passphrase.  Only the config object changes (the one object ever
 * replaced, docs/design.md §3.1); no block, pack or other object is
 * rewritten, because they are encrypted under keys derived from the master
 * key, which stays.  The old passphrase stops working at once, also for
 * archive_command and restore_command lines that still give it.
 *
 * `cbfs key forget [REPO]` drops cached keys (keycache.h) now.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cbfs/crypt.h"
#include "cbfs/passphrase.h"
#include "cbfs/repo.h"
#include "cbfs/lock.h"
#include "cbfs/log.h"
#include "commands.h"

static void usage(void)
{
    printf("Usage: cbfs key change REPO [OPTIONS]\n"
           "       cbfs key forget [REPO]\n"
           "\n"
           "change: change the passphrase of an encrypted repository: its master key is\n"
           "wrapped again under the new passphrase; no data is rewritten.  The current\n"
           "passphrase comes from --passphrase-file, CBFS_PASSPHRASE, CBFS_PASSPHRASE_FILE\n"
           "or a prompt; the new one from --new-passphrase-file, CBFS_NEW_PASSPHRASE or a\n"
           "prompt (asked twice).\n"
           "\n"
           "forget: drop your cached keys of REPO (or of every repository) from the\n"
           "kernel keyring now, instead of when their time to live ends.\n"
           "\n"
           "Key cache: a command that derives a repository's key from its passphrase\n"
           "keeps it in your kernel keyring for CBFS_KEY_CACHE_TTL seconds (default 300,\n"
           "renewed by every use; 0 turns the cache off), so that the next commands with\n"
           "the same passphrase skip the slow derivation.\n"
           "\n"
           "Options:\n"
           "      --passphrase-file FILE      the current passphrase (mode 0600)\n"
           "      --new-passphrase-file FILE  the new passphrase (mode 0600)\n"
           "  -h, --help                      show this help\n");
}

/* `cbfs key forget [REPO]`: the repository's id names its entries; its
 * config is read, never unlocked. */
static int key_forget(int argc, char **argv)
{
    CbfsLocation loc;
    CbfsRepo *repo;
    CbfsError err;
    int n;

    cbfs_error_init(&err);
    if (argc > 3)
        return cmd_usage_error("key", "too many arguments");
    if (argc == 3 && argv[2][0] == '-')
        return cmd_usage_error("key", "unknown option \"%s\"", argv[2]);
    if (argc < 3) {
        n = cbfs_crypt_cache_forget(NULL);
        printf("forgot %d cached key%s\n", n, n == 1 ? "" : "s");
        return 0;
    }
    if (cbfs_location_parse(argv[2], false, &loc, &err) < 0)
        return cmd_fail(&err);
    n = cbfs_repo_open(&loc, &repo, &err);
    cbfs_location_release(&loc);
    if (n < 0)
        return cmd_fail(&err);
    n = cbfs_crypt_cache_forget(repo->id);
    printf("forgot %d cached key%s of repository \"%s\"\n", n, n == 1 ? "" : "s", repo->display);
    cbfs_repo_free(repo);
    return 0;
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
        return cmd_usage_error("key", "no key command given (change, forget)");
    if (strcmp(argv[1], "forget") == 0)
        return key_forget(argc, argv);
    if (strcmp(argv[1], "change") != 0)
        return cmd_usage_error("key", "unknown key command \"%s\" (change, forget)", argv[1]);
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
