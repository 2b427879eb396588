/*
 * store_node.c - one node's view of a repository that holds several
 * (docs/design.md §8): a CbfsStore over the repository's own store that
 * moves the keys a node owns under node/<name>/ and passes the shared ones
 * through, so that every command written for one server works on a node
 * unchanged.
 *
 * A node owns: its claim "cluster" (stored as nodes/<name>, the one object
 * per node directly under nodes/, so listing nodes/ lists the nodes), and
 * everything under backups/, wal/, points/, pins/, running/ and mounts/.
 * Shared by all nodes: config, packs/, moved/, gc/, lock, cluster-points/
 * and the node claims.  The default node (the only one of a repository
 * made before nodes existed) has no view: its keys are where they always
 * were, so old repositories are read as they are.
 *
 * Keys reach the inner store whole, so an encrypted repository's objects
 * are sealed with their full key (store_crypt.c): an object moved from one
 * node to another does not open.  Errors name the full key.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/store.h"
#include "cbfs/util.h"

typedef struct NodeStore {
    CbfsStore base;
    CbfsStore *inner; /* borrowed */
    char *prefix;     /* "node/<name>/" */
    char *claim;      /* "nodes/<name>" */
} NodeStore;

static const char *const owned[] = {"backups/", "wal/", "points/", "pins/", "running/", "mounts/"};

static bool is_owned(const char *key)
{
    for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++)
        if (strncmp(key, owned[i], strlen(owned[i])) == 0)
            return true;
    return false;
}

/* key as the inner store knows it; caller frees. */
static char *inner_key(const NodeStore *ns, const char *key)
{
    if (strcmp(key, "cluster") == 0)
        return cbfs_xstrdup(ns->claim);
    if (is_owned(key))
        return cbfs_xasprintf("%s%s", ns->prefix, key);
    return cbfs_xstrdup(key);
}

static int node_get_range(CbfsStore *st, const char *key, uint64_t off, size_t len, void *buf,
                          size_t *ret_n, CbfsError *err)
{
    NodeStore *ns = (NodeStore *) st;
    char *k = inner_key(ns, key);
    int rc = cbfs_store_get_range(ns->inner, k, off, len, buf, ret_n, err);
    free(k);
    return rc;
}

static int node_get(CbfsStore *st, const char *key, uint8_t **ret_buf, size_t *ret_len,
                    CbfsError *err)
{
    NodeStore *ns = (NodeStore *) st;
    char *k = inner_key(ns, key);
    int rc = cbfs_store_get(ns->inner, k, ret_buf, ret_len, err);
    free(k);
    return rc;
}

static int node_put(CbfsStore *st, const char *key, const void *data, size_t len, CbfsError *err)
{
    NodeStore *ns = (NodeStore *) st;
    char *k = inner_key(ns, key);
    int rc = cbfs_store_put(ns->inner, k, data, len, err);
    free(k);
    return rc;
}

static int node_replace(CbfsStore *st, const char *key, const void *data, size_t len,
                        CbfsError *err)
{
    NodeStore *ns = (NodeStore *) st;
    char *k = inner_key(ns, key);
    int rc = cbfs_store_replace(ns->inner, k, data, len, err);
    free(k);
    return rc;
}

static int node_stat(CbfsStore *st, const char *key, uint64_t *ret_size, CbfsError *err)
{
    NodeStore *ns = (NodeStore *) st;
    char *k = inner_key(ns, key);
    int rc = cbfs_store_stat(ns->inner, k, ret_size, err);
    free(k);
    return rc;
}

static int node_remove(CbfsStore *st, const char *key, CbfsError *err)
{
    NodeStore *ns = (NodeStore *) st;
    char *k = inner_key(ns, key);
    int rc = cbfs_store_remove(ns->inner, k, err);
    free(k);
    return rc;
}

typedef struct ListCtx {
    const NodeStore *ns;
    cbfs_store_list_cb cb;
    void *ctx;
} ListCtx;

/* Keys as the node sees them: its own without their prefix, the shared
 * ones as they are; other nodes' never. */
static int list_cb(const char *key, uint64_t size, void *ctx)
{
    ListCtx *lc = ctx;
    size_t pl = strlen(lc->ns->prefix);
    if (strncmp(key, lc->ns->prefix, pl) == 0)
        return is_owned(key + pl) ? lc->cb(key + pl, size, lc->ctx) : 0;
    if (strcmp(key, lc->ns->claim) == 0)
        return lc->cb("cluster", size, lc->ctx);
    if (strncmp(key, "node/", 5) == 0 || strncmp(key, "nodes/", 6) == 0 || is_owned(key) ||
        strcmp(key, "cluster") == 0)
        return 0; /* another node's, or the default node's */
    return lc->cb(key, size, lc->ctx);
}

static int node_list(CbfsStore *st, const char *prefix, cbfs_store_list_cb cb, void *ctx,
                     CbfsError *err)
{
    NodeStore *ns = (NodeStore *) st;
    ListCtx lc = {ns, cb, ctx};
    int rc;

    if (is_owned(prefix)) {
        char *k = inner_key(ns, prefix);
        rc = cbfs_store_list(ns->inner, k, list_cb, &lc, err);
        free(k);
        return rc;
    }
    return cbfs_store_list(ns->inner, prefix, list_cb, &lc, err);
}

static void node_free(CbfsStore *st)
{
    NodeStore *ns = (NodeStore *) st;
    free(ns->prefix);
    free(ns->claim);
    free(ns->base.display);
    free(ns);
}

static const CbfsStoreOps node_ops = {
    .name = "node",
    .get_range = node_get_range,
    .get = node_get,
    .put = node_put,
    .stat = node_stat,
    .list = node_list,
    .remove = node_remove,
    .replace = node_replace,
    .free = node_free,
};

CbfsStore *cbfs_store_node_new(CbfsStore *inner, const char *node)
{
    NodeStore *ns = cbfs_xcalloc(1, sizeof(*ns));
    ns->base.ops = &node_ops;
    ns->base.display = cbfs_xstrdup(inner->display);
    ns->inner = inner;
    ns->prefix = cbfs_xasprintf("node/%s/", node);
    ns->claim = cbfs_xasprintf("nodes/%s", node);
    return &ns->base;
}
