/*
 * pgserver.h - a throwaway PostgreSQL server on a data directory that is not
 * ours to configure (a mounted backup): started as the given user on a
 * private Unix socket, with its own pg_hba.conf (trust, local only), logging
 * to a file, stopped (immediately: nothing it wrote is kept) by pid.
 *
 * The server is started in a process group of its own, so a terminal's ^C
 * reaches only the caller, which decides the order of the teardown; and
 * with a parent-death signal, so it does not outlive a caller killed with
 * SIGKILL.
 */
#ifndef CBFS_PGSERVER_H
#define CBFS_PGSERVER_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

#include "cbfs/error.h"

typedef struct PgServer {
    char *bindir;  /* where postgres lives */
    char *datadir; /* the data directory */
    char *workdir; /* private: socket, log, hba file; owned by the user */
    char *user;    /* OS user the server runs as */
    uid_t uid;
    gid_t gid;
    int port;
    char **settings;  /* extra "name=value" settings (-c), NULL-terminated or NULL */
    const char *name; /* NULL, or several servers share workdir: log NAME.log, cluster_name */
    bool detach;      /* outlives the caller: no parent-death signal, not our child */
    pid_t pid;        /* the postmaster, 0 when not running */
    char *log;        /* workdir/postgres.log (workdir/NAME.log) */
} PgServer;

/* The bin directory of PostgreSQL major version major: given (checked), else
 * the Debian and RHEL locations, else the directory of pg_config --bindir
 * found in PATH.  CBFS_EXIT_UNCHECKED if none has a postgres executable. */
int pgserver_find_bindir(int major, const char *given, char **ret, CbfsError *err);

/* A TCP port nothing listens on (the server listens only on its socket, but
 * the port also names the socket and keys the shared memory). */
int pgserver_free_port(void);

/* Fork and exec the postmaster (detached: in a session of its own, its
 * parent gone).  0 once it is started (not yet ready). */
int pgserver_start(PgServer *s, CbfsError *err);

enum pgserver_state {
    PGSERVER_READY,       /* accepts connections and is out of recovery */
    PGSERVER_EXITED,      /* the postmaster is gone; see its log */
    PGSERVER_INTERRUPTED, /* *stop became non-zero */
};
/* Wait until the server accepts connections as superuser user_name and
 * has left recovery (the recovery target was reached and it promoted), the
 * postmaster exits, or *stop is set. */
enum pgserver_state pgserver_wait_ready(PgServer *s, const char *dbuser,
                                        volatile sig_atomic_t *stop, CbfsError *err);

/* Immediate shutdown (SIGQUIT), SIGKILL after a grace period; waits for the
 * postmaster.  Safe to call when not running. */
void pgserver_stop(PgServer *s);
/* Fast shutdown (SIGINT: sessions end, a checkpoint is written), then as
 * pgserver_stop if it has not stopped within grace_s seconds. */
void pgserver_stop_fast(PgServer *s, int grace_s);
/* Is s->pid still a postgres postmaster running in s->datadir (a pid read
 * back from a file may have been reused since)? */
bool pgserver_is_ours(const PgServer *s);

/* The last FATAL or PANIC line of the log ("" if none) and whether the
 * startup process had begun reading the data directory ("database system
 * was ..."), which tells a bad backup from a server that could not start.
 * *ret_line: caller frees. */
void pgserver_log_verdict(const PgServer *s, char **ret_line, bool *ret_recovery_started);

#endif
