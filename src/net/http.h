/* A thin HTTP(S) client over libcurl, for object storage (S3) and key sources (Vault, AWS, GCP, Azure).
 *
 * One ns_http_client owns one CURL easy handle and with it a connection cache: consecutive requests to the
 * same host reuse the TCP/TLS connection. A client is NOT thread-safe: use one per thread (or a pool, as
 * store_s3.c does). Clients are cheap; libcurl's global state is set up once, thread-safely, by the first
 * ns_http_client_new().
 *
 * Policy, the same for every caller:
 *   - TLS peer and host verification are always on; ns_http_opts.ca_file may name a CA bundle instead of
 *     the system store. Only http:// and https:// URLs are accepted; redirects are never followed.
 *   - A client certificate and key (files) may be given for mutual TLS, and TLS 1.3 may be required.
 *   - Each attempt is bounded by connect_timeout_ms and timeout_ms (whole attempt, body included).
 *   - Network errors (connect, send, receive, timeout), 5xx and 429 answers are retried up to `retries`
 *     more times, after a delay drawn uniformly from [0, retry_base_ms * 2^(attempt-1)] ("full jitter"),
 *     each delay capped at NS_HTTP_RETRY_CAP_MS. Set ns_http_req.no_retry for requests that must not be
 *     repeated. TLS verification failures and oversized bodies are never retried.
 *   - Nothing here logs a header value, a request body or a response body (headers carry credentials:
 *     Authorization, X-Amz-Security-Token, X-Vault-Token, Metadata tokens...). URLs are logged without
 *     their query string. libcurl's verbose mode is never turned on.
 *
 * Results of ns_http_do():
 *   0               a response was received; *out holds its status, headers and body. This includes 4xx,
 *                   and 5xx/429 when the retries ran out: the caller maps the status.
 *   NS_E_STORAGE    no response after every attempt (connect refused, DNS, TLS, timeout, reset); logged
 *                   at error level with libcurl's message. Callers outside the storage layer translate it
 *                   into their own category.
 *   NS_E_TOO_LARGE  the response body exceeded req->max_body (never retried).
 *   NS_E_INVAL      bad request (NULL fields, URL not http(s)), NS_E_NOMEM.
 */
#ifndef NS_NET_HTTP_H
#define NS_NET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

#define NS_HTTP_DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define NS_HTTP_DEFAULT_TIMEOUT_MS         30000u
#define NS_HTTP_DEFAULT_RETRIES            3u
#define NS_HTTP_DEFAULT_RETRY_BASE_MS      100u
#define NS_HTTP_RETRY_CAP_MS               10000u
#define NS_HTTP_MAX_RETRIES                10u

/* Response headers kept per response (the rest are dropped) and their total size. */
#define NS_HTTP_MAX_RESP_HEADERS      64u
#define NS_HTTP_MAX_RESP_HEADER_BYTES 16384u

typedef struct ns_http_opts {
    unsigned connect_timeout_ms; /* > 0 */
    unsigned timeout_ms;         /* > 0: one whole attempt */
    unsigned retries;            /* extra attempts, 0..NS_HTTP_MAX_RETRIES */
    unsigned retry_base_ms;      /* first backoff bound */
    const char *ca_file;         /* CA bundle (PEM) instead of the system store; NULL: system. Copied. */
    const char *client_cert;     /* client certificate (PEM file) for mutual TLS; NULL: none. Copied. */
    const char *client_key;      /* its private key (PEM file, any type OpenSSL reads); with client_cert. */
    bool tls13_only;             /* refuse TLS versions below 1.3 (https:// only) */
} ns_http_opts;

/* Fill opts with the defaults above (ca_file, client_cert, client_key NULL; any TLS version >= 1.2 as
 * libcurl negotiates). */
void ns_http_opts_init(ns_http_opts *opts);

/* A request header. Names are sent as given; values may be secret and are never logged. */
typedef struct ns_http_header {
    const char *name;
    const char *value;
} ns_http_header;

/* A request. Everything is borrowed for the duration of ns_http_do(). */
typedef struct ns_http_req {
    const char *method;            /* "GET", "HEAD", "PUT", "POST", "DELETE", ... */
    const char *url;               /* absolute http:// or https:// URL, already percent-encoded */
    const ns_http_header *headers; /* n_headers extra headers (may set Host, Content-Type, ...) */
    size_t n_headers;
    const uint8_t *body; /* request body (NULL when body_len is 0) */
    size_t body_len;
    size_t max_body;  /* the response body is refused (NS_E_TOO_LARGE) beyond this many bytes */
    bool secret_body; /* keep the response body in the secure heap (a secret or a credential) */
    bool no_retry;    /* exactly one attempt */
} ns_http_req;

/* A response header as received: name without the colon, value with surrounding blanks trimmed. */
typedef struct ns_http_resp_header {
    char *name;
    char *value;
} ns_http_resp_header;

/* A response, owned by the caller (ns_http_resp_free). */
typedef struct ns_http_resp {
    long status;                  /* 100..599 */
    ns_buf *body;                 /* never NULL; secret if req->secret_body; empty for HEAD */
    ns_http_resp_header *headers; /* of the final response only (not of 1xx interim ones) */
    size_t n_headers;
    unsigned attempts; /* how many attempts were made (1 + retries used) */
} ns_http_resp;

typedef struct ns_http_client ns_http_client;

int ns_http_client_new(const ns_http_opts *opts, ns_http_client **out) NS_WUR;
/* Closes the connections; NULL is accepted. */
void ns_http_client_free(ns_http_client *c);

/* Send req (with retries as above). On success *out is a new response. */
int ns_http_do(ns_http_client *c, const ns_http_req *req, ns_http_resp **out) NS_WUR;

/* Why the last ns_http_do() on c got no response (NS_E_STORAGE), for callers that report TLS failures
 * differently from network ones. NS_HTTP_FAIL_NONE after a response. */
enum ns_http_fail {
    NS_HTTP_FAIL_NONE = 0,
    NS_HTTP_FAIL_NETWORK,   /* connect, DNS, timeout, reset, a handshake the peer broke off */
    NS_HTTP_FAIL_TLS_PEER,  /* the server's certificate did not verify (CA, name, validity) */
    NS_HTTP_FAIL_TLS_LOCAL, /* our own CA file, client certificate or key could not be used */
};
enum ns_http_fail ns_http_last_fail(const ns_http_client *c);

/* Wipes the body if it is secret; NULL is accepted. */
void ns_http_resp_free(ns_http_resp *resp);

/* The value of the first response header named `name` (case-insensitive), or NULL. Borrowed from resp. */
const char *ns_http_resp_header_get(const ns_http_resp *resp, const char *name);

/* The URL without its query string or userinfo, for log messages, into out (always NUL-terminated). */
void ns_http_url_for_log(const char *url, char *out, size_t size);

#endif
