#include "ns-build.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>

#include "common/log.h"
#include "pkcs11/internal.h"
#include "pkcs11/key.h"
#include "pkcs11/rv.h"

/* Key objects on a token: found by the URI's label/id, looked up again after the session pool reopens its
 * sessions (token.c), read and generated. */

struct ns_p11_key {
    ns_p11_token *t;
    ns_p11_uri *uri;
    CK_OBJECT_CLASS cls;
    pthread_mutex_t lock;
    CK_OBJECT_HANDLE h;
    unsigned gen;
    unsigned epoch; /* bumped each time a lookup finds a different object than the last one */
    CK_OBJECT_HANDLE last_h;
};

/* Find exactly one object of the key's class matching its URI. found: 0, 1 or 2 (more than one). */
static CK_RV find_object(ns_p11_key *k, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *h, CK_ULONG *found)
{
    CK_FUNCTION_LIST *fn = ns_p11_token_fn(k->t);
    CK_ATTRIBUTE tmpl[8];
    CK_ATTRIBUTE *a;
    CK_ULONG n = 0, na = 0;
    CK_OBJECT_HANDLE hs[2];
    CK_RV rv;

    a = ns_p11_uri_object_attrs(k->uri, &na);
    for (CK_ULONG i = 0; i < na && n < 7; i++)
        if (a[i].type == CKA_LABEL || a[i].type == CKA_ID)
            tmpl[n++] = a[i];
    tmpl[n].type = CKA_CLASS;
    tmpl[n].pValue = &k->cls;
    tmpl[n].ulValueLen = sizeof(k->cls);
    n++;
    if ((rv = ns_p11_token_relogin(k->t, s)) != CKR_OK)
        return rv;
    if ((rv = fn->C_FindObjectsInit(s, tmpl, n)) != CKR_OK)
        return rv;
    rv = fn->C_FindObjects(s, hs, 2, found);
    (void)fn->C_FindObjectsFinal(s);
    if (rv == CKR_OK && *found > 0)
        *h = hs[0];
    return rv;
}

CK_RV ns_p11_key_handle(ns_p11_key *key, CK_SESSION_HANDLE s, unsigned gen, CK_OBJECT_HANDLE *obj,
                        int *missing)
{
    CK_RV rv = CKR_OK;

    *missing = 0;
    pthread_mutex_lock(&key->lock);
    if (key->h == CK_INVALID_HANDLE || key->gen != gen) {
        CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
        CK_ULONG found = 0;
        if ((rv = find_object(key, s, &h, &found)) == CKR_OK && found != 1) {
            pthread_mutex_unlock(&key->lock);
            ns_log(NS_LOG_ERROR, "%s %s object matching '%s' on token '%s'",
                   found == 0 ? "no" : "more than one",
                   key->cls == CKO_SECRET_KEY    ? "secret-key"
                   : key->cls == CKO_PRIVATE_KEY ? "private-key"
                                                 : "public-key",
                   ns_p11_uri_safe_text(key->uri), ns_p11_token_label(key->t));
            *missing = 1;
            return CKR_OK;
        }
        if (rv == CKR_OK) {
            if (h != key->last_h)
                key->epoch++;
            key->last_h = h;
            key->h = h;
            key->gen = gen;
        }
    }
    *obj = key->h;
    pthread_mutex_unlock(&key->lock);
    return rv;
}

void ns_p11_key_forget(ns_p11_key *key)
{
    pthread_mutex_lock(&key->lock);
    key->h = CK_INVALID_HANDLE;
    pthread_mutex_unlock(&key->lock);
}

int ns_p11_key_find(ns_p11_token *t, const char *uri, CK_OBJECT_CLASS cls, ns_p11_key **out)
{
    ns_p11_key *k = NULL;
    int r = NS_E_INTERNAL;

    if ((k = calloc(1, sizeof(*k))) == NULL)
        return NS_E_NOMEM;
    pthread_mutex_init(&k->lock, NULL);
    k->h = CK_INVALID_HANDLE;
    k->last_h = CK_INVALID_HANDLE;
    k->cls = cls;
    if ((r = ns_p11_uri_parse(uri, &k->uri)) != 0)
        goto out;
    {
        CK_ULONG na = 0;
        CK_ATTRIBUTE *a = ns_p11_uri_object_attrs(k->uri, &na);
        for (CK_ULONG i = 0; i < na; i++)
            if (a[i].type == CKA_CLASS && a[i].ulValueLen == sizeof(CK_OBJECT_CLASS) &&
                *(CK_OBJECT_CLASS *)a[i].pValue != cls) {
                ns_log(NS_LOG_ERROR, "'%s': type= names another kind of object than this key needs",
                       ns_p11_uri_safe_text(k->uri));
                r = NS_E_INVAL;
                goto out;
            }
    }
    if (!ns_p11_uri_names_object(k->uri)) {
        ns_log(NS_LOG_ERROR, "'%s' names no key: add object= or id=", ns_p11_uri_safe_text(k->uri));
        r = NS_E_INVAL;
        goto out;
    }
    k->t = t;
    if ((r = ns_p11_run(t, k, "C_FindObjects", NULL, NULL, NULL)) != 0) {
        k->t = NULL;
        goto out;
    }
    ns_p11_token_ref(t);
    *out = k;
    k = NULL;
    r = 0;
out:
    ns_p11_key_free(k);
    return r;
}

void ns_p11_key_free(ns_p11_key *k)
{
    if (k == NULL)
        return;
    ns_p11_token_close(k->t);
    ns_p11_uri_free(k->uri);
    pthread_mutex_destroy(&k->lock);
    free(k);
}

unsigned ns_p11_key_epoch(ns_p11_key *k)
{
    unsigned e;
    pthread_mutex_lock(&k->lock);
    e = k->epoch;
    pthread_mutex_unlock(&k->lock);
    return e;
}

ns_p11_token *ns_p11_key_token(const ns_p11_key *k)
{
    return k->t;
}

const char *ns_p11_key_uri(const ns_p11_key *k)
{
    return ns_p11_uri_safe_text(k->uri);
}

struct attr_ctx {
    CK_ATTRIBUTE_TYPE type;
    unsigned char *val;
    size_t len;
};

static CK_RV attr_op(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, void *vctx)
{
    struct attr_ctx *c = vctx;
    CK_ATTRIBUTE a = {c->type, NULL, 0};
    CK_RV rv;

    free(c->val);
    c->val = NULL;
    if ((rv = fn->C_GetAttributeValue(s, obj, &a, 1)) != CKR_OK)
        return rv;
    if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > 65536)
        return CKR_ATTRIBUTE_TYPE_INVALID;
    if ((c->val = a.pValue = malloc(a.ulValueLen ? a.ulValueLen : 1)) == NULL)
        return CKR_HOST_MEMORY;
    if ((rv = fn->C_GetAttributeValue(s, obj, &a, 1)) != CKR_OK)
        return rv;
    c->len = a.ulValueLen;
    return CKR_OK;
}

int ns_p11_key_attr(ns_p11_key *k, CK_ATTRIBUTE_TYPE type, unsigned char **val, size_t *len)
{
    struct attr_ctx c = {type, NULL, 0};
    int r = ns_p11_run(k->t, k, "C_GetAttributeValue", attr_op, &c, NULL);
    if (r != 0) {
        free(c.val);
        return r;
    }
    *val = c.val;
    *len = c.len;
    return 0;
}

int ns_p11_key_rsa_public(ns_p11_key *k, EVP_PKEY **out)
{
    unsigned char *mod = NULL, *exp = NULL;
    size_t mod_len = 0, exp_len = 0;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    BIGNUM *n = NULL, *e = NULL;
    int r = NS_E_INTERNAL;

    if ((r = ns_p11_key_attr(k, CKA_MODULUS, &mod, &mod_len)) != 0 ||
        (r = ns_p11_key_attr(k, CKA_PUBLIC_EXPONENT, &exp, &exp_len)) != 0)
        goto out;
    r = NS_E_TOKEN_OBJECT;
    if ((n = BN_bin2bn(mod, (int)mod_len, NULL)) == NULL ||
        (e = BN_bin2bn(exp, (int)exp_len, NULL)) == NULL || (bld = OSSL_PARAM_BLD_new()) == NULL ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto out;
    r = 0;
out:
    ERR_clear_error();
    free(mod);
    free(exp);
    BN_free(n);
    BN_free(e);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    return r;
}

/* ---- generation ---- */

struct count_ctx {
    CK_ATTRIBUTE attr[2];
    CK_ULONG n;
};

static CK_RV op_count(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE unused, void *vctx)
{
    struct count_ctx *c = vctx;
    CK_OBJECT_HANDLE hs[4];
    CK_ULONG n = 0;
    CK_RV rv;

    (void)unused;
    c->n = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (c->attr[pass].type == 0 && pass == 1)
            break;
        if ((rv = fn->C_FindObjectsInit(s, &c->attr[pass], 1)) != CKR_OK)
            return rv;
        rv = fn->C_FindObjects(s, hs, 4, &n);
        (void)fn->C_FindObjectsFinal(s);
        if (rv != CKR_OK)
            return rv;
        c->n += n;
    }
    return CKR_OK;
}

static int count_label_or_id(ns_p11_token *t, CK_ATTRIBUTE label, CK_ATTRIBUTE id, CK_ULONG *n)
{
    struct count_ctx c;
    int r;

    memset(&c, 0, sizeof(c));
    c.attr[0] = label;
    c.attr[1] = id.type == CKA_ID ? id : (CK_ATTRIBUTE){0, NULL, 0};
    if ((r = ns_p11_run(t, NULL, "C_FindObjects", op_count, &c, NULL)) == 0)
        *n = c.n;
    return r;
}

struct gen_ctx {
    const ns_p11_keygen *spec;
    CK_ATTRIBUTE label;
    CK_ATTRIBUTE id; /* type 0 if the URI has no id= */
    CK_OBJECT_HANDLE made[2];
};

/* The template `attrs` followed by the label and, if the URI has one, the id. */
static CK_ULONG with_label_id(const CK_ATTRIBUTE *attrs, CK_ULONG n, const struct gen_ctx *g,
                              CK_ATTRIBUTE out[NS_P11_KEYGEN_ATTRS_MAX + 2])
{
    CK_ULONG m = 0;

    for (CK_ULONG i = 0; i < n; i++)
        out[m++] = attrs[i];
    out[m++] = g->label;
    if (g->id.type == CKA_ID)
        out[m++] = g->id;
    return m;
}

static CK_RV op_generate(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE unused, void *vctx)
{
    struct gen_ctx *g = vctx;
    const ns_p11_keygen *spec = g->spec;
    CK_MECHANISM m = {spec->mech, NULL, 0};
    CK_ATTRIBUTE a[NS_P11_KEYGEN_ATTRS_MAX + 2], b[NS_P11_KEYGEN_ATTRS_MAX + 2];
    CK_ULONG na = with_label_id(spec->attrs, spec->nattrs, g, a);

    (void)unused;
    if (spec->priv == NULL)
        return fn->C_GenerateKey(s, &m, a, na, &g->made[0]);
    return fn->C_GenerateKeyPair(s, &m, a, na, b, with_label_id(spec->priv, spec->npriv, g, b), &g->made[0],
                                 &g->made[1]);
}

int ns_p11_key_generate(const char *uri, const char *pin_env, unsigned sessions, const ns_p11_keygen *spec)
{
    ns_p11_token *t = NULL;
    ns_p11_uri *u = NULL;
    struct gen_ctx g;
    CK_ULONG existing = 0;
    int pair = spec->priv != NULL;
    int r = NS_E_INTERNAL;

    memset(&g, 0, sizeof(g));
    g.spec = spec;
    if (spec->nattrs > NS_P11_KEYGEN_ATTRS_MAX || spec->npriv > NS_P11_KEYGEN_ATTRS_MAX)
        return NS_E_INTERNAL;
    if ((r = ns_p11_uri_parse(uri, &u)) != 0)
        goto out;
    if ((r = ns_p11_uri_new_key_attrs(u, &g.label, &g.id)) != 0)
        goto out;
    if ((r = ns_p11_token_open(uri, pin_env, sessions, &t)) != 0)
        goto out;
    if ((r = ns_p11_token_require_mech(t, spec->mech, pair ? CKF_GENERATE_KEY_PAIR : CKF_GENERATE,
                                       spec->mech_name)) != 0)
        goto out;
    if ((r = count_label_or_id(t, g.label, g.id, &existing)) != 0)
        goto out;
    if (existing > 0) {
        ns_log(NS_LOG_ERROR, "token '%s' already has an object with this label or id ('%s'); nothing created",
               ns_p11_token_label(t), ns_p11_uri_safe_text(u));
        r = NS_E_EXISTS;
        goto out;
    }
    r = ns_p11_run(t, NULL, pair ? "C_GenerateKeyPair" : "C_GenerateKey", op_generate, &g, NULL);
out:
    ns_p11_token_close(t);
    ns_p11_uri_free(u);
    return r;
}
