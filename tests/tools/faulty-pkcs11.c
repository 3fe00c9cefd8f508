/* A fault-injecting PKCS#11 module for tests: it wraps a real module and, on a schedule, makes calls fail,
 * slow down, see the token removed, or return garbage.
 *
 * Environment (read when the module is loaded, i.e. at C_GetFunctionList):
 *   FAULTY_PKCS11_MODULE    path of the real module (required), e.g. SoftHSM's libsofthsm2.so
 *   FAULTY_PKCS11_CONTROL   path of a control file holding the rules; re-read on every intercepted call
 *                           (when its size, mtime or content changed), so a test can change the faults
 *                           while a process runs. Missing file = no faults.
 *   FAULTY_PKCS11_RULES     rules used when FAULTY_PKCS11_CONTROL is not set (';' separates rules)
 *   FAULTY_PKCS11_LOG       if set, one line is appended per injected fault ("C_Decrypt CKR_DEVICE_ERROR")
 *   FAULTY_PKCS11_SESSIONS  if set, rewritten (atomically) after every session change:
 *                           "open N\nmax N\nopened N\nclosed N\nfinalized 0|1\n" for this process
 *
 * Rules, one per line ('#' starts a comment), words separated by blanks:
 *   fail FUNC CKR_NAME [count=N] [after=M]   calls of FUNC ('*' = every intercepted call that reaches the
 *                                           token: not C_Initialize, C_Finalize, C_GetSlotList,
 *                                           C_CloseSession) return CKR_NAME instead of reaching the real
 *                                           module: the M calls after the rule appeared pass, then N fail
 *                                           (no count: all of them). The real module is not called, so
 *                                           an operation begun by C_SignInit/C_DecryptInit stays active
 *                                           there, as on a token that does not end it on error
 *   delay FUNC MS [count=N] [after=M]       calls of FUNC sleep MS milliseconds first
 *   corrupt FUNC [count=N] [after=M]        FUNC (C_Sign, C_Decrypt, C_Encrypt, C_UnwrapKey) succeeds but
 *                                           its output is replaced with garbage (for C_UnwrapKey: the new
 *                                           key's CKA_VALUE, as read back with C_GetAttributeValue)
 *   remove SECONDS                          the token is gone for SECONDS from the moment the control file
 *                                           was written (from the first call, with FAULTY_PKCS11_RULES):
 *                                           C_GetSlotList(CK_TRUE) lists no slot, C_GetSlotInfo has no
 *                                           CKF_TOKEN_PRESENT, C_GetTokenInfo and C_OpenSession return
 *                                           CKR_TOKEN_NOT_PRESENT, session calls CKR_DEVICE_REMOVED; every
 *                                           session open at the removal is closed in the real module (as a
 *                                           real removal does), so it is invalid afterwards too
 * Counters (count=, after=) are per process and start again whenever the rules change.
 *
 *   FAULTY_PKCS11_PROFILE   emulate how another token differs from the real module (every time a profile
 *                           changes a call, a line "profile NAME: WHAT" goes to FAULTY_PKCS11_LOG, so a test
 *                           can prove that it fired):
 *     cloudhsm  AWS CloudHSM: C_EncryptInit(CKM_AES_GCM) ignores the caller's IV, generates one and writes it
 *               into CK_GCM_PARAMS.pIv ("gcm-iv-replaced"); C_Encrypt/C_Decrypt of GCM data over 16 KB
 *               return CKR_DATA_LEN_RANGE ("gcm-over-16k"); C_WrapKey(CKM_AES_KEY_WRAP_PAD) is AES key wrap
 *               of the key padded per PKCS #5 (RFC 3394 over value ‖ PKCS #5 padding, 48 bytes for a 32-byte
 *               key: "kwp-pkcs5") instead of RFC 5649
 *     fips      a FIPS-mode token: C_EncryptInit(CKM_AES_GCM) with a caller's IV is
 * CKR_MECHANISM_PARAM_INVALID
 *               ("gcm-external-iv"); C_CreateObject of a secret key with a CKA_VALUE is
 *               CKR_TEMPLATE_INCONSISTENT ("plaintext-key-import"); a secret key made with CKA_SENSITIVE
 *               false (C_CreateObject, C_GenerateKey, C_UnwrapKey) is CKR_ATTRIBUTE_VALUE_INVALID
 *               ("non-sensitive-key"); and it is a PKCS#11 3.0 module: C_GetInterface("PKCS 11") gives a 3.0
 *               list whose C_MessageEncryptInit/C_EncryptMessage/C_MessageEncryptFinal do AES-GCM with an IV
 *               the module generates (CKG_GENERATE_RANDOM only; emulated with the real module's 2.40
 *               C_Encrypt: "message-encrypt"), and C_GetMechanismInfo(CKM_AES_GCM) adds CKF_MESSAGE_ENCRYPT
 *     fips-2.40 the same refusals without the 3.0 interface (C_GetInterface: CKR_FUNCTION_NOT_SUPPORTED)
 *     private   a secret key made with CKA_PRIVATE false (C_CreateObject, C_UnwrapKey) is
 *               CKR_ATTRIBUTE_VALUE_INVALID ("public-secret-key"): private objects only
 *
 * Only the calls nstance-secrets makes are intercepted; every other function goes straight to the real
 * module. Test code, not product code: fixed-size tables, no attempt at portability beyond Linux. */
#include "ns-build.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "pkcs11/v3.h"

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);
CK_RV C_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version, CK_INTERFACE **iface, CK_FLAGS flags);

#define MAX_RULES    32
#define MAX_SESSIONS 1024
#define CONTROL_MAX  8192

enum kind { K_FAIL, K_DELAY, K_CORRUPT, K_REMOVE };

struct rule {
    enum kind kind;
    char fn[40];
    CK_RV rv;
    long ms;      /* delay */
    long seconds; /* remove */
    long count;   /* -1: unlimited */
    long after;
    long seen; /* matching calls so far */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *real_dl;
static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST wrapped;

static struct rule rules[MAX_RULES];
static int nrules;
static char control_text[CONTROL_MAX];
static struct timespec control_mtime;
static int control_loaded;
static double remove_from; /* wall-clock start of the removal period */
static int removal_done;   /* sessions were closed for the current removal */

static CK_SESSION_HANDLE sess[MAX_SESSIONS];
static CK_SLOT_ID sess_slot[MAX_SESSIONS];
static int nsess, max_open;
static long opened, closed;

static CK_OBJECT_HANDLE garble_obj = CK_INVALID_HANDLE;

static const struct {
    const char *name;
    CK_RV rv;
} rv_names[] = {
    {"CKR_OK", CKR_OK},
    {"CKR_HOST_MEMORY", CKR_HOST_MEMORY},
    {"CKR_GENERAL_ERROR", CKR_GENERAL_ERROR},
    {"CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED},
    {"CKR_DEVICE_ERROR", CKR_DEVICE_ERROR},
    {"CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY},
    {"CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"CKR_SESSION_CLOSED", CKR_SESSION_CLOSED},
    {"CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT},
    {"CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
    {"CKR_OBJECT_HANDLE_INVALID", CKR_OBJECT_HANDLE_INVALID},
    {"CKR_KEY_HANDLE_INVALID", CKR_KEY_HANDLE_INVALID},
    {"CKR_PIN_INCORRECT", CKR_PIN_INCORRECT},
    {"CKR_MECHANISM_INVALID", CKR_MECHANISM_INVALID},
    {"CKR_ENCRYPTED_DATA_INVALID", CKR_ENCRYPTED_DATA_INVALID},
    {"CKR_DATA_LEN_RANGE", CKR_DATA_LEN_RANGE},
    {"CKR_MECHANISM_PARAM_INVALID", CKR_MECHANISM_PARAM_INVALID},
    {"CKR_TEMPLATE_INCONSISTENT", CKR_TEMPLATE_INCONSISTENT},
    {"CKR_ATTRIBUTE_VALUE_INVALID", CKR_ATTRIBUTE_VALUE_INVALID},
};

static const char *rv_name(CK_RV rv)
{
    for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
        if (rv_names[i].rv == rv)
            return rv_names[i].name;
    return "CKR_(other)";
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
    const char *path = getenv("FAULTY_PKCS11_LOG");
    va_list ap;
    FILE *f;
    if (path == NULL || (f = fopen(path, "a")) == NULL)
        return;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

/* Rewrite the session report; caller holds lock. */
static void report_sessions(int finalized)
{
    const char *path = getenv("FAULTY_PKCS11_SESSIONS");
    char tmp[4096];
    FILE *f;

    if (path == NULL || snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid()) >= (int)sizeof(tmp))
        return;
    if ((f = fopen(tmp, "w")) == NULL)
        return;
    fprintf(f, "open %d\nmax %d\nopened %ld\nclosed %ld\nfinalized %d\n", nsess, max_open, opened, closed,
            finalized);
    if (fclose(f) == 0)
        (void)rename(tmp, path);
    else
        (void)unlink(tmp);
}

static void sess_add(CK_SESSION_HANDLE h, CK_SLOT_ID slot)
{
    if (nsess < MAX_SESSIONS) {
        sess[nsess] = h;
        sess_slot[nsess] = slot;
        nsess++;
    }
    opened++;
    if (nsess > max_open)
        max_open = nsess;
    report_sessions(0);
}

static void sess_del(CK_SESSION_HANDLE h)
{
    for (int i = 0; i < nsess; i++)
        if (sess[i] == h) {
            sess[i] = sess[nsess - 1];
            sess_slot[i] = sess_slot[nsess - 1];
            nsess--;
            closed++;
            report_sessions(0);
            return;
        }
}

static int parse_rule(char *line, struct rule *r)
{
    char *w[8], *save = NULL, *tok;
    int n = 0;

    memset(r, 0, sizeof(*r));
    r->count = -1;
    for (tok = strtok_r(line, " \t\r", &save); tok != NULL && n < 8; tok = strtok_r(NULL, " \t\r", &save))
        w[n++] = tok;
    if (n == 0)
        return 0;
    if (strcmp(w[0], "remove") == 0 && n == 2) {
        r->kind = K_REMOVE;
        r->seconds = strtol(w[1], NULL, 10);
        return 1;
    }
    if (n < 2 || strlen(w[1]) >= sizeof(r->fn))
        return -1;
    strcpy(r->fn, w[1]);
    int first_opt;
    if (strcmp(w[0], "fail") == 0 && n >= 3) {
        r->kind = K_FAIL;
        r->rv = (CK_RV)-1;
        for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
            if (strcmp(rv_names[i].name, w[2]) == 0)
                r->rv = rv_names[i].rv;
        if (r->rv == (CK_RV)-1 && strncmp(w[2], "0x", 2) == 0)
            r->rv = strtoul(w[2], NULL, 16);
        if (r->rv == (CK_RV)-1)
            return -1;
        first_opt = 3;
    } else if (strcmp(w[0], "delay") == 0 && n >= 3) {
        r->kind = K_DELAY;
        r->ms = strtol(w[2], NULL, 10);
        first_opt = 3;
    } else if (strcmp(w[0], "corrupt") == 0) {
        r->kind = K_CORRUPT;
        first_opt = 2;
    } else {
        return -1;
    }
    for (int i = first_opt; i < n; i++) {
        if (strncmp(w[i], "count=", 6) == 0)
            r->count = strtol(w[i] + 6, NULL, 10);
        else if (strncmp(w[i], "after=", 6) == 0)
            r->after = strtol(w[i] + 6, NULL, 10);
        else
            return -1;
    }
    return 1;
}

static void parse_rules(const char *text, int sep_semicolon)
{
    char buf[CONTROL_MAX], *line, *save = NULL;

    nrules = 0;
    removal_done = 0;
    garble_obj = CK_INVALID_HANDLE;
    snprintf(buf, sizeof(buf), "%s", text);
    for (line = strtok_r(buf, sep_semicolon ? ";\n" : "\n", &save); line != NULL;
         line = strtok_r(NULL, sep_semicolon ? ";\n" : "\n", &save)) {
        char *hash = strchr(line, '#');
        int r;
        if (hash != NULL)
            *hash = '\0';
        if (nrules == MAX_RULES)
            break;
        if ((r = parse_rule(line, &rules[nrules])) < 0)
            log_line("faulty-pkcs11: bad rule '%s'", line);
        else if (r > 0)
            nrules++;
    }
}

/* Re-read the control file if it changed; caller holds lock. */
static void reload(void)
{
    const char *path = getenv("FAULTY_PKCS11_CONTROL");
    char text[CONTROL_MAX];
    struct stat st;
    ssize_t n = 0;
    int fd;

    if (path == NULL) {
        if (!control_loaded) {
            const char *env = getenv("FAULTY_PKCS11_RULES");
            parse_rules(env ? env : "", 1);
            remove_from = now();
            control_loaded = 1;
        }
        return;
    }
    text[0] = '\0';
    memset(&st, 0, sizeof(st));
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
        if (fstat(fd, &st) == 0 && (n = read(fd, text, sizeof(text) - 1)) > 0)
            text[n] = '\0';
        else
            text[0] = '\0';
        close(fd);
    }
    if (control_loaded && strcmp(text, control_text) == 0 && st.st_mtim.tv_sec == control_mtime.tv_sec &&
        st.st_mtim.tv_nsec == control_mtime.tv_nsec)
        return;
    memcpy(control_text, text, strlen(text) + 1);
    control_mtime = st.st_mtim;
    control_loaded = 1;
    remove_from = (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9;
    parse_rules(text, 0);
}

/* Caller holds lock. */
static int removed_now(void)
{
    for (int i = 0; i < nrules; i++)
        if (rules[i].kind == K_REMOVE && now() < remove_from + (double)rules[i].seconds)
            return 1;
    return 0;
}

/* The token goes away: every session of this process is closed in the real module. Caller holds lock. */
static void remove_sessions(void)
{
    if (removal_done)
        return;
    removal_done = 1;
    for (int i = 0; i < nsess; i++)
        (void)real->C_CloseSession(sess[i]);
    closed += nsess;
    nsess = 0;
    report_sessions(0);
    log_line("token removed");
}

struct verdict {
    CK_RV rv; /* CKR_OK: go on to the real module */
    long delay_ms;
    int corrupt;
};

static int rule_fires(struct rule *r, const char *fn, int any_ok)
{
    if (strcmp(r->fn, fn) != 0 && !(any_ok && strcmp(r->fn, "*") == 0))
        return 0;
    r->seen++;
    if (r->seen <= r->after)
        return 0;
    return r->count < 0 || r->seen - r->after <= r->count;
}

/* Decide what happens to one call. session: the call works on an open session (removal closes them). */
static struct verdict decide(const char *fn, int any_ok, int session)
{
    struct verdict v = {CKR_OK, 0, 0};

    pthread_mutex_lock(&lock);
    reload();
    if (removed_now()) {
        if (session) {
            remove_sessions();
            v.rv = CKR_DEVICE_REMOVED;
        }
        pthread_mutex_unlock(&lock);
        return v;
    }
    for (int i = 0; i < nrules; i++) {
        struct rule *r = &rules[i];
        if (r->kind == K_REMOVE || !rule_fires(r, fn, any_ok))
            continue;
        if (r->kind == K_FAIL && v.rv == CKR_OK) {
            v.rv = r->rv;
            log_line("%s %s", fn, rv_name(r->rv));
        } else if (r->kind == K_DELAY) {
            v.delay_ms += r->ms;
            log_line("%s delay", fn);
        } else if (r->kind == K_CORRUPT) {
            v.corrupt = 1;
            log_line("%s corrupt", fn);
        }
    }
    pthread_mutex_unlock(&lock);
    if (v.delay_ms > 0) {
        struct timespec ts = {v.delay_ms / 1000, (v.delay_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    return v;
}

static void garble(CK_BYTE_PTR p, CK_ULONG n)
{
    static unsigned x = 0x9e3779b9u;
    for (CK_ULONG i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] ^= (CK_BYTE)((x >> 16) | 1); /* never 0: every byte changes */
    }
}

/* ---- profiles ---- */

enum profile { P_NONE, P_CLOUDHSM, P_FIPS, P_PRIVATE };

static enum profile profile_now(void)
{
    const char *p = getenv("FAULTY_PKCS11_PROFILE");
    if (p != NULL && strcmp(p, "cloudhsm") == 0)
        return P_CLOUDHSM;
    if (p != NULL && (strcmp(p, "fips") == 0 || strcmp(p, "fips-2.40") == 0))
        return P_FIPS;
    if (p != NULL && strcmp(p, "private") == 0)
        return P_PRIVATE;
    return P_NONE;
}

static void profile_fired(const char *what)
{
    pthread_mutex_lock(&lock);
    log_line("profile %s: %s", getenv("FAULTY_PKCS11_PROFILE"), what);
    pthread_mutex_unlock(&lock);
}

#define GCM_LIMIT 16384

/* Sessions whose active encrypt/decrypt operation is AES-GCM (cloudhsm's 16 KB limit). */
static CK_SESSION_HANDLE gcm_sess[MAX_SESSIONS];
static int ngcm;

static void gcm_mark(CK_SESSION_HANDLE s, int on)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < ngcm; i++)
        if (gcm_sess[i] == s) {
            if (!on)
                gcm_sess[i] = gcm_sess[--ngcm];
            pthread_mutex_unlock(&lock);
            return;
        }
    if (on && ngcm < MAX_SESSIONS)
        gcm_sess[ngcm++] = s;
    pthread_mutex_unlock(&lock);
}

static int gcm_marked(CK_SESSION_HANDLE s)
{
    int on = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < ngcm; i++)
        on |= gcm_sess[i] == s;
    pthread_mutex_unlock(&lock);
    return on;
}

/* C_EncryptInit/C_DecryptInit under a profile: CKR_OK to go on to the real module. */
static CK_RV profile_crypt_init(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, int encrypt)
{
    enum profile p = profile_now();
    int gcm = m != NULL && m->mechanism == CKM_AES_GCM && m->pParameter != NULL &&
              m->ulParameterLen == sizeof(CK_GCM_PARAMS);
    CK_GCM_PARAMS *gp = gcm ? m->pParameter : NULL;

    gcm_mark(s, gcm);
    if (!encrypt || gp == NULL || gp->pIv == NULL || gp->ulIvLen == 0)
        return CKR_OK;
    if (p == P_FIPS) {
        profile_fired("gcm-external-iv");
        return CKR_MECHANISM_PARAM_INVALID;
    }
    if (p == P_CLOUDHSM) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, gp->pIv, gp->ulIvLen) : -1;
        if (fd >= 0)
            close(fd);
        if (n != (ssize_t)gp->ulIvLen)
            return CKR_GENERAL_ERROR;
        profile_fired("gcm-iv-replaced");
    }
    return CKR_OK;
}

static CK_RV profile_crypt(CK_SESSION_HANDLE s, CK_ULONG n)
{
    if (profile_now() == P_CLOUDHSM && n > GCM_LIMIT && gcm_marked(s)) {
        profile_fired("gcm-over-16k");
        return CKR_DATA_LEN_RANGE;
    }
    return CKR_OK;
}

static const CK_ATTRIBUTE *find_attr(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type)
{
    for (CK_ULONG i = 0; t != NULL && i < n; i++)
        if (t[i].type == type && t[i].pValue != NULL)
            return &t[i];
    return NULL;
}

/* fips: a secret key template with CKA_SENSITIVE false (or, if import, with a plaintext CKA_VALUE). */
static CK_RV profile_key_template(const CK_ATTRIBUTE *t, CK_ULONG n, int import)
{
    const CK_ATTRIBUTE *cls = find_attr(t, n, CKA_CLASS), *sens = find_attr(t, n, CKA_SENSITIVE);
    const CK_ATTRIBUTE *priv = find_attr(t, n, CKA_PRIVATE);
    enum profile p = profile_now();

    if (p == P_PRIVATE && cls != NULL && *(CK_OBJECT_CLASS *)cls->pValue == CKO_SECRET_KEY && priv != NULL &&
        *(CK_BBOOL *)priv->pValue == CK_FALSE) {
        profile_fired("public-secret-key");
        return CKR_ATTRIBUTE_VALUE_INVALID;
    }
    if (p != P_FIPS)
        return CKR_OK;
    if (import && (cls == NULL || *(CK_OBJECT_CLASS *)cls->pValue != CKO_SECRET_KEY))
        return CKR_OK;
    if (import && find_attr(t, n, CKA_VALUE) != NULL) {
        profile_fired("plaintext-key-import");
        return CKR_TEMPLATE_INCONSISTENT;
    }
    if (sens != NULL && *(CK_BBOOL *)sens->pValue == CK_FALSE) {
        profile_fired("non-sensitive-key");
        return CKR_ATTRIBUTE_VALUE_INVALID;
    }
    return CKR_OK;
}

/* cloudhsm: CKM_AES_KEY_WRAP_PAD as RFC 3394 key wrap over the key's value with PKCS #5 padding. The key
 * must be readable (the DEK session objects nstance-secrets wraps are). */
static CK_RV profile_kwp_pkcs5(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE wk, CK_OBJECT_HANDLE k, CK_BYTE_PTR out,
                               CK_ULONG_PTR on)
{
    static const CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    static const CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    static const CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
    CK_BYTE val[256 + 8];
    CK_ATTRIBUTE a = {CKA_VALUE, val, 256};
    CK_MECHANISM kw = {CKM_AES_KEY_WRAP, NULL, 0};
    CK_OBJECT_HANDLE tmp = CK_INVALID_HANDLE;
    CK_ULONG pad;
    CK_RV rv;

    if ((rv = real->C_GetAttributeValue(s, k, &a, 1)) != CKR_OK)
        return rv;
    pad = 8 - a.ulValueLen % 8;
    memset(val + a.ulValueLen, (int)pad, pad);
    {
        CK_ATTRIBUTE t[] = {
            {CKA_CLASS, (void *)&cls, sizeof(cls)},
            {CKA_KEY_TYPE, (void *)&kt, sizeof(kt)},
            {CKA_TOKEN, (void *)&no, 1},
            {CKA_EXTRACTABLE, (void *)&yes, 1},
            {CKA_SENSITIVE, (void *)&no, 1},
            {CKA_VALUE, val, a.ulValueLen + pad},
        };
        if ((rv = real->C_CreateObject(s, t, sizeof(t) / sizeof(t[0]), &tmp)) != CKR_OK)
            return rv;
    }
    rv = real->C_WrapKey(s, &kw, wk, tmp, out, on);
    (void)real->C_DestroyObject(s, tmp);
    memset(val, 0, sizeof(val));
    if (rv == CKR_OK)
        profile_fired("kwp-pkcs5");
    return rv;
}

/* ---- wrappers ---- */

#define GATE(name, any, session)                                                                             \
    struct verdict v = decide(#name, any, session);                                                          \
    if (v.rv != CKR_OK)                                                                                      \
    return v.rv

static CK_RV w_Initialize(CK_VOID_PTR args)
{
    return real->C_Initialize(args);
}

static CK_RV w_Finalize(CK_VOID_PTR reserved)
{
    CK_RV rv = real->C_Finalize(reserved);
    pthread_mutex_lock(&lock);
    report_sessions(1);
    pthread_mutex_unlock(&lock);
    return rv;
}

static CK_RV w_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR n)
{
    struct verdict v = decide("C_GetSlotList", 0, 0);
    int gone;
    if (v.rv != CKR_OK)
        return v.rv;
    pthread_mutex_lock(&lock);
    gone = removed_now();
    pthread_mutex_unlock(&lock);
    if (gone && present) {
        log_line("C_GetSlotList token removed");
        *n = 0;
        return CKR_OK;
    }
    return real->C_GetSlotList(present, list, n);
}

static CK_RV w_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
    CK_RV rv;
    int gone;
    GATE(C_GetSlotInfo, 1, 0);
    rv = real->C_GetSlotInfo(slot, info);
    pthread_mutex_lock(&lock);
    gone = removed_now();
    pthread_mutex_unlock(&lock);
    if (rv == CKR_OK && gone)
        info->flags &= ~(CK_FLAGS)CKF_TOKEN_PRESENT;
    return rv;
}

static CK_RV w_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
    int gone;
    GATE(C_GetTokenInfo, 1, 0);
    pthread_mutex_lock(&lock);
    gone = removed_now();
    pthread_mutex_unlock(&lock);
    if (gone)
        return CKR_TOKEN_NOT_PRESENT;
    return real->C_GetTokenInfo(slot, info);
}

static CK_RV w_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO_PTR info)
{
    int gone;
    GATE(C_GetMechanismInfo, 1, 0);
    pthread_mutex_lock(&lock);
    gone = removed_now();
    pthread_mutex_unlock(&lock);
    CK_RV rv;
    if (gone)
        return CKR_TOKEN_NOT_PRESENT;
    rv = real->C_GetMechanismInfo(slot, t, info);
    if (rv == CKR_OK && t == CKM_AES_GCM && getenv("FAULTY_PKCS11_PROFILE") != NULL &&
        strcmp(getenv("FAULTY_PKCS11_PROFILE"), "fips") == 0)
        info->flags |= CKF_MESSAGE_ENCRYPT;
    return rv;
}

static CK_RV w_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                           CK_SESSION_HANDLE_PTR s)
{
    CK_RV rv;
    int gone;
    GATE(C_OpenSession, 1, 0);
    pthread_mutex_lock(&lock);
    gone = removed_now();
    pthread_mutex_unlock(&lock);
    if (gone)
        return CKR_TOKEN_NOT_PRESENT;
    rv = real->C_OpenSession(slot, flags, app, notify, s);
    if (rv == CKR_OK) {
        pthread_mutex_lock(&lock);
        sess_add(*s, slot);
        pthread_mutex_unlock(&lock);
    }
    return rv;
}

static CK_RV w_CloseSession(CK_SESSION_HANDLE s)
{
    CK_RV rv = real->C_CloseSession(s);
    pthread_mutex_lock(&lock);
    sess_del(s);
    pthread_mutex_unlock(&lock);
    return rv;
}

static CK_RV w_CloseAllSessions(CK_SLOT_ID slot)
{
    CK_RV rv = real->C_CloseAllSessions(slot);
    pthread_mutex_lock(&lock);
    for (int i = nsess - 1; i >= 0; i--)
        if (sess_slot[i] == slot)
            sess_del(sess[i]);
    pthread_mutex_unlock(&lock);
    return rv;
}

static CK_RV w_GetSessionInfo(CK_SESSION_HANDLE s, CK_SESSION_INFO_PTR info)
{
    GATE(C_GetSessionInfo, 1, 1);
    return real->C_GetSessionInfo(s, info);
}

static CK_RV w_Login(CK_SESSION_HANDLE s, CK_USER_TYPE u, CK_UTF8CHAR_PTR pin, CK_ULONG n)
{
    GATE(C_Login, 1, 1);
    return real->C_Login(s, u, pin, n);
}

static CK_RV w_FindObjectsInit(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    GATE(C_FindObjectsInit, 1, 1);
    return real->C_FindObjectsInit(s, t, n);
}

static CK_RV w_FindObjects(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR h, CK_ULONG max, CK_ULONG_PTR n)
{
    GATE(C_FindObjects, 1, 1);
    return real->C_FindObjects(s, h, max, n);
}

static CK_RV w_GetAttributeValue(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    CK_RV rv;
    GATE(C_GetAttributeValue, 1, 1);
    rv = real->C_GetAttributeValue(s, o, t, n);
    pthread_mutex_lock(&lock);
    if (rv == CKR_OK && o == garble_obj)
        for (CK_ULONG i = 0; i < n; i++)
            if (t[i].type == CKA_VALUE && t[i].pValue != NULL)
                garble(t[i].pValue, t[i].ulValueLen);
    pthread_mutex_unlock(&lock);
    return rv;
}

static CK_RV w_EncryptInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
    CK_RV rv;
    GATE(C_EncryptInit, 1, 1);
    if ((rv = profile_crypt_init(s, m, 1)) != CKR_OK)
        return rv;
    return real->C_EncryptInit(s, m, k);
}

static CK_RV w_Encrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG n, CK_BYTE_PTR out, CK_ULONG_PTR on)
{
    CK_RV rv;
    GATE(C_Encrypt, 1, 1);
    if ((rv = profile_crypt(s, n)) != CKR_OK)
        return rv;
    rv = real->C_Encrypt(s, in, n, out, on);
    if (rv == CKR_OK && v.corrupt && out != NULL)
        garble(out, *on);
    return rv;
}

static CK_RV w_DecryptInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
    CK_RV rv;
    GATE(C_DecryptInit, 1, 1);
    if ((rv = profile_crypt_init(s, m, 0)) != CKR_OK)
        return rv;
    return real->C_DecryptInit(s, m, k);
}

static CK_RV w_Decrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG n, CK_BYTE_PTR out, CK_ULONG_PTR on)
{
    CK_RV rv;
    GATE(C_Decrypt, 1, 1);
    if ((rv = profile_crypt(s, n)) != CKR_OK)
        return rv;
    rv = real->C_Decrypt(s, in, n, out, on);
    if (rv == CKR_OK && v.corrupt && out != NULL)
        garble(out, *on);
    return rv;
}

static CK_RV w_SignInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
    GATE(C_SignInit, 1, 1);
    return real->C_SignInit(s, m, k);
}

static CK_RV w_Sign(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG n, CK_BYTE_PTR out, CK_ULONG_PTR on)
{
    CK_RV rv;
    GATE(C_Sign, 1, 1);
    rv = real->C_Sign(s, in, n, out, on);
    if (rv == CKR_OK && v.corrupt && out != NULL)
        garble(out, *on);
    return rv;
}

static CK_RV w_WrapKey(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE wk, CK_OBJECT_HANDLE k,
                       CK_BYTE_PTR out, CK_ULONG_PTR on)
{
    CK_RV rv;
    GATE(C_WrapKey, 1, 1);
    if (profile_now() == P_CLOUDHSM && m != NULL && m->mechanism == CKM_AES_KEY_WRAP_PAD)
        rv = profile_kwp_pkcs5(s, wk, k, out, on);
    else
        rv = real->C_WrapKey(s, m, wk, k, out, on);
    if (rv == CKR_OK && v.corrupt && out != NULL)
        garble(out, *on);
    return rv;
}

static CK_RV w_UnwrapKey(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE uk, CK_BYTE_PTR in,
                         CK_ULONG n, CK_ATTRIBUTE_PTR t, CK_ULONG nt, CK_OBJECT_HANDLE_PTR h)
{
    CK_RV rv;
    GATE(C_UnwrapKey, 1, 1);
    if ((rv = profile_key_template(t, nt, 0)) != CKR_OK)
        return rv;
    rv = real->C_UnwrapKey(s, m, uk, in, n, t, nt, h);
    if (rv == CKR_OK && v.corrupt) {
        pthread_mutex_lock(&lock);
        garble_obj = *h;
        pthread_mutex_unlock(&lock);
    }
    return rv;
}

static CK_RV w_CreateObject(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR h)
{
    CK_RV rv;
    GATE(C_CreateObject, 0, 1);
    if ((rv = profile_key_template(t, n, 1)) != CKR_OK)
        return rv;
    return real->C_CreateObject(s, t, n, h);
}

static CK_RV w_GenerateKey(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n,
                           CK_OBJECT_HANDLE_PTR h)
{
    CK_RV rv;
    GATE(C_GenerateKey, 0, 1);
    if ((rv = profile_key_template(t, n, 0)) != CKR_OK)
        return rv;
    return real->C_GenerateKey(s, m, t, n, h);
}

/* ---- fips: the PKCS#11 3.0 message API for AES-GCM, emulated on the real module ---- */

static ns_p11_fn3 wrapped3;
static CK_INTERFACE iface3 = {(CK_CHAR *)"PKCS 11", &wrapped3, 0};

/* Sessions with a message-encryption operation, and its key. */
static CK_SESSION_HANDLE msg_sess[MAX_SESSIONS];
static CK_OBJECT_HANDLE msg_key[MAX_SESSIONS];
static int nmsg;

static int msg_find(CK_SESSION_HANDLE s)
{
    for (int i = 0; i < nmsg; i++)
        if (msg_sess[i] == s)
            return i;
    return -1;
}

static CK_RV w_MessageEncryptInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
    CK_RV rv = CKR_OK;
    GATE(C_MessageEncryptInit, 1, 1);
    if (m == NULL || m->mechanism != CKM_AES_GCM)
        return CKR_MECHANISM_INVALID;
    pthread_mutex_lock(&lock);
    if (msg_find(s) >= 0)
        rv = CKR_OPERATION_ACTIVE;
    else if (nmsg == MAX_SESSIONS)
        rv = CKR_DEVICE_MEMORY;
    else {
        msg_sess[nmsg] = s;
        msg_key[nmsg++] = k;
    }
    pthread_mutex_unlock(&lock);
    return rv;
}

static CK_RV w_EncryptMessage(CK_SESSION_HANDLE s, CK_VOID_PTR param, CK_ULONG param_len, CK_BYTE_PTR aad,
                              CK_ULONG aad_len, CK_BYTE_PTR in, CK_ULONG n, CK_BYTE_PTR out, CK_ULONG_PTR on)
{
    CK_GCM_MESSAGE_PARAMS *mp = param;
    CK_BYTE buf[4096 + 16];
    CK_ULONG bn = sizeof(buf);
    CK_OBJECT_HANDLE key;
    CK_RV rv;
    int i, fd;
    GATE(C_EncryptMessage, 1, 1);
    pthread_mutex_lock(&lock);
    i = msg_find(s);
    key = i >= 0 ? msg_key[i] : CK_INVALID_HANDLE;
    pthread_mutex_unlock(&lock);
    if (i < 0)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (mp == NULL || param_len != sizeof(*mp) || mp->ivGenerator != CKG_GENERATE_RANDOM ||
        mp->ulIvFixedBits != 0 || mp->ulIvLen != 12 || mp->pIv == NULL || mp->pTag == NULL ||
        mp->ulTagBits != 128 || n > 4096 || on == NULL)
        return CKR_MECHANISM_PARAM_INVALID;
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, mp->pIv, 12) != 12) {
        if (fd >= 0)
            close(fd);
        return CKR_GENERAL_ERROR;
    }
    close(fd);
    {
        CK_GCM_PARAMS gp = {mp->pIv, 12, 96, aad, aad_len, 128};
        CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof(gp)};
        if ((rv = real->C_EncryptInit(s, &m, key)) != CKR_OK)
            return rv;
        if ((rv = real->C_Encrypt(s, in, n, buf, &bn)) != CKR_OK)
            return rv;
    }
    if (out == NULL || *on < bn - 16) {
        *on = bn - 16;
        return out == NULL ? CKR_OK : CKR_BUFFER_TOO_SMALL;
    }
    memcpy(out, buf, bn - 16);
    memcpy(mp->pTag, buf + bn - 16, 16);
    *on = bn - 16;
    memset(buf, 0, sizeof(buf));
    profile_fired("message-encrypt");
    return CKR_OK;
}

static CK_RV w_MessageEncryptFinal(CK_SESSION_HANDLE s)
{
    int i;
    GATE(C_MessageEncryptFinal, 1, 1);
    pthread_mutex_lock(&lock);
    if ((i = msg_find(s)) >= 0) {
        msg_sess[i] = msg_sess[nmsg - 1];
        msg_key[i] = msg_key[nmsg - 1];
        nmsg--;
    }
    pthread_mutex_unlock(&lock);
    return i >= 0 ? CKR_OK : CKR_OPERATION_NOT_INITIALIZED;
}

CK_RV C_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version, CK_INTERFACE **iface, CK_FLAGS flags)
{
    CK_FUNCTION_LIST *base = NULL;
    const char *p = getenv("FAULTY_PKCS11_PROFILE");
    CK_RV rv;

    (void)flags;
    if (p == NULL || strcmp(p, "fips") != 0)
        return CKR_FUNCTION_NOT_SUPPORTED;
    if (iface == NULL || (name != NULL && strcmp((const char *)name, "PKCS 11") != 0) ||
        (version != NULL && version->major != 3))
        return CKR_ARGUMENTS_BAD;
    if ((rv = C_GetFunctionList(&base)) != CKR_OK)
        return rv;
    pthread_mutex_lock(&lock);
    wrapped3.base = *base;
    wrapped3.base.version.major = 3;
    wrapped3.base.version.minor = 0;
    wrapped3.C_GetInterface = C_GetInterface;
    wrapped3.C_MessageEncryptInit = w_MessageEncryptInit;
    wrapped3.C_EncryptMessage = w_EncryptMessage;
    wrapped3.C_MessageEncryptFinal = w_MessageEncryptFinal;
    pthread_mutex_unlock(&lock);
    *iface = &iface3;
    return CKR_OK;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    CK_C_GetFunctionList get = NULL;
    const char *path = getenv("FAULTY_PKCS11_MODULE");
    CK_RV rv = CKR_OK;

    if (list == NULL)
        return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&lock);
    if (real == NULL) {
        if (path == NULL) {
            fprintf(stderr, "faulty-pkcs11: FAULTY_PKCS11_MODULE is not set\n");
            rv = CKR_GENERAL_ERROR;
            goto out;
        }
        if ((real_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
            fprintf(stderr, "faulty-pkcs11: cannot load %s: %s\n", path, dlerror());
            rv = CKR_GENERAL_ERROR;
            goto out;
        }
        *(void **)&get = dlsym(real_dl, "C_GetFunctionList");
        if (get == NULL || (rv = get(&real)) != CKR_OK || real == NULL) {
            fprintf(stderr, "faulty-pkcs11: %s is not a PKCS#11 module\n", path);
            real = NULL;
            rv = CKR_GENERAL_ERROR;
            goto out;
        }
        wrapped = *real;
        wrapped.C_GetFunctionList = C_GetFunctionList;
        wrapped.C_Initialize = w_Initialize;
        wrapped.C_Finalize = w_Finalize;
        wrapped.C_GetSlotList = w_GetSlotList;
        wrapped.C_GetSlotInfo = w_GetSlotInfo;
        wrapped.C_GetTokenInfo = w_GetTokenInfo;
        wrapped.C_GetMechanismInfo = w_GetMechanismInfo;
        wrapped.C_OpenSession = w_OpenSession;
        wrapped.C_CloseSession = w_CloseSession;
        wrapped.C_CloseAllSessions = w_CloseAllSessions;
        wrapped.C_GetSessionInfo = w_GetSessionInfo;
        wrapped.C_Login = w_Login;
        wrapped.C_FindObjectsInit = w_FindObjectsInit;
        wrapped.C_FindObjects = w_FindObjects;
        wrapped.C_GetAttributeValue = w_GetAttributeValue;
        wrapped.C_EncryptInit = w_EncryptInit;
        wrapped.C_Encrypt = w_Encrypt;
        wrapped.C_DecryptInit = w_DecryptInit;
        wrapped.C_Decrypt = w_Decrypt;
        wrapped.C_SignInit = w_SignInit;
        wrapped.C_Sign = w_Sign;
        wrapped.C_WrapKey = w_WrapKey;
        wrapped.C_UnwrapKey = w_UnwrapKey;
        wrapped.C_CreateObject = w_CreateObject;
        wrapped.C_GenerateKey = w_GenerateKey;
    }
    *list = &wrapped;
out:
    pthread_mutex_unlock(&lock);
    return rv;
}
