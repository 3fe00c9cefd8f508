/* Compact JWS (RFC 7515 §7.1) carrying a JSON object payload (a JWT claims set, RFC 7519), signed and
 * verified with the keys of a key set (sign/keyset.h). No knowledge of what the claims mean: nonce.h does
 * that.
 *
 * What is accepted, and nothing else (doc/nonces.md):
 *   - at most NS_JWS_MAX bytes, exactly three '.'-separated segments, none empty;
 *   - every segment canonical unpadded base64url (codec.h), so one signed message has one encoding;
 *   - the header a JSON object with exactly the members alg, typ ("JWT") and kid, all strings; no crit, jku,
 *     x5u, jwk or any other member; no duplicate members (also in the payload);
 *   - alg one of EdDSA, ES256, ES384, RS256 (never "none", never HMAC): NS_E_FORMAT otherwise;
 *   - the payload a JSON object.
 * Verification picks the key by kid among all keys of the set (NS_E_KEY_UNKNOWN if none has it), requires
 * alg to be the one the key's type implies (RFC 8725 §3.1; a mismatch is NS_E_INTEGRITY, as a forgery
 * attempt against that key), then checks the signature (ECDSA as r || s, RFC 7518 §3.4). */
#ifndef NS_JWT_JWS_H
#define NS_JWT_JWS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/err.h"
#include "secrets/keytype.h"
#include "sign/keyset.h"
#include "sign/signer.h"

#define NS_JWS_MAX 8192 /* bytes of the compact serialization */

typedef struct ns_jws {
    char alg[16];
    char kid[NS_KEY_ID_MAX];
    json_t *claims;        /* the payload, a JSON object (owned) */
    ns_buf *signing_input; /* ASCII(BASE64URL(header) '.' BASE64URL(payload)), as received */
    ns_buf *sig;           /* the decoded signature */
} ns_jws;

/* Sign a payload that is JSON text (an object, compact) with s: header {"alg": <s's type>, "typ": "JWT",
 * "kid": s->id}. *out is a new NUL-terminated string (free()). The nonce issuer writes its claims directly,
 * which keeps jansson's allocations out of the signing path. */
int ns_jws_sign_payload(ns_signer *s, const char *payload, size_t n, char **out) NS_WUR;

/* Parse text[0..n) as described above, without checking the signature. NS_E_TOO_LARGE over NS_JWS_MAX,
 * NS_E_FORMAT for everything else that is not accepted; *out untouched on failure. */
int ns_jws_parse(const char *text, size_t n, ns_jws **out) NS_WUR;

/* Check j's signature with the key of ks that j's kid names; *key (optional) gets that key. */
int ns_jws_verify(const ns_jws *j, const ns_keyset *ks, ns_signer **key) NS_WUR;

/* The JSON Web Key Set of every key of ks, in order: public JWK members, kid, alg, use "sig" (RFC 7517).
 * *out is a new buffer, indented JSON and a newline. */
int ns_jws_jwks(const ns_keyset *ks, ns_buf **out) NS_WUR;

void ns_jws_free(ns_jws *j);

#endif
