/* RFC 7512 PKCS#11 URIs (parsed by p11-kit) and PINs.
 *
 * Recognised: path attributes token=, manufacturer=, serial=, model=, object=, id=, type=; query
 * attributes module-path=, pin-source= (file:PATH or an absolute PATH), pin-value=. A URI with no
 * module-path uses the p11-kit proxy module. PINs are read into secure memory and never logged: every
 * message that shows a URI shows ns_p11_uri_redacted(). */
#ifndef NS_PKCS11_URI_H
#define NS_PKCS11_URI_H

#include <stdbool.h>

#include <p11-kit/pkcs11.h>

#include "common/buf.h"
#include "common/err.h"

typedef struct ns_p11_uri ns_p11_uri;

/* Parse; NS_E_INVAL (reason logged, URI redacted) if it is not a valid PKCS#11 URI. */
int ns_p11_uri_parse(const char *text, ns_p11_uri **out) NS_WUR;
void ns_p11_uri_free(ns_p11_uri *u);

/* Whether ns_p11_uri_parse() would accept `text` (checked quietly: for config validation). */
bool ns_p11_uri_valid(const char *text);
#define NS_P11_URI_RULE "must be a PKCS#11 URI (RFC 7512) starting with \"pkcs11:\""

/* The module path named by the URI, or NULL (use the p11-kit proxy). */
const char *ns_p11_uri_module_path(const ns_p11_uri *u);
/* The URI's text with any pin-value replaced by "***": safe for logs. */
const char *ns_p11_uri_safe_text(const ns_p11_uri *u);
/* 1 if the token info matches the URI's token attributes. */
int ns_p11_uri_match_token(const ns_p11_uri *u, CK_TOKEN_INFO *info);
/* The URI's object attributes (CKA_LABEL from object=, CKA_ID from id=, CKA_CLASS from type=);
 * borrowed from u. */
CK_ATTRIBUTE *ns_p11_uri_object_attrs(const ns_p11_uri *u, CK_ULONG *n);
/* The label (object=, required and not empty) and id (id=, optional: *id zeroed when absent) for a key
 * about to be generated; attribute values borrowed from u. NS_E_USAGE, logged, without a label. */
int ns_p11_uri_new_key_attrs(const ns_p11_uri *u, CK_ATTRIBUTE *label, CK_ATTRIBUTE *id) NS_WUR;
/* 1 if the URI names an object (object= or id=). */
int ns_p11_uri_names_object(const ns_p11_uri *u);

/* The PIN: pin-value from the URI, else the file named by pin-source (must be a regular file, not
 * readable or writable by group or others; one trailing newline stripped), else the environment variable
 * named pin_env (may be NULL). NS_E_NOT_FOUND if none is given; NS_E_PERM, NS_E_INVAL or NS_E_NOT_FOUND for
 * a bad pin-source file. The PIN comes back in a secret buffer. */
int ns_p11_uri_pin(const ns_p11_uri *u, const char *pin_env, ns_buf **pin) NS_WUR;

/* 1 if the URI or pin_env names any PIN source (even one that turns out to be missing). */
int ns_p11_uri_has_pin_source(const ns_p11_uri *u, const char *pin_env);

/* Copy of `text` with the value of every pin-value attribute replaced by "***" (caller frees). NULL on
 * allocation failure. */
char *ns_p11_uri_redact(const char *text);

#endif
