/* Unit tests for src/net/aws_creds.c: the chain (explicit keys, environment, shared credentials file with
 * profiles, IMDSv2 against a scripted server), its refusals (partial environment, missing named profile,
 * loose file permissions, profiles without keys), IMDS caching and refresh before expiry, and copies. */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"
#include "mini-http.h"
#include "net/aws_creds.h"

static char dir[] = "/tmp/test-aws-creds-XXXXXX";
static char file[256];

static void clear_env(void)
{
    static const char *const vars[] = {"AWS_ACCESS_KEY_ID",           "AWS_SECRET_ACCESS_KEY",
                                       "AWS_SESSION_TOKEN",           "AWS_PROFILE",
                                       "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                                       "AWS_EC2_METADATA_DISABLED"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    setenv("HOME", dir, 1); /* no ~/.aws/credentials there */
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static int get_with(const ns_aws_creds_opts *o, ns_aws_creds **c, char *source, size_t size)
{
    ns_aws_creds_provider *p = NULL;
    int r;

    assert_int_equal(ns_aws_creds_provider_new(o, &p), 0);
    r = ns_aws_creds_get(p, c);
    snprintf(source, size, "%s", ns_aws_creds_source(p));
    ns_aws_creds_provider_free(p);
    return r;
}

static void test_explicit_and_env(void **state)
{
    ns_aws_creds_opts o;
    ns_aws_creds *c = NULL, *d = NULL;
    ns_aws_creds_provider *p = NULL;
    char src[512];

    clear_env();
    memset(&o, 0, sizeof(o));
    o.access_key_id = "AKIDCONFIG";
    o.secret_access_key = "config-secret";
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1); /* explicit keys win over the environment */
    setenv("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), 0);
    assert_string_equal(c->access_key_id, "AKIDCONFIG");
    assert_string_equal(c->secret_access_key, "config-secret");
    assert_null(c->session_token);
    assert_int_equal(c->expiration, 0);
    assert_string_equal(src, "configuration");
    assert_int_equal(ns_aws_creds_dup(c, &d), 0);
    assert_string_equal(d->secret_access_key, "config-secret");
    assert_ptr_not_equal(d->secret_access_key, c->secret_access_key);
    ns_aws_creds_free(c);
    ns_aws_creds_free(d);
    c = NULL;

    memset(&o, 0, sizeof(o));
    setenv("AWS_SESSION_TOKEN", "env-token", 1);
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), 0);
    assert_string_equal(c->access_key_id, "AKIDENV");
    assert_string_equal(c->secret_access_key, "env-secret");
    assert_string_equal(c->session_token, "env-token");
    assert_string_equal(src, "environment");
    ns_aws_creds_free(c);
    c = NULL;

    /* Half a key pair is an error, not a fall-through. */
    unsetenv("AWS_SECRET_ACCESS_KEY");
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), NS_E_CONFIG);
    assert_null(c);

    /* Options: both keys or neither; a token needs keys. */
    o.access_key_id = "AKID";
    assert_int_equal(ns_aws_creds_provider_new(&o, &p), NS_E_INVAL);
    o.access_key_id = NULL;
    o.session_token = "t";
    assert_int_equal(ns_aws_creds_provider_new(&o, &p), NS_E_INVAL);
    assert_int_equal(ns_aws_creds_new("", "s", NULL, 0, &c), NS_E_INVAL);
    assert_int_equal(ns_aws_creds_new("a", "s", "", 0, &c), NS_E_INVAL);
    ns_aws_creds_free(NULL);
    ns_aws_creds_provider_free(NULL);
}

static void test_shared_file(void **state)
{
    ns_aws_creds_opts o;
    ns_aws_creds *c = NULL;
    char src[512], other[300];

    clear_env();
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    memset(&o, 0, sizeof(o));
    snprintf(file, sizeof(file), "%s/credentials", dir);
    write_file(file,
               "# comment\n"
               "[default]\n"
               "aws_access_key_id = AKIDDEFAULT\n"
               "aws_secret_access_key=default-secret \n"
               "\n"
               "[ other ]\r\n"
               "aws_access_key_id=AKIDOTHER\r\n"
               "aws_secret_access_key = other/secret+x\r\n"
               "aws_session_token = other-token\r\n"
               "[role]\n"
               "role_arn = arn:aws:iam::123456789012:role/x\n",
               0600);
    setenv("AWS_SHARED_CREDENTIALS_FILE", file, 1);
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), 0);
    assert_string_equal(c->access_key_id, "AKIDDEFAULT");
    assert_string_equal(c->secret_access_key, "default-secret");
    assert_null(c->session_token);
    snprintf(other, sizeof(other), "profile 'default' of %s", file);
    assert_string_equal(src, other);
    ns_aws_creds_free(c);
    c = NULL;

    setenv("AWS_PROFILE", "other", 1);
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), 0);
    assert_string_equal(c->access_key_id, "AKIDOTHER");
    assert_string_equal(c->secret_access_key, "other/secret+x");
    assert_string_equal(c->session_token, "other-token");
    ns_aws_creds_free(c);
    c = NULL;

    /* The option beats $AWS_PROFILE; a named profile that is missing is an error. */
    o.profile = "default";
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), 0);
    assert_string_equal(c->access_key_id, "AKIDDEFAULT");
    ns_aws_creds_free(c);
    c = NULL;
    o.profile = "nosuch";
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), NS_E_NOT_FOUND);
    o.profile = "role";
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), NS_E_FORMAT);
    o.profile = NULL;
    unsetenv("AWS_PROFILE");

    /* Readable by others: refused. */
    assert_int_equal(chmod(file, 0644), 0);
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), NS_E_PERM);
    assert_int_equal(chmod(file, 0600), 0);

    /* The file named in the options wins over the variable. */
    snprintf(other, sizeof(other), "%s/other-creds", dir);
    write_file(other, "[default]\naws_access_key_id=AKIDOPT\naws_secret_access_key=opt\n", 0600);
    o.credentials_file = other;
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), 0);
    assert_string_equal(c->access_key_id, "AKIDOPT");
    ns_aws_creds_free(c);
    c = NULL;
    unlink(other);

    /* No file, no named profile, IMDS disabled: nothing found. */
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), NS_E_NOT_FOUND);
    o.credentials_file = NULL;
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), NS_E_NOT_FOUND); /* $HOME has none */
    /* ... but a named profile without a file is reported as such. */
    o.profile = "x";
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), NS_E_NOT_FOUND);
    assert_null(c);
    unlink(file);
}

static void iso(time_t t, char *out, size_t size)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void test_imds(void **state)
{
    char soon[32], later[32], body1[512], body2[512], v[256];
    mini_resp script[] = {
        {200, NULL, "TOKEN-1", 0, false},
        {200, NULL, "my-role\n", 0, false},
        {200, NULL, body1, 0, false},
        /* refresh */
        {200, NULL, "TOKEN-2", 0, false},
        {200, NULL, "my-role", 0, false},
        {200, NULL, body2, 0, false},
    };
    mini_server *s = NULL;
    ns_aws_creds_opts o;
    ns_aws_creds_provider *p = NULL;
    ns_aws_creds *c = NULL;
    const mini_req *rq;

    clear_env();
    iso(time(NULL) + 120, soon, sizeof(soon)); /* inside the refresh window */
    iso(time(NULL) + 6 * 3600, later, sizeof(later));
    snprintf(
        body1, sizeof(body1),
        "{\"Code\":\"Success\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"ASIAONE\",\"SecretAccessKey\":\"s1\","
        "\"Token\":\"tok1\",\"Expiration\":\"%s\"}",
        soon);
    snprintf(
        body2, sizeof(body2),
        "{\"Code\":\"Success\",\"AccessKeyId\":\"ASIATWO\",\"SecretAccessKey\":\"s2\",\"Token\":\"tok2\","
        "\"Expiration\":\"%s\"}",
        later);
    s = mini_start(script, sizeof(script) / sizeof(script[0]));
    memset(&o, 0, sizeof(o));
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", mini_url(s), 1);
    assert_int_equal(ns_aws_creds_provider_new(&o, &p), 0);
    assert_string_equal(ns_aws_creds_source(p), "unresolved");
    assert_int_equal(ns_aws_creds_get(p, &c), 0);
    assert_string_equal(c->access_key_id, "ASIAONE");
    assert_string_equal(c->secret_access_key, "s1");
    assert_string_equal(c->session_token, "tok1");
    assert_true(c->expiration > time(NULL));
    assert_string_equal(ns_aws_creds_source(p), "instance metadata role 'my-role'");
    ns_aws_creds_free(c);
    c = NULL;
    assert_int_equal(mini_nreq(s), 3);
    rq = mini_req_get(s, 0);
    assert_string_equal(rq->method, "PUT");
    assert_string_equal(rq->target, "/latest/api/token");
    assert_true(mini_req_header(rq, "X-aws-ec2-metadata-token-ttl-seconds", v, sizeof(v)));
    rq = mini_req_get(s, 1);
    assert_string_equal(rq->target, "/latest/meta-data/iam/security-credentials/");
    assert_true(mini_req_header(rq, "X-aws-ec2-metadata-token", v, sizeof(v)));
    assert_string_equal(v, "TOKEN-1");
    assert_string_equal(mini_req_get(s, 2)->target, "/latest/meta-data/iam/security-credentials/my-role");

    /* Expiring within the window: fetched again. */
    assert_int_equal(ns_aws_creds_get(p, &c), 0);
    assert_string_equal(c->access_key_id, "ASIATWO");
    assert_string_equal(c->session_token, "tok2");
    ns_aws_creds_free(c);
    c = NULL;
    assert_int_equal(mini_nreq(s), 6);
    /* Valid for hours: served from the cache. */
    assert_int_equal(ns_aws_creds_get(p, &c), 0);
    assert_string_equal(c->access_key_id, "ASIATWO");
    ns_aws_creds_free(c);
    assert_int_equal(mini_nreq(s), 6);
    ns_aws_creds_provider_free(p);
    mini_stop(s);
}

static void test_imds_failures(void **state)
{
    mini_resp script[] = {
        /* no role */
        {200, NULL, "TOKEN", 0, false},
        {404, NULL, "", 0, false},
        /* garbage credentials */
        {200, NULL, "TOKEN", 0, false},
        {200, NULL, "r", 0, false},
        {200, NULL, "{\"AccessKeyId\":\"A\"}", 0, false},
    };
    mini_server *s = mini_start(script, sizeof(script) / sizeof(script[0]));
    ns_aws_creds_opts o;
    ns_aws_creds *c = NULL;
    char src[512], url[64];
    int port;

    clear_env();
    memset(&o, 0, sizeof(o));
    o.imds_endpoint = mini_url(s);
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), NS_E_NOT_FOUND);
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), NS_E_FORMAT);
    assert_null(c);
    port = mini_port(s);
    mini_stop(s);
    /* Nobody there: nothing found (after a short, bounded wait). */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    o.imds_endpoint = url;
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), NS_E_NOT_FOUND);
    /* Disabled by option: IMDS is never asked. */
    o.imds_disabled = true;
    assert_int_equal(get_with(&o, &c, src, sizeof(src)), NS_E_NOT_FOUND);
    assert_null(c);
}

static int setup(void **state)
{
    if (mkdtemp(dir) == NULL)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    rmdir(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_explicit_and_env),
        cmocka_unit_test(test_shared_file),
        cmocka_unit_test(test_imds),
        cmocka_unit_test(test_imds_failures),
    };
    ns_log_set_level(NS_LOG_ERROR + 0);
    return cmocka_run_group_tests(tests, setup, teardown);
}
