/* libFuzzer target for the envelope parser and the key-dependent paths behind it: ns_envelope_parse,
 * ns_envelope_open and ns_envelope_rewrap on arbitrary bytes, under a fixed keyring of two software KEKs
 * (K1 = 32 bytes of 0x01, the primary; K2 = 32 bytes of 0x02, an old key). The seeds in
 * tests/fuzz/seeds/envelope/ are blobs sealed under these keys for the name below, so mutations reach the
 * unwrap and tag checks. Besides "no crash, no leak", the target checks invariants the API promises and
 * traps when one breaks:
 *   - open fails with parse's error when parse fails (the name is valid);
 *   - a blob that opens parses to the same info, and its plaintext is payload_len bytes;
 *   - a blob whose header parses and names K1 (the primary) is skipped by rewrap: 0 and no output, without
 *     any key being used;
 *   - otherwise rewrap fails exactly when open fails, with the same error, and produces nothing then; and
 *     of a blob under K2 gives a blob under K1 that opens to the same plaintext and whose payload bytes
 *     are the original's.
 * The secure heap is deliberately not initialised: secret buffers then come from malloc, where ASan
 * sees every out-of-bounds access (the secure arena is one mmap it does not instrument). */
#include "ns-build.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "envelope/envelope.h"
#include "keys/kek.h"
#include "keys/keyring.h"

#define FUZZ_NAME "cluster/secret/fuzz"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            __builtin_trap();                                                                                \
    } while (0)

/* The ring [K1, K2], built on first use and kept for the life of the process. */
static const ns_keyring *fuzz_ring(void)
{
    static ns_keyring *kr;
    ns_kek *keks[2] = {NULL, NULL};
    uint8_t key[NS_DEK_LEN];

    if (kr != NULL)
        return kr;
    ns_log_set_level(NS_LOG_ERROR);
    memset(key, 0x01, sizeof(key));
    if (ns_kek_soft_new(key, "fuzz K1", &keks[0]) != 0)
        abort();
    memset(key, 0x02, sizeof(key));
    if (ns_kek_soft_new(key, "fuzz K2", &keks[1]) != 0)
        abort();
    if (ns_keyring_from_keks(keks, 2, &kr) != 0)
        abort();
    return kr;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const ns_keyring *kr = fuzz_ring();
    const ns_kek *k1 = ns_keyring_primary(kr);
    ns_envelope_info pinfo, oinfo;
    ns_buf *pt = NULL, *nb = NULL, *pt2 = NULL;
    int rp, ro, rw;

    memset(&pinfo, 0, sizeof(pinfo));
    memset(&oinfo, 0, sizeof(oinfo));
    rp = ns_envelope_parse(data, size, &pinfo);
    CHECK(rp <= 0);

    ro = ns_envelope_open(kr, FUZZ_NAME, data, size, &pt, &oinfo);
    CHECK(ro <= 0);
    if (rp != 0)
        CHECK(ro == rp && pt == NULL);
    if (ro == 0) {
        CHECK(rp == 0 && pt != NULL);
        CHECK(memcmp(&pinfo, &oinfo, sizeof(pinfo)) == 0);
        CHECK(pt->len == oinfo.payload_len);
        CHECK(oinfo.header_len <= size);
    }

    rw = ns_envelope_rewrap(kr, FUZZ_NAME, data, size, &nb);
    if (rp == 0 && memcmp(pinfo.kek_id, k1->id, NS_KEK_ID_LEN) == 0) {
        CHECK(rw == 0 && nb == NULL);
    } else if (rw != 0) {
        CHECK(rw == ro && nb == NULL);
    } else {
        CHECK(ro == 0);
        ns_envelope_info ninfo;
        CHECK(nb != NULL);
        CHECK(ns_envelope_open(kr, FUZZ_NAME, nb->data, nb->len, &pt2, &ninfo) == 0);
        CHECK(memcmp(ninfo.kek_id, k1->id, NS_KEK_ID_LEN) == 0);
        CHECK(pt2->len == pt->len && (pt->len == 0 || memcmp(pt2->data, pt->data, pt->len) == 0));
        CHECK(nb->len - ninfo.header_len == size - oinfo.header_len);
        CHECK(memcmp(nb->data + ninfo.header_len, data + oinfo.header_len, size - oinfo.header_len) == 0);
    }

    ns_buf_free(pt);
    ns_buf_free(pt2);
    ns_buf_free(nb);
    return 0;
}
