#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/secmem.h"
#include "keys/kek.h"

static const char *const mech_names[] = {
    [NS_MECH_AES_GCM] = "aes-gcm",
    [NS_MECH_AES_KWP] = "aes-kwp",
    [NS_MECH_RSA_OAEP] = "rsa-oaep",
    [NS_MECH_SOFT_GCM] = "software-aes-gcm",
};

uint8_t ns_kek_mech_from_name(const char *name)
{
    for (uint8_t m = NS_MECH_AES_GCM; m <= NS_MECH_RSA_OAEP; m++)
        if (strcmp(name, mech_names[m]) == 0)
            return m;
    return 0;
}

const char *ns_kek_mech_name(uint8_t mech)
{
    if (mech >= NS_MECH_AES_GCM && mech <= NS_MECH_SOFT_GCM)
        return mech_names[mech];
    return "unknown";
}

int ns_kek_id_derive(uint8_t mech, const uint8_t *material, size_t n, uint8_t id[NS_KEK_ID_LEN])
{
    static const char label[] = "nstance-secrets kek-id v1";
    uint8_t md[32];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok;

    if (ctx == NULL)
        return NS_E_NOMEM;
    ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
         EVP_DigestUpdate(ctx, label, sizeof(label) - 1) == 1 && EVP_DigestUpdate(ctx, &mech, 1) == 1 &&
         EVP_DigestUpdate(ctx, material, n) == 1 && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return NS_E_CRYPTO;
    memcpy(id, md, NS_KEK_ID_LEN);
    return 0;
}

int ns_kek_diagnose_unwrap_failure(ns_kek *k)
{
    uint8_t now[NS_KEK_ID_LEN];
    int r;

    if ((r = k->ops->fingerprint(k, now)) != 0)
        return r;
    return memcmp(now, k->id, NS_KEK_ID_LEN) == 0 ? NS_E_INTEGRITY : NS_E_KEK_WRONG;
}

void ns_kek_free(ns_kek *k)
{
    if (k == NULL)
        return;
    if (k->ops != NULL && k->ops->free != NULL)
        k->ops->free(k);
    free(k->source);
    free(k->warning);
    free(k);
}
