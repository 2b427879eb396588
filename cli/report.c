/*
 * report.c - `cbfs list` and `cbfs info`: what the repository holds.
 * Both read only backup records (never manifests), so they stay fast.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/json.h"
#include "cbfs/point.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "commands.h"

/* The fields shown, in order; numeric ones are emitted as JSON numbers. */
static const struct {
    const char *key;
    bool number;
} fields[] = {
    {"label", false},        {"start_time", false},        {"stop_time", false},
    {"start_lsn", false},    {"stop_lsn", false},          {"timeline", true},
    {"pg_version", true},    {"system_identifier", false}, {"file_count", true},
    {"logical_size", true},  {"stored_size", true},        {"bad_pages", true},
    {"wal_start", false},    {"wal_stop", false},          {"block_size", true},
    {"cbfs_version", false},
};

static void json_record(CbfsJson *j, const CbfsKv *rec)
{
    cbfs_json_begin_object(j);
    for (size_t i = 0; i < CBFS_ARRAY_LEN(fields); i++) {
        const char *v = cbfs_kv_get(rec, fields[i].key);
        uint64_t n;
        cbfs_json_key(j, fields[i].key);
        if (fields[i].number && cbfs_kv_get_u64(rec, fields[i].key, &n) == 0)
            cbfs_json_uint(j, n);
        else
            cbfs_json_string(j, v);
    }
    cbfs_json_end_object(j);
}

static int parse_json_flag(int argc, char **argv, const char *cmd, const char *help, bool *json,
                           bool *points)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'J'},
        {"points", no_argument, NULL, 'P'},
        {"passphrase-file", required_argument, NULL, CMD_OPT_PASSPHRASE_FILE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'J') {
            *json = true;
        } else if (c == 'P' && points) {
            *points = true;
        } else if (c == CMD_OPT_PASSPHRASE_FILE) {
            cbfs_passphrase_set_file(optarg);
        } else if (c == 'h') {
            fputs(help, stdout);
            return -1;
        } else {
            return cmd_usage_error(cmd, NULL);
        }
    }
    if (optind + 1 != argc)
        return cmd_usage_error(cmd, optind >= argc ? "no repository given" : "too many arguments");
    return 0;
}

int cmd_list(int argc, char **argv)
{
    bool json = false, points_only = false;
    CbfsRepo *repo;
    CbfsKv **list, **points;
    size_t n, np;
    CbfsError err;
    int rc = parse_json_flag(argc, argv, "list",
                             "Usage: cbfs list REPO [--json] [--points] [--passphrase-file "
                             "FILE]\n\nList the backups and restore points in the repository, "
                             "oldest first.\nWith --json: an array of backups, or with --points "
                             "of restore points.\n",
                             &json, &points_only);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if ((rc = cmd_open_repo(argv[optind], false, &repo, NULL)) != 0)
        return rc;
    cbfs_error_init(&err);
    if (cbfs_repo_list_backups(repo, &list, &n, &err) < 0) {
        cbfs_repo_free(repo);
        return cmd_fail(&err);
    }
    if (cbfs_point_list(repo, &points, &np, &err) < 0) {
        cbfs_repo_free_backups(list, n);
        cbfs_repo_free(repo);
        return cmd_fail(&err);
    }
    if (json && points_only) {
        CbfsJson j;
        static const char *const keys[] = {"name", "lsn", "time", "timeline"};
        cbfs_json_init(&j);
        cbfs_json_begin_array(&j);
        for (size_t i = 0; i < np; i++) {
            uint64_t tli = 0;
            cbfs_json_begin_object(&j);
            for (size_t k = 0; k < CBFS_ARRAY_LEN(keys); k++) {
                cbfs_json_key(&j, keys[k]);
                if (k == 3 && cbfs_kv_get_u64(points[i], "timeline", &tli) == 0)
                    cbfs_json_uint(&j, tli);
                else
                    cbfs_json_string(&j, cbfs_kv_get(points[i], keys[k]));
            }
            cbfs_json_end_object(&j);
        }
        cbfs_json_end_array(&j);
        printf("%s\n", j.out.data);
        cbfs_json_release(&j);
    } else if (json) {
        CbfsJson j;
        cbfs_json_init(&j);
        cbfs_json_begin_array(&j);
        for (size_t i = 0; i < n; i++)
            json_record(&j, list[i]);
        cbfs_json_end_array(&j);
        printf("%s\n", j.out.data);
        cbfs_json_release(&j);
    } else {
        printf("%-24s %-20s %-13s %-13s %3s %9s %10s %10s %4s\n", "label", "stop time", "start lsn",
               "stop lsn", "tli", "files", "size", "stored", "bad");
        for (size_t i = 0; i < n; i++) {
            uint64_t files = 0, size = 0, stored = 0, bad = 0;
            char s1[32], s2[32];
            cbfs_kv_get_u64(list[i], "file_count", &files);
            cbfs_kv_get_u64(list[i], "logical_size", &size);
            cbfs_kv_get_u64(list[i], "stored_size", &stored);
            cbfs_kv_get_u64(list[i], "bad_pages", &bad);
            cbfs_format_size(size, s1, sizeof(s1));
            cbfs_format_size(stored, s2, sizeof(s2));
            printf("%-24s %-20s %-13s %-13s %3s %9llu %10s %10s %4llu\n",
                   cbfs_kv_get(list[i], "label"), cbfs_kv_get(list[i], "stop_time"),
                   cbfs_kv_get(list[i], "start_lsn"), cbfs_kv_get(list[i], "stop_lsn"),
                   cbfs_kv_get(list[i], "timeline"), (unsigned long long) files, s1, s2,
                   (unsigned long long) bad);
        }
        if (np > 0) {
            printf("\n%-24s %-20s %-13s %3s\n", "restore point", "time", "lsn", "tli");
            for (size_t i = 0; i < np; i++)
                printf("%-24s %-20s %-13s %3s\n", cbfs_kv_get(points[i], "name"),
                       cbfs_kv_get(points[i], "time"), cbfs_kv_get(points[i], "lsn"),
                       cbfs_kv_get(points[i], "timeline"));
        }
    }
    cbfs_repo_free_backups(points, np);
    cbfs_repo_free_backups(list, n);
    cbfs_repo_free(repo);
    return 0;
}

int cmd_info(int argc, char **argv)
{
    bool json = false;
    CbfsRepo *repo;
    CbfsKv *rec;
    char *point = NULL, *label = NULL;
    CbfsError err;
    int rc = parse_json_flag(argc, argv, "info",
                             "Usage: cbfs info REPO[@LABEL|@latest] [--json] [--passphrase-file "
                             "FILE]\n\nShow one backup (the newest by default).\n",
                             &json, NULL);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if ((rc = cmd_open_repo(argv[optind], true, &repo, &point)) != 0)
        return rc;
    cbfs_error_init(&err);
    if (cbfs_repo_resolve(repo, point, &label, &err) < 0 ||
        cbfs_repo_read_backup(repo, label, &rec, &err) < 0) {
        rc = cmd_fail(&err);
        goto out;
    }
    if (json) {
        CbfsJson j;
        cbfs_json_init(&j);
        json_record(&j, rec);
        printf("%s\n", j.out.data);
        cbfs_json_release(&j);
    } else {
        for (size_t i = 0; i < CBFS_ARRAY_LEN(fields); i++) {
            const char *v = cbfs_kv_get(rec, fields[i].key);
            printf("%-18s %s\n", fields[i].key, v ? v : "");
        }
    }
    cbfs_kv_free(rec);
out:
    free(point);
    free(label);
    cbfs_repo_free(repo);
    return rc;
}
