/* The JSON bodies of POST /v1/register and POST /v1/{agent,operator}/renew (doc/protocol.md).
 *
 * register: {"nonce": "<compact JWS>", "public_key": "<PEM SPKI>", "hostname"?, "ipv4"?, "ipv6"?}
 * renew:    {} or {"public_key": "<PEM SPKI>"}
 * A JSON object without duplicate members (jansson JSON_REJECT_DUPLICATES), nothing else: unknown members,
 * wrong types, a public key that is not Ed25519 or P-256, a bad hostname (ns_cert_check_dns) or address
 * are NS_E_FORMAT. Optional members may be null. The nonce is only bounded here (NS_JWS_MAX) and checked
 * by the nonce verifier later. */
#ifndef NS_SERVICE_REQUEST_H
#define NS_SERVICE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "common/err.h"

#define NS_REQ_BODY_MAX (64 * 1024)

enum ns_req_kind { NS_REQ_REGISTER = 1, NS_REQ_RENEW = 2 };

typedef struct ns_reg_request {
    char *nonce;    /* register only */
    EVP_PKEY *pub;  /* register: required; renew: NULL to keep the key */
    char *pub_pem;  /* the PEM as sent (recorded), NULL with pub */
    char *hostname; /* optional */
    char *ipv4;     /* optional, dotted quad */
    char *ipv6;     /* optional */
} ns_reg_request;

int ns_reg_request_parse(const uint8_t *p, size_t n, enum ns_req_kind kind, ns_reg_request **out) NS_WUR;
void ns_reg_request_free(ns_reg_request *rq);

/* A PEM SubjectPublicKeyInfo of an Ed25519 or P-256 key. NS_E_FORMAT otherwise. */
int ns_request_public_key(const char *pem, size_t n, EVP_PKEY **out) NS_WUR;

#endif
