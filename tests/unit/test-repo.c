/*
 * test-repo.c - unit tests for lib/repo.c, lib/blockindex.c and
 * lib/walarchive.c on a posix repository in a mkdtemp() directory:
 * creating and opening a repository, claiming it for a cluster, committing
 * and finding backups, the local deduplication index, and pushing and
 * fetching WAL; the same in an encrypted repository (lazy unwrap, messages,
 * sealed objects, a swapped manifest, the passphrase change).
 *
 * The WAL segments are synthetic: 1 MiB with a valid long page header
 * (XLogLongPageHeaderData as on x86-64/arm64: magic, info, tli, pageaddr,
 * sysid, seg_size, blcksz; see lib/wal.c), so no PostgreSQL is needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cbfs/blockindex.h"
#include "cbfs/codec.h"
#include "cbfs/crypt.h"
#include "cbfs/kv.h"
#include "cbfs/location.h"
#include "cbfs/manifest.h"
#include "cbfs/pack.h"
#include "cbfs/repo.h"
#include "cbfs/wal.h"
#include "cbfs/walarchive.h"
#include "tap.h"

#define SEG_SIZE (1u << 20)

static char tmpdir[] = "/tmp/cbfs-test-repo.XXXXXX";

static char *tmp_path(const char *name)
{
    return cbfs_xasprintf("%s/%s", tmpdir, name);
}

static int parse_loc(const char *spec, CbfsLocation *loc)
{
    CbfsError err;
    cbfs_error_init(&err);
    if (cbfs_location_parse(spec, false, loc, &err) < 0) {
        printf("# could not parse \"%s\": %s\n", spec, err.msg);
        return -1;
    }
    return 0;
}

/* Create (block size 64k, level 3) and open a repository at tmpdir/name. */
static CbfsRepo *new_repo(const char *name)
{
    char *path = tmp_path(name);
    CbfsLocation loc;
    CbfsRepo *r = NULL;
    CbfsError err;

    cbfs_error_init(&err);
    if (parse_loc(path, &loc) == 0) {
        if (cbfs_repo_init(&loc, 65536, 3, &err) < 0 || cbfs_repo_open(&loc, &r, &err) < 0)
            printf("# could not set up repository \"%s\": %s\n", path, err.msg);
        cbfs_location_release(&loc);
    }
    free(path);
    return r;
}

/* Flip one byte of a local file in place. */
static int flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    uint8_t b;
    int rc = -1;

    if (fd < 0)
        return -1;
    if (pread(fd, &b, 1, off) == 1) {
        b ^= 0x20;
        if (pwrite(fd, &b, 1, off) == 1)
            rc = 0;
    }
    close(fd);
    return rc;
}

static int files_equal(const char *path, const uint8_t *data, size_t len)
{
    uint8_t *buf = NULL;
    size_t n = 0;
    int same;

    if (cbfs_read_file(path, &buf, &n, NULL) < 0)
        return 0;
    same = n == len && memcmp(buf, data, len) == 0;
    free(buf);
    return same;
}

/* ---- repository ---- */

static void test_init_open(void)
{
    char *path = tmp_path("r1"), *spec;
    CbfsLocation loc, bad;
    CbfsRepo *r = NULL;
    CbfsError err;
    char *want;

    if (parse_loc(path, &loc) < 0) {
        free(path);
        return;
    }
    cbfs_error_init(&err);
    is_int(cbfs_repo_init(&loc, 65536, 5, &err), 0, "init a repository in a new directory");
    is_str(err.msg, "", "no message");

    /* init refuses an existing repository and a non-empty directory */
    is_int(cbfs_repo_init(&loc, 65536, 5, &err), -EEXIST, "init again is refused");
    is_int(err.code, CBFS_EXIT_REPO, "init again: CBFS_EXIT_REPO");
    want = cbfs_xasprintf("could not create repository \"%s\": repository already exists", path);
    is_str(err.msg, want, "init again: message");
    free(want);
    spec = tmpdir;
    if (parse_loc(spec, &bad) == 0) {
        cbfs_error_init(&err);
        ok(cbfs_repo_init(&bad, 65536, 5, &err) < 0, "init refuses a non-empty directory");
        want = cbfs_xasprintf("could not create repository \"%s\": directory is not empty", spec);
        is_str(err.msg, want, "non-empty directory: message");
        is_int(err.code, CBFS_EXIT_REPO, "non-empty directory: CBFS_EXIT_REPO");
        free(want);
        cbfs_location_release(&bad);
    }

    /* open */
    cbfs_error_init(&err);
    is_int(cbfs_repo_open(&loc, &r, &err), 0, "open the repository");
    if (r) {
        uint8_t idbytes[16];
        is_int(strlen(r->id), 32, "repository id has 32 characters");
        is_int(cbfs_hex_decode(r->id, idbytes, sizeof(idbytes)), 0, "repository id is hex");
        is_int(r->block_size, 65536, "block size from the config");
        is_int(r->compress_level, 5, "compress level from the config");
        is_str(r->display, path, "display is the location as written");
        ok(r->loc.spec != loc.spec && r->loc.path != loc.path, "the location is copied");
        {
            CbfsRepo *r2 = NULL;
            if (parse_loc(path, &bad) == 0) {
                cbfs_repo_open(&bad, &r2, &err);
                cbfs_location_release(&bad);
            }
            ok(r2 && strcmp(r2->id, r->id) == 0, "reopening gives the same id");
            cbfs_repo_free(r2);
        }
        cbfs_repo_free(r);
    }
    cbfs_location_release(&loc);
    free(path);
    cbfs_repo_free(NULL);

    /* open failures */
    {
        static const struct {
            const char *dir;
            const char *config; /* NULL: no config object */
            const char *why;
        } cases[] = {
            {"nothing-here", NULL, "No such file or directory"},
            {"empty-dir", NULL, "not a cbfs repository"},
            {"bad-config", "this is not = valid\n", "invalid configuration object"},
            {"no-bs",
             "format = 1\nrepository_id = 0123456789abcdef0123456789abcdef\n"
             "compress_level = 3\n",
             "invalid configuration object"},
            {"odd-bs",
             "format = 1\nrepository_id = 0123456789abcdef0123456789abcdef\n"
             "block_size = 1000\ncompress_level = 3\n",
             "invalid configuration object"},
            {"short-id",
             "format = 1\nrepository_id = 0123\nblock_size = 8192\n"
             "compress_level = 3\n",
             "invalid configuration object"},
            {"format-2",
             "format = 2\nrepository_id = 0123456789abcdef0123456789abcdef\n"
             "block_size = 8192\ncompress_level = 3\n",
             "repository format 2 is not supported by cbfs " CBFS_VERSION},
        };
        for (size_t i = 0; i < CBFS_ARRAY_LEN(cases); i++) {
            char *dir = tmp_path(cases[i].dir);
            if (strcmp(cases[i].dir, "nothing-here") != 0)
                mkdir(dir, 0700);
            if (cases[i].config) {
                char *cfg = cbfs_xasprintf("%s/config", dir);
                cbfs_write_file_atomic(cfg, cases[i].config, strlen(cases[i].config), 0600, NULL);
                free(cfg);
            }
            if (parse_loc(dir, &loc) == 0) {
                r = NULL;
                cbfs_error_init(&err);
                ok(cbfs_repo_open(&loc, &r, &err) < 0, "open \"%s\" fails", cases[i].dir);
                want = cbfs_xasprintf("could not open repository \"%s\": %s", dir, cases[i].why);
                is_str(err.msg, want, "open \"%s\": message", cases[i].dir);
                is_int(err.code, CBFS_EXIT_REPO, "open \"%s\": CBFS_EXIT_REPO", cases[i].dir);
                free(want);
                cbfs_repo_free(r);
                cbfs_location_release(&loc);
            }
            free(dir);
        }
    }
}

typedef struct Claimer {
    CbfsRepo *r;
    pthread_barrier_t *barrier;
    uint64_t sysid, owner;
    int rc;
} Claimer;

static void *claim(void *arg)
{
    Claimer *c = arg;
    CbfsError err;

    cbfs_error_init(&err);
    pthread_barrier_wait(c->barrier);
    c->rc = cbfs_repo_claim(c->r, c->sysid, &c->owner, &err);
    return NULL;
}

static void test_claim(void)
{
    CbfsRepo *r = new_repo("claim");
    uint64_t owner = 0, sysid = 0;
    CbfsError err;

    if (!r) {
        ok(0, "claim: repository");
        return;
    }
    cbfs_error_init(&err);
    is_int(cbfs_repo_cluster(r, &sysid, &err), -ENOENT, "a new repository belongs to no cluster");
    is_int(err.code, 0, "no cluster: not an error");
    is_int(cbfs_repo_claim(r, 7300000000000000001ull, &owner, &err), 0, "first claim");
    ok(owner == 7300000000000000001ull, "first claim wins");
    is_int(cbfs_repo_claim(r, 7300000000000000002ull, &owner, &err), 0,
           "a second claim for another system succeeds");
    ok(owner == 7300000000000000001ull, "and reports the first system as the owner");
    is_int(cbfs_repo_claim(r, 7300000000000000001ull, &owner, &err), 0, "the owner claims again");
    ok(owner == 7300000000000000001ull, "and is still the owner");
    is_int(cbfs_repo_cluster(r, &sysid, &err), 0, "cluster");
    ok(sysid == 7300000000000000001ull, "cluster is the first claimant");
    cbfs_repo_free(r);

    /* racing claims from separate handles: all agree on one owner */
    {
        enum { N = 6 };
        CbfsRepo *rs[N];
        pthread_t th[N];
        Claimer cl[N];
        pthread_barrier_t barrier;
        char *path = tmp_path("claim-race");
        CbfsLocation loc;
        int agree = 1, errors = 0, winner_claimed = 0;

        r = new_repo("claim-race");
        cbfs_repo_free(r);
        if (parse_loc(path, &loc) < 0) {
            free(path);
            return;
        }
        pthread_barrier_init(&barrier, NULL, N);
        for (int i = 0; i < N; i++) {
            rs[i] = NULL;
            cbfs_repo_open(&loc, &rs[i], &err);
            cl[i] = (Claimer){rs[i], &barrier, 1000 + (uint64_t) i, 0, 0};
            pthread_create(&th[i], NULL, claim, &cl[i]);
        }
        for (int i = 0; i < N; i++) {
            pthread_join(th[i], NULL);
            if (cl[i].rc != 0)
                errors++;
            if (cl[i].owner != cl[0].owner)
                agree = 0;
        }
        for (int i = 0; i < N; i++)
            if (cl[0].owner == cl[i].sysid)
                winner_claimed = 1;
        is_int(errors, 0, "%d racing claims all succeed", N);
        ok(agree && winner_claimed, "and all report the same owner, one of the claimants (%llu)",
           (unsigned long long) cl[0].owner);
        pthread_barrier_destroy(&barrier);
        for (int i = 0; i < N; i++)
            cbfs_repo_free(rs[i]);
        cbfs_location_release(&loc);
        free(path);
    }
}

static void test_labels(void)
{
    static const char *const good[] = {
        "a", "full", "2024-01-01_full", "A.b-c_d", "x.", "latest2", "1", "a..b", "-",
    };
    static const char *const bad[] = {
        "", ".hidden", ".", "..", "latest", "a/b", "a b", "a@b", "a:b", "caf\xc3\xa9", "a\tb",
    };
    char l64[65], l65[66];

    for (size_t i = 0; i < CBFS_ARRAY_LEN(good); i++)
        ok(cbfs_label_valid(good[i]), "label \"%s\" is valid", good[i]);
    for (size_t i = 0; i < CBFS_ARRAY_LEN(bad); i++)
        ok(!cbfs_label_valid(bad[i]), "label \"%s\" is not valid", show(bad[i]));
    memset(l64, 'x', 64);
    l64[64] = '\0';
    memset(l65, 'x', 65);
    l65[65] = '\0';
    ok(cbfs_label_valid(l64), "a 64-character label is valid");
    ok(!cbfs_label_valid(l65), "a 65-character label is not");
}

/* Write a small manifest at path; returns 0 on success. */
static int make_manifest(const char *path, const char *label)
{
    CbfsManifest *m = NULL;
    CbfsFileEntry f = {0, "PG_VERSION", CBFS_FILE_REG, 0600, 26, 26, 3, 1700000000, NULL, 0};
    CbfsError err;
    int rc;

    cbfs_error_init(&err);
    rc = cbfs_manifest_create(path, &m, &err);
    if (rc == 0)
        rc = cbfs_manifest_set_meta(m, "label", label, &err);
    if (rc == 0)
        rc = cbfs_manifest_add_file(m, &f, NULL, &err);
    cbfs_manifest_free(m);
    if (rc < 0)
        printf("# could not make manifest \"%s\": %s\n", path, err.msg);
    return rc;
}

static int commit(CbfsRepo *r, const char *label, const char *stop_time, CbfsError *err)
{
    char *path = cbfs_xasprintf("%s/%s.db", tmpdir, label);
    CbfsKv *rec = cbfs_kv_new();
    int rc;

    cbfs_kv_set(rec, "stop_time", stop_time);
    cbfs_kv_set(rec, "note", "multi\nline");
    rc = make_manifest(path, label);
    if (rc == 0)
        rc = cbfs_repo_commit_backup(r, label, path, rec, err);
    unlink(path);
    free(path);
    cbfs_kv_free(rec);
    return rc;
}

static void test_backups(void)
{
    CbfsRepo *r = new_repo("backups");
    CbfsKv *rec = NULL, **list = NULL;
    size_t n = 0;
    char *label = NULL, *want, *mpath = NULL, *fetch_dir = tmp_path("fetch");
    CbfsError err;
    uint64_t size = 0;

    if (!r) {
        ok(0, "backups: repository");
        free(fetch_dir);
        return;
    }
    mkdir(fetch_dir, 0700);
    cbfs_error_init(&err);

    /* an empty repository */
    is_int(cbfs_repo_list_backups(r, &list, &n, &err), 0, "list an empty repository");
    is_int(n, 0, "no backups");
    cbfs_repo_free_backups(list, n);
    ok(cbfs_repo_resolve(r, "latest", &label, &err) < 0, "resolve latest in an empty repository");
    want = cbfs_xasprintf("repository \"%s\" has no backups", r->display);
    is_str(err.msg, want, "no backups: message");
    is_int(err.code, CBFS_EXIT_NOT_FOUND, "no backups: CBFS_EXIT_NOT_FOUND");
    free(want);

    /* three backups; b1 and b3 stop at the same time */
    cbfs_error_init(&err);
    is_int(commit(r, "b1", "2024-01-02T00:00:00Z", &err), 0, "commit b1");
    is_int(commit(r, "b2", "2024-01-01T00:00:00Z", &err), 0, "commit b2 (older)");
    is_int(commit(r, "b3", "2024-01-02T00:00:00Z", &err), 0, "commit b3 (same time as b1)");
    is_str(err.msg, "", "no message");
    ok(commit(r, "b1", "2024-01-03T00:00:00Z", &err) < 0, "a label is committed only once");
    want = cbfs_xasprintf("backup \"b1\" already exists in repository \"%s\"", r->display);
    is_str(err.msg, want, "duplicate label: message");
    free(want);
    /* stray objects under backups/ are not backups */
    cbfs_store_put(r->store, "backups/stray.deadbeef.db", "x", 1, NULL);
    cbfs_store_put(r->store, "backups/notes.txt", "x", 1, NULL);

    cbfs_error_init(&err);
    is_int(cbfs_repo_list_backups(r, &list, &n, &err), 0, "list backups");
    is_int(n, 3, "three backups");
    if (n == 3) {
        is_str(cbfs_kv_get(list[0], "label"), "b2", "oldest first");
        is_str(cbfs_kv_get(list[1], "label"), "b1", "same stop time: by label");
        is_str(cbfs_kv_get(list[2], "label"), "b3", "newest last");
    }
    cbfs_repo_free_backups(list, n);

    is_int(cbfs_repo_resolve(r, NULL, &label, &err), 0, "resolve NULL");
    is_str(label, "b3", "NULL is the newest backup");
    free(label);
    label = NULL;
    is_int(cbfs_repo_resolve(r, "latest", &label, &err), 0, "resolve latest");
    is_str(label, "b3", "latest is the newest backup");
    free(label);
    label = NULL;
    is_int(cbfs_repo_resolve(r, "b2", &label, &err), 0, "resolve a label");
    is_str(label, "b2", "a label resolves to itself");
    free(label);
    label = NULL;
    is_int(cbfs_repo_resolve(r, "x", &label, &err), -ENOENT, "resolve an unknown label");
    want = cbfs_xasprintf("backup \"x\" not found in repository \"%s\"", r->display);
    is_str(err.msg, want, "unknown label: message");
    is_int(err.code, CBFS_EXIT_NOT_FOUND, "unknown label: CBFS_EXIT_NOT_FOUND");
    free(want);
    ok(cbfs_repo_resolve(r, "../b1", &label, &err) == -ENOENT, "an invalid label is not found");

    /* the record */
    cbfs_error_init(&err);
    is_int(cbfs_repo_read_backup(r, "nope", &rec, &err), -ENOENT, "read an unknown backup");
    is_int(err.code, 0, "unknown backup: no error set");
    is_int(cbfs_repo_read_backup(r, "b1", &rec, &err), 0, "read backup b1");
    if (rec) {
        const char *mkey = cbfs_kv_get(rec, "manifest");
        uint64_t msize = 0;
        is_str(cbfs_kv_get(rec, "label"), "b1", "record: label");
        is_str(cbfs_kv_get(rec, "stop_time"), "2024-01-02T00:00:00Z", "record: caller's keys kept");
        is_str(cbfs_kv_get(rec, "note"), "multi\nline", "record: multi-line value kept");
        uint64_t chunk = 0;
        ok(mkey && strncmp(mkey, "backups/b1.", 11) == 0 && strlen(mkey) > 15 &&
               strcmp(mkey + strlen(mkey) - 4, ".mdb") == 0,
           "record: manifest key \"%s\"", mkey ? mkey : "(null)");
        ok(mkey && cbfs_store_stat(r->store, mkey, &size, NULL) == 0, "the manifest is stored");
        ok(cbfs_kv_get_u64(rec, "manifest_chunk", &chunk) == 0 && chunk == CBFS_MOBJECT_CHUNK,
           "record: manifest_chunk");
        ok(cbfs_kv_get_u64(rec, "manifest_size", &msize) == 0 && msize > 0 &&
               size == msize + 32 * ((msize + chunk - 1) / chunk),
           "record: manifest_size is its plain size (the object: that and an index of chunks)");
        ok(cbfs_kv_get(rec, "manifest_index_sha256") &&
               strlen(cbfs_kv_get(rec, "manifest_index_sha256")) == 64,
           "record: manifest_index_sha256");
        {
            /* read in place */
            CbfsManifest *m = NULL;
            char *v = NULL;
            is_int(cbfs_repo_open_manifest(r, rec, fetch_dir, &m, &err), 0,
                   "open the manifest in place");
            if (m)
                v = cbfs_manifest_get_meta(m, "label");
            is_str(v, "b1", "... and it is b1's");
            ok(m && cbfs_manifest_fetched(m) > 0 && cbfs_manifest_fetched(m) <= size,
               "... read from the store, no more than the object");
            free(v);
            cbfs_manifest_free(m);
        }

        /* fetch it back, verified */
        is_int(cbfs_repo_fetch_manifest(r, rec, fetch_dir, &mpath, &err), 0, "fetch the manifest");
        if (mpath) {
            CbfsManifest *m = NULL;
            char *v = NULL;
            ok(strncmp(mpath, fetch_dir, strlen(fetch_dir)) == 0, "fetched into the given dir");
            is_int(cbfs_manifest_open(mpath, &m, &err), 0, "the fetched manifest opens");
            if (m)
                v = cbfs_manifest_get_meta(m, "label");
            is_str(v, "b1", "and is b1's");
            free(v);
            cbfs_manifest_free(m);
            unlink(mpath);
            free(mpath);
            mpath = NULL;
        }

        /* tampered manifest object */
        if (mkey) {
            char *file = cbfs_xasprintf("%s/backups/%s", r->loc.path, mkey + 8);
            is_int(flip_byte(file, 100), 0, "tamper with the stored manifest");
            cbfs_error_init(&err);
            is_int(cbfs_repo_fetch_manifest(r, rec, fetch_dir, &mpath, &err), -EBADMSG,
                   "a tampered manifest is refused");
            is_int(err.code, CBFS_EXIT_CORRUPT, "tampered: CBFS_EXIT_CORRUPT");
            want = cbfs_xasprintf(
                "manifest \"%s\" of backup \"b1\" is corrupt: chunk 0: checksum mismatch", mkey);
            is_str(err.msg, want, "tampered: message");
            {
                CbfsManifest *m = NULL;
                char *v = NULL;
                cbfs_error_init(&err);
                is_int(cbfs_repo_open_manifest(r, rec, fetch_dir, &m, &err), -EIO,
                       "tampered: opened in place, refused at the first read of the chunk");
                is_str(err.msg, want, "tampered in place: the same message");
                is_int(err.code, CBFS_EXIT_CORRUPT, "tampered in place: CBFS_EXIT_CORRUPT");
                if (m)
                    v = cbfs_manifest_get_meta(m, "label");
                free(v);
                cbfs_manifest_free(m);
            }
            free(want);
            is_int(flip_byte(file, 100), 0, "mend it");
            is_int(flip_byte(file, (long) size - 1), 0, "tamper with the index of chunks");
            cbfs_error_init(&err);
            is_int(cbfs_repo_fetch_manifest(r, rec, fetch_dir, &mpath, &err), -EBADMSG,
                   "a tampered index is refused");
            want = cbfs_xasprintf(
                "manifest \"%s\" of backup \"b1\" is corrupt: index: checksum mismatch", mkey);
            is_str(err.msg, want, "tampered index: message");
            free(want);
            is_int(truncate(file, (off_t) size - 10), 0, "cut the object short");
            cbfs_error_init(&err);
            is_int(cbfs_repo_fetch_manifest(r, rec, fetch_dir, &mpath, &err), -EBADMSG,
                   "a short object is refused");
            want =
                cbfs_xasprintf("manifest \"%s\" of backup \"b1\" is corrupt: 10 bytes short", mkey);
            is_str(err.msg, want, "short object: message");
            free(want);
            /* missing manifest object */
            unlink(file);
            cbfs_error_init(&err);
            ok(cbfs_repo_fetch_manifest(r, rec, fetch_dir, &mpath, &err) < 0,
               "a missing manifest is an error");
            is_int(err.code, CBFS_EXIT_CORRUPT, "missing manifest: CBFS_EXIT_CORRUPT");
            want = cbfs_xasprintf("manifest \"%s\" of backup \"b1\" is missing", mkey);
            is_str(err.msg, want, "missing manifest: message");
            free(want);
            free(file);
        }
        /* a record without a manifest key */
        {
            CbfsKv *broken = cbfs_kv_new();
            cbfs_kv_set(broken, "label", "b9");
            cbfs_kv_set(broken, "manifest_sha256", "00");
            cbfs_error_init(&err);
            is_int(cbfs_repo_fetch_manifest(r, broken, fetch_dir, &mpath, &err), -EBADMSG,
                   "a record without a manifest is damaged");
            cbfs_kv_set(broken, "manifest", "config");
            is_int(cbfs_repo_fetch_manifest(r, broken, fetch_dir, &mpath, &err), -EBADMSG,
                   "a record whose manifest is outside backups/ is damaged");
            cbfs_kv_free(broken);
        }
        cbfs_kv_free(rec);
    }
    /* a record whose label does not match its name */
    cbfs_store_put(r->store, "backups/evil.info", "label = b1\n", 11, NULL);
    cbfs_error_init(&err);
    rec = NULL;
    is_int(cbfs_repo_read_backup(r, "evil", &rec, &err), -EBADMSG,
           "a record naming another label is damaged");
    is_int(err.code, CBFS_EXIT_CORRUPT, "wrong label: CBFS_EXIT_CORRUPT");

    rm_rf(fetch_dir);
    free(fetch_dir);
    cbfs_repo_free(r);
}

static void test_cache_dir(void)
{
    CbfsRepo *r = new_repo("cachedir");
    char *dir = NULL, *want;
    CbfsError err;
    struct stat sb;

    if (!r) {
        ok(0, "cache dir: repository");
        return;
    }
    cbfs_error_init(&err);
    is_int(cbfs_repo_cache_dir(r, &dir, &err), 0, "cache dir");
    want = cbfs_xasprintf("%s/cache/%s", tmpdir, r->id);
    is_str(dir, want, "cache dir is $CBFS_CACHE_DIR/<repository id>");
    ok(dir && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode), "and is created");
    free(want);
    free(dir);
    cbfs_repo_free(r);
}

/* ---- block index ---- */

typedef struct TestPack {
    char name[CBFS_PACK_NAME_LEN + 1];
    CbfsPackEntry e[8];
    size_t n;
} TestPack;

/* Store a pack of n blocks whose content starts with tag. */
static int store_pack(CbfsRepo *r, CbfsCodec *c, const char *tag, size_t n, TestPack *p)
{
    CbfsPackWriter *w = cbfs_pack_writer_new();
    uint8_t raw[8192], stored[8192 + 1024 + CBFS_CRYPT_OVERHEAD];
    CbfsError err;
    int rc;

    snprintf(p->name, sizeof(p->name), "%s", cbfs_pack_writer_name(w));
    p->n = n;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        memset(raw, (int) i, sizeof(raw));
        snprintf((char *) raw, 64, "%s block %zu", tag, i);
        cbfs_codec_block_id(c, raw, sizeof(raw), p->e[i].id);
        len = cbfs_codec_encode(c, p->e[i].id, raw, sizeof(raw), stored, sizeof(stored));
        p->e[i].stored_len = (uint32_t) len;
        p->e[i].raw_len = sizeof(raw);
        p->e[i].offset = cbfs_pack_writer_append(w, p->e[i].id, stored, (uint32_t) len, 8192);
    }
    cbfs_error_init(&err);
    rc = cbfs_pack_writer_finish(w, r->store, r->crypt, &err);
    if (rc < 0)
        printf("# could not store pack: %s\n", err.msg);
    cbfs_pack_writer_free(w);
    return rc;
}

static CbfsBlockIndex *open_index(CbfsRepo *r, size_t *synced)
{
    CbfsBlockIndex *bi = NULL;
    CbfsError err;

    cbfs_error_init(&err);
    *synced = 999;
    if (cbfs_blockindex_open(r, &bi, synced, &err) < 0)
        printf("# could not open the block index: %s\n", err.msg);
    return bi;
}

/* Number of p's blocks the index offers, with the right location. */
static int found(CbfsBlockIndex *bi, const TestPack *p)
{
    int n = 0;
    for (size_t i = 0; i < p->n; i++) {
        CbfsBlockRef ref;
        memset(&ref, 0, sizeof(ref));
        if (cbfs_blockindex_lookup(bi, p->e[i].id, &ref) == 0 && strcmp(ref.pack, p->name) == 0 &&
            ref.offset == p->e[i].offset && ref.stored_len == p->e[i].stored_len &&
            ref.raw_len == p->e[i].raw_len && memcmp(ref.id, p->e[i].id, CBFS_BLOCK_ID_LEN) == 0)
            n++;
    }
    return n;
}

static void test_blockindex(void)
{
    CbfsRepo *r = new_repo("bi");
    CbfsCodec *c = cbfs_codec_new(3);
    CbfsBlockIndex *bi, *bi2;
    TestPack p1, p2, p3;
    size_t synced = 0;
    CbfsError err;
    char *key, *db;
    struct stat sb;

    if (!r) {
        ok(0, "block index: repository");
        cbfs_codec_free(c);
        return;
    }
    cbfs_error_init(&err);
    bi = open_index(r, &synced);
    ok(bi != NULL, "open the block index of an empty repository");
    is_int(synced, 0, "no pack to read");
    db = cbfs_xasprintf("%s/cache/%s/blocks.db", tmpdir, r->id);
    ok(stat(db, &sb) == 0, "the index lives in the cache dir as blocks.db");
    free(db);
    if (!bi) {
        cbfs_repo_free(r);
        cbfs_codec_free(c);
        return;
    }
    {
        uint8_t id[CBFS_BLOCK_ID_LEN];
        CbfsBlockRef ref;
        cbfs_block_id("nothing", 7, id);
        is_int(cbfs_blockindex_lookup(bi, id, &ref), -ENOENT, "an unknown block is -ENOENT");
    }
    cbfs_blockindex_free(bi);

    is_int(store_pack(r, c, "p1", 5, &p1), 0, "store pack 1");
    bi = open_index(r, &synced);
    is_int(synced, 1, "reopen: pack 1 read");
    is_int(found(bi, &p1), 5, "every block of pack 1 is found with its location");
    cbfs_blockindex_free(bi);

    bi = open_index(r, &synced);
    is_int(synced, 0, "reopen: nothing new to read");
    is_int(found(bi, &p1), 5, "pack 1 still known");
    cbfs_blockindex_free(bi);

    is_int(store_pack(r, c, "p2", 3, &p2), 0, "store pack 2");
    bi = open_index(r, &synced);
    is_int(synced, 1, "reopen: only pack 2 read");
    is_int(found(bi, &p2), 3, "pack 2 found");
    cbfs_blockindex_free(bi);

    /* a pack deleted from the store is forgotten */
    key = cbfs_pack_key(p1.name);
    is_int(cbfs_store_remove(r->store, key, &err), 0, "delete pack 1 from the store");
    free(key);
    bi = open_index(r, &synced);
    is_int(synced, 0, "reopen after the delete: nothing to read");
    is_int(found(bi, &p1), 0, "pack 1's blocks are no longer offered");
    is_int(found(bi, &p2), 3, "pack 2's blocks still are");

    /* a damaged pack is never offered */
    {
        TestPack bad;
        char *file;
        is_int(store_pack(r, c, "bad", 2, &bad), 0, "store a pack, then damage its index");
        key = cbfs_pack_key(bad.name);
        file = cbfs_xasprintf("%s/%s", r->loc.path, key);
        flip_byte(file, (off_t) (bad.e[1].offset + bad.e[1].stored_len + 10));
        free(file);
        free(key);
        bi2 = open_index(r, &synced);
        ok(bi2 != NULL, "a damaged pack does not stop the index from opening");
        if (bi2) {
            is_int(found(bi2, &bad), 0, "the damaged pack's blocks are not offered");
            is_int(found(bi2, &p2), 3, "the others still are");
            cbfs_blockindex_free(bi2);
        }
    }

    /* blocks of this run's packs: offered to this run only until stored */
    bi2 = open_index(r, &synced); /* another run, opened before this one starts p3 */
    if (!bi2) {
        cbfs_blockindex_free(bi);
        cbfs_repo_free(r);
        cbfs_codec_free(c);
        return;
    }
    {
        CbfsPackWriter *w = cbfs_pack_writer_new();
        uint8_t raw[8192], stored[8192 + 1024 + CBFS_CRYPT_OVERHEAD];
        int added = 0;

        memset(&p3, 0, sizeof(p3));
        snprintf(p3.name, sizeof(p3.name), "%s", cbfs_pack_writer_name(w));
        p3.n = 4;
        is_int(cbfs_blockindex_pack_begin(bi, p3.name, &err), 0, "pack_begin");
        for (size_t i = 0; i < p3.n; i++) {
            CbfsBlockRef ref;
            size_t len;
            memset(raw, 0x40 + (int) i, sizeof(raw));
            cbfs_block_id(raw, sizeof(raw), p3.e[i].id);
            len = cbfs_codec_encode(c, p3.e[i].id, raw, sizeof(raw), stored, sizeof(stored));
            p3.e[i].stored_len = (uint32_t) len;
            p3.e[i].raw_len = sizeof(raw);
            p3.e[i].offset = cbfs_pack_writer_append(w, p3.e[i].id, stored, (uint32_t) len, 8192);
            memset(&ref, 0, sizeof(ref));
            ref.file = 1;
            ref.blockno = i;
            memcpy(ref.id, p3.e[i].id, CBFS_BLOCK_ID_LEN);
            memcpy(ref.pack, p3.name, sizeof(ref.pack));
            ref.offset = p3.e[i].offset;
            ref.stored_len = p3.e[i].stored_len;
            ref.raw_len = p3.e[i].raw_len;
            added += cbfs_blockindex_add(bi, &ref, &err) == 0;
            if (i == 1) {
                is_int(found(bi, &p3), 2, "this run finds its own unstored blocks");
                is_int(found(bi2, &p3), 0, "another run does not");
                /* a third run opens the shared index while p3 is being filled:
                 * p3 is not in the store yet, but it is not gone either */
                {
                    CbfsBlockIndex *bi3 = open_index(r, &synced);
                    ok(bi3 != NULL, "a third run opens the index meanwhile");
                    cbfs_blockindex_free(bi3);
                }
                is_int(found(bi, &p3), 2,
                       "the first run still finds its unstored blocks after another run's open");
            }
        }
        is_int(added, 4, "add the blocks of a pack being filled");
        is_int(cbfs_pack_writer_finish(w, r->store, r->crypt, &err), 0, "store p3");
        cbfs_pack_writer_free(w);
    }
    is_int(found(bi2, &p3), 0, "stored but not yet marked: another run does not find it");
    is_int(cbfs_blockindex_pack_stored(bi, p3.name, &err), 0, "pack_stored");
    is_int(found(bi, &p3), 4, "this run finds all its blocks");
    is_int(found(bi2, &p3), 4, "once marked stored, another run finds them too");
    is_str(err.msg, "", "no error message");
    {
        CbfsBlockIndex *bi4 = open_index(r, &synced);
        ok(bi4 != NULL, "a later run opens the index");
        if (bi4) {
            is_int(found(bi4, &p3), 4, "and finds every block of p3");
            is_int(found(bi4, &p2), 3, "and of p2");
            cbfs_blockindex_free(bi4);
        }
    }
    cbfs_blockindex_free(bi2);
    cbfs_blockindex_free(bi);
    cbfs_repo_free(r);
    cbfs_codec_free(c);
}

/* ---- WAL archive ---- */

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, sizeof(v));
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof(v));
}

static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof(v));
}

/* A 1 MiB segment segno of timeline 1 and system sysid; body seeded by
 * seed (0: compressible, else random).  Caller frees. */
static uint8_t *make_segment(uint64_t segno, uint64_t sysid, unsigned seed, char name[25])
{
    uint8_t *seg = calloc(1, SEG_SIZE);

    if (seed) {
        cbfs_random_bytes(seg, SEG_SIZE);
    } else {
        for (size_t i = 40; i < SEG_SIZE; i++)
            seg[i] = (uint8_t) ((i / 4096) ^ (i % 7));
    }
    put16(seg + 0, 0xD110);
    put16(seg + 2, 0x0002);
    put32(seg + 4, 1);
    put64(seg + 8, segno * SEG_SIZE);
    put64(seg + 16, 0);
    put64(seg + 24, sysid);
    put32(seg + 32, SEG_SIZE);
    put32(seg + 36, 8192);
    cbfs_wal_segname(1, segno, SEG_SIZE, name, 25);
    return seg;
}

static void test_wal(void)
{
    CbfsRepo *r = new_repo("wal");
    const uint64_t sysid = 7312345678901234567ull;
    uint8_t *seg, *seg2, *other, *rnd;
    char name[25], name2[25], name3[25], name4[25];
    char *dest = tmp_path("restored"), *key, *want, *file;
    CbfsError err;
    uint64_t owner = 0, size = 0;

    if (!r) {
        ok(0, "wal: repository");
        free(dest);
        return;
    }
    seg = make_segment(1, sysid, 0, name);
    is_str(name, "000000010000000000000001", "segment name");
    {
        uint64_t got_sysid = 0;
        uint32_t got_size = 0, got_tli = 0;
        is_int(cbfs_wal_segment_header(seg, SEG_SIZE, &got_sysid, &got_size, &got_tli), 0,
               "the synthetic segment has a valid header");
        ok(got_sysid == sysid && got_size == SEG_SIZE && got_tli == 1, "with our sysid and size");
    }

    /* keys */
    key = cbfs_wal_key(name);
    is_str(key, "wal/00000001/000000010000000000000001", "segment key");
    free(key);
    key = cbfs_wal_key("0000000A.history");
    is_str(key, "wal/0000000A/0000000A.history", "history file key");
    free(key);
    key = cbfs_wal_key("00000002000000000000000A.partial");
    is_str(key, "wal/00000002/00000002000000000000000A.partial", "partial segment key");
    free(key);
    ok(cbfs_wal_key("not-a-wal-file") == NULL, "no key for a non-WAL name");
    ok(cbfs_wal_key("../../config") == NULL, "no key for a path");

    /* push, push again */
    cbfs_error_init(&err);
    is_int(cbfs_wal_exists(r, name, &err), -ENOENT, "not there before the push");
    is_int(cbfs_wal_push_buffer(r, name, seg, SEG_SIZE, &err), 0, "push a segment");
    is_str(err.msg, "", "no message");
    is_int(cbfs_wal_exists(r, name, &err), 0, "it exists after the push");
    ok(cbfs_repo_cluster(r, &owner, &err) == 0 && owner == sysid,
       "the first push claims the repository for the segment's system");
    key = cbfs_wal_key(name);
    ok(cbfs_store_stat(r->store, key, &size, &err) == 0 && size > CBFS_WAL_OBJECT_HEADER &&
           size < SEG_SIZE,
       "a compressible segment is stored compressed (%llu bytes)", (unsigned long long) size);
    free(key);
    is_int(cbfs_wal_push_buffer(r, name, seg, SEG_SIZE, &err), 0,
           "pushing the same segment again succeeds");
    is_str(err.msg, "", "no message");

    /* same name, different content */
    seg2 = malloc(SEG_SIZE);
    memcpy(seg2, seg, SEG_SIZE);
    seg2[SEG_SIZE / 2] ^= 0x01;
    cbfs_error_init(&err);
    ok(cbfs_wal_push_buffer(r, name, seg2, SEG_SIZE, &err) < 0,
       "a different segment of the same name is refused");
    is_int(err.code, CBFS_EXIT_CONFLICT, "different content: CBFS_EXIT_CONFLICT");
    want =
        cbfs_xasprintf("WAL file \"%s\" already exists in repository \"%s\" with different content",
                       name, r->display);
    is_str(err.msg, want, "different content: message");
    free(want);

    /* another cluster */
    other = make_segment(2, sysid + 1, 0, name2);
    cbfs_error_init(&err);
    ok(cbfs_wal_push_buffer(r, name2, other, SEG_SIZE, &err) < 0,
       "a segment of another system is refused");
    is_int(err.code, CBFS_EXIT_DATABASE, "other system: CBFS_EXIT_DATABASE");
    want = cbfs_xasprintf("WAL file \"%s\" belongs to database system %llu, not %llu of "
                          "repository \"%s\"",
                          name2, (unsigned long long) (sysid + 1), (unsigned long long) sysid,
                          r->display);
    is_str(err.msg, want, "other system: message");
    free(want);
    cbfs_error_init(&err);
    is_int(cbfs_wal_exists(r, name2, &err), -ENOENT, "the refused segment is not stored");

    /* malformed segments */
    cbfs_error_init(&err);
    ok(cbfs_wal_push_buffer(r, name2, other, SEG_SIZE - 1, &err) < 0, "a short segment is refused");
    ok(strstr(err.msg, "has size 1048575, expected 1048576") != NULL, "short segment: \"%s\"",
       err.msg);
    put16(other, 0x1234);
    cbfs_error_init(&err);
    ok(cbfs_wal_push_buffer(r, name2, other, SEG_SIZE, &err) < 0, "a bad page header is refused");
    want = cbfs_xasprintf("WAL file \"%s\" does not start with a valid page header", name2);
    is_str(err.msg, want, "bad header: message");
    free(want);
    cbfs_error_init(&err);
    is_int(cbfs_wal_push_buffer(r, "000000010000000000000001.gz", seg, SEG_SIZE, &err), -EINVAL,
           "a non-WAL name is refused");
    is_int(err.code, CBFS_EXIT_USAGE, "non-WAL name: CBFS_EXIT_USAGE");

    /* fetch */
    cbfs_error_init(&err);
    is_int(cbfs_wal_fetch(r, name, dest, &err), 0, "fetch the segment");
    ok(files_equal(dest, seg, SEG_SIZE), "fetched segment is identical");
    unlink(dest);
    cbfs_error_init(&err);
    is_int(cbfs_wal_fetch(r, "000000010000000000000063", dest, &err), -ENOENT,
           "fetch a missing segment: -ENOENT");
    ok(err.code == 0 && err.msg[0] == '\0', "missing segment: no message");
    ok(access(dest, F_OK) != 0, "missing segment: nothing written");
    cbfs_error_init(&err);
    is_int(cbfs_wal_fetch(r, "pg_wal/000000010000000000000001", dest, &err), -EINVAL,
           "fetch a non-WAL name: -EINVAL");

    /* an incompressible segment is stored raw; push_file; history files */
    rnd = make_segment(3, sysid, 1, name3);
    {
        char *path = tmp_path(name3);
        cbfs_write_file_atomic(path, rnd, SEG_SIZE, 0600, NULL);
        cbfs_error_init(&err);
        is_int(cbfs_wal_push_file(r, path, &err), 0, "push_file a random segment");
        key = cbfs_wal_key(name3);
        ok(cbfs_store_stat(r->store, key, &size, &err) == 0 &&
               size == CBFS_WAL_OBJECT_HEADER + SEG_SIZE,
           "stored raw: header + segment");
        free(key);
        is_int(cbfs_wal_fetch(r, name3, dest, &err), 0, "fetch it");
        ok(files_equal(dest, rnd, SEG_SIZE), "fetched random segment is identical");
        unlink(dest);
        unlink(path);
        free(path);
    }
    {
        const char *hist = "1\t0/3000000\tno recovery target specified\n";
        char n47[25], n48[25], n49[25], partial[40];
        uint8_t *s47 = make_segment(47, sysid, 0, n47), *s48 = make_segment(48, sysid, 0, n48),
                *s49 = make_segment(49, sysid, 0, n49);
        /* timeline 1 pushed past 0/3000000 before anyone knew it ended there */
        cbfs_error_init(&err);
        is_int(cbfs_wal_push_buffer(r, n49, s49, SEG_SIZE, &err), 0,
               "a segment pushed before its timeline's end is known is stored");
        is_int(
            cbfs_wal_push_buffer(r, "00000002.history", (const uint8_t *) hist, strlen(hist), &err),
            0, "push a history file");
        is_int(cbfs_wal_fetch(r, "00000002.history", dest, &err), 0, "fetch it");
        ok(files_equal(dest, (const uint8_t *) hist, strlen(hist)), "history file identical");
        unlink(dest);

        /* timeline 1 ended at 0/3000000: segment 48 and later hold WAL
         * written after the fork, 47 ends right at it */
        is_int(cbfs_wal_push_buffer(r, n47, s47, SEG_SIZE, &err), 0,
               "a segment of the old timeline that ends at the fork is stored");
        cbfs_error_init(&err);
        ok(cbfs_wal_push_buffer(r, n48, s48, SEG_SIZE, &err) < 0,
           "a segment of the old timeline past the fork is refused");
        is_int(err.code, CBFS_EXIT_CONFLICT, "past the fork: CBFS_EXIT_CONFLICT");
        want = cbfs_xasprintf("WAL file \"%s\" holds WAL of timeline 1 past its end at 0/3000000 "
                              "(history file \"00000002.history\" in repository \"%s\")",
                              n48, r->display);
        is_str(err.msg, want, "past the fork: message");
        free(want);
        cbfs_error_init(&err);
        is_int(cbfs_wal_exists(r, n48, &err), -ENOENT, "the refused segment is not stored");
        snprintf(partial, sizeof(partial), "%s.partial", n48);
        cbfs_error_init(&err);
        is_int(cbfs_wal_push_buffer(r, partial, s48, SEG_SIZE, &err), 0,
               "the fork's .partial segment is stored");
        is_int(cbfs_wal_push_buffer(r, n49, s49, SEG_SIZE, &err), 0,
               "the same segment pushed again after the fork is known: accepted, as before");
        s49[SEG_SIZE / 2] ^= 1;
        cbfs_error_init(&err);
        ok(cbfs_wal_push_buffer(r, n49, s49, SEG_SIZE, &err) < 0 &&
               strstr(err.msg, "past its end at 0/3000000") != NULL,
           "... another one of that name is refused: \"%s\"", err.msg);
        free(s47);
        free(s48);
        free(s49);
    }

    /* corruption of the stored object */
    {
        static const struct {
            const char *what;
            int raw;     /* which segment: 0 compressed, 1 raw */
            off_t where; /* -1: middle of the payload */
            const char *why;
        } flips[] = {
            {"compressed payload", 0, -1, NULL},
            {"compressed, magic", 0, 0, "bad header"},
            {"compressed, checksum", 0, 8, "checksum mismatch"},
            {"raw payload", 1, -1, "checksum mismatch"},
            {"raw, checksum", 1, 39, "checksum mismatch"},
        };
        for (size_t i = 0; i < CBFS_ARRAY_LEN(flips); i++) {
            const char *nm = flips[i].raw ? name3 : name;
            char *k = cbfs_wal_key(nm), *prefix;
            uint64_t sz = 0;
            off_t at;
            file = cbfs_xasprintf("%s/%s", r->loc.path, k);
            cbfs_store_stat(r->store, k, &sz, NULL);
            at = flips[i].where >= 0
                     ? flips[i].where
                     : (off_t) (CBFS_WAL_OBJECT_HEADER + (sz - CBFS_WAL_OBJECT_HEADER) / 2);
            is_int(flip_byte(file, at), 0, "%s: flip a byte of the stored object", flips[i].what);
            cbfs_error_init(&err);
            is_int(cbfs_wal_fetch(r, nm, dest, &err), -EBADMSG, "%s: fetch is -EBADMSG",
                   flips[i].what);
            is_int(err.code, CBFS_EXIT_CORRUPT, "%s: CBFS_EXIT_CORRUPT", flips[i].what);
            prefix =
                cbfs_xasprintf("WAL file \"%s\" in repository \"%s\" is corrupt: ", nm, r->display);
            ok(strncmp(err.msg, prefix, strlen(prefix)) == 0 && strstr(err.msg, k) != NULL,
               "%s: message \"%s\" names the file and the object", flips[i].what, err.msg);
            if (flips[i].why)
                ok(strstr(err.msg, flips[i].why) != NULL, "%s: says \"%s\"", flips[i].what,
                   flips[i].why);
            ok(access(dest, F_OK) != 0, "%s: nothing written", flips[i].what);
            flip_byte(file, at); /* undo */
            free(prefix);
            free(file);
            free(k);
        }
        cbfs_error_init(&err);
        is_int(cbfs_wal_fetch(r, name, dest, &err), 0, "undone: the segment fetches again");
        unlink(dest);
    }

    /* another cluster's segment into an unclaimed repository claims it */
    {
        CbfsRepo *r2 = new_repo("wal2");
        if (r2) {
            uint8_t *s4 = make_segment(4, 42, 0, name4);
            cbfs_error_init(&err);
            is_int(cbfs_wal_push_buffer(r2, name4, s4, SEG_SIZE, &err), 0,
                   "push into an unclaimed repository");
            ok(cbfs_repo_cluster(r2, &owner, &err) == 0 && owner == 42, "which it then belongs to");
            free(s4);
            cbfs_repo_free(r2);
        }
    }

    free(seg);
    free(seg2);
    free(other);
    free(rnd);
    free(dest);
    cbfs_repo_free(r);
}

/* ---- encrypted repositories ---- */

static const CbfsKdfParams fast_kdf = {1024, 8, 1};

/* Open the repository at path afresh (its key still wrapped). */
static CbfsRepo *reopen(const char *path)
{
    CbfsLocation loc;
    CbfsRepo *r = NULL;
    CbfsError err;
    cbfs_error_init(&err);
    if (parse_loc(path, &loc) == 0) {
        if (cbfs_repo_open(&loc, &r, &err) < 0)
            printf("# could not open \"%s\": %s\n", path, err.msg);
        cbfs_location_release(&loc);
    }
    return r;
}

/* The stored bytes of key in the posix repository at path start with CBFSENC1
 * and do not hold needle. */
static int sealed_on_disk(const char *path, const char *key, const char *needle)
{
    char *file = cbfs_xasprintf("%s/%s", path, key);
    uint8_t *buf = NULL;
    size_t len = 0;
    int yes = cbfs_read_file(file, &buf, &len, NULL) == 0 && len >= 8 &&
              memcmp(buf, "CBFSENC1", 8) == 0 && !memmem(buf, len, needle, strlen(needle));
    free(buf);
    free(file);
    return yes;
}

/* A manifest object: not plain (needle absent) and not sealed whole. */
static int chunks_sealed_on_disk(const char *path, const char *key, const char *needle)
{
    char *file = cbfs_xasprintf("%s/%s", path, key);
    uint8_t *buf = NULL;
    size_t len = 0;
    int yes = cbfs_read_file(file, &buf, &len, NULL) == 0 && len >= 8 &&
              memcmp(buf, "CBFSENC1", 8) != 0 && !memmem(buf, len, needle, strlen(needle));
    free(buf);
    free(file);
    return yes;
}

static void test_encrypted(void)
{
    char *path = tmp_path("enc"), *plain_path = tmp_path("plainconf"), *want, *file;
    char *fetch_dir = tmp_path("fetch-enc"), *mpath = NULL;
    CbfsLocation loc;
    CbfsRepo *r;
    CbfsKv *rec = NULL;
    CbfsError err;
    uint8_t *text = NULL;
    size_t len = 0;
    uint64_t owner = 0;
    const uint64_t sysid = 7312345678901234567ull;

    mkdir(fetch_dir, 0700);
    if (!freopen("/dev/null", "r", stdin)) /* never a passphrase prompt here */
        printf("# could not redirect stdin\n");
    unsetenv("CBFS_PASSPHRASE");
    unsetenv("CBFS_PASSPHRASE_FILE");
    cbfs_error_init(&err);
    if (parse_loc(path, &loc) < 0)
        return;
    is_int(cbfs_repo_init_encrypted(&loc, 65536, 3, "s3cret", &fast_kdf, &err), 0,
           "init an encrypted repository");
    cbfs_location_release(&loc);
    file = cbfs_xasprintf("%s/config", path);
    cbfs_read_file(file, &text, &len, NULL);
    free(file);
    ok(text && strstr((char *) text, "encryption = aes-256-gcm\n") &&
           strstr((char *) text, "kdf = scrypt\n") && strstr((char *) text, "kdf_n = 1024\n") &&
           strstr((char *) text, "kdf_salt = ") && strstr((char *) text, "master_key = "),
       "its config is plaintext kv with the encryption keys");
    free(text);
    text = NULL;
    if (parse_loc(plain_path, &loc) == 0) {
        cbfs_repo_init(&loc, 65536, 3, &err);
        cbfs_location_release(&loc);
        file = cbfs_xasprintf("%s/config", plain_path);
        cbfs_read_file(file, &text, &len, NULL);
        ok(text && !strstr((char *) text, "encryption") && !strstr((char *) text, "kdf") &&
               !strstr((char *) text, "master_key"),
           "an unencrypted repository's config has none of them");
        free(text);
        free(file);
        r = reopen(plain_path);
        ok(r && !r->crypt, "and it opens without keys");
        if (r) {
            cbfs_error_init(&err);
            is_int(cbfs_repo_unlock(r, &err), 0, "unlock is a no-op there");
            is_int(cbfs_repo_change_passphrase(r, "x", &fast_kdf, &err), -EINVAL,
                   "no passphrase to change there");
            want = cbfs_xasprintf("repository \"%s\" is not encrypted", plain_path);
            is_str(err.msg, want, "message");
            free(want);
        }
        cbfs_repo_free(r);
    }

    /* opening does not unwrap; the first need does, with one clear error */
    r = reopen(path);
    if (!r) {
        free(path);
        free(plain_path);
        free(fetch_dir);
        return;
    }
    ok(r->crypt && !cbfs_crypt_unlocked(r->crypt), "open leaves the key wrapped");
    cbfs_error_init(&err);
    is_int(cbfs_repo_unlock(r, &err), -EACCES,
           "no passphrase anywhere: unlock fails (not -ENOENT, which means absent)");
    want = cbfs_xasprintf("could not open repository \"%s\": repository is encrypted and no "
                          "passphrase was given (set CBFS_PASSPHRASE or CBFS_PASSPHRASE_FILE, or "
                          "use --passphrase-file)",
                          path);
    is_str(err.msg, want, "no passphrase: message");
    is_int(err.code, CBFS_EXIT_USAGE, "no passphrase: CBFS_EXIT_USAGE");
    free(want);
    cbfs_error_init(&err);
    is_int(cbfs_repo_read_backup(r, "b1", &rec, &err), -ENOENT,
           "a backup that does not exist is still just absent");
    {
        /* a stored object without a passphrase is an error, not "absent" */
        CbfsKv *kv = cbfs_kv_new();
        char *text;
        cbfs_kv_set(kv, "label", "b0");
        text = cbfs_kv_format(kv);
        /* sealed by a repository object that knows the key */
        setenv("CBFS_PASSPHRASE", "s3cret", 1);
        {
            CbfsRepo *w = reopen(path);
            cbfs_store_put(w->store, "backups/b0.info", text, strlen(text), NULL);
            cbfs_repo_free(w);
        }
        unsetenv("CBFS_PASSPHRASE");
        cbfs_error_init(&err);
        is_int(cbfs_repo_read_backup(r, "b0", &rec, &err), -EACCES,
               "reading a stored record without a passphrase: -EACCES, not -ENOENT");
        ok(strstr(err.msg, "no passphrase was given") != NULL, "with the message: \"%s\"", err.msg);
        free(text);
        cbfs_kv_free(kv);
        text = cbfs_xasprintf("%s/backups/b0.info", path);
        unlink(text);
        free(text);
    }
    cbfs_repo_free(r);

    setenv("CBFS_PASSPHRASE", "wrong", 1);
    r = reopen(path);
    cbfs_error_init(&err);
    is_int(cbfs_repo_claim(r, sysid, &owner, &err), -EACCES,
           "a wrong passphrase: claiming (an encrypted object) fails");
    want = cbfs_xasprintf("could not open repository \"%s\": wrong passphrase", path);
    is_str(err.msg, want, "wrong passphrase: message");
    is_int(err.code, CBFS_EXIT_REPO, "wrong passphrase: CBFS_EXIT_REPO");
    free(want);
    file = cbfs_xasprintf("%s/cluster", path);
    ok(access(file, F_OK) != 0, "and nothing was written");
    free(file);
    cbfs_repo_free(r);

    setenv("CBFS_PASSPHRASE", "s3cret", 1);
    r = reopen(path);
    cbfs_error_init(&err);
    is_int(cbfs_repo_unlock(r, &err), 0, "the right passphrase unlocks");
    is_int(cbfs_repo_claim(r, sysid, &owner, &err), 0, "claim");
    ok(owner == sysid, "claimed");
    ok(sealed_on_disk(path, "cluster", "system_identifier"), "the cluster object is sealed");
    is_int(commit(r, "b1", "2024-01-01T00:00:00Z", &err), 0, "commit b1");
    is_int(commit(r, "b2", "2024-01-02T00:00:00Z", &err), 0, "commit b2");
    ok(sealed_on_disk(path, "backups/b1.info", "stop_time"), "a backup record is sealed");
    is_int(cbfs_repo_read_backup(r, "b2", &rec, &err), 0, "read b2's record");
    if (rec) {
        const char *mkey = cbfs_kv_get(rec, "manifest");
        ok(mkey && chunks_sealed_on_disk(path, mkey, "SQLite format"),
           "its manifest is sealed, chunk by chunk");
        is_int(cbfs_repo_fetch_manifest(r, rec, fetch_dir, &mpath, &err), 0,
               "and fetched, opened and verified");
        if (mpath) {
            unlink(mpath);
            free(mpath);
            mpath = NULL;
        }
    }
    {
        /* blocks: keyed ids, sealed packs the dedup index still reads */
        CbfsCodec *c = cbfs_repo_codec_new(r, 3);
        CbfsBlockIndex *bi;
        TestPack p;
        size_t synced = 0;
        is_int(store_pack(r, c, "enc", 4, &p), 0, "store an encrypted pack");
        bi = open_index(r, &synced);
        is_int(synced, 1, "the dedup index reads its sealed index");
        is_int(found(bi, &p), 4, "and offers its blocks");
        cbfs_blockindex_free(bi);
        cbfs_codec_free(c);
    }
    {
        /* WAL */
        char name[25];
        uint8_t *seg = make_segment(3, sysid, 0, name), *back = NULL;
        char *key = cbfs_wal_key(name);
        size_t blen = 0;
        is_int(cbfs_wal_push_buffer(r, name, seg, SEG_SIZE, &err), 0, "push a segment");
        ok(sealed_on_disk(path, key, "CBFSWAL1"), "the WAL object is sealed, header and all");
        is_int(cbfs_wal_push_buffer(r, name, seg, SEG_SIZE, &err), 0,
               "push it again: the same content is fine");
        is_int(cbfs_wal_read(r, name, &back, &blen, &err), 0, "read it back");
        ok(blen == SEG_SIZE && back && memcmp(back, seg, SEG_SIZE) == 0, "the same segment");
        free(back);
        seg[5000] ^= 1;
        cbfs_error_init(&err);
        is_int(cbfs_wal_push_buffer(r, name, seg, SEG_SIZE, &err), -EEXIST,
               "push other content under that name: refused");
        is_int(err.code, CBFS_EXIT_CONFLICT, "CBFS_EXIT_CONFLICT");
        free(seg);
        free(key);
    }
    cbfs_error_init(&err);

    /* b1's manifest renamed over b2's: refused, naming the object */
    {
        CbfsKv *r1 = NULL;
        char *from, *to;
        cbfs_repo_read_backup(r, "b1", &r1, &err);
        from = cbfs_xasprintf("%s/%s", path, cbfs_kv_get(r1, "manifest"));
        to = cbfs_xasprintf("%s/%s", path, cbfs_kv_get(rec, "manifest"));
        ok(rename(from, to) == 0, "rename b1's manifest over b2's");
        is_int(cbfs_repo_fetch_manifest(r, rec, fetch_dir, &mpath, &err), -EBADMSG,
               "fetching b2's manifest fails");
        want = cbfs_xasprintf("manifest \"%s\" of backup \"b2\" is corrupt: index: "
                              "authentication failed",
                              cbfs_kv_get(rec, "manifest"));
        is_str(err.msg, want, "naming the object");
        is_int(err.code, CBFS_EXIT_CORRUPT, "CBFS_EXIT_CORRUPT");
        free(want);
        free(from);
        free(to);
        cbfs_kv_free(r1);
    }
    cbfs_kv_free(rec);
    rec = NULL;

    /* a new passphrase: config replaced, nothing else */
    {
        char *cfg = cbfs_xasprintf("%s/config", path), *before = NULL;
        uint8_t *old = NULL, *now = NULL;
        size_t olen = 0, nlen = 0;
        cbfs_read_file(cfg, &old, &olen, NULL);
        cbfs_error_init(&err);
        is_int(cbfs_repo_change_passphrase(r, "n3w", &fast_kdf, &err), 0, "change the passphrase");
        is_str(err.msg, "", "no message");
        cbfs_read_file(cfg, &now, &nlen, NULL);
        ok(old && now && (olen != nlen || memcmp(old, now, olen) != 0), "the config changed");
        ok(now && strstr((char *) now, r->id), "and kept the repository id");
        free(old);
        free(now);
        free(before);
        free(cfg);
    }
    cbfs_repo_free(r);
    r = reopen(path);
    cbfs_error_init(&err);
    is_int(cbfs_repo_unlock(r, &err), -EACCES, "the old passphrase no longer opens it");
    cbfs_repo_free(r);
    setenv("CBFS_PASSPHRASE", "n3w", 1);
    r = reopen(path);
    cbfs_error_init(&err);
    is_int(cbfs_repo_unlock(r, &err), 0, "the new one does");
    is_int(cbfs_repo_read_backup(r, "b1", &rec, &err), 0, "and reads what was there before");
    cbfs_kv_free(rec);
    cbfs_repo_free(r);
    unsetenv("CBFS_PASSPHRASE");
    free(path);
    free(plain_path);
    free(fetch_dir);
}

static int run_tests(void)
{
    char *cache = tmp_path("cache");

    setenv("CBFS_CACHE_DIR", cache, 1);
    free(cache);
    test_init_open();
    test_claim();
    test_labels();
    test_backups();
    test_cache_dir();
    test_wal();
    test_blockindex();
    test_encrypted();
    return done_testing();
}

/* The tests run in a child, so the temp directory is removed even when a
 * sanitizer or a crash stops them halfway. */
int main(void)
{
    pid_t pid;
    int status = 0;

    if (!mkdtemp(tmpdir)) {
        printf("Bail out! could not create a temp directory\n");
        return 1;
    }
    fflush(stdout);
    pid = fork();
    if (pid == 0)
        exit(run_tests()); /* exit, not _exit: flush stdout, run leak checks */
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        status = 1 << 8;
    rm_rf(tmpdir);
    if (access(tmpdir, F_OK) == 0)
        printf("# could not remove \"%s\"\n", tmpdir);
    if (WIFSIGNALED(status))
        printf("# tests killed by signal %d\n", WTERMSIG(status));
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
