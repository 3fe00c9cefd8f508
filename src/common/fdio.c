#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/codec.h"
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
    if ((r = ns_buf_put_nul(b)) != 0)
        goto out;
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

#define TMP_MARK       ".ns-tmp."
#define TMP_RAND_BYTES 8 /* 16 hex characters */
#define TMP_TRIES      8

bool ns_file_is_temp_name(const char *name)
{
    size_t n = strlen(name), tail = sizeof(TMP_MARK) - 1 + 2 * TMP_RAND_BYTES;

    /* "." leaf ".ns-tmp." hex: at least one character of leaf. */
    if (name[0] != '.' || n < 1 + 1 + tail || strncmp(name + n - tail, TMP_MARK, sizeof(TMP_MARK) - 1) != 0)
        return false;
    for (const char *p = name + n - 2 * TMP_RAND_BYTES; *p != '\0'; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* Create a new temporary file for leaf in dfd: *fd open for writing, *tmp_out its name. */
static int temp_create(int dfd, const char *leaf, char **tmp_out, int *fd)
{
    size_t len = 1 + strlen(leaf) + sizeof(TMP_MARK) - 1 + 2 * TMP_RAND_BYTES + 1;
    char *tmp = malloc(len), *hex;
    uint8_t rnd[TMP_RAND_BYTES];
    int e = EEXIST;

    if (tmp == NULL)
        return NS_E_NOMEM;
    snprintf(tmp, len, ".%s" TMP_MARK, leaf);
    hex = tmp + strlen(tmp);
    for (int tries = 0; tries < TMP_TRIES; tries++) {
        size_t got = 0;
        while (got < sizeof(rnd)) {
            ssize_t k = getrandom(rnd + got, sizeof(rnd) - got, 0);
            if (k < 0 && errno != EINTR) {
                e = errno;
                goto fail;
            }
            got += k > 0 ? (size_t)k : 0;
        }
        ns_hex_encode(rnd, sizeof(rnd), hex);
        if ((*fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) >= 0) {
            *tmp_out = tmp;
            return 0;
        }
        if ((e = errno) != EEXIST)
            break;
    }
fail:
    free(tmp);
    errno = e;
    return NS_E_STORAGE;
}

int ns_file_write_temp_at(int dfd, const char *leaf, const uint8_t *p, size_t n, mode_t mode, uid_t uid,
                          gid_t gid, char **tmp_out, const char **step)
{
    char *tmp = NULL;
    int fd = -1, e, r;

    *step = "creating";
    if ((r = temp_create(dfd, leaf, &tmp, &fd)) != 0)
        return r;
    r = NS_E_STORAGE;
    *step = "writing";
    if (ns_fd_write_all(fd, p, n) != 0)
        goto out;
    *step = "setting the owner of";
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) != 0)
        goto out;
    /* After fchown: a chown by root may clear set-id bits. */
    *step = "setting the mode of";
    if (fchmod(fd, mode) != 0)
        goto out;
    *step = "syncing";
    if (fsync(fd) != 0)
        goto out;
    /* close() can report a deferred write error (NFS): check it. */
    *step = "closing";
    e = close(fd);
    fd = -1;
    if (e != 0)
        goto out;
    *tmp_out = tmp;
    tmp = NULL;
    r = 0;
out:
    e = errno;
    if (fd >= 0)
        close(fd);
    if (tmp != NULL)
        unlinkat(dfd, tmp, 0);
    free(tmp);
    errno = e;
    return r;
}

int ns_file_commit_at(int dfd, const char *tmp, const char *leaf, const char **step)
{
    int e;

    *step = "renaming";
    if (renameat(dfd, tmp, dfd, leaf) != 0) {
        e = errno;
        unlinkat(dfd, tmp, 0);
        errno = e;
        return NS_E_STORAGE;
    }
    *step = "syncing the folder of";
    if (fsync(dfd) != 0 && errno != EINVAL) /* EINVAL: the file system cannot sync folders */
        return NS_E_STORAGE;
    return 0;
}

int ns_file_write_atomic(const char *path, const uint8_t *p, size_t n, mode_t mode, const char **step)
{
    const char *slash = strrchr(path, '/');
    char *dir = NULL, *tmp = NULL;
    int dfd = -1, e, r = NS_E_STORAGE;

    *step = "opening the folder of";
    if (slash == NULL)
        dir = strdup(".");
    else
        dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (dir == NULL)
        return NS_E_NOMEM;
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        goto out;
    if ((r = ns_file_write_temp_at(dfd, slash != NULL ? slash + 1 : path, p, n, mode, (uid_t)-1, (gid_t)-1,
                                   &tmp, step)) != 0)
        goto out;
    r = ns_file_commit_at(dfd, tmp, slash != NULL ? slash + 1 : path, step);
out:
    e = errno;
    if (dfd >= 0)
        close(dfd);
    free(tmp);
    free(dir);
    errno = e;
    return r;
}
