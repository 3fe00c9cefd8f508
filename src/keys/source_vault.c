#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "common/secmem.h"
#include "keys/source_backends.h"

/* HashiCorp Vault, KV secrets engine version 2: GET <address>/v1/<mount>/data/<path> with X-Vault-Token
 * (and X-Vault-Namespace); the key is the string data.data.<field> of the answer. The token comes from a
 * file, an environment variable, or an AppRole login (POST <address>/v1/auth/<mount>/login), whose token is
 * revoked again once the key is read. */

#define TOKEN_FILE_MAX 4096u

/* The address without trailing slashes: its length. */
static size_t base_len(const char *address)
{
    size_t n = strlen(address);

    while (n > 0 && address[n - 1] == '/')
        n--;
    return n;
}

static void vault_describe(const ns_kek_config *kc, char *out, size_t n)
{
    snprintf(out, n, "vault %.*s %s/%s#%s", (int)base_len(kc->address), kc->address, kc->mount, kc->kv_path,
             kc->field);
}

/* The request headers: the token (if any) and the namespace (if configured). */
static size_t vault_headers(const ns_kek_config *kc, const ns_buf *token, ns_http_header h[3])
{
    size_t n = 0;

    if (token != NULL)
        h[n++] = (ns_http_header){"X-Vault-Token", (const char *)token->data};
    if (kc->vault_namespace != NULL)
        h[n++] = (ns_http_header){"X-Vault-Namespace", kc->vault_namespace};
    return n;
}

static int approle_login(const ns_kek_config *kc, const char *desc, ns_http_client *h, ns_buf **token)
{
    ns_buf *secret_id = NULL;
    json_t *body = NULL, *doc = NULL;
    char *text = NULL, *url = NULL;
    const char *tok;
    ns_http_header hdr[3];
    ns_http_resp *resp = NULL;
    ns_http_req req;
    size_t n = 0, tlen = 0;
    int r = NS_E_INTERNAL;

    if ((r = ns_source_read_file(kc->approle.secret_id_file, "vault AppRole secret id file", TOKEN_FILE_MAX,
                                 &secret_id)) != 0)
        goto out;
    ns_json_init();
    if ((body = json_pack("{s:s, s:s%}", "role_id", kc->approle.role_id, "secret_id",
                          (const char *)secret_id->data, secret_id->len)) == NULL ||
        (text = json_dumps(body, JSON_COMPACT)) == NULL ||
        asprintf(&url, "%.*s/v1/auth/%s/login", (int)base_len(kc->address), kc->address, kc->approle.mount) <
            0) {
        url = NULL;
        r = NS_E_NOMEM;
        goto out;
    }
    n = vault_headers(kc, NULL, hdr);
    hdr[n++] = (ns_http_header){"Content-Type", "application/json"};
    req = (ns_http_req){.method = "POST",
                        .url = url,
                        .headers = hdr,
                        .n_headers = n,
                        .body = (const uint8_t *)text,
                        .body_len = strlen(text),
                        .max_body = NS_SOURCE_BODY_MAX,
                        .secret_body = true};
    if ((r = ns_source_send(h, desc, "AppRole login", &req, &resp)) != 0)
        goto out;
    /* Vault answers a wrong role or secret id with 400. */
    if (resp->status == 400) {
        r = ns_source_fail(desc, "AppRole login", resp->status, NULL, NS_E_SOURCE_DENIED);
        goto out;
    }
    if ((r = ns_source_check_status(desc, "AppRole login", resp)) != 0)
        goto out;
    if ((r = ns_source_json(desc, "AppRole login", resp->body, &doc)) != 0)
        goto out;
    if ((tok = ns_source_json_str(doc, &tlen, "auth", "client_token", NULL)) == NULL || tlen == 0) {
        ns_log(NS_LOG_ERROR, "%s: AppRole login: the answer has no auth.client_token", desc);
        r = NS_E_FORMAT;
        goto out;
    }
    r = ns_buf_from_str(tok, tlen, true, token);
out:
    if (text != NULL) {
        ns_wipe(text, strlen(text));
        ns_json_free(text);
    }
    json_decref(body);
    json_decref(doc);
    free(url);
    ns_http_resp_free(resp);
    ns_buf_free(secret_id);
    return r;
}

static int vault_token(const ns_kek_config *kc, const char *desc, ns_http_client *h, ns_buf **token)
{
    const char *v;

    if (kc->approle.role_id != NULL)
        return approle_login(kc, desc, h, token);
    if (kc->token_file != NULL)
        return ns_source_read_file(kc->token_file, "vault token file", TOKEN_FILE_MAX, token);
    v = getenv(kc->token_env);
    if (v == NULL || v[0] == '\0') {
        ns_log(NS_LOG_ERROR, "%s: environment variable %s (the token) is not set", desc, kc->token_env);
        return NS_E_NOT_FOUND;
    }
    return ns_buf_from_str(v, strlen(v), true, token);
}

/* Best effort: a failure leaves a token that expires with its TTL. */
static void revoke_self(const ns_kek_config *kc, const char *desc, ns_http_client *h, const ns_buf *token)
{
    ns_http_header hdr[3];
    ns_http_resp *resp = NULL;
    ns_http_req req;
    char *url = NULL;

    if (asprintf(&url, "%.*s/v1/auth/token/revoke-self", (int)base_len(kc->address), kc->address) < 0)
        return;
    req = (ns_http_req){.method = "POST",
                        .url = url,
                        .headers = hdr,
                        .n_headers = vault_headers(kc, token, hdr),
                        .max_body = NS_SOURCE_BODY_MAX,
                        .no_retry = true};
    if (ns_http_do(h, &req, &resp) != 0 || resp->status < 200 || resp->status > 299)
        ns_log(NS_LOG_WARN, "%s: could not revoke the AppRole token (it expires with its TTL)", desc);
    ns_http_resp_free(resp);
    free(url);
}

static int vault_fetch(const ns_kek_config *kc, const char *desc, ns_buf **key)
{
    ns_http_client *h = NULL;
    ns_buf *token = NULL;
    ns_http_resp *resp = NULL;
    json_t *doc = NULL, *data = NULL;
    ns_http_header hdr[3];
    ns_http_req req;
    char *url = NULL;
    const char *value;
    size_t len = 0;
    int r = NS_E_INTERNAL;

    if ((r = ns_source_http_new(kc, &h)) != 0)
        goto out;
    if ((r = vault_token(kc, desc, h, &token)) != 0)
        goto out;
    if (asprintf(&url, "%.*s/v1/%s/data/%s", (int)base_len(kc->address), kc->address, kc->mount,
                 kc->kv_path) < 0) {
        url = NULL;
        r = NS_E_NOMEM;
        goto out;
    }
    req = (ns_http_req){.method = "GET",
                        .url = url,
                        .headers = hdr,
                        .n_headers = vault_headers(kc, token, hdr),
                        .max_body = NS_SOURCE_BODY_MAX,
                        .secret_body = true};
    if ((r = ns_source_send(h, desc, "reading the secret", &req, &resp)) != 0)
        goto out;
    if ((r = ns_source_check_status(desc, "reading the secret", resp)) != 0)
        goto out;
    if ((r = ns_source_json(desc, "reading the secret", resp->body, &doc)) != 0)
        goto out;
    data = json_object_get(json_object_get(doc, "data"), "data");
    if (!json_is_object(data)) {
        ns_log(NS_LOG_ERROR, "%s: the answer has no data.data object (is the mount a KV version 2 engine?)",
               desc);
        r = NS_E_FORMAT;
        goto out;
    }
    if (json_object_get(data, kc->field) == NULL) {
        ns_log(NS_LOG_ERROR, "%s: the secret has no field '%s'", desc, kc->field);
        r = NS_E_NOT_FOUND;
        goto out;
    }
    if ((value = ns_source_json_str(data, &len, kc->field, NULL)) == NULL) {
        ns_log(NS_LOG_ERROR, "%s: field '%s' is not a string", desc, kc->field);
        r = NS_E_KEY_FORMAT;
        goto out;
    }
    r = ns_source_value_to_key(desc, (const uint8_t *)value, len, key);
out:
    if (token != NULL && kc->approle.role_id != NULL && h != NULL)
        revoke_self(kc, desc, h, token);
    json_decref(doc);
    ns_http_resp_free(resp);
    ns_buf_free(token);
    free(url);
    ns_http_client_free(h);
    return r;
}

const ns_kek_source_ops ns_source_vault_ops = {NS_KEK_SRC_VAULT, "vault", vault_describe, vault_fetch};
