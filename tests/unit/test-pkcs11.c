/* Unit tests for the token layer (pkcs11/): module loading, RFC 7512 URIs and PINs, the shared token with its
 * session pool, recovery after faults behind its back, retry counts, mechanism checks, key lookup, CK_RV
 * translation, and the "known id, wrong key" diagnosis of token KEKs.
 *
 * The test makes its own SoftHSM token in a mkdtemp folder (softhsm2.conf + SOFTHSM2_CONF), initialised
 * through PKCS#11 itself (C_InitToken, C_Login as SO, C_InitPIN), and removes it at the end. SoftHSM must
 * be installed: a missing module is a failure, not a skip. The test keeps one reference to the module for
 * its whole run, so that it can reach the token behind the token layer's back (C_CloseAllSessions,
 * C_Logout, C_DestroyObject) with the very function list the token layer uses. */
#include "ns-build.h"

#include <ftw.h>
#include <pthread.h>
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

/* Callbacks with fixed signatures (cmocka, nftw, ns_p11_op, pthread) ignore some of their arguments; the
 * build turns this warning off too (WARN_CFLAGS), this keeps a bare -Wextra compile quiet. */
#pragma GCC diagnostic ignored "-Wunused-parameter"

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secmem.h"
#include "envelope/envelope.h"
#include "keys/kek.h"
#include "keys/keyring.h"
#include "pkcs11/module.h"
#include "pkcs11/rv.h"
#include "pkcs11/key.h"
#include "pkcs11/uri.h"

#define LABEL    "nstest"
#define USER_PIN "user-1234"
#define SO_PIN   "so-pin-5678"
#define PIN_ENV  "NSTEST_P11_PIN"

/* pkcs11/module.h: a module path naming no file is "token unavailable" (not "not found", whose exit code
 * reads as "no such secret" to scripts). */
#define MODULE_MISSING NS_E_TOKEN_UNAVAILABLE

static const char *const module_candidates[] = {
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
};

/* The whole run shares one token; each test opens and closes what it uses. */
static struct {
    char dir[256];
    char module[256];
    ns_p11_module *mod; /* held for the whole run */
    CK_FUNCTION_LIST *fn;
} G;

/* What the running test holds; the per-test teardown releases whatever a failed assertion left behind, so
 * that one failure does not leave the shared token open (and logged out, say) for the next tests. */
static struct {
    ns_p11_token *t, *t2;
    ns_p11_key *k;
    ns_keyring *kr;
    ns_buf *blob;
} R;

static void drop_token(void)
{
    ns_p11_token_close(R.t);
    R.t = NULL;
}

static void drop_key(void)
{
    ns_p11_key_free(R.k);
    R.k = NULL;
}

/* ---- helpers ---- */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void write_file(const char *path, const char *s, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(s, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

/* "pkcs11:token=nstest<path>?module-path=<module><query>" into a static buffer (one at a time). */
static const char *uri(const char *path, const char *query)
{
    static char u[1024];
    snprintf(u, sizeof(u), "pkcs11:token=" LABEL "%s?module-path=%s%s", path, G.module, query);
    return u;
}

/* The same with the right PIN. */
static const char *uri_pin(const char *path)
{
    return uri(path, "&pin-value=" USER_PIN);
}

/* Capture what the code writes to stderr (the log) between capture_begin() and capture_end(). One capture
 * at a time; a failed assertion inside one jumps out of the test, and the per-test teardown then gives
 * stderr back (and shows what was captured) so that cmocka's report is seen. */
static struct {
    int active;
    int saved;
    FILE *f;
} cap;

static void capture_begin(void)
{
    assert_false(cap.active);
    fflush(stderr);
    cap.f = tmpfile();
    assert_non_null(cap.f);
    cap.saved = dup(STDERR_FILENO);
    assert_true(cap.saved >= 0);
    assert_int_equal(dup2(fileno(cap.f), STDERR_FILENO), STDERR_FILENO);
    cap.active = 1;
}

/* Give stderr back and return what was captured (caller frees), echoing it to stderr; NULL if nothing was
 * being captured. Does not assert, so that the teardown can use it after a failure. */
static char *capture_stop(void)
{
    long n;
    char *s = NULL;

    if (!cap.active)
        return NULL;
    cap.active = 0;
    fflush(stderr);
    (void)dup2(cap.saved, STDERR_FILENO);
    close(cap.saved);
    n = ftell(cap.f);
    if (n >= 0 && (s = calloc(1, (size_t)n + 1)) != NULL) {
        rewind(cap.f);
        if (fread(s, 1, (size_t)n, cap.f) != (size_t)n)
            s[0] = '\0';
        fputs(s, stderr);
    }
    fclose(cap.f);
    return s;
}

static int restore_stderr(void **state)
{
    free(capture_stop());
    return 0;
}

/* The captured text (caller frees). */
static char *capture_end(void)
{
    char *s;

    assert_true(cap.active);
    s = capture_stop();
    assert_non_null(s);
    return s;
}

/* The slot that holds our token now (SoftHSM may renumber slots). */
static CK_SLOT_ID token_slot(void)
{
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    CK_TOKEN_INFO ti;

    assert_int_equal(G.fn->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    for (CK_ULONG i = 0; i < n; i++)
        if (G.fn->C_GetTokenInfo(slots[i], &ti) == CKR_OK && (ti.flags & CKF_TOKEN_INITIALIZED) &&
            memcmp(ti.label, LABEL " ", sizeof(LABEL)) == 0)
            return slots[i];
    fail_msg("token %s not found", LABEL);
    return 0;
}

/* A session of our own on the token, behind the token layer's back; logged in as user if asked (the login
 * state is shared by every session of the process, so it may be logged in already). */
static CK_SESSION_HANDLE raw_open(int login)
{
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    CK_RV rv;

    assert_int_equal(G.fn->C_OpenSession(token_slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
                     CKR_OK);
    if (login) {
        rv = G.fn->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN));
        assert_true(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
    }
    return s;
}

static void raw_close(CK_SESSION_HANDLE s)
{
    assert_int_equal(G.fn->C_CloseSession(s), CKR_OK);
}

/* A sensitive AES-256 token key labelled `label`, usable for encrypt/decrypt (or wrap/unwrap). */
static CK_OBJECT_HANDLE raw_aes_key(CK_SESSION_HANDLE s, const char *label, int wrap)
{
    CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE, enc = wrap ? CK_FALSE : CK_TRUE, wr = wrap ? CK_TRUE : CK_FALSE;
    CK_ULONG len = 32;
    CK_ATTRIBUTE t[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},     {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)}, {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_ENCRYPT, &enc, sizeof(enc)},   {CKA_DECRYPT, &enc, sizeof(enc)},
        {CKA_WRAP, &wr, sizeof(wr)},        {CKA_UNWRAP, &wr, sizeof(wr)},
        {CKA_VALUE_LEN, &len, sizeof(len)}, {CKA_LABEL, (void *)label, strlen(label)},
    };
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;

    assert_int_equal(G.fn->C_GenerateKey(s, &m, t, sizeof(t) / sizeof(t[0]), &h), CKR_OK);
    return h;
}

/* Every object labelled `label` (any class) is destroyed; returns how many there were. */
static int raw_destroy_label(CK_SESSION_HANDLE s, const char *label)
{
    CK_ATTRIBUTE t = {CKA_LABEL, (void *)label, strlen(label)};
    CK_OBJECT_HANDLE hs[8];
    CK_ULONG n = 0;

    assert_int_equal(G.fn->C_FindObjectsInit(s, &t, 1), CKR_OK);
    assert_int_equal(G.fn->C_FindObjects(s, hs, 8, &n), CKR_OK);
    assert_int_equal(G.fn->C_FindObjectsFinal(s), CKR_OK);
    for (CK_ULONG i = 0; i < n; i++)
        assert_int_equal(G.fn->C_DestroyObject(s, hs[i]), CKR_OK);
    return (int)n;
}

static void pad_label(CK_UTF8CHAR out[32], const char *label)
{
    memset(out, ' ', 32);
    memcpy(out, label, strlen(label));
}

/* C_InitToken on the free slot, then C_InitPIN as SO. */
static void init_token(void)
{
    CK_SLOT_ID slots[16], free_slot = (CK_SLOT_ID)-1;
    CK_ULONG n = 16;
    CK_TOKEN_INFO ti;
    CK_UTF8CHAR label[32];
    CK_SESSION_HANDLE s;

    assert_int_equal(G.fn->C_GetSlotList(CK_FALSE, slots, &n), CKR_OK);
    for (CK_ULONG i = 0; i < n; i++)
        if (G.fn->C_GetTokenInfo(slots[i], &ti) == CKR_OK && !(ti.flags & CKF_TOKEN_INITIALIZED)) {
            free_slot = slots[i];
            break;
        }
    assert_true(free_slot != (CK_SLOT_ID)-1);
    pad_label(label, LABEL);
    assert_int_equal(G.fn->C_InitToken(free_slot, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN), label), CKR_OK);
    assert_int_equal(G.fn->C_OpenSession(token_slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
                     CKR_OK);
    assert_int_equal(G.fn->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)), CKR_OK);
    assert_int_equal(G.fn->C_InitPIN(s, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)), CKR_OK);
    assert_int_equal(G.fn->C_Logout(s), CKR_OK);
    assert_int_equal(G.fn->C_CloseSession(s), CKR_OK);
}

static int group_teardown(void **state);

static int group_setup_inner(void)
{
    char path[512], conf[1024];
    const char *tmp = getenv("TMPDIR");
    CK_SESSION_HANDLE s;

    ns_log_set_level(NS_LOG_WARN);
    if (ns_secmem_init() != 0)
        fprintf(stderr, "(secure heap unavailable; secrets use ordinary memory)\n");
    unsetenv(PIN_ENV);
    for (size_t i = 0; i < sizeof(module_candidates) / sizeof(module_candidates[0]); i++)
        if (access(module_candidates[i], R_OK) == 0) {
            snprintf(G.module, sizeof(G.module), "%s", module_candidates[i]);
            break;
        }
    if (G.module[0] == '\0') {
        fprintf(stderr, "SoftHSM module not found at %s or %s\n", module_candidates[0], module_candidates[1]);
        return -1;
    }
    snprintf(G.dir, sizeof(G.dir), "%s/test-pkcs11.XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(G.dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/tokens", G.dir);
    if (mkdir(path, 0700) != 0)
        return -1;
    snprintf(conf, sizeof(conf),
             "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n"
             "slots.removable = false\n",
             G.dir);
    snprintf(path, sizeof(path), "%s/softhsm2.conf", G.dir);
    write_file(path, conf, 0600);
    setenv("SOFTHSM2_CONF", path, 1);

    if (ns_p11_module_get(G.module, &G.mod) != 0)
        return -1;
    G.fn = ns_p11_module_fn(G.mod);
    init_token();

    /* Keys shared by the tests: an aes-gcm KEK with an id, and two keys under one label. */
    if (ns_kek_pkcs11_generate(uri_pin(";object=kek-gcm;id=%01%02"), "aes-gcm", NULL, 1) != 0)
        return -1;
    s = raw_open(1);
    raw_aes_key(s, "dup", 0);
    raw_aes_key(s, "dup", 0);
    raw_close(s);
    return 0;
}

static int group_setup(void **state)
{
    int r = group_setup_inner();
    if (r != 0)
        group_teardown(state);
    return r;
}

static int group_teardown(void **state)
{
    ns_p11_module_put(G.mod);
    G.mod = NULL;
    if (G.dir[0] != '\0')
        nftw(G.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    unsetenv("SOFTHSM2_CONF");
    return 0;
}

/* ---- module loading ---- */

static void test_module_errors(void **state)
{
    ns_p11_module *m = NULL, *m2 = NULL;
    char path[512], u[1024];

    assert_int_equal(ns_p11_module_get("/nonexistent/libnothing-pkcs11.so", &m), MODULE_MISSING);
    assert_null(m);
    assert_int_equal(ns_p11_module_get("/etc/hostname", &m), NS_E_TOKEN);
    snprintf(path, sizeof(path), "%s/not-a-module.so", G.dir);
    write_file(path, "this is text, not an ELF object\n", 0644);
    assert_int_equal(ns_p11_module_get(path, &m), NS_E_TOKEN);
    /* A real shared object without C_GetFunctionList. */
    if (access("/lib/x86_64-linux-gnu/libc.so.6", R_OK) == 0)
        assert_int_equal(ns_p11_module_get("/lib/x86_64-linux-gnu/libc.so.6", &m), NS_E_TOKEN);
    assert_null(m);

    /* The same errors through a URI. */
    snprintf(u, sizeof(u), "pkcs11:token=" LABEL "?module-path=/nonexistent/libnothing.so&pin-value=x");
    assert_int_equal(ns_p11_token_open(u, NULL, 1, &R.t), MODULE_MISSING);
    snprintf(u, sizeof(u), "pkcs11:token=" LABEL "?module-path=%s&pin-value=x", path);
    assert_int_equal(ns_p11_token_open(u, NULL, 1, &R.t), NS_E_TOKEN);
    assert_null(R.t);

    /* A module is loaded once and shared. */
    assert_int_equal(ns_p11_module_get(G.module, &m), 0);
    assert_ptr_equal(m, G.mod);
    assert_int_equal(ns_p11_module_get(G.module, &m2), 0);
    assert_ptr_equal(m2, m);
    assert_ptr_equal(ns_p11_module_fn(m), G.fn);
    assert_string_equal(ns_p11_module_path(m), G.module);
    ns_p11_module_put(m2);
    ns_p11_module_put(m);
    ns_p11_module_put(NULL);
}

/* ---- URIs and PINs ---- */

static void test_uri_and_pin_errors(void **state)
{
    char pinfile[512], q[600];

    /* Bad arguments. */
    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 0, &R.t), NS_E_INVAL);
    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, NS_P11_SESSIONS_MAX + 1, &R.t), NS_E_INVAL);

    /* No such token. */
    assert_int_equal(ns_p11_token_open(uri("x", "&pin-value=" USER_PIN), NULL, 1, &R.t),
                     NS_E_TOKEN_UNAVAILABLE);
    snprintf(q, sizeof(q), "pkcs11:token=no-such-token?module-path=%s&pin-value=%s", G.module, USER_PIN);
    assert_int_equal(ns_p11_token_open(q, NULL, 1, &R.t), NS_E_TOKEN_UNAVAILABLE);
    snprintf(q, sizeof(q), "pkcs11:serial=0000deadbeef0000?module-path=%s&pin-value=%s", G.module, USER_PIN);
    assert_int_equal(ns_p11_token_open(q, NULL, 1, &R.t), NS_E_TOKEN_UNAVAILABLE);

    /* Wrong PIN, and no PIN at all. */
    assert_int_equal(ns_p11_token_open(uri("", "&pin-value=wrong-pin"), NULL, 1, &R.t), NS_E_PIN);
    assert_int_equal(ns_p11_token_open(uri("", ""), NULL, 1, &R.t), NS_E_PIN);
    assert_int_equal(ns_p11_token_open(uri("", ""), PIN_ENV, 1, &R.t), NS_E_PIN); /* variable not set */
    setenv(PIN_ENV, "wrong-pin", 1);
    assert_int_equal(ns_p11_token_open(uri("", ""), PIN_ENV, 1, &R.t), NS_E_PIN);
    unsetenv(PIN_ENV);

    /* pin-source files: too open, missing, relative, right PIN with a trailing newline. */
    snprintf(pinfile, sizeof(pinfile), "%s/pin", G.dir);
    write_file(pinfile, USER_PIN "\n", 0644);
    snprintf(q, sizeof(q), "&pin-source=file:%s", pinfile);
    assert_int_equal(ns_p11_token_open(uri("", q), NULL, 1, &R.t), NS_E_PERM);
    assert_int_equal(chmod(pinfile, 0640), 0);
    assert_int_equal(ns_p11_token_open(uri("", q), NULL, 1, &R.t), NS_E_PERM);
    assert_int_equal(ns_p11_token_open(uri("", "&pin-source=pin-relative"), NULL, 1, &R.t), NS_E_INVAL);
    snprintf(q, sizeof(q), "&pin-source=file:%s/no-such-pin-file", G.dir);
    assert_int_equal(ns_p11_token_open(uri("", q), NULL, 1, &R.t), NS_E_PIN);
    assert_null(R.t);

    /* Malformed URIs. */
    assert_int_equal(ns_p11_token_open("http://example.com/", NULL, 1, &R.t), NS_E_INVAL);
    assert_int_equal(ns_p11_token_open("pkcs11:token=%zz", NULL, 1, &R.t), NS_E_INVAL);
    assert_int_equal(ns_p11_token_open(uri(";id=%4", "&pin-value=" USER_PIN), NULL, 1, &R.t), NS_E_INVAL);
    assert_null(R.t);
}

static void open_close_ok(const char *u, const char *pin_env)
{
    assert_int_equal(ns_p11_token_open(u, pin_env, 1, &R.t), 0);
    assert_non_null(R.t);
    assert_string_equal(ns_p11_token_label(R.t), LABEL);
    assert_string_equal(ns_p11_token_module_path(R.t), G.module);
    assert_int_equal(ns_p11_token_open_sessions(R.t), 1);
    drop_token();
}

static void test_pin_sources(void **state)
{
    char pinfile[512], q[600];

    open_close_ok(uri_pin(""), NULL);

    snprintf(pinfile, sizeof(pinfile), "%s/pin-ok", G.dir);
    write_file(pinfile, USER_PIN "\n", 0600);
    snprintf(q, sizeof(q), "&pin-source=file:%s", pinfile);
    open_close_ok(uri("", q), NULL);
    snprintf(q, sizeof(q), "&pin-source=%s", pinfile); /* an absolute path without "file:" */
    open_close_ok(uri("", q), NULL);
    write_file(pinfile, USER_PIN, 0400); /* no newline */
    snprintf(q, sizeof(q), "&pin-source=file:%s", pinfile);
    open_close_ok(uri("", q), NULL);

    setenv(PIN_ENV, USER_PIN, 1);
    open_close_ok(uri("", ""), PIN_ENV);
    unsetenv(PIN_ENV);

    /* pin-value wins over the environment. */
    setenv(PIN_ENV, "wrong-pin", 1);
    open_close_ok(uri_pin(""), PIN_ENV);
    unsetenv(PIN_ENV);
}

static void test_uri_pin_direct(void **state)
{
    ns_p11_uri *u = NULL;
    ns_buf *pin = NULL;
    char pinfile[512], q[1024];

    assert_int_equal(ns_p11_uri_parse("pkcs11:token=a", &u), 0);
    assert_int_equal(ns_p11_uri_pin(u, NULL, &pin), NS_E_NOT_FOUND);
    assert_int_equal(ns_p11_uri_names_object(u), 0);
    assert_null(ns_p11_uri_module_path(u));
    ns_p11_uri_free(u);
    u = NULL;

    snprintf(pinfile, sizeof(pinfile), "%s/pin-direct", G.dir);
    snprintf(q, sizeof(q), "pkcs11:token=a;object=k?pin-source=file:%s", pinfile);
    assert_int_equal(ns_p11_uri_parse(q, &u), 0);
    assert_int_equal(ns_p11_uri_names_object(u), 1);
    assert_int_equal(ns_p11_uri_pin(u, NULL, &pin), NS_E_NOT_FOUND);
    write_file(pinfile, "1234\r\n", 0600);
    assert_int_equal(ns_p11_uri_pin(u, NULL, &pin), 0);
    assert_non_null(pin);
    assert_true(pin->secret);
    assert_int_equal(pin->len, 4);
    assert_memory_equal(pin->data, "1234", 4);
    ns_buf_free(pin);
    pin = NULL;
    assert_int_equal(chmod(pinfile, 0604), 0);
    assert_int_equal(ns_p11_uri_pin(u, NULL, &pin), NS_E_PERM);
    assert_null(pin);
    ns_p11_uri_free(u);
    u = NULL;

    /* A folder is not a PIN file. */
    snprintf(q, sizeof(q), "pkcs11:token=a?pin-source=file:%s", G.dir);
    assert_int_equal(ns_p11_uri_parse(q, &u), 0);
    assert_int_equal(ns_p11_uri_pin(u, NULL, &pin), NS_E_INVAL);
    ns_p11_uri_free(u);
    u = NULL;

    /* The size limit: 255 bytes are a PIN, read whole; 256 are refused as a bad PIN source. A link to a good
     * PIN file is refused. */
    {
        char big[257], link[600];
        memset(big, '7', sizeof(big) - 1);
        big[255] = '\0';
        write_file(pinfile, big, 0600);
        snprintf(q, sizeof(q), "pkcs11:token=a?pin-source=file:%s", pinfile);
        assert_int_equal(ns_p11_uri_parse(q, &u), 0);
        assert_int_equal(ns_p11_uri_pin(u, NULL, &pin), 0);
        assert_int_equal(pin->len, 255);
        assert_memory_equal(pin->data, big, 255);
        ns_buf_free(pin);
        pin = NULL;
        big[255] = '7';
        big[256] = '\0';
        write_file(pinfile, big, 0600);
        assert_int_equal(ns_p11_uri_pin(u, NULL, &pin), NS_E_INVAL);
        assert_null(pin);
        ns_p11_uri_free(u);
        u = NULL;

        write_file(pinfile, "1234", 0600);
        snprintf(link, sizeof(link), "%s/pin-link", G.dir);
        assert_int_equal(symlink(pinfile, link), 0);
        snprintf(q, sizeof(q), "pkcs11:token=a?pin-source=file:%s", link);
        assert_int_equal(ns_p11_uri_parse(q, &u), 0);
        assert_int_equal(ns_p11_uri_pin(u, NULL, &pin), NS_E_PERM);
        assert_null(pin);
        ns_p11_uri_free(u);
        u = NULL;
    }

    /* pin-value is taken as it is, percent-decoded. */
    assert_int_equal(ns_p11_uri_parse("pkcs11:token=a?pin-value=a%26b", &u), 0);
    assert_int_equal(ns_p11_uri_pin(u, "UNUSED_PIN_ENV_X", &pin), 0);
    assert_int_equal(pin->len, 3);
    assert_memory_equal(pin->data, "a&b", 3);
    ns_buf_free(pin);
    ns_p11_uri_free(u);
    ns_p11_uri_free(NULL);
}

/* ---- logs never show a PIN ---- */

static void test_redact(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"pkcs11:token=a", "pkcs11:token=a"},
        {"pkcs11:token=a?pin-value=1234", "pkcs11:token=a?pin-value=***"},
        {"pkcs11:token=a?pin-value=1234&module-path=/m.so", "pkcs11:token=a?pin-value=***&module-path=/m.so"},
        {"pkcs11:token=a?module-path=/m.so&pin-value=12%2634",
         "pkcs11:token=a?module-path=/m.so&pin-value=***"},
        {"pkcs11:?pin-value=a&pin-value=bb&pin-value=ccc",
         "pkcs11:?pin-value=***&pin-value=***&pin-value=***"},
        {"pkcs11:?pin-value=", "pkcs11:?pin-value=***"},
        {"pkcs11:?pin-value=&pin-value=", "pkcs11:?pin-value=***&pin-value=***"},
        {"pkcs11:?pin-value=&x=1", "pkcs11:?pin-value=***&x=1"},
        {"pkcs11:?pin-source=file:/p&pin-value=s", "pkcs11:?pin-source=file:/p&pin-value=***"},
        {"", ""},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *r = ns_p11_uri_redact(cases[i].in);
        assert_non_null(r);
        assert_string_equal(r, cases[i].out);
        free(r);
    }
}

static void test_log_has_no_pin(void **state)
{
    ns_p11_uri *u = NULL;
    char *log;
    char bad[1024];

    capture_begin();
    assert_int_equal(ns_p11_token_open(uri("", "&pin-value=SECRETPIN"), NULL, 1, &R.t), NS_E_PIN);
    snprintf(bad, sizeof(bad), "pkcs11:token=" LABEL ";id=%%zz?module-path=%s&pin-value=SECRETPIN", G.module);
    assert_int_equal(ns_p11_uri_parse(bad, &u), NS_E_INVAL);
    assert_int_equal(ns_p11_token_open(bad, NULL, 1, &R.t), NS_E_INVAL);
    log = capture_end();
    assert_null(R.t);
    assert_null(u);
    assert_non_null(strstr(log, "CKR_PIN_INCORRECT"));
    assert_non_null(strstr(log, "C_Login"));
    assert_non_null(strstr(log, "pin-value=***"));
    assert_null(strstr(log, "SECRETPIN"));
    free(log);
}

/* ---- key objects ---- */

static void test_key_find(void **state)
{
    unsigned char *val = NULL;
    size_t len = 0;

    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 2, &R.t), 0);

    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";object=no-such-key"), CKO_SECRET_KEY, &R.k),
                     NS_E_TOKEN_OBJECT);
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";id=%ff%ff%ff"), CKO_SECRET_KEY, &R.k), NS_E_TOKEN_OBJECT);
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";object=dup"), CKO_SECRET_KEY, &R.k), NS_E_TOKEN_OBJECT);
    /* The right label but the wrong class. */
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";object=kek-gcm"), CKO_PRIVATE_KEY, &R.k),
                     NS_E_TOKEN_OBJECT);
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";object=kek-gcm;type=public"), CKO_SECRET_KEY, &R.k),
                     NS_E_INVAL);
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";object=kek-gcm;type=private"), CKO_SECRET_KEY, &R.k),
                     NS_E_INVAL);
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(""), CKO_SECRET_KEY, &R.k), NS_E_INVAL);
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";type=secret-key"), CKO_SECRET_KEY, &R.k), NS_E_INVAL);
    assert_int_equal(ns_p11_key_find(R.t, "pkcs11:object=%zz", CKO_SECRET_KEY, &R.k), NS_E_INVAL);
    assert_null(R.k);

    /* By label, by id, by both, with a matching type. */
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";object=kek-gcm"), CKO_SECRET_KEY, &R.k), 0);
    assert_ptr_equal(ns_p11_key_token(R.k), R.t);
    assert_int_equal(ns_p11_key_attr(R.k, CKA_LABEL, &val, &len), 0);
    assert_int_equal(len, 7);
    assert_memory_equal(val, "kek-gcm", 7);
    free(val);
    assert_null(strstr(ns_p11_key_uri(R.k), USER_PIN));
    assert_non_null(strstr(ns_p11_key_uri(R.k), "pin-value=***"));
    drop_key();
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";id=%01%02"), CKO_SECRET_KEY, &R.k), 0);
    assert_int_equal(ns_p11_key_attr(R.k, CKA_ID, &val, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(val, "\x01\x02", 2);
    free(val);
    /* A sensitive key's value cannot be read. */
    assert_int_equal(ns_p11_key_attr(R.k, CKA_VALUE, &val, &len), NS_E_TOKEN);
    drop_key();
    assert_int_equal(
        ns_p11_key_find(R.t, uri_pin(";object=kek-gcm;id=%01%02;type=secret-key"), CKO_SECRET_KEY, &R.k), 0);

    /* The key holds a reference to the token: it outlives the caller's close. */
    drop_token();
    assert_int_equal(ns_p11_key_attr(R.k, CKA_LABEL, &val, &len), 0);
    free(val);
    drop_key();
    ns_p11_key_free(NULL);
}

/* ---- mechanisms ---- */

static int has_mech(CK_MECHANISM_TYPE m)
{
    CK_MECHANISM_TYPE list[512];
    CK_ULONG n = 512;

    assert_int_equal(G.fn->C_GetMechanismList(token_slot(), list, &n), CKR_OK);
    for (CK_ULONG i = 0; i < n; i++)
        if (list[i] == m)
            return 1;
    return 0;
}

static void test_require_mech(void **state)
{
    static const struct {
        CK_MECHANISM_TYPE m;
        const char *name;
    } absent[] = {
        {CKM_IDEA_CBC, "CKM_IDEA_CBC"},
        {CKM_CAST5_CBC, "CKM_CAST5_CBC"},
        {CKM_RC5_CBC, "CKM_RC5_CBC"},
        {CKM_SKIPJACK_CBC64, "CKM_SKIPJACK_CBC64"},
    };
    char *log;
    size_t i;

    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 1, &R.t), 0);
    assert_true(has_mech(CKM_AES_GCM));
    assert_int_equal(ns_p11_token_require_mech(R.t, CKM_AES_GCM, CKF_ENCRYPT | CKF_DECRYPT, "CKM_AES_GCM"),
                     0);
    assert_int_equal(ns_p11_token_require_mech(R.t, CKM_AES_KEY_WRAP_PAD, CKF_WRAP | CKF_UNWRAP, "KWP"), 0);
    assert_int_equal(ns_p11_token_require_mech(R.t, CKM_RSA_PKCS_OAEP, CKF_DECRYPT, "OAEP"), 0);

    for (i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        if (!has_mech(absent[i].m))
            break;
    assert_true(i < sizeof(absent) / sizeof(absent[0]));
    capture_begin();
    assert_int_equal(ns_p11_token_require_mech(R.t, absent[i].m, CKF_ENCRYPT, absent[i].name),
                     NS_E_MECHANISM);
    log = capture_end();
    assert_non_null(strstr(log, "'" LABEL "'"));
    assert_non_null(strstr(log, absent[i].name));
    assert_non_null(strstr(log, G.module));
    free(log);

    /* Listed, but not for that operation: SoftHSM's KWP wraps and unwraps, it does not decrypt. */
    capture_begin();
    assert_int_equal(
        ns_p11_token_require_mech(R.t, CKM_AES_KEY_WRAP_PAD, CKF_DECRYPT, "CKM_AES_KEY_WRAP_PAD"),
        NS_E_MECHANISM);
    log = capture_end();
    assert_non_null(strstr(log, "CKM_AES_KEY_WRAP_PAD for the needed operation"));
    assert_non_null(strstr(log, "'" LABEL "'"));
    free(log);
    drop_token();
}

/* Fill some stack below the caller with 0xff, where the next call's locals will live. */
static void __attribute__((noinline)) dirty_stack(void)
{
    volatile unsigned char junk[4096];
    memset((void *)junk, 0xff, sizeof(junk));
}

/* SoftHSM 2.6.1 ORs CKM_AES_GCM's flags into CK_MECHANISM_INFO.flags without clearing it first, so a caller
 * that passes an uninitialised struct reads stack garbage as flags: GCM then seems to wrap, sign, derive...
 * Asking for an operation GCM does not have must still be NS_E_MECHANISM. */
static void test_regression_require_mech_uninitialised_info(void **state)
{
    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 1, &R.t), 0);
    for (int i = 0; i < 16; i++) {
        dirty_stack();
        assert_int_equal(ns_p11_token_require_mech(R.t, CKM_AES_GCM, CKF_WRAP, "CKM_AES_GCM"),
                         NS_E_MECHANISM);
    }
}

/* ---- sharing ---- */

static void test_token_shared(void **state)
{
    ns_p11_token *c = NULL;

    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 3, &R.t), 0);
    assert_int_equal(ns_p11_token_open(uri_pin(";object=whatever"), NULL, 1, &R.t2), 0);
    assert_ptr_equal(R.t, R.t2);
    drop_token();
    /* Still open through t2. */
    assert_int_equal(ns_p11_token_open_sessions(R.t2), 1);
    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 1, &c), 0);
    assert_ptr_equal(c, R.t2);
    ns_p11_token_close(c);
    ns_p11_token_close(R.t2);
    R.t2 = NULL;
    ns_p11_token_close(NULL);
    /* Every reference is gone (a leak would show in the sanitizer build): a wrong PIN now fails again. */
    assert_int_equal(ns_p11_token_open(uri("", "&pin-value=wrong-pin"), NULL, 1, &R.t), NS_E_PIN);
}

/* ---- session pool under threads ---- */

#define POOL_THREADS 8
#define POOL_OPS     300
#define POOL_MAX     3

static struct {
    ns_p11_token *t;
    pthread_barrier_t start;
    int failures;
    int active, max_active;
    unsigned max_open;
} P;

/* One random draw; while the pool test runs (P.t set) it also records how many operations run at once and
 * how many sessions the pool holds. */
static CK_RV op_random(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, void *ctx)
{
    CK_BYTE buf[16];
    int now, m;
    unsigned open, mo;
    CK_RV rv;

    if (P.t == NULL)
        return fn->C_GenerateRandom(s, buf, sizeof(buf));
    now = __atomic_add_fetch(&P.active, 1, __ATOMIC_SEQ_CST);
    open = ns_p11_token_open_sessions(P.t);
    while ((m = __atomic_load_n(&P.max_active, __ATOMIC_SEQ_CST)) < now &&
           !__atomic_compare_exchange_n(&P.max_active, &m, now, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
    while ((mo = __atomic_load_n(&P.max_open, __ATOMIC_SEQ_CST)) < open &&
           !__atomic_compare_exchange_n(&P.max_open, &mo, open, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
    rv = fn->C_GenerateRandom(s, buf, sizeof(buf));
    __atomic_sub_fetch(&P.active, 1, __ATOMIC_SEQ_CST);
    return rv;
}

static void *pool_thread(void *arg)
{
    pthread_barrier_wait(&P.start);
    for (int i = 0; i < POOL_OPS; i++) {
        CK_RV rv = CKR_GENERAL_ERROR;
        if (ns_p11_run(P.t, NULL, "C_GenerateRandom", op_random, NULL, &rv) != 0 || rv != CKR_OK)
            __atomic_add_fetch(&P.failures, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static void test_session_pool(void **state)
{
    pthread_t th[POOL_THREADS];

    memset(&P, 0, sizeof(P));
    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, POOL_MAX, &P.t), 0);
    assert_int_equal(pthread_barrier_init(&P.start, NULL, POOL_THREADS), 0);
    for (int i = 0; i < POOL_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, pool_thread, NULL), 0);
    for (int i = 0; i < POOL_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&P.start);

    assert_int_equal(P.failures, 0);
    assert_true(P.max_active >= 1);
    assert_true(P.max_active <= POOL_MAX);
    assert_true(P.max_open >= 1);
    assert_true(P.max_open <= POOL_MAX);
    assert_true(ns_p11_token_open_sessions(P.t) <= POOL_MAX);
    ns_p11_token_close(P.t);
    P.t = NULL;
}

/* ---- retries and recovery ---- */

typedef struct encrypt_ctx {
    int calls;
    CK_RV first_rv;
    CK_BYTE out[64];
    CK_ULONG out_len;
} encrypt_ctx;

/* AES-GCM encryption of 32 bytes with the key: needs the (private) key, so a login. */
static CK_RV op_gcm_encrypt(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, void *vctx)
{
    encrypt_ctx *c = vctx;
    CK_BYTE iv[12] = {0}, in[32] = {0};
    CK_GCM_PARAMS gp = {iv, sizeof(iv), 96, NULL, 0, 128};
    CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof(gp)};
    CK_RV rv;

    c->calls++;
    rv = fn->C_EncryptInit(s, &m, key);
    if (rv == CKR_OK) {
        c->out_len = sizeof(c->out);
        rv = fn->C_Encrypt(s, in, sizeof(in), c->out, &c->out_len);
    }
    if (c->calls == 1)
        c->first_rv = rv;
    return rv;
}

static void test_recovery_close_all(void **state)
{
    encrypt_ctx c;
    char *log;

    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 2, &R.t), 0);
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";object=kek-gcm"), CKO_SECRET_KEY, &R.k), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(ns_p11_run(R.t, R.k, "C_Encrypt", op_gcm_encrypt, &c, NULL), 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.out_len, 48);

    /* Every session closed behind the token's back: the login is gone too. */
    assert_int_equal(G.fn->C_CloseAllSessions(token_slot()), CKR_OK);
    memset(&c, 0, sizeof(c));
    capture_begin();
    assert_int_equal(ns_p11_run(R.t, R.k, "C_Encrypt", op_gcm_encrypt, &c, NULL), 0);
    log = capture_end();
    assert_int_equal(c.calls, 2);
    assert_true(ns_p11_rv_recoverable(c.first_rv));
    assert_non_null(strstr(log, ns_p11_rv_name(c.first_rv)));
    free(log);
    assert_int_equal(c.out_len, 48);
    assert_true(ns_p11_token_open_sessions(R.t) >= 1);

    /* And again, with a token-level operation first. */
    assert_int_equal(G.fn->C_CloseAllSessions(token_slot()), CKR_OK);
    assert_int_equal(ns_p11_run(R.t, NULL, "C_GenerateRandom", op_random, NULL, NULL), 0);
    assert_int_equal(ns_p11_token_open_sessions(R.t), 1);
    memset(&c, 0, sizeof(c));
    assert_int_equal(ns_p11_run(R.t, R.k, "C_Encrypt", op_gcm_encrypt, &c, NULL), 0);
    assert_int_equal(c.calls, 1);

    drop_key();
    drop_token();
}

/* C_Logout behind the token's back, with the key's handle cached: the next operation on the private key
 * logs in again and succeeds. (SoftHSM drops the handles of private objects at logout, so the operation
 * sees CKR_OBJECT_HANDLE_INVALID; the token layer looks the key up again, but without a login the key is
 * invisible, and it fails with NS_E_TOKEN_OBJECT.) */
static void test_regression_logout_cached_handle(void **state)
{
    CK_SESSION_HANDLE s;
    encrypt_ctx c;

    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 2, &R.t), 0);
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";object=kek-gcm"), CKO_SECRET_KEY, &R.k), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(ns_p11_run(R.t, R.k, "C_Encrypt", op_gcm_encrypt, &c, NULL), 0);

    s = raw_open(0);
    assert_int_equal(G.fn->C_Logout(s), CKR_OK);
    raw_close(s);
    memset(&c, 0, sizeof(c));
    assert_int_equal(ns_p11_run(R.t, R.k, "C_Encrypt", op_gcm_encrypt, &c, NULL), 0);
    assert_int_equal(c.out_len, 48);
    assert_true(ns_p11_token_open_sessions(R.t) >= 1);

    drop_key();
    drop_token();
}

/* C_Logout behind the token's back, then a key is looked up for the first time: the private key is
 * invisible until the token layer logs in again. */
static void test_regression_logout_then_find(void **state)
{
    CK_SESSION_HANDLE s;
    encrypt_ctx c;

    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 2, &R.t), 0);
    s = raw_open(0);
    assert_int_equal(G.fn->C_Logout(s), CKR_OK);
    raw_close(s);
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";object=kek-gcm"), CKO_SECRET_KEY, &R.k), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(ns_p11_run(R.t, R.k, "C_Encrypt", op_gcm_encrypt, &c, NULL), 0);
    drop_key();
    drop_token();
}

typedef struct count_ctx {
    CK_RV rv;
    int calls;
    CK_OBJECT_HANDLE seen[4];
} count_ctx;

static CK_RV op_fail(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, void *vctx)
{
    count_ctx *c = vctx;
    if (c->calls < 4)
        c->seen[c->calls] = obj;
    c->calls++;
    return c->rv;
}

static void expect_tries(ns_p11_token *t, ns_p11_key *k, CK_RV rv, int tries, int err)
{
    count_ctx c = {rv, 0, {0}};
    CK_RV got = CKR_OK;

    assert_int_equal(ns_p11_run(t, k, "injected", op_fail, &c, &got), err);
    assert_int_equal(c.calls, tries);
    assert_int_equal(got, rv);
    /* The token still works afterwards. */
    assert_int_equal(ns_p11_run(t, NULL, "C_GenerateRandom", op_random, NULL, NULL), 0);
}

static void test_retry_counts(void **state)
{
    count_ctx c = {CKR_OBJECT_HANDLE_INVALID, 0, {0}};
    char *log;

    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 2, &R.t), 0);
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";object=kek-gcm"), CKO_SECRET_KEY, &R.k), 0);

    expect_tries(R.t, NULL, CKR_DEVICE_ERROR, 2, NS_E_TOKEN_UNAVAILABLE);
    expect_tries(R.t, R.k, CKR_DEVICE_ERROR, 2, NS_E_TOKEN_UNAVAILABLE);
    expect_tries(R.t, NULL, CKR_SESSION_HANDLE_INVALID, 2, NS_E_TOKEN_UNAVAILABLE);
    expect_tries(R.t, NULL, CKR_SESSION_CLOSED, 2, NS_E_TOKEN_UNAVAILABLE);
    expect_tries(R.t, NULL, CKR_USER_NOT_LOGGED_IN, 2, NS_E_TOKEN_UNAVAILABLE);
    expect_tries(R.t, NULL, CKR_DEVICE_REMOVED, 2, NS_E_TOKEN_UNAVAILABLE);
    expect_tries(R.t, NULL, CKR_TOKEN_NOT_PRESENT, 2, NS_E_TOKEN_UNAVAILABLE);
    expect_tries(R.t, NULL, CKR_GENERAL_ERROR, 1, NS_E_TOKEN);
    expect_tries(R.t, R.k, CKR_GENERAL_ERROR, 1, NS_E_TOKEN);
    expect_tries(R.t, NULL, CKR_FUNCTION_FAILED, 1, NS_E_TOKEN);
    expect_tries(R.t, R.k, CKR_ENCRYPTED_DATA_INVALID, 1, NS_E_INTEGRITY);
    /* A stale object handle: looked up again and retried once, only when there is a key. */
    expect_tries(R.t, R.k, CKR_OBJECT_HANDLE_INVALID, 2, NS_E_TOKEN_OBJECT);
    expect_tries(R.t, R.k, CKR_KEY_HANDLE_INVALID, 2, NS_E_TOKEN_OBJECT);
    expect_tries(R.t, NULL, CKR_OBJECT_HANDLE_INVALID, 1, NS_E_TOKEN_OBJECT);

    /* The retry got the key's handle, looked up again. */
    assert_int_equal(ns_p11_run(R.t, R.k, "injected", op_fail, &c, NULL), NS_E_TOKEN_OBJECT);
    assert_int_equal(c.calls, 2);
    assert_true(c.seen[0] != CK_INVALID_HANDLE);
    assert_true(c.seen[1] != CK_INVALID_HANDLE);

    /* The final failure is logged with its CKR name; the quiet variant logs nothing for it. */
    capture_begin();
    c.rv = CKR_GENERAL_ERROR;
    c.calls = 0;
    assert_int_equal(ns_p11_run(R.t, R.k, "injected-loud", op_fail, &c, NULL), NS_E_TOKEN);
    c.calls = 0;
    assert_int_equal(ns_p11_run_quiet(R.t, R.k, "injected-quiet", op_fail, &c, NULL), NS_E_TOKEN);
    log = capture_end();
    assert_non_null(strstr(log, "injected-loud failed: CKR_GENERAL_ERROR"));
    assert_non_null(strstr(log, "'" LABEL "'"));
    assert_null(strstr(log, "injected-quiet"));
    free(log);

    drop_key();
    drop_token();
}

/* An operation begun and then failed without being ended, as a token may leave it after CKR_DEVICE_ERROR. */
static CK_RV op_fail_leaving_active(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key,
                                    void *vctx)
{
    count_ctx *c = vctx;
    CK_BYTE iv[12] = {0};
    CK_GCM_PARAMS gp = {iv, sizeof(iv), 96, NULL, 0, 128};
    CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof(gp)};
    CK_RV rv;

    c->calls++;
    if ((rv = fn->C_EncryptInit(s, &m, key)) != CKR_OK)
        return rv;
    return c->rv;
}

/* A fault that outlasted the retry left its session pooled with the operation still active: every later
 * operation on it failed with CKR_OPERATION_ACTIVE (not recoverable), so the server answered 503 after the
 * token was well again. One session in the pool, so a reused session would be that one. */
static void test_regression_failed_op_session_reused(void **state)
{
    CK_RV faults[] = {CKR_DEVICE_ERROR, CKR_GENERAL_ERROR, CKR_USER_NOT_LOGGED_IN};
    encrypt_ctx c;

    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 1, &R.t), 0);
    assert_int_equal(ns_p11_key_find(R.t, uri_pin(";object=kek-gcm"), CKO_SECRET_KEY, &R.k), 0);
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
        count_ctx f = {faults[i], 0, {0}};
        capture_begin();
        assert_int_not_equal(ns_p11_run(R.t, R.k, "injected", op_fail_leaving_active, &f, NULL), 0);
        free(capture_end());
        assert_int_equal(f.calls, ns_p11_rv_recoverable(faults[i]) ? 2 : 1);
        /* The next operation runs once, on a session without an active operation, still logged in. */
        memset(&c, 0, sizeof(c));
        assert_int_equal(ns_p11_run(R.t, R.k, "C_Encrypt", op_gcm_encrypt, &c, NULL), 0);
        assert_int_equal(c.calls, 1);
        assert_int_equal(c.out_len, 48);
        assert_int_equal(ns_p11_token_open_sessions(R.t), 1);
    }
    drop_key();
    drop_token();
}

/* ---- token KEKs: known id, wrong key; damaged wrapped DEK ---- */

static void kek_wrong_key(const char *label, const char *mech, int wrap, int swap)
{
    char path[128];
    ns_kek_config kc;
    ns_kek *kek = NULL;
    ns_buf *pt = NULL;
    ns_envelope_info info;
    uint8_t secret[100], *bad;
    CK_SESSION_HANDLE s;
    const char *name = "cluster/secret/test";
    char u[1024];

    snprintf(path, sizeof(path), ";object=%s", label);
    snprintf(u, sizeof(u), "%s", uri_pin(path));
    memset(&kc, 0, sizeof(kc));
    kc.source = NS_KEK_SRC_PKCS11;
    kc.uri = u;
    kc.mechanism = (char *)mech;
    assert_int_equal(ns_kek_pkcs11_generate(u, mech, NULL, 1), 0);
    assert_int_equal(ns_kek_pkcs11_generate(u, mech, NULL, 1), NS_E_EXISTS);
    assert_int_equal(ns_kek_pkcs11_open(&kc, 2, &kek), 0);
    assert_string_equal(kek->ops->name, mech);
    assert_null(kek->warning);
    assert_int_equal(ns_keyring_from_keks(&kek, 1, &R.kr), 0);
    for (size_t i = 0; i < sizeof(secret); i++)
        secret[i] = (uint8_t)(i * 7 + 1);
    assert_int_equal(ns_envelope_seal(R.kr, name, secret, sizeof(secret), &R.blob), 0);
    assert_int_equal(ns_envelope_open(R.kr, name, R.blob->data, R.blob->len, &pt, &info), 0);
    assert_int_equal(pt->len, sizeof(secret));
    assert_memory_equal(pt->data, secret, sizeof(secret));
    ns_buf_free(pt);
    pt = NULL;

    /* Damage the wrapped DEK (offset 26; W at 24): the key is right, the data is not. */
    assert_true(R.blob->len > 26 + 40);
    assert_int_equal((R.blob->data[24] << 8) | R.blob->data[25], wrap ? 40 : 60);
    bad = malloc(R.blob->len);
    assert_non_null(bad);
    for (size_t off = 26; off < 26 + (size_t)(wrap ? 40 : 60); off += wrap ? 13 : 19) {
        memcpy(bad, R.blob->data, R.blob->len);
        bad[off] ^= 0x01;
        assert_int_equal(ns_envelope_open(R.kr, name, bad, R.blob->len, &pt, NULL), NS_E_INTEGRITY);
        assert_null(pt);
    }
    free(bad);
    if (!swap)
        goto done;

    /* Behind the KEK's back: the key is destroyed and a new AES-256 key made under the same label. */
    s = raw_open(1);
    assert_int_equal(raw_destroy_label(s, label), 1);
    raw_aes_key(s, label, wrap);
    raw_close(s);
    assert_int_equal(ns_envelope_open(R.kr, name, R.blob->data, R.blob->len, &pt, NULL), NS_E_KEK_WRONG);
    assert_null(pt);
    /* Still the same answer the second time (the handle is now the new key's). */
    assert_int_equal(ns_envelope_open(R.kr, name, R.blob->data, R.blob->len, &pt, NULL), NS_E_KEK_WRONG);

done:
    ns_buf_free(R.blob);
    R.blob = NULL;
    ns_keyring_free(R.kr);
    R.kr = NULL;
}

/* After the key behind a token KEK was replaced (same label, new key), sealing must not go on: a blob would
 * carry the old key's id but be wrapped by the new key, and once the KEK is opened again (a restart) its id
 * is the new key's, so that blob names an id no configured key has, although the key that sealed it is
 * right there. */
static void test_regression_kek_swap_seals_under_stale_id(void **state)
{
    char u[1024];
    ns_kek_config kc;
    ns_kek *kek = NULL;
    ns_keyring *kr2 = NULL;
    ns_buf *pt = NULL;
    CK_SESSION_HANDLE s;
    const uint8_t secret[] = "sealed after the key was replaced";
    int r;

    snprintf(u, sizeof(u), "%s", uri_pin(";object=kek-swap-seal"));
    memset(&kc, 0, sizeof(kc));
    kc.source = NS_KEK_SRC_PKCS11;
    kc.uri = u;
    kc.mechanism = (char *)"aes-gcm";
    assert_int_equal(ns_kek_pkcs11_generate(u, "aes-gcm", NULL, 1), 0);
    assert_int_equal(ns_kek_pkcs11_open(&kc, 2, &kek), 0);
    assert_int_equal(ns_keyring_from_keks(&kek, 1, &R.kr), 0);
    s = raw_open(1);
    assert_int_equal(raw_destroy_label(s, "kek-swap-seal"), 1);
    raw_aes_key(s, "kek-swap-seal", 0);
    raw_close(s);

    r = ns_envelope_seal(R.kr, "cluster/secret/after-swap", secret, sizeof(secret), &R.blob);
    if (r == 0) {
        /* What a restart sees: the KEK opened again, with the id of the key as it is now. */
        assert_int_equal(ns_kek_pkcs11_open(&kc, 2, &kek), 0);
        assert_int_equal(ns_keyring_from_keks(&kek, 1, &kr2), 0);
        r = ns_envelope_open(kr2, "cluster/secret/after-swap", R.blob->data, R.blob->len, &pt, NULL);
        ns_buf_free(pt);
        ns_keyring_free(kr2);
        assert_int_equal(r, 0);
    } else {
        assert_int_equal(r, NS_E_KEK_WRONG);
    }
}

static void test_kek_wrong_key_gcm(void **state)
{
    kek_wrong_key("kek-swap-gcm", "aes-gcm", 0, 1);
}

static void test_kek_damaged_kwp(void **state)
{
    kek_wrong_key("kek-kwp", "aes-kwp", 1, 0);
}

/* For aes-kwp the stale handle of the replaced key comes back as CKR_UNWRAPPING_KEY_HANDLE_INVALID (and
 * CKR_WRAPPING_KEY_HANDLE_INVALID in the fingerprint), which the token layer does not look up again. */
static void test_regression_kwp_stale_handle(void **state)
{
    kek_wrong_key("kek-swap-kwp", "aes-kwp", 1, 1);
}

/* ---- CK_RV names and errors ---- */

/* A token already open in the process is shared; a second open must still present the right PIN, or a
 * configuration with a wrong or missing PIN works only as long as another entry opened the token first. */
static void test_regression_shared_token_skips_pin(void **state)
{
    assert_int_equal(ns_p11_token_open(uri_pin(""), NULL, 1, &R.t), 0);
    assert_int_equal(ns_p11_token_open(uri("", "&pin-value=wrong-pin"), NULL, 1, &R.t2), NS_E_PIN);
    assert_int_equal(ns_p11_token_open(uri("", ""), NULL, 1, &R.t2), NS_E_PIN);
    assert_null(R.t2);
    /* The right PIN, given another way, is fine. */
    setenv(PIN_ENV, USER_PIN, 1);
    assert_int_equal(ns_p11_token_open(uri("", ""), PIN_ENV, 1, &R.t2), 0);
    unsetenv(PIN_ENV);
    assert_ptr_equal(R.t2, R.t);
}

static void test_rv_mapping(void **state)
{
    static const struct {
        CK_RV rv;
        const char *name;
        int err;
        int recoverable;
    } table[] = {
        {CKR_OK, "CKR_OK", 0, 0},
        {CKR_HOST_MEMORY, "CKR_HOST_MEMORY", NS_E_NOMEM, 0},
        {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR", NS_E_TOKEN, 0},
        {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED", NS_E_TOKEN, 0},
        {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT", NS_E_PIN, 0},
        {CKR_PIN_LOCKED, "CKR_PIN_LOCKED", NS_E_PIN, 0},
        {CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED", NS_E_PIN, 0},
        {CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED", NS_E_PIN, 0},
        {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR", NS_E_TOKEN_UNAVAILABLE, 1},
        {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED", NS_E_TOKEN_UNAVAILABLE, 1},
        {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT", NS_E_TOKEN_UNAVAILABLE, 1},
        {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID", NS_E_TOKEN_UNAVAILABLE, 1},
        {CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED", NS_E_TOKEN_UNAVAILABLE, 1},
        {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN", NS_E_TOKEN_UNAVAILABLE, 1},
        {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID", NS_E_TOKEN_UNAVAILABLE, 0},
        {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED", NS_E_TOKEN_UNAVAILABLE, 0},
        {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID", NS_E_MECHANISM, 0},
        {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID", NS_E_MECHANISM, 0},
        {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID", NS_E_TOKEN_OBJECT, 0},
        {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID", NS_E_TOKEN_OBJECT, 0},
        {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED", NS_E_TOKEN_OBJECT, 0},
        {CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT", NS_E_TOKEN_OBJECT, 0},
        {CKR_ENCRYPTED_DATA_INVALID, "CKR_ENCRYPTED_DATA_INVALID", NS_E_INTEGRITY, 0},
        {CKR_ENCRYPTED_DATA_LEN_RANGE, "CKR_ENCRYPTED_DATA_LEN_RANGE", NS_E_INTEGRITY, 0},
        {CKR_WRAPPED_KEY_INVALID, "CKR_WRAPPED_KEY_INVALID", NS_E_INTEGRITY, 0},
        {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD", NS_E_TOKEN, 0},
        {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL", NS_E_TOKEN, 0},
        {CKR_SESSION_COUNT, "CKR_SESSION_COUNT", NS_E_TOKEN, 0},
        {CKR_SIGNATURE_INVALID, "CKR_SIGNATURE_INVALID", NS_E_TOKEN, 0},
        {CKR_VENDOR_DEFINED | 0x123, "CKR_0x80000123", NS_E_TOKEN, 0},
        {0x0000fffful, "CKR_0x0000ffff", NS_E_TOKEN, 0},
    };
    char *log;

    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        assert_string_equal(ns_p11_rv_name(table[i].rv), table[i].name);
        assert_int_equal(ns_p11_rv_map(table[i].rv), table[i].err);
        assert_int_equal(ns_p11_rv_recoverable(table[i].rv), table[i].recoverable);
    }

    /* ns_p11_rv_error logs "token '<label>': <what> failed: <CKR name>", and nothing for CKR_OK. */
    capture_begin();
    assert_int_equal(ns_p11_rv_error(CKR_OK, "tok-ok", "C_Nothing"), 0);
    assert_int_equal(ns_p11_rv_error(CKR_PIN_INCORRECT, "tok-a", "C_Login"), NS_E_PIN);
    assert_int_equal(ns_p11_rv_error(CKR_VENDOR_DEFINED | 0x42, "tok-b", "C_Vendor"), NS_E_TOKEN);
    assert_int_equal(ns_p11_rv_error(CKR_DEVICE_ERROR, NULL, "C_Decrypt"), NS_E_TOKEN_UNAVAILABLE);
    log = capture_end();
    assert_null(strstr(log, "tok-ok"));
    assert_non_null(strstr(log, "token 'tok-a': C_Login failed: CKR_PIN_INCORRECT"));
    assert_non_null(strstr(log, "token 'tok-b': C_Vendor failed: CKR_0x80000042"));
    assert_non_null(strstr(log, "C_Decrypt failed: CKR_DEVICE_ERROR"));
    free(log);
}

static int test_teardown(void **state)
{
    restore_stderr(state);
    ns_p11_token_close(P.t);
    P.t = NULL;
    ns_buf_free(R.blob);
    ns_keyring_free(R.kr);
    ns_p11_key_free(R.k);
    ns_p11_token_close(R.t2);
    ns_p11_token_close(R.t);
    memset(&R, 0, sizeof(R));
    /* Sessions of our own left open by a failed test would keep the token logged in for the next one. */
    (void)G.fn->C_CloseAllSessions(token_slot());
    return 0;
}

#define T(f) cmocka_unit_test_teardown(f, test_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_rv_mapping),
        T(test_redact),
        T(test_module_errors),
        T(test_uri_and_pin_errors),
        T(test_pin_sources),
        T(test_uri_pin_direct),
        T(test_log_has_no_pin),
        T(test_key_find),
        T(test_require_mech),
        T(test_regression_require_mech_uninitialised_info),
        T(test_token_shared),
        T(test_session_pool),
        T(test_recovery_close_all),
        T(test_regression_logout_cached_handle),
        T(test_regression_logout_then_find),
        T(test_retry_counts),
        T(test_regression_failed_op_session_reused),
        T(test_kek_wrong_key_gcm),
        T(test_regression_kek_swap_seals_under_stale_id),
        T(test_kek_damaged_kwp),
        T(test_regression_kwp_stale_handle),
        T(test_regression_shared_token_skips_pin),
    };

    umask(022);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
