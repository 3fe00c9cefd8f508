/* Registration records as GET /v1/agent/files needs them, remembered (doc/server.md "Caching").
 *
 * ns_svc_files needs one field of the agent's record: its instance group. Reading the record costs a
 * storage read and a JSON parse per request, so the group is remembered per (record name, client
 * certificate): a slot holds the record's object name, the SHA-256 of the certificate that read it, the
 * group and when it was read. It is used again only for the same name and the same certificate, and for at
 * most ttl_ms (the server uses server.cache_check). So:
 *   - a registration or renewal on this server forgets the name at once (ns_recs_forget after the write);
 *   - a registration or renewal on another server sharing the store issues a new certificate, which misses
 *     (its fingerprint differs) and reads the record; an older certificate of the same agent, while still
 *     valid, may see the previous group for at most ttl_ms;
 *   - a deleted record is noticed within ttl_ms.
 * Nothing secret is kept (names and a group). Fixed size, direct-mapped by a hash of the name: a collision
 * replaces the slot. Only successful reads with a group are remembered. One mutex. */
#ifndef NS_SERVICE_RECORDS_H
#define NS_SERVICE_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define NS_RECS_SLOTS     512
#define NS_RECS_GROUP_MAX 128

typedef struct ns_recs ns_recs;

int ns_recs_new(int64_t ttl_ms, ns_recs **out) NS_WUR;
void ns_recs_free(ns_recs *c);

/* The group remembered for record `name` read with certificate fingerprint fp, at now_ms (a monotonic
 * clock): 0 and group filled (n bytes), or NS_E_NOT_FOUND. */
int ns_recs_get(ns_recs *c, const char *name, const uint8_t fp[32], int64_t now_ms, char *group,
                size_t n) NS_WUR;
/* Remember group for (name, fp), read at now_ms. Names or groups too long are not remembered. */
void ns_recs_put(ns_recs *c, const char *name, const uint8_t fp[32], const char *group, int64_t now_ms);
/* Forget record `name` (it was just written). */
void ns_recs_forget(ns_recs *c, const char *name);

/* A monotonic clock in milliseconds, for the calls above. */
int64_t ns_recs_clock_ms(void);

#endif
