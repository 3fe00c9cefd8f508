/* The HTTP side of nstance-secretsd: worker threads, each with its own libevent base and evhttp, all
 * accepting on one listening socket; handlers call the service layer synchronously (doc/server.md,
 * "Threads"). */
#ifndef NS_SERVER_HTTP_H
#define NS_SERVER_HTTP_H

#include <pthread.h>
#include <stdatomic.h>

#include <event2/util.h>
#include <openssl/ssl.h>

#include "common/err.h"
#include "service/service.h"

struct ns_worker;

typedef struct ns_server {
    ns_svc *svc;
    pthread_mutex_t ctx_mu;
    SSL_CTX *ctx; /* for new connections; swapped when the CA issues the real certificate */
    atomic_int conns;
    atomic_int stopping;
    atomic_llong drain_deadline_ms;
    evutil_socket_t fd;
    struct ns_worker *workers;
    unsigned n_workers;
    /* Out of file descriptors (http.c, accept_failed): a descriptor kept open on /dev/null, closed for a
     * moment to accept and close one pending connection. */
    pthread_mutex_t reserve_mu;
    int reserve_fd;
    /* Rate-limited warnings: when the last line was written, and what happened since. */
    atomic_llong accept_logged_ms, over_logged_ms;
    atomic_ulong accept_unlogged, shed_unlogged, over_unlogged;
} ns_server;

/* File descriptors the server needs besides its connections: standard streams, the listening socket and
 * one copy per thread, each event loop's own (2 per thread, 4 for the main one), the reserve descriptor,
 * and room for the store, the token and its module, KEK sources and OpenSSL (doc/server.md, "Limits"). */
#define NS_HTTP_FD_MARGIN(threads) (32u + 4u * (threads))

/* Check RLIMIT_NOFILE against server.max_connections + NS_HTTP_FD_MARGIN: raise the soft limit (up to the
 * hard one) if it is short; if the hard limit is short too, lower max_connections to what fits, with a
 * warning. NS_E_CONFIG if not even one connection fits. */
int ns_http_fd_limit(ns_server_config *sc) NS_WUR;

/* Bind and listen on server.listen ("HOST:PORT"); *port gets the port bound (for port 0). */
int ns_http_listen(const char *listen_addr, evutil_socket_t *fd, unsigned *port) NS_WUR;

/* Start server.threads workers on srv->fd. */
int ns_http_start(ns_server *srv) NS_WUR;

/* Use ctx (taken over) for new connections. */
void ns_http_set_ctx(ns_server *srv, SSL_CTX *ctx);

/* Stop accepting; let connections finish for at most grace_ms; join the workers. */
void ns_http_stop(ns_server *srv, long grace_ms);

#endif
