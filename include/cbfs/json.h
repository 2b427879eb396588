/*
 * json.h - a minimal JSON writer for --json output (commas and nesting are
 * tracked for the caller; strings are escaped per RFC 8259), and a parser
 * for the small documents cbfs reads (Patroni's REST API): a tree of
 * values, bounded in depth.
 */
#ifndef CBFS_JSON_H
#define CBFS_JSON_H

#include <stdbool.h>
#include <stdint.h>

#include "cbfs/error.h"
#include "cbfs/util.h"

typedef struct CbfsJson {
    CbfsBuf out; /* the text so far */
    int depth;
    bool need_comma[32]; /* per nesting level: a value was already written */
    bool after_key;      /* a key was just written: no comma before the value */
} CbfsJson;

void cbfs_json_init(CbfsJson *j);
void cbfs_json_release(CbfsJson *j);
void cbfs_json_begin_object(CbfsJson *j);
void cbfs_json_end_object(CbfsJson *j);
void cbfs_json_begin_array(CbfsJson *j);
void cbfs_json_end_array(CbfsJson *j);
void cbfs_json_key(CbfsJson *j, const char *key);
void cbfs_json_string(CbfsJson *j, const char *s); /* NULL writes null */
void cbfs_json_int(CbfsJson *j, int64_t v);
void cbfs_json_uint(CbfsJson *j, uint64_t v);
void cbfs_json_double(CbfsJson *j, double v);
void cbfs_json_bool(CbfsJson *j, bool v);

/* ---- parsing (json_parse.c) ---- */

enum cbfs_jv_type {
    CBFS_JV_NULL,
    CBFS_JV_BOOL,
    CBFS_JV_NUMBER,
    CBFS_JV_STRING,
    CBFS_JV_ARRAY,
    CBFS_JV_OBJECT
};

typedef struct CbfsJv {
    enum cbfs_jv_type type;
    bool b;
    double num;
    char *str;             /* STRING (NUL-terminated; an embedded \u0000 ends it) */
    struct CbfsJv **items; /* ARRAY and OBJECT values */
    char **keys;           /* OBJECT keys */
    size_t n;
} CbfsJv;

/* Parse text (len bytes: one value, surrounded by white space only).
 * Errors: EBADMSG with "invalid JSON at offset N: what" (no err code set
 * beyond CBFS_EXIT_ERROR; callers prefix their context). */
int cbfs_jv_parse(const char *text, size_t len, CbfsJv **ret, CbfsError *err);
void cbfs_jv_free(CbfsJv *v);
/* Object member by key (the first), or NULL; NULL-safe. */
const CbfsJv *cbfs_jv_get(const CbfsJv *obj, const char *key);
/* The string, or NULL when v is not a string; NULL-safe. */
const char *cbfs_jv_str(const CbfsJv *v);
/* The number: 0 when v is a number, -1 otherwise; NULL-safe. */
int cbfs_jv_num(const CbfsJv *v, double *ret);
/* True only for the JSON value true, or a string cbfs_parse_bool takes as
 * true. */
bool cbfs_jv_truthy(const CbfsJv *v);

#endif
