/* Unit tests for src/common/codec.c: hex and strict base64 (RFC 4648). */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/buf.h"
#include "common/codec.h"
#include "common/err.h"
#include "common/secmem.h"

/* Decoders must leave *out alone when they fail. */
static ns_buf *const SENTINEL = (ns_buf *)(uintptr_t)0x5a5a5a5a;

static void check_hex_refused(const char *s, size_t n)
{
    ns_buf *b = SENTINEL;
    int r = ns_hex_decode(s, n, false, &b);
    if (r != NS_E_FORMAT)
        fail_msg("hex \"%.*s\" (len %zu): got %d, want NS_E_FORMAT", (int)n, s, n, r);
    assert_ptr_equal(b, SENTINEL);
}

static void check_b64_refused(const char *s, size_t n)
{
    ns_buf *b = SENTINEL;
    int r = ns_b64_decode(s, n, false, &b);
    if (r != NS_E_FORMAT)
        fail_msg("base64 \"%.*s\" (len %zu): got %d, want NS_E_FORMAT", (int)n, s, n, r);
    assert_ptr_equal(b, SENTINEL);
}

#define HEX_REFUSED(lit) check_hex_refused((lit), sizeof(lit) - 1)
#define B64_REFUSED(lit) check_b64_refused((lit), sizeof(lit) - 1)

/* ---- hex ---- */

static void test_hex_encode_known(void **state)
{
    static const uint8_t in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff};
    char out[2 * sizeof(in) + 1];

    memset(out, 'X', sizeof(out));
    ns_hex_encode(in, sizeof(in), out);
    assert_string_equal(out, "00017f80abcdefff");

    memset(out, 'X', sizeof(out));
    ns_hex_encode(in, 0, out);
    assert_string_equal(out, "");
}

static void test_hex_round_trip(void **state)
{
    uint8_t all[256];
    char hex[2 * sizeof(all) + 1];
    ns_buf *b = NULL;

    for (size_t i = 0; i < sizeof(all); i++)
        all[i] = (uint8_t)i;
    ns_hex_encode(all, sizeof(all), hex);
    assert_int_equal(strlen(hex), 2 * sizeof(all));
    assert_int_equal(ns_hex_decode(hex, strlen(hex), false, &b), 0);
    assert_int_equal(b->len, sizeof(all));
    assert_memory_equal(b->data, all, sizeof(all));
    assert_false(b->secret);
    ns_buf_free(b);
}

static void test_hex_decode_either_case(void **state)
{
    static const uint8_t want[] = {0xab, 0xcd, 0xef, 0x09};
    ns_buf *b = NULL;

    assert_int_equal(ns_hex_decode("ABcdEF09", 8, false, &b), 0);
    assert_int_equal(b->len, sizeof(want));
    assert_memory_equal(b->data, want, sizeof(want));
    ns_buf_free(b);
}

static void test_hex_decode_uses_n_not_nul(void **state)
{
    ns_buf *b = NULL;

    /* Only the first n characters count; the rest of the string is not read. */
    assert_int_equal(ns_hex_decode("0102zz", 4, false, &b), 0);
    assert_int_equal(b->len, 2);
    assert_int_equal(b->data[0], 0x01);
    assert_int_equal(b->data[1], 0x02);
    ns_buf_free(b);
}

/* Zero digits decode to a zero-length buffer. */
static void test_hex_decode_empty(void **state)
{
    ns_buf *b = NULL;

    assert_int_equal(ns_hex_decode("", 0, false, &b), 0);
    assert_non_null(b);
    assert_int_equal(b->len, 0);
    ns_buf_free(b);
}

static void test_hex_secret(void **state)
{
    ns_buf *b = NULL;

    assert_int_equal(ns_secmem_init(), 0);
    assert_int_equal(ns_hex_decode("00112233", 8, true, &b), 0);
    assert_true(b->secret);
    assert_int_equal(b->len, 4);
    assert_int_equal(b->data[3], 0x33);
    ns_buf_free(b);
}

static void test_hex_refusals(void **state)
{
    HEX_REFUSED("a");                                /* odd length */
    HEX_REFUSED("abc");                              /* odd length */
    HEX_REFUSED("0g");                               /* not a hex digit */
    HEX_REFUSED("g0");                               /* not a hex digit, high nibble */
    HEX_REFUSED("0x12");                             /* prefix */
    HEX_REFUSED(" 1");                               /* whitespace */
    HEX_REFUSED("12 ");                              /* odd length with trailing space */
    HEX_REFUSED("12\n3");                            /* embedded newline */
    HEX_REFUSED("12:34");                            /* separators */
    HEX_REFUSED("1\0");                              /* embedded NUL within n */
    HEX_REFUSED("-1");                               /* sign */
    HEX_REFUSED("\xff\xfe");                         /* high-bit bytes */
    HEX_REFUSED("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaag"); /* bad char at the very end */
}

/* ---- base64 ---- */

/* RFC 4648 §10. */
static const struct {
    const char *plain;
    const char *b64;
} rfc4648_vectors[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_b64_encode_rfc4648(void **state)
{
    for (size_t i = 0; i < sizeof(rfc4648_vectors) / sizeof(rfc4648_vectors[0]); i++) {
        char *s = NULL;
        const char *p = rfc4648_vectors[i].plain;
        assert_int_equal(ns_b64_encode((const uint8_t *)p, strlen(p), &s), 0);
        assert_non_null(s);
        assert_string_equal(s, rfc4648_vectors[i].b64);
        free(s);
    }
}

/* Every non-empty vector decodes to its plaintext. */
static void test_b64_decode_rfc4648(void **state)
{
    for (size_t i = 0; i < sizeof(rfc4648_vectors) / sizeof(rfc4648_vectors[0]); i++) {
        ns_buf *b = NULL;
        const char *p = rfc4648_vectors[i].plain, *s = rfc4648_vectors[i].b64;
        if (*s == '\0')
            continue; /* see test_b64_decode_empty */
        assert_int_equal(ns_b64_decode(s, strlen(s), false, &b), 0);
        assert_non_null(b);
        assert_int_equal(b->len, strlen(p));
        assert_memory_equal(b->data, p, strlen(p));
        ns_buf_free(b);
    }
}

/* RFC 4648 §10: BASE64("") = "", so the empty string is a canonical encoding of zero bytes. */
static void test_b64_decode_empty(void **state)
{
    ns_buf *b = NULL;

    assert_int_equal(ns_b64_decode("", 0, false, &b), 0);
    assert_non_null(b);
    assert_int_equal(b->len, 0);
    ns_buf_free(b);
}

static void test_b64_full_alphabet(void **state)
{
    /* 48 bytes whose encoding uses every one of the 64 characters once, in order. */
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    ns_buf *b = NULL;
    char *s = NULL;

    assert_int_equal(ns_b64_decode(alphabet, 64, false, &b), 0);
    assert_int_equal(b->len, 48);
    assert_int_equal(b->data[0], 0x00);
    assert_int_equal(b->data[1], 0x10);
    assert_int_equal(b->data[2], 0x83);
    assert_int_equal(b->data[47], 0xbf);
    assert_int_equal(ns_b64_encode(b->data, b->len, &s), 0);
    assert_string_equal(s, alphabet);
    free(s);
    ns_buf_free(b);
}

static void test_b64_round_trip(void **state)
{
    uint8_t in[300];
    uint32_t x = 0x12345678;

    for (size_t i = 0; i < sizeof(in); i++) {
        x = x * 1103515245u + 12345u;
        in[i] = (uint8_t)(x >> 16);
    }
    for (size_t n = 1; n <= sizeof(in); n++) {
        char *s = NULL;
        ns_buf *b = NULL;
        assert_int_equal(ns_b64_encode(in, n, &s), 0);
        assert_int_equal(strlen(s), (n + 2) / 3 * 4);
        assert_int_equal(ns_b64_decode(s, strlen(s), n % 2 == 0, &b), 0);
        assert_int_equal(b->len, n);
        assert_memory_equal(b->data, in, n);
        assert_int_equal(b->secret, n % 2 == 0);
        ns_buf_free(b);
        free(s);
    }
}

static void test_b64_secret(void **state)
{
    ns_buf *b = NULL;

    assert_int_equal(ns_secmem_init(), 0);
    assert_int_equal(ns_b64_decode("Zm9vYmFy", 8, true, &b), 0);
    assert_true(b->secret);
    assert_memory_equal(b->data, "foobar", 6);
    ns_buf_free(b);
}

static void test_b64_refuse_padding(void **state)
{
    B64_REFUSED("Zg");        /* missing padding */
    B64_REFUSED("Zg=");       /* short padding */
    B64_REFUSED("Zm8");       /* missing padding */
    B64_REFUSED("Zg===");     /* extra padding */
    B64_REFUSED("Zg====");    /* extra padding */
    B64_REFUSED("Zm9v====");  /* a whole block of padding */
    B64_REFUSED("Zm9v=");     /* padding after a full block */
    B64_REFUSED("====");      /* nothing but padding */
    B64_REFUSED("Z===");      /* three '=' */
    B64_REFUSED("Zm9vYmFyZ"); /* 9 chars */
}

static void test_b64_refuse_whitespace(void **state)
{
    B64_REFUSED(" Zg==");
    B64_REFUSED("Zg== ");
    B64_REFUSED("Zg==\n");
    B64_REFUSED("Zm9v\nYg==");
    B64_REFUSED("Zm9v\r\nYg==");
    B64_REFUSED("Zm 9");  /* length 4, space inside */
    B64_REFUSED("Zm9\t"); /* length 4, tab */
    B64_REFUSED("Zm9v    ");
}

static void test_b64_refuse_trailing_bits(void **state)
{
    B64_REFUSED("Zh=="); /* 'f' is "Zg==" */
    B64_REFUSED("Zm=="); /* low bits of the second char */
    B64_REFUSED("Z/==");
    B64_REFUSED("Zm9=");     /* "fo" is "Zm8=" */
    B64_REFUSED("Zm9vYh=="); /* in the last block only */
    B64_REFUSED("Zm9vYmF=");
}

static void test_b64_refuse_alphabet(void **state)
{
    B64_REFUSED("Zm9-"); /* base64url '-' */
    B64_REFUSED("Zm9_"); /* base64url '_' */
    B64_REFUSED("Zm9*");
    B64_REFUSED("Zm9.");
    B64_REFUSED("Zm9v!A==");
    B64_REFUSED("Zm\0v");   /* embedded NUL within n */
    B64_REFUSED("Zm9\x80"); /* high-bit byte */
    B64_REFUSED("\xffm9v");
    B64_REFUSED("Zg=\xff"); /* bad char where padding belongs */
}

static void test_b64_refuse_inner_padding(void **state)
{
    B64_REFUSED("Zg==Zg=="); /* padding in a block that is not the last */
    B64_REFUSED("Zm9vZg==Zm9v");
    B64_REFUSED("=m9v");
    B64_REFUSED("Z=9v");
    B64_REFUSED("Zm=v");
    B64_REFUSED("Zm=8");
    B64_REFUSED("Z=g=");
    B64_REFUSED("Zm9vY=g=");
}

/* ---- base64url (RFC 4648 §5 without padding, RFC 7515 §2) ---- */

static const struct {
    const char *in, *out;
} b64url_vectors[] = {
    /* RFC 4648 §10, padding removed */
    {"", ""},
    {"f", "Zg"},
    {"fo", "Zm8"},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg"},
    {"fooba", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy"},
    /* the two characters that differ from base64 ('+' and '/') */
    {"\xfb\xff", "-_8"},
    {"\xfb\xef\xbe", "----"},
    {"\xff\xff\xff", "____"},
    /* RFC 7515 appendix A.1: the JWS Protected Header and its encoding */
    {"{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}", "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"},
};

static void test_b64url_encode_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(b64url_vectors) / sizeof(b64url_vectors[0]); i++) {
        const char *in = b64url_vectors[i].in, *want = b64url_vectors[i].out;
        char *s = NULL;
        ns_buf *b = NULL, *back = NULL;

        assert_int_equal(ns_b64url_encode((const uint8_t *)in, strlen(in), &s), 0);
        assert_string_equal(s, want);
        free(s);

        /* The appending form writes the same characters after what is there. */
        assert_int_equal(ns_buf_from("x.", 2, 128, false, &b), 0);
        assert_int_equal(ns_b64url_append(b, (const uint8_t *)in, strlen(in)), 0);
        assert_int_equal(b->len, 2 + strlen(want));
        assert_memory_equal(b->data, "x.", 2);
        assert_memory_equal(b->data + 2, want, strlen(want));
        ns_buf_free(b);

        assert_int_equal(ns_b64url_decode(want, strlen(want), false, &back), 0);
        assert_int_equal(back->len, strlen(in));
        assert_memory_equal(back->data, in, back->len);
        ns_buf_free(back);
    }
}

/* Past the buffer's cap nothing is appended. */
static void test_b64url_append_cap(void **state)
{
    ns_buf *b = NULL;

    (void)state;
    assert_int_equal(ns_buf_from("a", 1, 7, false, &b), 0);
    assert_int_equal(ns_b64url_append(b, (const uint8_t *)"fooba", 5), NS_E_TOO_LARGE); /* needs 1 + 7 */
    assert_int_equal(b->len, 1);
    assert_memory_equal(b->data, "a", 1);
    assert_int_equal(ns_b64url_append(b, (const uint8_t *)"foob", 4), 0); /* exactly 1 + 6 */
    assert_int_equal(b->len, 7);
    assert_memory_equal(b->data, "aZm9vYg", 7);
    ns_buf_free(b);
}

static void test_b64url_decode_refusals(void **state)
{
    static const char *bad[] = {
        "Zg==",          /* padding */
        "Zm8=",   "Z",   /* 1 mod 4 */
        "Zh",            /* non-zero bits below the last byte */
        "+_8",    "-/8", /* base64's characters */
        "Zm 9v",         /* whitespace */
        "Zm9v\n",
    };
    ns_buf *b = (ns_buf *)&b;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ns_b64url_decode(bad[i], strlen(bad[i]), false, &b), NS_E_FORMAT);
    assert_ptr_equal(b, (ns_buf *)&b);
}

/* ---- JWS compact serialization (RFC 7515 §7.1) ---- */

static int sign_hs256(void *ctx, const uint8_t *input, size_t n, ns_buf **sig)
{
    const ns_buf *key = ctx;
    uint8_t *w = NULL;
    unsigned int len = 0;
    int r;

    if ((r = ns_buf_new(32, false, sig)) != 0 || (r = ns_buf_extend(*sig, 32, &w)) != 0)
        return r;
    if (HMAC(EVP_sha256(), key->data, (int)key->len, input, n, w, &len) == NULL || len != 32)
        return NS_E_CRYPTO;
    return 0;
}

static int sign_fails(void *ctx, const uint8_t *input, size_t n, ns_buf **sig)
{
    (void)ctx, (void)input, (void)n, (void)sig;
    return NS_E_TOKEN;
}

/* RFC 7515 appendix A.1: the HS256 example, byte for byte. */
static void test_jose_compact_rfc7515_a1(void **state)
{
    static const char header[] = "{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}";
    static const char payload[] =
        "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";
    static const char k[] =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    static const char want[] =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    ns_buf *key = NULL, *out = NULL;

    (void)state;
    assert_int_equal(ns_b64url_decode(k, strlen(k), true, &key), 0);
    assert_int_equal(ns_jose_compact_sign(header, strlen(header), (const uint8_t *)payload, strlen(payload),
                                          sign_hs256, key, strlen(want), true, &out),
                     0); /* exactly at max */
    assert_int_equal(out->len, strlen(want));
    assert_string_equal((const char *)out->data, want); /* NUL-terminated */
    assert_true(out->secret);
    ns_buf_free(out);

    out = (ns_buf *)&out;
    assert_int_equal(ns_jose_compact_sign(header, strlen(header), (const uint8_t *)payload, strlen(payload),
                                          sign_hs256, key, strlen(want) - 1, false, &out),
                     NS_E_TOO_LARGE);
    assert_int_equal(ns_jose_compact_sign(header, strlen(header), (const uint8_t *)payload, strlen(payload),
                                          sign_fails, NULL, 8192, false, &out),
                     NS_E_TOKEN); /* the signer's error as it is */
    assert_ptr_equal(out, (ns_buf *)&out);
    ns_buf_free(key);
}

/* ---- percent-encoding (RFC 3986 §2) and hex digits ---- */

static void test_pct_encode(void **state)
{
    static const char unres[] = "ABCXYZabcxyz0189-._~";
    ns_buf *b = NULL;

    (void)state;
    assert_int_equal(ns_buf_new(256, false, &b), 0);
    assert_int_equal(ns_pct_encode_append(b, unres, strlen(unres), false), 0); /* unreserved: as they are */
    assert_int_equal(ns_pct_encode_append(b, "a b+/%\xc3\xa9\x00z", 10, false), 0);
    assert_int_equal(ns_pct_encode_append(b, "/x/", 3, true), 0);
    assert_int_equal(b->len, strlen("ABCXYZabcxyz0189-._~a%20b%2B%2F%25%C3%A9%00z/x/"));
    assert_memory_equal(b->data, "ABCXYZabcxyz0189-._~a%20b%2B%2F%25%C3%A9%00z/x/", b->len);
    ns_buf_free(b);

    /* Past the cap: NS_E_TOO_LARGE. */
    assert_int_equal(ns_buf_new(2, false, &b), 0);
    assert_int_equal(ns_pct_encode_append(b, " ", 1, false), NS_E_TOO_LARGE);
    ns_buf_free(b);

    assert_int_equal(ns_hex_digit('0'), 0);
    assert_int_equal(ns_hex_digit('9'), 9);
    assert_int_equal(ns_hex_digit('a'), 10);
    assert_int_equal(ns_hex_digit('F'), 15);
    assert_int_equal(ns_hex_digit('g'), -1);
    assert_int_equal(ns_hex_digit('/'), -1);
    assert_int_equal(ns_hex_digit('\0'), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_encode_known),
        cmocka_unit_test(test_hex_round_trip),
        cmocka_unit_test(test_hex_decode_either_case),
        cmocka_unit_test(test_hex_decode_uses_n_not_nul),
        cmocka_unit_test(test_hex_secret),
        cmocka_unit_test(test_hex_refusals),
        cmocka_unit_test(test_b64_encode_rfc4648),
        cmocka_unit_test(test_b64_decode_rfc4648),
        cmocka_unit_test(test_b64_decode_empty),
        cmocka_unit_test(test_b64_full_alphabet),
        cmocka_unit_test(test_b64_round_trip),
        cmocka_unit_test(test_b64_secret),
        cmocka_unit_test(test_b64_refuse_padding),
        cmocka_unit_test(test_b64_refuse_whitespace),
        cmocka_unit_test(test_b64_refuse_trailing_bits),
        cmocka_unit_test(test_b64_refuse_alphabet),
        cmocka_unit_test(test_b64_refuse_inner_padding),
        cmocka_unit_test(test_b64url_encode_vectors),
        cmocka_unit_test(test_b64url_append_cap),
        cmocka_unit_test(test_b64url_decode_refusals),
        cmocka_unit_test(test_jose_compact_rfc7515_a1),
        cmocka_unit_test(test_pct_encode),
        /* Last: under the sanitizer build this currently aborts the process (UBSan in ns_buf_extend). */
        cmocka_unit_test(test_hex_decode_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
