/*
 * util.h - small helpers every module uses: allocation that never returns
 * NULL, hashing and hex, sizes and times, durable local file writes.
 */
#ifndef CBFS_UTIL_H
#define CBFS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "cbfs/error.h"

#define CBFS_SHA256_LEN   32
#define CBFS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Allocation: on failure print "out of memory" and abort.  Caller frees. */
void *cbfs_xmalloc(size_t n);
void *cbfs_xcalloc(size_t n, size_t size);
void *cbfs_xrealloc(void *p, size_t n);
char *cbfs_xstrdup(const char *s);
char *cbfs_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Little-endian integers in byte buffers (the repository's formats). */
static inline void cbfs_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static inline void cbfs_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static inline uint32_t cbfs_get_le32(const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

static inline uint64_t cbfs_get_le64(const uint8_t *p)
{
    return (uint64_t) cbfs_get_le32(p) | (uint64_t) cbfs_get_le32(p + 4) << 32;
}

/* SHA-256 of a buffer. */
void cbfs_sha256(const void *data, size_t len, uint8_t out[CBFS_SHA256_LEN]);
/* Lowercase hex of n bytes into out (2n+1 bytes). */
void cbfs_hex_encode(const uint8_t *in, size_t n, char *out);
/* Parse exactly 2n hex digits into n bytes: 0 or -EINVAL. */
int cbfs_hex_decode(const char *in, uint8_t *out, size_t n);
/* n random bytes from the OS. */
void cbfs_random_bytes(void *buf, size_t n);

/* "64k", "64K", "65536", "1M", "2G", "1T" (optionally with B): 0 or -EINVAL. */
int cbfs_parse_size(const char *s, uint64_t *ret);
/* true/yes/on/1 or false/no/off/0, any case: 0, else -1. */
int cbfs_parse_bool(const char *s, bool *ret);
/* Non-negative decimal integer within [min,max]: 0 or -EINVAL. */
int cbfs_parse_int(const char *s, long min, long max, long *ret);
/* "1.5 GB"-style human size into buf. */
void cbfs_format_size(uint64_t bytes, char *buf, size_t len);
/* ISO 8601 UTC "2026-11-21T10:30:00Z" into buf (>= 21 bytes). */
void cbfs_format_time(time_t t, char *buf, size_t len);
/* Monotonic seconds. */
double cbfs_now(void);
/* The same in nanoseconds. */
int64_t cbfs_now_ns(void);

/* Local files.  All return 0 or -errno and set err naming the path. */
int cbfs_mkdir_p(const char *path, mode_t mode, CbfsError *err);
/* Is path an empty folder?  An absent one counts as empty; *ret_exists
 * (unless NULL) tells which. */
bool cbfs_dir_empty(const char *path, bool *ret_exists);
/* Is something mounted on path (its device differs from its parent's)?
 * False when path cannot be read, as a mount whose daemon died. */
bool cbfs_is_mount_point(const char *path);
/* qsort/bsearch comparison of two char * (an array of strings). */
int cbfs_cmp_strp(const void *a, const void *b);
int cbfs_read_file(const char *path, uint8_t **ret_buf, size_t *ret_len, CbfsError *err);
/* Write data to path through a temp file in the same directory, fsync, rename,
 * fsync the directory.  The file is either absent or complete. */
int cbfs_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                           CbfsError *err);
int cbfs_fsync_dir(const char *path, CbfsError *err);
/* Remove path and everything below it, best effort, without following
 * links or entering another file system (a mount left inside stays). */
void cbfs_remove_tree(const char *path);
/* Sleep ms milliseconds (through signals). */
void cbfs_sleep_ms(long ms);
/* Read/write the whole buffer, retrying on EINTR and short transfers. */
int cbfs_pread_full(int fd, void *buf, size_t len, off_t off, size_t *ret_n);
int cbfs_pwrite_full(int fd, const void *buf, size_t len, off_t off);
int cbfs_write_full(int fd, const void *buf, size_t len);

/* A pause point for tests that force an interleaving of two processes
 * (failpoints): when CBFS_TEST_PAUSE (a comma-separated list) names point,
 * create $CBFS_TEST_PAUSE_DIR/<point>.reached, then wait until
 * $CBFS_TEST_PAUSE_DIR/<point>.go exists.  Nothing when unset. */
void cbfs_test_pause(const char *point);

/* True if every byte is zero. */
bool cbfs_is_zero(const void *buf, size_t len);

/* Single-quote a string for a PostgreSQL configuration file value. buf caller frees. */
char *cbfs_pg_quote(const char *s);

/* Simple growable string. */
typedef struct CbfsBuf {
    char *data; /* NUL-terminated; owned */
    size_t len;
    size_t cap;
} CbfsBuf;
void cbfs_buf_init(CbfsBuf *b);
void cbfs_buf_release(CbfsBuf *b);
void cbfs_buf_append(CbfsBuf *b, const void *data, size_t len);
/* Make room for at least n bytes in total without reallocating later. */
void cbfs_buf_reserve(CbfsBuf *b, size_t n);
void cbfs_buf_printf(CbfsBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A library loaded at run time (dlopen) rather than linked: its functions
 * land in slots.  0, or -1 with "could not load LIB: ..." in errbuf. */
typedef struct CbfsDlSym {
    void **slot;
    const char *name;
} CbfsDlSym;
int cbfs_dl_load(const char *soname, const char *what, const CbfsDlSym *syms, size_t n,
                 char *errbuf, size_t errlen);

#endif
