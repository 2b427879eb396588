/*
 * passphrase.c - reading the passphrase of an encrypted repository from the
 * command line's file, the environment or the terminal.  See passphrase.h.
 *
 * The terminal prompt turns echo off and blocks the usual terminating
 * signals while it reads, so that ^C during the prompt is delivered only
 * after the terminal has its echo back.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cbfs/passphrase.h"
#include "cbfs/util.h"

#define PASSPHRASE_MAX 4096

static char *file_current; /* --passphrase-file */
static char *file_new;     /* --new-passphrase-file */
static char *file_dest;    /* --dest-passphrase-file (cbfs copy) */
static char *file_env;     /* $CBFS_PASSPHRASE_FILE made absolute */
static char *file_env_src; /* ... and as it was */

static char *absolute(const char *path)
{
    char cwd[4096];
    if (path[0] == '/' || !getcwd(cwd, sizeof(cwd)))
        return cbfs_xstrdup(path);
    return cbfs_xasprintf("%s/%s", cwd, path);
}

void cbfs_passphrase_set_file(const char *path)
{
    free(file_current);
    file_current = absolute(path);
}

void cbfs_passphrase_set_new_file(const char *path)
{
    free(file_new);
    file_new = absolute(path);
}

void cbfs_passphrase_set_dest_file(const char *path)
{
    free(file_dest);
    file_dest = absolute(path);
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

const char *cbfs_passphrase_file(void)
{
    const char *v;
    if (file_current)
        return file_current;
    if (env("CBFS_PASSPHRASE") || !(v = env("CBFS_PASSPHRASE_FILE")))
        return NULL;
    if (!file_env_src || strcmp(file_env_src, v) != 0) {
        free(file_env);
        free(file_env_src);
        file_env_src = cbfs_xstrdup(v);
        file_env = absolute(v);
    }
    return file_env;
}

void cbfs_passphrase_free(char *p)
{
    if (!p)
        return;
    OPENSSL_cleanse(p, strlen(p));
    free(p);
}

/* Drop one trailing "\n" or "\r\n". */
static void chomp(char *s, size_t *len)
{
    if (*len > 0 && s[*len - 1] == '\n')
        s[--*len] = '\0';
    if (*len > 0 && s[*len - 1] == '\r')
        s[--*len] = '\0';
}

static int read_file(const char *path, char **ret, CbfsError *err)
{
    struct stat st;
    char *buf;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) /* EIO: -ENOENT means "no passphrase given" to callers */
        return cbfs_error_set(err, EIO, CBFS_EXIT_USAGE,
                              "could not open passphrase file \"%s\": %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        close(fd);
        return cbfs_error_set(err, EACCES, CBFS_EXIT_USAGE,
                              "passphrase file \"%s\" has group or world access; permissions "
                              "should be u=rw (0600) or less",
                              path);
    }
    buf = cbfs_xmalloc(PASSPHRASE_MAX + 2);
    for (;;) {
        ssize_t n = read(fd, buf + len, PASSPHRASE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            OPENSSL_cleanse(buf, len);
            free(buf);
            return cbfs_error_set(err, EIO, CBFS_EXIT_USAGE,
                                  "could not read passphrase file \"%s\": %s", path, strerror(e));
        }
        if (n == 0 || (len += (size_t) n) > PASSPHRASE_MAX)
            break;
    }
    close(fd);
    buf[len] = '\0';
    if (len > PASSPHRASE_MAX) {
        OPENSSL_cleanse(buf, PASSPHRASE_MAX + 2);
        free(buf);
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              "passphrase file \"%s\" is too long (more than %d bytes)", path,
                              PASSPHRASE_MAX);
    }
    {
        /* the first line */
        char *nl = memchr(buf, '\n', len);
        if (nl) {
            OPENSSL_cleanse(nl, len - (size_t) (nl - buf));
            len = (size_t) (nl - buf);
        }
        if (len > 0 && buf[len - 1] == '\r')
            buf[--len] = '\0';
    }
    if (len == 0 || strlen(buf) != len) {
        cbfs_passphrase_free(buf);
        return cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE,
                              len ? "passphrase file \"%s\" holds a NUL byte"
                                  : "passphrase file \"%s\" is empty",
                              path);
    }
    *ret = buf;
    return 0;
}

/* One line from the terminal tty with echo off.  NULL on EOF or error. */
static char *prompt_once(int tty, const char *prompt)
{
    struct termios saved, quiet;
    sigset_t block, old;
    char *buf = cbfs_xmalloc(PASSPHRASE_MAX + 1);
    size_t len = 0;
    bool echo_off, done = false;

    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGQUIT);
    sigaddset(&block, SIGTSTP);
    sigaddset(&block, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    echo_off = tcgetattr(tty, &saved) == 0;
    if (echo_off) {
        quiet = saved;
        quiet.c_lflag &= (tcflag_t) ~ECHO;
        quiet.c_lflag |= ECHONL;
        echo_off = tcsetattr(tty, TCSAFLUSH, &quiet) == 0;
    }
    (void) !write(tty, prompt, strlen(prompt));
    while (!done) {
        char c;
        ssize_t n = read(tty, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            len = SIZE_MAX; /* EOF before the end of the line */
            break;
        }
        if (c == '\n')
            done = true;
        else if (len < PASSPHRASE_MAX)
            buf[len++] = c;
    }
    if (echo_off)
        tcsetattr(tty, TCSAFLUSH, &saved);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (len == SIZE_MAX) {
        OPENSSL_cleanse(buf, PASSPHRASE_MAX + 1);
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    chomp(buf, &len);
    return buf;
}

static int prompt(enum cbfs_passphrase_kind kind, const char *prompt_for, bool confirm, char **ret,
                  CbfsError *err)
{
    int tty = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
    char *first, *again = NULL, *text;
    int rc = 0;

    if (tty < 0)
        return cbfs_error_set(err, EIO, CBFS_EXIT_USAGE, "could not open the terminal: %s",
                              strerror(errno));
    text = cbfs_xasprintf(
        "%s for repository \"%s\": ", kind == CBFS_PASSPHRASE_NEW ? "New passphrase" : "Passphrase",
        prompt_for);
    first = prompt_once(tty, text);
    free(text);
    if (first && confirm)
        again = prompt_once(tty, kind == CBFS_PASSPHRASE_NEW ? "Repeat the new passphrase: "
                                                             : "Repeat the passphrase: ");
    close(tty);
    if (!first || (confirm && !again))
        rc = cbfs_error_set(err, EIO, CBFS_EXIT_USAGE,
                            "could not read a passphrase from the terminal");
    else if (confirm && strcmp(first, again) != 0)
        rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE, "the passphrases do not match");
    else if (!*first)
        rc = cbfs_error_set(err, EINVAL, CBFS_EXIT_USAGE, "the passphrase is empty");
    cbfs_passphrase_free(again);
    if (rc < 0) {
        cbfs_passphrase_free(first);
        return rc;
    }
    *ret = first;
    return 0;
}

int cbfs_passphrase_read(enum cbfs_passphrase_kind kind, const char *prompt_for, bool confirm,
                         char **ret, CbfsError *err)
{
    bool current = kind == CBFS_PASSPHRASE_CURRENT;
    const char *file = current ? file_current : file_new;
    const char *v;

    if (kind == CBFS_PASSPHRASE_DEST) {
        /* the destination's own, else the same as the source's */
        if (file_dest)
            return read_file(file_dest, ret, err);
        if ((v = env("CBFS_DEST_PASSPHRASE")) != NULL) {
            *ret = cbfs_xstrdup(v);
            return 0;
        }
        if ((v = env("CBFS_DEST_PASSPHRASE_FILE")) != NULL)
            return read_file(v, ret, err);
        return cbfs_passphrase_read(CBFS_PASSPHRASE_CURRENT, prompt_for, confirm, ret, err);
    }

    if (file)
        return read_file(file, ret, err);
    if ((v = env(current ? "CBFS_PASSPHRASE" : "CBFS_NEW_PASSPHRASE")) != NULL) {
        *ret = cbfs_xstrdup(v);
        return 0;
    }
    if (current && (v = env("CBFS_PASSPHRASE_FILE")) != NULL)
        return read_file(v, ret, err);
    if (isatty(STDIN_FILENO))
        return prompt(kind, prompt_for, confirm, ret, err);
    return cbfs_error_set(err, ENOENT, CBFS_EXIT_USAGE,
                          current ? "no passphrase was given (set CBFS_PASSPHRASE or "
                                    "CBFS_PASSPHRASE_FILE, or use --passphrase-file)"
                                  : "no new passphrase was given (set CBFS_NEW_PASSPHRASE or use "
                                    "--new-passphrase-file)");
}

int cbfs_passphrase_export(const char *prompt_for, CbfsError *err)
{
    char *p;
    int rc = cbfs_passphrase_read(CBFS_PASSPHRASE_CURRENT, prompt_for, false, &p, err);

    if (rc == -ENOENT) {
        cbfs_error_init(err);
        return 0; /* none: the first unlock says so */
    }
    if (rc < 0)
        return rc;
    setenv("CBFS_PASSPHRASE", p, 1);
    cbfs_passphrase_free(p);
    /* from now on the environment is the one source, here and below */
    free(file_current);
    file_current = NULL;
    return 0;
}
