/* The server's state and request logic, without any HTTP or TLS: what nstance-secretsd (src/server/) calls.
 *
 * ns_svc holds the config, the store, the keyring, the CA (with the trust store built from cluster/ca.crt),
 * the registration-nonce keys, the nonce ledger, the secret cache and the metrics. Requests run on several
 * threads at once:
 *   - svc->lock (rwlock) is taken for reading by every request and by refreshes, for writing by
 *     ns_svc_reload() (SIGHUP: templates from the config file, ns_keyring_reload);
 *   - the CA and the nonce keys are reference-counted snapshots swapped by ns_svc_refresh() when their
 *     stored objects change, so a request keeps the snapshot it started with.
 * Each request function fills an ns_reply: an HTTP status, an error code (doc/protocol.md) or a body. */
#ifndef NS_SERVICE_SERVICE_H
#define NS_SERVICE_SERVICE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "ca/ca.h"
#include "common/buf.h"
#include "common/err.h"
#include "settings/settings.h"
#include "jwt/ledger.h"
#include "keys/keyring.h"
#include "service/answers.h"
#include "service/authz.h"
#include "service/cache.h"
#include "service/metrics.h"
#include "service/ratelimit.h"
#include "service/records.h"
#include "sign/keyset.h"
#include "store/store.h"

/* The CA as requests see it: the issuing CA, the trust store of its bundle and the bundle's PEM. */
typedef struct ns_ca_snap {
    ns_ca *ca;
    X509_STORE *trust;
    ns_buf *pem;
    char *version;
    ns_keyset *nonce_keys;
    char *nonce_version; /* of the registration-nonce.key secret (software keys), or NULL */
    atomic_int refs;
} ns_ca_snap;

typedef struct ns_svc {
    ns_config *cfg;  /* the config the server started with (keyring, CA, listen, limits) */
    ns_config *tcfg; /* templates and groups: cfg at start, the reloaded file after SIGHUP */
    pthread_rwlock_t lock;
    ns_store *st;
    ns_keyring *kr;
    ns_ledger *ledger;
    ns_cache *cache;
    ns_answers *answers;   /* rendered /v1/agent/files answers (answers.h) */
    ns_recs *recs;         /* agents' groups from their registration records (records.h) */
    ns_rl *rl;             /* renewal and registration rate limits (ratelimit.h) */
    atomic_ulong tmpl_gen; /* bumped when tcfg is replaced (reload) */
    ns_metrics metrics;
    pthread_mutex_t snap_mu;
    ns_ca_snap *snap;
    atomic_int ready;
    atomic_int snap_stale; /* a request saw the CA or nonce keys fail: reopen them at the next refresh */
} ns_svc;

typedef struct ns_reply {
    int status;        /* HTTP status */
    const char *error; /* error code for the JSON error body, NULL for success */
    const char *message;
    ns_buf *body;      /* success body (owned; may be a secret buffer) */
    ns_answer *answer; /* or: a cached answer's body (a reference, owned) */
    const char *content_type;
    char etag[70];   /* quoted, or "" */
    int retry_after; /* seconds for a Retry-After header (429), or 0 */
    ns_peer peer;    /* for the log line */
} ns_reply;

/* Set up the state for cfg (taken over). Nothing that may fail on a token or the store: see ns_svc_load. */
int ns_svc_new(ns_config *cfg, ns_svc **out) NS_WUR;
void ns_svc_free(ns_svc *svc);

/* Load what requests need: store, keyring, CA, nonce keys, ledger; warm the cache (missing secrets are
 * warned about). On success the service is ready. Called again after a failure (retry). */
int ns_svc_load(ns_svc *svc) NS_WUR;

/* Periodic: reopen the CA and the nonce keys when their objects changed, refresh the cache. */
void ns_svc_refresh(ns_svc *svc);

/* SIGHUP: read the config file again for templates and groups; reload the KEKs. All or nothing. */
int ns_svc_reload(ns_svc *svc, const char *path) NS_WUR;

ns_ca_snap *ns_svc_snap_get(ns_svc *svc);
void ns_svc_snap_put(ns_ca_snap *s);

void ns_reply_clear(ns_reply *rp);
/* Set rp to the error for status (the code and message of doc/protocol.md; 503 for a status not there). */
void ns_reply_error(ns_reply *rp, int status);
/* The status for a failed token, store or internal operation: 503 (doc/protocol.md). A token error also
 * counts in the metrics and marks the CA snapshot stale, so that its keys are reopened (token recovery). */
int ns_svc_fault_status(ns_svc *svc, int err);

/* The endpoints. cert/chain: the client certificate (may be NULL) and its chain as sent. */
/* peer_addr: the client's address as text (the registration rate limit's key), or NULL. */
void ns_svc_register(ns_svc *svc, const char *peer_addr, const uint8_t *body, size_t n, ns_reply *rp);
void ns_svc_renew(ns_svc *svc, X509 *cert, STACK_OF(X509) * chain, const char *role, const uint8_t *body,
                  size_t n, ns_reply *rp);
void ns_svc_files(ns_svc *svc, X509 *cert, STACK_OF(X509) * chain, const char *if_none_match, ns_reply *rp);
/* GET /v1/ca: {"ca_bundle": "<PEM, newest first>"}, no client certificate needed; ETag = quoted SHA-256 of
 * the PEM, 304 when if_none_match carries it. */
void ns_svc_ca(ns_svc *svc, const char *if_none_match, ns_reply *rp);

#endif
