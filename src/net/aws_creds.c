#include "ns-build.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/fdio.h"
#include "common/json.h"
#include "common/log.h"
#include "common/secmem.h"
#include "net/aws_creds.h"

#define CREDS_FILE_MAX  (64u * 1024u) /* a shared credentials file larger than this is refused */
#define IMDS_TOKEN_TTL  "21600"
#define IMDS_BODY_MAX   8192u
#define IMDS_DEFAULT    "http://169.254.169.254"
#define KEY_FIELD_MAX   4096u /* any single key, secret or token */
#define SOURCE_DESC_MAX 4352u

/* ---- credentials ---- */

int ns_aws_creds_new(const char *access_key_id, const char *secret_access_key, const char *session_token,
                     time_t expiration, ns_aws_creds **out)
{
    ns_aws_creds *c = NULL;
    int r = NS_E_INTERNAL;

    if (out == NULL || access_key_id == NULL || secret_access_key == NULL || access_key_id[0] == '\0' ||
        secret_access_key[0] == '\0' || strlen(access_key_id) > KEY_FIELD_MAX ||
        strlen(secret_access_key) > KEY_FIELD_MAX ||
        (session_token != NULL && (session_token[0] == '\0' || strlen(session_token) > KEY_FIELD_MAX))) {
        r = NS_E_INVAL;
        goto out;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL || (c->access_key_id = strdup(access_key_id)) == NULL ||
        (c->secret_access_key = ns_secmem_strndup(secret_access_key, strlen(secret_access_key))) == NULL ||
        (session_token != NULL &&
         (c->session_token = ns_secmem_strndup(session_token, strlen(session_token))) == NULL)) {
        r = NS_E_NOMEM;
        goto out;
    }
    c->expiration = expiration;
    *out = c;
    c = NULL;
    r = 0;
out:
    ns_aws_creds_free(c);
    return r;
}

int ns_aws_creds_dup(const ns_aws_creds *c, ns_aws_creds **out)
{
    if (c == NULL)
        return NS_E_INVAL;
    return ns_aws_creds_new(c->access_key_id, c->secret_access_key, c->session_token, c->expiration, out);
}

void ns_aws_creds_free(ns_aws_creds *c)
{
    if (c == NULL)
        return;
    free(c->access_key_id);
    ns_secmem_strfree(c->secret_access_key);
    ns_secmem_strfree(c->session_token);
    free(c);
}

/* ---- provider ---- */

enum source { SRC_NONE = 0, SRC_STATIC, SRC_IMDS };

struct ns_aws_creds_provider {
    pthread_mutex_t lock;
    /* options (copies) */
    char *access_key_id, *secret_access_key, *session_token; /* the two secrets in the secure heap */
    char *profile, *credentials_file, *imds_endpoint;
    bool imds_disabled;
    ns_http_opts imds_http;
    /* state */
    enum source source;
    ns_aws_creds *creds;
    char desc[SOURCE_DESC_MAX];
    char *imds_role;
    ns_http_client *imds;
};

static int dup_opt(const char *s, char **out)
{
    if (s == NULL) {
        *out = NULL;
        return 0;
    }
    return (*out = strdup(s)) == NULL ? NS_E_NOMEM : 0;
}

int ns_aws_creds_provider_new(const ns_aws_creds_opts *opts, ns_aws_creds_provider **out)
{
    ns_aws_creds_provider *p = NULL;
    int r = NS_E_INTERNAL;

    if (opts == NULL || out == NULL || (opts->access_key_id == NULL) != (opts->secret_access_key == NULL) ||
        (opts->session_token != NULL && opts->access_key_id == NULL)) {
        r = NS_E_INVAL;
        goto out;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        p = NULL;
        r = NS_E_INTERNAL;
        goto out;
    }
    snprintf(p->desc, sizeof(p->desc), "unresolved");
    if ((r = dup_opt(opts->access_key_id, &p->access_key_id)) != 0 ||
        (r = dup_opt(opts->profile, &p->profile)) != 0 ||
        (r = dup_opt(opts->credentials_file, &p->credentials_file)) != 0 ||
        (r = dup_opt(opts->imds_endpoint, &p->imds_endpoint)) != 0)
        goto out;
    if (opts->secret_access_key != NULL &&
        (p->secret_access_key =
             ns_secmem_strndup(opts->secret_access_key, strlen(opts->secret_access_key))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if (opts->session_token != NULL &&
        (p->session_token = ns_secmem_strndup(opts->session_token, strlen(opts->session_token))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    p->imds_disabled = opts->imds_disabled;
    if (opts->imds_http != NULL) {
        p->imds_http = *opts->imds_http;
    } else {
        ns_http_opts_init(&p->imds_http);
        p->imds_http.connect_timeout_ms = 1000;
        p->imds_http.timeout_ms = 3000;
        p->imds_http.retries = 1;
    }
    p->imds_http.ca_file = NULL; /* IMDS is plain http on a link-local address */
    *out = p;
    p = NULL;
    r = 0;
out:
    ns_aws_creds_provider_free(p);
    return r;
}

void ns_aws_creds_provider_free(ns_aws_creds_provider *p)
{
    if (p == NULL)
        return;
    free(p->access_key_id);
    ns_secmem_strfree(p->secret_access_key);
    ns_secmem_strfree(p->session_token);
    free(p->profile);
    free(p->credentials_file);
    free(p->imds_endpoint);
    ns_aws_creds_free(p->creds);
    free(p->imds_role);
    ns_http_client_free(p->imds);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

const char *ns_aws_creds_source(ns_aws_creds_provider *p)
{
    return p != NULL ? p->desc : "none";
}

/* ---- environment ---- */

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* 0 and *out set, or 0 and *out NULL (nothing there), or an error. */
static int from_env(ns_aws_creds **out)
{
    const char *id = env_nonempty("AWS_ACCESS_KEY_ID"), *secret = env_nonempty("AWS_SECRET_ACCESS_KEY");

    *out = NULL;
    if (id == NULL && secret == NULL)
        return 0;
    if (id == NULL || secret == NULL) {
        ns_log(NS_LOG_ERROR, "aws credentials: the environment has %s but not %s",
               id != NULL ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
               id != NULL ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
        return NS_E_CONFIG;
    }
    return ns_aws_creds_new(id, secret, env_nonempty("AWS_SESSION_TOKEN"), 0, out);
}

/* ---- shared credentials file (INI) ---- */

static bool ini_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Trim [*s, *e). */
static void trim(const char **s, const char **e)
{
    while (*s < *e && ini_blank(**s))
        (*s)++;
    while (*e > *s && ini_blank((*e)[-1]))
        (*e)--;
}

/* Read `path` into a secret buffer (regular file, not a symbolic link, no group/other access). *exists is
 * false (and 0 returned) when there is no such file. */
static int read_creds_file(const char *path, ns_buf **out, bool *exists)
{
    static const ns_file_rules rules = {.what = "aws credentials file",
                                        .max = CREDS_FILE_MAX,
                                        .secret = true,
                                        .owner_only = true,
                                        .missing_ok = true};
    int r = ns_file_read(path, &rules, out);

    *exists = r != NS_E_NOT_FOUND;
    if (r == NS_E_NOT_FOUND)
        return 0;
    /* A link is refused as a permission problem; anything else unreadable is a configuration error. */
    if ((r == NS_E_PERM && errno != 0 && errno != ELOOP) || r == NS_E_INVAL || r == NS_E_STORAGE)
        r = NS_E_CONFIG;
    return r;
}

/* Find profile's keys in INI text. Values point into the text (not NUL-terminated): lengths in *_len. */
typedef struct ini_profile {
    bool found;
    const char *id, *secret, *token;
    size_t id_len, secret_len, token_len;
    int bad_line; /* first malformed line inside the profile, 0 if none */
} ini_profile;

static void ini_find(const char *text, size_t n, const char *profile, ini_profile *res)
{
    const char *p = text, *end = text + n;
    bool in = false;
    int line = 0;

    memset(res, 0, sizeof(*res));
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *ls = p, *le = nl != NULL ? nl : end;
        p = nl != NULL ? nl + 1 : end;
        line++;
        trim(&ls, &le);
        if (ls == le || *ls == '#' || *ls == ';')
            continue;
        if (*ls == '[') {
            const char *ns = ls + 1, *ne = le;
            if (ne[-1] != ']' || ne - 1 <= ns) {
                in = false;
                continue;
            }
            ne--;
            trim(&ns, &ne);
            in = (size_t)(ne - ns) == strlen(profile) && memcmp(ns, profile, (size_t)(ne - ns)) == 0;
            if (in)
                res->found = true;
            continue;
        }
        if (!in)
            continue;
        {
            const char *eq = memchr(ls, '=', (size_t)(le - ls));
            const char *ks = ls, *ke, *vs, *ve = le;
            size_t kl;
            if (eq == NULL) {
                if (res->bad_line == 0)
                    res->bad_line = line;
                continue;
            }
            ke = eq;
            vs = eq + 1;
            trim(&ks, &ke);
            trim(&vs, &ve);
            kl = (size_t)(ke - ks);
            if (kl == 17 && memcmp(ks, "aws_access_key_id", 17) == 0) {
                res->id = vs;
                res->id_len = (size_t)(ve - vs);
            } else if (kl == 21 && memcmp(ks, "aws_secret_access_key", 21) == 0) {
                res->secret = vs;
                res->secret_len = (size_t)(ve - vs);
            } else if ((kl == 17 && memcmp(ks, "aws_session_token", 17) == 0) ||
                       (kl == 18 && memcmp(ks, "aws_security_token", 18) == 0)) {
                res->token = vs;
                res->token_len = (size_t)(ve - vs);
            }
        }
    }
}

static int from_file(ns_aws_creds_provider *p, ns_aws_creds **out)
{
    const char *profile = p->profile, *path = p->credentials_file, *home;
    bool named = true, exists = false;
    char def_path[4096];
    char *id = NULL, *secret = NULL, *token = NULL;
    ns_buf *text = NULL;
    ini_profile ip;
    int r = NS_E_INTERNAL;

    *out = NULL;
    if (profile == NULL && (profile = env_nonempty("AWS_PROFILE")) == NULL) {
        profile = "default";
        named = false;
    }
    if (path == NULL && (path = env_nonempty("AWS_SHARED_CREDENTIALS_FILE")) == NULL) {
        if ((home = env_nonempty("HOME")) == NULL) {
            r = named ? NS_E_NOT_FOUND : 0;
            if (named)
                ns_log(NS_LOG_ERROR, "aws credentials: profile '%s' named but $HOME is not set", profile);
            goto out;
        }
        snprintf(def_path, sizeof(def_path), "%s/.aws/credentials", home);
        path = def_path;
    }
    if ((r = read_creds_file(path, &text, &exists)) != 0)
        goto out;
    if (!exists) {
        if (named) {
            ns_log(NS_LOG_ERROR, "aws credentials: profile '%s' named but %s does not exist", profile, path);
            r = NS_E_NOT_FOUND;
            goto out;
        }
        r = 0;
        goto out;
    }
    ini_find(text->len ? (const char *)text->data : "", text->len, profile, &ip);
    if (!ip.found) {
        if (named) {
            ns_log(NS_LOG_ERROR, "aws credentials: no profile '%s' in %s", profile, path);
            r = NS_E_NOT_FOUND;
            goto out;
        }
        r = 0;
        goto out;
    }
    if (ip.id == NULL || ip.secret == NULL || ip.id_len == 0 || ip.secret_len == 0) {
        ns_log(NS_LOG_ERROR,
               "aws credentials: profile '%s' in %s has no aws_access_key_id and aws_secret_access_key "
               "(role_arn, sso and credential_process profiles are not supported)",
               profile, path);
        r = NS_E_FORMAT;
        goto out;
    }
    if (ip.bad_line != 0)
        ns_log(NS_LOG_WARN, "aws credentials: %s:%d: not a 'key = value' line; ignored", path, ip.bad_line);
    if ((id = strndup(ip.id, ip.id_len)) == NULL ||
        (secret = ns_secmem_strndup(ip.secret, ip.secret_len)) == NULL ||
        (ip.token != NULL && ip.token_len > 0 &&
         (token = ns_secmem_strndup(ip.token, ip.token_len)) == NULL)) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = ns_aws_creds_new(id, secret, token, 0, out)) != 0)
        goto out;
    snprintf(p->desc, sizeof(p->desc), "profile '%s' of %s", profile, path);
    r = 0;
out:
    free(id);
    ns_secmem_strfree(secret);
    ns_secmem_strfree(token);
    ns_buf_free(text);
    return r;
}

/* ---- IMDSv2 ---- */

/* "2024-01-02T03:04:05Z" (fractions allowed) → time_t. */
static int parse_iso8601(const char *s, time_t *out)
{
    struct tm tm;
    int y, mo, d, h, mi, sec, n = 0;
    time_t t;

    memset(&tm, 0, sizeof(tm));
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
        return NS_E_FORMAT;
    s += n;
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (strcmp(s, "Z") != 0 && strcmp(s, "+00:00") != 0)
        return NS_E_FORMAT;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970)
        return NS_E_FORMAT;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    if ((t = timegm(&tm)) == (time_t)-1)
        return NS_E_FORMAT;
    *out = t;
    return 0;
}

static int imds_call(ns_aws_creds_provider *p, const char *method, const char *path, const char *token,
                     bool secret, ns_http_resp **out)
{
    const char *ep = p->imds_endpoint;
    char url[1024];
    ns_http_header h[1];
    ns_http_req req;
    size_t elen;

    if (ep == NULL && (ep = env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT")) == NULL)
        ep = IMDS_DEFAULT;
    elen = strlen(ep);
    while (elen > 0 && ep[elen - 1] == '/')
        elen--;
    if ((size_t)snprintf(url, sizeof(url), "%.*s%s", (int)elen, ep, path) >= sizeof(url))
        return NS_E_INVAL;
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.url = url;
    if (token == NULL) {
        h[0] = (ns_http_header){"X-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL};
    } else {
        h[0] = (ns_http_header){"X-aws-ec2-metadata-token", token};
    }
    req.headers = h;
    req.n_headers = 1;
    req.max_body = IMDS_BODY_MAX;
    req.secret_body = secret;
    return ns_http_do(p->imds, &req, out);
}

static const char *json_str(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int from_imds(ns_aws_creds_provider *p, ns_aws_creds **out)
{
    ns_http_resp *resp = NULL;
    char *token = NULL, *role = NULL;
    char path[512];
    json_t *doc = NULL;
    json_error_t jerr;
    const char *id, *secret, *tok, *exp, *code;
    time_t expiration = 0;
    int r = NS_E_INTERNAL;

    if (p->imds == NULL && (r = ns_http_client_new(&p->imds_http, &p->imds)) != 0)
        goto out;

    /* 1. session token */
    if ((r = imds_call(p, "PUT", "/latest/api/token", NULL, true, &resp)) != 0)
        goto out;
    if (resp->status != 200 || resp->body->len == 0) {
        ns_log(NS_LOG_ERROR, "aws credentials: instance metadata token request: status %ld", resp->status);
        r = NS_E_STORAGE;
        goto out;
    }
    if ((token = ns_secmem_strndup((const char *)resp->body->data, resp->body->len)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    ns_http_resp_free(resp);
    resp = NULL;

    /* 2. role name (the first line) */
    if ((r = imds_call(p, "GET", "/latest/meta-data/iam/security-credentials/", token, false, &resp)) != 0)
        goto out;
    if (resp->status == 404) {
        ns_log(NS_LOG_ERROR, "aws credentials: this instance has no IAM role");
        r = NS_E_NOT_FOUND;
        goto out;
    }
    if (resp->status != 200) {
        ns_log(NS_LOG_ERROR, "aws credentials: instance metadata role request: status %ld", resp->status);
        r = NS_E_STORAGE;
        goto out;
    }
    {
        size_t n = 0;
        const char *b = resp->body->len ? (const char *)resp->body->data : "";
        while (n < resp->body->len && b[n] != '\n' && b[n] != '\r')
            n++;
        for (size_t i = 0; i < n; i++) {
            char c = b[i];
            bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      strchr("+=,.@_-", c) != NULL;
            if (!ok)
                n = 0;
        }
        if (n == 0 || n > 128) {
            ns_log(NS_LOG_ERROR, "aws credentials: instance metadata returned no valid role name");
            r = NS_E_FORMAT;
            goto out;
        }
        if ((role = strndup(b, n)) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
    }
    ns_http_resp_free(resp);
    resp = NULL;

    /* 3. the role's credentials (JSON, parsed in the secure heap) */
    snprintf(path, sizeof(path), "/latest/meta-data/iam/security-credentials/%s", role);
    if ((r = imds_call(p, "GET", path, token, true, &resp)) != 0)
        goto out;
    if (resp->status != 200) {
        ns_log(NS_LOG_ERROR, "aws credentials: instance metadata credentials for role '%s': status %ld", role,
               resp->status);
        r = NS_E_STORAGE;
        goto out;
    }
    ns_json_init();
    if ((doc = json_loadb(resp->body->len ? (const char *)resp->body->data : "", resp->body->len,
                          JSON_REJECT_DUPLICATES, &jerr)) == NULL ||
        !json_is_object(doc)) {
        ns_log(NS_LOG_ERROR, "aws credentials: instance metadata credentials for role '%s' are not JSON",
               role);
        r = NS_E_FORMAT;
        goto out;
    }
    code = json_str(doc, "Code");
    id = json_str(doc, "AccessKeyId");
    secret = json_str(doc, "SecretAccessKey");
    tok = json_str(doc, "Token");
    exp = json_str(doc, "Expiration");
    if (code != NULL && strcmp(code, "Success") != 0) {
        ns_log(NS_LOG_ERROR, "aws credentials: instance metadata credentials for role '%s': Code %.64s", role,
               code);
        r = NS_E_STORAGE;
        goto out;
    }
    if (id == NULL || secret == NULL || id[0] == '\0' || secret[0] == '\0' ||
        (exp != NULL && parse_iso8601(exp, &expiration) != 0)) {
        ns_log(NS_LOG_ERROR, "aws credentials: instance metadata credentials for role '%s' are incomplete",
               role);
        r = NS_E_FORMAT;
        goto out;
    }
    if ((r = ns_aws_creds_new(id, secret, tok != NULL && tok[0] != '\0' ? tok : NULL, expiration, out)) != 0)
        goto out;
    free(p->imds_role);
    p->imds_role = role;
    role = NULL;
    snprintf(p->desc, sizeof(p->desc), "instance metadata role '%s'", p->imds_role);
    r = 0;
out:
    json_decref(doc);
    ns_secmem_strfree(token);
    free(role);
    ns_http_resp_free(resp);
    return r;
}

static bool imds_disabled(const ns_aws_creds_provider *p)
{
    const char *e = getenv("AWS_EC2_METADATA_DISABLED");
    return p->imds_disabled || (e != NULL && strcasecmp(e, "true") == 0);
}

/* Walk the chain once. Called with the lock held. */
static int resolve(ns_aws_creds_provider *p)
{
    ns_aws_creds *c = NULL;
    int r = NS_E_INTERNAL;

    if (p->access_key_id != NULL) {
        if ((r = ns_aws_creds_new(p->access_key_id, p->secret_access_key, p->session_token, 0, &c)) != 0)
            goto out;
        snprintf(p->desc, sizeof(p->desc), "configuration");
        p->source = SRC_STATIC;
        goto done;
    }
    if ((r = from_env(&c)) != 0)
        goto out;
    if (c != NULL) {
        snprintf(p->desc, sizeof(p->desc), "environment");
        p->source = SRC_STATIC;
        goto done;
    }
    if ((r = from_file(p, &c)) != 0)
        goto out;
    if (c != NULL) {
        p->source = SRC_STATIC;
        goto done;
    }
    if (imds_disabled(p)) {
        ns_log(NS_LOG_ERROR, "aws credentials: none in the configuration, the environment or the shared "
                             "credentials file, and instance metadata is disabled");
        r = NS_E_NOT_FOUND;
        goto out;
    }
    if ((r = from_imds(p, &c)) != 0) {
        ns_log(NS_LOG_ERROR, "aws credentials: none in the configuration, the environment, the shared "
                             "credentials file or instance metadata");
        if (r == NS_E_STORAGE)
            r = NS_E_NOT_FOUND;
        goto out;
    }
    p->source = SRC_IMDS;
done:
    ns_log(NS_LOG_INFO, "aws credentials: from %s", p->desc);
    ns_aws_creds_free(p->creds);
    p->creds = c;
    c = NULL;
    r = 0;
out:
    ns_aws_creds_free(c);
    return r;
}

int ns_aws_creds_get(ns_aws_creds_provider *p, ns_aws_creds **out)
{
    ns_aws_creds *fresh = NULL;
    time_t now = time(NULL);
    int r = NS_E_INTERNAL;

    if (p == NULL || out == NULL)
        return NS_E_INVAL;
    pthread_mutex_lock(&p->lock);
    if (p->source == SRC_NONE) {
        if ((r = resolve(p)) != 0)
            goto out;
    } else if (p->source == SRC_IMDS && p->creds->expiration != 0 &&
               p->creds->expiration - now < NS_AWS_CREDS_REFRESH_S) {
        r = from_imds(p, &fresh);
        if (r == 0) {
            ns_log(NS_LOG_INFO, "aws credentials: refreshed from %s", p->desc);
            ns_aws_creds_free(p->creds);
            p->creds = fresh;
            fresh = NULL;
        } else if (p->creds->expiration > now) {
            ns_log(NS_LOG_WARN,
                   "aws credentials: refresh from instance metadata failed; the current ones "
                   "are valid for %lld more seconds",
                   (long long)(p->creds->expiration - now));
        } else {
            ns_log(NS_LOG_ERROR, "aws credentials: expired, and instance metadata cannot refresh them");
            goto out;
        }
    }
    r = ns_aws_creds_dup(p->creds, out);
out:
    pthread_mutex_unlock(&p->lock);
    ns_aws_creds_free(fresh);
    return r;
}
