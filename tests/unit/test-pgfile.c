/*
 * test-pgfile.c - unit tests for lib/pgfile.c: base backup exclusion rules,
 * relation file names, and data page checksums.
 *
 * The checksum vectors were not produced by cbfs alone: the page built by
 * make_page() was written into a PostgreSQL 15 cluster (initdb -k) at each of
 * the block numbers below, with the expected value as pd_checksum, and
 * pg_checksums --check accepted every one (and rejected the page once its
 * checksum was changed).  The page is built from native-endian words, so the
 * vectors hold on any host.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/pgfile.h"
#include "tap.h"

/* ---- exclusion ---- */

static void test_exclude(void)
{
    static const char *const top_files[] = {
        "postmaster.pid", "postmaster.opts",          "backup_label",
        "tablespace_map", "backup_manifest",          "recovery.signal",
        "standby.signal", "postgresql.auto.conf.tmp", "current_logfiles.tmp",
    };
    static const char *const content_dirs[] = {
        "pg_wal",    "pg_dynshmem",  "pg_notify",   "pg_replslot",
        "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans",
    };
    static const char *const keep[] = {
        "PG_VERSION",
        "postgresql.conf",
        "postgresql.auto.conf",
        "pg_hba.conf",
        "global",
        "global/pg_control",
        "global/1262",
        "base",
        "base/1",
        "base/1/1259",
        "base/1/1259_fsm",
        "base/1/PG_VERSION",
        "base/1/pg_filenode.map",
        "pg_xact/0000",
        "pg_stat",
        "pg_stat/pgstat.stat",
        "pg_logical/replorigin_checkpoint",
        "pg_tblspc",
        "pg_tblspc/16390",
        "pg_tblspc/16390/PG_15_202209061/16384/16391",
        /* look-alikes of excluded names */
        "pg_wal2",
        "pg_walx/000000010000000000000001",
        "postmaster.pid.old",
        "backup_label.old",
        "pg_internal.ini",
        "pgsql_tm",
        "base/pgsql_tm",
        /* named files and content directories count at the top level only */
        "base/1/backup_label",
        "log/postmaster.pid",
        "backup_label/x", /* the names match the entry itself, not what is below */
        "base/pg_wal",
        "base/pg_notify/0000",
        "pg_logical/pg_replslot",
        /* temporary relation names outside relation directories */
        "t3_16391",
        "base/t3_16391",
        "pg_xact/t3_16391",
        "pg_tblspc/16390/PG_15_202209061/t3_16391",
        /* not temporary relation names */
        "base/1/t_16391",
        "base/1/t3_",
        "base/1/t3",
        "base/1/T3_16391",
        "base/1/t3_16391_main",
        "base/1/t3_16391.",
        "base/1/t3_16391.x",
        "base/1/t3_16391_vm_fsm",
        "base/1/tt3_16391",
        "base/1/t3_16391/",
        "",
    };
    static const char *const exclude[] = {
        /* below the content directories */
        "pg_wal/000000010000000000000001",
        "pg_wal/000000010000000000000001.partial",
        "pg_wal/archive_status/000000010000000000000001.done",
        "pg_replslot/slot1",
        "pg_replslot/slot1/state",
        "pg_stat_tmp/pgss_query_texts.stat",
        "pg_subtrans/0000",
        "pg_notify/0000",
        "pg_serial/0000",
        "pg_snapshots/00000003-00000002-1",
        "pg_dynshmem/mmap.1234",
        /* anywhere */
        "pgsql_tmp",
        "base/pgsql_tmp",
        "base/pgsql_tmp/pgsql_tmp1234.0",
        "base/pgsql_tmp/pgsql_tmp1234.0.sharedfileset/0.0",
        "pg_tblspc/16390/PG_15_202209061/pgsql_tmp",
        "pg_tblspc/16390/PG_15_202209061/pgsql_tmp/pgsql_tmp99.1",
        "global/pg_internal.init",
        "base/1/pg_internal.init",
        "base/1/pg_internal.init.12345",
        "pg_internal.init",
        /* temporary relations in relation directories */
        "base/1/t3_16391",
        "base/1/t3_16391_fsm",
        "base/1/t3_16391_vm",
        "base/1/t3_16391_init",
        "base/1/t3_16391.2",
        "base/1/t3_16391_fsm.1",
        "base/16384/t12_4294967295",
        "global/t3_16391",
        "pg_tblspc/16390/PG_15_202209061/16384/t3_16391",
        "pg_tblspc/16390/PG_15_202209061/16384/t3_16391_vm.3",
    };
    size_t i;

    for (i = 0; i < sizeof(top_files) / sizeof(top_files[0]); i++) {
        char path[128];

        is_int(cbfs_pg_exclude_path(top_files[i], false), CBFS_PG_EXCLUDE, "exclude %s",
               top_files[i]);
        snprintf(path, sizeof(path), "base/1/%s", top_files[i]);
        is_int(cbfs_pg_exclude_path(path, false), CBFS_PG_KEEP, "keep %s", path);
    }
    for (i = 0; i < sizeof(content_dirs) / sizeof(content_dirs[0]); i++) {
        char path[128];

        is_int(cbfs_pg_exclude_path(content_dirs[i], true), CBFS_PG_EXCLUDE_CONTENTS,
               "exclude the contents of %s", content_dirs[i]);
        /* a symlinked pg_wal must come back as an empty directory, not a link */
        is_int(cbfs_pg_exclude_path(content_dirs[i], false), CBFS_PG_EXCLUDE_CONTENTS,
               "exclude the contents of %s, not a directory", content_dirs[i]);
        snprintf(path, sizeof(path), "%s/", content_dirs[i]);
        is_int(cbfs_pg_exclude_path(path, true), CBFS_PG_EXCLUDE_CONTENTS,
               "exclude the contents of %s", path);
        snprintf(path, sizeof(path), "%s/sub", content_dirs[i]);
        is_int(cbfs_pg_exclude_path(path, true), CBFS_PG_EXCLUDE, "exclude directory %s", path);
        is_int(cbfs_pg_exclude_path(path, false), CBFS_PG_EXCLUDE, "exclude file %s", path);
    }
    for (i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        is_int(cbfs_pg_exclude_path(keep[i], false), CBFS_PG_KEEP, "keep \"%s\"", keep[i]);
    for (i = 0; i < sizeof(exclude) / sizeof(exclude[0]); i++)
        is_int(cbfs_pg_exclude_path(exclude[i], false), CBFS_PG_EXCLUDE, "exclude %s", exclude[i]);

    /* pg_wal/archive_status survives as an empty directory, as in a base backup */
    is_int(cbfs_pg_exclude_path("pg_wal/archive_status", true), CBFS_PG_EXCLUDE_CONTENTS,
           "keep pg_wal/archive_status empty");
    is_int(cbfs_pg_exclude_path("pg_wal/archive_status", false), CBFS_PG_EXCLUDE,
           "exclude a file called pg_wal/archive_status");
    is_int(cbfs_pg_exclude_path("pg_notify/archive_status", true), CBFS_PG_EXCLUDE,
           "archive_status is kept in pg_wal only");
    is_int(cbfs_pg_exclude_path("base/pgsql_tmp", true), CBFS_PG_EXCLUDE,
           "exclude directory base/pgsql_tmp");
    is_int(cbfs_pg_exclude_path("base/1", true), CBFS_PG_KEEP, "keep directory base/1");
}

/* ---- relation files ---- */

static void check_relfile(const char *name, uint32_t node, const char *fork, uint32_t segno)
{
    CbfsRelFile rf;

    memset(&rf, 0xAA, sizeof(rf));
    ok(cbfs_pg_parse_relfile(name, &rf), "parse \"%s\"", name);
    is_int(rf.relfilenode, node, "\"%s\": relfilenode", name);
    is_str(rf.fork, fork, "\"%s\": fork", name);
    is_int(rf.segno, segno, "\"%s\": segment", name);
}

static void test_relfile(void)
{
    static const char *const bad[] = {
        "",
        "0",
        "016385",
        "16385.0",
        "16385.01",
        "4294967296",
        "99999999999999999999",
        "16385.4294967296",
        "16385_",
        "16385_main",
        "16385_fsmx",
        "16385_FSM",
        "16385_fs",
        "16385_fsm_vm",
        "16385_vm_init",
        "16385.",
        "16385.1.2",
        "16385.1_fsm",
        "16385.x",
        "16385_init.",
        "16385x",
        "-1",
        "+1",
        " 1",
        "1 ",
        "t3_16391",
        "pg_filenode.map",
        "PG_VERSION",
        "pg_internal.init",
        "base/1/16385",
        "16385/",
        "_fsm",
        ".1",
    };
    CbfsRelFile rf;
    size_t i;

    check_relfile("16385", 16385, "", 0);
    check_relfile("1", 1, "", 0);
    check_relfile("16385_fsm", 16385, "fsm", 0);
    check_relfile("16385_vm", 16385, "vm", 0);
    check_relfile("16385_init", 16385, "init", 0);
    check_relfile("16385.2", 16385, "", 2);
    check_relfile("16385_vm.1", 16385, "vm", 1);
    check_relfile("16385_fsm.10", 16385, "fsm", 10);
    check_relfile("16385_init.3", 16385, "init", 3);
    check_relfile("4294967295", 4294967295u, "", 0);
    check_relfile("4294967295.4294967295", 4294967295u, "", 4294967295u);
    ok(cbfs_pg_parse_relfile("16385_vm.1", NULL), "ret may be NULL");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&rf, 0x55, sizeof(rf));
        ok(!cbfs_pg_parse_relfile(bad[i], &rf), "reject \"%s\"", bad[i]);
        is_int(rf.relfilenode, 0x55555555, "\"%s\": ret untouched", bad[i]);
    }
}

static void test_relation_dir(void)
{
    static const char *const yes[] = {
        "global",
        "global/",
        "base/1",
        "base/16384/",
        "base/4294967295",
        "pg_tblspc/16390/PG_15_202209061/16384",
        "pg_tblspc/16390/PG_15_202209061/16384/",
        "pg_tblspc/1/PG_9.6_201608131/5",
    };
    static const char *const no[] = {
        "",
        "/",
        "base",
        "base/",
        "base/0",
        "base/01",
        "base/1a",
        "base/4294967296",
        "base/1/2",
        "base/1//",
        "base//1",
        "/base/1",
        "./base/1",
        "Base/1",
        "global/1",
        "globalx",
        "pg_tblspc",
        "pg_tblspc/16390",
        "pg_tblspc/16390/PG_15_202209061",
        "pg_tblspc/x/PG_15_202209061/5",
        "pg_tblspc/16390/PG__202209061/5",
        "pg_tblspc/16390/PG_15_/5",
        "pg_tblspc/16390/PG_15/5",
        "pg_tblspc/16390/PG_15_2022x/5",
        "pg_tblspc/16390/pg_15_202209061/5",
        "pg_tblspc/16390/PG_15_202209061/0",
        "pg_tblspc/16390/PG_15_202209061/5/6",
        "pg_tblspc/16390/PG_15_202209061/5//",
        "base/1/pg_tblspc/16390/PG_15_202209061/5",
        "pg_wal",
    };
    size_t i;

    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        ok(cbfs_pg_is_relation_dir(yes[i]), "\"%s\" holds relations", yes[i]);
    for (i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        ok(!cbfs_pg_is_relation_dir(no[i]), "\"%s\" does not hold relations", no[i]);
}

static void test_unlogged(void)
{
    static const char *const names[] = {
        "16385",     "pg_filenode.map", "16391_vm",   "16391_init", "16391",
        "16391_fsm", "16385.1",         "16394",      "16394_init", "163910",
        "1639",      "16385_fsm",       "PG_VERSION", "5_init_old", /* not an init fork */
        "5",
    };
    size_t n = sizeof(names) / sizeof(names[0]);

    ok(cbfs_pg_is_unlogged_nonInit("16391", names, n), "main fork of an unlogged table");
    ok(cbfs_pg_is_unlogged_nonInit("16391_fsm", names, n), "fsm of an unlogged table");
    ok(cbfs_pg_is_unlogged_nonInit("16391_vm", names, n), "vm of an unlogged table");
    ok(cbfs_pg_is_unlogged_nonInit("16391.1", names, n), "second segment of an unlogged table");
    ok(cbfs_pg_is_unlogged_nonInit("16394", names, n), "unlogged index");
    ok(!cbfs_pg_is_unlogged_nonInit("16391_init", names, n), "the init fork is kept");
    ok(!cbfs_pg_is_unlogged_nonInit("16391_init.1", names, n), "init fork segments are kept");
    ok(!cbfs_pg_is_unlogged_nonInit("16385", names, n), "logged table");
    ok(!cbfs_pg_is_unlogged_nonInit("16385.1", names, n), "logged table, second segment");
    ok(!cbfs_pg_is_unlogged_nonInit("163910", names, n), "longer number with the same prefix");
    ok(!cbfs_pg_is_unlogged_nonInit("1639", names, n), "shorter number with the same prefix");
    ok(!cbfs_pg_is_unlogged_nonInit("5", names, n), "\"5_init_old\" is not an init fork");
    ok(!cbfs_pg_is_unlogged_nonInit("pg_filenode.map", names, n), "not a relation file");
    ok(!cbfs_pg_is_unlogged_nonInit("t3_16391", names, n), "temporary relation");
    ok(!cbfs_pg_is_unlogged_nonInit("16391", names, 0), "empty listing");
    ok(!cbfs_pg_is_unlogged_nonInit("16391", names, 3), "only the first n names count");
    ok(cbfs_pg_is_unlogged_nonInit("16391", names, 4), "init fork found as the n-th name");
}

/* ---- page checksums ---- */

/*
 * A page with a plausible header (pd_lsn 1/0A0B0C0D, pd_lower 64, pd_upper
 * 7936, pd_special 8192, version 4) and a deterministic body (xorshift32).
 * pd_checksum is left zero.
 */
static void make_page(uint8_t *page)
{
    uint32_t x = 0x12345678;
    uint32_t u32;
    uint16_t u16;

    memset(page, 0, CBFS_PG_PAGE_SIZE);
    for (size_t off = 24; off < CBFS_PG_PAGE_SIZE; off += 4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        memcpy(page + off, &x, 4);
    }
    u32 = 0x00000001; /* pd_lsn.xlogid */
    memcpy(page + 0, &u32, 4);
    u32 = 0x0A0B0C0D; /* pd_lsn.xrecoff */
    memcpy(page + 4, &u32, 4);
    u16 = 0x0000; /* pd_flags */
    memcpy(page + 10, &u16, 2);
    u16 = 64; /* pd_lower */
    memcpy(page + 12, &u16, 2);
    u16 = 7936; /* pd_upper */
    memcpy(page + 14, &u16, 2);
    u16 = 8192; /* pd_special */
    memcpy(page + 16, &u16, 2);
    u16 = 8192 | 4; /* pd_pagesize_version */
    memcpy(page + 18, &u16, 2);
    u32 = 0; /* pd_prune_xid */
    memcpy(page + 20, &u32, 4);
}

static void set_checksum(uint8_t *page, uint16_t sum)
{
    memcpy(page + 8, &sum, 2);
}

/* Checked against PostgreSQL 15 with pg_checksums (see the top of the file). */
static const struct {
    uint32_t blkno;
    uint16_t checksum;
} page_vectors[] = {
    {0, 0x72D7},
    {7, 0x72DC},
    {131072 + 3, 0x72DA},
    {0xFFFFFFFE, 0x8D2B},
};

static void test_checksum(void)
{
    uint8_t *page = malloc(CBFS_PG_PAGE_SIZE);
    uint8_t *copy = malloc(CBFS_PG_PAGE_SIZE);
    uint8_t *unaligned = malloc(CBFS_PG_PAGE_SIZE + 1);
    uint64_t lsn;
    uint16_t sum0;
    size_t i;

    make_page(page);
    for (i = 0; i < sizeof(page_vectors) / sizeof(page_vectors[0]); i++)
        is_int(cbfs_pg_page_checksum(page, page_vectors[i].blkno), page_vectors[i].checksum,
               "checksum of the test page at block %u", page_vectors[i].blkno);

    sum0 = cbfs_pg_page_checksum(page, 0);
    memcpy(copy, page, CBFS_PG_PAGE_SIZE);
    set_checksum(page, 0xBEEF);
    is_int(cbfs_pg_page_checksum(page, 0), sum0, "pd_checksum does not count");
    set_checksum(page, 0);
    ok(memcmp(page, copy, CBFS_PG_PAGE_SIZE) == 0, "the page is left as it was");

    memcpy(unaligned + 1, page, CBFS_PG_PAGE_SIZE);
    is_int(cbfs_pg_page_checksum(unaligned + 1, 0), sum0, "an unaligned page gives the same sum");

    /* verify */
    set_checksum(page, sum0);
    lsn = 0;
    is_int(cbfs_pg_page_verify(page, 0, &lsn), CBFS_PG_PAGE_OK, "verify a good page");
    is_int(lsn, 0x10A0B0C0DULL, "pd_lsn of the good page");
    is_int(cbfs_pg_page_verify(page, 0, NULL), CBFS_PG_PAGE_OK, "ret_lsn may be NULL");
    is_int(cbfs_pg_page_verify(page, 1, &lsn), CBFS_PG_PAGE_BAD, "same page at another block");
    is_int(cbfs_pg_page_verify(page, CBFS_PG_RELSEG_PAGES, &lsn), CBFS_PG_PAGE_BAD,
           "same page in the next segment");

    set_checksum(page, sum0 == 0xFFFF ? 1 : sum0 + 1);
    lsn = 0;
    is_int(cbfs_pg_page_verify(page, 0, &lsn), CBFS_PG_PAGE_BAD, "stored checksum off by one");
    is_int(lsn, 0x10A0B0C0DULL, "pd_lsn is returned for a bad page too");
    set_checksum(page, 0);
    is_int(cbfs_pg_page_verify(page, 0, &lsn), CBFS_PG_PAGE_BAD, "stored checksum zero");
    set_checksum(page, sum0);

    /* each single-bit flip must be caught; pd_flags shares a word with pd_checksum */
    {
        static const size_t offsets[] = {0, 7, 10, 11, 12, 23, 24, 4095, 8188, 8191};
        for (i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
            page[offsets[i]] ^= 0x01;
            is_int(cbfs_pg_page_verify(page, 0, &lsn), CBFS_PG_PAGE_BAD,
                   "bit flip at byte %zu is caught", offsets[i]);
            page[offsets[i]] ^= 0x01;
        }
        page[8191] ^= 0x80;
        is_int(cbfs_pg_page_verify(page, 0, &lsn), CBFS_PG_PAGE_BAD, "high bit of the last byte");
        page[8191] ^= 0x80;
        is_int(cbfs_pg_page_verify(page, 0, &lsn), CBFS_PG_PAGE_OK, "flips undone");
    }

    /* a torn write: second half of the page from another version */
    memset(page + 4096, 0, 4096);
    is_int(cbfs_pg_page_verify(page, 0, &lsn), CBFS_PG_PAGE_BAD, "torn page");

    /* new pages */
    memset(page, 0, CBFS_PG_PAGE_SIZE);
    lsn = 1;
    is_int(cbfs_pg_page_verify(page, 0, &lsn), CBFS_PG_PAGE_OK, "all-zero page is new");
    is_int(lsn, 0, "all-zero page has LSN 0");
    is_int(cbfs_pg_page_verify(page, 12345, &lsn), CBFS_PG_PAGE_OK, "at any block");
    page[8191] = 1;
    is_int(cbfs_pg_page_verify(page, 0, &lsn), CBFS_PG_PAGE_BAD, "one byte set in a zero page");
    page[8191] = 0;
    page[3] = 1; /* pd_lsn only */
    is_int(cbfs_pg_page_verify(page, 0, &lsn), CBFS_PG_PAGE_BAD, "only pd_lsn set");
    is_int(lsn, 0x01000000ULL << 32, "pd_lsn high word");

    /* only the checksum decides: nonsense header, correct checksum */
    make_page(page);
    {
        uint16_t u16 = 9000; /* pd_upper > BLCKSZ */
        memcpy(page + 14, &u16, 2);
        u16 = 9500; /* pd_lower > pd_upper */
        memcpy(page + 12, &u16, 2);
        u16 = 60000; /* pd_special > BLCKSZ */
        memcpy(page + 16, &u16, 2);
    }
    set_checksum(page, cbfs_pg_page_checksum(page, 77));
    is_int(cbfs_pg_page_verify(page, 77, &lsn), CBFS_PG_PAGE_OK, "bad header, good checksum");
    is_int(cbfs_pg_page_verify(page, 78, &lsn), CBFS_PG_PAGE_BAD, "bad header, bad checksum");

    /* the result is always 1..65535, never 0 */
    {
        int in_range = 1;
        make_page(page);
        for (uint32_t b = 0; b < 70000; b++) {
            uint16_t s = cbfs_pg_page_checksum(page, b);
            if (s == 0)
                in_range = 0;
        }
        ok(in_range, "no checksum is 0 over 70000 block numbers");
    }

    free(page);
    free(copy);
    free(unaligned);
}

int main(void)
{
    test_exclude();
    test_relfile();
    test_relation_dir();
    test_unlogged();
    test_checksum();
    return done_testing();
}
