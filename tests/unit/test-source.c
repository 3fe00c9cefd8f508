/* Unit tests for src/keys/source.c (the key-source table and the helpers the sources share) and for
 * ns_keyring_reload (src/keys/keyring.c). The network sources themselves are tested end to end against
 * tests/tools/kek-source-server.py (tests/integration/kek-sources.sh). */
#include "ns-build.h"

#include <fcntl.h>
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

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secmem.h"
#include "settings/settings.h"
#include "keys/kek.h"
#include "keys/keyring.h"
#include "keys/source_backends.h"

static ns_buf *const SENTINEL = (ns_buf *)(uintptr_t)0x5a5a5a5a;

#define KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
/* base64 of the 44 characters of KEY_B64: how AWS SecretBinary or Google payload.data carry it */
#define KEY_B64_B64 "QUFFQ0F3UUZCZ2NJQ1FvTERBME9EeEFSRWhNVUZSWVhHQmthR3h3ZEhoOD0="

static char tmpdir[64];

static int setup(void **state)
{
    strcpy(tmpdir, "/tmp/test-source-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void write_file(const char *name, const void *p, size_t n, mode_t mode, char *path, size_t size)
{
    int fd;

    snprintf(path, size, "%s/%s", tmpdir, name);
    unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* Capture stderr until capture_end(), which returns what was logged (caller frees). */
static void capture_begin(int *saved, int *fd)
{
    char tmpl[] = "/tmp/test-source-log-XXXXXX";

    *fd = mkstemp(tmpl);
    assert_true(*fd >= 0);
    unlink(tmpl);
    fflush(stderr);
    *saved = dup(2);
    assert_true(dup2(*fd, 2) == 2);
}

static char *capture_end(int saved, int fd)
{
    off_t size;
    char *buf;

    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
    size = lseek(fd, 0, SEEK_END);
    buf = calloc(1, (size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)size, 0), size);
    close(fd);
    return buf;
}

static void test_value_to_key(void **state)
{
    uint8_t want[NS_DEK_LEN];
    ns_buf *key = NULL;
    int saved, fd;
    char *log;

    for (size_t i = 0; i < NS_DEK_LEN; i++)
        want[i] = (uint8_t)i;
    assert_int_equal(ns_source_value_to_key("d", (const uint8_t *)KEY_HEX, 64, &key), 0);
    assert_memory_equal(key->data, want, NS_DEK_LEN);
    assert_true(key->secret);
    ns_buf_free(key);
    assert_int_equal(ns_source_value_to_key("d", (const uint8_t *)KEY_B64 "\n", 45, &key), 0);
    assert_memory_equal(key->data, want, NS_DEK_LEN);
    ns_buf_free(key);
    assert_int_equal(ns_source_value_to_key("d", want, NS_DEK_LEN, &key), 0);
    assert_memory_equal(key->data, want, NS_DEK_LEN);
    ns_buf_free(key);
    assert_int_equal(ns_source_b64_value_to_key("d", KEY_B64_B64, strlen(KEY_B64_B64), &key), 0);
    assert_memory_equal(key->data, want, NS_DEK_LEN);
    ns_buf_free(key);
    assert_int_equal(ns_source_b64_value_to_key("d", KEY_B64, 44, &key), 0); /* base64 of 32 raw bytes */
    assert_memory_equal(key->data, want, NS_DEK_LEN);
    ns_buf_free(key);

    /* Refusals name the source and the length, never the value. */
    key = SENTINEL;
    capture_begin(&saved, &fd);
    assert_int_equal(ns_source_value_to_key("vault X", (const uint8_t *)KEY_HEX "0", 65, &key),
                     NS_E_KEY_FORMAT);
    assert_int_equal(ns_source_value_to_key("vault X", (const uint8_t *)" " KEY_B64, 45, &key),
                     NS_E_KEY_FORMAT);
    assert_int_equal(ns_source_b64_value_to_key("gcp Y", KEY_HEX, 64, &key), NS_E_KEY_FORMAT); /* 48 bytes */
    assert_int_equal(ns_source_b64_value_to_key("gcp Y", "QUFB!", 5, &key), NS_E_KEY_FORMAT);
    log = capture_end(saved, fd);
    assert_ptr_equal(key, SENTINEL);
    assert_non_null(strstr(log,
                           "vault X: the value is not 32 raw bytes, 64 hex digits or 44 base64 characters "
                           "(65 bytes)"));
    assert_non_null(strstr(log, "gcp Y: the value is not valid base64 as the API sends it"));
    assert_null(strstr(log, "0001020304"));
    assert_null(strstr(log, "AAECAwQF"));
    free(log);
}

static void test_read_file(void **state)
{
    char path[256], big[5000];
    ns_buf *b = NULL;

    write_file("t1", "s.token\n", 8, 0600, path, sizeof(path));
    assert_int_equal(ns_source_read_file(path, "token file", 100, &b), 0);
    assert_int_equal(b->len, 7);
    assert_string_equal((char *)b->data, "s.token");
    assert_true(b->secret);
    ns_buf_free(b);
    write_file("t2", "tok\r\n", 5, 0400, path, sizeof(path));
    assert_int_equal(ns_source_read_file(path, "token file", 100, &b), 0);
    assert_string_equal((char *)b->data, "tok");
    ns_buf_free(b);
    write_file("t3", "12345", 5, 0600, path, sizeof(path));
    assert_int_equal(ns_source_read_file(path, "f", 5, &b), 0); /* exactly max */
    ns_buf_free(b);

    b = SENTINEL;
    assert_int_equal(ns_source_read_file(path, "f", 4, &b), NS_E_TOO_LARGE);
    write_file("t4", "tok", 3, 0640, path, sizeof(path));
    assert_int_equal(ns_source_read_file(path, "f", 100, &b), NS_E_PERM);
    write_file("t5", "tok", 3, 0604, path, sizeof(path));
    assert_int_equal(ns_source_read_file(path, "f", 100, &b), NS_E_PERM);
    write_file("t6", "\n", 1, 0600, path, sizeof(path));
    assert_int_equal(ns_source_read_file(path, "f", 100, &b), NS_E_FORMAT);
    write_file("t7", "a\0b", 3, 0600, path, sizeof(path));
    assert_int_equal(ns_source_read_file(path, "f", 100, &b), NS_E_FORMAT);
    snprintf(path, sizeof(path), "%s/missing", tmpdir);
    assert_int_equal(ns_source_read_file(path, "f", 100, &b), NS_E_NOT_FOUND);
    write_file("t8", "tok", 3, 0600, path, sizeof(path));
    snprintf(big, sizeof(big), "%s/link", tmpdir);
    assert_int_equal(symlink(path, big), 0);
    assert_int_equal(ns_source_read_file(big, "f", 100, &b), NS_E_PERM);
    assert_int_equal(ns_source_read_file(tmpdir, "f", 100, &b), NS_E_INVAL);
    assert_ptr_equal(b, SENTINEL);
}

static void test_form_encode(void **state)
{
    ns_buf *b = NULL;

    assert_int_equal(ns_buf_new(1024, true, &b), 0);
    assert_int_equal(ns_source_form_add(b, "grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), 0);
    assert_int_equal(ns_source_form_add(b, "scope", "https://vault.azure.net/.default"), 0);
    assert_int_equal(ns_source_form_add(b, "s", "a b+c&d=e~_.-%\xc3\xa9"), 0);
    assert_int_equal(ns_buf_put_u8(b, 0), 0);
    assert_string_equal((char *)b->data, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
                                         "&scope=https%3A%2F%2Fvault.azure.net%2F.default"
                                         "&s=a%20b%2Bc%26d%3De~_.-%25%C3%A9");
    ns_buf_free(b);
}

static void test_table_and_describe(void **state)
{
    static const struct {
        enum ns_kek_source id;
        const char *name;
    } want[] = {{NS_KEK_SRC_FILE, "file"}, {NS_KEK_SRC_ENV, "env"}};
    ns_kek_config kc;
    ns_buf *key = NULL;
    char d[NS_SOURCE_DESC_MAX];

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const ns_kek_source_ops *ops = ns_kek_source_find(want[i].id);
        assert_non_null(ops);
        assert_string_equal(ops->name, want[i].name);
    }
    assert_null(ns_kek_source_find(NS_KEK_SRC_PKCS11));
    assert_null(ns_kek_source_find((enum ns_kek_source)99));

    memset(&kc, 0, sizeof(kc));
    kc.source = NS_KEK_SRC_PKCS11;
    kc.line = 7;
    ns_kek_source_describe(&kc, d, sizeof(d));
    assert_string_equal(d, "pkcs11 (line 7)");
    assert_int_equal(ns_kek_source_fetch(&kc, d, &key), NS_E_INVAL);
    assert_null(key);
    kc.source = NS_KEK_SRC_ENV;
    kc.name = "NS_TEST_SOURCE_KEY";
    ns_kek_source_describe(&kc, d, 8);
    assert_string_equal(d, "env NS_"); /* cut, NUL-terminated */
}

/* ns_keyring_reload: picks up a changed key, keeps the old ring on failure, refuses a ring without config. */
static void test_reload(void **state)
{
    char text[512], path[256];
    ns_config *cfg = NULL;
    ns_keyring *kr = NULL;
    ns_kek *keks[1] = {NULL};
    uint8_t id1[NS_KEK_ID_LEN], id2[NS_KEK_ID_LEN], idf[NS_KEK_ID_LEN], raw[NS_DEK_LEN];
    int saved, fd;
    char *log;

    memset(raw, 7, sizeof(raw));
    write_file("old.key", raw, sizeof(raw), 0600, path, sizeof(path));
    snprintf(text, sizeof(text),
             "cluster_id: r\nstorage: {backend: file, path: /b}\n"
             "encryption_key: {source: env, name: NS_TEST_RELOAD_KEK}\n"
             "old_encryption_keys: [{source: file, path: %s}]\n",
             path);
    assert_int_equal(ns_config_parse(text, strlen(text), "reload.yaml", NULL, &cfg), 0);
    assert_int_equal(setenv("NS_TEST_RELOAD_KEK", KEY_HEX, 1), 0);
    assert_int_equal(ns_keyring_load(&cfg->keys, NS_KEYRING_STRICT, &kr), 0);
    assert_int_equal(kr->n, 2);
    memcpy(id1, ns_keyring_primary(kr)->id, NS_KEK_ID_LEN);
    memcpy(idf, kr->e[1].kek->id, NS_KEK_ID_LEN);

    /* Unchanged: the same ids. */
    assert_int_equal(ns_keyring_reload(kr), 0);
    assert_memory_equal(ns_keyring_primary(kr)->id, id1, NS_KEK_ID_LEN);

    /* The key changed at its source: the primary has a new id; the old one is gone (with a warning). */
    assert_int_equal(
        setenv("NS_TEST_RELOAD_KEK", "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100", 1),
        0);
    capture_begin(&saved, &fd);
    assert_int_equal(ns_keyring_reload(kr), 0);
    log = capture_end(saved, fd);
    memcpy(id2, ns_keyring_primary(kr)->id, NS_KEK_ID_LEN);
    assert_memory_not_equal(id1, id2, NS_KEK_ID_LEN);
    assert_null(ns_keyring_find(kr, id1));
    assert_non_null(ns_keyring_find(kr, idf));
    assert_non_null(strstr(log, "is no longer loaded"));
    assert_non_null(strstr(log, "env NS_TEST_RELOAD_KEK"));
    assert_null(strstr(log, "ffeeddcc"));
    free(log);

    /* The source breaks: the reload fails and the ring keeps what it had. */
    assert_int_equal(setenv("NS_TEST_RELOAD_KEK", "not a key", 1), 0);
    capture_begin(&saved, &fd);
    assert_int_equal(ns_keyring_reload(kr), NS_E_KEY_FORMAT);
    log = capture_end(saved, fd);
    assert_non_null(strstr(log, "reloading the encryption keys failed"));
    free(log);
    assert_int_equal(kr->n, 2);
    assert_memory_equal(ns_keyring_primary(kr)->id, id2, NS_KEK_ID_LEN);
    assert_non_null(ns_keyring_find(kr, idf));
    assert_int_equal(unsetenv("NS_TEST_RELOAD_KEK"), 0);
    capture_begin(&saved, &fd);
    assert_int_equal(ns_keyring_reload(kr), NS_E_NOT_FOUND);
    free(capture_end(saved, fd));
    assert_memory_equal(ns_keyring_primary(kr)->id, id2, NS_KEK_ID_LEN);
    ns_keyring_free(kr);
    kr = NULL;

    /* A ring made from KEKs has no config to read again. */
    assert_int_equal(ns_kek_soft_new(raw, "raw", &keks[0]), 0);
    assert_int_equal(ns_keyring_from_keks(keks, 1, &kr), 0);
    assert_int_equal(ns_keyring_reload(kr), NS_E_INVAL);
    assert_int_equal(ns_keyring_reload(NULL), NS_E_INVAL);
    ns_keyring_free(kr);
    ns_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_to_key), cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_form_encode),  cmocka_unit_test(test_table_and_describe),
        cmocka_unit_test(test_reload),
    };

    ns_log_set_level(NS_LOG_INFO);
    if (ns_secmem_init() != 0)
        fprintf(stderr, "# no locked secure heap\n");
    return cmocka_run_group_tests(tests, setup, teardown);
}
