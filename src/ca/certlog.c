#include "ns-build.h"

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
#include "config/schema.h"
#include "secrets/document.h"

/* The certificate log: one small JSON object per issued certificate, create-only, so that the log of a
 * shard is the list of its objects and standby servers never overwrite each other's entries. */

#define SUBJECT_MAX 40
#define ATTEMPTS    64

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

int ns_certlog_write(ns_store *st, const char *shard, const ns_cert_req *req, const ns_issued *cert,
                     const char *issuer_id)
{
    json_t *o = NULL;
    char *text = NULL, seg[SUBJECT_MAX + 1], name[NS_NAME_MAX + 1], nb[32], na[32], at[32];
    int64_t ms;
    int r = NS_E_INTERNAL;

    if (!ns_cfg_valid_name(shard) || !ns_cfg_valid_name(req->tenant)) {
        ns_log(NS_LOG_ERROR, "shard and tenant must be [A-Za-z0-9][A-Za-z0-9._-]*, at most 63 characters");
        return NS_E_INVAL;
    }
    ns_time_format(cert->not_before, nb);
    ns_time_format(cert->not_after, na);
    ms = ns_now_ms();
    ns_time_format(ms / 1000, at);
    o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "serial", cert->serial, "subject",
                  cert->subject, "cn", req->cn, "tenant", req->tenant, "kind",
                  req->kind == NS_CERT_SERVER ? "server" : "client", "not_before", nb, "not_after", na,
                  "issuer_key_id", issuer_id, "issued_at", at);
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
    return r;
}
