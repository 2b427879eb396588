/*
 * mobject.h - a manifest as stored: an object whose parts are read and
 * verified one at a time, so a reader needs only the pages it touches
 * (DESIGN §3.5).
 *
 * Object "backups/<label>.<rand>.mdb" (in a node's view like every backup
 * object):
 *
 *   chunk 0 .. n-1  the SQLite file cut into chunks of `chunk` bytes (the
 *                   last one shorter), back to back; in an encrypted
 *                   repository each is sealed on its own (its length plus
 *                   CBFS_CRYPT_OVERHEAD), AAD "cbfs manifest chunk" NUL
 *                   <repository id> NUL <key> NUL <chunk number u32le>
 *   index           n SHA-256 of the plain chunks, 32 bytes each; sealed
 *                   as a whole in an encrypted repository, AAD "cbfs
 *                   manifest index" NUL <repository id> NUL <key>
 *
 * The backup record names the object and holds what is needed to find and
 * trust its parts: manifest_size (plain bytes), manifest_chunk and
 * manifest_index_sha256 (of the plain index).  So every chunk is checked
 * against the record before SQLite sees a byte of it, and the store's
 * encryption layer passes these objects through untouched (store.h).
 *
 * Manifests of repositories written before this layout ("backups/<label>.
 * <rand>.db", one object, manifest_sha256 in the record) are still read:
 * whole, as before (repo.h).
 *
 * Thread safety: a CbfsMobject may be read from several threads.
 */
#ifndef CBFS_MOBJECT_H
#define CBFS_MOBJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbfs/crypt.h"
#include "cbfs/error.h"
#include "cbfs/kv.h"
#include "cbfs/store.h"

#define CBFS_MOBJECT_SUFFIX        ".mdb"
#define CBFS_MOBJECT_CHUNK         65536u      /* 16 of the manifest's SQLite pages */
#define CBFS_MOBJECT_CACHE_DEFAULT (32u << 20) /* bytes of chunks kept by a reader */

typedef struct CbfsMobject CbfsMobject;

/* Is key a manifest object of this layout? */
bool cbfs_mobject_key(const char *key);

/* The stored form of data (len bytes) under key, cut into chunks of chunk
 * bytes and sealed with crypt (NULL: plain); *ret (caller frees) and its
 * length, and the hex SHA-256 of the plain index for the record. */
void cbfs_mobject_build(const CbfsCrypt *crypt, const char *key, const void *data, size_t len,
                        uint32_t chunk, uint8_t **ret, size_t *ret_len, char ret_index_sha[65]);

/* A reader of the manifest object a backup record names (its keys
 * manifest, manifest_size, manifest_chunk, manifest_index_sha256; the
 * label for messages).  Reads and checks the index now; chunks are read
 * when asked for and kept up to cache_bytes (0: the default).  A record
 * that does not describe such an object is CBFS_EXIT_CORRUPT ("backup
 * record of \"%s\" is damaged"); a missing object, or an index that does
 * not match, names the object. */
int cbfs_mobject_open(CbfsStore *st, const CbfsCrypt *crypt, const CbfsKv *record,
                      size_t cache_bytes, CbfsMobject **ret, CbfsError *err);
void cbfs_mobject_free(CbfsMobject *mo);

/* Plain size of the manifest. */
uint64_t cbfs_mobject_size(const CbfsMobject *mo);
/* Read len plain bytes at off (off + len <= size), each chunk checked.
 * Errors name the object and the chunk: missing, truncated, checksum
 * mismatch, authentication failed; -EIO (err's code says more). */
int cbfs_mobject_read(CbfsMobject *mo, uint64_t off, size_t len, void *buf, CbfsError *err);
/* A failed read's error is also kept: true, with err set (unless NULL), if
 * the last read failed; then it is forgotten.  For a caller that sees the
 * failure through another layer (SQLite: lazyvfs.h). */
bool cbfs_mobject_take_error(CbfsMobject *mo, CbfsError *err);
/* The whole manifest, every chunk checked, into a new buffer (caller
 * frees): one request for all of it. */
int cbfs_mobject_read_all(CbfsMobject *mo, uint8_t **ret, CbfsError *err);
/* Stored bytes this reader has fetched so far (index included). */
uint64_t cbfs_mobject_fetched(const CbfsMobject *mo);
/* The object's key and the backup's label (borrowed). */
const char *cbfs_mobject_name(const CbfsMobject *mo);

#endif
