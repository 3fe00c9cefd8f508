/* What the key-source files (source_*.c) share: their ops tables, listed in source.c, and the helpers
 * they fetch with (source.c, source_oauth.c). Only source.c, the source files and their unit test include
 * this header; everyone else goes through source.h. */
#ifndef NS_KEYS_SOURCE_BACKENDS_H
#define NS_KEYS_SOURCE_BACKENDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/err.h"
#include "keys/kek_config.h"
#include "keys/source.h"
#include "net/http.h"

/* The sources, one file each. */
extern const ns_kek_source_ops ns_source_file_ops, ns_source_env_ops;       /* source_local.c */
extern const ns_kek_source_ops ns_source_vault_ops;                         /* source_vault.c */
extern const ns_kek_source_ops ns_source_aws_sm_ops, ns_source_aws_ssm_ops; /* source_aws.c */
extern const ns_kek_source_ops ns_source_gcp_ops;                           /* source_gcp.c */
extern const ns_kek_source_ops ns_source_azure_ops;                         /* source_azure.c */

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

/* The fetch of a cloud source (Google, Azure): a bearer token, a GET of the secret with it, the key from a
 * string of the JSON answer. */
typedef struct ns_source_bearer_step {
    /* The bearer token, by whichever way the entry configures. */
    int (*token)(const ns_kek_config *kc, const char *desc, ns_http_client *h, ns_buf **token);
    /* The secret's URL (a new string; NULL when out of memory). */
    char *(*url)(const ns_kek_config *kc);
    const char *what;    /* the GET, for messages: "reading the secret" */
    const char *k1, *k2; /* the value's JSON path: k1 or k1.k2 (k2 NULL) */
    const char *missing; /* "<desc>: the answer has no <missing>" (NS_E_FORMAT) without it */
    bool b64;            /* the API sends the value in standard base64 (ns_source_b64_value_to_key) */
} ns_source_bearer_step;

/* An HTTP client for the entry (ns_source_http_new), a token from step->token, GET step->url with it
 * (ns_source_bearer_get_json), and the key from the value (ns_source_value_to_key or, with b64,
 * ns_source_b64_value_to_key). */
int ns_source_bearer_fetch(const ns_kek_config *kc, const char *desc, const ns_source_bearer_step *step,
                           ns_buf **key) NS_WUR;

#endif
