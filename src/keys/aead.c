#include "ns-build.h"

#include <limits.h>
#include <string.h>
#include <pthread.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/secmem.h"
#include "keys/aead.h"

/* Fetch the cipher once: an implicit fetch on every EVP_*Init_ex() costs more than sealing a small blob. */
static pthread_once_t gcm_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *gcm;

static void gcm_fetch(void)
{
    gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

/* One operation on ctx; key may be NULL to keep the key ctx already holds (only the nonce changes). */
static int aead_on(EVP_CIPHER_CTX *ctx, int enc, const uint8_t *key, const uint8_t *nonce, const ns_iov *aad,
                   size_t naad, const uint8_t *in, size_t n, uint8_t *out, uint8_t *tag)
{
    uint8_t fin[16];
    int len;

    if (n > INT_MAX)
        return NS_E_CRYPTO;
    if (EVP_CipherInit_ex2(ctx, key ? gcm : NULL, key, nonce, enc, NULL) != 1)
        return NS_E_CRYPTO;
    for (size_t i = 0; i < naad; i++)
        if (aad[i].n > 0 &&
            (aad[i].n > INT_MAX || EVP_CipherUpdate(ctx, NULL, &len, aad[i].p, (int)aad[i].n) != 1))
            return NS_E_CRYPTO;
    if (n > 0 && EVP_CipherUpdate(ctx, out, &len, in, (int)n) != 1)
        return NS_E_CRYPTO;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, NS_AEAD_TAG, (void *)tag) != 1)
        return NS_E_CRYPTO;
    if (EVP_CipherFinal_ex(ctx, fin, &len) != 1) {
        if (enc)
            return NS_E_CRYPTO;
        ns_wipe(out, n);
        return NS_E_INTEGRITY;
    }
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, NS_AEAD_TAG, tag) != 1)
        return NS_E_CRYPTO;
    return 0;
}

static int aead(int enc, const uint8_t *key, const uint8_t *nonce, const ns_iov *aad, size_t naad,
                const uint8_t *in, size_t n, uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *ctx;
    int r;

    pthread_once(&gcm_once, gcm_fetch);
    if (gcm == NULL)
        return NS_E_CRYPTO;
    if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
        return NS_E_NOMEM;
    r = aead_on(ctx, enc, key, nonce, aad, naad, in, n, out, tag);
    EVP_CIPHER_CTX_free(ctx); /* cleanses the key schedule */
    return r;
}

struct ns_aead {
    EVP_CIPHER_CTX *ctx;
    int keyed;
    uint8_t key[NS_AEAD_KEY];
};

int ns_aead_new(const uint8_t key[NS_AEAD_KEY], ns_aead **out)
{
    ns_aead *a;

    pthread_once(&gcm_once, gcm_fetch);
    if (gcm == NULL)
        return NS_E_CRYPTO;
    if ((a = ns_secmem_alloc(sizeof(*a))) == NULL)
        return NS_E_NOMEM;
    if ((a->ctx = EVP_CIPHER_CTX_new()) == NULL) {
        ns_secmem_free(a, sizeof(*a));
        return NS_E_NOMEM;
    }
    memcpy(a->key, key, NS_AEAD_KEY);
    *out = a;
    return 0;
}

void ns_aead_free(ns_aead *a)
{
    if (a == NULL)
        return;
    EVP_CIPHER_CTX_free(a->ctx);
    ns_secmem_free(a, sizeof(*a));
}

/* The key schedule is computed on first use and kept for the next operations. */
int ns_aead_open_with(ns_aead *a, const uint8_t nonce[NS_AEAD_NONCE], const ns_iov *aad, size_t naad,
                      const uint8_t *ct, size_t n, const uint8_t tag[NS_AEAD_TAG], uint8_t *pt)
{
    int r = aead_on(a->ctx, 0, a->keyed ? NULL : a->key, nonce, aad, naad, ct, n, pt, (uint8_t *)tag);
    a->keyed = a->keyed || r == 0 || r == NS_E_INTEGRITY;
    return r;
}

int ns_aead_seal(const uint8_t key[NS_AEAD_KEY], const uint8_t nonce[NS_AEAD_NONCE], const ns_iov *aad,
                 size_t naad, const uint8_t *pt, size_t n, uint8_t *ct, uint8_t tag[NS_AEAD_TAG])
{
    return aead(1, key, nonce, aad, naad, pt, n, ct, tag);
}

int ns_aead_open(const uint8_t key[NS_AEAD_KEY], const uint8_t nonce[NS_AEAD_NONCE], const ns_iov *aad,
                 size_t naad, const uint8_t *ct, size_t n, const uint8_t tag[NS_AEAD_TAG], uint8_t *pt)
{
    return aead(0, key, nonce, aad, naad, ct, n, pt, (uint8_t *)tag);
}

int ns_random(void *p, size_t n)
{
    if (n > INT_MAX || RAND_bytes(p, (int)n) != 1)
        return NS_E_CRYPTO;
    return 0;
}
