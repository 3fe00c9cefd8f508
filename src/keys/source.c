#include "ns-build.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/codec.h"
#include "common/fdio.h"
#include "common/json.h"
#include "common/log.h"
#include "common/secmem.h"
#include "keys/kek.h"
#include "keys/keymat.h"
#include "keys/source_backends.h"

static const ns_kek_source_ops *const sources[] = {
    &ns_source_file_ops,    &ns_source_env_ops, &ns_source_vault_ops, &ns_source_aws_sm_ops,
    &ns_source_aws_ssm_ops, &ns_source_gcp_ops, &ns_source_azure_ops,
};

const ns_kek_source_ops *ns_kek_source_find(enum ns_kek_source id)
{
    for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++)
        if (sources[i]->id == id)
            return sources[i];
    return NULL;
}

void ns_kek_source_describe(const ns_kek_config *kc, char *out, size_t n)
{
    const ns_kek_source_ops *ops = ns_kek_source_find(kc->source);

    if (n == 0)
        return;
    if (ops != NULL)
        ops->describe(kc, out, n);
    else
        snprintf(out, n, "pkcs11 (line %d)", kc->line);
}

int ns_kek_source_fetch(const ns_kek_config *kc, const char *desc, ns_buf **key)
{
    const ns_kek_source_ops *ops = ns_kek_source_find(kc->source);
    ns_buf *k = NULL;
    int r = NS_E_INTERNAL;

    if (ops == NULL)
        return NS_E_INVAL;
    if ((r = ops->fetch(kc, desc, &k)) != 0)
        goto out;
    if (k->len != NS_DEK_LEN) {
        r = NS_E_INTERNAL;
        goto out;
    }
    *key = k;
    k = NULL;
    r = 0;
out:
    ns_buf_free(k);
    return r;
}

int ns_source_value_to_key(const char *desc, const uint8_t *p, size_t n, ns_buf **key)
{
    int r = ns_keymat_parse(p, n, key);

    /* The length helps an operator spot a stray space or a truncated paste; the value itself never shows. */
    if (r == NS_E_KEY_FORMAT)
        ns_log(NS_LOG_ERROR,
               "%s: the value is not 32 raw bytes, 64 hex digits or 44 base64 characters (%zu bytes)", desc,
               n);
    else if (r != 0)
        ns_log(NS_LOG_ERROR, "%s: %s", desc, ns_strerror(r));
    return r;
}

int ns_source_b64_value_to_key(const char *desc, const char *b64, size_t n, ns_buf **key)
{
    ns_buf *raw = NULL;
    int r = NS_E_INTERNAL;

    if ((r = ns_b64_decode(b64, n, true, &raw)) != 0) {
        ns_log(NS_LOG_ERROR, "%s: the value is not valid base64 as the API sends it", desc);
        r = NS_E_KEY_FORMAT;
        goto out;
    }
    r = ns_source_value_to_key(desc, raw->data, raw->len, key);
out:
    ns_buf_free(raw);
    return r;
}

int ns_source_read_file(const char *path, const char *what, size_t max, ns_buf **out)
{
    const ns_file_rules rules = {
        .what = what, .max = max, .secret = true, .owner_only = true, .strip_newline = true};
    ns_buf *b = NULL;
    int r = NS_E_INTERNAL;

    /* As for key files (keymat.c): no symlinks, no FIFOs that could hang us, no group/other access. */
    if ((r = ns_file_read(path, &rules, &b)) != 0) {
        if (r == NS_E_STORAGE)
            r = NS_E_PERM;
        goto out;
    }
    if (b->len == 0 || memchr(b->data, '\0', b->len) != NULL) {
        ns_log(NS_LOG_ERROR, "%s %s is empty or holds a NUL byte", what, path);
        r = NS_E_FORMAT;
        goto out;
    }
    *out = b; /* NUL-terminated by ns_file_read(), the NUL behind len */
    b = NULL;
    r = 0;
out:
    ns_buf_free(b);
    return r;
}

int ns_source_form_add(ns_buf *b, const char *name, const char *value)
{
    int r = NS_E_INTERNAL;

    if (b->len > 0 && (r = ns_buf_put_u8(b, '&')) != 0)
        return r;
    if ((r = ns_pct_encode_append(b, name, strlen(name), false)) != 0 || (r = ns_buf_put_u8(b, '=')) != 0)
        return r;
    return ns_pct_encode_append(b, value, strlen(value), false);
}

int ns_source_header_value(const char *prefix, const ns_buf *token, ns_buf **out)
{
    ns_buf *b = NULL;
    int r = ns_buf_from(prefix, strlen(prefix), strlen(prefix) + token->len + 1, true, &b);

    if (r == 0 && (r = ns_buf_append(b, token->data, token->len)) == 0 && (r = ns_buf_put_nul(b)) == 0)
        *out = b;
    else
        ns_buf_free(b);
    return r;
}

int ns_source_http_new(const ns_kek_config *kc, ns_http_client **out)
{
    ns_http_opts o;

    ns_http_opts_init(&o);
    o.connect_timeout_ms = kc->timeout_s * 1000u;
    o.timeout_ms = kc->timeout_s * 1000u;
    o.retries = kc->retries;
    o.ca_file = kc->ca_file;
    return ns_http_client_new(&o, out);
}

int ns_source_send(ns_http_client *h, const char *desc, const char *what, const ns_http_req *req,
                   ns_http_resp **resp)
{
    int r = ns_http_do(h, req, resp);

    if (r == NS_E_STORAGE) {
        /* ns_http_do() logged libcurl's reason; say which source it was, in our category. */
        ns_log(NS_LOG_ERROR, "%s: %s: no answer (unreachable, timed out or TLS failure), giving up", desc,
               what);
        return NS_E_SOURCE;
    }
    if (r == NS_E_TOO_LARGE) {
        ns_log(NS_LOG_ERROR, "%s: %s: the answer is larger than %u bytes", desc, what, NS_SOURCE_BODY_MAX);
        return NS_E_SOURCE;
    }
    return r;
}

static bool code_char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '.' || ch == '-';
}

void ns_source_error_code(const ns_http_resp *resp, char out[65])
{
    json_t *doc = NULL;
    const char *code = NULL, *hash;
    size_t n;

    out[0] = '\0';
    ns_json_init();
    if (resp->body == NULL || resp->body->len == 0 ||
        (doc = json_loadb((const char *)resp->body->data, resp->body->len, 0, NULL)) == NULL)
        return;
    if ((code = ns_source_json_str(doc, NULL, "__type", NULL)) == NULL &&
        (code = ns_source_json_str(doc, NULL, "error", NULL)) == NULL &&
        (code = ns_source_json_str(doc, NULL, "error", "status", NULL)) == NULL)
        code = ns_source_json_str(doc, NULL, "error", "code", NULL);
    if (code != NULL && (hash = strrchr(code, '#')) != NULL)
        code = hash + 1;
    if (code != NULL && (n = strlen(code)) > 0 && n <= 64) {
        size_t i;
        for (i = 0; i < n && code_char(code[i]); i++)
            ;
        if (i == n)
            memcpy(out, code, n + 1);
    }
    json_decref(doc);
}

int ns_source_fail(const char *desc, const char *what, long status, const char *code, int err)
{
    ns_log(NS_LOG_ERROR, "%s: %s: HTTP %ld%s%s", desc, what, status, code && code[0] ? " " : "",
           code ? code : "");
    return err;
}

int ns_source_check_status(const char *desc, const char *what, const ns_http_resp *resp)
{
    char code[65];
    int err = NS_E_SOURCE;

    if (resp->status >= 200 && resp->status <= 299)
        return 0;
    ns_source_error_code(resp, code);
    if (resp->status == 401 || resp->status == 403)
        err = NS_E_SOURCE_DENIED;
    else if (resp->status == 404)
        err = NS_E_NOT_FOUND;
    return ns_source_fail(desc, what, resp->status, code, err);
}

int ns_source_json(const char *desc, const char *what, const ns_buf *body, json_t **out)
{
    json_t *doc = NULL;

    ns_json_init();
    /* No error text from jansson: it may quote the input, which may be a secret. */
    if ((doc = json_loadb((const char *)body->data, body->len, JSON_REJECT_DUPLICATES, NULL)) == NULL ||
        !json_is_object(doc)) {
        json_decref(doc);
        ns_log(NS_LOG_ERROR, "%s: %s: the answer is not a JSON object", desc, what);
        return NS_E_FORMAT;
    }
    *out = doc;
    return 0;
}

const char *ns_source_json_str(const json_t *root, size_t *len, ...)
{
    const json_t *v = root;
    const char *k;
    va_list ap;

    va_start(ap, len);
    while (v != NULL && (k = va_arg(ap, const char *)) != NULL)
        v = json_is_object(v) ? json_object_get(v, k) : NULL;
    va_end(ap);
    if (!json_is_string(v))
        return NULL;
    if (len != NULL)
        *len = json_string_length(v);
    return json_string_value(v);
}

int ns_source_bearer_token(const char *desc, const char *what, const ns_http_resp *resp, ns_buf **token)
{
    json_t *doc = NULL;
    const char *t, *type;
    size_t len = 0;
    int r = NS_E_INTERNAL;

    if ((r = ns_source_json(desc, what, resp->body, &doc)) != 0)
        goto out;
    type = ns_source_json_str(doc, NULL, "token_type", NULL);
    if ((t = ns_source_json_str(doc, &len, "access_token", NULL)) == NULL || len == 0 ||
        (type != NULL && strcasecmp(type, "Bearer") != 0)) {
        ns_log(NS_LOG_ERROR, "%s: %s: the answer has no bearer access_token", desc, what);
        r = NS_E_FORMAT;
        goto out;
    }
    r = ns_buf_from_str(t, len, true, token);
out:
    json_decref(doc);
    return r;
}
