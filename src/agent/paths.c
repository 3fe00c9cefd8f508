#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent.h"
#include "common/log.h"

/* Where a server path lands, and why it cannot land anywhere else (doc/agent.md, "Where files land").
 *
 * The path is first checked lexically (absolute, normalised, no "..", no control characters). Then it is
 * never resolved by name from the top again: --root is opened once per sync and held, and every component
 * below it is opened from the folder before it with openat(O_DIRECTORY | O_NOFOLLOW), made with mkdirat()
 * when missing and then opened the same way. A symbolic link anywhere below root fails that open, whenever
 * it appears: the check while the answer is parsed and the walk that writes are the same walk, and the
 * write happens inside the folder descriptor the walk ended on (fsutil.c: openat, renameat, fsync), so there
 * is no window between a check and a use by name. realpath() is not used: it follows links, which is
 * exactly what must not decide where a file lands.
 *
 * Every folder the walk opens is compared (st_dev, st_ino) with --dir, the agent's own folder, so that no
 * answer can replace identity.key or ca.crt, however --dir and --root are spelled (relative, "..", a link,
 * root "/"). */

struct ns_agent_root {
    int fd;       /* --root, held for the whole sync */
    char *shown;  /* --root without trailing '/' ("" for "/"): for messages and targets only */
    bool has_dir; /* --dir exists: its identity */
    dev_t dir_dev;
    ino_t dir_ino;
};

static int refuse(const char *path, const char *why)
{
    ns_log(NS_LOG_ERROR, "agent: refusing file path '%.200s': %s", path, why);
    return NS_E_INVAL;
}

/* The same refusal met while writing: the answer was valid when checked, the local disk changed since. */
static int refuse_write(const char *path, const char *why)
{
    ns_log(NS_LOG_ERROR, "agent: refusing to write '%.200s': %s (changed since the answer was checked)", path,
           why);
    return NS_E_STORAGE;
}

static int lexical_check(const char *path)
{
    size_t n = strlen(path);
    const char *seg, *p;

    if (n == 0 || path[0] != '/')
        return refuse(path, "not absolute");
    if (n > NS_AGENT_MAX_PATH)
        return refuse(path, "too long");
    if (n == 1)
        return refuse(path, "is the root folder");
    if (path[n - 1] == '/')
        return refuse(path, "ends with '/'");
    for (p = path; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return refuse(path, "has a control character");
    /* Segments between slashes: none empty ("//"), none "." or "..". */
    for (seg = path + 1;;) {
        const char *end = strchr(seg, '/');
        size_t len = end != NULL ? (size_t)(end - seg) : strlen(seg);
        if (len == 0)
            return refuse(path, "is not normalised (empty segment)");
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return refuse(path, "is not normalised ('.' or '..' segment)");
        if (len > 255)
            return refuse(path, "has a segment longer than 255 bytes");
        if (end == NULL)
            break;
        seg = end + 1;
    }
    return 0;
}

static bool is_agent_dir(const ns_agent_root *rt, const struct stat *st)
{
    return rt->has_dir && st->st_dev == rt->dir_dev && st->st_ino == rt->dir_ino;
}

int ns_agent_root_open(const char *root, const char *dir, ns_agent_root **out)
{
    ns_agent_root *rt = NULL;
    struct stat st, up;
    size_t rlen;
    int fd = -1, r = NS_E_INTERNAL;

    if (root == NULL || root[0] != '/') {
        ns_log(NS_LOG_ERROR, "agent: --root must be an absolute path");
        return NS_E_USAGE;
    }
    if ((rt = calloc(1, sizeof(*rt))) == NULL)
        return NS_E_NOMEM;
    rt->fd = -1;
    rlen = strlen(root);
    while (rlen > 1 && root[rlen - 1] == '/')
        rlen--;
    if (rlen == 1)
        rlen = 0; /* root "/": paths as they are */
    if ((rt->shown = strndup(root, rlen)) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    /* Root itself is the operator's choice and may be a link; it is resolved once, here, and held. */
    if ((rt->fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        ns_log(NS_LOG_ERROR, "agent: --root %s is not an existing absolute folder: %s", root,
               strerror(errno));
        r = NS_E_USAGE;
        goto out;
    }
    if (dir != NULL) {
        if (stat(dir, &st) == 0) {
            rt->has_dir = true;
            rt->dir_dev = st.st_dev;
            rt->dir_ino = st.st_ino;
        } else if (errno != ENOENT) {
            ns_log(NS_LOG_ERROR, "agent: %s: %s", dir, strerror(errno));
            r = NS_E_STORAGE;
            goto out;
        }
    }
    /* Root must not be --dir or inside it (every file would land in the agent's own folder): walk up from
     * the held root through ".." to "/" (the folder that is its own parent). */
    if (rt->has_dir) {
        if ((fd = fcntl(rt->fd, F_DUPFD_CLOEXEC, 0)) < 0 || fstat(fd, &st) != 0) {
            ns_log(NS_LOG_ERROR, "agent: --root %s: %s", root, strerror(errno));
            r = NS_E_STORAGE;
            goto out;
        }
        for (int depth = 0; depth < 4096; depth++) {
            int parent;
            if (is_agent_dir(rt, &st)) {
                ns_log(NS_LOG_ERROR, "agent: --root %s is the agent's folder (--dir) or inside it", root);
                r = NS_E_USAGE;
                goto out;
            }
            if ((parent = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
                fstat(parent, &up) != 0) {
                if (parent >= 0)
                    close(parent);
                ns_log(NS_LOG_ERROR, "agent: --root %s: opening a folder above it: %s", root,
                       strerror(errno));
                r = NS_E_STORAGE;
                goto out;
            }
            close(fd);
            fd = parent;
            if (up.st_dev == st.st_dev && up.st_ino == st.st_ino)
                break; /* "/" */
            st = up;
        }
    }
    *out = rt;
    rt = NULL;
    r = 0;
out:
    if (fd >= 0)
        close(fd);
    ns_agent_root_free(rt);
    return r;
}

void ns_agent_root_free(ns_agent_root *rt)
{
    if (rt == NULL)
        return;
    if (rt->fd >= 0)
        close(rt->fd);
    free(rt->shown);
    free(rt);
}

/* Why a component that cannot be opened as a folder without following links could not be. */
static const char *why_not_folder(int dfd, const char *name, int e, char *buf, size_t n)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISLNK(st.st_mode))
            return "a component below --root is a symbolic link";
        if (!S_ISDIR(st.st_mode))
            return "a component below --root is not a folder";
        /* O_DIRECTORY | O_NOFOLLOW fails with ENOTDIR (or ELOOP) on a link: a folder now was not then. */
        if (e == ENOTDIR || e == ELOOP)
            return "a component below --root was a symbolic link or not a folder when opened (it is "
                   "being changed)";
    }
    snprintf(buf, n, "opening a folder below --root: %s", strerror(e));
    return buf;
}

/* Walk path (lexically checked) from the held root to the folder of its last component, never following a
 * link, never entering --dir. make: missing folders are made (0755) and the walk is the write's; else a
 * missing folder ends the walk with *pfd = -1 (nothing below it exists). The last component is then checked
 * as well: missing, or a regular file (not a link, a folder or anything else). Refusals are NS_E_INVAL when
 * checking an answer and NS_E_STORAGE when writing. */
static int walk(const ns_agent_root *rt, const char *path, bool make, int *pfd, const char **leaf_out)
{
    int (*no)(const char *, const char *) = make ? refuse_write : refuse;
    const char *seg = path + 1, *leaf = strrchr(path, '/') + 1;
    char name[256], why[160];
    struct stat st;
    int fd = -1, r = NS_E_INTERNAL;

    *pfd = -1;
    if ((fd = fcntl(rt->fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        ns_log(NS_LOG_ERROR, "agent: --root: %s", strerror(errno));
        return NS_E_STORAGE;
    }
    while (seg != leaf) {
        const char *end = strchr(seg, '/');
        size_t len = (size_t)(end - seg); /* lexical_check(): 1..255, and end != NULL before the leaf */
        int next;

        memcpy(name, seg, len);
        name[len] = '\0';
        seg = end + 1;
        next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0 && errno == ENOENT && !make) {
            close(fd);
            *leaf_out = leaf;
            return 0; /* missing: nothing below it can be a link or --dir */
        }
        if (next < 0 && errno == ENOENT) {
            if (mkdirat(fd, name, 0755) != 0 && errno != EEXIST) {
                ns_log(NS_LOG_ERROR, "agent: making a folder for %.200s%.200s: %s", rt->shown, path,
                       strerror(errno));
                r = NS_E_STORAGE;
                goto out;
            }
            /* Made (or made by someone else meanwhile): opened like any other, so a link put there in
             * between is refused too. */
            next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (next < 0) {
            r = no(path, why_not_folder(fd, name, errno, why, sizeof(why)));
            goto out;
        }
        close(fd);
        fd = next;
        if (fstat(fd, &st) != 0) {
            ns_log(NS_LOG_ERROR, "agent: %.200s: %s", path, strerror(errno));
            r = NS_E_STORAGE;
            goto out;
        }
        if (is_agent_dir(rt, &st)) {
            r = no(path, "it is inside the agent's own folder (--dir)");
            goto out;
        }
    }
    if (fstatat(fd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISLNK(st.st_mode)) {
            /* Writing renames over the link itself (never through it); an answer is still refused. */
            if (!make) {
                r = no(path, "a component below --root is a symbolic link");
                goto out;
            }
        } else if (is_agent_dir(rt, &st)) {
            r = no(path, "it is the agent's own folder (--dir)");
            goto out;
        } else if (!S_ISREG(st.st_mode)) {
            r = no(path, "exists and is not a regular file");
            goto out;
        }
    } else if (errno != ENOENT) {
        r = no(path, strerror(errno));
        goto out;
    }
    *leaf_out = leaf;
    *pfd = fd;
    fd = -1;
    r = 0;
out:
    if (fd >= 0)
        close(fd);
    return r;
}

int ns_agent_path_check(const ns_agent_root *rt, const char *path, char **out)
{
    const char *leaf;
    size_t n;
    char *joined = NULL;
    int fd = -1, r;

    if ((r = lexical_check(path)) != 0)
        return r;
    if ((r = walk(rt, path, false, &fd, &leaf)) != 0)
        return r;
    if (fd >= 0)
        close(fd);
    n = strlen(rt->shown) + strlen(path) + 1;
    if ((joined = malloc(n)) == NULL)
        return NS_E_NOMEM;
    snprintf(joined, n, "%s%s", rt->shown, path);
    *out = joined;
    return 0;
}

int ns_agent_open_parent(const ns_agent_root *rt, const char *path, int *dirfd, const char **leaf)
{
    int r;

    if ((r = lexical_check(path)) != 0)
        return r;
    return walk(rt, path, true, dirfd, leaf);
}
