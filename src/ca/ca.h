/* The cluster CA in object storage.
 *
 *   cluster/ca.crt                 every trusted CA certificate, PEM, newest first (public, not encrypted)
 *   cluster/ca-cross/<key id>.crt  the certificate of CA key <key id> cross-signed by the CA before it
 *   cluster/secret/ca.key          software CA keys (a secret document), when the keys are not in a token
 *   shard/<shard>/certlog/...      one JSON record per issued certificate (certlog.c)
 *
 * The newest certificate's key issues. That key is found by its id (RFC 7638 thumbprint of the
 * certificate's public key) among the token keys listed in ca.keys, or else among the keys of ca.key.
 * Every change to cluster/ca.crt is create-only (init) or compare-and-swap (rotate, retire). */
#ifndef NS_CA_CA_H
#define NS_CA_CA_H

#include <stddef.h>

#include <openssl/x509.h>

#include "ca/cert.h"
#include "common/err.h"
#include "settings/settings.h"
#include "keys/keyring.h"
#include "sign/keyset.h"
#include "store/store.h"

#define NS_CA_BUNDLE       "cluster/ca.crt"
#define NS_CA_CROSS_PREFIX "cluster/ca-cross/"
#define NS_CA_KEY_SECRET   "cluster/secret/ca.key"
#define NS_CA_MAX          16 /* trusted CA certificates at once */
#define NS_CA_BUNDLE_MAX   (256 * 1024)

typedef struct ns_ca {
    X509 **certs; /* newest first */
    size_t n;
    char *version;     /* of cluster/ca.crt */
    ns_keyset *tok;    /* token keys of ca.keys (ns_ca_open) */
    ns_keyset *soft;   /* keys of the ca.key secret, if it exists (ns_ca_open) */
    ns_signer *signer; /* the key of certs[0], borrowed from keys */
    size_t ignored;    /* certificates of cluster/ca.crt dropped by ns_ca_load (not vouched for) */
} ns_ca;

/* The bundle as far as the CA keys held here vouch for it, and those keys (ca.keys, the ca.key secret).
 * The store is not trusted (doc/threat-model.md): a certificate is kept only if it is a self-signed
 * certificate of a held key, or a certificate of a held key issued and signed by such a one; any other is
 * dropped with one warning naming its subject and SHA-256 fingerprint (counted in ->ignored). The newest
 * certificate must be kept (NS_E_TOKEN_OBJECT otherwise: nothing falls back to an older one).
 * NS_E_NOT_FOUND if there is no CA yet. */
int ns_ca_load(const ns_config *cfg, ns_store *st, const ns_keyring *kr, ns_ca **out) NS_WUR;
/* ns_ca_load and the key of the newest certificate, ready to issue. */
int ns_ca_open(const ns_config *cfg, ns_store *st, const ns_keyring *kr, ns_ca **out) NS_WUR;
void ns_ca_free(ns_ca *ca);

/* Parse a PEM bundle of CA certificates (1..NS_CA_MAX, each a CA certificate) / write one. NS_E_TOO_LARGE
 * above NS_CA_BUNDLE_MAX bytes or NS_CA_MAX certificates; free *certs with ns_ca_certs_free(). */
int ns_ca_parse_bundle(const uint8_t *p, size_t n, X509 ***certs, size_t *count) NS_WUR;
void ns_ca_certs_free(X509 **certs, size_t n);
int ns_ca_bundle_pem(X509 *const *certs, size_t n, ns_buf **out) NS_WUR;

/* How ca init / ca rotate get their key:
 *   key_uri set: a token key there, adopted if it exists, else generated (type, default ecdsa-p256;
 *                ed25519 only where the token has CKM_EDDSA);
 *   key_uri NULL: a software key (type, default ed25519) in the ca.key secret. */
typedef struct ns_ca_keyspec {
    const char *key_uri;
    const char *type; /* NULL: the default above */
} ns_ca_keyspec;

/* Create the CA: key, self-signed certificate, cluster/ca.crt create-only. NS_E_EXISTS if a CA exists
 * (also when a concurrent init won; nothing is changed then). *out: the new certificate. */
int ns_ca_init(const ns_config *cfg, ns_store *st, const ns_keyring *kr, const ns_ca_keyspec *ks,
               X509 **out) NS_WUR;

/* A new CA key and certificate in front, cross-signed by the current CA. */
int ns_ca_rotate(const ns_config *cfg, ns_store *st, const ns_keyring *kr, const ns_ca_keyspec *ks,
                 X509 **out, X509 **cross) NS_WUR;

/* Remove the oldest CA certificate (and its software key). NS_E_CONFLICT if it is the only one. */
int ns_ca_retire(const ns_config *cfg, ns_store *st, const ns_keyring *kr, X509 **removed) NS_WUR;

/* The cross-signed certificates that exist for the bundle's certificates, newest first, each checked as in
 * ns_ca_cross_chain (one that is not what its name says is left out with a warning). */
int ns_ca_cross_pem(ns_store *st, const ns_ca *ca, ns_buf **out) NS_WUR;

/* The chain that lets a client of any older CA of the bundle verify a certificate of the newest: the cross
 * certificates certs[0] by certs[1], certs[1] by certs[2], ... as far as they exist in the store without a
 * gap, each checked (key and name of certs[i], issued and signed by certs[i + 1]; one that is not is
 * ignored with a warning). Empty when the bundle has one certificate. A store error is returned. */
int ns_ca_cross_chain(ns_store *st, const ns_ca *ca, STACK_OF(X509) * *out) NS_WUR;

/* Issue a certificate with the newest CA key (ca from ns_ca_open), then record it in the certificate log
 * of `shard`. The certificate is returned only once the log entry is written. */
int ns_ca_issue(ns_ca *ca, ns_store *st, const char *shard, const ns_cert_req *req, ns_issued **out) NS_WUR;

/* Write shard/<shard>/certlog/<tenant>.<UTC ms>.<subject>.json for cert (create-only; subject = the CN with
 * characters outside [A-Za-z0-9._-] replaced by "_", at most 40). NS_E_INVAL if tenant or shard are not
 * [A-Za-z0-9][A-Za-z0-9._-]{0,62}. */
int ns_certlog_write(ns_store *st, const char *shard, const ns_cert_req *req, const ns_issued *cert,
                     const char *issuer_id) NS_WUR;

/* The key id (RFC 7638 thumbprint) of a certificate's public key. */
int ns_ca_cert_key_id(X509 *x, char id[NS_KEY_ID_MAX]) NS_WUR;

#endif
