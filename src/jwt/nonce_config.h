/* The `registration_nonce` section of the config (doc/config.md, doc/nonces.md). */
#ifndef NS_JWT_NONCE_CONFIG_H
#define NS_JWT_NONCE_CONFIG_H

#include <stdint.h>

#include "common/strv.h"
#include "config/schema.h"

/* registration_nonce: the key that signs registration JWTs. Token keys by URI, else the
 * `registration-nonce.key` secret. */
typedef struct ns_nonce_config {
    ns_strv keys; /* token key URIs, newest first: the first signs, all verify */
    char *pin_env;
    char *issuer;         /* the `iss` claim (default "nstance-secrets/<cluster_id>") */
    int64_t leeway;       /* seconds of clock skew allowed for exp/nbf (default 60s, at most 5m) */
    int64_t agent_ttl;    /* default 5m */
    int64_t operator_ttl; /* default 3h */
    int line;
} ns_nonce_config;

/* The `registration_nonce` section into slot (an ns_nonce_config). */
int ns_nonce_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *slot) NS_WUR;

/* Defaults, once everything is read (the issuer names the cluster). */
int ns_nonce_config_finish(ns_nonce_config *nc, const char *cluster_id) NS_WUR;

void ns_nonce_config_clear(ns_nonce_config *nc);

#endif
