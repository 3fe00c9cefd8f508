/* The keyring: the primary KEK (every new write) and the old KEKs (decrypt only), looked up by id. */
#ifndef NS_KEYS_KEYRING_H
#define NS_KEYS_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
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
} ns_keyring;

enum {
    NS_KEYRING_STRICT = 0,   /* every configured KEK must load */
    NS_KEYRING_TOLERANT = 1, /* keep going; failures are recorded per entry (kek list) */
};

/* Load every KEK of the config. NS_E_CONFIG if there is no encryption_key; in strict mode the first
 * failure is returned. Two entries with the same id are an error (the same key configured twice). */
int ns_keyring_load(const ns_config *cfg, int mode, ns_keyring **out) NS_WUR;

/* Build a ring from already-made KEKs (tests, benchmarks): keks[0] becomes primary; takes ownership. */
int ns_keyring_from_keks(ns_kek **keks, size_t n, ns_keyring **out) NS_WUR;

void ns_keyring_free(ns_keyring *kr);

/* The primary KEK, or NULL. */
ns_kek *ns_keyring_primary(const ns_keyring *kr);

/* The loaded KEK with this id, or NULL. */
ns_kek *ns_keyring_find(const ns_keyring *kr, const uint8_t id[NS_KEK_ID_LEN]);

#endif
