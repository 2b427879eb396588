/*
 * crypt.h - encryption at rest: the repository's keys, AES-256-GCM sealing
 * and keyed block ids (DESIGN §3; docs/design.md §3 "Encryption").
 *
 * Keys:
 *   passphrase --scrypt(salt, N, r, p)--> key-encryption key (never stored)
 *   master key    32 random bytes, stored in the config object sealed under
 *                 the key-encryption key (AAD: "cbfs master key", repository id)
 *   id key        HMAC-SHA256(master, "cbfs block id key"): block ids are
 *                 HMAC-SHA256(id key, plaintext), so they reveal nothing
 *   data key      HMAC-SHA256(master, "cbfs data key"): every seal below
 *
 * Sealed form: nonce[12] || ciphertext || tag[16] (CBFS_CRYPT_OVERHEAD bytes
 * more than the plaintext).  Nonces are random: 2^32 seals under one data
 * key keep the chance of a repeat below 2^-32.  The associated data (AAD)
 * names what is sealed, so an object moved to another name, or a block to
 * another id, fails to open.  Nothing is returned from a failed open.
 *
 * Lazy unwrap: a CbfsCrypt made from a config is locked; the first
 * cbfs_crypt_unlock asks its passphrase callback and runs the KDF (~0.4 s
 * with the defaults), once per CbfsCrypt, whatever the number of threads.
 * The key cache (keycache.h) spares the KDF to the next processes of the
 * same user: the key-encryption key is cached with a check value of the
 * passphrase, so only the same passphrase finds it.
 *
 * Thread safety: every function may be called concurrently on one
 * CbfsCrypt (cipher contexts are made per call).
 */
#ifndef CBFS_CRYPT_H
#define CBFS_CRYPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cbfs/error.h"
#include "cbfs/kv.h"

#define CBFS_CRYPT_KEY_LEN   32
#define CBFS_CRYPT_NONCE_LEN 12
#define CBFS_CRYPT_TAG_LEN   16
#define CBFS_CRYPT_OVERHEAD  (CBFS_CRYPT_NONCE_LEN + CBFS_CRYPT_TAG_LEN)
#define CBFS_CRYPT_SALT_LEN  16
#define CBFS_CRYPT_ID_LEN    32 /* HMAC-SHA256 */

/* scrypt parameters, stored in the config (kdf_n, kdf_r, kdf_p). */
typedef struct CbfsKdfParams {
    uint64_t n; /* CPU/memory cost, a power of 2 */
    uint32_t r; /* block size */
    uint32_t p; /* parallelism */
} CbfsKdfParams;

/* The default: N = 2^17, r = 8, p = 1 (128 MiB, ~0.4 s). */
extern const CbfsKdfParams cbfs_kdf_default;

/* ---- primitives (explicit keys) ---------------------------------------- */

/* Derive a key from a passphrase with scrypt.  -EINVAL (err set) for
 * parameters outside the accepted range (N a power of 2 from 2 to 2^24,
 * r 1..32, p 1..16, at most 1 GiB of memory). */
int cbfs_kdf_derive(const char *passphrase, const uint8_t salt[CBFS_CRYPT_SALT_LEN],
                    const CbfsKdfParams *kp, uint8_t key[CBFS_CRYPT_KEY_LEN], CbfsError *err);
/* Seal len bytes of in into out (len + CBFS_CRYPT_OVERHEAD bytes) with a
 * fresh random nonce.  in may be exactly out + CBFS_CRYPT_NONCE_LEN (sealing
 * in place); no other overlap. */
void cbfs_aead_seal(const uint8_t key[CBFS_CRYPT_KEY_LEN], const void *aad, size_t aad_len,
                    const void *in, size_t len, void *out);
/* Open a sealed buffer of len bytes (>= CBFS_CRYPT_OVERHEAD) into out
 * (len - CBFS_CRYPT_OVERHEAD bytes).  0, or -EBADMSG when it is not
 * authentic under key and aad (damaged, another key, another name); out is
 * then zeroed.  No overlap of in and out. */
int cbfs_aead_open(const uint8_t key[CBFS_CRYPT_KEY_LEN], const void *aad, size_t aad_len,
                   const void *in, size_t len, void *out);

/* ---- the repository's keys --------------------------------------------- */

typedef struct CbfsCrypt CbfsCrypt;

/* Where a locked CbfsCrypt gets its passphrase: 0 and *ret (NUL-terminated;
 * the crypt wipes and frees it), or a negative errno with err set. */
typedef int (*cbfs_crypt_passphrase_fn)(void *ctx, char **ret, CbfsError *err);

/* True if config describes an encrypted repository (has "encryption"). */
bool cbfs_crypt_configured(const CbfsKv *config);

/* A new repository's keys: a random master key wrapped under passphrase
 * with a fresh salt and kp (NULL: the default); sets encryption, kdf,
 * kdf_n, kdf_r, kdf_p, kdf_salt and master_key in config.  *ret is
 * unlocked; display names the repository in messages (copied).  Caller
 * frees. */
int cbfs_crypt_create(CbfsKv *config, const char *repo_id, const char *display,
                      const char *passphrase, const CbfsKdfParams *kp, CbfsCrypt **ret,
                      CbfsError *err);
/* The keys of an encrypted repository from its config, locked: fn (with
 * ctx) is asked for the passphrase on the first unlock.  -EINVAL with a
 * message (no repository prefix) when the keys are malformed or name an
 * unsupported cipher or KDF.  Caller frees. */
int cbfs_crypt_from_config(const CbfsKv *config, const char *repo_id, const char *display,
                           cbfs_crypt_passphrase_fn fn, void *ctx, CbfsCrypt **ret, CbfsError *err);
/* Wipes the keys. */
void cbfs_crypt_free(CbfsCrypt *c);

/* Unwrap the master key if not done yet.  Thread-safe; the first call does
 * the work, concurrent ones wait for it, later ones return its result (and
 * its message).  Errors: 'could not open repository "D": wrong passphrase'
 * (-EACCES, CBFS_EXIT_REPO), or the callback's message and code with that
 * prefix.  Never -ENOENT (callers read it as "no such object"): a callback's
 * -ENOENT becomes -EACCES. */
int cbfs_crypt_unlock(CbfsCrypt *c, CbfsError *err);
/* The same with a given passphrase instead of the callback. */
int cbfs_crypt_unlock_with(CbfsCrypt *c, const char *passphrase, CbfsError *err);
bool cbfs_crypt_unlocked(const CbfsCrypt *c);

/* Wrap c's (unlocked) master key under a new passphrase with a fresh salt
 * and kp (NULL: the default), replacing kdf_* and master_key in config. */
int cbfs_crypt_rewrap(CbfsCrypt *c, CbfsKv *config, const char *passphrase, const CbfsKdfParams *kp,
                      CbfsError *err);
/* True if a and b (both unlocked) hold the same master key. */
bool cbfs_crypt_same_key(const CbfsCrypt *a, const CbfsCrypt *b);
/* Drop this user's cached keys (keycache.h) of repository repo_id, or of
 * every repository (NULL): how many. */
int cbfs_crypt_cache_forget(const char *repo_id);
/* Store c's (unlocked) cache entry in the key cache of user uid too (a
 * root mount for PostgreSQL's user, whose restore_command then unlocks
 * without the KDF).  Nothing when the cache is off. */
void cbfs_crypt_cache_share(const CbfsCrypt *c, uid_t uid, gid_t gid);
/* The repository id bound into every object's AAD (borrowed). */
const char *cbfs_crypt_repo_id(const CbfsCrypt *c);

/* The functions below need an unlocked crypt: using a locked one is a bug
 * and aborts. */

/* HMAC-SHA256 of data under the id key. */
void cbfs_crypt_block_id(const CbfsCrypt *c, const void *data, size_t len,
                         uint8_t id[CBFS_CRYPT_ID_LEN]);
/* cbfs_aead_seal / cbfs_aead_open under the data key. */
void cbfs_crypt_seal(const CbfsCrypt *c, const void *aad, size_t aad_len, const void *in,
                     size_t len, void *out);
int cbfs_crypt_open(const CbfsCrypt *c, const void *aad, size_t aad_len, const void *in, size_t len,
                    void *out);

#endif
