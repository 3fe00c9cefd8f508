#include "ns-build.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "jwt/nonce_config.h"
#include "pkcs11/uri.h"

#define DAY        86400u
#define MAX_LEEWAY 300

static bool valid_issuer(const char *s)
{
    return ns_cfg_valid_dn_value(s) && strlen(s) <= 128;
}

#define F(k, t, m, ...) NS_CFG_ROW(ns_nonce_config, k, t, m, __VA_ARGS__)
static const ns_cfg_field nonce_fields[] = {
    F("keys", NS_CFG_STRV, keys, .valid = ns_p11_uri_valid, .rule = NS_P11_URI_RULE, .secret = true),
    F("pin_env", NS_CFG_STR, pin_env, .valid = ns_cfg_valid_env_name, .rule = NS_CFG_RULE_ENV),
    F("issuer", NS_CFG_STR, issuer, .valid = valid_issuer, .rule = "must be 1..128 printable characters"),
    F("leeway", NS_CFG_DURATION, leeway, .min = 1, .max = MAX_LEEWAY),
    F("agent_ttl", NS_CFG_DURATION, agent_ttl, .min = 10, .max = 30 * DAY),
    F("operator_ttl", NS_CFG_DURATION, operator_ttl, .min = 10, .max = 30 * DAY),
};
static const ns_cfg_spec nonce_spec = NS_CFG_SPEC(NULL, NULL, nonce_fields);

int ns_nonce_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *slot)
{
    ns_nonce_config *nc = slot;

    return ns_cfg_parse_struct(c, v, what, &nonce_spec, nc, &nc->line);
}

int ns_nonce_config_finish(ns_nonce_config *nc, const char *cluster_id)
{
    char iss[160];

    snprintf(iss, sizeof(iss), "nstance-secrets/%s", cluster_id);
    if (ns_cfg_set_default(&nc->issuer, iss) != 0)
        return NS_E_NOMEM;
    if (nc->leeway == 0)
        nc->leeway = 60;
    if (nc->agent_ttl == 0)
        nc->agent_ttl = 5 * 60;
    if (nc->operator_ttl == 0)
        nc->operator_ttl = 3 * 3600;
    return 0;
}

void ns_nonce_config_clear(ns_nonce_config *nc)
{
    ns_cfg_clear(&nonce_spec, nc);
}
