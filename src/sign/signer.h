/* One signing abstraction for the CA and the registration-nonce key: a key that signs, wherever it lives.
 *
 *   signer_soft.c    a private key held by OpenSSL (from the ca.key / registration-nonce.key secrets)
 *   signer_pkcs11.c  a private key in a PKCS#11 token, named by an RFC 7512 URI: every signature is one
 *                    C_Sign (CKM_EDDSA, CKM_ECDSA over a digest made here, CKM_SHA256_RSA_PKCS)
 *
 * Why not the OpenSSL pkcs11 engine: it cannot use Ed25519 token keys (DESIGN.md §3). So callers let
 * OpenSSL build the bytes to be signed, sign them here, and put the signature in place themselves.
 *
 * Algorithms follow the key type (keytype.h): ed25519 → Ed25519 (RFC 8032, JWS "EdDSA" per RFC 8037),
 * ecdsa-p256/p384 → ECDSA with SHA-256/SHA-384 ("ES256"/"ES384"), rsa-* → RSASSA-PKCS1-v1_5 with SHA-256
 * ("RS256"). A signer never picks an algorithm from its input: the key decides (no algorithm confusion). */
#ifndef NS_SIGN_SIGNER_H
#define NS_SIGN_SIGNER_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "common/buf.h"
#include "common/err.h"
#include "secrets/keytype.h"

/* How an ECDSA signature is encoded (other algorithms have one encoding and ignore this). */
enum ns_sig_enc {
    NS_SIG_DER = 0, /* ECDSA-Sig-Value, DER (X.509, RFC 5480) */
    NS_SIG_RAW = 1, /* r || s, each left-padded to the field size (JWS, RFC 7518 §3.4) */
};

#define NS_SIG_MAX 1024 /* RSA-8192 */

typedef struct ns_signer ns_signer;

typedef struct ns_signer_ops {
    const char *name; /* "software", "pkcs11" */
    /* Append the signature of msg[0..n) to sig in the back-end's native encoding (raw_ecdsa says which). */
    int (*sign)(ns_signer *s, const uint8_t *msg, size_t n, ns_buf *sig);
    void (*free)(ns_signer *s);
} ns_signer_ops;

struct ns_signer {
    const ns_signer_ops *ops;
    const ns_keytype *type; /* ed25519, ecdsa-p256, ecdsa-p384, rsa-2048/3072/4096 */
    EVP_PKEY *pub;          /* the public key (owned) */
    char id[NS_KEY_ID_MAX]; /* RFC 7638 thumbprint of pub: the key id (JWS kid, certlog issuer id) */
    char *desc;             /* "software key <id>" or the redacted URI, for messages */
    int raw_ecdsa;          /* the back-end's ECDSA signatures come as r||s */
    void *impl;
};

/* A software signer for private key pkey (its reference count is raised). */
int ns_signer_soft_new(EVP_PKEY *pkey, ns_signer **out) NS_WUR;

/* A token signer for the private key named by uri (object= and/or id=). The public key is read from the
 * token (the public key object with the same label/id, or the private key's own attributes), and the
 * mechanism is checked at once: a token without it is NS_E_MECHANISM naming token and mechanism. */
int ns_signer_pkcs11_open(const char *uri, const char *pin_env, unsigned sessions, ns_signer **out) NS_WUR;

/* Generate a key pair of type_name ("ed25519", "ecdsa-p256", "ecdsa-p384", "rsa-3072"...) in the token,
 * labelled by the URI's object= (required) and id=: private key sensitive, non-extractable, sign only.
 * NS_E_EXISTS if an object with that label or id exists (nothing created). */
int ns_signer_pkcs11_generate(const char *uri, const char *type_name, const char *pin_env,
                              unsigned sessions) NS_WUR;

/* How many private keys match the URI's object=/id= (*found = 0, 1, or more). Quiet when there are none. */
int ns_signer_pkcs11_exists(const char *uri, const char *pin_env, unsigned sessions, int *found) NS_WUR;

/* 0 if the token named by uri has CKM_EDDSA for signing; otherwise NS_E_MECHANISM, logged with the token's
 * label, its module and the mechanism (a TPM, for one, has no EdDSA). */
int ns_signer_pkcs11_require_eddsa(const char *uri, const char *pin_env, unsigned sessions) NS_WUR;

/* Sign msg[0..n) into a new buffer, ECDSA encoded as enc asks. */
int ns_signer_sign(ns_signer *s, enum ns_sig_enc enc, const uint8_t *msg, size_t n, ns_buf **sig) NS_WUR;

/* Verify sig over msg with public key pub of key type t (the algorithm the type implies). 0 if valid,
 * NS_E_INTEGRITY if not (including a signature of the wrong length or encoding). */
int ns_sig_verify(EVP_PKEY *pub, const ns_keytype *t, enum ns_sig_enc enc, const uint8_t *msg, size_t n,
                  const uint8_t *sig, size_t sig_len) NS_WUR;

/* ECDSA signature encodings, for a curve whose field is field_len bytes (32 for P-256, 48 for P-384). */
int ns_sig_ecdsa_raw_to_der(const uint8_t *rs, size_t n, size_t field_len, ns_buf *out) NS_WUR;
int ns_sig_ecdsa_der_to_raw(const uint8_t *der, size_t n, size_t field_len, ns_buf *out) NS_WUR;

/* Field size in bytes of an ECDSA key type (0 for other types). */
size_t ns_sig_ecdsa_field_len(const ns_keytype *t);

void ns_signer_free(ns_signer *s);

#endif
