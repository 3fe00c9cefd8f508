/* bench-ca: certificates issued per second, next to the token's raw signing rate in the same run.
 *
 * It makes a SoftHSM token in a temp folder (removed at exit), generates a CA key in it (P-256, and Ed25519)
 * through ns_signer_pkcs11_generate, makes the self-signed CA certificate, then alternates for a fixed time:
 *
 *   issue     ns_cert_issue(): build an agent certificate (Ed25519 subject key, role, SANs), sign its TBS in
 *             the token, re-parse it and verify it with the CA public key (the self-check), free it;
 *   issue+log ns_ca_issue() on a file store on /dev/shm (tmpfs): the above plus the certificate-log entry
 *             (a create-only write of a small JSON object, temp file + fsync + link);
 *   raw       one C_SignInit + C_Sign of a 32-byte digest (CKM_ECDSA) or of a 300-byte message
 *             (CKM_EDDSA, about a TBS's size) with the same key on an own session: the token's own rate.
 *
 * and the same issue loop with a software key of the same type next to OpenSSL's raw EVP_DigestSign.
 * The table gives the median rate of each over the rounds and the median of the per-round ratios (adjacent
 * measurements; the machine is noisy). The target for token P-256 is issue/raw >= 0.5.
 *
 * Usage: bench-ca [-d SECONDS] [-r ROUNDS]     defaults: 1 s, 7 rounds */
#include "ns-build.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/x509.h>

#include "ca/ca.h"
#include "ca/cert.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secmem.h"
#include "common/timeutil.h"
#include "settings/settings.h"
#include "sign/signer.h"
#include "store/store.h"

#include "bench-util.h"

#define ROUNDS_MAX 51

static bench_token softhsm;
static char store_dir[256];

/* Only folders: the module is finalised in main, before OpenSSL's own exit handlers run. */
static void cleanup(void)
{
    bench_rm_tree(softhsm.dir);
    bench_rm_tree(store_dir);
}

typedef struct ccase {
    const char *name;
    ns_signer *signer;
    X509 *ca_cert;
    ns_ca ca;           /* for issue+log: certs = &ca_cert, signer */
    EVP_PKEY *soft_key; /* software cases: the private key for the raw loop */
    CK_OBJECT_HANDLE key;
    CK_MECHANISM_TYPE mech;
} ccase;

static EVP_PKEY *subject_key;
static ns_store *store;

static void make_request(ns_cert_req *req, ns_strv *dns)
{
    int64_t now = ns_now();
    memset(req, 0, sizeof(*req));
    req->pub = subject_key;
    req->cn = "vm-0001.bench";
    req->tenant = "bench";
    req->role = "agent";
    req->role_oid = "1.3.6.1.4.1.999999.1";
    req->kind = NS_CERT_CLIENT;
    req->dns = dns;
    req->not_before = now;
    req->not_after = now + 3600;
}

static void setup_case(ccase *c, const char *name, const char *type, int token)
{
    ns_dn dn = {"Bench CA", "Nstance", NULL, NULL, NULL};
    int64_t now = ns_now();
    char uri[700], label[32];

    memset(c, 0, sizeof(*c));
    c->name = name;
    if (token) {
        snprintf(label, sizeof(label), "ca-%s", type);
        bench_token_uri(&softhsm, label, uri, sizeof(uri));
        bench_ok(ns_signer_pkcs11_generate(uri, type, NULL, 4), "ns_signer_pkcs11_generate");
        bench_ok(ns_signer_pkcs11_open(uri, NULL, 4, &c->signer), "ns_signer_pkcs11_open");
        c->mech = strcmp(type, "ed25519") == 0 ? CKM_EDDSA : CKM_ECDSA;
        {
            CK_SESSION_HANDLE s = bench_token_session(&softhsm);
            c->key = bench_token_find(&softhsm, s, CKO_PRIVATE_KEY, label);
            if (c->key == CK_INVALID_HANDLE)
                bench_die("no private key %s", label);
        }
    } else {
        bench_ok(ns_keytype_generate(ns_keytype_find(type), &c->soft_key), "ns_keytype_generate");
        bench_ok(ns_signer_soft_new(c->soft_key, &c->signer), "ns_signer_soft_new");
    }
    bench_ok(ns_cert_make_ca(c->signer, NULL, c->signer->pub, &dn, 0, now, now + 86400 * 365, &c->ca_cert),
             "ns_cert_make_ca");
    c->ca.certs = &c->ca_cert;
    c->ca.n = 1;
    c->ca.signer = c->signer;
}

enum kind { ISSUE = 0, ISSUE_LOG = 1, RAW = 2, NKINDS };

static double measure(ccase *c, enum kind k, double secs)
{
    ns_cert_req req;
    ns_strv dns = NS_STRV_INIT;
    uint8_t msg[300], sig[512];
    char cn[32];
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    EVP_MD_CTX *md = NULL;
    double t0, t;
    long n = 0;

    memset(msg, 0x5a, sizeof(msg));
    bench_ok(ns_strv_push(&dns, "vm-0001.bench.internal"), "ns_strv_push");
    make_request(&req, &dns);
    if (k == RAW && c->soft_key == NULL)
        s = bench_token_session(&softhsm);
    if (k == RAW && c->soft_key != NULL && (md = EVP_MD_CTX_new()) == NULL)
        bench_die("EVP_MD_CTX_new");
    t0 = bench_now();
    do {
        for (int i = 0; i < 8; i++) {
            if (k == ISSUE || k == ISSUE_LOG) {
                /* Every certificate for another VM, as a server issues them (and the log names differ). */
                static unsigned long vm;
                snprintf(cn, sizeof(cn), "vm-%06lu.bench", vm++);
                req.cn = cn;
                ns_issued *x = NULL;
                if (k == ISSUE)
                    bench_ok(ns_cert_issue(c->signer, c->ca_cert, &req, &x), "ns_cert_issue");
                else
                    bench_ok(ns_ca_issue(&c->ca, store, "bench", &req, &x), "ns_ca_issue");
                ns_issued_free(x);
            } else if (c->soft_key == NULL) {
                CK_MECHANISM m = {c->mech, NULL, 0};
                CK_ULONG len = sizeof(sig);
                bench_ck(softhsm.fn->C_SignInit(s, &m, c->key), "C_SignInit");
                bench_ck(softhsm.fn->C_Sign(s, msg, c->mech == CKM_ECDSA ? 32 : sizeof(msg), sig, &len),
                         "C_Sign");
            } else {
                size_t len = sizeof(sig);
                const EVP_MD *h = EVP_PKEY_get_base_id(c->soft_key) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
                if (EVP_DigestSignInit(md, NULL, h, NULL, c->soft_key) != 1 ||
                    EVP_DigestSign(md, sig, &len, msg, sizeof(msg)) != 1)
                    bench_die("EVP_DigestSign");
            }
            n++;
        }
        t = bench_now() - t0;
    } while (t < secs);
    if (s != CK_INVALID_HANDLE)
        softhsm.fn->C_CloseSession(s);
    EVP_MD_CTX_free(md);
    ns_strv_clear(&dns);
    return (double)n / t;
}

int main(int argc, char **argv)
{
    double secs = 1.0;
    int rounds = 7, opt;
    ccase cases[4];
    const char *names[NKINDS] = {"issue", "issue+log", "raw"};
    struct utsname un;
    char cpu[128], desc[512];

    bench_init("bench-ca");
    while ((opt = getopt(argc, argv, "d:r:")) != -1) {
        if (opt == 'd')
            secs = atof(optarg);
        else if (opt == 'r')
            rounds = atoi(optarg);
        else {
            fputs("usage: bench-ca [-d SECONDS] [-r ROUNDS]\n", stderr);
            return 2;
        }
    }
    if (secs <= 0 || rounds < 1 || rounds > ROUNDS_MAX)
        bench_die("bad -d or -r");
    ns_log_set_level(NS_LOG_ERROR);
    if (ns_secmem_init() != 0)
        bench_die("ns_secmem_init");
    atexit(cleanup);
    bench_token_make("bench-ca", &softhsm);
    /* The log's store on tmpfs when there is one: the figure is about issuing, not about the disk's fsync. */
    if (bench_temp_dir(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", store_dir, sizeof(store_dir)) !=
        0)
        bench_die("temp dir");
    {
        ns_storage_config sc;
        memset(&sc, 0, sizeof(sc));
        sc.backend = (char *)"file";
        sc.path = store_dir;
        bench_ok(ns_store_open(&sc, &store), "ns_store_open");
    }
    bench_ok(ns_keytype_generate(ns_keytype_find("ed25519"), &subject_key), "subject key");
    setup_case(&cases[0], "token ecdsa-p256", "ecdsa-p256", 1);
    setup_case(&cases[1], "token ed25519", "ed25519", 1);
    setup_case(&cases[2], "software ecdsa-p256", "ecdsa-p256", 0);
    setup_case(&cases[3], "software ed25519", "ed25519", 0);

    uname(&un);
    bench_cpu_model(cpu, sizeof(cpu));
    bench_token_describe(&softhsm, desc, sizeof(desc));
    printf("bench-ca: %s %s, %s, %s\n", un.sysname, un.release, cpu, OPENSSL_VERSION_TEXT);
    printf("token: %s\nrounds: %d x %.2f s per measurement; raw = C_Sign (token) or EVP_DigestSign "
           "(software)\n\n",
           desc, rounds, secs);
    printf("%-20s %12s %12s %12s %12s %12s\n", "key", "issue/s", "issue+log/s", "raw/s", "issue/raw",
           "+log/raw");
    for (int ci = 0; ci < 4; ci++) {
        double v[NKINDS][ROUNDS_MAX], ratio[2][ROUNDS_MAX];
        for (int r = 0; r < rounds; r++) {
            /* The order flips every round so that a drift in machine speed does not favour one loop. */
            for (int j = 0; j < NKINDS; j++) {
                int k = (r % 2 == 0) ? j : NKINDS - 1 - j;
                v[k][r] = measure(&cases[ci], (enum kind)k, secs);
            }
            ratio[0][r] = v[ISSUE][r] / v[RAW][r];
            ratio[1][r] = v[ISSUE_LOG][r] / v[RAW][r];
        }
        printf("%-20s %12.0f %12.0f %12.0f %12.2f %12.2f\n", cases[ci].name, bench_median(v[ISSUE], rounds),
               bench_median(v[ISSUE_LOG], rounds), bench_median(v[RAW], rounds),
               bench_median(ratio[0], rounds), bench_median(ratio[1], rounds));
    }
    (void)names;
    for (int ci = 0; ci < 4; ci++) {
        ns_signer_free(cases[ci].signer);
        X509_free(cases[ci].ca_cert);
        EVP_PKEY_free(cases[ci].soft_key);
    }
    EVP_PKEY_free(subject_key);
    ns_store_close(store);
    bench_token_close(&softhsm);
    return 0;
}
