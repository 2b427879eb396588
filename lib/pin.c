/*
 * pin.c - pinned backups.  See pin.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cbfs/lock.h"
#include "cbfs/log.h"
#include "cbfs/pin.h"
#include "cbfs/util.h"

int cbfs_pin_add(CbfsRepo *r, const char *label, CbfsError *err)
{
    CbfsKv *kv = cbfs_kv_new(), *rec;
    CbfsHolder holder;
    char when[32], *text, *key = cbfs_xasprintf("pins/%s", label);
    int rc;

    cbfs_format_time(time(NULL), when, sizeof(when));
    cbfs_kv_set(kv, "label", label);
    cbfs_kv_set(kv, "since", when);
    text = cbfs_kv_format(kv);
    cbfs_kv_free(kv);
    rc = cbfs_store_put(r->store, key, text, strlen(text), err);
    free(text);
    if (rc < 0)
        goto out;
    /* expire takes the lock before reading pins: if it holds it now, it may
     * have read them before ours landed */
    rc = cbfs_lock_read(r, &holder, err);
    if (rc == 0 && strcmp(holder.command, "expire") == 0 &&
        cbfs_holder_alive(&holder, 0, time(NULL))) {
        char who[256];
        cbfs_holder_describe(&holder, who, sizeof(who));
        cbfs_store_remove(r->store, key, NULL);
        rc = cbfs_error_set(err, EBUSY, CBFS_EXIT_ERROR,
                            "could not pin backup \"%s\": repository \"%s\" is locked by %s; try "
                            "again when it has finished",
                            label, r->display, who);
        goto out;
    }
    if (rc == -ENOENT || rc == 0)
        rc = 0;
    else
        goto out;
    /* and the backup must still be there (expire may have just finished) */
    rc = cbfs_repo_read_backup(r, label, &rec, err);
    if (rc == 0)
        cbfs_kv_free(rec);
    else {
        cbfs_store_remove(r->store, key, NULL);
        if (rc == -ENOENT)
            rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_NOT_FOUND,
                                "backup \"%s\" not found in repository \"%s\"", label, r->display);
    }
out:
    free(key);
    return rc;
}

int cbfs_pin_remove(CbfsRepo *r, const char *label, CbfsError *err)
{
    char *key = cbfs_xasprintf("pins/%s", label);
    int rc = cbfs_label_valid(label) ? cbfs_store_remove(r->store, key, err) : -ENOENT;
    free(key);
    return rc;
}

int cbfs_pin_list(CbfsRepo *r, char ***ret, size_t *ret_n, CbfsError *err)
{
    char **names;
    size_t n, out = 0;
    int rc = cbfs_store_list_names(r->store, "pins/", "", &names, &n, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (cbfs_label_valid(names[i]))
            names[out++] = names[i];
        else
            free(names[i]);
    }
    *ret = names;
    *ret_n = out;
    return 0;
}

bool cbfs_pin_in(char *const *pins, size_t n, const char *label)
{
    return n && bsearch(&label, pins, n, sizeof(char *), cbfs_cmp_strp) != NULL;
}
