/*
 * moved.c - relocation maps of repacked packs.  See moved.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/moved.h"
#include "cbfs/util.h"

char *cbfs_moved_key(const char *name)
{
    return cbfs_xasprintf("moved/%.2s/%s", name, name);
}

void cbfs_moved_release(CbfsMovedMap *m)
{
    free(m->ext);
    m->ext = NULL;
    m->n = 0;
}

static char *moved_format(const CbfsMovedMap *m)
{
    CbfsBuf b;
    uint8_t sum[CBFS_SHA256_LEN];
    char hex[2 * CBFS_SHA256_LEN + 1];

    cbfs_buf_init(&b);
    cbfs_buf_printf(&b, "cbfs-moved 1 %s\n", m->pack);
    for (size_t i = 0; i < m->n; i++)
        cbfs_buf_printf(&b, "%llu %llu %s %llu\n", (unsigned long long) m->ext[i].old_off,
                        (unsigned long long) m->ext[i].len, m->ext[i].new_pack,
                        (unsigned long long) m->ext[i].new_off);
    cbfs_sha256(b.data, b.len, sum);
    cbfs_hex_encode(sum, sizeof(sum), hex);
    cbfs_buf_printf(&b, "end %zu %s\n", m->n, hex);
    return b.data;
}

int cbfs_moved_store(CbfsStore *st, const CbfsMovedMap *m, CbfsError *err)
{
    char *key = cbfs_moved_key(m->pack), *text = moved_format(m);
    int rc = cbfs_store_put(st, key, text, strlen(text), err);
    if (rc == -EEXIST) {
        /* a killed gc stored it already: fine if it says the same */
        uint8_t *have;
        size_t len;
        rc = cbfs_store_get(st, key, &have, &len, err);
        if (rc == 0) {
            if (len != strlen(text) || memcmp(have, text, len) != 0)
                rc = cbfs_error_set(err, EEXIST, CBFS_EXIT_CONFLICT,
                                    "object \"%s\" already exists with different content", key);
            free(have);
        }
    }
    if (rc < 0 && rc != -EEXIST)
        cbfs_error_prefix(err, "could not store \"%s\"", key);
    free(text);
    free(key);
    return rc;
}

static int parse_map(const char *key, const char *name, char *text, size_t len, CbfsMovedMap *m,
                     CbfsError *err)
{
    char head[64], *tail, *line, *save = NULL;
    uint8_t sum[CBFS_SHA256_LEN];
    char hex[2 * CBFS_SHA256_LEN + 1], want_hex[2 * CBFS_SHA256_LEN + 1];
    unsigned long long count;

    memset(m, 0, sizeof(*m));
    snprintf(m->pack, sizeof(m->pack), "%s", name);
    snprintf(head, sizeof(head), "cbfs-moved 1 %s\n", name);
    if (len < strlen(head) || memcmp(text, head, strlen(head)) != 0 || text[len - 1] != '\n')
        goto bad;
    /* the last line: "end <count> <sha256>" over everything before it */
    text[len - 1] = '\0';
    tail = strrchr(text, '\n');
    if (!tail || sscanf(tail + 1, "end %llu %64s", &count, want_hex) != 2)
        goto bad;
    cbfs_sha256(text, (size_t) (tail + 1 - text), sum);
    cbfs_hex_encode(sum, sizeof(sum), hex);
    if (strcmp(hex, want_hex) != 0)
        goto bad;
    *tail = '\0';
    m->ext = cbfs_xcalloc(count ? count : 1, sizeof(CbfsExtent));
    for (line = strtok_r(text + strlen(head), "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        CbfsExtent *e;
        unsigned long long o, l, no;
        char np[CBFS_PACK_NAME_LEN + 2];
        int used = 0;
        if (m->n == count || sscanf(line, "%llu %llu %33s %llu%n", &o, &l, np, &no, &used) != 4 ||
            line[used] != '\0' || !cbfs_pack_name_valid(np) || l == 0 ||
            (m->n && o < m->ext[m->n - 1].old_off + m->ext[m->n - 1].len))
            goto bad;
        e = &m->ext[m->n++];
        e->old_off = o;
        e->len = l;
        e->new_off = no;
        memcpy(e->new_pack, np, CBFS_PACK_NAME_LEN + 1); /* valid: 32 digits and NUL */
    }
    if (m->n != count)
        goto bad;
    return 0;
bad:
    cbfs_moved_release(m);
    return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT, "object \"%s\" is damaged", key);
}

int cbfs_moved_read(CbfsStore *st, const char *name, CbfsMovedMap *ret, CbfsError *err)
{
    char *key = cbfs_moved_key(name);
    uint8_t *text;
    size_t len;
    int rc = cbfs_store_get(st, key, &text, &len, err);
    if (rc == 0) {
        rc = parse_map(key, name, (char *) text, len, ret, err);
        free(text);
    }
    free(key);
    return rc;
}

const CbfsExtent *cbfs_moved_find(const CbfsMovedMap *m, uint64_t off, uint64_t len)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (m->ext[mid].old_off + m->ext[mid].len <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < m->n && m->ext[lo].old_off <= off && off + len <= m->ext[lo].old_off + m->ext[lo].len)
        return &m->ext[lo];
    return NULL;
}

/* Maps read by this process: a reader that met a moved pack will meet it
 * again for the next block.  An open hash table on the name's first 16 hex
 * digits (random) of entries that are never freed, so a map found can be
 * searched after the lock is let go.  A map that is not there, or is
 * damaged, is remembered too: a pack that is gone without a map stays so
 * (a map is stored before its pack is removed), and a missing pack's
 * thousand blocks should not cost a thousand requests.  Other failures (an
 * unreachable store) are not remembered. */
typedef struct Cached {
    CbfsMovedMap map; /* map.pack is the key */
    int rc;           /* 0, -ENOENT (no map) or -EBADMSG (damaged) */
    CbfsError err;    /* with -EBADMSG */
} Cached;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static Cached **cache; /* nslots entries, NULL where empty */
static size_t ncache, nslots;

static size_t name_slot(const char *name, size_t cap)
{
    uint64_t h = 0;
    for (int i = 0; i < 16 && name[i]; i++)
        h = h << 4 | (uint64_t) (name[i] <= '9' ? name[i] - '0' : (name[i] | 0x20) - 'a' + 10);
    return (size_t) h & (cap - 1);
}

/* The cache entry of name, or NULL.  Called with cache_lock held. */
static const Cached *cached(const char *name)
{
    if (!nslots)
        return NULL;
    for (size_t s = name_slot(name, nslots); cache[s]; s = (s + 1) & (nslots - 1))
        if (strcmp(cache[s]->map.pack, name) == 0)
            return cache[s];
    return NULL;
}

/* Add c (not cached yet).  Called with cache_lock held. */
static void cache_add(Cached *c)
{
    size_t s;
    if (2 * (ncache + 1) > nslots) {
        size_t cap = nslots ? 2 * nslots : 64;
        Cached **t = cbfs_xcalloc(cap, sizeof(*t));
        for (size_t i = 0; i < nslots; i++) {
            if (!cache[i])
                continue;
            for (s = name_slot(cache[i]->map.pack, cap); t[s]; s = (s + 1) & (cap - 1))
                ;
            t[s] = cache[i];
        }
        free(cache);
        cache = t;
        nslots = cap;
    }
    for (s = name_slot(c->map.pack, nslots); cache[s]; s = (s + 1) & (nslots - 1))
        ;
    cache[s] = c;
    __atomic_store_n(&ncache, ncache + 1, __ATOMIC_RELEASE);
}

/* name's cache entry in *ret, reading the map first if need be; < 0 (err
 * set) when it could not be read for a reason that may pass. */
static int lookup(CbfsStore *st, const char *name, const Cached **ret, CbfsError *err)
{
    const Cached *c;
    Cached *fresh;
    int rc;

    pthread_mutex_lock(&cache_lock);
    c = cached(name);
    pthread_mutex_unlock(&cache_lock);
    if (c) {
        *ret = c;
        return 0;
    }
    fresh = cbfs_xcalloc(1, sizeof(*fresh));
    cbfs_error_init(&fresh->err);
    rc = cbfs_moved_read(st, name, &fresh->map, &fresh->err);
    if (rc < 0 && rc != -ENOENT && rc != -EBADMSG) {
        *err = fresh->err;
        free(fresh);
        return rc;
    }
    fresh->rc = rc;
    snprintf(fresh->map.pack, sizeof(fresh->map.pack), "%s", name);
    pthread_mutex_lock(&cache_lock);
    c = cached(name);
    if (!c) {
        cache_add(fresh);
        c = fresh;
    } else { /* another thread was quicker */
        cbfs_moved_release(&fresh->map);
        free(fresh);
    }
    pthread_mutex_unlock(&cache_lock);
    *ret = c;
    return 0;
}

bool cbfs_moved_known(const char *name)
{
    const Cached *c;
    /* the usual case, a repository gc never rewrote: no lock on the read path */
    if (__atomic_load_n(&ncache, __ATOMIC_ACQUIRE) == 0)
        return false;
    pthread_mutex_lock(&cache_lock);
    c = cached(name);
    pthread_mutex_unlock(&cache_lock);
    return c && c->rc == 0;
}

int cbfs_moved_resolve(CbfsStore *st, const char *name, uint64_t off, uint64_t len, char *ret_pack,
                       uint64_t *ret_off, CbfsError *err)
{
    const Cached *c;
    const CbfsExtent *e;
    int rc = lookup(st, name, &c, err);

    if (rc < 0)
        return rc;
    if (c->rc == -ENOENT)
        return -ENOENT;
    if (c->rc < 0) {
        *err = c->err;
        return c->rc;
    }
    /* cached maps never change nor go away: searched unlocked */
    e = cbfs_moved_find(&c->map, off, len);
    if (!e) {
        char *key = cbfs_moved_key(name);
        rc = cbfs_error_set(err, ERANGE, CBFS_EXIT_CORRUPT,
                            "relocation map \"%s\" does not hold offset %llu (%llu bytes)", key,
                            (unsigned long long) off, (unsigned long long) len);
        free(key);
        return rc;
    }
    snprintf(ret_pack, CBFS_PACK_NAME_LEN + 1, "%s", e->new_pack);
    *ret_off = e->new_off + (off - e->old_off);
    return 0;
}
