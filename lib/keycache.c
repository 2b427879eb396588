/*
 * keycache.c - the per-user key cache over the kernel keyring (add_key(2),
 * keyctl(2)), without libkeyutils.  See keycache.h.
 *
 * Permissions: an entry is created with the kernel's default permissions
 * (possessor only) and then opened to its user (view, read, write, search,
 * link, setattr), because a process of the same uid started by systemd or
 * runuser may not "possess" the user keyring through its session keyring.
 * Nothing is granted to group or others.
 */
#include <errno.h>
#include <grp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/keyctl.h>

#include <openssl/crypto.h>

#include "cbfs/keycache.h"
#include "cbfs/util.h"

/* from keyutils.h (not in the kernel's uapi header) */
#define KEY_POS_ALL 0x3f000000u
#define KEY_USR_ALL 0x003f0000u

#define DESCRIBE_MAX 512

static long add_key(const char *desc, const void *buf, size_t len)
{
    return syscall(SYS_add_key, "user", desc, buf, len, KEY_SPEC_USER_KEYRING);
}

static long keyctl(int op, unsigned long a, unsigned long b, unsigned long c, unsigned long d)
{
    return syscall(SYS_keyctl, op, a, b, c, d);
}

int cbfs_keycache_ttl(unsigned *ttl, CbfsError *err)
{
    const char *v = getenv("CBFS_KEY_CACHE_TTL");
    long n;

    if (!v || !*v) {
        *ttl = CBFS_KEYCACHE_TTL_DEFAULT;
        return 0;
    }
    if (cbfs_parse_int(v, 0, CBFS_KEYCACHE_TTL_MAX, &n) < 0)
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "invalid CBFS_KEY_CACHE_TTL \"%.32s\" (seconds, 0 to %u)", v,
                              CBFS_KEYCACHE_TTL_MAX);
    *ttl = (unsigned) n;
    return 0;
}

int cbfs_keycache_get(const char *desc, void *buf, size_t len, unsigned ttl)
{
    uint8_t tmp[256];
    long id, n;

    if (ttl == 0 || len > sizeof(tmp))
        return -ENOENT;
    id = keyctl(KEYCTL_SEARCH, (unsigned long) KEY_SPEC_USER_KEYRING, (unsigned long) "user",
                (unsigned long) desc, 0);
    if (id < 0)
        return -ENOENT;
    n = keyctl(KEYCTL_READ, (unsigned long) id, (unsigned long) tmp, sizeof(tmp), 0);
    if (n != (long) len) {
        OPENSSL_cleanse(tmp, sizeof(tmp));
        return -ENOENT;
    }
    memcpy(buf, tmp, len);
    OPENSSL_cleanse(tmp, sizeof(tmp));
    keyctl(KEYCTL_SET_TIMEOUT, (unsigned long) id, ttl, 0, 0);
    return 0;
}

void cbfs_keycache_put(const char *desc, const void *buf, size_t len, unsigned ttl)
{
    long id;

    if (ttl == 0)
        return;
    id = add_key(desc, buf, len);
    if (id < 0)
        return;
    if (keyctl(KEYCTL_SETPERM, (unsigned long) id, KEY_POS_ALL | KEY_USR_ALL, 0, 0) < 0 ||
        keyctl(KEYCTL_SET_TIMEOUT, (unsigned long) id, ttl, 0, 0) < 0)
        keyctl(KEYCTL_INVALIDATE, (unsigned long) id, 0, 0, 0); /* never one without an end */
}

void cbfs_keycache_put_as(uid_t uid, gid_t gid, const char *desc, const void *buf, size_t len,
                          unsigned ttl)
{
    pid_t pid;

    if (ttl == 0)
        return;
    if (uid == geteuid()) {
        cbfs_keycache_put(desc, buf, len, ttl);
        return;
    }
    pid = fork();
    if (pid == 0) {
        /* the user keyring is the real uid's: become that user wholly */
        if (setgroups(0, NULL) == 0 && setresgid(gid, gid, gid) == 0 &&
            setresuid(uid, uid, uid) == 0)
            cbfs_keycache_put(desc, buf, len, ttl);
        _exit(0);
    }
    if (pid > 0)
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
}

int cbfs_keycache_forget(const char *prefix)
{
    int32_t ids[1024];
    long n;
    int forgot = 0;

    n = keyctl(KEYCTL_READ, (unsigned long) KEY_SPEC_USER_KEYRING, (unsigned long) ids, sizeof(ids),
               0);
    if (n < 0)
        return 0;
    if ((size_t) n > sizeof(ids))
        n = sizeof(ids); /* more than 1024 keys: the rest on the next call */
    for (size_t i = 0; i < (size_t) n / sizeof(ids[0]); i++) {
        char d[DESCRIBE_MAX];
        const char *desc;
        long m =
            keyctl(KEYCTL_DESCRIBE, (unsigned long) ids[i], (unsigned long) d, sizeof(d) - 1, 0);
        int semis = 0;
        if (m <= 0)
            continue;
        d[m < (long) sizeof(d) ? m : (long) sizeof(d) - 1] = '\0';
        /* "type;uid;gid;perm;description" */
        desc = d;
        while (semis < 4 && (desc = strchr(desc, ';')) != NULL) {
            desc++;
            semis++;
        }
        if (!desc || strncmp(d, "user;", 5) != 0 || strncmp(desc, prefix, strlen(prefix)) != 0)
            continue;
        if (keyctl(KEYCTL_INVALIDATE, (unsigned long) ids[i], 0, 0, 0) == 0 ||
            keyctl(KEYCTL_UNLINK, (unsigned long) ids[i], (unsigned long) KEY_SPEC_USER_KEYRING, 0,
                   0) == 0)
            forgot++;
    }
    return forgot;
}
