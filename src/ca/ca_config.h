/* The `ca` section of the config (doc/config.md, doc/ca.md). */
#ifndef NS_CA_CA_CONFIG_H
#define NS_CA_CA_CONFIG_H

#include <stdint.h>

#include "common/strv.h"
#include "config/schema.h"

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

/* Defaults a key may override, before parsing. */
void ns_ca_config_init(ns_ca_config *ca);

/* The `ca` section into slot (an ns_ca_config). */
int ns_ca_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *slot) NS_WUR;

/* Defaults that depend on the cluster, once everything is read. */
int ns_ca_config_finish(ns_ca_config *ca, const char *cluster_id) NS_WUR;

void ns_ca_config_clear(ns_ca_config *ca);

#endif
