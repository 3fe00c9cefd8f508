#include "ns-build.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/agent.h"
#include "common/fdio.h"
#include "common/log.h"
#include "common/secmem.h"

extern char **environ;

/* Is the file `leaf` in the held folder dfd already what f says (content, mode, owner, group)? A missing
 * or unreadable file, or anything but a regular file (a link is not opened), is "different". */
static bool same_on_disk(int dfd, const char *leaf, const ns_agent_file *f)
{
    struct stat st;
    ns_buf *cur = NULL;
    uint8_t digest[32];
    bool same = false;
    int fd;

    if (fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
        return false;
    if ((st.st_mode & 07777) != f->mode || st.st_uid != f->uid || st.st_gid != f->gid ||
        (size_t)st.st_size != f->content->len)
        return false;
    if ((fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0)
        return false;
    /* The same file as the fstatat() above could have been swapped for another meanwhile: check again. */
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 07777) == f->mode &&
        st.st_uid == f->uid && st.st_gid == f->gid &&
        ns_fd_read_all(fd, NS_AGENT_MAX_FILE, true, &cur) == 0 &&
        EVP_Digest(cur->data, cur->len, digest, NULL, EVP_sha256(), NULL) == 1)
        same = ns_ct_memcmp(digest, f->sha256, sizeof(digest)) == 0;
    close(fd);
    ns_buf_free(cur);
    return same;
}

int ns_agent_files_apply(const ns_agent_files *f, const ns_agent_root *rt, size_t *changed)
{
    char **tmp = NULL;
    const char **leaf = NULL;
    int *dfd = NULL;
    size_t count = 0;
    int r = NS_E_INTERNAL;

    *changed = 0;
    if (f->n == 0)
        return 0;
    if ((tmp = calloc(f->n, sizeof(*tmp))) == NULL || (leaf = calloc(f->n, sizeof(*leaf))) == NULL ||
        (dfd = malloc(f->n * sizeof(*dfd))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < f->n; i++)
        dfd[i] = -1;
    /* Phase 1: every changed file's complete, synced temporary file beside its target, in the folder the
     * walk from --root opened (no link followed); that descriptor is held until the rename. */
    for (size_t i = 0; i < f->n; i++) {
        const ns_agent_file *x = &f->v[i];
        if ((r = ns_agent_open_parent(rt, x->path, &dfd[i], &leaf[i])) != 0)
            goto out;
        if (same_on_disk(dfd[i], leaf[i], x)) {
            close(dfd[i]);
            dfd[i] = -1;
            continue;
        }
        if ((r = ns_agent_write_temp_at(dfd[i], leaf[i], x->target, x->content->data, x->content->len,
                                        x->mode, x->uid, x->gid, &tmp[i])) != 0)
            goto out;
    }
    /* Phase 2: the renames, each inside its held folder (atomic; nothing above can fail half-way through a
     * file). */
    for (size_t i = 0; i < f->n; i++) {
        if (tmp[i] == NULL)
            continue;
        r = ns_agent_commit_at(dfd[i], tmp[i], leaf[i], f->v[i].target);
        free(tmp[i]);
        tmp[i] = NULL;
        if (r != 0)
            goto out;
        count++;
        ns_log(NS_LOG_INFO, "agent: wrote %s", f->v[i].target);
    }
    *changed = count;
    r = 0;
out:
    for (size_t i = 0; dfd != NULL && i < f->n; i++) {
        if (tmp[i] != NULL)
            unlinkat(dfd[i], tmp[i], 0);
        free(tmp[i]);
        if (dfd[i] >= 0)
            close(dfd[i]);
    }
    if (r != 0)
        *changed = count;
    free(tmp);
    free(leaf);
    free(dfd);
    return r;
}

int ns_agent_run_hook(const char *cmd)
{
    posix_spawnattr_t attr;
    sigset_t none, deflt;
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    pid_t pid;
    int status = 0, e;

    sigemptyset(&none);
    sigemptyset(&deflt);
    sigaddset(&deflt, SIGTERM);
    sigaddset(&deflt, SIGINT);
    sigaddset(&deflt, SIGPIPE);
    if (posix_spawnattr_init(&attr) != 0)
        return NS_E_NOMEM;
    /* The agent blocks SIGTERM/SIGINT to wait for them; the command gets a normal signal state. */
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &deflt);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    e = posix_spawn(&pid, "/bin/sh", NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    if (e != 0) {
        ns_log(NS_LOG_ERROR, "agent: --on-change: cannot start /bin/sh: %s", strerror(e));
        return NS_E_INTERNAL;
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            ns_log(NS_LOG_ERROR, "agent: --on-change: waitpid: %s", strerror(errno));
            return NS_E_INTERNAL;
        }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status))
        ns_log(NS_LOG_ERROR, "agent: --on-change command exited with status %d", WEXITSTATUS(status));
    else
        ns_log(NS_LOG_ERROR, "agent: --on-change command was killed by signal %d",
               WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return NS_E_INTERNAL;
}
