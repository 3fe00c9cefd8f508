#include "ns-build.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "ca/ca_config.h"
#include "pkcs11/uri.h"

#define DAY              86400u
#define YEAR             (366u * DAY)
#define DEFAULT_ROLE_OID "1.3.6.1.4.1.999999.1"

static bool valid_country(const char *s)
{
    return strlen(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z';
}

/* A dotted OID of at least three arcs, digits only (no names: the value goes into certificates). */
static bool valid_oid(const char *s)
{
    size_t arcs = 0, digits = 0;
    for (size_t i = 0;; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            if (digits == 0 && s[i] == '0' && s[i + 1] >= '0' && s[i + 1] <= '9')
                return false;
            if (++digits > 9)
                return false;
        } else if (s[i] == '.' || s[i] == '\0') {
            if (digits == 0)
                return false;
            arcs++;
            digits = 0;
            if (s[i] == '\0')
                break;
        } else {
            return false;
        }
        if (i > 128)
            return false;
    }
    return arcs >= 3 && (s[0] == '0' || s[0] == '1' || s[0] == '2') && s[1] == '.';
}

#define F(k, t, m, ...) NS_CFG_ROW(ns_ca_config, k, t, m, __VA_ARGS__)
#define DN(k, m)                                                                                             \
    F(k, NS_CFG_STR, m, .valid = ns_cfg_valid_dn_value, .rule = "must be 1..64 printable characters")

/* ca.subject: fields of ns_ca_config itself. */
static const ns_cfg_field subject_fields[] = {
    DN("cn", cn),
    DN("o", o),
    F("c", NS_CFG_STR, c, .valid = valid_country,
      .rule = "must be a two-letter country code in capitals (ISO 3166)"),
    DN("st", st),
    DN("l", l),
};
static const ns_cfg_spec subject_spec = NS_CFG_SPEC(NULL, NULL, subject_fields);

static const ns_cfg_field ca_fields[] = {
    F("keys", NS_CFG_STRV, keys, .valid = ns_p11_uri_valid, .rule = NS_P11_URI_RULE, .secret = true),
    F("pin_env", NS_CFG_STR, pin_env, .valid = ns_cfg_valid_env_name, .rule = NS_CFG_RULE_ENV),
    {.key = "subject", .type = NS_CFG_MAPPING, .allowed = 1u, .sub = &subject_spec},
    F("validity", NS_CFG_DURATION, validity, .min = DAY, .max = 50 * YEAR),
    F("path_len", NS_CFG_UINT, path_len, .max = 8),
    F("role_oid", NS_CFG_STR, role_oid, .valid = valid_oid,
      .rule = "must be a dotted numeric OID such as 1.3.6.1.4.1.999999.1"),
    F("cert_ttl", NS_CFG_DURATION, cert_ttl, .min = 60, .max = 5 * YEAR),
};
static const ns_cfg_spec ca_spec = NS_CFG_SPEC(NULL, NULL, ca_fields);

void ns_ca_config_init(ns_ca_config *ca)
{
    ca->path_len = NS_CA_DEFAULT_PATH_LEN; /* 0 is a value one may set: the default goes in first */
    ca->validity = 3650LL * DAY;
    ca->cert_ttl = 24LL * 3600;
}

int ns_ca_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *slot)
{
    ns_ca_config *ca = slot;

    return ns_cfg_parse_struct(c, v, what, &ca_spec, ca, &ca->line);
}

int ns_ca_config_finish(ns_ca_config *ca, const char *cluster_id)
{
    char cn[160];

    snprintf(cn, sizeof(cn), "%s CA", cluster_id);
    if (ns_cfg_set_default(&ca->cn, cn) != 0 || ns_cfg_set_default(&ca->role_oid, DEFAULT_ROLE_OID) != 0)
        return NS_E_NOMEM;
    return 0;
}

void ns_ca_config_clear(ns_ca_config *ca)
{
    ns_cfg_clear(&ca_spec, ca);
}
