/* Unit tests for src/common/log.c. Regression (issue 12, item 8, log injection): a string from a peer — a
 * JWT kid with newlines, a path from a server's answer — passed to ns_log could forge whole log lines or
 * carry terminal escapes. Every line is now escaped at the sink. */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"

static void test_escape_plain(void **state)
{
    char out[64];
    (void)state;

    assert_int_equal(ns_log_escape("GET /v1/agent/files 200", out, sizeof(out)), 23);
    assert_string_equal(out, "GET /v1/agent/files 200");
}

static void test_escape_controls(void **state)
{
    char out[128];
    (void)state;

    ns_log_escape("a\nnstance-secretsd: request GET /x 200\r\x1b[2J\x7f\\b", out, sizeof(out));
    assert_string_equal(out, "a\\x0anstance-secretsd: request GET /x 200\\x0d\\x1b[2J\\x7f\\\\b");
    ns_log_escape("caf\xc3\xa9\t", out, sizeof(out));
    assert_string_equal(out, "caf\\xc3\\xa9\\x09");
}

static void test_escape_truncates_whole(void **state)
{
    char out[6];
    (void)state;

    /* "ab" + "\x0a" needs 2 + 4 + NUL = 7: the escape does not fit whole and is left out, never cut. */
    assert_int_equal(ns_log_escape("ab\ncd", out, sizeof(out)), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(ns_log_escape("abcdefgh", out, sizeof(out)), 5);
    assert_string_equal(out, "abcde");
    assert_int_equal(ns_log_escape("x", out, 0), 0);
}

/* ns_log itself: what reaches stderr is exactly one line whatever the arguments hold. */
static void test_log_one_line(void **state)
{
    char path[] = "/tmp/ns-test-log-XXXXXX", buf[4096];
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    FILE *f;
    size_t n;
    (void)state;

    assert_true(fd >= 0 && saved >= 0);
    fflush(stderr);
    assert_true(dup2(fd, STDERR_FILENO) == STDERR_FILENO);
    ns_log_set_level(NS_LOG_INFO);
    ns_log(NS_LOG_INFO, "JWT kid '%s' is not a key", "k\nnstance-secretsd: error: forged");
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) == STDERR_FILENO);
    close(saved);
    assert_non_null(f = fdopen(fd, "r"));
    rewind(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
    assert_string_equal(
        buf, "nstance-secrets: info: JWT kid 'k\\x0anstance-secretsd: error: forged' is not a key\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_plain),
        cmocka_unit_test(test_escape_controls),
        cmocka_unit_test(test_escape_truncates_whole),
        cmocka_unit_test(test_log_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
