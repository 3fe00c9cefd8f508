/* Raw key material for software KEKs: exactly 32 raw bytes, or 64 hex digits, or 44 characters of padded
 * base64 — each optionally followed by one newline (except raw). Detected strictly by length and alphabet;
 * anything else is NS_E_KEY_FORMAT. */
#ifndef NS_KEYS_KEYMAT_H
#define NS_KEYS_KEYMAT_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

/* Decode p[0..n) into a new secret 32-byte buffer. */
int ns_keymat_parse(const uint8_t *p, size_t n, ns_buf **key) NS_WUR;

/* Read a key file: regular file, not a symlink, no access for group or others (NS_E_PERM), at most 256
 * bytes; then ns_keymat_parse. Errors are logged with the path. */
int ns_keymat_read_file(const char *path, ns_buf **key) NS_WUR;

/* Key from an environment variable (NS_E_NOT_FOUND if unset). */
int ns_keymat_from_env(const char *name, ns_buf **key) NS_WUR;

#endif
