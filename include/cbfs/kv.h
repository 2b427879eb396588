/*
 * kv.h - the small text format of the repository's own metadata objects
 * (config, cluster, backup records): one "key = value" per line, '#' starts
 * a comment line, values are single-line with '\\' and newline escaped
 * ("\\\\", "\\n").  Keys are [a-z0-9_]+.  Unknown keys are kept, so newer
 * writers can add fields.
 */
#ifndef CBFS_KV_H
#define CBFS_KV_H

#include <stddef.h>
#include <stdint.h>

#include "cbfs/error.h"

typedef struct CbfsKv CbfsKv;

CbfsKv *cbfs_kv_new(void);
void cbfs_kv_free(CbfsKv *kv);

/* Parse text (len bytes); -EINVAL and err on a malformed line. */
int cbfs_kv_parse(const char *text, size_t len, CbfsKv **ret_kv, CbfsError *err);
/* Serialize; caller frees. */
char *cbfs_kv_format(const CbfsKv *kv);

/* Set (replace) a value. */
void cbfs_kv_set(CbfsKv *kv, const char *key, const char *value);
/* Remove key (absent: nothing). */
void cbfs_kv_unset(CbfsKv *kv, const char *key);
void cbfs_kv_set_u64(CbfsKv *kv, const char *key, uint64_t value);
/* Borrowed until the key is set again or kv freed; NULL if absent. */
const char *cbfs_kv_get(const CbfsKv *kv, const char *key);
/* 0, -ENOENT if absent, -EINVAL if not an unsigned decimal. */
int cbfs_kv_get_u64(const CbfsKv *kv, const char *key, uint64_t *ret);

#endif
