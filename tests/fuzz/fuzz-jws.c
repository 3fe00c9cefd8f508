/* libFuzzer target for the compact JWS parser (src/jwt/jws.c) and the nonce verifier on top of it. The
 * seeds in tests/fuzz/seeds/jws/ are tokens signed by a fixed Ed25519 key (the RFC 8037 A.1 key) and a
 * fixed P-256 key, plus malformed ones (alg none, duplicate members, padding, extra segments). Besides "no
 * crash, no leak", the target checks what the API promises and traps when one breaks:
 *   - ns_jws_parse fails only with NS_E_FORMAT or NS_E_TOO_LARGE and leaves *out untouched;
 *   - a parsed token has a known alg, a non-empty kid, an object payload, and a signing input that is
 *     exactly the input up to its last '.';
 *   - parsing is canonical: the same bytes re-encoded (header and payload segments) are the input's;
 *   - verification with the fixed keys fails only with NS_E_KEY_UNKNOWN, NS_E_INTEGRITY, and the nonce
 *     verifier only with those, NS_E_CLAIMS or NS_E_EXPIRED; a token that verifies has its ledger key equal
 *     to SHA-256 of the signing input.
 * The secure heap is deliberately not initialised (as in fuzz-envelope.c), so ASan sees every access. */
#include "ns-build.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "common/buf.h"
#include "common/codec.h"
#include "common/err.h"
#include "common/log.h"
#include "settings/settings.h"
#include "jwt/jws.h"
#include "jwt/nonce.h"
#include "secrets/keytype.h"
#include "sign/keyset.h"
#include "sign/signer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            __builtin_trap();                                                                                \
    } while (0)

/* RFC 8037 A.1 Ed25519 private key, and a fixed P-256 private key (PKCS#8 DER, hex). */
static const char ed_pkcs8[] =
    "302e020100300506032b6570042204209d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031c"
    "ae7f60";
static const char p256_pkcs8[] =
    "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420"
    "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721a14403420004"
    "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb67903fe1008b8bc"
    "99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299";

static ns_keyset *keys;
static ns_config *cfg;

static ns_signer *load(const char *hex)
{
    ns_buf *der = NULL;
    EVP_PKEY *pk = NULL;
    ns_signer *s = NULL;
    CHECK(ns_hex_decode(hex, strlen(hex), false, &der) == 0);
    CHECK(ns_keytype_from_pkcs8(der->data, der->len, NULL, &pk) == 0);
    CHECK(ns_signer_soft_new(pk, &s) == 0);
    EVP_PKEY_free(pk);
    ns_buf_free(der);
    return s;
}

static void init(void)
{
    static const char yaml[] = "cluster_id: fuzz\nstorage: {backend: file, path: /nonexistent}\n";
    ns_log_set_level(NS_LOG_ERROR);
    keys = calloc(1, sizeof(*keys));
    CHECK(keys != NULL && (keys->s = calloc(2, sizeof(*keys->s))) != NULL);
    keys->s[0] = load(ed_pkcs8);
    keys->s[1] = load(p256_pkcs8);
    keys->n = 2;
    keys->origin = strdup("fuzz keys");
    CHECK(ns_config_parse(yaml, sizeof(yaml) - 1, "<fuzz>", NULL, &cfg) == 0);
}

static bool known_alg(const char *a)
{
    return strcmp(a, "EdDSA") == 0 || strcmp(a, "ES256") == 0 || strcmp(a, "ES384") == 0 ||
           strcmp(a, "RS256") == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ns_jws untouched;
    ns_jws *j = &untouched;
    ns_nonce *nc = NULL;
    const uint8_t *last;
    int r;

    if (keys == NULL)
        init();
    r = ns_jws_parse((const char *)data, size, &j);
    if (r != 0) {
        CHECK(r == NS_E_FORMAT || r == NS_E_TOO_LARGE);
        CHECK(j == &untouched);
        CHECK(ns_nonce_verify(cfg, keys, (const char *)data, size, NS_NONCE_ANY, 2000000000, &nc) == r);
        CHECK(nc == NULL);
        return 0;
    }
    CHECK(j != NULL && j != &untouched);
    CHECK(size <= NS_JWS_MAX);
    CHECK(known_alg(j->alg) && j->kid[0] != '\0');
    CHECK(json_is_object(j->claims));
    CHECK(j->sig != NULL && j->sig->len > 0);
    last = NULL;
    for (size_t i = 0; i < size; i++)
        if (data[i] == '.')
            last = data + i;
    CHECK(last != NULL && j->signing_input->len == (size_t)(last - data) &&
          memcmp(j->signing_input->data, data, j->signing_input->len) == 0);
    /* the signature segment is the canonical encoding of the decoded signature */
    {
        char *enc = NULL;
        CHECK(ns_b64url_encode(j->sig->data, j->sig->len, &enc) == 0);
        CHECK(strlen(enc) == size - (size_t)(last + 1 - data) && memcmp(enc, last + 1, strlen(enc)) == 0);
        free(enc);
    }
    r = ns_jws_verify(j, keys, NULL);
    CHECK(r == 0 || r == NS_E_KEY_UNKNOWN || r == NS_E_INTEGRITY);
    r = ns_nonce_verify(cfg, keys, (const char *)data, size, NS_NONCE_ANY, 2000000000, &nc);
    CHECK(r == 0 || r == NS_E_KEY_UNKNOWN || r == NS_E_INTEGRITY || r == NS_E_CLAIMS || r == NS_E_EXPIRED);
    if (r == 0) {
        uint8_t md[32];
        SHA256(j->signing_input->data, j->signing_input->len, md);
        CHECK(memcmp(md, nc->ledger_key, 32) == 0);
    }
    ns_nonce_free(nc);
    ns_jws_free(j);
    return 0;
}
