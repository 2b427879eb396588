/*
 * config.h - settings from the environment and the configuration files
 * (DESIGN §9: command line over environment over file).
 *
 * Files, later ones overriding earlier ones: /etc/cbfs.conf, then
 * $XDG_CONFIG_HOME/cbfs.conf (default ~/.config/cbfs.conf); or, when
 * CBFS_CONFIG is set, that file alone.  Format: "key = value" lines, '#'
 * comments.  A missing file is no error; an unreadable or malformed one is.
 * A secret (s3_secret_access_key, s3_session_token) is taken from a file
 * only if the file is not readable by others.
 *
 * Values are read once per process and never change; thread-safe after the
 * first call.
 */
#ifndef CBFS_CONFIG_H
#define CBFS_CONFIG_H

#include <stdbool.h>

#include "cbfs/error.h"

/* The setting: the first of the environment variables envs (a NULL-ended
 * list, may be NULL) that is set and not empty, else key in the files, else
 * NULL.  -EINVAL and err if a file cannot be read or parsed, or if secret and
 * the value comes from a file others can read.  *ret is borrowed (it lives
 * as long as the process). */
int cbfs_config_get(const char *key, const char *const *envs, bool secret, const char **ret,
                    CbfsError *err);

#endif
