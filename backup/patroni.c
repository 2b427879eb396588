/*
 * patroni.c - the member of a Patroni cluster that backs up (patroni.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbfs/http.h"
#include "cbfs/json.h"
#include "cbfs/util.h"
#include "patroni.h"

/* url without a trailing "/" and "/patroni" (api_url ends so). */
static char *base_url(const char *url)
{
    char *s = cbfs_xstrdup(url);
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    if (n >= 8 && strcmp(s + n - 8, "/patroni") == 0)
        s[n - 8] = '\0';
    return s;
}

static bool healthy_replica(const CbfsJv *m, uint64_t max_lag)
{
    const char *role = cbfs_jv_str(cbfs_jv_get(m, "role"));
    const char *state = cbfs_jv_str(cbfs_jv_get(m, "state"));
    const CbfsJv *tags = cbfs_jv_get(m, "tags");
    double lag;

    if (!role || (strcmp(role, "replica") != 0 && strcmp(role, "sync_standby") != 0))
        return false;
    /* Patroni 3.0 says running for a streaming replica; later ones streaming */
    if (!state || (strcmp(state, "running") != 0 && strcmp(state, "streaming") != 0))
        return false;
    if (cbfs_jv_num(cbfs_jv_get(m, "lag"), &lag) < 0 || lag < 0 || lag > (double) max_lag)
        return false;
    return !cbfs_jv_truthy(cbfs_jv_get(tags, "nofailover")) &&
           !cbfs_jv_truthy(cbfs_jv_get(tags, "nobackup"));
}

int patroni_choose(const char *url, uint64_t max_lag, PatroniChoice *ret, CbfsError *err)
{
    char *base = base_url(url), *cluster_url = cbfs_xasprintf("%s/cluster", base), *body = NULL;
    const CbfsJv *members, *leader = NULL, *replica = NULL, *self = NULL;
    CbfsJv *doc = NULL;
    size_t len = 0;
    long status = 0;
    int rc;

    memset(ret, 0, sizeof(*ret));
    rc = cbfs_http_get(cluster_url, 10, &body, &len, &status, err);
    if (rc < 0) {
        cbfs_error_prefix(err, "could not ask Patroni at \"%s\"", url);
        err->code = CBFS_EXIT_DATABASE;
        goto out;
    }
    if (status != 200 || cbfs_jv_parse(body, len, &doc, NULL) < 0 ||
        !(members = cbfs_jv_get(doc, "members")) || members->type != CBFS_JV_ARRAY) {
        rc = cbfs_error_set(err, EPROTO, CBFS_EXIT_DATABASE,
                            "\"%s\" is not a Patroni REST API (GET %s: HTTP %ld%s)", url,
                            cluster_url, status, status == 200 ? ", no member list" : "");
        goto out;
    }
    for (size_t i = 0; i < members->n; i++) {
        const CbfsJv *m = members->items[i];
        const char *name = cbfs_jv_str(cbfs_jv_get(m, "name"));
        const char *role = cbfs_jv_str(cbfs_jv_get(m, "role"));
        const char *api = cbfs_jv_str(cbfs_jv_get(m, "api_url"));
        const char *state = cbfs_jv_str(cbfs_jv_get(m, "state"));
        if (!name)
            continue;
        if (api) {
            char *b = base_url(api);
            if (strcmp(b, base) == 0)
                self = m;
            free(b);
        }
        if (role && (strcmp(role, "leader") == 0 || strcmp(role, "standby_leader") == 0) && state &&
            strcmp(state, "running") == 0)
            leader = m;
        if (!replica && healthy_replica(m, max_lag))
            replica = m;
    }
    if (!self) {
        rc = cbfs_error_set(err, ENOENT, CBFS_EXIT_DATABASE,
                            "no member of the Patroni cluster has the REST API \"%s\" (give this "
                            "member's restapi connect_address)",
                            url);
        goto out;
    }
    if (!replica && !leader) {
        rc = cbfs_error_set(err, EAGAIN, CBFS_EXIT_DATABASE,
                            "no member of the Patroni cluster can back up (no running leader, no "
                            "healthy replica)");
        goto out;
    }
    ret->self = cbfs_xstrdup(cbfs_jv_str(cbfs_jv_get(self, "name")));
    ret->chosen = cbfs_xstrdup(cbfs_jv_str(cbfs_jv_get(replica ? replica : leader, "name")));
    ret->why =
        cbfs_xstrdup(replica ? "the first healthy replica" : "the leader: no healthy replica");
out:
    cbfs_jv_free(doc);
    free(body);
    free(cluster_url);
    free(base);
    return rc;
}

void patroni_choice_release(PatroniChoice *c)
{
    free(c->self);
    free(c->chosen);
    free(c->why);
    memset(c, 0, sizeof(*c));
}
