/* Key sources for software KEKs: where the 32-byte AES-256 key of a `file`, `env` or external-store entry
 * comes from. One file per source behind a table of function pointers (source.c lists them):
 *   source_local.c  file, env
 *   source_vault.c  vault                    HashiCorp Vault KV v2 (token, token file or AppRole)
 *   source_aws.c    aws-secrets-manager,     GetSecretValue / GetParameter, SigV4 (net/sigv4.h) with the
 *                   aws-parameter-store      AWS credential chain (net/aws_creds.h)
 *   source_gcp.c    google-secret-manager    versions/V:access; token from the metadata server or an RS256
 *                                            JWT bearer grant with a service-account key
 *   source_azure.c  azure-key-vault          secrets/NAME[/VERSION]; managed identity or client credentials
 * doc/key-sources.md describes each request. The value a store holds is decoded by ns_keymat_parse()
 * (keymat.h): 32 raw bytes, 64 hex digits or 44 base64 characters, nothing else.
 *
 * Secrets (tokens, client secrets, private keys, values) live in the secure heap and are wiped; messages
 * name the source through its description, never a credential or a value. */
#ifndef NS_KEYS_SOURCE_H
#define NS_KEYS_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "config/config.h"
#include "keys/kek.h"

/* Descriptions are cut to this many bytes (NUL included). */
#define NS_SOURCE_DESC_MAX 1024

typedef struct ns_kek_source_ops {
    enum ns_kek_source id;
    const char *name; /* the config's `source:` value */
    /* What `kek list` and messages show: the store and the secret, e.g.
     * "vault https://127.0.0.1:8200 secret/nstance#kek". Never a credential or the value. */
    void (*describe)(const ns_kek_config *kc, char *out, size_t n);
    /* Fetch the key: a new secret buffer of exactly NS_DEK_LEN bytes. Errors are logged naming `desc`. */
    int (*fetch)(const ns_kek_config *kc, const char *desc, ns_buf **key);
} ns_kek_source_ops;

/* The ops of a software source, or NULL (pkcs11, unknown). */
const ns_kek_source_ops *ns_kek_source_find(enum ns_kek_source id);

/* The description of an entry (also for pkcs11: "pkcs11 (line N)"), into out (always NUL-terminated). */
void ns_kek_source_describe(const ns_kek_config *kc, char *out, size_t n);

/* Fetch the key of a software source and make the KEK (ns_kek_soft_new); its `source` is the description.
 * NS_E_INVAL for pkcs11 entries. Errors of the source pass through (NS_E_SOURCE, NS_E_SOURCE_DENIED,
 * NS_E_NOT_FOUND, NS_E_KEY_FORMAT, NS_E_FORMAT, NS_E_PERM, ...). */
int ns_kek_source_load(const ns_kek_config *kc, ns_kek **out) NS_WUR;

/* ---- for the source files ---- */

/* Decode a stored value into the key (ns_keymat_parse). On failure logs "<desc>: the value is not 32 raw
 * bytes, 64 hex digits or 44 base64 characters (N bytes)" and returns NS_E_KEY_FORMAT. */
int ns_source_value_to_key(const char *desc, const uint8_t *p, size_t n, ns_buf **key) NS_WUR;

/* The same for a value that the store's API transports in standard base64 (AWS SecretBinary, Google
 * payload.data): decoded strictly first. */
int ns_source_b64_value_to_key(const char *desc, const char *b64, size_t n, ns_buf **key) NS_WUR;

/* Read a credential file (token, secret id, client secret, service-account key): a regular file, not a
 * symlink, no access for group or others (NS_E_PERM), at most `max` bytes, not empty. One trailing "\n"
 * or "\r\n" is dropped. The result is a secret buffer with a NUL after its `len` bytes (so data is a C
 * string); a NUL inside is NS_E_FORMAT. `what` names the file in messages ("vault token file"). */
int ns_source_read_file(const char *path, const char *what, size_t max, ns_buf **out) NS_WUR;

/* Append "name=value" (with "&" before it unless b is empty) to a form body, percent-encoding every byte
 * outside A-Z a-z 0-9 - . _ ~ (application/x-www-form-urlencoded). */
int ns_source_form_add(ns_buf *b, const char *name, const char *value) NS_WUR;

/* Base64url without padding (RFC 4648 §5, as JWS uses, RFC 7515 §2) of p[0..n), appended to b. */
int ns_source_b64url_append(ns_buf *b, const uint8_t *p, size_t n) NS_WUR;

#endif
