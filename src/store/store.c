#include "ns-build.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "store/backends.h"
#include "store/store.h"

struct ns_store {
    const ns_store_ops *ops;
    void *state;
};

/* Every backend, chosen by storage.backend. Adding one means one file and one line here. */
static const ns_store_ops *const backends[] = {
    &ns_store_file_ops,
    &ns_store_s3_ops,
};

static bool name_char_ok(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

int ns_store_name_check(const char *name)
{
    size_t len, seg = 0;

    if (name == NULL)
        return NS_E_NAME;
    /* strnlen: never scan further than one byte past the limit, however long the input. */
    len = strnlen(name, NS_NAME_MAX + 1);
    if (len == 0 || len > NS_NAME_MAX)
        return NS_E_NAME;
    /* The terminating NUL (i == len) closes the last segment like a '/'. */
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/' || c == '\0') {
            if (seg == 0) /* leading '/', trailing '/' or "//" */
                return NS_E_NAME;
            seg = 0;
            continue;
        }
        if (!name_char_ok(c))
            return NS_E_NAME;
        /* A leading '.' rules out ".", ".." and hidden files (temp files are ".<leaf>.ns-tmp.*"). */
        if (seg == 0 && c == '.')
            return NS_E_NAME;
        if (++seg > NS_SEGMENT_MAX)
            return NS_E_NAME;
    }
    return 0;
}

/* A list prefix is looser than a name: it may be "", end with '/', or end inside a segment ("cluster/sec").
 * It must still be made of name characters and '/', not start with '/', and never contain a ".." segment, so
 * that no backend can be steered outside its root. Prefixes that no valid name can start with (such as
 * "a//" or "a/./") are accepted here and simply match nothing. */
static int prefix_check(const char *prefix)
{
    size_t len, seg_start = 0;

    if (prefix == NULL)
        return NS_E_NAME;
    len = strnlen(prefix, NS_NAME_MAX + 1);
    if (len > NS_NAME_MAX)
        return NS_E_NAME;
    if (prefix[0] == '/')
        return NS_E_NAME;
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = (unsigned char)prefix[i];
        if (c == '/' || c == '\0') {
            if (i - seg_start == 2 && prefix[seg_start] == '.' && prefix[seg_start + 1] == '.')
                return NS_E_NAME;
            seg_start = i + 1;
            continue;
        }
        if (!name_char_ok(c))
            return NS_E_NAME;
    }
    return 0;
}

int ns_store_open(const ns_storage_config *cfg, ns_store **out)
{
    ns_store *st = NULL;
    const ns_store_ops *ops = NULL;
    int r = NS_E_INTERNAL;

    if (cfg == NULL || cfg->backend == NULL) {
        ns_log(NS_LOG_ERROR, "storage: no backend configured");
        r = NS_E_CONFIG;
        goto out;
    }
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        if (strcmp(backends[i]->name, cfg->backend) == 0) {
            ops = backends[i];
            break;
        }
    }
    if (ops == NULL) {
        ns_log(NS_LOG_ERROR, "storage: unknown backend '%s' (line %d)", cfg->backend, cfg->line);
        r = NS_E_CONFIG;
        goto out;
    }
    if ((st = calloc(1, sizeof(*st))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    st->ops = ops;
    if ((r = ops->open(cfg, &st->state)) != 0)
        goto out;
    *out = st;
    st = NULL;
    r = 0;
out:
    free(st); /* the backend state is only set on success, so nothing else to release */
    return r;
}

void ns_store_close(ns_store *st)
{
    if (st == NULL)
        return;
    st->ops->close(st->state);
    free(st);
}

int ns_store_get(ns_store *st, const char *name, size_t max, ns_buf **data, char **version)
{
    int r = NS_E_INTERNAL;

    if (st == NULL)
        return NS_E_INVAL;
    if ((r = ns_store_name_check(name)) != 0)
        return r;
    return st->ops->get(st->state, name, max, data, version);
}

int ns_store_put(ns_store *st, const char *name, const uint8_t *p, size_t n, enum ns_put_mode mode,
                 const char *if_match)
{
    int r = NS_E_INTERNAL;

    if (st == NULL || (p == NULL && n != 0))
        return NS_E_INVAL;
    if ((r = ns_store_name_check(name)) != 0)
        return r;
    switch (mode) {
    case NS_PUT_REPLACE:
    case NS_PUT_CREATE:
        break;
    case NS_PUT_IF_MATCH:
        if (if_match == NULL)
            return NS_E_INVAL;
        break;
    default:
        return NS_E_INVAL;
    }
    return st->ops->put(st->state, name, p, n, mode, if_match);
}

/* On success the backend replaces the contents of *out (any strings it held are freed). */
int ns_store_list(ns_store *st, const char *prefix, ns_strv *out)
{
    int r = NS_E_INTERNAL;

    if (st == NULL || out == NULL)
        return NS_E_INVAL;
    if ((r = prefix_check(prefix)) != 0)
        return r;
    return st->ops->list(st->state, prefix, out);
}

int ns_store_delete(ns_store *st, const char *name)
{
    int r = NS_E_INTERNAL;

    if (st == NULL)
        return NS_E_INVAL;
    if ((r = ns_store_name_check(name)) != 0)
        return r;
    return st->ops->del(st->state, name);
}
