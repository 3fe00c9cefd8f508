/* TLS for nstance-secretsd: TLS 1.3 only; a client certificate is requested but optional at this layer
 * (SSL_VERIFY_PEER without FAIL_IF_NO_PEER_CERT, every certificate accepted here); the endpoints that need
 * one check it against the current CA bundle (service/authz.h). */
#ifndef NS_SERVER_TLS_H
#define NS_SERVER_TLS_H

#include <openssl/ssl.h>

#include "common/err.h"
#include "common/strv.h"
#include "service/service.h"

/* A context with a throw-away self-signed certificate for names[0]: used only until the CA has issued the
 * real one, so that /health can answer 503 while the server loads. */
int ns_tls_ctx_selfsigned(const ns_strv *names, SSL_CTX **out) NS_WUR;

/* A context with a certificate issued by the cluster CA for server.names (a fresh P-256 key, kind server,
 * DNS and IP SANs, 90 days or until shortly before the CA certificate ends), sent with the cross
 * certificates of the bundle (ns_ca_cross_chain) so that clients of an older CA of the bundle verify it
 * too. Not written to the certificate log (doc/server.md). *not_after gets the certificate's end. */
int ns_tls_ctx_issued(ns_svc *svc, SSL_CTX **out, int64_t *not_after) NS_WUR;

#endif
