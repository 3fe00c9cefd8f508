/* libFuzzer target for the config parser: ns_config_parse on arbitrary bytes (origin "fuzz", base folder
 * "/base"). The seeds in tests/fuzz/seeds/config/ are small configs, valid and not, that between them use
 * every section, every key source and every key. Besides "no crash, no leak", the target checks what the
 * API promises and traps when one breaks:
 *   - a failure is NS_E_CONFIG and leaves *out untouched (NS_E_INVAL is for NULL arguments only, checked
 *     once on the first call);
 *   - a success gives origin "fuzz", a valid cluster_id, storage backend "file" with an absolute path,
 *     token_sessions in 1..64, and KEK entries that carry exactly the fields of their source: pkcs11 a
 *     "pkcs11:" URI, a known mechanism and an oaep_hash exactly when the mechanism is rsa-oaep; file an
 *     absolute path; env a variable name; the external sources their required keys, valid URLs (defaults
 *     filled in) and exactly one way to authenticate.
 * Errors are logged at error level, the lowest there is, so the target cannot silence them: run libFuzzer
 * with -close_fd_mask=2 to drop them. */
#include "ns-build.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "settings/settings.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            __builtin_trap();                                                                                \
    } while (0)

static bool is_one_of(const char *s, const char *const *set)
{
    for (size_t i = 0; set[i] != NULL; i++)
        if (strcmp(s, set[i]) == 0)
            return true;
    return false;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_' ||
              (i > 0 && ch >= '0' && ch <= '9')))
            return false;
    }
    return true;
}

static bool valid_cluster_id(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool alnum = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '.' && ch != '_' && ch != '-')))
            return false;
    }
    return true;
}

static bool absolute(const char *p)
{
    return p != NULL && p[0] == '/';
}

static bool url(const char *s)
{
    return s != NULL && ns_config_url_ok(s);
}

static void check_kek(const ns_kek_config *k)
{
    static const char *const mechanisms[] = {"aes-gcm", "aes-kwp", "rsa-oaep", NULL};
    static const char *const hashes[] = {"auto", "sha256", "sha1", NULL};

    CHECK(k->line >= 1);
    if (k->source >= NS_KEK_SRC_VAULT)
        CHECK(k->timeout_s >= 1 && k->timeout_s <= 300 && k->retries <= 10);
    else
        CHECK(k->timeout_s == 0 && k->retries == 0);
    switch (k->source) {
    case NS_KEK_SRC_PKCS11:
        CHECK(k->uri != NULL && strncmp(k->uri, "pkcs11:", 7) == 0);
        CHECK(k->mechanism != NULL && is_one_of(k->mechanism, mechanisms));
        if (strcmp(k->mechanism, "rsa-oaep") == 0)
            CHECK(k->oaep_hash != NULL && is_one_of(k->oaep_hash, hashes));
        else
            CHECK(k->oaep_hash == NULL);
        CHECK(k->pin_env == NULL || valid_name(k->pin_env));
        CHECK(k->path == NULL && k->name == NULL);
        break;
    case NS_KEK_SRC_FILE:
        CHECK(absolute(k->path));
        CHECK(k->uri == NULL && k->mechanism == NULL && k->oaep_hash == NULL && k->pin_env == NULL &&
              k->name == NULL);
        break;
    case NS_KEK_SRC_ENV:
        CHECK(k->name != NULL && valid_name(k->name));
        CHECK(k->uri == NULL && k->mechanism == NULL && k->oaep_hash == NULL && k->pin_env == NULL &&
              k->path == NULL);
        break;
    case NS_KEK_SRC_VAULT:
        CHECK(url(k->address) && k->mount != NULL && k->kv_path != NULL && k->field != NULL);
        /* exactly one way to authenticate */
        CHECK((k->token_env != NULL) + (k->token_file != NULL) + (k->approle.role_id != NULL) == 1);
        CHECK(k->token_env == NULL || valid_name(k->token_env));
        CHECK(k->token_file == NULL || absolute(k->token_file));
        CHECK(k->approle.role_id == NULL ||
              (absolute(k->approle.secret_id_file) && k->approle.mount != NULL));
        CHECK(k->path == NULL && k->uri == NULL && k->region == NULL);
        break;
    case NS_KEK_SRC_AWS_SM:
    case NS_KEK_SRC_AWS_SSM:
        CHECK(k->region != NULL && url(k->endpoint));
        CHECK(k->source == NS_KEK_SRC_AWS_SM
                  ? k->secret_id != NULL && k->name == NULL
                  : k->name != NULL && k->secret_id == NULL && k->version_stage == NULL);
        CHECK(k->address == NULL && k->path == NULL && k->uri == NULL);
        break;
    case NS_KEK_SRC_GCP_SM:
        CHECK(k->project != NULL && k->secret != NULL && k->version != NULL && url(k->endpoint));
        CHECK((k->credentials_file != NULL) != (k->metadata_endpoint != NULL));
        CHECK(k->credentials_file == NULL || absolute(k->credentials_file));
        CHECK(k->metadata_endpoint == NULL || url(k->metadata_endpoint));
        break;
    case NS_KEK_SRC_AZURE_KV:
        CHECK(url(k->vault_url) && k->name != NULL);
        if (k->client_id != NULL)
            CHECK(k->tenant_id != NULL && absolute(k->client_secret_file) && url(k->authority) &&
                  k->metadata_endpoint == NULL);
        else
            CHECK(k->tenant_id == NULL && k->client_secret_file == NULL && k->authority == NULL &&
                  url(k->metadata_endpoint));
        break;
    default:
        CHECK(0);
    }
}

static void check_config(const ns_config *cfg)
{
    CHECK(cfg->origin != NULL && strcmp(cfg->origin, "fuzz") == 0);
    CHECK(cfg->cluster_id != NULL && valid_cluster_id(cfg->cluster_id));
    CHECK(cfg->storage.backend != NULL && strcmp(cfg->storage.backend, "file") == 0);
    CHECK(absolute(cfg->storage.path));
    CHECK(cfg->storage.line >= 1);
    if (cfg->has_primary) {
        check_kek(&cfg->primary);
    } else {
        const ns_kek_config *k = &cfg->primary;
        CHECK(k->source == 0 && k->uri == NULL && k->mechanism == NULL && k->oaep_hash == NULL &&
              k->pin_env == NULL && k->path == NULL && k->name == NULL);
    }
    CHECK((cfg->n_old == 0) == (cfg->old == NULL));
    for (size_t i = 0; i < cfg->n_old; i++)
        check_kek(&cfg->old[i]);
    CHECK(cfg->token_sessions >= 1 && cfg->token_sessions <= 64);
}

/* The NULL-argument contract, once per process. */
static void check_null_args(void)
{
    static ns_config untouched;
    ns_config *cfg = &untouched;

    CHECK(ns_config_parse(NULL, 1, "fuzz", "/base", &cfg) == NS_E_INVAL && cfg == &untouched);
    CHECK(ns_config_parse("cluster_id: a", 13, "fuzz", "/base", NULL) == NS_E_INVAL);
    /* NULL text of length 0 is the empty string: an empty document, a config error. */
    CHECK(ns_config_parse(NULL, 0, "fuzz", "/base", &cfg) == NS_E_CONFIG && cfg == &untouched);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool initialised;
    static ns_config untouched;
    ns_config *cfg = &untouched;
    int r;

    if (!initialised) {
        ns_log_set_level(NS_LOG_ERROR);
        check_null_args();
        initialised = true;
    }
    r = ns_config_parse((const char *)data, size, "fuzz", "/base", &cfg);
    if (r != 0) {
        CHECK(r == NS_E_CONFIG);
        CHECK(cfg == &untouched);
        return 0;
    }
    CHECK(cfg != NULL && cfg != &untouched);
    check_config(cfg);
    ns_config_free(cfg);
    return 0;
}
