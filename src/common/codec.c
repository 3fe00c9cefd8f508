#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include "common/codec.h"
#include "common/secmem.h"

void ns_hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

int ns_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

int ns_pct_encode_append(ns_buf *b, const char *s, size_t n, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    int r = 0;

    for (size_t i = 0; i < n && r == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            r = ns_buf_put_u8(b, c);
        } else {
            uint8_t e[3] = {'%', (uint8_t)hex[c >> 4], (uint8_t)hex[c & 15]};
            r = ns_buf_append(b, e, 3);
        }
    }
    return r;
}

int ns_hex_decode(const char *s, size_t n, bool secret, ns_buf **out)
{
    ns_buf *b = NULL;
    uint8_t *w;
    int r = NS_E_INTERNAL;

    if (n % 2 != 0)
        return NS_E_FORMAT;
    if ((r = ns_buf_new(n / 2, secret, &b)) != 0)
        goto out;
    if ((r = ns_buf_extend(b, n / 2, &w)) != 0)
        goto out;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = ns_hex_digit(s[2 * i]), lo = ns_hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            r = NS_E_FORMAT;
            goto out;
        }
        w[i] = (uint8_t)(hi << 4 | lo);
    }
    *out = b;
    b = NULL;
    r = 0;
out:
    ns_buf_free(b);
    return r;
}

static int b64_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int ns_b64_decode(const char *s, size_t n, bool secret, ns_buf **out)
{
    ns_buf *b = NULL;
    size_t pad = 0, outlen;
    uint8_t *w;
    int r = NS_E_INTERNAL;

    if (n % 4 != 0)
        return NS_E_FORMAT;
    if (n > 0 && s[n - 1] == '=')
        pad = s[n - 2] == '=' ? 2 : 1;
    outlen = n / 4 * 3 - pad;
    if ((r = ns_buf_new(outlen, secret, &b)) != 0)
        goto out;
    if ((r = ns_buf_extend(b, outlen, &w)) != 0)
        goto out;
    r = NS_E_FORMAT;
    for (size_t i = 0, o = 0; i < n; i += 4) {
        int v[4];
        size_t last = i + 4 == n;
        for (size_t k = 0; k < 4; k++) {
            if (last && k >= 4 - pad) {
                v[k] = 0; /* '=' */
                if (s[i + k] != '=')
                    goto out;
            } else if ((v[k] = b64_val(s[i + k])) < 0) {
                goto out;
            }
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        /* Canonical form: bits below the last whole byte are zero. */
        if (last && ((pad == 1 && (x & 0xff)) || (pad == 2 && (x & 0xffff))))
            goto out;
        uint8_t bytes[3] = {(uint8_t)(x >> 16), (uint8_t)(x >> 8), (uint8_t)x};
        size_t take = last ? 3 - pad : 3;
        memcpy(w + o, bytes, take);
        o += take;
        ns_wipe(bytes, sizeof(bytes));
        ns_wipe(&x, sizeof(x));
    }
    *out = b;
    b = NULL;
    r = 0;
out:
    ns_buf_free(b);
    return r;
}

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Length of the encoding of n bytes: with padding, whole quads; without, only the characters that carry
 * bits (RFC 4648 §3.2, RFC 7515 §2). */
static size_t b64_len(size_t n, bool pad)
{
    return n / 3 * 4 + (n % 3 == 0 ? 0 : pad ? 4 : n % 3 + 1);
}

/* The one base64 encoder: p[0..n) into w (b64_len(n, pad) bytes, no NUL) with the given alphabet. */
static void b64_encode_into(const char *alphabet, bool pad, const uint8_t *p, size_t n, char *w)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i += 3) {
        uint32_t x = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            x |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            x |= p[i + 2];
        w[o++] = alphabet[(x >> 18) & 63];
        w[o++] = alphabet[(x >> 12) & 63];
        if (i + 1 < n || pad)
            w[o++] = i + 1 < n ? alphabet[(x >> 6) & 63] : '=';
        if (i + 2 < n || pad)
            w[o++] = i + 2 < n ? alphabet[x & 63] : '=';
    }
}

static int b64_encode_str(const char *alphabet, bool pad, const uint8_t *p, size_t n, char **out)
{
    size_t olen = b64_len(n, pad);
    char *s = malloc(olen + 1);

    if (s == NULL)
        return NS_E_NOMEM;
    b64_encode_into(alphabet, pad, p, n, s);
    s[olen] = '\0';
    *out = s;
    return 0;
}

int ns_b64_encode(const uint8_t *p, size_t n, char **out)
{
    return b64_encode_str(b64_alphabet, true, p, n, out);
}

int ns_b64url_encode(const uint8_t *p, size_t n, char **out)
{
    return b64_encode_str(b64url_alphabet, false, p, n, out);
}

int ns_b64url_append(ns_buf *b, const uint8_t *p, size_t n)
{
    uint8_t *w = NULL;
    int r;

    if ((r = ns_buf_extend(b, b64_len(n, false), &w)) != 0)
        return r;
    b64_encode_into(b64url_alphabet, false, p, n, (char *)w);
    return 0;
}

int ns_jose_compact_sign(const char *header, size_t header_len, const uint8_t *payload, size_t payload_len,
                         ns_jose_sign_fn sign, void *ctx, size_t max, bool secret, ns_buf **out)
{
    ns_buf *b = NULL, *sig = NULL;
    int r = NS_E_INTERNAL;

    if ((r = ns_buf_new(max + 1, secret, &b)) != 0) /* + the NUL */
        return r;
    /* The signing input is the ASCII of the first two parts with the dot between them (RFC 7515 §5.1). */
    if ((r = ns_b64url_append(b, (const uint8_t *)header, header_len)) != 0 ||
        (r = ns_buf_put_u8(b, '.')) != 0 || (r = ns_b64url_append(b, payload, payload_len)) != 0 ||
        (r = sign(ctx, b->data, b->len, &sig)) != 0)
        goto out;
    if ((r = ns_buf_put_u8(b, '.')) != 0 || (r = ns_b64url_append(b, sig->data, sig->len)) != 0 ||
        (r = ns_buf_put_nul(b)) != 0)
        goto out;
    *out = b;
    b = NULL;
    r = 0;
out:
    ns_buf_free(sig);
    ns_buf_free(b);
    return r;
}

static int b64url_val(char c)
{
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    if (c == '+' || c == '/')
        return -1;
    return b64_val(c);
}

int ns_b64url_decode(const char *s, size_t n, bool secret, ns_buf **out)
{
    ns_buf *b = NULL;
    size_t rem = n % 4, outlen = n / 4 * 3 + (rem == 0 ? 0 : rem - 1);
    uint8_t *w = NULL;
    uint32_t x = 0;
    int r = NS_E_INTERNAL;

    if (rem == 1)
        return NS_E_FORMAT;
    if ((r = ns_buf_new(outlen, secret, &b)) != 0)
        goto out;
    if (outlen > 0 && (r = ns_buf_extend(b, outlen, &w)) != 0)
        goto out;
    r = NS_E_FORMAT;
    for (size_t i = 0, o = 0; i < n; i += 4) {
        size_t take = n - i >= 4 ? 3 : n - i - 1; /* 2 characters: 1 byte, 3 characters: 2 bytes */
        size_t chars = take + 1;
        x = 0;
        for (size_t k = 0; k < 4; k++) {
            int v = 0;
            if (k < chars && (v = b64url_val(s[i + k])) < 0)
                goto out;
            x = x << 6 | (uint32_t)v;
        }
        /* Canonical form: bits below the last whole byte are zero. */
        if ((take == 1 && (x & 0xffff)) || (take == 2 && (x & 0xff)))
            goto out;
        for (size_t k = 0; k < take; k++)
            w[o++] = (uint8_t)(x >> (16 - 8 * k));
    }
    *out = b;
    b = NULL;
    r = 0;
out:
    ns_wipe(&x, sizeof(x));
    ns_buf_free(b);
    return r;
}
