/*
 * test-store-crypt.c - unit tests for lib/store_crypt.c, the store of an
 * encrypted repository, over the in-memory store (test-store.c runs the
 * store contract on it too).
 *
 * What is checked here: what lands in the store below (a sealed object with
 * its magic, never the plaintext; config and packs as they are); that an
 * object swapped with another, moved to another name, copied from another
 * repository, tampered with or stored unencrypted fails with one message
 * naming it (CBFS_EXIT_CORRUPT) and returns nothing; that the key is
 * unwrapped only by an operation that encrypts or decrypts, once.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/crypt.h"
#include "cbfs/kv.h"
#include "cbfs/store.h"
#include "cbfs/util.h"
#include "tap.h"
#include "testkeys.h"

#define OVERHEAD (8 + CBFS_CRYPT_OVERHEAD) /* magic, nonce, tag */

static const char repo_id[] = "00112233445566778899aabbccddeeff";

typedef struct Ask {
    const char *answer;
    int calls;
} Ask;

static int ask(void *ctx, char **ret, CbfsError *err)
{
    Ask *a = ctx;
    (void) err;
    __atomic_add_fetch(&a->calls, 1, __ATOMIC_SEQ_CST);
    *ret = cbfs_xstrdup(a->answer);
    return 0;
}

/* A new repository's config (caller frees) and its unlocked keys. */
static CbfsKv *new_keys(const char *id, const char *passphrase, CbfsCrypt **ret)
{
    return test_keys(id, "/test/repo", passphrase, ret);
}

/* inner's object key, as it is stored (caller frees). */
static uint8_t *raw_get(CbfsStore *inner, const char *key, size_t *len)
{
    uint8_t *buf = NULL;
    if (cbfs_store_get(inner, key, &buf, len, NULL) < 0)
        return NULL;
    return buf;
}

static void raw_put(CbfsStore *inner, const char *key, const uint8_t *data, size_t len)
{
    cbfs_store_remove(inner, key, NULL);
    if (cbfs_store_put(inner, key, data, len, NULL) < 0)
        printf("# could not put \"%s\"\n", key);
}

/* get and get_range of key through st fail with this message. */
static void check_refused(CbfsStore *st, const char *key, const char *why, const char *what)
{
    CbfsError err;
    uint8_t *buf = (uint8_t *) 1, part[4];
    size_t len = 0, n = 0;
    char *want = cbfs_xasprintf("object \"%s\" in repository \"memory\" is corrupt: %s", key, why);

    cbfs_error_init(&err);
    is_int(cbfs_store_get(st, key, &buf, &len, &err), -EBADMSG, "%s: get is -EBADMSG", what);
    is_str(err.msg, want, "%s: message", what);
    is_int(err.code, CBFS_EXIT_CORRUPT, "%s: CBFS_EXIT_CORRUPT", what);
    ok(buf == (uint8_t *) 1, "%s: nothing returned", what);
    cbfs_error_init(&err);
    is_int(cbfs_store_get_range(st, key, 0, sizeof(part), part, &n, &err), -EBADMSG,
           "%s: get_range is -EBADMSG too", what);
    free(want);
}

static void test_layout(void)
{
    static const char text[] = "label = b1\nsecret = MARKER-record\n";
    CbfsCrypt *crypt;
    CbfsKv *kv = new_keys(repo_id, "pw", &crypt);
    CbfsStore *inner = cbfs_store_mem_new(), *st = cbfs_store_crypt_new(inner, crypt);
    CbfsError err;
    uint8_t *raw, *buf = NULL;
    size_t len = 0;
    uint64_t size = 0;

    cbfs_error_init(&err);
    is_str(st->display, "memory", "the store is shown as the one below");
    is_int(cbfs_store_put(st, "backups/b1.info", text, strlen(text), &err), 0, "put a record");
    raw = raw_get(inner, "backups/b1.info", &len);
    is_int(len, strlen(text) + OVERHEAD, "stored with 36 bytes more (magic, nonce, tag)");
    ok(raw && memcmp(raw, "CBFSENC1", 8) == 0, "stored with the magic CBFSENC1");
    ok(raw && !memmem(raw, len, "MARKER", 6) && !memmem(raw, len, "label", 5),
       "the plaintext is not stored");
    free(raw);
    is_int(cbfs_store_get(st, "backups/b1.info", &buf, &len, &err), 0, "get it back");
    ok(len == strlen(text) && buf && memcmp(buf, text, len) == 0 && buf[len] == '\0',
       "the record, NUL-terminated");
    free(buf);
    is_int(cbfs_store_stat(st, "backups/b1.info", &size, &err), 0, "stat");
    is_int(size, strlen(text), "stat reports the plaintext size");

    /* config and packs pass as they are */
    is_int(cbfs_store_put(st, "config", "format = 1\n", 11, &err), 0, "put config");
    raw = raw_get(inner, "config", &len);
    ok(raw && len == 11 && memcmp(raw, "format = 1\n", 11) == 0, "config is stored as it is");
    free(raw);
    is_int(cbfs_store_put(st, "packs/ab/abcd.pack", "PACKDATA", 8, &err), 0, "put a pack");
    raw = raw_get(inner, "packs/ab/abcd.pack", &len);
    ok(raw && len == 8 && memcmp(raw, "PACKDATA", 8) == 0,
       "a pack is stored as it is (it seals its own blocks)");
    free(raw);
    {
        uint8_t part[4];
        size_t n = 0;
        is_int(cbfs_store_get_range(st, "packs/ab/abcd.pack", 2, 4, part, &n, &err), 0,
               "a ranged read of a pack");
        ok(n == 4 && memcmp(part, "CKDA", 4) == 0, "reads the stored bytes");
        is_int(cbfs_store_stat(st, "packs/ab/abcd.pack", &size, &err), 0, "stat a pack");
        is_int(size, 8, "its stored size");
    }
    is_str(err.msg, "", "no error message");
    cbfs_store_free(st);
    cbfs_crypt_free(crypt);
    cbfs_kv_free(kv);
}

static void test_refused(void)
{
    CbfsCrypt *crypt, *other;
    CbfsKv *kv = new_keys(repo_id, "pw", &crypt);
    CbfsKv *kv2 = new_keys("ffeeddccbbaa99887766554433221100", "pw", &other);
    CbfsStore *inner = cbfs_store_mem_new(), *st = cbfs_store_crypt_new(inner, crypt);
    CbfsStore *inner2 = cbfs_store_mem_new(), *st2 = cbfs_store_crypt_new(inner2, other);
    const char *a = "wal/00000001/000000010000000000000005";
    const char *b = "wal/00000001/000000010000000000000006";
    uint8_t *ra, *rb, *raw;
    size_t la, lb, len;
    CbfsError err;

    cbfs_error_init(&err);
    cbfs_store_put(st, a, "segment five", 12, &err);
    cbfs_store_put(st, b, "segment six!", 12, &err);
    ra = raw_get(inner, a, &la);
    rb = raw_get(inner, b, &lb);

    /* swapped: each name holds the other's object */
    raw_put(inner, a, rb, lb);
    raw_put(inner, b, ra, la);
    check_refused(st, a, "authentication failed", "two WAL objects swapped, the first");
    check_refused(st, b, "authentication failed", "two WAL objects swapped, the second");
    /* moved: renamed over another name */
    raw_put(inner, a, ra, la);
    raw_put(inner, "points/p1", ra, la);
    check_refused(st, "points/p1", "authentication failed", "an object renamed to another name");
    {
        uint8_t *buf = NULL;
        is_int(cbfs_store_get(st, a, &buf, &len, &err), 0, "put back, it opens again");
        ok(buf && len == 12 && memcmp(buf, "segment five", 12) == 0, "with its content");
        free(buf);
    }
    /* tampered */
    for (size_t i = 0; i < la; i += la / 7) {
        uint8_t *t = malloc(la);
        char what[64];
        memcpy(t, ra, la);
        t[i] ^= 0x20;
        raw_put(inner, "backups/t.info", t, la);
        snprintf(what, sizeof(what), "a byte flipped at %zu", i);
        check_refused(st, "backups/t.info",
                      i < 8 ? "not an encrypted object" : "authentication failed", what);
        free(t);
    }
    /* truncated, empty, unencrypted */
    raw_put(inner, "backups/t.info", ra, la - 1);
    check_refused(st, "backups/t.info", "authentication failed", "truncated by a byte");
    raw_put(inner, "backups/t.info", ra, OVERHEAD - 1);
    check_refused(st, "backups/t.info", "not an encrypted object", "shorter than the envelope");
    raw_put(inner, "backups/t.info", (const uint8_t *) "", 0);
    check_refused(st, "backups/t.info", "not an encrypted object", "empty");
    raw_put(inner, "cluster", (const uint8_t *) "system_identifier = 1\n", 22);
    check_refused(st, "cluster", "not an encrypted object", "an unencrypted object");
    /* the same name in another repository, another key */
    cbfs_store_put(st2, "cluster", "system_identifier = 7\n", 22, &err);
    raw = raw_get(inner2, "cluster", &len);
    raw_put(inner, "cluster", raw, len);
    free(raw);
    check_refused(st, "cluster", "authentication failed", "an object of another repository");
    {
        /* and with the other repository's key but this one's id: the AAD
         * binds the repository id too */
        CbfsKv *kv3;
        CbfsCrypt *same_id;
        CbfsStore *inner3 = cbfs_store_mem_new(), *st3;
        kv3 = new_keys(repo_id, "pw", &same_id);
        st3 = cbfs_store_crypt_new(inner3, same_id);
        cbfs_store_put(st3, "cluster", "system_identifier = 8\n", 22, &err);
        raw = raw_get(inner3, "cluster", &len);
        raw_put(inner, "cluster", raw, len);
        free(raw);
        check_refused(st, "cluster", "authentication failed",
                      "an object of a repository with the same id and passphrase");
        cbfs_store_free(st3);
        cbfs_crypt_free(same_id);
        cbfs_kv_free(kv3);
    }
    is_str(err.msg, "", "no error message from the puts");
    free(ra);
    free(rb);
    cbfs_store_free(st);
    cbfs_store_free(st2);
    cbfs_crypt_free(crypt);
    cbfs_crypt_free(other);
    cbfs_kv_free(kv);
    cbfs_kv_free(kv2);
}

static int count_cb(const char *key, uint64_t size, void *ctx)
{
    (void) key;
    *(uint64_t *) ctx += size;
    return 0;
}

/* Copy key's stored bytes from one store below to another. */
static void copy_raw(CbfsStore *from, CbfsStore *to, const char *key)
{
    size_t len;
    uint8_t *raw = raw_get(from, key, &len);
    if (raw)
        raw_put(to, key, raw, len);
    free(raw);
}

static void test_lazy(void)
{
    static const char seg[] = "wal/00000001/000000010000000000000001";
    CbfsCrypt *made, *c = NULL, *w = NULL;
    CbfsKv *kv = new_keys(repo_id, "right", &made);
    CbfsStore *inner = cbfs_store_mem_new(), *writer = cbfs_store_crypt_new(inner, made);
    CbfsStore *below = cbfs_store_mem_new(), *below2 = cbfs_store_mem_new(), *st, *st2;
    Ask a = {"right", 0}, wrong = {"wrong", 0};
    CbfsError err;
    uint8_t *buf = NULL;
    size_t len;
    uint64_t size = 0, total = 0;

    /* objects written with the keys of a new repository, copied as stored
     * under a store whose keys are still wrapped */
    cbfs_error_init(&err);
    cbfs_store_put(writer, seg, "0123456789", 10, &err);
    cbfs_store_put(writer, "config", "format = 1\n", 11, &err);
    copy_raw(inner, below, seg);
    copy_raw(inner, below, "config");
    copy_raw(inner, below2, seg);
    cbfs_crypt_from_config(kv, repo_id, "/test/repo", ask, &a, &c, &err);
    st = cbfs_store_crypt_new(below, c);

    is_int(cbfs_store_stat(st, seg, &size, &err), 0, "stat through a store whose key is wrapped");
    is_int(size, 10, "with the plaintext size");
    is_int(cbfs_store_list(st, "", count_cb, &total, &err), 0, "list");
    is_int(total, 21, "list reports plaintext sizes (10 + 11)");
    is_int(cbfs_store_get(st, "wal/00000001/000000010000000000000002", &buf, &len, &err), -ENOENT,
           "get of an absent object: -ENOENT");
    is_int(cbfs_store_get(st, "config", &buf, &len, &err), 0, "get config");
    free(buf);
    is_int(a.calls, 0, "none of that asked for the passphrase");
    ok(!cbfs_crypt_unlocked(c), "the key is still wrapped");
    buf = NULL;
    is_int(cbfs_store_get(st, seg, &buf, &len, &err), 0, "get of an encrypted object");
    ok(buf && len == 10 && memcmp(buf, "0123456789", 10) == 0, "opens it");
    free(buf);
    is_int(a.calls, 1, "having asked for the passphrase once");
    is_int(cbfs_store_put(st, "points/p", "x", 1, &err), 0, "put");
    is_int(a.calls, 1, "without asking again");
    is_str(err.msg, "", "no error message");

    cbfs_crypt_from_config(kv, repo_id, "/test/repo", ask, &wrong, &w, &err);
    st2 = cbfs_store_crypt_new(below2, w);
    is_int(cbfs_store_get(st2, seg, &buf, &len, &err), -EACCES, "a wrong passphrase: get fails");
    is_str(err.msg, "could not open repository \"/test/repo\": wrong passphrase",
           "with one line naming the repository");
    is_int(err.code, CBFS_EXIT_REPO, "CBFS_EXIT_REPO");
    cbfs_error_init(&err);
    is_int(cbfs_store_put(st2, "points/q", "x", 1, &err), -EACCES, "and put fails the same way");
    is_int(cbfs_store_stat(st2, "points/q", NULL, &err), -ENOENT, "writing nothing");

    cbfs_store_free(writer);
    cbfs_store_free(st);
    cbfs_store_free(st2);
    cbfs_crypt_free(made);
    cbfs_crypt_free(c);
    cbfs_crypt_free(w);
    cbfs_kv_free(kv);
}

/* Threads put and get through one store whose key is still wrapped. */
#define THREADS 6

typedef struct Worker {
    CbfsStore *st;
    int index, bad;
} Worker;

static void *work(void *arg)
{
    Worker *w = arg;
    for (int i = 0; i < 20; i++) {
        char key[64], val[64];
        uint8_t *buf = NULL;
        size_t len = 0;
        CbfsError err;
        cbfs_error_init(&err);
        snprintf(key, sizeof(key), "points/t%d-%d", w->index, i);
        snprintf(val, sizeof(val), "value %d of %d", i, w->index);
        if (cbfs_store_put(w->st, key, val, strlen(val), &err) != 0 ||
            cbfs_store_get(w->st, key, &buf, &len, &err) != 0 || len != strlen(val) ||
            memcmp(buf, val, len) != 0)
            w->bad++;
        free(buf);
    }
    return NULL;
}

static void test_threads(void)
{
    CbfsCrypt *made, *c = NULL;
    CbfsKv *kv = new_keys(repo_id, "t", &made);
    Ask a = {"t", 0};
    CbfsError err;
    CbfsStore *st;
    pthread_t th[THREADS];
    Worker w[THREADS];
    int bad = 0;

    cbfs_error_init(&err);
    cbfs_crypt_from_config(kv, repo_id, "/test/repo", ask, &a, &c, &err);
    st = cbfs_store_crypt_new(cbfs_store_mem_new(), c);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (Worker){st, i, 0};
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        bad += w[i].bad;
    }
    is_int(bad, 0, "%d threads put and get 20 objects each through a locked store", THREADS);
    is_int(a.calls, 1, "the passphrase was asked for once");
    cbfs_store_free(st);
    cbfs_crypt_free(c);
    cbfs_crypt_free(made);
    cbfs_kv_free(kv);
}

int main(void)
{
    test_layout();
    test_refused();
    test_lazy();
    test_threads();
    return done_testing();
}
