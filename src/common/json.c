#include "ns-build.h"

#include <pthread.h>

#include <openssl/crypto.h>

#include "common/json.h"

static pthread_once_t json_once = PTHREAD_ONCE_INIT;

static void *json_secure_malloc(size_t n)
{
    return OPENSSL_secure_malloc(n ? n : 1);
}

/* CRYPTO_secure_free() wipes the block before releasing it; outside the arena it falls back to free(). */
static void json_secure_free(void *p)
{
    OPENSSL_secure_free(p);
}

static void json_setup(void)
{
    json_set_alloc_funcs(json_secure_malloc, json_secure_free);
}

void ns_json_init(void)
{
    pthread_once(&json_once, json_setup);
}

void ns_json_free(void *p)
{
    if (p != NULL)
        json_secure_free(p);
}
