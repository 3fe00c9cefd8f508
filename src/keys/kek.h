/* Encryption Keys (KEKs): one back-end per mechanism, behind a small table of function pointers.
 *
 * A KEK wraps and unwraps the per-blob data encryption key (DEK, 32 bytes). Back-ends:
 *   kek_soft.c    software AES-256 key (`file`, `env`, external stores: source.h), AES-256-GCM wrap
 *                                                                                      mech NS_MECH_SOFT_GCM
 *   kek_pkcs11.c  token keys: `aes-gcm` (C_Encrypt/C_Decrypt)                          mech NS_MECH_AES_GCM
 *                             `aes-kwp` (C_WrapKey/C_UnwrapKey, RFC 5649)                mech NS_MECH_AES_KWP
 *                             `rsa-oaep` (wrap in software with the public key, unwrap  mech NS_MECH_RSA_OAEP
 *                                         in the token; OAEP hash in `param`)
 *
 * KEK id (16 bytes): a one-way fingerprint of the key, so it is the same on every host and after every
 * restart and tells nothing about the key (doc/envelope.md gives the exact derivation per mechanism). When
 * an unwrap fails, the back-end computes the fingerprint again from the key as it is now: if it no longer
 * matches, the key behind this configuration has changed (NS_E_KEK_WRONG); if it matches, the wrapped key
 * was damaged (NS_E_INTEGRITY). */
#ifndef NS_KEYS_KEK_H
#define NS_KEYS_KEK_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "keys/kek_config.h"

#define NS_KEK_ID_LEN  16
#define NS_DEK_LEN     32
#define NS_WRAPPED_MAX 1024 /* RSA-8192 */

enum ns_kek_mech {
    NS_MECH_AES_GCM = 1,
    NS_MECH_AES_KWP = 2,
    NS_MECH_RSA_OAEP = 3,
    NS_MECH_SOFT_GCM = 4,
};

enum ns_oaep_hash { NS_OAEP_NONE = 0, NS_OAEP_SHA1 = 1, NS_OAEP_SHA256 = 2 };

typedef struct ns_kek ns_kek;

typedef struct ns_kek_ops {
    const char *name; /* "aes-gcm", "aes-kwp", "rsa-oaep", "software-aes-gcm" */
    /* Append the wrapped DEK to `wrapped`; set *param (OAEP hash, or 0). aad binds the wrap to the
     * envelope header (only mechanisms that can carry associated data use it). */
    int (*wrap)(ns_kek *k, const uint8_t dek[NS_DEK_LEN], const uint8_t *aad, size_t aad_len, ns_buf *wrapped,
                uint8_t *param);
    /* Recover the DEK into dek (secure memory owned by the caller). */
    int (*unwrap)(ns_kek *k, uint8_t param, const uint8_t *wrapped, size_t n, const uint8_t *aad,
                  size_t aad_len, uint8_t dek[NS_DEK_LEN]);
    /* Compute the fingerprint of the key as it is now. */
    int (*fingerprint)(ns_kek *k, uint8_t id[NS_KEK_ID_LEN]);
    void (*free)(ns_kek *k);
} ns_kek_ops;

struct ns_kek {
    const ns_kek_ops *ops;
    uint8_t mech;
    uint8_t id[NS_KEK_ID_LEN];
    char *source;  /* "pkcs11 pkcs11:token=...;object=kek-2" (redacted), "file /etc/...", "env NAME",
                      "vault https://... secret/nstance#kek" (source.h): never a credential or key */
    char *warning; /* a caveat shown by `kek list` (e.g. "extractable"), or NULL */
    void *impl;
};

/* Software KEK from a 32-byte key; desc is copied (for messages). */
int ns_kek_soft_new(const uint8_t key[NS_DEK_LEN], const char *desc, ns_kek **out) NS_WUR;

/* Token KEK per config; checks the mechanism and the key's attributes at once. */
int ns_kek_pkcs11_open(const ns_kek_config *kc, unsigned sessions, ns_kek **out) NS_WUR;

/* Create a new key in the token for `mechanism` ("aes-gcm"/"aes-kwp": AES-256 secret key;
 * "rsa-oaep": RSA-3072 key pair), labelled and identified by the URI's object= and id=. Sensitive,
 * non-extractable, token object. NS_E_EXISTS if a key with that label/id exists. */
int ns_kek_pkcs11_generate(const char *uri, const char *mechanism, const char *pin_env,
                           unsigned sessions) NS_WUR;

/* Mechanism name from config ("aes-gcm"...) to enum; 0 if unknown. */
uint8_t ns_kek_mech_from_name(const char *name);
const char *ns_kek_mech_name(uint8_t mech);

/* id = first 16 bytes of SHA-256("nstance-secrets kek-id v1" || mech || material): the one derivation
 * every back-end feeds its key-dependent material into. */
int ns_kek_id_derive(uint8_t mech, const uint8_t *material, size_t n, uint8_t id[NS_KEK_ID_LEN]) NS_WUR;

/* Called by back-ends after an unwrap failed that may mean "wrong key": NS_E_KEK_WRONG if the key's
 * fingerprint no longer matches its id, NS_E_INTEGRITY if it does, or the fingerprint's own error. */
int ns_kek_diagnose_unwrap_failure(ns_kek *k) NS_WUR;

void ns_kek_free(ns_kek *k);

#endif
