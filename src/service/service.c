#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "service/service.h"

#define NONCE_SECRET "cluster/secret/registration-nonce.key"
#define PROBE_MAX    (4u * 1024u * 1024u)

int ns_svc_new(ns_config *cfg, ns_svc **out)
{
    ns_svc *svc = calloc(1, sizeof(*svc));
    int r;

    if (svc == NULL)
        return NS_E_NOMEM;
    pthread_rwlock_init(&svc->lock, NULL);
    pthread_mutex_init(&svc->snap_mu, NULL);
    if ((r = ns_cache_new(&svc->cache)) != 0 || (r = ns_answers_new(&svc->answers)) != 0 ||
        (r = ns_recs_new((cfg->server.cache_check > 0 ? cfg->server.cache_check : 1) * 1000, &svc->recs)) !=
            0 ||
        (r = ns_rl_new(&svc->rl)) != 0) {
        ns_recs_free(svc->recs);
        ns_answers_free(svc->answers);
        ns_cache_free(svc->cache);
        free(svc);
        return r;
    }
    svc->cfg = cfg;
    svc->tcfg = cfg;
    *out = svc;
    return 0;
}

static void snap_free(ns_ca_snap *s)
{
    if (s == NULL)
        return;
    ns_ca_free(s->ca);
    X509_STORE_free(s->trust);
    ns_buf_free(s->pem);
    free(s->version);
    ns_keyset_free(s->nonce_keys);
    free(s->nonce_version);
    free(s);
}

void ns_svc_snap_put(ns_ca_snap *s)
{
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
        snap_free(s);
}

ns_ca_snap *ns_svc_snap_get(ns_svc *svc)
{
    ns_ca_snap *s;

    pthread_mutex_lock(&svc->snap_mu);
    s = svc->snap;
    if (s != NULL)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&svc->snap_mu);
    return s;
}

static void snap_set(ns_svc *svc, ns_ca_snap *s)
{
    ns_ca_snap *old;

    pthread_mutex_lock(&svc->snap_mu);
    old = svc->snap;
    svc->snap = s;
    pthread_mutex_unlock(&svc->snap_mu);
    ns_svc_snap_put(old);
}

void ns_svc_free(ns_svc *svc)
{
    if (svc == NULL)
        return;
    snap_set(svc, NULL);
    ns_answers_free(svc->answers);
    ns_recs_free(svc->recs);
    ns_rl_free(svc->rl);
    ns_cache_free(svc->cache);
    ns_ledger_close(svc->ledger);
    ns_keyring_free(svc->kr);
    ns_store_close(svc->st);
    if (svc->tcfg != svc->cfg)
        ns_config_free(svc->tcfg);
    ns_config_free(svc->cfg);
    pthread_rwlock_destroy(&svc->lock);
    pthread_mutex_destroy(&svc->snap_mu);
    free(svc);
}

/* The stored version of `name` (NULL if it does not exist). */
static int object_version(ns_store *st, const char *name, char **out)
{
    ns_buf *data = NULL;
    int r = ns_store_get(st, name, PROBE_MAX, &data, out);

    ns_buf_free(data);
    if (r == NS_E_NOT_FOUND) {
        *out = NULL;
        return 0;
    }
    return r;
}

/* A new snapshot: the CA (bundle and issuing key), its trust store and PEM, the nonce keys. */
static int snap_build(ns_svc *svc, ns_ca_snap **out)
{
    const ns_config *cfg = svc->cfg;
    ns_ca_snap *s = calloc(1, sizeof(*s));
    int r = NS_E_INTERNAL;

    if (s == NULL)
        return NS_E_NOMEM;
    atomic_init(&s->refs, 1);
    if ((r = ns_ca_open(cfg, svc->st, svc->kr, &s->ca)) != 0)
        goto out;
    atomic_fetch_add(&svc->metrics.ca_ignored, s->ca->ignored);
    if ((s->version = strdup(s->ca->version != NULL ? s->ca->version : "")) == NULL ||
        (s->trust = X509_STORE_new()) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < s->ca->n; i++)
        if (X509_STORE_add_cert(s->trust, s->ca->certs[i]) != 1) {
            r = NS_E_CRYPTO;
            goto out;
        }
    if ((r = ns_ca_bundle_pem(s->ca->certs, s->ca->n, &s->pem)) != 0)
        goto out;
    if (cfg->nonce.keys.n == 0 && (r = object_version(svc->st, NONCE_SECRET, &s->nonce_version)) != 0)
        goto out;
    if ((r = ns_keyset_load(&cfg->nonce.keys, cfg->nonce.pin_env, cfg->token_sessions, svc->st, svc->kr,
                            NONCE_SECRET, &s->nonce_keys)) != 0) {
        ns_log(NS_LOG_ERROR, "cannot load the registration-nonce keys: %s", ns_strerror(r));
        goto out;
    }
    *out = s;
    s = NULL;
    r = 0;
out:
    snap_free(s);
    return r;
}

static void warm_cache(ns_svc *svc)
{
    const ns_config *t = svc->tcfg;

    for (size_t i = 0; i < t->n_templates; i++)
        for (size_t j = 0; j < t->templates[i].n; j++) {
            const ns_tmpl_file *f = &t->templates[i].files[j];
            ns_buf *b = NULL;
            int r;
            if (f->secret == NULL)
                continue;
            r = ns_cache_export(svc->cache, svc->st, svc->kr, &svc->metrics, f->secret, f->format, &b);
            ns_buf_free(b);
            if (r != 0)
                ns_log(NS_LOG_WARN, "template %s: secret %s (%s): %s", t->templates[i].name, f->secret,
                       f->path, ns_strerror(r));
        }
}

int ns_svc_load(ns_svc *svc)
{
    ns_ca_snap *s = NULL;
    int r;

    pthread_rwlock_wrlock(&svc->lock);
    if (svc->st == NULL && (r = ns_store_open(&svc->cfg->storage, &svc->st)) != 0)
        goto out;
    if (svc->kr == NULL && (r = ns_keyring_load(&svc->cfg->keys, NS_KEYRING_STRICT, &svc->kr)) != 0)
        goto out;
    if (svc->ledger == NULL && (r = ns_ledger_open(svc->cfg->cache_dir, svc->st, &svc->ledger)) != 0)
        goto out;
    if ((r = snap_build(svc, &s)) != 0)
        goto out;
    snap_set(svc, s);
    warm_cache(svc);
    atomic_store(&svc->ready, 1);
    r = 0;
out:
    pthread_rwlock_unlock(&svc->lock);
    if (r != 0 && ns_err_category(r) == NS_CAT_TOKEN)
        atomic_fetch_add(&svc->metrics.token_errors, 1);
    return r;
}

void ns_svc_refresh(ns_svc *svc)
{
    ns_ca_snap *cur, *s = NULL;
    char *ver = NULL, *nver = NULL;
    int changed = 0, r;

    if (!atomic_load(&svc->ready))
        return;
    pthread_rwlock_rdlock(&svc->lock);
    cur = ns_svc_snap_get(svc);
    if ((r = object_version(svc->st, NS_CA_BUNDLE, &ver)) != 0) {
        ns_log(NS_LOG_WARN, "refresh: cannot read %s: %s", NS_CA_BUNDLE, ns_strerror(r));
    } else if (ver == NULL || strcmp(ver, cur->version) != 0) {
        changed = 1;
    }
    if (r == 0 && svc->cfg->nonce.keys.n == 0) {
        if ((r = object_version(svc->st, NONCE_SECRET, &nver)) != 0)
            ns_log(NS_LOG_WARN, "refresh: cannot read the nonce keys: %s", ns_strerror(r));
        else if ((nver == NULL) != (cur->nonce_version == NULL) ||
                 (nver != NULL && strcmp(nver, cur->nonce_version) != 0))
            changed = 1;
    }
    if (atomic_exchange(&svc->snap_stale, 0))
        changed = 1;
    if (changed) {
        if ((r = snap_build(svc, &s)) != 0) {
            ns_log(NS_LOG_WARN,
                   "refresh: the CA or nonce keys changed (or failed) but cannot be reopened: %s (keeping "
                   "the old)",
                   ns_strerror(r));
            if (ns_err_category(r) == NS_CAT_TOKEN) {
                atomic_fetch_add(&svc->metrics.token_errors, 1);
                atomic_store(&svc->snap_stale, 1);
            }
        } else {
            ns_log(NS_LOG_INFO, "refresh: CA bundle or nonce keys reopened");
            snap_set(svc, s);
        }
    }
    ns_svc_snap_put(cur);
    ns_cache_refresh(svc->cache, svc->st, svc->kr, &svc->metrics, svc->tcfg);
    /* Answers made from replaced secrets, an old CA bundle or old templates are wiped now, not when next
     * asked for. */
    cur = ns_svc_snap_get(svc);
    {
        ns_answer_stamp st = {atomic_load(&svc->tmpl_gen), ns_cache_generation(svc->cache), cur->version};
        ns_answers_prune(svc->answers, &st);
    }
    ns_svc_snap_put(cur);
    pthread_rwlock_unlock(&svc->lock);
    free(ver);
    free(nver);
}

int ns_svc_reload(ns_svc *svc, const char *path)
{
    ns_config *nc = NULL, *old = NULL;
    int r;

    if ((r = ns_config_load(path, &nc)) != 0) {
        ns_log(NS_LOG_ERROR, "reload: the config has errors; nothing changed");
        return r;
    }
    pthread_rwlock_wrlock(&svc->lock);
    if (svc->kr != NULL && (r = ns_keyring_reload(svc->kr)) != 0) {
        pthread_rwlock_unlock(&svc->lock);
        ns_log(NS_LOG_ERROR, "reload: the encryption keys cannot be loaded: %s; nothing changed",
               ns_strerror(r));
        ns_config_free(nc);
        return r;
    }
    if (svc->tcfg != svc->cfg)
        old = svc->tcfg;
    svc->tcfg = nc;
    atomic_fetch_add(&svc->tmpl_gen, 1);
    pthread_rwlock_unlock(&svc->lock);
    ns_config_free(old);
    ns_log(NS_LOG_WARN, "reload: templates and encryption keys reloaded (%zu templates, %zu groups)",
           nc->n_templates, nc->n_groups);
    return 0;
}

void ns_reply_clear(ns_reply *rp)
{
    ns_buf_free(rp->body);
    ns_answer_put(rp->answer);
    memset(rp, 0, sizeof(*rp));
}

void ns_reply_error(ns_reply *rp, int status)
{
    static const struct {
        int status;
        const char *code, *message;
    } t[] = {
        {400, "bad_request", "the request is malformed"},
        {401, "unauthorized", "a valid client certificate is required"},
        {403, "forbidden", "the certificate does not allow this"},
        {404, "not_found", "not found"},
        {405, "method_not_allowed", "method not allowed"},
        {409, "nonce_used", "the nonce was used already"},
        {413, "too_large", "the body is too large"},
        {429, "rate_limited", "too many requests; try again later"},
        {503, "unavailable", "the service is unavailable; try again"},
    };
    size_t i;

    ns_buf_free(rp->body);
    rp->body = NULL;
    ns_answer_put(rp->answer);
    rp->answer = NULL;
    /* A status without a row (a caller's mistake) becomes the last row, 503: never a 500 with detail. */
    for (i = 0; i + 1 < sizeof(t) / sizeof(t[0]) && t[i].status != status; i++)
        ;
    rp->status = t[i].status;
    rp->error = t[i].code;
    rp->message = t[i].message;
}

int ns_svc_fault_status(ns_svc *svc, int err)
{
    if (ns_err_category(err) == NS_CAT_TOKEN) {
        atomic_fetch_add(&svc->metrics.token_errors, 1);
        atomic_store(&svc->snap_stale, 1);
    }
    return 503;
}
