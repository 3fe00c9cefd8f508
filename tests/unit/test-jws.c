/* Unit tests for src/jwt/{jws,nonce,ledger}.c and the strict base64url decoder (doc/nonces.md).
 *
 * With software Ed25519 and P-256 keys in one key set: issue/verify round trips; every rejection with its
 * exact code — tampered header, payload and signature (NS_E_INTEGRITY), alg swapped between the key types
 * (NS_E_INTEGRITY), alg none/HS256/unknown (NS_E_FORMAT), non-canonical base64url, missing/extra segments,
 * oversize (NS_E_TOO_LARGE), duplicate members in header and payload, forbidden header members (crit, jku,
 * jwk, x5u), unknown kid (NS_E_KEY_UNKNOWN), missing/extra/mistyped claims (NS_E_CLAIMS), exp and nbf at the
 * edges of the leeway (NS_E_EXPIRED), wrong cluster/issuer/kind (NS_E_CLAIMS); the ECDSA twin signature
 * (r, n - s) verifies but gives the same ledger key; request validation; and the ledger: replay in the same
 * and in a second ledger sharing the store (a standby server), file modes, pruning, undo on storage
 * failure. */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/sha.h>

#include "common/buf.h"
#include "common/codec.h"
#include "common/err.h"
#include "common/json.h"
#include "common/log.h"
#include "settings/settings.h"
#include "jwt/jws.h"
#include "jwt/ledger.h"
#include "jwt/nonce.h"
#include "secrets/keytype.h"
#include "sign/keyset.h"
#include "sign/signer.h"
#include "store/store.h"

#define EXPECT_RC(expr, want, what)                                                                          \
    do {                                                                                                     \
        int r_ = (expr);                                                                                     \
        if (r_ != (want))                                                                                    \
            fail_msg("%s: got %d (%s), want %d (%s)", (what), r_, ns_strerror(r_), (int)(want),              \
                     ns_strerror(want));                                                                     \
    } while (0)

#define NOW 2000000000LL

static ns_keyset *keys;  /* [0] Ed25519, [1] P-256 */
static ns_keyset *other; /* a P-256 key that is not in `keys` */
static ns_config *cfg;

static ns_signer *soft(const char *type)
{
    EVP_PKEY *pk = NULL;
    ns_signer *s = NULL;
    assert_int_equal(ns_keytype_generate(ns_keytype_find(type), &pk), 0);
    assert_int_equal(ns_signer_soft_new(pk, &s), 0);
    EVP_PKEY_free(pk);
    return s;
}

static ns_keyset *keyset(size_t n, ns_signer **s)
{
    ns_keyset *ks = calloc(1, sizeof(*ks));
    assert_non_null(ks);
    ks->s = calloc(n, sizeof(*ks->s));
    assert_non_null(ks->s);
    for (size_t i = 0; i < n; i++)
        ks->s[i] = s[i];
    ks->n = n;
    ks->origin = strdup("test keys");
    return ks;
}

static int setup(void **state)
{
    static const char yaml[] = "cluster_id: c1\nstorage: {backend: file, path: /nonexistent}\n";
    ns_signer *s[2];

    (void)state;
    ns_json_init();
    ns_log_set_level(NS_LOG_ERROR);
    s[0] = soft("ed25519");
    s[1] = soft("ecdsa-p256");
    keys = keyset(2, s);
    s[0] = soft("ecdsa-p256");
    other = keyset(1, s);
    assert_int_equal(ns_config_parse(yaml, sizeof(yaml) - 1, "<test>", NULL, &cfg), 0);
    assert_int_equal(cfg->nonce.leeway, 60);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ns_keyset_free(keys);
    ns_keyset_free(other);
    ns_config_free(cfg);
    return 0;
}

/* ---- crafting tokens ---- */

static char *b64u(const void *p, size_t n)
{
    char *s = NULL;
    assert_int_equal(ns_b64url_encode(p, n, &s), 0);
    return s;
}

static char *cat3(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 3;
    char *s = malloc(n);
    assert_non_null(s);
    snprintf(s, n, "%s.%s%s%s", a, b, c[0] != '\0' ? "." : "", c);
    return s;
}

/* b64u(header).b64u(payload).b64u(signature by s over that), header and payload as given. */
static char *craft(ns_signer *s, const char *header, const char *payload)
{
    char *h = b64u(header, strlen(header)), *p = b64u(payload, strlen(payload)), *in = cat3(h, p, ""), *sig,
         *out;
    ns_buf *raw = NULL;

    assert_int_equal(ns_signer_sign(s, NS_SIG_RAW, (const uint8_t *)in, strlen(in), &raw), 0);
    sig = b64u(raw->data, raw->len);
    out = cat3(h, p, sig);
    ns_buf_free(raw);
    free(h);
    free(p);
    free(in);
    free(sig);
    return out;
}

static char *header_for(ns_signer *s, const char *alg)
{
    char *h = malloc(256);
    assert_non_null(h);
    snprintf(h, 256, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg ? alg : s->type->jws_alg, s->id);
    return h;
}

/* A valid claims set at time t, as a JSON object (caller decrefs). */
static json_t *claims_at(int64_t t)
{
    json_t *c = json_pack("{s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "sub", "vm-1", "iat",
                          (json_int_t)t, "nbf", (json_int_t)t, "exp", (json_int_t)(t + 300), "iss",
                          "nstance-secrets/c1", "jti", "AAAAAAAAAAAAAAAAAAAAAA", "kind", "agent",
                          "cluster_id", "c1", "tenant", "acme", "shard", "default", "on_demand", 0);
    assert_non_null(c);
    return c;
}

static char *dump(const json_t *c)
{
    char *t = json_dumps(c, JSON_COMPACT | JSON_PRESERVE_ORDER), *s = strdup(t);
    ns_json_free(t);
    return s;
}

/* A token over claims c, signed by s with its own header. */
static char *token(ns_signer *s, const json_t *c)
{
    char *h = header_for(s, NULL), *p = dump(c), *t = craft(s, h, p);
    free(h);
    free(p);
    return t;
}

static int verify_at(const char *t, enum ns_nonce_kind kind, int64_t now)
{
    ns_nonce *nc = NULL;
    int r = ns_nonce_verify(cfg, keys, t, strlen(t), kind, now, &nc);
    if (r == 0)
        assert_non_null(nc);
    else
        assert_null(nc);
    ns_nonce_free(nc);
    return r;
}

static int verify(const char *t)
{
    return verify_at(t, NS_NONCE_ANY, NOW);
}

/* Segment i (0..2) of t as a new string. */
static char *segment(const char *t, int i)
{
    const char *p = t, *e;
    for (int k = 0; k < i; k++)
        p = strchr(p, '.') + 1;
    e = strchr(p, '.');
    return strndup(p, e ? (size_t)(e - p) : strlen(p));
}

/* ---- tests ---- */

static void test_b64url_strict(void **state)
{
    static const struct {
        const char *in;
        int ok;
        size_t len;
    } cases[] = {
        {"", 1, 0},       {"AA", 1, 1},     {"AAA", 1, 2},     {"AAAA", 1, 3},    {"_-8", 1, 2},
        {"A", 0, 0},      {"AB", 0, 0},     {"AAB", 0, 0},     {"AA==", 0, 0},    {"AA=", 0, 0},
        {"A+A", 0, 0},    {"A/A", 0, 0},    {"AA A", 0, 0},    {"AA\n", 0, 0},    {"AAAAA", 0, 0},
        {"Zm9vYg", 1, 4}, {"Zm9vYh", 0, 0}, {"Zm9vYmE", 1, 5}, {"Zm9vYmF", 0, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ns_buf *b = NULL;
        int r = ns_b64url_decode(cases[i].in, strlen(cases[i].in), false, &b);
        if (cases[i].ok) {
            EXPECT_RC(r, 0, cases[i].in);
            assert_int_equal(b->len, cases[i].len);
        } else {
            EXPECT_RC(r, NS_E_FORMAT, cases[i].in);
            assert_null(b);
        }
        ns_buf_free(b);
    }
    {
        ns_buf *b = NULL;
        char *e = b64u("foobar!", 7);
        assert_int_equal(ns_b64url_decode(e, strlen(e), false, &b), 0);
        assert_memory_equal(b->data, "foobar!", 7);
        ns_buf_free(b);
        free(e);
    }
}

static void test_issue_verify(void **state)
{
    ns_nonce_req q = {NS_NONCE_AGENT, "vm-1", "acme", NULL, "g1", "0123456789abcdef", true, 0};
    ns_nonce *nc = NULL;
    char *t = NULL, *h, *in;
    json_t *hdr;
    uint8_t want[32];

    (void)state;
    for (size_t k = 0; k < 2; k++) {
        ns_keyset one = {&keys->s[k], 1, "first"};
        EXPECT_RC(ns_nonce_issue(cfg, &one, &q, NOW, &t), 0, "issue");
        EXPECT_RC(ns_nonce_verify(cfg, keys, t, strlen(t), NS_NONCE_AGENT, NOW + 10, &nc), 0, "verify");
        assert_string_equal(json_string_value(json_object_get(nc->claims, "sub")), "vm-1");
        assert_string_equal(json_string_value(json_object_get(nc->claims, "shard")), "default");
        assert_string_equal(json_string_value(json_object_get(nc->claims, "group")), "g1");
        assert_string_equal(json_string_value(json_object_get(nc->claims, "iss")), "nstance-secrets/c1");
        assert_true(json_is_true(json_object_get(nc->claims, "on_demand")));
        assert_int_equal(json_integer_value(json_object_get(nc->claims, "exp")), NOW + 300); /* agent_ttl */
        assert_int_equal(nc->exp, NOW + 300);
        assert_string_equal(nc->kid, keys->s[k]->id);
        /* header: exactly alg, typ, kid of the signing key */
        h = segment(t, 0);
        {
            ns_buf *b = NULL;
            assert_int_equal(ns_b64url_decode(h, strlen(h), false, &b), 0);
            hdr = json_loadb((const char *)b->data, b->len, 0, NULL);
            ns_buf_free(b);
        }
        assert_int_equal(json_object_size(hdr), 3);
        assert_string_equal(json_string_value(json_object_get(hdr, "alg")), keys->s[k]->type->jws_alg);
        assert_string_equal(json_string_value(json_object_get(hdr, "kid")), keys->s[k]->id);
        json_decref(hdr);
        /* the ledger key is SHA-256 of header.payload */
        in = strndup(t, (size_t)(strrchr(t, '.') - t));
        SHA256((const uint8_t *)in, strlen(in), want);
        assert_memory_equal(nc->ledger_key, want, 32);
        free(in);
        free(h);
        ns_nonce_free(nc);
        nc = NULL;
        free(t);
        t = NULL;
    }
    /* operator: operator_ttl; explicit ttl; two issues differ in jti */
    q.kind = NS_NONCE_OPERATOR;
    q.group = q.config_hash = NULL;
    EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), 0, "issue operator");
    EXPECT_RC(ns_nonce_verify(cfg, keys, t, strlen(t), NS_NONCE_OPERATOR, NOW, &nc), 0, "verify operator");
    assert_int_equal(nc->exp, NOW + 3 * 3600);
    assert_null(json_object_get(nc->claims, "group"));
    assert_null(json_object_get(nc->claims, "config_hash"));
    EXPECT_RC(verify_at(t, NS_NONCE_AGENT, NOW), NS_E_CLAIMS, "operator nonce as agent");
    ns_nonce_free(nc);
    free(t);
    {
        char *a = NULL, *b = NULL;
        q.ttl = 1;
        EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &a), 0, "issue a");
        EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &b), 0, "issue b");
        assert_string_not_equal(a, b);
        EXPECT_RC(verify_at(a, NS_NONCE_ANY, NOW + 1 + 60 - 1), 0, "ttl 1s within leeway");
        EXPECT_RC(verify_at(a, NS_NONCE_ANY, NOW + 1 + 60), NS_E_EXPIRED, "ttl 1s past leeway");
        free(a);
        free(b);
    }
}

/* The issuer is the one free-text claim: quotes, backslashes and UTF-8 survive the round trip. */
static void test_issuer_escaped(void **state)
{
    static const char odd[] = "a \"quoted\" \\ issuer \xc3\xa9";
    char *saved = cfg->nonce.issuer, *t = NULL;
    ns_nonce_req q = {NS_NONCE_AGENT, "vm-1", "acme", NULL, NULL, NULL, false, 0};
    ns_nonce *nc = NULL;

    (void)state;
    cfg->nonce.issuer = (char *)odd;
    EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), 0, "issue");
    EXPECT_RC(ns_nonce_verify(cfg, keys, t, strlen(t), NS_NONCE_ANY, NOW, &nc), 0, "verify");
    assert_string_equal(json_string_value(json_object_get(nc->claims, "iss")), odd);
    ns_nonce_free(nc);
    free(t);
    cfg->nonce.issuer = saved;
}

static void test_issue_refused(void **state)
{
    static const char *const bad_names[] = {"", "-x", ".x", "a/b", "a b", "../x", "é", "x\n"};
    char long_name[130], *t = NULL;
    ns_nonce_req q = {NS_NONCE_AGENT, "vm-1", "acme", NULL, NULL, NULL, false, 0};

    (void)state;
    memset(long_name, 'a', 129);
    long_name[129] = '\0';
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        q.sub = bad_names[i];
        EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), NS_E_INVAL, bad_names[i]);
        q.sub = "vm-1";
        q.tenant = bad_names[i];
        EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), NS_E_INVAL, bad_names[i]);
        q.tenant = "acme";
        q.group = bad_names[i];
        EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), NS_E_INVAL, bad_names[i]);
        q.group = NULL;
        q.shard = bad_names[i];
        EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), NS_E_INVAL, bad_names[i]);
        q.shard = NULL;
    }
    q.sub = long_name;
    EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), NS_E_INVAL, "129 characters");
    long_name[128] = '\0';
    EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), 0, "128 characters");
    free(t);
    t = NULL;
    q.sub = "vm-1";
    q.config_hash = "DEADBEEF00";
    EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), NS_E_INVAL, "upper-case hash");
    q.config_hash = "abc";
    EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), NS_E_INVAL, "short hash");
    q.config_hash = NULL;
    q.ttl = NS_NONCE_TTL_MAX + 1;
    EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), NS_E_INVAL, "ttl");
    q.ttl = 0;
    q.kind = NS_NONCE_ANY;
    EXPECT_RC(ns_nonce_issue(cfg, keys, &q, NOW, &t), NS_E_INVAL, "kind");
    assert_null(t);
}

static void test_tampered(void **state)
{
    json_t *c = claims_at(NOW);
    char *t, *h, *p, *s, *x, *y;

    (void)state;
    for (size_t k = 0; k < 2; k++) {
        ns_signer *key = keys->s[k];
        t = token(key, c);
        EXPECT_RC(verify(t), 0, "untouched");
        h = segment(t, 0);
        p = segment(t, 1);
        s = segment(t, 2);

        /* header: same members, other order: valid JSON, but not what was signed */
        {
            char hdr[256];
            snprintf(hdr, sizeof(hdr), "{\"kid\":\"%s\",\"typ\":\"JWT\",\"alg\":\"%s\"}", key->id,
                     key->type->jws_alg);
            x = b64u(hdr, strlen(hdr));
            y = cat3(x, p, s);
            EXPECT_RC(verify(y), NS_E_INTEGRITY, "tampered header");
            free(x);
            free(y);
        }
        /* payload: sub changed */
        {
            json_t *c2 = json_deep_copy(c);
            char *d;
            json_object_set_new(c2, "sub", json_string("vm-2"));
            d = dump(c2);
            x = b64u(d, strlen(d));
            y = cat3(h, x, s);
            EXPECT_RC(verify(y), NS_E_INTEGRITY, "tampered payload");
            free(d);
            free(x);
            free(y);
            json_decref(c2);
        }
        /* signature: each bit of the first and last byte */
        {
            ns_buf *sig = NULL;
            assert_int_equal(ns_b64url_decode(s, strlen(s), false, &sig), 0);
            for (int bit = 0; bit < 16; bit++) {
                size_t at = bit < 8 ? 0 : sig->len - 1;
                sig->data[at] ^= (uint8_t)(1u << (bit % 8));
                x = b64u(sig->data, sig->len);
                y = cat3(h, p, x);
                EXPECT_RC(verify(y), NS_E_INTEGRITY, "tampered signature");
                free(x);
                free(y);
                sig->data[at] ^= (uint8_t)(1u << (bit % 8));
            }
            /* truncated and extended signatures */
            x = b64u(sig->data, sig->len - 1);
            y = cat3(h, p, x);
            EXPECT_RC(verify(y), NS_E_INTEGRITY, "short signature");
            free(x);
            free(y);
            ns_buf_free(sig);
        }
        /* another key's signature over the same input, with this key's kid */
        {
            char *hh = header_for(key, NULL), *pp = dump(c);
            ns_signer *o = k == 0 ? keys->s[1] : other->s[0];
            x = craft(o, hh, pp);
            EXPECT_RC(verify(x), NS_E_INTEGRITY, "other key's signature");
            free(x);
            free(hh);
            free(pp);
        }
        free(h);
        free(p);
        free(s);
        free(t);
    }
    json_decref(c);
}

static void test_alg(void **state)
{
    json_t *c = claims_at(NOW);
    char *p = dump(c), *h, *t;
    ns_signer *ed = keys->s[0], *ec = keys->s[1];

    (void)state;
    /* alg of the other key type, signed by the key: algorithm confusion refused */
    h = header_for(ec, "EdDSA");
    t = craft(ec, h, p);
    EXPECT_RC(verify(t), NS_E_INTEGRITY, "ES256 key, alg EdDSA");
    free(h);
    free(t);
    h = header_for(ed, "ES256");
    t = craft(ed, h, p);
    EXPECT_RC(verify(t), NS_E_INTEGRITY, "EdDSA key, alg ES256");
    free(h);
    free(t);
    h = header_for(ec, "ES384");
    t = craft(ec, h, p);
    EXPECT_RC(verify(t), NS_E_INTEGRITY, "ES256 key, alg ES384");
    free(h);
    free(t);
    /* algorithms never accepted */
    static const char *const never[] = {"none", "HS256", "HS512", "PS256", "RS512", "es256", "", "EdDSA "};
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++) {
        h = header_for(ec, never[i]);
        t = craft(ec, h, p);
        EXPECT_RC(verify(t), NS_E_FORMAT, never[i]);
        free(t);
        /* "none" with the empty signature */
        {
            char *hb = b64u(h, strlen(h)), *pb = b64u(p, strlen(p)), *u = cat3(hb, pb, ""), *v;
            size_t n = strlen(u) + 2;
            v = malloc(n);
            snprintf(v, n, "%s.", u);
            EXPECT_RC(verify(v), NS_E_FORMAT, "unsigned");
            free(hb);
            free(pb);
            free(u);
            free(v);
        }
        free(h);
    }
    free(p);
    json_decref(c);
}

static void test_structure(void **state)
{
    json_t *c = claims_at(NOW);
    ns_signer *ec = keys->s[1];
    char *t = token(ec, c), *h = segment(t, 0), *p = segment(t, 1), *s = segment(t, 2), *x,
         buf[NS_JWS_MAX + 64];

    (void)state;
    EXPECT_RC(verify(t), 0, "untouched");
    /* segments */
    snprintf(buf, sizeof(buf), "%s.%s", h, p);
    EXPECT_RC(verify(buf), NS_E_FORMAT, "two segments");
    snprintf(buf, sizeof(buf), "%s.%s.%s.%s", h, p, s, s);
    EXPECT_RC(verify(buf), NS_E_FORMAT, "four segments");
    snprintf(buf, sizeof(buf), "%s.%s.%s.%s.%s", h, p, s, s, s);
    EXPECT_RC(verify(buf), NS_E_FORMAT, "five segments (JWE)");
    snprintf(buf, sizeof(buf), "%s.%s.%s.", h, p, s);
    EXPECT_RC(verify(buf), NS_E_FORMAT, "trailing dot");
    snprintf(buf, sizeof(buf), "%s..%s", h, s);
    EXPECT_RC(verify(buf), NS_E_FORMAT, "empty payload");
    snprintf(buf, sizeof(buf), ".%s.%s", p, s);
    EXPECT_RC(verify(buf), NS_E_FORMAT, "empty header");
    EXPECT_RC(verify(""), NS_E_FORMAT, "empty");
    EXPECT_RC(verify(".."), NS_E_FORMAT, "dots");
    /* non-canonical base64url */
    snprintf(buf, sizeof(buf), "%s.%s.%s=", h, p, s);
    EXPECT_RC(verify(buf), NS_E_FORMAT, "padded signature");
    snprintf(buf, sizeof(buf), "%s.%s.%s\n", h, p, s);
    EXPECT_RC(verify(buf), NS_E_FORMAT, "newline");
    snprintf(buf, sizeof(buf), " %s.%s.%s", h, p, s);
    EXPECT_RC(verify(buf), NS_E_FORMAT, "leading space");
    {
        /* the signature's last character with a non-zero unused bit (64 bytes = 86 chars, 2 spare bits) */
        size_t n = strlen(s);
        x = strdup(s);
        assert_int_equal(n, 86);
        x[n - 1] = x[n - 1] == 'A' ? 'B' : x[n - 1] == 'B' ? 'A' : (char)(x[n - 1] ^ 1);
        snprintf(buf, sizeof(buf), "%s.%s.%s", h, p, x);
        EXPECT_RC(verify(buf), NS_E_FORMAT, "non-zero trailing bits");
        free(x);
        /* '+' and '/' */
        x = strdup(s);
        x[3] = '+';
        snprintf(buf, sizeof(buf), "%s.%s.%s", h, p, x);
        EXPECT_RC(verify(buf), NS_E_FORMAT, "'+'");
        x[3] = '/';
        snprintf(buf, sizeof(buf), "%s.%s.%s", h, p, x);
        EXPECT_RC(verify(buf), NS_E_FORMAT, "'/'");
        free(x);
    }
    /* oversize: NS_JWS_MAX + 1 bytes, and exactly NS_JWS_MAX parses up to the signature */
    memset(buf, 'A', NS_JWS_MAX + 1);
    buf[NS_JWS_MAX + 1] = '\0';
    EXPECT_RC(verify(buf), NS_E_TOO_LARGE, "oversize");
    {
        ns_jws *j = NULL;
        EXPECT_RC(ns_jws_parse(buf, NS_JWS_MAX + 1, &j), NS_E_TOO_LARGE, "parse oversize");
        assert_null(j);
    }
    free(h);
    free(p);
    free(s);
    free(t);
    json_decref(c);
}

static void test_header_payload_json(void **state)
{
    ns_signer *ec = keys->s[1];
    json_t *c = claims_at(NOW);
    char *p = dump(c), *t, hdr[512];
    static const char *const extra[] = {"crit", "jku", "x5u", "jwk", "x5c", "cty", "b64", "zip"};

    (void)state;
    /* duplicate members in the header */
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\",\"kid\":\"%s\"}", ec->id,
             ec->id);
    t = craft(ec, hdr, p);
    EXPECT_RC(verify(t), NS_E_FORMAT, "duplicate kid");
    free(t);
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"%s\"}", ec->id);
    t = craft(ec, hdr, p);
    EXPECT_RC(verify(t), NS_E_FORMAT, "duplicate alg");
    free(t);
    /* forbidden and unknown members */
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\",\"%s\":[\"exp\"]}",
                 ec->id, extra[i]);
        t = craft(ec, hdr, p);
        EXPECT_RC(verify(t), NS_E_FORMAT, extra[i]);
        free(t);
    }
    /* missing / mistyped members, typ, not an object, not JSON */
    static const char *const bad_hdr[] = {
        "{\"alg\":\"ES256\",\"typ\":\"JWT\"}",
        "{\"alg\":\"ES256\",\"kid\":\"%s\"}",
        "{\"alg\":\"ES256\",\"typ\":\"JWS\",\"kid\":\"%s\"}",
        "{\"alg\":\"ES256\",\"typ\":\"jwt\",\"kid\":\"%s\"}",
        "{\"alg\":[\"ES256\"],\"typ\":\"JWT\",\"kid\":\"%s\"}",
        "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":1}",
        "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"\"}",
        "[\"ES256\",\"JWT\",\"%s\"]",
        "\"ES256\"",
        "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"",
        "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"} x",
    };
    for (size_t i = 0; i < sizeof(bad_hdr) / sizeof(bad_hdr[0]); i++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(hdr, sizeof(hdr), bad_hdr[i], ec->id);
#pragma GCC diagnostic pop
        t = craft(ec, hdr, p);
        EXPECT_RC(verify(t), NS_E_FORMAT, bad_hdr[i]);
        free(t);
    }
    /* payload: duplicate claims, not an object, not JSON */
    {
        char *hh = header_for(ec, NULL), pl[1024];
        size_t n = strlen(p);
        snprintf(pl, sizeof(pl), "%.*s,\"sub\":\"vm-2\"}", (int)(n - 1), p);
        t = craft(ec, hh, pl);
        EXPECT_RC(verify(t), NS_E_FORMAT, "duplicate sub");
        free(t);
        t = craft(ec, hh, "[1,2]");
        EXPECT_RC(verify(t), NS_E_FORMAT, "array payload");
        free(t);
        t = craft(ec, hh, "{\"sub\":");
        EXPECT_RC(verify(t), NS_E_FORMAT, "truncated payload");
        free(t);
        free(hh);
    }
    free(p);
    json_decref(c);
}

static void test_kid(void **state)
{
    json_t *c = claims_at(NOW);
    char *t = token(other->s[0], c);

    (void)state;
    EXPECT_RC(verify(t), NS_E_KEY_UNKNOWN, "kid of a key outside the set");
    free(t);
    /* kid of a key in the set, signed by the outsider: INTEGRITY */
    {
        char *h = header_for(keys->s[1], NULL), *p = dump(c);
        t = craft(other->s[0], h, p);
        EXPECT_RC(verify(t), NS_E_INTEGRITY, "signed by the outsider with our kid");
        free(t);
        free(h);
        free(p);
    }
    json_decref(c);
}

/* Claims: each required one removed; wrong types; extra; bad values. All NS_E_CLAIMS. */
static void test_claims(void **state)
{
    static const char *const required[] = {"sub",  "iat",        "nbf",    "exp",   "iss",      "jti",
                                           "kind", "cluster_id", "tenant", "shard", "on_demand"};
    ns_signer *ed = keys->s[0];
    char *t;

    (void)state;
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        json_t *c = claims_at(NOW);
        json_object_del(c, required[i]);
        t = token(ed, c);
        EXPECT_RC(verify(t), NS_E_CLAIMS, required[i]);
        free(t);
        /* wrong JSON type */
        json_decref(c);
        c = claims_at(NOW);
        json_object_set_new(c, required[i],
                            json_is_string(json_object_get(c, required[i])) ? json_integer(1)
                                                                            : json_string("1"));
        t = token(ed, c);
        EXPECT_RC(verify(t), NS_E_CLAIMS, required[i]);
        free(t);
        json_decref(c);
    }
    struct {
        const char *name, *json;
    } bad[] = {
        {"exp", "2000000300.0"},
        {"exp", "-1"},
        {"iat", "true"},
        {"on_demand", "1"},
        {"group", "\"-g\""},
        {"group", "1"},
        {"config_hash", "\"XYZ\""},
        {"config_hash", "\"abc\""},
        {"sub", "\"a/b\""},
        {"tenant", "\"\""},
        {"jti", "\"short\""},
        {"jti", "\"AAAAAAAAAAAAAAAAAAAAAB\""},
        {"aud", "\"x\""},
        {"kind", "\"root\""},
        {"iss", "\"someone\""},
        {"cluster_id", "\"c2\""},
        {"nbf", "2000000301"},
        {"iat", "2000000001"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *c = claims_at(NOW), *v = json_loads(bad[i].json, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        json_object_set_new(c, bad[i].name, v);
        t = token(ed, c);
        EXPECT_RC(verify(t), NS_E_CLAIMS, bad[i].name);
        free(t);
        json_decref(c);
    }
    /* optional claims that are valid */
    {
        json_t *c = claims_at(NOW);
        json_object_set_new(c, "group", json_string("g.1_x-y"));
        json_object_set_new(c, "config_hash", json_string("0123456789abcdef"));
        t = token(ed, c);
        EXPECT_RC(verify(t), 0, "group and config_hash");
        EXPECT_RC(verify_at(t, NS_NONCE_AGENT, NOW), 0, "kind agent");
        EXPECT_RC(verify_at(t, NS_NONCE_OPERATOR, NOW), NS_E_CLAIMS, "kind operator");
        free(t);
        json_decref(c);
    }
}

static void test_time(void **state)
{
    json_t *c = claims_at(NOW); /* nbf = iat = NOW, exp = NOW + 300 */
    char *t = token(keys->s[1], c);
    int64_t lw = cfg->nonce.leeway;

    (void)state;
    EXPECT_RC(verify_at(t, NS_NONCE_ANY, NOW), 0, "at iat");
    EXPECT_RC(verify_at(t, NS_NONCE_ANY, NOW + 300 + lw - 1), 0, "last second of leeway");
    EXPECT_RC(verify_at(t, NS_NONCE_ANY, NOW + 300 + lw), NS_E_EXPIRED, "exp + leeway");
    EXPECT_RC(verify_at(t, NS_NONCE_ANY, NOW + 100000), NS_E_EXPIRED, "long expired");
    EXPECT_RC(verify_at(t, NS_NONCE_ANY, NOW - lw), 0, "nbf - leeway");
    EXPECT_RC(verify_at(t, NS_NONCE_ANY, NOW - lw - 1), NS_E_EXPIRED, "before nbf - leeway");
    free(t);
    /* nbf later than iat */
    json_object_set_new(c, "nbf", json_integer(NOW + 100));
    t = token(keys->s[1], c);
    EXPECT_RC(verify_at(t, NS_NONCE_ANY, NOW + 100 - lw), 0, "nbf - leeway");
    EXPECT_RC(verify_at(t, NS_NONCE_ANY, NOW + 99 - lw), NS_E_EXPIRED, "not yet valid");
    free(t);
    json_decref(c);
}

/* The ECDSA twin (r, n - s) verifies too; the ledger key does not change with it. */
static void test_malleable(void **state)
{
    ns_signer *ec = keys->s[1];
    json_t *c = claims_at(NOW);
    char *t = token(ec, c), *h = segment(t, 0), *p = segment(t, 1), *s = segment(t, 2), *s2, *t2;
    ns_buf *sig = NULL;
    ns_nonce *a = NULL, *b = NULL;
    BIGNUM *n = NULL, *bs = NULL;

    (void)state;
    assert_int_equal(ns_b64url_decode(s, strlen(s), false, &sig), 0);
    assert_int_equal(sig->len, 64);
    assert_int_equal(BN_hex2bn(&n, "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551"), 64);
    bs = BN_bin2bn(sig->data + 32, 32, NULL);
    assert_int_equal(BN_sub(bs, n, bs), 1);
    assert_int_equal(BN_bn2binpad(bs, sig->data + 32, 32), 32);
    s2 = b64u(sig->data, sig->len);
    t2 = cat3(h, p, s2);
    assert_string_not_equal(t, t2);
    EXPECT_RC(ns_nonce_verify(cfg, keys, t, strlen(t), NS_NONCE_ANY, NOW, &a), 0, "original");
    EXPECT_RC(ns_nonce_verify(cfg, keys, t2, strlen(t2), NS_NONCE_ANY, NOW, &b), 0, "twin");
    assert_memory_equal(a->ledger_key, b->ledger_key, NS_NONCE_KEY_LEN);
    ns_nonce_free(a);
    ns_nonce_free(b);
    BN_free(n);
    BN_free(bs);
    ns_buf_free(sig);
    free(s2);
    free(t2);
    free(h);
    free(p);
    free(s);
    free(t);
    json_decref(c);
}

static void test_jwks(void **state)
{
    ns_buf *b = NULL;
    json_t *j, *arr;

    (void)state;
    assert_int_equal(ns_jws_jwks(keys, &b), 0);
    j = json_loadb((const char *)b->data, b->len, 0, NULL);
    assert_non_null(j);
    arr = json_object_get(j, "keys");
    assert_int_equal(json_array_size(arr), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *k = json_array_get(arr, i);
        assert_string_equal(json_string_value(json_object_get(k, "kid")), keys->s[i]->id);
        assert_string_equal(json_string_value(json_object_get(k, "alg")), keys->s[i]->type->jws_alg);
        assert_string_equal(json_string_value(json_object_get(k, "use")), "sig");
        assert_null(json_object_get(k, "d"));
    }
    json_decref(j);
    ns_buf_free(b);
}

/* ---- ledger ---- */

static char tmp[64];

static void rm_rf(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static ns_store *open_store(const char *root)
{
    ns_storage_config sc = {.backend = "file", .path = (char *)root, .line = 1};
    ns_store *st = NULL;
    assert_int_equal(ns_store_open(&sc, &st), 0);
    return st;
}

static void test_ledger(void **state)
{
    char root[128], c1[128], c2[128], path[192];
    ns_store *st;
    ns_ledger *a = NULL, *b = NULL;
    uint8_t k1[32], k2[32];
    struct stat sb;
    size_t pruned = 99;

    (void)state;
    snprintf(tmp, sizeof(tmp), "/tmp/test-jws.XXXXXX");
    assert_non_null(mkdtemp(tmp));
    snprintf(root, sizeof(root), "%s/store", tmp);
    snprintf(c1, sizeof(c1), "%s/cache1", tmp);
    snprintf(c2, sizeof(c2), "%s/cache2/sub", tmp);
    st = open_store(root);
    memset(k1, 1, sizeof(k1));
    memset(k2, 2, sizeof(k2));

    EXPECT_RC(ns_ledger_open(c1, st, &a), 0, "open");
    assert_int_equal(lstat(c1, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/%s", c1, NS_LEDGER_FILE);
    assert_int_equal(lstat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    EXPECT_RC(ns_ledger_use(a, k1, NOW + 300, NOW), 0, "first use");
    EXPECT_RC(ns_ledger_use(a, k1, NOW + 300, NOW), NS_E_REPLAYED, "second use");
    /* a standby server: its own cache (a folder whose parent is missing: not created), the same store */
    EXPECT_RC(ns_ledger_open(c2, st, &b), NS_E_STORAGE, "cache_dir under a missing folder");
    snprintf(c2, sizeof(c2), "%s/cache2", tmp);
    EXPECT_RC(ns_ledger_open(c2, st, &b), 0, "open standby");
    EXPECT_RC(ns_ledger_use(b, k1, NOW + 300, NOW), NS_E_REPLAYED, "standby replay");
    EXPECT_RC(ns_ledger_use(b, k1, NOW + 300, NOW), NS_E_REPLAYED, "standby replay, cached");
    EXPECT_RC(ns_ledger_use(b, k2, NOW + 300, NOW), 0, "standby first use");
    EXPECT_RC(ns_ledger_use(a, k2, NOW + 300, NOW), NS_E_REPLAYED, "replay on the first server");
    ns_ledger_close(a);
    a = NULL;
    /* durable across restarts, even without the store's marker */
    {
        char marker[256], hex[65];
        ns_hex_encode(k1, 32, hex);
        snprintf(marker, sizeof(marker), "%s%s", NS_LEDGER_PREFIX, hex);
        assert_int_equal(ns_store_delete(st, marker), 0);
    }
    EXPECT_RC(ns_ledger_open(c1, st, &a), 0, "reopen");
    EXPECT_RC(ns_ledger_use(a, k1, NOW + 300, NOW), NS_E_REPLAYED, "after restart");
    /* pruning: rows whose exp is before the cut-off go */
    EXPECT_RC(ns_ledger_prune(a, NOW + 301, &pruned), 0, "prune");
    assert_int_equal(pruned, 2);
    EXPECT_RC(ns_ledger_prune(a, NOW + 301, &pruned), 0, "prune again");
    assert_int_equal(pruned, 0);
    ns_ledger_close(a);
    ns_ledger_close(b);
    ns_store_close(st);

    /* a storage failure records nothing: the local row is undone, a retry succeeds */
    {
        char ro[160];
        uint8_t k3[32];
        memset(k3, 3, sizeof(k3));
        snprintf(ro, sizeof(ro), "%s/store/cluster/nonce-used", tmp);
        st = open_store(root);
        EXPECT_RC(ns_ledger_open(c1, st, &a), 0, "open");
        if (geteuid() != 0) {
            assert_int_equal(chmod(ro, 0500), 0);
            assert_int_not_equal(ns_ledger_use(a, k3, NOW + 300, NOW), 0);
            assert_int_equal(chmod(ro, 0700), 0);
        } else {
            /* root ignores modes: replace the folder by a file so that the put fails */
            rm_rf(ro);
            FILE *f = fopen(ro, "w");
            assert_non_null(f);
            fclose(f);
            assert_int_not_equal(ns_ledger_use(a, k3, NOW + 300, NOW), 0);
            assert_int_equal(unlink(ro), 0);
        }
        EXPECT_RC(ns_ledger_use(a, k3, NOW + 300, NOW), 0, "retry after the storage failure");
        ns_ledger_close(a);
        a = NULL;
        ns_store_close(st);
    }
    /* a ledger file open to others is refused */
    snprintf(path, sizeof(path), "%s/%s", c1, NS_LEDGER_FILE);
    assert_int_equal(chmod(path, 0644), 0);
    st = open_store(root);
    EXPECT_RC(ns_ledger_open(c1, st, &a), NS_E_PERM, "mode 0644");
    assert_null(a);
    ns_store_close(st);
    rm_rf(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_strict), cmocka_unit_test(test_issue_verify),
        cmocka_unit_test(test_issue_refused), cmocka_unit_test(test_issuer_escaped),
        cmocka_unit_test(test_tampered),      cmocka_unit_test(test_alg),
        cmocka_unit_test(test_structure),     cmocka_unit_test(test_header_payload_json),
        cmocka_unit_test(test_kid),           cmocka_unit_test(test_claims),
        cmocka_unit_test(test_time),          cmocka_unit_test(test_malleable),
        cmocka_unit_test(test_jwks),          cmocka_unit_test(test_ledger),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
