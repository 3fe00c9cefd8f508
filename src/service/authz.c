#include "ns-build.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "ca/cert.h"
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

/* Accepted certificates, remembered per certificate *object*: a keep-alive connection presents the same X509
 * on every request, and its SHA-256 (an i2d and a hash), its names, its role extension and its validity
 * dates are the same on every request. A slot holds a reference to the X509 (so while it is in the slot no
 * other certificate can have its address) and to the trust store it chained to, what was read from it, and
 * the same deadline as the chain slots above. On a hit, the validity dates (as numbers) and the role are
 * still compared on every request; only parsing is skipped. */
typedef struct parsed {
    X509 *cert;
    X509_STORE *trust;
    time_t until, not_before, not_after;
    char role_oid[64];
    ns_peer peer;
} parsed;

static parsed objs[AUTHZ_SLOTS];
static pthread_mutex_t objs_mu = PTHREAD_MUTEX_INITIALIZER;

static parsed *obj_slot(const X509 *cert)
{
    return &objs[((uintptr_t)cert >> 4) % AUTHZ_SLOTS];
}

/* 1 and *peer filled when cert (this object) was accepted for trust and role_oid, and that is still
 * remembered. */
static int obj_remembered(X509 *cert, X509_STORE *trust, const char *role_oid, time_t now, ns_peer *peer,
                          time_t *nb, time_t *na)
{
    parsed *p = obj_slot(cert);
    int hit;

    pthread_mutex_lock(&objs_mu);
    hit = p->cert == cert && p->trust == trust && now < p->until && strcmp(p->role_oid, role_oid) == 0;
    if (hit) {
        *peer = p->peer;
        *nb = p->not_before;
        *na = p->not_after;
    }
    pthread_mutex_unlock(&objs_mu);
    return hit;
}

static int asn1_time_t(const ASN1_TIME *t, time_t *out)
{
    struct tm tm;

    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    *out = timegm(&tm);
    return 1;
}

static void obj_remember(X509 *cert, X509_STORE *trust, const char *role_oid, time_t now, const ns_peer *peer)
{
    parsed *p = obj_slot(cert);
    X509 *old_cert;
    X509_STORE *old_trust;
    time_t nb, na;

    if (strlen(role_oid) >= sizeof(p->role_oid) || !asn1_time_t(X509_get0_notBefore(cert), &nb) ||
        !asn1_time_t(X509_get0_notAfter(cert), &na))
        return;
    if (X509_up_ref(cert) != 1)
        return;
    if (X509_STORE_up_ref(trust) != 1) {
        X509_free(cert);
        return;
    }
    pthread_mutex_lock(&objs_mu);
    old_cert = p->cert;
    old_trust = p->trust;
    p->cert = cert;
    p->trust = trust;
    p->until = now + AUTHZ_CACHE_SECONDS < na ? now + AUTHZ_CACHE_SECONDS : na;
    p->not_before = nb;
    p->not_after = na;
    strcpy(p->role_oid, role_oid);
    p->peer = *peer;
    pthread_mutex_unlock(&objs_mu);
    X509_free(old_cert);
    X509_STORE_free(old_trust);
}

int ns_authz_check(X509 *cert, STACK_OF(X509) * chain, X509_STORE *trust, const char *role_oid,
                   const char *role, ns_peer *peer)
{
    X509_STORE_CTX *vc = NULL;
    unsigned char md[32];
    unsigned int md_len = 0;
    int have_md;
    time_t now, nb, na;
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
    now = time(NULL);
    if (obj_remembered(cert, trust, role_oid, now, peer, &nb, &na)) {
        /* The same checks as below, on what was read from this certificate object. */
        if (!(nb < now && now < na)) {
            ns_log(NS_LOG_INFO, "authz: client certificate refused: expired or not yet valid");
            goto out;
        }
        if (strcmp(peer->role, role) != 0) {
            ns_log(NS_LOG_INFO, "authz: role %s where %s is needed", peer->role, role);
            r = NS_E_CLAIMS;
            goto out;
        }
        r = 0;
        goto out;
    }
    (void)one_entry(X509_get_subject_name(cert), NID_commonName, peer->cn, sizeof(peer->cn));
    (void)one_entry(X509_get_subject_name(cert), NID_organizationName, peer->tenant, sizeof(peer->tenant));
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
    if (ns_cert_serial_hex(cert, peer->serial) != 0)
        peer->serial[0] = '\0';
    if (have_md) {
        memcpy(peer->fp, md, sizeof(md));
        peer->have_fp = 1;
        obj_remember(cert, trust, role_oid, now, peer);
    }
    if (strcmp(peer->role, role) != 0) {
        ns_log(NS_LOG_INFO, "authz: role %s where %s is needed", peer->role, role);
        r = NS_E_CLAIMS;
        goto out;
    }
    r = 0;
out:
    X509_STORE_CTX_free(vc);
    return r;
}
