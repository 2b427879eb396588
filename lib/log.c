/*
 * log.c - stderr messages and the terminal progress line.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cbfs/log.h"

static const char *progname = "cbfs";
static enum cbfs_log_level max_level = CBFS_LOG_INFO;
static int progress_shown;

void cbfs_log_set_progname(const char *name)
{
    progname = name;
}

const char *cbfs_log_get_progname(void)
{
    return progname;
}

void cbfs_log_set_level(enum cbfs_log_level level)
{
    max_level = level;
}

enum cbfs_log_level cbfs_log_get_level(void)
{
    return max_level;
}

void cbfs_log(enum cbfs_log_level level, const char *fmt, ...)
{
    static const char *const tags[] = {"", "warning: ", "", "debug: "};
    char line[2048];
    int n;
    va_list ap;

    if (level > max_level)
        return;
    n = snprintf(line, sizeof(line), "%s%s: %s", progress_shown ? "\r\033[K" : "", progname,
                 tags[level]);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t) n, fmt, ap);
    va_end(ap);
    if (n >= (int) sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    progress_shown = 0;
    (void) !write(STDERR_FILENO, line, (size_t) n);
}

void cbfs_progress(const char *fmt, ...)
{
    char line[512];
    int n;
    va_list ap;

    if (!isatty(STDERR_FILENO))
        return;
    n = snprintf(line, sizeof(line), "\r\033[K");
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t) n, fmt, ap);
    va_end(ap);
    if (n >= (int) sizeof(line))
        n = sizeof(line) - 1;
    progress_shown = 1;
    (void) !write(STDERR_FILENO, line, (size_t) n);
}

void cbfs_progress_end(void)
{
    if (progress_shown)
        (void) !write(STDERR_FILENO, "\r\033[K", 4);
    progress_shown = 0;
}
