#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/codec.h"
#include "common/json.h"
#include "common/log.h"
#include "common/secmem.h"
#include "keys/aead.h"
#include "secrets/document.h"

/* Bounds on the JSON text: 16 RSA-4096 keys are ~55 KiB; 16 opaque keys of 64 KiB ~1.4 MiB of base64, so
 * the envelope's 1 MiB plaintext limit is the real cap, checked when sealing. */
#define DOC_TEXT_MAX (1u << 20)

static const char *const state_names[] = {
    [NS_KEY_CURRENT] = "current", [NS_KEY_PENDING] = "pending", [NS_KEY_PREVIOUS] = "previous"};

const char *ns_key_state_name(enum ns_key_state s)
{
    return s >= NS_KEY_CURRENT && s <= NS_KEY_PREVIOUS ? state_names[s] : "?";
}

void ns_time_format(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int ns_time_parse(const char *s, int64_t *out)
{
    struct tm tm;
    const char *end;
    char back[32];
    time_t t;

    memset(&tm, 0, sizeof(tm));
    if (strlen(s) != 20 || (end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm)) == NULL || *end != '\0')
        return NS_E_FORMAT;
    t = timegm(&tm);
    ns_time_format((int64_t)t, back);
    if (strcmp(back, s) != 0) /* no 2026-02-30 */
        return NS_E_FORMAT;
    *out = (int64_t)t;
    return 0;
}

void ns_secret_key_clear(ns_secret_key *k)
{
    ns_buf_free(k->material);
    memset(k, 0, sizeof(*k));
}

void ns_doc_free(ns_secret_doc *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->n; i++)
        ns_secret_key_clear(&d->keys[i]);
    free(d);
}

static int valid_random_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= NS_KEY_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'A' && id[i] <= 'Z') || (id[i] >= 'a' && id[i] <= 'z') ||
              (id[i] >= '0' && id[i] <= '9') || id[i] == '-' || id[i] == '_'))
            return 0;
    return 1;
}

/* The id a key must carry: the thumbprint for key pairs. */
static int keypair_id(const ns_keytype *t, const ns_buf *material, char id[NS_KEY_ID_MAX])
{
    EVP_PKEY *k = NULL;
    int r;
    if ((r = ns_keytype_from_pkcs8(material->data, material->len, t, &k)) == 0)
        r = ns_keytype_thumbprint(k, id);
    EVP_PKEY_free(k);
    return r;
}

int ns_doc_make_key(const ns_keytype *t, const uint8_t *from, size_t from_len, size_t random_len,
                    ns_secret_key *k)
{
    EVP_PKEY *pkey = NULL;
    uint8_t rid[16], *w;
    char *b64 = NULL;
    int r = NS_E_INTERNAL;

    memset(k, 0, sizeof(*k));
    k->created_at = (int64_t)time(NULL);
    k->state = NS_KEY_CURRENT;
    switch (t->kind) {
    case NS_KIND_KEYPAIR:
        if (from == NULL) {
            r = ns_keytype_generate(t, &pkey);
        } else if ((r = ns_keytype_from_pem(from, from_len, &pkey)) == NS_E_NOT_FOUND) {
            /* Not PEM: maybe PKCS#8 DER. */
            r = ns_keytype_from_pkcs8(from, from_len, NULL, &pkey);
            if (r != 0)
                ns_log(NS_LOG_ERROR, "the file holds no private key (PEM or PKCS#8 DER)");
        }
        if (r != 0)
            goto out;
        {
            const ns_keytype *got;
            if ((r = ns_keytype_classify(pkey, &got)) != 0)
                goto out;
            if (got != t) {
                ns_log(NS_LOG_ERROR, "the imported key is %s, not %s", got->name, t->name);
                r = NS_E_INVAL;
                goto out;
            }
        }
        if ((r = ns_keytype_to_pkcs8(pkey, &k->material)) != 0 ||
            (r = ns_keytype_thumbprint(pkey, k->id)) != 0)
            goto out;
        break;
    case NS_KIND_RANDOM:
        if (from != NULL) {
            ns_log(NS_LOG_ERROR,
                   "random secrets are generated, not imported (use type opaque to import bytes)");
            r = NS_E_INVAL;
            goto out;
        }
        if (random_len == 0 || random_len > NS_RANDOM_MAX) {
            ns_log(NS_LOG_ERROR, "random secrets are 1 to %u bytes", NS_RANDOM_MAX);
            r = NS_E_INVAL;
            goto out;
        }
        if ((r = ns_buf_new(random_len, true, &k->material)) != 0 ||
            (r = ns_buf_extend(k->material, random_len, &w)) != 0 || (r = ns_random(w, random_len)) != 0)
            goto out;
        break;
    case NS_KIND_OPAQUE:
        if (from == NULL || from_len == 0 || from_len > NS_OPAQUE_MAX) {
            ns_log(NS_LOG_ERROR, "opaque secrets are imported from a file of 1 to %u bytes", NS_OPAQUE_MAX);
            r = NS_E_INVAL;
            goto out;
        }
        if ((r = ns_buf_from(from, from_len, from_len, true, &k->material)) != 0)
            goto out;
        break;
    }
    if (t->kind != NS_KIND_KEYPAIR) {
        if ((r = ns_random(rid, sizeof(rid))) != 0 || (r = ns_b64url_encode(rid, sizeof(rid), &b64)) != 0)
            goto out;
        snprintf(k->id, sizeof(k->id), "%s", b64);
    }
    r = 0;
out:
    free(b64);
    EVP_PKEY_free(pkey);
    if (r != 0)
        ns_secret_key_clear(k);
    return r;
}

int ns_doc_new(const ns_keytype *t, ns_secret_key *k, ns_secret_doc **out)
{
    ns_secret_doc *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NS_E_NOMEM;
    d->type = t;
    d->keys[0] = *k;
    d->keys[0].state = NS_KEY_CURRENT;
    d->n = 1;
    memset(k, 0, sizeof(*k));
    *out = d;
    return 0;
}

static int has_pending(const ns_secret_doc *d)
{
    return d->n > 1 && d->keys[1].state == NS_KEY_PENDING;
}

int ns_doc_rotate(ns_secret_doc *d, ns_secret_key *k, int pending)
{
    size_t at = pending ? 1 : 0;

    if (has_pending(d)) {
        ns_log(NS_LOG_ERROR, "a pending key (%s) exists: promote or retire it first", d->keys[1].id);
        return NS_E_CONFLICT;
    }
    if (d->n == NS_SECRET_KEYS_MAX) {
        ns_log(NS_LOG_ERROR, "the secret already holds %d keys: retire old ones first", NS_SECRET_KEYS_MAX);
        return NS_E_CONFLICT;
    }
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->keys[i].id, k->id) == 0) {
            ns_log(NS_LOG_ERROR, "key %s is already in the secret", k->id);
            return NS_E_CONFLICT;
        }
    memmove(&d->keys[at + 1], &d->keys[at], (d->n - at) * sizeof(d->keys[0]));
    d->keys[at] = *k;
    d->keys[at].state = pending ? NS_KEY_PENDING : NS_KEY_CURRENT;
    d->n++;
    for (size_t i = at + 1; i < d->n; i++)
        d->keys[i].state = NS_KEY_PREVIOUS;
    memset(k, 0, sizeof(*k));
    return 0;
}

int ns_doc_promote(ns_secret_doc *d)
{
    ns_secret_key tmp;

    if (!has_pending(d)) {
        ns_log(NS_LOG_ERROR, "the secret has no pending key to promote");
        return NS_E_CONFLICT;
    }
    tmp = d->keys[0];
    d->keys[0] = d->keys[1];
    d->keys[1] = tmp;
    d->keys[0].state = NS_KEY_CURRENT;
    d->keys[1].state = NS_KEY_PREVIOUS;
    return 0;
}

int ns_doc_retire(ns_secret_doc *d, char removed_id[NS_KEY_ID_MAX])
{
    ns_secret_key *last = &d->keys[d->n - 1];

    if (d->n == 1) {
        ns_log(NS_LOG_ERROR, "refusing to retire the only key");
        return NS_E_CONFLICT;
    }
    if (last->state == NS_KEY_PENDING) {
        ns_log(NS_LOG_ERROR, "refusing to retire the pending key %s: promote it first", last->id);
        return NS_E_CONFLICT;
    }
    if (removed_id != NULL)
        snprintf(removed_id, NS_KEY_ID_MAX, "%s", last->id);
    ns_secret_key_clear(last);
    d->n--;
    return 0;
}

int ns_doc_key_pkey(const ns_secret_doc *d, size_t i, EVP_PKEY **out)
{
    if (d->type->kind != NS_KIND_KEYPAIR || i >= d->n)
        return NS_E_INVAL;
    return ns_keytype_from_pkcs8(d->keys[i].material->data, d->keys[i].material->len, d->type, out);
}

/* ---- JSON ---- */

static int b64_member(json_t *o, const char *key, const ns_buf *b)
{
    char *s = NULL;
    int r;
    if ((r = ns_b64_encode(b->data, b->len, &s)) != 0)
        return r;
    r = json_object_set_new(o, key, json_string(s)) == 0 ? 0 : NS_E_NOMEM;
    ns_wipe(s, strlen(s));
    free(s);
    return r;
}

int ns_doc_serialize(const ns_secret_doc *d, ns_buf **out)
{
    json_t *root = NULL, *keys = NULL;
    char *text = NULL;
    int r = NS_E_NOMEM;

    ns_json_init();
    if ((root = json_object()) == NULL || (keys = json_array()) == NULL)
        goto out;
    if (json_object_set_new(root, "format", json_string(NS_DOC_FORMAT)) != 0 ||
        json_object_set_new(root, "version", json_integer(NS_DOC_VERSION)) != 0 ||
        json_object_set_new(root, "type", json_string(d->type->name)) != 0 ||
        json_object_set(root, "keys", keys) != 0)
        goto out;
    for (size_t i = 0; i < d->n; i++) {
        const ns_secret_key *k = &d->keys[i];
        json_t *o = json_object();
        char when[32];
        ns_time_format(k->created_at, when);
        if (o == NULL || json_array_append_new(keys, o) != 0)
            goto out;
        if (json_object_set_new(o, "id", json_string(k->id)) != 0 ||
            json_object_set_new(o, "created_at", json_string(when)) != 0 ||
            json_object_set_new(o, "state", json_string(ns_key_state_name(k->state))) != 0)
            goto out;
        if ((r = b64_member(o, d->type->kind == NS_KIND_KEYPAIR ? "pkcs8" : "data", k->material)) != 0)
            goto out;
        r = NS_E_NOMEM;
    }
    /* Compact: a document that parsed always fits again when written back. */
    if ((text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
        goto out;
    r = ns_buf_from(text, strlen(text), DOC_TEXT_MAX, true, out);
out:
    if (text != NULL)
        ns_json_free(text); /* wiped: it holds private keys */
    json_decref(keys);
    json_decref(root);
    return r;
}

/* Exactly these members, of these types. */
static int check_members(json_t *o, const char *const *names, size_t n)
{
    const char *key;
    json_t *v;
    if (!json_is_object(o) || json_object_size(o) != n)
        return NS_E_FORMAT;
    json_object_foreach(o, key, v)
    {
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(key, names[i]) == 0)
                break;
        if (i == n)
            return NS_E_FORMAT;
    }
    return 0;
}

static int parse_key(json_t *o, const ns_keytype *t, size_t index, ns_secret_key *k)
{
    const char *keypair_names[] = {"id", "created_at", "state", "pkcs8"};
    const char *data_names[] = {"id", "created_at", "state", "data"};
    const char *id, *when, *state, *b64;
    char want[NS_KEY_ID_MAX];
    int r;

    memset(k, 0, sizeof(*k));
    if ((r = check_members(o, t->kind == NS_KIND_KEYPAIR ? keypair_names : data_names, 4)) != 0)
        return r;
    id = json_string_value(json_object_get(o, "id"));
    when = json_string_value(json_object_get(o, "created_at"));
    state = json_string_value(json_object_get(o, "state"));
    b64 = json_string_value(json_object_get(o, t->kind == NS_KIND_KEYPAIR ? "pkcs8" : "data"));
    if (id == NULL || when == NULL || state == NULL || b64 == NULL || strlen(id) >= NS_KEY_ID_MAX)
        return NS_E_FORMAT;
    snprintf(k->id, sizeof(k->id), "%s", id);
    if ((r = ns_time_parse(when, &k->created_at)) != 0)
        return r;
    if (strcmp(state, "current") == 0 && index == 0)
        k->state = NS_KEY_CURRENT;
    else if (strcmp(state, "pending") == 0 && index == 1)
        k->state = NS_KEY_PENDING;
    else if (strcmp(state, "previous") == 0 && index > 0)
        k->state = NS_KEY_PREVIOUS;
    else
        return NS_E_FORMAT;
    if ((r = ns_b64_decode(b64, strlen(b64), true, &k->material)) != 0)
        return r;
    switch (t->kind) {
    case NS_KIND_KEYPAIR:
        if ((r = keypair_id(t, k->material, want)) != 0)
            return NS_E_FORMAT;
        if (strcmp(want, k->id) != 0)
            return NS_E_FORMAT;
        break;
    case NS_KIND_RANDOM:
        if (k->material->len == 0 || k->material->len > NS_RANDOM_MAX || !valid_random_id(k->id))
            return NS_E_FORMAT;
        break;
    case NS_KIND_OPAQUE:
        if (k->material->len == 0 || k->material->len > NS_OPAQUE_MAX || !valid_random_id(k->id))
            return NS_E_FORMAT;
        break;
    }
    return 0;
}

int ns_doc_parse(const uint8_t *p, size_t n, ns_secret_doc **out)
{
    static const char *const root_names[] = {"format", "version", "type", "keys"};
    ns_secret_doc *d = NULL;
    json_t *root = NULL, *keys;
    json_error_t jerr;
    const char *format, *type;
    int r = NS_E_FORMAT;

    ns_json_init();
    if (n > DOC_TEXT_MAX)
        return NS_E_TOO_LARGE;
    if ((root = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr)) == NULL)
        goto out;
    if ((r = check_members(root, root_names, 4)) != 0)
        goto out;
    r = NS_E_FORMAT;
    format = json_string_value(json_object_get(root, "format"));
    type = json_string_value(json_object_get(root, "type"));
    keys = json_object_get(root, "keys");
    if (format == NULL || strcmp(format, NS_DOC_FORMAT) != 0 ||
        !json_is_integer(json_object_get(root, "version")))
        goto out;
    if (json_integer_value(json_object_get(root, "version")) != NS_DOC_VERSION) {
        r = NS_E_VERSION;
        goto out;
    }
    if (type == NULL || !json_is_array(keys) || json_array_size(keys) == 0 ||
        json_array_size(keys) > NS_SECRET_KEYS_MAX)
        goto out;
    if ((d = calloc(1, sizeof(*d))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((d->type = ns_keytype_find(type)) == NULL)
        goto out;
    for (size_t i = 0; i < json_array_size(keys); i++) {
        r = parse_key(json_array_get(keys, i), d->type, i, &d->keys[i]);
        d->n = i + 1; /* so that ns_doc_free clears what was parsed */
        if (r != 0)
            goto out;
        for (size_t j = 0; j < i; j++)
            if (strcmp(d->keys[j].id, d->keys[i].id) == 0) {
                r = NS_E_FORMAT;
                goto out;
            }
    }
    *out = d;
    d = NULL;
    r = 0;
out:
    ns_doc_free(d);
    json_decref(root);
    return r;
}
