/*
 * json.c - JSON text writer.
 */
#include <stdio.h>
#include <string.h>

#include "cbfs/json.h"

void cbfs_json_init(CbfsJson *j)
{
    memset(j, 0, sizeof(*j));
    cbfs_buf_init(&j->out);
}

void cbfs_json_release(CbfsJson *j)
{
    cbfs_buf_release(&j->out);
}

static void value_start(CbfsJson *j)
{
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (j->need_comma[j->depth])
        cbfs_buf_append(&j->out, ",", 1);
    j->need_comma[j->depth] = true;
}

static void open(CbfsJson *j, const char *c)
{
    value_start(j);
    cbfs_buf_append(&j->out, c, 1);
    j->depth++;
    j->need_comma[j->depth] = false;
}

static void close_(CbfsJson *j, const char *c)
{
    j->depth--;
    cbfs_buf_append(&j->out, c, 1);
}

void cbfs_json_begin_object(CbfsJson *j)
{
    open(j, "{");
}

void cbfs_json_end_object(CbfsJson *j)
{
    close_(j, "}");
}

void cbfs_json_begin_array(CbfsJson *j)
{
    open(j, "[");
}

void cbfs_json_end_array(CbfsJson *j)
{
    close_(j, "]");
}

static void put_string(CbfsJson *j, const char *s)
{
    cbfs_buf_append(&j->out, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char) c};
            cbfs_buf_append(&j->out, e, 2);
        } else if (c == '\n') {
            cbfs_buf_append(&j->out, "\\n", 2);
        } else if (c < 0x20) {
            cbfs_buf_printf(&j->out, "\\u%04x", c);
        } else {
            cbfs_buf_append(&j->out, s, 1);
        }
    }
    cbfs_buf_append(&j->out, "\"", 1);
}

void cbfs_json_key(CbfsJson *j, const char *key)
{
    value_start(j);
    put_string(j, key);
    cbfs_buf_append(&j->out, ":", 1);
    j->after_key = true;
}

void cbfs_json_string(CbfsJson *j, const char *s)
{
    value_start(j);
    if (s)
        put_string(j, s);
    else
        cbfs_buf_append(&j->out, "null", 4);
}

void cbfs_json_int(CbfsJson *j, int64_t v)
{
    value_start(j);
    cbfs_buf_printf(&j->out, "%lld", (long long) v);
}

void cbfs_json_uint(CbfsJson *j, uint64_t v)
{
    value_start(j);
    cbfs_buf_printf(&j->out, "%llu", (unsigned long long) v);
}

void cbfs_json_double(CbfsJson *j, double v)
{
    value_start(j);
    cbfs_buf_printf(&j->out, "%.3f", v);
}

void cbfs_json_bool(CbfsJson *j, bool v)
{
    value_start(j);
    cbfs_buf_append(&j->out, v ? "true" : "false", v ? 4 : 5);
}
