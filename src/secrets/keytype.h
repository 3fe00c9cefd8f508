/* Secret key types: one table row per type, and the key-pair operations the documents need.
 *
 *   ed25519, ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096   key pairs (OpenSSL EVP_PKEY)
 *   random                                                          N random bytes (default 32)
 *   opaque                                                          bytes imported from a file
 *
 * Key-pair ids are RFC 7638 JWK thumbprints (base64url SHA-256 of the canonical public JWK), so they are
 * derived from the public key, stable, and usable as a JWKS `kid` as they are. */
#ifndef NS_SECRETS_KEYTYPE_H
#define NS_SECRETS_KEYTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/buf.h"
#include "common/err.h"

enum ns_key_kind { NS_KIND_KEYPAIR = 1, NS_KIND_RANDOM = 2, NS_KIND_OPAQUE = 3 };

typedef struct ns_keytype {
    const char *name;
    enum ns_key_kind kind;
    const char *evp_name; /* "ED25519", "EC", "RSA" */
    const char *group;    /* EC curve ("P-256"), else NULL */
    unsigned bits;        /* RSA modulus bits, else 0 */
    const char *jws_alg;  /* "EdDSA", "ES256", "ES384", "RS256"; NULL for non-key-pairs */
} ns_keytype;

#define NS_RANDOM_DEFAULT 32
#define NS_RANDOM_MAX     4096
#define NS_OPAQUE_MAX     (64u * 1024u)
#define NS_KEY_ID_MAX     64

const ns_keytype *ns_keytype_find(const char *name);
/* Comma-separated list of every type name, for messages. */
const char *ns_keytype_names(void);

/* Generate a key pair of a key-pair type. */
int ns_keytype_generate(const ns_keytype *t, EVP_PKEY **out) NS_WUR;

/* The key-pair type of pkey (NS_E_INVAL, logged, for keys outside the table, e.g. RSA-1024). */
int ns_keytype_classify(EVP_PKEY *pkey, const ns_keytype **out) NS_WUR;

/* PKCS#8 DER of a private key into a new secret buffer, and back (checking it is of type t, if t). */
int ns_keytype_to_pkcs8(EVP_PKEY *pkey, ns_buf **der) NS_WUR;
int ns_keytype_from_pkcs8(const uint8_t *der, size_t n, const ns_keytype *t, EVP_PKEY **out) NS_WUR;

/* Parse a PEM private key (PKCS#8, or traditional EC/RSA). NS_E_NOT_FOUND if the text holds no PEM
 * private-key block at all; NS_E_INVAL (logged) for a block that does not parse or is encrypted. */
int ns_keytype_from_pem(const uint8_t *p, size_t n, EVP_PKEY **out) NS_WUR;

/* The public JWK members (kty, crv, x, y / n, e) as a new object. */
int ns_keytype_jwk(EVP_PKEY *pkey, json_t **out) NS_WUR;

/* One member of a JWK Set: a public (or private: only its public part is used) key, its kid and JWS alg. */
typedef struct ns_jwks_key {
    EVP_PKEY *pkey;
    const char *kid;
    const char *alg;
} ns_jwks_key;

/* A JWK Set (RFC 7517 §5) {"keys": [{kty.., kid, alg, "use": "sig"}, ..]} as indented JSON text and a
 * newline, into a new buffer (secret if asked). */
int ns_keytype_jwks(const ns_jwks_key *keys, size_t n, bool secret, ns_buf **out) NS_WUR;

/* RFC 7638 thumbprint: base64url (no padding) of SHA-256 of the canonical JWK; 43 characters + NUL. */
int ns_keytype_thumbprint(EVP_PKEY *pkey, char out[NS_KEY_ID_MAX]) NS_WUR;

/* "SHA256:" + base64 (no padding) of SHA-256 of the SubjectPublicKeyInfo DER, like OpenSSH shows. */
int ns_keytype_fingerprint(EVP_PKEY *pkey, char out[64]) NS_WUR;

#endif
