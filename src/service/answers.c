#include "ns-build.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "service/answers.h"

typedef struct slot {
    char *tmpl;
    unsigned long tmpl_gen, cache_gen;
    char *ca_version;
    ns_answer *a;
    struct slot *next;
} slot;

struct ns_answers {
    pthread_mutex_t mu;
    slot *head;
};

int ns_answer_new(ns_buf *body, const char *etag, ns_answer **out)
{
    ns_answer *a;

    if (body == NULL || !body->secret || strlen(etag) >= sizeof(a->etag)) {
        ns_buf_free(body);
        return NS_E_INVAL;
    }
    if ((a = calloc(1, sizeof(*a))) == NULL) {
        ns_buf_free(body);
        return NS_E_NOMEM;
    }
    a->body = body;
    strcpy(a->etag, etag);
    atomic_init(&a->refs, 1);
    *out = a;
    return 0;
}

ns_answer *ns_answer_ref(ns_answer *a)
{
    atomic_fetch_add(&a->refs, 1);
    return a;
}

void ns_answer_put(ns_answer *a)
{
    if (a == NULL || atomic_fetch_sub(&a->refs, 1) != 1)
        return;
    ns_buf_free(a->body); /* secret buffer: wiped before the secure heap takes it back */
    free(a);
}

int ns_answers_new(ns_answers **out)
{
    ns_answers *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NS_E_NOMEM;
    pthread_mutex_init(&t->mu, NULL);
    *out = t;
    return 0;
}

static void slot_free(slot *s)
{
    if (s == NULL)
        return;
    ns_answer_put(s->a);
    free(s->tmpl);
    free(s->ca_version);
    free(s);
}

void ns_answers_free(ns_answers *t)
{
    if (t == NULL)
        return;
    while (t->head != NULL) {
        slot *s = t->head;
        t->head = s->next;
        slot_free(s);
    }
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static int same_stamp(const slot *x, const ns_answer_stamp *s)
{
    return x->tmpl_gen == s->tmpl_gen && x->cache_gen == s->cache_gen &&
           strcmp(x->ca_version, s->ca_version != NULL ? s->ca_version : "") == 0;
}

int ns_answers_get(ns_answers *t, const char *tmpl, const ns_answer_stamp *s, ns_answer **out)
{
    slot *x;
    int r = NS_E_NOT_FOUND;

    pthread_mutex_lock(&t->mu);
    for (x = t->head; x != NULL && strcmp(x->tmpl, tmpl) != 0; x = x->next)
        ;
    if (x != NULL && same_stamp(x, s)) {
        *out = ns_answer_ref(x->a);
        r = 0;
    }
    pthread_mutex_unlock(&t->mu);
    return r;
}

int ns_answers_set(ns_answers *t, const char *tmpl, const ns_answer_stamp *s, ns_answer *a)
{
    slot *fresh = calloc(1, sizeof(*fresh)), **pp, *old = NULL;

    if (fresh == NULL || (fresh->tmpl = strdup(tmpl)) == NULL ||
        (fresh->ca_version = strdup(s->ca_version != NULL ? s->ca_version : "")) == NULL) {
        slot_free(fresh);
        return NS_E_NOMEM;
    }
    fresh->tmpl_gen = s->tmpl_gen;
    fresh->cache_gen = s->cache_gen;
    fresh->a = ns_answer_ref(a);
    pthread_mutex_lock(&t->mu);
    for (pp = &t->head; *pp != NULL && strcmp((*pp)->tmpl, tmpl) != 0; pp = &(*pp)->next)
        ;
    if (*pp != NULL) {
        old = *pp;
        fresh->next = old->next;
    }
    *pp = fresh;
    pthread_mutex_unlock(&t->mu);
    slot_free(old); /* outside the lock: may wipe a body */
    return 0;
}

void ns_answers_prune(ns_answers *t, const ns_answer_stamp *s)
{
    slot **pp, *gone = NULL;

    pthread_mutex_lock(&t->mu);
    pp = &t->head;
    while (*pp != NULL) {
        slot *x = *pp;
        if (same_stamp(x, s)) {
            pp = &x->next;
            continue;
        }
        *pp = x->next;
        x->next = gone;
        gone = x;
    }
    pthread_mutex_unlock(&t->mu);
    while (gone != NULL) {
        slot *x = gone;
        gone = x->next;
        slot_free(x);
    }
}

size_t ns_answers_count(ns_answers *t)
{
    size_t n = 0;

    pthread_mutex_lock(&t->mu);
    for (slot *x = t->head; x != NULL; x = x->next)
        n++;
    pthread_mutex_unlock(&t->mu);
    return n;
}
