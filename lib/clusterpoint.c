/*
 * clusterpoint.c - cluster restore points.  See clusterpoint.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/clusterpoint.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"

#define PREFIX "cluster-points/"

static char *point_key(const char *name)
{
    return cbfs_xasprintf(PREFIX "%s", name);
}

static void node_key(char *buf, size_t size, size_t i, const char *what)
{
    snprintf(buf, size, "node%zu_%s", i, what);
}

int cbfs_cluster_point_store(CbfsRepo *r, const CbfsClusterPoint *p, CbfsError *err)
{
    CbfsKv *kv = cbfs_kv_new();
    char *key = point_key(p->name), *text, k[64], v[32];
    int rc;

    cbfs_kv_set(kv, "name", p->name);
    cbfs_kv_set(kv, "time", p->time);
    cbfs_kv_set(kv, "coordinator", p->coordinator);
    cbfs_kv_set_u64(kv, "nodes", p->n);
    for (size_t i = 0; i < p->n; i++) {
        const CbfsPointNode *nd = &p->nodes[i];
        node_key(k, sizeof(k), i, "name");
        cbfs_kv_set(kv, k, nd->node);
        node_key(k, sizeof(k), i, "lsn");
        cbfs_lsn_format(nd->lsn, v, sizeof(v));
        cbfs_kv_set(kv, k, v);
        node_key(k, sizeof(k), i, "timeline");
        cbfs_kv_set_u64(kv, k, nd->timeline);
        node_key(k, sizeof(k), i, "system_identifier");
        cbfs_kv_set_u64(kv, k, nd->system_identifier);
        node_key(k, sizeof(k), i, "group");
        snprintf(v, sizeof(v), "%d", nd->group);
        cbfs_kv_set(kv, k, v);
        node_key(k, sizeof(k), i, "host");
        cbfs_kv_set(kv, k, nd->host ? nd->host : "");
        node_key(k, sizeof(k), i, "port");
        cbfs_kv_set_u64(kv, k, (uint64_t) nd->port);
    }
    cbfs_kv_set(kv, "pg_dist_node", p->dist_node ? p->dist_node : "");
    text = cbfs_kv_format(kv);
    rc = cbfs_store_put(r->shared, key, text, strlen(text), err);
    if (rc == -EEXIST)
        rc = cbfs_error_set(err, EEXIST, CBFS_EXIT_CONFLICT,
                            "cluster restore point \"%s\" already exists in repository \"%s\"",
                            p->name, r->display);
    else if (rc < 0)
        cbfs_error_prefix(err, "could not store \"%s\"", key);
    free(text);
    free(key);
    cbfs_kv_free(kv);
    return rc;
}

static int damaged(const char *key, CbfsError *err)
{
    return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                          "cluster restore point \"%s\" is damaged", key);
}

/* Parse kv into p (zeroed first); -EBADMSG on anything missing. */
static int parse(const CbfsKv *kv, const char *name, CbfsClusterPoint *p)
{
    uint64_t n, u;
    const char *s;
    char k[64];

    memset(p, 0, sizeof(*p));
    if (!(s = cbfs_kv_get(kv, "name")) || strcmp(s, name) != 0 || !cbfs_kv_get(kv, "time") ||
        !cbfs_kv_get(kv, "coordinator") || cbfs_kv_get_u64(kv, "nodes", &n) < 0 || n == 0 ||
        n > 100000)
        return -EBADMSG;
    p->name = cbfs_xstrdup(name);
    p->time = cbfs_xstrdup(cbfs_kv_get(kv, "time"));
    p->coordinator = cbfs_xstrdup(cbfs_kv_get(kv, "coordinator"));
    p->dist_node =
        cbfs_xstrdup(cbfs_kv_get(kv, "pg_dist_node") ? cbfs_kv_get(kv, "pg_dist_node") : "");
    p->nodes = cbfs_xcalloc(n, sizeof(CbfsPointNode));
    for (size_t i = 0; i < n; i++) {
        CbfsPointNode *nd = &p->nodes[p->n++];
        node_key(k, sizeof(k), i, "name");
        if (!(s = cbfs_kv_get(kv, k)) || !cbfs_node_name_valid(s))
            return -EBADMSG;
        nd->node = cbfs_xstrdup(s);
        node_key(k, sizeof(k), i, "lsn");
        if (!(s = cbfs_kv_get(kv, k)) || cbfs_lsn_parse(s, &nd->lsn) < 0)
            return -EBADMSG;
        node_key(k, sizeof(k), i, "timeline");
        if (cbfs_kv_get_u64(kv, k, &u) < 0 || u == 0 || u > UINT32_MAX)
            return -EBADMSG;
        nd->timeline = (uint32_t) u;
        node_key(k, sizeof(k), i, "system_identifier");
        if (cbfs_kv_get_u64(kv, k, &nd->system_identifier) < 0)
            return -EBADMSG;
        node_key(k, sizeof(k), i, "group");
        nd->group = (s = cbfs_kv_get(kv, k)) ? atoi(s) : -1;
        node_key(k, sizeof(k), i, "host");
        nd->host = cbfs_xstrdup((s = cbfs_kv_get(kv, k)) ? s : "");
        node_key(k, sizeof(k), i, "port");
        nd->port = cbfs_kv_get_u64(kv, k, &u) == 0 && u < 65536 ? (int) u : 0;
    }
    if (!cbfs_cluster_point_node(p, p->coordinator))
        return -EBADMSG;
    return 0;
}

int cbfs_cluster_point_read(CbfsRepo *r, const char *name, CbfsClusterPoint *ret, CbfsError *err)
{
    char *key;
    CbfsKv *kv;
    int rc;

    memset(ret, 0, sizeof(*ret));
    if (!cbfs_label_valid(name))
        return -ENOENT;
    key = point_key(name);
    rc = cbfs_store_get_kv(r->shared, key, &kv, err);
    if (rc == -EBADMSG || rc == -EINVAL) {
        rc = damaged(key, err);
    } else if (rc == 0) {
        if (parse(kv, name, ret) < 0) {
            cbfs_cluster_point_release(ret);
            rc = damaged(key, err);
        }
        cbfs_kv_free(kv);
    }
    free(key);
    return rc;
}

static int cmp_point(const void *a, const void *b)
{
    const CbfsClusterPoint *x = a, *y = b;
    int c = strcmp(x->time, y->time);
    return c ? c : strcmp(x->name, y->name);
}

int cbfs_cluster_point_list(CbfsRepo *r, CbfsClusterPoint **ret, size_t *ret_n, CbfsError *err)
{
    char **names;
    size_t n, k = 0;
    CbfsClusterPoint *v;
    int rc = cbfs_store_list_names(r->shared, PREFIX, "", &names, &n, err);

    if (rc < 0)
        return rc;
    v = cbfs_xcalloc(n ? n : 1, sizeof(CbfsClusterPoint));
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = cbfs_cluster_point_read(r, names[i], &v[k], err);
        if (rc == 0)
            k++;
        else if (rc == -ENOENT) /* an invalid name, or removed meanwhile */
            rc = 0;
    }
    cbfs_store_free_names(names, n);
    if (rc < 0) {
        for (size_t i = 0; i < k; i++)
            cbfs_cluster_point_release(&v[i]);
        free(v);
        return rc;
    }
    if (k > 1)
        qsort(v, k, sizeof(*v), cmp_point);
    *ret = v;
    *ret_n = k;
    return 0;
}

int cbfs_cluster_point_remove(CbfsRepo *r, const char *name, CbfsError *err)
{
    char *key = point_key(name);
    int rc = cbfs_store_remove(r->shared, key, err);
    if (rc < 0 && rc != -ENOENT)
        cbfs_error_prefix(err, "could not remove \"%s\"", key);
    free(key);
    return rc == -ENOENT ? 0 : rc;
}

void cbfs_cluster_point_release(CbfsClusterPoint *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->nodes[i].node);
        free(p->nodes[i].host);
    }
    free(p->nodes);
    free(p->name);
    free(p->time);
    free(p->coordinator);
    free(p->dist_node);
    memset(p, 0, sizeof(*p));
}

const CbfsPointNode *cbfs_cluster_point_node(const CbfsClusterPoint *p, const char *node)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->nodes[i].node, node) == 0)
            return &p->nodes[i];
    return NULL;
}
