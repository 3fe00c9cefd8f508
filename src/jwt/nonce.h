/* Registration nonces: short-lived JWTs (jws.h) that let an agent (or an operator) register once.
 *
 * Claims (doc/nonces.md), all required except group and config_hash, nothing else allowed:
 *   sub, tenant, shard, group   names: [A-Za-z0-9][A-Za-z0-9._-]{0,127} (ns_nonce_name_ok)
 *   config_hash                 lower-case hex, 8..128 digits
 *   kind                        "agent" | "operator"
 *   on_demand                   true | false
 *   iss                         the config's registration_nonce.issuer
 *   cluster_id                  the config's cluster_id
 *   jti                         16 random bytes, base64url (22 characters)
 *   iat, nbf, exp               integer seconds since the epoch; nbf = iat, exp = iat + ttl
 *
 * Verification order and errors: the JWS (NS_E_TOO_LARGE / NS_E_FORMAT, NS_E_KEY_UNKNOWN, NS_E_INTEGRITY),
 * then the claims' presence and JSON types (NS_E_CLAIMS: the signature is valid, so the token is well formed
 * but not one of ours), then time with the config's leeway (NS_E_EXPIRED: exp + leeway <= now, or nbf or
 * iat > now + leeway), then iss, cluster_id and kind (NS_E_CLAIMS). */
#ifndef NS_JWT_NONCE_H
#define NS_JWT_NONCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "settings/settings.h"
#include "jwt/jws.h"
#include "sign/keyset.h"

enum ns_nonce_kind { NS_NONCE_ANY = 0, NS_NONCE_AGENT = 1, NS_NONCE_OPERATOR = 2 };

#define NS_NONCE_NAME_MAX 128
#define NS_NONCE_HASH_MIN 8
#define NS_NONCE_HASH_MAX 128
#define NS_NONCE_TTL_MAX  (30LL * 86400) /* the longest registration_nonce.*_ttl the config allows */
#define NS_NONCE_KEY_LEN  32             /* ledger key: SHA-256 */

/* "agent" → NS_NONCE_AGENT, "operator" → NS_NONCE_OPERATOR; NS_E_INVAL otherwise. */
int ns_nonce_kind_parse(const char *s, enum ns_nonce_kind *out) NS_WUR;
const char *ns_nonce_kind_name(enum ns_nonce_kind k);

/* [A-Za-z0-9][A-Za-z0-9._-]{0,127}: sub, tenant, shard, group. */
bool ns_nonce_name_ok(const char *s);
/* [0-9a-f]{8,128}: config_hash. */
bool ns_nonce_hash_ok(const char *s);

typedef struct ns_nonce_req {
    enum ns_nonce_kind kind; /* agent or operator */
    const char *sub;
    const char *tenant;
    const char *shard;       /* NULL: the config's shard */
    const char *group;       /* NULL: no group claim */
    const char *config_hash; /* NULL: no config_hash claim */
    bool on_demand;
    int64_t ttl; /* seconds, 1..NS_NONCE_TTL_MAX; 0: the config's agent_ttl / operator_ttl */
} ns_nonce_req;

/* A new nonce JWT for req, issued at `now`, signed by ks->s[0]. NS_E_INVAL (logged) for a request whose
 * fields break the rules above. *jwt is a new string (free()). */
int ns_nonce_issue(const ns_config *cfg, const ns_keyset *ks, const ns_nonce_req *req, int64_t now,
                   char **jwt) NS_WUR;

typedef struct ns_nonce {
    json_t *claims; /* the verified claims (owned) */
    enum ns_nonce_kind kind;
    int64_t exp;
    char kid[NS_KEY_ID_MAX];
    /* SHA-256 of the JWS signing input (header.payload): what the ledger records. Not of the whole token:
     * an ECDSA signature (r, s) has a twin (r, n - s) that verifies too, so a key over the signature would
     * let one nonce be used twice. Canonical base64url makes the signing input unique. */
    uint8_t ledger_key[NS_NONCE_KEY_LEN];
} ns_nonce;

/* Verify text[0..n) as a nonce of this cluster at time `now` (of kind `kind` unless NS_NONCE_ANY), with the
 * keys of ks. Errors as described at the top. */
int ns_nonce_verify(const ns_config *cfg, const ns_keyset *ks, const char *text, size_t n,
                    enum ns_nonce_kind kind, int64_t now, ns_nonce **out) NS_WUR;

void ns_nonce_free(ns_nonce *nc);

#endif
