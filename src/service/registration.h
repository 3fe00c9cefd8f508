/* Registration records (doc/protocol.md): where they live and how they read.
 *   agents:    shard/<shard>/instance/<tenant>.<sub>.json
 *   operators: cluster/operator/<tenant>.<sub>.json
 * The endpoints themselves are ns_svc_register / ns_svc_renew (service.h), in registration.c. */
#ifndef NS_SERVICE_REGISTRATION_H
#define NS_SERVICE_REGISTRATION_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"
#include "service/service.h"

/* The record's object name into out (n bytes). NS_E_NAME if it is not a valid object name. */
int ns_record_name(const char *kind, const char *shard, const char *tenant, const char *sub, char *out,
                   size_t n) NS_WUR;

/* The agent record of peer in this server's shard, parsed. NS_E_NOT_FOUND if there is none. */
int ns_svc_read_record(ns_svc *svc, const ns_peer *peer, char *name, size_t n, json_t **out) NS_WUR;

/* The instance group of peer's agent record (n bytes), remembered in svc->recs (records.h) for the
 * certificate that asked. NS_E_NOT_FOUND without a record or a group; storage errors as they are. */
int ns_svc_agent_group(ns_svc *svc, const ns_peer *peer, char *group, size_t n) NS_WUR;

#endif
