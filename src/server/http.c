#include "ns-build.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "common/log.h"
#include "common/timeutil.h"
#include "server/http.h"
#include "server/refusals.h"
#include "service/request.h"

typedef struct ns_worker {
    ns_server *srv;
    pthread_t th;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *drain;
    struct evbuffer *log; /* request lines not yet written (see log_flush) */
    struct event *log_ev;
    struct event *resume;      /* re-enables accepting after a pause (accept_failed, new_bev) */
    long long backoff_ms;      /* the current pause; doubles while failures follow each other */
    long long last_failure_ms; /* when accept() last failed */
    int started;
} ns_worker;

/* The worker whose thread this is (accept_failed gets the evhttp, not the worker). */
static _Thread_local ns_worker *this_worker;

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000
#define LOG_EVERY_MS   1000

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* At most one line per LOG_EVERY_MS per kind, whatever the number of threads: a flood of connections or of
 * accept() failures must not become a flood of log lines. */
static int log_due(atomic_llong *last_ms)
{
    long long now = mono_ms(), last = atomic_load(last_ms);

    return now - last >= LOG_EVERY_MS && atomic_compare_exchange_strong(last_ms, &last, now);
}

/* Request lines are gathered per thread and written to stderr with one write() from a zero-length timer:
 * it runs in the loop's next pass after the answers' writes, so a line costs no syscall of its own on the
 * request's path, and lines of requests served in the same pass share one write. At most one pass of
 * lines is lost if the process dies. */
static void log_flush(evutil_socket_t fd, short what, void *arg)
{
    ns_worker *w = arg;
    size_t n;
    (void)fd;
    (void)what;
    /* Whole lines, at most PIPE_BUF bytes per write(): atomic on a pipe too, so threads never mix lines. */
    while ((n = evbuffer_get_length(w->log)) > 0) {
        const char *p = (const char *)evbuffer_pullup(w->log, (ev_ssize_t)(n < PIPE_BUF ? n : PIPE_BUF));
        const char *nl;
        ssize_t k;
        if (n > PIPE_BUF)
            n = PIPE_BUF;
        if (p == NULL)
            break;
        if ((nl = memrchr(p, '\n', n)) != NULL)
            n = (size_t)(nl - p) + 1;
        if ((k = write(STDERR_FILENO, p, n)) < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        (void)evbuffer_drain(w->log, (size_t)k);
    }
    (void)evbuffer_drain(w->log, evbuffer_get_length(w->log)); /* never grows on a stuck stderr */
}

static int conn_idx = -1;

/* Called by OpenSSL when a connection's SSL object is freed: one connection fewer. */
static void conn_gone(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (ptr != NULL)
        atomic_fetch_sub(&((ns_server *)ptr)->conns, 1);
}

int ns_http_listen(const char *listen_addr, evutil_socket_t *fd, unsigned *port)
{
    char host[80];
    const char *colon = strrchr(listen_addr, ':');
    struct addrinfo hints, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    evutil_socket_t s = -1;
    size_t hn;
    int one = 1, r = NS_E_CONFIG;

    if (colon == NULL || (hn = (size_t)(colon - listen_addr)) >= sizeof(host))
        return NS_E_CONFIG;
    memcpy(host, listen_addr, hn);
    host[hn] = '\0';
    if (host[0] == '[' && hn > 2) {
        memmove(host, host + 1, hn - 2);
        host[hn - 2] = '\0';
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | (strcmp(host, "localhost") == 0 ? 0 : AI_NUMERICHOST);
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || ai == NULL) {
        ns_log(NS_LOG_ERROR, "server.listen %s: not an address", listen_addr);
        goto out;
    }
    if ((s = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        /* Inherited by accepted sockets on Linux: libevent writes a TLS record for the headers and one for
         * the body, and Nagle's algorithm with delayed ACKs would hold the second for 40 ms. */
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        bind(s, ai->ai_addr, ai->ai_addrlen) != 0 || listen(s, 1024) != 0 ||
        evutil_make_socket_nonblocking(s) != 0 || getsockname(s, (struct sockaddr *)&ss, &sl) != 0) {
        ns_log(NS_LOG_ERROR, "server.listen %s: %s", listen_addr, strerror(errno));
        goto out;
    }
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    *fd = s;
    s = -1;
    r = 0;
out:
    if (s >= 0)
        close(s);
    if (ai != NULL)
        freeaddrinfo(ai);
    return r;
}

void ns_http_set_ctx(ns_server *srv, SSL_CTX *ctx)
{
    SSL_CTX *old;

    pthread_mutex_lock(&srv->ctx_mu);
    old = srv->ctx;
    srv->ctx = ctx;
    pthread_mutex_unlock(&srv->ctx_mu);
    SSL_CTX_free(old); /* connections hold their own reference */
}

/* A new connection's bufferevent. Over the connection cap the connection is accepted and closed at once
 * (refusals.c shuts its socket down right after accept, so it does not hold a descriptor until
 * header_timeout); should that watch be missing, its TLS handshake is made to fail (no protocol version
 * left), which closes it too. Returning NULL is not an option: evhttp would then serve the connection
 * without TLS. */
static struct bufferevent *new_bev(struct event_base *base, void *arg)
{
    ns_worker *w = arg;
    ns_server *srv = w->srv;
    struct bufferevent *bev;
    SSL *ssl;
    int n, over;

    pthread_mutex_lock(&srv->ctx_mu);
    ssl = SSL_new(srv->ctx);
    pthread_mutex_unlock(&srv->ctx_mu);
    if (ssl == NULL)
        return NULL;
    n = atomic_fetch_add(&srv->conns, 1) + 1;
    SSL_set_ex_data(ssl, conn_idx, srv);
    if ((over = (unsigned)n > srv->svc->cfg->server.max_connections || atomic_load(&srv->stopping))) {
        atomic_fetch_add(&srv->svc->metrics.over_limit, 1);
        atomic_fetch_add(&srv->over_unlogged, 1);
        if (log_due(&srv->over_logged_ms))
            ns_log(NS_LOG_WARN,
                   "connection refused: %d connections open (server.max_connections %u); %lu refused since "
                   "the last such line",
                   n - 1, srv->svc->cfg->server.max_connections, atomic_exchange(&srv->over_unlogged, 0));
        SSL_set_max_proto_version(ssl, TLS1_2_VERSION);
        /* libevent accepts in a loop until accept() fails: in a burst, connections over the cap would
         * take descriptors faster than they are closed (one loop pass later), up to the process's limit,
         * and the store's and the token's files would fail to open meanwhile. So this thread accepts no
         * more in this pass; the others wait in the backlog for the next one. */
        if (w->bound != NULL && !evtimer_pending(w->resume, NULL)) {
            struct timeval now = {0, 0};
            evconnlistener_disable(evhttp_bound_socket_get_listener(w->bound));
            evtimer_add(w->resume, &now);
        }
    }
    bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE | BEV_OPT_THREADSAFE);
    if (bev == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    ns_refusals_watch(srv, ssl, bev, over);
    return bev;
}

static const struct route {
    const char *path;
    enum evhttp_cmd_type method;
    enum ns_endpoint ep;
} routes[] = {
    {"/health", EVHTTP_REQ_GET, NS_EP_HEALTH},
    {"/v1/register", EVHTTP_REQ_POST, NS_EP_REGISTER},
    {"/v1/agent/files", EVHTTP_REQ_GET, NS_EP_FILES},
    {"/v1/agent/renew", EVHTTP_REQ_POST, NS_EP_AGENT_RENEW},
    {"/v1/operator/renew", EVHTTP_REQ_POST, NS_EP_OPERATOR_RENEW},
    {"/metrics", EVHTTP_REQ_GET, NS_EP_METRICS},
    {"/v1/ca", EVHTTP_REQ_GET, NS_EP_CA},
};

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    default:
        return "OTHER";
    }
}

static void wipe_ref(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    ns_buf_free(arg);
}

static void answer_ref(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    ns_answer_put(arg);
}

/* A printable copy of s for the log: at most n-1 bytes, blanks and control bytes as '_'. */
static void log_safe(const char *s, char *out, size_t n)
{
    size_t i;

    for (i = 0; s != NULL && s[i] != '\0' && i + 1 < n; i++)
        out[i] = ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f) ? '_' : s[i];
    if (i == 0 && n > 1)
        out[i++] = '-';
    out[i] = '\0';
}

static void send_reply(struct evhttp_request *req, ns_reply *rp)
{
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    struct evbuffer *out = evhttp_request_get_output_buffer(req);

    evhttp_add_header(oh, "Cache-Control", "no-store");
    if (rp->etag[0] != '\0')
        evhttp_add_header(oh, "ETag", rp->etag);
    if (rp->retry_after > 0) {
        char ra[24];
        snprintf(ra, sizeof(ra), "%d", rp->retry_after);
        evhttp_add_header(oh, "Retry-After", ra);
    }
    if (rp->status == 304) {
        evhttp_send_reply(req, 304, "Not Modified", NULL);
        return;
    }
    if (rp->error != NULL) {
        evhttp_add_header(oh, "Content-Type", "application/json");
        evbuffer_add_printf(out, "{\"error\":\"%s\",\"message\":\"%s\"}\n", rp->error, rp->message);
    } else if (rp->body != NULL) {
        ns_buf *b = rp->body;
        evhttp_add_header(oh, "Content-Type", rp->content_type != NULL ? rp->content_type : "text/plain");
        rp->body = NULL;
        /* The body may hold secrets: libevent sends it from our buffer, which is wiped when released. */
        if (evbuffer_add_reference(out, b->data, b->len, wipe_ref, b) != 0)
            ns_buf_free(b);
    } else if (rp->answer != NULL) {
        /* A cached answer (secure heap): sent by reference, released when libevent is done with it. */
        ns_answer *a = ns_answer_ref(rp->answer);
        evhttp_add_header(oh, "Content-Type", rp->content_type != NULL ? rp->content_type : "text/plain");
        if (evbuffer_add_reference(out, a->body->data, a->body->len, answer_ref, a) != 0)
            ns_answer_put(a);
    }
    evhttp_send_reply(req, rp->status, NULL, NULL);
}

/* evhttp queues the status line and headers and the body as separate evbuffer chains, and
 * bufferevent_openssl makes one SSL_write per chain: two TLS records and, with TCP_NODELAY, two segments
 * per answer, so the client wakes up twice. Before the write event runs, copy what is queued into one
 * secret buffer (the body may hold secrets) so that the answer leaves in one record and one write(). Up to
 * one record's worth (16 KiB); a larger answer is left as it is. */
static void one_record(struct bufferevent *bev)
{
    struct evbuffer *o = bev != NULL ? bufferevent_get_output(bev) : NULL;
    size_t n = o != NULL ? evbuffer_get_length(o) : 0;
    ns_buf *b = NULL;

    if (n == 0 || n > 16384 || evbuffer_peek(o, -1, NULL, NULL, 0) < 2 || ns_buf_new(n, true, &b) != 0)
        return;
    /* With EV_WRITE off, adding to the output does not write at once (so no error callback runs here). */
    bufferevent_disable(bev, EV_WRITE);
    if (ns_buf_reserve(b, n) == 0 && evbuffer_copyout(o, b->data, n) == (ev_ssize_t)n) {
        b->len = n;
        /* The copy goes behind the original before the original is dropped: a failure changes nothing. */
        if (evbuffer_add_reference(o, b->data, n, wipe_ref, b) == 0) {
            b = NULL;
            (void)evbuffer_drain(o, n);
        }
    }
    bufferevent_enable(bev, EV_WRITE);
    ns_buf_free(b);
}

/* RFC 9110 §5.6.2: a header name is a token. */
static int is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s != '\0'; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              strchr("!#$%&'*+-.^_`|~", *s) != NULL))
            return 0;
    return 1;
}

/* How the request's body was delimited, checked before anything looks at the body. libevent 2.1.12 takes
 * the first Content-Length and reads it with strtoll: a second, different one, "+2", "-0", "0002" and
 * leading control characters all pass, and "Content-Length : 2" (a blank before the colon) is kept
 * under another name and ignored. A front end that read any of these otherwise would see other request
 * boundaries than we do (request smuggling). So (RFC 9112 §6.3, RFC 9110 §8.6): one Content-Length at
 * most, plain digits without a leading zero (blanks around it are the header's own); not together with
 * Transfer-Encoding (RFC 9112 §6.1: we may refuse, and must close); every header name a token (RFC 9112
 * §5.1: no blank before the colon). Returns NS_REFUSED_N when the request is fine. doc/server.md, "Limits".
 */
static enum ns_refusal framing_error(const struct evkeyvalq *h)
{
    const struct evkeyval *kv;
    int lengths = 0, chunks = 0;

    for (kv = h->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (!is_token(kv->key))
            return NS_REFUSED_MALFORMED;
        if (evutil_ascii_strcasecmp(kv->key, "Transfer-Encoding") == 0) {
            chunks = 1;
        } else if (evutil_ascii_strcasecmp(kv->key, "Content-Length") == 0) {
            const char *v = kv->value + strspn(kv->value, " \t");
            size_t n = strspn(v, "0123456789");
            if (n == 0 || (v[0] == '0' && n > 1) || v[n + strspn(v + n, " \t")] != '\0' || ++lengths > 1)
                return NS_REFUSED_BAD_CONTENT_LENGTH;
        }
    }
    return lengths > 0 && chunks ? NS_REFUSED_BAD_CONTENT_LENGTH : NS_REFUSED_N;
}

static void text_reply(ns_reply *rp, int status, const char *text, const char *type)
{
    rp->status = status;
    rp->content_type = type;
    if (ns_buf_from(text, strlen(text), strlen(text), false, &rp->body) != 0)
        ns_reply_error(rp, 503);
}

static void handle(struct evhttp_request *req, void *arg)
{
    ns_worker *w = arg;
    ns_svc *svc = w->srv->svc;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
    SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
    X509 *cert = ssl != NULL ? SSL_get0_peer_certificate(ssl) : NULL;
    STACK_OF(X509) *chain = ssl != NULL ? SSL_get_peer_cert_chain(ssl) : NULL;
    const struct route *rt = NULL;
    ns_reply rp;
    size_t len = evbuffer_get_length(in);
    const uint8_t *body = NULL;
    char *peer_addr = NULL, lpath[96], subj[300], who[300];
    ev_uint16_t peer_port = 0;
    struct timespec t0, t1;
    unsigned long us;
    enum ns_refusal bad;
    int known = 0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(&rp, 0, sizeof(rp));
    if ((bad = framing_error(evhttp_request_get_input_headers(req))) != NS_REFUSED_N) {
        /* Refused like libevent's own refusals (a "refused" line, not a request line), and the connection
         * is closed after the answer: what follows may be another request as a front end saw it. */
        ns_refusals_refuse(bev, bad, 400);
        ns_reply_error(&rp, 400);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        ns_refusals_replying = 1;
        send_reply(req, &rp);
        ns_refusals_replying = 0;
        ns_reply_clear(&rp);
        return;
    }
    if (ssl == NULL) {
        /* new_bev could not make a TLS bufferevent (SSL_new or an allocation failed): libevent then reads
         * the connection in plain text. Nothing is ever served that way — not even /health — and the
         * connection is closed after this answer. */
        ns_log(NS_LOG_WARN, "a connection without TLS (its TLS set-up failed): refused and closed");
        ns_reply_error(&rp, 503);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        send_reply(req, &rp);
        ns_reply_clear(&rp);
        return;
    }
    if (evcon != NULL)
        evhttp_connection_get_peer(evcon, &peer_addr, &peer_port);
    for (size_t i = 0; path != NULL && i < sizeof(routes) / sizeof(routes[0]); i++)
        if (strcmp(path, routes[i].path) == 0) {
            known = 1;
            if (routes[i].method == m)
                rt = &routes[i];
        }
    if (!known) {
        ns_reply_error(&rp, 404);
    } else if (rt == NULL) {
        ns_reply_error(&rp, 405);
    } else if (len > NS_REQ_BODY_MAX) {
        ns_reply_error(&rp, 413);
    } else {
        if (len > 0 && (body = evbuffer_pullup(in, -1)) == NULL)
            ns_reply_error(&rp, 503);
        else if (rt->ep == NS_EP_HEALTH)
            text_reply(&rp, atomic_load(&svc->ready) ? 200 : 503,
                       atomic_load(&svc->ready) ? "ok\n" : "starting\n", "text/plain");
        else if (rt->ep == NS_EP_METRICS) {
            rp.status = 200;
            rp.content_type = "text/plain; version=0.0.4";
            if (ns_metrics_render(&svc->metrics, &rp.body) != 0)
                ns_reply_error(&rp, 503);
        } else if (rt->ep == NS_EP_REGISTER)
            ns_svc_register(svc, peer_addr, body, len, &rp);
        else if (rt->ep == NS_EP_AGENT_RENEW)
            ns_svc_renew(svc, cert, chain, "agent", body, len, &rp);
        else if (rt->ep == NS_EP_OPERATOR_RENEW)
            ns_svc_renew(svc, cert, chain, "operator", body, len, &rp);
        else if (rt->ep == NS_EP_CA)
            ns_svc_ca(svc, evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match"), &rp);
        else if (rt->ep == NS_EP_FILES)
            ns_svc_files(svc, cert, chain,
                         evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match"), &rp);
    }
    ns_refusals_replying = 1; /* what is queued now is our answer, not one of libevent's refusals */
    send_reply(req, &rp);
    one_record(bev);
    ns_refusals_replying = 0;
    /* From now on the connection waits for its next request: idle_timeout instead of header_timeout, and
     * the next request must be complete within idle_timeout + header_timeout (refusals.c). */
    if (evcon != NULL)
        evhttp_connection_set_timeout(evcon, (int)svc->cfg->server.idle_timeout);
    ns_refusals_answered(bev);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    us = (unsigned long)((t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000);
    ns_metrics_request(&svc->metrics, rt != NULL ? rt->ep : NS_EP_OTHER, rp.status, us);
    log_safe(path, lpath, sizeof(lpath));
    if (rp.peer.cn[0] != '\0') {
        snprintf(who, sizeof(who), "CN=%s,O=%s", rp.peer.cn, rp.peer.tenant);
        log_safe(who, subj, sizeof(subj));
    } else {
        strcpy(subj, "-");
    }
    /* method path status duration_ms peer role subject: never a body, a nonce or a header value. */
    if (evbuffer_get_length(w->log) == 0) {
        struct timeval now = {0, 0};
        event_add(w->log_ev, &now);
    }
    if (evbuffer_add_printf(w->log, "nstance-secretsd: request %s %s %d %lu.%lu %s:%u %s %s\n",
                            method_name(m), lpath, rp.status, us / 1000, (us % 1000) / 100,
                            peer_addr != NULL ? peer_addr : "-", (unsigned)peer_port,
                            rp.peer.role[0] != '\0' ? rp.peer.role : "-", subj) < 0)
        fprintf(stderr, "nstance-secretsd: request %s %s %d\n", method_name(m), lpath, rp.status);
    ns_reply_clear(&rp);
}

/* accept() failed; errno says why. libevent 2.1 retries at once while the listening socket is readable, so
 * without this callback a server out of file descriptors (EMFILE, ENFILE) spins at full CPU and writes a
 * warning per attempt. Instead: stop accepting for a while (100 ms, doubling up to 1 s while failures
 * follow each other), and shed the connection that is waiting by accepting it on the reserve descriptor
 * and closing it, so that its client learns at once instead of waiting in the backlog. One warning per
 * second at most, with the counts since the last one; every failure is counted in the metrics. */
static void accept_failed(struct evconnlistener *lev, void *arg)
{
    int e = errno;
    ns_worker *w = this_worker;
    ns_server *srv;
    struct timeval tv;
    long long now = mono_ms();
    evutil_socket_t c;
    (void)arg;

    if (w == NULL)
        return;
    srv = w->srv;
    evconnlistener_disable(lev);
    atomic_fetch_add(&srv->svc->metrics.accept_errors, 1);
    atomic_fetch_add(&srv->accept_unlogged, 1);
    if (e == EMFILE || e == ENFILE) {
        pthread_mutex_lock(&srv->reserve_mu);
        if (srv->reserve_fd >= 0) {
            close(srv->reserve_fd);
            srv->reserve_fd = -1;
        }
        if ((c = accept4(evconnlistener_get_fd(lev), NULL, NULL, SOCK_CLOEXEC)) >= 0) {
            close(c);
            atomic_fetch_add(&srv->svc->metrics.connections_shed, 1);
            atomic_fetch_add(&srv->shed_unlogged, 1);
        }
        srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        pthread_mutex_unlock(&srv->reserve_mu);
    }
    w->backoff_ms = now - w->last_failure_ms < 2 * w->backoff_ms + BACKOFF_MIN_MS
                        ? (w->backoff_ms * 2 < BACKOFF_MAX_MS ? w->backoff_ms * 2 : BACKOFF_MAX_MS)
                        : BACKOFF_MIN_MS;
    w->last_failure_ms = now;
    if (log_due(&srv->accept_logged_ms))
        ns_log(NS_LOG_WARN,
               "accept: %s; not accepting for %lld ms (since the last such line: %lu failures, %lu "
               "connections shed)",
               strerror(e), w->backoff_ms, atomic_exchange(&srv->accept_unlogged, 0),
               atomic_exchange(&srv->shed_unlogged, 0));
    tv.tv_sec = (time_t)(w->backoff_ms / 1000);
    tv.tv_usec = (suseconds_t)(w->backoff_ms % 1000) * 1000;
    if (evtimer_add(w->resume, &tv) != 0)
        evconnlistener_enable(lev);
}

static void resume_accepting(evutil_socket_t fd, short what, void *arg)
{
    ns_worker *w = arg;
    (void)fd;
    (void)what;
    if (w->bound != NULL) {
        pthread_mutex_lock(&w->srv->reserve_mu);
        if (w->srv->reserve_fd < 0) /* taken by another thread's file meanwhile: try again */
            w->srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        pthread_mutex_unlock(&w->srv->reserve_mu);
        evconnlistener_enable(evhttp_bound_socket_get_listener(w->bound));
    }
}

int ns_http_fd_limit(ns_server_config *sc)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)sc->max_connections + NS_HTTP_FD_MARGIN(sc->threads);

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0; /* nothing to check against */
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        struct rlimit up = rl;
        up.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl = up;
        ns_log(NS_LOG_INFO, "open files: soft limit %llu (server.max_connections %u + %u for the rest)",
               (unsigned long long)rl.rlim_cur, sc->max_connections, NS_HTTP_FD_MARGIN(sc->threads));
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        if (rl.rlim_cur <= NS_HTTP_FD_MARGIN(sc->threads)) {
            ns_log(NS_LOG_ERROR,
                   "open files: the limit is %llu (ulimit -n, hard limit %llu), and the server needs %u "
                   "besides its connections (server.threads %u)",
                   (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
                   NS_HTTP_FD_MARGIN(sc->threads), sc->threads);
            return NS_E_CONFIG;
        }
        ns_log(NS_LOG_WARN,
               "open files: the limit is %llu (ulimit -n, hard limit %llu): server.max_connections lowered "
               "from %u to %llu (%u descriptors are kept for the rest)",
               (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, sc->max_connections,
               (unsigned long long)(rl.rlim_cur - NS_HTTP_FD_MARGIN(sc->threads)),
               NS_HTTP_FD_MARGIN(sc->threads));
        sc->max_connections = (unsigned)(rl.rlim_cur - NS_HTTP_FD_MARGIN(sc->threads));
    }
    return 0;
}

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    ns_worker *w = arg;
    (void)fd;
    (void)what;
    if (atomic_load(&w->srv->conns) == 0 || ns_now_ms() >= atomic_load(&w->srv->drain_deadline_ms))
        event_base_loopexit(w->base, NULL);
}

/* Runs in the worker's thread (event_base_once from ns_http_stop). */
static void stop_accepting(evutil_socket_t fd, short what, void *arg)
{
    ns_worker *w = arg;
    struct timeval tv = {0, 100000};
    (void)fd;
    (void)what;
    if (w->resume != NULL)
        event_del(w->resume);
    if (w->bound != NULL) {
        evhttp_del_accept_socket(w->http, w->bound);
        w->bound = NULL;
    }
    if ((w->drain = event_new(w->base, -1, EV_PERSIST, drain_check, w)) != NULL)
        event_add(w->drain, &tv);
    else
        event_base_loopexit(w->base, NULL);
}

static void *worker_main(void *arg)
{
    ns_worker *w = arg;

    this_worker = w;
    event_base_dispatch(w->base);
    log_flush(-1, 0, w);
    return NULL;
}

int ns_http_start(ns_server *srv)
{
    const ns_server_config *sc = &srv->svc->cfg->server;

    if (conn_idx < 0 && (conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_gone)) < 0)
        return NS_E_CRYPTO;
    if (ns_refusals_init() != 0)
        return NS_E_CRYPTO;
    srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    srv->n_workers = sc->threads;
    if ((srv->workers = calloc(srv->n_workers, sizeof(*srv->workers))) == NULL)
        return NS_E_NOMEM;
    for (unsigned i = 0; i < srv->n_workers; i++) {
        ns_worker *w = &srv->workers[i];
        evutil_socket_t fd;
        w->srv = srv;
        if ((w->base = event_base_new()) == NULL || (w->http = evhttp_new(w->base)) == NULL ||
            (w->log = evbuffer_new()) == NULL || (w->log_ev = evtimer_new(w->base, log_flush, w)) == NULL ||
            (w->resume = evtimer_new(w->base, resume_accepting, w)) == NULL)
            return NS_E_NOMEM;
        w->backoff_ms = BACKOFF_MIN_MS;
        evhttp_set_bevcb(w->http, new_bev, w);
        evhttp_set_gencb(w->http, handle, w);
        /* libevent 2.1 has one timeout per connection, for reading and for waiting alike: header_timeout
         * until the first request is answered (the TLS handshake and the headers included), idle_timeout
         * after that (set in handle()). doc/server.md, "Limits". */
        evhttp_set_timeout(w->http, (int)sc->header_timeout);
        evhttp_set_max_body_size(w->http, NS_REQ_BODY_MAX);
        evhttp_set_max_headers_size(w->http, 16 * 1024);
        evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                                EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                                EVHTTP_REQ_PATCH);
        if ((fd = dup(srv->fd)) < 0 || (w->bound = evhttp_accept_socket_with_handle(w->http, fd)) == NULL) {
            ns_log(NS_LOG_ERROR, "cannot accept on the listening socket");
            return NS_E_INTERNAL;
        }
        evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(w->bound), accept_failed);
        if (pthread_create(&w->th, NULL, worker_main, w) != 0)
            return NS_E_INTERNAL;
        w->started = 1;
    }
    return 0;
}

void ns_http_stop(ns_server *srv, long grace_ms)
{
    atomic_store(&srv->stopping, 1);
    atomic_store(&srv->drain_deadline_ms, ns_now_ms() + grace_ms);
    for (unsigned i = 0; i < srv->n_workers; i++)
        if (srv->workers[i].started)
            event_base_once(srv->workers[i].base, -1, EV_TIMEOUT, stop_accepting, &srv->workers[i], NULL);
    for (unsigned i = 0; i < srv->n_workers; i++) {
        ns_worker *w = &srv->workers[i];
        if (w->started)
            pthread_join(w->th, NULL);
        if (w->drain != NULL)
            event_free(w->drain);
        if (w->resume != NULL)
            event_free(w->resume);
        if (w->log_ev != NULL)
            event_free(w->log_ev);
        if (w->log != NULL)
            evbuffer_free(w->log);
        if (w->http != NULL)
            evhttp_free(w->http);
        if (w->base != NULL)
            event_base_free(w->base);
    }
    free(srv->workers);
    srv->workers = NULL;
    srv->n_workers = 0;
    if (srv->reserve_fd >= 0)
        close(srv->reserve_fd);
    srv->reserve_fd = -1;
}
