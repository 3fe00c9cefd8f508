/* Secret documents: the plaintext inside a secret's envelope (doc/secrets.md has the format).
 *
 * A document has a type (keytype.h) and 1..NS_SECRET_KEYS_MAX keys in order. keys[0] is the key in use
 * ("current"); a new key distributed ahead of use sits at keys[1] as "pending"; the rest are "previous"
 * keys, newest first, still accepted by consumers until retired. Stored as JSON (jansson, secure heap):
 *
 *   {"format": "nstance-secret", "version": 1, "type": "ecdsa-p256",
 *    "keys": [{"id": "...", "created_at": "2026-11-28T10:00:00Z", "state": "current", "pkcs8": "<base64>"}]}
 *
 * Key pairs carry "pkcs8" (PKCS#8 DER, base64) and their id is the RFC 7638 thumbprint of the public key;
 * random and opaque keys carry "data" (base64) and a random id. Parsing is strict: unknown members, a
 * wrong id, a misplaced state or an undecodable key are NS_E_FORMAT. */
#ifndef NS_SECRETS_DOCUMENT_H
#define NS_SECRETS_DOCUMENT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>

#include "common/buf.h"
#include "common/err.h"
#include "secrets/keytype.h"

#define NS_SECRET_KEYS_MAX 16
#define NS_DOC_FORMAT      "nstance-secret"
#define NS_DOC_VERSION     1

enum ns_key_state { NS_KEY_CURRENT = 1, NS_KEY_PENDING = 2, NS_KEY_PREVIOUS = 3 };

typedef struct ns_secret_key {
    char id[NS_KEY_ID_MAX];
    int64_t created_at; /* seconds since the epoch, UTC */
    enum ns_key_state state;
    ns_buf *material; /* secret: PKCS#8 DER for key pairs, the bytes otherwise */
} ns_secret_key;

typedef struct ns_secret_doc {
    const ns_keytype *type;
    size_t n;
    ns_secret_key keys[NS_SECRET_KEYS_MAX];
} ns_secret_doc;

const char *ns_key_state_name(enum ns_key_state s);

int ns_doc_parse(const uint8_t *p, size_t n, ns_secret_doc **out) NS_WUR;
/* JSON text into a new secret buffer. */
int ns_doc_serialize(const ns_secret_doc *d, ns_buf **out) NS_WUR;
void ns_doc_free(ns_secret_doc *d);

/* A new key of type t into *k (k->material owned by the caller until added):
 *   key pairs: generated, or imported from `from` (PEM or PKCS#8 DER; must be of type t);
 *   random: `random_len` bytes (1..NS_RANDOM_MAX);
 *   opaque: the bytes of `from` (required, 1..NS_OPAQUE_MAX). */
int ns_doc_make_key(const ns_keytype *t, const uint8_t *from, size_t from_len, size_t random_len,
                    ns_secret_key *k) NS_WUR;

/* A new document holding one current key (ownership of k->material moves into it). */
int ns_doc_new(const ns_keytype *t, ns_secret_key *k, ns_secret_doc **out) NS_WUR;

/* Lifecycle. ns_doc_rotate puts k in front (current; the old current becomes previous), or with pending
 * right after the current key. Every refusal is NS_E_CONFLICT with the reason logged: a pending key exists
 * (rotate), the document is full (NS_SECRET_KEYS_MAX), the key is already in it, there is no pending key
 * (promote), the oldest key is the only one or is pending (retire). */
int ns_doc_rotate(ns_secret_doc *d, ns_secret_key *k, int pending) NS_WUR;
int ns_doc_promote(ns_secret_doc *d) NS_WUR;
int ns_doc_retire(ns_secret_doc *d, char removed_id[NS_KEY_ID_MAX]) NS_WUR;

/* The private key of keys[i] (key-pair documents only). */
int ns_doc_key_pkey(const ns_secret_doc *d, size_t i, EVP_PKEY **out) NS_WUR;

void ns_secret_key_clear(ns_secret_key *k);

/* "2026-11-28T10:00:00Z" <-> seconds. */
void ns_time_format(int64_t t, char out[32]);
int ns_time_parse(const char *s, int64_t *out) NS_WUR;

#endif
