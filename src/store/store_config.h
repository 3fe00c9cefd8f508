/* The `storage` section of the config (doc/config.md, doc/storage-s3.md): which back-end, and its
 * settings. Parsed by the schema engine (config/schema.h) from the table in store_config.c. */
#ifndef NS_STORE_STORE_CONFIG_H
#define NS_STORE_STORE_CONFIG_H

#include <stdbool.h>

#include "config/schema.h"

/* storage.credentials (s3). With no explicit keys the AWS chain applies (net/aws_creds.h). */
typedef struct ns_s3_creds_config {
    char *access_key_id;     /* explicit keys: both or neither */
    char *secret_access_key; /* wiped on free, never echoed */
    char *session_token;     /* optional, with explicit keys only; wiped on free */
    char *profile;           /* shared credentials file profile (no explicit keys) */
    char *credentials_file;  /* shared credentials file (absolute after loading) */
    char *imds_endpoint;     /* instance metadata endpoint, http(s)://host[:port] */
    bool imds;               /* imds: false turns instance metadata off; default true */
} ns_s3_creds_config;

typedef struct ns_storage_config {
    char *backend; /* "file" | "s3" */
    char *path;    /* file: root folder (absolute after loading) */
    int line;
    /* s3 (doc/storage-s3.md) */
    char *bucket;                /* required */
    char *prefix;                /* "" or ending in '/': prepended to every object name */
    char *region;                /* default "us-east-1" */
    char *endpoint;              /* http(s)://host[:port]; default https://s3.<region>.amazonaws.com */
    bool path_style;             /* https://endpoint/bucket/key instead of https://bucket.endpoint/key */
    char *ca_file;               /* CA bundle instead of the system store (absolute after loading) */
    unsigned connect_timeout_ms; /* timeouts.connect_ms, default 5000 */
    unsigned timeout_ms;         /* timeouts.request_ms, default 30000 */
    unsigned retries;            /* retries.max, default 3 */
    unsigned retry_base_ms;      /* retries.base_delay_ms, default 100 */
    bool has_credentials;        /* a credentials block was given */
    ns_s3_creds_config creds;
} ns_storage_config;

/* Defaults that a key may override (timeouts, retries, imds), before parsing. */
void ns_store_config_init(ns_storage_config *sc);

/* The `storage` section into sc (an ns_storage_config). */
int ns_store_config_parse(ns_cfg_ctx *c, const ns_cfg_node *v, const char *what, void *sc) NS_WUR;

/* Frees (wiping credentials) every string of sc. */
void ns_store_config_clear(ns_storage_config *sc);

#endif
