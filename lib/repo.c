/*
 * repo.c - repository configuration, cluster identity and backup records.
 *
 * Invariant: a backup exists exactly when backups/<label>.info exists; the
 * record is stored after everything it references (packs, manifest), so an
 * interrupted backup leaves only unreferenced objects behind.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "cbfs/passphrase.h"
#include "cbfs/repo.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"

static int open_error(const CbfsLocation *loc, CbfsError *err, int errnum, int code,
                      const char *why)
{
    return cbfs_error_set(err, errnum, code, "could not open repository \"%s\": %s", loc->spec,
                          why);
}

static int repo_init(const CbfsLocation *loc, uint32_t block_size, int compress_level,
                     const char *passphrase, const CbfsKdfParams *kdf, CbfsError *err)
{
    CbfsStore *st = NULL;
    CbfsKv *kv;
    uint8_t rnd[16];
    char id[33], now[32], *text;
    int rc;

    if (loc->kind == CBFS_LOCATION_POSIX) {
        DIR *d = opendir(loc->path);
        if (d) {
            struct dirent *de;
            bool has_config = false, empty = true;
            while ((de = readdir(d)) != NULL) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                    continue;
                empty = false;
                if (strcmp(de->d_name, "config") == 0)
                    has_config = true;
            }
            closedir(d);
            if (has_config)
                return cbfs_error_set(err, EEXIST, CBFS_EXIT_REPO,
                                      "could not create repository \"%s\": repository already "
                                      "exists",
                                      loc->spec);
            if (!empty)
                return cbfs_error_set(err, ENOTEMPTY, CBFS_EXIT_REPO,
                                      "could not create repository \"%s\": directory is not empty",
                                      loc->spec);
        }
    }
    rc = cbfs_store_open(loc, true, &st, err);
    if (rc < 0)
        return rc;
    cbfs_random_bytes(rnd, sizeof(rnd));
    cbfs_hex_encode(rnd, sizeof(rnd), id);
    cbfs_format_time(time(NULL), now, sizeof(now));
    kv = cbfs_kv_new();
    cbfs_kv_set(kv, "format", CBFS_REPO_FORMAT);
    cbfs_kv_set(kv, "repository_id", id);
    cbfs_kv_set_u64(kv, "block_size", block_size);
    cbfs_kv_set_u64(kv, "compress_level", (uint64_t) compress_level);
    cbfs_kv_set(kv, "created", now);
    if (passphrase) {
        CbfsCrypt *crypt;
        rc = cbfs_crypt_create(kv, id, loc->spec, passphrase, kdf, &crypt, err);
        if (rc < 0) {
            cbfs_error_prefix(err, "could not create repository \"%s\"", loc->spec);
            cbfs_kv_free(kv);
            cbfs_store_free(st);
            return rc;
        }
        cbfs_crypt_free(crypt);
    }
    text = cbfs_kv_format(kv);
    rc = cbfs_store_put(st, "config", text, strlen(text), err);
    if (rc == -EEXIST)
        rc = cbfs_error_set(err, EEXIST, CBFS_EXIT_REPO,
                            "could not create repository \"%s\": repository already exists",
                            loc->spec);
    else if (rc < 0)
        cbfs_error_prefix(err, "could not create repository \"%s\"", loc->spec);
    free(text);
    cbfs_kv_free(kv);
    cbfs_store_free(st);
    return rc;
}

int cbfs_repo_init(const CbfsLocation *loc, uint32_t block_size, int compress_level, CbfsError *err)
{
    return repo_init(loc, block_size, compress_level, NULL, NULL, err);
}

int cbfs_repo_init_encrypted(const CbfsLocation *loc, uint32_t block_size, int compress_level,
                             const char *passphrase, const CbfsKdfParams *kdf, CbfsError *err)
{
    return repo_init(loc, block_size, compress_level, passphrase, kdf, err);
}

/* The passphrase of an encrypted repository, asked for on first need
 * (cbfs_crypt_unlock; ctx is the repository's display name). */
static int ask_passphrase(void *ctx, char **ret, CbfsError *err)
{
    int rc = cbfs_passphrase_read(CBFS_PASSPHRASE_CURRENT, ctx, false, ret, err);
    if (rc == -ENOENT)
        rc = cbfs_error_set(err, EACCES, CBFS_EXIT_USAGE,
                            "repository is encrypted and no passphrase was given (set "
                            "CBFS_PASSPHRASE or CBFS_PASSPHRASE_FILE, or use --passphrase-file)");
    return rc;
}

static void copy_location(CbfsLocation *dst, const CbfsLocation *src)
{
    dst->kind = src->kind;
#define DUP(f) dst->f = src->f ? cbfs_xstrdup(src->f) : NULL
    DUP(spec);
    DUP(path);
    DUP(bucket);
    DUP(prefix);
    DUP(point);
#undef DUP
}

int cbfs_repo_open(const CbfsLocation *loc, CbfsRepo **ret, CbfsError *err)
{
    CbfsRepo *r;
    CbfsStore *st;
    uint8_t *text;
    size_t len;
    CbfsKv *kv = NULL;
    uint64_t bs, level;
    const char *v;
    int rc;

    rc = cbfs_store_open(loc, false, &st, err);
    if (rc < 0)
        return rc;
    rc = cbfs_store_get(st, "config", &text, &len, err);
    if (rc == -ENOENT) {
        cbfs_store_free(st);
        return open_error(loc, err, ENOENT, CBFS_EXIT_REPO, "not a cbfs repository");
    }
    if (rc < 0) {
        cbfs_error_prefix(err, "could not open repository \"%s\"", loc->spec);
        cbfs_store_free(st);
        return rc;
    }
    rc = cbfs_kv_parse((const char *) text, len, &kv, err);
    free(text);
    if (rc < 0 || !(v = cbfs_kv_get(kv, "format")) || cbfs_kv_get_u64(kv, "block_size", &bs) < 0 ||
        cbfs_kv_get_u64(kv, "compress_level", &level) < 0 || !cbfs_kv_get(kv, "repository_id") ||
        strlen(cbfs_kv_get(kv, "repository_id")) != 32 || bs == 0 || bs % 8192 != 0 ||
        bs > (1u << 20)) {
        cbfs_kv_free(kv);
        cbfs_store_free(st);
        return open_error(loc, err, EINVAL, CBFS_EXIT_REPO, "invalid configuration object");
    }
    if (strcmp(v, CBFS_REPO_FORMAT) != 0) {
        char why[128];
        snprintf(why, sizeof(why), "repository format %.32s is not supported by cbfs %s", v,
                 CBFS_VERSION);
        cbfs_kv_free(kv);
        cbfs_store_free(st);
        return open_error(loc, err, EINVAL, CBFS_EXIT_REPO, why);
    }
    r = cbfs_xcalloc(1, sizeof(*r));
    copy_location(&r->loc, loc);
    r->display = r->loc.spec;
    r->store = st;
    r->shared = st;
    strcpy(r->id, cbfs_kv_get(kv, "repository_id"));
    r->block_size = (uint32_t) bs;
    r->compress_level = (int) level;
    if (cbfs_crypt_configured(kv)) {
        /* locked: the passphrase is read when a key is first needed */
        rc = cbfs_crypt_from_config(kv, r->id, r->display, ask_passphrase, (void *) r->display,
                                    &r->crypt, err);
        if (rc < 0) {
            cbfs_error_prefix(err, "could not open repository \"%s\"", loc->spec);
            cbfs_kv_free(kv);
            cbfs_repo_free(r);
            return rc;
        }
        r->store = cbfs_store_crypt_new(st, r->crypt);
        r->shared = r->store;
    }
    cbfs_kv_free(kv);
    *ret = r;
    return 0;
}

void cbfs_repo_free(CbfsRepo *r)
{
    if (!r)
        return;
    if (r->store != r->shared)
        cbfs_store_free(r->store); /* a node's view */
    if (!r->view) {
        cbfs_store_free(r->shared);
        cbfs_crypt_free(r->crypt); /* after the store that borrows it */
    }
    free(r->node);
    cbfs_location_release(&r->loc);
    free(r);
}

/* ---------------------------------------------------------------- nodes */

bool cbfs_node_name_valid(const char *name)
{
    return cbfs_label_valid(name) && strlen(name) <= CBFS_NODE_MAX && name[0] != '-';
}

/* Point r at node (valid or NULL), dropping the view it had. */
static void serve(CbfsRepo *r, const char *node)
{
    if (r->store != r->shared)
        cbfs_store_free(r->store);
    free(r->node);
    r->node = NULL;
    r->store = r->shared;
    if (node && strcmp(node, CBFS_NODE_DEFAULT) != 0) {
        r->node = cbfs_xstrdup(node);
        r->store = cbfs_store_node_new(r->shared, node);
    }
}

int cbfs_repo_set_node(CbfsRepo *r, const char *node, CbfsError *err)
{
    if (node && !cbfs_node_name_valid(node))
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "invalid node name \"%s\" (1 to %d letters, digits, '.', '_' or "
                              "'-', not starting with '.' or '-')",
                              node, CBFS_NODE_MAX);
    serve(r, node);
    return 0;
}

CbfsRepo *cbfs_repo_node_view(CbfsRepo *r, const char *node)
{
    CbfsRepo *v = cbfs_xcalloc(1, sizeof(*v));
    copy_location(&v->loc, &r->loc);
    v->display = v->loc.spec;
    v->shared = r->shared;
    v->store = r->shared;
    v->view = true;
    memcpy(v->id, r->id, sizeof(v->id));
    v->block_size = r->block_size;
    v->compress_level = r->compress_level;
    v->crypt = r->crypt;
    serve(v, node);
    return v;
}

const char *cbfs_repo_node_name(const CbfsRepo *r)
{
    return r->node ? r->node : CBFS_NODE_DEFAULT;
}

const char *cbfs_repo_what(const CbfsRepo *r, char *buf, size_t size)
{
    if (r->node)
        snprintf(buf, size, "node \"%s\" of repository \"%s\"", r->node, r->display);
    else
        snprintf(buf, size, "repository \"%s\"", r->display);
    return buf;
}

int cbfs_repo_list_nodes(CbfsRepo *r, char ***ret, size_t *ret_n, CbfsError *err)
{
    char **names = NULL;
    size_t n = 0, k = 0;
    uint64_t size;
    int rc = cbfs_store_stat(r->shared, "cluster", &size, err);

    if (rc < 0 && rc != -ENOENT)
        return rc;
    bool has_default = rc == 0;
    rc = cbfs_store_list_names(r->shared, "nodes/", "", &names, &n, err);
    if (rc < 0)
        return rc;
    /* the valid names, after "default" */
    char **out = cbfs_xcalloc(n + 1, sizeof(char *));
    if (has_default)
        out[k++] = cbfs_xstrdup(CBFS_NODE_DEFAULT);
    for (size_t i = 0; i < n; i++) {
        if (cbfs_node_name_valid(names[i]) && strcmp(names[i], CBFS_NODE_DEFAULT) != 0)
            out[k++] = names[i];
        else
            free(names[i]);
    }
    free(names);
    *ret = out;
    *ret_n = k;
    return 0;
}

/* 'repository "R" holds nodes a, b and c: choose one with --node' when
 * the repository holds named nodes (names: its nodes, none the default). */
static int choose_node(CbfsRepo *r, char **names, size_t n, CbfsError *err)
{
    CbfsBuf b;
    int rc;
    cbfs_buf_init(&b);
    for (size_t i = 0; i < n; i++)
        cbfs_buf_printf(&b, "%s%s", i == 0 ? "" : i + 1 == n ? " and " : ", ", names[i]);
    rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                        "repository \"%s\" holds %s %s: choose one with --node", r->display,
                        n == 1 ? "node" : "nodes", b.data ? b.data : "");
    cbfs_buf_release(&b);
    return rc;
}

/* The default node is unclaimed: refuse it when the repository holds
 * named nodes. */
static int default_node_allowed(CbfsRepo *r, CbfsError *err)
{
    char **names;
    size_t n;
    int rc = cbfs_repo_list_nodes(r, &names, &n, err);
    if (rc < 0)
        return rc;
    if (n > 0 && strcmp(names[0], CBFS_NODE_DEFAULT) != 0)
        rc = choose_node(r, names, n, err);
    cbfs_store_free_names(names, n);
    return rc;
}

int cbfs_repo_select_node(CbfsRepo *r, const char *node, CbfsError *err)
{
    bool exists;
    int rc = cbfs_repo_set_node(r, node, err);

    if (rc == 0)
        rc = cbfs_repo_node_exists(r, r->node, &exists, err);
    if (rc < 0)
        return rc;
    if (exists)
        return 0;
    if (r->node)
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                              "node \"%s\" not found in repository \"%s\"", r->node, r->display);
    return default_node_allowed(r, err);
}

int cbfs_repo_node_exists(CbfsRepo *r, const char *node, bool *ret, CbfsError *err)
{
    char *key = node && strcmp(node, CBFS_NODE_DEFAULT) != 0 ? cbfs_xasprintf("nodes/%s", node)
                                                             : cbfs_xstrdup("cluster");
    uint64_t size;
    int rc = cbfs_store_stat(r->shared, key, &size, err);
    free(key);
    if (rc < 0 && rc != -ENOENT)
        return rc;
    *ret = rc == 0;
    return 0;
}

int cbfs_repo_unlock(CbfsRepo *r, CbfsError *err)
{
    return r->crypt ? cbfs_crypt_unlock(r->crypt, err) : 0;
}

CbfsCodec *cbfs_repo_codec_new(CbfsRepo *r, int level)
{
    CbfsCodec *c = cbfs_codec_new(level);
    cbfs_codec_set_crypt(c, r->crypt);
    return c;
}

/* 0 if text is a config whose key unwraps with passphrase to r's master key. */
static int check_config(CbfsRepo *r, const char *text, size_t len, const char *passphrase,
                        CbfsError *err)
{
    CbfsKv *kv = NULL;
    CbfsCrypt *c = NULL;
    int rc = cbfs_kv_parse(text, len, &kv, err);

    if (rc == 0)
        rc = cbfs_crypt_from_config(kv, r->id, r->display, NULL, NULL, &c, err);
    if (rc == 0)
        rc = cbfs_crypt_unlock_with(c, passphrase, err);
    if (rc == 0 && !cbfs_crypt_same_key(c, r->crypt))
        rc = cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT, "the new key is not the old one");
    cbfs_crypt_free(c);
    cbfs_kv_free(kv);
    return rc;
}

int cbfs_repo_change_passphrase(CbfsRepo *r, const char *new_passphrase, const CbfsKdfParams *kdf,
                                CbfsError *err)
{
    uint8_t *old = NULL, *back = NULL;
    size_t old_len, back_len;
    CbfsKv *kv = NULL;
    char *text = NULL;
    int rc;

    if (!r->crypt)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE, "repository \"%s\" is not encrypted",
                              r->display);
    if ((rc = cbfs_crypt_unlock(r->crypt, err)) < 0)
        return rc;
    /* the config as stored now (it passes the encrypting store untouched),
     * so that every other setting is kept as it is */
    rc = cbfs_store_get(r->store, "config", &old, &old_len, err);
    if (rc == 0)
        rc = cbfs_kv_parse((const char *) old, old_len, &kv, err);
    if (rc == 0)
        rc = cbfs_crypt_rewrap(r->crypt, kv, new_passphrase, kdf, err);
    if (rc < 0)
        goto out;
    text = cbfs_kv_format(kv);
    /* never replace a config that does not open */
    if ((rc = check_config(r, text, strlen(text), new_passphrase, err)) < 0)
        goto out;
    rc = cbfs_store_replace(r->store, "config", text, strlen(text), err);
    if (rc < 0)
        goto out;
    rc = cbfs_store_get(r->store, "config", &back, &back_len, err);
    if (rc == -ENOENT)
        rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_REPO, "the config object is gone");
    if (rc == 0)
        rc = check_config(r, (const char *) back, back_len, new_passphrase, err);
out:
    if (rc < 0)
        cbfs_error_prefix(err, "could not change the passphrase of repository \"%s\"", r->display);
    free(old);
    free(back);
    free(text);
    cbfs_kv_free(kv);
    return rc;
}

int cbfs_repo_cluster(CbfsRepo *r, uint64_t *ret_sysid, CbfsError *err)
{
    CbfsKv *kv;
    int rc = cbfs_store_get_kv(r->store, "cluster", &kv, err);
    if (rc < 0)
        return rc;
    if (cbfs_kv_get_u64(kv, "system_identifier", ret_sysid) < 0)
        rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_REPO,
                            "repository \"%s\" has an invalid cluster object", r->display);
    cbfs_kv_free(kv);
    return rc;
}

int cbfs_repo_claim(CbfsRepo *r, uint64_t sysid, uint64_t *ret_owner, CbfsError *err)
{
    int rc = cbfs_repo_cluster(r, ret_owner, err);
    if (rc == -ENOENT && !r->node && (rc = default_node_allowed(r, err)) == 0)
        rc = -ENOENT;
    if (rc == -ENOENT) {
        CbfsKv *kv = cbfs_kv_new();
        char *text, now[32];
        cbfs_kv_set_u64(kv, "system_identifier", sysid);
        if (r->node) {
            cbfs_format_time(time(NULL), now, sizeof(now));
            cbfs_kv_set(kv, "node", r->node);
            cbfs_kv_set(kv, "created", now);
        }
        text = cbfs_kv_format(kv);
        rc = cbfs_store_put(r->store, "cluster", text, strlen(text), err);
        free(text);
        cbfs_kv_free(kv);
        if (rc == 0) {
            *ret_owner = sysid;
            return 0;
        }
        if (rc != -EEXIST)
            return rc;
        /* someone else claimed it first: read what they wrote */
        rc = cbfs_repo_cluster(r, ret_owner, err);
    }
    return rc;
}

bool cbfs_label_valid(const char *label)
{
    size_t n = strlen(label);
    if (n == 0 || n > CBFS_LABEL_MAX || label[0] == '.' || strcmp(label, "latest") == 0)
        return false;
    for (const char *s = label; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

int cbfs_repo_read_backup(CbfsRepo *r, const char *label, CbfsKv **ret, CbfsError *err)
{
    char *key;
    uint8_t *text;
    size_t len;
    int rc;

    if (!cbfs_label_valid(label))
        return -ENOENT;
    key = cbfs_xasprintf("backups/%s.info", label);
    rc = cbfs_store_get(r->store, key, &text, &len, err);
    if (rc == 0) {
        rc = cbfs_kv_parse((const char *) text, len, ret, err);
        free(text);
        if (rc < 0)
            cbfs_error_prefix(err, "backup record \"%s\" is damaged", key);
        else if (!cbfs_kv_get(*ret, "label") || strcmp(cbfs_kv_get(*ret, "label"), label) != 0) {
            cbfs_kv_free(*ret);
            rc = cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                                "backup record \"%s\" is damaged: wrong label", key);
        }
    }
    free(key);
    return rc;
}

int cbfs_repo_list_labels(CbfsRepo *r, char ***ret, size_t *ret_n, CbfsError *err)
{
    return cbfs_store_list_names(r->store, "backups/", ".info", ret, ret_n, err);
}

static uint64_t record_lsn(const CbfsKv *rec)
{
    const char *s = cbfs_kv_get(rec, "stop_lsn");
    uint64_t lsn = 0;
    if (s)
        cbfs_lsn_parse(s, &lsn);
    return lsn;
}

/* Oldest first: by stop LSN (LSNs only grow across a cluster's timelines, and
 * seconds are too coarse: two backups can end in the same one), then stop
 * time, then label. */
static int cmp_record(const void *a, const void *b)
{
    const CbfsKv *x = *(CbfsKv *const *) a, *y = *(CbfsKv *const *) b;
    uint64_t lx = record_lsn(x), ly = record_lsn(y);
    const char *tx = cbfs_kv_get(x, "stop_time"), *ty = cbfs_kv_get(y, "stop_time");
    int c;
    if (lx != ly)
        return lx < ly ? -1 : 1;
    c = strcmp(tx ? tx : "", ty ? ty : "");
    return c ? c : strcmp(cbfs_kv_get(x, "label"), cbfs_kv_get(y, "label"));
}

int cbfs_repo_list_backups(CbfsRepo *r, CbfsKv ***ret, size_t *ret_n, CbfsError *err)
{
    char **labels;
    CbfsKv **list;
    size_t nlabels, n = 0;
    int rc = cbfs_repo_list_labels(r, &labels, &nlabels, err);

    if (rc < 0)
        return rc;
    list = cbfs_xcalloc(nlabels ? nlabels : 1, sizeof(CbfsKv *));
    for (size_t i = 0; i < nlabels; i++) {
        if (rc == 0) {
            rc = cbfs_repo_read_backup(r, labels[i], &list[n], err);
            if (rc == 0)
                n++;
            else if (rc == -ENOENT) /* an invalid name: not ours */
                rc = 0;
        }
        free(labels[i]);
    }
    free(labels);
    if (rc < 0) {
        cbfs_repo_free_backups(list, n);
        return rc;
    }
    if (n > 1)
        qsort(list, n, sizeof(CbfsKv *), cmp_record);
    *ret = list;
    *ret_n = n;
    return 0;
}

void cbfs_repo_free_backups(CbfsKv **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cbfs_kv_free(list[i]);
    free(list);
}

int cbfs_repo_resolve(CbfsRepo *r, const char *point, char **ret_label, CbfsError *err)
{
    CbfsKv *rec;
    int rc;

    if (!point || strcmp(point, "latest") == 0) {
        CbfsKv **list;
        size_t n;
        rc = cbfs_repo_list_backups(r, &list, &n, err);
        if (rc < 0)
            return rc;
        if (n == 0)
            rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                                "repository \"%s\" has no backups", r->display);
        else
            *ret_label = cbfs_xstrdup(cbfs_kv_get(list[n - 1], "label"));
        cbfs_repo_free_backups(list, n);
        return rc;
    }
    rc = cbfs_repo_read_backup(r, point, &rec, err);
    if (rc == -ENOENT)
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                              "backup \"%s\" not found in repository \"%s\"", point, r->display);
    if (rc < 0)
        return rc;
    cbfs_kv_free(rec);
    *ret_label = cbfs_xstrdup(point);
    return 0;
}

int cbfs_repo_commit_backup(CbfsRepo *r, const char *label, const char *manifest_path,
                            CbfsKv *record, CbfsError *err)
{
    uint8_t *data, *obj, rnd[4];
    char isha[65], rhex[9], *mkey, *ikey, *text;
    size_t len, olen;
    int rc;

    rc = cbfs_read_file(manifest_path, &data, &len, err);
    if (rc < 0)
        return rc;
    cbfs_random_bytes(rnd, sizeof(rnd));
    cbfs_hex_encode(rnd, sizeof(rnd), rhex);
    /* a random part, so a retried label never collides with a dead attempt's manifest */
    mkey = cbfs_xasprintf("backups/%s.%s" CBFS_MOBJECT_SUFFIX, label, rhex);
    if (r->crypt && (rc = cbfs_repo_unlock(r, err)) < 0) {
        free(data);
        free(mkey);
        return rc;
    }
    cbfs_mobject_build(r->crypt, mkey, data, len, CBFS_MOBJECT_CHUNK, &obj, &olen, isha);
    free(data);
    rc = cbfs_store_put(r->store, mkey, obj, olen, err);
    free(obj);
    if (rc < 0) {
        if (rc == -EEXIST)
            rc = cbfs_error_set(err, EEXIST, CBFS_EXIT_ERROR, "manifest \"%s\" already exists",
                                mkey);
        free(mkey);
        return rc;
    }
    cbfs_kv_set(record, "label", label);
    cbfs_kv_set(record, "manifest", mkey);
    cbfs_kv_set_u64(record, "manifest_size", len);
    cbfs_kv_set_u64(record, "manifest_chunk", CBFS_MOBJECT_CHUNK);
    cbfs_kv_set(record, "manifest_index_sha256", isha);
    text = cbfs_kv_format(record);
    ikey = cbfs_xasprintf("backups/%s.info", label);
    rc = cbfs_store_put(r->store, ikey, text, strlen(text), err);
    if (rc == -EEXIST)
        rc = cbfs_error_set(err, EEXIST, CBFS_EXIT_ERROR,
                            "backup \"%s\" already exists in repository \"%s\"", label, r->display);
    free(text);
    free(ikey);
    free(mkey);
    return rc;
}

/* A manifest of the first layout: one object, checked whole against
 * manifest_sha256; *ret (caller frees) its bytes. */
static int fetch_whole(CbfsRepo *r, const CbfsKv *record, uint8_t **ret, size_t *ret_len,
                       CbfsError *err)
{
    const char *mkey = cbfs_kv_get(record, "manifest");
    const char *want = cbfs_kv_get(record, "manifest_sha256");
    const char *label = cbfs_kv_get(record, "label");
    uint8_t *data, sum[CBFS_SHA256_LEN];
    char hex[2 * CBFS_SHA256_LEN + 1];
    size_t len;
    int rc;

    if (!mkey || !want || !label || strncmp(mkey, "backups/", 8) != 0 ||
        !cbfs_store_key_valid(mkey))
        return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT, "backup record of \"%s\" is damaged",
                              label ? label : "?");
    rc = cbfs_store_get(r->store, mkey, &data, &len, err);
    if (rc == -ENOENT)
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_CORRUPT,
                              "manifest \"%s\" of backup \"%s\" is missing", mkey, label);
    if (rc < 0)
        return rc;
    cbfs_sha256(data, len, sum);
    cbfs_hex_encode(sum, sizeof(sum), hex);
    if (strcmp(hex, want) != 0) {
        free(data);
        return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                              "manifest \"%s\" of backup \"%s\" is corrupt: checksum mismatch",
                              mkey, label);
    }
    *ret = data;
    *ret_len = len;
    return 0;
}

static bool paged(const CbfsKv *record)
{
    const char *mkey = cbfs_kv_get(record, "manifest");
    return mkey && cbfs_mobject_key(mkey);
}

int cbfs_repo_fetch_manifest(CbfsRepo *r, const CbfsKv *record, const char *dir, char **ret_path,
                             CbfsError *err)
{
    const char *label = cbfs_kv_get(record, "label");
    uint8_t *data = NULL;
    char *path;
    size_t len = 0;
    int rc;

    if (paged(record)) {
        CbfsMobject *mo;
        if (r->crypt && (rc = cbfs_repo_unlock(r, err)) < 0)
            return rc;
        rc = cbfs_mobject_open(r->store, r->crypt, record, 0, &mo, err);
        if (rc < 0)
            return rc;
        rc = cbfs_mobject_read_all(mo, &data, err);
        len = (size_t) cbfs_mobject_size(mo);
        cbfs_mobject_free(mo);
    } else {
        rc = fetch_whole(r, record, &data, &len, err);
    }
    if (rc < 0)
        return rc;
    path = cbfs_xasprintf("%s/manifest.%s%s%s.%d.db", dir, r->node ? r->node : "",
                          r->node ? "." : "", label, (int) getpid());
    unlink(path);
    rc = cbfs_write_file_atomic(path, data, len, 0600, err);
    free(data);
    if (rc < 0) {
        free(path);
        return rc;
    }
    *ret_path = path;
    return 0;
}

int cbfs_repo_open_manifest(CbfsRepo *r, const CbfsKv *record, const char *dir, CbfsManifest **ret,
                            CbfsError *err)
{
    char *path;
    int rc;

    if (paged(record)) {
        CbfsMobject *mo;
        if (r->crypt && (rc = cbfs_repo_unlock(r, err)) < 0)
            return rc;
        rc = cbfs_mobject_open(r->store, r->crypt, record, 0, &mo, err);
        return rc < 0 ? rc : cbfs_manifest_open_object(mo, ret, err);
    }
    rc = cbfs_repo_fetch_manifest(r, record, dir, &path, err);
    if (rc < 0)
        return rc;
    rc = cbfs_manifest_open(path, ret, err);
    if (rc == 0)
        cbfs_manifest_unlink_on_free(*ret);
    else
        unlink(path);
    free(path);
    return rc;
}

int cbfs_repo_cache_dir(CbfsRepo *r, char **ret, CbfsError *err)
{
    const char *base = getenv("CBFS_CACHE_DIR");
    char *dir;
    int rc;

    if (base && *base) {
        dir = cbfs_xasprintf("%s/%s", base, r->id);
    } else if ((base = getenv("XDG_CACHE_HOME")) && *base) {
        dir = cbfs_xasprintf("%s/cbfs/%s", base, r->id);
    } else {
        const char *home = getenv("HOME");
        dir = cbfs_xasprintf("%s/.cache/cbfs/%s", home && *home ? home : "/tmp", r->id);
    }
    rc = cbfs_mkdir_p(dir, 0700, err);
    if (rc < 0) {
        free(dir);
        return rc;
    }
    *ret = dir;
    return 0;
}
