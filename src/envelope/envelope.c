#include "ns-build.h"

#include <string.h>

#include "common/log.h"
#include "common/secmem.h"
#include "envelope/envelope.h"
#include "keys/aead.h"

static const uint8_t magic[4] = {'N', 'S', 'E', 'N'};

/* A parsed envelope: borrowed views into the blob. */
struct parsed {
    ns_envelope_info info;
    const uint8_t *wrapped;
    size_t wrapped_len;
    const uint8_t *hdr_nonce;
    const uint8_t *hdr_tag;
    size_t hdr_auth_len; /* header bytes covered by the header tag: everything before it */
    const uint8_t *payload_nonce;
    const uint8_t *ct;
    size_t ct_len;
    const uint8_t *tag;
};

static int parse(const uint8_t *blob, size_t n, struct parsed *p)
{
    ns_cur c = ns_cur_init(blob, n), wrapped;
    const uint8_t *m;
    uint8_t flags;
    int r;

    memset(p, 0, sizeof(*p));
    if (n > NS_BLOB_MAX)
        return NS_E_TOO_LARGE;
    if ((r = ns_cur_bytes(&c, sizeof(magic), &m)) != 0 || memcmp(m, magic, sizeof(magic)) != 0)
        return NS_E_FORMAT;
    if ((r = ns_cur_u8(&c, &p->info.version)) != 0)
        return r;
    if (p->info.version != NS_ENVELOPE_VERSION)
        return NS_E_VERSION;
    if ((r = ns_cur_u8(&c, &p->info.mech)) != 0 || (r = ns_cur_u8(&c, &p->info.param)) != 0 ||
        (r = ns_cur_u8(&c, &flags)) != 0 || (r = ns_cur_copy(&c, p->info.kek_id, NS_KEK_ID_LEN)) != 0 ||
        (r = ns_cur_lp16(&c, 1, NS_WRAPPED_MAX, &wrapped)) != 0 ||
        (r = ns_cur_bytes(&c, NS_AEAD_NONCE, &p->hdr_nonce)) != 0)
        return r;
    if (p->info.mech < NS_MECH_AES_GCM || p->info.mech > NS_MECH_SOFT_GCM || flags != 0)
        return NS_E_FORMAT;
    /* Only rsa-oaep has a parameter (its OAEP hash); every other mechanism has 0. */
    if (p->info.mech == NS_MECH_RSA_OAEP ? (p->info.param != NS_OAEP_SHA1 && p->info.param != NS_OAEP_SHA256)
                                         : p->info.param != 0)
        return NS_E_FORMAT;
    p->wrapped = wrapped.p;
    p->wrapped_len = wrapped.len;
    p->hdr_auth_len = n - c.len;
    if ((r = ns_cur_bytes(&c, NS_AEAD_TAG, &p->hdr_tag)) != 0)
        return r;
    p->info.header_len = n - c.len;
    if ((r = ns_cur_bytes(&c, NS_AEAD_NONCE, &p->payload_nonce)) != 0)
        return r;
    if (c.len < NS_AEAD_TAG)
        return NS_E_FORMAT;
    p->ct_len = c.len - NS_AEAD_TAG;
    if (p->ct_len > NS_PLAINTEXT_MAX)
        return NS_E_TOO_LARGE;
    if ((r = ns_cur_bytes(&c, p->ct_len, &p->ct)) != 0 || (r = ns_cur_bytes(&c, NS_AEAD_TAG, &p->tag)) != 0)
        return r;
    p->info.payload_len = p->ct_len;
    return ns_cur_end(&c);
}

int ns_envelope_parse(const uint8_t *blob, size_t n, ns_envelope_info *info)
{
    struct parsed p;
    int r = parse(blob, n, &p);
    if (r == 0 && info != NULL)
        *info = p.info;
    return r;
}

/* "NSEN" | version | u16 name length | name: binds a ciphertext to its object name. */
static int name_binding(const char *name, uint8_t prefix[7], size_t *name_len)
{
    size_t len = strlen(name);
    if (len == 0 || len > NS_ENV_NAME_MAX)
        return NS_E_NAME;
    memcpy(prefix, magic, 4);
    prefix[4] = NS_ENVELOPE_VERSION;
    prefix[5] = (uint8_t)(len >> 8);
    prefix[6] = (uint8_t)len;
    *name_len = len;
    return 0;
}

/* AAD for the DEK wrap: "NSEN" | version | mech | param | kek id. */
static void wrap_aad(uint8_t mech, const uint8_t id[NS_KEK_ID_LEN], uint8_t aad[7 + NS_KEK_ID_LEN])
{
    memcpy(aad, magic, 4);
    aad[4] = NS_ENVELOPE_VERSION;
    aad[5] = mech;
    aad[6] = 0;
    memcpy(aad + 7, id, NS_KEK_ID_LEN);
}

/* Write a header for `kek` around dek into out (which must be empty): everything up to and including the
 * header tag. */
static int write_header(ns_kek *kek, const uint8_t dek[NS_DEK_LEN], const char *name, ns_buf *out)
{
    uint8_t aad[7 + NS_KEK_ID_LEN], binding[7], param = 0, *w;
    size_t name_len, len_at, wrapped_len;
    int r;

    if ((r = name_binding(name, binding, &name_len)) != 0)
        return r;
    wrap_aad(kek->mech, kek->id, aad);
    if ((r = ns_buf_append(out, magic, sizeof(magic))) != 0 ||
        (r = ns_buf_put_u8(out, NS_ENVELOPE_VERSION)) != 0 || (r = ns_buf_put_u8(out, kek->mech)) != 0 ||
        (r = ns_buf_put_u8(out, 0)) != 0 || (r = ns_buf_put_u8(out, 0)) != 0 ||
        (r = ns_buf_append(out, kek->id, NS_KEK_ID_LEN)) != 0 || (r = ns_buf_put_u16(out, 0)) != 0)
        return r;
    len_at = out->len - 2;
    if ((r = kek->ops->wrap(kek, dek, aad, sizeof(aad), out, &param)) != 0)
        return r;
    wrapped_len = out->len - len_at - 2;
    if (wrapped_len == 0 || wrapped_len > NS_WRAPPED_MAX)
        return NS_E_INTERNAL;
    out->data[6] = param;
    out->data[len_at] = (uint8_t)(wrapped_len >> 8);
    out->data[len_at + 1] = (uint8_t)wrapped_len;
    if ((r = ns_buf_extend(out, NS_AEAD_NONCE + NS_AEAD_TAG, &w)) != 0 ||
        (r = ns_random(w, NS_AEAD_NONCE)) != 0)
        return r;
    {
        ns_iov a[3] = {{out->data, out->len - NS_AEAD_TAG}, {binding, sizeof(binding)}, {name, name_len}};
        return ns_aead_seal(dek, w, a, 3, NULL, 0, NULL, w + NS_AEAD_NONCE);
    }
}

int ns_envelope_seal(const ns_keyring *kr, const char *name, const uint8_t *pt, size_t n, ns_buf **blob)
{
    ns_kek *kek = ns_keyring_primary(kr);
    uint8_t *dek = NULL, binding[7], *w;
    ns_buf *out = NULL;
    size_t name_len;
    int r = NS_E_INTERNAL;

    if (kek == NULL)
        return NS_E_CONFIG;
    if (n > NS_PLAINTEXT_MAX)
        return NS_E_TOO_LARGE;
    if ((r = name_binding(name, binding, &name_len)) != 0)
        return r;
    if ((dek = ns_secmem_alloc(NS_DEK_LEN)) == NULL)
        return NS_E_NOMEM;
    if ((r = ns_random(dek, NS_DEK_LEN)) != 0 || (r = ns_buf_new(NS_BLOB_MAX, false, &out)) != 0 ||
        (r = ns_buf_reserve(out, n + 128 + NS_WRAPPED_MAX)) != 0 ||
        (r = write_header(kek, dek, name, out)) != 0)
        goto out;
    if ((r = ns_buf_extend(out, NS_AEAD_NONCE + n + NS_AEAD_TAG, &w)) != 0 ||
        (r = ns_random(w, NS_AEAD_NONCE)) != 0)
        goto out;
    {
        ns_iov a[2] = {{binding, sizeof(binding)}, {name, name_len}};
        if ((r = ns_aead_seal(dek, w, a, 2, pt, n, w + NS_AEAD_NONCE, w + NS_AEAD_NONCE + n)) != 0)
            goto out;
    }
    *blob = out;
    out = NULL;
    r = 0;
out:
    ns_secmem_free(dek, NS_DEK_LEN);
    ns_buf_free(out);
    return r;
}

/* Unwrap the DEK and check the header tag; *aead holds the DEK ready for the payload (caller frees it). */
static int open_header(const ns_keyring *kr, const char *name, const uint8_t *blob, const struct parsed *p,
                       uint8_t dek[NS_DEK_LEN], ns_aead **aead)
{
    uint8_t aad[7 + NS_KEK_ID_LEN], binding[7];
    ns_kek *kek;
    size_t name_len;
    int r;

    *aead = NULL;

    if ((r = name_binding(name, binding, &name_len)) != 0)
        return r;
    if ((kek = ns_keyring_find(kr, p->info.kek_id)) == NULL)
        return NS_E_KEK_UNKNOWN;
    if (kek->mech != p->info.mech)
        return NS_E_INTEGRITY; /* the id commits to the mechanism too */
    wrap_aad(kek->mech, kek->id, aad);
    if ((r = kek->ops->unwrap(kek, p->info.param, p->wrapped, p->wrapped_len, aad, sizeof(aad), dek)) != 0)
        return r == NS_E_FORMAT ? NS_E_INTEGRITY : r;
    if ((r = ns_aead_new(dek, aead)) != 0)
        return r;
    {
        ns_iov a[3] = {{blob, p->hdr_auth_len}, {binding, sizeof(binding)}, {name, name_len}};
        uint8_t none[1];
        return ns_aead_open_with(*aead, p->hdr_nonce, a, 3, NULL, 0, p->hdr_tag, none);
    }
}

int ns_envelope_open(const ns_keyring *kr, const char *name, const uint8_t *blob, size_t n, ns_buf **pt,
                     ns_envelope_info *info)
{
    struct parsed p;
    uint8_t *dek = NULL, binding[7], *w;
    ns_aead *aead = NULL;
    ns_buf *out = NULL;
    size_t name_len;
    int r = NS_E_INTERNAL;

    if ((r = parse(blob, n, &p)) != 0 || (r = name_binding(name, binding, &name_len)) != 0)
        return r;
    if ((dek = ns_secmem_alloc(NS_DEK_LEN)) == NULL)
        return NS_E_NOMEM;
    if ((r = open_header(kr, name, blob, &p, dek, &aead)) != 0)
        goto out;
    if ((r = ns_buf_new(NS_PLAINTEXT_MAX, true, &out)) != 0 || (r = ns_buf_extend(out, p.ct_len, &w)) != 0)
        goto out;
    {
        ns_iov a[2] = {{binding, sizeof(binding)}, {name, name_len}};
        if ((r = ns_aead_open_with(aead, p.payload_nonce, a, 2, p.ct, p.ct_len, p.tag, w)) != 0)
            goto out;
    }
    if (info != NULL)
        *info = p.info;
    *pt = out;
    out = NULL;
    r = 0;
out:
    ns_aead_free(aead);
    ns_secmem_free(dek, NS_DEK_LEN);
    ns_buf_free(out);
    return r;
}

int ns_envelope_rewrap(const ns_keyring *kr, const char *name, const uint8_t *blob, size_t n, ns_buf **out)
{
    ns_kek *primary = ns_keyring_primary(kr);
    struct parsed p;
    ns_buf *scratch = NULL, *nb = NULL;
    uint8_t *dek = NULL, binding[7], *w;
    ns_aead *aead = NULL;
    size_t name_len;
    int r = NS_E_INTERNAL;

    if (primary == NULL)
        return NS_E_CONFIG;
    if ((r = parse(blob, n, &p)) != 0 || (r = name_binding(name, binding, &name_len)) != 0)
        return r;
    /* Already under the primary: nothing to do, and no call into the token. */
    if (memcmp(p.info.kek_id, primary->id, NS_KEK_ID_LEN) == 0) {
        *out = NULL;
        return 0;
    }
    if ((dek = ns_secmem_alloc(NS_DEK_LEN)) == NULL)
        return NS_E_NOMEM;
    /* One unwrap; the header tag and then the payload tag are checked before anything is written, so a
     * damaged blob never gets a fresh header. */
    if ((r = open_header(kr, name, blob, &p, dek, &aead)) != 0)
        goto out;
    if ((r = ns_buf_new(NS_PLAINTEXT_MAX, true, &scratch)) != 0 ||
        (r = ns_buf_extend(scratch, p.ct_len, &w)) != 0)
        goto out;
    {
        ns_iov a[2] = {{binding, sizeof(binding)}, {name, name_len}};
        if ((r = ns_aead_open_with(aead, p.payload_nonce, a, 2, p.ct, p.ct_len, p.tag, w)) != 0)
            goto out;
    }
    if ((r = ns_buf_new(NS_BLOB_MAX, false, &nb)) != 0 || (r = write_header(primary, dek, name, nb)) != 0 ||
        (r = ns_buf_append(nb, p.payload_nonce, n - p.info.header_len)) != 0)
        goto out;
    *out = nb;
    nb = NULL;
    r = 0;
out:
    ns_aead_free(aead);
    ns_secmem_free(dek, NS_DEK_LEN);
    ns_buf_free(scratch);
    ns_buf_free(nb);
    return r;
}
