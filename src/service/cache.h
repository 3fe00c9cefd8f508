/* Decrypted secrets of the templates, kept for the server (doc/server.md "Caching").
 *
 * Each entry is a secret document (secrets/document.h): its key material lives in the secure heap (locked,
 * not dumpable) and is wiped when the entry is replaced or evicted. A miss reads and opens the secret
 * (storage + KEK); ns_cache_refresh() compares every entry's stored version with the cached one and opens
 * the changed ones again, so a `secret rotate` reaches agents without a restart. Each export format is made
 * once per document version and kept beside the document (secure heap, wiped with it). One mutex guards
 * the table: lookups and copies run under it (a miss holds it for one storage read and one unwrap). */
#ifndef NS_SERVICE_CACHE_H
#define NS_SERVICE_CACHE_H

#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "settings/settings.h"
#include "keys/keyring.h"
#include "service/metrics.h"
#include "store/store.h"

typedef struct ns_cache ns_cache;

int ns_cache_new(ns_cache **out) NS_WUR;
void ns_cache_free(ns_cache *c);

/* Secret `name` exported as `format` (secrets/export.h) into a new secret buffer; opened on a miss.
 * Errors of the store and the keyring are returned as they are (NS_E_NOT_FOUND for a missing secret). */
int ns_cache_export(ns_cache *c, ns_store *st, const ns_keyring *kr, ns_metrics *m, const char *name,
                    const char *format, ns_buf **out) NS_WUR;

/* A counter bumped whenever an entry is added, replaced (a changed secret) or dropped: anything made from
 * exports (a rendered answer) is current while it has not moved since it was read before making it. */
unsigned long ns_cache_generation(ns_cache *c);

/* Check every entry against storage and reopen changed ones; an entry that fails keeps its old content
 * (logged). Then drop the entries no template of cfg refers to. */
void ns_cache_refresh(ns_cache *c, ns_store *st, const ns_keyring *kr, ns_metrics *m, const ns_config *cfg);

#endif
