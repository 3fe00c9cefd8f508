#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent.h"
#include "common/fdio.h"
#include "common/log.h"
#include "common/secmem.h"

int ns_agent_join(const char *dir, const char *name, char **out)
{
    size_t dl = strlen(dir), nl = strlen(name);
    char *s;

    if (dl + nl + 2 > 4096)
        return NS_E_INVAL;
    if ((s = malloc(dl + nl + 2)) == NULL)
        return NS_E_NOMEM;
    memcpy(s, dir, dl);
    s[dl] = '/';
    memcpy(s + dl + 1, name, nl + 1);
    *out = s;
    return 0;
}

/* The folder part of path in a new string ("." when there is none). */
static char *dir_of(const char *path)
{
    char *copy = strdup(path), *d, *res;
    if (copy == NULL)
        return NULL;
    d = dirname(copy);
    res = strdup(d);
    free(copy);
    return res;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = 0;
    if (fd < 0)
        return -1;
    if (fsync(fd) != 0)
        r = -1;
    close(fd);
    return r;
}

int ns_agent_write_temp_at(int dirfd, const char *leaf, const char *shown, const uint8_t *p, size_t n,
                           mode_t mode, uid_t uid, gid_t gid, char **tmp_out)
{
    size_t len = strlen(leaf) + 32;
    char *tmp = NULL;
    uint32_t rnd = 0;
    int fd = -1, r = NS_E_STORAGE;
    const char *what = "creating";

    if ((tmp = malloc(len)) == NULL)
        return NS_E_NOMEM;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)getpid();
    /* A dot name beside the target, in the same held folder: the rename is atomic, stays on one file
     * system, and neither name is ever resolved through a link. */
    snprintf(tmp, len, ".%s.ns-tmp.%08x", leaf, rnd);
    if ((fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0)
        goto fail;
    what = "writing";
    if (ns_fd_write_all(fd, p, n) != 0)
        goto fail;
    what = "setting the owner of";
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) != 0)
        goto fail;
    /* After fchown: a chown by root may clear set-id bits, and modes here are <= 0777 anyway. */
    what = "setting the mode of";
    if (fchmod(fd, mode) != 0)
        goto fail;
    what = "syncing";
    if (fsync(fd) != 0)
        goto fail;
    what = "closing";
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    *tmp_out = tmp;
    tmp = NULL;
    r = 0;
    goto out;
fail:
    ns_log(NS_LOG_ERROR, "agent: %s the temporary file %s for %s: %s", what, tmp, shown, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (fd >= 0 || strcmp(what, "creating") != 0)
        unlinkat(dirfd, tmp, 0);
out:
    free(tmp);
    return r;
}

int ns_agent_commit_at(int dirfd, const char *tmp, const char *leaf, const char *shown)
{
    if (renameat(dirfd, tmp, dirfd, leaf) != 0) {
        ns_log(NS_LOG_ERROR, "agent: renaming into %s: %s", shown, strerror(errno));
        unlinkat(dirfd, tmp, 0);
        return NS_E_STORAGE;
    }
    if (fsync(dirfd) != 0) {
        ns_log(NS_LOG_ERROR, "agent: syncing the folder of %s: %s", shown, strerror(errno));
        return NS_E_STORAGE;
    }
    return 0;
}

/* The path-based pair serves DIR, the agent's own folder (0700, its path the operator's choice): the
 * folder is opened by name once, then the same held-folder calls do the work. */
int ns_agent_write_temp(const char *path, const uint8_t *p, size_t n, mode_t mode, uid_t uid, gid_t gid,
                        char **tmp_out)
{
    char *dir = NULL, *name = NULL, *full = NULL;
    const char *slash = strrchr(path, '/');
    int dfd = -1, r = NS_E_INTERNAL;

    if ((dir = dir_of(path)) == NULL)
        return NS_E_NOMEM;
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        ns_log(NS_LOG_ERROR, "agent: opening folder %s: %s", dir, strerror(errno));
        r = NS_E_STORAGE;
        goto out;
    }
    if ((r = ns_agent_write_temp_at(dfd, slash != NULL ? slash + 1 : path, path, p, n, mode, uid, gid,
                                    &name)) != 0)
        goto out;
    if ((r = ns_agent_join(dir, name, &full)) != 0) {
        unlinkat(dfd, name, 0);
        goto out;
    }
    *tmp_out = full;
    r = 0;
out:
    if (dfd >= 0)
        close(dfd);
    free(name);
    free(dir);
    return r;
}

int ns_agent_commit(const char *tmp, const char *path)
{
    char *dir = NULL;
    int r = NS_E_STORAGE;

    if (rename(tmp, path) != 0) {
        ns_log(NS_LOG_ERROR, "agent: renaming into %s: %s", path, strerror(errno));
        unlink(tmp);
        return NS_E_STORAGE;
    }
    if ((dir = dir_of(path)) == NULL)
        return NS_E_NOMEM;
    if (fsync_dir(dir) != 0) {
        ns_log(NS_LOG_ERROR, "agent: syncing folder %s: %s", dir, strerror(errno));
        goto out;
    }
    r = 0;
out:
    free(dir);
    return r;
}

int ns_agent_write_atomic(const char *path, const uint8_t *p, size_t n, mode_t mode, uid_t uid, gid_t gid)
{
    char *tmp = NULL;
    int r;

    if ((r = ns_agent_write_temp(path, p, n, mode, uid, gid, &tmp)) != 0)
        return r;
    r = ns_agent_commit(tmp, path);
    free(tmp);
    return r;
}

int ns_agent_read_file(const char *path, size_t max, bool secret, ns_buf **out)
{
    const ns_file_rules rules = {.what = "file", .max = max, .secret = secret, .missing_ok = true};
    int r = ns_file_read(path, &rules, out);

    /* The agent's own files: anything but a missing one is a storage failure. */
    return r == NS_E_PERM || r == NS_E_INVAL ? NS_E_STORAGE : r;
}

int ns_agent_state_dir(const char *dir)
{
    struct stat st;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        ns_log(NS_LOG_ERROR, "agent: making %s: %s", dir, strerror(errno));
        return NS_E_STORAGE;
    }
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        ns_log(NS_LOG_ERROR, "agent: %s is not a folder", dir);
        return NS_E_STORAGE;
    }
    if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700) != 0) {
        ns_log(NS_LOG_ERROR, "agent: chmod 0700 %s: %s", dir, strerror(errno));
        return NS_E_STORAGE;
    }
    return 0;
}
