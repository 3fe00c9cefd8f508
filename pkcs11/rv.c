#include "ns-build.h"

#include <stdio.h>

#include "common/log.h"
#include "pkcs11/rv.h"

#define RV(x)                                                                                                \
    case x:                                                                                                  \
        return #x

const char *ns_p11_rv_name(CK_RV rv)
{
    static __thread char other[32];
    switch (rv) {
        RV(CKR_OK);
        RV(CKR_CANCEL);
        RV(CKR_HOST_MEMORY);
        RV(CKR_SLOT_ID_INVALID);
        RV(CKR_GENERAL_ERROR);
        RV(CKR_FUNCTION_FAILED);
        RV(CKR_ARGUMENTS_BAD);
        RV(CKR_NO_EVENT);
        RV(CKR_NEED_TO_CREATE_THREADS);
        RV(CKR_CANT_LOCK);
        RV(CKR_ATTRIBUTE_READ_ONLY);
        RV(CKR_ATTRIBUTE_SENSITIVE);
        RV(CKR_ATTRIBUTE_TYPE_INVALID);
        RV(CKR_ATTRIBUTE_VALUE_INVALID);
        RV(CKR_DATA_INVALID);
        RV(CKR_DATA_LEN_RANGE);
        RV(CKR_DEVICE_ERROR);
        RV(CKR_DEVICE_MEMORY);
        RV(CKR_DEVICE_REMOVED);
        RV(CKR_ENCRYPTED_DATA_INVALID);
        RV(CKR_ENCRYPTED_DATA_LEN_RANGE);
        RV(CKR_FUNCTION_CANCELED);
        RV(CKR_FUNCTION_NOT_PARALLEL);
        RV(CKR_FUNCTION_NOT_SUPPORTED);
        RV(CKR_KEY_HANDLE_INVALID);
        RV(CKR_KEY_SIZE_RANGE);
        RV(CKR_KEY_TYPE_INCONSISTENT);
        RV(CKR_KEY_NOT_NEEDED);
        RV(CKR_KEY_CHANGED);
        RV(CKR_KEY_NEEDED);
        RV(CKR_KEY_INDIGESTIBLE);
        RV(CKR_KEY_FUNCTION_NOT_PERMITTED);
        RV(CKR_KEY_NOT_WRAPPABLE);
        RV(CKR_KEY_UNEXTRACTABLE);
        RV(CKR_MECHANISM_INVALID);
        RV(CKR_MECHANISM_PARAM_INVALID);
        RV(CKR_OBJECT_HANDLE_INVALID);
        RV(CKR_OPERATION_ACTIVE);
        RV(CKR_OPERATION_NOT_INITIALIZED);
        RV(CKR_PIN_INCORRECT);
        RV(CKR_PIN_INVALID);
        RV(CKR_PIN_LEN_RANGE);
        RV(CKR_PIN_EXPIRED);
        RV(CKR_PIN_LOCKED);
        RV(CKR_SESSION_CLOSED);
        RV(CKR_SESSION_COUNT);
        RV(CKR_SESSION_HANDLE_INVALID);
        RV(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        RV(CKR_SESSION_READ_ONLY);
        RV(CKR_SESSION_EXISTS);
        RV(CKR_SESSION_READ_ONLY_EXISTS);
        RV(CKR_SESSION_READ_WRITE_SO_EXISTS);
        RV(CKR_SIGNATURE_INVALID);
        RV(CKR_SIGNATURE_LEN_RANGE);
        RV(CKR_TEMPLATE_INCOMPLETE);
        RV(CKR_TEMPLATE_INCONSISTENT);
        RV(CKR_TOKEN_NOT_PRESENT);
        RV(CKR_TOKEN_NOT_RECOGNIZED);
        RV(CKR_TOKEN_WRITE_PROTECTED);
        RV(CKR_UNWRAPPING_KEY_HANDLE_INVALID);
        RV(CKR_UNWRAPPING_KEY_SIZE_RANGE);
        RV(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT);
        RV(CKR_USER_ALREADY_LOGGED_IN);
        RV(CKR_USER_NOT_LOGGED_IN);
        RV(CKR_USER_PIN_NOT_INITIALIZED);
        RV(CKR_USER_TYPE_INVALID);
        RV(CKR_USER_ANOTHER_ALREADY_LOGGED_IN);
        RV(CKR_USER_TOO_MANY_TYPES);
        RV(CKR_WRAPPED_KEY_INVALID);
        RV(CKR_WRAPPED_KEY_LEN_RANGE);
        RV(CKR_WRAPPING_KEY_HANDLE_INVALID);
        RV(CKR_WRAPPING_KEY_SIZE_RANGE);
        RV(CKR_WRAPPING_KEY_TYPE_INCONSISTENT);
        RV(CKR_RANDOM_SEED_NOT_SUPPORTED);
        RV(CKR_RANDOM_NO_RNG);
        RV(CKR_DOMAIN_PARAMS_INVALID);
        RV(CKR_BUFFER_TOO_SMALL);
        RV(CKR_SAVED_STATE_INVALID);
        RV(CKR_INFORMATION_SENSITIVE);
        RV(CKR_STATE_UNSAVEABLE);
        RV(CKR_CRYPTOKI_NOT_INITIALIZED);
        RV(CKR_CRYPTOKI_ALREADY_INITIALIZED);
        RV(CKR_MUTEX_BAD);
        RV(CKR_MUTEX_NOT_LOCKED);
        RV(CKR_FUNCTION_REJECTED);
        RV(CKR_ACTION_PROHIBITED);
        RV(CKR_CURVE_NOT_SUPPORTED);
        RV(CKR_PIN_TOO_WEAK);
        RV(CKR_PUBLIC_KEY_INVALID);
    default:
        snprintf(other, sizeof(other), "CKR_0x%08lx", (unsigned long)rv);
        return other;
    }
}

int ns_p11_rv_recoverable(CK_RV rv)
{
    switch (rv) {
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_DEVICE_ERROR:
        return 1;
    default:
        return 0;
    }
}

int ns_p11_rv_map(CK_RV rv)
{
    switch (rv) {
    case CKR_OK:
        return 0;
    case CKR_HOST_MEMORY:
        return NS_E_NOMEM;
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_LOCKED:
    case CKR_PIN_TOO_WEAK:
    case CKR_USER_PIN_NOT_INITIALIZED:
        return NS_E_PIN;
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID:
    case CKR_DEVICE_ERROR:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
        return NS_E_TOKEN_UNAVAILABLE;
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
        return NS_E_MECHANISM;
    case CKR_KEY_HANDLE_INVALID:
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_WRAPPING_KEY_HANDLE_INVALID:
    case CKR_UNWRAPPING_KEY_HANDLE_INVALID:
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_WRAPPING_KEY_TYPE_INCONSISTENT:
    case CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_UNEXTRACTABLE:
    case CKR_KEY_NOT_WRAPPABLE:
        return NS_E_TOKEN_OBJECT;
    /* Decrypting or unwrapping data that fails the mechanism's own check: the data is bad, or the key is
     * not the one it was made with (SoftHSM reports a bad GCM tag as CKR_GENERAL_ERROR; callers that know
     * the data is ciphertext handle that case themselves). */
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
    case CKR_WRAPPED_KEY_INVALID:
    case CKR_WRAPPED_KEY_LEN_RANGE:
        return NS_E_INTEGRITY;
    default:
        return NS_E_TOKEN;
    }
}

int ns_p11_rv_error(CK_RV rv, const char *token, const char *what)
{
    int r = ns_p11_rv_map(rv);
    if (r != 0)
        ns_log(NS_LOG_ERROR, "token '%s': %s failed: %s", token ? token : "?", what, ns_p11_rv_name(rv));
    return r;
}
