/*
 * store_s3.c - the S3 driver: objects under s3://bucket/prefix/ on any
 * S3-compatible store, over libcurl, each request signed with SigV4.
 *
 * Settings (config.h: environment over configuration file):
 *   s3_endpoint           AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL
 *                         (default https://s3.<region>.amazonaws.com)
 *   s3_region             AWS_REGION, AWS_DEFAULT_REGION (default us-east-1)
 *   s3_uri_style          CBFS_S3_URI_STYLE: path or virtual (default:
 *                         virtual for AWS, path with an endpoint of one's own)
 *   s3_access_key_id      AWS_ACCESS_KEY_ID
 *   s3_secret_access_key  AWS_SECRET_ACCESS_KEY (secret)
 *   s3_session_token      AWS_SESSION_TOKEN (secret)
 *   s3_ca_file            AWS_CA_BUNDLE: CA certificates for HTTPS
 *   s3_part_size          CBFS_S3_PART_SIZE: multipart part size (64 MiB; a
 *                         pack, sealed at 16 MiB, goes up in one PUT)
 *   s3_max_attempts       CBFS_S3_MAX_ATTEMPTS: tries per request (10)
 *   s3_retry_base_ms      CBFS_S3_RETRY_BASE_MS: first backoff (100 ms)
 *   s3_timeout            CBFS_S3_TIMEOUT: seconds a request may take, its
 *                         retries included (0: none; a command may set its
 *                         own default, cbfs_store_s3_timeout); while it
 *                         runs, retries go on past s3_max_attempts
 * HTTPS certificates are verified; plain HTTP only with an http:// endpoint.
 *
 * Requests: a pool of curl handles keeps connections alive across requests
 * and threads (every op may run on many threads at once).  Failures that
 * may pass — 5xx, 429 and SlowDown, timeouts, refused or reset connections,
 * short reads — are retried with exponential backoff and jitter (a sleep
 * between half the window and the whole of it), up to
 * s3_max_attempts or until s3_timeout has passed; the last failure names
 * the operation, the object and the last status.  Under a timeout each
 * attempt is also cut at the time left, so a store that stops answering
 * (connections accepted, nothing said) cannot hold a caller past it.  No message or log line
 * carries a credential.
 *
 * Create-once writes: PUT with If-None-Match: * (412: the object exists).
 * A store that answers 501 to it is remembered, and from then on a write
 * asks HEAD first, PUTs, and checks with HEAD that the ETag is its own; a
 * concurrent writer of different content is then reported as -EEXIST.  A
 * 412 is checked the same way: the object may be our own, stored by an
 * attempt whose answer was lost (libcurl itself resends a request once
 * when a reused connection breaks before the answer).  Objects larger than the part size go up in a
 * multipart upload, after the same HEAD check.  replace() (the config
 * object, cbfs key change) is a plain PUT.
 *
 * libcurl is loaded at the first S3 location (dlopen), so that a local
 * repository's commands never pay for its dependencies.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cbfs/config.h"
#include "cbfs/sigv4.h"
#include "cbfs/store.h"
#include "cbfs/util.h"
#include "curl_api.h"

/* cbfs_store_s3_timeout: a command's default s3_timeout, or an override */
static unsigned timeout_default_s;
static bool timeout_override;

#define POOL_MAX       32
#define ERR_BODY_MAX   4096
#define BACKOFF_MAX_MS 5000
#define MD5_LEN        16

/* ---- the store ------------------------------------------------------------ */

typedef struct S3Store {
    CbfsStore base;
    char *bucket;
    char *prefix;    /* "" or "a/b" (no leading or trailing '/') */
    char *scheme;    /* "http" or "https" */
    char *host;      /* host[:port] of the endpoint */
    char *base_path; /* path of the endpoint URL, "" or "/x" */
    bool path_style;
    char *region;
    char *access_key;
    char *secret_key;
    char *token;
    char *ca_file;
    size_t part_size;
    int max_attempts;
    long retry_base_ms;
    long timeout_ms; /* 0: none */
    int conditional; /* atomic: 0 once the store answered 501 to If-None-Match */
    pthread_mutex_t pool_lock;
    CURL *pool[POOL_MAX];
    int npool;
} S3Store;

typedef struct S3Req {
    const char *method;
    const char *key; /* relative to the prefix; NULL: the bucket itself */
    CbfsSigv4Pair query[4];
    size_t n_query;
    char range[64];
    bool if_none_match;
    const uint8_t *body;
    size_t body_len;
    /* where a 2xx body goes: a fixed buffer (out, out_cap) or a CbfsBuf */
    uint8_t *out;
    size_t out_cap;
    CbfsBuf *out_buf;
    uint64_t skip; /* leading bytes to drop (a 200 answer to a ranged GET) */
    /* per attempt */
    uint64_t skip_left;
    size_t out_len;
    size_t body_pos;
    bool out_full; /* stopped on purpose: the caller has what it asked for */
    long status;
    char etag[80];
    uint64_t length; /* Content-Length of the answer */
    CbfsBuf err_body;
} S3Req;

static CURL *pool_get(S3Store *s)
{
    CURL *h = NULL;
    pthread_mutex_lock(&s->pool_lock);
    if (s->npool > 0)
        h = s->pool[--s->npool];
    pthread_mutex_unlock(&s->pool_lock);
    if (h)
        curl.easy_reset(h); /* keeps its live connection */
    else
        h = curl.easy_init();
    return h;
}

static void pool_put(S3Store *s, CURL *h)
{
    pthread_mutex_lock(&s->pool_lock);
    if (s->npool < POOL_MAX) {
        s->pool[s->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&s->pool_lock);
    if (h)
        curl.easy_cleanup(h);
}

/* "s3://bucket/prefix/key", how messages name an object. */
static char *object_name(const S3Store *s, const char *key)
{
    return cbfs_xasprintf("s3://%s/%s%s%s", s->bucket, s->prefix, *s->prefix && key ? "/" : "",
                          key ? key : "");
}

/* What a message says was not done: 'read object "s3://b/p/key"', or for
 * a request on the bucket (a listing) 'list objects under "s3://b/p"'. */
static char *subject(const S3Store *s, const char *verb, const char *key)
{
    char *name = object_name(s, key);
    char *text = key ? cbfs_xasprintf("%s object \"%s\"", verb, name)
                     : cbfs_xasprintf("%s objects under \"%s\"", verb, name);
    free(name);
    return text;
}

/* The object path in the bucket, unencoded: "prefix/key". */
static char *object_path(const S3Store *s, const char *key)
{
    if (!key)
        return cbfs_xstrdup("");
    return *s->prefix ? cbfs_xasprintf("%s/%s", s->prefix, key) : cbfs_xstrdup(key);
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    S3Req *r = arg;
    size_t len = size * n;
    if (len > 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* a new status line (after 100 Continue, or a redirect): start over */
        const char *sp = memchr(data, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->etag[0] = '\0';
        r->length = 0;
        r->err_body.len = 0;
    } else if (len > 15 && strncasecmp(data, "content-length:", 15) == 0) {
        char num[32];
        snprintf(num, sizeof(num), "%.*s", (int) (len - 15 < 31 ? len - 15 : 31), data + 15);
        r->length = strtoull(num, NULL, 10);
    } else if (len > 5 && strncasecmp(data, "etag:", 5) == 0) {
        size_t i = 5, j;
        while (i < len && (data[i] == ' ' || data[i] == '"'))
            i++;
        for (j = 0; i < len && data[i] != '"' && data[i] != '\r' && data[i] != '\n' &&
                    j + 1 < sizeof(r->etag);
             i++)
            r->etag[j++] = data[i];
        r->etag[j] = '\0';
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    S3Req *r = arg;
    size_t len = size * n;
    if (r->status < 200 || r->status >= 300) {
        if (r->err_body.len + len <= ERR_BODY_MAX)
            cbfs_buf_append(&r->err_body, data, len);
        return len;
    }
    if (r->skip_left) {
        size_t drop = r->skip_left < len ? (size_t) r->skip_left : len;
        r->skip_left -= drop;
        data += drop;
        len -= drop;
        if (!len)
            return size * n;
    }
    if (r->out_buf) {
        cbfs_buf_append(r->out_buf, data, len);
        r->out_len += len;
    } else if (r->out) {
        size_t room = r->out_cap - r->out_len;
        size_t take = len < room ? len : room;
        memcpy(r->out + r->out_len, data, take);
        r->out_len += take;
        if (take < len) {
            r->out_full = true;
            return 0; /* more than asked for: stop here, we have it all */
        }
    }
    return size * n;
}

static size_t on_upload(char *buf, size_t size, size_t n, void *arg)
{
    S3Req *r = arg;
    size_t room = size * n, left = r->body_len - r->body_pos;
    size_t take = left < room ? left : room;
    memcpy(buf, r->body + r->body_pos, take);
    r->body_pos += take;
    return take;
}

/* libcurl rewinds the body to send it again: after a redirect, or when it
 * resends a request whose reused connection broke before any answer
 * (without this it fails that request with CURLE_SEND_FAIL_REWIND). */
static int on_seek(void *arg, curl_off_t off, int origin)
{
    S3Req *r = arg;
    if (origin != SEEK_SET || off < 0 || (uint64_t) off > r->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    r->body_pos = (size_t) off;
    return CURL_SEEKFUNC_OK;
}

/* The <Code> of an S3 error body, or "". */
static void error_code(const CbfsBuf *body, char *out, size_t len)
{
    const char *b = body->data ? body->data : "", *s = strstr(b, "<Code>"), *e;
    out[0] = '\0';
    if (!s)
        return;
    s += 6;
    e = strstr(s, "</Code>");
    if (e && (size_t) (e - s) < len)
        snprintf(out, len, "%.*s", (int) (e - s), s);
}

static bool curl_retryable(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

static bool status_retryable(long status, const char *code)
{
    return (status >= 500 && status != 501) || status == 429 || status == 408 ||
           (status == 400 &&
            (strcmp(code, "RequestTimeout") == 0 || strcmp(code, "SlowDown") == 0));
}

/* Sleep before attempt `attempt` (2, 3, ...): full jitter over an
 * exponentially growing window. */
static void backoff(const S3Store *s, int attempt, long left_ms)
{
    long window = s->retry_base_ms << (attempt - 2 < 10 ? attempt - 2 : 10);
    long ms;
    struct timespec ts;
    unsigned int seed;
    /* differs between threads and between processes retrying together */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    seed = (unsigned int) (ts.tv_nsec ^ ts.tv_sec ^ ((unsigned long) getpid() * 2246822519u) ^
                           (pthread_self() * 2654435761u) ^ (unsigned long) attempt);
    if (window > BACKOFF_MAX_MS)
        window = BACKOFF_MAX_MS;
    ms = window / 2 + rand_r(&seed) % (window / 2 + 1);
    if (left_ms > 0 && ms > left_ms)
        ms = left_ms;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;
    nanosleep(&ts, NULL);
}

/* free() of a string that held a credential or a signature. */
static void wipe_free(char *p)
{
    if (p)
        OPENSSL_cleanse(p, strlen(p));
    free(p);
}

static char *hex_sha256(const uint8_t *data, size_t len)
{
    uint8_t sum[CBFS_SHA256_LEN];
    char *hex = cbfs_xmalloc(2 * CBFS_SHA256_LEN + 1);
    cbfs_sha256(data, len, sum);
    cbfs_hex_encode(sum, CBFS_SHA256_LEN, hex);
    return hex;
}

/* One attempt.  Returns the curl result; r->status holds the HTTP status. */
static CURLcode attempt(S3Store *s, S3Req *r, const char *payload_hash, long timeout_ms,
                        char *curl_msg, CbfsError *err, int *ret_sign_rc)
{
    char *path = object_path(s, r->key), *epath, *url, *auth = NULL, *line;
    char *host =
        s->path_style ? cbfs_xstrdup(s->host) : cbfs_xasprintf("%s.%s", s->bucket, s->host);
    char *sign_path = s->path_style ? cbfs_xasprintf("%s/%s/%s", s->base_path, s->bucket, path)
                                    : cbfs_xasprintf("%s/%s", s->base_path, path);
    char amz_date[CBFS_SIGV4_DATE_LEN];
    CbfsSigv4Pair headers[4];
    CbfsSigv4Signer signer = {s->access_key, s->secret_key, s->token, s->region, "s3"};
    CbfsSigv4Request sreq;
    struct curl_slist *hl = NULL;
    CbfsBuf q;
    size_t nh = 0;
    CURLcode c;
    CURL *h;

    /* the URL: the signed path, encoded once; the query in any order */
    epath = cbfs_sigv4_uri_encode(sign_path, true);
    cbfs_buf_init(&q);
    for (size_t i = 0; i < r->n_query; i++) {
        char *k = cbfs_sigv4_uri_encode(r->query[i].name, false);
        char *v = cbfs_sigv4_uri_encode(r->query[i].value ? r->query[i].value : "", false);
        cbfs_buf_printf(&q, "%s%s=%s", i ? "&" : "?", k, v);
        free(k);
        free(v);
    }
    url = cbfs_xasprintf("%s://%s%s%s", s->scheme, host, epath, q.data ? q.data : "");

    headers[nh++] = (CbfsSigv4Pair){"host", host};
    headers[nh++] = (CbfsSigv4Pair){"x-amz-content-sha256", payload_hash};
    if (r->range[0])
        headers[nh++] = (CbfsSigv4Pair){"range", r->range};
    if (r->if_none_match)
        headers[nh++] = (CbfsSigv4Pair){"if-none-match", "*"};
    memset(&sreq, 0, sizeof(sreq));
    sreq.method = r->method;
    sreq.path = sign_path;
    sreq.path_style = CBFS_SIGV4_PATH_S3;
    sreq.query = r->query;
    sreq.n_query = r->n_query;
    sreq.headers = headers;
    sreq.n_headers = nh;
    sreq.payload_hash = payload_hash;
    *ret_sign_rc = cbfs_sigv4_sign(&signer, &sreq, time(NULL), amz_date, &auth, err);
    if (*ret_sign_rc < 0) {
        c = CURLE_OK;
        goto out;
    }
    for (size_t i = 0; i < nh; i++) {
        line = cbfs_xasprintf("%s: %s", headers[i].name, headers[i].value);
        hl = curl.slist_append(hl, line);
        free(line);
    }
    line = cbfs_xasprintf("x-amz-date: %s", amz_date);
    hl = curl.slist_append(hl, line);
    free(line);
    if (s->token && *s->token) {
        line = cbfs_xasprintf("x-amz-security-token: %s", s->token);
        hl = curl.slist_append(hl, line);
        wipe_free(line);
    }
    line = cbfs_xasprintf("Authorization: %s", auth);
    hl = curl.slist_append(hl, line);
    wipe_free(line);
    hl = curl.slist_append(hl, "Expect:"); /* no 100-continue round trip */
    if (r->body)
        hl = curl.slist_append(hl, "Content-Type: application/octet-stream");

    r->status = 0;
    r->etag[0] = '\0';
    r->skip_left = r->skip;
    r->out_len = 0;
    r->body_pos = 0;
    r->out_full = false;
    r->err_body.len = 0;
    if (r->out_buf)
        r->out_buf->len = 0;
    h = pool_get(s);
    curl.easy_setopt(h, CURLOPT_URL, url);
    curl.easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl.easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl.easy_setopt(h, CURLOPT_ERRORBUFFER, curl_msg);
    curl.easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl.easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl.easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl.easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl.easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl.easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl.easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
    curl.easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms); /* 0: none */
    curl.easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (s->ca_file && *s->ca_file)
        curl.easy_setopt(h, CURLOPT_CAINFO, s->ca_file);
    if (strcmp(r->method, "HEAD") == 0) {
        curl.easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "PUT") == 0) {
        curl.easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl.easy_setopt(h, CURLOPT_READFUNCTION, on_upload);
        curl.easy_setopt(h, CURLOPT_READDATA, r);
        curl.easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl.easy_setopt(h, CURLOPT_SEEKDATA, r);
        curl.easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t) r->body_len);
    } else if (strcmp(r->method, "POST") == 0) {
        curl.easy_setopt(h, CURLOPT_POST, 1L);
        curl.easy_setopt(h, CURLOPT_POSTFIELDS, r->body ? (const char *) r->body : "");
        curl.easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) r->body_len);
    } else if (strcmp(r->method, "GET") != 0) {
        curl.easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
    }
    curl_msg[0] = '\0';
    c = curl.easy_perform(h);
    if (c == CURLE_WRITE_ERROR && r->out_full)
        c = CURLE_OK;
    if (c == CURLE_OK) {
        long status = 0;
        curl.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        r->status = status;
        pool_put(s, h);
    } else {
        curl.easy_cleanup(h); /* its connection may be broken */
    }
out:
    for (struct curl_slist *l = hl; l; l = l->next)
        OPENSSL_cleanse(l->data, strlen(l->data)); /* the token and the signature */
    curl.slist_free_all(hl);
    if (auth) {
        OPENSSL_cleanse(auth, strlen(auth));
        free(auth);
    }
    cbfs_buf_release(&q);
    free(url);
    free(epath);
    free(sign_path);
    free(host);
    free(path);
    return c;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Send r, retrying what may pass.  0 with r->status set (any status the
 * caller handles: 2xx, 404, 412, 416, 501, 403...), or an error naming
 * `verb` and the object.  *ret_attempts: how many were made. */
static int request(S3Store *s, S3Req *r, const char *verb, int *ret_attempts, CbfsError *err)
{
    char *hash = r->body ? hex_sha256(r->body, r->body_len) : cbfs_xstrdup(CBFS_SIGV4_EMPTY_SHA256);
    char curl_msg[CURL_ERROR_SIZE], code[64], last[CURL_ERROR_SIZE + 96];
    int rc = 0, n;
    int64_t start = mono_ms(), left = 0;

    cbfs_buf_init(&r->err_body);
    for (n = 1;; n++) {
        int sign_rc = 0;
        CURLcode c;
        if (s->timeout_ms) {
            left = s->timeout_ms - (mono_ms() - start);
            if (left < 1)
                left = 1;
        }
        c = attempt(s, r, hash, (long) left, curl_msg, err, &sign_rc);
        if (sign_rc < 0) {
            rc = sign_rc;
            break;
        }
        if (c == CURLE_OK) {
            error_code(&r->err_body, code, sizeof(code));
            if (!status_retryable(r->status, code))
                break;
            snprintf(last, sizeof(last), "HTTP %ld%s%s", r->status, code[0] ? " " : "", code);
        } else {
            snprintf(last, sizeof(last), "%s", curl_msg[0] ? curl_msg : curl.easy_strerror(c));
            if (!curl_retryable(c)) {
                char *what = subject(s, verb, r->key);
                rc = cbfs_error_set(err, EIO, CBFS_EXIT_REPO, "could not %s: %s", what, last);
                free(what);
                break;
            }
        }
        if (s->timeout_ms ? mono_ms() - start >= s->timeout_ms : n >= s->max_attempts) {
            char *what = subject(s, verb, r->key);
            if (s->timeout_ms)
                rc = cbfs_error_set(err, EIO, CBFS_EXIT_REPO,
                                    "could not %s: %s (after %d attempt%s in %.0f s)", what, last,
                                    n, n == 1 ? "" : "s", (double) (mono_ms() - start) / 1000);
            else
                rc = cbfs_error_set(err, EIO, CBFS_EXIT_REPO,
                                    "could not %s: %s (after %d attempts)", what, last, n);
            free(what);
            break;
        }
        backoff(s, n + 1, s->timeout_ms ? (long) (s->timeout_ms - (mono_ms() - start)) : 0);
    }
    if (ret_attempts)
        *ret_attempts = n;
    free(hash);
    return rc;
}

/* The error for a final status the caller does not handle itself. */
static int status_error(S3Store *s, S3Req *r, const char *verb, CbfsError *err)
{
    char code[64], *what = subject(s, verb, r->key);
    int rc;
    error_code(&r->err_body, code, sizeof(code));
    if (r->status == 404 && strcmp(code, "NoSuchBucket") == 0)
        /* not ENOENT: that is "no such object", a result (store.h) */
        rc = cbfs_error_set(err, ENXIO, CBFS_EXIT_REPO,
                            "could not %s: bucket \"%s\" does not exist", what, s->bucket);
    else if (r->status == 403)
        rc = cbfs_error_set(err, EACCES, CBFS_EXIT_REPO,
                            "could not %s: access denied (HTTP 403%s%s)", what, code[0] ? " " : "",
                            code);
    else
        rc = cbfs_error_set(err, EIO, CBFS_EXIT_REPO, "could not %s: HTTP %ld%s%s", what, r->status,
                            code[0] ? " " : "", code);
    free(what);
    return rc;
}

/* A 404 for an object: absent (-ENOENT), unless the bucket itself is. */
static int not_found(S3Store *s, S3Req *r, const char *verb, CbfsError *err)
{
    char code[64];
    error_code(&r->err_body, code, sizeof(code));
    if (strcmp(code, "NoSuchBucket") == 0)
        return status_error(s, r, verb, err);
    return -ENOENT;
}

/* ---- ops ------------------------------------------------------------------ */

static int s3_get_range(CbfsStore *st, const char *key, uint64_t off, size_t len, void *buf,
                        size_t *ret_n, CbfsError *err)
{
    S3Store *s = (S3Store *) st;
    S3Req r;
    int rc;

    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    *ret_n = 0;
    if (len == 0)
        return st->ops->stat(st, key, NULL, err);
    memset(&r, 0, sizeof(r));
    r.method = "GET";
    r.key = key;
    snprintf(r.range, sizeof(r.range), "bytes=%llu-%llu", (unsigned long long) off,
             (unsigned long long) (off + len - 1));
    r.out = buf;
    r.out_cap = len;
    rc = request(s, &r, "read", NULL, err);
    if (rc == 0) {
        if (r.status == 206) {
            *ret_n = r.out_len;
        } else if (r.status == 200) {
            /* the whole object: the store ignored the range; take ours */
            r.skip = off;
            r.out_len = 0;
            rc = request(s, &r, "read", NULL, err);
            if (rc == 0 && r.status != 200)
                rc = status_error(s, &r, "read", err);
            *ret_n = r.out_len;
        } else if (r.status == 416) {
            *ret_n = 0; /* at or past the end */
        } else if (r.status == 404) {
            rc = not_found(s, &r, "read", err);
        } else {
            rc = status_error(s, &r, "read", err);
        }
    }
    cbfs_buf_release(&r.err_body);
    return rc;
}

static int s3_get(CbfsStore *st, const char *key, uint8_t **ret_buf, size_t *ret_len,
                  CbfsError *err)
{
    S3Store *s = (S3Store *) st;
    CbfsBuf out;
    S3Req r;
    int rc;

    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    cbfs_buf_init(&out);
    memset(&r, 0, sizeof(r));
    r.method = "GET";
    r.key = key;
    r.out_buf = &out;
    rc = request(s, &r, "read", NULL, err);
    if (rc == 0 && r.status != 200)
        rc = r.status == 404 ? not_found(s, &r, "read", err) : status_error(s, &r, "read", err);
    cbfs_buf_release(&r.err_body);
    if (rc < 0) {
        cbfs_buf_release(&out);
        return rc;
    }
    cbfs_buf_append(&out, "", 0); /* NUL-terminated, also when empty */
    *ret_len = out.len;
    *ret_buf = (uint8_t *) out.data;
    return 0;
}

static int head(S3Store *s, const char *key, uint64_t *ret_size, char *ret_etag, size_t etag_len,
                CbfsError *err)
{
    S3Req r;
    int rc;
    memset(&r, 0, sizeof(r));
    r.method = "HEAD";
    r.key = key;
    rc = request(s, &r, "stat", NULL, err);
    if (rc == 0 && r.status == 404)
        rc = -ENOENT; /* a HEAD answer has no body to tell a missing bucket by */
    else if (rc == 0 && r.status != 200)
        rc = status_error(s, &r, "stat", err);
    if (rc == 0 && ret_etag)
        snprintf(ret_etag, etag_len, "%s", r.etag);
    if (rc == 0 && ret_size)
        *ret_size = r.length;
    cbfs_buf_release(&r.err_body);
    return rc;
}

static void md5_hex(const void *data, size_t len, char out[2 * MD5_LEN + 1])
{
    uint8_t sum[MD5_LEN];
    unsigned int n = MD5_LEN;
    if (!EVP_Digest(data, len, sum, &n, EVP_md5(), NULL))
        abort();
    cbfs_hex_encode(sum, MD5_LEN, out);
}

/* The ETag S3 gives an object of len bytes stored in parts of part_size
 * (one part: the MD5 of the data). */
static void expected_etag(const S3Store *s, const uint8_t *data, size_t len, char *out,
                          size_t out_len)
{
    char hex[2 * MD5_LEN + 1];
    if (len <= s->part_size) {
        md5_hex(data, len, hex);
        snprintf(out, out_len, "%s", hex);
    } else {
        size_t parts = (len + s->part_size - 1) / s->part_size;
        uint8_t *sums = cbfs_xmalloc(parts * MD5_LEN);
        for (size_t i = 0; i < parts; i++) {
            size_t o = i * s->part_size, n = len - o < s->part_size ? len - o : s->part_size;
            unsigned int m = MD5_LEN;
            if (!EVP_Digest(data + o, n, sums + i * MD5_LEN, &m, EVP_md5(), NULL))
                abort();
        }
        md5_hex(sums, parts * MD5_LEN, hex);
        snprintf(out, out_len, "%s-%zu", hex, parts);
        free(sums);
    }
}

/* After a write whose outcome was uncertain: 0 if key holds our data,
 * -EEXIST if something else. */
static int check_ours(S3Store *s, const char *key, const uint8_t *data, size_t len, CbfsError *err)
{
    char etag[80], want[80];
    int rc = head(s, key, NULL, etag, sizeof(etag), err);
    if (rc < 0)
        return rc == -ENOENT ? -EEXIST : rc;
    expected_etag(s, data, len, want, sizeof(want));
    return strcasecmp(etag, want) == 0 ? 0 : -EEXIST;
}

/* The text between <tag> and </tag> after *pos, advancing *pos; NULL if none. */
static char *xml_next(const char *tag, const char **pos)
{
    char open[64], close[64];
    const char *s, *e;
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    s = strstr(*pos, open);
    if (!s)
        return NULL;
    s += strlen(open);
    e = strstr(s, close);
    if (!e)
        return NULL;
    *pos = e + strlen(close);
    {
        /* decode the five XML entities */
        char *out = cbfs_xmalloc((size_t) (e - s) + 1), *o = out;
        static const struct {
            const char *ent;
            char c;
        } ents[] = {
            {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
        while (s < e) {
            bool done = false;
            if (*s == '&')
                for (size_t i = 0; i < 5 && !done; i++)
                    if ((size_t) (e - s) >= strlen(ents[i].ent) &&
                        strncmp(s, ents[i].ent, strlen(ents[i].ent)) == 0) {
                        *o++ = ents[i].c;
                        s += strlen(ents[i].ent);
                        done = true;
                    }
            if (!done)
                *o++ = *s++;
        }
        *o = '\0';
        return out;
    }
}

static int put_multipart(S3Store *s, const char *key, const uint8_t *data, size_t len,
                         CbfsError *err)
{
    CbfsBuf out, done;
    S3Req r;
    char *upload_id = NULL, **etags;
    size_t parts = (len + s->part_size - 1) / s->part_size;
    const char *pos;
    int rc;

    etags = cbfs_xcalloc(parts, sizeof(char *));
    cbfs_buf_init(&out);
    cbfs_buf_init(&done);
    memset(&r, 0, sizeof(r));
    r.method = "POST";
    r.key = key;
    r.query[r.n_query++] = (CbfsSigv4Pair){"uploads", ""};
    r.out_buf = &out;
    rc = request(s, &r, "write", NULL, err);
    if (rc == 0 && r.status != 200)
        rc = status_error(s, &r, "write", err);
    cbfs_buf_release(&r.err_body);
    pos = out.data ? out.data : "";
    if (rc == 0 && !(upload_id = xml_next("UploadId", &pos))) {
        char *name = object_name(s, key);
        rc = cbfs_error_set(err, EIO, CBFS_EXIT_REPO,
                            "could not write object \"%s\": no upload id in the answer", name);
        free(name);
    }
    for (size_t i = 0; rc == 0 && i < parts; i++) {
        char num[24];
        size_t o = i * s->part_size;
        snprintf(num, sizeof(num), "%zu", i + 1);
        memset(&r, 0, sizeof(r));
        r.method = "PUT";
        r.key = key;
        r.query[r.n_query++] = (CbfsSigv4Pair){"partNumber", num};
        r.query[r.n_query++] = (CbfsSigv4Pair){"uploadId", upload_id};
        r.body = data + o;
        r.body_len = len - o < s->part_size ? len - o : s->part_size;
        rc = request(s, &r, "write", NULL, err);
        if (rc == 0 && (r.status != 200 || !r.etag[0]))
            rc = status_error(s, &r, "write", err);
        if (rc == 0)
            etags[i] = cbfs_xstrdup(r.etag);
        cbfs_buf_release(&r.err_body);
    }
    if (rc == 0) {
        cbfs_buf_printf(&done, "<CompleteMultipartUpload>");
        for (size_t i = 0; i < parts; i++)
            cbfs_buf_printf(&done, "<Part><PartNumber>%zu</PartNumber><ETag>\"%s\"</ETag></Part>",
                            i + 1, etags[i]);
        cbfs_buf_printf(&done, "</CompleteMultipartUpload>");
        memset(&r, 0, sizeof(r));
        r.method = "POST";
        r.key = key;
        r.query[r.n_query++] = (CbfsSigv4Pair){"uploadId", upload_id};
        r.body = (const uint8_t *) done.data;
        r.body_len = done.len;
        r.out_buf = &out;
        rc = request(s, &r, "write", NULL, err);
        /* a 200 may still carry an error in its body */
        if (rc == 0 && (r.status != 200 || (out.data && strstr(out.data, "<Error>"))))
            rc = status_error(s, &r, "write", err);
        cbfs_buf_release(&r.err_body);
    }
    if (rc < 0 && upload_id) {
        CbfsError ignore;
        cbfs_error_init(&ignore);
        memset(&r, 0, sizeof(r));
        r.method = "DELETE";
        r.key = key;
        r.query[r.n_query++] = (CbfsSigv4Pair){"uploadId", upload_id};
        request(s, &r, "write", NULL, &ignore); /* abort: best effort */
        cbfs_buf_release(&r.err_body);
    }
    for (size_t i = 0; i < parts; i++)
        free(etags[i]);
    free(etags);
    free(upload_id);
    cbfs_buf_release(&out);
    cbfs_buf_release(&done);
    return rc;
}

/* An unconditional write: one PUT, or a multipart upload above the part
 * size.  S3 replaces an existing object atomically. */
static int put_plain(S3Store *s, const char *key, const void *data, size_t len, CbfsError *err)
{
    S3Req r;
    int rc;

    if (len > s->part_size)
        return put_multipart(s, key, data, len, err);
    memset(&r, 0, sizeof(r));
    r.method = "PUT";
    r.key = key;
    r.body = data;
    r.body_len = len;
    rc = request(s, &r, "write", NULL, err);
    if (rc == 0 && (r.status < 200 || r.status >= 300))
        rc = status_error(s, &r, "write", err);
    cbfs_buf_release(&r.err_body);
    return rc;
}

static int s3_put(CbfsStore *st, const char *key, const void *data, size_t len, CbfsError *err)
{
    S3Store *s = (S3Store *) st;
    S3Req r;
    int rc;

    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    if (len <= s->part_size && __atomic_load_n(&s->conditional, __ATOMIC_RELAXED)) {
        memset(&r, 0, sizeof(r));
        r.method = "PUT";
        r.key = key;
        r.if_none_match = true;
        r.body = data;
        r.body_len = len;
        rc = request(s, &r, "write", NULL, err);
        if (rc == 0 && r.status == 412)
            /* exists; but it may be ours: an attempt whose answer was lost,
             * or libcurl resending on a reused connection that broke */
            rc = check_ours(s, key, data, len, err);
        else if (rc == 0 && r.status == 501)
            __atomic_store_n(&s->conditional, 0, __ATOMIC_RELAXED);
        else if (rc == 0 && (r.status < 200 || r.status >= 300))
            rc = status_error(s, &r, "write", err);
        cbfs_buf_release(&r.err_body);
        if (rc < 0 || r.status != 501)
            return rc;
    }
    /* no conditional write here: look first, write, and check it is ours */
    rc = head(s, key, NULL, NULL, 0, err);
    if (rc == 0)
        return -EEXIST;
    if (rc != -ENOENT)
        return rc;
    rc = put_plain(s, key, data, len, err);
    if (rc == 0)
        rc = check_ours(s, key, data, len, err);
    return rc;
}

/* A plain PUT (no If-None-Match): S3 replaces an object atomically. */
static int s3_replace(CbfsStore *st, const char *key, const void *data, size_t len, CbfsError *err)
{
    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    return put_plain((S3Store *) st, key, data, len, err);
}

static int s3_stat(CbfsStore *st, const char *key, uint64_t *ret_size, CbfsError *err)
{
    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    return head((S3Store *) st, key, ret_size, NULL, 0, err);
}

static int s3_list(CbfsStore *st, const char *prefix, cbfs_store_list_cb cb, void *ctx,
                   CbfsError *err)
{
    S3Store *s = (S3Store *) st;
    char *full = object_path(s, prefix[0] ? prefix : NULL), *token = NULL;
    size_t skip = *s->prefix ? strlen(s->prefix) + 1 : 0;
    CbfsBuf out;
    int rc = 0;

    if (prefix[0]) {
        free(full);
        full = *s->prefix ? cbfs_xasprintf("%s/%s", s->prefix, prefix) : cbfs_xstrdup(prefix);
    } else if (*s->prefix) {
        free(full);
        full = cbfs_xasprintf("%s/", s->prefix);
    }
    cbfs_buf_init(&out);
    for (;;) {
        S3Req r;
        const char *pos;
        char *truncated, *c;
        memset(&r, 0, sizeof(r));
        r.method = "GET";
        r.key = NULL;
        r.query[r.n_query++] = (CbfsSigv4Pair){"list-type", "2"};
        r.query[r.n_query++] = (CbfsSigv4Pair){"prefix", full};
        if (token)
            r.query[r.n_query++] = (CbfsSigv4Pair){"continuation-token", token};
        r.out_buf = &out;
        rc = request(s, &r, "list", NULL, err);
        if (rc == 0 && r.status != 200)
            rc = status_error(s, &r, "list", err);
        cbfs_buf_release(&r.err_body);
        if (rc < 0)
            break;
        cbfs_buf_append(&out, "", 0);
        pos = out.data ? out.data : "";
        while (rc == 0 && (c = xml_next("Contents", &pos)) != NULL) {
            const char *p = c;
            char *key = xml_next("Key", &p), *size;
            p = c;
            size = xml_next("Size", &p);
            if (key && strlen(key) > skip && cbfs_store_key_valid(key + skip))
                rc = cb(key + skip, size ? strtoull(size, NULL, 10) : 0, ctx);
            free(key);
            free(size);
            free(c);
        }
        if (rc != 0)
            break;
        pos = out.data ? out.data : "";
        truncated = xml_next("IsTruncated", &pos);
        free(token);
        pos = out.data ? out.data : "";
        token = truncated && strcmp(truncated, "true") == 0
                    ? xml_next("NextContinuationToken", &pos)
                    : NULL;
        free(truncated);
        if (!token)
            break;
    }
    free(token);
    free(full);
    cbfs_buf_release(&out);
    return rc;
}

static int s3_remove(CbfsStore *st, const char *key, CbfsError *err)
{
    S3Store *s = (S3Store *) st;
    S3Req r;
    int rc;

    if (!cbfs_store_key_valid(key))
        return cbfs_store_bad_key(st, key, err);
    rc = head(s, key, NULL, NULL, 0, err);
    if (rc < 0)
        return rc;
    memset(&r, 0, sizeof(r));
    r.method = "DELETE";
    r.key = key;
    rc = request(s, &r, "remove", NULL, err);
    if (rc == 0 && r.status == 404)
        rc = -ENOENT;
    else if (rc == 0 && (r.status < 200 || r.status >= 300))
        rc = status_error(s, &r, "remove", err);
    cbfs_buf_release(&r.err_body);
    return rc;
}

static void s3_free(CbfsStore *st)
{
    S3Store *s = (S3Store *) st;
    for (int i = 0; i < s->npool; i++)
        curl.easy_cleanup(s->pool[i]);
    pthread_mutex_destroy(&s->pool_lock);
    if (s->secret_key)
        OPENSSL_cleanse(s->secret_key, strlen(s->secret_key));
    if (s->token)
        OPENSSL_cleanse(s->token, strlen(s->token));
    free(s->bucket);
    free(s->prefix);
    free(s->scheme);
    free(s->host);
    free(s->base_path);
    free(s->region);
    free(s->access_key);
    free(s->secret_key);
    free(s->token);
    free(s->ca_file);
    free(s->base.display);
    free(s);
}

static const CbfsStoreOps s3_ops = {
    .name = "s3",
    .get_range = s3_get_range,
    .get = s3_get,
    .put = s3_put,
    .replace = s3_replace,
    .stat = s3_stat,
    .list = s3_list,
    .remove = s3_remove,
    .free = s3_free,
};

/* ---- opening -------------------------------------------------------------- */

static int setting(const char *key, const char *const *envs, bool secret, const char **ret,
                   CbfsError *err)
{
    return cbfs_config_get(key, envs, secret, ret, err);
}

static int parse_endpoint(S3Store *s, const char *url, const char *spec, CbfsError *err)
{
    const char *rest, *slash;
    if (strncmp(url, "https://", 8) == 0) {
        s->scheme = cbfs_xstrdup("https");
        rest = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        s->scheme = cbfs_xstrdup("http");
        rest = url + 7;
    } else {
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "could not open repository \"%s\": invalid S3 endpoint \"%s\" "
                              "(http:// or https:// expected)",
                              spec, url);
    }
    slash = strchr(rest, '/');
    s->host = slash ? cbfs_xasprintf("%.*s", (int) (slash - rest), rest) : cbfs_xstrdup(rest);
    s->base_path = cbfs_xstrdup(slash ? slash : "");
    while (*s->base_path && s->base_path[strlen(s->base_path) - 1] == '/')
        s->base_path[strlen(s->base_path) - 1] = '\0';
    if (!*s->host || strpbrk(s->host, "@?# "))
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "could not open repository \"%s\": invalid S3 endpoint \"%s\"", spec,
                              url);
    return 0;
}

static int number_setting(const char *key, const char *env, uint64_t def, uint64_t min,
                          uint64_t max, const char *spec, uint64_t *ret, CbfsError *err)
{
    const char *envs[] = {env, NULL}, *v;
    char *end;
    int rc = setting(key, envs, false, &v, err);
    if (rc < 0)
        return rc;
    *ret = def;
    if (!v)
        return 0;
    errno = 0;
    *ret = strtoull(v, &end, 10);
    if (errno || end == v || *end || *ret < min || *ret > max)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "could not open repository \"%s\": invalid %s \"%s\"", spec, key, v);
    return 0;
}

int cbfs_store_s3_new(const CbfsLocation *loc, CbfsStore **ret, CbfsError *err)
{
    static const char *const env_endpoint[] = {"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", NULL};
    static const char *const env_region[] = {"AWS_REGION", "AWS_DEFAULT_REGION", NULL};
    static const char *const env_style[] = {"CBFS_S3_URI_STYLE", NULL};
    static const char *const env_key[] = {"AWS_ACCESS_KEY_ID", NULL};
    static const char *const env_secret[] = {"AWS_SECRET_ACCESS_KEY", NULL};
    static const char *const env_token[] = {"AWS_SESSION_TOKEN", NULL};
    static const char *const env_ca[] = {"AWS_CA_BUNDLE", NULL};
    const char *endpoint, *region, *style, *key, *secret, *token, *ca, *why;
    uint64_t part, attempts, base_ms, timeout_s;
    S3Store *s;
    char *def_endpoint = NULL;
    int rc;

    if ((why = curl_api_load()) != NULL)
        return cbfs_error_set(err, ENOSYS, CBFS_EXIT_REPO, "could not open repository \"%s\": %s",
                              loc->spec, why);
    if ((rc = setting("s3_endpoint", env_endpoint, false, &endpoint, err)) < 0 ||
        (rc = setting("s3_region", env_region, false, &region, err)) < 0 ||
        (rc = setting("s3_uri_style", env_style, false, &style, err)) < 0 ||
        (rc = setting("s3_access_key_id", env_key, false, &key, err)) < 0 ||
        (rc = setting("s3_secret_access_key", env_secret, true, &secret, err)) < 0 ||
        (rc = setting("s3_session_token", env_token, true, &token, err)) < 0 ||
        (rc = setting("s3_ca_file", env_ca, false, &ca, err)) < 0 ||
        (rc = number_setting("s3_part_size", "CBFS_S3_PART_SIZE", 64u << 20, 5u << 20, 5ull << 30,
                             loc->spec, &part, err)) < 0 ||
        (rc = number_setting("s3_max_attempts", "CBFS_S3_MAX_ATTEMPTS", 10, 1, 100, loc->spec,
                             &attempts, err)) < 0 ||
        (rc = number_setting("s3_retry_base_ms", "CBFS_S3_RETRY_BASE_MS", 100, 1, 60000, loc->spec,
                             &base_ms, err)) < 0 ||
        (rc = number_setting("s3_timeout", "CBFS_S3_TIMEOUT", timeout_default_s, 0, 86400,
                             loc->spec, &timeout_s, err)) < 0)
        return rc;
    if (timeout_override)
        timeout_s = timeout_default_s;
    if (!key || !secret)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "could not open repository \"%s\": no S3 credentials (set "
                              "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or s3_access_key_id "
                              "and s3_secret_access_key in the configuration file)",
                              loc->spec);
    if (style && strcmp(style, "path") != 0 && strcmp(style, "virtual") != 0)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "could not open repository \"%s\": invalid s3_uri_style \"%s\" "
                              "(path or virtual)",
                              loc->spec, style);
    if (!region)
        region = "us-east-1";
    if (!endpoint)
        endpoint = def_endpoint = cbfs_xasprintf("https://s3.%s.amazonaws.com", region);

    s = cbfs_xcalloc(1, sizeof(*s));
    s->base.ops = &s3_ops;
    s->base.display = cbfs_xstrdup(loc->spec);
    s->bucket = cbfs_xstrdup(loc->bucket);
    s->prefix = cbfs_xstrdup(loc->prefix ? loc->prefix : "");
    rc = parse_endpoint(s, endpoint, loc->spec, err);
    /* an endpoint of one's own (MinIO, Swift, Ceph...) usually wants paths */
    s->path_style = style ? strcmp(style, "path") == 0 : def_endpoint == NULL;
    free(def_endpoint);
    if (rc < 0) {
        s3_free(&s->base);
        return rc;
    }
    s->region = cbfs_xstrdup(region);
    s->access_key = cbfs_xstrdup(key);
    s->secret_key = cbfs_xstrdup(secret);
    s->token = token ? cbfs_xstrdup(token) : NULL;
    s->ca_file = ca ? cbfs_xstrdup(ca) : NULL;
    s->part_size = (size_t) part;
    s->max_attempts = (int) attempts;
    s->retry_base_ms = (long) base_ms;
    s->timeout_ms = (long) timeout_s * 1000;
    s->conditional = 1;
    pthread_mutex_init(&s->pool_lock, NULL);
    *ret = &s->base;
    return 0;
}

void cbfs_store_s3_timeout(unsigned seconds, bool override)
{
    timeout_default_s = seconds;
    timeout_override = override;
}
