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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/err.h"
#include "keys/kek_config.h"
#include "keys/kek.h"
#include "net/http.h"

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

/* A NUL-terminated secret copy of s[0..n) (len n, the NUL after it). */
int ns_source_secret_str(const char *s, size_t n, ns_buf **out) NS_WUR;

/* "<prefix><token>" as a secret C string (e.g. an Authorization header value "Bearer <token>"). */
int ns_source_header_value(const char *prefix, const ns_buf *token, ns_buf **out) NS_WUR;

/* Response bodies of key sources are refused beyond this size. */
#define NS_SOURCE_BODY_MAX (64u * 1024u)

/* An HTTP client for one fetch with the entry's ca_file, timeout (connect and whole attempt) and retries. */
int ns_source_http_new(const ns_kek_config *kc, ns_http_client **out) NS_WUR;

/* Send req. 0 with *resp for any status; NS_E_SOURCE (logged: "<desc>: <what>: no answer ...") when no
 * response came after every attempt; NS_E_SOURCE too for an oversized response. */
int ns_source_send(ns_http_client *h, const char *desc, const char *what, const ns_http_req *req,
                   ns_http_resp **resp) NS_WUR;

/* An error identifier from a JSON error body, for messages: AWS `__type` (after any '#'), OAuth `error`,
 * Google `error.status`, Azure `error.code`. Only [A-Za-z0-9_.-], at most 64 characters; "" otherwise.
 * Never free text (a message could quote a credential back). */
void ns_source_error_code(const ns_http_resp *resp, char out[65]);

/* Log "<desc>: <what>: HTTP <status>[ <code>]" and return err. */
int ns_source_fail(const char *desc, const char *what, long status, const char *code, int err) NS_WUR;

/* 0 for a 2xx answer; otherwise ns_source_fail() with 401/403 -> NS_E_SOURCE_DENIED, 404 ->
 * NS_E_NOT_FOUND, anything else -> NS_E_SOURCE. */
int ns_source_check_status(const char *desc, const char *what, const ns_http_resp *resp) NS_WUR;

/* Parse a JSON object from a response body (jansson in the secure heap, common/json.h); NS_E_FORMAT
 * (logged) if it is not one. */
int ns_source_json(const char *desc, const char *what, const ns_buf *body, json_t **out) NS_WUR;

/* The string at root.k1[.k2[.k3]] (keys NULL-terminated), or NULL if any step is missing or not of the
 * right type. Borrowed from root. */
const char *ns_source_json_str(const json_t *root, size_t *len, ...) __attribute__((sentinel));

/* The access_token of an OAuth 2.0 token answer (RFC 6749 §5.1; token_type, if present, must be Bearer)
 * as a new secret string. NS_E_FORMAT (logged) otherwise. */
int ns_source_bearer_token(const char *desc, const char *what, const ns_http_resp *resp,
                           ns_buf **token) NS_WUR;

/* ---- OAuth 2.0 steps of the cloud sources (source_oauth.c) ---- */

/* The length of url without its trailing slashes (configured base URLs may end in one). */
size_t ns_source_base_len(const char *url);

/* A bearer token from an instance metadata service: GET url with the one header hdr (e.g. Metadata: true),
 * 2xx required, the answer an OAuth token answer (ns_source_bearer_token). With echoed, the answer must
 * carry the same header and value (Google's Metadata-Flavor), else NS_E_FORMAT. */
int ns_source_metadata_token(ns_http_client *h, const char *desc, const char *what, const char *url,
                             const ns_http_header *hdr, bool echoed, ns_buf **token) NS_WUR;

/* A bearer token from a grant: POST the form (application/x-www-form-urlencoded) to the token endpoint
 * url. A 400 is a refused grant (RFC 6749 §5.2): NS_E_SOURCE_DENIED, logged with the error code. */
int ns_source_grant_token(ns_http_client *h, const char *desc, const char *what, const char *url,
                          const ns_buf *form, ns_buf **token) NS_WUR;

/* GET url with "Authorization: Bearer <token>"; 2xx required (ns_source_check_status); the body parsed
 * as a JSON object (ns_source_json). */
int ns_source_bearer_get_json(ns_http_client *h, const char *desc, const char *what, const char *url,
                              const ns_buf *token, json_t **doc) NS_WUR;

#endif
