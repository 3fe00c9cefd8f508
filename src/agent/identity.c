#include "ns-build.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "agent/agent.h"
#include "common/json.h"
#include "common/log.h"

/* What a register or renew answer must satisfy before anything is stored: the certificate is one PEM
 * certificate for our public key, it verifies against the CA bundle that came with it, and the bundle is
 * one or more PEM certificates. A server that sends something else changes nothing in DIR. */

static int load_bundle(const char *pem, STACK_OF(X509) * *out)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x;
    int r = NS_E_FORMAT;

    if (sk == NULL || bio == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            r = NS_E_NOMEM;
            goto out;
        }
    }
    ERR_clear_error();
    if (sk_X509_num(sk) == 0)
        goto out;
    *out = sk;
    sk = NULL;
    r = 0;
out:
    sk_X509_pop_free(sk, X509_free);
    BIO_free(bio);
    return r;
}

/* The certificate verifies against the bundle, now, and carries pub. */
static int check_cert(X509 *cert, STACK_OF(X509) * bundle, EVP_PKEY *pub)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int r = NS_E_INTEGRITY;

    if (store == NULL || ctx == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    for (int i = 0; i < sk_X509_num(bundle); i++)
        if (X509_STORE_add_cert(store, sk_X509_value(bundle, i)) != 1)
            goto out;
    if (X509_STORE_CTX_init(ctx, store, cert, NULL) != 1)
        goto out;
    if (X509_verify_cert(ctx) != 1) {
        ns_log(NS_LOG_ERROR, "agent: the certificate from the server does not verify with its CA bundle: %s",
               X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
        goto out;
    }
    if (pub != NULL && EVP_PKEY_eq(X509_get0_pubkey(cert), pub) != 1) {
        ns_log(NS_LOG_ERROR, "agent: the certificate from the server is not for our key");
        goto out;
    }
    r = 0;
out:
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return r;
}

/* Our public key: from key_pem (a new key), else from the certificate already in dir. */
static int our_public_key(const char *dir, const ns_buf *key_pem, EVP_PKEY **out)
{
    char *path = NULL;
    ns_buf *pem = NULL;
    BIO *bio = NULL;
    X509 *old = NULL;
    EVP_PKEY *k = NULL;
    int r = NS_E_INTERNAL;

    if (key_pem != NULL) {
        if ((bio = BIO_new_mem_buf(key_pem->data, (int)key_pem->len)) == NULL ||
            (k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL) {
            r = NS_E_CRYPTO;
            goto out;
        }
    } else {
        if ((r = ns_agent_join(dir, "identity.crt", &path)) != 0 ||
            (r = ns_agent_read_file(path, 64 * 1024, false, &pem)) != 0)
            goto out;
        if ((bio = BIO_new_mem_buf(pem->data, (int)pem->len)) == NULL ||
            (old = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
            ns_log(NS_LOG_ERROR, "agent: %s is not a PEM certificate", path);
            r = NS_E_FORMAT;
            goto out;
        }
        if ((k = X509_get_pubkey(old)) == NULL) {
            r = NS_E_CRYPTO;
            goto out;
        }
    }
    *out = k;
    k = NULL;
    r = 0;
out:
    ERR_clear_error();
    EVP_PKEY_free(k);
    X509_free(old);
    BIO_free(bio);
    ns_buf_free(pem);
    free(path);
    return r;
}

int ns_agent_store_identity(const char *dir, const ns_buf *answer, const ns_buf *key_pem)
{
    static const char *const names[3] = {"identity.key", "identity.crt", "ca.crt"};
    json_t *doc = NULL;
    const char *cert_pem, *ca_pem, *key;
    const json_t *val;
    STACK_OF(X509) *certs = NULL, *bundle = NULL;
    EVP_PKEY *pub = NULL;
    char *paths[3] = {NULL, NULL, NULL}, *tmps[3] = {NULL, NULL, NULL};
    int r = NS_E_INTERNAL;

    ns_json_init();
    if ((doc = json_loadb((const char *)answer->data, answer->len, JSON_REJECT_DUPLICATES, NULL)) == NULL ||
        !json_is_object(doc)) {
        ns_log(NS_LOG_ERROR, "agent: the server's answer is not a JSON object");
        r = NS_E_FORMAT;
        goto out;
    }
    json_object_foreach(doc, key, val)
    {
        if (strcmp(key, "certificate") != 0 && strcmp(key, "ca_bundle") != 0 &&
            strcmp(key, "expires_at") != 0) {
            ns_log(NS_LOG_ERROR, "agent: the server's answer has an unknown member");
            r = NS_E_FORMAT;
            goto out;
        }
    }
    cert_pem = json_string_value(json_object_get(doc, "certificate"));
    ca_pem = json_string_value(json_object_get(doc, "ca_bundle"));
    if (cert_pem == NULL || ca_pem == NULL || !json_is_string(json_object_get(doc, "expires_at"))) {
        ns_log(NS_LOG_ERROR, "agent: the server's answer lacks certificate, ca_bundle or expires_at");
        r = NS_E_FORMAT;
        goto out;
    }
    if (load_bundle(cert_pem, &certs) != 0 || sk_X509_num(certs) != 1 || load_bundle(ca_pem, &bundle) != 0) {
        ns_log(NS_LOG_ERROR, "agent: the server's certificate or CA bundle is not PEM");
        r = NS_E_FORMAT;
        goto out;
    }
    if ((r = our_public_key(dir, key_pem, &pub)) != 0)
        goto out;
    if ((r = check_cert(sk_X509_value(certs, 0), bundle, pub)) != 0)
        goto out;

    /* All temporary files first, then the renames: a failure before the first rename changes nothing. */
    for (int i = 0; i < 3; i++) {
        const uint8_t *p;
        size_t n;
        mode_t mode = 0644;
        if (i == 0 && key_pem == NULL)
            continue;
        if (i == 0) {
            p = key_pem->data;
            n = key_pem->len;
            mode = 0600;
        } else {
            p = (const uint8_t *)(i == 1 ? cert_pem : ca_pem);
            n = strlen((const char *)p);
        }
        if ((r = ns_agent_join(dir, names[i], &paths[i])) != 0 ||
            (r = ns_agent_write_temp(paths[i], p, n, mode, (uid_t)-1, (gid_t)-1, &tmps[i])) != 0)
            goto out;
    }
    for (int i = 0; i < 3; i++) {
        if (tmps[i] == NULL)
            continue;
        r = ns_agent_commit(tmps[i], paths[i]);
        free(tmps[i]);
        tmps[i] = NULL;
        if (r != 0)
            goto out;
    }
    r = 0;
out:
    for (int i = 0; i < 3; i++) {
        if (tmps[i] != NULL)
            unlink(tmps[i]);
        free(tmps[i]);
        free(paths[i]);
    }
    EVP_PKEY_free(pub);
    sk_X509_pop_free(certs, X509_free);
    sk_X509_pop_free(bundle, X509_free);
    json_decref(doc);
    return r;
}
