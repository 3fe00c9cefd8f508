#include "config.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/agent.h"
#include "common/log.h"
#include "common/secmem.h"

extern char **environ;

/* Is the file on disk already what f says (content, mode, owner, group)? A missing or unreadable file is
 * "different". */
static bool same_on_disk(const ns_agent_file *f)
{
    struct stat st;
    ns_buf *cur = NULL;
    uint8_t digest[32];
    bool same = false;

    if (lstat(f->target, &st) != 0 || !S_ISREG(st.st_mode))
        return false;
    if ((st.st_mode & 07777) != f->mode || st.st_uid != f->uid || st.st_gid != f->gid ||
        (size_t)st.st_size != f->content->len)
        return false;
    if (ns_agent_read_file(f->target, NS_AGENT_MAX_FILE, true, &cur) != 0)
        return false;
    if (EVP_Digest(cur->data, cur->len, digest, NULL, EVP_sha256(), NULL) == 1)
        same = ns_ct_memcmp(digest, f->sha256, sizeof(digest)) == 0;
    ns_buf_free(cur);
    return same;
}

int ns_agent_files_apply(const ns_agent_files *f, const char *root, size_t *changed)
{
    char **tmp = NULL;
    bool *todo = NULL;
    size_t count = 0;
    int r = NS_E_INTERNAL;

    *changed = 0;
    if (f->n == 0)
        return 0;
    if ((tmp = calloc(f->n, sizeof(*tmp))) == NULL || (todo = calloc(f->n, sizeof(*todo))) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    /* Phase 1: every changed file's complete, synced temporary file beside its target. */
    for (size_t i = 0; i < f->n; i++) {
        const ns_agent_file *x = &f->v[i];
        if (same_on_disk(x))
            continue;
        todo[i] = true;
        if ((r = ns_agent_make_parents(root, x->target)) != 0)
            goto out;
        if ((r = ns_agent_write_temp(x->target, x->content->data, x->content->len, x->mode, x->uid, x->gid,
                                     &tmp[i])) != 0)
            goto out;
    }
    /* Phase 2: the renames (each atomic; nothing above can fail half-way through a file). */
    for (size_t i = 0; i < f->n; i++) {
        if (!todo[i])
            continue;
        r = ns_agent_commit(tmp[i], f->v[i].target);
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
    if (tmp != NULL) {
        for (size_t i = 0; i < f->n; i++) {
            if (tmp[i] != NULL)
                unlink(tmp[i]);
            free(tmp[i]);
        }
    }
    if (r != 0)
        *changed = count;
    free(tmp);
    free(todo);
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
