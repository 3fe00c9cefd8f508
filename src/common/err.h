/* Project-wide error codes.
 *
 * Every fallible function returns 0 on success or one of these negative codes. Codes are grouped in
 * categories of one hundred; ns_err_category() gives the category, which programs map to an exit code
 * and the HTTP layer maps to a status. CK_RV values are translated into these codes in exactly one place,
 * pkcs11/rv.c. */
#ifndef NS_COMMON_ERR_H
#define NS_COMMON_ERR_H

#define NS_WUR __attribute__((warn_unused_result))

enum ns_err_category {
    NS_CAT_OK = 0,
    NS_CAT_BAD_INPUT = 1, /* malformed or out-of-range data from a caller, a file or the network */
    NS_CAT_NOT_FOUND = 2,
    NS_CAT_AUTH = 3,  /* integrity / authentication failure, wrong key, wrong PIN */
    NS_CAT_TOKEN = 4, /* the key holder failed or is unavailable: a PKCS#11 token or an external key source */
    NS_CAT_STORAGE = 5,  /* object storage failed */
    NS_CAT_CONFLICT = 6, /* exists already, or changed under us */
    NS_CAT_INTERNAL = 7,
    NS_CAT_USAGE = 8, /* command line or configuration */
};

enum ns_err {
    NS_OK = 0,

    NS_E_INVAL = -100,      /* invalid argument or value */
    NS_E_FORMAT = -101,     /* malformed or truncated encoding */
    NS_E_VERSION = -102,    /* unknown format version */
    NS_E_TOO_LARGE = -103,  /* a length above its bound */
    NS_E_NAME = -104,       /* invalid object name */
    NS_E_KEY_FORMAT = -105, /* key material is not 32 raw bytes, base64 or hex */

    NS_E_NOT_FOUND = -200,

    NS_E_INTEGRITY = -300,   /* authentication tag or padding check failed: tampered or corrupt data */
    NS_E_KEK_UNKNOWN = -301, /* blob names a KEK id that no configured key has */
    NS_E_KEK_WRONG = -302,   /* the configured key for that id is not the key the id was made from */
    NS_E_PIN = -303,         /* wrong PIN, or PIN locked */
    NS_E_PERM = -304,        /* a file's permissions are too open */
    NS_E_KEY_UNKNOWN = -305, /* a signature names a key id (JWS kid) that no trusted key has */
    NS_E_EXPIRED = -306,     /* a token or certificate is expired or not yet valid (exit 9) */
    NS_E_CLAIMS = -307,      /* valid signature, but the claims are wrong for here: kind, cluster (exit 10) */
    NS_E_REPLAYED = -308,    /* a single-use nonce was used already (exit 11) */
    NS_E_SOURCE_DENIED = -309, /* an external key source refused our credentials or access (401/403) */

    NS_E_TOKEN = -400,             /* the token reported an error */
    NS_E_TOKEN_UNAVAILABLE = -401, /* token or device removed, not present, or not reachable */
    NS_E_MECHANISM = -402,         /* the token lacks a mechanism we need */
    NS_E_TOKEN_OBJECT = -403,      /* key object missing, ambiguous, or with the wrong attributes */
    NS_E_SOURCE = -404,            /* an external key source is unreachable or failed (after retries) */

    NS_E_STORAGE = -500, /* I/O error in object storage */

    NS_E_EXISTS = -600,       /* create-only write lost: the object exists */
    NS_E_CONFLICT = -601,     /* compare-and-swap lost: the object changed */
    NS_E_RATE_LIMITED = -602, /* too many requests of this client for now: try again later */

    NS_E_INTERNAL = -700,
    NS_E_NOMEM = -701,
    NS_E_CRYPTO = -702, /* a local crypto library call failed */

    NS_E_USAGE = -800,
    NS_E_CONFIG = -801,
};

/* A short, constant English description of an error code. Never NULL. */
const char *ns_strerror(int err);

/* The category of an error code (NS_CAT_OK for 0, NS_CAT_INTERNAL for unknown codes). */
enum ns_err_category ns_err_category(int err);

/* Process exit code for an error, documented in doc/cli.md. */
int ns_err_exit_code(int err);

#endif
