#include "ns-build.h"

#include <pthread.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <openssl/crypto.h>

#include "common/log.h"
#include "common/secmem.h"

static pthread_once_t secmem_once = PTHREAD_ONCE_INIT;
static int secmem_status = NS_E_INTERNAL;

static void secmem_setup(void)
{
    /* 1 = locked heap; 2 = heap created but mlock failed (still guarded and non-dumpable). */
    int r = CRYPTO_secure_malloc_init(NS_SECMEM_ARENA, 16);
    if (r == 0) {
        ns_log(NS_LOG_WARN, "secure heap unavailable; secrets use ordinary memory (wiped on free)");
        secmem_status = NS_E_NOMEM;
        return;
    }
    if (r == 2)
        ns_log(NS_LOG_WARN, "secure heap could not be locked in memory (RLIMIT_MEMLOCK); it is still "
                            "excluded from core dumps");
    secmem_status = 0;
}

int ns_secmem_init(void)
{
    pthread_once(&secmem_once, secmem_setup);
    return secmem_status;
}

void ns_secmem_harden_process(void)
{
    struct rlimit rl = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &rl);
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (ns_secmem_init() != 0)
        ns_log(NS_LOG_DEBUG, "continuing without a locked secure heap");
}

void *ns_secmem_alloc(size_t n)
{
    return OPENSSL_secure_zalloc(n ? n : 1);
}

void ns_secmem_free(void *p, size_t n)
{
    if (p == NULL)
        return;
    OPENSSL_secure_clear_free(p, n ? n : 1);
}

char *ns_secmem_strndup(const char *s, size_t n)
{
    char *c = ns_secmem_alloc(n + 1);

    if (c != NULL && n > 0)
        memcpy(c, s, n);
    return c; /* zeroed: the NUL is there */
}

void ns_secmem_strfree(char *s)
{
    if (s != NULL)
        ns_secmem_free(s, strlen(s) + 1);
}

void ns_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        OPENSSL_cleanse(p, n);
}

int ns_ct_memcmp(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n);
}
