/*
 * pgfile.c - rules about the files of a PostgreSQL data directory: which
 * entries a base backup leaves out, how relation files are named, and the
 * data page checksum.
 *
 * The exclusion rules follow PostgreSQL 15's base backup (basebackup.c), so a
 * restored cbfs backup looks like one made by pg_basebackup.  Every decision
 * is made from the path alone (plus the directory listing for unlogged
 * relations): nothing here touches the file system.
 *
 * Invariants:
 *  - the page checksum is bit-for-bit the value PostgreSQL stores in
 *    pd_checksum; it reads the page in host byte order, as the server that
 *    wrote it did, and never modifies the caller's buffer;
 *  - when in doubt a path is kept: excluding a file PostgreSQL needs loses
 *    data, backing up one too many only costs space.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cbfs/pgfile.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- names ---- */

/*
 * Parse an OID-like decimal number at s: a non-empty run of digits without a
 * leading zero (PostgreSQL prints these with %u), fitting in 32 bits.
 * Returns the number of characters consumed, 0 if s does not start with one.
 */
static size_t parse_oid(const char *s, uint32_t *ret)
{
    uint64_t v = 0;
    size_t i = 0;

    if (s[0] < '1' || s[0] > '9')
        return 0;
    while (s[i] >= '0' && s[i] <= '9') {
        v = v * 10 + (uint64_t) (s[i] - '0');
        if (v > UINT32_MAX)
            return 0;
        i++;
    }
    if (ret)
        *ret = (uint32_t) v;
    return i;
}

/* True if the path component [s, s + len) is one OID (see parse_oid). */
static bool is_oid(const char *s, size_t len)
{
    /* the digits stop at the '/' or '\0' that ends the component */
    return len > 0 && parse_oid(s, NULL) == len;
}

/*
 * Parse what may follow a relation number: an optional fork suffix ("_fsm",
 * "_vm", "_init"; the main fork has none) and an optional segment suffix
 * (".N", N >= 1), then the end of the string.  Shared by ordinary and
 * temporary relation names, which end the same way.
 */
static bool parse_relfile_suffix(const char *s, CbfsRelFile *ret)
{
    static const char *const forks[] = {"fsm", "vm", "init"};
    const char *fork = "";
    uint32_t segno = 0;

    if (*s == '_') {
        size_t i, n = 0;

        /* no fork name is a prefix of another: the first match is the one */
        s++;
        for (i = 0; i < N_ELEMENTS(forks); i++) {
            n = strlen(forks[i]);
            if (strncmp(s, forks[i], n) == 0)
                break;
        }
        if (i == N_ELEMENTS(forks))
            return false;
        fork = forks[i];
        s += n;
    }
    if (*s == '.') {
        size_t n = parse_oid(s + 1, &segno);

        if (n == 0)
            return false;
        s += 1 + n;
    }
    if (*s != '\0')
        return false;
    if (ret) {
        ret->segno = segno;
        strcpy(ret->fork, fork);
    }
    return true;
}

bool cbfs_pg_parse_relfile(const char *name, CbfsRelFile *ret)
{
    CbfsRelFile rf;
    size_t n = parse_oid(name, &rf.relfilenode);

    if (n == 0 || !parse_relfile_suffix(name + n, &rf))
        return false;
    if (ret)
        *ret = rf;
    return true;
}

/* A temporary relation's file: "t<backend>_<relfilenode>" plus fork/segment. */
static bool is_temp_relfile(const char *name)
{
    size_t n;

    if (name[0] != 't')
        return false;
    name++;
    n = parse_oid(name, NULL);
    if (n == 0 || name[n] != '_')
        return false;
    name += n + 1;
    n = parse_oid(name, NULL);
    if (n == 0)
        return false;
    return parse_relfile_suffix(name + n, NULL);
}

/*
 * Split the next '/'-separated component off the front of [*p, end): its
 * start and length (0 for an empty component, as in "a//b").  False at end.
 */
static bool next_component(const char **p, const char *end, const char **ret_start, size_t *ret_len)
{
    const char *s = *p;
    const char *slash;

    if (s >= end)
        return false;
    slash = memchr(s, '/', (size_t) (end - s));
    *ret_start = s;
    *ret_len = (size_t) ((slash ? slash : end) - s);
    *p = slash ? slash + 1 : end;
    return true;
}

static bool component_is(const char *s, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(s, want, len) == 0;
}

/* "PG_<major>_<catversion>", e.g. "PG_15_202209061" or "PG_9.6_201608131". */
static bool is_tablespace_version_dir(const char *s, size_t len)
{
    size_t i = 3, start;

    if (len < 3 || memcmp(s, "PG_", 3) != 0)
        return false;
    for (start = i; i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.'); i++)
        ;
    if (i == start || i == len || s[i] != '_')
        return false;
    i++;
    for (start = i; i < len && s[i] >= '0' && s[i] <= '9'; i++)
        ;
    return i > start && i == len;
}

/* cbfs_pg_is_relation_dir() on the first len bytes of dirpath. */
static bool is_relation_dir(const char *dirpath, size_t dirlen)
{
    const char *p = dirpath, *end = dirpath + dirlen;
    const char *c[4];
    size_t len[4];
    int n = 0;

    /* At most four non-empty components; one trailing '/' is allowed. */
    while (n < 4 && next_component(&p, end, &c[n], &len[n])) {
        if (len[n] == 0)
            return false;
        n++;
    }
    if (p != end)
        return false;

    if (n == 1)
        return component_is(c[0], len[0], "global");
    if (n == 2)
        return component_is(c[0], len[0], "base") && is_oid(c[1], len[1]);
    if (n == 4)
        return component_is(c[0], len[0], "pg_tblspc") && is_oid(c[1], len[1]) &&
               is_tablespace_version_dir(c[2], len[2]) && is_oid(c[3], len[3]);
    return false;
}

bool cbfs_pg_is_relation_dir(const char *dirpath)
{
    return is_relation_dir(dirpath, strlen(dirpath));
}

bool cbfs_pg_is_unlogged_nonInit(const char *name, const char *const *names, size_t n)
{
    CbfsRelFile rf;
    char init_name[32];
    size_t i;

    if (!cbfs_pg_parse_relfile(name, &rf) || strcmp(rf.fork, "init") == 0)
        return false;

    /* PostgreSQL looks for exactly "<relfilenode>_init"; so do we. */
    snprintf(init_name, sizeof(init_name), "%u_init", (unsigned) rf.relfilenode);
    for (i = 0; i < n; i++)
        if (names[i] && strcmp(names[i], init_name) == 0)
            return true;
    return false;
}

/* ---- exclusion ---- */

/* Top-level files a backup must not carry (or that a restore writes itself). */
static const char *const exclude_top_files[] = {
    "postmaster.pid", "postmaster.opts",          "backup_label",
    "tablespace_map", "backup_manifest",          "recovery.signal",
    "standby.signal", "postgresql.auto.conf.tmp", "current_logfiles.tmp",
};

/*
 * Top-level directories whose contents are recreated, emptied or useless
 * after a restore; the directories themselves are kept, as PostgreSQL keeps
 * them, so their permissions survive.
 */
static const char *const exclude_top_dir_contents[] = {
    "pg_wal",    "pg_dynshmem",  "pg_notify",   "pg_replslot",
    "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans",
};

static bool in_list(const char *s, size_t len, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (component_is(s, len, list[i]))
            return true;
    return false;
}

/*
 * Rules, in the order they are tried:
 *  - any component starting with "pgsql_tmp" (temporary files and their
 *    directories) or "pg_internal.init" (the relcache init file and its
 *    temporary copies): the entry, or the tree it is in, is excluded;
 *  - below one of exclude_top_dir_contents: excluded, except that
 *    "pg_wal/archive_status" stays as an empty directory, as in a base
 *    backup, so archiving works on the restored server right away;
 *  - one of exclude_top_dir_contents itself: EXCLUDE_CONTENTS whatever is_dir
 *    says, because a symlinked pg_wal (initdb --waldir) must come back as a
 *    plain directory, never as a link into the original server's files;
 *  - one of exclude_top_files at the top level: excluded;
 *  - a temporary relation file directly in a relation directory: excluded.
 * basebackup.c matches the file and content-directory names at any depth;
 * only the top-level entries are PostgreSQL's own, so deeper look-alikes
 * (say, a "backup_label" under an extension's directory) are kept.
 */
enum cbfs_pg_exclude cbfs_pg_exclude_path(const char *path, bool is_dir)
{
    const char *p = path, *end = path + strlen(path);
    const char *c, *first = NULL, *last = NULL;
    size_t len, first_len = 0, last_len = 0;
    int depth = 0;

    while (next_component(&p, end, &c, &len)) {
        if (len >= 9 && memcmp(c, "pgsql_tmp", 9) == 0)
            return CBFS_PG_EXCLUDE;
        if (len >= 16 && memcmp(c, "pg_internal.init", 16) == 0)
            return CBFS_PG_EXCLUDE;
        if (depth == 0) {
            first = c;
            first_len = len;
        }
        last = c;
        last_len = len;
        depth++;
    }
    if (depth == 0)
        return CBFS_PG_KEEP;

    if (in_list(first, first_len, exclude_top_dir_contents, N_ELEMENTS(exclude_top_dir_contents))) {
        if (depth == 1)
            return CBFS_PG_EXCLUDE_CONTENTS;
        if (depth == 2 && is_dir && component_is(first, first_len, "pg_wal") &&
            component_is(last, last_len, "archive_status"))
            return CBFS_PG_EXCLUDE_CONTENTS;
        return CBFS_PG_EXCLUDE;
    }
    if (depth == 1 && in_list(first, first_len, exclude_top_files, N_ELEMENTS(exclude_top_files)))
        return CBFS_PG_EXCLUDE;

    /* last - 1 is the '/' ending the parent directory */
    if (depth > 1 && last + last_len == end && is_temp_relfile(last) &&
        is_relation_dir(path, (size_t) (last - 1 - path)))
        return CBFS_PG_EXCLUDE;
    return CBFS_PG_KEEP;
}

/* ---- page checksums ---- */

/*
 * PostgreSQL's page checksum (storage/checksum_impl.h), written from its
 * description.  The page is read as a 64 x 32 matrix of 32-bit words in host
 * order; each of the 32 columns is hashed separately with a variant of FNV-1a
 * that also folds in the value shifted right by 17 bits, starting from its own
 * base offset.  Two rounds of zeros mix the last words, the 32 column sums are
 * xor'ed together, the block number is xor'ed in (so a page copied to another
 * place fails), and the result is reduced to 1..65535.  pd_checksum itself
 * counts as zero.
 */
#define N_SUMS             32
#define FNV_PRIME          16777619u
#define PD_CHECKSUM_OFFSET 8 /* uint16 pd_checksum, after the 8-byte pd_lsn */
#define PAGE_ROWS          (CBFS_PG_PAGE_SIZE / (4 * N_SUMS))

/* The base offsets are part of the on-disk format: they must never change. */
static const uint32_t checksum_base_offsets[N_SUMS] = {
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
};

static inline uint32_t checksum_mix(uint32_t sum, uint32_t value)
{
    uint32_t t = sum ^ value;

    return (t * FNV_PRIME) ^ (t >> 17);
}

uint16_t cbfs_pg_page_checksum(const uint8_t *page, uint32_t blkno)
{
    uint32_t sums[N_SUMS];
    uint32_t row[N_SUMS];
    uint32_t result = 0;

    memcpy(sums, checksum_base_offsets, sizeof(sums));
    for (size_t i = 0; i < PAGE_ROWS; i++) {
        /* copy a row out: the page may be unaligned, and must stay untouched */
        memcpy(row, page + i * sizeof(row), sizeof(row));
        if (i == 0)
            memset((uint8_t *) row + PD_CHECKSUM_OFFSET, 0, sizeof(uint16_t));
        for (size_t j = 0; j < N_SUMS; j++)
            sums[j] = checksum_mix(sums[j], row[j]);
    }
    for (int round = 0; round < 2; round++)
        for (size_t j = 0; j < N_SUMS; j++)
            sums[j] = checksum_mix(sums[j], 0);
    for (size_t j = 0; j < N_SUMS; j++)
        result ^= sums[j];

    result ^= blkno;
    return (uint16_t) (result % 65535 + 1);
}

static bool page_is_zero(const uint8_t *page)
{
    static const uint8_t zero[256];

    for (size_t off = 0; off < CBFS_PG_PAGE_SIZE; off += sizeof(zero))
        if (memcmp(page + off, zero, sizeof(zero)) != 0)
            return false;
    return true;
}

/*
 * Only the checksum decides: the header fields are not checked, since a page
 * whose header is damaged but whose checksum matches was written that way by
 * PostgreSQL itself, and the backup has to carry it as it is.
 */
enum cbfs_pg_page_state cbfs_pg_page_verify(const uint8_t *page, uint32_t blkno, uint64_t *ret_lsn)
{
    uint32_t xlogid, xrecoff;
    uint16_t stored;

    memcpy(&xlogid, page, sizeof(xlogid));
    memcpy(&xrecoff, page + sizeof(xlogid), sizeof(xrecoff));
    if (ret_lsn)
        *ret_lsn = (uint64_t) xlogid << 32 | xrecoff;

    if (page_is_zero(page))
        return CBFS_PG_PAGE_OK;
    memcpy(&stored, page + PD_CHECKSUM_OFFSET, sizeof(stored));
    return stored == cbfs_pg_page_checksum(page, blkno) ? CBFS_PG_PAGE_OK : CBFS_PG_PAGE_BAD;
}
