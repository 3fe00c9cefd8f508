#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/codec.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "jwt/ledger.h"

struct ns_ledger {
    sqlite3 *db;
    sqlite3_stmt *ins, *del, *prune;
    ns_store *st;
    char *path;
    unsigned uses; /* since the last prune */
    pthread_mutex_t mu;
};

static const char schema[] = "CREATE TABLE IF NOT EXISTS used ("
                             " key BLOB PRIMARY KEY NOT NULL,"
                             " exp INTEGER NOT NULL,"
                             " used_at INTEGER NOT NULL"
                             ") WITHOUT ROWID;"
                             "CREATE INDEX IF NOT EXISTS used_exp ON used (exp);";

static int prune_locked(ns_ledger *l, int64_t before, size_t *n);

static int db_fail(const ns_ledger *l, const char *what)
{
    ns_log(NS_LOG_ERROR, "nonce ledger %s: %s: %s", l->path, what, sqlite3_errmsg(l->db));
    return NS_E_STORAGE;
}

/* The folder exists (made 0700 if not) and is a folder, not a symlink. */
static int make_dir(const char *dir)
{
    struct stat sb;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        ns_log(NS_LOG_ERROR, "cannot create cache_dir %s: %s", dir, strerror(errno));
        return NS_E_STORAGE;
    }
    if (lstat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        ns_log(NS_LOG_ERROR, "cache_dir %s is not a folder", dir);
        return NS_E_STORAGE;
    }
    return 0;
}

/* Create the database file 0600 ourselves (SQLite gives its -wal and -shm files the same mode), and refuse
 * one that is a symlink or open to others. */
static int make_file(const char *path)
{
    struct stat sb;
    int fd;

    if ((fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
        ns_log(NS_LOG_ERROR, "cannot open %s: %s", path, strerror(errno));
        return errno == ELOOP ? NS_E_PERM : NS_E_STORAGE;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (sb.st_mode & 077) != 0) {
        ns_log(NS_LOG_ERROR, "%s must be a regular file without group/other access", path);
        close(fd);
        return NS_E_PERM;
    }
    close(fd);
    return 0;
}

int ns_ledger_open(const char *cache_dir, ns_store *st, ns_ledger **out)
{
    ns_ledger *l = NULL;
    size_t n = strlen(cache_dir) + sizeof(NS_LEDGER_FILE) + 2;
    int r = NS_E_INTERNAL;

    if ((l = calloc(1, sizeof(*l))) == NULL || (l->path = malloc(n)) == NULL) {
        free(l);
        return NS_E_NOMEM;
    }
    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        free(l->path);
        free(l);
        return NS_E_INTERNAL;
    }
    l->st = st;
    snprintf(l->path, n, "%s/%s", cache_dir, NS_LEDGER_FILE);
    if ((r = make_dir(cache_dir)) != 0 || (r = make_file(l->path)) != 0)
        goto out;
    r = NS_E_STORAGE;
    if (sqlite3_open_v2(l->path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
                        NULL) != SQLITE_OK) {
        r = db_fail(l, "open");
        goto out;
    }
    if (sqlite3_busy_timeout(l->db, NS_LEDGER_BUSY_MS) != SQLITE_OK ||
        sqlite3_exec(l->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(l->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        r = db_fail(l, "set-up");
        goto out;
    }
    if (sqlite3_prepare_v2(l->db, "INSERT INTO used (key, exp, used_at) VALUES (?1, ?2, ?3)", -1, &l->ins,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, "DELETE FROM used WHERE key = ?1", -1, &l->del, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, "DELETE FROM used WHERE exp < ?1", -1, &l->prune, NULL) != SQLITE_OK) {
        r = db_fail(l, "prepare");
        goto out;
    }
    if ((r = prune_locked(l, ns_now() - NS_LEDGER_PRUNE_SLACK, NULL)) != 0)
        goto out;
    *out = l;
    l = NULL;
    r = 0;
out:
    ns_ledger_close(l);
    return r;
}

/* Run a prepared statement once (caller holds the mutex); the SQLite result code. */
static int step_once(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

static int prune_locked(ns_ledger *l, int64_t before, size_t *n)
{
    sqlite3_bind_int64(l->prune, 1, before);
    if (step_once(l->prune) != SQLITE_DONE)
        return db_fail(l, "prune");
    if (n != NULL)
        *n = (size_t)sqlite3_changes(l->db);
    l->uses = 0;
    return 0;
}

int ns_ledger_prune(ns_ledger *l, int64_t before, size_t *n)
{
    int r;
    pthread_mutex_lock(&l->mu);
    r = prune_locked(l, before, n);
    pthread_mutex_unlock(&l->mu);
    return r;
}

/* The marker's content: when it was used and until when it matters. No secret in it. */
static int put_marker(ns_ledger *l, const uint8_t *key, int64_t exp, int64_t now)
{
    char name[sizeof(NS_LEDGER_PREFIX) + 2 * NS_LEDGER_KEY_LEN], hex[2 * NS_LEDGER_KEY_LEN + 1], body[96];
    int len;

    ns_hex_encode(key, NS_LEDGER_KEY_LEN, hex);
    snprintf(name, sizeof(name), "%s%s", NS_LEDGER_PREFIX, hex);
    len = snprintf(body, sizeof(body), "{\"exp\":%" PRId64 ",\"used_at\":%" PRId64 "}\n", exp, now);
    return ns_store_put(l->st, name, (const uint8_t *)body, (size_t)len, NS_PUT_CREATE, NULL);
}

int ns_ledger_use(ns_ledger *l, const uint8_t key[NS_LEDGER_KEY_LEN], int64_t exp, int64_t now)
{
    int rc, r = NS_E_INTERNAL;

    pthread_mutex_lock(&l->mu);
    /* Opportunistic pruning: rows of nonces that can no longer verify. Failure here is only logged. */
    if (++l->uses >= NS_LEDGER_PRUNE_EVERY && prune_locked(l, now - NS_LEDGER_PRUNE_SLACK, NULL) != 0)
        ns_log(NS_LOG_WARN, "nonce ledger: pruning failed; continuing");
    sqlite3_bind_blob(l->ins, 1, key, NS_LEDGER_KEY_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(l->ins, 2, exp);
    sqlite3_bind_int64(l->ins, 3, now);
    rc = step_once(l->ins);
    if (rc == SQLITE_CONSTRAINT) {
        r = NS_E_REPLAYED;
        goto out;
    }
    if (rc != SQLITE_DONE) {
        r = db_fail(l, "insert");
        goto out;
    }
    /* The row is ours (the primary key let only one thread or process on this host in): the storage round
     * trip runs without the mutex, so that other nonces are not held up behind it. */
    pthread_mutex_unlock(&l->mu);
    r = put_marker(l, key, exp, now);
    pthread_mutex_lock(&l->mu);
    if (r == NS_E_EXISTS) {
        r = NS_E_REPLAYED; /* another server used it; the local row stays as a cache of that */
        goto out;
    }
    if (r != 0) {
        /* Not recorded where it counts: undo the local row so that a retry can succeed. */
        sqlite3_bind_blob(l->del, 1, key, NS_LEDGER_KEY_LEN, SQLITE_STATIC);
        if (step_once(l->del) != SQLITE_DONE)
            (void)db_fail(l, "undo");
        goto out;
    }
out:
    pthread_mutex_unlock(&l->mu);
    return r;
}

void ns_ledger_close(ns_ledger *l)
{
    if (l == NULL)
        return;
    sqlite3_finalize(l->ins);
    sqlite3_finalize(l->del);
    sqlite3_finalize(l->prune);
    sqlite3_close(l->db);
    pthread_mutex_destroy(&l->mu);
    free(l->path);
    free(l);
}
