#include "ns-build.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "service/metrics.h"

static const char *const ep_names[NS_EP_N] = {"health",         "register", "agent_files", "agent_renew",
                                              "operator_renew", "metrics",  "ca",          "other"};
static const int statuses[NS_METRICS_STATUSES - 1] = {200, 304, 400, 401, 403, 404,
                                                      405, 409, 413, 429, 500, 503};
/* Upper bounds in seconds (and microseconds for the comparison). */
static const char *const bucket_le[NS_METRICS_BUCKETS] = {"0.001", "0.0025", "0.005", "0.01", "0.025",
                                                          "0.05",  "0.1",    "0.25",  "1",    "5"};
static const unsigned long bucket_us[NS_METRICS_BUCKETS] = {1000,  2500,   5000,   10000,   25000,
                                                            50000, 100000, 250000, 1000000, 5000000};
static const char *const tok_names[NS_TOK_N] = {"sign", "decrypt"};
static const char *const refusal_names[NS_REFUSED_N] = {
    "body_too_large", "malformed",      "method_not_implemented", "expectation_failed",
    "other",          "header_timeout", "idle_timeout",           "bad_content_length"};

const char *ns_refusal_name(enum ns_refusal r)
{
    return (unsigned)r < NS_REFUSED_N ? refusal_names[r] : "other";
}

void ns_metrics_request(ns_metrics *m, enum ns_endpoint e, int status, unsigned long us)
{
    size_t s, b;

    if ((unsigned)e >= NS_EP_N)
        e = NS_EP_OTHER;
    for (s = 0; s < NS_METRICS_STATUSES - 1 && statuses[s] != status; s++)
        ;
    atomic_fetch_add_explicit(&m->requests[e][s], 1, memory_order_relaxed);
    /* One bucket per request (the first whose bound holds it, or +Inf); the scrape adds them up. */
    for (b = 0; b < NS_METRICS_BUCKETS && us > bucket_us[b]; b++)
        ;
    atomic_fetch_add_explicit(&m->dur_bucket[e][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->dur_count[e], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->dur_sum_us[e], us, memory_order_relaxed);
}

static int line(ns_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int line(ns_buf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return NS_E_INTERNAL;
    return ns_buf_append(b, tmp, (size_t)n);
}

int ns_metrics_render(ns_metrics *m, ns_buf **out)
{
    ns_buf *b = NULL;
    int r = NS_E_INTERNAL;

    if ((r = ns_buf_new(256 * 1024, false, &b)) != 0)
        return r;
#define L(...)                                                                                               \
    do {                                                                                                     \
        if ((r = line(b, __VA_ARGS__)) != 0)                                                                 \
            goto out;                                                                                        \
    } while (0)
    L("# HELP nstance_requests_total HTTP requests by endpoint and status.\n");
    L("# TYPE nstance_requests_total counter\n");
    for (size_t e = 0; e < NS_EP_N; e++)
        for (size_t s = 0; s < NS_METRICS_STATUSES; s++) {
            unsigned long v = atomic_load(&m->requests[e][s]);
            if (v == 0)
                continue;
            if (s < NS_METRICS_STATUSES - 1)
                L("nstance_requests_total{endpoint=\"%s\",status=\"%d\"} %lu\n", ep_names[e], statuses[s], v);
            else
                L("nstance_requests_total{endpoint=\"%s\",status=\"other\"} %lu\n", ep_names[e], v);
        }
    L("# HELP nstance_request_duration_seconds Time from request received to response queued.\n");
    L("# TYPE nstance_request_duration_seconds histogram\n");
    for (size_t e = 0; e < NS_EP_N; e++) {
        unsigned long count = atomic_load(&m->dur_count[e]), cum = 0;
        for (size_t k = 0; k < NS_METRICS_BUCKETS; k++) {
            cum += atomic_load(&m->dur_bucket[e][k]);
            L("nstance_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%s\"} %lu\n", ep_names[e],
              bucket_le[k], cum);
        }
        cum += atomic_load(&m->dur_bucket[e][NS_METRICS_BUCKETS]);
        L("nstance_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %lu\n", ep_names[e], cum);
        L("nstance_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n", ep_names[e],
          (double)atomic_load(&m->dur_sum_us[e]) / 1e6);
        L("nstance_request_duration_seconds_count{endpoint=\"%s\"} %lu\n", ep_names[e], count);
    }
    L("# HELP nstance_token_operations_total Operations that go to the key holder (token or KEK source).\n");
    L("# TYPE nstance_token_operations_total counter\n");
    for (size_t t = 0; t < NS_TOK_N; t++)
        L("nstance_token_operations_total{op=\"%s\"} %lu\n", tok_names[t], atomic_load(&m->token_ops[t]));
    L("# HELP nstance_token_errors_total Token or key-source failures seen by requests and refreshes.\n");
    L("# TYPE nstance_token_errors_total counter\n");
    L("nstance_token_errors_total %lu\n", atomic_load(&m->token_errors));
    L("# HELP nstance_cache_hits_total Secret cache hits.\n# TYPE nstance_cache_hits_total counter\n");
    L("nstance_cache_hits_total %lu\n", atomic_load(&m->cache_hits));
    L("# HELP nstance_cache_misses_total Secret cache misses.\n# TYPE nstance_cache_misses_total counter\n");
    L("nstance_cache_misses_total %lu\n", atomic_load(&m->cache_misses));
    L("# HELP nstance_registrations_total Successful registrations by kind.\n");
    L("# TYPE nstance_registrations_total counter\n");
    L("nstance_registrations_total{kind=\"agent\"} %lu\n", atomic_load(&m->registrations_agent));
    L("nstance_registrations_total{kind=\"operator\"} %lu\n", atomic_load(&m->registrations_operator));
    L("# HELP nstance_certificates_issued_total Client certificates issued (registrations and renewals).\n");
    L("# TYPE nstance_certificates_issued_total counter\n");
    L("nstance_certificates_issued_total %lu\n", atomic_load(&m->certificates_issued));
    L("# HELP nstance_http_refused_total Requests refused and connections closed by libevent itself, "
      "by reason.\n");
    L("# TYPE nstance_http_refused_total counter\n");
    for (size_t k = 0; k < NS_REFUSED_N; k++)
        L("nstance_http_refused_total{reason=\"%s\"} %lu\n", refusal_names[k], atomic_load(&m->refused[k]));
    L("# HELP nstance_rate_limited_total Requests refused with 429 by a rate limit, by endpoint.\n");
    L("# TYPE nstance_rate_limited_total counter\n");
    {
        static const enum ns_endpoint limited[] = {NS_EP_REGISTER, NS_EP_AGENT_RENEW, NS_EP_OPERATOR_RENEW};
        for (size_t k = 0; k < sizeof(limited) / sizeof(limited[0]); k++)
            L("nstance_rate_limited_total{endpoint=\"%s\"} %lu\n", ep_names[limited[k]],
              atomic_load(&m->rate_limited[limited[k]]));
    }
    L("# HELP nstance_accept_errors_total accept() failures (out of file descriptors: EMFILE, ENFILE); each "
      "pauses accepting for 100 ms to 1 s.\n");
    L("# TYPE nstance_accept_errors_total counter\n");
    L("nstance_accept_errors_total %lu\n", atomic_load(&m->accept_errors));
    L("# HELP nstance_connections_shed_total Connections accepted and closed at once for want of a file "
      "descriptor.\n");
    L("# TYPE nstance_connections_shed_total counter\n");
    L("nstance_connections_shed_total %lu\n", atomic_load(&m->connections_shed));
    L("# HELP nstance_connections_over_limit_total Connections accepted and closed at once: "
      "server.max_connections were open.\n");
    L("# TYPE nstance_connections_over_limit_total counter\n");
    L("nstance_connections_over_limit_total %lu\n", atomic_load(&m->over_limit));
    L("# HELP nstance_ca_certificates_ignored_total Certificates of the stored CA bundle that no CA key held "
      "here vouches for, ignored (counted each time the bundle is loaded).\n");
    L("# TYPE nstance_ca_certificates_ignored_total counter\n");
    L("nstance_ca_certificates_ignored_total %lu\n", atomic_load(&m->ca_ignored));
#undef L
    *out = b;
    b = NULL;
    r = 0;
out:
    ns_buf_free(b);
    return r;
}
