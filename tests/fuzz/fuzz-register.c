/* libFuzzer target for the request bodies of POST /v1/register and the renew endpoints
 * (src/service/request.c). Seeds in tests/fuzz/seeds/register/: valid and invalid bodies (Ed25519 and P-256
 * keys, RSA and garbage keys, duplicate and unknown members, wrong types, bad hostnames and addresses).
 * Besides "no crash, no leak", the target checks the API's promises and traps when one breaks:
 *   - parsing fails only with NS_E_FORMAT, NS_E_TOO_LARGE or NS_E_NOMEM and leaves *out untouched;
 *   - a parsed register request has a nonce and an Ed25519 or P-256 key; a parsed renew request has a key
 *     exactly when it has the PEM;
 *   - the same bytes parse the same way again (no hidden state). */
#include "ns-build.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "service/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            __builtin_trap();                                                                                \
    } while (0)

static void one(const uint8_t *data, size_t size, enum ns_req_kind kind)
{
    static ns_reg_request untouched;
    ns_reg_request *rq = &untouched, *again = &untouched;
    int r = ns_reg_request_parse(data, size, kind, &rq), r2;

    if (r != 0) {
        CHECK(r == NS_E_FORMAT || r == NS_E_TOO_LARGE || r == NS_E_NOMEM);
        CHECK(rq == &untouched);
        return;
    }
    CHECK(rq != NULL && rq != &untouched);
    if (kind == NS_REQ_REGISTER) {
        CHECK(rq->nonce != NULL && rq->nonce[0] != '\0');
        CHECK(rq->pub != NULL && rq->pub_pem != NULL);
        CHECK(EVP_PKEY_is_a(rq->pub, "ED25519") || EVP_PKEY_is_a(rq->pub, "EC"));
    } else {
        CHECK(rq->nonce == NULL && (rq->pub == NULL) == (rq->pub_pem == NULL));
    }
    r2 = ns_reg_request_parse(data, size, kind, &again);
    CHECK(r2 == 0 && again != &untouched);
    CHECK((again->hostname == NULL) == (rq->hostname == NULL));
    ns_reg_request_free(again);
    ns_reg_request_free(rq);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ns_log_set_level(NS_LOG_ERROR);
    one(data, size, NS_REQ_REGISTER);
    one(data, size, NS_REQ_RENEW);
    return 0;
}
