/* Unit tests for src/keys/keymat.c (key material for software KEKs: raw, hex, base64; key files and
 * environment variables) and for the software KEK's id (src/keys/kek_soft.c, ns_kek_id_derive in
 * src/keys/kek.c). File tests run in a fresh mkdtemp folder that is removed afterwards. */
#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "common/buf.h"
#include "common/codec.h"
#include "common/err.h"
#include "common/secmem.h"
#include "settings/settings.h"
#include "keys/kek.h"
#include "keys/keymat.h"
#include "keys/keyring.h"

/* Functions that fail must leave *out alone. */
static ns_buf *const SENTINEL = (ns_buf *)(uintptr_t)0x5a5a5a5a;

/* The key 00 01 02 ... 1f in every accepted encoding. */
#define KEY_HEX       "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_HEX_UPPER "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"
#define KEY_B64       "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

#define ENV_NAME "NS_TEST_KEYMAT_KEY"

static void key_bytes(uint8_t key[NS_DEK_LEN])
{
    for (size_t i = 0; i < NS_DEK_LEN; i++)
        key[i] = (uint8_t)i;
}

/* Parse p[0..n) and expect the key 00..1f in a secret 32-byte buffer. */
static void check_parses(const void *p, size_t n, const char *what)
{
    uint8_t want[NS_DEK_LEN];
    ns_buf *b = NULL;
    int r;

    key_bytes(want);
    r = ns_keymat_parse(p, n, &b);
    if (r != 0)
        fail_msg("%s (len %zu): got %d (%s), want 0", what, n, r, ns_strerror(r));
    assert_non_null(b);
    assert_int_equal(b->len, NS_DEK_LEN);
    assert_memory_equal(b->data, want, NS_DEK_LEN);
    assert_true(b->secret);
    ns_buf_free(b);
}

static void check_refused(const void *p, size_t n, const char *what)
{
    ns_buf *b = SENTINEL;
    int r = ns_keymat_parse(p, n, &b);
    if (r != NS_E_KEY_FORMAT)
        fail_msg("%s (len %zu): got %d (%s), want NS_E_KEY_FORMAT", what, n, r, ns_strerror(r));
    assert_ptr_equal(b, SENTINEL);
}

/* s followed by suffix, as one string (caller frees). */
static char *concat(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    char *out = malloc(a + b + 1);
    assert_non_null(out);
    memcpy(out, s, a);
    memcpy(out + a, suffix, b + 1);
    return out;
}

/* ---- ns_keymat_parse: accepted forms ---- */

static void test_parse_raw(void **state)
{
    (void)state;
    uint8_t key[NS_DEK_LEN];

    key_bytes(key);
    check_parses(key, sizeof(key), "raw 32 bytes");

    /* Raw bytes are taken as they are, even when they end in a newline or look like text. */
    {
        uint8_t nl[NS_DEK_LEN];
        ns_buf *b = NULL;
        memset(nl, 'a', sizeof(nl));
        nl[NS_DEK_LEN - 1] = '\n';
        assert_int_equal(ns_keymat_parse(nl, sizeof(nl), &b), 0);
        assert_int_equal(b->len, NS_DEK_LEN);
        assert_memory_equal(b->data, nl, NS_DEK_LEN);
        ns_buf_free(b);
    }
}

static void test_parse_hex(void **state)
{
    (void)state;
    static const char *const suffixes[] = {"", "\n", "\r\n"};

    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char *lower = concat(KEY_HEX, suffixes[i]), *upper = concat(KEY_HEX_UPPER, suffixes[i]);
        char *mixed = concat(KEY_HEX, suffixes[i]);
        for (size_t k = 0; k < 64; k += 3)
            if (mixed[k] >= 'a' && mixed[k] <= 'f')
                mixed[k] = (char)(mixed[k] - 'a' + 'A');
        check_parses(lower, strlen(lower), "lower-case hex");
        check_parses(upper, strlen(upper), "upper-case hex");
        check_parses(mixed, strlen(mixed), "mixed-case hex");
        free(lower);
        free(upper);
        free(mixed);
    }
}

static void test_parse_base64(void **state)
{
    (void)state;
    char *nl = concat(KEY_B64, "\n"), *crlf = concat(KEY_B64, "\r\n");

    assert_int_equal(strlen(KEY_B64), 44);
    check_parses(KEY_B64, strlen(KEY_B64), "base64");
    check_parses(nl, strlen(nl), "base64 + LF");
    check_parses(crlf, strlen(crlf), "base64 + CRLF");
    free(nl);
    free(crlf);
}

/* ---- ns_keymat_parse: refusals, all exactly NS_E_KEY_FORMAT ---- */

static void test_parse_wrong_lengths(void **state)
{
    (void)state;
    uint8_t raw[NS_DEK_LEN + 2];
    char hex[2 * NS_DEK_LEN + 3];

    memset(raw, 0x41, sizeof(raw));
    check_refused(raw, 0, "empty");
    check_refused("", 0, "empty string");
    check_refused("\n", 1, "a lone newline");
    check_refused("\r\n", 2, "a lone CRLF");
    check_refused(raw, 31, "31 raw bytes");
    check_refused(raw, 33, "33 raw bytes");
    raw[32] = '\n';
    check_refused(raw, 33, "32 raw bytes + LF (raw takes no newline)");

    memcpy(hex, KEY_HEX, 64);
    check_refused(hex, 63, "63 hex digits");
    hex[63] = '\n';
    check_refused(hex, 64, "63 hex digits + LF");
    memcpy(hex, KEY_HEX, 64);
    hex[64] = '0';
    check_refused(hex, 65, "65 hex digits");
    hex[65] = '\n';
    check_refused(hex, 66, "65 hex digits + LF");
    check_refused(hex, 62, "62 hex digits");
    hex[64] = '\n';
    hex[65] = '\n';
    check_refused(hex, 66, "64 hex digits + two LFs");
    hex[64] = '\n';
    hex[65] = '\r';
    check_refused(hex, 66, "64 hex digits + LF CR");
    hex[64] = ' ';
    check_refused(hex, 65, "64 hex digits + space");

    /* 43 and 45 base64 characters. */
    check_refused(KEY_B64, 43, "43 base64 chars");
    {
        char *b45 = concat(KEY_B64, "=");
        char *b45nl = concat(b45, "\n");
        char *b43nl = concat("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "\n");
        check_refused(b45, strlen(b45), "45 base64 chars");
        check_refused(b45nl, strlen(b45nl), "45 base64 chars + LF");
        check_refused(b43nl, strlen(b43nl), "43 base64 chars + LF");
        free(b45);
        free(b45nl);
        free(b43nl);
    }
    /* 44 characters that are well-formed base64 of 31 or 30 bytes (two '=' or none). */
    check_refused("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", 44, "base64 of 31 bytes");
}

static void test_parse_bad_hex(void **state)
{
    (void)state;
    static const char bad[] = {'g', 'G', 'x', ' ', '-', '\0', '\n', (char)0x80, (char)0xff, ':'};
    char hex[2 * NS_DEK_LEN + 1];

    for (size_t i = 0; i < sizeof(bad); i++)
        for (size_t pos = 0; pos < 64; pos += 21) {
            char what[64];
            memcpy(hex, KEY_HEX, sizeof(hex));
            hex[pos] = bad[i];
            snprintf(what, sizeof(what), "hex with 0x%02x at %zu", (unsigned)(uint8_t)bad[i], pos);
            check_refused(hex, 64, what);
            hex[64] = '\n';
            check_refused(hex, 65, what);
        }
    /* "0x" prefix on 62 digits still makes 64 characters. */
    memcpy(hex, "0x", 2);
    memcpy(hex + 2, KEY_HEX, 62);
    check_refused(hex, 64, "0x-prefixed hex");
}

static void test_parse_bad_base64(void **state)
{
    (void)state;
    static const char bad[] = {'-', '_', '*', '.', ' ', '\0', '\n', (char)0x80, '='};
    char b64[45];

    for (size_t i = 0; i < sizeof(bad); i++)
        for (size_t pos = 0; pos < 43; pos += 7) {
            char what[64];
            memcpy(b64, KEY_B64, 44);
            b64[pos] = bad[i];
            snprintf(what, sizeof(what), "base64 with 0x%02x at %zu", (unsigned)(uint8_t)bad[i], pos);
            check_refused(b64, 44, what);
            b64[44] = '\n';
            check_refused(b64, 45, what);
        }
    /* Missing padding: 44 base64 alphabet chars decode to 33 bytes. */
    check_refused("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8A", 44, "no padding");
    /* base64url alphabet for a key whose standard encoding has '+' and '/'. */
    check_refused("-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_8=", 44, "base64url");
}

static void test_parse_base64_noncanonical(void **state)
{
    (void)state;
    /* "...Hh8=" encodes 1e 1f with two zero trailing bits; "...Hh9=" sets one of them: a lax decoder
     * would return the same 32 bytes. */
    static const char noncanon[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=";
    static const char noncanon2[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh/=";
    char *nl = concat(noncanon, "\n");

    assert_int_equal(strlen(noncanon), 44);
    check_refused(noncanon, 44, "non-canonical trailing bits (01)");
    check_refused(noncanon2, 44, "non-canonical trailing bits (11)");
    check_refused(nl, strlen(nl), "non-canonical trailing bits + LF");
    free(nl);
}

/* ---- ns_keymat_read_file ---- */

typedef struct fixture {
    char dir[256];
} fixture;

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup_dir(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "%s/test-keymat.XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int teardown_dir(void **state)
{
    fixture *f = *state;
    int r = nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return r;
}

/* Write p[0..n) to <dir>/name with exactly `mode` (whatever the umask); the path goes to path. */
static void write_file(const fixture *f, const char *name, const void *p, size_t n, mode_t mode, char *path,
                       size_t pathlen)
{
    int fd;

    snprintf(path, pathlen, "%s/%s", f->dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    assert_int_equal(close(fd), 0);
    assert_int_equal(chmod(path, mode), 0); /* independent of the umask */
}

static void check_file_loads(const char *path)
{
    uint8_t want[NS_DEK_LEN];
    ns_buf *b = NULL;
    int r = ns_keymat_read_file(path, &b);

    if (r != 0)
        fail_msg("%s: got %d (%s), want 0", path, r, ns_strerror(r));
    key_bytes(want);
    assert_int_equal(b->len, NS_DEK_LEN);
    assert_memory_equal(b->data, want, NS_DEK_LEN);
    assert_true(b->secret);
    ns_buf_free(b);
}

static void check_file_refused(const char *path, int want)
{
    ns_buf *b = SENTINEL;
    int r = ns_keymat_read_file(path, &b);

    if (r != want)
        fail_msg("%s: got %d (%s), want %d (%s)", path, r, ns_strerror(r), want, ns_strerror(want));
    assert_ptr_equal(b, SENTINEL);
}

static void test_file_mode_0600(void **state)
{
    fixture *f = *state;
    char path[512];
    uint8_t raw[NS_DEK_LEN];

    write_file(f, "hex.key", KEY_HEX "\n", 65, 0600, path, sizeof(path));
    check_file_loads(path);
    write_file(f, "b64.key", KEY_B64 "\r\n", 46, 0600, path, sizeof(path));
    check_file_loads(path);
    key_bytes(raw);
    write_file(f, "raw.key", raw, sizeof(raw), 0600, path, sizeof(path));
    check_file_loads(path);
    /* Owner read-only is fine too. */
    write_file(f, "ro.key", KEY_HEX, 64, 0400, path, sizeof(path));
    check_file_loads(path);
}

static void test_file_mode_too_open(void **state)
{
    (void)state;
    static const mode_t modes[] = {0640, 0604, 0660, 0606, 0644, 0610, 0601, 0620, 0602, 0700 | 0077};
    fixture *f = *state;
    char path[512], name[32];

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        snprintf(name, sizeof(name), "k%04o.key", (unsigned)modes[i]);
        write_file(f, name, KEY_HEX "\n", 65, modes[i], path, sizeof(path));
        check_file_refused(path, NS_E_PERM);
    }
}

static void test_file_missing(void **state)
{
    fixture *f = *state;
    char path[512];

    snprintf(path, sizeof(path), "%s/no-such.key", f->dir);
    check_file_refused(path, NS_E_NOT_FOUND);
    snprintf(path, sizeof(path), "%s/no-such-dir/k.key", f->dir);
    check_file_refused(path, NS_E_NOT_FOUND);
}

static void test_file_symlink_not_followed(void **state)
{
    fixture *f = *state;
    char target[512], link[512];
    ns_buf *b = SENTINEL;
    int r;

    write_file(f, "real.key", KEY_HEX "\n", 65, 0600, target, sizeof(target));
    check_file_loads(target);
    snprintf(link, sizeof(link), "%s/link.key", f->dir);
    assert_int_equal(symlink(target, link), 0);
    r = ns_keymat_read_file(link, &b);
    if (r == 0)
        fail_msg("a symbolic link to a valid key file was followed");
    /* O_NOFOLLOW gives ELOOP, reported as a permission problem. */
    assert_int_equal(r, NS_E_PERM);
    assert_ptr_equal(b, SENTINEL);

    /* A dangling link is not "missing": the name exists. */
    snprintf(link, sizeof(link), "%s/dangling.key", f->dir);
    assert_int_equal(symlink("no-such-target", link), 0);
    check_file_refused(link, NS_E_PERM);
}

static void test_file_directory(void **state)
{
    fixture *f = *state;
    char path[512];

    snprintf(path, sizeof(path), "%s/d.key", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    check_file_refused(path, NS_E_INVAL);
    check_file_refused(f->dir, NS_E_INVAL);
    check_file_refused("/dev/null", NS_E_INVAL); /* a device, not a regular file */
}

static void test_file_too_big_or_bad(void **state)
{
    fixture *f = *state;
    char path[512];
    uint8_t big[300];

    memset(big, 'a', sizeof(big));
    write_file(f, "big.key", big, sizeof(big), 0600, path, sizeof(path));
    check_file_refused(path, NS_E_KEY_FORMAT);

    /* A valid hex key followed by more data is not a key file either. */
    memcpy(big, KEY_HEX "\n", 65);
    write_file(f, "hex-plus.key", big, sizeof(big), 0600, path, sizeof(path));
    check_file_refused(path, NS_E_KEY_FORMAT);

    write_file(f, "256.key", big, 256, 0600, path, sizeof(path));
    check_file_refused(path, NS_E_KEY_FORMAT);

    write_file(f, "empty.key", big, 0, 0600, path, sizeof(path));
    check_file_refused(path, NS_E_KEY_FORMAT);

    write_file(f, "short.key", KEY_HEX, 63, 0600, path, sizeof(path));
    check_file_refused(path, NS_E_KEY_FORMAT);
}

/* ---- ns_keymat_from_env ---- */

static void test_env(void **state)
{
    (void)state;
    uint8_t want[NS_DEK_LEN];
    ns_buf *b = NULL;

    key_bytes(want);

    assert_int_equal(unsetenv(ENV_NAME), 0);
    b = SENTINEL;
    assert_int_equal(ns_keymat_from_env(ENV_NAME, &b), NS_E_NOT_FOUND);
    assert_ptr_equal(b, SENTINEL);

    assert_int_equal(setenv(ENV_NAME, KEY_HEX, 1), 0);
    b = NULL;
    assert_int_equal(ns_keymat_from_env(ENV_NAME, &b), 0);
    assert_int_equal(b->len, NS_DEK_LEN);
    assert_memory_equal(b->data, want, NS_DEK_LEN);
    assert_true(b->secret);
    ns_buf_free(b);

    assert_int_equal(setenv(ENV_NAME, KEY_B64 "\n", 1), 0);
    b = NULL;
    assert_int_equal(ns_keymat_from_env(ENV_NAME, &b), 0);
    assert_memory_equal(b->data, want, NS_DEK_LEN);
    ns_buf_free(b);

    static const char *const bad[] = {"", "not a key", KEY_HEX "0",
                                      "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(setenv(ENV_NAME, bad[i], 1), 0);
        b = SENTINEL;
        assert_int_equal(ns_keymat_from_env(ENV_NAME, &b), NS_E_KEY_FORMAT);
        assert_ptr_equal(b, SENTINEL);
    }
    assert_int_equal(unsetenv(ENV_NAME), 0);
}

/* ---- software KEK ids ---- */

static void check_soft_load(const ns_kek_config *kc, const uint8_t want_id[NS_KEK_ID_LEN])
{
    ns_kek *k = NULL;
    assert_int_equal(ns_keyring_load_soft(kc, &k), 0);
    assert_int_equal(k->mech, NS_MECH_SOFT_GCM);
    assert_memory_equal(k->id, want_id, NS_KEK_ID_LEN);
    ns_kek_free(k);
}

static void test_soft_id_stable(void **state)
{
    (void)state;
    uint8_t key[NS_DEK_LEN];
    ns_kek *a = NULL, *b = NULL;

    key_bytes(key);
    assert_int_equal(ns_kek_soft_new(key, "test a", &a), 0);
    assert_int_equal(ns_kek_soft_new(key, "test b", &b), 0);
    assert_int_equal(a->mech, NS_MECH_SOFT_GCM);
    assert_string_equal(a->source, "test a");
    assert_memory_equal(a->id, b->id, NS_KEK_ID_LEN);
    ns_kek_free(a);
    ns_kek_free(b);
}

static void test_soft_id_differs(void **state)
{
    (void)state;
    uint8_t key[NS_DEK_LEN];
    uint8_t ids[1 + 8 * NS_DEK_LEN][NS_KEK_ID_LEN];
    size_t n = 0;
    ns_kek *k = NULL;

    /* The key itself and every one-bit variant of it: all ids distinct. */
    key_bytes(key);
    assert_int_equal(ns_kek_soft_new(key, "base", &k), 0);
    memcpy(ids[n++], k->id, NS_KEK_ID_LEN);
    ns_kek_free(k);
    for (size_t bit = 0; bit < 8 * NS_DEK_LEN; bit++) {
        key[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        k = NULL;
        assert_int_equal(ns_kek_soft_new(key, "variant", &k), 0);
        memcpy(ids[n++], k->id, NS_KEK_ID_LEN);
        ns_kek_free(k);
        key[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (memcmp(ids[i], ids[j], NS_KEK_ID_LEN) == 0)
                fail_msg("ids %zu and %zu are equal", i, j);
}

static void check_no_window(const uint8_t *hay, size_t n, const uint8_t id[NS_KEK_ID_LEN], const char *what)
{
    for (size_t off = 0; off + NS_KEK_ID_LEN <= n; off++)
        if (memcmp(hay + off, id, NS_KEK_ID_LEN) == 0)
            fail_msg("the KEK id equals bytes %zu..%zu of %s", off, off + NS_KEK_ID_LEN - 1, what);
}

static void test_soft_id_leaks_nothing(void **state)
{
    (void)state;
    static const uint8_t fill[] = {0x00, 0x01, 0xff};
    uint8_t key[NS_DEK_LEN], sha[SHA256_DIGEST_LENGTH];
    ns_kek *k = NULL;

    for (size_t v = 0; v < sizeof(fill) + 1; v++) {
        if (v < sizeof(fill))
            memset(key, fill[v], sizeof(key));
        else
            key_bytes(key);
        assert_int_equal(ns_kek_soft_new(key, "sanity", &k), 0);
        check_no_window(key, sizeof(key), k->id, "the key");
        assert_non_null(SHA256(key, sizeof(key), sha));
        check_no_window(sha, sizeof(sha), k->id, "SHA-256(key)");
        /* Nor is it the generic derivation applied to the raw key. */
        {
            uint8_t raw_id[NS_KEK_ID_LEN];
            assert_int_equal(ns_kek_id_derive(NS_MECH_SOFT_GCM, key, sizeof(key), raw_id), 0);
            assert_memory_not_equal(raw_id, k->id, NS_KEK_ID_LEN);
        }
        ns_kek_free(k);
        k = NULL;
    }
}

/* SHA-256("nstance-secrets kek-id v1" || mech || material), first 16 bytes, computed here with OpenSSL
 * independently of kek.c. */
static void expected_id(uint8_t mech, const uint8_t *m, size_t n, uint8_t id[NS_KEK_ID_LEN])
{
    static const char label[] = "nstance-secrets kek-id v1";
    uint8_t md[SHA256_DIGEST_LENGTH];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    assert_non_null(ctx);
    assert_int_equal(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL), 1);
    assert_int_equal(EVP_DigestUpdate(ctx, label, strlen(label)), 1);
    assert_int_equal(EVP_DigestUpdate(ctx, &mech, 1), 1);
    assert_int_equal(EVP_DigestUpdate(ctx, m, n), 1);
    assert_int_equal(EVP_DigestFinal_ex(ctx, md, &mdlen), 1);
    assert_int_equal(mdlen, SHA256_DIGEST_LENGTH);
    EVP_MD_CTX_free(ctx);
    memcpy(id, md, NS_KEK_ID_LEN);
}

static void check_hex(const uint8_t id[NS_KEK_ID_LEN], const char *want)
{
    char hex[2 * NS_KEK_ID_LEN + 1];
    ns_hex_encode(id, NS_KEK_ID_LEN, hex);
    assert_string_equal(hex, want);
}

static void test_id_derive_known_answer(void **state)
{
    (void)state;
    static const uint8_t mechs[] = {
        NS_MECH_AES_GCM, NS_MECH_AES_KWP, NS_MECH_RSA_OAEP, NS_MECH_SOFT_GCM, 0, 0xff};
    uint8_t material[100], id[NS_KEK_ID_LEN], want[NS_KEK_ID_LEN];

    for (size_t i = 0; i < sizeof(material); i++)
        material[i] = (uint8_t)(i * 7 + 3);
    for (size_t m = 0; m < sizeof(mechs); m++)
        for (size_t n = 0; n <= sizeof(material); n += 33) {
            memset(id, 0, sizeof(id));
            assert_int_equal(ns_kek_id_derive(mechs[m], material, n, id), 0);
            expected_id(mechs[m], material, n, want);
            assert_memory_equal(id, want, NS_KEK_ID_LEN);
        }

    /* Fixed values, computed with Python's hashlib. */
    assert_int_equal(ns_kek_id_derive(NS_MECH_SOFT_GCM, (const uint8_t *)"abc", 3, id), 0);
    check_hex(id, "800c7d2a38c96572222e7b33040ddf77");
    assert_int_equal(ns_kek_id_derive(NS_MECH_AES_GCM, material, 0, id), 0);
    check_hex(id, "fdf7ea307a28315df8bf23ea1b63a645");

    /* The mechanism is part of the id. */
    assert_int_equal(ns_kek_id_derive(NS_MECH_AES_GCM, material, 32, id), 0);
    assert_int_equal(ns_kek_id_derive(NS_MECH_AES_KWP, material, 32, want), 0);
    assert_memory_not_equal(id, want, NS_KEK_ID_LEN);
}

static void test_soft_id_known_answer(void **state)
{
    (void)state;
    static const char label[] = "nstance-secrets kek-id v1";
    uint8_t key[NS_DEK_LEN], mac[32], want[NS_KEK_ID_LEN];
    unsigned maclen = 0;
    ns_kek *k = NULL;

    /* id = derive(soft, HMAC-SHA256(key, label)). */
    key_bytes(key);
    assert_non_null(
        HMAC(EVP_sha256(), key, sizeof(key), (const uint8_t *)label, strlen(label), mac, &maclen));
    assert_int_equal(maclen, 32);
    expected_id(NS_MECH_SOFT_GCM, mac, maclen, want);
    assert_int_equal(ns_kek_soft_new(key, "kat", &k), 0);
    assert_memory_equal(k->id, want, NS_KEK_ID_LEN);
    check_hex(k->id, "d014704d4146d3653247a1742b439012"); /* Python hashlib + hmac */
    ns_kek_free(k);
}

/* The `file` and `env` sources give the same KEK (same id) as the raw key. */
static void test_soft_load_sources(void **state)
{
    fixture *f = *state;
    char path[512], name[] = ENV_NAME;
    uint8_t key[NS_DEK_LEN];
    ns_kek *k = NULL;
    ns_kek_config kc;

    key_bytes(key);
    assert_int_equal(ns_kek_soft_new(key, "raw", &k), 0);

    write_file(f, "src.key", KEY_B64 "\n", 45, 0600, path, sizeof(path));
    memset(&kc, 0, sizeof(kc));
    kc.source = NS_KEK_SRC_FILE;
    kc.path = path;
    check_soft_load(&kc, k->id);

    assert_int_equal(setenv(ENV_NAME, KEY_HEX_UPPER "\r\n", 1), 0);
    memset(&kc, 0, sizeof(kc));
    kc.source = NS_KEK_SRC_ENV;
    kc.name = name;
    check_soft_load(&kc, k->id);
    assert_int_equal(unsetenv(ENV_NAME), 0);
    ns_kek_free(k);

    /* Errors pass through unchanged. */
    k = NULL;
    assert_int_equal(ns_keyring_load_soft(&kc, &k), NS_E_NOT_FOUND);
    assert_null(k);
    memset(&kc, 0, sizeof(kc));
    kc.source = NS_KEK_SRC_FILE;
    kc.path = path;
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(ns_keyring_load_soft(&kc, &k), NS_E_PERM);
    assert_null(k);
}

static void test_soft_load_bad_source(void **state)
{
    ns_kek_config kc;
    ns_kek *k = NULL;

    (void)state;
    memset(&kc, 0, sizeof(kc));
    kc.source = NS_KEK_SRC_PKCS11; /* not a software source */
    assert_int_equal(ns_keyring_load_soft(&kc, &k), NS_E_INVAL);
    assert_null(k);
}

/* A software KEK whose key changed under its id is reported as the wrong key; otherwise as damage. */
static void test_soft_diagnose(void **state)
{
    uint8_t key[NS_DEK_LEN];
    ns_kek *k = NULL;
    ns_buf *kb;

    (void)state;
    key_bytes(key);
    assert_int_equal(ns_kek_soft_new(key, "diag", &k), 0);
    assert_int_equal(ns_kek_diagnose_unwrap_failure(k), NS_E_INTEGRITY);
    kb = k->impl; /* white box: kek_soft.c keeps the key in a secret ns_buf */
    assert_int_equal(kb->len, NS_DEK_LEN);
    assert_true(kb->secret);
    kb->data[7] ^= 0x10;
    assert_int_equal(ns_kek_diagnose_unwrap_failure(k), NS_E_KEK_WRONG);
    kb->data[7] ^= 0x10;
    assert_int_equal(ns_kek_diagnose_unwrap_failure(k), NS_E_INTEGRITY);
    ns_kek_free(k);
    ns_kek_free(NULL);
}

static void test_mech_names(void **state)
{
    (void)state;
    assert_int_equal(ns_kek_mech_from_name("aes-gcm"), NS_MECH_AES_GCM);
    assert_int_equal(ns_kek_mech_from_name("aes-kwp"), NS_MECH_AES_KWP);
    assert_int_equal(ns_kek_mech_from_name("rsa-oaep"), NS_MECH_RSA_OAEP);
    /* Only token mechanisms are configurable by name. */
    assert_int_equal(ns_kek_mech_from_name("software-aes-gcm"), 0);
    assert_int_equal(ns_kek_mech_from_name("AES-GCM"), 0);
    assert_int_equal(ns_kek_mech_from_name("aes-gcm "), 0);
    assert_int_equal(ns_kek_mech_from_name(""), 0);
    assert_string_equal(ns_kek_mech_name(NS_MECH_AES_GCM), "aes-gcm");
    assert_string_equal(ns_kek_mech_name(NS_MECH_AES_KWP), "aes-kwp");
    assert_string_equal(ns_kek_mech_name(NS_MECH_RSA_OAEP), "rsa-oaep");
    assert_string_equal(ns_kek_mech_name(NS_MECH_SOFT_GCM), "software-aes-gcm");
    assert_string_equal(ns_kek_mech_name(0), "unknown");
    assert_string_equal(ns_kek_mech_name(NS_MECH_SOFT_GCM + 1), "unknown");
    assert_string_equal(ns_kek_mech_name(0xff), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_raw),
        cmocka_unit_test(test_parse_hex),
        cmocka_unit_test(test_parse_base64),
        cmocka_unit_test(test_parse_wrong_lengths),
        cmocka_unit_test(test_parse_bad_hex),
        cmocka_unit_test(test_parse_bad_base64),
        cmocka_unit_test(test_parse_base64_noncanonical),
        cmocka_unit_test_setup_teardown(test_file_mode_0600, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_file_mode_too_open, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_file_missing, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_file_symlink_not_followed, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_file_directory, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_file_too_big_or_bad, setup_dir, teardown_dir),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_soft_id_stable),
        cmocka_unit_test(test_soft_id_differs),
        cmocka_unit_test(test_soft_id_leaks_nothing),
        cmocka_unit_test(test_id_derive_known_answer),
        cmocka_unit_test(test_soft_id_known_answer),
        cmocka_unit_test_setup_teardown(test_soft_load_sources, setup_dir, teardown_dir),
        cmocka_unit_test(test_soft_load_bad_source),
        cmocka_unit_test(test_soft_diagnose),
        cmocka_unit_test(test_mech_names),
    };

    if (ns_secmem_init() != 0)
        fprintf(stderr, "# secure heap unavailable; continuing with ordinary memory\n");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
