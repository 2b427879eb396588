/*
 * patroni.h - which member of a Patroni cluster backs up (`cbfs backup
 * --patroni URL`): the same schedule runs on every member, and exactly one
 * of them backs up each time, whichever is leader today.
 *
 * URL is this member's REST API (its restapi.connect_address).  From
 * URL/cluster: the first member, in name order, that is a replica
 * (replica or sync_standby), running or streaming, whose lag is known and
 * at most max_lag bytes and that is not tagged nofailover or nobackup;
 * when there is none, the leader.  This member is the one whose api_url is
 * URL.
 */
#ifndef CBFS_PATRONI_H
#define CBFS_PATRONI_H

#include <stdbool.h>
#include <stdint.h>

#include "cbfs/error.h"

typedef struct PatroniChoice {
    char *self;   /* this member's name */
    char *chosen; /* the member that backs up */
    char *why;    /* "the first healthy replica", "the leader: no healthy replica" */
} PatroniChoice;

/* Errors (CBFS_EXIT_DATABASE), one line: "could not ask Patroni at \"URL\":
 * ...", "\"URL\" is not a Patroni REST API (...)", "no member of the Patroni
 * cluster can back up (...)", "no member of the Patroni cluster has the
 * REST API \"URL\"". */
int patroni_choose(const char *url, uint64_t max_lag, PatroniChoice *ret, CbfsError *err);
void patroni_choice_release(PatroniChoice *c);

#endif
