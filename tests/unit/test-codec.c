/*
 * test-codec.c - unit tests for lib/codec.c: block ids, compression and
 * verify-on-decode, and with a crypt attached keyed ids and sealed blocks.
 *
 * The SHA-256 vectors are the ones of FIPS 180-2 (appendix B) and of the
 * empty message.  Every decode failure must be -EBADMSG with
 * CBFS_EXIT_CORRUPT and a message naming the block; a decode must never
 * return 0 with content other than the block's.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/codec.h"
#include "cbfs/crypt.h"
#include "cbfs/error.h"
#include "cbfs/kv.h"
#include "tap.h"
#include "testkeys.h"

#define BLOCK 8192

/* ---- block ids ---- */

static void check_id(const char *data, const char *want)
{
    uint8_t id[CBFS_BLOCK_ID_LEN];
    char hex[65];

    memset(hex, 'x', sizeof(hex));
    cbfs_block_id(data, strlen(data), id);
    cbfs_block_id_hex(id, hex);
    is_str(hex, want, "sha256(\"%.20s\")", data);
}

static void test_block_id(void)
{
    uint8_t a[CBFS_BLOCK_ID_LEN], b[CBFS_BLOCK_ID_LEN];
    uint8_t *zeros = calloc(1, BLOCK);

    check_id("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    check_id("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check_id("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
             "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

    /* the id depends on every byte and on the length */
    cbfs_block_id(zeros, BLOCK, a);
    cbfs_block_id(zeros, BLOCK - 1, b);
    ok(memcmp(a, b, sizeof(a)) != 0, "ids of 8192 and 8191 zero bytes differ");
    zeros[BLOCK - 1] = 1;
    cbfs_block_id(zeros, BLOCK, b);
    ok(memcmp(a, b, sizeof(a)) != 0, "changing the last byte changes the id");
    free(zeros);
}

/* ---- round trips ---- */

/* Encode len bytes of raw, check the stored form and decode it back. */
static void round_trip(CbfsCodec *c, const char *what, const uint8_t *raw, size_t len, int want_raw)
{
    size_t cap = cbfs_codec_bound(len);
    uint8_t *stored = malloc(cap ? cap : 1);
    uint8_t *out = malloc(len ? len : 1);
    uint8_t id[CBFS_BLOCK_ID_LEN];
    size_t n;
    CbfsError err;

    ok(cap >= len, "%s: bound %zu >= %zu", what, cap, len);
    cbfs_block_id(raw, len, id);
    n = cbfs_codec_encode(c, id, raw, len, stored, cap);
    ok(n <= len, "%s: stored length %zu is at most the raw length %zu", what, n, len);
    if (want_raw) {
        is_int(n, len, "%s: stored raw", what);
        ok(memcmp(stored, raw, len) == 0, "%s: raw stored form is the data itself", what);
    } else {
        ok(n < len, "%s: compressed (%zu < %zu)", what, n, len);
    }
    cbfs_error_init(&err);
    memset(out, 0xAA, len ? len : 1);
    is_int(cbfs_codec_decode(c, stored, n, out, len, id, &err), 0, "%s: decodes", what);
    ok(memcmp(out, raw, len) == 0, "%s: decoded content is the original", what);
    is_int(err.code, 0, "%s: no error set on success", what);
    free(stored);
    free(out);
}

static void test_round_trip(void)
{
    static const int levels[] = {1, 3, 19};
    uint8_t *zeros = calloc(1, BLOCK);
    uint8_t *text = malloc(BLOCK);
    uint8_t *rnd = malloc(BLOCK);
    uint8_t *big = malloc(4 * BLOCK);
    char what[64];

    for (size_t i = 0; i < BLOCK; i++)
        text[i] = (uint8_t) "the quick brown fox jumps over the lazy dog "[i % 44];
    cbfs_random_bytes(rnd, BLOCK);
    for (size_t i = 0; i < 4 * BLOCK; i++)
        big[i] = (uint8_t) (i / 512);

    for (size_t l = 0; l < CBFS_ARRAY_LEN(levels); l++) {
        CbfsCodec *c = cbfs_codec_new(levels[l]);

        snprintf(what, sizeof(what), "level %d zeros", levels[l]);
        round_trip(c, what, zeros, BLOCK, 0);
        snprintf(what, sizeof(what), "level %d text", levels[l]);
        round_trip(c, what, text, BLOCK, 0);
        snprintf(what, sizeof(what), "level %d 32k", levels[l]);
        round_trip(c, what, big, 4 * BLOCK, 0);
        snprintf(what, sizeof(what), "level %d random", levels[l]);
        round_trip(c, what, rnd, BLOCK, 1);
        snprintf(what, sizeof(what), "level %d 1 byte", levels[l]);
        round_trip(c, what, text, 1, 1);
        snprintf(what, sizeof(what), "level %d 3 bytes", levels[l]);
        round_trip(c, what, (const uint8_t *) "abc", 3, 1);
        snprintf(what, sizeof(what), "level %d 0 bytes", levels[l]);
        round_trip(c, what, text, 0, 1);
        cbfs_codec_free(c);
    }

    /* one codec, many blocks of every size: stored never longer than raw */
    {
        CbfsCodec *c = cbfs_codec_new(3);
        uint8_t stored[BLOCK + 1024], out[BLOCK], id[CBFS_BLOCK_ID_LEN];
        int bad = 0;

        for (size_t len = 1; len <= BLOCK; len += 97) {
            const uint8_t *src = (len % 2) ? rnd : text;
            size_t n;
            CbfsError err;
            cbfs_error_init(&err);
            cbfs_block_id(src, len, id);
            n = cbfs_codec_encode(c, id, src, len, stored, cbfs_codec_bound(len));
            if (n > len || cbfs_codec_decode(c, stored, n, out, len, id, &err) != 0 ||
                memcmp(out, src, len) != 0)
                bad++;
        }
        is_int(bad, 0, "85 blocks of 1..8150 bytes round trip through one codec");
        cbfs_codec_free(c);
    }
    cbfs_codec_free(NULL);
    free(zeros);
    free(text);
    free(rnd);
    free(big);
}

/* ---- corruption ---- */

/* Decode must fail with -EBADMSG, CBFS_EXIT_CORRUPT and a message naming id. */
static void check_corrupt(CbfsCodec *c, const char *what, const uint8_t *stored, size_t n,
                          size_t raw_len, const uint8_t id[CBFS_BLOCK_ID_LEN])
{
    uint8_t *out = malloc(raw_len ? raw_len : 1);
    char hex[65], *want;
    CbfsError err;

    cbfs_block_id_hex(id, hex);
    want = cbfs_xasprintf("block %s is corrupt", hex);
    cbfs_error_init(&err);
    is_int(cbfs_codec_decode(c, stored, n, out, raw_len, id, &err), -EBADMSG, "%s: -EBADMSG", what);
    is_int(err.code, CBFS_EXIT_CORRUPT, "%s: CBFS_EXIT_CORRUPT", what);
    ok(strstr(err.msg, want) != NULL, "%s: message \"%s\" names the block", what, err.msg);
    free(want);
    free(out);
}

static void test_corrupt(void)
{
    CbfsCodec *c = cbfs_codec_new(3);
    uint8_t *text = malloc(BLOCK), *rnd = malloc(BLOCK), *out = malloc(BLOCK);
    uint8_t *stored = malloc(cbfs_codec_bound(BLOCK));
    uint8_t *copy = malloc(cbfs_codec_bound(BLOCK));
    uint8_t id[CBFS_BLOCK_ID_LEN], rid[CBFS_BLOCK_ID_LEN], other[CBFS_BLOCK_ID_LEN];
    size_t n, rn;
    int failed = 0, wrong = 0;

    for (size_t i = 0; i < BLOCK; i++)
        text[i] = (uint8_t) ("pack my box with five dozen liquor jugs"[i % 39] + i / 1024);
    cbfs_random_bytes(rnd, BLOCK);
    cbfs_block_id(text, BLOCK, id);
    cbfs_block_id(rnd, BLOCK, rid);
    cbfs_block_id("something else", 14, other);

    /* compressed block */
    n = cbfs_codec_encode(c, id, text, BLOCK, stored, cbfs_codec_bound(BLOCK));
    ok(n < BLOCK, "test block compresses (%zu bytes)", n);
    memcpy(copy, stored, n);
    copy[n / 2] ^= 0x01;
    check_corrupt(c, "compressed, middle byte flipped", copy, n, BLOCK, id);
    memcpy(copy, stored, n);
    copy[0] ^= 0xFF;
    check_corrupt(c, "compressed, frame magic flipped", copy, n, BLOCK, id);
    check_corrupt(c, "compressed, truncated", stored, n - 1, BLOCK, id);
    check_corrupt(c, "compressed, raw_len too large", stored, n, BLOCK + 1, id);
    check_corrupt(c, "compressed, raw_len too small", stored, n, BLOCK - 1, id);
    check_corrupt(c, "compressed, wrong id", stored, n, BLOCK, other);

    /* Every single-byte flip: an error, or (a flip in a field zstd does not
     * need) exactly the original content -- never different content. */
    for (size_t i = 0; i < n; i++) {
        CbfsError err;
        int rc;
        memcpy(copy, stored, n);
        copy[i] ^= 0x5A;
        cbfs_error_init(&err);
        rc = cbfs_codec_decode(c, copy, n, out, BLOCK, id, &err);
        if (rc == -EBADMSG && err.code == CBFS_EXIT_CORRUPT)
            failed++;
        else if (rc != 0 || memcmp(out, text, BLOCK) != 0)
            wrong++;
    }
    is_int(wrong, 0, "no flip of the %zu stored bytes yields other content or another error", n);
    ok(failed > (int) n / 2, "most flips are detected (%d of %zu)", failed, n);

    /* raw block */
    rn = cbfs_codec_encode(c, rid, rnd, BLOCK, stored, cbfs_codec_bound(BLOCK));
    is_int(rn, BLOCK, "random block is stored raw");
    memcpy(copy, stored, rn);
    copy[1234] ^= 0x80;
    check_corrupt(c, "raw, one bit flipped", copy, rn, BLOCK, rid);
    memcpy(copy, stored, rn);
    copy[BLOCK - 1] ^= 0x01;
    check_corrupt(c, "raw, last byte flipped", copy, rn, BLOCK, rid);
    check_corrupt(c, "raw, wrong id", stored, rn, BLOCK, id);
    {
        CbfsError err;
        cbfs_error_init(&err);
        is_int(cbfs_codec_decode(c, stored, rn, out, BLOCK, rid, &err), 0,
               "the unflipped raw block still decodes");
        is_int(err.code, 0, "and sets no error");
    }
    {
        /* the message says why */
        CbfsError err;
        cbfs_error_init(&err);
        cbfs_codec_decode(c, stored, rn, out, BLOCK, id, &err);
        ok(strstr(err.msg, "content does not match its id") != NULL, "id mismatch message: \"%s\"",
           err.msg);
    }

    free(text);
    free(rnd);
    free(out);
    free(stored);
    free(copy);
    cbfs_codec_free(c);
}

/* ---- encryption ---- */

static void test_encrypted(void)
{
    static const char marker[] = "MARKER-plaintext-never-stored";
    CbfsCrypt *crypt = test_crypt(), *other = test_crypt();
    CbfsCodec *c = cbfs_codec_new(3), *plain = cbfs_codec_new(3), *foreign = cbfs_codec_new(3);
    uint8_t *text = malloc(BLOCK), *rnd = malloc(BLOCK), *out = malloc(BLOCK);
    uint8_t *stored = malloc(cbfs_codec_bound(BLOCK)), *copy = malloc(cbfs_codec_bound(BLOCK));
    uint8_t id[CBFS_BLOCK_ID_LEN], rid[CBFS_BLOCK_ID_LEN], sha[CBFS_BLOCK_ID_LEN];
    uint8_t hid[CBFS_BLOCK_ID_LEN];
    size_t n, rn;
    int caught = 0, wiped = 1;
    CbfsError err;

    cbfs_codec_set_crypt(c, crypt);
    cbfs_codec_set_crypt(foreign, other);
    ok(cbfs_codec_bound(BLOCK) >= BLOCK + CBFS_CRYPT_OVERHEAD,
       "the bound leaves room for nonce and tag");
    for (size_t i = 0; i < BLOCK; i++)
        text[i] = (uint8_t) marker[i % (sizeof(marker) - 1)];
    cbfs_random_bytes(rnd, BLOCK);

    /* ids */
    cbfs_codec_block_id(c, text, BLOCK, id);
    cbfs_crypt_block_id(crypt, text, BLOCK, hid);
    cbfs_block_id(text, BLOCK, sha);
    ok(memcmp(id, hid, sizeof(id)) == 0, "an encrypting codec's id is the keyed HMAC");
    ok(memcmp(id, sha, sizeof(id)) != 0, "not the SHA-256");
    cbfs_codec_block_id(plain, text, BLOCK, hid);
    ok(memcmp(hid, sha, sizeof(id)) == 0, "a plain codec's id is the SHA-256");
    cbfs_codec_block_id(foreign, text, BLOCK, hid);
    ok(memcmp(hid, id, sizeof(id)) != 0, "another repository's key gives another id");
    cbfs_codec_block_id(c, rnd, BLOCK, rid);

    /* compressed and raw blocks */
    n = cbfs_codec_encode(c, id, text, BLOCK, stored, cbfs_codec_bound(BLOCK));
    ok(n > CBFS_CRYPT_OVERHEAD && n < BLOCK, "a compressible block: %zu bytes stored", n);
    ok(memmem(stored, n, "MARKER", 6) == NULL, "no plaintext in the stored block");
    cbfs_error_init(&err);
    memset(out, 0, BLOCK);
    is_int(cbfs_codec_decode(c, stored, n, out, BLOCK, id, &err), 0, "it decodes");
    ok(memcmp(out, text, BLOCK) == 0, "to the block");
    rn = cbfs_codec_encode(c, rid, rnd, BLOCK, copy, cbfs_codec_bound(BLOCK));
    is_int(rn, BLOCK + CBFS_CRYPT_OVERHEAD, "a random block: raw inside, plus nonce and tag");
    ok(memmem(copy, rn, rnd, 32) == NULL, "its bytes are not stored as they are");
    is_int(cbfs_codec_decode(c, copy, rn, out, BLOCK, rid, &err), 0, "it decodes");
    ok(memcmp(out, rnd, BLOCK) == 0, "to the block");
    {
        uint8_t tiny[1 + CBFS_CRYPT_OVERHEAD + 64], tid[CBFS_BLOCK_ID_LEN], tout[1];
        size_t tn;
        cbfs_codec_block_id(c, "x", 1, tid);
        tn = cbfs_codec_encode(c, tid, "x", 1, tiny, sizeof(tiny));
        is_int(tn, 1 + CBFS_CRYPT_OVERHEAD, "one byte: 29 bytes stored");
        is_int(cbfs_codec_decode(c, tiny, tn, tout, 1, tid, &err), 0, "and decodes");
        cbfs_codec_block_id(c, "", 0, tid);
        tn = cbfs_codec_encode(c, tid, "", 0, tiny, sizeof(tiny));
        is_int(tn, CBFS_CRYPT_OVERHEAD, "zero bytes: just nonce and tag");
        is_int(cbfs_codec_decode(c, tiny, tn, tout, 0, tid, &err), 0, "and decodes");
    }
    is_str(err.msg, "", "no error so far");

    /* a stored block copied verbatim elsewhere (gc repacking) still opens */
    {
        uint8_t *moved = malloc(n + 100);
        memcpy(moved + 100 - 37, stored, n);
        is_int(cbfs_codec_decode(c, moved + 100 - 37, n, out, BLOCK, id, &err), 0,
               "a stored block moved to another place decodes");
        free(moved);
    }

    /* what must fail */
    check_corrupt(c, "encrypted, opened with another block's id", stored, n, BLOCK, rid);
    check_corrupt(plain, "encrypted, read without the key", stored, n, BLOCK, id);
    check_corrupt(foreign, "encrypted, read with another repository's key", stored, n, BLOCK, id);
    check_corrupt(c, "encrypted, too short", stored, CBFS_CRYPT_OVERHEAD - 1, BLOCK, id);
    check_corrupt(c, "encrypted, truncated", stored, n - 1, BLOCK, id);
    check_corrupt(c, "encrypted, raw_len off by one", stored, n, BLOCK - 1, id);
    cbfs_error_init(&err);
    cbfs_codec_decode(c, stored, n, out, BLOCK, rid, &err);
    ok(strstr(err.msg, "authentication failed") != NULL, "the message says why: \"%s\"", err.msg);
    for (size_t i = 0; i < n; i++) {
        memcpy(copy, stored, n);
        copy[i] ^= (uint8_t) (1u << (i % 8));
        memset(out, 0x77, BLOCK);
        cbfs_error_init(&err);
        if (cbfs_codec_decode(c, copy, n, out, BLOCK, id, &err) == -EBADMSG &&
            err.code == CBFS_EXIT_CORRUPT)
            caught++;
        if (!cbfs_is_zero(out, BLOCK))
            wiped = 0;
    }
    is_int(caught, (int) n, "every one of the %zu single-bit flips is caught", n);
    ok(wiped, "and out holds nothing of the block after each");
    {
        /* a plain repository's stored block is not accepted by an encrypting codec */
        uint8_t sid[CBFS_BLOCK_ID_LEN];
        size_t pn;
        cbfs_codec_block_id(plain, text, BLOCK, sid);
        pn = cbfs_codec_encode(plain, sid, text, BLOCK, copy, cbfs_codec_bound(BLOCK));
        check_corrupt(c, "a plain stored block read with the key", copy, pn, BLOCK, sid);
    }

    free(text);
    free(rnd);
    free(out);
    free(stored);
    free(copy);
    cbfs_codec_free(c);
    cbfs_codec_free(plain);
    cbfs_codec_free(foreign);
    cbfs_crypt_free(crypt);
    cbfs_crypt_free(other);
}

int main(void)
{
    test_block_id();
    test_round_trip();
    test_corrupt();
    test_encrypted();
    return done_testing();
}
