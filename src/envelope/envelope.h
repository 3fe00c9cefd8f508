/* The envelope: the format of every encrypted blob (doc/envelope.md has the byte layout and a worked
 * example).
 *
 *   magic "NSEN" | version 1 | mech | param | flags 0 | kek id (16) | u16 wrapped length | wrapped DEK
 *   | header nonce (12) | header tag (16) | payload nonce (12) | payload ciphertext | payload tag (16)
 *
 * A fresh random 256-bit DEK per blob. The payload is AES-256-GCM under the DEK with associated data
 * "NSEN" | version | u16 name length | name, so a blob copied under another name fails. The header tag is
 * AES-256-GCM under the DEK over no plaintext, with associated data = every header byte before the tag
 * plus the same name binding, so any flipped header bit fails too. Rewrap replaces only the header (new
 * KEK id, wrapped DEK, header nonce and tag); the payload bytes stay exactly as they were. */
#ifndef NS_ENVELOPE_ENVELOPE_H
#define NS_ENVELOPE_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "keys/kek.h"
#include "keys/keyring.h"

#define NS_ENVELOPE_VERSION 1
#define NS_PLAINTEXT_MAX    (1u << 20) /* 1 MiB */
#define NS_BLOB_MAX         (NS_PLAINTEXT_MAX + 2048u)
#define NS_ENV_NAME_MAX     1024

typedef struct ns_envelope_info {
    uint8_t version;
    uint8_t mech;
    uint8_t param;
    uint8_t kek_id[NS_KEK_ID_LEN];
    size_t header_len;  /* bytes before the payload nonce */
    size_t payload_len; /* plaintext length */
} ns_envelope_info;

/* Encrypt pt under the ring's primary KEK for the object `name`. */
int ns_envelope_seal(const ns_keyring *kr, const char *name, const uint8_t *pt, size_t n,
                     ns_buf **blob) NS_WUR;

/* Decrypt; *pt is a new secret buffer. info may be NULL. Errors: NS_E_FORMAT (malformed or truncated),
 * NS_E_VERSION, NS_E_KEK_UNKNOWN, NS_E_KEK_WRONG, NS_E_INTEGRITY, token errors. */
int ns_envelope_open(const ns_keyring *kr, const char *name, const uint8_t *blob, size_t n, ns_buf **pt,
                     ns_envelope_info *info) NS_WUR;

/* Parse the header only (no key needed): for counting blobs per KEK id and for the fuzzer. */
int ns_envelope_parse(const uint8_t *blob, size_t n, ns_envelope_info *info) NS_WUR;

/* Re-wrap the DEK under the primary KEK. The blob is fully verified first; the payload bytes are copied
 * unchanged. *out is NULL and 0 returned if the blob is already under the primary. */
int ns_envelope_rewrap(const ns_keyring *kr, const char *name, const uint8_t *blob, size_t n,
                       ns_buf **out) NS_WUR;

#endif
