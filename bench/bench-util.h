/* What the benchmark programs (bench/bench-*.c) share: failure reporting, the clock, medians, temp folders
 * and a throw-away SoftHSM token.
 *
 * These are programs, not library code: every failure prints "<prog>: <message>" on stderr and exits with
 * status 1 (the helpers that cannot fail return nothing). A program calls bench_init() first, registers an
 * atexit handler that passes its temp folders (the token's among them) to bench_rm_tree(), and only then
 * makes a token or a folder, so that a failure half-way still removes them. */
#ifndef NS_BENCH_UTIL_H
#define NS_BENCH_UTIL_H

#include <stddef.h>

#include <p11-kit/pkcs11.h>

#include "pkcs11/module.h"

/* The program's name, for messages and temp folder names ("<prog>.XXXXXX"). The string is not copied. */
void bench_init(const char *prog);

/* Print "<prog>: <message>" on stderr and exit(1). */
void bench_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* Die with "<what> failed: CKR 0x..." unless rv is CKR_OK. */
void bench_ck(CK_RV rv, const char *what);
/* Die with "<what> failed: <ns_strerror(r)> (r)" unless r is 0. */
void bench_ok(int r, const char *what);

/* Seconds on the monotonic clock. */
double bench_now(void);
/* The median of the n >= 1 values of v (the mean of the middle two when n is even); v is left as it is. */
double bench_median(const double *v, int n);

/* A new, empty folder "<base>/<prog>.XXXXXX" (mode 0700), its path in out; 0, or -1 with errno set and out
 * made "". */
int bench_temp_dir(const char *base, char *out, size_t size);
/* Remove dir and everything below it (links are not followed), then make dir "" so that a second call does
 * nothing; "" is accepted. Errors are ignored: for atexit handlers. */
void bench_rm_tree(char *dir);

/* The CPU's model name from /proc/cpuinfo in out, or "?". */
void bench_cpu_model(char *out, size_t size);

/* A SoftHSM token of the program's own, in a temp folder. */
typedef struct bench_token {
    char dir[200];      /* the temp folder (softhsm2.conf, tokens/); "" until made */
    char module[256];   /* path of the SoftHSM module */
    char label[33];     /* token label */
    ns_p11_module *mod; /* a reference held until bench_token_close(), so that the token layer and the
                         * program share one loaded instance */
    CK_FUNCTION_LIST *fn;
    CK_SLOT_ID slot; /* the initialised token's slot */
} bench_token;

/* The user PIN of the token bench_token_make() makes. */
#define BENCH_USER_PIN "bench-user-1234"

/* Find the SoftHSM module, make a temp folder (under $TMPDIR, or /tmp) with a softhsm2.conf that
 * SOFTHSM2_CONF then names, load the module, and initialise a free slot's token as `label` (at most 32
 * bytes) through PKCS#11: C_InitToken, then C_InitPIN (BENCH_USER_PIN) as SO. out->dir is set as soon as
 * the folder exists; the caller removes it (bench_rm_tree). With $BENCH_TOKEN_MODULE and $BENCH_TOKEN_LABEL
 * set, it uses that existing token instead (user PIN BENCH_USER_PIN; no folder): bench/bench-token.sh nss. */
void bench_token_make(const char *label, bench_token *out);
/* The RFC 7512 URI of the object `object` on the token, with the module path and the user PIN, in out. */
void bench_token_uri(const bench_token *t, const char *object, char *out, size_t size);
/* Whether the token lists mechanism `mech` (C_GetMechanismInfo). */
int bench_token_has(const bench_token *t, CK_MECHANISM_TYPE mech);
/* A new read-write session on the token, which must already be logged in as user (a login covers every
 * session of the process: the token layer's does). */
CK_SESSION_HANDLE bench_token_session(const bench_token *t);
/* The handle in session s of the object of class cls labelled `label`, or CK_INVALID_HANDLE if there is
 * none. */
CK_OBJECT_HANDLE bench_token_find(const bench_token *t, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                                  const char *label);
/* "<module path>: <manufacturer>, <library description> <version> (PKCS#11 <version>)" in out. */
void bench_token_describe(const bench_token *t, char *out, size_t size);
/* Drop the module reference (the last one finalises the module); the folder stays. */
void bench_token_close(bench_token *t);

#endif
