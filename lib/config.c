/*
 * config.c - settings from the environment and the configuration files.
 * See config.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cbfs/config.h"
#include "cbfs/kv.h"
#include "cbfs/util.h"

#define MAX_FILES 2

typedef struct ConfigFile {
    char *path;
    CbfsKv *kv;
    bool others_read; /* readable by others: no secrets from it */
} ConfigFile;

static struct {
    ConfigFile files[MAX_FILES];
    int n;
    CbfsError err; /* a file that could not be read or parsed */
    bool failed;
} config;
static pthread_once_t config_once = PTHREAD_ONCE_INIT;

static void load_file(const char *path)
{
    uint8_t *text;
    size_t len;
    struct stat st;
    CbfsKv *kv;
    CbfsError err;

    cbfs_error_init(&err);
    if (stat(path, &st) < 0 && errno == ENOENT)
        return;
    if (cbfs_read_file(path, &text, &len, &err) < 0) {
        config.err = err;
        config.failed = true;
        return;
    }
    if (cbfs_kv_parse((const char *) text, len, &kv, &err) < 0) {
        cbfs_error_set(&config.err, EINVAL, CBFS_EXIT_USAGE,
                       "invalid configuration file \"%s\": %s", path, err.msg);
        config.failed = true;
        free(text);
        return;
    }
    free(text);
    config.files[config.n].path = cbfs_xstrdup(path);
    config.files[config.n].kv = kv;
    config.files[config.n].others_read = (st.st_mode & S_IROTH) != 0;
    config.n++;
}

static void load(void)
{
    const char *only = getenv("CBFS_CONFIG");
    cbfs_error_init(&config.err);
    if (only && *only) {
        load_file(only);
        return;
    }
    load_file("/etc/cbfs.conf");
    if (!config.failed) {
        const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
        char *path = NULL;
        if (xdg && *xdg)
            path = cbfs_xasprintf("%s/cbfs.conf", xdg);
        else if (home && *home)
            path = cbfs_xasprintf("%s/.config/cbfs.conf", home);
        if (path)
            load_file(path);
        free(path);
    }
}

int cbfs_config_get(const char *key, const char *const *envs, bool secret, const char **ret,
                    CbfsError *err)
{
    *ret = NULL;
    for (const char *const *e = envs; e && *e; e++) {
        const char *v = getenv(*e);
        if (v && *v) {
            *ret = v;
            return 0;
        }
    }
    pthread_once(&config_once, load);
    if (config.failed) {
        *err = config.err;
        return -EINVAL;
    }
    for (int i = config.n - 1; i >= 0; i--) {
        const char *v = cbfs_kv_get(config.files[i].kv, key);
        if (!v)
            continue;
        if (secret && config.files[i].others_read)
            return cbfs_error_set(err, EACCES, CBFS_EXIT_USAGE,
                                  "configuration file \"%s\" holds %s but others can read it "
                                  "(chmod o-r)",
                                  config.files[i].path, key);
        *ret = v;
        return 0;
    }
    return 0;
}
