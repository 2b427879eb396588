/*
 * wal.h - WAL file naming, LSNs, segment headers and timeline history files.
 *
 * Names: segment "TTTTTTTTLLLLLLLLSSSSSSSS" (24 hex digits), partial segment
 * "<segment>.partial", history file "TTTTTTTT.history", backup history file
 * "<segment>.XXXXXXXX.backup".
 */
#ifndef CBFS_WAL_H
#define CBFS_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CBFS_WAL_NAME_MAX 64

enum cbfs_wal_kind {
    CBFS_WAL_INVALID = 0,
    CBFS_WAL_SEGMENT,
    CBFS_WAL_PARTIAL,
    CBFS_WAL_HISTORY,
    CBFS_WAL_BACKUP_HISTORY,
};

/* Classify a WAL file name (no directory part); CBFS_WAL_INVALID for anything
 * else, including names with '/' or wrong length/case.  ret_tli may be NULL. */
enum cbfs_wal_kind cbfs_wal_classify(const char *name, uint32_t *ret_tli);

/* Parse "X/Y" (hex, as PostgreSQL prints LSNs).  0 or -EINVAL. */
int cbfs_lsn_parse(const char *s, uint64_t *ret_lsn);
/* Format as "X/Y" with uppercase hex into buf (at least 20 bytes). */
void cbfs_lsn_format(uint64_t lsn, char *buf, size_t len);

/* A timeline history file ("TTTTTTTT.history"): one entry per ancestor
 * timeline, oldest first, with the LSN where the next timeline branched off
 * it.  Comment and blank lines are skipped.  *ret: caller frees (NULL when
 * n is 0).  -EINVAL if a line is not "<tli> <X/Y> [reason]" or the
 * timelines or LSNs go backwards. */
typedef struct CbfsTliSwitch {
    uint32_t tli;
    uint64_t end;
} CbfsTliSwitch;
int cbfs_wal_parse_history(const char *text, CbfsTliSwitch **ret, size_t *ret_n);

/* Segment number containing byte lsn for segment size seg_size (a power of two). */
uint64_t cbfs_wal_segno(uint64_t lsn, uint32_t seg_size);
/* Segment file name for timeline tli and segment number segno. buf >= 25 bytes. */
void cbfs_wal_segname(uint32_t tli, uint64_t segno, uint32_t seg_size, char *buf, size_t len);
/* Parse a segment name back: 0 or -EINVAL. */
int cbfs_wal_parse_segname(const char *name, uint32_t seg_size, uint32_t *ret_tli,
                           uint64_t *ret_segno);

/* From the first page of a WAL segment (at least 40 bytes): the long page
 * header's system identifier, segment size and timeline.  -EINVAL if the
 * buffer does not start with a valid long page header (magic, XLP_LONG_HEADER). */
int cbfs_wal_segment_header(const uint8_t *buf, size_t len, uint64_t *ret_sysid,
                            uint32_t *ret_seg_size, uint32_t *ret_tli);

/* The latest end time (commit or abort, in Unix microseconds) of the
 * transactions whose records are whole in segment seg (len bytes, one whole
 * segment), the times recovery_target_time is compared with.  Records are
 * read up to the first one that is not valid (CRC, page address): the end of
 * the WAL written.  1 if one was found, 0 if none, -EINVAL if seg is not a
 * segment. */
int cbfs_wal_last_xact_time(const uint8_t *seg, size_t len, int64_t *ret_us);

/* Called for each whole record, in order: its LSN (where it begins), its
 * end (where the next one begins, as XLogInsert returns it: what
 * pg_create_restore_point() says) and its bytes (len: xl_tot_len; the
 * XLogRecord header first, CRC checked).  Return 0 to go on, > 0 to stop,
 * < 0 to fail the scan with that. */
typedef int (*cbfs_wal_record_cb)(uint64_t lsn, uint64_t end, const uint8_t *rec, uint32_t len,
                                  void *ctx);
/* Every whole record of buf: one segment, or several consecutive ones
 * back to back (len a multiple of the segment size), read up to the first
 * record that is not valid (the end of the WAL written).  A record begun
 * before buf or going on after it is skipped.  -EINVAL if buf does not
 * start with a segment's long page header. */
int cbfs_wal_scan(const uint8_t *buf, size_t len, cbfs_wal_record_cb cb, void *ctx);
/* The restore point named name (pg_create_restore_point, also as Citus's
 * citus_create_restore_point writes it on every node) in buf (as for
 * cbfs_wal_scan): 1 and its LSN, end and time (Unix microseconds; ret_end
 * and ret_us may be NULL) for the first such record, 0 if there is none,
 * -EINVAL. */
int cbfs_wal_find_restore_point(const uint8_t *buf, size_t len, const char *name, uint64_t *ret_lsn,
                                uint64_t *ret_end, int64_t *ret_us);

#endif
