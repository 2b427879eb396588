/*
 * curl_api.c - libcurl loaded at first use (see curl_api.h).
 */
#include <pthread.h>
#include <stdio.h>

#include "cbfs/util.h"
#include "curl_api.h"

CurlApi curl;
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static char curl_error[256];

static void curl_load(void)
{
    const CbfsDlSym syms[] = {
        {(void **) &curl.global_init, "curl_global_init"},
        {(void **) &curl.easy_init, "curl_easy_init"},
        {(void **) &curl.easy_setopt, "curl_easy_setopt"},
        {(void **) &curl.easy_perform, "curl_easy_perform"},
        {(void **) &curl.easy_getinfo, "curl_easy_getinfo"},
        {(void **) &curl.easy_cleanup, "curl_easy_cleanup"},
        {(void **) &curl.easy_reset, "curl_easy_reset"},
        {(void **) &curl.easy_strerror, "curl_easy_strerror"},
        {(void **) &curl.slist_append, "curl_slist_append"},
        {(void **) &curl.slist_free_all, "curl_slist_free_all"},
    };
    if (cbfs_dl_load("libcurl.so.4", "libcurl", syms, sizeof(syms) / sizeof(syms[0]), curl_error,
                     sizeof(curl_error)) == 0 &&
        curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        snprintf(curl_error, sizeof(curl_error), "could not initialize libcurl");
}

const char *curl_api_load(void)
{
    pthread_once(&curl_once, curl_load);
    return curl_error[0] ? curl_error : NULL;
}
