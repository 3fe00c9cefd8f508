/* Unit tests for src/common/fdio.c: whole reads and writes, ns_file_read() (the one reader of files that hold
 * secrets: PIN files, key files, credential files, the agent's files) and the atomic writes. */
#include "ns-build.h"

#include <dirent.h>
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

/* ---- atomic writes ---- */

/* Number of entries in dir other than "." and ".." and the names given. */
static int count_others(const char *d, const char *a, const char *b)
{
    DIR *dp = opendir(d);
    struct dirent *e;
    int n = 0;

    assert_non_null(dp);
    while ((e = readdir(dp)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 && strcmp(e->d_name, a) != 0 &&
            strcmp(e->d_name, b) != 0)
            n++;
    closedir(dp);
    return n;
}

static void check_content(const char *path, const char *want, mode_t mode)
{
    ns_buf *b = NULL;
    struct stat st;

    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, mode);
    assert_int_equal(ns_file_read(path, &(ns_file_rules){.what = "t", .max = 64}, &b), 0);
    assert_int_equal(b->len, strlen(want));
    assert_memory_equal(b->data, want, b->len);
    ns_buf_free(b);
}

static void test_write_atomic(void **state)
{
    char sub[128], *target;
    const char *step = NULL;

    (void)state;
    snprintf(sub, sizeof(sub), "%s/w", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    target = path_of("w/out");
    assert_int_equal(ns_file_write_atomic(target, (const uint8_t *)"one", 3, 0600, &step), 0);
    check_content(target, "one", 0600);
    assert_int_equal(ns_file_write_atomic(target, (const uint8_t *)"two!", 4, 0640, &step), 0); /* replaces */
    check_content(path_of("w/out"), "two!", 0640);
    assert_int_equal(count_others(sub, "out", "out"), 0); /* no temporary file left */

    /* A link at the target is replaced, not followed. */
    char *victim = strdup(put("victim", "keep", 4, 0600));
    assert_int_equal(symlink(victim, path_of("w/link")), 0);
    free(victim);
    assert_int_equal(ns_file_write_atomic(path_of("w/link"), (const uint8_t *)"new", 3, 0600, &step), 0);
    check_content(path_of("w/link"), "new", 0600);
    check_content(path_of("victim"), "keep", 0600);
    assert_int_equal(unlink(path_of("w/link")), 0);

    /* A failed rename (a folder holding a file is at the target) leaves no temporary file. */
    assert_int_equal(mkdir(path_of("w/busy"), 0700), 0);
    put("w/busy/x", "x", 1, 0600);
    step = NULL;
    assert_int_equal(ns_file_write_atomic(path_of("w/busy"), (const uint8_t *)"z", 1, 0600, &step),
                     NS_E_STORAGE);
    assert_string_equal(step, "renaming");
    assert_int_equal(errno, EISDIR);
    assert_int_equal(count_others(sub, "out", "busy"), 0);

    /* A missing folder: nothing is created. */
    assert_int_equal(ns_file_write_atomic(path_of("w/none/f"), (const uint8_t *)"z", 1, 0600, &step),
                     NS_E_STORAGE);
    assert_string_equal(step, "opening the folder of");
    assert_int_equal(errno, ENOENT);
}

/* The held-folder halves: the temporary file is a dot name in the folder that ns_file_is_temp_name() knows,
 * and it is created mode 0600 with O_EXCL | O_NOFOLLOW before the final mode is set. */
static void test_write_temp_at(void **state)
{
    char sub[128], *tmp = NULL;
    const char *step = NULL;
    int dfd;
    struct stat st;

    (void)state;
    snprintf(sub, sizeof(sub), "%s/t", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_true((dfd = open(sub, O_RDONLY | O_DIRECTORY)) >= 0);
    assert_int_equal(ns_file_write_temp_at(dfd, "app.conf", (const uint8_t *)"abc", 3, 0644, (uid_t)-1,
                                           (gid_t)-1, &tmp, &step),
                     0);
    assert_true(ns_file_is_temp_name(tmp));
    assert_int_equal(strncmp(tmp, ".app.conf.ns-tmp.", 17), 0);
    assert_int_equal(strlen(tmp), 17 + 16);
    assert_int_equal(fstatat(dfd, tmp, &st, AT_SYMLINK_NOFOLLOW), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(count_others(sub, tmp, tmp), 0);
    assert_int_equal(ns_file_commit_at(dfd, tmp, "app.conf", &step), 0);
    assert_int_equal(count_others(sub, "app.conf", "app.conf"), 0);
    free(tmp);
    tmp = NULL;

    /* A write that fails (fchown to another user, refused to us unless root) leaves nothing behind. */
    if (geteuid() != 0) {
        assert_int_equal(ns_file_write_temp_at(dfd, "x", (const uint8_t *)"abc", 3, 0600, 0, 0, &tmp, &step),
                         NS_E_STORAGE);
        assert_string_equal(step, "setting the owner of");
        assert_int_equal(errno, EPERM);
        assert_null(tmp);
        assert_int_equal(count_others(sub, "app.conf", "app.conf"), 0);
    }
    /* A failed rename removes the temporary file. */
    assert_int_equal(mkdirat(dfd, "d", 0700), 0);
    assert_int_equal(mkdirat(dfd, "d/e", 0700), 0);
    assert_int_equal(
        ns_file_write_temp_at(dfd, "d", (const uint8_t *)"abc", 3, 0600, (uid_t)-1, (gid_t)-1, &tmp, &step),
        0);
    assert_int_equal(ns_file_commit_at(dfd, tmp, "d", &step), NS_E_STORAGE);
    assert_string_equal(step, "renaming");
    assert_int_equal(count_others(sub, "app.conf", "d"), 0);
    free(tmp);
    close(dfd);

    assert_false(ns_file_is_temp_name(".tmp.0123456789abcdef"));
    assert_false(ns_file_is_temp_name("a.ns-tmp.0123456789abcdef"));  /* not a dot name */
    assert_false(ns_file_is_temp_name("..ns-tmp.0123456789abcdef"));  /* no leaf */
    assert_false(ns_file_is_temp_name(".a.ns-tmp.0123456789ABCDEF")); /* upper case */
    assert_false(ns_file_is_temp_name(".a.ns-tmp.0123456789abcde"));  /* 15 digits */
    assert_true(ns_file_is_temp_name(".a.ns-tmp.0123456789abcdef"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_newline_stripping), cmocka_unit_test(test_size_cap),
        cmocka_unit_test(test_long_file),         cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_fd_short_reads),    cmocka_unit_test(test_write_atomic),
        cmocka_unit_test(test_write_temp_at),
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
