/* Unit tests for the agent's file validator and writer (src/agent/files.c, paths.c, apply.c; doc/agent.md).
 *
 * A valid list is written under a temp --root with its contents and modes, and a second apply changes
 * nothing. Every invalid list is refused with its exact code and leaves the files on disk byte for byte as
 * they were, with no temporary file left behind, even when the invalid entry comes after valid ones:
 * relative paths, "..", ".", "//", a trailing '/', a control character, a symbolic link below root (pointing
 * out of it), a folder where a file should go, modes above 0777 or not octal or not a string, unknown users
 * and groups, non-canonical base64, a wrong sha256, a wrong version, a duplicate path, unknown or duplicate
 * members, a non-object. Absent owner/group mean root. A file of exactly 4 MiB is accepted and 4 MiB + 1 is
 * refused (regression: the cap was applied to rounded-up base64 text). Regressions of issue 12: a folder
 * swapped for a link between the check and the write is refused at the write, nothing made outside; no path
 * may lead into --dir, however it is spelled. */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>

#include "agent/agent.h"
#include "common/codec.h"
#include "common/err.h"
#include "common/log.h"

/* The refusal cases list only the members they need; the rest are zero on purpose. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static char root[256];
static ns_agent_root *rt; /* root, held (setup) */

typedef struct spec {
    const char *path;
    const char *mode;  /* JSON text of the member, e.g. "\"0600\"" or "384" */
    const char *owner; /* NULL: member absent */
    const char *group;
    const char *content;
    const char *b64;   /* the content member's text instead of base64(content) */
    bool bad_sha;      /* send the SHA-256 of something else */
    const char *extra; /* an extra member's text (",\"x\":1") */
} spec;

static void sha_hex(const void *p, size_t n, char out[65])
{
    uint8_t d[32];
    assert_int_equal(EVP_Digest(p, n, d, NULL, EVP_sha256(), NULL), 1);
    ns_hex_encode(d, sizeof(d), out);
}

/* The body for specs; bad_version: a version of something else. */
static char *body_for(const spec *s, size_t n, bool bad_version)
{
    size_t cap = 65536, len = 0;
    char *out = malloc(cap), files[32768];
    EVP_MD_CTX *v = EVP_MD_CTX_new();
    uint8_t vd[32];
    char vhex[65];
    size_t flen = 0;

    assert_non_null(out);
    assert_int_equal(EVP_DigestInit_ex(v, EVP_sha256(), NULL), 1);
    files[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char hex[65], *b64 = NULL, mode_plain[16];
        const char *owner = s[i].owner != NULL ? s[i].owner : "root";
        const char *group = s[i].group != NULL ? s[i].group : "root";
        assert_int_equal(ns_b64_encode((const uint8_t *)s[i].content, strlen(s[i].content), &b64), 0);
        sha_hex(s[i].bad_sha ? "other" : s[i].content, s[i].bad_sha ? 5 : strlen(s[i].content), hex);
        flen += (size_t)snprintf(files + flen, sizeof(files) - flen, "%s{\"path\":\"%s\",\"mode\":%s",
                                 i ? "," : "", s[i].path, s[i].mode);
        if (s[i].owner != NULL)
            flen += (size_t)snprintf(files + flen, sizeof(files) - flen, ",\"owner\":\"%s\"", s[i].owner);
        if (s[i].group != NULL)
            flen += (size_t)snprintf(files + flen, sizeof(files) - flen, ",\"group\":\"%s\"", s[i].group);
        flen +=
            (size_t)snprintf(files + flen, sizeof(files) - flen, ",\"sha256\":\"%s\",\"content\":\"%s\"%s}",
                             hex, s[i].b64 != NULL ? s[i].b64 : b64, s[i].extra != NULL ? s[i].extra : "");
        /* The version hashes the mode as sent (a string's characters). */
        snprintf(mode_plain, sizeof(mode_plain), "%.*s", (int)strlen(s[i].mode) - 2, s[i].mode + 1);
        EVP_DigestUpdate(v, s[i].path, strlen(s[i].path) + 1);
        EVP_DigestUpdate(v, mode_plain, strlen(mode_plain) + 1);
        EVP_DigestUpdate(v, owner, strlen(owner) + 1);
        EVP_DigestUpdate(v, group, strlen(group) + 1);
        EVP_DigestUpdate(v, hex, strlen(hex) + 1);
        free(b64);
    }
    if (bad_version)
        EVP_DigestUpdate(v, "x", 1);
    EVP_DigestFinal_ex(v, vd, NULL);
    EVP_MD_CTX_free(v);
    ns_hex_encode(vd, sizeof(vd), vhex);
    len = (size_t)snprintf(out, cap, "{\"version\":\"%s\",\"files\":[%s]}", vhex, files);
    assert_true(len < cap);
    return out;
}

static int parse(const char *body, ns_agent_files **out)
{
    return ns_agent_files_parse((const uint8_t *)body, strlen(body), rt, out);
}

static void put_file(const char *rel, const char *content, mode_t mode)
{
    char p[512];
    FILE *f;
    snprintf(p, sizeof(p), "%s%s", root, rel);
    assert_non_null(f = fopen(p, "w"));
    fputs(content, f);
    fclose(f);
    assert_int_equal(chmod(p, mode), 0);
}

static void assert_file(const char *rel, const char *content, mode_t mode)
{
    char p[512], buf[4096];
    struct stat st;
    FILE *f;
    size_t n;
    snprintf(p, sizeof(p), "%s%s", root, rel);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, mode);
    assert_non_null(f = fopen(p, "r"));
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    assert_string_equal(buf, content);
}

/* No ".*.ns-tmp.*" file anywhere directly in root/etc. */
static void assert_no_temp(void)
{
    char p[512];
    DIR *d;
    struct dirent *e;
    snprintf(p, sizeof(p), "%s/etc", root);
    assert_non_null(d = opendir(p));
    while ((e = readdir(d)) != NULL)
        assert_null(strstr(e->d_name, ".ns-tmp."));
    closedir(d);
}

static void test_valid_and_idempotent(void **state)
{
    spec s[] = {
        {"/etc/app/a.key", "\"0600\"", "root", "root", "secret A\n", NULL, false, NULL},
        {"/etc/b.pem", "\"644\"", NULL, NULL, "public B\n", NULL, false, NULL},
    };
    ns_agent_files *f = NULL;
    size_t changed = 99;
    char *b = body_for(s, 2, false);

    assert_int_equal(parse(b, &f), 0);
    assert_int_equal(f->n, 2);
    assert_int_equal(f->v[0].mode, 0600);
    assert_int_equal(f->v[1].uid, 0);
    assert_int_equal(ns_agent_files_apply(f, rt, &changed), 0);
    assert_int_equal(changed, 2);
    assert_file("/etc/app/a.key", "secret A\n", 0600);
    assert_file("/etc/b.pem", "public B\n", 0644);
    assert_int_equal(ns_agent_files_apply(f, rt, &changed), 0);
    assert_int_equal(changed, 0);
    /* A changed mode alone is a change. */
    {
        char p[512];
        snprintf(p, sizeof(p), "%s/etc/b.pem", root);
        assert_int_equal(chmod(p, 0600), 0);
    }
    assert_int_equal(ns_agent_files_apply(f, rt, &changed), 0);
    assert_int_equal(changed, 1);
    assert_file("/etc/b.pem", "public B\n", 0644);
    assert_no_temp();
    ns_agent_files_free(f);
    free(b);
}

/* The list [good file, bad] is refused with want, and the existing good file stays as it was. */
static void refused(spec bad, bool bad_version, int want)
{
    spec s[2] = {{"/etc/keep.pem", "\"0640\"", NULL, NULL, "NEW CONTENT\n", NULL, false, NULL}, bad};
    ns_agent_files *f = NULL;
    char *b;

    put_file("/etc/keep.pem", "old content\n", 0600);
    b = body_for(s, 2, bad_version);
    assert_int_equal(parse(b, &f), want);
    assert_null(f);
    assert_file("/etc/keep.pem", "old content\n", 0600);
    assert_no_temp();
    free(b);
}

static void test_bad_paths(void **state)
{
    char p[512], l[512];
    refused((spec){"etc/rel", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/../etc/x", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/./x", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc//x", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/x/", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/a\\u0001b", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    /* A link below root that leads out of it, as a folder and as the file. */
    snprintf(p, sizeof(p), "%s/etc/out", root);
    assert_int_equal(symlink("/tmp", p), 0);
    refused((spec){"/etc/out/x", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/out", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    assert_int_equal(unlink(p), 0);
    /* A folder where the file should go; a file where a folder should be. */
    snprintf(l, sizeof(l), "%s/etc/adir", root);
    assert_int_equal(mkdir(l, 0755), 0);
    refused((spec){"/etc/adir", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/keep.pem/x", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    /* Twice the same path. */
    refused((spec){"/etc/keep.pem", "\"0600\"", NULL, NULL, "x"}, false, NS_E_INVAL);
}

static void test_bad_values(void **state)
{
    refused((spec){"/etc/m", "\"01000\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/m", "\"4755\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/m", "\"0689\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/m", "\"\"", NULL, NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/m", "384", NULL, NULL, "x"}, false, NS_E_FORMAT);
    refused((spec){"/etc/m", "\"0600\"", "no-such-user-ns", NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/m", "\"0600\"", NULL, "no-such-group-ns", "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/m", "\"0600\"", "../root", NULL, "x"}, false, NS_E_INVAL);
    refused((spec){"/etc/m", "\"0600\"", NULL, NULL, "abc", "YWJj\\n"}, false, NS_E_FORMAT);
    refused((spec){"/etc/m", "\"0600\"", NULL, NULL, "ab", "YWI"}, false, NS_E_FORMAT);
    refused((spec){"/etc/m", "\"0600\"", NULL, NULL, "ab", "YWJ="}, false, NS_E_FORMAT);
    refused((spec){"/etc/m", "\"0600\"", NULL, NULL, "x", NULL, true}, false, NS_E_INTEGRITY);
    refused((spec){"/etc/m", "\"0600\"", NULL, NULL, "x", NULL, false, ",\"extra\":1"}, false, NS_E_FORMAT);
    refused((spec){"/etc/m", "\"0600\"", NULL, NULL, "x", NULL, false, ",\"path\":\"/etc/n\""}, false,
            NS_E_FORMAT);
    /* Every file fine, the version is not theirs. */
    refused((spec){"/etc/m", "\"0600\"", NULL, NULL, "x"}, true, NS_E_INTEGRITY);
}

/* The SHA-256 of nothing: the version of an empty list. */
#define EMPTY_V "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void test_bad_shape(void **state)
{
    static const char *const bodies[] = {
        "[]",
        "{}",
        "{\"version\":\"00\",\"files\":[]}",
        "{\"version\":\"" EMPTY_V "\"}",
        "{\"version\":\"" EMPTY_V "\",\"files\":{}}",
        "{\"version\":\"" EMPTY_V "\",\"files\":[],\"x\":1}",
        "{\"version\":\"" EMPTY_V "\",\"files\":[1]}",
        "not json",
    };
    ns_agent_files *f = NULL;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        assert_int_equal(parse(bodies[i], &f), NS_E_FORMAT);
        assert_null(f);
    }
    /* The empty list: version = SHA-256 of nothing. */
    assert_int_equal(parse("{\"version\":\"" EMPTY_V "\",\"files\":[]}", &f), 0);
    assert_int_equal(f->n, 0);
    ns_agent_files_free(f);
}

/* A body of one file `path` holding n bytes (all 'k'): for the size cap. */
static char *big_body(const char *path, size_t n)
{
    uint8_t *content = malloc(n), vd[32];
    char hex[65], vhex[65], *b64 = NULL, *out;
    EVP_MD_CTX *v = EVP_MD_CTX_new();
    size_t cap;

    assert_non_null(content);
    memset(content, 'k', n);
    sha_hex(content, n, hex);
    assert_int_equal(ns_b64_encode(content, n, &b64), 0);
    free(content);
    assert_int_equal(EVP_DigestInit_ex(v, EVP_sha256(), NULL), 1);
    EVP_DigestUpdate(v, path, strlen(path) + 1);
    EVP_DigestUpdate(v, "0600", 5);
    EVP_DigestUpdate(v, "root", 5);
    EVP_DigestUpdate(v, "root", 5);
    EVP_DigestUpdate(v, hex, 65);
    EVP_DigestFinal_ex(v, vd, NULL);
    EVP_MD_CTX_free(v);
    ns_hex_encode(vd, sizeof(vd), vhex);
    cap = strlen(b64) + 512;
    assert_non_null(out = malloc(cap));
    snprintf(out, cap,
             "{\"version\":\"%s\",\"files\":[{\"path\":\"%s\",\"mode\":\"0600\",\"sha256\":\"%s\","
             "\"content\":\"%s\"}]}",
             vhex, path, hex, b64);
    free(b64);
    return out;
}

/* Regression (issue 12, item 11b): the 4 MiB cap on a file let 4 MiB + 1 (and + 2) through, because it was
 * applied to the base64 text rounded up to whole groups. Exactly 4 MiB is accepted, written, and found the
 * same on disk the next time; 4 MiB + 1 and + 2 are refused with NS_E_TOO_LARGE and nothing is written. */
static void test_file_cap_4mib_off_by_one(void **state)
{
    ns_agent_files *f = NULL;
    size_t changed = 99;
    char p[512], *b;
    struct stat st;

    b = big_body("/etc/big", NS_AGENT_MAX_FILE);
    assert_int_equal(parse(b, &f), 0);
    free(b);
    assert_int_equal(f->v[0].content->len, 4u * 1024u * 1024u);
    assert_int_equal(ns_agent_files_apply(f, rt, &changed), 0);
    assert_int_equal(changed, 1);
    assert_int_equal(ns_agent_files_apply(f, rt, &changed), 0);
    assert_int_equal(changed, 0);
    ns_agent_files_free(f);
    snprintf(p, sizeof(p), "%s/etc/big", root);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 4 * 1024 * 1024);
    for (size_t extra = 1; extra <= 2; extra++) {
        f = NULL;
        b = big_body("/etc/big-plus", NS_AGENT_MAX_FILE + extra);
        assert_int_equal(parse(b, &f), NS_E_TOO_LARGE);
        assert_null(f);
        free(b);
        snprintf(p, sizeof(p), "%s/etc/big-plus", root);
        assert_int_equal(stat(p, &st), -1);
    }
    assert_no_temp();
}

/* The number of entries in folder p (without "." and ".."). */
static int entries(const char *p)
{
    DIR *d;
    struct dirent *e;
    int n = 0;
    assert_non_null(d = opendir(p));
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* Regression (issue 12, item 3: "the agent's symlink check runs before, not at, the write"). The old agent
 * checked the components with lstat() while parsing and then made folders, opened and renamed by path, so a
 * folder swapped for a link after the check led the write out of root: here it made etc/sw/new in `out` and
 * wrote a.key there. Now the write walks from the held root with O_NOFOLLOW: a link met at write time is
 * NS_E_STORAGE, nothing is made outside, no temporary file is left; and a target that became a link is
 * replaced itself, never written through. */
static void test_symlink_swapped_in_after_check(void **state)
{
    spec s[] = {
        {"/etc/sw/a.key", "\"0600\"", NULL, NULL, "secret A\n", NULL, false, NULL},
        {"/etc/sw/new/b.key", "\"0600\"", NULL, NULL, "secret B\n", NULL, false, NULL},
    };
    spec l[] = {{"/etc/leaf", "\"0640\"", NULL, NULL, "new leaf\n", NULL, false, NULL}};
    char out[300], sw[512], real[512], p[512], buf[64];
    ns_agent_files *f = NULL;
    size_t changed = 99;
    char *b;
    FILE *fp;

    snprintf(out, sizeof(out), "%s.out", root);
    assert_int_equal(mkdir(out, 0755), 0);
    snprintf(sw, sizeof(sw), "%s/etc/sw", root);
    snprintf(real, sizeof(real), "%s/etc/sw.real", root);
    assert_int_equal(mkdir(sw, 0755), 0);

    /* Checked while etc/sw is a folder, written once it is a link to `out`. */
    b = body_for(s, 2, false);
    assert_int_equal(parse(b, &f), 0);
    free(b);
    assert_int_equal(rename(sw, real), 0);
    assert_int_equal(symlink(out, sw), 0);
    assert_int_equal(ns_agent_files_apply(f, rt, &changed), NS_E_STORAGE);
    assert_int_equal(changed, 0);
    assert_int_equal(entries(out), 0);
    assert_int_equal(entries(real), 0);
    /* Back to a folder: the same checked list is written where it belongs. */
    assert_int_equal(unlink(sw), 0);
    assert_int_equal(rename(real, sw), 0);
    assert_int_equal(ns_agent_files_apply(f, rt, &changed), 0);
    assert_int_equal(changed, 2);
    assert_file("/etc/sw/a.key", "secret A\n", 0600);
    assert_file("/etc/sw/new/b.key", "secret B\n", 0600);
    assert_int_equal(entries(out), 0);
    ns_agent_files_free(f);
    f = NULL;

    /* The target itself: a regular file at the check, a link to a file outside at the write. The rename
     * replaces the link; the file it pointed to is untouched. */
    put_file("/etc/leaf", "old leaf\n", 0600);
    b = body_for(l, 1, false);
    assert_int_equal(parse(b, &f), 0);
    free(b);
    snprintf(p, sizeof(p), "%s/victim", out);
    assert_non_null(fp = fopen(p, "w"));
    fputs("victim\n", fp);
    fclose(fp);
    snprintf(sw, sizeof(sw), "%s/etc/leaf", root);
    assert_int_equal(unlink(sw), 0);
    assert_int_equal(symlink(p, sw), 0);
    assert_int_equal(ns_agent_files_apply(f, rt, &changed), 0);
    assert_int_equal(changed, 1);
    assert_file("/etc/leaf", "new leaf\n", 0640);
    assert_non_null(fp = fopen(p, "r"));
    assert_non_null(fgets(buf, sizeof(buf), fp));
    fclose(fp);
    assert_string_equal(buf, "victim\n");
    assert_int_equal(entries(out), 1);
    ns_agent_files_free(f);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(rmdir(out), 0);
    assert_no_temp();
}

/* parse() of the one-file list {path} under rt2: its code (the list is freed). */
static int parse_one_under(ns_agent_root *rt2, const char *path)
{
    spec s[] = {{path, "\"0644\"", NULL, NULL, "from the server\n", NULL, false, NULL}};
    ns_agent_files *f = NULL;
    char *b = body_for(s, 1, false);
    int r = ns_agent_files_parse((const uint8_t *)b, strlen(b), rt2, &f);
    free(b);
    if (r != 0)
        assert_null(f);
    ns_agent_files_free(f);
    return r;
}

/* Regression (issue 12, item 9: "the agent can overwrite its own state"). With --dir under --root the old
 * agent wrote any path the answer named, <dir>/identity.key and <dir>/ca.crt included (its parse took no
 * --dir at all). Every folder on the way is now compared (device, inode) with --dir: a path into it, below
 * it or naming it is NS_E_INVAL, however --dir is spelled (absolute, relative with "..", through a link
 * outside root, trailing slashes) and also with root "/"; a sibling sharing the name's prefix is fine; a
 * root that is --dir or inside it is NS_E_USAGE; a folder that becomes --dir between the check and the
 * write is NS_E_STORAGE. The identity files stay as they were. */
static void test_paths_into_agent_dir_refused(void **state)
{
    static const char *const into[] = {"/var/lib/nsagent/identity.key", "/var/lib/nsagent/ca.crt",
                                       "/var/lib/nsagent/new/x", "/var/lib/nsagent"};
    char dir[512], real_dir[PATH_MAX], link[512], cwd[PATH_MAX], spell[4][600], p[PATH_MAX + 64];
    ns_agent_root *rt2 = NULL;
    ns_agent_files *f = NULL;
    size_t changed = 99;
    char *b;

    snprintf(dir, sizeof(dir), "%s/var/lib/nsagent", root);
    snprintf(p, sizeof(p), "%s/var", root);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/var/lib", root);
    assert_int_equal(mkdir(p, 0755), 0);
    assert_int_equal(mkdir(dir, 0700), 0);
    put_file("/var/lib/nsagent/identity.key", "KEY\n", 0600);
    put_file("/var/lib/nsagent/ca.crt", "CA\n", 0644);
    snprintf(link, sizeof(link), "%s.dirlink", root); /* a link outside root to --dir */
    assert_int_equal(symlink(dir, link), 0);
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(root), 0);

    snprintf(spell[0], sizeof(spell[0]), "%s", dir);
    snprintf(spell[1], sizeof(spell[1]), "var/../var/lib/./nsagent");
    snprintf(spell[2], sizeof(spell[2]), "%s", link);
    snprintf(spell[3], sizeof(spell[3]), "%s//", dir);
    for (size_t k = 0; k < 4; k++) {
        assert_int_equal(ns_agent_root_open(root, spell[k], &rt2), 0);
        for (size_t i = 0; i < sizeof(into) / sizeof(into[0]); i++)
            assert_int_equal(parse_one_under(rt2, into[i]), NS_E_INVAL);
        assert_int_equal(parse_one_under(rt2, "/var/lib/nsagent2/x"), 0);
        assert_int_equal(parse_one_under(rt2, "/var/lib/x"), 0);
        ns_agent_root_free(rt2);
        rt2 = NULL;
    }
    assert_int_equal(chdir(cwd), 0);

    /* Root "/": the path is the folder's whole name. */
    assert_non_null(realpath(dir, real_dir));
    assert_int_equal(ns_agent_root_open("/", dir, &rt2), 0);
    snprintf(p, sizeof(p), "%s/identity.key", real_dir);
    assert_int_equal(parse_one_under(rt2, p), NS_E_INVAL);
    snprintf(p, sizeof(p), "%s/../x", real_dir); /* lexically refused anyway */
    assert_int_equal(parse_one_under(rt2, p), NS_E_INVAL);
    ns_agent_root_free(rt2);
    rt2 = NULL;

    /* Root is --dir, or inside it. */
    assert_int_equal(ns_agent_root_open(dir, dir, &rt2), NS_E_USAGE);
    assert_null(rt2);
    snprintf(p, sizeof(p), "%s/sub", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    assert_int_equal(ns_agent_root_open(p, link, &rt2), NS_E_USAGE);
    assert_null(rt2);
    assert_int_equal(rmdir(p), 0);

    /* Checked while var/lib/other is another folder, written once --dir has been renamed to it: the write's
     * walk meets --dir. */
    {
        spec s[] = {{"/var/lib/other/identity.key", "\"0600\"", NULL, NULL, "EVIL\n", NULL, false, NULL}};
        char other[600], aside[600];
        snprintf(other, sizeof(other), "%s/var/lib/other", root);
        snprintf(aside, sizeof(aside), "%s/var/lib/aside", root);
        assert_int_equal(mkdir(other, 0755), 0);
        assert_int_equal(ns_agent_root_open(root, dir, &rt2), 0);
        b = body_for(s, 1, false);
        assert_int_equal(ns_agent_files_parse((const uint8_t *)b, strlen(b), rt2, &f), 0);
        free(b);
        assert_int_equal(rename(other, aside), 0);
        assert_int_equal(rename(dir, other), 0);
        assert_int_equal(ns_agent_files_apply(f, rt2, &changed), NS_E_STORAGE);
        assert_int_equal(changed, 0);
        assert_int_equal(rename(other, dir), 0);
        assert_int_equal(rmdir(aside), 0);
        ns_agent_files_free(f);
        ns_agent_root_free(rt2);
    }
    assert_file("/var/lib/nsagent/identity.key", "KEY\n", 0600);
    assert_file("/var/lib/nsagent/ca.crt", "CA\n", 0644);
    assert_int_equal(entries(dir), 2);
    assert_int_equal(unlink(link), 0);
}

static void test_exit_codes(void **state)
{
    assert_int_equal(ns_agent_exit_code(0), 0);
    assert_int_equal(ns_agent_exit_code(NS_E_NOT_FOUND), 3);
    assert_int_equal(ns_agent_exit_code(NS_E_SOURCE_DENIED), 4);
    assert_int_equal(ns_agent_exit_code(NS_E_SOURCE), 5);
    assert_int_equal(ns_agent_exit_code(NS_E_STORAGE), 6);
    assert_int_equal(ns_agent_exit_code(NS_E_FORMAT), 8);
    assert_int_equal(ns_agent_exit_code(NS_E_INTEGRITY), 8);
    assert_int_equal(ns_agent_exit_code(NS_E_CLAIMS), 10);
    assert_int_equal(ns_agent_exit_code(NS_E_REPLAYED), 11);
}

static int setup(void **state)
{
    char p[300];
    const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    snprintf(root, sizeof(root), "%s/test-agent-files.XXXXXX", tmp);
    if (mkdtemp(root) == NULL)
        return -1;
    snprintf(p, sizeof(p), "%s/etc", root);
    if (mkdir(p, 0755) != 0)
        return -1;
    return ns_agent_root_open(root, NULL, &rt) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[1024];
    ns_agent_root_free(rt);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s.out' '%s.dirlink'", root, root, root);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_and_idempotent),
        cmocka_unit_test(test_bad_paths),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_shape),
        cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_file_cap_4mib_off_by_one),
        cmocka_unit_test(test_symlink_swapped_in_after_check),
        cmocka_unit_test(test_paths_into_agent_dir_refused),
    };
    ns_log_set_level(NS_LOG_ERROR);
    return cmocka_run_group_tests(tests, setup, teardown);
}
