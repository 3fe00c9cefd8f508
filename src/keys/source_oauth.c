#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "keys/source_backends.h"

/* The OAuth 2.0 steps that the cloud key sources share: a token from an instance metadata service, a token
 * from a grant posted to a token endpoint, and a GET of the secret with that token as bearer. */

size_t ns_source_base_len(const char *url)
{
    size_t n = strlen(url);

    while (n > 0 && url[n - 1] == '/')
        n--;
    return n;
}

/* Send a token request and read the OAuth token answer (RFC 6749 §5.1). grant: the request is a grant, so a
 * 400 is its refusal. echo: the answer must carry this header and value. */
static int token_exchange(ns_http_client *h, const char *desc, const char *what, const ns_http_req *req,
                          bool grant, const ns_http_header *echo, ns_buf **token)
{
    ns_http_resp *resp = NULL;
    char code[65];
    const char *v;
    int r;

    if ((r = ns_source_send(h, desc, what, req, &resp)) != 0)
        goto out;
    /* Token endpoints answer a refused grant (wrong client, secret or assertion) with 400 (RFC 6749 §5.2). */
    if (grant && resp->status == 400) {
        ns_source_error_code(resp, code);
        r = ns_source_fail(desc, what, resp->status, code, NS_E_SOURCE_DENIED);
        goto out;
    }
    if ((r = ns_source_check_status(desc, what, resp)) != 0)
        goto out;
    /* A metadata server that marks its answers: anything else answering there is not it. */
    if (echo != NULL &&
        ((v = ns_http_resp_header_get(resp, echo->name)) == NULL || strcmp(v, echo->value) != 0)) {
        ns_log(NS_LOG_ERROR, "%s: %s: the answer lacks %s: %s", desc, what, echo->name, echo->value);
        r = NS_E_FORMAT;
        goto out;
    }
    r = ns_source_bearer_token(desc, what, resp, token);
out:
    ns_http_resp_free(resp);
    return r;
}

int ns_source_metadata_token(ns_http_client *h, const char *desc, const char *what, const char *url,
                             const ns_http_header *hdr, bool echoed, ns_buf **token)
{
    ns_http_req req = {.method = "GET",
                       .url = url,
                       .headers = hdr,
                       .n_headers = 1,
                       .max_body = NS_SOURCE_BODY_MAX,
                       .secret_body = true};

    return token_exchange(h, desc, what, &req, false, echoed ? hdr : NULL, token);
}

int ns_source_grant_token(ns_http_client *h, const char *desc, const char *what, const char *url,
                          const ns_buf *form, ns_buf **token)
{
    static const ns_http_header hdr[] = {{"Content-Type", "application/x-www-form-urlencoded"}};
    ns_http_req req = {.method = "POST",
                       .url = url,
                       .headers = hdr,
                       .n_headers = 1,
                       .body = form->data,
                       .body_len = form->len,
                       .max_body = NS_SOURCE_BODY_MAX,
                       .secret_body = true};

    return token_exchange(h, desc, what, &req, true, NULL, token);
}

int ns_source_bearer_get_json(ns_http_client *h, const char *desc, const char *what, const char *url,
                              const ns_buf *token, json_t **doc)
{
    ns_buf *auth = NULL;
    ns_http_resp *resp = NULL;
    ns_http_header hdr[1];
    ns_http_req req;
    int r;

    if ((r = ns_source_header_value("Bearer ", token, &auth)) != 0)
        return r;
    hdr[0] = (ns_http_header){"Authorization", (const char *)auth->data};
    req = (ns_http_req){.method = "GET",
                        .url = url,
                        .headers = hdr,
                        .n_headers = 1,
                        .max_body = NS_SOURCE_BODY_MAX,
                        .secret_body = true};
    if ((r = ns_source_send(h, desc, what, &req, &resp)) == 0 &&
        (r = ns_source_check_status(desc, what, resp)) == 0)
        r = ns_source_json(desc, what, resp->body, doc);
    ns_http_resp_free(resp);
    ns_buf_free(auth);
    return r;
}

int ns_source_bearer_fetch(const ns_kek_config *kc, const char *desc, const ns_source_bearer_step *step,
                           ns_buf **key)
{
    ns_http_client *h = NULL;
    ns_buf *token = NULL;
    json_t *doc = NULL;
    const char *value;
    char *url = NULL;
    size_t len = 0;
    int r = NS_E_INTERNAL;

    if ((r = ns_source_http_new(kc, &h)) != 0)
        goto out;
    if ((r = step->token(kc, desc, h, &token)) != 0)
        goto out;
    if ((url = step->url(kc)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = ns_source_bearer_get_json(h, desc, step->what, url, token, &doc)) != 0)
        goto out;
    if ((value = ns_source_json_str(doc, &len, step->k1, step->k2, NULL)) == NULL) {
        ns_log(NS_LOG_ERROR, "%s: the answer has no %s", desc, step->missing);
        r = NS_E_FORMAT;
        goto out;
    }
    r = step->b64 ? ns_source_b64_value_to_key(desc, value, len, key)
                  : ns_source_value_to_key(desc, (const uint8_t *)value, len, key);
out:
    json_decref(doc);
    free(url);
    ns_buf_free(token);
    ns_http_client_free(h);
    return r;
}
