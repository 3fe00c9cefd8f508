/* libFuzzer target for the secret-document parser: ns_doc_parse on arbitrary bytes. The seeds in
 * tests/fuzz/seeds/document/ are documents of several types (key pairs, random, opaque; with pending and
 * previous keys) and a few malformed ones, so mutations reach the key checks. Besides "no crash, no leak",
 * the target checks what the API promises and traps when one breaks:
 *   - a failure is NS_E_FORMAT, NS_E_VERSION or NS_E_TOO_LARGE and leaves *out untouched;
 *   - a parsed document has 1..NS_SECRET_KEYS_MAX keys with distinct ids, states in their places (current
 *     first, then an optional pending, then previous) and non-empty material;
 *   - it round-trips: serialized and parsed again it gives the same type, keys, ids, states, times and
 *     material bytes, and serializing that gives the same text;
 *   - parsing is strict, so the serialized text is the same JSON value as the input (no member, value or
 *     encoding was tolerated and dropped).
 * The secure heap is deliberately not initialised, as in fuzz-envelope.c: secret buffers and jansson's
 * allocations then come from malloc, where ASan sees every out-of-bounds access. */
#include "ns-build.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "secrets/document.h"
#include "secrets/keytype.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            __builtin_trap();                                                                                \
    } while (0)

static void check_doc(const ns_secret_doc *d)
{
    CHECK(d->type != NULL && ns_keytype_find(d->type->name) == d->type);
    CHECK(d->n >= 1 && d->n <= NS_SECRET_KEYS_MAX);
    for (size_t i = 0; i < d->n; i++) {
        const ns_secret_key *k = &d->keys[i];
        size_t idlen = strnlen(k->id, sizeof(k->id));

        CHECK(idlen >= 1 && idlen < sizeof(k->id));
        if (i == 0)
            CHECK(k->state == NS_KEY_CURRENT);
        else if (i == 1)
            CHECK(k->state == NS_KEY_PENDING || k->state == NS_KEY_PREVIOUS);
        else
            CHECK(k->state == NS_KEY_PREVIOUS);
        CHECK(k->material != NULL && k->material->len >= 1);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(d->keys[j].id, k->id) != 0);
    }
}

static bool same_doc(const ns_secret_doc *a, const ns_secret_doc *b)
{
    if (a->type != b->type || a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        const ns_secret_key *x = &a->keys[i], *y = &b->keys[i];
        if (strcmp(x->id, y->id) != 0 || x->state != y->state || x->created_at != y->created_at ||
            x->material->len != y->material->len ||
            memcmp(x->material->data, y->material->data, x->material->len) != 0)
            return false;
    }
    return true;
}

/* Whether p[0..n) and q[0..m) are the same JSON value. Both must parse. */
static bool same_json(const uint8_t *p, size_t n, const uint8_t *q, size_t m)
{
    json_error_t err;
    json_t *a = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &err);
    json_t *b = json_loadb((const char *)q, m, JSON_REJECT_DUPLICATES, &err);
    bool same;

    CHECK(a != NULL && b != NULL);
    same = json_equal(a, b) == 1;
    json_decref(a);
    json_decref(b);
    return same;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool initialised;
    static ns_secret_doc untouched;
    ns_secret_doc *d = &untouched, *d2 = NULL;
    ns_buf *s1 = NULL, *s2 = NULL;
    int r;

    if (!initialised) {
        ns_log_set_level(NS_LOG_ERROR);
        initialised = true;
    }
    r = ns_doc_parse(data, size, &d);
    if (r != 0) {
        CHECK(r == NS_E_FORMAT || r == NS_E_VERSION || r == NS_E_TOO_LARGE);
        CHECK(d == &untouched);
        return 0;
    }
    CHECK(d != NULL && d != &untouched);
    check_doc(d);

    CHECK(ns_doc_serialize(d, &s1) == 0);
    CHECK(ns_doc_parse(s1->data, s1->len, &d2) == 0);
    CHECK(same_doc(d, d2));
    CHECK(ns_doc_serialize(d2, &s2) == 0);
    CHECK(s1->len == s2->len && memcmp(s1->data, s2->data, s1->len) == 0);
    CHECK(same_json(data, size, s1->data, s1->len));

    ns_buf_free(s2);
    ns_buf_free(s1);
    ns_doc_free(d2);
    ns_doc_free(d);
    return 0;
}
