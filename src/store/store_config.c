#include "ns-build.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "store/store_config.h"

/* S3 bucket names: 3-63 of [a-z0-9.-], first and last a letter or digit, no "..". */
static bool valid_bucket(const char *s)
{
    size_t n = strlen(s);

    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && ((ch != '.' && ch != '-') || i == 0 || i == n - 1))
            return false;
        if (ch == '.' && s[i + 1] == '.')
            return false;
    }
    return true;
}

/* Folder names as object names have them (store.h: at most 128 bytes each), each followed by '/' except
 * maybe the last; at most 256 bytes. */
static bool valid_prefix(const char *s)
{
    char name[257];
    size_t n = strlen(s);

    if (n == 0 || n > 256)
        return false;
    memcpy(name, s, n + 1);
    if (name[n - 1] == '/')
        name[n - 1] = '\0';
    return ns_store_name_check(name) == 0;
}

#define V_STORE_FILE (1u << 0)
#define V_STORE_S3   (1u << 1)

/* AWS key ids are 16-128 of [A-Z0-9]; S3-compatible stores (MinIO, Ceph, s3rver) are looser. Refused:
 * what would break the Authorization header ("Credential=ID/date/...,") or a log line. */
static bool valid_access_key_id(const char *s)
{
    return ns_cfg_bytes(s, 1, 128, 0x21, 0x7e) && strcspn(s, "/,=") == strlen(s);
}

static bool valid_secret(const char *s)
{
    return ns_cfg_bytes(s, 1, 1024, 0x21, 0x7e);
}

static bool valid_secret_token(const char *s)
{
    return ns_cfg_bytes(s, 1, 4096, 0x21, 0x7e);
}

static bool valid_profile(const char *s)
{
    return ns_cfg_chars(s, 1, 64, NS_CFG_ALNUM "._-");
}

#define C(k, t, m, ...) NS_CFG_ROW(ns_s3_creds_config, k, t, m, __VA_ARGS__)
static const ns_cfg_field s3_creds_fields[] = {
    C("access_key_id", NS_CFG_STR, access_key_id, .valid = valid_access_key_id,
      .rule = "must be an access key id (1-128 printable characters, no blank, '/', ',' or '=')"),
    C("secret_access_key", NS_CFG_STR, secret_access_key, .valid = valid_secret,
      .rule = "must be 1-1024 printable characters", .secret = true),
    C("session_token", NS_CFG_STR, session_token, .valid = valid_secret_token,
      .rule = "must be 1-4096 printable characters", .secret = true),
    C("profile", NS_CFG_STR, profile, .valid = valid_profile,
      .rule = "must be a profile name ([A-Za-z0-9._-], at most 64 characters)"),
    C("credentials_file", NS_CFG_PATH, credentials_file),
    C("imds_endpoint", NS_CFG_STR, imds_endpoint, .valid = ns_cfg_valid_endpoint,
      .rule = NS_CFG_RULE_ENDPOINT),
    C("imds", NS_CFG_BOOL, imds),
};
static const ns_cfg_spec s3_creds_spec = NS_CFG_SPEC(NULL, NULL, s3_creds_fields);

/* storage.timeouts and storage.retries: fields of ns_storage_config itself. */
#define U(k, m, lo, hi) NS_CFG_ROW(ns_storage_config, k, NS_CFG_UINT, m, .min = lo, .max = hi)
static const ns_cfg_field s3_timeouts_fields[] = {
    U("connect_ms", connect_timeout_ms, 1, 600000),
    U("request_ms", timeout_ms, 1, 3600000),
};
static const ns_cfg_spec s3_timeouts_spec = NS_CFG_SPEC(NULL, NULL, s3_timeouts_fields);
static const ns_cfg_field s3_retries_fields[] = {
    U("max", retries, 0, 10),
    U("base_delay_ms", retry_base_ms, 0, 10000),
};
static const ns_cfg_spec s3_retries_spec = NS_CFG_SPEC(NULL, NULL, s3_retries_fields);

#define S(k, t, m, ...) NS_CFG_VROW(ns_storage_config, k, t, m, V_STORE_S3, 0, __VA_ARGS__)
static const char *const storage_backends[] = {"file", "s3", NULL};
static const ns_cfg_field storage_fields[] = {
    NS_CFG_VROW(ns_storage_config, "path", NS_CFG_PATH, path, V_STORE_FILE, V_STORE_FILE),
    NS_CFG_VROW(ns_storage_config, "bucket", NS_CFG_STR, bucket, V_STORE_S3, V_STORE_S3,
                .valid = valid_bucket,
                .rule = "must be an S3 bucket name (3-63 characters of a-z, 0-9, '.' and '-', starting and "
                        "ending with a letter or digit)"),
    S("prefix", NS_CFG_STR, prefix, .valid = valid_prefix,
      .rule = "must be folder names ([A-Za-z0-9._-], not starting with '.') separated by single '/', not "
              "starting with '/'"),
    S("region", NS_CFG_STR, region, .valid = ns_cfg_valid_region,
      .rule = "must be a region name (a-z, 0-9 and '-', at most 32 characters)"),
    S("endpoint", NS_CFG_STR, endpoint, .valid = ns_cfg_valid_endpoint, .rule = NS_CFG_RULE_ENDPOINT),
    S("path_style", NS_CFG_BOOL, path_style),
    S("ca_file", NS_CFG_PATH, ca_file),
    S("credentials", NS_CFG_MAPPING, creds, .sub = &s3_creds_spec),
    {.key = "timeouts", .type = NS_CFG_MAPPING, .allowed = V_STORE_S3, .sub = &s3_timeouts_spec},
    {.key = "retries", .type = NS_CFG_MAPPING, .allowed = V_STORE_S3, .sub = &s3_retries_spec},
};
static const ns_cfg_spec storage_spec = NS_CFG_SPEC("backend", storage_backends, storage_fields);

void ns_store_config_init(ns_storage_config *sc)
{
    sc->connect_timeout_ms = 5000;
    sc->timeout_ms = 30000;
    sc->retries = 3;
    sc->retry_base_ms = 100;
    sc->creds.imds = true;
}

/* What the table cannot say: keys of storage.credentials that go together or exclude each other. */
static int check_creds(ns_cfg_ctx *c, const ns_cfg_node *v, const ns_s3_creds_config *cr)
{
    if ((cr->access_key_id == NULL) != (cr->secret_access_key == NULL))
        return ns_cfg_fail(c, v->line,
                           "storage.credentials: access_key_id and secret_access_key go together");
    if (cr->session_token != NULL && cr->access_key_id == NULL)
        return ns_cfg_fail(c, v->line,
                           "storage.credentials: session_token needs access_key_id and secret_access_key");
    if (cr->access_key_id != NULL && (cr->profile != NULL || cr->credentials_file != NULL))
        return ns_cfg_fail(c, v->line,
                           "storage.credentials: explicit keys cannot be combined with profile or "
                           "credentials_file");
    return 0;
}

int ns_store_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *slot)
{
    ns_storage_config *sc = slot;
    const ns_cfg_node *creds;
    int lines[NS_CFG_MAX_FIELDS];
    size_t var = 0;
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_parse_map(c, v, what, &storage_spec, sc, &var, lines)) != 0)
        return r;
    if ((sc->backend = strdup(storage_backends[var])) == NULL)
        return NS_E_NOMEM;
    sc->line = v->line;
    if ((creds = ns_cfg_map_get(v, "credentials")) != NULL) {
        sc->has_credentials = true;
        if ((r = check_creds(c, creds, &sc->creds)) != 0)
            return r;
    }
    if (var == 1) { /* s3 */
        /* A prefix is a folder: "a/b" and "a/b/" mean the same. */
        if (sc->prefix != NULL && sc->prefix[strlen(sc->prefix) - 1] != '/') {
            size_t n = strlen(sc->prefix);
            char *p = realloc(sc->prefix, n + 2);
            if (p == NULL)
                return NS_E_NOMEM;
            p[n] = '/';
            p[n + 1] = '\0';
            sc->prefix = p;
        }
        return ns_cfg_set_default(&sc->region, "us-east-1");
    }
    return 0;
}

void ns_store_config_clear(ns_storage_config *sc)
{
    ns_cfg_clear(&storage_spec, sc);
    free(sc->backend);
    sc->backend = NULL;
}
