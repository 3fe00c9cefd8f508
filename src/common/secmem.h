/* Locked, non-dumpable memory for secrets, and process hardening.
 *
 * Secret bytes (keys, PINs, plaintext) live in OpenSSL's secure heap: an mmap'd arena that is mlock'd,
 * marked MADV_DONTDUMP and guarded by inaccessible pages. ns_secmem_init() sets it up once per process;
 * before that, or if it cannot be set up, allocations fall back to ordinary memory (still wiped on free). */
#ifndef NS_COMMON_SECMEM_H
#define NS_COMMON_SECMEM_H

#include <stddef.h>

#include "common/err.h"

/* Size of the secure arena. Secret plaintexts are bounded by NS_BLOB_MAX (envelope.h) so that a few
 * concurrent opens fit. */
#define NS_SECMEM_ARENA (32u * 1024u * 1024u)

/* Initialise the secure heap. Idempotent, thread-safe. Returns 0, or NS_E_NOMEM if the arena could not be
 * created (allocation then falls back to wiped ordinary memory and a warning is logged). */
int ns_secmem_init(void) NS_WUR;

/* Turn off core dumps and ptrace attachment by other users for this process (RLIMIT_CORE = 0,
 * PR_SET_DUMPABLE = 0), then set up the secure heap (ns_secmem_init(); without it, logged at debug level, the
 * process goes on with the fallback). Every program calls this first. */
void ns_secmem_harden_process(void);

/* Allocate n zeroed secret bytes; NULL on failure. */
void *ns_secmem_alloc(size_t n);

/* Wipe and free memory from ns_secmem_alloc(); p may be NULL. n is the allocated size. */
void ns_secmem_free(void *p, size_t n);

/* A secret C string: a copy of s[0..n) and a NUL in ns_secmem_alloc() memory (NULL on failure), freed,
 * wiped, with ns_secmem_strfree() (NULL is accepted). */
char *ns_secmem_strndup(const char *s, size_t n);
void ns_secmem_strfree(char *s);

/* Wipe n bytes. */
void ns_wipe(void *p, size_t n);

/* Constant-time comparison: 0 when equal. */
int ns_ct_memcmp(const void *a, const void *b, size_t n);

#endif
