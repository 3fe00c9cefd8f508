/* Registration records (doc/protocol.md): where they live and how they read.
 *   agents:    shard/<shard>/instance/<tenant>/<sub>.json
 *   operators: cluster/operator/<tenant>/<sub>.json
 * tenant, sub and shard are nonce names (no '/'), each its own path segment: the name is injective. Records
 * of the old layout (<tenant>.<sub>.json, where "acme.web"/"1" and "acme"/"web.1" collide) are moved to the
 * new name when their own identity first uses them, and only then (their stored tenant/sub/kind must match).
 * On every use (files, renew) a record must name the certificate's tenant, sub and kind, and the certificate
 * itself (its fingerprint; or, during a renewal's hand-over, the previous one).
 * The endpoints themselves are ns_svc_register / ns_svc_renew (service.h), in registration.c. */
#ifndef NS_SERVICE_REGISTRATION_H
#define NS_SERVICE_REGISTRATION_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"
#include "service/service.h"

/* The record's object name into out (n bytes). NS_E_NAME if tenant, sub or (agents) shard is not a nonce
 * name (ns_nonce_name_ok) or the result is not a valid object name. */
int ns_record_name(const char *kind, const char *shard, const char *tenant, const char *sub, char *out,
                   size_t n) NS_WUR;
/* The same record's name in the old layout (<tenant>.<sub>.json), for migration only. */
int ns_record_legacy_name(const char *kind, const char *shard, const char *tenant, const char *sub, char *out,
                          size_t n) NS_WUR;

/* The instance group of peer's agent record (n bytes), remembered in svc->recs (records.h) for the
 * certificate that asked. NS_E_NOT_FOUND without a record or a group; NS_E_INTEGRITY for a record that is
 * not this identity's; NS_E_CLAIMS for a certificate the record does not name (replaced); storage errors as
 * they are. */
int ns_svc_agent_group(ns_svc *svc, const ns_peer *peer, char *group, size_t n) NS_WUR;

/* The error reply for what read_record / the record checks returned: 404 (NS_E_NOT_FOUND), 403 forbidden
 * (NS_E_INTEGRITY), 403 certificate_replaced (NS_E_CLAIMS), else 503. */
void ns_svc_record_refusal(ns_svc *svc, int r, ns_reply *rp);

#endif
