/*
 * test-kv.c - unit tests for lib/kv.c: the "key = value" metadata text of
 * config, cluster and backup records.  Values survive a format/parse round
 * trip whatever they hold; malformed lines are refused with their line
 * number.  Also the sizes settings and options are given in (util.h).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/kv.h"
#include "cbfs/ratelimit.h"
#include "cbfs/util.h"
#include "tap.h"

static CbfsKv *parse(const char *text)
{
    CbfsKv *kv = NULL;
    CbfsError err;

    cbfs_error_init(&err);
    if (cbfs_kv_parse(text, strlen(text), &kv, &err) != 0) {
        printf("# parse failed: %s\n", err.msg);
        return NULL;
    }
    return kv;
}

static void test_round_trip(void)
{
    static const struct {
        const char *key, *value;
    } pairs[] = {
        {"format", "1"},
        {"empty", ""},
        {"spaces", "a value with spaces"},
        {"lead", "  leading and trailing spaces  "},
        {"equals", "a = b = c"},
        {"newline", "line 1\nline 2\n"},
        {"only_newlines", "\n\n"},
        {"backslash", "C:\\dir\\file"},
        {"escapes", "literal \\n is not a newline, \\\\ two"},
        {"trailing_backslash", "x\\"},
        {"hash", "# not a comment"},
        {"tab", "a\tb"},
        {"utf8", "caf\xc3\xa9 \xe2\x82\xac"},
        {"backup_label", "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
                         "CHECKPOINT LOCATION: 0/2000060\nLABEL: full \"1\"\n"},
        {"k_9", "digits and underscore in the key"},
    };
    CbfsKv *kv = cbfs_kv_new(), *back = NULL;
    CbfsError err;
    char *text, *text2;
    int lines = 0;

    for (size_t i = 0; i < CBFS_ARRAY_LEN(pairs); i++)
        cbfs_kv_set(kv, pairs[i].key, pairs[i].value);
    text = cbfs_kv_format(kv);
    for (const char *s = text; *s; s++)
        lines += *s == '\n';
    is_int(lines, CBFS_ARRAY_LEN(pairs), "one line per key: values never span lines");
    ok(text[0] != '\0' && text[strlen(text) - 1] == '\n', "text ends with a newline");

    cbfs_error_init(&err);
    is_int(cbfs_kv_parse(text, strlen(text), &back, &err), 0, "formatted text parses");
    if (back) {
        for (size_t i = 0; i < CBFS_ARRAY_LEN(pairs); i++)
            is_str(cbfs_kv_get(back, pairs[i].key), pairs[i].value, "round trip of %s = \"%s\"",
                   pairs[i].key, show(pairs[i].value));
        text2 = cbfs_kv_format(back);
        is_str(text2, text, "formatting the parsed copy gives the same text");
        free(text2);
    }
    ok(cbfs_kv_get(kv, "absent") == NULL, "an absent key is NULL");
    cbfs_kv_free(back);
    cbfs_kv_free(kv);
    free(text);
    cbfs_kv_free(NULL);
}

static void test_format(void)
{
    CbfsKv *kv = cbfs_kv_new();
    char *text;

    text = cbfs_kv_format(kv);
    is_str(text, "", "an empty kv formats as nothing");
    free(text);
    cbfs_kv_set(kv, "b", "2");
    cbfs_kv_set(kv, "a", "x\ny\\z");
    cbfs_kv_set_u64(kv, "n", 18446744073709551615ull);
    text = cbfs_kv_format(kv);
    is_str(text, "b = 2\na = x\\ny\\\\z\nn = 18446744073709551615\n",
           "exact text: insertion order, escapes, u64");
    free(text);

    /* set replaces */
    cbfs_kv_set(kv, "b", "3");
    cbfs_kv_set_u64(kv, "n", 0);
    is_str(cbfs_kv_get(kv, "b"), "3", "set replaces a value");
    text = cbfs_kv_format(kv);
    is_str(text, "b = 3\na = x\\ny\\\\z\nn = 0\n", "a replaced key keeps its place, once");
    free(text);
    cbfs_kv_free(kv);
}

static void test_parse(void)
{
    CbfsKv *kv;
    const char *text = "# a comment\n"
                       "\n"
                       "a=1\n"
                       "b = 2\n"
                       "c   = 3\n"
                       "d =  4\n"
                       "#e = 5\n"
                       "f =\n"
                       "g = x = y\n"
                       "h = no newline at the end";

    kv = parse(text);
    ok(kv != NULL, "comments, blank lines and spacing variants parse");
    if (!kv)
        return;
    is_str(cbfs_kv_get(kv, "a"), "1", "\"a=1\": no spaces needed");
    is_str(cbfs_kv_get(kv, "b"), "2", "\"b = 2\"");
    is_str(cbfs_kv_get(kv, "c"), "3", "spaces before '=' are not part of the key");
    is_str(cbfs_kv_get(kv, "d"), " 4", "one space after '=' is dropped, the rest kept");
    ok(cbfs_kv_get(kv, "e") == NULL && cbfs_kv_get(kv, "#e") == NULL, "a comment line is ignored");
    is_str(cbfs_kv_get(kv, "f"), "", "an empty value");
    is_str(cbfs_kv_get(kv, "g"), "x = y", "the first '=' splits");
    is_str(cbfs_kv_get(kv, "h"), "no newline at the end", "last line without a newline");
    cbfs_kv_free(kv);

    kv = parse("");
    ok(kv != NULL && cbfs_kv_get(kv, "a") == NULL, "empty text is an empty kv");
    cbfs_kv_free(kv);

    kv = parse("v = a\\\\b\\nc\\\\nd\n");
    ok(kv != NULL, "escapes parse");
    if (kv)
        is_str(cbfs_kv_get(kv, "v"), "a\\b\nc\\nd", "\\\\ and \\n unescaped, left to right");
    cbfs_kv_free(kv);

    /* unknown keys are kept */
    kv = parse("format = 1\nfuture_field = something new\n");
    if (kv) {
        char *text2 = cbfs_kv_format(kv);
        ok(strstr(text2, "future_field = something new\n") != NULL,
           "an unknown key is kept when the record is written again");
        free(text2);
    } else {
        ok(0, "an unknown key is kept when the record is written again");
    }
    cbfs_kv_free(kv);
}

static void check_bad(const char *text, int line)
{
    CbfsKv *kv = NULL;
    CbfsError err;
    char want[64];

    snprintf(want, sizeof(want), "invalid metadata at line %d", line);
    cbfs_error_init(&err);
    is_int(cbfs_kv_parse(text, strlen(text), &kv, &err), -EINVAL, "\"%s\" is refused", show(text));
    is_str(err.msg, want, "\"%s\": message", show(text));
    is_int(err.code, CBFS_EXIT_CORRUPT, "\"%s\": CBFS_EXIT_CORRUPT", show(text));
}

static void test_parse_errors(void)
{
    check_bad("no equals sign\n", 1);
    check_bad("a = 1\nb\n", 2);
    check_bad("Key = 1\n", 1);
    check_bad("a-b = 1\n", 1);
    check_bad("a.b = 1\n", 1);
    check_bad("a b = 1\n", 1);
    check_bad(" a = 1\n", 1);
    check_bad("= 1\n", 1);
    check_bad("   = 1\n", 1);
    check_bad("caf\xc3\xa9 = 1\n", 1);
    check_bad("a = bad \\t escape\n", 1);
    check_bad("a = 1\n\n# c\nb = trailing backslash \\\n", 4);
    check_bad("a = trailing backslash \\", 1);
    check_bad("a = \\x\n", 1);
    check_bad("a = 1\nb = 2\nc = 3\nd = \\\\\\\n", 4);
}

static void test_u64(void)
{
    CbfsKv *kv = cbfs_kv_new();
    uint64_t v;
    static const char *const bad[] = {
        "",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1x",
        "0x10",
        "1.5",
        "18446744073709551616",
        "99999999999999999999999",
    };

    cbfs_kv_set(kv, "zero", "0");
    cbfs_kv_set(kv, "n", "8192");
    cbfs_kv_set(kv, "max", "18446744073709551615");
    cbfs_kv_set(kv, "lead0", "007");
    v = 1;
    is_int(cbfs_kv_get_u64(kv, "zero", &v), 0, "\"0\" is a u64");
    is_int(v, 0, "\"0\" is 0");
    is_int(cbfs_kv_get_u64(kv, "n", &v), 0, "\"8192\" is a u64");
    is_int(v, 8192, "\"8192\" is 8192");
    is_int(cbfs_kv_get_u64(kv, "max", &v), 0, "2^64-1 is a u64");
    ok(v == UINT64_MAX, "2^64-1 read exactly");
    is_int(cbfs_kv_get_u64(kv, "lead0", &v), 0, "\"007\" is a u64");
    is_int(v, 7, "\"007\" is 7");
    is_int(cbfs_kv_get_u64(kv, "absent", &v), -ENOENT, "an absent key is -ENOENT");
    for (size_t i = 0; i < CBFS_ARRAY_LEN(bad); i++) {
        cbfs_kv_set(kv, "x", bad[i]);
        is_int(cbfs_kv_get_u64(kv, "x", &v), -EINVAL, "\"%s\" is not a u64", bad[i]);
    }
    cbfs_kv_set_u64(kv, "y", 123456789012345ull);
    is_str(cbfs_kv_get(kv, "y"), "123456789012345", "set_u64 writes decimal");
    cbfs_kv_free(kv);
}

/* Sizes (util.h), as settings and options give them. */
static void test_sizes(void)
{
    static const struct {
        const char *in;
        int rc;
        uint64_t want;
    } cases[] = {
        {"65536", 0, 65536},       {"64k", 0, 65536},
        {"64K", 0, 65536},         {"1M", 0, 1u << 20},
        {"50MB", 0, 50ull << 20},  {"2G", 0, 2ull << 30},
        {"1T", 0, 1ull << 40},     {"1024g", 0, 1ull << 40},
        {"16777216T", -EINVAL, 0}, /* 2^64: does not fit */
        {"1X", -EINVAL, 0},        {"", -EINVAL, 0},
        {"M", -EINVAL, 0},         {"1MM", -EINVAL, 0},
        {"-1", -EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 0;
        int rc = cbfs_parse_size(cases[i].in, &v);
        ok(rc == cases[i].rc && (rc < 0 || v == cases[i].want), "size \"%s\": %d, %llu",
           cases[i].in, rc, (unsigned long long) v);
    }
}

/* Rates (ratelimit.h): sizes a second, at least 1k; and the limiter's
 * accounting (no timing: a rate far above what is taken never sleeps). */
static void test_rates(void)
{
    static const struct {
        const char *in;
        int rc;
        uint64_t want;
    } cases[] = {
        {"50M", 0, 50u << 20}, {"1k", 0, 1024},      {"1G", 0, 1u << 30}, {"1023", -EINVAL, 0},
        {"0", -EINVAL, 0},     {"fast", -EINVAL, 0}, {"-5M", -EINVAL, 0}, {"", -EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 0;
        CbfsError err;
        int rc;
        cbfs_error_init(&err);
        rc = cbfs_rate_parse(cases[i].in, &v, &err);
        ok(rc == cases[i].rc && (rc < 0 || v == cases[i].want), "rate \"%s\": %d, %llu",
           cases[i].in, rc, (unsigned long long) v);
        if (rc < 0) {
            char want[128];
            snprintf(want, sizeof(want),
                     "invalid rate \"%s\" (bytes a second, at least 1k: 50M, 1G)", cases[i].in);
            is_str(err.msg, want, "... the message for \"%s\"", cases[i].in);
        }
    }
    {
        CbfsRateLimit *rl = cbfs_ratelimit_new(1ull << 40);
        cbfs_ratelimit_take(rl, 1u << 20);
        cbfs_ratelimit_take(NULL, 1u << 20); /* no limit: nothing */
        is_int(cbfs_ratelimit_rate(rl), 1ull << 40, "a limiter keeps its rate");
        cbfs_ratelimit_free(rl);
    }
}

static void test_unset(void)
{
    CbfsKv *kv = parse("a = 1\nb = 2\nc = 3\n");
    char *text;
    cbfs_kv_unset(kv, "b");
    cbfs_kv_unset(kv, "nope");
    text = cbfs_kv_format(kv);
    is_str(text, "a = 1\nc = 3\n", "unset removes one key, keeps the others in order");
    free(text);
    cbfs_kv_free(kv);
}

int main(void)
{
    test_sizes();
    test_rates();
    test_unset();
    test_round_trip();
    test_format();
    test_parse();
    test_parse_errors();
    test_u64();
    return done_testing();
}
