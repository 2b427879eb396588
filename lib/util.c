/*
 * util.c - allocation, hashing, hex, parsing, durable file writes.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cbfs/util.h"

static void oom(void)
{
    static const char msg[] = "cbfs: out of memory\n";
    (void) !write(STDERR_FILENO, msg, sizeof(msg) - 1);
    abort();
}

void *cbfs_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom();
    return p;
}

void *cbfs_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom();
    return p;
}

void *cbfs_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        oom();
    return p;
}

char *cbfs_xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        oom();
    return p;
}

char *cbfs_xasprintf(const char *fmt, ...)
{
    char *p;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&p, fmt, ap) < 0)
        oom();
    va_end(ap);
    return p;
}

void cbfs_sha256(const void *data, size_t len, uint8_t out[CBFS_SHA256_LEN])
{
    unsigned int n = CBFS_SHA256_LEN;
    if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL))
        abort();
}

void cbfs_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int cbfs_hex_decode(const char *in, uint8_t *out, size_t n)
{
    if (strlen(in) != 2 * n)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i] = (uint8_t) (hi << 4 | lo);
    }
    return 0;
}

void cbfs_random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            abort();
        }
        p += r;
        n -= (size_t) r;
    }
}

int cbfs_parse_bool(const char *s, bool *ret)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no",
                                                                                "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *ret = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *ret = false;
            return 0;
        }
    }
    return -1;
}

int cbfs_parse_size(const char *s, uint64_t *ret)
{
    char *end;
    unsigned long long v;

    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -EINVAL;
    {
        static const char units[] = "kmgt";
        const char *u = *end ? strchr(units, *end | 0x20) : NULL;
        if (*end && !u)
            return -EINVAL;
        if (u) {
            int shift = 10 * (int) (u - units + 1);
            if (v > (UINT64_MAX >> shift))
                return -EINVAL; /* does not fit */
            v <<= shift;
            end++;
        }
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end)
        return -EINVAL;
    *ret = v;
    return 0;
}

int cbfs_parse_int(const char *s, long min, long max, long *ret)
{
    char *end;
    long v;

    if (!s || !*s)
        return -EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *ret = v;
    return 0;
}

void cbfs_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    double v = (double) bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < CBFS_ARRAY_LEN(units)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long) bytes);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
}

void cbfs_format_time(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int64_t cbfs_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double cbfs_now(void)
{
    return (double) cbfs_now_ns() / 1e9;
}

bool cbfs_dir_empty(const char *path, bool *ret_exists)
{
    DIR *d = opendir(path);
    struct dirent *de;
    bool empty = true;
    if (ret_exists)
        *ret_exists = d != NULL || errno != ENOENT;
    if (!d)
        return errno == ENOENT;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            empty = false;
            break;
        }
    closedir(d);
    return empty;
}

bool cbfs_is_mount_point(const char *path)
{
    struct stat a, b;
    char *parent = cbfs_xasprintf("%s/..", path);
    bool yes = stat(path, &a) == 0 && stat(parent, &b) == 0 &&
               (a.st_dev != b.st_dev || a.st_ino == b.st_ino);
    free(parent);
    return yes;
}

int cbfs_mkdir_p(const char *path, mode_t mode, CbfsError *err)
{
    char *p = cbfs_xstrdup(path);
    int rc = 0;

    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, mode) < 0 && errno != EEXIST) {
                rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR,
                                    "could not create directory \"%s\": %s", p, strerror(errno));
                break;
            }
            *s = c;
            if (c == '\0')
                break;
        }
    }
    free(p);
    return rc;
}

int cbfs_read_file(const char *path, uint8_t **ret_buf, size_t *ret_len, CbfsError *err)
{
    struct stat st;
    uint8_t *buf;
    size_t cap, n = 0;
    ssize_t got;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not open file \"%s\": %s", path,
                              strerror(errno));
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return cbfs_error_set(err, e, CBFS_EXIT_ERROR, "could not stat file \"%s\": %s", path,
                              strerror(e));
    }
    /* to the end, whatever the size said (/proc's files say they are
     * empty); room for one byte more than said, so that a file of the size
     * said is read without growing the buffer */
    cap = (size_t) st.st_size + 2 > 4096 ? (size_t) st.st_size + 2 : 4096;
    buf = cbfs_xmalloc(cap);
    while ((got = read(fd, buf + n, cap - 1 - n)) != 0) {
        if (got < 0) {
            int e = errno;
            if (e == EINTR)
                continue;
            close(fd);
            free(buf);
            return cbfs_error_set(err, e, CBFS_EXIT_ERROR, "could not read file \"%s\": %s", path,
                                  strerror(e));
        }
        n += (size_t) got;
        if (n == cap - 1)
            buf = cbfs_xrealloc(buf, cap *= 2);
    }
    close(fd);
    buf[n] = '\0';
    *ret_buf = buf;
    *ret_len = n;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st;
    (void) flag;
    (void) ftw;
    remove(path);
    return 0;
}

void cbfs_remove_tree(const char *path)
{
    nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

void cbfs_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int cbfs_fsync_dir(const char *path, CbfsError *err)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return cbfs_error_set(err, e, CBFS_EXIT_ERROR, "could not fsync directory \"%s\": %s", path,
                              strerror(e));
    }
    close(fd);
    return 0;
}

int cbfs_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                           CbfsError *err)
{
    char *tmp = cbfs_xasprintf("%s.tmp.%d", path, (int) getpid());
    char *dir = cbfs_xstrdup(path);
    char *slash = strrchr(dir, '/');
    int fd, rc = 0;

    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        strcpy(dir, ".");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not create file \"%s\": %s", tmp,
                            strerror(errno));
        goto out;
    }
    if (cbfs_write_full(fd, data, len) < 0 || fsync(fd) < 0) {
        rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR, "could not write file \"%s\": %s", tmp,
                            strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        rc = cbfs_error_set(err, errno, CBFS_EXIT_ERROR,
                            "could not rename file \"%s\" to \"%s\": %s", tmp, path,
                            strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = cbfs_fsync_dir(dir, err);
out:
    free(tmp);
    free(dir);
    return rc;
}

int cbfs_pread_full(int fd, void *buf, size_t len, off_t off, size_t *ret_n)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (char *) buf + done, len - done, off + (off_t) done);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        done += (size_t) r;
    }
    if (ret_n)
        *ret_n = done;
    return 0;
}

int cbfs_pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pwrite(fd, (const char *) buf + done, len - done, off + (off_t) done);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        done += (size_t) r;
    }
    return 0;
}

int cbfs_write_full(int fd, const void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = write(fd, (const char *) buf + done, len - done);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        done += (size_t) r;
    }
    return 0;
}

bool cbfs_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    size_t i = 0;

    /* word at a time; memcmp against itself shifted is the classic trick */
    for (; i < len && ((uintptr_t) (p + i) & 7); i++)
        if (p[i])
            return false;
    for (; i + 8 <= len; i += 8)
        if (*(const uint64_t *) (const void *) (p + i))
            return false;
    for (; i < len; i++)
        if (p[i])
            return false;
    return true;
}

char *cbfs_pg_quote(const char *s)
{
    CbfsBuf b;
    cbfs_buf_init(&b);
    cbfs_buf_append(&b, "'", 1);
    for (; *s; s++) {
        if (*s == '\'')
            cbfs_buf_append(&b, "'", 1);
        cbfs_buf_append(&b, s, 1);
    }
    cbfs_buf_append(&b, "'", 1);
    return b.data;
}

void cbfs_buf_init(CbfsBuf *b)
{
    b->cap = 64;
    b->len = 0;
    b->data = cbfs_xmalloc(b->cap);
    b->data[0] = '\0';
}

void cbfs_buf_release(CbfsBuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void cbfs_buf_reserve(CbfsBuf *b, size_t n)
{
    if (n + 1 > b->cap) {
        b->cap = n + 1;
        b->data = cbfs_xrealloc(b->data, b->cap);
    }
}

void cbfs_buf_append(CbfsBuf *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        while (b->len + len + 1 > b->cap)
            b->cap *= 2;
        b->data = cbfs_xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void cbfs_buf_printf(CbfsBuf *b, const char *fmt, ...)
{
    char *s;
    int n;
    va_list ap;
    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    cbfs_buf_append(b, s, (size_t) n);
    free(s);
}

int cbfs_dl_load(const char *soname, const char *what, const CbfsDlSym *syms, size_t n,
                 char *errbuf, size_t errlen)
{
    void *lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(errbuf, errlen, "could not load %s: %s", what, dlerror());
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        *syms[i].slot = dlsym(lib, syms[i].name);
        if (!*syms[i].slot) {
            snprintf(errbuf, errlen, "could not load %s: no symbol %s", what, syms[i].name);
            return -1;
        }
    }
    return 0;
}

void cbfs_test_pause(const char *point)
{
    const char *list = getenv("CBFS_TEST_PAUSE"), *dir = getenv("CBFS_TEST_PAUSE_DIR");
    size_t n = strlen(point);
    char *reached, *go;
    int fd;

    if (!list || !dir)
        return;
    for (const char *p = list; (p = strstr(p, point)) != NULL; p += n)
        if ((p == list || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            goto hit;
    return;
hit:
    reached = cbfs_xasprintf("%s/%s.reached", dir, point);
    go = cbfs_xasprintf("%s/%s.go", dir, point);
    fd = open(reached, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
    while (access(go, F_OK) != 0)
        cbfs_sleep_ms(20);
    free(reached);
    free(go);
}

int cbfs_cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}
