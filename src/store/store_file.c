#include "ns-build.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/codec.h"
#include "common/fdio.h"
#include "common/log.h"
#include "store/backends.h"
#include "store/store.h"

/* The `file` backend: object "a/b/c" is the regular file <root>/a/b/c.
 *
 * Everything below the root is reached through the root's directory fd, one validated segment at a time,
 * with O_NOFOLLOW: a symbolic link anywhere under the root is never followed, so a planted link cannot
 * redirect a read or a write outside the store. The only path string ever built is the (already
 * validated) object name itself.
 *
 * Atomicity. A writer writes the new content to a fresh temp file ".<leaf>.ns-tmp.<16 hex>" in the object's
 * own folder (ns_file_write_temp_at(): same file system, so rename is atomic), fsyncs it, then publishes it
 * under the final name with renameat() (replace) or linkat() (create: fails with EEXIST instead of
 * replacing), then fsyncs the folder so that the new name survives a crash. Readers never lock: rename swaps
 * the directory entry in one step, so every read sees either the whole old object or the whole new one, never
 * a mix or a partial write. Temp files start with '.', which no object name can, so they never show up as
 * objects; a crash can only leave such a stray temp file behind, never a damaged object, and a list walking
 * its folder removes it once it is TMP_STALE_SECS old (sweep_temp).
 *
 * Locking. Every writer (all put modes and delete) holds flock(LOCK_EX) on the object's folder while it
 * touches the final name. That is what makes NS_PUT_IF_MATCH a real compare-and-swap: the version check and
 * the rename happen with no other writer of this store in between. The lock is advisory; it orders writers
 * that go through this code (any number of processes and threads), not arbitrary programs editing the
 * folder. The temp file is written outside the lock so that slow writes do not serialise writers.
 *
 * Versions are the lower-case hex SHA-256 of the content: stable across processes and restarts, and equal
 * for equal content (an ABA write of identical bytes is indistinguishable, which is harmless here).
 *
 * Limitation: one name cannot be both an object and a folder ("a" and "a/b" cannot coexist); writing one
 * when the other exists fails with NS_E_STORAGE (or NS_E_EXISTS for a create-only write). */

#define LEGACY_TMP_PREFIX   ".tmp."
#define LEGACY_TMP_NAME_LEN (sizeof(LEGACY_TMP_PREFIX) - 1 + 16)
#define TMP_STALE_SECS      3600 /* a temp file this old is a crashed writer's: a write takes milliseconds */
#define READ_CHUNK          16384

typedef struct file_store {
    int root; /* O_DIRECTORY fd of storage.path */
} file_store;

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Log a failed system call on an object (its name, never its contents) and return NS_E_STORAGE. */
static int sys_fail(const char *name, const char *what, int e)
{
    ns_log(NS_LOG_ERROR, "storage: '%s': %s: %s", name, what, strerror(e));
    return NS_E_STORAGE;
}

/* The last segment of a (validated) name, and the length of the folder part before it. */
static const char *leaf_of(const char *name, size_t *folder_len)
{
    const char *slash = strrchr(name, '/');
    if (slash == NULL) {
        *folder_len = 0;
        return name;
    }
    *folder_len = (size_t)(slash - name);
    return slash + 1;
}

/* mkdir -p with mode 0700 for every folder it creates. */
static int mkdir_p(const char *path)
{
    char *p = NULL;
    int r = NS_E_INTERNAL;

    if ((p = strdup(path)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    for (char *s = p + 1;; s++) {
        char c = *s;
        if (c != '/' && c != '\0')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            struct stat sb;
            /* Some file systems report EROFS/EACCES for a folder that exists; that is fine. */
            if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
                ns_log(NS_LOG_ERROR, "storage: cannot create folder %s: %s", p, strerror(e));
                r = NS_E_STORAGE;
                goto out;
            }
        }
        *s = c;
        if (c == '\0')
            break;
    }
    r = 0;
out:
    free(p);
    return r;
}

/* fsync a folder so that entries created, renamed or removed in it are durable. */
static int sync_folder(int dfd, const char *name)
{
    if (fsync(dfd) != 0 && errno != EINVAL) /* EINVAL: the file system cannot sync folders */
        return sys_fail(name, "fsync folder", errno);
    return 0;
}

/* Open the folder rel[0..rel_len) (segments of a validated name, or "" for the root) as a new fd of its own
 * (never a dup of the root: readdir and flock need their own open file description).
 *
 * create: make missing folders (0700) and sync their parents. Without create, a missing segment or one that
 * is an object rather than a folder gives NS_E_NOT_FOUND. A symbolic link is never followed: NS_E_STORAGE,
 * logged. `name` is the object name (or list prefix) for log messages. */
static int open_folder(const file_store *fs, const char *rel, size_t rel_len, bool create, const char *name,
                       int *out)
{
    char seg[NS_SEGMENT_MAX + 1];
    int dfd = -1, next = -1;
    size_t i = 0;
    int r = NS_E_INTERNAL;

    if ((dfd = openat(fs->root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        r = sys_fail(name, "open storage root", errno);
        goto out;
    }
    while (i < rel_len) {
        size_t j = i;
        while (j < rel_len && rel[j] != '/')
            j++;
        if (j == i || j - i > NS_SEGMENT_MAX) { /* not reachable with validated names */
            r = NS_E_NAME;
            goto out;
        }
        memcpy(seg, rel + i, j - i);
        seg[j - i] = '\0';

        next = openat(dfd, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0 && errno == ENOENT && create) {
            if (mkdirat(dfd, seg, 0700) == 0) {
                if ((r = sync_folder(dfd, name)) != 0)
                    goto out;
            } else if (errno != EEXIST) { /* EEXIST: a concurrent writer made it first */
                r = sys_fail(name, "create folder", errno);
                goto out;
            }
            next = openat(dfd, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (next < 0) {
            int e = errno;
            struct stat sb;
            /* With O_DIRECTORY, Linux reports a symbolic link as ENOTDIR rather than ELOOP: tell them apart.
             */
            if (e == ENOTDIR && fstatat(dfd, seg, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode))
                e = ELOOP;
            if (e == ELOOP) {
                ns_log(NS_LOG_ERROR, "storage: '%s': folder '%.*s' is a symbolic link; not following it",
                       name, (int)j, rel);
                r = NS_E_STORAGE;
            } else if (!create && (e == ENOENT || e == ENOTDIR)) {
                r = NS_E_NOT_FOUND;
            } else if (e == ENOTDIR) {
                ns_log(NS_LOG_ERROR, "storage: '%s': '%.*s' is an object or not a folder", name, (int)j, rel);
                r = NS_E_STORAGE;
            } else {
                r = sys_fail(name, "open folder", e);
            }
            goto out;
        }
        close_fd(&dfd);
        dfd = next;
        next = -1;
        i = j + 1;
    }
    *out = dfd;
    dfd = -1;
    r = 0;
out:
    close_fd(&next);
    close_fd(&dfd);
    return r;
}

/* Take the writers' lock on a folder; released when the fd is closed. */
static int lock_folder(int dfd, const char *name)
{
    while (flock(dfd, LOCK_EX) != 0) {
        if (errno != EINTR)
            return sys_fail(name, "lock folder", errno);
    }
    return 0;
}

/* SHA-256 fetched once: an implicit fetch per digest takes OpenSSL's global method-store lock, which
 * threads of a rewrap (and the token's own OpenSSL calls) then queue on. */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256;

static void sha256_fetch(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* Read object `leaf` of folder dfd. data (if not NULL): a new non-secret buffer of at most max bytes.
 * version (if not NULL): the lower-case hex SHA-256 of the content, malloc'd. The digest is computed while
 * reading, so a version check (put NS_PUT_IF_MATCH) never holds a whole object in memory. */
static int read_object(int dfd, const char *leaf, const char *name, size_t max, ns_buf **data, char **version)
{
    uint8_t chunk[READ_CHUNK];
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    struct stat sb;
    ns_buf *b = NULL;
    EVP_MD_CTX *md = NULL;
    char *ver = NULL;
    int fd = -1;
    int r = NS_E_INTERNAL;

    /* O_NONBLOCK: a FIFO planted in the store must not hang the reader (no effect on regular files). */
    if ((fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)) < 0) {
        if (errno == ENOENT) {
            r = NS_E_NOT_FOUND;
        } else if (errno == ELOOP) {
            ns_log(NS_LOG_ERROR, "storage: '%s' is a symbolic link; not following it", name);
            r = NS_E_STORAGE;
        } else {
            r = sys_fail(name, "open", errno);
        }
        goto out;
    }
    if (fstat(fd, &sb) != 0) {
        r = sys_fail(name, "fstat", errno);
        goto out;
    }
    if (S_ISDIR(sb.st_mode)) { /* a folder of other objects, not an object */
        r = NS_E_NOT_FOUND;
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        ns_log(NS_LOG_ERROR, "storage: '%s' is not a regular file", name);
        r = NS_E_STORAGE;
        goto out;
    }
    if (data != NULL) {
        if ((uintmax_t)sb.st_size > (uintmax_t)max) {
            r = NS_E_TOO_LARGE;
            goto out;
        }
        if ((r = ns_buf_new(max, false, &b)) != 0)
            goto out;
        if ((r = ns_buf_reserve(b, (size_t)sb.st_size)) != 0)
            goto out;
    }
    if (version != NULL) {
        pthread_once(&sha256_once, sha256_fetch);
        if (sha256 == NULL || (md = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(md, sha256, NULL) != 1) {
            r = NS_E_CRYPTO;
            goto out;
        }
    }
    for (;;) {
        ssize_t k = read(fd, chunk, sizeof(chunk));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            r = sys_fail(name, "read", errno);
            goto out;
        }
        if (k == 0)
            break;
        /* ns_buf_append fails with NS_E_TOO_LARGE if the file grew past max after the fstat. */
        if (b != NULL && (r = ns_buf_append(b, chunk, (size_t)k)) != 0)
            goto out;
        if (md != NULL && EVP_DigestUpdate(md, chunk, (size_t)k) != 1) {
            r = NS_E_CRYPTO;
            goto out;
        }
    }
    if (md != NULL) {
        if (EVP_DigestFinal_ex(md, digest, &dlen) != 1) {
            r = NS_E_CRYPTO;
            goto out;
        }
        if ((ver = malloc(2 * (size_t)dlen + 1)) == NULL) {
            r = NS_E_NOMEM;
            goto out;
        }
        ns_hex_encode(digest, dlen, ver);
    }
    if (data != NULL) {
        *data = b;
        b = NULL;
    }
    if (version != NULL) {
        *version = ver;
        ver = NULL;
    }
    r = 0;
out:
    EVP_MD_CTX_free(md);
    ns_buf_free(b);
    free(ver);
    close_fd(&fd);
    return r;
}

static int file_open(const ns_storage_config *cfg, void **state)
{
    file_store *fs = NULL;
    int fd = -1;
    int r = NS_E_INTERNAL;

    if (cfg->path == NULL || cfg->path[0] == '\0') {
        ns_log(NS_LOG_ERROR, "storage: backend 'file' needs storage.path (line %d)", cfg->line);
        r = NS_E_CONFIG;
        goto out;
    }
    /* The root itself may be a symbolic link (an administrator's choice); nothing below it may. */
    fd = open(cfg->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if ((r = mkdir_p(cfg->path)) != 0)
            goto out;
        fd = open(cfg->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (fd < 0) {
        ns_log(NS_LOG_ERROR, "storage: cannot open folder %s: %s", cfg->path, strerror(errno));
        r = NS_E_STORAGE;
        goto out;
    }
    if ((fs = calloc(1, sizeof(*fs))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    fs->root = fd;
    fd = -1;
    *state = fs;
    fs = NULL;
    r = 0;
out:
    free(fs);
    close_fd(&fd);
    return r;
}

static void file_close(void *state)
{
    file_store *fs = state;

    if (fs == NULL)
        return;
    close_fd(&fs->root);
    free(fs);
}

static int file_get(void *state, const char *name, size_t max, ns_buf **data, char **version)
{
    const file_store *fs = state;
    size_t folder_len = 0;
    const char *leaf = leaf_of(name, &folder_len);
    int dfd = -1;
    int r = NS_E_INTERNAL;

    if ((r = open_folder(fs, name, folder_len, false, name, &dfd)) != 0)
        goto out;
    if ((r = read_object(dfd, leaf, name, max, data, version)) != 0)
        goto out;
    r = 0;
out:
    close_fd(&dfd);
    return r;
}

static int file_put(void *state, const char *name, const uint8_t *p, size_t n, enum ns_put_mode mode,
                    const char *if_match)
{
    const file_store *fs = state;
    size_t folder_len = 0;
    const char *leaf = leaf_of(name, &folder_len);
    const char *step = NULL;
    char *tmp = NULL, *current = NULL;
    int dfd = -1;
    int r = NS_E_INTERNAL;

    if ((mode != NS_PUT_REPLACE && mode != NS_PUT_CREATE && mode != NS_PUT_IF_MATCH) ||
        (mode == NS_PUT_IF_MATCH && if_match == NULL)) {
        r = NS_E_INVAL;
        goto out;
    }
    /* A compare-and-swap never creates folders: a missing folder means a missing object. */
    if ((r = open_folder(fs, name, folder_len, mode != NS_PUT_IF_MATCH, name, &dfd)) != 0)
        goto out;

    /* Write and sync the new content outside the lock. */
    if ((r = ns_file_write_temp_at(dfd, leaf, p, n, 0600, (uid_t)-1, (gid_t)-1, &tmp, &step)) != 0) {
        if (r == NS_E_STORAGE)
            ns_log(NS_LOG_ERROR, "storage: '%s': %s the temporary file: %s", name, step, strerror(errno));
        goto out;
    }

    /* Publish under the writers' lock (see the top of this file). */
    if ((r = lock_folder(dfd, name)) != 0)
        goto out;
    switch (mode) {
    case NS_PUT_IF_MATCH:
        if ((r = read_object(dfd, leaf, name, SIZE_MAX, NULL, &current)) != 0)
            goto out;
        if (strcmp(current, if_match) != 0) {
            r = NS_E_CONFLICT;
            goto out;
        }
        /* Same version: replace it. */
        /* fall through */
    case NS_PUT_REPLACE:
        if (renameat(dfd, tmp, dfd, leaf) != 0) {
            r = sys_fail(name, "rename", errno);
            goto out;
        }
        free(tmp);
        tmp = NULL;
        break;
    case NS_PUT_CREATE:
        /* linkat, unlike renameat, refuses to replace an existing name: of concurrent creators exactly one
         * gets the name, the others get EEXIST and the existing object is never touched. */
        if (linkat(dfd, tmp, dfd, leaf, 0) != 0) {
            r = errno == EEXIST ? NS_E_EXISTS : sys_fail(name, "link", errno);
            goto out;
        }
        /* The object exists now; a temp file that cannot be removed is only clutter (hidden from list). */
        if (unlinkat(dfd, tmp, 0) != 0)
            ns_log(NS_LOG_WARN, "storage: '%s': remove temp file %s: %s", name, tmp, strerror(errno));
        free(tmp);
        tmp = NULL;
        break;
    default:
        r = NS_E_INVAL;
        goto out;
    }
    if ((r = sync_folder(dfd, name)) != 0)
        goto out;
    r = 0;
out:
    if (tmp != NULL && unlinkat(dfd, tmp, 0) != 0 && errno != ENOENT)
        ns_log(NS_LOG_WARN, "storage: '%s': remove temp file %s: %s", name, tmp, strerror(errno));
    free(tmp);
    free(current);
    close_fd(&dfd); /* also releases the lock */
    return r;
}

static int file_del(void *state, const char *name)
{
    const file_store *fs = state;
    size_t folder_len = 0;
    const char *leaf = leaf_of(name, &folder_len);
    int dfd = -1;
    int r = NS_E_INTERNAL;

    if ((r = open_folder(fs, name, folder_len, false, name, &dfd)) != 0)
        goto out;
    if ((r = lock_folder(dfd, name)) != 0)
        goto out;
    if (unlinkat(dfd, leaf, 0) != 0) {
        /* EISDIR: the name is a folder of other objects, not an object. */
        r = (errno == ENOENT || errno == EISDIR) ? NS_E_NOT_FOUND : sys_fail(name, "unlink", errno);
        goto out;
    }
    if ((r = sync_folder(dfd, name)) != 0)
        goto out;
    r = 0;
out:
    close_fd(&dfd);
    return r;
}

/* 1 if name is one of our temp files: ns_file_write_temp_at()'s, or ".tmp." and 16 lower-case hex digits as
 * writers before it named them. */
static int is_temp_name(const char *name)
{
    if (ns_file_is_temp_name(name))
        return 1;
    if (strlen(name) != LEGACY_TMP_NAME_LEN ||
        strncmp(name, LEGACY_TMP_PREFIX, sizeof(LEGACY_TMP_PREFIX) - 1) != 0)
        return 0;
    for (const char *p = name + sizeof(LEGACY_TMP_PREFIX) - 1; *p != '\0'; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

/* A writer killed between making its temp file and publishing it leaves the temp file behind (never a damaged
 * object). Listing removes such leftovers once they are TMP_STALE_SECS old; best effort (a read-only store
 * keeps them), and a writer stopped for longer than that only finds its publish failing. */
static void sweep_temp(int dfd, const char *name, const char *path, size_t plen)
{
    struct stat sb;

    if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode) ||
        sb.st_mtime > time(NULL) - TMP_STALE_SECS)
        return;
    if (unlinkat(dfd, name, 0) == 0)
        ns_log(NS_LOG_INFO, "storage: removed %.*s%s, left by an interrupted write", (int)plen, path, name);
}

/* List the folder fd (owned: closed here) whose relative path is path[0..plen) ("" or ending in '/'). Regular
 * files whose names start with prefix are appended to names; sub-folders are entered only if names below
 * them can start with prefix. path has room for NS_NAME_MAX + 2 bytes. */
static int walk(int fd, char *path, size_t plen, const char *prefix, size_t prelen, ns_strv *names)
{
    DIR *d = NULL;
    int r = NS_E_INTERNAL;

    if ((d = fdopendir(fd)) == NULL) {
        r = sys_fail(prefix, "list folder", errno);
        close_fd(&fd);
        goto out;
    }
    for (;;) {
        struct dirent *e;
        struct stat sb;
        unsigned char type;
        size_t nlen;
        int sub = -1;

        errno = 0;
        if ((e = readdir(d)) == NULL) {
            if (errno != 0) {
                r = sys_fail(prefix, "list folder", errno);
                goto out;
            }
            break;
        }
        /* Hidden entries (".", "..", temp files) and anything that is not a valid segment (a name check
         * would refuse it) are never objects. */
        if (is_temp_name(e->d_name))
            sweep_temp(dirfd(d), e->d_name, path, plen);
        if (e->d_name[0] == '.' || ns_store_name_check(e->d_name) != 0)
            continue;
        nlen = strlen(e->d_name);
        if (plen + nlen > NS_NAME_MAX)
            continue;
        memcpy(path + plen, e->d_name, nlen);
        path[plen + nlen] = '\0';

        type = e->d_type;
        if (type == DT_UNKNOWN) { /* some file systems do not fill d_type */
            if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno == ENOENT) /* removed meanwhile */
                    continue;
                r = sys_fail(prefix, "list folder", errno);
                goto out;
            }
            type = S_ISREG(sb.st_mode) ? DT_REG : S_ISDIR(sb.st_mode) ? DT_DIR : DT_LNK;
        }
        if (type == DT_REG) {
            if (strncmp(path, prefix, prelen) == 0 && (r = ns_strv_push(names, path)) != 0)
                goto out;
        } else if (type == DT_DIR) {
            size_t sublen = plen + nlen + 1;
            path[sublen - 1] = '/';
            path[sublen] = '\0';
            /* Enter only if a name below can both fit and start with prefix. */
            if (sublen >= NS_NAME_MAX || strncmp(path, prefix, sublen < prelen ? sublen : prelen) != 0)
                continue;
            sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) /* changed meanwhile */
                    continue;
                r = sys_fail(prefix, "list folder", errno);
                goto out;
            }
            if ((r = walk(sub, path, sublen, prefix, prelen, names)) != 0)
                goto out;
        }
        /* Symbolic links and special files are skipped. */
    }
    r = 0;
out:
    if (d != NULL)
        closedir(d);
    return r;
}

/* On success *out is replaced (strings it held are freed) by the sorted names. */
static int file_list(void *state, const char *prefix, ns_strv *out)
{
    const file_store *fs = state;
    ns_strv names = NS_STRV_INIT;
    char path[NS_NAME_MAX + 2];
    size_t prelen = strlen(prefix), start_len = 0, plen = 0;
    const char *slash = strrchr(prefix, '/');
    int dfd = -1;
    int r = NS_E_INTERNAL;

    if (prelen > NS_NAME_MAX) {
        r = NS_E_NAME;
        goto out;
    }
    /* Start at the deepest folder named by the complete segments of the prefix: "cluster/sec" starts in
     * "cluster" and keeps only names starting with "cluster/sec". */
    if (slash != NULL) {
        start_len = (size_t)(slash - prefix);
        plen = start_len + 1;
        memcpy(path, prefix, start_len);
        path[start_len] = '\0';
        /* Complete segments that no name can have ("a//", "a/./") match nothing. */
        if (ns_store_name_check(path) != 0)
            goto done;
        path[start_len] = '/';
    }
    path[plen] = '\0';
    r = open_folder(fs, prefix, start_len, false, prefix, &dfd);
    if (r == NS_E_NOT_FOUND)
        goto done;
    if (r != 0)
        goto out;
    r = walk(dfd, path, plen, prefix, prelen, &names);
    dfd = -1; /* walk owns it */
    if (r != 0)
        goto out;
done:
    ns_strv_sort(&names);
    ns_strv_clear(out);
    *out = names;
    names = (ns_strv)NS_STRV_INIT;
    r = 0;
out:
    close_fd(&dfd);
    ns_strv_clear(&names);
    return r;
}

const ns_store_ops ns_store_file_ops = {
    .name = "file",
    .open = file_open,
    .get = file_get,
    .put = file_put,
    .list = file_list,
    .del = file_del,
    .close = file_close,
};
