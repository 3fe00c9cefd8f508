/* Unit tests for src/net/sigv4.c: the S3 examples published with "Authenticating Requests (AWS Signature
 * Version 4)" (GET object with Range, PUT object, GET bucket lifecycle, GET bucket list; access key
 * AKIAIOSFODNN7EXAMPLE, 2013-05-24), two vectors of AWS's generic SigV4 test suite (get-vanilla,
 * get-vanilla-query-order-key-case; service "service"), session tokens, the Host header, URI encoding and
 * refused input. The cross-check against botocore is tests/integration/sigv4-botocore.sh. */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"
#include "net/sigv4.h"

#define T_20130524 ((time_t)1369353600)
#define T_20150830 ((time_t)1440938160) /* 2015-08-30T12:36:00Z */

static ns_aws_creds *s3_creds(const char *token)
{
    ns_aws_creds *c = NULL;
    assert_int_equal(
        ns_aws_creds_new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", token, 0, &c),
        0);
    return c;
}

static ns_sigv4_signed *sign(const char *service, time_t when, const ns_aws_creds *c, const char *method,
                             const char *url, const ns_http_header *hs, size_t nh, const char *body)
{
    ns_sigv4_params p = {service, "us-east-1", when, false};
    ns_http_req rq;
    ns_sigv4_signed *s = NULL;

    memset(&rq, 0, sizeof(rq));
    rq.method = method;
    rq.url = url;
    rq.headers = hs;
    rq.n_headers = nh;
    rq.body = (const uint8_t *)body;
    rq.body_len = body != NULL ? strlen(body) : 0;
    assert_int_equal(ns_sigv4_sign(&p, c, &rq, &s), 0);
    return s;
}

static const char *hdr(const ns_sigv4_signed *s, const char *name)
{
    for (size_t i = 0; i < s->n_headers; i++)
        if (strcmp(s->headers[i].name, name) == 0)
            return s->headers[i].value;
    return NULL;
}

static void assert_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    if (n < k || strcmp(s + n - k, suffix) != 0)
        fail_msg("'%s' does not end with '%s'", s, suffix);
}

static void test_s3_get_object(void **state)
{
    ns_aws_creds *c = s3_creds(NULL);
    ns_http_header hs[] = {{"Range", "bytes=0-9"}};
    ns_sigv4_signed *s =
        sign("s3", T_20130524, c, "GET", "https://examplebucket.s3.amazonaws.com/test.txt", hs, 1, NULL);

    assert_string_equal(s->canonical_request,
                        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
                        "x-amz-content-sha256:" NS_SIGV4_EMPTY_SHA256 "\nx-amz-date:20130524T000000Z\n\n"
                        "host;range;x-amz-content-sha256;x-amz-date\n" NS_SIGV4_EMPTY_SHA256);
    assert_string_equal(s->string_to_sign,
                        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
                        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
    assert_string_equal(s->signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    assert_string_equal(
        s->authorization,
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    /* The headers to send: the caller's, then Host, X-Amz-Date, X-Amz-Content-Sha256, Authorization. */
    assert_int_equal(s->n_headers, 5);
    assert_string_equal(s->headers[0].name, "Range");
    assert_string_equal(hdr(s, "Host"), "examplebucket.s3.amazonaws.com");
    assert_string_equal(hdr(s, "X-Amz-Date"), "20130524T000000Z");
    assert_string_equal(hdr(s, "X-Amz-Content-Sha256"), NS_SIGV4_EMPTY_SHA256);
    assert_string_equal(hdr(s, "Authorization"), s->authorization);
    assert_null(hdr(s, "X-Amz-Security-Token"));
    ns_sigv4_signed_free(s);
    ns_aws_creds_free(c);
}

static void test_s3_put_object(void **state)
{
    ns_aws_creds *c = s3_creds(NULL);
    ns_http_header hs[] = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                           {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
    ns_sigv4_signed *s =
        sign("s3", T_20130524, c, "PUT", "https://examplebucket.s3.amazonaws.com/test%24file.text", hs, 2,
             "Welcome to Amazon S3.");

    assert_ends_with(s->string_to_sign, "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
    assert_string_equal(s->signature, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    assert_true(strstr(s->authorization,
                       "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,") !=
                NULL);
    assert_string_equal(hdr(s, "X-Amz-Content-Sha256"),
                        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    ns_sigv4_signed_free(s);
    ns_aws_creds_free(c);
}

static void test_s3_lifecycle_and_list(void **state)
{
    ns_aws_creds *c = s3_creds(NULL);
    ns_sigv4_signed *s =
        sign("s3", T_20130524, c, "GET", "https://examplebucket.s3.amazonaws.com/?lifecycle", NULL, 0, NULL);

    assert_true(strstr(s->canonical_request, "GET\n/\nlifecycle=\n") == s->canonical_request);
    assert_string_equal(s->signature, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    ns_sigv4_signed_free(s);

    /* Parameters out of order in the URL: sorted when signing. */
    s = sign("s3", T_20130524, c, "GET", "https://examplebucket.s3.amazonaws.com/?prefix=J&max-keys=2", NULL,
             0, NULL);
    assert_true(strstr(s->canonical_request, "GET\n/\nmax-keys=2&prefix=J\n") == s->canonical_request);
    assert_ends_with(s->string_to_sign, "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7");
    assert_string_equal(s->signature, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
    ns_sigv4_signed_free(s);
    ns_aws_creds_free(c);
}

static void test_generic_suite(void **state)
{
    ns_aws_creds *c = NULL;
    ns_sigv4_signed *s = NULL;

    assert_int_equal(ns_aws_creds_new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL, 0, &c),
                     0);
    s = sign("service", T_20150830, c, "GET", "https://example.amazonaws.com/", NULL, 0, NULL);
    assert_string_equal(s->authorization,
                        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                        "SignedHeaders=host;x-amz-date, "
                        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    /* Not S3: no content hash header. */
    assert_null(hdr(s, "X-Amz-Content-Sha256"));
    ns_sigv4_signed_free(s);
    s = sign("service", T_20150830, c, "GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1",
             NULL, 0, NULL);
    assert_string_equal(s->signature, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
    ns_sigv4_signed_free(s);
    ns_aws_creds_free(c);
}

static void test_session_token_and_host(void **state)
{
    ns_aws_creds *plain = s3_creds(NULL), *temp = s3_creds("FQoGZXIvYXdzEXAMPLE//token=");
    ns_http_header inm[] = {{"If-None-Match", "*"}};
    ns_sigv4_signed *a = sign("s3", T_20130524, plain, "PUT", "http://127.0.0.1:9000/bucket/k", inm, 1, "x");
    ns_sigv4_signed *b = sign("s3", T_20130524, temp, "PUT", "http://127.0.0.1:9000/bucket/k", inm, 1, "x");
    ns_sigv4_signed *d = NULL;

    assert_string_equal(hdr(a, "Host"), "127.0.0.1:9000");
    assert_true(strstr(a->authorization,
                       "SignedHeaders=host;if-none-match;x-amz-content-sha256;x-amz-date,") != NULL);
    assert_string_equal(hdr(b, "X-Amz-Security-Token"), "FQoGZXIvYXdzEXAMPLE//token=");
    assert_true(
        strstr(b->authorization,
               "SignedHeaders=host;if-none-match;x-amz-content-sha256;x-amz-date;x-amz-security-token,") !=
        NULL);
    assert_string_not_equal(a->signature, b->signature);
    /* Default ports are left out of Host; other ports are kept. */
    d = sign("s3", T_20130524, plain, "GET", "https://h.example:443/b/k", NULL, 0, NULL);
    assert_string_equal(hdr(d, "Host"), "h.example");
    ns_sigv4_signed_free(d);
    d = sign("s3", T_20130524, plain, "GET", "http://h.example:80", NULL, 0, NULL);
    assert_string_equal(hdr(d, "Host"), "h.example");
    assert_true(strncmp(d->canonical_request, "GET\n/\n\n", 7) == 0);
    ns_sigv4_signed_free(d);
    d = sign("s3", T_20130524, plain, "GET", "https://h.example:8443/b/k", NULL, 0, NULL);
    assert_string_equal(hdr(d, "Host"), "h.example:8443");
    ns_sigv4_signed_free(d);
    /* Header values: trimmed, inner runs collapsed; duplicates joined. */
    {
        ns_http_header hs[] = {{"X-Amz-Meta-A", "  a   b  "}, {"x-amz-meta-a", "c"}};
        d = sign("s3", T_20130524, plain, "GET", "https://h.example/k", hs, 2, NULL);
        assert_true(strstr(d->canonical_request, "\nx-amz-meta-a:a b,c\n") != NULL);
        ns_sigv4_signed_free(d);
    }
    ns_sigv4_signed_free(a);
    ns_sigv4_signed_free(b);
    ns_aws_creds_free(plain);
    ns_aws_creds_free(temp);
}

static void test_uri_encode(void **state)
{
    static const struct {
        const char *in;
        bool keep_slash;
        const char *want;
    } cases[] = {
        {"a b", true, "a%20b"},
        {"a+b", true, "a%2Bb"},
        {"100%", true, "100%25"},
        {"a/b", true, "a/b"},
        {"a/b", false, "a%2Fb"},
        {"A-z_0.9~", false, "A-z_0.9~"},
        {"=&?#$", false, "%3D%26%3F%23%24"},
        {"\xc3\xa9", false, "%C3%A9"},
        {"", false, ""},
    };
    char *out = NULL;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(ns_sigv4_uri_encode(cases[i].in, strlen(cases[i].in), cases[i].keep_slash, &out), 0);
        assert_string_equal(out, cases[i].want);
        free(out);
        out = NULL;
    }
}

static void test_refused(void **state)
{
    ns_aws_creds *c = s3_creds(NULL);
    ns_sigv4_params p = {"s3", "us-east-1", T_20130524, false};
    ns_http_header host[] = {{"Host", "evil.example"}}, auth[] = {{"authorization", "x"}};
    ns_http_req rq;
    ns_sigv4_signed *s = NULL;

    memset(&rq, 0, sizeof(rq));
    rq.method = "GET";
    rq.url = "https://h.example/k";
    rq.headers = host;
    rq.n_headers = 1;
    assert_int_equal(ns_sigv4_sign(&p, c, &rq, &s), NS_E_INVAL);
    rq.headers = auth;
    assert_int_equal(ns_sigv4_sign(&p, c, &rq, &s), NS_E_INVAL);
    rq.n_headers = 0;
    static const char *const bad_urls[] = {
        "ftp://h/k",     "https:///k",        "https://u:p@h/k",  "https://h/k#frag",
        "https://h/a b", "https://h/k?a=%zz", "https://h/k?a=%4",
    };
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
        rq.url = bad_urls[i];
        if (ns_sigv4_sign(&p, c, &rq, &s) != NS_E_INVAL)
            fail_msg("URL '%s' was accepted", bad_urls[i]);
    }
    rq.url = "https://h/k";
    p.region = "";
    assert_int_equal(ns_sigv4_sign(&p, c, &rq, &s), NS_E_INVAL);
    assert_null(s);
    ns_sigv4_signed_free(NULL);
    ns_aws_creds_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_s3_get_object),
        cmocka_unit_test(test_s3_put_object),
        cmocka_unit_test(test_s3_lifecycle_and_list),
        cmocka_unit_test(test_generic_suite),
        cmocka_unit_test(test_session_token_and_host),
        cmocka_unit_test(test_uri_encode),
        cmocka_unit_test(test_refused),
    };
    ns_log_set_level(NS_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
