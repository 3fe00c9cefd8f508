/* Logging to stderr.
 *
 * Log lines never carry secret material: callers pass names, ids and error codes, never keys, PINs or
 * plaintext. URIs are logged through ns_p11_uri_redact() (pkcs11/uri.h), which drops PINs. */
#ifndef NS_COMMON_LOG_H
#define NS_COMMON_LOG_H

#include <stddef.h>

enum ns_log_level { NS_LOG_ERROR = 0, NS_LOG_WARN = 1, NS_LOG_INFO = 2, NS_LOG_DEBUG = 3 };

/* Messages above this level are dropped. Default NS_LOG_WARN; NSTANCE_SECRETS_LOG=debug|info|warn|error
 * overrides it at the first call. */
void ns_log_set_level(enum ns_log_level level);
/* The program name that starts every line (default "nstance-secrets"); set once, first thing in main(),
 * so that a server's or an agent's log names its own program. name must outlive the process. */
void ns_log_set_program(const char *name);
enum ns_log_level ns_log_get_level(void);
/* One step more verbose, for each -v: info first, then debug. */
void ns_log_verbose(void);

/* Every line is escaped as a whole before it is written (ns_log_escape): a string that came from a peer, a
 * token, a server's answer or a file (a JWT kid, a path, a common name) cannot start a line of its own or
 * carry terminal control sequences, whatever the caller passed. */
void ns_log(enum ns_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copy s into out (n bytes, always NUL-terminated when n > 0) with every byte outside printable ASCII
 * (below 0x20, 0x7f and above) written as \xNN and a backslash as \\, so that the result is one line
 * of plain text and the escaping is unambiguous. Stops at a character that does not fit whole. Returns the
 * length written. */
size_t ns_log_escape(const char *s, char *out, size_t n);

#endif
