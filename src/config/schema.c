#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fdio.h"
#include "common/log.h"
#include "common/secmem.h"
#include "common/strv.h"
#include "common/timeutil.h"
#include "config/schema.h"

/* ---- values ---- */

bool ns_cfg_chars(const char *s, size_t min, size_t max, const char *set)
{
    size_t n = strlen(s);

    return n >= min && n <= max && strspn(s, set) == n;
}

bool ns_cfg_bytes(const char *s, size_t min, size_t max, unsigned lo, unsigned hi)
{
    size_t n = strlen(s);

    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < lo || (unsigned char)s[i] > hi)
            return false;
    return n >= min && n <= max;
}

bool ns_cfg_valid_name(const char *s)
{
    return ns_cfg_chars(s, 1, 63, NS_CFG_ALNUM "._-") && strchr(NS_CFG_ALNUM, s[0]) != NULL;
}

bool ns_cfg_valid_env_name(const char *s)
{
    return ns_cfg_chars(s, 1, 128, NS_CFG_ALNUM "_") && !(s[0] >= '0' && s[0] <= '9');
}

/* The host part of a URL's authority ("host" or "host:port"), for the plain-http rule below. */
static bool local_authority(const char *a, size_t n)
{
    static const char *const hosts[] = {"127.0.0.1", "localhost", "[::1]", "169.254.169.254", NULL};

    for (size_t i = 0; hosts[i] != NULL; i++) {
        size_t h = strlen(hosts[i]);
        if (n < h || strncmp(a, hosts[i], h) != 0)
            continue;
        if (n == h)
            return true;
        if (a[h] != ':' || n == h + 1)
            continue;
        for (size_t j = h + 1; j < n; j++)
            if (a[j] < '0' || a[j] > '9')
                return false;
        return true;
    }
    return false;
}

bool ns_config_url_ok(const char *s)
{
    const char *host, *end;
    size_t n = strlen(s);
    bool https = strncmp(s, "https://", 8) == 0;

    if (n > 1024 || (!https && strncmp(s, "http://", 7) != 0))
        return false;
    /* No user info (it would be a credential in every message), no query or fragment (we add our own
     * paths and queries), nothing that needs escaping. */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f ||
            strchr("?#@\\\"<>{}|^`", s[i]) != NULL)
            return false;
    host = s + (https ? 8 : 7);
    if ((end = strchr(host, '/')) == NULL)
        end = s + n;
    if (end == host || host[0] == ':')
        return false;
    return https || local_authority(host, (size_t)(end - host));
}

/* Printable ASCII, 1..2048 bytes: names and ids that go into JSON request bodies. */
bool ns_cfg_valid_printable(const char *s)
{
    return ns_cfg_bytes(s, 1, 2048, 0x20, 0x7e);
}

/* One URL path segment that needs no escaping: [A-Za-z0-9._-]{1,255}, not "." or "..". */
bool ns_cfg_valid_segment(const char *s)
{
    return ns_cfg_chars(s, 1, 255, NS_CFG_ALNUM "._-") && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Segments joined by single slashes (a Vault mount or secret path), at most 512 bytes. */
bool ns_cfg_valid_segments(const char *s)
{
    char seg[256];

    if (strlen(s) < 1 || strlen(s) > 512)
        return false;
    for (;;) {
        size_t k = strcspn(s, "/");
        if (k < 1 || k > 255)
            return false;
        memcpy(seg, s, k);
        seg[k] = '\0';
        if (!ns_cfg_valid_segment(seg))
            return false;
        if (s[k] == '\0')
            return true;
        s += k + 1;
    }
}

/* AWS region: [a-z0-9-]{1,32} (it becomes part of a host name). */
bool ns_cfg_valid_region(const char *s)
{
    return ns_cfg_chars(s, 1, 32, "abcdefghijklmnopqrstuvwxyz0123456789-") && s[0] != '-';
}

/* http(s)://HOST[:PORT] with an optional trailing '/': a host name, IPv4 or [IPv6] literal, no user name,
 * path or query (the bucket and keys are added to it). */
bool ns_cfg_valid_endpoint(const char *s)
{
    const char *h;
    size_t n;

    if (strncmp(s, "https://", 8) == 0)
        h = s + 8;
    else if (strncmp(s, "http://", 7) == 0)
        h = s + 7;
    else
        return false;
    n = strlen(h);
    if (n > 0 && h[n - 1] == '/')
        n--;
    return n > 0 && n <= 255 && strspn(h, NS_CFG_ALNUM ".-:[]") >= n && h[0] != ':' && h[0] != '.';
}

bool ns_cfg_valid_dn_value(const char *s)
{
    return ns_cfg_bytes(s, 1, 64, 0x20, 0xff) && strchr(s, 0x7f) == NULL;
}

/* `p` made absolute: kept if absolute, else joined to base_dir, itself joined to the cwd if relative. */
int ns_cfg_resolve_path(const char *base_dir, const char *p, char **out)
{
    char *cwd = NULL, *res = NULL;
    const char *parts[3];
    size_t n_parts = 0, len = 1;
    int r = NS_E_INTERNAL;

    int relative = p[0] != '/';

    /* "./a", ".//a", "././a": relative all the same (strip the dots, then the slashes they leave). */
    while (relative && p[0] == '.' && p[1] == '/') {
        p += 2;
        while (p[0] == '/')
            p++;
    }
    if (relative) {
        if (base_dir == NULL || base_dir[0] != '/') {
            if ((cwd = getcwd(NULL, 0)) == NULL) {
                r = errno == ENOMEM ? NS_E_NOMEM : NS_E_INTERNAL;
                goto out;
            }
            parts[n_parts++] = cwd;
        }
        if (base_dir != NULL && base_dir[0] != '\0' && strcmp(base_dir, ".") != 0)
            parts[n_parts++] = base_dir;
    }
    parts[n_parts++] = p;
    for (size_t i = 0; i < n_parts; i++)
        len += strlen(parts[i]) + 1;
    if ((res = malloc(len)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    res[0] = '\0';
    for (size_t i = 0; i < n_parts; i++) {
        size_t cur = strlen(res);
        if (i > 0 && (cur == 0 || res[cur - 1] != '/'))
            strcat(res, "/");
        strcat(res, parts[i]);
    }
    *out = res;
    res = NULL;
    r = 0;
out:
    free(cwd);
    free(res);
    return r;
}

/* A scalar that is a string (not null) and not empty. `what` names it in messages. */
int ns_cfg_expect_string(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what)
{
    if (v->kind != NS_CFG_SCALAR || ns_cfg_node_is_null(v))
        return ns_cfg_fail(c, v->line, "%s: expected a string, got %s", what, ns_cfg_node_type_name(v));
    if (v->len == 0)
        return ns_cfg_fail(c, v->line, "%s: must not be empty", what);
    return 0;
}

int ns_cfg_expect_kind(ns_cfg_ctx *c, const ns_cfg_node *v, enum ns_cfg_kind kind, const char *what)
{
    if (v->kind != kind || ns_cfg_node_is_null(v))
        return ns_cfg_fail(c, v->line, "%s: expected %s, got %s", what,
                           kind == NS_CFG_MAP ? "a mapping" : "a sequence", ns_cfg_node_type_name(v));
    return 0;
}

/* "a, b or c" */
static void list_choices(const char *const *choices, char *out, size_t n)
{
    size_t k = 0;

    out[0] = '\0';
    while (choices[k] != NULL)
        k++;
    for (size_t i = 0; i < k; i++) {
        const char *sep = i == 0 ? "" : (i + 1 == k ? " or " : ", ");
        size_t cur = strlen(out);
        snprintf(out + cur, n - cur, "%s%s", sep, choices[i]);
    }
}

/* Keys must be distinct strings from the table (or the discriminator). Checked in document order, so the
 * first offender in the file is the one reported. */
static int check_keys(ns_cfg_ctx *c, const ns_cfg_node *m, const char *path, const ns_cfg_spec *spec)
{
    char q[NS_CFG_QUOTE_MAX + 4];

    for (size_t i = 0; i < m->n; i += 2) {
        const ns_cfg_node *k = m->items[i];
        bool known = false;

        if (k->kind != NS_CFG_SCALAR || ns_cfg_node_is_null(k))
            return ns_cfg_fail(c, k->line, "%s%skeys must be strings, got %s", path ? path : "",
                               path ? ": " : "", ns_cfg_node_type_name(k));
        if (spec->disc != NULL && strcmp(k->value, spec->disc) == 0)
            known = true;
        for (size_t f = 0; !known && f < spec->n_fields; f++)
            known = strcmp(k->value, spec->fields[f].key) == 0;
        ns_cfg_quote(k->value, q);
        if (!known && path == NULL)
            return ns_cfg_fail(c, k->line, "unknown top-level key '%s'", q);
        if (!known)
            return ns_cfg_fail(c, k->line, "unknown key '%s' in %s", q, path);
        for (size_t j = 0; j < i; j += 2)
            if (strcmp(m->items[j]->value, k->value) == 0)
                return ns_cfg_fail(c, k->line, "duplicate key '%s%s%s' (first on line %d)", path ? path : "",
                                   path ? "." : "", k->value, m->items[j]->line);
    }
    return 0;
}

static int parse_uint(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, unsigned min, unsigned max,
                      unsigned *out)
{
    char q[NS_CFG_QUOTE_MAX + 4];
    unsigned long val = 0;
    size_t i;

    if (v->kind != NS_CFG_SCALAR || ns_cfg_node_is_null(v) || !v->plain)
        return ns_cfg_fail(c, v->line, "%s: expected an integer, got %s", what,
                           v->kind == NS_CFG_SCALAR && !ns_cfg_node_is_null(v) ? "a quoted string"
                                                                               : ns_cfg_node_type_name(v));
    /* Decimal digits only, no sign and no leading zero (YAML 1.1 would read "010" as octal). */
    for (i = 0; i < v->len && i < 10; i++) {
        if (v->value[i] < '0' || v->value[i] > '9')
            break;
        val = val * 10 + (unsigned long)(v->value[i] - '0');
    }
    if (i != v->len || i == 0 || (v->len > 1 && v->value[0] == '0')) {
        ns_cfg_quote(v->value, q);
        return ns_cfg_fail(c, v->line, "%s: expected an integer, got '%s'", what, q);
    }
    if (val < min || val > max)
        return ns_cfg_fail(c, v->line, "%s: %lu is out of range (%u..%u)", what, val, min, max);
    *out = (unsigned)val;
    return 0;
}

static int parse_duration(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, unsigned min, unsigned max,
                          int64_t *out)
{
    char q[NS_CFG_QUOTE_MAX + 4], lo[24], hi[24];
    int64_t secs = 0;
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_expect_string(c, v, what)) != 0)
        return r;
    if (min == 0 && (strcmp(v->value, "0s") == 0 || strcmp(v->value, "0") == 0)) { /* "off" */
        *out = 0;
        return 0;
    }
    if (ns_duration_parse(v->value, &secs) != 0) {
        ns_cfg_quote(v->value, q);
        return ns_cfg_fail(c, v->line, "%s: '%s' is not a duration (a number and a unit: 90s, 5m, 24h, 30d)",
                           what, q);
    }
    if (secs < (int64_t)min || secs > (int64_t)max) {
        ns_duration_format(min, lo);
        ns_duration_format(max, hi);
        return ns_cfg_fail(c, v->line, "%s: %s is out of range (%s..%s)", what, v->value, lo, hi);
    }
    *out = secs;
    return 0;
}

/* A string value of field f: not empty, one of its choices, passing its rule. */
static int check_string(ns_cfg_ctx *c, const ns_cfg_field *f, const ns_cfg_node *v, const char *what)
{
    char q[NS_CFG_QUOTE_MAX + 4], list[256];
    size_t ci = 0;
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_expect_string(c, v, what)) != 0)
        return r;
    if (f->choices != NULL) {
        while (f->choices[ci] != NULL && strcmp(f->choices[ci], v->value) != 0)
            ci++;
        if (f->choices[ci] == NULL) {
            ns_cfg_quote(v->value, q);
            list_choices(f->choices, list, sizeof(list));
            return ns_cfg_fail(c, v->line, "%s: unknown value '%s' (expected %s)", what, q, list);
        }
    }
    if (f->valid == NULL || f->valid(v->value))
        return 0;
    if (f->secret)
        return ns_cfg_fail(c, v->line, "%s: %s", what, f->rule);
    ns_cfg_quote(v->value, q);
    return ns_cfg_fail(c, v->line, "%s: %s (got '%s')", what, f->rule, q);
}

static int parse_strv(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, const ns_cfg_field *f,
                      ns_strv *out)
{
    char item[300];
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_expect_kind(c, v, NS_CFG_SEQ, what)) != 0)
        return r;
    for (size_t i = 0; i < v->n; i++) {
        const ns_cfg_node *it = v->items[i];
        snprintf(item, sizeof(item), "%s[%zu]", what, i);
        if ((r = check_string(c, f, it, item)) != 0)
            return r;
        for (size_t j = 0; j < out->n; j++)
            if (strcmp(out->v[j], it->value) == 0)
                return ns_cfg_fail(c, it->line, "%s: listed twice", item);
        if ((r = ns_strv_push(out, it->value)) != 0)
            return r;
    }
    return 0;
}

static size_t field_index(const ns_cfg_spec *spec, const char *key)
{
    for (size_t i = 0; i < spec->n_fields; i++)
        if (strcmp(spec->fields[i].key, key) == 0)
            return i;
    return spec->n_fields;
}

/* YAML 1.2 core booleans, unquoted: true/false (also True/TRUE, False/FALSE). Nothing else ("yes", "on",
 * "1") so that a typo is an error rather than a guess. */
static int parse_bool(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, bool *out)
{
    char q[NS_CFG_QUOTE_MAX + 4];

    if (v->kind == NS_CFG_SCALAR && v->plain &&
        (strcmp(v->value, "true") == 0 || strcmp(v->value, "True") == 0 || strcmp(v->value, "TRUE") == 0)) {
        *out = true;
        return 0;
    }
    if (v->kind == NS_CFG_SCALAR && v->plain &&
        (strcmp(v->value, "false") == 0 || strcmp(v->value, "False") == 0 ||
         strcmp(v->value, "FALSE") == 0)) {
        *out = false;
        return 0;
    }
    if (v->kind != NS_CFG_SCALAR || ns_cfg_node_is_null(v))
        return ns_cfg_fail(c, v->line, "%s: expected true or false, got %s", what, ns_cfg_node_type_name(v));
    ns_cfg_quote(v->value, q);
    return ns_cfg_fail(c, v->line, "%s: expected true or false, got '%s'", what, q);
}

/* The value v of field f into slot (its member of the struct being filled). */
static int parse_value(ns_cfg_ctx *c, const ns_cfg_field *f, const ns_cfg_node *v, const char *what,
                       void *slot)
{
    int lines[NS_CFG_MAX_FIELDS];
    size_t var = 0;
    int r = NS_E_INTERNAL;

    switch (f->type) {
    case NS_CFG_MAPPING:
        return ns_cfg_parse_map(c, v, what, f->sub, slot, &var, lines);
    case NS_CFG_UINT:
        return parse_uint(c, v, what, f->min, f->max, slot);
    case NS_CFG_OWN:
        return f->parse(c, v, what, slot);
    case NS_CFG_STRV:
        return parse_strv(c, v, what, f, slot);
    case NS_CFG_DURATION:
        return parse_duration(c, v, what, f->min, f->max, slot);
    case NS_CFG_BOOL:
        return parse_bool(c, v, what, slot);
    case NS_CFG_STR:
    case NS_CFG_PATH:
        break;
    }
    if ((r = check_string(c, f, v, what)) != 0)
        return r;
    if (f->type == NS_CFG_PATH)
        return ns_cfg_resolve_path(c->base_dir, v->value, slot);
    return (*(char **)slot = strdup(v->value)) == NULL ? NS_E_NOMEM : 0;
}

/* Check mapping `m` at `path` against `spec` and fill `obj`. `*variant` gets the discriminator's index (0
 * without one) and `lines[f]` the line of field f (0 when absent). The struct is filled as it goes; the
 * caller frees it on failure. */
int ns_cfg_parse_map(ns_cfg_ctx *c, const ns_cfg_node *m, const char *path, const ns_cfg_spec *spec,
                     void *obj, size_t *variant, int lines[NS_CFG_MAX_FIELDS])
{
    char what[256], q[NS_CFG_QUOTE_MAX + 4], list[256];
    size_t var = 0;
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_expect_kind(c, m, NS_CFG_MAP, path)) != 0)
        goto out;
    if ((r = check_keys(c, m, path, spec)) != 0)
        goto out;
    memset(lines, 0, NS_CFG_MAX_FIELDS * sizeof(lines[0]));

    if (spec->disc != NULL) {
        const ns_cfg_node *dv = NULL;
        for (size_t i = 0; i < m->n; i += 2)
            if (strcmp(m->items[i]->value, spec->disc) == 0)
                dv = m->items[i + 1];
        snprintf(what, sizeof(what), "%s.%s", path, spec->disc);
        if (dv == NULL) {
            r = ns_cfg_fail(c, m->line, "missing required key '%s'", what);
            goto out;
        }
        if ((r = ns_cfg_expect_string(c, dv, what)) != 0)
            goto out;
        while (spec->variants[var] != NULL && strcmp(spec->variants[var], dv->value) != 0)
            var++;
        if (spec->variants[var] == NULL) {
            ns_cfg_quote(dv->value, q);
            list_choices(spec->variants, list, sizeof(list));
            r = ns_cfg_fail(c, dv->line, "%s: unknown %s '%s' (expected %s)", what, spec->disc, q, list);
            goto out;
        }
    }

    for (size_t i = 0; i < m->n; i += 2) {
        const ns_cfg_node *k = m->items[i], *v = m->items[i + 1];
        const ns_cfg_field *f = NULL;
        size_t fi;

        if (spec->disc != NULL && strcmp(k->value, spec->disc) == 0)
            continue;
        /* The row for this key and variant, else the first row of the key (check_keys() made sure
         * there is one) to report the key as not valid here. */
        for (fi = 0; fi < spec->n_fields; fi++)
            if (strcmp(k->value, spec->fields[fi].key) == 0 && (spec->fields[fi].allowed & (1u << var)))
                break;
        if (fi == spec->n_fields)
            fi = field_index(spec, k->value);
        f = &spec->fields[fi];
        lines[fi] = k->line;
        snprintf(what, sizeof(what), "%s.%s", path, f->key);
        if (!(f->allowed & (1u << var))) {
            r = ns_cfg_fail(c, k->line, "%s: key '%s' is not valid for %s %s", path, f->key, spec->disc,
                            spec->variants[var]);
            goto out;
        }
        if ((r = parse_value(c, f, v, what, (char *)obj + f->off)) != 0)
            goto out;
    }

    for (size_t fi = 0; fi < spec->n_fields; fi++) {
        if ((spec->fields[fi].required & (1u << var)) && lines[fi] == 0) {
            snprintf(what, sizeof(what), "%s.%s", path, spec->fields[fi].key);
            if (spec->disc != NULL)
                r = ns_cfg_fail(c, m->line, "missing required key '%s' (for %s %s)", what, spec->disc,
                                spec->variants[var]);
            else
                r = ns_cfg_fail(c, m->line, "missing required key '%s'", what);
            goto out;
        }
    }
    *variant = var;
    r = 0;
out:
    return r;
}

/* Free every string a spec's fields point to in obj (wiped first: a uri may carry pin-value, a role id is
 * a credential), recursing into nested mappings. Rows that share a member are harmless: the slot is
 * NULL after the first. */
int ns_cfg_parse_struct(ns_cfg_ctx *c, const ns_cfg_node *m, const char *path, const ns_cfg_spec *spec,
                        void *obj, int *line)
{
    int lines[NS_CFG_MAX_FIELDS];
    size_t var = 0;

    *line = m->line;
    return ns_cfg_parse_map(c, m, path, spec, obj, &var, lines);
}

void ns_cfg_clear(const ns_cfg_spec *spec, void *obj)
{
    for (size_t i = 0; i < spec->n_fields; i++) {
        const ns_cfg_field *f = &spec->fields[i];
        char **slot = (char **)((char *)obj + f->off);

        if (f->type == NS_CFG_MAPPING) {
            ns_cfg_clear(f->sub, (char *)obj + f->off);
            continue;
        }
        if (f->type == NS_CFG_STRV) {
            ns_strv *sv = (ns_strv *)((char *)obj + f->off);
            for (size_t j = 0; j < sv->n; j++)
                ns_wipe(sv->v[j], strlen(sv->v[j])); /* a key URI may carry pin-value */
            ns_strv_clear(sv);
            continue;
        }
        if ((f->type != NS_CFG_STR && f->type != NS_CFG_PATH) || *slot == NULL)
            continue;
        ns_wipe(*slot, strlen(*slot));
        free(*slot);
        *slot = NULL;
    }
}

/* The line of `key` in an entry (whichever row matched), 0 when absent. */
int ns_cfg_key_line(const ns_cfg_spec *spec, const int lines[NS_CFG_MAX_FIELDS], const char *key)
{
    int line = 0;

    for (size_t i = 0; i < spec->n_fields; i++)
        if (strcmp(spec->fields[i].key, key) == 0 && lines[i] > line)
            line = lines[i];
    return line;
}

int ns_cfg_set_default(char **slot, const char *value)
{
    if (*slot != NULL)
        return 0;
    return (*slot = strdup(value)) == NULL ? NS_E_NOMEM : 0;
}

/* `a` and `b` must not both be set. */
int ns_cfg_exclusive(ns_cfg_ctx *c, const ns_cfg_spec *spec, const int lines[NS_CFG_MAX_FIELDS],
                     const char *path, const char *a, const char *b)
{
    int la = ns_cfg_key_line(spec, lines, a), lb = ns_cfg_key_line(spec, lines, b);

    if (la != 0 && lb != 0)
        return ns_cfg_fail(c, la > lb ? la : lb, "%s: '%s' and '%s' exclude each other", path, a, b);
    return 0;
}

int ns_cfg_parse_sections(ns_cfg_ctx *c, const ns_cfg_node *root, const ns_cfg_spec *spec, void *obj)
{
    int r = NS_E_INTERNAL;

    if (root->kind != NS_CFG_MAP)
        return ns_cfg_fail(c, root->line, "the top level must be a mapping, got %s",
                           ns_cfg_node_type_name(root));
    /* Keys first, in document order: unknown and duplicate keys are reported where they are. */
    if ((r = check_keys(c, root, NULL, spec)) != 0)
        return r;
    for (size_t s = 0; s < spec->n_fields; s++) {
        const ns_cfg_field *f = &spec->fields[s];
        const ns_cfg_node *v = ns_cfg_map_get(root, f->key);
        if (v == NULL && f->required)
            return ns_cfg_fail(c, root->line, "missing required key '%s'", f->key);
        if (v != NULL && (r = parse_value(c, f, v, f->key, (char *)obj + f->off)) != 0)
            return r;
    }
    return 0;
}

int ns_cfg_read_file(const char *path, ns_buf **text, char **dir_out)
{
    char *dir = NULL, *slash;
    ns_buf *b = NULL;
    struct stat st;
    int fd = -1;
    int r = NS_E_INTERNAL;

    if (path == NULL || text == NULL || dir_out == NULL) {
        r = NS_E_INVAL;
        goto out;
    }
    /* O_NONBLOCK: a FIFO must not hang us before the regular-file check. */
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
        int e = errno;
        ns_log(NS_LOG_ERROR, "%s: cannot open the config: %s", path, strerror(e));
        r = (e == ENOENT || e == ENOTDIR) ? NS_E_NOT_FOUND : NS_E_CONFIG;
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ns_log(NS_LOG_ERROR, "%s: not a regular file", path);
        r = NS_E_CONFIG;
        goto out;
    }
    /* The cap holds for files growing under us too. */
    if (st.st_size > (off_t)NS_CFG_MAX_BYTES || (r = ns_fd_read_all(fd, NS_CFG_MAX_BYTES, false, &b)) != 0) {
        if (r == NS_E_STORAGE)
            ns_log(NS_LOG_ERROR, "%s: cannot read the config: %s", path, strerror(errno));
        else if (r != NS_E_NOMEM)
            ns_log(NS_LOG_ERROR, "%s: the config is larger than %u bytes", path, NS_CFG_MAX_BYTES);
        r = r == NS_E_NOMEM ? r : NS_E_CONFIG;
        goto out;
    }
    if ((slash = strrchr(path, '/')) != NULL &&
        (dir = strndup(path, slash == path ? 1 : (size_t)(slash - path))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    *text = b;
    *dir_out = dir;
    b = NULL;
    dir = NULL;
    r = 0;
out:
    if (b != NULL)
        ns_wipe(b->data, b->len); /* may hold a pin-value */
    ns_buf_free(b);
    free(dir);
    if (fd >= 0)
        close(fd);
    return r;
}
