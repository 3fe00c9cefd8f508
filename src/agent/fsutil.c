#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int ns_agent_write_temp_at(int dirfd, const char *leaf, const char *shown, const uint8_t *p, size_t n,
                           mode_t mode, uid_t uid, gid_t gid, char **tmp_out)
{
    const char *step = NULL;
    int r = ns_file_write_temp_at(dirfd, leaf, p, n, mode, uid, gid, tmp_out, &step);

    if (r == NS_E_STORAGE)
        ns_log(NS_LOG_ERROR, "agent: %s a temporary file for %s: %s", step, shown, strerror(errno));
    return r;
}

int ns_agent_commit_at(int dirfd, const char *tmp, const char *leaf, const char *shown)
{
    const char *step = NULL;
    int r = ns_file_commit_at(dirfd, tmp, leaf, &step);

    if (r != 0)
        ns_log(NS_LOG_ERROR, "agent: %s %s: %s", step, shown, strerror(errno));
    return r;
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
    const char *tslash = strrchr(tmp, '/'), *slash = strrchr(path, '/');
    char *dir = NULL;
    int dfd = -1, r = NS_E_STORAGE;

    if ((dir = dir_of(path)) == NULL)
        return NS_E_NOMEM;
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        ns_log(NS_LOG_ERROR, "agent: opening folder %s: %s", dir, strerror(errno));
        unlink(tmp);
        goto out;
    }
    /* tmp was made by ns_agent_write_temp() in path's folder. */
    r = ns_agent_commit_at(dfd, tslash != NULL ? tslash + 1 : tmp, slash != NULL ? slash + 1 : path, path);
out:
    if (dfd >= 0)
        close(dfd);
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
