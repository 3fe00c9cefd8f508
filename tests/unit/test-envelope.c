/* Unit tests for src/envelope/envelope.c with software KEKs: seal/open round trips, the header fields,
 * name binding, every single-bit flip and every truncation of a blob, unknown and old KEKs, rewrap (the
 * payload bytes must stay exactly as they were), size bounds, and keyrings with a duplicated key.
 *
 * Layout of a blob under a software KEK (envelope.h, doc/envelope.md), with the offsets used below:
 *
 *   0 magic "NSEN" | 4 version | 5 mech | 6 param | 7 flags | 8 kek id (16) | 24 u16 wrapped length
 *   | 26 wrapped DEK (60) | 86 header nonce (12) | 98 header tag (16) | 114 payload nonce (12)
 *   | 126 ciphertext (n) | 126+n payload tag (16) */
#include "ns-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/secmem.h"
#include "envelope/envelope.h"
#include "keys/aead.h"
#include "keys/kek.h"
#include "keys/keyring.h"

#define NAME       "cluster/secret/test"
#define OTHER_NAME "cluster/secret/tesT"

/* Offsets of the fields of a blob under a software KEK. */
#define OFF_VERSION    4
#define OFF_MECH       5
#define OFF_PARAM      6
#define OFF_FLAGS      7
#define OFF_KEK_ID     8
#define OFF_WRAPPED_LN (OFF_KEK_ID + NS_KEK_ID_LEN)
#define OFF_WRAPPED    (OFF_WRAPPED_LN + 2)
#define SOFT_WRAPPED   (NS_AEAD_NONCE + NS_DEK_LEN + NS_AEAD_TAG)
#define OFF_HDR_NONCE  (OFF_WRAPPED + SOFT_WRAPPED)
#define SOFT_HEADER    (OFF_HDR_NONCE + NS_AEAD_NONCE + NS_AEAD_TAG) /* 114: info.header_len */
#define SOFT_OVERHEAD  (SOFT_HEADER + NS_AEAD_NONCE + NS_AEAD_TAG)   /* 142: blob length - plaintext length */

/* Functions that fail must leave their outputs alone. */
static ns_buf *const SENTINEL = (ns_buf *)(uintptr_t)0x5a5a5a5a;

/* ---- helpers ---- */

/* A software KEK whose key is 32 bytes of `fill`. */
static ns_kek *kek_of(uint8_t fill)
{
    uint8_t key[NS_DEK_LEN];
    char desc[32];
    ns_kek *k = NULL;

    memset(key, fill, sizeof(key));
    snprintf(desc, sizeof(desc), "test key %02x", fill);
    assert_int_equal(ns_kek_soft_new(key, desc, &k), 0);
    assert_non_null(k);
    return k;
}

static void id_of(uint8_t fill, uint8_t id[NS_KEK_ID_LEN])
{
    ns_kek *k = kek_of(fill);
    memcpy(id, k->id, NS_KEK_ID_LEN);
    ns_kek_free(k);
}

/* A ring of software KEKs with the given key fills; fills[0] is the primary. */
static ns_keyring *ring_of(const uint8_t *fills, size_t n)
{
    ns_kek *keks[8] = {NULL};
    ns_keyring *kr = NULL;

    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        keks[i] = kek_of(fills[i]);
    assert_int_equal(ns_keyring_from_keks(keks, n, &kr), 0);
    assert_non_null(kr);
    for (size_t i = 0; i < n; i++)
        assert_null(keks[i]); /* ownership moved into the ring */
    return kr;
}

#define RING(...) ring_of((const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}))

enum { KA = 0xa1, KB = 0xb2, KC = 0xc3 };

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static ns_buf *seal(const ns_keyring *kr, const char *name, const uint8_t *pt, size_t n)
{
    ns_buf *blob = NULL;
    int r = ns_envelope_seal(kr, name, pt, n, &blob);
    if (r != 0)
        fail_msg("seal of %zu bytes: got %d (%s)", n, r, ns_strerror(r));
    assert_non_null(blob);
    return blob;
}

/* Open and expect exactly `want`; on failure *pt must stay untouched. */
static void check_open_fails(const ns_keyring *kr, const char *name, const uint8_t *blob, size_t n, int want,
                             const char *what)
{
    ns_buf *pt = SENTINEL;
    int r = ns_envelope_open(kr, name, blob, n, &pt, NULL);
    if (r != want)
        fail_msg("%s: open got %d (%s), want %d (%s)", what, r, ns_strerror(r), want, ns_strerror(want));
    assert_ptr_equal(pt, SENTINEL);
}

static void check_opens_to(const ns_keyring *kr, const char *name, const uint8_t *blob, size_t n,
                           const uint8_t *want, size_t want_len, ns_envelope_info *info)
{
    ns_buf *pt = NULL;
    int r = ns_envelope_open(kr, name, blob, n, &pt, info);
    if (r != 0)
        fail_msg("open: got %d (%s), want 0", r, ns_strerror(r));
    assert_non_null(pt);
    assert_int_equal(pt->len, want_len);
    if (want_len > 0)
        assert_memory_equal(pt->data, want, want_len);
    assert_true(pt->secret);
    ns_buf_free(pt);
}

/* ---- round trips and header fields ---- */

static void test_round_trip_sizes(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 4096, NS_PLAINTEXT_MAX};
    ns_keyring *kr = RING(KA);
    uint8_t *pt = malloc(NS_PLAINTEXT_MAX);

    assert_non_null(pt);
    fill_pattern(pt, NS_PLAINTEXT_MAX, 1);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        ns_envelope_info info;
        ns_buf *blob = seal(kr, NAME, pt, sizes[i]);

        assert_int_equal(blob->len, SOFT_OVERHEAD + sizes[i]);
        memset(&info, 0xee, sizeof(info));
        check_opens_to(kr, NAME, blob->data, blob->len, pt, sizes[i], &info);
        assert_int_equal(info.payload_len, sizes[i]);
        assert_int_equal(info.header_len, SOFT_HEADER);
        /* info may be NULL */
        check_opens_to(kr, NAME, blob->data, blob->len, pt, sizes[i], NULL);
        ns_buf_free(blob);
    }
    free(pt);
    ns_keyring_free(kr);
}

static void test_seal_too_large(void **state)
{
    (void)state;
    ns_keyring *kr = RING(KA);
    uint8_t *pt = calloc(1, NS_PLAINTEXT_MAX + 1);
    ns_buf *blob = SENTINEL;

    assert_non_null(pt);
    assert_int_equal(ns_envelope_seal(kr, NAME, pt, NS_PLAINTEXT_MAX + 1, &blob), NS_E_TOO_LARGE);
    assert_ptr_equal(blob, SENTINEL);
    assert_int_equal(ns_envelope_seal(kr, NAME, pt, SIZE_MAX, &blob), NS_E_TOO_LARGE);
    assert_ptr_equal(blob, SENTINEL);
    free(pt);
    ns_keyring_free(kr);
}

static void test_info_fields(void **state)
{
    (void)state;
    ns_keyring *kr = RING(KA, KB);
    uint8_t pt[77], ida[NS_KEK_ID_LEN];
    ns_envelope_info info, pinfo;
    ns_buf *blob;

    fill_pattern(pt, sizeof(pt), 2);
    id_of(KA, ida);
    blob = seal(kr, NAME, pt, sizeof(pt));

    memset(&info, 0xee, sizeof(info));
    check_opens_to(kr, NAME, blob->data, blob->len, pt, sizeof(pt), &info);
    assert_int_equal(info.version, 1);
    assert_int_equal(info.version, NS_ENVELOPE_VERSION);
    assert_int_equal(info.mech, NS_MECH_SOFT_GCM);
    assert_int_equal(info.param, 0);
    assert_memory_equal(info.kek_id, ns_keyring_primary(kr)->id, NS_KEK_ID_LEN);
    assert_memory_equal(info.kek_id, ida, NS_KEK_ID_LEN);
    assert_int_equal(info.payload_len, sizeof(pt));
    assert_int_equal(info.header_len, SOFT_HEADER);

    /* The header alone gives the same, without a key. */
    memset(&pinfo, 0xee, sizeof(pinfo));
    assert_int_equal(ns_envelope_parse(blob->data, blob->len, &pinfo), 0);
    assert_int_equal(pinfo.version, info.version);
    assert_int_equal(pinfo.mech, info.mech);
    assert_int_equal(pinfo.param, info.param);
    assert_memory_equal(pinfo.kek_id, info.kek_id, NS_KEK_ID_LEN);
    assert_int_equal(pinfo.header_len, info.header_len);
    assert_int_equal(pinfo.payload_len, info.payload_len);
    assert_int_equal(ns_envelope_parse(blob->data, blob->len, NULL), 0);

    /* The bytes on the wire. */
    assert_memory_equal(blob->data, "NSEN", 4);
    assert_int_equal(blob->data[OFF_VERSION], 1);
    assert_int_equal(blob->data[OFF_MECH], NS_MECH_SOFT_GCM);
    assert_int_equal(blob->data[OFF_PARAM], 0);
    assert_int_equal(blob->data[OFF_FLAGS], 0);
    assert_memory_equal(blob->data + OFF_KEK_ID, ida, NS_KEK_ID_LEN);
    assert_int_equal(blob->data[OFF_WRAPPED_LN], 0);
    assert_int_equal(blob->data[OFF_WRAPPED_LN + 1], SOFT_WRAPPED);
    /* The plaintext does not appear in the blob. */
    for (size_t off = 0; off + 16 <= blob->len; off++)
        assert_memory_not_equal(blob->data + off, pt, 16);
    ns_buf_free(blob);
    ns_keyring_free(kr);
}

static void test_two_seals_differ(void **state)
{
    (void)state;
    ns_keyring *kr = RING(KA);
    uint8_t pt[64];
    ns_buf *a, *b;

    fill_pattern(pt, sizeof(pt), 3);
    a = seal(kr, NAME, pt, sizeof(pt));
    b = seal(kr, NAME, pt, sizeof(pt));
    assert_int_equal(a->len, b->len);
    /* Same header prefix up to the wrapped DEK, then everything differs: fresh DEK and nonces. */
    assert_memory_equal(a->data, b->data, OFF_WRAPPED);
    assert_memory_not_equal(a->data + OFF_WRAPPED, b->data + OFF_WRAPPED, SOFT_WRAPPED);
    assert_memory_not_equal(a->data + OFF_HDR_NONCE, b->data + OFF_HDR_NONCE, NS_AEAD_NONCE);
    assert_memory_not_equal(a->data + SOFT_HEADER, b->data + SOFT_HEADER, NS_AEAD_NONCE);
    assert_memory_not_equal(a->data + SOFT_HEADER + NS_AEAD_NONCE, b->data + SOFT_HEADER + NS_AEAD_NONCE,
                            sizeof(pt));
    check_opens_to(kr, NAME, a->data, a->len, pt, sizeof(pt), NULL);
    check_opens_to(kr, NAME, b->data, b->len, pt, sizeof(pt), NULL);
    ns_buf_free(a);
    ns_buf_free(b);
    ns_keyring_free(kr);
}

/* ---- name binding ---- */

static void test_open_under_another_name(void **state)
{
    (void)state;
    static const char *const others[] = {OTHER_NAME, "cluster/secret/tes", "cluster/secret/test2",
                                         "cluster/secret/test/", "x"};
    ns_keyring *kr = RING(KA);
    uint8_t pt[64];
    char longname[NS_ENV_NAME_MAX + 2];
    ns_buf *blob, *out;

    fill_pattern(pt, sizeof(pt), 4);
    for (size_t sz = 0; sz <= sizeof(pt); sz += sizeof(pt)) {
        blob = seal(kr, NAME, pt, sz);
        for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
            check_open_fails(kr, others[i], blob->data, blob->len, NS_E_INTEGRITY, others[i]);
        check_open_fails(kr, "", blob->data, blob->len, NS_E_NAME, "empty name");
        /* Under the primary already: rewrap skips it without using any key (so it cannot notice). */
        out = SENTINEL;
        assert_int_equal(ns_envelope_rewrap(kr, OTHER_NAME, blob->data, blob->len, &out), 0);
        assert_null(out);
        check_opens_to(kr, NAME, blob->data, blob->len, pt, sz, NULL);
        ns_buf_free(blob);
    }

    /* Names are bounded: NS_ENV_NAME_MAX is fine, one more is not. */
    memset(longname, 'n', sizeof(longname));
    longname[NS_ENV_NAME_MAX] = '\0';
    blob = seal(kr, longname, pt, sizeof(pt));
    check_opens_to(kr, longname, blob->data, blob->len, pt, sizeof(pt), NULL);
    longname[NS_ENV_NAME_MAX] = 'n';
    longname[NS_ENV_NAME_MAX + 1] = '\0';
    check_open_fails(kr, longname, blob->data, blob->len, NS_E_NAME, "name too long");
    ns_buf_free(blob);
    out = SENTINEL;
    assert_int_equal(ns_envelope_seal(kr, longname, pt, sizeof(pt), &out), NS_E_NAME);
    assert_int_equal(ns_envelope_seal(kr, "", pt, sizeof(pt), &out), NS_E_NAME);
    assert_ptr_equal(out, SENTINEL);
    ns_keyring_free(kr);
}

/* ---- damage: every bit flip, every truncation, appended bytes ---- */

/* The exact error for a blob of length n (64-byte payload, soft KEK) with `bit` of byte `off` flipped. */
static int flip_expectation(const uint8_t *orig, size_t n, size_t off, unsigned bit)
{
    uint8_t v = (uint8_t)(orig[off] ^ (1u << bit));

    if (off < 4)
        return NS_E_FORMAT; /* magic */
    if (off == OFF_VERSION)
        return NS_E_VERSION;
    if (off == OFF_MECH) /* another defined mechanism: the id commits to the mechanism */
        return v >= NS_MECH_AES_GCM && v <= NS_MECH_SOFT_GCM ? NS_E_INTEGRITY : NS_E_FORMAT;
    if (off == OFF_PARAM)
        return NS_E_FORMAT; /* only rsa-oaep carries a param */
    if (off == OFF_FLAGS)
        return NS_E_FORMAT;
    if (off >= OFF_KEK_ID && off < OFF_KEK_ID + NS_KEK_ID_LEN)
        return NS_E_KEK_UNKNOWN;
    if (off == OFF_WRAPPED_LN || off == OFF_WRAPPED_LN + 1) {
        uint8_t hi = orig[OFF_WRAPPED_LN], lo = orig[OFF_WRAPPED_LN + 1];
        size_t len;
        if (off == OFF_WRAPPED_LN)
            hi = v;
        else
            lo = v;
        len = (size_t)hi << 8 | lo;
        /* Out of bounds, or too long for the blob: malformed. Otherwise the fields shift, and the
         * software back-end refuses a wrapped key that is not 60 bytes long: damage. */
        if (len < 1 || len > NS_WRAPPED_MAX ||
            OFF_WRAPPED + len + NS_AEAD_NONCE + NS_AEAD_TAG + NS_AEAD_NONCE + NS_AEAD_TAG > n)
            return NS_E_FORMAT;
        return NS_E_INTEGRITY;
    }
    return NS_E_INTEGRITY; /* wrapped DEK, header nonce and tag, payload nonce, ciphertext, tag */
}

static void test_every_bit_flip(void **state)
{
    (void)state;
    ns_keyring *kr = RING(KA), *kr2 = RING(KB, KA);
    uint8_t pt[64], *copy;
    ns_buf *blob;
    size_t n, counts[5] = {0};

    fill_pattern(pt, sizeof(pt), 5);
    blob = seal(kr, NAME, pt, sizeof(pt));
    n = blob->len;
    assert_int_equal(n, SOFT_OVERHEAD + sizeof(pt));
    copy = malloc(n);
    assert_non_null(copy);

    for (size_t off = 0; off < n; off++)
        for (unsigned bit = 0; bit < 8; bit++) {
            int want = flip_expectation(blob->data, n, off, bit), r, rw;
            ns_buf *pt_out = SENTINEL, *rw_out = SENTINEL;

            memcpy(copy, blob->data, n);
            copy[off] ^= (uint8_t)(1u << bit);
            r = ns_envelope_open(kr, NAME, copy, n, &pt_out, NULL);
            if (r == 0)
                fail_msg("byte %zu bit %u flipped: the blob still opens", off, bit);
            if (r != NS_E_FORMAT && r != NS_E_VERSION && r != NS_E_KEK_UNKNOWN && r != NS_E_INTEGRITY)
                fail_msg("byte %zu bit %u flipped: unexpected error %d (%s)", off, bit, r, ns_strerror(r));
            if (r != want)
                fail_msg("byte %zu bit %u flipped: got %d (%s), want %d (%s)", off, bit, r, ns_strerror(r),
                         want, ns_strerror(want));
            assert_ptr_equal(pt_out, SENTINEL);

            /* The same with the KEK as an old key, and rewrap refuses it, producing nothing. */
            r = ns_envelope_open(kr2, NAME, copy, n, &pt_out, NULL);
            assert_int_equal(r, want);
            rw = ns_envelope_rewrap(kr2, NAME, copy, n, &rw_out);
            if (rw != want)
                fail_msg("byte %zu bit %u flipped: rewrap got %d (%s), want %d (%s)", off, bit, rw,
                         ns_strerror(rw), want, ns_strerror(want));
            assert_ptr_equal(rw_out, SENTINEL);

            counts[want == NS_E_FORMAT ? 0 : want == NS_E_VERSION ? 1 : want == NS_E_KEK_UNKNOWN ? 2 : 3]++;
        }
    /* Every region was exercised. */
    assert_true(counts[0] > 0 && counts[1] == 8 && counts[2] == 8 * NS_KEK_ID_LEN && counts[3] > 0);
    assert_int_equal(counts[0] + counts[1] + counts[2] + counts[3], 8 * n);

    /* The original is intact. */
    check_opens_to(kr, NAME, blob->data, blob->len, pt, sizeof(pt), NULL);
    free(copy);
    ns_buf_free(blob);
    ns_keyring_free(kr);
    ns_keyring_free(kr2);
}

/* Every value of each one-byte header field, not only those one bit away. */
static void test_header_byte_values(void **state)
{
    (void)state;
    ns_keyring *kr = RING(KA);
    uint8_t pt[32];
    ns_buf *blob;

    fill_pattern(pt, sizeof(pt), 14);
    blob = seal(kr, NAME, pt, sizeof(pt));
    for (unsigned v = 0; v < 256; v++) {
        /* version: only 1 */
        blob->data[OFF_VERSION] = (uint8_t)v;
        if (v == NS_ENVELOPE_VERSION)
            check_opens_to(kr, NAME, blob->data, blob->len, pt, sizeof(pt), NULL);
        else
            check_open_fails(kr, NAME, blob->data, blob->len, NS_E_VERSION, "version");
        blob->data[OFF_VERSION] = NS_ENVELOPE_VERSION;

        /* mech: another defined mechanism parses, but is not the KEK's: damage; undefined: malformed */
        blob->data[OFF_MECH] = (uint8_t)v;
        if (v == NS_MECH_SOFT_GCM)
            check_opens_to(kr, NAME, blob->data, blob->len, pt, sizeof(pt), NULL);
        else if (v >= NS_MECH_AES_GCM && v <= NS_MECH_SOFT_GCM && v != NS_MECH_RSA_OAEP) {
            ns_envelope_info info;
            check_open_fails(kr, NAME, blob->data, blob->len, NS_E_INTEGRITY, "another mechanism");
            assert_int_equal(ns_envelope_parse(blob->data, blob->len, &info), 0);
            assert_int_equal(info.mech, v);
        } else
            check_open_fails(kr, NAME, blob->data, blob->len, NS_E_FORMAT, "undefined mechanism");
        blob->data[OFF_MECH] = NS_MECH_SOFT_GCM;

        /* param: must be 0 for every mechanism but rsa-oaep (which needs an OAEP hash, 1 or 2) */
        blob->data[OFF_PARAM] = (uint8_t)v;
        if (v == 0)
            check_opens_to(kr, NAME, blob->data, blob->len, pt, sizeof(pt), NULL);
        else
            check_open_fails(kr, NAME, blob->data, blob->len, NS_E_FORMAT, "param");
        blob->data[OFF_PARAM] = 0;

        /* flags: must be 0 */
        blob->data[OFF_FLAGS] = (uint8_t)v;
        if (v == 0)
            check_opens_to(kr, NAME, blob->data, blob->len, pt, sizeof(pt), NULL);
        else
            check_open_fails(kr, NAME, blob->data, blob->len, NS_E_FORMAT, "flags");
        blob->data[OFF_FLAGS] = 0;
    }
    ns_buf_free(blob);
    ns_keyring_free(kr);
}

static void test_every_truncation(void **state)
{
    (void)state;
    ns_keyring *kr = RING(KA), *kr2 = RING(KB, KA);
    uint8_t pt[64], *copy;
    ns_buf *blob;

    fill_pattern(pt, sizeof(pt), 6);
    blob = seal(kr, NAME, pt, sizeof(pt));
    for (size_t len = 0; len < blob->len; len++) {
        ns_buf *pt_out = SENTINEL, *rw_out = SENTINEL;
        /* A copy of exactly len bytes, so that ASan sees any read past the end. */
        int r, want = len < SOFT_OVERHEAD ? NS_E_FORMAT : NS_E_INTEGRITY;

        copy = malloc(len ? len : 1);
        assert_non_null(copy);
        memcpy(copy, blob->data, len);
        r = ns_envelope_open(kr, NAME, copy, len, &pt_out, NULL);
        if (r == 0)
            fail_msg("truncated to %zu bytes: the blob still opens", len);
        if (r != NS_E_FORMAT && r != NS_E_INTEGRITY)
            fail_msg("truncated to %zu bytes: unexpected error %d (%s)", len, r, ns_strerror(r));
        if (r != want)
            fail_msg("truncated to %zu bytes: got %d (%s), want %d (%s)", len, r, ns_strerror(r), want,
                     ns_strerror(want));
        assert_ptr_equal(pt_out, SENTINEL);
        assert_int_equal(ns_envelope_rewrap(kr2, NAME, copy, len, &rw_out), want);
        assert_ptr_equal(rw_out, SENTINEL);
        /* A truncated header does not even parse. */
        if (len < SOFT_OVERHEAD)
            assert_int_equal(ns_envelope_parse(copy, len, NULL), NS_E_FORMAT);
        free(copy);
    }
    ns_buf_free(blob);
    ns_keyring_free(kr);
    ns_keyring_free(kr2);
}

static void test_appended_bytes(void **state)
{
    (void)state;
    ns_keyring *kr = RING(KA);
    uint8_t pt[64], *copy;
    ns_buf *blob, *out = SENTINEL;

    fill_pattern(pt, sizeof(pt), 7);
    blob = seal(kr, NAME, pt, sizeof(pt));
    copy = malloc(blob->len + 100);
    assert_non_null(copy);
    memcpy(copy, blob->data, blob->len);
    for (unsigned v = 0; v < 256; v += 85) {
        copy[blob->len] = (uint8_t)v;
        check_open_fails(kr, NAME, copy, blob->len + 1, NS_E_INTEGRITY, "one appended byte");
    }
    memset(copy + blob->len, 0, 100);
    check_open_fails(kr, NAME, copy, blob->len + 100, NS_E_INTEGRITY, "100 appended bytes");
    /* Under the primary already: skipped by rewrap without being examined. */
    assert_int_equal(ns_envelope_rewrap(kr, NAME, copy, blob->len + 1, &out), 0);
    assert_null(out);
    free(copy);
    ns_buf_free(blob);
    ns_keyring_free(kr);
}

/* ---- keyrings: unknown KEK, old KEKs, duplicates ---- */

static void test_kek_unknown(void **state)
{
    (void)state;
    ns_keyring *kra = RING(KA), *krb = RING(KB), *krbc = RING(KB, KC), *empty = NULL;
    uint8_t pt[64];
    ns_buf *blob, *out = SENTINEL;

    fill_pattern(pt, sizeof(pt), 8);
    blob = seal(kra, NAME, pt, sizeof(pt));
    check_open_fails(krb, NAME, blob->data, blob->len, NS_E_KEK_UNKNOWN, "ring [B]");
    check_open_fails(krbc, NAME, blob->data, blob->len, NS_E_KEK_UNKNOWN, "ring [B, C]");
    assert_int_equal(ns_envelope_rewrap(krbc, NAME, blob->data, blob->len, &out), NS_E_KEK_UNKNOWN);
    assert_ptr_equal(out, SENTINEL);

    /* A ring with no KEK at all: nothing to seal or rewrap with, nothing to open with. */
    assert_int_equal(ns_keyring_from_keks(NULL, 0, &empty), 0);
    assert_null(ns_keyring_primary(empty));
    check_open_fails(empty, NAME, blob->data, blob->len, NS_E_KEK_UNKNOWN, "empty ring");
    assert_int_equal(ns_envelope_seal(empty, NAME, pt, sizeof(pt), &out), NS_E_CONFIG);
    assert_int_equal(ns_envelope_rewrap(empty, NAME, blob->data, blob->len, &out), NS_E_CONFIG);
    assert_ptr_equal(out, SENTINEL);

    ns_buf_free(blob);
    ns_keyring_free(kra);
    ns_keyring_free(krb);
    ns_keyring_free(krbc);
    ns_keyring_free(empty);
}

static void test_old_kek_opens(void **state)
{
    (void)state;
    ns_keyring *kra = RING(KA), *krba = RING(KB, KA), *krcab = RING(KC, KA, KB);
    uint8_t pt[100], ida[NS_KEK_ID_LEN], idb[NS_KEK_ID_LEN];
    ns_envelope_info info;
    ns_buf *under_a, *under_b;

    fill_pattern(pt, sizeof(pt), 9);
    id_of(KA, ida);
    id_of(KB, idb);
    under_a = seal(kra, NAME, pt, sizeof(pt));
    check_opens_to(krba, NAME, under_a->data, under_a->len, pt, sizeof(pt), &info);
    assert_memory_equal(info.kek_id, ida, NS_KEK_ID_LEN);
    check_opens_to(krcab, NAME, under_a->data, under_a->len, pt, sizeof(pt), &info);
    assert_memory_equal(info.kek_id, ida, NS_KEK_ID_LEN);

    /* New writes go to the primary, B, which the ring [A] does not have. */
    under_b = seal(krba, NAME, pt, sizeof(pt));
    assert_int_equal(ns_envelope_parse(under_b->data, under_b->len, &info), 0);
    assert_memory_equal(info.kek_id, idb, NS_KEK_ID_LEN);
    check_opens_to(krcab, NAME, under_b->data, under_b->len, pt, sizeof(pt), NULL);
    check_open_fails(kra, NAME, under_b->data, under_b->len, NS_E_KEK_UNKNOWN, "B's blob, ring [A]");

    ns_buf_free(under_a);
    ns_buf_free(under_b);
    ns_keyring_free(kra);
    ns_keyring_free(krba);
    ns_keyring_free(krcab);
}

static void test_duplicate_kek_in_ring(void **state)
{
    (void)state;
    ns_kek *keks[3];
    ns_keyring *kr = (ns_keyring *)(uintptr_t)0x5a5a5a5a;

    /* Two KEKs made from the same key: the same id. */
    keks[0] = kek_of(KA);
    keks[1] = kek_of(KA);
    assert_int_equal(ns_keyring_from_keks(keks, 2, &kr), NS_E_CONFIG);
    assert_ptr_equal(kr, (ns_keyring *)(uintptr_t)0x5a5a5a5a);
    assert_null(keks[0]); /* taken and freed (ASan's leak check holds us to it) */
    assert_null(keks[1]);

    /* Not adjacent, and not the primary. */
    keks[0] = kek_of(KB);
    keks[1] = kek_of(KA);
    keks[2] = kek_of(KA);
    assert_int_equal(ns_keyring_from_keks(keks, 3, &kr), NS_E_CONFIG);
    keks[0] = kek_of(KA);
    keks[1] = kek_of(KB);
    keks[2] = kek_of(KA);
    assert_int_equal(ns_keyring_from_keks(keks, 3, &kr), NS_E_CONFIG);
    assert_ptr_equal(kr, (ns_keyring *)(uintptr_t)0x5a5a5a5a);

    /* Distinct keys are fine. */
    keks[0] = kek_of(KA);
    keks[1] = kek_of(KB);
    keks[2] = kek_of(KC);
    assert_int_equal(ns_keyring_from_keks(keks, 3, &kr), 0);
    assert_int_equal(kr->n, 3);
    assert_ptr_equal(ns_keyring_primary(kr), kr->e[0].kek);
    ns_keyring_free(kr);
}

/* ---- rewrap ---- */

static void test_rewrap(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 100, 5000};
    ns_keyring *kra = RING(KA), *krba = RING(KB, KA), *krb = RING(KB);
    uint8_t pt[5000], ida[NS_KEK_ID_LEN], idb[NS_KEK_ID_LEN];

    fill_pattern(pt, sizeof(pt), 10);
    id_of(KA, ida);
    id_of(KB, idb);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t sz = sizes[i];
        ns_buf *orig = seal(kra, NAME, pt, sz), *nb = NULL, *again = SENTINEL;
        ns_envelope_info oinfo, ninfo;

        assert_int_equal(ns_envelope_parse(orig->data, orig->len, &oinfo), 0);
        assert_memory_equal(oinfo.kek_id, ida, NS_KEK_ID_LEN);

        assert_int_equal(ns_envelope_rewrap(krba, NAME, orig->data, orig->len, &nb), 0);
        assert_non_null(nb);
        assert_int_equal(ns_envelope_parse(nb->data, nb->len, &ninfo), 0);
        assert_memory_equal(ninfo.kek_id, idb, NS_KEK_ID_LEN);
        assert_int_equal(ninfo.mech, NS_MECH_SOFT_GCM);
        assert_int_equal(ninfo.payload_len, sz);

        /* The payload (nonce, ciphertext, tag) is byte for byte the original's. */
        assert_int_equal(nb->len - ninfo.header_len, orig->len - oinfo.header_len);
        assert_memory_equal(nb->data + ninfo.header_len, orig->data + oinfo.header_len,
                            orig->len - oinfo.header_len);
        /* The header is new: the KEK id, wrapped DEK, header nonce and tag all changed. */
        assert_memory_not_equal(nb->data + OFF_KEK_ID, orig->data + OFF_KEK_ID, NS_KEK_ID_LEN);
        assert_memory_not_equal(nb->data + OFF_WRAPPED, orig->data + OFF_WRAPPED, SOFT_WRAPPED);
        assert_memory_not_equal(nb->data + OFF_HDR_NONCE, orig->data + OFF_HDR_NONCE,
                                NS_AEAD_NONCE + NS_AEAD_TAG);

        /* It opens without A, to the same plaintext; under another name it does not. */
        check_opens_to(krb, NAME, nb->data, nb->len, pt, sz, NULL);
        check_opens_to(krba, NAME, nb->data, nb->len, pt, sz, NULL);
        check_open_fails(kra, NAME, nb->data, nb->len, NS_E_KEK_UNKNOWN, "rewrapped blob, ring [A]");
        check_open_fails(krb, OTHER_NAME, nb->data, nb->len, NS_E_INTEGRITY, "rewrapped, other name");
        /* The original is still good under A. */
        check_opens_to(kra, NAME, orig->data, orig->len, pt, sz, NULL);

        /* Already under the primary: nothing to do, and *out says so. */
        assert_int_equal(ns_envelope_rewrap(krba, NAME, nb->data, nb->len, &again), 0);
        assert_null(again);
        again = SENTINEL;
        assert_int_equal(ns_envelope_rewrap(krb, NAME, nb->data, nb->len, &again), 0);
        assert_null(again);
        again = SENTINEL;
        assert_int_equal(ns_envelope_rewrap(kra, NAME, orig->data, orig->len, &again), 0);
        assert_null(again);

        ns_buf_free(orig);
        ns_buf_free(nb);
    }
    ns_keyring_free(kra);
    ns_keyring_free(krba);
    ns_keyring_free(krb);
}

static void test_rewrap_tampered(void **state)
{
    (void)state;
    ns_keyring *kra = RING(KA), *krba = RING(KB, KA);
    uint8_t pt[64];
    ns_buf *orig, *out;
    /* One position per region after the KEK id: wrapped DEK, header nonce, header tag, payload nonce,
     * ciphertext, payload tag. */
    const size_t offs[] = {OFF_WRAPPED + 20,
                           OFF_HDR_NONCE + 3,
                           OFF_HDR_NONCE + NS_AEAD_NONCE + 5,
                           SOFT_HEADER + 1,
                           SOFT_HEADER + NS_AEAD_NONCE + 10,
                           SOFT_HEADER + NS_AEAD_NONCE + sizeof(pt) + 15};

    fill_pattern(pt, sizeof(pt), 11);
    orig = seal(kra, NAME, pt, sizeof(pt));
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        assert_true(offs[i] < orig->len);
        orig->data[offs[i]] ^= 0x40;
        out = SENTINEL;
        assert_int_equal(ns_envelope_rewrap(krba, NAME, orig->data, orig->len, &out), NS_E_INTEGRITY);
        assert_ptr_equal(out, SENTINEL);
        orig->data[offs[i]] ^= 0x40;
    }
    out = SENTINEL;
    orig->data[OFF_VERSION] = 2;
    assert_int_equal(ns_envelope_rewrap(krba, NAME, orig->data, orig->len, &out), NS_E_VERSION);
    assert_ptr_equal(out, SENTINEL);
    orig->data[OFF_VERSION] = 1;
    assert_int_equal(ns_envelope_rewrap(krba, NAME, orig->data, orig->len - 1, &out), NS_E_INTEGRITY);
    assert_int_equal(ns_envelope_rewrap(krba, NAME, orig->data, 20, &out), NS_E_FORMAT);
    assert_ptr_equal(out, SENTINEL);

    /* Untouched, it rewraps. */
    out = NULL;
    assert_int_equal(ns_envelope_rewrap(krba, NAME, orig->data, orig->len, &out), 0);
    assert_non_null(out);
    ns_buf_free(out);
    ns_buf_free(orig);
    ns_keyring_free(kra);
    ns_keyring_free(krba);
}

/* ---- header parsing without keys ---- */

static void check_parse(const void *p, size_t n, int want, const char *what)
{
    ns_envelope_info info;
    int r;

    memset(&info, 0xee, sizeof(info));
    r = ns_envelope_parse(p, n, &info);
    if (r != want)
        fail_msg("%s: parse got %d (%s), want %d (%s)", what, r, ns_strerror(r), want, ns_strerror(want));
}

static void test_parse_garbage(void **state)
{
    (void)state;
    ns_keyring *kr = RING(KA);
    uint8_t junk[4096], pt[10];
    ns_buf *blob;

    check_parse(junk, 0, NS_E_FORMAT, "empty");
    check_parse("N", 1, NS_E_FORMAT, "N");
    check_parse("NSEN", 4, NS_E_FORMAT, "magic only");
    check_parse("NSEN\x01", 5, NS_E_FORMAT, "magic and version");
    check_parse("NSEN\x02", 5, NS_E_VERSION, "version 2");
    check_parse("NSEN\x00", 5, NS_E_VERSION, "version 0");
    check_parse("nsen\x01", 5, NS_E_FORMAT, "lower-case magic");
    for (uint32_t seed = 1; seed <= 200; seed++) {
        size_t n = (seed * 37) % sizeof(junk);
        fill_pattern(junk, sizeof(junk), seed);
        check_parse(junk, n, NS_E_FORMAT, "random bytes");
        /* With a good magic and version the rest is still garbage. */
        if (n >= 5) {
            memcpy(junk, "NSEN\x01", 5);
            int r = ns_envelope_parse(junk, n, NULL);
            if (r != NS_E_FORMAT && r != NS_E_TOO_LARGE && r != 0)
                fail_msg("magic + random bytes (%zu): parse got %d (%s)", n, r, ns_strerror(r));
        }
    }
    memset(junk, 0, sizeof(junk));
    check_parse(junk, sizeof(junk), NS_E_FORMAT, "zeros");
    memset(junk, 0xff, sizeof(junk));
    check_parse(junk, sizeof(junk), NS_E_FORMAT, "0xff bytes");

    /* A valid header with every byte after it missing or garbled is caught by open, not parse. */
    fill_pattern(pt, sizeof(pt), 12);
    blob = seal(kr, NAME, pt, sizeof(pt));
    check_parse(blob->data, blob->len, 0, "valid blob");
    check_parse(blob->data, SOFT_HEADER, NS_E_FORMAT, "header only");
    check_parse(blob->data, SOFT_HEADER + NS_AEAD_NONCE, NS_E_FORMAT, "header and payload nonce");
    check_parse(blob->data, SOFT_OVERHEAD, 0, "header, nonce and tag (empty payload)");
    /* Wrapped length 0 and NS_WRAPPED_MAX + 1 are out of bounds. */
    blob->data[OFF_WRAPPED_LN] = 0;
    blob->data[OFF_WRAPPED_LN + 1] = 0;
    check_parse(blob->data, blob->len, NS_E_FORMAT, "wrapped length 0");
    blob->data[OFF_WRAPPED_LN] = (uint8_t)((NS_WRAPPED_MAX + 1) >> 8);
    blob->data[OFF_WRAPPED_LN + 1] = (uint8_t)(NS_WRAPPED_MAX + 1);
    check_parse(blob->data, blob->len, NS_E_FORMAT, "wrapped length NS_WRAPPED_MAX + 1");
    blob->data[OFF_WRAPPED_LN] = 0xff;
    blob->data[OFF_WRAPPED_LN + 1] = 0xff;
    check_parse(blob->data, blob->len, NS_E_FORMAT, "wrapped length 65535");
    ns_buf_free(blob);
    ns_keyring_free(kr);
}

/* Regression: a blob one byte above NS_BLOB_MAX must be refused as too large before anything else is
 * looked at, by parse, open and rewrap alike. */
static void test_regression_blob_max_plus_one_too_large(void **state)
{
    (void)state;
    ns_keyring *kra = RING(KA), *krba = RING(KB, KA);
    uint8_t *pt = malloc(NS_PLAINTEXT_MAX), *big = calloc(1, NS_BLOB_MAX + 1);
    ns_buf *blob, *out = SENTINEL;

    assert_non_null(pt);
    assert_non_null(big);

    /* Zeros: NS_BLOB_MAX bytes are malformed, one more is too large. */
    check_parse(big, NS_BLOB_MAX, NS_E_FORMAT, "NS_BLOB_MAX zeros");
    check_parse(big, NS_BLOB_MAX + 1, NS_E_TOO_LARGE, "NS_BLOB_MAX + 1 zeros");
    check_open_fails(kra, NAME, big, NS_BLOB_MAX + 1, NS_E_TOO_LARGE, "NS_BLOB_MAX + 1 zeros");
    assert_int_equal(ns_envelope_rewrap(krba, NAME, big, NS_BLOB_MAX + 1, &out), NS_E_TOO_LARGE);
    assert_ptr_equal(out, SENTINEL);

    /* A valid blob of NS_PLAINTEXT_MAX bytes, padded to NS_BLOB_MAX + 1. */
    fill_pattern(pt, NS_PLAINTEXT_MAX, 13);
    blob = seal(kra, NAME, pt, NS_PLAINTEXT_MAX);
    assert_true(blob->len <= NS_BLOB_MAX);
    memcpy(big, blob->data, blob->len);
    check_opens_to(kra, NAME, big, blob->len, pt, NS_PLAINTEXT_MAX, NULL);
    check_parse(big, NS_BLOB_MAX + 1, NS_E_TOO_LARGE, "valid blob padded to NS_BLOB_MAX + 1");
    check_open_fails(kra, NAME, big, NS_BLOB_MAX + 1, NS_E_TOO_LARGE, "valid blob padded");
    assert_int_equal(ns_envelope_rewrap(krba, NAME, big, NS_BLOB_MAX + 1, &out), NS_E_TOO_LARGE);
    assert_ptr_equal(out, SENTINEL);
    /* One byte more ciphertext than NS_PLAINTEXT_MAX is too large as well. */
    check_parse(big, blob->len + 1, NS_E_TOO_LARGE, "NS_PLAINTEXT_MAX + 1 ciphertext bytes");
    check_open_fails(kra, NAME, big, blob->len + 1, NS_E_TOO_LARGE, "NS_PLAINTEXT_MAX + 1 ciphertext");

    ns_buf_free(blob);
    free(big);
    free(pt);
    ns_keyring_free(kra);
    ns_keyring_free(krba);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_sizes),
        cmocka_unit_test(test_seal_too_large),
        cmocka_unit_test(test_info_fields),
        cmocka_unit_test(test_two_seals_differ),
        cmocka_unit_test(test_open_under_another_name),
        cmocka_unit_test(test_every_bit_flip),
        cmocka_unit_test(test_header_byte_values),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_appended_bytes),
        cmocka_unit_test(test_kek_unknown),
        cmocka_unit_test(test_old_kek_opens),
        cmocka_unit_test(test_duplicate_kek_in_ring),
        cmocka_unit_test(test_rewrap),
        cmocka_unit_test(test_rewrap_tampered),
        cmocka_unit_test(test_parse_garbage),
        cmocka_unit_test(test_regression_blob_max_plus_one_too_large),
    };

    if (ns_secmem_init() != 0)
        fprintf(stderr, "# secure heap unavailable; continuing with ordinary memory\n");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
