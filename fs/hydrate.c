/*
 * hydrate.c - a mount's background thread: hydration, and the requests
 * that `cbfs hydrate` and `cbfs umount --materialize` leave in the overlay
 * folder.  See hydrate.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cbfs/kv.h"
#include "cbfs/log.h"
#include "cbfs/util.h"
#include "hydrate.h"
#include "cbfs/ratelimit.h"

#define POLL_MS   500
#define QUIET_NS  50000000 /* no foreground read for this long before a block */
#define STATUS_NS 1000000000

struct Hydrator {
    Fs *fs;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
    bool materialized;
    uint64_t rate;
    bool finished; /* done or failed in this mount: not started again unless asked anew */
    /* progress */
    uint64_t bytes_total, bytes_done, files_total, files_done;
    int64_t started, status_ns, bucket_ns;
    double tokens;
    int last_tenth;
    char state[16];
    char error[CBFS_ERROR_MSG_MAX];
};

static char *in_overlay(Hydrator *h, const char *name)
{
    return cbfs_xasprintf("%s/%s", fs_overlay_dir(h->fs), name);
}

static void write_status(Hydrator *h)
{
    CbfsKv *kv = cbfs_kv_new();
    char *text, *path = in_overlay(h, "hydrate.status");
    cbfs_kv_set(kv, "state", h->state);
    cbfs_kv_set_u64(kv, "rate", h->rate);
    cbfs_kv_set_u64(kv, "bytes_total", h->bytes_total);
    cbfs_kv_set_u64(kv, "bytes_done", h->bytes_done);
    cbfs_kv_set_u64(kv, "files_total", h->files_total);
    cbfs_kv_set_u64(kv, "files_done", h->files_done);
    cbfs_kv_set_u64(kv, "started", (uint64_t) h->started);
    cbfs_kv_set_u64(kv, "updated", (uint64_t) time(NULL));
    if (h->error[0])
        cbfs_kv_set(kv, "error", h->error);
    text = cbfs_kv_format(kv);
    cbfs_write_file_atomic(path, text, strlen(text), 0644, NULL);
    free(text);
    free(path);
    cbfs_kv_free(kv);
}

/* The request file name holds, if any: its text (caller frees), removed. */
static char *take_request(Hydrator *h, const char *name)
{
    char *path = in_overlay(h, name);
    uint8_t *data = NULL;
    size_t len = 0;
    if (cbfs_read_file(path, &data, &len, NULL) < 0) {
        free(path);
        return NULL;
    }
    unlink(path);
    free(path);
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        data[--len] = '\0';
    return (char *) data;
}

/* hydrate.want: is hydration asked for, and at what rate? */
static bool read_want(Hydrator *h, uint64_t *rate)
{
    char *path = in_overlay(h, "hydrate.want");
    uint8_t *data = NULL;
    size_t len = 0;
    CbfsKv *kv = NULL;
    bool yes = cbfs_read_file(path, &data, &len, NULL) == 0;
    free(path);
    *rate = 0;
    if (yes && cbfs_kv_parse((const char *) data, len, &kv, NULL) == 0)
        cbfs_kv_get_u64(kv, "rate", rate);
    cbfs_kv_free(kv);
    free(data);
    return yes;
}

static int throttle(void *ctx, uint64_t bytes)
{
    Hydrator *h = ctx;
    int64_t now;
    for (;;) {
        pthread_mutex_lock(&h->lock);
        if (h->stop) {
            pthread_mutex_unlock(&h->lock);
            return -EINTR;
        }
        pthread_mutex_unlock(&h->lock);
        now = cbfs_now_ns();
        /* behind foreground reads */
        if (now - fs_last_foreground(h->fs) < QUIET_NS) {
            usleep(20000);
            continue;
        }
        if (!h->rate)
            break;
        /* a token bucket of one second */
        h->tokens += (double) (now - h->bucket_ns) * (double) h->rate / 1e9;
        if (h->tokens > (double) h->rate)
            h->tokens = (double) h->rate;
        h->bucket_ns = now;
        if (h->tokens >= (double) bytes || h->tokens >= (double) h->rate)
            break;
        {
            /* a while, but back to the stop flag at least every 100 ms */
            double us = ((double) bytes - h->tokens) * 1e6 / (double) h->rate + 1000;
            usleep((useconds_t) (us < 100000 ? us : 100000));
        }
    }
    h->tokens -= (double) bytes;
    cbfs_ratelimit_take(cbfs_ratelimit_global(), bytes); /* -o max_rate */
    if (now - h->status_ns >= STATUS_NS) {
        h->status_ns = now;
        write_status(h);
    }
    return 0;
}

typedef struct Item {
    uint64_t ino;
    char *path;
} Item;

typedef struct Walk {
    Hydrator *h;
    Item *v;
    size_t n, cap;
} Walk;

static int collect(const char *path, uint64_t ino, int type, void *ctx)
{
    Walk *w = ctx;
    FsEntry e;
    if (type != CBFS_FILE_REG || fs_entry(w->h->fs, ino, &e) < 0)
        return 0;
    if (e.based) {
        w->h->bytes_total += e.base_bytes;
        w->h->bytes_done += e.upper_bytes;
        w->h->files_total++;
        if (e.upper_bytes >= e.base_bytes) {
            w->h->files_done++;
        } else {
            if (w->n == w->cap) {
                w->cap = w->cap ? 2 * w->cap : 256;
                w->v = cbfs_xrealloc(w->v, w->cap * sizeof(Item));
            }
            w->v[w->n++] = (Item){ino, cbfs_xstrdup(path)};
        }
    }
    fs_entry_release(&e);
    return 0;
}

static void progress(Hydrator *h)
{
    int tenth = h->bytes_total ? (int) (h->bytes_done * 10 / h->bytes_total) : 10;
    if (tenth > h->last_tenth) {
        h->last_tenth = tenth;
        cbfs_info("hydration: %d%% (%llu of %llu bytes, %llu of %llu files)", tenth * 10,
                  (unsigned long long) h->bytes_done, (unsigned long long) h->bytes_total,
                  (unsigned long long) h->files_done, (unsigned long long) h->files_total);
    }
}

static void hydrate_all(Hydrator *h)
{
    Walk w = {h, NULL, 0, 0};
    int64_t t0 = cbfs_now_ns();
    uint64_t copied_all = 0;
    int rc = 0;

    h->bytes_total = h->bytes_done = h->files_total = h->files_done = 0;
    h->started = time(NULL);
    h->error[0] = '\0';
    h->last_tenth = -1;
    h->bucket_ns = cbfs_now_ns();
    h->tokens = 0;
    snprintf(h->state, sizeof(h->state), "running");
    rc = fs_walk(h->fs, collect, &w);
    {
        char rate[32] = "no limit";
        if (h->rate) {
            cbfs_format_size(h->rate, rate, sizeof(rate));
            strncat(rate, "/s", sizeof(rate) - strlen(rate) - 1);
        }
        cbfs_info("hydration started: %llu bytes of %llu files to bring up (%llu here already), "
                  "rate %s",
                  (unsigned long long) (h->bytes_total - h->bytes_done), (unsigned long long) w.n,
                  (unsigned long long) h->bytes_done, rate);
    }
    write_status(h);
    for (size_t i = 0; rc == 0 && i < w.n; i++) {
        uint64_t copied = 0;
        rc = fs_hydrate_file(h->fs, w.v[i].ino, throttle, h, &copied);
        copied_all += copied;
        /* pages PostgreSQL wrote meanwhile count as here too */
        h->bytes_done += copied;
        if (h->bytes_done > h->bytes_total)
            h->bytes_done = h->bytes_total;
        if (rc == 0)
            h->files_done++;
        else if (rc != -EINTR)
            snprintf(h->error, sizeof(h->error), "could not hydrate \"%s\": %s", w.v[i].path,
                     strerror(-rc));
        progress(h);
    }
    for (size_t i = 0; i < w.n; i++)
        free(w.v[i].path);
    free(w.v);
    if (rc == -EINTR) {
        snprintf(h->state, sizeof(h->state), "stopped");
    } else if (rc < 0) {
        snprintf(h->state, sizeof(h->state), "failed");
        if (!h->error[0])
            snprintf(h->error, sizeof(h->error), "%s", strerror(-rc));
        cbfs_warning("hydration stopped: %s", h->error);
        h->finished = true;
    } else {
        h->bytes_done = h->bytes_total;
        snprintf(h->state, sizeof(h->state), "done");
        cbfs_info("hydration done: %llu bytes brought up in %.1f s; every file is in the overlay",
                  (unsigned long long) copied_all, (double) (cbfs_now_ns() - t0) / 1e9);
        h->finished = true;
    }
    write_status(h);
}

static void materialize(Hydrator *h, const char *target)
{
    CbfsError err;
    uint64_t files = 0;
    char *path = in_overlay(h, "materialize.result"), *text;
    uid_t uid;
    gid_t gid;

    cbfs_error_init(&err);
    fs_owner(h->fs, &uid, &gid);
    if (fs_materialize(h->fs, target, uid, gid, &files, &err) == 0) {
        text = cbfs_xasprintf("ok %llu\n", (unsigned long long) files);
        h->materialized = true;
        cbfs_info("materialized into \"%s\": %llu files moved out of the overlay", target,
                  (unsigned long long) files);
    } else {
        text = cbfs_xasprintf("%s\n", err.msg);
        cbfs_warning("%s", err.msg);
    }
    cbfs_write_file_atomic(path, text, strlen(text), 0644, NULL);
    free(text);
    free(path);
}

static void *run(void *arg)
{
    Hydrator *h = arg;
    for (;;) {
        char *req;
        uint64_t rate;
        struct timespec until;

        pthread_mutex_lock(&h->lock);
        if (h->stop) {
            pthread_mutex_unlock(&h->lock);
            break;
        }
        pthread_mutex_unlock(&h->lock);
        if (!h->materialized && (req = take_request(h, "materialize.request"))) {
            materialize(h, req);
            free(req);
        }
        if (!h->materialized && (req = take_request(h, "hydrate.request"))) {
            /* asked anew (cbfs hydrate): hydrate.want is its record */
            h->finished = false;
            free(req);
        }
        if (!h->materialized && !h->finished && read_want(h, &rate)) {
            h->rate = rate;
            hydrate_all(h);
            continue;
        }
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += POLL_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&h->lock);
        if (!h->stop)
            pthread_cond_timedwait(&h->cond, &h->lock, &until);
        pthread_mutex_unlock(&h->lock);
    }
    return NULL;
}

Hydrator *hydrator_start(Fs *fs, bool want, uint64_t rate)
{
    Hydrator *h = cbfs_xcalloc(1, sizeof(*h));
    h->fs = fs;
    h->rate = rate;
    snprintf(h->state, sizeof(h->state), "idle");
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    if (want) {
        /* recorded in the overlay: it goes on at the next mount */
        char *path = in_overlay(h, "hydrate.want");
        char *text = cbfs_xasprintf("rate = %llu\n", (unsigned long long) rate);
        cbfs_write_file_atomic(path, text, strlen(text), 0644, NULL);
        free(text);
        free(path);
    }
    if (pthread_create(&h->thread, NULL, run, h) != 0) {
        cbfs_warning("could not start the hydration thread");
        pthread_mutex_destroy(&h->lock);
        pthread_cond_destroy(&h->cond);
        free(h);
        return NULL;
    }
    return h;
}

void hydrator_stop(Hydrator *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    h->stop = true;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->thread, NULL);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
}

bool hydrator_materialized(const Hydrator *h)
{
    return h && h->materialized;
}
