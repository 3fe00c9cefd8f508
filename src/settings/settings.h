/* The configuration file (YAML, parsed with libyaml): every section of the product, listed in one table
 * (settings.c). The YAML tree and the schema engine are in config/; each module owns its section's struct
 * and rules (store/store_config.h, keys/kek_config.h, ca/ca_config.h, jwt/nonce_config.h); the server and
 * template sections, read by the server but checked by the CLI too, are here (server.c, templates.c).
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
#ifndef NS_SETTINGS_SETTINGS_H
#define NS_SETTINGS_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ca/ca_config.h"
#include "common/err.h"
#include "common/strv.h"
#include "config/schema.h"
#include "jwt/nonce_config.h"
#include "keys/kek_config.h"
#include "store/store_config.h"

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
    ns_keys_config keys;  /* views of primary, old and token_sessions for the keyring */
    ns_group_map *groups; /* in file order; each names an existing template */
    size_t n_groups;
    ns_template *templates; /* in file order */
    size_t n_templates;
} ns_config;

/* The template of group `group`, or NULL. */
const ns_template *ns_config_template_for(const ns_config *cfg, const char *group);

/* Load and validate the config at `path`. */
int ns_config_load(const char *path, ns_config **out) NS_WUR;

/* Parse config text. `origin` names it in messages; `base_dir` resolves relative paths (NULL: cwd). */
int ns_config_parse(const char *text, size_t n, const char *origin, const char *base_dir,
                    ns_config **out) NS_WUR;

void ns_config_free(ns_config *cfg);

/* The config path to use: `cli_path` if not NULL, else $NSTANCE_SECRETS_CONFIG, else
 * /etc/nstance/secrets.yaml. Never NULL. */
const char *ns_config_default_path(const char *cli_path);
/* The options of a program that reads the configuration file, parsed with getopt_long(optstring) ("+c:vh"
 * stops at the first operand): -c/--config FILE (into *config_path), -v/--verbose (ns_log_verbose()),
 * -h/--help and
 * --version. Returns -1 for main to go on, or its exit status: 0 after --help (the usage on stdout) or
 * --version, 2 after a usage error (the usage on stderr). */
int ns_config_options(int argc, char **argv, const char *optstring, const char *usage,
                      const char **config_path);

/* Sections of this file (server.c, templates.c). */
void ns_server_config_init(ns_server_config *sc);
int ns_server_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *slot) NS_WUR;
int ns_server_config_finish(ns_server_config *sc) NS_WUR;
void ns_server_config_clear(ns_server_config *sc);
int ns_templates_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what,
                              void *cfg) NS_WUR; /* an ns_config */
int ns_groups_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what,
                           void *cfg) NS_WUR; /* after templates */
void ns_templates_config_clear(ns_config *cfg);

#endif
