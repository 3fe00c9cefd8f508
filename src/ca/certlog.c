#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>

#include "ca/ca.h"
#include "common/json.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "secrets/document.h"

/* The certificate log: one small JSON object per issued certificate, create-only, so that the log of a
 * shard is the list of its objects and standby servers never overwrite each other's entries. */

#define SUBJECT_MAX 40
#define ATTEMPTS    8

static int valid_label(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 ||
        !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static void subject_segment(const char *cn, char out[SUBJECT_MAX + 1])
{
    size_t i;
    for (i = 0; cn[i] != '\0' && i < SUBJECT_MAX; i++) {
        char c = cn[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-';
        out[i] = ok ? c : '_';
    }
    out[i] = '\0';
    if (i == 0)
        strcpy(out, "_");
}

static int asn1_secs(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return NS_E_FORMAT;
    *out = (int64_t)timegm(&tm);
    return 0;
}

static int subject_text(X509 *x, char **out)
{
    BIO *bio = BIO_new(BIO_s_mem());
    BUF_MEM *mem = NULL;
    int r = NS_E_CRYPTO;

    if (bio == NULL)
        return NS_E_NOMEM;
    if (X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) < 0)
        goto out;
    BIO_get_mem_ptr(bio, &mem);
    if ((*out = strndup(mem->data, mem->length)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    r = 0;
out:
    BIO_free(bio);
    return r;
}

int ns_certlog_write(ns_store *st, const char *shard, const ns_cert_req *req, X509 *cert,
                     const char *issuer_id)
{
    json_t *o = NULL;
    char *text = NULL, *subject = NULL, serial[41], seg[SUBJECT_MAX + 1], name[NS_NAME_MAX + 1], nb[32],
         na[32], at[32];
    int64_t t_nb = 0, t_na = 0, ms;
    int r = NS_E_INTERNAL;

    if (!valid_label(shard) || !valid_label(req->tenant)) {
        ns_log(NS_LOG_ERROR, "shard and tenant must be [A-Za-z0-9][A-Za-z0-9._-]*, at most 63 characters");
        return NS_E_INVAL;
    }
    if ((r = ns_cert_serial_hex(cert, serial)) != 0 || (r = subject_text(cert, &subject)) != 0 ||
        (r = asn1_secs(X509_get0_notBefore(cert), &t_nb)) != 0 ||
        (r = asn1_secs(X509_get0_notAfter(cert), &t_na)) != 0)
        goto out;
    ns_time_format(t_nb, nb);
    ns_time_format(t_na, na);
    ms = ns_now_ms();
    ns_time_format(ms / 1000, at);
    o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "serial", serial, "subject", subject, "cn",
                  req->cn, "tenant", req->tenant, "kind", req->kind == NS_CERT_SERVER ? "server" : "client",
                  "not_before", nb, "not_after", na, "issuer_key_id", issuer_id, "issued_at", at);
    if (o == NULL || (req->role != NULL && json_object_set_new(o, "role", json_string(req->role)) != 0)) {
        r = NS_E_NOMEM;
        goto out;
    }
    if ((text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    subject_segment(req->cn, seg);
    /* Two certificates for one subject in the same millisecond: the later takes the next free one. */
    for (int i = 0; i < ATTEMPTS; i++, ms++) {
        snprintf(name, sizeof(name), "shard/%s/certlog/%s.%lld.%s.json", shard, req->tenant, (long long)ms,
                 seg);
        r = ns_store_put(st, name, (const uint8_t *)text, strlen(text), NS_PUT_CREATE, NULL);
        if (r != NS_E_EXISTS)
            break;
    }
out:
    ns_json_free(text);
    json_decref(o);
    free(subject);
    return r;
}
