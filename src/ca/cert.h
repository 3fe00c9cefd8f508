/* X.509 certificates (RFC 5280) signed through the signing abstraction (sign/signer.h).
 *
 * OpenSSL builds the TBSCertificate; the signer signs its DER (in the token for token keys); the signature
 * is put in place and the finished certificate is parsed again and verified with the issuer's public key
 * before anyone sees it, so a token that returns garbage never produces a certificate. */
#ifndef NS_CA_CERT_H
#define NS_CA_CERT_H

#include <stdint.h>

#include <openssl/x509.h>

#include "common/err.h"
#include "common/strv.h"
#include "sign/signer.h"

typedef struct ns_dn {
    const char *cn, *o, *c, *st, *l; /* NULL: absent */
} ns_dn;

enum ns_cert_kind { NS_CERT_CLIENT = 1, NS_CERT_SERVER = 2 };

typedef struct ns_cert_req {
    EVP_PKEY *pub;        /* the subject's public key: Ed25519, P-256, P-384 or RSA >= 2048 */
    const char *cn;       /* 1..64 printable characters */
    const char *tenant;   /* the single Organization value */
    const char *role;     /* role extension value ("agent", "operator"), or NULL for none */
    const char *role_oid; /* OID of the role extension */
    enum ns_cert_kind kind;
    const ns_strv *dns, *ip, *uri; /* subjectAltName entries (may be NULL) */
    int64_t not_before, not_after; /* seconds since the epoch */
} ns_cert_req;

/* A CA certificate for subject_pub: self-signed when issuer is NULL (signer must hold the key of
 * subject_pub), else issued (cross-signed) by issuer with signer holding issuer's key. basicConstraints
 * CA:TRUE critical with path_len, keyUsage keyCertSign, cRLSign, digitalSignature (critical), subject and
 * authority key identifiers, a random serial. */
int ns_cert_make_ca(ns_signer *signer, X509 *issuer, EVP_PKEY *subject_pub, const ns_dn *dn,
                    unsigned path_len, int64_t not_before, int64_t not_after, X509 **out) NS_WUR;

/* An issued end-entity certificate: its DER and what the certificate log records. */
typedef struct ns_issued {
    ns_buf *der;
    char serial[41]; /* lower-case hex, no leading zeros */
    int64_t not_before, not_after;
    char *subject; /* RFC 2253 text */
} ns_issued;

/* An end-entity certificate per req, issued by ca (signer holds its key). NS_E_INVAL (logged) for a request
 * that breaks a rule: bad names, unsupported key, validity outside the CA's; NS_E_TOKEN if the signature
 * does not verify under the CA's public key.
 *
 * Why DER and not an X509 object: parsing the finished certificate again costs OpenSSL 3.0 a key decode
 * through its provider machinery (several times the signature itself). The signature is checked over the
 * very TBS bytes that the DER carries, which is what guards against a faulty token. */
int ns_cert_issue(ns_signer *signer, X509 *ca, const ns_cert_req *req, ns_issued **out) NS_WUR;
void ns_issued_free(ns_issued *c);
/* PEM of the certificate into a new buffer. */
int ns_issued_pem(const ns_issued *c, ns_buf **out) NS_WUR;

/* A random positive serial: 16 octets, first octet in 0x40..0x7f (126 random bits, RFC 5280 §4.1.2.2). */
int ns_cert_serial(ASN1_INTEGER **out) NS_WUR;

/* Serial number as lower-case hex without leading zeros; out holds 2*20+1 bytes. */
int ns_cert_serial_hex(X509 *x, char out[41]) NS_WUR;

/* Checks for request fields, also used by the CLI before it builds a request. */
int ns_cert_check_dns(const char *s) NS_WUR;
int ns_cert_check_uri(const char *s) NS_WUR;
int ns_cert_check_ip(const char *s) NS_WUR;
int ns_cert_check_cn(const char *s) NS_WUR;

#endif
