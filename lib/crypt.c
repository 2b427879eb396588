/*
 * crypt.c - the repository's keys, AES-256-GCM and HMAC block ids over
 * OpenSSL libcrypto.  See crypt.h for the key hierarchy and the sealed form.
 *
 * OpenSSL objects: the AES-256-GCM cipher and the HMAC algorithm are
 * fetched once per process (a fetch per call takes a global lock); a cipher
 * context is made per seal or open, because an EVP_CIPHER_CTX must not be
 * shared between threads and backup and mount seal and open on many.  Block
 * ids come from a keyed HMAC context made at unlock and duplicated per id
 * (duplicating copies the prepared inner and outer states: no key schedule
 * per block).
 *
 * Invariants: the keys of a CbfsCrypt are set once, under its lock, before
 * its state becomes UNLOCKED (release store); readers check the state with
 * an acquire load and never see half-made keys.  Every buffer that held a
 * passphrase or key is wiped with OPENSSL_cleanse before it is freed.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "cbfs/crypt.h"
#include "cbfs/keycache.h"
#include "cbfs/util.h"

#define WRAPPED_LEN (CBFS_CRYPT_KEY_LEN + CBFS_CRYPT_OVERHEAD)
/* EVP_*Update take an int length: larger buffers go in pieces */
#define UPDATE_MAX (1 << 30)

/* Labels of the subkeys and of the sealed master key: distinct strings, so
 * no key or sealed value can stand in for another. */
static const char label_id_key[] = "cbfs block id key";
static const char label_data_key[] = "cbfs data key";
static const char label_master[] = "cbfs master key";
static const char label_check[] = "cbfs passphrase check";

/* A key cache entry: the key-encryption key, then
 * HMAC-SHA256(it, label_check || NUL || passphrase), so that a cached key
 * serves only the passphrase it came from (a wrong one is refused as
 * without the cache). */
#define ENTRY_LEN (2 * CBFS_CRYPT_KEY_LEN)
#define DESC_MAX  (sizeof(CBFS_KEYCACHE_PREFIX) + 32 + 1 + 32 + 1)

const CbfsKdfParams cbfs_kdf_default = {1u << 17, 8, 1};

enum crypt_state { LOCKED, UNLOCKED, FAILED };

struct CbfsCrypt {
    pthread_mutex_t lock; /* guards the unlock; keys are read-only once UNLOCKED */
    int state;            /* enum crypt_state, atomic */
    CbfsError failure;    /* why the unlock failed (state FAILED) */
    int failure_rc;
    char repo_id[33];
    char *display; /* the repository in messages */
    cbfs_crypt_passphrase_fn fn;
    void *fn_ctx;
    CbfsKdfParams kdf;
    uint8_t salt[CBFS_CRYPT_SALT_LEN];
    uint8_t wrapped[WRAPPED_LEN];
    uint8_t master[CBFS_CRYPT_KEY_LEN];
    uint8_t data_key[CBFS_CRYPT_KEY_LEN];
    uint8_t entry[ENTRY_LEN]; /* the key cache entry, once unlocked */
    EVP_MAC_CTX *id_mac;      /* HMAC-SHA256 keyed with the id key, duplicated per id */
};

/* ---- OpenSSL algorithms, fetched once ---------------------------------- */

static EVP_CIPHER *gcm;
static EVP_MAC *hmac;
static pthread_once_t algs_once = PTHREAD_ONCE_INIT;

static void algs_fetch(void)
{
    gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!gcm || !hmac) {
        fprintf(stderr, "cbfs: OpenSSL has no AES-256-GCM or HMAC\n");
        abort();
    }
}

static void algs(void)
{
    pthread_once(&algs_once, algs_fetch);
}

static void check(int ok)
{
    if (ok != 1) { /* only a broken libcrypto or out of memory gets here */
        fprintf(stderr, "cbfs: OpenSSL failure in encryption\n");
        abort();
    }
}

/* ---- primitives -------------------------------------------------------- */

static int kdf_check(const CbfsKdfParams *kp, CbfsError *err)
{
    if (kp->n < 2 || kp->n > (1u << 24) || (kp->n & (kp->n - 1)) != 0 || kp->r < 1 || kp->r > 32 ||
        kp->p < 1 || kp->p > 16 || 128 * (uint64_t) kp->r * kp->n > (1ull << 30))
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_REPO,
                              "unsupported scrypt parameters N=%" PRIu64 " r=%" PRIu32
                              " p=%" PRIu32,
                              kp->n, kp->r, kp->p);
    return 0;
}

int cbfs_kdf_derive(const char *passphrase, const uint8_t salt[CBFS_CRYPT_SALT_LEN],
                    const CbfsKdfParams *kp, uint8_t key[CBFS_CRYPT_KEY_LEN], CbfsError *err)
{
    /* scrypt needs 128 r N bytes for V and 128 r p for B; OpenSSL refuses
     * more than maxmem, which defaults to 32 MiB */
    uint64_t maxmem = 128 * (uint64_t) kp->r * (kp->n + kp->p + 2) + (1u << 20);
    int rc = kdf_check(kp, err);

    if (rc < 0)
        return rc;
    /* tests prove a key came from the key cache by forbidding the KDF */
    if (getenv("CBFS_TEST_NO_KDF"))
        return cbfs_error_set(err, EPERM, CBFS_EXIT_ERROR,
                              "key derivation is disabled (CBFS_TEST_NO_KDF)");
    if (EVP_PBE_scrypt(passphrase, strlen(passphrase), salt, CBFS_CRYPT_SALT_LEN, kp->n, kp->r,
                       kp->p, maxmem, key, CBFS_CRYPT_KEY_LEN) != 1)
        return cbfs_error_set(err, ENOMEM, CBFS_EXIT_ERROR,
                              "could not derive the key from the passphrase (scrypt)");
    return 0;
}

static void update(EVP_CIPHER_CTX *ctx, bool enc, uint8_t *out, const uint8_t *in, size_t len)
{
    while (len > 0) {
        int n = len > UPDATE_MAX ? UPDATE_MAX : (int) len, got;
        check(enc ? EVP_EncryptUpdate(ctx, out, &got, in, n)
                  : EVP_DecryptUpdate(ctx, out, &got, in, n));
        in += n;
        out += n;
        len -= (size_t) n;
    }
}

static void update_aad(EVP_CIPHER_CTX *ctx, bool enc, const void *aad, size_t aad_len)
{
    int got;
    if (aad_len == 0)
        return;
    check(enc ? EVP_EncryptUpdate(ctx, NULL, &got, aad, (int) aad_len)
              : EVP_DecryptUpdate(ctx, NULL, &got, aad, (int) aad_len));
}

void cbfs_aead_seal(const uint8_t key[CBFS_CRYPT_KEY_LEN], const void *aad, size_t aad_len,
                    const void *in, size_t len, void *out)
{
    uint8_t *o = out, nonce[CBFS_CRYPT_NONCE_LEN];
    EVP_CIPHER_CTX *ctx;
    int got;

    algs();
    check(RAND_bytes(nonce, sizeof(nonce)));
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        abort();
    check(EVP_EncryptInit_ex2(ctx, gcm, key, nonce, NULL));
    update_aad(ctx, true, aad, aad_len);
    /* in may be o + 12 (in place): the nonce goes in front only afterwards */
    update(ctx, true, o + CBFS_CRYPT_NONCE_LEN, in, len);
    check(EVP_EncryptFinal_ex(ctx, o + CBFS_CRYPT_NONCE_LEN + len, &got));
    check(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CBFS_CRYPT_TAG_LEN,
                              o + CBFS_CRYPT_NONCE_LEN + len));
    memcpy(o, nonce, sizeof(nonce));
    EVP_CIPHER_CTX_free(ctx);
}

int cbfs_aead_open(const uint8_t key[CBFS_CRYPT_KEY_LEN], const void *aad, size_t aad_len,
                   const void *in, size_t len, void *out)
{
    const uint8_t *i = in;
    uint8_t tag[CBFS_CRYPT_TAG_LEN];
    size_t n;
    EVP_CIPHER_CTX *ctx;
    int got, ok;

    if (len < CBFS_CRYPT_OVERHEAD)
        return -EBADMSG;
    n = len - CBFS_CRYPT_OVERHEAD;
    algs();
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        abort();
    check(EVP_DecryptInit_ex2(ctx, gcm, key, i, NULL));
    update_aad(ctx, false, aad, aad_len);
    update(ctx, false, out, i + CBFS_CRYPT_NONCE_LEN, n);
    memcpy(tag, i + CBFS_CRYPT_NONCE_LEN + n, sizeof(tag));
    check(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CBFS_CRYPT_TAG_LEN, tag));
    ok = EVP_DecryptFinal_ex(ctx, (uint8_t *) out + n, &got);
    EVP_CIPHER_CTX_free(ctx);
    if (ok != 1) {
        /* GCM decrypts before it can check: never leave that behind */
        OPENSSL_cleanse(out, n);
        return -EBADMSG;
    }
    return 0;
}

/* HMAC-SHA256(key, data) in one go (subkeys). */
static void hmac_once(const uint8_t *key, size_t key_len, const void *data, size_t len,
                      uint8_t out[CBFS_CRYPT_ID_LEN])
{
    EVP_MAC_CTX *ctx;
    OSSL_PARAM params[] = {OSSL_PARAM_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_END};
    size_t n;

    algs();
    ctx = EVP_MAC_CTX_new(hmac);
    if (!ctx)
        abort();
    check(EVP_MAC_init(ctx, key, key_len, params));
    check(EVP_MAC_update(ctx, data, len));
    check(EVP_MAC_final(ctx, out, &n, CBFS_CRYPT_ID_LEN));
    EVP_MAC_CTX_free(ctx);
}

/* ---- the repository's keys --------------------------------------------- */

bool cbfs_crypt_configured(const CbfsKv *config)
{
    return cbfs_kv_get(config, "encryption") != NULL;
}

/* AAD of the wrapped master key: the label and the repository id, so a
 * config's master_key cannot be carried into another repository's. */
static size_t master_aad(const CbfsCrypt *c, uint8_t *aad)
{
    size_t n = sizeof(label_master); /* with its NUL: a separator */
    memcpy(aad, label_master, n);
    memcpy(aad + n, c->repo_id, 32);
    return n + 32;
}

static CbfsCrypt *crypt_new(const char *repo_id, const char *display)
{
    CbfsCrypt *c = cbfs_xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    c->state = LOCKED;
    snprintf(c->repo_id, sizeof(c->repo_id), "%s", repo_id);
    c->display = cbfs_xstrdup(display);
    cbfs_error_init(&c->failure);
    return c;
}

/* Derive the subkeys from c->master and mark c unlocked.  Caller holds
 * c->lock (or owns c alone). */
static void set_unlocked(CbfsCrypt *c)
{
    uint8_t id_key[CBFS_CRYPT_KEY_LEN];
    OSSL_PARAM params[] = {OSSL_PARAM_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_END};

    hmac_once(c->master, sizeof(c->master), label_id_key, strlen(label_id_key), id_key);
    hmac_once(c->master, sizeof(c->master), label_data_key, strlen(label_data_key), c->data_key);
    c->id_mac = EVP_MAC_CTX_new(hmac);
    if (!c->id_mac)
        abort();
    check(EVP_MAC_init(c->id_mac, id_key, sizeof(id_key), params));
    OPENSSL_cleanse(id_key, sizeof(id_key));
    __atomic_store_n(&c->state, UNLOCKED, __ATOMIC_RELEASE);
}

/* ---- the key cache (keycache.h) ---------------------------------------- */

static void need_unlocked(const CbfsCrypt *c);

/* The name of c's entry: the repository and a digest of its wrapped key and
 * KDF settings, so that after a key change (a new salt and wrap) or with
 * another config an old entry is never even read. */
static void entry_desc(const CbfsCrypt *c, char desc[DESC_MAX])
{
    uint8_t digest[32];
    char hex[33];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char kdf[64];
    int n = snprintf(kdf, sizeof(kdf), "%" PRIu64 " %" PRIu32 " %" PRIu32, c->kdf.n, c->kdf.r,
                     c->kdf.p);

    if (!md)
        abort();
    check(EVP_DigestInit_ex(md, EVP_sha256(), NULL));
    check(EVP_DigestUpdate(md, c->salt, sizeof(c->salt)));
    check(EVP_DigestUpdate(md, c->wrapped, sizeof(c->wrapped)));
    check(EVP_DigestUpdate(md, kdf, (size_t) n));
    check(EVP_DigestFinal_ex(md, digest, NULL));
    EVP_MD_CTX_free(md);
    cbfs_hex_encode(digest, 16, hex);
    snprintf(desc, DESC_MAX, CBFS_KEYCACHE_PREFIX "%s:%s", c->repo_id, hex);
}

/* entry = kek || HMAC-SHA256(kek, label_check || NUL || passphrase) */
static void entry_make(const uint8_t kek[CBFS_CRYPT_KEY_LEN], const char *passphrase,
                       uint8_t entry[ENTRY_LEN])
{
    size_t len = sizeof(label_check) + strlen(passphrase);
    char *msg = cbfs_xmalloc(len);

    memcpy(msg, label_check, sizeof(label_check));
    memcpy(msg + sizeof(label_check), passphrase, len - sizeof(label_check));
    memcpy(entry, kek, CBFS_CRYPT_KEY_LEN);
    hmac_once(kek, CBFS_CRYPT_KEY_LEN, msg, len, entry + CBFS_CRYPT_KEY_LEN);
    OPENSSL_cleanse(msg, len);
    free(msg);
}

/* The cached entry of c for passphrase (its first CBFS_CRYPT_KEY_LEN
 * bytes are the key-encryption key): 0 and entry, or -ENOENT. */
static int entry_lookup(const CbfsCrypt *c, const char *passphrase, unsigned ttl,
                        uint8_t entry[ENTRY_LEN])
{
    uint8_t want[ENTRY_LEN];
    char desc[DESC_MAX];
    int rc;

    entry_desc(c, desc);
    if (cbfs_keycache_get(desc, entry, ENTRY_LEN, ttl) < 0)
        return -ENOENT;
    entry_make(entry, passphrase, want);
    rc = CRYPTO_memcmp(entry, want, ENTRY_LEN) == 0 ? 0 : -ENOENT;
    if (rc < 0)
        OPENSSL_cleanse(entry, ENTRY_LEN);
    OPENSSL_cleanse(want, sizeof(want));
    return rc;
}

/* Keep c's entry (c->entry set from kek and passphrase) and store it. */
static void entry_keep(CbfsCrypt *c, const uint8_t kek[CBFS_CRYPT_KEY_LEN], const char *passphrase,
                       unsigned ttl)
{
    char desc[DESC_MAX];

    entry_make(kek, passphrase, c->entry);
    entry_desc(c, desc);
    cbfs_keycache_put(desc, c->entry, sizeof(c->entry), ttl);
}

int cbfs_crypt_cache_forget(const char *repo_id)
{
    char prefix[DESC_MAX];

    snprintf(prefix, sizeof(prefix), CBFS_KEYCACHE_PREFIX "%s%s", repo_id ? repo_id : "",
             repo_id ? ":" : "");
    return cbfs_keycache_forget(prefix);
}

void cbfs_crypt_cache_share(const CbfsCrypt *c, uid_t uid, gid_t gid)
{
    CbfsError err;
    char desc[DESC_MAX];
    unsigned ttl;

    need_unlocked(c);
    cbfs_error_init(&err);
    if (cbfs_keycache_ttl(&ttl, &err) < 0 || ttl == 0)
        return;
    entry_desc(c, desc);
    cbfs_keycache_put_as(uid, gid, desc, c->entry, sizeof(c->entry), ttl);
}

/* Seal c->master under a key derived from passphrase with a fresh salt and
 * kp into c->salt, c->wrapped and c->kdf; the key goes into the cache. */
static int wrap(CbfsCrypt *c, const char *passphrase, const CbfsKdfParams *kp, CbfsError *err)
{
    uint8_t kek[CBFS_CRYPT_KEY_LEN], aad[64];
    uint8_t salt[CBFS_CRYPT_SALT_LEN];
    unsigned ttl;
    int rc;

    if ((rc = cbfs_keycache_ttl(&ttl, err)) < 0)
        return rc;
    check(RAND_bytes(salt, sizeof(salt)));
    rc = cbfs_kdf_derive(passphrase, salt, kp, kek, err);
    if (rc < 0)
        return rc;
    cbfs_aead_seal(kek, aad, master_aad(c, aad), c->master, sizeof(c->master), c->wrapped);
    memcpy(c->salt, salt, sizeof(salt));
    c->kdf = *kp;
    entry_keep(c, kek, passphrase, ttl);
    OPENSSL_cleanse(kek, sizeof(kek));
    return 0;
}

/* Write c's wrapped key and its parameters into config. */
static void store_keys(const CbfsCrypt *c, CbfsKv *config)
{
    char salt[2 * CBFS_CRYPT_SALT_LEN + 1], wrapped[2 * WRAPPED_LEN + 1];

    cbfs_hex_encode(c->salt, sizeof(c->salt), salt);
    cbfs_hex_encode(c->wrapped, sizeof(c->wrapped), wrapped);
    cbfs_kv_set(config, "encryption", "aes-256-gcm");
    cbfs_kv_set(config, "kdf", "scrypt");
    cbfs_kv_set_u64(config, "kdf_n", c->kdf.n);
    cbfs_kv_set_u64(config, "kdf_r", c->kdf.r);
    cbfs_kv_set_u64(config, "kdf_p", c->kdf.p);
    cbfs_kv_set(config, "kdf_salt", salt);
    cbfs_kv_set(config, "master_key", wrapped);
}

int cbfs_crypt_create(CbfsKv *config, const char *repo_id, const char *display,
                      const char *passphrase, const CbfsKdfParams *kp, CbfsCrypt **ret,
                      CbfsError *err)
{
    CbfsCrypt *c = crypt_new(repo_id, display);
    int rc;

    algs();
    check(RAND_bytes(c->master, sizeof(c->master)));
    rc = wrap(c, passphrase, kp ? kp : &cbfs_kdf_default, err);
    if (rc < 0) {
        cbfs_crypt_free(c);
        return rc;
    }
    store_keys(c, config);
    set_unlocked(c);
    *ret = c;
    return 0;
}

int cbfs_crypt_from_config(const CbfsKv *config, const char *repo_id, const char *display,
                           cbfs_crypt_passphrase_fn fn, void *ctx, CbfsCrypt **ret, CbfsError *err)
{
    const char *enc = cbfs_kv_get(config, "encryption"), *kdf = cbfs_kv_get(config, "kdf");
    const char *salt = cbfs_kv_get(config, "kdf_salt"),
               *wrapped = cbfs_kv_get(config, "master_key");
    uint64_t n, r, p;
    CbfsCrypt *c;
    CbfsKdfParams kp;
    int rc;

    if (!enc || strcmp(enc, "aes-256-gcm") != 0)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_REPO, "unsupported encryption \"%.32s\"",
                              enc ? enc : "");
    if (!kdf || strcmp(kdf, "scrypt") != 0)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_REPO, "unsupported key derivation \"%.32s\"",
                              kdf ? kdf : "");
    if (cbfs_kv_get_u64(config, "kdf_n", &n) < 0 || cbfs_kv_get_u64(config, "kdf_r", &r) < 0 ||
        cbfs_kv_get_u64(config, "kdf_p", &p) < 0 || r > UINT32_MAX || p > UINT32_MAX)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_REPO,
                              "invalid encryption settings: kdf_n, kdf_r or kdf_p");
    kp = (CbfsKdfParams){n, (uint32_t) r, (uint32_t) p};
    if ((rc = kdf_check(&kp, err)) < 0)
        return rc;
    c = crypt_new(repo_id, display);
    if (!salt || strlen(salt) != 2 * CBFS_CRYPT_SALT_LEN ||
        cbfs_hex_decode(salt, c->salt, CBFS_CRYPT_SALT_LEN) < 0 || !wrapped ||
        strlen(wrapped) != 2 * WRAPPED_LEN ||
        cbfs_hex_decode(wrapped, c->wrapped, WRAPPED_LEN) < 0) {
        cbfs_crypt_free(c);
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_REPO,
                              "invalid encryption settings: kdf_salt or master_key");
    }
    c->kdf = kp;
    c->fn = fn;
    c->fn_ctx = ctx;
    *ret = c;
    return 0;
}

void cbfs_crypt_free(CbfsCrypt *c)
{
    if (!c)
        return;
    EVP_MAC_CTX_free(c->id_mac);
    free(c->display);
    pthread_mutex_destroy(&c->lock);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

/* Unwrap with passphrase: with the cached key-encryption key if the cache
 * has one for this passphrase, else derived (and then cached).  Caller
 * holds c->lock and c is LOCKED. */
static int unwrap(CbfsCrypt *c, const char *passphrase, CbfsError *err)
{
    uint8_t kek[CBFS_CRYPT_KEY_LEN], aad[64];
    size_t aad_len = master_aad(c, aad);
    unsigned ttl;
    int rc;

    if ((rc = cbfs_keycache_ttl(&ttl, err)) < 0)
        return rc;
    if (entry_lookup(c, passphrase, ttl, c->entry) == 0 &&
        cbfs_aead_open(c->entry, aad, aad_len, c->wrapped, sizeof(c->wrapped), c->master) == 0) {
        set_unlocked(c);
        return 0;
    }
    if ((rc = cbfs_kdf_derive(passphrase, c->salt, &c->kdf, kek, err)) < 0)
        return rc;
    rc = cbfs_aead_open(kek, aad, aad_len, c->wrapped, sizeof(c->wrapped), c->master);
    if (rc < 0) {
        OPENSSL_cleanse(kek, sizeof(kek));
        /* the tag covers the repository id too: a master_key copied from
         * another repository is refused the same way */
        return cbfs_error_set(err, EACCES, CBFS_EXIT_REPO, "wrong passphrase");
    }
    entry_keep(c, kek, passphrase, ttl);
    OPENSSL_cleanse(kek, sizeof(kek));
    set_unlocked(c);
    return 0;
}

/* The unlock of c with passphrase, or (passphrase NULL) the callback's. */
static int unlock(CbfsCrypt *c, const char *passphrase, CbfsError *err)
{
    int rc = 0;

    if (__atomic_load_n(&c->state, __ATOMIC_ACQUIRE) == UNLOCKED)
        return 0;
    pthread_mutex_lock(&c->lock);
    if (c->state == LOCKED) {
        CbfsError e;
        char *asked = NULL;
        cbfs_error_init(&e);
        if (!passphrase && !c->fn)
            rc = cbfs_error_set(&e, EINVAL, CBFS_EXIT_REPO, "no passphrase");
        else if (!passphrase && (rc = c->fn(c->fn_ctx, &asked, &e)) == 0)
            passphrase = asked;
        if (rc == 0)
            rc = unwrap(c, passphrase, &e);
        if (asked) {
            OPENSSL_cleanse(asked, strlen(asked));
            free(asked);
        }
        if (rc < 0) {
            /* one message for this and every later caller; never -ENOENT,
             * which callers take for "no such object" */
            cbfs_error_prefix(&e, "could not open repository \"%s\"", c->display);
            c->failure = e;
            c->failure_rc = rc == -ENOENT ? -EACCES : rc;
            __atomic_store_n(&c->state, FAILED, __ATOMIC_RELEASE);
        }
    }
    if (c->state == FAILED) {
        if (err)
            *err = c->failure;
        rc = c->failure_rc;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int cbfs_crypt_unlock(CbfsCrypt *c, CbfsError *err)
{
    return unlock(c, NULL, err);
}

int cbfs_crypt_unlock_with(CbfsCrypt *c, const char *passphrase, CbfsError *err)
{
    return unlock(c, passphrase, err);
}

bool cbfs_crypt_unlocked(const CbfsCrypt *c)
{
    return __atomic_load_n(&c->state, __ATOMIC_ACQUIRE) == UNLOCKED;
}

static void need_unlocked(const CbfsCrypt *c)
{
    if (!cbfs_crypt_unlocked(c)) {
        fprintf(stderr, "cbfs: BUG: the repository key was used before it was unlocked\n");
        abort();
    }
}

int cbfs_crypt_rewrap(CbfsCrypt *c, CbfsKv *config, const char *passphrase, const CbfsKdfParams *kp,
                      CbfsError *err)
{
    int rc;

    need_unlocked(c);
    pthread_mutex_lock(&c->lock);
    /* the old passphrase's cached key goes with it */
    cbfs_crypt_cache_forget(c->repo_id);
    rc = wrap(c, passphrase, kp ? kp : &cbfs_kdf_default, err);
    if (rc == 0)
        store_keys(c, config);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

bool cbfs_crypt_same_key(const CbfsCrypt *a, const CbfsCrypt *b)
{
    need_unlocked(a);
    need_unlocked(b);
    return CRYPTO_memcmp(a->master, b->master, CBFS_CRYPT_KEY_LEN) == 0;
}

const char *cbfs_crypt_repo_id(const CbfsCrypt *c)
{
    return c->repo_id;
}

void cbfs_crypt_block_id(const CbfsCrypt *c, const void *data, size_t len,
                         uint8_t id[CBFS_CRYPT_ID_LEN])
{
    EVP_MAC_CTX *ctx;
    size_t n;

    need_unlocked(c);
    ctx = EVP_MAC_CTX_dup(c->id_mac);
    if (!ctx)
        abort();
    check(EVP_MAC_update(ctx, data, len));
    check(EVP_MAC_final(ctx, id, &n, CBFS_CRYPT_ID_LEN));
    EVP_MAC_CTX_free(ctx);
}

void cbfs_crypt_seal(const CbfsCrypt *c, const void *aad, size_t aad_len, const void *in,
                     size_t len, void *out)
{
    need_unlocked(c);
    cbfs_aead_seal(c->data_key, aad, aad_len, in, len, out);
}

int cbfs_crypt_open(const CbfsCrypt *c, const void *aad, size_t aad_len, const void *in, size_t len,
                    void *out)
{
    need_unlocked(c);
    return cbfs_aead_open(c->data_key, aad, aad_len, in, len, out);
}
