/* bench-rewrap: how fast ns_rewrap_all() moves a store of small blobs to a new KEK, next to the token's own
 * unwrap + wrap calls on the same token.
 *
 * It makes a SoftHSM token in a temp folder, and for each token mechanism M in {aes-gcm, aes-kwp} generates
 * two keys of M (old, new) with ns_kek_pkcs11_generate and seals N (-n, default 10,000) random 64-byte
 * secrets under the old key, kept in memory as the pristine blobs. Then, for 1 and 2 jobs, it measures:
 *
 *   ours      ns_rewrap_all() over a file store on tmpfs (/dev/shm) holding the N pristine blobs, with the
 *             ring [new (primary), old]: N blobs re-wrapped, blobs/s. Before every run the store is reset
 *             to the pristine blobs (plain writes, then syncfs; not timed); after it every blob must carry
 *             the new key's id, and a sample must open to the same plaintext as its pristine blob.
 *   raw       J threads, each with its own session on the same (logged-in) token, share N iterations of
 *             the least the token must do per blob with one DEK: aes-gcm C_DecryptInit/C_Decrypt under the
 *             old key + C_EncryptInit/C_Encrypt under the new one; aes-kwp C_UnwrapKey(CKM_AES_KEY_WRAP_PAD)
 *             under the old key + C_WrapKey under the new one + C_DestroyObject; ops/s.
 *   calls     (diagnostic) as raw, but with the token calls that ours makes per blob: for aes-kwp
 *             C_UnwrapKey, C_GetAttributeValue and C_DestroyObject, then C_CreateObject of the DEK, C_WrapKey
 *             and C_DestroyObject (kek_pkcs11.c); for aes-gcm the same calls as raw.
 *   envelope  (diagnostic) J threads share N calls of ns_envelope_rewrap() on the in-memory pristine blobs:
 *             ours without the store.
 *   store     (diagnostic) J threads share N rounds of ns_store_get (with version) and ns_store_put
 *             (NS_PUT_IF_MATCH) of the same bytes: the store part of ours without the envelope.
 *   disk      ours and store again with the store on a real disk (-D, default /var/tmp: fsync goes to the
 *             device) over the first -N blobs (default 2,000: each blob costs two fsyncs there).
 *
 * ours and raw alternate (their order flips every round); tables give medians over the rounds (-r, default
 * 3) and the ratio of the medians. -m and -j restrict the run to one mechanism or one job count (for
 * profiling); -v prints every measurement. Usage:
 *   bench-rewrap [-n N] [-N DISK_N] [-r ROUNDS] [-D DISK_DIR] [-m MECH] [-j JOBS] [-v] */
#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secmem.h"
#include "common/strv.h"
#include "envelope/envelope.h"
#include "keys/aead.h"
#include "keys/kek.h"
#include "keys/keyring.h"
#include "pkcs11/module.h"
#include "secrets/rewrap.h"
#include "store/store.h"

#include "bench-util.h"

#define PREFIX      "cluster/secret/"
#define SECRET_LEN  64
#define SESSIONS    4
#define ROUNDS_MAX  51
#define NJOBS       2 /* jobs 1..NJOBS */
#define NMECH       2
#define AAD_LEN     (7 + NS_KEK_ID_LEN)
#define SAMPLE_STEP 97 /* every 97th blob is opened and compared after a run */

static struct {
    bench_token tok; /* its folder holds the fall-back store; the module reference is held for the whole
                      * run, so that the token layer and we share one instance */
    char shm[256];   /* tmpfs store root */
    char disk[256];  /* real-disk store root */
    size_t n, disk_n;
    char **names;  /* object names, n of them */
    int only_jobs; /* -j, or 0 */
} G;

/* Whether mechanism case `name` (NULL: not set up, -m) and job count jobs are part of this run. */
static int selected(const char *name, int jobs)
{
    return name != NULL && (G.only_jobs == 0 || G.only_jobs == jobs);
}

enum kind { OURS, RAW, CALLS, ENV, STORE, OURS_DISK, STORE_DISK, NKINDS };

typedef struct mcase {
    const char *name; /* "aes-gcm", "aes-kwp" */
    uint8_t mech;
    char label_old[32], label_new[32];
    ns_keyring *seal_kr; /* [old] */
    ns_keyring *kr;      /* [new (primary), old] */
    uint8_t old_id[NS_KEK_ID_LEN], new_id[NS_KEK_ID_LEN];
    ns_buf **blobs; /* pristine: sealed under old, G.n of them */
    /* raw: the wrapped DEK of blob 0 and what the calls need */
    const uint8_t *wrapped;
    size_t wrapped_len;
    uint8_t aad_old[AAD_LEN], aad_new[AAD_LEN];
    uint8_t dek[NS_DEK_LEN];
    char root[2][300]; /* store roots: [0] tmpfs, [1] disk */
    ns_store *st[2];
    double rate[NKINDS][NJOBS][ROUNDS_MAX];
} mcase;

/* From atexit, so that a failure (bench_die) removes the temp folders too. */
static void cleanup(void)
{
    bench_rm_tree(G.shm);
    bench_rm_tree(G.disk);
    bench_rm_tree(G.tok.dir);
}

/* ---- the stores ---- */

static const char *fs_type(const char *path)
{
    struct statfs sf;
    if (statfs(path, &sf) != 0)
        return "?";
    switch ((unsigned long)sf.f_type) {
    case TMPFS_MAGIC:
        return "tmpfs";
    case EXT4_SUPER_MAGIC:
        return "ext4";
    case XFS_SUPER_MAGIC:
        return "xfs";
    case BTRFS_SUPER_MAGIC:
        return "btrfs";
    case OVERLAYFS_SUPER_MAGIC:
        return "overlayfs";
    default:
        return "other";
    }
}

static void make_roots(const char *disk_base)
{
    if (access("/dev/shm", W_OK) != 0 || strcmp(fs_type("/dev/shm"), "tmpfs") != 0 ||
        bench_temp_dir("/dev/shm", G.shm, sizeof(G.shm)) != 0) {
        fprintf(stderr, "bench-rewrap: /dev/shm is not a writable tmpfs; the \"tmpfs\" store goes to %s\n",
                G.tok.dir);
        snprintf(G.shm, sizeof(G.shm), "%s/store", G.tok.dir);
        if (mkdir(G.shm, 0700) != 0)
            bench_die("mkdir %s: %s", G.shm, strerror(errno));
    }
    if (bench_temp_dir(disk_base, G.disk, sizeof(G.disk)) != 0)
        bench_die("cannot make a folder under %s: %s", disk_base, strerror(errno));
    if (strcmp(fs_type(G.disk), "tmpfs") == 0)
        fprintf(stderr, "bench-rewrap: warning: %s is on tmpfs, not a real disk (use -D)\n", G.disk);
}

/* Put the first n pristine blobs back (plain writes into <root>/cluster/secret, stray temp files removed),
 * then syncfs so that the run that follows pays for its own writes only. */
static void reset_store(const mcase *mc, int where, size_t n)
{
    char path[400];
    int dfd;

    snprintf(path, sizeof(path), "%s/cluster", mc->root[where]);
    (void)mkdir(mc->root[where], 0700);
    (void)mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/cluster/secret", mc->root[where]);
    (void)mkdir(path, 0700);
    if ((dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        bench_die("open %s: %s", path, strerror(errno));
    for (size_t i = 0; i < n; i++) {
        const char *leaf = G.names[i] + strlen(PREFIX);
        const ns_buf *b = mc->blobs[i];
        int fd = openat(dfd, leaf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, b->data, b->len) != (ssize_t)b->len || close(fd) != 0)
            bench_die("writing %s/%s: %s", path, leaf, strerror(errno));
    }
    if (syncfs(dfd) != 0)
        bench_die("syncfs %s: %s", path, strerror(errno));
    close(dfd);
}

/* After a rewrap: every blob carries the new key's id; every SAMPLE_STEP-th opens to the plaintext of its
 * pristine blob. */
static void check_store(const mcase *mc, int where, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ns_buf *b = NULL, *pt = NULL, *want = NULL;
        ns_envelope_info info;

        bench_ok(ns_store_get(mc->st[where], G.names[i], NS_BLOB_MAX, &b, NULL), "reading a re-wrapped blob");
        bench_ok(ns_envelope_parse(b->data, b->len, &info), "parsing a re-wrapped blob");
        if (memcmp(info.kek_id, mc->new_id, NS_KEK_ID_LEN) != 0)
            bench_die("%s: %s is not under the new key after the rewrap", mc->name, G.names[i]);
        if (i % SAMPLE_STEP == 0) {
            bench_ok(ns_envelope_open(mc->kr, G.names[i], b->data, b->len, &pt, NULL),
                     "opening a re-wrapped blob");
            bench_ok(ns_envelope_open(mc->kr, G.names[i], mc->blobs[i]->data, mc->blobs[i]->len, &want, NULL),
                     "opening a pristine blob");
            if (pt->len != want->len || memcmp(pt->data, want->data, pt->len) != 0)
                bench_die("%s: %s opens to another plaintext after the rewrap", mc->name, G.names[i]);
        }
        ns_buf_free(pt);
        ns_buf_free(want);
        ns_buf_free(b);
    }
}

/* ---- setting up one mechanism ---- */

static ns_kek *open_kek(const char *label, const char *mechanism)
{
    char uri[1024], mech[16];
    ns_kek_config kc;
    ns_kek *kek = NULL;

    bench_token_uri(&G.tok, label, uri, sizeof(uri));
    snprintf(mech, sizeof(mech), "%s", mechanism);
    memset(&kc, 0, sizeof(kc));
    kc.source = NS_KEK_SRC_PKCS11;
    kc.uri = uri;
    kc.mechanism = mech;
    bench_ok(ns_kek_pkcs11_open(&kc, SESSIONS, &kek), "ns_kek_pkcs11_open");
    return kek;
}

static void generate(const char *label, const char *mechanism)
{
    char uri[1024];
    bench_token_uri(&G.tok, label, uri, sizeof(uri));
    bench_ok(ns_kek_pkcs11_generate(uri, mechanism, NULL, SESSIONS), "ns_kek_pkcs11_generate");
}

/* wrap_aad() in envelope.c: "NSEN" | version | mech | 0 | kek id. */
static void make_aad(uint8_t mech, const uint8_t id[NS_KEK_ID_LEN], uint8_t aad[AAD_LEN])
{
    memcpy(aad, "NSEN", 4);
    aad[4] = NS_ENVELOPE_VERSION;
    aad[5] = mech;
    aad[6] = 0;
    memcpy(aad + 7, id, NS_KEK_ID_LEN);
}

static void setup_mech(mcase *mc, const char *name, uint8_t mech)
{
    ns_kek *keks[2];
    ns_kek *old;
    uint8_t secret[SECRET_LEN];
    ns_cur c, w;
    const uint8_t *skip;

    mc->name = name;
    mc->mech = mech;
    snprintf(mc->label_old, sizeof(mc->label_old), "kek-%s-old", name);
    snprintf(mc->label_new, sizeof(mc->label_new), "kek-%s-new", name);
    generate(mc->label_old, name);
    generate(mc->label_new, name);

    old = open_kek(mc->label_old, name);
    memcpy(mc->old_id, old->id, NS_KEK_ID_LEN);
    bench_ok(ns_keyring_from_keks(&old, 1, &mc->seal_kr), "ns_keyring_from_keks");
    keks[0] = open_kek(mc->label_new, name);
    keks[1] = open_kek(mc->label_old, name);
    memcpy(mc->new_id, keks[0]->id, NS_KEK_ID_LEN);
    bench_ok(ns_keyring_from_keks(keks, 2, &mc->kr), "ns_keyring_from_keks");

    if ((mc->blobs = calloc(G.n, sizeof(*mc->blobs))) == NULL)
        bench_die("out of memory");
    for (size_t i = 0; i < G.n; i++) {
        bench_ok(ns_random(secret, sizeof(secret)), "ns_random");
        bench_ok(ns_envelope_seal(mc->seal_kr, G.names[i], secret, sizeof(secret), &mc->blobs[i]),
                 "ns_envelope_seal");
    }
    OPENSSL_cleanse(secret, sizeof(secret));

    /* The wrapped DEK of blob 0 (layout: envelope.h), and the DEK the old KEK's own unwrap gives. */
    c = ns_cur_init(mc->blobs[0]->data, mc->blobs[0]->len);
    if (ns_cur_bytes(&c, 8, &skip) != 0 || ns_cur_bytes(&c, NS_KEK_ID_LEN, &skip) != 0 ||
        ns_cur_lp16(&c, 1, NS_WRAPPED_MAX, &w) != 0)
        bench_die("%s: cannot parse the sealed blob", name);
    mc->wrapped = w.p;
    mc->wrapped_len = w.len;
    make_aad(mech, mc->old_id, mc->aad_old);
    make_aad(mech, mc->new_id, mc->aad_new);
    old = ns_keyring_primary(mc->seal_kr);
    bench_ok(
        old->ops->unwrap(old, 0, mc->wrapped, mc->wrapped_len, mc->aad_old, sizeof(mc->aad_old), mc->dek),
        "the old KEK's unwrap");

    for (int where = 0; where < 2; where++) {
        ns_storage_config sc;
        char backend[] = "file";
        snprintf(mc->root[where], sizeof(mc->root[where]), "%s/%s", where == 0 ? G.shm : G.disk, name);
        memset(&sc, 0, sizeof(sc));
        sc.backend = backend;
        sc.path = mc->root[where];
        reset_store(mc, where, where == 0 ? G.n : G.disk_n);
        bench_ok(ns_store_open(&sc, &mc->st[where]), "ns_store_open");
    }
}

/* ---- the raw token calls ---- */

typedef struct rawsess {
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE old, new;
    uint64_t ctr; /* GCM IVs for the raw wraps: a counter is enough here */
} rawsess;

static CK_OBJECT_HANDLE find_key(CK_SESSION_HANDLE s, const char *label)
{
    CK_OBJECT_HANDLE h = bench_token_find(&G.tok, s, CKO_SECRET_KEY, label);

    if (h == CK_INVALID_HANDLE)
        bench_die("key %s not found", label);
    return h;
}

/* A logged-in session of our own (the token layer's login covers every session of the process). */
static void raw_open(const mcase *mc, rawsess *rs)
{
    memset(rs, 0, sizeof(*rs));
    rs->s = bench_token_session(&G.tok);
    rs->old = find_key(rs->s, mc->label_old);
    rs->new = find_key(rs->s, mc->label_new);
}

/* One unwrap under the old key and one wrap under the new key of the same DEK. With dek_out != NULL it
 * also returns the unwrapped DEK (for aes-kwp that takes a C_GetAttributeValue the timed loop leaves
 * out). With `calls`, aes-kwp makes the token calls that ours makes per blob instead (kwp_unwrap and
 * kwp_wrap in kek_pkcs11.c): C_UnwrapKey, C_GetAttributeValue and C_DestroyObject, then C_CreateObject of
 * the DEK, C_WrapKey and C_DestroyObject. (For aes-gcm, ours makes exactly the raw calls.) */
static CK_RV raw_once(const mcase *mc, rawsess *rs, int calls, uint8_t *dek_out)
{
    CK_FUNCTION_LIST *fn = G.tok.fn;
    uint8_t dek[64], out[128];
    CK_ULONG dlen = sizeof(dek), olen = sizeof(out);
    CK_RV rv;

    if (mc->mech == NS_MECH_AES_GCM) {
        uint8_t iv[NS_AEAD_NONCE] = {0};
        CK_GCM_PARAMS dp = {(CK_BYTE_PTR)mc->wrapped, NS_AEAD_NONCE,       NS_AEAD_NONCE * 8,
                            (CK_BYTE_PTR)mc->aad_old, sizeof(mc->aad_old), NS_AEAD_TAG * 8};
        CK_GCM_PARAMS ep = {
            iv, sizeof(iv), sizeof(iv) * 8, (CK_BYTE_PTR)mc->aad_new, sizeof(mc->aad_new), NS_AEAD_TAG * 8};
        CK_MECHANISM dm = {CKM_AES_GCM, &dp, sizeof(dp)}, em = {CKM_AES_GCM, &ep, sizeof(ep)};

        rs->ctr++;
        memcpy(iv, &rs->ctr, sizeof(rs->ctr));
        if ((rv = fn->C_DecryptInit(rs->s, &dm, rs->old)) != CKR_OK ||
            (rv = fn->C_Decrypt(rs->s, (CK_BYTE_PTR)mc->wrapped + NS_AEAD_NONCE,
                                mc->wrapped_len - NS_AEAD_NONCE, dek, &dlen)) != CKR_OK)
            goto out;
        if ((rv = fn->C_EncryptInit(rs->s, &em, rs->new)) != CKR_OK ||
            (rv = fn->C_Encrypt(rs->s, dek, dlen, out, &olen)) != CKR_OK)
            goto out;
        if (olen != NS_DEK_LEN + NS_AEAD_TAG)
            bench_die("raw aes-gcm wrap: %lu bytes", (unsigned long)olen);
    } else {
        CK_MECHANISM m = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE kt = CKK_AES;
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &cls, sizeof(cls)},       {CKA_KEY_TYPE, &kt, sizeof(kt)},
            {CKA_TOKEN, &no, sizeof(no)},         {CKA_SENSITIVE, &no, sizeof(no)},
            {CKA_EXTRACTABLE, &yes, sizeof(yes)}, {CKA_VALUE, dek, NS_DEK_LEN},
        };
        CK_ULONG ntmpl = sizeof(tmpl) / sizeof(tmpl[0]);
        CK_ATTRIBUTE val = {CKA_VALUE, dek, sizeof(dek)};
        CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
        CK_RV drv;

        /* The unwrap template has no CKA_VALUE: the last entry is left out. */
        if ((rv = fn->C_UnwrapKey(rs->s, &m, rs->old, (CK_BYTE_PTR)mc->wrapped, mc->wrapped_len, tmpl,
                                  ntmpl - 1, &h)) != CKR_OK)
            goto out;
        if (calls) {
            rv = fn->C_GetAttributeValue(rs->s, h, &val, 1);
            dlen = val.ulValueLen;
            drv = fn->C_DestroyObject(rs->s, h);
            h = CK_INVALID_HANDLE;
            if (rv == CKR_OK)
                rv = drv;
            if (rv == CKR_OK && dlen != NS_DEK_LEN)
                bench_die("raw unwrap: %lu bytes", (unsigned long)dlen);
            if (rv == CKR_OK)
                rv = fn->C_CreateObject(rs->s, tmpl, ntmpl, &h);
            if (rv != CKR_OK)
                goto out;
        }
        rv = fn->C_WrapKey(rs->s, &m, rs->new, h, out, &olen);
        if (rv == CKR_OK && dek_out != NULL && !calls) {
            rv = fn->C_GetAttributeValue(rs->s, h, &val, 1);
            dlen = val.ulValueLen;
        }
        drv = fn->C_DestroyObject(rs->s, h);
        if (rv == CKR_OK)
            rv = drv;
        if (rv == CKR_OK && olen != NS_DEK_LEN + 8)
            bench_die("raw aes-kwp wrap: %lu bytes", (unsigned long)olen);
    }
    if (rv == CKR_OK && dek_out != NULL) {
        if (dlen != NS_DEK_LEN)
            bench_die("raw unwrap: %lu bytes", (unsigned long)dlen);
        memcpy(dek_out, dek, NS_DEK_LEN);
    }
out:
    OPENSSL_cleanse(dek, sizeof(dek));
    return rv;
}

/* ---- timed runs ---- */

typedef struct run {
    enum kind kind;
    const mcase *mc;
    ns_store *st;
    size_t n;
    atomic_size_t next;
    pthread_barrier_t start;
} run;

typedef struct worker {
    pthread_t th;
    run *run;
    rawsess rs;
    int err;
    CK_RV rv;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    run *r = w->run;
    const mcase *mc = r->mc;

    pthread_barrier_wait(&r->start);
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed);
        if (i >= r->n)
            break;
        if (r->kind == RAW || r->kind == CALLS) {
            if ((w->rv = raw_once(mc, &w->rs, r->kind == CALLS, NULL)) != CKR_OK)
                break;
        } else if (r->kind == ENV) {
            ns_buf *nb = NULL;
            w->err = ns_envelope_rewrap(mc->kr, G.names[i], mc->blobs[i]->data, mc->blobs[i]->len, &nb);
            if (w->err == 0 && nb == NULL)
                w->err = NS_E_INTERNAL; /* a pristine blob is never under the new key */
            ns_buf_free(nb);
            if (w->err != 0)
                break;
        } else { /* STORE, STORE_DISK */
            ns_buf *b = NULL;
            char *version = NULL;
            if ((w->err = ns_store_get(r->st, G.names[i], NS_BLOB_MAX, &b, &version)) == 0)
                w->err = ns_store_put(r->st, G.names[i], b->data, b->len, NS_PUT_IF_MATCH, version);
            ns_buf_free(b);
            free(version);
            if (w->err != 0)
                break;
        }
    }
    return NULL;
}

/* J threads of a per-item kind (RAW, CALLS, ENV, STORE, STORE_DISK) over n items: items per second. */
static double measure_threads(enum kind kind, const mcase *mc, ns_store *st, size_t n, int jobs)
{
    run r;
    worker w[NJOBS];
    double t0, t1;

    memset(&r, 0, sizeof(r));
    memset(w, 0, sizeof(w));
    r.kind = kind;
    r.mc = mc;
    r.st = st;
    r.n = n;
    atomic_init(&r.next, 0);
    if (pthread_barrier_init(&r.start, NULL, (unsigned)jobs + 1) != 0)
        bench_die("pthread_barrier_init");
    for (int i = 0; i < jobs; i++) {
        w[i].run = &r;
        if (kind == RAW || kind == CALLS) {
            uint8_t dek[NS_DEK_LEN];
            raw_open(mc, &w[i].rs);
            bench_ck(raw_once(mc, &w[i].rs, kind == CALLS, dek), "raw unwrap + wrap (check)");
            if (memcmp(dek, mc->dek, NS_DEK_LEN) != 0)
                bench_die("%s: the raw unwrap's output is not the DEK that the KEK's unwrap gives", mc->name);
            OPENSSL_cleanse(dek, sizeof(dek));
        }
        if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0)
            bench_die("pthread_create");
    }
    pthread_barrier_wait(&r.start);
    t0 = bench_now();
    for (int i = 0; i < jobs; i++)
        pthread_join(w[i].th, NULL);
    t1 = bench_now();
    for (int i = 0; i < jobs; i++) {
        if (kind == RAW || kind == CALLS)
            bench_ck(G.tok.fn->C_CloseSession(w[i].rs.s), "C_CloseSession");
        if (w[i].err != 0)
            bench_die("%s: failed in the loop: %s", mc->name, ns_strerror(w[i].err));
        if (w[i].rv != CKR_OK)
            bench_die("%s: raw call failed in the loop: CKR 0x%lx", mc->name, (unsigned long)w[i].rv);
    }
    pthread_barrier_destroy(&r.start);
    return (double)n / (t1 - t0);
}

/* ns_rewrap_all over the store at `where` holding the first n pristine blobs: blobs per second. */
static double measure_ours(mcase *mc, int where, size_t n, int jobs)
{
    ns_rewrap_stats stats;
    double t0, t1;

    reset_store(mc, where, n);
    t0 = bench_now();
    bench_ok(ns_rewrap_all(mc->st[where], mc->kr, PREFIX, (unsigned)jobs, NULL, &stats), "ns_rewrap_all");
    t1 = bench_now();
    if (stats.total != n || stats.rewrapped != n || stats.failed != 0)
        bench_die("%s: rewrap of %zu blobs: %zu listed, %zu re-wrapped, %zu failed (%s)", mc->name, n,
                  stats.total, stats.rewrapped, stats.failed, ns_strerror(stats.first_error));
    check_store(mc, where, n);
    return (double)n / (t1 - t0);
}

/* ---- report ---- */

static void ratio_range(const double *a, const double *b, int rounds, char *out, size_t outlen)
{
    double lo = 1e300, hi = 0;
    for (int k = 0; k < rounds; k++) {
        double q = a[k] / b[k];
        lo = q < lo ? q : lo;
        hi = q > hi ? q : hi;
    }
    snprintf(out, outlen, "%.2f..%.2f", lo, hi);
}

static void print_machine(int argc, char **argv, int rounds)
{
    struct utsname un;
    char model[256], token[512];

    bench_cpu_model(model, sizeof(model));
    bench_token_describe(&G.tok, token, sizeof(token));
    printf(
        "# bench-rewrap: ns_rewrap_all of %d-byte secrets to a new KEK vs the token's unwrap + wrap calls\n",
        SECRET_LEN);
    printf("# command:");
    for (int i = 0; i < argc; i++)
        printf(" %s", argv[i]);
    printf("\n");
    if (uname(&un) == 0)
        printf("# machine: nproc %ld (%s), %s %s %s\n", sysconf(_SC_NPROCESSORS_ONLN), model, un.sysname,
               un.release, un.machine);
    printf("# token:   %s; KEK sessions %d\n", token, SESSIONS);
    printf("# crypto:  %s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("# stores:  %s (%s), %zu blobs; disk %s (%s), %zu blobs\n", G.shm, fs_type(G.shm), G.n, G.disk,
           fs_type(G.disk), G.disk_n);
    printf("# %d round(s); ours and raw alternate; medians over rounds; ratio = median(ours) / median(raw);\n"
           "# range = min..max of the per-round ratios. Diagnostics: calls = raw with the token calls ours "
           "makes;\n"
           "# envelope = ns_envelope_rewrap alone (no store); store = ns_store_get + ns_store_put(IF_MATCH) "
           "alone\n",
           rounds);
}

static void print_tables(mcase *mc, int rounds)
{
    char range[32];

    printf("\nstore on tmpfs (%s), %zu blobs of %d bytes\n", fs_type(G.shm), G.n, SECRET_LEN);
    printf("%-9s %4s %12s %10s %8s %11s %10s %11s %9s\n", "mechanism", "jobs", "ours blobs/s", "raw ops/s",
           "ours/raw", "range", "calls/s", "envelope/s", "store/s");
    for (int i = 0; i < NMECH; i++)
        for (int j = 0; j < NJOBS; j++) {
            if (!selected(mc[i].name, j + 1))
                continue;
            double o = bench_median(mc[i].rate[OURS][j], rounds),
                   r = bench_median(mc[i].rate[RAW][j], rounds);
            ratio_range(mc[i].rate[OURS][j], mc[i].rate[RAW][j], rounds, range, sizeof(range));
            printf("%-9s %4d %12.0f %10.0f %8.2f %11s %10.0f %11.0f %9.0f\n", mc[i].name, j + 1, o, r, o / r,
                   range, bench_median(mc[i].rate[CALLS][j], rounds),
                   bench_median(mc[i].rate[ENV][j], rounds), bench_median(mc[i].rate[STORE][j], rounds));
        }
    if (G.disk_n == 0)
        return;
    printf("\nstore on disk (%s, %s: every put fsyncs the file and its folder), %zu blobs\n", G.disk,
           fs_type(G.disk), G.disk_n);
    printf("%-9s %4s %12s %10s %8s %11s %10s\n", "mechanism", "jobs", "ours blobs/s", "raw ops/s", "ours/raw",
           "range", "store/s");
    for (int i = 0; i < NMECH; i++)
        for (int j = 0; j < NJOBS; j++) {
            if (!selected(mc[i].name, j + 1))
                continue;
            double o = bench_median(mc[i].rate[OURS_DISK][j], rounds),
                   r = bench_median(mc[i].rate[RAW][j], rounds);
            ratio_range(mc[i].rate[OURS_DISK][j], mc[i].rate[RAW][j], rounds, range, sizeof(range));
            printf("%-9s %4d %12.0f %10.0f %8.3f %11s %10.0f\n", mc[i].name, j + 1, o, r, o / r, range,
                   bench_median(mc[i].rate[STORE_DISK][j], rounds));
        }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench-rewrap [-n N] [-N DISK_N] [-r ROUNDS] [-D DISK_DIR] [-m MECH] [-j JOBS] [-v]\n"
            "  -n N         blobs in the tmpfs store (default 10000)\n"
            "  -N DISK_N    blobs in the real-disk store (default 2000, at most N; 0 skips the disk)\n"
            "  -r ROUNDS    rounds; the tables show medians (default 3, at most %d)\n"
            "  -D DISK_DIR  where the real-disk store goes (default /var/tmp)\n"
            "  -m MECH      only this mechanism (aes-gcm or aes-kwp)\n"
            "  -j JOBS      only this job count (1 or 2)\n"
            "  -v           print every measurement of every round on stderr\n",
            ROUNDS_MAX);
    exit(2);
}

static size_t parse_count(const char *s, size_t min, size_t max)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0 || v < min || v > max)
        usage();
    return (size_t)v;
}

int main(int argc, char **argv)
{
    static mcase mc[NMECH];
    static const struct {
        const char *name;
        uint8_t mech;
    } mechs[NMECH] = {{"aes-gcm", NS_MECH_AES_GCM}, {"aes-kwp", NS_MECH_AES_KWP}};
    const char *disk_base = "/var/tmp", *only_mech = NULL;
    int rounds = 3, opt, width = 5, verbose = 0;
    size_t disk_n = 2000;

    bench_init("bench-rewrap");
    G.n = 10000;
    while ((opt = getopt(argc, argv, "n:N:r:D:m:j:vh")) != -1) {
        switch (opt) {
        case 'n':
            G.n = parse_count(optarg, 1, 1000000);
            break;
        case 'N':
            disk_n = parse_count(optarg, 0, 1000000);
            break;
        case 'r':
            rounds = (int)parse_count(optarg, 1, ROUNDS_MAX);
            break;
        case 'D':
            disk_base = optarg;
            break;
        case 'm':
            if (strcmp(optarg, mechs[0].name) != 0 && strcmp(optarg, mechs[1].name) != 0)
                usage();
            only_mech = optarg;
            break;
        case 'j':
            G.only_jobs = (int)parse_count(optarg, 1, NJOBS);
            break;
        case 'v':
            verbose = 1;
            break;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();
    G.disk_n = disk_n < G.n ? disk_n : G.n;

    ns_secmem_harden_process();
    atexit(cleanup);
    if (ns_secmem_init() != 0)
        fprintf(stderr, "bench-rewrap: secure heap unavailable; secrets use ordinary memory\n");
    bench_token_make("bench", &G.tok);
    make_roots(disk_base);
    for (size_t m = G.n - 1, d = 1; m >= 10; m /= 10)
        if (++d > (size_t)width)
            width = (int)d;
    if ((G.names = calloc(G.n, sizeof(*G.names))) == NULL)
        bench_die("out of memory");
    for (size_t i = 0; i < G.n; i++)
        if (asprintf(&G.names[i], PREFIX "b%0*zu", width, i) < 0)
            bench_die("out of memory");
    for (int i = 0; i < NMECH; i++)
        if (only_mech == NULL || strcmp(only_mech, mechs[i].name) == 0)
            setup_mech(&mc[i], mechs[i].name, mechs[i].mech);

    print_machine(argc, argv, rounds);
    fflush(stdout);
    for (int k = 0; k < rounds; k++) {
        for (int i = 0; i < NMECH; i++)
            for (int j = 0; j < NJOBS; j++) {
                if (!selected(mc[i].name, j + 1))
                    continue;
                if (k % 2 == 0) {
                    mc[i].rate[OURS][j][k] = measure_ours(&mc[i], 0, G.n, j + 1);
                    mc[i].rate[RAW][j][k] = measure_threads(RAW, &mc[i], NULL, G.n, j + 1);
                } else {
                    mc[i].rate[RAW][j][k] = measure_threads(RAW, &mc[i], NULL, G.n, j + 1);
                    mc[i].rate[OURS][j][k] = measure_ours(&mc[i], 0, G.n, j + 1);
                }
                mc[i].rate[CALLS][j][k] = measure_threads(CALLS, &mc[i], NULL, G.n, j + 1);
                mc[i].rate[ENV][j][k] = measure_threads(ENV, &mc[i], NULL, G.n, j + 1);
                mc[i].rate[STORE][j][k] = measure_threads(STORE, &mc[i], mc[i].st[0], G.n, j + 1);
                if (G.disk_n > 0) {
                    mc[i].rate[OURS_DISK][j][k] = measure_ours(&mc[i], 1, G.disk_n, j + 1);
                    mc[i].rate[STORE_DISK][j][k] =
                        measure_threads(STORE_DISK, &mc[i], mc[i].st[1], G.disk_n, j + 1);
                }
                if (verbose)
                    fprintf(stderr,
                            "bench-rewrap: round %d %s jobs %d: ours %.0f raw %.0f calls %.0f envelope %.0f "
                            "store %.0f; disk: ours %.0f store %.0f\n",
                            k + 1, mc[i].name, j + 1, mc[i].rate[OURS][j][k], mc[i].rate[RAW][j][k],
                            mc[i].rate[CALLS][j][k], mc[i].rate[ENV][j][k], mc[i].rate[STORE][j][k],
                            mc[i].rate[OURS_DISK][j][k], mc[i].rate[STORE_DISK][j][k]);
            }
        fprintf(stderr, "bench-rewrap: round %d/%d done\n", k + 1, rounds);
    }
    print_tables(mc, rounds);

    for (int i = 0; i < NMECH; i++) {
        OPENSSL_cleanse(mc[i].dek, sizeof(mc[i].dek));
        for (size_t b = 0; mc[i].blobs != NULL && b < G.n; b++)
            ns_buf_free(mc[i].blobs[b]);
        free(mc[i].blobs);
        ns_store_close(mc[i].st[0]);
        ns_store_close(mc[i].st[1]);
        ns_keyring_free(mc[i].kr);
        ns_keyring_free(mc[i].seal_kr);
    }
    for (size_t i = 0; i < G.n; i++)
        free(G.names[i]);
    free(G.names);
    bench_token_close(&G.tok);
    return 0;
}
