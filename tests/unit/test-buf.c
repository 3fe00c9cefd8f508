/* Unit tests for src/common/buf.c: the capped owning buffer and the consume-only cursor. */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/crypto.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secmem.h"

/* A cursor is unchanged when it still points at the same byte with the same remaining length. */
#define assert_cur_at(c, ptr, n)                                                                             \
    do {                                                                                                     \
        assert_ptr_equal((c).p, (ptr));                                                                      \
        assert_int_equal((c).len, (n));                                                                      \
    } while (0)

/* ---- ns_buf ---- */

static void test_buf_new_empty(void **state)
{
    ns_buf *b = NULL;

    assert_int_equal(ns_buf_new(16, false, &b), 0);
    assert_non_null(b);
    assert_int_equal(b->len, 0);
    assert_int_equal(b->max, 16);
    assert_false(b->secret);
    ns_buf_free(b);
    ns_buf_free(NULL); /* accepted */
}

static void test_buf_append_up_to_cap(void **state)
{
    ns_buf *b = NULL;
    uint8_t src[10];

    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (uint8_t)(i + 1);
    assert_int_equal(ns_buf_new(10, false, &b), 0);
    assert_int_equal(ns_buf_append(b, src, 6), 0);
    assert_int_equal(ns_buf_append(b, src + 6, 4), 0); /* exactly at the cap */
    assert_int_equal(b->len, 10);
    assert_memory_equal(b->data, src, 10);
    assert_int_equal(ns_buf_append(b, src, 0), 0); /* empty append at the cap is fine */
    assert_int_equal(b->len, 10);
    ns_buf_free(b);
}

static void test_buf_cap_leaves_buffer_unchanged(void **state)
{
    ns_buf *b = NULL;
    uint8_t *where = (uint8_t *)&where; /* sentinel: must not be overwritten */
    uint8_t *sentinel = where;
    const uint8_t src[8] = {1, 2, 3, 4, 5, 6, 7, 8};

    assert_int_equal(ns_buf_new(5, false, &b), 0);
    assert_int_equal(ns_buf_append(b, src, 3), 0);
    uint8_t *data = b->data;
    size_t cap = b->cap;

    assert_int_equal(ns_buf_append(b, src, 3), NS_E_TOO_LARGE);
    assert_int_equal(ns_buf_put_u32(b, 0xdeadbeef), NS_E_TOO_LARGE);
    assert_int_equal(ns_buf_reserve(b, 3), NS_E_TOO_LARGE);
    assert_int_equal(ns_buf_reserve(b, SIZE_MAX), NS_E_TOO_LARGE); /* no overflow in len + extra */
    assert_int_equal(ns_buf_append(b, src, SIZE_MAX), NS_E_TOO_LARGE);
    assert_int_equal(ns_buf_extend(b, 3, &where), NS_E_TOO_LARGE);
    assert_ptr_equal(where, sentinel);

    assert_int_equal(b->len, 3);
    assert_ptr_equal(b->data, data);
    assert_int_equal(b->cap, cap);
    assert_int_equal(b->max, 5);
    assert_memory_equal(b->data, src, 3);

    /* What still fits still works after the refusals. */
    assert_int_equal(ns_buf_put_u16(b, 0x0405), 0);
    assert_int_equal(ns_buf_put_u8(b, 9), NS_E_TOO_LARGE);
    assert_int_equal(b->len, 5);
    assert_memory_equal(b->data, src, 5);
    ns_buf_free(b);
}

static void test_buf_zero_max(void **state)
{
    ns_buf *b = NULL;

    assert_int_equal(ns_buf_new(0, false, &b), 0);
    assert_int_equal(ns_buf_append(b, "", 0), 0);
    assert_int_equal(ns_buf_put_u8(b, 1), NS_E_TOO_LARGE);
    assert_int_equal(b->len, 0);
    ns_buf_free(b);
}

static void test_buf_from(void **state)
{
    ns_buf *b = NULL;
    ns_buf *sentinel = (ns_buf *)&sentinel;
    ns_buf *b2 = sentinel;

    assert_int_equal(ns_buf_from("hello", 5, 5, false, &b), 0);
    assert_int_equal(b->len, 5);
    assert_memory_equal(b->data, "hello", 5);
    ns_buf_free(b);

    assert_int_equal(ns_buf_from("hello", 5, 4, false, &b2), NS_E_TOO_LARGE);
    assert_ptr_equal(b2, sentinel); /* out untouched on failure */
}

static void test_buf_grows_and_keeps_contents(void **state)
{
    ns_buf *b = NULL;

    assert_int_equal(ns_buf_new(1000, false, &b), 0);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(ns_buf_put_u8(b, (uint8_t)(i * 7)), 0);
    assert_int_equal(ns_buf_put_u8(b, 0), NS_E_TOO_LARGE);
    assert_int_equal(b->len, 1000);
    assert_true(b->cap <= b->max); /* never allocates past the cap */
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(b->data[i], (uint8_t)(i * 7));
    ns_buf_free(b);
}

static void test_buf_big_endian(void **state)
{
    ns_buf *b = NULL;
    static const uint8_t want[] = {0xab, 0x01, 0x02, 0x01, 0x02, 0x03, 0x04,
                                   0xff, 0xfe, 0xfd, 0xfc, 0x00, 0x00};

    assert_int_equal(ns_buf_new(64, false, &b), 0);
    assert_int_equal(ns_buf_put_u8(b, 0xab), 0);
    assert_int_equal(ns_buf_put_u16(b, 0x0102), 0);
    assert_int_equal(ns_buf_put_u32(b, 0x01020304), 0);
    assert_int_equal(ns_buf_put_u32(b, 0xfffefdfc), 0);
    assert_int_equal(ns_buf_put_u16(b, 0), 0);
    assert_int_equal(b->len, sizeof(want));
    assert_memory_equal(b->data, want, sizeof(want));

    /* And the cursor reads back what the buffer wrote. */
    ns_cur c = ns_cur_init(b->data, b->len);
    uint8_t v8;
    uint16_t v16;
    uint32_t v32;
    assert_int_equal(ns_cur_u8(&c, &v8), 0);
    assert_int_equal(v8, 0xab);
    assert_int_equal(ns_cur_u16(&c, &v16), 0);
    assert_int_equal(v16, 0x0102);
    assert_int_equal(ns_cur_u32(&c, &v32), 0);
    assert_int_equal(v32, 0x01020304);
    assert_int_equal(ns_cur_u32(&c, &v32), 0);
    assert_int_equal(v32, 0xfffefdfcu);
    assert_int_equal(ns_cur_u16(&c, &v16), 0);
    assert_int_equal(v16, 0);
    assert_int_equal(ns_cur_end(&c), 0);
    ns_buf_free(b);
}

static void test_buf_extend_zeroes(void **state)
{
    ns_buf *b = NULL;
    uint8_t *w = NULL;

    assert_int_equal(ns_buf_new(32, false, &b), 0);
    assert_int_equal(ns_buf_append(b, "abcdefgh", 8), 0);
    ns_buf_truncate(b, 2); /* non-secret: the tail is not wiped ... */
    assert_int_equal(ns_buf_extend(b, 6, &w), 0);
    assert_ptr_equal(w, b->data + 2);
    assert_int_equal(b->len, 8);
    for (size_t i = 0; i < 6; i++) /* ... but extend hands out zeroed bytes */
        assert_int_equal(w[i], 0);
    assert_memory_equal(b->data, "ab", 2);
    ns_buf_free(b);
}

static void test_buf_truncate(void **state)
{
    ns_buf *b = NULL;

    assert_int_equal(ns_buf_from("0123456789", 10, 10, false, &b), 0);
    ns_buf_truncate(b, 10); /* n == len: no-op */
    assert_int_equal(b->len, 10);
    ns_buf_truncate(b, 4);
    assert_int_equal(b->len, 4);
    assert_memory_equal(b->data, "0123", 4);
    assert_int_equal(ns_buf_append(b, "abcdef", 6), 0); /* room is back up to max */
    assert_int_equal(b->len, 10);
    assert_memory_equal(b->data, "0123abcdef", 10);
    ns_buf_truncate(b, 0);
    assert_int_equal(b->len, 0);
    ns_buf_free(b);
}

static void test_buf_secret(void **state)
{
    ns_buf *b = NULL;
    uint8_t key[100];

    assert_int_equal(ns_secmem_init(), 0);
    assert_int_equal(ns_secmem_init(), 0); /* idempotent */
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(0xa0 ^ i);

    assert_int_equal(ns_buf_new(sizeof(key), true, &b), 0);
    assert_true(b->secret);
    /* Grow through several reallocations. */
    for (size_t i = 0; i < sizeof(key); i += 10)
        assert_int_equal(ns_buf_append(b, key + i, 10), 0);
    assert_int_equal(b->len, sizeof(key));
    assert_memory_equal(b->data, key, sizeof(key));
    assert_true(CRYPTO_secure_allocated(b->data)); /* lives in the secure heap */
    assert_int_equal(ns_buf_put_u8(b, 0), NS_E_TOO_LARGE);

    /* Truncating a secret buffer wipes the dropped bytes. */
    ns_buf_truncate(b, 40);
    assert_int_equal(b->len, 40);
    assert_memory_equal(b->data, key, 40);
    for (size_t i = 40; i < sizeof(key); i++)
        assert_int_equal(b->data[i], 0);
    assert_int_equal(ns_buf_append(b, key + 40, 60), 0);
    assert_memory_equal(b->data, key, sizeof(key));
    ns_buf_free(b);

    b = NULL;
    assert_int_equal(ns_buf_from(key, 32, 32, true, &b), 0);
    assert_true(b->secret);
    assert_true(CRYPTO_secure_allocated(b->data));
    assert_memory_equal(b->data, key, 32);
    ns_buf_free(b);
}

/* ---- ns_cur ---- */

static void test_cur_reads(void **state)
{
    static const uint8_t in[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b};
    ns_cur c = ns_cur_init(in, sizeof(in));
    uint8_t v8;
    uint16_t v16;
    uint32_t v32;
    const uint8_t *p;
    uint8_t copy[2];

    assert_int_equal(ns_cur_u8(&c, &v8), 0);
    assert_int_equal(v8, 0x01);
    assert_int_equal(ns_cur_u16(&c, &v16), 0);
    assert_int_equal(v16, 0x0203);
    assert_int_equal(ns_cur_u32(&c, &v32), 0);
    assert_int_equal(v32, 0x04050607);
    assert_int_equal(ns_cur_bytes(&c, 2, &p), 0);
    assert_ptr_equal(p, in + 7); /* borrowed, not copied */
    assert_int_equal(ns_cur_end(&c), NS_E_FORMAT);
    assert_int_equal(ns_cur_copy(&c, copy, 2), 0);
    assert_int_equal(copy[0], 0x0a);
    assert_int_equal(copy[1], 0x0b);
    assert_cur_at(c, in + sizeof(in), 0);
    assert_int_equal(ns_cur_end(&c), 0);
    assert_int_equal(ns_cur_bytes(&c, 0, &p), 0); /* zero bytes from an empty cursor */
}

static void test_cur_past_end(void **state)
{
    static const uint8_t in[] = {0xaa, 0xbb, 0xcc};
    uint8_t v8 = 0x5a;
    uint16_t v16 = 0x5a5a;
    uint32_t v32 = 0x5a5a5a5a;
    const uint8_t *sentinel = (const uint8_t *)&sentinel;
    const uint8_t *p = sentinel;
    uint8_t copy[4] = {0x5a, 0x5a, 0x5a, 0x5a};
    ns_cur sub = {sentinel, 77};

    for (size_t len = 0; len <= sizeof(in); len++) {
        ns_cur c = ns_cur_init(in, len);
        if (len < 1) {
            assert_int_equal(ns_cur_u8(&c, &v8), NS_E_FORMAT);
            assert_cur_at(c, in, len);
        }
        if (len < 2) {
            assert_int_equal(ns_cur_u16(&c, &v16), NS_E_FORMAT);
            assert_cur_at(c, in, len);
        }
        assert_int_equal(ns_cur_u32(&c, &v32), NS_E_FORMAT);
        assert_cur_at(c, in, len);
        assert_int_equal(ns_cur_bytes(&c, len + 1, &p), NS_E_FORMAT);
        assert_cur_at(c, in, len);
        assert_int_equal(ns_cur_copy(&c, copy, len + 1), NS_E_FORMAT);
        assert_cur_at(c, in, len);
        assert_int_equal(ns_cur_sub(&c, len + 1, &sub), NS_E_FORMAT);
        assert_cur_at(c, in, len);
        assert_int_equal(ns_cur_bytes(&c, SIZE_MAX, &p), NS_E_FORMAT);
        assert_cur_at(c, in, len);
    }
    /* Outputs untouched on failure. */
    assert_int_equal(v8, 0x5a);
    assert_int_equal(v16, 0x5a5a);
    assert_int_equal(v32, 0x5a5a5a5a);
    assert_ptr_equal(p, sentinel);
    assert_int_equal(copy[0], 0x5a);
    assert_int_equal(copy[3], 0x5a);
    assert_ptr_equal(sub.p, sentinel);
    assert_int_equal(sub.len, 77);

    /* After a partial consumption, the failure still leaves the cursor where it was. */
    ns_cur c = ns_cur_init(in, sizeof(in));
    assert_int_equal(ns_cur_u16(&c, &v16), 0);
    assert_int_equal(ns_cur_u16(&c, &v16), NS_E_FORMAT);
    assert_cur_at(c, in + 2, 1);
    assert_int_equal(ns_cur_u8(&c, &v8), 0);
    assert_int_equal(v8, 0xcc);
    assert_int_equal(ns_cur_u8(&c, &v8), NS_E_FORMAT);
    assert_cur_at(c, in + 3, 0);
}

static void test_cur_empty_null(void **state)
{
    ns_cur c = ns_cur_init(NULL, 0);
    uint8_t v8;

    assert_int_equal(ns_cur_end(&c), 0);
    assert_int_equal(ns_cur_u8(&c, &v8), NS_E_FORMAT);
    assert_int_equal(c.len, 0);
}

static void test_cur_sub(void **state)
{
    static const uint8_t in[] = {1, 2, 3, 4, 5, 6};
    ns_cur c = ns_cur_init(in, sizeof(in));
    ns_cur s;
    uint16_t v16;
    uint8_t v8;

    assert_int_equal(ns_cur_sub(&c, 3, &s), 0);
    assert_cur_at(s, in, 3);
    assert_cur_at(c, in + 3, 3);
    /* The sub-cursor is bounded by its own length, although the parent has more bytes. */
    assert_int_equal(ns_cur_u16(&s, &v16), 0);
    assert_int_equal(v16, 0x0102);
    assert_int_equal(ns_cur_u16(&s, &v16), NS_E_FORMAT);
    assert_cur_at(s, in + 2, 1);
    assert_int_equal(ns_cur_end(&s), NS_E_FORMAT);
    assert_int_equal(ns_cur_u8(&s, &v8), 0);
    assert_int_equal(v8, 3);
    assert_int_equal(ns_cur_end(&s), 0);
    /* Reading the sub-cursor did not move the parent. */
    assert_cur_at(c, in + 3, 3);
    assert_int_equal(ns_cur_sub(&c, 3, &s), 0);
    assert_int_equal(ns_cur_end(&c), 0);
    assert_int_equal(ns_cur_sub(&c, 0, &s), 0); /* empty sub-cursor at the end */
    assert_int_equal(s.len, 0);
    assert_int_equal(ns_cur_end(&s), 0);
}

static void test_cur_lp16(void **state)
{
    /* Two fields: len 3 "abc", len 0, then a trailing byte. */
    static const uint8_t in[] = {0x00, 0x03, 'a', 'b', 'c', 0x00, 0x00, 0x7f};
    ns_cur c = ns_cur_init(in, sizeof(in));
    ns_cur s;
    uint8_t v8;

    assert_int_equal(ns_cur_lp16(&c, 1, 3, &s), 0);
    assert_cur_at(s, in + 2, 3);
    assert_memory_equal(s.p, "abc", 3);
    assert_cur_at(c, in + 5, 3);
    assert_int_equal(ns_cur_lp16(&c, 0, 0, &s), 0);
    assert_int_equal(s.len, 0);
    assert_int_equal(ns_cur_end(&c), NS_E_FORMAT); /* leftover byte */
    assert_int_equal(ns_cur_u8(&c, &v8), 0);
    assert_int_equal(ns_cur_end(&c), 0);
}

static void test_cur_lp16_bounds(void **state)
{
    static const uint8_t three[] = {0x00, 0x03, 'a', 'b', 'c'};
    static const uint8_t big[] = {0xff, 0xff, 'x'}; /* claims 65535 bytes */
    ns_cur s;

    /* Length exactly at min and at max is accepted. */
    for (size_t min = 0; min <= 3; min++) {
        ns_cur c = ns_cur_init(three, sizeof(three));
        assert_int_equal(ns_cur_lp16(&c, min, 3, &s), 0);
        assert_int_equal(s.len, 3);
        assert_int_equal(ns_cur_end(&c), 0);
    }
    {
        ns_cur c = ns_cur_init(three, sizeof(three));
        assert_int_equal(ns_cur_lp16(&c, 3, SIZE_MAX, &s), 0);
        assert_int_equal(s.len, 3);
    }
    /* min - 1 and max + 1 around the actual length are refused. */
    {
        ns_cur c = ns_cur_init(three, sizeof(three));
        assert_int_equal(ns_cur_lp16(&c, 4, 10, &s), NS_E_FORMAT);
    }
    {
        ns_cur c = ns_cur_init(three, sizeof(three));
        assert_int_equal(ns_cur_lp16(&c, 0, 2, &s), NS_E_FORMAT);
    }
    /* A length beyond the remaining bytes is refused even when within [min, max]. */
    {
        ns_cur c = ns_cur_init(big, sizeof(big));
        assert_int_equal(ns_cur_lp16(&c, 0, 65535, &s), NS_E_FORMAT);
    }
    {
        ns_cur c = ns_cur_init(three, 4); /* one byte short */
        assert_int_equal(ns_cur_lp16(&c, 0, 3, &s), NS_E_FORMAT);
    }
    /* Truncated length prefix. */
    {
        ns_cur c = ns_cur_init(three, 1);
        assert_int_equal(ns_cur_lp16(&c, 0, 3, &s), NS_E_FORMAT);
        assert_cur_at(c, three, 1);
    }
}

/* Every failed read leaves the cursor unchanged, including an lp16 whose length is out of bounds or
 * runs past the end (the length prefix must not be consumed either). */
static void test_cur_lp16_failure_leaves_cursor(void **state)
{
    static const uint8_t three[] = {0x00, 0x03, 'a', 'b', 'c'};
    ns_cur sentinel_sub = {three, 99};
    ns_cur s = sentinel_sub;

    {
        ns_cur c = ns_cur_init(three, sizeof(three));
        assert_int_equal(ns_cur_lp16(&c, 4, 10, &s), NS_E_FORMAT); /* below min */
        assert_cur_at(c, three, sizeof(three));
    }
    {
        ns_cur c = ns_cur_init(three, sizeof(three));
        assert_int_equal(ns_cur_lp16(&c, 0, 2, &s), NS_E_FORMAT); /* above max */
        assert_cur_at(c, three, sizeof(three));
    }
    {
        ns_cur c = ns_cur_init(three, 4);
        assert_int_equal(ns_cur_lp16(&c, 0, 3, &s), NS_E_FORMAT); /* past the end */
        assert_cur_at(c, three, 4);
    }
    assert_ptr_equal(s.p, sentinel_sub.p);
    assert_int_equal(s.len, sentinel_sub.len);
}

/* Zero-length operations on an empty buffer (data == NULL) and on a NULL cursor are valid calls: they
 * must succeed without pointer arithmetic on NULL or memset(NULL, ...), which UBSan reports (and the
 * sanitizer build aborts on). Listed last in main() because a sanitizer abort ends the process. */
static void test_buf_extend_zero_on_empty(void **state)
{
    ns_buf *b = NULL;
    uint8_t *w = NULL;

    assert_int_equal(ns_buf_new(8, false, &b), 0);
    assert_int_equal(ns_buf_extend(b, 0, &w), 0);
    assert_int_equal(b->len, 0);
    ns_buf_free(b);
}

static void test_cur_zero_read_on_null(void **state)
{
    ns_cur c = ns_cur_init(NULL, 0);
    const uint8_t *p = NULL;
    ns_cur s;

    assert_int_equal(ns_cur_bytes(&c, 0, &p), 0);
    assert_int_equal(ns_cur_sub(&c, 0, &s), 0);
    assert_int_equal(s.len, 0);
    assert_int_equal(ns_cur_end(&c), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_new_empty),
        cmocka_unit_test(test_buf_append_up_to_cap),
        cmocka_unit_test(test_buf_cap_leaves_buffer_unchanged),
        cmocka_unit_test(test_buf_zero_max),
        cmocka_unit_test(test_buf_from),
        cmocka_unit_test(test_buf_grows_and_keeps_contents),
        cmocka_unit_test(test_buf_big_endian),
        cmocka_unit_test(test_buf_extend_zeroes),
        cmocka_unit_test(test_buf_truncate),
        cmocka_unit_test(test_buf_secret),
        cmocka_unit_test(test_cur_reads),
        cmocka_unit_test(test_cur_past_end),
        cmocka_unit_test(test_cur_empty_null),
        cmocka_unit_test(test_cur_sub),
        cmocka_unit_test(test_cur_lp16),
        cmocka_unit_test(test_cur_lp16_bounds),
        cmocka_unit_test(test_cur_lp16_failure_leaves_cursor),
        cmocka_unit_test(test_buf_extend_zero_on_empty),
        cmocka_unit_test(test_cur_zero_read_on_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
