/*
 * walarchive.c - push and fetch WAL files.  See walarchive.h.
 *
 * wal-push is on PostgreSQL's critical path and is the only writer racing
 * with itself (an old and a new primary may push the same segment): the
 * create-once put decides, and a loser compares checksums instead of
 * overwriting.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "cbfs/walarchive.h"
#include "cbfs/util.h"
#include "cbfs/wal.h"

static const char wal_magic[8] = {'C', 'B', 'F', 'S', 'W', 'A', 'L', '1'};

char *cbfs_wal_key(const char *name)
{
    uint32_t tli;
    if (cbfs_wal_classify(name, &tli) == CBFS_WAL_INVALID)
        return NULL;
    return cbfs_xasprintf("wal/%08X/%s", tli, name);
}

/* 0 if key holds a file with checksum sum and length len; -ENOENT if key
 * is absent; CBFS_EXIT_CONFLICT if it holds something else. */
static int compare_stored(CbfsRepo *r, const char *key, const char *name,
                          const uint8_t sum[CBFS_SHA256_LEN], size_t len, CbfsError *err)
{
    uint8_t head[CBFS_WAL_OBJECT_HEADER];
    size_t got;
    int rc = cbfs_store_get_range(r->store, key, 0, sizeof(head), head, &got, err);
    if (rc < 0)
        return rc;
    if (got != sizeof(head) || memcmp(head, wal_magic, 8) != 0 ||
        memcmp(head + 8, sum, CBFS_SHA256_LEN) != 0 || cbfs_get_le64(head + 40) != len)
        return cbfs_error_set(err, EEXIST, CBFS_EXIT_CONFLICT,
                              "WAL file \"%s\" already exists in repository \"%s\" with "
                              "different content",
                              name, r->display);
    return 0;
}

/* Check the cluster a segment belongs to against the repository's. */
static int check_cluster(CbfsRepo *r, const char *name, const uint8_t *data, size_t len,
                         uint32_t *ret_seg_size, CbfsError *err)
{
    uint64_t sysid, owner;
    uint32_t seg_size, tli;
    int rc;

    if (cbfs_wal_segment_header(data, len, &sysid, &seg_size, &tli) < 0)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                              "WAL file \"%s\" does not start with a valid page header", name);
    if (cbfs_wal_classify(name, NULL) == CBFS_WAL_SEGMENT && len != seg_size)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_ERROR,
                              "WAL file \"%s\" has size %zu, expected %u", name, len, seg_size);
    rc = cbfs_repo_claim(r, sysid, &owner, err);
    if (rc < 0)
        return rc;
    if (owner != sysid) {
        char what[CBFS_ERROR_MSG_MAX / 2];
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_DATABASE,
                              "WAL file \"%s\" belongs to database system %llu, not %llu of %s",
                              name, (unsigned long long) sysid, (unsigned long long) owner,
                              cbfs_repo_what(r, what, sizeof(what)));
    }
    *ret_seg_size = seg_size;
    return 0;
}

/*
 * A segment of timeline T that reaches past the point where T ended, as a
 * later timeline's history file in the repository records it, holds WAL
 * that no timeline descending from the fork contains: a former leader's
 * writes after the failover, pushed when it comes back.  Refused, so that
 * what the repository serves under T's name is what the new leader's
 * history says T was (the fork's own segment stays as the new leader
 * archived it, under its .partial name).  The history files are looked up
 * from T + 1 on until one is missing, as PostgreSQL numbers new timelines.
 */
/* 0: no fork passed; 1 (err set): past a fork; < 0: could not tell. */
static int check_fork(CbfsRepo *r, const char *name, uint32_t seg_size, CbfsError *err)
{
    uint32_t tli;
    uint64_t segno;

    if (cbfs_wal_parse_segname(name, seg_size, &tli, &segno) < 0)
        return 0;
    for (uint32_t t = tli + 1; t != 0; t++) {
        char hname[32], end[32];
        uint8_t *text;
        size_t len, n;
        CbfsTliSwitch *sw;
        int rc;

        snprintf(hname, sizeof(hname), "%08X.history", t);
        rc = cbfs_wal_read(r, hname, &text, &len, err);
        if (rc == -ENOENT) {
            cbfs_error_init(err);
            return 0;
        }
        if (rc < 0)
            return rc;
        text = cbfs_xrealloc(text, len + 1);
        text[len] = '\0';
        rc = cbfs_wal_parse_history((const char *) text, &sw, &n);
        free(text);
        if (rc < 0)
            return cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                                  "history file \"%s\" in repository \"%s\" is corrupt", hname,
                                  r->display);
        for (size_t i = 0; i < n; i++) {
            if (sw[i].tli != tli || (segno + 1) * seg_size <= sw[i].end)
                continue;
            cbfs_lsn_format(sw[i].end, end, sizeof(end));
            free(sw);
            cbfs_error_set(err, EEXIST, CBFS_EXIT_CONFLICT,
                           "WAL file \"%s\" holds WAL of timeline %u past its end at %s (history "
                           "file \"%s\" in repository \"%s\")",
                           name, tli, end, hname, r->display);
            return 1;
        }
        free(sw);
    }
    return 0;
}

int cbfs_wal_push_buffer(CbfsRepo *r, const char *name, const uint8_t *data, size_t len,
                         CbfsError *err)
{
    enum cbfs_wal_kind kind = cbfs_wal_classify(name, NULL);
    char *key;
    uint8_t *obj, sum[CBFS_SHA256_LEN];
    size_t cap, n;
    int rc;

    if (kind == CBFS_WAL_INVALID)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE, "\"%s\" is not a WAL file name", name);
    cbfs_sha256(data, len, sum);
    if (kind == CBFS_WAL_SEGMENT || kind == CBFS_WAL_PARTIAL) {
        uint32_t seg_size = 0;
        rc = check_cluster(r, name, data, len, &seg_size, err);
        if (rc == 0 && kind == CBFS_WAL_SEGMENT)
            rc = check_fork(r, name, seg_size, err);
        if (rc == 1) {
            /* stored already as it is (accepted before the fork was
             * known): the same push again is answered as before */
            CbfsError e2;
            char *key = cbfs_wal_key(name);
            cbfs_error_init(&e2);
            rc = compare_stored(r, key, name, sum, len, &e2) == 0 ? 0 : -EEXIST;
            free(key);
            if (rc == 0)
                return 0;
        }
        if (rc < 0)
            return rc;
    }
    key = cbfs_wal_key(name);
    /* no look first: a segment is rarely stored already (the background
     * pusher's markers spare the archiver's call that), and on an object
     * store a look is a round trip on every push */
    cap = CBFS_WAL_OBJECT_HEADER + ZSTD_compressBound(len);
    obj = cbfs_xmalloc(cap);
    memcpy(obj, wal_magic, 8);
    memcpy(obj + 8, sum, CBFS_SHA256_LEN);
    cbfs_put_le64(obj + 40, len);
    n = ZSTD_compress(obj + CBFS_WAL_OBJECT_HEADER, cap - CBFS_WAL_OBJECT_HEADER, data, len,
                      r->compress_level < 3 ? r->compress_level : 3);
    if (ZSTD_isError(n) || n >= len) {
        memcpy(obj + CBFS_WAL_OBJECT_HEADER, data, len);
        n = len;
    }
    rc = cbfs_store_put(r->store, key, obj, CBFS_WAL_OBJECT_HEADER + n, err);
    if (rc == -EEXIST) {
        /* the other side of a failover, or an earlier call: same content? */
        rc = compare_stored(r, key, name, sum, len, err);
    } else if (rc < 0) {
        cbfs_error_prefix(err, "could not store WAL file \"%s\"", name);
    }
    free(key);
    free(obj);
    return rc;
}

int cbfs_wal_push_file(CbfsRepo *r, const char *path, CbfsError *err)
{
    const char *name = strrchr(path, '/');
    struct stat st;
    void *data;
    int fd, rc;

    name = name ? name + 1 : path;
    if (cbfs_wal_classify(name, NULL) == CBFS_WAL_INVALID)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE, "\"%s\" is not a WAL file name", name);
    /* mapped, not read: a 16 MB segment is neither copied nor zeroed first */
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not open file \"%s\": %s", path,
                              strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        if (fstat(fd, &st) == 0)
            e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        close(fd);
        return cbfs_error_set(err, e, CBFS_EXIT_ERROR, "could not read file \"%s\": %s", path,
                              strerror(e));
    }
    if (st.st_size == 0) {
        close(fd);
        return cbfs_wal_push_buffer(r, name, (const uint8_t *) "", 0, err);
    }
    data = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    close(fd);
    if (data == MAP_FAILED)
        return cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not read file \"%s\": %s", path,
                              strerror(errno));
    rc = cbfs_wal_push_buffer(r, name, data, (size_t) st.st_size, err);
    munmap(data, (size_t) st.st_size);
    return rc;
}

int cbfs_wal_read(CbfsRepo *r, const char *name, uint8_t **ret_buf, size_t *ret_len, CbfsError *err)
{
    char *key = cbfs_wal_key(name);
    uint8_t *obj = NULL, *plain = NULL, sum[CBFS_SHA256_LEN];
    size_t len;
    uint64_t plen;
    const char *why = NULL;
    int rc;

    if (!key)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE, "\"%s\" is not a WAL file name", name);
    rc = cbfs_store_get(r->store, key, &obj, &len, err);
    if (rc < 0)
        goto out;
    if (len < CBFS_WAL_OBJECT_HEADER || memcmp(obj, wal_magic, 8) != 0) {
        why = "bad header";
        goto corrupt;
    }
    plen = cbfs_get_le64(obj + 40);
    if (plen > (1ull << 31)) {
        why = "bad header";
        goto corrupt;
    }
    plain = cbfs_xmalloc(plen ? plen : 1);
    if (len - CBFS_WAL_OBJECT_HEADER == plen) {
        memcpy(plain, obj + CBFS_WAL_OBJECT_HEADER, plen);
    } else {
        size_t n = ZSTD_decompress(plain, plen, obj + CBFS_WAL_OBJECT_HEADER,
                                   len - CBFS_WAL_OBJECT_HEADER);
        if (ZSTD_isError(n) || n != plen) {
            why = "could not decompress";
            goto corrupt;
        }
    }
    cbfs_sha256(plain, plen, sum);
    if (memcmp(sum, obj + 8, CBFS_SHA256_LEN) != 0) {
        why = "checksum mismatch";
        goto corrupt;
    }
    *ret_buf = plain;
    *ret_len = plen;
    plain = NULL;
    rc = 0;
    goto out;
corrupt:
    rc = cbfs_error_set(err, EBADMSG, CBFS_EXIT_CORRUPT,
                        "WAL file \"%s\" in repository \"%s\" is corrupt: %s (object \"%s\")", name,
                        r->display, why, key);
out:
    free(obj);
    free(plain);
    free(key);
    return rc;
}

int cbfs_wal_fetch(CbfsRepo *r, const char *name, const char *dest, CbfsError *err)
{
    uint8_t *plain;
    size_t len;
    int rc = cbfs_wal_read(r, name, &plain, &len, err);
    if (rc < 0)
        return rc;
    rc = cbfs_write_file_atomic(dest, plain, len, 0600, err);
    free(plain);
    return rc;
}

int cbfs_wal_exists(CbfsRepo *r, const char *name, CbfsError *err)
{
    char *key = cbfs_wal_key(name);
    int rc;
    if (!key)
        return -ENOENT;
    rc = cbfs_store_stat(r->store, key, NULL, err);
    free(key);
    return rc;
}
