/*
 * init.c - `cbfs init REPO [--block-size SIZE] [--compress-level N]
 * [--encrypt [--passphrase-file FILE]]`.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>

#include "cbfs/passphrase.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "commands.h"

int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {
        {"block-size", required_argument, NULL, 'b'},
        {"compress-level", required_argument, NULL, 'c'},
        {"encrypt", no_argument, NULL, 'e'},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t block_size = 65536;
    long level = 3;
    bool encrypt = false, pass_file = false;
    char *passphrase = NULL;
    CbfsLocation loc;
    CbfsError err;
    int c, rc;

    cbfs_error_init(&err);
    while ((c = getopt_long(argc, argv, "b:c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (cbfs_parse_size(optarg, &block_size) < 0 || block_size < 8192 ||
                block_size > (1u << 20) || block_size % 8192 != 0)
                return cmd_usage_error("init",
                                       "invalid block size \"%s\": must be a multiple of 8k "
                                       "from 8k to 1M",
                                       optarg);
            break;
        case 'c':
            if (cbfs_parse_int(optarg, 1, 19, &level) < 0)
                return cmd_usage_error("init", "invalid compression level \"%s\": must be 1 to 19",
                                       optarg);
            break;
        case 'e':
            encrypt = true;
            break;
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            pass_file = true;
            break;
        case 'h':
            printf("Usage: cbfs init REPO [OPTIONS]\n"
                   "\n"
                   "Create a repository: a local directory (/path, file:/path) or an S3\n"
                   "location (s3://bucket/prefix, bucket:/prefix; the bucket must exist).\n"
                   "\n"
                   "Options:\n"
                   "  -b, --block-size SIZE     deduplication block size, a multiple of 8k\n"
                   "                            from 8k to 1M (default 64k)\n"
                   "  -c, --compress-level N    zstd level 1-19 (default 3)\n"
                   "      --encrypt             encrypt everything stored (AES-256-GCM) under a\n"
                   "                            key wrapped with a passphrase: from\n"
                   "                            --passphrase-file, CBFS_PASSPHRASE,\n"
                   "                            CBFS_PASSPHRASE_FILE, or asked twice on the\n"
                   "                            terminal\n"
                   "      --passphrase-file FILE  the passphrase (the file's first line; mode\n"
                   "                            0600 or stricter)\n"
                   "  -h, --help                show this help\n");
            return 0;
        default:
            return cmd_usage_error("init", NULL);
        }
    }
    if (optind + 1 != argc)
        return cmd_usage_error("init",
                               optind >= argc ? "no repository given" : "too many arguments");
    /* a passphrase given for a repository that would not use it is a mistake */
    if (pass_file && !encrypt)
        return cmd_usage_error("init", "--passphrase-file needs --encrypt");
    if (cbfs_location_parse(argv[optind], false, &loc, &err) < 0)
        return cmd_fail(&err);
    if (encrypt) {
        /* the passphrase first: nothing is created without one */
        rc = cbfs_passphrase_read(CBFS_PASSPHRASE_CURRENT, loc.spec, true, &passphrase, &err);
        if (rc == -ENOENT)
            cbfs_error_set(&err, ENOENT, CBFS_EXIT_USAGE,
                           "--encrypt needs a passphrase (set CBFS_PASSPHRASE or "
                           "CBFS_PASSPHRASE_FILE, or use --passphrase-file)");
        if (rc < 0) {
            cbfs_error_prefix(&err, "could not create repository \"%s\"", loc.spec);
            cbfs_location_release(&loc);
            return cmd_fail(&err);
        }
        rc = cbfs_repo_init_encrypted(&loc, (uint32_t) block_size, (int) level, passphrase, NULL,
                                      &err);
        cbfs_passphrase_free(passphrase);
    } else {
        rc = cbfs_repo_init(&loc, (uint32_t) block_size, (int) level, &err);
    }
    if (rc == 0)
        printf("initialized repository \"%s\" (block size %llu, zstd level %ld%s)\n", loc.spec,
               (unsigned long long) block_size, level, encrypt ? ", encrypted" : "");
    cbfs_location_release(&loc);
    return rc < 0 ? cmd_fail(&err) : 0;
}
