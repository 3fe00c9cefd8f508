#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "envelope/envelope.h"
#include "secrets/rewrap.h"

/* How often a blob is read again when writers keep changing it under us. */
#define CAS_ATTEMPTS 8

int ns_rewrap_one(ns_store *st, const ns_keyring *kr, const char *name, int *changed)
{
    int r = NS_E_INTERNAL;

    *changed = 0;
    for (int attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        ns_buf *blob = NULL, *nb = NULL;
        char *version = NULL;

        r = ns_store_get(st, name, NS_BLOB_MAX, &blob, &version);
        if (r == 0)
            r = ns_envelope_rewrap(kr, name, blob->data, blob->len, &nb);
        if (r == 0 && nb != NULL) {
            r = ns_store_put(st, name, nb->data, nb->len, NS_PUT_IF_MATCH, version);
            *changed = r == 0;
        }
        ns_buf_free(blob);
        ns_buf_free(nb);
        free(version);
        if (r != NS_E_CONFLICT)
            break;
        ns_log(NS_LOG_INFO, "%s changed while being re-wrapped; reading it again", name);
    }
    return r == NS_E_NOT_FOUND ? 0 : r;
}

struct job {
    ns_store *st;
    const ns_keyring *kr;
    const ns_strv *names;
    const ns_rewrap_hooks *hooks;
    pthread_mutex_t lock;
    size_t next; /* guarded by lock, like everything below */
    size_t done;
    ns_rewrap_stats *stats;
};

static void *worker(void *arg)
{
    struct job *j = arg;

    for (;;) {
        size_t i;
        int changed = 0, r;

        pthread_mutex_lock(&j->lock);
        i = j->next++;
        pthread_mutex_unlock(&j->lock);
        if (i >= j->names->n)
            break;
        r = ns_rewrap_one(j->st, j->kr, j->names->v[i], &changed);
        pthread_mutex_lock(&j->lock);
        if (r != 0) {
            j->stats->failed++;
            if (j->stats->first_error == 0)
                j->stats->first_error = r;
            if (j->hooks && j->hooks->failure)
                j->hooks->failure(j->hooks->ctx, j->names->v[i], r);
        } else if (changed) {
            j->stats->rewrapped++;
        } else {
            j->stats->skipped++;
        }
        j->done++;
        if (j->hooks && j->hooks->progress)
            j->hooks->progress(j->hooks->ctx, j->done, j->names->n);
        pthread_mutex_unlock(&j->lock);
    }
    return NULL;
}

int ns_rewrap_all(ns_store *st, const ns_keyring *kr, const char *prefix, unsigned jobs,
                  const ns_rewrap_hooks *hooks, ns_rewrap_stats *stats)
{
    ns_strv names = NS_STRV_INIT;
    pthread_t tids[NS_REWRAP_JOBS_MAX];
    unsigned started = 0;
    struct job j;
    int r;

    memset(stats, 0, sizeof(*stats));
    if (jobs == 0 || jobs > NS_REWRAP_JOBS_MAX)
        return NS_E_INVAL;
    if (ns_keyring_primary(kr) == NULL)
        return NS_E_CONFIG;
    if ((r = ns_store_list(st, prefix, &names)) != 0)
        return r;
    stats->total = names.n;
    memset(&j, 0, sizeof(j));
    j.st = st;
    j.kr = kr;
    j.names = &names;
    j.hooks = hooks;
    j.stats = stats;
    pthread_mutex_init(&j.lock, NULL);
    for (unsigned k = 1; k < jobs && k < names.n; k++) {
        if (pthread_create(&tids[started], NULL, worker, &j) != 0)
            break; /* fewer threads: still correct */
        started++;
    }
    worker(&j);
    for (unsigned k = 0; k < started; k++)
        pthread_join(tids[k], NULL);
    pthread_mutex_destroy(&j.lock);
    ns_strv_clear(&names);
    return 0;
}
