/* Unit tests for src/sign/signer.c, src/ca/cert.c and src/common/timeutil.c.
 *
 * Software signers of every signing type sign and verify in both ECDSA encodings; raw <-> DER conversion
 * round-trips and refuses wrong lengths and non-canonical DER; a signature over other bytes or of the wrong
 * length is NS_E_INTEGRITY. A signer whose back-end returns garbage (a faulty token) never yields a
 * certificate: NS_E_TOKEN from both the CA and the leaf path. Serials are positive and 16 octets. Name checks
 * (DNS, IP, URI, CN) and durations accept and refuse exactly what doc/ca.md says. */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/x509.h>

#include "ca/cert.h"
#include "common/err.h"
#include "common/secmem.h"
#include "common/timeutil.h"
#include "sign/signer.h"

static const char *const SIGN_TYPES[] = {"ed25519", "ecdsa-p256", "ecdsa-p384", "rsa-2048"};

static ns_signer *soft(const char *type)
{
    EVP_PKEY *pkey = NULL;
    ns_signer *s = NULL;
    assert_int_equal(ns_keytype_generate(ns_keytype_find(type), &pkey), 0);
    assert_int_equal(ns_signer_soft_new(pkey, &s), 0);
    EVP_PKEY_free(pkey);
    return s;
}

static void test_sign_verify(void **state)
{
    static const uint8_t msg[] = "to be signed", other[] = "to be signeD";
    (void)state;
    for (size_t i = 0; i < sizeof(SIGN_TYPES) / sizeof(SIGN_TYPES[0]); i++) {
        ns_signer *s = soft(SIGN_TYPES[i]);
        assert_int_equal(strlen(s->id), 43);
        for (int enc = NS_SIG_DER; enc <= NS_SIG_RAW; enc++) {
            ns_buf *sig = NULL;
            assert_int_equal(ns_signer_sign(s, enc, msg, sizeof(msg), &sig), 0);
            if (enc == NS_SIG_RAW && ns_sig_ecdsa_field_len(s->type) != 0)
                assert_int_equal(sig->len, 2 * ns_sig_ecdsa_field_len(s->type));
            assert_int_equal(ns_sig_verify(s->pub, s->type, enc, msg, sizeof(msg), sig->data, sig->len), 0);
            assert_int_equal(ns_sig_verify(s->pub, s->type, enc, other, sizeof(other), sig->data, sig->len),
                             NS_E_INTEGRITY);
            assert_int_equal(ns_sig_verify(s->pub, s->type, enc, msg, sizeof(msg), sig->data, sig->len - 1),
                             NS_E_INTEGRITY);
            sig->data[sig->len / 2] ^= 0x01;
            assert_int_equal(ns_sig_verify(s->pub, s->type, enc, msg, sizeof(msg), sig->data, sig->len),
                             NS_E_INTEGRITY);
            ns_buf_free(sig);
        }
        ns_signer_free(s);
    }
}

static void test_ecdsa_encodings(void **state)
{
    uint8_t rs[64];
    ns_buf *der = NULL, *back = NULL;
    (void)state;
    memset(rs, 0, sizeof(rs));
    rs[31] = 1; /* r = 1: DER must be minimal */
    rs[32] = 0x80;
    rs[63] = 7;
    assert_int_equal(ns_buf_new(256, false, &der), 0);
    assert_int_equal(ns_buf_new(256, false, &back), 0);
    assert_int_equal(ns_sig_ecdsa_raw_to_der(rs, sizeof(rs), 32, der), 0);
    assert_int_equal(ns_sig_ecdsa_der_to_raw(der->data, der->len, 32, back), 0);
    assert_int_equal(back->len, 64);
    assert_memory_equal(back->data, rs, 64);
    /* Wrong lengths, wrong field sizes, trailing bytes, a non-minimal INTEGER. */
    assert_int_equal(ns_sig_ecdsa_raw_to_der(rs, 63, 32, der), NS_E_INTEGRITY);
    assert_int_equal(ns_sig_ecdsa_raw_to_der(rs, 64, 0, der), NS_E_INTEGRITY);
    ns_buf_truncate(back, 0);
    assert_int_equal(ns_sig_ecdsa_der_to_raw(der->data, der->len - 1, 32, back), NS_E_INTEGRITY);
    {
        uint8_t longer[80];
        memcpy(longer, der->data, der->len);
        longer[der->len] = 0;
        assert_int_equal(ns_sig_ecdsa_der_to_raw(longer, der->len + 1, 32, back), NS_E_INTEGRITY);
    }
    {
        /* SEQUENCE { INTEGER 00 01 (non-minimal), INTEGER 07 } */
        static const uint8_t bad[] = {0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x07};
        assert_int_equal(ns_sig_ecdsa_der_to_raw(bad, sizeof(bad), 32, back), NS_E_INTEGRITY);
    }
    assert_int_equal(back->len, 0);
    ns_buf_free(der);
    ns_buf_free(back);
}

/* A "token" that signs with garbage of the right length. */
static int garbage_sign(ns_signer *s, const uint8_t *msg, size_t n, ns_buf *sig)
{
    uint8_t *w = NULL;
    size_t len = strcmp(s->type->evp_name, "ED25519") == 0 ? 64 : 2 * ns_sig_ecdsa_field_len(s->type);
    int r;
    (void)msg;
    (void)n;
    if ((r = ns_buf_extend(sig, len, &w)) != 0)
        return r;
    for (size_t i = 0; i < len; i++)
        w[i] = (uint8_t)(0x11 + i);
    return 0;
}

static void test_garbage_signature_never_issues(void **state)
{
    static const ns_signer_ops garbage_ops = {"garbage", garbage_sign, NULL};
    (void)state;
    for (size_t t = 0; t < 2; t++) {
        ns_signer *good = soft(t == 0 ? "ed25519" : "ecdsa-p256");
        ns_signer *bad = soft(t == 0 ? "ed25519" : "ecdsa-p256");
        const ns_signer_ops *saved = bad->ops;
        X509 *ca = NULL, *x = NULL;
        ns_issued *leaf = NULL;
        ns_dn dn = {"Unit CA", NULL, NULL, NULL, NULL};
        int64_t now = ns_now();
        ns_cert_req req;

        assert_int_equal(ns_cert_make_ca(good, NULL, good->pub, &dn, 0, now, now + 86400, &ca), 0);
        bad->ops = &garbage_ops;
        bad->raw_ecdsa = 1;
        assert_int_equal(ns_cert_make_ca(bad, NULL, bad->pub, &dn, 0, now, now + 86400, &x), NS_E_TOKEN);
        assert_null(x);
        /* A leaf "signed" by the faulty key of the good CA's certificate. */
        memset(&req, 0, sizeof(req));
        req.pub = good->pub;
        req.cn = "leaf";
        req.tenant = "t";
        req.role_oid = "1.3.6.1.4.1.999999.1";
        req.kind = NS_CERT_CLIENT;
        req.not_before = now;
        req.not_after = now + 3600;
        assert_int_equal(ns_cert_issue(bad, ca, &req, &leaf), NS_E_TOKEN);
        assert_null(leaf);
        assert_int_equal(ns_cert_issue(good, ca, &req, &leaf), 0);
        {
            const unsigned char *p = leaf->der->data;
            x = d2i_X509(NULL, &p, (long)leaf->der->len);
            assert_non_null(x);
            assert_int_equal(X509_verify(x, good->pub), 1);
            X509_free(x);
        }
        ns_issued_free(leaf);
        bad->ops = saved;
        X509_free(ca);
        ns_signer_free(good);
        ns_signer_free(bad);
    }
}

static void test_serial(void **state)
{
    (void)state;
    for (int i = 0; i < 200; i++) {
        ASN1_INTEGER *a = NULL;
        BIGNUM *bn;
        assert_int_equal(ns_cert_serial(&a), 0);
        bn = ASN1_INTEGER_to_BN(a, NULL);
        assert_false(BN_is_negative(bn));
        assert_int_equal(BN_num_bits(bn), 127);
        BN_free(bn);
        ASN1_INTEGER_free(a);
    }
}

static void test_name_checks(void **state)
{
    (void)state;
    assert_int_equal(ns_cert_check_dns("a.example.com"), 0);
    assert_int_equal(ns_cert_check_dns("*.example.com"), 0);
    assert_int_equal(ns_cert_check_dns("xn--bcher-kva.example"), 0);
    assert_int_equal(ns_cert_check_dns("a..b"), NS_E_INVAL);
    assert_int_equal(ns_cert_check_dns("a.*.b"), NS_E_INVAL);
    assert_int_equal(ns_cert_check_dns("a-.b"), NS_E_INVAL);
    assert_int_equal(ns_cert_check_dns("a,b"), NS_E_INVAL);
    assert_int_equal(ns_cert_check_dns("."), NS_E_INVAL);
    assert_int_equal(ns_cert_check_ip("127.0.0.1"), 0);
    assert_int_equal(ns_cert_check_ip("::1"), 0);
    assert_int_equal(ns_cert_check_ip("1.2.3"), NS_E_INVAL);
    assert_int_equal(ns_cert_check_uri("spiffe://c/x"), 0);
    assert_int_equal(ns_cert_check_uri("urn:x"), 0);
    assert_int_equal(ns_cert_check_uri("x y:z"), NS_E_INVAL);
    assert_int_equal(ns_cert_check_uri("http:"), NS_E_INVAL);
    assert_int_equal(ns_cert_check_cn("vm 1"), 0);
    assert_int_equal(ns_cert_check_cn(""), NS_E_INVAL);
    assert_int_equal(ns_cert_check_cn("a\nb"), NS_E_INVAL);
}

static void test_durations(void **state)
{
    int64_t s = 0;
    char out[24];
    (void)state;
    assert_int_equal(ns_duration_parse("90s", &s), 0);
    assert_int_equal(s, 90);
    assert_int_equal(ns_duration_parse("5m", &s), 0);
    assert_int_equal(s, 300);
    assert_int_equal(ns_duration_parse("24h", &s), 0);
    assert_int_equal(s, 86400);
    assert_int_equal(ns_duration_parse("30d", &s), 0);
    assert_int_equal(s, 30 * 86400);
    static const char *const bad[] = {"",      "s",    "0s",  "05m", "-1s",           "1",     "1w",
                                      "1h30m", "1.5h", " 1s", "1s ", "999999999999d", "36601d"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ns_duration_parse(bad[i], &s), NS_E_INVAL);
    ns_duration_format(300, out);
    assert_string_equal(out, "5m");
    ns_duration_format(90, out);
    assert_string_equal(out, "90s");
    ns_duration_format(2 * 86400, out);
    assert_string_equal(out, "2d");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_ecdsa_encodings),
        cmocka_unit_test(test_garbage_signature_never_issues),
        cmocka_unit_test(test_serial),
        cmocka_unit_test(test_name_checks),
        cmocka_unit_test(test_durations),
    };
    if (ns_secmem_init() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
