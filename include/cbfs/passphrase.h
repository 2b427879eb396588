/*
 * passphrase.h - where the passphrase of an encrypted repository comes from.
 *
 * The current passphrase, first found of:
 *   1. the file named on the command line (--passphrase-file, mount's
 *      -o passphrase_file=): cbfs_passphrase_set_file
 *   2. $CBFS_PASSPHRASE
 *   3. the file named by $CBFS_PASSPHRASE_FILE
 *   4. a prompt on the terminal (/dev/tty, echo off), only when standard
 *      input is a terminal
 * A new passphrase (cbfs key change): --new-passphrase-file, then
 * $CBFS_NEW_PASSPHRASE, then a prompt (asked twice).
 *
 * A passphrase file is refused when its group or others have any access
 * (as PostgreSQL refuses such a .pgpass); its first line (without "\n" or
 * "\r\n") is the passphrase.  A passphrase is never
 * logged; every buffer that held one is wiped before it is freed.
 *
 * Thread safety: the setters are for a command's option parsing, before any
 * thread starts; cbfs_passphrase_read may run on any thread.
 */
#ifndef CBFS_PASSPHRASE_H
#define CBFS_PASSPHRASE_H

#include <stdbool.h>

#include "cbfs/error.h"

enum cbfs_passphrase_kind {
    CBFS_PASSPHRASE_CURRENT, /* the repository's passphrase */
    CBFS_PASSPHRASE_NEW,     /* a new one (cbfs key change) */
    CBFS_PASSPHRASE_DEST,    /* cbfs copy's destination: --dest-passphrase-file,
                                $CBFS_DEST_PASSPHRASE, $CBFS_DEST_PASSPHRASE_FILE,
                                else the current one */
};

/* The passphrase files named on the command line (process-wide; they win
 * over the environment).  path is made absolute: a daemon or PostgreSQL's
 * restore_command reads it from elsewhere. */
void cbfs_passphrase_set_file(const char *path);
void cbfs_passphrase_set_new_file(const char *path);
void cbfs_passphrase_set_dest_file(const char *path);

/* The file the current passphrase is read from, if that is where it comes
 * from (source 1, or 3 when $CBFS_PASSPHRASE is not set); else NULL.
 * Borrowed. */
const char *cbfs_passphrase_file(void);

/* Read a passphrase of kind.  prompt_for names the repository in a prompt;
 * confirm asks a prompt twice (a new passphrase).  0 and *ret (free it with
 * cbfs_passphrase_free); -ENOENT with err set when no source has one
 * ("no passphrase was given ..."), CBFS_EXIT_USAGE; other errors (a file
 * that cannot be read or that others can read, prompts that differ, an empty
 * new passphrase) CBFS_EXIT_USAGE.  Messages name no repository. */
int cbfs_passphrase_read(enum cbfs_passphrase_kind kind, const char *prompt_for, bool confirm,
                         char **ret, CbfsError *err);
/* Wipe and free (NULL is fine). */
void cbfs_passphrase_free(char *p);

/* Read the current passphrase now, from wherever it comes, and put it in
 * $CBFS_PASSPHRASE (forgetting the command line's file), so that child
 * processes find it without asking again and without a file they may not
 * be able to read (verify's mount and its PostgreSQL server, whose
 * restore_command runs cbfs wal-fetch).  0 and nothing done when no source
 * has one. */
int cbfs_passphrase_export(const char *prompt_for, CbfsError *err);

#endif
