#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/json.h"
#include "common/log.h"
#include "keys/source_backends.h"

/* Azure Key Vault secrets: GET <vault_url>/secrets/<name>[/<version>]?api-version=7.4 with a bearer token
 * for https://vault.azure.net; the key is the answer's `value`. The token comes from the managed identity
 * (instance metadata service: GET <metadata_endpoint>/metadata/identity/oauth2/token?api-version=2018-02-01
 * &resource=https://vault.azure.net, header Metadata: true), or from the client credentials grant
 * (POST <authority>/<tenant>/oauth2/v2.0/token, scope https://vault.azure.net/.default). */

#define RESOURCE    "https://vault.azure.net"
#define SECRET_MAX  4096u
#define API_VERSION "7.4"

static void azure_describe(const ns_kek_config *kc, char *out, size_t n)
{
    snprintf(out, n, "azure-key-vault %.*s/secrets/%s%s%s", (int)ns_source_base_len(kc->vault_url),
             kc->vault_url, kc->name, kc->version ? "/" : "", kc->version ? kc->version : "");
}

static int token_from_imds(const ns_kek_config *kc, const char *desc, ns_http_client *h, ns_buf **token)
{
    static const ns_http_header hdr = {"Metadata", "true"};
    char *url = NULL;
    int r;

    if (asprintf(&url,
                 "%.*s/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%%3A%%2F%%2F"
                 "vault.azure.net",
                 (int)ns_source_base_len(kc->metadata_endpoint), kc->metadata_endpoint) < 0)
        return NS_E_NOMEM;
    r = ns_source_metadata_token(h, desc, "managed identity token", url, &hdr, false, token);
    free(url);
    return r;
}

static int token_from_client_secret(const ns_kek_config *kc, const char *desc, ns_http_client *h,
                                    ns_buf **token)
{
    ns_buf *secret = NULL, *form = NULL;
    char *url = NULL;
    int r;

    if ((r = ns_source_read_file(kc->client_secret_file, "azure client secret file", SECRET_MAX, &secret)) !=
        0)
        goto out;
    if ((r = ns_buf_new(16384, true, &form)) != 0 ||
        (r = ns_source_form_add(form, "grant_type", "client_credentials")) != 0 ||
        (r = ns_source_form_add(form, "client_id", kc->client_id)) != 0 ||
        (r = ns_source_form_add(form, "client_secret", (const char *)secret->data)) != 0 ||
        (r = ns_source_form_add(form, "scope", RESOURCE "/.default")) != 0)
        goto out;
    if (asprintf(&url, "%.*s/%s/oauth2/v2.0/token", (int)ns_source_base_len(kc->authority), kc->authority,
                 kc->tenant_id) < 0) {
        url = NULL;
        r = NS_E_NOMEM;
        goto out;
    }
    r = ns_source_grant_token(h, desc, "client credentials token", url, form, token);
out:
    free(url);
    ns_buf_free(form);
    ns_buf_free(secret);
    return r;
}

static int azure_token(const ns_kek_config *kc, const char *desc, ns_http_client *h, ns_buf **token)
{
    return kc->client_id != NULL ? token_from_client_secret(kc, desc, h, token)
                                 : token_from_imds(kc, desc, h, token);
}

static char *azure_url(const ns_kek_config *kc)
{
    char *url = NULL;
    if (asprintf(&url, "%.*s/secrets/%s%s%s?api-version=" API_VERSION, (int)ns_source_base_len(kc->vault_url),
                 kc->vault_url, kc->name, kc->version ? "/" : "", kc->version ? kc->version : "") < 0)
        return NULL;
    return url;
}

static int azure_fetch(const ns_kek_config *kc, const char *desc, ns_buf **key)
{
    static const ns_source_bearer_step step = {azure_token,    azure_url, "reading the secret", "value", NULL,
                                               "string value", false};
    return ns_source_bearer_fetch(kc, desc, &step, key);
}

const ns_kek_source_ops ns_source_azure_ops = {NS_KEK_SRC_AZURE_KV, "azure-key-vault", azure_describe,
                                               azure_fetch};
