#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>

#include "common/json.h"
#include "common/log.h"
#include "secrets/export.h"

/* PEM text goes through a secure-heap memory BIO, so private keys never sit in ordinary memory. */
static int pem_keys(const ns_secret_doc *d, size_t count, int public_only, ns_buf **out)
{
    BIO *bio = NULL;
    EVP_PKEY *k = NULL;
    char *p = NULL;
    long len;
    int r = NS_E_CRYPTO;

    if ((bio = BIO_new(BIO_s_secmem())) == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i < count; i++) {
        if ((r = ns_doc_key_pkey(d, i, &k)) != 0)
            goto out;
        r = NS_E_CRYPTO;
        if ((public_only ? PEM_write_bio_PUBKEY(bio, k)
                         : PEM_write_bio_PKCS8PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL)) != 1)
            goto out;
        EVP_PKEY_free(k);
        k = NULL;
    }
    if ((len = BIO_get_mem_data(bio, &p)) <= 0)
        goto out;
    r = ns_buf_from(p, (size_t)len, (size_t)len, true, out);
out:
    EVP_PKEY_free(k);
    BIO_free(bio);
    return r;
}

static int jwks(const ns_secret_doc *d, ns_buf **out)
{
    ns_jwks_key *keys = calloc(d->n > 0 ? d->n : 1, sizeof(*keys));
    size_t made = 0;
    int r = NS_E_NOMEM;

    if (keys == NULL)
        return NS_E_NOMEM;
    for (; made < d->n; made++) {
        if ((r = ns_doc_key_pkey(d, made, &keys[made].pkey)) != 0)
            goto out;
        keys[made].kid = d->keys[made].id;
        keys[made].alg = d->type->jws_alg;
    }
    r = ns_keytype_jwks(keys, d->n, true, out);
out:
    for (size_t i = 0; i < made; i++)
        EVP_PKEY_free(keys[i].pkey);
    free(keys);
    return r;
}

int ns_export(const ns_secret_doc *d, const char *format, ns_buf **out)
{
    int keypair = d->type->kind == NS_KIND_KEYPAIR;

    if (strcmp(format, "raw") == 0) {
        if (keypair) {
            ns_log(NS_LOG_ERROR, "raw is for random and opaque secrets; this one is %s (use pem)",
                   d->type->name);
            return NS_E_USAGE;
        }
        return ns_buf_from(d->keys[0].material->data, d->keys[0].material->len, d->keys[0].material->len,
                           true, out);
    }
    if (strcmp(format, "pem-bundle") != 0 && strcmp(format, "pem") != 0 &&
        strcmp(format, "public-pem-bundle") != 0 && strcmp(format, "jwks") != 0) {
        ns_log(NS_LOG_ERROR, "unknown export format '%.32s' (pem-bundle, pem, public-pem-bundle, jwks, raw)",
               format);
        return NS_E_USAGE;
    }
    if (!keypair) {
        ns_log(NS_LOG_ERROR, "%s is for key pairs; this secret is %s (use raw)", format, d->type->name);
        return NS_E_USAGE;
    }
    if (strcmp(format, "jwks") == 0)
        return jwks(d, out);
    if (strcmp(format, "pem") == 0)
        return pem_keys(d, 1, 0, out);
    return pem_keys(d, d->n, strcmp(format, "public-pem-bundle") == 0, out);
}
