#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/codec.h"
#include "common/json.h"
#include "common/log.h"
#include "common/secmem.h"
#include "keys/source_backends.h"

/* Google Secret Manager: GET <endpoint>/v1/projects/P/secrets/S/versions/V:access with an OAuth 2.0 bearer
 * token; the key is payload.data (base64). The token comes from the metadata server of the instance
 * (GET <metadata_endpoint>/computeMetadata/v1/instance/service-accounts/default/token, Metadata-Flavor:
 * Google), or from a service-account key file: an RS256-signed JWT (RFC 7519, JWS RFC 7515) exchanged at
 * the key's token_uri with the JWT bearer grant (RFC 7523). */

#define SA_KEY_MAX    (64u * 1024u)
#define SCOPE         "https://www.googleapis.com/auth/cloud-platform"
#define JWT_LIFETIME  3600
#define ASSERTION_MAX 8191 /* bytes of the signed assertion (with its NUL, 8192 as before) */

static void gcp_describe(const ns_kek_config *kc, char *out, size_t n)
{
    snprintf(out, n, "google-secret-manager %.*s projects/%s/secrets/%s/versions/%s",
             (int)ns_source_base_len(kc->endpoint), kc->endpoint, kc->project, kc->secret, kc->version);
}

static int token_from_metadata(const ns_kek_config *kc, const char *desc, ns_http_client *h, ns_buf **token)
{
    static const ns_http_header hdr = {"Metadata-Flavor", "Google"};
    char *url = NULL;
    int r;

    if (asprintf(&url, "%.*s/computeMetadata/v1/instance/service-accounts/default/token",
                 (int)ns_source_base_len(kc->metadata_endpoint), kc->metadata_endpoint) < 0)
        return NS_E_NOMEM;
    r = ns_source_metadata_token(h, desc, "metadata server token", url, &hdr, true, token);
    free(url);
    return r;
}

/* RS256 (RFC 7518 §3.3): RSASSA-PKCS1-v1_5 with SHA-256 by the service account's key (ctx). */
static int sign_rs256(void *ctx, const uint8_t *input, size_t n, ns_buf **sig)
{
    EVP_MD_CTX *md = NULL;
    ns_buf *b = NULL;
    uint8_t *w = NULL;
    size_t siglen = 0;
    int r = NS_E_CRYPTO;

    if ((md = EVP_MD_CTX_new()) == NULL)
        return NS_E_NOMEM;
    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, ctx) != 1 ||
        EVP_DigestSign(md, NULL, &siglen, input, n) != 1)
        goto out;
    /* Part of the assertion, a credential: secret memory. */
    if ((r = ns_buf_new(siglen, true, &b)) != 0 || (r = ns_buf_extend(b, siglen, &w)) != 0)
        goto out;
    r = NS_E_CRYPTO;
    if (EVP_DigestSign(md, w, &siglen, input, n) != 1)
        goto out;
    ns_buf_truncate(b, siglen);
    *sig = b;
    b = NULL;
    r = 0;
out:
    ns_buf_free(b);
    EVP_MD_CTX_free(md);
    return r;
}

/* The signed assertion "header.claims.signature" (RFC 7515 compact serialization, RS256). */
static int make_assertion(const char *desc, const json_t *sa, const char *token_uri, ns_buf **out)
{
    const char *email, *kid, *pem;
    size_t pem_len = 0;
    json_t *header = NULL, *claims = NULL;
    char *htext = NULL, *ctext = NULL;
    BIO *bio = NULL;
    EVP_PKEY *pkey = NULL;
    time_t now = time(NULL);
    int r = NS_E_INTERNAL;

    email = ns_source_json_str(sa, NULL, "client_email", NULL);
    kid = ns_source_json_str(sa, NULL, "private_key_id", NULL);
    pem = ns_source_json_str(sa, &pem_len, "private_key", NULL);
    if (email == NULL || pem == NULL || pem_len > SA_KEY_MAX) {
        ns_log(NS_LOG_ERROR, "%s: the service-account key file lacks client_email or private_key", desc);
        r = NS_E_FORMAT;
        goto out;
    }
    if ((bio = BIO_new_mem_buf(pem, (int)pem_len)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL ||
        EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
        ns_log(NS_LOG_ERROR,
               "%s: the service-account key file's private_key is not an RSA private key in PEM", desc);
        r = NS_E_FORMAT;
        goto out;
    }
    if ((header = kid != NULL ? json_pack("{s:s, s:s, s:s}", "alg", "RS256", "typ", "JWT", "kid", kid)
                              : json_pack("{s:s, s:s}", "alg", "RS256", "typ", "JWT")) == NULL ||
        (claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", email, "scope", SCOPE, "aud", token_uri,
                            "iat", (json_int_t)now, "exp", (json_int_t)now + JWT_LIFETIME)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((htext = json_dumps(header, JSON_COMPACT)) == NULL ||
        (ctext = json_dumps(claims, JSON_COMPACT)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    /* The assertion is a credential for an hour: secret memory. */
    r = ns_jose_compact_sign(htext, strlen(htext), (const uint8_t *)ctext, strlen(ctext), sign_rs256, pkey,
                             ASSERTION_MAX, true, out);
out:
    ns_json_free(htext);
    ns_json_free(ctext);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    json_decref(header);
    json_decref(claims);
    return r;
}

static int token_from_key_file(const ns_kek_config *kc, const char *desc, ns_http_client *h, ns_buf **token)
{
    ns_buf *file = NULL, *jwt = NULL, *form = NULL;
    json_t *sa = NULL;
    const char *type, *token_uri;
    int r = NS_E_INTERNAL;

    if ((r = ns_source_read_file(kc->credentials_file, "service-account key file", SA_KEY_MAX, &file)) != 0)
        goto out;
    if ((r = ns_source_json(desc, "the service-account key file", file, &sa)) != 0)
        goto out;
    type = ns_source_json_str(sa, NULL, "type", NULL);
    token_uri = ns_source_json_str(sa, NULL, "token_uri", NULL);
    if (type == NULL || strcmp(type, "service_account") != 0) {
        ns_log(NS_LOG_ERROR, "%s: %s is not a service-account key (type service_account)", desc,
               kc->credentials_file);
        r = NS_E_FORMAT;
        goto out;
    }
    /* The token goes where the file says: hold that URL to the rule of configured ones. */
    if (token_uri == NULL || !ns_config_url_ok(token_uri)) {
        ns_log(NS_LOG_ERROR, "%s: the token_uri of %s is missing or not an allowed URL", desc,
               kc->credentials_file);
        r = NS_E_FORMAT;
        goto out;
    }
    if ((r = make_assertion(desc, sa, token_uri, &jwt)) != 0)
        goto out;
    if ((r = ns_buf_new(16384, true, &form)) != 0 ||
        (r = ns_source_form_add(form, "grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")) != 0 ||
        (r = ns_source_form_add(form, "assertion", (const char *)jwt->data)) != 0)
        goto out;
    r = ns_source_grant_token(h, desc, "service-account token", token_uri, form, token);
out:
    json_decref(sa);
    ns_buf_free(form);
    ns_buf_free(jwt);
    ns_buf_free(file);
    return r;
}

static int gcp_token(const ns_kek_config *kc, const char *desc, ns_http_client *h, ns_buf **token)
{
    return kc->credentials_file != NULL ? token_from_key_file(kc, desc, h, token)
                                        : token_from_metadata(kc, desc, h, token);
}

static char *gcp_url(const ns_kek_config *kc)
{
    char *url = NULL;
    if (asprintf(&url, "%.*s/v1/projects/%s/secrets/%s/versions/%s:access",
                 (int)ns_source_base_len(kc->endpoint), kc->endpoint, kc->project, kc->secret,
                 kc->version) < 0)
        return NULL;
    return url;
}

static int gcp_fetch(const ns_kek_config *kc, const char *desc, ns_buf **key)
{
    static const ns_source_bearer_step step = {
        gcp_token, gcp_url, "accessing the secret version", "payload", "data", "payload.data", true};
    return ns_source_bearer_fetch(kc, desc, &step, key);
}

const ns_kek_source_ops ns_source_gcp_ops = {NS_KEK_SRC_GCP_SM, "google-secret-manager", gcp_describe,
                                             gcp_fetch};
