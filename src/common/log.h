/* Logging to stderr.
 *
 * Log lines never carry secret material: callers pass names, ids and error codes, never keys, PINs or
 * plaintext. URIs are logged through ns_p11_uri_redacted() (pkcs11/uri.h), which drops PINs. */
#ifndef NS_COMMON_LOG_H
#define NS_COMMON_LOG_H

enum ns_log_level { NS_LOG_ERROR = 0, NS_LOG_WARN = 1, NS_LOG_INFO = 2, NS_LOG_DEBUG = 3 };

/* Messages above this level are dropped. Default NS_LOG_WARN; NSTANCE_SECRETS_LOG=debug|info|warn|error
 * overrides it at the first call. */
void ns_log_set_level(enum ns_log_level level);
/* The program name that starts every line (default "nstance-secrets"); set once, first thing in main(),
 * so that a server's or an agent's log names its own program. name must outlive the process. */
void ns_log_set_program(const char *name);
enum ns_log_level ns_log_get_level(void);

void ns_log(enum ns_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
