#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "secrets/secret.h"
#include "sign/keyset.h"

static int push(ns_keyset *ks, ns_signer *s)
{
    for (size_t i = 0; i < ks->n; i++)
        if (strcmp(ks->s[i]->id, s->id) == 0) {
            ns_log(NS_LOG_ERROR, "%s: %s and %s are the same key", ks->origin, ks->s[i]->desc, s->desc);
            return NS_E_INVAL;
        }
    ks->s[ks->n++] = s;
    return 0;
}

int ns_keyset_load(const ns_strv *uris, const char *pin_env, unsigned sessions, ns_store *st,
                   const ns_keyring *kr, const char *secret_object, ns_keyset **out)
{
    ns_keyset *ks = NULL;
    ns_secret_doc *doc = NULL;
    ns_signer *s = NULL;
    EVP_PKEY *pkey = NULL;
    char origin[600];
    size_t cap;
    int r = NS_E_INTERNAL;

    if ((ks = calloc(1, sizeof(*ks))) == NULL)
        return NS_E_NOMEM;
    if (uris != NULL && uris->n > 0) {
        snprintf(origin, sizeof(origin), "token keys");
        cap = uris->n;
    } else {
        snprintf(origin, sizeof(origin), "secret %s", secret_object);
        if ((r = ns_secret_read(st, kr, secret_object, &doc, NULL)) != 0)
            goto out;
        if (doc->type->jws_alg == NULL) {
            ns_log(NS_LOG_ERROR, "%s holds %s keys, which cannot sign", secret_object, doc->type->name);
            r = NS_E_INVAL;
            goto out;
        }
        cap = doc->n;
    }
    if ((ks->origin = strdup(origin)) == NULL || (ks->s = calloc(cap, sizeof(*ks->s))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < cap; i++) {
        if (doc == NULL) {
            if ((r = ns_signer_pkcs11_open(uris->v[i], pin_env, sessions, &s)) != 0)
                goto out;
        } else {
            if ((r = ns_doc_key_pkey(doc, i, &pkey)) != 0 || (r = ns_signer_soft_new(pkey, &s)) != 0)
                goto out;
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
        if ((r = push(ks, s)) != 0)
            goto out;
        s = NULL;
    }
    *out = ks;
    ks = NULL;
    r = 0;
out:
    EVP_PKEY_free(pkey);
    ns_signer_free(s);
    ns_doc_free(doc);
    ns_keyset_free(ks);
    return r;
}

ns_signer *ns_keyset_find(const ns_keyset *ks, const char *id)
{
    for (size_t i = 0; ks != NULL && i < ks->n; i++)
        if (strcmp(ks->s[i]->id, id) == 0)
            return ks->s[i];
    return NULL;
}

void ns_keyset_free(ns_keyset *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++)
        ns_signer_free(ks->s[i]);
    free(ks->s);
    free(ks->origin);
    free(ks);
}
