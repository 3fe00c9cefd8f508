#include "config.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "common/log.h"
#include "service/authz.h"

/* The single entry of nid in name, as text (NS_E_FORMAT if there is not exactly one, or it is not
 * printable). */
static int one_entry(X509_NAME *name, int nid, char *out, size_t n)
{
    int i = X509_NAME_get_index_by_NID(name, nid, -1);
    X509_NAME_ENTRY *e;
    ASN1_STRING *s;
    int len;

    if (i < 0 || X509_NAME_get_index_by_NID(name, nid, i) >= 0)
        return NS_E_FORMAT;
    if ((e = X509_NAME_get_entry(name, i)) == NULL || (s = X509_NAME_ENTRY_get_data(e)) == NULL)
        return NS_E_FORMAT;
    len = ASN1_STRING_length(s);
    if (len <= 0 || (size_t)len >= n)
        return NS_E_FORMAT;
    memcpy(out, ASN1_STRING_get0_data(s), (size_t)len);
    out[len] = '\0';
    for (int k = 0; k < len; k++)
        if ((unsigned char)out[k] < 0x20 || (unsigned char)out[k] > 0x7e)
            return NS_E_FORMAT;
    return 0;
}

int ns_authz_role(X509 *cert, const char *role_oid, char *out, size_t n)
{
    ASN1_OBJECT *obj = NULL;
    ASN1_UTF8STRING *u = NULL;
    X509_EXTENSION *ext;
    const ASN1_OCTET_STRING *data;
    const unsigned char *p;
    int idx, len, r = NS_E_FORMAT;

    if ((obj = OBJ_txt2obj(role_oid, 1)) == NULL)
        return NS_E_INTERNAL;
    if ((idx = X509_get_ext_by_OBJ(cert, obj, -1)) < 0) {
        r = NS_E_NOT_FOUND;
        goto out;
    }
    if (X509_get_ext_by_OBJ(cert, obj, idx) >= 0) /* twice */
        goto out;
    if ((ext = X509_get_ext(cert, idx)) == NULL || (data = X509_EXTENSION_get_data(ext)) == NULL)
        goto out;
    p = ASN1_STRING_get0_data(data);
    if ((u = d2i_ASN1_UTF8STRING(NULL, &p, ASN1_STRING_length(data))) == NULL ||
        p != ASN1_STRING_get0_data(data) + ASN1_STRING_length(data))
        goto out;
    len = ASN1_STRING_length(u);
    if (len <= 0 || (size_t)len >= n)
        goto out;
    memcpy(out, ASN1_STRING_get0_data(u), (size_t)len);
    out[len] = '\0';
    r = strlen(out) == (size_t)len ? 0 : NS_E_FORMAT;
out:
    ASN1_UTF8STRING_free(u);
    ASN1_OBJECT_free(obj);
    return r;
}

/* Verified chains, remembered: X509_verify_cert costs an ECDSA verification (~90 us for P-256) on every
 * request of a keep-alive connection otherwise. A slot holds the SHA-256 of a certificate that chained to
 * `trust` (a reference is held, so a replaced bundle's store cannot come back at the same address) and is
 * trusted again without the chain walk until min(its notAfter, AUTHZ_CACHE_SECONDS from the check). Only
 * successes are remembered; names, role and validity are checked on every request. */
#define AUTHZ_SLOTS         256
#define AUTHZ_CACHE_SECONDS 60

typedef struct verified {
    unsigned char md[32];
    X509_STORE *trust;
    time_t until;
} verified;

static verified slots[AUTHZ_SLOTS];
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;

static int chain_remembered(const unsigned char md[32], X509_STORE *trust, time_t now)
{
    verified *v = &slots[md[0] % AUTHZ_SLOTS];
    int hit;

    pthread_mutex_lock(&slots_mu);
    hit = v->trust == trust && now < v->until && CRYPTO_memcmp(v->md, md, 32) == 0;
    pthread_mutex_unlock(&slots_mu);
    return hit;
}

static void chain_remember(const unsigned char md[32], X509_STORE *trust, X509 *cert, time_t now)
{
    verified *v = &slots[md[0] % AUTHZ_SLOTS];
    time_t until = now + AUTHZ_CACHE_SECONDS;
    X509_STORE *old = NULL;
    int day = 0, sec = 0;

    /* Never past the certificate's own end. */
    if (ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notAfter(cert)) == 1) {
        time_t left = (time_t)day * 86400 + sec;
        if (left < AUTHZ_CACHE_SECONDS)
            until = now + (left > 0 ? left : 0);
    } else {
        return;
    }
    if (X509_STORE_up_ref(trust) != 1)
        return;
    pthread_mutex_lock(&slots_mu);
    old = v->trust;
    memcpy(v->md, md, 32);
    v->trust = trust;
    v->until = until;
    pthread_mutex_unlock(&slots_mu);
    X509_STORE_free(old);
}

/* Within validity right now (what X509_verify_cert checks too, done here for remembered chains). */
static int in_validity(X509 *cert)
{
    return X509_cmp_current_time(X509_get0_notBefore(cert)) < 0 &&
           X509_cmp_current_time(X509_get0_notAfter(cert)) > 0;
}

int ns_authz_check(X509 *cert, STACK_OF(X509) * chain, X509_STORE *trust, const char *role_oid,
                   const char *role, ns_peer *peer)
{
    X509_STORE_CTX *vc = NULL;
    unsigned char md[32];
    unsigned int md_len = 0;
    int have_md;
    time_t now;
    int r = NS_E_PERM, err;

    memset(peer, 0, sizeof(*peer));
    if (cert == NULL) {
        ns_log(NS_LOG_INFO, "authz: no client certificate");
        goto out;
    }
    if (trust == NULL) {
        r = NS_E_INTERNAL;
        goto out;
    }
    (void)one_entry(X509_get_subject_name(cert), NID_commonName, peer->cn, sizeof(peer->cn));
    (void)one_entry(X509_get_subject_name(cert), NID_organizationName, peer->tenant, sizeof(peer->tenant));
    now = time(NULL);
    have_md = X509_digest(cert, EVP_sha256(), md, &md_len) == 1 && md_len == sizeof(md);
    if (have_md && chain_remembered(md, trust, now)) {
        if (!in_validity(cert)) {
            ns_log(NS_LOG_INFO, "authz: client certificate refused: expired or not yet valid");
            goto out;
        }
    } else {
        if ((vc = X509_STORE_CTX_new()) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
        if (X509_STORE_CTX_init(vc, trust, cert, chain) != 1 ||
            X509_STORE_CTX_set_purpose(vc, X509_PURPOSE_SSL_CLIENT) != 1) {
            r = NS_E_CRYPTO;
            goto out;
        }
        if (X509_verify_cert(vc) != 1) {
            err = X509_STORE_CTX_get_error(vc);
            ns_log(NS_LOG_INFO, "authz: client certificate refused: %s", X509_verify_cert_error_string(err));
            goto out;
        }
        if (have_md)
            chain_remember(md, trust, cert, now);
    }
    if (one_entry(X509_get_subject_name(cert), NID_commonName, peer->cn, sizeof(peer->cn)) != 0 ||
        one_entry(X509_get_subject_name(cert), NID_organizationName, peer->tenant, sizeof(peer->tenant)) !=
            0) {
        ns_log(NS_LOG_INFO, "authz: client certificate refused: not exactly one CN and one O");
        goto out;
    }
    if (ns_authz_role(cert, role_oid, peer->role, sizeof(peer->role)) != 0) {
        ns_log(NS_LOG_INFO, "authz: client certificate without a valid role extension");
        r = NS_E_CLAIMS;
        goto out;
    }
    if (strcmp(peer->role, role) != 0) {
        ns_log(NS_LOG_INFO, "authz: role %s where %s is needed", peer->role, role);
        r = NS_E_CLAIMS;
        goto out;
    }
    if (have_md) {
        memcpy(peer->fp, md, sizeof(md));
        peer->have_fp = 1;
    }
    r = 0;
out:
    X509_STORE_CTX_free(vc);
    return r;
}
