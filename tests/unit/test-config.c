#include "ns-build.h"

#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"
#include "settings/settings.h"

static const char example[] =
    "cluster_id: demo\n"
    "storage:\n"
    "  backend: file\n"
    "  path: /var/lib/nstance/bucket\n"
    "encryption_key:\n"
    "  source: pkcs11\n"
    "  uri: \"pkcs11:token=nstance;object=kek-2;type=secret-key?module-path=/usr/lib/softhsm/"
    "libsofthsm2.so&pin-source=file:/etc/nstance/pin\"\n"
    "  mechanism: aes-gcm          # aes-gcm | aes-kwp | rsa-oaep (rsa-oaep: the URI names the private key)\n"
    "old_encryption_keys:\n"
    "  - source: file\n"
    "    path: /etc/nstance/kek-1.key\n"
    "  - source: env\n"
    "    name: NSTANCE_OLD_KEK\n";

/* ---- helpers ---- */

/* Run ns_config_parse with fd 2 redirected to a temp file; return the code and what was logged. */
static int parse_logged(const char *text, const char *base_dir, ns_config **out, char **log)
{
    char tmpl[] = "/tmp/test-config-log-XXXXXX";
    char *buf;
    int saved, fd, r;
    off_t size;

    fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    unlink(tmpl);
    fflush(stderr);
    saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fd, 2) == 2);
    r = ns_config_parse(text, strlen(text), "t.yaml", base_dir, out);
    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);

    size = lseek(fd, 0, SEEK_END);
    assert_true(size >= 0);
    buf = calloc(1, (size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)size, 0), size);
    close(fd);
    *log = buf;
    return r;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static ns_config *parse_ok(const char *text, const char *base_dir)
{
    ns_config *cfg = NULL;
    char *log = NULL;
    int r = parse_logged(text, base_dir, &cfg, &log);
    if (r != 0)
        fprintf(stderr, "unexpected failure %d: %s", r, log);
    free(log);
    assert_int_equal(r, 0);
    assert_non_null(cfg);
    return cfg;
}

static char *cwd_join(const char *rel)
{
    char cwd[PATH_MAX], *s;
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    s = malloc(strlen(cwd) + strlen(rel) + 2);
    assert_non_null(s);
    sprintf(s, "%s/%s", cwd, rel);
    return s;
}

/* ---- success ---- */

static void test_example(void **state)
{
    ns_config *cfg = parse_ok(example, "/etc/nstance");

    assert_string_equal(cfg->origin, "t.yaml");
    assert_string_equal(cfg->cluster_id, "demo");
    assert_string_equal(cfg->storage.backend, "file");
    assert_string_equal(cfg->storage.path, "/var/lib/nstance/bucket");
    assert_int_equal(cfg->storage.line, 3);

    assert_true(cfg->has_primary);
    assert_int_equal(cfg->primary.source, NS_KEK_SRC_PKCS11);
    assert_string_equal(cfg->primary.uri,
                        "pkcs11:token=nstance;object=kek-2;type=secret-key?module-path=/usr/lib/"
                        "softhsm/libsofthsm2.so&pin-source=file:/etc/nstance/pin");
    assert_string_equal(cfg->primary.mechanism, "aes-gcm");
    assert_null(cfg->primary.oaep_hash);
    assert_null(cfg->primary.pin_env);
    assert_null(cfg->primary.path);
    assert_null(cfg->primary.name);
    assert_int_equal(cfg->primary.line, 6);

    assert_int_equal(cfg->n_old, 2);
    assert_int_equal(cfg->old[0].source, NS_KEK_SRC_FILE);
    assert_string_equal(cfg->old[0].path, "/etc/nstance/kek-1.key");
    assert_null(cfg->old[0].uri);
    assert_null(cfg->old[0].mechanism);
    assert_null(cfg->old[0].name);
    assert_int_equal(cfg->old[0].line, 10);
    assert_int_equal(cfg->old[1].source, NS_KEK_SRC_ENV);
    assert_string_equal(cfg->old[1].name, "NSTANCE_OLD_KEK");
    assert_null(cfg->old[1].path);
    assert_int_equal(cfg->old[1].line, 12);

    assert_int_equal(cfg->token_sessions, 4);
    /* Issue 12: 2, so that Go and GnuTLS accept old root -> cross certificate (-> intermediate) -> leaf. */
    assert_int_equal(cfg->ca.path_len, NS_CA_DEFAULT_PATH_LEN);
    assert_int_equal(cfg->ca.path_len, 2);
    ns_config_free(cfg);

    /* 0 is a value, not "unset": it stays 0. */
    cfg = parse_ok("cluster_id: a\nstorage: {backend: file, path: /b}\nca: {path_len: 0}\n", NULL);
    assert_int_equal(cfg->ca.path_len, 0);
    ns_config_free(cfg);
}

static void test_minimal_and_options(void **state)
{
    ns_config *cfg;

    cfg = parse_ok("cluster_id: a\nstorage: {backend: file, path: /b}\n", NULL);
    assert_false(cfg->has_primary);
    assert_null(cfg->old);
    assert_int_equal(cfg->n_old, 0);
    assert_int_equal(cfg->token_sessions, 4);
    ns_config_free(cfg);

    cfg = parse_ok("cluster_id: A.b_c-9\n"
                   "storage: {backend: file, path: /b}\n"
                   "encryption_key:\n"
                   "  source: pkcs11\n"
                   "  uri: 'pkcs11:object=k'\n"
                   "  mechanism: rsa-oaep\n"
                   "  pin_env: _PIN_1\n"
                   "old_encryption_keys: []\n"
                   "pkcs11:\n"
                   "  sessions: 64\n",
                   NULL);
    assert_string_equal(cfg->cluster_id, "A.b_c-9");
    assert_string_equal(cfg->primary.mechanism, "rsa-oaep");
    assert_string_equal(cfg->primary.oaep_hash, "auto");
    assert_string_equal(cfg->primary.pin_env, "_PIN_1");
    assert_int_equal(cfg->n_old, 0);
    assert_int_equal(cfg->token_sessions, 64);
    ns_config_free(cfg);

    cfg = parse_ok("cluster_id: a\nstorage: {backend: file, path: /b}\n"
                   "old_encryption_keys:\n"
                   "  - {source: pkcs11, uri: 'pkcs11:object=o', mechanism: rsa-oaep, oaep_hash: sha1}\n"
                   "  - {source: pkcs11, uri: 'pkcs11:object=p', mechanism: aes-kwp}\n"
                   "pkcs11: {sessions: 1}\n",
                   NULL);
    assert_int_equal(cfg->n_old, 2);
    assert_string_equal(cfg->old[0].oaep_hash, "sha1");
    assert_null(cfg->old[1].oaep_hash);
    assert_string_equal(cfg->old[1].mechanism, "aes-kwp");
    assert_int_equal(cfg->old[1].line, 5);
    assert_int_equal(cfg->token_sessions, 1);
    ns_config_free(cfg);

    /* a 63-character cluster id is the longest allowed */
    cfg = parse_ok("cluster_id: abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abc\n"
                   "storage: {backend: file, path: /b}\n",
                   NULL);
    assert_int_equal(strlen(cfg->cluster_id), 63);
    ns_config_free(cfg);
}

static void test_relative_paths(void **state)
{
    const char *text = "cluster_id: demo\n"
                       "storage: {backend: file, path: bucket}\n"
                       "old_encryption_keys:\n"
                       "  - {source: file, path: keys/kek-1.key}\n"
                       "  - {source: file, path: ./kek-2.key}\n"
                       "  - {source: file, path: /abs/kek-3.key}\n";
    ns_config *cfg;
    char *want;

    cfg = parse_ok(text, "/etc/nstance");
    assert_string_equal(cfg->storage.path, "/etc/nstance/bucket");
    assert_string_equal(cfg->old[0].path, "/etc/nstance/keys/kek-1.key");
    assert_string_equal(cfg->old[1].path, "/etc/nstance/kek-2.key");
    assert_string_equal(cfg->old[2].path, "/abs/kek-3.key");
    ns_config_free(cfg);

    cfg = parse_ok(text, "/etc/nstance/");
    assert_string_equal(cfg->storage.path, "/etc/nstance/bucket");
    ns_config_free(cfg);

    /* Regression: ".//x" is relative too (it once resolved to "/x"). */
    cfg = parse_ok("cluster_id: demo\nstorage: {backend: file, path: .//var/x}\n", "/base");
    assert_string_equal(cfg->storage.path, "/base/var/x");
    ns_config_free(cfg);
    cfg = parse_ok("cluster_id: demo\nstorage: {backend: file, path: ././/y}\n", "/base");
    assert_string_equal(cfg->storage.path, "/base/y");
    ns_config_free(cfg);

    cfg = parse_ok(text, "/");
    assert_string_equal(cfg->storage.path, "/bucket");
    ns_config_free(cfg);

    cfg = parse_ok(text, NULL);
    want = cwd_join("bucket");
    assert_string_equal(cfg->storage.path, want);
    free(want);
    want = cwd_join("kek-2.key");
    assert_string_equal(cfg->old[1].path, want);
    free(want);
    ns_config_free(cfg);

    cfg = parse_ok(text, "conf");
    want = cwd_join("conf/bucket");
    assert_string_equal(cfg->storage.path, want);
    free(want);
    ns_config_free(cfg);
}

/* The external key sources: every key, the defaults, and what stays NULL. */
static void test_remote_sources(void **state)
{
    ns_config *cfg;
    const ns_kek_config *k;

    cfg = parse_ok("cluster_id: a\nstorage: {backend: file, path: /b}\n"
                   "encryption_key:\n"
                   "  source: vault\n"
                   "  address: 'https://vault.example.com:8200'\n"
                   "  path: nstance/kek\n"
                   "  field: key\n"
                   "old_encryption_keys:\n"
                   "  - source: vault\n"
                   "    address: 'http://127.0.0.1:8200/'\n"
                   "    mount: kv/team-a\n"
                   "    path: old\n"
                   "    field: 'the key'\n"
                   "    token_file: vault-token\n"
                   "    namespace: admin/ns1\n"
                   "    ca_file: ca.pem\n"
                   "  - source: vault\n"
                   "    address: 'http://localhost'\n"
                   "    path: p\n"
                   "    field: f\n"
                   "    approle: {role_id: 'db02de05-fa39', secret_id_file: sid}\n"
                   "  - source: vault\n"
                   "    address: 'http://[::1]:1'\n"
                   "    path: p\n"
                   "    field: f\n"
                   "    token_env: MY_TOKEN\n"
                   "    timeout: 1\n"
                   "    retries: 0\n"
                   "  - source: vault\n"
                   "    address: 'https://v'\n"
                   "    path: p\n"
                   "    field: f\n"
                   "    approle: {role_id: r, secret_id_file: /s, mount: auth-2}\n",
                   "/etc/ns");
    k = &cfg->primary;
    assert_int_equal(k->source, NS_KEK_SRC_VAULT);
    assert_string_equal(k->address, "https://vault.example.com:8200");
    assert_string_equal(k->mount, "secret");
    assert_string_equal(k->kv_path, "nstance/kek");
    assert_null(k->path); /* `path` of a vault entry is the secret's path, not a file */
    assert_string_equal(k->field, "key");
    assert_string_equal(k->token_env, "VAULT_TOKEN");
    assert_null(k->token_file);
    assert_null(k->vault_namespace);
    assert_null(k->approle.role_id);
    assert_null(k->ca_file);
    assert_int_equal(k->timeout_s, 10);
    assert_int_equal(k->retries, 3);
    assert_int_equal(k->line, 4);
    k = &cfg->old[0];
    assert_string_equal(k->address, "http://127.0.0.1:8200/");
    assert_string_equal(k->mount, "kv/team-a");
    assert_string_equal(k->kv_path, "old");
    assert_string_equal(k->field, "the key");
    assert_null(k->token_env);
    assert_string_equal(k->token_file, "/etc/ns/vault-token");
    assert_string_equal(k->vault_namespace, "admin/ns1");
    assert_string_equal(k->ca_file, "/etc/ns/ca.pem");
    k = &cfg->old[1];
    assert_null(k->token_env);
    assert_string_equal(k->approle.role_id, "db02de05-fa39");
    assert_string_equal(k->approle.secret_id_file, "/etc/ns/sid");
    assert_string_equal(k->approle.mount, "approle");
    assert_string_equal(cfg->old[2].token_env, "MY_TOKEN");
    assert_int_equal(cfg->old[2].timeout_s, 1);
    assert_int_equal(cfg->old[2].retries, 0);
    assert_string_equal(cfg->old[3].approle.mount, "auth-2");
    ns_config_free(cfg);

    cfg = parse_ok(
        "cluster_id: a\nstorage: {backend: file, path: /b}\n"
        "encryption_key: {source: aws-secrets-manager, secret_id: 'arn:aws:secretsmanager:eu-west-1:1:"
        "secret:nstance/kek-AbCdEf', region: eu-west-1}\n"
        "old_encryption_keys:\n"
        "  - {source: aws-secrets-manager, secret_id: k, version_stage: AWSPREVIOUS, region: us-east-2,"
        " endpoint: 'http://127.0.0.1:4566', ca_file: /ca}\n"
        "  - {source: aws-parameter-store, name: /nstance/kek, region: eu-central-1}\n"
        "  - {source: aws-parameter-store, name: kek, region: r1, endpoint: 'https://ssm.vpce.example'}\n",
        NULL);
    k = &cfg->primary;
    assert_int_equal(k->source, NS_KEK_SRC_AWS_SM);
    assert_string_equal(k->secret_id, "arn:aws:secretsmanager:eu-west-1:1:secret:nstance/kek-AbCdEf");
    assert_null(k->version_stage);
    assert_string_equal(k->region, "eu-west-1");
    assert_string_equal(k->endpoint, "https://secretsmanager.eu-west-1.amazonaws.com");
    assert_string_equal(cfg->old[0].version_stage, "AWSPREVIOUS");
    assert_string_equal(cfg->old[0].endpoint, "http://127.0.0.1:4566");
    assert_string_equal(cfg->old[0].ca_file, "/ca");
    k = &cfg->old[1];
    assert_int_equal(k->source, NS_KEK_SRC_AWS_SSM);
    assert_string_equal(k->name, "/nstance/kek");
    assert_string_equal(k->endpoint, "https://ssm.eu-central-1.amazonaws.com");
    assert_null(k->secret_id);
    assert_string_equal(cfg->old[2].endpoint, "https://ssm.vpce.example");
    ns_config_free(cfg);

    cfg =
        parse_ok("cluster_id: a\nstorage: {backend: file, path: /b}\n"
                 "encryption_key: {source: google-secret-manager, project: my-project, secret: nstance-kek}\n"
                 "old_encryption_keys:\n"
                 "  - {source: google-secret-manager, project: '123', secret: s, version: '7',"
                 " credentials_file: sa.json, endpoint: 'http://127.0.0.1:9'}\n"
                 "  - {source: google-secret-manager, project: p, secret: s,"
                 " metadata_endpoint: 'http://127.0.0.1:8'}\n",
                 "/c");
    k = &cfg->primary;
    assert_int_equal(k->source, NS_KEK_SRC_GCP_SM);
    assert_string_equal(k->project, "my-project");
    assert_string_equal(k->secret, "nstance-kek");
    assert_string_equal(k->version, "latest");
    assert_string_equal(k->endpoint, "https://secretmanager.googleapis.com");
    assert_string_equal(k->metadata_endpoint, "http://169.254.169.254");
    assert_null(k->credentials_file);
    k = &cfg->old[0];
    assert_string_equal(k->version, "7");
    assert_string_equal(k->credentials_file, "/c/sa.json");
    assert_null(k->metadata_endpoint);
    assert_string_equal(k->endpoint, "http://127.0.0.1:9");
    assert_string_equal(cfg->old[1].metadata_endpoint, "http://127.0.0.1:8");
    ns_config_free(cfg);

    cfg =
        parse_ok("cluster_id: a\nstorage: {backend: file, path: /b}\n"
                 "encryption_key: {source: azure-key-vault, vault_url: 'https://myvault.vault.azure.net',"
                 " name: nstance-kek}\n"
                 "old_encryption_keys:\n"
                 "  - {source: azure-key-vault, vault_url: 'https://v.example', name: k, version: 0a1b2c,"
                 " tenant_id: contoso.onmicrosoft.com, client_id: 00000000-0000-0000-0000-000000000001,"
                 " client_secret_file: /run/secret}\n"
                 "  - {source: azure-key-vault, vault_url: 'https://v', name: k, tenant_id: t, client_id: c,"
                 " client_secret_file: /s, authority: 'http://localhost:1234'}\n",
                 NULL);
    k = &cfg->primary;
    assert_int_equal(k->source, NS_KEK_SRC_AZURE_KV);
    assert_string_equal(k->vault_url, "https://myvault.vault.azure.net");
    assert_string_equal(k->name, "nstance-kek");
    assert_null(k->version);
    assert_string_equal(k->metadata_endpoint, "http://169.254.169.254");
    assert_null(k->authority);
    assert_null(k->tenant_id);
    k = &cfg->old[0];
    assert_string_equal(k->version, "0a1b2c");
    assert_string_equal(k->tenant_id, "contoso.onmicrosoft.com");
    assert_string_equal(k->client_id, "00000000-0000-0000-0000-000000000001");
    assert_string_equal(k->client_secret_file, "/run/secret");
    assert_string_equal(k->authority, "https://login.microsoftonline.com");
    assert_null(k->metadata_endpoint);
    assert_string_equal(cfg->old[1].authority, "http://localhost:1234");
    ns_config_free(cfg);
}

/* ns_config_url_ok: the plain-http exceptions are exact hosts, with an optional numeric port. */
static void test_url_rule(void **state)
{
    static const char *const good[] = {
        "https://a",
        "https://vault.example.com:8200/prefix",
        "http://127.0.0.1",
        "http://127.0.0.1:80",
        "http://localhost:8200/",
        "http://[::1]:1",
        "http://169.254.169.254",
    };
    static const char *const bad[] = {
        "",
        "https://",
        "https:///p",
        "http://vault",
        "http://127.0.0.2",
        "http://localhost.example",
        "http://127.0.0.1:",
        "http://127.0.0.1:1a",
        "http://127.0.0.1@evil",
        "https://user:pw@vault",
        "https://v/a?b",
        "https://v/a#b",
        "https://v/a b",
        "https://v/\x01",
        "HTTPS://v",
        "file:///etc/passwd",
        "https://:8200",
    };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!ns_config_url_ok(good[i]))
            fail_msg("refused: %s", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ns_config_url_ok(bad[i]))
            fail_msg("accepted: %s", bad[i]);
}

/* role_id is a credential: never quoted in a message. */
static void test_role_id_never_logged(void **state)
{
    ns_config *cfg = NULL;
    char *log = NULL;
    int r = parse_logged("cluster_id: demo\nstorage: {backend: file, path: /b}\n"
                         "encryption_key: {source: vault, address: 'https://v', path: p, field: f,"
                         " approle: {role_id: \"SECRET\\tROLE\", secret_id_file: /s}}\n",
                         NULL, &cfg, &log);

    assert_int_equal(r, NS_E_CONFIG);
    assert_non_null(strstr(log, "encryption_key.approle.role_id: must be"));
    assert_null(strstr(log, "SECRET"));
    free(log);
}

/* ---- errors ---- */

#define HEAD "cluster_id: demo\nstorage: {backend: file, path: /b}\n"
#define TPL  "templates:\n  t1:\n    files:\n"

struct bad_case {
    const char *name;
    const char *text;
    int line;
    const char *needle; /* must appear in the one logged line */
};

static const struct bad_case bad_cases[] = {
    {"unknown top-level key", HEAD "bogus: 1\n", 3, "unknown top-level key 'bogus'"},
    {"unknown key in encryption_key", HEAD "encryption_key:\n  source: file\n  path: /k\n  colour: blue\n", 6,
     "unknown key 'colour' in encryption_key"},
    {"unknown key in storage", "cluster_id: demo\nstorage:\n  backend: file\n  path: /b\n  size: 3\n", 5,
     "unknown key 'size' in storage"},
    {"unknown key in pkcs11", HEAD "pkcs11:\n  slots: 3\n", 4, "unknown key 'slots' in pkcs11"},
    {"duplicate top-level key", HEAD "cluster_id: other\n", 3,
     "duplicate key 'cluster_id' (first on line 1)"},
    {"duplicate key in entry", HEAD "encryption_key:\n  source: file\n  path: /k\n  path: /j\n", 6,
     "duplicate key 'encryption_key.path'"},
    {"duplicate source", HEAD "old_encryption_keys:\n  - source: file\n    source: env\n", 5,
     "duplicate key 'old_encryption_keys[0].source'"},
    {"storage is a sequence", "cluster_id: demo\nstorage: [file, /b]\n", 2,
     "storage: expected a mapping, got a sequence"},
    {"cluster_id is a mapping", "cluster_id: {a: b}\nstorage: {backend: file, path: /b}\n", 1,
     "cluster_id: expected a string, got a mapping"},
    {"old key is a sequence", HEAD "old_encryption_keys:\n  - [source, file]\n", 4,
     "old_encryption_keys[0]: expected a mapping, got a sequence"},
    {"old keys is a mapping", HEAD "old_encryption_keys:\n  source: file\n", 4,
     "old_encryption_keys: expected a sequence, got a mapping"},
    {"path is a sequence", HEAD "encryption_key:\n  source: file\n  path: [a, b]\n", 5,
     "encryption_key.path: expected a string, got a sequence"},
    {"encryption_key is null", HEAD "encryption_key:\n", 3, "encryption_key: expected a mapping, got null"},
    {"path is empty", HEAD "encryption_key: {source: file, path: ''}\n", 3,
     "encryption_key.path: must not be empty"},
    {"missing source", HEAD "old_encryption_keys:\n  - source: file\n    path: /k\n  - name: X\n", 6,
     "missing required key 'old_encryption_keys[1].source'"},
    {"unknown source", HEAD "encryption_key: {source: tpm}\n", 3,
     "encryption_key.source: unknown source 'tpm' (expected pkcs11, file, env, vault, aws-secrets-manager, "
     "aws-parameter-store, google-secret-manager or azure-key-vault)"},
    {"missing uri", HEAD "encryption_key:\n  source: pkcs11\n  mechanism: aes-gcm\n", 4,
     "missing required key 'encryption_key.uri'"},
    {"missing mechanism", HEAD "encryption_key:\n  source: pkcs11\n  uri: 'pkcs11:object=k'\n", 4,
     "missing required key 'encryption_key.mechanism'"},
    {"missing file path", HEAD "old_encryption_keys:\n- source: file\n", 4,
     "missing required key 'old_encryption_keys[0].path'"},
    {"missing env name", HEAD "old_encryption_keys:\n- source: env\n", 4,
     "missing required key 'old_encryption_keys[0].name'"},
    {"uri without scheme", HEAD "encryption_key:\n  source: pkcs11\n  uri: 'token=x'\n  mechanism: aes-gcm\n",
     5, "encryption_key.uri: must be a PKCS#11 URI"},
    {"bad mechanism", HEAD "encryption_key:\n  source: pkcs11\n  uri: 'pkcs11:object=k'\n  mechanism: des3\n",
     6, "encryption_key.mechanism: unknown value 'des3' (expected aes-gcm, aes-kwp or rsa-oaep)"},
    {"bad oaep_hash",
     HEAD "encryption_key: {source: pkcs11, uri: 'pkcs11:', mechanism: rsa-oaep, oaep_hash: md5}\n", 3,
     "encryption_key.oaep_hash: unknown value 'md5'"},
    {"oaep_hash with aes-gcm",
     HEAD "encryption_key:\n  source: pkcs11\n  oaep_hash: sha256\n  uri: 'pkcs11:object=k'\n  mechanism: "
          "aes-gcm\n",
     5, "encryption_key.oaep_hash is only valid with mechanism rsa-oaep"},
    {"bad pin_env",
     HEAD
     "encryption_key:\n  source: pkcs11\n  uri: 'pkcs11:object=k'\n  mechanism: aes-gcm\n  pin_env: 1PIN\n",
     7, "encryption_key.pin_env: must be an environment variable name"},
    {"bad env name", HEAD "old_encryption_keys:\n  - source: env\n    name: MY-KEK\n", 5,
     "old_encryption_keys[0].name: must be an environment variable name"},
    {"key not valid for source",
     HEAD "encryption_key:\n  source: pkcs11\n  uri: 'pkcs11:object=k'\n  mechanism: aes-gcm\n  path: /k\n",
     7, "encryption_key: key 'path' is not valid for source pkcs11"},
    {"uri not valid for file", HEAD "old_encryption_keys:\n  - source: file\n    uri: 'pkcs11:'\n", 5,
     "old_encryption_keys[0]: key 'uri' is not valid for source file"},
    {"bad cluster_id", "cluster_id: -demo\nstorage: {backend: file, path: /b}\n", 1,
     "cluster_id: '-demo' is not valid"},
    {"cluster_id with slash", "storage: {backend: file, path: /b}\ncluster_id: a/b\n", 2,
     "cluster_id: 'a/b'"},
    {"cluster_id too long",
     "cluster_id: abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abcd\n"
     "storage: {backend: file, path: /b}\n",
     1, "cluster_id: 'abcdefghij"},
    {"missing cluster_id", "storage: {backend: file, path: /b}\n", 1, "missing required key 'cluster_id'"},
    {"missing storage", "cluster_id: demo\n", 1, "missing required key 'storage'"},
    {"missing backend", "cluster_id: demo\nstorage:\n  path: /b\n", 3,
     "missing required key 'storage.backend'"},
    {"missing storage path", "cluster_id: demo\nstorage:\n  backend: file\n", 3,
     "missing required key 'storage.path'"},
    {"unknown backend", "cluster_id: demo\nstorage:\n  backend: gcs\n  path: /b\n", 3,
     "storage.backend: unknown backend 'gcs' (expected file or s3)"},
    /* s3 */
    {"s3 without bucket", "cluster_id: demo\nstorage:\n  backend: s3\n  region: eu-west-1\n", 3,
     "missing required key 'storage.bucket' (for backend s3)"},
    {"s3 with path", "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: b-1\n  path: /b\n", 5,
     "storage: key 'path' is not valid for backend s3"},
    {"file with bucket", "cluster_id: demo\nstorage:\n  backend: file\n  path: /b\n  bucket: b-1\n", 5,
     "storage: key 'bucket' is not valid for backend file"},
    {"file with credentials", "cluster_id: demo\nstorage:\n  backend: file\n  path: /b\n  credentials: {}\n",
     5, "storage: key 'credentials' is not valid for backend file"},
    {"bad bucket", "cluster_id: demo\nstorage: {backend: s3, bucket: My_Bucket}\n", 2,
     "storage.bucket: must be an S3 bucket name"},
    {"short bucket", "cluster_id: demo\nstorage: {backend: s3, bucket: ab}\n", 2, "storage.bucket: must be"},
    {"bad prefix", "cluster_id: demo\nstorage: {backend: s3, bucket: abc, prefix: a//b}\n", 2,
     "storage.prefix: must be folder names"},
    {"dot prefix", "cluster_id: demo\nstorage: {backend: s3, bucket: abc, prefix: ../x}\n", 2,
     "storage.prefix: must be"},
    {"absolute prefix", "cluster_id: demo\nstorage: {backend: s3, bucket: abc, prefix: /x}\n", 2,
     "storage.prefix: must be"},
    {"bad region", "cluster_id: demo\nstorage: {backend: s3, bucket: abc, region: EU_WEST}\n", 2,
     "storage.region: must be a region name"},
    {"endpoint with path",
     "cluster_id: demo\nstorage: {backend: s3, bucket: abc, endpoint: 'http://h:9/x'}\n", 2,
     "storage.endpoint: must be http://HOST[:PORT]"},
    {"endpoint scheme", "cluster_id: demo\nstorage: {backend: s3, bucket: abc, endpoint: 'ftp://h'}\n", 2,
     "storage.endpoint: must be"},
    {"endpoint user", "cluster_id: demo\nstorage: {backend: s3, bucket: abc, endpoint: 'https://u@h'}\n", 2,
     "storage.endpoint: must be"},
    {"path_style yes", "cluster_id: demo\nstorage: {backend: s3, bucket: abc, path_style: yes}\n", 2,
     "storage.path_style: expected true or false, got 'yes'"},
    {"path_style quoted", "cluster_id: demo\nstorage: {backend: s3, bucket: abc, path_style: 'true'}\n", 2,
     "storage.path_style: expected true or false"},
    {"timeouts zero",
     "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  timeouts: {connect_ms: 0}\n", 5,
     "storage.timeouts.connect_ms: 0 is out of range"},
    {"timeouts unknown",
     "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  timeouts:\n    total: 3\n", 6,
     "unknown key 'total' in storage.timeouts"},
    {"retries too many", "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  retries: {max: 11}\n",
     5, "storage.retries.max: 11 is out of range (0..10)"},
    {"retries not a map", "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  retries: 3\n", 5,
     "storage.retries: expected a mapping"},
    {"duplicate credentials",
     "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials: {profile: a}\n"
     "  credentials: {profile: b}\n",
     6, "duplicate key 'storage.credentials' (first on line 5)"},
    {"half a key pair",
     "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials:\n    access_key_id: "
     "AKIAIOSFODNN7EXAMPLE\n",
     6, "storage.credentials: access_key_id and secret_access_key go together"},
    {"token without keys",
     "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials: {session_token: t}\n", 5,
     "session_token needs access_key_id"},
    {"keys and profile",
     "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials: {access_key_id: "
     "AKIAIOSFODNN7EXAMPLE, secret_access_key: x, profile: p}\n",
     5, "explicit keys cannot be combined with profile"},
    {"bad key id",
     "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials: {access_key_id: has/slash}\n",
     5, "storage.credentials.access_key_id: must be an access key id"},
    {"unknown credentials key",
     "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials: {role_arn: x}\n", 5,
     "unknown key 'role_arn' in storage.credentials"},
    {"imds not bool",
     "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials: {imds: off}\n", 5,
     "storage.credentials.imds: expected true or false"},
    {"sessions 0", HEAD "pkcs11:\n  sessions: 0\n", 4, "pkcs11.sessions: 0 is out of range (1..64)"},
    {"sessions 65", HEAD "pkcs11:\n  sessions: 65\n", 4, "pkcs11.sessions: 65 is out of range (1..64)"},
    {"sessions huge", HEAD "pkcs11: {sessions: 99999999999999999999}\n", 3,
     "pkcs11.sessions: expected an integer"},
    {"sessions negative", HEAD "pkcs11: {sessions: -1}\n", 3,
     "pkcs11.sessions: expected an integer, got '-1'"},
    {"sessions quoted", HEAD "pkcs11: {sessions: '4'}\n", 3,
     "pkcs11.sessions: expected an integer, got a quoted"},
    {"sessions octal-looking", HEAD "pkcs11: {sessions: 010}\n", 3, "pkcs11.sessions: expected an integer"},
    {"syntax error", "cluster_id: demo\nstorage: {backend: file\n", 3, "YAML syntax error"},
    {"syntax error: bad indentation", "cluster_id: demo\n storage: x\n", 2, "YAML syntax error"},
    {"syntax error: tab", "cluster_id: demo\nstorage:\n\tbackend: file\n", 3, "YAML syntax error"},
    {"anchor", "cluster_id: &id demo\nstorage: {backend: file, path: /b}\n", 1,
     "anchors and aliases are not supported"},
    {"alias", "cluster_id: demo\nstorage: {backend: file, path: *id}\n", 2, "aliases are not supported"},
    {"merge key alias", HEAD "encryption_key:\n  <<: *base\n", 4, "aliases are not supported"},
    {"tag", "cluster_id: !!str demo\nstorage: {backend: file, path: /b}\n", 1, "tags are not supported"},
    {"empty document", "", 1, "empty document"},
    {"comment only", "# nothing here\n\n", 3, "empty document"},
    {"document marker only", "---\n", 1, "empty document"},
    {"two documents", HEAD "---\n" HEAD, 3, "only one YAML document"},
    {"top level sequence", "- cluster_id: demo\n", 1, "the top level must be a mapping, got a sequence"},
    {"top level scalar", "demo\n", 1, "the top level must be a mapping, got a string"},
    {"non-scalar key", HEAD "? [a, b]\n: c\n", 3, "keys must be strings"},
    {"NUL in value", "cluster_id: \"de\\0mo\"\nstorage: {backend: file, path: /b}\n", 1, "NUL bytes"},
    {"invalid UTF-8", "cluster_id: demo\nstorage: {backend: file, path: /b\xff}\n", 2, "YAML error"},
    {"long unknown key is cut",
     HEAD "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
          "aa: 1\n",
     3, "unknown top-level key 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'"},
    /* ---- external key sources ---- */
    {"vault without address", HEAD "encryption_key: {source: vault, path: nstance, field: kek}\n", 3,
     "missing required key 'encryption_key.address' (for source vault)"},
    {"vault without field", HEAD "encryption_key: {source: vault, address: 'https://v', path: p}\n", 3,
     "missing required key 'encryption_key.field'"},
    {"vault without path", HEAD "encryption_key: {source: vault, address: 'https://v', field: f}\n", 3,
     "missing required key 'encryption_key.path' (for source vault)"},
    {"vault over plain http",
     HEAD "encryption_key: {source: vault, address: 'http://vault:8200', path: p, field: f}\n", 3,
     "encryption_key.address: must be an https:// URL"},
    {"vault url with user",
     HEAD "encryption_key: {source: vault, address: 'https://u@v', path: p, field: f}\n", 3,
     "encryption_key.address: must be an https:// URL without user"},
    {"vault url with query",
     HEAD "encryption_key: {source: vault, address: 'https://v/?x=1', path: p, field: f}\n", 3,
     "encryption_key.address: must be"},
    {"vault url ftp", HEAD "encryption_key: {source: vault, address: 'ftp://v', path: p, field: f}\n", 3,
     "encryption_key.address: must be"},
    {"vault url without host",
     HEAD "encryption_key: {source: vault, address: 'https:///x', path: p, field: f}\n", 3,
     "encryption_key.address: must be"},
    {"http to a look-alike host",
     HEAD "encryption_key: {source: vault, address: 'http://127.0.0.1.evil.example', path: p, field: f}\n", 3,
     "encryption_key.address: must be"},
    {"http with a bad port",
     HEAD "encryption_key: {source: vault, address: 'http://127.0.0.1:8x', path: p, field: f}\n", 3,
     "encryption_key.address: must be"},
    {"vault path with ..",
     HEAD "encryption_key: {source: vault, address: 'https://v', path: a/../b, field: f}\n", 3,
     "encryption_key.path: must be segments"},
    {"vault path with //",
     HEAD "encryption_key: {source: vault, address: 'https://v', path: a//b, field: f}\n", 3,
     "encryption_key.path: must be segments"},
    {"vault path with leading /",
     HEAD "encryption_key: {source: vault, address: 'https://v', path: /a, field: f}\n", 3,
     "encryption_key.path: must be segments"},
    {"vault path with space",
     HEAD "encryption_key: {source: vault, address: 'https://v', path: 'a b', field: f}\n", 3,
     "encryption_key.path: must be segments"},
    {"vault token_env and token_file",
     HEAD "encryption_key:\n  source: vault\n  address: 'https://v'\n  path: p\n  field: f\n  token_env: T\n"
          "  token_file: /t\n",
     9, "encryption_key: 'token_env' and 'token_file' exclude each other"},
    {"vault approle and token_env",
     HEAD "encryption_key:\n  source: vault\n  address: 'https://v'\n  path: p\n  field: f\n  token_env: T\n"
          "  approle: {role_id: r, secret_id_file: /s}\n",
     9, "encryption_key: 'approle' and 'token_env' exclude each other"},
    {"vault approle without secret_id_file",
     HEAD "encryption_key:\n  source: vault\n  address: 'https://v'\n  path: p\n  field: f\n"
          "  approle: {role_id: r}\n",
     8, "missing required key 'encryption_key.approle.secret_id_file'"},
    {"vault approle unknown key",
     HEAD "encryption_key:\n  source: vault\n  address: 'https://v'\n  path: p\n  field: f\n"
          "  approle: {role_id: r, secret_id_file: /s, secret_id: x}\n",
     8, "unknown key 'secret_id' in encryption_key.approle"},
    {"vault approle is a string",
     HEAD "encryption_key: {source: vault, address: 'https://v', path: p, field: f, approle: r}\n", 3,
     "encryption_key.approle: expected a mapping, got a string"},
    {"vault bad token_env",
     HEAD "encryption_key: {source: vault, address: 'https://v', path: p, field: f, token_env: A-B}\n", 3,
     "encryption_key.token_env: must be an environment variable name"},
    {"vault key of another source",
     HEAD "encryption_key: {source: vault, address: 'https://v', path: p, field: f, region: eu-west-1}\n", 3,
     "encryption_key: key 'region' is not valid for source vault"},
    {"aws without region", HEAD "encryption_key: {source: aws-secrets-manager, secret_id: s}\n", 3,
     "missing required key 'encryption_key.region' (for source aws-secrets-manager)"},
    {"aws without secret_id", HEAD "encryption_key: {source: aws-secrets-manager, region: eu-west-1}\n", 3,
     "missing required key 'encryption_key.secret_id'"},
    {"aws bad region", HEAD "encryption_key: {source: aws-secrets-manager, secret_id: s, region: EU_West}\n",
     3, "encryption_key.region: must be an AWS region name"},
    {"aws http endpoint elsewhere",
     HEAD "encryption_key: {source: aws-secrets-manager, secret_id: s, region: r, endpoint: 'http://aws'}\n",
     3, "encryption_key.endpoint: must be an https:// URL"},
    {"aws secret_id with control byte",
     HEAD "encryption_key: {source: aws-secrets-manager, secret_id: \"a\\tb\", region: r}\n", 3,
     "encryption_key.secret_id: must be 1 to 2048 printable"},
    {"ssm without name", HEAD "encryption_key: {source: aws-parameter-store, region: r}\n", 3,
     "missing required key 'encryption_key.name' (for source aws-parameter-store)"},
    {"ssm with secret_id",
     HEAD "encryption_key: {source: aws-parameter-store, region: r, name: n, secret_id: s}\n", 3,
     "encryption_key: key 'secret_id' is not valid for source aws-parameter-store"},
    {"ssm with version_stage",
     HEAD "encryption_key: {source: aws-parameter-store, region: r, name: n, version_stage: AWSCURRENT}\n", 3,
     "key 'version_stage' is not valid for source aws-parameter-store"},
    {"google without secret", HEAD "encryption_key: {source: google-secret-manager, project: p}\n", 3,
     "missing required key 'encryption_key.secret'"},
    {"google bad project",
     HEAD "encryption_key: {source: google-secret-manager, project: 'a/b', secret: s}\n", 3,
     "encryption_key.project: must be 1 to 255 of"},
    {"google version ..",
     HEAD "encryption_key: {source: google-secret-manager, project: p, secret: s, version: ..}\n", 3,
     "encryption_key.version: must be"},
    {"google both token sources",
     HEAD "encryption_key:\n  source: google-secret-manager\n  project: p\n  secret: s\n"
          "  metadata_endpoint: 'http://169.254.169.254'\n  credentials_file: /k.json\n",
     8, "'credentials_file' and 'metadata_endpoint' exclude each other"},
    {"google with authority",
     HEAD "encryption_key: {source: google-secret-manager, project: p, secret: s, authority: 'https://a'}\n",
     3, "key 'authority' is not valid for source google-secret-manager"},
    {"azure without vault_url", HEAD "encryption_key: {source: azure-key-vault, name: kek}\n", 3,
     "missing required key 'encryption_key.vault_url'"},
    {"azure bad name",
     HEAD "encryption_key: {source: azure-key-vault, vault_url: 'https://v', name: 'a b'}\n", 3,
     "encryption_key.name: must be 1 to 255 of"},
    {"azure partial client credentials",
     HEAD "encryption_key: {source: azure-key-vault, vault_url: 'https://v', name: k, tenant_id: t, "
          "client_id: c}\n",
     3, "tenant_id, client_id and client_secret_file go together"},
    {"azure authority without client credentials",
     HEAD "encryption_key:\n  source: azure-key-vault\n  vault_url: 'https://v'\n  name: k\n"
          "  authority: 'https://login'\n",
     7, "encryption_key.authority is only used with client credentials"},
    {"azure client credentials and metadata",
     HEAD "encryption_key:\n  source: azure-key-vault\n  vault_url: 'https://v'\n  name: k\n  tenant_id: t\n"
          "  client_id: c\n  client_secret_file: /s\n  metadata_endpoint: 'http://169.254.169.254'\n",
     10, "'client_id' and 'metadata_endpoint' exclude each other"},
    {"azure with endpoint",
     HEAD
     "encryption_key: {source: azure-key-vault, vault_url: 'https://v', name: k, endpoint: 'https://e'}\n",
     3, "key 'endpoint' is not valid for source azure-key-vault"},
    {"ca_file for file", HEAD "encryption_key: {source: file, path: /k, ca_file: /ca.pem}\n", 3,
     "key 'ca_file' is not valid for source file"},
    {"timeout 0", HEAD "encryption_key: {source: aws-parameter-store, region: r, name: n, timeout: 0}\n", 3,
     "encryption_key.timeout: 0 is out of range (1..300)"},
    {"retries 11", HEAD "encryption_key: {source: aws-parameter-store, region: r, name: n, retries: 11}\n", 3,
     "encryption_key.retries: 11 is out of range (0..10)"},
    {"timeout for file", HEAD "encryption_key: {source: file, path: /k, timeout: 3}\n", 3,
     "key 'timeout' is not valid for source file"},
    {"env name is a parameter path", HEAD "encryption_key: {source: env, name: /nstance/kek}\n", 3,
     "encryption_key.name: must be an environment variable name"},
    /* server, groups, templates */
    {"server unknown key", HEAD "server:\n  port: 1\n", 4, "unknown key 'port' in server"},
    {"server listen without port", HEAD "server: {listen: \"127.0.0.1\"}\n", 3,
     "server.listen: must be HOST:PORT"},
    {"server listen port too big", HEAD "server: {listen: \"127.0.0.1:65536\"}\n", 3,
     "server.listen: must be"},
    {"server listen host name", HEAD "server: {listen: \"example.com:443\"}\n", 3, "server.listen: must be"},
    {"server names not a list", HEAD "server: {names: localhost}\n", 3, "server.names: expected a sequence"},
    {"server name with a space", HEAD "server: {names: [\"a b\"]}\n", 3,
     "must be a DNS name or an IP address"},
    {"server threads 0", HEAD "server: {threads: 0}\n", 3, "server.threads: 0 is out of range (1..64)"},
    {"server renew_min_interval 2d", HEAD "server: {renew_min_interval: 2d}\n", 3,
     "server.renew_min_interval: 2d is out of range"},
    {"server renew_grace 00s", HEAD "server: {renew_grace: 00s}\n", 3,
     "server.renew_grace: '00s' is not a duration"},
    {"server register_burst 0", HEAD "server: {register_burst: 0}\n", 3,
     "server.register_burst: 0 is out of range"},
    {"server register_per_minute 0", HEAD "server: {register_per_minute: 0}\n", 3,
     "server.register_per_minute: 0 is out of range"},
    {"server max_connections 0", HEAD "server: {max_connections: 0}\n", 3, "out of range (1..65536)"},
    {"server ttl not a duration", HEAD "server: {agent_cert_ttl: 1day}\n", 3, "is not a duration"},
    {"server ttl too short", HEAD "server: {operator_cert_ttl: 30s}\n", 3, "is out of range (1m..1830d)"},
    {"group to a missing template", HEAD "groups: {cp: nothing}\n", 3,
     "groups.cp: there is no template 'nothing'"},
    {"group without templates", HEAD "groups:\n  cp: control-plane\n", 4,
     "there is no template 'control-plane'"},
    {"group not a mapping", HEAD "groups: [cp]\n", 3, "groups: expected a mapping"},
    {"template without files", HEAD "templates:\n  t1: {}\n", 4, "missing required key 'templates.t1.files'"},
    {"template empty files", HEAD "templates:\n  t1: {files: []}\n", 4, "a template needs at least one file"},
    {"relative path", HEAD TPL "      - {path: etc/x, secret: s, format: pem}\n", 6,
     "must be an absolute, normalised path"},
    {"path with ..", HEAD TPL "      - {path: /etc/../x, secret: s, format: pem}\n", 6,
     "must be an absolute, normalised path"},
    {"path with .", HEAD TPL "      - {path: /etc/./x, secret: s, format: pem}\n", 6,
     "must be an absolute, normalised path"},
    {"path with //", HEAD TPL "      - {path: /etc//x, secret: s, format: pem}\n", 6,
     "must be an absolute, normalised path"},
    {"path with trailing /", HEAD TPL "      - {path: /etc/x/, secret: s, format: pem}\n", 6,
     "must be an absolute"},
    {"duplicate path",
     HEAD TPL "      - {path: /etc/x, secret: s, format: pem}\n      - {path: /etc/x, ca_bundle: true}\n", 7,
     "path /etc/x is listed twice (first on line 6)"},
    {"unknown format", HEAD TPL "      - {path: /etc/x, secret: s, format: der}\n", 6,
     "unknown value 'der' (expected pem-bundle, pem, public-pem-bundle, jwks or raw)"},
    {"secret without format", HEAD TPL "      - {path: /etc/x, secret: s}\n", 6, "'secret' needs 'format'"},
    {"neither secret nor ca_bundle", HEAD TPL "      - {path: /etc/x, mode: \"0600\"}\n", 6,
     "give either 'secret'"},
    {"both secret and ca_bundle",
     HEAD TPL "      - {path: /etc/x, secret: s, format: pem, ca_bundle: true}\n", 6, "give either 'secret'"},
    {"format with ca_bundle", HEAD TPL "      - {path: /etc/x, ca_bundle: true, format: pem}\n", 6,
     "'format' is not valid with 'ca_bundle'"},
    {"unquoted mode", HEAD TPL "      - {path: /etc/x, ca_bundle: true, mode: 0600}\n", 6, "quote the mode"},
    {"mode 0800", HEAD TPL "      - {path: /etc/x, ca_bundle: true, mode: \"0800\"}\n", 6, "is not a mode"},
    {"mode 1777", HEAD TPL "      - {path: /etc/x, ca_bundle: true, mode: \"1777\"}\n", 6, "is not a mode"},
    {"mode 600", HEAD TPL "      - {path: /etc/x, ca_bundle: true, mode: \"600\"}\n", 6, "is not a mode"},
    {"bad secret name", HEAD TPL "      - {path: /etc/x, secret: ../s, format: pem}\n", 6,
     "must be a secret name"},
    {"bad owner", HEAD TPL "      - {path: /etc/x, ca_bundle: true, owner: \"ro ot\"}\n", 6,
     "must be a user name"},
    {"unknown file key", HEAD TPL "      - {path: /etc/x, ca_bundle: true, size: 3}\n", 6,
     "unknown key 'size'"},
};

static void test_server_templates(void **state)
{
    static const char text[] =
        HEAD "server:\n"
             "  listen: \"[::1]:9443\"\n"
             "  names: [secrets.example, 10.0.0.1]\n"
             "  agent_cert_ttl: 12h\n"
             "  max_connections: 10\n"
             "  threads: 8\n"
             "groups: {cp: control-plane, web: web}\n"
             "templates:\n"
             "  control-plane:\n"
             "    files:\n"
             "      - {path: /etc/kubernetes/pki/sa.key, secret: k8s-sa.key, format: pem-bundle,"
             " mode: \"0600\"}\n"
             "      - {path: /etc/nstance/ca.crt, ca_bundle: true, mode: \"0644\", owner: kube,"
             " group: kube}\n"
             "  web:\n"
             "    files:\n"
             "      - {path: /etc/web/a.jwks, secret: tenants/acme/web.key, format: jwks}\n"
             "      - {path: /etc/web/a.pub, secret: w, format: public-pem-bundle}\n"
             "      - {path: /etc/web/a.raw, secret: w, format: raw, mode: \"0000\"}\n"
             "      - {path: /etc/web/a.pem, secret: w, format: pem, mode: \"0777\"}\n";
    ns_config *cfg = parse_ok(text, "/etc/nstance");
    const ns_template *t;

    assert_string_equal(cfg->server.listen, "[::1]:9443");
    assert_int_equal(cfg->server.names.n, 2);
    assert_string_equal(cfg->server.names.v[1], "10.0.0.1");
    assert_int_equal(cfg->server.agent_cert_ttl, 12 * 3600);
    assert_int_equal(cfg->server.operator_cert_ttl, 8 * 3600);
    assert_int_equal(cfg->server.max_connections, 10);
    assert_int_equal(cfg->server.header_timeout, 10);
    assert_int_equal(cfg->server.idle_timeout, 60);
    assert_int_equal(cfg->server.cache_check, 5);
    assert_int_equal(cfg->server.threads, 8);
    assert_int_equal(cfg->server.renew_min_interval, 60);
    assert_int_equal(cfg->server.renew_grace, 600);
    assert_int_equal(cfg->server.register_burst, 20);
    assert_int_equal(cfg->server.register_per_minute, 60);
    assert_int_equal(cfg->n_groups, 2);
    assert_int_equal(cfg->n_templates, 2);
    t = ns_config_template_for(cfg, "cp");
    assert_non_null(t);
    assert_string_equal(t->name, "control-plane");
    assert_int_equal(t->n, 2);
    assert_string_equal(t->files[0].path, "/etc/kubernetes/pki/sa.key");
    assert_string_equal(t->files[0].secret, "k8s-sa.key");
    assert_string_equal(t->files[0].format, "pem-bundle");
    assert_string_equal(t->files[0].mode, "0600");
    assert_string_equal(t->files[0].owner, "root");
    assert_string_equal(t->files[0].group, "root");
    assert_false(t->files[0].ca_bundle);
    assert_true(t->files[1].ca_bundle);
    assert_null(t->files[1].secret);
    assert_null(t->files[1].format);
    assert_string_equal(t->files[1].owner, "kube");
    t = ns_config_template_for(cfg, "web");
    assert_non_null(t);
    assert_int_equal(t->n, 4);
    assert_string_equal(t->files[0].mode, "0600"); /* default */
    assert_string_equal(t->files[0].secret, "tenants/acme/web.key");
    assert_string_equal(t->files[2].mode, "0000");
    assert_null(ns_config_template_for(cfg, "other"));
    ns_config_free(cfg);

    /* Defaults without a server section. */
    cfg = parse_ok(HEAD, NULL);
    assert_string_equal(cfg->server.listen, "127.0.0.1:8443");
    assert_int_equal(cfg->server.names.n, 2);
    assert_string_equal(cfg->server.names.v[0], "localhost");
    assert_string_equal(cfg->server.names.v[1], "127.0.0.1");
    assert_int_equal(cfg->server.agent_cert_ttl, 24 * 3600);
    assert_int_equal(cfg->server.max_connections, 1024);
    assert_int_equal(cfg->server.threads, 4);
    assert_int_equal(cfg->server.renew_min_interval, 60);
    assert_int_equal(cfg->server.renew_grace, 600);
    assert_int_equal(cfg->n_templates, 0);
    ns_config_free(cfg);

    /* The rate limits: 0s turns the renewal limit and the hand-over off. */
    cfg = parse_ok(HEAD "server: {renew_min_interval: 0s, renew_grace: 0s, register_burst: 5,"
                        " register_per_minute: 1}\n",
                   NULL);
    assert_int_equal(cfg->server.renew_min_interval, 0);
    assert_int_equal(cfg->server.renew_grace, 0);
    assert_int_equal(cfg->server.register_burst, 5);
    assert_int_equal(cfg->server.register_per_minute, 1);
    ns_config_free(cfg);
    cfg = parse_ok(HEAD "server: {renew_min_interval: 5m}\n", NULL);
    assert_int_equal(cfg->server.renew_min_interval, 300);
    assert_int_equal(cfg->server.renew_grace, 600);
    ns_config_free(cfg);
}

static void test_errors(void **state)
{
    int failed = 0;

    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *bc = &bad_cases[i];
        ns_config sentinel, *cfg = &sentinel;
        char *log = NULL, prefix[64];
        int r = parse_logged(bc->text, "/etc/nstance", &cfg, &log);

        snprintf(prefix, sizeof(prefix), "error: t.yaml:%d: ", bc->line);
        if (r != NS_E_CONFIG || strstr(log, prefix) == NULL || strstr(log, bc->needle) == NULL ||
            count_lines(log) != 1 || cfg != &sentinel) {
            print_error("case '%s': r=%d, want line %d, log: %s", bc->name, r, bc->line, log);
            failed++;
        }
        free(log);
    }
    assert_int_equal(failed, 0);
}

/* Nesting and size limits answer NS_E_CONFIG, not a crash. */
static void test_limits(void **state)
{
    ns_config *cfg = NULL;
    char *text, *log = NULL;
    size_t n = 200, big = 1024 * 1024 + 1;
    int r;

    text = malloc(2 * n + 32);
    assert_non_null(text);
    strcpy(text, "cluster_id: ");
    for (size_t i = 0; i < n; i++)
        strcat(text, "[");
    for (size_t i = 0; i < n; i++)
        strcat(text, "]");
    strcat(text, "\n");
    r = parse_logged(text, NULL, &cfg, &log);
    assert_int_equal(r, NS_E_CONFIG);
    assert_non_null(strstr(log, "t.yaml:1: nesting deeper"));
    assert_null(cfg);
    free(log);
    free(text);

    text = malloc(big + 1);
    assert_non_null(text);
    memset(text, '#', big);
    text[big] = '\0';
    r = parse_logged(text, NULL, &cfg, &log);
    assert_int_equal(r, NS_E_CONFIG);
    assert_non_null(strstr(log, "larger than"));
    assert_int_equal(count_lines(log), 1);
    free(log);
    free(text);

    assert_int_equal(ns_config_parse(NULL, 0, NULL, NULL, &cfg), NS_E_CONFIG); /* empty */
    assert_int_equal(ns_config_parse(NULL, 1, NULL, NULL, &cfg), NS_E_INVAL);
    assert_int_equal(ns_config_parse(HEAD, strlen(HEAD), NULL, NULL, NULL), NS_E_INVAL);
    assert_int_equal(ns_config_parse(HEAD, strlen(HEAD), NULL, NULL, &cfg), 0);
    assert_string_equal(cfg->origin, "<string>");
    ns_config_free(cfg);
}

/* The uri may carry pin-value: whatever goes wrong around it, the log never shows it. */
static void test_uri_never_logged(void **state)
{
    static const char *const texts[] = {
        /* another error in the same entry */
        HEAD
        "encryption_key:\n  source: pkcs11\n  uri: 'pkcs11:object=k?pin-value=SECRETPIN'\n  mechanism: des\n",
        /* the uri itself is wrong */
        HEAD
        "encryption_key:\n  source: pkcs11\n  uri: 'object=k?pin-value=SECRETPIN'\n  mechanism: aes-gcm\n",
        /* a key not valid for the source */
        HEAD "encryption_key: {source: file, path: /k, uri: 'pkcs11:pin-value=SECRETPIN'}\n",
        /* duplicated */
        HEAD "encryption_key:\n  source: pkcs11\n  uri: 'pkcs11:pin-value=SECRETPIN'\n  uri: "
             "'pkcs11:pin-value=SECRETPIN'\n",
        /* wrong type */
        HEAD "encryption_key:\n  source: pkcs11\n  uri: ['pkcs11:pin-value=SECRETPIN']\n",
        /* under a misspelt key */
        HEAD "encryption_key:\n  source: pkcs11\n  url: 'pkcs11:pin-value=SECRETPIN'\n",
        /* used as a key */
        HEAD "'pkcs11:object=k;pin-value=SECRETPIN': 1\n",
        /* as the mechanism by mistake */
        HEAD
        "encryption_key: {source: pkcs11, uri: 'pkcs11:object=k', mechanism: 'pkcs11:pin-value=SECRETPIN'}\n",
        /* a syntax error after it */
        HEAD
        "encryption_key:\n  source: pkcs11\n  uri: 'pkcs11:pin-value=SECRETPIN'\n  mechanism: [aes-gcm\n",
        /* a missing key */
        HEAD "encryption_key:\n  source: pkcs11\n  uri: 'pkcs11:pin-value=SECRETPIN'\n",
    };

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        ns_config *cfg = NULL;
        char *log = NULL;
        int r = parse_logged(texts[i], NULL, &cfg, &log);

        if (r != NS_E_CONFIG || strlen(log) == 0 || strstr(log, "SECRETPIN") != NULL)
            fail_msg("text %zu: r=%d, log: %s", i, r, log);
        assert_null(cfg);
        free(log);
    }
}

/* ---- s3 ---- */

static void test_s3(void **state)
{
    ns_config *cfg;
    const ns_storage_config *sc;

    cfg = parse_ok("cluster_id: demo\nstorage: {backend: s3, bucket: my-bucket}\n", "/etc/nstance");
    sc = &cfg->storage;
    assert_string_equal(sc->backend, "s3");
    assert_string_equal(sc->bucket, "my-bucket");
    assert_null(sc->prefix);
    assert_string_equal(sc->region, "us-east-1"); /* default */
    assert_null(sc->endpoint);
    assert_false(sc->path_style);
    assert_null(sc->ca_file);
    assert_int_equal(sc->connect_timeout_ms, 5000);
    assert_int_equal(sc->timeout_ms, 30000);
    assert_int_equal(sc->retries, 3);
    assert_int_equal(sc->retry_base_ms, 100);
    assert_false(sc->has_credentials);
    assert_true(sc->creds.imds);
    ns_config_free(cfg);

    cfg = parse_ok("cluster_id: demo\n"
                   "storage:\n"
                   "  backend: s3\n"
                   "  bucket: b.example-1\n"
                   "  prefix: nstance/prod\n"
                   "  region: eu-west-1\n"
                   "  endpoint: http://127.0.0.1:9000/\n"
                   "  path_style: true\n"
                   "  ca_file: certs/ca.pem\n"
                   "  timeouts: {connect_ms: 1500, request_ms: 2500}\n"
                   "  retries:\n"
                   "    max: 0\n"
                   "    base_delay_ms: 0\n"
                   "  credentials:\n"
                   "    access_key_id: AKIAIOSFODNN7EXAMPLE\n"
                   "    secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
                   "    session_token: tok+en/=\n",
                   "/etc/nstance");
    sc = &cfg->storage;
    assert_string_equal(sc->prefix, "nstance/prod/"); /* a folder: '/' appended */
    assert_string_equal(sc->region, "eu-west-1");
    assert_string_equal(sc->endpoint, "http://127.0.0.1:9000/");
    assert_true(sc->path_style);
    assert_string_equal(sc->ca_file, "/etc/nstance/certs/ca.pem");
    assert_int_equal(sc->connect_timeout_ms, 1500);
    assert_int_equal(sc->timeout_ms, 2500);
    assert_int_equal(sc->retries, 0);
    assert_int_equal(sc->retry_base_ms, 0);
    assert_true(sc->has_credentials);
    assert_string_equal(sc->creds.access_key_id, "AKIAIOSFODNN7EXAMPLE");
    assert_string_equal(sc->creds.secret_access_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    assert_string_equal(sc->creds.session_token, "tok+en/=");
    ns_config_free(cfg);

    cfg = parse_ok(
        "cluster_id: demo\n"
        "storage:\n"
        "  backend: s3\n"
        "  bucket: abc\n"
        "  prefix: a/\n"
        "  path_style: false\n"
        "  credentials: {profile: ops, credentials_file: aws/creds, imds_endpoint: 'http://[::1]:8080', "
        "imds: false}\n",
        "/base");
    sc = &cfg->storage;
    assert_string_equal(sc->prefix, "a/");
    assert_false(sc->path_style);
    assert_true(sc->has_credentials);
    assert_null(sc->creds.access_key_id);
    assert_string_equal(sc->creds.profile, "ops");
    assert_string_equal(sc->creds.credentials_file, "/base/aws/creds");
    assert_string_equal(sc->creds.imds_endpoint, "http://[::1]:8080");
    assert_false(sc->creds.imds);
    ns_config_free(cfg);
}

/* The secret access key and session token never appear in a message, whatever is wrong around them. */
static void test_s3_secrets_never_logged(void **state)
{
    static const char *const texts[] = {
        "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials:\n    access_key_id: "
        "AKIAIOSFODNN7EXAMPLE\n    secret_access_key: 'SECRETKEY with blank'\n",
        "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials:\n    access_key_id: x/y\n"
        "    secret_access_key: SECRETKEY\n",
        "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials:\n    session_token: "
        "SECRETKEY\n",
        "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials:\n    access_key_id: "
        "AKIAIOSFODNN7EXAMPLE\n    secret_access_key: SECRETKEY\n    session_token: \"SECRETKEY\\x01\"\n",
        "cluster_id: demo\nstorage:\n  backend: s3\n  bucket: abc\n  credentials:\n    access_key_id: "
        "AKIAIOSFODNN7EXAMPLE\n    secret_access_key: SECRETKEY\n    profile: x\n",
    };

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        ns_config *cfg = NULL;
        char *log = NULL;
        int r = parse_logged(texts[i], NULL, &cfg, &log);

        if (r != NS_E_CONFIG || strlen(log) == 0 || strstr(log, "SECRETKEY") != NULL)
            fail_msg("text %zu: r=%d, log: %s", i, r, log);
        assert_null(cfg);
        free(log);
    }
}

/* ---- files ---- */

static char tmpdir[] = "/tmp/test-config-XXXXXX";

static void write_file(const char *path, const char *text, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void test_load(void **state)
{
    const char *text = "cluster_id: demo\n"
                       "storage: {backend: file, path: bucket}\n"
                       "old_encryption_keys: [{source: file, path: keys/k1}]\n";
    char path[PATH_MAX], want[PATH_MAX + 32], *cwd;
    ns_config sentinel, *cfg = NULL;
    char *big;
    size_t cap = 1024 * 1024;

    snprintf(path, sizeof(path), "%s/secrets.yaml", tmpdir);
    write_file(path, text, strlen(text));
    assert_int_equal(ns_config_load(path, &cfg), 0);
    assert_string_equal(cfg->origin, path);
    snprintf(want, sizeof(want), "%s/bucket", tmpdir);
    assert_string_equal(cfg->storage.path, want);
    snprintf(want, sizeof(want), "%s/keys/k1", tmpdir);
    assert_string_equal(cfg->old[0].path, want);
    ns_config_free(cfg);

    /* a relative config path: paths resolve against its directory under the cwd */
    cwd = getcwd(NULL, 0);
    assert_non_null(cwd);
    assert_int_equal(chdir("/tmp"), 0);
    assert_int_equal(ns_config_load(path + strlen("/tmp/"), &cfg), 0);
    snprintf(want, sizeof(want), "%s/bucket", tmpdir);
    assert_string_equal(cfg->storage.path, want);
    ns_config_free(cfg);
    assert_int_equal(chdir(tmpdir), 0);
    assert_int_equal(ns_config_load("secrets.yaml", &cfg), 0);
    snprintf(want, sizeof(want), "%s/bucket", tmpdir);
    assert_string_equal(cfg->storage.path, want);
    ns_config_free(cfg);
    assert_int_equal(chdir(cwd), 0);
    free(cwd);

    /* missing */
    snprintf(path, sizeof(path), "%s/nope.yaml", tmpdir);
    cfg = &sentinel;
    assert_int_equal(ns_config_load(path, &cfg), NS_E_NOT_FOUND);
    assert_ptr_equal(cfg, &sentinel);
    snprintf(path, sizeof(path), "%s/nodir/secrets.yaml", tmpdir);
    assert_int_equal(ns_config_load(path, &cfg), NS_E_NOT_FOUND);

    /* a directory */
    assert_int_equal(ns_config_load(tmpdir, &cfg), NS_E_CONFIG);

    /* exactly 1 MiB parses; one byte more is refused */
    big = malloc(cap + 1);
    assert_non_null(big);
    memset(big, '#', cap + 1);
    memcpy(big, text, strlen(text));
    big[cap - 1] = '\n';
    snprintf(path, sizeof(path), "%s/big.yaml", tmpdir);
    write_file(path, big, cap);
    cfg = NULL;
    assert_int_equal(ns_config_load(path, &cfg), 0);
    ns_config_free(cfg);
    big[cap] = '\n';
    write_file(path, big, cap + 1);
    cfg = &sentinel;
    assert_int_equal(ns_config_load(path, &cfg), NS_E_CONFIG);
    assert_ptr_equal(cfg, &sentinel);
    unlink(path);
    free(big);

    /* a config error in a file names the file */
    {
        const char *bad = "cluster_id: demo\nstorage: {backend: nfs, path: /b}\n";
        char tmpl[] = "/tmp/test-config-log-XXXXXX", buf[512] = {0}, needle[PATH_MAX + 64];
        int fd = mkstemp(tmpl), saved;
        assert_true(fd >= 0);
        unlink(tmpl);
        snprintf(path, sizeof(path), "%s/bad.yaml", tmpdir);
        write_file(path, bad, strlen(bad));
        fflush(stderr);
        saved = dup(2);
        assert_true(dup2(fd, 2) == 2);
        assert_int_equal(ns_config_load(path, &cfg), NS_E_CONFIG);
        fflush(stderr);
        assert_true(dup2(saved, 2) == 2);
        close(saved);
        assert_true(pread(fd, buf, sizeof(buf) - 1, 0) > 0);
        close(fd);
        snprintf(needle, sizeof(needle), "%s:2: storage.backend: unknown backend 'nfs'", path);
        assert_non_null(strstr(buf, needle));
        unlink(path);
    }

    snprintf(path, sizeof(path), "%s/secrets.yaml", tmpdir);
    unlink(path);
    assert_int_equal(ns_config_load(NULL, &cfg), NS_E_INVAL);
}

static void test_default_path(void **state)
{
    assert_int_equal(unsetenv("NSTANCE_SECRETS_CONFIG"), 0);
    assert_string_equal(ns_config_default_path(NULL), "/etc/nstance/secrets.yaml");
    assert_string_equal(ns_config_default_path("/x/y.yaml"), "/x/y.yaml");

    assert_int_equal(setenv("NSTANCE_SECRETS_CONFIG", "/env/secrets.yaml", 1), 0);
    assert_string_equal(ns_config_default_path(NULL), "/env/secrets.yaml");
    assert_string_equal(ns_config_default_path("/x/y.yaml"), "/x/y.yaml");

    assert_int_equal(setenv("NSTANCE_SECRETS_CONFIG", "", 1), 0);
    assert_string_equal(ns_config_default_path(NULL), "/etc/nstance/secrets.yaml");
    assert_int_equal(unsetenv("NSTANCE_SECRETS_CONFIG"), 0);
}

static void test_free_null(void **state)
{
    ns_config_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example),
        cmocka_unit_test(test_minimal_and_options),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_uri_never_logged),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_default_path),
        cmocka_unit_test(test_free_null),
        cmocka_unit_test(test_s3),
        cmocka_unit_test(test_s3_secrets_never_logged),
        cmocka_unit_test(test_remote_sources),
        cmocka_unit_test(test_url_rule),
        cmocka_unit_test(test_server_templates),
        cmocka_unit_test(test_role_id_never_logged),
    };
    int r;

    ns_log_set_level(NS_LOG_WARN);
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    r = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(tmpdir);
    return r;
}
