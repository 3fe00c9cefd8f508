#include "ns-build.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "secrets/export.h"
#include "secrets/secret.h"
#include "service/cache.h"

#define SECRET_PREFIX "cluster/secret/"
#define BLOB_MAX      (4u * 1024u * 1024u)

/* The bytes of one export format of an entry's document, made once per document version: exporting
 * decodes every key and encodes PEM/JWK through OpenSSL, which cost milliseconds per request. */
typedef struct exported {
    char *format;
    ns_buf *bytes; /* secret buffer: wiped when freed */
    struct exported *next;
} exported;

typedef struct entry {
    char *name;
    ns_secret_doc *doc;
    char *version;
    exported *out; /* exports of doc, dropped whenever doc is replaced */
    struct entry *next;
} entry;

struct ns_cache {
    pthread_mutex_t mu;
    entry *head;
    atomic_ulong gen; /* ns_cache_generation() */
};

int ns_cache_new(ns_cache **out)
{
    ns_cache *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NS_E_NOMEM;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return 0;
}

static void exported_free(exported *x)
{
    while (x != NULL) {
        exported *next = x->next;
        ns_buf_free(x->bytes);
        free(x->format);
        free(x);
        x = next;
    }
}

static void entry_free(entry *e)
{
    if (e == NULL)
        return;
    exported_free(e->out);
    ns_doc_free(e->doc); /* wipes the key material */
    free(e->version);
    free(e->name);
    free(e);
}

void ns_cache_free(ns_cache *c)
{
    if (c == NULL)
        return;
    while (c->head != NULL) {
        entry *e = c->head;
        c->head = e->next;
        entry_free(e);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static int object_name(const char *name, char *out, size_t n)
{
    int k = snprintf(out, n, "%s%s", SECRET_PREFIX, name);
    if (k < 0 || (size_t)k >= n)
        return NS_E_NAME;
    return ns_store_name_check(out);
}

static int load(ns_store *st, const ns_keyring *kr, ns_metrics *m, const char *name, ns_secret_doc **doc,
                char **version)
{
    char obj[NS_NAME_MAX + 1];
    int r;

    if ((r = object_name(name, obj, sizeof(obj))) != 0)
        return r;
    atomic_fetch_add(&m->token_ops[NS_TOK_DECRYPT], 1);
    r = ns_secret_read(st, kr, obj, doc, version);
    if (ns_err_category(r) == NS_CAT_TOKEN)
        atomic_fetch_add(&m->token_errors, 1);
    return r;
}

int ns_cache_export(ns_cache *c, ns_store *st, const ns_keyring *kr, ns_metrics *m, const char *name,
                    const char *format, ns_buf **out)
{
    entry *e, *fresh = NULL;
    int r = NS_E_INTERNAL;

    pthread_mutex_lock(&c->mu);
    for (e = c->head; e != NULL && strcmp(e->name, name) != 0; e = e->next)
        ;
    if (e != NULL) {
        atomic_fetch_add(&m->cache_hits, 1);
    } else {
        atomic_fetch_add(&m->cache_misses, 1);
        if ((fresh = calloc(1, sizeof(*fresh))) == NULL || (fresh->name = strdup(name)) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
        if ((r = load(st, kr, m, name, &fresh->doc, &fresh->version)) != 0)
            goto out;
        fresh->next = c->head;
        c->head = e = fresh;
        fresh = NULL;
        atomic_fetch_add(&c->gen, 1);
    }
    {
        exported *x;
        for (x = e->out; x != NULL && strcmp(x->format, format) != 0; x = x->next)
            ;
        if (x == NULL) {
            if ((x = calloc(1, sizeof(*x))) == NULL || (x->format = strdup(format)) == NULL) {
                free(x);
                r = NS_E_NOMEM;
                goto out;
            }
            if ((r = ns_export(e->doc, format, &x->bytes)) != 0) {
                exported_free(x);
                goto out;
            }
            x->next = e->out;
            e->out = x;
        }
        r = ns_buf_from(x->bytes->data, x->bytes->len, x->bytes->len, true, out);
    }
out:
    pthread_mutex_unlock(&c->mu);
    entry_free(fresh);
    return r;
}

unsigned long ns_cache_generation(ns_cache *c)
{
    return atomic_load(&c->gen);
}

static int referenced(const ns_config *cfg, const char *name)
{
    for (size_t t = 0; t < cfg->n_templates; t++)
        for (size_t f = 0; f < cfg->templates[t].n; f++)
            if (cfg->templates[t].files[f].secret != NULL &&
                strcmp(cfg->templates[t].files[f].secret, name) == 0)
                return 1;
    return 0;
}

void ns_cache_refresh(ns_cache *c, ns_store *st, const ns_keyring *kr, ns_metrics *m, const ns_config *cfg)
{
    entry **pp;

    pthread_mutex_lock(&c->mu);
    pp = &c->head;
    while (*pp != NULL) {
        entry *e = *pp;
        char obj[NS_NAME_MAX + 1];
        ns_buf *data = NULL;
        char *ver = NULL;
        ns_secret_doc *doc = NULL;
        int r;

        if (!referenced(cfg, e->name)) {
            *pp = e->next;
            entry_free(e);
            atomic_fetch_add(&c->gen, 1);
            continue;
        }
        pp = &e->next;
        if (object_name(e->name, obj, sizeof(obj)) != 0)
            continue;
        r = ns_store_get(st, obj, BLOB_MAX, &data, &ver);
        ns_buf_free(data);
        if (r != 0) {
            ns_log(NS_LOG_WARN, "cache: cannot check secret %s: %s (keeping the cached one)", e->name,
                   ns_strerror(r));
            free(ver);
            continue;
        }
        if (ver != NULL && e->version != NULL && strcmp(ver, e->version) == 0) {
            free(ver);
            continue;
        }
        free(ver);
        ver = NULL;
        if ((r = load(st, kr, m, e->name, &doc, &ver)) != 0) {
            ns_log(NS_LOG_WARN, "cache: cannot open secret %s: %s (keeping the cached one)", e->name,
                   ns_strerror(r));
            continue;
        }
        ns_log(NS_LOG_INFO, "cache: secret %s changed; reloaded", e->name);
        exported_free(e->out);
        e->out = NULL;
        ns_doc_free(e->doc);
        free(e->version);
        e->doc = doc;
        e->version = ver;
        atomic_fetch_add(&c->gen, 1);
    }
    pthread_mutex_unlock(&c->mu);
}
