/* Unit tests for src/store: object name rules, the backend table, and the `file` backend (atomic writes,
 * create-only and compare-and-swap puts under concurrency, listing, deletion, size caps, symbolic links,
 * permissions, and failures that must leave the existing object untouched). Every test runs in a fresh
 * mkdtemp folder that is removed afterwards. */
#include "ns-build.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/strv.h"
#include "store/store.h"

#define SHA256_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SHA256_ABC   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

#define GET_MAX (1024u * 1024u)

typedef struct fixture {
    char dir[256];  /* the mkdtemp folder */
    char root[320]; /* storage.path: <dir>/store/root, created by ns_store_open */
    ns_store *st;
} fixture;

/* ---- helpers ---- */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_rf(const char *dir)
{
    assert_int_equal(nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static int open_store(const char *root, ns_store **st)
{
    char backend[] = "file";
    char path[512];
    ns_storage_config cfg = {.backend = backend, .path = path, .line = 1};

    assert_true(snprintf(path, sizeof(path), "%s", root) < (int)sizeof(path));
    return ns_store_open(&cfg, st);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "%s/test-store.XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->root, sizeof(f->root), "%s/store/root", f->dir);
    assert_int_equal(open_store(f->root, &f->st), 0);
    assert_non_null(f->st);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    ns_store_close(f->st);
    rm_rf(f->dir);
    free(f);
    return 0;
}

/* <root>/<rel> in a static buffer (one at a time). */
static const char *fpath(const fixture *f, const char *rel)
{
    static char p[1024];
    snprintf(p, sizeof(p), "%s/%s", f->root, rel);
    return p;
}

static int put_str(ns_store *st, const char *name, const char *s, enum ns_put_mode mode, const char *if_match)
{
    return ns_store_put(st, name, (const uint8_t *)s, strlen(s), mode, if_match);
}

/* Assert that object `name` holds exactly s. */
static void assert_content(ns_store *st, const char *name, const char *s)
{
    ns_buf *b = NULL;

    assert_int_equal(ns_store_get(st, name, GET_MAX, &b, NULL), 0);
    assert_non_null(b);
    assert_int_equal(b->len, strlen(s));
    if (b->len > 0)
        assert_memory_equal(b->data, s, b->len);
    assert_false(b->secret);
    ns_buf_free(b);
}

static char *get_version(ns_store *st, const char *name)
{
    char *v = NULL;
    assert_int_equal(ns_store_get(st, name, GET_MAX, NULL, &v), 0);
    assert_non_null(v);
    return v;
}

/* Number of temp files (".<leaf>.ns-tmp.*", or the older ".tmp.*") directly in folder <root>/<rel>. */
static int count_temps(const fixture *f, const char *rel)
{
    DIR *d = opendir(fpath(f, rel));
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, ".tmp.", 5) == 0 ||
            (e->d_name[0] == '.' && strstr(e->d_name, ".ns-tmp.") != NULL))
            n++;
    closedir(d);
    return n;
}

static void write_file(const char *path, const char *s)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(s, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

static void assert_file(const char *path, const char *s)
{
    char buf[256] = "";
    FILE *fp = fopen(path, "r");
    size_t n;

    assert_non_null(fp);
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    assert_int_equal(n, strlen(s));
    assert_memory_equal(buf, s, n);
}

static void assert_mode(const char *path, mode_t mode)
{
    struct stat sb;
    assert_int_equal(lstat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, mode);
}

/* Segments joined by '/' with the given lengths, filled with 'a'..'z'. */
static char *make_name(const size_t *segs, size_t nseg)
{
    size_t len = 0, k = 0;
    char *s;

    for (size_t i = 0; i < nseg; i++)
        len += segs[i] + (i > 0);
    s = malloc(len + 1);
    assert_non_null(s);
    for (size_t i = 0; i < nseg; i++) {
        if (i > 0)
            s[k++] = '/';
        for (size_t j = 0; j < segs[i]; j++)
            s[k++] = (char)('a' + j % 26);
    }
    s[k] = '\0';
    return s;
}

/* Assert the list for prefix equals the expected names (in order). */
static void assert_list(ns_store *st, const char *prefix, const char *const *want, size_t nwant)
{
    ns_strv sv = NS_STRV_INIT;

    assert_int_equal(ns_store_list(st, prefix, &sv), 0);
    if (sv.n != nwant) {
        for (size_t i = 0; i < sv.n; i++)
            print_message("list '%s': got %s\n", prefix, sv.v[i]);
    }
    assert_int_equal(sv.n, nwant);
    for (size_t i = 0; i < nwant; i++)
        assert_string_equal(sv.v[i], want[i]);
    ns_strv_clear(&sv);
}

/* ---- names ---- */

static void test_name_table(void **state)
{
    fixture *f = *state;
    static const size_t seg128[] = {128};
    static const size_t seg129[] = {129};
    static const size_t name512[] = {128, 128, 128, 125};
    static const size_t name513[] = {128, 128, 128, 126};
    char *ok128 = make_name(seg128, 1);
    char *bad129 = make_name(seg129, 1);
    char *ok512 = make_name(name512, 4);
    char *bad513 = make_name(name513, 4);
    const char *valid[] = {
        "cluster/secret/db.key", "tenants/acme/db.key", "a", "A-Z_0.9", "x.", "a-/_b/c..d", ok128, ok512};
    const char *invalid[] = {"",     "/a",       "a/",   "a//b", "../x", "a/../b", ".hidden", "a/.b",
                             "a b",  "\xc3\xa4", ".",    "..",   "a/.",  "a/..",   "/",       "//",
                             "a\\b", "a:b",      "a\nb", "a*",   bad129, bad513,   "a/b/"};

    assert_int_equal(strlen(ok512), NS_NAME_MAX);
    assert_int_equal(strlen(bad513), NS_NAME_MAX + 1);

    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        ns_buf *b = NULL;
        assert_int_equal(ns_store_name_check(valid[i]), 0);
        assert_int_equal(put_str(f->st, valid[i], valid[i], NS_PUT_REPLACE, NULL), 0);
        assert_content(f->st, valid[i], valid[i]);
        assert_int_equal(ns_store_delete(f->st, valid[i]), 0);
        assert_int_equal(ns_store_get(f->st, valid[i], GET_MAX, &b, NULL), NS_E_NOT_FOUND);
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        ns_buf *b = NULL;
        char *v = NULL;
        if (ns_store_name_check(invalid[i]) != NS_E_NAME)
            fail_msg("name '%s' accepted", invalid[i]);
        assert_int_equal(put_str(f->st, invalid[i], "x", NS_PUT_REPLACE, NULL), NS_E_NAME);
        assert_int_equal(put_str(f->st, invalid[i], "x", NS_PUT_CREATE, NULL), NS_E_NAME);
        assert_int_equal(ns_store_get(f->st, invalid[i], GET_MAX, &b, &v), NS_E_NAME);
        assert_null(b);
        assert_null(v);
        assert_int_equal(ns_store_delete(f->st, invalid[i]), NS_E_NAME);
    }
    assert_int_equal(ns_store_name_check(NULL), NS_E_NAME);

    /* Nothing was written outside the store, and no invalid name left anything inside it. */
    assert_list(f->st, "", NULL, 0);
    free(ok128);
    free(bad129);
    free(ok512);
    free(bad513);
}

static void test_list_prefix_check(void **state)
{
    fixture *f = *state;
    static const size_t name513[] = {128, 128, 128, 126};
    char *long_prefix = make_name(name513, 4);
    const char *bad[] = {"/", "/a", "..", "../", "a/..", "a/../b", "a b", "\xc3\xa4", "a\\", long_prefix};
    ns_strv sv = NS_STRV_INIT;

    assert_int_equal(put_str(f->st, "cluster/secret/db.key", "k", NS_PUT_REPLACE, NULL), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ns_store_list(f->st, bad[i], &sv) != NS_E_NAME)
            fail_msg("prefix '%s' accepted", bad[i]);
        assert_int_equal(sv.n, 0);
    }
    /* Accepted, but no valid name can start with them. */
    assert_list(f->st, "cluster//", NULL, 0);
    assert_list(f->st, "cluster/./", NULL, 0);
    assert_list(f->st, "./cluster/", NULL, 0);
    assert_list(f->st, "cluster/secret/.", NULL, 0);
    free(long_prefix);
}

/* ---- get / put ---- */

static void test_roundtrip(void **state)
{
    fixture *f = *state;
    static const uint8_t bin[] = {0, 1, 2, 0xff, 0, '\n', 0x80};
    const size_t big_len = 100000; /* several read chunks */
    uint8_t *big = malloc(big_len);
    ns_buf *b = NULL;
    char *v = NULL;

    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 7 + 3);

    assert_int_equal(ns_store_put(f->st, "cluster/secret/db.key", bin, sizeof(bin), NS_PUT_REPLACE, NULL), 0);
    assert_int_equal(ns_store_get(f->st, "cluster/secret/db.key", GET_MAX, &b, &v), 0);
    assert_int_equal(b->len, sizeof(bin));
    assert_memory_equal(b->data, bin, sizeof(bin));
    assert_false(b->secret);
    assert_int_equal(strlen(v), 64);
    assert_int_equal(strspn(v, "0123456789abcdef"), 64);
    ns_buf_free(b);
    free(v);
    b = NULL;
    v = NULL;

    /* 0-byte object: exists, empty, version = SHA-256 of nothing. */
    assert_int_equal(ns_store_put(f->st, "empty", NULL, 0, NS_PUT_REPLACE, NULL), 0);
    assert_int_equal(ns_store_get(f->st, "empty", GET_MAX, &b, &v), 0);
    assert_non_null(b);
    assert_int_equal(b->len, 0);
    assert_string_equal(v, SHA256_EMPTY);
    ns_buf_free(b);
    free(v);
    b = NULL;
    v = NULL;
    assert_int_equal(ns_store_get(f->st, "empty", 0, &b, NULL), 0); /* max 0 fits 0 bytes */
    assert_int_equal(b->len, 0);
    ns_buf_free(b);
    b = NULL;

    assert_int_equal(ns_store_put(f->st, "big", big, big_len, NS_PUT_CREATE, NULL), 0);
    assert_int_equal(ns_store_get(f->st, "big", big_len, &b, NULL), 0);
    assert_int_equal(b->len, big_len);
    assert_memory_equal(b->data, big, big_len);
    ns_buf_free(b);
    b = NULL;

    /* Missing objects and folders. */
    assert_int_equal(ns_store_get(f->st, "missing", GET_MAX, &b, &v), NS_E_NOT_FOUND);
    assert_int_equal(ns_store_get(f->st, "no/such/folder", GET_MAX, &b, &v), NS_E_NOT_FOUND);
    assert_int_equal(ns_store_get(f->st, "cluster/secret", GET_MAX, &b, &v), NS_E_NOT_FOUND); /* a folder */
    assert_null(b);
    assert_null(v);

    /* Bad arguments. */
    assert_int_equal(ns_store_put(f->st, "x", NULL, 1, NS_PUT_REPLACE, NULL), NS_E_INVAL);
    assert_int_equal(ns_store_put(f->st, "x", bin, 1, (enum ns_put_mode)7, NULL), NS_E_INVAL);
    assert_int_equal(ns_store_put(f->st, "x", bin, 1, NS_PUT_IF_MATCH, NULL), NS_E_INVAL);
    assert_int_equal(ns_store_get(f->st, "x", GET_MAX, &b, NULL), NS_E_NOT_FOUND);
    assert_int_equal(count_temps(f, ""), 0);
    assert_int_equal(count_temps(f, "cluster/secret"), 0);
    free(big);
}

static void test_version(void **state)
{
    fixture *f = *state;
    char *v1 = NULL, *v1b = NULL, *v2 = NULL, *v3 = NULL, *v4 = NULL;

    assert_int_equal(put_str(f->st, "a/v", "abc", NS_PUT_REPLACE, NULL), 0);
    v1 = get_version(f->st, "a/v");
    assert_string_equal(v1, SHA256_ABC); /* lower-case hex SHA-256 of the content */
    v1b = get_version(f->st, "a/v");
    assert_string_equal(v1, v1b); /* stable */

    assert_int_equal(put_str(f->st, "a/v", "abd", NS_PUT_REPLACE, NULL), 0);
    v2 = get_version(f->st, "a/v");
    assert_string_not_equal(v1, v2); /* changes with content */

    /* Same content elsewhere, or written again, gives the same version. */
    assert_int_equal(put_str(f->st, "b/v", "abc", NS_PUT_CREATE, NULL), 0);
    v3 = get_version(f->st, "b/v");
    assert_string_equal(v3, v1);
    assert_int_equal(put_str(f->st, "a/v", "abc", NS_PUT_REPLACE, NULL), 0);
    v4 = get_version(f->st, "a/v");
    assert_string_equal(v4, v1);

    free(v1);
    free(v1b);
    free(v2);
    free(v3);
    free(v4);
}

static void test_replace(void **state)
{
    fixture *f = *state;

    assert_int_equal(put_str(f->st, "cluster/secret/db.key", "one", NS_PUT_REPLACE, NULL), 0);
    assert_int_equal(put_str(f->st, "cluster/secret/db.key", "second", NS_PUT_REPLACE, NULL), 0);
    assert_content(f->st, "cluster/secret/db.key", "second");
    assert_int_equal(put_str(f->st, "cluster/secret/db.key", "", NS_PUT_REPLACE, NULL), 0);
    assert_content(f->st, "cluster/secret/db.key", "");
    assert_int_equal(count_temps(f, "cluster/secret"), 0);
}

static void test_create_existing(void **state)
{
    fixture *f = *state;
    char *v1 = NULL, *v2 = NULL;

    assert_int_equal(put_str(f->st, "cluster/ca.key", "original", NS_PUT_CREATE, NULL), 0);
    v1 = get_version(f->st, "cluster/ca.key");
    assert_int_equal(put_str(f->st, "cluster/ca.key", "intruder", NS_PUT_CREATE, NULL), NS_E_EXISTS);
    assert_content(f->st, "cluster/ca.key", "original");
    v2 = get_version(f->st, "cluster/ca.key");
    assert_string_equal(v1, v2);
    assert_int_equal(count_temps(f, "cluster"), 0);
    free(v1);
    free(v2);
}

#define RACERS 8

/* Fork n children that wait on a pipe, then run fn(i) at once; returns each child's exit status. */
static void race(fixture *f, int n, int (*fn)(fixture *, int), int *status)
{
    int fds[2];
    pid_t pids[RACERS];

    assert_true(n <= RACERS);
    assert_int_equal(pipe(fds), 0);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            char c;
            close(fds[1]);
            while (read(fds[0], &c, 1) < 0 && errno == EINTR)
                ;
            _exit(fn(f, i));
        }
    }
    close(fds[0]);
    close(fds[1]); /* start */
    for (int i = 0; i < n; i++) {
        int ws = 0;
        assert_int_equal(waitpid(pids[i], &ws, 0), pids[i]);
        assert_true(WIFEXITED(ws));
        status[i] = WEXITSTATUS(ws);
    }
}

static int create_racer(fixture *f, int i)
{
    char content[32];
    int r;

    snprintf(content, sizeof(content), "content of racer %d", i);
    r = put_str(f->st, "race/object", content, NS_PUT_CREATE, NULL);
    return r == 0 ? 0 : r == NS_E_EXISTS ? 1 : 2;
}

static void test_create_race(void **state)
{
    fixture *f = *state;
    int status[RACERS];
    int winner = -1, losers = 0;
    char want[32];

    race(f, RACERS, create_racer, status);
    for (int i = 0; i < RACERS; i++) {
        if (status[i] == 0) {
            assert_int_equal(winner, -1); /* exactly one */
            winner = i;
        } else {
            assert_int_equal(status[i], 1); /* NS_E_EXISTS, nothing else */
            losers++;
        }
    }
    assert_int_not_equal(winner, -1);
    assert_int_equal(losers, RACERS - 1);
    snprintf(want, sizeof(want), "content of racer %d", winner);
    assert_content(f->st, "race/object", want);
    assert_int_equal(count_temps(f, "race"), 0);
}

#define INCREMENTS 25

/* Compare-and-swap loop: read the counter and its version, write counter+1 if still that version. */
static int cas_racer(fixture *f, int i)
{
    for (int done = 0; done < INCREMENTS;) {
        ns_buf *b = NULL;
        char *v = NULL;
        char text[32];
        long n;
        int r;

        if (ns_store_get(f->st, "counter", 64, &b, &v) != 0)
            return 2;
        snprintf(text, sizeof(text), "%.*s", (int)b->len, b->len ? (const char *)b->data : "");
        n = strtol(text, NULL, 10);
        snprintf(text, sizeof(text), "%ld", n + 1);
        r = put_str(f->st, "counter", text, NS_PUT_IF_MATCH, v);
        ns_buf_free(b);
        free(v);
        if (r == 0)
            done++;
        else if (r != NS_E_CONFLICT)
            return 3;
    }
    return 0;
}

static void test_if_match(void **state)
{
    fixture *f = *state;
    char *v1 = NULL, *v2 = NULL;
    struct stat sb;

    assert_int_equal(put_str(f->st, "cas/obj", "first", NS_PUT_CREATE, NULL), 0);
    v1 = get_version(f->st, "cas/obj");
    assert_int_equal(put_str(f->st, "cas/obj", "second", NS_PUT_IF_MATCH, v1), 0);
    assert_content(f->st, "cas/obj", "second");
    v2 = get_version(f->st, "cas/obj");

    /* v1 is stale now. */
    assert_int_equal(put_str(f->st, "cas/obj", "third", NS_PUT_IF_MATCH, v1), NS_E_CONFLICT);
    assert_content(f->st, "cas/obj", "second");
    assert_int_equal(put_str(f->st, "cas/obj", "third", NS_PUT_IF_MATCH, "not-a-version"), NS_E_CONFLICT);
    assert_content(f->st, "cas/obj", "second");

    /* Missing object, missing folder (which is not created). */
    assert_int_equal(put_str(f->st, "cas/missing", "x", NS_PUT_IF_MATCH, v2), NS_E_NOT_FOUND);
    assert_int_equal(put_str(f->st, "nofolder/missing", "x", NS_PUT_IF_MATCH, v2), NS_E_NOT_FOUND);
    assert_int_equal(stat(fpath(f, "nofolder"), &sb), -1);
    assert_int_equal(errno, ENOENT);

    /* After a delete the version no longer matches anything. */
    assert_int_equal(ns_store_delete(f->st, "cas/obj"), 0);
    assert_int_equal(put_str(f->st, "cas/obj", "x", NS_PUT_IF_MATCH, v2), NS_E_NOT_FOUND);
    assert_int_equal(count_temps(f, "cas"), 0);
    free(v1);
    free(v2);
}

static void test_if_match_race(void **state)
{
    fixture *f = *state;
    int status[RACERS];
    char want[32];

    /* Lost updates would leave the counter below RACERS * INCREMENTS. */
    assert_int_equal(put_str(f->st, "counter", "0", NS_PUT_CREATE, NULL), 0);
    race(f, RACERS, cas_racer, status);
    for (int i = 0; i < RACERS; i++)
        assert_int_equal(status[i], 0);
    snprintf(want, sizeof(want), "%d", RACERS * INCREMENTS);
    assert_content(f->st, "counter", want);
    assert_int_equal(count_temps(f, ""), 0);
}

/* ---- list ---- */

static void test_list(void **state)
{
    fixture *f = *state;
    static const char *const all[] = {"a", "cluster/ca.crt", "cluster/secret/api.key",
                                      "cluster/secret/db.key", "tenants/acme/db.key"};
    static const char *const cluster[] = {"cluster/ca.crt", "cluster/secret/api.key",
                                          "cluster/secret/db.key"};
    static const char *const secret[] = {"cluster/secret/api.key", "cluster/secret/db.key"};
    static const char *const db[] = {"cluster/secret/db.key"};
    static const char *const a[] = {"a"};
    ns_strv sv = NS_STRV_INIT;

    for (size_t i = sizeof(all) / sizeof(all[0]); i-- > 0;) /* reverse order: the result must be sorted */
        assert_int_equal(put_str(f->st, all[i], all[i], NS_PUT_REPLACE, NULL), 0);

    /* Clutter that must never be listed: a stray temp file, hidden files and folders, a symbolic link, a
     * FIFO, and a file whose name is not a valid segment. */
    write_file(fpath(f, "cluster/secret/.tmp.x"), "partial");
    write_file(fpath(f, ".tmp.y"), "partial");
    assert_int_equal(mkdir(fpath(f, ".hidden"), 0700), 0);
    write_file(fpath(f, ".hidden/file"), "h");
    write_file(fpath(f, "cluster/.dot"), "h");
    assert_int_equal(symlink("secret/db.key", fpath(f, "cluster/link")), 0);
    assert_int_equal(symlink("cluster", fpath(f, "linkdir")), 0);
    assert_int_equal(mkfifo(fpath(f, "cluster/fifo"), 0600), 0);
    write_file(fpath(f, "cluster/bad name"), "h");
    assert_int_equal(mkdir(fpath(f, "emptydir"), 0700), 0);

    assert_list(f->st, "", all, 5);
    assert_list(f->st, "cluster/", cluster, 3);
    assert_list(f->st, "cluster", cluster, 3);
    assert_list(f->st, "clu", cluster, 3);
    assert_list(f->st, "cluster/sec", secret, 2);
    assert_list(f->st, "cluster/secret/", secret, 2);
    assert_list(f->st, "cluster/secret/db", db, 1);
    assert_list(f->st, "cluster/secret/db.key", db, 1);
    assert_list(f->st, "a", a, 1);
    assert_list(f->st, "nope/", NULL, 0);
    assert_list(f->st, "nope/deeper/", NULL, 0);
    assert_list(f->st, "emptydir/", NULL, 0);
    assert_list(f->st, "a/", NULL, 0); /* "a" is an object, not a folder */
    assert_list(f->st, "z", NULL, 0);

    /* A list replaces what the vector held. */
    assert_int_equal(ns_strv_push(&sv, "stale"), 0);
    assert_int_equal(ns_store_list(f->st, "tenants/", &sv), 0);
    assert_int_equal(sv.n, 1);
    assert_string_equal(sv.v[0], "tenants/acme/db.key");
    ns_strv_clear(&sv);

    /* The start folder itself being a symbolic link is refused, not followed. */
    assert_int_equal(ns_store_list(f->st, "linkdir/", &sv), NS_E_STORAGE);
    assert_int_equal(sv.n, 0);
}

/* Temp files left by crashed writers are removed by a list once they are an hour old; fresh ones (a write in
 * progress) and files that only look like temp files stay. */
static void test_list_sweeps_stale_temps(void **state)
{
    fixture *f = *state;
    static const char *const secret[] = {"cluster/secret/db.key"};
    struct timespec old[2] = {{0, 0}, {0, 0}};

    assert_int_equal(put_str(f->st, "cluster/secret/db.key", "v", NS_PUT_REPLACE, NULL), 0);
    write_file(fpath(f, "cluster/secret/.tmp.0123456789abcdef"), "stale");
    write_file(fpath(f, ".tmp.fedcba9876543210"), "stale");
    write_file(fpath(f, "cluster/secret/.tmp.00000000000000ff"), "fresh");
    write_file(fpath(f, "cluster/secret/.tmp.not-one-of-ours"), "other");
    write_file(fpath(f, "cluster/secret/.db.key.ns-tmp.0123456789abcdef"), "stale");
    write_file(fpath(f, "cluster/secret/.db.key.ns-tmp.00000000000000ff"), "fresh");
    write_file(fpath(f, "cluster/secret/.db.key.ns-tmp.0123456789ABCDEF"), "other");
    old[0].tv_sec = old[1].tv_sec = time(NULL) - 2 * 3600;
    assert_int_equal(utimensat(AT_FDCWD, fpath(f, "cluster/secret/.tmp.0123456789abcdef"), old, 0), 0);
    assert_int_equal(utimensat(AT_FDCWD, fpath(f, ".tmp.fedcba9876543210"), old, 0), 0);
    assert_int_equal(utimensat(AT_FDCWD, fpath(f, "cluster/secret/.tmp.not-one-of-ours"), old, 0), 0);
    assert_int_equal(utimensat(AT_FDCWD, fpath(f, "cluster/secret/.db.key.ns-tmp.0123456789abcdef"), old, 0),
                     0);
    assert_int_equal(utimensat(AT_FDCWD, fpath(f, "cluster/secret/.db.key.ns-tmp.0123456789ABCDEF"), old, 0),
                     0);

    assert_list(f->st, "cluster/secret/", secret, 1);
    assert_int_equal(access(fpath(f, "cluster/secret/.tmp.0123456789abcdef"), F_OK), -1);
    assert_int_equal(access(fpath(f, ".tmp.fedcba9876543210"), F_OK), 0); /* not under the listed prefix */
    assert_int_equal(access(fpath(f, "cluster/secret/.tmp.00000000000000ff"), F_OK), 0);
    assert_int_equal(access(fpath(f, "cluster/secret/.tmp.not-one-of-ours"), F_OK), 0);
    assert_int_equal(access(fpath(f, "cluster/secret/.db.key.ns-tmp.0123456789abcdef"), F_OK), -1);
    assert_int_equal(access(fpath(f, "cluster/secret/.db.key.ns-tmp.00000000000000ff"), F_OK), 0);
    assert_int_equal(access(fpath(f, "cluster/secret/.db.key.ns-tmp.0123456789ABCDEF"), F_OK), 0);
    assert_list(f->st, "", secret, 1);
    assert_int_equal(access(fpath(f, ".tmp.fedcba9876543210"), F_OK), -1);
    assert_content(f->st, "cluster/secret/db.key", "v");
}

/* ---- delete ---- */

static void test_delete(void **state)
{
    fixture *f = *state;
    ns_buf *b = NULL;

    assert_int_equal(put_str(f->st, "cluster/secret/db.key", "k", NS_PUT_REPLACE, NULL), 0);
    assert_int_equal(ns_store_delete(f->st, "cluster/secret/db.key"), 0);
    assert_int_equal(ns_store_get(f->st, "cluster/secret/db.key", GET_MAX, &b, NULL), NS_E_NOT_FOUND);
    assert_null(b);
    assert_int_equal(ns_store_delete(f->st, "cluster/secret/db.key"), NS_E_NOT_FOUND);
    assert_int_equal(ns_store_delete(f->st, "no/such/folder"), NS_E_NOT_FOUND);
    assert_int_equal(ns_store_delete(f->st, "cluster/secret"), NS_E_NOT_FOUND); /* a folder */
    assert_list(f->st, "", NULL, 0);

    /* A deleted name can be created again. */
    assert_int_equal(put_str(f->st, "cluster/secret/db.key", "again", NS_PUT_CREATE, NULL), 0);
    assert_content(f->st, "cluster/secret/db.key", "again");
}

/* ---- limits ---- */

static void test_too_large(void **state)
{
    fixture *f = *state;
    uint8_t data[100];
    ns_buf *b = NULL;
    char *v = NULL;

    memset(data, 'x', sizeof(data));
    assert_int_equal(ns_store_put(f->st, "big", data, sizeof(data), NS_PUT_REPLACE, NULL), 0);
    assert_int_equal(ns_store_get(f->st, "big", sizeof(data) - 1, &b, &v), NS_E_TOO_LARGE);
    assert_null(b);
    assert_null(v);
    assert_int_equal(ns_store_get(f->st, "big", 0, &b, NULL), NS_E_TOO_LARGE);
    assert_int_equal(ns_store_get(f->st, "big", sizeof(data), &b, &v), 0);
    assert_int_equal(b->len, sizeof(data));
    assert_int_equal(b->max, sizeof(data));
    ns_buf_free(b);
    free(v);
}

/* ---- symbolic links ---- */

static void test_symlink(void **state)
{
    fixture *f = *state;
    char outside[512], outdir[512], outfile[600];
    ns_buf *b = NULL;
    char *v = NULL;
    struct stat sb;

    snprintf(outside, sizeof(outside), "%s/outside-secret", f->dir);
    snprintf(outdir, sizeof(outdir), "%s/outside-dir", f->dir);
    snprintf(outfile, sizeof(outfile), "%s/x", outdir);
    write_file(outside, "outside");
    assert_int_equal(mkdir(outdir, 0700), 0);
    write_file(outfile, "outside x");

    /* A symbolic link in place of an object is not followed. */
    assert_int_equal(mkdir(fpath(f, "cluster"), 0700), 0);
    assert_int_equal(symlink(outside, fpath(f, "cluster/db.key")), 0);
    assert_int_equal(ns_store_get(f->st, "cluster/db.key", GET_MAX, &b, &v), NS_E_STORAGE);
    assert_null(b);
    assert_null(v);
    assert_int_equal(put_str(f->st, "cluster/db.key", "new", NS_PUT_IF_MATCH, SHA256_EMPTY), NS_E_STORAGE);
    assert_int_equal(put_str(f->st, "cluster/db.key", "new", NS_PUT_CREATE, NULL), NS_E_EXISTS);
    assert_file(outside, "outside");
    /* Replacing swaps out the link itself; the target is untouched. */
    assert_int_equal(put_str(f->st, "cluster/db.key", "new", NS_PUT_REPLACE, NULL), 0);
    assert_int_equal(lstat(fpath(f, "cluster/db.key"), &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_content(f->st, "cluster/db.key", "new");
    assert_file(outside, "outside");

    /* A symbolic link in place of a folder is not followed either: not for reading, writing or deleting. */
    assert_int_equal(symlink(outdir, fpath(f, "evil")), 0);
    assert_int_equal(ns_store_get(f->st, "evil/x", GET_MAX, &b, &v), NS_E_STORAGE);
    assert_null(b);
    assert_int_equal(put_str(f->st, "evil/y", "planted", NS_PUT_REPLACE, NULL), NS_E_STORAGE);
    assert_int_equal(put_str(f->st, "evil/y", "planted", NS_PUT_CREATE, NULL), NS_E_STORAGE);
    assert_int_equal(ns_store_delete(f->st, "evil/x"), NS_E_STORAGE);
    assert_file(outfile, "outside x");
    snprintf(outfile, sizeof(outfile), "%s/y", outdir);
    assert_int_equal(stat(outfile, &sb), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(count_temps(f, ""), 0);

    /* And list skips both kinds. */
    {
        static const char *const want[] = {"cluster/db.key"};
        assert_int_equal(unlink(fpath(f, "cluster/db.key")), 0);
        assert_int_equal(symlink(outside, fpath(f, "cluster/db.key")), 0);
        assert_list(f->st, "", NULL, 0);
        assert_int_equal(unlink(fpath(f, "cluster/db.key")), 0);
        assert_int_equal(put_str(f->st, "cluster/db.key", "k", NS_PUT_CREATE, NULL), 0);
        assert_list(f->st, "", want, 1);
    }
}

/* ---- permissions ---- */

static void test_modes(void **state)
{
    fixture *f = *state;
    char parent[512];
    char *v = NULL;

    assert_int_equal(put_str(f->st, "m/n/o", "secret", NS_PUT_REPLACE, NULL), 0);
    assert_int_equal(put_str(f->st, "m/c", "secret", NS_PUT_CREATE, NULL), 0);
    v = get_version(f->st, "m/c");
    assert_int_equal(put_str(f->st, "m/c", "secret2", NS_PUT_IF_MATCH, v), 0);
    free(v);
    snprintf(parent, sizeof(parent), "%s/store", f->dir);
    assert_mode(parent, 0700); /* created by ns_store_open, parents too */
    assert_mode(f->root, 0700);
    assert_mode(fpath(f, "m"), 0700);
    assert_mode(fpath(f, "m/n"), 0700);
    assert_mode(fpath(f, "m/n/o"), 0600);
    assert_mode(fpath(f, "m/c"), 0600);
}

/* ---- failures ---- */

/* In a child with a 1 KiB file size limit, a 4 KiB write fails (EFBIG), like a full disk would. */
static int big_writer(fixture *f, int i)
{
    struct rlimit rl = {1024, 1024};
    static uint8_t data[4096];
    int r;

    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
        return 9;
    memset(data, 'n', sizeof(data));
    r = ns_store_put(f->st, "cluster/obj", data, sizeof(data), (enum ns_put_mode)i,
                     i == 2 ? SHA256_ABC : NULL);
    return r == NS_E_STORAGE ? 0 : 1;
}

static void test_write_failure(void **state)
{
    fixture *f = *state;
    int status[3];

    assert_int_equal(put_str(f->st, "cluster/obj", "abc", NS_PUT_REPLACE, NULL), 0);
    /* Child i writes with mode i: REPLACE, CREATE, IF_MATCH (with the right version). Each fails while
     * writing the temp file, and must leave neither a changed object nor a temp file behind. */
    race(f, 3, big_writer, status);
    for (int i = 0; i < 3; i++)
        assert_int_equal(status[i], 0);
    assert_content(f->st, "cluster/obj", "abc");
    assert_int_equal(count_temps(f, "cluster"), 0);
}

static void test_object_folder_clash(void **state)
{
    fixture *f = *state;
    ns_buf *b = NULL;

    /* "a" is an object, so "a/b" cannot be stored. */
    assert_int_equal(put_str(f->st, "a", "object", NS_PUT_REPLACE, NULL), 0);
    assert_int_equal(put_str(f->st, "a/b", "x", NS_PUT_REPLACE, NULL), NS_E_STORAGE);
    assert_int_equal(ns_store_get(f->st, "a/b", GET_MAX, &b, NULL), NS_E_NOT_FOUND);
    assert_int_equal(ns_store_delete(f->st, "a/b"), NS_E_NOT_FOUND);
    assert_content(f->st, "a", "object");

    /* "c" is a folder, so object "c" cannot be stored; the temp file is removed after the failed rename. */
    assert_int_equal(put_str(f->st, "c/d", "x", NS_PUT_REPLACE, NULL), 0);
    assert_int_equal(put_str(f->st, "c", "x", NS_PUT_REPLACE, NULL), NS_E_STORAGE);
    assert_int_equal(put_str(f->st, "c", "x", NS_PUT_CREATE, NULL), NS_E_EXISTS);
    assert_int_equal(put_str(f->st, "c", "x", NS_PUT_IF_MATCH, SHA256_ABC), NS_E_NOT_FOUND);
    assert_int_equal(ns_store_get(f->st, "c", GET_MAX, &b, NULL), NS_E_NOT_FOUND);
    assert_int_equal(count_temps(f, ""), 0);
    assert_content(f->st, "c/d", "x");
}

/* ---- backends ---- */

static void test_backend_config(void **state)
{
    fixture *f = *state;
    char unknown[] = "gcs", file[] = "file", empty[] = "";
    ns_storage_config cfg = {.backend = unknown, .path = f->root, .line = 3};
    ns_store *st = NULL;

    assert_int_equal(ns_store_open(&cfg, &st), NS_E_CONFIG);
    assert_null(st);
    cfg.backend = empty;
    assert_int_equal(ns_store_open(&cfg, &st), NS_E_CONFIG);
    cfg.backend = NULL;
    assert_int_equal(ns_store_open(&cfg, &st), NS_E_CONFIG);
    assert_int_equal(ns_store_open(NULL, &st), NS_E_CONFIG);
    cfg.backend = file;
    cfg.path = NULL;
    assert_int_equal(ns_store_open(&cfg, &st), NS_E_CONFIG);
    cfg.path = empty;
    assert_int_equal(ns_store_open(&cfg, &st), NS_E_CONFIG);
    assert_null(st);

    /* A root that is a file, not a folder. */
    write_file(fpath(f, "plain"), "x");
    assert_int_equal(open_store(fpath(f, "plain"), &st), NS_E_STORAGE);
    assert_null(st);

    /* Reopening an existing store sees its objects. */
    assert_int_equal(put_str(f->st, "k", "v", NS_PUT_CREATE, NULL), 0);
    assert_int_equal(open_store(f->root, &st), 0);
    assert_content(st, "k", "v");
    ns_store_close(st);
    ns_store_close(NULL); /* accepted */
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_name_table),
        T(test_list_prefix_check),
        T(test_roundtrip),
        T(test_version),
        T(test_replace),
        T(test_create_existing),
        T(test_create_race),
        T(test_if_match),
        T(test_if_match_race),
        T(test_list),
        T(test_list_sweeps_stale_temps),
        T(test_delete),
        T(test_too_large),
        T(test_symlink),
        T(test_modes),
        T(test_write_failure),
        T(test_object_folder_clash),
        T(test_backend_config),
    };

    umask(022); /* the modes asserted below must come from the code, not from the caller's umask */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
