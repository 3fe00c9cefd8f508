#include "ns-build.h"

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/secmem.h"
#include "settings/settings.h"

#define DEFAULT_PATH      "/etc/nstance/secrets.yaml"
#define DEFAULT_SHARD     "default"
#define DEFAULT_CACHE_DIR "/var/cache/nstance-secrets"

/* cluster_id, shard */
static int parse_name(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *slot)
{
    char q[NS_CFG_QUOTE_MAX + 4], **out = slot;
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_expect_string(c, v, what)) != 0)
        return r;
    if (!ns_cfg_valid_name(v->value)) {
        ns_cfg_quote(v->value, q);
        return ns_cfg_fail(c, v->line, "%s: '%s' is not valid (" NS_CFG_RULE_NAME ")", what, q);
    }
    return (*out = strdup(v->value)) == NULL ? NS_E_NOMEM : 0;
}

static int parse_old_keys(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *slot)
{
    ns_config *cfg = slot;

    return ns_kek_config_parse_list(c, v, what, &cfg->old, &cfg->n_old);
}

static const ns_cfg_field pkcs11_fields[] = {
    NS_CFG_ROW(ns_config, "sessions", NS_CFG_UINT, token_sessions, .min = 1, .max = 64),
};
static const ns_cfg_spec pkcs11_spec = NS_CFG_SPEC(NULL, NULL, pkcs11_fields);

/* Every top-level key, parsed in this order (groups after templates: each names an existing template). */
#define S(k, t, m, ...) NS_CFG_ROW(ns_config, k, t, m, __VA_ARGS__)
static const ns_cfg_field sections[] = {
    S("cluster_id", NS_CFG_OWN, cluster_id, .required = 1u, .parse = parse_name),
    S("storage", NS_CFG_OWN, storage, .required = 1u, .parse = ns_store_config_parse),
    S("encryption_key", NS_CFG_OWN, primary, .parse = ns_kek_config_parse),
    {.key = "old_encryption_keys", .type = NS_CFG_OWN, .allowed = 1u, .parse = parse_old_keys},
    {.key = "pkcs11", .type = NS_CFG_MAPPING, .allowed = 1u, .sub = &pkcs11_spec},
    S("shard", NS_CFG_OWN, shard, .parse = parse_name),
    S("cache_dir", NS_CFG_PATH, cache_dir),
    S("ca", NS_CFG_OWN, ca, .parse = ns_ca_config_parse),
    S("registration_nonce", NS_CFG_OWN, nonce, .parse = ns_nonce_config_parse),
    S("server", NS_CFG_OWN, server, .parse = ns_server_config_parse),
    {.key = "templates", .type = NS_CFG_OWN, .allowed = 1u, .parse = ns_templates_config_parse},
    {.key = "groups", .type = NS_CFG_OWN, .allowed = 1u, .parse = ns_groups_config_parse},
};
static const ns_cfg_spec root_spec = NS_CFG_SPEC(NULL, NULL, sections);

/* Defaults that depend on other sections, once every section is read; the keyring's view. */
static int finish(ns_config *cfg)
{
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_set_default(&cfg->shard, DEFAULT_SHARD)) != 0 ||
        (r = ns_cfg_set_default(&cfg->cache_dir, DEFAULT_CACHE_DIR)) != 0 ||
        (r = ns_ca_config_finish(&cfg->ca, cfg->cluster_id)) != 0 ||
        (r = ns_nonce_config_finish(&cfg->nonce, cfg->cluster_id)) != 0 ||
        (r = ns_server_config_finish(&cfg->server)) != 0)
        return r;
    cfg->has_primary = cfg->primary.source != 0;
    cfg->keys.origin = cfg->origin;
    cfg->keys.primary = cfg->has_primary ? &cfg->primary : NULL;
    cfg->keys.old = cfg->old;
    cfg->keys.n_old = cfg->n_old;
    cfg->keys.sessions = cfg->token_sessions;
    return 0;
}

void ns_config_free(ns_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->origin);
    free(cfg->cluster_id);
    ns_store_config_clear(&cfg->storage);
    ns_kek_config_clear(&cfg->primary);
    ns_kek_config_free_list(cfg->old, cfg->n_old);
    free(cfg->shard);
    free(cfg->cache_dir);
    ns_ca_config_clear(&cfg->ca);
    ns_nonce_config_clear(&cfg->nonce);
    ns_server_config_clear(&cfg->server);
    ns_templates_config_clear(cfg);
    free(cfg);
}

int ns_config_parse(const char *text, size_t n, const char *origin, const char *base_dir, ns_config **out)
{
    ns_cfg_ctx c = {origin != NULL ? origin : "<string>", base_dir};
    ns_cfg_node *root = NULL;
    ns_config *cfg = NULL;
    int r = NS_E_INTERNAL;

    if (out == NULL || (text == NULL && n > 0)) {
        r = NS_E_INVAL;
        goto out;
    }
    if ((r = ns_cfg_tree_build(&c, text != NULL ? text : "", n, &root)) != 0)
        goto out;
    if ((cfg = calloc(1, sizeof(*cfg))) == NULL || (cfg->origin = strdup(c.origin)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    cfg->token_sessions = 4;
    ns_store_config_init(&cfg->storage);
    ns_ca_config_init(&cfg->ca);
    ns_server_config_init(&cfg->server);
    if ((r = ns_cfg_parse_sections(&c, root, &root_spec, cfg)) != 0 || (r = finish(cfg)) != 0)
        goto out;
    *out = cfg;
    cfg = NULL;
    r = 0;
out:
    ns_config_free(cfg);
    ns_cfg_node_free(root);
    return r;
}

int ns_config_load(const char *path, ns_config **out)
{
    ns_buf *text = NULL;
    char *dir = NULL;
    int r = NS_E_INTERNAL;

    if (out == NULL)
        return NS_E_INVAL;
    if ((r = ns_cfg_read_file(path, &text, &dir)) == 0) {
        r = ns_config_parse((const char *)text->data, text->len, path, dir, out);
        ns_wipe(text->data, text->len); /* may hold a pin-value */
        ns_buf_free(text);
        free(dir);
    }
    return r;
}

int ns_config_options(int argc, char **argv, const char *optstring, const char *usage,
                      const char **config_path)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    while ((opt = getopt_long(argc, argv, optstring, longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            *config_path = optarg;
            break;
        case 'v':
            ns_log_verbose();
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case 'V':
            puts(PACKAGE_STRING);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    return -1;
}

const char *ns_config_default_path(const char *cli_path)
{
    const char *env;

    if (cli_path != NULL)
        return cli_path;
    env = getenv("NSTANCE_SECRETS_CONFIG");
    if (env != NULL && env[0] != '\0')
        return env;
    return DEFAULT_PATH;
}
