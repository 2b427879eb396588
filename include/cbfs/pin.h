/*
 * pin.h - pinned backups: pins/<label> (kv: label, since), created once by
 * `cbfs pin`, removed by `cbfs unpin`.  expire never removes a pinned
 * backup.
 *
 * pin and expire meet without a lock (pinning must not wait for a long gc):
 * expire takes the repository lock, then reads the pins; pin stores its pin,
 * then looks at the lock.  Whichever order they run in, either expire sees
 * the pin or pin sees expire's lock (and takes its pin back, failing).
 */
#ifndef CBFS_PIN_H
#define CBFS_PIN_H

#include <stdbool.h>

#include "cbfs/repo.h"

/* Pin label (which must be a backup): 0, or -EEXIST (no error) when it
 * already is; -EBUSY with err while expire holds the lock. */
int cbfs_pin_add(CbfsRepo *r, const char *label, CbfsError *err);
/* 0, or -ENOENT (no error) when label was not pinned. */
int cbfs_pin_remove(CbfsRepo *r, const char *label, CbfsError *err);
/* The pinned labels, sorted.  Caller frees each and the array. */
int cbfs_pin_list(CbfsRepo *r, char ***ret, size_t *ret_n, CbfsError *err);
/* label in a sorted list from cbfs_pin_list. */
bool cbfs_pin_in(char *const *pins, size_t n, const char *label);

#endif
