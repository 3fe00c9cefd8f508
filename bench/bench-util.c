/* What the benchmark programs share (bench-util.h). */
#include "ns-build.h"

#include "bench-util.h"

#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"

#define SO_PIN "bench-so-5678"

static const char *const module_candidates[] = {
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
};

static const char *prog = "bench";

void bench_init(const char *name)
{
    prog = name;
}

/* ---- failure ---- */

void bench_die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1); /* the program's atexit handler removes its temp folders */
}

void bench_ck(CK_RV rv, const char *what)
{
    if (rv != CKR_OK)
        bench_die("%s failed: CKR 0x%lx", what, (unsigned long)rv);
}

void bench_ok(int r, const char *what)
{
    if (r != 0)
        bench_die("%s failed: %s (%d)", what, ns_strerror(r), r);
}

/* ---- clock and medians ---- */

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(const double *v, int n)
{
    double *s = malloc((size_t)n * sizeof(*s)), m;

    if (s == NULL)
        bench_die("out of memory");
    memcpy(s, v, (size_t)n * sizeof(*v));
    qsort(s, (size_t)n, sizeof(*s), cmp_double);
    m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    free(s);
    return m;
}

/* ---- folders and the machine ---- */

int bench_temp_dir(const char *base, char *out, size_t size)
{
    snprintf(out, size, "%s/%s.XXXXXX", base, prog);
    if (mkdtemp(out) == NULL) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void bench_rm_tree(char *dir)
{
    if (dir[0] != '\0') {
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        dir[0] = '\0';
    }
}

void bench_cpu_model(char *out, size_t size)
{
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");

    snprintf(out, size, "?");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "model name", 10) == 0 && strchr(line, ':') != NULL) {
            snprintf(out, size, "%s", strchr(line, ':') + 2);
            out[strcspn(out, "\n")] = '\0';
            break;
        }
    fclose(f);
}

/* ---- the token ---- */

static void write_conf(const char *path, const char *dir)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        bench_die("cannot write %s: %s", path, strerror(errno));
    fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n", dir);
    if (fclose(f) != 0)
        bench_die("cannot write %s", path);
}

/* The label as a blank-padded 32-byte PKCS#11 field. */
static void pad_label(CK_UTF8CHAR out[32], const char *label)
{
    memset(out, ' ', 32);
    memcpy(out, label, strlen(label));
}

/* A blank-padded PKCS#11 string field as a C string (out holds n + 1 bytes). */
static const char *unpad(const CK_UTF8CHAR *field, size_t n, char *out)
{
    memcpy(out, field, n);
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
    return out;
}

/* The slot of the initialised token labelled t->label. */
static CK_SLOT_ID token_slot(const bench_token *t)
{
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    CK_TOKEN_INFO ti;
    CK_UTF8CHAR label[32];

    pad_label(label, t->label);
    bench_ck(t->fn->C_GetSlotList(CK_TRUE, slots, &n), "C_GetSlotList");
    for (CK_ULONG i = 0; i < n; i++)
        if (t->fn->C_GetTokenInfo(slots[i], &ti) == CKR_OK && (ti.flags & CKF_TOKEN_INITIALIZED) &&
            memcmp(ti.label, label, sizeof(label)) == 0)
            return slots[i];
    bench_die("token %s not found", t->label);
}

/* $BENCH_TOKEN_MODULE and $BENCH_TOKEN_LABEL name a token that exists (its user PIN BENCH_USER_PIN): use it
 * instead of making a SoftHSM one (bench/bench-token.sh nss). Returns 0 when they are unset. */
static int existing_token(bench_token *out)
{
    const char *module = getenv("BENCH_TOKEN_MODULE"), *label = getenv("BENCH_TOKEN_LABEL");

    if (module == NULL || module[0] == '\0')
        return 0;
    if (label == NULL || label[0] == '\0' || strlen(label) > 32)
        bench_die("BENCH_TOKEN_MODULE is set: BENCH_TOKEN_LABEL must name its token (1..32 bytes)");
    snprintf(out->module, sizeof(out->module), "%s", module);
    snprintf(out->label, sizeof(out->label), "%s", label);
    bench_ok(ns_p11_module_get(out->module, &out->mod), "loading the token's module");
    out->fn = ns_p11_module_fn(out->mod);
    out->slot = token_slot(out);
    return 1;
}

void bench_token_make(const char *label, bench_token *out)
{
    const char *tmp = getenv("TMPDIR");
    char path[512];
    CK_SLOT_ID slots[16], free_slot = (CK_SLOT_ID)-1;
    CK_ULONG n = 16;
    CK_TOKEN_INFO ti;
    CK_UTF8CHAR padded[32];
    CK_SESSION_HANDLE s;
    CK_FUNCTION_LIST *fn;

    memset(out, 0, sizeof(*out));
    if (existing_token(out))
        return;
    if (strlen(label) > sizeof(padded))
        bench_die("token label %s is longer than 32 bytes", label);
    snprintf(out->label, sizeof(out->label), "%s", label);
    for (size_t i = 0; i < sizeof(module_candidates) / sizeof(module_candidates[0]); i++)
        if (access(module_candidates[i], R_OK) == 0) {
            snprintf(out->module, sizeof(out->module), "%s", module_candidates[i]);
            break;
        }
    if (out->module[0] == '\0')
        bench_die("SoftHSM module not found at %s or %s", module_candidates[0], module_candidates[1]);
    if (bench_temp_dir(tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp", out->dir, sizeof(out->dir)) != 0)
        bench_die("mkdtemp: %s", strerror(errno));
    snprintf(path, sizeof(path), "%s/tokens", out->dir);
    if (mkdir(path, 0700) != 0)
        bench_die("mkdir %s: %s", path, strerror(errno));
    snprintf(path, sizeof(path), "%s/softhsm2.conf", out->dir);
    write_conf(path, out->dir);
    setenv("SOFTHSM2_CONF", path, 1);

    bench_ok(ns_p11_module_get(out->module, &out->mod), "loading the SoftHSM module");
    fn = out->fn = ns_p11_module_fn(out->mod);
    bench_ck(fn->C_GetSlotList(CK_FALSE, slots, &n), "C_GetSlotList");
    for (CK_ULONG i = 0; i < n; i++)
        if (fn->C_GetTokenInfo(slots[i], &ti) == CKR_OK && !(ti.flags & CKF_TOKEN_INITIALIZED)) {
            free_slot = slots[i];
            break;
        }
    if (free_slot == (CK_SLOT_ID)-1)
        bench_die("no free SoftHSM slot");
    pad_label(padded, label);
    bench_ck(fn->C_InitToken(free_slot, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN), padded), "C_InitToken");
    /* SoftHSM gives an initialised token a new slot id: look it up by label. */
    out->slot = token_slot(out);
    bench_ck(fn->C_OpenSession(out->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
             "C_OpenSession");
    bench_ck(fn->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)), "C_Login(SO)");
    bench_ck(fn->C_InitPIN(s, (CK_UTF8CHAR_PTR)BENCH_USER_PIN, strlen(BENCH_USER_PIN)), "C_InitPIN");
    bench_ck(fn->C_Logout(s), "C_Logout");
    bench_ck(fn->C_CloseSession(s), "C_CloseSession");
}

void bench_token_uri(const bench_token *t, const char *object, char *out, size_t size)
{
    char label[3 * sizeof(t->label)], *p = label;

    /* RFC 7512: a label such as "NSS Certificate DB" is percent-encoded. */
    for (const unsigned char *c = (const unsigned char *)t->label; *c != '\0'; c++)
        p += isalnum(*c) || strchr("-._~", *c) != NULL ? sprintf(p, "%c", *c) : sprintf(p, "%%%02X", *c);
    snprintf(out, size, "pkcs11:token=%s;object=%s?module-path=%s&pin-value=" BENCH_USER_PIN, label, object,
             t->module);
}

int bench_token_has(const bench_token *t, CK_MECHANISM_TYPE mech)
{
    CK_MECHANISM_INFO mi;
    return t->fn->C_GetMechanismInfo(t->slot, mech, &mi) == CKR_OK;
}

CK_SESSION_HANDLE bench_token_session(const bench_token *t)
{
    CK_SESSION_HANDLE s;
    CK_SESSION_INFO si;

    bench_ck(t->fn->C_OpenSession(t->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
             "C_OpenSession");
    bench_ck(t->fn->C_GetSessionInfo(s, &si), "C_GetSessionInfo");
    if (si.state != CKS_RW_USER_FUNCTIONS)
        bench_die("raw session is not logged in (state %lu)", (unsigned long)si.state);
    return s;
}

CK_OBJECT_HANDLE bench_token_find(const bench_token *t, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                                  const char *label)
{
    CK_ATTRIBUTE tmpl[] = {{CKA_LABEL, (void *)label, strlen(label)}, {CKA_CLASS, &cls, sizeof(cls)}};
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    CK_ULONG n = 0;

    bench_ck(t->fn->C_FindObjectsInit(s, tmpl, 2), "C_FindObjectsInit");
    bench_ck(t->fn->C_FindObjects(s, &h, 1, &n), "C_FindObjects");
    bench_ck(t->fn->C_FindObjectsFinal(s), "C_FindObjectsFinal");
    return n == 1 ? h : CK_INVALID_HANDLE;
}

void bench_token_describe(const bench_token *t, char *out, size_t size)
{
    char manufacturer[33], description[33];
    CK_INFO info;

    bench_ck(t->fn->C_GetInfo(&info), "C_GetInfo");
    snprintf(out, size, "%s: %s, %s %u.%u (PKCS#11 %u.%u)", t->module,
             unpad(info.manufacturerID, sizeof(info.manufacturerID), manufacturer),
             unpad(info.libraryDescription, sizeof(info.libraryDescription), description),
             info.libraryVersion.major, info.libraryVersion.minor, info.cryptokiVersion.major,
             info.cryptokiVersion.minor);
}

void bench_token_close(bench_token *t)
{
    ns_p11_module_put(t->mod);
    t->mod = NULL;
    t->fn = NULL;
}
