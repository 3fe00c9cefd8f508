/* Unit tests for src/secrets/{keytype,document,export}.c: secret documents (doc/secrets.md).
 *
 * Round trips of every type through make_key/new/serialize/parse; key-pair ids against RFC 7638
 * thumbprints computed here independently (and the RFC 8037 A.3 known answer); the lifecycle (rotate,
 * rotate --pending, promote, retire) and every refusal (NS_E_CONFLICT, document unchanged); strict parsing
 * (NS_E_FORMAT for every malformed document, NS_E_VERSION for version 2); importing keys (PEM PKCS#8,
 * traditional EC/RSA PEM, PKCS#8 DER; encrypted, garbage, mistyped and RSA-1024 refused); and every
 * export format, with the wrong combinations refused as NS_E_USAGE. */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/json.h"
#include "common/secmem.h"
#include "secrets/document.h"
#include "secrets/export.h"
#include "secrets/keytype.h"

static const char *const ALL_TYPES[] = {"ed25519",  "ecdsa-p256", "ecdsa-p384", "rsa-2048",
                                        "rsa-3072", "rsa-4096",   "random",     "opaque"};
#define N_TYPES (sizeof(ALL_TYPES) / sizeof(ALL_TYPES[0]))

/* 2001-09-09T01:46:40Z */
#define BASE_TIME 1000000000

#define EXPECT_RC(expr, want, what)                                                                          \
    do {                                                                                                     \
        int r_ = (expr);                                                                                     \
        if (r_ != (want))                                                                                    \
            fail_msg("%s: got %d (%s), want %d (%s)", (what), r_, ns_strerror(r_), (int)(want),              \
                     ns_strerror(want));                                                                     \
    } while (0)

/* ---- helpers ---- */

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static const ns_keytype *type_of(const char *name)
{
    const ns_keytype *t = ns_keytype_find(name);
    if (t == NULL)
        fail_msg("no key type %s", name);
    return t;
}

/* Opaque material for seed s: 200 + s % 50 pattern bytes. */
static size_t opaque_bytes(uint32_t s, uint8_t out[256])
{
    size_t n = 200 + s % 50;
    fill_pattern(out, n, s);
    return n;
}

/* A new key of type t: generated; random keys are 48 bytes; opaque keys are opaque_bytes(seed). */
static void make(const ns_keytype *t, uint32_t seed, ns_secret_key *k)
{
    uint8_t bytes[256];
    size_t n = opaque_bytes(seed, bytes);
    int opaque = t->kind == NS_KIND_OPAQUE;
    int r = ns_doc_make_key(t, opaque ? bytes : NULL, opaque ? n : 0, 48, k);
    if (r != 0)
        fail_msg("make_key %s: %d (%s)", t->name, r, ns_strerror(r));
    assert_non_null(k->material);
    assert_int_equal(k->state, NS_KEY_CURRENT);
}

/* A document of type `name` made through the lifecycle API: nkeys keys, newest first, with distinct
 * creation times (keys[i] is BASE_TIME - 3600 i); with `pending`, keys[1] is the pending key. */
static ns_secret_doc *build(const char *name, size_t nkeys, int pending)
{
    const ns_keytype *t = type_of(name);
    ns_secret_doc *d = NULL;
    ns_secret_key k;

    make(t, 1, &k);
    assert_int_equal(ns_doc_new(t, &k, &d), 0);
    assert_null(k.material); /* ownership moved */
    for (size_t i = 1; i < nkeys; i++) {
        make(t, (uint32_t)i + 1, &k);
        EXPECT_RC(ns_doc_rotate(d, &k, pending && i == nkeys - 1), 0, "build: rotate");
        assert_null(k.material);
    }
    assert_int_equal(d->n, nkeys);
    for (size_t i = 0; i < d->n; i++)
        d->keys[i].created_at = BASE_TIME - 3600 * (int64_t)i;
    return d;
}

/* The serialized document as a NUL-terminated malloc'd string. */
static char *text_of(const ns_secret_doc *d)
{
    ns_buf *b = NULL;
    char *s;
    EXPECT_RC(ns_doc_serialize(d, &b), 0, "serialize");
    assert_non_null(b);
    s = malloc(b->len + 1);
    assert_non_null(s);
    memcpy(s, b->data, b->len);
    s[b->len] = '\0';
    ns_buf_free(b);
    return s;
}

/* ns_doc_parse of a string; on success the document is checked for sanity and freed. */
static int parse_text(const char *s)
{
    ns_secret_doc *d = NULL;
    int r = ns_doc_parse((const uint8_t *)s, strlen(s), &d);
    if (r == 0) {
        assert_non_null(d);
        ns_doc_free(d);
    } else {
        assert_null(d); /* untouched on failure */
    }
    return r;
}

static json_t *root_of(const ns_secret_doc *d)
{
    char *s = text_of(d);
    json_error_t e;
    json_t *root = json_loads(s, 0, &e);
    if (root == NULL)
        fail_msg("serialized document is not JSON: %s", e.text);
    free(s);
    return root;
}

/* Dump root (keeping the member order) and parse it as a document. */
static int parse_root(json_t *root)
{
    char *s = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    int r;
    assert_non_null(s);
    r = parse_text(s);
    ns_json_free(s);
    return r;
}

static json_t *key_at(json_t *root, size_t i)
{
    json_t *k = json_array_get(json_object_get(root, "keys"), i);
    assert_non_null(k);
    return k;
}

static void set_str(json_t *o, const char *member, const char *value)
{
    assert_int_equal(json_object_set_new(o, member, json_string(value)), 0);
}

/* base64url without padding, written here independently of ns_b64url_encode. */
static void b64url(const uint8_t *p, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8 | p[i]) & 0xffffu;
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = a[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = a[(acc << (6 - bits)) & 63];
    out[o] = '\0';
}

/* base64url(SHA-256(canon)). */
static void thumb_of(const char *canon, char out[64])
{
    uint8_t md[32];
    assert_int_equal(EVP_Digest(canon, strlen(canon), md, NULL, EVP_sha256(), NULL), 1);
    b64url(md, sizeof(md), out);
}

static void bn_b64url(EVP_PKEY *k, const char *param, size_t pad, char *out)
{
    BIGNUM *bn = NULL;
    uint8_t bytes[1024];
    int len;
    assert_int_equal(EVP_PKEY_get_bn_param(k, param, &bn), 1);
    len = pad ? BN_bn2binpad(bn, bytes, (int)pad) : BN_bn2bin(bn, bytes);
    assert_true(len > 0);
    b64url(bytes, (size_t)len, out);
    BN_free(bn);
}

/* The canonical RFC 7638 JWK of a public key, built here from the raw key parameters. */
static void canonical_jwk(EVP_PKEY *k, char *out, size_t cap)
{
    char x[800], y[800];
    if (EVP_PKEY_is_a(k, "ED25519")) {
        uint8_t pub[32];
        size_t len = sizeof(pub);
        assert_int_equal(EVP_PKEY_get_raw_public_key(k, pub, &len), 1);
        assert_int_equal(len, 32);
        b64url(pub, len, x);
        snprintf(out, cap, "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}", x);
    } else if (EVP_PKEY_is_a(k, "EC")) {
        size_t coord = (size_t)(EVP_PKEY_get_bits(k) + 7) / 8;
        bn_b64url(k, OSSL_PKEY_PARAM_EC_PUB_X, coord, x);
        bn_b64url(k, OSSL_PKEY_PARAM_EC_PUB_Y, coord, y);
        snprintf(out, cap, "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                 coord == 32 ? "P-256" : "P-384", x, y);
    } else {
        assert_true(EVP_PKEY_is_a(k, "RSA"));
        bn_b64url(k, OSSL_PKEY_PARAM_RSA_E, 0, y);
        bn_b64url(k, OSSL_PKEY_PARAM_RSA_N, 0, x);
        snprintf(out, cap, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", y, x);
    }
}

/* ---- round trips ---- */

static void check_docs_equal(const ns_secret_doc *a, const ns_secret_doc *b)
{
    assert_ptr_equal(a->type, b->type);
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_string_equal(a->keys[i].id, b->keys[i].id);
        assert_int_equal(a->keys[i].state, b->keys[i].state);
        assert_int_equal(a->keys[i].created_at, b->keys[i].created_at);
        assert_int_equal(a->keys[i].material->len, b->keys[i].material->len);
        assert_memory_equal(a->keys[i].material->data, b->keys[i].material->data, a->keys[i].material->len);
    }
}

static void test_round_trip_every_type(void **state)
{
    (void)state;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const ns_keytype *t = type_of(ALL_TYPES[ti]);
        /* RSA-4096 generation is slow: two keys there, three elsewhere. */
        size_t nkeys = strcmp(t->name, "rsa-4096") == 0 ? 2 : 3;
        ns_secret_doc *d = build(t->name, nkeys, 1), *back = NULL;
        char *text = text_of(d), *again;

        assert_int_equal(d->keys[0].state, NS_KEY_CURRENT);
        assert_int_equal(d->keys[1].state, NS_KEY_PENDING);
        if (nkeys == 3)
            assert_int_equal(d->keys[2].state, NS_KEY_PREVIOUS);
        assert_non_null(strstr(text, "\"format\":\"nstance-secret\""));
        assert_non_null(strstr(text, "\"created_at\":\"2001-09-09T01:46:40Z\""));
        assert_non_null(strstr(text, t->kind == NS_KIND_KEYPAIR ? "\"pkcs8\"" : "\"data\""));
        assert_null(strstr(text, t->kind == NS_KIND_KEYPAIR ? "\"data\"" : "\"pkcs8\""));

        EXPECT_RC(ns_doc_parse((const uint8_t *)text, strlen(text), &back), 0, t->name);
        check_docs_equal(d, back);
        /* Serialization is deterministic: the parsed document serializes to the same text. */
        again = text_of(back);
        assert_string_equal(text, again);

        for (size_t i = 0; i < d->n; i++) {
            const ns_secret_key *k = &back->keys[i];
            if (t->kind == NS_KIND_KEYPAIR) {
                EVP_PKEY *pk = NULL;
                char tp[NS_KEY_ID_MAX];
                EXPECT_RC(ns_doc_key_pkey(back, i, &pk), 0, "key_pkey");
                EXPECT_RC(ns_keytype_thumbprint(pk, tp), 0, "thumbprint");
                assert_string_equal(k->id, tp);
                assert_int_equal(strlen(k->id), 43);
                const ns_keytype *got = NULL;
                EXPECT_RC(ns_keytype_classify(pk, &got), 0, "classify");
                assert_ptr_equal(got, t);
                EVP_PKEY_free(pk);
            } else {
                EVP_PKEY *pk = NULL;
                EXPECT_RC(ns_doc_key_pkey(back, i, &pk), NS_E_INVAL, "key_pkey of a non-key-pair");
                assert_null(pk);
                assert_int_equal(strlen(k->id), 22); /* 16 random bytes, base64url */
                if (t->kind == NS_KIND_RANDOM) {
                    assert_int_equal(k->material->len, 48);
                } else {
                    /* build(3, pending) made [seed 2 current, seed 3 pending, seed 1 previous] */
                    static const uint32_t seeds[] = {2, 3, 1};
                    uint8_t want[256];
                    size_t n = opaque_bytes(seeds[i], want);
                    assert_int_equal(k->material->len, n);
                    assert_memory_equal(k->material->data, want, n);
                }
            }
            for (size_t j = 0; j < i; j++)
                assert_string_not_equal(back->keys[j].id, k->id);
        }
        free(again);
        free(text);
        ns_doc_free(back);
        ns_doc_free(d);
    }
}

/* Opaque material is stored byte for byte, and a random key is exactly random_len bytes. */
static void test_make_key_material(void **state)
{
    uint8_t bytes[256];
    size_t n = opaque_bytes(7, bytes);
    ns_secret_key k;
    (void)state;

    EXPECT_RC(ns_doc_make_key(type_of("opaque"), bytes, n, 0, &k), 0, "opaque");
    assert_int_equal(k.material->len, n);
    assert_memory_equal(k.material->data, bytes, n);
    assert_true(k.material->secret);
    ns_secret_key_clear(&k);

    for (size_t len = 1; len <= NS_RANDOM_MAX; len = len == 1 ? 32 : len == 32 ? 4096 : len + 1) {
        EXPECT_RC(ns_doc_make_key(type_of("random"), NULL, 0, len, &k), 0, "random");
        assert_int_equal(k.material->len, len);
        assert_true(k.material->secret);
        ns_secret_key_clear(&k);
    }
    /* Two random keys differ (ids and bytes). */
    {
        ns_secret_key a, b;
        EXPECT_RC(ns_doc_make_key(type_of("random"), NULL, 0, 32, &a), 0, "random a");
        EXPECT_RC(ns_doc_make_key(type_of("random"), NULL, 0, 32, &b), 0, "random b");
        assert_string_not_equal(a.id, b.id);
        assert_memory_not_equal(a.material->data, b.material->data, 32);
        ns_secret_key_clear(&a);
        ns_secret_key_clear(&b);
    }
}

static void test_time_format_parse(void **state)
{
    char s[32];
    int64_t t = -1;
    (void)state;

    ns_time_format(BASE_TIME, s);
    assert_string_equal(s, "2001-09-09T01:46:40Z");
    EXPECT_RC(ns_time_parse("2001-09-09T01:46:40Z", &t), 0, "time");
    assert_int_equal(t, BASE_TIME);
    EXPECT_RC(ns_time_parse("2024-02-29T23:59:59Z", &t), 0, "leap day");
    EXPECT_RC(ns_time_parse("2026-02-30T00:00:00Z", &t), NS_E_FORMAT, "2026-02-30");
    EXPECT_RC(ns_time_parse("2025-02-29T00:00:00Z", &t), NS_E_FORMAT, "2025-02-29");
    EXPECT_RC(ns_time_parse("2026-11-28T24:00:00Z", &t), NS_E_FORMAT, "hour 24");
    EXPECT_RC(ns_time_parse("2026-11-28T10:45:46", &t), NS_E_FORMAT, "no Z");
    EXPECT_RC(ns_time_parse("2026-11-28 10:45:46Z", &t), NS_E_FORMAT, "space");
    EXPECT_RC(ns_time_parse("2026-11-28T10:45:46+00:00", &t), NS_E_FORMAT, "offset");
    EXPECT_RC(ns_time_parse("", &t), NS_E_FORMAT, "empty");
}

/* ---- ids: RFC 7638 thumbprints ---- */

/* RFC 8037 A.1 private key; A.3 gives the thumbprint of its public key. */
static void test_thumbprint_rfc8037(void **state)
{
    static const uint8_t d[32] = {0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a,
                                  0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32,
                                  0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60};
    EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, d, sizeof(d));
    ns_buf *der = NULL;
    ns_secret_key k;
    char tp[NS_KEY_ID_MAX];
    json_t *jwk = NULL;
    (void)state;

    assert_non_null(pk);
    EXPECT_RC(ns_keytype_thumbprint(pk, tp), 0, "thumbprint");
    assert_string_equal(tp, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    EXPECT_RC(ns_keytype_jwk(pk, &jwk), 0, "jwk");
    assert_string_equal(json_string_value(json_object_get(jwk, "x")),
                        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
    assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "OKP");
    assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "Ed25519");
    assert_null(json_object_get(jwk, "d"));
    json_decref(jwk);

    /* The same key imported as PKCS#8 DER gets that id. */
    EXPECT_RC(ns_keytype_to_pkcs8(pk, &der), 0, "to_pkcs8");
    EXPECT_RC(ns_doc_make_key(type_of("ed25519"), der->data, der->len, 0, &k), 0, "import");
    assert_string_equal(k.id, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    ns_secret_key_clear(&k);
    ns_buf_free(der);
    EVP_PKEY_free(pk);
}

/* For each key-pair type, the id is the thumbprint computed here from the raw public key. */
static void test_thumbprint_independent(void **state)
{
    static const char *const kp[] = {"ed25519", "ecdsa-p256", "ecdsa-p384", "rsa-2048"};
    (void)state;
    for (size_t i = 0; i < sizeof(kp) / sizeof(kp[0]); i++) {
        ns_secret_doc *d = build(kp[i], 1, 0);
        EVP_PKEY *pk = NULL;
        char canon[2048], want[64];

        EXPECT_RC(ns_doc_key_pkey(d, 0, &pk), 0, "key_pkey");
        canonical_jwk(pk, canon, sizeof(canon));
        thumb_of(canon, want);
        assert_int_equal(strlen(want), 43);
        if (strcmp(d->keys[0].id, want) != 0)
            fail_msg("%s: id %s, RFC 7638 thumbprint of %s is %s", kp[i], d->keys[0].id, canon, want);
        EVP_PKEY_free(pk);
        ns_doc_free(d);
    }
}

/* ---- lifecycle ---- */

static void check_doc(const ns_secret_doc *d, size_t n, const char *const *ids, const enum ns_key_state *st)
{
    assert_int_equal(d->n, n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(d->keys[i].id, ids[i]);
        assert_int_equal(d->keys[i].state, st[i]);
        assert_non_null(d->keys[i].material);
    }
}

#define CHECK(d, ...)                                                                                        \
    do {                                                                                                     \
        const char *ids_[] = {__VA_ARGS__};                                                                  \
        enum ns_key_state st_[sizeof(ids_) / sizeof(ids_[0])];                                               \
        for (size_t i_ = 0; i_ < sizeof(ids_) / sizeof(ids_[0]); i_++)                                       \
            st_[i_] = NS_KEY_PREVIOUS;                                                                       \
        st_[0] = NS_KEY_CURRENT;                                                                             \
        check_states_from_ids(d, ids_, st_, sizeof(ids_) / sizeof(ids_[0]));                                 \
    } while (0)

/* ids[i] prefixed with '+' marks the pending key. */
static void check_states_from_ids(const ns_secret_doc *d, const char **ids, enum ns_key_state *st, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i][0] == '+') {
            st[i] = NS_KEY_PENDING;
            ids[i]++;
        }
    check_doc(d, n, ids, st);
}

/* The ids of a document, copied (a snapshot to compare against after a refusal). */
struct snap {
    size_t n;
    char ids[NS_SECRET_KEYS_MAX][NS_KEY_ID_MAX];
    enum ns_key_state st[NS_SECRET_KEYS_MAX];
};

static void take(const ns_secret_doc *d, struct snap *s)
{
    s->n = d->n;
    for (size_t i = 0; i < d->n; i++) {
        memcpy(s->ids[i], d->keys[i].id, NS_KEY_ID_MAX);
        s->st[i] = d->keys[i].state;
    }
}

static void unchanged(const ns_secret_doc *d, const struct snap *s)
{
    assert_int_equal(d->n, s->n);
    for (size_t i = 0; i < d->n; i++) {
        assert_string_equal(d->keys[i].id, s->ids[i]);
        assert_int_equal(d->keys[i].state, s->st[i]);
        assert_non_null(d->keys[i].material);
    }
}

static void test_lifecycle_orders(void **state)
{
    const ns_keytype *t = type_of("random");
    ns_secret_doc *d = NULL;
    ns_secret_key k;
    char a[NS_KEY_ID_MAX], b[NS_KEY_ID_MAX], c[NS_KEY_ID_MAX], e[NS_KEY_ID_MAX], f[NS_KEY_ID_MAX];
    char removed[NS_KEY_ID_MAX];
    char pc[NS_KEY_ID_MAX + 1], pe[NS_KEY_ID_MAX + 1], pf[NS_KEY_ID_MAX + 1];
    (void)state;

    make(t, 1, &k);
    snprintf(a, sizeof(a), "%s", k.id);
    k.state = NS_KEY_PREVIOUS; /* ns_doc_new makes it current whatever it says */
    assert_int_equal(ns_doc_new(t, &k, &d), 0);
    CHECK(d, a);

    /* rotate: new current in front, the old current becomes previous */
    make(t, 2, &k);
    snprintf(b, sizeof(b), "%s", k.id);
    EXPECT_RC(ns_doc_rotate(d, &k, 0), 0, "rotate");
    assert_null(k.material);
    CHECK(d, b, a);

    /* rotate --pending: current unchanged, the new key at position 1 */
    make(t, 3, &k);
    snprintf(c, sizeof(c), "%s", k.id);
    snprintf(pc, sizeof(pc), "+%s", c);
    EXPECT_RC(ns_doc_rotate(d, &k, 1), 0, "rotate pending");
    assert_null(k.material);
    CHECK(d, b, pc, a);

    /* promote: the pending key becomes current, the old current previous, right after it */
    EXPECT_RC(ns_doc_promote(d), 0, "promote");
    CHECK(d, c, b, a);

    /* retire: the oldest key goes */
    removed[0] = '\0';
    EXPECT_RC(ns_doc_retire(d, removed), 0, "retire");
    assert_string_equal(removed, a);
    CHECK(d, c, b);

    /* a pending key while a previous key is the oldest: retire takes the previous one */
    make(t, 4, &k);
    snprintf(e, sizeof(e), "%s", k.id);
    snprintf(pe, sizeof(pe), "+%s", e);
    EXPECT_RC(ns_doc_rotate(d, &k, 1), 0, "rotate pending 2");
    CHECK(d, c, pe, b);
    EXPECT_RC(ns_doc_retire(d, removed), 0, "retire 2");
    assert_string_equal(removed, b);
    CHECK(d, c, pe);
    EXPECT_RC(ns_doc_promote(d), 0, "promote 2");
    CHECK(d, e, c);
    EXPECT_RC(ns_doc_retire(d, NULL), 0, "retire with no removed_id");
    CHECK(d, e);

    /* rotate --pending on a single key */
    make(t, 5, &k);
    snprintf(f, sizeof(f), "%s", k.id);
    snprintf(pf, sizeof(pf), "+%s", f);
    EXPECT_RC(ns_doc_rotate(d, &k, 1), 0, "rotate pending on one key");
    CHECK(d, e, pf);
    EXPECT_RC(ns_doc_promote(d), 0, "promote 3");
    CHECK(d, f, e);

    /* the states serialize and parse back */
    {
        char *s = text_of(d);
        assert_int_equal(parse_text(s), 0);
        free(s);
    }
    ns_doc_free(d);
}

/* A refused rotate leaves the document as it was and the key with the caller. */
static void refuse_rotate(ns_secret_doc *d, ns_secret_key *k, int pending, const char *what)
{
    struct snap s;
    ns_buf *m = k->material;
    take(d, &s);
    EXPECT_RC(ns_doc_rotate(d, k, pending), NS_E_CONFLICT, what);
    unchanged(d, &s);
    assert_ptr_equal(k->material, m); /* still the caller's */
    for (size_t i = 0; i < d->n; i++)
        assert_ptr_not_equal(d->keys[i].material, m);
}

static void test_rotate_refused_pending_exists(void **state)
{
    ns_secret_doc *d = build("ecdsa-p256", 3, 1);
    ns_secret_key k;
    (void)state;
    make(d->type, 99, &k);
    refuse_rotate(d, &k, 0, "rotate while a pending key exists");
    refuse_rotate(d, &k, 1, "rotate --pending while a pending key exists");
    ns_secret_key_clear(&k);
    ns_doc_free(d);
}

static void test_promote_refused_no_pending(void **state)
{
    ns_secret_doc *d = build("random", 1, 0);
    struct snap s;
    (void)state;
    take(d, &s);
    EXPECT_RC(ns_doc_promote(d), NS_E_CONFLICT, "promote a single key");
    unchanged(d, &s);
    ns_doc_free(d);

    d = build("random", 3, 0);
    take(d, &s);
    EXPECT_RC(ns_doc_promote(d), NS_E_CONFLICT, "promote without a pending key");
    unchanged(d, &s);
    ns_doc_free(d);
}

static void test_retire_refused_only_key(void **state)
{
    ns_secret_doc *d = build("ed25519", 1, 0);
    char removed[NS_KEY_ID_MAX] = "untouched";
    struct snap s;
    (void)state;
    take(d, &s);
    EXPECT_RC(ns_doc_retire(d, removed), NS_E_CONFLICT, "retire the only key");
    unchanged(d, &s);
    ns_doc_free(d);
}

/* [current, pending]: the oldest key is the pending one; retiring it is a refusal (NS_E_CONFLICT, as
 * document.h says, so that the CLI exits 7 like every other refusal). */
static void test_retire_refused_pending_oldest(void **state)
{
    ns_secret_doc *d = build("random", 2, 1);
    struct snap s;
    (void)state;
    assert_int_equal(d->keys[1].state, NS_KEY_PENDING);
    take(d, &s);
    EXPECT_RC(ns_doc_retire(d, NULL), NS_E_CONFLICT, "retire when the oldest key is pending");
    unchanged(d, &s);
    ns_doc_free(d);
}

static void test_rotate_refused_full(void **state)
{
    ns_secret_doc *d = build("random", NS_SECRET_KEYS_MAX, 0);
    ns_secret_key k;
    char *s;
    (void)state;
    assert_int_equal(d->n, 16);
    make(d->type, 99, &k);
    refuse_rotate(d, &k, 0, "rotate a full document");
    refuse_rotate(d, &k, 1, "rotate --pending a full document");
    /* after a retire there is room again */
    EXPECT_RC(ns_doc_retire(d, NULL), 0, "retire");
    EXPECT_RC(ns_doc_rotate(d, &k, 0), 0, "rotate after retire");
    assert_int_equal(d->n, 16);
    s = text_of(d);
    assert_int_equal(parse_text(s), 0); /* 16 keys parse */
    free(s);
    ns_doc_free(d);
}

/* A key whose id is already in the document is refused with NS_E_CONFLICT (document.h). */
static void test_rotate_refused_duplicate_id(void **state)
{
    ns_secret_doc *d = build("ed25519", 2, 0);
    ns_secret_key k;
    (void)state;
    /* the same key pair again: same thumbprint */
    memset(&k, 0, sizeof(k));
    snprintf(k.id, sizeof(k.id), "%s", d->keys[1].id);
    k.created_at = BASE_TIME;
    k.state = NS_KEY_CURRENT;
    assert_int_equal(ns_buf_from(d->keys[1].material->data, d->keys[1].material->len,
                                 d->keys[1].material->len, true, &k.material),
                     0);
    refuse_rotate(d, &k, 0, "rotate a key already in the document");
    refuse_rotate(d, &k, 1, "rotate --pending a key already in the document");
    ns_secret_key_clear(&k);
    ns_doc_free(d);
}

/* ---- strict parsing ---- */

static void test_parse_unknown_members(void **state)
{
    ns_secret_doc *d = build("ed25519", 2, 0);
    json_t *root;
    (void)state;

    root = root_of(d);
    assert_int_equal(parse_root(root), 0); /* the unmodified document parses */
    assert_int_equal(json_object_set_new(root, "comment", json_string("x")), 0);
    EXPECT_RC(parse_root(root), NS_E_FORMAT, "unknown member at the root");
    json_decref(root);

    root = root_of(d);
    assert_int_equal(json_object_set_new(key_at(root, 1), "note", json_string("x")), 0);
    EXPECT_RC(parse_root(root), NS_E_FORMAT, "unknown member in a key");
    json_decref(root);

    /* same number of members, one renamed */
    root = root_of(d);
    {
        json_t *k0 = key_at(root, 0);
        json_t *st = json_incref(json_object_get(k0, "state"));
        assert_int_equal(json_object_del(k0, "state"), 0);
        assert_int_equal(json_object_set_new(k0, "status", st), 0);
    }
    EXPECT_RC(parse_root(root), NS_E_FORMAT, "a key with 'status' for 'state'");
    json_decref(root);

    /* a key-pair key carrying "data" instead of "pkcs8" */
    root = root_of(d);
    {
        json_t *k0 = key_at(root, 0);
        json_t *v = json_incref(json_object_get(k0, "pkcs8"));
        assert_int_equal(json_object_del(k0, "pkcs8"), 0);
        assert_int_equal(json_object_set_new(k0, "data", v), 0);
    }
    EXPECT_RC(parse_root(root), NS_E_FORMAT, "a key-pair key with data");
    json_decref(root);
    ns_doc_free(d);

    /* and a random key carrying "pkcs8" */
    d = build("random", 1, 0);
    root = root_of(d);
    {
        json_t *k0 = key_at(root, 0);
        json_t *v = json_incref(json_object_get(k0, "data"));
        assert_int_equal(json_object_del(k0, "data"), 0);
        assert_int_equal(json_object_set_new(k0, "pkcs8", v), 0);
    }
    EXPECT_RC(parse_root(root), NS_E_FORMAT, "a random key with pkcs8");
    json_decref(root);
    ns_doc_free(d);
}

static void test_parse_missing_members(void **state)
{
    static const char *const root_members[] = {"format", "version", "type", "keys"};
    static const char *const key_members[] = {"id", "created_at", "state", "pkcs8"};
    ns_secret_doc *d = build("ecdsa-p256", 2, 0);
    (void)state;

    for (size_t i = 0; i < 4; i++) {
        json_t *root = root_of(d);
        char what[64];
        assert_int_equal(json_object_del(root, root_members[i]), 0);
        snprintf(what, sizeof(what), "no %s at the root", root_members[i]);
        EXPECT_RC(parse_root(root), NS_E_FORMAT, what);
        json_decref(root);
    }
    for (size_t i = 0; i < 4; i++) {
        for (size_t at = 0; at < 2; at++) {
            json_t *root = root_of(d);
            char what[64];
            assert_int_equal(json_object_del(key_at(root, at), key_members[i]), 0);
            snprintf(what, sizeof(what), "no %s in key %zu", key_members[i], at);
            EXPECT_RC(parse_root(root), NS_E_FORMAT, what);
            json_decref(root);
        }
    }
    ns_doc_free(d);
}

/* Parse document d after `stmt` changed its JSON `root`; expect `want`. */
#define MUTATE(stmt, want, what)                                                                             \
    do {                                                                                                     \
        root = root_of(d);                                                                                   \
        stmt;                                                                                                \
        EXPECT_RC(parse_root(root), want, what);                                                             \
        json_decref(root);                                                                                   \
    } while (0)

static void test_parse_wrong_values(void **state)
{
    ns_secret_doc *d = build("ed25519", 2, 0);
    json_t *root;
    (void)state;

    MUTATE(set_str(root, "format", "nstance-secreT"), NS_E_FORMAT, "wrong format string");
    MUTATE(set_str(root, "format", "nstance-secret "), NS_E_FORMAT, "format with a trailing space");
    MUTATE(json_object_set_new(root, "format", json_integer(1)), NS_E_FORMAT, "format not a string");
    MUTATE(set_str(root, "type", "ed448"), NS_E_FORMAT, "unknown type");
    MUTATE(set_str(root, "type", "ED25519"), NS_E_FORMAT, "type in upper case");
    MUTATE(set_str(root, "type", "ecdsa-p256"), NS_E_FORMAT, "type not matching the keys");
    MUTATE(json_object_set_new(root, "type", json_null()), NS_E_FORMAT, "type null");
    MUTATE(json_object_set_new(root, "version", json_integer(2)), NS_E_VERSION, "version 2");
    MUTATE(json_object_set_new(root, "version", json_integer(0)), NS_E_VERSION, "version 0");
    MUTATE(json_object_set_new(root, "version", json_string("1")), NS_E_FORMAT, "version as a string");
    MUTATE(json_object_set_new(root, "version", json_real(1.0)), NS_E_FORMAT, "version as a real");
    MUTATE(json_object_set_new(root, "keys", json_object()), NS_E_FORMAT, "keys an object");
    MUTATE(json_object_set_new(root, "keys", json_array()), NS_E_FORMAT, "0 keys");
    MUTATE(json_array_set_new(json_object_get(root, "keys"), 1, json_string("x")), NS_E_FORMAT,
           "a key that is a string");
    MUTATE(json_object_set_new(key_at(root, 0), "id", json_integer(5)), NS_E_FORMAT, "id a number");
    MUTATE(json_object_set_new(key_at(root, 0), "created_at", json_integer(BASE_TIME)), NS_E_FORMAT,
           "created_at a number");

    /* bad created_at */
    MUTATE(set_str(key_at(root, 0), "created_at", "2026-02-30T00:00:00Z"), NS_E_FORMAT, "2026-02-30");
    MUTATE(set_str(key_at(root, 1), "created_at", "2026-11-28T10:45:46"), NS_E_FORMAT, "no Z");
    MUTATE(set_str(key_at(root, 1), "created_at", "2026-11-28T10:45:46.5Z"), NS_E_FORMAT, "fraction");
    MUTATE(set_str(key_at(root, 1), "created_at", ""), NS_E_FORMAT, "empty created_at");

    /* bad base64 */
    MUTATE(set_str(key_at(root, 0), "pkcs8", "not base64!"), NS_E_FORMAT, "pkcs8 not base64");
    MUTATE(set_str(key_at(root, 0), "pkcs8", ""), NS_E_FORMAT, "pkcs8 empty");
    {
        /* base64url alphabet and an embedded newline: not standard base64 */
        root = root_of(d);
        json_t *k1 = key_at(root, 1);
        char *v = strdup(json_string_value(json_object_get(k1, "pkcs8")));
        char *nl = malloc(strlen(v) + 2);
        assert_non_null(v);
        assert_non_null(nl);
        snprintf(nl, strlen(v) + 2, "%.8s\n%s", v, v + 8);
        set_str(k1, "pkcs8", nl);
        EXPECT_RC(parse_root(root), NS_E_FORMAT, "pkcs8 with a newline");
        for (char *c = v; *c; c++)
            *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
        if (strpbrk(v, "-_") != NULL) {
            set_str(k1, "pkcs8", v);
            EXPECT_RC(parse_root(root), NS_E_FORMAT, "pkcs8 in base64url");
        }
        free(nl);
        free(v);
        json_decref(root);
    }

    /* states out of place */
    MUTATE(set_str(key_at(root, 0), "state", "previous"), NS_E_FORMAT, "key 0 previous");
    MUTATE(set_str(key_at(root, 0), "state", "pending"), NS_E_FORMAT, "key 0 pending");
    MUTATE(set_str(key_at(root, 1), "state", "current"), NS_E_FORMAT, "key 1 current");
    MUTATE(set_str(key_at(root, 1), "state", "retired"), NS_E_FORMAT, "unknown state");
    MUTATE(set_str(key_at(root, 1), "state", "Previous"), NS_E_FORMAT, "state in another case");
    MUTATE(set_str(key_at(root, 1), "state", "pending"), 0, "key 1 pending is fine");

    /* ids that are not the thumbprint */
    {
        root = root_of(d);
        char id0[NS_KEY_ID_MAX];
        snprintf(id0, sizeof(id0), "%s", json_string_value(json_object_get(key_at(root, 0), "id")));
        set_str(key_at(root, 0), "id", json_string_value(json_object_get(key_at(root, 1), "id")));
        set_str(key_at(root, 1), "id", id0);
        EXPECT_RC(parse_root(root), NS_E_FORMAT, "ids swapped");
        id0[0] = id0[0] == 'A' ? 'B' : 'A';
        set_str(key_at(root, 1), "id", id0);
        EXPECT_RC(parse_root(root), NS_E_FORMAT, "id one character off");
        json_decref(root);
    }
    MUTATE(set_str(key_at(root, 0), "id", ""), NS_E_FORMAT, "empty id");
    ns_doc_free(d);
}

/* A key of another type in an ed25519 document, with its own (correct) thumbprint as id. */
static void test_parse_pkcs8_of_another_type(void **state)
{
    ns_secret_doc *d = build("ed25519", 2, 0), *other = build("ecdsa-p256", 1, 0);
    json_t *root = root_of(d), *oroot = root_of(other);
    (void)state;

    json_object_set(key_at(root, 1), "pkcs8", json_object_get(key_at(oroot, 0), "pkcs8"));
    json_object_set(key_at(root, 1), "id", json_object_get(key_at(oroot, 0), "id"));
    EXPECT_RC(parse_root(root), NS_E_FORMAT, "a P-256 key in an ed25519 document");
    /* and a PKCS#8 that is not a key at all (valid base64) */
    set_str(key_at(root, 1), "pkcs8", "AAECAwQFBgcICQ==");
    EXPECT_RC(parse_root(root), NS_E_FORMAT, "pkcs8 holding garbage");
    json_decref(root);
    json_decref(oroot);
    ns_doc_free(d);
    ns_doc_free(other);
}

static void test_parse_random_values(void **state)
{
    ns_secret_doc *d = build("random", 3, 1);
    json_t *root;
    (void)state;

    MUTATE(set_str(key_at(root, 2), "data", "YWJj"), 0, "3 bytes of data");
    MUTATE(set_str(key_at(root, 2), "data", "YWJ"), NS_E_FORMAT, "data without padding");
    MUTATE(set_str(key_at(root, 2), "data", "YWI="), 0, "data with padding");
    MUTATE(set_str(key_at(root, 2), "data", "YWJ="), NS_E_FORMAT, "data with non-zero trailing bits");
    MUTATE(set_str(key_at(root, 2), "data", "YW J"), NS_E_FORMAT, "data with a space");
    MUTATE(set_str(key_at(root, 2), "data", ""), NS_E_FORMAT, "empty data");
    MUTATE(set_str(key_at(root, 0), "id", "abc/def"), NS_E_FORMAT, "id with '/'");
    MUTATE(set_str(key_at(root, 0), "id", ""), NS_E_FORMAT, "empty id");
    MUTATE(set_str(key_at(root, 0), "id", "a-Z_09aaaaaaaaaaaaaaaa"), 0, "another 22-character base64url id");
    MUTATE(set_str(key_at(root, 0), "id", "a+Z/09aaaaaaaaaaaaaaaa"), NS_E_FORMAT, "id in standard base64");
    {
        char id[NS_KEY_ID_MAX + 1];
        memset(id, 'a', NS_KEY_ID_MAX);
        id[NS_KEY_ID_MAX] = '\0';
        MUTATE(set_str(key_at(root, 0), "id", id), NS_E_FORMAT, "id of 64 characters");
    }
    {
        /* 4097 bytes of random data */
        /* standard base64 of 4097 'A's: "QUFB" x 1365 (4095 bytes) + "QUE=" (2 more bytes) */
        char *b64 = malloc(4 * 1366 + 1);
        assert_non_null(b64);
        for (size_t i = 0; i < 1365; i++)
            memcpy(b64 + 4 * i, "QUFB", 4);
        memcpy(b64 + 4 * 1365, "QUE=", 5);
        MUTATE(set_str(key_at(root, 2), "data", b64), NS_E_FORMAT, "4097 bytes of random data");
        b64[4 * 1365] = '\0'; /* 4095 bytes */
        MUTATE(set_str(key_at(root, 2), "data", b64), 0, "4095 bytes of random data");
        free(b64);
    }

    /* states */
    MUTATE(set_str(key_at(root, 2), "state", "pending"), NS_E_FORMAT, "two pending keys");
    MUTATE(set_str(key_at(root, 2), "state", "current"), NS_E_FORMAT, "key 2 current");
    MUTATE((set_str(key_at(root, 1), "state", "previous"), set_str(key_at(root, 2), "state", "pending")),
           NS_E_FORMAT, "pending at position 2");
    MUTATE(set_str(key_at(root, 1), "state", "previous"), 0, "no pending key");

    /* duplicate ids */
    MUTATE(json_object_set(key_at(root, 2), "id", json_object_get(key_at(root, 1), "id")), NS_E_FORMAT,
           "duplicate id (1, 2)");
    MUTATE(json_object_set(key_at(root, 2), "id", json_object_get(key_at(root, 0), "id")), NS_E_FORMAT,
           "duplicate id (0, 2)");
    ns_doc_free(d);
}

/* The same key pair listed twice. */
static void test_parse_duplicate_keypair(void **state)
{
    ns_secret_doc *d = build("ecdsa-p384", 2, 0);
    json_t *root = root_of(d);
    json_t *copy = json_deep_copy(key_at(root, 1));
    (void)state;
    assert_int_equal(json_array_append_new(json_object_get(root, "keys"), copy), 0);
    EXPECT_RC(parse_root(root), NS_E_FORMAT, "the same key twice");
    json_decref(root);
    ns_doc_free(d);
}

static void test_parse_key_count(void **state)
{
    ns_secret_doc *d = build("random", NS_SECRET_KEYS_MAX, 0);
    json_t *root = root_of(d);
    json_t *copy;
    (void)state;

    assert_int_equal(parse_root(root), 0); /* 16 keys */
    copy = json_deep_copy(key_at(root, 15));
    set_str(copy, "id", "seventeenth-key_id");
    assert_int_equal(json_array_append_new(json_object_get(root, "keys"), copy), 0);
    EXPECT_RC(parse_root(root), NS_E_FORMAT, "17 keys");
    json_decref(root);
    ns_doc_free(d);
}

/* Text-level insertion of `ins` right after the first `anchor` in s. */
static char *insert_after(const char *s, const char *anchor, const char *ins)
{
    const char *at = strstr(s, anchor);
    size_t n;
    char *o;
    assert_non_null(at);
    at += strlen(anchor);
    n = strlen(s) + strlen(ins) + 1;
    o = malloc(n);
    assert_non_null(o);
    snprintf(o, n, "%.*s%s%s", (int)(at - s), s, ins, at);
    return o;
}

static void test_parse_not_json(void **state)
{
    ns_secret_doc *d = build("ed25519", 2, 1);
    char *text = text_of(d), *t2;
    size_t n = strlen(text);
    (void)state;

    assert_int_equal(parse_text(text), 0);
    t2 = insert_after(text, "{", "\"format\": \"nstance-secret\",");
    EXPECT_RC(parse_text(t2), NS_E_FORMAT, "duplicate member at the root");
    free(t2);
    t2 = insert_after(text, "{", "\"type\": \"ed25519\",");
    EXPECT_RC(parse_text(t2), NS_E_FORMAT, "duplicate type member");
    free(t2);
    t2 = insert_after(text, "\"state\":\"pending\"", ", \"state\": \"pending\"");
    EXPECT_RC(parse_text(t2), NS_E_FORMAT, "duplicate member in a key");
    free(t2);

    EXPECT_RC(parse_text(""), NS_E_FORMAT, "empty");
    EXPECT_RC(parse_text("not json"), NS_E_FORMAT, "not json");
    EXPECT_RC(parse_text("[]"), NS_E_FORMAT, "an array");
    EXPECT_RC(parse_text("null"), NS_E_FORMAT, "null");
    EXPECT_RC(parse_text("{}"), NS_E_FORMAT, "an empty object");
    EXPECT_RC(parse_text("\"nstance-secret\""), NS_E_FORMAT, "a string");
    /* every truncation at a few points, and trailing garbage */
    for (size_t cut = 0; cut < n; cut += n / 13 + 1) {
        ns_secret_doc *out = NULL;
        EXPECT_RC(ns_doc_parse((const uint8_t *)text, cut, &out), NS_E_FORMAT, "truncated");
        assert_null(out);
    }
    {
        ns_secret_doc *out = NULL;
        EXPECT_RC(ns_doc_parse((const uint8_t *)text, n - 1, &out), NS_E_FORMAT, "last byte cut");
    }
    t2 = malloc(n + 3);
    assert_non_null(t2);
    snprintf(t2, n + 3, "%s x", text);
    EXPECT_RC(parse_text(t2), NS_E_FORMAT, "trailing garbage");
    free(t2);
    /* a NUL byte inside */
    {
        ns_secret_doc *out = NULL;
        char *z = strdup(text);
        assert_non_null(z);
        z[n / 2] = '\0';
        EXPECT_RC(ns_doc_parse((const uint8_t *)z, n, &out), NS_E_FORMAT, "NUL inside");
        free(z);
    }
    free(text);
    ns_doc_free(d);
}

static void test_parse_too_large(void **state)
{
    size_t n = (1u << 20) + 1;
    char *s = malloc(n);
    ns_secret_doc *d = NULL;
    (void)state;
    assert_non_null(s);
    memset(s, ' ', n);
    EXPECT_RC(ns_doc_parse((const uint8_t *)s, n, &d), NS_E_TOO_LARGE, "1 MiB + 1");
    assert_null(d);
    free(s);
}

/* ---- importing keys ---- */

static char *pem_of(EVP_PKEY *k, int traditional, const EVP_CIPHER *enc)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p = NULL, *s;
    long len;
    int ok;
    assert_non_null(b);
    if (traditional)
        ok = PEM_write_bio_PrivateKey_traditional(b, k, enc, enc ? (unsigned char *)"x" : NULL, enc ? 1 : 0,
                                                  NULL, NULL);
    else
        ok = PEM_write_bio_PKCS8PrivateKey(b, k, enc, enc ? "x" : NULL, enc ? 1 : 0, NULL, NULL);
    assert_int_equal(ok, 1);
    len = BIO_get_mem_data(b, &p);
    assert_true(len > 0);
    s = malloc((size_t)len + 1);
    assert_non_null(s);
    memcpy(s, p, (size_t)len);
    s[len] = '\0';
    BIO_free(b);
    return s;
}

/* Import `n` bytes as type `name`; expect `want`; on success the key must be `orig`. */
static void import(const char *name, const void *p, size_t n, EVP_PKEY *orig, int want, const char *what)
{
    const ns_keytype *t = type_of(name);
    ns_secret_key k;
    memset(&k, 0x5a, sizeof(k)); /* garbage: make_key must set every field, and clear them on failure */
    EXPECT_RC(ns_doc_make_key(t, p, n, 0, &k), want, what);
    if (want != 0) {
        assert_null(k.material); /* nothing left for the caller to free */
        return;
    }
    {
        EVP_PKEY *got = NULL;
        char tp[NS_KEY_ID_MAX];
        EXPECT_RC(ns_keytype_from_pkcs8(k.material->data, k.material->len, t, &got), 0, "from_pkcs8");
        assert_int_equal(EVP_PKEY_eq(got, orig), 1);
        EXPECT_RC(ns_keytype_thumbprint(orig, tp), 0, "thumbprint");
        assert_string_equal(k.id, tp);
        EVP_PKEY_free(got);
    }
    ns_secret_key_clear(&k);
}

static void test_import_formats(void **state)
{
    EVP_PKEY *p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ns_buf *der = NULL;
    char *pem;
    (void)state;
    assert_non_null(p256);
    assert_non_null(p384);
    assert_non_null(ed);
    assert_non_null(rsa);

    pem = pem_of(p256, 0, NULL);
    assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
    import("ecdsa-p256", pem, strlen(pem), p256, 0, "PEM PKCS#8 P-256");
    /* a PEM with text around it */
    {
        size_t n = strlen(pem) + 64;
        char *wrapped = malloc(n);
        assert_non_null(wrapped);
        snprintf(wrapped, n, "comment line\n%sanother line\n", pem);
        import("ecdsa-p256", wrapped, strlen(wrapped), p256, 0, "PEM with text around it");
        free(wrapped);
    }
    /* the wrong type for the requested type */
    import("ecdsa-p384", pem, strlen(pem), NULL, NS_E_INVAL, "P-256 PEM as ecdsa-p384");
    import("ed25519", pem, strlen(pem), NULL, NS_E_INVAL, "P-256 PEM as ed25519");
    import("rsa-2048", pem, strlen(pem), NULL, NS_E_INVAL, "P-256 PEM as rsa-2048");
    free(pem);

    pem = pem_of(p384, 1, NULL);
    assert_non_null(strstr(pem, "-----BEGIN EC PRIVATE KEY-----"));
    import("ecdsa-p384", pem, strlen(pem), p384, 0, "traditional EC PEM");
    import("ecdsa-p256", pem, strlen(pem), NULL, NS_E_INVAL, "traditional P-384 PEM as ecdsa-p256");
    free(pem);

    pem = pem_of(rsa, 1, NULL);
    assert_non_null(strstr(pem, "-----BEGIN RSA PRIVATE KEY-----"));
    import("rsa-2048", pem, strlen(pem), rsa, 0, "traditional RSA PEM");
    import("rsa-3072", pem, strlen(pem), NULL, NS_E_INVAL, "RSA-2048 PEM as rsa-3072");
    free(pem);

    EXPECT_RC(ns_keytype_to_pkcs8(ed, &der), 0, "to_pkcs8");
    import("ed25519", der->data, der->len, ed, 0, "PKCS#8 DER Ed25519");
    import("ecdsa-p256", der->data, der->len, NULL, NS_E_INVAL, "Ed25519 DER as ecdsa-p256");
    /* truncated DER, and DER with a trailing byte */
    import("ed25519", der->data, der->len - 1, NULL, NS_E_FORMAT, "truncated PKCS#8 DER");
    {
        uint8_t longer[256];
        assert_true(der->len < sizeof(longer));
        memcpy(longer, der->data, der->len);
        longer[der->len] = 0;
        import("ed25519", longer, der->len + 1, NULL, NS_E_FORMAT, "PKCS#8 DER and a trailing byte");
    }
    ns_buf_free(der);

    EVP_PKEY_free(p256);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(rsa);
}

static void test_import_refused(void **state)
{
    EVP_PKEY *p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    uint8_t garbage[500];
    char *pem;
    (void)state;
    assert_non_null(p256);
    assert_non_null(rsa1024);

    /* encrypted PEMs: PKCS#8 and traditional */
    pem = pem_of(p256, 0, EVP_aes_256_cbc());
    assert_non_null(strstr(pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    import("ecdsa-p256", pem, strlen(pem), NULL, NS_E_INVAL, "encrypted PKCS#8 PEM");
    free(pem);
    pem = pem_of(p256, 1, EVP_aes_256_cbc());
    assert_non_null(strstr(pem, "Proc-Type: 4,ENCRYPTED"));
    import("ecdsa-p256", pem, strlen(pem), NULL, NS_E_INVAL, "encrypted traditional PEM");
    free(pem);

    /* garbage: random bytes; a PEM header over garbage; a truncated PEM; nothing */
    fill_pattern(garbage, sizeof(garbage), 42);
    import("ecdsa-p256", garbage, sizeof(garbage), NULL, NS_E_FORMAT, "random bytes");
    import("ed25519", "hello", 5, NULL, NS_E_FORMAT, "text");
    {
        static const char bad[] =
            "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQoLDA0ODw==\n-----END PRIVATE KEY-----\n";
        import("ecdsa-p256", bad, strlen(bad), NULL, NS_E_INVAL, "PEM header over garbage");
    }
    pem = pem_of(p256, 0, NULL);
    import("ecdsa-p256", pem, strlen(pem) / 2, NULL, NS_E_INVAL, "truncated PEM");
    free(pem);

    /* RSA-1024: a key outside the table */
    pem = pem_of(rsa1024, 0, NULL);
    import("rsa-2048", pem, strlen(pem), NULL, NS_E_INVAL, "RSA-1024 PEM");
    {
        const ns_keytype *t = (const ns_keytype *)0x1;
        EXPECT_RC(ns_keytype_classify(rsa1024, &t), NS_E_INVAL, "classify RSA-1024");
        assert_ptr_equal(t, (const ns_keytype *)0x1);
    }
    free(pem);

    /* an empty input (a non-NULL pointer, 0 bytes) is no key: it must not mean "generate one" */
    import("ed25519", "", 0, NULL, NS_E_FORMAT, "empty input as ed25519");
    {
        ns_secret_key k;
        EXPECT_RC(ns_doc_make_key(type_of("random"), (const uint8_t *)"", 0, 32, &k), NS_E_INVAL,
                  "empty input as random");
        assert_null(k.material);
    }

    /* random: never imported; length 1..4096 */
    {
        ns_secret_key k;
        EXPECT_RC(ns_doc_make_key(type_of("random"), garbage, 32, 32, &k), NS_E_INVAL, "random --from");
        assert_null(k.material);
        EXPECT_RC(ns_doc_make_key(type_of("random"), NULL, 0, 0, &k), NS_E_INVAL, "random 0 bytes");
        assert_null(k.material);
        EXPECT_RC(ns_doc_make_key(type_of("random"), NULL, 0, NS_RANDOM_MAX + 1, &k), NS_E_INVAL,
                  "random 4097 bytes");
        assert_null(k.material);
    }
    /* opaque: 1 byte to 64 KiB, from a file */
    {
        ns_secret_key k;
        uint8_t *big = calloc(1, NS_OPAQUE_MAX + 1);
        assert_non_null(big);
        EXPECT_RC(ns_doc_make_key(type_of("opaque"), NULL, 0, 32, &k), NS_E_INVAL, "opaque without bytes");
        EXPECT_RC(ns_doc_make_key(type_of("opaque"), big, 0, 32, &k), NS_E_INVAL, "opaque of 0 bytes");
        EXPECT_RC(ns_doc_make_key(type_of("opaque"), big, NS_OPAQUE_MAX + 1, 32, &k), NS_E_INVAL,
                  "opaque of 64 KiB + 1");
        assert_null(k.material);
        EXPECT_RC(ns_doc_make_key(type_of("opaque"), big, NS_OPAQUE_MAX, 32, &k), 0, "opaque of 64 KiB");
        assert_int_equal(k.material->len, NS_OPAQUE_MAX);
        ns_secret_key_clear(&k);
        EXPECT_RC(ns_doc_make_key(type_of("opaque"), big, 1, 32, &k), 0, "opaque of 1 byte");
        ns_secret_key_clear(&k);
        free(big);
    }
    EVP_PKEY_free(p256);
    EVP_PKEY_free(rsa1024);
}

/* ns_keytype_from_pem: NS_E_NOT_FOUND when the text holds no PEM private-key block at all (keytype.h), e.g. a
 * JSON credentials file that carries a PEM key as an escaped string (a GCP service-account key: every
 * newline is the two characters '\' 'n', so there is no "-----BEGIN" line); NS_E_INVAL for a real block that
 * does not parse. */
static void test_from_pem_blocks(void **state)
{
    static const char json[] = "{\n"
                               "  \"type\": \"service_account\",\n"
                               "  \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMIGHAgEAMBMGByqGSM49\\n"
                               "-----END PRIVATE KEY-----\\n\",\n"
                               "  \"client_email\": \"sa@p\"\n"
                               "}\n";
    static const char bad_block[] =
        "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQoLDA0ODw==\n-----END PRIVATE KEY-----\n";
    EVP_PKEY *k = (EVP_PKEY *)0x1;
    (void)state;

    EXPECT_RC(ns_keytype_from_pem((const uint8_t *)"no pem here", 11, &k), NS_E_NOT_FOUND, "plain text");
    EXPECT_RC(ns_keytype_from_pem((const uint8_t *)bad_block, strlen(bad_block), &k), NS_E_INVAL,
              "a PEM block over garbage");
    assert_ptr_equal(k, (EVP_PKEY *)0x1);
    EXPECT_RC(ns_keytype_from_pem((const uint8_t *)json, strlen(json), &k), NS_E_NOT_FOUND,
              "JSON with an escaped PEM string");
    assert_ptr_equal(k, (EVP_PKEY *)0x1);
}

/* ---- export ---- */

static char *export_text(const ns_secret_doc *d, const char *format, size_t *len)
{
    ns_buf *b = NULL;
    char *s;
    EXPECT_RC(ns_export(d, format, &b), 0, format);
    assert_non_null(b);
    assert_true(b->secret);
    s = malloc(b->len + 1);
    assert_non_null(s);
    memcpy(s, b->data, b->len);
    s[b->len] = '\0';
    if (len)
        *len = b->len;
    ns_buf_free(b);
    return s;
}

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(s, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* The PEM blocks of s are exactly the keys of d (private or public), in document order. */
static void check_pem_blocks(const ns_secret_doc *d, const char *s, size_t nblocks, int public_only)
{
    BIO *b = BIO_new_mem_buf(s, (int)strlen(s));
    assert_non_null(b);
    assert_int_equal(count(s, "-----BEGIN "), nblocks);
    assert_int_equal(count(s, public_only ? "-----BEGIN PUBLIC KEY-----" : "-----BEGIN PRIVATE KEY-----"),
                     nblocks);
    for (size_t i = 0; i < nblocks; i++) {
        EVP_PKEY *want = NULL, *got;
        char tp[NS_KEY_ID_MAX];
        got = public_only ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL)
                          : PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        if (got == NULL)
            fail_msg("PEM block %zu does not parse", i);
        EXPECT_RC(ns_doc_key_pkey(d, i, &want), 0, "key_pkey");
        assert_int_equal(EVP_PKEY_eq(got, want), 1);
        EXPECT_RC(ns_keytype_thumbprint(got, tp), 0, "thumbprint");
        assert_string_equal(tp, d->keys[i].id);
        EVP_PKEY_free(got);
        EVP_PKEY_free(want);
    }
    BIO_free(b);
    ERR_clear_error();
}

static void check_jwks(const ns_secret_doc *d, const char *s, const char *kty, const char *crv,
                       const char *alg)
{
    json_error_t e;
    json_t *root = json_loads(s, JSON_REJECT_DUPLICATES, &e), *keys;
    if (root == NULL)
        fail_msg("jwks is not JSON: %s", e.text);
    assert_int_equal(json_object_size(root), 1);
    keys = json_object_get(root, "keys");
    assert_true(json_is_array(keys));
    assert_int_equal(json_array_size(keys), d->n);
    for (size_t i = 0; i < d->n; i++) {
        json_t *k = json_array_get(keys, i);
        EVP_PKEY *pk = NULL;
        char canon[2048], tp[64];
        assert_string_equal(json_string_value(json_object_get(k, "kid")), d->keys[i].id);
        assert_string_equal(json_string_value(json_object_get(k, "kty")), kty);
        assert_string_equal(json_string_value(json_object_get(k, "alg")), alg);
        assert_string_equal(json_string_value(json_object_get(k, "use")), "sig");
        if (crv != NULL)
            assert_string_equal(json_string_value(json_object_get(k, "crv")), crv);
        else
            assert_null(json_object_get(k, "crv"));
        /* public members only */
        assert_null(json_object_get(k, "d"));
        assert_null(json_object_get(k, "p"));
        assert_null(json_object_get(k, "q"));
        /* the JWK members are the public key's, and the kid is their thumbprint */
        EXPECT_RC(ns_doc_key_pkey(d, i, &pk), 0, "key_pkey");
        canonical_jwk(pk, canon, sizeof(canon));
        thumb_of(canon, tp);
        assert_string_equal(tp, d->keys[i].id);
        if (strcmp(kty, "RSA") == 0) {
            char want[2048];
            snprintf(want, sizeof(want), "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}",
                     json_string_value(json_object_get(k, "e")), json_string_value(json_object_get(k, "n")));
            assert_string_equal(want, canon);
            assert_int_equal(json_object_size(k), 6);
        } else if (strcmp(kty, "EC") == 0) {
            char want[2048];
            snprintf(want, sizeof(want), "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", crv,
                     json_string_value(json_object_get(k, "x")), json_string_value(json_object_get(k, "y")));
            assert_string_equal(want, canon);
            assert_int_equal(json_object_size(k), 7);
        } else {
            char want[2048];
            snprintf(want, sizeof(want), "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}",
                     json_string_value(json_object_get(k, "x")));
            assert_string_equal(want, canon);
            assert_int_equal(json_object_size(k), 6);
        }
        EVP_PKEY_free(pk);
    }
    json_decref(root);
}

static void test_export_keypair(void **state)
{
    static const struct {
        const char *type, *kty, *crv, *alg;
    } cases[] = {
        {"ecdsa-p256", "EC", "P-256", "ES256"},
        {"ecdsa-p384", "EC", "P-384", "ES384"},
        {"ed25519", "OKP", "Ed25519", "EdDSA"},
        {"rsa-2048", "RSA", NULL, "RS256"},
    };
    (void)state;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        ns_secret_doc *d = build(cases[c].type, 3, 1); /* [current, pending, previous] */
        char *s;
        ns_buf *b = (ns_buf *)0x1;

        s = export_text(d, "pem-bundle", NULL);
        check_pem_blocks(d, s, 3, 0);
        free(s);
        s = export_text(d, "pem", NULL);
        check_pem_blocks(d, s, 1, 0);
        free(s);
        s = export_text(d, "public-pem-bundle", NULL);
        check_pem_blocks(d, s, 3, 1);
        assert_null(strstr(s, "PRIVATE"));
        free(s);
        s = export_text(d, "jwks", NULL);
        check_jwks(d, s, cases[c].kty, cases[c].crv, cases[c].alg);
        free(s);

        EXPECT_RC(ns_export(d, "raw", &b), NS_E_USAGE, "raw of a key pair");
        assert_ptr_equal(b, (ns_buf *)0x1);
        EXPECT_RC(ns_export(d, "PEM", &b), NS_E_USAGE, "PEM in upper case");
        EXPECT_RC(ns_export(d, "der", &b), NS_E_USAGE, "unknown format");
        EXPECT_RC(ns_export(d, "", &b), NS_E_USAGE, "empty format");
        EXPECT_RC(ns_export(d, "pem-bundle ", &b), NS_E_USAGE, "format with a space");
        assert_ptr_equal(b, (ns_buf *)0x1);
        ns_doc_free(d);
    }
}

static void test_export_random_opaque(void **state)
{
    static const char *const not_raw[] = {"pem-bundle", "pem", "public-pem-bundle", "jwks", "bogus"};
    (void)state;
    for (int opaque = 0; opaque <= 1; opaque++) {
        ns_secret_doc *d = build(opaque ? "opaque" : "random", 3, 0);
        size_t len = 0;
        char *s = export_text(d, "raw", &len);
        ns_buf *b = (ns_buf *)0x1;

        assert_int_equal(len, d->keys[0].material->len);
        assert_memory_equal(s, d->keys[0].material->data, len);
        if (opaque) {
            /* keys[0] is the newest: made by build() with seed 3 */
            uint8_t want[256];
            size_t n = opaque_bytes(3, want);
            assert_int_equal(len, n);
            assert_memory_equal(s, want, n);
        } else {
            assert_int_equal(len, 48);
        }
        free(s);
        for (size_t i = 0; i < sizeof(not_raw) / sizeof(not_raw[0]); i++)
            EXPECT_RC(ns_export(d, not_raw[i], &b), NS_E_USAGE, not_raw[i]);
        assert_ptr_equal(b, (ns_buf *)0x1);
        ns_doc_free(d);
    }
}

/* ns_keytype_jwks(), the one JWK Set builder (export and the issuer's /jwks): exact text, order, secrecy. */
static void test_jwks_builder(void **state)
{
    EVP_PKEY *k = NULL;
    ns_buf *b = NULL;
    json_t *root;
    ns_jwks_key keys[2];

    (void)state;
    assert_int_equal(ns_keytype_jwks(NULL, 0, false, &b), 0);
    assert_int_equal(b->len, strlen("{\n  \"keys\": []\n}\n"));
    assert_memory_equal(b->data, "{\n  \"keys\": []\n}\n", b->len);
    assert_false(b->secret);
    ns_buf_free(b);

    assert_int_equal(ns_keytype_generate(ns_keytype_find("ed25519"), &k), 0);
    keys[0] = (ns_jwks_key){k, "first", "EdDSA"};
    keys[1] = (ns_jwks_key){k, "second", "EdDSA"};
    assert_int_equal(ns_keytype_jwks(keys, 2, true, &b), 0);
    assert_true(b->secret);
    assert_int_equal(b->data[b->len - 1], '\n');
    assert_non_null(root = json_loadb((const char *)b->data, b->len, 0, NULL));
    assert_int_equal(json_array_size(json_object_get(root, "keys")), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(root, "keys"), 1), "kid")),
        "second");
    assert_null(json_object_get(json_array_get(json_object_get(root, "keys"), 0), "d")); /* public only */
    json_decref(root);
    ns_buf_free(b);
    EVP_PKEY_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_make_key_material),
        cmocka_unit_test(test_time_format_parse),
        cmocka_unit_test(test_thumbprint_rfc8037),
        cmocka_unit_test(test_thumbprint_independent),
        cmocka_unit_test(test_lifecycle_orders),
        cmocka_unit_test(test_rotate_refused_pending_exists),
        cmocka_unit_test(test_promote_refused_no_pending),
        cmocka_unit_test(test_retire_refused_only_key),
        cmocka_unit_test(test_retire_refused_pending_oldest),
        cmocka_unit_test(test_rotate_refused_full),
        cmocka_unit_test(test_rotate_refused_duplicate_id),
        cmocka_unit_test(test_parse_unknown_members),
        cmocka_unit_test(test_parse_missing_members),
        cmocka_unit_test(test_parse_wrong_values),
        cmocka_unit_test(test_parse_pkcs8_of_another_type),
        cmocka_unit_test(test_parse_random_values),
        cmocka_unit_test(test_parse_duplicate_keypair),
        cmocka_unit_test(test_parse_key_count),
        cmocka_unit_test(test_parse_not_json),
        cmocka_unit_test(test_parse_too_large),
        cmocka_unit_test(test_import_formats),
        cmocka_unit_test(test_import_refused),
        cmocka_unit_test(test_from_pem_blocks),
        cmocka_unit_test(test_export_keypair),
        cmocka_unit_test(test_jwks_builder),
        cmocka_unit_test(test_export_random_opaque),
    };

    if (ns_secmem_init() != 0)
        fprintf(stderr, "# secure heap unavailable; continuing with ordinary memory\n");
    ns_json_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
