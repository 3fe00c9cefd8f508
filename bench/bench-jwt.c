/* bench-jwt: how many registration-nonce JWTs per second ns_nonce_issue() signs, next to the raw signing
 * call of the same key in the same run.
 *
 * Token keys (SoftHSM, in a temp folder removed at exit, or the token named by $BENCH_TOKEN_MODULE and
 * $BENCH_TOKEN_LABEL: bench/bench-token.sh nss): a P-256 and an Ed25519 key pair (the latter only where the
 * token has CKM_EDDSA) generated with ns_signer_pkcs11_generate(). For each:
 *   ours  ns_nonce_issue(): claims (random jti), JSON, base64url, SHA-256 (ECDSA), C_SignInit + C_Sign
 *         through the token layer's session pool, r || s, the compact JWS string;
 *   raw   C_SignInit + C_Sign on a session of our own: CKM_ECDSA over a 32-byte digest, or CKM_EDDSA over a
 *         message as long as a nonce's signing input.
 * Software keys (OpenSSL): P-256 and Ed25519, ours = ns_nonce_issue() with a software signer, raw =
 * EVP_DigestSignInit + EVP_DigestSign over a message as long as a signing input (what the signer calls).
 *
 * Before timing, a token issued by each key must verify with ns_nonce_verify(). ours and raw alternate in
 * rounds (the order flips every round); the table gives the median rate of each, the ratio of the medians,
 * and the median [min..max] of the per-round ratios. Targets (doc/benchmarks.md): token ≥ 0.85, software
 * ≥ 0.8.
 *
 * Usage: bench-jwt [-d SECONDS] [-r ROUNDS] [-v]   (defaults: 1 s, 7 rounds) */
#include "ns-build.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/err.h"
#include "common/log.h"
#include "common/secmem.h"
#include "common/timeutil.h"
#include "settings/settings.h"
#include "jwt/nonce.h"
#include "keys/aead.h"
#include "secrets/keytype.h"
#include "sign/keyset.h"
#include "sign/signer.h"

#include "bench-util.h"

#define ROUNDS_MAX 41
#define SESSIONS   4

static bench_token softhsm;
static ns_config *cfg;
static int verbose;

enum kind { OURS = 0, RAW = 1 };

typedef struct bcase {
    const char *name;  /* "token P-256", ... */
    const char *label; /* token object label, or NULL for software */
    const char *type;  /* "ecdsa-p256" / "ed25519" */
    ns_keyset ks;      /* one signer */
    ns_signer *signer;
    EVP_PKEY *pkey;      /* software: the private key */
    CK_SESSION_HANDLE s; /* token: the raw loop's session */
    CK_OBJECT_HANDLE key;
    uint8_t msg[512];
    size_t msg_len; /* a signing input's length (ECDSA token: the 32-byte digest) */
    double rate[2][ROUNDS_MAX];
    double target;
} bcase;

static void cleanup(void)
{
    bench_rm_tree(softhsm.dir);
}

static const ns_nonce_req req = {NS_NONCE_AGENT, "vm-0123456789",
                                 "tenant-acme",  NULL,
                                 "web",          "0123456789abcdef0123456789abcdef",
                                 false,          0};

static void issue_once(bcase *c)
{
    char *jwt = NULL;
    bench_ok(ns_nonce_issue(cfg, &c->ks, &req, ns_now(), &jwt), "ns_nonce_issue");
    free(jwt);
}

static void raw_once(bcase *c)
{
    if (c->label != NULL) {
        int ec = strcmp(c->type, "ecdsa-p256") == 0;
        CK_MECHANISM m = {ec ? CKM_ECDSA : CKM_EDDSA, NULL, 0};
        uint8_t sig[128];
        CK_ULONG n = sizeof(sig);
        bench_ck(softhsm.fn->C_SignInit(c->s, &m, c->key), "C_SignInit");
        bench_ck(softhsm.fn->C_Sign(c->s, c->msg, c->msg_len, sig, &n), "C_Sign");
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        uint8_t sig[128];
        size_t n = sizeof(sig);
        const EVP_MD *md = strcmp(c->type, "ed25519") == 0 ? NULL : EVP_sha256();
        if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, md, NULL, c->pkey) != 1 ||
            EVP_DigestSign(ctx, sig, &n, c->msg, c->msg_len) != 1)
            bench_die("EVP_DigestSign failed");
        EVP_MD_CTX_free(ctx);
    }
}

static double measure(bcase *c, enum kind k, double secs)
{
    double t0 = bench_now(), t;
    uint64_t ops = 0;

    do {
        if (k == OURS)
            issue_once(c);
        else
            raw_once(c);
        ops++;
    } while ((t = bench_now() - t0) < secs);
    if (verbose)
        fprintf(stderr, "bench-jwt: %-14s %-4s %.0f/s\n", c->name, k == OURS ? "ours" : "raw",
                (double)ops / t);
    return (double)ops / t;
}

static void setup_case(bcase *c)
{
    char *jwt = NULL;
    ns_nonce *nc = NULL;

    if (c->label != NULL) {
        char uri[1024];
        bench_token_uri(&softhsm, c->label, uri, sizeof(uri));
        bench_ok(ns_signer_pkcs11_generate(uri, c->type, NULL, SESSIONS), "ns_signer_pkcs11_generate");
        bench_ok(ns_signer_pkcs11_open(uri, NULL, SESSIONS, &c->signer), "ns_signer_pkcs11_open");
        c->s = bench_token_session(&softhsm);
        if ((c->key = bench_token_find(&softhsm, c->s, CKO_PRIVATE_KEY, c->label)) == CK_INVALID_HANDLE)
            bench_die("%s: key not found", c->name);
    } else {
        bench_ok(ns_keytype_generate(ns_keytype_find(c->type), &c->pkey), "ns_keytype_generate");
        bench_ok(ns_signer_soft_new(c->pkey, &c->signer), "ns_signer_soft_new");
    }
    c->ks.s = &c->signer;
    c->ks.n = 1;
    c->ks.origin = (char *)c->name;
    /* A real token, verified, gives the signing input's length for the raw loop. */
    bench_ok(ns_nonce_issue(cfg, &c->ks, &req, ns_now(), &jwt), "ns_nonce_issue");
    bench_ok(ns_nonce_verify(cfg, &c->ks, jwt, strlen(jwt), NS_NONCE_AGENT, ns_now(), &nc),
             "ns_nonce_verify");
    c->msg_len = (size_t)(strrchr(jwt, '.') - jwt);
    if (c->msg_len > sizeof(c->msg))
        bench_die("signing input of %zu bytes", c->msg_len);
    memcpy(c->msg, jwt, c->msg_len);
    if (c->label != NULL && strcmp(c->type, "ecdsa-p256") == 0)
        c->msg_len = 32; /* CKM_ECDSA signs the digest */
    ns_nonce_free(nc);
    free(jwt);
}

static void report(bcase *cs, int n, int rounds)
{
    printf("\n%-14s %10s %10s %8s %24s %7s\n", "key", "ours/s", "raw/s", "ours/raw", "per-round ours/raw",
           "target");
    for (int i = 0; i < n; i++) {
        double o = bench_median(cs[i].rate[OURS], rounds), r = bench_median(cs[i].rate[RAW], rounds);
        double q[ROUNDS_MAX], lo = 1e300, hi = 0;
        char per[48];
        for (int k = 0; k < rounds; k++) {
            q[k] = cs[i].rate[OURS][k] / cs[i].rate[RAW][k];
            lo = q[k] < lo ? q[k] : lo;
            hi = q[k] > hi ? q[k] : hi;
        }
        snprintf(per, sizeof(per), "%.2f [%.2f..%.2f]", bench_median(q, rounds), lo, hi);
        printf("%-14s %10.0f %10.0f %8.2f %24s %7.2f\n", cs[i].name, o, r, o / r, per, cs[i].target);
    }
}

int main(int argc, char **argv)
{
    static const char yaml[] = "cluster_id: bench\nstorage: {backend: file, path: /nonexistent}\n";
    static bcase cs[] = {
        {"token P-256", "jwt-ec", "ecdsa-p256", {0}, 0, 0, 0, 0, {0}, 0, {{0}}, 0.85},
        {"token Ed25519", "jwt-ed", "ed25519", {0}, 0, 0, 0, 0, {0}, 0, {{0}}, 0.85},
        {"soft P-256", NULL, "ecdsa-p256", {0}, 0, 0, 0, 0, {0}, 0, {{0}}, 0.80},
        {"soft Ed25519", NULL, "ed25519", {0}, 0, 0, 0, 0, {0}, 0, {{0}}, 0.80},
    };
    int ncases = (int)(sizeof(cs) / sizeof(cs[0])), skipped_eddsa = 0;
    double secs = 1.0;
    int rounds = 7, opt;
    struct utsname un;
    char model[256], token[512];

    bench_init("bench-jwt");
    while ((opt = getopt(argc, argv, "d:r:v")) != -1) {
        switch (opt) {
        case 'd':
            secs = atof(optarg);
            break;
        case 'r':
            rounds = atoi(optarg);
            break;
        case 'v':
            verbose = 1;
            break;
        default:
            fprintf(stderr, "usage: bench-jwt [-d SECONDS] [-r ROUNDS] [-v]\n");
            return 2;
        }
    }
    if (secs <= 0 || rounds < 1 || rounds > ROUNDS_MAX)
        bench_die("-d must be > 0 and -r 1..%d", ROUNDS_MAX);
    ns_secmem_harden_process();
    if (ns_secmem_init() != 0)
        ns_log(NS_LOG_DEBUG, "no locked secure heap");
    atexit(cleanup);
    bench_token_make("bench-jwt", &softhsm);
    /* A token without EdDSA (the NSS softoken, a TPM): its Ed25519 case is left out, and the header says so.
     */
    if (!bench_token_has(&softhsm, CKM_EDDSA)) {
        memmove(&cs[1], &cs[2], sizeof(cs[0]) * (size_t)(ncases - 2));
        ncases--;
        skipped_eddsa = 1;
    }
    bench_ok(ns_config_parse(yaml, sizeof(yaml) - 1, "<bench>", NULL, &cfg), "ns_config_parse");
    for (int i = 0; i < ncases; i++)
        setup_case(&cs[i]);

    bench_cpu_model(model, sizeof(model));
    bench_token_describe(&softhsm, token, sizeof(token));
    printf(
        "# bench-jwt: ns_nonce_issue (a whole registration JWT) vs the raw signing call of the same key\n");
    printf("# command:");
    for (int i = 0; i < argc; i++)
        printf(" %s", argv[i]);
    printf("\n");
    if (uname(&un) == 0)
        printf("# machine: %ld CPUs online (%s), %s %s %s\n", sysconf(_SC_NPROCESSORS_ONLN), model,
               un.sysname, un.release, un.machine);
    printf("# token:   %s\n# crypto:  %s\n", token, OpenSSL_version(OPENSSL_VERSION));
    printf("# %d round(s) of %.2f s per measurement, 1 thread; ours and raw alternate; medians over rounds\n",
           rounds, secs);
    if (skipped_eddsa)
        printf("# the token has no CKM_EDDSA: no token Ed25519 case\n");
    fflush(stdout);

    for (int k = 0; k < rounds; k++)
        for (int i = 0; i < ncases; i++) {
            int first = k % 2 == 0 ? OURS : RAW;
            cs[i].rate[first][k] = measure(&cs[i], (enum kind)first, secs);
            cs[i].rate[!first][k] = measure(&cs[i], (enum kind) !first, secs);
        }
    report(cs, ncases, rounds);

    for (int i = 0; i < ncases; i++) {
        if (cs[i].label != NULL)
            (void)softhsm.fn->C_CloseSession(cs[i].s);
        ns_signer_free(cs[i].signer);
        EVP_PKEY_free(cs[i].pkey);
    }
    ns_config_free(cfg);
    bench_token_close(&softhsm);
    return 0;
}
