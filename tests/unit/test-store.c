/*
 * test-store.c - unit tests for the object store contract (store.h), run
 * against every driver that needs no network: the in-memory store and the
 * posix store on a mkdtemp() directory.
 *
 * The contract: keys are checked; put creates once (-EEXIST, the existing
 * object untouched); get/get_range/stat/remove return -ENOENT without an
 * error message for an absent object; list reports every key under a
 * prefix, never a driver's temp file.  Posix only: concurrent puts of one
 * key are decided atomically, leftover temp files are invisible.  replace()
 * (the config object's exception) is atomic and whole.  The encrypting store
 * (store_crypt.c) over memory and posix keeps the same contract.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbfs/crypt.h"
#include "cbfs/kv.h"
#include "cbfs/store.h"
#include "cbfs/util.h"
#include "tap.h"
#include "testkeys.h"

static char tmpdir[] = "/tmp/cbfs-test-store.XXXXXX";

/* ---- listing helpers ---- */

typedef struct Listing {
    CbfsBuf keys; /* "key:size," sorted by sort_listing */
    char *items[64];
    size_t n;
    int stop_at; /* return 42 at this call (1-based), 0 for never */
    CbfsStore *st;
    int stat_ok; /* every listed key could be stat'ed from the callback */
} Listing;

static int list_cb(const char *key, uint64_t size, void *ctx)
{
    Listing *l = ctx;
    uint64_t sz = 0;

    if (l->n < CBFS_ARRAY_LEN(l->items))
        l->items[l->n] = cbfs_xasprintf("%s:%llu", key, (unsigned long long) size);
    l->n++;
    if (l->st && (cbfs_store_stat(l->st, key, &sz, NULL) != 0 || sz != size))
        l->stat_ok = 0;
    return l->stop_at && (int) l->n == l->stop_at ? 42 : 0;
}

/* List prefix; returns "k1:s1,k2:s2," sorted by key (caller frees). */
static char *list_keys(CbfsStore *st, const char *prefix, int *ret_rc)
{
    Listing l;
    CbfsBuf b;
    CbfsError err;
    size_t n;
    int rc;

    memset(&l, 0, sizeof(l));
    l.st = st;
    l.stat_ok = 1;
    cbfs_error_init(&err);
    rc = cbfs_store_list(st, prefix, list_cb, &l, &err);
    if (ret_rc)
        *ret_rc = rc;
    n = l.n < CBFS_ARRAY_LEN(l.items) ? l.n : CBFS_ARRAY_LEN(l.items);
    qsort(l.items, n, sizeof(char *), cbfs_cmp_strp);
    cbfs_buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        cbfs_buf_printf(&b, "%s,", l.items[i]);
        free(l.items[i]);
    }
    if (!l.stat_ok)
        cbfs_buf_printf(&b, "(stat from the callback failed)");
    return b.data;
}

static void check_list(CbfsStore *st, const char *drv, const char *prefix, const char *want)
{
    int rc = -1;
    char *got = list_keys(st, prefix, &rc);

    is_int(rc, 0, "%s: list \"%s\" succeeds", drv, prefix);
    is_str(got, want, "%s: list \"%s\"", drv, prefix);
    free(got);
}

/* ---- the contract, for any driver ---- */

static void check_absent(CbfsStore *st, const char *drv, const char *key)
{
    CbfsError err;
    uint8_t *buf = NULL, small[8];
    size_t len = 0, n = 0;
    uint64_t size = 0;

    cbfs_error_init(&err);
    is_int(cbfs_store_get(st, key, &buf, &len, &err), -ENOENT, "%s: get \"%s\" is -ENOENT", drv,
           key);
    is_int(cbfs_store_get_range(st, key, 0, sizeof(small), small, &n, &err), -ENOENT,
           "%s: get_range \"%s\" is -ENOENT", drv, key);
    is_int(cbfs_store_stat(st, key, &size, &err), -ENOENT, "%s: stat \"%s\" is -ENOENT", drv, key);
    is_int(cbfs_store_remove(st, key, &err), -ENOENT, "%s: remove \"%s\" is -ENOENT", drv, key);
    ok(err.code == 0 && err.msg[0] == '\0', "%s: \"%s\" absent: no error set (\"%s\")", drv, key,
       err.msg);
}

static void test_contract(CbfsStore *st, const char *drv)
{
    static const char *const keys[] = {"a/b/c", "a/b/d/e", "a/bc", "a/x", "ab", "b/a", "top"};
    CbfsError err;
    uint8_t *buf = NULL, *big;
    size_t len = 0, n = 0;
    uint64_t size = 0;
    char range[16];
    const size_t big_len = (3u << 20) + 17;

    cbfs_error_init(&err);

    /* put and read back */
    is_int(cbfs_store_put(st, "obj/one", "hello world", 11, &err), 0, "%s: put", drv);
    is_int(cbfs_store_get(st, "obj/one", &buf, &len, &err), 0, "%s: get", drv);
    is_int(len, 11, "%s: get length", drv);
    ok(buf && memcmp(buf, "hello world", 11) == 0, "%s: get content", drv);
    ok(buf && buf[11] == '\0', "%s: get NUL-terminates", drv);
    free(buf);
    buf = NULL;
    is_int(cbfs_store_stat(st, "obj/one", &size, &err), 0, "%s: stat", drv);
    is_int(size, 11, "%s: stat size", drv);
    is_int(cbfs_store_stat(st, "obj/one", NULL, &err), 0, "%s: stat without a size", drv);

    /* create once */
    is_int(cbfs_store_put(st, "obj/one", "HELLO", 5, &err), -EEXIST, "%s: second put is -EEXIST",
           drv);
    ok(err.code == 0 && err.msg[0] == '\0', "%s: -EEXIST sets no error", drv);
    is_int(cbfs_store_get(st, "obj/one", &buf, &len, &err), 0, "%s: get after -EEXIST", drv);
    ok(len == 11 && buf && memcmp(buf, "hello world", 11) == 0,
       "%s: the existing object is untouched", drv);
    free(buf);
    buf = NULL;

    /* get_range */
    memset(range, '#', sizeof(range));
    is_int(cbfs_store_get_range(st, "obj/one", 0, 5, range, &n, &err), 0, "%s: get_range head",
           drv);
    ok(n == 5 && memcmp(range, "hello#", 6) == 0, "%s: get_range reads exactly 5 bytes", drv);
    memset(range, '#', sizeof(range));
    is_int(cbfs_store_get_range(st, "obj/one", 6, 3, range, &n, &err), 0, "%s: get_range middle",
           drv);
    ok(n == 3 && memcmp(range, "wor#", 4) == 0, "%s: get_range middle content", drv);
    memset(range, '#', sizeof(range));
    is_int(cbfs_store_get_range(st, "obj/one", 8, 10, range, &n, &err), 0,
           "%s: get_range past the end", drv);
    ok(n == 3 && memcmp(range, "rld#", 4) == 0, "%s: short read at the end (%zu bytes)", drv, n);
    n = 99;
    is_int(cbfs_store_get_range(st, "obj/one", 11, 4, range, &n, &err), 0,
           "%s: get_range at the end", drv);
    is_int(n, 0, "%s: nothing read at the end", drv);
    n = 99;
    is_int(cbfs_store_get_range(st, "obj/one", 1000, 4, range, &n, &err), 0,
           "%s: get_range beyond the end", drv);
    is_int(n, 0, "%s: nothing read beyond the end", drv);

    /* empty and binary objects */
    is_int(cbfs_store_put(st, "obj/empty", "", 0, &err), 0, "%s: put an empty object", drv);
    is_int(cbfs_store_get(st, "obj/empty", &buf, &len, &err), 0, "%s: get an empty object", drv);
    ok(len == 0 && buf && buf[0] == '\0', "%s: empty object is empty", drv);
    free(buf);
    buf = NULL;
    is_int(cbfs_store_stat(st, "obj/empty", &size, &err), 0, "%s: stat an empty object", drv);
    is_int(size, 0, "%s: empty object has size 0", drv);

    big = malloc(big_len);
    cbfs_random_bytes(big, big_len);
    big[0] = 0;
    big[big_len / 2] = 0;
    is_int(cbfs_store_put(st, "obj/big", big, big_len, &err), 0, "%s: put 3 MiB of binary", drv);
    is_int(cbfs_store_get(st, "obj/big", &buf, &len, &err), 0, "%s: get it", drv);
    ok(len == big_len && buf && memcmp(buf, big, big_len) == 0, "%s: binary content intact", drv);
    free(buf);
    buf = NULL;
    {
        uint8_t part[4096];
        is_int(cbfs_store_get_range(st, "obj/big", big_len - 100, sizeof(part), part, &n, &err), 0,
               "%s: get_range at the end of a big object", drv);
        ok(n == 100 && memcmp(part, big + big_len - 100, 100) == 0,
           "%s: last 100 bytes of a big object", drv);
        is_int(cbfs_store_get_range(st, "obj/big", 1u << 20, sizeof(part), part, &n, &err), 0,
               "%s: get_range at 1 MiB", drv);
        ok(n == sizeof(part) && memcmp(part, big + (1u << 20), sizeof(part)) == 0,
           "%s: 4 KiB at 1 MiB", drv);
    }
    free(big);

    /* absent objects */
    check_absent(st, drv, "obj/none");
    check_absent(st, drv, "nowhere/at/all");
    check_absent(st, drv, "obj/on");

    /* a folder (a prefix of keys) is not an object */
    check_absent(st, drv, "obj");

    /* invalid keys are refused by put, with a message naming them */
    {
        static const char *const bad[] = {"", "/abs", "a/../b", ".hidden", "a/.tmp", "a//b", "a/"};
        for (size_t i = 0; i < CBFS_ARRAY_LEN(bad); i++) {
            cbfs_error_init(&err);
            is_int(cbfs_store_put(st, bad[i], "x", 1, &err), -EINVAL, "%s: put \"%s\" is -EINVAL",
                   drv, bad[i]);
            ok(strstr(err.msg, "invalid object name") != NULL, "%s: put \"%s\": message \"%s\"",
               drv, bad[i], err.msg);
        }
        cbfs_error_init(&err);
    }

    /* list */
    for (size_t i = 0; i < CBFS_ARRAY_LEN(keys); i++) {
        char *data = cbfs_xasprintf("data of %s", keys[i]);
        is_int(cbfs_store_put(st, keys[i], data, i + 1, &err), 0, "%s: put \"%s\"", drv, keys[i]);
        free(data);
    }
    is_int(cbfs_store_remove(st, "obj/big", &err), 0, "%s: remove", drv);
    check_absent(st, drv, "obj/big");
    is_int(cbfs_store_remove(st, "obj/big", &err), -ENOENT, "%s: remove again is -ENOENT", drv);
    check_list(st, drv, "",
               "a/b/c:1,a/b/d/e:2,a/bc:3,a/x:4,ab:5,b/a:6,obj/empty:0,obj/one:11,top:7,");
    check_list(st, drv, "a/", "a/b/c:1,a/b/d/e:2,a/bc:3,a/x:4,");
    check_list(st, drv, "a/b", "a/b/c:1,a/b/d/e:2,a/bc:3,");
    check_list(st, drv, "a/b/", "a/b/c:1,a/b/d/e:2,");
    check_list(st, drv, "a/b/d/", "a/b/d/e:2,");
    check_list(st, drv, "a", "a/b/c:1,a/b/d/e:2,a/bc:3,a/x:4,ab:5,");
    check_list(st, drv, "a/b/c", "a/b/c:1,");
    check_list(st, drv, "t", "top:7,");
    check_list(st, drv, "top", "top:7,");
    check_list(st, drv, "zzz/", "");
    check_list(st, drv, "a/zzz/", "");
    check_list(st, drv, "a/xy", "");
    {
        Listing l;
        memset(&l, 0, sizeof(l));
        l.stop_at = 2;
        is_int(cbfs_store_list(st, "", list_cb, &l, &err), 42,
               "%s: a callback's non-zero return is list's return", drv);
        is_int(l.n, 2, "%s: and stops the listing", drv);
        for (size_t i = 0; i < l.n && i < CBFS_ARRAY_LEN(l.items); i++)
            free(l.items[i]);
    }
    is_int(cbfs_store_remove(st, "a/b/d/e", &err), 0, "%s: remove a nested key", drv);
    check_list(st, drv, "a/b", "a/b/c:1,a/bc:3,");
    is_str(err.msg, "", "%s: no error message in the whole run", drv);
}

/* ---- replace: the config object's one exception to create-once ---- */

static void test_replace(CbfsStore *st, const char *drv)
{
    CbfsError err;
    uint8_t *buf = NULL;
    size_t len = 0;
    uint64_t size = 0;

    cbfs_error_init(&err);
    is_int(cbfs_store_put(st, "config", "first", 5, &err), 0, "%s: put config", drv);
    is_int(cbfs_store_replace(st, "config", "the second version", 18, &err), 0,
           "%s: replace config", drv);
    is_int(cbfs_store_get(st, "config", &buf, &len, &err), 0, "%s: get it", drv);
    ok(len == 18 && buf && memcmp(buf, "the second version", 18) == 0 && buf[18] == '\0',
       "%s: the new content, whole", drv);
    free(buf);
    is_int(cbfs_store_stat(st, "config", &size, &err), 0, "%s: stat it", drv);
    is_int(size, 18, "%s: the new size", drv);
    is_int(cbfs_store_replace(st, "config", "x", 1, &err), 0, "%s: replace with a shorter one",
           drv);
    buf = NULL;
    cbfs_store_get(st, "config", &buf, &len, &err);
    ok(len == 1 && buf && buf[0] == 'x', "%s: nothing of the longer one is left", drv);
    free(buf);
    is_int(cbfs_store_replace(st, "fresh/object", "new", 3, &err), 0,
           "%s: replace creates an absent object", drv);
    is_int(cbfs_store_stat(st, "fresh/object", &size, &err), 0, "%s: it is there", drv);
    is_int(cbfs_store_put(st, "fresh/object", "again", 5, &err), -EEXIST,
           "%s: put is still create-once after a replace", drv);
    is_str(err.msg, "", "%s: no error message", drv);
    is_int(cbfs_store_replace(st, "../config", "x", 1, &err), -EINVAL, "%s: replace checks the key",
           drv);
    cbfs_store_remove(st, "config", NULL);
    cbfs_store_remove(st, "fresh/object", NULL);
}

/* ---- key rules ---- */

static void test_key_valid(void)
{
    static const char *const good[] = {
        "config",
        "cluster",
        "a/b",
        "packs/0a/0a1b2c3d4e5f60718293a4b5c6d7e8f9.pack",
        "backups/full-1.0a1b2c3d.db",
        "wal/00000001/000000010000000000000001",
        "A-Z_a-z.0-9",
        "a/b.c/d",
        "x.",
    };
    static const char *const bad[] = {
        "",  "/a",  "a/../b", "..",   "../a", ".x",  "a/.x",        "a/./b", "a//b", "a/",
        "/", "a b", "a\\b",   "a\nb", "a:b",  "a*b", "caf\xc3\xa9", ".",     "a/.",  "~a/b",
    };

    for (size_t i = 0; i < CBFS_ARRAY_LEN(good); i++)
        ok(cbfs_store_key_valid(good[i]), "key \"%s\" is valid", good[i]);
    for (size_t i = 0; i < CBFS_ARRAY_LEN(bad); i++)
        ok(!cbfs_store_key_valid(bad[i]), "key \"%s\" is not valid", show(bad[i]));
}

/* ---- posix only ---- */

#define RACERS 8
#define ROUNDS 25

typedef struct Racer {
    CbfsStore *st;
    pthread_barrier_t *barrier;
    const char *key;
    int index;
    int rc;
    CbfsError err;
} Racer;

static void *race(void *arg)
{
    Racer *r = arg;
    char data[64];
    size_t len = (size_t) snprintf(data, sizeof(data), "written by racer %d", r->index);

    cbfs_error_init(&r->err);
    pthread_barrier_wait(r->barrier);
    r->rc = cbfs_store_put(r->st, r->key, data, len, &r->err);
    return NULL;
}

/* Entries of a directory whose name starts with '.' (temp files). */
static int count_dot_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    if (!d)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] == '.' && strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void test_posix_race(CbfsStore *st, const char *root)
{
    int bad_rounds = 0, content_bad = 0, errors = 0;
    char *dir;

    for (int round = 0; round < ROUNDS; round++) {
        pthread_t th[RACERS];
        Racer racers[RACERS];
        pthread_barrier_t barrier;
        char key[64], want[64];
        int winners = 0, losers = 0, winner = -1;
        uint8_t *buf = NULL;
        size_t len = 0;

        snprintf(key, sizeof(key), "race/seg%02d", round);
        pthread_barrier_init(&barrier, NULL, RACERS);
        for (int i = 0; i < RACERS; i++) {
            racers[i] = (Racer){st, &barrier, key, i, 0, {0, ""}};
            pthread_create(&th[i], NULL, race, &racers[i]);
        }
        for (int i = 0; i < RACERS; i++) {
            pthread_join(th[i], NULL);
            if (racers[i].rc == 0) {
                winners++;
                winner = i;
            } else if (racers[i].rc == -EEXIST && racers[i].err.code == 0) {
                losers++;
            } else {
                errors++;
                printf("# racer %d: %d %s\n", i, racers[i].rc, racers[i].err.msg);
            }
        }
        pthread_barrier_destroy(&barrier);
        if (winners != 1 || losers != RACERS - 1)
            bad_rounds++;
        snprintf(want, sizeof(want), "written by racer %d", winner);
        if (cbfs_store_get(st, key, &buf, &len, NULL) != 0 || len != strlen(want) ||
            memcmp(buf, want, len) != 0)
            content_bad++;
        free(buf);
    }
    is_int(bad_rounds, 0, "posix: %d rounds of %d concurrent puts: exactly one wins each", ROUNDS,
           RACERS);
    is_int(errors, 0, "posix: the losers get -EEXIST and no error");
    is_int(content_bad, 0, "posix: the stored object is the winner's, whole");
    dir = cbfs_xasprintf("%s/race", root);
    is_int(count_dot_files(dir), 0, "posix: no temp file left behind by the race");
    free(dir);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_posix_layout(CbfsStore *st, const char *root)
{
    char *path, *dir;
    uint8_t *buf = NULL;
    size_t len = 0;
    CbfsError err;

    cbfs_error_init(&err);
    is_int(cbfs_store_put(st, "lay/out/obj", "layout", 6, &err), 0, "posix: put lay/out/obj");
    path = cbfs_xasprintf("%s/lay/out/obj", root);
    is_int(cbfs_read_file(path, &buf, &len, &err), 0, "posix: object KEY is the file ROOT/KEY");
    ok(len == 6 && buf && memcmp(buf, "layout", 6) == 0, "posix: with the object's content");
    free(buf);
    dir = cbfs_xasprintf("%s/lay/out", root);
    is_int(count_dot_files(dir), 0, "posix: put leaves no temp file");
    is_int(cbfs_store_put(st, "lay/out/obj", "other", 5, &err), -EEXIST, "posix: put again");
    is_int(count_dot_files(dir), 0, "posix: a refused put leaves no temp file");

    /* a killed writer's leftovers: temp files and dot folders are never listed */
    free(path);
    path = cbfs_xasprintf("%s/.tmp.obj2.1234.0123456789abcdef", dir);
    write_file(path, "partial");
    free(path);
    path = cbfs_xasprintf("%s/.tmp.top.99.ffff", root);
    write_file(path, "partial");
    free(path);
    path = cbfs_xasprintf("%s/lay/.hidden", root);
    mkdir(path, 0700);
    free(path);
    path = cbfs_xasprintf("%s/lay/.hidden/obj", root);
    write_file(path, "hidden");
    free(path);
    check_list(st, "posix", "lay/", "lay/out/obj:6,");
    check_list(st, "posix", "lay/out/", "lay/out/obj:6,");
    check_list(st, "posix", "lay/out/.", "");
    {
        int rc = -1;
        char *all = list_keys(st, "", &rc);
        ok(rc == 0 && strstr(all, ".tmp") == NULL && strstr(all, ".hidden") == NULL,
           "posix: a full listing shows no temp file: \"%s\"", all);
        free(all);
    }
    /* a temp file is not reachable as an object */
    cbfs_error_init(&err);
    is_int(cbfs_store_stat(st, "lay/out/.tmp.obj2.1234.0123456789abcdef", NULL, &err), -EINVAL,
           "posix: a temp file name is an invalid key");
    free(dir);
}

static void test_posix_open(const char *root)
{
    CbfsStore *st = NULL;
    CbfsError err;
    char *missing = cbfs_xasprintf("%s/missing/deeper", root);
    char *file = cbfs_xasprintf("%s/afile", root);
    struct stat sb;

    cbfs_error_init(&err);
    ok(cbfs_store_posix_new(missing, "somewhere", false, &st, &err) < 0,
       "posix: a missing root is refused without create");
    is_int(err.code, CBFS_EXIT_REPO, "posix: missing root: CBFS_EXIT_REPO");
    is_str(err.msg, "could not open repository \"somewhere\": No such file or directory",
           "posix: missing root: message");
    write_file(file, "x");
    cbfs_error_init(&err);
    ok(cbfs_store_posix_new(file, "a-file", true, &st, &err) < 0, "posix: a file is refused");
    is_int(err.code, CBFS_EXIT_REPO, "posix: file root: CBFS_EXIT_REPO");
    ok(strstr(err.msg, "could not open repository \"a-file\": ") == err.msg,
       "posix: file root: message \"%s\"", err.msg);
    cbfs_error_init(&err);
    is_int(cbfs_store_posix_new(missing, "somewhere", true, &st, &err), 0,
           "posix: create makes the root and its parents");
    ok(stat(missing, &sb) == 0 && S_ISDIR(sb.st_mode), "posix: the root exists");
    is_str(st ? st->display : NULL, "somewhere", "posix: display is kept for messages");
    cbfs_store_free(st);
    cbfs_store_free(NULL);
    free(missing);
    free(file);
}

int main(void)
{
    CbfsStore *st;
    CbfsCrypt *crypt;
    CbfsError err;
    char *root;

    test_key_valid();
    crypt = test_crypt();

    st = cbfs_store_mem_new();
    test_contract(st, "memory");
    test_replace(st, "memory");
    cbfs_store_free(st);
    /* the encrypting store keeps the same contract */
    st = cbfs_store_crypt_new(cbfs_store_mem_new(), crypt);
    test_contract(st, "encrypted memory");
    test_replace(st, "encrypted memory");
    cbfs_store_free(st);

    if (!mkdtemp(tmpdir)) {
        printf("Bail out! could not create a temp directory\n");
        return 1;
    }
    root = cbfs_xasprintf("%s/repo", tmpdir);
    cbfs_error_init(&err);
    if (cbfs_store_posix_new(root, root, true, &st, &err) == 0) {
        test_contract(st, "posix");
        test_replace(st, "posix");
        is_int(count_dot_files(root), 0, "posix: replace leaves no temp file");
        test_posix_race(st, root);
        test_posix_layout(st, root);
        cbfs_store_free(st);
    } else {
        ok(0, "posix store on \"%s\": %s", root, err.msg);
    }
    free(root);
    root = cbfs_xasprintf("%s/encrypted", tmpdir);
    if (cbfs_store_posix_new(root, root, true, &st, &err) == 0) {
        st = cbfs_store_crypt_new(st, crypt);
        test_contract(st, "encrypted posix");
        test_replace(st, "encrypted posix");
        cbfs_store_free(st);
    } else {
        ok(0, "posix store on \"%s\": %s", root, err.msg);
    }
    cbfs_crypt_free(crypt);
    test_posix_open(tmpdir);
    free(root);
    rm_rf(tmpdir);
    ok(access(tmpdir, F_OK) != 0, "temp directory removed");
    return done_testing();
}
