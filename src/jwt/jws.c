#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include "common/codec.h"
#include "common/json.h"
#include "common/log.h"
#include "jwt/jws.h"

/* The algorithms a key type may imply (keytype.h). Anything else, "none" and HS256 included, is refused
 * before any key is looked at (RFC 8725 §2.1, §3.1). */
static const char *const known_algs[] = {"EdDSA", "ES256", "ES384", "RS256"};

static int alg_known(const char *alg)
{
    for (size_t i = 0; i < sizeof(known_algs) / sizeof(known_algs[0]); i++)
        if (strcmp(alg, known_algs[i]) == 0)
            return 1;
    return 0;
}

static int sign_raw(void *ctx, const uint8_t *input, size_t n, ns_buf **sig)
{
    return ns_signer_sign(ctx, NS_SIG_RAW, input, n, sig);
}

int ns_jws_sign_payload(ns_signer *s, const char *payload, size_t n, char **out)
{
    char hdr[160];
    ns_buf *b = NULL;
    char *text;
    int len, r = NS_E_INTERNAL;

    /* alg is a constant of the key type and kid a base64url thumbprint: nothing to escape. */
    len = snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", s->type->jws_alg,
                   s->id);
    if (len < 0 || (size_t)len >= sizeof(hdr))
        return NS_E_INTERNAL;
    if ((r = ns_jose_compact_sign(hdr, (size_t)len, (const uint8_t *)payload, n, sign_raw, s, NS_JWS_MAX,
                                  false, &b)) != 0)
        goto out;
    if ((text = strdup((const char *)b->data)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    *out = text;
    r = 0;
out:
    ns_buf_free(b);
    return r;
}

/* The next segment up to a '.' (consumed, not part of the segment), or the rest when last. */
static int next_segment(ns_cur *c, int last, ns_cur *seg)
{
    const uint8_t *dot = c->len > 0 ? memchr(c->p, '.', c->len) : NULL;
    const uint8_t *sep = NULL;
    int r;

    if (last) {
        if (dot != NULL)
            return NS_E_FORMAT; /* a fourth segment */
        return ns_cur_sub(c, c->len, seg);
    }
    if (dot == NULL)
        return NS_E_FORMAT;
    if ((r = ns_cur_sub(c, (size_t)(dot - c->p), seg)) != 0 || (r = ns_cur_bytes(c, 1, &sep)) != 0)
        return r;
    return 0;
}

/* Decode one base64url segment, which must not be empty. */
static int decode_segment(const ns_cur *seg, ns_buf **bytes)
{
    if (seg->len == 0)
        return NS_E_FORMAT;
    return ns_b64url_decode((const char *)seg->p, seg->len, false, bytes);
}

static int parse_object(const ns_buf *b, json_t **out)
{
    json_error_t err;
    json_t *v;

    if (b->len == 0)
        return NS_E_FORMAT;
    /* JSON_REJECT_DUPLICATES: RFC 7515 §5.2 step 4 and RFC 7519 §4 want duplicates refused, not resolved. */
    if ((v = json_loadb((const char *)b->data, b->len, JSON_REJECT_DUPLICATES, &err)) == NULL)
        return NS_E_FORMAT;
    if (!json_is_object(v)) {
        json_decref(v);
        return NS_E_FORMAT;
    }
    *out = v;
    return 0;
}

/* Copy the string member `name` (1..max-1 bytes) into out. */
static int header_string(const json_t *hdr, const char *name, char *out, size_t max)
{
    const json_t *v = json_object_get(hdr, name);
    size_t n;

    if (!json_is_string(v))
        return NS_E_FORMAT;
    n = json_string_length(v);
    if (n == 0 || n >= max || strlen(json_string_value(v)) != n)
        return NS_E_FORMAT;
    memcpy(out, json_string_value(v), n + 1);
    return 0;
}

static int check_header(const json_t *hdr, ns_jws *j)
{
    char typ[8];
    int r;

    /* Exactly alg, typ and kid: crit (RFC 7515 §4.1.11), jku, x5u, jwk, x5c and anything else are refused,
     * since a key or an extension named by the token itself must never be trusted. */
    if (json_object_size(hdr) != 3)
        return NS_E_FORMAT;
    if ((r = header_string(hdr, "alg", j->alg, sizeof(j->alg))) != 0 ||
        (r = header_string(hdr, "typ", typ, sizeof(typ))) != 0 ||
        (r = header_string(hdr, "kid", j->kid, sizeof(j->kid))) != 0)
        return r;
    if (strcmp(typ, "JWT") != 0 || !alg_known(j->alg))
        return NS_E_FORMAT;
    return 0;
}

int ns_jws_parse(const char *text, size_t n, ns_jws **out)
{
    ns_jws *j = NULL;
    ns_cur c = ns_cur_init(text, n), h, p, s;
    ns_buf *hb = NULL, *pb = NULL;
    json_t *hdr = NULL;
    int r = NS_E_INTERNAL;

    ns_json_init();
    if (n > NS_JWS_MAX)
        return NS_E_TOO_LARGE;
    if ((r = next_segment(&c, 0, &h)) != 0 || (r = next_segment(&c, 0, &p)) != 0 ||
        (r = next_segment(&c, 1, &s)) != 0 || (r = ns_cur_end(&c)) != 0)
        return NS_E_FORMAT;
    if ((j = calloc(1, sizeof(*j))) == NULL)
        return NS_E_NOMEM;
    if ((r = decode_segment(&h, &hb)) != 0 || (r = decode_segment(&p, &pb)) != 0 ||
        (r = decode_segment(&s, &j->sig)) != 0)
        goto out;
    if ((r = parse_object(hb, &hdr)) != 0 || (r = check_header(hdr, j)) != 0 ||
        (r = parse_object(pb, &j->claims)) != 0)
        goto out;
    /* The signing input is the header and payload segments as received (RFC 7515 §5.2 step 8). */
    if ((r = ns_buf_from(text, h.len + 1 + p.len, h.len + 1 + p.len, false, &j->signing_input)) != 0)
        goto out;
    *out = j;
    j = NULL;
    r = 0;
out:
    if (r == NS_E_TOO_LARGE)
        r = NS_E_FORMAT; /* a segment longer than its decoded size: cannot happen, but never leak it */
    json_decref(hdr);
    ns_buf_free(hb);
    ns_buf_free(pb);
    ns_jws_free(j);
    return r;
}

int ns_jws_verify(const ns_jws *j, const ns_keyset *ks, ns_signer **key)
{
    ns_signer *s;
    int r;

    if ((s = ns_keyset_find(ks, j->kid)) == NULL) {
        ns_log(NS_LOG_INFO, "JWT kid '%s' is not a key of %s", j->kid, ks->origin);
        return NS_E_KEY_UNKNOWN;
    }
    /* The key decides the algorithm; the header may only agree with it. */
    if (strcmp(j->alg, s->type->jws_alg) != 0) {
        ns_log(NS_LOG_INFO, "JWT alg %s does not match key %s (%s)", j->alg, j->kid, s->type->jws_alg);
        return NS_E_INTEGRITY;
    }
    if ((r = ns_sig_verify(s->pub, s->type, NS_SIG_RAW, j->signing_input->data, j->signing_input->len,
                           j->sig->data, j->sig->len)) != 0)
        return r;
    if (key != NULL)
        *key = s;
    return 0;
}

int ns_jws_jwks(const ns_keyset *ks, ns_buf **out)
{
    ns_jwks_key *keys = calloc(ks->n > 0 ? ks->n : 1, sizeof(*keys));
    int r;

    if (keys == NULL)
        return NS_E_NOMEM;
    for (size_t i = 0; i < ks->n; i++)
        keys[i] = (ns_jwks_key){ks->s[i]->pub, ks->s[i]->id, ks->s[i]->type->jws_alg};
    r = ns_keytype_jwks(keys, ks->n, false, out);
    free(keys);
    return r;
}

void ns_jws_free(ns_jws *j)
{
    if (j == NULL)
        return;
    json_decref(j->claims);
    ns_buf_free(j->signing_input);
    ns_buf_free(j->sig);
    free(j);
}
