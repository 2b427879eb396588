/*
 * store_mem.c - an in-memory object store for unit tests.  Same contract as
 * every driver (create-once put, -ENOENT as a result); a mutex makes it
 * thread-safe.  Linear search: tests hold few objects.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/store.h"
#include "cbfs/util.h"

typedef struct MemObject {
    char *key;
    uint8_t *data;
    size_t len;
} MemObject;

typedef struct MemStore {
    CbfsStore base;
    pthread_mutex_t lock; /* guards objs and n */
    MemObject *objs;
    size_t n;
} MemStore;

static MemObject *find(MemStore *ms, const char *key)
{
    for (size_t i = 0; i < ms->n; i++)
        if (strcmp(ms->objs[i].key, key) == 0)
            return &ms->objs[i];
    return NULL;
}

static int mem_get_range(CbfsStore *st, const char *key, uint64_t off, size_t len, void *buf,
                         size_t *ret_n, CbfsError *err)
{
    MemStore *ms = (MemStore *) st;
    MemObject *o;
    size_t n = 0;
    (void) err;

    pthread_mutex_lock(&ms->lock);
    o = find(ms, key);
    if (o && off < o->len) {
        n = o->len - off < len ? o->len - off : len;
        memcpy(buf, o->data + off, n);
    }
    pthread_mutex_unlock(&ms->lock);
    if (!o)
        return -ENOENT;
    *ret_n = n;
    return 0;
}

static int mem_get(CbfsStore *st, const char *key, uint8_t **ret_buf, size_t *ret_len,
                   CbfsError *err)
{
    MemStore *ms = (MemStore *) st;
    MemObject *o;
    (void) err;

    pthread_mutex_lock(&ms->lock);
    o = find(ms, key);
    if (o) {
        *ret_buf = cbfs_xmalloc(o->len + 1);
        memcpy(*ret_buf, o->data, o->len);
        (*ret_buf)[o->len] = '\0';
        *ret_len = o->len;
    }
    pthread_mutex_unlock(&ms->lock);
    return o ? 0 : -ENOENT;
}

static int mem_put(CbfsStore *st, const char *key, const void *data, size_t len, CbfsError *err)
{
    MemStore *ms = (MemStore *) st;
    int rc = 0;

    if (!cbfs_store_key_valid(key))
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR, "invalid object name \"%s\"", key);
    pthread_mutex_lock(&ms->lock);
    if (find(ms, key)) {
        rc = -EEXIST;
    } else {
        ms->objs = cbfs_xrealloc(ms->objs, (ms->n + 1) * sizeof(MemObject));
        ms->objs[ms->n].key = cbfs_xstrdup(key);
        ms->objs[ms->n].data = cbfs_xmalloc(len);
        memcpy(ms->objs[ms->n].data, data, len);
        ms->objs[ms->n].len = len;
        ms->n++;
    }
    pthread_mutex_unlock(&ms->lock);
    return rc;
}

static int mem_replace(CbfsStore *st, const char *key, const void *data, size_t len, CbfsError *err)
{
    MemStore *ms = (MemStore *) st;
    MemObject *o;
    uint8_t *copy;

    if (!cbfs_store_key_valid(key))
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR, "invalid object name \"%s\"", key);
    copy = cbfs_xmalloc(len ? len : 1);
    memcpy(copy, data, len);
    pthread_mutex_lock(&ms->lock);
    o = find(ms, key);
    if (!o) {
        ms->objs = cbfs_xrealloc(ms->objs, (ms->n + 1) * sizeof(MemObject));
        o = &ms->objs[ms->n++];
        o->key = cbfs_xstrdup(key);
    } else {
        free(o->data);
    }
    o->data = copy;
    o->len = len;
    pthread_mutex_unlock(&ms->lock);
    return 0;
}

static int mem_stat(CbfsStore *st, const char *key, uint64_t *ret_size, CbfsError *err)
{
    MemStore *ms = (MemStore *) st;
    MemObject *o;
    (void) err;

    pthread_mutex_lock(&ms->lock);
    o = find(ms, key);
    if (o && ret_size)
        *ret_size = o->len;
    pthread_mutex_unlock(&ms->lock);
    return o ? 0 : -ENOENT;
}

static int mem_list(CbfsStore *st, const char *prefix, cbfs_store_list_cb cb, void *ctx,
                    CbfsError *err)
{
    MemStore *ms = (MemStore *) st;
    size_t n;
    char **keys;
    uint64_t *sizes;
    int rc = 0;
    (void) err;

    /* snapshot, so the callback may use the store */
    pthread_mutex_lock(&ms->lock);
    keys = cbfs_xcalloc(ms->n, sizeof(char *));
    sizes = cbfs_xcalloc(ms->n, sizeof(uint64_t));
    n = 0;
    for (size_t i = 0; i < ms->n; i++) {
        if (strncmp(ms->objs[i].key, prefix, strlen(prefix)) == 0) {
            keys[n] = cbfs_xstrdup(ms->objs[i].key);
            sizes[n++] = ms->objs[i].len;
        }
    }
    pthread_mutex_unlock(&ms->lock);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0)
            rc = cb(keys[i], sizes[i], ctx);
        free(keys[i]);
    }
    free(keys);
    free(sizes);
    return rc;
}

static int mem_remove(CbfsStore *st, const char *key, CbfsError *err)
{
    MemStore *ms = (MemStore *) st;
    MemObject *o;
    (void) err;

    pthread_mutex_lock(&ms->lock);
    o = find(ms, key);
    if (o) {
        free(o->key);
        free(o->data);
        *o = ms->objs[--ms->n];
    }
    pthread_mutex_unlock(&ms->lock);
    return o ? 0 : -ENOENT;
}

static void mem_free(CbfsStore *st)
{
    MemStore *ms = (MemStore *) st;
    for (size_t i = 0; i < ms->n; i++) {
        free(ms->objs[i].key);
        free(ms->objs[i].data);
    }
    free(ms->objs);
    free(st->display);
    pthread_mutex_destroy(&ms->lock);
    free(ms);
}

static const CbfsStoreOps mem_ops = {
    .name = "memory",
    .get_range = mem_get_range,
    .get = mem_get,
    .put = mem_put,
    .stat = mem_stat,
    .list = mem_list,
    .remove = mem_remove,
    .replace = mem_replace,
    .free = mem_free,
};

CbfsStore *cbfs_store_mem_new(void)
{
    MemStore *ms = cbfs_xcalloc(1, sizeof(*ms));
    ms->base.ops = &mem_ops;
    ms->base.display = cbfs_xstrdup("memory");
    pthread_mutex_init(&ms->lock, NULL);
    return &ms->base;
}
