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
} ns_server;

/* Bind and listen on server.listen ("HOST:PORT"); *port gets the port bound (for port 0). */
int ns_http_listen(const char *listen_addr, evutil_socket_t *fd, unsigned *port) NS_WUR;

/* Start server.threads workers on srv->fd. */
int ns_http_start(ns_server *srv) NS_WUR;

/* Use ctx (taken over) for new connections. */
void ns_http_set_ctx(ns_server *srv, SSL_CTX *ctx);

/* Stop accepting; let connections finish for at most grace_ms; join the workers. */
void ns_http_stop(ns_server *srv, long grace_ms);

#endif
