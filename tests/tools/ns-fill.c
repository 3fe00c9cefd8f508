/* ns-fill: a test tool that writes many small secrets through the library, and checks them again.
 *
 *   ns-fill -c CONFIG -n COUNT [-p PREFIX] [-s SIZE] [-j JOBS]
 *       Seals COUNT random secrets of SIZE bytes (default 64) under the config's primary KEK and stores
 *       them as cluster/secret/PREFIX<index> (PREFIX default "p"; index zero-padded to at least 5
 *       digits: p00042), replacing what is there. Prints one line per secret on stdout, in index order:
 *       "NAME HEX", NAME as the CLI spells it (without "cluster/secret/") and HEX the lower-case SHA-256
 *       of the plaintext. Exit 0, or 1 at the first failure.
 *
 *   ns-fill -c CONFIG --check FILE [-j JOBS]
 *       Reads such a list (FILE, or "-" for stdin), gets and opens every named blob, and compares the
 *       plaintext's SHA-256. Each blob that does not open or differs is named on stderr
 *       ("ns-fill: FAIL NAME: reason"); prints "checked N" on stdout; exit 1 if any failed.
 *
 *   ns-fill -c CONFIG --race NAME [-j JOBS]
 *       A compare-and-swap race on the raw object cluster/secret/NAME (which must exist): every one of JOBS
 *       threads reads its version, all meet at a barrier, then each writes its own bytes with If-Match
 *       that version. Prints "race: W won, C conflict, O other"; exit 0 iff exactly one won and every
 *       other got NS_E_CONFLICT (exit 7 in the CLI). The object then holds raw bytes, not an envelope.
 *
 * JOBS threads (default 2) share the config's token sessions (raised to JOBS if fewer). This exists so that
 * an integration test can fill and check 10,000 blobs without 10,000 CLI processes; it is not installed. */
#include "ns-build.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/buf.h"
#include "common/codec.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secmem.h"
#include "settings/settings.h"
#include "envelope/envelope.h"
#include "keys/aead.h"
#include "keys/keyring.h"
#include "store/store.h"

#define PREFIX_DIR  "cluster/secret/"
#define COUNT_MAX   10000000ul
#define JOBS_MAX    16
#define HEX_LEN     64 /* SHA-256 in hex */
#define LINE_MAX_NS (NS_NAME_MAX + HEX_LEN + 8)

typedef struct item {
    char *name;            /* as the CLI spells it: without PREFIX_DIR */
    char hex[HEX_LEN + 1]; /* fill: computed; check: expected */
} item;

typedef struct work {
    ns_store *st;
    const ns_keyring *kr;
    item *items;
    size_t n;
    size_t size; /* fill: plaintext size */
    atomic_size_t next;
    atomic_int stop;      /* fill: set at the first failure */
    pthread_mutex_t lock; /* serialises messages and the counters below */
    size_t failed;
    int first_error;
} work;

static void usage(void)
{
    fputs("usage: ns-fill -c CONFIG -n COUNT [-p PREFIX] [-s SIZE] [-j JOBS]\n"
          "       ns-fill -c CONFIG --check FILE [-j JOBS]\n"
          "       ns-fill -c CONFIG --race NAME [-j JOBS]\n",
          stderr);
    exit(2);
}

static int parse_size(const char *s, size_t min, size_t max, size_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0 || v < min || v > max)
        return -1;
    *out = (size_t)v;
    return 0;
}

static void sha256_hex(const uint8_t *p, size_t n, char hex[HEX_LEN + 1])
{
    uint8_t d[32];

    if (EVP_Digest(p, n, d, NULL, EVP_sha256(), NULL) != 1) {
        memset(hex, '?', HEX_LEN);
        hex[HEX_LEN] = '\0';
        return;
    }
    ns_hex_encode(d, sizeof(d), hex);
    hex[HEX_LEN] = '\0';
}

/* "cluster/secret/" + the item's name, checked as an object name. */
static int object_name(const char *name, char out[NS_NAME_MAX + 1])
{
    int k = snprintf(out, NS_NAME_MAX + 1, PREFIX_DIR "%s", name);
    return k < 0 || k > NS_NAME_MAX ? NS_E_NAME : ns_store_name_check(out);
}

static void report(work *w, const char *name, const char *why)
{
    pthread_mutex_lock(&w->lock);
    fprintf(stderr, "ns-fill: FAIL %s: %s\n", name, why);
    w->failed++;
    pthread_mutex_unlock(&w->lock);
}

static void note_error(work *w, int r)
{
    pthread_mutex_lock(&w->lock);
    if (w->first_error == 0)
        w->first_error = r;
    pthread_mutex_unlock(&w->lock);
}

/* ---- fill ---- */

static int fill_one(work *w, item *it, uint8_t *pt)
{
    char obj[NS_NAME_MAX + 1];
    ns_buf *blob = NULL;
    int r;

    if ((r = object_name(it->name, obj)) != 0 || (r = ns_random(pt, w->size)) != 0 ||
        (r = ns_envelope_seal(w->kr, obj, pt, w->size, &blob)) != 0 ||
        (r = ns_store_put(w->st, obj, blob->data, blob->len, NS_PUT_REPLACE, NULL)) != 0)
        goto out;
    sha256_hex(pt, w->size, it->hex);
out:
    ns_wipe(pt, w->size);
    ns_buf_free(blob);
    return r;
}

static void *fill_worker(void *arg)
{
    work *w = arg;
    uint8_t *pt = ns_secmem_alloc(w->size);

    if (pt == NULL) {
        note_error(w, NS_E_NOMEM);
        atomic_store(&w->stop, 1);
        return NULL;
    }
    while (!atomic_load(&w->stop)) {
        size_t i = atomic_fetch_add(&w->next, 1);
        int r;
        if (i >= w->n)
            break;
        if ((r = fill_one(w, &w->items[i], pt)) != 0) {
            report(w, w->items[i].name, ns_strerror(r));
            note_error(w, r);
            atomic_store(&w->stop, 1);
        }
    }
    ns_secmem_free(pt, w->size);
    return NULL;
}

/* ---- check ---- */

static void check_one(work *w, const item *it)
{
    char obj[NS_NAME_MAX + 1], hex[HEX_LEN + 1], why[160];
    ns_buf *blob = NULL, *pt = NULL;
    int r;

    if ((r = object_name(it->name, obj)) != 0 ||
        (r = ns_store_get(w->st, obj, NS_BLOB_MAX, &blob, NULL)) != 0 ||
        (r = ns_envelope_open(w->kr, obj, blob->data, blob->len, &pt, NULL)) != 0) {
        snprintf(why, sizeof(why), "%s (%d)", ns_strerror(r), r);
        report(w, it->name, why);
        note_error(w, r);
        goto out;
    }
    sha256_hex(pt->data, pt->len, hex);
    if (strcmp(hex, it->hex) != 0) {
        snprintf(why, sizeof(why), "content differs (%zu bytes, SHA-256 %.16s..., want %.16s...)", pt->len,
                 hex, it->hex);
        report(w, it->name, why);
    }
out:
    ns_buf_free(pt);
    ns_buf_free(blob);
}

static void *check_worker(void *arg)
{
    work *w = arg;

    for (;;) {
        size_t i = atomic_fetch_add(&w->next, 1);
        if (i >= w->n)
            break;
        check_one(w, &w->items[i]);
    }
    return NULL;
}

/* Read "NAME HEX" lines. */
static int read_list(const char *path, item **out, size_t *n_out)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    char line[LINE_MAX_NS];
    item *items = NULL;
    size_t n = 0, cap = 0, lineno = 0;
    int r = NS_E_INTERNAL;

    if (f == NULL) {
        fprintf(stderr, "ns-fill: cannot open %s: %s\n", path, strerror(errno));
        return NS_E_NOT_FOUND;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *sp, *nl = strchr(line, '\n');
        lineno++;
        if (nl == NULL && !feof(f)) {
            fprintf(stderr, "ns-fill: %s:%zu: line too long\n", path, lineno);
            r = NS_E_FORMAT;
            goto out;
        }
        if (nl != NULL)
            *nl = '\0';
        if (line[0] == '\0')
            continue;
        sp = strchr(line, ' ');
        if (sp == NULL || sp == line || strlen(sp + 1) != HEX_LEN ||
            strspn(sp + 1, "0123456789abcdef") != HEX_LEN) {
            fprintf(stderr, "ns-fill: %s:%zu: expected \"NAME HEX\" (HEX: 64 lower-case hex digits)\n", path,
                    lineno);
            r = NS_E_FORMAT;
            goto out;
        }
        *sp = '\0';
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 1024;
            item *ni = realloc(items, nc * sizeof(*ni));
            if (ni == NULL) {
                r = NS_E_NOMEM;
                goto out;
            }
            items = ni;
            cap = nc;
        }
        if ((items[n].name = strdup(line)) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
        memcpy(items[n].hex, sp + 1, HEX_LEN + 1);
        n++;
    }
    if (ferror(f)) {
        fprintf(stderr, "ns-fill: reading %s: %s\n", path, strerror(errno));
        r = NS_E_INVAL;
        goto out;
    }
    *out = items;
    *n_out = n;
    items = NULL;
    n = 0;
    r = 0;
out:
    for (size_t i = 0; i < n; i++)
        free(items[i].name);
    free(items);
    if (f != stdin)
        fclose(f);
    return r;
}

/* ---- race ---- */

typedef struct race {
    ns_store *st;
    char obj[NS_NAME_MAX + 1];
    pthread_barrier_t barrier;
    atomic_uint id;
    atomic_uint won, conflict, other;
} race;

static void *race_worker(void *arg)
{
    race *rc = arg;
    char *ver = NULL;
    char body[96];
    unsigned id = atomic_fetch_add(&rc->id, 1);
    struct timespec ts;
    int r;

    clock_gettime(CLOCK_REALTIME, &ts);
    r = ns_store_get(rc->st, rc->obj, 0, NULL, &ver);
    pthread_barrier_wait(&rc->barrier);
    if (r == 0) {
        /* Unique across processes: a writer that stored the bytes already there would keep the ETag, and
         * the next If-Match on it would rightly succeed. */
        snprintf(body, sizeof(body), "writer %u of %ld at %ld.%09ld", id, (long)getpid(), (long)ts.tv_sec,
                 ts.tv_nsec);
        r = ns_store_put(rc->st, rc->obj, (const uint8_t *)body, strlen(body), NS_PUT_IF_MATCH, ver);
    }
    if (r == 0)
        atomic_fetch_add(&rc->won, 1);
    else if (r == NS_E_CONFLICT)
        atomic_fetch_add(&rc->conflict, 1);
    else {
        fprintf(stderr, "ns-fill: race writer %u: %s\n", id, ns_strerror(r));
        atomic_fetch_add(&rc->other, 1);
    }
    free(ver);
    return NULL;
}

static int run_race(ns_store *st, const char *name, unsigned jobs)
{
    race rc;
    pthread_t tids[JOBS_MAX];
    unsigned started = 0, won, conflict, other;

    memset(&rc, 0, sizeof(rc));
    rc.st = st;
    if (object_name(name, rc.obj) != 0) {
        fprintf(stderr, "ns-fill: '%s' is not a valid object name\n", name);
        return 1;
    }
    if (jobs < 2)
        jobs = 2;
    if (pthread_barrier_init(&rc.barrier, NULL, jobs) != 0)
        return 1;
    for (unsigned k = 0; k < jobs; k++) {
        if (pthread_create(&tids[k], NULL, race_worker, &rc) != 0) {
            fprintf(stderr, "ns-fill: cannot start thread %u\n", k);
            exit(1); /* the others wait at the barrier for ever */
        }
        started++;
    }
    for (unsigned k = 0; k < started; k++)
        pthread_join(tids[k], NULL);
    pthread_barrier_destroy(&rc.barrier);
    won = atomic_load(&rc.won);
    conflict = atomic_load(&rc.conflict);
    other = atomic_load(&rc.other);
    printf("race: %u won, %u conflict, %u other\n", won, conflict, other);
    return won == 1 && conflict == jobs - 1 ? 0 : 1;
}

/* ---- main ---- */

static void run_threads(work *w, unsigned jobs, void *(*fn)(void *))
{
    pthread_t tids[JOBS_MAX];
    unsigned started = 0;

    for (unsigned k = 1; k < jobs; k++) {
        if (pthread_create(&tids[started], NULL, fn, w) != 0)
            break; /* fewer threads: still correct */
        started++;
    }
    fn(w);
    for (unsigned k = 0; k < started; k++)
        pthread_join(tids[k], NULL);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"count", required_argument, NULL, 'n'},
        {"prefix", required_argument, NULL, 'p'}, {"size", required_argument, NULL, 's'},
        {"jobs", required_argument, NULL, 'j'},   {"check", required_argument, NULL, 'C'},
        {"race", required_argument, NULL, 'R'},   {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *prefix = "p", *check = NULL, *race_name = NULL;
    size_t count = 0, size = 64, jobs = 2, width = 5;
    int have_count = 0, opt, r, rc = 1;
    ns_config *cfg = NULL;
    ns_store *st = NULL;
    ns_keyring *kr = NULL;
    work w;

    ns_secmem_harden_process();
    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.lock, NULL);

    while ((opt = getopt_long(argc, argv, "c:n:p:s:j:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'n':
            if (parse_size(optarg, 1, COUNT_MAX, &count) != 0)
                usage();
            have_count = 1;
            break;
        case 'p':
            prefix = optarg;
            break;
        case 's':
            if (parse_size(optarg, 1, NS_PLAINTEXT_MAX, &size) != 0)
                usage();
            break;
        case 'j':
            if (parse_size(optarg, 1, JOBS_MAX, &jobs) != 0)
                usage();
            break;
        case 'C':
            check = optarg;
            break;
        case 'R':
            race_name = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc || config_path == NULL ||
        (check != NULL) + (have_count != 0) + (race_name != NULL) != 1)
        usage();

    if ((r = ns_config_load(config_path, &cfg)) != 0) {
        fprintf(stderr, "ns-fill: loading %s: %s\n", config_path, ns_strerror(r));
        goto out;
    }
    if (cfg->token_sessions < jobs)
        cfg->token_sessions = (unsigned)jobs;
    if ((r = ns_store_open(&cfg->storage, &st)) != 0) {
        fprintf(stderr, "ns-fill: opening object storage: %s\n", ns_strerror(r));
        goto out;
    }
    if ((r = ns_keyring_load(&cfg->keys, NS_KEYRING_STRICT, &kr)) != 0) {
        fprintf(stderr, "ns-fill: loading encryption keys: %s\n", ns_strerror(r));
        goto out;
    }
    w.st = st;
    w.kr = kr;

    if (race_name != NULL) {
        rc = run_race(st, race_name, (unsigned)jobs);
        goto out;
    }

    if (check != NULL) {
        if ((r = read_list(check, &w.items, &w.n)) != 0)
            goto out;
        run_threads(&w, (unsigned)jobs, check_worker);
        printf("checked %zu\n", w.n);
        if (w.failed > 0) {
            fprintf(stderr, "ns-fill: %zu of %zu blobs failed the check\n", w.failed, w.n);
            goto out;
        }
        rc = 0;
        goto out;
    }

    for (size_t m = count - 1, d = 1; m >= 10; m /= 10)
        if (++d > width)
            width = d;
    if ((w.items = calloc(count, sizeof(*w.items))) == NULL) {
        fprintf(stderr, "ns-fill: out of memory\n");
        goto out;
    }
    w.n = count;
    w.size = size;
    for (size_t i = 0; i < count; i++) {
        char obj[NS_NAME_MAX + 1];
        if (asprintf(&w.items[i].name, "%s%0*zu", prefix, (int)width, i) < 0) {
            w.items[i].name = NULL;
            fprintf(stderr, "ns-fill: out of memory\n");
            goto out;
        }
        if (i == 0 && object_name(w.items[i].name, obj) != 0) {
            fprintf(stderr, "ns-fill: '%s' is not a valid object name\n", obj);
            goto out;
        }
    }
    run_threads(&w, (unsigned)jobs, fill_worker);
    if (w.first_error != 0) {
        fprintf(stderr, "ns-fill: stopped: %s\n", ns_strerror(w.first_error));
        goto out;
    }
    for (size_t i = 0; i < count; i++)
        printf("%s %s\n", w.items[i].name, w.items[i].hex);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "ns-fill: writing standard output: %s\n", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (w.items != NULL)
        for (size_t i = 0; i < w.n; i++)
            free(w.items[i].name);
    free(w.items);
    pthread_mutex_destroy(&w.lock);
    ns_keyring_free(kr);
    ns_store_close(st);
    ns_config_free(cfg);
    return rc;
}
