#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "common/log.h"
#include "common/secmem.h"
#include "common/timeutil.h"
#include "config/config.h"

/* Why the event API and our own small tree: libyaml's document loader resolves aliases silently (a node
 * shared by two parents, and with it "billion laughs" expansion), drops anchors and duplicate keys without
 * trace, and gives no way to refuse any of them. Events let us refuse anchors, aliases and tags where they
 * appear, with their line, and the tree lets every section be checked against a table. */

#define CONFIG_MAX_BYTES  (1024u * 1024u) /* larger files are refused */
#define CONFIG_MAX_DEPTH  32              /* nesting of mappings and sequences */
#define CONFIG_MAX_NODES  65536           /* a real config has a few dozen */
#define QUOTE_MAX         64              /* quoted values in messages are cut to this many bytes */
#define DEFAULT_PATH      "/etc/nstance/secrets.yaml"
#define DEFAULT_SESSIONS  4u
#define DEFAULT_SHARD     "default"
#define DEFAULT_CACHE_DIR "/var/cache/nstance-secrets"
#define DEFAULT_ROLE_OID  "1.3.6.1.4.1.999999.1"
#define MAX_LEEWAY        300

/* ---- the tree ---- */

enum node_kind { NODE_SCALAR, NODE_SEQ, NODE_MAP };

typedef struct node {
    enum node_kind kind;
    int line;            /* 1-based */
    char *value;         /* scalar: NUL-terminated (embedded NULs are refused) */
    size_t len;          /* scalar: strlen(value) */
    bool plain;          /* scalar: unquoted, so "", "~" and "null" are YAML null */
    struct node **items; /* seq: items; map: key, value, key, value, ... */
    size_t n;            /* number of entries in items */
    size_t cap;
} node;

typedef struct ctx {
    const char *origin;
    const char *base_dir;
    const char *text;
    size_t n;
    size_t n_nodes;
    yaml_parser_t parser;
} ctx;

static void node_free(node *nd)
{
    if (nd == NULL)
        return;
    if (nd->value != NULL) {
        /* Values may hold a PIN (pkcs11 URIs with pin-value): wipe them all, it costs nothing. */
        ns_wipe(nd->value, nd->len);
        free(nd->value);
    }
    for (size_t i = 0; i < nd->n; i++)
        node_free(nd->items[i]);
    free(nd->items);
    free(nd);
}

static int node_push(node *parent, node *child)
{
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        node **items = realloc(parent->items, cap * sizeof(*items));
        if (items == NULL)
            return NS_E_NOMEM;
        parent->items = items;
        parent->cap = cap;
    }
    parent->items[parent->n++] = child;
    return 0;
}

static bool node_is_null(const node *nd)
{
    if (nd->kind != NODE_SCALAR || !nd->plain)
        return false;
    return nd->len == 0 || strcmp(nd->value, "~") == 0 || strcmp(nd->value, "null") == 0 ||
           strcmp(nd->value, "Null") == 0 || strcmp(nd->value, "NULL") == 0;
}

static const char *node_type_name(const node *nd)
{
    if (node_is_null(nd))
        return "null";
    switch (nd->kind) {
    case NODE_SCALAR:
        return "a string";
    case NODE_SEQ:
        return "a sequence";
    case NODE_MAP:
        return "a mapping";
    }
    return "?";
}

/* ---- messages ---- */

static int fail(const ctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Log one error line "origin:line: message" and return NS_E_CONFIG. */
static int fail(const ctx *c, int line, const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ns_log(NS_LOG_ERROR, "%s:%d: %s", c->origin, line, msg);
    return NS_E_CONFIG;
}

/* A value or key for a message: at most QUOTE_MAX bytes, control bytes replaced, and anything that looks
 * like it could carry a PIN (a PKCS#11 URI, misplaced under the wrong key) withheld altogether. */
static void quote(const char *s, char out[QUOTE_MAX + 4])
{
    size_t i;

    if (strncmp(s, "pkcs11:", 7) == 0 || strstr(s, "pin-value") != NULL) {
        strcpy(out, "(withheld)");
        return;
    }
    for (i = 0; s[i] != '\0' && i < QUOTE_MAX; i++)
        out[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (s[i] != '\0') {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
}

/* ---- building the tree from events ---- */

static int mark_line(const yaml_mark_t *m)
{
    return m->line >= (size_t)0x7fffffff ? 0x7fffffff : (int)m->line + 1;
}

static int next_event(ctx *c, yaml_event_t *ev)
{
    const yaml_parser_t *p = &c->parser;
    int line;

    if (yaml_parser_parse(&c->parser, ev))
        return 0;
    if (p->error == YAML_MEMORY_ERROR)
        return NS_E_NOMEM;
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors (bad encoding) carry a byte offset, not a mark. */
        line = 1;
        for (size_t i = 0; i < p->problem_offset && i < c->n; i++)
            if (c->text[i] == '\n' && line < 0x7fffffff)
                line++;
        return fail(c, line, "YAML error: %s", p->problem ? p->problem : "cannot read input");
    }
    line = mark_line(&p->problem_mark);
    if (p->context != NULL)
        return fail(c, line, "YAML syntax error: %s %s", p->context, p->problem ? p->problem : "");
    return fail(c, line, "YAML syntax error: %s", p->problem ? p->problem : "unknown error");
}

/* Refuse what our configs never need and what would make a node mean something other than it says. */
static int check_props(ctx *c, const yaml_event_t *ev, int line)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;

    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
        break;
    default:
        break;
    }
    if (anchor != NULL)
        return fail(c, line, "anchors and aliases are not supported");
    if (tag != NULL)
        return fail(c, line, "tags are not supported");
    return 0;
}

/* Build the node that starts with `ev` (owned by the caller), reading events up to its end. */
static int build_node(ctx *c, const yaml_event_t *ev, int depth, node **out)
{
    node *nd = NULL, *child = NULL;
    yaml_event_t sub;
    bool have_sub = false;
    enum yaml_event_type_e end;
    int line = mark_line(&ev->start_mark);
    int r = NS_E_INTERNAL;

    if (ev->type == YAML_ALIAS_EVENT) {
        r = fail(c, line, "anchors and aliases are not supported");
        goto out;
    }
    if ((r = check_props(c, ev, line)) != 0)
        goto out;
    if (++c->n_nodes > CONFIG_MAX_NODES) {
        r = fail(c, line, "too many nodes (more than %u)", CONFIG_MAX_NODES);
        goto out;
    }
    if ((nd = calloc(1, sizeof(*nd))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    nd->line = line;

    if (ev->type == YAML_SCALAR_EVENT) {
        nd->kind = NODE_SCALAR;
        nd->len = ev->data.scalar.length;
        if (memchr(ev->data.scalar.value, '\0', nd->len) != NULL) {
            r = fail(c, line, "NUL bytes are not allowed in values");
            goto out;
        }
        if ((nd->value = malloc(nd->len + 1)) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
        memcpy(nd->value, ev->data.scalar.value, nd->len);
        nd->value[nd->len] = '\0';
        nd->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        *out = nd;
        nd = NULL;
        r = 0;
        goto out;
    }
    if (ev->type == YAML_SEQUENCE_START_EVENT) {
        nd->kind = NODE_SEQ;
        end = YAML_SEQUENCE_END_EVENT;
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        nd->kind = NODE_MAP;
        end = YAML_MAPPING_END_EVENT;
    } else {
        r = fail(c, line, "unexpected YAML event");
        goto out;
    }
    if (depth >= CONFIG_MAX_DEPTH) {
        r = fail(c, line, "nesting deeper than %d levels", CONFIG_MAX_DEPTH);
        goto out;
    }
    for (;;) {
        if ((r = next_event(c, &sub)) != 0)
            goto out;
        have_sub = true;
        if (sub.type == end)
            break;
        if ((r = build_node(c, &sub, depth + 1, &child)) != 0)
            goto out;
        if ((r = node_push(nd, child)) != 0)
            goto out;
        child = NULL;
        yaml_event_delete(&sub);
        have_sub = false;
    }
    *out = nd;
    nd = NULL;
    r = 0;
out:
    if (have_sub)
        yaml_event_delete(&sub);
    node_free(child);
    node_free(nd);
    return r;
}

/* Parse the whole stream into one tree; exactly one non-empty document. */
static int build_tree(ctx *c, node **out)
{
    yaml_event_t ev;
    bool have_ev = false;
    node *root = NULL;
    int doc_line = 1;
    int r = NS_E_INTERNAL;

    if ((r = next_event(c, &ev)) != 0) /* STREAM-START */
        goto out;
    yaml_event_delete(&ev);
    if ((r = next_event(c, &ev)) != 0)
        goto out;
    have_ev = true;
    if (ev.type == YAML_STREAM_END_EVENT) {
        r = fail(c, mark_line(&ev.start_mark), "empty document");
        goto out;
    }
    doc_line = mark_line(&ev.start_mark); /* DOCUMENT-START */
    yaml_event_delete(&ev);
    have_ev = false;
    if ((r = next_event(c, &ev)) != 0)
        goto out;
    have_ev = true;
    if ((r = build_node(c, &ev, 0, &root)) != 0)
        goto out;
    yaml_event_delete(&ev);
    have_ev = false;
    if ((r = next_event(c, &ev)) != 0) /* DOCUMENT-END */
        goto out;
    yaml_event_delete(&ev);
    if ((r = next_event(c, &ev)) != 0)
        goto out;
    have_ev = true;
    if (ev.type != YAML_STREAM_END_EVENT) {
        r = fail(c, mark_line(&ev.start_mark), "only one YAML document is allowed");
        goto out;
    }
    if (root->kind == NODE_SCALAR && root->plain && root->len == 0) {
        r = fail(c, doc_line, "empty document");
        goto out;
    }
    *out = root;
    root = NULL;
    r = 0;
out:
    if (have_ev)
        yaml_event_delete(&ev);
    node_free(root);
    return r;
}

/* ---- values ---- */

static bool valid_cluster_id(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool alnum = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '.' && ch != '_' && ch != '-')))
            return false;
    }
    return true;
}

static bool valid_env_name(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_' ||
                  (i > 0 && ch >= '0' && ch <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* RFC 7512 §2.3: the scheme is "pkcs11:". */
static bool valid_pkcs11_uri(const char *s)
{
    return strncmp(s, "pkcs11:", 7) == 0;
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
static bool valid_printable(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 2048)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* One URL path segment that needs no escaping: [A-Za-z0-9._-]{1,255}, not "." or "..". */
static bool valid_segment(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 255 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* S3 bucket names: 3-63 of [a-z0-9.-], first and last a letter or digit, no "..". */
static bool valid_bucket(const char *s)
{
    size_t n = strlen(s);

    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && ((ch != '.' && ch != '-') || i == 0 || i == n - 1))
            return false;
        if (ch == '.' && s[i + 1] == '.')
            return false;
    }
    return true;
}

/* Folder names as object names have them, each followed by '/' except maybe the last. */
static bool valid_prefix(const char *s)
{
    size_t n = strlen(s), seg = 0;

    if (n == 0 || n > 256 || s[0] == '/')
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '/') {
            if (seg == 0)
                return false;
            seg = 0;
            continue;
        }
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return false;
        if (seg == 0 && ch == '.')
            return false;
        seg++;
    }
    return true;
}

/* Segments joined by single slashes (a Vault mount or secret path), at most 512 bytes. */
static bool valid_segments(const char *s)
{
    char seg[256];
    size_t n = strlen(s), start = 0;

    if (n < 1 || n > 512)
        return false;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '/')
            continue;
        if (i - start < 1 || i - start > 255)
            return false;
        memcpy(seg, s + start, i - start);
        seg[i - start] = '\0';
        if (!valid_segment(seg))
            return false;
        start = i + 1;
    }
    return true;
}

/* AWS region: [a-z0-9-]{1,32} (it becomes part of a host name). */
static bool valid_region(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 32 || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

/* http(s)://HOST[:PORT] with an optional trailing '/': a host name, IPv4 or [IPv6] literal, no user name,
 * path or query (the bucket and keys are added to it). */
static bool valid_endpoint(const char *s)
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
    if (n == 0 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = h[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '-' || ch == ':' || ch == '[' || ch == ']'))
            return false;
    }
    return h[0] != ':' && h[0] != '.';
}

/* AWS key ids are 16-128 of [A-Z0-9]; S3-compatible stores (MinIO, Ceph, s3rver) are looser. Refused:
 * what would break the Authorization header ("Credential=ID/date/...,") or a log line. */
static bool valid_access_key_id(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e || s[i] == '/' || s[i] == ',' ||
            s[i] == '=')
            return false;
    return true;
}

static bool printable_upto(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n < 1 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static bool valid_secret(const char *s)
{
    return printable_upto(s, 1024);
}

static bool valid_secret_token(const char *s)
{
    return printable_upto(s, 4096);
}

static bool valid_profile(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* `p` made absolute: kept if absolute, else joined to base_dir, itself joined to the cwd if relative. */
static int resolve_path(const char *base_dir, const char *p, char **out)
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
static int expect_string(ctx *c, const node *v, const char *what)
{
    if (v->kind != NODE_SCALAR || node_is_null(v))
        return fail(c, v->line, "%s: expected a string, got %s", what, node_type_name(v));
    if (v->len == 0)
        return fail(c, v->line, "%s: must not be empty", what);
    return 0;
}

static int expect_kind(ctx *c, const node *v, enum node_kind kind, const char *what)
{
    if (v->kind != kind || node_is_null(v))
        return fail(c, v->line, "%s: expected %s, got %s", what,
                    kind == NODE_MAP ? "a mapping" : "a sequence", node_type_name(v));
    return 0;
}

/* ---- table-driven mappings ----
 *
 * A mapping is described by a spec: an optional discriminator key (`source`, `backend`) whose value picks
 * one variant, and a table of fields, each stored at an offset into the target struct and allowed or
 * required per variant (bit i = variant i; a spec without discriminator has the single variant 0). */

enum field_type {
    F_STR,
    F_PATH,
    F_UINT,
    F_BOOL,
    F_MAP,
    F_DURATION, /* "90s", "5m", "24h", "30d" into an int64_t of seconds (min..max seconds) */
    F_STRV,     /* a sequence of strings (each checked by valid()) into an ns_strv */
    F_OWN,      /* any node: checked and stored by the section's own handler */
};

struct map_spec;

/* A key may appear in several rows, each for other variants (e.g. `name`: a variable name for env, a
 * parameter name for aws-parameter-store); the row allowed for the entry's variant is used. */
typedef struct field {
    const char *key;
    enum field_type type;
    size_t off;        /* of a char * (F_STR, F_PATH), unsigned (F_UINT), bool (F_BOOL), struct (F_MAP),
                          int64_t (F_DURATION), ns_strv (F_STRV) */
    unsigned allowed;  /* variants in which the key may appear */
    unsigned required; /* variants in which it must */
    const char *const *choices; /* F_STR: the allowed values, NULL-terminated; NULL: any */
    bool (*valid)(const char *v);
    const char *rule;           /* what valid() checks, for the message */
    bool secret;                /* never quote the value in a message */
    unsigned min, max;          /* F_UINT */
    const struct map_spec *sub; /* F_MAP: the nested mapping's spec (no discriminator) */
} field;

typedef struct map_spec {
    const char *disc;            /* discriminator key, or NULL */
    const char *const *variants; /* discriminator values, NULL-terminated; index = variant */
    const field *fields;
    size_t n_fields;
} map_spec;

#define MAX_FIELDS 48

#define V_PKCS11  (1u << 0)
#define V_FILE    (1u << 1)
#define V_ENV     (1u << 2)
#define V_VAULT   (1u << 3)
#define V_AWS_SM  (1u << 4)
#define V_AWS_SSM (1u << 5)
#define V_GCP     (1u << 6)
#define V_AZURE   (1u << 7)
#define V_AWS     (V_AWS_SM | V_AWS_SSM)
#define V_REMOTE  (V_VAULT | V_AWS | V_GCP | V_AZURE)

static const char *const kek_sources[] = {"pkcs11",
                                          "file",
                                          "env",
                                          "vault",
                                          "aws-secrets-manager",
                                          "aws-parameter-store",
                                          "google-secret-manager",
                                          "azure-key-vault",
                                          NULL};
static const enum ns_kek_source kek_source_ids[] = {NS_KEK_SRC_PKCS11, NS_KEK_SRC_FILE,    NS_KEK_SRC_ENV,
                                                    NS_KEK_SRC_VAULT,  NS_KEK_SRC_AWS_SM,  NS_KEK_SRC_AWS_SSM,
                                                    NS_KEK_SRC_GCP_SM, NS_KEK_SRC_AZURE_KV};
static const char *const kek_mechanisms[] = {"aes-gcm", "aes-kwp", "rsa-oaep", NULL};
static const char *const oaep_hashes[] = {"auto", "sha256", "sha1", NULL};

#define RULE_ENV "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128 characters)"
#define RULE_URL                                                                                             \
    "must be an https:// URL without user, query or fragment (http:// only to 127.0.0.1, localhost, "        \
    "[::1] or 169.254.169.254)"
#define RULE_SEG   "must be 1 to 255 of A-Z a-z 0-9 . _ - (and not . or ..)"
#define RULE_SEGS  "must be segments of A-Z a-z 0-9 . _ - joined by single '/' (at most 512 characters)"
#define RULE_PRINT "must be 1 to 2048 printable ASCII characters"

static const field approle_fields[] = {
    {"role_id", F_STR, offsetof(ns_vault_approle, role_id), 1u, 1u, NULL, valid_printable, RULE_PRINT, true,
     0, 0, NULL},
    {"secret_id_file", F_PATH, offsetof(ns_vault_approle, secret_id_file), 1u, 1u, NULL, NULL, NULL, false, 0,
     0, NULL},
    {"mount", F_STR, offsetof(ns_vault_approle, mount), 1u, 0, NULL, valid_segments, RULE_SEGS, false, 0, 0,
     NULL},
};
static const map_spec approle_spec = {NULL, NULL, approle_fields,
                                      sizeof(approle_fields) / sizeof(approle_fields[0])};

#define KF(key, type, member, allowed, required, valid, rule)                                                \
    {                                                                                                        \
        key, type, offsetof(ns_kek_config, member), allowed, required, NULL, valid, rule, false, 0, 0, NULL  \
    }

static const field kek_fields[] = {
    {"uri", F_STR, offsetof(ns_kek_config, uri), V_PKCS11, V_PKCS11, NULL, valid_pkcs11_uri,
     "must be a PKCS#11 URI starting with \"pkcs11:\"", true, 0, 0, NULL},
    {"mechanism", F_STR, offsetof(ns_kek_config, mechanism), V_PKCS11, V_PKCS11, kek_mechanisms, NULL, NULL,
     false, 0, 0, NULL},
    {"oaep_hash", F_STR, offsetof(ns_kek_config, oaep_hash), V_PKCS11, 0, oaep_hashes, NULL, NULL, false, 0,
     0, NULL},
    KF("pin_env", F_STR, pin_env, V_PKCS11, 0, valid_env_name, RULE_ENV),
    KF("path", F_PATH, path, V_FILE, V_FILE, NULL, NULL),
    KF("name", F_STR, name, V_ENV, V_ENV, valid_env_name, RULE_ENV),
    /* vault */
    KF("address", F_STR, address, V_VAULT, V_VAULT, ns_config_url_ok, RULE_URL),
    KF("mount", F_STR, mount, V_VAULT, 0, valid_segments, RULE_SEGS),
    KF("path", F_STR, kv_path, V_VAULT, V_VAULT, valid_segments, RULE_SEGS),
    KF("field", F_STR, field, V_VAULT, V_VAULT, valid_printable, RULE_PRINT),
    KF("token_env", F_STR, token_env, V_VAULT, 0, valid_env_name, RULE_ENV),
    KF("token_file", F_PATH, token_file, V_VAULT, 0, NULL, NULL),
    KF("namespace", F_STR, vault_namespace, V_VAULT, 0, valid_segments, RULE_SEGS),
    {"approle", F_MAP, offsetof(ns_kek_config, approle), V_VAULT, 0, NULL, NULL, NULL, false, 0, 0,
     &approle_spec},
    /* aws */
    KF("secret_id", F_STR, secret_id, V_AWS_SM, V_AWS_SM, valid_printable, RULE_PRINT),
    KF("version_stage", F_STR, version_stage, V_AWS_SM, 0, valid_printable, RULE_PRINT),
    KF("name", F_STR, name, V_AWS_SSM, V_AWS_SSM, valid_printable, RULE_PRINT),
    KF("region", F_STR, region, V_AWS, V_AWS, valid_region,
       "must be an AWS region name ([a-z0-9-], at most 32)"),
    /* google */
    KF("project", F_STR, project, V_GCP, V_GCP, valid_segment, RULE_SEG),
    KF("secret", F_STR, secret, V_GCP, V_GCP, valid_segment, RULE_SEG),
    KF("credentials_file", F_PATH, credentials_file, V_GCP, 0, NULL, NULL),
    /* azure */
    KF("vault_url", F_STR, vault_url, V_AZURE, V_AZURE, ns_config_url_ok, RULE_URL),
    KF("name", F_STR, name, V_AZURE, V_AZURE, valid_segment, RULE_SEG),
    KF("tenant_id", F_STR, tenant_id, V_AZURE, 0, valid_segment, RULE_SEG),
    KF("client_id", F_STR, client_id, V_AZURE, 0, valid_segment, RULE_SEG),
    KF("client_secret_file", F_PATH, client_secret_file, V_AZURE, 0, NULL, NULL),
    KF("authority", F_STR, authority, V_AZURE, 0, ns_config_url_ok, RULE_URL),
    /* shared */
    KF("version", F_STR, version, V_GCP | V_AZURE, 0, valid_segment, RULE_SEG),
    KF("endpoint", F_STR, endpoint, V_AWS | V_GCP, 0, ns_config_url_ok, RULE_URL),
    KF("metadata_endpoint", F_STR, metadata_endpoint, V_GCP | V_AZURE, 0, ns_config_url_ok, RULE_URL),
    KF("ca_file", F_PATH, ca_file, V_REMOTE, 0, NULL, NULL),
    {"timeout", F_UINT, offsetof(ns_kek_config, timeout_s), V_REMOTE, 0, NULL, NULL, NULL, false, 1, 300,
     NULL},
    {"retries", F_UINT, offsetof(ns_kek_config, retries), V_REMOTE, 0, NULL, NULL, NULL, false, 0, 10, NULL},
};
static const map_spec kek_spec = {"source", kek_sources, kek_fields,
                                  sizeof(kek_fields) / sizeof(kek_fields[0])};
_Static_assert(sizeof(kek_fields) / sizeof(kek_fields[0]) <= MAX_FIELDS, "raise MAX_FIELDS");

#define V_STORE_FILE (1u << 0)
#define V_STORE_S3   (1u << 1)

static const char *const storage_backends[] = {"file", "s3", NULL};
static const field storage_fields[] = {
    {"path", F_PATH, offsetof(ns_storage_config, path), V_STORE_FILE, V_STORE_FILE, NULL, NULL, NULL, false,
     0, 0, NULL},
    {"bucket", F_STR, offsetof(ns_storage_config, bucket), V_STORE_S3, V_STORE_S3, NULL, valid_bucket,
     "must be an S3 bucket name (3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter "
     "or digit)",
     false, 0, 0, NULL},
    {"prefix", F_STR, offsetof(ns_storage_config, prefix), V_STORE_S3, 0, NULL, valid_prefix,
     "must be folder names ([A-Za-z0-9._-], not starting with '.') separated by single '/', not starting "
     "with "
     "'/'",
     false, 0, 0, NULL},
    {"region", F_STR, offsetof(ns_storage_config, region), V_STORE_S3, 0, NULL, valid_region,
     "must be a region name (a-z, 0-9 and '-', at most 32 characters)", false, 0, 0, NULL},
    {"endpoint", F_STR, offsetof(ns_storage_config, endpoint), V_STORE_S3, 0, NULL, valid_endpoint,
     "must be http://HOST[:PORT] or https://HOST[:PORT], with no path, query or user name", false, 0, 0,
     NULL},
    {"path_style", F_BOOL, offsetof(ns_storage_config, path_style), V_STORE_S3, 0, NULL, NULL, NULL, false, 0,
     0, NULL},
    {"ca_file", F_PATH, offsetof(ns_storage_config, ca_file), V_STORE_S3, 0, NULL, NULL, NULL, false, 0, 0,
     NULL},
};

/* Sub-mappings of storage (s3 only): storage.credentials, storage.timeouts, storage.retries. */
static const field s3_creds_fields[] = {
    {"access_key_id", F_STR, offsetof(ns_s3_creds_config, access_key_id), 1u, 0, NULL, valid_access_key_id,
     "must be an access key id (1-128 printable characters, no blank, '/', ',' or '=')", false, 0, 0, NULL},
    {"secret_access_key", F_STR, offsetof(ns_s3_creds_config, secret_access_key), 1u, 0, NULL, valid_secret,
     "must be 1-1024 printable characters", true, 0, 0, NULL},
    {"session_token", F_STR, offsetof(ns_s3_creds_config, session_token), 1u, 0, NULL, valid_secret_token,
     "must be 1-4096 printable characters", true, 0, 0, NULL},
    {"profile", F_STR, offsetof(ns_s3_creds_config, profile), 1u, 0, NULL, valid_profile,
     "must be a profile name ([A-Za-z0-9._-], at most 64 characters)", false, 0, 0, NULL},
    {"credentials_file", F_PATH, offsetof(ns_s3_creds_config, credentials_file), 1u, 0, NULL, NULL, NULL,
     false, 0, 0, NULL},
    {"imds_endpoint", F_STR, offsetof(ns_s3_creds_config, imds_endpoint), 1u, 0, NULL, valid_endpoint,
     "must be http://HOST[:PORT] or https://HOST[:PORT], with no path, query or user name", false, 0, 0,
     NULL},
    {"imds", F_BOOL, offsetof(ns_s3_creds_config, imds), 1u, 0, NULL, NULL, NULL, false, 0, 0, NULL},
};
static const map_spec s3_creds_spec = {NULL, NULL, s3_creds_fields,
                                       sizeof(s3_creds_fields) / sizeof(s3_creds_fields[0])};
static const field s3_timeouts_fields[] = {
    {"connect_ms", F_UINT, offsetof(ns_storage_config, connect_timeout_ms), 1u, 0, NULL, NULL, NULL, false, 1,
     600000, NULL},
    {"request_ms", F_UINT, offsetof(ns_storage_config, timeout_ms), 1u, 0, NULL, NULL, NULL, false, 1,
     3600000, NULL},
};
static const map_spec s3_timeouts_spec = {NULL, NULL, s3_timeouts_fields,
                                          sizeof(s3_timeouts_fields) / sizeof(s3_timeouts_fields[0])};
static const field s3_retries_fields[] = {
    {"max", F_UINT, offsetof(ns_storage_config, retries), 1u, 0, NULL, NULL, NULL, false, 0, 10, NULL},
    {"base_delay_ms", F_UINT, offsetof(ns_storage_config, retry_base_ms), 1u, 0, NULL, NULL, NULL, false, 0,
     10000, NULL},
};
static const map_spec s3_retries_spec = {NULL, NULL, s3_retries_fields,
                                         sizeof(s3_retries_fields) / sizeof(s3_retries_fields[0])};
static const map_spec storage_spec = {"backend", storage_backends, storage_fields,
                                      sizeof(storage_fields) / sizeof(storage_fields[0])};

static const field pkcs11_fields[] = {
    {"sessions", F_UINT, offsetof(ns_config, token_sessions), 1u << 0, 0, NULL, NULL, NULL, false, 1, 64,
     NULL},
};
static const map_spec pkcs11_spec = {NULL, NULL, pkcs11_fields,
                                     sizeof(pkcs11_fields) / sizeof(pkcs11_fields[0])};

static bool valid_dn_value(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static bool valid_country(const char *s)
{
    return strlen(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z';
}

/* A dotted OID of at least three arcs, digits only (no names: the value goes into certificates). */
static bool valid_oid(const char *s)
{
    size_t arcs = 0, digits = 0;
    for (size_t i = 0;; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            if (digits == 0 && s[i] == '0' && s[i + 1] >= '0' && s[i + 1] <= '9')
                return false;
            if (++digits > 9)
                return false;
        } else if (s[i] == '.' || s[i] == '\0') {
            if (digits == 0)
                return false;
            arcs++;
            digits = 0;
            if (s[i] == '\0')
                break;
        } else {
            return false;
        }
        if (i > 128)
            return false;
    }
    return arcs >= 3 && (s[0] == '0' || s[0] == '1' || s[0] == '2') && s[1] == '.';
}

static bool valid_issuer(const char *s)
{
    return valid_dn_value(s) && strlen(s) <= 128;
}

#define DAY  86400u
#define YEAR (366u * DAY)

static const field ca_fields[] = {
    {"keys", F_STRV, offsetof(ns_ca_config, keys), 1u, 0, NULL, valid_pkcs11_uri,
     "must be a PKCS#11 URI starting with \"pkcs11:\"", true, 0, 0, NULL},
    {"pin_env", F_STR, offsetof(ns_ca_config, pin_env), 1u, 0, NULL, valid_env_name,
     "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128 characters)", false, 0, 0,
     NULL},
    {"subject", F_OWN, 0, 1u, 0, NULL, NULL, NULL, false, 0, 0, NULL},
    {"validity", F_DURATION, offsetof(ns_ca_config, validity), 1u, 0, NULL, NULL, NULL, false, DAY, 50 * YEAR,
     NULL},
    {"path_len", F_UINT, offsetof(ns_ca_config, path_len), 1u, 0, NULL, NULL, NULL, false, 0, 8, NULL},
    {"role_oid", F_STR, offsetof(ns_ca_config, role_oid), 1u, 0, NULL, valid_oid,
     "must be a dotted numeric OID such as 1.3.6.1.4.1.999999.1", false, 0, 0, NULL},
    {"cert_ttl", F_DURATION, offsetof(ns_ca_config, cert_ttl), 1u, 0, NULL, NULL, NULL, false, 60, 5 * YEAR,
     NULL},
};
static const map_spec ca_spec = {NULL, NULL, ca_fields, sizeof(ca_fields) / sizeof(ca_fields[0])};

static const field subject_fields[] = {
    {"cn", F_STR, offsetof(ns_ca_config, cn), 1u, 0, NULL, valid_dn_value,
     "must be 1..64 printable characters", false, 0, 0, NULL},
    {"o", F_STR, offsetof(ns_ca_config, o), 1u, 0, NULL, valid_dn_value, "must be 1..64 printable characters",
     false, 0, 0, NULL},
    {"c", F_STR, offsetof(ns_ca_config, c), 1u, 0, NULL, valid_country,
     "must be a two-letter country code in capitals (ISO 3166)", false, 0, 0, NULL},
    {"st", F_STR, offsetof(ns_ca_config, st), 1u, 0, NULL, valid_dn_value,
     "must be 1..64 printable characters", false, 0, 0, NULL},
    {"l", F_STR, offsetof(ns_ca_config, l), 1u, 0, NULL, valid_dn_value, "must be 1..64 printable characters",
     false, 0, 0, NULL},
};
static const map_spec subject_spec = {NULL, NULL, subject_fields,
                                      sizeof(subject_fields) / sizeof(subject_fields[0])};

static const field nonce_fields[] = {
    {"keys", F_STRV, offsetof(ns_nonce_config, keys), 1u, 0, NULL, valid_pkcs11_uri,
     "must be a PKCS#11 URI starting with \"pkcs11:\"", true, 0, 0, NULL},
    {"pin_env", F_STR, offsetof(ns_nonce_config, pin_env), 1u, 0, NULL, valid_env_name,
     "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128 characters)", false, 0, 0,
     NULL},
    {"issuer", F_STR, offsetof(ns_nonce_config, issuer), 1u, 0, NULL, valid_issuer,
     "must be 1..128 printable characters", false, 0, 0, NULL},
    {"leeway", F_DURATION, offsetof(ns_nonce_config, leeway), 1u, 0, NULL, NULL, NULL, false, 1, MAX_LEEWAY,
     NULL},
    {"agent_ttl", F_DURATION, offsetof(ns_nonce_config, agent_ttl), 1u, 0, NULL, NULL, NULL, false, 10,
     30 * DAY, NULL},
    {"operator_ttl", F_DURATION, offsetof(ns_nonce_config, operator_ttl), 1u, 0, NULL, NULL, NULL, false, 10,
     30 * DAY, NULL},
};
static const map_spec nonce_spec = {NULL, NULL, nonce_fields, sizeof(nonce_fields) / sizeof(nonce_fields[0])};

/* server.listen: "HOST:PORT" with HOST an IPv4 dotted quad, "[IPv6]" or "localhost", PORT 0..65535. */
static bool valid_listen(const char *s)
{
    const char *colon = strrchr(s, ':');
    size_t hn, pn;
    unsigned long port = 0;

    if (colon == NULL || strlen(s) > 64)
        return false;
    hn = (size_t)(colon - s);
    pn = strlen(colon + 1);
    if (hn == 0 || pn == 0 || pn > 5)
        return false;
    for (size_t i = 0; i < pn; i++) {
        if (colon[1 + i] < '0' || colon[1 + i] > '9')
            return false;
        port = port * 10 + (unsigned long)(colon[1 + i] - '0');
    }
    if (port > 65535)
        return false;
    if (hn == 9 && strncmp(s, "localhost", 9) == 0)
        return true;
    if (s[0] == '[')
        return s[hn - 1] == ']' && hn > 2 && strspn(s + 1, "0123456789abcdefABCDEF:.") == hn - 2;
    return strspn(s, "0123456789.") == hn;
}

/* server.names: a DNS name or an IP literal, checked again (strictly) when the certificate is made. */
static bool valid_server_name(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 253)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:*") == n;
}

#define SERVER_RENEW_MIN_INTERVAL 60
#define SERVER_RENEW_GRACE        600

static const field server_fields[] = {
    {"listen", F_STR, offsetof(ns_server_config, listen), 1u, 0, NULL, valid_listen,
     "must be HOST:PORT with HOST an IPv4 address, [IPv6 address] or localhost", false, 0, 0, NULL},
    {"names", F_STRV, offsetof(ns_server_config, names), 1u, 0, NULL, valid_server_name,
     "must be a DNS name or an IP address", false, 0, 0, NULL},
    {"agent_cert_ttl", F_DURATION, offsetof(ns_server_config, agent_cert_ttl), 1u, 0, NULL, NULL, NULL, false,
     60, 5 * YEAR, NULL},
    {"operator_cert_ttl", F_DURATION, offsetof(ns_server_config, operator_cert_ttl), 1u, 0, NULL, NULL, NULL,
     false, 60, 5 * YEAR, NULL},
    {"max_connections", F_UINT, offsetof(ns_server_config, max_connections), 1u, 0, NULL, NULL, NULL, false,
     1, 65536, NULL},
    {"header_timeout", F_DURATION, offsetof(ns_server_config, header_timeout), 1u, 0, NULL, NULL, NULL, false,
     1, 3600, NULL},
    {"idle_timeout", F_DURATION, offsetof(ns_server_config, idle_timeout), 1u, 0, NULL, NULL, NULL, false, 1,
     DAY, NULL},
    {"cache_check", F_DURATION, offsetof(ns_server_config, cache_check), 1u, 0, NULL, NULL, NULL, false, 1,
     DAY, NULL},
    {"threads", F_UINT, offsetof(ns_server_config, threads), 1u, 0, NULL, NULL, NULL, false, 1, 64, NULL},
    /* 0s allowed (min 0): no limit, no hand-over. */
    {"renew_min_interval", F_DURATION, offsetof(ns_server_config, renew_min_interval), 1u, 0, NULL, NULL,
     NULL, false, 0, DAY, NULL},
    {"renew_grace", F_DURATION, offsetof(ns_server_config, renew_grace), 1u, 0, NULL, NULL, NULL, false, 0,
     DAY, NULL},
    {"register_burst", F_UINT, offsetof(ns_server_config, register_burst), 1u, 0, NULL, NULL, NULL, false, 1,
     1000000, NULL},
    {"register_per_minute", F_UINT, offsetof(ns_server_config, register_per_minute), 1u, 0, NULL, NULL, NULL,
     false, 1, 1000000, NULL},
};
static const map_spec server_spec = {NULL, NULL, server_fields,
                                     sizeof(server_fields) / sizeof(server_fields[0])};

/* The export formats of secrets/export.h (a layer above this one, so listed here; test-config checks the
 * server accepts each). */
static const char *const tmpl_formats[] = {"pem-bundle", "pem", "public-pem-bundle", "jwks", "raw", NULL};

/* A file path on the agent: absolute and normalised — no empty, "." or ".." segment, no trailing '/',
 * segments of [A-Za-z0-9._@+-], at most 1024 bytes. */
static bool valid_abs_path(const char *s)
{
    size_t n = strlen(s), seg = 0;

    if (n < 2 || n > 1024 || s[0] != '/' || s[n - 1] == '/')
        return false;
    for (size_t i = 1; i <= n; i++) {
        if (i == n || s[i] == '/') {
            const char *start = s + i - seg;
            if (seg == 0 || (seg == 1 && start[0] == '.') || (seg == 2 && start[0] == '.' && start[1] == '.'))
                return false;
            seg = 0;
            continue;
        }
        if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+-", s[i]) == NULL)
            return false;
        seg++;
    }
    return true;
}

/* A secret name as the CLI takes it: object-name segments ([A-Za-z0-9._-], not starting with '.'). */
static bool valid_secret_name(const char *s)
{
    size_t n = strlen(s), seg = 0;

    if (n < 1 || n > 256)
        return false;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '/') {
            if (seg == 0)
                return false;
            seg = 0;
            continue;
        }
        if (seg == 0 && s[i] == '.')
            return false;
        if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", s[i]) == NULL)
            return false;
        seg++;
    }
    return true;
}

/* A user or group name (or a numeric id): [A-Za-z0-9_][A-Za-z0-9._-]{0,31}. */
static bool valid_owner(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > 32 || s[0] == '-' || s[0] == '.')
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static const field tmpl_file_fields[] = {
    {"path", F_STR, offsetof(ns_tmpl_file, path), 1u, 1u, NULL, valid_abs_path,
     "must be an absolute, normalised path (no '..', '.', '//' or trailing '/'; [A-Za-z0-9._@+-])", false, 0,
     0, NULL},
    {"secret", F_STR, offsetof(ns_tmpl_file, secret), 1u, 0, NULL, valid_secret_name,
     "must be a secret name (segments of [A-Za-z0-9._-] separated by '/')", false, 0, 0, NULL},
    {"format", F_STR, offsetof(ns_tmpl_file, format), 1u, 0, tmpl_formats, NULL, NULL, false, 0, 0, NULL},
    {"ca_bundle", F_BOOL, offsetof(ns_tmpl_file, ca_bundle), 1u, 0, NULL, NULL, NULL, false, 0, 0, NULL},
    {"mode", F_OWN, 0, 1u, 0, NULL, NULL, NULL, false, 0, 0, NULL},
    {"owner", F_STR, offsetof(ns_tmpl_file, owner), 1u, 0, NULL, valid_owner,
     "must be a user name ([A-Za-z0-9_][A-Za-z0-9._-], at most 32)", false, 0, 0, NULL},
    {"group", F_STR, offsetof(ns_tmpl_file, group), 1u, 0, NULL, valid_owner,
     "must be a group name ([A-Za-z0-9_][A-Za-z0-9._-], at most 32)", false, 0, 0, NULL},
};
static const map_spec tmpl_file_spec = {NULL, NULL, tmpl_file_fields,
                                        sizeof(tmpl_file_fields) / sizeof(tmpl_file_fields[0])};

static const field tmpl_fields[] = {
    {"files", F_OWN, 0, 1u, 1u, NULL, NULL, NULL, false, 0, 0, NULL},
};
static const map_spec tmpl_spec = {NULL, NULL, tmpl_fields, sizeof(tmpl_fields) / sizeof(tmpl_fields[0])};

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
static int check_keys(ctx *c, const node *m, const char *path, const map_spec *spec)
{
    char q[QUOTE_MAX + 4];

    for (size_t i = 0; i < m->n; i += 2) {
        const node *k = m->items[i];
        bool known = false;

        if (k->kind != NODE_SCALAR || node_is_null(k))
            return fail(c, k->line, "%s: keys must be strings, got %s", path, node_type_name(k));
        if (spec->disc != NULL && strcmp(k->value, spec->disc) == 0)
            known = true;
        for (size_t f = 0; !known && f < spec->n_fields; f++)
            known = strcmp(k->value, spec->fields[f].key) == 0;
        if (!known) {
            quote(k->value, q);
            return fail(c, k->line, "unknown key '%s' in %s", q, path);
        }
        for (size_t j = 0; j < i; j += 2)
            if (strcmp(m->items[j]->value, k->value) == 0)
                return fail(c, k->line, "duplicate key '%s.%s' (first on line %d)", path, k->value,
                            m->items[j]->line);
    }
    return 0;
}

static int parse_uint(ctx *c, const node *v, const char *what, unsigned min, unsigned max, unsigned *out)
{
    char q[QUOTE_MAX + 4];
    unsigned long val = 0;
    size_t i;

    if (v->kind != NODE_SCALAR || node_is_null(v) || !v->plain)
        return fail(c, v->line, "%s: expected an integer, got %s", what,
                    v->kind == NODE_SCALAR && !node_is_null(v) ? "a quoted string" : node_type_name(v));
    /* Decimal digits only, no sign and no leading zero (YAML 1.1 would read "010" as octal). */
    for (i = 0; i < v->len && i < 10; i++) {
        if (v->value[i] < '0' || v->value[i] > '9')
            break;
        val = val * 10 + (unsigned long)(v->value[i] - '0');
    }
    if (i != v->len || i == 0 || (v->len > 1 && v->value[0] == '0')) {
        quote(v->value, q);
        return fail(c, v->line, "%s: expected an integer, got '%s'", what, q);
    }
    if (val < min || val > max)
        return fail(c, v->line, "%s: %lu is out of range (%u..%u)", what, val, min, max);
    *out = (unsigned)val;
    return 0;
}

static int parse_duration(ctx *c, const node *v, const char *what, unsigned min, unsigned max, int64_t *out)
{
    char q[QUOTE_MAX + 4], lo[24], hi[24];
    int64_t secs = 0;
    int r = NS_E_INTERNAL;

    if ((r = expect_string(c, v, what)) != 0)
        return r;
    if (min == 0 && (strcmp(v->value, "0s") == 0 || strcmp(v->value, "0") == 0)) { /* "off" */
        *out = 0;
        return 0;
    }
    if (ns_duration_parse(v->value, &secs) != 0) {
        quote(v->value, q);
        return fail(c, v->line, "%s: '%s' is not a duration (a number and a unit: 90s, 5m, 24h, 30d)", what,
                    q);
    }
    if (secs < (int64_t)min || secs > (int64_t)max) {
        ns_duration_format(min, lo);
        ns_duration_format(max, hi);
        return fail(c, v->line, "%s: %s is out of range (%s..%s)", what, v->value, lo, hi);
    }
    *out = secs;
    return 0;
}

static int parse_strv(ctx *c, const node *v, const char *what, const struct field *f, ns_strv *out)
{
    char item[300], q[QUOTE_MAX + 4];
    int r = NS_E_INTERNAL;

    if ((r = expect_kind(c, v, NODE_SEQ, what)) != 0)
        return r;
    for (size_t i = 0; i < v->n; i++) {
        const node *it = v->items[i];
        snprintf(item, sizeof(item), "%s[%zu]", what, i);
        if ((r = expect_string(c, it, item)) != 0)
            return r;
        if (f->valid != NULL && !f->valid(it->value)) {
            if (f->secret)
                return fail(c, it->line, "%s: %s", item, f->rule);
            quote(it->value, q);
            return fail(c, it->line, "%s: %s (got '%s')", item, f->rule, q);
        }
        for (size_t j = 0; j < out->n; j++)
            if (strcmp(out->v[j], it->value) == 0)
                return fail(c, it->line, "%s: listed twice", item);
        if ((r = ns_strv_push(out, it->value)) != 0)
            return r;
    }
    return 0;
}

static size_t field_index(const map_spec *spec, const char *key)
{
    for (size_t i = 0; i < spec->n_fields; i++)
        if (strcmp(spec->fields[i].key, key) == 0)
            return i;
    return spec->n_fields;
}

/* YAML 1.2 core booleans, unquoted: true/false (also True/TRUE, False/FALSE). Nothing else ("yes", "on",
 * "1") so that a typo is an error rather than a guess. */
static int parse_bool(ctx *c, const node *v, const char *what, bool *out)
{
    char q[QUOTE_MAX + 4];

    if (v->kind == NODE_SCALAR && v->plain &&
        (strcmp(v->value, "true") == 0 || strcmp(v->value, "True") == 0 || strcmp(v->value, "TRUE") == 0)) {
        *out = true;
        return 0;
    }
    if (v->kind == NODE_SCALAR && v->plain &&
        (strcmp(v->value, "false") == 0 || strcmp(v->value, "False") == 0 ||
         strcmp(v->value, "FALSE") == 0)) {
        *out = false;
        return 0;
    }
    if (v->kind != NODE_SCALAR || node_is_null(v))
        return fail(c, v->line, "%s: expected true or false, got %s", what, node_type_name(v));
    quote(v->value, q);
    return fail(c, v->line, "%s: expected true or false, got '%s'", what, q);
}

/* Check mapping `m` at `path` against `spec` and fill `obj`. `*variant` gets the discriminator's index (0
 * without one) and `lines[f]` the line of field f (0 when absent). The struct is filled as it goes; the
 * caller frees it on failure. */
static int parse_map(ctx *c, const node *m, const char *path, const map_spec *spec, void *obj,
                     size_t *variant, int lines[MAX_FIELDS])
{
    char what[256], q[QUOTE_MAX + 4], list[256];
    size_t var = 0;
    int r = NS_E_INTERNAL;

    if ((r = expect_kind(c, m, NODE_MAP, path)) != 0)
        goto out;
    if ((r = check_keys(c, m, path, spec)) != 0)
        goto out;
    memset(lines, 0, MAX_FIELDS * sizeof(lines[0]));

    if (spec->disc != NULL) {
        const node *dv = NULL;
        for (size_t i = 0; i < m->n; i += 2)
            if (strcmp(m->items[i]->value, spec->disc) == 0)
                dv = m->items[i + 1];
        snprintf(what, sizeof(what), "%s.%s", path, spec->disc);
        if (dv == NULL) {
            r = fail(c, m->line, "missing required key '%s'", what);
            goto out;
        }
        if ((r = expect_string(c, dv, what)) != 0)
            goto out;
        while (spec->variants[var] != NULL && strcmp(spec->variants[var], dv->value) != 0)
            var++;
        if (spec->variants[var] == NULL) {
            quote(dv->value, q);
            list_choices(spec->variants, list, sizeof(list));
            r = fail(c, dv->line, "%s: unknown %s '%s' (expected %s)", what, spec->disc, q, list);
            goto out;
        }
    }

    for (size_t i = 0; i < m->n; i += 2) {
        const node *k = m->items[i], *v = m->items[i + 1];
        const field *f = NULL;
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
            r = fail(c, k->line, "%s: key '%s' is not valid for %s %s", path, f->key, spec->disc,
                     spec->variants[var]);
            goto out;
        }
        if (f->type == F_MAP) {
            int sub_lines[MAX_FIELDS];
            size_t sub_var = 0;
            if ((r = parse_map(c, v, what, f->sub, (char *)obj + f->off, &sub_var, sub_lines)) != 0)
                goto out;
            continue;
        }
        if (f->type == F_UINT) {
            if ((r = parse_uint(c, v, what, f->min, f->max, (unsigned *)((char *)obj + f->off))) != 0)
                goto out;
            continue;
        }
        if (f->type == F_OWN)
            continue;
        if (f->type == F_STRV) {
            if ((r = parse_strv(c, v, what, f, (ns_strv *)((char *)obj + f->off))) != 0)
                goto out;
            continue;
        }
        if (f->type == F_DURATION) {
            if ((r = parse_duration(c, v, what, f->min, f->max, (int64_t *)((char *)obj + f->off))) != 0)
                goto out;
            continue;
        }
        if (f->type == F_BOOL) {
            if ((r = parse_bool(c, v, what, (bool *)((char *)obj + f->off))) != 0)
                goto out;
            continue;
        }
        if ((r = expect_string(c, v, what)) != 0)
            goto out;
        if (f->choices != NULL) {
            size_t ci = 0;
            while (f->choices[ci] != NULL && strcmp(f->choices[ci], v->value) != 0)
                ci++;
            if (f->choices[ci] == NULL) {
                quote(v->value, q);
                list_choices(f->choices, list, sizeof(list));
                r = fail(c, v->line, "%s: unknown value '%s' (expected %s)", what, q, list);
                goto out;
            }
        }
        if (f->valid != NULL && !f->valid(v->value)) {
            if (f->secret) {
                r = fail(c, v->line, "%s: %s", what, f->rule);
            } else {
                quote(v->value, q);
                r = fail(c, v->line, "%s: %s (got '%s')", what, f->rule, q);
            }
            goto out;
        }
        {
            char **slot = (char **)((char *)obj + f->off);
            if (f->type == F_PATH)
                r = resolve_path(c->base_dir, v->value, slot);
            else
                r = (*slot = strdup(v->value)) == NULL ? NS_E_NOMEM : 0;
            if (r != 0)
                goto out;
        }
    }

    for (size_t fi = 0; fi < spec->n_fields; fi++) {
        if ((spec->fields[fi].required & (1u << var)) && lines[fi] == 0) {
            snprintf(what, sizeof(what), "%s.%s", path, spec->fields[fi].key);
            if (spec->disc != NULL)
                r = fail(c, m->line, "missing required key '%s' (for %s %s)", what, spec->disc,
                         spec->variants[var]);
            else
                r = fail(c, m->line, "missing required key '%s'", what);
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
static void spec_clear(const map_spec *spec, void *obj)
{
    for (size_t i = 0; i < spec->n_fields; i++) {
        const field *f = &spec->fields[i];
        char **slot = (char **)((char *)obj + f->off);

        if (f->type == F_MAP) {
            spec_clear(f->sub, (char *)obj + f->off);
            continue;
        }
        if ((f->type != F_STR && f->type != F_PATH) || *slot == NULL)
            continue;
        ns_wipe(*slot, strlen(*slot));
        free(*slot);
        *slot = NULL;
    }
}

static void kek_clear(ns_kek_config *k)
{
    spec_clear(&kek_spec, k);
    memset(k, 0, sizeof(*k));
}

/* The line of `key` in an entry (whichever row matched), 0 when absent. */
static int key_line(const int lines[MAX_FIELDS], const char *key)
{
    int line = 0;

    for (size_t i = 0; i < kek_spec.n_fields; i++)
        if (strcmp(kek_spec.fields[i].key, key) == 0 && lines[i] > line)
            line = lines[i];
    return line;
}

static int set_default(char **slot, const char *value)
{
    if (*slot != NULL)
        return 0;
    return (*slot = strdup(value)) == NULL ? NS_E_NOMEM : 0;
}

/* `a` and `b` must not both be set. */
static int exclusive(ctx *c, const int lines[MAX_FIELDS], const char *path, const char *a, const char *b)
{
    int la = key_line(lines, a), lb = key_line(lines, b);

    if (la != 0 && lb != 0)
        return fail(c, la > lb ? la : lb, "%s: '%s' and '%s' exclude each other", path, a, b);
    return 0;
}

/* What one table cannot say: keys that exclude or need each other, and the defaults. */
static int kek_check_remote(ctx *c, const int lines[MAX_FIELDS], const char *path, ns_kek_config *k)
{
    char url[128];
    int r = NS_E_INTERNAL;

    if (k->source != NS_KEK_SRC_PKCS11 && k->source != NS_KEK_SRC_FILE && k->source != NS_KEK_SRC_ENV) {
        if (key_line(lines, "timeout") == 0)
            k->timeout_s = 10;
        if (key_line(lines, "retries") == 0)
            k->retries = 3;
    }
    switch (k->source) {
    case NS_KEK_SRC_VAULT:
        if ((r = exclusive(c, lines, path, "token_env", "token_file")) != 0 ||
            (r = exclusive(c, lines, path, "approle", "token_env")) != 0 ||
            (r = exclusive(c, lines, path, "approle", "token_file")) != 0)
            return r;
        if ((r = set_default(&k->mount, "secret")) != 0)
            return r;
        if (k->approle.role_id != NULL)
            return set_default(&k->approle.mount, "approle");
        if (k->token_file == NULL)
            return set_default(&k->token_env, "VAULT_TOKEN");
        return 0;
    case NS_KEK_SRC_AWS_SM:
    case NS_KEK_SRC_AWS_SSM:
        snprintf(url, sizeof(url), "https://%s.%s.amazonaws.com",
                 k->source == NS_KEK_SRC_AWS_SM ? "secretsmanager" : "ssm", k->region);
        return set_default(&k->endpoint, url);
    case NS_KEK_SRC_GCP_SM:
        if ((r = exclusive(c, lines, path, "credentials_file", "metadata_endpoint")) != 0)
            return r;
        if ((r = set_default(&k->version, "latest")) != 0 ||
            (r = set_default(&k->endpoint, "https://secretmanager.googleapis.com")) != 0)
            return r;
        if (k->credentials_file == NULL)
            return set_default(&k->metadata_endpoint, "http://169.254.169.254");
        return 0;
    case NS_KEK_SRC_AZURE_KV: {
        int n = (k->tenant_id != NULL) + (k->client_id != NULL) + (k->client_secret_file != NULL);
        if (n != 0 && n != 3)
            return fail(c, k->line,
                        "%s: tenant_id, client_id and client_secret_file go together "
                        "(client credentials); without them the managed identity is used",
                        path);
        if (n == 3) {
            if ((r = exclusive(c, lines, path, "client_id", "metadata_endpoint")) != 0)
                return r;
            return set_default(&k->authority, "https://login.microsoftonline.com");
        }
        if (key_line(lines, "authority") != 0)
            return fail(c, key_line(lines, "authority"), "%s.authority is only used with client credentials",
                        path);
        return set_default(&k->metadata_endpoint, "http://169.254.169.254");
    }
    default:
        return 0;
    }
}

static int parse_kek(ctx *c, const node *m, const char *path, ns_kek_config *k)
{
    int lines[MAX_FIELDS];
    size_t var = 0, hi;
    int r = NS_E_INTERNAL;

    if ((r = parse_map(c, m, path, &kek_spec, k, &var, lines)) != 0)
        goto out;
    k->source = kek_source_ids[var];
    k->line = m->line;
    if (k->source == NS_KEK_SRC_PKCS11) {
        bool oaep = strcmp(k->mechanism, "rsa-oaep") == 0;
        hi = field_index(&kek_spec, "oaep_hash");
        if (!oaep && k->oaep_hash != NULL) {
            r = fail(c, lines[hi], "%s.oaep_hash is only valid with mechanism rsa-oaep", path);
            goto out;
        }
        if (oaep && k->oaep_hash == NULL && (k->oaep_hash = strdup("auto")) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
    }
    if ((r = kek_check_remote(c, lines, path, k)) != 0)
        goto out;
    r = 0;
out:
    return r;
}

/* ---- top-level sections ----
 *
 * One row per top-level key. New sections (server, ca, ...) are added here with a handler. */

typedef struct section {
    const char *key;
    bool required;
    int (*parse)(ctx *c, const node *v, ns_config *cfg);
} section;

static int sec_cluster_id(ctx *c, const node *v, ns_config *cfg)
{
    char q[QUOTE_MAX + 4];
    int r = NS_E_INTERNAL;

    if ((r = expect_string(c, v, "cluster_id")) != 0)
        return r;
    if (!valid_cluster_id(v->value)) {
        quote(v->value, q);
        return fail(c, v->line,
                    "cluster_id: '%s' is not valid ([A-Za-z0-9][A-Za-z0-9._-]*, at most 63 characters)", q);
    }
    if ((cfg->cluster_id = strdup(v->value)) == NULL)
        return NS_E_NOMEM;
    return 0;
}

/* The sub-mappings of storage, parsed by their own specs (all s3-only). */
static const struct {
    const char *key;
    const map_spec *spec;
    size_t off; /* of the struct the spec fills, inside ns_storage_config */
} storage_subs[] = {
    {"credentials", &s3_creds_spec, offsetof(ns_storage_config, creds)},
    {"timeouts", &s3_timeouts_spec, 0},
    {"retries", &s3_retries_spec, 0},
};
#define N_STORAGE_SUBS (sizeof(storage_subs) / sizeof(storage_subs[0]))

static int sec_storage(ctx *c, const node *v, ns_config *cfg)
{
    ns_storage_config *sc = &cfg->storage;
    ns_s3_creds_config *cr = &sc->creds;
    int lines[MAX_FIELDS];
    const node *subs[N_STORAGE_SUBS] = {NULL}, *sub_keys[N_STORAGE_SUBS] = {NULL};
    node flat;
    size_t var = 0;
    char path[64];
    int r = NS_E_INTERNAL;

    /* The table-driven parse sees the mapping without its sub-mappings; those are taken out here (with
     * duplicates refused) and parsed below with their own tables. */
    memset(&flat, 0, sizeof(flat));
    if ((r = expect_kind(c, v, NODE_MAP, "storage")) != 0)
        goto out;
    flat = *v;
    if ((flat.items = calloc(v->n ? v->n : 1, sizeof(*flat.items))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    flat.n = 0;
    for (size_t i = 0; i < v->n; i += 2) {
        const node *k = v->items[i];
        size_t s = N_STORAGE_SUBS;
        if (k->kind == NODE_SCALAR && !node_is_null(k))
            for (s = 0; s < N_STORAGE_SUBS; s++)
                if (strcmp(k->value, storage_subs[s].key) == 0)
                    break;
        if (s == N_STORAGE_SUBS) {
            flat.items[flat.n++] = v->items[i];
            flat.items[flat.n++] = v->items[i + 1];
            continue;
        }
        if (sub_keys[s] != NULL) {
            r = fail(c, k->line, "duplicate key 'storage.%s' (first on line %d)", storage_subs[s].key,
                     sub_keys[s]->line);
            goto out;
        }
        sub_keys[s] = k;
        subs[s] = v->items[i + 1];
    }
    if ((r = parse_map(c, &flat, "storage", &storage_spec, sc, &var, lines)) != 0)
        goto out;
    if ((sc->backend = strdup(storage_backends[var])) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    sc->line = v->line;
    for (size_t s = 0; s < N_STORAGE_SUBS; s++) {
        int sub_lines[MAX_FIELDS];
        size_t sub_var = 0;
        if (subs[s] == NULL)
            continue;
        if (!(V_STORE_S3 & (1u << var))) {
            r = fail(c, sub_keys[s]->line, "storage: key '%s' is not valid for backend %s",
                     storage_subs[s].key, storage_backends[var]);
            goto out;
        }
        snprintf(path, sizeof(path), "storage.%s", storage_subs[s].key);
        if ((r = parse_map(c, subs[s], path, storage_subs[s].spec, (char *)sc + storage_subs[s].off, &sub_var,
                           sub_lines)) != 0)
            goto out;
    }
    if (subs[0] != NULL) {
        sc->has_credentials = true;
        if ((cr->access_key_id == NULL) != (cr->secret_access_key == NULL)) {
            r = fail(c, subs[0]->line,
                     "storage.credentials: access_key_id and secret_access_key go together");
            goto out;
        }
        if (cr->session_token != NULL && cr->access_key_id == NULL) {
            r = fail(c, subs[0]->line,
                     "storage.credentials: session_token needs access_key_id and "
                     "secret_access_key");
            goto out;
        }
        if (cr->access_key_id != NULL && (cr->profile != NULL || cr->credentials_file != NULL)) {
            r = fail(c, subs[0]->line,
                     "storage.credentials: explicit keys cannot be combined with profile or "
                     "credentials_file");
            goto out;
        }
    }
    if (var == 1) { /* s3 */
        /* A prefix is a folder: "a/b" and "a/b/" mean the same. */
        if (sc->prefix != NULL && sc->prefix[strlen(sc->prefix) - 1] != '/') {
            size_t n = strlen(sc->prefix);
            char *p = realloc(sc->prefix, n + 2);
            if (p == NULL) {
                r = NS_E_NOMEM;
                goto out;
            }
            p[n] = '/';
            p[n + 1] = '\0';
            sc->prefix = p;
        }
        if (sc->region == NULL && (sc->region = strdup("us-east-1")) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
    }
    r = 0;
out:
    free(flat.items);
    return r;
}

static int sec_encryption_key(ctx *c, const node *v, ns_config *cfg)
{
    int r = NS_E_INTERNAL;

    if ((r = parse_kek(c, v, "encryption_key", &cfg->primary)) != 0)
        return r;
    cfg->has_primary = true;
    return 0;
}

static int sec_old_encryption_keys(ctx *c, const node *v, ns_config *cfg)
{
    char path[64];
    int r = NS_E_INTERNAL;

    if ((r = expect_kind(c, v, NODE_SEQ, "old_encryption_keys")) != 0)
        return r;
    if (v->n == 0)
        return 0;
    if ((cfg->old = calloc(v->n, sizeof(*cfg->old))) == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i < v->n; i++) {
        snprintf(path, sizeof(path), "old_encryption_keys[%zu]", i);
        cfg->n_old = i + 1; /* so that ns_config_free() clears what this entry got so far */
        if ((r = parse_kek(c, v->items[i], path, &cfg->old[i])) != 0)
            return r;
    }
    return 0;
}

static int sec_pkcs11(ctx *c, const node *v, ns_config *cfg)
{
    int lines[MAX_FIELDS];
    size_t var = 0;

    return parse_map(c, v, "pkcs11", &pkcs11_spec, cfg, &var, lines);
}

static int sec_shard(ctx *c, const node *v, ns_config *cfg)
{
    char q[QUOTE_MAX + 4];
    int r = NS_E_INTERNAL;

    if ((r = expect_string(c, v, "shard")) != 0)
        return r;
    if (!valid_cluster_id(v->value)) {
        quote(v->value, q);
        return fail(c, v->line,
                    "shard: '%s' is not valid ([A-Za-z0-9][A-Za-z0-9._-]*, at most 63 characters)", q);
    }
    free(cfg->shard);
    if ((cfg->shard = strdup(v->value)) == NULL)
        return NS_E_NOMEM;
    return 0;
}

static int sec_cache_dir(ctx *c, const node *v, ns_config *cfg)
{
    int r = NS_E_INTERNAL;

    if ((r = expect_string(c, v, "cache_dir")) != 0)
        return r;
    free(cfg->cache_dir);
    cfg->cache_dir = NULL;
    return resolve_path(c->base_dir, v->value, &cfg->cache_dir);
}

static int sec_ca(ctx *c, const node *v, ns_config *cfg)
{
    int lines[MAX_FIELDS];
    size_t var = 0;
    int r = NS_E_INTERNAL;

    if ((r = parse_map(c, v, "ca", &ca_spec, &cfg->ca, &var, lines)) != 0)
        return r;
    cfg->ca.line = v->line;
    for (size_t i = 0; i < v->n; i += 2)
        if (strcmp(v->items[i]->value, "subject") == 0 &&
            (r = parse_map(c, v->items[i + 1], "ca.subject", &subject_spec, &cfg->ca, &var, lines)) != 0)
            return r;
    return 0;
}

static int sec_nonce(ctx *c, const node *v, ns_config *cfg)
{
    int lines[MAX_FIELDS];
    size_t var = 0;
    int r = NS_E_INTERNAL;

    if ((r = parse_map(c, v, "registration_nonce", &nonce_spec, &cfg->nonce, &var, lines)) != 0)
        return r;
    cfg->nonce.line = v->line;
    return 0;
}

static int sec_server(ctx *c, const node *v, ns_config *cfg)
{
    int lines[MAX_FIELDS];
    size_t var = 0;
    int r = NS_E_INTERNAL;

    if ((r = parse_map(c, v, "server", &server_spec, &cfg->server, &var, lines)) != 0)
        return r;
    cfg->server.line = v->line;
    /* These two may be 0s (off), so their defaults are filled in here, where absence is known. */
    for (size_t i = 0; i < server_spec.n_fields; i++) {
        if (lines[i] != 0)
            continue;
        if (strcmp(server_fields[i].key, "renew_min_interval") == 0)
            cfg->server.renew_min_interval = SERVER_RENEW_MIN_INTERVAL;
        else if (strcmp(server_fields[i].key, "renew_grace") == 0)
            cfg->server.renew_grace = SERVER_RENEW_GRACE;
    }
    return 0;
}

static void tmpl_file_clear(ns_tmpl_file *f)
{
    spec_clear(&tmpl_file_spec, f);
}

/* mode: a quoted octal string "0000".."0777" (quoted, so that YAML cannot read it as a number). */
static int parse_mode(ctx *c, const node *v, const char *what, char out[5])
{
    char q[QUOTE_MAX + 4];

    if (v->kind != NODE_SCALAR || node_is_null(v))
        return fail(c, v->line, "%s: expected a quoted octal string such as \"0600\", got %s", what,
                    node_type_name(v));
    if (v->plain)
        return fail(c, v->line, "%s: quote the mode (\"%s\"), so that YAML does not read it as a number",
                    what, v->value);
    if (v->len != 4 || v->value[0] != '0' || strspn(v->value + 1, "01234567") != 3) {
        quote(v->value, q);
        return fail(c, v->line, "%s: '%s' is not a mode \"0000\"..\"0777\"", what, q);
    }
    memcpy(out, v->value, 5);
    return 0;
}

static int parse_tmpl_file(ctx *c, const node *v, const char *path, ns_tmpl_file *f)
{
    char what[320];
    int lines[MAX_FIELDS];
    size_t var = 0;
    const node *mode = NULL;
    int r = NS_E_INTERNAL;

    if ((r = parse_map(c, v, path, &tmpl_file_spec, f, &var, lines)) != 0)
        return r;
    f->line = v->line;
    for (size_t i = 0; i < v->n; i += 2)
        if (strcmp(v->items[i]->value, "mode") == 0)
            mode = v->items[i + 1];
    if ((f->secret != NULL) == f->ca_bundle)
        return fail(c, v->line, "%s: give either 'secret' (with 'format') or 'ca_bundle: true'", path);
    if (f->secret != NULL && f->format == NULL)
        return fail(c, v->line,
                    "%s: 'secret' needs 'format' (pem-bundle, pem, public-pem-bundle, jwks or raw)", path);
    if (f->ca_bundle && f->format != NULL)
        return fail(c, v->line, "%s: 'format' is not valid with 'ca_bundle'", path);
    snprintf(what, sizeof(what), "%s.mode", path);
    if (mode != NULL) {
        if ((r = parse_mode(c, mode, what, f->mode)) != 0)
            return r;
    } else {
        memcpy(f->mode, "0600", 5);
    }
    if ((r = set_default(&f->owner, "root")) != 0 || (r = set_default(&f->group, "root")) != 0)
        return r;
    return 0;
}

static int parse_template(ctx *c, const node *v, const char *path, ns_template *t)
{
    char what[256];
    int lines[MAX_FIELDS];
    size_t var = 0;
    const node *files = NULL;
    int r = NS_E_INTERNAL;

    if ((r = parse_map(c, v, path, &tmpl_spec, t, &var, lines)) != 0)
        return r;
    for (size_t i = 0; i < v->n; i += 2)
        if (strcmp(v->items[i]->value, "files") == 0)
            files = v->items[i + 1];
    snprintf(what, sizeof(what), "%s.files", path);
    if ((r = expect_kind(c, files, NODE_SEQ, what)) != 0)
        return r;
    if (files->n == 0)
        return fail(c, files->line, "%s: a template needs at least one file", what);
    if ((t->files = calloc(files->n, sizeof(*t->files))) == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i < files->n; i++) {
        snprintf(what, sizeof(what), "%s.files[%zu]", path, i);
        t->n = i + 1;
        if ((r = parse_tmpl_file(c, files->items[i], what, &t->files[i])) != 0)
            return r;
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->files[j].path, t->files[i].path) == 0)
                return fail(c, files->items[i]->line, "%s: path %s is listed twice (first on line %d)", what,
                            t->files[i].path, t->files[j].line);
    }
    return 0;
}

static int sec_templates(ctx *c, const node *v, ns_config *cfg)
{
    char what[128];
    int r = NS_E_INTERNAL;

    if ((r = expect_kind(c, v, NODE_MAP, "templates")) != 0)
        return r;
    if (v->n == 0)
        return 0;
    if ((cfg->templates = calloc(v->n / 2, sizeof(*cfg->templates))) == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i < v->n; i += 2) {
        const node *k = v->items[i];
        ns_template *t = &cfg->templates[i / 2];
        if ((r = expect_string(c, k, "templates: a template name")) != 0)
            return r;
        if (!valid_cluster_id(k->value))
            return fail(c, k->line,
                        "templates: a name must be [A-Za-z0-9][A-Za-z0-9._-]*, at most 63 characters");
        for (size_t j = 0; j < i / 2; j++)
            if (strcmp(cfg->templates[j].name, k->value) == 0)
                return fail(c, k->line, "duplicate key 'templates.%s' (first on line %d)", k->value,
                            cfg->templates[j].line);
        cfg->n_templates = i / 2 + 1;
        if ((t->name = strdup(k->value)) == NULL)
            return NS_E_NOMEM;
        t->line = k->line;
        snprintf(what, sizeof(what), "templates.%s", k->value);
        if ((r = parse_template(c, v->items[i + 1], what, t)) != 0)
            return r;
    }
    return 0;
}

/* Parsed after templates (sections run in table order), so every target can be checked. */
static int sec_groups(ctx *c, const node *v, ns_config *cfg)
{
    char what[128];
    int r = NS_E_INTERNAL;

    if ((r = expect_kind(c, v, NODE_MAP, "groups")) != 0)
        return r;
    if (v->n == 0)
        return 0;
    if ((cfg->groups = calloc(v->n / 2, sizeof(*cfg->groups))) == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i < v->n; i += 2) {
        const node *k = v->items[i], *t = v->items[i + 1];
        ns_group_map *g = &cfg->groups[i / 2];
        if ((r = expect_string(c, k, "groups: a group name")) != 0)
            return r;
        if (!valid_cluster_id(k->value))
            return fail(c, k->line,
                        "groups: a name must be [A-Za-z0-9][A-Za-z0-9._-]*, at most 63 characters");
        for (size_t j = 0; j < i / 2; j++)
            if (strcmp(cfg->groups[j].group, k->value) == 0)
                return fail(c, k->line, "duplicate key 'groups.%s'", k->value);
        snprintf(what, sizeof(what), "groups.%s", k->value);
        if ((r = expect_string(c, t, what)) != 0)
            return r;
        cfg->n_groups = i / 2 + 1;
        if ((g->group = strdup(k->value)) == NULL || (g->tmpl = strdup(t->value)) == NULL)
            return NS_E_NOMEM;
        if (ns_config_template_for(cfg, g->group) == NULL) {
            char q[QUOTE_MAX + 4];
            quote(t->value, q);
            return fail(c, t->line, "%s: there is no template '%s'", what, q);
        }
    }
    return 0;
}

const ns_template *ns_config_template_for(const ns_config *cfg, const char *group)
{
    for (size_t i = 0; i < cfg->n_groups; i++) {
        if (strcmp(cfg->groups[i].group, group) != 0)
            continue;
        for (size_t j = 0; j < cfg->n_templates; j++)
            if (strcmp(cfg->templates[j].name, cfg->groups[i].tmpl) == 0)
                return &cfg->templates[j];
        return NULL;
    }
    return NULL;
}

/* Defaults that depend on other sections, once every section is read. */
static int apply_defaults(ns_config *cfg)
{
    char buf[160];

    if (cfg->shard == NULL && (cfg->shard = strdup(DEFAULT_SHARD)) == NULL)
        return NS_E_NOMEM;
    if (cfg->cache_dir == NULL && (cfg->cache_dir = strdup(DEFAULT_CACHE_DIR)) == NULL)
        return NS_E_NOMEM;
    if (cfg->ca.cn == NULL) {
        snprintf(buf, sizeof(buf), "%s CA", cfg->cluster_id);
        if ((cfg->ca.cn = strdup(buf)) == NULL)
            return NS_E_NOMEM;
    }
    if (cfg->ca.role_oid == NULL && (cfg->ca.role_oid = strdup(DEFAULT_ROLE_OID)) == NULL)
        return NS_E_NOMEM;
    if (cfg->ca.validity == 0)
        cfg->ca.validity = 3650LL * DAY;
    if (cfg->ca.cert_ttl == 0)
        cfg->ca.cert_ttl = 24LL * 3600;
    if (cfg->nonce.issuer == NULL) {
        snprintf(buf, sizeof(buf), "nstance-secrets/%s", cfg->cluster_id);
        if ((cfg->nonce.issuer = strdup(buf)) == NULL)
            return NS_E_NOMEM;
    }
    if (cfg->nonce.leeway == 0)
        cfg->nonce.leeway = 60;
    if (cfg->nonce.agent_ttl == 0)
        cfg->nonce.agent_ttl = 5 * 60;
    if (cfg->nonce.operator_ttl == 0)
        cfg->nonce.operator_ttl = 3 * 3600;
    if (cfg->server.listen == NULL && (cfg->server.listen = strdup("127.0.0.1:8443")) == NULL)
        return NS_E_NOMEM;
    if (cfg->server.names.n == 0 && (ns_strv_push(&cfg->server.names, "localhost") != 0 ||
                                     ns_strv_push(&cfg->server.names, "127.0.0.1") != 0))
        return NS_E_NOMEM;
    if (cfg->server.agent_cert_ttl == 0)
        cfg->server.agent_cert_ttl = 24 * 3600;
    if (cfg->server.operator_cert_ttl == 0)
        cfg->server.operator_cert_ttl = 8 * 3600;
    if (cfg->server.max_connections == 0)
        cfg->server.max_connections = 1024;
    if (cfg->server.header_timeout == 0)
        cfg->server.header_timeout = 10;
    if (cfg->server.idle_timeout == 0)
        cfg->server.idle_timeout = 60;
    if (cfg->server.cache_check == 0)
        cfg->server.cache_check = 5;
    if (cfg->server.threads == 0)
        cfg->server.threads = 4;
    if (cfg->server.line == 0) { /* no server section (else sec_server filled these in) */
        cfg->server.renew_min_interval = SERVER_RENEW_MIN_INTERVAL;
        cfg->server.renew_grace = SERVER_RENEW_GRACE;
    }
    if (cfg->server.register_burst == 0)
        cfg->server.register_burst = 20;
    if (cfg->server.register_per_minute == 0)
        cfg->server.register_per_minute = 60;
    return 0;
}

static const section sections[] = {
    {"cluster_id", true, sec_cluster_id},
    {"storage", true, sec_storage},
    {"encryption_key", false, sec_encryption_key},
    {"old_encryption_keys", false, sec_old_encryption_keys},
    {"pkcs11", false, sec_pkcs11},
    {"shard", false, sec_shard},
    {"cache_dir", false, sec_cache_dir},
    {"ca", false, sec_ca},
    {"registration_nonce", false, sec_nonce},
    {"server", false, sec_server},
    {"templates", false, sec_templates},
    {"groups", false, sec_groups},
};
#define N_SECTIONS (sizeof(sections) / sizeof(sections[0]))

static int parse_root(ctx *c, const node *root, ns_config *cfg)
{
    char q[QUOTE_MAX + 4];
    const node *keys[N_SECTIONS] = {NULL}, *vals[N_SECTIONS] = {NULL};

    if (root->kind != NODE_MAP)
        return fail(c, root->line, "the top level must be a mapping, got %s", node_type_name(root));
    /* Keys first, in document order: unknown and duplicate keys are reported where they are. */
    for (size_t i = 0; i < root->n; i += 2) {
        const node *k = root->items[i];
        size_t s;

        if (k->kind != NODE_SCALAR || node_is_null(k))
            return fail(c, k->line, "keys must be strings, got %s", node_type_name(k));
        for (s = 0; s < N_SECTIONS; s++)
            if (strcmp(k->value, sections[s].key) == 0)
                break;
        if (s == N_SECTIONS) {
            quote(k->value, q);
            return fail(c, k->line, "unknown top-level key '%s'", q);
        }
        if (keys[s] != NULL)
            return fail(c, k->line, "duplicate key '%s' (first on line %d)", sections[s].key, keys[s]->line);
        keys[s] = k;
        vals[s] = root->items[i + 1];
    }
    for (size_t s = 0; s < N_SECTIONS; s++) {
        int r;
        if (vals[s] == NULL) {
            if (sections[s].required)
                return fail(c, root->line, "missing required key '%s'", sections[s].key);
            continue;
        }
        if ((r = sections[s].parse(c, vals[s], cfg)) != 0)
            return r;
    }
    return apply_defaults(cfg);
}

/* ---- public ---- */

void ns_config_free(ns_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->origin);
    free(cfg->cluster_id);
    free(cfg->storage.backend);
    free(cfg->storage.path);
    free(cfg->storage.bucket);
    free(cfg->storage.prefix);
    free(cfg->storage.region);
    free(cfg->storage.endpoint);
    free(cfg->storage.ca_file);
    {
        ns_s3_creds_config *cr = &cfg->storage.creds;
        free(cr->access_key_id);
        if (cr->secret_access_key != NULL) {
            ns_wipe(cr->secret_access_key, strlen(cr->secret_access_key));
            free(cr->secret_access_key);
        }
        if (cr->session_token != NULL) {
            ns_wipe(cr->session_token, strlen(cr->session_token));
            free(cr->session_token);
        }
        free(cr->profile);
        free(cr->credentials_file);
        free(cr->imds_endpoint);
    }
    kek_clear(&cfg->primary);
    for (size_t i = 0; i < cfg->n_old; i++)
        kek_clear(&cfg->old[i]);
    free(cfg->old);
    free(cfg->shard);
    free(cfg->cache_dir);
    for (size_t i = 0; i < cfg->ca.keys.n; i++)
        ns_wipe(cfg->ca.keys.v[i], strlen(cfg->ca.keys.v[i])); /* may carry pin-value */
    ns_strv_clear(&cfg->ca.keys);
    free(cfg->ca.pin_env);
    free(cfg->ca.cn);
    free(cfg->ca.o);
    free(cfg->ca.c);
    free(cfg->ca.st);
    free(cfg->ca.l);
    free(cfg->ca.role_oid);
    for (size_t i = 0; i < cfg->nonce.keys.n; i++)
        ns_wipe(cfg->nonce.keys.v[i], strlen(cfg->nonce.keys.v[i]));
    ns_strv_clear(&cfg->nonce.keys);
    free(cfg->nonce.pin_env);
    free(cfg->nonce.issuer);
    free(cfg->server.listen);
    ns_strv_clear(&cfg->server.names);
    for (size_t i = 0; i < cfg->n_groups; i++) {
        free(cfg->groups[i].group);
        free(cfg->groups[i].tmpl);
    }
    free(cfg->groups);
    for (size_t i = 0; i < cfg->n_templates; i++) {
        for (size_t j = 0; j < cfg->templates[i].n; j++)
            tmpl_file_clear(&cfg->templates[i].files[j]);
        free(cfg->templates[i].files);
        free(cfg->templates[i].name);
    }
    free(cfg->templates);
    free(cfg);
}

int ns_config_parse(const char *text, size_t n, const char *origin, const char *base_dir, ns_config **out)
{
    ctx c;
    bool have_parser = false;
    node *root = NULL;
    ns_config *cfg = NULL;
    int r = NS_E_INTERNAL;

    memset(&c, 0, sizeof(c));
    if (out == NULL || (text == NULL && n > 0)) {
        r = NS_E_INVAL;
        goto out;
    }
    c.origin = origin != NULL ? origin : "<string>";
    c.base_dir = base_dir;
    c.text = text != NULL ? text : "";
    c.n = n;
    if (n > CONFIG_MAX_BYTES) {
        ns_log(NS_LOG_ERROR, "%s: the config is larger than %u bytes", c.origin, CONFIG_MAX_BYTES);
        r = NS_E_CONFIG;
        goto out;
    }
    if (!yaml_parser_initialize(&c.parser)) {
        r = NS_E_NOMEM;
        goto out;
    }
    have_parser = true;
    yaml_parser_set_input_string(&c.parser, (const unsigned char *)c.text, n);
    if ((r = build_tree(&c, &root)) != 0)
        goto out;

    if ((cfg = calloc(1, sizeof(*cfg))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    cfg->token_sessions = DEFAULT_SESSIONS;
    cfg->ca.path_len = NS_CA_DEFAULT_PATH_LEN; /* 0 is a value one may set: the default goes in first */
    cfg->storage.connect_timeout_ms = 5000;
    cfg->storage.timeout_ms = 30000;
    cfg->storage.retries = 3;
    cfg->storage.retry_base_ms = 100;
    cfg->storage.creds.imds = true;
    if ((cfg->origin = strdup(c.origin)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = parse_root(&c, root, cfg)) != 0)
        goto out;
    *out = cfg;
    cfg = NULL;
    r = 0;
out:
    ns_config_free(cfg);
    node_free(root);
    if (have_parser)
        yaml_parser_delete(&c.parser);
    return r;
}

int ns_config_load(const char *path, ns_config **out)
{
    char *text = NULL, *dir = NULL, *slash;
    size_t len = 0;
    struct stat st;
    int fd = -1;
    int r = NS_E_INTERNAL;

    if (path == NULL || out == NULL) {
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
    if (S_ISREG(st.st_mode) && st.st_size > (off_t)CONFIG_MAX_BYTES) {
        ns_log(NS_LOG_ERROR, "%s: the config is larger than %u bytes", path, CONFIG_MAX_BYTES);
        r = NS_E_CONFIG;
        goto out;
    }
    /* Read at most one byte past the cap, so that pipes and files growing under us are caught too. */
    if ((text = malloc(CONFIG_MAX_BYTES + 1)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    while (len <= CONFIG_MAX_BYTES) {
        ssize_t got = read(fd, text + len, CONFIG_MAX_BYTES + 1 - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            ns_log(NS_LOG_ERROR, "%s: cannot read the config: %s", path, strerror(errno));
            r = NS_E_CONFIG;
            goto out;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    if (len > CONFIG_MAX_BYTES) {
        ns_log(NS_LOG_ERROR, "%s: the config is larger than %u bytes", path, CONFIG_MAX_BYTES);
        r = NS_E_CONFIG;
        goto out;
    }

    if ((dir = strdup(path)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    if ((r = ns_config_parse(text, len, path, slash != NULL ? dir : NULL, out)) != 0)
        goto out;
    r = 0;
out:
    if (text != NULL) {
        ns_wipe(text, len); /* may hold a pin-value */
        free(text);
    }
    free(dir);
    if (fd >= 0)
        close(fd);
    return r;
}

const char *ns_config_default_path(const char *cli_path)
{
    const char *env;

    if (cli_path != NULL)
        return cli_path;
    env = getenv("NSTANCE_SECRETS_CONFIG");
    if (env != NULL && env[0] != '\0')
        return env;
    return DEFAULT_PATH;
}
