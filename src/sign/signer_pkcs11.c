#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>

#include "common/log.h"
#include "pkcs11/key.h"
#include "pkcs11/uri.h"
#include "sign/signer.h"

/* Token keys. ECDSA is CKM_ECDSA over a digest made here (SoftHSM and tpm2-pkcs11 both have it; the
 * CKM_ECDSA_SHA256 combination is rarer) and comes back as r || s. Ed25519 is CKM_EDDSA without
 * parameters (pure Ed25519, RFC 8032). RSA is CKM_SHA256_RSA_PKCS. */

/* DER of the curve OIDs, as CKA_EC_PARAMS holds them (RFC 5480; RFC 8410 for Ed25519). */
static const uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
static const uint8_t oid_ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
/* PKCS#11 3.0 also allows the curve name as a PrintableString (SoftHSM 2.6 accepts both). */
static const uint8_t str_ed25519[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r', 'd', 's', '2', '5', '5', '1', '9'};

struct p11signer {
    ns_p11_key *key;
    CK_MECHANISM_TYPE mech;
    const EVP_MD *prehash; /* ECDSA: the digest made before C_Sign */
};

struct sign_ctx {
    CK_MECHANISM_TYPE mech;
    const uint8_t *in;
    size_t in_len;
    uint8_t out[NS_SIG_MAX];
    CK_ULONG out_len;
};

static CK_RV op_sign(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, void *vctx)
{
    struct sign_ctx *c = vctx;
    CK_MECHANISM m = {c->mech, NULL, 0};
    CK_RV rv;

    if ((rv = fn->C_SignInit(s, &m, key)) != CKR_OK)
        return rv;
    /* One call with a buffer big enough for every supported key: C_Sign ends the operation whether it
     * succeeds or fails (except CKR_BUFFER_TOO_SMALL, which cannot happen here). */
    c->out_len = sizeof(c->out);
    return fn->C_Sign(s, (CK_BYTE_PTR)c->in, (CK_ULONG)c->in_len, c->out, &c->out_len);
}

static int p11_sign(ns_signer *s, const uint8_t *msg, size_t n, ns_buf *sig)
{
    struct p11signer *ps = s->impl;
    struct sign_ctx c;
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    char what[96];
    int r = NS_E_INTERNAL;

    memset(&c, 0, sizeof(c));
    c.mech = ps->mech;
    c.in = msg;
    c.in_len = n;
    if (ps->prehash != NULL) {
        if (EVP_Digest(msg, n, md, &md_len, ps->prehash, NULL) != 1)
            return NS_E_CRYPTO;
        c.in = md;
        c.in_len = md_len;
    }
    snprintf(what, sizeof(what), "C_Sign with %s", s->type->name);
    if ((r = ns_p11_run(ns_p11_key_token(ps->key), ps->key, what, op_sign, &c, NULL)) != 0)
        return r;
    if (c.out_len == 0 || c.out_len > sizeof(c.out)) {
        ns_log(NS_LOG_ERROR, "%s returned a signature of %lu bytes", s->desc, (unsigned long)c.out_len);
        return NS_E_TOKEN;
    }
    return ns_buf_append(sig, c.out, c.out_len);
}

static void p11_free(ns_signer *s)
{
    struct p11signer *ps = s->impl;
    if (ps == NULL)
        return;
    ns_p11_key_free(ps->key);
    free(ps);
}

static const ns_signer_ops p11_ops = {"pkcs11", p11_sign, p11_free};

/* CKA_EC_POINT is a DER OCTET STRING holding the point (PKCS#11 2.40); a few tokens return the bare
 * point. Accept both, but only when the length is exactly what the curve needs. */
static int ec_point(const unsigned char *v, size_t n, size_t want, const unsigned char **pt)
{
    if (n == want) {
        *pt = v;
        return 0;
    }
    if (want < 128 && n == want + 2 && v[0] == 0x04 && v[1] == want) {
        *pt = v + 2;
        return 0;
    }
    if (want >= 128 && want < 256 && n == want + 3 && v[0] == 0x04 && v[1] == 0x81 && v[2] == want) {
        *pt = v + 3;
        return 0;
    }
    return NS_E_TOKEN_OBJECT;
}

static int ec_public(const char *group, const unsigned char *pt, size_t n, EVP_PKEY **out)
{
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    int r = NS_E_TOKEN_OBJECT;

    if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, n) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto out;
    r = 0;
out:
    ERR_clear_error();
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    return r;
}

/* The URI of the public key that goes with the private key named by uri: the same text with a path
 * attribute "type=private" (RFC 7512 §2.3, the usual way to name a private key) made "type=public", since
 * ns_p11_key_find() refuses a URI whose type= names another class. New string in *out (free()). */
static int public_uri(const char *uri, char **out)
{
    size_t n = strlen(uri), path_end = strcspn(uri, "?");
    char *s = malloc(n + 1), *w;
    size_t i = 0;

    if (s == NULL)
        return NS_E_NOMEM;
    w = s;
    while (i < n) {
        /* at the start of a path attribute (after "pkcs11:" or ';') */
        if (i >= 7 && i < path_end && (i == 7 || uri[i - 1] == ';') && path_end - i >= 12 &&
            strncmp(uri + i, "type=private", 12) == 0 && (i + 12 == path_end || uri[i + 12] == ';')) {
            memcpy(w, "type=public", 11);
            w += 11;
            i += 12;
            continue;
        }
        *w++ = uri[i++];
    }
    *w = '\0';
    *out = s;
    return 0;
}

/* The public key of an EC or Edwards key: from the public key object with the same label/id. */
static int ecx_public(ns_p11_token *t, const char *uri, CK_KEY_TYPE kt, EVP_PKEY **out)
{
    ns_p11_key *pubk = NULL;
    unsigned char *params = NULL, *point = NULL;
    const unsigned char *pt = NULL;
    size_t params_len = 0, point_len = 0;
    char *puri = NULL;
    int r = NS_E_INTERNAL;

    if (strncmp(uri, "pkcs11:", 7) != 0)
        return NS_E_INVAL;
    if ((r = public_uri(uri, &puri)) != 0)
        return r;
    if ((r = ns_p11_key_find(t, puri, CKO_PUBLIC_KEY, &pubk)) != 0) {
        ns_log(NS_LOG_ERROR, "the signing key needs its public key object in the token (same label/id)");
        goto out;
    }
    if ((r = ns_p11_key_attr(pubk, CKA_EC_PARAMS, &params, &params_len)) != 0 ||
        (r = ns_p11_key_attr(pubk, CKA_EC_POINT, &point, &point_len)) != 0)
        goto out;
    r = NS_E_TOKEN_OBJECT;
    if (kt == CKK_EC_EDWARDS) {
        if (!((params_len == sizeof(oid_ed25519) && memcmp(params, oid_ed25519, params_len) == 0) ||
              (params_len == sizeof(str_ed25519) && memcmp(params, str_ed25519, params_len) == 0))) {
            ns_log(NS_LOG_ERROR, "'%s': only Ed25519 Edwards keys are supported", ns_p11_key_uri(pubk));
            goto out;
        }
        if (ec_point(point, point_len, 32, &pt) != 0 ||
            (*out = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pt, 32)) == NULL)
            goto bad_point;
    } else {
        const char *group;
        size_t fl;
        if (params_len == sizeof(oid_p256) && memcmp(params, oid_p256, params_len) == 0) {
            group = "P-256";
            fl = 32;
        } else if (params_len == sizeof(oid_p384) && memcmp(params, oid_p384, params_len) == 0) {
            group = "P-384";
            fl = 48;
        } else {
            ns_log(NS_LOG_ERROR, "'%s': only P-256 and P-384 EC keys are supported", ns_p11_key_uri(pubk));
            goto out;
        }
        if (ec_point(point, point_len, 1 + 2 * fl, &pt) != 0 || ec_public(group, pt, 1 + 2 * fl, out) != 0)
            goto bad_point;
    }
    r = 0;
    goto out;
bad_point:
    ns_log(NS_LOG_ERROR, "'%s': CKA_EC_POINT is not a valid public key", ns_p11_key_uri(pubk));
out:
    ERR_clear_error();
    free(puri);
    free(params);
    free(point);
    ns_p11_key_free(pubk);
    return r;
}

int ns_signer_pkcs11_open(const char *uri, const char *pin_env, unsigned sessions, ns_signer **out)
{
    ns_p11_token *t = NULL;
    ns_signer *s = NULL;
    struct p11signer *ps = NULL;
    unsigned char *v = NULL;
    size_t len = 0;
    CK_KEY_TYPE kt;
    const char *mech_name;
    int r = NS_E_INTERNAL;

    if ((s = calloc(1, sizeof(*s))) == NULL || (ps = calloc(1, sizeof(*ps))) == NULL) {
        free(s);
        return NS_E_NOMEM;
    }
    s->impl = ps;
    s->ops = &p11_ops;
    s->raw_ecdsa = 1;
    if ((r = ns_p11_token_open(uri, pin_env, sessions, &t)) != 0)
        goto out;
    if ((r = ns_p11_key_find(t, uri, CKO_PRIVATE_KEY, &ps->key)) != 0)
        goto out;
    if ((s->desc = strdup(ns_p11_key_uri(ps->key))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = ns_p11_key_attr(ps->key, CKA_KEY_TYPE, &v, &len)) != 0)
        goto out;
    if (len != sizeof(kt)) {
        r = NS_E_TOKEN_OBJECT;
        goto out;
    }
    memcpy(&kt, v, sizeof(kt));
    if (kt == CKK_RSA)
        r = ns_p11_key_rsa_public(ps->key, &s->pub);
    else if (kt == CKK_EC || kt == CKK_EC_EDWARDS)
        r = ecx_public(t, uri, kt, &s->pub);
    else {
        ns_log(NS_LOG_ERROR, "'%s' is not an EC, Ed25519 or RSA key", s->desc);
        r = NS_E_TOKEN_OBJECT;
    }
    if (r != 0)
        goto out;
    if ((r = ns_keytype_classify(s->pub, &s->type)) != 0 || s->type->jws_alg == NULL) {
        ns_log(NS_LOG_ERROR, "'%s' is a key type that cannot sign here", s->desc);
        r = NS_E_TOKEN_OBJECT;
        goto out;
    }
    if ((r = ns_keytype_thumbprint(s->pub, s->id)) != 0)
        goto out;
    if (kt == CKK_RSA) {
        ps->mech = CKM_SHA256_RSA_PKCS;
        mech_name = "CKM_SHA256_RSA_PKCS";
    } else if (kt == CKK_EC_EDWARDS) {
        ps->mech = CKM_EDDSA;
        mech_name = "CKM_EDDSA";
    } else {
        ps->mech = CKM_ECDSA;
        mech_name = "CKM_ECDSA";
        ps->prehash = ns_sig_ecdsa_field_len(s->type) == 48 ? EVP_sha384() : EVP_sha256();
    }
    if ((r = ns_p11_token_require_mech(t, ps->mech, CKF_SIGN, mech_name)) != 0)
        goto out;
    *out = s;
    s = NULL;
    r = 0;
out:
    free(v);
    ns_p11_token_close(t); /* the key holds its own reference */
    ns_signer_free(s);
    return r;
}

int ns_signer_pkcs11_require_eddsa(const char *uri, const char *pin_env, unsigned sessions)
{
    ns_p11_token *t = NULL;
    int r;

    if ((r = ns_p11_token_open(uri, pin_env, sessions, &t)) != 0)
        return r;
    r = ns_p11_token_require_mech(t, CKM_EDDSA, CKF_SIGN, "CKM_EDDSA (Ed25519)");
    ns_p11_token_close(t);
    return r;
}

struct exists_ctx {
    CK_ATTRIBUTE *attrs;
    CK_ULONG n;
    CK_ULONG found;
};

static CK_RV op_exists(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE unused, void *vctx)
{
    struct exists_ctx *e = vctx;
    CK_OBJECT_CLASS priv = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE t[8];
    CK_OBJECT_HANDLE hs[4];
    CK_ULONG nt = 0;
    CK_RV rv;

    (void)unused;
    t[nt++] = (CK_ATTRIBUTE){CKA_CLASS, &priv, sizeof(priv)};
    for (CK_ULONG i = 0; i < e->n && nt < 8; i++)
        if (e->attrs[i].type == CKA_LABEL || e->attrs[i].type == CKA_ID)
            t[nt++] = e->attrs[i];
    if ((rv = fn->C_FindObjectsInit(s, t, nt)) != CKR_OK)
        return rv;
    rv = fn->C_FindObjects(s, hs, 4, &e->found);
    (void)fn->C_FindObjectsFinal(s);
    return rv;
}

int ns_signer_pkcs11_exists(const char *uri, const char *pin_env, unsigned sessions, int *found)
{
    ns_p11_token *t = NULL;
    ns_p11_uri *u = NULL;
    struct exists_ctx e;
    int r = NS_E_INTERNAL;

    memset(&e, 0, sizeof(e));
    if ((r = ns_p11_uri_parse(uri, &u)) != 0)
        goto out;
    if (!ns_p11_uri_names_object(u)) {
        ns_log(NS_LOG_ERROR, "'%s' names no key: add object= or id=", ns_p11_uri_safe_text(u));
        r = NS_E_INVAL;
        goto out;
    }
    e.attrs = ns_p11_uri_object_attrs(u, &e.n);
    if ((r = ns_p11_token_open(uri, pin_env, sessions, &t)) != 0)
        goto out;
    if ((r = ns_p11_run(t, NULL, "C_FindObjects", op_exists, &e, NULL)) != 0)
        goto out;
    *found = (int)e.found;
out:
    ns_p11_token_close(t);
    ns_p11_uri_free(u);
    return r;
}

/* ---- generation ---- */

int ns_signer_pkcs11_generate(const char *uri, const char *type_name, const char *pin_env, unsigned sessions)
{
    const ns_keytype *type = ns_keytype_find(type_name);
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG bits;
    CK_BYTE e65537[] = {1, 0, 1};
    CK_ATTRIBUTE pub[6] = {
        {CKA_TOKEN, &yes, 1},
        {CKA_VERIFY, &yes, 1},
        {CKA_ENCRYPT, &no, 1},
        {CKA_WRAP, &no, 1},
    };
    CK_ATTRIBUTE priv[] = {
        {CKA_TOKEN, &yes, 1}, {CKA_PRIVATE, &yes, 1}, {CKA_SENSITIVE, &yes, 1}, {CKA_EXTRACTABLE, &no, 1},
        {CKA_SIGN, &yes, 1},  {CKA_DECRYPT, &no, 1},  {CKA_UNWRAP, &no, 1},     {CKA_DERIVE, &no, 1},
    };
    ns_p11_keygen spec = {CKM_EC_KEY_PAIR_GEN,           "CKM_EC_KEY_PAIR_GEN", pub, 5, priv,
                          sizeof(priv) / sizeof(priv[0])};

    if (type == NULL || type->jws_alg == NULL) {
        ns_log(NS_LOG_ERROR,
               "'%.32s' is not a signing key type (ed25519, ecdsa-p256, ecdsa-p384, rsa-2048, "
               "rsa-3072, rsa-4096)",
               type_name);
        return NS_E_USAGE;
    }
    bits = type->bits;
    if (strcmp(type->evp_name, "RSA") == 0) {
        spec.mech = CKM_RSA_PKCS_KEY_PAIR_GEN;
        spec.mech_name = "CKM_RSA_PKCS_KEY_PAIR_GEN";
        pub[4] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
        pub[5] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, e65537, sizeof(e65537)};
        spec.nattrs = 6;
    } else if (strcmp(type->evp_name, "ED25519") == 0) {
        spec.mech = CKM_EC_EDWARDS_KEY_PAIR_GEN;
        spec.mech_name = "CKM_EC_EDWARDS_KEY_PAIR_GEN";
        pub[4] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid_ed25519, sizeof(oid_ed25519)};
    } else if (strcmp(type->group, "P-384") == 0) {
        pub[4] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid_p384, sizeof(oid_p384)};
    } else {
        pub[4] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid_p256, sizeof(oid_p256)};
    }
    return ns_p11_key_generate(uri, pin_env, sessions, &spec);
}
