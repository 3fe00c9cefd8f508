/* bench-reg: the pieces of one registration (POST /v1/register), measured with the library, one thread:
 *
 *   verify   ns_nonce_verify() of an agent nonce signed by a software Ed25519 key (registration-nonce.key)
 *   mark     ns_ledger_use(): the local SQLite row (synchronous=FULL) and the create-only marker in a file
 *            store (temp file + fsync + link), both in a temp folder on disk (-t DIR, default $TMPDIR or
 * /tmp) sign     ns_ca_issue() with a P-256 CA key in a SoftHSM token: agent certificate (Ed25519 subject
 * key), C_Sign in the token, self-check, certificate-log entry in the same store
 *
 * Prints each piece's median rate and time per operation over the rounds, and their sum: the cost of a
 * registration without HTTP, TLS, JSON and the registration record.
 *
 * Usage: bench-reg [-d SECONDS] [-r ROUNDS] [-t DIR]     defaults: 1 s, 5 rounds */
#include "ns-build.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ca/ca.h"
#include "ca/cert.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secmem.h"
#include "common/strv.h"
#include "common/timeutil.h"
#include "settings/settings.h"
#include "jwt/ledger.h"
#include "jwt/nonce.h"
#include "secrets/keytype.h"
#include "sign/keyset.h"
#include "sign/signer.h"
#include "store/store.h"

#include "bench-util.h"

#define ROUNDS_MAX 31

static bench_token softhsm;
static char dir[256];

static void cleanup(void)
{
    bench_rm_tree(softhsm.dir);
    bench_rm_tree(dir);
}

enum piece { VERIFY = 0, MARK = 1, SIGN = 2, NPIECES };
static const char *const names[NPIECES] = {"verify (JWT, soft Ed25519)", "mark (SQLite + store marker)",
                                           "sign (issue+log, token P-256)"};

static ns_config *cfg;
static ns_keyset ks;
static char *jwt;
static ns_ledger *ledger;
static ns_store *store;
static ns_ca ca;
static X509 *ca_cert;
static EVP_PKEY *subject;

static void once(enum piece p)
{
    if (p == VERIFY) {
        ns_nonce *nc = NULL;
        bench_ok(ns_nonce_verify(cfg, &ks, jwt, strlen(jwt), NS_NONCE_AGENT, ns_now(), &nc),
                 "ns_nonce_verify");
        ns_nonce_free(nc);
    } else if (p == MARK) {
        uint8_t key[NS_LEDGER_KEY_LEN];
        if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key))
            bench_die("getrandom");
        bench_ok(ns_ledger_use(ledger, key, ns_now() + 300, ns_now()), "ns_ledger_use");
    } else {
        ns_cert_req req;
        ns_strv dns = NS_STRV_INIT;
        ns_issued *x = NULL;
        int64_t now = ns_now();
        bench_ok(ns_strv_push(&dns, "vm-0001.bench.internal"), "ns_strv_push");
        memset(&req, 0, sizeof(req));
        req.pub = subject;
        req.cn = "vm-0001";
        req.tenant = "bench";
        req.role = "agent";
        req.role_oid = "1.3.6.1.4.1.999999.1";
        req.kind = NS_CERT_CLIENT;
        req.dns = &dns;
        req.not_before = now;
        req.not_after = now + 3600;
        bench_ok(ns_ca_issue(&ca, store, "bench", &req, &x), "ns_ca_issue");
        ns_issued_free(x);
        ns_strv_clear(&dns);
    }
}

static double measure(enum piece p, double secs)
{
    double t0 = bench_now(), t;
    long n = 0;
    do {
        once(p);
        n++;
    } while ((t = bench_now() - t0) < secs);
    return (double)n / t;
}

int main(int argc, char **argv)
{
    static const char yaml[] = "cluster_id: bench\nstorage: {backend: file, path: /nonexistent}\n";
    const ns_nonce_req req = {NS_NONCE_AGENT, "vm-0001", "bench", NULL, "web", NULL, false, 0};
    ns_dn dn = {"Bench CA", "Nstance", NULL, NULL, NULL};
    const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    double secs = 1.0, v[NPIECES][ROUNDS_MAX], total = 0;
    int rounds = 5, opt;
    ns_signer *nonce_signer = NULL, *ca_signer = NULL;
    EVP_PKEY *nonce_key = NULL;
    char uri[700], cache[300], cpu[256];

    bench_init("bench-reg");
    while ((opt = getopt(argc, argv, "d:r:t:")) != -1) {
        if (opt == 'd')
            secs = atof(optarg);
        else if (opt == 'r')
            rounds = atoi(optarg);
        else if (opt == 't')
            base = optarg;
        else
            bench_die("usage: bench-reg [-d SECONDS] [-r ROUNDS] [-t DIR]");
    }
    if (secs <= 0 || rounds < 1 || rounds > ROUNDS_MAX)
        bench_die("-d must be > 0 and -r 1..%d", ROUNDS_MAX);
    ns_secmem_harden_process();
    if (ns_secmem_init() != 0)
        ns_log(NS_LOG_DEBUG, "no locked secure heap");
    atexit(cleanup);
    bench_token_make("bench-reg", &softhsm);
    if (bench_temp_dir(base, dir, sizeof(dir)) != 0)
        bench_die("temp dir under %s", base);
    bench_ok(ns_config_parse(yaml, sizeof(yaml) - 1, "<bench>", NULL, &cfg), "ns_config_parse");

    /* The nonce key and one nonce (verify does not consume it). */
    bench_ok(ns_keytype_generate(ns_keytype_find("ed25519"), &nonce_key), "nonce key");
    bench_ok(ns_signer_soft_new(nonce_key, &nonce_signer), "ns_signer_soft_new");
    ks.s = &nonce_signer;
    ks.n = 1;
    ks.origin = (char *)"bench";
    bench_ok(ns_nonce_issue(cfg, &ks, &req, ns_now(), &jwt), "ns_nonce_issue");

    /* The store and the ledger on disk. */
    {
        ns_storage_config sc;
        char path[300];
        memset(&sc, 0, sizeof(sc));
        snprintf(path, sizeof(path), "%s/bucket", dir);
        sc.backend = (char *)"file";
        sc.path = path;
        bench_ok(ns_store_open(&sc, &store), "ns_store_open");
    }
    snprintf(cache, sizeof(cache), "%s/cache", dir);
    bench_ok(ns_ledger_open(cache, store, &ledger), "ns_ledger_open");

    /* The CA: a P-256 key in the token. */
    bench_token_uri(&softhsm, "ca-p256", uri, sizeof(uri));
    bench_ok(ns_signer_pkcs11_generate(uri, "ecdsa-p256", NULL, 4), "ns_signer_pkcs11_generate");
    bench_ok(ns_signer_pkcs11_open(uri, NULL, 4, &ca_signer), "ns_signer_pkcs11_open");
    bench_ok(ns_cert_make_ca(ca_signer, NULL, ca_signer->pub, &dn, 0, ns_now(), ns_now() + 86400, &ca_cert),
             "ns_cert_make_ca");
    ca.certs = &ca_cert;
    ca.n = 1;
    ca.signer = ca_signer;
    bench_ok(ns_keytype_generate(ns_keytype_find("ed25519"), &subject), "subject key");

    bench_cpu_model(cpu, sizeof(cpu));
    printf("# bench-reg: pieces of a registration, 1 thread, %d round(s) of %.2f s, medians; %s; temp %s\n",
           rounds, secs, cpu, base);
    for (int r = 0; r < rounds; r++)
        for (int j = 0; j < NPIECES; j++) {
            int p = r % 2 == 0 ? j : NPIECES - 1 - j;
            v[p][r] = measure((enum piece)p, secs);
        }
    printf("%-32s %10s %10s\n", "piece", "ops/s", "ms/op");
    for (int p = 0; p < NPIECES; p++) {
        double rate = bench_median(v[p], rounds);
        total += 1000.0 / rate;
        printf("%-32s %10.0f %10.3f\n", names[p], rate, 1000.0 / rate);
    }
    printf("%-32s %10.0f %10.3f\n", "sum (one registration)", 1000.0 / total, total);

    ns_ledger_close(ledger);
    ns_store_close(store);
    ns_signer_free(ca_signer);
    ns_signer_free(nonce_signer);
    X509_free(ca_cert);
    EVP_PKEY_free(subject);
    EVP_PKEY_free(nonce_key);
    free(jwt);
    ns_config_free(cfg);
    bench_token_close(&softhsm);
    return 0;
}
