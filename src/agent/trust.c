#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "agent/agent.h"
#include "ca/ca.h"
#include "common/codec.h"
#include "common/json.h"
#include "common/log.h"

/* Why the agent follows the CA bundle on every sync: after `ca rotate` the server's certificate comes from
 * the new CA (sent with the cross certificate, so the old root still verifies it), and after `ca retire`
 * only the new CA is left. An agent that learnt the new bundle — over a connection its current ca.crt
 * verified — and renewed its certificate with the new CA before the retire keeps working. */

static int read_bundle(const char *dir, char **path, ns_buf **pem)
{
    int r = ns_agent_join(dir, "ca.crt", path);
    if (r == 0)
        r = ns_agent_read_file(*path, NS_CA_BUNDLE_MAX, false, pem);
    return r;
}

int ns_agent_ca_update(ns_agent_client *c, const char *dir, bool *changed)
{
    ns_agent_resp *resp = NULL;
    ns_buf *cur = NULL;
    json_t *doc = NULL;
    X509 **bundle = NULL;
    size_t n_ca = 0;
    const char *pem, *key;
    const json_t *val;
    char *path = NULL, hex[65], etag[70];
    uint8_t md[32];
    int r;

    *changed = false;
    if ((r = read_bundle(dir, &path, &cur)) != 0)
        goto out;
    SHA256(cur->data, cur->len, md);
    ns_hex_encode(md, sizeof(md), hex);
    snprintf(etag, sizeof(etag), "\"%s\"", hex);
    if ((r = ns_agent_request(c, "GET", "/v1/ca", NULL, etag, false, &resp)) != 0) {
        if (r == NS_E_NOT_FOUND) {
            /* A server from before GET /v1/ca: the bundle is still learnt from renewals. */
            ns_log(NS_LOG_INFO, "agent: the server has no GET /v1/ca; ca.crt is updated by renewals only");
            r = 0;
        }
        goto out;
    }
    if (resp->status == 304)
        goto out;
    if (resp->status != 200) {
        ns_log(NS_LOG_ERROR, "agent: GET /v1/ca: unexpected status %ld", resp->status);
        r = NS_E_FORMAT;
        goto out;
    }
    ns_json_init();
    r = NS_E_FORMAT;
    if ((doc = json_loadb((const char *)resp->body->data, resp->body->len, JSON_REJECT_DUPLICATES, NULL)) ==
            NULL ||
        !json_is_object(doc) || (pem = json_string_value(json_object_get(doc, "ca_bundle"))) == NULL) {
        ns_log(NS_LOG_ERROR, "agent: GET /v1/ca: the answer is not {\"ca_bundle\": PEM}; ca.crt unchanged");
        goto out;
    }
    json_object_foreach(doc, key, val)
    {
        if (strcmp(key, "ca_bundle") != 0) {
            ns_log(NS_LOG_ERROR, "agent: GET /v1/ca: the answer has an unknown member; ca.crt unchanged");
            goto out;
        }
    }
    if ((r = ns_ca_parse_bundle((const uint8_t *)pem, strlen(pem), &bundle, &n_ca)) != 0) {
        ns_log(NS_LOG_ERROR,
               "agent: GET /v1/ca: the CA bundle is not 1 to %d PEM CA certificates; ca.crt "
               "unchanged",
               NS_CA_MAX);
        goto out;
    }
    if (strlen(pem) == cur->len && memcmp(pem, cur->data, cur->len) == 0) {
        r = 0;
        goto out;
    }
    /* Learnt over a connection that the current ca.crt verified (libcurl checked the server's chain and
     * name): the cluster's word. It replaces ca.crt as a whole (a retired CA goes), atomically. */
    if ((r = ns_agent_write_atomic(path, (const uint8_t *)pem, strlen(pem), 0644, (uid_t)-1, (gid_t)-1)) != 0)
        goto out;
    *changed = true;
    printf("sync: new CA bundle, %zu certificate(s)\n", n_ca);
    fflush(stdout);
    r = 0;
out:
    ns_ca_certs_free(bundle, n_ca);
    json_decref(doc);
    ns_buf_free(cur);
    ns_agent_resp_free(resp);
    free(path);
    return r;
}

int ns_agent_renew_needed(const char *dir, bool *needed)
{
    ns_buf *pem = NULL, *ca = NULL;
    X509 **bundle = NULL;
    size_t n_ca = 0;
    char *path = NULL, *capath = NULL;
    BIO *bio = NULL;
    X509 *cert = NULL, *newest;
    int r;

    *needed = false;
    if ((r = ns_agent_join(dir, "identity.crt", &path)) != 0 ||
        (r = ns_agent_read_file(path, 64 * 1024, false, &pem)) != 0 ||
        (r = read_bundle(dir, &capath, &ca)) != 0)
        goto out;
    if ((r = ns_ca_parse_bundle(ca->data, ca->len, &bundle, &n_ca)) != 0) {
        ns_log(NS_LOG_ERROR, "agent: %s is not a PEM CA bundle", capath);
        goto out;
    }
    if ((bio = BIO_new_mem_buf(pem->data, (int)pem->len)) == NULL ||
        (cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
        ns_log(NS_LOG_ERROR, "agent: %s is not a PEM certificate", path);
        r = NS_E_FORMAT;
        goto out;
    }
    /* Issued by the newest CA of the bundle (every CA certificate has the same name: the key decides)? */
    newest = bundle[0];
    *needed = X509_verify(cert, X509_get0_pubkey(newest)) != 1;
    r = 0;
out:
    ERR_clear_error();
    X509_free(cert);
    BIO_free(bio);
    ns_ca_certs_free(bundle, n_ca);
    ns_buf_free(ca);
    ns_buf_free(pem);
    free(capath);
    free(path);
    return r;
}
