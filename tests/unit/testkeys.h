/*
 * testkeys.h - a new repository's keys for unit tests, with the smallest
 * scrypt parameters accepted (N = 1024) to keep them fast.
 */
#ifndef CBFS_TESTKEYS_H
#define CBFS_TESTKEYS_H

#include <stdio.h>

#include "cbfs/crypt.h"
#include "cbfs/kv.h"

/* The config of a new encrypted repository id (caller frees) and its
 * unlocked keys in *ret. */
static inline CbfsKv *test_keys(const char *id, const char *display, const char *passphrase,
                                CbfsCrypt **ret)
{
    static const CbfsKdfParams fast = {1024, 8, 1};
    CbfsKv *kv = cbfs_kv_new();
    CbfsError err;
    cbfs_error_init(&err);
    if (cbfs_crypt_create(kv, id, display, passphrase, &fast, ret, &err) < 0)
        printf("# cbfs_crypt_create: %s\n", err.msg);
    return kv;
}

/* Unlocked keys of a new repository (caller frees). */
static inline CbfsCrypt *test_crypt(void)
{
    CbfsCrypt *crypt = NULL;
    cbfs_kv_free(test_keys("00112233445566778899aabbccddeeff", "/test", "pw", &crypt));
    return crypt;
}

#endif
