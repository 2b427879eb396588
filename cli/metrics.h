/*
 * metrics.h - the --metrics-file of scheduled jobs (`cbfs verify`, `cbfs
 * check`): Prometheus text format, for node_exporter's textfile collector.
 *
 * Written atomically (temp file, rename), so a collector never reads half a
 * file.  For job J and repository R (the location as shown, no secrets):
 *
 *   cbfs_J_success{repository="R"}                      1 or 0
 *   cbfs_J_last_run_timestamp_seconds{repository="R"}   end of this run
 *   cbfs_J_last_success_timestamp_seconds{repository="R"}
 *         end of the last run that passed: this one, or the value found in
 *         the file being replaced (0 if none), so alerts can fire on age
 *   cbfs_J_duration_seconds{repository="R"}
 *   cbfs_J_bytes_checked{repository="R"}
 *   cbfs_J_failures{repository="R"}                     problems found
 */
#ifndef CBFS_CLI_METRICS_H
#define CBFS_CLI_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "cbfs/error.h"

typedef struct CmdMetrics {
    const char *job;        /* "verify" or "check" */
    const char *repository; /* as shown in messages */
    bool success;
    double duration;
    uint64_t bytes_checked;
    uint64_t failures;
} CmdMetrics;

int cmd_metrics_write(const char *path, const CmdMetrics *m, CbfsError *err);

#endif
