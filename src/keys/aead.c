#include "config.h"

#include <limits.h>
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

static int aead(int enc, const uint8_t *key, const uint8_t *nonce, const ns_iov *aad, size_t naad,
                const uint8_t *in, size_t n, uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t fin[16];
    int len, r = NS_E_CRYPTO;

    pthread_once(&gcm_once, gcm_fetch);
    if (gcm == NULL || n > INT_MAX)
        return NS_E_CRYPTO;
    if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
        return NS_E_NOMEM;
    if (EVP_CipherInit_ex2(ctx, gcm, key, nonce, enc, NULL) != 1)
        goto out;
    for (size_t i = 0; i < naad; i++)
        if (aad[i].n > 0 &&
            (aad[i].n > INT_MAX || EVP_CipherUpdate(ctx, NULL, &len, aad[i].p, (int)aad[i].n) != 1))
            goto out;
    if (n > 0 && EVP_CipherUpdate(ctx, out, &len, in, (int)n) != 1)
        goto out;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, NS_AEAD_TAG, (void *)tag) != 1)
        goto out;
    if (EVP_CipherFinal_ex(ctx, fin, &len) != 1) {
        r = enc ? NS_E_CRYPTO : NS_E_INTEGRITY;
        if (!enc)
            ns_wipe(out, n);
        goto out;
    }
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, NS_AEAD_TAG, tag) != 1)
        goto out;
    r = 0;
out:
    EVP_CIPHER_CTX_free(ctx); /* cleanses the key schedule */
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
