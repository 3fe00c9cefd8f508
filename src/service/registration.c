#include "ns-build.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "ca/cert.h"
#include "common/codec.h"
#include "common/json.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "jwt/nonce.h"
#include "secrets/document.h"
#include "service/registration.h"
#include "service/request.h"
#include "service/service.h"

#define RECORD_MAX (64 * 1024)

/* Record names (doc/protocol.md "Registration records"). A name is built from two untrusted parts, the
 * tenant and the sub (and, for agents, the shard): each must be a nonce name ([A-Za-z0-9][A-Za-z0-9._-]*,
 * jwt/nonce.h), which never holds a '/', and each is a path segment of its own. So a record name splits back
 * into its parts in exactly one way: tenant "acme.web" with sub "1" and tenant "acme" with sub "web.1" get
 * two names (the old "<tenant>.<sub>.json" gave both the same). */
/* The record's name with `sep` between tenant and sub: "/" (now) or "." (the old, colliding layout). */
static int record_name_sep(const char *kind, const char *shard, const char *tenant, const char *sub, char sep,
                           char *out, size_t n)
{
    bool op = strcmp(kind, "operator") == 0;
    int k;

    if (!ns_nonce_name_ok(tenant) || !ns_nonce_name_ok(sub) || (!op && !ns_nonce_name_ok(shard)))
        return NS_E_NAME;
    if (op)
        k = snprintf(out, n, "cluster/operator/%s%c%s.json", tenant, sep, sub);
    else
        k = snprintf(out, n, "shard/%s/instance/%s%c%s.json", shard, tenant, sep, sub);
    if (k < 0 || (size_t)k >= n)
        return NS_E_NAME;
    return ns_store_name_check(out);
}

int ns_record_name(const char *kind, const char *shard, const char *tenant, const char *sub, char *out,
                   size_t n)
{
    return record_name_sep(kind, shard, tenant, sub, '/', out, n);
}

int ns_record_legacy_name(const char *kind, const char *shard, const char *tenant, const char *sub, char *out,
                          size_t n)
{
    return record_name_sep(kind, shard, tenant, sub, '.', out, n);
}

/* "2026-11-28T12:00:00Z" (as ns_time_format writes it) → seconds. */
static int parse_time(const char *s, int64_t *out)
{
    struct tm tm;
    char z = 0;
    int len = 0;

    if (s == NULL)
        return NS_E_FORMAT;
    memset(&tm, 0, sizeof(tm));
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%c%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &z, &len) != 7 ||
        z != 'Z' || (size_t)len != strlen(s) || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return NS_E_FORMAT;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = (int64_t)timegm(&tm);
    return 0;
}

static int parse_record(const char *name, const ns_buf *data, json_t **out)
{
    json_error_t jerr;
    json_t *o = json_loadb((const char *)data->data, data->len, JSON_REJECT_DUPLICATES, &jerr);

    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        ns_log(NS_LOG_ERROR, "the registration record %s is not valid JSON", name);
        return NS_E_FORMAT;
    }
    *out = o;
    return 0;
}

static void fp_hex(const unsigned char fp[32], char out[65])
{
    ns_hex_encode(fp, 32, out);
}

/* Constant-time equality of a record's string member with want (both NUL-terminated). */
static bool member_is(json_t *rec, const char *key, const char *want)
{
    const char *v = json_string_value(json_object_get(rec, key));
    size_t n = strlen(want);

    return v != NULL && n > 0 && strlen(v) == n && CRYPTO_memcmp(v, want, n) == 0;
}

/* Is rec the record of this certificate's identity: exactly its tenant (O), sub (CN) and kind, and for an
 * agent this server's shard? */
static bool record_is_peers(ns_svc *svc, const char *kind, const ns_peer *peer, json_t *rec)
{
    const char *t = json_string_value(json_object_get(rec, "tenant"));
    const char *u = json_string_value(json_object_get(rec, "sub"));
    const char *k = json_string_value(json_object_get(rec, "kind"));
    const char *sh = json_string_value(json_object_get(rec, "shard"));

    return t != NULL && u != NULL && k != NULL && strcmp(t, peer->tenant) == 0 && strcmp(u, peer->cn) == 0 &&
           strcmp(k, kind) == 0 &&
           (strcmp(kind, "operator") == 0 || (sh != NULL && strcmp(sh, svc->cfg->shard) == 0));
}

/* Which certificate of its identity the record lets in (on every use: files and renew):
 *   RECORD_CURRENT:  the one it names (`fingerprint`, SHA-256 of the DER; a record written before there was
 *                    one names it by `serial`);
 *   RECORD_PREVIOUS: the one a renewal replaced (`previous_fingerprint`), until `previous_until` (the
 *                    hand-over of server.renew_grace: a renewal's answer that never arrived);
 * NS_E_INTEGRITY if the record is not this identity's at all (another tenant, sub, kind or shard: a record
 * edited in the store, or a name collision of the old layout), NS_E_CLAIMS for another certificate of the
 * identity (an older one: replaced by a registration or a renewal). Each refusal is logged. */
enum { RECORD_CURRENT = 1, RECORD_PREVIOUS = 2 };

static int record_check(ns_svc *svc, const char *kind, const ns_peer *peer, const char *name, json_t *rec,
                        int64_t now, int *which)
{
    char hex[65];
    const char *fp;
    int64_t until;

    if (!record_is_peers(svc, kind, peer, rec)) {
        ns_log(NS_LOG_WARN,
               "the registration record %s does not name the certificate's tenant, sub and kind; refused",
               name);
        return NS_E_INTEGRITY;
    }
    if (!peer->have_fp) {
        ns_log(NS_LOG_WARN, "the client certificate's fingerprint could not be computed; refused");
        return NS_E_CLAIMS;
    }
    fp_hex(peer->fp, hex);
    fp = json_string_value(json_object_get(rec, "fingerprint"));
    if (fp != NULL ? member_is(rec, "fingerprint", hex)
                   : (peer->serial[0] != '\0' && member_is(rec, "serial", peer->serial))) {
        *which = RECORD_CURRENT;
        return 0;
    }
    if (member_is(rec, "previous_fingerprint", hex) &&
        parse_time(json_string_value(json_object_get(rec, "previous_until")), &until) == 0 && now < until) {
        *which = RECORD_PREVIOUS;
        return 0;
    }
    ns_log(NS_LOG_WARN,
           "the client certificate is not the one the registration record %s names (replaced by a later "
           "registration or renewal); refused",
           name);
    return NS_E_CLAIMS;
}

void ns_svc_record_refusal(ns_svc *svc, int r, ns_reply *rp)
{
    if (r == NS_E_NOT_FOUND) {
        ns_reply_error(rp, 404);
    } else if (r == NS_E_INTEGRITY) {
        ns_reply_error(rp, 403);
    } else if (r == NS_E_CLAIMS) {
        ns_reply_error(rp, 403);
        rp->error = "certificate_replaced";
        rp->message = "a later registration or renewal replaced this certificate";
    } else {
        ns_reply_error(rp, ns_svc_fault_status(svc, r));
    }
}

static int pub_pem(EVP_PKEY *pk, char **out)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *p = NULL, *s;
    long len;

    if (bio == NULL)
        return NS_E_NOMEM;
    if (PEM_write_bio_PUBKEY(bio, pk) != 1 || (len = BIO_get_mem_data(bio, &p)) <= 0 ||
        (s = strndup(p, (size_t)len)) == NULL) {
        BIO_free(bio);
        return NS_E_CRYPTO;
    }
    BIO_free(bio);
    *out = s;
    return 0;
}

/* {"certificate", "ca_bundle", "expires_at"} */
static int cert_reply(const ns_ca_snap *snap, const ns_issued *x, ns_reply *rp)
{
    ns_buf *pem = NULL;
    json_t *o = NULL;
    char *text = NULL, when[32];
    int r;

    if ((r = ns_issued_pem(x, &pem)) != 0)
        goto out;
    ns_time_format(x->not_after, when);
    if ((o = json_object()) == NULL ||
        json_object_set_new(o, "certificate", json_stringn((const char *)pem->data, pem->len)) != 0 ||
        json_object_set_new(o, "ca_bundle", json_stringn((const char *)snap->pem->data, snap->pem->len)) !=
            0 ||
        json_object_set_new(o, "expires_at", json_string(when)) != 0 ||
        (text = json_dumps(o, JSON_COMPACT)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((r = ns_buf_from(text, strlen(text), strlen(text) + 1, false, &rp->body)) != 0 ||
        (r = ns_buf_append(rp->body, "\n", 1)) != 0)
        goto out;
    rp->status = 200;
    rp->content_type = "application/json";
    r = 0;
out:
    ns_json_free(text);
    json_decref(o);
    ns_buf_free(pem);
    return r;
}

static json_t *str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

/* Write the record; if_match: only over that version (NS_E_CONFLICT if it changed), NULL: replace. */
static int put_json(ns_store *st, const char *name, json_t *o, const char *if_match)
{
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    int r;

    if (text == NULL)
        return NS_E_NOMEM;
    r = ns_store_put(st, name, (const uint8_t *)text, strlen(text),
                     if_match != NULL ? NS_PUT_IF_MATCH : NS_PUT_REPLACE, if_match);
    ns_json_free(text);
    return r;
}

/* The members that say which certificate the record lets in (record_check) and when it was issued (the
 * renewal limit): `fingerprint`, `serial`, `not_after`, `issued_at`; the previous certificate's
 * `previous_fingerprint` and `previous_until` (prev_fp NULL: none, both null). */
static int set_current(json_t *rec, const ns_issued *x, int64_t now, const char *prev_fp, int64_t prev_until)
{
    unsigned char md[32];
    char hex[65], when[32], at[32], until[32];

    SHA256(x->der->data, x->der->len, md);
    fp_hex(md, hex);
    ns_time_format(x->not_after, when);
    ns_time_format(now, at);
    ns_time_format(prev_until, until);
    if (json_object_set_new(rec, "fingerprint", json_string(hex)) != 0 ||
        json_object_set_new(rec, "serial", json_string(x->serial)) != 0 ||
        json_object_set_new(rec, "not_after", json_string(when)) != 0 ||
        json_object_set_new(rec, "issued_at", json_string(at)) != 0 ||
        json_object_set_new(rec, "previous_fingerprint", str_or_null(prev_fp)) != 0 ||
        json_object_set_new(rec, "previous_until", str_or_null(prev_fp != NULL ? until : NULL)) != 0)
        return NS_E_NOMEM;
    return 0;
}

/* 429 for a rate limit: retry_ms from now, at least a second in Retry-After. */
static void limited(ns_svc *svc, enum ns_endpoint ep, int64_t retry_ms, ns_reply *rp)
{
    ns_reply_error(rp, 429);
    rp->retry_after = (int)((retry_ms + 999) / 1000);
    if (rp->retry_after < 1)
        rp->retry_after = 1;
    atomic_fetch_add(&svc->metrics.rate_limited[ep], 1);
}

/* Map an issuance error: bad request data → 400, the rest → 503. */
static int issue_status(ns_svc *svc, int r)
{
    return ns_err_category(r) == NS_CAT_BAD_INPUT ? 400 : ns_svc_fault_status(svc, r);
}

/* Issue the client certificate of req (pub, cn, tenant, role and validity set by the caller) naming names[0]
 * (a host name), names[1] and names[2] (IPv4, IPv6 addresses), each possibly NULL, collected in dns and ip,
 * which the caller clears. On failure the reply holds the error; `what` names the step in the log. */
static int issue_client(ns_svc *svc, const ns_ca_snap *snap, const char *what, const char *const names[3],
                        ns_strv *dns, ns_strv *ip, ns_cert_req *req, ns_issued **x, ns_reply *rp)
{
    int r = NS_E_INTERNAL;

    for (int i = 0; i < 3; i++) {
        if (names[i] != NULL && (r = ns_strv_push(i == 0 ? dns : ip, names[i])) != 0) {
            ns_reply_error(rp, 503);
            return r;
        }
    }
    req->role_oid = svc->cfg->ca.role_oid;
    req->kind = NS_CERT_CLIENT;
    req->dns = dns;
    req->ip = ip;
    atomic_fetch_add(&svc->metrics.token_ops[NS_TOK_SIGN], 1);
    if ((r = ns_cert_issue(snap->ca->signer, snap->ca->certs[0], req, x)) != 0) {
        ns_log(NS_LOG_WARN, "%s: issuing failed: %s", what, ns_strerror(r));
        ns_reply_error(rp, issue_status(svc, r));
    }
    return r;
}

/* The last steps of a registration or renewal (`what`, for the log): write the record, forget any copy of it
 * held in memory, answer with the certificate, count it. On failure the reply holds the error. */
static int record_and_reply(ns_svc *svc, const ns_ca_snap *snap, const char *name, json_t *rec,
                            const char *if_match, const ns_issued *x, ns_reply *rp, const char *what)
{
    int r;

    if ((r = put_json(svc->st, name, rec, if_match)) != 0) {
        if (r == NS_E_CONFLICT) { /* the caller decides (renew reads the record again) */
            ns_log(NS_LOG_INFO,
                   "%s: the registration record %s changed meanwhile (a registration or another "
                   "renewal)",
                   what, name);
            return r;
        }
        ns_log(NS_LOG_WARN, "%s: the registration record cannot be written: %s", what, ns_strerror(r));
        ns_reply_error(rp, ns_svc_fault_status(svc, r));
        return r;
    }
    ns_recs_forget(svc->recs, name);
    if ((r = cert_reply(snap, x, rp)) != 0) {
        ns_reply_error(rp, 503);
        return r;
    }
    atomic_fetch_add(&svc->metrics.certificates_issued, 1);
    return 0;
}

/* A registration replaces the identity's record; an old-layout record of the same identity goes too, so that
 * it cannot come back through migrate() if the new record is deleted later. */
static void retire_legacy(ns_svc *svc, const char *kind, const char *shard, const char *tenant,
                          const char *sub)
{
    char old[NS_NAME_MAX + 1];
    ns_buf *data = NULL;
    json_t *o = NULL;
    const char *t, *u;

    if (ns_record_legacy_name(kind, shard, tenant, sub, old, sizeof(old)) != 0 ||
        ns_store_get(svc->st, old, RECORD_MAX, &data, NULL) != 0)
        return;
    if (parse_record(old, data, &o) == 0 && (t = json_string_value(json_object_get(o, "tenant"))) != NULL &&
        (u = json_string_value(json_object_get(o, "sub"))) != NULL && strcmp(t, tenant) == 0 &&
        strcmp(u, sub) == 0 && ns_store_delete(svc->st, old) != 0)
        ns_log(NS_LOG_WARN, "register: the old registration record %s could not be deleted", old);
    json_decref(o);
    ns_buf_free(data);
}

void ns_svc_register(ns_svc *svc, const char *peer_addr, const uint8_t *body, size_t n, ns_reply *rp)
{
    const ns_config *cfg = svc->cfg;
    ns_reg_request *rq = NULL;
    ns_ca_snap *snap = NULL;
    ns_nonce *nc = NULL;
    ns_issued *x = NULL;
    json_t *rec = NULL;
    ns_strv dns = NS_STRV_INIT, ip = NS_STRV_INIT;
    ns_cert_req req;
    const char *sub, *tenant, *shard, *group, *kind;
    char name[NS_NAME_MAX + 1], when[32], *pem = NULL;
    int64_t now = ns_now(), ttl, retry_ms = 0;
    int r;

    if (!atomic_load(&svc->ready)) {
        ns_reply_error(rp, 503);
        goto out;
    }
    /* Before anything costs: every attempt takes a token, a valid nonce or not. */
    if (ns_rl_register_take(svc->rl, peer_addr, ns_recs_clock_ms(), cfg->server.register_burst,
                            cfg->server.register_per_minute, &retry_ms) != 0) {
        ns_log(NS_LOG_INFO, "register: rate limited (%s)", peer_addr != NULL ? peer_addr : "unknown address");
        limited(svc, NS_EP_REGISTER, retry_ms, rp);
        goto out;
    }
    if ((r = ns_reg_request_parse(body, n, NS_REQ_REGISTER, &rq)) != 0) {
        ns_reply_error(rp, r == NS_E_TOO_LARGE ? 413 : r == NS_E_NOMEM ? 503 : 400);
        goto out;
    }
    snap = ns_svc_snap_get(svc);
    if ((r = ns_nonce_verify(cfg, snap->nonce_keys, rq->nonce, strlen(rq->nonce), NS_NONCE_ANY, now, &nc)) !=
        0) {
        if (ns_err_category(r) == NS_CAT_TOKEN || ns_err_category(r) == NS_CAT_INTERNAL) {
            ns_reply_error(rp, ns_svc_fault_status(svc, r));
        } else {
            ns_log(NS_LOG_INFO, "register: nonce refused: %s", ns_strerror(r));
            ns_reply_error(rp, 401);
            rp->error = "nonce_invalid";
            rp->message = "the registration nonce is not valid";
        }
        goto out;
    }
    sub = json_string_value(json_object_get(nc->claims, "sub"));
    tenant = json_string_value(json_object_get(nc->claims, "tenant"));
    shard = json_string_value(json_object_get(nc->claims, "shard"));
    group = json_string_value(json_object_get(nc->claims, "group"));
    kind = ns_nonce_kind_name(nc->kind);
    snprintf(rp->peer.cn, sizeof(rp->peer.cn), "%s", sub);
    snprintf(rp->peer.tenant, sizeof(rp->peer.tenant), "%s", tenant);
    snprintf(rp->peer.role, sizeof(rp->peer.role), "%s", kind);
    if (ns_cert_check_cn(sub) != 0 || ns_record_name(kind, shard, tenant, sub, name, sizeof(name)) != 0) {
        ns_log(NS_LOG_INFO, "register: the nonce's sub/tenant cannot name a certificate or record");
        ns_reply_error(rp, 400);
        goto out;
    }
    ttl = nc->kind == NS_NONCE_OPERATOR ? cfg->server.operator_cert_ttl : cfg->server.agent_cert_ttl;
    req = (ns_cert_req){
        .pub = rq->pub, .cn = sub, .tenant = tenant, .role = kind, .not_before = now, .not_after = now + ttl};
    /* Sign first, consume second: a token failure leaves the nonce usable for a retry. The certificate
     * reaches nobody unless the nonce is consumed and the certificate logged. */
    if (issue_client(svc, snap, "register", (const char *[3]){rq->hostname, rq->ipv4, rq->ipv6}, &dns, &ip,
                     &req, &x, rp) != 0)
        goto out;
    if ((r = ns_ledger_use(svc->ledger, nc->ledger_key, nc->exp, now)) != 0) {
        if (r == NS_E_REPLAYED) {
            ns_log(NS_LOG_INFO, "register: nonce replayed");
            ns_reply_error(rp, 409);
        } else {
            ns_log(NS_LOG_WARN, "register: the nonce ledger failed: %s", ns_strerror(r));
            ns_reply_error(rp, ns_svc_fault_status(svc, r));
        }
        goto out;
    }
    if ((r = ns_certlog_write(svc->st, shard, &req, x, snap->ca->signer->id)) != 0) {
        ns_log(NS_LOG_WARN, "register: the certificate log failed: %s", ns_strerror(r));
        ns_reply_error(rp, ns_svc_fault_status(svc, r));
        goto out;
    }
    if ((r = pub_pem(rq->pub, &pem)) != 0) {
        ns_reply_error(rp, 503);
        goto out;
    }
    ns_time_format(now, when);
    rec = json_object();
    if (rec == NULL || json_object_set_new(rec, "sub", json_string(sub)) != 0 ||
        json_object_set_new(rec, "tenant", json_string(tenant)) != 0 ||
        json_object_set_new(rec, "kind", json_string(kind)) != 0 ||
        json_object_set_new(rec, "shard", json_string(shard)) != 0 ||
        json_object_set_new(rec, "group", str_or_null(group)) != 0 ||
        json_object_set_new(rec, "public_key", json_string(pem)) != 0 ||
        json_object_set_new(rec, "serial", json_string(x->serial)) != 0 ||
        json_object_set_new(rec, "hostname", str_or_null(rq->hostname)) != 0 ||
        json_object_set_new(rec, "ipv4", str_or_null(rq->ipv4)) != 0 ||
        json_object_set_new(rec, "ipv6", str_or_null(rq->ipv6)) != 0 ||
        json_object_set_new(rec, "registered_at", json_string(when)) != 0 ||
        set_current(rec, x, now, NULL, 0) != 0) {
        ns_reply_error(rp, 503);
        goto out;
    }
    if ((r = record_and_reply(svc, snap, name, rec, NULL, x, rp, "register")) != 0)
        goto out;
    retire_legacy(svc, kind, shard, tenant, sub);
    atomic_fetch_add(nc->kind == NS_NONCE_OPERATOR ? &svc->metrics.registrations_operator
                                                   : &svc->metrics.registrations_agent,
                     1);
out:
    free(pem);
    json_decref(rec);
    ns_strv_clear(&dns);
    ns_strv_clear(&ip);
    ns_issued_free(x);
    ns_nonce_free(nc);
    ns_svc_snap_put(snap);
    ns_reg_request_free(rq);
}

/* The record of the old layout ("<tenant>.<sub>.json", ambiguous), moved to `name` if it is this peer's:
 * its stored tenant, sub and kind (and shard) equal the certificate's exactly. One of another identity that
 * shares the old name is never used. The copy is created only where no record exists (a conditional
 * write: a registration or another server's migration meanwhile wins); the old object is then deleted.
 * 0 when `name` may be read again; NS_E_NOT_FOUND when there is nothing to move. */
static int migrate(ns_svc *svc, const char *kind, const char *shard, const ns_peer *peer, const char *name)
{
    char old[NS_NAME_MAX + 1];
    ns_buf *data = NULL;
    json_t *o = NULL;
    int r;

    if (ns_record_legacy_name(kind, shard, peer->tenant, peer->cn, old, sizeof(old)) != 0)
        return NS_E_NOT_FOUND;
    if ((r = ns_store_get(svc->st, old, RECORD_MAX, &data, NULL)) != 0)
        goto out;
    if (parse_record(old, data, &o) != 0) {
        r = NS_E_NOT_FOUND;
        goto out;
    }
    if (!record_is_peers(svc, kind, peer, o)) {
        ns_log(NS_LOG_WARN, "the registration record %s (old name) is another identity's; not used", old);
        r = NS_E_NOT_FOUND;
        goto out;
    }
    r = ns_store_put(svc->st, name, data->data, data->len, NS_PUT_CREATE, NULL);
    if (r != 0 && r != NS_E_EXISTS)
        goto out;
    if (r == 0)
        ns_log(NS_LOG_WARN, "the registration record %s moved to %s (new layout)", old, name);
    if (ns_store_delete(svc->st, old) != 0)
        ns_log(NS_LOG_WARN, "the old registration record %s could not be deleted", old);
    r = 0;
out:
    json_decref(o);
    ns_buf_free(data);
    return r;
}

/* The peer's registration record (parsed), its object name and its version (if version is not NULL). A
 * record of the old layout is moved first (migrate). Not checked against the certificate: record_check. */
static int read_record(ns_svc *svc, const char *kind, const ns_peer *peer, char *name, size_t n, json_t **out,
                       char **version)
{
    ns_buf *data = NULL;
    int r;

    if ((r = ns_record_name(kind, svc->cfg->shard, peer->tenant, peer->cn, name, n)) != 0)
        return NS_E_NOT_FOUND;
    r = ns_store_get(svc->st, name, RECORD_MAX, &data, version);
    if (r == NS_E_NOT_FOUND && (r = migrate(svc, kind, svc->cfg->shard, peer, name)) == 0)
        r = ns_store_get(svc->st, name, RECORD_MAX, &data, version);
    if (r != 0)
        return r;
    r = parse_record(name, data, out);
    ns_buf_free(data);
    if (r != 0 && version != NULL) {
        free(*version);
        *version = NULL;
    }
    return r;
}

/* 401 / 403 for an authz result. */
static int authz_status(int r)
{
    return r == NS_E_CLAIMS ? 403 : r == NS_E_PERM ? 401 : 503;
}

/* The record after a renewal by the certificate of peer, accepted as `which`: the new certificate is the
 * current one; the renewing certificate becomes the previous one for renew_grace (its answer may never
 * arrive); a renewal by that previous certificate itself keeps the hand-over as it was, never longer. */
static int renewed_record(ns_svc *svc, json_t *rec, int which, const ns_peer *peer, const ns_issued *x,
                          const char *pem, int64_t now)
{
    char hex[65], *prev_fp = NULL;
    int64_t prev_until = 0;

    fp_hex(peer->fp, hex);
    if (which == RECORD_CURRENT && svc->cfg->server.renew_grace > 0) {
        prev_fp = hex;
        prev_until = now + svc->cfg->server.renew_grace;
    } else if (which == RECORD_PREVIOUS &&
               parse_time(json_string_value(json_object_get(rec, "previous_until")), &prev_until) == 0) {
        prev_fp = hex;
    }
    if (json_object_set_new(rec, "public_key", json_string(pem)) != 0)
        return NS_E_NOMEM;
    return set_current(rec, x, now, prev_fp, prev_until);
}

/* A renewal that moves the identity's current certificate to the newest CA after `ca rotate` is not held to
 * renew_min_interval by the record: agents renew on the first sync after a rotation (doc/agent.md), which may
 * come minutes after their registration, and must before `ca retire`. It is bounded all the same: once per
 * rotation, since the certificate it issues is the newest CA's and the old one becomes the record's previous
 * one (not exempt), and renewals racing on one server still share the in-memory slot. */
static bool moves_to_newest_ca(const ns_ca_snap *snap, X509 *cert, int which)
{
    EVP_PKEY *newest;

    if (which != RECORD_CURRENT || snap->ca == NULL || snap->ca->n < 2 ||
        (newest = X509_get0_pubkey(snap->ca->certs[0])) == NULL)
        return false;
    if (X509_verify(cert, newest) == 1)
        return false;
    ERR_clear_error(); /* a signature of another CA, not an error to report */
    return true;
}

void ns_svc_renew(ns_svc *svc, X509 *cert, STACK_OF(X509) * chain, const char *role, const uint8_t *body,
                  size_t n, ns_reply *rp)
{
    const ns_config *cfg = svc->cfg;
    enum ns_endpoint ep = strcmp(role, "operator") == 0 ? NS_EP_OPERATOR_RENEW : NS_EP_AGENT_RENEW;
    ns_reg_request *rq = NULL;
    ns_ca_snap *snap = NULL;
    ns_issued *x = NULL;
    json_t *rec = NULL;
    ns_strv dns = NS_STRV_INIT, ip = NS_STRV_INIT;
    ns_cert_req req;
    EVP_PKEY *pub;
    const char *shard;
    char name[NS_NAME_MAX + 1], *pem = NULL, *version = NULL;
    int64_t now = ns_now(), mono = ns_recs_clock_ms(), interval = cfg->server.renew_min_interval, issued,
            retry_ms = 0,
            ttl = ep == NS_EP_OPERATOR_RENEW ? cfg->server.operator_cert_ttl : cfg->server.agent_cert_ttl;
    bool taken = false;
    int r, which = 0;

    if (!atomic_load(&svc->ready)) {
        ns_reply_error(rp, 503);
        goto out;
    }
    snap = ns_svc_snap_get(svc);
    if ((r = ns_authz_check(cert, chain, snap->trust, cfg->ca.role_oid, role, &rp->peer)) != 0) {
        ns_reply_error(rp, authz_status(r));
        goto out;
    }
    if ((r = ns_reg_request_parse(body, n, NS_REQ_RENEW, &rq)) != 0) {
        ns_reply_error(rp, r == NS_E_TOO_LARGE ? 413 : r == NS_E_NOMEM ? 503 : 400);
        goto out;
    }
    if ((r = read_record(svc, role, &rp->peer, name, sizeof(name), &rec, &version)) != 0 ||
        (r = record_check(svc, role, &rp->peer, name, rec, now, &which)) != 0) {
        ns_svc_record_refusal(svc, r, rp);
        goto out;
    }
    /* Never more than half a lifetime: agents renew at two thirds of theirs and must never be refused. */
    if (interval > ttl / 2)
        interval = ttl / 2;
    /* At most one renewal per identity per renew_min_interval: from the record (so a client that moves to
     * another standby server is limited too), and in memory from before the signature to the record write (so
     * renewals racing on this server are too). */
    if (interval > 0 && !moves_to_newest_ca(snap, cert, which) &&
        parse_time(json_string_value(json_object_get(rec, "issued_at")), &issued) == 0 &&
        now < issued + interval) {
        retry_ms = (issued + interval - now > interval ? interval : issued + interval - now) * 1000;
        ns_log(NS_LOG_INFO, "renew: rate limited (a certificate was issued %llds ago)",
               (long long)(now - issued));
        limited(svc, ep, retry_ms, rp);
        goto out;
    }
    if (ns_rl_renew_take(svc->rl, name, mono, interval * 1000, &retry_ms) != 0) {
        ns_log(NS_LOG_INFO, "renew: rate limited (a renewal of this identity is in progress or just done)");
        limited(svc, ep, retry_ms, rp);
        goto out;
    }
    taken = interval > 0;
    shard = json_string_value(json_object_get(rec, "shard"));
    if (shard == NULL)
        shard = cfg->shard;
    pub = rq->pub != NULL ? rq->pub : X509_get0_pubkey(cert);
    req = (ns_cert_req){.pub = pub,
                        .cn = rp->peer.cn,
                        .tenant = rp->peer.tenant,
                        .role = role,
                        .not_before = now,
                        .not_after = now + ttl};
    if (issue_client(svc, snap, "renew",
                     (const char *[3]){json_string_value(json_object_get(rec, "hostname")),
                                       json_string_value(json_object_get(rec, "ipv4")),
                                       json_string_value(json_object_get(rec, "ipv6"))},
                     &dns, &ip, &req, &x, rp) != 0)
        goto out;
    /* Signed: the slot stays taken for the interval whatever happens next (only a failed signature, which
     * costs nothing and logs nothing, gives it back for a retry). */
    taken = false;
    if ((r = ns_certlog_write(svc->st, shard, &req, x, snap->ca->signer->id)) != 0) {
        ns_log(NS_LOG_WARN, "renew: the certificate log failed: %s", ns_strerror(r));
        ns_reply_error(rp, ns_svc_fault_status(svc, r));
        goto out;
    }
    if ((r = pub_pem(pub, &pem)) != 0) {
        ns_reply_error(rp, 503);
        goto out;
    }
    /* The record is replaced only over the version read (compare-and-swap): a registration of the identity
     * meanwhile must win, or the retired certificate would be named again. If it changed and still lets this
     * certificate in (another renewal of the identity), try again on the new version. */
    for (int attempt = 0;; attempt++) {
        if ((r = renewed_record(svc, rec, which, &rp->peer, x, pem, now)) != 0) {
            ns_reply_error(rp, 503);
            goto out;
        }
        r = record_and_reply(svc, snap, name, rec, version, x, rp, "renew");
        if (r != NS_E_CONFLICT || attempt == 2)
            break;
        json_decref(rec);
        rec = NULL;
        free(version);
        version = NULL;
        if ((r = read_record(svc, role, &rp->peer, name, sizeof(name), &rec, &version)) != 0 ||
            (r = record_check(svc, role, &rp->peer, name, rec, now, &which)) != 0) {
            ns_svc_record_refusal(svc, r, rp);
            goto out;
        }
    }
    if (r == NS_E_CONFLICT) {
        ns_log(NS_LOG_WARN,
               "renew: the registration record %s kept changing; the new certificate is not "
               "handed out",
               name);
        ns_reply_error(rp, 503);
    }
out:
    if (taken)
        ns_rl_renew_give_back(svc->rl, name, mono);
    free(version);
    free(pem);
    json_decref(rec);
    ns_strv_clear(&dns);
    ns_strv_clear(&ip);
    ns_issued_free(x);
    ns_svc_snap_put(snap);
    ns_reg_request_free(rq);
}

int ns_svc_agent_group(ns_svc *svc, const ns_peer *peer, char *group, size_t n)
{
    char name[NS_NAME_MAX + 1];
    json_t *rec = NULL;
    const char *g;
    int64_t now = ns_recs_clock_ms();
    int r, which = 0;

    /* A remembered group was read by this very certificate (fingerprint) through the checks below. */
    if (peer->have_fp &&
        ns_record_name("agent", svc->cfg->shard, peer->tenant, peer->cn, name, sizeof(name)) == 0 &&
        ns_recs_get(svc->recs, name, peer->fp, now, group, n) == 0)
        return 0;
    if ((r = read_record(svc, "agent", peer, name, sizeof(name), &rec, NULL)) != 0 ||
        (r = record_check(svc, "agent", peer, name, rec, ns_now(), &which)) != 0)
        goto out;
    if ((g = json_string_value(json_object_get(rec, "group"))) == NULL || strlen(g) >= n) {
        r = NS_E_NOT_FOUND;
        goto out;
    }
    strcpy(group, g);
    /* The previous certificate only for its hand-over: not remembered, so that it ends on time. */
    if (which == RECORD_CURRENT)
        ns_recs_put(svc->recs, name, peer->fp, g, now);
    r = 0;
out:
    json_decref(rec);
    return r;
}
