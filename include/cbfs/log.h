/*
 * log.h - messages to stderr, PostgreSQL style: "cbfs: <message>" for
 * errors, "cbfs: warning: ...", "cbfs: ..." for information.  Thread-safe:
 * one message is one write(2).  Secrets must never be passed here.
 */
#ifndef CBFS_LOG_H
#define CBFS_LOG_H

enum cbfs_log_level { CBFS_LOG_ERROR, CBFS_LOG_WARNING, CBFS_LOG_INFO, CBFS_LOG_DEBUG };

/* Program name used as prefix ("cbfs", "mount.cbfs"); default "cbfs". */
void cbfs_log_set_progname(const char *name);
const char *cbfs_log_get_progname(void);
/* Messages above this level are dropped (default CBFS_LOG_INFO). */
void cbfs_log_set_level(enum cbfs_log_level level);
enum cbfs_log_level cbfs_log_get_level(void);

void cbfs_log(enum cbfs_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define cbfs_error(...)   cbfs_log(CBFS_LOG_ERROR, __VA_ARGS__)
#define cbfs_warning(...) cbfs_log(CBFS_LOG_WARNING, __VA_ARGS__)
#define cbfs_info(...)    cbfs_log(CBFS_LOG_INFO, __VA_ARGS__)
#define cbfs_debug(...)   cbfs_log(CBFS_LOG_DEBUG, __VA_ARGS__)

/* A progress line, redrawn in place ("\r...") when stderr is a terminal;
 * nothing otherwise.  cbfs_progress_end() clears it. */
void cbfs_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cbfs_progress_end(void);

#endif
