#include "ns-build.h"

#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "envelope/envelope.h"
#include "keys/aead.h"
#include "secrets/secret.h"

int ns_secret_read(ns_store *st, const ns_keyring *kr, const char *object, ns_secret_doc **doc,
                   char **version)
{
    ns_buf *blob = NULL, *pt = NULL;
    char *v = NULL;
    int r;

    if ((r = ns_store_get(st, object, NS_BLOB_MAX, &blob, version ? &v : NULL)) != 0)
        goto out;
    if ((r = ns_envelope_open(kr, object, blob->data, blob->len, &pt, NULL)) != 0)
        goto out;
    if ((r = ns_doc_parse(pt->data, pt->len, doc)) != 0)
        goto out; /* callers say so: for `secret list` a plain blob is not an error */
    if (version != NULL) {
        *version = v;
        v = NULL;
    }
out:
    free(v);
    ns_buf_free(blob);
    ns_buf_free(pt);
    return r;
}

static int seal_doc(const ns_keyring *kr, const char *object, const ns_secret_doc *doc, ns_buf **blob)
{
    ns_buf *text = NULL;
    int r;
    if ((r = ns_doc_serialize(doc, &text)) == 0)
        r = ns_envelope_seal(kr, object, text->data, text->len, blob);
    ns_buf_free(text);
    return r;
}

int ns_secret_create(ns_store *st, const ns_keyring *kr, const char *object, const ns_secret_doc *doc)
{
    ns_buf *blob = NULL;
    int r;
    if ((r = seal_doc(kr, object, doc, &blob)) == 0)
        r = ns_store_put(st, object, blob->data, blob->len, NS_PUT_CREATE, NULL);
    ns_buf_free(blob);
    return r;
}

int ns_secret_update(ns_store *st, const ns_keyring *kr, const char *object, ns_secret_edit edit, void *ctx)
{
    int r = NS_E_CONFLICT;

    for (int attempt = 0; attempt < NS_SECRET_CAS_ATTEMPTS; attempt++) {
        ns_secret_doc *doc = NULL;
        ns_buf *blob = NULL;
        char *version = NULL;
        uint8_t jitter = 0;
        int lost = 0;

        r = ns_secret_read(st, kr, object, &doc, &version);
        if (r == 0)
            r = edit(doc, ctx);
        if (r == 0)
            r = seal_doc(kr, object, doc, &blob);
        if (r == 0) {
            r = ns_store_put(st, object, blob->data, blob->len, NS_PUT_IF_MATCH, version);
            lost = r == NS_E_CONFLICT; /* only a lost compare-and-swap is retried, not an edit's refusal */
        }
        ns_doc_free(doc);
        ns_buf_free(blob);
        free(version);
        if (!lost)
            return r;
        /* Another writer won this round: read its result and apply our change on top, after a short random
         * pause so that two writers do not keep colliding in lockstep. */
        ns_log(NS_LOG_INFO, "%s changed concurrently; applying the change again", object);
        if (ns_random(&jitter, 1) == 0)
            usleep(1000u + 100u * jitter);
    }
    ns_log(NS_LOG_ERROR, "%s: gave up after %d concurrent changes", object, NS_SECRET_CAS_ATTEMPTS);
    return NS_E_CONFLICT;
}
