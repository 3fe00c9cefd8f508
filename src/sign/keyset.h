/* The signing keys of one role (the CA, or the registration-nonce key), newest first.
 *
 * Either token keys listed by URI in the config (in config order), or the key pairs of a secret
 * (`ca.key`, `registration-nonce.key`) in document order: the current key first, then a pending one, then
 * previous ones. The first key signs; every key verifies. A key is found by its id (RFC 7638 thumbprint of
 * its public key), which is what a JWS `kid` carries and what a certificate's public key gives. */
#ifndef NS_SIGN_KEYSET_H
#define NS_SIGN_KEYSET_H

#include <stddef.h>

#include "common/err.h"
#include "common/strv.h"
#include "keys/keyring.h"
#include "sign/signer.h"
#include "store/store.h"

typedef struct ns_keyset {
    ns_signer **s;
    size_t n;
    char *origin; /* "secret registration-nonce.key" or "token keys (ca.keys)", for messages */
} ns_keyset;

/* Token keys when `uris` is not empty (each opened and checked; NS_E_INVAL if two URIs name the same key),
 * else the key pairs of the secret stored at `secret_object` (NS_E_NOT_FOUND if it does not exist; a secret
 * of a type that cannot sign is NS_E_INVAL). */
int ns_keyset_load(const ns_strv *uris, const char *pin_env, unsigned sessions, ns_store *st,
                   const ns_keyring *kr, const char *secret_object, ns_keyset **out) NS_WUR;

/* The signer with this id, or NULL. */
ns_signer *ns_keyset_find(const ns_keyset *ks, const char *id);

void ns_keyset_free(ns_keyset *ks);

#endif
