#include "ns-build.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys/kek_config.h"
#include "pkcs11/uri.h"

#define V_PKCS11  (1u << 0)
#define V_FILE    (1u << 1)
#define V_ENV     (1u << 2)
#define V_VAULT   (1u << 3)
#define V_AWS_SM  (1u << 4)
#define V_AWS_SSM (1u << 5)
#define V_GCP     (1u << 6)
#define V_AZURE   (1u << 7)
#define V_AWS     (V_AWS_SM | V_AWS_SSM)
#define V_REMOTE  (V_VAULT | V_AWS | V_GCP | V_AZURE)

static const char *const kek_sources[] = {"pkcs11",
                                          "file",
                                          "env",
                                          "vault",
                                          "aws-secrets-manager",
                                          "aws-parameter-store",
                                          "google-secret-manager",
                                          "azure-key-vault",
                                          NULL};
static const enum ns_kek_source kek_source_ids[] = {NS_KEK_SRC_PKCS11, NS_KEK_SRC_FILE,    NS_KEK_SRC_ENV,
                                                    NS_KEK_SRC_VAULT,  NS_KEK_SRC_AWS_SM,  NS_KEK_SRC_AWS_SSM,
                                                    NS_KEK_SRC_GCP_SM, NS_KEK_SRC_AZURE_KV};
static const char *const kek_mechanisms[] = {"aes-gcm", "aes-kwp", "rsa-oaep", NULL};
static const char *const oaep_hashes[] = {"auto", "sha256", "sha1", NULL};

#define AF(k, t, m, req, va, ru, se)                                                                         \
    {                                                                                                        \
        .key = k, .type = t, .off = offsetof(ns_vault_approle, m), .allowed = 1u, .required = req,           \
        .valid = va, .rule = ru, .secret = se                                                                \
    }
static const ns_cfg_field approle_fields[] = {
    AF("role_id", NS_CFG_STR, role_id, 1u, ns_cfg_valid_printable, NS_CFG_RULE_PRINT, true),
    AF("secret_id_file", NS_CFG_PATH, secret_id_file, 1u, NULL, NULL, false),
    AF("mount", NS_CFG_STR, mount, 0, ns_cfg_valid_segments, NS_CFG_RULE_SEGS, false),
};
static const ns_cfg_spec approle_spec = NS_CFG_SPEC(NULL, NULL, approle_fields);

#define KF(k, t, m, allow, req, va, ru)                                                                      \
    {                                                                                                        \
        .key = k, .type = t, .off = offsetof(ns_kek_config, m), .allowed = allow, .required = req,           \
        .valid = va, .rule = ru                                                                              \
    }

static const ns_cfg_field kek_fields[] = {
    {.key = "uri",
     .type = NS_CFG_STR,
     .off = offsetof(ns_kek_config, uri),
     .allowed = V_PKCS11,
     .required = V_PKCS11,
     .valid = ns_p11_uri_valid,
     .rule = NS_P11_URI_RULE,
     .secret = true},
    {.key = "mechanism",
     .type = NS_CFG_STR,
     .off = offsetof(ns_kek_config, mechanism),
     .allowed = V_PKCS11,
     .required = V_PKCS11,
     .choices = kek_mechanisms},
    {.key = "oaep_hash",
     .type = NS_CFG_STR,
     .off = offsetof(ns_kek_config, oaep_hash),
     .allowed = V_PKCS11,
     .choices = oaep_hashes},
    KF("pin_env", NS_CFG_STR, pin_env, V_PKCS11, 0, ns_cfg_valid_env_name, NS_CFG_RULE_ENV),
    KF("path", NS_CFG_PATH, path, V_FILE, V_FILE, NULL, NULL),
    KF("name", NS_CFG_STR, name, V_ENV, V_ENV, ns_cfg_valid_env_name, NS_CFG_RULE_ENV),
    /* vault */
    KF("address", NS_CFG_STR, address, V_VAULT, V_VAULT, ns_config_url_ok, NS_CFG_RULE_URL),
    KF("mount", NS_CFG_STR, mount, V_VAULT, 0, ns_cfg_valid_segments, NS_CFG_RULE_SEGS),
    KF("path", NS_CFG_STR, kv_path, V_VAULT, V_VAULT, ns_cfg_valid_segments, NS_CFG_RULE_SEGS),
    KF("field", NS_CFG_STR, field, V_VAULT, V_VAULT, ns_cfg_valid_printable, NS_CFG_RULE_PRINT),
    KF("token_env", NS_CFG_STR, token_env, V_VAULT, 0, ns_cfg_valid_env_name, NS_CFG_RULE_ENV),
    KF("token_file", NS_CFG_PATH, token_file, V_VAULT, 0, NULL, NULL),
    KF("namespace", NS_CFG_STR, vault_namespace, V_VAULT, 0, ns_cfg_valid_segments, NS_CFG_RULE_SEGS),
    {.key = "approle",
     .type = NS_CFG_MAPPING,
     .off = offsetof(ns_kek_config, approle),
     .allowed = V_VAULT,
     .sub = &approle_spec},
    /* aws */
    KF("secret_id", NS_CFG_STR, secret_id, V_AWS_SM, V_AWS_SM, ns_cfg_valid_printable, NS_CFG_RULE_PRINT),
    KF("version_stage", NS_CFG_STR, version_stage, V_AWS_SM, 0, ns_cfg_valid_printable, NS_CFG_RULE_PRINT),
    KF("name", NS_CFG_STR, name, V_AWS_SSM, V_AWS_SSM, ns_cfg_valid_printable, NS_CFG_RULE_PRINT),
    KF("region", NS_CFG_STR, region, V_AWS, V_AWS, ns_cfg_valid_region,
       "must be an AWS region name ([a-z0-9-], at most 32)"),
    /* google */
    KF("project", NS_CFG_STR, project, V_GCP, V_GCP, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    KF("secret", NS_CFG_STR, secret, V_GCP, V_GCP, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    KF("credentials_file", NS_CFG_PATH, credentials_file, V_GCP, 0, NULL, NULL),
    /* azure */
    KF("vault_url", NS_CFG_STR, vault_url, V_AZURE, V_AZURE, ns_config_url_ok, NS_CFG_RULE_URL),
    KF("name", NS_CFG_STR, name, V_AZURE, V_AZURE, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    KF("tenant_id", NS_CFG_STR, tenant_id, V_AZURE, 0, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    KF("client_id", NS_CFG_STR, client_id, V_AZURE, 0, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    KF("client_secret_file", NS_CFG_PATH, client_secret_file, V_AZURE, 0, NULL, NULL),
    KF("authority", NS_CFG_STR, authority, V_AZURE, 0, ns_config_url_ok, NS_CFG_RULE_URL),
    /* shared */
    KF("version", NS_CFG_STR, version, V_GCP | V_AZURE, 0, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    KF("endpoint", NS_CFG_STR, endpoint, V_AWS | V_GCP, 0, ns_config_url_ok, NS_CFG_RULE_URL),
    KF("metadata_endpoint", NS_CFG_STR, metadata_endpoint, V_GCP | V_AZURE, 0, ns_config_url_ok,
       NS_CFG_RULE_URL),
    KF("ca_file", NS_CFG_PATH, ca_file, V_REMOTE, 0, NULL, NULL),
    {.key = "timeout",
     .type = NS_CFG_UINT,
     .off = offsetof(ns_kek_config, timeout_s),
     .allowed = V_REMOTE,
     .min = 1,
     .max = 300},
    {.key = "retries",
     .type = NS_CFG_UINT,
     .off = offsetof(ns_kek_config, retries),
     .allowed = V_REMOTE,
     .max = 10},
};
static const ns_cfg_spec kek_spec = NS_CFG_SPEC("source", kek_sources, kek_fields);
_Static_assert(sizeof(kek_fields) / sizeof(kek_fields[0]) <= NS_CFG_MAX_FIELDS, "raise NS_CFG_MAX_FIELDS");

/* What one table cannot say: keys that exclude or need each other, and the defaults. */
static int kek_check_remote(ns_cfg_ctx *c, const int lines[NS_CFG_MAX_FIELDS], const char *path,
                            ns_kek_config *k)
{
    char url[128];
    int r = NS_E_INTERNAL;

    if (k->source != NS_KEK_SRC_PKCS11 && k->source != NS_KEK_SRC_FILE && k->source != NS_KEK_SRC_ENV) {
        if (ns_cfg_key_line(&kek_spec, lines, "timeout") == 0)
            k->timeout_s = 10;
        if (ns_cfg_key_line(&kek_spec, lines, "retries") == 0)
            k->retries = 3;
    }
    switch (k->source) {
    case NS_KEK_SRC_VAULT:
        if ((r = ns_cfg_exclusive(c, &kek_spec, lines, path, "token_env", "token_file")) != 0 ||
            (r = ns_cfg_exclusive(c, &kek_spec, lines, path, "approle", "token_env")) != 0 ||
            (r = ns_cfg_exclusive(c, &kek_spec, lines, path, "approle", "token_file")) != 0)
            return r;
        if ((r = ns_cfg_set_default(&k->mount, "secret")) != 0)
            return r;
        if (k->approle.role_id != NULL)
            return ns_cfg_set_default(&k->approle.mount, "approle");
        if (k->token_file == NULL)
            return ns_cfg_set_default(&k->token_env, "VAULT_TOKEN");
        return 0;
    case NS_KEK_SRC_AWS_SM:
    case NS_KEK_SRC_AWS_SSM:
        snprintf(url, sizeof(url), "https://%s.%s.amazonaws.com",
                 k->source == NS_KEK_SRC_AWS_SM ? "secretsmanager" : "ssm", k->region);
        return ns_cfg_set_default(&k->endpoint, url);
    case NS_KEK_SRC_GCP_SM:
        if ((r = ns_cfg_exclusive(c, &kek_spec, lines, path, "credentials_file", "metadata_endpoint")) != 0)
            return r;
        if ((r = ns_cfg_set_default(&k->version, "latest")) != 0 ||
            (r = ns_cfg_set_default(&k->endpoint, "https://secretmanager.googleapis.com")) != 0)
            return r;
        if (k->credentials_file == NULL)
            return ns_cfg_set_default(&k->metadata_endpoint, "http://169.254.169.254");
        return 0;
    case NS_KEK_SRC_AZURE_KV: {
        int n = (k->tenant_id != NULL) + (k->client_id != NULL) + (k->client_secret_file != NULL);
        if (n != 0 && n != 3)
            return ns_cfg_fail(c, k->line,
                               "%s: tenant_id, client_id and client_secret_file go together "
                               "(client credentials); without them the managed identity is used",
                               path);
        if (n == 3) {
            if ((r = ns_cfg_exclusive(c, &kek_spec, lines, path, "client_id", "metadata_endpoint")) != 0)
                return r;
            return ns_cfg_set_default(&k->authority, "https://login.microsoftonline.com");
        }
        if (ns_cfg_key_line(&kek_spec, lines, "authority") != 0)
            return ns_cfg_fail(c, ns_cfg_key_line(&kek_spec, lines, "authority"),
                               "%s.authority is only used with client credentials", path);
        return ns_cfg_set_default(&k->metadata_endpoint, "http://169.254.169.254");
    }
    default:
        return 0;
    }
}

int ns_kek_config_parse(ns_cfg_ctx *c, const ns_cfg_node *m, const char *path, ns_kek_config *k)
{
    int lines[NS_CFG_MAX_FIELDS];
    size_t var = 0;
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_parse_map(c, m, path, &kek_spec, k, &var, lines)) != 0)
        goto out;
    k->source = kek_source_ids[var];
    k->line = m->line;
    if (k->source == NS_KEK_SRC_PKCS11) {
        bool oaep = strcmp(k->mechanism, "rsa-oaep") == 0;
        if (!oaep && k->oaep_hash != NULL) {
            r = ns_cfg_fail(c, ns_cfg_key_line(&kek_spec, lines, "oaep_hash"),
                            "%s.oaep_hash is only valid with mechanism rsa-oaep", path);
            goto out;
        }
        if (oaep && k->oaep_hash == NULL && (k->oaep_hash = strdup("auto")) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
    }
    if ((r = kek_check_remote(c, lines, path, k)) != 0)
        goto out;
    r = 0;
out:
    return r;
}

int ns_kek_config_section(ns_cfg_ctx *c, const ns_cfg_node *v, void *slot)
{
    return ns_kek_config_parse(c, v, "encryption_key", slot);
}

int ns_kek_config_parse_list(ns_cfg_ctx *c, const ns_cfg_node *seq, const char *path, ns_kek_config **v,
                             size_t *n)
{
    char what[64];
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_expect_kind(c, seq, NS_CFG_SEQ, path)) != 0)
        return r;
    if (seq->n == 0)
        return 0;
    if ((*v = calloc(seq->n, sizeof(**v))) == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i < seq->n; i++) {
        snprintf(what, sizeof(what), "%s[%zu]", path, i);
        *n = i + 1; /* so that ns_kek_config_free_list() clears what this entry got so far */
        if ((r = ns_kek_config_parse(c, seq->items[i], what, &(*v)[i])) != 0)
            return r;
    }
    return 0;
}

void ns_kek_config_clear(ns_kek_config *k)
{
    ns_cfg_clear(&kek_spec, k);
    memset(k, 0, sizeof(*k));
}

void ns_kek_config_free_list(ns_kek_config *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ns_kek_config_clear(&v[i]);
    free(v);
}
