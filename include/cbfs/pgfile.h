/*
 * pgfile.h - PostgreSQL data-directory file rules: what a base backup must
 * not carry, how relation files are named, and data page checksums.
 *
 * Paths are relative to the data directory, '/'-separated, without a leading
 * "./" (e.g. "base/16384/16385_vm", "pg_tblspc/16390/PG_15_202209061/16384/16391.1").
 */
#ifndef CBFS_PGFILE_H
#define CBFS_PGFILE_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#define CBFS_PG_PAGE_SIZE    8192
#define CBFS_PG_RELSEG_PAGES 131072 /* pages per 1 GB relation segment */

enum cbfs_pg_exclude {
    CBFS_PG_KEEP = 0,         /* back it up */
    CBFS_PG_EXCLUDE,          /* skip the entry (file or directory) entirely */
    CBFS_PG_EXCLUDE_CONTENTS, /* directory: keep it (empty), skip everything below */
};

/* Decide for one directory entry by its path alone.  is_dir says whether the
 * entry is a directory.  Covers: postmaster.pid/.opts, backup_label,
 * tablespace_map, backup_manifest, recovery.signal, standby.signal,
 * postgresql.auto.conf.tmp, current_logfiles.tmp, pg_internal.init anywhere,
 * pgsql_tmp* anywhere, temporary relations (t<digits>_<digits>...), and the
 * directories whose contents are excluded (pg_wal, pg_dynshmem, pg_notify,
 * pg_replslot, pg_serial, pg_snapshots, pg_stat_tmp, pg_subtrans) at the top
 * level.  Unlogged relations need the directory listing: see below. */
enum cbfs_pg_exclude cbfs_pg_exclude_path(const char *path, bool is_dir);

/* A relation file name parsed: "16385", "16385_fsm", "16385.2", "16385_vm.1",
 * "16385_init".  Returns true if name (the last path component) is one. */
typedef struct CbfsRelFile {
    uint32_t relfilenode;
    char fork[8];   /* "" for the main fork, else "fsm", "vm", "init" */
    uint32_t segno; /* 0 for the first segment */
} CbfsRelFile;
bool cbfs_pg_parse_relfile(const char *name, CbfsRelFile *ret);

/* True if path lies in a database directory that holds relation files:
 * "base/<oid>/", "global/", "pg_tblspc/<oid>/<PG_version_catversion>/<oid>/". */
bool cbfs_pg_is_relation_dir(const char *dirpath);

/* Unlogged relations: given the names in one database directory, decide
 * whether name belongs to an unlogged relation (one with an "_init" fork in
 * the same directory) and is not its init fork: such files are excluded.
 * names: array of n entry names (last components).  Not sorted. */
bool cbfs_pg_is_unlogged_nonInit(const char *name, const char *const *names, size_t n);

/* The checksum PostgreSQL stores in pd_checksum for page (8192 bytes) with
 * absolute block number blkno (segno * CBFS_PG_RELSEG_PAGES + page in segment). */
uint16_t cbfs_pg_page_checksum(const uint8_t *page, uint32_t blkno);

enum cbfs_pg_page_state {
    CBFS_PG_PAGE_OK = 0, /* checksum matches, or page is new (all zero) */
    CBFS_PG_PAGE_BAD,    /* non-zero page whose checksum does not match; the header
                          * fields are not checked, only the checksum decides */
};
/* Check one page as read from a relation file.  ret_lsn gets the page's
 * pd_lsn (so a caller can tolerate pages written after the backup started). */
enum cbfs_pg_page_state cbfs_pg_page_verify(const uint8_t *page, uint32_t blkno, uint64_t *ret_lsn);

#endif
