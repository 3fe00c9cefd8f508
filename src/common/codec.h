/* Hex and base64 (RFC 4648), strict: decoders refuse anything that is not exactly a canonical encoding; and
 * the JWS compact serialization built on base64url (RFC 7515 §7.1), for the JWT issuer and the key sources.
 */
#ifndef NS_COMMON_CODEC_H
#define NS_COMMON_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Lower-case hex of p[0..n) into out, which holds 2n+1 bytes. */
void ns_hex_encode(const uint8_t *p, size_t n, char *out);

/* The value of one hex digit (either case), or -1. */
int ns_hex_digit(char c);

/* Percent-encode s[0..n) (RFC 3986 §2.1, upper-case hex) onto b: every byte but the unreserved characters
 * A-Z a-z 0-9 - . _ ~ (§2.3), and '/' too unless keep_slash. What AWS SigV4 canonical URIs and OAuth forms
 * (application/x-www-form-urlencoded, spaces as %20) both take. */
int ns_pct_encode_append(ns_buf *b, const char *s, size_t n, bool keep_slash) NS_WUR;

/* Decode exactly 2*k hex digits (either case) into a new buffer of k bytes (secret if asked).
 * NS_E_FORMAT on any other character or an odd length. */
int ns_hex_decode(const char *s, size_t n, bool secret, ns_buf **out) NS_WUR;

/* Decode standard base64 with padding (RFC 4648 §4); no whitespace, no missing or extra padding, no
 * non-zero trailing bits. NS_E_FORMAT otherwise. */
int ns_b64_decode(const char *s, size_t n, bool secret, ns_buf **out) NS_WUR;

/* Standard base64 with padding into a new NUL-terminated string (caller frees with free()). */
int ns_b64_encode(const uint8_t *p, size_t n, char **out) NS_WUR;

/* base64url without padding (RFC 4648 §5, RFC 7515 §2) of p[0..n) into a new NUL-terminated string (caller
 * frees with free()). */
int ns_b64url_encode(const uint8_t *p, size_t n, char **out) NS_WUR;

/* The same encoding appended to b (nothing is appended on failure: NS_E_TOO_LARGE past b's cap). */
int ns_b64url_append(ns_buf *b, const uint8_t *p, size_t n) NS_WUR;

/* Sign a JWS Signing Input: a new buffer holding the signature bytes. ctx is the caller's. */
typedef int (*ns_jose_sign_fn)(void *ctx, const uint8_t *input, size_t n, ns_buf **sig);

/* The JWS Compact Serialization (RFC 7515 §7.1): BASE64URL(header) "." BASE64URL(payload) "."
 * BASE64URL(sign(the first two parts)), into a new buffer of at most max bytes (secret if asked: for a
 * token that is a credential), with a NUL behind len that max does not count. header is the JSON text of the
 * protected header. Errors of sign are returned as they are; NS_E_TOO_LARGE past max. */
int ns_jose_compact_sign(const char *header, size_t header_len, const uint8_t *payload, size_t payload_len,
                         ns_jose_sign_fn sign, void *ctx, size_t max, bool secret, ns_buf **out) NS_WUR;

/* Decode base64url without padding (RFC 4648 §5, as JWS uses it, RFC 7515 §2): only [A-Za-z0-9_-], no '=',
 * no whitespace, a length that is not 1 mod 4, and zero bits below the last whole byte, so that every byte
 * string has exactly one accepted encoding. NS_E_FORMAT otherwise. */
int ns_b64url_decode(const char *s, size_t n, bool secret, ns_buf **out) NS_WUR;

#endif
