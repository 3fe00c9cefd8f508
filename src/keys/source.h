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
 * name the source through its description, never a credential or a value. The helpers the source files
 * share are in source_backends.h. */
#ifndef NS_KEYS_SOURCE_H
#define NS_KEYS_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "keys/kek_config.h"

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

/* Fetch the key bytes of a software source: a new secret buffer of exactly NS_DEK_LEN bytes. desc is the
 * entry's description (ns_kek_source_describe), which messages name. NS_E_INVAL for pkcs11 entries. Errors
 * of the source pass through (NS_E_SOURCE, NS_E_SOURCE_DENIED, NS_E_NOT_FOUND, NS_E_KEY_FORMAT,
 * NS_E_FORMAT, NS_E_PERM, ...). The keyring makes the KEK from them (keyring.h). */
int ns_kek_source_fetch(const ns_kek_config *kc, const char *desc, ns_buf **key) NS_WUR;

#endif
