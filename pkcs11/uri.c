#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include <p11-kit/uri.h>

#include "common/fdio.h"
#include "common/log.h"
#include "common/secmem.h"
#include "pkcs11/uri.h"

/* A PIN file is small; anything bigger is a mistake, not a PIN. */
#define PIN_MAX 256

struct ns_p11_uri {
    P11KitUri *uri;
    char *safe;
};

char *ns_p11_uri_redact(const char *text)
{
    static const char key[] = "pin-value=";
    size_t n = strlen(text);
    char *out = malloc(4 * n + 4), *w = out; /* each "***" replaces at least "" */
    const char *p = text;

    if (out == NULL)
        return NULL;
    while (*p) {
        const char *hit = strstr(p, key);
        if (hit == NULL) {
            strcpy(w, p);
            return out;
        }
        memcpy(w, p, (size_t)(hit - p) + sizeof(key) - 1);
        w += (hit - p) + sizeof(key) - 1;
        p = hit + sizeof(key) - 1;
        while (*p && *p != '&' && *p != ';')
            p++;
        memcpy(w, "***", 3);
        w += 3;
    }
    *w = '\0';
    return out;
}

int ns_p11_uri_parse(const char *text, ns_p11_uri **out)
{
    ns_p11_uri *u = NULL;
    int r = NS_E_INTERNAL, pr;

    if ((u = calloc(1, sizeof(*u))) == NULL || (u->safe = ns_p11_uri_redact(text)) == NULL ||
        (u->uri = p11_kit_uri_new()) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((pr = p11_kit_uri_parse(text, P11_KIT_URI_FOR_ANY, u->uri)) != P11_KIT_URI_OK) {
        ns_log(NS_LOG_ERROR, "invalid PKCS#11 URI '%s': %s", u->safe, p11_kit_uri_message(pr));
        r = NS_E_INVAL;
        goto out;
    }
    *out = u;
    u = NULL;
    r = 0;
out:
    ns_p11_uri_free(u);
    return r;
}

void ns_p11_uri_free(ns_p11_uri *u)
{
    if (u == NULL)
        return;
    if (u->uri != NULL)
        p11_kit_uri_free(u->uri); /* p11-kit clears the PIN value it holds */
    free(u->safe);
    free(u);
}

bool ns_p11_uri_valid(const char *text)
{
    P11KitUri *u = p11_kit_uri_new();
    bool ok = u != NULL && p11_kit_uri_parse(text, P11_KIT_URI_FOR_ANY, u) == P11_KIT_URI_OK;

    if (u != NULL)
        p11_kit_uri_free(u);
    return ok;
}

const char *ns_p11_uri_module_path(const ns_p11_uri *u)
{
    return p11_kit_uri_get_module_path(u->uri);
}

const char *ns_p11_uri_safe_text(const ns_p11_uri *u)
{
    return u->safe;
}

int ns_p11_uri_match_token(const ns_p11_uri *u, CK_TOKEN_INFO *info)
{
    return p11_kit_uri_match_token_info(u->uri, info);
}

CK_ATTRIBUTE *ns_p11_uri_object_attrs(const ns_p11_uri *u, CK_ULONG *n)
{
    return p11_kit_uri_get_attributes(u->uri, n);
}

int ns_p11_uri_new_key_attrs(const ns_p11_uri *u, CK_ATTRIBUTE *label, CK_ATTRIBUTE *id)
{
    CK_ULONG na = 0;
    CK_ATTRIBUTE *a = ns_p11_uri_object_attrs(u, &na);

    memset(label, 0, sizeof(*label));
    memset(id, 0, sizeof(*id));
    for (CK_ULONG i = 0; i < na; i++) {
        if (a[i].type == CKA_LABEL)
            *label = a[i];
        else if (a[i].type == CKA_ID)
            *id = a[i];
    }
    if (label->type != CKA_LABEL || label->ulValueLen == 0) {
        ns_log(NS_LOG_ERROR, "'%s' has no object= to label the new key", ns_p11_uri_safe_text(u));
        return NS_E_USAGE;
    }
    return 0;
}

int ns_p11_uri_names_object(const ns_p11_uri *u)
{
    return p11_kit_uri_get_attribute(u->uri, CKA_LABEL) != NULL ||
           p11_kit_uri_get_attribute(u->uri, CKA_ID) != NULL;
}

static int read_pin_file(const char *path, ns_buf **pin)
{
    static const ns_file_rules rules = {
        .what = "PIN file", .max = PIN_MAX - 1, .secret = true, .owner_only = true, .strip_newline = true};
    int r = ns_file_read(path, &rules, pin);

    /* A PIN file that cannot be read whole is a bad PIN source (exit 2), as it always was. */
    return r == NS_E_STORAGE || r == NS_E_TOO_LARGE ? NS_E_INVAL : r;
}

int ns_p11_uri_pin(const ns_p11_uri *u, const char *pin_env, ns_buf **pin)
{
    const char *value = p11_kit_uri_get_pin_value(u->uri);
    const char *source = p11_kit_uri_get_pin_source(u->uri);

    if (value != NULL)
        return ns_buf_from(value, strlen(value), PIN_MAX, true, pin);
    if (source != NULL) {
        const char *path = source;
        if (strncmp(path, "file://", 7) == 0)
            path += 7;
        else if (strncmp(path, "file:", 5) == 0)
            path += 5;
        if (path[0] != '/') {
            ns_log(NS_LOG_ERROR, "pin-source must be file:/absolute/path in '%s'", u->safe);
            return NS_E_INVAL;
        }
        return read_pin_file(path, pin);
    }
    if (pin_env != NULL) {
        const char *v = getenv(pin_env);
        if (v == NULL) {
            ns_log(NS_LOG_ERROR, "PIN environment variable %s is not set", pin_env);
            return NS_E_NOT_FOUND;
        }
        if (strlen(v) >= PIN_MAX) {
            ns_log(NS_LOG_ERROR, "PIN environment variable %s is too long", pin_env);
            return NS_E_INVAL;
        }
        return ns_buf_from(v, strlen(v), PIN_MAX, true, pin);
    }
    return NS_E_NOT_FOUND;
}

int ns_p11_uri_has_pin_source(const ns_p11_uri *u, const char *pin_env)
{
    return p11_kit_uri_get_pin_value(u->uri) != NULL || p11_kit_uri_get_pin_source(u->uri) != NULL ||
           pin_env != NULL;
}
