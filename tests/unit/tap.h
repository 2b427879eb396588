/*
 * tap.h - a minimal TAP producer for the unit tests.  Each test program
 * prints "1..N" at the end (done_testing) and exits non-zero if any check
 * failed, so meson's TAP protocol and a plain run agree.
 */
#ifndef CBFS_TAP_H
#define CBFS_TAP_H

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>

static int tap_count, tap_failed;

/* A description on one line: control characters (test data often has them)
 * are shown as \xNN so they cannot break the TAP stream. */
__attribute__((format(printf, 1, 2))) static inline void tap_print_desc(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    for (const unsigned char *s = (const unsigned char *) buf; *s; s++) {
        if (*s < 0x20 || *s == 0x7f)
            printf("\\x%02x", *s);
        else
            putchar(*s);
    }
    putchar('\n');
}

#define ok(cond, ...)                                                                              \
    do {                                                                                           \
        int ok_ = (cond) ? 1 : 0;                                                                  \
        tap_count++;                                                                               \
        if (!ok_)                                                                                  \
            tap_failed++;                                                                          \
        printf("%sok %d - ", ok_ ? "" : "not ", tap_count);                                        \
        tap_print_desc(__VA_ARGS__);                                                               \
        if (!ok_)                                                                                  \
            printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
    } while (0)

#define is_int(got, want, ...)                                                                     \
    do {                                                                                           \
        long long g_ = (long long) (got), w_ = (long long) (want);                                 \
        ok(g_ == w_, __VA_ARGS__);                                                                 \
        if (g_ != w_)                                                                              \
            printf("#   got %lld, want %lld\n", g_, w_);                                           \
    } while (0)

#define is_str(got, want, ...)                                                                     \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        int same_ = (g_ && w_) ? strcmp(g_, w_) == 0 : g_ == w_;                                   \
        ok(same_, __VA_ARGS__);                                                                    \
        if (!same_)                                                                                \
            printf("#   got \"%s\", want \"%s\"\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)");       \
    } while (0)

/* rm -rf path (test temp dirs). */
static int tap_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void) sb;
    (void) flag;
    (void) ftw;
    return remove(path);
}

__attribute__((unused)) static void rm_rf(const char *path)
{
    nftw(path, tap_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* s with control characters escaped, for test names (static buffer). */
__attribute__((unused)) static const char *show(const char *s)
{
    static char buf[256];
    size_t n = 0;

    for (; *s && n + 5 < sizeof(buf); s++) {
        if ((unsigned char) *s < 0x20)
            n += (size_t) snprintf(buf + n, sizeof(buf) - n, "\\x%02x", (unsigned char) *s);
        else
            buf[n++] = *s;
    }
    buf[n] = '\0';
    return buf;
}

static inline int done_testing(void)
{
    printf("1..%d\n", tap_count);
    return tap_failed ? 1 : 0;
}

#endif
