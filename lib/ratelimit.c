/*
 * ratelimit.c - see ratelimit.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "cbfs/ratelimit.h"
#include "cbfs/util.h"

#define BURST_NS 250000000LL /* a clock behind now is pulled up to this */

struct CbfsRateLimit {
    uint64_t rate; /* bytes a second */
    int64_t clock; /* ns (cbfs_now_ns): when what was taken may be done */
    pthread_mutex_t lock;
};

int cbfs_rate_parse(const char *s, uint64_t *ret, CbfsError *err)
{
    uint64_t v;
    if (!s || cbfs_parse_size(s, &v) < 0 || v < 1024)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "invalid rate \"%s\" (bytes a second, at least 1k: 50M, 1G)",
                              s ? s : "");
    *ret = v;
    return 0;
}

int cbfs_ratelimit_parse(const char *s, CbfsRateLimit **ret, CbfsError *err)
{
    uint64_t v;
    int rc = cbfs_rate_parse(s, &v, err);
    if (rc == 0)
        *ret = cbfs_ratelimit_new(v);
    return rc;
}

CbfsRateLimit *cbfs_ratelimit_new(uint64_t bytes_per_second)
{
    CbfsRateLimit *rl = cbfs_xcalloc(1, sizeof(*rl));
    rl->rate = bytes_per_second ? bytes_per_second : 1;
    rl->clock = cbfs_now_ns() - BURST_NS;
    pthread_mutex_init(&rl->lock, NULL);
    return rl;
}

void cbfs_ratelimit_take(CbfsRateLimit *rl, uint64_t bytes)
{
    int64_t now, until;
    if (!rl || bytes == 0)
        return;
    pthread_mutex_lock(&rl->lock);
    now = cbfs_now_ns();
    if (rl->clock < now - BURST_NS)
        rl->clock = now - BURST_NS;
    rl->clock += (int64_t) ((double) bytes * 1e9 / (double) rl->rate);
    until = rl->clock;
    pthread_mutex_unlock(&rl->lock);
    while (until > now) {
        struct timespec ts = {.tv_sec = (until - now) / 1000000000,
                              .tv_nsec = (until - now) % 1000000000};
        nanosleep(&ts, NULL);
        now = cbfs_now_ns();
    }
}

uint64_t cbfs_ratelimit_chunk(const CbfsRateLimit *rl, uint64_t max)
{
    uint64_t c;
    if (!rl)
        return max;
    c = rl->rate / 8 > (64u << 10) ? rl->rate / 8 : (64u << 10);
    return c < max ? c : max;
}

uint64_t cbfs_ratelimit_rate(const CbfsRateLimit *rl)
{
    return rl ? rl->rate : 0;
}

void cbfs_ratelimit_free(CbfsRateLimit *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

static CbfsRateLimit *global;

void cbfs_ratelimit_set_global(CbfsRateLimit *rl)
{
    global = rl;
}

CbfsRateLimit *cbfs_ratelimit_global(void)
{
    return global;
}
