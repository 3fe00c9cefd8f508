#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "sign/signer.h"

/* A software key: EVP_DigestSign with the algorithm the key type implies. ECDSA comes out DER. */

static int soft_sign(ns_signer *s, const uint8_t *msg, size_t n, ns_buf *sig)
{
    EVP_PKEY *pkey = s->impl;
    EVP_MD_CTX *ctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    const EVP_MD *md = NULL;
    size_t len = 0, before = sig->len;
    uint8_t *w = NULL;
    int r = NS_E_INTERNAL;

    if (strcmp(s->type->evp_name, "ED25519") != 0)
        md = (s->type->group != NULL && strcmp(s->type->group, "P-384") == 0) ? EVP_sha384() : EVP_sha256();
    if ((ctx = EVP_MD_CTX_new()) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    r = NS_E_CRYPTO;
    if (EVP_DigestSignInit(ctx, &pctx, md, NULL, pkey) != 1)
        goto out;
    if (strcmp(s->type->evp_name, "RSA") == 0 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
        goto out;
    if (EVP_DigestSign(ctx, NULL, &len, msg, n) != 1 || len == 0 || len > NS_SIG_MAX)
        goto out;
    if ((r = ns_buf_extend(sig, len, &w)) != 0)
        goto out;
    if (EVP_DigestSign(ctx, w, &len, msg, n) != 1) {
        ns_buf_truncate(sig, before);
        r = NS_E_CRYPTO;
        goto out;
    }
    ns_buf_truncate(sig, before + len); /* ECDSA DER may be shorter than the maximum */
    r = 0;
out:
    if (r == NS_E_CRYPTO) {
        ns_log(NS_LOG_ERROR, "signing with %s failed in OpenSSL", s->desc);
        ERR_clear_error();
    }
    EVP_MD_CTX_free(ctx);
    return r;
}

static void soft_free(ns_signer *s)
{
    EVP_PKEY_free(s->impl);
}

static const ns_signer_ops soft_ops = {"software", soft_sign, soft_free};

int ns_signer_soft_new(EVP_PKEY *pkey, ns_signer **out)
{
    ns_signer *s = NULL;
    unsigned char *der = NULL;
    const unsigned char *p;
    char desc[128];
    int len, r = NS_E_INTERNAL;

    if ((s = calloc(1, sizeof(*s))) == NULL)
        return NS_E_NOMEM;
    if ((r = ns_keytype_classify(pkey, &s->type)) != 0)
        goto out;
    if (s->type->jws_alg == NULL) {
        r = NS_E_INVAL;
        goto out;
    }
    /* The public half on its own, so that verification never touches the private key. */
    r = NS_E_CRYPTO;
    if ((len = i2d_PUBKEY(pkey, &der)) <= 0)
        goto out;
    p = der;
    if ((s->pub = d2i_PUBKEY(NULL, &p, len)) == NULL)
        goto out;
    if ((r = ns_keytype_thumbprint(s->pub, s->id)) != 0)
        goto out;
    snprintf(desc, sizeof(desc), "software %s key %s", s->type->name, s->id);
    if ((s->desc = strdup(desc)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if (EVP_PKEY_up_ref(pkey) != 1) {
        r = NS_E_CRYPTO;
        goto out;
    }
    s->impl = pkey;
    s->ops = &soft_ops;
    *out = s;
    s = NULL;
    r = 0;
out:
    OPENSSL_free(der);
    ns_signer_free(s);
    return r;
}
