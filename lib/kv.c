/*
 * kv.c - "key = value" metadata text.  Small (tens of keys): a flat array.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/kv.h"
#include "cbfs/util.h"

struct CbfsKv {
    char **keys;
    char **values;
    size_t n;
};

CbfsKv *cbfs_kv_new(void)
{
    return cbfs_xcalloc(1, sizeof(CbfsKv));
}

void cbfs_kv_free(CbfsKv *kv)
{
    if (!kv)
        return;
    for (size_t i = 0; i < kv->n; i++) {
        free(kv->keys[i]);
        free(kv->values[i]);
    }
    free(kv->keys);
    free(kv->values);
    free(kv);
}

void cbfs_kv_set(CbfsKv *kv, const char *key, const char *value)
{
    for (size_t i = 0; i < kv->n; i++) {
        if (strcmp(kv->keys[i], key) == 0) {
            free(kv->values[i]);
            kv->values[i] = cbfs_xstrdup(value);
            return;
        }
    }
    kv->keys = cbfs_xrealloc(kv->keys, (kv->n + 1) * sizeof(char *));
    kv->values = cbfs_xrealloc(kv->values, (kv->n + 1) * sizeof(char *));
    kv->keys[kv->n] = cbfs_xstrdup(key);
    kv->values[kv->n] = cbfs_xstrdup(value);
    kv->n++;
}

void cbfs_kv_unset(CbfsKv *kv, const char *key)
{
    for (size_t i = 0; i < kv->n; i++) {
        if (strcmp(kv->keys[i], key) == 0) {
            free(kv->keys[i]);
            free(kv->values[i]);
            memmove(&kv->keys[i], &kv->keys[i + 1], (kv->n - i - 1) * sizeof(char *));
            memmove(&kv->values[i], &kv->values[i + 1], (kv->n - i - 1) * sizeof(char *));
            kv->n--;
            return;
        }
    }
}

void cbfs_kv_set_u64(CbfsKv *kv, const char *key, uint64_t value)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long) value);
    cbfs_kv_set(kv, key, buf);
}

const char *cbfs_kv_get(const CbfsKv *kv, const char *key)
{
    for (size_t i = 0; i < kv->n; i++)
        if (strcmp(kv->keys[i], key) == 0)
            return kv->values[i];
    return NULL;
}

int cbfs_kv_get_u64(const CbfsKv *kv, const char *key, uint64_t *ret)
{
    const char *v = cbfs_kv_get(kv, key);
    char *end;
    unsigned long long n;

    if (!v)
        return -ENOENT;
    if (!isdigit((unsigned char) *v))
        return -EINVAL;
    errno = 0;
    n = strtoull(v, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *ret = n;
    return 0;
}

static bool valid_key(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char) s[i]) || isdigit((unsigned char) s[i]) || s[i] == '_'))
            return false;
    return true;
}

int cbfs_kv_parse(const char *text, size_t len, CbfsKv **ret_kv, CbfsError *err)
{
    CbfsKv *kv = cbfs_kv_new();
    size_t pos = 0;
    int lineno = 0;

    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t) (nl - line) : len - pos;
        const char *eq;
        size_t klen;
        CbfsBuf val;

        pos += n + (nl ? 1 : 0);
        lineno++;
        if (n == 0 || line[0] == '#')
            continue;
        eq = memchr(line, '=', n);
        if (!eq)
            goto bad;
        klen = (size_t) (eq - line);
        while (klen > 0 && line[klen - 1] == ' ')
            klen--;
        if (!valid_key(line, klen))
            goto bad;
        eq++;
        if (eq < line + n && *eq == ' ')
            eq++;
        cbfs_buf_init(&val);
        for (const char *s = eq; s < line + n; s++) {
            if (*s == '\\') {
                if (s + 1 >= line + n || (s[1] != 'n' && s[1] != '\\')) {
                    cbfs_buf_release(&val);
                    goto bad;
                }
                cbfs_buf_append(&val, s[1] == 'n' ? "\n" : "\\", 1);
                s++;
            } else {
                cbfs_buf_append(&val, s, 1);
            }
        }
        {
            char *key = cbfs_xasprintf("%.*s", (int) klen, line);
            cbfs_kv_set(kv, key, val.data);
            free(key);
        }
        cbfs_buf_release(&val);
    }
    *ret_kv = kv;
    return 0;
bad:
    cbfs_kv_free(kv);
    return cbfs_error_set(err, EINVAL, CBFS_EXIT_CORRUPT, "invalid metadata at line %d", lineno);
}

char *cbfs_kv_format(const CbfsKv *kv)
{
    CbfsBuf b;
    cbfs_buf_init(&b);
    for (size_t i = 0; i < kv->n; i++) {
        cbfs_buf_printf(&b, "%s = ", kv->keys[i]);
        for (const char *s = kv->values[i]; *s; s++) {
            if (*s == '\n')
                cbfs_buf_append(&b, "\\n", 2);
            else if (*s == '\\')
                cbfs_buf_append(&b, "\\\\", 2);
            else
                cbfs_buf_append(&b, s, 1);
        }
        cbfs_buf_append(&b, "\n", 1);
    }
    return b.data;
}
