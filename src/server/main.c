/* nstance-secretsd -c CONFIG: the HTTPS server of doc/protocol.md (doc/server.md). */
#include "ns-build.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "common/json.h"
#include "common/log.h"
#include "common/secmem.h"
#include "common/timeutil.h"
#include "settings/settings.h"
#include "server/http.h"
#include "server/tls.h"
#include "service/service.h"

#define RETRY_SECONDS 1
#define DRAIN_MS      5000

static const char usage[] = "usage: nstance-secretsd [-c CONFIG] [-v]\n"
                            "  -c, --config FILE   the config (default $NSTANCE_SECRETS_CONFIG, then "
                            "/etc/nstance/secrets.yaml)\n"
                            "  -v, --verbose       log more (twice: debug)\n"
                            "  -h, --help          this help\n"
                            "      --version       the version\n";

typedef struct app {
    ns_server srv;
    const char *config_path;
    struct event_base *base;
    struct event *tick;
    int tls_ready;
    char *tls_ca_version; /* the CA bundle version the TLS certificate was issued under */
    int64_t tls_renew_at; /* when to issue the next one: two thirds into the current one's lifetime */
} app;

/* After a CA rotation the server's certificate is issued again by the new CA (so that agents whose bundle
 * no longer holds the old CA after `ca retire` still trust the server). */
static int ca_changed(app *a)
{
    ns_ca_snap *s = ns_svc_snap_get(a->srv.svc);
    int changed = s != NULL && (a->tls_ca_version == NULL || strcmp(s->version, a->tls_ca_version) != 0);

    ns_svc_snap_put(s);
    return changed;
}

static void remember_ca(app *a, int64_t not_after)
{
    ns_ca_snap *s = ns_svc_snap_get(a->srv.svc);
    int64_t now = ns_now();

    a->tls_renew_at = now + (not_after - now) * 2 / 3;
    free(a->tls_ca_version);
    a->tls_ca_version = s != NULL ? strdup(s->version) : NULL;
    ns_svc_snap_put(s);
}

/* Load (retrying until it works), then get the real certificate, then refresh every server.cache_check. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    app *a = arg;
    ns_svc *svc = a->srv.svc;
    struct timeval tv = {RETRY_SECONDS, 0};
    SSL_CTX *ctx = NULL;
    int64_t not_after = 0;
    int r;
    (void)fd;
    (void)what;

    if (!atomic_load(&svc->ready)) {
        if ((r = ns_svc_load(svc)) != 0)
            ns_log(NS_LOG_WARN, "not ready: %s; retrying in %ds", ns_strerror(r), RETRY_SECONDS);
    } else {
        ns_svc_refresh(svc);
    }
    if (atomic_load(&svc->ready) && !a->tls_ready) {
        if ((r = ns_tls_ctx_issued(svc, &ctx, &not_after)) == 0) {
            ns_http_set_ctx(&a->srv, ctx);
            remember_ca(a, not_after);
            a->tls_ready = 1;
            ns_log(NS_LOG_WARN, "ready");
        } else {
            atomic_store(&svc->ready, 0);
        }
    } else if (a->tls_ready && (ca_changed(a) || ns_now() >= a->tls_renew_at)) {
        if ((r = ns_tls_ctx_issued(svc, &ctx, &not_after)) == 0) {
            ns_http_set_ctx(&a->srv, ctx);
            remember_ca(a, not_after);
            ns_log(NS_LOG_WARN,
                   "the CA changed or the TLS certificate is two thirds through its life: new TLS "
                   "certificate");
        }
    }
    if (a->tls_ready)
        tv.tv_sec = (time_t)svc->cfg->server.cache_check;
    evtimer_add(a->tick, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    app *a = arg;
    (void)what;

    if (sig == SIGHUP) {
        if (ns_svc_reload(a->srv.svc, a->config_path) == 0)
            ns_svc_refresh(a->srv.svc);
        return;
    }
    ns_log(NS_LOG_WARN, "signal %d: draining", (int)sig);
    event_base_loopexit(a->base, NULL);
}

int main(int argc, char **argv)
{
    app a;
    ns_config *cfg = NULL;
    struct event *sigs[3] = {NULL, NULL, NULL};
    const int signos[3] = {SIGTERM, SIGINT, SIGHUP};
    struct timeval now = {0, 0};
    SSL_CTX *ctx = NULL;
    unsigned port = 0;
    int rc = 1, r;

    ns_log_set_program("nstance-secretsd");
    ns_secmem_harden_process();
    ns_json_init();
    memset(&a, 0, sizeof(a));
    a.srv.fd = -1;
    a.srv.reserve_fd = -1;
    pthread_mutex_init(&a.srv.ctx_mu, NULL);
    pthread_mutex_init(&a.srv.reserve_mu, NULL);
    if ((r = ns_config_options(argc, argv, "c:vh", usage, &a.config_path)) >= 0)
        return r;
    if (optind != argc) {
        fputs(usage, stderr);
        return 2;
    }
    a.config_path = ns_config_default_path(a.config_path);
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() != 0) {
        ns_log(NS_LOG_ERROR, "libevent: no thread support");
        return 1;
    }
    if ((r = ns_config_load(a.config_path, &cfg)) != 0)
        return 2;
    /* Before anything opens a descriptor: the connections must not take those the store and token need. */
    if ((r = ns_http_fd_limit(&cfg->server)) != 0) {
        ns_config_free(cfg);
        return 2;
    }
    if ((r = ns_http_listen(cfg->server.listen, &a.srv.fd, &port)) != 0) {
        ns_config_free(cfg);
        return 2;
    }
    if ((r = ns_svc_new(cfg, &a.srv.svc)) != 0) {
        ns_config_free(cfg);
        goto out;
    }
    if ((r = ns_tls_ctx_selfsigned(&cfg->server.names, &ctx)) != 0)
        goto out;
    ns_http_set_ctx(&a.srv, ctx);
    if ((a.base = event_base_new()) == NULL || (a.tick = evtimer_new(a.base, on_tick, &a)) == NULL)
        goto out;
    for (size_t i = 0; i < 3; i++)
        if ((sigs[i] = evsignal_new(a.base, signos[i], on_signal, &a)) == NULL ||
            event_add(sigs[i], NULL) != 0)
            goto out;
    if ((r = ns_http_start(&a.srv)) != 0)
        goto out;
    /* The line tests and operators look for; with port 0 it is the only way to learn the port. */
    fprintf(stderr, "nstance-secretsd: listening on %s (port %u), %u threads\n", cfg->server.listen, port,
            cfg->server.threads);
    evtimer_add(a.tick, &now);
    event_base_dispatch(a.base);
    ns_http_stop(&a.srv, DRAIN_MS);
    fprintf(stderr, "nstance-secretsd: stopped\n");
    rc = 0;
out:
    if (rc != 0)
        ns_http_stop(&a.srv, 0);
    for (size_t i = 0; i < 3; i++)
        if (sigs[i] != NULL)
            event_free(sigs[i]);
    if (a.tick != NULL)
        event_free(a.tick);
    if (a.base != NULL)
        event_base_free(a.base);
    ns_http_set_ctx(&a.srv, NULL);
    if (a.srv.fd >= 0)
        close(a.srv.fd);
    ns_svc_free(a.srv.svc);
    free(a.tls_ca_version);
    pthread_mutex_destroy(&a.srv.ctx_mu);
    pthread_mutex_destroy(&a.srv.reserve_mu);
    return rc;
}
