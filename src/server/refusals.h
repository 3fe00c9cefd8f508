/* Requests that libevent refuses by itself, without calling our handler: a body over max_body_size (413),
 * a malformed request line or headers, or headers over max_headers_size (400), a method it does not know
 * (501), an Expect it does not support (417), and connections it closes on its timeout. libevent 2.1.12
 * has no callback for any of these on incoming connections (no evhttp_set_newreqcb; a request's error
 * callback is only called for outgoing requests), so we watch each connection from below: the
 * bufferevent's output buffer (an answer queued while our handler is not running is libevent's own) and its
 * input buffer (when bytes last arrived), and the connection's end (its SSL object being freed). Each
 * refusal gets one log line and a count in nstance_http_refused_total{reason} (doc/server.md, "Limits").
 * All of a connection's calls run in its worker's thread. */
#ifndef NS_SERVER_REFUSALS_H
#define NS_SERVER_REFUSALS_H

#include <event2/bufferevent.h>
#include <openssl/ssl.h>

#include "common/err.h"
#include "server/http.h"

/* Set by the request handler while it queues its answer: bytes queued meanwhile are ours, not libevent's. */
extern _Thread_local int ns_refusals_replying;

/* Register the SSL ex-data index; once, before the first connection. */
int ns_refusals_init(void) NS_WUR;

/* Watch a new connection (its SSL object and its bufferevent) and start its deadline: the connection is
 * closed header_timeout after accept unless our handler has answered a request by then (doc/server.md,
 * "Limits"). over_limit: the connection is over server.max_connections; it is closed right away (no
 * refusal is logged for it). On failure (no memory) the connection is served unwatched, with libevent's
 * timeouts only. The watch is freed with the SSL object. */
void ns_refusals_watch(ns_server *srv, SSL *ssl, struct bufferevent *bev, int over_limit);

/* Our handler queued an answer on bev's connection: the next request must be complete within
 * idle_timeout + header_timeout from now, or the connection is closed. */
void ns_refusals_answered(struct bufferevent *bev);

/* Our handler refuses a request before looking at it (why, status): one "refused" line and a count, as for
 * libevent's own refusals. The caller answers and closes the connection. */
void ns_refusals_refuse(struct bufferevent *bev, enum ns_refusal why, int status);

#endif
