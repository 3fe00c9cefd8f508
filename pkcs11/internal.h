/* Private to pkcs11/: what the session pool (token.c) and the key objects (key.c) call in each other. Not
 * for use outside this folder. */
#ifndef NS_PKCS11_INTERNAL_H
#define NS_PKCS11_INTERNAL_H

#include <p11-kit/pkcs11.h>

#include "pkcs11/token.h"

/* The module's function list. */
CK_FUNCTION_LIST *ns_p11_token_fn(const ns_p11_token *t);
/* Take one more reference to the token (dropped by ns_p11_token_close). */
void ns_p11_token_ref(ns_p11_token *t);
/* Log in again on session s if the application's login was lost (a C_Logout elsewhere, a token reset). */
CK_RV ns_p11_token_relogin(ns_p11_token *t, CK_SESSION_HANDLE s);

/* The key's object handle for session s of pool generation gen, looked up again when it is unknown or the
 * pool reopened its sessions since. Returns the lookup's CK_RV; if it succeeded but found no object or more
 * than one, *missing is set to 1 (logged) and *obj is not set. */
CK_RV ns_p11_key_handle(ns_p11_key *k, CK_SESSION_HANDLE s, unsigned gen, CK_OBJECT_HANDLE *obj,
                        int *missing);
/* Drop the cached handle (stale): the next ns_p11_key_handle looks the key up again. */
void ns_p11_key_forget(ns_p11_key *k);

#endif
