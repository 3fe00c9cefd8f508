#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/codec.h"
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
    ns_buf *raw = NULL;
    struct stat st;
    uint8_t *w;
    ssize_t got;
    int fd = -1, r = NS_E_INTERNAL;

    /* O_NONBLOCK: a FIFO planted at the path must not hang us before the type check below. */
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)) < 0) {
        ns_log(NS_LOG_ERROR, "cannot open key file %s: %s", path, strerror(errno));
        r = errno == ENOENT ? NS_E_NOT_FOUND : NS_E_PERM;
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ns_log(NS_LOG_ERROR, "key file %s is not a regular file", path);
        r = NS_E_INVAL;
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        ns_log(NS_LOG_ERROR, "key file %s is accessible by group or others (mode %03o); chmod 600 it", path,
               (unsigned)(st.st_mode & 0777));
        r = NS_E_PERM;
        goto out;
    }
    if ((r = ns_buf_new(KEYFILE_MAX, true, &raw)) != 0 || (r = ns_buf_extend(raw, KEYFILE_MAX, &w)) != 0)
        goto out;
    size_t have = 0;
    for (;;) {
        got = read(fd, w + have, KEYFILE_MAX - have);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        have += (size_t)got;
        if (have == KEYFILE_MAX)
            break;
    }
    if (got < 0) {
        ns_log(NS_LOG_ERROR, "cannot read key file %s: %s", path, strerror(errno));
        r = NS_E_STORAGE;
        goto out;
    }
    if ((r = ns_keymat_parse(w, have, key)) != 0)
        ns_log(NS_LOG_ERROR, "key file %s: %s", path, ns_strerror(r));
out:
    if (fd >= 0)
        close(fd);
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
