/* Exporting a secret for its consumers, keys in document order (the key in use first):
 *   pem-bundle         every private key, PKCS#8 PEM
 *   pem                the first key only, PKCS#8 PEM
 *   public-pem-bundle  every public key, SubjectPublicKeyInfo PEM
 *   jwks               {"keys": [...]} public JWKs with kid = key id, alg, use "sig" (RFC 7517)
 *   raw                the first key's bytes (random and opaque secrets)
 * The output is a new secret buffer. NS_E_USAGE for an unknown format or one that does not fit the type. */
#ifndef NS_SECRETS_EXPORT_H
#define NS_SECRETS_EXPORT_H

#include "common/buf.h"
#include "common/err.h"
#include "secrets/document.h"

int ns_export(const ns_secret_doc *d, const char *format, ns_buf **out) NS_WUR;

#endif
