/* The configuration file (YAML, parsed with libyaml).
 *
 * Shape (doc/config.md has every key):
 *
 *   cluster_id: demo
 *   storage: {backend: file, path: /var/lib/nstance/bucket}
 *   encryption_key: {source: pkcs11, uri: "pkcs11:...", mechanism: aes-gcm}
 *   old_encryption_keys:
 *     - {source: file, path: /etc/nstance/kek-1.key}
 *     - {source: env, name: NSTANCE_OLD_KEK}
 *
 * Unknown keys, wrong types and missing fields are errors that name the file and line; the detail is
 * logged at error level and the function returns NS_E_CONFIG. Relative paths in the file are resolved
 * against the directory of the config file. */
#ifndef NS_CONFIG_CONFIG_H
#define NS_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/strv.h"

enum ns_kek_source { NS_KEK_SRC_PKCS11 = 1, NS_KEK_SRC_FILE = 2, NS_KEK_SRC_ENV = 3 };

typedef struct ns_kek_config {
    enum ns_kek_source source;
    char *uri;       /* pkcs11: RFC 7512 URI (may carry module-path, pin-source, pin-value) */
    char *mechanism; /* pkcs11: "aes-gcm" | "aes-kwp" | "rsa-oaep" (required for pkcs11) */
    char *oaep_hash; /* pkcs11 rsa-oaep: "auto" (default) | "sha256" | "sha1" */
    char *pin_env;   /* pkcs11: name of an environment variable holding the PIN (optional) */
    char *path;      /* file: path of the key file (absolute after loading) */
    char *name;      /* env: name of the environment variable */
    int line;        /* line of this entry in the config file, for messages */
} ns_kek_config;

typedef struct ns_storage_config {
    char *backend; /* "file" */
    char *path;    /* file: root folder (absolute after loading) */
    int line;
} ns_storage_config;

/* ca: the certificate authority (doc/config.md). Token keys are listed by URI; without them the CA keys are
 * software keys in the `ca.key` secret. */
typedef struct ns_ca_config {
    ns_strv keys;              /* token key URIs (RFC 7512), any order: a key is picked by its public key */
    char *pin_env;             /* environment variable with the token PIN (optional) */
    char *cn, *o, *c, *st, *l; /* subject of CA certificates (cn defaults to "<cluster_id> CA") */
    int64_t validity;          /* seconds; CA certificates (default 3650d) */
    unsigned path_len;         /* basicConstraints pathLenConstraint (default 0) */
    char *role_oid;            /* OID of the role extension (default 1.3.6.1.4.1.999999.1) */
    int64_t cert_ttl;          /* default lifetime of issued certificates (default 24h) */
    int line;
} ns_ca_config;

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

typedef struct ns_config {
    char *origin;     /* the file the config came from, or "<string>" */
    char *cluster_id; /* required: [A-Za-z0-9][A-Za-z0-9._-]{0,62} */
    ns_storage_config storage;
    bool has_primary;
    ns_kek_config primary; /* encryption_key */
    ns_kek_config *old;    /* old_encryption_keys, in file order */
    size_t n_old;
    unsigned token_sessions; /* pkcs11.sessions: sessions per token, 1..64, default 4 */
    char *shard;             /* shard: this server's shard (default "default") */
    char *cache_dir;         /* cache_dir: local state such as the nonce ledger (absolute; default
                                /var/cache/nstance-secrets) */
    ns_ca_config ca;
    ns_nonce_config nonce;
} ns_config;

/* Load and validate the config at `path`. */
int ns_config_load(const char *path, ns_config **out) NS_WUR;

/* Parse config text. `origin` names it in messages; `base_dir` resolves relative paths (NULL: cwd). */
int ns_config_parse(const char *text, size_t n, const char *origin, const char *base_dir,
                    ns_config **out) NS_WUR;

void ns_config_free(ns_config *cfg);

/* The config path to use: `cli_path` if not NULL, else $NSTANCE_SECRETS_CONFIG, else
 * /etc/nstance/secrets.yaml. Never NULL. */
const char *ns_config_default_path(const char *cli_path);

#endif
