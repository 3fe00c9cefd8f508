/* The single-use ledger of registration nonces (doc/nonces.md).
 *
 * A nonce is "used" once its key (nonce.h: SHA-256 of the JWS signing input, never of the signature) is
 * recorded in two places:
 *   1. a local SQLite database, <cache_dir>/nonce-ledger.sqlite (folder 0700, file 0600, WAL, busy timeout):
 *      survives restarts, and its primary key makes two consumers on this host race safely;
 *   2. a create-only marker object in the shared object store, cluster/nonce-used/<hex of the key>
 *      (ns_store_put NS_PUT_CREATE): every standby server sharing the store sees it, and only one creator
 *      can win.
 * ns_ledger_use() records the local row first (a replay on this host never reaches storage), then creates
 * the marker; a marker that exists already means another server used the nonce (NS_E_REPLAYED, and the row
 * stays). If the marker cannot be written for another reason the local row is removed again, so a retry is
 * possible and nothing is half-used. Rows whose nonce expired are pruned on open and every
 * NS_LEDGER_PRUNE_EVERY uses (an expired nonce fails verification before it reaches the ledger); markers
 * are pruned by ns_ledger_prune_markers() (`nstance-secrets nonce prune`, run periodically) or by a
 * lifecycle rule on the prefix.
 *
 * Thread safety: one ns_ledger may be shared by the threads of a server: every SQLite statement sequence
 * runs under the ledger's mutex (the connection is opened SQLITE_OPEN_FULLMUTEX as well). The store passed
 * to ns_ledger_open() must allow concurrent puts (the file store does). Several processes may open the same
 * cache folder: SQLite's WAL mode and the busy timeout serialise them. */
#ifndef NS_JWT_LEDGER_H
#define NS_JWT_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "store/store.h"

#define NS_LEDGER_FILE        "nonce-ledger.sqlite"
#define NS_LEDGER_PREFIX      "cluster/nonce-used/"
#define NS_LEDGER_KEY_LEN     32
#define NS_LEDGER_BUSY_MS     5000
#define NS_LEDGER_PRUNE_EVERY 256
/* Rows are pruned this long after their nonce's exp: more than the largest leeway the config allows (5m), so
 * that a pruned nonce can never verify again. */
#define NS_LEDGER_PRUNE_SLACK 600

typedef struct ns_ledger ns_ledger;

/* Open (creating if needed) the ledger in cache_dir; st (borrowed, must outlive the ledger) holds the
 * markers. NS_E_STORAGE (logged) if the folder or database cannot be made or opened; NS_E_PERM if the
 * database file is a symlink or open to group/others. */
int ns_ledger_open(const char *cache_dir, ns_store *st, ns_ledger **out) NS_WUR;

/* Mark key as used (exp: the nonce's expiry, for pruning). 0 the first time; NS_E_REPLAYED if this or any
 * server sharing the store used it before; NS_E_STORAGE / the store's error otherwise (nothing recorded). */
int ns_ledger_use(ns_ledger *l, const uint8_t key[NS_LEDGER_KEY_LEN], int64_t exp, int64_t now) NS_WUR;

/* Delete local rows whose exp is before `before`; *n (optional) gets how many. */
int ns_ledger_prune(ns_ledger *l, int64_t before, size_t *n) NS_WUR;

void ns_ledger_close(ns_ledger *l);

/* What ns_ledger_prune_markers() found: markers seen, removed (or, dry run, to remove), kept (not expired
 * long enough), foreign (a name or content that is not a marker we write: left alone, logged). */
typedef struct ns_marker_stats {
    size_t seen, removed, kept, foreign;
} ns_marker_stats;

/* Delete the store's markers (NS_LEDGER_PREFIX) whose nonce's exp is before `before` (callers pass
 * now - NS_LEDGER_PRUNE_SLACK: such a nonce fails on its exp before it reaches the ledger). A marker
 * deleted meanwhile by another pruner is skipped. dry_run: count only. Storage errors stop it (what was
 * deleted stays deleted; running it again continues). Needs no key and no lock. */
int ns_ledger_prune_markers(ns_store *st, int64_t before, bool dry_run, ns_marker_stats *stats) NS_WUR;

#endif
