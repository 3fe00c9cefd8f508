/* Rendered GET /v1/agent/files answers, kept per template (doc/server.md "Caching").
 *
 * An answer is the JSON body of a template (every file's content, base64, so it holds secrets) and its
 * ETag. Its body lives in the secure heap (locked, not dumpable) and is wiped when the last reference
 * goes: the table holds one, and every reply that sends it holds one until libevent has written it. An
 * answer is valid for the stamp it was rendered under: the generation of the templates (bumped by a
 * reload), the generation of the secret cache (bumped whenever a cached secret is added, replaced or
 * dropped: a rotation) and the CA bundle's version. A lookup under another stamp misses, and
 * ns_answers_prune() drops (and so wipes) every answer whose stamp is not the current one. One mutex
 * guards the table; a hit is a name comparison per template and a reference count increment. */
#ifndef NS_SERVICE_ANSWERS_H
#define NS_SERVICE_ANSWERS_H

#include <stdatomic.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/err.h"

typedef struct ns_answer {
    ns_buf *body;  /* secret buffer, read-only once made */
    char etag[70]; /* quoted */
    atomic_int refs;
} ns_answer;

typedef struct ns_answer_stamp {
    unsigned long tmpl_gen;  /* templates (ns_svc tmpl_gen) */
    unsigned long cache_gen; /* ns_cache_generation() read before rendering */
    const char *ca_version;  /* the CA snapshot's version (copied when stored) */
} ns_answer_stamp;

typedef struct ns_answers ns_answers;

/* A new answer holding body (taken over, also on failure; must be a secret buffer) with one reference. */
int ns_answer_new(ns_buf *body, const char *etag, ns_answer **out) NS_WUR;
/* Another reference to a. */
ns_answer *ns_answer_ref(ns_answer *a);
/* Drop a reference; the last one wipes and frees the body. NULL is accepted. */
void ns_answer_put(ns_answer *a);

int ns_answers_new(ns_answers **out) NS_WUR;
void ns_answers_free(ns_answers *t);

/* The answer of template `tmpl` rendered under stamp s, with a new reference: 0, or NS_E_NOT_FOUND. */
int ns_answers_get(ns_answers *t, const char *tmpl, const ns_answer_stamp *s, ns_answer **out) NS_WUR;
/* Keep a (a new reference is taken) as the answer of `tmpl` under stamp s, replacing the previous one. */
int ns_answers_set(ns_answers *t, const char *tmpl, const ns_answer_stamp *s, ns_answer *a) NS_WUR;
/* Drop every answer not rendered under stamp s. */
void ns_answers_prune(ns_answers *t, const ns_answer_stamp *s);
/* How many answers the table holds (tests). */
size_t ns_answers_count(ns_answers *t);

#endif
