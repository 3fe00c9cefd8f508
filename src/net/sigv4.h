/* AWS Signature Version 4 (header form) for any AWS-style service: s3, secretsmanager, ssm, ...
 *
 * ns_sigv4_sign() takes a request as it will be sent (ns_http_req: method, URL, headers, body) and returns
 * the complete header list to send instead: the caller's headers plus Host, X-Amz-Date, X-Amz-Content-Sha256
 * (service "s3" only, as S3 requires it), X-Amz-Security-Token (temporary credentials) and Authorization.
 * Every header passed in is signed (lower-cased, values trimmed, inner blank runs collapsed, duplicates
 * joined with ','), so a conditional header such as If-None-Match cannot be stripped or altered in flight.
 * The request's Host header is the one signed: the caller must not pass its own.
 *
 * The URL must already be percent-encoded the AWS way (ns_sigv4_uri_encode, unreserved = A-Z a-z 0-9 - . _
 * ~):
 *   - canonical URI: for "s3" the path exactly as in the URL (S3 signs the once-encoded path and does not
 *     normalise it); for other services each segment is encoded once more, as AWS specifies;
 *   - canonical query: the URL's parameters decoded, re-encoded, sorted by name then value; "?lifecycle"
 *     becomes "lifecycle=".
 * Host: the URL's host, with ":port" only when the URL names a port that is not the scheme's default.
 *
 * Reference: "Authenticating Requests (AWS Signature Version 4)", Amazon S3 API reference, and "Create a
 * signed AWS API request" (IAM user guide). The unit test pins the S3 examples published there. */
#ifndef NS_NET_SIGV4_H
#define NS_NET_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "common/err.h"
#include "net/aws_creds.h"
#include "net/http.h"

/* SHA-256 of the empty string, hex. */
#define NS_SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

typedef struct ns_sigv4_params {
    const char *service; /* "s3", "secretsmanager", "ssm", ... */
    const char *region;  /* "us-east-1", ... */
    time_t when;         /* signing time (UTC seconds); callers pass time(NULL), tests pin it */
    /* S3 only: sign with x-amz-content-sha256 "UNSIGNED-PAYLOAD" instead of hashing the body. Off by
     * default; never used by this project (bodies are small), here for completeness. */
    bool unsigned_payload;
} ns_sigv4_params;

/* The signed header set, owned by the caller (ns_sigv4_signed_free). */
typedef struct ns_sigv4_signed {
    ns_http_header *headers; /* to put in ns_http_req.headers: the caller's, then the signing headers */
    size_t n_headers;
    char *canonical_request; /* for tests and debugging; holds the session token if there is one */
    char *string_to_sign;    /* for tests and debugging */
    char *signature;         /* 64 hex digits */
    char *authorization;     /* the Authorization header's value */
    /* Private: every string above and in headers is a copy in the secure heap, wiped on free. */
    struct ns_sigv4_owned *owned;
    size_t n_owned, cap_owned;
} ns_sigv4_signed;

/* Sign req with creds. NS_E_INVAL for a URL that is not http(s)://host[:port]/path[?query], a malformed
 * percent-escape, a Host or Authorization header among req->headers, or empty params; NS_E_NOMEM,
 * NS_E_CRYPTO. The signing key is derived in the secure heap and wiped. */
int ns_sigv4_sign(const ns_sigv4_params *params, const ns_aws_creds *creds, const ns_http_req *req,
                  ns_sigv4_signed **out) NS_WUR;
void ns_sigv4_signed_free(ns_sigv4_signed *s);

/* AWS URI encoding of s[0..n): every byte outside A-Z a-z 0-9 - . _ ~ becomes %XX (upper-case hex); '/'
 * too unless keep_slash. A new malloc'd string in *out. */
int ns_sigv4_uri_encode(const char *s, size_t n, bool keep_slash, char **out) NS_WUR;

#endif
