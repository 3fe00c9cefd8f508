#include "ns-build.h"

#include <inttypes.h>
#include <string.h>

#include <jansson.h>

#include "common/log.h"
#include "common/strv.h"
#include "jwt/ledger.h"

/* Pruning of the used-nonce markers in the store (cluster/nonce-used/<hex>): a marker whose nonce expired
 * before `before` can go, because that nonce fails verification on its exp alone. */

#define MARKER_MAX 256 /* markers are about 50 bytes; anything bigger is not one of ours */

/* The exp of a marker's content, or -1 when it is not a marker we wrote ({"exp":N,"used_at":N}). */
static int64_t marker_exp(const ns_buf *b)
{
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)b->data, b->len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *exp = json_object_get(doc, "exp");
    int64_t v = -1;

    if (json_is_object(doc) && json_is_integer(exp) && json_integer_value(exp) >= 0)
        v = (int64_t)json_integer_value(exp);
    json_decref(doc);
    return v;
}

static bool marker_name_ok(const char *name)
{
    const char *hex = name + strlen(NS_LEDGER_PREFIX);

    if (strlen(hex) != 2 * NS_LEDGER_KEY_LEN)
        return false;
    for (; *hex != '\0'; hex++)
        if (!((*hex >= '0' && *hex <= '9') || (*hex >= 'a' && *hex <= 'f')))
            return false;
    return true;
}

int ns_ledger_prune_markers(ns_store *st, int64_t before, bool dry_run, ns_marker_stats *stats)
{
    ns_strv names = {0};
    int r;

    memset(stats, 0, sizeof(*stats));
    if ((r = ns_store_list(st, NS_LEDGER_PREFIX, &names)) != 0)
        return r;
    for (size_t i = 0; i < names.n; i++) {
        ns_buf *b = NULL;
        int64_t exp = -1;

        stats->seen++;
        if (!marker_name_ok(names.v[i])) {
            ns_log(NS_LOG_WARN, "nonce markers: %s is not a marker's name; left alone", names.v[i]);
            stats->foreign++;
            continue;
        }
        r = ns_store_get(st, names.v[i], MARKER_MAX, &b, NULL);
        if (r == NS_E_NOT_FOUND) { /* pruned by someone else meanwhile */
            stats->seen--;
            continue;
        }
        if (r == 0)
            exp = marker_exp(b);
        ns_buf_free(b);
        if (r != 0 && r != NS_E_TOO_LARGE)
            goto out;
        if (exp < 0) {
            ns_log(NS_LOG_WARN, "nonce markers: %s does not hold a marker's content; left alone", names.v[i]);
            stats->foreign++;
            continue;
        }
        if (exp >= before) {
            stats->kept++;
            continue;
        }
        if (!dry_run && (r = ns_store_delete(st, names.v[i])) != 0 && r != NS_E_NOT_FOUND)
            goto out;
        stats->removed++;
    }
    r = 0;
out:
    ns_strv_clear(&names);
    return r;
}
