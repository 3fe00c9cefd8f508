#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/codec.h"
#include "common/json.h"
#include "common/log.h"
#include "common/secmem.h"
#include "secrets/keytype.h"

static const ns_keytype types[] = {
    {"ed25519", NS_KIND_KEYPAIR, "ED25519", NULL, 0, "EdDSA"},
    {"ecdsa-p256", NS_KIND_KEYPAIR, "EC", "P-256", 0, "ES256"},
    {"ecdsa-p384", NS_KIND_KEYPAIR, "EC", "P-384", 0, "ES384"},
    {"rsa-2048", NS_KIND_KEYPAIR, "RSA", NULL, 2048, "RS256"},
    {"rsa-3072", NS_KIND_KEYPAIR, "RSA", NULL, 3072, "RS256"},
    {"rsa-4096", NS_KIND_KEYPAIR, "RSA", NULL, 4096, "RS256"},
    {"random", NS_KIND_RANDOM, NULL, NULL, 0, NULL},
    {"opaque", NS_KIND_OPAQUE, NULL, NULL, 0, NULL},
};

const ns_keytype *ns_keytype_find(const char *name)
{
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(types[i].name, name) == 0)
            return &types[i];
    return NULL;
}

const char *ns_keytype_names(void)
{
    return "ed25519, ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096, random, opaque";
}

int ns_keytype_generate(const ns_keytype *t, EVP_PKEY **out)
{
    EVP_PKEY *k = NULL;

    if (t->kind != NS_KIND_KEYPAIR)
        return NS_E_INVAL;
    if (t->group != NULL)
        k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", t->group);
    else if (t->bits != 0)
        k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)t->bits);
    else
        k = EVP_PKEY_Q_keygen(NULL, NULL, t->evp_name);
    if (k == NULL)
        return NS_E_CRYPTO;
    *out = k;
    return 0;
}

int ns_keytype_classify(EVP_PKEY *pkey, const ns_keytype **out)
{
    char group[32] = "";
    size_t glen = 0;

    if (EVP_PKEY_is_a(pkey, "ED25519")) {
        *out = ns_keytype_find("ed25519");
        return 0;
    }
    if (EVP_PKEY_is_a(pkey, "EC") &&
        EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &glen) == 1) {
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
            *out = ns_keytype_find("ecdsa-p256");
            return 0;
        }
        if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
            *out = ns_keytype_find("ecdsa-p384");
            return 0;
        }
    }
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        int bits = EVP_PKEY_get_bits(pkey);
        const char *name = bits == 2048   ? "rsa-2048"
                           : bits == 3072 ? "rsa-3072"
                           : bits == 4096 ? "rsa-4096"
                                          : NULL;
        if (name != NULL) {
            *out = ns_keytype_find(name);
            return 0;
        }
    }
    ns_log(NS_LOG_ERROR, "unsupported key: %s %d bits (supported: %s)", EVP_PKEY_get0_type_name(pkey),
           EVP_PKEY_get_bits(pkey), ns_keytype_names());
    return NS_E_INVAL;
}

int ns_keytype_to_pkcs8(EVP_PKEY *pkey, ns_buf **der)
{
    PKCS8_PRIV_KEY_INFO *p8 = NULL;
    unsigned char *tmp = NULL;
    int len, r = NS_E_CRYPTO;

    if ((p8 = EVP_PKEY2PKCS8(pkey)) == NULL || (len = i2d_PKCS8_PRIV_KEY_INFO(p8, &tmp)) <= 0)
        goto out;
    r = ns_buf_from(tmp, (size_t)len, (size_t)len, true, der);
out:
    if (tmp != NULL)
        OPENSSL_clear_free(tmp, (size_t)len);
    PKCS8_PRIV_KEY_INFO_free(p8);
    return r;
}

int ns_keytype_from_pkcs8(const uint8_t *der, size_t n, const ns_keytype *t, EVP_PKEY **out)
{
    const unsigned char *p = der;
    PKCS8_PRIV_KEY_INFO *p8 = NULL;
    EVP_PKEY *k = NULL;
    const ns_keytype *got;
    int r = NS_E_FORMAT;

    if (n > 65536 || (p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)n)) == NULL || p != der + n ||
        (k = EVP_PKCS82PKEY(p8)) == NULL)
        goto out;
    if ((r = ns_keytype_classify(k, &got)) != 0)
        goto out;
    if (t != NULL && got != t) {
        ns_log(NS_LOG_ERROR, "key is %s, not %s", got->name, t->name);
        r = NS_E_FORMAT;
        goto out;
    }
    *out = k;
    k = NULL;
    r = 0;
out:
    EVP_PKEY_free(k);
    PKCS8_PRIV_KEY_INFO_free(p8);
    return r;
}

/* Refuse to prompt for a passphrase: encrypted keys must be decrypted by the operator first. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

int ns_keytype_from_pem(const uint8_t *p, size_t n, EVP_PKEY **out)
{
    static const char *const markers[] = {"-----BEGIN PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----",
                                          "-----BEGIN RSA PRIVATE KEY-----",
                                          "-----BEGIN ENCRYPTED PRIVATE KEY-----"};
    BIO *bio = NULL;
    EVP_PKEY *k = NULL;
    int found = 0;

    if (p == NULL || n == 0)
        return NS_E_NOT_FOUND;

    /* A PEM block starts a line: the same text inside, say, a JSON string (a service-account file kept as
     * an opaque secret) is not a key to parse. */
    for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]) && !found; i++) {
        size_t mlen = strlen(markers[i]);
        for (const uint8_t *at = p;
             !found && (at = memmem(at, n - (size_t)(at - p), markers[i], mlen)) != NULL; at++)
            found = at == p || at[-1] == '\n';
    }
    if (!found)
        return NS_E_NOT_FOUND;
    if (memmem(p, n, "ENCRYPTED", 9) != NULL || memmem(p, n, "Proc-Type: 4,ENCRYPTED", 22) != NULL) {
        ns_log(NS_LOG_ERROR,
               "the private key is encrypted; decrypt it first (openssl pkey -in FILE -out NEW)");
        return NS_E_INVAL;
    }
    if (n > (size_t)INT32_MAX || (bio = BIO_new_mem_buf(p, (int)n)) == NULL)
        return NS_E_NOMEM;
    k = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (k == NULL) {
        ns_log(NS_LOG_ERROR, "the PEM private key does not parse");
        return NS_E_INVAL;
    }
    *out = k;
    return 0;
}

static int set_b64url(json_t *o, const char *key, const uint8_t *p, size_t n)
{
    char *s = NULL;
    int r;
    if ((r = ns_b64url_encode(p, n, &s)) != 0)
        return r;
    r = json_object_set_new(o, key, json_string(s)) == 0 ? 0 : NS_E_NOMEM;
    free(s);
    return r;
}

static int set_bn(json_t *o, const char *key, EVP_PKEY *pkey, const char *param)
{
    BIGNUM *bn = NULL;
    uint8_t *bytes = NULL;
    int len, r = NS_E_CRYPTO;

    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1)
        goto out;
    len = BN_num_bytes(bn);
    if ((bytes = malloc(len > 0 ? (size_t)len : 1)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    BN_bn2bin(bn, bytes);
    r = set_b64url(o, key, bytes, (size_t)len);
out:
    free(bytes);
    BN_free(bn);
    return r;
}

int ns_keytype_jwk(EVP_PKEY *pkey, json_t **out)
{
    const ns_keytype *t;
    json_t *o = json_object();
    uint8_t pub[200];
    size_t len = 0;
    int r;

    if (o == NULL)
        return NS_E_NOMEM;
    if ((r = ns_keytype_classify(pkey, &t)) != 0)
        goto out;
    r = NS_E_CRYPTO;
    if (strcmp(t->evp_name, "ED25519") == 0) {
        len = sizeof(pub);
        if (EVP_PKEY_get_raw_public_key(pkey, pub, &len) != 1)
            goto out;
        json_object_set_new(o, "kty", json_string("OKP"));
        json_object_set_new(o, "crv", json_string("Ed25519"));
        r = set_b64url(o, "x", pub, len);
    } else if (strcmp(t->evp_name, "EC") == 0) {
        size_t coord = t->group[2] == '2' ? 32 : 48; /* P-256 / P-384 */
        if (EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pub, sizeof(pub),
                                            &len) != 1 ||
            len != 1 + 2 * coord || pub[0] != 0x04)
            goto out;
        json_object_set_new(o, "kty", json_string("EC"));
        json_object_set_new(o, "crv", json_string(t->group));
        if ((r = set_b64url(o, "x", pub + 1, coord)) == 0)
            r = set_b64url(o, "y", pub + 1 + coord, coord);
    } else {
        json_object_set_new(o, "kty", json_string("RSA"));
        if ((r = set_bn(o, "n", pkey, OSSL_PKEY_PARAM_RSA_N)) == 0)
            r = set_bn(o, "e", pkey, OSSL_PKEY_PARAM_RSA_E);
    }
    if (r != 0)
        goto out;
    *out = o;
    o = NULL;
out:
    json_decref(o);
    return r;
}

int ns_keytype_jwks(const ns_jwks_key *keys, size_t n, bool secret, ns_buf **out)
{
    json_t *root = NULL, *arr = NULL, *jwk = NULL;
    char *text = NULL;
    int r = NS_E_NOMEM;

    ns_json_init();
    if ((root = json_object()) == NULL || (arr = json_array()) == NULL ||
        json_object_set(root, "keys", arr) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if ((r = ns_keytype_jwk(keys[i].pkey, &jwk)) != 0)
            goto out;
        r = NS_E_NOMEM;
        if (json_object_set_new(jwk, "kid", json_string(keys[i].kid)) != 0 ||
            json_object_set_new(jwk, "alg", json_string(keys[i].alg)) != 0 ||
            json_object_set_new(jwk, "use", json_string("sig")) != 0 || json_array_append(arr, jwk) != 0)
            goto out;
        json_decref(jwk);
        jwk = NULL;
    }
    if ((text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) == NULL)
        goto out;
    if ((r = ns_buf_from(text, strlen(text), strlen(text) + 1, secret, out)) == 0)
        r = ns_buf_append(*out, "\n", 1);
out:
    ns_json_free(text);
    json_decref(jwk);
    json_decref(arr);
    json_decref(root);
    return r;
}

int ns_keytype_thumbprint(EVP_PKEY *pkey, char out[NS_KEY_ID_MAX])
{
    /* RFC 7638 §3: the required members only, in lexicographic order, no whitespace. */
    static const char *const order[] = {"crv", "e", "kty", "n", "x", "y"};
    json_t *jwk = NULL, *canon = NULL;
    char *text = NULL, *b64 = NULL;
    uint8_t md[32];
    int r;

    if ((r = ns_keytype_jwk(pkey, &jwk)) != 0)
        return r;
    r = NS_E_NOMEM;
    if ((canon = json_object()) == NULL)
        goto out;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        json_t *v = json_object_get(jwk, order[i]);
        if (v != NULL && json_object_set(canon, order[i], v) != 0)
            goto out;
    }
    if ((text = json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
        goto out;
    if (EVP_Digest(text, strlen(text), md, NULL, EVP_sha256(), NULL) != 1) {
        r = NS_E_CRYPTO;
        goto out;
    }
    if ((r = ns_b64url_encode(md, sizeof(md), &b64)) != 0)
        goto out;
    snprintf(out, NS_KEY_ID_MAX, "%s", b64);
    r = 0;
out:
    free(b64);
    ns_json_free(text);
    json_decref(canon);
    json_decref(jwk);
    return r;
}

int ns_keytype_fingerprint(EVP_PKEY *pkey, char out[64])
{
    unsigned char *der = NULL;
    uint8_t md[32];
    char *b64 = NULL;
    int len, r = NS_E_CRYPTO;

    if ((len = i2d_PUBKEY(pkey, &der)) <= 0)
        return NS_E_CRYPTO;
    if (EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(), NULL) == 1 &&
        (r = ns_b64_encode(md, 32, &b64)) == 0) {
        char *eq = strchr(b64, '=');
        if (eq)
            *eq = '\0';
        snprintf(out, 64, "SHA256:%s", b64);
    }
    free(b64);
    OPENSSL_free(der);
    return r;
}
