/*
 * sigv4.c - AWS Signature Version 4 (Authorization header form).
 *
 * Input strings are borrowed and never changed; every intermediate string is
 * built in a CbfsBuf and freed here.  Invariants kept:
 *   - the secret key only ever reaches HMAC: it is copied once into the
 *     "AWS4"+secret key buffer, which is wiped before it is freed, and it is
 *     never formatted into a message;
 *   - derived keys (kDate, kRegion, kService, the signing key) live on the
 *     stack and are wiped with OPENSSL_cleanse() before returning;
 *   - a value that would let one field of the canonical request spill into
 *     the next (a line break in a header value, a '/' in the scope) is
 *     refused, never escaped, so a signature always covers what is sent.
 * HMAC and SHA-256 failures (out of memory inside OpenSSL) abort, as
 * cbfs_sha256() does.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "cbfs/sigv4.h"
#include "cbfs/util.h"

/* One signed header once its name is lowercased and its value trimmed. */
typedef struct Header {
    char *name;   /* lowercase; owned */
    char *value;  /* trimmed, inner runs of blanks as one space; owned */
    size_t order; /* position in the caller's list: same-name values keep it */
} Header;

/* One query parameter once encoded. */
typedef struct Param {
    char *name;  /* encoded; owned */
    char *value; /* encoded; owned */
} Param;

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

/* RFC 9110 tchar: the bytes an HTTP method or header name may hold. */
static bool is_tchar(unsigned char c)
{
    return is_unreserved(c) || (c != '\0' && strchr("!#$%&'*+^`|", c) != NULL);
}

static void encode_into(CbfsBuf *b, const char *s, size_t len, bool keep_slash)
{
    static const char digits[] = "0123456789ABCDEF";

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s[i];
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            cbfs_buf_append(b, &s[i], 1);
        } else {
            char esc[3] = {'%', digits[c >> 4], digits[c & 15]};
            cbfs_buf_append(b, esc, sizeof(esc));
        }
    }
}

char *cbfs_sigv4_uri_encode(const char *s, bool keep_slash)
{
    CbfsBuf b;

    cbfs_buf_init(&b);
    encode_into(&b, s, strlen(s), keep_slash);
    return b.data;
}

int cbfs_sigv4_format_date(time_t t, char out[CBFS_SIGV4_DATE_LEN])
{
    struct tm tm;

    out[0] = '\0';
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 1 || tm.tm_year + 1900 > 9999)
        return -EOVERFLOW;
    if (strftime(out, CBFS_SIGV4_DATE_LEN, "%Y%m%dT%H%M%SZ", &tm) != CBFS_SIGV4_DATE_LEN - 1)
        return -EOVERFLOW;
    return 0;
}

/* s, at most 64 bytes of it, with anything but printable ASCII as '?': for
 * quoting a caller's name in a one-line message. */
static const char *printable(const char *s, char buf[68])
{
    size_t n = 0;

    for (; *s && n < 64; s++)
        buf[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    if (*s) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

/* ---- canonical URI ---- */

static void canonical_uri_s3(CbfsBuf *b, const char *path)
{
    cbfs_buf_append(b, "/", 1);
    if (path[0] == '/')
        path++;
    encode_into(b, path, strlen(path), true);
}

/* RFC 3986 remove_dot_segments, plus dropping empty segments ("//"), as the
 * generic services do; then each segment encoded. */
static void canonical_uri_generic(CbfsBuf *b, const char *path)
{
    size_t cap = 1, n = 0;
    const char **seg;
    size_t *seg_len;
    bool trailing = false;

    for (const char *p = path; *p; p++)
        cap += *p == '/';
    seg = cbfs_xmalloc(cap * sizeof(*seg));
    seg_len = cbfs_xmalloc(cap * sizeof(*seg_len));

    for (const char *p = path; *p;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t) (end - p) : strlen(p);

        if (len == 0 || (len == 1 && p[0] == '.')) {
            trailing = true;
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            if (n > 0)
                n--;
            trailing = true;
        } else {
            seg[n] = p;
            seg_len[n] = len;
            n++;
            trailing = false;
        }
        p += len;
        if (*p == '/') {
            p++;
            trailing = true; /* an empty last segment: the path ends with '/' */
        }
    }

    cbfs_buf_append(b, "/", 1);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            cbfs_buf_append(b, "/", 1);
        encode_into(b, seg[i], seg_len[i], false);
    }
    if (n > 0 && trailing)
        cbfs_buf_append(b, "/", 1);
    free(seg);
    free(seg_len);
}

/* ---- canonical query ---- */

static int param_cmp(const void *a, const void *b)
{
    const Param *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static void canonical_query(CbfsBuf *b, const CbfsSigv4Pair *query, size_t n)
{
    Param *p;

    if (n == 0)
        return;
    p = cbfs_xcalloc(n, sizeof(*p));
    for (size_t i = 0; i < n; i++) {
        p[i].name = cbfs_sigv4_uri_encode(query[i].name ? query[i].name : "", false);
        p[i].value = cbfs_sigv4_uri_encode(query[i].value ? query[i].value : "", false);
    }
    qsort(p, n, sizeof(*p), param_cmp);
    for (size_t i = 0; i < n; i++) {
        cbfs_buf_printf(b, "%s%s=%s", i ? "&" : "", p[i].name, p[i].value);
        free(p[i].name);
        free(p[i].value);
    }
    free(p);
}

/* ---- canonical headers ---- */

static int header_cmp(const void *a, const void *b)
{
    const Header *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* value without leading and trailing blanks, each inner run of blanks (space,
 * tab) as one space.  Caller frees. */
static char *trim_all(const char *value)
{
    size_t len = strlen(value), n = 0;
    char *out = cbfs_xmalloc(len + 1);
    bool blank = false;

    for (const char *s = value; *s; s++) {
        if (*s == ' ' || *s == '\t') {
            blank = n > 0;
            continue;
        }
        if (blank)
            out[n++] = ' ';
        blank = false;
        out[n++] = *s;
    }
    out[n] = '\0';
    return out;
}

static void headers_free(Header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

/* in as a Header in *out (freed by headers_free() even on failure), or
 * -EINVAL and err if it cannot be signed. */
static int header_parse(const CbfsSigv4Pair *in, size_t order, const char *payload_hash,
                        Header *out, CbfsError *err)
{
    const char *name = in->name ? in->name : "";
    const char *value = in->value ? in->value : "";
    char show[68];

    if (!name[0])
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR, "header name is empty");
    for (const char *s = name; *s; s++)
        if (!is_tchar((unsigned char) *s))
            return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                                  "header name \"%s\" is not an HTTP token", printable(name, show));
    /* A line break would forge the next canonical header; other control
     * characters cannot be sent. */
    for (const char *s = value; *s; s++) {
        unsigned char c = (unsigned char) *s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                                  "header \"%s\" has a control character in its value",
                                  printable(name, show));
    }
    out->name = cbfs_xstrdup(name);
    for (char *s = out->name; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char) (*s - 'A' + 'a');
    out->value = trim_all(value);
    out->order = order;
    /* S3 checks the header against the body; a mismatch here would only show
     * up as a 403 SignatureDoesNotMatch. */
    if (strcmp(out->name, "x-amz-content-sha256") == 0 && strcmp(out->value, payload_hash) != 0)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                              "header \"x-amz-content-sha256\" does not match the payload hash");
    return 0;
}

static bool is_payload_hash(const char *s)
{
    size_t n = 0;
    bool hex = true, marker = true;

    for (; s[n]; n++) {
        char c = s[n];
        hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
        marker = marker && ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-');
    }
    /* Markers: UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, ...;
     * requiring "PAYLOAD" keeps uppercase hex (a caller's bug) out. */
    return (hex && n == 2 * CBFS_SHA256_LEN) || (marker && strstr(s, "PAYLOAD") != NULL);
}

int cbfs_sigv4_canonical_request(const CbfsSigv4Request *req, char **ret_creq,
                                 char **ret_signed_headers, CbfsError *err)
{
    const char *method = req->method ? req->method : "";
    const char *path = req->path ? req->path : "";
    const char *payload_hash = req->payload_hash ? req->payload_hash : "";
    Header *h = NULL;
    CbfsBuf creq, signed_headers;
    bool have_host = false;
    char show[68];

    *ret_creq = NULL;
    if (ret_signed_headers)
        *ret_signed_headers = NULL;

    if (!method[0])
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR, "HTTP method is empty");
    for (const char *s = method; *s; s++)
        if (*s < 'A' || *s > 'Z')
            return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                                  "HTTP method \"%s\" is not in uppercase letters",
                                  printable(method, show));
    if (!is_payload_hash(payload_hash))
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                              "payload hash \"%s\" is neither 64 lowercase hex digits nor a "
                              "marker such as " CBFS_SIGV4_UNSIGNED_PAYLOAD,
                              printable(payload_hash, show));

    if (req->n_headers > 0)
        h = cbfs_xcalloc(req->n_headers, sizeof(*h));
    for (size_t i = 0; i < req->n_headers; i++) {
        int rc = header_parse(&req->headers[i], i, payload_hash, &h[i], err);
        if (rc < 0) {
            headers_free(h, i + 1);
            return rc;
        }
        have_host = have_host || strcmp(h[i].name, "host") == 0;
    }
    if (!have_host) {
        headers_free(h, req->n_headers);
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR, "the host header must be signed");
    }
    qsort(h, req->n_headers, sizeof(*h), header_cmp);

    cbfs_buf_init(&creq);
    cbfs_buf_init(&signed_headers);
    cbfs_buf_printf(&creq, "%s\n", method);
    if (req->path_style == CBFS_SIGV4_PATH_GENERIC)
        canonical_uri_generic(&creq, path);
    else
        canonical_uri_s3(&creq, path);
    cbfs_buf_append(&creq, "\n", 1);
    canonical_query(&creq, req->query, req->n_query);
    cbfs_buf_append(&creq, "\n", 1);
    for (size_t i = 0; i < req->n_headers; i++) {
        bool first = i == 0 || strcmp(h[i - 1].name, h[i].name) != 0;
        bool last = i + 1 == req->n_headers || strcmp(h[i + 1].name, h[i].name) != 0;

        if (first) {
            cbfs_buf_printf(&creq, "%s:", h[i].name);
            cbfs_buf_printf(&signed_headers, "%s%s", i ? ";" : "", h[i].name);
        } else {
            cbfs_buf_append(&creq, ",", 1);
        }
        cbfs_buf_printf(&creq, "%s%s", h[i].value, last ? "\n" : "");
    }
    cbfs_buf_printf(&creq, "\n%s\n%s", signed_headers.data, payload_hash);
    headers_free(h, req->n_headers);

    *ret_creq = creq.data;
    if (ret_signed_headers)
        *ret_signed_headers = signed_headers.data;
    else
        cbfs_buf_release(&signed_headers);
    return 0;
}

/* ---- string to sign, key, signature ---- */

char *cbfs_sigv4_string_to_sign(const char *amz_date, const char *region, const char *service,
                                const char *canonical_request)
{
    uint8_t digest[CBFS_SHA256_LEN];
    char hex[CBFS_SIGV4_HEX_LEN];

    cbfs_sha256(canonical_request, strlen(canonical_request), digest);
    cbfs_hex_encode(digest, sizeof(digest), hex);
    return cbfs_xasprintf(CBFS_SIGV4_ALGORITHM "\n%s\n%.8s/%s/%s/aws4_request\n%s", amz_date,
                          amz_date, region, service, hex);
}

static void hmac_sha256(const void *key, size_t key_len, const char *data, size_t data_len,
                        uint8_t out[CBFS_SHA256_LEN])
{
    unsigned int n = CBFS_SHA256_LEN;

    if (key_len > INT_MAX ||
        !HMAC(EVP_sha256(), key, (int) key_len, (const unsigned char *) data, data_len, out, &n) ||
        n != CBFS_SHA256_LEN)
        abort();
}

void cbfs_sigv4_signing_key(const char *secret_access_key, const char *date, const char *region,
                            const char *service, uint8_t out[CBFS_SHA256_LEN])
{
    size_t secret_len = strlen(secret_access_key);
    size_t k_len = 4 + secret_len;
    char *k_secret = cbfs_xmalloc(k_len + 1);
    uint8_t k_date[CBFS_SHA256_LEN], k_region[CBFS_SHA256_LEN], k_service[CBFS_SHA256_LEN];

    memcpy(k_secret, "AWS4", 4);
    memcpy(k_secret + 4, secret_access_key, secret_len + 1);
    hmac_sha256(k_secret, k_len, date, strnlen(date, 8), k_date);
    OPENSSL_cleanse(k_secret, k_len);
    free(k_secret);
    hmac_sha256(k_date, sizeof(k_date), region, strlen(region), k_region);
    hmac_sha256(k_region, sizeof(k_region), service, strlen(service), k_service);
    hmac_sha256(k_service, sizeof(k_service), "aws4_request", strlen("aws4_request"), out);
    OPENSSL_cleanse(k_date, sizeof(k_date));
    OPENSSL_cleanse(k_region, sizeof(k_region));
    OPENSSL_cleanse(k_service, sizeof(k_service));
}

void cbfs_sigv4_signature(const uint8_t key[CBFS_SHA256_LEN], const char *string_to_sign,
                          char out[CBFS_SIGV4_HEX_LEN])
{
    uint8_t mac[CBFS_SHA256_LEN];

    hmac_sha256(key, CBFS_SHA256_LEN, string_to_sign, strlen(string_to_sign), mac);
    cbfs_hex_encode(mac, sizeof(mac), out);
}

/* ---- the whole signature ---- */

/* A credential-scope part (access key id, region, service): printable ASCII
 * without the ' ', '/' and ',' that separate the Authorization fields. */
static bool is_scope_part(const char *s)
{
    if (!s || !s[0])
        return false;
    for (; *s; s++)
        if (*s <= 0x20 || *s >= 0x7f || *s == '/' || *s == ',')
            return false;
    return true;
}

int cbfs_sigv4_sign(const CbfsSigv4Signer *signer, const CbfsSigv4Request *req, time_t now,
                    char ret_amz_date[CBFS_SIGV4_DATE_LEN], char **ret_authorization,
                    CbfsError *err)
{
    bool with_token = signer->session_token && signer->session_token[0];
    char amz_date[CBFS_SIGV4_DATE_LEN], signature[CBFS_SIGV4_HEX_LEN], show[68];
    uint8_t key[CBFS_SHA256_LEN];
    CbfsSigv4Pair *headers;
    CbfsSigv4Request full;
    char *creq, *signed_headers, *sts;
    size_t n;
    int rc;

    *ret_authorization = NULL;
    if (ret_amz_date)
        ret_amz_date[0] = '\0';

    /* Name the field, never its content: these are credentials. */
    if (!is_scope_part(signer->access_key_id))
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                              "access key id is empty or has a character that cannot be signed");
    if (!signer->secret_access_key || !signer->secret_access_key[0])
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR, "secret access key is empty");
    if (with_token) {
        for (const char *s = signer->session_token; *s; s++)
            if ((unsigned char) *s < 0x20 || *s == 0x7f)
                return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                                      "session token has a control character");
    }
    if (!is_scope_part(signer->region))
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                              "region \"%s\" is empty or has a character that cannot be signed",
                              printable(signer->region ? signer->region : "", show));
    if (!is_scope_part(signer->service))
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                              "service \"%s\" is empty or has a character that cannot be signed",
                              printable(signer->service ? signer->service : "", show));
    for (size_t i = 0; i < req->n_headers; i++) {
        const char *name = req->headers[i].name ? req->headers[i].name : "";
        if (strcasecmp(name, "x-amz-date") == 0 || strcasecmp(name, "x-amz-security-token") == 0)
            return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                                  "header \"%s\" is added by the signer and must not be listed",
                                  printable(name, show));
        if (strcasecmp(name, "authorization") == 0)
            return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                                  "header \"authorization\" cannot be signed");
    }
    rc = cbfs_sigv4_format_date(now, amz_date);
    if (rc < 0)
        return cbfs_error_set(err, -rc, CBFS_EXIT_ERROR,
                              "request time %lld cannot be written as an x-amz-date",
                              (long long) now);

    n = req->n_headers;
    headers = cbfs_xmalloc((n + 2) * sizeof(*headers));
    if (n > 0)
        memcpy(headers, req->headers, n * sizeof(*headers));
    headers[n++] = (CbfsSigv4Pair){"x-amz-date", amz_date};
    if (with_token)
        headers[n++] = (CbfsSigv4Pair){"x-amz-security-token", signer->session_token};
    full = *req;
    full.headers = headers;
    full.n_headers = n;
    rc = cbfs_sigv4_canonical_request(&full, &creq, &signed_headers, err);
    free(headers);
    if (rc < 0)
        return rc;

    sts = cbfs_sigv4_string_to_sign(amz_date, signer->region, signer->service, creq);
    cbfs_sigv4_signing_key(signer->secret_access_key, amz_date, signer->region, signer->service,
                           key);
    cbfs_sigv4_signature(key, sts, signature);
    OPENSSL_cleanse(key, sizeof(key));

    *ret_authorization =
        cbfs_xasprintf(CBFS_SIGV4_ALGORITHM " Credential=%s/%.8s/%s/%s/aws4_request, "
                                            "SignedHeaders=%s, Signature=%s",
                       signer->access_key_id, amz_date, signer->region, signer->service,
                       signed_headers, signature);
    if (ret_amz_date)
        memcpy(ret_amz_date, amz_date, CBFS_SIGV4_DATE_LEN);
    free(creq);
    free(signed_headers);
    free(sts);
    return 0;
}
