#include "ns-build.h"

#include <errno.h>
#include <limits.h>
#include <unistd.h>

#include "common/fdio.h"
#include "common/secmem.h"

int ns_fd_read_all(int fd, size_t max, bool secret, ns_buf **out)
{
    ns_buf *b = NULL;
    uint8_t chunk[8192];
    ssize_t got;
    int r, e;

    if ((r = ns_buf_new(max, secret, &b)) != 0)
        return r;
    for (;;) {
        got = read(fd, chunk, sizeof(chunk));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            r = NS_E_STORAGE;
            goto out;
        }
        if (got == 0)
            break;
        if ((r = ns_buf_append(b, chunk, (size_t)got)) != 0)
            goto out;
    }
    *out = b;
    b = NULL;
    r = 0;
out:
    e = errno;
    if (secret)
        ns_wipe(chunk, sizeof(chunk));
    ns_buf_free(b);
    errno = e;
    return r;
}

int ns_fd_write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n > SSIZE_MAX ? SSIZE_MAX : n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}
