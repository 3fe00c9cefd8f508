/* bench-token MODULE TOKEN KEK-LABEL EC-LABEL [SECONDS]: our stack vs the raw PKCS#11 rate of any token.
 *
 * The PIN comes from $BENCH_TOKEN_PIN. KEK-LABEL names an RSA key pair (rsa-oaep KEK), EC-LABEL a P-256 key
 * pair. Rounds of SECONDS (default 2) alternate, five of each, medians reported:
 *   raw unwrap   C_DecryptInit(CKM_RSA_PKCS_OAEP, the hash the KEK chose) + C_Decrypt of a wrapped DEK, on
 * our own session our unwrap   the rsa-oaep KEK's unwrap (ns_kek, token layer: pooled session, recovery
 * wrapper) raw sign     C_SignInit(CKM_ECDSA) + C_Sign of a SHA-256 digest our sign     ns_signer_sign() of a
 * 200-byte message (SHA-256 here, C_Sign in the token, r||s checked) bench/bench-token.sh starts a software
 * TPM or a p11-kit server and runs this against it. */
#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "bench/bench-util.h"
#include "common/secmem.h"
#include "keys/kek.h"
#include "sign/signer.h"

#define ROUNDS 5

static double secs = 2.0;

struct raw {
    bench_token *t;
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE key;
    const uint8_t *in;
    size_t in_len;
    uint8_t oaep; /* the OAEP hash the KEK chose (NS_OAEP_SHA256, or SHA-1 on SoftHSM) */
};

static void raw_unwrap(struct raw *r)
{
    CK_RSA_PKCS_OAEP_PARAMS p = {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, NULL, 0};
    if (r->oaep == NS_OAEP_SHA1)
        p = (CK_RSA_PKCS_OAEP_PARAMS){CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, NULL, 0};
    CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &p, sizeof(p)};
    uint8_t out[512];
    CK_ULONG n = sizeof(out);
    bench_ck(r->t->fn->C_DecryptInit(r->s, &m, r->key), "C_DecryptInit");
    bench_ck(r->t->fn->C_Decrypt(r->s, (CK_BYTE_PTR)r->in, r->in_len, out, &n), "C_Decrypt");
    if (n != NS_DEK_LEN)
        bench_die("C_Decrypt gave %lu bytes", (unsigned long)n);
}

static void raw_sign(struct raw *r)
{
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    uint8_t out[132];
    CK_ULONG n = sizeof(out);
    bench_ck(r->t->fn->C_SignInit(r->s, &m, r->key), "C_SignInit");
    bench_ck(r->t->fn->C_Sign(r->s, (CK_BYTE_PTR)r->in, r->in_len, out, &n), "C_Sign");
}

/* ops/s of one round of fn(arg) */
static double round_rate(void (*fn)(void *), void *arg)
{
    double start = bench_now(), now;
    long n = 0;
    do {
        fn(arg);
        n++;
        now = bench_now();
    } while (now - start < secs);
    return (double)n / (now - start);
}

struct ours_unwrap {
    ns_kek *k;
    uint8_t param;
    const uint8_t *in;
    size_t in_len;
};

static void ours_unwrap_fn(void *v)
{
    struct ours_unwrap *o = v;
    uint8_t dek[NS_DEK_LEN];
    bench_ok(o->k->ops->unwrap(o->k, o->param, o->in, o->in_len, NULL, 0, dek), "unwrap");
    ns_wipe(dek, sizeof(dek));
}

static void ours_sign_fn(void *v)
{
    static const uint8_t msg[200] = {1};
    ns_buf *sig = NULL;
    bench_ok(ns_signer_sign(v, NS_SIG_RAW, msg, sizeof(msg), &sig), "ns_signer_sign");
    ns_buf_free(sig);
}

static void raw_unwrap_fn(void *v)
{
    raw_unwrap(v);
}

static void raw_sign_fn(void *v)
{
    raw_sign(v);
}

static void compare(const char *what, void (*raw)(void *), void *raw_arg, void (*ours)(void *),
                    void *ours_arg)
{
    double r[ROUNDS], o[ROUNDS], mr, mo;
    raw(raw_arg); /* warm up both */
    ours(ours_arg);
    for (int i = 0; i < ROUNDS; i++) {
        r[i] = round_rate(raw, raw_arg);
        o[i] = round_rate(ours, ours_arg);
    }
    mr = bench_median(r, ROUNDS);
    mo = bench_median(o, ROUNDS);
    printf("%-22s raw %9.1f/s   ours %9.1f/s   ours/raw %.3f\n", what, mr, mo, mo / mr);
}

int main(int argc, char **argv)
{
    bench_token t;
    ns_kek_config kc;
    ns_kek *k = NULL;
    ns_signer *sg = NULL;
    ns_buf *wrapped = NULL;
    char kek_uri[1024], ec_uri[1024], desc[512];
    uint8_t dek[NS_DEK_LEN] = {7}, param = 0, digest[SHA256_DIGEST_LENGTH];
    struct raw ru, rs;
    struct ours_unwrap ou;
    CK_SLOT_ID slots[16];
    CK_ULONG nslots = 16;
    CK_TOKEN_INFO ti;

    bench_init("bench-token");
    if (argc < 5 || argc > 6 || getenv("BENCH_TOKEN_PIN") == NULL) {
        fputs("usage: BENCH_TOKEN_PIN=... bench-token MODULE TOKEN KEK-LABEL EC-LABEL [SECONDS]\n", stderr);
        return 2;
    }
    if (argc == 6 && (secs = atof(argv[5])) <= 0)
        bench_die("SECONDS must be positive");
    if (ns_secmem_init() != 0)
        fputs("bench-token: no locked secure heap\n", stderr);
    snprintf(kek_uri, sizeof(kek_uri), "pkcs11:token=%s;object=%s;type=private?module-path=%s", argv[2],
             argv[3], argv[1]);
    snprintf(ec_uri, sizeof(ec_uri), "pkcs11:token=%s;object=%s;type=private?module-path=%s", argv[2],
             argv[4], argv[1]);

    memset(&kc, 0, sizeof(kc));
    kc.source = NS_KEK_SRC_PKCS11;
    kc.uri = kek_uri;
    kc.mechanism = "rsa-oaep";
    kc.oaep_hash = "auto";
    kc.pin_env = "BENCH_TOKEN_PIN";
    bench_ok(ns_kek_pkcs11_open(&kc, 4, &k), "opening the rsa-oaep KEK");
    bench_ok(ns_signer_pkcs11_open(ec_uri, "BENCH_TOKEN_PIN", 4, &sg), "opening the P-256 key");
    bench_ok(ns_buf_new(NS_WRAPPED_MAX, false, &wrapped), "ns_buf_new");
    bench_ok(k->ops->wrap(k, dek, NULL, 0, wrapped, &param), "wrap");

    /* The raw side: the same loaded module (the token layer's login covers our session too). */
    memset(&t, 0, sizeof(t));
    snprintf(t.module, sizeof(t.module), "%s", argv[1]);
    snprintf(t.label, sizeof(t.label), "%s", argv[2]);
    bench_ok(ns_p11_module_get(argv[1], &t.mod), "loading the module");
    t.fn = ns_p11_module_fn(t.mod);
    bench_ck(t.fn->C_GetSlotList(CK_TRUE, slots, &nslots), "C_GetSlotList");
    t.slot = (CK_SLOT_ID)-1;
    for (CK_ULONG i = 0; i < nslots; i++) {
        char label[33];
        size_t n = 32;
        if (t.fn->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
            continue;
        memcpy(label, ti.label, 32);
        while (n > 0 && label[n - 1] == ' ')
            n--;
        label[n] = '\0';
        if (strcmp(label, argv[2]) == 0)
            t.slot = slots[i];
    }
    if (t.slot == (CK_SLOT_ID)-1)
        bench_die("no token '%s'", argv[2]);
    bench_token_describe(&t, desc, sizeof(desc));
    printf("token '%s' on %s\nOAEP hash %s; %g s rounds, %d of each, alternating; medians\n", argv[2], desc,
           param == NS_OAEP_SHA1 ? "SHA-1" : "SHA-256", secs, ROUNDS);

    ru.t = &t;
    ru.s = bench_token_session(&t);
    ru.key = bench_token_find(&t, ru.s, CKO_PRIVATE_KEY, argv[3]);
    ru.in = wrapped->data;
    ru.in_len = wrapped->len;
    ru.oaep = param;
    if (ru.key == CK_INVALID_HANDLE)
        bench_die("no private key '%s'", argv[3]);
    ou = (struct ours_unwrap){k, param, wrapped->data, wrapped->len};
    compare("rsa-oaep unwrap", raw_unwrap_fn, &ru, ours_unwrap_fn, &ou);

    SHA256((const uint8_t *)"bench", 5, digest);
    rs = ru;
    rs.key = bench_token_find(&t, rs.s, CKO_PRIVATE_KEY, argv[4]);
    rs.in = digest;
    rs.in_len = sizeof(digest);
    if (rs.key == CK_INVALID_HANDLE)
        bench_die("no private key '%s'", argv[4]);
    compare("ECDSA P-256 sign", raw_sign_fn, &rs, ours_sign_fn, sg);

    (void)t.fn->C_CloseSession(ru.s);
    ns_buf_free(wrapped);
    ns_signer_free(sg);
    ns_kek_free(k);
    bench_token_close(&t);
    return 0;
}
