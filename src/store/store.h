/* Object storage: a small interface with one backend per file (store_file.c, store_s3.c), chosen by
 * `storage.backend` from one static table in store.c.
 *
 * Object names: 1..NS_NAME_MAX bytes of segments separated by '/'; each segment 1..NS_SEGMENT_MAX bytes of
 * [A-Za-z0-9._-], not starting with '.' (so "." and ".." and hidden files are impossible); no leading or
 * trailing '/', no empty segment. Checked by ns_store_name_check() before any backend sees a name.
 *
 * Versions: get() can return an opaque version string for the object's current content; put() with
 * NS_PUT_IF_MATCH succeeds only if the object still has that version (compare-and-swap). What a version
 * looks like is the backend's business (file: SHA-256 hex of the content; s3: the ETag, quotes included):
 * callers only keep it and hand it back. */
#ifndef NS_STORE_STORE_H
#define NS_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/strv.h"
#include "store/store_config.h"

#define NS_NAME_MAX    512
#define NS_SEGMENT_MAX 128

enum ns_put_mode {
    NS_PUT_REPLACE = 0, /* create or atomically replace */
    NS_PUT_CREATE =
        1, /* create only; NS_E_EXISTS if the object exists (also when a concurrent creator won) */
    NS_PUT_IF_MATCH = 2, /* replace only if the current version equals if_match; NS_E_CONFLICT otherwise,
                            NS_E_NOT_FOUND if it no longer exists */
};

typedef struct ns_store_ops {
    const char *name;
    int (*open)(const ns_storage_config *cfg, void **state);
    /* data: new buffer (not secret) of at most max bytes (NS_E_TOO_LARGE if the object is bigger);
     * version: if not NULL, a new malloc'd string. NS_E_NOT_FOUND if absent. */
    int (*get)(void *state, const char *name, size_t max, ns_buf **data, char **version);
    int (*put)(void *state, const char *name, const uint8_t *p, size_t n, enum ns_put_mode mode,
               const char *if_match);
    /* Names starting with prefix (a plain string prefix, may be ""), sorted. */
    int (*list)(void *state, const char *prefix, ns_strv *out);
    /* NS_E_NOT_FOUND if absent. */
    int (*del)(void *state, const char *name);
    void (*close)(void *state);
} ns_store_ops;

typedef struct ns_store ns_store;

int ns_store_open(const ns_storage_config *cfg, ns_store **out) NS_WUR;
void ns_store_close(ns_store *st);

int ns_store_get(ns_store *st, const char *name, size_t max, ns_buf **data, char **version) NS_WUR;
int ns_store_put(ns_store *st, const char *name, const uint8_t *p, size_t n, enum ns_put_mode mode,
                 const char *if_match) NS_WUR;
int ns_store_list(ns_store *st, const char *prefix, ns_strv *out) NS_WUR;
int ns_store_delete(ns_store *st, const char *name) NS_WUR;

/* 0 if name is a valid object name, NS_E_NAME otherwise. */
int ns_store_name_check(const char *name) NS_WUR;

#endif
