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

enum ns_kek_source {
    NS_KEK_SRC_PKCS11 = 1,
    NS_KEK_SRC_FILE = 2,
    NS_KEK_SRC_ENV = 3,
    NS_KEK_SRC_VAULT = 4,   /* HashiCorp Vault KV v2 */
    NS_KEK_SRC_AWS_SM = 5,  /* AWS Secrets Manager */
    NS_KEK_SRC_AWS_SSM = 6, /* AWS Systems Manager Parameter Store */
    NS_KEK_SRC_GCP_SM = 7,  /* Google Secret Manager */
    NS_KEK_SRC_AZURE_KV = 8 /* Azure Key Vault secrets */
};

/* vault: AppRole login instead of a token (POST <address>/v1/auth/<mount>/login). */
typedef struct ns_vault_approle {
    char *role_id;        /* required */
    char *secret_id_file; /* required: file holding the secret id (absolute after loading) */
    char *mount;          /* auth mount, default "approle" */
} ns_vault_approle;

/* One KEK entry. Every URL below is http(s) with a host and no user, query or fragment; plain http only
 * to a loopback address or the link-local metadata address 169.254.169.254 (doc/choices.md). Defaults
 * are filled in by the parser, so a loaded entry needs no further defaulting. */
typedef struct ns_kek_config {
    enum ns_kek_source source;
    char *uri;       /* pkcs11: RFC 7512 URI (may carry module-path, pin-source, pin-value) */
    char *mechanism; /* pkcs11: "aes-gcm" | "aes-kwp" | "rsa-oaep" (required for pkcs11) */
    char *oaep_hash; /* pkcs11 rsa-oaep: "auto" (default) | "sha256" | "sha1" */
    char *pin_env;   /* pkcs11: name of an environment variable holding the PIN (optional) */
    char *path;      /* file: path of the key file (absolute after loading) */
    char *name;      /* env: variable name; aws-parameter-store: parameter name; azure-key-vault: secret
                        name */

    /* vault */
    char *address;   /* base URL, e.g. https://vault.example.com:8200 (required) */
    char *mount;     /* KV v2 mount, default "secret" */
    char *kv_path;   /* the secret's path inside the mount (config key `path`, required) */
    char *field;     /* the field of the secret that holds the key (required) */
    char *token_env; /* variable holding the token; default VAULT_TOKEN unless token_file or approle */
    char *token_file;
    char *vault_namespace;    /* X-Vault-Namespace (config key `namespace`), optional */
    ns_vault_approle approle; /* approle.role_id != NULL when configured */

    /* aws-secrets-manager, aws-parameter-store */
    char *secret_id;     /* aws-secrets-manager: name or ARN (required) */
    char *version_stage; /* aws-secrets-manager: optional (the service's default is AWSCURRENT) */
    char *region;        /* required */

    /* google-secret-manager */
    char *project;          /* required */
    char *secret;           /* required */
    char *version;          /* google: default "latest"; azure: optional (latest when absent) */
    char *credentials_file; /* service-account JSON key; without it the metadata server is asked */

    /* azure-key-vault */
    char *vault_url; /* https://NAME.vault.azure.net (required) */
    char *tenant_id; /* tenant_id, client_id, client_secret_file: all three (client credentials) or none */
    char *client_id; /* (managed identity) */
    char *client_secret_file;
    char *authority; /* login endpoint, default https://login.microsoftonline.com */

    /* every external source */
    char *endpoint; /* aws: default https://secretsmanager|ssm.<region>.amazonaws.com; google: default
                       https://secretmanager.googleapis.com */
    char *metadata_endpoint; /* google, azure: the instance metadata server, default http://169.254.169.254 */
    char *ca_file;           /* PEM CA bundle for https, instead of the system's */
    unsigned timeout_s;      /* one attempt of one request, 1..300 s, default 10 */
    unsigned retries;        /* extra attempts after a network error, 5xx or 429: 0..10, default 3 */

    int line; /* line of this entry in the config file, for messages */
} ns_kek_config;

/* storage.credentials (s3). With no explicit keys the AWS chain applies (net/aws_creds.h). */
typedef struct ns_s3_creds_config {
    char *access_key_id;     /* explicit keys: both or neither */
    char *secret_access_key; /* wiped on free, never echoed */
    char *session_token;     /* optional, with explicit keys only; wiped on free */
    char *profile;           /* shared credentials file profile (no explicit keys) */
    char *credentials_file;  /* shared credentials file (absolute after loading) */
    char *imds_endpoint;     /* instance metadata endpoint, http(s)://host[:port] */
    bool imds;               /* imds: false turns instance metadata off; default true */
} ns_s3_creds_config;

typedef struct ns_storage_config {
    char *backend; /* "file" | "s3" */
    char *path;    /* file: root folder (absolute after loading) */
    int line;
    /* s3 (doc/storage-s3.md) */
    char *bucket;                /* required */
    char *prefix;                /* "" or ending in '/': prepended to every object name */
    char *region;                /* default "us-east-1" */
    char *endpoint;              /* http(s)://host[:port]; default https://s3.<region>.amazonaws.com */
    bool path_style;             /* https://endpoint/bucket/key instead of https://bucket.endpoint/key */
    char *ca_file;               /* CA bundle instead of the system store (absolute after loading) */
    unsigned connect_timeout_ms; /* timeouts.connect_ms, default 5000 */
    unsigned timeout_ms;         /* timeouts.request_ms, default 30000 */
    unsigned retries;            /* retries.max, default 3 */
    unsigned retry_base_ms;      /* retries.base_delay_ms, default 100 */
    bool has_credentials;        /* a credentials block was given */
    ns_s3_creds_config creds;
} ns_storage_config;

/* The default ca.path_len: a CA certificate's pathLenConstraint counts every CA certificate below it, and
 * Go's crypto/x509 and GnuTLS count the self-issued cross certificate of a rotation too (RFC 5280 §6.1.4
 * exempts it; OpenSSL applies that, they do not). 2 = one level for the cross certificate (old root → cross
 * → ...) and one for the per-standby issuing intermediates of the fleet (DESIGN.md §7); a cross certificate
 * gets path_len - 1 (doc/ca.md). */
#define NS_CA_DEFAULT_PATH_LEN 2u

/* ca: the certificate authority (doc/config.md). Token keys are listed by URI; without them the CA keys are
 * software keys in the `ca.key` secret. */
typedef struct ns_ca_config {
    ns_strv keys;              /* token key URIs (RFC 7512), any order: a key is picked by its public key */
    char *pin_env;             /* environment variable with the token PIN (optional) */
    char *cn, *o, *c, *st, *l; /* subject of CA certificates (cn defaults to "<cluster_id> CA") */
    int64_t validity;          /* seconds; CA certificates (default 3650d) */
    unsigned path_len;         /* pathLenConstraint of self-signed CA certificates (default 2, below) */
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

/* server: nstance-secretsd (doc/server.md). Defaults are filled in by the parser. */
typedef struct ns_server_config {
    char *listen;  /* "HOST:PORT": an IPv4 literal, [IPv6] or localhost (default 127.0.0.1:8443) */
    ns_strv names; /* DNS names and IPs of the server's TLS certificate (default localhost, 127.0.0.1) */
    int64_t agent_cert_ttl;     /* default 24h */
    int64_t operator_cert_ttl;  /* default 8h */
    unsigned max_connections;   /* default 1024 */
    int64_t header_timeout;     /* default 10s */
    int64_t idle_timeout;       /* default 60s */
    int64_t cache_check;        /* default 5s */
    unsigned threads;           /* event-loop threads, default 4 */
    int64_t renew_min_interval; /* at most one renewal per identity per this, default 60s; 0: no limit */
    int64_t renew_grace;     /* the previous certificate's hand-over after a renewal, default 10m; 0: none */
    unsigned register_burst; /* registrations per source address at once, default 20 */
    unsigned register_per_minute; /* and refilled at this rate, default 60 */
    int line;
} ns_server_config;

/* One file of a template: a secret in an export format (secrets/export.h), or the CA bundle. */
typedef struct ns_tmpl_file {
    char *path;   /* absolute, normalised */
    char *secret; /* secret name (cluster/secret/<name>), or NULL for the CA bundle */
    char *format; /* pem-bundle | pem | public-pem-bundle | jwks | raw; NULL for the CA bundle */
    bool ca_bundle;
    char mode[5];        /* "0000".."0777" */
    char *owner, *group; /* default "root" */
    int line;
} ns_tmpl_file;

typedef struct ns_template {
    char *name;
    ns_tmpl_file *files;
    size_t n;
    int line;
} ns_template;

/* groups: an instance group (the nonce's `group` claim) → a template name. */
typedef struct ns_group_map {
    char *group;
    char *tmpl;
} ns_group_map;

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
    ns_server_config server;
    ns_group_map *groups; /* in file order; each names an existing template */
    size_t n_groups;
    ns_template *templates; /* in file order */
    size_t n_templates;
} ns_config;

/* The template of group `group`, or NULL. */
const ns_template *ns_config_template_for(const ns_config *cfg, const char *group);

/* The URL rule of every KEK source endpoint: "https://host[:port][/path]", or "http://" to 127.0.0.1,
 * localhost, [::1] or 169.254.169.254; no user info, query, fragment, spaces or characters that need
 * escaping; at most 1024 bytes. Also applied to URLs that come from files (a Google key's token_uri). */
bool ns_config_url_ok(const char *url);

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
