#include "ns-build.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ca/ca.h"
#include "ca/cert.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "server/tls.h"

#define SERVER_CERT_TTL (90LL * 86400)

/* Every certificate passes the handshake; authz.c decides per endpoint, with a reason in the log. */
static int accept_any(int ok, X509_STORE_CTX *x)
{
    (void)ok;
    (void)x;
    return 1;
}

/* Session resumption (TLS 1.3 tickets, OpenSSL's default) is allowed. OpenSSL refuses to resume a session
 * with SSL_VERIFY_PEER set unless the context has a session id context ("tlsv1 alert internal error" on
 * the second connection), so one is set. Resuming skips no check: a resumed session carries the client
 * certificate of its full handshake (SSL_get0_peer_certificate returns it), and authz.c checks that
 * certificate on every request against the CA bundle of the moment, its dates and role. The ticket keys
 * are made at random for each context and never leave the process; a new context is made whenever the CA
 * bundle changes and when the TLS certificate is renewed, so tickets from before a `ca rotate`/`ca retire`
 * are not accepted any more (a full handshake follows). Tickets live OpenSSL's default 2 hours. */
static const unsigned char SID_CTX[] = "nstance-secretsd";

static int ctx_new(EVP_PKEY *key, X509 *cert, STACK_OF(X509) * chain, SSL_CTX **out)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL)
        return NS_E_CRYPTO;
    /* The chain (cross certificates after a CA rotation) is sent after the certificate, so a client that
     * trusts only an older CA of the bundle can verify it (doc/ca.md). */
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_use_cert_and_key(ctx, cert, key, chain, 1) != 1 || SSL_CTX_check_private_key(ctx) != 1 ||
        SSL_CTX_set_session_id_context(ctx, SID_CTX, sizeof(SID_CTX) - 1) != 1) {
        ns_log(NS_LOG_ERROR, "TLS: cannot set up the server context");
        SSL_CTX_free(ctx);
        return NS_E_CRYPTO;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    *out = ctx;
    return 0;
}

int ns_tls_ctx_selfsigned(const ns_strv *names, SSL_CTX **out)
{
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    X509_NAME *nm;
    int r = NS_E_CRYPTO;

    if ((key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")) == NULL || (x = X509_new()) == NULL)
        goto out;
    nm = X509_get_subject_name(x);
    if (X509_set_version(x, 2) != 1 || ASN1_INTEGER_set(X509_get_serialNumber(x), 1) != 1 ||
        X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)names->v[0], -1, -1, 0) !=
            1 ||
        X509_set_issuer_name(x, nm) != 1 || X509_gmtime_adj(X509_getm_notBefore(x), -300) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 86400) == NULL || X509_set_pubkey(x, key) != 1 ||
        X509_sign(x, key, EVP_sha256()) == 0)
        goto out;
    r = ctx_new(key, x, NULL, out);
out:
    X509_free(x);
    EVP_PKEY_free(key);
    return r;
}

static int64_t asn1_time(const ASN1_TIME *t)
{
    struct tm tm;

    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

int ns_tls_ctx_issued(ns_svc *svc, SSL_CTX **out, int64_t *not_after)
{
    const ns_strv *names = &svc->cfg->server.names;
    ns_ca_snap *snap = ns_svc_snap_get(svc);
    ns_strv dns = NS_STRV_INIT, ip = NS_STRV_INIT;
    EVP_PKEY *key = NULL;
    ns_issued *is = NULL;
    X509 *x = NULL;
    STACK_OF(X509) *chain = NULL;
    ns_cert_req req;
    const unsigned char *p;
    unsigned char addr[16];
    int64_t now = ns_now(), end;
    int r = NS_E_INTERNAL;

    if (snap == NULL)
        return NS_E_INTERNAL;
    for (size_t i = 0; i < names->n; i++) {
        int is_ip = inet_pton(AF_INET, names->v[i], addr) == 1 || inet_pton(AF_INET6, names->v[i], addr) == 1;
        if ((r = ns_strv_push(is_ip ? &ip : &dns, names->v[i])) != 0)
            goto out;
    }
    if ((key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")) == NULL) {
        r = NS_E_CRYPTO;
        goto out;
    }
    end = asn1_time(X509_get0_notAfter(snap->ca->certs[0])) - 60;
    memset(&req, 0, sizeof(req));
    req.pub = key;
    req.cn = names->v[0];
    req.tenant = svc->cfg->cluster_id;
    req.kind = NS_CERT_SERVER;
    req.dns = &dns;
    req.ip = &ip;
    req.not_before = now;
    req.not_after = now + SERVER_CERT_TTL < end ? now + SERVER_CERT_TTL : end;
    atomic_fetch_add(&svc->metrics.token_ops[NS_TOK_SIGN], 1);
    if ((r = ns_cert_issue(snap->ca->signer, snap->ca->certs[0], &req, &is)) != 0) {
        ns_log(NS_LOG_ERROR, "TLS: the CA cannot issue the server certificate: %s", ns_strerror(r));
        goto out;
    }
    p = is->der->data;
    if ((x = d2i_X509(NULL, &p, (long)is->der->len)) == NULL) {
        r = NS_E_CRYPTO;
        goto out;
    }
    if ((r = ns_ca_cross_chain(svc->st, snap->ca, &chain)) != 0) {
        ns_log(NS_LOG_ERROR, "TLS: the cross certificates cannot be read: %s", ns_strerror(r));
        goto out;
    }
    if ((r = ctx_new(key, x, chain, out)) == 0)
        *not_after = is->not_after;
out:
    sk_X509_pop_free(chain, X509_free);
    X509_free(x);
    ns_issued_free(is);
    EVP_PKEY_free(key);
    ns_strv_clear(&dns);
    ns_strv_clear(&ip);
    ns_svc_snap_put(snap);
    return r;
}
