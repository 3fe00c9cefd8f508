/* Counters of the server, rendered in the Prometheus text format 0.0.4 (doc/server.md lists them).
 * Every counter is a C11 atomic: threads update them without a lock; a scrape reads each one once. */
#ifndef NS_SERVICE_METRICS_H
#define NS_SERVICE_METRICS_H

#include <stdatomic.h>

#include "common/buf.h"
#include "common/err.h"

enum ns_endpoint {
    NS_EP_HEALTH = 0,
    NS_EP_REGISTER,
    NS_EP_FILES,
    NS_EP_AGENT_RENEW,
    NS_EP_OPERATOR_RENEW,
    NS_EP_METRICS,
    NS_EP_CA,
    NS_EP_OTHER,
    NS_EP_N
};

#define NS_METRICS_STATUSES 13 /* 200 304 400 401 403 404 405 409 413 429 500 503, and "other" */
#define NS_METRICS_BUCKETS  10 /* duration histogram buckets, plus +Inf */

enum ns_token_op { NS_TOK_SIGN = 0, NS_TOK_DECRYPT, NS_TOK_N };

/* Why libevent refused a request or closed a connection without our handler, or why we refused a request
 * before our handler looked at it (src/server/refusals.c). */
enum ns_refusal {
    NS_REFUSED_BODY_TOO_LARGE = 0, /* 413: body over 64 KiB */
    NS_REFUSED_MALFORMED,          /* 400: bad request line or headers, headers over 16 KiB, bad chunks */
    NS_REFUSED_METHOD,             /* 501: a method libevent does not know */
    NS_REFUSED_EXPECT,             /* 417: an Expect other than 100-continue */
    NS_REFUSED_OTHER,              /* any other status libevent answered by itself */
    NS_REFUSED_HEADER_TIMEOUT,     /* closed: no complete first request within server.header_timeout */
    NS_REFUSED_IDLE_TIMEOUT,       /* closed: no next request within server.idle_timeout (+ header_timeout) */
    NS_REFUSED_BAD_CONTENT_LENGTH, /* 400 of ours: Content-Length twice, not plain digits, or with chunks */
    NS_REFUSED_N
};

typedef struct ns_metrics {
    atomic_ulong requests[NS_EP_N][NS_METRICS_STATUSES];
    atomic_ulong dur_bucket[NS_EP_N][NS_METRICS_BUCKETS + 1]; /* per bucket, not cumulative (render adds) */
    atomic_ulong dur_count[NS_EP_N];
    atomic_ulong dur_sum_us[NS_EP_N];
    atomic_ulong token_ops[NS_TOK_N];
    atomic_ulong token_errors;
    atomic_ulong cache_hits, cache_misses;
    atomic_ulong registrations_agent, registrations_operator;
    atomic_ulong certificates_issued;
    atomic_ulong refused[NS_REFUSED_N];
    atomic_ulong rate_limited[NS_EP_N]; /* 429 answers by endpoint (register, agent_renew, operator_renew) */
    atomic_ulong accept_errors;    /* accept() failed (EMFILE, ENFILE, ...): accepting paused for a while */
    atomic_ulong connections_shed; /* accepted and closed at once for want of a file descriptor */
    atomic_ulong over_limit;       /* accepted and closed at once: server.max_connections were open */
    atomic_ulong ca_ignored;       /* certificates of cluster/ca.crt no held CA key vouches for, per load */
} ns_metrics;

/* The label of a refusal reason ("body_too_large", ...). */
const char *ns_refusal_name(enum ns_refusal r);

/* One finished request: its endpoint, HTTP status and duration in microseconds. */
void ns_metrics_request(ns_metrics *m, enum ns_endpoint e, int status, unsigned long us);

/* The text exposition into a new buffer. */
int ns_metrics_render(ns_metrics *m, ns_buf **out) NS_WUR;

#endif
