/*
 * test-crypt.c - unit tests for lib/crypt.c (keys, AES-256-GCM, HMAC ids)
 * and lib/passphrase.c (where a passphrase comes from).
 *
 * AES-256-GCM is checked against test case 14 of the GCM specification
 * (McGrew and Viega: zero key, zero nonce, one zero block).  Every open of
 * something that is not exactly what was sealed, under the same key and
 * AAD, must fail and leave nothing of the plaintext behind.  The scrypt
 * parameters are the smallest accepted here (N = 1024) to keep the tests
 * fast; the default is tested once.  The key cache is off (TTL 0) but in
 * test_cache.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/keyctl.h>

#include "cbfs/crypt.h"
#include "cbfs/kv.h"
#include "cbfs/passphrase.h"
#include "cbfs/util.h"
#include "tap.h"

static const CbfsKdfParams fast = {1024, 8, 1};
static const char repo_id[] = "0123456789abcdef0123456789abcdef";

static char tmpdir[] = "/tmp/cbfs-test-crypt.XXXXXX";

/* ---- primitives ---- */

static void test_gcm_vector(void)
{
    /* GCM spec test case 14: K = 0^256, IV = 0^96, P = 0^128 */
    static const char *ct_hex = "cea7403d4d606b6e074ec5d3baf39d18";
    static const char *tag_hex = "d0d1c8a799996bf0265b98b5d48ab919";
    uint8_t key[CBFS_CRYPT_KEY_LEN] = {0}, sealed[12 + 16 + 16] = {0}, out[16];

    cbfs_hex_decode(ct_hex, sealed + 12, 16);
    cbfs_hex_decode(tag_hex, sealed + 28, 16);
    memset(out, 0xAA, sizeof(out));
    is_int(cbfs_aead_open(key, NULL, 0, sealed, sizeof(sealed), out), 0, "GCM test case 14 opens");
    ok(cbfs_is_zero(out, sizeof(out)), "and gives the zero block");
    sealed[12] ^= 1;
    is_int(cbfs_aead_open(key, NULL, 0, sealed, sizeof(sealed), out), -EBADMSG,
           "test case 14 with a flipped ciphertext bit: -EBADMSG");
    sealed[12] ^= 1;
    key[0] = 1;
    is_int(cbfs_aead_open(key, NULL, 0, sealed, sizeof(sealed), out), -EBADMSG,
           "test case 14 under another key: -EBADMSG");
    key[0] = 0;
    is_int(cbfs_aead_open(key, "x", 1, sealed, sizeof(sealed), out), -EBADMSG,
           "test case 14 with an AAD it was not made with: -EBADMSG");
}

static void test_seal_open(void)
{
    uint8_t key[CBFS_CRYPT_KEY_LEN], other[CBFS_CRYPT_KEY_LEN];
    const char *aad = "cbfs test\0object/one";
    size_t aad_len = 20;
    static const size_t lens[] = {0, 1, 15, 16, 17, 4096, 65536 + 3};
    int flips_failed = 0, flips_total = 0, wiped = 1;

    cbfs_random_bytes(key, sizeof(key));
    cbfs_random_bytes(other, sizeof(other));
    for (size_t l = 0; l < CBFS_ARRAY_LEN(lens); l++) {
        size_t len = lens[l];
        uint8_t *plain = malloc(len + 1), *sealed = malloc(len + CBFS_CRYPT_OVERHEAD);
        uint8_t *again = malloc(len + CBFS_CRYPT_OVERHEAD), *out = malloc(len + 1);

        for (size_t i = 0; i < len; i++)
            plain[i] = (uint8_t) (i * 7 + 1);
        cbfs_aead_seal(key, aad, aad_len, plain, len, sealed);
        memset(out, 0xEE, len + 1);
        is_int(cbfs_aead_open(key, aad, aad_len, sealed, len + CBFS_CRYPT_OVERHEAD, out), 0,
               "%zu bytes: seal then open", len);
        ok(memcmp(out, plain, len) == 0, "%zu bytes: the plaintext comes back", len);
        ok(len < 16 || memmem(sealed, len + CBFS_CRYPT_OVERHEAD, plain, 16) == NULL,
           "%zu bytes: the sealed form does not hold the plaintext", len);
        cbfs_aead_seal(key, aad, aad_len, plain, len, again);
        ok(memcmp(sealed, again, CBFS_CRYPT_NONCE_LEN) != 0,
           "%zu bytes: a second seal has another nonce", len);
        is_int(cbfs_aead_open(other, aad, aad_len, sealed, len + CBFS_CRYPT_OVERHEAD, out),
               -EBADMSG, "%zu bytes: another key: -EBADMSG", len);
        is_int(cbfs_aead_open(key, aad, aad_len - 1, sealed, len + CBFS_CRYPT_OVERHEAD, out),
               -EBADMSG, "%zu bytes: a shorter AAD: -EBADMSG", len);
        is_int(cbfs_aead_open(key, "cbfs test\0object/two", aad_len, sealed,
                              len + CBFS_CRYPT_OVERHEAD, out),
               -EBADMSG, "%zu bytes: another object's AAD: -EBADMSG", len);
        is_int(cbfs_aead_open(key, aad, aad_len, sealed, len + CBFS_CRYPT_OVERHEAD - 1, out),
               -EBADMSG, "%zu bytes: truncated: -EBADMSG", len);
        if (len <= 4096) {
            /* every bit of nonce, ciphertext and tag counts */
            for (size_t i = 0; i < len + CBFS_CRYPT_OVERHEAD; i++) {
                uint8_t bit = (uint8_t) (1u << (i % 8));
                sealed[i] ^= bit;
                memset(out, 0x55, len + 1);
                flips_total++;
                if (cbfs_aead_open(key, aad, aad_len, sealed, len + CBFS_CRYPT_OVERHEAD, out) ==
                    -EBADMSG)
                    flips_failed++;
                for (size_t k = 0; k < len; k++)
                    if (out[k] != 0 && out[k] != 0x55)
                        wiped = 0;
                sealed[i] ^= bit;
            }
        }
        {
            /* in place: in == out + nonce */
            memcpy(again + CBFS_CRYPT_NONCE_LEN, plain, len);
            cbfs_aead_seal(key, aad, aad_len, again + CBFS_CRYPT_NONCE_LEN, len, again);
            is_int(cbfs_aead_open(key, aad, aad_len, again, len + CBFS_CRYPT_OVERHEAD, out), 0,
                   "%zu bytes: sealed in place, opens", len);
            ok(memcmp(out, plain, len) == 0, "%zu bytes: sealed in place, same plaintext", len);
        }
        free(plain);
        free(sealed);
        free(again);
        free(out);
    }
    is_int(flips_failed, flips_total, "every one of %d single-bit flips fails to open",
           flips_total);
    ok(wiped, "a failed open leaves no plaintext in out");
    {
        uint8_t out[4];
        is_int(cbfs_aead_open(key, NULL, 0, "short", 5, out), -EBADMSG,
               "shorter than nonce and tag: -EBADMSG");
    }
}

static void test_kdf(void)
{
    uint8_t salt[CBFS_CRYPT_SALT_LEN] = {1, 2, 3}, a[32], b[32], c[32];
    CbfsKdfParams kp = fast;
    CbfsError err;

    cbfs_error_init(&err);
    is_int(cbfs_kdf_derive("passphrase", salt, &kp, a, &err), 0, "scrypt derives a key");
    cbfs_kdf_derive("passphrase", salt, &kp, b, &err);
    ok(memcmp(a, b, 32) == 0, "the same passphrase, salt and parameters: the same key");
    cbfs_kdf_derive("passphrasE", salt, &kp, c, &err);
    ok(memcmp(a, c, 32) != 0, "another passphrase: another key");
    salt[0] = 9;
    cbfs_kdf_derive("passphrase", salt, &kp, c, &err);
    ok(memcmp(a, c, 32) != 0, "another salt: another key");
    salt[0] = 1;
    kp.n = 2048;
    cbfs_kdf_derive("passphrase", salt, &kp, c, &err);
    ok(memcmp(a, c, 32) != 0, "another N: another key");
    is_str(err.msg, "", "no error so far");
    {
        static const CbfsKdfParams bad[] = {
            {1000, 8, 1},  {0, 8, 1},    {1u << 25, 8, 1}, {1024, 0, 1},
            {1024, 33, 1}, {1024, 8, 0}, {1024, 8, 17},    {1u << 24, 32, 1}, /* 4 GiB */
        };
        for (size_t i = 0; i < CBFS_ARRAY_LEN(bad); i++) {
            cbfs_error_init(&err);
            is_int(cbfs_kdf_derive("x", salt, &bad[i], a, &err), -EINVAL,
                   "scrypt N=%llu r=%u p=%u is refused", (unsigned long long) bad[i].n, bad[i].r,
                   bad[i].p);
            ok(strstr(err.msg, "unsupported scrypt parameters") != NULL, "message \"%s\"", err.msg);
        }
    }
    {
        double t0 = cbfs_now();
        cbfs_error_init(&err);
        is_int(cbfs_kdf_derive("passphrase", salt, &cbfs_kdf_default, a, &err), 0,
               "the default parameters (N=2^17, r=8: 128 MiB) work");
        printf("# scrypt with the default parameters took %.2f s\n", cbfs_now() - t0);
        ok(cbfs_kdf_default.n == (1u << 17) && cbfs_kdf_default.r == 8 && cbfs_kdf_default.p == 1,
           "the default is N=2^17 r=8 p=1");
    }
}

/* ---- the repository's keys ---- */

typedef struct Ask {
    const char *answer;
    int calls;
} Ask;

static int ask(void *ctx, char **ret, CbfsError *err)
{
    Ask *a = ctx;
    __atomic_add_fetch(&a->calls, 1, __ATOMIC_SEQ_CST);
    if (!a->answer)
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_USAGE, "no passphrase here");
    *ret = cbfs_xstrdup(a->answer);
    return 0;
}

/* A config with fresh keys for passphrase; *ret unlocked. */
static CbfsKv *make_config(const char *passphrase, CbfsCrypt **ret)
{
    CbfsKv *kv = cbfs_kv_new();
    CbfsError err;
    cbfs_error_init(&err);
    cbfs_kv_set(kv, "repository_id", repo_id);
    if (cbfs_crypt_create(kv, repo_id, "/test/repo", passphrase, &fast, ret, &err) < 0)
        printf("# cbfs_crypt_create: %s\n", err.msg);
    return kv;
}

static void test_create_open(void)
{
    CbfsCrypt *made = NULL, *c = NULL;
    CbfsKv *kv = make_config("correct horse", &made);
    CbfsError err;
    Ask a = {"correct horse", 0};
    uint8_t id1[32], id2[32], sha[32];
    const char *data = "a block of data";

    ok(made && cbfs_crypt_unlocked(made), "a new repository's keys are unlocked");
    is_str(cbfs_kv_get(kv, "encryption"), "aes-256-gcm", "config: encryption");
    is_str(cbfs_kv_get(kv, "kdf"), "scrypt", "config: kdf");
    is_str(cbfs_kv_get(kv, "kdf_n"), "1024", "config: kdf_n");
    is_str(cbfs_kv_get(kv, "kdf_r"), "8", "config: kdf_r");
    is_str(cbfs_kv_get(kv, "kdf_p"), "1", "config: kdf_p");
    ok(cbfs_kv_get(kv, "kdf_salt") && strlen(cbfs_kv_get(kv, "kdf_salt")) == 32,
       "config: a 16-byte salt in hex");
    ok(cbfs_kv_get(kv, "master_key") && strlen(cbfs_kv_get(kv, "master_key")) == 120,
       "config: the wrapped master key (12 + 32 + 16 bytes) in hex");
    ok(cbfs_crypt_configured(kv), "configured");
    {
        CbfsKv *plain = cbfs_kv_new();
        ok(!cbfs_crypt_configured(plain), "a config without the keys is not");
        cbfs_kv_free(plain);
    }

    cbfs_error_init(&err);
    is_int(cbfs_crypt_from_config(kv, repo_id, "/test/repo", ask, &a, &c, &err), 0,
           "open the keys from the config");
    ok(!cbfs_crypt_unlocked(c), "locked at first");
    is_int(a.calls, 0, "and the passphrase not asked for yet");
    is_int(cbfs_crypt_unlock(c, &err), 0, "unlock");
    is_int(a.calls, 1, "the passphrase was asked for once");
    is_int(cbfs_crypt_unlock(c, &err), 0, "unlock again");
    is_int(a.calls, 1, "not asked again");
    ok(cbfs_crypt_same_key(c, made), "the same master key as at creation");
    is_str(cbfs_crypt_repo_id(c), repo_id, "the repository id");

    /* ids: keyed, deterministic, never the plain SHA-256 */
    cbfs_crypt_block_id(made, data, strlen(data), id1);
    cbfs_crypt_block_id(c, data, strlen(data), id2);
    cbfs_sha256(data, strlen(data), sha);
    ok(memcmp(id1, id2, 32) == 0, "block ids are the same under the same master key");
    ok(memcmp(id1, sha, 32) != 0, "a block id is not the SHA-256 of the block");
    cbfs_crypt_block_id(c, "a block of datA", 15, id2);
    ok(memcmp(id1, id2, 32) != 0, "another block: another id");
    {
        CbfsCrypt *other = NULL;
        CbfsKv *kv2 = make_config("correct horse", &other);
        cbfs_crypt_block_id(other, data, strlen(data), id2);
        ok(memcmp(id1, id2, 32) != 0,
           "the same block in another repository (same passphrase): another id");
        ok(!cbfs_crypt_same_key(other, made), "and another master key");
        cbfs_crypt_free(other);
        cbfs_kv_free(kv2);
    }

    /* seal under one, open under the other */
    {
        uint8_t sealed[64 + CBFS_CRYPT_OVERHEAD], out[64];
        cbfs_crypt_seal(made, "aad", 3, data, strlen(data), sealed);
        is_int(cbfs_crypt_open(c, "aad", 3, sealed, strlen(data) + CBFS_CRYPT_OVERHEAD, out), 0,
               "sealed at creation, opened after unlock");
        ok(memcmp(out, data, strlen(data)) == 0, "same content");
        is_int(cbfs_crypt_open(c, "aaD", 3, sealed, strlen(data) + CBFS_CRYPT_OVERHEAD, out),
               -EBADMSG, "with another AAD: -EBADMSG");
    }
    is_str(err.msg, "", "no error message in all that");
    cbfs_crypt_free(c);
    cbfs_crypt_free(made);
    cbfs_kv_free(kv);
    cbfs_crypt_free(NULL);
}

static void test_wrong(void)
{
    CbfsCrypt *made = NULL, *c = NULL;
    CbfsKv *kv = make_config("right", &made);
    CbfsError err;
    Ask wrong = {"wrong", 0}, none = {NULL, 0};

    cbfs_error_init(&err);
    cbfs_crypt_from_config(kv, repo_id, "/test/repo", ask, &wrong, &c, &err);
    is_int(cbfs_crypt_unlock(c, &err), -EACCES, "a wrong passphrase: -EACCES");
    is_str(err.msg, "could not open repository \"/test/repo\": wrong passphrase",
           "a wrong passphrase: the message");
    is_int(err.code, CBFS_EXIT_REPO, "a wrong passphrase: CBFS_EXIT_REPO");
    ok(!cbfs_crypt_unlocked(c), "still locked");
    cbfs_error_init(&err);
    is_int(cbfs_crypt_unlock(c, &err), -EACCES, "a second unlock fails the same way");
    is_str(err.msg, "could not open repository \"/test/repo\": wrong passphrase",
           "with the same message");
    is_int(wrong.calls, 1, "without asking again");
    cbfs_crypt_free(c);

    cbfs_error_init(&err);
    cbfs_crypt_from_config(kv, repo_id, "/test/repo", ask, &none, &c, &err);
    is_int(cbfs_crypt_unlock(c, &err), -EACCES,
           "no passphrase: the callback's -ENOENT becomes -EACCES (not \"absent\")");
    is_str(err.msg, "could not open repository \"/test/repo\": no passphrase here",
           "no passphrase: the callback's message, naming the repository");
    is_int(err.code, CBFS_EXIT_USAGE, "no passphrase: the callback's code");
    cbfs_crypt_free(c);

    /* the wrapped key is bound to the repository id */
    cbfs_error_init(&err);
    cbfs_crypt_from_config(kv, "ffffffffffffffffffffffffffffffff", "/other", NULL, NULL, &c, &err);
    is_int(cbfs_crypt_unlock_with(c, "right", &err), -EACCES,
           "the master_key of another repository does not open, even with its passphrase");
    cbfs_crypt_free(c);

    /* lowered scrypt parameters in a tampered config do not help */
    {
        CbfsKv *t = cbfs_kv_new();
        char *text = cbfs_kv_format(kv);
        cbfs_kv_free(t);
        cbfs_kv_parse(text, strlen(text), &t, &err);
        cbfs_kv_set(t, "kdf_n", "2048");
        cbfs_error_init(&err);
        cbfs_crypt_from_config(t, repo_id, "/test/repo", NULL, NULL, &c, &err);
        is_int(cbfs_crypt_unlock_with(c, "right", &err), -EACCES,
               "the right passphrase with a changed kdf_n: refused");
        cbfs_crypt_free(c);
        cbfs_kv_free(t);
        free(text);
    }
    cbfs_crypt_free(made);
    cbfs_kv_free(kv);
}

static void test_bad_config(void)
{
    static const struct {
        const char *key, *value, *want;
    } cases[] = {
        {"encryption", "aes-128-cbc", "unsupported encryption \"aes-128-cbc\""},
        {"kdf", "pbkdf2", "unsupported key derivation \"pbkdf2\""},
        {"kdf_n", "many", "invalid encryption settings: kdf_n, kdf_r or kdf_p"},
        {"kdf_n", "1000", "unsupported scrypt parameters N=1000 r=8 p=1"},
        {"kdf_r", "64", "unsupported scrypt parameters N=1024 r=64 p=1"},
        {"kdf_salt", "00", "invalid encryption settings: kdf_salt or master_key"},
        {"kdf_salt", "zz0102030405060708090a0b0c0d0e0f",
         "invalid encryption settings: kdf_salt or master_key"},
        {"master_key", "abcd", "invalid encryption settings: kdf_salt or master_key"},
    };
    CbfsCrypt *made = NULL;
    CbfsKv *kv = make_config("x", &made);
    char *text = cbfs_kv_format(kv);

    for (size_t i = 0; i < CBFS_ARRAY_LEN(cases); i++) {
        CbfsKv *t = NULL;
        CbfsCrypt *c = (CbfsCrypt *) 1;
        CbfsError err;
        cbfs_error_init(&err);
        cbfs_kv_parse(text, strlen(text), &t, &err);
        cbfs_kv_set(t, cases[i].key, cases[i].value);
        is_int(cbfs_crypt_from_config(t, repo_id, "/r", NULL, NULL, &c, &err), -EINVAL,
               "%s = %s: -EINVAL", cases[i].key, cases[i].value);
        is_str(err.msg, cases[i].want, "%s = %s: message", cases[i].key, cases[i].value);
        cbfs_kv_free(t);
    }
    free(text);
    cbfs_crypt_free(made);
    cbfs_kv_free(kv);
}

static void test_rewrap(void)
{
    CbfsCrypt *made = NULL, *c = NULL;
    CbfsKv *kv = make_config("old", &made);
    char *salt = cbfs_xstrdup(cbfs_kv_get(kv, "kdf_salt"));
    char *wrapped = cbfs_xstrdup(cbfs_kv_get(kv, "master_key"));
    CbfsError err;

    cbfs_error_init(&err);
    is_int(cbfs_crypt_rewrap(made, kv, "new", &fast, &err), 0, "rewrap under a new passphrase");
    ok(strcmp(salt, cbfs_kv_get(kv, "kdf_salt")) != 0, "with a new salt");
    ok(strcmp(wrapped, cbfs_kv_get(kv, "master_key")) != 0, "and a new wrapped key");
    cbfs_crypt_from_config(kv, repo_id, "/r", NULL, NULL, &c, &err);
    is_int(cbfs_crypt_unlock_with(c, "old", &err), -EACCES, "the old passphrase is refused");
    cbfs_crypt_free(c);
    cbfs_error_init(&err);
    cbfs_crypt_from_config(kv, repo_id, "/r", NULL, NULL, &c, &err);
    is_int(cbfs_crypt_unlock_with(c, "new", &err), 0, "the new one opens");
    ok(cbfs_crypt_same_key(c, made), "the same master key: nothing to re-encrypt");
    cbfs_crypt_free(c);
    cbfs_crypt_free(made);
    cbfs_kv_free(kv);
    free(salt);
    free(wrapped);
}

/* Many threads unlock one crypt and make ids at once: one KDF, one answer. */
#define THREADS 8

typedef struct Racer {
    CbfsCrypt *c;
    pthread_barrier_t *barrier;
    int rc;
    uint8_t id[32];
} Racer;

static void *race(void *arg)
{
    Racer *r = arg;
    CbfsError err;
    cbfs_error_init(&err);
    pthread_barrier_wait(r->barrier);
    r->rc = cbfs_crypt_unlock(r->c, &err);
    if (r->rc == 0)
        for (int i = 0; i < 200; i++)
            cbfs_crypt_block_id(r->c, "racing", 6, r->id);
    return NULL;
}

static void test_threads(void)
{
    CbfsCrypt *made = NULL, *c = NULL;
    CbfsKv *kv = make_config("threads", &made);
    Ask a = {"threads", 0};
    pthread_t th[THREADS];
    Racer r[THREADS];
    pthread_barrier_t barrier;
    CbfsError err;
    uint8_t want[32];
    int good = 0;

    cbfs_error_init(&err);
    cbfs_crypt_from_config(kv, repo_id, "/r", ask, &a, &c, &err);
    cbfs_crypt_block_id(made, "racing", 6, want);
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        r[i] = (Racer){c, &barrier, -1, {0}};
        pthread_create(&th[i], NULL, race, &r[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        good += r[i].rc == 0 && memcmp(r[i].id, want, 32) == 0;
    }
    pthread_barrier_destroy(&barrier);
    is_int(good, THREADS, "%d threads unlock at once and make the same ids", THREADS);
    is_int(a.calls, 1, "the passphrase was asked for once");
    cbfs_crypt_free(c);
    cbfs_crypt_free(made);
    cbfs_kv_free(kv);
}

/* ---- passphrase sources ---- */

static char *write_pass(const char *name, const char *content, mode_t mode)
{
    char *path = cbfs_xasprintf("%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    fputs(content, f);
    fclose(f);
    chmod(path, mode);
    return path;
}

static void check_read(const char *what, int want_rc, const char *want)
{
    char *p = NULL;
    CbfsError err;
    int rc;
    cbfs_error_init(&err);
    rc = cbfs_passphrase_read(CBFS_PASSPHRASE_CURRENT, "/r", false, &p, &err);
    is_int(rc, want_rc, "%s: %d", what, want_rc);
    if (rc == 0)
        is_str(p, want, "%s: the passphrase", what);
    else
        is_str(err.msg, want, "%s: the message", what);
    if (rc < 0)
        is_int(err.code, CBFS_EXIT_USAGE, "%s: CBFS_EXIT_USAGE", what);
    cbfs_passphrase_free(p);
}

static void test_passphrase(void)
{
    char *good = write_pass("good", "from the file\n", 0600);
    char *crlf = write_pass("crlf", "with crlf\r\n", 0400);
    char *two = write_pass("two", "first line\nsecond\n\n", 0600);
    char *open_ = write_pass("open", "readable\n", 0644);
    char *group = write_pass("group", "group\n", 0640);
    char *gw = write_pass("gw", "group-writable\n", 0620);
    char *empty = write_pass("empty", "\n", 0600);
    char *msg;

    /* no terminal: never a prompt here */
    if (!freopen("/dev/null", "r", stdin))
        printf("# could not redirect stdin\n");
    unsetenv("CBFS_PASSPHRASE");
    unsetenv("CBFS_PASSPHRASE_FILE");
    unsetenv("CBFS_NEW_PASSPHRASE");
    check_read("nothing given", -ENOENT,
               "no passphrase was given (set CBFS_PASSPHRASE or CBFS_PASSPHRASE_FILE, or use "
               "--passphrase-file)");
    ok(cbfs_passphrase_file() == NULL, "no passphrase file");

    setenv("CBFS_PASSPHRASE_FILE", good, 1);
    check_read("CBFS_PASSPHRASE_FILE", 0, "from the file");
    is_str(cbfs_passphrase_file(), good, "the file in effect is CBFS_PASSPHRASE_FILE's");
    setenv("CBFS_PASSPHRASE", "from the environment", 1);
    check_read("CBFS_PASSPHRASE over CBFS_PASSPHRASE_FILE", 0, "from the environment");
    ok(cbfs_passphrase_file() == NULL, "no file in effect then");
    cbfs_passphrase_set_file(crlf);
    check_read("--passphrase-file over the environment", 0, "with crlf");
    is_str(cbfs_passphrase_file(), crlf, "the file in effect is the command line's");
    unsetenv("CBFS_PASSPHRASE");
    unsetenv("CBFS_PASSPHRASE_FILE");

    cbfs_passphrase_set_file(two);
    check_read("a file of several lines: its first line", 0, "first line");

    cbfs_passphrase_set_file(open_);
    msg = cbfs_xasprintf("passphrase file \"%s\" has group or world access; permissions should "
                         "be u=rw (0600) or less",
                         open_);
    check_read("mode 0644", -EACCES, msg);
    free(msg);
    cbfs_passphrase_set_file(group);
    msg = cbfs_xasprintf("passphrase file \"%s\" has group or world access; permissions should "
                         "be u=rw (0600) or less",
                         group);
    check_read("mode 0640", -EACCES, msg);
    free(msg);
    cbfs_passphrase_set_file(gw);
    msg = cbfs_xasprintf("passphrase file \"%s\" has group or world access; permissions should "
                         "be u=rw (0600) or less",
                         gw);
    check_read("mode 0620 (group may write)", -EACCES, msg);
    free(msg);
    cbfs_passphrase_set_file(empty);
    msg = cbfs_xasprintf("passphrase file \"%s\" is empty", empty);
    check_read("an empty file", -EINVAL, msg);
    free(msg);
    {
        char *missing = cbfs_xasprintf("%s/missing", tmpdir);
        cbfs_passphrase_set_file(missing);
        msg = cbfs_xasprintf("could not open passphrase file \"%s\": No such file or directory",
                             missing);
        check_read("a missing file", -EIO, msg);
        free(msg);
        free(missing);
    }
    {
        /* a relative name is made absolute (a daemon reads it after chdir) */
        char cwd[4096];
        if (getcwd(cwd, sizeof(cwd)) && chdir(tmpdir) == 0) {
            cbfs_passphrase_set_file("good");
            is_str(cbfs_passphrase_file(), good, "a relative --passphrase-file is made absolute");
            (void) !chdir(cwd);
            check_read("and read from elsewhere", 0, "from the file");
        }
    }

    /* a new passphrase */
    {
        char *p = NULL;
        CbfsError err;
        cbfs_error_init(&err);
        is_int(cbfs_passphrase_read(CBFS_PASSPHRASE_NEW, "/r", true, &p, &err), -ENOENT,
               "no new passphrase: -ENOENT");
        is_str(err.msg,
               "no new passphrase was given (set CBFS_NEW_PASSPHRASE or use "
               "--new-passphrase-file)",
               "no new passphrase: the message");
        setenv("CBFS_NEW_PASSPHRASE", "new from env", 1);
        cbfs_error_init(&err);
        is_int(cbfs_passphrase_read(CBFS_PASSPHRASE_NEW, "/r", true, &p, &err), 0,
               "CBFS_NEW_PASSPHRASE");
        is_str(p, "new from env", "CBFS_NEW_PASSPHRASE's value");
        cbfs_passphrase_free(p);
        cbfs_passphrase_set_new_file(crlf);
        is_int(cbfs_passphrase_read(CBFS_PASSPHRASE_NEW, "/r", true, &p, &err), 0,
               "--new-passphrase-file");
        is_str(p, "with crlf", "--new-passphrase-file over CBFS_NEW_PASSPHRASE");
        cbfs_passphrase_free(p);
        unsetenv("CBFS_NEW_PASSPHRASE");
    }

    /* export: the children's environment */
    {
        CbfsError err;
        cbfs_error_init(&err);
        cbfs_passphrase_set_file(good);
        is_int(cbfs_passphrase_export("/r", &err), 0, "export");
        is_str(getenv("CBFS_PASSPHRASE"), "from the file", "export puts it in CBFS_PASSPHRASE");
        ok(cbfs_passphrase_file() == NULL, "and no file is in effect any more");
        check_read("after export", 0, "from the file");
        unsetenv("CBFS_PASSPHRASE");
        is_int(cbfs_passphrase_export("/r", &err), 0, "export with nothing given: 0");
        ok(getenv("CBFS_PASSPHRASE") == NULL, "and nothing exported");
    }
    cbfs_passphrase_free(NULL);
    free(good);
    free(crlf);
    free(two);
    free(open_);
    free(group);
    free(gw);
    free(empty);
}

/* The key cache (keycache.h): a second unlock with the same passphrase
 * needs no KDF (CBFS_TEST_NO_KDF makes every derivation fail), another
 * passphrase gets nothing from it, a rewrap or a forget drops it.  Where the
 * kernel refuses keyrings the cache is off: every unlock derives. */
static void test_cache(void)
{
    CbfsCrypt *made = NULL, *c = NULL;
    CbfsKv *kv = cbfs_kv_new();
    CbfsError err;
    char id[33];
    long probe = syscall(SYS_add_key, "user", "cbfs:probe", "x", 1, KEY_SPEC_USER_KEYRING);
    bool keyrings = probe >= 0;
    const char *nokdf = "could not open repository \"/c\": key derivation is disabled "
                        "(CBFS_TEST_NO_KDF)";

    if (keyrings)
        syscall(SYS_keyctl, KEYCTL_INVALIDATE, probe, 0, 0, 0);
    printf("# the kernel %s keyrings\n", keyrings ? "allows" : "refuses");
    /* an id of this run: nothing cached by another */
    snprintf(id, sizeof(id), "%016lx%016lx", (unsigned long) getpid(), (unsigned long) time(NULL));
    setenv("CBFS_KEY_CACHE_TTL", "60", 1);
    cbfs_error_init(&err);
    cbfs_kv_set(kv, "repository_id", id);
    is_int(cbfs_crypt_create(kv, id, "/c", "right", &fast, &made, &err), 0, "create (cached)");

    setenv("CBFS_TEST_NO_KDF", "1", 1);
    cbfs_crypt_from_config(kv, id, "/c", NULL, NULL, &c, &err);
    is_int(cbfs_crypt_unlock_with(c, "right", &err), keyrings ? 0 : -EPERM,
           keyrings ? "the same passphrase: the key comes from the cache, no KDF"
                    : "no keyrings: the same passphrase derives (and the hook stops it)");
    if (keyrings)
        ok(cbfs_crypt_same_key(c, made), "the right master key");
    cbfs_crypt_free(c);
    cbfs_error_init(&err);
    cbfs_crypt_from_config(kv, id, "/c", NULL, NULL, &c, &err);
    is_int(cbfs_crypt_unlock_with(c, "wrong", &err), -EPERM,
           "another passphrase gets nothing from the cache: it derives");
    is_str(err.msg, nokdf, "... and the test hook says so");
    cbfs_crypt_free(c);
    unsetenv("CBFS_TEST_NO_KDF");
    cbfs_error_init(&err);
    cbfs_crypt_from_config(kv, id, "/c", NULL, NULL, &c, &err);
    is_int(cbfs_crypt_unlock_with(c, "wrong", &err), -EACCES, "a wrong passphrase is refused");
    cbfs_crypt_free(c);

    /* a rewrap drops the old entry and caches the new one */
    is_int(cbfs_crypt_rewrap(made, kv, "newer", &fast, &err), 0, "rewrap");
    setenv("CBFS_TEST_NO_KDF", "1", 1);
    cbfs_crypt_from_config(kv, id, "/c", NULL, NULL, &c, &err);
    is_int(cbfs_crypt_unlock_with(c, "newer", &err), keyrings ? 0 : -EPERM,
           "the new passphrase is cached by the rewrap");
    cbfs_crypt_free(c);
    is_int(cbfs_crypt_cache_forget(id), keyrings ? 1 : 0, "forget drops the one entry");
    is_int(cbfs_crypt_cache_forget(id), 0, "... and then there is none");
    cbfs_error_init(&err);
    cbfs_crypt_from_config(kv, id, "/c", NULL, NULL, &c, &err);
    is_int(cbfs_crypt_unlock_with(c, "newer", &err), -EPERM, "forgotten: it derives again");
    cbfs_crypt_free(c);
    unsetenv("CBFS_TEST_NO_KDF");

    /* time to live 0: nothing stored */
    setenv("CBFS_KEY_CACHE_TTL", "0", 1);
    cbfs_error_init(&err);
    cbfs_crypt_from_config(kv, id, "/c", NULL, NULL, &c, &err);
    is_int(cbfs_crypt_unlock_with(c, "newer", &err), 0, "unlock with the cache off");
    cbfs_crypt_free(c);
    setenv("CBFS_KEY_CACHE_TTL", "60", 1);
    is_int(cbfs_crypt_cache_forget(id), 0, "the cache off stored nothing");
    setenv("CBFS_KEY_CACHE_TTL", "-1", 1);
    cbfs_error_init(&err);
    cbfs_crypt_from_config(kv, id, "/c", NULL, NULL, &c, &err);
    is_int(cbfs_crypt_unlock_with(c, "newer", &err), -EINVAL, "an invalid time to live: -EINVAL");
    is_str(err.msg,
           "could not open repository \"/c\": invalid CBFS_KEY_CACHE_TTL \"-1\" (seconds, 0 to "
           "86400)",
           "... with its message");
    cbfs_crypt_free(c);
    setenv("CBFS_KEY_CACHE_TTL", "0", 1);
    cbfs_crypt_free(made);
    cbfs_kv_free(kv);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! could not create a temp directory\n");
        return 1;
    }
    /* the key cache only where it is tested */
    setenv("CBFS_KEY_CACHE_TTL", "0", 1);
    test_gcm_vector();
    test_seal_open();
    test_kdf();
    test_create_open();
    test_wrong();
    test_bad_config();
    test_rewrap();
    test_threads();
    test_passphrase();
    test_cache();
    rm_rf(tmpdir);
    return done_testing();
}
