/* Secrets in object storage: a document (document.h) sealed in one envelope per secret at
 * cluster/secret/<name>, created create-only and changed by compare-and-swap, so that two creators or two
 * concurrent rotations never both win or lose an update. */
#ifndef NS_SECRETS_SECRET_H
#define NS_SECRETS_SECRET_H

#include "common/err.h"
#include "keys/keyring.h"
#include "secrets/document.h"
#include "store/store.h"

/* How often an update is retried when another writer changed the secret first. */
#define NS_SECRET_CAS_ATTEMPTS 16

/* Read and open the secret stored at `object`; version (optional) for a later compare-and-swap.
 * NS_E_NOT_FOUND if absent; NS_E_FORMAT if the blob opens but is not a secret document. */
int ns_secret_read(ns_store *st, const ns_keyring *kr, const char *object, ns_secret_doc **doc,
                   char **version) NS_WUR;

/* Store a new secret; NS_E_EXISTS if `object` exists (also when a concurrent creator won). */
int ns_secret_create(ns_store *st, const ns_keyring *kr, const char *object, const ns_secret_doc *doc) NS_WUR;

/* Read-modify-write: `edit` changes the document; it may run several times (once per attempt), so it must
 * not consume its context. NS_E_CONFLICT after NS_SECRET_CAS_ATTEMPTS lost races. */
typedef int (*ns_secret_edit)(ns_secret_doc *d, void *ctx);
int ns_secret_update(ns_store *st, const ns_keyring *kr, const char *object, ns_secret_edit edit,
                     void *ctx) NS_WUR;

#endif
