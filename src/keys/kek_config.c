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

#define A(k, t, m, ...) NS_CFG_ROW(ns_vault_approle, k, t, m, __VA_ARGS__)
static const ns_cfg_field approle_fields[] = {
    A("role_id", NS_CFG_STR, role_id, .required = 1u, .valid = ns_cfg_valid_printable,
      .rule = NS_CFG_RULE_PRINT, .secret = true),
    A("secret_id_file", NS_CFG_PATH, secret_id_file, .required = 1u),
    A("mount", NS_CFG_STR, mount, .valid = ns_cfg_valid_segments, .rule = NS_CFG_RULE_SEGS),
};
static const ns_cfg_spec approle_spec = NS_CFG_SPEC(NULL, NULL, approle_fields);

#define K(k, t, m, a, r, ...)     NS_CFG_VROW(ns_kek_config, k, t, m, a, r, __VA_ARGS__)
#define KV(k, t, m, a, r, va, ru) K(k, t, m, a, r, .valid = va, .rule = ru)

static const ns_cfg_field kek_fields[] = {
    K("uri", NS_CFG_STR, uri, V_PKCS11, V_PKCS11, .valid = ns_p11_uri_valid, .rule = NS_P11_URI_RULE,
      .secret = true),
    K("mechanism", NS_CFG_STR, mechanism, V_PKCS11, V_PKCS11, .choices = kek_mechanisms),
    K("oaep_hash", NS_CFG_STR, oaep_hash, V_PKCS11, 0, .choices = oaep_hashes),
    KV("pin_env", NS_CFG_STR, pin_env, V_PKCS11, 0, ns_cfg_valid_env_name, NS_CFG_RULE_ENV),
    K("path", NS_CFG_PATH, path, V_FILE, V_FILE),
    KV("name", NS_CFG_STR, name, V_ENV, V_ENV, ns_cfg_valid_env_name, NS_CFG_RULE_ENV),
    /* vault */
    KV("address", NS_CFG_STR, address, V_VAULT, V_VAULT, ns_config_url_ok, NS_CFG_RULE_URL),
    KV("mount", NS_CFG_STR, mount, V_VAULT, 0, ns_cfg_valid_segments, NS_CFG_RULE_SEGS),
    KV("path", NS_CFG_STR, kv_path, V_VAULT, V_VAULT, ns_cfg_valid_segments, NS_CFG_RULE_SEGS),
    KV("field", NS_CFG_STR, field, V_VAULT, V_VAULT, ns_cfg_valid_printable, NS_CFG_RULE_PRINT),
    KV("token_env", NS_CFG_STR, token_env, V_VAULT, 0, ns_cfg_valid_env_name, NS_CFG_RULE_ENV),
    K("token_file", NS_CFG_PATH, token_file, V_VAULT, 0),
    KV("namespace", NS_CFG_STR, vault_namespace, V_VAULT, 0, ns_cfg_valid_segments, NS_CFG_RULE_SEGS),
    K("approle", NS_CFG_MAPPING, approle, V_VAULT, 0, .sub = &approle_spec),
    /* aws */
    KV("secret_id", NS_CFG_STR, secret_id, V_AWS_SM, V_AWS_SM, ns_cfg_valid_printable, NS_CFG_RULE_PRINT),
    KV("version_stage", NS_CFG_STR, version_stage, V_AWS_SM, 0, ns_cfg_valid_printable, NS_CFG_RULE_PRINT),
    KV("name", NS_CFG_STR, name, V_AWS_SSM, V_AWS_SSM, ns_cfg_valid_printable, NS_CFG_RULE_PRINT),
    KV("region", NS_CFG_STR, region, V_AWS, V_AWS, ns_cfg_valid_region,
       "must be an AWS region name ([a-z0-9-], at most 32)"),
    /* google */
    KV("project", NS_CFG_STR, project, V_GCP, V_GCP, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    KV("secret", NS_CFG_STR, secret, V_GCP, V_GCP, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    K("credentials_file", NS_CFG_PATH, credentials_file, V_GCP, 0),
    /* azure */
    KV("vault_url", NS_CFG_STR, vault_url, V_AZURE, V_AZURE, ns_config_url_ok, NS_CFG_RULE_URL),
    KV("name", NS_CFG_STR, name, V_AZURE, V_AZURE, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    KV("tenant_id", NS_CFG_STR, tenant_id, V_AZURE, 0, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    KV("client_id", NS_CFG_STR, client_id, V_AZURE, 0, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    K("client_secret_file", NS_CFG_PATH, client_secret_file, V_AZURE, 0),
    KV("authority", NS_CFG_STR, authority, V_AZURE, 0, ns_config_url_ok, NS_CFG_RULE_URL),
    /* shared */
    KV("version", NS_CFG_STR, version, V_GCP | V_AZURE, 0, ns_cfg_valid_segment, NS_CFG_RULE_SEG),
    KV("endpoint", NS_CFG_STR, endpoint, V_AWS | V_GCP, 0, ns_config_url_ok, NS_CFG_RULE_URL),
    KV("metadata_endpoint", NS_CFG_STR, metadata_endpoint, V_GCP | V_AZURE, 0, ns_config_url_ok,
       NS_CFG_RULE_URL),
    K("ca_file", NS_CFG_PATH, ca_file, V_REMOTE, 0),
    K("timeout", NS_CFG_UINT, timeout_s, V_REMOTE, 0, .min = 1, .max = 300),
    K("retries", NS_CFG_UINT, retries, V_REMOTE, 0, .max = 10),
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

int ns_kek_config_parse(ns_cfg_ctx *c, const ns_cfg_node *m, const char *path, void *slot)
{
    ns_kek_config *k = slot;
    int lines[NS_CFG_MAX_FIELDS];
    size_t var = 0;
    bool oaep;
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_parse_map(c, m, path, &kek_spec, k, &var, lines)) != 0)
        return r;
    k->source = kek_source_ids[var];
    k->line = m->line;
    oaep = k->source == NS_KEK_SRC_PKCS11 && strcmp(k->mechanism, "rsa-oaep") == 0;
    if (!oaep && k->oaep_hash != NULL)
        return ns_cfg_fail(c, ns_cfg_key_line(&kek_spec, lines, "oaep_hash"),
                           "%s.oaep_hash is only valid with mechanism rsa-oaep", path);
    if (oaep && (r = ns_cfg_set_default(&k->oaep_hash, "auto")) != 0)
        return r;
    return kek_check_remote(c, lines, path, k);
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
