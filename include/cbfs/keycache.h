/*
 * keycache.h - a per-user cache of unwrapped key material in the Linux
 * kernel keyring, so that the commands of one job (a mount and the
 * wal-fetch processes of its recovery, a backup and the wal-push calls
 * around it) pay the deliberately slow key derivation once, not once per
 * process (docs/design.md §3 "Encryption", the key cache decision).
 *
 * Entries are "user" keys in the caller's user keyring (the one every
 * process of a uid shares, whatever its session), readable by that uid
 * only (and root), never written to disk or swap, and dropped by the kernel
 * after their time to live, which every use renews.  What an entry holds
 * and how it is named is the caller's (crypt.c).
 *
 * $CBFS_KEY_CACHE_TTL is the time to live in seconds, 0 to 86400; 0 turns
 * the cache off (nothing read, nothing stored).  The default is 300.
 * Where the kernel refuses keyrings (a seccomp filter), the cache is off.
 */
#ifndef CBFS_KEYCACHE_H
#define CBFS_KEYCACHE_H

#include <stddef.h>
#include <sys/types.h>

#include "cbfs/error.h"

#define CBFS_KEYCACHE_TTL_DEFAULT 300u
#define CBFS_KEYCACHE_TTL_MAX     86400u
/* every description starts with this */
#define CBFS_KEYCACHE_PREFIX "cbfs:"

/* The time to live from $CBFS_KEY_CACHE_TTL: 0 and *ttl (0: off), or
 * -EINVAL with 'invalid CBFS_KEY_CACHE_TTL "V" (seconds, 0 to 86400)'. */
int cbfs_keycache_ttl(unsigned *ttl, CbfsError *err);

/* Copy this user's entry desc into buf (len bytes; a shorter or longer
 * entry is a miss) and renew its time to live: 0, or -ENOENT. */
int cbfs_keycache_get(const char *desc, void *buf, size_t len, unsigned ttl);
/* Store (or replace) this user's entry desc.  Best effort: a refusal
 * leaves the cache without it. */
void cbfs_keycache_put(const char *desc, const void *buf, size_t len, unsigned ttl);
/* The same in the keyring of another user (uid, gid), from a child process
 * that takes that identity; for root, e.g. a mount for PostgreSQL's user. */
void cbfs_keycache_put_as(uid_t uid, gid_t gid, const char *desc, const void *buf, size_t len,
                          unsigned ttl);
/* Drop this user's entries whose description starts with prefix: how many. */
int cbfs_keycache_forget(const char *prefix);

#endif
