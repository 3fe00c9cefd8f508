#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include "common/codec.h"
#include "common/log.h"
#include "keys/keyring.h"
#include "keys/source.h"

int ns_keyring_load_soft(const ns_kek_config *kc, ns_kek **out)
{
    char desc[NS_SOURCE_DESC_MAX];
    ns_buf *key = NULL;
    int r = NS_E_INTERNAL;

    ns_kek_source_describe(kc, desc, sizeof(desc));
    if ((r = ns_kek_source_fetch(kc, desc, &key)) != 0)
        goto out;
    if ((r = ns_kek_soft_new(key->data, desc, out)) != 0)
        goto out;
    ns_log(NS_LOG_INFO, "loaded encryption key from %s", desc);
    r = 0;
out:
    ns_buf_free(key);
    return r;
}

static int load_one(const ns_keys_config *cfg, const ns_kek_config *kc, ns_kek **out)
{
    if (kc->source == NS_KEK_SRC_PKCS11)
        return ns_kek_pkcs11_open(kc, cfg->sessions ? cfg->sessions : 4, out);
    return ns_keyring_load_soft(kc, out);
}

static int check_duplicates(const ns_keyring *kr)
{
    for (size_t i = 0; i < kr->n; i++)
        for (size_t j = i + 1; j < kr->n; j++)
            if (kr->e[i].kek && kr->e[j].kek &&
                memcmp(kr->e[i].kek->id, kr->e[j].kek->id, NS_KEK_ID_LEN) == 0) {
                char hex[2 * NS_KEK_ID_LEN + 1];
                ns_hex_encode(kr->e[i].kek->id, NS_KEK_ID_LEN, hex);
                ns_log(NS_LOG_ERROR, "the same key (id %s) is configured twice: %s and %s", hex,
                       kr->e[i].kek->source, kr->e[j].kek->source);
                return NS_E_CONFIG;
            }
    return 0;
}

int ns_keyring_load(const ns_keys_config *cfg, int mode, ns_keyring **out)
{
    ns_keyring *kr = NULL;
    int r = NS_E_INTERNAL;

    if (cfg->primary == NULL) {
        ns_log(NS_LOG_ERROR, "%s: no encryption_key configured", cfg->origin);
        return NS_E_CONFIG;
    }
    if ((kr = calloc(1, sizeof(*kr))) == NULL || (kr->e = calloc(1 + cfg->n_old, sizeof(*kr->e))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    kr->cfg = cfg;
    kr->mode = mode;
    for (size_t i = 0; i < 1 + cfg->n_old; i++) {
        ns_keyring_entry *e = &kr->e[kr->n++];
        e->cfg = i == 0 ? cfg->primary : &cfg->old[i - 1];
        e->primary = i == 0;
        e->status = load_one(cfg, e->cfg, &e->kek);
        if (e->status != 0) {
            ns_log(NS_LOG_ERROR, "%s:%d: %s encryption key could not be loaded: %s", cfg->origin,
                   e->cfg->line, e->primary ? "primary" : "old", ns_strerror(e->status));
            if (mode == NS_KEYRING_STRICT) {
                r = e->status;
                goto out;
            }
        }
    }
    /* A key configured twice is a configuration mistake in every mode. */
    if ((r = check_duplicates(kr)) != 0)
        goto out;
    *out = kr;
    kr = NULL;
    r = 0;
out:
    ns_keyring_free(kr);
    return r;
}

int ns_keyring_from_keks(ns_kek **keks, size_t n, ns_keyring **out)
{
    ns_keyring *kr = NULL;
    int r = NS_E_INTERNAL;

    if ((kr = calloc(1, sizeof(*kr))) == NULL || (kr->e = calloc(n ? n : 1, sizeof(*kr->e))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        kr->e[i].kek = keks[i];
        kr->e[i].primary = i == 0;
        keks[i] = NULL;
    }
    kr->n = n;
    if ((r = check_duplicates(kr)) != 0)
        goto out;
    *out = kr;
    kr = NULL;
    r = 0;
out:
    ns_keyring_free(kr);
    return r;
}

int ns_keyring_reload(ns_keyring *kr)
{
    ns_keyring *fresh = NULL;
    ns_keyring_entry *old_e = NULL;
    size_t old_n = 0;
    char hex[2 * NS_KEK_ID_LEN + 1];
    int r = NS_E_INTERNAL;

    if (kr == NULL || kr->cfg == NULL) {
        r = NS_E_INVAL;
        goto out;
    }
    if ((r = ns_keyring_load(kr->cfg, kr->mode, &fresh)) != 0) {
        ns_log(NS_LOG_ERROR, "%s: reloading the encryption keys failed (%s); keeping the keys loaded before",
               kr->cfg->origin, ns_strerror(r));
        goto out;
    }
    for (size_t i = 0; i < kr->n; i++) {
        const ns_kek *k = kr->e[i].kek;
        if (k != NULL && ns_keyring_find(fresh, k->id) == NULL) {
            ns_hex_encode(k->id, NS_KEK_ID_LEN, hex);
            ns_log(NS_LOG_WARN, "reload: key %s (%s) is no longer loaded; blobs under it cannot be opened",
                   hex, k->source);
        }
    }
    for (size_t i = 0; i < fresh->n; i++) {
        const ns_kek *k = fresh->e[i].kek;
        if (k != NULL && ns_keyring_find(kr, k->id) == NULL) {
            ns_hex_encode(k->id, NS_KEK_ID_LEN, hex);
            ns_log(NS_LOG_INFO, "reload: new %s key %s (%s)", fresh->e[i].primary ? "primary" : "old", hex,
                   k->source);
        }
    }
    /* Swap the contents, so that the caller's pointer stays valid; the old entries go with `fresh`. */
    old_e = kr->e;
    old_n = kr->n;
    kr->e = fresh->e;
    kr->n = fresh->n;
    fresh->e = old_e;
    fresh->n = old_n;
    r = 0;
out:
    ns_keyring_free(fresh);
    return r;
}

void ns_keyring_free(ns_keyring *kr)
{
    if (kr == NULL)
        return;
    for (size_t i = 0; i < kr->n; i++)
        ns_kek_free(kr->e[i].kek);
    free(kr->e);
    free(kr);
}

ns_kek *ns_keyring_primary(const ns_keyring *kr)
{
    return kr->n > 0 && kr->e[0].primary ? kr->e[0].kek : NULL;
}

ns_kek *ns_keyring_find(const ns_keyring *kr, const uint8_t id[NS_KEK_ID_LEN])
{
    for (size_t i = 0; i < kr->n; i++)
        if (kr->e[i].kek != NULL && memcmp(kr->e[i].kek->id, id, NS_KEK_ID_LEN) == 0)
            return kr->e[i].kek;
    return NULL;
}
