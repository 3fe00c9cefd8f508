#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/log.h"
#include "common/secmem.h"
#include "keys/aead.h"
#include "keys/kek.h"
#include "keys/keymat.h"

/* Software KEK: an AES-256 key held in the secure heap. wrapped = nonce(12) || GCM(dek)(32) || tag(16). */

#define SOFT_WRAPPED_LEN (NS_AEAD_NONCE + NS_DEK_LEN + NS_AEAD_TAG)

static int soft_wrap(ns_kek *k, const uint8_t dek[NS_DEK_LEN], const uint8_t *aad, size_t aad_len,
                     ns_buf *wrapped, uint8_t *param)
{
    ns_buf *key = k->impl;
    ns_iov a = {aad, aad_len};
    uint8_t *w;
    int r;

    if ((r = ns_buf_extend(wrapped, SOFT_WRAPPED_LEN, &w)) != 0)
        return r;
    if ((r = ns_random(w, NS_AEAD_NONCE)) != 0)
        return r;
    *param = 0;
    return ns_aead_seal(key->data, w, &a, 1, dek, NS_DEK_LEN, w + NS_AEAD_NONCE,
                        w + NS_AEAD_NONCE + NS_DEK_LEN);
}

static int soft_unwrap(ns_kek *k, uint8_t param, const uint8_t *wrapped, size_t n, const uint8_t *aad,
                       size_t aad_len, uint8_t dek[NS_DEK_LEN])
{
    ns_buf *key = k->impl;
    ns_iov a = {aad, aad_len};

    if (param != 0 || n != SOFT_WRAPPED_LEN)
        return NS_E_FORMAT;
    /* The id is a commitment to this very key, so a failed tag here means damaged data. */
    return ns_aead_open(key->data, wrapped, &a, 1, wrapped + NS_AEAD_NONCE, NS_DEK_LEN,
                        wrapped + NS_AEAD_NONCE + NS_DEK_LEN, dek);
}

/* id material = HMAC-SHA256(key, "nstance-secrets kek-id v1"): a PRF output, so the id reveals nothing. */
static int soft_fingerprint(ns_kek *k, uint8_t id[NS_KEK_ID_LEN])
{
    static const char label[] = "nstance-secrets kek-id v1";
    ns_buf *key = k->impl;
    uint8_t mac[32];
    unsigned maclen = 0;
    int r;

    if (HMAC(EVP_sha256(), key->data, (int)key->len, (const uint8_t *)label, sizeof(label) - 1, mac,
             &maclen) == NULL)
        return NS_E_CRYPTO;
    r = ns_kek_id_derive(NS_MECH_SOFT_GCM, mac, maclen, id);
    ns_wipe(mac, sizeof(mac));
    return r;
}

static void soft_free(ns_kek *k)
{
    ns_buf_free(k->impl);
}

static const ns_kek_ops soft_ops = {"software-aes-gcm", soft_wrap, soft_unwrap, soft_fingerprint, soft_free};

int ns_kek_soft_new(const uint8_t key[NS_DEK_LEN], const char *desc, ns_kek **out)
{
    ns_kek *k = NULL;
    ns_buf *kb = NULL;
    int r = NS_E_INTERNAL;

    if ((k = calloc(1, sizeof(*k))) == NULL || (k->source = strdup(desc)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = ns_buf_from(key, NS_DEK_LEN, NS_DEK_LEN, true, &kb)) != 0)
        goto out;
    k->ops = &soft_ops;
    k->mech = NS_MECH_SOFT_GCM;
    k->impl = kb;
    kb = NULL;
    if ((r = soft_fingerprint(k, k->id)) != 0)
        goto out;
    *out = k;
    k = NULL;
    r = 0;
out:
    ns_buf_free(kb);
    ns_kek_free(k);
    return r;
}
