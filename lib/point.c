/*
 * point.c - restore points and the resolution of REPO@POINT into a backup
 * and a recovery target.  See point.h.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/passphrase.h"
#include "cbfs/point.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"
#include "cbfs/walarchive.h"

static int digits(const char **s, int n, int *ret)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char) (*s)[i]))
            return -EINVAL;
        v = v * 10 + ((*s)[i] - '0');
    }
    *s += n;
    *ret = v;
    return 0;
}

static int expect(const char **s, char c)
{
    if (**s != c)
        return -EINVAL;
    (*s)++;
    return 0;
}

int cbfs_parse_time(const char *str, time_t *ret_time, char **ret_pg)
{
    const char *s = str;
    struct tm tm;
    int y, mo, d, h, mi, sec, zh = 0, zm = 0, sign = 1;
    char frac[16] = "";
    time_t t;

    memset(&tm, 0, sizeof(tm));
    if (digits(&s, 4, &y) || expect(&s, '-') || digits(&s, 2, &mo) || expect(&s, '-') ||
        digits(&s, 2, &d) || (*s != 'T' && *s != ' ') || !++s || digits(&s, 2, &h) ||
        expect(&s, ':') || digits(&s, 2, &mi) || expect(&s, ':') || digits(&s, 2, &sec))
        return -EINVAL;
    if (*s == '.') {
        size_t n = 0;
        s++;
        while (isdigit((unsigned char) s[n]) && n < 9)
            n++;
        if (n == 0 || isdigit((unsigned char) s[n]))
            return -EINVAL;
        snprintf(frac, sizeof(frac), ".%.*s", (int) n, s);
        s += n;
    }
    if (*s == 'Z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        sign = *s == '-' ? -1 : 1;
        s++;
        if (digits(&s, 2, &zh))
            return -EINVAL;
        if (*s == ':')
            s++;
        if (*s && digits(&s, 2, &zm))
            return -EINVAL;
    } else {
        return -EINVAL; /* a time without a zone is ambiguous: refused */
    }
    if (*s || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || zh > 14 ||
        zm > 59)
        return -EINVAL;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    t = timegm(&tm);
    {
        /* timegm normalizes 2026-02-31 into March: refuse such dates */
        struct tm back;
        gmtime_r(&t, &back);
        if (back.tm_mday != d || back.tm_mon != mo - 1)
            return -EINVAL;
    }
    t -= sign * (zh * 3600 + zm * 60);
    *ret_time = t;
    if (ret_pg) {
        struct tm u;
        char buf[64];
        gmtime_r(&t, &u);
        strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &u);
        /* PostgreSQL 15 refuses a trailing "Z" in recovery_target_time */
        *ret_pg = cbfs_xasprintf("%s%s+00", buf, frac);
    }
    return 0;
}

static char *point_key(const char *name)
{
    return cbfs_xasprintf("points/%s", name);
}

int cbfs_point_create(CbfsRepo *r, const char *name, uint64_t lsn, time_t when, uint32_t tli,
                      uint64_t sysid, CbfsError *err)
{
    CbfsKv *kv = cbfs_kv_new();
    char buf[32], *text, *key = point_key(name);
    int rc;

    cbfs_kv_set(kv, "name", name);
    cbfs_lsn_format(lsn, buf, sizeof(buf));
    cbfs_kv_set(kv, "lsn", buf);
    cbfs_format_time(when, buf, sizeof(buf));
    cbfs_kv_set(kv, "time", buf);
    cbfs_kv_set_u64(kv, "timeline", tli);
    cbfs_kv_set_u64(kv, "system_identifier", sysid);
    text = cbfs_kv_format(kv);
    rc = cbfs_store_put(r->store, key, text, strlen(text), err);
    if (rc == -EEXIST)
        rc = cbfs_error_set(err, EEXIST, CBFS_EXIT_CONFLICT,
                            "restore point \"%s\" already exists in repository \"%s\"", name,
                            r->display);
    free(text);
    free(key);
    cbfs_kv_free(kv);
    return rc;
}

int cbfs_point_read(CbfsRepo *r, const char *name, CbfsKv **ret, CbfsError *err)
{
    char *key;
    uint8_t *text;
    size_t len;
    int rc;

    if (!cbfs_label_valid(name))
        return -ENOENT;
    key = point_key(name);
    rc = cbfs_store_get(r->store, key, &text, &len, err);
    if (rc == 0) {
        rc = cbfs_kv_parse((const char *) text, len, ret, err);
        free(text);
        if (rc < 0)
            cbfs_error_prefix(err, "restore point \"%s\" is damaged", name);
    }
    free(key);
    return rc;
}

static uint64_t kv_lsn(const CbfsKv *kv, const char *key)
{
    uint64_t lsn = 0;
    const char *s = cbfs_kv_get(kv, key);
    if (s)
        cbfs_lsn_parse(s, &lsn);
    return lsn;
}

static int cmp_point(const void *a, const void *b)
{
    uint64_t x = kv_lsn(*(CbfsKv *const *) a, "lsn"), y = kv_lsn(*(CbfsKv *const *) b, "lsn");
    return x < y ? -1 : x > y;
}

int cbfs_point_list(CbfsRepo *r, CbfsKv ***ret, size_t *ret_n, CbfsError *err)
{
    char **names = NULL;
    CbfsKv **list;
    size_t nnames = 0, n = 0;
    int rc = cbfs_store_list_names(r->store, "points/", "", &names, &nnames, err);

    list = cbfs_xcalloc(nnames ? nnames : 1, sizeof(CbfsKv *));
    for (size_t i = 0; i < nnames && rc == 0; i++) {
        rc = cbfs_point_read(r, names[i], &list[n], err);
        if (rc == 0)
            n++;
        else if (rc == -ENOENT)
            rc = 0;
    }
    cbfs_store_free_names(names, nnames);
    if (rc < 0) {
        cbfs_repo_free_backups(list, n);
        return rc;
    }
    if (n > 1)
        qsort(list, n, sizeof(CbfsKv *), cmp_point);
    *ret = list;
    *ret_n = n;
    return 0;
}

int cbfs_read_settings(const char *path, char **ret, CbfsError *err)
{
    uint8_t *text;
    size_t len;
    int rc = cbfs_read_file(path, &text, &len, NULL);
    if (rc < 0)
        return cbfs_error_set(err, -rc, CBFS_EXIT_USAGE, "could not read settings file \"%s\": %s",
                              path, strerror(-rc));
    if (memchr(text, '\0', len)) {
        free(text);
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "could not read settings file \"%s\": not a text file", path);
    }
    *ret = cbfs_xasprintf("# settings from %s\n%.*s%s", path, (int) len, (const char *) text,
                          len && text[len - 1] != '\n' ? "\n" : "");
    free(text);
    return 0;
}

void cbfs_target_release(CbfsTarget *t)
{
    free(t->extra);
    free(t->label);
    free(t->value);
    memset(t, 0, sizeof(*t));
}

/* The newest backup ending at or before lsn (or time, when lsn is 0). */
static const CbfsKv *backup_before(CbfsKv **list, size_t n, uint64_t lsn, time_t when)
{
    for (size_t i = n; i-- > 0;) {
        if (lsn) {
            if (kv_lsn(list[i], "stop_lsn") <= lsn)
                return list[i];
        } else {
            time_t stop;
            const char *s = cbfs_kv_get(list[i], "stop_time");
            if (s && cbfs_parse_time(s, &stop, NULL) == 0 && stop <= when)
                return list[i];
        }
    }
    return NULL;
}

/* Every WAL segment recovery reads from backup's start to lsn on timeline
 * tli is archived (following tli's history when it branched off the
 * backup's timeline): 0, or -ENOENT and *missing the first one missing.
 * A path the history does not show is not judged here (0). */
static int wal_complete(CbfsRepo *r, const CbfsKv *backup, uint32_t tli, uint64_t lsn,
                        char *missing, size_t len, CbfsError *err)
{
    uint64_t btli = 1, seg_size = 16u << 20, start = 0;
    CbfsTliSwitch *sw = NULL;
    size_t nsw = 0, k;
    struct {
        uint32_t tli;
        uint64_t lo, hi;
    } hops[64];
    size_t nhops = 0;
    int rc = 0;
    const char *s = cbfs_kv_get(backup, "start_lsn");

    cbfs_kv_get_u64(backup, "timeline", &btli);
    cbfs_kv_get_u64(backup, "wal_segment_size", &seg_size);
    if (!s || cbfs_lsn_parse(s, &start) < 0 || lsn == 0)
        return 0;
    if (tli == btli) {
        hops[nhops++] = (typeof(hops[0])){tli, cbfs_wal_segno(start, (uint32_t) seg_size),
                                          cbfs_wal_segno(lsn - 1, (uint32_t) seg_size)};
    } else {
        char hname[32];
        uint8_t *text;
        size_t tlen;
        snprintf(hname, sizeof(hname), "%08X.history", tli);
        if (cbfs_wal_read(r, hname, &text, &tlen, err) < 0) {
            cbfs_error_init(err);
            return 0;
        }
        rc = cbfs_wal_parse_history((const char *) text, &sw, &nsw);
        free(text);
        for (k = 0; rc == 0 && k < nsw && sw[k].tli != btli; k++)
            ;
        if (rc < 0 || k == nsw) {
            free(sw);
            return 0;
        }
        for (size_t j = k; j < nsw && nhops < 63; j++) {
            uint64_t lo = j == k ? cbfs_wal_segno(start, (uint32_t) seg_size)
                                 : cbfs_wal_segno(sw[j - 1].end, (uint32_t) seg_size);
            uint64_t end = cbfs_wal_segno(sw[j].end, (uint32_t) seg_size);
            /* the segment holding the switch is the child's */
            if (end > lo)
                hops[nhops++] = (typeof(hops[0])){sw[j].tli, lo, end - 1};
        }
        hops[nhops++] = (typeof(hops[0])){tli, cbfs_wal_segno(sw[nsw - 1].end, (uint32_t) seg_size),
                                          cbfs_wal_segno(lsn - 1, (uint32_t) seg_size)};
        free(sw);
    }
    for (size_t h = 0; h < nhops && rc == 0; h++) {
        char prefix[32], **names;
        size_t n;
        snprintf(prefix, sizeof(prefix), "wal/%08X/", hops[h].tli);
        if ((rc = cbfs_store_list_names(r->store, prefix, "", &names, &n, err)) < 0)
            break;
        qsort(names, n, sizeof(char *), cbfs_cmp_strp);
        for (uint64_t seg = hops[h].lo; seg <= hops[h].hi && rc == 0; seg++) {
            char name[CBFS_WAL_NAME_MAX], *key = name;
            cbfs_wal_segname(hops[h].tli, seg, (uint32_t) seg_size, name, sizeof(name));
            if (!bsearch(&key, names, n, sizeof(char *), cbfs_cmp_strp)) {
                snprintf(missing, len, "%s", name);
                rc = -ENOENT;
            }
        }
        cbfs_store_free_names(names, n);
    }
    return rc;
}

/* Is the WAL holding the byte before lsn archived, on the backup's timeline
 * or a later one? */
static int wal_reaches(CbfsRepo *r, const CbfsKv *backup, uint64_t lsn, char *missing, size_t len,
                       CbfsError *err)
{
    uint64_t tli = 1, seg_size = 16u << 20;
    cbfs_kv_get_u64(backup, "timeline", &tli);
    cbfs_kv_get_u64(backup, "wal_segment_size", &seg_size);
    cbfs_wal_segname((uint32_t) tli, cbfs_wal_segno(lsn - 1, (uint32_t) seg_size),
                     (uint32_t) seg_size, missing, len);
    for (uint32_t t = (uint32_t) tli; t < (uint32_t) tli + 64; t++) {
        char name[CBFS_WAL_NAME_MAX];
        int rc;
        cbfs_wal_segname(t, cbfs_wal_segno(lsn - 1, (uint32_t) seg_size), (uint32_t) seg_size, name,
                         sizeof(name));
        rc = cbfs_wal_exists(r, name, err);
        if (rc != -ENOENT)
            return rc;
    }
    return -ENOENT;
}

typedef struct Newest {
    uint32_t min_tli;
    char name[CBFS_WAL_NAME_MAX]; /* the newest segment: latest timeline, then highest */
} Newest;

static int newest_cb(const char *key, uint64_t size, void *ctx)
{
    Newest *n = ctx;
    const char *name = strrchr(key, '/') ? strrchr(key, '/') + 1 : key;
    uint32_t tli;
    (void) size;
    if (cbfs_wal_classify(name, &tli) == CBFS_WAL_SEGMENT && tli >= n->min_tli &&
        strcmp(name, n->name) > 0)
        snprintf(n->name, sizeof(n->name), "%s", name);
    return 0;
}

#define XACT_SCAN_MAX 32 /* segments read back from the newest for a transaction end */

/* Does the archived WAL reach time `when`: did a transaction end after it
 * (recovery_target_time stops at the first that did)?  -ENOENT with the last
 * end time and its segment if not; 0 if it does, or if the newest segments
 * hold no transaction end to tell (recovery then decides). */
static int wal_reaches_time(CbfsRepo *r, const CbfsKv *backup, time_t when, char *last,
                            size_t last_len, int64_t *ret_us, CbfsError *err)
{
    uint64_t tli = 1, seg_size = 16u << 20, segno;
    uint32_t seg_tli;
    Newest n;
    int rc;

    cbfs_kv_get_u64(backup, "timeline", &tli);
    cbfs_kv_get_u64(backup, "wal_segment_size", &seg_size);
    memset(&n, 0, sizeof(n));
    n.min_tli = (uint32_t) tli;
    rc = cbfs_store_list(r->store, "wal/", newest_cb, &n, err);
    if (rc < 0)
        return rc;
    if (!n.name[0] || cbfs_wal_parse_segname(n.name, (uint32_t) seg_size, &seg_tli, &segno) < 0)
        return 0;
    for (int i = 0; i < XACT_SCAN_MAX; i++, segno--) {
        char name[CBFS_WAL_NAME_MAX];
        uint8_t *seg;
        size_t len;
        int64_t t;
        CbfsError ignore;
        cbfs_wal_segname(seg_tli, segno, (uint32_t) seg_size, name, sizeof(name));
        cbfs_error_init(&ignore);
        /* unreadable: not for this check to say; a recovery that needs it will */
        if (cbfs_wal_read(r, name, &seg, &len, &ignore) < 0)
            return 0;
        rc = cbfs_wal_last_xact_time(seg, len, &t);
        free(seg);
        if (rc == 1) {
            if (t > (int64_t) when * 1000000)
                return 0;
            snprintf(last, last_len, "%s", name);
            *ret_us = t;
            return -ENOENT;
        }
        if (segno == 0)
            break;
    }
    return 0;
}

int cbfs_point_resolve(CbfsRepo *r, const char *point, CbfsTarget *ret, CbfsError *err)
{
    CbfsKv **list = NULL, *rec = NULL, *pt = NULL;
    const CbfsKv *from = NULL;
    size_t n = 0;
    uint64_t lsn = 0;
    time_t when = 0;
    int rc;

    memset(ret, 0, sizeof(*ret));
    if (!point || strcmp(point, "latest") == 0 || cbfs_repo_read_backup(r, point, &rec, err) == 0) {
        cbfs_kv_free(rec);
        ret->kind = CBFS_TARGET_IMMEDIATE;
        return cbfs_repo_resolve(r, point, &ret->label, err);
    }
    cbfs_error_init(err);
    rc = cbfs_repo_list_backups(r, &list, &n, err);
    if (rc < 0)
        return rc;
    if (n == 0) {
        rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND, "repository \"%s\" has no backups",
                            r->display);
        goto out;
    }
    if (strncmp(point, "lsn:", 4) == 0) {
        if (cbfs_lsn_parse(point + 4, &lsn) < 0 || lsn == 0) {
            rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE, "invalid LSN in point \"%s\"", point);
            goto out;
        }
        ret->kind = CBFS_TARGET_LSN;
        ret->value = cbfs_xstrdup(point + 4);
    } else if ((rc = cbfs_point_read(r, point, &pt, err)) == 0) {
        lsn = kv_lsn(pt, "lsn");
        ret->kind = CBFS_TARGET_NAME;
        ret->value = cbfs_xstrdup(point);
    } else if (rc != -ENOENT) {
        goto out;
    } else if (cbfs_parse_time(point, &when, &ret->value) == 0) {
        ret->kind = CBFS_TARGET_TIME;
        if (when > time(NULL)) {
            rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_NOT_FOUND, "point \"%s\" is in the future",
                                point);
            goto out;
        }
    } else {
        rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                            "backup or restore point \"%s\" not found in repository \"%s\"", point,
                            r->display);
        goto out;
    }
    from = backup_before(list, n, lsn, when);
    if (!from) {
        rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                            "point \"%s\" is before the first backup (the earliest, \"%s\", ends "
                            "at %s, LSN %s)",
                            point, cbfs_kv_get(list[0], "label"), cbfs_kv_get(list[0], "stop_time"),
                            cbfs_kv_get(list[0], "stop_lsn"));
        goto out;
    }
    if (lsn) {
        char missing[CBFS_WAL_NAME_MAX];
        uint64_t ptli = 0;
        rc = wal_reaches(r, from, lsn, missing, sizeof(missing), err);
        if (rc == -ENOENT) {
            rc =
                cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                               "point \"%s\" is beyond the archived WAL: WAL file \"%s\" is not in "
                               "repository \"%s\"",
                               point, missing, r->display);
            goto out;
        }
        if (rc < 0)
            goto out;
        /* and every segment on the way there (a named point knows its
         * timeline; an LSN is taken on the backup's) */
        if (!pt || cbfs_kv_get_u64(pt, "timeline", &ptli) < 0 || ptli == 0 || ptli > UINT32_MAX)
            cbfs_kv_get_u64(from, "timeline", &ptli);
        rc = wal_complete(r, from, (uint32_t) ptli, lsn, missing, sizeof(missing), err);
        if (rc == -ENOENT) {
            rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                                "point \"%s\" cannot be reached from backup \"%s\": WAL file "
                                "\"%s\" is missing from repository \"%s\"",
                                point, cbfs_kv_get(from, "label"), missing, r->display);
            goto out;
        }
        if (rc < 0)
            goto out;
    } else if (ret->kind == CBFS_TARGET_TIME) {
        char last[CBFS_WAL_NAME_MAX], at[64];
        int64_t t_us = 0;
        rc = wal_reaches_time(r, from, when, last, sizeof(last), &t_us, err);
        if (rc == -ENOENT) {
            cbfs_format_time((time_t) (t_us / 1000000), at, sizeof(at));
            rc = cbfs_error_set(
                err, ENOENT, CBFS_EXIT_NOT_FOUND,
                "point \"%s\" is beyond the archived WAL: its last transaction ended "
                "at %s (WAL file \"%s\")",
                point, at, last);
            goto out;
        }
        if (rc < 0)
            goto out;
    }
    ret->label = cbfs_xstrdup(cbfs_kv_get(from, "label"));
    rc = 0;
out:
    if (rc < 0) {
        free(ret->value);
        ret->value = NULL;
    }
    cbfs_kv_free(pt);
    cbfs_repo_free_backups(list, n);
    return rc;
}

/* Append s single-quoted for the shell. */
static void shell_quote(CbfsBuf *b, const char *s)
{
    cbfs_buf_append(b, "'", 1);
    for (; *s; s++) {
        if (*s == '\'')
            cbfs_buf_append(b, "'\\''", 4);
        else
            cbfs_buf_append(b, s, 1);
    }
    cbfs_buf_append(b, "'", 1);
}

/* restore_command and recovery_end_command, quoted for the configuration
 * file (caller frees both). */
static void fetch_commands(const CbfsRepo *r, const char *self, char **ret_cmd, char **ret_end)
{
    const char *repo = r->loc.kind == CBFS_LOCATION_POSIX ? r->loc.path : r->loc.spec;
    const char *pass_file = r->crypt ? cbfs_passphrase_file() : NULL;
    CbfsBuf cmd;

    /* restore_command runs through the shell: quote the paths for it */
    cbfs_buf_init(&cmd);
    shell_quote(&cmd, self);
    cbfs_buf_append(&cmd, " wal-fetch ", 11);
    if (pass_file) {
        /* the file, never the passphrase: a configuration file holds no secret */
        cbfs_buf_append(&cmd, "--passphrase-file ", 18);
        shell_quote(&cmd, pass_file);
        cbfs_buf_append(&cmd, " ", 1);
    }
    if (r->node) {
        cbfs_buf_append(&cmd, "--node ", 7);
        shell_quote(&cmd, r->node);
        cbfs_buf_append(&cmd, " ", 1);
    }
    shell_quote(&cmd, repo);
    cbfs_buf_append(&cmd, " %f %p", 6);
    *ret_cmd = cbfs_pg_quote(cmd.data);
    /* the end command drops segments fetched ahead that recovery did not use */
    cmd.len = (size_t) (strstr(cmd.data, " wal-fetch ") - cmd.data);
    cbfs_buf_append(&cmd, " wal-fetch --end", 16);
    *ret_end = cbfs_pg_quote(cmd.data);
    cbfs_buf_release(&cmd);
}

char *cbfs_target_recovery_conf(const CbfsRepo *r, const CbfsTarget *t, const char *who,
                                const char *self, bool archive_off)
{
    static const char *const settings[] = {"recovery_target", "recovery_target_name",
                                           "recovery_target_time", "recovery_target_lsn"};
    char *target, *qcmd, *qend, *conf;

    fetch_commands(r, self, &qcmd, &qend);
    target = cbfs_pg_quote(t->kind == CBFS_TARGET_IMMEDIATE ? "immediate" : t->value);
    conf = cbfs_xasprintf("\n# added by %s for backup %s\n"
                          "restore_command = %s\n"
                          "recovery_end_command = %s\n"
                          "%s = %s\n"
                          "recovery_target_action = '%s'\n"
                          "# a copy is never a standby of, nor holds a slot on, its source\n"
                          "primary_conninfo = ''\n"
                          "primary_slot_name = ''\n%s%s",
                          who, t->label, qcmd, qend, settings[t->kind], target,
                          t->pause ? "pause" : "promote",
                          archive_off ? "archive_mode = 'off'\n" : "", t->extra ? t->extra : "");
    free(qcmd);
    free(qend);
    free(target);
    return conf;
}

char *cbfs_standby_recovery_conf(const CbfsRepo *r, const char *label, const char *self,
                                 const char *primary_conninfo, const char *slot, bool archive_off,
                                 const char *extra)
{
    char *qcmd, *qend;
    CbfsBuf b;

    fetch_commands(r, self, &qcmd, &qend);
    cbfs_buf_init(&b);
    cbfs_buf_printf(&b,
                    "\n# added by cbfs restore --standby for backup %s\n"
                    "restore_command = %s\n"
                    "recovery_end_command = %s\n"
                    "recovery_target_timeline = 'latest'\n",
                    label, qcmd, qend);
    if (primary_conninfo) {
        char *q = cbfs_pg_quote(primary_conninfo);
        cbfs_buf_printf(&b, "primary_conninfo = %s\n", q);
        free(q);
    }
    if (slot) {
        char *q = cbfs_pg_quote(slot);
        cbfs_buf_printf(&b, "primary_slot_name = %s\n", q);
        free(q);
    }
    cbfs_buf_printf(&b, "%s%s", archive_off ? "archive_mode = 'off'\n" : "", extra ? extra : "");
    free(qcmd);
    free(qend);
    return b.data; /* handed over */
}
