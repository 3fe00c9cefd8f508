/* A PKCS#11 module that forwards every call to a real module and fails on demand: the fault-injecting
 * wrapper around SoftHSM that tests use to make a token fail in the middle of a running server.
 *
 *   NS_P11_FAULT_MODULE  the real module (e.g. libsofthsm2.so); required
 *   NS_P11_FAULT_FILE    while this file exists, C_Sign, C_SignInit, C_Decrypt, C_DecryptInit, C_Encrypt,
 *                        C_UnwrapKey and C_FindObjectsInit return CKR_DEVICE_ERROR
 *
 * Loaded by URI (module-path=) like any module. Everything else is the real module's function list. */
#include "config.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

static CK_FUNCTION_LIST real, wrapped;

static int failing(void)
{
    const char *f = getenv("NS_P11_FAULT_FILE");
    return f != NULL && access(f, F_OK) == 0;
}

static CK_RV w_sign_init(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
    return failing() ? CKR_DEVICE_ERROR : real.C_SignInit(s, m, k);
}

static CK_RV w_sign(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR sig, CK_ULONG_PTR sn)
{
    return failing() ? CKR_DEVICE_ERROR : real.C_Sign(s, d, n, sig, sn);
}

static CK_RV w_decrypt_init(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
    return failing() ? CKR_DEVICE_ERROR : real.C_DecryptInit(s, m, k);
}

static CK_RV w_decrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR c, CK_ULONG n, CK_BYTE_PTR p, CK_ULONG_PTR pn)
{
    return failing() ? CKR_DEVICE_ERROR : real.C_Decrypt(s, c, n, p, pn);
}

static CK_RV w_encrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR p, CK_ULONG n, CK_BYTE_PTR c, CK_ULONG_PTR cn)
{
    return failing() ? CKR_DEVICE_ERROR : real.C_Encrypt(s, p, n, c, cn);
}

static CK_RV w_unwrap(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k, CK_BYTE_PTR w, CK_ULONG n,
                      CK_ATTRIBUTE_PTR t, CK_ULONG tn, CK_OBJECT_HANDLE_PTR out)
{
    return failing() ? CKR_DEVICE_ERROR : real.C_UnwrapKey(s, m, k, w, n, t, tn, out);
}

static CK_RV w_find_init(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    return failing() ? CKR_DEVICE_ERROR : real.C_FindObjectsInit(s, t, n);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    static void *dl;
    CK_C_GetFunctionList get;
    CK_FUNCTION_LIST_PTR rl = NULL;
    const char *path = getenv("NS_P11_FAULT_MODULE");
    CK_RV rv;

    if (list == NULL)
        return CKR_ARGUMENTS_BAD;
    if (dl == NULL) {
        if (path == NULL || (dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL)
            return CKR_GENERAL_ERROR;
        if ((get = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList")) == NULL)
            return CKR_GENERAL_ERROR;
        if ((rv = get(&rl)) != CKR_OK)
            return rv;
        real = *rl;
        wrapped = real;
        wrapped.C_SignInit = w_sign_init;
        wrapped.C_Sign = w_sign;
        wrapped.C_DecryptInit = w_decrypt_init;
        wrapped.C_Decrypt = w_decrypt;
        wrapped.C_Encrypt = w_encrypt;
        wrapped.C_UnwrapKey = w_unwrap;
        wrapped.C_FindObjectsInit = w_find_init;
    }
    *list = &wrapped;
    return CKR_OK;
}
