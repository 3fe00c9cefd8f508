#include "ns-build.h"

#include <stdio.h>

#include "keys/keymat.h"
#include "keys/source_backends.h"

/* The local sources: a key file and an environment variable (formats and checks in keymat.c). */

static void file_describe(const ns_kek_config *kc, char *out, size_t n)
{
    snprintf(out, n, "file %s", kc->path);
}

static int file_fetch(const ns_kek_config *kc, const char *desc, ns_buf **key)
{
    (void)desc; /* ns_keymat_read_file() names the path itself */
    return ns_keymat_read_file(kc->path, key);
}

static void env_describe(const ns_kek_config *kc, char *out, size_t n)
{
    snprintf(out, n, "env %s", kc->name);
}

static int env_fetch(const ns_kek_config *kc, const char *desc, ns_buf **key)
{
    (void)desc;
    return ns_keymat_from_env(kc->name, key);
}

const ns_kek_source_ops ns_source_file_ops = {NS_KEK_SRC_FILE, "file", file_describe, file_fetch};
const ns_kek_source_ops ns_source_env_ops = {NS_KEK_SRC_ENV, "env", env_describe, env_fetch};
