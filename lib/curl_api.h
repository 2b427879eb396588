/*
 * curl_api.h - libcurl, loaded at first use (dlopen) by the S3 store and
 * the HTTP client, so that commands that need neither never pay for its
 * dependencies.  Internal to libcbfs.
 */
#ifndef CBFS_CURL_API_H
#define CBFS_CURL_API_H

#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

typedef struct CurlApi {
    CURLcode (*global_init)(long);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_perform)(CURL *);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    void (*easy_cleanup)(CURL *);
    void (*easy_reset)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
} CurlApi;

extern CurlApi curl;

/* Load libcurl once (thread-safe): NULL, or why it could not be loaded. */
const char *curl_api_load(void);

#endif
