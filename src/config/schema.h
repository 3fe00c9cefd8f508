/* The schema engine: a mapping of the config tree (config/tree.h) checked against a table of fields and
 * stored into a struct, the generic value rules, and a table of top-level sections. It knows no section:
 * each module describes its own (store/store_config.h, keys/kek_config.h, ca/ca_config.h, ...) and the
 * product lists them in one table (settings/settings.c).
 *
 * A mapping is described by a spec: an optional discriminator key (`source`, `backend`) whose value picks
 * one variant, and a table of fields, each stored at an offset into the target struct and allowed or
 * required per variant (bit i = variant i; a spec without discriminator has the single variant 0).
 * Strings are checked by choices (an enum) or valid(); a failed check names `rule` and the value, quoted
 * (never the value of a `secret` field). */
#ifndef NS_CONFIG_SCHEMA_H
#define NS_CONFIG_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "config/tree.h"

enum ns_cfg_type {
    NS_CFG_STR,
    NS_CFG_PATH,     /* a string made absolute against the config's folder */
    NS_CFG_UINT,     /* decimal, min..max */
    NS_CFG_BOOL,     /* true or false */
    NS_CFG_MAPPING,  /* a nested mapping described by `sub`, at off (0: fields of the same struct) */
    NS_CFG_DURATION, /* "90s", "5m", "24h", "30d" into an int64_t of seconds (min..max seconds) */
    NS_CFG_STRV,     /* a sequence of distinct strings (each checked by valid()) into an ns_strv */
    NS_CFG_OWN,      /* any node: checked and stored by parse() */
};

struct ns_cfg_spec;

/* A key may appear in several rows, each for other variants (e.g. `name`: a variable name for env, a
 * parameter name for aws-parameter-store); the row allowed for the entry's variant is used. */
typedef struct ns_cfg_field {
    const char *key;
    enum ns_cfg_type type;
    size_t off;        /* of a char * (STR, PATH), unsigned (UINT), bool (BOOL), struct (MAPPING), int64_t
                          (DURATION), ns_strv (STRV), whatever parse() takes (OWN) */
    unsigned allowed;  /* variants in which the key may appear */
    unsigned required; /* variants in which it must */
    const char *const *choices; /* STR: the allowed values, NULL-terminated; NULL: any */
    bool (*valid)(const char *v);
    const char *rule;              /* what valid() checks, for the message */
    bool secret;                   /* never quote the value in a message; wiped on free */
    unsigned min, max;             /* UINT, DURATION */
    const struct ns_cfg_spec *sub; /* MAPPING */
    int (*parse)(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *slot); /* OWN */
} ns_cfg_field;

typedef struct ns_cfg_spec {
    const char *disc;            /* discriminator key, or NULL */
    const char *const *variants; /* discriminator values, NULL-terminated; index = variant */
    const ns_cfg_field *fields;
    size_t n_fields;
} ns_cfg_spec;

#define NS_CFG_MAX_FIELDS 48
/* Table rows for member m of struct T: allowed in the one variant of a spec without discriminator (ROW),
 * or in the variants `allow` and required in `req` (VROW). Further designated initializers follow. */
#define NS_CFG_ROW(T, k, t, m, ...)                                                                          \
    {                                                                                                        \
        .key = k, .type = t, .off = offsetof(T, m), .allowed = 1u, __VA_ARGS__                               \
    }
#define NS_CFG_VROW(T, k, t, m, allow, req, ...)                                                             \
    {                                                                                                        \
        .key = k, .type = t, .off = offsetof(T, m), .allowed = allow, .required = req, __VA_ARGS__           \
    }
#define NS_CFG_SPEC(disc, variants, fields)                                                                  \
    {                                                                                                        \
        disc, variants, fields, sizeof(fields) / sizeof(fields[0])                                           \
    }

/* Check mapping `m` at `path` against `spec` and fill `obj`. `*variant` gets the discriminator's index (0
 * without one) and `lines[f]` the line of field f's key (0 when absent). The struct is filled as it goes;
 * the caller frees it (ns_cfg_clear) on failure. */
int ns_cfg_parse_map(ns_cfg_ctx *c, const ns_cfg_node *m, const char *path, const ns_cfg_spec *spec,
                     void *obj, size_t *variant, int lines[NS_CFG_MAX_FIELDS]) NS_WUR;

/* The same for a spec without discriminator; *line gets the mapping's line. */
int ns_cfg_parse_struct(ns_cfg_ctx *c, const ns_cfg_node *m, const char *path, const ns_cfg_spec *spec,
                        void *obj, int *line) NS_WUR;

/* Free (wiped first) every string and string list the spec's fields point to in obj, nested mappings too.
 * Rows that share a member are harmless: the slot is NULL after the first. */
void ns_cfg_clear(const ns_cfg_spec *spec, void *obj);

/* The line of `key` in a parsed mapping (whichever row matched), 0 when absent. */
int ns_cfg_key_line(const ns_cfg_spec *spec, const int lines[NS_CFG_MAX_FIELDS], const char *key);

/* `a` and `b` must not both be set. */
int ns_cfg_exclusive(ns_cfg_ctx *c, const ns_cfg_spec *spec, const int lines[NS_CFG_MAX_FIELDS],
                     const char *path, const char *a, const char *b) NS_WUR;

/* A scalar that is a string (not null) and not empty; `what` names it in messages. */
int ns_cfg_expect_string(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what) NS_WUR;
int ns_cfg_expect_kind(ns_cfg_ctx *c, const ns_cfg_node *v, enum ns_cfg_kind kind, const char *what) NS_WUR;

/* `p` made absolute: kept if absolute, else joined to base_dir, itself joined to the cwd if relative. */
int ns_cfg_resolve_path(const char *base_dir, const char *p, char **out) NS_WUR;

/* *slot = strdup(value) unless already set. */
int ns_cfg_set_default(char **slot, const char *value) NS_WUR;

/* ---- generic value rules ---- */

#define NS_CFG_ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
/* min..max bytes, each in `set` / each in lo..hi. */
bool ns_cfg_chars(const char *s, size_t min, size_t max, const char *set);
bool ns_cfg_bytes(const char *s, size_t min, size_t max, unsigned lo, unsigned hi);

/* [A-Za-z0-9][A-Za-z0-9._-]{0,62}: cluster ids, shards, template and group names. */
bool ns_cfg_valid_name(const char *s);
#define NS_CFG_RULE_NAME "[A-Za-z0-9][A-Za-z0-9._-]*, at most 63 characters"
bool ns_cfg_valid_env_name(const char *s);
#define NS_CFG_RULE_ENV                                                                                      \
    "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128 characters)"
/* Printable ASCII, 1..2048 bytes: names and ids that go into JSON request bodies. */
bool ns_cfg_valid_printable(const char *s);
#define NS_CFG_RULE_PRINT "must be 1 to 2048 printable ASCII characters"
/* One URL path segment that needs no escaping: [A-Za-z0-9._-]{1,255}, not "." or "..". */
bool ns_cfg_valid_segment(const char *s);
#define NS_CFG_RULE_SEG "must be 1 to 255 of A-Z a-z 0-9 . _ - (and not . or ..)"
/* Segments joined by single slashes (a Vault mount or secret path), at most 512 bytes. */
bool ns_cfg_valid_segments(const char *s);
#define NS_CFG_RULE_SEGS "must be segments of A-Z a-z 0-9 . _ - joined by single '/' (at most 512 characters)"
/* AWS region: [a-z0-9-]{1,32} (it becomes part of a host name). */
bool ns_cfg_valid_region(const char *s);
/* http(s)://HOST[:PORT] with an optional trailing '/': no user name, path or query. */
bool ns_cfg_valid_endpoint(const char *s);
#define NS_CFG_RULE_ENDPOINT                                                                                 \
    "must be http://HOST[:PORT] or https://HOST[:PORT], with no path, query or user name"
/* 1..64 characters, no control characters: a value of a certificate subject. */
bool ns_cfg_valid_dn_value(const char *s);

/* The URL rule of every KEK source endpoint: "https://host[:port][/path]", or "http://" to 127.0.0.1,
 * localhost, [::1] or 169.254.169.254; no user info, query, fragment, spaces or characters that need
 * escaping; at most 1024 bytes. Also applied to URLs that come from files (a Google key's token_uri). */
bool ns_config_url_ok(const char *url);
#define NS_CFG_RULE_URL                                                                                      \
    "must be an https:// URL without user, query or fragment (http:// only to 127.0.0.1, localhost, "        \
    "[::1] or 169.254.169.254)"

/* ---- top-level sections ---- */

/* The root mapping: its keys are the rows of `spec` (no discriminator), each parsed like a field of a
 * mapping, in table order (not the file's). Unknown and duplicate keys are reported where they are. */
int ns_cfg_parse_sections(ns_cfg_ctx *c, const ns_cfg_node *root, const ns_cfg_spec *spec, void *obj) NS_WUR;

/* Read the config file at `path` (a regular file of at most NS_CFG_MAX_BYTES) into *text (wipe it before
 * freeing) and its folder into *dir (NULL when the path has none). NS_E_NOT_FOUND if it is missing,
 * NS_E_CONFIG for the rest; logged. */
int ns_cfg_read_file(const char *path, ns_buf **text, char **dir) NS_WUR;

#endif
