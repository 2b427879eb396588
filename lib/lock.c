/*
 * lock.c - the repository lock and the registrations of running backups.
 * See lock.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbfs/lock.h"
#include "cbfs/log.h"
#include "cbfs/util.h"

/* Start time of a process in clock ticks since boot (field 22 of
 * /proc/PID/stat), or 0 if there is no such process. */
static uint64_t proc_start(long pid)
{
    char path[64], buf[1024];
    FILE *f;
    size_t n;
    const char *p;
    uint64_t start = 0;

    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the command name may hold spaces and parentheses: count from the last ')' */
    p = strrchr(buf, ')');
    if (!p)
        return 0;
    for (int field = 2; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    if (sscanf(p, "%llu", (unsigned long long *) &start) != 1)
        return 0;
    return start;
}

static void boot_id(char *out, size_t len)
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    out[0] = '\0';
    if (f) {
        if (fgets(out, (int) len, f))
            out[strcspn(out, "\n")] = '\0';
        fclose(f);
    }
}

static void holder_init(CbfsHolder *h, const char *key, const char *command, const char *label)
{
    uint8_t rnd[16];
    memset(h, 0, sizeof(*h));
    snprintf(h->key, sizeof(h->key), "%s", key);
    snprintf(h->command, sizeof(h->command), "%s", command);
    snprintf(h->label, sizeof(h->label), "%s", label ? label : "");
    if (gethostname(h->host, sizeof(h->host) - 1) < 0)
        snprintf(h->host, sizeof(h->host), "unknown");
    boot_id(h->boot_id, sizeof(h->boot_id));
    h->pid = (long) getpid();
    h->pid_start = proc_start(h->pid);
    h->since = time(NULL);
    cbfs_random_bytes(rnd, sizeof(rnd));
    cbfs_hex_encode(rnd, sizeof(rnd), h->token);
}

static char *holder_format(const CbfsHolder *h)
{
    CbfsKv *kv = cbfs_kv_new();
    char when[32], *text;
    cbfs_format_time(h->since, when, sizeof(when));
    cbfs_kv_set(kv, "command", h->command);
    if (h->label[0])
        cbfs_kv_set(kv, "label", h->label);
    cbfs_kv_set(kv, "host", h->host);
    cbfs_kv_set(kv, "boot_id", h->boot_id);
    cbfs_kv_set_u64(kv, "pid", (uint64_t) h->pid);
    cbfs_kv_set_u64(kv, "pid_start", h->pid_start);
    cbfs_kv_set_u64(kv, "since", (uint64_t) h->since);
    cbfs_kv_set(kv, "since_utc", when);
    cbfs_kv_set(kv, "token", h->token);
    if (h->where[0])
        cbfs_kv_set(kv, "mountpoint", h->where);
    text = cbfs_kv_format(kv);
    cbfs_kv_free(kv);
    return text;
}

/* Read a holder object: 0, -ENOENT, or -EINVAL (err) when it is damaged. */
static int holder_read(CbfsRepo *r, const char *key, CbfsHolder *h, CbfsError *err)
{
    CbfsKv *kv;
    uint64_t pid, start, since;
    int rc = cbfs_store_get_kv(r->store, key, &kv, err);
    if (rc < 0)
        return rc;
    memset(h, 0, sizeof(*h));
    snprintf(h->key, sizeof(h->key), "%s", key);
#define STR(f) snprintf(h->f, sizeof(h->f), "%s", cbfs_kv_get(kv, #f) ? cbfs_kv_get(kv, #f) : "")
    STR(command);
    STR(label);
    STR(host);
    STR(boot_id);
    STR(token);
#undef STR
    snprintf(h->where, sizeof(h->where), "%s",
             cbfs_kv_get(kv, "mountpoint") ? cbfs_kv_get(kv, "mountpoint") : "");
    if (!h->command[0] || cbfs_kv_get_u64(kv, "pid", &pid) < 0 ||
        cbfs_kv_get_u64(kv, "pid_start", &start) < 0 || cbfs_kv_get_u64(kv, "since", &since) < 0)
        rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_CORRUPT, "object \"%s\" is damaged", key);
    h->pid = (long) pid;
    h->pid_start = start;
    h->since = (time_t) since;
    cbfs_kv_free(kv);
    return rc;
}

bool cbfs_holder_alive(const CbfsHolder *h, int64_t timeout, time_t now)
{
    char host[128] = "", boot[40];
    if (gethostname(host, sizeof(host) - 1) < 0)
        host[0] = '\0';
    boot_id(boot, sizeof(boot));
    if (strcmp(h->host, host) == 0) {
        if (strcmp(h->boot_id, boot) != 0)
            return false; /* this host has restarted since */
        return h->pid > 0 && proc_start(h->pid) == h->pid_start && h->pid_start != 0;
    }
    return timeout <= 0 || (int64_t) (now - h->since) < timeout;
}

void cbfs_holder_describe(const CbfsHolder *h, char *buf, size_t len)
{
    char when[32];
    cbfs_format_time(h->since, when, sizeof(when));
    snprintf(buf, len, "%s%s%s (host %s, pid %ld) since %s", h->command, h->label[0] ? " " : "",
             h->label, h->host, h->pid, when);
}

int cbfs_lock_read(CbfsRepo *r, CbfsHolder *ret, CbfsError *err)
{
    return holder_read(r, CBFS_LOCK_KEY, ret, err);
}

int cbfs_lock_acquire(CbfsRepo *r, const char *command, CbfsHolder *ret, CbfsError *err)
{
    char *text;
    int rc;

    holder_init(ret, CBFS_LOCK_KEY, command, NULL);
    text = holder_format(ret);
    for (int attempt = 0;; attempt++) {
        CbfsHolder other;
        char who[256];
        rc = cbfs_store_put(r->store, CBFS_LOCK_KEY, text, strlen(text), err);
        if (rc != -EEXIST)
            break;
        rc = holder_read(r, CBFS_LOCK_KEY, &other, err);
        if (rc == -ENOENT && attempt < 3)
            continue; /* released meanwhile */
        if (rc < 0)
            break;
        cbfs_holder_describe(&other, who, sizeof(who));
        /* only a holder whose process is known dead is broken: never by age */
        if (attempt < 3 && !cbfs_holder_alive(&other, 0, time(NULL))) {
            cbfs_warning("removing the lock of repository \"%s\" left by %s, which is no "
                         "longer running",
                         r->display, who);
            rc = cbfs_store_remove(r->store, CBFS_LOCK_KEY, err);
            if (rc < 0 && rc != -ENOENT)
                break;
            continue;
        }
        rc = cbfs_error_set(err, EBUSY, CBFS_EXIT_ERROR, "repository \"%s\" is locked by %s",
                            r->display, who);
        break;
    }
    free(text);
    if (rc < 0 && rc != -EBUSY)
        cbfs_error_prefix(err, "could not lock repository \"%s\"", r->display);
    return rc;
}

void cbfs_lock_release(CbfsRepo *r, const CbfsHolder *mine)
{
    CbfsHolder now;
    CbfsError err;
    int rc;

    cbfs_error_init(&err);
    rc = holder_read(r, CBFS_LOCK_KEY, &now, &err);
    /* missing, or broken and taken by another: not ours to remove */
    if (rc == 0 && strcmp(now.token, mine->token) == 0)
        rc = cbfs_store_remove(r->store, CBFS_LOCK_KEY, &err);
    if (rc < 0 && rc != -ENOENT)
        cbfs_warning("could not release the lock of repository \"%s\": %s", r->display, err.msg);
}

/* Store a registration folder/<label>.<random> of this process. */
static int holder_register(CbfsRepo *r, const char *folder, const char *command, const char *label,
                           const char *where, CbfsHolder *ret, CbfsError *err)
{
    uint8_t rnd[8];
    char hex[17], *key, *text;
    int rc;

    cbfs_random_bytes(rnd, sizeof(rnd));
    cbfs_hex_encode(rnd, sizeof(rnd), hex);
    key = cbfs_xasprintf("%s%s.%s", folder, label, hex);
    holder_init(ret, key, command, label);
    if (where)
        snprintf(ret->where, sizeof(ret->where), "%s", where);
    text = holder_format(ret);
    rc = cbfs_store_put(r->store, key, text, strlen(text), err);
    if (rc == -EEXIST)
        rc = cbfs_error_set(err, EEXIST, CBFS_EXIT_ERROR, "object \"%s\" already exists", key);
    if (rc < 0)
        cbfs_error_prefix(err, "could not register the %s in repository \"%s\"", command,
                          r->display);
    free(text);
    free(key);
    return rc;
}

int cbfs_running_register(CbfsRepo *r, const char *label, CbfsHolder *ret, CbfsError *err)
{
    return holder_register(r, "running/", "backup", label, NULL, ret, err);
}

int cbfs_mount_register(CbfsRepo *r, const char *label, CbfsHolder *ret, CbfsError *err)
{
    return holder_register(r, "mounts/", "mount", label, NULL, ret, err);
}

int cbfs_reader_register(CbfsRepo *r, const char *label, const char *command, const char *where,
                         CbfsHolder *ret, bool *registered, CbfsError *err)
{
    CbfsError e;
    CbfsKv *rec = NULL;
    int rc;

    cbfs_error_init(&e);
    if (holder_register(r, "mounts/", command, label, where, ret, &e) < 0) {
        cbfs_warning("%s; expire may remove backup \"%s\" while the %s reads it", e.msg, label,
                     command);
        return 0;
    }
    *registered = true;
    /* an expire that listed the readers before this one was stored may be
     * about to remove the backup: wait for it, then look */
    for (int tries = 0;; tries++) {
        CbfsHolder h;
        char who[256];
        cbfs_error_init(&e);
        if (cbfs_lock_read(r, &h, &e) < 0 || strcmp(h.command, "expire") != 0 ||
            !cbfs_holder_alive(&h, 3600, time(NULL)))
            break;
        if (tries == 600) { /* 60 s: expire takes seconds */
            cbfs_holder_describe(&h, who, sizeof(who));
            return cbfs_error_set(err, EBUSY, CBFS_EXIT_ERROR,
                                  "could not %s backup \"%s\": repository \"%s\" is locked by %s",
                                  command, label, r->display, who);
        }
        usleep(100 * 1000);
    }
    rc = cbfs_repo_read_backup(r, label, &rec, err);
    cbfs_kv_free(rec);
    if (rc == -ENOENT)
        return cbfs_error_set(err, ENOENT, CBFS_EXIT_ERROR,
                              "could not %s backup \"%s\": it was expired meanwhile", command,
                              label);
    return rc;
}

int cbfs_running_check(CbfsRepo *r, const CbfsHolder *mine, CbfsError *err)
{
    uint64_t size;
    return cbfs_store_stat(r->store, mine->key, &size, err);
}

int cbfs_registration_remove(CbfsRepo *r, const CbfsHolder *mine, CbfsError *err)
{
    int rc = cbfs_store_remove(r->store, mine->key, err);
    return rc == -ENOENT ? 0 : rc;
}

void cbfs_registration_release(CbfsRepo *r, const CbfsHolder *mine)
{
    CbfsError e;
    cbfs_error_init(&e);
    if (cbfs_registration_remove(r, mine, &e) < 0)
        cbfs_warning("could not remove the %s's registration: %s", mine->command, e.msg);
}

/* Every registration under folder ("running/", "mounts/"). */
static int holder_list(CbfsRepo *r, const char *folder, const char *command, CbfsHolder **ret,
                       size_t *ret_n, CbfsError *err)
{
    char **names = NULL;
    CbfsHolder *out = NULL;
    size_t nnames = 0, n = 0;
    int rc = cbfs_store_list_names(r->store, folder, "", &names, &nnames, err);

    for (size_t i = 0; i < nnames; i++) {
        char *key = cbfs_xasprintf("%s%s", folder, names[i]);
        if (rc == 0) {
            CbfsHolder h;
            CbfsError e;
            int hr;
            cbfs_error_init(&e);
            hr = holder_read(r, key, &h, &e);
            if (hr == 0) {
                out = cbfs_xrealloc(out, (n + 1) * sizeof(*out));
                out[n++] = h;
            } else if (hr != -ENOENT) {
                /* an unreadable registration still counts: nothing says it is gone */
                memset(&h, 0, sizeof(h));
                snprintf(h.key, sizeof(h.key), "%s", key);
                snprintf(h.command, sizeof(h.command), "%s", command);
                snprintf(h.host, sizeof(h.host), "unknown");
                h.since = time(NULL);
                cbfs_warning("%s", e.msg);
                out = cbfs_xrealloc(out, (n + 1) * sizeof(*out));
                out[n++] = h;
            }
        }
        free(key);
    }
    cbfs_store_free_names(names, nnames);
    if (rc < 0) {
        free(out);
        return rc;
    }
    *ret = out;
    *ret_n = n;
    return 0;
}

int cbfs_running_list(CbfsRepo *r, CbfsHolder **ret, size_t *ret_n, CbfsError *err)
{
    return holder_list(r, "running/", "backup", ret, ret_n, err);
}

int cbfs_mount_list(CbfsRepo *r, CbfsHolder **ret, size_t *ret_n, CbfsError *err)
{
    return holder_list(r, "mounts/", "mount", ret, ret_n, err);
}
