/* Key objects on a token (pkcs11/token.h): finding one by its URI, reading its attributes, generating one.
 *
 * A key found once is looked up again by its URI whenever the token's sessions were reopened (after a fault)
 * or its handle went stale, inside ns_p11_run(). */
#ifndef NS_PKCS11_KEY_H
#define NS_PKCS11_KEY_H

#include <stddef.h>

#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>

#include "common/err.h"
#include "pkcs11/token.h"

/* Find exactly one object of class `cls` matching the URI's object attributes (object=, id=; type= must
 * agree with cls if given). NS_E_TOKEN_OBJECT if there is none or more than one. The key keeps a reference
 * to the token. */
int ns_p11_key_find(ns_p11_token *t, const char *uri, CK_OBJECT_CLASS cls, ns_p11_key **out) NS_WUR;
void ns_p11_key_free(ns_p11_key *k);
ns_p11_token *ns_p11_key_token(const ns_p11_key *k);
/* A counter that changes whenever a lookup of the key finds a different object than the last one (the key
 * was replaced in the token, or the token renumbered its objects after a fault). */
unsigned ns_p11_key_epoch(ns_p11_key *k);

/* The URI, redacted: for messages. */
const char *ns_p11_key_uri(const ns_p11_key *k);

/* Read one attribute of the key into a new buffer (not secret). */
int ns_p11_key_attr(ns_p11_key *k, CK_ATTRIBUTE_TYPE type, unsigned char **val, size_t *len) NS_WUR;

/* The public key of an RSA key object, from its CKA_MODULUS and CKA_PUBLIC_EXPONENT (a private key object
 * carries both). NS_E_TOKEN_OBJECT if they do not make an RSA key. */
int ns_p11_key_rsa_public(ns_p11_key *k, EVP_PKEY **out) NS_WUR;

#define NS_P11_KEYGEN_ATTRS_MAX 20

/* What to generate: a secret key (priv NULL: C_GenerateKey with `attrs`) or a key pair (C_GenerateKeyPair
 * with `attrs` for the public key and `priv` for the private key). The label and id are added by
 * ns_p11_key_generate; at most NS_P11_KEYGEN_ATTRS_MAX attributes each. */
typedef struct ns_p11_keygen {
    CK_MECHANISM_TYPE mech; /* CKM_AES_KEY_GEN, CKM_RSA_PKCS_KEY_PAIR_GEN, ... */
    const char *mech_name;  /* "CKM_AES_KEY_GEN": for messages */
    const CK_ATTRIBUTE *attrs;
    CK_ULONG nattrs;
    const CK_ATTRIBUTE *priv;
    CK_ULONG npriv;
} ns_p11_keygen;

/* Create a key in the token named by `uri`, labelled and identified by the URI's object= (required) and id=
 * (optional). Checks first that the token offers spec->mech for generation (NS_E_MECHANISM) and that no
 * object carries this label or id (NS_E_EXISTS, logged; nothing created). */
int ns_p11_key_generate(const char *uri, const char *pin_env, unsigned sessions,
                        const ns_p11_keygen *spec) NS_WUR;

#endif
