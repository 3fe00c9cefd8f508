#include "ns-build.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/pem.h>

#include "ca/cert.h"
#include "jwt/jws.h"
#include "secrets/keytype.h"
#include "service/request.h"

#define PEM_MAX 4096

int ns_request_public_key(const char *pem, size_t n, EVP_PKEY **out)
{
    BIO *bio = NULL;
    EVP_PKEY *pk = NULL;
    const ns_keytype *t = NULL;
    int r = NS_E_FORMAT;

    if (n == 0 || n > PEM_MAX || strncmp(pem, "-----BEGIN PUBLIC KEY-----", 26) != 0)
        goto out;
    if ((bio = BIO_new_mem_buf(pem, (int)n)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL)) == NULL)
        goto out;
    if (ns_keytype_classify(pk, &t) != 0 ||
        (strcmp(t->name, "ed25519") != 0 && strcmp(t->name, "ecdsa-p256") != 0))
        goto out;
    *out = pk;
    pk = NULL;
    r = 0;
out:
    EVP_PKEY_free(pk);
    BIO_free(bio);
    return r;
}

/* A member that must be a string (or, when optional, null / absent). */
static int get_str(json_t *o, const char *key, int required, size_t max, const char **out)
{
    json_t *v = json_object_get(o, key);

    *out = NULL;
    if (v == NULL || (!required && json_is_null(v)))
        return required ? NS_E_FORMAT : 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v))
        return NS_E_FORMAT;
    *out = json_string_value(v);
    return 0;
}

static int dup_opt(const char *s, char **out)
{
    if (s == NULL)
        return 0;
    return (*out = strdup(s)) == NULL ? NS_E_NOMEM : 0;
}

int ns_reg_request_parse(const uint8_t *p, size_t n, enum ns_req_kind kind, ns_reg_request **out)
{
    static const char *const reg_keys[] = {"nonce", "public_key", "hostname", "ipv4", "ipv6", NULL};
    static const char *const renew_keys[] = {"public_key", NULL};
    const char *const *keys = kind == NS_REQ_REGISTER ? reg_keys : renew_keys;
    json_t *root = NULL;
    json_error_t jerr;
    ns_reg_request *rq = NULL;
    const char *nonce = NULL, *pem = NULL, *host = NULL, *v4 = NULL, *v6 = NULL, *key;
    json_t *val;
    unsigned char addr[16];
    int r = NS_E_FORMAT;

    if (n > NS_REQ_BODY_MAX) {
        r = NS_E_TOO_LARGE;
        goto out;
    }
    if ((root = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr)) == NULL ||
        !json_is_object(root))
        goto out;
    json_object_foreach(root, key, val)
    {
        size_t i;
        for (i = 0; keys[i] != NULL && strcmp(keys[i], key) != 0; i++)
            ;
        if (keys[i] == NULL)
            goto out;
    }
    if (kind == NS_REQ_REGISTER) {
        if (get_str(root, "nonce", 1, NS_JWS_MAX, &nonce) != 0 ||
            get_str(root, "public_key", 1, PEM_MAX, &pem) != 0 ||
            get_str(root, "hostname", 0, 253, &host) != 0 || get_str(root, "ipv4", 0, 15, &v4) != 0 ||
            get_str(root, "ipv6", 0, 45, &v6) != 0)
            goto out;
        /* A VM's own name: a wildcard is no host's name. */
        if (host != NULL && (ns_cert_check_dns(host) != 0 || host[0] == '*'))
            goto out;
        if (v4 != NULL && inet_pton(AF_INET, v4, addr) != 1)
            goto out;
        if (v6 != NULL && inet_pton(AF_INET6, v6, addr) != 1)
            goto out;
    } else if (get_str(root, "public_key", 0, PEM_MAX, &pem) != 0) {
        goto out;
    }
    if ((rq = calloc(1, sizeof(*rq))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if (pem != NULL && (r = ns_request_public_key(pem, strlen(pem), &rq->pub)) != 0)
        goto out;
    if ((r = dup_opt(nonce, &rq->nonce)) != 0 || (r = dup_opt(pem, &rq->pub_pem)) != 0 ||
        (r = dup_opt(host, &rq->hostname)) != 0 || (r = dup_opt(v4, &rq->ipv4)) != 0 ||
        (r = dup_opt(v6, &rq->ipv6)) != 0)
        goto out;
    *out = rq;
    rq = NULL;
    r = 0;
out:
    ns_reg_request_free(rq);
    json_decref(root);
    return r;
}

void ns_reg_request_free(ns_reg_request *rq)
{
    if (rq == NULL)
        return;
    free(rq->nonce);
    EVP_PKEY_free(rq->pub);
    free(rq->pub_pem);
    free(rq->hostname);
    free(rq->ipv4);
    free(rq->ipv6);
    free(rq);
}
