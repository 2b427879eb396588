/*
 * ratelimit.h - at most so many bytes a second (--max-rate), shared by the
 * threads of one command.
 *
 * A virtual clock: each take moves "the time the bytes taken so far may
 * have been moved by" on by bytes / rate and sleeps until then; a clock
 * that fell behind now (the caller was slower than the rate) is pulled up
 * to at most a quarter of a second before now, so idle time buys a burst
 * of at most rate / 4 bytes.  Over any window of seconds the bytes taken
 * stay within rate * (window + 0.25) plus one take.
 */
#ifndef CBFS_RATELIMIT_H
#define CBFS_RATELIMIT_H

#include <stdint.h>

#include "cbfs/error.h"

typedef struct CbfsRateLimit CbfsRateLimit;

/* A rate in bytes a second, as a size with a unit: "50M", "800k",
 * "1048576" (bytes); at least 1k.  Malformed, zero or below that:
 * 'invalid rate "%s" (bytes a second, at least 1k: 50M, 1G)',
 * CBFS_EXIT_USAGE. */
int cbfs_rate_parse(const char *s, uint64_t *ret, CbfsError *err);
/* The same, into a new limiter (caller frees). */
int cbfs_ratelimit_parse(const char *s, CbfsRateLimit **ret, CbfsError *err);
CbfsRateLimit *cbfs_ratelimit_new(uint64_t bytes_per_second);
/* Account for bytes, sleeping first as long as the rate asks.  Thread-safe. */
void cbfs_ratelimit_take(CbfsRateLimit *rl, uint64_t bytes);
uint64_t cbfs_ratelimit_rate(const CbfsRateLimit *rl);
/* The most a caller should read with one take: max, or under a limit an
 * eighth of a second's worth (at least 64 KiB), so that the bytes read in
 * any 10 s stay within a few percent of the rate. */
uint64_t cbfs_ratelimit_chunk(const CbfsRateLimit *rl, uint64_t max);
void cbfs_ratelimit_free(CbfsRateLimit *rl);

/* The command's limit (--max-rate, or max_rate in the configuration), for
 * the places that read in bulk: backup's reads of the data directory,
 * restore's, check --read-data's and copy's of the repository, a mount's
 * hydration and read-ahead.  NULL: no limit.  Set before threads start. */
void cbfs_ratelimit_set_global(CbfsRateLimit *rl);
CbfsRateLimit *cbfs_ratelimit_global(void);

#endif
