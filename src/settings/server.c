#include "ns-build.h"

#include <stddef.h>
#include <string.h>

#include "settings/settings.h"

/* server.listen: "HOST:PORT" with HOST an IPv4 dotted quad, "[IPv6]" or "localhost", PORT 0..65535. */
static bool valid_listen(const char *s)
{
    const char *colon = strrchr(s, ':');
    size_t hn, pn;
    unsigned long port = 0;

    if (colon == NULL || strlen(s) > 64)
        return false;
    hn = (size_t)(colon - s);
    pn = strlen(colon + 1);
    if (hn == 0 || pn == 0 || pn > 5)
        return false;
    for (size_t i = 0; i < pn; i++) {
        if (colon[1 + i] < '0' || colon[1 + i] > '9')
            return false;
        port = port * 10 + (unsigned long)(colon[1 + i] - '0');
    }
    if (port > 65535)
        return false;
    if (hn == 9 && strncmp(s, "localhost", 9) == 0)
        return true;
    if (s[0] == '[')
        return s[hn - 1] == ']' && hn > 2 && strspn(s + 1, "0123456789abcdefABCDEF:.") == hn - 2;
    return strspn(s, "0123456789.") == hn;
}

/* server.names: a DNS name or an IP literal, checked again (strictly) when the certificate is made. */
static bool valid_server_name(const char *s)
{
    return ns_cfg_chars(s, 1, 253, NS_CFG_ALNUM ".-:*");
}

#define DAY             86400u
#define YEAR            (366u * DAY)
#define F(k, t, m, ...) NS_CFG_ROW(ns_server_config, k, t, m, __VA_ARGS__)
static const ns_cfg_field server_fields[] = {
    F("listen", NS_CFG_STR, listen, .valid = valid_listen,
      .rule = "must be HOST:PORT with HOST an IPv4 address, [IPv6 address] or localhost"),
    F("names", NS_CFG_STRV, names, .valid = valid_server_name, .rule = "must be a DNS name or an IP address"),
    F("agent_cert_ttl", NS_CFG_DURATION, agent_cert_ttl, .min = 60, .max = 5 * YEAR),
    F("operator_cert_ttl", NS_CFG_DURATION, operator_cert_ttl, .min = 60, .max = 5 * YEAR),
    F("max_connections", NS_CFG_UINT, max_connections, .min = 1, .max = 65536),
    F("header_timeout", NS_CFG_DURATION, header_timeout, .min = 1, .max = 3600),
    F("idle_timeout", NS_CFG_DURATION, idle_timeout, .min = 1, .max = DAY),
    F("cache_check", NS_CFG_DURATION, cache_check, .min = 1, .max = DAY),
    F("threads", NS_CFG_UINT, threads, .min = 1, .max = 64),
    /* 0s allowed (min 0): no limit, no hand-over. */
    F("renew_min_interval", NS_CFG_DURATION, renew_min_interval, .min = 0, .max = DAY),
    F("renew_grace", NS_CFG_DURATION, renew_grace, .min = 0, .max = DAY),
    F("register_burst", NS_CFG_UINT, register_burst, .min = 1, .max = 1000000),
    F("register_per_minute", NS_CFG_UINT, register_per_minute, .min = 1, .max = 1000000),
};
static const ns_cfg_spec server_spec = NS_CFG_SPEC(NULL, NULL, server_fields);

void ns_server_config_init(ns_server_config *sc)
{
    sc->agent_cert_ttl = 24 * 3600;
    sc->operator_cert_ttl = 8 * 3600;
    sc->max_connections = 1024;
    sc->header_timeout = 10;
    sc->idle_timeout = 60;
    sc->cache_check = 5;
    sc->threads = 4;
    sc->renew_min_interval = 60; /* these two may be set to 0s (off) */
    sc->renew_grace = 600;
    sc->register_burst = 20;
    sc->register_per_minute = 60;
}

int ns_server_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *slot)
{
    ns_server_config *sc = slot;

    return ns_cfg_parse_struct(c, v, what, &server_spec, sc, &sc->line);
}

int ns_server_config_finish(ns_server_config *sc)
{
    if (ns_cfg_set_default(&sc->listen, "127.0.0.1:8443") != 0)
        return NS_E_NOMEM;
    if (sc->names.n == 0 &&
        (ns_strv_push(&sc->names, "localhost") != 0 || ns_strv_push(&sc->names, "127.0.0.1") != 0))
        return NS_E_NOMEM;
    return 0;
}

void ns_server_config_clear(ns_server_config *sc)
{
    ns_cfg_clear(&server_spec, sc);
}
