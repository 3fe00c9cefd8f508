/* Unit tests for the If-Match decision of src/store/store_s3.c against a scripted server (mini-http):
 * a server that wants the quoted entity-tag (AWS S3, RFC 9110), one that wants it bare (Ceph RGW before
 * ceph/ceph PR 63348), and real concurrent changes, which must stay NS_E_CONFLICT on both. Each test
 * asserts the exact requests sent: which form of If-Match, and when a HEAD checks the current ETag. */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"
#include "settings/settings.h"
#include "mini-http.h"
#include "store/store.h"

#define ETAG_HDR(t) "ETag: \"" t "\"\r\n"
#define E412        "<?xml version=\"1.0\"?><Error><Code>PreconditionFailed</Code><Message>no</Message></Error>"

static ns_store *open_store(mini_server *m)
{
    ns_storage_config cfg;
    ns_store *st = NULL;

    memset(&cfg, 0, sizeof(cfg));
    cfg.backend = "s3";
    cfg.line = 1;
    cfg.bucket = "bkt";
    cfg.region = "us-east-1";
    cfg.endpoint = (char *)mini_url(m);
    cfg.path_style = true;
    cfg.retries = 0;
    cfg.has_credentials = true;
    cfg.creds.access_key_id = "AKIDTEST";
    cfg.creds.secret_access_key = "secret";
    assert_int_equal(ns_store_open(&cfg, &st), 0);
    return st;
}

/* Request i was `method` with If-Match `want` (NULL: none). */
static void expect_req(mini_server *m, size_t i, const char *method, const char *want)
{
    const mini_req *rq = mini_req_get(m, i);
    char v[256];

    assert_non_null(rq);
    assert_string_equal(rq->method, method);
    if (want == NULL) {
        assert_false(mini_req_header(rq, "If-Match", v, sizeof(v)));
    } else {
        assert_true(mini_req_header(rq, "If-Match", v, sizeof(v)));
        assert_string_equal(v, want);
    }
}

static const uint8_t DATA[] = "new";

/* AWS S3 and RFC 9110 servers: the quoted form is sent first and accepted; no HEAD. */
static void test_quoted_accepted(void **state)
{
    static const mini_resp script[] = {{200, ETAG_HDR("e2"), NULL, 0, false},
                                       {200, ETAG_HDR("e3"), NULL, 0, false}};
    mini_server *m = mini_start(script, 2);
    ns_store *st = open_store(m);
    (void)state;

    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e1\""), 0);
    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e2\""), 0);
    assert_int_equal(mini_nreq(m), 2);
    expect_req(m, 0, "PUT", "\"e1\"");
    expect_req(m, 1, "PUT", "\"e2\"");
    ns_store_close(st);
    mini_stop(m);
}

/* RGW 16.2: quoted → 412; the HEAD shows the same ETag, so the bare form is tried and accepted, and the
 * store sends the bare form first from then on (one request per put). */
static void test_rgw_bare_learned(void **state)
{
    static const mini_resp script[] = {
        {412, NULL, E412, 0, false},
        {200, ETAG_HDR("e1"), NULL, 0, false},
        {200, ETAG_HDR("e2"), NULL, 0, false},
        {200, ETAG_HDR("e3"), NULL, 0, false},
    };
    mini_server *m = mini_start(script, 4);
    ns_store *st = open_store(m);
    (void)state;

    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e1\""), 0);
    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e2\""), 0);
    assert_int_equal(mini_nreq(m), 4);
    expect_req(m, 0, "PUT", "\"e1\"");
    expect_req(m, 1, "HEAD", NULL);
    expect_req(m, 2, "PUT", "e1");
    expect_req(m, 3, "PUT", "e2");
    ns_store_close(st);
    mini_stop(m);
}

/* A real change: the 412's HEAD shows another ETag → conflict, no second PUT. On both kinds of server. */
static void test_real_change_quoted(void **state)
{
    static const mini_resp script[] = {{412, NULL, E412, 0, false}, {200, ETAG_HDR("other"), NULL, 0, false}};
    mini_server *m = mini_start(script, 2);
    ns_store *st = open_store(m);
    (void)state;

    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e1\""), NS_E_CONFLICT);
    assert_int_equal(mini_nreq(m), 2);
    expect_req(m, 0, "PUT", "\"e1\"");
    expect_req(m, 1, "HEAD", NULL);
    ns_store_close(st);
    mini_stop(m);
}

/* Learned bare, then a real change: bare PUT → 412, HEAD shows another ETag → conflict; the form stays. */
static void test_real_change_after_learning(void **state)
{
    static const mini_resp script[] = {
        {412, NULL, E412, 0, false},           {200, ETAG_HDR("e1"), NULL, 0, false},
        {200, ETAG_HDR("e2"), NULL, 0, false}, {412, NULL, E412, 0, false},
        {200, ETAG_HDR("e9"), NULL, 0, false}, {200, ETAG_HDR("e10"), NULL, 0, false},
    };
    mini_server *m = mini_start(script, 6);
    ns_store *st = open_store(m);
    (void)state;

    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e1\""), 0);
    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e2\""), NS_E_CONFLICT);
    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e9\""), 0);
    assert_int_equal(mini_nreq(m), 6);
    expect_req(m, 3, "PUT", "e2");
    expect_req(m, 4, "HEAD", NULL);
    expect_req(m, 5, "PUT", "e9");
    ns_store_close(st);
    mini_stop(m);
}

/* A change between the HEAD and the second PUT: that PUT gets 412 too → conflict, and nothing is learned. */
static void test_change_during_retry(void **state)
{
    static const mini_resp script[] = {
        {412, NULL, E412, 0, false},
        {200, ETAG_HDR("e1"), NULL, 0, false},
        {412, NULL, E412, 0, false},
        {200, ETAG_HDR("e4"), NULL, 0, false},
    };
    mini_server *m = mini_start(script, 4);
    ns_store *st = open_store(m);
    (void)state;

    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e1\""), NS_E_CONFLICT);
    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e3\""), 0);
    assert_int_equal(mini_nreq(m), 4);
    expect_req(m, 2, "PUT", "e1");
    expect_req(m, 3, "PUT", "\"e3\"");
    ns_store_close(st);
    mini_stop(m);
}

/* A server that wants quotes after all (the bare form was learned, then the endpoint was upgraded, or a
 * strict server): bare → 412, HEAD same → quoted accepted and remembered. */
static void test_back_to_quoted(void **state)
{
    static const mini_resp script[] = {
        {412, NULL, E412, 0, false},           {200, ETAG_HDR("e1"), NULL, 0, false},
        {200, ETAG_HDR("e2"), NULL, 0, false}, {412, NULL, E412, 0, false},
        {200, ETAG_HDR("e2"), NULL, 0, false}, {200, ETAG_HDR("e3"), NULL, 0, false},
        {200, ETAG_HDR("e4"), NULL, 0, false},
    };
    mini_server *m = mini_start(script, 7);
    ns_store *st = open_store(m);
    (void)state;

    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e1\""), 0);
    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e2\""), 0);
    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e3\""), 0);
    assert_int_equal(mini_nreq(m), 7);
    expect_req(m, 3, "PUT", "e2");
    expect_req(m, 4, "HEAD", NULL);
    expect_req(m, 5, "PUT", "\"e2\"");
    expect_req(m, 6, "PUT", "\"e3\"");
    ns_store_close(st);
    mini_stop(m);
}

/* The object is gone: the 412's HEAD gets 404 → conflict (not a retry); a 404 to the PUT → not found. */
static void test_gone(void **state)
{
    static const mini_resp script[] = {
        {412, NULL, E412, 0, false},
        {404, NULL, NULL, 0, false},
        {404, NULL, "<Error><Code>NoSuchKey</Code></Error>", 0, false},
    };
    mini_server *m = mini_start(script, 3);
    ns_store *st = open_store(m);
    (void)state;

    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e1\""), NS_E_CONFLICT);
    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"e1\""), NS_E_NOT_FOUND);
    assert_int_equal(mini_nreq(m), 3);
    ns_store_close(st);
    mini_stop(m);
}

/* Create-only writes are not touched: a 412 to If-None-Match is NS_E_EXISTS without a HEAD. Bad ETags
 * (empty, only quotes, inner quotes, CR/LF) are NS_E_INVAL without a request. */
static void test_create_and_bad_etags(void **state)
{
    static const mini_resp script[] = {{412, NULL, E412, 0, false}};
    mini_server *m = mini_start(script, 1);
    ns_store *st = open_store(m);
    (void)state;

    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_CREATE, NULL), NS_E_EXISTS);
    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"\""), NS_E_INVAL);
    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"a\"b\""), NS_E_INVAL);
    assert_int_equal(ns_store_put(st, "a/b", DATA, 3, NS_PUT_IF_MATCH, "\"a\r\n\""), NS_E_INVAL);
    assert_int_equal(mini_nreq(m), 1);
    ns_store_close(st);
    mini_stop(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quoted_accepted),
        cmocka_unit_test(test_rgw_bare_learned),
        cmocka_unit_test(test_real_change_quoted),
        cmocka_unit_test(test_real_change_after_learning),
        cmocka_unit_test(test_change_during_retry),
        cmocka_unit_test(test_back_to_quoted),
        cmocka_unit_test(test_gone),
        cmocka_unit_test(test_create_and_bad_etags),
    };
    ns_log_set_level(NS_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
