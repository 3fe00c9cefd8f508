/* Whole reads and writes on a file descriptor, retried on EINTR and short counts; the one way files that hold
 * secrets are read, and the one way files are replaced atomically. */
#ifndef NS_COMMON_FDIO_H
#define NS_COMMON_FDIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/buf.h"
#include "common/err.h"

/* Read fd to its end into a new buffer of at most `max` bytes (secret: in the secure heap, and the read
 * chunks are wiped). NS_E_TOO_LARGE past max, NS_E_NOMEM, or NS_E_STORAGE on a read error with errno
 * telling which; nothing is logged (the caller names the file). */
int ns_fd_read_all(int fd, size_t max, bool secret, ns_buf **out) NS_WUR;

/* Write all of p[0..n) to fd. 0, or -1 with errno set. */
int ns_fd_write_all(int fd, const uint8_t *p, size_t n) NS_WUR;

/* How ns_file_read() treats one kind of file. */
typedef struct ns_file_rules {
    const char *what;   /* names the file in log lines: "<what> <path>", e.g. "PIN file" */
    size_t max;         /* more bytes than this: NS_E_TOO_LARGE */
    bool secret;        /* read into the secure heap (locked, wiped on free) */
    bool owner_only;    /* refuse a file that group or others may access (NS_E_PERM): for secrets */
    bool missing_ok;    /* a missing file (ENOENT, or ENOTDIR: a file where a folder should be) is normal:
                         * NS_E_NOT_FOUND without a log line */
    bool strip_newline; /* drop one trailing "\n", then one trailing "\r" (editors add them; PINs and
                         * tokens never end in one) */
} ns_file_rules;

/* Read the file at path whole into a new buffer, never following a symbolic link at its last component
 * (O_NOFOLLOW) and never blocking on a FIFO (O_NONBLOCK, then refused as not a regular file). Reads loop
 * over short counts and EINTR. The bytes are followed by a NUL that len does not count, so text can be
 * used as a C string. Every refusal is logged naming the file (except a missing one under missing_ok).
 * Errors: NS_E_NOT_FOUND (ENOENT), NS_E_PERM (cannot open otherwise, e.g. ELOOP on a link or EACCES; or
 * owner_only and the mode has group/other bits), NS_E_INVAL (not a regular file), NS_E_TOO_LARGE,
 * NS_E_STORAGE (a read error), NS_E_NOMEM. errno is that of the failing open() or read(), or 0 when the
 * refusal is ours (type, mode, size), for callers that tell the cases apart. */
int ns_file_read(const char *path, const ns_file_rules *rules, ns_buf **out) NS_WUR;

/* ---- Atomic writes: the new content in a temporary file beside the target, then one rename ----
 *
 * The temporary file is ".<leaf>.ns-tmp.<16 hex>" in the target's own folder (same file system, so the
 * rename is atomic; a dot name, so never taken for an object or a target), created with O_CREAT | O_EXCL |
 * O_NOFOLLOW and mode 0600, written whole, given its owner and mode, fsync'ed and closed. Publishing renames
 * it over the target with renameat() in the same folder (a link at the target is replaced, never followed)
 * and fsyncs the folder so the new name survives a crash. Readers see the whole old file or the whole new
 * one. On failure nothing is left behind (except by a crash: ns_file_is_temp_name() tells such leftovers).
 *
 * These functions do not log: each caller reports in its own voice. On failure they return NS_E_STORAGE
 * (or NS_E_NOMEM) with errno set and *step naming what failed ("creating", "writing", "setting the owner of",
 * "setting the mode of", "syncing", "closing", "renaming", "syncing the folder of", "opening the folder of").
 */

/* Write p[0..n) to a new temporary file for leaf in the held folder dfd. uid/gid: fchown'ed unless both
 * are -1; then fchmod(mode). *tmp_out: the temporary file's name in dfd (caller frees). */
int ns_file_write_temp_at(int dfd, const char *leaf, const uint8_t *p, size_t n, mode_t mode, uid_t uid,
                          gid_t gid, char **tmp_out, const char **step) NS_WUR;

/* Rename tmp over leaf in dfd and fsync dfd (a file system that cannot sync folders, EINVAL, is accepted).
 * A failed rename removes tmp. */
int ns_file_commit_at(int dfd, const char *tmp, const char *leaf, const char **step) NS_WUR;

/* Both for a path: its folder is opened by name (links in the folder part are followed, the leaf never). */
int ns_file_write_atomic(const char *path, const uint8_t *p, size_t n, mode_t mode, const char **step) NS_WUR;

/* Whether name (a folder entry) is one of the temporary files above. */
bool ns_file_is_temp_name(const char *name);

#endif
