#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent/agent.h"
#include "common/log.h"

/* Why no realpath(): the target usually does not exist yet, and realpath follows links, which is exactly
 * what must not decide where a file lands. Instead the path is checked lexically (normalised, no "..") and
 * every existing component below root is lstat()ed: a folder is fine, a link is refused (even one pointing
 * inside root: the server never needs links, and refusing them all leaves no room for a check-then-use
 * mistake), a missing component ends the walk. */

static int refuse(const char *path, const char *why)
{
    ns_log(NS_LOG_ERROR, "agent: refusing file path '%.200s': %s", path, why);
    return NS_E_INVAL;
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

int ns_agent_path_check(const char *root, const char *path, char **out)
{
    struct stat st;
    size_t rlen, n;
    char *joined = NULL;
    int r = NS_E_INVAL;

    if (root == NULL || root[0] != '/') {
        ns_log(NS_LOG_ERROR, "agent: --root must be an absolute path");
        return NS_E_INVAL;
    }
    if ((r = lexical_check(path)) != 0)
        return r;
    rlen = strlen(root);
    while (rlen > 1 && root[rlen - 1] == '/')
        rlen--;
    if (rlen == 1)
        rlen = 0; /* root "/": the path as it is */
    n = rlen + strlen(path) + 1;
    if ((joined = malloc(n)) == NULL)
        return NS_E_NOMEM;
    snprintf(joined, n, "%.*s%s", (int)rlen, root, path);

    /* Walk the components below root: each prefix of `joined` ending just before a '/' after root. */
    for (size_t i = rlen + 1; i <= strlen(joined); i++) {
        char save;
        bool last = joined[i] == '\0';
        if (joined[i] != '/' && !last)
            continue;
        save = joined[i];
        joined[i] = '\0';
        if (lstat(joined, &st) != 0) {
            int e = errno;
            joined[i] = save;
            if (e == ENOENT)
                break; /* nothing below exists: nothing to follow */
            ns_log(NS_LOG_ERROR, "agent: refusing file path '%.200s': %s", path, strerror(e));
            r = NS_E_INVAL;
            goto out;
        }
        joined[i] = save;
        if (S_ISLNK(st.st_mode)) {
            r = refuse(path, "a component below --root is a symbolic link");
            goto out;
        }
        if (!last && !S_ISDIR(st.st_mode)) {
            r = refuse(path, "a component below --root is not a folder");
            goto out;
        }
        if (last && !S_ISREG(st.st_mode)) {
            r = refuse(path, "exists and is not a regular file");
            goto out;
        }
    }
    *out = joined;
    joined = NULL;
    r = 0;
out:
    free(joined);
    return r;
}

int ns_agent_make_parents(const char *root, const char *target)
{
    size_t rlen = strlen(root);
    char *p = strdup(target), *slash;
    int r = NS_E_STORAGE;

    if (p == NULL)
        return NS_E_NOMEM;
    while (rlen > 1 && root[rlen - 1] == '/')
        rlen--;
    if (rlen == 1)
        rlen = 0;
    if ((slash = strrchr(p, '/')) == NULL || (size_t)(slash - p) <= rlen) {
        r = 0;
        goto out;
    }
    *slash = '\0';
    for (size_t i = rlen + 1; i <= strlen(p); i++) {
        char save = p[i];
        if (save != '/' && save != '\0')
            continue;
        p[i] = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            ns_log(NS_LOG_ERROR, "agent: making folder %s: %s", p, strerror(errno));
            goto out;
        }
        p[i] = save;
    }
    r = 0;
out:
    free(p);
    return r;
}
