/* AES-256-GCM in software (OpenSSL), with 12-byte nonces and 16-byte tags, and associated data given as
 * a list of pieces so callers need not concatenate. Used by software KEKs and by the envelope payload. */
#ifndef NS_KEYS_AEAD_H
#define NS_KEYS_AEAD_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define NS_AEAD_KEY   32
#define NS_AEAD_NONCE 12
#define NS_AEAD_TAG   16

typedef struct ns_iov {
    const void *p;
    size_t n;
} ns_iov;

/* ct receives n bytes (may equal pt), tag 16 bytes. */
int ns_aead_seal(const uint8_t key[NS_AEAD_KEY], const uint8_t nonce[NS_AEAD_NONCE], const ns_iov *aad,
                 size_t naad, const uint8_t *pt, size_t n, uint8_t *ct, uint8_t tag[NS_AEAD_TAG]) NS_WUR;

/* pt receives n bytes; on a tag mismatch NS_E_INTEGRITY and pt is wiped. */
int ns_aead_open(const uint8_t key[NS_AEAD_KEY], const uint8_t nonce[NS_AEAD_NONCE], const ns_iov *aad,
                 size_t naad, const uint8_t *ct, size_t n, const uint8_t tag[NS_AEAD_TAG],
                 uint8_t *pt) NS_WUR;

/* A key kept ready for several operations (the envelope uses the DEK twice: header tag, then payload):
 * the key schedule is computed once. Lives in the secure heap; ns_aead_free wipes it. */
typedef struct ns_aead ns_aead;
int ns_aead_new(const uint8_t key[NS_AEAD_KEY], ns_aead **out) NS_WUR;
int ns_aead_open_with(ns_aead *a, const uint8_t nonce[NS_AEAD_NONCE], const ns_iov *aad, size_t naad,
                      const uint8_t *ct, size_t n, const uint8_t tag[NS_AEAD_TAG], uint8_t *pt) NS_WUR;
void ns_aead_free(ns_aead *a);

/* n random bytes from OpenSSL's CSPRNG. */
int ns_random(void *p, size_t n) NS_WUR;

#endif
