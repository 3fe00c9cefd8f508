/* Loaded PKCS#11 modules, shared by every token on them.
 *
 * A module is dlopen'ed once per process and initialised with CKF_OS_LOCKING_OK (SoftHSM, for one, drops
 * its own locking without it). ns_p11_module_get() returns a reference; the last ns_p11_module_put()
 * finalises and unloads it. */
#ifndef NS_PKCS11_MODULE_H
#define NS_PKCS11_MODULE_H

#include <p11-kit/pkcs11.h>

#include "common/err.h"
#include "pkcs11/v3.h"

typedef struct ns_p11_module ns_p11_module;

/* Load (or reference) the module at path; NULL path means the p11-kit proxy module. Errors:
 * NS_E_TOKEN_UNAVAILABLE (no such file), NS_E_TOKEN (not a PKCS#11 module, or C_Initialize failed). */
int ns_p11_module_get(const char *path, ns_p11_module **out) NS_WUR;
void ns_p11_module_put(ns_p11_module *m);

CK_FUNCTION_LIST *ns_p11_module_fn(const ns_p11_module *m);
const char *ns_p11_module_path(const ns_p11_module *m);
/* The module's PKCS#11 3.0 function list (C_GetInterface "PKCS 11" 3.0), or NULL for a 2.40 module. */
const ns_p11_fn3 *ns_p11_module_fn3(const ns_p11_module *m);

#endif
