#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/json.h"
#include "common/log.h"
#include "keys/source_backends.h"
#include "net/aws_creds.h"
#include "net/sigv4.h"

/* AWS Secrets Manager (GetSecretValue) and Systems Manager Parameter Store (GetParameter with
 * WithDecryption), both through the JSON 1.1 protocol: POST <endpoint>/ with X-Amz-Target and a JSON body,
 * signed with SigV4 (net/sigv4.h) using the AWS credential chain (net/aws_creds.h), the one S3 uses. */

static void sm_describe(const ns_kek_config *kc, char *out, size_t n)
{
    snprintf(out, n, "aws-secrets-manager %s %s%s%s", kc->endpoint, kc->secret_id,
             kc->version_stage ? " @" : "", kc->version_stage ? kc->version_stage : "");
}

static void ssm_describe(const ns_kek_config *kc, char *out, size_t n)
{
    snprintf(out, n, "aws-parameter-store %s %s", kc->endpoint, kc->name);
}

/* The service's error type (`__type`) as one of ours; 400 is how these APIs answer most errors. */
static int map_error(long status, const char *code)
{
    static const char *const not_found[] = {"ResourceNotFoundException", "ParameterNotFound",
                                            "ParameterVersionNotFound", NULL};
    static const char *const denied[] = {"AccessDeniedException",
                                         "UnrecognizedClientException",
                                         "InvalidSignatureException",
                                         "IncompleteSignature",
                                         "ExpiredTokenException",
                                         "InvalidClientTokenId",
                                         "MissingAuthenticationToken",
                                         "SignatureDoesNotMatch",
                                         "DecryptionFailure",
                                         "KMSAccessDeniedException",
                                         NULL};

    for (size_t i = 0; not_found[i] != NULL; i++)
        if (strcmp(code, not_found[i]) == 0)
            return NS_E_NOT_FOUND;
    for (size_t i = 0; denied[i] != NULL; i++)
        if (strcmp(code, denied[i]) == 0)
            return NS_E_SOURCE_DENIED;
    if (status == 401 || status == 403)
        return NS_E_SOURCE_DENIED;
    if (status == 404)
        return NS_E_NOT_FOUND;
    return NS_E_SOURCE;
}

/* One signed JSON call; the answer's JSON object in *out. */
static int aws_call(const ns_kek_config *kc, const char *desc, const char *service, const char *target,
                    const json_t *body, json_t **out)
{
    ns_aws_creds_provider *prov = NULL;
    ns_aws_creds *creds = NULL;
    ns_aws_creds_opts copts;
    ns_sigv4_params sp;
    ns_sigv4_signed *sig = NULL;
    ns_http_client *h = NULL;
    ns_http_resp *resp = NULL;
    ns_http_header hdr[2];
    ns_http_req req;
    char *text = NULL, *url = NULL, code[65];
    size_t n = strlen(kc->endpoint);
    int r = NS_E_INTERNAL;

    memset(&copts, 0, sizeof(copts));
    if ((r = ns_aws_creds_provider_new(&copts, &prov)) != 0)
        goto out;
    if ((r = ns_aws_creds_get(prov, &creds)) != 0) {
        ns_log(NS_LOG_ERROR, "%s: no AWS credentials: %s", desc, ns_strerror(r));
        if (r == NS_E_STORAGE)
            r = NS_E_SOURCE;
        goto out;
    }
    ns_log(NS_LOG_DEBUG, "%s: AWS credentials from %s", desc, ns_aws_creds_source(prov));
    while (n > 0 && kc->endpoint[n - 1] == '/')
        n--;
    if ((text = json_dumps(body, JSON_COMPACT)) == NULL ||
        asprintf(&url, "%.*s/", (int)n, kc->endpoint) < 0) {
        url = NULL;
        r = NS_E_NOMEM;
        goto out;
    }
    hdr[0] = (ns_http_header){"Content-Type", "application/x-amz-json-1.1"};
    hdr[1] = (ns_http_header){"X-Amz-Target", target};
    req = (ns_http_req){.method = "POST",
                        .url = url,
                        .headers = hdr,
                        .n_headers = 2,
                        .body = (const uint8_t *)text,
                        .body_len = strlen(text),
                        .max_body = NS_SOURCE_BODY_MAX,
                        .secret_body = true};
    sp = (ns_sigv4_params){.service = service, .region = kc->region, .when = time(NULL)};
    if ((r = ns_sigv4_sign(&sp, creds, &req, &sig)) != 0) {
        ns_log(NS_LOG_ERROR, "%s: cannot sign the request: %s", desc, ns_strerror(r));
        goto out;
    }
    req.headers = sig->headers;
    req.n_headers = sig->n_headers;
    if ((r = ns_source_http_new(kc, &h)) != 0)
        goto out;
    if ((r = ns_source_send(h, desc, target, &req, &resp)) != 0)
        goto out;
    if (resp->status < 200 || resp->status > 299) {
        ns_source_error_code(resp, code);
        r = ns_source_fail(desc, target, resp->status, code, map_error(resp->status, code));
        goto out;
    }
    r = ns_source_json(desc, target, resp->body, out);
out:
    ns_http_resp_free(resp);
    ns_http_client_free(h);
    ns_sigv4_signed_free(sig);
    ns_json_free(text);
    free(url);
    ns_aws_creds_free(creds);
    ns_aws_creds_provider_free(prov);
    return r;
}

static int sm_fetch(const ns_kek_config *kc, const char *desc, ns_buf **key)
{
    json_t *body = NULL, *doc = NULL;
    const char *v;
    size_t len = 0;
    int r = NS_E_INTERNAL;

    ns_json_init();
    if ((body = json_pack("{s:s}", "SecretId", kc->secret_id)) == NULL ||
        (kc->version_stage != NULL &&
         json_object_set_new(body, "VersionStage", json_string(kc->version_stage)) != 0)) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = aws_call(kc, desc, "secretsmanager", "secretsmanager.GetSecretValue", body, &doc)) != 0)
        goto out;
    if ((v = ns_source_json_str(doc, &len, "SecretString", NULL)) != NULL)
        r = ns_source_value_to_key(desc, (const uint8_t *)v, len, key);
    else if ((v = ns_source_json_str(doc, &len, "SecretBinary", NULL)) != NULL)
        r = ns_source_b64_value_to_key(desc, v, len, key);
    else {
        ns_log(NS_LOG_ERROR, "%s: the answer has neither SecretString nor SecretBinary", desc);
        r = NS_E_FORMAT;
    }
out:
    json_decref(body);
    json_decref(doc);
    return r;
}

static int ssm_fetch(const ns_kek_config *kc, const char *desc, ns_buf **key)
{
    json_t *body = NULL, *doc = NULL;
    const char *v, *type;
    size_t len = 0;
    int r = NS_E_INTERNAL;

    ns_json_init();
    if ((body = json_pack("{s:s, s:b}", "Name", kc->name, "WithDecryption", 1)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = aws_call(kc, desc, "ssm", "AmazonSSM.GetParameter", body, &doc)) != 0)
        goto out;
    type = ns_source_json_str(doc, NULL, "Parameter", "Type", NULL);
    if ((v = ns_source_json_str(doc, &len, "Parameter", "Value", NULL)) == NULL || type == NULL) {
        ns_log(NS_LOG_ERROR, "%s: the answer has no Parameter.Value or Parameter.Type", desc);
        r = NS_E_FORMAT;
        goto out;
    }
    /* A key kept in a plain String parameter is not encrypted at rest: refuse it rather than use it. */
    if (strcmp(type, "SecureString") != 0) {
        ns_log(NS_LOG_ERROR, "%s: the parameter is not a SecureString; store the key as a SecureString",
               desc);
        r = NS_E_INVAL;
        goto out;
    }
    r = ns_source_value_to_key(desc, (const uint8_t *)v, len, key);
out:
    json_decref(body);
    json_decref(doc);
    return r;
}

const ns_kek_source_ops ns_source_aws_sm_ops = {NS_KEK_SRC_AWS_SM, "aws-secrets-manager", sm_describe,
                                                sm_fetch};
const ns_kek_source_ops ns_source_aws_ssm_ops = {NS_KEK_SRC_AWS_SSM, "aws-parameter-store", ssm_describe,
                                                 ssm_fetch};
