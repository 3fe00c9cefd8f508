#include "ns-build.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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

/* Folder names as object names have them, each followed by '/' except maybe the last. */
static bool valid_prefix(const char *s)
{
    size_t n = strlen(s), seg = 0;

    if (n == 0 || n > 256 || s[0] == '/')
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '/') {
            if (seg == 0)
                return false;
            seg = 0;
            continue;
        }
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return false;
        if (seg == 0 && ch == '.')
            return false;
        seg++;
    }
    return true;
}

#define V_STORE_FILE (1u << 0)
#define V_STORE_S3   (1u << 1)

/* AWS key ids are 16-128 of [A-Z0-9]; S3-compatible stores (MinIO, Ceph, s3rver) are looser. Refused:
 * what would break the Authorization header ("Credential=ID/date/...,") or a log line. */
static bool valid_access_key_id(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e || s[i] == '/' || s[i] == ',' ||
            s[i] == '=')
            return false;
    return true;
}

static bool printable_upto(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n < 1 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static bool valid_secret(const char *s)
{
    return printable_upto(s, 1024);
}

static bool valid_secret_token(const char *s)
{
    return printable_upto(s, 4096);
}

static bool valid_profile(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

#define CF(k, m, va, ru, se)                                                                                 \
    {                                                                                                        \
        .key = k, .type = NS_CFG_STR, .off = offsetof(ns_s3_creds_config, m), .allowed = 1u, .valid = va,    \
        .rule = ru, .secret = se                                                                             \
    }
static const ns_cfg_field s3_creds_fields[] = {
    CF("access_key_id", access_key_id, valid_access_key_id,
       "must be an access key id (1-128 printable characters, no blank, '/', ',' or '=')", false),
    CF("secret_access_key", secret_access_key, valid_secret, "must be 1-1024 printable characters", true),
    CF("session_token", session_token, valid_secret_token, "must be 1-4096 printable characters", true),
    CF("profile", profile, valid_profile, "must be a profile name ([A-Za-z0-9._-], at most 64 characters)",
       false),
    {.key = "credentials_file",
     .type = NS_CFG_PATH,
     .off = offsetof(ns_s3_creds_config, credentials_file),
     .allowed = 1u},
    CF("imds_endpoint", imds_endpoint, ns_cfg_valid_endpoint, NS_CFG_RULE_ENDPOINT, false),
    {.key = "imds", .type = NS_CFG_BOOL, .off = offsetof(ns_s3_creds_config, imds), .allowed = 1u},
};
static const ns_cfg_spec s3_creds_spec = NS_CFG_SPEC(NULL, NULL, s3_creds_fields);

#define UF(k, m, lo, hi)                                                                                     \
    {                                                                                                        \
        .key = k, .type = NS_CFG_UINT, .off = offsetof(ns_storage_config, m), .allowed = 1u, .min = lo,      \
        .max = hi                                                                                            \
    }
/* storage.timeouts and storage.retries: fields of ns_storage_config itself. */
static const ns_cfg_field s3_timeouts_fields[] = {
    UF("connect_ms", connect_timeout_ms, 1, 600000),
    UF("request_ms", timeout_ms, 1, 3600000),
};
static const ns_cfg_spec s3_timeouts_spec = NS_CFG_SPEC(NULL, NULL, s3_timeouts_fields);
static const ns_cfg_field s3_retries_fields[] = {
    UF("max", retries, 0, 10),
    UF("base_delay_ms", retry_base_ms, 0, 10000),
};
static const ns_cfg_spec s3_retries_spec = NS_CFG_SPEC(NULL, NULL, s3_retries_fields);

#define SF(k, t, m, va, ru)                                                                                  \
    {                                                                                                        \
        .key = k, .type = t, .off = offsetof(ns_storage_config, m), .allowed = V_STORE_S3, .valid = va,      \
        .rule = ru                                                                                           \
    }
static const char *const storage_backends[] = {"file", "s3", NULL};
static const ns_cfg_field storage_fields[] = {
    {.key = "path",
     .type = NS_CFG_PATH,
     .off = offsetof(ns_storage_config, path),
     .allowed = V_STORE_FILE,
     .required = V_STORE_FILE},
    {.key = "bucket",
     .type = NS_CFG_STR,
     .off = offsetof(ns_storage_config, bucket),
     .allowed = V_STORE_S3,
     .required = V_STORE_S3,
     .valid = valid_bucket,
     .rule =
         "must be an S3 bucket name (3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a "
         "letter or digit)"},
    SF("prefix", NS_CFG_STR, prefix, valid_prefix,
       "must be folder names ([A-Za-z0-9._-], not starting with '.') separated by single '/', not starting "
       "with '/'"),
    SF("region", NS_CFG_STR, region, ns_cfg_valid_region,
       "must be a region name (a-z, 0-9 and '-', at most 32 characters)"),
    SF("endpoint", NS_CFG_STR, endpoint, ns_cfg_valid_endpoint, NS_CFG_RULE_ENDPOINT),
    SF("path_style", NS_CFG_BOOL, path_style, NULL, NULL),
    SF("ca_file", NS_CFG_PATH, ca_file, NULL, NULL),
    {.key = "credentials",
     .type = NS_CFG_MAPPING,
     .off = offsetof(ns_storage_config, creds),
     .allowed = V_STORE_S3,
     .sub = &s3_creds_spec},
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

int ns_store_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, void *slot)
{
    ns_storage_config *sc = slot;
    const ns_cfg_node *creds;
    int lines[NS_CFG_MAX_FIELDS];
    size_t var = 0;
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_parse_map(c, v, "storage", &storage_spec, sc, &var, lines)) != 0)
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
