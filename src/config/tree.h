/* The config file as a tree of YAML nodes, built from libyaml's events, and the messages about it.
 *
 * Every refusal is one error line "origin:line: message" (ns_cfg_fail) and NS_E_CONFIG. The tree holds
 * scalars, sequences and mappings only: anchors, aliases, tags, several documents and NUL bytes are
 * refused with their line, and size, depth and node count are capped. */
#ifndef NS_CONFIG_TREE_H
#define NS_CONFIG_TREE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

#define NS_CFG_MAX_BYTES (1024u * 1024u) /* larger files are refused */
#define NS_CFG_QUOTE_MAX 64              /* quoted values in messages are cut to this many bytes */

enum ns_cfg_kind { NS_CFG_SCALAR, NS_CFG_SEQ, NS_CFG_MAP };

typedef struct ns_cfg_node {
    enum ns_cfg_kind kind;
    int line;                   /* 1-based */
    char *value;                /* scalar: NUL-terminated (embedded NULs are refused) */
    size_t len;                 /* scalar: strlen(value) */
    bool plain;                 /* scalar: unquoted, so "", "~" and "null" are YAML null */
    struct ns_cfg_node **items; /* seq: items; map: key, value, key, value, ... */
    size_t n;                   /* number of entries in items */
    size_t cap;
} ns_cfg_node;

/* One parse: where the text came from (messages) and what relative paths are relative to. */
typedef struct ns_cfg_ctx {
    const char *origin;
    const char *base_dir;
} ns_cfg_ctx;

/* Parse `text` (n bytes) into one tree: exactly one non-empty document. */
int ns_cfg_tree_build(ns_cfg_ctx *c, const char *text, size_t n, ns_cfg_node **out) NS_WUR;

/* Frees and wipes every value (a value may be a PIN). */
void ns_cfg_node_free(ns_cfg_node *nd);

bool ns_cfg_node_is_null(const ns_cfg_node *nd);

/* "null", "a string", "a sequence" or "a mapping", for messages. */
const char *ns_cfg_node_type_name(const ns_cfg_node *nd);

/* The value of `key` in mapping m, or NULL. */
const ns_cfg_node *ns_cfg_map_get(const ns_cfg_node *m, const char *key);

/* Log one error line "origin:line: message" and return NS_E_CONFIG. */
int ns_cfg_fail(const ns_cfg_ctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A value or key for a message: at most NS_CFG_QUOTE_MAX bytes, control bytes replaced, and anything that
 * looks like it could carry a PIN (a PKCS#11 URI, misplaced under the wrong key) withheld altogether. */
void ns_cfg_quote(const char *s, char out[NS_CFG_QUOTE_MAX + 4]);

#endif
