#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "common/secmem.h"
#include "keys/aead.h"
#include "keys/kek.h"
#include "pkcs11/key.h"
#include "pkcs11/rv.h"
#include "pkcs11/uri.h"

/* Token KEKs. The key never leaves the token: aes-gcm and aes-kwp run in the token both ways; rsa-oaep
 * encrypts the DEK in software with the public key and decrypts it in the token (this works on TPMs and
 * over p11-kit remoting, which lack AES-GCM and key wrap). */

#define GCM_WRAPPED_LEN (NS_AEAD_NONCE + NS_DEK_LEN + NS_AEAD_TAG)
#define KWP_WRAPPED_LEN (NS_DEK_LEN + 8)

static const char id_label[] = "nstance-secrets kek-id v1";

struct p11mech;

struct p11kek {
    const struct p11mech *m;
    ns_p11_token *t;
    ns_p11_key *key;
    EVP_PKEY *pub;      /* rsa-oaep: the public key, for wrapping in software */
    uint8_t oaep_write; /* rsa-oaep: hash used for new wraps */
    unsigned verified;  /* the key's lookup epoch whose fingerprint matched the id (atomic) */
    int said_kcv;       /* aes-gcm: the CKA_CHECK_VALUE id was logged once (atomic) */
    int msg_api;        /* aes-gcm: wrap with the PKCS#11 3.0 message API (token-generated IVs) */
    int said_template;  /* aes-kwp: the DEK template fallback was logged once (atomic) */
    char *what_dec;     /* "C_Decrypt with <uri>" for messages */
    char *what_enc;
};

/* One mechanism: what the token must offer, what the key must be, and the operations. */
struct p11mech {
    uint8_t mech;         /* NS_MECH_* */
    ns_kek_ops ops;       /* name, wrap, unwrap, fingerprint (the id derivation), free */
    CK_MECHANISM_TYPE ck; /* the token must offer it with ck_flags (checked at open) */
    CK_FLAGS ck_flags;
    const char *ck_name;       /* "CKM_AES_GCM (aes-gcm)": for messages */
    CK_OBJECT_CLASS cls;       /* the class of the key object the URI names */
    CK_KEY_TYPE key_type;      /* the key must be of this type */
    const char *key_type_name; /* "AES" */
    CK_ULONG value_len;        /* and of this CKA_VALUE_LEN (0: not checked) */
    CK_ATTRIBUTE_TYPE use[2];  /* attributes that must be true on the key (0: none) */
    const char *use_names;     /* "CKA_ENCRYPT and CKA_DECRYPT": for messages */
    /* After the key checks, before the fingerprint (rsa-oaep: read the public key, settle the OAEP hash);
     * NULL if nothing is needed. */
    int (*prepare)(ns_kek *k, const ns_kek_config *kc);
    /* `kek generate`: create a key for this mechanism (ns_p11_key_generate). */
    int (*generate)(const struct p11mech *m, const char *uri, const char *pin_env, unsigned sessions);
};

/* ---- one operation per call into the token ---- */

struct io {
    CK_MECHANISM mech;
    const uint8_t *in;
    size_t in_len;
    uint8_t out[640]; /* wiped by the caller */
    CK_ULONG out_len;
    CK_RV refused; /* aes-kwp: what the token said to the first DEK template, if the fallback was used */
};

/* C_EncryptInit + C_Encrypt, or C_DecryptInit + C_Decrypt: the same shape both ways. */
static CK_RV crypt_once(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, struct io *io, CK_C_EncryptInit init,
                        CK_C_Encrypt once)
{
    CK_RV rv;
    if ((rv = init(s, &io->mech, key)) != CKR_OK)
        return rv;
    io->out_len = sizeof(io->out);
    return once(s, (CK_BYTE_PTR)io->in, io->in_len, io->out, &io->out_len);
}

static CK_RV op_encrypt(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, void *ctx)
{
    return crypt_once(s, key, ctx, fn->C_EncryptInit, fn->C_Encrypt);
}

static CK_RV op_decrypt(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, void *ctx)
{
    return crypt_once(s, key, ctx, fn->C_DecryptInit, fn->C_Decrypt);
}

/* Attribute values that templates point at (tokens only read them). */
static const CK_OBJECT_CLASS cls_secret = CKO_SECRET_KEY;
static const CK_KEY_TYPE kt_aes = CKK_AES;
static const CK_BBOOL ck_yes = CK_TRUE, ck_no = CK_FALSE;

/* The template of the DEK as a short-lived session object (AES, extractable), with its value when one is
 * given: 6 or 7 attributes. First choice: not sensitive and not private. Some tokens refuse CKA_PRIVATE false
 * (private objects only) or a non-sensitive secret key; the fallback leaves CKA_PRIVATE to the token and,
 * for a wrap (the value is not read back), asks for a sensitive key. An unwrap must read the DEK back, so it
 * keeps CKA_SENSITIVE false either way. */
static CK_ULONG dek_object(CK_ATTRIBUTE t[7], const uint8_t *value, size_t n, int fallback)
{
    CK_ATTRIBUTE fixed[] = {
        {CKA_CLASS, (void *)&cls_secret, sizeof(cls_secret)},
        {CKA_KEY_TYPE, (void *)&kt_aes, sizeof(kt_aes)},
        {CKA_TOKEN, (void *)&ck_no, 1},
        {CKA_SENSITIVE, (void *)(fallback && value != NULL ? &ck_yes : &ck_no), 1},
        {CKA_EXTRACTABLE, (void *)&ck_yes, 1},
        {CKA_PRIVATE, (void *)&ck_no, 1},
    };
    CK_ULONG k = fallback ? 5 : 6;
    memcpy(t, fixed, k * sizeof(fixed[0]));
    if (value == NULL)
        return k;
    t[k] = (CK_ATTRIBUTE){CKA_VALUE, (void *)value, n};
    return k + 1;
}

/* The token refused the template (not the operation). */
static int template_refused(CK_RV rv)
{
    return rv == CKR_TEMPLATE_INCONSISTENT || rv == CKR_ATTRIBUTE_VALUE_INVALID ||
           rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_READ_ONLY;
}

/* KWP: the DEK enters the token as a short-lived session object, is wrapped, and the object destroyed. */
static CK_RV op_kwp_wrap(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, void *ctx)
{
    struct io *io = ctx;
    CK_ATTRIBUTE tmpl[7];
    CK_ULONG n = dek_object(tmpl, io->in, io->in_len, 0);
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    CK_RV rv;

    if ((rv = fn->C_CreateObject(s, tmpl, n, &h)) != CKR_OK && template_refused(rv)) {
        io->refused = rv;
        n = dek_object(tmpl, io->in, io->in_len, 1);
        rv = fn->C_CreateObject(s, tmpl, n, &h);
    }
    if (rv != CKR_OK)
        return rv;
    io->out_len = sizeof(io->out);
    rv = fn->C_WrapKey(s, &io->mech, key, h, io->out, &io->out_len);
    (void)fn->C_DestroyObject(s, h);
    return rv;
}

static CK_RV op_kwp_unwrap(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, void *ctx)
{
    struct io *io = ctx;
    CK_ATTRIBUTE tmpl[7];
    CK_ULONG n = dek_object(tmpl, NULL, 0, 0);
    CK_ATTRIBUTE val = {CKA_VALUE, io->out, sizeof(io->out)};
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    CK_RV rv;

    rv = fn->C_UnwrapKey(s, &io->mech, key, (CK_BYTE_PTR)io->in, io->in_len, tmpl, n, &h);
    if (rv != CKR_OK && template_refused(rv)) {
        io->refused = rv;
        n = dek_object(tmpl, NULL, 0, 1);
        rv = fn->C_UnwrapKey(s, &io->mech, key, (CK_BYTE_PTR)io->in, io->in_len, tmpl, n, &h);
    }
    if (rv != CKR_OK)
        return rv;
    rv = fn->C_GetAttributeValue(s, h, &val, 1);
    io->out_len = rv == CKR_OK ? val.ulValueLen : 0;
    (void)fn->C_DestroyObject(s, h);
    return rv;
}

/* ---- shared helpers ---- */

static int run_io(struct p11kek *pk, const char *what, ns_p11_op op, struct io *io, CK_RV *rv)
{
    return ns_p11_run(pk->t, pk->key, what, op, io, rv);
}

/* After an unwrap failure: a token that is gone stays "unavailable"; anything else may be damaged data or a
 * different key now sitting behind the URI, which the fingerprint tells apart. */
static int unwrap_failed(ns_kek *k, int r)
{
    if (r == NS_E_TOKEN_UNAVAILABLE || r == NS_E_PIN || r == NS_E_NOMEM || r == NS_E_MECHANISM)
        return r;
    return ns_kek_diagnose_unwrap_failure(k);
}

/* After a wrap made in the token: if the key's lookup found another object since its fingerprint was last
 * checked (the key was replaced behind the URI), check the fingerprint again before the wrap is used, so
 * that nothing is ever sealed under an id that is not the sealing key's. */
static int check_same_key(ns_kek *k)
{
    struct p11kek *pk = k->impl;
    unsigned epoch = ns_p11_key_epoch(pk->key);
    uint8_t now[NS_KEK_ID_LEN];
    int r;

    if (epoch == __atomic_load_n(&pk->verified, __ATOMIC_ACQUIRE))
        return 0;
    if ((r = k->ops->fingerprint(k, now)) != 0)
        return r;
    if (memcmp(now, k->id, NS_KEK_ID_LEN) != 0) {
        ns_log(NS_LOG_ERROR, "the key behind '%s' has been replaced: it is no longer the key with this id",
               ns_p11_key_uri(pk->key));
        return NS_E_KEK_WRONG;
    }
    __atomic_store_n(&pk->verified, epoch, __ATOMIC_RELEASE);
    return 0;
}

static int copy_dek(struct io *io, uint8_t dek[NS_DEK_LEN])
{
    int r = io->out_len == NS_DEK_LEN ? 0 : NS_E_INTEGRITY;
    if (r == 0)
        memcpy(dek, io->out, NS_DEK_LEN);
    ns_wipe(io->out, sizeof(io->out));
    return r;
}

/* ---- aes-gcm ---- */

static int gcm_wrap_message(ns_kek *k, const uint8_t dek[NS_DEK_LEN], const uint8_t *aad, size_t aad_len,
                            ns_buf *wrapped);

static int gcm_wrap(ns_kek *k, const uint8_t dek[NS_DEK_LEN], const uint8_t *aad, size_t aad_len,
                    ns_buf *wrapped, uint8_t *param)
{
    struct p11kek *pk = k->impl;
    uint8_t iv[NS_AEAD_NONCE];
    CK_GCM_PARAMS gp = {iv, sizeof(iv), sizeof(iv) * 8, (CK_BYTE_PTR)aad, aad_len, NS_AEAD_TAG * 8};
    struct io io = {{CKM_AES_GCM, &gp, sizeof(gp)}, dek, NS_DEK_LEN, {0}, 0, CKR_OK};
    int r;

    *param = 0;
    if (pk->msg_api)
        return gcm_wrap_message(k, dek, aad, aad_len, wrapped);
    if ((r = ns_random(iv, sizeof(iv))) != 0)
        return r;
    /* The IV stored is the one in the parameters after the call, not the one we chose: AWS CloudHSM ignores
     * the caller's IV, generates its own and writes it back through pIv (its PKCS#11 documentation), and a
     * token that uses ours leaves it as it was. */
    if ((r = run_io(pk, pk->what_enc, op_encrypt, &io, NULL)) == 0 && (r = check_same_key(k)) == 0) {
        if (io.out_len != NS_DEK_LEN + NS_AEAD_TAG)
            r = NS_E_TOKEN;
        else if ((r = ns_buf_append(wrapped, iv, sizeof(iv))) == 0)
            r = ns_buf_append(wrapped, io.out, io.out_len);
    }
    ns_wipe(&io, sizeof(io));
    return r;
}

/* PKCS#11 3.0: C_MessageEncryptInit + C_EncryptMessage + C_MessageEncryptFinal, the IV generated by the
 * token (CKG_GENERATE_RANDOM, as FIPS 140-3 wants: SP 800-38D §8.2.2) and written into the params. */
struct msg_io {
    const ns_p11_fn3 *fn3;
    CK_GCM_MESSAGE_PARAMS p;
    const uint8_t *aad;
    size_t aad_len;
    struct io io;
};

static CK_RV op_encrypt_message(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, void *ctx)
{
    struct msg_io *m = ctx;
    CK_MECHANISM mech = {CKM_AES_GCM, NULL, 0};
    CK_RV rv, fin;

    (void)fn;
    if ((rv = m->fn3->C_MessageEncryptInit(s, &mech, key)) != CKR_OK)
        return rv;
    m->io.out_len = sizeof(m->io.out);
    rv = m->fn3->C_EncryptMessage(s, &m->p, sizeof(m->p), (CK_BYTE_PTR)m->aad, m->aad_len,
                                  (CK_BYTE_PTR)m->io.in, m->io.in_len, m->io.out, &m->io.out_len);
    fin = m->fn3->C_MessageEncryptFinal(s);
    return rv != CKR_OK ? rv : fin;
}

static int gcm_wrap_message(ns_kek *k, const uint8_t dek[NS_DEK_LEN], const uint8_t *aad, size_t aad_len,
                            ns_buf *wrapped)
{
    struct p11kek *pk = k->impl;
    uint8_t iv[NS_AEAD_NONCE] = {0}, tag[NS_AEAD_TAG] = {0};
    struct msg_io m = {ns_p11_token_fn3(pk->t),
                       {iv, sizeof(iv), 0, CKG_GENERATE_RANDOM, tag, NS_AEAD_TAG * 8},
                       aad,
                       aad_len,
                       {{CKM_AES_GCM, NULL, 0}, dek, NS_DEK_LEN, {0}, 0, CKR_OK}};
    int r;

    if ((r = ns_p11_run(pk->t, pk->key, pk->what_enc, op_encrypt_message, &m, NULL)) == 0 &&
        (r = check_same_key(k)) == 0) {
        if (m.io.out_len != NS_DEK_LEN)
            r = NS_E_TOKEN;
        else if ((r = ns_buf_append(wrapped, iv, sizeof(iv))) == 0 &&
                 (r = ns_buf_append(wrapped, m.io.out, m.io.out_len)) == 0)
            r = ns_buf_append(wrapped, tag, sizeof(tag));
    }
    ns_wipe(&m, sizeof(m));
    return r;
}

/* aes-gcm at open: the 3.0 message API where the module has it (C_GetInterface), it has the functions, and
 * the token lists CKF_MESSAGE_ENCRYPT for CKM_AES_GCM; C_Encrypt (2.40) otherwise. */
static int gcm_prepare(ns_kek *k, const ns_kek_config *kc)
{
    struct p11kek *pk = k->impl;
    const ns_p11_fn3 *fn3 = ns_p11_token_fn3(pk->t);

    (void)kc;
    pk->msg_api = fn3 != NULL && fn3->C_MessageEncryptInit != NULL && fn3->C_EncryptMessage != NULL &&
                  fn3->C_MessageEncryptFinal != NULL &&
                  ns_p11_token_has_mech(pk->t, CKM_AES_GCM, CKF_MESSAGE_ENCRYPT);
    ns_log(NS_LOG_INFO, "token '%s': aes-gcm wraps with %s", ns_p11_token_label(pk->t),
           pk->msg_api ? "the PKCS#11 3.0 message API (C_EncryptMessage, IV generated by the token)"
           : fn3 != NULL
               ? "C_Encrypt (the module is PKCS#11 3.0 but offers no message encryption for CKM_AES_GCM)"
               : "C_Encrypt (a PKCS#11 2.40 module: no C_GetInterface)");
    return 0;
}

static int gcm_unwrap(ns_kek *k, uint8_t param, const uint8_t *wrapped, size_t n, const uint8_t *aad,
                      size_t aad_len, uint8_t dek[NS_DEK_LEN])
{
    struct p11kek *pk = k->impl;
    uint8_t iv[NS_AEAD_NONCE];
    CK_GCM_PARAMS gp = {iv, sizeof(iv), sizeof(iv) * 8, (CK_BYTE_PTR)aad, aad_len, NS_AEAD_TAG * 8};
    struct io io = {
        {CKM_AES_GCM, &gp, sizeof(gp)}, wrapped + NS_AEAD_NONCE, n - NS_AEAD_NONCE, {0}, 0, CKR_OK};
    int r;

    if (param != 0 || n != GCM_WRAPPED_LEN)
        return NS_E_FORMAT;
    memcpy(iv, wrapped, sizeof(iv));
    /* SoftHSM reports a bad tag as CKR_GENERAL_ERROR, so every failure goes through the diagnosis. */
    if ((r = run_io(pk, pk->what_dec, op_decrypt, &io, NULL)) != 0) {
        ns_wipe(&io, sizeof(io));
        return unwrap_failed(k, r);
    }
    return copy_dek(&io, dek);
}

/* The aes-gcm id, two ways (doc/envelope.md, "KEK ids"):
 *  - GCM with a fixed all-zero IV over 16 zero bytes with the label as AAD: deterministic for the key, and
 *    hashed before use (a random 96-bit wrap IV meets the zero IV with probability 2^-96). Every id made
 *    before tokens that choose their own IVs were supported is this one, so it stays the id wherever the
 *    token honours the fixed IV.
 *  - Where the token refuses a caller's IV (FIPS mode) or replaces it with its own (AWS CloudHSM writes its
 *    IV back through pIv), the fixed-IV value is not deterministic or not there: the id is derived from the
 *    key's CKA_CHECK_VALUE instead (PKCS#11 2.40 §4.10: for AES, the first 3 bytes of the ECB encryption of
 *    a zero block, computed by the token and readable on sensitive keys). */
struct fixed_iv_io {
    struct io io;
    int replaced; /* the token wrote its own IV into pIv */
};

static CK_RV op_encrypt_fixed_iv(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, void *ctx)
{
    struct fixed_iv_io *f = ctx;
    CK_GCM_PARAMS *gp = f->io.mech.pParameter;
    CK_RV rv = op_encrypt(fn, s, key, &f->io);
    static const uint8_t zero[NS_AEAD_NONCE] = {0};

    f->replaced = rv == CKR_OK && memcmp(gp->pIv, zero, sizeof(zero)) != 0;
    return rv;
}

static int gcm_id_check_value(struct p11kek *pk, uint8_t id[NS_KEK_ID_LEN])
{
    static const char tag[] = "CKA_CHECK_VALUE";
    unsigned char *kcv = NULL;
    uint8_t material[sizeof(tag) - 1 + 16];
    size_t len = 0;
    int r;

    if ((r = ns_p11_key_attr(pk->key, CKA_CHECK_VALUE, &kcv, &len)) != 0 || len < 3 || len > 16) {
        ns_log(NS_LOG_ERROR,
               "token '%s' neither encrypts with a caller's GCM IV nor offers CKA_CHECK_VALUE for '%s': no "
               "stable id can be made for this aes-gcm key (use rsa-oaep on this token)",
               ns_p11_token_label(pk->t), ns_p11_key_uri(pk->key));
        free(kcv);
        return r != 0 ? r : NS_E_MECHANISM;
    }
    memcpy(material, tag, sizeof(tag) - 1);
    memcpy(material + sizeof(tag) - 1, kcv, len);
    r = ns_kek_id_derive(NS_MECH_AES_GCM, material, sizeof(tag) - 1 + len, id);
    free(kcv);
    return r;
}

static int gcm_fingerprint(ns_kek *k, uint8_t id[NS_KEK_ID_LEN])
{
    struct p11kek *pk = k->impl;
    uint8_t iv[NS_AEAD_NONCE] = {0}, zero[16] = {0};
    CK_GCM_PARAMS gp = {
        iv, sizeof(iv), sizeof(iv) * 8, (CK_BYTE_PTR)id_label, sizeof(id_label) - 1, NS_AEAD_TAG * 8};
    struct fixed_iv_io f = {{{CKM_AES_GCM, &gp, sizeof(gp)}, zero, sizeof(zero), {0}, 0, CKR_OK}, 0};
    CK_RV rv = CKR_OK;
    int r;

    r = ns_p11_run_quiet(pk->t, pk->key, pk->what_enc, op_encrypt_fixed_iv, &f, &rv);
    if (r == 0 && !f.replaced)
        return ns_kek_id_derive(NS_MECH_AES_GCM, f.io.out, f.io.out_len, id);
    if (r == 0) {
        if (!__atomic_exchange_n(&pk->said_kcv, 1, __ATOMIC_ACQ_REL))
            ns_log(NS_LOG_INFO,
                   "token '%s' replaces the caller's GCM IV with its own: the id of '%s' is derived from its "
                   "CKA_CHECK_VALUE",
                   ns_p11_token_label(pk->t), ns_p11_key_uri(pk->key));
        return gcm_id_check_value(pk, id);
    }
    /* A refused parameter: the token accepts no IV from the caller (FIPS mode). Wrapping needs the PKCS#11
     * 3.0 message API there (C_EncryptMessage with CKG_GENERATE_RANDOM), which this build does not use. */
    if ((rv == CKR_MECHANISM_PARAM_INVALID || rv == CKR_ARGUMENTS_BAD) && pk->msg_api) {
        if (!__atomic_exchange_n(&pk->said_kcv, 1, __ATOMIC_ACQ_REL))
            ns_log(NS_LOG_INFO,
                   "token '%s' refuses a caller's GCM IV (%s): the id of '%s' is derived from its "
                   "CKA_CHECK_VALUE",
                   ns_p11_token_label(pk->t), ns_p11_rv_name(rv), ns_p11_key_uri(pk->key));
        return gcm_id_check_value(pk, id);
    }
    if (rv == CKR_MECHANISM_PARAM_INVALID || rv == CKR_ARGUMENTS_BAD) {
        ns_log(
            NS_LOG_ERROR,
            "token '%s' refuses AES-GCM with an IV chosen by the caller (%s; a FIPS-mode token) and its "
            "module offers no PKCS#11 3.0 message encryption: aes-gcm cannot wrap with '%s'; use mechanism "
            "rsa-oaep on this token",
            ns_p11_token_label(pk->t), ns_p11_rv_name(rv), ns_p11_key_uri(pk->key));
        return NS_E_MECHANISM;
    }
    return rv == CKR_OK ? r : ns_p11_rv_error(rv, ns_p11_token_label(pk->t), pk->what_enc);
}

/* ---- aes-kwp (RFC 5649) ---- */

/* Say once per key which DEK template the token took (doc/tokens.md, "Attributes"). */
static void kwp_say_template(struct p11kek *pk, const struct io *io)
{
    if (io->refused != CKR_OK && !__atomic_exchange_n(&pk->said_template, 1, __ATOMIC_ACQ_REL))
        ns_log(NS_LOG_INFO,
               "token '%s' refused the data key as a public, non-sensitive session object (%s): tried again "
               "leaving CKA_PRIVATE to the token (and, to wrap, with CKA_SENSITIVE true)",
               ns_p11_token_label(pk->t), ns_p11_rv_name(io->refused));
}

static int kwp_wrap(ns_kek *k, const uint8_t dek[NS_DEK_LEN], const uint8_t *aad, size_t aad_len,
                    ns_buf *wrapped, uint8_t *param)
{
    struct p11kek *pk = k->impl;
    struct io io = {{CKM_AES_KEY_WRAP_PAD, NULL, 0}, dek, NS_DEK_LEN, {0}, 0, CKR_OK};
    int r;

    *param = 0;
    if ((r = run_io(pk, "C_WrapKey", op_kwp_wrap, &io, NULL)) == 0 && (r = check_same_key(k)) == 0)
        r = io.out_len == KWP_WRAPPED_LEN ? ns_buf_append(wrapped, io.out, io.out_len) : NS_E_TOKEN;
    kwp_say_template(pk, &io);
    return r;
}

static int kwp_unwrap(ns_kek *k, uint8_t param, const uint8_t *wrapped, size_t n, const uint8_t *aad,
                      size_t aad_len, uint8_t dek[NS_DEK_LEN])
{
    struct p11kek *pk = k->impl;
    struct io io = {{CKM_AES_KEY_WRAP_PAD, NULL, 0}, wrapped, n, {0}, 0, CKR_OK};
    int r;

    if (param != 0 || n != KWP_WRAPPED_LEN)
        return NS_E_FORMAT;
    r = run_io(pk, "C_UnwrapKey", op_kwp_unwrap, &io, NULL);
    kwp_say_template(pk, &io);
    if (r != 0) {
        ns_wipe(&io, sizeof(io));
        return unwrap_failed(k, r);
    }
    return copy_dek(&io, dek);
}

/* KWP is deterministic: wrap a fixed, public 32-byte value (SHA-256 of the label) and hash the result. */
static int kwp_fingerprint(ns_kek *k, uint8_t id[NS_KEK_ID_LEN])
{
    struct p11kek *pk = k->impl;
    uint8_t fixed[32];
    struct io io = {{CKM_AES_KEY_WRAP_PAD, NULL, 0}, fixed, sizeof(fixed), {0}, 0, CKR_OK};
    int r;

    CK_RV rv = CKR_OK;

    if (EVP_Digest(id_label, sizeof(id_label) - 1, fixed, NULL, EVP_sha256(), NULL) != 1)
        return NS_E_CRYPTO;
    r = ns_p11_run_quiet(pk->t, pk->key, "C_WrapKey", op_kwp_wrap, &io, &rv);
    kwp_say_template(pk, &io);
    /* aes-kwp imports the DEK into the token as a plaintext, non-sensitive session key: a FIPS-mode token
     * refuses that. */
    if (r != 0 && (rv == CKR_TEMPLATE_INCONSISTENT || rv == CKR_ATTRIBUTE_VALUE_INVALID ||
                   rv == CKR_FUNCTION_NOT_SUPPORTED || rv == CKR_ATTRIBUTE_READ_ONLY)) {
        ns_log(NS_LOG_ERROR,
               "token '%s' refuses to import a plaintext secret key (C_CreateObject: %s; a FIPS-mode token), "
               "which aes-kwp needs to wrap the data key with '%s'; use mechanism rsa-oaep on this token",
               ns_p11_token_label(pk->t), ns_p11_rv_name(rv), ns_p11_key_uri(pk->key));
        return NS_E_MECHANISM;
    }
    if (r != 0)
        return rv == CKR_OK ? r : ns_p11_rv_error(rv, ns_p11_token_label(pk->t), "C_WrapKey");
    /* RFC 5649 wraps 32 bytes into 40; AWS CloudHSM's CKM_AES_KEY_WRAP_PAD (PKCS #5 padding, then RFC 3394)
     * gives 48, and its RFC 5649 is a vendor mechanism. */
    if (io.out_len != KWP_WRAPPED_LEN) {
        ns_log(
            NS_LOG_ERROR,
            "token '%s': CKM_AES_KEY_WRAP_PAD wraps 32 bytes into %lu, not 40: it is not RFC 5649 key wrap "
            "with padding (AWS CloudHSM's is PKCS #5-padded key wrap); use mechanism aes-gcm or rsa-oaep "
            "with '%s'",
            ns_p11_token_label(pk->t), (unsigned long)io.out_len, ns_p11_key_uri(pk->key));
        return NS_E_MECHANISM;
    }
    return ns_kek_id_derive(NS_MECH_AES_KWP, io.out, io.out_len, id);
}

/* ---- rsa-oaep ---- */

static const EVP_MD *oaep_md(uint8_t h)
{
    return h == NS_OAEP_SHA1 ? EVP_sha1() : h == NS_OAEP_SHA256 ? EVP_sha256() : NULL;
}

static int rsa_encrypt(EVP_PKEY *pub, uint8_t hash, const uint8_t *in, size_t n, ns_buf *out)
{
    EVP_PKEY_CTX *ctx = NULL;
    size_t len = 0;
    uint8_t *w;
    int r = NS_E_CRYPTO;

    if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL)) == NULL || EVP_PKEY_encrypt_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, oaep_md(hash)) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, oaep_md(hash)) != 1 ||
        EVP_PKEY_encrypt(ctx, NULL, &len, in, n) != 1)
        goto out;
    if (len > NS_WRAPPED_MAX) {
        r = NS_E_TOO_LARGE;
        goto out;
    }
    if ((r = ns_buf_extend(out, len, &w)) != 0)
        goto out;
    r = EVP_PKEY_encrypt(ctx, w, &len, in, n) == 1 ? 0 : NS_E_CRYPTO;
    if (r == 0)
        ns_buf_truncate(out, (size_t)(w - out->data) + len);
out:
    EVP_PKEY_CTX_free(ctx);
    return r;
}

static int rsa_token_decrypt(struct p11kek *pk, uint8_t hash, const uint8_t *in, size_t n, struct io *io,
                             int quiet)
{
    CK_RSA_PKCS_OAEP_PARAMS op = {hash == NS_OAEP_SHA1 ? CKM_SHA_1 : CKM_SHA256,
                                  hash == NS_OAEP_SHA1 ? CKG_MGF1_SHA1 : CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED,
                                  NULL, 0};
    io->mech.mechanism = CKM_RSA_PKCS_OAEP;
    io->mech.pParameter = &op;
    io->mech.ulParameterLen = sizeof(op);
    io->in = in;
    io->in_len = n;
    return quiet ? ns_p11_run_quiet(pk->t, pk->key, pk->what_dec, op_decrypt, io, NULL)
                 : run_io(pk, pk->what_dec, op_decrypt, io, NULL);
}

static int rsa_wrap(ns_kek *k, const uint8_t dek[NS_DEK_LEN], const uint8_t *aad, size_t aad_len,
                    ns_buf *wrapped, uint8_t *param)
{
    struct p11kek *pk = k->impl;
    *param = pk->oaep_write;
    return rsa_encrypt(pk->pub, pk->oaep_write, dek, NS_DEK_LEN, wrapped);
}

static int rsa_unwrap(ns_kek *k, uint8_t param, const uint8_t *wrapped, size_t n, const uint8_t *aad,
                      size_t aad_len, uint8_t dek[NS_DEK_LEN])
{
    struct p11kek *pk = k->impl;
    struct io io;
    int r;

    if ((param != NS_OAEP_SHA1 && param != NS_OAEP_SHA256) || n != (size_t)EVP_PKEY_get_size(pk->pub))
        return NS_E_FORMAT;
    memset(&io, 0, sizeof(io));
    if ((r = rsa_token_decrypt(pk, param, wrapped, n, &io, 0)) != 0) {
        ns_wipe(&io, sizeof(io));
        return unwrap_failed(k, r);
    }
    return copy_dek(&io, dek);
}

/* The public key of the token's RSA key (ns_p11_key_rsa_public), which must have at least 2048 bits. */
static int rsa_read_public(struct p11kek *pk, EVP_PKEY **out)
{
    EVP_PKEY *pkey = NULL;
    int r = NS_E_INTERNAL;

    if ((r = ns_p11_key_rsa_public(pk->key, &pkey)) != 0)
        goto out;
    if (EVP_PKEY_get_bits(pkey) < 2048) {
        ns_log(NS_LOG_ERROR, "RSA key '%s' has %d bits; at least 2048 are needed", ns_p11_key_uri(pk->key),
               EVP_PKEY_get_bits(pkey));
        r = NS_E_TOKEN_OBJECT;
        goto out;
    }
    *out = pkey;
    pkey = NULL;
    r = 0;
out:
    EVP_PKEY_free(pkey);
    return r;
}

static int rsa_id_of(EVP_PKEY *pub, uint8_t id[NS_KEK_ID_LEN])
{
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(pub, &der), r;
    if (len <= 0)
        return NS_E_CRYPTO;
    r = ns_kek_id_derive(NS_MECH_RSA_OAEP, der, (size_t)len, id);
    OPENSSL_free(der);
    return r;
}

static int rsa_fingerprint(ns_kek *k, uint8_t id[NS_KEK_ID_LEN])
{
    struct p11kek *pk = k->impl;
    EVP_PKEY *pub = NULL;
    int r;
    if ((r = rsa_read_public(pk, &pub)) == 0)
        r = rsa_id_of(pub, id);
    EVP_PKEY_free(pub);
    return r;
}

/* Which OAEP hash does the token decrypt with? Encrypt a random value under the public key and ask the
 * token to decrypt it (SoftHSM 2.6 only has SHA-1; most HSMs and TPMs have SHA-256). */
static int rsa_probe(struct p11kek *pk, uint8_t hash)
{
    uint8_t probe[NS_DEK_LEN];
    ns_buf *ct = NULL;
    struct io io;
    int r;

    memset(&io, 0, sizeof(io));
    if ((r = ns_random(probe, sizeof(probe))) != 0 || (r = ns_buf_new(NS_WRAPPED_MAX, false, &ct)) != 0 ||
        (r = rsa_encrypt(pk->pub, hash, probe, sizeof(probe), ct)) != 0)
        goto out;
    if ((r = rsa_token_decrypt(pk, hash, ct->data, ct->len, &io, 1)) != 0)
        goto out;
    r = io.out_len == sizeof(probe) && memcmp(io.out, probe, sizeof(probe)) == 0 ? 0 : NS_E_TOKEN;
out:
    ns_wipe(&io, sizeof(io));
    ns_wipe(probe, sizeof(probe));
    ns_buf_free(ct);
    return r;
}

static void p11kek_free(ns_kek *k)
{
    struct p11kek *pk = k->impl;
    if (pk == NULL)
        return;
    ns_p11_key_free(pk->key);
    ns_p11_token_close(pk->t);
    EVP_PKEY_free(pk->pub);
    free(pk->what_dec);
    free(pk->what_enc);
    free(pk);
}

/* ---- rsa-oaep: open and generate ---- */

/* Read the public key and settle the OAEP hash for new wraps (config oaep_hash: sha1, sha256 or auto). */
static int rsa_prepare(ns_kek *k, const ns_kek_config *kc)
{
    struct p11kek *pk = k->impl;
    const char *h = kc->oaep_hash ? kc->oaep_hash : "auto";
    int r;

    if ((r = rsa_read_public(pk, &pk->pub)) != 0)
        return r;
    if (strcmp(h, "sha1") == 0) {
        pk->oaep_write = NS_OAEP_SHA1;
    } else if (rsa_probe(pk, NS_OAEP_SHA256) == 0) {
        pk->oaep_write = NS_OAEP_SHA256;
    } else if (strcmp(h, "auto") == 0 && rsa_probe(pk, NS_OAEP_SHA1) == 0) {
        ns_log(NS_LOG_INFO, "token '%s' decrypts OAEP with SHA-1 only; new wraps use SHA-1",
               ns_p11_token_label(pk->t));
        pk->oaep_write = NS_OAEP_SHA1;
    } else {
        ns_log(NS_LOG_ERROR, "token '%s' cannot decrypt RSA-OAEP with %s using '%s'",
               ns_p11_token_label(pk->t), strcmp(h, "auto") == 0 ? "SHA-256 or SHA-1" : "SHA-256",
               ns_p11_key_uri(pk->key));
        return NS_E_MECHANISM;
    }
    return 0;
}

/* An RSA-3072 key pair: the public half encrypts and wraps, the private half decrypts and unwraps. */
static int rsa_generate(const struct p11mech *m, const char *uri, const char *pin_env, unsigned sessions)
{
    CK_ULONG bits = 3072;
    CK_BYTE e65537[] = {1, 0, 1};
    CK_ATTRIBUTE pub[] = {
        {CKA_TOKEN, (void *)&ck_yes, 1},         {CKA_ENCRYPT, (void *)&ck_yes, 1},
        {CKA_WRAP, (void *)&ck_yes, 1},          {CKA_VERIFY, (void *)&ck_no, 1},
        {CKA_MODULUS_BITS, &bits, sizeof(bits)}, {CKA_PUBLIC_EXPONENT, e65537, sizeof(e65537)},
    };
    CK_ATTRIBUTE priv[] = {
        {CKA_TOKEN, (void *)&ck_yes, 1},     {CKA_PRIVATE, (void *)&ck_yes, 1},
        {CKA_SENSITIVE, (void *)&ck_yes, 1}, {CKA_EXTRACTABLE, (void *)&ck_no, 1},
        {CKA_DECRYPT, (void *)&ck_yes, 1},   {CKA_UNWRAP, (void *)&ck_yes, 1},
        {CKA_SIGN, (void *)&ck_no, 1},
    };
    ns_p11_keygen spec = {
        CKM_RSA_PKCS_KEY_PAIR_GEN,     "CKM_RSA_PKCS_KEY_PAIR_GEN", pub, sizeof(pub) / sizeof(pub[0]), priv,
        sizeof(priv) / sizeof(priv[0])};
    (void)m;
    return ns_p11_key_generate(uri, pin_env, sessions, &spec);
}

/* ---- the mechanism table ---- */

static int aes_generate(const struct p11mech *m, const char *uri, const char *pin_env, unsigned sessions);

/* One entry per mechanism: adding a mechanism is an entry here plus its functions. */
static const struct p11mech mechs[] = {
    {
        .mech = NS_MECH_AES_GCM,
        .ops = {"aes-gcm", gcm_wrap, gcm_unwrap, gcm_fingerprint, p11kek_free},
        .ck = CKM_AES_GCM,
        .ck_flags = CKF_ENCRYPT | CKF_DECRYPT,
        .ck_name = "CKM_AES_GCM (aes-gcm)",
        .cls = CKO_SECRET_KEY,
        .key_type = CKK_AES,
        .key_type_name = "AES",
        .value_len = 32,
        .use = {CKA_ENCRYPT, CKA_DECRYPT},
        .use_names = "CKA_ENCRYPT and CKA_DECRYPT",
        .prepare = gcm_prepare,
        .generate = aes_generate,
    },
    {
        .mech = NS_MECH_AES_KWP,
        .ops = {"aes-kwp", kwp_wrap, kwp_unwrap, kwp_fingerprint, p11kek_free},
        .ck = CKM_AES_KEY_WRAP_PAD,
        .ck_flags = CKF_WRAP | CKF_UNWRAP,
        .ck_name = "CKM_AES_KEY_WRAP_PAD (aes-kwp)",
        .cls = CKO_SECRET_KEY,
        .key_type = CKK_AES,
        .key_type_name = "AES",
        .value_len = 32,
        .use = {CKA_WRAP, CKA_UNWRAP},
        .use_names = "CKA_WRAP and CKA_UNWRAP",
        .generate = aes_generate,
    },
    {
        .mech = NS_MECH_RSA_OAEP,
        .ops = {"rsa-oaep", rsa_wrap, rsa_unwrap, rsa_fingerprint, p11kek_free},
        .ck = CKM_RSA_PKCS_OAEP,
        .ck_flags = CKF_DECRYPT,
        .ck_name = "CKM_RSA_PKCS_OAEP (rsa-oaep)",
        .cls = CKO_PRIVATE_KEY,
        .key_type = CKK_RSA,
        .key_type_name = "RSA",
        .value_len = 0,
        .use = {CKA_DECRYPT, 0},
        .use_names = "CKA_DECRYPT",
        .prepare = rsa_prepare,
        .generate = rsa_generate,
    },
};

static const struct p11mech *mech_find(const char *name)
{
    uint8_t mech = ns_kek_mech_from_name(name);
    for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++)
        if (mechs[i].mech == mech)
            return &mechs[i];
    return NULL;
}

static int uses(const struct p11mech *m, CK_ATTRIBUTE_TYPE a)
{
    return m->use[0] == a || m->use[1] == a;
}

/* An AES-256 secret key allowed exactly the operations of its mechanism. */
static int aes_generate(const struct p11mech *m, const char *uri, const char *pin_env, unsigned sessions)
{
    CK_ULONG len = 32;
    CK_BBOOL enc = uses(m, CKA_ENCRYPT), dec = uses(m, CKA_DECRYPT);
    CK_BBOOL wrap = uses(m, CKA_WRAP), unwrap = uses(m, CKA_UNWRAP);
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, (void *)&cls_secret, sizeof(cls_secret)},
        {CKA_KEY_TYPE, (void *)&kt_aes, sizeof(kt_aes)},
        {CKA_VALUE_LEN, &len, sizeof(len)},
        {CKA_TOKEN, (void *)&ck_yes, 1},
        {CKA_PRIVATE, (void *)&ck_yes, 1},
        {CKA_SENSITIVE, (void *)&ck_yes, 1},
        {CKA_EXTRACTABLE, (void *)&ck_no, 1},
        {CKA_ENCRYPT, &enc, 1},
        {CKA_DECRYPT, &dec, 1},
        {CKA_WRAP, &wrap, 1},
        {CKA_UNWRAP, &unwrap, 1},
        {CKA_SIGN, (void *)&ck_no, 1},
        {CKA_VERIFY, (void *)&ck_no, 1},
        {CKA_DERIVE, (void *)&ck_no, 1},
    };
    ns_p11_keygen spec = {CKM_AES_KEY_GEN, "CKM_AES_KEY_GEN", t, sizeof(t) / sizeof(t[0]), NULL, 0};
    return ns_p11_key_generate(uri, pin_env, sessions, &spec);
}

static int attr_bool(ns_p11_key *key, CK_ATTRIBUTE_TYPE type, int *v)
{
    unsigned char *val = NULL;
    size_t len = 0;
    int r = ns_p11_key_attr(key, type, &val, &len);
    if (r == 0)
        *v = len == sizeof(CK_BBOOL) && val[0] == CK_TRUE;
    free(val);
    return r;
}

static int attr_ulong(ns_p11_key *key, CK_ATTRIBUTE_TYPE type, CK_ULONG *v)
{
    unsigned char *val = NULL;
    size_t len = 0;
    int r = ns_p11_key_attr(key, type, &val, &len);
    if (r == 0 && len == sizeof(CK_ULONG))
        memcpy(v, val, sizeof(*v));
    else if (r == 0)
        r = NS_E_TOKEN_OBJECT;
    free(val);
    return r;
}

/* The key must be of the mechanism's type and size, sensitive, and allowed the operations it needs. */
static int check_key(ns_kek *k, struct p11kek *pk)
{
    const struct p11mech *m = pk->m;
    const char *uri = ns_p11_key_uri(pk->key);
    CK_ULONG kt = 0, len = 0;
    int sensitive = 0, extractable = 0, u1 = 0, u2 = 1, r;

    if ((r = attr_ulong(pk->key, CKA_KEY_TYPE, &kt)) != 0)
        return r;
    if (kt != m->key_type) {
        ns_log(NS_LOG_ERROR, "key '%s' is not an %s key", uri, m->key_type_name);
        return NS_E_TOKEN_OBJECT;
    }
    if (m->value_len != 0) {
        if ((r = attr_ulong(pk->key, CKA_VALUE_LEN, &len)) != 0)
            return r;
        if (len != m->value_len) {
            ns_log(NS_LOG_ERROR, "key '%s' is %s-%lu; an %s-%lu key is needed", uri, m->key_type_name,
                   (unsigned long)len * 8, m->key_type_name, (unsigned long)m->value_len * 8);
            return NS_E_TOKEN_OBJECT;
        }
    }
    if ((r = attr_bool(pk->key, CKA_SENSITIVE, &sensitive)) != 0 ||
        (r = attr_bool(pk->key, CKA_EXTRACTABLE, &extractable)) != 0 ||
        (r = attr_bool(pk->key, m->use[0], &u1)) != 0 ||
        (m->use[1] && (r = attr_bool(pk->key, m->use[1], &u2)) != 0))
        return r;
    if (!sensitive) {
        ns_log(NS_LOG_ERROR,
               "key '%s' is not sensitive (CKA_SENSITIVE false): its value can be read out of the "
               "token; make a new key with --sensitive",
               uri);
        return NS_E_TOKEN_OBJECT;
    }
    if (!u1 || !u2) {
        ns_log(NS_LOG_ERROR, "key '%s' is not allowed the operations %s needs (%s)", uri, m->ops.name,
               m->use_names);
        return NS_E_TOKEN_OBJECT;
    }
    if (extractable &&
        (k->warning = strdup("extractable (CKA_EXTRACTABLE true): can be wrapped out")) == NULL)
        return NS_E_NOMEM;
    return 0;
}

int ns_kek_pkcs11_open(const ns_kek_config *kc, unsigned sessions, ns_kek **out)
{
    ns_kek *k = NULL;
    struct p11kek *pk = NULL;
    char *safe = NULL;
    const struct p11mech *m = mech_find(kc->mechanism ? kc->mechanism : "");
    int r = NS_E_INTERNAL;

    if (m == NULL)
        return NS_E_CONFIG;
    if ((k = calloc(1, sizeof(*k))) == NULL || (pk = calloc(1, sizeof(*pk))) == NULL ||
        (safe = ns_p11_uri_redact(kc->uri)) == NULL) {
        free(pk);
        r = NS_E_NOMEM;
        goto out;
    }
    k->impl = pk;
    k->mech = m->mech;
    k->ops = &m->ops;
    pk->m = m;
    if ((k->source = malloc(strlen(safe) + 8)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    sprintf(k->source, "pkcs11 %s", safe);
    if (asprintf(&pk->what_dec, "C_Decrypt with %s", safe) < 0)
        pk->what_dec = NULL;
    if (asprintf(&pk->what_enc, "C_Encrypt with %s", safe) < 0)
        pk->what_enc = NULL;
    if (pk->what_dec == NULL || pk->what_enc == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }

    if ((r = ns_p11_token_open(kc->uri, kc->pin_env, sessions, &pk->t)) != 0 ||
        (r = ns_p11_token_require_mech(pk->t, m->ck, m->ck_flags, m->ck_name)) != 0 ||
        (r = ns_p11_key_find(pk->t, kc->uri, m->cls, &pk->key)) != 0 || (r = check_key(k, pk)) != 0 ||
        (m->prepare != NULL && (r = m->prepare(k, kc)) != 0) || (r = k->ops->fingerprint(k, k->id)) != 0)
        goto out;
    pk->verified = ns_p11_key_epoch(pk->key);
    *out = k;
    k = NULL;
    r = 0;
out:
    free(safe);
    ns_kek_free(k);
    return r;
}

/* ---- kek generate ---- */

int ns_kek_pkcs11_generate(const char *uri, const char *mechanism, const char *pin_env, unsigned sessions)
{
    const struct p11mech *m = mech_find(mechanism);

    if (m == NULL) {
        ns_log(NS_LOG_ERROR, "unknown mechanism '%.32s' (aes-gcm, aes-kwp or rsa-oaep)", mechanism);
        return NS_E_USAGE;
    }
    return m->generate(m, uri, pin_env, sessions);
}
