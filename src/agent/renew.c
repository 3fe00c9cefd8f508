#include "ns-build.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "agent/agent.h"
#include "common/log.h"

static int asn1_to_epoch(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return NS_E_FORMAT;
    *out = (int64_t)timegm(&tm);
    return 0;
}

int ns_agent_renew_due(const char *dir, int64_t *due, int64_t *not_after)
{
    char *path = NULL;
    ns_buf *pem = NULL;
    BIO *bio = NULL;
    X509 *x = NULL;
    struct stat st;
    int64_t nb, na, start;
    int r = NS_E_INTERNAL;

    if ((r = ns_agent_join(dir, "identity.crt", &path)) != 0 ||
        (r = ns_agent_read_file(path, 64 * 1024, false, &pem)) != 0)
        goto out;
    if (stat(path, &st) != 0) {
        r = NS_E_STORAGE;
        goto out;
    }
    if ((bio = BIO_new_mem_buf(pem->data, (int)pem->len)) == NULL ||
        (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL ||
        (r = asn1_to_epoch(X509_get0_notBefore(x), &nb)) != 0 ||
        (r = asn1_to_epoch(X509_get0_notAfter(x), &na)) != 0) {
        ns_log(NS_LOG_ERROR, "agent: %s is not a PEM certificate", path);
        r = NS_E_FORMAT;
        goto out;
    }
    start = (int64_t)st.st_mtime > nb ? (int64_t)st.st_mtime : nb;
    if (start > na)
        start = nb;
    *due = start + (na - start) * 2 / 3;
    *not_after = na;
    r = 0;
out:
    ERR_clear_error();
    X509_free(x);
    BIO_free(bio);
    ns_buf_free(pem);
    free(path);
    return r;
}

int ns_agent_renew(const ns_agent_opts *o)
{
    ns_agent_client *client = NULL;
    ns_agent_resp *resp = NULL;
    ns_buf *body = NULL;
    int r;

    if ((r = ns_agent_mtls_client(o, &client)) != 0)
        goto out;
    if ((r = ns_buf_from("{}", 2, 16, false, &body)) != 0)
        goto out;
    /* The same key: it never leaves the VM, and a new one would buy nothing that re-enrolling does not. */
    if ((r = ns_agent_request(client, "POST", "/v1/agent/renew", body, NULL, false, &resp)) != 0)
        goto out;
    if (resp->status != 200) {
        r = NS_E_FORMAT;
        goto out;
    }
    r = ns_agent_store_identity(o->dir, resp->body, NULL);
out:
    ns_buf_free(body);
    ns_agent_resp_free(resp);
    ns_agent_client_free(client);
    return r;
}
