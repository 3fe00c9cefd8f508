#include "ns-build.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include <curl/curl.h>

#include "common/log.h"
#include "common/secmem.h"
#include "net/http.h"

/* Header lines may carry credentials (Authorization, X-Vault-Token, session tokens): wipe libcurl's copies
 * before the list is freed, since curl_slist_free_all only frees them. */
static void wipe_headers(struct curl_slist *hl)
{
    for (; hl != NULL; hl = hl->next)
        if (hl->data != NULL)
            ns_wipe(hl->data, strlen(hl->data));
}

/* Why an easy handle per client and curl_easy_reset() per request: the easy handle owns the connection
 * cache (and TLS session cache), which curl_easy_reset() keeps; resetting drops every option of the
 * previous request, so nothing (a body, a header list, a custom method) can leak from one request into
 * the next. */

struct ns_http_client {
    CURL *curl;
    ns_http_opts opts;
    char *ca_file;
    char *client_cert;
    char *client_key;
    enum ns_http_fail last_fail;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void ns_http_opts_init(ns_http_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->connect_timeout_ms = NS_HTTP_DEFAULT_CONNECT_TIMEOUT_MS;
    opts->timeout_ms = NS_HTTP_DEFAULT_TIMEOUT_MS;
    opts->retries = NS_HTTP_DEFAULT_RETRIES;
    opts->retry_base_ms = NS_HTTP_DEFAULT_RETRY_BASE_MS;
}

int ns_http_client_new(const ns_http_opts *opts, ns_http_client **out)
{
    ns_http_client *c = NULL;
    int r = NS_E_INTERNAL;

    if (opts == NULL || out == NULL || opts->connect_timeout_ms == 0 || opts->timeout_ms == 0 ||
        opts->retries > NS_HTTP_MAX_RETRIES) {
        r = NS_E_INVAL;
        goto out;
    }
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        ns_log(NS_LOG_ERROR, "http: libcurl initialisation failed: %s", curl_easy_strerror(global_rc));
        r = NS_E_INTERNAL;
        goto out;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    c->opts = *opts;
    c->opts.ca_file = NULL;
    c->opts.client_cert = NULL;
    c->opts.client_key = NULL;
    if ((opts->client_cert == NULL) != (opts->client_key == NULL)) {
        r = NS_E_INVAL;
        goto out;
    }
    if ((opts->ca_file != NULL && (c->ca_file = strdup(opts->ca_file)) == NULL) ||
        (opts->client_cert != NULL && (c->client_cert = strdup(opts->client_cert)) == NULL) ||
        (opts->client_key != NULL && (c->client_key = strdup(opts->client_key)) == NULL)) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((c->curl = curl_easy_init()) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    *out = c;
    c = NULL;
    r = 0;
out:
    ns_http_client_free(c);
    return r;
}

void ns_http_client_free(ns_http_client *c)
{
    if (c == NULL)
        return;
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    free(c->ca_file);
    free(c->client_cert);
    free(c->client_key);
    free(c);
}

void ns_http_url_for_log(const char *url, char *out, size_t size)
{
    const char *start = url, *at, *end;
    size_t n, scheme_len = 0;
    const char *sep;

    if (size == 0)
        return;
    if (url == NULL) {
        snprintf(out, size, "(none)");
        return;
    }
    end = url + strcspn(url, "?#");
    /* Drop "user:password@" from the authority. */
    sep = strstr(url, "://");
    if (sep != NULL && sep < end) {
        scheme_len = (size_t)(sep - url) + 3;
        start = sep + 3;
        at = memchr(start, '@', (size_t)(end - start));
        if (at != NULL && at < start + strcspn(start, "/"))
            start = at + 1;
    }
    n = (size_t)(end - start);
    snprintf(out, size, "%.*s%.*s", (int)scheme_len, url, (int)n, start);
}

void ns_http_resp_free(ns_http_resp *resp)
{
    if (resp == NULL)
        return;
    ns_buf_free(resp->body);
    for (size_t i = 0; i < resp->n_headers; i++) {
        free(resp->headers[i].name);
        free(resp->headers[i].value);
    }
    free(resp->headers);
    free(resp);
}

const char *ns_http_resp_header_get(const ns_http_resp *resp, const char *name)
{
    if (resp == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < resp->n_headers; i++)
        if (strcasecmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

/* ---- one attempt ---- */

typedef struct attempt {
    ns_http_resp *resp;
    const ns_http_req *req;
    size_t sent;          /* request body bytes handed to libcurl */
    size_t header_bytes;  /* of the current response's kept headers */
    bool too_large;       /* the body passed max_body */
    bool header_overflow; /* more headers than we keep (dropped, logged once) */
    int err;              /* NS_E_NOMEM from a callback */
} attempt;

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    attempt *a = arg;
    size_t n = size * nmemb;
    int r;

    if ((r = ns_buf_append(a->resp->body, p, n)) != 0) {
        if (r == NS_E_TOO_LARGE)
            a->too_large = true;
        else
            a->err = r;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    return n;
}

static size_t on_read(char *p, size_t size, size_t nmemb, void *arg)
{
    attempt *a = arg;
    size_t room = size * nmemb, left = a->req->body_len - a->sent;
    size_t n = left < room ? left : room;

    if (n > 0)
        memcpy(p, a->req->body + a->sent, n);
    a->sent += n;
    return n;
}

static void drop_headers(ns_http_resp *resp)
{
    for (size_t i = 0; i < resp->n_headers; i++) {
        free(resp->headers[i].name);
        free(resp->headers[i].value);
    }
    resp->n_headers = 0;
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* One header line (or status line) at a time, not NUL-terminated. A status line starts a new response
 * (after a 1xx or on a retry): the headers kept so far belonged to an earlier one. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    attempt *a = arg;
    ns_http_resp *resp = a->resp;
    size_t n = size * nmemb, name_len, vs, ve;
    const char *colon;
    char *name = NULL, *value = NULL;

    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        drop_headers(resp);
        a->header_bytes = 0;
        return n;
    }
    colon = memchr(p, ':', n);
    if (colon == NULL) /* the blank line ending the headers, or an obsolete continuation line */
        return n;
    name_len = (size_t)(colon - p);
    vs = name_len + 1;
    ve = n;
    while (vs < ve && is_blank(p[vs]))
        vs++;
    while (ve > vs && is_blank(p[ve - 1]))
        ve--;
    if (name_len == 0)
        return n;
    if (resp->n_headers >= NS_HTTP_MAX_RESP_HEADERS ||
        a->header_bytes + name_len + (ve - vs) > NS_HTTP_MAX_RESP_HEADER_BYTES) {
        a->header_overflow = true;
        return n;
    }
    if (resp->headers == NULL &&
        (resp->headers = calloc(NS_HTTP_MAX_RESP_HEADERS, sizeof(*resp->headers))) == NULL) {
        a->err = NS_E_NOMEM;
        return 0;
    }
    if ((name = strndup(p, name_len)) == NULL || (value = strndup(p + vs, ve - vs)) == NULL) {
        free(name);
        a->err = NS_E_NOMEM;
        return 0;
    }
    resp->headers[resp->n_headers].name = name;
    resp->headers[resp->n_headers].value = value;
    resp->n_headers++;
    a->header_bytes += name_len + (ve - vs);
    return n;
}

static bool url_ok(const char *url)
{
    return strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0;
}

#define SETOPT(opt, val)                                                                                     \
    do {                                                                                                     \
        if ((cc = curl_easy_setopt(c->curl, opt, val)) != CURLE_OK)                                          \
            goto curl_fail;                                                                                  \
    } while (0)

/* One attempt. *cc_out: libcurl's result (CURLE_OK when a response came back). Returns 0 or an error that
 * must not be retried (NS_E_TOO_LARGE, NS_E_NOMEM, NS_E_INTERNAL). */
static int attempt_once(ns_http_client *c, const ns_http_req *req, ns_http_resp **out, CURLcode *cc_out)
{
    struct curl_slist *hl = NULL, *tmp;
    ns_http_resp *resp = NULL;
    attempt a;
    char *line = NULL;
    CURLcode cc = CURLE_OK;
    bool is_head = strcmp(req->method, "HEAD") == 0;
    bool is_get = strcmp(req->method, "GET") == 0;
    bool is_put = strcmp(req->method, "PUT") == 0;
    int r = NS_E_INTERNAL;

    memset(&a, 0, sizeof(a));
    if ((resp = calloc(1, sizeof(*resp))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = ns_buf_new(req->max_body, req->secret_body, &resp->body)) != 0)
        goto out;
    a.resp = resp;
    a.req = req;

    for (size_t i = 0; i < req->n_headers; i++) {
        size_t len = strlen(req->headers[i].name) + strlen(req->headers[i].value) + 3;
        if ((line = malloc(len)) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
        /* "Name;" is libcurl's way to send a header with an empty value ("Name:" would remove it). */
        if (req->headers[i].value[0] == '\0')
            snprintf(line, len, "%s;", req->headers[i].name);
        else
            snprintf(line, len, "%s: %s", req->headers[i].name, req->headers[i].value);
        tmp = curl_slist_append(hl, line);
        /* The line may hold a credential: wipe our copy (libcurl's own is wiped in wipe_headers). */
        ns_wipe(line, len);
        free(line);
        line = NULL;
        if (tmp == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
        hl = tmp;
    }
    /* No "Expect: 100-continue" round trip before bodies, and no default Accept header. */
    if ((tmp = curl_slist_append(hl, "Expect:")) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    hl = tmp;

    curl_easy_reset(c->curl);
    c->errbuf[0] = '\0';
    SETOPT(CURLOPT_ERRORBUFFER, c->errbuf);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_URL, req->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->ca_file != NULL)
        SETOPT(CURLOPT_CAINFO, c->ca_file);
    if (c->client_cert != NULL) {
        SETOPT(CURLOPT_SSLCERT, c->client_cert);
        SETOPT(CURLOPT_SSLCERTTYPE, "PEM");
        SETOPT(CURLOPT_SSLKEY, c->client_key);
        SETOPT(CURLOPT_SSLKEYTYPE, "PEM");
    }
    if (c->opts.tls13_only)
        SETOPT(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_3);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)c->opts.connect_timeout_ms);
    SETOPT(CURLOPT_TIMEOUT_MS, (long)c->opts.timeout_ms);
    SETOPT(CURLOPT_HTTPHEADER, hl);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, &a);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, &a);
    /* Fail fast on an answer announcing a body larger than we accept (HEAD answers announce the object's). */
    if (!is_head && req->max_body < (size_t)INT64_MAX)
        SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_body);

    if (is_head) {
        SETOPT(CURLOPT_NOBODY, 1L);
    } else if (is_put) {
        /* An upload sends Content-Length and no Content-Type of libcurl's choosing. */
        SETOPT(CURLOPT_UPLOAD, 1L);
        SETOPT(CURLOPT_READFUNCTION, on_read);
        SETOPT(CURLOPT_READDATA, &a);
        SETOPT(CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
    } else if (req->body_len > 0 || strcmp(req->method, "POST") == 0) {
        SETOPT(CURLOPT_POST, 1L);
        SETOPT(CURLOPT_POSTFIELDS, req->body_len > 0 ? (const char *)req->body : "");
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        if (strcmp(req->method, "POST") != 0)
            SETOPT(CURLOPT_CUSTOMREQUEST, req->method);
    } else if (!is_get) {
        SETOPT(CURLOPT_CUSTOMREQUEST, req->method);
    }

    cc = curl_easy_perform(c->curl);
    *cc_out = cc;
    if (a.err != 0) {
        r = a.err;
        goto out;
    }
    if (a.too_large || cc == CURLE_FILESIZE_EXCEEDED) {
        r = NS_E_TOO_LARGE;
        goto out;
    }
    if (cc != CURLE_OK) {
        r = 0; /* the caller decides whether to retry */
        goto out;
    }
    if (a.header_overflow) {
        char where[256];
        ns_http_url_for_log(req->url, where, sizeof(where));
        ns_log(NS_LOG_WARN, "http: %s %s: more than %u headers or %u header bytes; the rest were dropped",
               req->method, where, NS_HTTP_MAX_RESP_HEADERS, NS_HTTP_MAX_RESP_HEADER_BYTES);
    }
    if ((cc = curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &resp->status)) != CURLE_OK)
        goto curl_fail;
    *out = resp;
    resp = NULL;
    r = 0;
    goto out;

curl_fail:
    ns_log(NS_LOG_ERROR, "http: libcurl setup failed: %s", curl_easy_strerror(cc));
    r = cc == CURLE_OUT_OF_MEMORY ? NS_E_NOMEM : NS_E_INTERNAL;
out:
    /* The handle still points at the header list and at `a`: clear both before they go away. */
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(c->curl, CURLOPT_READDATA, NULL);
    wipe_headers(hl);
    curl_slist_free_all(hl);
    ns_http_resp_free(resp);
    return r;
}

#undef SETOPT

/* Network errors worth another attempt: the server may be restarting or the path flapping. TLS
 * verification failures, bad URLs and the like will not get better. */
static bool retryable_cc(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
        return true;
    default:
        return false;
    }
}

static enum ns_http_fail fail_kind(CURLcode cc)
{
    switch (cc) {
    case CURLE_OK:
        return NS_HTTP_FAIL_NONE;
    case CURLE_PEER_FAILED_VERIFICATION:
        return NS_HTTP_FAIL_TLS_PEER;
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
        return NS_HTTP_FAIL_TLS_LOCAL;
    default:
        return NS_HTTP_FAIL_NETWORK;
    }
}

enum ns_http_fail ns_http_last_fail(const ns_http_client *c)
{
    return c == NULL ? NS_HTTP_FAIL_NONE : c->last_fail;
}

static bool retryable_status(long status)
{
    return status == 429 || (status >= 500 && status <= 599);
}

/* Sleep a random time in [0, base * 2^(attempt-1)], capped (full jitter). */
static void backoff(unsigned base_ms, unsigned n_done)
{
    uint64_t bound = base_ms, pick = 0;
    uint32_t rnd = 0;
    struct timespec ts;

    for (unsigned i = 1; i < n_done && bound < NS_HTTP_RETRY_CAP_MS; i++)
        bound *= 2;
    if (bound > NS_HTTP_RETRY_CAP_MS)
        bound = NS_HTTP_RETRY_CAP_MS;
    if (bound == 0)
        return;
    if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)time(NULL) * 2654435761u;
    pick = (uint64_t)rnd % (bound + 1);
    ts.tv_sec = (time_t)(pick / 1000);
    ts.tv_nsec = (long)(pick % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int ns_http_do(ns_http_client *c, const ns_http_req *req, ns_http_resp **out)
{
    ns_http_resp *resp = NULL;
    unsigned max_attempts, n = 0;
    CURLcode cc = CURLE_OK;
    char where[256];
    int r = NS_E_INTERNAL;

    if (c == NULL || req == NULL || out == NULL || req->method == NULL || req->url == NULL ||
        (req->body == NULL && req->body_len != 0) || (req->headers == NULL && req->n_headers != 0)) {
        r = NS_E_INVAL;
        goto out;
    }
    if (!url_ok(req->url)) {
        ns_http_url_for_log(req->url, where, sizeof(where));
        ns_log(NS_LOG_ERROR, "http: '%s' is not an http:// or https:// URL", where);
        r = NS_E_INVAL;
        goto out;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        if (req->headers[i].name == NULL || req->headers[i].value == NULL ||
            strpbrk(req->headers[i].name, ":\r\n") != NULL ||
            strpbrk(req->headers[i].value, "\r\n") != NULL) {
            r = NS_E_INVAL; /* no header injection through a name or value */
            goto out;
        }
    }
    ns_http_url_for_log(req->url, where, sizeof(where));
    max_attempts = req->no_retry ? 1 : c->opts.retries + 1;
    c->last_fail = NS_HTTP_FAIL_NETWORK;
    for (;;) {
        n++;
        ns_http_resp_free(resp);
        resp = NULL;
        cc = CURLE_OK;
        if ((r = attempt_once(c, req, &resp, &cc)) != 0) {
            if (r == NS_E_TOO_LARGE)
                ns_log(NS_LOG_ERROR, "http: %s %s: response body larger than %zu bytes", req->method, where,
                       req->max_body);
            goto out;
        }
        if (resp != NULL && !retryable_status(resp->status))
            break;
        c->last_fail = fail_kind(cc);
        if (resp == NULL && !retryable_cc(cc)) {
            ns_log(NS_LOG_ERROR, "http: %s %s: %s", req->method, where,
                   c->errbuf[0] != '\0' ? c->errbuf : curl_easy_strerror(cc));
            r = NS_E_STORAGE;
            goto out;
        }
        if (n >= max_attempts) {
            if (resp != NULL) /* the last 5xx/429 answer goes to the caller */
                break;
            ns_log(NS_LOG_ERROR, "http: %s %s: %s (after %u attempt%s)", req->method, where,
                   c->errbuf[0] != '\0' ? c->errbuf : curl_easy_strerror(cc), n, n == 1 ? "" : "s");
            r = NS_E_STORAGE;
            goto out;
        }
        if (resp != NULL)
            ns_log(NS_LOG_INFO, "http: %s %s: status %ld, retrying (attempt %u of %u)", req->method, where,
                   resp->status, n + 1, max_attempts);
        else
            ns_log(NS_LOG_INFO, "http: %s %s: %s, retrying (attempt %u of %u)", req->method, where,
                   c->errbuf[0] != '\0' ? c->errbuf : curl_easy_strerror(cc), n + 1, max_attempts);
        backoff(c->opts.retry_base_ms, n);
    }
    resp->attempts = n;
    c->last_fail = NS_HTTP_FAIL_NONE;
    *out = resp;
    resp = NULL;
    r = 0;
out:
    ns_http_resp_free(resp);
    return r;
}
