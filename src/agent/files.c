#include "ns-build.h"

#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "agent/agent.h"
#include "common/codec.h"
#include "common/json.h"
#include "common/log.h"
#include "common/secmem.h"

/* Every check runs before anything is written: the caller gets either a complete, valid set or an error,
 * so one bad file leaves every file on disk as it was. */

static int bad(const char *path, const char *why, int code)
{
    ns_log(NS_LOG_ERROR, "agent: invalid file list from the server: %s%.200s%s%s", path != NULL ? "'" : "",
           path != NULL ? path : "", path != NULL ? "': " : "", why);
    return code;
}

static bool is_lower_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* "0600", "600", "0": 1-4 octal digits, value <= 0777. */
static int parse_mode(const char *s, mode_t *out)
{
    size_t n = strlen(s);
    unsigned v = 0;

    if (n == 0 || n > 4)
        return NS_E_INVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '7')
            return NS_E_INVAL;
        v = v * 8 + (unsigned)(s[i] - '0');
    }
    if (v > 0777)
        return NS_E_INVAL;
    *out = (mode_t)v;
    return 0;
}

/* Names as useradd allows them, bounded: [A-Za-z0-9_.-]{1,32}, not starting with '-'. */
static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NS_AGENT_MAX_NAME_LEN || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '.' || s[i] == '-'))
            return false;
    return true;
}

static int resolve_user(const char *name, uid_t *out)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
        return NS_E_NOT_FOUND;
    *out = pw.pw_uid;
    return 0;
}

static int resolve_group(const char *name, gid_t *out)
{
    struct group gr, *res = NULL;
    char buf[8192];
    if (getgrnam_r(name, &gr, buf, sizeof(buf), &res) != 0 || res == NULL)
        return NS_E_NOT_FOUND;
    *out = gr.gr_gid;
    return 0;
}

/* A string member, or NULL when absent; NS_E_FORMAT when present and not a string. */
static int str_member(const json_t *o, const char *key, const char **out)
{
    const json_t *v = json_object_get(o, key);
    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return NS_E_FORMAT;
    *out = json_string_value(v);
    return 0;
}

static int parse_one(const json_t *jf, const ns_agent_root *rt, EVP_MD_CTX *vctx, ns_agent_file *f)
{
    static const char *const allowed[] = {"path", "mode", "owner", "group", "sha256", "content"};
    const char *path, *mode, *owner, *group, *sha, *content;
    const char *key;
    const json_t *val;
    uint8_t digest[32];
    static const uint8_t nul = 0;
    int r;

    if (!json_is_object(jf))
        return bad(NULL, "a file entry is not an object", NS_E_FORMAT);
    json_object_foreach((json_t *)jf, key, val)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
            known = known || strcmp(key, allowed[i]) == 0;
        if (!known)
            return bad(NULL, "a file entry has an unknown member", NS_E_FORMAT);
    }
    if (str_member(jf, "path", &path) != 0 || str_member(jf, "mode", &mode) != 0 ||
        str_member(jf, "owner", &owner) != 0 || str_member(jf, "group", &group) != 0 ||
        str_member(jf, "sha256", &sha) != 0 || str_member(jf, "content", &content) != 0)
        return bad(NULL, "a file member is not a string", NS_E_FORMAT);
    if (path == NULL || mode == NULL || sha == NULL || content == NULL)
        return bad(path, "a required member (path, mode, sha256, content) is missing", NS_E_FORMAT);
    if (owner == NULL)
        owner = "root";
    if (group == NULL)
        group = "root";
    if ((f->path = strdup(path)) == NULL)
        return NS_E_NOMEM;
    if ((r = ns_agent_path_check(rt, path, &f->target)) != 0)
        return r;
    if (parse_mode(mode, &f->mode) != 0)
        return bad(path, "mode is not 1-4 octal digits at most 0777", NS_E_INVAL);
    if (!name_ok(owner) || resolve_user(owner, &f->uid) != 0)
        return bad(path, "owner is not a user of this machine", NS_E_INVAL);
    if (!name_ok(group) || resolve_group(group, &f->gid) != 0)
        return bad(path, "group is not a group of this machine", NS_E_INVAL);
    if (!is_lower_hex(sha, 64))
        return bad(path, "sha256 is not 64 lower-case hex digits", NS_E_FORMAT);
    /* Two checks: the text first, to bound the work (base64 of NS_AGENT_MAX_FILE bytes is exactly
     * ceil(MAX / 3) * 4 characters), then the decoded length itself, which is the documented cap — the
     * text bound alone rounds up to a whole group and let up to MAX + 2 bytes through. */
    if (strlen(content) > (NS_AGENT_MAX_FILE + 2) / 3 * 4)
        return bad(path, "content is larger than 4 MiB", NS_E_TOO_LARGE);
    if (ns_b64_decode(content, strlen(content), true, &f->content) != 0)
        return bad(path, "content is not canonical base64", NS_E_FORMAT);
    if (f->content->len > NS_AGENT_MAX_FILE)
        return bad(path, "content is larger than 4 MiB", NS_E_TOO_LARGE);
    if (EVP_Digest(f->content->data, f->content->len, digest, NULL, EVP_sha256(), NULL) != 1)
        return NS_E_CRYPTO;
    {
        char hex[65];
        ns_hex_encode(digest, sizeof(digest), hex);
        if (strcmp(hex, sha) != 0)
            return bad(path, "the content's SHA-256 is not the one given", NS_E_INTEGRITY);
    }
    memcpy(f->sha256, digest, sizeof(digest));
    /* The version covers path, mode, owner, group, sha256, each followed by a NUL (doc/protocol.md). */
    if (EVP_DigestUpdate(vctx, path, strlen(path)) != 1 || EVP_DigestUpdate(vctx, &nul, 1) != 1 ||
        EVP_DigestUpdate(vctx, mode, strlen(mode)) != 1 || EVP_DigestUpdate(vctx, &nul, 1) != 1 ||
        EVP_DigestUpdate(vctx, owner, strlen(owner)) != 1 || EVP_DigestUpdate(vctx, &nul, 1) != 1 ||
        EVP_DigestUpdate(vctx, group, strlen(group)) != 1 || EVP_DigestUpdate(vctx, &nul, 1) != 1 ||
        EVP_DigestUpdate(vctx, sha, strlen(sha)) != 1 || EVP_DigestUpdate(vctx, &nul, 1) != 1)
        return NS_E_CRYPTO;
    return 0;
}

int ns_agent_files_parse(const uint8_t *body, size_t len, const ns_agent_root *rt, ns_agent_files **out)
{
    ns_agent_files *fs = NULL;
    json_t *doc = NULL;
    const json_t *files;
    const char *version, *key;
    const json_t *val;
    EVP_MD_CTX *vctx = NULL;
    uint8_t vdigest[32];
    char vhex[65];
    json_error_t jerr;
    size_t n;
    int r = NS_E_INTERNAL;

    ns_json_init();
    if ((doc = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL ||
        !json_is_object(doc)) {
        r = bad(NULL, "not a JSON object", NS_E_FORMAT);
        goto out;
    }
    json_object_foreach(doc, key, val)
    {
        if (strcmp(key, "version") != 0 && strcmp(key, "files") != 0) {
            r = bad(NULL, "unknown member at the top level", NS_E_FORMAT);
            goto out;
        }
    }
    if (str_member(doc, "version", &version) != 0 || version == NULL || !is_lower_hex(version, 64)) {
        r = bad(NULL, "version is not 64 lower-case hex digits", NS_E_FORMAT);
        goto out;
    }
    files = json_object_get(doc, "files");
    if (!json_is_array(files)) {
        r = bad(NULL, "files is not an array", NS_E_FORMAT);
        goto out;
    }
    n = json_array_size(files);
    if (n > NS_AGENT_MAX_FILES) {
        r = bad(NULL, "too many files", NS_E_TOO_LARGE);
        goto out;
    }
    if ((fs = calloc(1, sizeof(*fs))) == NULL || (n > 0 && (fs->v = calloc(n, sizeof(*fs->v))) == NULL) ||
        (vctx = EVP_MD_CTX_new()) == NULL) {
        r = NS_E_NOMEM;
        goto out;
    }
    if (EVP_DigestInit_ex(vctx, EVP_sha256(), NULL) != 1) {
        r = NS_E_CRYPTO;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        fs->n = i + 1; /* so that ns_agent_files_free() frees what parse_one() filled */
        if ((r = parse_one(json_array_get(files, i), rt, vctx, &fs->v[i])) != 0)
            goto out;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(fs->v[j].target, fs->v[i].target) == 0) {
                r = bad(fs->v[i].path, "listed twice", NS_E_INVAL);
                goto out;
            }
        }
    }
    if (EVP_DigestFinal_ex(vctx, vdigest, NULL) != 1) {
        r = NS_E_CRYPTO;
        goto out;
    }
    ns_hex_encode(vdigest, sizeof(vdigest), vhex);
    if (strcmp(vhex, version) != 0) {
        r = bad(NULL, "version is not the SHA-256 of the file list", NS_E_INTEGRITY);
        goto out;
    }
    memcpy(fs->version, version, 65);
    *out = fs;
    fs = NULL;
    r = 0;
out:
    EVP_MD_CTX_free(vctx);
    json_decref(doc);
    ns_agent_files_free(fs);
    return r;
}

void ns_agent_files_free(ns_agent_files *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->v[i].path);
        free(f->v[i].target);
        ns_buf_free(f->v[i].content);
    }
    free(f->v);
    free(f);
}
