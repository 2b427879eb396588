/*
 * test-wal.c - unit tests for lib/wal.c: WAL file names, LSNs and segment
 * headers.
 *
 * The expected names and the segment header below come from PostgreSQL 15
 * itself: pg_walfile_name(), pg_controldata, and the first 40 bytes of a live
 * segment of a cluster made with initdb --wal-segsize=1 and moved to timeline
 * 3, WAL position AC/... with pg_resetwal.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/wal.h"
#include "tap.h"

#define MB (UINT32_C(1) << 20)
#define GB (UINT32_C(1) << 30)

/* ---- names ---- */

static void check_kind(const char *name, enum cbfs_wal_kind kind, uint32_t tli)
{
    uint32_t got_tli = 0xDEADBEEF;

    is_int(cbfs_wal_classify(name, &got_tli), kind, "classify \"%s\"", name);
    is_int(got_tli, tli, "\"%s\": timeline", name);
}

static void test_classify(void)
{
    static const char *const invalid[] = {
        "",
        "0",
        "00000001",
        "00000001000000000000000",   /* 23 digits */
        "0000000100000000000000010", /* 25 digits */
        "0000000100000000000000ab",  /* lowercase */
        "00000001000000000000000G",
        "X00000010000000000000001",
        " 000000010000000000000001",
        "000000010000000000000001 ",
        "000000010000000000000001\n",
        "pg_wal/000000010000000000000001",
        "000000010000000000000001/",
        "/000000010000000000000001",
        "000000000000000000000001", /* timeline 0 */
        "000000000000000000000001.partial",
        "000000010000000000000001.partia",
        "000000010000000000000001.partialx",
        "000000010000000000000001.PARTIAL",
        "000000010000000000000001.done",
        "000000010000000000000001.ready",
        "000000010000000000000001.gz",
        "0000000100000000000000a1.partial",
        "00000000.history",
        "0000000a.history",
        "0000001.history",
        "000000001.history",
        "00000001.History",
        "00000001.history.tmp",
        "00000001history",
        "00000001000000000000000100000001.history",
        "000000000000000000000002.00000028.backup",
        "000000010000000000000002.0000028.backup",
        "000000010000000000000002.000000028.backup",
        "000000010000000000000002.0000002g.backup",
        "000000010000000000000002.0000002a.backup",
        "000000010000000000000002.00000028.backupx",
        "000000010000000000000002.00000028.backup.gz",
        "000000010000000000000002.00000028",
        "000000010000000000000002.backup",
        "000000010000000000000002-00000028.backup",
        "00000001000000000000000.200000028.backup",
        "archive_status",
    };
    uint32_t tli = 7;

    check_kind("000000010000000000000001", CBFS_WAL_SEGMENT, 1);
    check_kind("00000003000000AC00000006", CBFS_WAL_SEGMENT, 3);
    check_kind("0000ABCD00000000000000FF", CBFS_WAL_SEGMENT, 0xABCD);
    check_kind("FFFFFFFFFFFFFFFFFFFFFFFF", CBFS_WAL_SEGMENT, 0xFFFFFFFF);
    check_kind("000000010000000000000001.partial", CBFS_WAL_PARTIAL, 1);
    check_kind("0000000A00000001000000FF.partial", CBFS_WAL_PARTIAL, 10);
    check_kind("00000002.history", CBFS_WAL_HISTORY, 2);
    check_kind("FFFFFFFF.history", CBFS_WAL_HISTORY, 0xFFFFFFFF);
    check_kind("000000010000000000000002.00000028.backup", CBFS_WAL_BACKUP_HISTORY, 1);
    check_kind("00000005000000AB00000FFE.00FFE0F0.backup", CBFS_WAL_BACKUP_HISTORY, 5);

    is_int(cbfs_wal_classify("00000002.history", NULL), CBFS_WAL_HISTORY, "ret_tli may be NULL");
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        tli = 7;
        is_int(cbfs_wal_classify(invalid[i], &tli), CBFS_WAL_INVALID, "\"%s\" is not a WAL file",
               invalid[i]);
        is_int(tli, 7, "\"%s\": ret_tli untouched", invalid[i]);
    }
}

/* ---- LSNs ---- */

static void check_lsn(const char *s, uint64_t want, const char *printed)
{
    uint64_t lsn = 0xDEADBEEF;
    char buf[20];

    is_int(cbfs_lsn_parse(s, &lsn), 0, "parse \"%s\"", s);
    ok(lsn == want, "\"%s\" is %llX", s, (unsigned long long) want);
    cbfs_lsn_format(want, buf, sizeof(buf));
    is_str(buf, printed, "format %llX", (unsigned long long) want);
}

static void test_lsn(void)
{
    static const char *const bad[] = {
        "",
        "/",
        "16/",
        "/B374D848",
        "16",
        "16B374D848",
        "16//B374D848",
        "16/B374D848/",
        "16/1/2",
        "123456789/0",
        "0/123456789",
        "000000016/B374D848",
        " 16/B374D848",
        "16/B374D848 ",
        "16 /B374D848",
        "16/ B374D848",
        "+16/B374D848",
        "-1/0",
        "1/-1",
        "0x16/B374D848",
        "16/0xB374D848",
        "16/B374D848x",
        "g/0",
        "16/B374D848\n",
        "16.B374D848",
        "16:B374D848",
    };
    uint64_t lsn;
    char buf[32];

    check_lsn("16/B374D848", UINT64_C(0x16B374D848), "16/B374D848");
    check_lsn("0/0", 0, "0/0");
    check_lsn("0/1", 1, "0/1");
    check_lsn("1/0", UINT64_C(1) << 32, "1/0");
    check_lsn("FFFFFFFF/FFFFFFFF", UINT64_MAX, "FFFFFFFF/FFFFFFFF");
    check_lsn("AC/600108", UINT64_C(0xAC00600108), "AC/600108");
    check_lsn("00000000/00000001", 1, "0/1");
    check_lsn("16/b374d848", UINT64_C(0x16B374D848), "16/B374D848");

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        lsn = 42;
        is_int(cbfs_lsn_parse(bad[i], &lsn), -EINVAL, "reject LSN \"%s\"", bad[i]);
        is_int(lsn, 42, "\"%s\": ret_lsn untouched", bad[i]);
    }

    /* a short buffer is cut, never overrun */
    memset(buf, 'x', sizeof(buf));
    cbfs_lsn_format(UINT64_C(0x16B374D848), buf, 5);
    is_str(buf, "16/B", "format into 5 bytes");
    ok(buf[5] == 'x', "nothing written past the buffer");
}

/* ---- segments ---- */

static void check_segname(uint64_t lsn, uint32_t tli, uint32_t seg_size, const char *want)
{
    char name[CBFS_WAL_NAME_MAX];
    uint64_t segno = cbfs_wal_segno(lsn, seg_size), got_segno = 0;
    uint32_t got_tli = 0;

    cbfs_wal_segname(tli, segno, seg_size, name, sizeof(name));
    is_str(name, want, "segment of %X/%X on timeline %u, %u MB segments", (unsigned) (lsn >> 32),
           (unsigned) lsn, tli, seg_size / MB);
    is_int(cbfs_wal_parse_segname(want, seg_size, &got_tli, &got_segno), 0, "parse %s", want);
    is_int(got_tli, tli, "%s: timeline", want);
    ok(got_segno == segno, "%s: segment number %llu", want, (unsigned long long) segno);
}

static void test_segments(void)
{
    static const char *const bad_names[] = {
        "",
        "00000001000000000000000",
        "0000000100000000000000010",
        "000000010000000000000001.partial",
        "00000001.history",
        "0000000100000000000000ab",
        "000000000000000000000001",
        " 00000001000000000000001",
        "00000001000000000000000x",
    };
    static const uint32_t bad_sizes[] = {0, 1, 3 * MB, MB / 2, MB + 1, 2 * GB, 0xFFFFFFFF};
    static const uint32_t sizes[] = {MB, 16 * MB, 64 * MB, GB};
    uint32_t tli;
    uint64_t segno;
    char name[CBFS_WAL_NAME_MAX];

    /* all confirmed with pg_walfile_name() or pg_controldata */
    check_segname(UINT64_C(0x16B374D848), 1, 16 * MB, "0000000100000016000000B3");
    check_segname(UINT64_C(0xE611F6C0), 1, 16 * MB, "0000000100000000000000E6");
    check_segname(UINT64_C(0xAC00600108), 3, MB, "00000003000000AC00000006");
    check_segname(UINT64_C(0xABFFE000F0), 3, MB, "00000003000000AB00000FFE");
    check_segname(UINT64_C(0x407414F8), 1, GB, "000000010000000000000001");

    check_segname(0, 1, 16 * MB, "000000010000000000000000");
    check_segname(16 * MB - 1, 1, 16 * MB, "000000010000000000000000");
    check_segname(16 * MB, 1, 16 * MB, "000000010000000000000001");
    check_segname(UINT64_C(0x5C0000000), 2, GB, "000000020000000500000003");
    check_segname(UINT64_C(0x4000000), 1, 64 * MB, "000000010000000000000001");
    check_segname(UINT64_MAX, 0xFFFFFFFF, 16 * MB, "FFFFFFFFFFFFFFFF000000FF");
    check_segname(UINT64_MAX, 1, MB, "00000001FFFFFFFF00000FFF");
    check_segname(UINT64_MAX, 1, GB, "00000001FFFFFFFF00000003");

    is_int(cbfs_wal_segno(UINT64_C(0x16B374D848), 16 * MB), 0x16B3, "segno of 16/B374D848");
    is_int(cbfs_wal_segno(UINT64_C(0x16B374D848), GB), 0x5A, "segno with 1 GB segments");

    /* round trip across the log id boundary for each segment size */
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t per_id = UINT64_C(0x100000000) / sizes[i];
        uint64_t samples[] = {0, 1, per_id - 1, per_id, per_id + 1, 7 * per_id + 3};
        int all_ok = 1;

        for (size_t j = 0; j < sizeof(samples) / sizeof(samples[0]); j++) {
            cbfs_wal_segname(9, samples[j], sizes[i], name, sizeof(name));
            if (cbfs_wal_parse_segname(name, sizes[i], &tli, &segno) != 0 || tli != 9 ||
                segno != samples[j] || strlen(name) != 24)
                all_ok = 0;
        }
        ok(all_ok, "name round trip with %u MB segments", sizes[i] / MB);
    }

    /* the S part must stay below the number of segments per 4 GB */
    is_int(cbfs_wal_parse_segname("000000010000000000000100", 16 * MB, &tli, &segno), -EINVAL,
           "S part 0x100 is too large for 16 MB segments");
    is_int(cbfs_wal_parse_segname("0000000100000000000000FF", 16 * MB, &tli, &segno), 0,
           "S part 0xFF fits 16 MB segments");
    is_int(cbfs_wal_parse_segname("000000010000000000000100", MB, &tli, &segno), 0,
           "S part 0x100 fits 1 MB segments");
    is_int(cbfs_wal_parse_segname("000000010000000000000004", GB, &tli, &segno), -EINVAL,
           "S part 4 is too large for 1 GB segments");
    is_int(cbfs_wal_parse_segname("000000010000000000000003", GB, NULL, NULL), 0,
           "ret pointers may be NULL");

    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        tli = 77;
        segno = 77;
        is_int(cbfs_wal_parse_segname(bad_names[i], 16 * MB, &tli, &segno), -EINVAL,
               "reject segment name \"%s\"", bad_names[i]);
        ok(tli == 77 && segno == 77, "\"%s\": results untouched", bad_names[i]);
    }
    for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++)
        is_int(cbfs_wal_parse_segname("000000010000000000000001", bad_sizes[i], &tli, &segno),
               -EINVAL, "reject segment size %u", bad_sizes[i]);
}

/* ---- segment headers ---- */

/* First 40 bytes of 00000003000000AC00000006, 1 MB segments (little-endian). */
static const uint8_t real_header[40] = {
    0x10, 0xd1, 0x06, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x60, 0x00, 0xac, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x82, 0x52, 0xbd, 0x64,
    0x03, 0x7b, 0x01, 0x6b, 0x00, 0x00, 0x10, 0x00, 0x00, 0x20, 0x00, 0x00,
};
#define REAL_SYSID UINT64_C(7710579291540247170) /* from pg_controldata */

/* The same header built in host byte order, with fields to tamper with. */
struct hdr {
    uint16_t magic;
    uint16_t info;
    uint32_t tli;
    uint64_t pageaddr;
    uint64_t sysid;
    uint32_t seg_size;
    uint32_t blcksz;
};

static void good_hdr(struct hdr *h)
{
    h->magic = 0xD110;
    h->info = 0x0006; /* XLP_LONG_HEADER | XLP_BKP_REMOVABLE */
    h->tli = 3;
    h->pageaddr = UINT64_C(0xAC00600000);
    h->sysid = REAL_SYSID;
    h->seg_size = MB;
    h->blcksz = 8192;
}

static void put_hdr(const struct hdr *h, uint8_t *buf)
{
    memset(buf, 0, 64);
    memcpy(buf + 0, &h->magic, 2);
    memcpy(buf + 2, &h->info, 2);
    memcpy(buf + 4, &h->tli, 4);
    memcpy(buf + 8, &h->pageaddr, 8);
    memcpy(buf + 24, &h->sysid, 8);
    memcpy(buf + 32, &h->seg_size, 4);
    memcpy(buf + 36, &h->blcksz, 4);
}

static int try_hdr(const struct hdr *h)
{
    uint8_t buf[64];
    uint64_t sysid = 1;
    uint32_t seg_size = 1, tli = 1;
    int rc;

    put_hdr(h, buf);
    rc = cbfs_wal_segment_header(buf, sizeof(buf), &sysid, &seg_size, &tli);
    if (rc != 0 && (sysid != 1 || seg_size != 1 || tli != 1))
        return -1000; /* results must stay untouched on failure */
    return rc;
}

static void test_header(void)
{
    const uint16_t one = 1;
    uint8_t buf[64];
    uint64_t sysid;
    uint32_t seg_size, tli;
    struct hdr h;

    if (*(const uint8_t *) &one == 1) {
        sysid = 0;
        seg_size = tli = 0;
        is_int(cbfs_wal_segment_header(real_header, sizeof(real_header), &sysid, &seg_size, &tli),
               0, "header of a real segment");
        ok(sysid == REAL_SYSID, "real segment: system identifier");
        is_int(seg_size, MB, "real segment: segment size");
        is_int(tli, 3, "real segment: timeline");
        is_int(cbfs_wal_segment_header(real_header, 39, &sysid, &seg_size, &tli), -EINVAL,
               "39 bytes are too short");
    } else {
        for (int i = 0; i < 5; i++)
            ok(1, "# skip the recorded header is little-endian");
    }

    good_hdr(&h);
    put_hdr(&h, buf);
    is_int(cbfs_wal_segment_header(buf, 40, &sysid, &seg_size, &tli), 0, "built header");
    ok(sysid == REAL_SYSID && seg_size == MB && tli == 3, "built header: fields");
    is_int(cbfs_wal_segment_header(buf, 40, NULL, NULL, NULL), 0, "ret pointers may be NULL");
    is_int(cbfs_wal_segment_header(buf, 39, &sysid, &seg_size, &tli), -EINVAL, "39 bytes");
    is_int(cbfs_wal_segment_header(buf, 0, &sysid, &seg_size, &tli), -EINVAL, "0 bytes");
    memset(buf, 0, sizeof(buf));
    is_int(cbfs_wal_segment_header(buf, sizeof(buf), &sysid, &seg_size, &tli), -EINVAL,
           "all-zero page (a preallocated segment)");

    /* magic: PostgreSQL 13 (D106) to 17 (D116) */
    static const struct {
        uint16_t magic;
        int rc;
    } magics[] = {
        {0xD106, 0},       {0xD10D, 0},       {0xD110, 0},       {0xD113, 0},  {0xD116, 0},
        {0xD105, -EINVAL}, {0xD117, -EINVAL}, {0x10D1, -EINVAL}, {0, -EINVAL},
    };
    for (size_t i = 0; i < sizeof(magics) / sizeof(magics[0]); i++) {
        good_hdr(&h);
        h.magic = magics[i].magic;
        is_int(try_hdr(&h), magics[i].rc, "magic %04X", magics[i].magic);
    }

    good_hdr(&h);
    h.info = 0x0002;
    is_int(try_hdr(&h), 0, "XLP_LONG_HEADER alone");
    h.info = 0x0003;
    is_int(try_hdr(&h), 0, "XLP_LONG_HEADER | XLP_FIRST_IS_CONTRECORD");
    h.info = 0x0005;
    is_int(try_hdr(&h), -EINVAL, "a short page header");
    h.info = 0;
    is_int(try_hdr(&h), -EINVAL, "no flags");

    static const struct {
        uint32_t seg_size;
        int rc;
    } sizes[] = {
        {MB, 0},           {2 * MB, 0},           {16 * MB, 0},      {GB, 0},
        {0, -EINVAL},      {MB / 2, -EINVAL},     {MB + 1, -EINVAL}, {3 * MB, -EINVAL},
        {2 * GB, -EINVAL}, {0xFFFFFFFF, -EINVAL},
    };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        good_hdr(&h);
        h.seg_size = sizes[i].seg_size;
        h.pageaddr = (uint64_t) 5 * GB; /* a boundary for every valid size */
        is_int(try_hdr(&h), sizes[i].rc, "segment size %u", sizes[i].seg_size);
    }

    good_hdr(&h);
    h.tli = 0;
    is_int(try_hdr(&h), -EINVAL, "timeline 0");
    good_hdr(&h);
    h.pageaddr = UINT64_C(0xAC00602000);
    is_int(try_hdr(&h), -EINVAL, "page address inside a segment");
    h.pageaddr = UINT64_C(0xAC00700000);
    is_int(try_hdr(&h), 0, "page address of the next segment");

    static const uint32_t bad_blcksz[] = {0, 512, 3000, 8193, 131072};
    for (size_t i = 0; i < sizeof(bad_blcksz) / sizeof(bad_blcksz[0]); i++) {
        good_hdr(&h);
        h.blcksz = bad_blcksz[i];
        is_int(try_hdr(&h), -EINVAL, "WAL block size %u", bad_blcksz[i]);
    }
    good_hdr(&h);
    h.blcksz = 65536;
    is_int(try_hdr(&h), 0, "WAL block size 64 kB");
    h.blcksz = 1024;
    is_int(try_hdr(&h), 0, "WAL block size 1 kB");
}

/* ---- transaction end times ---- */

/* A 1 MB segment of timeline 1 at 0/3000000 built record by record, with
 * the page layout of PostgreSQL 15 (8 kB pages, 40-byte long header on the
 * first page, 24-byte short headers after). */
#define SEG_START UINT64_C(0x3000000)
#define BLCKSZ    8192

typedef struct Seg {
    uint8_t data[2 * MB]; /* one segment, or two back to back */
    size_t pos;           /* next byte of the record stream, as a file offset */
} Seg;

/* CRC-32C, bit by bit (independent of the table the library uses). */
static uint32_t crc32c_bits(uint32_t crc, const uint8_t *p, size_t n)
{
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return crc;
}

static void page_header(Seg *s, size_t off, uint16_t info, uint32_t rem_len, uint64_t addr)
{
    uint16_t magic = 0xD110;
    uint32_t tli = 1;
    memcpy(s->data + off, &magic, 2);
    memcpy(s->data + off + 2, &info, 2);
    memcpy(s->data + off + 4, &tli, 4);
    memcpy(s->data + off + 8, &addr, 8);
    memcpy(s->data + off + 16, &rem_len, 4);
    if (off % MB == 0) {
        uint64_t sysid = UINT64_C(7000000000000000001);
        uint32_t seg_size = MB, blcksz = BLCKSZ;
        memcpy(s->data + off + 24, &sysid, 8);
        memcpy(s->data + off + 32, &seg_size, 4);
        memcpy(s->data + off + 36, &blcksz, 4);
    }
}

static void seg_init(Seg *s, uint32_t cont_len)
{
    memset(s, 0, sizeof(*s));
    for (size_t off = 0; off < 2 * MB; off += BLCKSZ)
        page_header(s, off, (uint16_t) ((off % MB == 0 ? 2 : 0) | (cont_len ? 1 : 0)), cont_len,
                    SEG_START + off);
    s->pos = 40;
    /* the tail of a record begun in the previous segment: skipped */
    for (uint32_t i = 0; i < cont_len; i++)
        s->data[s->pos++] = 0xEE;
    s->pos = (s->pos + 7) & ~(size_t) 7;
}

/* Append bytes to the record stream, stepping over page headers (and
 * marking a page the record goes on into as continuing it). */
static void put(Seg *s, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n--) {
        if (s->pos % BLCKSZ == 0) {
            uint32_t rem = (uint32_t) n + 1;
            uint16_t info = (uint16_t) ((s->pos % MB == 0 ? 2 : 0) | 1);
            memcpy(s->data + s->pos + 2, &info, 2);
            memcpy(s->data + s->pos + 16, &rem, 4);
            s->pos += s->pos % MB == 0 ? 40 : 24;
        }
        s->data[s->pos++] = *b++;
    }
}

/* A record of resource manager rmid with info and main data (len bytes);
 * returns its LSN. */
static uint64_t put_record_data(Seg *s, uint8_t rmid, uint8_t info, const uint8_t *data, size_t len,
                                bool bad_crc)
{
    uint8_t *rec = calloc(1, 24 + 5 + len);
    size_t hlen = len < 256 ? 2 : 5, tot = 24 + hlen + len;
    uint32_t tot32 = (uint32_t) tot, crc, len32 = (uint32_t) len;
    uint64_t lsn;
    rec[16] = info;
    rec[17] = rmid;
    memcpy(rec, &tot32, 4);
    if (len < 256) {
        rec[24] = 255;
        rec[25] = (uint8_t) len;
    } else {
        rec[24] = 254;
        memcpy(rec + 25, &len32, 4);
    }
    memcpy(rec + 24 + hlen, data, len);
    crc = crc32c_bits(0xFFFFFFFFu, rec + 24, tot - 24);
    crc = crc32c_bits(crc, rec, 20) ^ 0xFFFFFFFFu;
    if (bad_crc)
        crc ^= 1;
    memcpy(rec + 20, &crc, 4);
    /* records start on 8-byte boundaries of the stream */
    if (s->pos % BLCKSZ == 0)
        s->pos += s->pos % MB == 0 ? 40 : 24;
    s->pos = (s->pos + 7) & ~(size_t) 7;
    lsn = SEG_START + s->pos;
    put(s, rec, tot);
    free(rec);
    return lsn;
}

/* The same with made-up main data of len bytes (its first 8 bytes t, when
 * rmid is the transaction manager's). */
static void put_record(Seg *s, uint8_t rmid, uint8_t info, size_t len, int64_t t, bool bad_crc)
{
    uint8_t *data = calloc(1, len + 8);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t) (i * 7);
    if (len >= 8)
        memcpy(data, &t, 8);
    put_record_data(s, rmid, info, data, len, bad_crc);
    free(data);
}

/* A restore point record (pg_create_restore_point's); returns its LSN. */
static uint64_t put_point(Seg *s, const char *name, int64_t t)
{
    uint8_t data[72] = {0};
    memcpy(data, &t, 8);
    memcpy(data + 8, name, strlen(name) < 63 ? strlen(name) : 63);
    return put_record_data(s, 0, 0x70, data, sizeof(data), false);
}

#define PG_US(unix_s) ((int64_t) ((unix_s) -946684800) * 1000000) /* PostgreSQL timestamp */

static void test_xact_time(void)
{
    static Seg s;
    int64_t t = 0;
    const int64_t t1 = PG_US(1763700000) + 250000, t2 = PG_US(1763700060) + 5;
    size_t page_end;

    is_int((int) crc32c_bits(0xFFFFFFFFu, (const uint8_t *) "123456789", 9) ^ (int) 0xFFFFFFFFu,
           (int) 0xE3069283u, "the test's CRC-32C gives the check value");

    seg_init(&s, 0);
    put_record(&s, 10, 0x00, 9000, 0, false); /* a heap record over two pages */
    ok(cbfs_wal_last_xact_time(s.data, MB, &t) == 0, "no transaction record: 0");
    put_record(&s, 1, 0x00, 8, t1, false); /* commit */
    put_record(&s, 10, 0x00, 300, 0, false);
    /* an abort that straddles a page boundary */
    page_end = (s.pos / BLCKSZ + 1) * BLCKSZ;
    while (page_end - s.pos > 16)
        put_record(&s, 10, 0x00, 1, 0, false);
    put_record(&s, 1, 0x20, 8, t2, false);
    ok(s.pos > page_end, "(the abort record crosses a page boundary)");
    is_int(cbfs_wal_last_xact_time(s.data, MB, &t), 1, "commit and abort records: found");
    ok(t == t2 + INT64_C(946684800000000), "the latest end time, in Unix microseconds");

    /* a record of another manager with the commit's info bits is no commit */
    put_record(&s, 2, 0x00, 8, t2 + 1000000, false);
    cbfs_wal_last_xact_time(s.data, MB, &t);
    ok(t == t2 + INT64_C(946684800000000), "a record of another resource manager is not read");

    /* a transaction record after a broken one is beyond the end of the WAL */
    put_record(&s, 1, 0x00, 8, t2 + 2000000, true);
    put_record(&s, 1, 0x00, 8, t2 + 3000000, false);
    cbfs_wal_last_xact_time(s.data, MB, &t);
    ok(t == t2 + INT64_C(946684800000000), "the scan stops at a record whose CRC is wrong");

    /* pages of an earlier life of a recycled file end the WAL too */
    seg_init(&s, 0);
    put_record(&s, 1, 0x00, 8, t1, false);
    while (s.pos < 2 * BLCKSZ + 100)
        put_record(&s, 10, 0x00, 500, 0, false);
    put_record(&s, 1, 0x00, 8, t2, false); /* on the third page */
    is_int(cbfs_wal_last_xact_time(s.data, MB, &t), 1, "records over three pages: found");
    ok(t == t2 + INT64_C(946684800000000), "the commit on the third page is read");
    page_header(&s, 2 * BLCKSZ, 0, 0, SEG_START - MB + 2 * BLCKSZ);
    cbfs_wal_last_xact_time(s.data, MB, &t);
    ok(t == t1 + INT64_C(946684800000000), "a page with another address (recycled) ends the WAL");

    /* the tail of a record from the previous segment is skipped */
    seg_init(&s, 100);
    put_record(&s, 1, 0x40, 8, t1, false); /* abort prepared */
    is_int(cbfs_wal_last_xact_time(s.data, MB, &t), 1, "after a continued record: found");
    ok(t == t1 + INT64_C(946684800000000), "the continuation is skipped");

    is_int(cbfs_wal_last_xact_time(s.data, MB - BLCKSZ, &t), -EINVAL,
           "not a whole segment: -EINVAL");
}

static void test_restore_points(void)
{
    static Seg s;
    uint64_t lsn = 0, end = 0, want, want2, want_end;
    int64_t t = 0;
    const int64_t t1 = PG_US(1763700000) + 123;
    size_t page_end;

    seg_init(&s, 0);
    put_record(&s, 10, 0x00, 300, 0, false);
    want = put_point(&s, "before-upgrade", t1);
    want_end = SEG_START + ((s.pos + 7) & ~(size_t) 7);
    put_record(&s, 10, 0x00, 300, 0, false);
    is_int(cbfs_wal_find_restore_point(s.data, MB, "before-upgrade", &lsn, &end, &t), 1,
           "a restore point is found by name");
    ok(lsn == want, "... at its LSN (%llX, want %llX)", (unsigned long long) lsn,
       (unsigned long long) want);
    ok(t == t1 + INT64_C(946684800000000), "... with its time");
    ok(end == want_end, "... and its end (%llX, want %llX)", (unsigned long long) end,
       (unsigned long long) want_end);
    is_int(cbfs_wal_find_restore_point(s.data, MB, "before-upgrad", &lsn, &end, NULL), 0,
           "another name is not found");
    is_int(cbfs_wal_find_restore_point(s.data, MB, "nightly", &lsn, &end, NULL), 0, "nor a third");

    /* on the second page, straddling into the third */
    while (s.pos < 2 * BLCKSZ - 40)
        put_record(&s, 10, 0x00, 200, 0, false);
    page_end = 3 * BLCKSZ;
    while (page_end - s.pos > 48)
        put_record(&s, 10, 0x00, 1, 0, false);
    want2 = put_point(&s, "nightly", t1);
    ok(s.pos > page_end, "(the second point crosses a page boundary)");
    is_int(cbfs_wal_find_restore_point(s.data, MB, "nightly", &lsn, &end, NULL), 1,
           "a point over a page boundary is found");
    ok(lsn == want2, "... at its LSN (%llX, want %llX)", (unsigned long long) lsn,
       (unsigned long long) want2);
    want_end = SEG_START + ((s.pos + 7) & ~(size_t) 7);
    ok(end == want_end, "... and ends on the next page (%llX, want %llX)", (unsigned long long) end,
       (unsigned long long) want_end);
    /* the same name again later: recovery stops at the first */
    put_point(&s, "nightly", t1 + 1);
    cbfs_wal_find_restore_point(s.data, MB, "nightly", &lsn, &end, NULL);
    ok(lsn == want2, "of two points of one name, the first");

    /* a point that begins in one segment and ends in the next */
    seg_init(&s, 0);
    while (s.pos < MB - BLCKSZ)
        put_record(&s, 10, 0x00, 4000, 0, false);
    while (MB - s.pos > 48)
        put_record(&s, 10, 0x00, 1, 0, false);
    want = put_point(&s, "across", t1);
    ok(s.pos > MB, "(the point crosses into the next segment)");
    is_int(cbfs_wal_find_restore_point(s.data, MB, "across", &lsn, &end, NULL), 0,
           "in the first segment alone it is not whole");
    is_int(cbfs_wal_find_restore_point(s.data, 2 * MB, "across", &lsn, &end, NULL), 1,
           "in the two segments read together it is found");
    ok(lsn == want, "... at its LSN in the first segment");
    is_int(cbfs_wal_find_restore_point(s.data + MB, MB, "across", &lsn, &end, NULL), 0,
           "the second segment alone skips its tail");
    is_int(cbfs_wal_find_restore_point(s.data, MB + BLCKSZ, "across", &lsn, &end, NULL), -EINVAL,
           "a part of a segment: -EINVAL");
}

/* ---- timeline history files ---- */

static void check_history_bad(const char *text, const char *what)
{
    CbfsTliSwitch *sw = (CbfsTliSwitch *) &sw; /* must be left alone */
    size_t n = 77;

    is_int(cbfs_wal_parse_history(text, &sw, &n), -EINVAL, "history %s: -EINVAL", what);
    ok(sw == (CbfsTliSwitch *) &sw && n == 77, "history %s: results untouched", what);
}

static void test_history(void)
{
    /* as PostgreSQL 15 writes it for timeline 3: each entry after a blank line */
    static const char pg15[] = "1\t0/3000158\tno recovery target specified\n"
                               "\n"
                               "2\t0/5000000\tat restore point \"before_drop\"\n";
    CbfsTliSwitch *sw = NULL;
    size_t n = 99;
    char longline[400];

    is_int(cbfs_wal_parse_history(pg15, &sw, &n), 0, "history of timeline 3: parsed");
    is_int(n, 2, "two ancestors");
    if (n == 2) {
        is_int(sw[0].tli, 1, "first: timeline 1");
        ok(sw[0].end == UINT64_C(0x3000158), "timeline 1 ended at 0/3000158");
        is_int(sw[1].tli, 2, "second: timeline 2");
        ok(sw[1].end == UINT64_C(0x5000000), "timeline 2 ended at 0/5000000");
    }
    free(sw);

    sw = (CbfsTliSwitch *) &sw;
    is_int(cbfs_wal_parse_history("", &sw, &n), 0, "an empty history: parsed");
    ok(sw == NULL && n == 0, "an empty history: no entries, NULL");
    is_int(cbfs_wal_parse_history("# comment\n\n  \n\t# indented comment\n", &sw, &n), 0,
           "only comments and blank lines: parsed");
    ok(sw == NULL && n == 0, "only comments and blank lines: no entries");

    is_int(cbfs_wal_parse_history("# made by hand\n  1 A/1  \n7 1b/0\n9\t1B/0 \t reason", &sw, &n),
           0, "spaces, no reason, equal LSNs, no final newline: parsed");
    is_int(n, 3, "three entries");
    if (n == 3) {
        ok(sw[0].tli == 1 && sw[0].end == (UINT64_C(0xA) << 32 | 1), "1 A/1");
        ok(sw[1].tli == 7 && sw[1].end == UINT64_C(0x1B) << 32, "7 1b/0 (either case)");
        ok(sw[2].tli == 9 && sw[2].end == UINT64_C(0x1B) << 32, "9 1B/0");
    }
    free(sw);

    check_history_bad("x\t0/1\n", "with a timeline that is not a number");
    check_history_bad("1\n", "with a line without an LSN");
    check_history_bad("1\t\n", "with an empty LSN");
    check_history_bad("1\t0-1\n", "with an invalid LSN");
    check_history_bad("1\t0/123456789\n", "with an LSN half of 9 digits");
    check_history_bad("0\t0/1\n", "with timeline 0");
    check_history_bad("-1\t0/1\n", "with a negative timeline");
    check_history_bad("4294967296\t0/1\n", "with a timeline above 2^32-1");
    check_history_bad("1x\t0/1\n", "with junk after the timeline");
    check_history_bad("2\t0/5\n1\t0/6\n", "with timelines going backwards");
    check_history_bad("1\t0/5\n1\t0/6\n", "with a timeline twice");
    check_history_bad("1\t0/6\n2\t0/5\n", "with LSNs going backwards");
    memset(longline, 'a', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    memcpy(longline, "1\t0/1\t", 6);
    check_history_bad(longline, "with a line of 399 characters");
}

int main(void)
{
    test_classify();
    test_lsn();
    test_segments();
    test_header();
    test_xact_time();
    test_restore_points();
    test_history();
    return done_testing();
}
