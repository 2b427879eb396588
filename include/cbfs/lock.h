/*
 * lock.h - who is working on a repository (DESIGN §3.9).
 *
 * Two kinds of "holder" objects, each a kv naming a process: command, host,
 * boot_id, pid, pid_start (the process's start time in clock ticks, so a
 * reused pid is not mistaken for the holder), since, token (random).
 *
 *   lock                 the repository lock: expire, gc and key change
 *                        take it (create-once, so one holder at a time)
 *   running/<label>.<r>  a running backup's registration: created before
 *                        the backup looks at the repository's packs,
 *                        removed once its record is stored (or it failed);
 *                        gc deletes nothing while one may still be alive
 *   mounts/<label>.<r>   a mount's registration: created by the mount
 *                        daemon, removed when it ends; expire keeps a
 *                        backup with a live one as if it were pinned
 *
 * A holder is alive when it runs on this host (same host name and boot id)
 * and its pid has the recorded start time; a holder of another host is
 * taken to be alive until it is older than a timeout (gc's
 * --running-timeout), because its process cannot be looked at.
 */
#ifndef CBFS_LOCK_H
#define CBFS_LOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cbfs/repo.h"

#define CBFS_LOCK_KEY "lock"

typedef struct CbfsHolder {
    char key[160]; /* the object */
    char command[32];
    char label[CBFS_LABEL_MAX + 1]; /* registrations: the backup's label */
    char host[128];
    char boot_id[40];
    long pid;
    uint64_t pid_start;
    time_t since;
    char token[33];
    char where[512]; /* a mount's registration: its mount point, else "" */
} CbfsHolder;

/* Take the repository lock for command ("gc", "expire", ...).  A lock left
 * by a dead process of this host is removed (with a warning) and taken.
 * Held by someone else: "repository \"%s\" is locked by %s (host %s, pid
 * %ld) since %s", CBFS_EXIT_ERROR. */
int cbfs_lock_acquire(CbfsRepo *r, const char *command, CbfsHolder *ret, CbfsError *err);
/* Remove the lock if it is still ours (a missing lock is no error); a
 * failure is a warning: the next taker breaks a dead holder's lock. */
void cbfs_lock_release(CbfsRepo *r, const CbfsHolder *mine);
/* The current holder of the lock: 0, or -ENOENT when unlocked. */
int cbfs_lock_read(CbfsRepo *r, CbfsHolder *ret, CbfsError *err);

/* Register a running backup; ret->key names the object. */
int cbfs_running_register(CbfsRepo *r, const char *label, CbfsHolder *ret, CbfsError *err);
/* 0 if the registration still exists, -ENOENT if gc removed it. */
int cbfs_running_check(CbfsRepo *r, const CbfsHolder *mine, CbfsError *err);
/* Remove a registration, a backup's or a mount's (already gone: 0). */
int cbfs_registration_remove(CbfsRepo *r, const CbfsHolder *mine, CbfsError *err);
/* The same at the end of a command: a failure is a warning ("could not
 * remove the backup's registration: ..."), as the next gc or expire
 * removes a dead holder's. */
void cbfs_registration_release(CbfsRepo *r, const CbfsHolder *mine);
/* Every registration (unreadable ones are warned about and skipped).
 * *ret: caller frees. */
int cbfs_running_list(CbfsRepo *r, CbfsHolder **ret, size_t *ret_n, CbfsError *err);

/* Register a mount of backup label (mounts/<label>.<r>): expire keeps the
 * backup while the registration lives. */
int cbfs_mount_register(CbfsRepo *r, const char *label, CbfsHolder *ret, CbfsError *err);
int cbfs_mount_list(CbfsRepo *r, CbfsHolder **ret, size_t *ret_n, CbfsError *err);
/* A reader of backup label that expire must keep it for (command "mount",
 * "copy"; where: the mount point, or NULL): registered as a mount (a repository that refuses the
 * registration gets a warning, and *registered stays false), then, once no
 * live expire holds the lock (waited for up to 60 s), the backup's record
 * read again: gone is "could not COMMAND backup \"L\": it was expired
 * meanwhile", CBFS_EXIT_ERROR.  Remove with cbfs_registration_remove. */
int cbfs_reader_register(CbfsRepo *r, const char *label, const char *command, const char *where,
                         CbfsHolder *ret, bool *registered, CbfsError *err);

/* See above.  timeout: seconds after which another host's holder is taken
 * to be gone. */
bool cbfs_holder_alive(const CbfsHolder *h, int64_t timeout, time_t now);
/* "gc (host db1, pid 4242) since 2026-11-21T10:30:00Z" into buf. */
void cbfs_holder_describe(const CbfsHolder *h, char *buf, size_t len);

#endif
