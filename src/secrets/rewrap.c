#include "ns-build.h"

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

/* ns_rewrap_all is a pipeline, so that storage I/O overlaps the token's work instead of adding to it:
 *
 *   the caller's thread   reads blobs ahead (get with version; a blob already under the primary is counted
 *                         as skipped right there, no key used) and writes results back (compare-and-swap
 *                         put; a lost race falls back to ns_rewrap_one for that blob)
 *   workers (jobs)        ns_envelope_rewrap: the unwrap and wrap calls into the token, one session each
 *
 * At most DEPTH blobs are in flight, so memory stays small whatever the number of blobs, and the results
 * queue can never fill up. */

#define DEPTH      64
#define WAKE_BATCH 8

struct item {
    size_t index;
    ns_buf *blob; /* as read */
    char *version;
    ns_buf *out; /* re-wrapped */
    int r;
};

struct queue {
    struct item *v[DEPTH];
    size_t head, len;
    pthread_cond_t cond; /* signalled on push */
};

struct pipe {
    ns_store *st;
    const ns_keyring *kr;
    const ns_strv *names;
    const ns_rewrap_hooks *hooks;
    ns_rewrap_stats *stats;
    pthread_mutex_t lock; /* guards both queues and `closed` */
    struct queue todo, done;
    int closed; /* no more work: workers drain `todo` and stop */
    size_t finished;
};

/* Push, and wake a waiter only when `wake` (waking costs a futex call and a context switch per item). */
static void queue_push(struct queue *q, struct item *it, int wake)
{
    q->v[(q->head + q->len++) % DEPTH] = it;
    if (wake)
        pthread_cond_signal(&q->cond);
}

static struct item *queue_pop(struct queue *q)
{
    struct item *it = q->v[q->head];
    q->head = (q->head + 1) % DEPTH;
    q->len--;
    return it;
}

static void item_free(struct item *it)
{
    if (it == NULL)
        return;
    ns_buf_free(it->blob);
    ns_buf_free(it->out);
    free(it->version);
    free(it);
}

/* Count one finished blob (caller's thread only). */
static void finish(struct pipe *p, size_t index, int r, int changed)
{
    if (r != 0) {
        p->stats->failed++;
        if (p->stats->first_error == 0)
            p->stats->first_error = r;
        if (p->hooks && p->hooks->failure)
            p->hooks->failure(p->hooks->ctx, p->names->v[index], r);
    } else if (changed) {
        p->stats->rewrapped++;
    } else {
        p->stats->skipped++;
    }
    p->finished++;
    if (p->hooks && p->hooks->progress)
        p->hooks->progress(p->hooks->ctx, p->finished, p->names->n);
}

static void *worker(void *arg)
{
    struct pipe *p = arg;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        struct item *it;

        while (p->todo.len == 0 && !p->closed)
            pthread_cond_wait(&p->todo.cond, &p->lock);
        if (p->todo.len == 0)
            break;
        it = queue_pop(&p->todo);
        pthread_mutex_unlock(&p->lock);
        it->r = ns_envelope_rewrap(p->kr, p->names->v[it->index], it->blob->data, it->blob->len, &it->out);
        pthread_mutex_lock(&p->lock);
        /* The writer waits for results only when it has nothing else to do: wake it in batches, and
         * whenever this worker is about to run dry (so the last results are never left waiting). */
        queue_push(&p->done, it, p->done.len + 1 >= WAKE_BATCH || p->todo.len == 0);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Read blob i; NULL when there is nothing to re-wrap (counted as finished). */
static struct item *read_one(struct pipe *p, const uint8_t *primary_id, size_t i)
{
    struct item *it = calloc(1, sizeof(*it));
    ns_envelope_info info;
    int r;

    if (it == NULL) {
        finish(p, i, NS_E_NOMEM, 0);
        return NULL;
    }
    it->index = i;
    r = ns_store_get(p->st, p->names->v[i], NS_BLOB_MAX, &it->blob, &it->version);
    /* Deleted meanwhile, or already under the primary: nothing to do, and no key used. Any other problem
     * (a malformed header included) is reported as this blob's failure. */
    if (r == NS_E_NOT_FOUND || (r == 0 && ns_envelope_parse(it->blob->data, it->blob->len, &info) == 0 &&
                                memcmp(info.kek_id, primary_id, NS_KEK_ID_LEN) == 0)) {
        finish(p, i, 0, 0);
        item_free(it);
        return NULL;
    }
    if (r != 0) {
        finish(p, i, r, 0);
        item_free(it);
        return NULL;
    }
    return it;
}

static void write_one(struct pipe *p, struct item *it)
{
    const char *name = p->names->v[it->index];
    int r = it->r, changed = 0;

    if (r == 0 && it->out != NULL) {
        r = ns_store_put(p->st, name, it->out->data, it->out->len, NS_PUT_IF_MATCH, it->version);
        changed = r == 0;
        if (r == NS_E_CONFLICT) /* a writer changed it meanwhile: start over for this blob */
            r = ns_rewrap_one(p->st, p->kr, name, &changed);
        else if (r == NS_E_NOT_FOUND) /* deleted meanwhile */
            r = 0;
    }
    finish(p, it->index, r, changed);
    item_free(it);
}

int ns_rewrap_all(ns_store *st, const ns_keyring *kr, const char *prefix, unsigned jobs,
                  const ns_rewrap_hooks *hooks, ns_rewrap_stats *stats)
{
    ns_strv names = NS_STRV_INIT;
    pthread_t tids[NS_REWRAP_JOBS_MAX];
    unsigned started = 0;
    size_t next = 0, in_flight = 0;
    struct pipe p;
    ns_kek *primary;
    int r;

    memset(stats, 0, sizeof(*stats));
    if (jobs == 0 || jobs > NS_REWRAP_JOBS_MAX)
        return NS_E_INVAL;
    if ((primary = ns_keyring_primary(kr)) == NULL)
        return NS_E_CONFIG;
    if ((r = ns_store_list(st, prefix, &names)) != 0)
        return r;
    stats->total = names.n;
    memset(&p, 0, sizeof(p));
    p.st = st;
    p.kr = kr;
    p.names = &names;
    p.hooks = hooks;
    p.stats = stats;
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.todo.cond, NULL);
    pthread_cond_init(&p.done.cond, NULL);
    for (unsigned k = 0; k < jobs && k < names.n; k++) {
        if (pthread_create(&tids[started], NULL, worker, &p) != 0)
            break;
        started++;
    }
    if (started == 0) {
        /* No worker thread: do it all in line. */
        for (size_t i = 0; i < names.n; i++) {
            int changed = 0, ri = ns_rewrap_one(st, kr, names.v[i], &changed);
            finish(&p, i, ri, changed);
        }
    }
    while (started > 0 && (next < names.n || in_flight > 0)) {
        struct item *it = NULL;

        /* Read ahead while there is room; between reads, write back whatever is ready. */
        if (next < names.n && in_flight < DEPTH) {
            if ((it = read_one(&p, primary->id, next++)) != NULL) {
                pthread_mutex_lock(&p.lock);
                queue_push(&p.todo, it, 1);
                pthread_mutex_unlock(&p.lock);
                in_flight++;
            }
            pthread_mutex_lock(&p.lock);
            it = p.done.len > 0 ? queue_pop(&p.done) : NULL;
            pthread_mutex_unlock(&p.lock);
        } else {
            /* Nothing more to read now: wait for a result. */
            pthread_mutex_lock(&p.lock);
            while (p.done.len == 0)
                pthread_cond_wait(&p.done.cond, &p.lock);
            it = queue_pop(&p.done);
            pthread_mutex_unlock(&p.lock);
        }
        if (it != NULL) {
            write_one(&p, it);
            in_flight--;
        }
    }
    pthread_mutex_lock(&p.lock);
    p.closed = 1;
    pthread_cond_broadcast(&p.todo.cond);
    pthread_mutex_unlock(&p.lock);
    for (unsigned k = 0; k < started; k++)
        pthread_join(tids[k], NULL);
    pthread_cond_destroy(&p.todo.cond);
    pthread_cond_destroy(&p.done.cond);
    pthread_mutex_destroy(&p.lock);
    ns_strv_clear(&names);
    return 0;
}
