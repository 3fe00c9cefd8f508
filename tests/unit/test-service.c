/* The service layer's stateless pieces: register/renew body parsing (exact error codes), If-None-Match
 * matching, record names, the role extension reader. The endpoints themselves are driven end to end by
 * tests/integration/server-*.sh. */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/err.h"
#include "common/log.h"
#include "service/authz.h"
#include "service/files.h"
#include "service/ratelimit.h"
#include "service/registration.h"
#include "service/request.h"

#define OID "1.3.6.1.4.1.999999.1"

static char *pub_pem(const char *alg)
{
    EVP_PKEY *k = strcmp(alg, "ED25519") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                  : strcmp(alg, "RSA") == 0   ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                  : strcmp(alg, "P-384") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384")
                                              : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    BIO *b = BIO_new(BIO_s_mem());
    char *p = NULL, *out;
    long n;

    assert_non_null(k);
    assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    n = BIO_get_mem_data(b, &p);
    out = strndup(p, (size_t)n);
    BIO_free(b);
    EVP_PKEY_free(k);
    return out;
}

/* A JSON string literal of s (PEM newlines escaped). */
static void json_str(const char *s, char *out, size_t n)
{
    size_t k = 0;
    out[k++] = '"';
    for (; *s != '\0' && k + 3 < n; s++) {
        if (*s == '\n') {
            out[k++] = '\\';
            out[k++] = 'n';
        } else {
            out[k++] = *s;
        }
    }
    out[k++] = '"';
    out[k] = '\0';
}

/* tmpl with its one "%s" replaced by key (a literal-free printf would be -Wformat-nonliteral). */
static void subst(const char *tmpl, const char *key, char *out, size_t n)
{
    const char *at = strstr(tmpl, "%s");
    size_t a;

    assert_non_null(at);
    a = (size_t)(at - tmpl);
    assert_true(a + strlen(key) + strlen(at + 2) < n);
    memcpy(out, tmpl, a);
    strcpy(out + a, key);
    strcat(out, at + 2);
}

static int parse(const char *body, enum ns_req_kind kind, ns_reg_request **rq)
{
    return ns_reg_request_parse((const uint8_t *)body, strlen(body), kind, rq);
}

static void test_register_bodies(void **state)
{
    char *ed = pub_pem("ED25519"), *p256 = pub_pem("P-256"), *rsa = pub_pem("RSA"), *p384 = pub_pem("P-384");
    char ked[1024], kp[1024], kr[2048], k384[1024], body[8192];
    ns_reg_request *rq = NULL, sentinel, *s = &sentinel;

    json_str(ed, ked, sizeof(ked));
    json_str(p256, kp, sizeof(kp));
    json_str(rsa, kr, sizeof(kr));
    json_str(p384, k384, sizeof(k384));

    snprintf(body, sizeof(body), "{\"nonce\": \"a.b.c\", \"public_key\": %s}", ked);
    assert_int_equal(parse(body, NS_REQ_REGISTER, &rq), 0);
    assert_string_equal(rq->nonce, "a.b.c");
    assert_non_null(rq->pub);
    assert_null(rq->hostname);
    ns_reg_request_free(rq);

    snprintf(body, sizeof(body),
             "{\"nonce\": \"n\", \"public_key\": %s, \"hostname\": \"vm-1.example\", \"ipv4\": \"10.0.0.5\", "
             "\"ipv6\": \"2001:db8::5\"}",
             kp);
    assert_int_equal(parse(body, NS_REQ_REGISTER, &rq), 0);
    assert_string_equal(rq->hostname, "vm-1.example");
    assert_string_equal(rq->ipv4, "10.0.0.5");
    assert_string_equal(rq->ipv6, "2001:db8::5");
    ns_reg_request_free(rq);

    snprintf(body, sizeof(body), "{\"nonce\": \"n\", \"public_key\": %s, \"hostname\": null, \"ipv6\": null}",
             ked);
    assert_int_equal(parse(body, NS_REQ_REGISTER, &rq), 0);
    assert_null(rq->hostname);
    ns_reg_request_free(rq);

    /* Refusals: NS_E_FORMAT, *out untouched. */
    {
        const char *const tmpl[] = {
            "{\"nonce\": \"n\", \"public_key\": %s, \"extra\": 1}",
            "{\"public_key\": %s}",
            "{\"nonce\": 5, \"public_key\": %s}",
            "{\"nonce\": \"\", \"public_key\": %s}",
            "{\"nonce\": \"n\", \"public_key\": %s, \"hostname\": \"a b\"}",
            "{\"nonce\": \"n\", \"public_key\": %s, \"hostname\": \"*.example\"}",
            "{\"nonce\": \"n\", \"public_key\": %s, \"ipv4\": \"10.0.0.256\"}",
            "{\"nonce\": \"n\", \"public_key\": %s, \"ipv4\": \"2001:db8::1\"}",
            "{\"nonce\": \"n\", \"public_key\": %s, \"ipv6\": \"10.0.0.1\"}",
            "{\"nonce\": \"n\", \"nonce\": \"m\", \"public_key\": %s}",
            "[%s]",
            "{\"nonce\": \"n\", \"public_key\": %s",
        };
        for (size_t i = 0; i < sizeof(tmpl) / sizeof(tmpl[0]); i++) {
            subst(tmpl[i], ked, body, sizeof(body));
            s = &sentinel;
            if (parse(body, NS_REQ_REGISTER, &s) != NS_E_FORMAT || s != &sentinel) {
                print_error("case %zu accepted: %s\n", i, tmpl[i]);
                fail();
            }
        }
    }
    snprintf(body, sizeof(body), "{\"nonce\": \"n\", \"public_key\": %s}", kr);
    assert_int_equal(parse(body, NS_REQ_REGISTER, &s), NS_E_FORMAT); /* RSA */
    snprintf(body, sizeof(body), "{\"nonce\": \"n\", \"public_key\": %s}", k384);
    assert_int_equal(parse(body, NS_REQ_REGISTER, &s), NS_E_FORMAT); /* P-384 */
    assert_int_equal(parse("{\"nonce\": \"n\", \"public_key\": \"-----BEGIN PUBLIC KEY-----\\nAAAA\\n\"}",
                           NS_REQ_REGISTER, &s),
                     NS_E_FORMAT);
    assert_int_equal(parse("{\"nonce\": \"a\\u0000b\", \"public_key\": \"x\"}", NS_REQ_REGISTER, &s),
                     NS_E_FORMAT);

    /* Renew bodies. */
    assert_int_equal(parse("{}", NS_REQ_RENEW, &rq), 0);
    assert_null(rq->pub);
    assert_null(rq->nonce);
    ns_reg_request_free(rq);
    snprintf(body, sizeof(body), "{\"public_key\": %s}", kp);
    assert_int_equal(parse(body, NS_REQ_RENEW, &rq), 0);
    assert_non_null(rq->pub);
    ns_reg_request_free(rq);
    assert_int_equal(parse("{\"nonce\": \"n\"}", NS_REQ_RENEW, &s), NS_E_FORMAT);
    assert_int_equal(parse("", NS_REQ_RENEW, &s), NS_E_FORMAT);
    assert_true(s == &sentinel);

    /* Size. */
    {
        size_t n = NS_REQ_BODY_MAX + 1;
        uint8_t *big = malloc(n);
        assert_non_null(big);
        memset(big, ' ', n);
        assert_int_equal(ns_reg_request_parse(big, n, NS_REQ_REGISTER, &s), NS_E_TOO_LARGE);
        free(big);
    }
    free(ed);
    free(p256);
    free(rsa);
    free(p384);
}

static void test_etag_match(void **state)
{
    const char *e = "\"0123abcd\"";

    assert_true(ns_files_etag_match("\"0123abcd\"", e));
    assert_true(ns_files_etag_match("W/\"0123abcd\"", e));
    assert_true(ns_files_etag_match("\"x\", \"0123abcd\"", e));
    assert_true(ns_files_etag_match("*", e));
    assert_false(ns_files_etag_match(NULL, e));
    assert_false(ns_files_etag_match("", e));
    assert_false(ns_files_etag_match("\"0123abc\"", e));
    assert_false(ns_files_etag_match("\"0123abcde\"", e));
    assert_false(ns_files_etag_match("0123abcd", e));
    assert_false(ns_files_etag_match("\"0123ABCD\"", e));
}

static void test_record_names(void **state)
{
    char n[600];

    assert_int_equal(ns_record_name("agent", "s1", "acme", "vm-1", n, sizeof(n)), 0);
    assert_string_equal(n, "shard/s1/instance/acme/vm-1.json");
    assert_int_equal(ns_record_name("operator", "s1", "acme", "alice", n, sizeof(n)), 0);
    assert_string_equal(n, "cluster/operator/acme/alice.json");
    assert_int_equal(ns_record_legacy_name("agent", "s1", "acme", "vm-1", n, sizeof(n)), 0);
    assert_string_equal(n, "shard/s1/instance/acme.vm-1.json");
    /* Parts that are not nonce names (a '/', a leading '.', empty) name nothing. */
    assert_int_equal(ns_record_name("agent", "s1", "acme/x", "vm-1", n, sizeof(n)), NS_E_NAME);
    assert_int_equal(ns_record_name("agent", "s1", "acme", "x/vm-1", n, sizeof(n)), NS_E_NAME);
    assert_int_equal(ns_record_name("agent", "s1", "acme", ".vm", n, sizeof(n)), NS_E_NAME);
    assert_int_equal(ns_record_name("agent", "s1", "", "vm", n, sizeof(n)), NS_E_NAME);
    assert_int_equal(ns_record_name("agent", "s/1", "acme", "vm", n, sizeof(n)), NS_E_NAME);
    /* A segment over the store's 128 bytes cannot be named. */
    {
        char sub[129];
        memset(sub, 'a', 128);
        sub[128] = '\0';
        assert_int_equal(ns_record_name("agent", "s1", "acme", sub, n, sizeof(n)), NS_E_NAME);
    }
    assert_int_equal(ns_record_name("agent", "s1", "acme", "vm-1", n, 10), NS_E_NAME);
}

/* Issue 12 (record-name collision): tenant "acme.web" with sub "1" and tenant "acme" with sub "web.1" shared
 * one record ("acme.web.1.json"); every split of a dotted name must now give its own record name. */
static void test_record_name_collision(void **state)
{
    static const char *const pairs[][2] = {{"acme.web", "1"}, {"acme", "web.1"}, {"a.b.c", "d"},
                                           {"a.b", "c.d"},    {"a", "b.c.d"},    {"acme-", "x"},
                                           {"acm", "e-x"}};
    char names[sizeof(pairs) / sizeof(pairs[0])][600];

    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        assert_int_equal(ns_record_name("agent", "s1", pairs[i][0], pairs[i][1], names[i], sizeof(names[i])),
                         0);
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                fail_msg("%s/%s and %s/%s share the record %s", pairs[i][0], pairs[i][1], pairs[j][0],
                         pairs[j][1], names[i]);
    }
    {
        char op[2][600];
        assert_int_equal(ns_record_name("operator", "s1", pairs[0][0], pairs[0][1], op[0], sizeof(op[0])), 0);
        assert_int_equal(ns_record_name("operator", "s1", pairs[1][0], pairs[1][1], op[1], sizeof(op[1])), 0);
        assert_string_not_equal(op[0], op[1]);
    }
}

/* Issue 12 (unlimited renewals): one renewal per identity per interval; registrations per address. */
static void test_rate_limits(void **state)
{
    ns_rl *rl = NULL;
    int64_t retry = 0;
    int ok = 0;

    assert_int_equal(ns_rl_new(&rl), 0);
    assert_int_equal(ns_rl_renew_take(rl, "shard/s1/instance/acme/vm-1.json", 1000, 60000, &retry), 0);
    assert_int_equal(ns_rl_renew_take(rl, "shard/s1/instance/acme/vm-1.json", 1500, 60000, &retry),
                     NS_E_RATE_LIMITED);
    assert_int_equal(retry, 59500);
    /* Another identity is not limited by this one. */
    assert_int_equal(ns_rl_renew_take(rl, "shard/s1/instance/acme/vm-2.json", 1500, 60000, &retry), 0);
    /* After the interval, or once given back (the renewal failed), it may renew again. */
    assert_int_equal(ns_rl_renew_take(rl, "shard/s1/instance/acme/vm-1.json", 61000, 60000, &retry), 0);
    ns_rl_renew_give_back(rl, "shard/s1/instance/acme/vm-1.json", 61000);
    assert_int_equal(ns_rl_renew_take(rl, "shard/s1/instance/acme/vm-1.json", 61001, 60000, &retry), 0);
    /* Interval 0: no limit. */
    assert_int_equal(ns_rl_renew_take(rl, "x", 1, 0, &retry), 0);
    assert_int_equal(ns_rl_renew_take(rl, "x", 1, 0, &retry), 0);

    /* Burst 5, 60 per minute (one a second): 5 at once, the 6th waits a second. */
    for (int i = 0; i < 10; i++)
        if (ns_rl_register_take(rl, "192.0.2.7", 1000, 5, 60, &retry) == 0)
            ok++;
    assert_int_equal(ok, 5);
    assert_int_equal(ns_rl_register_take(rl, "192.0.2.7", 1000, 5, 60, &retry), NS_E_RATE_LIMITED);
    assert_true(retry > 0 && retry <= 1001);
    assert_int_equal(ns_rl_register_take(rl, "192.0.2.7", 2001, 5, 60, &retry), 0);
    /* The same address written as IPv4-mapped IPv6 is the same client; another address has its own. */
    assert_int_equal(ns_rl_register_take(rl, "::ffff:192.0.2.7", 2001, 5, 60, &retry), NS_E_RATE_LIMITED);
    assert_int_equal(ns_rl_register_take(rl, "192.0.2.8", 2001, 5, 60, &retry), 0);
    /* IPv6 is limited per /64. */
    ok = 0;
    for (int i = 0; i < 10; i++) {
        char a[64];
        snprintf(a, sizeof(a), "2001:db8:1:2::%x", i + 1);
        if (ns_rl_register_take(rl, a, 5000, 5, 60, &retry) == 0)
            ok++;
    }
    assert_int_equal(ok, 5);
    ns_rl_free(rl);
}

/* A certificate with the given role extension value (DER bytes as given). */
static X509 *with_ext(const unsigned char *der, int n)
{
    X509 *x = X509_new();
    ASN1_OBJECT *obj = OBJ_txt2obj(OID, 1);
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext;

    assert_non_null(x);
    assert_int_equal(ASN1_OCTET_STRING_set(os, der, n), 1);
    ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(obj);
    return x;
}

static void test_role_extension(void **state)
{
    static const unsigned char agent[] = {0x0c, 0x05, 'a', 'g', 'e', 'n', 't'};
    static const unsigned char ia5[] = {0x16, 0x05, 'a', 'g', 'e', 'n', 't'};
    static const unsigned char trailing[] = {0x0c, 0x05, 'a', 'g', 'e', 'n', 't', 0x00};
    static const unsigned char nul[] = {0x0c, 0x03, 'a', 0x00, 'b'};
    char role[16];
    X509 *x;

    x = with_ext(agent, sizeof(agent));
    assert_int_equal(ns_authz_role(x, OID, role, sizeof(role)), 0);
    assert_string_equal(role, "agent");
    assert_int_equal(ns_authz_role(x, "1.3.6.1.4.1.999999.2", role, sizeof(role)), NS_E_NOT_FOUND);
    X509_free(x);
    x = with_ext(ia5, sizeof(ia5));
    assert_int_equal(ns_authz_role(x, OID, role, sizeof(role)), NS_E_FORMAT);
    X509_free(x);
    x = with_ext(trailing, sizeof(trailing));
    assert_int_equal(ns_authz_role(x, OID, role, sizeof(role)), NS_E_FORMAT);
    X509_free(x);
    x = with_ext(nul, sizeof(nul));
    assert_int_equal(ns_authz_role(x, OID, role, sizeof(role)), NS_E_FORMAT);
    X509_free(x);
}

static void test_no_certificate(void **state)
{
    ns_peer peer;
    X509_STORE *st = X509_STORE_new();

    assert_int_equal(ns_authz_check(NULL, NULL, st, OID, "agent", &peer), NS_E_PERM);
    assert_string_equal(peer.cn, "");
    X509_STORE_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_bodies), cmocka_unit_test(test_etag_match),
        cmocka_unit_test(test_record_names),    cmocka_unit_test(test_role_extension),
        cmocka_unit_test(test_no_certificate),  cmocka_unit_test(test_record_name_collision),
        cmocka_unit_test(test_rate_limits),
    };
    ns_log_set_level(NS_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
