#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agent/agent.h"
#include "common/json.h"
#include "common/log.h"
#include "net/http.h"

struct ns_agent_client {
    ns_http_client *http;
    char *base; /* server URL without a trailing '/' */
};

int ns_agent_exit_code(int err)
{
    switch (err) {
    case 0:
        return NS_AGENT_EXIT_OK;
    case NS_E_USAGE:
    case NS_E_CONFIG:
        return NS_AGENT_EXIT_USAGE;
    case NS_E_NOT_FOUND:
        return NS_AGENT_EXIT_NOT_FOUND;
    case NS_E_SOURCE_DENIED:
        return NS_AGENT_EXIT_AUTH;
    case NS_E_SOURCE:
    case NS_E_RATE_LIMITED:
        return NS_AGENT_EXIT_SERVER;
    case NS_E_STORAGE:
        return NS_AGENT_EXIT_LOCAL_IO;
    case NS_E_CLAIMS:
        return NS_AGENT_EXIT_NONCE_BAD;
    case NS_E_REPLAYED:
        return NS_AGENT_EXIT_NONCE_USED;
    default:
        break;
    }
    if (ns_err_category(err) == NS_CAT_BAD_INPUT || err == NS_E_INTEGRITY)
        return NS_AGENT_EXIT_BAD_DATA;
    return NS_AGENT_EXIT_INTERNAL;
}

int ns_agent_client_new(const char *server_url, const char *ca_file, const char *cert_file,
                        const char *key_file, ns_agent_client **out)
{
    ns_agent_client *c = NULL;
    ns_http_opts opts;
    size_t n;
    int r = NS_E_INTERNAL;

    if (server_url == NULL || strncmp(server_url, "https://", 8) != 0 || strlen(server_url) > 512 ||
        strpbrk(server_url, "?# \t\r\n") != NULL) {
        ns_log(NS_LOG_ERROR, "agent: --server must be an https:// URL without query or fragment");
        return NS_E_USAGE;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL || (c->base = strdup(server_url)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    n = strlen(c->base);
    while (n > 8 && c->base[n - 1] == '/')
        c->base[--n] = '\0';
    ns_http_opts_init(&opts);
    opts.ca_file = ca_file;
    opts.client_cert = cert_file;
    opts.client_key = key_file;
    opts.tls13_only = true;
    opts.timeout_ms = 30000;
    opts.retries = 2;
    if ((r = ns_http_client_new(&opts, &c->http)) != 0)
        goto out;
    *out = c;
    c = NULL;
    r = 0;
out:
    ns_agent_client_free(c);
    return r;
}

void ns_agent_client_free(ns_agent_client *c)
{
    if (c == NULL)
        return;
    ns_http_client_free(c->http);
    free(c->base);
    free(c);
}

void ns_agent_resp_free(ns_agent_resp *r)
{
    if (r == NULL)
        return;
    ns_buf_free(r->body);
    free(r->etag);
    free(r);
}

/* The `error` member of a JSON error body, into code (printable ASCII only, cut), or "" . */
static void error_code(const ns_buf *body, char *code, size_t size)
{
    json_t *doc;
    const char *s;
    size_t j = 0;

    code[0] = '\0';
    if (body == NULL || body->len == 0)
        return;
    ns_json_init();
    if ((doc = json_loadb((const char *)body->data, body->len, 0, NULL)) == NULL)
        return;
    s = json_string_value(json_object_get(doc, "error"));
    for (size_t i = 0; s != NULL && s[i] != '\0' && j + 1 < size; i++)
        if ((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_')
            code[j++] = s[i];
    code[j] = '\0';
    json_decref(doc);
}

static int map_status(long status, const char *code)
{
    if (status == 409 && strcmp(code, "nonce_used") == 0)
        return NS_E_REPLAYED;
    if (status == 401 && strcmp(code, "nonce_invalid") == 0)
        return NS_E_CLAIMS;
    if (status == 401 || status == 403)
        return NS_E_SOURCE_DENIED;
    if (status == 404)
        return NS_E_NOT_FOUND;
    if (status == 429)
        return NS_E_RATE_LIMITED;
    if (status == 409)
        return NS_E_REPLAYED;
    if (status >= 500)
        return NS_E_SOURCE;
    return NS_E_INVAL;
}

int ns_agent_request(ns_agent_client *c, const char *method, const char *path, const ns_buf *body,
                     const char *if_none_match, bool no_retry, ns_agent_resp **out)
{
    ns_http_header hdrs[3];
    ns_http_req req;
    ns_http_resp *resp = NULL;
    ns_agent_resp *res = NULL;
    const char *etag;
    char *url = NULL;
    char code[48];
    size_t nh = 0, ulen;
    int r = NS_E_INTERNAL;

    ulen = strlen(c->base) + strlen(path) + 1;
    if ((url = malloc(ulen)) == NULL)
        return NS_E_NOMEM;
    snprintf(url, ulen, "%s%s", c->base, path);
    hdrs[nh++] = (ns_http_header){"Accept", "application/json"};
    if (body != NULL)
        hdrs[nh++] = (ns_http_header){"Content-Type", "application/json"};
    if (if_none_match != NULL)
        hdrs[nh++] = (ns_http_header){"If-None-Match", if_none_match};
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.url = url;
    req.headers = hdrs;
    req.n_headers = nh;
    req.body = body != NULL ? body->data : NULL;
    req.body_len = body != NULL ? body->len : 0;
    req.max_body = NS_AGENT_MAX_BODY;
    req.secret_body = true; /* file contents */
    req.no_retry = no_retry;
    if ((r = ns_http_do(c->http, &req, &resp)) != 0) {
        if (r == NS_E_STORAGE) {
            enum ns_http_fail why = ns_http_last_fail(c->http);
            if (why == NS_HTTP_FAIL_TLS_PEER) {
                ns_log(NS_LOG_ERROR,
                       "agent: %s %s: the server's certificate does not verify with the CA "
                       "bundle (or names another host)",
                       method, path);
                r = NS_E_SOURCE_DENIED;
            } else if (why == NS_HTTP_FAIL_TLS_LOCAL) {
                ns_log(NS_LOG_ERROR,
                       "agent: %s %s: the CA bundle, certificate or key in the state folder "
                       "cannot be used",
                       method, path);
                r = NS_E_SOURCE_DENIED;
            } else {
                ns_log(NS_LOG_ERROR, "agent: %s %s: the server is unreachable", method, path);
                r = NS_E_SOURCE;
            }
        } else if (r == NS_E_TOO_LARGE) {
            r = NS_E_TOO_LARGE;
        }
        goto out;
    }
    if (!((resp->status >= 200 && resp->status < 300) || resp->status == 304)) {
        error_code(resp->body, code, sizeof(code));
        ns_log(NS_LOG_ERROR, "agent: %s %s: the server answered %ld %s", method, path, resp->status,
               code[0] != '\0' ? code : "(no error code)");
        r = map_status(resp->status, code);
        goto out;
    }
    if ((res = calloc(1, sizeof(*res))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    res->status = resp->status;
    res->body = resp->body;
    resp->body = NULL;
    if ((etag = ns_http_resp_header_get(resp, "ETag")) != NULL && (res->etag = strdup(etag)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    *out = res;
    res = NULL;
    r = 0;
out:
    ns_agent_resp_free(res);
    ns_http_resp_free(resp);
    free(url);
    return r;
}
