#include "ns-build.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "server/refusals.h"

/* A timeout is inferred when the connection ends this close to (or past) its limit without news from the
 * peer; libevent's timers and ours both run on the coarse monotonic clock (a few ms resolution). */
#define MARGIN_MS 100

_Thread_local int ns_refusals_replying;

typedef struct watch {
    ns_server *srv;
    struct bufferevent *bev;
    struct event peer_ev; /* once, right after accept: libevent sets the socket after new_bev returns */
    int peer_ev_added;
    struct event
        deadline_ev; /* the connection's deadline (doc/server.md, "Limits"): closes it, whatever trickles */
    int deadline_added;
    int over_limit;                  /* over server.max_connections: closed right after accept */
    char peer[INET6_ADDRSTRLEN + 8]; /* "ADDR:PORT", or "-" until known */
    long long last_ms;               /* the last request bytes in, or answer bytes out */
    int answered;                    /* our handler answered a request: idle_timeout applies from then */
    int refused;                     /* libevent answered by itself: the connection ends after that */
} watch;

static int watch_idx = -1;

static long long coarse_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void record_peer(watch *w)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    evutil_socket_t fd = bufferevent_getfd(w->bev);
    char a[INET6_ADDRSTRLEN];
    unsigned port;

    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        return;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
        if (inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a)) == NULL)
            return;
        port = ntohs(s6->sin6_port);
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
        if (inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a)) == NULL)
            return;
        port = ntohs(s4->sin_port);
    } else {
        return;
    }
    snprintf(w->peer, sizeof(w->peer), "%s:%u", a, port);
}

/* One line per refusal, in the style of the request lines: reason, status ("-" when the connection was
 * closed without an answer), peer. Never anything the peer sent. */
static void refused(watch *w, enum ns_refusal why, int status)
{
    char st[12] = "-";

    w->refused = 1;
    if (status > 0)
        snprintf(st, sizeof(st), "%d", status);
    atomic_fetch_add(&w->srv->svc->metrics.refused[why], 1);
    fprintf(stderr, "nstance-secretsd: refused %s %s %s\n", ns_refusal_name(why), st, w->peer);
}

/* Close the connection from below: with its socket shut down, libevent's next read sees the end of the
 * stream and frees the connection through its ordinary path (whatever state evhttp is in: TLS handshake,
 * request line, headers, body, or writing an answer). */
static void cut(watch *w)
{
    evutil_socket_t fd = bufferevent_getfd(w->bev);

    if (fd >= 0)
        (void)shutdown(fd, SHUT_RDWR);
}

/* The deadline passed: the first request (TLS handshake, head and body) did not arrive within
 * header_timeout of accept, or the next one within idle_timeout + header_timeout of the last answer.
 * libevent's own timeout restarts on every byte, so without this a client that sends one byte every few
 * seconds would hold its connection (and a slot of server.max_connections) for ever. */
static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    watch *w = arg;
    (void)fd;
    (void)what;
    w->deadline_added = 0;
    if (strcmp(w->peer, "-") == 0)
        record_peer(w);
    if (!w->refused && !w->over_limit && !atomic_load(&w->srv->stopping))
        refused(w, w->answered ? NS_REFUSED_IDLE_TIMEOUT : NS_REFUSED_HEADER_TIMEOUT, 0);
    cut(w);
}

static void arm(watch *w, long long ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    if (event_add(&w->deadline_ev, &tv) == 0)
        w->deadline_added = 1;
}

static void peer_cb(evutil_socket_t fd, short what, void *arg)
{
    watch *w = arg;
    (void)fd;
    (void)what;
    w->peer_ev_added = 0;
    record_peer(w);
    if (w->over_limit)
        cut(w); /* its descriptor is free again at once, not after header_timeout */
}

/* Bytes of a request arrived. */
static void input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_added > 0)
        ((watch *)arg)->last_ms = coarse_ms();
}

/* Bytes were queued for the peer, or went out. Queued while our handler is not replying: libevent's own
 * answer (an error page, or "100 Continue"); its status line is the first thing it queues. */
static void output_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    watch *w = arg;
    struct evbuffer_ptr pos;
    char line[16];
    int status = 0;

    if (info->n_deleted > 0)
        w->last_ms = coarse_ms();
    if (info->n_added == 0)
        return;
    if (ns_refusals_replying) {
        w->answered = 1;
        return;
    }
    memset(line, 0, sizeof(line));
    if (evbuffer_ptr_set(buf, &pos, info->orig_size, EVBUFFER_PTR_SET) != 0 ||
        evbuffer_copyout_from(buf, &pos, line, sizeof(line) - 1) < 13 || strncmp(line, "HTTP/", 5) != 0 ||
        sscanf(line + 8, " %3d", &status) != 1 || status < 200)
        return; /* a header line or the page of an answer already counted; or 100 Continue */
    if (strcmp(w->peer, "-") == 0)
        record_peer(w);
    refused(w,
            status == 413   ? NS_REFUSED_BODY_TOO_LARGE
            : status == 400 ? NS_REFUSED_MALFORMED
            : status == 501 ? NS_REFUSED_METHOD
            : status == 417 ? NS_REFUSED_EXPECT
                            : NS_REFUSED_OTHER,
            status);
}

/* The connection's SSL object is freed: the connection is over. Ended by libevent's timeout, it was quiet
 * for its whole limit; ended by the peer or after an answer with "Connection: close", it was not. */
static void watch_gone(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    watch *w = ptr;
    const ns_server_config *sc;
    long long limit_ms;
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;

    if (w == NULL)
        return;
    if (w->peer_ev_added)
        event_del(&w->peer_ev);
    if (w->deadline_added)
        event_del(&w->deadline_ev);
    sc = &w->srv->svc->cfg->server;
    limit_ms = (long long)(w->answered ? sc->idle_timeout : sc->header_timeout) * 1000;
    if (!w->refused && !w->over_limit && !atomic_load(&w->srv->stopping) &&
        coarse_ms() - w->last_ms + MARGIN_MS >= limit_ms)
        refused(w, w->answered ? NS_REFUSED_IDLE_TIMEOUT : NS_REFUSED_HEADER_TIMEOUT, 0);
    free(w);
}

int ns_refusals_init(void)
{
    if (watch_idx < 0 && (watch_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, watch_gone)) < 0)
        return NS_E_CRYPTO;
    return 0;
}

void ns_refusals_watch(ns_server *srv, SSL *ssl, struct bufferevent *bev, int over_limit)
{
    struct timeval now = {0, 0};
    watch *w;

    if (watch_idx < 0 || (w = calloc(1, sizeof(*w))) == NULL)
        return;
    w->srv = srv;
    w->bev = bev;
    w->over_limit = over_limit;
    w->last_ms = coarse_ms();
    strcpy(w->peer, "-");
    if (evbuffer_add_cb(bufferevent_get_input(bev), input_cb, w) == NULL ||
        evbuffer_add_cb(bufferevent_get_output(bev), output_cb, w) == NULL ||
        SSL_set_ex_data(ssl, watch_idx, w) != 1) {
        /* The callbacks go with the buffers; without the ex-data nobody frees w: keep it quiet instead. */
        evbuffer_remove_cb(bufferevent_get_input(bev), input_cb, w);
        evbuffer_remove_cb(bufferevent_get_output(bev), output_cb, w);
        free(w);
        return;
    }
    if (event_assign(&w->peer_ev, bufferevent_get_base(bev), -1, 0, peer_cb, w) == 0 &&
        event_add(&w->peer_ev, &now) == 0)
        w->peer_ev_added = 1;
    if (event_assign(&w->deadline_ev, bufferevent_get_base(bev), -1, 0, deadline_cb, w) == 0)
        arm(w, (long long)srv->svc->cfg->server.header_timeout * 1000);
}

static watch *watch_of(struct bufferevent *bev)
{
    SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;

    return ssl != NULL && watch_idx >= 0 ? SSL_get_ex_data(ssl, watch_idx) : NULL;
}

void ns_refusals_answered(struct bufferevent *bev)
{
    watch *w = watch_of(bev);
    const ns_server_config *sc;

    if (w == NULL || w->refused)
        return;
    sc = &w->srv->svc->cfg->server;
    arm(w, (long long)(sc->idle_timeout + sc->header_timeout) * 1000);
}

void ns_refusals_refuse(struct bufferevent *bev, enum ns_refusal why, int status)
{
    watch *w = watch_of(bev);

    if (w == NULL)
        return;
    if (strcmp(w->peer, "-") == 0)
        record_peer(w);
    refused(w, why, status);
}
