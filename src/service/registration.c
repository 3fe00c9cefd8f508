#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/pem.h>

#include "ca/cert.h"
#include "common/json.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "jwt/nonce.h"
#include "secrets/document.h"
#include "service/registration.h"
#include "service/request.h"
#include "service/service.h"

#define RECORD_MAX (64 * 1024)

int ns_record_name(const char *kind, const char *shard, const char *tenant, const char *sub, char *out,
                   size_t n)
{
    int k;

    if (strcmp(kind, "operator") == 0)
        k = snprintf(out, n, "cluster/operator/%s.%s.json", tenant, sub);
    else
        k = snprintf(out, n, "shard/%s/instance/%s.%s.json", shard, tenant, sub);
    if (k < 0 || (size_t)k >= n)
        return NS_E_NAME;
    return ns_store_name_check(out);
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

static int put_json(ns_store *st, const char *name, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    int r;

    if (text == NULL)
        return NS_E_NOMEM;
    r = ns_store_put(st, name, (const uint8_t *)text, strlen(text), NS_PUT_REPLACE, NULL);
    ns_json_free(text);
    return r;
}

/* Map an issuance error: bad request data → 400, the rest → 503. */
static int issue_status(ns_svc *svc, int r)
{
    return ns_err_category(r) == NS_CAT_BAD_INPUT ? 400 : ns_svc_fault_status(svc, r);
}

/* The last steps of a registration or renewal (`what`, for the log): write the record, forget any copy of it
 * held in memory, answer with the certificate, count it. On failure the reply holds the error. */
static int record_and_reply(ns_svc *svc, const ns_ca_snap *snap, const char *name, json_t *rec,
                            const ns_issued *x, ns_reply *rp, const char *what)
{
    int r;

    if ((r = put_json(svc->st, name, rec)) != 0) {
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

void ns_svc_register(ns_svc *svc, const uint8_t *body, size_t n, ns_reply *rp)
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
    int64_t now = ns_now(), ttl;
    int r;

    if (!atomic_load(&svc->ready)) {
        ns_reply_error(rp, 503);
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
    if ((rq->hostname != NULL && ns_strv_push(&dns, rq->hostname) != 0) ||
        (rq->ipv4 != NULL && ns_strv_push(&ip, rq->ipv4) != 0) ||
        (rq->ipv6 != NULL && ns_strv_push(&ip, rq->ipv6) != 0)) {
        ns_reply_error(rp, 503);
        goto out;
    }
    ttl = nc->kind == NS_NONCE_OPERATOR ? cfg->server.operator_cert_ttl : cfg->server.agent_cert_ttl;
    memset(&req, 0, sizeof(req));
    req.pub = rq->pub;
    req.cn = sub;
    req.tenant = tenant;
    req.role = kind;
    req.role_oid = cfg->ca.role_oid;
    req.kind = NS_CERT_CLIENT;
    req.dns = &dns;
    req.ip = &ip;
    req.not_before = now;
    req.not_after = now + ttl;
    /* Sign first, consume second: a token failure leaves the nonce usable for a retry. The certificate
     * reaches nobody unless the nonce is consumed and the certificate logged. */
    atomic_fetch_add(&svc->metrics.token_ops[NS_TOK_SIGN], 1);
    if ((r = ns_cert_issue(snap->ca->signer, snap->ca->certs[0], &req, &x)) != 0) {
        ns_log(NS_LOG_WARN, "register: issuing failed: %s", ns_strerror(r));
        ns_reply_error(rp, issue_status(svc, r));
        goto out;
    }
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
        json_object_set_new(rec, "registered_at", json_string(when)) != 0) {
        ns_reply_error(rp, 503);
        goto out;
    }
    ns_time_format(x->not_after, when);
    if (json_object_set_new(rec, "not_after", json_string(when)) != 0) {
        ns_reply_error(rp, 503);
        goto out;
    }
    if ((r = record_and_reply(svc, snap, name, rec, x, rp, "register")) != 0)
        goto out;
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

/* The peer's registration record (parsed) and its object name and version. */
static int read_record(ns_svc *svc, const char *kind, const ns_peer *peer, char *name, size_t n, json_t **out)
{
    ns_buf *data = NULL;
    json_error_t jerr;
    json_t *o;
    int r;

    if ((r = ns_record_name(kind, svc->cfg->shard, peer->tenant, peer->cn, name, n)) != 0)
        return NS_E_NOT_FOUND;
    if ((r = ns_store_get(svc->st, name, RECORD_MAX, &data, NULL)) != 0)
        return r;
    o = json_loadb((const char *)data->data, data->len, JSON_REJECT_DUPLICATES, &jerr);
    ns_buf_free(data);
    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        ns_log(NS_LOG_ERROR, "the registration record %s is not valid JSON", name);
        return NS_E_FORMAT;
    }
    *out = o;
    return 0;
}

/* 401 / 403 for an authz result. */
static int authz_status(int r)
{
    return r == NS_E_CLAIMS ? 403 : r == NS_E_PERM ? 401 : 503;
}

void ns_svc_renew(ns_svc *svc, X509 *cert, STACK_OF(X509) * chain, const char *role, const uint8_t *body,
                  size_t n, ns_reply *rp)
{
    const ns_config *cfg = svc->cfg;
    ns_reg_request *rq = NULL;
    ns_ca_snap *snap = NULL;
    ns_issued *x = NULL;
    json_t *rec = NULL;
    ns_strv dns = NS_STRV_INIT, ip = NS_STRV_INIT;
    ns_cert_req req;
    EVP_PKEY *pub;
    const char *shard, *s;
    char name[NS_NAME_MAX + 1], when[32], *pem = NULL;
    int64_t now = ns_now();
    int r;

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
    if ((r = read_record(svc, role, &rp->peer, name, sizeof(name), &rec)) != 0) {
        ns_reply_error(rp, r == NS_E_NOT_FOUND ? 404 : ns_svc_fault_status(svc, r));
        goto out;
    }
    shard = json_string_value(json_object_get(rec, "shard"));
    if (shard == NULL)
        shard = cfg->shard;
    if (((s = json_string_value(json_object_get(rec, "hostname"))) != NULL && ns_strv_push(&dns, s) != 0) ||
        ((s = json_string_value(json_object_get(rec, "ipv4"))) != NULL && ns_strv_push(&ip, s) != 0) ||
        ((s = json_string_value(json_object_get(rec, "ipv6"))) != NULL && ns_strv_push(&ip, s) != 0)) {
        ns_reply_error(rp, 503);
        goto out;
    }
    pub = rq->pub != NULL ? rq->pub : X509_get0_pubkey(cert);
    memset(&req, 0, sizeof(req));
    req.pub = pub;
    req.cn = rp->peer.cn;
    req.tenant = rp->peer.tenant;
    req.role = role;
    req.role_oid = cfg->ca.role_oid;
    req.kind = NS_CERT_CLIENT;
    req.dns = &dns;
    req.ip = &ip;
    req.not_before = now;
    req.not_after =
        now + (strcmp(role, "operator") == 0 ? cfg->server.operator_cert_ttl : cfg->server.agent_cert_ttl);
    atomic_fetch_add(&svc->metrics.token_ops[NS_TOK_SIGN], 1);
    if ((r = ns_cert_issue(snap->ca->signer, snap->ca->certs[0], &req, &x)) != 0) {
        ns_log(NS_LOG_WARN, "renew: issuing failed: %s", ns_strerror(r));
        ns_reply_error(rp, issue_status(svc, r));
        goto out;
    }
    if ((r = ns_certlog_write(svc->st, shard, &req, x, snap->ca->signer->id)) != 0) {
        ns_log(NS_LOG_WARN, "renew: the certificate log failed: %s", ns_strerror(r));
        ns_reply_error(rp, ns_svc_fault_status(svc, r));
        goto out;
    }
    ns_time_format(x->not_after, when);
    if ((r = pub_pem(pub, &pem)) != 0 || json_object_set_new(rec, "serial", json_string(x->serial)) != 0 ||
        json_object_set_new(rec, "not_after", json_string(when)) != 0 ||
        json_object_set_new(rec, "public_key", json_string(pem)) != 0) {
        ns_reply_error(rp, 503);
        goto out;
    }
    if ((r = record_and_reply(svc, snap, name, rec, x, rp, "renew")) != 0)
        goto out;
out:
    free(pem);
    json_decref(rec);
    ns_strv_clear(&dns);
    ns_strv_clear(&ip);
    ns_issued_free(x);
    ns_svc_snap_put(snap);
    ns_reg_request_free(rq);
}

int ns_svc_read_record(ns_svc *svc, const ns_peer *peer, char *name, size_t n, json_t **out)
{
    return read_record(svc, "agent", peer, name, n, out);
}

int ns_svc_agent_group(ns_svc *svc, const ns_peer *peer, char *group, size_t n)
{
    char name[NS_NAME_MAX + 1];
    json_t *rec = NULL;
    const char *g;
    int64_t now = ns_recs_clock_ms();
    int r;

    if (peer->have_fp &&
        ns_record_name("agent", svc->cfg->shard, peer->tenant, peer->cn, name, sizeof(name)) == 0 &&
        ns_recs_get(svc->recs, name, peer->fp, now, group, n) == 0)
        return 0;
    if ((r = read_record(svc, "agent", peer, name, sizeof(name), &rec)) != 0)
        return r;
    if ((g = json_string_value(json_object_get(rec, "group"))) == NULL || strlen(g) >= n) {
        r = NS_E_NOT_FOUND;
        goto out;
    }
    strcpy(group, g);
    if (peer->have_fp)
        ns_recs_put(svc->recs, name, peer->fp, g, now);
    r = 0;
out:
    json_decref(rec);
    return r;
}
