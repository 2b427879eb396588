/*
 * http.c - a plain GET through libcurl (see http.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/http.h"
#include "cbfs/util.h"
#include "curl_api.h"

#define BODY_MAX (4u << 20)

typedef struct Sink {
    CbfsBuf buf;
    bool too_large;
} Sink;

static size_t on_data(char *data, size_t size, size_t n, void *ctx)
{
    Sink *s = ctx;
    if (s->buf.len + size * n > BODY_MAX) {
        s->too_large = true;
        return 0; /* ends the transfer */
    }
    cbfs_buf_append(&s->buf, data, size * n);
    return size * n;
}

int cbfs_http_get(const char *url, long timeout_s, char **ret_body, size_t *ret_len,
                  long *ret_status, CbfsError *err)
{
    const char *why = curl_api_load();
    Sink sink = {0};
    CURL *h;
    CURLcode cc;
    long status = 0;

    if (why)
        return cbfs_error_set(err, ENOSYS, CBFS_EXIT_ERROR, "%s", why);
    if (!(h = curl.easy_init()))
        return cbfs_error_set(err, ENOMEM, CBFS_EXIT_ERROR, "could not initialize libcurl");
    cbfs_buf_init(&sink.buf);
    curl.easy_setopt(h, CURLOPT_URL, url);
    curl.easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl.easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
    curl.easy_setopt(h, CURLOPT_CONNECTTIMEOUT, timeout_s);
    curl.easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl.easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl.easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    cc = curl.easy_perform(h);
    if (cc == CURLE_OK)
        curl.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl.easy_cleanup(h);
    if (sink.too_large) {
        cbfs_buf_release(&sink.buf);
        return cbfs_error_set(err, EFBIG, CBFS_EXIT_ERROR, "answer of \"%s\" is larger than 4 MiB",
                              url);
    }
    if (cc != CURLE_OK) {
        cbfs_buf_release(&sink.buf);
        return cbfs_error_set(err, ECONNREFUSED, CBFS_EXIT_ERROR, "could not reach \"%s\": %s", url,
                              curl.easy_strerror(cc));
    }
    *ret_len = sink.buf.len;
    *ret_body = sink.buf.data; /* handed over, NUL-terminated */
    *ret_status = status;
    return 0;
}
