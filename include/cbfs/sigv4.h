/*
 * sigv4.h - AWS Signature Version 4 for requests sent with the Authorization
 * header (the S3 driver signs every request it sends with this).
 *
 * A signature is built in four steps, each exposed so tests can check it
 * against AWS's published examples:
 *
 *   canonical request  METHOD \n URI \n QUERY \n HEADERS \n SIGNED-HEADERS \n PAYLOAD-HASH
 *   string to sign     "AWS4-HMAC-SHA256" \n X-AMZ-DATE \n SCOPE \n hex(sha256(canonical request))
 *   signing key        HMAC chain "AWS4"+secret -> date -> region -> service -> "aws4_request"
 *   signature          hex(HMAC(signing key, string to sign))
 *
 * where SCOPE is "YYYYMMDD/<region>/<service>/aws4_request".  cbfs_sigv4_sign()
 * runs all four and returns the Authorization header value.
 *
 * Encoding (cbfs_sigv4_uri_encode): A-Z a-z 0-9 - _ . ~ are kept, every other
 * byte becomes %XX with uppercase hex (so a space is %20, never '+').
 *
 * Secrets: the secret access key is never copied into an error message, a
 * log line or any returned string; derived keys are wiped after use.  All
 * functions are reentrant; nothing here keeps state between calls.
 */
#ifndef CBFS_SIGV4_H
#define CBFS_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "cbfs/error.h"
#include "cbfs/util.h"

#define CBFS_SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
/* Payload hash of an empty body, and the marker for a body left unsigned. */
#define CBFS_SIGV4_EMPTY_SHA256     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define CBFS_SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* "20130524T000000Z" and its NUL. */
#define CBFS_SIGV4_DATE_LEN 17
/* Lowercase hex of a signature and its NUL. */
#define CBFS_SIGV4_HEX_LEN (2 * CBFS_SHA256_LEN + 1)

/* A query parameter or a header.  Strings are borrowed. */
typedef struct CbfsSigv4Pair {
    const char *name;
    const char *value; /* NULL is the same as "" */
} CbfsSigv4Pair;

/* How the request path becomes the canonical URI. */
typedef enum CbfsSigv4PathStyle {
    /* S3: path is the raw, unencoded object path ("/bucket/a b/c+d"), each
     * segment is encoded once and '/' kept; nothing is normalised, because
     * "a//b" and "a/./b" are distinct S3 keys. */
    CBFS_SIGV4_PATH_S3 = 0,
    /* Every other AWS service: path is the path as it appears on the request
     * line.  Empty and "." segments are dropped and ".." removes the segment
     * before it (RFC 3986 section 5.2.4), then each segment is encoded again,
     * so a path the caller already percent-encoded ends up double-encoded as
     * those services expect.  Needed for AWS's generic test suite. */
    CBFS_SIGV4_PATH_GENERIC = 1,
} CbfsSigv4PathStyle;

/* One HTTP request, as far as the signature covers it.  All borrowed. */
typedef struct CbfsSigv4Request {
    const char *method; /* "GET", "PUT", ...: uppercase letters */
    const char *path;   /* per path_style; NULL or "" is "/"; a missing leading '/' is added */
    CbfsSigv4PathStyle path_style;
    /* Unencoded parameters in any order; encoded here and sorted by encoded
     * name, then encoded value.  A parameter without a value signs as "name=". */
    const CbfsSigv4Pair *query;
    size_t n_query;
    /* The headers to sign, names in any case, values untrimmed.  Must include
     * "host".  Same-name headers are joined with ',' in the order given.
     * S3 also wants "x-amz-content-sha256" (equal to payload_hash) sent and,
     * conventionally, signed; when present it must equal payload_hash. */
    const CbfsSigv4Pair *headers;
    size_t n_headers;
    /* Lowercase hex SHA-256 of the body (CBFS_SIGV4_EMPTY_SHA256 for none) or
     * a marker such as CBFS_SIGV4_UNSIGNED_PAYLOAD. */
    const char *payload_hash;
} CbfsSigv4Request;

/* Who signs, and for what.  All borrowed. */
typedef struct CbfsSigv4Signer {
    const char *access_key_id;     /* "AKIAIOSFODNN7EXAMPLE" */
    const char *secret_access_key; /* never copied into messages */
    const char *session_token;     /* NULL or "" unless temporary credentials */
    const char *region;            /* "us-east-1" */
    const char *service;           /* "s3" */
} CbfsSigv4Signer;

/* s with every byte outside A-Z a-z 0-9 - _ . ~ as %XX (uppercase hex); '/'
 * is kept when keep_slash (object keys in a path).  Caller frees. */
char *cbfs_sigv4_uri_encode(const char *s, bool keep_slash);

/* t as "YYYYMMDDTHHMMSSZ" (UTC).  0, or -EOVERFLOW if the year is outside
 * 1..9999. */
int cbfs_sigv4_format_date(time_t t, char out[CBFS_SIGV4_DATE_LEN]);

/* The canonical request of req, and (if ret_signed_headers is not NULL) its
 * signed-header list "host;range;x-amz-date".  0, or -EINVAL and err when req
 * cannot be signed: a method not in uppercase letters, a header name that is
 * not an HTTP token, a control character (line break) in a header value, no
 * host header, a malformed payload hash, or an x-amz-content-sha256 header
 * that differs from it.  Both strings: caller frees. */
int cbfs_sigv4_canonical_request(const CbfsSigv4Request *req, char **ret_creq,
                                 char **ret_signed_headers, CbfsError *err);

/* The string to sign for a canonical request; amz_date is "YYYYMMDDTHHMMSSZ"
 * and gives the scope's date.  Caller frees. */
char *cbfs_sigv4_string_to_sign(const char *amz_date, const char *region, const char *service,
                                const char *canonical_request);

/* The signing key for a scope; date is "YYYYMMDD" (the first 8 characters of
 * an x-amz-date are accepted too).  The caller wipes out with
 * OPENSSL_cleanse() when done. */
void cbfs_sigv4_signing_key(const char *secret_access_key, const char *date, const char *region,
                            const char *service, uint8_t out[CBFS_SHA256_LEN]);

/* Lowercase hex HMAC-SHA256 of string_to_sign under key. */
void cbfs_sigv4_signature(const uint8_t key[CBFS_SHA256_LEN], const char *string_to_sign,
                          char out[CBFS_SIGV4_HEX_LEN]);

/* Sign req at time now (UTC): adds x-amz-date and, with a session token,
 * x-amz-security-token to the signed headers (the caller sends both, with
 * the same values, and must not list them in req->headers), and returns the
 * Authorization header value
 *   "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request,
 *    SignedHeaders=host;x-amz-date, Signature=<64 hex>"
 * (on one line) in *ret_authorization (caller frees) and the x-amz-date value
 * in ret_amz_date unless it is NULL.  0, or -EINVAL / -EOVERFLOW and err; the
 * message never contains the secret key. */
int cbfs_sigv4_sign(const CbfsSigv4Signer *signer, const CbfsSigv4Request *req, time_t now,
                    char ret_amz_date[CBFS_SIGV4_DATE_LEN], char **ret_authorization,
                    CbfsError *err);

#endif
