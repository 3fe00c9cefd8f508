#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/secmem.h"

static void *buf_alloc(bool secret, size_t n)
{
    return secret ? ns_secmem_alloc(n) : calloc(1, n ? n : 1);
}

static void buf_release(bool secret, void *p, size_t n)
{
    if (secret)
        ns_secmem_free(p, n);
    else
        free(p);
}

int ns_buf_new(size_t max, bool secret, ns_buf **out)
{
    ns_buf *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NS_E_NOMEM;
    b->max = max;
    b->secret = secret;
    *out = b;
    return 0;
}

int ns_buf_from(const void *p, size_t n, size_t max, bool secret, ns_buf **out)
{
    ns_buf *b = NULL;
    int r = NS_E_INTERNAL;

    if ((r = ns_buf_new(max, secret, &b)) != 0)
        goto out;
    if ((r = ns_buf_append(b, p, n)) != 0)
        goto out;
    *out = b;
    b = NULL;
    r = 0;
out:
    ns_buf_free(b);
    return r;
}

int ns_buf_from_str(const char *s, size_t n, bool secret, ns_buf **out)
{
    ns_buf *b = NULL;
    int r = ns_buf_from(s, n, n + 1, secret, &b);

    if (r == 0 && (r = ns_buf_put_nul(b)) == 0)
        *out = b;
    else
        ns_buf_free(b);
    return r;
}

void ns_buf_free(ns_buf *b)
{
    if (b == NULL)
        return;
    if (b->data != NULL)
        buf_release(b->secret, b->data, b->cap);
    free(b);
}

int ns_buf_reserve(ns_buf *b, size_t extra)
{
    size_t need, cap;
    uint8_t *p;

    if (extra > b->max || b->len > b->max - extra)
        return NS_E_TOO_LARGE;
    need = b->len + extra;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->max)
        cap = b->max;
    if ((p = buf_alloc(b->secret, cap)) == NULL)
        return NS_E_NOMEM;
    if (b->data != NULL) {
        memcpy(p, b->data, b->len);
        buf_release(b->secret, b->data, b->cap);
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int ns_buf_extend(ns_buf *b, size_t n, uint8_t **where)
{
    int r;
    if ((r = ns_buf_reserve(b, n)) != 0)
        return r;
    if (n == 0) {
        *where = b->data; /* may be NULL for a buffer that never held anything */
        return 0;
    }
    memset(b->data + b->len, 0, n);
    *where = b->data + b->len;
    b->len += n;
    return 0;
}

int ns_buf_append(ns_buf *b, const void *p, size_t n)
{
    uint8_t *w;
    int r;
    if (n == 0)
        return ns_buf_reserve(b, 0);
    if ((r = ns_buf_extend(b, n, &w)) != 0)
        return r;
    memcpy(w, p, n);
    return 0;
}

int ns_buf_put_u8(ns_buf *b, uint8_t v)
{
    return ns_buf_append(b, &v, 1);
}

int ns_buf_put_nul(ns_buf *b)
{
    int r = ns_buf_put_u8(b, 0);

    if (r == 0)
        b->len--;
    return r;
}

int ns_buf_put_u16(ns_buf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return ns_buf_append(b, x, sizeof(x));
}

int ns_buf_put_u32(ns_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return ns_buf_append(b, x, sizeof(x));
}

void ns_buf_truncate(ns_buf *b, size_t n)
{
    if (n >= b->len)
        return;
    if (b->secret)
        ns_wipe(b->data + n, b->len - n);
    b->len = n;
}

int ns_cur_bytes(ns_cur *c, size_t n, const uint8_t **out)
{
    if (c->len < n)
        return NS_E_FORMAT;
    *out = c->p;
    if (n == 0)
        return 0;
    c->p += n;
    c->len -= n;
    return 0;
}

int ns_cur_copy(ns_cur *c, void *out, size_t n)
{
    const uint8_t *p;
    int r;
    if ((r = ns_cur_bytes(c, n, &p)) != 0)
        return r;
    memcpy(out, p, n);
    return 0;
}

int ns_cur_u8(ns_cur *c, uint8_t *out)
{
    const uint8_t *p;
    int r;
    if ((r = ns_cur_bytes(c, 1, &p)) != 0)
        return r;
    *out = p[0];
    return 0;
}

int ns_cur_u16(ns_cur *c, uint16_t *out)
{
    const uint8_t *p;
    int r;
    if ((r = ns_cur_bytes(c, 2, &p)) != 0)
        return r;
    *out = (uint16_t)((p[0] << 8) | p[1]);
    return 0;
}

int ns_cur_u32(ns_cur *c, uint32_t *out)
{
    const uint8_t *p;
    int r;
    if ((r = ns_cur_bytes(c, 4, &p)) != 0)
        return r;
    *out = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return 0;
}

int ns_cur_sub(ns_cur *c, size_t n, ns_cur *out)
{
    const uint8_t *p;
    int r;
    if ((r = ns_cur_bytes(c, n, &p)) != 0)
        return r;
    *out = ns_cur_init(p, n);
    return 0;
}

int ns_cur_lp16(ns_cur *c, size_t min, size_t max, ns_cur *out)
{
    ns_cur t = *c; /* a failed read leaves the cursor where it was */
    uint16_t n;
    int r;
    if ((r = ns_cur_u16(&t, &n)) != 0)
        return r;
    if (n < min || n > max)
        return NS_E_FORMAT;
    if ((r = ns_cur_sub(&t, n, out)) != 0)
        return r;
    *c = t;
    return 0;
}

int ns_cur_end(const ns_cur *c)
{
    return c->len == 0 ? 0 : NS_E_FORMAT;
}
