/* The server's caches (doc/server.md "Caching"): rendered answers (service/answers.c) miss after a secret
 * rotation, a new CA bundle or a reload, and are wiped from the secure heap when evicted; the secret cache's
 * generation moves when a secret is rotated in storage; remembered agent groups (service/records.c) are
 * not used for another certificate (renewal, re-registration elsewhere), after a local write, or after
 * their time to live. */
#include "ns-build.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/crypto.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secmem.h"
#include "settings/settings.h"
#include "keys/kek.h"
#include "keys/keyring.h"
#include "secrets/document.h"
#include "secrets/keytype.h"
#include "secrets/secret.h"
#include "service/answers.h"
#include "service/cache.h"
#include "service/metrics.h"
#include "service/records.h"
#include "store/store.h"

static ns_answer *answer_of(const char *text, const char *etag)
{
    ns_buf *b = NULL;
    ns_answer *a = NULL;

    assert_int_equal(ns_buf_from(text, strlen(text), strlen(text), true, &b), 0);
    assert_int_equal(ns_answer_new(b, etag, &a), 0);
    return a;
}

/* A hit needs the same template, template generation, cache generation and CA version. */
static void test_answer_stamps(void **state)
{
    ns_answers *t = NULL;
    ns_answer *a = answer_of("{\"files\":[]}", "\"e1\""), *got = NULL;
    ns_answer_stamp s = {1, 7, "ca-v1"}, other;
    ns_buf *plain = NULL;
    (void)state;

    assert_int_equal(ns_answers_new(&t), 0);
    assert_int_equal(ns_answers_get(t, "web", &s, &got), NS_E_NOT_FOUND);
    assert_int_equal(ns_answers_set(t, "web", &s, a), 0);
    assert_int_equal(atomic_load(&a->refs), 2);
    assert_int_equal(ns_answers_get(t, "web", &s, &got), 0);
    assert_ptr_equal(got, a);
    assert_string_equal(got->etag, "\"e1\"");
    assert_int_equal(atomic_load(&a->refs), 3);
    ns_answer_put(got);
    assert_int_equal(ns_answers_get(t, "db", &s, &got), NS_E_NOT_FOUND);
    other = s;
    other.cache_gen++; /* a secret of the cache was rotated */
    assert_int_equal(ns_answers_get(t, "web", &other, &got), NS_E_NOT_FOUND);
    other = s;
    other.tmpl_gen++; /* SIGHUP */
    assert_int_equal(ns_answers_get(t, "web", &other, &got), NS_E_NOT_FOUND);
    other = s;
    other.ca_version = "ca-v2"; /* ca rotate */
    assert_int_equal(ns_answers_get(t, "web", &other, &got), NS_E_NOT_FOUND);
    /* Pruning under the current stamp keeps it. */
    ns_answers_prune(t, &s);
    assert_int_equal(ns_answers_count(t), 1);
    ns_answer_put(a);
    ns_answers_free(t);

    /* Only secret buffers make answers. */
    assert_int_equal(ns_buf_from("x", 1, 1, false, &plain), 0);
    assert_int_equal(ns_answer_new(plain, "\"e\"", &a), NS_E_INVAL);
}

/* An evicted answer is wiped and its secure-heap memory returned, but only after the last reply that sends
 * it is done (an in-flight reference keeps the bytes intact). Eviction: a prune with a newer stamp (the
 * periodic refresh after a rotation) and a replacement by a newer answer. */
static void test_answer_eviction_wipes(void **state)
{
    static const char secret[] = "{\"files\":[{\"content\":\"LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t\"}]}";
    ns_answers *t = NULL;
    ns_answer *a, *b, *inflight;
    ns_answer_stamp s1 = {0, 1, "v"}, s2 = {0, 2, "v"};
    size_t base;
    const uint8_t *p;
    size_t n;
    (void)state;

    /* The server needs the secure heap (a skip here would pass without testing anything). */
    assert_int_equal(ns_secmem_init(), 0);
    assert_true(CRYPTO_secure_malloc_initialized());
    base = CRYPTO_secure_used();
    assert_int_equal(ns_answers_new(&t), 0);
    a = answer_of(secret, "\"a\"");
    assert_true(CRYPTO_secure_allocated(a->body->data)); /* locked, not dumpable */
    assert_true(CRYPTO_secure_used() > base);
    p = a->body->data;
    n = a->body->len;
    assert_int_equal(ns_answers_set(t, "web", &s1, a), 0);
    inflight = ns_answer_ref(a); /* a reply still being written */
    ns_answer_put(a);            /* the renderer's reference */
    ns_answers_prune(t, &s2);    /* rotation seen by the refresh */
    assert_int_equal(ns_answers_count(t), 0);
    assert_memory_equal(inflight->body->data, secret, n); /* still intact for the reply */
    ns_answer_put(inflight);                              /* the last reference: wiped and freed */
    assert_int_equal(CRYPTO_secure_used(), base);
    /* The arena stays mapped: the freed block is zero past the allocator's free-list links. */
    for (size_t i = 2 * sizeof(void *); i < n; i++)
        if (p[i] != 0)
            fail_msg("byte %zu of an evicted answer was not wiped", i);

    /* Replaced by a newer answer: the old one goes. */
    a = answer_of(secret, "\"a\"");
    b = answer_of("{\"files\":[{\"content\":\"bmV3\"}]}", "\"b\"");
    p = a->body->data;
    n = a->body->len;
    assert_int_equal(ns_answers_set(t, "web", &s1, a), 0);
    ns_answer_put(a);
    assert_int_equal(ns_answers_set(t, "web", &s2, b), 0);
    ns_answer_put(b);
    assert_int_equal(ns_answers_count(t), 1);
    for (size_t i = 2 * sizeof(void *); i < n; i++)
        if (p[i] != 0)
            fail_msg("byte %zu of a replaced answer was not wiped", i);
    ns_answers_free(t);
    assert_int_equal(CRYPTO_secure_used(), base);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int add_key(ns_secret_doc *d, void *ctx)
{
    ns_secret_key k;
    int r;
    (void)ctx;

    memset(&k, 0, sizeof(k));
    if ((r = ns_doc_make_key(d->type, NULL, 0, 0, &k)) != 0)
        return r;
    return ns_doc_rotate(d, &k, 0);
}

/* The secret cache's generation moves when a cached secret is added or rotated in storage (so answers
 * made from the old keys miss), and not when nothing changed. */
static void test_cache_generation_on_rotation(void **state)
{
    char dir[256], root[320], backend[] = "file", text[1024];
    const char *tmp = getenv("TMPDIR");
    ns_storage_config sc = {.backend = backend, .path = root, .line = 1};
    uint8_t raw[32];
    ns_store *st = NULL;
    ns_kek *kek = NULL;
    ns_keyring *kr = NULL;
    ns_config *cfg = NULL;
    ns_cache *c = NULL;
    ns_metrics m;
    ns_secret_doc *doc = NULL;
    ns_secret_key k;
    ns_buf *e1 = NULL, *e2 = NULL;
    unsigned long g0, g1, g2;
    (void)state;

    memset(&m, 0, sizeof(m));
    memset(raw, 7, sizeof(raw));
    snprintf(dir, sizeof(dir), "%s/test-server-cache.XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(root, sizeof(root), "%s/root", dir);
    assert_int_equal(ns_store_open(&sc, &st), 0);
    assert_int_equal(ns_kek_soft_new(raw, "test", &kek), 0);
    assert_int_equal(ns_keyring_from_keks(&kek, 1, &kr), 0);
    memset(&k, 0, sizeof(k));
    assert_int_equal(ns_doc_make_key(ns_keytype_find("ecdsa-p256"), NULL, 0, 0, &k), 0);
    assert_int_equal(ns_doc_new(ns_keytype_find("ecdsa-p256"), &k, &doc), 0);
    assert_int_equal(ns_secret_create(st, kr, "cluster/secret/app.key", doc), 0);
    snprintf(
        text, sizeof(text),
        "cluster_id: t\nstorage: {backend: file, path: %s}\n"
        "encryption_key: {source: env, name: NS_TEST_UNUSED}\n"
        "templates:\n  web:\n    files:\n      - {path: /etc/app.pem, secret: app.key, format: pem-bundle}\n"
        "groups:\n  g1: web\n",
        root);
    assert_int_equal(ns_config_parse(text, strlen(text), "cache.yaml", NULL, &cfg), 0);

    assert_int_equal(ns_cache_new(&c), 0);
    g0 = ns_cache_generation(c);
    assert_int_equal(ns_cache_export(c, st, kr, &m, "app.key", "pem-bundle", &e1), 0); /* a miss: added */
    g1 = ns_cache_generation(c);
    assert_true(g1 != g0);
    ns_cache_refresh(c, st, kr, &m, cfg); /* unchanged in storage */
    assert_true(ns_cache_generation(c) == g1);
    assert_int_equal(ns_secret_update(st, kr, "cluster/secret/app.key", add_key, NULL), 0); /* rotate */
    ns_cache_refresh(c, st, kr, &m, cfg);
    g2 = ns_cache_generation(c);
    assert_true(g2 != g1);
    assert_int_equal(ns_cache_export(c, st, kr, &m, "app.key", "pem-bundle", &e2), 0);
    assert_true(e1->len != e2->len || memcmp(e1->data, e2->data, e1->len) != 0); /* the new bundle */
    assert_true(ns_cache_generation(c) == g2);                                   /* a hit: no change */

    ns_buf_free(e1);
    ns_buf_free(e2);
    ns_cache_free(c);
    ns_config_free(cfg);
    ns_doc_free(doc);
    ns_keyring_free(kr);
    ns_store_close(st);
    assert_int_equal(nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* Remembered groups: same record and certificate within the time to live only. */
static void test_records(void **state)
{
    ns_recs *c = NULL;
    uint8_t fp1[32], fp2[32];
    char g[NS_RECS_GROUP_MAX], big[NS_RECS_GROUP_MAX + 8];
    const char *rec = "shard/s1/instance/t1.vm-1.json";
    (void)state;

    memset(fp1, 1, sizeof(fp1));
    memset(fp2, 2, sizeof(fp2));
    assert_int_equal(ns_recs_new(5000, &c), 0);
    assert_int_equal(ns_recs_get(c, rec, fp1, 1000, g, sizeof(g)), NS_E_NOT_FOUND);
    ns_recs_put(c, rec, fp1, "g1", 1000);
    assert_int_equal(ns_recs_get(c, rec, fp1, 1000, g, sizeof(g)), 0);
    assert_string_equal(g, "g1");
    assert_int_equal(ns_recs_get(c, rec, fp1, 5999, g, sizeof(g)), 0);
    /* Time to live over (another server may have rewritten the record). */
    assert_int_equal(ns_recs_get(c, rec, fp1, 6000, g, sizeof(g)), NS_E_NOT_FOUND);
    /* A clock going backwards is not trusted. */
    assert_int_equal(ns_recs_get(c, rec, fp1, 999, g, sizeof(g)), NS_E_NOT_FOUND);
    /* Renewal or re-registration (anywhere): a new certificate reads the record again. */
    assert_int_equal(ns_recs_get(c, rec, fp2, 1001, g, sizeof(g)), NS_E_NOT_FOUND);
    /* Another record. */
    assert_int_equal(ns_recs_get(c, "shard/s1/instance/t1.vm-2.json", fp1, 1001, g, sizeof(g)),
                     NS_E_NOT_FOUND);
    /* A registration or renewal on this server forgets it at once. */
    ns_recs_forget(c, rec);
    assert_int_equal(ns_recs_get(c, rec, fp1, 1001, g, sizeof(g)), NS_E_NOT_FOUND);
    /* The new certificate's read replaces the slot; the old certificate misses. */
    ns_recs_put(c, rec, fp1, "g1", 1000);
    ns_recs_put(c, rec, fp2, "g2", 1100);
    assert_int_equal(ns_recs_get(c, rec, fp2, 1200, g, sizeof(g)), 0);
    assert_string_equal(g, "g2");
    assert_int_equal(ns_recs_get(c, rec, fp1, 1200, g, sizeof(g)), NS_E_NOT_FOUND);
    /* Too small an output, too long a group: not served from memory. */
    assert_int_equal(ns_recs_get(c, rec, fp2, 1200, g, 2), NS_E_NOT_FOUND);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ns_recs_forget(c, rec);
    ns_recs_put(c, rec, fp1, big, 1000);
    assert_int_equal(ns_recs_get(c, rec, fp1, 1000, g, sizeof(g)), NS_E_NOT_FOUND);
    ns_recs_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answer_stamps),
        cmocka_unit_test(test_answer_eviction_wipes),
        cmocka_unit_test(test_cache_generation_on_rotation),
        cmocka_unit_test(test_records),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
