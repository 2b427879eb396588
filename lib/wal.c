/*
 * wal.c - WAL file names, LSNs and segment headers, as PostgreSQL writes them.
 *
 * A WAL position (LSN) is a 64-bit byte offset into the WAL stream, printed
 * as two 32-bit halves "%X/%X".  The stream is cut into segments of seg_size
 * bytes (a power of two, 1 MB to 1 GB, fixed at initdb); segment number segno
 * on timeline tli is the file "TTTTTTTTLLLLLLLLSSSSSSSS", where L is segno
 * divided by the number of segments in 4 GB of WAL and S the remainder.
 *
 * Invariants:
 *  - names are uppercase hex, exactly as PostgreSQL writes them; anything
 *    else (lowercase, a directory part, extra characters, timeline 0) is not
 *    a WAL file, so an archive never mixes in files it did not write;
 *  - cbfs_wal_parse_segname() accepts exactly the names cbfs_wal_segname()
 *    produces for the same seg_size and a non-zero timeline.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/util.h"
#include "cbfs/wal.h"

#define WAL_SEG_MIN (1u << 20) /* 1 MB */
#define WAL_SEG_MAX (1u << 30) /* 1 GB */

/* xlp_magic of PostgreSQL 13 (0xD106) through 17 (0xD116) */
#define XLP_MAGIC_MIN   0xD106
#define XLP_MAGIC_MAX   0xD116
#define XLP_LONG_HEADER 0x0002

/* XLogLongPageHeaderData where uint64 is 8-byte aligned (x86-64, arm64): field offsets */
#define XLP_MAGIC_OFF       0  /* uint16 */
#define XLP_INFO_OFF        2  /* uint16 */
#define XLP_TLI_OFF         4  /* uint32 */
#define XLP_PAGEADDR_OFF    8  /* uint64 */
#define XLP_SYSID_OFF       24 /* uint64, after xlp_rem_len and padding */
#define XLP_SEG_SIZE_OFF    32 /* uint32 */
#define XLP_XLOG_BLCKSZ_OFF 36 /* uint32 */
#define XLP_LONG_HEADER_LEN 40

static bool is_pow2(uint32_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

static bool valid_seg_size(uint32_t seg_size)
{
    return is_pow2(seg_size) && seg_size >= WAL_SEG_MIN && seg_size <= WAL_SEG_MAX;
}

/* Segments per 4 GB of WAL, i.e. per value of the "L" part of a name. */
static uint64_t segs_per_xlogid(uint32_t seg_size)
{
    return UINT64_C(0x100000000) / seg_size;
}

/* Value of a hex digit, -1 for anything else (lowercase only if allowed). */
static int hexval(char c, bool lower_ok)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (lower_ok && c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int uhex(char c)
{
    return hexval(c, false);
}

/* Parse exactly 8 uppercase hex digits at s. */
static bool parse_hex8(const char *s, uint32_t *ret)
{
    uint32_t v = 0;

    for (int i = 0; i < 8; i++) {
        int d = uhex(s[i]);

        if (d < 0)
            return false;
        v = v << 4 | (uint32_t) d;
    }
    *ret = v;
    return true;
}

/* True if the first n characters of s are uppercase hex digits. */
static bool all_uhex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (uhex(s[i]) < 0)
            return false;
    return true;
}

enum cbfs_wal_kind cbfs_wal_classify(const char *name, uint32_t *ret_tli)
{
    size_t len = strlen(name);
    enum cbfs_wal_kind kind;
    uint32_t tli;

    /* every kind is at least 16 characters and starts with the timeline */
    if (len < 16 || !parse_hex8(name, &tli))
        return CBFS_WAL_INVALID;

    if (len == 24 && all_uhex(name, 24))
        kind = CBFS_WAL_SEGMENT;
    else if (len == 24 + 8 && all_uhex(name, 24) && strcmp(name + 24, ".partial") == 0)
        kind = CBFS_WAL_PARTIAL;
    else if (len == 8 + 8 && strcmp(name + 8, ".history") == 0)
        kind = CBFS_WAL_HISTORY;
    else if (len == 24 + 1 + 8 + 7 && all_uhex(name, 24) && name[24] == '.' &&
             all_uhex(name + 25, 8) && strcmp(name + 33, ".backup") == 0)
        kind = CBFS_WAL_BACKUP_HISTORY;
    else
        return CBFS_WAL_INVALID;

    if (tli == 0)
        return CBFS_WAL_INVALID;
    if (ret_tli)
        *ret_tli = tli;
    return kind;
}

/*
 * One half of an LSN: 1 to 8 hex digits ending at stop.  Either case, as
 * PostgreSQL's pg_lsn input accepts; no sign, space or "0x".
 */
static const char *parse_lsn_half(const char *s, char stop, uint32_t *ret)
{
    uint32_t v = 0;
    int n = 0;

    for (; *s != stop; s++, n++) {
        int d = hexval(*s, true);

        if (d < 0 || n == 8)
            return NULL;
        v = v << 4 | (uint32_t) d;
    }
    if (n == 0)
        return NULL;
    *ret = v;
    return s;
}

int cbfs_lsn_parse(const char *s, uint64_t *ret_lsn)
{
    uint32_t hi, lo;

    s = parse_lsn_half(s, '/', &hi);
    if (!s)
        return -EINVAL;
    if (!parse_lsn_half(s + 1, '\0', &lo))
        return -EINVAL;
    *ret_lsn = (uint64_t) hi << 32 | lo;
    return 0;
}

void cbfs_lsn_format(uint64_t lsn, char *buf, size_t len)
{
    snprintf(buf, len, "%" PRIX32 "/%" PRIX32, (uint32_t) (lsn >> 32), (uint32_t) lsn);
}

int cbfs_wal_parse_history(const char *text, CbfsTliSwitch **ret, size_t *ret_n)
{
    CbfsTliSwitch *sw = NULL;
    size_t n = 0;

    while (*text) {
        size_t len = strcspn(text, "\n");
        char line[256];
        if (len < sizeof(line)) {
            char *p, *end;
            memcpy(line, text, len);
            line[len] = '\0';
            p = line + strspn(line, " \t");
            if (*p && *p != '#') {
                unsigned long tli = strtoul(p, &end, 10);
                char lsn[32];
                size_t l;
                if (end == p || (*end != ' ' && *end != '\t') || tli == 0 || tli > UINT32_MAX)
                    goto bad;
                p = end + strspn(end, " \t");
                l = strcspn(p, " \t");
                if (l == 0 || l >= sizeof(lsn))
                    goto bad;
                memcpy(lsn, p, l);
                lsn[l] = '\0';
                sw = cbfs_xrealloc(sw, (n + 1) * sizeof(*sw));
                sw[n].tli = (uint32_t) tli;
                if (cbfs_lsn_parse(lsn, &sw[n].end) < 0 ||
                    (n > 0 && (sw[n].tli <= sw[n - 1].tli || sw[n].end < sw[n - 1].end)))
                    goto bad;
                n++;
            }
        } else {
            goto bad;
        }
        text += len;
        if (*text == '\n')
            text++;
    }
    *ret = sw;
    *ret_n = n;
    return 0;
bad:
    free(sw);
    return -EINVAL;
}

uint64_t cbfs_wal_segno(uint64_t lsn, uint32_t seg_size)
{
    assert(is_pow2(seg_size));
    return lsn / seg_size;
}

void cbfs_wal_segname(uint32_t tli, uint64_t segno, uint32_t seg_size, char *buf, size_t len)
{
    uint64_t per_id;

    assert(is_pow2(seg_size));
    per_id = segs_per_xlogid(seg_size);
    snprintf(buf, len, "%08" PRIX32 "%08" PRIX32 "%08" PRIX32, tli, (uint32_t) (segno / per_id),
             (uint32_t) (segno % per_id));
}

int cbfs_wal_parse_segname(const char *name, uint32_t seg_size, uint32_t *ret_tli,
                           uint64_t *ret_segno)
{
    uint32_t tli, log, seg;

    if (!valid_seg_size(seg_size) || strlen(name) != 24)
        return -EINVAL;
    if (!parse_hex8(name, &tli) || !parse_hex8(name + 8, &log) || !parse_hex8(name + 16, &seg))
        return -EINVAL;
    /* timeline 0 does not exist; S never reaches a whole 4 GB */
    if (tli == 0 || seg >= segs_per_xlogid(seg_size))
        return -EINVAL;
    if (ret_tli)
        *ret_tli = tli;
    if (ret_segno)
        *ret_segno = (uint64_t) log * segs_per_xlogid(seg_size) + seg;
    return 0;
}

/*
 * The long header opens every segment.  Besides magic and XLP_LONG_HEADER,
 * the other fields must be sane, as PostgreSQL's own page header validation
 * demands: a non-zero timeline, a valid segment size, a page address on a
 * segment boundary and a WAL block size that is a power of two from 1 to
 * 64 kB.  Fields are in host byte order, as the server wrote them.
 *
 * A recycled segment (renamed ahead for reuse, not yet overwritten) keeps
 * the header of its previous life, page address included, so a header that
 * passes here does not prove that the file belongs at its name.
 */
int cbfs_wal_segment_header(const uint8_t *buf, size_t len, uint64_t *ret_sysid,
                            uint32_t *ret_seg_size, uint32_t *ret_tli)
{
    uint16_t magic, info;
    uint32_t tli, seg_size, blcksz;
    uint64_t pageaddr, sysid;

    if (len < XLP_LONG_HEADER_LEN)
        return -EINVAL;
    memcpy(&magic, buf + XLP_MAGIC_OFF, sizeof(magic));
    memcpy(&info, buf + XLP_INFO_OFF, sizeof(info));
    memcpy(&tli, buf + XLP_TLI_OFF, sizeof(tli));
    memcpy(&pageaddr, buf + XLP_PAGEADDR_OFF, sizeof(pageaddr));
    memcpy(&sysid, buf + XLP_SYSID_OFF, sizeof(sysid));
    memcpy(&seg_size, buf + XLP_SEG_SIZE_OFF, sizeof(seg_size));
    memcpy(&blcksz, buf + XLP_XLOG_BLCKSZ_OFF, sizeof(blcksz));

    if (magic < XLP_MAGIC_MIN || magic > XLP_MAGIC_MAX)
        return -EINVAL;
    if (!(info & XLP_LONG_HEADER))
        return -EINVAL;
    if (tli == 0 || !valid_seg_size(seg_size) || pageaddr % seg_size != 0)
        return -EINVAL;
    if (!is_pow2(blcksz) || blcksz < 1024 || blcksz > 65536)
        return -EINVAL;

    if (ret_sysid)
        *ret_sysid = sysid;
    if (ret_seg_size)
        *ret_seg_size = seg_size;
    if (ret_tli)
        *ret_tli = tli;
    return 0;
}

/* ---- transaction end times ------------------------------------------------ */

#define XLP_FIRST_IS_CONTRECORD 0x0001
#define XLP_REM_LEN_OFF         16 /* uint32 */
#define XLP_SHORT_HEADER_LEN    24
#define XLOG_RECORD_LEN         24 /* xl_tot_len .. xl_crc */
#define XLOG_RECORD_CRC_OFF     20
#define RM_XACT_ID              1
#define XLOG_XACT_OPMASK        0x70
#define XLR_BLOCK_ID_DATA_SHORT 255
#define XLR_BLOCK_ID_DATA_LONG  254
#define XLR_BLOCK_ID_ORIGIN     253
#define XLR_BLOCK_ID_TOPLEVEL   252
#define PG_EPOCH_OFFSET_US      INT64_C(946684800000000) /* 2000-01-01 in Unix microseconds */

static uint32_t crc32c_table[256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[i] = c;
    }
}

static uint32_t crc32c_update(uint32_t crc, const uint8_t *p, size_t n)
{
    while (n--)
        crc = crc32c_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

static uint64_t align8(uint64_t v)
{
    return (v + 7) & ~UINT64_C(7);
}

/* The end time of a transaction record (commit or abort, prepared or not),
 * as recoveryStopsBefore reads it: the first field of the main data. */
static bool xact_time(const uint8_t *rec, uint32_t len, int64_t *ret_us)
{
    uint8_t op = rec[16] & XLOG_XACT_OPMASK;
    uint32_t pos = XLOG_RECORD_LEN;
    int64_t t;

    if (rec[17] != RM_XACT_ID || (op != 0x00 && op != 0x20 && op != 0x30 && op != 0x40))
        return false;
    while (pos < len) {
        uint8_t id = rec[pos++];
        uint32_t data_len;
        if (id == XLR_BLOCK_ID_ORIGIN) {
            pos += 2;
        } else if (id == XLR_BLOCK_ID_TOPLEVEL) {
            pos += 4;
        } else if (id == XLR_BLOCK_ID_DATA_SHORT || id == XLR_BLOCK_ID_DATA_LONG) {
            if (id == XLR_BLOCK_ID_DATA_SHORT) {
                if (pos + 1 > len)
                    return false;
                data_len = rec[pos++];
            } else {
                if (pos + 4 > len)
                    return false;
                memcpy(&data_len, rec + pos, 4);
                pos += 4;
            }
            /* no block data precedes it in a transaction record */
            if (data_len < sizeof(t) || pos + sizeof(t) > len)
                return false;
            memcpy(&t, rec + pos, sizeof(t));
            *ret_us = t + PG_EPOCH_OFFSET_US;
            return true;
        } else {
            return false; /* a block reference: not a plain transaction record */
        }
    }
    return false;
}

int cbfs_wal_scan(const uint8_t *buf, size_t len, cbfs_wal_record_cb cb, void *ctx)
{
    uint64_t sysid, start;
    uint32_t seg_size, tli, blcksz, rem_len;
    uint16_t magic, info;
    uint8_t *stream;
    uint64_t *page_lsn; /* the LSN of each page's first stream byte */
    size_t *page_pos, npages = 0, total = 0, pos;
    int rc = 0;

    if (cbfs_wal_segment_header(buf, len, &sysid, &seg_size, &tli) < 0 || len == 0 ||
        len % seg_size != 0)
        return -EINVAL;
    pthread_once(&crc32c_once, crc32c_init);
    memcpy(&blcksz, buf + XLP_XLOG_BLCKSZ_OFF, sizeof(blcksz));
    memcpy(&magic, buf + XLP_MAGIC_OFF, sizeof(magic));
    memcpy(&start, buf + XLP_PAGEADDR_OFF, sizeof(start));
    memcpy(&rem_len, buf + XLP_REM_LEN_OFF, sizeof(rem_len));
    memcpy(&info, buf + XLP_INFO_OFF, sizeof(info));

    /* the record stream without page headers, up to the first page that is
     * not where it should be (the end of the WAL written: a recycled file
     * keeps pages of its earlier life); page headers are multiples of 8, so
     * alignment carries over, also from one segment into the next */
    stream = cbfs_xmalloc(len);
    page_lsn = cbfs_xmalloc((len / blcksz + 1) * sizeof(uint64_t));
    page_pos = cbfs_xmalloc((len / blcksz + 1) * sizeof(size_t));
    for (size_t off = 0; off + blcksz <= len; off += blcksz) {
        uint16_t m;
        uint64_t addr;
        size_t hdr = off % seg_size == 0 ? XLP_LONG_HEADER_LEN : XLP_SHORT_HEADER_LEN;
        memcpy(&m, buf + off + XLP_MAGIC_OFF, sizeof(m));
        memcpy(&addr, buf + off + XLP_PAGEADDR_OFF, sizeof(addr));
        if (m != magic || addr != start + off)
            break;
        page_lsn[npages] = start + off + hdr;
        page_pos[npages++] = total;
        memcpy(stream + total, buf + off + hdr, blcksz - hdr);
        total += blcksz - hdr;
    }
    /* the tail of a record begun before buf */
    pos = info & XLP_FIRST_IS_CONTRECORD ? align8(rem_len) : 0;
    while (pos + XLOG_RECORD_LEN <= total && rc == 0) {
        const uint8_t *rec = stream + pos;
        uint32_t tot_len, crc, want;
        size_t page = pos / (blcksz - XLP_SHORT_HEADER_LEN); /* at or before the record's */
        memcpy(&tot_len, rec, sizeof(tot_len));
        if (tot_len < XLOG_RECORD_LEN || tot_len > total - pos)
            break; /* the end of the WAL written, or a record going on after buf */
        memcpy(&want, rec + XLOG_RECORD_CRC_OFF, sizeof(want));
        crc = crc32c_update(0xFFFFFFFFu, rec + XLOG_RECORD_LEN, tot_len - XLOG_RECORD_LEN);
        crc = crc32c_update(crc, rec, XLOG_RECORD_CRC_OFF) ^ 0xFFFFFFFFu;
        if (crc != want)
            break;
        if (page >= npages)
            page = npages - 1;
        while (page + 1 < npages && page_pos[page + 1] <= pos)
            page++;
        while (page > 0 && page_pos[page] > pos)
            page--;
        {
            /* where the next record goes: as PostgreSQL's XLogInsert
             * returns it, the end of a page rather than past the next one's
             * header */
            size_t end = align8(pos + tot_len), ep = page;
            uint64_t end_lsn;
            while (ep + 1 < npages && page_pos[ep + 1] < end)
                ep++;
            end_lsn = page_lsn[ep] + (end - page_pos[ep]);
            if (ep + 1 == npages && end - page_pos[ep] > blcksz) /* past the last page */
                end_lsn =
                    page_lsn[ep] -
                    (ep % (seg_size / blcksz) == 0 ? XLP_LONG_HEADER_LEN : XLP_SHORT_HEADER_LEN) +
                    blcksz;
            rc = cb(page_lsn[page] + (pos - page_pos[page]), end_lsn, rec, tot_len, ctx);
        }
        pos = align8(pos + tot_len);
    }
    free(stream);
    free(page_lsn);
    free(page_pos);
    return rc < 0 ? rc : 0;
}

typedef struct XactTime {
    int64_t us;
    bool found;
} XactTime;

static int xact_time_cb(uint64_t lsn, uint64_t end, const uint8_t *rec, uint32_t len, void *ctx)
{
    XactTime *x = ctx;
    int64_t t;
    (void) lsn;
    (void) end;
    if (xact_time(rec, len, &t) && (!x->found || t > x->us)) {
        x->us = t;
        x->found = true;
    }
    return 0;
}

int cbfs_wal_last_xact_time(const uint8_t *seg, size_t len, int64_t *ret_us)
{
    XactTime x = {0, false};
    uint32_t seg_size;
    if (cbfs_wal_segment_header(seg, len, NULL, &seg_size, NULL) < 0 || len != seg_size ||
        cbfs_wal_scan(seg, len, xact_time_cb, &x) < 0)
        return -EINVAL;
    if (x.found)
        *ret_us = x.us;
    return x.found ? 1 : 0;
}

/* ---- restore points ------------------------------------------------------- */

#define RM_XLOG_ID         0
#define XLOG_RESTORE_POINT 0x70
#define RESTORE_POINT_LEN  72 /* TimestampTz rp_time, char rp_name[64] */
#define RESTORE_POINT_NAME 64

typedef struct FindPoint {
    const char *name;
    uint64_t lsn, end;
    int64_t us;
    bool found;
} FindPoint;

/* The main data of a record without block references, or NULL. */
static const uint8_t *main_data(const uint8_t *rec, uint32_t len, uint32_t *ret_len)
{
    uint32_t pos = XLOG_RECORD_LEN;
    while (pos < len) {
        uint8_t id = rec[pos++];
        uint32_t n;
        if (id == XLR_BLOCK_ID_ORIGIN) {
            pos += 2;
        } else if (id == XLR_BLOCK_ID_TOPLEVEL) {
            pos += 4;
        } else if (id == XLR_BLOCK_ID_DATA_SHORT) {
            if (pos + 1 > len)
                return NULL;
            n = rec[pos++];
            if (n > len - pos)
                return NULL;
            *ret_len = n;
            return rec + pos;
        } else if (id == XLR_BLOCK_ID_DATA_LONG) {
            if (pos + 4 > len)
                return NULL;
            memcpy(&n, rec + pos, 4);
            pos += 4;
            if (n > len - pos)
                return NULL;
            *ret_len = n;
            return rec + pos;
        } else {
            return NULL; /* block references: not a record this looks for */
        }
    }
    return NULL;
}

static int point_cb(uint64_t lsn, uint64_t end, const uint8_t *rec, uint32_t len, void *ctx)
{
    FindPoint *f = ctx;
    const uint8_t *data;
    uint32_t n;
    char name[RESTORE_POINT_NAME + 1];

    if (rec[17] != RM_XLOG_ID || (rec[16] & 0xF0) != XLOG_RESTORE_POINT ||
        !(data = main_data(rec, len, &n)) || n < RESTORE_POINT_LEN)
        return 0;
    memcpy(name, data + 8, RESTORE_POINT_NAME);
    name[RESTORE_POINT_NAME] = '\0';
    if (strcmp(name, f->name) != 0)
        return 0;
    /* the first one, as recovery stops at the first */
    f->lsn = lsn;
    f->end = end;
    memcpy(&f->us, data, sizeof(f->us));
    f->us += PG_EPOCH_OFFSET_US;
    f->found = true;
    return 1;
}

int cbfs_wal_find_restore_point(const uint8_t *buf, size_t len, const char *name, uint64_t *ret_lsn,
                                uint64_t *ret_end, int64_t *ret_us)
{
    FindPoint f = {name, 0, 0, 0, false};
    int rc = cbfs_wal_scan(buf, len, point_cb, &f);
    if (rc < 0)
        return rc;
    if (!f.found)
        return 0;
    *ret_lsn = f.lsn;
    if (ret_end)
        *ret_end = f.end;
    if (ret_us)
        *ret_us = f.us;
    return 1;
}
