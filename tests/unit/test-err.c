/* Unit tests for src/common/err.c: descriptions, categories and exit codes of every error code. */
#include "ns-build.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"

#define UNKNOWN "unknown error"

/* The expected category and process exit code of every code in err.h, written out by hand (not derived
 * from the numbering) so that renumbering a code is caught. Exit codes: doc/cli.md. */
static const struct {
    int code;
    const char *name;
    enum ns_err_category cat;
    int exit_code;
} codes[] = {
    {NS_OK, "NS_OK", NS_CAT_OK, 0},
    {NS_E_INVAL, "NS_E_INVAL", NS_CAT_BAD_INPUT, 8},
    {NS_E_FORMAT, "NS_E_FORMAT", NS_CAT_BAD_INPUT, 8},
    {NS_E_VERSION, "NS_E_VERSION", NS_CAT_BAD_INPUT, 8},
    {NS_E_TOO_LARGE, "NS_E_TOO_LARGE", NS_CAT_BAD_INPUT, 8},
    {NS_E_NAME, "NS_E_NAME", NS_CAT_BAD_INPUT, 8},
    {NS_E_KEY_FORMAT, "NS_E_KEY_FORMAT", NS_CAT_BAD_INPUT, 8},
    {NS_E_NOT_FOUND, "NS_E_NOT_FOUND", NS_CAT_NOT_FOUND, 3},
    {NS_E_INTEGRITY, "NS_E_INTEGRITY", NS_CAT_AUTH, 4},
    {NS_E_KEK_UNKNOWN, "NS_E_KEK_UNKNOWN", NS_CAT_AUTH, 4},
    {NS_E_KEK_WRONG, "NS_E_KEK_WRONG", NS_CAT_AUTH, 4},
    {NS_E_PIN, "NS_E_PIN", NS_CAT_AUTH, 4},
    {NS_E_PERM, "NS_E_PERM", NS_CAT_AUTH, 4},
    {NS_E_KEY_UNKNOWN, "NS_E_KEY_UNKNOWN", NS_CAT_AUTH, 4},
    {NS_E_EXPIRED, "NS_E_EXPIRED", NS_CAT_AUTH, 9},
    {NS_E_CLAIMS, "NS_E_CLAIMS", NS_CAT_AUTH, 10},
    {NS_E_REPLAYED, "NS_E_REPLAYED", NS_CAT_AUTH, 11},
    {NS_E_SOURCE_DENIED, "NS_E_SOURCE_DENIED", NS_CAT_AUTH, 4},
    {NS_E_TOKEN, "NS_E_TOKEN", NS_CAT_TOKEN, 5},
    {NS_E_TOKEN_UNAVAILABLE, "NS_E_TOKEN_UNAVAILABLE", NS_CAT_TOKEN, 5},
    {NS_E_MECHANISM, "NS_E_MECHANISM", NS_CAT_TOKEN, 5},
    {NS_E_TOKEN_OBJECT, "NS_E_TOKEN_OBJECT", NS_CAT_TOKEN, 5},
    {NS_E_SOURCE, "NS_E_SOURCE", NS_CAT_TOKEN, 5},
    {NS_E_STORAGE, "NS_E_STORAGE", NS_CAT_STORAGE, 6},
    {NS_E_EXISTS, "NS_E_EXISTS", NS_CAT_CONFLICT, 7},
    {NS_E_CONFLICT, "NS_E_CONFLICT", NS_CAT_CONFLICT, 7},
    {NS_E_RATE_LIMITED, "NS_E_RATE_LIMITED", NS_CAT_CONFLICT, 7},
    {NS_E_INTERNAL, "NS_E_INTERNAL", NS_CAT_INTERNAL, 1},
    {NS_E_NOMEM, "NS_E_NOMEM", NS_CAT_INTERNAL, 1},
    {NS_E_CRYPTO, "NS_E_CRYPTO", NS_CAT_INTERNAL, 1},
    {NS_E_USAGE, "NS_E_USAGE", NS_CAT_USAGE, 2},
    {NS_E_CONFIG, "NS_E_CONFIG", NS_CAT_USAGE, 2},
};

#define NCODES (sizeof(codes) / sizeof(codes[0]))

static void test_strerror_known(void **state)
{
    for (size_t i = 0; i < NCODES; i++) {
        const char *s = ns_strerror(codes[i].code);
        if (s == NULL || *s == '\0' || strcmp(s, UNKNOWN) == 0)
            fail_msg("%s (%d): no description", codes[i].name, codes[i].code);
    }
}

static void test_strerror_distinct(void **state)
{
    for (size_t i = 0; i < NCODES; i++)
        for (size_t j = i + 1; j < NCODES; j++)
            if (strcmp(ns_strerror(codes[i].code), ns_strerror(codes[j].code)) == 0)
                fail_msg("%s and %s share the description \"%s\"", codes[i].name, codes[j].name,
                         ns_strerror(codes[i].code));
}

static void test_strerror_unknown(void **state)
{
    static const int unknown[] = {1, 42, -1, -99, -106, -150, -201, -999, -1000, INT_MIN, INT_MAX};

    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        const char *s = ns_strerror(unknown[i]);
        assert_non_null(s);
        assert_string_equal(s, UNKNOWN);
    }
}

static void test_categories(void **state)
{
    for (size_t i = 0; i < NCODES; i++) {
        enum ns_err_category got = ns_err_category(codes[i].code);
        if (got != codes[i].cat)
            fail_msg("%s (%d): category %d, want %d", codes[i].name, codes[i].code, (int)got,
                     (int)codes[i].cat);
    }
}

static void test_exit_codes(void **state)
{
    for (size_t i = 0; i < NCODES; i++) {
        int got = ns_err_exit_code(codes[i].code);
        if (got != codes[i].exit_code)
            fail_msg("%s (%d): exit code %d, want %d", codes[i].name, codes[i].code, got, codes[i].exit_code);
    }
    /* The ones the CLI documentation and the integration tests rely on, spelled out. */
    assert_int_equal(ns_err_exit_code(0), 0);
    assert_int_equal(ns_err_exit_code(NS_E_INTERNAL), 1);
    assert_int_equal(ns_err_exit_code(NS_E_USAGE), 2);
    assert_int_equal(ns_err_exit_code(NS_E_NOT_FOUND), 3);
    assert_int_equal(ns_err_exit_code(NS_E_INTEGRITY), 4);
    assert_int_equal(ns_err_exit_code(NS_E_KEK_UNKNOWN), 4);
    assert_int_equal(ns_err_exit_code(NS_E_TOKEN_UNAVAILABLE), 5);
    assert_int_equal(ns_err_exit_code(NS_E_STORAGE), 6);
    assert_int_equal(ns_err_exit_code(NS_E_EXISTS), 7);
    assert_int_equal(ns_err_exit_code(NS_E_FORMAT), 8);
}

/* Positive values and codes beyond the last category are not errors we define: internal, exit 1. */
static void test_out_of_range_is_internal(void **state)
{
    static const int odd[] = {1, 42, INT_MAX, -900, -999, -1000, -12345, INT_MIN};

    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        assert_int_equal(ns_err_category(odd[i]), NS_CAT_INTERNAL);
        assert_int_equal(ns_err_exit_code(odd[i]), 1);
    }
}

/* A negative value is never success: -1 .. -99 (e.g. a stray libc-style -1) must not map to
 * NS_CAT_OK / exit 0. err.h: "NS_CAT_INTERNAL for unknown codes". */
static void test_small_negative_is_not_ok(void **state)
{
    static const int odd[] = {-1, -2, -50, -99};

    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        if (ns_err_category(odd[i]) == NS_CAT_OK || ns_err_exit_code(odd[i]) == 0)
            fail_msg("%d: category %d, exit code %d (an error reported as success)", odd[i],
                     (int)ns_err_category(odd[i]), ns_err_exit_code(odd[i]));
        assert_int_equal(ns_err_category(odd[i]), NS_CAT_INTERNAL);
        assert_int_equal(ns_err_exit_code(odd[i]), 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_known),
        cmocka_unit_test(test_strerror_distinct),
        cmocka_unit_test(test_strerror_unknown),
        cmocka_unit_test(test_categories),
        cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_out_of_range_is_internal),
        cmocka_unit_test(test_small_negative_is_not_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
