/* bench-load: HTTP/1.1 GET load over mutual TLS 1.3 with keep-alive, N connections, one thread each.
 *
 *   bench-load --port PORT --ca CA.pem --cert CRT.pem --key KEY.pem [--host 127.0.0.1] [--name localhost]
 *              [--path /v1/agent/files] [--conns 16] [--seconds 5] [--label NAME]
 *
 * Each thread opens one connection (TLS 1.3 only, the server verified with --ca for --name, our client
 * certificate presented) and sends GET requests one after another on it, reading each whole answer
 * (Content-Length) before the next; a connection the server closes is opened again and counted. Every
 * answer must be 200, else it counts as an error. Prints one line:
 *
 *   LABEL conns=N requests=R req/s=X p50_ms=A p99_ms=B errors=E reconnects=C bytes=LEN
 *
 * where latency is from the first byte written to the last byte of the body read, per request. */
#include "ns-build.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bench/bench-util.h"

typedef struct worker {
    pthread_t th;
    SSL_CTX *ctx;
    double *lat; /* seconds, one per request */
    size_t n, cap;
    unsigned long errors, reconnects;
    size_t body_len;
} worker;

static const char *host = "127.0.0.1", *name = "localhost", *path = "/v1/agent/files";
static int port;
static double deadline;
static char request[1024];

static SSL *connect_one(SSL_CTX *ctx)
{
    struct sockaddr_in sa;
    int fd, one = 1;
    SSL *ssl;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        bench_die("--host must be an IPv4 address");
    if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        bench_die("socket: %s", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return NULL;
    }
    if ((ssl = SSL_new(ctx)) == NULL)
        bench_die("SSL_new failed");
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, name);
    if (SSL_set1_host(ssl, name) != 1)
        bench_die("SSL_set1_host failed");
    if (SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

static void drop(SSL *ssl)
{
    if (ssl == NULL)
        return;
    int fd = SSL_get_fd(ssl);
    SSL_free(ssl);
    close(fd);
}

/* Read one response; 0 with its status and body length, -1 when the connection is gone. */
static int read_response(SSL *ssl, int *status, size_t *body_len)
{
    static __thread char buf[1 << 16];
    size_t have = 0, need;
    char *end, *cl;
    long clen = -1;

    for (;;) {
        int got;
        if (have == sizeof(buf) - 1)
            return -1;
        got = SSL_read(ssl, buf + have, (int)(sizeof(buf) - 1 - have));
        if (got <= 0)
            return -1;
        have += (size_t)got;
        buf[have] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")) != NULL)
            break;
    }
    if (sscanf(buf, "HTTP/1.1 %d", status) != 1)
        return -1;
    *end = '\0';
    for (cl = buf; (cl = strchr(cl, '\n')) != NULL; cl++)
        if (strncasecmp(cl + 1, "content-length:", 15) == 0) {
            clen = strtol(cl + 16, NULL, 10);
            break;
        }
    if (clen < 0)
        return -1; /* only Content-Length framing: both servers send it for these answers */
    need = (size_t)(end + 4 - buf) + (size_t)clen;
    while (have < need) {
        char sink[1 << 14];
        size_t want = need - have < sizeof(sink) ? need - have : sizeof(sink);
        int got = SSL_read(ssl, sink, (int)want);
        if (got <= 0)
            return -1;
        have += (size_t)got;
    }
    *body_len = (size_t)clen;
    return 0;
}

static void *run(void *arg)
{
    worker *w = arg;
    SSL *ssl = NULL;
    size_t rlen = strlen(request);

    while (bench_now() < deadline) {
        double t0;
        int status = 0;
        size_t blen = 0;
        if (ssl == NULL && (ssl = connect_one(w->ctx)) == NULL) {
            w->errors++;
            usleep(10000);
            continue;
        }
        t0 = bench_now();
        if (SSL_write(ssl, request, (int)rlen) != (int)rlen || read_response(ssl, &status, &blen) != 0) {
            drop(ssl);
            ssl = NULL;
            w->reconnects++;
            continue;
        }
        if (status != 200) {
            w->errors++;
            continue;
        }
        w->body_len = blen;
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            if ((w->lat = realloc(w->lat, w->cap * sizeof(double))) == NULL)
                bench_die("out of memory");
        }
        w->lat[w->n++] = bench_now() - t0;
    }
    drop(ssl);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *ca = NULL, *cert = NULL, *key = NULL, *label = "load";
    int conns = 16, opt;
    double seconds = 5, t0, t1;
    static const struct option lo[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"name", required_argument, NULL, 'n'},
        {"path", required_argument, NULL, 'P'},
        {"ca", required_argument, NULL, 'a'},
        {"cert", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},
        {"conns", required_argument, NULL, 'N'},
        {"seconds", required_argument, NULL, 's'},
        {"label", required_argument, NULL, 'l'},
        {NULL, 0, NULL, 0},
    };
    SSL_CTX *ctx;
    worker *w;
    double *all;
    size_t total = 0, k = 0, body = 0;
    unsigned long errors = 0, reconnects = 0;

    bench_init("bench-load");
    while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (opt) {
        case 'H':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'n':
            name = optarg;
            break;
        case 'P':
            path = optarg;
            break;
        case 'a':
            ca = optarg;
            break;
        case 'c':
            cert = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'N':
            conns = atoi(optarg);
            break;
        case 's':
            seconds = atof(optarg);
            break;
        case 'l':
            label = optarg;
            break;
        default:
            bench_die("usage: see the comment at the top of bench/bench-load.c");
        }
    }
    if (port <= 0 || ca == NULL || cert == NULL || key == NULL || conns < 1 || conns > 1024 || seconds <= 0)
        bench_die("--port, --ca, --cert and --key are required; --conns 1..1024; --seconds > 0");
    snprintf(request, sizeof(request), "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n\r\n",
             path, name);

    if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
        bench_die("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ERR_print_errors_fp(stderr);
        bench_die("cannot load the CA, certificate or key");
    }
    if ((w = calloc((size_t)conns, sizeof(*w))) == NULL)
        bench_die("out of memory");
    t0 = bench_now();
    deadline = t0 + seconds;
    for (int i = 0; i < conns; i++) {
        w[i].ctx = ctx;
        if (pthread_create(&w[i].th, NULL, run, &w[i]) != 0)
            bench_die("pthread_create failed");
    }
    for (int i = 0; i < conns; i++) {
        pthread_join(w[i].th, NULL);
        total += w[i].n;
        errors += w[i].errors;
        reconnects += w[i].reconnects;
        if (w[i].body_len > 0)
            body = w[i].body_len;
    }
    t1 = bench_now();
    if (total == 0)
        bench_die("%s: no successful request (errors %lu)", label, errors);
    if ((all = malloc(total * sizeof(double))) == NULL)
        bench_die("out of memory");
    for (int i = 0; i < conns; i++) {
        memcpy(all + k, w[i].lat, w[i].n * sizeof(double));
        k += w[i].n;
        free(w[i].lat);
    }
    qsort(all, total, sizeof(double), cmp_double);
    printf(
        "%s conns=%d requests=%zu req/s=%.0f p50_ms=%.3f p99_ms=%.3f errors=%lu reconnects=%lu bytes=%zu\n",
        label, conns, total, (double)total / (t1 - t0), all[total / 2] * 1000.0,
        all[(size_t)((double)(total - 1) * 0.99)] * 1000.0, errors, reconnects, body);
    free(all);
    free(w);
    SSL_CTX_free(ctx);
    return errors > 0 ? 1 : 0;
}
