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

#define D(k, m, lo, hi)                                                                                      \
    {                                                                                                        \
        .key = k, .type = NS_CFG_DURATION, .off = offsetof(ns_nonce_config, m), .allowed = 1u, .min = lo,    \
        .max = hi                                                                                            \
    }
static const ns_cfg_field nonce_fields[] = {
    {.key = "keys",
     .type = NS_CFG_STRV,
     .off = offsetof(ns_nonce_config, keys),
     .allowed = 1u,
     .valid = ns_p11_uri_valid,
     .rule = NS_P11_URI_RULE,
     .secret = true},
    {.key = "pin_env",
     .type = NS_CFG_STR,
     .off = offsetof(ns_nonce_config, pin_env),
     .allowed = 1u,
     .valid = ns_cfg_valid_env_name,
     .rule = NS_CFG_RULE_ENV},
    {.key = "issuer",
     .type = NS_CFG_STR,
     .off = offsetof(ns_nonce_config, issuer),
     .allowed = 1u,
     .valid = valid_issuer,
     .rule = "must be 1..128 printable characters"},
    D("leeway", leeway, 1, MAX_LEEWAY),
    D("agent_ttl", agent_ttl, 10, 30 * DAY),
    D("operator_ttl", operator_ttl, 10, 30 * DAY),
};
static const ns_cfg_spec nonce_spec = NS_CFG_SPEC(NULL, NULL, nonce_fields);

int ns_nonce_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, void *slot)
{
    ns_nonce_config *nc = slot;
    int lines[NS_CFG_MAX_FIELDS];
    size_t var = 0;

    nc->line = v->line;
    return ns_cfg_parse_map(c, v, "registration_nonce", &nonce_spec, nc, &var, lines);
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
