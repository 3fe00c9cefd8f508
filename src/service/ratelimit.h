/* Rate limits of the server (doc/server.md "Rate limits"), in memory, per process.
 *
 *   renewals:      at most one per identity (its registration record's name) per interval. A renewal takes
 *                  the identity's slot before the CA signs; a renewal that then fails gives it back.
 *   registrations: a token bucket per source address (IPv4 address, IPv6 /64, an unknown address shares
 *                  one bucket): `burst` tokens, refilled at `per_minute`.
 *
 * Both are fixed tables of NS_RL_SLOTS slots, indexed by a keyed SHA-256 of the key (a random key per
 * process, so a client cannot pick addresses or names that collide on purpose). A collision never resets a
 * limit: a registration bucket is handed to another address only once it is full again (idle), else the
 * two addresses share it; a renewal slot held by another identity within its interval lets the newcomer
 * through untracked (the record's issued_at still limits it, registration.c). One mutex. Standby servers
 * do not share these tables; the per-identity renewal limit is also enforced from the record itself. */
#ifndef NS_SERVICE_RATELIMIT_H
#define NS_SERVICE_RATELIMIT_H

#include <stdint.h>

#include "common/err.h"

#define NS_RL_SLOTS 4096

typedef struct ns_rl ns_rl;

int ns_rl_new(ns_rl **out) NS_WUR;
void ns_rl_free(ns_rl *rl);

/* A renewal of identity `key` at now_ms (a monotonic clock): 0 (the slot is taken until now_ms +
 * interval_ms), or NS_E_RATE_LIMITED with *retry_ms the time left. interval_ms 0: always 0. */
int ns_rl_renew_take(ns_rl *rl, const char *key, int64_t now_ms, int64_t interval_ms,
                     int64_t *retry_ms) NS_WUR;
/* Give back the slot taken at taken_ms by ns_rl_renew_take for `key` (the renewal failed). */
void ns_rl_renew_give_back(ns_rl *rl, const char *key, int64_t taken_ms);

/* A registration from address `addr` (text, as the TCP peer; NULL or unparsable: the shared "unknown"
 * bucket) at now_ms: 0 (a token taken), or NS_E_RATE_LIMITED with *retry_ms until the next token. */
int ns_rl_register_take(ns_rl *rl, const char *addr, int64_t now_ms, unsigned burst, unsigned per_minute,
                        int64_t *retry_ms) NS_WUR;

#endif
