/* Unit tests for src/common/fdio.c: whole reads and writes, and ns_file_read(), the one reader of files that
 * hold secrets (PIN files, key files, credential files, the agent's files). */
#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/fdio.h"
#include "common/secmem.h"

static char dir[64];

static char *path_of(const char *leaf)
{
    static char p[128];
    snprintf(p, sizeof(p), "%s/%s", dir, leaf);
    return p;
}

/* Write a file of n bytes with the given mode; returns its path (static). */
static char *put(const char *leaf, const void *p, size_t n, mode_t mode)
{
    char *path = path_of(leaf);
    int fd;

    unlink(path);
    assert_true((fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600)) >= 0);
    assert_int_equal(ns_fd_write_all(fd, p, n), 0);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
    return path;
}

static const ns_file_rules secret_rules = {
    .what = "test file", .max = 16, .secret = true, .owner_only = true, .strip_newline = true};

static void check_read(const char *path, const ns_file_rules *rules, const char *want, size_t want_len)
{
    ns_buf *b = NULL;

    assert_int_equal(ns_file_read(path, rules, &b), 0);
    assert_int_equal(b->len, want_len);
    assert_memory_equal(b->data, want, want_len);
    assert_int_equal(b->data[b->len], '\0'); /* the NUL behind len */
    assert_int_equal(b->secret, rules->secret);
    ns_buf_free(b);
}

static void check_refused(const char *path, const ns_file_rules *rules, int want)
{
    ns_buf *b = (ns_buf *)&b; /* sentinel: must stay untouched */

    assert_int_equal(ns_file_read(path, rules, &b), want);
    assert_ptr_equal(b, (ns_buf *)&b);
}

static void test_newline_stripping(void **state)
{
    (void)state;
    check_read(put("a", "1234\n", 5, 0600), &secret_rules, "1234", 4);
    check_read(put("a", "1234\r\n", 6, 0600), &secret_rules, "1234", 4);
    check_read(put("a", "1234\r", 5, 0600), &secret_rules, "1234", 4);
    check_read(put("a", "1234\n\n", 6, 0600), &secret_rules, "1234\n", 5); /* one line end only */
    check_read(put("a", "12\n34", 5, 0600), &secret_rules, "12\n34", 5);
    check_read(put("a", "", 0, 0600), &secret_rules, "", 0);

    ns_file_rules keep = secret_rules;
    keep.strip_newline = false;
    check_read(put("a", "1234\r\n", 6, 0600), &keep, "1234\r\n", 6);
}

static void test_size_cap(void **state)
{
    char big[17];

    (void)state;
    memset(big, 'x', sizeof(big));
    check_read(put("a", big, 16, 0600), &secret_rules, big, 16); /* exactly max */
    check_refused(put("a", big, 17, 0600), &secret_rules, NS_E_TOO_LARGE);
    /* The cap counts the bytes in the file, line end included. */
    big[15] = '\n';
    check_refused(put("a", big, 17, 0600), &secret_rules, NS_E_TOO_LARGE);
}

/* Many chunks: the read loop continues past the first read() (the PIN file reader used to stop there). */
static void test_long_file(void **state)
{
    ns_file_rules rules = {.what = "test file", .max = 100000};
    char *big = malloc(100000);

    (void)state;
    assert_non_null(big);
    for (size_t i = 0; i < 100000; i++)
        big[i] = (char)('a' + i % 26);
    check_read(put("a", big, 100000, 0644), &rules, big, 100000);
    check_refused(put("a", big, 100000, 0644), &(ns_file_rules){.what = "t", .max = 99999}, NS_E_TOO_LARGE);
    free(big);
}

static void test_refusals(void **state)
{
    char *target;

    (void)state;
    /* Group or other access to a secret: refused; allowed when the rules do not ask. */
    check_refused(put("a", "pin", 3, 0640), &secret_rules, NS_E_PERM);
    assert_int_equal(errno, 0);
    check_refused(put("a", "pin", 3, 0604), &secret_rules, NS_E_PERM);
    check_read(put("a", "pin", 3, 0644), &(ns_file_rules){.what = "t", .max = 16}, "pin", 3);

    /* A symbolic link is never followed, even to a good file. */
    target = strdup(put("target", "pin", 3, 0600));
    unlink(path_of("link"));
    assert_int_equal(symlink(target, path_of("link")), 0);
    check_refused(path_of("link"), &secret_rules, NS_E_PERM);
    assert_int_equal(errno, ELOOP);
    free(target);

    /* Not regular files: a folder, a device, a FIFO (which must not hang the reader). */
    check_refused(dir, &secret_rules, NS_E_INVAL);
    check_refused("/dev/null", &(ns_file_rules){.what = "t", .max = 16}, NS_E_INVAL);
    unlink(path_of("fifo"));
    assert_int_equal(mkfifo(path_of("fifo"), 0600), 0);
    check_refused(path_of("fifo"), &secret_rules, NS_E_INVAL);

    /* Missing: NOT_FOUND; a file in place of a folder is PERM unless missing is normal. */
    check_refused(path_of("none"), &secret_rules, NS_E_NOT_FOUND);
    check_refused("/dev/null/x", &secret_rules, NS_E_PERM);
    ns_file_rules opt = secret_rules;
    opt.missing_ok = true;
    check_refused(path_of("none"), &opt, NS_E_NOT_FOUND);
    check_refused("/dev/null/x", &opt, NS_E_NOT_FOUND);
}

/* ns_fd_read_all() over a pipe whose writer sends a few bytes at a time: every short read is continued. */
static void test_fd_short_reads(void **state)
{
    int p[2];
    pid_t pid;
    ns_buf *b = NULL;
    int st;

    (void)state;
    assert_int_equal(pipe(p), 0);
    if ((pid = fork()) == 0) {
        close(p[0]);
        for (int i = 0; i < 5; i++) {
            if (write(p[1], "ab", 2) != 2)
                _exit(1);
            usleep(20000);
        }
        _exit(0);
    }
    assert_true(pid > 0);
    close(p[1]);
    assert_int_equal(ns_fd_read_all(p[0], 10, true, &b), 0);
    assert_int_equal(b->len, 10);
    assert_memory_equal(b->data, "ababababab", 10);
    ns_buf_free(b);
    close(p[0]);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_newline_stripping), cmocka_unit_test(test_size_cap),
        cmocka_unit_test(test_long_file),         cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_fd_short_reads),
    };
    int r;
    char rm[128];

    snprintf(dir, sizeof(dir), "/tmp/test-fdio.XXXXXX");
    if (mkdtemp(dir) == NULL || ns_secmem_init() != 0)
        return 1;
    r = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(rm, sizeof(rm), "rm -rf -- '%s'", dir);
    if (system(rm) != 0 && r == 0)
        r = 1;
    return r;
}
