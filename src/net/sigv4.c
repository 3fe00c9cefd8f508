#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/buf.h"
#include "common/codec.h"
#include "common/secmem.h"
#include "net/sigv4.h"

/* Bounds: a signed request is small; anything beyond these is a caller bug, not a request. */
#define SIGV4_MAX_TEXT    65536u /* canonical request, string to sign, any one header line */
#define SIGV4_MAX_HEADERS 64u
#define SIGV4_MAX_PARAMS  64u

struct ns_sigv4_owned {
    char *p;
    size_t size;
};

/* ---- owned strings (secure heap) ---- */

static int own(ns_sigv4_signed *s, char *p, size_t size)
{
    if (s->n_owned == s->cap_owned) {
        size_t cap = s->cap_owned ? s->cap_owned * 2 : 16;
        struct ns_sigv4_owned *o = realloc(s->owned, cap * sizeof(*o));
        if (o == NULL)
            return NS_E_NOMEM;
        s->owned = o;
        s->cap_owned = cap;
    }
    s->owned[s->n_owned].p = p;
    s->owned[s->n_owned].size = size;
    s->n_owned++;
    return 0;
}

/* A secure copy of p[0..n) plus NUL, recorded in s. */
static int own_copy(ns_sigv4_signed *s, const char *p, size_t n, char **out)
{
    char *c = ns_secmem_strndup(p, n);
    int r = NS_E_INTERNAL;

    if (c == NULL)
        return NS_E_NOMEM;
    if ((r = own(s, c, n + 1)) != 0) {
        ns_secmem_free(c, n + 1);
        return r;
    }
    *out = c;
    return 0;
}

/* A copy of the builder's text as an owned string. */
static int own_buf(ns_sigv4_signed *s, ns_buf *b, char **out)
{
    return own_copy(s, b->len ? (const char *)b->data : "", b->len, out);
}

void ns_sigv4_signed_free(ns_sigv4_signed *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_owned; i++)
        ns_secmem_free(s->owned[i].p, s->owned[i].size);
    free(s->owned);
    free(s->headers);
    free(s);
}

static int put_str(ns_buf *b, const char *p)
{
    return ns_buf_append(b, p, strlen(p));
}

/* ---- encoding ---- */

int ns_sigv4_uri_encode(const char *s, size_t n, bool keep_slash, char **out)
{
    ns_buf *b = NULL;
    char *res = NULL;
    int r = NS_E_INTERNAL;

    if (s == NULL || out == NULL || n > SIGV4_MAX_TEXT) {
        r = NS_E_INVAL;
        goto out;
    }
    if ((r = ns_buf_new(3 * n + 1, false, &b)) != 0)
        goto out;
    if ((r = ns_pct_encode_append(b, s, n, keep_slash)) != 0)
        goto out;
    if ((res = strndup(b->len ? (const char *)b->data : "", b->len)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    *out = res;
    res = NULL;
    r = 0;
out:
    free(res);
    ns_buf_free(b);
    return r;
}

/* Percent-decode s[0..n) into b. NS_E_INVAL on a malformed escape. */
static int decode_into(ns_buf *b, const char *s, size_t n)
{
    int r = 0;

    for (size_t i = 0; i < n && r == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n) /* fewer than two characters follow */
                return NS_E_INVAL;
            hi = ns_hex_digit(s[i + 1]);
            lo = ns_hex_digit(s[i + 2]);
            if (hi < 0 || lo < 0)
                return NS_E_INVAL;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        r = ns_buf_append(b, &c, 1);
    }
    return r;
}

/* ---- hashing ---- */

static int sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;

    if (EVP_Digest(p, n, md, &len, EVP_sha256(), NULL) != 1 || len != 32)
        return NS_E_CRYPTO;
    ns_hex_encode(md, 32, out);
    return 0;
}

static int hmac(const void *key, size_t klen, const void *msg, size_t mlen, unsigned char out[32])
{
    unsigned int len = 0;

    if (HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &len) == NULL || len != 32)
        return NS_E_CRYPTO;
    return 0;
}

/* ---- URL ---- */

typedef struct url_parts {
    const char *host; /* host[:port] as in the URL */
    size_t host_len;
    size_t name_len; /* of the host name alone (no port) */
    const char *path;
    size_t path_len;
    const char *query;
    size_t query_len;
    bool https;
} url_parts;

static int parse_url(const char *url, url_parts *u)
{
    const char *p, *auth_end;

    memset(u, 0, sizeof(*u));
    if (strncmp(url, "https://", 8) == 0) {
        u->https = true;
        p = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else {
        return NS_E_INVAL;
    }
    if (strchr(url, '#') != NULL)
        return NS_E_INVAL;
    auth_end = p + strcspn(p, "/?");
    if (auth_end == p || memchr(p, '@', (size_t)(auth_end - p)) != NULL)
        return NS_E_INVAL;
    u->host = p;
    u->host_len = (size_t)(auth_end - p);
    u->name_len = u->host_len;
    if (p[0] == '[') { /* IPv6 literal */
        const char *close = memchr(p, ']', u->host_len);
        if (close == NULL)
            return NS_E_INVAL;
        u->name_len = (size_t)(close - p) + 1;
        if (u->name_len != u->host_len && p[u->name_len] != ':')
            return NS_E_INVAL;
    } else {
        const char *colon = memchr(p, ':', u->host_len);
        if (colon != NULL)
            u->name_len = (size_t)(colon - p);
    }
    if (u->name_len == 0)
        return NS_E_INVAL;
    p = auth_end;
    if (*p == '/') {
        u->path = p;
        u->path_len = strcspn(p, "?");
        p += u->path_len;
    } else {
        u->path = "/";
        u->path_len = 1;
    }
    if (*p == '?') {
        u->query = p + 1;
        u->query_len = strlen(p + 1);
    } else {
        u->query = "";
    }
    for (size_t i = 0; url[i] != '\0'; i++) /* no blanks or control bytes anywhere */
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f)
            return NS_E_INVAL;
    return 0;
}

/* The Host header: the name, plus ":port" unless the port is the scheme's default. */
static int host_header(const url_parts *u, ns_sigv4_signed *s, char **out)
{
    size_t n = u->host_len;

    if (u->host_len > u->name_len) {
        const char *port = u->host + u->name_len + 1;
        size_t plen = u->host_len - u->name_len - 1;
        if (plen == 0 || (u->https && plen == 3 && memcmp(port, "443", 3) == 0) ||
            (!u->https && plen == 2 && memcmp(port, "80", 2) == 0))
            n = u->name_len;
    }
    return own_copy(s, u->host, n, out);
}

/* ---- canonical pieces ---- */

typedef struct param {
    char *k, *v; /* encoded */
} param;

static int param_cmp(const void *a, const void *b)
{
    const param *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c != 0 ? c : strcmp(x->v, y->v);
}

/* Decode then re-encode one query component into a new malloc'd string. */
static int reencode(const char *p, size_t n, char **out)
{
    ns_buf *d = NULL;
    int r = NS_E_INTERNAL;

    if ((r = ns_buf_new(SIGV4_MAX_TEXT, false, &d)) != 0)
        goto out;
    if ((r = decode_into(d, p, n)) != 0)
        goto out;
    r = ns_sigv4_uri_encode(d->len ? (const char *)d->data : "", d->len, false, out);
out:
    ns_buf_free(d);
    return r;
}

static int canonical_query(const url_parts *u, ns_buf *b)
{
    param ps[SIGV4_MAX_PARAMS];
    size_t np = 0, i = 0;
    int r = NS_E_INTERNAL;

    memset(ps, 0, sizeof(ps));
    while (i < u->query_len) {
        size_t len = strcspn(u->query + i, "&"), eq;
        const char *item = u->query + i;
        if (len > u->query_len - i)
            len = u->query_len - i;
        if (len > 0) {
            if (np == SIGV4_MAX_PARAMS) {
                r = NS_E_INVAL;
                goto out;
            }
            for (eq = 0; eq < len && item[eq] != '='; eq++)
                ;
            if ((r = reencode(item, eq, &ps[np].k)) != 0)
                goto out;
            np++;
            if ((r = reencode(eq < len ? item + eq + 1 : "", eq < len ? len - eq - 1 : 0, &ps[np - 1].v)) !=
                0)
                goto out;
        }
        i += len + 1;
    }
    qsort(ps, np, sizeof(ps[0]), param_cmp);
    for (i = 0; i < np; i++) {
        if ((i > 0 && (r = put_str(b, "&")) != 0) || (r = put_str(b, ps[i].k)) != 0 ||
            (r = put_str(b, "=")) != 0 || (r = put_str(b, ps[i].v)) != 0)
            goto out;
    }
    r = 0;
out:
    for (i = 0; i < np; i++) {
        free(ps[i].k);
        free(ps[i].v);
    }
    return r;
}

typedef struct hdr {
    char *name;  /* lower-case, owned */
    char *value; /* trimmed, blanks collapsed, owned (secure: may be a token) */
    size_t vsize;
} hdr;

static int hdr_cmp(const void *a, const void *b)
{
    return strcmp(((const hdr *)a)->name, ((const hdr *)b)->name);
}

static void hdrs_free(hdr *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        ns_secmem_free(h[i].value, h[i].vsize);
    }
}

/* Add one header in canonical form (name lower-cased; value trimmed, inner blank runs collapsed). */
static int hdr_add(hdr *h, size_t *n, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value), o = 0;
    bool blank = false;
    char *nm = NULL, *v = NULL;

    if (*n == SIGV4_MAX_HEADERS || nl == 0 || nl > 256 || vl > SIGV4_MAX_TEXT)
        return NS_E_INVAL;
    if ((nm = malloc(nl + 1)) == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i <= nl; i++)
        nm[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] - 'A' + 'a' : name[i]);
    if ((v = ns_secmem_alloc(vl + 1)) == NULL) {
        free(nm);
        return NS_E_NOMEM;
    }
    for (size_t i = 0; i < vl; i++) {
        char c = value[i];
        if (c == ' ' || c == '\t') {
            blank = o > 0;
            continue;
        }
        if (blank)
            v[o++] = ' ';
        blank = false;
        v[o++] = c;
    }
    v[o] = '\0';
    h[*n].name = nm;
    h[*n].value = v;
    h[*n].vsize = vl + 1;
    (*n)++;
    return 0;
}

static bool reserved_header(const char *name)
{
    static const char *const names[] = {
        "host", "authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token", NULL};
    for (size_t i = 0; names[i] != NULL; i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return false;
}

/* "20130524T000000Z" and "20130524" */
static int amz_dates(time_t when, char stamp[17], char day[9])
{
    struct tm tm;

    if (gmtime_r(&when, &tm) == NULL)
        return NS_E_INVAL;
    if (strftime(stamp, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
        return NS_E_INVAL;
    memcpy(day, stamp, 8);
    day[8] = '\0';
    return 0;
}

static int signing_key(const ns_aws_creds *creds, const char *day, const char *region, const char *service,
                       unsigned char key[32])
{
    size_t sl = strlen(creds->secret_access_key), kl = sl + 4;
    char *k = NULL;
    unsigned char t[32];
    int r = NS_E_INTERNAL;

    if ((k = ns_secmem_alloc(kl)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    memcpy(k, "AWS4", 4);
    memcpy(k + 4, creds->secret_access_key, sl);
    if ((r = hmac(k, kl, day, strlen(day), t)) != 0 || (r = hmac(t, 32, region, strlen(region), t)) != 0 ||
        (r = hmac(t, 32, service, strlen(service), t)) != 0 ||
        (r = hmac(t, 32, "aws4_request", 12, key)) != 0)
        goto out;
    r = 0;
out:
    ns_wipe(t, sizeof(t));
    ns_secmem_free(k, kl);
    return r;
}

int ns_sigv4_sign(const ns_sigv4_params *params, const ns_aws_creds *creds, const ns_http_req *req,
                  ns_sigv4_signed **out)
{
    ns_sigv4_signed *s = NULL;
    ns_buf *b = NULL;
    hdr hs[SIGV4_MAX_HEADERS];
    size_t nh = 0;
    url_parts u;
    char stamp[17], day[9], payload[65], creq_hash[65], sig[65];
    char *host = NULL, *signed_names = NULL, *token_copy = NULL;
    unsigned char key[32], mac[32];
    bool is_s3;
    int r = NS_E_INTERNAL;

    memset(hs, 0, sizeof(hs));
    if (params == NULL || creds == NULL || req == NULL || out == NULL || params->service == NULL ||
        params->region == NULL || params->service[0] == '\0' || params->region[0] == '\0' ||
        req->method == NULL || req->url == NULL || creds->access_key_id == NULL ||
        creds->secret_access_key == NULL || (req->body == NULL && req->body_len != 0) ||
        (req->headers == NULL && req->n_headers != 0)) {
        r = NS_E_INVAL;
        goto out;
    }
    is_s3 = strcmp(params->service, "s3") == 0;
    if ((r = parse_url(req->url, &u)) != 0)
        goto out;
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = amz_dates(params->when, stamp, day)) != 0)
        goto out;
    if (is_s3 && params->unsigned_payload)
        strcpy(payload, "UNSIGNED-PAYLOAD");
    else if ((r = sha256_hex(req->body_len ? req->body : (const uint8_t *)"", req->body_len, payload)) != 0)
        goto out;
    if ((r = host_header(&u, s, &host)) != 0)
        goto out;

    /* The headers to sign: the caller's, then ours. */
    for (size_t i = 0; i < req->n_headers; i++) {
        if (req->headers[i].name == NULL || req->headers[i].value == NULL ||
            reserved_header(req->headers[i].name)) {
            r = NS_E_INVAL;
            goto out;
        }
        if ((r = hdr_add(hs, &nh, req->headers[i].name, req->headers[i].value)) != 0)
            goto out;
    }
    if ((r = hdr_add(hs, &nh, "host", host)) != 0 || (r = hdr_add(hs, &nh, "x-amz-date", stamp)) != 0)
        goto out;
    if (is_s3 && (r = hdr_add(hs, &nh, "x-amz-content-sha256", payload)) != 0)
        goto out;
    if (creds->session_token != NULL &&
        (r = hdr_add(hs, &nh, "x-amz-security-token", creds->session_token)) != 0)
        goto out;
    qsort(hs, nh, sizeof(hs[0]), hdr_cmp);

    /* Canonical request. The body may carry secrets but only its hash enters; the session token does. */
    if ((r = ns_buf_new(SIGV4_MAX_TEXT, true, &b)) != 0)
        goto out;
    if ((r = put_str(b, req->method)) != 0 || (r = put_str(b, "\n")) != 0)
        goto out;
    if (is_s3) {
        r = ns_buf_append(b, u.path, u.path_len);
    } else {
        /* Other services: the path is URI-encoded once more (slashes kept). */
        r = ns_pct_encode_append(b, u.path, u.path_len, true);
    }
    if (r != 0 || (r = put_str(b, "\n")) != 0)
        goto out;
    if ((r = canonical_query(&u, b)) != 0 || (r = put_str(b, "\n")) != 0)
        goto out;
    for (size_t i = 0; i < nh; i++) {
        /* Duplicates are joined: "name:v1,v2". */
        if (i > 0 && strcmp(hs[i].name, hs[i - 1].name) == 0) {
            if ((r = put_str(b, ",")) != 0 || (r = put_str(b, hs[i].value)) != 0)
                goto out;
            continue;
        }
        if ((i > 0 && (r = put_str(b, "\n")) != 0) || (r = put_str(b, hs[i].name)) != 0 ||
            (r = put_str(b, ":")) != 0 || (r = put_str(b, hs[i].value)) != 0)
            goto out;
    }
    if ((r = put_str(b, "\n\n")) != 0)
        goto out;
    {
        size_t start = b->len;
        for (size_t i = 0; i < nh; i++) {
            if (i > 0 && strcmp(hs[i].name, hs[i - 1].name) == 0)
                continue;
            if ((i > 0 && (r = put_str(b, ";")) != 0) || (r = put_str(b, hs[i].name)) != 0)
                goto out;
        }
        if ((r = own_copy(s, (const char *)b->data + start, b->len - start, &signed_names)) != 0)
            goto out;
    }
    if ((r = put_str(b, "\n")) != 0 || (r = put_str(b, payload)) != 0)
        goto out;
    if ((r = own_buf(s, b, &s->canonical_request)) != 0)
        goto out;
    if ((r = sha256_hex(b->data, b->len, creq_hash)) != 0)
        goto out;

    /* String to sign. */
    ns_buf_truncate(b, 0);
    if ((r = put_str(b, "AWS4-HMAC-SHA256\n")) != 0 || (r = put_str(b, stamp)) != 0 ||
        (r = put_str(b, "\n")) != 0 || (r = put_str(b, day)) != 0 || (r = put_str(b, "/")) != 0 ||
        (r = put_str(b, params->region)) != 0 || (r = put_str(b, "/")) != 0 ||
        (r = put_str(b, params->service)) != 0 || (r = put_str(b, "/aws4_request\n")) != 0 ||
        (r = put_str(b, creq_hash)) != 0)
        goto out;
    if ((r = own_buf(s, b, &s->string_to_sign)) != 0)
        goto out;

    /* Signature. */
    if ((r = signing_key(creds, day, params->region, params->service, key)) != 0)
        goto out;
    if ((r = hmac(key, sizeof(key), b->data, b->len, mac)) != 0)
        goto out;
    ns_hex_encode(mac, sizeof(mac), sig);
    if ((r = own_copy(s, sig, 64, &s->signature)) != 0)
        goto out;

    ns_buf_truncate(b, 0);
    if ((r = put_str(b, "AWS4-HMAC-SHA256 Credential=")) != 0 ||
        (r = put_str(b, creds->access_key_id)) != 0 || (r = put_str(b, "/")) != 0 ||
        (r = put_str(b, day)) != 0 || (r = put_str(b, "/")) != 0 || (r = put_str(b, params->region)) != 0 ||
        (r = put_str(b, "/")) != 0 || (r = put_str(b, params->service)) != 0 ||
        (r = put_str(b, "/aws4_request, SignedHeaders=")) != 0 || (r = put_str(b, signed_names)) != 0 ||
        (r = put_str(b, ", Signature=")) != 0 || (r = put_str(b, sig)) != 0)
        goto out;
    if ((r = own_buf(s, b, &s->authorization)) != 0)
        goto out;

    /* The headers to send: the caller's as given (copied), then ours. */
    if ((s->headers = calloc(req->n_headers + 5, sizeof(*s->headers))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        char *nm = NULL, *v = NULL;
        if ((r = own_copy(s, req->headers[i].name, strlen(req->headers[i].name), &nm)) != 0 ||
            (r = own_copy(s, req->headers[i].value, strlen(req->headers[i].value), &v)) != 0)
            goto out;
        s->headers[s->n_headers].name = nm;
        s->headers[s->n_headers].value = v;
        s->n_headers++;
    }
    s->headers[s->n_headers++] = (ns_http_header){"Host", host};
    {
        char *d = NULL;
        if ((r = own_copy(s, stamp, strlen(stamp), &d)) != 0)
            goto out;
        s->headers[s->n_headers++] = (ns_http_header){"X-Amz-Date", d};
    }
    if (is_s3) {
        char *d = NULL;
        if ((r = own_copy(s, payload, strlen(payload), &d)) != 0)
            goto out;
        s->headers[s->n_headers++] = (ns_http_header){"X-Amz-Content-Sha256", d};
    }
    if (creds->session_token != NULL) {
        if ((r = own_copy(s, creds->session_token, strlen(creds->session_token), &token_copy)) != 0)
            goto out;
        s->headers[s->n_headers++] = (ns_http_header){"X-Amz-Security-Token", token_copy};
    }
    s->headers[s->n_headers++] = (ns_http_header){"Authorization", s->authorization};
    *out = s;
    s = NULL;
    r = 0;
out:
    ns_wipe(key, sizeof(key));
    ns_wipe(mac, sizeof(mac));
    hdrs_free(hs, nh);
    ns_buf_free(b);
    ns_sigv4_signed_free(s);
    return r;
}
