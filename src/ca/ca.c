#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"
#include "common/codec.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "secrets/secret.h"

int ns_ca_cert_key_id(X509 *x, char id[NS_KEY_ID_MAX])
{
    EVP_PKEY *pub = X509_get0_pubkey(x);
    if (pub == NULL)
        return NS_E_FORMAT;
    return ns_keytype_thumbprint(pub, id);
}

void ns_ca_certs_free(X509 **certs, size_t n)
{
    for (size_t i = 0; certs != NULL && i < n; i++)
        X509_free(certs[i]);
    free(certs);
}

int ns_ca_parse_bundle(const uint8_t *p, size_t n, X509 ***certs, size_t *count)
{
    BIO *bio = NULL;
    X509 **v = NULL, *x = NULL;
    size_t k = 0;
    int r = NS_E_FORMAT;

    if (n > NS_CA_BUNDLE_MAX)
        return NS_E_TOO_LARGE;
    if ((v = calloc(NS_CA_MAX, sizeof(*v))) == NULL || (bio = BIO_new_mem_buf(p, (int)n)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (k == NS_CA_MAX) {
            ns_log(NS_LOG_ERROR, "the CA bundle holds more than %d certificates", NS_CA_MAX);
            r = NS_E_TOO_LARGE;
            goto out;
        }
        if (X509_check_ca(x) < 1) {
            ns_log(NS_LOG_ERROR, "the CA bundle holds a certificate that is not a CA certificate");
            goto out;
        }
        v[k++] = x;
        x = NULL;
    }
    if (k == 0) {
        ns_log(NS_LOG_ERROR, "the CA bundle holds no certificate");
        goto out;
    }
    *certs = v;
    *count = k;
    v = NULL;
    r = 0;
out:
    ERR_clear_error();
    X509_free(x);
    ns_ca_certs_free(v, k);
    BIO_free(bio);
    return r;
}

int ns_ca_bundle_pem(X509 *const *certs, size_t n, ns_buf **out)
{
    BIO *bio = BIO_new(BIO_s_mem());
    BUF_MEM *mem = NULL;
    int r = NS_E_CRYPTO;

    if (bio == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i < n; i++)
        if (PEM_write_bio_X509(bio, certs[i]) != 1)
            goto out;
    BIO_get_mem_ptr(bio, &mem);
    r = ns_buf_from(mem->data, mem->length, NS_CA_BUNDLE_MAX, false, out);
out:
    BIO_free(bio);
    return r;
}

/* cluster/ca.crt as stored: every certificate, nothing authenticated yet. */
static int load_bundle(ns_store *st, ns_ca **out)
{
    ns_ca *ca = NULL;
    ns_buf *data = NULL;
    int r = NS_E_INTERNAL;

    if ((ca = calloc(1, sizeof(*ca))) == NULL)
        return NS_E_NOMEM;
    if ((r = ns_store_get(st, NS_CA_BUNDLE, NS_CA_BUNDLE_MAX, &data, &ca->version)) != 0) {
        if (r == NS_E_NOT_FOUND)
            ns_log(NS_LOG_ERROR, "there is no CA yet (%s): run `nstance-secrets ca init`", NS_CA_BUNDLE);
        goto out;
    }
    if ((r = ns_ca_parse_bundle(data->data, data->len, &ca->certs, &ca->n)) != 0) {
        ns_log(NS_LOG_ERROR, "%s is not a valid CA bundle", NS_CA_BUNDLE);
        goto out;
    }
    *out = ca;
    ca = NULL;
    r = 0;
out:
    ns_buf_free(data);
    ns_ca_free(ca);
    return r;
}

/* Token keys of ca.keys and the software keys of ca.key, as far as they exist. */
static int load_keys(const ns_config *cfg, ns_store *st, const ns_keyring *kr, ns_keyset **tok,
                     ns_keyset **soft)
{
    int r;

    if (cfg->ca.keys.n > 0 &&
        (r = ns_keyset_load(&cfg->ca.keys, cfg->ca.pin_env, cfg->token_sessions, st, kr, NULL, tok)) != 0)
        return r;
    r = ns_keyset_load(NULL, NULL, 0, st, kr, NS_CA_KEY_SECRET, soft);
    return r == NS_E_NOT_FOUND ? 0 : r;
}

static ns_signer *find_key(const ns_keyset *tok, const ns_keyset *soft, const char *id)
{
    ns_signer *s = ns_keyset_find(tok, id);
    return s != NULL ? s : ns_keyset_find(soft, id);
}

/* x names issuer as its issuer and carries a valid signature by issuer's key. */
static int issued_by(X509 *x, X509 *issuer)
{
    int ok = X509_check_issued(issuer, x) == X509_V_OK && X509_verify(x, X509_get0_pubkey(issuer)) == 1;
    ERR_clear_error();
    return ok;
}

/* The key of x is one of the CA keys held here (ca.keys or the ca.key secret). */
static int key_held(const ns_ca *ca, X509 *x)
{
    char id[NS_KEY_ID_MAX];
    return ns_ca_cert_key_id(x, id) == 0 && find_key(ca->tok, ca->soft, id) != NULL;
}

/* One line per certificate that is dropped: its subject and SHA-256 fingerprint, so the operator can find
 * it in the bundle (`openssl x509 -fingerprint -sha256`). */
static void log_ignored(X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    unsigned char md[32];
    unsigned int mdlen = 0;
    char hex[2 * sizeof(md) + 1] = "?", subject[256] = "?";
    int n;

    if (bio != NULL && X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0 &&
        (n = BIO_read(bio, subject, (int)sizeof(subject) - 1)) >= 0)
        subject[n] = '\0';
    if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1 && mdlen == sizeof(md))
        ns_hex_encode(md, sizeof(md), hex);
    ERR_clear_error();
    BIO_free(bio);
    ns_log(NS_LOG_WARN,
           "%s holds a certificate that no CA key held here vouches for (subject \"%s\", SHA-256 %s): "
           "ignored, not trusted and not served",
           NS_CA_BUNDLE, subject, hex);
}

/* The store is not trusted (DESIGN.md §7, doc/threat-model.md): keep only the certificates of the bundle
 * that the CA keys held here vouch for. An anchor is a self-signed certificate of a held key; a
 * certificate that is not self-signed is kept if its key is held and an anchor issued and signed it (a
 * cross certificate). Everything else is dropped, one warning each, and counted in ca->ignored. The order
 * is kept. 1 if certs[0] is kept. */
static int keep_vouched(ns_ca *ca)
{
    int keep[NS_CA_MAX];
    size_t k = 0;

    for (size_t i = 0; i < ca->n; i++)
        keep[i] = issued_by(ca->certs[i], ca->certs[i]) && key_held(ca, ca->certs[i]);
    for (size_t i = 0; i < ca->n; i++)
        for (size_t j = 0; !keep[i] && j < ca->n; j++)
            keep[i] = j != i && keep[j] && issued_by(ca->certs[j], ca->certs[j]) &&
                      issued_by(ca->certs[i], ca->certs[j]) && key_held(ca, ca->certs[i]);
    for (size_t i = 0; i < ca->n; i++) {
        if (keep[i]) {
            ca->certs[k++] = ca->certs[i];
            continue;
        }
        log_ignored(ca->certs[i]);
        X509_free(ca->certs[i]);
        ca->ignored++;
    }
    ca->n = k;
    return keep[0];
}

int ns_ca_load(const ns_config *cfg, ns_store *st, const ns_keyring *kr, ns_ca **out)
{
    ns_ca *ca = NULL;
    char first[NS_KEY_ID_MAX];
    int r;

    if ((r = load_bundle(st, &ca)) != 0)
        return r;
    if ((r = ns_ca_cert_key_id(ca->certs[0], first)) != 0 ||
        (r = load_keys(cfg, st, kr, &ca->tok, &ca->soft)) != 0)
        goto out;
    /* The newest certificate issues: when it is not vouched for, nothing falls back to an older one. */
    if (!keep_vouched(ca)) {
        if (find_key(ca->tok, ca->soft, first) == NULL)
            ns_log(NS_LOG_ERROR,
                   "the key of the newest CA certificate (key id %s) is neither among the token keys of "
                   "ca.keys nor in the ca.key secret: add its URI to ca.keys",
                   first);
        else
            ns_log(NS_LOG_ERROR,
                   "the newest CA certificate (key id %s) is not a valid self-signed certificate "
                   "of its key",
                   first);
        r = NS_E_TOKEN_OBJECT;
        goto out;
    }
    *out = ca;
    ca = NULL;
out:
    ns_ca_free(ca);
    return r;
}

int ns_ca_open(const ns_config *cfg, ns_store *st, const ns_keyring *kr, ns_ca **out)
{
    ns_ca *ca = NULL;
    char id[NS_KEY_ID_MAX];
    int r;

    if ((r = ns_ca_load(cfg, st, kr, &ca)) != 0)
        return r;
    if ((r = ns_ca_cert_key_id(ca->certs[0], id)) != 0)
        goto out;
    if ((ca->signer = find_key(ca->tok, ca->soft, id)) == NULL) {
        r = NS_E_TOKEN_OBJECT; /* cannot happen: ns_ca_load kept certs[0] for its key */
        goto out;
    }
    *out = ca;
    ca = NULL;
out:
    ns_ca_free(ca);
    return r;
}

void ns_ca_free(ns_ca *ca)
{
    if (ca == NULL)
        return;
    ns_ca_certs_free(ca->certs, ca->n);
    free(ca->version);
    ns_keyset_free(ca->tok);
    ns_keyset_free(ca->soft);
    free(ca);
}

/* ---- keys for init and rotate ---- */

typedef struct newkey {
    ns_signer *signer;
    ns_secret_key soft; /* software key to store (material NULL when adopted or in a token) */
} newkey;

static void newkey_clear(newkey *nk)
{
    ns_signer_free(nk->signer);
    ns_secret_key_clear(&nk->soft);
    memset(nk, 0, sizeof(*nk));
}

static int token_key(const ns_config *cfg, const ns_ca_keyspec *ks, newkey *nk)
{
    const char *type = ks->type != NULL ? ks->type : "ecdsa-p256";
    int found = 0, r;

    if ((r = ns_signer_pkcs11_exists(ks->key_uri, cfg->ca.pin_env, cfg->token_sessions, &found)) != 0)
        return r;
    if (found == 0) {
        if (strcmp(type, "ed25519") == 0) {
            if ((r = ns_signer_pkcs11_require_eddsa(ks->key_uri, cfg->ca.pin_env, cfg->token_sessions)) !=
                0) {
                if (r == NS_E_MECHANISM)
                    ns_log(NS_LOG_ERROR, "use --type ecdsa-p256 for a CA key in this token");
                return r;
            }
        }
        if ((r = ns_signer_pkcs11_generate(ks->key_uri, type, cfg->ca.pin_env, cfg->token_sessions)) != 0)
            return r;
        ns_log(NS_LOG_INFO, "generated a %s key in the token", type);
    }
    if ((r = ns_signer_pkcs11_open(ks->key_uri, cfg->ca.pin_env, cfg->token_sessions, &nk->signer)) != 0)
        return r;
    if (found > 0 && ks->type != NULL && strcmp(ks->type, nk->signer->type->name) != 0) {
        ns_log(NS_LOG_ERROR, "the token key is a %s key, not %s as asked; nothing changed",
               nk->signer->type->name, ks->type);
        return NS_E_CONFLICT;
    }
    if (found > 0)
        ns_log(NS_LOG_INFO, "adopted the existing %s key in the token", nk->signer->type->name);
    {
        int listed = 0;
        for (size_t i = 0; i < cfg->ca.keys.n; i++)
            listed |= strcmp(cfg->ca.keys.v[i], ks->key_uri) == 0;
        if (!listed)
            ns_log(NS_LOG_WARN,
                   "add this key's URI to ca.keys in the config: `ca issue` looks for CA keys there");
    }
    return 0;
}

static int soft_key(const char *type_name, newkey *nk)
{
    const ns_keytype *t = ns_keytype_find(type_name);
    EVP_PKEY *pkey = NULL;
    int r;

    if (t == NULL || t->jws_alg == NULL) {
        ns_log(NS_LOG_ERROR,
               "'%.32s' is not a signing key type (ed25519, ecdsa-p256, ecdsa-p384, rsa-3072...)", type_name);
        return NS_E_USAGE;
    }
    if ((r = ns_doc_make_key(t, NULL, 0, 0, &nk->soft)) != 0)
        return r;
    if ((r = ns_keytype_from_pkcs8(nk->soft.material->data, nk->soft.material->len, t, &pkey)) == 0)
        r = ns_signer_soft_new(pkey, &nk->signer);
    EVP_PKEY_free(pkey);
    return r;
}

static void ca_dn(const ns_config *cfg, ns_dn *dn)
{
    dn->cn = cfg->ca.cn;
    dn->o = cfg->ca.o;
    dn->c = cfg->ca.c;
    dn->st = cfg->ca.st;
    dn->l = cfg->ca.l;
}

static int put_bundle(ns_store *st, X509 *const *certs, size_t n, enum ns_put_mode mode, const char *if_match)
{
    ns_buf *pem = NULL;
    int r = ns_ca_bundle_pem(certs, n, &pem);
    if (r == 0)
        r = ns_store_put(st, NS_CA_BUNDLE, pem->data, pem->len, mode, if_match);
    ns_buf_free(pem);
    return r;
}

int ns_ca_init(const ns_config *cfg, ns_store *st, const ns_keyring *kr, const ns_ca_keyspec *ks, X509 **out)
{
    newkey nk;
    ns_ca_keyspec spec = *ks;
    ns_secret_doc *doc = NULL;
    ns_buf *existing = NULL;
    X509 *cert = NULL;
    ns_dn dn;
    EVP_PKEY *pkey = NULL;
    int64_t now = ns_now();
    int r = NS_E_INTERNAL;

    memset(&nk, 0, sizeof(nk));
    /* A quick check first, so that a second init normally changes nothing at all (not even the token);
     * the create-only write at the end is what decides a race. */
    if ((r = ns_store_get(st, NS_CA_BUNDLE, NS_CA_BUNDLE_MAX, &existing, NULL)) != NS_E_NOT_FOUND) {
        if (r == 0) {
            ns_log(NS_LOG_ERROR, "a CA exists already (%s); use `ca rotate` to change its key", NS_CA_BUNDLE);
            r = NS_E_EXISTS;
        }
        goto out;
    }
    if (spec.key_uri == NULL && cfg->ca.keys.n > 0)
        spec.key_uri = cfg->ca.keys.v[0];
    if (spec.key_uri != NULL) {
        if ((r = token_key(cfg, &spec, &nk)) != 0)
            goto out;
    } else {
        /* A ca.key secret made beforehand (e.g. imported with `secret create ca.key --from`) is adopted. */
        r = ns_secret_read(st, kr, NS_CA_KEY_SECRET, &doc, NULL);
        if (r == 0) {
            if (spec.type != NULL && strcmp(spec.type, doc->type->name) != 0) {
                ns_log(NS_LOG_ERROR, "the ca.key secret holds %s keys, not %s; nothing changed",
                       doc->type->name, spec.type);
                r = NS_E_CONFLICT;
                goto out;
            }
            if (doc->type->jws_alg == NULL) {
                ns_log(NS_LOG_ERROR, "the ca.key secret holds %s keys, which cannot sign", doc->type->name);
                r = NS_E_INVAL;
                goto out;
            }
            if ((r = ns_doc_key_pkey(doc, 0, &pkey)) != 0 || (r = ns_signer_soft_new(pkey, &nk.signer)) != 0)
                goto out;
            ns_log(NS_LOG_INFO, "adopted the current key of the existing ca.key secret");
        } else if (r == NS_E_NOT_FOUND) {
            if ((r = soft_key(spec.type != NULL ? spec.type : "ed25519", &nk)) != 0)
                goto out;
        } else {
            goto out;
        }
    }
    ca_dn(cfg, &dn);
    if ((r = ns_cert_make_ca(nk.signer, NULL, nk.signer->pub, &dn, cfg->ca.path_len, now,
                             now + cfg->ca.validity, &cert)) != 0)
        goto out;
    if (nk.soft.material != NULL) {
        ns_secret_doc *nd = NULL;
        if ((r = ns_doc_new(nk.signer->type, &nk.soft, &nd)) != 0)
            goto out;
        r = ns_secret_create(st, kr, NS_CA_KEY_SECRET, nd);
        ns_doc_free(nd);
        if (r == NS_E_EXISTS)
            ns_log(NS_LOG_ERROR, "ca.key was created concurrently by another `ca init`; nothing changed");
        if (r != 0)
            goto out;
    }
    if ((r = put_bundle(st, &cert, 1, NS_PUT_CREATE, NULL)) != 0) {
        if (r == NS_E_EXISTS)
            ns_log(NS_LOG_ERROR, "another `ca init` created the CA first; nothing changed");
        goto out;
    }
    *out = cert;
    cert = NULL;
    r = 0;
out:
    EVP_PKEY_free(pkey);
    ns_buf_free(existing);
    ns_doc_free(doc);
    X509_free(cert);
    newkey_clear(&nk);
    return r;
}

/* ---- rotate ---- */

struct add_key {
    const ns_secret_key *k;
};

/* An edit may run once per attempt: it adds a copy of the key each time. */
static int edit_add(ns_secret_doc *d, void *vctx)
{
    struct add_key *a = vctx;
    ns_secret_key k = *a->k;
    int r;

    k.material = NULL;
    if ((r = ns_buf_from(a->k->material->data, a->k->material->len, a->k->material->max, true,
                         &k.material)) != 0)
        return r;
    r = ns_doc_rotate(d, &k, 0);
    ns_secret_key_clear(&k);
    return r;
}

static int cross_name(const char *id, char out[NS_NAME_MAX + 1])
{
    int n = snprintf(out, NS_NAME_MAX + 1, "%s%s.crt", NS_CA_CROSS_PREFIX, id);
    return n > 0 && n <= NS_NAME_MAX ? ns_store_name_check(out) : NS_E_NAME;
}

int ns_ca_rotate(const ns_config *cfg, ns_store *st, const ns_keyring *kr, const ns_ca_keyspec *ks,
                 X509 **out, X509 **cross)
{
    ns_ca *ca = NULL;
    newkey nk;
    ns_secret_doc *doc = NULL;
    X509 *cert = NULL, *xc = NULL, *all[NS_CA_MAX];
    ns_buf *pem = NULL;
    char name[NS_NAME_MAX + 1];
    ns_dn dn;
    int64_t now = ns_now();
    int r = NS_E_INTERNAL;

    memset(&nk, 0, sizeof(nk));
    if ((r = ns_ca_open(cfg, st, kr, &ca)) != 0)
        goto out;
    if (ca->n >= NS_CA_MAX) {
        ns_log(NS_LOG_ERROR, "the CA bundle is full (%d certificates): retire the oldest first", NS_CA_MAX);
        r = NS_E_CONFLICT;
        goto out;
    }
    if (ks->key_uri != NULL) {
        if ((r = token_key(cfg, ks, &nk)) != 0)
            goto out;
    } else {
        const char *type = ks->type;
        r = ns_secret_read(st, kr, NS_CA_KEY_SECRET, &doc, NULL);
        if (r != 0 && r != NS_E_NOT_FOUND)
            goto out;
        if (doc != NULL && type != NULL && strcmp(type, doc->type->name) != 0) {
            ns_log(NS_LOG_ERROR,
                   "the ca.key secret holds %s keys and a secret has one type: rotate to %s in a token "
                   "(--key) or keep %s",
                   doc->type->name, type, doc->type->name);
            r = NS_E_CONFLICT;
            goto out;
        }
        if (type == NULL)
            type = doc != NULL ? doc->type->name : "ed25519";
        if ((r = soft_key(type, &nk)) != 0)
            goto out;
    }
    for (size_t i = 0; i < ca->n; i++) {
        char id[NS_KEY_ID_MAX];
        if ((r = ns_ca_cert_key_id(ca->certs[i], id)) != 0)
            goto out;
        if (strcmp(id, nk.signer->id) == 0) {
            ns_log(NS_LOG_ERROR, "that key is already a CA key (key id %s); nothing changed", id);
            r = NS_E_CONFLICT;
            goto out;
        }
    }
    ca_dn(cfg, &dn);
    if ((r = ns_cert_make_ca(nk.signer, NULL, nk.signer->pub, &dn, cfg->ca.path_len, now,
                             now + cfg->ca.validity, &cert)) != 0)
        goto out;
    /* The same name and key, vouched for by the CA before: chains that end at the old CA keep working. It
     * sits one level below the old root (old root → cross → ...), so its path length is one less: Go and
     * GnuTLS count it against the old root's pathLenConstraint (no RFC 5280 self-issued exemption), so
     * the old root needs at least 1 (doc/ca.md, "Path length"). */
    if (X509_get_pathlen(ca->certs[0]) == 0)
        ns_log(NS_LOG_WARN,
               "the current CA certificate has path length 0: clients that trust only it and do not "
               "apply RFC 5280's self-issued exemption (Go's crypto/x509, GnuTLS) cannot follow the cross "
               "certificate; give them the new bundle (`ca bundle`); see doc/ca.md, \"Path length\"");
    if ((r = ns_cert_make_ca(ca->signer, ca->certs[0], nk.signer->pub, &dn,
                             cfg->ca.path_len > 0 ? cfg->ca.path_len - 1 : 0, now, now + cfg->ca.validity,
                             &xc)) != 0)
        goto out;
    /* Order of writes: key, cross certificate, bundle. A crash before the bundle leaves an unused key and
     * cross certificate behind, never a CA certificate without its key. */
    if (nk.soft.material != NULL) {
        if (doc == NULL) {
            ns_secret_doc *nd = NULL;
            if ((r = ns_doc_new(nk.signer->type, &nk.soft, &nd)) != 0)
                goto out;
            r = ns_secret_create(st, kr, NS_CA_KEY_SECRET, nd);
            ns_doc_free(nd);
        } else {
            struct add_key a = {&nk.soft};
            r = ns_secret_update(st, kr, NS_CA_KEY_SECRET, edit_add, &a);
        }
        if (r != 0)
            goto out;
    }
    if ((r = cross_name(nk.signer->id, name)) != 0 || (r = ns_ca_bundle_pem(&xc, 1, &pem)) != 0 ||
        (r = ns_store_put(st, name, pem->data, pem->len, NS_PUT_REPLACE, NULL)) != 0)
        goto out;
    all[0] = cert;
    for (size_t i = 0; i < ca->n; i++)
        all[i + 1] = ca->certs[i];
    if ((r = put_bundle(st, all, ca->n + 1, NS_PUT_IF_MATCH, ca->version)) != 0) {
        if (r == NS_E_CONFLICT || r == NS_E_NOT_FOUND)
            ns_log(NS_LOG_ERROR,
                   "the CA bundle changed while rotating (another rotate or retire); run it again");
        goto out;
    }
    *out = cert;
    *cross = xc;
    cert = xc = NULL;
    r = 0;
out:
    ns_buf_free(pem);
    X509_free(cert);
    X509_free(xc);
    ns_doc_free(doc);
    newkey_clear(&nk);
    ns_ca_free(ca);
    return r;
}

/* ---- retire ---- */

static int edit_retire(ns_secret_doc *d, void *vctx)
{
    const char *id = vctx;
    char removed[NS_KEY_ID_MAX];

    if (d->n < 2 || strcmp(d->keys[d->n - 1].id, id) != 0)
        return NS_E_NOT_FOUND;
    return ns_doc_retire(d, removed);
}

int ns_ca_retire(const ns_config *cfg, ns_store *st, const ns_keyring *kr, X509 **removed)
{
    ns_ca *ca = NULL;
    char id[NS_KEY_ID_MAX], next_id[NS_KEY_ID_MAX], name[NS_NAME_MAX + 1];
    int r = NS_E_INTERNAL;

    if ((r = ns_ca_load(cfg, st, kr, &ca)) != 0)
        goto out;
    if (ca->n < 2) {
        ns_log(NS_LOG_ERROR, "the CA has one certificate only: rotate before retiring");
        r = NS_E_CONFLICT;
        goto out;
    }
    if ((r = ns_ca_cert_key_id(ca->certs[ca->n - 1], id)) != 0 ||
        (r = ns_ca_cert_key_id(ca->certs[ca->n - 2], next_id)) != 0)
        goto out;
    if ((r = put_bundle(st, ca->certs, ca->n - 1, NS_PUT_IF_MATCH, ca->version)) != 0) {
        if (r == NS_E_CONFLICT || r == NS_E_NOT_FOUND)
            ns_log(NS_LOG_ERROR,
                   "the CA bundle changed while retiring (another rotate or retire); run it again");
        goto out;
    }
    /* The retired key signed the cross certificate of the next CA: it vouches for nothing anyone trusts now.
     */
    if ((r = cross_name(next_id, name)) == 0 && (r = ns_store_delete(st, name)) != 0 && r != NS_E_NOT_FOUND)
        ns_log(NS_LOG_WARN, "could not delete %s: %s", name, ns_strerror(r));
    r = ns_secret_update(st, kr, NS_CA_KEY_SECRET, edit_retire, id);
    if (r == NS_E_NOT_FOUND)
        ns_log(NS_LOG_INFO,
               "the retired CA key (key id %s) is not the oldest key of ca.key: a token key stays in "
               "its token until you delete it there and from ca.keys",
               id);
    else if (r != 0)
        ns_log(NS_LOG_WARN, "the CA certificate is retired but its key could not be removed from ca.key: %s",
               ns_strerror(r));
    *removed = ca->certs[ca->n - 1];
    ca->certs[ca->n - 1] = NULL;
    r = 0;
out:
    ns_ca_free(ca);
    return r;
}

/* One cross certificate from the store, kept only if it is what it claims: the key and name of certs[i],
 * issued by (name, and signature under the key of) certs[i + 1]. The store is not trusted (DESIGN.md §7):
 * anything else is dropped with a warning. *out NULL when there is none (or it is dropped). */
static int cross_for(ns_store *st, const ns_ca *ca, size_t i, X509 **out)
{
    ns_buf *pem = NULL;
    X509 **c = NULL;
    size_t k = 0;
    char id[NS_KEY_ID_MAX], name[NS_NAME_MAX + 1];
    int r;

    *out = NULL;
    if ((r = ns_ca_cert_key_id(ca->certs[i], id)) != 0 || (r = cross_name(id, name)) != 0)
        return r;
    r = ns_store_get(st, name, NS_CA_BUNDLE_MAX, &pem, NULL);
    if (r == NS_E_NOT_FOUND)
        return 0;
    if (r != 0)
        return r;
    if (ns_ca_parse_bundle(pem->data, pem->len, &c, &k) != 0 || k != 1 ||
        EVP_PKEY_eq(X509_get0_pubkey(c[0]), X509_get0_pubkey(ca->certs[i])) != 1 ||
        X509_NAME_cmp(X509_get_subject_name(c[0]), X509_get_subject_name(ca->certs[i])) != 0 ||
        !issued_by(c[0], ca->certs[i + 1])) {
        ns_log(NS_LOG_WARN, "%s is not a certificate of the CA's key issued by the CA before it: ignored",
               name);
        ERR_clear_error();
    } else {
        *out = c[0];
        c[0] = NULL;
    }
    ns_ca_certs_free(c, k);
    ns_buf_free(pem);
    return 0;
}

int ns_ca_cross_pem(ns_store *st, const ns_ca *ca, ns_buf **out)
{
    X509 *v[NS_CA_MAX];
    size_t k = 0;
    int r = 0;

    /* Checked as the chain the server sends is: the oldest certificate has none (its cross certificate
     * would be by a retired CA, which vouches for nothing now). */
    for (size_t i = 0; r == 0 && i + 1 < ca->n; i++)
        if ((r = cross_for(st, ca, i, &v[k])) == 0 && v[k] != NULL)
            k++;
    if (r == 0)
        r = ns_ca_bundle_pem(v, k, out);
    for (size_t i = 0; i < k; i++)
        X509_free(v[i]);
    return r;
}

int ns_ca_cross_chain(ns_store *st, const ns_ca *ca, STACK_OF(X509) * *out)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x = NULL;
    int r = NS_E_NOMEM;

    if (sk == NULL)
        goto out;
    /* certs[0] by certs[1], certs[1] by certs[2], ...: a gap ends the chain (what follows cannot link up). */
    for (size_t i = 0; i + 1 < ca->n; i++) {
        if ((r = cross_for(st, ca, i, &x)) != 0)
            goto out;
        if (x == NULL)
            break;
        if (!sk_X509_push(sk, x)) {
            r = NS_E_NOMEM;
            goto out;
        }
        x = NULL;
    }
    *out = sk;
    sk = NULL;
    r = 0;
out:
    X509_free(x);
    sk_X509_pop_free(sk, X509_free);
    return r;
}

int ns_ca_issue(ns_ca *ca, ns_store *st, const char *shard, const ns_cert_req *req, ns_issued **out)
{
    ns_issued *x = NULL;
    int r;

    if ((r = ns_cert_issue(ca->signer, ca->certs[0], req, &x)) != 0)
        return r;
    if ((r = ns_certlog_write(st, shard, req, x, ca->signer->id)) != 0) {
        ns_log(NS_LOG_ERROR, "the certificate could not be logged; it is not issued");
        ns_issued_free(x);
        return r;
    }
    *out = x;
    return 0;
}
