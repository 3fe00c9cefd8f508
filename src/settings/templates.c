#include "ns-build.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "settings/settings.h"
#include "store/store.h"

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
        if (strchr(NS_CFG_ALNUM "._@+-", s[i]) == NULL)
            return false;
        seg++;
    }
    return true;
}

/* A user or group name (or a numeric id): [A-Za-z0-9_][A-Za-z0-9._-]{0,31}. */
static bool valid_owner(const char *s)
{
    return ns_cfg_chars(s, 1, 32, NS_CFG_ALNUM "._-") && s[0] != '-' && s[0] != '.';
}

/* mode: a quoted octal string "0000".."0777" (quoted, so that YAML cannot read it as a number). */
static int parse_mode(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *out)
{
    char q[NS_CFG_QUOTE_MAX + 4];

    if (v->kind != NS_CFG_SCALAR || ns_cfg_node_is_null(v))
        return ns_cfg_fail(c, v->line, "%s: expected a quoted octal string such as \"0600\", got %s", what,
                           ns_cfg_node_type_name(v));
    if (v->plain)
        return ns_cfg_fail(c, v->line,
                           "%s: quote the mode (\"%s\"), so that YAML does not read it as a number", what,
                           v->value);
    if (v->len != 4 || v->value[0] != '0' || strspn(v->value + 1, "01234567") != 3) {
        ns_cfg_quote(v->value, q);
        return ns_cfg_fail(c, v->line, "%s: '%s' is not a mode \"0000\"..\"0777\"", what, q);
    }
    memcpy(out, v->value, 5);
    return 0;
}

/* A secret name: what the store takes as an object name (ns_store_name_check), at most 256 bytes. */
static bool valid_secret_name(const char *s)
{
    return strlen(s) <= 256 && ns_store_name_check(s) == 0;
}

#define F(k, t, m, ...) NS_CFG_ROW(ns_tmpl_file, k, t, m, __VA_ARGS__)
static const ns_cfg_field tmpl_file_fields[] = {
    F("path", NS_CFG_STR, path, .required = 1u, .valid = valid_abs_path,
      .rule = "must be an absolute, normalised path (no '..', '.', '//' or trailing '/'; [A-Za-z0-9._@+-])"),
    F("secret", NS_CFG_STR, secret, .valid = valid_secret_name,
      .rule = "must be a secret name (segments of [A-Za-z0-9._-] separated by '/')"),
    F("format", NS_CFG_STR, format, .choices = tmpl_formats),
    F("ca_bundle", NS_CFG_BOOL, ca_bundle),
    F("mode", NS_CFG_OWN, mode, .parse = parse_mode),
    F("owner", NS_CFG_STR, owner, .valid = valid_owner,
      .rule = "must be a user name ([A-Za-z0-9_][A-Za-z0-9._-], at most 32)"),
    F("group", NS_CFG_STR, group, .valid = valid_owner,
      .rule = "must be a group name ([A-Za-z0-9_][A-Za-z0-9._-], at most 32)"),
};
static const ns_cfg_spec tmpl_file_spec = NS_CFG_SPEC(NULL, NULL, tmpl_file_fields);

static int parse_tmpl_file(ns_cfg_ctx *c, const ns_cfg_node *v, const char *path, ns_tmpl_file *f)
{
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_parse_struct(c, v, path, &tmpl_file_spec, f, &f->line)) != 0)
        return r;
    if ((f->secret != NULL) == f->ca_bundle)
        return ns_cfg_fail(c, v->line, "%s: give either 'secret' (with 'format') or 'ca_bundle: true'", path);
    if (f->secret != NULL && f->format == NULL)
        return ns_cfg_fail(c, v->line,
                           "%s: 'secret' needs 'format' (pem-bundle, pem, public-pem-bundle, jwks or raw)",
                           path);
    if (f->ca_bundle && f->format != NULL)
        return ns_cfg_fail(c, v->line, "%s: 'format' is not valid with 'ca_bundle'", path);
    if (f->mode[0] == '\0')
        memcpy(f->mode, "0600", 5);
    if ((r = ns_cfg_set_default(&f->owner, "root")) != 0 || (r = ns_cfg_set_default(&f->group, "root")) != 0)
        return r;
    return 0;
}

/* templates.NAME.files: at least one file, no path twice. */
static int parse_files(ns_cfg_ctx *c, const ns_cfg_node *files, const char *what, void *slot)
{
    ns_template *t = slot;
    char item[320];
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_expect_kind(c, files, NS_CFG_SEQ, what)) != 0)
        return r;
    if (files->n == 0)
        return ns_cfg_fail(c, files->line, "%s: a template needs at least one file", what);
    if ((t->files = calloc(files->n, sizeof(*t->files))) == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i < files->n; i++) {
        snprintf(item, sizeof(item), "%s[%zu]", what, i);
        t->n = i + 1;
        if ((r = parse_tmpl_file(c, files->items[i], item, &t->files[i])) != 0)
            return r;
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->files[j].path, t->files[i].path) == 0)
                return ns_cfg_fail(c, files->items[i]->line, "%s: path %s is listed twice (first on line %d)",
                                   item, t->files[i].path, t->files[j].line);
    }
    return 0;
}

static const ns_cfg_field tmpl_fields[] = {
    {.key = "files", .type = NS_CFG_OWN, .allowed = 1u, .required = 1u, .parse = parse_files},
};
static const ns_cfg_spec tmpl_spec = NS_CFG_SPEC(NULL, NULL, tmpl_fields);

/* The keys of mapping v (templates, groups): names, each given once. */
static int check_names(ns_cfg_ctx *c, const ns_cfg_node *v, const char *sec, const char *kind)
{
    char what[64];
    int r = NS_E_INTERNAL;

    if ((r = ns_cfg_expect_kind(c, v, NS_CFG_MAP, sec)) != 0)
        return r;
    snprintf(what, sizeof(what), "%s: a %s name", sec, kind);
    for (size_t i = 0; i < v->n; i += 2) {
        const ns_cfg_node *k = v->items[i];
        if ((r = ns_cfg_expect_string(c, k, what)) != 0)
            return r;
        if (!ns_cfg_valid_name(k->value))
            return ns_cfg_fail(c, k->line, "%s: a name must be " NS_CFG_RULE_NAME, sec);
        for (size_t j = 0; j < i; j += 2)
            if (strcmp(v->items[j]->value, k->value) == 0)
                return ns_cfg_fail(c, k->line, "duplicate key '%s.%s' (first on line %d)", sec, k->value,
                                   v->items[j]->line);
    }
    return 0;
}

int ns_templates_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *sec, void *slot)
{
    ns_config *cfg = slot;
    char what[128];
    int r = NS_E_INTERNAL;

    if ((r = check_names(c, v, sec, "template")) != 0)
        return r;
    if (v->n > 0 && (cfg->templates = calloc(v->n / 2, sizeof(*cfg->templates))) == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i < v->n; i += 2) {
        ns_template *t = &cfg->templates[i / 2];
        cfg->n_templates = i / 2 + 1;
        if ((t->name = strdup(v->items[i]->value)) == NULL)
            return NS_E_NOMEM;
        snprintf(what, sizeof(what), "templates.%s", t->name);
        if ((r = ns_cfg_parse_struct(c, v->items[i + 1], what, &tmpl_spec, t, &t->line)) != 0)
            return r;
        t->line = v->items[i]->line;
    }
    return 0;
}

/* Parsed after templates (sections run in table order), so every target can be checked. */
int ns_groups_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *sec, void *slot)
{
    ns_config *cfg = slot;
    char what[128], q[NS_CFG_QUOTE_MAX + 4];
    int r = NS_E_INTERNAL;

    if ((r = check_names(c, v, sec, "group")) != 0)
        return r;
    if (v->n > 0 && (cfg->groups = calloc(v->n / 2, sizeof(*cfg->groups))) == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i < v->n; i += 2) {
        const ns_cfg_node *t = v->items[i + 1];
        ns_group_map *g = &cfg->groups[i / 2];
        snprintf(what, sizeof(what), "groups.%s", v->items[i]->value);
        if ((r = ns_cfg_expect_string(c, t, what)) != 0)
            return r;
        cfg->n_groups = i / 2 + 1;
        if ((g->group = strdup(v->items[i]->value)) == NULL || (g->tmpl = strdup(t->value)) == NULL)
            return NS_E_NOMEM;
        if (ns_config_template_for(cfg, g->group) == NULL) {
            ns_cfg_quote(t->value, q);
            return ns_cfg_fail(c, t->line, "%s: there is no template '%s'", what, q);
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

void ns_templates_config_clear(ns_config *cfg)
{
    for (size_t i = 0; i < cfg->n_groups; i++) {
        free(cfg->groups[i].group);
        free(cfg->groups[i].tmpl);
    }
    free(cfg->groups);
    for (size_t i = 0; i < cfg->n_templates; i++) {
        for (size_t j = 0; j < cfg->templates[i].n; j++)
            ns_cfg_clear(&tmpl_file_spec, &cfg->templates[i].files[j]);
        free(cfg->templates[i].files);
        free(cfg->templates[i].name);
    }
    free(cfg->templates);
}
