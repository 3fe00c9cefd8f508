/* A logged-in token with a pool of sessions, recovery and mechanism checks (key objects: pkcs11/key.h).
 *
 * ns_p11_token_open() finds the one token matching an RFC 7512 URI on its module (or the p11-kit proxy),
 * logs in once with the URI's PIN, and keeps up to `sessions` sessions that threads borrow for one
 * operation at a time. Tokens are shared: opening a second URI on the same module and slot returns the same
 * token with its reference count raised.
 *
 * Every call into the token goes through ns_p11_run(): on CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
 * CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_USER_NOT_LOGGED_IN or CKR_DEVICE_ERROR it closes its own
 * sessions, finds the token again (it may be in another slot after being re-plugged), logs in again and
 * retries the operation once; a stale object handle is looked up again and retried once. Then it fails
 * with the project error for the CK_RV (pkcs11/rv.h), whose CKR name is logged. */
#ifndef NS_PKCS11_TOKEN_H
#define NS_PKCS11_TOKEN_H

#include <stddef.h>

#include <p11-kit/pkcs11.h>

#include "common/err.h"
#include "pkcs11/uri.h"
#include "pkcs11/v3.h"

#define NS_P11_SESSIONS_MAX 64
/* After a failed attempt to find the token again and log in, the next attempt waits this long; operations
 * in between fail at once with the same error. */
#define NS_P11_RECOVER_BACKOFF_MS 250

typedef struct ns_p11_token ns_p11_token;
typedef struct ns_p11_key ns_p11_key;

/* Open (or reference) the token named by `uri`. pin_env may be NULL. A token that needs a login and has
 * no PIN source is an error (NS_E_PIN). */
int ns_p11_token_open(const char *uri, const char *pin_env, unsigned sessions, ns_p11_token **out) NS_WUR;
void ns_p11_token_close(ns_p11_token *t);

/* The token's label (trimmed), for messages. */
const char *ns_p11_token_label(const ns_p11_token *t);
const char *ns_p11_token_module_path(const ns_p11_token *t);
/* The module's PKCS#11 3.0 function list, or NULL (a 2.40 module: SoftHSM 2.6, the p11-kit 0.24 proxy). */
const ns_p11_fn3 *ns_p11_token_fn3(const ns_p11_token *t);

/* 0 if the token lists mechanism `mech` with all of `flags` (e.g. CKF_DECRYPT); otherwise
 * NS_E_MECHANISM, with a log line naming the token, the module and `name` (e.g. "CKM_AES_GCM"). */
int ns_p11_token_require_mech(ns_p11_token *t, CK_MECHANISM_TYPE mech, CK_FLAGS flags,
                              const char *name) NS_WUR;

/* 1 if the token lists mechanism `mech` with all of `flags`, else 0 (also when the query fails). Quiet. */
int ns_p11_token_has_mech(ns_p11_token *t, CK_MECHANISM_TYPE mech, CK_FLAGS flags);

/* An operation on one session. `obj` is the key's handle (CK_INVALID_HANDLE for token-level operations).
 * It must leave the session with no operation active. */
typedef CK_RV (*ns_p11_op)(CK_FUNCTION_LIST *fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, void *ctx);

/* Run op on a pooled session with recovery (see above). `what` names the call for messages
 * ("C_Decrypt with kek-2"). If rv_out is not NULL it receives the final CK_RV. */
int ns_p11_run(ns_p11_token *t, ns_p11_key *key, const char *what, ns_p11_op op, void *ctx,
               CK_RV *rv_out) NS_WUR;

/* As ns_p11_run, but a final failure is returned without being logged (probes). */
int ns_p11_run_quiet(ns_p11_token *t, ns_p11_key *key, const char *what, ns_p11_op op, void *ctx,
                     CK_RV *rv_out) NS_WUR;

/* Number of sessions the pool holds open now (for tests and metrics). */
unsigned ns_p11_token_open_sessions(ns_p11_token *t);

#endif
