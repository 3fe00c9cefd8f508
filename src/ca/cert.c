#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ca/cert.h"
#include "common/log.h"

#define BACKDATE 300 /* seconds: certificates start a little in the past, for clocks that lag */

int ns_cert_serial(ASN1_INTEGER **out)
{
    unsigned char b[16];
    BIGNUM *bn = NULL;
    ASN1_INTEGER *ai = NULL;

    if (RAND_bytes(b, sizeof(b)) != 1)
        return NS_E_CRYPTO;
    /* Positive (top bit clear) and always 16 octets long (next bit set): DER needs no padding octet. */
    b[0] = (unsigned char)((b[0] & 0x3f) | 0x40);
    if ((bn = BN_bin2bn(b, sizeof(b), NULL)) == NULL || (ai = BN_to_ASN1_INTEGER(bn, NULL)) == NULL) {
        BN_free(bn);
        return NS_E_NOMEM;
    }
    BN_free(bn);
    *out = ai;
    return 0;
}

int ns_cert_serial_hex(X509 *x, char out[41])
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *h = NULL;
    int r = NS_E_CRYPTO;

    if (bn != NULL && (h = BN_bn2hex(bn)) != NULL && strlen(h) <= 40) {
        for (size_t i = 0; h[i] != '\0'; i++)
            out[i] = (char)(h[i] >= 'A' && h[i] <= 'F' ? h[i] - 'A' + 'a' : h[i]);
        out[strlen(h)] = '\0';
        r = 0;
    }
    OPENSSL_free(h);
    BN_free(bn);
    return r;
}

/* ---- input checks ---- */

int ns_cert_check_cn(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return NS_E_INVAL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            return NS_E_INVAL;
    return 0;
}

/* LDH labels (RFC 1035/5890 A-labels), optionally a leading "*." wildcard; at most 253 characters. */
int ns_cert_check_dns(const char *s)
{
    size_t n = strlen(s), label = 0;

    if (n == 0 || n > 253)
        return NS_E_INVAL;
    if (n > 2 && s[0] == '*' && s[1] == '.')
        s += 2;
    for (size_t i = 0;; i++) {
        char ch = s[i];
        if (ch == '.' || ch == '\0') {
            if (label == 0 || s[i - 1] == '-')
                return NS_E_INVAL;
            label = 0;
            if (ch == '\0')
                return 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch == '-' && label > 0)))
            return NS_E_INVAL;
        if (++label > 63)
            return NS_E_INVAL;
    }
}

/* scheme ":" then visible ASCII only (RFC 3986 characters; no spaces or controls); at most 1024. */
int ns_cert_check_uri(const char *s)
{
    size_t n = strlen(s), i = 0;

    if (n == 0 || n > 1024)
        return NS_E_INVAL;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return NS_E_INVAL;
    while ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
           s[i] == '+' || s[i] == '-' || s[i] == '.')
        i++;
    if (s[i] != ':' || s[i + 1] == '\0')
        return NS_E_INVAL;
    for (; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return NS_E_INVAL;
    return 0;
}

int ns_cert_check_ip(const char *s)
{
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(s);
    ERR_clear_error();
    if (ip == NULL)
        return NS_E_INVAL;
    ASN1_OCTET_STRING_free(ip);
    return 0;
}

/* ---- building ---- */

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    int ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? 0 : NS_E_CRYPTO;
}

static int set_name(X509_NAME *name, const ns_dn *dn)
{
    static const struct {
        const char *field;
        size_t off;
    } order[] = {
        {"C", offsetof(ns_dn, c)}, {"ST", offsetof(ns_dn, st)}, {"L", offsetof(ns_dn, l)},
        {"O", offsetof(ns_dn, o)}, {"CN", offsetof(ns_dn, cn)},
    };
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        const char *v = *(const char *const *)((const char *)dn + order[i].off);
        if (v != NULL && X509_NAME_add_entry_by_txt(name, order[i].field, MBSTRING_UTF8,
                                                    (const unsigned char *)v, -1, -1, 0) != 1)
            return NS_E_CRYPTO;
    }
    return 0;
}

static int set_time(X509 *x, int64_t nb, int64_t na)
{
    ASN1_TIME *a = ASN1_TIME_set(NULL, (time_t)nb), *b = ASN1_TIME_set(NULL, (time_t)na);
    int ok = a != NULL && b != NULL && X509_set1_notBefore(x, a) == 1 && X509_set1_notAfter(x, b) == 1;
    ASN1_TIME_free(a);
    ASN1_TIME_free(b);
    return ok ? 0 : NS_E_CRYPTO;
}

/* The subject public key without OpenSSL's encoder (X509_set_pubkey costs more than a token signature in
 * OpenSSL 3.0): Ed25519 and EC keys are written from their raw public key (RFC 8410, RFC 5480); RSA keys
 * take the general path. */
static int set_spki(X509 *x, EVP_PKEY *pub)
{
    X509_PUBKEY *pk = X509_get_X509_PUBKEY(x);
    unsigned char *raw = NULL;
    size_t len = 0;
    int id = EVP_PKEY_get_base_id(pub);

    if (id == EVP_PKEY_ED25519) {
        if (EVP_PKEY_get_raw_public_key(pub, NULL, &len) != 1 || len != 32 ||
            (raw = OPENSSL_malloc(32)) == NULL || EVP_PKEY_get_raw_public_key(pub, raw, &len) != 1)
            goto fail;
        if (X509_PUBKEY_set0_param(pk, OBJ_nid2obj(NID_ED25519), V_ASN1_UNDEF, NULL, raw, (int)len) != 1)
            goto fail;
        return 0;
    }
    if (id == EVP_PKEY_EC) {
        char group[32];
        size_t gl = 0;
        int curve;
        if (EVP_PKEY_get_group_name(pub, group, sizeof(group), &gl) != 1)
            goto fail;
        curve = OBJ_sn2nid(group);
        if (curve == NID_undef ||
            EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0, &len) != 1 ||
            len == 0 || len > 133 || (raw = OPENSSL_malloc(len)) == NULL ||
            EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, raw, len, &len) != 1 ||
            raw[0] != 0x04)
            goto fail;
        if (X509_PUBKEY_set0_param(pk, OBJ_nid2obj(NID_X9_62_id_ecPublicKey), V_ASN1_OBJECT,
                                   OBJ_nid2obj(curve), raw, (int)len) != 1)
            goto fail;
        return 0;
    }
    return X509_set_pubkey(x, pub) == 1 ? 0 : NS_E_CRYPTO;
fail:
    OPENSSL_free(raw);
    return NS_E_CRYPTO;
}

/* The common start of every certificate: version 3, serial, names, validity, key. */
static int start(X509 **out, X509_NAME *issuer_name, const ns_dn *subject, EVP_PKEY *pub, int64_t nb,
                 int64_t na)
{
    X509 *x = X509_new();
    ASN1_INTEGER *serial = NULL;
    int r = NS_E_CRYPTO;

    if (x == NULL)
        return NS_E_NOMEM;
    if ((r = ns_cert_serial(&serial)) != 0)
        goto out;
    r = NS_E_CRYPTO;
    if (X509_set_version(x, X509_VERSION_3) != 1 || X509_set_serialNumber(x, serial) != 1)
        goto out;
    if ((r = set_spki(x, pub)) != 0)
        goto out;
    if ((r = set_name(X509_get_subject_name(x), subject)) != 0)
        goto out;
    if (X509_set_issuer_name(x, issuer_name != NULL ? issuer_name : X509_get_subject_name(x)) != 1) {
        r = NS_E_CRYPTO;
        goto out;
    }
    if ((r = set_time(x, nb, na)) != 0)
        goto out;
    *out = x;
    x = NULL;
    r = 0;
out:
    ASN1_INTEGER_free(serial);
    X509_free(x);
    return r;
}

static int sig_nid(const ns_signer *s, int *nid, int *ptype)
{
    *ptype = V_ASN1_UNDEF; /* RFC 5758 / RFC 8410: parameters absent */
    if (strcmp(s->type->evp_name, "ED25519") == 0)
        *nid = NID_ED25519;
    else if (strcmp(s->type->evp_name, "RSA") == 0) {
        *nid = NID_sha256WithRSAEncryption;
        *ptype = V_ASN1_NULL; /* RFC 4055: NULL parameters */
    } else if (ns_sig_ecdsa_field_len(s->type) == 48)
        *nid = NID_ecdsa_with_SHA384;
    else if (ns_sig_ecdsa_field_len(s->type) == 32)
        *nid = NID_ecdsa_with_SHA256;
    else
        return NS_E_INVAL;
    return 0;
}

/* Put a signature made elsewhere into x: sign its TBS with s and set the algorithm and the signature. *tbs
 * gets the TBS DER that was signed (for the self-check), *sig the signature as it stands in the certificate.
 *
 * Why the casts: OpenSSL has no public call that takes a signature made elsewhere. The TBS algorithm is set
 * through the pointer X509_get0_tbs_sigalg() returns and the outer algorithm and signature through
 * X509_get0_signature(), exactly what X509_sign() does inside; i2d_re_X509_tbs() then encodes the TBS
 * afresh (and caches that encoding, which i2d_X509 uses). */
static int sign_into(X509 *x, ns_signer *s, unsigned char **tbs, int *tbs_len, ns_buf **sig_out)
{
    X509_ALGOR *tbs_alg = (X509_ALGOR *)X509_get0_tbs_sigalg(x);
    const ASN1_BIT_STRING *csig = NULL;
    const X509_ALGOR *calg = NULL;
    ASN1_BIT_STRING *sig;
    X509_ALGOR *outer;
    ns_buf *sigbuf = NULL;
    int nid = 0, ptype = 0, r = NS_E_INTERNAL;

    if ((r = sig_nid(s, &nid, &ptype)) != 0)
        goto out;
    X509_get0_signature(&csig, &calg, x);
    sig = (ASN1_BIT_STRING *)csig;
    outer = (X509_ALGOR *)calg;
    r = NS_E_CRYPTO;
    if (X509_ALGOR_set0(tbs_alg, OBJ_nid2obj(nid), ptype, NULL) != 1 ||
        X509_ALGOR_set0(outer, OBJ_nid2obj(nid), ptype, NULL) != 1)
        goto out;
    if ((*tbs_len = i2d_re_X509_tbs(x, tbs)) <= 0)
        goto out;
    if ((r = ns_signer_sign(s, NS_SIG_DER, *tbs, (size_t)*tbs_len, &sigbuf)) != 0)
        goto out;
    r = NS_E_CRYPTO;
    if (ASN1_BIT_STRING_set(sig, sigbuf->data, (int)sigbuf->len) != 1)
        goto out;
    sig->flags = (sig->flags & ~0x07L) | ASN1_STRING_FLAG_BITS_LEFT; /* no unused bits */
    *sig_out = sigbuf;
    sigbuf = NULL;
    r = 0;
out:
    ns_buf_free(sigbuf);
    return r;
}

static int bad_signature(const ns_signer *s)
{
    ns_log(
        NS_LOG_ERROR,
        "the certificate signed by %s does not verify: the signature is bad (token fault?); nothing issued",
        s->desc);
    return NS_E_TOKEN;
}

/* CA certificates (rare): sign, then parse the whole certificate again and verify it with OpenSSL. */
static int sign_cert(X509 *x, ns_signer *s, EVP_PKEY *issuer_pub, X509 **out)
{
    unsigned char *tbs = NULL, *der = NULL;
    const unsigned char *p;
    ns_buf *sig = NULL;
    X509 *fresh = NULL;
    int tbs_len = 0, len, r = NS_E_INTERNAL;

    if ((r = sign_into(x, s, &tbs, &tbs_len, &sig)) != 0)
        goto out;
    r = NS_E_CRYPTO;
    if ((len = i2d_X509(x, &der)) <= 0)
        goto out;
    p = der;
    if ((fresh = d2i_X509(NULL, &p, len)) == NULL || p != der + len)
        goto out;
    if (X509_verify(fresh, issuer_pub) != 1) {
        r = bad_signature(s);
        goto out;
    }
    *out = fresh;
    fresh = NULL;
    r = 0;
out:
    ERR_clear_error();
    OPENSSL_free(tbs);
    OPENSSL_free(der);
    ns_buf_free(sig);
    X509_free(fresh);
    return r;
}

int ns_cert_make_ca(ns_signer *signer, X509 *issuer, EVP_PKEY *subject_pub, const ns_dn *dn,
                    unsigned path_len, int64_t not_before, int64_t not_after, X509 **out)
{
    X509 *x = NULL;
    X509V3_CTX ctx;
    char bc[64];
    int r = NS_E_INTERNAL;

    if (issuer == NULL && EVP_PKEY_eq(signer->pub, subject_pub) != 1) {
        ERR_clear_error();
        return NS_E_INVAL;
    }
    if ((r = start(&x, issuer != NULL ? X509_get_subject_name(issuer) : NULL, dn, subject_pub,
                   not_before - BACKDATE, not_after)) != 0)
        goto out;
    snprintf(bc, sizeof(bc), "critical,CA:TRUE,pathlen:%u", path_len);
    X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    if ((r = add_ext(x, &ctx, NID_basic_constraints, bc)) != 0 ||
        (r = add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature,keyCertSign,cRLSign")) != 0 ||
        (r = add_ext(x, &ctx, NID_subject_key_identifier, "hash")) != 0 ||
        (r = add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always")) != 0)
        goto out;
    r = sign_cert(x, signer, issuer != NULL ? X509_get0_pubkey(issuer) : subject_pub, out);
out:
    if (r == NS_E_CRYPTO)
        ns_log(NS_LOG_ERROR, "building the CA certificate failed in OpenSSL");
    ERR_clear_error();
    X509_free(x);
    return r;
}

static int push_gn(GENERAL_NAMES *gns, int type, const char *v)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = NULL;
    ASN1_OCTET_STRING *ip = NULL;

    if (gn == NULL)
        return NS_E_NOMEM;
    if (type == GEN_IPADD) {
        if ((ip = a2i_IPADDRESS(v)) == NULL)
            goto fail;
        GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
    } else {
        if ((ia5 = ASN1_IA5STRING_new()) == NULL || ASN1_STRING_set(ia5, v, (int)strlen(v)) != 1)
            goto fail;
        GENERAL_NAME_set0_value(gn, type, ia5);
    }
    if (sk_GENERAL_NAME_push(gns, gn) <= 0) {
        GENERAL_NAME_free(gn);
        return NS_E_NOMEM;
    }
    return 0;
fail:
    ASN1_IA5STRING_free(ia5);
    GENERAL_NAME_free(gn);
    return NS_E_INVAL;
}

/* subjectAltName built from GENERAL_NAME values, never from a config string, so a comma in a name cannot
 * smuggle in another entry. */
static int add_san(X509 *x, const ns_cert_req *req)
{
    GENERAL_NAMES *gns = sk_GENERAL_NAME_new_null();
    const ns_strv *lists[3] = {req->dns, req->ip, req->uri};
    const int types[3] = {GEN_DNS, GEN_IPADD, GEN_URI};
    size_t total = 0;
    int r = NS_E_NOMEM;

    if (gns == NULL)
        return NS_E_NOMEM;
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; lists[l] != NULL && i < lists[l]->n; i++) {
            if ((r = push_gn(gns, types[l], lists[l]->v[i])) != 0)
                goto out;
            total++;
        }
    r = 0;
    if (total > 0 && X509_add1_ext_i2d(x, NID_subject_alt_name, gns, 0, X509V3_ADD_DEFAULT) != 1)
        r = NS_E_CRYPTO;
out:
    GENERAL_NAMES_free(gns);
    return r;
}

/* The role extension: a non-critical extension whose value is a DER UTF8String. */
static int add_role(X509 *x, const char *oid, const char *role)
{
    ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
    ASN1_UTF8STRING *u = ASN1_UTF8STRING_new();
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext = NULL;
    unsigned char *der = NULL;
    int len, r = NS_E_CRYPTO;

    if (obj == NULL || u == NULL || os == NULL || ASN1_STRING_set(u, role, (int)strlen(role)) != 1)
        goto out;
    if ((len = i2d_ASN1_UTF8STRING(u, &der)) <= 0 || ASN1_OCTET_STRING_set(os, der, len) != 1)
        goto out;
    if ((ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os)) == NULL || X509_add_ext(x, ext, -1) != 1)
        goto out;
    r = 0;
out:
    ASN1_OBJECT_free(obj);
    ASN1_UTF8STRING_free(u);
    ASN1_OCTET_STRING_free(os);
    X509_EXTENSION_free(ext);
    OPENSSL_free(der);
    return r;
}

static int check_key(EVP_PKEY *pub)
{
    int id = EVP_PKEY_get_base_id(pub);
    if (id == EVP_PKEY_ED25519)
        return 0;
    if (id == EVP_PKEY_RSA)
        return EVP_PKEY_get_bits(pub) >= 2048 && EVP_PKEY_get_bits(pub) <= 8192 ? 0 : NS_E_INVAL;
    if (id == EVP_PKEY_EC) {
        char group[32];
        size_t n = 0;
        if (EVP_PKEY_get_group_name(pub, group, sizeof(group), &n) != 1)
            return NS_E_INVAL;
        return strcmp(group, "prime256v1") == 0 || strcmp(group, "secp384r1") == 0 ? 0 : NS_E_INVAL;
    }
    return NS_E_INVAL;
}

static int64_t asn1_time_secs(const ASN1_TIME *t)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return -1;
    return (int64_t)timegm(&tm);
}

static int subject_text(X509 *x, char **out)
{
    BIO *bio = BIO_new(BIO_s_mem());
    BUF_MEM *mem = NULL;
    int r = NS_E_CRYPTO;

    if (bio == NULL)
        return NS_E_NOMEM;
    if (X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        BIO_get_mem_ptr(bio, &mem);
        r = (*out = strndup(mem->data, mem->length)) == NULL ? NS_E_NOMEM : 0;
    }
    BIO_free(bio);
    return r;
}

void ns_issued_free(ns_issued *c)
{
    if (c == NULL)
        return;
    ns_buf_free(c->der);
    free(c->subject);
    free(c);
}

int ns_issued_pem(const ns_issued *c, ns_buf **out)
{
    BIO *bio = BIO_new(BIO_s_mem());
    BUF_MEM *mem = NULL;
    int r = NS_E_CRYPTO;

    if (bio == NULL)
        return NS_E_NOMEM;
    if (PEM_write_bio(bio, PEM_STRING_X509, "", c->der->data, (long)c->der->len) > 0) {
        BIO_get_mem_ptr(bio, &mem);
        r = ns_buf_from(mem->data, mem->length, mem->length, false, out);
    }
    BIO_free(bio);
    return r;
}

int ns_cert_issue(ns_signer *signer, X509 *ca, const ns_cert_req *req, ns_issued **out)
{
    X509 *x = NULL;
    ns_issued *c = NULL;
    unsigned char *tbs = NULL, *der = NULL;
    ns_buf *sig = NULL;
    int tbs_len = 0, der_len;
    X509V3_CTX ctx;
    ns_dn dn = {req->cn, req->tenant, NULL, NULL, NULL};
    int64_t ca_nb, ca_na, nb = req->not_before - BACKDATE;
    int r = NS_E_INVAL;

    if (check_key(req->pub) != 0) {
        ns_log(NS_LOG_ERROR, "the subject key must be Ed25519, ECDSA P-256/P-384 or RSA of 2048..8192 bits");
        goto out;
    }
    if (ns_cert_check_cn(req->cn) != 0 || req->tenant == NULL || ns_cert_check_cn(req->tenant) != 0) {
        ns_log(NS_LOG_ERROR, "common name and tenant must be 1..64 printable characters");
        goto out;
    }
    ca_nb = asn1_time_secs(X509_get0_notBefore(ca));
    ca_na = asn1_time_secs(X509_get0_notAfter(ca));
    if (nb < ca_nb)
        nb = ca_nb;
    if (req->not_after <= req->not_before || req->not_after > ca_na) {
        ns_log(NS_LOG_ERROR,
               "the certificate would outlive its CA certificate (which ends at %lld); use a shorter "
               "lifetime or rotate the CA",
               (long long)ca_na);
        goto out;
    }
    if ((r = start(&x, X509_get_subject_name(ca), &dn, req->pub, nb, req->not_after)) != 0)
        goto out;
    X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
    if ((r = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE")) != 0 ||
        (r = add_ext(x, &ctx, NID_key_usage,
                     EVP_PKEY_get_base_id(req->pub) == EVP_PKEY_RSA
                         ? "critical,digitalSignature,keyEncipherment"
                         : "critical,digitalSignature")) != 0 ||
        (r = add_ext(x, &ctx, NID_ext_key_usage,
                     req->kind == NS_CERT_SERVER ? "serverAuth" : "clientAuth")) != 0 ||
        (r = add_ext(x, &ctx, NID_subject_key_identifier, "hash")) != 0 ||
        (r = add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always")) != 0)
        goto out;
    if ((r = add_san(x, req)) != 0) {
        ns_log(NS_LOG_ERROR, "a subject alternative name is not valid");
        goto out;
    }
    if (req->role != NULL && (r = add_role(x, req->role_oid, req->role)) != 0)
        goto out;
    if ((r = sign_into(x, signer, &tbs, &tbs_len, &sig)) != 0)
        goto out;
    /* The self-check: the signature over exactly these TBS bytes, under the CA certificate's key. */
    if (ns_sig_verify(X509_get0_pubkey(ca), signer->type, NS_SIG_DER, tbs, (size_t)tbs_len, sig->data,
                      sig->len) != 0) {
        r = bad_signature(signer);
        goto out;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    r = NS_E_CRYPTO;
    if ((der_len = i2d_X509(x, &der)) <= 0)
        goto out;
    if ((r = ns_buf_from(der, (size_t)der_len, (size_t)der_len, false, &c->der)) != 0 ||
        (r = ns_cert_serial_hex(x, c->serial)) != 0 || (r = subject_text(x, &c->subject)) != 0)
        goto out;
    c->not_before = nb;
    c->not_after = req->not_after;
    *out = c;
    c = NULL;
    r = 0;
out:
    ERR_clear_error();
    OPENSSL_free(tbs);
    OPENSSL_free(der);
    ns_buf_free(sig);
    ns_issued_free(c);
    X509_free(x);
    return r;
}
