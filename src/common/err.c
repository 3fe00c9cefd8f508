#include "ns-build.h"

#include "common/err.h"

const char *ns_strerror(int err)
{
    switch (err) {
    case NS_OK:
        return "success";
    case NS_E_INVAL:
        return "invalid value";
    case NS_E_FORMAT:
        return "malformed or truncated data";
    case NS_E_VERSION:
        return "unknown format version";
    case NS_E_TOO_LARGE:
        return "length above its limit";
    case NS_E_NAME:
        return "invalid object name";
    case NS_E_KEY_FORMAT:
        return "key is not 32 raw bytes, base64 or hex";
    case NS_E_NOT_FOUND:
        return "not found";
    case NS_E_INTEGRITY:
        return "integrity check failed (tampered, corrupt or renamed data)";
    case NS_E_KEK_UNKNOWN:
        return "encrypted under an encryption key id that no configured key has";
    case NS_E_KEK_WRONG:
        return "the configured key for this encryption key id is the wrong key";
    case NS_E_PIN:
        return "token login failed (wrong or locked PIN)";
    case NS_E_PERM:
        return "file permissions too open";
    case NS_E_KEY_UNKNOWN:
        return "signed by a key id that no trusted key has";
    case NS_E_EXPIRED:
        return "expired or not yet valid";
    case NS_E_CLAIMS:
        return "claims not valid here (wrong kind, cluster or missing claim)";
    case NS_E_REPLAYED:
        return "already used (single-use nonce)";
    case NS_E_SOURCE_DENIED:
        return "the key source refused access (credentials or permissions)";
    case NS_E_TOKEN:
        return "token error";
    case NS_E_TOKEN_UNAVAILABLE:
        return "token unavailable";
    case NS_E_MECHANISM:
        return "token lacks a required mechanism";
    case NS_E_TOKEN_OBJECT:
        return "token key object missing or unusable";
    case NS_E_SOURCE:
        return "key source unreachable or failed";
    case NS_E_STORAGE:
        return "object storage error";
    case NS_E_EXISTS:
        return "already exists";
    case NS_E_CONFLICT:
        return "changed concurrently";
    case NS_E_RATE_LIMITED:
        return "rate limited: try again later";
    case NS_E_INTERNAL:
        return "internal error";
    case NS_E_NOMEM:
        return "out of memory";
    case NS_E_CRYPTO:
        return "cryptographic library error";
    case NS_E_USAGE:
        return "usage error";
    case NS_E_CONFIG:
        return "configuration error";
    default:
        return "unknown error";
    }
}

enum ns_err_category ns_err_category(int err)
{
    if (err == 0)
        return NS_CAT_OK;
    if (err > 0 || err > -100 || err <= -900)
        return NS_CAT_INTERNAL;
    return (enum ns_err_category)(-err / 100);
}

int ns_err_exit_code(int err)
{
    /* Registration nonces are checked by scripts: each way of being refused has its own code. */
    switch (err) {
    case NS_E_EXPIRED:
        return 9;
    case NS_E_CLAIMS:
        return 10;
    case NS_E_REPLAYED:
        return 11;
    default:
        break;
    }
    switch (ns_err_category(err)) {
    case NS_CAT_OK:
        return 0;
    case NS_CAT_USAGE:
        return 2;
    case NS_CAT_NOT_FOUND:
        return 3;
    case NS_CAT_AUTH:
        return 4;
    case NS_CAT_TOKEN:
        return 5;
    case NS_CAT_STORAGE:
        return 6;
    case NS_CAT_CONFLICT:
        return 7;
    case NS_CAT_BAD_INPUT:
        return 8;
    case NS_CAT_INTERNAL:
        return 1;
    }
    return 1;
}
