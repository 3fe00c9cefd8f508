#include "ns-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent/agent.h"
#include "common/log.h"

/* Paths of the identity in dir; every one must exist (else: not enrolled). */
typedef struct identity_paths {
    char *key, *crt, *ca, *version;
} identity_paths;

static void paths_free(identity_paths *p)
{
    free(p->key);
    free(p->crt);
    free(p->ca);
    free(p->version);
}

static int paths_get(const char *dir, identity_paths *p)
{
    struct stat st;
    int r;

    memset(p, 0, sizeof(*p));
    if ((r = ns_agent_join(dir, "identity.key", &p->key)) != 0 ||
        (r = ns_agent_join(dir, "identity.crt", &p->crt)) != 0 ||
        (r = ns_agent_join(dir, "ca.crt", &p->ca)) != 0 ||
        (r = ns_agent_join(dir, "files.version", &p->version)) != 0)
        return r;
    if (stat(p->key, &st) != 0 || stat(p->crt, &st) != 0 || stat(p->ca, &st) != 0) {
        ns_log(NS_LOG_ERROR,
               "agent: %s holds no identity (identity.key, identity.crt, ca.crt): run enroll first", dir);
        return NS_E_NOT_FOUND;
    }
    return 0;
}

int ns_agent_mtls_client(const ns_agent_opts *o, ns_agent_client **out)
{
    identity_paths p;
    int r;

    if (o->server == NULL || o->dir == NULL) {
        ns_log(NS_LOG_ERROR, "agent: --server and --dir are required");
        return NS_E_USAGE;
    }
    if ((r = paths_get(o->dir, &p)) == 0)
        r = ns_agent_client_new(o->server, p.ca, p.crt, p.key, out);
    paths_free(&p);
    return r;
}

/* The last synced version as a quoted ETag, or NULL when there is none (or it is not 64 hex digits). */
static char *stored_etag(const char *path)
{
    ns_buf *b = NULL;
    char *etag = NULL;

    if (ns_agent_read_file(path, 128, false, &b) != 0)
        return NULL;
    while (b->len > 0 && b->data[b->len - 1] == '\n')
        ns_buf_truncate(b, b->len - 1);
    if (b->len == 64 && (etag = malloc(67)) != NULL) {
        bool ok = true;
        for (size_t i = 0; i < 64; i++)
            ok = ok && ((b->data[i] >= '0' && b->data[i] <= '9') || (b->data[i] >= 'a' && b->data[i] <= 'f'));
        if (ok) {
            snprintf(etag, 67, "\"%.64s\"", (const char *)b->data);
        } else {
            free(etag);
            etag = NULL;
        }
    }
    ns_buf_free(b);
    return etag;
}

/* After the files, on every sync: the CA bundle the server has now (so a `ca rotate` reaches ca.crt before
 * the old CA is retired), and a renewal when our certificate is not from the newest CA (so `ca retire`
 * does not leave us with a certificate of a CA nobody trusts any more). */
static int follow_ca(const ns_agent_opts *o, ns_agent_client *client)
{
    bool changed = false, needed = false;
    int r;

    if ((r = ns_agent_ca_update(client, o->dir, &changed)) != 0 ||
        (r = ns_agent_renew_needed(o->dir, &needed)) != 0 || !needed)
        return r;
    ns_log(NS_LOG_INFO, "agent: the certificate is not from the newest CA of ca.crt: renewing now");
    if ((r = ns_agent_renew(o)) == NS_E_RATE_LIMITED) {
        /* The files are in place and the certificate still works: the next sync asks again. */
        ns_log(NS_LOG_WARN, "agent: renewal after the CA rotation deferred (the server rate-limited it); the "
                            "next sync renews");
        return 0;
    }
    if (r != 0) {
        ns_log(NS_LOG_ERROR, "agent: renewal after the CA rotation failed (%s)", ns_strerror(r));
        return r;
    }
    printf("renew: new certificate (the CA rotated)\n");
    fflush(stdout);
    return 0;
}

int ns_agent_sync(const ns_agent_opts *o, bool *hook_failed)
{
    ns_agent_client *client = NULL;
    ns_agent_resp *resp = NULL;
    ns_agent_files *files = NULL;
    identity_paths p = {0};
    ns_agent_root *rt = NULL;
    const char *root = o->root != NULL ? o->root : "/";
    char *etag = NULL, line[66];
    size_t changed = 0;
    int r = NS_E_INTERNAL;

    *hook_failed = false;
    /* --root is opened once and held for the whole sync (every file is checked and written from it), with
     * --dir's identity, which no answer path may enter. */
    if ((r = ns_agent_root_open(root, o->dir, &rt)) != 0)
        return r;
    if ((r = ns_agent_mtls_client(o, &client)) != 0)
        goto out;
    if ((r = paths_get(o->dir, &p)) != 0)
        goto out;
    etag = stored_etag(p.version);
    if ((r = ns_agent_request(client, "GET", "/v1/agent/files", NULL, etag, false, &resp)) != 0)
        goto out;
    if (resp->status == 304) {
        printf("sync: unchanged\n");
        fflush(stdout);
        r = follow_ca(o, client);
        goto out;
    }
    if (resp->status != 200) {
        ns_log(NS_LOG_ERROR, "agent: GET /v1/agent/files: unexpected status %ld", resp->status);
        r = NS_E_FORMAT;
        goto out;
    }
    /* Everything is validated before the first write; an invalid file aborts the whole sync. */
    if ((r = ns_agent_files_parse(resp->body->data, resp->body->len, rt, &files)) != 0) {
        ns_log(NS_LOG_ERROR, "agent: sync aborted: no file was changed");
        goto out;
    }
    if ((r = ns_agent_files_apply(files, rt, &changed)) != 0) {
        ns_log(NS_LOG_ERROR, "agent: sync failed after %zu file(s) were written", changed);
        goto out;
    }
    if (changed > 0 && o->on_change != NULL && ns_agent_run_hook(o->on_change) != 0)
        *hook_failed = true;
    /* Last: a crash before this line makes the next sync fetch (and compare) everything again. */
    snprintf(line, sizeof(line), "%s\n", files->version);
    if ((r = ns_agent_write_atomic(p.version, (const uint8_t *)line, strlen(line), 0600, (uid_t)-1,
                                   (gid_t)-1)) != 0)
        goto out;
    printf("sync: %zu file(s), %zu changed, version %s\n", files->n, changed, files->version);
    fflush(stdout);
    r = follow_ca(o, client);
out:
    ns_agent_files_free(files);
    ns_agent_resp_free(resp);
    ns_agent_client_free(client);
    ns_agent_root_free(rt);
    paths_free(&p);
    free(etag);
    return r;
}
