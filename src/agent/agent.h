/* nstance-secrets-agent: the program on a VM that enrolls with nstance-secretsd and keeps its files in
 * sync (doc/agent.md, doc/protocol.md).
 *
 * Pieces, one job each:
 *   fsutil.c  atomic file writes, reading small files, folder checks
 *   paths.c   where a server path lands under --root, and the checks that keep it there
 *   files.c   parsing and validating a GET /v1/agent/files answer (everything checked before any write)
 *   apply.c   writing a validated file set atomically and running --on-change
 *   client.c  the HTTPS client (TLS 1.3, server verified with the CA bundle, mTLS) and error mapping
 *   identity.c checking and storing a certificate answer (register, renew)
 *   trust.c   following the CA bundle (GET /v1/ca on every sync) and renewing after a CA rotation
 *   enroll.c  `enroll`; sync.c `sync`; renew.c renewal; run.c `run`; main.c arguments.
 *
 * Errors are the project's codes (common/err.h); ns_agent_exit_code() maps them to the exit codes that
 * doc/agent.md lists. Nothing here logs file contents, keys, nonces or certificates' private parts. */
#ifndef NS_AGENT_AGENT_H
#define NS_AGENT_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/buf.h"
#include "common/err.h"

/* Exit codes (doc/agent.md). */
enum ns_agent_exit {
    NS_AGENT_EXIT_OK = 0,
    NS_AGENT_EXIT_INTERNAL = 1,
    NS_AGENT_EXIT_USAGE = 2,       /* bad arguments, or a local input (nonce file) that is empty */
    NS_AGENT_EXIT_NOT_FOUND = 3,   /* not enrolled (a file of DIR missing), or the server's 404 */
    NS_AGENT_EXIT_AUTH = 4,        /* the server's certificate did not verify, or ours was refused */
    NS_AGENT_EXIT_SERVER = 5,      /* the server is unreachable or unavailable (network, 5xx, 503) */
    NS_AGENT_EXIT_LOCAL_IO = 6,    /* a local file or folder could not be read or written */
    NS_AGENT_EXIT_BAD_DATA = 8,    /* the server sent something invalid: nothing was changed */
    NS_AGENT_EXIT_NONCE_BAD = 10,  /* the server refused the nonce: malformed, expired, other cluster... */
    NS_AGENT_EXIT_NONCE_USED = 11, /* the nonce was used already */
    NS_AGENT_EXIT_HOOK = 12,       /* files were written, but --on-change failed */
};

/* The error code → exit code table of doc/agent.md:
 *   NS_E_USAGE, NS_E_CONFIG → 2; NS_E_NOT_FOUND → 3; NS_E_SOURCE_DENIED → 4; NS_E_SOURCE → 5;
 *   NS_E_STORAGE → 6; bad-input category → 8; NS_E_CLAIMS → 10; NS_E_REPLAYED → 11; others → 1. */
int ns_agent_exit_code(int err);

/* Largest answer accepted from the server, and largest single file. */
#define NS_AGENT_MAX_BODY     (8u * 1024u * 1024u)
#define NS_AGENT_MAX_FILE     (4u * 1024u * 1024u)
#define NS_AGENT_MAX_FILES    256u
#define NS_AGENT_MAX_PATH     1024u
#define NS_AGENT_MAX_NAME_LEN 32u /* user and group names */

/* ---- fsutil.c ---- */

/* Write p[0..n) to path atomically: a temporary file in the same folder (O_EXCL, mode 0600), write,
 * fchmod(mode), fchown(uid, gid) unless both are (uid_t)-1 / (gid_t)-1, fsync, rename over path, fsync the
 * folder. On any error the temporary file is removed and path is as it was. NS_E_STORAGE (logged with
 * errno's text and the path). */
int ns_agent_write_atomic(const char *path, const uint8_t *p, size_t n, mode_t mode, uid_t uid,
                          gid_t gid) NS_WUR;

/* The first half of ns_agent_write_atomic(): everything up to the rename. *tmp_out is the temporary file's
 * name (caller frees), to be passed to ns_agent_commit() or removed with unlink(). */
int ns_agent_write_temp(const char *path, const uint8_t *p, size_t n, mode_t mode, uid_t uid, gid_t gid,
                        char **tmp_out) NS_WUR;
/* rename(tmp, path), then fsync path's folder. NS_E_STORAGE. */
int ns_agent_commit(const char *tmp, const char *path) NS_WUR;

/* The same two halves inside a held folder, by ns_file_write_temp_at() and ns_file_commit_at() (fdio.h): the
 * temporary file ".<leaf>.ns-tmp.<16 hex>" is created in dirfd with openat(O_CREAT | O_EXCL | O_NOFOLLOW,
 * 0600), written, fchown'ed (unless both ids are -1), fchmod'ed, fsync'ed and closed; *tmp_out is its name in
 * dirfd (caller frees; remove it with unlinkat()). ns_agent_commit_at() renames it over leaf with renameat()
 * in that same folder (a link at leaf is replaced, never followed) and fsyncs the folder; on a failed rename
 * the temporary file is removed. shown names the target in messages. NS_E_STORAGE (logged). */
int ns_agent_write_temp_at(int dirfd, const char *leaf, const char *shown, const uint8_t *p, size_t n,
                           mode_t mode, uid_t uid, gid_t gid, char **tmp_out) NS_WUR;
int ns_agent_commit_at(int dirfd, const char *tmp, const char *leaf, const char *shown) NS_WUR;

/* Read a regular file of at most max bytes (O_NOFOLLOW) into a new buffer (secret if asked).
 * NS_E_NOT_FOUND if it does not exist (or a file stands where a folder should), NS_E_TOO_LARGE, NS_E_STORAGE.
 */
int ns_agent_read_file(const char *path, size_t max, bool secret, ns_buf **out) NS_WUR;

/* Make dir (mode 0700) if missing; an existing dir must be a folder (not a link) and is chmod'ed 0700.
 * NS_E_STORAGE. */
int ns_agent_state_dir(const char *dir) NS_WUR;

/* "<dir>/<name>" into a new string (caller frees). NS_E_NOMEM, NS_E_INVAL if too long. */
int ns_agent_join(const char *dir, const char *name, char **out) NS_WUR;

/* ---- paths.c ---- */

/* --root, opened once per sync and held (a link as --root itself is followed: the operator's choice), with
 * the identity (st_dev, st_ino) of --dir, the agent's own folder, which no server path may enter. */
typedef struct ns_agent_root ns_agent_root;

/* root: an absolute existing folder ("/" allowed). dir: the agent's folder, or NULL (none to protect; a
 * missing dir protects nothing either). NS_E_USAGE when root is not an existing absolute folder, or is dir
 * or inside it; NS_E_STORAGE. */
int ns_agent_root_open(const char *root, const char *dir, ns_agent_root **out) NS_WUR;
void ns_agent_root_free(ns_agent_root *rt);

/* Check a path sent by the server (while the answer is parsed; nothing is made):
 *   path: absolute, normalised (no empty, "." or ".." segment, no trailing '/'), at most
 *         NS_AGENT_MAX_PATH bytes, no control characters, not "/" itself;
 * walking from the held root, every existing component must be a real folder (opened with O_NOFOLLOW: not
 * a symbolic link, even one pointing inside root) that is not --dir, and the last, if it exists, a regular
 * file (not a link or folder). Missing components are fine. *out = root + path, for messages and for
 * telling paths apart (caller frees). NS_E_INVAL with a logged reason. */
int ns_agent_path_check(const ns_agent_root *rt, const char *path, char **out) NS_WUR;

/* The same walk for writing: missing folders are made (mkdirat, 0755) and opened with O_NOFOLLOW like the
 * others. *dirfd is the held folder that is to hold path's last component (caller closes), *leaf that
 * component (a pointer into path). The last component may be a link by now (a rename replaces the link
 * itself); it is never opened by name following links. A link, a non-folder or --dir met on the way is
 * NS_E_STORAGE (logged: the disk changed since the check), as is any failure to make a folder. */
int ns_agent_open_parent(const ns_agent_root *rt, const char *path, int *dirfd, const char **leaf) NS_WUR;

/* ---- files.c ---- */

typedef struct ns_agent_file {
    char *path;   /* as the server sent it */
    char *target; /* root + path */
    mode_t mode;  /* <= 0777 */
    uid_t uid;
    gid_t gid;
    uint8_t sha256[32];
    ns_buf *content; /* secret: in the secure heap, wiped when freed */
} ns_agent_file;

typedef struct ns_agent_files {
    char version[65]; /* 64 lower-case hex digits */
    ns_agent_file *v;
    size_t n;
} ns_agent_files;

/* Parse and validate a GET /v1/agent/files body (doc/protocol.md, doc/agent.md "Validation") for rt:
 * a JSON object with exactly `version` and `files`; each file with exactly `path`, `mode`, `owner`,
 * `group`, `sha256`, `content` (`owner`/`group` may be absent: root); paths as ns_agent_path_check() says
 * and distinct; mode a string of 1-4 octal digits <= 0777; owner and group names that getpwnam/getgrnam
 * resolve; content canonical base64 whose SHA-256 is `sha256`; `version` the SHA-256 over the files as the
 * protocol defines it. The first failure is logged (path and reason, never content) and returned:
 * NS_E_FORMAT (shape), NS_E_INVAL (a value, an unknown user or group), NS_E_INTEGRITY (a digest),
 * NS_E_TOO_LARGE. Nothing is written. */
int ns_agent_files_parse(const uint8_t *body, size_t len, const ns_agent_root *rt,
                         ns_agent_files **out) NS_WUR;
void ns_agent_files_free(ns_agent_files *f);

/* ---- apply.c ---- */

/* Write every file of f whose content, mode, owner or group differ from what is on disk, atomically: all
 * temporary files first (any failure removes them and changes nothing), then the renames. Each file is
 * written inside the folder descriptor that ns_agent_open_parent() returns, held from the check of the
 * disk to the rename. *changed is the number of files written. NS_E_STORAGE. */
int ns_agent_files_apply(const ns_agent_files *f, const ns_agent_root *rt, size_t *changed) NS_WUR;

/* Run cmd with /bin/sh -c, signals unblocked, and wait. 0 if it exited 0; NS_E_INTERNAL otherwise
 * (logged). */
int ns_agent_run_hook(const char *cmd) NS_WUR;

/* ---- client.c ---- */

typedef struct ns_agent_client ns_agent_client;

/* A client for server_url (https://host:port, no path) that verifies the server with ca_file and, when
 * cert_file/key_file are given, presents that client certificate. TLS 1.3 only. */
int ns_agent_client_new(const char *server_url, const char *ca_file, const char *cert_file,
                        const char *key_file, ns_agent_client **out) NS_WUR;
void ns_agent_client_free(ns_agent_client *c);

typedef struct ns_agent_resp {
    long status;
    ns_buf *body; /* secret */
    char *etag;   /* the ETag header, or NULL */
} ns_agent_resp;

/* One request to path ("/v1/..."). body may be NULL (GET). if_none_match: a quoted ETag or NULL.
 * no_retry: exactly one attempt (registration: a nonce must not be sent twice). Returns 0 with *out for
 * 2xx and 304; any other answer is logged (method, path, status, the server's `error` code) and mapped:
 * 401 nonce_invalid → NS_E_CLAIMS, 409 nonce_used → NS_E_REPLAYED, 401/403 → NS_E_SOURCE_DENIED,
 * 404 → NS_E_NOT_FOUND, 400/413 → NS_E_INVAL, 5xx and no answer → NS_E_SOURCE, TLS verification of
 * either side → NS_E_SOURCE_DENIED. */
int ns_agent_request(ns_agent_client *c, const char *method, const char *path, const ns_buf *body,
                     const char *if_none_match, bool no_retry, ns_agent_resp **out) NS_WUR;
void ns_agent_resp_free(ns_agent_resp *r);

/* ---- identity (enroll.c) ---- */

/* Parse a register/renew answer ({"certificate", "ca_bundle", "expires_at"}) and store identity.crt and
 * ca.crt in dir (each checked to be PEM certificates first). With key_pem, identity.key is stored as well.
 * All temporary files are written before the first rename. */
int ns_agent_store_identity(const char *dir, const ns_buf *answer, const ns_buf *key_pem) NS_WUR;

/* ---- commands ---- */

typedef struct ns_agent_opts {
    const char *server; /* https://host:port */
    const char *dir;
    const char *root; /* default "/" */
    const char *ca;   /* enroll: the CA bundle that verifies the server */
    const char *nonce_file;
    const char *on_change; /* NULL: none */
    const char *hostname, *ipv4, *ipv6;
    int64_t interval; /* run: seconds */
} ns_agent_opts;

int ns_agent_enroll(const ns_agent_opts *o) NS_WUR;
/* A client for o->server with the identity in o->dir (NS_E_NOT_FOUND when not enrolled). */
int ns_agent_mtls_client(const ns_agent_opts *o, ns_agent_client **out) NS_WUR;
/* When the certificate in dir is due for renewal (seconds since the epoch): two thirds of its lifetime,
 * counted from when it was issued — the later of its notBefore and identity.crt's modification time, since
 * issued certificates are back-dated 5 minutes for clock skew (doc/ca.md). */
int ns_agent_renew_due(const char *dir, int64_t *due, int64_t *not_after) NS_WUR;
/* One sync. *hook_failed is set when --on-change ran and failed. */
int ns_agent_sync(const ns_agent_opts *o, bool *hook_failed) NS_WUR;
/* POST /v1/agent/renew with the current key; stores the new certificate and CA bundle. */
int ns_agent_renew(const ns_agent_opts *o) NS_WUR;
/* Until SIGTERM/SIGINT: sync every interval ±10%, renew at two thirds of the certificate's lifetime. */
int ns_agent_run(const ns_agent_opts *o) NS_WUR;

/* ---- trust.c ---- */

/* GET /v1/ca over c (a connection that DIR/ca.crt verified), sending the SHA-256 of DIR/ca.crt as
 * If-None-Match; a different bundle (1..16 PEM CA certificates) replaces DIR/ca.crt atomically and sets
 * *changed. A server without the endpoint (404) changes nothing and is not an error. NS_E_FORMAT for an
 * invalid answer (nothing written), NS_E_STORAGE, and ns_agent_request's errors. */
int ns_agent_ca_update(ns_agent_client *c, const char *dir, bool *changed) NS_WUR;
/* *needed: DIR/identity.crt is not signed by the newest CA of DIR/ca.crt (the CA rotated since it was
 * issued), so it should be renewed before the old CA is retired. */
int ns_agent_renew_needed(const char *dir, bool *needed) NS_WUR;

#endif
