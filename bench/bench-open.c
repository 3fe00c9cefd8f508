/* bench-open: how fast ns_envelope_open() is, next to the token's own unwrap call on the same token and
 * next to a software KEK (OpenSSL alone).
 *
 * It makes a SoftHSM token in a temp folder (removed at exit), or uses the token named by
 * $BENCH_TOKEN_MODULE and $BENCH_TOKEN_LABEL (bench/bench-token.sh nss), and for each token mechanism
 * (aes-gcm, aes-kwp, rsa-oaep with RSA-3072) generates a KEK, opens it with 4 sessions and seals one random 4
 * KiB secret under "cluster/secret/bench". Then, for 1 and 2 threads, it measures for a fixed time:
 *
 *   ours      every thread loops ns_envelope_open() on that blob (and frees the plaintext);
 *   raw       every thread has its own logged-in session and loops the one token call that recovers the
 *             same wrapped DEK: aes-gcm C_DecryptInit(CKM_AES_GCM, the blob's IV and AAD) + C_Decrypt;
 *             aes-kwp C_UnwrapKey(CKM_AES_KEY_WRAP_PAD) + C_DestroyObject of the session key (the least that
 *             leaks no objects); rsa-oaep C_DecryptInit(CKM_RSA_PKCS_OAEP, the hash in the blob's param
 *             byte) + C_Decrypt;
 *   software  ns_envelope_open() of the same secret sealed under a software KEK (ns_kek_soft_new).
 *
 * ours and raw alternate (their order flips every round); the table gives the median rate of each over the
 * rounds and the ratio of the medians. Before timing, the raw call's output must equal the DEK that the KEK's
 * own unwrap gives, and ns_envelope_open() must give back the secret; otherwise it stops.
 *
 * The machine is noisy (a VM's speed drifts by 2x over seconds), so the ratio that matters is taken between
 * adjacent measurements: the table also gives the median and range of the per-round ratios. Many short
 * rounds (-d 0.25 -r 41) pair them more tightly than a few long ones.
 *
 * Usage: bench-open [-d SECONDS] [-r ROUNDS] [-m MECHS] [-k KINDS] [-t THREADS] [-v]
 *   defaults: 2 s, 5 rounds, every mechanism, kind and thread count; -m/-k/-t pick a subset (to profile
 *   one loop under perf), -v prints every measurement. */
#include "ns-build.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secmem.h"
#include "envelope/envelope.h"
#include "keys/aead.h"
#include "keys/kek.h"
#include "keys/keyring.h"
#include "pkcs11/module.h"

#include "bench-util.h"

#define BLOB_NAME  "cluster/secret/bench"
#define SECRET_LEN 4096
#define SESSIONS   4
#define ROUNDS_MAX 101
#define NTHREADS   2 /* thread counts 1..NTHREADS */
#define AAD_LEN    (7 + NS_KEK_ID_LEN)

static bench_token softhsm; /* the module reference is held for the whole run, so that the token layer and we
                             * share one instance */

enum kind { OURS = 0, RAW = 1, SOFT = 2, NKINDS };

/* One mechanism: its ring and blob, and what the raw loop needs, taken from the blob. */
typedef struct mcase {
    const char *name; /* "aes-gcm", "aes-kwp", "rsa-oaep", or "software" */
    uint8_t mech;
    CK_OBJECT_CLASS cls; /* class of the token key (raw loop) */
    char label[32];
    ns_keyring *kr;
    ns_buf *blob;
    uint8_t param;
    uint8_t kek_id[NS_KEK_ID_LEN];
    const uint8_t *wrapped; /* into blob */
    size_t wrapped_len;
    uint8_t aad[AAD_LEN]; /* "NSEN" | 1 | mech | 0 | kek id: the wrap's associated data */
    uint8_t dek[NS_DEK_LEN];
    double rate[NKINDS][NTHREADS][ROUNDS_MAX]; /* ops/s per kind, thread count, round */
} mcase;

/* From atexit, so that a failure (bench_die) removes the token's temp folder too. */
static void cleanup(void)
{
    bench_rm_tree(softhsm.dir);
}

/* ---- setting up one mechanism ---- */

/* Take the KEK id, param and wrapped DEK out of the blob (layout: envelope.h), with the cursor. */
static void parse_blob(mcase *mc)
{
    ns_cur c = ns_cur_init(mc->blob->data, mc->blob->len), w;
    const uint8_t *magic;
    uint8_t version, mech, flags;

    if (ns_cur_bytes(&c, 4, &magic) != 0 || memcmp(magic, "NSEN", 4) != 0 || ns_cur_u8(&c, &version) != 0 ||
        ns_cur_u8(&c, &mech) != 0 || ns_cur_u8(&c, &mc->param) != 0 || ns_cur_u8(&c, &flags) != 0 ||
        ns_cur_copy(&c, mc->kek_id, NS_KEK_ID_LEN) != 0 || ns_cur_lp16(&c, 1, NS_WRAPPED_MAX, &w) != 0)
        bench_die("%s: cannot parse the sealed blob", mc->name);
    if (version != NS_ENVELOPE_VERSION || mech != mc->mech || flags != 0)
        bench_die("%s: unexpected blob header (version %u, mech %u, flags %u)", mc->name, version, mech,
                  flags);
    mc->wrapped = w.p;
    mc->wrapped_len = w.len;
    /* wrap_aad() in envelope.c */
    memcpy(mc->aad, "NSEN", 4);
    mc->aad[4] = NS_ENVELOPE_VERSION;
    mc->aad[5] = mech;
    mc->aad[6] = 0;
    memcpy(mc->aad + 7, mc->kek_id, NS_KEK_ID_LEN);
}

/* Seal the secret, check that it opens, and get the reference DEK from the KEK's own unwrap. */
static void seal_and_check(mcase *mc, const uint8_t *secret)
{
    ns_kek *kek;
    ns_buf *pt = NULL;

    bench_ok(ns_envelope_seal(mc->kr, BLOB_NAME, secret, SECRET_LEN, &mc->blob), "ns_envelope_seal");
    bench_ok(ns_envelope_open(mc->kr, BLOB_NAME, mc->blob->data, mc->blob->len, &pt, NULL),
             "ns_envelope_open");
    if (pt->len != SECRET_LEN || memcmp(pt->data, secret, SECRET_LEN) != 0)
        bench_die("%s: ns_envelope_open gave back something else than the secret", mc->name);
    ns_buf_free(pt);
    parse_blob(mc);
    kek = ns_keyring_primary(mc->kr);
    bench_ok(
        kek->ops->unwrap(kek, mc->param, mc->wrapped, mc->wrapped_len, mc->aad, sizeof(mc->aad), mc->dek),
        "the KEK's unwrap");
}

static void setup_token_mech(mcase *mc, const char *name, uint8_t mech, const uint8_t *secret)
{
    char uri[1024], mechanism[16];
    ns_kek_config kc;
    ns_kek *kek = NULL;

    mc->name = name;
    mc->mech = mech;
    mc->cls = mech == NS_MECH_RSA_OAEP ? CKO_PRIVATE_KEY : CKO_SECRET_KEY;
    snprintf(mc->label, sizeof(mc->label), "kek-%s", name);
    bench_token_uri(&softhsm, mc->label, uri, sizeof(uri));
    snprintf(mechanism, sizeof(mechanism), "%s", name);
    bench_ok(ns_kek_pkcs11_generate(uri, name, NULL, SESSIONS), "ns_kek_pkcs11_generate");
    memset(&kc, 0, sizeof(kc));
    kc.source = NS_KEK_SRC_PKCS11;
    kc.uri = uri;
    kc.mechanism = mechanism;
    bench_ok(ns_kek_pkcs11_open(&kc, SESSIONS, &kek), "ns_kek_pkcs11_open");
    bench_ok(ns_keyring_from_keks(&kek, 1, &mc->kr), "ns_keyring_from_keks");
    seal_and_check(mc, secret);
}

static void setup_soft(mcase *mc, const uint8_t *secret)
{
    uint8_t key[NS_DEK_LEN];
    ns_kek *kek = NULL;

    mc->name = "software";
    mc->mech = NS_MECH_SOFT_GCM;
    bench_ok(ns_random(key, sizeof(key)), "ns_random");
    bench_ok(ns_kek_soft_new(key, "bench software KEK", &kek), "ns_kek_soft_new");
    OPENSSL_cleanse(key, sizeof(key));
    bench_ok(ns_keyring_from_keks(&kek, 1, &mc->kr), "ns_keyring_from_keks");
    seal_and_check(mc, secret);
}

/* ---- the raw token call ---- */

/* One unwrap of the blob's wrapped DEK straight through PKCS#11. With out != NULL it also returns the DEK
 * (for aes-kwp that takes a C_GetAttributeValue, which the timed loop leaves out). */
static CK_RV raw_once(const mcase *mc, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, uint8_t *out,
                      CK_ULONG *out_len)
{
    CK_FUNCTION_LIST *fn = softhsm.fn;
    uint8_t buf[640];
    CK_ULONG len = sizeof(buf);
    CK_RV rv;

    if (mc->mech == NS_MECH_AES_GCM) {
        CK_GCM_PARAMS gp = {(CK_BYTE_PTR)mc->wrapped, NS_AEAD_NONCE,   NS_AEAD_NONCE * 8,
                            (CK_BYTE_PTR)mc->aad,     sizeof(mc->aad), NS_AEAD_TAG * 8};
        CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof(gp)};
        if ((rv = fn->C_DecryptInit(s, &m, key)) != CKR_OK)
            return rv;
        rv = fn->C_Decrypt(s, (CK_BYTE_PTR)mc->wrapped + NS_AEAD_NONCE, mc->wrapped_len - NS_AEAD_NONCE, buf,
                           &len);
    } else if (mc->mech == NS_MECH_RSA_OAEP) {
        int sha1 = mc->param == NS_OAEP_SHA1;
        CK_RSA_PKCS_OAEP_PARAMS op = {sha1 ? CKM_SHA_1 : CKM_SHA256, sha1 ? CKG_MGF1_SHA1 : CKG_MGF1_SHA256,
                                      CKZ_DATA_SPECIFIED, NULL, 0};
        CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &op, sizeof(op)};
        if ((rv = fn->C_DecryptInit(s, &m, key)) != CKR_OK)
            return rv;
        rv = fn->C_Decrypt(s, (CK_BYTE_PTR)mc->wrapped, mc->wrapped_len, buf, &len);
    } else {
        CK_MECHANISM m = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE kt = CKK_AES;
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &cls, sizeof(cls)},       {CKA_KEY_TYPE, &kt, sizeof(kt)},
            {CKA_TOKEN, &no, sizeof(no)},         {CKA_SENSITIVE, &no, sizeof(no)},
            {CKA_EXTRACTABLE, &yes, sizeof(yes)},
        };
        CK_ATTRIBUTE val = {CKA_VALUE, buf, sizeof(buf)};
        CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
        CK_RV drv;

        if ((rv = fn->C_UnwrapKey(s, &m, key, (CK_BYTE_PTR)mc->wrapped, mc->wrapped_len, tmpl,
                                  sizeof(tmpl) / sizeof(tmpl[0]), &h)) != CKR_OK)
            return rv;
        if (out != NULL) {
            rv = fn->C_GetAttributeValue(s, h, &val, 1);
            len = val.ulValueLen;
        }
        drv = fn->C_DestroyObject(s, h);
        if (rv == CKR_OK)
            rv = drv;
    }
    if (rv == CKR_OK && out != NULL) {
        memcpy(out, buf, len < *out_len ? len : *out_len);
        *out_len = len;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return rv;
}

/* A logged-in session of our own (the token layer's login covers every session of the process) and the
 * KEK's handle in it. */
static void raw_session(const mcase *mc, CK_SESSION_HANDLE *s, CK_OBJECT_HANDLE *key)
{
    *s = bench_token_session(&softhsm);
    if ((*key = bench_token_find(&softhsm, *s, mc->cls, mc->label)) == CK_INVALID_HANDLE)
        bench_die("%s: key %s not found", mc->name, mc->label);
}

/* The raw call must give exactly the DEK that the envelope uses. */
static void raw_check(const mcase *mc, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key)
{
    uint8_t out[64];
    CK_ULONG len = sizeof(out);

    bench_ck(raw_once(mc, s, key, out, &len), "raw unwrap (check)");
    if (len != NS_DEK_LEN || memcmp(out, mc->dek, NS_DEK_LEN) != 0)
        bench_die("%s: the raw call's output is not the DEK that the KEK's unwrap gives", mc->name);
    OPENSSL_cleanse(out, sizeof(out));
}

/* ---- timed runs ---- */

typedef struct run {
    enum kind kind;
    const mcase *mc;
    pthread_barrier_t start;
    atomic_int stop;
} run;

typedef struct worker {
    pthread_t th;
    run *run;
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE key;
    uint64_t ops;
    double secs;
    int err;
    CK_RV rv;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    const mcase *mc = w->run->mc;
    double t0;

    pthread_barrier_wait(&w->run->start);
    t0 = bench_now();
    while (!atomic_load_explicit(&w->run->stop, memory_order_relaxed)) {
        if (w->run->kind == RAW) {
            if ((w->rv = raw_once(mc, w->s, w->key, NULL, NULL)) != CKR_OK)
                break;
        } else {
            ns_buf *pt = NULL;
            if ((w->err = ns_envelope_open(mc->kr, BLOB_NAME, mc->blob->data, mc->blob->len, &pt, NULL)) != 0)
                break;
            ns_buf_free(pt);
        }
        w->ops++;
    }
    w->secs = bench_now() - t0;
    return NULL;
}

static int verbose; /* -v: every measurement on stderr */

/* nthreads threads of `kind` on mc for `secs` seconds: the summed rate in operations per second. */
static double measure(enum kind kind, const mcase *mc, int nthreads, double secs)
{
    run r;
    worker w[NTHREADS];
    struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    double rate = 0;

    memset(&r, 0, sizeof(r));
    memset(w, 0, sizeof(w));
    r.kind = kind;
    r.mc = mc;
    atomic_init(&r.stop, 0);
    if (pthread_barrier_init(&r.start, NULL, (unsigned)nthreads + 1) != 0)
        bench_die("pthread_barrier_init");
    for (int i = 0; i < nthreads; i++) {
        w[i].run = &r;
        if (kind == RAW) {
            raw_session(mc, &w[i].s, &w[i].key);
            raw_check(mc, w[i].s, w[i].key);
        }
        if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0)
            bench_die("pthread_create");
    }
    pthread_barrier_wait(&r.start);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    atomic_store(&r.stop, 1);
    for (int i = 0; i < nthreads; i++) {
        pthread_join(w[i].th, NULL);
        if (kind == RAW)
            bench_ck(softhsm.fn->C_CloseSession(w[i].s), "C_CloseSession");
        if (w[i].err != 0)
            bench_die("%s: ns_envelope_open failed in the loop: %s", mc->name, ns_strerror(w[i].err));
        if (w[i].rv != CKR_OK)
            bench_die("%s: raw call failed in the loop: CKR 0x%lx", mc->name, (unsigned long)w[i].rv);
        if (w[i].secs > 0)
            rate += (double)w[i].ops / w[i].secs;
    }
    pthread_barrier_destroy(&r.start);
    if (verbose)
        fprintf(stderr, "bench-open: %-8s %-8s %d thread(s): %.0f/s\n", mc->name,
                kind == OURS  ? "ours"
                : kind == RAW ? "raw"
                              : "software",
                nthreads, rate);
    return rate;
}

/* ---- report ---- */

static void print_machine(int argc, char **argv, double secs, int rounds)
{
    struct utsname un;
    char model[256], token[512];

    bench_cpu_model(model, sizeof(model));
    bench_token_describe(&softhsm, token, sizeof(token));
    printf("# bench-open: ns_envelope_open of a %d-byte secret vs the token's own unwrap call\n", SECRET_LEN);
    printf("# command:");
    for (int i = 0; i < argc; i++)
        printf(" %s", argv[i]);
    printf("\n");
    if (uname(&un) == 0)
        printf("# machine: %ld CPUs online (%s), %s %s %s\n", sysconf(_SC_NPROCESSORS_ONLN), model,
               un.sysname, un.release, un.machine);
    printf("# token:   %s\n", token);
    printf("# crypto:  %s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("# %d round(s) of %.1f s per measurement; ours and raw alternate; medians over rounds;\n", rounds,
           secs);
    printf(
        "# KEK sessions: %d; ours/raw = median(ours) / median(raw); per-round ours/raw = median [min..max]\n"
        "# of the ratios of each round's adjacent ours and raw measurements\n",
        SESSIONS);
}

/* Which mechanisms and kinds to run (-m, -k): all by default; fewer for profiling one of them. */
static int want_mech[3] = {1, 1, 1}, want_kind[NKINDS] = {1, 1, 1}, want_threads[NTHREADS] = {1, 1};

static void fmt_rate(char *out, size_t n, int measured, double v)
{
    if (measured)
        snprintf(out, n, "%.0f", v);
    else
        snprintf(out, n, "-");
}

static void print_table(mcase *mc, int nmech, const mcase *soft, int rounds)
{
    printf("\n%-10s %7s %10s %10s %8s %22s %11s %8s\n", "mechanism", "threads", "ours/s", "raw/s", "ours/raw",
           "per-round ours/raw", "software/s", "ours/sw");
    for (int i = 0; i < nmech; i++) {
        if (!want_mech[i])
            continue;
        for (int t = 0; t < NTHREADS; t++) {
            if (!want_threads[t])
                continue;
            double o = bench_median(mc[i].rate[OURS][t], rounds),
                   r = bench_median(mc[i].rate[RAW][t], rounds);
            double s = bench_median(soft->rate[SOFT][t], rounds), q[ROUNDS_MAX], lo = 1e300, hi = 0;
            char so[32], sr[32], ss[32], ratio[32] = "-", per[48] = "-", osw[32] = "-";

            fmt_rate(so, sizeof(so), want_kind[OURS], o);
            fmt_rate(sr, sizeof(sr), want_kind[RAW], r);
            fmt_rate(ss, sizeof(ss), want_kind[SOFT], s);
            if (want_kind[OURS] && want_kind[RAW]) {
                for (int k = 0; k < rounds; k++) {
                    q[k] = mc[i].rate[OURS][t][k] / mc[i].rate[RAW][t][k];
                    lo = q[k] < lo ? q[k] : lo;
                    hi = q[k] > hi ? q[k] : hi;
                }
                snprintf(ratio, sizeof(ratio), "%.2f", o / r);
                snprintf(per, sizeof(per), "%.2f [%.2f..%.2f]", bench_median(q, rounds), lo, hi);
            }
            if (want_kind[OURS] && want_kind[SOFT])
                snprintf(osw, sizeof(osw), "%.3f", o / s);
            printf("%-10s %7d %10s %10s %8s %22s %11s %8s\n", mc[i].name, t + 1, so, sr, ratio, per, ss, osw);
        }
    }
}

static void __attribute__((noreturn)) usage(void)
{
    fprintf(stderr,
            "usage: bench-open [-d SECONDS] [-r ROUNDS] [-m MECHS] [-k KINDS] [-t THREADS] [-v]\n"
            "  -d SECONDS  length of each measurement (default 2)\n"
            "  -r ROUNDS   rounds; the table shows medians (default 5, at most %d)\n"
            "  -m MECHS    comma-separated subset of aes-gcm,aes-kwp,rsa-oaep (default all)\n"
            "  -k KINDS    comma-separated subset of ours,raw,software (default all; fewer to profile one)\n"
            "  -t THREADS  comma-separated subset of 1,2 (default both)\n"
            "  -v          print every measurement on stderr\n",
            ROUNDS_MAX);
    exit(2);
}

/* Parse a comma-separated list of names into flags; 0 if a name is unknown. */
static int parse_list(const char *arg, const char *const *names, int n, int *flags)
{
    char buf[256], *save = NULL, *tok;

    snprintf(buf, sizeof(buf), "%s", arg);
    memset(flags, 0, (size_t)n * sizeof(*flags));
    for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        int i;
        for (i = 0; i < n && strcmp(tok, names[i]) != 0; i++)
            ;
        if (i == n)
            return 0;
        flags[i] = 1;
    }
    return 1;
}

int main(int argc, char **argv)
{
    static const char *const mech_names[3] = {"aes-gcm", "aes-kwp", "rsa-oaep"};
    static const char *const kind_names[NKINDS] = {"ours", "raw", "software"};
    static const char *const thread_names[NTHREADS] = {"1", "2"};
    static mcase mc[3], soft;
    static const struct {
        const char *name;
        uint8_t mech;
    } mechs[3] = {{"aes-gcm", NS_MECH_AES_GCM}, {"aes-kwp", NS_MECH_AES_KWP}, {"rsa-oaep", NS_MECH_RSA_OAEP}};
    uint8_t secret[SECRET_LEN];
    double secs = 2.0;
    int rounds = 5, opt;
    char *end;

    bench_init("bench-open");
    while ((opt = getopt(argc, argv, "d:r:m:k:t:vh")) != -1) {
        switch (opt) {
        case 'v':
            verbose = 1;
            break;
        case 't':
            if (!parse_list(optarg, thread_names, NTHREADS, want_threads))
                usage();
            break;
        case 'm':
            if (!parse_list(optarg, mech_names, 3, want_mech))
                usage();
            break;
        case 'k':
            if (!parse_list(optarg, kind_names, NKINDS, want_kind))
                usage();
            break;
        case 'd':
            secs = strtod(optarg, &end);
            if (*end != '\0' || !(secs > 0 && secs <= 3600))
                usage();
            break;
        case 'r':
            rounds = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || rounds < 1 || rounds > ROUNDS_MAX)
                usage();
            break;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();

    atexit(cleanup);
    if (ns_secmem_init() != 0)
        fprintf(stderr, "bench-open: secure heap unavailable; secrets use ordinary memory\n");
    bench_token_make("bench", &softhsm);
    bench_ok(ns_random(secret, sizeof(secret)), "ns_random");
    for (int i = 0; i < 3; i++)
        if (want_mech[i])
            setup_token_mech(&mc[i], mechs[i].name, mechs[i].mech, secret);
    setup_soft(&soft, secret);
    if (want_mech[2] && mc[2].param != NS_OAEP_SHA1 && mc[2].param != NS_OAEP_SHA256)
        bench_die("rsa-oaep: unexpected OAEP hash %u in the blob", mc[2].param);

    print_machine(argc, argv, secs, rounds);
    fflush(stdout);
    for (int k = 0; k < rounds; k++) {
        for (int t = 0; t < NTHREADS; t++) {
            if (!want_threads[t])
                continue;
            for (int i = 0; i < 3; i++) {
                enum kind first = k % 2 ? RAW : OURS, second = k % 2 ? OURS : RAW;
                if (!want_mech[i])
                    continue;
                if (want_kind[first])
                    mc[i].rate[first][t][k] = measure(first, &mc[i], t + 1, secs);
                if (want_kind[second])
                    mc[i].rate[second][t][k] = measure(second, &mc[i], t + 1, secs);
            }
            if (want_kind[SOFT])
                soft.rate[SOFT][t][k] = measure(SOFT, &soft, t + 1, secs);
        }
        fprintf(stderr, "bench-open: round %d/%d done\n", k + 1, rounds);
    }
    print_table(mc, 3, &soft, rounds);
    if (want_kind[SOFT])
        for (int t = 0; t < NTHREADS; t++)
            if (want_threads[t])
                printf("%-10s %7d %10.0f %10s %8s %22s %11.0f %8s\n", "software", t + 1,
                       bench_median(soft.rate[SOFT][t], rounds), "-", "-", "-",
                       bench_median(soft.rate[SOFT][t], rounds), "1");

    for (int i = 0; i < 3; i++) {
        OPENSSL_cleanse(mc[i].dek, sizeof(mc[i].dek));
        ns_buf_free(mc[i].blob);
        ns_keyring_free(mc[i].kr);
    }
    OPENSSL_cleanse(soft.dek, sizeof(soft.dek));
    ns_buf_free(soft.blob);
    ns_keyring_free(soft.kr);
    bench_token_close(&softhsm);
    OPENSSL_cleanse(secret, sizeof(secret));
    return 0;
}
