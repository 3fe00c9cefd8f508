/* AWS credentials and the credential chain (for S3, Secrets Manager, SSM, ... through sigv4.h).
 *
 * Chain, first match wins (the order of the AWS SDKs):
 *   1. explicit keys (ns_aws_creds_opts.access_key_id + secret_access_key [+ session_token]), e.g. from the
 *      config file;
 *   2. the environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY [+ AWS_SESSION_TOKEN];
 *   3. the shared credentials file: opts.credentials_file, else $AWS_SHARED_CREDENTIALS_FILE, else
 *      $HOME/.aws/credentials; profile opts.profile, else $AWS_PROFILE, else "default". A profile named
 *      explicitly (opts or $AWS_PROFILE) that is missing is an error (NS_E_NOT_FOUND), not a fall-through;
 *   4. EC2 instance metadata, IMDSv2: PUT /latest/api/token (X-aws-ec2-metadata-token-ttl-seconds), then
 *      GET /latest/meta-data/iam/security-credentials/ (role name) and .../<role> (JSON) with the token.
 *      Endpoint opts.imds_endpoint, else $AWS_EC2_METADATA_SERVICE_ENDPOINT, else http://169.254.169.254.
 *      Skipped when opts.imds_disabled or $AWS_EC2_METADATA_DISABLED=true. Credentials with an Expiration
 *      are fetched again once they are within NS_AWS_CREDS_REFRESH_S of it.
 *
 * The source is chosen at the first ns_aws_creds_get() and kept. Secret access keys and session tokens live
 * in the secure heap (common/secmem.h), are wiped when freed, and are never logged: messages name the
 * source ("environment", "profile 'x' of /path", "instance metadata role 'r'"), never a value.
 *
 * Errors: NS_E_NOT_FOUND no source has credentials (or a named profile is missing); NS_E_FORMAT a malformed
 * credentials file or IMDS answer; NS_E_PERM a credentials file that group or others can read or write (the
 * rule for key files); NS_E_STORAGE IMDS unreachable or answering with an error status; NS_E_NOMEM. A wrong
 * key is only noticed when a service refuses it. */
#ifndef NS_NET_AWS_CREDS_H
#define NS_NET_AWS_CREDS_H

#include <stdbool.h>
#include <time.h>

#include "common/err.h"
#include "net/http.h"

/* Refresh credentials this many seconds before they expire. */
#define NS_AWS_CREDS_REFRESH_S 300

/* One set of credentials. Owned by whoever got it; free with ns_aws_creds_free(). */
typedef struct ns_aws_creds {
    char *access_key_id;     /* malloc'd (an identifier, not a secret) */
    char *secret_access_key; /* secure heap */
    char *session_token;     /* secure heap, or NULL */
    time_t expiration;       /* 0: does not expire */
} ns_aws_creds;

/* A new set from strings (copied; session_token may be NULL). NS_E_INVAL if a key is NULL or empty. */
int ns_aws_creds_new(const char *access_key_id, const char *secret_access_key, const char *session_token,
                     time_t expiration, ns_aws_creds **out) NS_WUR;
int ns_aws_creds_dup(const ns_aws_creds *c, ns_aws_creds **out) NS_WUR;
/* Wipes the secrets; NULL is accepted. */
void ns_aws_creds_free(ns_aws_creds *c);

typedef struct ns_aws_creds_opts {
    const char *access_key_id; /* explicit keys: both or neither */
    const char *secret_access_key;
    const char *session_token;    /* optional, with explicit keys only */
    const char *profile;          /* NULL: $AWS_PROFILE, else "default" */
    const char *credentials_file; /* NULL: $AWS_SHARED_CREDENTIALS_FILE, else $HOME/.aws/credentials */
    const char *imds_endpoint;    /* NULL: $AWS_EC2_METADATA_SERVICE_ENDPOINT, else http://169.254.169.254 */
    bool imds_disabled;
    const ns_http_opts *imds_http; /* timeouts/retries for IMDS; NULL: 1 s connect, 3 s total, 1 retry */
} ns_aws_creds_opts;

/* Every string of opts is copied (the secret ones into the secure heap); nothing is read or fetched yet. */
typedef struct ns_aws_creds_provider ns_aws_creds_provider;

int ns_aws_creds_provider_new(const ns_aws_creds_opts *opts, ns_aws_creds_provider **out) NS_WUR;
void ns_aws_creds_provider_free(ns_aws_creds_provider *p);

/* Current credentials as a new copy (the caller frees it). Resolves the chain on the first call, refreshes
 * expiring IMDS credentials. Thread-safe: one provider may serve every thread. */
int ns_aws_creds_get(ns_aws_creds_provider *p, ns_aws_creds **out) NS_WUR;

/* Where the credentials come from, for messages ("environment", ...); "unresolved" before the first get.
 * Never contains a secret. Borrowed; valid until the provider is freed. */
const char *ns_aws_creds_source(ns_aws_creds_provider *p);

#endif
