#include "ns-build.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "common/codec.h"
#include "common/log.h"
#include "jwt/nonce.h"
#include "keys/aead.h"

#define JTI_BYTES 16
#define JTI_CHARS 22

int ns_nonce_kind_parse(const char *s, enum ns_nonce_kind *out)
{
    if (strcmp(s, "agent") == 0)
        *out = NS_NONCE_AGENT;
    else if (strcmp(s, "operator") == 0)
        *out = NS_NONCE_OPERATOR;
    else
        return NS_E_INVAL;
    return 0;
}

const char *ns_nonce_kind_name(enum ns_nonce_kind k)
{
    return k == NS_NONCE_AGENT ? "agent" : k == NS_NONCE_OPERATOR ? "operator" : "any";
}

static bool alnum(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool ns_nonce_name_ok(const char *s)
{
    size_t n = 0;

    if (s == NULL || !alnum(s[0]))
        return false;
    for (; s[n] != '\0'; n++)
        if (n >= NS_NONCE_NAME_MAX || !(alnum(s[n]) || s[n] == '.' || s[n] == '_' || s[n] == '-'))
            return false;
    return true;
}

bool ns_nonce_hash_ok(const char *s)
{
    size_t n = 0;

    if (s == NULL)
        return false;
    for (; s[n] != '\0'; n++)
        if (n >= NS_NONCE_HASH_MAX || !((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n >= NS_NONCE_HASH_MIN;
}

static int check_req(const ns_config *cfg, const ns_nonce_req *q, const char **shard, int64_t *ttl)
{
    const char *bad = NULL;

    *shard = q->shard != NULL ? q->shard : cfg->shard;
    *ttl = q->ttl != 0                    ? q->ttl
           : q->kind == NS_NONCE_OPERATOR ? cfg->nonce.operator_ttl
                                          : cfg->nonce.agent_ttl;
    if (q->kind != NS_NONCE_AGENT && q->kind != NS_NONCE_OPERATOR)
        bad = "kind must be agent or operator";
    else if (!ns_nonce_name_ok(q->sub))
        bad = "sub must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}";
    else if (!ns_nonce_name_ok(q->tenant))
        bad = "tenant must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}";
    else if (!ns_nonce_name_ok(*shard))
        bad = "shard must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}";
    else if (q->group != NULL && !ns_nonce_name_ok(q->group))
        bad = "group must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}";
    else if (q->config_hash != NULL && !ns_nonce_hash_ok(q->config_hash))
        bad = "config hash must be 8..128 lower-case hex digits";
    else if (*ttl < 1 || *ttl > NS_NONCE_TTL_MAX)
        bad = "ttl must be 1s..30d";
    if (bad != NULL) {
        ns_log(NS_LOG_ERROR, "nonce: %s", bad);
        return NS_E_INVAL;
    }
    return 0;
}

/* s as JSON string content: only '"' and '\\' need escaping here (the issuer is printable UTF-8; every other
 * claim has a restricted alphabet). out holds 2 * strlen(s) + 1 bytes. */
static void json_escape(const char *s, char *out)
{
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            *out++ = '\\';
        *out++ = *s;
    }
    *out = '\0';
}

int ns_nonce_issue(const ns_config *cfg, const ns_keyset *ks, const ns_nonce_req *req, int64_t now,
                   char **jwt)
{
    uint8_t jti_raw[JTI_BYTES];
    char *jti = NULL, iss[2 * 128 + 1], claims[2048];
    const char *shard = NULL;
    int64_t ttl = 0;
    int len, r = NS_E_INTERNAL;

    if (ks == NULL || ks->n == 0)
        return NS_E_INVAL;
    if ((r = check_req(cfg, req, &shard, &ttl)) != 0)
        return r;
    if (strlen(cfg->nonce.issuer) > 128)
        return NS_E_INVAL;
    json_escape(cfg->nonce.issuer, iss);
    if ((r = ns_random(jti_raw, sizeof(jti_raw))) != 0 ||
        (r = ns_b64url_encode(jti_raw, sizeof(jti_raw), &jti)) != 0)
        goto out;
    /* The claims are written as text rather than built with jansson: every value is validated above (names,
     * hex, base64url, integers) or escaped (iss), and this keeps the signing path free of jansson's
     * allocations (doc/benchmarks.md). Member order is fixed; verification does not depend on it. */
    len = snprintf(claims, sizeof(claims),
                   "{\"sub\":\"%s\",\"iat\":%" PRId64 ",\"nbf\":%" PRId64 ",\"exp\":%" PRId64
                   ",\"iss\":\"%s\",\"jti\":\"%s\",\"kind\":\"%s\",\"cluster_id\":\"%s\",\"tenant\":\"%s\","
                   "\"shard\":\"%s\",\"on_demand\":%s%s%s%s%s%s%s}",
                   req->sub, now, now, now + ttl, iss, jti, ns_nonce_kind_name(req->kind), cfg->cluster_id,
                   req->tenant, shard, req->on_demand ? "true" : "false", req->group ? ",\"group\":\"" : "",
                   req->group ? req->group : "", req->group ? "\"" : "",
                   req->config_hash ? ",\"config_hash\":\"" : "", req->config_hash ? req->config_hash : "",
                   req->config_hash ? "\"" : "");
    if (len < 0 || (size_t)len >= sizeof(claims)) {
        r = NS_E_INTERNAL;
        goto out;
    }
    r = ns_jws_sign_payload(ks->s[0], claims, (size_t)len, jwt);
out:
    free(jti);
    return r;
}

/* ---- verification ---- */

enum ctype { C_STR, C_INT, C_BOOL };

static const struct claim {
    const char *name;
    enum ctype type;
    bool required;
} claim_table[] = {
    {"sub", C_STR, true},          {"iat", C_INT, true},        {"nbf", C_INT, true},
    {"exp", C_INT, true},          {"iss", C_STR, true},        {"jti", C_STR, true},
    {"kind", C_STR, true},         {"cluster_id", C_STR, true}, {"tenant", C_STR, true},
    {"shard", C_STR, true},        {"on_demand", C_BOOL, true}, {"group", C_STR, false},
    {"config_hash", C_STR, false},
};
#define N_CLAIMS (sizeof(claim_table) / sizeof(claim_table[0]))

static int claim_log(const char *name, const char *why)
{
    ns_log(NS_LOG_INFO, "nonce: claim %s %s", name, why);
    return NS_E_CLAIMS;
}

static bool jti_ok(const char *s)
{
    ns_buf *b = NULL;
    bool ok = strlen(s) == JTI_CHARS && ns_b64url_decode(s, JTI_CHARS, false, &b) == 0 && b->len == JTI_BYTES;
    ns_buf_free(b);
    return ok;
}

/* Every member known, of its type, with a valid value; every required one present. */
static int check_shape(const json_t *c)
{
    const char *key;
    const json_t *v;

    json_object_foreach((json_t *)c, key, v)
    {
        size_t i;
        for (i = 0; i < N_CLAIMS; i++)
            if (strcmp(key, claim_table[i].name) == 0)
                break;
        if (i == N_CLAIMS)
            return claim_log("(unknown)", "is not allowed");
    }
    for (size_t i = 0; i < N_CLAIMS; i++) {
        const struct claim *cl = &claim_table[i];
        const char *s;
        v = json_object_get(c, cl->name);
        if (v == NULL) {
            if (cl->required)
                return claim_log(cl->name, "is missing");
            continue;
        }
        if ((cl->type == C_STR && !json_is_string(v)) || (cl->type == C_INT && !json_is_integer(v)) ||
            (cl->type == C_BOOL && !json_is_boolean(v)))
            return claim_log(cl->name, "has the wrong JSON type");
        if (cl->type == C_INT && (json_integer_value(v) < 0 || json_integer_value(v) > (1LL << 40)))
            return claim_log(cl->name, "is out of range");
        if (cl->type != C_STR)
            continue;
        s = json_string_value(v);
        if (strlen(s) != json_string_length(v))
            return claim_log(cl->name, "holds a NUL");
        if ((strcmp(cl->name, "sub") == 0 || strcmp(cl->name, "tenant") == 0 ||
             strcmp(cl->name, "shard") == 0 || strcmp(cl->name, "group") == 0) &&
            !ns_nonce_name_ok(s))
            return claim_log(cl->name, "is not a valid name");
        if (strcmp(cl->name, "config_hash") == 0 && !ns_nonce_hash_ok(s))
            return claim_log(cl->name, "is not 8..128 lower-case hex digits");
        if (strcmp(cl->name, "jti") == 0 && !jti_ok(s))
            return claim_log(cl->name, "is not 16 bytes in base64url");
    }
    return 0;
}

static int64_t int_claim(const json_t *c, const char *name)
{
    return (int64_t)json_integer_value(json_object_get(c, name));
}

static const char *str_claim(const json_t *c, const char *name)
{
    return json_string_value(json_object_get(c, name));
}

int ns_nonce_verify(const ns_config *cfg, const ns_keyset *ks, const char *text, size_t n,
                    enum ns_nonce_kind kind, int64_t now, ns_nonce **out)
{
    ns_jws *j = NULL;
    ns_nonce *nc = NULL;
    ns_signer *key = NULL;
    enum ns_nonce_kind got;
    int64_t iat, nbf, exp, lw = cfg->nonce.leeway;
    int r = NS_E_INTERNAL;

    if ((r = ns_jws_parse(text, n, &j)) != 0 || (r = ns_jws_verify(j, ks, &key)) != 0)
        goto out;
    if ((r = check_shape(j->claims)) != 0)
        goto out;
    iat = int_claim(j->claims, "iat");
    nbf = int_claim(j->claims, "nbf");
    exp = int_claim(j->claims, "exp");
    if (exp <= nbf || nbf < iat) {
        r = claim_log("exp/nbf/iat", "are out of order");
        goto out;
    }
    /* RFC 7519 §4.1.4/4.1.5, with the configured clock-skew leeway. */
    if (exp + lw <= now) {
        ns_log(NS_LOG_INFO, "nonce: expired %lld s ago", (long long)(now - exp));
        r = NS_E_EXPIRED;
        goto out;
    }
    if (nbf > now + lw || iat > now + lw) {
        ns_log(NS_LOG_INFO, "nonce: not valid for another %lld s", (long long)(nbf - now));
        r = NS_E_EXPIRED;
        goto out;
    }
    if (strcmp(str_claim(j->claims, "iss"), cfg->nonce.issuer) != 0) {
        r = claim_log("iss", "is not this issuer");
        goto out;
    }
    if (strcmp(str_claim(j->claims, "cluster_id"), cfg->cluster_id) != 0) {
        r = claim_log("cluster_id", "is not this cluster");
        goto out;
    }
    if (ns_nonce_kind_parse(str_claim(j->claims, "kind"), &got) != 0) {
        r = claim_log("kind", "is neither agent nor operator");
        goto out;
    }
    if (kind != NS_NONCE_ANY && got != kind) {
        r = claim_log("kind", "is not the kind asked for");
        goto out;
    }
    if ((nc = calloc(1, sizeof(*nc))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    nc->kind = got;
    nc->exp = exp;
    memcpy(nc->kid, j->kid, sizeof(nc->kid));
    if (SHA256(j->signing_input->data, j->signing_input->len, nc->ledger_key) == NULL) {
        r = NS_E_CRYPTO;
        goto out;
    }
    nc->claims = json_incref(j->claims);
    *out = nc;
    nc = NULL;
    r = 0;
out:
    ns_nonce_free(nc);
    ns_jws_free(j);
    return r;
}

void ns_nonce_free(ns_nonce *nc)
{
    if (nc == NULL)
        return;
    json_decref(nc->claims);
    free(nc);
}
