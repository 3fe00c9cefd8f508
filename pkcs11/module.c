#include "ns-build.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "pkcs11/module.h"
#include "pkcs11/rv.h"

struct ns_p11_module {
    char *path;
    void *dl;
    CK_FUNCTION_LIST *fn;
    ns_p11_fn3 *fn3; /* the PKCS#11 3.0 list from C_GetInterface, or NULL (a 2.40 module) */
    int refs;
    int finalize; /* we initialised it, so we finalise it */
    struct ns_p11_module *next;
};

static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static ns_p11_module *modules;

static void module_free(ns_p11_module *m)
{
    if (m == NULL)
        return;
    if (m->finalize)
        (void)m->fn->C_Finalize(NULL);
    if (m->dl != NULL)
        dlclose(m->dl);
    free(m->path);
    free(m);
}

static int module_load(const char *path, ns_p11_module **out)
{
    ns_p11_module *m = NULL;
    CK_C_GetFunctionList get = NULL;
    ns_p11_C_GetInterface get3 = NULL;
    CK_INTERFACE *iface = NULL;
    CK_VERSION v3 = {3, 0};
    CK_C_INITIALIZE_ARGS args;
    CK_RV rv;
    int r = NS_E_INTERNAL;

    if ((m = calloc(1, sizeof(*m))) == NULL || (m->path = strdup(path)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if (access(path, R_OK) != 0) {
        /* "token unavailable", not "not found": exit 3 would read as "no such secret" to a script. */
        ns_log(NS_LOG_ERROR, "PKCS#11 module %s not found", path);
        r = NS_E_TOKEN_UNAVAILABLE;
        goto out;
    }
    if ((m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
        ns_log(NS_LOG_ERROR, "cannot load PKCS#11 module %s: %s", path, dlerror());
        r = NS_E_TOKEN;
        goto out;
    }
    *(void **)&get = dlsym(m->dl, "C_GetFunctionList");
    if (get == NULL || get(&m->fn) != CKR_OK || m->fn == NULL) {
        ns_log(NS_LOG_ERROR, "%s is not a PKCS#11 module (no C_GetFunctionList)", path);
        r = NS_E_TOKEN;
        goto out;
    }
    /* A PKCS#11 3.0 module has C_GetInterface; p11-kit 0.24.1's proxy and SoftHSM 2.6 do not. */
    *(void **)&get3 = dlsym(m->dl, "C_GetInterface");
    if (get3 != NULL && get3((CK_UTF8CHAR_PTR) "PKCS 11", &v3, &iface, 0) == CKR_OK && iface != NULL &&
        iface->pFunctionList != NULL && ((CK_FUNCTION_LIST *)iface->pFunctionList)->version.major >= 3)
        m->fn3 = iface->pFunctionList;
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    rv = m->fn->C_Initialize(&args);
    if (rv == CKR_OK) {
        m->finalize = 1;
    } else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        r = ns_p11_rv_error(rv, path, "C_Initialize");
        goto out;
    }
    m->refs = 1;
    *out = m;
    m = NULL;
    r = 0;
out:
    module_free(m);
    return r;
}

int ns_p11_module_get(const char *path, ns_p11_module **out)
{
    ns_p11_module *m;
    int r = 0;

    if (path == NULL)
        path = NS_P11KIT_PROXY;
    pthread_mutex_lock(&modules_lock);
    for (m = modules; m != NULL; m = m->next)
        if (strcmp(m->path, path) == 0)
            break;
    if (m != NULL) {
        m->refs++;
    } else if ((r = module_load(path, &m)) == 0) {
        m->next = modules;
        modules = m;
    }
    pthread_mutex_unlock(&modules_lock);
    if (r == 0)
        *out = m;
    return r;
}

void ns_p11_module_put(ns_p11_module *m)
{
    ns_p11_module **pp;

    if (m == NULL)
        return;
    pthread_mutex_lock(&modules_lock);
    if (--m->refs > 0) {
        pthread_mutex_unlock(&modules_lock);
        return;
    }
    for (pp = &modules; *pp != NULL; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    pthread_mutex_unlock(&modules_lock);
    module_free(m);
}

CK_FUNCTION_LIST *ns_p11_module_fn(const ns_p11_module *m)
{
    return m->fn;
}

const ns_p11_fn3 *ns_p11_module_fn3(const ns_p11_module *m)
{
    return m->fn3;
}

const char *ns_p11_module_path(const ns_p11_module *m)
{
    return m->path;
}
