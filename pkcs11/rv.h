/* CK_RV translation: the one place where a PKCS#11 return value becomes a project error. */
#ifndef NS_PKCS11_RV_H
#define NS_PKCS11_RV_H

#include <p11-kit/pkcs11.h>

#include "common/err.h"

/* The CKR_ name of rv ("CKR_DEVICE_ERROR"), or "CKR_0x..." for vendor values (static buffer per thread). */
const char *ns_p11_rv_name(CK_RV rv);

/* Map rv to a project error without logging (for probes whose failure is an answer, not an error). */
int ns_p11_rv_map(CK_RV rv);

/* Map rv to a project error, logging the CKR name with `what` (the function and object concerned, never a
 * PIN or key bytes) and `token` (its label). CKR_OK maps to 0 and logs nothing. */
int ns_p11_rv_error(CK_RV rv, const char *token, const char *what) NS_WUR;

/* True for the return values after which the session or login may be gone and one reopen + retry is
 * worth it: CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
 * CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_ERROR. */
int ns_p11_rv_recoverable(CK_RV rv);

#endif
