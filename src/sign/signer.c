#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "common/log.h"
#include "sign/signer.h"

size_t ns_sig_ecdsa_field_len(const ns_keytype *t)
{
    if (t == NULL || t->group == NULL)
        return 0;
    if (strcmp(t->group, "P-256") == 0)
        return 32;
    if (strcmp(t->group, "P-384") == 0)
        return 48;
    return 0;
}

/* Both conversions go through OpenSSL's ECDSA_SIG so that DER is only ever written and read by it. */
int ns_sig_ecdsa_raw_to_der(const uint8_t *rs, size_t n, size_t field_len, ns_buf *out)
{
    ECDSA_SIG *sig = NULL;
    BIGNUM *r = NULL, *s = NULL;
    unsigned char *der = NULL;
    int len, rc = NS_E_INTERNAL;

    if (field_len == 0 || n != 2 * field_len)
        return NS_E_INTEGRITY;
    if ((sig = ECDSA_SIG_new()) == NULL || (r = BN_bin2bn(rs, (int)field_len, NULL)) == NULL ||
        (s = BN_bin2bn(rs + field_len, (int)field_len, NULL)) == NULL) {
        rc = NS_E_NOMEM;
        goto out;
    }
    if (ECDSA_SIG_set0(sig, r, s) != 1) {
        rc = NS_E_CRYPTO;
        goto out;
    }
    r = s = NULL;
    if ((len = i2d_ECDSA_SIG(sig, &der)) <= 0) {
        rc = NS_E_CRYPTO;
        goto out;
    }
    rc = ns_buf_append(out, der, (size_t)len);
out:
    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return rc;
}

int ns_sig_ecdsa_der_to_raw(const uint8_t *der, size_t n, size_t field_len, ns_buf *out)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = NULL;
    uint8_t *w = NULL;
    unsigned char *re = NULL;
    int len, rc = NS_E_INTEGRITY;

    if (field_len == 0 || n > 256)
        return NS_E_INTEGRITY;
    if ((sig = d2i_ECDSA_SIG(NULL, &p, (long)n)) == NULL || p != der + n)
        goto out;
    /* Only the canonical encoding: re-encoding must give the same bytes (no BER leniency). */
    if ((len = i2d_ECDSA_SIG(sig, &re)) <= 0 || (size_t)len != n || memcmp(re, der, n) != 0)
        goto out;
    if (BN_num_bytes(ECDSA_SIG_get0_r(sig)) > (int)field_len ||
        BN_num_bytes(ECDSA_SIG_get0_s(sig)) > (int)field_len)
        goto out;
    if ((rc = ns_buf_extend(out, 2 * field_len, &w)) != 0)
        goto out;
    if (BN_bn2binpad(ECDSA_SIG_get0_r(sig), w, (int)field_len) < 0 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(sig), w + field_len, (int)field_len) < 0) {
        ns_buf_truncate(out, out->len - 2 * field_len);
        rc = NS_E_CRYPTO;
        goto out;
    }
    rc = 0;
out:
    OPENSSL_free(re);
    ECDSA_SIG_free(sig);
    return rc;
}

static const EVP_MD *type_md(const ns_keytype *t)
{
    if (strcmp(t->evp_name, "ED25519") == 0)
        return NULL; /* pure Ed25519: no pre-hash */
    if (t->group != NULL && strcmp(t->group, "P-384") == 0)
        return EVP_sha384();
    return EVP_sha256();
}

int ns_signer_sign(ns_signer *s, enum ns_sig_enc enc, const uint8_t *msg, size_t n, ns_buf **sig)
{
    ns_buf *native = NULL, *conv = NULL;
    size_t fl = ns_sig_ecdsa_field_len(s->type);
    int r = NS_E_INTERNAL;

    if ((r = ns_buf_new(NS_SIG_MAX, false, &native)) != 0)
        goto out;
    if ((r = s->ops->sign(s, msg, n, native)) != 0)
        goto out;
    if (fl != 0 && (enc == NS_SIG_RAW) != (s->raw_ecdsa != 0)) {
        if ((r = ns_buf_new(NS_SIG_MAX, false, &conv)) != 0)
            goto out;
        r = enc == NS_SIG_RAW ? ns_sig_ecdsa_der_to_raw(native->data, native->len, fl, conv)
                              : ns_sig_ecdsa_raw_to_der(native->data, native->len, fl, conv);
        if (r != 0) {
            /* The back-end gave bytes that are not a signature of this size: a token fault. */
            ns_log(NS_LOG_ERROR, "%s returned a malformed ECDSA signature", s->desc);
            r = NS_E_TOKEN;
            goto out;
        }
        *sig = conv;
        conv = NULL;
    } else {
        *sig = native;
        native = NULL;
    }
    r = 0;
out:
    ns_buf_free(native);
    ns_buf_free(conv);
    return r;
}

int ns_sig_verify(EVP_PKEY *pub, const ns_keytype *t, enum ns_sig_enc enc, const uint8_t *msg, size_t n,
                  const uint8_t *sig, size_t sig_len)
{
    EVP_MD_CTX *ctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    ns_buf *der = NULL;
    size_t fl = ns_sig_ecdsa_field_len(t);
    int r = NS_E_INTERNAL;

    if (fl != 0 && enc == NS_SIG_RAW) {
        if ((r = ns_buf_new(NS_SIG_MAX, false, &der)) != 0)
            goto out;
        if ((r = ns_sig_ecdsa_raw_to_der(sig, sig_len, fl, der)) != 0)
            goto out;
        sig = der->data;
        sig_len = der->len;
    }
    if ((ctx = EVP_MD_CTX_new()) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if (EVP_DigestVerifyInit(ctx, &pctx, type_md(t), NULL, pub) != 1) {
        r = NS_E_CRYPTO;
        goto out;
    }
    if (strcmp(t->evp_name, "RSA") == 0 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
        r = NS_E_CRYPTO;
        goto out;
    }
    r = EVP_DigestVerify(ctx, sig, sig_len, msg, n) == 1 ? 0 : NS_E_INTEGRITY;
out:
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    ns_buf_free(der);
    return r;
}

void ns_signer_free(ns_signer *s)
{
    if (s == NULL)
        return;
    if (s->ops != NULL && s->ops->free != NULL)
        s->ops->free(s);
    EVP_PKEY_free(s->pub);
    free(s->desc);
    free(s);
}
