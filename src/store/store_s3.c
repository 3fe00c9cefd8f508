#include "ns-build.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "net/aws_creds.h"
#include "net/http.h"
#include "net/sigv4.h"
#include "store/backends.h"
#include "store/store.h"

/* The `s3` backend: object "a/b" is the S3 object <prefix>a/b of the bucket, reached over HTTP(S) with
 * SigV4-signed requests (net/). doc/storage-s3.md has the details; in short:
 *
 *   get     GET object; the ETag is the version (opaque, quotes included); 404 → NS_E_NOT_FOUND.
 *   put     PUT object; NS_PUT_CREATE sends If-None-Match: *, NS_PUT_IF_MATCH sends If-Match: <etag>.
 *           412 → NS_E_EXISTS (create) / NS_E_CONFLICT (if-match); 409 (a concurrent conditional write)
 *           likewise; 404 on if-match → NS_E_NOT_FOUND.
 *   list    ListObjectsV2 with continuation tokens; keys that are not valid object names are skipped
 *           with a warning.
 *   delete  HEAD (404 → NS_E_NOT_FOUND: S3's DELETE answers 204 for absent keys too), then DELETE.
 *
 * A retried conditional PUT is ambiguous: the first attempt may have landed before its answer was lost,
 * and then the retry gets 412. When that happens the object is read back; if it holds exactly our bytes,
 * the write is ours and put() succeeds.
 *
 * If-Match and the quotes of the ETag: RFC 9110 §8.8.3 and §13.1.1 make the entity-tag the quoted string,
 * and AWS S3 (and s3rver, MinIO, RGW since ceph/ceph PR 63348) accept it, but Ceph RGW before that fix
 * compares the header with its stored ETag *without* quotes: the quoted form always gets 412. So a 412 to
 * an If-Match PUT is checked with a HEAD: if the current ETag is still the one we sent, the object did not
 * change and the 412 was about the form; we then send the other form (unquoted, or quoted again) once, and
 * if that succeeds the store remembers the form for its later requests. A real change shows a different
 * ETag on the HEAD (→ NS_E_CONFLICT), and one between the HEAD and the second PUT gets a 412 on it.
 *
 * Connections: a small pool of HTTP clients (one CURL handle each) shared by the threads of the process;
 * a request takes one, and gives it back with its open connection for the next request. */

#define S3_ERR_BODY_MAX  (64u * 1024u)        /* error and HEAD bodies */
#define S3_LIST_BODY_MAX (4u * 1024u * 1024u) /* one ListObjectsV2 page (1000 keys) */
#define S3_LIST_PAGES    100000u              /* 100 million keys: a loop guard, not a limit in practice */
#define S3_URL_MAX       4096u
#define S3_POOL_MAX      16u

typedef struct s3_store {
    char *bucket;
    char *prefix; /* "" or ending in '/' */
    char *region;
    char *base; /* "https://bucket.host" (virtual-hosted) or "https://host/bucket" (path-style) */
    bool path_style;
    ns_http_opts http;
    ns_aws_creds_provider *creds;
    pthread_mutex_t lock;
    ns_http_client *pool[S3_POOL_MAX];
    size_t n_pool;
    bool if_match_bare; /* under lock: this endpoint wants If-Match without quotes (RGW before 2025) */
} s3_store;

/* ---- clients ---- */

static int client_take(s3_store *s, ns_http_client **out)
{
    ns_http_client *c = NULL;

    pthread_mutex_lock(&s->lock);
    if (s->n_pool > 0)
        c = s->pool[--s->n_pool];
    pthread_mutex_unlock(&s->lock);
    if (c != NULL) {
        *out = c;
        return 0;
    }
    return ns_http_client_new(&s->http, out);
}

static void client_give(s3_store *s, ns_http_client *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    if (s->n_pool < S3_POOL_MAX) {
        s->pool[s->n_pool++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    ns_http_client_free(c);
}

/* ---- minimal XML (S3 answers: flat elements without attributes, entities only) ----
 *
 * Why not an XML library: S3's answers are small, flat and fixed-shape; we need three element names from
 * a list and two from an error. Text is taken only between a literal "<Name>" and the next "</Name>", must
 * not contain '<', and has its five predefined entities and numeric references decoded (ASCII only); the
 * names it yields are then checked like any other object name. Anything else is NS_E_FORMAT. */

/* Find the next <tag>...</tag> at or after the cursor; the inner text goes to *inner and the cursor moves
 * past the end tag. NS_E_NOT_FOUND if there is no further <tag>. */
static int xml_next(ns_cur *c, const char *tag, ns_cur *inner)
{
    char open[64], close[66];
    size_t ol, cl, skip;
    const uint8_t *p, *q, *dummy;

    ol = (size_t)snprintf(open, sizeof(open), "<%s>", tag);
    cl = (size_t)snprintf(close, sizeof(close), "</%s>", tag);
    if (ol >= sizeof(open) || cl >= sizeof(close))
        return NS_E_INVAL;
    p = c->len ? memmem(c->p, c->len, open, ol) : NULL;
    if (p == NULL)
        return NS_E_NOT_FOUND;
    skip = (size_t)(p - c->p) + ol;
    if (ns_cur_bytes(c, skip, &dummy) != 0)
        return NS_E_FORMAT;
    q = c->len ? memmem(c->p, c->len, close, cl) : NULL;
    if (q == NULL)
        return NS_E_FORMAT;
    if (ns_cur_sub(c, (size_t)(q - c->p), inner) != 0 || ns_cur_bytes(c, cl, &dummy) != 0)
        return NS_E_FORMAT;
    return 0;
}

/* Decode the text of an element into out (NUL-terminated, at most size-1 bytes). */
static int xml_text(ns_cur t, char *out, size_t size)
{
    static const struct {
        const char *name;
        char ch;
    } ents[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
    size_t o = 0;
    uint8_t ch;

    while (t.len > 0) {
        if (ns_cur_u8(&t, &ch) != 0)
            return NS_E_FORMAT;
        if (ch == '<')
            return NS_E_FORMAT;
        if (ch == '&') {
            size_t k;
            for (k = 0; k < sizeof(ents) / sizeof(ents[0]); k++) {
                size_t n = strlen(ents[k].name);
                const uint8_t *d;
                if (t.len >= n && memcmp(t.p, ents[k].name, n) == 0) {
                    if (ns_cur_bytes(&t, n, &d) != 0)
                        return NS_E_FORMAT;
                    ch = (uint8_t)ents[k].ch;
                    break;
                }
            }
            if (k == sizeof(ents) / sizeof(ents[0])) {
                /* &#NN; or &#xHH; (ASCII only: names outside it are never valid object names anyway) */
                unsigned long v = 0;
                bool hex = false;
                uint8_t d;
                if (ns_cur_u8(&t, &d) != 0 || d != '#')
                    return NS_E_FORMAT;
                if (t.len > 0 && (t.p[0] == 'x' || t.p[0] == 'X')) {
                    hex = true;
                    if (ns_cur_u8(&t, &d) != 0)
                        return NS_E_FORMAT;
                }
                for (int digits = 0;; digits++) {
                    if (ns_cur_u8(&t, &d) != 0 || digits > 6)
                        return NS_E_FORMAT;
                    if (d == ';' && digits > 0)
                        break;
                    if (d >= '0' && d <= '9')
                        v = v * (hex ? 16 : 10) + (unsigned long)(d - '0');
                    else if (hex && d >= 'a' && d <= 'f')
                        v = v * 16 + (unsigned long)(d - 'a' + 10);
                    else if (hex && d >= 'A' && d <= 'F')
                        v = v * 16 + (unsigned long)(d - 'A' + 10);
                    else
                        return NS_E_FORMAT;
                }
                if (v == 0 || v > 0x7f)
                    return NS_E_FORMAT;
                ch = (uint8_t)v;
            }
        }
        if (o + 1 >= size)
            return NS_E_TOO_LARGE;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return 0;
}

/* Code and Message of an S3 error body, printable ASCII only, cut to fit; "" when absent. */
static void s3_error_fields(const ns_http_resp *resp, char *code, size_t csize, char *msg, size_t msize)
{
    ns_cur c, inner;

    code[0] = msg[0] = '\0';
    if (resp == NULL || resp->body == NULL || resp->body->len == 0)
        return;
    c = ns_cur_init(resp->body->data, resp->body->len);
    if (xml_next(&c, "Code", &inner) == 0 && xml_text(inner, code, csize) != 0)
        code[0] = '\0';
    c = ns_cur_init(resp->body->data, resp->body->len);
    if (xml_next(&c, "Message", &inner) == 0 && xml_text(inner, msg, msize) != 0)
        msg[0] = '\0';
    for (char *p = code; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
}

/* Log an S3 answer we cannot use, naming bucket, key (or list prefix), status and S3's error Code and
 * Message; NS_E_STORAGE. `name` is the object name or list prefix; the S3 key adds the store's prefix. */
static int s3_fail(const s3_store *s, const char *op, const char *name, const ns_http_resp *resp)
{
    char code[128], msg[256];

    s3_error_fields(resp, code, sizeof(code), msg, sizeof(msg));
    ns_log(NS_LOG_ERROR, "storage: s3 %s bucket '%s' %s '%s%s': HTTP %ld%s%s%s%s%s", op, s->bucket,
           strcmp(op, "LIST") == 0 ? "prefix" : "key", s->prefix, name, resp->status, code[0] ? " " : "",
           code, msg[0] ? " (" : "", msg, msg[0] ? ")" : "");
    return NS_E_STORAGE;
}

/* ---- requests ---- */

/* Sign and send one request with a client from the pool. */
static int s3_do(s3_store *s, const char *method, const char *url, const ns_http_header *hs, size_t nh,
                 const uint8_t *body, size_t n, size_t max_body, bool no_retry, ns_http_resp **out)
{
    ns_aws_creds *creds = NULL;
    ns_sigv4_signed *sig = NULL;
    ns_http_client *c = NULL;
    ns_sigv4_params sp;
    ns_http_req rq;
    int r = NS_E_INTERNAL;

    memset(&rq, 0, sizeof(rq));
    rq.method = method;
    rq.url = url;
    rq.headers = hs;
    rq.n_headers = nh;
    rq.body = body;
    rq.body_len = n;
    rq.max_body = max_body;
    rq.no_retry = no_retry;
    if ((r = ns_aws_creds_get(s->creds, &creds)) != 0) {
        if (r != NS_E_NOMEM)
            r = NS_E_CONFIG;
        goto out;
    }
    sp.service = "s3";
    sp.region = s->region;
    sp.when = time(NULL);
    sp.unsigned_payload = false;
    if ((r = ns_sigv4_sign(&sp, creds, &rq, &sig)) != 0)
        goto out;
    rq.headers = sig->headers;
    rq.n_headers = sig->n_headers;
    if ((r = client_take(s, &c)) != 0)
        goto out;
    r = ns_http_do(c, &rq, out);
out:
    client_give(s, c);
    ns_sigv4_signed_free(sig);
    ns_aws_creds_free(creds);
    return r;
}

/* The URL of object `name`: base + "/" + encoded(prefix + name). */
static int object_url(const s3_store *s, const char *name, char *out, size_t size)
{
    char *key = NULL, *enc = NULL;
    int r = NS_E_INTERNAL;

    if (asprintf(&key, "%s%s", s->prefix, name) < 0) {
        key = NULL;
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = ns_sigv4_uri_encode(key, strlen(key), true, &enc)) != 0)
        goto out;
    if ((size_t)snprintf(out, size, "%s/%s", s->base, enc) >= size) {
        r = NS_E_TOO_LARGE;
        goto out;
    }
    r = 0;
out:
    free(key);
    free(enc);
    return r;
}

/* ---- operations ---- */

static int s3_get(void *state, const char *name, size_t max, ns_buf **data, char **version)
{
    s3_store *s = state;
    ns_http_resp *resp = NULL;
    ns_buf *b = NULL;
    char url[S3_URL_MAX];
    const char *etag;
    char *ver = NULL;
    int r = NS_E_INTERNAL;

    if ((r = object_url(s, name, url, sizeof(url))) != 0)
        goto out;
    /* Room for an error body even when max is small; the object itself is held to max below. */
    r = s3_do(s, data != NULL ? "GET" : "HEAD", url, NULL, 0, NULL, 0,
              max > S3_ERR_BODY_MAX ? max : S3_ERR_BODY_MAX, false, &resp);
    if (r == NS_E_TOO_LARGE && data != NULL)
        goto out;
    if (r != 0) {
        r = r == NS_E_NOMEM ? r : r == NS_E_CONFIG ? r : NS_E_STORAGE;
        goto out;
    }
    if (resp->status == 404) {
        r = NS_E_NOT_FOUND;
        goto out;
    }
    if (resp->status != 200) {
        r = s3_fail(s, data != NULL ? "GET" : "HEAD", name, resp);
        goto out;
    }
    if (data != NULL && resp->body->len > max) {
        r = NS_E_TOO_LARGE;
        goto out;
    }
    etag = ns_http_resp_header_get(resp, "ETag");
    if (version != NULL) {
        if (etag == NULL || etag[0] == '\0') {
            ns_log(NS_LOG_ERROR, "storage: s3 GET bucket '%s' key '%s': the answer has no ETag", s->bucket,
                   name);
            r = NS_E_STORAGE;
            goto out;
        }
        if ((ver = strdup(etag)) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
    }
    if (data != NULL) {
        b = resp->body;
        resp->body = NULL;
        b->max = max;
        *data = b;
        b = NULL;
    }
    if (version != NULL) {
        *version = ver;
        ver = NULL;
    }
    r = 0;
out:
    ns_buf_free(b);
    free(ver);
    ns_http_resp_free(resp);
    return r;
}

/* After a retried conditional PUT answered 412: is the object now exactly what we sent? */
static bool landed_anyway(s3_store *s, const char *name, const uint8_t *p, size_t n)
{
    ns_buf *cur = NULL;
    bool same = false;

    if (s3_get(s, name, n, &cur, NULL) == 0)
        same = cur->len == n && (n == 0 || memcmp(cur->data, p, n) == 0);
    ns_buf_free(cur);
    return same;
}

/* The two forms of an entity-tag: `"x"` (RFC 9110) and `x`. Either is accepted as input. */
static int etag_form(const char *etag, bool bare, char *out, size_t size)
{
    size_t n = strlen(etag);
    int w;

    if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"') {
        etag++;
        n -= 2;
    }
    if (n == 0 || memchr(etag, '"', n) != NULL)
        return NS_E_INVAL;
    w = bare ? snprintf(out, size, "%.*s", (int)n, etag) : snprintf(out, size, "\"%.*s\"", (int)n, etag);
    if (w < 0 || (size_t)w >= size)
        return NS_E_TOO_LARGE;
    return 0;
}

static bool bare_get(s3_store *s)
{
    bool b;

    pthread_mutex_lock(&s->lock);
    b = s->if_match_bare;
    pthread_mutex_unlock(&s->lock);
    return b;
}

static void bare_set(s3_store *s, bool b)
{
    pthread_mutex_lock(&s->lock);
    s->if_match_bare = b;
    pthread_mutex_unlock(&s->lock);
}

/* After a 412 to an If-Match PUT: is the object's ETag still the one we sent (quotes aside)? Then the 412
 * was about the form of the header, not a change. */
static bool etag_unchanged(s3_store *s, const char *name, const char *if_match)
{
    char *cur = NULL;
    char a[512], b[512];
    bool same = false;

    if (s3_get(s, name, 0, NULL, &cur) == 0 && etag_form(cur, true, a, sizeof(a)) == 0 &&
        etag_form(if_match, true, b, sizeof(b)) == 0)
        same = strcmp(a, b) == 0;
    free(cur);
    return same;
}

/* One PUT of the object with the given conditional header (or none); the answer goes to *resp. */
static int put_once(s3_store *s, const char *url, const char *hname, const char *hval, const uint8_t *p,
                    size_t n, ns_http_resp **resp)
{
    ns_http_header h[1];
    size_t nh = 0;
    int r;

    if (hname != NULL)
        h[nh++] = (ns_http_header){hname, hval};
    if ((r = s3_do(s, "PUT", url, h, nh, p, n, S3_ERR_BODY_MAX, false, resp)) != 0)
        r = r == NS_E_NOMEM || r == NS_E_CONFIG ? r : NS_E_STORAGE;
    return r;
}

static bool put_ok(const ns_http_resp *resp)
{
    return resp->status == 200 || resp->status == 201 || resp->status == 204;
}

static int s3_put(void *state, const char *name, const uint8_t *p, size_t n, enum ns_put_mode mode,
                  const char *if_match)
{
    s3_store *s = state;
    ns_http_resp *resp = NULL;
    const char *hname = NULL, *hval = NULL;
    char url[S3_URL_MAX], tag[512];
    bool bare = false;
    int r = NS_E_INTERNAL;

    switch (mode) {
    case NS_PUT_REPLACE:
        break;
    case NS_PUT_CREATE:
        hname = "If-None-Match";
        hval = "*";
        break;
    case NS_PUT_IF_MATCH:
        if (if_match == NULL || if_match[0] == '\0' || strpbrk(if_match, "\r\n") != NULL) {
            r = NS_E_INVAL;
            goto out;
        }
        bare = bare_get(s);
        if ((r = etag_form(if_match, bare, tag, sizeof(tag))) != 0) {
            r = NS_E_INVAL;
            goto out;
        }
        hname = "If-Match";
        hval = tag;
        break;
    default:
        r = NS_E_INVAL;
        goto out;
    }
    if ((r = object_url(s, name, url, sizeof(url))) != 0)
        goto out;
    if ((r = put_once(s, url, hname, hval, p, n, &resp)) != 0)
        goto out;
    if (put_ok(resp)) {
        r = 0;
        goto out;
    }
    if (mode != NS_PUT_REPLACE && resp->status == 412 && resp->attempts > 1 && landed_anyway(s, name, p, n)) {
        ns_log(NS_LOG_INFO, "storage: s3 PUT bucket '%s' key '%s': an earlier attempt had written it",
               s->bucket, name);
        r = 0;
        goto out;
    }
    if (mode == NS_PUT_IF_MATCH && resp->status == 412 && etag_unchanged(s, name, if_match)) {
        /* The 412 was about the quotes (see the top of this file): the other form, once. */
        bool alt = !bare;
        if ((r = etag_form(if_match, alt, tag, sizeof(tag))) != 0)
            goto out;
        ns_http_resp_free(resp);
        resp = NULL;
        if ((r = put_once(s, url, hname, tag, p, n, &resp)) != 0)
            goto out;
        if (put_ok(resp)) {
            ns_log(NS_LOG_INFO,
                   "storage: s3 bucket '%s': the endpoint wants If-Match %s quotes; using that from now on",
                   s->bucket, alt ? "without" : "with");
            bare_set(s, alt);
            r = 0;
            goto out;
        }
        if (resp->status == 412 && resp->attempts > 1 && landed_anyway(s, name, p, n)) {
            bare_set(s, alt);
            r = 0;
            goto out;
        }
    }
    if (mode != NS_PUT_REPLACE && (resp->status == 412 || resp->status == 409)) {
        r = mode == NS_PUT_CREATE ? NS_E_EXISTS : NS_E_CONFLICT;
        goto out;
    }
    if (mode == NS_PUT_IF_MATCH && resp->status == 404) {
        r = NS_E_NOT_FOUND;
        goto out;
    }
    r = s3_fail(s, "PUT", name, resp);
out:
    ns_http_resp_free(resp);
    return r;
}

static int s3_del(void *state, const char *name)
{
    s3_store *s = state;
    ns_http_resp *resp = NULL;
    char url[S3_URL_MAX];
    int r = NS_E_INTERNAL;

    /* S3 answers DELETE with 204 whether or not the key exists; the contract wants NS_E_NOT_FOUND. */
    if ((r = s3_get(s, name, 0, NULL, NULL)) != 0)
        goto out;
    if ((r = object_url(s, name, url, sizeof(url))) != 0)
        goto out;
    if ((r = s3_do(s, "DELETE", url, NULL, 0, NULL, 0, S3_ERR_BODY_MAX, false, &resp)) != 0) {
        r = r == NS_E_NOMEM || r == NS_E_CONFIG ? r : NS_E_STORAGE;
        goto out;
    }
    if (resp->status == 204 || resp->status == 200) {
        r = 0;
        goto out;
    }
    if (resp->status == 404) {
        r = NS_E_NOT_FOUND;
        goto out;
    }
    r = s3_fail(s, "DELETE", name, resp);
out:
    ns_http_resp_free(resp);
    return r;
}

/* One ListObjectsV2 page: keys appended to names (store prefix removed, invalid names skipped), the next
 * continuation token (malloc'd) in *next, or NULL on the last page. */
static int list_page(s3_store *s, const char *full_prefix, const char *token, ns_strv *names, char **next)
{
    ns_http_resp *resp = NULL;
    char *ep = NULL, *et = NULL, *url = NULL;
    char key[NS_NAME_MAX + 1024], flag[16];
    size_t plen = strlen(s->prefix), fplen = strlen(full_prefix);
    ns_cur c, contents, inner;
    bool truncated = false;
    int r = NS_E_INTERNAL;

    *next = NULL;
    if ((r = ns_sigv4_uri_encode(full_prefix, fplen, false, &ep)) != 0)
        goto out;
    if (token != NULL && (r = ns_sigv4_uri_encode(token, strlen(token), false, &et)) != 0)
        goto out;
    if (asprintf(&url, "%s%s?list-type=2&max-keys=1000&prefix=%s%s%s", s->base, s->path_style ? "" : "/", ep,
                 et != NULL ? "&continuation-token=" : "", et != NULL ? et : "") < 0) {
        url = NULL;
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = s3_do(s, "GET", url, NULL, 0, NULL, 0, S3_LIST_BODY_MAX, false, &resp)) != 0) {
        r = r == NS_E_NOMEM || r == NS_E_CONFIG ? r : NS_E_STORAGE;
        goto out;
    }
    if (resp->status != 200) {
        r = s3_fail(s, "LIST", full_prefix + plen, resp);
        goto out;
    }
    c = ns_cur_init(resp->body->data, resp->body->len);
    for (;;) {
        r = xml_next(&c, "Contents", &contents);
        if (r == NS_E_NOT_FOUND)
            break;
        if (r != 0)
            goto bad;
        if ((r = xml_next(&contents, "Key", &inner)) != 0)
            goto bad;
        r = xml_text(inner, key, sizeof(key));
        if (r == NS_E_TOO_LARGE) {
            ns_log(NS_LOG_WARN, "storage: s3 bucket '%s': skipping a key longer than %zu bytes", s->bucket,
                   sizeof(key) - 1);
            continue;
        }
        if (r != 0)
            goto bad;
        if (strncmp(key, full_prefix, fplen) != 0) {
            ns_log(NS_LOG_WARN, "storage: s3 bucket '%s': skipping key '%.200s' outside the requested prefix",
                   s->bucket, key);
            continue;
        }
        if (ns_store_name_check(key + plen) != 0) {
            ns_log(NS_LOG_WARN, "storage: s3 bucket '%s': skipping key '%.200s': not a valid object name",
                   s->bucket, key);
            continue;
        }
        if ((r = ns_strv_push(names, key + plen)) != 0)
            goto out;
    }
    /* The flags come after the contents in S3's answers, but look from the start: order is not promised. */
    c = ns_cur_init(resp->body->data, resp->body->len);
    if (xml_next(&c, "IsTruncated", &inner) == 0) {
        if (xml_text(inner, flag, sizeof(flag)) != 0)
            goto bad;
        truncated = strcmp(flag, "true") == 0;
    }
    if (truncated) {
        char tok[2048];
        c = ns_cur_init(resp->body->data, resp->body->len);
        if (xml_next(&c, "NextContinuationToken", &inner) != 0 || xml_text(inner, tok, sizeof(tok)) != 0 ||
            tok[0] == '\0') {
            ns_log(NS_LOG_ERROR,
                   "storage: s3 LIST bucket '%s': truncated answer without a continuation token", s->bucket);
            r = NS_E_STORAGE;
            goto out;
        }
        if ((*next = strdup(tok)) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
    }
    r = 0;
    goto out;
bad:
    ns_log(NS_LOG_ERROR, "storage: s3 LIST bucket '%s' prefix '%s': malformed ListObjectsV2 answer",
           s->bucket, full_prefix);
    r = NS_E_STORAGE;
out:
    ns_http_resp_free(resp);
    free(ep);
    free(et);
    free(url);
    return r;
}

static int s3_list(void *state, const char *prefix, ns_strv *out)
{
    s3_store *s = state;
    ns_strv names = NS_STRV_INIT;
    char *full = NULL, *token = NULL, *next = NULL;
    int r = NS_E_INTERNAL;

    if (asprintf(&full, "%s%s", s->prefix, prefix) < 0) {
        full = NULL;
        r = NS_E_NOMEM;
        goto out;
    }
    for (unsigned page = 0;; page++) {
        if (page == S3_LIST_PAGES) {
            ns_log(NS_LOG_ERROR, "storage: s3 LIST bucket '%s': more than %u pages", s->bucket,
                   S3_LIST_PAGES);
            r = NS_E_STORAGE;
            goto out;
        }
        if ((r = list_page(s, full, token, &names, &next)) != 0)
            goto out;
        free(token);
        token = next;
        next = NULL;
        if (token == NULL)
            break;
    }
    ns_strv_sort(&names);
    ns_strv_clear(out);
    *out = names;
    names = (ns_strv)NS_STRV_INIT;
    r = 0;
out:
    ns_strv_clear(&names);
    free(full);
    free(token);
    free(next);
    return r;
}

static void s3_close(void *state)
{
    s3_store *s = state;

    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_pool; i++)
        ns_http_client_free(s->pool[i]);
    ns_aws_creds_provider_free(s->creds);
    pthread_mutex_destroy(&s->lock);
    free(s->bucket);
    free(s->prefix);
    free(s->region);
    free(s->base);
    free((char *)s->http.ca_file);
    free(s);
}

static int s3_open(const ns_storage_config *cfg, void **state)
{
    s3_store *s = NULL;
    ns_aws_creds_opts co;
    const ns_s3_creds_config *cc = &cfg->creds;
    char *endpoint = NULL;
    const char *host;
    size_t elen;
    bool https;
    int r = NS_E_INTERNAL;

    if (cfg->bucket == NULL || cfg->bucket[0] == '\0') {
        ns_log(NS_LOG_ERROR, "storage: backend 's3' needs storage.bucket (line %d)", cfg->line);
        r = NS_E_CONFIG;
        goto out;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        s = NULL;
        goto out;
    }
    s->path_style = cfg->path_style;
    if ((s->bucket = strdup(cfg->bucket)) == NULL ||
        (s->prefix = strdup(cfg->prefix ? cfg->prefix : "")) == NULL ||
        (s->region = strdup(cfg->region ? cfg->region : "us-east-1")) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if (cfg->endpoint != NULL)
        endpoint = strdup(cfg->endpoint);
    else if (asprintf(&endpoint, "https://s3.%s.amazonaws.com", s->region) < 0)
        endpoint = NULL;
    if (endpoint == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    elen = strlen(endpoint);
    while (elen > 0 && endpoint[elen - 1] == '/')
        endpoint[--elen] = '\0';
    https = strncmp(endpoint, "https://", 8) == 0;
    host = endpoint + (https ? 8 : 7);
    if (s->path_style)
        r = asprintf(&s->base, "%s/%s", endpoint, s->bucket);
    else
        r = asprintf(&s->base, "%s://%s.%s", https ? "https" : "http", s->bucket, host);
    if (r < 0) {
        s->base = NULL;
        r = NS_E_NOMEM;
        goto out;
    }
    if (!https)
        ns_log(NS_LOG_INFO, "storage: s3 endpoint %s is plain http", endpoint);

    ns_http_opts_init(&s->http);
    s->http.connect_timeout_ms =
        cfg->connect_timeout_ms ? cfg->connect_timeout_ms : s->http.connect_timeout_ms;
    s->http.timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : s->http.timeout_ms;
    s->http.retries = cfg->retries <= NS_HTTP_MAX_RETRIES ? cfg->retries : NS_HTTP_MAX_RETRIES;
    s->http.retry_base_ms = cfg->retry_base_ms;
    if (cfg->ca_file != NULL && (s->http.ca_file = strdup(cfg->ca_file)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }

    memset(&co, 0, sizeof(co));
    co.access_key_id = cc->access_key_id;
    co.secret_access_key = cc->secret_access_key;
    co.session_token = cc->session_token;
    co.profile = cc->profile;
    co.credentials_file = cc->credentials_file;
    co.imds_endpoint = cc->imds_endpoint;
    /* Without a credentials block, imds is on (the chain's default). */
    co.imds_disabled = cfg->has_credentials && !cc->imds;
    if ((r = ns_aws_creds_provider_new(&co, &s->creds)) != 0) {
        if (r == NS_E_INVAL) {
            ns_log(NS_LOG_ERROR,
                   "storage: s3 credentials (line %d): access_key_id and secret_access_key go "
                   "together",
                   cfg->line);
            r = NS_E_CONFIG;
        }
        goto out;
    }
    *state = s;
    s = NULL;
    r = 0;
out:
    free(endpoint);
    s3_close(s);
    return r;
}

const ns_store_ops ns_store_s3_ops = {
    .name = "s3",
    .open = s3_open,
    .get = s3_get,
    .put = s3_put,
    .list = s3_list,
    .del = s3_del,
    .close = s3_close,
};
