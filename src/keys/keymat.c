#include "ns-build.h"

#include <stdlib.h>
#include <string.h>

#include "common/codec.h"
#include "common/fdio.h"
#include "common/log.h"
#include "common/secmem.h"
#include "keys/kek.h"
#include "keys/keymat.h"

#define KEYFILE_MAX 256

int ns_keymat_parse(const uint8_t *p, size_t n, ns_buf **key)
{
    ns_buf *b = NULL;
    int r;

    if (n == NS_DEK_LEN)
        return ns_buf_from(p, n, NS_DEK_LEN, true, key);
    if (n > 0 && p[n - 1] == '\n') {
        n--;
        if (n > 0 && p[n - 1] == '\r')
            n--;
    }
    if (n == 2 * NS_DEK_LEN)
        r = ns_hex_decode((const char *)p, n, true, &b);
    else if (n == 44)
        r = ns_b64_decode((const char *)p, n, true, &b);
    else
        return NS_E_KEY_FORMAT;
    if (r != 0 || b->len != NS_DEK_LEN) {
        ns_buf_free(b);
        return NS_E_KEY_FORMAT;
    }
    *key = b;
    return 0;
}

int ns_keymat_read_file(const char *path, ns_buf **key)
{
    static const ns_file_rules rules = {
        .what = "key file", .max = KEYFILE_MAX, .secret = true, .owner_only = true};
    ns_buf *raw = NULL;
    int r = ns_file_read(path, &rules, &raw);

    /* Too long for any accepted form is a key-format error, as when the first KEYFILE_MAX bytes were parsed.
     */
    if (r == NS_E_TOO_LARGE)
        r = NS_E_KEY_FORMAT;
    if (r != 0)
        goto out;
    if ((r = ns_keymat_parse(raw->data, raw->len, key)) != 0)
        ns_log(NS_LOG_ERROR, "key file %s: %s", path, ns_strerror(r));
out:
    ns_buf_free(raw);
    return r;
}

int ns_keymat_from_env(const char *name, ns_buf **key)
{
    const char *v = getenv(name);
    int r;

    if (v == NULL) {
        ns_log(NS_LOG_ERROR, "environment variable %s is not set", name);
        return NS_E_NOT_FOUND;
    }
    if ((r = ns_keymat_parse((const uint8_t *)v, strlen(v), key)) != 0)
        ns_log(NS_LOG_ERROR, "environment variable %s: %s", name, ns_strerror(r));
    return r;
}
