/*
 * test-s3-store.c - the S3 driver (lib/store_s3.c) against a real Swift
 * s3api server, through the store API (store.h), directly and through
 * tests/s3/faultproxy.py with faults on.
 *
 * What it checks, in each of both passes (direct, then faulty):
 *   put/get/get_range (a range inside, over the end, at the end, past the
 *   end), stat, empty objects, absent objects (-ENOENT, no message),
 *   remove, 300 reads at varying offsets; create-once with stock Swift
 *   (501 to If-None-Match: the driver does HEAD, PUT, HEAD) and with the
 *   server's If-None-Match mode (412): a put of an existing key is -EEXIST
 *   and leaves the object untouched; a multipart upload (part size 5 MiB,
 *   12 MiB put) read back whole and ranged; a listing of 1100 keys (over
 *   ListObjectsV2 pages of 1000), each key exactly once, and no key of a
 *   sibling prefix ("wal/" and "wal2/", repositories "P-sib", "P-sib2").
 * Directly only: virtual-hosted style requests (bucket.localhost), a
 * missing bucket and a wrong secret, with their exact messages (one line,
 * no secret in them).  With faults: every operation succeeds with the same
 * data, and the proxy's final stats show every kind of fault it injects.
 *
 * Run by tests/s3/run-s3-store.sh, which starts the server and passes
 * S3_ENDPOINT, S3_BUCKET (an existing, empty bucket), S3_STATE_DIR,
 * S3_IF_NONE_MATCH_FLAG, the AWS_* credentials and CBFS_SRCDIR.
 * S3_TEST_SEED seeds the proxy (default a fixed one).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cbfs/store.h"
#include "cbfs/util.h"
#include "tap.h"

#define NKEYS     1100 /* more than one ListObjectsV2 page (1000) */
#define PART_SIZE (5u << 20)
#define BIG_LEN   ((12u << 20) + 12345) /* three parts */
#define THREADS   4

static const char *bucket, *endpoint, *state_dir, *inm_flag, *srcdir;

static const char *need_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        printf("Bail out! %s is not set (run through tests/s3/run-s3-store.sh)\n", name);
        exit(1);
    }
    return v;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* len bytes that depend on seed (xorshift). Caller frees. */
static uint8_t *pattern(size_t len, uint32_t seed)
{
    uint8_t *b = cbfs_xmalloc(len ? len : 1);
    uint64_t x = 0x9e3779b97f4a7c15ull ^ ((uint64_t) seed << 17 | seed);
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (uint8_t) x;
    }
    return b;
}

/* The S3 store of s3://BUCKET/prefix, with the current environment. */
static CbfsStore *open_s3(const char *bucket_name, const char *prefix)
{
    char *spec = cbfs_xasprintf("s3://%s/%s", bucket_name, prefix);
    CbfsLocation loc;
    CbfsError err;
    CbfsStore *st = NULL;

    cbfs_error_init(&err);
    if (cbfs_location_parse(spec, false, &loc, &err) < 0 ||
        cbfs_store_open(&loc, false, &st, &err) < 0) {
        printf("Bail out! could not open %s: %s\n", spec, err.msg);
        exit(1);
    }
    cbfs_location_release(&loc);
    free(spec);
    return st;
}

static void if_none_match_mode(bool on)
{
    if (on) {
        FILE *f = fopen(inm_flag, "w");
        if (!f || fclose(f) != 0) {
            printf("Bail out! could not create %s\n", inm_flag);
            exit(1);
        }
    } else if (unlink(inm_flag) < 0 && errno != ENOENT) {
        printf("Bail out! could not remove %s\n", inm_flag);
        exit(1);
    }
}

static bool no_error(const CbfsError *err)
{
    return err->code == 0 && err->msg[0] == '\0';
}

/* How many lines of the Swift proxy's access log hold needle; waits up to
 * 3 s for at least want of them (a line is written after the answer). */
static int log_count(const char *needle, int want)
{
    char *path = cbfs_xasprintf("%s/log/proxy-server.log", state_dir);
    int n = 0;
    for (int tries = 0; tries < 30; tries++) {
        FILE *f = fopen(path, "r");
        char line[4096];
        n = 0;
        while (f && fgets(line, sizeof(line), f))
            if (strstr(line, needle))
                n++;
        if (f)
            fclose(f);
        if (n >= want)
            break;
        sleep_ms(100);
    }
    free(path);
    return n;
}

/* ---- put, get, ranges, stat, remove ---------------------------------------- */

static void test_objects(const char *pass, CbfsStore *st)
{
    const size_t len = 100007;
    uint8_t *data = pattern(len, 1), *buf = NULL, part[8192];
    size_t n = 0, got_len = 0;
    uint64_t size = 0;
    CbfsError err;

    cbfs_error_init(&err);
    is_int(cbfs_store_put(st, "obj/a", data, len, &err), 0, "%s: put 100 KB", pass);
    ok(no_error(&err), "%s: no error set (\"%s\")", pass, err.msg);
    is_int(cbfs_store_get(st, "obj/a", &buf, &got_len, &err), 0, "%s: get", pass);
    ok(got_len == len && buf && memcmp(buf, data, len) == 0 && buf[len] == '\0',
       "%s: get returns the same bytes, NUL-terminated", pass);
    free(buf);
    is_int(cbfs_store_stat(st, "obj/a", &size, &err), 0, "%s: stat", pass);
    is_int(size, len, "%s: stat size", pass);

    is_int(cbfs_store_get_range(st, "obj/a", 1000, 5000, part, &n, &err), 0, "%s: get_range", pass);
    ok(n == 5000 && memcmp(part, data + 1000, 5000) == 0, "%s: get_range 5000 bytes at 1000", pass);
    is_int(cbfs_store_get_range(st, "obj/a", len - 100, sizeof(part), part, &n, &err), 0,
           "%s: get_range over the end", pass);
    ok(n == 100 && memcmp(part, data + len - 100, 100) == 0,
       "%s: get_range over the end reads the last 100 bytes (%zu)", pass, n);
    n = 99;
    is_int(cbfs_store_get_range(st, "obj/a", len, 10, part, &n, &err), 0,
           "%s: get_range at the end", pass);
    is_int(n, 0, "%s: nothing read at the end", pass);
    n = 99;
    is_int(cbfs_store_get_range(st, "obj/a", len + 5000, 10, part, &n, &err), 0,
           "%s: get_range past the end", pass);
    is_int(n, 0, "%s: nothing read past the end", pass);
    ok(no_error(&err), "%s: no error set by the reads (\"%s\")", pass, err.msg);

    is_int(cbfs_store_put(st, "obj/empty", "", 0, &err), 0, "%s: put an empty object", pass);
    buf = NULL;
    got_len = 99;
    is_int(cbfs_store_get(st, "obj/empty", &buf, &got_len, &err), 0, "%s: get the empty object",
           pass);
    ok(got_len == 0 && buf && buf[0] == '\0', "%s: it is empty", pass);
    free(buf);
    size = 99;
    is_int(cbfs_store_stat(st, "obj/empty", &size, &err), 0, "%s: stat the empty object", pass);
    is_int(size, 0, "%s: its size is 0", pass);
    n = 99;
    is_int(cbfs_store_get_range(st, "obj/empty", 0, 10, part, &n, &err), 0,
           "%s: get_range of the empty object", pass);
    is_int(n, 0, "%s: reads nothing", pass);

    is_int(cbfs_store_get(st, "obj/absent", &buf, &got_len, &err), -ENOENT,
           "%s: get of an absent object is -ENOENT", pass);
    is_int(cbfs_store_get_range(st, "obj/absent", 0, 10, part, &n, &err), -ENOENT,
           "%s: get_range of an absent object is -ENOENT", pass);
    is_int(cbfs_store_stat(st, "obj/absent", &size, &err), -ENOENT,
           "%s: stat of an absent object is -ENOENT", pass);
    ok(no_error(&err), "%s: absent: no error set (\"%s\")", pass, err.msg);

    is_int(cbfs_store_put(st, "obj/gone", data, 1000, &err), 0, "%s: put obj/gone", pass);
    is_int(cbfs_store_remove(st, "obj/gone", &err), 0, "%s: remove it", pass);
    is_int(cbfs_store_get(st, "obj/gone", &buf, &got_len, &err), -ENOENT,
           "%s: get after remove is -ENOENT", pass);
    is_int(cbfs_store_stat(st, "obj/gone", &size, &err), -ENOENT,
           "%s: stat after remove is -ENOENT", pass);
    is_int(cbfs_store_remove(st, "obj/gone", &err), -ENOENT, "%s: remove again is -ENOENT", pass);
    ok(no_error(&err), "%s: remove: no error set (\"%s\")", pass, err.msg);
    is_int(cbfs_store_get_range(st, "obj/a", 0, 10, part, &n, &err), 0,
           "%s: the other objects are still there", pass);
    free(data);
}

/* replace: the one overwrite (the config object, cbfs key change), a plain
 * PUT that leaves the new object whole. */
static void test_replace(const char *pass, CbfsStore *st)
{
    uint8_t *buf = NULL;
    size_t got_len = 0;
    uint64_t size = 0;
    CbfsError err;

    cbfs_error_init(&err);
    is_int(cbfs_store_put(st, "rp/config", "format = 1\nfirst = yes\n", 23, &err), 0,
           "%s: put rp/config", pass);
    is_int(cbfs_store_replace(st, "rp/config", "format = 1\n", 11, &err), 0,
           "%s: replace it with a shorter one", pass);
    is_int(cbfs_store_get(st, "rp/config", &buf, &got_len, &err), 0, "%s: get it", pass);
    ok(got_len == 11 && buf && memcmp(buf, "format = 1\n", 11) == 0, "%s: the new content, whole",
       pass);
    free(buf);
    is_int(cbfs_store_stat(st, "rp/config", &size, &err), 0, "%s: stat it", pass);
    is_int(size, 11, "%s: the new size", pass);
    is_int(cbfs_store_replace(st, "rp/new", "x", 1, &err), 0,
           "%s: replace of an absent object creates it", pass);
    is_int(cbfs_store_put(st, "rp/new", "y", 1, &err), -EEXIST,
           "%s: put is still create-once after it", pass);
    ok(no_error(&err), "%s: replace: no error set (\"%s\")", pass, err.msg);
}

/* Many reads of obj/a (as test_objects left it): ranges at varying offsets
 * and whole gets, each compared with the data (under faults: answers cut
 * in the middle of the body, retried). */
static void test_reads(const char *pass, CbfsStore *st)
{
    const size_t len = 100007;
    uint8_t *data = pattern(len, 1), *part = cbfs_xmalloc(len), *buf;
    uint32_t x = 12345;
    int bad = 0, failed = 0;
    CbfsError err;

    cbfs_error_init(&err);
    for (int i = 0; i < 300; i++) {
        size_t off, n = 0, want, got_len = 0;
        x = x * 1103515245u + 12345u;
        off = (x >> 8) % len;
        want = 1 + (x >> 4) % 20000;
        if (i % 10 == 9) {
            buf = NULL;
            if (cbfs_store_get(st, "obj/a", &buf, &got_len, &err) < 0)
                failed++;
            else if (got_len != len || memcmp(buf, data, len) != 0)
                bad++;
            free(buf);
            continue;
        }
        if (cbfs_store_get_range(st, "obj/a", off, want, part, &n, &err) < 0)
            failed++;
        else if (n != (off + want <= len ? want : len - off) || memcmp(part, data + off, n) != 0)
            bad++;
    }
    is_int(failed, 0, "%s: 270 ranged reads and 30 whole reads succeed (%s)", pass, err.msg);
    is_int(bad, 0, "%s: and return the right bytes", pass);
    free(part);
    free(data);
}

/* ---- create-once ------------------------------------------------------------ */

/* With inm the server honours If-None-Match: * (412), else it answers 501
 * (stock Swift).  exact: no fault proxy, so the server's log has exactly
 * one line per request. */
static void test_create_once(const char *pass, const char *prefix, bool inm, bool exact)
{
    const char *mode = inm ? "If-None-Match" : "stock";
    const size_t len = 4000;
    uint8_t *v1 = pattern(len, 11), *v2 = pattern(len, 12), *buf = NULL;
    size_t got_len = 0;
    CbfsError err;
    CbfsStore *st;
    char *line412, *line501, *key = cbfs_xasprintf("co/%s", inm ? "inm" : "stock");

    cbfs_error_init(&err);
    if_none_match_mode(inm);
    st = open_s3(bucket, prefix);
    /* the access log names the S3 path and the status */
    line412 = cbfs_xasprintf(" PUT /%s/%s/%s HTTP/1.0 412 ", bucket, prefix, key);
    line501 = cbfs_xasprintf(" PUT /%s/%s/%s HTTP/1.0 501 ", bucket, prefix, key);

    is_int(cbfs_store_put(st, key, v1, len, &err), 0, "%s, %s: put a new object", pass, mode);
    is_int(cbfs_store_put(st, key, v2, len, &err), -EEXIST,
           "%s, %s: a put of other data under its name is -EEXIST", pass, mode);
    ok(no_error(&err), "%s, %s: -EEXIST sets no error (\"%s\")", pass, mode, err.msg);
    is_int(cbfs_store_get(st, key, &buf, &got_len, &err), 0, "%s, %s: get it", pass, mode);
    ok(got_len == len && buf && memcmp(buf, v1, len) == 0,
       "%s, %s: the existing object is untouched", pass, mode);
    free(buf);
    /* The same data again: with If-None-Match the 412 is checked and the
     * object found to be ours (DESIGN §2 "S3": an attempt whose answer was
     * lost); stock Swift's HEAD-first write sees an existing object. */
    is_int(cbfs_store_put(st, key, v1, len, &err), inm ? 0 : -EEXIST,
           "%s, %s: a put of the same data is %s", pass, mode, inm ? "0 (ours)" : "-EEXIST");
    if (inm) {
        int n = log_count(line412, 2);
        if (exact)
            is_int(n, 2, "%s, %s: the server answered 412 to both puts of an existing key", pass,
                   mode);
        else
            ok(n >= 2, "%s, %s: the server answered 412 to the puts of an existing key (%d)", pass,
               mode, n);
    } else {
        /* the 501 is remembered: only the store's first put is conditional */
        int n = log_count(line501, 1);
        if (exact)
            is_int(n, 1, "%s, %s: one 501 to If-None-Match, then no more conditional puts", pass,
                   mode);
        else
            ok(n >= 1, "%s, %s: the server answered 501 to If-None-Match (%d)", pass, mode, n);
        is_int(log_count(line412, 0), 0, "%s, %s: never 412", pass, mode);
    }
    cbfs_store_free(st);
    if_none_match_mode(false);
    free(line412);
    free(line501);
    free(key);
    free(v1);
    free(v2);
}

/* ---- multipart -------------------------------------------------------------- */

static void test_multipart(const char *pass, const char *prefix)
{
    uint8_t *data = pattern(BIG_LEN, 7), *other = pattern(BIG_LEN, 8), *buf = NULL, part[6000];
    size_t got_len = 0, n = 0;
    uint64_t size = 0;
    CbfsError err;
    CbfsStore *st;
    char *uploads;
    int before;

    cbfs_error_init(&err);
    setenv("CBFS_S3_PART_SIZE", "5242880", 1);
    st = open_s3(bucket, prefix);
    unsetenv("CBFS_S3_PART_SIZE");
    /* the access log shows the query string encoded into the path */
    uploads =
        cbfs_xasprintf(" POST /%s/%s/big/object%%3Fuploads%%3D HTTP/1.0 200 ", bucket, prefix);
    before = log_count(uploads, 0);

    is_int(cbfs_store_put(st, "big/object", data, BIG_LEN, &err), 0,
           "%s: put 12 MiB with 5 MiB parts", pass);
    ok(no_error(&err), "%s: no error set (\"%s\")", pass, err.msg);
    ok(log_count(uploads, before + 1) > before, "%s: it went up as a multipart upload", pass);
    is_int(cbfs_store_stat(st, "big/object", &size, &err), 0, "%s: stat it", pass);
    is_int(size, BIG_LEN, "%s: its size", pass);
    is_int(cbfs_store_get(st, "big/object", &buf, &got_len, &err), 0, "%s: get it whole", pass);
    ok(got_len == BIG_LEN && buf && memcmp(buf, data, BIG_LEN) == 0, "%s: the same bytes come back",
       pass);
    free(buf);
    is_int(cbfs_store_get_range(st, "big/object", PART_SIZE - 3000, sizeof(part), part, &n, &err),
           0, "%s: get_range across the first part boundary", pass);
    ok(n == sizeof(part) && memcmp(part, data + PART_SIZE - 3000, sizeof(part)) == 0,
       "%s: the range across the boundary is right", pass);
    is_int(cbfs_store_get_range(st, "big/object", BIG_LEN - 2000, sizeof(part), part, &n, &err), 0,
           "%s: get_range over the end of the last part", pass);
    ok(n == 2000 && memcmp(part, data + BIG_LEN - 2000, 2000) == 0, "%s: the last 2000 bytes (%zu)",
       pass, n);
    is_int(cbfs_store_put(st, "big/object", other, BIG_LEN, &err), -EEXIST,
           "%s: a second big put under the name is -EEXIST", pass);
    ok(no_error(&err), "%s: no error set (\"%s\")", pass, err.msg);
    is_int(cbfs_store_get_range(st, "big/object", 2 * PART_SIZE, sizeof(part), part, &n, &err), 0,
           "%s: read the third part", pass);
    ok(n == sizeof(part) && memcmp(part, data + 2 * PART_SIZE, sizeof(part)) == 0,
       "%s: the big object is untouched", pass);
    cbfs_store_free(st);
    free(uploads);
    free(data);
    free(other);
}

/* ---- listing ---------------------------------------------------------------- */

typedef struct PutJob {
    CbfsStore *st;
    int first;
    int failed;
    char msg[CBFS_ERROR_MSG_MAX + 64];
} PutJob;

static size_t key_size(int i)
{
    return (size_t) (i % 50) + 1;
}

static void *put_keys(void *arg)
{
    PutJob *job = arg;
    for (int i = job->first; i < NKEYS; i += THREADS) {
        char key[32];
        uint8_t *data = pattern(key_size(i), (uint32_t) i);
        CbfsError err;
        int rc;
        cbfs_error_init(&err);
        snprintf(key, sizeof(key), "many/k%04d", i);
        rc = cbfs_store_put(job->st, key, data, key_size(i), &err);
        free(data);
        if (rc < 0) {
            job->failed++;
            snprintf(job->msg, sizeof(job->msg), "%s: %d %s", key, rc, err.msg);
        }
    }
    return NULL;
}

typedef struct Seen {
    int count[NKEYS];
    int bad_size, unknown, calls, stop_at;
    CbfsBuf keys; /* "key," of everything else */
} Seen;

static int seen_cb(const char *key, uint64_t size, void *ctx)
{
    Seen *s = ctx;
    int i;
    char end;
    s->calls++;
    if (sscanf(key, "many/k%4d%c", &i, &end) == 1 && i >= 0 && i < NKEYS &&
        strlen(key) == strlen("many/k0000")) {
        s->count[i]++;
        if (size != key_size(i))
            s->bad_size++;
    } else {
        s->unknown++;
        cbfs_buf_printf(&s->keys, "%s,", key);
    }
    return s->stop_at && s->calls == s->stop_at ? 42 : 0;
}

/* The keys under prefix, sorted, "k1,k2," (caller frees). */
static char *list_sorted(CbfsStore *st, const char *prefix, int *ret_rc)
{
    Seen *s = cbfs_xcalloc(1, sizeof(*s));
    CbfsError err;
    char *items[64], *p, *out;
    size_t n = 0;
    CbfsBuf b;

    cbfs_error_init(&err);
    cbfs_buf_init(&s->keys);
    *ret_rc = cbfs_store_list(st, prefix, seen_cb, s, &err);
    for (p = s->keys.data; *p && n < CBFS_ARRAY_LEN(items);) {
        char *e = strchr(p, ',');
        items[n++] = cbfs_xasprintf("%.*s", (int) (e - p), p);
        p = e + 1;
    }
    qsort(items, n, sizeof(char *), cbfs_cmp_strp);
    cbfs_buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        cbfs_buf_printf(&b, "%s,", items[i]);
        free(items[i]);
    }
    out = cbfs_xstrdup(b.data);
    cbfs_buf_release(&b);
    cbfs_buf_release(&s->keys);
    free(s);
    return out;
}

static void test_list(const char *pass, const char *prefix)
{
    char *sib = cbfs_xasprintf("%s-sib", prefix), *sib2 = cbfs_xasprintf("%s-sib2", prefix);
    CbfsStore *st, *st2, *st3;
    PutJob jobs[THREADS];
    pthread_t th[THREADS];
    int failed = 0, missing = 0, twice = 0, rc = 0;
    Seen *s = cbfs_xcalloc(1, sizeof(*s));
    CbfsError err;
    char *got;
    double t0;

    cbfs_error_init(&err);
    /* many small puts: one request each with If-None-Match */
    if_none_match_mode(true);
    st = open_s3(bucket, prefix);
    t0 = cbfs_now();
    for (int t = 0; t < THREADS; t++) {
        jobs[t] = (PutJob){.st = st, .first = t};
        pthread_create(&th[t], NULL, put_keys, &jobs[t]);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        failed += jobs[t].failed;
        if (jobs[t].failed)
            printf("# %s\n", jobs[t].msg);
    }
    is_int(failed, 0, "%s: put %d small objects (%.1f s)", pass, NKEYS, cbfs_now() - t0);

    cbfs_buf_init(&s->keys);
    is_int(cbfs_store_list(st, "many/", seen_cb, s, &err), 0, "%s: list \"many/\"", pass);
    for (int i = 0; i < NKEYS; i++) {
        missing += s->count[i] == 0;
        twice += s->count[i] > 1;
    }
    is_int(s->calls, NKEYS, "%s: %d keys listed", pass, NKEYS);
    is_int(missing, 0, "%s: none missing", pass);
    is_int(twice, 0, "%s: none listed twice", pass);
    is_int(s->unknown, 0, "%s: no other key (%s)", pass, s->keys.data);
    is_int(s->bad_size, 0, "%s: every listed size is right", pass);
    cbfs_buf_release(&s->keys);

    memset(s, 0, sizeof(*s));
    cbfs_buf_init(&s->keys);
    s->stop_at = 5;
    is_int(cbfs_store_list(st, "many/", seen_cb, s, &err), 42,
           "%s: a callback's non-zero return stops the listing and is returned", pass);
    is_int(s->calls, 5, "%s: no call after the stop", pass);
    cbfs_buf_release(&s->keys);

    /* "wal/" is a folder: "wal2/..." and "walx" are not in it */
    is_int(cbfs_store_put(st, "wal/x1", "1", 1, &err), 0, "%s: put wal/x1", pass);
    is_int(cbfs_store_put(st, "wal/x2", "2", 1, &err), 0, "%s: put wal/x2", pass);
    is_int(cbfs_store_put(st, "wal2/y1", "3", 1, &err), 0, "%s: put wal2/y1", pass);
    is_int(cbfs_store_put(st, "walx", "4", 1, &err), 0, "%s: put walx", pass);
    got = list_sorted(st, "wal/", &rc);
    is_int(rc, 0, "%s: list \"wal/\"", pass);
    is_str(got, "wal/x1,wal/x2,", "%s: list \"wal/\" has no key of \"wal2/\" or \"walx\"", pass);
    free(got);
    got = list_sorted(st, "wal2/", &rc);
    is_str(got, "wal2/y1,", "%s: list \"wal2/\"", pass);
    free(got);

    /* repositories s3://b/P-sib and s3://b/P-sib2: neither sees the other */
    st2 = open_s3(bucket, sib);
    st3 = open_s3(bucket, sib2);
    is_int(cbfs_store_put(st2, "a/one", "1", 1, &err), 0, "%s: put into %s", pass, sib);
    is_int(cbfs_store_put(st3, "a/two", "2", 1, &err), 0, "%s: put into %s", pass, sib2);
    got = list_sorted(st2, "", &rc);
    is_int(rc, 0, "%s: list all of %s", pass, sib);
    is_str(got, "a/one,", "%s: listing %s shows nothing of %s", pass, sib, sib2);
    free(got);
    got = list_sorted(st3, "", &rc);
    is_str(got, "a/two,", "%s: listing %s shows nothing of %s", pass, sib2, sib);
    free(got);
    got = list_sorted(st2, "nothing/", &rc);
    is_int(rc, 0, "%s: list of an empty prefix succeeds", pass);
    is_str(got, "", "%s: and lists nothing", pass);
    free(got);
    ok(no_error(&err), "%s: listing: no error set (\"%s\")", pass, err.msg);
    if_none_match_mode(false);

    cbfs_store_free(st);
    cbfs_store_free(st2);
    cbfs_store_free(st3);
    free(s);
    free(sib);
    free(sib2);
}

/* ---- virtual-hosted style ---------------------------------------------------- */

/* http://BUCKET.localhost:PORT/key: Swift's s3api maps the host to the
 * bucket (storage_domain = localhost), libcurl resolves *.localhost to
 * the loopback itself. */
static void test_virtual_host(void)
{
    char *url = cbfs_xasprintf("http://localhost:%s", strrchr(endpoint, ':') + 1), *got;
    uint8_t *buf = NULL;
    size_t len = 0;
    CbfsError err;
    CbfsStore *st;
    int rc = -1;

    cbfs_error_init(&err);
    setenv("AWS_ENDPOINT_URL", url, 1);
    setenv("CBFS_S3_URI_STYLE", "virtual", 1);
    st = open_s3(bucket, "vhost");
    unsetenv("CBFS_S3_URI_STYLE");
    setenv("AWS_ENDPOINT_URL", endpoint, 1);
    is_int(cbfs_store_put(st, "dir/x", "virtual", 7, &err), 0, "virtual-hosted style: put (%s)",
           err.msg);
    is_int(cbfs_store_get(st, "dir/x", &buf, &len, &err), 0, "virtual-hosted style: get");
    ok(len == 7 && buf && memcmp(buf, "virtual", 7) == 0, "virtual-hosted style: same bytes");
    free(buf);
    got = list_sorted(st, "dir/", &rc);
    is_int(rc, 0, "virtual-hosted style: list");
    is_str(got, "dir/x,", "virtual-hosted style: list shows the key");
    free(got);
    cbfs_store_free(st);
    /* the same object, path style */
    st = open_s3(bucket, "vhost");
    is_int(cbfs_store_get(st, "dir/x", &buf, &len, &err), 0,
           "virtual-hosted style: path style finds the same object");
    free(buf);
    cbfs_store_free(st);
    free(url);
}

/* ---- failures --------------------------------------------------------------- */

static Seen seen; /* for listings that must fail */

static void test_missing_bucket(void)
{
    const char *b = "cbfs-no-such-bucket";
    CbfsStore *st = open_s3(b, "x");
    CbfsError err;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;
    char *want;

    cbfs_buf_init(&seen.keys);
    cbfs_error_init(&err);
    rc = cbfs_store_get(st, "config", &buf, &len, &err);
    ok(rc < 0 && rc != -ENOENT, "missing bucket: get fails, and not as \"not found\" (%d)", rc);
    want = cbfs_xasprintf(
        "could not read object \"s3://%s/x/config\": bucket \"%s\" does not exist", b, b);
    is_str(err.msg, want, "missing bucket: get names the bucket");
    free(want);

    cbfs_error_init(&err);
    rc = cbfs_store_put(st, "config", "x", 1, &err);
    ok(rc < 0 && rc != -ENOENT && rc != -EEXIST, "missing bucket: put fails (%d)", rc);
    want = cbfs_xasprintf(
        "could not write object \"s3://%s/x/config\": bucket \"%s\" does not exist", b, b);
    is_str(err.msg, want, "missing bucket: put names the bucket");
    free(want);

    cbfs_error_init(&err);
    rc = cbfs_store_list(st, "", seen_cb, &seen, &err);
    ok(rc < 0 && rc != -ENOENT, "missing bucket: list fails (%d)", rc);
    want = cbfs_xasprintf(
        "could not list objects under \"s3://%s/x\": bucket \"%s\" does not exist", b, b);
    is_str(err.msg, want, "missing bucket: list names the bucket");
    free(want);
    cbfs_store_free(st);
}

static void test_wrong_secret(void)
{
    static const char secret[] = "wrong-secret-4711xyz";
    char *good = cbfs_xstrdup(getenv("AWS_SECRET_ACCESS_KEY")), *want;
    uint8_t *buf = NULL, small[16];
    size_t len = 0;
    uint64_t size;
    CbfsError err;
    CbfsStore *st;
    double t0;
    int rc;

    setenv("AWS_SECRET_ACCESS_KEY", secret, 1);
    /* a 403 is final: a retry would wait at least 2.5 s */
    setenv("CBFS_S3_RETRY_BASE_MS", "5000", 1);
    st = open_s3(bucket, "plain");
    setenv("AWS_SECRET_ACCESS_KEY", good, 1);

    cbfs_error_init(&err);
    t0 = cbfs_now();
    rc = cbfs_store_get(st, "obj/a", &buf, &len, &err);
    ok(rc < 0 && rc != -ENOENT, "wrong secret: get fails (%d)", rc);
    want = cbfs_xasprintf("could not read object \"s3://%s/plain/obj/a\": access denied "
                          "(HTTP 403 SignatureDoesNotMatch)",
                          bucket);
    is_str(err.msg, want, "wrong secret: get says access denied");
    ok(!strchr(err.msg, '\n'), "wrong secret: the message is one line");
    ok(!strstr(err.msg, secret), "wrong secret: the message does not hold the secret");
    free(want);

    cbfs_error_init(&err);
    rc = cbfs_store_stat(st, "obj/a", &size, &err);
    ok(rc < 0 && rc != -ENOENT, "wrong secret: stat fails (%d)", rc);
    want = cbfs_xasprintf("could not stat object \"s3://%s/plain/obj/a\": access denied (HTTP 403)",
                          bucket);
    is_str(err.msg, want, "wrong secret: stat says access denied");
    free(want);

    cbfs_error_init(&err);
    rc = cbfs_store_get_range(st, "obj/a", 0, sizeof(small), small, &len, &err);
    ok(rc < 0 && rc != -ENOENT, "wrong secret: get_range fails (%d)", rc);

    /* stock Swift answers 501 to If-None-Match before it checks the
     * signature: the driver then looks first, and that HEAD gets the 403 */
    cbfs_error_init(&err);
    rc = cbfs_store_put(st, "obj/new", "x", 1, &err);
    ok(rc < 0 && rc != -EEXIST, "wrong secret: put fails (%d)", rc);
    want = cbfs_xasprintf("could not stat object \"s3://%s/plain/obj/new\": access denied "
                          "(HTTP 403)",
                          bucket);
    is_str(err.msg, want, "wrong secret: put (stock Swift) says access denied");
    free(want);
    cbfs_store_free(st);
    if_none_match_mode(true);
    setenv("AWS_SECRET_ACCESS_KEY", secret, 1);
    st = open_s3(bucket, "plain");
    setenv("AWS_SECRET_ACCESS_KEY", good, 1);
    cbfs_error_init(&err);
    rc = cbfs_store_put(st, "obj/new", "x", 1, &err);
    ok(rc < 0 && rc != -EEXIST, "wrong secret: put with If-None-Match fails (%d)", rc);
    want = cbfs_xasprintf("could not write object \"s3://%s/plain/obj/new\": access denied "
                          "(HTTP 403 SignatureDoesNotMatch)",
                          bucket);
    is_str(err.msg, want, "wrong secret: put with If-None-Match says access denied");
    ok(!strstr(err.msg, secret) && !strchr(err.msg, '\n'),
       "wrong secret: one line, without the secret");
    free(want);
    if_none_match_mode(false);

    cbfs_error_init(&err);
    rc = cbfs_store_list(st, "obj/", seen_cb, &seen, &err);
    ok(rc < 0, "wrong secret: list fails (%d)", rc);
    want = cbfs_xasprintf("could not list objects under \"s3://%s/plain\": access denied (HTTP 403 "
                          "SignatureDoesNotMatch)",
                          bucket);
    is_str(err.msg, want, "wrong secret: list says access denied");
    free(want);
    ok(cbfs_now() - t0 < 2.5, "wrong secret: a 403 is not retried (%.2f s)", cbfs_now() - t0);
    unsetenv("CBFS_S3_RETRY_BASE_MS");
    cbfs_store_free(st);
    free(good);
}

/* ---- the fault proxy -------------------------------------------------------- */

static pid_t fp_pid;
static char *fp_stats;

/* Starts faultproxy.py in front of the server, faults on; returns its
 * endpoint (caller frees).  It dies with this process (PR_SET_PDEATHSIG). */
static char *fp_start(void)
{
    char *script = cbfs_xasprintf("%s/tests/s3/faultproxy.py", srcdir);
    char *portfile = cbfs_xasprintf("%s/fp-c.port", state_dir);
    char *logfile = cbfs_xasprintf("%s/fp-c.log", state_dir);
    const char *seed = getenv("S3_TEST_SEED") ? getenv("S3_TEST_SEED") : "20261121";
    const char *target = endpoint + strlen("http://");
    pid_t parent = getpid();
    char *url = NULL;

    fp_stats = cbfs_xasprintf("%s/fp-c.stats", state_dir);
    unlink(portfile);
    fflush(stdout);
    fp_pid = fork();
    if (fp_pid < 0) {
        printf("Bail out! fork: %s\n", strerror(errno));
        exit(1);
    }
    if (fp_pid == 0) {
        int null = open("/dev/null", O_RDWR),
            log = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        dup2(null, 0);
        dup2(null, 1);
        dup2(log, 2);
        unsetenv("PYTHONPATH");
        unsetenv("PYTHONHOME");
        /* Short delays: a few hundred delayed requests must not take
         * minutes.  More resets than by default (15%): a reset in the middle
         * of a body needs an answer with a body, and most requests here
         * (PUT, HEAD) have none.  Never more than 3 faulty requests in a
         * row: retries (10 attempts) must not run out by chance. */
        execl("/usr/bin/python3", "python3", script, "--target", target, "--port-file", portfile,
              "--stats", fp_stats, "--log", logfile, "--seed", seed, "--delay-min", "0.02",
              "--delay-max", "0.1", "--reset-rate", "0.15", "--max-consecutive", "3",
              (char *) NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && !url; i++) {
        uint8_t *text;
        size_t len;
        CbfsError err;
        cbfs_error_init(&err);
        if (cbfs_read_file(portfile, &text, &len, &err) == 0) {
            if (len > 0 && atoi((char *) text) > 0)
                url = cbfs_xasprintf("http://127.0.0.1:%d", atoi((char *) text));
            free(text);
        }
        if (!url)
            sleep_ms(100);
    }
    if (!url) {
        kill(fp_pid, SIGKILL);
        waitpid(fp_pid, NULL, 0);
        printf("Bail out! faultproxy.py did not start (see %s)\n", logfile);
        exit(1);
    }
    free(script);
    free(portfile);
    free(logfile);
    return url;
}

/* Stops the proxy (SIGTERM; it writes its final stats); its exit status. */
static int fp_stop(void)
{
    int status = -1;
    kill(fp_pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid(fp_pid, &status, WNOHANG) == fp_pid)
            return status;
        sleep_ms(100);
    }
    kill(fp_pid, SIGKILL);
    waitpid(fp_pid, &status, 0);
    return status;
}

static long fp_stat(const char *key)
{
    uint8_t *text;
    size_t len;
    CbfsError err;
    long v = -1;
    size_t klen = strlen(key);

    cbfs_error_init(&err);
    if (cbfs_read_file(fp_stats, &text, &len, &err) < 0)
        return -1;
    for (char *line = (char *) text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (strncmp(line, key, klen) == 0 && line[klen] == '=')
            v = strtol(line + klen + 1, NULL, 10);
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return v;
}

static void test_faults(void)
{
    static const char *const kinds[] = {"error_500",           "error_503",      "reset_before",
                                        "reset_after_request", "reset_mid_body", "delay"};
    char *url = fp_start();
    CbfsStore *st;
    double t0 = cbfs_now();
    int status;

    setenv("AWS_ENDPOINT_URL", url, 1);
    setenv("CBFS_S3_RETRY_BASE_MS", "20", 1);
    st = open_s3(bucket, "faulty");
    test_objects("faults", st);
    test_reads("faults", st);
    cbfs_store_free(st);
    test_create_once("faults", "faulty", false, false);
    test_create_once("faults", "faulty", true, false);
    test_multipart("faults", "faulty");
    test_list("faults", "faulty");
    unsetenv("CBFS_S3_RETRY_BASE_MS");
    setenv("AWS_ENDPOINT_URL", endpoint, 1);
    status = fp_stop();
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "faultproxy exits 0 on SIGTERM");
    printf("# through the fault proxy in %.1f s: %ld requests, %ld faults, %ld upstream errors\n",
           cbfs_now() - t0, fp_stat("requests"), fp_stat("faults"), fp_stat("upstream_errors"));
    for (size_t i = 0; i < CBFS_ARRAY_LEN(kinds); i++)
        ok(fp_stat(kinds[i]) > 0, "faults: the proxy injected %s (%ld times)", kinds[i],
           fp_stat(kinds[i]));
    free(url);
}

int main(void)
{
    CbfsStore *st;

    setvbuf(stdout, NULL, _IOLBF, 0);
    endpoint = need_env("S3_ENDPOINT");
    bucket = need_env("S3_BUCKET");
    state_dir = need_env("S3_STATE_DIR");
    inm_flag = need_env("S3_IF_NONE_MATCH_FLAG");
    srcdir = need_env("CBFS_SRCDIR");
    need_env("AWS_ACCESS_KEY_ID");
    need_env("AWS_SECRET_ACCESS_KEY");
    if (strncmp(endpoint, "http://", 7) != 0) {
        printf("Bail out! S3_ENDPOINT %s is not http://\n", endpoint);
        return 1;
    }
    setenv("AWS_ENDPOINT_URL", endpoint, 1);
    unsetenv("AWS_ENDPOINT_URL_S3");
    if_none_match_mode(false);

    st = open_s3(bucket, "plain");
    test_objects("direct", st);
    test_reads("direct", st);
    test_replace("direct", st);
    cbfs_store_free(st);
    test_create_once("direct", "plain", false, true);
    test_create_once("direct", "plain", true, true);
    test_multipart("direct", "plain");
    test_list("direct", "plain");
    test_virtual_host();
    test_missing_bucket();
    test_wrong_secret();
    test_faults();
    return done_testing();
}
