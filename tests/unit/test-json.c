/*
 * test-json.c - unit tests for lib/json_parse.c: what Patroni's REST API
 * sends parses into the values it holds; what the writer writes parses
 * back; malformed text is refused with its offset, never crashes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/json.h"
#include "tap.h"

static CbfsJv *parse(const char *text)
{
    CbfsJv *v = NULL;
    CbfsError err;
    cbfs_error_init(&err);
    if (cbfs_jv_parse(text, strlen(text), &v, &err) < 0)
        return NULL;
    return v;
}

static void test_patroni_cluster(void)
{
    const char *text =
        "{\"members\": [{\"name\": \"n1\", \"role\": \"leader\", \"state\": \"running\", "
        "\"api_url\": \"http://127.0.0.1:8008/patroni\", \"host\": \"127.0.0.1\", \"port\": 5432, "
        "\"timeline\": 2}, {\"name\": \"n2\", \"role\": \"replica\", \"state\": \"running\", "
        "\"api_url\": \"http://127.0.0.1:8009/patroni\", \"timeline\": 2, \"lag\": 0, "
        "\"tags\": {\"nofailover\": true}}, {\"name\": \"n3\", \"role\": \"replica\", "
        "\"state\": \"stopped\", \"lag\": \"unknown\"}], \"scope\": \"demo\"}";
    CbfsJv *v = parse(text);
    const CbfsJv *m;
    double d = -1;

    ok(v != NULL, "a Patroni /cluster answer parses");
    m = cbfs_jv_get(v, "members");
    ok(m && m->type == CBFS_JV_ARRAY && m->n == 3, "three members");
    if (!m || m->n != 3) {
        cbfs_jv_free(v);
        return;
    }
    is_str(cbfs_jv_str(cbfs_jv_get(m->items[0], "role")), "leader", "first member's role");
    ok(cbfs_jv_num(cbfs_jv_get(m->items[0], "port"), &d) == 0 && d == 5432, "a number");
    ok(cbfs_jv_num(cbfs_jv_get(m->items[2], "lag"), &d) < 0, "\"unknown\" is no number");
    ok(cbfs_jv_truthy(cbfs_jv_get(cbfs_jv_get(m->items[1], "tags"), "nofailover")), "true is true");
    ok(!cbfs_jv_truthy(cbfs_jv_get(cbfs_jv_get(m->items[0], "tags"), "nofailover")),
       "an absent tag is not");
    is_str(cbfs_jv_str(cbfs_jv_get(v, "scope")), "demo", "a later key");
    ok(cbfs_jv_get(v, "nothing") == NULL && cbfs_jv_get(NULL, "x") == NULL, "absent keys");
    cbfs_jv_free(v);
}

static void test_strings_and_numbers(void)
{
    CbfsJv *v = parse(" [\"a\\\"b\\\\c\\/d\\n\", \"\\u00e9\\u20ac\\ud83d\\ude00\", -0.5e2, 0, 1E3,"
                      " true, false, null, {}, []] ");
    double d;
    ok(v && v->n == 10, "an array of ten values");
    if (!v || v->n != 10) {
        cbfs_jv_free(v);
        return;
    }
    is_str(cbfs_jv_str(v->items[0]), "a\"b\\c/d\n", "escapes");
    is_str(cbfs_jv_str(v->items[1]), "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
           "\\u escapes and a surrogate pair become UTF-8");
    ok(cbfs_jv_num(v->items[2], &d) == 0 && d == -50, "-0.5e2");
    ok(cbfs_jv_num(v->items[4], &d) == 0 && d == 1000, "1E3");
    ok(v->items[5]->type == CBFS_JV_BOOL && v->items[5]->b, "true");
    ok(v->items[7]->type == CBFS_JV_NULL, "null");
    ok(v->items[8]->type == CBFS_JV_OBJECT && v->items[8]->n == 0, "an empty object");
    cbfs_jv_free(v);
}

static void test_writer_round_trip(void)
{
    CbfsJson j;
    CbfsJv *v;
    cbfs_json_init(&j);
    cbfs_json_begin_object(&j);
    cbfs_json_key(&j, "label");
    cbfs_json_string(&j, "tab\there \"quoted\" \x01");
    cbfs_json_key(&j, "n");
    cbfs_json_uint(&j, 123456789012ull);
    cbfs_json_end_object(&j);
    v = parse(j.out.data);
    ok(v != NULL, "what the writer writes parses");
    is_str(cbfs_jv_str(cbfs_jv_get(v, "label")), "tab\there \"quoted\" \x01", "... a string back");
    cbfs_jv_free(v);
    cbfs_json_release(&j);
}

static void test_malformed(void)
{
    static const char *const bad[] = {
        "",      "{", "[1,]",  "{\"a\" 1}", "{\"a\":}",    "tru",      "\"abc",  "01",
        "1.",    "-", "[1] x", "\"\\x\"",   "\"\\ud800\"", "\"a\nb\"", "{1: 2}", "<html></html>",
        "1e999",
    };
    char deep[200];
    CbfsError err;
    CbfsJv *v = NULL;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cbfs_error_init(&err);
        v = NULL;
        ok(cbfs_jv_parse(bad[i], strlen(bad[i]), &v, &err) < 0 && v == NULL &&
               strncmp(err.msg, "invalid JSON at offset ", 23) == 0,
           "refused: %s (%s)", show(bad[i]), err.msg);
    }
    memset(deep, '[', sizeof(deep) - 1);
    deep[sizeof(deep) - 1] = '\0';
    cbfs_error_init(&err);
    ok(cbfs_jv_parse(deep, strlen(deep), &v, &err) < 0 && strstr(err.msg, "nested too deeply"),
       "nesting is bounded");
}

int main(void)
{
    test_patroni_cluster();
    test_strings_and_numbers();
    test_writer_round_trip();
    test_malformed();
    return done_testing();
}
