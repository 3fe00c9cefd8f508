/* The few PKCS#11 3.0 types the token layer uses, which p11-kit 0.24.1's pkcs11.h (Debian 12) does not have:
 * its header is PKCS#11 2.40. Values and layouts from the OASIS PKCS#11 3.0 base specification (pkcs11t.h,
 * pkcs11f.h); a header that has them already (CKF_MESSAGE_ENCRYPT defined) is used as it is. Only
 * `C_GetInterface` and the message-based encryption functions are called; the rest of the 3.0 list is
 * declared so that the layout matches. */
#ifndef NS_PKCS11_V3_H
#define NS_PKCS11_V3_H

#include <p11-kit/pkcs11.h>

#ifndef CKF_MESSAGE_ENCRYPT
#define CKF_MESSAGE_ENCRYPT 0x00000002UL

typedef CK_ULONG CK_GENERATOR_FUNCTION;
#define CKG_NO_GENERATE     0x00000000UL
#define CKG_GENERATE_RANDOM 0x00000003UL

typedef struct CK_GCM_MESSAGE_PARAMS {
    CK_BYTE_PTR pIv;
    CK_ULONG ulIvLen;
    CK_ULONG ulIvFixedBits;
    CK_GENERATOR_FUNCTION ivGenerator;
    CK_BYTE_PTR pTag;
    CK_ULONG ulTagBits;
} CK_GCM_MESSAGE_PARAMS;

typedef struct CK_INTERFACE {
    CK_CHAR *pInterfaceName;
    CK_VOID_PTR pFunctionList;
    CK_FLAGS flags;
} CK_INTERFACE;
#endif

typedef CK_RV (*ns_p11_C_GetInterface)(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version, CK_INTERFACE **iface,
                                       CK_FLAGS flags);
typedef CK_RV (*ns_p11_C_MessageInit)(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key);
typedef CK_RV (*ns_p11_C_EncryptMessage)(CK_SESSION_HANDLE s, CK_VOID_PTR param, CK_ULONG param_len,
                                         CK_BYTE_PTR aad, CK_ULONG aad_len, CK_BYTE_PTR in, CK_ULONG in_len,
                                         CK_BYTE_PTR out, CK_ULONG_PTR out_len);
typedef CK_RV (*ns_p11_C_MessageFinal)(CK_SESSION_HANDLE s);

/* CK_FUNCTION_LIST_3_0: the 2.40 list, then the 3.0 functions in the standard's order. */
typedef struct ns_p11_fn3 {
    CK_FUNCTION_LIST base;
    void (*C_GetInterfaceList)(void);
    ns_p11_C_GetInterface C_GetInterface;
    void (*C_LoginUser)(void);
    void (*C_SessionCancel)(void);
    ns_p11_C_MessageInit C_MessageEncryptInit;
    ns_p11_C_EncryptMessage C_EncryptMessage;
    void (*C_EncryptMessageBegin)(void);
    void (*C_EncryptMessageNext)(void);
    ns_p11_C_MessageFinal C_MessageEncryptFinal;
    void (*rest[15])(void); /* C_MessageDecryptInit ... C_MessageVerifyFinal: not used */
} ns_p11_fn3;

#endif
