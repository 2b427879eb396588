/*
 * metrics.c - Prometheus text-format metrics files (see metrics.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cbfs/util.h"
#include "metrics.h"

/* The last-success time recorded in the file being replaced, or 0. */
static double previous_success(const char *path, const char *job)
{
    uint8_t *buf = NULL;
    size_t len;
    double t = 0;
    char *name = cbfs_xasprintf("cbfs_%s_last_success_timestamp_seconds{", job);

    if (cbfs_read_file(path, &buf, &len, NULL) == 0) {
        for (char *line = (char *) buf; line && *line;) {
            char *nl = strchr(line, '\n');
            if (nl)
                *nl = '\0';
            if (strncmp(line, name, strlen(name)) == 0) {
                char *sp = strrchr(line, ' ');
                if (sp)
                    t = strtod(sp + 1, NULL);
            }
            line = nl ? nl + 1 : NULL;
        }
    }
    free(buf);
    free(name);
    return t;
}

/* A label value with \, " and newlines escaped. */
static void label_value(CbfsBuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            cbfs_buf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            cbfs_buf_append(b, "\\n", 2);
        else
            cbfs_buf_append(b, s, 1);
    }
}

static void metric(CbfsBuf *b, const CmdMetrics *m, const char *name, const char *help,
                   const char *value)
{
    cbfs_buf_printf(b, "# HELP cbfs_%s_%s %s\n# TYPE cbfs_%s_%s gauge\ncbfs_%s_%s{repository=\"",
                    m->job, name, help, m->job, name, m->job, name);
    label_value(b, m->repository);
    cbfs_buf_printf(b, "\"} %s\n", value);
}

int cmd_metrics_write(const char *path, const CmdMetrics *m, CbfsError *err)
{
    struct timespec now;
    double t, last;
    char v[64];
    CbfsBuf b;
    int rc;

    clock_gettime(CLOCK_REALTIME, &now);
    t = (double) now.tv_sec + (double) now.tv_nsec / 1e9;
    last = m->success ? t : previous_success(path, m->job);
    cbfs_buf_init(&b);
    metric(&b, m, "success", "1 if the last run passed, 0 if it did not", m->success ? "1" : "0");
    snprintf(v, sizeof(v), "%.3f", t);
    metric(&b, m, "last_run_timestamp_seconds", "when the last run ended", v);
    snprintf(v, sizeof(v), "%.3f", last);
    metric(&b, m, "last_success_timestamp_seconds", "when the last passing run ended (0: never)",
           v);
    snprintf(v, sizeof(v), "%.3f", m->duration);
    metric(&b, m, "duration_seconds", "duration of the last run", v);
    snprintf(v, sizeof(v), "%llu", (unsigned long long) m->bytes_checked);
    metric(&b, m, "bytes_checked", "bytes read and verified by the last run", v);
    snprintf(v, sizeof(v), "%llu", (unsigned long long) m->failures);
    metric(&b, m, "failures", "problems found by the last run", v);
    rc = cbfs_write_file_atomic(path, b.data, b.len, 0644, err);
    if (rc < 0)
        cbfs_error_prefix(err, "could not write metrics file \"%s\"", path);
    cbfs_buf_release(&b);
    return rc;
}
