/*
 * repo.h - a cbfs repository: its configuration, the cluster it belongs to,
 * and the records of its backups.
 *
 * Objects (keys in the store):
 *   config                          kv: format, repository_id, block_size,
 *                                   compress_level, created; encrypted
 *                                   repositories add encryption, kdf,
 *                                   kdf_n, kdf_r, kdf_p, kdf_salt and
 *                                   master_key (crypt.h)
 *   cluster                         kv: system_identifier (create-once: the
 *                                   first backup or wal-push claims it)
 *   packs/XX/<name>.pack            pack.h
 *   backups/<label>.<rand>.mdb      a backup's SQLite manifest (mobject.h;
 *                                   .db: the first layout, still read)
 *   backups/<label>.info            kv: the backup's record, written last:
 *                                   its existence is the backup's existence
 *   wal/<TTTTTTTT>/<name>           walarchive.h
 *
 * Encrypted repositories: r->store seals every object but config and packs
 * (store_crypt.c); packs seal their blocks and index (pack.h, codec.h).  The
 * key is unwrapped on first need, not at open (crypt.h), so a command that
 * only looks at object names and sizes never pays for the KDF.
 */
#ifndef CBFS_REPO_H
#define CBFS_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbfs/codec.h"
#include "cbfs/crypt.h"
#include "cbfs/error.h"
#include "cbfs/kv.h"
#include "cbfs/location.h"
#include "cbfs/manifest.h"
#include "cbfs/store.h"

#define CBFS_REPO_FORMAT "1"
#define CBFS_LABEL_MAX   64

typedef struct CbfsRepo {
    CbfsLocation loc;
    CbfsStore *store;    /* the node's view (its keys under node/<name>/), or shared */
    CbfsStore *shared;   /* the whole repository: what every node shares */
    char *node;          /* the node served; NULL: the default node */
    bool view;           /* made by cbfs_repo_node_view: shared and crypt are borrowed */
    const char *display; /* borrowed from loc.spec: the name in messages */
    char id[33];         /* repository_id, 32 hex digits */
    uint32_t block_size; /* bytes, multiple of 8192 */
    int compress_level;  /* zstd level */
    CbfsCrypt *crypt;    /* the keys of an encrypted repository, else NULL */
} CbfsRepo;

/* Create a repository at loc.  Refuses a non-empty directory and an
 * existing repository. */
int cbfs_repo_init(const CbfsLocation *loc, uint32_t block_size, int compress_level,
                   CbfsError *err);
/* The same, encrypted: a new master key wrapped under passphrase with
 * scrypt parameters kdf (NULL: cbfs_kdf_default). */
int cbfs_repo_init_encrypted(const CbfsLocation *loc, uint32_t block_size, int compress_level,
                             const char *passphrase, const CbfsKdfParams *kdf, CbfsError *err);
/* Open; err is "could not open repository \"%s\": ..." with CBFS_EXIT_REPO.
 * An encrypted repository opens locked: its passphrase (passphrase.h) is
 * read when a key is first needed, and a missing or wrong one fails that
 * operation ('could not open repository "%s": wrong passphrase').  loc is
 * copied.  Caller frees. */
int cbfs_repo_open(const CbfsLocation *loc, CbfsRepo **ret, CbfsError *err);
void cbfs_repo_free(CbfsRepo *r);

/* Unwrap the key now (no-op without encryption): commands call it before
 * their threads start, and before cbfs_repo_codec_new. */
int cbfs_repo_unlock(CbfsRepo *r, CbfsError *err);
/* A codec for this repository's blocks (with its crypt); after
 * cbfs_repo_unlock succeeded.  Caller frees. */
CbfsCodec *cbfs_repo_codec_new(CbfsRepo *r, int level);
/* cbfs key change: wrap r's (unlocked) master key under new_passphrase
 * (scrypt parameters kdf, NULL: cbfs_kdf_default) and replace the config
 * object with that, the one object ever replaced
 * (docs/design.md §3.1); checks before and after the write that the new
 * config unwraps to the same key with new_passphrase.  No data is
 * rewritten. */
int cbfs_repo_change_passphrase(CbfsRepo *r, const char *new_passphrase, const CbfsKdfParams *kdf,
                                CbfsError *err);

/* ---- nodes (docs/design.md §8) ----
 * A repository holds any number of nodes, each a PostgreSQL server with its
 * own system identifier, backups, WAL, restore points and pins; blocks are
 * shared.  The default node is the one a repository made before nodes
 * existed holds (its keys are where they always were); it is the one every
 * command serves without --node, and is called "default". */
#define CBFS_NODE_DEFAULT "default"
#define CBFS_NODE_MAX     63

/* A node name: 1..63 of [A-Za-z0-9._-], not starting with '.' or '-'. */
bool cbfs_node_name_valid(const char *name);
/* Serve node from now on (NULL or "default": the default node).  An
 * invalid name: 'invalid node name "%s"', CBFS_EXIT_USAGE. */
int cbfs_repo_set_node(CbfsRepo *r, const char *node, CbfsError *err);
/* A second handle on r for node (valid, or NULL: the default), sharing r's
 * store and keys: r must outlive it.  Caller frees (cbfs_repo_free). */
CbfsRepo *cbfs_repo_node_view(CbfsRepo *r, const char *node);
/* The node's name for messages: "default" for the default node. */
const char *cbfs_repo_node_name(const CbfsRepo *r);
/* What r serves, for messages: 'repository "R"', or 'node "N" of
 * repository "R"' for a named node.  Returns buf. */
const char *cbfs_repo_what(const CbfsRepo *r, char *buf, size_t size);
/* The nodes that have a claim: "default" first when the default node has
 * one, then the others by name.  Caller frees (cbfs_store_free_names). */
int cbfs_repo_list_nodes(CbfsRepo *r, char ***ret, size_t *ret_n, CbfsError *err);
/* Does node have a claim (has it pushed WAL or been backed up)? */
int cbfs_repo_node_exists(CbfsRepo *r, const char *node, bool *ret, CbfsError *err);
/* Serve node (NULL: the default) for a command that reads it: a named node
 * without a claim is 'node "%s" not found in repository "%s"'
 * (CBFS_EXIT_NOT_FOUND); the default node without a claim in a repository
 * that holds others is 'repository "%s" holds nodes a, b and c: choose one
 * with --node' (CBFS_EXIT_USAGE); an invalid name as cbfs_repo_set_node. */
int cbfs_repo_select_node(CbfsRepo *r, const char *node, CbfsError *err);

/* The system identifier the node belongs to: -ENOENT if none yet. */
int cbfs_repo_cluster(CbfsRepo *r, uint64_t *ret_sysid, CbfsError *err);
/* Claim the node for sysid if unclaimed; *ret_owner gets the system
 * identifier the node belongs to afterwards (compare with sysid).  The
 * default node of a repository that holds other nodes is not claimed: 'repository
 * "%s" holds nodes a and b: choose one with --node' (CBFS_EXIT_USAGE). */
int cbfs_repo_claim(CbfsRepo *r, uint64_t sysid, uint64_t *ret_owner, CbfsError *err);

/* A label is 1..64 of [A-Za-z0-9._-], not starting with '.' and not "latest". */
bool cbfs_label_valid(const char *label);

/* The record of one backup: -ENOENT if there is no such backup. */
int cbfs_repo_read_backup(CbfsRepo *r, const char *label, CbfsKv **ret, CbfsError *err);
/* The labels of every backups/<label>.info object, in no order, unchecked
 * (cbfs_repo_read_backup refuses invalid ones).  Caller frees each and the
 * array. */
int cbfs_repo_list_labels(CbfsRepo *r, char ***ret, size_t *ret_n, CbfsError *err);
/* All backup records, oldest first (by stop LSN, stop time, then label). */
int cbfs_repo_list_backups(CbfsRepo *r, CbfsKv ***ret, size_t *ret_n, CbfsError *err);
void cbfs_repo_free_backups(CbfsKv **list, size_t n);
/* Resolve a point (NULL or "latest" for the newest; else a label) to a
 * label.  Unknown: "backup \"%s\" not found in repository \"%s\"" with
 * CBFS_EXIT_NOT_FOUND.  *ret_label: caller frees. */
int cbfs_repo_resolve(CbfsRepo *r, const char *point, char **ret_label, CbfsError *err);

/* Store a backup: the manifest first (as a manifest object, mobject.h),
 * then its record (which gets the keys label, manifest, manifest_size,
 * manifest_chunk, manifest_index_sha256 added).  Once this
 * returns 0 the backup is listed. */
int cbfs_repo_commit_backup(CbfsRepo *r, const char *label, const char *manifest_path,
                            CbfsKv *record, CbfsError *err);
/* Fetch a backup's manifest whole into dir (a local directory), every
 * part checked against the record (a manifest of the first layout against
 * manifest_sha256); *ret_path: caller frees (and removes the file).  For a
 * reader of every block (restore, check, gc). */
int cbfs_repo_fetch_manifest(CbfsRepo *r, const CbfsKv *record, const char *dir, char **ret_path,
                             CbfsError *err);
/* Open a backup's manifest for a reader of a few parts (the mount): read
 * in place, only the pages queries touch; a manifest of the first layout
 * is fetched whole into dir and removed when the handle is freed. */
int cbfs_repo_open_manifest(CbfsRepo *r, const CbfsKv *record, const char *dir, CbfsManifest **ret,
                            CbfsError *err);

/* Local cache directory for this repository ($CBFS_CACHE_DIR,
 * $XDG_CACHE_HOME/cbfs or ~/.cache/cbfs, then the repository id); created.
 * Caller frees. */
int cbfs_repo_cache_dir(CbfsRepo *r, char **ret, CbfsError *err);

#endif
