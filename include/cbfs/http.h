/*
 * http.h - a plain HTTP(S) GET, for the REST APIs cbfs asks (Patroni's).
 * libcurl is loaded at first use; TLS is verified (CURL defaults).
 */
#ifndef CBFS_HTTP_H
#define CBFS_HTTP_H

#include <stddef.h>

#include "cbfs/error.h"

/* GET url within timeout_s seconds.  On 0, *ret_body (NUL-terminated,
 * caller frees; at most 4 MiB), *ret_len and *ret_status (any HTTP status:
 * the caller judges it).  Errors (CBFS_EXIT_ERROR): "could not load
 * libcurl...", "could not reach \"URL\": <curl's reason>", "answer of
 * \"URL\" is larger than 4 MiB". */
int cbfs_http_get(const char *url, long timeout_s, char **ret_body, size_t *ret_len,
                  long *ret_status, CbfsError *err);

#endif
