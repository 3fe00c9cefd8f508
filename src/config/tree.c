#include "ns-build.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "common/log.h"
#include "common/secmem.h"
#include "config/tree.h"

/* Why the event API and our own small tree: libyaml's document loader would not expand an alias but share
 * the aliased node between its parents (a graph, not a tree: "billion laughs" for any walker that follows
 * both), and it drops anchors and duplicate keys without trace, with no way to refuse any of them. Events
 * let us refuse anchors, aliases and tags where they appear, with their line, and the tree lets every
 * section be checked against a table. */

#define CONFIG_MAX_DEPTH 32    /* nesting of mappings and sequences */
#define CONFIG_MAX_NODES 65536 /* a real config has a few dozen */

typedef ns_cfg_node node;

/* One tree being built: the parse's context, the input (for reader errors' byte offsets), the parser. */
typedef struct ctx {
    ns_cfg_ctx *cc;
    const char *text;
    size_t n;
    size_t n_nodes;
    yaml_parser_t parser;
    yaml_event_t ev; /* build_tree's current event */
    bool have_ev;
} ctx;

void ns_cfg_node_free(ns_cfg_node *nd)
{
    if (nd == NULL)
        return;
    if (nd->value != NULL) {
        /* Values may hold a PIN (pkcs11 URIs with pin-value): wipe them all, it costs nothing. */
        ns_wipe(nd->value, nd->len);
        free(nd->value);
    }
    for (size_t i = 0; i < nd->n; i++)
        ns_cfg_node_free(nd->items[i]);
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

bool ns_cfg_node_is_null(const ns_cfg_node *nd)
{
    if (nd->kind != NS_CFG_SCALAR || !nd->plain)
        return false;
    return nd->len == 0 || strcmp(nd->value, "~") == 0 || strcmp(nd->value, "null") == 0 ||
           strcmp(nd->value, "Null") == 0 || strcmp(nd->value, "NULL") == 0;
}

const char *ns_cfg_node_type_name(const ns_cfg_node *nd)
{
    if (ns_cfg_node_is_null(nd))
        return "null";
    switch (nd->kind) {
    case NS_CFG_SCALAR:
        return "a string";
    case NS_CFG_SEQ:
        return "a sequence";
    case NS_CFG_MAP:
        return "a mapping";
    }
    return "?";
}

/* ---- messages ---- */

int ns_cfg_fail(const ns_cfg_ctx *c, int line, const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ns_log(NS_LOG_ERROR, "%s:%d: %s", c->origin, line, msg);
    return NS_E_CONFIG;
}

void ns_cfg_quote(const char *s, char out[NS_CFG_QUOTE_MAX + 4])
{
    size_t i;

    if (strncmp(s, "pkcs11:", 7) == 0 || strstr(s, "pin-value") != NULL) {
        strcpy(out, "(withheld)");
        return;
    }
    for (i = 0; s[i] != '\0' && i < NS_CFG_QUOTE_MAX; i++)
        out[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (s[i] != '\0') {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
}

const ns_cfg_node *ns_cfg_map_get(const ns_cfg_node *m, const char *key)
{
    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (m->items[i]->kind == NS_CFG_SCALAR && strcmp(m->items[i]->value, key) == 0)
            return m->items[i + 1];
    return NULL;
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
        return ns_cfg_fail(c->cc, line, "YAML error: %s", p->problem ? p->problem : "cannot read input");
    }
    line = mark_line(&p->problem_mark);
    if (p->context != NULL)
        return ns_cfg_fail(c->cc, line, "YAML syntax error: %s %s", p->context, p->problem ? p->problem : "");
    return ns_cfg_fail(c->cc, line, "YAML syntax error: %s", p->problem ? p->problem : "unknown error");
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
        return ns_cfg_fail(c->cc, line, "anchors and aliases are not supported");
    if (tag != NULL)
        return ns_cfg_fail(c->cc, line, "tags are not supported");
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
        r = ns_cfg_fail(c->cc, line, "anchors and aliases are not supported");
        goto out;
    }
    if ((r = check_props(c, ev, line)) != 0)
        goto out;
    if (++c->n_nodes > CONFIG_MAX_NODES) {
        r = ns_cfg_fail(c->cc, line, "too many nodes (more than %u)", CONFIG_MAX_NODES);
        goto out;
    }
    if ((nd = calloc(1, sizeof(*nd))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    nd->line = line;

    if (ev->type == YAML_SCALAR_EVENT) {
        nd->kind = NS_CFG_SCALAR;
        nd->len = ev->data.scalar.length;
        if (memchr(ev->data.scalar.value, '\0', nd->len) != NULL) {
            r = ns_cfg_fail(c->cc, line, "NUL bytes are not allowed in values");
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
        nd->kind = NS_CFG_SEQ;
        end = YAML_SEQUENCE_END_EVENT;
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        nd->kind = NS_CFG_MAP;
        end = YAML_MAPPING_END_EVENT;
    } else {
        r = ns_cfg_fail(c->cc, line, "unexpected YAML event");
        goto out;
    }
    if (depth >= CONFIG_MAX_DEPTH) {
        r = ns_cfg_fail(c->cc, line, "nesting deeper than %d levels", CONFIG_MAX_DEPTH);
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
    ns_cfg_node_free(child);
    ns_cfg_node_free(nd);
    return r;
}

/* The next event into c->ev, the one before it deleted. */
static int advance(ctx *c)
{
    int r = NS_E_INTERNAL;

    if (c->have_ev)
        yaml_event_delete(&c->ev);
    r = next_event(c, &c->ev);
    c->have_ev = r == 0;
    return r;
}

/* Parse the whole stream into one tree; exactly one non-empty document. */
static int build_tree(ctx *c, node **out)
{
    node *root = NULL;
    int doc_line = 1;
    int r = NS_E_INTERNAL;

    if ((r = advance(c)) != 0 || (r = advance(c)) != 0) /* STREAM-START, DOCUMENT-START */
        goto out;
    if (c->ev.type == YAML_STREAM_END_EVENT) {
        r = ns_cfg_fail(c->cc, mark_line(&c->ev.start_mark), "empty document");
        goto out;
    }
    doc_line = mark_line(&c->ev.start_mark);
    if ((r = advance(c)) != 0 || (r = build_node(c, &c->ev, 0, &root)) != 0 || (r = advance(c)) != 0 ||
        (r = advance(c)) != 0) /* the root, DOCUMENT-END, STREAM-END */
        goto out;
    if (c->ev.type != YAML_STREAM_END_EVENT) {
        r = ns_cfg_fail(c->cc, mark_line(&c->ev.start_mark), "only one YAML document is allowed");
        goto out;
    }
    if (root->kind == NS_CFG_SCALAR && root->plain && root->len == 0) {
        r = ns_cfg_fail(c->cc, doc_line, "empty document");
        goto out;
    }
    *out = root;
    root = NULL;
    r = 0;
out:
    ns_cfg_node_free(root);
    return r;
}

int ns_cfg_tree_build(ns_cfg_ctx *cc, const char *text, size_t n, ns_cfg_node **out)
{
    ctx c;
    int r = NS_E_INTERNAL;

    if (n > NS_CFG_MAX_BYTES) {
        ns_log(NS_LOG_ERROR, "%s: the config is larger than %u bytes", cc->origin, NS_CFG_MAX_BYTES);
        return NS_E_CONFIG;
    }
    memset(&c, 0, sizeof(c));
    c.cc = cc;
    c.text = text;
    c.n = n;
    if (!yaml_parser_initialize(&c.parser))
        return NS_E_NOMEM;
    yaml_parser_set_input_string(&c.parser, (const unsigned char *)text, n);
    r = build_tree(&c, out);
    if (c.have_ev)
        yaml_event_delete(&c.ev);
    yaml_parser_delete(&c.parser);
    return r;
}
