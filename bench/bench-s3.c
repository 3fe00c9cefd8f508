/* bench-s3: 4 KiB object puts and gets per second through our S3 store (ns_store_put/ns_store_get: SigV4
 * signing, the client pool, ETag handling) against a minimal raw libcurl loop (one easy handle, the same
 * connection reuse, no signing: it replays the header set of one request signed up front, so the server
 * does the same work for both) on the same server, in the same run. Medians of several runs.
 *
 *   bench-s3 ENDPOINT BUCKET [OBJECTS [RUNS]]      (defaults: 500 objects, 5 runs)
 *
 * ENDPOINT is an S3-compatible server that accepts access key id S3RVER without checking signatures, e.g.
 * s3rver (doc/benchmarks.md has the command). With AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the
 * environment (a server that checks signatures, e.g. Ceph RGW from tests/tools/ceph-rgw.sh), those keys are
 * used, and the raw loop signs every request for its own URL and body instead of replaying one header set
 * (the signature covers the path, the date and the payload hash). Path-style addressing. Each run writes
 * OBJECTS objects of 4 KiB, then reads them back, through the store and through raw libcurl (which goes first
 * alternates from run to run); the two use different key prefixes. Prints one line per run and the medians
 * and ratios. */
#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "bench/bench-util.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "settings/settings.h"
#include "net/aws_creds.h"
#include "net/sigv4.h"
#include "store/store.h"

#define OBJ_SIZE 4096u
#define MAX_RUNS 31

static uint8_t payload[OBJ_SIZE];
static const char *ak = "S3RVER", *sk = "S3RVER";
static int sign_each; /* the raw loop signs each request (a server that checks signatures) */
/* The replayed header sets of the raw loop ("Name: value" lines), from one signed PUT and one signed GET. */
static struct curl_slist *put_headers, *get_headers;

static struct curl_slist *signed_headers(const char *method, const char *url, const uint8_t *body, size_t n)
{
    ns_aws_creds *c = NULL;
    ns_sigv4_signed *sig = NULL;
    ns_sigv4_params p = {"s3", "us-east-1", time(NULL), false};
    ns_http_req rq;
    struct curl_slist *hl = curl_slist_append(NULL, "Expect:");
    char line[4096];

    memset(&rq, 0, sizeof(rq));
    rq.method = method;
    rq.url = url;
    rq.body = body;
    rq.body_len = n;
    bench_ok(ns_aws_creds_new(ak, sk, NULL, 0, &c), "ns_aws_creds_new");
    bench_ok(ns_sigv4_sign(&p, c, &rq, &sig), "ns_sigv4_sign");
    for (size_t i = 0; i < sig->n_headers; i++) {
        if (strcmp(sig->headers[i].name, "Host") == 0)
            continue;
        snprintf(line, sizeof(line), "%s: %s", sig->headers[i].name, sig->headers[i].value);
        hl = curl_slist_append(hl, line);
    }
    ns_sigv4_signed_free(sig);
    ns_aws_creds_free(c);
    return hl;
}

static size_t sink(char *p, size_t size, size_t nmemb, void *arg)
{
    size_t *got = arg;
    *got += size * nmemb;
    return size * nmemb;
}

typedef struct upload {
    size_t off;
} upload;

static size_t source(char *p, size_t size, size_t nmemb, void *arg)
{
    upload *u = arg;
    size_t n = size * nmemb, left = OBJ_SIZE - u->off;
    if (n > left)
        n = left;
    memcpy(p, payload + u->off, n);
    u->off += n;
    return n;
}

/* The raw loop: one easy handle, PUT then GET of each object. Rates in *put_rate, *get_rate. */
static void raw_run(const char *endpoint, const char *bucket, int n, int run, double *put_rate,
                    double *get_rate)
{
    CURL *c = curl_easy_init();
    char url[512];
    double t0;

    if (c == NULL)
        bench_die("curl_easy_init failed");
    t0 = bench_now();
    for (int i = 0; i < n; i++) {
        upload u = {0};
        long status = 0;
        struct curl_slist *hl = NULL;
        snprintf(url, sizeof(url), "%s/%s/raw/r%d/o%05d", endpoint, bucket, run, i);
        if (sign_each)
            hl = signed_headers("PUT", url, payload, OBJ_SIZE);
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl != NULL ? hl : put_headers);
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, source);
        curl_easy_setopt(c, CURLOPT_READDATA, &u);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)OBJ_SIZE);
        if (curl_easy_perform(c) != CURLE_OK ||
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status != 200)
            bench_die("raw PUT %s: status %ld", url, status);
        curl_slist_free_all(hl);
    }
    *put_rate = n / (bench_now() - t0);
    t0 = bench_now();
    for (int i = 0; i < n; i++) {
        size_t got = 0;
        long status = 0;
        struct curl_slist *hl = NULL;
        snprintf(url, sizeof(url), "%s/%s/raw/r%d/o%05d", endpoint, bucket, run, i);
        if (sign_each)
            hl = signed_headers("GET", url, NULL, 0);
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl != NULL ? hl : get_headers);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &got);
        if (curl_easy_perform(c) != CURLE_OK ||
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status != 200 ||
            got != OBJ_SIZE)
            bench_die("raw GET %s: status %ld, %zu bytes", url, status, got);
        curl_slist_free_all(hl);
    }
    *get_rate = n / (bench_now() - t0);
    curl_easy_cleanup(c);
}

static void store_run(ns_store *st, int n, int run, double *put_rate, double *get_rate)
{
    char name[128];
    double t0 = bench_now();

    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "ours/r%d/o%05d", run, i);
        bench_ok(ns_store_put(st, name, payload, OBJ_SIZE, NS_PUT_REPLACE, NULL), "ns_store_put");
    }
    *put_rate = n / (bench_now() - t0);
    t0 = bench_now();
    for (int i = 0; i < n; i++) {
        ns_buf *b = NULL;
        char *ver = NULL;
        snprintf(name, sizeof(name), "ours/r%d/o%05d", run, i);
        bench_ok(ns_store_get(st, name, 1024 * 1024, &b, &ver), "ns_store_get");
        if (b->len != OBJ_SIZE)
            bench_die("ns_store_get %s: %zu bytes", name, b->len);
        ns_buf_free(b);
        free(ver);
    }
    *get_rate = n / (bench_now() - t0);
}

int main(int argc, char **argv)
{
    char backend[] = "s3", region[] = "us-east-1";
    char *akid = NULL, *secret = NULL;
    ns_storage_config cfg;
    ns_store *st = NULL;
    double our_put[MAX_RUNS], our_get[MAX_RUNS], raw_put[MAX_RUNS], raw_get[MAX_RUNS];
    int n = 500, runs = 5;
    char cpu[256];

    bench_init("bench-s3");
    if (argc < 3 || argc > 5)
        bench_die("usage: bench-s3 ENDPOINT BUCKET [OBJECTS [RUNS]]");
    if (argc > 3)
        n = atoi(argv[3]);
    if (argc > 4)
        runs = atoi(argv[4]);
    if (n < 1 || n > 99999 || runs < 1 || runs > MAX_RUNS)
        bench_die("OBJECTS must be 1..99999 and RUNS 1..%d", MAX_RUNS);
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 131 + 7);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (getenv("AWS_ACCESS_KEY_ID") != NULL && getenv("AWS_SECRET_ACCESS_KEY") != NULL) {
        ak = getenv("AWS_ACCESS_KEY_ID");
        sk = getenv("AWS_SECRET_ACCESS_KEY");
        sign_each = 1;
    }
    if ((akid = strdup(ak)) == NULL || (secret = strdup(sk)) == NULL)
        bench_die("out of memory");

    memset(&cfg, 0, sizeof(cfg));
    cfg.backend = backend;
    cfg.bucket = argv[2];
    cfg.region = region;
    cfg.endpoint = argv[1];
    cfg.path_style = true;
    cfg.connect_timeout_ms = 5000;
    cfg.timeout_ms = 30000;
    cfg.retries = 0;
    cfg.has_credentials = true;
    cfg.creds.access_key_id = akid;
    cfg.creds.secret_access_key = secret;
    cfg.line = 1;
    bench_ok(ns_store_open(&cfg, &st), "ns_store_open");
    {
        char url[512];
        snprintf(url, sizeof(url), "%s/%s/raw/o", argv[1], argv[2]);
        put_headers = signed_headers("PUT", url, payload, OBJ_SIZE);
        get_headers = signed_headers("GET", url, NULL, 0);
    }

    bench_cpu_model(cpu, sizeof(cpu));
    printf("bench-s3: %d objects of %u bytes per run, %d runs, endpoint %s, raw loop %s, CPU %s\n", n,
           OBJ_SIZE, runs, argv[1], sign_each ? "signs each request" : "replays one signed header set", cpu);
    for (int r = 0; r < runs; r++) {
        if (r % 2 == 0) {
            store_run(st, n, r, &our_put[r], &our_get[r]);
            raw_run(argv[1], argv[2], n, r, &raw_put[r], &raw_get[r]);
        } else {
            raw_run(argv[1], argv[2], n, r, &raw_put[r], &raw_get[r]);
            store_run(st, n, r, &our_put[r], &our_get[r]);
        }
        printf("run %d: put ours %.0f/s raw %.0f/s, get ours %.0f/s raw %.0f/s\n", r + 1, our_put[r],
               raw_put[r], our_get[r], raw_get[r]);
    }
    {
        double op = bench_median(our_put, runs), rp = bench_median(raw_put, runs);
        double og = bench_median(our_get, runs), rg = bench_median(raw_get, runs);
        printf("median put: ours %.0f/s, raw libcurl %.0f/s, ratio %.2f\n", op, rp, op / rp);
        printf("median get: ours %.0f/s, raw libcurl %.0f/s, ratio %.2f\n", og, rg, og / rg);
    }
    ns_store_close(st);
    curl_slist_free_all(put_headers);
    curl_slist_free_all(get_headers);
    free(akid);
    free(secret);
    curl_global_cleanup();
    return 0;
}
