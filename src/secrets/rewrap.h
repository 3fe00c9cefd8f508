/* Rewrap: move every blob under a prefix to the primary KEK, safely and in parallel.
 *
 * Each blob is read with its version, re-wrapped (ns_envelope_rewrap: header only, payload bytes kept) and
 * written back by compare-and-swap on that version; a blob changed meanwhile is read again (a concurrent
 * writer wins). Each replacement is atomic in the store, so a crash at any instant leaves every blob
 * either as it was or re-wrapped, both readable while the old KEK stays configured; a re-run skips the
 * blobs already under the primary, so it resumes where the last one stopped. */
#ifndef NS_SECRETS_REWRAP_H
#define NS_SECRETS_REWRAP_H

#include <stddef.h>

#include "common/err.h"
#include "keys/keyring.h"
#include "store/store.h"

#define NS_REWRAP_JOBS_MAX 64

typedef struct ns_rewrap_stats {
    size_t total;     /* blobs listed */
    size_t rewrapped; /* replaced by a blob under the primary */
    size_t skipped;   /* already under the primary, or deleted meanwhile */
    size_t failed;
    int first_error; /* error of the first failure, 0 if none */
} ns_rewrap_stats;

typedef struct ns_rewrap_hooks {
    /* Both are called from worker threads, serialised by the rewrap; either may be NULL. */
    void (*progress)(void *ctx, size_t done, size_t total);
    void (*failure)(void *ctx, const char *name, int err);
    void *ctx;
} ns_rewrap_hooks;

/* Rewrap one blob. *changed is 1 if it was replaced. A blob that no longer exists is not an error. */
int ns_rewrap_one(ns_store *st, const ns_keyring *kr, const char *name, int *changed) NS_WUR;

/* Rewrap every blob whose name starts with prefix: `jobs` threads (1..NS_REWRAP_JOBS_MAX) call into the
 * token, each on its own session when the ring's tokens have that many, while the caller's thread reads
 * blobs ahead and writes them back (storage I/O overlaps the token's work). Returns 0 when it ran
 * (failures are counted in stats), or an error that stopped it from running at all (no primary, listing
 * failed). */
int ns_rewrap_all(ns_store *st, const ns_keyring *kr, const char *prefix, unsigned jobs,
                  const ns_rewrap_hooks *hooks, ns_rewrap_stats *stats) NS_WUR;

#endif
