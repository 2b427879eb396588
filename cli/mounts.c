/*
 * mounts.c - `cbfs mounts LOCATION`: the mounts (and copies) registered in
 * a repository (lock.h: mounts/<label>.<r>), and --prune of those that
 * died.
 *
 * A registration of this host is alive while its process is (pid and start
 * time); one of another host cannot be looked at, so it counts as alive
 * (expire keeps its backup) until --prune removes it, which asks first
 * (or takes --force): the operator says that host's mount is gone.  Dead
 * ones of this host are removed by --prune without asking.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cbfs/json.h"
#include "cbfs/lock.h"
#include "cbfs/log.h"
#include "cbfs/util.h"
#include "commands.h"

enum state { ALIVE, DEAD, OTHER_HOST };

static const char *const state_names[] = {"alive", "dead", "other host"};

static enum state state_of(const CbfsHolder *h, const char *host)
{
    if (strcmp(h->host, host) != 0)
        return OTHER_HOST;
    return cbfs_holder_alive(h, 0, time(NULL)) ? ALIVE : DEAD;
}

static void usage(void)
{
    printf("Usage: cbfs mounts LOCATION [--node NAME] [--prune [--force]] [--json]\n"
           "                  [--passphrase-file FILE]\n"
           "\n"
           "List the mounts of the repository's backups (and the copies reading them)\n"
           "that registered in it: backup, host, process, mount point, since when, and\n"
           "whether it is alive (this host: its process runs; another host's cannot be\n"
           "looked at and counts as alive).  expire keeps a backup while a registration\n"
           "of it lives.\n"
           "\n"
           "Options:\n"
           "  --node NAME   a node of a repository that holds several\n"
           "  --prune       remove the registrations of dead mounts: those of this host\n"
           "                whose process is gone, and, after a confirmation on the\n"
           "                terminal, those of other hosts (say they died)\n"
           "  --force       with --prune: remove other hosts' registrations without asking\n"
           "  --json        print the list as JSON: [{\"backup\", \"command\", \"host\", \"pid\",\n"
           "                \"mountpoint\", \"since\", \"state\", \"key\"}]\n");
}

/* Ask on the terminal; false without one. */
static bool confirm(size_t n)
{
    char line[16];
    FILE *tty;
    bool yes = false;
    if (!isatty(STDIN_FILENO) || !(tty = fopen("/dev/tty", "r+")))
        return false;
    fprintf(tty,
            "remove %zu registration%s of mounts on other hosts (they count as alive "
            "until removed)? [y/N] ",
            n, n == 1 ? "" : "s");
    fflush(tty);
    if (fgets(line, sizeof(line), tty))
        yes = line[0] == 'y' || line[0] == 'Y';
    fclose(tty);
    return yes;
}

int cmd_mounts(int argc, char **argv)
{
    static const struct option opts[] = {
        {"node", required_argument, NULL, CMD_OPT_NODE},
        {"prune", no_argument, NULL, 'p'},
        {"force", no_argument, NULL, 'f'},
        {"json", no_argument, NULL, 'J'},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *node = NULL;
    bool prune = false, force = false, json = false;
    CbfsRepo *repo = NULL;
    CbfsHolder *hs = NULL;
    size_t n = 0, others = 0, removed = 0;
    char host[128] = "";
    CbfsError err;
    int c, rc;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case CMD_OPT_NODE:
            node = optarg;
            break;
        case 'p':
            prune = true;
            break;
        case 'f':
            force = true;
            break;
        case 'J':
            json = true;
            break;
        case CMD_OPT_PASSPHRASE_FILE:
            cbfs_passphrase_set_file(optarg);
            break;
        case 'h':
            usage();
            return 0;
        default:
            return cmd_usage_error("mounts", NULL);
        }
    }
    if (optind + 1 != argc)
        return cmd_usage_error("mounts",
                               optind >= argc ? "no repository given" : "too many arguments");
    if (force && !prune)
        return cmd_usage_error("mounts", "--force goes with --prune");
    if ((rc = cmd_open_repo(argv[optind], false, &repo, NULL)) != 0)
        return rc;
    cbfs_error_init(&err);
    if (cbfs_repo_select_node(repo, node, &err) < 0 || cbfs_mount_list(repo, &hs, &n, &err) < 0)
        goto fail;
    if (gethostname(host, sizeof(host) - 1) < 0)
        host[0] = '\0';

    if (prune) {
        for (size_t i = 0; i < n; i++)
            others += state_of(&hs[i], host) == OTHER_HOST;
        if (others && !force && !confirm(others)) {
            cbfs_error_set(&err, EPERM, CBFS_EXIT_USAGE,
                           "%zu registration%s of mounts on other hosts not removed: confirm "
                           "on a terminal, or use --force",
                           others, others == 1 ? "" : "s");
            others = 0; /* this host's dead ones still go */
            rc = -1;
        }
        for (size_t i = 0; i < n; i++) {
            enum state st = state_of(&hs[i], host);
            char who[256];
            CbfsError e;
            if (st == ALIVE || (st == OTHER_HOST && !others))
                continue;
            cbfs_error_init(&e);
            cbfs_holder_describe(&hs[i], who, sizeof(who));
            if (cbfs_registration_remove(repo, &hs[i], &e) < 0) {
                cbfs_warning("%s", e.msg);
                continue;
            }
            printf("removed %s (%s)\n", who, state_names[st]);
            removed++;
        }
        if (rc < 0)
            goto fail;
        printf("%zu registration%s removed\n", removed, removed == 1 ? "" : "s");
        rc = 0;
        goto out;
    }

    if (json) {
        CbfsJson j;
        cbfs_json_init(&j);
        cbfs_json_begin_array(&j);
        for (size_t i = 0; i < n; i++) {
            char when[32];
            cbfs_format_time(hs[i].since, when, sizeof(when));
            cbfs_json_begin_object(&j);
            cbfs_json_key(&j, "backup");
            cbfs_json_string(&j, hs[i].label);
            cbfs_json_key(&j, "command");
            cbfs_json_string(&j, hs[i].command);
            cbfs_json_key(&j, "host");
            cbfs_json_string(&j, hs[i].host);
            cbfs_json_key(&j, "pid");
            cbfs_json_uint(&j, (uint64_t) hs[i].pid);
            cbfs_json_key(&j, "mountpoint");
            cbfs_json_string(&j, hs[i].where[0] ? hs[i].where : NULL);
            cbfs_json_key(&j, "since");
            cbfs_json_string(&j, when);
            cbfs_json_key(&j, "state");
            cbfs_json_string(&j, state_names[state_of(&hs[i], host)]);
            cbfs_json_key(&j, "key");
            cbfs_json_string(&j, hs[i].key);
            cbfs_json_end_object(&j);
        }
        cbfs_json_end_array(&j);
        printf("%s\n", j.out.data);
        cbfs_json_release(&j);
    } else {
        printf("%-24s %-6s %-20s %8s %-20s %-10s %s\n", "backup", "what", "host", "pid", "since",
               "state", "mount point");
        for (size_t i = 0; i < n; i++) {
            char when[32];
            cbfs_format_time(hs[i].since, when, sizeof(when));
            printf("%-24s %-6s %-20s %8ld %-20s %-10s %s\n", hs[i].label, hs[i].command, hs[i].host,
                   hs[i].pid, when, state_names[state_of(&hs[i], host)],
                   hs[i].where[0] ? hs[i].where : "-");
        }
    }
    rc = 0;
    goto out;
fail:
    rc = cmd_fail(&err);
out:
    free(hs);
    cbfs_repo_free(repo);
    return rc;
}
