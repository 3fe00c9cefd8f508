/* Owning byte buffers with a hard size cap, and a borrowed, consume-only cursor.
 *
 * ns_buf owns its bytes. A buffer marked secret lives in the secure heap (secmem.h) and is wiped when it
 * grows, shrinks or is freed. Appends beyond `max` fail with NS_E_TOO_LARGE and leave the buffer as it was.
 *
 * ns_cur borrows bytes it does not own and only moves forward: every read checks the remaining length
 * first (`if (c->len < n) fail`), length-prefixed fields come back as sub-cursors, and ns_cur_end()
 * reports leftover bytes as an error. Every binary format in the project is parsed with it. */
#ifndef NS_COMMON_BUF_H
#define NS_COMMON_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct ns_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max;
    bool secret;
} ns_buf;

/* A new empty buffer holding at most `max` bytes. */
int ns_buf_new(size_t max, bool secret, ns_buf **out) NS_WUR;
/* A new buffer holding a copy of p[0..n). */
int ns_buf_from(const void *p, size_t n, size_t max, bool secret, ns_buf **out) NS_WUR;
/* A new buffer holding a copy of s[0..n) with a NUL behind len, so that data reads as a C string. */
int ns_buf_from_str(const char *s, size_t n, bool secret, ns_buf **out) NS_WUR;
/* Wipes (if secret) and frees; NULL is accepted. */
void ns_buf_free(ns_buf *b);

int ns_buf_reserve(ns_buf *b, size_t extra) NS_WUR;
int ns_buf_append(ns_buf *b, const void *p, size_t n) NS_WUR;
int ns_buf_put_u8(ns_buf *b, uint8_t v) NS_WUR;
/* Put a NUL behind len, not counted in it, so that data reads as a C string (needs one byte below max). */
int ns_buf_put_nul(ns_buf *b) NS_WUR;
int ns_buf_put_u16(ns_buf *b, uint16_t v) NS_WUR; /* big-endian */
int ns_buf_put_u32(ns_buf *b, uint32_t v) NS_WUR; /* big-endian */
/* Extend by n bytes and return a pointer to them (zeroed) for the caller to fill. */
int ns_buf_extend(ns_buf *b, size_t n, uint8_t **where) NS_WUR;
/* Drop bytes past n (wiping them if secret). n must be <= len. */
void ns_buf_truncate(ns_buf *b, size_t n);

typedef struct ns_cur {
    const uint8_t *p;
    size_t len;
} ns_cur;

static inline ns_cur ns_cur_init(const void *p, size_t len)
{
    ns_cur c = {(const uint8_t *)p, len};
    return c;
}

int ns_cur_u8(ns_cur *c, uint8_t *out) NS_WUR;
int ns_cur_u16(ns_cur *c, uint16_t *out) NS_WUR;
int ns_cur_u32(ns_cur *c, uint32_t *out) NS_WUR;
/* Borrow the next n bytes. */
int ns_cur_bytes(ns_cur *c, size_t n, const uint8_t **out) NS_WUR;
/* Copy the next n bytes into out. */
int ns_cur_copy(ns_cur *c, void *out, size_t n) NS_WUR;
/* The next n bytes as a sub-cursor. */
int ns_cur_sub(ns_cur *c, size_t n, ns_cur *out) NS_WUR;
/* A u16 big-endian length, then that many bytes as a sub-cursor; the length must be in [min, max]. */
int ns_cur_lp16(ns_cur *c, size_t min, size_t max, ns_cur *out) NS_WUR;
/* NS_E_FORMAT if any bytes remain. */
int ns_cur_end(const ns_cur *c) NS_WUR;

#endif
