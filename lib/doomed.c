/*
 * doomed.c - gc's lists of objects about to go.  See doomed.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cbfs/doomed.h"
#include "cbfs/pack.h"
#include "cbfs/util.h"

#define DOOMED_HEAD "cbfs-doomed 1\n"

void cbfs_doomed_add(char ***list, size_t *n, const char *name)
{
    *list = cbfs_xrealloc(*list, (*n + 1) * sizeof(char *));
    (*list)[(*n)++] = cbfs_xstrdup(name);
}

void cbfs_doomed_release(CbfsDoomed *d)
{
    cbfs_store_free_names(d->packs, d->npacks);
    cbfs_store_free_names(d->manifests, d->nmanifests);
    cbfs_store_free_names(d->moved, d->nmoved);
    memset(d, 0, sizeof(*d));
}

int cbfs_doomed_store(CbfsRepo *r, const CbfsDoomed *d, char **ret_key, CbfsError *err)
{
    CbfsBuf b;
    char when[32], hex[17], *key;
    uint8_t rnd[8];
    struct tm tm;
    time_t now = time(NULL);
    int rc;

    cbfs_buf_init(&b);
    cbfs_buf_append(&b, DOOMED_HEAD, strlen(DOOMED_HEAD));
    for (size_t i = 0; i < d->npacks; i++)
        cbfs_buf_printf(&b, "pack %s\n", d->packs[i]);
    for (size_t i = 0; i < d->nmanifests; i++)
        cbfs_buf_printf(&b, "manifest %s\n", d->manifests[i]);
    for (size_t i = 0; i < d->nmoved; i++)
        cbfs_buf_printf(&b, "moved %s\n", d->moved[i]);
    cbfs_buf_printf(&b, "end %zu\n", d->npacks + d->nmanifests + d->nmoved);
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y%m%dT%H%M%SZ", &tm);
    cbfs_random_bytes(rnd, sizeof(rnd));
    cbfs_hex_encode(rnd, sizeof(rnd), hex);
    key = cbfs_xasprintf("gc/%s.%s", when, hex);
    rc = cbfs_store_put(r->store, key, b.data, b.len, err);
    if (rc == -EEXIST)
        rc = cbfs_error_set(err, EEXIST, CBFS_EXIT_ERROR, "object \"%s\" already exists", key);
    if (rc < 0) {
        cbfs_error_prefix(err, "could not store the list of objects to remove");
        free(key);
    } else
        *ret_key = key;
    cbfs_buf_release(&b);
    return rc;
}

int cbfs_doomed_keys(CbfsRepo *r, char ***ret, size_t *ret_n, CbfsError *err)
{
    char **names;
    size_t n;
    int rc = cbfs_store_list_names(r->store, "gc/", "", &names, &n, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        char *key = cbfs_xasprintf("gc/%s", names[i]);
        free(names[i]);
        names[i] = key;
    }
    *ret = names;
    *ret_n = n;
    return 0;
}

/* Parse one list's text: its packs are added to *packs. */
static int parse_list(const char *key, char *text, size_t len, char ***packs, size_t *npacks,
                      CbfsError *err)
{
    size_t count = 0, want;
    char *line, *save = NULL, *end;
    bool ended = false;

    if (len < strlen(DOOMED_HEAD) || memcmp(text, DOOMED_HEAD, strlen(DOOMED_HEAD)) != 0)
        goto bad;
    for (line = strtok_r(text + strlen(DOOMED_HEAD), "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (ended)
            goto bad;
        if (strncmp(line, "pack ", 5) == 0) {
            if (!cbfs_pack_name_valid(line + 5))
                goto bad;
            cbfs_doomed_add(packs, npacks, line + 5);
            count++;
        } else if (strncmp(line, "manifest ", 9) == 0 || strncmp(line, "moved ", 6) == 0) {
            count++;
        } else if (strncmp(line, "end ", 4) == 0) {
            want = strtoull(line + 4, &end, 10);
            if (*end || want != count)
                goto bad;
            ended = true;
        } else
            goto bad;
    }
    if (ended)
        return 0;
bad:
    return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT, "object \"%s\" is damaged", key);
}

int cbfs_doomed_packs(CbfsRepo *r, char ***ret, size_t *ret_n, CbfsError *err)
{
    char **keys = NULL, **packs = NULL;
    size_t nkeys = 0, npacks = 0, out = 0;
    int rc = cbfs_doomed_keys(r, &keys, &nkeys, err);

    for (size_t i = 0; i < nkeys && rc == 0; i++) {
        uint8_t *text;
        size_t len;
        rc = cbfs_store_get(r->store, keys[i], &text, &len, err);
        if (rc == -ENOENT) { /* gc finished with it meanwhile */
            rc = 0;
            continue;
        }
        if (rc == 0) {
            rc = parse_list(keys[i], (char *) text, len, &packs, &npacks, err);
            free(text);
        }
    }
    cbfs_store_free_names(keys, nkeys);
    if (rc < 0) {
        cbfs_store_free_names(packs, npacks);
        return rc;
    }
    if (npacks)
        qsort(packs, npacks, sizeof(char *), cbfs_cmp_strp);
    for (size_t i = 0; i < npacks; i++) {
        if (out && strcmp(packs[out - 1], packs[i]) == 0)
            free(packs[i]);
        else
            packs[out++] = packs[i];
    }
    *ret = packs;
    *ret_n = out;
    return 0;
}
