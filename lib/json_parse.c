/*
 * json_parse.c - a small recursive-descent JSON parser (RFC 8259) for the
 * documents cbfs reads from other programs.  Depth is bounded, numbers are
 * doubles, \u escapes (with surrogate pairs) become UTF-8.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/json.h"

#define DEPTH_MAX 64

typedef struct Parser {
    const char *s;
    size_t len, pos;
    CbfsError *err;
} Parser;

static int fail(Parser *p, const char *what)
{
    return cbfs_error_set(p->err, EBADMSG, CBFS_EXIT_ERROR, "invalid JSON at offset %zu: %s",
                          p->pos, what);
}

static void skip_ws(Parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static bool literal(Parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return false;
    p->pos += n;
    return true;
}

static int hex4(Parser *p, unsigned *ret)
{
    unsigned v = 0;
    if (p->len - p->pos < 4)
        return fail(p, "short \\u escape");
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned) (c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned) (c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned) (c - 'A' + 10);
        else
            return fail(p, "bad \\u escape");
    }
    *ret = v;
    return 0;
}

static void put_utf8(CbfsBuf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char) cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char) (0xc0 | (cp >> 6));
        u[1] = (char) (0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char) (0xe0 | (cp >> 12));
        u[1] = (char) (0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char) (0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char) (0xf0 | (cp >> 18));
        u[1] = (char) (0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char) (0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char) (0x80 | (cp & 0x3f));
        n = 4;
    }
    cbfs_buf_append(b, u, n);
}

/* A string; p->pos is at the opening quote.  *ret: caller frees. */
static int string(Parser *p, char **ret)
{
    CbfsBuf b;
    int rc = 0;

    p->pos++;
    cbfs_buf_init(&b);
    for (;;) {
        char c;
        if (p->pos >= p->len) {
            rc = fail(p, "unterminated string");
            break;
        }
        c = p->s[p->pos++];
        if (c == '"')
            break;
        if ((unsigned char) c < 0x20) {
            rc = fail(p, "control character in string");
            break;
        }
        if (c != '\\') {
            cbfs_buf_append(&b, &c, 1);
            continue;
        }
        if (p->pos >= p->len) {
            rc = fail(p, "unterminated string");
            break;
        }
        c = p->s[p->pos++];
        if (c == 'u') {
            unsigned cp, lo;
            if ((rc = hex4(p, &cp)) < 0)
                break;
            if (cp >= 0xd800 && cp < 0xdc00) {
                if (!literal(p, "\\u") || (rc = hex4(p, &lo)) < 0 || lo < 0xdc00 || lo > 0xdfff) {
                    rc = rc < 0 ? rc : fail(p, "unpaired surrogate");
                    break;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                rc = fail(p, "unpaired surrogate");
                break;
            }
            put_utf8(&b, cp);
        } else {
            /* the one-character escapes and what they stand for */
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            const char *e = c ? strchr(from, c) : NULL;
            if (!e) {
                rc = fail(p, "bad escape");
                break;
            }
            cbfs_buf_append(&b, &to[e - from], 1);
        }
    }
    if (rc < 0) {
        cbfs_buf_release(&b);
        return rc;
    }
    *ret = b.data; /* handed over, NUL-terminated */
    return 0;
}

static int value(Parser *p, int depth, CbfsJv **ret);

static int container(Parser *p, int depth, bool object, CbfsJv *v)
{
    char close = object ? '}' : ']';
    int rc;

    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        CbfsJv *item = NULL;
        skip_ws(p);
        if (object) {
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return fail(p, "expected a key");
            if ((rc = string(p, &key)) < 0)
                return rc;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(key);
                return fail(p, "expected ':'");
            }
            p->pos++;
        }
        if ((rc = value(p, depth + 1, &item)) < 0) {
            free(key);
            return rc;
        }
        v->items = cbfs_xrealloc(v->items, (v->n + 1) * sizeof(CbfsJv *));
        if (object)
            v->keys = cbfs_xrealloc(v->keys, (v->n + 1) * sizeof(char *));
        v->items[v->n] = item;
        if (object)
            v->keys[v->n] = key;
        v->n++;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return 0;
        }
        return fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int number(Parser *p, CbfsJv *v)
{
    size_t start = p->pos;
    char buf[64], *end;

    if (p->pos < p->len && p->s[p->pos] == '-')
        p->pos++;
    if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
        return fail(p, "bad number");
    if (p->s[p->pos] == '0')
        p->pos++;
    else
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
            return fail(p, "bad number");
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
            return fail(p, "bad number");
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
    }
    if (p->pos - start >= sizeof(buf))
        return fail(p, "number too long");
    memcpy(buf, p->s + start, p->pos - start);
    buf[p->pos - start] = '\0';
    v->num = strtod(buf, &end);
    if (!isfinite(v->num))
        return fail(p, "number out of range");
    return 0;
}

static int value(Parser *p, int depth, CbfsJv **ret)
{
    CbfsJv *v;
    int rc = 0;

    if (depth > DEPTH_MAX)
        return fail(p, "nested too deeply");
    skip_ws(p);
    if (p->pos >= p->len)
        return fail(p, "expected a value");
    v = cbfs_xcalloc(1, sizeof(*v));
    switch (p->s[p->pos]) {
    case '{':
        v->type = CBFS_JV_OBJECT;
        rc = container(p, depth, true, v);
        break;
    case '[':
        v->type = CBFS_JV_ARRAY;
        rc = container(p, depth, false, v);
        break;
    case '"':
        v->type = CBFS_JV_STRING;
        rc = string(p, &v->str);
        break;
    case 't':
    case 'f':
        v->type = CBFS_JV_BOOL;
        v->b = p->s[p->pos] == 't';
        if (!literal(p, v->b ? "true" : "false"))
            rc = fail(p, "bad literal");
        break;
    case 'n':
        if (!literal(p, "null"))
            rc = fail(p, "bad literal");
        break;
    default:
        v->type = CBFS_JV_NUMBER;
        rc = number(p, v);
    }
    if (rc < 0) {
        cbfs_jv_free(v);
        return rc;
    }
    *ret = v;
    return 0;
}

int cbfs_jv_parse(const char *text, size_t len, CbfsJv **ret, CbfsError *err)
{
    Parser p = {text, len, 0, err};
    CbfsJv *v = NULL;
    int rc = value(&p, 0, &v);
    if (rc < 0)
        return rc;
    skip_ws(&p);
    if (p.pos != p.len) {
        cbfs_jv_free(v);
        return fail(&p, "text after the value");
    }
    *ret = v;
    return 0;
}

void cbfs_jv_free(CbfsJv *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++) {
        cbfs_jv_free(v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    free(v);
}

const CbfsJv *cbfs_jv_get(const CbfsJv *obj, const char *key)
{
    if (!obj || obj->type != CBFS_JV_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return obj->items[i];
    return NULL;
}

const char *cbfs_jv_str(const CbfsJv *v)
{
    return v && v->type == CBFS_JV_STRING ? v->str : NULL;
}

int cbfs_jv_num(const CbfsJv *v, double *ret)
{
    if (!v || v->type != CBFS_JV_NUMBER)
        return -1;
    *ret = v->num;
    return 0;
}

bool cbfs_jv_truthy(const CbfsJv *v)
{
    if (!v)
        return false;
    if (v->type == CBFS_JV_BOOL)
        return v->b;
    if (v->type == CBFS_JV_STRING) {
        bool b;
        return cbfs_parse_bool(v->str, &b) == 0 && b;
    }
    return false;
}
