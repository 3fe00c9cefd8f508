/* The keyring: the primary KEK (every new write) and the old KEKs (decrypt only), looked up by id. */
#ifndef NS_KEYS_KEYRING_H
#define NS_KEYS_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "keys/kek_config.h"
#include "keys/kek.h"

typedef struct ns_keyring_entry {
    const ns_kek_config *cfg; /* borrowed from the config */
    ns_kek *kek;              /* NULL if it could not be loaded */
    int status;               /* 0, or the error that kept it from loading */
    int primary;
} ns_keyring_entry;

typedef struct ns_keyring {
    ns_keyring_entry *e; /* e[0] is the primary when the config has one */
    size_t n;
    const ns_keys_config
        *cfg; /* borrowed: what ns_keyring_reload() reads again; NULL for ns_keyring_from_keks */
    int mode;
} ns_keyring;

enum {
    NS_KEYRING_STRICT = 0,   /* every configured KEK must load */
    NS_KEYRING_TOLERANT = 1, /* keep going; failures are recorded per entry (kek list) */
};

/* Load every KEK of the config: tokens are opened, external sources fetched (once, here). NS_E_CONFIG if
 * there is no encryption_key; in strict mode the first failure is returned. Two entries with the same id
 * are an error (the same key configured twice). cfg must outlive the ring. */
int ns_keyring_load(const ns_keys_config *cfg, int mode, ns_keyring **out) NS_WUR;

/* A software KEK (`file`, `env` or an external store): the source fetches the key bytes (source.h) and
 * this makes the KEK (ns_kek_soft_new), whose `source` is the entry's description; logs "loaded
 * encryption key from <description>". NS_E_INVAL for pkcs11 entries; errors of the source pass through. */
int ns_keyring_load_soft(const ns_kek_config *kc, ns_kek **out) NS_WUR;

/* Load every KEK again from the same config (a server calls this on SIGHUP, so that a key changed in an
 * external store or a key file is picked up without a restart). All or nothing: the new ring is built
 * beside the old one and replaces it only if it loads (in the ring's mode); on failure kr is unchanged
 * and still usable, and the error is returned. Ids that were in the ring and are no longer are logged as
 * warnings (blobs under them cannot be opened until that key is configured again, e.g. as an old key).
 * Not thread-safe: callers that share kr between threads hold a lock that excludes every other use
 * during the call (or build a ring with ns_keyring_load and swap pointers themselves). NS_E_INVAL for a
 * ring made by ns_keyring_from_keks. */
int ns_keyring_reload(ns_keyring *kr) NS_WUR;

/* Build a ring from already-made KEKs (tests, benchmarks): keks[0] becomes primary; takes ownership. */
int ns_keyring_from_keks(ns_kek **keks, size_t n, ns_keyring **out) NS_WUR;

void ns_keyring_free(ns_keyring *kr);

/* The primary KEK, or NULL. */
ns_kek *ns_keyring_primary(const ns_keyring *kr);

/* The loaded KEK with this id, or NULL. */
ns_kek *ns_keyring_find(const ns_keyring *kr, const uint8_t id[NS_KEK_ID_LEN]);

#endif
