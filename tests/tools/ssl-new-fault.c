/* An LD_PRELOAD library for tests: SSL_new() returns NULL while the file named by $NS_SSL_NEW_FAIL exists,
 * else calls OpenSSL's. Lets a test make the server's TLS set-up of a connection fail on demand
 * (tests/integration/server-no-plaintext.sh). */
#include "ns-build.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/ssl.h>

SSL *SSL_new(SSL_CTX *ctx)
{
    static SSL *(*real)(SSL_CTX *);
    const char *f = getenv("NS_SSL_NEW_FAIL");

    if (f != NULL && access(f, F_OK) == 0)
        return NULL;
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "SSL_new");
    return real != NULL ? real(ctx) : NULL;
}
