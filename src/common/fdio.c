#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fdio.h"
#include "common/log.h"
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

int ns_file_read(const char *path, const ns_file_rules *rules, ns_buf **out)
{
    ns_buf *b = NULL;
    struct stat st;
    int fd = -1, e = 0, r = NS_E_INTERNAL;

    /* O_NONBLOCK: a FIFO planted at the path must not hang us before the type check below. */
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)) < 0) {
        e = errno;
        if (rules->missing_ok && (e == ENOENT || e == ENOTDIR)) {
            r = NS_E_NOT_FOUND;
            goto out;
        }
        ns_log(NS_LOG_ERROR, "cannot open %s %s: %s", rules->what, path, strerror(e));
        r = e == ENOENT ? NS_E_NOT_FOUND : NS_E_PERM;
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ns_log(NS_LOG_ERROR, "%s %s is not a regular file", rules->what, path);
        r = NS_E_INVAL;
        goto out;
    }
    if (rules->owner_only && (st.st_mode & (S_IRWXG | S_IRWXO))) {
        ns_log(NS_LOG_ERROR, "%s %s is accessible by group or others (mode %03o); chmod 600 it", rules->what,
               path, (unsigned)(st.st_mode & 0777));
        r = NS_E_PERM;
        goto out;
    }
    if ((r = ns_fd_read_all(fd, rules->max, rules->secret, &b)) != 0) {
        if (r == NS_E_STORAGE) {
            e = errno;
            ns_log(NS_LOG_ERROR, "cannot read %s %s: %s", rules->what, path, strerror(e));
        } else if (r == NS_E_TOO_LARGE)
            ns_log(NS_LOG_ERROR, "%s %s is larger than %zu bytes", rules->what, path, rules->max);
        goto out;
    }
    if (rules->strip_newline && b->len > 0 && b->data[b->len - 1] == '\n')
        ns_buf_truncate(b, b->len - 1);
    if (rules->strip_newline && b->len > 0 && b->data[b->len - 1] == '\r')
        ns_buf_truncate(b, b->len - 1);
    /* The NUL behind len: one byte past the caller's cap, which counts content only. */
    b->max = rules->max + 1;
    if ((r = ns_buf_put_u8(b, 0)) != 0)
        goto out;
    b->len--;
    *out = b;
    b = NULL;
    r = 0;
out:
    if (fd >= 0)
        close(fd);
    ns_buf_free(b);
    errno = e;
    return r;
}
