/* The KEK entries of the config (`encryption_key`, `old_encryption_keys`; doc/config.md): where each key
 * comes from, checked by the schema engine (config/schema.h) against the table in kek_config.c. */
#ifndef NS_KEYS_KEK_CONFIG_H
#define NS_KEYS_KEK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "config/schema.h"

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

/* What the keyring needs of a config: borrowed views into it (the config outlives every ring). */
typedef struct ns_keys_config {
    const char *origin;           /* the config file, for messages */
    const ns_kek_config *primary; /* NULL: no encryption_key */
    const ns_kek_config *old;     /* old_encryption_keys */
    size_t n_old;
    unsigned sessions; /* pkcs11.sessions */
} ns_keys_config;

/* One KEK entry (mapping m at `path`, the `encryption_key` section) into slot, an ns_kek_config, defaults
 * filled in. The caller clears it on failure. */
int ns_kek_config_parse(ns_cfg_ctx *c, const ns_cfg_node *m, const char *path, void *slot) NS_WUR;

/* A sequence of entries at `path` into *v (calloc'd, *n entries; free with ns_kek_config_free_list). */
int ns_kek_config_parse_list(ns_cfg_ctx *c, const ns_cfg_node *seq, const char *path, ns_kek_config **v,
                             size_t *n) NS_WUR;

/* Frees and wipes every string of k. */
void ns_kek_config_clear(ns_kek_config *k);
void ns_kek_config_free_list(ns_kek_config *v, size_t n);

#endif
