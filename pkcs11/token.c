#include "ns-build.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/secmem.h"
#include "pkcs11/module.h"
#include "pkcs11/rv.h"
#include "pkcs11/internal.h"
#include "pkcs11/token.h"

struct ns_p11_token {
    ns_p11_module *mod;
    CK_FUNCTION_LIST *fn;
    ns_p11_uri *uri; /* token attributes used to find the token again after a fault */
    char label[33];
    ns_buf *pin; /* NULL when the token needs no PIN or has a protected authentication path */
    int login_required;

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE free_s[NS_P11_SESSIONS_MAX];
    unsigned nfree;
    unsigned open; /* sessions of the current generation, free or borrowed */
    unsigned max;
    unsigned gen;     /* bumped whenever every session is closed; stale sessions and handles are dropped */
    int broken;       /* sessions were closed; the next borrower finds the token and logs in again */
    int64_t retry_at; /* CLOCK_MONOTONIC ms: no recovery attempt before this (after a failed one) */
    int last_err;     /* what the last failed recovery returned, for borrowers within the back-off */

    int refs; /* guarded by tokens_lock */
    ns_p11_token *next;
};

static pthread_mutex_t tokens_lock = PTHREAD_MUTEX_INITIALIZER;
static ns_p11_token *tokens;

static void trim_label(const unsigned char src[32], char dst[33])
{
    size_t n = 32;
    memcpy(dst, src, 32);
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

/* Find the single slot whose token matches the URI. */
static int find_slot(CK_FUNCTION_LIST *fn, const char *module, ns_p11_uri *uri, CK_SLOT_ID *slot,
                     CK_TOKEN_INFO *info_out, int quiet)
{
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0, matches = 0;
    CK_TOKEN_INFO info;
    CK_RV rv;
    int r = NS_E_INTERNAL;

    if ((rv = fn->C_GetSlotList(CK_TRUE, NULL, &n)) != CKR_OK) {
        r = ns_p11_rv_error(rv, module, "C_GetSlotList");
        goto out;
    }
    if ((slots = calloc(n ? n : 1, sizeof(*slots))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((rv = fn->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK) {
        r = ns_p11_rv_error(rv, module, "C_GetSlotList");
        goto out;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        if (fn->C_GetTokenInfo(slots[i], &info) != CKR_OK)
            continue;
        if (!(info.flags & CKF_TOKEN_INITIALIZED) || !ns_p11_uri_match_token(uri, &info))
            continue;
        if (matches++ == 0) {
            *slot = slots[i];
            *info_out = info;
        }
    }
    if (matches == 0) {
        if (!quiet)
            ns_log(NS_LOG_ERROR, "no token matching '%s' on module %s", ns_p11_uri_safe_text(uri), module);
        r = NS_E_TOKEN_UNAVAILABLE;
        goto out;
    }
    if (matches > 1) {
        ns_log(NS_LOG_ERROR, "'%s' matches %lu tokens on module %s; name one with token= or serial=",
               ns_p11_uri_safe_text(uri), (unsigned long)matches, module);
        r = NS_E_INVAL;
        goto out;
    }
    r = 0;
out:
    free(slots);
    return r;
}

static int login(ns_p11_token *t, CK_SESSION_HANDLE s)
{
    CK_RV rv;
    if (!t->login_required)
        return 0;
    rv = t->fn->C_Login(s, CKU_USER, t->pin ? t->pin->data : NULL, t->pin ? t->pin->len : 0);
    if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
        return 0;
    return ns_p11_rv_error(rv, t->label, "C_Login");
}

static int open_session(ns_p11_token *t, CK_SESSION_HANDLE *s)
{
    CK_RV rv = t->fn->C_OpenSession(t->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s);
    return ns_p11_rv_error(rv, t->label, "C_OpenSession");
}

/* Close our idle sessions so that the next borrower starts afresh; borrowed ones are closed when returned.
 * Only our own sessions: C_CloseAllSessions would also end sessions that other code in the process (an
 * OpenSSL engine, say) holds on the same slot. Caller holds t->lock. */
static void break_locked(ns_p11_token *t)
{
    for (unsigned i = 0; i < t->nfree; i++)
        (void)t->fn->C_CloseSession(t->free_s[i]);
    t->gen++;
    t->nfree = 0;
    t->open = 0;
    t->broken = 1;
    pthread_cond_broadcast(&t->cond);
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int recover_attempt_locked(ns_p11_token *t);

/* Find the token again (it may be in another slot), open a session and log in. Caller holds t->lock.
 * After a failed attempt the next one waits NS_P11_RECOVER_BACKOFF_MS, and borrowers in between get the same
 * error at once: while a token is gone, a busy server neither queues every request behind a slot scan and a
 * login (which a network HSM may take seconds to refuse) nor logs one "no token" line per request, nor
 * repeats C_Login at its request rate. */
static int recover_locked(ns_p11_token *t)
{
    int64_t now = mono_ms();
    int r;

    if (now < t->retry_at)
        return t->last_err;
    if ((r = recover_attempt_locked(t)) != 0) {
        t->retry_at = now + NS_P11_RECOVER_BACKOFF_MS;
        t->last_err = r;
    }
    return r;
}

static int recover_attempt_locked(ns_p11_token *t)
{
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    CK_TOKEN_INFO info;
    CK_SLOT_ID slot;
    int r;

    if ((r = find_slot(t->fn, ns_p11_module_path(t->mod), t->uri, &slot, &info, 0)) != 0)
        return r;
    t->slot = slot;
    if ((r = open_session(t, &s)) != 0)
        return r;
    if ((r = login(t, s)) != 0) {
        (void)t->fn->C_CloseSession(s);
        return r;
    }
    t->free_s[t->nfree++] = s;
    t->open = 1;
    t->broken = 0;
    ns_log(NS_LOG_INFO, "token '%s': sessions reopened", t->label);
    return 0;
}

static int session_get(ns_p11_token *t, CK_SESSION_HANDLE *s, unsigned *gen)
{
    int r = 0;

    pthread_mutex_lock(&t->lock);
    for (;;) {
        if (t->broken && (r = recover_locked(t)) != 0)
            break;
        if (t->nfree > 0) {
            *s = t->free_s[--t->nfree];
            break;
        }
        if (t->open < t->max) {
            if ((r = open_session(t, s)) == 0)
                t->open++;
            break;
        }
        pthread_cond_wait(&t->cond, &t->lock);
    }
    *gen = t->gen;
    pthread_mutex_unlock(&t->lock);
    return r;
}

static void session_put(ns_p11_token *t, CK_SESSION_HANDLE s, unsigned gen)
{
    pthread_mutex_lock(&t->lock);
    /* A session borrowed before a fault is closed now (it is still ours: nobody else closed it). */
    if (gen == t->gen && !t->broken)
        t->free_s[t->nfree++] = s;
    else
        (void)t->fn->C_CloseSession(s);
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

/* A session whose operation failed is not pooled again: PKCS#11 says a failed C_Sign or C_Decrypt ends the
 * operation, but a token that fails with CKR_DEVICE_ERROR and the like may leave it active, and a pooled
 * session with an active operation fails every later borrower with CKR_OPERATION_ACTIVE, long after the
 * token is well again. A replacement is opened before it is closed: closing an application's last session
 * logs it out (PKCS#11 2.40, C_CloseSession), and the pool keeps its login. If none can be opened, the pool
 * is marked broken so that the next borrower finds the token and logs in again. */
static void session_drop(ns_p11_token *t, CK_SESSION_HANDLE s, unsigned gen)
{
    CK_SESSION_HANDLE fresh = CK_INVALID_HANDLE;

    pthread_mutex_lock(&t->lock);
    if (gen == t->gen && !t->broken) {
        if (t->fn->C_OpenSession(t->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &fresh) == CKR_OK)
            t->free_s[t->nfree++] = fresh;
        else
            break_locked(t);
    }
    (void)t->fn->C_CloseSession(s);
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

static void mark_broken(ns_p11_token *t, unsigned gen)
{
    pthread_mutex_lock(&t->lock);
    if (gen == t->gen && !t->broken)
        break_locked(t);
    pthread_mutex_unlock(&t->lock);
}

/* Log in again if the application's login was lost (a C_Logout elsewhere, a token reset): private objects
 * are invisible without it, and SoftHSM drops their handles. */
CK_RV ns_p11_token_relogin(ns_p11_token *t, CK_SESSION_HANDLE s)
{
    CK_SESSION_INFO si;
    CK_RV rv;

    if (!t->login_required)
        return CKR_OK;
    memset(&si, 0, sizeof(si));
    if ((rv = t->fn->C_GetSessionInfo(s, &si)) != CKR_OK)
        return rv;
    if (si.state != CKS_RO_PUBLIC_SESSION && si.state != CKS_RW_PUBLIC_SESSION)
        return CKR_OK;
    ns_log(NS_LOG_WARN, "token '%s': not logged in any more; logging in again", t->label);
    rv = t->fn->C_Login(s, CKU_USER, t->pin ? t->pin->data : NULL, t->pin ? t->pin->len : 0);
    return rv == CKR_USER_ALREADY_LOGGED_IN ? CKR_OK : rv;
}

static int run(ns_p11_token *t, ns_p11_key *key, const char *what, ns_p11_op op, void *ctx, CK_RV *rv_out,
               int quiet)
{
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE obj;
    CK_RV rv = CKR_OK;
    unsigned gen;
    int r;

    for (int attempt = 0;; attempt++) {
        if ((r = session_get(t, &s, &gen)) != 0) {
            if (attempt == 0 && r == NS_E_TOKEN_UNAVAILABLE) {
                mark_broken(t, gen);
                continue;
            }
            return r;
        }
        obj = CK_INVALID_HANDLE;
        rv = CKR_OK;
        if (key != NULL) {
            int missing = 0;
            rv = ns_p11_key_handle(key, s, gen, &obj, &missing);
            if (missing) {
                session_put(t, s, gen);
                return NS_E_TOKEN_OBJECT;
            }
        }
        if (rv == CKR_OK && op != NULL)
            rv = op(t->fn, s, obj, ctx);
        if (rv == CKR_OK) {
            session_put(t, s, gen);
            break;
        }
        session_drop(t, s, gen);
        if (attempt == 0 && ns_p11_rv_recoverable(rv)) {
            ns_log(NS_LOG_WARN, "token '%s': %s: %s; reopening sessions and retrying once", t->label, what,
                   ns_p11_rv_name(rv));
            mark_broken(t, gen);
            continue;
        }
        if (attempt == 0 && key != NULL &&
            (rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID ||
             rv == CKR_WRAPPING_KEY_HANDLE_INVALID || rv == CKR_UNWRAPPING_KEY_HANDLE_INVALID)) {
            ns_p11_key_forget(key);
            continue;
        }
        break;
    }
    if (rv_out != NULL)
        *rv_out = rv;
    return quiet ? ns_p11_rv_map(rv) : ns_p11_rv_error(rv, t->label, what);
}

int ns_p11_run(ns_p11_token *t, ns_p11_key *key, const char *what, ns_p11_op op, void *ctx, CK_RV *rv_out)
{
    return run(t, key, what, op, ctx, rv_out, 0);
}

int ns_p11_run_quiet(ns_p11_token *t, ns_p11_key *key, const char *what, ns_p11_op op, void *ctx,
                     CK_RV *rv_out)
{
    return run(t, key, what, op, ctx, rv_out, 1);
}

static void token_free(ns_p11_token *t)
{
    if (t == NULL)
        return;
    for (unsigned i = 0; t->fn != NULL && i < t->nfree; i++)
        (void)t->fn->C_CloseSession(t->free_s[i]);
    ns_buf_free(t->pin);
    ns_p11_uri_free(t->uri);
    ns_p11_module_put(t->mod);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
    free(t);
}

static int check_same_pin(ns_p11_token *e, ns_p11_uri *uri, const char *pin_env)
{
    ns_buf *pin = NULL;
    int r;

    if (!e->login_required || e->pin == NULL)
        return 0;
    if ((r = ns_p11_uri_pin(uri, pin_env, &pin)) != 0) {
        if (r == NS_E_NOT_FOUND && !ns_p11_uri_has_pin_source(uri, pin_env))
            ns_log(NS_LOG_ERROR,
                   "token '%s' needs a PIN: add pin-source=file:/path to the URI, or pin_env to the "
                   "config",
                   e->label);
        return r == NS_E_NOT_FOUND ? NS_E_PIN : r;
    }
    if (pin->len != e->pin->len || ns_ct_memcmp(pin->data, e->pin->data, pin->len) != 0) {
        ns_log(NS_LOG_ERROR, "token '%s': this key's PIN differs from the one the token was opened with",
               e->label);
        r = NS_E_PIN;
    }
    ns_buf_free(pin);
    return r;
}

int ns_p11_token_open(const char *uri_text, const char *pin_env, unsigned sessions, ns_p11_token **out)
{
    ns_p11_token *t = NULL, *e;
    CK_TOKEN_INFO info;
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    int r = NS_E_INTERNAL;

    if (sessions == 0 || sessions > NS_P11_SESSIONS_MAX)
        return NS_E_INVAL;
    if ((t = calloc(1, sizeof(*t))) == NULL)
        return NS_E_NOMEM;
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    t->max = sessions;
    t->gen = 1;
    t->refs = 1;
    if ((r = ns_p11_uri_parse(uri_text, &t->uri)) != 0)
        goto out;
    if ((r = ns_p11_module_get(ns_p11_uri_module_path(t->uri), &t->mod)) != 0)
        goto out;
    t->fn = ns_p11_module_fn(t->mod);
    /* SoftHSM rewrites its token file on every login, and another process reading it at that moment sees
     * no token for a few milliseconds: look again a few times before calling the token absent. */
    for (int attempt = 0;; attempt++) {
        r = find_slot(t->fn, ns_p11_module_path(t->mod), t->uri, &t->slot, &info, attempt < 4);
        if (r != NS_E_TOKEN_UNAVAILABLE || attempt == 4)
            break;
        usleep(10000u << attempt);
    }
    if (r != 0)
        goto out;
    trim_label(info.label, t->label);

    pthread_mutex_lock(&tokens_lock);
    for (e = tokens; e != NULL; e = e->next)
        if (e->mod == t->mod && e->slot == t->slot)
            break;
    if (e != NULL) {
        /* The token is open already: this URI must still carry the right PIN, or a misconfigured entry
         * would work only while another entry happens to have opened the token first. */
        if ((r = check_same_pin(e, t->uri, pin_env)) == 0)
            e->refs++;
        pthread_mutex_unlock(&tokens_lock);
        if (r == 0)
            *out = e;
        goto out;
    }

    t->login_required = (info.flags & CKF_LOGIN_REQUIRED) != 0;
    if (t->login_required && !(info.flags & CKF_PROTECTED_AUTHENTICATION_PATH)) {
        r = ns_p11_uri_pin(t->uri, pin_env, &t->pin);
        if (r == NS_E_NOT_FOUND && !ns_p11_uri_has_pin_source(t->uri, pin_env))
            ns_log(NS_LOG_ERROR,
                   "token '%s' needs a PIN: add pin-source=file:/path to the URI, or pin_env to the config",
                   t->label);
        if (r != 0) {
            pthread_mutex_unlock(&tokens_lock);
            r = r == NS_E_NOT_FOUND ? NS_E_PIN : r;
            goto out;
        }
    }
    if ((r = open_session(t, &s)) != 0 || (r = login(t, s)) != 0) {
        if (s != CK_INVALID_HANDLE)
            (void)t->fn->C_CloseSession(s);
        pthread_mutex_unlock(&tokens_lock);
        goto out;
    }
    t->free_s[t->nfree++] = s;
    t->open = 1;
    t->next = tokens;
    tokens = t;
    pthread_mutex_unlock(&tokens_lock);
    *out = t;
    t = NULL;
    r = 0;
out:
    token_free(t);
    return r;
}

void ns_p11_token_close(ns_p11_token *t)
{
    ns_p11_token **pp;

    if (t == NULL)
        return;
    pthread_mutex_lock(&tokens_lock);
    if (--t->refs > 0) {
        pthread_mutex_unlock(&tokens_lock);
        return;
    }
    for (pp = &tokens; *pp != NULL; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    pthread_mutex_unlock(&tokens_lock);
    token_free(t);
}

const char *ns_p11_token_label(const ns_p11_token *t)
{
    return t->label;
}

const char *ns_p11_token_module_path(const ns_p11_token *t)
{
    return ns_p11_module_path(t->mod);
}

const ns_p11_fn3 *ns_p11_token_fn3(const ns_p11_token *t)
{
    return ns_p11_module_fn3(t->mod);
}

unsigned ns_p11_token_open_sessions(ns_p11_token *t)
{
    unsigned n;
    pthread_mutex_lock(&t->lock);
    n = t->open;
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* The token's info on mechanism `mech`, from the current slot. */
static CK_RV mech_info(ns_p11_token *t, CK_MECHANISM_TYPE mech, CK_MECHANISM_INFO *info)
{
    CK_SLOT_ID slot;

    /* SoftHSM 2.6.1 ORs its flags into what is there: start from zero. */
    memset(info, 0, sizeof(*info));
    pthread_mutex_lock(&t->lock);
    slot = t->slot;
    pthread_mutex_unlock(&t->lock);
    return t->fn->C_GetMechanismInfo(slot, mech, info);
}

int ns_p11_token_require_mech(ns_p11_token *t, CK_MECHANISM_TYPE mech, CK_FLAGS flags, const char *name)
{
    CK_MECHANISM_INFO info;
    CK_RV rv = mech_info(t, mech, &info);

    if (rv == CKR_OK && (info.flags & flags) == flags)
        return 0;
    if (rv != CKR_OK && rv != CKR_MECHANISM_INVALID)
        return ns_p11_rv_error(rv, t->label, "C_GetMechanismInfo");
    ns_log(NS_LOG_ERROR, "token '%s' (module %s) does not offer mechanism %s%s", t->label,
           ns_p11_module_path(t->mod), name, rv == CKR_OK ? " for the needed operation" : "");
    return NS_E_MECHANISM;
}

int ns_p11_token_has_mech(ns_p11_token *t, CK_MECHANISM_TYPE mech, CK_FLAGS flags)
{
    CK_MECHANISM_INFO info;

    return mech_info(t, mech, &info) == CKR_OK && (info.flags & flags) == flags;
}

CK_FUNCTION_LIST *ns_p11_token_fn(const ns_p11_token *t)
{
    return t->fn;
}

void ns_p11_token_ref(ns_p11_token *t)
{
    pthread_mutex_lock(&tokens_lock);
    t->refs++;
    pthread_mutex_unlock(&tokens_lock);
}
