/* Client certificates on the endpoints that need one (doc/protocol.md).
 *
 * The TLS layer asks for a certificate but accepts any (or none); this decides. A certificate is accepted
 * when it chains to a CA of the current bundle (X509_verify_cert with the SSL-client purpose, so the EKU
 * must allow clientAuth), is within its validity, has exactly one CN and exactly one O (the tenant), and
 * carries the role extension (OID ca.role_oid, a DER UTF8String) with the role the endpoint needs. The
 * reason for a refusal is logged, never returned to the client. */
#ifndef NS_SERVICE_AUTHZ_H
#define NS_SERVICE_AUTHZ_H

#include <openssl/x509.h>

#include "common/err.h"

#define NS_AUTHZ_NAME_MAX 129

typedef struct ns_peer {
    char cn[NS_AUTHZ_NAME_MAX];
    char tenant[NS_AUTHZ_NAME_MAX];
    char role[16];
    unsigned char fp[32]; /* SHA-256 of the certificate's DER, when have_fp */
    int have_fp;
    char serial[41]; /* the certificate's serial, lower-case hex without leading zeros ("" if unknown) */
} ns_peer;

/* 0: accepted, *peer filled (fp: the certificate's fingerprint, when it could be computed). NS_E_PERM (→ 401)
 * for a missing, untrusted, expired or malformed certificate; NS_E_CLAIMS (→ 403) for a valid one without
 * `role`. peer->cn/tenant are filled as far as read, for the log line. */
int ns_authz_check(X509 *cert, STACK_OF(X509) * chain, X509_STORE *trust, const char *role_oid,
                   const char *role, ns_peer *peer) NS_WUR;

/* The role extension's value into out (NS_E_NOT_FOUND if absent, NS_E_FORMAT if not a UTF8String). */
int ns_authz_role(X509 *cert, const char *role_oid, char *out, size_t n) NS_WUR;

#endif
