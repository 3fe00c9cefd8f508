#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "common/codec.h"
#include "common/json.h"
#include "common/log.h"
#include "common/secmem.h"
#include "service/files.h"
#include "service/registration.h"
#include "service/service.h"

#define FILES_BODY_MAX (8u * 1024u * 1024u)

bool ns_files_etag_match(const char *h, const char *etag)
{
    size_t n = strlen(etag);

    if (h == NULL)
        return false;
    for (;;) {
        h += strspn(h, " \t,");
        if (*h == '\0')
            return false;
        if (h[0] == '*' && (h[1] == '\0' || h[1] == ',' || h[1] == ' '))
            return true;
        if (strncmp(h, "W/", 2) == 0)
            h += 2;
        if (strncmp(h, etag, n) == 0 && (h[n] == '\0' || h[n] == ',' || h[n] == ' ' || h[n] == '\t'))
            return true;
        h += strcspn(h, ",");
    }
}

static int add(ns_buf *b, const char *s)
{
    return ns_buf_append(b, s, strlen(s));
}

/* The answer of template t: its files (content from the cache and the CA bundle) and their version, in a
 * new secret buffer; the version's quoted form in etag. */
static int render(ns_svc *svc, const ns_template *t, const ns_ca_snap *snap, ns_buf **out, char etag[70])
{
    ns_buf *body = NULL, *content = NULL;
    EVP_MD_CTX *vh = NULL;
    char hex[65], *b64 = NULL;
    uint8_t md[32];
    int r;

    if ((vh = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(vh, EVP_sha256(), NULL) != 1) {
        r = NS_E_CRYPTO;
        goto out;
    }
    if ((r = ns_buf_new(FILES_BODY_MAX, true, &body)) != 0 || (r = add(body, "{\"files\":[")) != 0)
        goto out;
    for (size_t i = 0; i < t->n; i++) {
        const ns_tmpl_file *f = &t->files[i];
        if (f->ca_bundle) {
            r = ns_buf_from(snap->pem->data, snap->pem->len, snap->pem->len, false, &content);
        } else {
            r = ns_cache_export(svc->cache, svc->st, svc->kr, &svc->metrics, f->secret, f->format, &content);
            if (r != 0)
                ns_log(NS_LOG_ERROR, "files: template %s: secret %s: %s", t->name, f->secret, ns_strerror(r));
        }
        if (r != 0)
            goto out;
        SHA256(content->data, content->len, md);
        ns_hex_encode(md, sizeof(md), hex);
        if (EVP_DigestUpdate(vh, f->path, strlen(f->path) + 1) != 1 ||
            EVP_DigestUpdate(vh, f->mode, strlen(f->mode) + 1) != 1 ||
            EVP_DigestUpdate(vh, f->owner, strlen(f->owner) + 1) != 1 ||
            EVP_DigestUpdate(vh, f->group, strlen(f->group) + 1) != 1 || EVP_DigestUpdate(vh, hex, 65) != 1) {
            r = NS_E_CRYPTO;
            goto out;
        }
        if ((r = ns_b64_encode(content->data, content->len, &b64)) != 0)
            goto out;
        /* Paths, modes and names are checked by the config parser: nothing in them needs JSON escaping. */
        if ((r = add(body, i ? ",{\"path\":\"" : "{\"path\":\"")) != 0 || (r = add(body, f->path)) != 0 ||
            (r = add(body, "\",\"mode\":\"")) != 0 || (r = add(body, f->mode)) != 0 ||
            (r = add(body, "\",\"owner\":\"")) != 0 || (r = add(body, f->owner)) != 0 ||
            (r = add(body, "\",\"group\":\"")) != 0 || (r = add(body, f->group)) != 0 ||
            (r = add(body, "\",\"sha256\":\"")) != 0 || (r = add(body, hex)) != 0 ||
            (r = add(body, "\",\"content\":\"")) != 0 || (r = add(body, b64)) != 0 ||
            (r = add(body, "\"}")) != 0)
            goto out;
        ns_wipe(b64, strlen(b64));
        free(b64);
        b64 = NULL;
        ns_buf_free(content);
        content = NULL;
    }
    if (EVP_DigestFinal_ex(vh, md, NULL) != 1) {
        r = NS_E_CRYPTO;
        goto out;
    }
    ns_hex_encode(md, sizeof(md), hex);
    if ((r = add(body, "],\"version\":\"")) != 0 || (r = add(body, hex)) != 0 ||
        (r = add(body, "\"}\n")) != 0)
        goto out;
    snprintf(etag, 70, "\"%s\"", hex);
    *out = body;
    body = NULL;
    r = 0;
out:
    if (b64 != NULL) {
        ns_wipe(b64, strlen(b64));
        free(b64);
    }
    ns_buf_free(content);
    ns_buf_free(body);
    EVP_MD_CTX_free(vh);
    return r;
}

/* Per request: the client certificate (authz), the agent's group (records.h), the template, then the
 * answer rendered for the current templates, secrets and CA bundle (answers.h), rendered here on a miss.
 * A hit sends the cached bytes by reference: no copy, no hashing, no encoding. */
void ns_svc_files(ns_svc *svc, X509 *cert, STACK_OF(X509) * chain, const char *if_none_match, ns_reply *rp)
{
    ns_ca_snap *snap = NULL;
    ns_answer *ans = NULL;
    ns_buf *body = NULL;
    const ns_template *t;
    ns_answer_stamp stamp;
    char group[NS_RECS_GROUP_MAX], etag[70];
    bool locked = false;
    int r;

    if (!atomic_load(&svc->ready)) {
        ns_reply_error(rp, 503);
        goto out;
    }
    snap = ns_svc_snap_get(svc);
    if ((r = ns_authz_check(cert, chain, snap->trust, svc->cfg->ca.role_oid, "agent", &rp->peer)) != 0) {
        ns_reply_error(rp, r == NS_E_CLAIMS ? 403 : r == NS_E_PERM ? 401 : 503);
        goto out;
    }
    if ((r = ns_svc_agent_group(svc, &rp->peer, group, sizeof(group))) != 0) {
        if (r == NS_E_NOT_FOUND)
            ns_log(NS_LOG_INFO, "files: no registration record with a group for the agent");
        ns_svc_record_refusal(svc, r, rp);
        goto out;
    }
    pthread_rwlock_rdlock(&svc->lock);
    locked = true;
    if ((t = ns_config_template_for(svc->tcfg, group)) == NULL) {
        ns_log(NS_LOG_INFO, "files: no template for the agent's group");
        ns_reply_error(rp, 404);
        goto out;
    }
    /* The stamp is read before rendering: a secret replaced meanwhile makes this answer stale at once. */
    stamp.tmpl_gen = atomic_load(&svc->tmpl_gen);
    stamp.cache_gen = ns_cache_generation(svc->cache);
    stamp.ca_version = snap->version;
    if (ns_answers_get(svc->answers, t->name, &stamp, &ans) != 0) {
        if ((r = render(svc, t, snap, &body, etag)) != 0 || (r = ns_answer_new(body, etag, &ans)) != 0) {
            body = NULL;
            ns_reply_error(rp, ns_svc_fault_status(svc, r));
            goto out;
        }
        body = NULL;
        if (ns_answers_set(svc->answers, t->name, &stamp, ans) != 0)
            ns_log(NS_LOG_DEBUG, "files: answer not cached (no memory)");
    }
    snprintf(rp->etag, sizeof(rp->etag), "%s", ans->etag);
    if (ns_files_etag_match(if_none_match, rp->etag)) {
        rp->status = 304;
        goto out;
    }
    rp->status = 200;
    rp->content_type = "application/json";
    rp->answer = ans;
    ans = NULL;
out:
    if (locked)
        pthread_rwlock_unlock(&svc->lock);
    ns_answer_put(ans);
    ns_buf_free(body);
    ns_svc_snap_put(snap);
}

/* The bundle as JSON, and its ETag: the quoted SHA-256 of the PEM itself, so that an agent can send the
 * hash of the ca.crt it holds (doc/protocol.md) and get 304 while the two agree. */
void ns_svc_ca(ns_svc *svc, const char *if_none_match, ns_reply *rp)
{
    ns_ca_snap *snap = NULL;
    json_t *o = NULL;
    char *text = NULL, hex[65];
    uint8_t md[32];

    if (!atomic_load(&svc->ready) || (snap = ns_svc_snap_get(svc)) == NULL) {
        ns_reply_error(rp, 503);
        goto out;
    }
    SHA256(snap->pem->data, snap->pem->len, md);
    ns_hex_encode(md, sizeof(md), hex);
    snprintf(rp->etag, sizeof(rp->etag), "\"%s\"", hex);
    if (ns_files_etag_match(if_none_match, rp->etag)) {
        rp->status = 304;
        goto out;
    }
    if ((o = json_object()) == NULL ||
        json_object_set_new(o, "ca_bundle", json_stringn((const char *)snap->pem->data, snap->pem->len)) !=
            0 ||
        (text = json_dumps(o, JSON_COMPACT)) == NULL ||
        ns_buf_from(text, strlen(text), strlen(text) + 1, false, &rp->body) != 0 ||
        ns_buf_append(rp->body, "\n", 1) != 0) {
        rp->etag[0] = '\0';
        ns_reply_error(rp, 503);
        goto out;
    }
    rp->status = 200;
    rp->content_type = "application/json";
out:
    ns_json_free(text);
    json_decref(o);
    ns_svc_snap_put(snap);
}
