/*
 * json.h - a minimal JSON writer for --json output.  Commas and nesting are
 * tracked for the caller; strings are escaped per RFC 8259.
 */
#ifndef CBFS_JSON_H
#define CBFS_JSON_H

#include <stdbool.h>
#include <stdint.h>

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

#endif
